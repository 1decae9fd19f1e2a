/*
 * Errors and the text that goes into them. tg__vfail is the one place a tape's error is set
 * (first error wins): put a breakpoint there to stop at any error.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

const char *
tg_status_string(tg_status s)
{
    static const char *const text[] = {
        [TG_OK] = "ok",
        [TG_ERR_NOMEM] = "out of memory",
        [TG_ERR_SHAPE] = "shape mismatch",
        [TG_ERR_DTYPE] = "dtype mismatch",
        [TG_ERR_ARG] = "invalid argument",
        [TG_ERR_NOT_SCALAR] = "output is not a scalar",
        [TG_ERR_UNSUPPORTED] = "not supported by this build",
        [TG_ERR_IO] = "input/output error",
        [TG_ERR_FORMAT] = "malformed file",
        [TG_ERR_NONFINITE] = "non-finite value",
        [TG_ERR_CHECK] = "gradient check failed",
        [TG_ERR_OP] = "op failed",
    };
    if ((unsigned)s < sizeof text / sizeof text[0] && text[s])
        return text[s];
    return "unknown status";
}

size_t
tg_dtype_size(tg_dtype dt)
{
    return dt == TG_F32 ? 4 : dt == TG_F64 ? 8 : 0;
}

const char *
tg_dtype_name(tg_dtype dt)
{
    return dt == TG_F32 ? "f32" : dt == TG_F64 ? "f64" : "unknown dtype";
}

/*
 * An allocation the tape's memory limit refused reaches here as an ordinary out-of-memory
 * error from whichever site asked (tensor, node, scratch, gradient, an op's own arena use);
 * the limit is named here, once, rather than at every site:
 *   matmul: out of memory (8000000 bytes) for a f64 tensor (1000x1000): over the tape's memory
 *   limit of 1048576 bytes (196608 held, 8000000 more asked for)
 */
/*
 * A message as stored: raw control bytes (ESC, newlines, ...) and bytes that are not valid
 * UTF-8 become \xNN (or \n, \r, \t), so that a hostile name of an op or a file can neither
 * drive a terminal nor split a log line. Names of tensors arrive escaped already
 * (tg__name_text); this catches every other string a message quotes. Cut at the buffer's end
 * on a character boundary.
 */
void
tg__sanitize_message(char *buf, size_t size)
{
    char out[TG__ERRMSG_SIZE * 2];
    size_t used = 0, cap = size < sizeof out ? size : sizeof out;
    const unsigned char *p = (const unsigned char *)buf;
    while (*p && used + 1 < cap) {
        unsigned char c = *p;
        size_t seq = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3
                                   : (c & 0xf8) == 0xf0 ? 4 : 0;
        size_t have = strnlen((const char *)p, seq ? seq : 1);
        bool valid = seq == 1 || (seq > 1 && have == seq && tg__utf8_valid((const char *)p, seq));
        if (c >= 0x20 && c != 0x7f && valid) {
            if (used + seq >= cap)
                break;
            memcpy(out + used, p, seq);
            used += seq, p += seq;
            continue;
        }
        char esc[8];
        int k = c == '\n' ? snprintf(esc, sizeof esc, "\\n")
                : c == '\r' ? snprintf(esc, sizeof esc, "\\r")
                : c == '\t' ? snprintf(esc, sizeof esc, "\\t")
                             : snprintf(esc, sizeof esc, "\\x%02x", c);
        if (used + (size_t)k >= cap)
            break;
        memcpy(out + used, esc, (size_t)k);
        used += (size_t)k, p++;
    }
    out[used] = '\0';
    memcpy(buf, out, used + 1);
}

tg_tensor *
tg__vfail(tg_tape *t, tg_status s, const char *fmt, va_list ap)
{
    if (t->status == TG_OK) {
        int n = vsnprintf(t->errmsg, sizeof t->errmsg, fmt, ap);
        if (s == TG_ERR_NOMEM && t->budget.refused && n >= 0 && (size_t)n < sizeof t->errmsg)
            snprintf(t->errmsg + n, sizeof t->errmsg - (size_t)n,
                     ": over the tape's memory limit of %zu bytes (%zu held, %zu more asked for)",
                     t->budget.limit, t->budget.held, t->budget.refused);
        tg__sanitize_message(t->errmsg, sizeof t->errmsg);
        t->status = s;
    }
    t->budget.refused = 0;
    return &t->nil;
}

