/*
 * Forward mode: tg_jvp pushes tangents ẋ of chosen leaves through a recorded tape, in tape
 * order, calling each node's own JVP rule (tg_op.jvp, next to its VJP in the op's file):
 *
 *     ẏ = Σ_k J_k · ẋ_k,   J_k = ∂y/∂x_k at the recorded values.
 *
 * Tangents live beside the data: a seeded leaf's tangent is the seed's data (borrowed, never
 * written), an op output's is a buffer of its own on the tape's arena, allocated the first
 * time a pass reaches it and reused by every later pass in the same tape generation, so a
 * warm pass allocates nothing. A tensor that no seeded tangent reaches keeps tangent NULL
 * ("zero"), and a node none of whose inputs has a tangent is skipped: the pass costs only
 * what lies downstream of the seeds.
 *
 * The pass runs over a recorded tape rather than while it records, so one recording serves
 * backward, any number of forward-mode passes (one per direction) and the exact check, and
 * the forward's own cost is not paid again.
 */
#include <stdint.h>
#include <string.h>

#include "internal.h"

enum { SCRATCH_ALIGN = 64 };

/* A block of at least `bytes`, aligned, kept in *raw / *have across calls (grown, never
 * shrunk; contents are not kept). */
static void *
scratch_block(void **raw, size_t *have, size_t bytes)
{
    if (bytes > *have || !*raw) {
        if (bytes > SIZE_MAX - SCRATCH_ALIGN)
            return NULL;
        void *p = tg__malloc(bytes + SCRATCH_ALIGN);
        if (!p)
            return NULL;
        tg__free(*raw);
        *raw = p;
        *have = bytes;
    }
    return (void *)(((uintptr_t)*raw + SCRATCH_ALIGN - 1) & ~(uintptr_t)(SCRATCH_ALIGN - 1));
}

void *
tg__jvp_scratch(tg_node *nd, size_t bytes)
{
    tg_tape *t = nd->tape;
    void *p = scratch_block(&t->jvp_scratch, &t->jvp_scratch_bytes, bytes ? bytes : 1);
    if (!p)
        tg__fail(t, TG_ERR_NOMEM, "%s: out of memory (%zu bytes) for forward-mode scratch",
                 nd->op->name, bytes);
    return p;
}

tg_status
tg__forward_on(tg_node *nd, const void *const *in_data, void *out_data)
{
    tg_tape *t = nd->tape;
    tg_node copy = *nd;
    tg_tensor hdr[TG_MAX_INPUTS], out = *nd->out;
    tg_tensor *in[TG_MAX_INPUTS];
    for (int k = 0; k < nd->n_in; k++) {
        in[k] = nd->in[k];
        if (in_data[k]) {
            hdr[k] = *nd->in[k];
            hdr[k].data = (void *)in_data[k];
            in[k] = &hdr[k];
        }
    }
    out.data = out_data;
    copy.in = in;
    copy.out = &out;
    if (nd->scratch_bytes) {
        copy.scratch = scratch_block(&t->fwd_scratch, &t->fwd_scratch_bytes, nd->scratch_bytes);
        if (!copy.scratch) {
            tg__fail(t, TG_ERR_NOMEM, "%s: out of memory (%zu bytes) for forward-mode scratch",
                     nd->op->name, nd->scratch_bytes);
            return TG_ERR_NOMEM;
        }
    }
    return nd->op->forward(&copy);
}

/* Arena sizes of zero tangents: each rounded up so every slice stays aligned. */
static size_t
rounded(size_t bytes)
{
    return (bytes + SCRATCH_ALIGN - 1) & ~(size_t)(SCRATCH_ALIGN - 1);
}

tg_status
tg__jvp_linear(tg_node *nd)
{
    size_t zeros = 0;
    for (int k = 0; k < nd->n_in; k++)
        if (!nd->in[k]->tangent)
            zeros += rounded(tg__nbytes(nd->in[k]));
    char *z = NULL;
    if (zeros) {
        if (!(z = tg__jvp_scratch(nd, zeros)))
            return TG_ERR_NOMEM;
        memset(z, 0, zeros);
    }
    const void *in_data[TG_MAX_INPUTS];
    for (int k = 0; k < nd->n_in; k++) {
        in_data[k] = nd->in[k]->tangent;
        if (!in_data[k]) {
            in_data[k] = z;
            z += rounded(tg__nbytes(nd->in[k]));
        }
    }
    return tg__forward_on(nd, in_data, nd->out->tangent);
}

