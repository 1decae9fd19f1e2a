/*
 * Graph export: a recorded tape as Graphviz DOT (see <tapegrad/dot.h> for what the picture
 * shows and dot-escape.h for how user text is made safe).
 *
 * Two passes over the tape. The first numbers every tensor in order of first use (a hash
 * map from tensor to number, so a tensor read by many ops is one node), works out each
 * node's role and name scope, and lists the DOT nodes in data-flow order. The second
 * writes them grouped by scope (a stable counting sort, so clusters come in order of first
 * appearance), then every edge in tape order. Nothing depends on pointer values or on hash
 * order, so the same graph gives the same bytes; everything is linear in the tape's size.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <tapegrad/dot.h>

#include "dot-escape.h"
#include "dot-fold.h"
#include "internal.h"
#include "ops/ops.h"

/* ---- text ---------------------------------------------------------------------------- */

static bool
dotbuf_reserve(struct tg__dotbuf *b, size_t extra)
{
    if (b->failed)
        return false;
    if (extra > SIZE_MAX / 2 - b->len) {
        b->failed = true;
        return false;
    }
    size_t need = b->len + extra + 1; /* + the NUL that keeps p a C string */
    if (need <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    char *p = tg__realloc(b->p, cap);
    if (!p) {
        b->failed = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

void
tg__dotbuf_free(struct tg__dotbuf *b)
{
    tg__free(b->p);
    memset(b, 0, sizeof *b);
}

void
tg__dotbuf_append(struct tg__dotbuf *b, const char *s, size_t n)
{
    if (!dotbuf_reserve(b, n))
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void
tg__dotbuf_puts(struct tg__dotbuf *b, const char *s)
{
    tg__dotbuf_append(b, s, strlen(s));
}

void
tg__dotbuf_printf(struct tg__dotbuf *b, const char *fmt, ...)
{
    /* Only our own formats with numbers and short fixed strings come through here. */
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0)
        tg__dotbuf_append(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* Length of the well-formed UTF-8 sequence at s (n bytes available) and its code point, or 0
 * when there is none: overlong forms, surrogates and values above U+10FFFF are ill-formed
 * (RFC 3629, Unicode table 3-7), as is a sequence cut short. */
static size_t
utf8_sequence(const unsigned char *s, size_t n, uint32_t *cp)
{
    unsigned char c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t len;
    uint32_t v, min;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2, v = c & 0x1f, min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3, v = c & 0x0f, min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4, v = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        v = (v << 6) | (s[i] & 0x3f);
    }
    if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
        return 0;
    *cp = v;
    return len;
}

void
tg__dot_escstring(struct tg__dotbuf *b, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t shown = 0; /* bytes the reader will see, for the cap */
    for (size_t i = 0; i < n;) {
        uint32_t cp = 0;
        size_t len = utf8_sequence(u + i, n - i, &cp);
        char tmp[16];
        const char *esc;
        size_t esc_len, width;
        if (len == 0) {
            esc = "\xef\xbf\xbd"; /* U+FFFD for a byte that starts no valid sequence */
            esc_len = width = 3;
            len = 1;
        } else if (cp == '\\') {
            esc = "\\\\"; /* else "\N", "\G", "\l" would be substituted and a trailing
                           * backslash would escape the closing quote */
            esc_len = 2;
            width = 1;
        } else if (cp == '\n') {
            esc = "\\n";
            esc_len = 2;
            width = 1;
        } else if (cp == '\r') {
            i += len; /* a CR means nothing in a label; CRLF names then read as LF */
            continue;
        } else if (cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp <= 0x9f)) {
            /* Visible instead of invisible: "\x1b" (C0, DEL) or "\u0085" (C1). */
            int w = cp < 0x80 ? snprintf(tmp, sizeof tmp, "\\\\x%02x", (unsigned)cp)
                                            : snprintf(tmp, sizeof tmp, "\\\\u%04x", (unsigned)cp);
            esc = tmp;
            esc_len = (size_t)w;
            width = esc_len - 1;
        } else {
            esc = s + i;
            esc_len = width = len;
        }
        if (shown + width > TG_DOT_TEXT_MAX) {
            tg__dotbuf_puts(b, "\xe2\x80\xa6"); /* … */
            return;
        }
        tg__dotbuf_append(b, esc, esc_len);
        shown += width;
        i += len;
    }
}

void
tg__dot_quote(struct tg__dotbuf *b, const char *esc, size_t n)
{
    tg__dotbuf_append(b, "\"", 1);
    if (!esc)
        esc = ""; /* an empty escString has no buffer yet; NULL + 0 is undefined */
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        if (esc[i] == '"') {
            tg__dotbuf_append(b, esc + start, i - start);
            tg__dotbuf_append(b, "\\\"", 2);
            start = i + 1;
        }
    }
    tg__dotbuf_append(b, esc + start, n - start);
    tg__dotbuf_append(b, "\"", 1);
}

/* ---- a map from pointers to numbers (tensor -> DOT node, tensor -> display name) ------- */

struct ptrmap {
    const void **keys;
    size_t *vals;
    size_t cap, count; /* cap is a power of two, or 0 */
};

static size_t
ptr_hash(const void *p, size_t cap)
{
    /* Fibonacci hashing; the low bits of heap pointers are alignment zeros. Only lookups use
     * it: nothing in the output depends on where a key landed. */
    uint64_t h = ((uint64_t)(uintptr_t)p >> 4) * UINT64_C(0x9e3779b97f4a7c15);
    return (size_t)(h >> 32) & (cap - 1);
}

static bool
ptrmap_grow(struct ptrmap *m)
{
    size_t cap = m->cap ? m->cap * 2 : 64;
    const void **keys = tg__calloc(cap, sizeof *keys);
    size_t *vals = tg__malloc(cap * sizeof *vals);
    if (!keys || !vals) {
        tg__free(keys);
        tg__free(vals);
        return false;
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->keys[i])
            continue;
        size_t j = ptr_hash(m->keys[i], cap);
        while (keys[j])
            j = (j + 1) & (cap - 1);
        keys[j] = m->keys[i];
        vals[j] = m->vals[i];
    }
    tg__free(m->keys);
    tg__free(m->vals);
    m->keys = keys;
    m->vals = vals;
    m->cap = cap;
    return true;
}

/* The value stored for key, or SIZE_MAX when absent. */
static size_t
ptrmap_get(const struct ptrmap *m, const void *key)
{
    if (!m->cap)
        return SIZE_MAX;
    for (size_t j = ptr_hash(key, m->cap);; j = (j + 1) & (m->cap - 1)) {
        if (!m->keys[j])
            return SIZE_MAX;
        if (m->keys[j] == key)
            return m->vals[j];
    }
}

/* Stores key -> val unless key is already there (the first value wins). */
static bool
ptrmap_put(struct ptrmap *m, const void *key, size_t val)
{
    if ((m->count + 1) * 2 > m->cap && !ptrmap_grow(m))
        return false;
    size_t j = ptr_hash(key, m->cap);
    while (m->keys[j]) {
        if (m->keys[j] == key)
            return true;
        j = (j + 1) & (m->cap - 1);
    }
    m->keys[j] = key;
    m->vals[j] = val;
    m->count++;
    return true;
}

static void
ptrmap_free(struct ptrmap *m)
{
    tg__free(m->keys);
    tg__free(m->vals);
}

/* ---- the exporter ------------------------------------------------------------------- */

enum role {
    ROLE_PARAM,
    ROLE_INPUT,
    ROLE_CONSTANT,
    ROLE_VALUE,
    ROLE_LOSS,
};

#define NO_SCOPE SIZE_MAX
#define NO_RUN SIZE_MAX

struct dot_tensor {
    const tg_tensor *x;
    const char *name; /* its own name, or a display name from the options, or NULL */
    size_t scope;
    enum role role;
};

struct scope {
    const char *s; /* points into a tensor's name; not NUL-terminated at len */
    size_t len;
};

/* One DOT node in data-flow order: an op (tape node index) or a tensor (tensors[] index). */
struct element {
    bool is_op;
    size_t index;
};

struct exporter {
    const tg_tape *t;
    const tg_dot_options *o;
    FILE *out;
    char *err;
    size_t errsize;
    tg_status status;

    size_t n_nodes;
    struct dot_tensor *tensors;
    size_t n_tensors;
    size_t *node_in;  /* tensors[] index of each node's inputs, node i's from in_at[i] */
    size_t *in_at;    /* [n_nodes] offset of node i's inputs in node_in */
    size_t *node_out; /* [n_nodes] */
    size_t *node_scope;
    struct element *elems; /* n_nodes + n_tensors of them */
    size_t n_elems;
    struct ptrmap tensor_ids;
    struct ptrmap display_names;

    struct scope *scopes;   /* scope_cap / 2 of them */
    size_t n_scopes;
    size_t *scope_slots; /* open-addressing table of scopes[] indices + 1 (0 = empty) */
    size_t scope_cap;    /* a power of two, or 0 */

    /* Folded loops (tg_dot_options.fold_loops): the runs found, and per node the run whose
     * first step it is in (NO_RUN otherwise) and whether it is drawn; a node of a later step
     * is drawn as the node of the first step it repeats. */
    struct tg__dot_run *runs;
    size_t n_runs;
    size_t *node_run;
    bool *node_hidden;
    size_t *tensor_run; /* the run whose first step makes (or alone reads) tensor i */
    bool *tensor_shown;

    struct tg__dotbuf esc;  /* a label in escString form */
    struct tg__dotbuf line; /* the statement being written */
};

static tg_status
fail(struct exporter *ex, tg_status s, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static tg_status
fail(struct exporter *ex, tg_status s, const char *fmt, ...)
{
    if (ex->status != TG_OK)
        return ex->status; /* the first error is the one worth reading */
    ex->status = s;
    if (ex->err && ex->errsize) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ex->err, ex->errsize, fmt, ap);
        va_end(ap);
    }
    return s;
}

