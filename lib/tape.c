/*
 * The tape: records one node per op in execution order (a topological order), and walks it
 * backwards calling each node's own VJP. Memory for nodes, intermediate tensors, scratch and
 * intermediate gradients comes from the tape's arena; tg_tape_reset() rewinds it.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"
#include "kernels/kernels.h"

/* What a handle resolves to once its header slot holds a newer tensor (tg__tensor): every
 * check rejects it (tg__operand, the accessors of tensor.c), and nothing writes to it. */
tg_tensor tg__stale = {.kind = TG__KIND_STALE, .dtype = TG_F64};
const struct tg__attr tg__no_attr;

tg_tape *
tg_tape_new(void)
{
    tg_tape *t = tg__calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->nil.kind = TG__KIND_NIL;
    t->nil.tape = t;
    t->nil.dtype = TG_F64;
    t->nil.ndim = 0;
    t->arena.budget = &t->budget;
    return t;
}

/* A call that a callback of the tape's own op made (busy_node set): refused, naming the op. */
tg_tensor *
tg__fail_busy(tg_tape *t, const char *what)
{
    const tg_node *n = t->busy_node;
    return tg__fail(t, TG_ERR_ARG,
                    "%s: called from inside %s's %s (node #%zu) on the same tape; an op's "
                    "callbacks must not record on, run backward on, reset or free their own tape",
                    what, n->op->name, t->busy_what, n->index);
}

/* A reset or free while a gradient check holds the tape (tg__tape_hold): refused. */
static void
fail_held(tg_tape *t, const char *what)
{
    if (!t->held_refused)
        t->held_refused = what;
    tg__fail(t, TG_ERR_ARG,
             "%s: refused: %s (a check's function and the callbacks of its ops must record on "
             "the tape they are given, never reset or free a tape the check uses)",
             what, t->held_by);
}

void
tg__tape_hold(tg_tape *t, const char *by)
{
    if (!t->held++)
        t->held_by = by;
}

void
tg__tape_release(tg_tape *t)
{
    if (t->held && !--t->held)
        t->held_by = t->held_refused = NULL;
}

const char *
tg__tape_held_refused(const tg_tape *t)
{
    return t->held_refused;
}

void
tg_tape_reset(tg_tape *t)
{
    if (!t)
        return;
    if (t->busy_node) { /* the caller's record or backward still uses this step's memory */
        tg__fail_busy(t, "tape_reset");
        return;
    }
    if (t->held) {
        fail_held(t, "tape_reset");
        return;
    }
    tg__arena_reset(&t->arena);
    t->n_nodes = 0;
    t->n_tensors = 0;
    t->status = TG_OK;
    t->errmsg[0] = '\0';
    t->budget.refused = 0;
    t->free_grads = NULL; /* its blocks were in the arena just rewound */
    t->gen++;
}

static void
headers_release(tg_tape *t)
{
    struct tg__header_seg *first = t->hdr_cur, *seg = first;
    while (seg) {
        struct tg__header_seg *next = seg->next;
        if (seg->owns)
            tg__free(seg->slots);
        tg__free(seg);
        seg = next == first ? NULL : next;
    }
    t->budget.held -= t->hdr_bytes;
    t->hdr_cur = t->hdr_prev = NULL;
    t->hdr_idx = t->hdr_slots = t->hdr_bytes = 0;
}

void
tg_tape_free(tg_tape *t)
{
    if (!t)
        return;
    if (t->busy_node) { /* refused: the caller's record or backward is still running on it */
        tg__fail_busy(t, "tape_free");
        return;
    }
    if (t->held) {
        fail_held(t, "tape_free");
        return;
    }
    tg__arena_release(&t->arena);
    headers_release(t);
    tg__free(t->nodes);
    tg__free(t->jvp_scratch);
    tg__free(t->fwd_scratch);
    tg__free(t);
}

tg_status
tg_tape_status(const tg_tape *t)
{
    return t ? t->status : TG_ERR_ARG;
}

const char *
tg_tape_error(const tg_tape *t)
{
    if (!t)
        return "tape is NULL";
    return t->status == TG_OK ? NULL : t->errmsg;
}

size_t
tg_tape_node_count(const tg_tape *t)
{
    return t ? t->n_nodes : 0;
}

size_t
tg_tape_arena_bytes(const tg_tape *t)
{
    return t ? t->arena.total + t->hdr_bytes : 0;
}

void
tg_tape_set_memory_limit(tg_tape *t, size_t bytes)
{
    if (t)
        t->budget.limit = bytes;
}

void
tg_tape_set_check_finite(tg_tape *t, bool on)
{
    if (t)
        t->check_finite = on;
}

void
tg_tape_set_retain_grads(tg_tape *t, bool retain)
{
    if (t)
        t->drop_grads = !retain;
}

bool
tg_tape_retains_grads(const tg_tape *t)
{
    return t && !t->drop_grads;
}

void
tg_tape_set_training(tg_tape *t, bool training)
{
    if (t)
        t->eval = !training;
}

bool
tg_tape_training(const tg_tape *t)
{
    return t && !t->eval;
}

tg_node *
tg_tape_node(const tg_tape *t, size_t i)
{
    return t && i < t->n_nodes ? t->nodes[i] : NULL;
}