tg_tensor *
tg__fail(tg_tape *t, tg_status s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    tg__vfail(t, s, fmt, ap);
    va_end(ap);
    return &t->nil;
}

void
tg__params_fail(tg_params *p, tg_status s, const char *fmt, ...)
{
    if (p->status != TG_OK)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->errmsg, sizeof p->errmsg, fmt, ap);
    va_end(ap);
    tg__sanitize_message(p->errmsg, sizeof p->errmsg);
    p->status = s;
}

struct tg__text
tg__shape_dims_text(int ndim, const int64_t *dims)
{
    struct tg__text t;
    size_t used = 0;
    t.s[used++] = '(';
    for (int i = 0; i < ndim && i < TG_MAX_DIMS; i++)
        used += (size_t)snprintf(t.s + used, sizeof t.s - used, "%s%" PRId64, i ? "x" : "",
                                 dims[i]);
    snprintf(t.s + used, sizeof t.s - used, ")");
    return t;
}

struct tg__text
tg__shape_text(const tg_tensor *x)
{
    return tg__shape_dims_text(x->ndim, x->dims);
}

/* Escapes s for a message: control bytes and DEL as \n, \r, \t or \xNN, a backslash as
 * \\, bytes that are not valid UTF-8 as \xNN; printable UTF-8 is kept. Returns the length
 * written (always NUL-terminated; cap >= 1). */
static size_t
escape_text(char *dst, size_t cap, const char *s)
{
    size_t used = 0;
    const unsigned char *p = (const unsigned char *)s;
    while (*p && used + 5 < cap) {
        unsigned char c = *p;
        size_t seq = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3
                                   : (c & 0xf8) == 0xf0 ? 4 : 0;
        bool ok = seq > 1 && tg__utf8_valid((const char *)p, strnlen((const char *)p, seq)) &&
                  strnlen((const char *)p, seq) == seq;
        if (c == '\\') {
            used += (size_t)snprintf(dst + used, cap - used, "\\\\");
            p++;
        } else if (c == '\n' || c == '\r' || c == '\t') {
            used += (size_t)snprintf(dst + used, cap - used, "\\%c",
                                     c == '\n' ? 'n' : c == '\r' ? 'r' : 't');
            p++;
        } else if (c < 0x20 || c == 0x7f || (c >= 0x80 && !ok)) {
            used += (size_t)snprintf(dst + used, cap - used, "\\x%02x", c);
            p++;
        } else if (c < 0x80) {
            dst[used++] = (char)c;
            p++;
        } else {
            memcpy(dst + used, p, seq);
            used += seq, p += seq;
        }
    }
    dst[used] = '\0';
    return used;
}

/* Where a cut at or before `at` keeps whole UTF-8 characters and whole escapes. */
static size_t
cut_back(const char *s, size_t at)
{
    while (at > 0 && ((unsigned char)s[at] & 0xc0) == 0x80)
        at--;
    for (size_t k = 1; k <= 3 && k <= at; k++)
        if (s[at - k] == '\\') { /* an escape starts just before: cut before it */
            at -= k;
            break;
        }
    return at;
}

/* A name as messages show it: escaped, and when longer than TG__NAME_SHOWN bytes, its first
 * and last parts around "…", so that an op's names and shapes always fit in one message. */