static tg_status
nomem(struct exporter *ex)
{
    return fail(ex, TG_ERR_NOMEM, "dot: out of memory exporting a tape of %zu nodes",
                ex->n_nodes);
}

/* Writes the statement in ex->line and empties it. */
static tg_status
flush_line(struct exporter *ex)
{
    if (ex->line.failed)
        return nomem(ex);
    if (ex->line.len && fwrite(ex->line.p, 1, ex->line.len, ex->out) != ex->line.len) {
        int e = errno;
        return fail(ex, TG_ERR_IO, "dot: writing the graph failed: %s", strerror(e));
    }
    ex->line.len = 0;
    return TG_OK;
}

/* Appends `key="value"` to the line, value taken as escString text. */
static void
put_attr(struct exporter *ex, const char *key, const char *esc, size_t n)
{
    tg__dotbuf_puts(&ex->line, key);
    tg__dotbuf_puts(&ex->line, "=");
    tg__dot_quote(&ex->line, esc, n);
}

static size_t
scope_hash(const char *s, size_t len)
{
    uint64_t h = UINT64_C(0xcbf29ce484222325); /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)s[i]) * UINT64_C(0x100000001b3);
    return (size_t)h;
}

/* Doubles the scope table (kept at most half full) and the list it indexes. */
static bool
grow_scopes(struct exporter *ex)
{
    size_t cap = ex->scope_cap ? ex->scope_cap * 2 : 16;
    size_t *slots = tg__calloc(cap, sizeof *slots);
    struct scope *scopes = tg__realloc(ex->scopes, cap / 2 * sizeof *scopes);
    if (!slots || !scopes) {
        tg__free(slots);
        if (scopes)
            ex->scopes = scopes;
        return false;
    }
    ex->scopes = scopes;
    for (size_t i = 0; i < ex->n_scopes; i++) {
        size_t j = scope_hash(scopes[i].s, scopes[i].len) & (cap - 1);
        while (slots[j])
            j = (j + 1) & (cap - 1);
        slots[j] = i + 1;
    }
    tg__free(ex->scope_slots);
    ex->scope_slots = slots;
    ex->scope_cap = cap;
    return true;
}

/* The scope of a name (everything before its last '/'; NO_SCOPE when there is none) as an
 * index into ex->scopes, in order of first appearance. false when out of memory. */