tg_tensor *
tg__operand(tg_tape *t, const char *op, const char *arg, const tg_tensor *h)
{
    if (!h) {
        tg__fail(t, TG_ERR_ARG, "%s: %s is NULL", op, arg);
        return NULL;
    }
    tg_tensor *x = tg__tensor(h);
    if (x->kind == TG__KIND_NIL) {
        tg__fail(t, TG_ERR_ARG, "%s: %s is the nil tensor returned by a failed call%s", op, arg,
                 x->tape == t ? "" : " on another tape");
        return NULL;
    }
    if (x->kind == TG__KIND_PARAM)
        return x;
    if (x->kind == TG__KIND_STALE) {
        tg__fail(t, TG_ERR_ARG,
                 "%s: %s is stale: it was made before tg_tape_reset (%d or more resets ago: "
                 "its header now holds a newer tensor)",
                 op, arg, TG__HEADER_GENS);
        return NULL;
    }
    if (x->tape != t) {
        tg__fail(t, TG_ERR_ARG, "%s: %s %s belongs to another tape (%p), not this one (%p)", op,
                 arg, tg__name_text(x).s, (void *)x->tape, (void *)t);
        return NULL;
    }
    if (x->gen != t->gen) {
        tg__fail(t, TG_ERR_ARG,
                 "%s: %s is stale: it was made before tg_tape_reset (generation %" PRIu64
                 ", tape is at %" PRIu64 ")",
                 op, arg, x->gen, t->gen);
        return NULL;
    }
    return x;
}

static char *
arena_strdup(tg_tape *t, const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = tg__arena_alloc(&t->arena, n);
    if (d)
        memcpy(d, s, n);
    return d;
}

/*
 * Tensor headers: why a ring of slots.
 *
 * A handle (tg_tensor *) is the address of the tensor's header, and ops read the header
 * through it, so a stale handle can only be recognized by what that address holds now. If
 * the header memory were rewound with the arena (as it was, between two arenas by generation
 * parity), a handle two resets old would point at a header of the current step, with the
 * current generation, and alias it without any error. So header memory is never rewound:
 * headers are taken in order from a ring of slots, and a slot is handed to a new tensor only
 * when the tensor it held is at least TG__HEADER_GENS generations old (else the ring grows at
 * the cursor). A handle up to TG__HEADER_GENS - 1 resets old therefore always finds its own
 * header and its own generation, and every check (tg__operand, the accessors of tensor.c)
 * rejects it naming both generations. An older one may find its slot given to a newer tensor;
 * the use count its handle carries (tg__handle in internal.h) then differs from the slot's, and
 * it resolves to tg__stale. A slot whose count has reached TG__SLOT_USES_MAX is retired: it is
 * skipped from then on and not counted as room, so a tape that has run a million resets or so
 * grows by one ring's worth, once.
 *
 * The ring keeps at least TG__HEADER_GENS times the headers of the largest step so far, so a
 * repeated step finds every slot it needs old enough and allocates nothing; memory is
 * TG__HEADER_GENS x sizeof(tg_tensor) per tensor of a step (144 bytes each on x86-64:
 * about 2.3 KiB; growing by halves can leave up to 1.5 times that).
 */
static bool
header_grow(tg_tape *t, size_t need)
{
    size_t n = t->hdr_slots / 2;
    if (n < 64)
        n = 64;
    if (need > SIZE_MAX / TG__HEADER_GENS)
        return false;
    if (TG__HEADER_GENS * need > t->hdr_slots && n < TG__HEADER_GENS * need - t->hdr_slots)
        n = TG__HEADER_GENS * need - t->hdr_slots;
    if (n > SIZE_MAX / sizeof(tg_tensor))
        return false;
    if (t->hdr_cur && t->hdr_idx == t->hdr_cur->n) { /* at a segment's end: insert after it */
        t->hdr_prev = t->hdr_cur;
        t->hdr_cur = t->hdr_cur->next;
        t->hdr_idx = 0;
    }
    bool split = t->hdr_cur && t->hdr_idx > 0; /* segments are never empty */
    size_t bytes = n * sizeof(tg_tensor) + (1 + split) * sizeof(struct tg__header_seg);
    if (t->budget.limit &&
        (t->budget.held > t->budget.limit || bytes > t->budget.limit - t->budget.held)) {
        t->budget.refused = bytes;
        return false;
    }
    struct tg__header_seg *seg = tg__malloc(sizeof *seg);
    struct tg__header_seg *tail = seg && split ? tg__malloc(sizeof *tail) : NULL;
    tg_tensor *slots = seg && (tail || !split) ? tg__calloc(n, sizeof *slots) : NULL;
    if (!slots) {
        tg__free(tail);
        tg__free(seg);
        return false;
    }
    *seg = (struct tg__header_seg){.slots = slots, .n = n, .owns = true};
    if (!t->hdr_cur) {
        seg->next = seg;
        t->hdr_prev = seg;
    } else {
        if (split) { /* the cursor is inside hdr_cur: cut it there */
            struct tg__header_seg *cur = t->hdr_cur;
            *tail = (struct tg__header_seg){cur->next, cur->slots + t->hdr_idx,
                                            cur->n - t->hdr_idx, false};
            cur->n = t->hdr_idx;
            cur->next = tail;
            t->hdr_prev = cur;
            t->hdr_cur = tail;
        }
        seg->next = t->hdr_cur;
        t->hdr_prev->next = seg;
    }
    t->hdr_cur = seg;
    t->hdr_idx = 0;
    t->hdr_slots += n;
    t->hdr_bytes += bytes;
    t->budget.held += bytes;
    return true;
}