#define TG__NAME_SHOWN 64
static void
shown_name(char *dst, size_t cap, const char *name)
{
    char esc[4 * TG__NAME_MAX + 8];
    size_t n = escape_text(esc, sizeof esc, name);
    if (n <= TG__NAME_SHOWN) {
        snprintf(dst, cap, "%s", esc);
        return;
    }
    size_t head = cut_back(esc, TG__NAME_SHOWN / 2 - 2);
    size_t tail = n - (TG__NAME_SHOWN / 2 - 2);
    while (tail < n && ((unsigned char)esc[tail] & 0xc0) == 0x80)
        tail++;
    for (size_t k = 1; k <= 3 && k <= tail; k++) /* not inside an escape either */
        if (esc[tail - k] == '\\') {
            tail -= k;
            break;
        }
    snprintf(dst, cap, "%.*s\xe2\x80\xa6%s", (int)head, esc, esc + tail); /* … */
}

struct tg__text
tg__name_text(const tg_tensor *x)
{
    struct tg__text t;
    char shown[TG__NAME_SHOWN + 16];
    if (x->name) {
        shown_name(shown, sizeof shown, x->name);
        snprintf(t.s, sizeof t.s, "\"%s\"", shown);
    } else if (x->kind == TG__KIND_OP && x->node) {
        shown_name(shown, sizeof shown, x->node->op->name);
        snprintf(t.s, sizeof t.s, "<%s#%zu>", shown, x->node->index);
    } else if (x->kind == TG__KIND_NIL) {
        snprintf(t.s, sizeof t.s, "<nil>");
    } else {
        snprintf(t.s, sizeof t.s, "<input#%zu>", x->id);
    }
    return t;
}

struct tg__text
tg__escaped_text(const char *s)
{
    struct tg__text t;
    char shown[TG__NAME_SHOWN + 16];
    shown_name(shown, sizeof shown, s ? s : "(null)");
    snprintf(t.s, sizeof t.s, "%s", shown);
    return t;
}

tg_status
tg__check_dims(int ndim, const int64_t *dims, tg_dtype dt, size_t *size, char *err,
               size_t errsize, const char *what)
{
    if (dt != TG_F32 && dt != TG_F64) {
        snprintf(err, errsize, "%s: unknown dtype %d (expected TG_F32 or TG_F64)", what, (int)dt);
        return TG_ERR_ARG;
    }
    if (ndim < 1 || ndim > TG_MAX_DIMS) {
        snprintf(err, errsize, "%s: rank %d is not in 1..%d", what, ndim, TG_MAX_DIMS);
        return TG_ERR_ARG;
    }
    if (!dims) {
        snprintf(err, errsize, "%s: dims is NULL", what);
        return TG_ERR_ARG;
    }
    size_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (dims[i] < 0) {
            snprintf(err, errsize, "%s: dim %d is %" PRId64 ", must be >= 0", what, i, dims[i]);
            return TG_ERR_ARG;
        }
        if ((uint64_t)dims[i] > SIZE_MAX || __builtin_mul_overflow(n, (size_t)dims[i], &n)) {
            struct tg__text s = tg__shape_dims_text(ndim, dims);
            snprintf(err, errsize, "%s: shape %s has more elements than fit in memory", what,
                     s.s);
            return TG_ERR_ARG;
        }
    }
    size_t bytes;
    if (__builtin_mul_overflow(n, tg__dtype_bytes(dt), &bytes) || bytes > (SIZE_MAX >> 2)) {
        struct tg__text s = tg__shape_dims_text(ndim, dims);
        snprintf(err, errsize, "%s: shape %s of %s needs more bytes than fit in memory", what,
                 s.s, tg_dtype_name(dt));
        return TG_ERR_NOMEM;
    }
    *size = n;
    return TG_OK;
}

bool
tg__utf8_valid(const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t len;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            len = 2, cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            len = 3, cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            len = 4, cp = c & 0x07;
        } else {
            return false;
        }
        if (i + len > n)
            return false;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        /* Reject overlong forms, surrogates and code points past U+10FFFF. */
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
            (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
            return false;
        i += len;
    }
    return true;
}

bool
tg__name_ok(const char *name)
{
    if (!name)
        return true;
    size_t n = strnlen(name, TG__NAME_MAX + 1);
    return n > 0 && n <= TG__NAME_MAX && tg__utf8_valid(name, n);
}