static bool
intern_scope(struct exporter *ex, const char *name, size_t *scope)
{
    const char *slash = name ? strrchr(name, '/') : NULL;
    *scope = NO_SCOPE;
    if (!slash || slash == name)
        return true;
    size_t len = (size_t)(slash - name);
    if ((ex->n_scopes + 1) * 2 > ex->scope_cap && !grow_scopes(ex))
        return false;
    size_t j = scope_hash(name, len) & (ex->scope_cap - 1);
    for (; ex->scope_slots[j]; j = (j + 1) & (ex->scope_cap - 1)) {
        const struct scope *sc = &ex->scopes[ex->scope_slots[j] - 1];
        if (sc->len == len && memcmp(sc->s, name, len) == 0) {
            *scope = ex->scope_slots[j] - 1;
            return true;
        }
    }
    ex->scopes[ex->n_scopes] = (struct scope){name, len};
    ex->scope_slots[j] = ++ex->n_scopes;
    *scope = ex->n_scopes - 1;
    return true;
}

static enum role
leaf_role(const tg_tensor *x, const char *name)
{
    if (x->kind == TG__KIND_PARAM)
        return ROLE_PARAM;
    return name || x->requires_grad ? ROLE_INPUT : ROLE_CONSTANT;
}

/* The tensors[] index of x, numbering it (and listing it for output) on first sight. */
static size_t
tensor_id(struct exporter *ex, const tg_tensor *x)
{
    size_t id = ptrmap_get(&ex->tensor_ids, x);
    if (id != SIZE_MAX)
        return id;
    id = ex->n_tensors;
    if (!ptrmap_put(&ex->tensor_ids, x, id)) {
        nomem(ex);
        return SIZE_MAX;
    }
    size_t dn = ptrmap_get(&ex->display_names, x);
    const char *name = x->name ? x->name : dn != SIZE_MAX ? ex->o->names[dn].name : NULL;
    size_t scope;
    if (!intern_scope(ex, name, &scope)) {
        nomem(ex);
        return SIZE_MAX;
    }
    ex->tensors[ex->n_tensors++] = (struct dot_tensor){
        .x = x,
        .name = name,
        .scope = scope,
        .role = x->node ? ROLE_VALUE : leaf_role(x, name),
    };
    ex->elems[ex->n_elems++] = (struct element){false, id};
    return id;
}

/* An op's scope: the one its parameters agree on; failing that, the one its named inputs
 * agree on; failing that (an activation after a layer's add), the one of the values it
 * continues. Disagreement at the deciding level means no scope. The loss stays outside, as
 * it belongs to the whole network. */
static size_t
op_scope(const struct exporter *ex, size_t node, bool is_loss)
{
    for (int level = 0; level < 3; level++) {
        size_t scope = NO_SCOPE;
        bool seen = false, agree = true;
        const tg_node *n = ex->t->nodes[node];
        for (int k = 0; k < n->n_in; k++) {
            const struct dot_tensor *dt = &ex->tensors[ex->node_in[ex->in_at[node] + (size_t)k]];
            bool counts = level == 0   ? dt->role == ROLE_PARAM
                          : level == 1 ? (dt->role == ROLE_INPUT || dt->role == ROLE_CONSTANT)
                                       : !is_loss && dt->role == ROLE_VALUE;
            if (!counts || dt->scope == NO_SCOPE)
                continue;
            if (seen && dt->scope != scope)
                agree = false;
            scope = dt->scope;
            seen = true;
        }
        if (seen)
            return agree ? scope : NO_SCOPE;
    }
    return NO_SCOPE;
}

static tg_status
collect(struct exporter *ex)
{
    const tg_tape *t = ex->t;
    size_t n = ex->n_nodes, bound = n; /* tensors: at most one output and the inputs per node */
    for (size_t i = 0; i < n; i++)
        bound += (size_t)t->nodes[i]->n_in;

    ex->tensors = tg__malloc(bound * sizeof *ex->tensors);
    ex->node_in = tg__malloc((bound - n + 1) * sizeof *ex->node_in);
    ex->in_at = tg__malloc(n * sizeof *ex->in_at);
    ex->node_out = tg__malloc(n * sizeof *ex->node_out);
    ex->node_scope = tg__malloc(n * sizeof *ex->node_scope);
    ex->elems = tg__malloc((n + bound) * sizeof *ex->elems);
    if (!ex->tensors || !ex->node_in || !ex->in_at || !ex->node_out || !ex->node_scope || !ex->elems)
        return nomem(ex);
    for (size_t i = 0, at = 0; i < n; at += (size_t)t->nodes[i]->n_in, i++)
        ex->in_at[i] = at;

    for (size_t i = 0; i < ex->o->n_names; i++) {
        const tg_dot_name *dn = &ex->o->names[i];
        if (dn->tensor && dn->name &&
            !ptrmap_put(&ex->display_names, tg__tensor(dn->tensor), i))
            return nomem(ex);
    }

    const tg_tensor *loss = tg__tensor(ex->o->loss); /* a handle: see tg__handle */
    if (!loss && t->nodes[n - 1]->out->size == 1)
        loss = t->nodes[n - 1]->out;

    for (size_t i = 0; i < n; i++) {
        const tg_node *nd = t->nodes[i];
        for (int k = 0; k < nd->n_in; k++) {
            size_t id = tensor_id(ex, nd->in[k]);
            if (id == SIZE_MAX)
                return ex->status;
            ex->node_in[ex->in_at[i] + (size_t)k] = id;
        }
        bool is_loss = nd->out == loss;
        ex->node_scope[i] = op_scope(ex, i, is_loss);
        ex->elems[ex->n_elems++] = (struct element){true, i};
        size_t out = tensor_id(ex, nd->out);
        if (out == SIZE_MAX)
            return ex->status;
        ex->node_out[i] = out;
        struct dot_tensor *dt = &ex->tensors[out];
        if (dt->scope == NO_SCOPE && !is_loss)
            dt->scope = ex->node_scope[i]; /* an unnamed value sits with the op making it */
    }
    size_t id = loss ? ptrmap_get(&ex->tensor_ids, loss) : SIZE_MAX;
    if (id != SIZE_MAX)
        ex->tensors[id].role = ROLE_LOSS;
    return TG_OK;
}

/* ---- folded loops (tg_dot_options.fold_loops; the search is in dot-fold.c) ---- */

/* The longest period tried when folding loops: a step of up to this many nodes (a
 * transformer block is about 30, an LSTM step with its loss under 10). */
#define FOLD_MAX_PERIOD 1024

/* The run holding folded node i: the last one starting at or before it (runs are in tape
 * order). */