/* header_slot when the slot at the cursor cannot simply be taken: the cursor at a segment's
 * end, a retired slot, a slot too young to reuse, or a ring too small. */
static tg_tensor *
header_slot_slow(tg_tape *t)
{
    size_t need = t->n_tensors + 1;
    for (;;) {
        bool grow = !t->hdr_cur || (t->hdr_slots - t->hdr_retired) / TG__HEADER_GENS < need;
        if (!grow) {
            if (t->hdr_idx == t->hdr_cur->n) {
                t->hdr_prev = t->hdr_cur;
                t->hdr_cur = t->hdr_cur->next;
                t->hdr_idx = 0;
            }
            const tg_tensor *old = &t->hdr_cur->slots[t->hdr_idx];
            if (old->uses == TG__SLOT_USES_MAX) { /* retired; the room check above ensures
                                                   * a live slot is ahead */
                t->hdr_idx++;
                continue;
            }
            grow = old->tape && t->gen - old->gen < TG__HEADER_GENS;
        }
        if (grow && !header_grow(t, need))
            return NULL;
        break;
    }
    return &t->hdr_cur->slots[t->hdr_idx++];
}

/* The next header slot (not cleared: until the caller fills it, it still holds the header of
 * the old tensor it had, or zeros), or NULL when out of memory. The common case inline: the
 * slot at the cursor is free for reuse and the ring is large enough (header_slot_slow's
 * conditions, in its order). */
static inline tg_tensor *
header_slot(tg_tape *t)
{
    struct tg__header_seg *seg = t->hdr_cur;
    if (seg && t->hdr_idx < seg->n &&
        (t->hdr_slots - t->hdr_retired) / TG__HEADER_GENS >= t->n_tensors + 1) {
        tg_tensor *x = &seg->slots[t->hdr_idx];
        if (x->uses != TG__SLOT_USES_MAX && !(x->tape && t->gen - x->gen < TG__HEADER_GENS)) {
            t->hdr_idx++;
            return x;
        }
    }
    return header_slot_slow(t);
}

/* Fresh headers and nodes are copies of these: for a struct of 120-184 bytes gcc turns a
 * memset into `rep stos`, whose start-up cost was half of tape_tensor's time in a chain of
 * scalar ops, and a copy into plain vector stores. */
static const tg_tensor blank_tensor;
static const tg_node blank_node;

/* What tg__check_dims accepts, without its message (one runs per tensor of a step): the
 * element count in *size, or false and tg__check_dims is asked why. */
static inline bool
dims_fit(int ndim, const int64_t *dims, tg_dtype dt, size_t *size)
{
    size_t es = tg__dtype_bytes(dt), n = 1;
    if (!es || ndim < 1 || ndim > TG_MAX_DIMS || !dims)
        return false;
    for (int i = 0; i < ndim; i++)
        if (dims[i] < 0 || (uint64_t)dims[i] > SIZE_MAX ||
            __builtin_mul_overflow(n, (size_t)dims[i], &n))
            return false;
    if (n > (SIZE_MAX >> 2) / es) /* n·es > SIZE_MAX >> 2, as tg__check_dims */
        return false;
    *size = n;
    return true;
}

/* Out of line, so that the message buffer is no part of tape_tensor's frame. */
__attribute__((noinline, cold)) static tg_tensor *
fail_dims(tg_tape *t, const char *what, tg_dtype dt, int ndim, const int64_t *dims)
{
    size_t size;
    char err[TG__ERRMSG_SIZE];
    tg_status s = tg__check_dims(ndim, dims, dt, &size, err, sizeof err, what);
    if (s == TG_OK) /* dims_fit and tg__check_dims disagree: a bug here, said as such */
        return tg__fail(t, TG_ERR_ARG, "%s: shape %s of %s refused by an internal check", what,
                        tg__shape_dims_text(ndim, dims).s, tg_dtype_name(dt));
    return tg__fail(t, s, "%s", err);
}

/* A tensor header on the tape; its data is `view` when given (no allocation), else new. */
static inline __attribute__((always_inline)) tg_tensor *
tape_tensor(tg_tape *t, const char *what, tg_dtype dt, int ndim, const int64_t *dims, bool zero,
            const char *name, void *view)
{
    size_t size;
    if (!dims_fit(ndim, dims, dt, &size))
        return fail_dims(t, what, dt, ndim, dims);
    if (name && !tg__name_ok(name)) /* op outputs have none */
        return tg__fail(t, TG_ERR_ARG,
                        "%s: name must be non-empty valid UTF-8 of at most %d bytes", what,
                        TG__NAME_MAX);
    tg_tensor *x = header_slot(t);
    void *data = !x ? NULL : view ? view : tg__arena_alloc(&t->arena, size * tg__dtype_bytes(dt));
    char *nm = data && name ? arena_strdup(t, name) : NULL;
    if (!x || !data || (name && !nm))
        return tg__fail(t, TG_ERR_NOMEM, "%s: out of memory (%zu bytes) for a %s tensor %s",
                        what, size * tg__dtype_bytes(dt), tg_dtype_name(dt),
                        tg__shape_dims_text(ndim, dims).s);
    uint16_t uses = x->uses + 1; /* kept across the slot's tensors: see tg__handle */
    if (uses == TG__SLOT_USES_MAX)
        t->hdr_retired++;
    *x = blank_tensor;
    x->uses = uses;
    x->dtype = dt;
    x->ndim = ndim;
    for (int i = 0; i < ndim; i++) /* a memcpy of variable length was a loop of ~50
                                     * instructions for one dimension */
        x->dims[i] = dims[i];
    x->size = size;
    x->data = data;
    x->name = nm;
    x->kind = TG__KIND_INPUT;
    x->tape = t;
    x->gen = t->gen;
    x->id = t->n_tensors++;
    if (zero)
        memset(data, 0, size * tg__dtype_bytes(dt));
    return x;
}