void
tg__add_into(tg_dtype dt, void *y, const void *x, size_t n)
{
    TG__DISPATCH(dt, T, {
        T *restrict yv = y;
        const T *restrict xv = x;
        for (size_t i = 0; i < n; i++)
            yv[i] += xv[i];
    });
}

tg_status
tg__jvp_multilinear(tg_node *nd, int n_factors)
{
    /* Scratch: one zero block as large as the largest input, and one output-sized block for
     * every term after the first. */
    size_t zero = 0;
    for (int k = 0; k < nd->n_in; k++)
        if (tg__nbytes(nd->in[k]) > zero)
            zero = tg__nbytes(nd->in[k]);
    zero = rounded(zero);
    size_t out_bytes = tg__nbytes(nd->out);
    char *z = tg__jvp_scratch(nd, zero + rounded(out_bytes));
    if (!z)
        return TG_ERR_NOMEM;
    memset(z, 0, zero);
    void *term = z + zero;
    bool linear_tangent = false;
    for (int k = n_factors; k < nd->n_in; k++)
        linear_tangent |= nd->in[k]->tangent != NULL;
    bool first = true;
    /* term k < n_factors: factor k by its tangent, the other factors as they are, the linear
     * inputs zero; term n_factors: factor 0 zero (the product vanishes), the linear inputs'
     * tangents */
    for (int k = 0; k <= n_factors; k++) {
        if (k < n_factors ? !nd->in[k]->tangent : !linear_tangent)
            continue;
        const void *in_data[TG_MAX_INPUTS];
        for (int i = 0; i < nd->n_in; i++) {
            if (i < n_factors)
                in_data[i] = k == n_factors && i == 0 ? z : i == k ? nd->in[i]->tangent : NULL;
            else
                in_data[i] = k == n_factors && nd->in[i]->tangent ? nd->in[i]->tangent : z;
        }
        tg_status s = tg__forward_on(nd, in_data, first ? nd->out->tangent : term);
        if (s != TG_OK)
            return s;
        if (!first)
            tg__add_into(nd->out->dtype, nd->out->tangent, term, nd->out->size);
        first = false;
    }
    return TG_OK;
}

/* A seed: x and its tangent checked, or false with the tape's error set. */
static bool
seed_ok(tg_tape *t, tg_tensor *x, tg_tensor *dx, int i)
{
    if (x->kind == TG__KIND_OP) {
        tg__fail(t, TG_ERR_ARG,
                 "jvp: input %d, %s, is the output of %s (node #%zu); seed an input or a "
                 "parameter",
                 i, tg__name_text(x).s, x->node->op->name, x->node->index);
        return false;
    }
    if (dx->dtype != x->dtype || dx->ndim != x->ndim ||
        memcmp(dx->dims, x->dims, (size_t)x->ndim * sizeof x->dims[0]) != 0) {
        tg__fail(t, TG_ERR_SHAPE, "jvp: tangent %s %s %s does not match input %d, %s %s %s",
                 tg__name_text(dx).s, tg__shape_text(dx).s, tg_dtype_name(dx->dtype), i,
                 tg__name_text(x).s, tg__shape_text(x).s, tg_dtype_name(x->dtype));
        return false;
    }
    return true;
}

static void
clear_tangents(tg_tape *t)
{
    for (size_t i = 0; i < t->n_nodes; i++) {
        tg_node *n = t->nodes[i];
        for (int k = 0; k < n->n_in; k++)
            n->in[k]->tangent = NULL;
        n->out->tangent = NULL;
    }
}