static const struct tg__dot_run *
run_of(const struct exporter *ex, size_t i)
{
    const struct tg__dot_run *r = &ex->runs[0];
    for (size_t lo = 0, hi = ex->n_runs; lo < hi;) {
        size_t mid = lo + (hi - lo) / 2;
        if (ex->runs[mid].start <= i)
            r = &ex->runs[mid], lo = mid + 1;
        else
            hi = mid;
    }
    return r;
}

/* The node whose picture stands for node i: itself, or the node of its run's first step that
 * it repeats. */
static size_t
shown_node(const struct exporter *ex, size_t i)
{
    if (!ex->node_hidden || !ex->node_hidden[i])
        return i;
    const struct tg__dot_run *r = run_of(ex, i);
    return r->start + (i - r->start) % r->period;
}

/* The step of its run that folded node i is in, counting from 1. */
static size_t
step_of(const struct exporter *ex, size_t i)
{
    const struct tg__dot_run *r = run_of(ex, i);
    return (i - r->start) / r->period + 1;
}

/* The tensors[] index drawn for tensor id: itself, or the output of the first step that it
 * repeats. */
static size_t
shown_tensor(const struct exporter *ex, size_t id)
{
    const tg_tensor *x = ex->tensors[id].x;
    if (!ex->node_hidden || !x->node || !ex->node_hidden[x->node->index])
        return id;
    return ex->node_out[shown_node(ex, x->node->index)];
}

/* Whether a checker's verdict on node i is a failure (the rule of emit_op). */
static bool
check_failed(const struct exporter *ex, size_t i)
{
    const tg_dot_check *c = ex->o->check;
    if (!c || i >= c->count)
        return false;
    if (c->failed)
        return c->failed[i];
    return !isnan(c->errors[i]) && !(c->errors[i] <= c->tolerance);
}

/* Finds the repeated steps and decides what is drawn: each run's first step, in a cluster of
 * its own with its outputs and its per-step data; the steps after it are not drawn, and what
 * reads their outputs reads the first step's instead. */
static tg_status
fold(struct exporter *ex)
{
    size_t n = ex->n_nodes, min_repeats = ex->o->fold_min_repeats ? ex->o->fold_min_repeats : 3;
    ex->runs = tg__malloc((n / min_repeats + 1) * sizeof *ex->runs);
    ex->node_run = tg__malloc(n * sizeof *ex->node_run);
    ex->node_hidden = tg__calloc(n, sizeof *ex->node_hidden);
    ex->tensor_run = tg__malloc(ex->n_tensors * sizeof *ex->tensor_run);
    ex->tensor_shown = tg__calloc(ex->n_tensors, sizeof *ex->tensor_shown);
    if (!ex->runs || !ex->node_run || !ex->node_hidden || !ex->tensor_run || !ex->tensor_shown)
        return nomem(ex);
    ex->n_runs = tg__dot_find_runs(ex->t, min_repeats, FOLD_MAX_PERIOD, ex->runs);
    for (size_t i = 0; i < n; i++)
        ex->node_run[i] = NO_RUN;
    for (size_t i = 0; i < ex->n_tensors; i++)
        ex->tensor_run[i] = NO_RUN;
    for (size_t r = 0; r < ex->n_runs; r++) {
        const struct tg__dot_run *run = &ex->runs[r];
        for (size_t j = run->start; j < run->start + run->period; j++) {
            ex->node_run[j] = r;
            ex->tensor_run[ex->node_out[j]] = r;
            /* a leaf that the next step replaces by another leaf is per-step data */
            const tg_node *a = ex->t->nodes[j], *b = ex->t->nodes[j + run->period];
            for (int k = 0; k < a->n_in; k++)
                if (!a->in[k]->node && !b->in[k]->node && a->in[k] != b->in[k])
                    ex->tensor_run[ex->node_in[ex->in_at[j] + (size_t)k]] = r;
        }
        for (size_t j = run->start + run->period; j < run->start + run->period * run->count; j++)
            ex->node_hidden[j] = true;
    }
    for (size_t i = 0; i < n; i++) {
        if (ex->node_hidden[i])
            continue;
        for (int k = 0; k < ex->t->nodes[i]->n_in; k++)
            ex->tensor_shown[shown_tensor(ex, ex->node_in[ex->in_at[i] + (size_t)k])] = true;
        ex->tensor_shown[ex->node_out[i]] = true;
    }
    return TG_OK;
}

/* The cluster of a run: "× count" and what it folds, and the failed checks it hides. */
static tg_status
emit_run_header(struct exporter *ex, size_t r, size_t cluster)
{
    const struct tg__dot_run *run = &ex->runs[r];
    size_t end = run->start + run->period * run->count, failed = 0, first_failed = 0;
    for (size_t j = run->start + run->period; j < end; j++)
        if (check_failed(ex, j) && !failed++)
            first_failed = j;
    ex->esc.len = 0;
    tg__dotbuf_printf(&ex->esc, "\xc3\x97 %zu steps of %zu node%s, #%zu\xe2\x80\x93#%zu "
                                "(the first drawn)",
                      run->count, run->period, run->period > 1 ? "s" : "", run->start,
                      end - 1); /* × count ... #a–#b */
    if (failed)
        tg__dotbuf_printf(&ex->esc, "\\nCHECK FAILED in %zu folded node%s (first #%zu)", failed,
                          failed > 1 ? "s" : "", first_failed);
    if (ex->esc.failed)
        return nomem(ex);
    tg__dotbuf_printf(&ex->line, "\tsubgraph \"cluster_%zu\" {\n\t\tgraph [", cluster);
    put_attr(ex, "label", ex->esc.p, ex->esc.len);
    tg__dotbuf_printf(&ex->line, ", style=\"rounded,bold\", color=\"%s\", fontcolor=\"%s\"];\n",
                      failed ? "#b00000" : "#1f5fa8", failed ? "#b00000" : "#1f5fa8");
    return flush_line(ex);
}

/* The dashed edges of each run's recurrence: the next step reads these outputs of the first
 * one where the first step read something else. */
