/*
 * safetensors checkpoints: atomic save, validate-everything-then-copy load, and a read-only
 * inspection reader. The rules implemented here are the checkpoint rules 1-20 written out in
 * docs/design.md ("Checkpoint rules"); comments cite them as (rule N).
 *
 * File layout: [u64 LE N][N bytes JSON header][data]. The header is parsed by jansson (depth
 * checked by us first, duplicate keys rejected by JSON_REJECT_DUPLICATES); every size taken
 * from the file is checked against the bytes that remain before it is used.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h> /* flock: BSD, Linux, macOS */
#include <sys/stat.h>
#include <unistd.h>

/*
 * jansson allocates with the C library's malloc/free, not through tg_set_allocator's hook:
 * the JSON tree of one header, built and freed within one load or save call and bounded by
 * TG_CHECKPOINT_HEADER_MAX (load) or by the state dict (save). This is deliberate.
 * json_set_alloc_funcs would route it through the hook, but the setting is process-global
 * in the shared libjansson that a host program may also use: its own jansson objects would
 * then come from our allocator, and any object it allocated before the switch (or with its
 * own json_set_alloc_funcs) would be freed by ours (a mismatched free). Swapping the functions
 * around each of our calls (json_get_alloc_funcs, then restore) narrows that to a window but
 * races with the host's other threads. It would only be safe with a private copy of jansson
 * linked into tapegrad with hidden symbols (a meson subproject), which is not done (and
 * build_header's free() of json_dumps' text would then have to become jansson's free). So
 * allocation-failure tests cannot make jansson fail; a NULL from json_loadb, json_dumps or a
 * json_* constructor is still handled as an error.
 */
#include <jansson.h>

#include <tapegrad/checkpoint.h>

#include "internal.h"

#define MAX_JSON_DEPTH 64

/* Failure injection for the white-box tests (never exported): the save step that should fail
 * as if the system call had returned an error. */
enum tg__ckpt_fault {
    TG__CKPT_FAULT_NONE = 0,
    TG__CKPT_FAULT_WRITE,
    TG__CKPT_FAULT_FSYNC,
    TG__CKPT_FAULT_CLOSE,
    TG__CKPT_FAULT_RENAME,
    TG__CKPT_FAULT_DIRSYNC,
};
int tg__ckpt_fault = TG__CKPT_FAULT_NONE;

/* ---------------------------------------------------------------------------------------
 * The safetensors dtypes (rule 5). Only F32/F64 carry values in tapegrad; the rest are known
 * so that files holding them are validated and the dtype is named when it is refused. Sizes
 * are in bits because F4/F6 pack several values per byte.
 */
static const struct st_dtype {
    const char *name;
    unsigned bits;
} st_dtypes[] = {
    {"BOOL", 8},     {"F4", 4},       {"F6_E2M3", 6}, {"F6_E3M2", 6}, {"U8", 8},
    {"I8", 8},       {"F8_E5M2", 8},  {"F8_E4M3", 8}, {"F8_E8M0", 8}, {"I16", 16},
    {"U16", 16},     {"F16", 16},     {"BF16", 16},   {"I32", 32},    {"U32", 32},
    {"F32", 32},     {"F64", 64},     {"I64", 64},    {"U64", 64},    {"C64", 64},
};
#define N_ST_DTYPES (sizeof st_dtypes / sizeof st_dtypes[0])

static int
st_dtype_find(const char *name)
{
    for (size_t i = 0; i < N_ST_DTYPES; i++)
        if (strcmp(st_dtypes[i].name, name) == 0)
            return (int)i;
    return -1;
}

/* tg_dtype of a safetensors dtype index, or -1. */
static int
st_to_tg(int st)
{
    if (st < 0 || (size_t)st >= N_ST_DTYPES) /* rule 15: range-check before indexing */
        return -1;
    if (strcmp(st_dtypes[st].name, "F32") == 0)
        return TG_F32;
    if (strcmp(st_dtypes[st].name, "F64") == 0)
        return TG_F64;
    return -1;
}

static const char *
tg_to_st(tg_dtype dt)
{
    return dt == TG_F32 ? "F32" : dt == TG_F64 ? "F64" : "?";
}

/* ---------------------------------------------------------------------------------------
 * Messages. File-derived text is only ever a %s argument (rule 16), and is shown quoted with
 * control bytes, quotes and backslashes escaped and long names cut, so a hostile name cannot
 * forge a message or drive a terminal.
 */
enum { QUOTE_MAX_BYTES = 80 }; /* bytes of file text shown; the rest becomes "..." */

/* Worst case: both quotes, every shown byte escaped as \xNN (4 chars), "...", NUL. */
struct qtext {
    char s[2 + 4 * QUOTE_MAX_BYTES + 3 + 1];
};

static struct qtext
quote(const char *p)
{
    struct qtext q;
    size_t o = 0;
    q.s[o++] = '"';
    for (size_t i = 0; p && p[i]; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (i >= QUOTE_MAX_BYTES) {
            memcpy(q.s + o, "...", 3);
            o += 3;
            break;
        }
        if (ch < 0x20 || ch == 0x7f || ch == '"' || ch == '\\')
            o += (size_t)snprintf(q.s + o, sizeof q.s - o, "\\x%02x", ch);
        else
            q.s[o++] = (char)ch;
    }
    q.s[o++] = '"';
    q.s[o] = '\0';
    return q;
}

struct ctx {
    const char *op;   /* "load", "save", "open" */
    const char *path;
    char *err;
    size_t errsize;
};

static tg_status
fail(const struct ctx *c, tg_status s, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static tg_status
fail(const struct ctx *c, tg_status s, const char *fmt, ...)
{
    int n = snprintf(c->err, c->errsize, "%s \"%s\": ", c->op, c->path);
    if (n < 0 || (size_t)n >= c->errsize)
        return s;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err + n, c->errsize - (size_t)n, fmt, ap);
    va_end(ap);
    return s;
}

static struct tg__text
dims_text(int ndim, const int64_t *dims)
{
    struct tg__text t;
    size_t o = 0;
    t.s[o++] = '(';
    for (int i = 0; i < ndim && o < sizeof t.s - 24; i++)
        o += (size_t)snprintf(t.s + o, sizeof t.s - o, "%s%lld", i ? "x" : "", (long long)dims[i]);
    if (ndim == 0)
        o += (size_t)snprintf(t.s + o, sizeof t.s - o, "scalar");
    snprintf(t.s + o, sizeof t.s - o, ")");
    return t;
}

/* ---------------------------------------------------------------------------------------
 * Little-endian conversion (rule 18). Identity on little-endian hosts.
 */
static bool
host_is_le(void)
{
#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__)
    return __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__;
#else
    const uint16_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
#endif
}

/* Copy n elements of esize bytes, swapping byte order on big-endian hosts. */
static void
copy_le(void *dst, const void *src, size_t n, size_t esize)
{
    if (host_is_le()) {
        memcpy(dst, src, n * esize);
        return;
    }
    unsigned char *d = dst;
    const unsigned char *s = src;
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < esize; k++)
            d[i * esize + k] = s[i * esize + esize - 1 - k];
}

static uint64_t
get_le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static void
put_le64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

/* ---------------------------------------------------------------------------------------
 * Reading and validating a file.
 */
struct entry {
    char *name;
    int st;   /* index into st_dtypes */
    int ndim;
    int64_t dims[TG_MAX_DIMS];
    size_t nelem;
    uint64_t begin, end; /* byte range in the data section */
};

struct meta {
    char *key, *value;
};

struct parsed {
    struct entry *e;
    size_t n;
    struct meta *m;
    size_t n_meta;
    uint64_t data_start; /* 8 + N */
    uint64_t data_len;
    unsigned char *data; /* data_len bytes, when read */
};

static void
parsed_free(struct parsed *p)
{
    for (size_t i = 0; i < p->n; i++)
        tg__free(p->e[i].name);
    for (size_t i = 0; i < p->n_meta; i++) {
        tg__free(p->m[i].key);
        tg__free(p->m[i].value);
    }
    tg__free(p->e);
    tg__free(p->m);
    tg__free(p->data);
    memset(p, 0, sizeof *p);
}

static char *
dup_n(const char *s, size_t n)
{
    char *d = tg__malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

/* Read exactly n bytes from fd (retrying EINTR and short reads, rule 14). *got says how many
 * arrived; fewer than n without an error means end of file. */
static int
read_full(int fd, void *buf, size_t n, size_t *got)
{
    unsigned char *p = buf;
    *got = 0;
    while (*got < n) {
        size_t want = n - *got;
        if (want > (1u << 30))
            want = 1u << 30;
        ssize_t r = read(fd, p + *got, want);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (r == 0)
            break;
        *got += (size_t)r;
    }
    return 0;
}

/* Offset of the first byte that is not part of a valid UTF-8 sequence (overlong forms,
 * surrogates and code points past U+10FFFF are invalid), or n when all is valid. */
static size_t
utf8_first_invalid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned ch = s[i];
        size_t len;
        uint32_t cp;
        if (ch < 0x80) {
            i++;
            continue;
        } else if ((ch & 0xE0) == 0xC0) {
            len = 2, cp = ch & 0x1F;
        } else if ((ch & 0xF0) == 0xE0) {
            len = 3, cp = ch & 0x0F;
        } else if ((ch & 0xF8) == 0xF0) {
            len = 4, cp = ch & 0x07;
        } else {
            return i;
        }
        if (len > n - i)
            return i;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return i;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
            (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
            return i;
        i += len;
    }
    return n;
}