tg_tensor *
tg__tape_tensor(tg_tape *t, const char *what, tg_dtype dt, int ndim, const int64_t *dims,
                bool zero, const char *name)
{
    return tape_tensor(t, what, dt, ndim, dims, zero, name, NULL);
}

void *
tg__tape_copy(tg_tape *t, const char *what, const void *src, size_t n, size_t size)
{
    if (n > SIZE_MAX / (size ? size : 1)) {
        tg__fail(t, TG_ERR_ARG, "%s: %zu items is too many", what, n);
        return NULL;
    }
    size_t bytes = n * size;
    void *p = tg__arena_alloc(&t->arena, bytes ? bytes : 1);
    if (!p) {
        tg__fail(t, TG_ERR_NOMEM, "%s: out of memory (%zu bytes) copying attributes", what,
                 n * size);
        return NULL;
    }
    if (bytes)
        memcpy(p, src, bytes);
    return p;
}

bool
tg__axis_norm(int *axis, int ndim)
{
    int a = *axis < 0 ? *axis + ndim : *axis;
    if (a < 0 || a >= ndim)
        return false;
    *axis = a;
    return true;
}

static bool
push_node(tg_tape *t, tg_node *n)
{
    if (t->n_nodes == t->cap_nodes) {
        size_t cap = t->cap_nodes ? t->cap_nodes * 2 : 64;
        tg_node **nodes = tg__realloc(t->nodes, cap * sizeof *nodes);
        if (!nodes)
            return false;
        t->nodes = nodes;
        t->cap_nodes = cap;
    }
    t->nodes[t->n_nodes++] = n;
    return true;
}

/* A value is NaN or ±inf exactly when its exponent bits are all ones. Testing the bits (not
 * isfinite) keeps the check valid whatever floating-point flags a caller builds with, and
 * lets the compiler vectorize: each block is scanned with no early exit, and only a block
 * that holds a non-finite value is walked again to find the first one. (An element-by-element
 * loop with an early exit cost tracing 2-3x a step; see tools/tg-bench-finite.c.) */
#define NONFINITE_BLOCK 1024

#define FIRST_NONFINITE(UINT, EXP_MASK)                                                        \
    do {                                                                                       \
        const UINT *u = data;                                                                  \
        for (size_t b = 0; b < n; b += NONFINITE_BLOCK) {                                      \
            size_t e = n - b < NONFINITE_BLOCK ? n - b : NONFINITE_BLOCK;                      \
            UINT bad = 0;                                                                      \
            for (size_t i = 0; i < e; i++)                                                     \
                bad |= (UINT)((u[b + i] & (EXP_MASK)) == (EXP_MASK));                          \
            if (bad)                                                                           \
                for (size_t i = 0; i < e; i++)                                                 \
                    if ((u[b + i] & (EXP_MASK)) == (EXP_MASK))                                 \
                        return (long long)(b + i);                                             \
        }                                                                                      \
    } while (0)

long long
tg__first_nonfinite(const void *data, size_t n, tg_dtype dt)
{
    if (dt == TG_F32)
        FIRST_NONFINITE(uint32_t, UINT32_C(0x7f800000));
    else
        FIRST_NONFINITE(uint64_t, UINT64_C(0x7ff0000000000000));
    return -1;
}

/* Finite-tracing report for the opt-in mode: names the node, its op, shapes and position. */
static void
fail_nonfinite(tg_tape *t, tg_node *n, const char *what, const tg_tensor *x, const void *v,
               long long at)
{
    double value = x->dtype == TG_F32 ? ((const float *)v)[at] : ((const double *)v)[at];
    char inputs[256] = "";
    size_t used = 0;
    for (int i = 0; i < n->n_in && used < sizeof inputs; i++)
        used += (size_t)snprintf(inputs + used, sizeof inputs - used, "%s%s %s", i ? ", " : "",
                                 tg__name_text(n->in[i]).s, tg__shape_text(n->in[i]).s);
    tg__fail(t, TG_ERR_NONFINITE,
             "%s: node #%zu (%s) produced %g at %s[%lld] of %s %s; inputs: %s", n->op->name,
             n->index, n->op->name, value, what, at, tg__name_text(x).s, tg__shape_text(x).s,
             inputs);
}

tg_tensor *
tg__record(tg_tape *t, const tg_op *op, tg_tensor *const *in, int n_in,
           const struct tg__attr *attr, void *ctx)
{
    return tg__record_ex(t, op, in, n_in, attr, ctx, false);
}

static tg_tensor *
record_node(tg_tape *t, const tg_op *op, tg_tensor *const *handles, int n_in,
            const struct tg__attr *attr, void *ctx, bool zero_output, bool view);

/* Every recording goes through here: the op's callbacks run with the tape marked busy, so a
 * callback that records on, resets, runs backward on or frees this tape is refused (and the
 * recording fails naming the op) instead of pulling the step's memory from under it. Takes
 * the caller's handles and gives one back (tg__handle). */