static tg_status
emit_run_edges(struct exporter *ex)
{
    for (size_t r = 0; r < ex->n_runs && ex->status == TG_OK; r++) {
        const struct tg__dot_run *run = &ex->runs[r];
        for (size_t j = run->start; j < run->start + run->period; j++) {
            const tg_node *a = ex->t->nodes[j], *b = ex->t->nodes[j + run->period];
            for (int k = 0; k < b->n_in; k++) {
                const tg_tensor *x = b->in[k];
                if (x == a->in[k] || !x->node || x->node->index < run->start ||
                    x->node->index >= run->start + run->period)
                    continue;
                tg__dotbuf_printf(&ex->line, "\t\"t%zu\" -> \"n%zu\" [label=\"", ex->node_out[x->node->index], j);
                if (b->n_in > 1)
                    tg__dotbuf_printf(&ex->line, "%d: ", k);
                tg__dotbuf_puts(&ex->line, "next step\", style=\"dashed\", color=\"#1f5fa8\", "
                                           "constraint=\"false\"];\n");
            }
            if (flush_line(ex) != TG_OK)
                return ex->status;
        }
    }
    return ex->status;
}

/* ---- labels (escString text in ex->esc) ---- */

static void
esc_text(struct exporter *ex, const char *s)
{
    tg__dot_escstring(&ex->esc, s, strlen(s));
}

static void
append_values(struct tg__dotbuf *b, const tg_tensor *x)
{
    if (x->size == 0 || !x->data) {
        tg__dotbuf_puts(b, "\\nempty");
        return;
    }
    double lo = INFINITY, hi = -INFINITY, sum = 0, first = 0;
    size_t n_nan = 0, n_inf = 0, n_fin = 0;
    TG__DISPATCH(x->dtype, T, {
        const T *v = x->data;
        first = (double)v[0];
        for (size_t i = 0; i < x->size; i++) {
            double d = (double)v[i];
            if (isnan(d)) {
                n_nan++;
            } else if (isinf(d)) {
                n_inf++;
            } else {
                lo = d < lo ? d : lo;
                hi = d > hi ? d : hi;
                sum += d;
                n_fin++;
            }
        }
    });
    if (x->size == 1) {
        tg__dotbuf_printf(b, "\\n= %.4g", first);
        return;
    }
    if (n_fin)
        tg__dotbuf_printf(b, "\\nmin %.4g max %.4g mean %.4g", lo, hi, sum / (double)n_fin);
    if (n_nan || n_inf)
        tg__dotbuf_printf(b, "\\nNaN %zu Inf %zu", n_nan, n_inf);
}

static void
append_grad_norm(struct tg__dotbuf *b, const tg_tensor *x)
{
    if (!x->grad)
        return;
    double ss = 0;
    TG__DISPATCH(x->dtype, T, {
        const T *g = x->grad;
        for (size_t i = 0; i < x->size; i++)
            ss += (double)g[i] * (double)g[i];
    });
    tg__dotbuf_printf(b, "\\n|grad| %.4g", sqrt(ss));
}

static const char *const role_word[] = {
    [ROLE_PARAM] = "parameter",
    [ROLE_INPUT] = "input",
    [ROLE_CONSTANT] = "constant",
    [ROLE_VALUE] = "",
    [ROLE_LOSS] = "loss",
};

/* Fixed styles: attribute values come only from here, never from the user. */
static const char *const role_style[] = {
    [ROLE_PARAM] = "shape=\"box\", style=\"filled,bold\", fillcolor=\"#fdd9a8\", "
                   "color=\"#b35900\"",
    [ROLE_INPUT] = "shape=\"parallelogram\", style=\"filled\", fillcolor=\"#cfe2ff\", "
                   "color=\"#1f4e99\"",
    [ROLE_CONSTANT] = "shape=\"box\", style=\"filled,dashed\", fillcolor=\"#eeeeee\", "
                      "color=\"#777777\"",
    [ROLE_VALUE] = "shape=\"box\", style=\"rounded\", color=\"#888888\", fontsize=\"9\"",
    [ROLE_LOSS] = "shape=\"doubleoctagon\", style=\"filled,bold\", fillcolor=\"#ffe066\", "
                  "color=\"#8a6d00\"",
};

static tg_status
emit_tensor(struct exporter *ex, size_t id)
{
    const struct dot_tensor *dt = &ex->tensors[id];
    const tg_tensor *x = dt->x;
    ex->esc.len = 0;
    if (dt->name) {
        esc_text(ex, dt->name);
        tg__dotbuf_puts(&ex->esc, "\\n");
    }
    const char *word = role_word[dt->role];
    if (!dt->name && dt->role != ROLE_VALUE) {
        tg__dotbuf_puts(&ex->esc, word); /* unnamed: the role is the title */
        tg__dotbuf_puts(&ex->esc, "\\n");
        word = "";
    }
    tg__dotbuf_printf(&ex->esc, "%s%s%s %s", word, *word ? " " : "", tg__shape_text(x).s,
                      tg_dtype_name(x->dtype));
    if (ex->o->values)
        append_values(&ex->esc, x);
    if (ex->o->grads)
        append_grad_norm(&ex->esc, x);
    if (ex->esc.failed)
        return nomem(ex);

    tg__dotbuf_printf(&ex->line, "\t\"t%zu\" [", id);
    put_attr(ex, "label", ex->esc.p, ex->esc.len);
    tg__dotbuf_puts(&ex->line, ", ");
    tg__dotbuf_puts(&ex->line, role_style[dt->role]);
    tg__dotbuf_puts(&ex->line, "];\n");
    return flush_line(ex);
}