/* After a pass: parameters live beyond the tape, so their borrowed tangents are dropped. */
static void
clear_param_tangents(tg_tape *t)
{
    for (size_t i = 0; i < t->n_nodes; i++) {
        tg_node *n = t->nodes[i];
        for (int k = 0; k < n->n_in; k++)
            if (n->in[k]->kind == TG__KIND_PARAM)
                n->in[k]->tangent = NULL;
    }
}

static tg_status
jvp_pass(tg_tape *t)
{
    for (size_t i = 0; i < t->n_nodes; i++) {
        tg_node *n = t->nodes[i];
        bool reached = false;
        for (int k = 0; k < n->n_in && !reached; k++)
            reached = n->in[k]->tangent != NULL;
        if (!reached)
            continue;
        if (!n->op->jvp) {
            tg__fail(t, TG_ERR_OP,
                     "jvp: op %s (node #%zu) has no forward-mode rule (tg_op.jvp); give the "
                     "op a jvp callback or seed tangents that do not reach it",
                     n->op->name, n->index);
            return t->status;
        }
        tg_tensor *y = n->out;
        size_t bytes = tg__nbytes(y);
        if (!y->tangent_buf) {
            y->tangent_buf = tg__arena_alloc(&t->arena, bytes ? bytes : 1);
            if (!y->tangent_buf) {
                tg__fail(t, TG_ERR_NOMEM, "jvp: out of memory (%zu bytes) for the tangent of %s",
                         bytes, tg__name_text(y).s);
                return t->status;
            }
        }
        memset(y->tangent_buf, 0, bytes);
        y->tangent = y->tangent_buf;
        t->busy_node = n;
        t->busy_what = "JVP";
        tg_status s = n->op->jvp(n);
        t->busy_node = NULL;
        if (s != TG_OK || t->status != TG_OK) {
            if (t->status == TG_OK)
                tg__fail(t, s, "%s: JVP failed at node #%zu: %s", n->op->name, n->index,
                         tg_status_string(s));
            return t->status;
        }
        if (t->check_finite) {
            long long at = tg__first_nonfinite(y->tangent, y->size, y->dtype);
            if (at >= 0) {
                double v = y->dtype == TG_F32 ? ((const float *)y->tangent)[at]
                                              : ((const double *)y->tangent)[at];
                tg__fail(t, TG_ERR_NONFINITE,
                         "%s: node #%zu produced %g at tangent[%lld] of %s %s", n->op->name,
                         n->index, v, at, tg__name_text(y).s, tg__shape_text(y).s);
                return t->status;
            }
        }
    }
    return TG_OK;
}

tg_status
tg_jvp(tg_tape *t, int n, tg_tensor *const *inputs, tg_tensor *const *tangents)
{
    if (!t)
        return TG_ERR_ARG;
    if (t->busy_node) {
        tg__fail_busy(t, "jvp");
        return t->status;
    }
    if (t->status != TG_OK)
        return t->status;
    if (n < 0 || (n > 0 && (!inputs || !tangents))) {
        tg__fail(t, TG_ERR_ARG, "jvp: %d seeds given with %s", n,
                 !inputs ? "no inputs" : "no tangents");
        return t->status;
    }
    tg_tensor *x[TG_MAX_INPUTS], *dx[TG_MAX_INPUTS];
    if (n > TG_MAX_INPUTS) {
        tg__fail(t, TG_ERR_ARG, "jvp: %d seeds given (at most %d)", n, TG_MAX_INPUTS);
        return t->status;
    }
    for (int i = 0; i < n; i++) {
        if (!(x[i] = tg__operand(t, "jvp", "input", inputs[i])) ||
            !(dx[i] = tg__operand(t, "jvp", "tangent", tangents[i])) || !seed_ok(t, x[i], dx[i], i))
            return t->status;
        for (int j = 0; j < i; j++)
            if (x[j] == x[i]) {
                tg__fail(t, TG_ERR_ARG, "jvp: input %s is seeded twice (inputs %d and %d)",
                         tg__name_text(x[i]).s, j, i);
                return t->status;
            }
    }
    clear_tangents(t);
    for (int i = 0; i < n; i++)
        x[i]->tangent = dx[i]->data;
    tg_status s = jvp_pass(t);
    clear_param_tangents(t);
    return s;
}