static tg_tensor *
record(tg_tape *t, const tg_op *op, tg_tensor *const *in, int n_in, const struct tg__attr *attr,
       void *ctx, bool zero_output, bool view)
{
    if (t->busy_node)
        return tg__fail_busy(t, op->name);
    tg_tensor *out = record_node(t, op, in, n_in, attr, ctx, zero_output, view);
    t->busy_node = NULL;
    return tg__handle(out);
}

/* tg__operand for input i of a node, with the name "input i" formatted only for a message
 * (formatting it for every input cost more than the rest of the check). */
static tg_tensor *
input_operand(tg_tape *t, const char *op, int i, const tg_tensor *h)
{
    tg_tensor *x = tg__tensor(h);
    if (x && (x->kind == TG__KIND_PARAM ||
              ((x->kind == TG__KIND_INPUT || x->kind == TG__KIND_OP) && x->tape == t &&
               x->gen == t->gen)))
        return x;
    char arg[32];
    snprintf(arg, sizeof arg, "input %d", i);
    return tg__operand(t, op, arg, h);
}

static tg_tensor *
record_node(tg_tape *t, const tg_op *op, tg_tensor *const *handles, int n_in,
            const struct tg__attr *attr, void *ctx, bool zero_output, bool view)
{
    if (t->status != TG_OK)
        return &t->nil;
    if (n_in < 1 || n_in > TG_MAX_INPUTS || !handles)
        return tg__fail(t, TG_ERR_ARG, "%s: %d inputs given (a node takes 1 to %d)", op->name,
                        n_in, TG_MAX_INPUTS);
    tg_tensor *in[TG_MAX_INPUTS];
    for (int i = 0; i < n_in; i++)
        if (!(in[i] = input_operand(t, op->name, i, handles[i])))
            return &t->nil;
    for (int i = 1; i < n_in; i++)
        if (in[i]->dtype != in[0]->dtype)
            return tg__fail(t, TG_ERR_DTYPE, "%s %s·%s: dtypes differ: %s is %s, %s is %s",
                            op->name, tg__name_text(in[0]).s, tg__name_text(in[i]).s,
                            tg__name_text(in[0]).s, tg_dtype_name(in[0]->dtype),
                            tg__name_text(in[i]).s, tg_dtype_name(in[i]->dtype));

    tg_node *n = tg__arena_alloc(&t->arena, sizeof *n);
    if (!n)
        return tg__fail(t, TG_ERR_NOMEM, "%s: out of memory (%zu bytes) for a node", op->name,
                        sizeof *n);
    *n = blank_node;
    n->op = op;
    n->tape = t;
    n->index = t->n_nodes;
    n->n_in = n_in;
    enum { N_SMALL = sizeof n->in_small / sizeof n->in_small[0] };
    n->in = n->in_small;
    if (n_in > N_SMALL) {
        n->in = tg__arena_alloc(&t->arena, (size_t)n_in * sizeof *n->in);
        if (!n->in)
            return tg__fail(t, TG_ERR_NOMEM, "%s: out of memory for a list of %d inputs",
                            op->name, n_in);
        for (int i = 0; i < n_in; i++)
            n->in[i] = in[i];
    } else {
        for (int i = 0; i < N_SMALL; i++) /* n_in copies compile to a call to memcpy, 4 do not */
            n->in_small[i] = i < n_in ? in[i] : NULL;
    }
    n->attr = (struct tg__attr *)&tg__no_attr; /* never written through: see tg_node */
    if (attr) {
        n->attr = tg__arena_alloc(&t->arena, sizeof *n->attr);
        if (!n->attr)
            return tg__fail(t, TG_ERR_NOMEM, "%s: out of memory for its attributes", op->name);
        *n->attr = *attr;
    }
    n->ctx = ctx;
    n->zero_output = zero_output;

    int ndim = in[0]->ndim;
    int64_t dims[TG_MAX_DIMS];
    memcpy(dims, in[0]->dims, sizeof dims);
    t->busy_node = n;
    t->busy_what = "shape rule";
    tg_status s = op->shape ? op->shape(n, &ndim, dims) : TG_OK;
    if (s != TG_OK || t->status != TG_OK)
        return s != TG_OK && t->status == TG_OK
                   ? tg__fail(t, s, "%s: shape rule failed: %s", op->name, tg_status_string(s))
                   : &t->nil;

    tg_tensor *out = tape_tensor(t, op->name, in[0]->dtype, ndim, dims, zero_output, NULL,
                                 view ? in[0]->data : NULL);
    if (t->status != TG_OK)
        return &t->nil;
    if (view && out->size != in[0]->size)
        return tg__fail(t, TG_ERR_SHAPE, "%s: a view of %s must keep its %zu elements", op->name,
                        tg__name_text(in[0]).s, in[0]->size);
    out->kind = TG__KIND_OP;
    out->node = n;
    for (int i = 0; i < n_in; i++)
        out->requires_grad |= in[i]->requires_grad;
    n->out = out;

    t->busy_what = "scratch size";
    n->scratch_bytes = op->scratch_size ? op->scratch_size(n) : 0;
    if (n->scratch_bytes) {
        n->scratch = tg__arena_alloc(&t->arena, n->scratch_bytes);
        if (!n->scratch)
            return tg__fail(t, TG_ERR_NOMEM, "%s: out of memory (%zu bytes) for scratch",
                            op->name, n->scratch_bytes);
    }
    if (!push_node(t, n))
        return tg__fail(t, TG_ERR_NOMEM,
                        "%s: out of memory (%zu bytes) growing the tape to %zu nodes", op->name,
                        (t->cap_nodes ? t->cap_nodes * 2 : 64) * sizeof(tg_node *),
                        t->cap_nodes ? t->cap_nodes * 2 : 64); /* push_node's growth rule */

    t->busy_what = "forward";
    s = op->forward(n);
    t->busy_node = NULL;
    if (s != TG_OK || t->status != TG_OK) {
        if (t->status == TG_OK)
            tg__fail(t, s, "%s: forward failed: %s", op->name, tg_status_string(s));
        return &t->nil;
    }
    if (t->check_finite) {
        long long at = tg__first_nonfinite(out->data, out->size, out->dtype);
        if (at >= 0) {
            fail_nonfinite(t, n, "output", out, out->data, at);
            return &t->nil;
        }
    }
    return out;
}