/* Attributes of built-in ops worth seeing in the picture. */
static void
append_op_attrs(struct tg__dotbuf *b, const tg_node *n)
{
    const tg_op *op = n->op;
    if (op == &tg__op_matmul && (n->attr->trans_a || n->attr->trans_b))
        tg__dotbuf_printf(b, "\\nA%s \xc2\xb7 B%s", n->attr->trans_a ? "\xe1\xb5\x80" : "",
                          n->attr->trans_b ? "\xe1\xb5\x80" : ""); /* A· Bᵀ */
    else if (op == &tg__op_scale)
        tg__dotbuf_printf(b, "\\n\xc3\x97 %.4g", n->attr->scale); /* × c */
    else if (op == &tg__op_leaky_relu)
        tg__dotbuf_printf(b, "\\n\xce\xb1 = %.4g", n->attr->scale); /* α = */
    else if ((op == &tg__op_sum || op == &tg__op_mean || op == &tg__op_max ||
              op == &tg__op_min || op == &tg__op_var) &&
             n->attr->axes != (1u << n->in[0]->ndim) - 1) {
        /* the reduced axes when not all of them: "axis 1", "axes 0, 2" */
        int count = 0;
        for (int i = 0; i < n->in[0]->ndim; i++)
            count += n->attr->axes >> i & 1;
        tg__dotbuf_printf(b, "\\naxis%s", count > 1 ? "es" : "");
        for (int i = 0, k = 0; i < n->in[0]->ndim; i++)
            if (n->attr->axes >> i & 1)
                tg__dotbuf_printf(b, "%s %d", k++ ? "," : "", i);
    }
    else if (op == &tg__op_mse_half)
        tg__dotbuf_printf(b, "\\nbatch axis %d", n->attr->axis);
    else if (op == &tg__op_softmax_xent || op == &tg__op_nll_loss)
        tg__dotbuf_printf(b, "\\nclass axis %d", n->attr->axis);
    else if (op == &tg__op_cross_entropy)
        tg__dotbuf_printf(b, "\\nclass axis %d%s%s", n->attr->axis,
                          n->attr->weights ? ", weighted" : "",
                          n->attr->scale2 > 0 ? ", smoothed" : "");
    else if (op == &tg__op_bias_act) /* a fused node names its parts: + b, then g */
        tg__dotbuf_printf(b, "\\n+ b, %s", tg_activation_name((tg_activation)n->attr->axis));
    else if (op == &tg__op_batch_norm && n->attr->axis) /* and a fused activation after it */
        tg__dotbuf_printf(b, "\\nthen %s", tg_activation_name((tg_activation)n->attr->axis));
    else if (op == &tg__op_bmm && (n->attr->trans_a || n->attr->trans_b))
        tg__dotbuf_printf(b, "\\nA%s \xc2\xb7 B%s", n->attr->trans_a ? "\xe1\xb5\x80" : "",
                          n->attr->trans_b ? "\xe1\xb5\x80" : "");
    else if (op == &tg__op_pow)
        tg__dotbuf_printf(b, "\\np = %.4g", n->attr->scale);
    else if (op == &tg__op_elu)
        tg__dotbuf_printf(b, "\\n\xce\xb1 = %.4g", n->attr->scale);
    else if (op == &tg__op_clamp)
        tg__dotbuf_printf(b, "\\n[%.4g, %.4g]", n->attr->scale, n->attr->scale2);
    else if (op == &tg__op_huber || op == &tg__op_smooth_l1)
        tg__dotbuf_printf(b, "\\n%s = %.4g", op == &tg__op_huber ? "\xce\xb4" : "\xce\xb2",
                          n->attr->scale);
    else if (op == &tg__op_softmax || op == &tg__op_log_softmax || op == &tg__op_concat ||
             op == &tg__op_stack || op == &tg__op_index_select || op == &tg__op_gather)
        tg__dotbuf_printf(b, "\\naxis %d", n->attr->axis);
    else if (op == &tg__op_logsumexp && n->attr->axes != (1u << n->in[0]->ndim) - 1)
        for (int i = 0, k = 0; i < n->in[0]->ndim; i++)
            if (n->attr->axes >> i & 1)
                tg__dotbuf_printf(b, "%s %d", k++ ? "," : "\\naxes", i);
}

static bool
is_builtin(const tg_op *op)
{
    for (size_t i = 0; i < TG_OP_COUNT; i++)
        if (tg__builtin_ops[i] == op)
            return true;
    return false;
}

/* Fill and border of op nodes; attribute values come only from here. */
struct op_look {
    const char *fill, *border;
};
static const struct op_look op_plain = {"#e8e0f5", "#5b3f8c"};
static const struct op_look op_pass = {"#c6efce", "#2e7d32"};
static const struct op_look op_near = {"#fff2a8", "#9a7d00"};
static const struct op_look op_fail = {"#ff5c5c", "#b00000"};

static tg_status
emit_op(struct exporter *ex, size_t i)
{
    const tg_node *n = ex->t->nodes[i];
    bool custom = !is_builtin(n->op);
    struct op_look look = op_plain;
    ex->esc.len = 0;
    esc_text(ex, n->op->name ? n->op->name : "(unnamed op)");
    tg__dotbuf_printf(&ex->esc, "\\n#%zu%s", i, custom ? " custom" : "");
    append_op_attrs(&ex->esc, n);

    const tg_dot_check *c = ex->o->check;
    bool have_error = c && i < c->count && !isnan(c->errors[i]);
    bool decided = c && c->failed && i < c->count; /* the checker's own verdict */
    if (have_error || (decided && c->failed[i])) {
        double e = have_error ? c->errors[i] : NAN;
        bool fails = decided ? c->failed[i] : !(e <= c->tolerance);
        if (fails) {
            look = op_fail;
            tg__dotbuf_puts(&ex->esc, "\\nCHECK FAILED");
            if (have_error && decided)
                tg__dotbuf_printf(&ex->esc, "\\nerror %.2e", e);
            else if (have_error)
                tg__dotbuf_printf(&ex->esc, "\\nerror %.2e > tol %.1e", e, c->tolerance);
        } else if (decided || e <= c->tolerance / 100) {
            /* Three grades so that a near miss stands out before it fails: well inside the
             * tolerance (two orders of magnitude) is green, inside is yellow, beyond is red.
             * A checker's own "pass" is green. */
            look = op_pass;
            tg__dotbuf_printf(&ex->esc, "\\ncheck ok %.1e", e);
        } else {
            look = op_near;
            tg__dotbuf_printf(&ex->esc, "\\ncheck ok %.1e (near tol %.1e)", e, c->tolerance);
        }
    }
    if (c && c->notes && i < c->count && c->notes[i]) {
        tg__dotbuf_puts(&ex->esc, "\\n");
        esc_text(ex, c->notes[i]);
    }
    if (ex->esc.failed)
        return nomem(ex);

    bool failed = look.fill == op_fail.fill;
    tg__dotbuf_printf(&ex->line, "\t\"n%zu\" [", i);
    put_attr(ex, "label", ex->esc.p, ex->esc.len);
    /* Custom ops get a dashed border; a failed check a thick one, which wins. */
    tg__dotbuf_printf(&ex->line,
                      ", shape=\"ellipse\", style=\"filled%s\", fillcolor=\"%s\", "
                      "color=\"%s\"%s];\n",
                      failed ? ",bold" : custom ? ",dashed" : "", look.fill, look.border,
                      failed ? ", penwidth=\"3\"" : "");
    return flush_line(ex);
}