/* Deepest nesting of [ and { outside strings; stops counting past the limit. The header is
 * scanned before jansson sees it so that the parser never recurses deeper than 64 (rule 3). */
static bool
depth_ok(const char *s, size_t n, size_t *at)
{
    int depth = 0;
    bool in_str = false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (in_str) {
            if (ch == '\\')
                i++;
            else if (ch == '"')
                in_str = false;
        } else if (ch == '"') {
            in_str = true;
        } else if (ch == '[' || ch == '{') {
            if (++depth > MAX_JSON_DEPTH) {
                *at = i;
                return false;
            }
        } else if (ch == ']' || ch == '}') {
            depth--;
        }
    }
    return true;
}

static int
cmp_by_offset(const void *a, const void *b)
{
    const struct entry *x = *(const struct entry *const *)a, *y = *(const struct entry *const *)b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* One integer >= 0 from a JSON value: rejects reals (2.5, 1e30), negatives, strings, null
 * (rule 3, bad input 34). jansson itself refuses integers above 2^63-1. */
static bool
json_uint(const json_t *v, uint64_t *out)
{
    if (!json_is_integer(v))
        return false;
    json_int_t x = json_integer_value(v);
    if (x < 0)
        return false;
    *out = (uint64_t)x;
    return true;
}

static const char *
json_kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a real number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

static tg_status
parse_metadata(const struct ctx *c, json_t *obj, struct parsed *p)
{
    if (!json_is_object(obj))
        return fail(c, TG_ERR_FORMAT, "__metadata__ is %s, must be an object of strings",
                    json_kind(obj));
    size_t n = json_object_size(obj);
    if (n > TG_CHECKPOINT_META_COUNT_MAX)
        return fail(c, TG_ERR_FORMAT, "__metadata__ has %zu entries, at most %d are accepted", n,
                    TG_CHECKPOINT_META_COUNT_MAX);
    p->m = tg__calloc(n ? n : 1, sizeof *p->m);
    if (!p->m)
        return fail(c, TG_ERR_NOMEM, "out of memory for the metadata");
    const char *key;
    size_t klen;
    json_t *v;
    json_object_keylen_foreach(obj, key, klen, v)
    {
        if (!json_is_string(v))
            return fail(c, TG_ERR_FORMAT, "__metadata__ %s is %s, must be a string",
                        quote(key).s, json_kind(v));
        size_t vlen = json_string_length(v);
        if (klen > TG_CHECKPOINT_META_MAX || vlen > TG_CHECKPOINT_META_MAX)
            return fail(c, TG_ERR_FORMAT,
                        "__metadata__ %s: key of %zu bytes or value of %zu bytes exceeds %d",
                        quote(key).s, klen, vlen, TG_CHECKPOINT_META_MAX);
        struct meta *m = &p->m[p->n_meta];
        m->key = dup_n(key, klen);
        m->value = dup_n(json_string_value(v), vlen);
        if (!m->key || !m->value) {
            tg__free(m->key);
            tg__free(m->value);
            m->key = m->value = NULL;
            return fail(c, TG_ERR_NOMEM, "out of memory for the metadata");
        }
        p->n_meta++;
    }
    return TG_OK;
}

static tg_status
parse_entry(const struct ctx *c, const char *name, size_t nlen, json_t *v, const struct parsed *p,
            struct entry *e)
{
    struct qtext qn = quote(name);
    if (nlen == 0)
        return fail(c, TG_ERR_FORMAT, "a tensor has an empty name");
    if (nlen > TG_CHECKPOINT_NAME_MAX)
        return fail(c, TG_ERR_FORMAT, "tensor %s: name of %zu bytes exceeds %d", qn.s, nlen,
                    TG_CHECKPOINT_NAME_MAX);
    if (strlen(name) != nlen || !tg__utf8_valid(name, nlen)) /* rule 9 (jansson checks too) */
        return fail(c, TG_ERR_FORMAT, "tensor %s: name is not valid UTF-8 or holds NUL", qn.s);
    if (!json_is_object(v))
        return fail(c, TG_ERR_FORMAT, "tensor %s: entry is %s, must be an object", qn.s,
                    json_kind(v));
    const char *k;
    json_t *f;
    json_object_foreach(v, k, f)
    {
        if (strcmp(k, "dtype") && strcmp(k, "shape") && strcmp(k, "data_offsets"))
            return fail(c, TG_ERR_FORMAT,
                        "tensor %s: unknown field %s (expected dtype, shape, data_offsets)", qn.s,
                        quote(k).s);
    }
    json_t *dt = json_object_get(v, "dtype");
    json_t *shape = json_object_get(v, "shape");
    json_t *offs = json_object_get(v, "data_offsets");
    if (!dt || !shape || !offs)
        return fail(c, TG_ERR_FORMAT, "tensor %s: missing field \"%s\"", qn.s,
                    !dt ? "dtype" : !shape ? "shape" : "data_offsets");
    if (!json_is_string(dt))
        return fail(c, TG_ERR_FORMAT, "tensor %s: dtype is %s, must be a string", qn.s,
                    json_kind(dt));
    e->st = st_dtype_find(json_string_value(dt));
    if (e->st < 0)
        return fail(c, TG_ERR_FORMAT, "tensor %s: unknown dtype %s", qn.s,
                    quote(json_string_value(dt)).s);

    if (!json_is_array(shape))
        return fail(c, TG_ERR_FORMAT, "tensor %s: shape is %s, must be an array", qn.s,
                    json_kind(shape));
    size_t rank = json_array_size(shape);
    if (rank > TG_MAX_DIMS) /* rule 6 */
        return fail(c, TG_ERR_FORMAT, "tensor %s: rank %zu exceeds the maximum %d", qn.s, rank,
                    TG_MAX_DIMS);
    e->ndim = (int)rank;
    uint64_t nelem = 1;
    bool overflow = false;
    for (size_t i = 0; i < rank; i++) {
        uint64_t d;
        json_t *dv = json_array_get(shape, i);
        if (!json_uint(dv, &d))
            return fail(c, TG_ERR_FORMAT,
                        "tensor %s: shape[%zu] is %s, must be an integer >= 0", qn.s, i,
                        json_is_integer(dv) ? "negative" : json_kind(dv));
        e->dims[i] = (int64_t)d;
        if (__builtin_mul_overflow(nelem, d, &nelem)) /* rule 6: checked multiplication */
            overflow = true;
    }
    uint64_t nbits = 0;
    if (overflow || nelem > SIZE_MAX ||
        __builtin_mul_overflow(nelem, (uint64_t)st_dtypes[e->st].bits, &nbits))
        return fail(c, TG_ERR_FORMAT, "tensor %s: shape %s of %s overflows 64 bits", qn.s,
                    dims_text(e->ndim, e->dims).s, st_dtypes[e->st].name);
    if (nbits % 8)
        return fail(c, TG_ERR_FORMAT,
                    "tensor %s: %llu values of %s do not fill whole bytes", qn.s,
                    (unsigned long long)nelem, st_dtypes[e->st].name);
    e->nelem = (size_t)nelem;
    uint64_t nbytes = nbits / 8;

    if (!json_is_array(offs) || json_array_size(offs) != 2)
        return fail(c, TG_ERR_FORMAT, "tensor %s: data_offsets must be an array [begin, end]",
                    qn.s);
    for (size_t i = 0; i < 2; i++) {
        json_t *ov = json_array_get(offs, i);
        if (!json_uint(ov, i ? &e->end : &e->begin))
            return fail(c, TG_ERR_FORMAT,
                        "tensor %s: data_offsets[%zu] is %s, must be an integer >= 0", qn.s, i,
                        json_is_integer(ov) ? "negative" : json_kind(ov));
    }
    if (e->end < e->begin)
        return fail(c, TG_ERR_FORMAT, "tensor %s: data_offsets [%llu, %llu] end before begin",
                    qn.s, (unsigned long long)e->begin, (unsigned long long)e->end);
    if (e->end > p->data_len)
        return fail(c, TG_ERR_FORMAT,
                    "tensor %s: data_offsets [%llu, %llu] run past the data section of %llu "
                    "bytes (file offset %llu)",
                    qn.s, (unsigned long long)e->begin, (unsigned long long)e->end,
                    (unsigned long long)p->data_len,
                    (unsigned long long)(p->data_start + p->data_len));
    if (e->end - e->begin != nbytes) /* rule 7 */
        return fail(c, TG_ERR_FORMAT,
                    "tensor %s: data_offsets [%llu, %llu] span %llu bytes, shape %s of %s needs "
                    "%llu",
                    qn.s, (unsigned long long)e->begin, (unsigned long long)e->end,
                    (unsigned long long)(e->end - e->begin), dims_text(e->ndim, e->dims).s,
                    st_dtypes[e->st].name, (unsigned long long)nbytes);
    e->name = dup_n(name, nlen);
    if (!e->name)
        return fail(c, TG_ERR_NOMEM, "out of memory");
    return TG_OK;
}

/* The ranges must tile [0, data_len) exactly (rule 8). */
static tg_status
check_tiling(const struct ctx *c, struct parsed *p)
{
    if (p->n == 0) {
        if (p->data_len)
            return fail(c, TG_ERR_FORMAT, "no tensors, but %llu data bytes follow the header",
                        (unsigned long long)p->data_len);
        return TG_OK;
    }
    struct entry **order = tg__malloc(p->n * sizeof *order);
    if (!order)
        return fail(c, TG_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < p->n; i++)
        order[i] = &p->e[i];
    qsort(order, p->n, sizeof *order, cmp_by_offset);
    tg_status st = TG_OK;
    uint64_t cursor = 0;
    const struct entry *prev = NULL;
    for (size_t i = 0; i < p->n && !st; i++) {
        const struct entry *e = order[i];
        if (e->begin < cursor)
            st = fail(c, TG_ERR_FORMAT,
                      "tensor %s: data_offsets [%llu, %llu] overlap tensor %s, which ends at %llu",
                      quote(e->name).s, (unsigned long long)e->begin, (unsigned long long)e->end,
                      quote(prev->name).s, (unsigned long long)cursor);
        else if (e->begin > cursor)
            st = fail(c, TG_ERR_FORMAT,
                      "tensor %s: data_offsets [%llu, %llu] leave a hole: expected begin %llu",
                      quote(e->name).s, (unsigned long long)e->begin, (unsigned long long)e->end,
                      (unsigned long long)cursor);
        cursor = e->end;
        prev = e;
    }
    if (!st && cursor != p->data_len)
        st = fail(c, TG_ERR_FORMAT,
                  "%llu trailing bytes: the tensors cover %llu bytes, the data section has %llu",
                  (unsigned long long)(p->data_len - cursor), (unsigned long long)cursor,
                  (unsigned long long)p->data_len);
    /* Keep the entries in offset order: the inspection API lists them that way. */
    if (!st) {
        struct entry *sorted = tg__malloc(p->n * sizeof *sorted);
        if (!sorted) {
            st = fail(c, TG_ERR_NOMEM, "out of memory");
        } else {
            for (size_t i = 0; i < p->n; i++)
                sorted[i] = *order[i];
            tg__free(p->e);
            p->e = sorted;
        }
    }
    tg__free(order);
    return st;
}

/* Open, validate the header and (when read_data) read the data section into p->data. */
static tg_status
parse_file(const struct ctx *c, struct parsed *p, bool read_data)
{
    memset(p, 0, sizeof *p);
    /* O_NONBLOCK: a FIFO must not hang the open; it is refused below (bad input 39). */
    int fd = open(c->path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return fail(c, TG_ERR_IO, "cannot open: %s", strerror(errno));
    tg_status st = TG_OK;
    char *header = NULL;
    json_t *root = NULL;
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        st = fail(c, TG_ERR_IO, "cannot stat: %s", strerror(errno));
        goto out;
    }
    if (!S_ISREG(sb.st_mode)) {
        st = fail(c, TG_ERR_IO, "not a regular file (%s)",
                  S_ISDIR(sb.st_mode) ? "a directory" : "a FIFO, socket or device");
        goto out;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        (void)fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    uint64_t file_size = (uint64_t)sb.st_size;

    unsigned char lenbuf[8];
    size_t got;
    if (read_full(fd, lenbuf, 8, &got) != 0) {
        st = fail(c, TG_ERR_IO, "read error at byte 0: %s", strerror(errno));
        goto out;
    }
    if (got < 8) { /* rule 1, bad input 26 */
        st = fail(c, TG_ERR_FORMAT, "header too small: the file has %zu bytes, at least 8 needed",
                  got);
        goto out;
    }
    uint64_t n = get_le64(lenbuf);
    if (n > TG_CHECKPOINT_HEADER_MAX) { /* rule 2, before any allocation */
        st = fail(c, TG_ERR_FORMAT, "header length %llu exceeds the cap of %u bytes",
                  (unsigned long long)n, TG_CHECKPOINT_HEADER_MAX);
        goto out;
    }
    if (n > file_size - 8) { /* 8 + n <= file_size, without overflow (file_size >= 8 here) */
        st = fail(c, TG_ERR_FORMAT,
                  "header length %llu runs past the end of the file (%llu bytes after byte 8)",
                  (unsigned long long)n, (unsigned long long)(file_size - 8));
        goto out;
    }
    if (n < 2) {
        st = fail(c, TG_ERR_FORMAT, "header length %llu is too small for a JSON object",
                  (unsigned long long)n);
        goto out;
    }
    header = tg__malloc((size_t)n);
    if (!header) {
        st = fail(c, TG_ERR_NOMEM, "out of memory (%llu bytes) for the header",
                  (unsigned long long)n);
        goto out;
    }
    if (read_full(fd, header, (size_t)n, &got) != 0) {
        st = fail(c, TG_ERR_IO, "read error in the header: %s", strerror(errno));
        goto out;
    }
    if (got < n) {
        st = fail(c, TG_ERR_FORMAT, "truncated: header of %llu bytes, only %zu present",
                  (unsigned long long)n, got);
        goto out;
    }
    p->data_start = 8 + n;
    p->data_len = file_size - 8 - n;
    size_t bad = utf8_first_invalid((const unsigned char *)header, (size_t)n);
    if (bad < n) { /* rule 3 */
        st = fail(c, TG_ERR_FORMAT, "header is not valid UTF-8 at byte %llu",
                  (unsigned long long)(8 + bad));
        goto out;
    }
    size_t deep_at;
    if (!depth_ok(header, (size_t)n, &deep_at)) {
        st = fail(c, TG_ERR_FORMAT, "header JSON nests deeper than %d at byte %llu",
                  MAX_JSON_DEPTH, (unsigned long long)(8 + deep_at));
        goto out;
    }
    json_error_t jerr;
    root = json_loadb(header, (size_t)n, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        st = fail(c, TG_ERR_FORMAT, "header is not valid JSON at byte %llu: %s",
                  (unsigned long long)(8 + (jerr.position > 0 ? (size_t)jerr.position : 0)),
                  quote(jerr.text).s);
        goto out;
    }
    if (!json_is_object(root)) {
        st = fail(c, TG_ERR_FORMAT, "header is %s, must be a JSON object", json_kind(root));
        goto out;
    }
    size_t entries = json_object_size(root);
    if (entries > TG_CHECKPOINT_TENSORS_MAX + 1) {
        st = fail(c, TG_ERR_FORMAT, "header has %zu entries, at most %d tensors are accepted",
                  entries, TG_CHECKPOINT_TENSORS_MAX);
        goto out;
    }
    p->e = tg__calloc(entries ? entries : 1, sizeof *p->e);
    if (!p->e) {
        st = fail(c, TG_ERR_NOMEM, "out of memory");
        goto out;
    }
    const char *key;
    size_t klen;
    json_t *v;
    json_object_keylen_foreach(root, key, klen, v)
    {
        if (klen == 12 && memcmp(key, "__metadata__", 12) == 0) {
            st = parse_metadata(c, v, p);
        } else {
            st = parse_entry(c, key, klen, v, p, &p->e[p->n]);
            if (!st)
                p->n++;
        }
        if (st)
            goto out;
    }
    if (p->n > TG_CHECKPOINT_TENSORS_MAX) {
        st = fail(c, TG_ERR_FORMAT, "%zu tensors, at most %d are accepted", p->n,
                  TG_CHECKPOINT_TENSORS_MAX);
        goto out;
    }
    st = check_tiling(c, p);
    if (st || !read_data)
        goto out;

    /* The data, into owned memory (rule 20), checking the file did not change under us. */
    p->data = tg__malloc(p->data_len ? (size_t)p->data_len : 1);
    if (!p->data || p->data_len > SIZE_MAX) {
        st = fail(c, TG_ERR_NOMEM, "out of memory (%llu bytes) for the data",
                  (unsigned long long)p->data_len);
        goto out;
    }
    if (read_full(fd, p->data, (size_t)p->data_len, &got) != 0) {
        st = fail(c, TG_ERR_IO, "read error in the data: %s", strerror(errno));
        goto out;
    }
    if (got < p->data_len) {
        st = fail(c, TG_ERR_FORMAT, "truncated while reading: %llu data bytes expected, %zu read",
                  (unsigned long long)p->data_len, got);
        goto out;
    }
    unsigned char extra;
    if (read_full(fd, &extra, 1, &got) == 0 && got) {
        st = fail(c, TG_ERR_FORMAT, "the file grew while being read");
        goto out;
    }
out:
    if (root)
        json_decref(root);
    tg__free(header);
    close(fd);
    if (st)
        parsed_free(p);
    return st;
}

/* ---------------------------------------------------------------------------------------
 * State dicts.
 */
struct group {
    char *prefix;
    tg_params *params;
};

struct buffer {
    char *name;
    tg_dtype dtype;
    int ndim;
    int64_t dims[TG_MAX_DIMS];
    size_t nelem;
    void *data;
};

struct tg_state_dict {
    tg_status status;
    char errmsg[TG__ERRMSG_SIZE];
    struct group *groups;
    size_t n_groups;
    struct buffer *buffers;
    size_t n_buffers;
    struct meta *meta;
    size_t n_meta;
};

/* One tensor to save or load, resolved from the groups and buffers. */
struct binding {
    char *name; /* owned */
    tg_dtype dtype;
    int ndim;
    int64_t dims[TG_MAX_DIMS];
    size_t nelem;
    void *data;
    const struct entry *match; /* load: the file's entry */
};

static tg_status
sd_fail(tg_state_dict *sd, tg_status s, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static tg_status
sd_fail(tg_state_dict *sd, tg_status s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sd->errmsg, sizeof sd->errmsg, fmt, ap);
    va_end(ap);
    sd->status = s;
    return s;
}

static tg_status
sd_ok(tg_state_dict *sd)
{
    sd->status = TG_OK;
    sd->errmsg[0] = '\0';
    return TG_OK;
}

tg_state_dict *
tg_state_dict_new(void)
{
    return tg__calloc(1, sizeof(tg_state_dict));
}

static void
meta_free(struct meta *m, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        tg__free(m[i].key);
        tg__free(m[i].value);
    }
    tg__free(m);
}

void
tg_state_dict_free(tg_state_dict *sd)
{
    if (!sd)
        return;
    for (size_t i = 0; i < sd->n_groups; i++)
        tg__free(sd->groups[i].prefix);
    for (size_t i = 0; i < sd->n_buffers; i++)
        tg__free(sd->buffers[i].name);
    tg__free(sd->groups);
    tg__free(sd->buffers);
    meta_free(sd->meta, sd->n_meta);
    tg__free(sd);
}

tg_status
tg_state_dict_status(const tg_state_dict *sd)
{
    return sd ? sd->status : TG_ERR_ARG;
}

const char *
tg_state_dict_error(const tg_state_dict *sd)
{
    if (!sd)
        return "state_dict: NULL state dict";
    return sd->status == TG_OK ? NULL : sd->errmsg;
}

tg_status
tg_state_dict_add_params(tg_state_dict *sd, const char *prefix, tg_params *p)
{
    if (!sd)
        return TG_ERR_ARG;
    if (!p)
        return sd_fail(sd, TG_ERR_ARG, "state_dict_add_params: params is NULL");
    if (!prefix)
        prefix = "";
    size_t plen = strlen(prefix);
    if (plen > TG_CHECKPOINT_NAME_MAX || !tg__utf8_valid(prefix, plen))
        return sd_fail(sd, TG_ERR_ARG,
                       "state_dict_add_params: prefix %s is not valid UTF-8 of at most %d bytes",
                       quote(prefix).s, TG_CHECKPOINT_NAME_MAX);
    struct group *g = tg__realloc(sd->groups, (sd->n_groups + 1) * sizeof *g);
    if (!g)
        return sd_fail(sd, TG_ERR_NOMEM, "state_dict_add_params: out of memory");
    sd->groups = g;
    g[sd->n_groups].prefix = tg__strdup(prefix);
    if (!g[sd->n_groups].prefix)
        return sd_fail(sd, TG_ERR_NOMEM, "state_dict_add_params: out of memory");
    g[sd->n_groups].params = p;
    sd->n_groups++;
    return sd_ok(sd);
}

tg_status
tg_state_dict_add_buffer(tg_state_dict *sd, const char *name, tg_dtype dt, int ndim,
                         const int64_t *dims, void *data)
{
    if (!sd)
        return TG_ERR_ARG;
    if (!name || !*name || strlen(name) > TG_CHECKPOINT_NAME_MAX ||
        !tg__utf8_valid(name, strlen(name)))
        return sd_fail(sd, TG_ERR_ARG,
                       "state_dict_add_buffer: a buffer needs a non-empty valid UTF-8 name of "
                       "at most %d bytes",
                       TG_CHECKPOINT_NAME_MAX);
    struct qtext qn = quote(name);
    if (dt != TG_F32 && dt != TG_F64)
        return sd_fail(sd, TG_ERR_ARG, "state_dict_add_buffer %s: dtype %d is not F32 or F64",
                       qn.s, (int)dt);
    if (ndim < 0 || ndim > TG_MAX_DIMS || (ndim > 0 && !dims))
        return sd_fail(sd, TG_ERR_ARG, "state_dict_add_buffer %s: rank %d is not in 0..%d%s",
                       qn.s, ndim, TG_MAX_DIMS, ndim > 0 && !dims ? " (dims is NULL)" : "");
    size_t nelem = 1;
    for (int i = 0; i < ndim; i++) {
        if (dims[i] < 0)
            return sd_fail(sd, TG_ERR_ARG, "state_dict_add_buffer %s: dim %d is %lld, must be >= 0",
                           qn.s, i, (long long)dims[i]);
        if ((uint64_t)dims[i] > SIZE_MAX || __builtin_mul_overflow(nelem, (size_t)dims[i], &nelem) ||
            nelem > SIZE_MAX / 8)
            return sd_fail(sd, TG_ERR_ARG, "state_dict_add_buffer %s: shape %s overflows", qn.s,
                           dims_text(ndim, dims).s);
    }
    if (!data && nelem)
        return sd_fail(sd, TG_ERR_ARG, "state_dict_add_buffer %s: data is NULL", qn.s);
    struct buffer *b = tg__realloc(sd->buffers, (sd->n_buffers + 1) * sizeof *b);
    if (!b)
        return sd_fail(sd, TG_ERR_NOMEM, "state_dict_add_buffer: out of memory");
    sd->buffers = b;
    b += sd->n_buffers;
    memset(b, 0, sizeof *b);
    b->name = tg__strdup(name);
    if (!b->name)
        return sd_fail(sd, TG_ERR_NOMEM, "state_dict_add_buffer: out of memory");
    b->dtype = dt;
    b->ndim = ndim;
    for (int i = 0; i < ndim; i++)
        b->dims[i] = dims[i];
    b->nelem = nelem;
    b->data = data;
    sd->n_buffers++;
    return sd_ok(sd);
}

tg_status
tg_state_dict_set_metadata(tg_state_dict *sd, const char *key, const char *value)
{
    if (!sd)
        return TG_ERR_ARG;
    if (!key || strlen(key) > TG_CHECKPOINT_META_MAX || !tg__utf8_valid(key, strlen(key)))
        return sd_fail(sd, TG_ERR_ARG,
                       "state_dict_set_metadata: key must be valid UTF-8 of at most %d bytes",
                       TG_CHECKPOINT_META_MAX);
    if (value &&
        (strlen(value) > TG_CHECKPOINT_META_MAX || !tg__utf8_valid(value, strlen(value))))
        return sd_fail(sd, TG_ERR_ARG,
                       "state_dict_set_metadata %s: value must be valid UTF-8 of at most %d bytes",
                       quote(key).s, TG_CHECKPOINT_META_MAX);
    for (size_t i = 0; i < sd->n_meta; i++) {
        if (strcmp(sd->meta[i].key, key) != 0)
            continue;
        if (!value) {
            tg__free(sd->meta[i].key);
            tg__free(sd->meta[i].value);
            sd->meta[i] = sd->meta[--sd->n_meta];
            return sd_ok(sd);
        }
        char *v = tg__strdup(value);
        if (!v)
            return sd_fail(sd, TG_ERR_NOMEM, "state_dict_set_metadata: out of memory");
        tg__free(sd->meta[i].value);
        sd->meta[i].value = v;
        return sd_ok(sd);
    }
    if (!value)
        return sd_ok(sd);
    if (sd->n_meta >= TG_CHECKPOINT_META_COUNT_MAX)
        return sd_fail(sd, TG_ERR_ARG, "state_dict_set_metadata: more than %d entries",
                       TG_CHECKPOINT_META_COUNT_MAX);
    struct meta *m = tg__realloc(sd->meta, (sd->n_meta + 1) * sizeof *m);
    if (!m)
        return sd_fail(sd, TG_ERR_NOMEM, "state_dict_set_metadata: out of memory");
    sd->meta = m;
    m[sd->n_meta].key = tg__strdup(key);
    m[sd->n_meta].value = tg__strdup(value);
    if (!m[sd->n_meta].key || !m[sd->n_meta].value) {
        tg__free(m[sd->n_meta].key);
        tg__free(m[sd->n_meta].value);
        return sd_fail(sd, TG_ERR_NOMEM, "state_dict_set_metadata: out of memory");
    }
    sd->n_meta++;
    return sd_ok(sd);
}

const char *
tg_state_dict_metadata(const tg_state_dict *sd, const char *key)
{
    if (!sd || !key)
        return NULL;
    for (size_t i = 0; i < sd->n_meta; i++)
        if (strcmp(sd->meta[i].key, key) == 0)
            return sd->meta[i].value;
    return NULL;
}

static void
bindings_free(struct binding *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        tg__free(b[i].name);
    tg__free(b);
}

static int
cmp_binding_name(const void *a, const void *b)
{
    return strcmp((*(const struct binding *const *)a)->name,
                  (*(const struct binding *const *)b)->name);
}

/* Resolve groups and buffers into one list in registration order, checking the names. */
static tg_status
collect(const struct ctx *c, tg_state_dict *sd, struct binding **out, size_t *n_out)
{
    *out = NULL;
    *n_out = 0;
    size_t n = sd->n_buffers;
    for (size_t g = 0; g < sd->n_groups; g++)
        n += tg_params_count(sd->groups[g].params) +
             tg_params_buffer_count(sd->groups[g].params);
    struct binding *b = tg__calloc(n ? n : 1, sizeof *b);
    if (!b)
        return fail(c, TG_ERR_NOMEM, "out of memory");
    size_t k = 0;
    tg_status st = TG_OK;
    for (size_t g = 0; g < sd->n_groups && !st; g++) {
        tg_params *p = sd->groups[g].params;
        const char *prefix = sd->groups[g].prefix;
        size_t n_params = tg_params_count(p);
        for (size_t i = 0; i < n_params + tg_params_buffer_count(p); i++) {
            /* the parameters, then the buffers (batch norm's running statistics) */
            tg_tensor *t = i < n_params ? tg_params_get(p, i) : tg_params_buffer(p, i - n_params);
            const char *name = t ? tg_tensor_name(t) : NULL;
            if (!name) {
                st = fail(c, TG_ERR_ARG, "parameter %zu of a parameter set has no name", i);
                break;
            }
            size_t len = strlen(prefix) + strlen(name);
            if (len > TG_CHECKPOINT_NAME_MAX) {
                st = fail(c, TG_ERR_ARG, "name %s%s is %zu bytes, more than %d", quote(prefix).s,
                          quote(name).s, len, TG_CHECKPOINT_NAME_MAX);
                break;
            }
            struct binding *x = &b[k];
            x->name = tg__malloc(len + 1);
            if (!x->name) {
                st = fail(c, TG_ERR_NOMEM, "out of memory");
                break;
            }
            k++;
            snprintf(x->name, len + 1, "%s%s", prefix, name);
            x->dtype = tg_tensor_dtype(t);
            x->ndim = tg_tensor_ndim(t);
            if (x->ndim < 0 || x->ndim > TG_MAX_DIMS) {
                st = fail(c, TG_ERR_ARG, "tensor %s: rank %d", quote(x->name).s, x->ndim);
                break;
            }
            for (int d = 0; d < x->ndim; d++)
                x->dims[d] = tg_tensor_dim(t, d);
            x->nelem = tg_tensor_size(t);
            x->data = tg_tensor_data(t);
        }
    }
    for (size_t i = 0; i < sd->n_buffers && !st; i++) {
        const struct buffer *s = &sd->buffers[i];
        struct binding *x = &b[k];
        x->name = tg__strdup(s->name);
        if (!x->name) {
            st = fail(c, TG_ERR_NOMEM, "out of memory");
            break;
        }
        k++;
        x->dtype = s->dtype;
        x->ndim = s->ndim;
        memcpy(x->dims, s->dims, sizeof x->dims);
        x->nelem = s->nelem;
        x->data = s->data;
    }
    if (!st) {
        /* Names: unique, not the metadata key (rule 9). Sorted copy of pointers. */
        struct binding **sorted = tg__malloc((k ? k : 1) * sizeof *sorted);
        if (!sorted) {
            st = fail(c, TG_ERR_NOMEM, "out of memory");
        } else {
            for (size_t i = 0; i < k; i++)
                sorted[i] = &b[i];
            qsort(sorted, k, sizeof *sorted, cmp_binding_name);
            for (size_t i = 0; i < k && !st; i++) {
                if (strcmp(sorted[i]->name, "__metadata__") == 0)
                    st = fail(c, TG_ERR_ARG, "a tensor may not be named \"__metadata__\"");
                else if (i && strcmp(sorted[i]->name, sorted[i - 1]->name) == 0)
                    st = fail(c, TG_ERR_ARG, "two tensors are named %s",
                              quote(sorted[i]->name).s);
            }
            tg__free(sorted);
        }
    }
    for (size_t i = 0; i < k && !st; i++)
        if (b[i].dtype != TG_F32 && b[i].dtype != TG_F64)
            st = fail(c, TG_ERR_ARG, "tensor %s: dtype %d is not F32 or F64", quote(b[i].name).s,
                      (int)b[i].dtype);
    if (st) {
        bindings_free(b, k);
        return st;
    }
    *out = b;
    *n_out = k;
    return TG_OK;
}

/* ---- save ---- */

static int
write_full(int fd, const void *buf, size_t n)
{
    const unsigned char *p = buf;
    while (n) {
        if (tg__ckpt_fault == TG__CKPT_FAULT_WRITE) {
            errno = ENOSPC;
            return -1;
        }
        size_t chunk = n > (1u << 30) ? (1u << 30) : n;
        ssize_t w = write(fd, p, chunk);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (w == 0) {
            errno = EIO;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Values in little-endian order: straight from memory on LE hosts, through a bounce buffer
 * otherwise. */
static int
write_values(int fd, const void *data, size_t nelem, size_t esize)
{
    if (host_is_le())
        return write_full(fd, data, nelem * esize);
    unsigned char tmp[1 << 14];
    const unsigned char *p = data;
    size_t per = sizeof tmp / esize;
    while (nelem) {
        size_t k = nelem < per ? nelem : per;
        copy_le(tmp, p, k, esize);
        if (write_full(fd, tmp, k * esize) != 0)
            return -1;
        p += k * esize;
        nelem -= k;
    }
    return 0;
}

/* The header: {"__metadata__": {...}, name: {dtype, shape, data_offsets}, ...} in registration
 * order (rule 18), compact, padded with spaces so that 8 + N is a multiple of 8. */
static tg_status
build_header(const struct ctx *c, const tg_state_dict *sd, const struct binding *b, size_t n,
             char **out, size_t *len)
{
    json_t *root = json_object();
    if (!root)
        return fail(c, TG_ERR_NOMEM, "out of memory building the header");
    tg_status st = TG_OK;
    if (sd->n_meta) {
        json_t *m = json_object();
        if (!m || json_object_set_new(root, "__metadata__", m) != 0)
            st = fail(c, TG_ERR_NOMEM, "out of memory building the header");
        for (size_t i = 0; i < sd->n_meta && !st; i++)
            if (json_object_set_new(m, sd->meta[i].key, json_string(sd->meta[i].value)) != 0)
                st = fail(c, TG_ERR_NOMEM, "metadata %s could not be encoded",
                          quote(sd->meta[i].key).s);
    }
    uint64_t off = 0;
    for (size_t i = 0; i < n && !st; i++) {
        json_t *shape = json_array();
        json_t *offs = json_array();
        json_t *e = json_object();
        bool ok = shape && offs && e;
        for (int d = 0; ok && d < b[i].ndim; d++)
            ok = json_array_append_new(shape, json_integer((json_int_t)b[i].dims[d])) == 0;
        uint64_t bytes = (uint64_t)b[i].nelem * tg__dtype_bytes(b[i].dtype);
        ok = ok && json_array_append_new(offs, json_integer((json_int_t)off)) == 0 &&
             json_array_append_new(offs, json_integer((json_int_t)(off + bytes))) == 0;
        ok = ok && json_object_set_new(e, "dtype", json_string(tg_to_st(b[i].dtype))) == 0;
        ok = ok && json_object_set(e, "shape", shape) == 0 &&
             json_object_set(e, "data_offsets", offs) == 0;
        json_decref(shape);
        json_decref(offs);
        if (ok) {
            ok = json_object_set_new(root, b[i].name, e) == 0;
        } else {
            json_decref(e);
        }
        if (!ok)
            st = fail(c, TG_ERR_NOMEM, "tensor %s could not be encoded in the header",
                      quote(b[i].name).s);
        off += bytes;
    }
    char *text = NULL;
    if (!st) {
        text = json_dumps(root, JSON_COMPACT);
        if (!text)
            st = fail(c, TG_ERR_NOMEM, "out of memory encoding the header");
    }
    json_decref(root);
    if (st)
        return st;
    size_t tl = strlen(text);
    size_t padded = (tl + 7) / 8 * 8;
    char *h = tg__malloc(padded ? padded : 8);
    if (!h) {
        free(text); /* json_dumps' result is released with free() (jansson's default) */
        return fail(c, TG_ERR_NOMEM, "out of memory encoding the header");
    }
    memcpy(h, text, tl);
    memset(h + tl, ' ', padded - tl);
    free(text);
    *out = h;
    *len = padded;
    return TG_OK;
}

/* Copy of path's directory ("." when it has none) and base name. */
static tg_status
split_path(const struct ctx *c, const char *path, char **dir, const char **base)
{
    const char *slash = strrchr(path, '/');
    *base = slash ? slash + 1 : path;
    if (!**base)
        return fail(c, TG_ERR_ARG, "the path names a directory, not a file");
    size_t dl = slash ? (size_t)(slash - path) : 1;
    if (slash && dl == 0)
        dl = 1; /* "/file" */
    *dir = tg__malloc(dl + 1);
    if (!*dir)
        return fail(c, TG_ERR_NOMEM, "out of memory");
    if (slash)
        memcpy(*dir, path, dl);
    else
        (*dir)[0] = '.';
    (*dir)[dl] = '\0';
    return TG_OK;
}

/* ---- temporaries and symbolic links ---- */

/* A save of dir/base writes ".<base>" TMP_TAG "XXXXXX" (mkstemp fills the six characters from
 * [A-Za-z0-9]) in dir. The tag keeps the name apart from other tools' temporaries (rsync's
 * are ".<base>.XXXXXX") so that cleanup never takes theirs for ours. */
#define TMP_TAG ".tg-save."
#define TMP_RANDOM 6

static bool
is_own_temporary(const char *name, const char *base)
{
    size_t bl = strlen(base), tl = strlen(TMP_TAG);
    if (name[0] != '.' || strncmp(name + 1, base, bl) != 0 ||
        strncmp(name + 1 + bl, TMP_TAG, tl) != 0)
        return false;
    const char *r = name + 1 + bl + tl;
    size_t i = 0;
    for (; r[i]; i++) {
        char ch = r[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9')))
            return false;
    }
    return i == TMP_RANDOM;
}

/* Removes what earlier saves of dir/base left behind when they were killed before their rename:
 * entries named exactly as save_atomic names them, that are regular files (never a link, which
 * is not followed, nor a FIFO or device, which is not even opened), and whose flock can be taken
 * at once. A writer holds that lock from creation to rename, so a temporary that is still being
 * written, by any process, is skipped. The unlink happens under the lock and only if the name
 * still refers to the file that was locked. Best effort: nothing here fails the save. */
static void
remove_stale_temporaries(const char *dir, const char *base)
{
    DIR *d = opendir(dir);
    if (!d)
        return; /* mkstemp will report the directory's problem */
    int dfd = dirfd(d);
    struct dirent *e;
    while (dfd >= 0 && (e = readdir(d))) {
        if (!is_own_temporary(e->d_name, base))
            continue;
        struct stat ls, fs;
        if (fstatat(dfd, e->d_name, &ls, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(ls.st_mode))
            continue;
        int flags = O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC;
        int fd = openat(dfd, e->d_name, O_RDONLY | flags);
        if (fd < 0 && errno == EACCES)
            fd = openat(dfd, e->d_name, O_WRONLY | flags); /* a write-only checkpoint's mode */
        if (fd < 0)
            continue;
        if (fstat(fd, &fs) == 0 && S_ISREG(fs.st_mode) && fs.st_dev == ls.st_dev &&
            fs.st_ino == ls.st_ino && flock(fd, LOCK_EX | LOCK_NB) == 0 &&
            fstatat(dfd, e->d_name, &ls, AT_SYMLINK_NOFOLLOW) == 0 && ls.st_dev == fs.st_dev &&
            ls.st_ino == fs.st_ino)
            (void)unlinkat(dfd, e->d_name, 0);
        close(fd); /* drops the lock */
    }
    closedir(d);
}

enum { MAX_SYMLINK_HOPS = 40 }; /* Linux's MAXSYMLINKS */
#ifndef S_ISVTX
#define S_ISVTX 01000 /* the sticky bit (XSI, hidden by _POSIX_C_SOURCE on glibc) */
#endif

/* The part of p up to and including its last '/' ("" when none): the directory a relative
 * symlink target is taken from. */
static size_t
dir_prefix_len(const char *p)
{
    const char *slash = strrchr(p, '/');
    return slash ? (size_t)(slash - p) + 1 : 0;
}

/* The file that a save to c->path replaces: c->path itself, or, when it is a symbolic link, the
 * end of its chain (relative targets taken from the directory of the link that holds them), which
 * may not exist yet (a dangling link: the target is created). *out is allocated. Like Linux's
 * fs.protected_symlinks, a link in a sticky world-writable directory (/tmp) is only followed when
 * it belongs to us or to the directory's owner. */
static tg_status
resolve_target(const struct ctx *c, char **out)
{
    *out = NULL;
    char *cur = tg__strdup(c->path);
    if (!cur)
        return fail(c, TG_ERR_NOMEM, "out of memory");
    for (int hops = 0;; hops++) {
        struct stat ls;
        if (lstat(cur, &ls) != 0 || !S_ISLNK(ls.st_mode))
            break; /* a file, or none yet (what else fails is reported by the save's steps) */
        if (hops == MAX_SYMLINK_HOPS) {
            tg_status st = fail(c, TG_ERR_IO, "following symbolic links: %s (more than %d)",
                                strerror(ELOOP), MAX_SYMLINK_HOPS);
            tg__free(cur);
            return st;
        }
        size_t pl = dir_prefix_len(cur);
        char *pdir = pl ? dup_n(cur, pl) : tg__strdup(".");
        if (!pdir) {
            tg__free(cur);
            return fail(c, TG_ERR_NOMEM, "out of memory");
        }
        struct stat ds;
        bool refuse = stat(pdir, &ds) == 0 && (ds.st_mode & S_ISVTX) && (ds.st_mode & S_IWOTH) &&
                      ls.st_uid != geteuid() && ls.st_uid != ds.st_uid;
        if (refuse) {
            tg_status st = fail(c, TG_ERR_IO,
                                "not following symbolic link \"%s\": it belongs to uid %ld, not to "
                                "us nor to the owner of the sticky world-writable directory "
                                "\"%s\"",
                                cur, (long)ls.st_uid, pdir);
            tg__free(pdir);
            tg__free(cur);
            return st;
        }
        tg__free(pdir);
        /* st_size is the target's length on most file systems, 0 on some: grow until it fits. */
        size_t cap = ls.st_size > 0 ? (size_t)ls.st_size + 1 : 256;
        char *t = NULL;
        ssize_t r;
        for (;;) {
            char *nt = tg__realloc(t, cap);
            if (!nt) {
                tg__free(t);
                tg__free(cur);
                return fail(c, TG_ERR_NOMEM, "out of memory");
            }
            t = nt;
            r = readlink(cur, t, cap);
            if (r < 0 || (size_t)r < cap)
                break;
            cap *= 2;
        }
        if (r <= 0) {
            tg_status st = fail(c, TG_ERR_IO, "reading symbolic link \"%s\": %s", cur,
                                strerror(r < 0 ? errno : ENOENT));
            tg__free(t);
            tg__free(cur);
            return st;
        }
        t[r] = '\0';
        char *next;
        if (t[0] == '/' || pl == 0) {
            next = t;
        } else {
            next = tg__malloc(pl + (size_t)r + 1);
            if (next) {
                memcpy(next, cur, pl);
                memcpy(next + pl, t, (size_t)r + 1);
            }
            tg__free(t);
            if (!next) {
                tg__free(cur);
                return fail(c, TG_ERR_NOMEM, "out of memory");
            }
        }
        tg__free(cur);
        cur = next;
    }
    *out = cur;
    return TG_OK;
}

/* rule 17: tmp in the same directory, every write checked, fsync, close, rename, fsync dir.
 * Through a symbolic link, the link's final target is what is replaced (in its directory). */
static tg_status
save_atomic(const struct ctx *c, const char *header, size_t hlen, const struct binding *b,
            size_t n)
{
    char *target = NULL, *dir = NULL, *tmp = NULL;
    const char *base;
    tg_status st = resolve_target(c, &target);
    if (st)
        return st;
    bool via_link = strcmp(target, c->path) != 0;
    /* " (the target of the symbolic link)" in messages about the target */
    char via[32 + 1024];
    snprintf(via, sizeof via, "%s%s%s", via_link ? " (symbolic link target \"" : "",
             via_link ? target : "", via_link ? "\")" : "");
    st = split_path(c, target, &dir, &base);
    if (st)
        goto out;
    /* Permissions: the old file's, else rw-r--r-- (mkstemp makes 0600). Only a regular file is
     * ever replaced. */
    struct stat old;
    mode_t mode = 0644;
    if (lstat(target, &old) == 0) {
        if (!S_ISREG(old.st_mode)) {
            const char *kind = S_ISDIR(old.st_mode) ? "a directory" : "a FIFO, socket or device";
            if (via_link)
                st = fail(c, TG_ERR_IO, "the symbolic link's target \"%s\" is not a regular file "
                          "(%s); it is not replaced", target, kind);
            else
                st = fail(c, TG_ERR_IO, "not a regular file (%s); it is not replaced", kind);
            goto out;
        }
        mode = old.st_mode & 07777;
    }
    remove_stale_temporaries(dir, base);
    size_t tl = strlen(dir) + strlen(base) + strlen(TMP_TAG) + TMP_RANDOM + 3;
    tmp = tg__malloc(tl);
    if (!tmp) {
        st = fail(c, TG_ERR_NOMEM, "out of memory");
        goto out;
    }
    /* Created and locked (flock, held until after the rename: see remove_stale_temporaries). A
     * concurrent cleanup may lock and remove a fresh temporary before we lock it: then we see it
     * unlinked (or still locked by that cleanup) and start again under a new name. */
    int fd = -1, lockfd = -1;
    for (int attempt = 0;; attempt++) {
        snprintf(tmp, tl, "%s/.%s" TMP_TAG "XXXXXX", dir, base);
        fd = mkstemp(tmp);
        if (fd < 0) {
            st = fail(c, TG_ERR_IO, "cannot create a temporary file in \"%s\"%s: %s", dir, via,
                      strerror(errno));
            goto out;
        }
        (void)fcntl(fd, F_SETFD, FD_CLOEXEC);
        int lr;
        while ((lr = flock(fd, LOCK_EX | LOCK_NB)) != 0 && errno == EINTR)
            ;
        struct stat fs;
        bool lost = lr != 0 ? errno == EWOULDBLOCK : fstat(fd, &fs) == 0 && fs.st_nlink == 0;
        /* Any other flock error (a file system without locks): written unlocked, and cleanups
         * there cannot lock anything either, so they remove nothing. */
        if (!lost)
            break;
        if (lr != 0)
            unlink(tmp);
        close(fd);
        fd = -1;
        if (attempt == 8) {
            st = fail(c, TG_ERR_IO, "cannot create a temporary file in \"%s\"%s: each one was "
                      "removed by a concurrent save", dir, via);
            goto out;
        }
    }
    /* The lock belongs to the open file description: this duplicate keeps it past close(fd),
     * whose error is checked before the rename, until the rename is done. */
    lockfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (lockfd < 0) {
        st = fail(c, TG_ERR_IO, "cannot duplicate the descriptor of \"%s\": %s", tmp,
                  strerror(errno));
        goto fail_open;
    }
    if (fchmod(fd, mode) != 0) {
        st = fail(c, TG_ERR_IO, "cannot set permissions on \"%s\": %s", tmp, strerror(errno));
        goto fail_open;
    }
    unsigned char lenbuf[8];
    put_le64(lenbuf, hlen);
    if (write_full(fd, lenbuf, 8) != 0 || write_full(fd, header, hlen) != 0) {
        st = fail(c, TG_ERR_IO, "writing the header to \"%s\": %s", tmp, strerror(errno));
        goto fail_open;
    }
    for (size_t i = 0; i < n; i++) {
        if (write_values(fd, b[i].data, b[i].nelem, tg__dtype_bytes(b[i].dtype)) != 0) {
            st = fail(c, TG_ERR_IO, "writing tensor %s to \"%s\": %s", quote(b[i].name).s, tmp,
                      strerror(errno));
            goto fail_open;
        }
    }
    if (tg__ckpt_fault == TG__CKPT_FAULT_FSYNC || fsync(fd) != 0) {
        if (tg__ckpt_fault == TG__CKPT_FAULT_FSYNC)
            errno = EIO;
        st = fail(c, TG_ERR_IO, "fsync of \"%s\": %s", tmp, strerror(errno));
        goto fail_open;
    }
    int cr = close(fd);
    fd = -1;
    if (tg__ckpt_fault == TG__CKPT_FAULT_CLOSE || cr != 0) {
        if (tg__ckpt_fault == TG__CKPT_FAULT_CLOSE)
            errno = EIO;
        st = fail(c, TG_ERR_IO, "closing \"%s\": %s", tmp, strerror(errno));
        goto fail_open;
    }
    if (tg__ckpt_fault == TG__CKPT_FAULT_RENAME || rename(tmp, target) != 0) {
        if (tg__ckpt_fault == TG__CKPT_FAULT_RENAME)
            errno = EXDEV;
        st = fail(c, TG_ERR_IO, "renaming \"%s\" over %s: %s", tmp,
                  via_link ? "the symbolic link's target" : "it", strerror(errno));
        goto fail_open;
    }
    close(lockfd);
    /* Durable only once the directory entry is on disk. */
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int dr = dfd < 0 ? -1 : fsync(dfd);
    int de = errno;
    if (dfd >= 0)
        close(dfd);
    if (tg__ckpt_fault == TG__CKPT_FAULT_DIRSYNC) {
        dr = -1;
        de = EIO;
    }
    if (dr != 0 && de != EINVAL) /* EINVAL: the file system cannot sync directories */
        st = fail(c, TG_ERR_IO,
                  "the new file is in place but syncing directory \"%s\" failed: %s", dir,
                  strerror(de));
    goto out;

fail_open:
    unlink(tmp); /* still under our lock */
    if (fd >= 0)
        close(fd);
    if (lockfd >= 0)
        close(lockfd);
out:
    tg__free(tmp);
    tg__free(dir);
    tg__free(target);
    return st;
}

tg_status
tg_state_dict_save(tg_state_dict *sd, const char *path)
{
    if (!sd)
        return TG_ERR_ARG;
    if (!path)
        return sd_fail(sd, TG_ERR_ARG, "save: path is NULL");
    struct ctx c = {"save", path, sd->errmsg, sizeof sd->errmsg};
    struct binding *b;
    size_t n;
    tg_status st = collect(&c, sd, &b, &n);
    if (st)
        return sd->status = st;
    for (size_t i = 0; i < n; i++)
        if (b[i].nelem && !b[i].data) {
            st = fail(&c, TG_ERR_ARG, "tensor %s has no data", quote(b[i].name).s);
            bindings_free(b, n);
            return sd->status = st;
        }
    char *header = NULL;
    size_t hlen = 0;
    st = build_header(&c, sd, b, n, &header, &hlen);
    if (!st)
        st = save_atomic(&c, header, hlen, b, n);
    tg__free(header);
    bindings_free(b, n);
    if (st)
        return sd->status = st;
    return sd_ok(sd);
}

/* ---- load ---- */

static int
cmp_entry_name(const void *a, const void *b)
{
    return strcmp((*(const struct entry *const *)a)->name, (*(const struct entry *const *)b)->name);
}

/* Appends `"name"` to a list in buf; returns false once it no longer fits. */
static bool
list_add(char *buf, size_t size, size_t *o, const char *name)
{
    struct qtext q = quote(name);
    size_t need = strlen(q.s) + 2;
    if (*o + need + 16 >= size)
        return false;
    *o += (size_t)snprintf(buf + *o, size - *o, "%s%s", *o ? ", " : "", q.s);
    return true;
}

tg_status
tg_state_dict_load(tg_state_dict *sd, const char *path, unsigned flags)
{
    if (!sd)
        return TG_ERR_ARG;
    if (!path)
        return sd_fail(sd, TG_ERR_ARG, "load: path is NULL");
    struct ctx c = {"load", path, sd->errmsg, sizeof sd->errmsg};
    struct binding *b = NULL;
    size_t nb = 0;
    struct parsed p;
    memset(&p, 0, sizeof p);
    struct entry **fe = NULL;
    struct binding **sb = NULL;
    tg_status st = collect(&c, sd, &b, &nb);
    if (st)
        goto out;
    st = parse_file(&c, &p, true);
    if (st)
        goto out;

    /* Match by name: sort both sides, merge (O(n log n) for 65 536 tensors). */
    fe = tg__malloc((p.n ? p.n : 1) * sizeof *fe);
    sb = tg__malloc((nb ? nb : 1) * sizeof *sb);
    if (!fe || !sb) {
        st = fail(&c, TG_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < p.n; i++)
        fe[i] = &p.e[i];
    for (size_t i = 0; i < nb; i++)
        sb[i] = &b[i];
    qsort(fe, p.n, sizeof *fe, cmp_entry_name);
    qsort(sb, nb, sizeof *sb, cmp_binding_name);
    /* Room for at least one name quoted at its longest, so a list is never empty. */
    char missing[sizeof(struct qtext) + 64] = "", unexpected[sizeof(struct qtext) + 64] = "";
    size_t mo = 0, uo = 0, n_missing = 0, n_unexpected = 0, m_shown = 0, u_shown = 0;
    size_t i = 0, j = 0;
    while (i < p.n || j < nb) {
        int cmp = i == p.n ? 1 : j == nb ? -1 : strcmp(fe[i]->name, sb[j]->name);
        if (cmp == 0) {
            sb[j++]->match = fe[i++];
        } else if (cmp < 0) {
            n_unexpected++;
            u_shown += list_add(unexpected, sizeof unexpected, &uo, fe[i++]->name);
        } else {
            n_missing++;
            m_shown += list_add(missing, sizeof missing, &mo, sb[j++]->name);
        }
    }
    if (flags & TG_LOAD_ALLOW_MISSING)
        n_missing = 0;
    if (flags & TG_LOAD_ALLOW_UNEXPECTED)
        n_unexpected = 0;
    if (n_missing || n_unexpected) { /* rule 11 */
        char more_m[40] = "", more_u[40] = "";
        if (n_missing > m_shown)
            snprintf(more_m, sizeof more_m, " and %zu more", n_missing - m_shown);
        if (n_unexpected > u_shown)
            snprintf(more_u, sizeof more_u, " and %zu more", n_unexpected - u_shown);
        if (n_missing && n_unexpected)
            st = fail(&c, TG_ERR_FORMAT, "%zu tensors missing from the file: %s%s; %zu unexpected: "
                      "%s%s", n_missing, missing, more_m, n_unexpected, unexpected, more_u);
        else if (n_missing)
            st = fail(&c, TG_ERR_FORMAT, "%zu tensor%s missing from the file: %s%s", n_missing,
                      n_missing == 1 ? "" : "s", missing, more_m);
        else
            st = fail(&c, TG_ERR_FORMAT, "%zu unexpected tensor%s in the file: %s%s",
                      n_unexpected, n_unexpected == 1 ? "" : "s", unexpected, more_u);
        goto out;
    }
    /* dtype and shape of every match (rules 10, 19; bad inputs 30, 31), in registration order. */
    for (size_t k = 0; k < nb; k++) {
        const struct entry *e = b[k].match;
        if (!e)
            continue;
        int fdt = st_to_tg(e->st);
        if (fdt != (int)b[k].dtype) {
            st = fail(&c, TG_ERR_FORMAT, "tensor %s: dtype in file %s, model expects %s",
                      quote(b[k].name).s, st_dtypes[e->st].name, tg_to_st(b[k].dtype));
            goto out;
        }
        bool same = e->ndim == b[k].ndim;
        for (int d = 0; same && d < e->ndim; d++)
            same = e->dims[d] == b[k].dims[d];
        if (!same) {
            st = fail(&c, TG_ERR_FORMAT, "tensor %s: shape in file %s, model expects %s",
                      quote(b[k].name).s, dims_text(e->ndim, e->dims).s,
                      dims_text(b[k].ndim, b[k].dims).s);
            goto out;
        }
        if (flags & TG_LOAD_CHECK_FINITE) { /* rule 12 */
            const unsigned char *src = p.data + e->begin;
            size_t es = tg__dtype_bytes(b[k].dtype);
            for (size_t x = 0; x < e->nelem; x++) {
                unsigned char le[8];
                copy_le(le, src + x * es, 1, es);
                double v;
                if (es == 4) {
                    float f;
                    memcpy(&f, le, 4);
                    v = f;
                } else {
                    memcpy(&v, le, 8);
                }
                if (!isfinite(v)) {
                    st = fail(&c, TG_ERR_NONFINITE, "tensor %s: element %zu is %g",
                              quote(b[k].name).s, x, v);
                    goto out;
                }
            }
        }
    }
    /* Everything checked: copy. Nothing below can fail. */
    for (size_t k = 0; k < nb; k++) {
        const struct entry *e = b[k].match;
        if (e && e->nelem)
            copy_le(b[k].data, p.data + e->begin, e->nelem, tg__dtype_bytes(b[k].dtype));
    }
    meta_free(sd->meta, sd->n_meta);
    sd->meta = p.m;
    sd->n_meta = p.n_meta;
    p.m = NULL;
    p.n_meta = 0;
out:
    tg__free(fe);
    tg__free(sb);
    parsed_free(&p);
    bindings_free(b, nb);
    if (st)
        return sd->status = st;
    return sd_ok(sd);
}

/* ---- shorthands ---- */

static tg_status
params_io(tg_params *p, const char *path, char *err, size_t errsize, bool save)
{
    if (err && errsize)
        err[0] = '\0';
    tg_state_dict *sd = tg_state_dict_new();
    if (!sd) {
        if (err && errsize)
            snprintf(err, errsize, "%s: out of memory", save ? "save" : "load");
        return TG_ERR_NOMEM;
    }
    tg_status st = tg_state_dict_add_params(sd, "", p);
    if (!st)
        st = save ? tg_state_dict_save(sd, path) : tg_state_dict_load(sd, path, 0);
    if (st && err && errsize)
        snprintf(err, errsize, "%s", tg_state_dict_error(sd));
    tg_state_dict_free(sd);
    return st;
}

tg_status
tg_checkpoint_save_params(tg_params *p, const char *path, char *err, size_t errsize)
{
    return params_io(p, path, err, errsize, true);
}

tg_status
tg_checkpoint_load_params(tg_params *p, const char *path, char *err, size_t errsize)
{
    return params_io(p, path, err, errsize, false);
}

/* ---------------------------------------------------------------------------------------
 * Inspection.
 */
struct tg_checkpoint {
    tg_status status;
    char errmsg[TG__ERRMSG_SIZE];
    char *path;
    struct parsed p;
    void **values; /* per tensor: host-order copy for F32/F64, else NULL */
};

tg_checkpoint *
tg_checkpoint_open(const char *path)
{
    tg_checkpoint *ck = tg__calloc(1, sizeof *ck);
    if (!ck)
        return NULL;
    if (!path) {
        ck->status = TG_ERR_ARG;
        snprintf(ck->errmsg, sizeof ck->errmsg, "open: path is NULL");
        return ck;
    }
    ck->path = tg__strdup(path);
    struct ctx c = {"open", path, ck->errmsg, sizeof ck->errmsg};
    if (!ck->path) {
        ck->status = fail(&c, TG_ERR_NOMEM, "out of memory");
        return ck;
    }
    tg_status st = parse_file(&c, &ck->p, true);
    if (!st) {
        ck->values = tg__calloc(ck->p.n ? ck->p.n : 1, sizeof *ck->values);
        if (!ck->values)
            st = fail(&c, TG_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; !st && i < ck->p.n; i++) {
        const struct entry *e = &ck->p.e[i];
        int dt = st_to_tg(e->st);
        if (dt < 0)
            continue;
        size_t es = tg__dtype_bytes((tg_dtype)dt);
        ck->values[i] = tg__malloc(e->nelem ? e->nelem * es : 1);
        if (!ck->values[i]) {
            st = fail(&c, TG_ERR_NOMEM, "out of memory for tensor %s", quote(e->name).s);
            break;
        }
        copy_le(ck->values[i], ck->p.data + e->begin, e->nelem, es);
    }
    if (!st) {
        tg__free(ck->p.data); /* the typed copies are what is kept */
        ck->p.data = NULL;
    } else {
        if (ck->values)
            for (size_t i = 0; i < ck->p.n; i++)
                tg__free(ck->values[i]);
        tg__free(ck->values);
        ck->values = NULL;
        parsed_free(&ck->p);
    }
    ck->status = st;
    return ck;
}

void
tg_checkpoint_free(tg_checkpoint *ck)
{
    if (!ck)
        return;
    if (ck->values)
        for (size_t i = 0; i < ck->p.n; i++)
            tg__free(ck->values[i]);
    tg__free(ck->values);
    parsed_free(&ck->p);
    tg__free(ck->path);
    tg__free(ck);
}

tg_status
tg_checkpoint_status(const tg_checkpoint *ck)
{
    return ck ? ck->status : TG_ERR_ARG;
}

const char *
tg_checkpoint_error(const tg_checkpoint *ck)
{
    if (!ck)
        return "checkpoint: NULL checkpoint";
    return ck->status == TG_OK ? NULL : ck->errmsg;
}

static const struct entry *
ck_entry(const tg_checkpoint *ck, size_t i)
{
    if (!ck || !ck->p.e || !ck->values || i >= ck->p.n)
        return NULL;
    return &ck->p.e[i];
}

size_t
tg_checkpoint_count(const tg_checkpoint *ck)
{
    return ck && ck->p.e && ck->values ? ck->p.n : 0;
}

long
tg_checkpoint_find(const tg_checkpoint *ck, const char *name)
{
    if (!name)
        return -1;
    for (size_t i = 0; i < tg_checkpoint_count(ck); i++)
        if (strcmp(ck->p.e[i].name, name) == 0)
            return (long)i;
    return -1;
}

const char *
tg_checkpoint_name(const tg_checkpoint *ck, size_t i)
{
    const struct entry *e = ck_entry(ck, i);
    return e ? e->name : NULL;
}

const char *
tg_checkpoint_dtype_name(const tg_checkpoint *ck, size_t i)
{
    const struct entry *e = ck_entry(ck, i);
    return e ? st_dtypes[e->st].name : NULL;
}

int
tg_checkpoint_ndim(const tg_checkpoint *ck, size_t i)
{
    const struct entry *e = ck_entry(ck, i);
    return e ? e->ndim : 0;
}

int64_t
tg_checkpoint_dim(const tg_checkpoint *ck, size_t i, int axis)
{
    const struct entry *e = ck_entry(ck, i);
    if (!e || axis < 0 || axis >= e->ndim)
        return 0;
    return e->dims[axis];
}

size_t
tg_checkpoint_size(const tg_checkpoint *ck, size_t i)
{
    const struct entry *e = ck_entry(ck, i);
    return e ? e->nelem : 0;
}

tg_status
tg_checkpoint_dtype(tg_checkpoint *ck, size_t i, tg_dtype *dt)
{
    if (!ck)
        return TG_ERR_ARG;
    struct ctx c = {"open", ck->path ? ck->path : "", ck->errmsg, sizeof ck->errmsg};
    const struct entry *e = ck_entry(ck, i);
    if (!e)
        return ck->status = fail(&c, TG_ERR_ARG, "tensor index %zu is out of range (%zu tensors)",
                                 i, tg_checkpoint_count(ck));
    int t = st_to_tg(e->st);
    if (t < 0)
        return ck->status = fail(&c, TG_ERR_UNSUPPORTED,
                                 "tensor %s: dtype %s is not supported (tapegrad reads F32 and "
                                 "F64)",
                                 quote(e->name).s, st_dtypes[e->st].name);
    if (dt)
        *dt = (tg_dtype)t;
    ck->status = TG_OK;
    ck->errmsg[0] = '\0';
    return TG_OK;
}

const void *
tg_checkpoint_data(tg_checkpoint *ck, size_t i)
{
    if (tg_checkpoint_dtype(ck, i, NULL) != TG_OK)
        return NULL;
    return ck->values[i];
}

tg_status
tg_checkpoint_read(tg_checkpoint *ck, size_t i, double *dst, size_t n)
{
    tg_dtype dt;
    tg_status st = tg_checkpoint_dtype(ck, i, &dt);
    if (st)
        return st;
    const struct entry *e = &ck->p.e[i];
    if (!dst || n != e->nelem) {
        struct ctx c = {"open", ck->path, ck->errmsg, sizeof ck->errmsg};
        return ck->status = fail(&c, TG_ERR_ARG, "read tensor %s: n is %zu, the tensor has %zu",
                                 quote(e->name).s, n, e->nelem);
    }
    if (dt == TG_F32)
        for (size_t k = 0; k < n; k++)
            dst[k] = ((const float *)ck->values[i])[k];
    else
        memcpy(dst, ck->values[i], n * sizeof *dst);
    return TG_OK;
}

size_t
tg_checkpoint_metadata_count(const tg_checkpoint *ck)
{
    return ck && ck->values ? ck->p.n_meta : 0;
}

const char *
tg_checkpoint_metadata_key(const tg_checkpoint *ck, size_t i)
{
    return i < tg_checkpoint_metadata_count(ck) ? ck->p.m[i].key : NULL;
}

const char *
tg_checkpoint_metadata_value(const tg_checkpoint *ck, size_t i)
{
    return i < tg_checkpoint_metadata_count(ck) ? ck->p.m[i].value : NULL;
}

const char *
tg_checkpoint_metadata_get(const tg_checkpoint *ck, const char *key)
{
    if (!key)
        return NULL;
    for (size_t i = 0; i < tg_checkpoint_metadata_count(ck); i++)
        if (strcmp(ck->p.m[i].key, key) == 0)
            return ck->p.m[i].value;
    return NULL;
}