tg_tensor *
tg__record_ex(tg_tape *t, const tg_op *op, tg_tensor *const *in, int n_in,
              const struct tg__attr *attr, void *ctx, bool zero_output)
{
    return record(t, op, in, n_in, attr, ctx, zero_output, false);
}

tg_tensor *
tg__record_view(tg_tape *t, const tg_op *op, tg_tensor *x, const struct tg__attr *attr)
{
    return record(t, op, &x, 1, attr, NULL, false, true);
}

/* Gradient buffer for a tape tensor: allocated once per tape generation, zeroed per pass. */
struct zero_job {
    char *p;
};

static void
zero_chunk(size_t b, size_t e, void *vctx)
{
    memset(((struct zero_job *)vctx)->p + b, 0, e - b);
}

/* Zeroes n bytes, in fixed chunks across the worker threads when large (a 64 MiB gradient
 * would otherwise take one core several milliseconds). */
static void
zero_bytes(void *p, size_t n)
{
    struct zero_job j = {p};
    if (n <= ((size_t)1 << 20))
        memset(p, 0, n);
    else
        tg__parallel_for(n, (size_t)1 << 18, zero_chunk, &j);
}

/* Gives x back its own gradient buffer after a seeded pass lent it the seed's data. */
static void
return_borrowed(tg_tensor *x)
{
    if (x->grad_borrowed) {
        x->grad = x->grad_own;
        x->grad_own = NULL;
        x->grad_borrowed = false;
    }
}

/*
 * Dropped gradients (tg_tape_set_retain_grads(t, false)). An op output's gradient is complete
 * once its producer's VJP has run (the tape is in topological order, and the reverse sweep
 * meets every consumer first), and nothing reads it after that but the user. Dropped, its
 * block goes on the tape's free list, and the gradients the sweep needs next are cut from the
 * best fitting free block before the arena is asked. Neighbouring free blocks merge, so two
 * half-size gradients given back make room for a full-size one: a chain of layers then holds
 * about two layers' gradients instead of all of them, and a repeated step takes the same
 * blocks in the same order (no allocation when warm). A block keeps its list entry in its own
 * first bytes; sizes are the arena's (multiples of TG__ARENA_ALIGN), so every cut stays
 * aligned and is large enough for an entry. Adjacent addresses are always in one arena block
 * (the next block's header lies between two blocks).
 */
struct tg__free_grad {
    struct tg__free_grad *next;
    size_t bytes;
};

static size_t
grad_capacity(const tg_tensor *x)
{
    size_t n = tg__nbytes(x);
    return n ? (n + TG__ARENA_ALIGN - 1) & ~(size_t)(TG__ARENA_ALIGN - 1) : TG__ARENA_ALIGN;
}

/* Puts [p, p + bytes) on the free list, merged with the free blocks right before and after. */
static void
free_grad_block(tg_tape *t, char *p, size_t bytes)
{
    for (struct tg__free_grad **e = &t->free_grads; *e;) {
        char *q = (char *)*e;
        if (q + (*e)->bytes == p || p + bytes == q) {
            struct tg__free_grad *n = *e;
            *e = n->next; /* unlinked, then merged in */
            if (q < p)
                p = q;
            bytes += n->bytes;
            e = &t->free_grads; /* the merged block may now touch another: look again */
        } else
            e = &(*e)->next;
    }
    struct tg__free_grad *b = (struct tg__free_grad *)p;
    *b = (struct tg__free_grad){t->free_grads, bytes};
    t->free_grads = b;
}

/* `bytes` (an arena size) cut from the front of the smallest free block that holds it, the
 * rest left free; else from the arena. */
static void *
grad_block(tg_tape *t, size_t bytes)
{
    struct tg__free_grad **best = NULL;
    for (struct tg__free_grad **e = &t->free_grads; *e; e = &(*e)->next)
        if ((*e)->bytes >= bytes && (!best || (*e)->bytes < (*best)->bytes))
            best = e;
    if (!best)
        return tg__arena_alloc(&t->arena, bytes);
    struct tg__free_grad *b = *best;
    *best = b->next;
    if (b->bytes > bytes) {
        struct tg__free_grad *rest = (struct tg__free_grad *)((char *)b + bytes);
        *rest = (struct tg__free_grad){t->free_grads, b->bytes - bytes};
        t->free_grads = rest;
    }
    return b;
}

static void
drop_grad(tg_tape *t, tg_tensor *x)
{
    free_grad_block(t, x->grad, grad_capacity(x));
    x->grad = NULL;
    x->grad_fresh = false;
}