static tg_status
emit_element(struct exporter *ex, const struct element *e)
{
    return e->is_op ? emit_op(ex, e->index) : emit_tensor(ex, e->index);
}

/* Whether element e is drawn (false: a node or value of a folded step after the first). */
static bool
element_shown(const struct exporter *ex, const struct element *e)
{
    if (!ex->node_hidden)
        return true;
    return e->is_op ? !ex->node_hidden[e->index] : ex->tensor_shown[e->index];
}

/* The cluster element e is drawn in: its run's (after the scopes), its scope's (unless flat),
 * or NO_SCOPE. */
static size_t
element_cluster(const struct exporter *ex, const struct element *e)
{
    size_t run = !ex->node_run ? NO_RUN
                 : e->is_op    ? ex->node_run[e->index]
                               : ex->tensor_run[e->index];
    if (run != NO_RUN)
        return (ex->o->flat ? 0 : ex->n_scopes) + run;
    return ex->o->flat ? NO_SCOPE : e->is_op ? ex->node_scope[e->index] : ex->tensors[e->index].scope;
}

static tg_status
emit_header(struct exporter *ex)
{
    static const char *const rankdir[] = {
        [TG_DOT_LEFT_RIGHT] = "LR",
        [TG_DOT_TOP_BOTTOM] = "TB",
        [TG_DOT_BOTTOM_TOP] = "BT",
        [TG_DOT_RIGHT_LEFT] = "RL",
    };
    tg__dotbuf_printf(&ex->line,
                      "digraph tapegrad {\n"
                      "\tgraph [rankdir=\"%s\", fontname=\"Helvetica\", fontsize=\"12\", "
                      "labelloc=\"t\"];\n"
                      "\tnode [fontname=\"Helvetica\", fontsize=\"10\"];\n"
                      "\tedge [fontname=\"Helvetica\", fontsize=\"8\", color=\"#666666\", "
                      "fontcolor=\"#444444\"];\n",
                      rankdir[ex->o->rankdir]);
    const char *error = tg_tape_error(ex->t);
    if (ex->o->title || error) {
        ex->esc.len = 0;
        if (ex->o->title)
            esc_text(ex, ex->o->title);
        if (ex->o->title && error)
            tg__dotbuf_puts(&ex->esc, "\\n");
        if (error) {
            tg__dotbuf_puts(&ex->esc, "tape error: ");
            esc_text(ex, error);
        }
        if (ex->esc.failed)
            return nomem(ex);
        tg__dotbuf_puts(&ex->line, "\tgraph [");
        put_attr(ex, "label", ex->esc.p, ex->esc.len);
        tg__dotbuf_puts(&ex->line, error ? ", fontcolor=\"#b00000\"];\n" : "];\n");
    }
    return flush_line(ex);
}

/* The edges into and out of node i. Inputs that a fold draws as the same value (a node after
 * the loop reading every step's output) are one edge, "a-b: shape". */
static tg_status
emit_node_edges(struct exporter *ex, size_t i)
{
    const tg_node *n = ex->t->nodes[i];
    for (int k = 0; k < n->n_in;) {
        size_t raw = ex->node_in[ex->in_at[i] + (size_t)k], id = shown_tensor(ex, raw);
        int last = k;
        while (id != raw && last + 1 < n->n_in) {
            size_t next = ex->node_in[ex->in_at[i] + (size_t)last + 1];
            if (next == ex->node_in[ex->in_at[i] + (size_t)last] || shown_tensor(ex, next) != id ||
                !tg__dot_same_shape(n->in[last + 1], n->in[k]))
                break;
            last++;
        }
        tg__dotbuf_printf(&ex->line, "\t\"t%zu\" -> \"n%zu\" [label=\"", id, i);
        if (last > k)
            tg__dotbuf_printf(&ex->line, "%d\xe2\x80\x93%d: ", k, last); /* a–b */
        else if (n->n_in > 1)
            tg__dotbuf_printf(&ex->line, "%d: ", k);
        tg__dotbuf_puts(&ex->line, tg__shape_text(n->in[k]).s);
        if (id != raw) { /* from a step not drawn: say which (counting from 1) */
            size_t first = step_of(ex, ex->tensors[raw].x->node->index);
            if (last > k)
                tg__dotbuf_printf(&ex->line, ", steps %zu\xe2\x80\x93%zu", first,
                                  step_of(ex, n->in[last]->node->index)); /* steps a–b */
            else
                tg__dotbuf_printf(&ex->line, ", step %zu", first);
        }
        tg__dotbuf_puts(&ex->line, "\"];\n");
        k = last + 1;
    }
    tg__dotbuf_printf(&ex->line, "\t\"n%zu\" -> \"t%zu\" [label=\"%s\"];\n", i,
                      ex->node_out[i], tg__shape_text(n->out).s);
    return flush_line(ex);
}

static tg_status
emit_edges(struct exporter *ex)
{
    for (size_t i = 0; i < ex->n_nodes; i++)
        if (!(ex->node_hidden && ex->node_hidden[i]) && emit_node_edges(ex, i) != TG_OK)
            return ex->status;
    return emit_run_edges(ex);
}

/* Nodes grouped by cluster: the scopes' in order of first appearance, then the folded
 * runs', each listing its nodes in data-flow order, then the nodes of no cluster. */
static tg_status
emit_nodes(struct exporter *ex)
{
    size_t n_scope_clusters = ex->o->flat ? 0 : ex->n_scopes;
    size_t ns = n_scope_clusters + ex->n_runs; /* clusters */
    if (ns == 0) {
        for (size_t i = 0; i < ex->n_elems; i++)
            if (element_shown(ex, &ex->elems[i]) && emit_element(ex, &ex->elems[i]) != TG_OK)
                return ex->status;
        return TG_OK;
    }
    /* Stable counting sort by cluster; "no cluster" sorts last. */
    size_t *start = tg__calloc(ns + 2, sizeof *start);
    size_t *order = tg__malloc(ex->n_elems * sizeof *order);
    if (!start || !order) {
        tg__free(start);
        tg__free(order);
        return nomem(ex);
    }
    for (size_t i = 0; i < ex->n_elems; i++) {
        size_t s = element_cluster(ex, &ex->elems[i]);
        start[(s == NO_SCOPE ? ns : s) + 1]++;
    }
    for (size_t s = 0; s <= ns; s++)
        start[s + 1] += start[s];
    for (size_t i = 0; i < ex->n_elems; i++) {
        size_t s = element_cluster(ex, &ex->elems[i]);
        order[start[s == NO_SCOPE ? ns : s]++] = i;
    }
    /* start[s] now holds the end of cluster s; cluster s begins where s-1 ended. */
    size_t pos = 0;
    for (size_t s = 0; s <= ns && ex->status == TG_OK; s++) {
        size_t end = start[s];
        if (s < n_scope_clusters) {
            ex->esc.len = 0;
            tg__dot_escstring(&ex->esc, ex->scopes[s].s, ex->scopes[s].len);
            tg__dotbuf_printf(&ex->line, "\tsubgraph \"cluster_%zu\" {\n\t\tgraph [", s);
            put_attr(ex, "label", ex->esc.p ? ex->esc.p : "", ex->esc.len);
            tg__dotbuf_puts(&ex->line, ", style=\"rounded,dashed\", color=\"#999999\", "
                                       "fontcolor=\"#555555\"];\n");
            if (ex->esc.failed)
                nomem(ex);
            else
                flush_line(ex);
        } else if (s < ns) {
            emit_run_header(ex, s - n_scope_clusters, s);
        }
        for (; pos < end && ex->status == TG_OK; pos++) {
            const struct element *e = &ex->elems[order[pos]];
            if (!element_shown(ex, e))
                continue;
            if (s < ns)
                tg__dotbuf_puts(&ex->line, "\t");
            emit_element(ex, e);
        }
        if (s < ns && ex->status == TG_OK) {
            tg__dotbuf_puts(&ex->line, "\t}\n");
            flush_line(ex);
        }
    }
    tg__free(start);
    tg__free(order);
    return ex->status;
}

static tg_status
check_options(struct exporter *ex, const tg_dot_options *o)
{
    if ((unsigned)o->rankdir > TG_DOT_RIGHT_LEFT)
        return fail(ex, TG_ERR_ARG, "dot: rankdir %d is not a tg_dot_rankdir", (int)o->rankdir);
    if (o->fold_min_repeats == 1)
        return fail(ex, TG_ERR_ARG, "dot: fold_min_repeats 1 must be 0 (the default, 3) or >= 2");
    if (o->n_names && !o->names)
        return fail(ex, TG_ERR_ARG, "dot: names is NULL but n_names is %zu", o->n_names);
    if (o->check) {
        if (o->check->count && !o->check->errors)
            return fail(ex, TG_ERR_ARG, "dot: check errors is NULL but count is %zu",
                        o->check->count);
        if (!(o->check->tolerance >= 0))
            return fail(ex, TG_ERR_ARG, "dot: check tolerance %g must be a number >= 0",
                        o->check->tolerance);
    }
    return TG_OK;
}

tg_status
tg_dot_write(const tg_tape *t, const tg_dot_options *opt, FILE *out, char *err, size_t errsize)
{
    static const tg_dot_options defaults;
    struct exporter ex = {.t = t, .o = opt ? opt : &defaults, .out = out, .err = err,
                          .errsize = errsize};
    if (err && errsize)
        err[0] = '\0';
    if (!t || !out)
        return fail(&ex, TG_ERR_ARG, "dot: %s is NULL", !t ? "tape" : "output stream");
    if (check_options(&ex, ex.o) != TG_OK)
        return ex.status;
    ex.n_nodes = t->n_nodes;
    if (ex.n_nodes == 0) {
        tg__dotbuf_puts(&ex.line, "digraph tapegrad {}\n");
    } else if (collect(&ex) == TG_OK && (!ex.o->fold_loops || fold(&ex) == TG_OK) &&
               emit_header(&ex) == TG_OK &&
               emit_nodes(&ex) == TG_OK && emit_edges(&ex) == TG_OK) {
        tg__dotbuf_puts(&ex.line, "}\n");
    }
    if (ex.status == TG_OK && flush_line(&ex) == TG_OK && fflush(out) != 0) {
        int e = errno;
        fail(&ex, TG_ERR_IO, "dot: writing the graph failed: %s", strerror(e));
    }
    tg__free(ex.tensors);
    tg__free(ex.node_in);
    tg__free(ex.in_at);
    tg__free(ex.node_out);
    tg__free(ex.node_scope);
    tg__free(ex.elems);
    tg__free(ex.scopes);
    tg__free(ex.scope_slots);
    tg__free(ex.runs);
    tg__free(ex.node_run);
    tg__free(ex.node_hidden);
    tg__free(ex.tensor_run);
    tg__free(ex.tensor_shown);
    ptrmap_free(&ex.tensor_ids);
    ptrmap_free(&ex.display_names);
    tg__dotbuf_free(&ex.esc);
    tg__dotbuf_free(&ex.line);
    return ex.status;
}

bool
tg__dot_is_regular_file(FILE *f)
{
    struct stat st;
    return fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode);
}

tg_status
tg_dot_write_path(const tg_tape *t, const tg_dot_options *opt, const char *path, char *err,
                  size_t errsize)
{
    if (err && errsize)
        err[0] = '\0';
    if (!path) {
        if (err && errsize)
            snprintf(err, errsize, "dot: path is NULL");
        return TG_ERR_ARG;
    }
    if (!t) {
        if (err && errsize)
            snprintf(err, errsize, "dot: tape is NULL");
        return TG_ERR_ARG;
    }
    FILE *f = fopen(path, "w");
    if (!f) {
        int e = errno;
        if (err && errsize)
            snprintf(err, errsize, "dot: cannot open \"%s\" for writing: %s", path, strerror(e));
        return TG_ERR_IO;
    }
    bool regular = tg__dot_is_regular_file(f);
    tg_status s = tg_dot_write(t, opt, f, err, errsize);
    if (fclose(f) != 0 && s == TG_OK) {
        int e = errno;
        if (err && errsize)
            snprintf(err, errsize, "dot: closing \"%s\" failed: %s", path, strerror(e));
        s = TG_ERR_IO;
    }
    if (s != TG_OK && regular)
        remove(path); /* no half-written graph left behind to be mistaken for a whole one */
    return s;
}