/* An op output whose gradient the pass drops: allocated when the sweep first adds into it. */
static bool
dropped_here(const tg_tape *t, const tg_tensor *x, const tg_tensor *out)
{
    return t->drop_grads && x->kind == TG__KIND_OP && x != out;
}

static bool
prepare_grad(tg_tape *t, tg_tensor *x, const tg_tensor *out)
{
    return_borrowed(x);
    if (!x->requires_grad || x->kind == TG__KIND_PARAM)
        return true;
    if (x->grad && x->grad_pass == t->grad_pass)
        return true; /* already prepared in this pass (a tensor read by several nodes) */
    x->grad_pass = t->grad_pass;
    if (!x->grad && !dropped_here(t, x, out)) {
        x->grad = tg__arena_alloc(&t->arena, tg__nbytes(x));
        if (!x->grad) {
            tg__fail(t, TG_ERR_NOMEM, "backward: out of memory (%zu bytes) for the gradient of %s",
                     tg__nbytes(x), tg__name_text(x).s);
            return false;
        }
    }
    x->grad_fresh = x->grad != NULL; /* zeroed lazily: see backward_from */
    return true;
}

/* Before a VJP adds into x: the block of a gradient the pass drops, taken now. */
static bool
take_dropped_grad(tg_tape *t, tg_tensor *x, const tg_tensor *out)
{
    if (x->grad || !x->requires_grad || !dropped_here(t, x, out))
        return true;
    x->grad = grad_block(t, grad_capacity(x));
    if (!x->grad) {
        tg__fail(t, TG_ERR_NOMEM, "backward: out of memory (%zu bytes) for the gradient of %s",
                 tg__nbytes(x), tg__name_text(x).s);
        return false;
    }
    x->grad_fresh = true;
    return true;
}

/* The gradient of x, zeroed now if it was left fresh. One element (a scalar graph's every
 * gradient) is one store, not a call to memset. */
static void
settle_grad(tg_tensor *x)
{
    if (x->grad && x->grad_fresh) {
        if (x->size == 1 && x->dtype == TG_F32)
            *(float *)x->grad = 0;
        else if (x->size == 1)
            *(double *)x->grad = 0;
        else
            zero_bytes(x->grad, tg__nbytes(x));
        x->grad_fresh = false;
    }
}

/* Marks x as reached by a gradient in the current pass (a live_pass stamp: no reset needed). */
static void
mark_live(tg_tape *t, tg_tensor *x)
{
    x->live_pass = t->grad_pass;
}

static bool
is_live(const tg_tape *t, const tg_tensor *x)
{
    return x->live_pass == t->grad_pass;
}

/* The sweep meets x (as an input of a node, or as the output of a node nobody consumed): its
 * gradient is prepared for this pass the first time. A tape input has no producer for the
 * sweep to settle it at, so its gradient is zeroed now rather than lazily. */
static bool
meet(tg_tape *t, tg_tensor *x, const tg_tensor *out)
{
    if (x->grad_pass == t->grad_pass)
        return true; /* met already (or out, prepared before the sweep) */
    if (!prepare_grad(t, x, out))
        return false;
    if (x->kind == TG__KIND_INPUT)
        settle_grad(x);
    return true;
}

/* After a failure at the node before `end`: every gradient of nodes [0, end) that no VJP
 * reached reads as zeros, as after a whole pass (nodes the sweep did not get to are met now). */
static void
settle_rest(tg_tape *t, size_t end, tg_tensor *out)
{
    for (size_t i = end; i-- > 0;) {
        tg_node *n = t->nodes[i];
        for (int k = 0; k < n->n_in; k++)
            if (meet(t, n->in[k], out))
                settle_grad(n->in[k]);
        if (meet(t, n->out, out))
            settle_grad(n->out);
    }
    settle_grad(out);
}

/* tg__vjp_takes_fresh searches the op table, and a tape runs few distinct ops: a pass keeps
 * the answers for the last FRESH_SEEN ops it asked about. */
#define FRESH_SEEN 8
struct fresh_seen {
    const tg_op *op[FRESH_SEEN];
    bool fresh[FRESH_SEEN];
    unsigned next; /* the entry to replace next */
};

static bool
vjp_takes_fresh_seen(struct fresh_seen *seen, const tg_op *op)
{
    for (int i = 0; i < FRESH_SEEN && seen->op[i]; i++)
        if (seen->op[i] == op)
            return seen->fresh[i];
    unsigned i = seen->next++ % FRESH_SEEN;
    seen->op[i] = op;
    seen->fresh[i] = tg__vjp_takes_fresh(op);
    return seen->fresh[i];
}

/*
 * One reverse sweep over the tape. Gradients are prepared when the sweep first meets their
 * tensor (meet: allocated once per tape generation, marked fresh) and zeroed lazily: each just
 * before the first VJP that adds into it, or written directly by a VJP that can overwrite, or,
 * if nothing reached it, zeroed when the sweep gets to its producer (by then every consumer has
 * run: the tape is in topological order). So each node is visited once; preparing every
 * gradient in a pass of its own and settling them in another had cost a chain of scalar ops
 * two more trips over memory as large as the tape.
 */
static tg_status
backward_from(tg_tape *t, tg_tensor *out, tg_tensor *seed)
{
    if (!out->requires_grad)
        return TG_OK; /* nothing on the way to this output needs a gradient */
    tg_node *last = out->node;
    size_t end = last ? last->index + 1 : 0;
    t->grad_pass++;
    /* out's gradient is written with the seed, not zeroed */
    return_borrowed(out);
    if (out->grad && out->kind != TG__KIND_PARAM)
        out->grad_pass = t->grad_pass, out->grad_fresh = false;
    else if (!prepare_grad(t, out, out))
        return t->status;

    /* d(out)/d(out) = 1, or the seed: written over a tape tensor's gradient, added to a
     * parameter's (parameter gradients accumulate across passes) */
    out->grad_fresh = false;
    if (out->kind != TG__KIND_PARAM && seed) {
        /* No copy: out's gradient is the seed's data for this pass and after it (VJPs only
         * read an output's gradient; nothing downstream of out runs). A 32 MiB seed copy
         * was a third of a softmax backward. */
        out->grad_own = out->grad;
        out->grad = seed->data;
        out->grad_borrowed = true;
    } else
        TG__DISPATCH(out->dtype, T, {
            T *g = out->grad;
            const T *sd = seed ? seed->data : NULL;
            bool acc = out->kind == TG__KIND_PARAM;
            for (size_t i = 0; i < out->size; i++)
                g[i] = (acc ? g[i] : 0) + (sd ? sd[i] : (T)1);
        });
    mark_live(t, out);

    struct fresh_seen fresh_seen = {.next = 0};

    /* Only nodes on a path to `out` run their VJP: live marks tensors that received a
     * gradient. Tape order is topological, so one reverse sweep is enough. */
    for (size_t i = end; i-- > 0;) {
        tg_node *n = t->nodes[i];
        bool ok = meet(t, n->out, out);
        for (int k = 0; ok && k < n->n_in; k++)
            ok = meet(t, n->in[k], out);
        if (!ok) {
            settle_rest(t, i + 1, out);
            return t->status;
        }
        if (!is_live(t, n->out)) {
            settle_grad(n->out); /* nothing reached it: it reads as zeros */
            continue;
        }
        bool takes_fresh = vjp_takes_fresh_seen(&fresh_seen, n->op);
        for (int k = 0; k < n->n_in; k++) {
            if (!take_dropped_grad(t, n->in[k], out)) {
                settle_rest(t, i + 1, out);
                return t->status;
            }
            if (n->in[k]->grad)
                mark_live(t, n->in[k]);
            if (!takes_fresh)
                settle_grad(n->in[k]);
        }
        t->busy_node = n;
        t->busy_what = "VJP";
        tg_status s = n->op->vjp(n);
        t->busy_node = NULL;
        if (takes_fresh) /* a VJP that returned early (no input needs it) wrote nothing */
            for (int k = 0; k < n->n_in; k++)
                settle_grad(n->in[k]);
        if (s != TG_OK || t->status != TG_OK) {
            if (t->status == TG_OK)
                tg__fail(t, s, "%s: VJP failed at node #%zu: %s", n->op->name, n->index,
                         tg_status_string(s));
            settle_rest(t, i + 1, out);
            return t->status;
        }
        if (t->check_finite) {
            for (int k = 0; k < n->n_in; k++) {
                tg_tensor *x = n->in[k];
                if (!x->grad)
                    continue;
                long long at = tg__first_nonfinite(x->grad, x->size, x->dtype);
                if (at >= 0) {
                    fail_nonfinite(t, n, "gradient", x, x->grad, at);
                    settle_rest(t, i + 1, out);
                    return t->status;
                }
            }
        }
        if (n->out->grad && dropped_here(t, n->out, out))
            drop_grad(t, n->out);
    }
    settle_grad(out);
    return TG_OK;
}

tg_status
tg_backward(tg_tape *t, tg_tensor *loss)
{
    if (!t)
        return TG_ERR_ARG;
    if (t->busy_node) {
        tg__fail_busy(t, "backward");
        return t->status;
    }
    if (t->status != TG_OK)
        return t->status;
    if (!(loss = tg__operand(t, "backward", "loss", loss)))
        return t->status;
    if (loss->size != 1) {
        tg__fail(t, TG_ERR_NOT_SCALAR,
                 "backward: output %s is %s; give a seed of the same shape "
                 "(tg_backward_seeded) or reduce to a scalar",
                 tg__name_text(loss).s, tg__shape_text(loss).s);
        return t->status;
    }
    return backward_from(t, loss, NULL);
}

tg_status
tg_backward_seeded(tg_tape *t, tg_tensor *out, tg_tensor *seed)
{
    if (!t)
        return TG_ERR_ARG;
    if (t->busy_node) {
        tg__fail_busy(t, "backward");
        return t->status;
    }
    if (t->status != TG_OK)
        return t->status;
    if (!(out = tg__operand(t, "backward", "output", out)) ||
        !(seed = tg__operand(t, "backward", "seed", seed)))
        return t->status;
    if (seed->dtype != out->dtype || seed->ndim != out->ndim ||
        memcmp(seed->dims, out->dims, (size_t)out->ndim * sizeof out->dims[0]) != 0) {
        tg__fail(t, TG_ERR_SHAPE, "backward: seed %s %s %s does not match output %s %s %s",
                 tg__name_text(seed).s, tg__shape_text(seed).s, tg_dtype_name(seed->dtype),
                 tg__name_text(out).s, tg__shape_text(out).s, tg_dtype_name(out->dtype));
        return t->status;
    }
    return backward_from(t, out, seed);
}
