/*
 * Shape and indexing: reshape, permute, expand, slice, concat, stack, pad, index_select,
 * gather, detach.
 *
 * None of these computes anything: each output element is one input element (or a constant,
 * for pad), so every VJP routes dy back to where the element came from, dx[src(o)] += dy[o].
 * Where several outputs read one input (expand, repeated indices in index_select and gather)
 * their gradients add: the VJP is a scatter-add. Loops walk the output in row-major order, so
 * accumulation order, and with it every bit of the gradient, is fixed by the shapes alone.
 *
 * Attributes are validated by the public functions before anything is recorded, with errors
 * naming the op, the tensor, its shape and the offending value.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "ops.h"

/* ---- a strided walk: n[4] dims in row-major order, the other tensor's offset base + Σ c·s ---- */

struct walk {
    size_t n[4];
    size_t s[4];
    size_t base;
};

/* Runs the body for every o (flat, row-major over n) with i = base + Σ_k c_k s_k. */
#define WALK_FOR(w, ...)                                                                           \
    do {                                                                                           \
        if (!((w).n[0] && (w).n[1] && (w).n[2] && (w).n[3]))                                       \
            break; /* no elements: do not spin through the other dims (2^40 x 0) */                \
        size_t o = 0;                                                                              \
        for (size_t c0 = 0; c0 < (w).n[0]; c0++)                                                   \
            for (size_t c1 = 0; c1 < (w).n[1]; c1++)                                               \
                for (size_t c2 = 0; c2 < (w).n[2]; c2++) {                                         \
                    size_t r_ = (w).base + c0 * (w).s[0] + c1 * (w).s[1] + c2 * (w).s[2];          \
                    for (size_t c3 = 0; c3 < (w).n[3]; c3++, o++) {                                \
                        size_t i = r_ + c3 * (w).s[3];                                             \
                        __VA_ARGS__;                                                               \
                    }                                                                              \
                }                                                                                  \
    } while (0)

/* Row-major element strides of a tensor. */
static void
strides_of(const tg_tensor *x, size_t *st)
{
    size_t s = 1;
    for (int i = x->ndim - 1; i >= 0; i--) {
        st[i] = s;
        s *= (size_t)x->dims[i];
    }
}

/* A walk over ndim dims (padded in front to 4) with strides s into the other tensor. */
static struct walk
walk_of(int ndim, const size_t *n, const size_t *s, size_t base)
{
    struct walk w = {{1, 1, 1, 1}, {0, 0, 0, 0}, base};
    for (int i = 0; i < ndim; i++) {
        w.n[4 - ndim + i] = n[i];
        w.s[4 - ndim + i] = s[i];
    }
    return w;
}

/* y[o] = x[walk(o)] forward, dx[walk(o)] += dy[o] backward. */
static void
walk_gather(const struct walk *w, const tg_node *nd)
{
    TG__DISPATCH(nd->out->dtype, T, {
        const T *x = nd->in[0]->data;
        T *y = nd->out->data;
        WALK_FOR(*w, y[o] = x[i]);
    });
}

static void
walk_scatter_add(const struct walk *w, const tg_node *nd)
{
    if (!nd->in[0]->grad)
        return;
    TG__DISPATCH(nd->out->dtype, T, {
        const T *dy = nd->out->grad;
        T *dx = nd->in[0]->grad;
        WALK_FOR(*w, dx[i] += dy[o]);
    });
}

/* The tensor behind handle x, checked (and t) before an op reads its shape; NULL on error. */
static tg_tensor *
operand(tg_tape *t, const char *op, tg_tensor *x)
{
    return t->status == TG_OK ? tg__operand(t, op, "x", x) : NULL;
}

/* dx += dy over the whole tensor (reshape; the same element order) */
static void
flat_acc(const tg_node *nd)
{
    if (!nd->in[0]->grad)
        return;
    TG__DISPATCH(nd->out->dtype, T, {
        const T *dy = nd->out->grad;
        T *dx = nd->in[0]->grad;
        for (size_t i = 0; i < nd->out->size; i++)
            dx[i] += dy[i];
    });
}

/* A view's forward: nothing when the output shares the input's data (as recorded); a copy
 * when the gradient checker re-runs the node on its own buffers. */
static tg_status
view_forward(tg_node *nd)
{
    if (nd->out->data != nd->in[0]->data)
        memcpy(nd->out->data, nd->in[0]->data, tg__nbytes(nd->in[0]));
    return TG_OK;
}

/*
 * reshape:  y = x with shape dims (same element count, same row-major order)
 *   VJP: dx += dy (element for element)
 *   JVP: ẏ = ẋ (viewed with the new shape)
 *   A view: y's data is x's, nothing is copied. Shape in attr.v[0], rank in attr.axis.
 */
static tg_status
reshape_shape(tg_node *nd, int *ndim, int64_t *dims)
{
    *ndim = nd->attr->axis;
    memcpy(dims, nd->attr->v[0], sizeof nd->attr->v[0]);
    return TG_OK;
}

static tg_status
reshape_vjp(tg_node *nd)
{
    flat_acc(nd);
    return TG_OK;
}

const tg_op tg__op_reshape = {
    .name = "reshape",
    .n_inputs = 1,
    .shape = reshape_shape,
    .forward = view_forward,
    .vjp = reshape_vjp,
    .vjp_graph = tg__vjp_graph_linear,
    .jvp = tg__jvp_linear,
    .jvp_math = "ẏ = ẋ with the new shape",
    .math = "y = x viewed with a new shape (no copy)",
    .vjp_math = "dx += dy",
    .shapes = "x → dims with the same count; one dim may be -1",
};

tg_tensor *
tg_reshape(tg_tape *t, tg_tensor *x, int ndim, const int64_t *dims)
{
    if (!t)
        return NULL;
    if (!(x = operand(t, "reshape", x)))
        return &t->nil;
    if (ndim < 1 || ndim > TG_MAX_DIMS || !dims)
        return tg__fail(t, TG_ERR_ARG, "reshape %s: rank %d%s (must be 1 … %d)",
                        tg__name_text(x).s, ndim, dims ? "" : " with dims NULL", TG_MAX_DIMS);
    struct tg__attr attr = {.axis = ndim};
    int infer = -1;
    size_t known = 1;
    for (int i = 0; i < ndim; i++) {
        if (dims[i] == -1 && infer < 0) {
            infer = i;
            continue;
        }
        if (dims[i] < 0)
            return tg__fail(t, TG_ERR_SHAPE, "reshape %s %s: dims[%d] = %" PRId64 " (%s)",
                            tg__name_text(x).s, tg__shape_text(x).s, i, dims[i],
                            dims[i] == -1 ? "only one dimension may be -1" : "negative");
        attr.v[0][i] = dims[i];
        known *= (size_t)dims[i];
    }
    if (infer >= 0) {
        if (known == 0 || x->size % known)
            return tg__fail(t, TG_ERR_SHAPE,
                            "reshape %s %s: %zu elements cannot fill dims with -1 at %d (the "
                            "other dims hold %zu per step)",
                            tg__name_text(x).s, tg__shape_text(x).s, x->size, infer, known);
        attr.v[0][infer] = (int64_t)(x->size / known);
        known = x->size;
    }
    if (known != x->size)
        return tg__fail(t, TG_ERR_SHAPE,
                        "reshape %s %s: element counts differ: %zu elements into %s = %zu",
                        tg__name_text(x).s, tg__shape_text(x).s, x->size,
                        tg__shape_dims_text(ndim, attr.v[0]).s, known);
    return tg__record_view(t, &tg__op_reshape, x, &attr);
}

/*
 * detach:  y = x, with no gradient path (stop-gradient)
 *   VJP: none (∂y/∂x is taken as 0: y is a constant to everything downstream)
 *   JVP: ẏ = 0 (the same constant: forward mode stops here too)
 *   A view of x's data; y does not require a gradient.
 */
static tg_status
detach_vjp(tg_node *nd)
{
    (void)nd;
    return TG_OK;
}

static tg_tensor * /* no gradient: the output is a constant */
detach_vjp_graph(tg_node *nd, int k, tg_tensor *dy)
{
    (void)nd, (void)k, (void)dy;
    return NULL;
}

static tg_status
detach_jvp(tg_node *nd)
{
    (void)nd; /* the output's tangent stays zero */
    return TG_OK;
}

const tg_op tg__op_detach = {
    .name = "detach",
    .n_inputs = 1,
    .forward = view_forward,
    .vjp = detach_vjp,
    .vjp_graph = detach_vjp_graph,
    .jvp = detach_jvp,
    .jvp_math = "ẏ = 0",
    .math = "y = x, a constant to everything after it",
    .vjp_math = "none (dx gets nothing)",
    .shapes = "x → the same (a view)",
};

tg_tensor *
tg_detach(tg_tape *t, tg_tensor *x)
{
    if (!t)
        return NULL;
    tg_tensor *y = tg__record_view(t, &tg__op_detach, x, NULL);
    tg__tensor(y)->requires_grad = false; /* harmless on the nil tensor */
    return y;
}

/*
 * permute:  y[c_0, …, c_{n-1}] = x[c at the positions perm says]:  y's axis k is x's axis
 *           perm[k] (attr.v[0])
 *   VJP: dx[permuted back] += dy (the inverse permutation, as a scatter through the same walk)
 *   JVP: ẏ = permute(ẋ) (linear: the forward on the tangent)
 */
static struct walk
permute_walk(const tg_node *nd)
{
    const tg_tensor *x = nd->in[0];
    size_t xs[TG_MAX_DIMS], n[TG_MAX_DIMS], s[TG_MAX_DIMS];
    strides_of(x, xs);
    for (int k = 0; k < x->ndim; k++) {
        n[k] = (size_t)x->dims[nd->attr->v[0][k]];
        s[k] = xs[nd->attr->v[0][k]];
    }
    return walk_of(x->ndim, n, s, 0);
}

static tg_status
permute_shape(tg_node *nd, int *ndim, int64_t *dims)
{
    *ndim = nd->in[0]->ndim;
    for (int k = 0; k < *ndim; k++)
        dims[k] = nd->in[0]->dims[nd->attr->v[0][k]];
    return TG_OK;
}

static tg_status
permute_forward(tg_node *nd)
{
    struct walk w = permute_walk(nd);
    walk_gather(&w, nd);
    return TG_OK;
}

static tg_status
permute_vjp(tg_node *nd)
{
    struct walk w = permute_walk(nd);
    walk_scatter_add(&w, nd);
    return TG_OK;
}

const tg_op tg__op_permute = {
    .name = "permute",
    .n_inputs = 1,
    .shape = permute_shape,
    .forward = permute_forward,
    .vjp = permute_vjp,
    .vjp_graph = tg__vjp_graph_linear,
    .jvp = tg__jvp_linear,
    .jvp_math = "ẏ = permute(ẋ)",
    .math = "y's axis k = x's axis perm[k]",
    .vjp_math = "dx += dy permuted back (inverse permutation)",
    .shapes = "x (d_0 … d_n-1) → (d_perm[0] … d_perm[n-1])",
};

tg_tensor *
tg_permute(tg_tape *t, tg_tensor *x, const int *perm)
{
    if (!t)
        return NULL;
    if (!(x = operand(t, "permute", x)))
        return &t->nil;
    if (!perm)
        return tg__fail(t, TG_ERR_ARG, "permute %s: perm is NULL", tg__name_text(x).s);
    struct tg__attr attr = {0};
    unsigned seen = 0;
    for (int k = 0; k < x->ndim; k++) {
        int a = perm[k];
        bool in_range = tg__axis_norm(&a, x->ndim);
        if (!in_range || (seen >> a & 1))
            return tg__fail(t, TG_ERR_ARG,
                            "permute %s %s: perm[%d] = %d %s (perm must list each of 0 … %d "
                            "once)",
                            tg__name_text(x).s, tg__shape_text(x).s, k, perm[k],
                            in_range ? "repeats an axis" : "is out of range", x->ndim - 1);
        seen |= 1u << a;
        attr.v[0][k] = a;
    }
    return tg__record(t, &tg__op_permute, &x, 1, &attr, NULL);
}

/*
 * expand (broadcast_to):  y = x repeated along its size-1 axes (and new leading axes) to dims
 *   VJP: dx += Σ over the repeated axes of dy (the broadcast operand's rule)
 *   JVP: ẏ = expand(ẋ) (linear: the forward on the tangent)
 */
static struct walk
expand_walk(const tg_node *nd)
{
    const tg_tensor *x = nd->in[0], *y = nd->out;
    size_t xs[TG_MAX_DIMS], n[TG_MAX_DIMS], s[TG_MAX_DIMS];
    strides_of(x, xs);
    for (int k = 0; k < y->ndim; k++) {
        int kx = k - (y->ndim - x->ndim);
        n[k] = (size_t)y->dims[k];
        s[k] = kx >= 0 && x->dims[kx] == y->dims[k] ? xs[kx] : 0;
    }
    return walk_of(y->ndim, n, s, 0);
}

static tg_status
expand_shape(tg_node *nd, int *ndim, int64_t *dims)
{
    *ndim = nd->attr->axis;
    memcpy(dims, nd->attr->v[0], sizeof nd->attr->v[0]);
    return TG_OK;
}

static tg_status
expand_forward(tg_node *nd)
{
    struct walk w = expand_walk(nd);
    walk_gather(&w, nd);
    return TG_OK;
}

static tg_status
expand_vjp(tg_node *nd)
{
    struct walk w = expand_walk(nd);
    walk_scatter_add(&w, nd);
    return TG_OK;
}

const tg_op tg__op_expand = {
    .name = "expand",
    .n_inputs = 1,
    .shape = expand_shape,
    .forward = expand_forward,
    .vjp = expand_vjp,
    .vjp_graph = tg__vjp_graph_linear,
    .jvp = tg__jvp_linear,
    .jvp_math = "ẏ = expand(ẋ)",
    .math = "y = x repeated along its size-1 (and new leading) axes",
    .vjp_math = "dx += Σ over the repeated axes of dy",
    .shapes = "x → dims, aligned from the last axis, each size of x equal or 1",
};

tg_tensor *
tg_expand(tg_tape *t, tg_tensor *x, int ndim, const int64_t *dims)
{
    if (!t)
        return NULL;
    if (!(x = operand(t, "expand", x)))
        return &t->nil;
    if (ndim < x->ndim || ndim > TG_MAX_DIMS || !dims)
        return tg__fail(t, TG_ERR_SHAPE, "expand %s %s: to rank %d%s (must be %d … %d)",
                        tg__name_text(x).s, tg__shape_text(x).s, ndim,
                        dims ? "" : " with dims NULL", x->ndim, TG_MAX_DIMS);
    struct tg__attr attr = {.axis = ndim};
    for (int k = 0; k < ndim; k++) {
        int kx = k - (ndim - x->ndim);
        int64_t d = dims[k];
        if (d == -1 && kx >= 0)
            d = x->dims[kx];
        if (d < 0 || (kx >= 0 && x->dims[kx] != 1 && x->dims[kx] != d))
            return tg__fail(t, TG_ERR_SHAPE,
                            "expand %s %s: dims[%d] = %" PRId64 " is incompatible (x's size "
                            "there is %" PRId64 "; only size-1 axes expand)",
                            tg__name_text(x).s, tg__shape_text(x).s, k, dims[k],
                            kx >= 0 ? x->dims[kx] : (int64_t)1);
        attr.v[0][k] = d;
    }
    return tg__record(t, &tg__op_expand, &x, 1, &attr, NULL);
}

/*
 * slice:  y[c] = x[start + c ⊙ step]   per axis (attr.v[0] start, v[1] stop, v[2] step,
 *         normalized: 0 <= start <= stop <= size, step >= 1)
 *   VJP: dx[start + c ⊙ step] += dy[c]; the other elements of x get nothing
 *   JVP: ẏ = ẋ[start : stop : step] (linear: the forward on the tangent)
 */
static struct walk
slice_walk(const tg_node *nd)
{
    const tg_tensor *x = nd->in[0];
    size_t xs[TG_MAX_DIMS], n[TG_MAX_DIMS], s[TG_MAX_DIMS], base = 0;
    strides_of(x, xs);
    for (int k = 0; k < x->ndim; k++) {
        n[k] = (size_t)nd->out->dims[k];
        s[k] = xs[k] * (size_t)nd->attr->v[2][k];
        base += (size_t)nd->attr->v[0][k] * xs[k];
    }
    return walk_of(x->ndim, n, s, base);
}

static tg_status
slice_shape(tg_node *nd, int *ndim, int64_t *dims)
{
    *ndim = nd->in[0]->ndim;
    for (int k = 0; k < *ndim; k++) {
        int64_t len = nd->attr->v[1][k] - nd->attr->v[0][k], step = nd->attr->v[2][k];
        dims[k] = len == 0 ? 0 : (len - 1) / step + 1; /* ⌈len / step⌉ without overflow */
    }
    return TG_OK;
}

static tg_status
slice_forward(tg_node *nd)
{
    struct walk w = slice_walk(nd);
    walk_gather(&w, nd);
    return TG_OK;
}

static tg_status
slice_vjp(tg_node *nd)
{
    struct walk w = slice_walk(nd);
    walk_scatter_add(&w, nd);
    return TG_OK;
}

const tg_op tg__op_slice = {
    .name = "slice",
    .n_inputs = 1,
    .shape = slice_shape,
    .forward = slice_forward,
    .vjp = slice_vjp,
    .vjp_graph = tg__vjp_graph_linear,
    .jvp = tg__jvp_linear,
    .jvp_math = "ẏ = ẋ[start:stop:step]",
    .math = "y[c] = x[start + c·step] per axis",
    .vjp_math = "dx[start + c·step] += dy[c]",
    .shapes = "axis k: ⌈(stop - start) / step⌉",
};

tg_tensor *
tg_slice(tg_tape *t, tg_tensor *x, const int64_t *start, const int64_t *stop,
         const int64_t *step)
{
    if (!t)
        return NULL;
    if (!(x = operand(t, "slice", x)))
        return &t->nil;
    if (!start || !stop)
        return tg__fail(t, TG_ERR_ARG, "slice %s: %s is NULL", tg__name_text(x).s,
                        start ? "stop" : "start");
    struct tg__attr attr = {0};
    for (int k = 0; k < x->ndim; k++) {
        int64_t n = x->dims[k], a = start[k], b = stop[k], s = step ? step[k] : 1;
        if (s < 1)
            return tg__fail(t, TG_ERR_ARG,
                            "slice %s %s: axis %d: step %" PRId64 " (must be >= 1)",
                            tg__name_text(x).s, tg__shape_text(x).s, k, s);
        if (b == TG_END)
            b = n;
        a = a < 0 ? a + n : a;
        b = b < 0 ? b + n : b;
        if (a < 0 || a > n || b < 0 || b > n || a > b)
            return tg__fail(t, TG_ERR_SHAPE,
                            "slice %s %s: axis %d: [%" PRId64 ", %" PRId64 ") is out of bounds "
                            "for size %" PRId64 " (after negative bounds count from the end, "
                            "0 <= start <= stop <= %" PRId64 ")",
                            tg__name_text(x).s, tg__shape_text(x).s, k, start[k],
                            stop[k] == TG_END ? n : stop[k], n, n);
        attr.v[0][k] = a, attr.v[1][k] = b, attr.v[2][k] = s;
    }
    return tg__record(t, &tg__op_slice, &x, 1, &attr, NULL);
}

/*
 * pad:  y = x placed at offset `before` in a tensor of `value`, per axis (attr.v[0] before,
 *       v[1] after, scale the value)
 *   VJP: dx[c] += dy[before + c]; the padding is constant and sends nothing back
 *   JVP: ẏ = pad(ẋ) with zeros: the forward on the tangent with the value 0 (the constant
 *   has no tangent)
 */
static struct walk
pad_walk(const tg_node *nd) /* over x, into y */
{
    const tg_tensor *x = nd->in[0];
    size_t ys[TG_MAX_DIMS], n[TG_MAX_DIMS], base = 0;
    strides_of(nd->out, ys);
    for (int k = 0; k < x->ndim; k++) {
        n[k] = (size_t)x->dims[k];
        base += (size_t)nd->attr->v[0][k] * ys[k];
    }
    return walk_of(x->ndim, n, ys, base);
}

static tg_status
pad_shape(tg_node *nd, int *ndim, int64_t *dims)
{
    const tg_tensor *x = nd->in[0];
    *ndim = x->ndim;
    for (int k = 0; k < x->ndim; k++)
        dims[k] = x->dims[k] + nd->attr->v[0][k] + nd->attr->v[1][k];
    return TG_OK;
}

static tg_status
pad_forward(tg_node *nd)
{
    struct walk w = pad_walk(nd);
    TG__DISPATCH(nd->out->dtype, T, {
        const T *x = nd->in[0]->data;
        T *y = nd->out->data;
        for (size_t o = 0; o < nd->out->size; o++)
            y[o] = (T)nd->attr->scale;
        WALK_FOR(w, y[i] = x[o]);
    });
    return TG_OK;
}

static tg_status
pad_vjp(tg_node *nd)
{
    if (!nd->in[0]->grad)
        return TG_OK;
    struct walk w = pad_walk(nd);
    TG__DISPATCH(nd->out->dtype, T, {
        const T *dy = nd->out->grad;
        T *dx = nd->in[0]->grad;
        WALK_FOR(w, dx[o] += dy[i]);
    });
    return TG_OK;
}

static tg_status
pad_jvp(tg_node *nd)
{
    tg_node zero_value = *nd;
    struct tg__attr attr = *nd->attr;
    attr.scale = 0;
    zero_value.attr = &attr;
    return tg__jvp_linear(&zero_value);
}

const tg_op tg__op_pad = {
    .name = "pad",
    .n_inputs = 1,
    .shape = pad_shape,
    .forward = pad_forward,
    .vjp = pad_vjp,
    .vjp_graph = tg__vjp_graph_linear,
    .jvp = pad_jvp,
    .jvp_math = "ẏ = pad(ẋ) with 0",
    .math = "y = x surrounded by a constant, before[k]/after[k] per axis",
    .vjp_math = "dx[c] += dy[before + c]",
    .shapes = "axis k: before[k] + d_k + after[k]",
};

tg_tensor *
tg_pad(tg_tape *t, tg_tensor *x, const int64_t *before, const int64_t *after, double value)
{
    if (!t)
        return NULL;
    if (!(x = operand(t, "pad", x)))
        return &t->nil;
    if (!before || !after)
        return tg__fail(t, TG_ERR_ARG, "pad %s: %s is NULL", tg__name_text(x).s,
                        before ? "after" : "before");
    struct tg__attr attr = {.scale = value};
    for (int k = 0; k < x->ndim; k++) {
        if (before[k] < 0 || after[k] < 0 || before[k] > INT64_MAX / 4 ||
            after[k] > INT64_MAX / 4 || x->dims[k] > INT64_MAX / 2)
            return tg__fail(t, TG_ERR_ARG,
                            "pad %s %s: axis %d: widths %" PRId64 " before, %" PRId64
                            " after (must be >= 0, and the padded size must fit)",
                            tg__name_text(x).s, tg__shape_text(x).s, k, before[k], after[k]);
        attr.v[0][k] = before[k], attr.v[1][k] = after[k];
    }
    return tg__record(t, &tg__op_pad, &x, 1, &attr, NULL);
}

/*
 * concat:  y = [x_0, x_1, …, x_{n-1}] along axis (attr.axis): x_j occupies the positions
 *          off_j … off_j + d_j - 1 of that axis, off_j = Σ_{i<j} d_i
 *   VJP: dx_j += dy at x_j's positions
 *   JVP: ẏ = the join of the ẋ_j (linear: the forward on the tangents, zeros for inputs
 *   without one)
 * stack:   the same with a new axis of size 1 inserted in every x_j at `axis` first (so
 *          stack = concat of the reshaped inputs); n inputs of one shape.
 * Seen as (outer x run): each input contributes one contiguous run of d_j · inner elements
 * per outer index, copied in order.
 */
static size_t
outer_of(const tg_tensor *x, int axis) /* Π dims before axis */
{
    size_t o = 1;
    for (int i = 0; i < axis; i++)
        o *= (size_t)x->dims[i];
    return o;
}

static tg_status
join(tg_node *nd, bool backward)
{
    int axis = nd->attr->axis; /* of the output */
    size_t outer = outer_of(nd->out, axis), out_run = nd->out->size / (outer ? outer : 1);
    size_t at = 0;
    for (int j = 0; j < nd->n_in; j++) {
        const tg_tensor *x = nd->in[j];
        size_t run = x->size / (outer ? outer : 1);
        if (backward && !x->grad) {
            at += run;
            continue;
        }
        TG__DISPATCH(nd->out->dtype, T, {
            for (size_t o = 0; o < outer && run; o++) {
                if (backward) {
                    T *dx = (T *)x->grad + o * run;
                    const T *dy = (const T *)nd->out->grad + o * out_run + at;
                    for (size_t i = 0; i < run; i++)
                        dx[i] += dy[i];
                } else {
                    memcpy((T *)nd->out->data + o * out_run + at, (const T *)x->data + o * run,
                           run * sizeof(T));
                }
            }
        });
        at += run;
    }
    return TG_OK;
}

static tg_status
join_forward(tg_node *nd)
{
    return join(nd, false);
}

static tg_status
join_vjp(tg_node *nd)
{
    return join(nd, true);
}

static tg_status
concat_shape(tg_node *nd, int *ndim, int64_t *dims)
{
    *ndim = nd->in[0]->ndim;
    memcpy(dims, nd->in[0]->dims, sizeof nd->in[0]->dims);
    dims[nd->attr->axis] = 0;
    for (int j = 0; j < nd->n_in; j++)
        dims[nd->attr->axis] += nd->in[j]->dims[nd->attr->axis];
    return TG_OK;
}

static tg_status
stack_shape(tg_node *nd, int *ndim, int64_t *dims)
{
    const tg_tensor *x = nd->in[0];
    *ndim = x->ndim + 1;
    for (int i = 0, k = 0; i < *ndim; i++)
        dims[i] = i == nd->attr->axis ? nd->n_in : x->dims[k++];
    return TG_OK;
}

const tg_op tg__op_concat = {
    .name = "concat",
    .n_inputs = TG_VARIADIC,
    .shape = concat_shape,
    .forward = join_forward,
    .vjp = join_vjp,
    .vjp_graph = tg__vjp_graph_linear,
    .jvp = tg__jvp_linear,
    .jvp_math = "ẏ = the join of the ẋ_j",
    .math = "y = [x_0, …, x_n-1] along axis",
    .vjp_math = "dx_j += dy at x_j's positions",
    .shapes = "n inputs (1 … 64) equal but along axis → the sum of their sizes there",
};

const tg_op tg__op_stack = {
    .name = "stack",
    .n_inputs = TG_VARIADIC,
    .shape = stack_shape,
    .forward = join_forward,
    .vjp = join_vjp,
    .vjp_graph = tg__vjp_graph_linear,
    .jvp = tg__jvp_linear,
    .jvp_math = "ẏ = the join of the ẋ_j",
    .math = "y[…, j, …] = x_j along a new axis",
    .vjp_math = "dx_j += dy[…, j, …]",
    .shapes = "n inputs (1 … 64) of one shape → a new axis of size n at axis",
};

static tg_tensor *
record_join(tg_tape *t, bool stack, tg_tensor *const *xs, int n, int axis)
{
    const char *op = stack ? "stack" : "concat";
    if (!t)
        return NULL;
    if (t->status != TG_OK)
        return &t->nil;
    if (!xs || n < 1 || n > TG_MAX_INPUTS)
        return tg__fail(t, TG_ERR_ARG, "%s: %d inputs%s (1 … %d)", op, n,
                        xs ? "" : " with the array NULL", TG_MAX_INPUTS);
    tg_tensor *in[TG_MAX_INPUTS];
    for (int j = 0; j < n; j++) {
        char arg[32];
        snprintf(arg, sizeof arg, "input %d", j);
        if (!(in[j] = tg__operand(t, op, arg, xs[j])))
            return &t->nil;
    }
    xs = in;
    const tg_tensor *x0 = xs[0];
    int a = axis;
    if (!tg__axis_norm(&a, x0->ndim + (stack ? 1 : 0)) || (stack && x0->ndim + 1 > TG_MAX_DIMS))
        return tg__fail(t, TG_ERR_ARG, "%s: axis %d is out of range for input 0 %s %s%s", op,
                        axis, tg__name_text(x0).s, tg__shape_text(x0).s,
                        stack ? " (stack adds an axis; the result has at most TG_MAX_DIMS)"
                              : "");
    for (int j = 1; j < n; j++) {
        const tg_tensor *x = xs[j];
        int bad = -1;
        if (x->ndim != x0->ndim)
            return tg__fail(t, TG_ERR_SHAPE,
                            "%s: input %d %s %s has rank %d, input 0 %s %s has rank %d", op, j,
                            tg__name_text(x).s, tg__shape_text(x).s, x->ndim,
                            tg__name_text(x0).s, tg__shape_text(x0).s, x0->ndim);
        for (int k = 0; k < x->ndim && bad < 0; k++)
            if (x->dims[k] != x0->dims[k] && (stack || k != a))
                bad = k;
        if (bad >= 0)
            return tg__fail(t, TG_ERR_SHAPE,
                            "%s along axis %d: input %d %s %s differs from input 0 %s %s in "
                            "dimension %d (%" PRId64 " vs %" PRId64 ")%s",
                            op, a, j, tg__name_text(x).s, tg__shape_text(x).s,
                            tg__name_text(x0).s, tg__shape_text(x0).s, bad, x->dims[bad],
                            x0->dims[bad],
                            stack ? "; stack needs equal shapes"
                                  : "; all but the joined axis must match");
    }
    int64_t total = 0; /* concat: the joined size, which must not overflow */
    for (int j = 0; !stack && j < n; j++) {
        if (xs[j]->dims[a] > INT64_MAX - total)
            return tg__fail(t, TG_ERR_SHAPE, "concat along axis %d: the joined size overflows",
                            a);
        total += xs[j]->dims[a];
    }
    struct tg__attr attr = {.axis = a};
    return tg__record(t, stack ? &tg__op_stack : &tg__op_concat, xs, n, &attr, NULL);
}

tg_tensor *
tg_concat(tg_tape *t, tg_tensor *const *xs, int n, int axis)
{
    return record_join(t, false, xs, n, axis);
}

tg_tensor *
tg_stack(tg_tape *t, tg_tensor *const *xs, int n, int axis)
{
    return record_join(t, true, xs, n, axis);
}

/*
 * index_select:  y[o, j, i] = x[o, index[j], i]   (x seen as (outer x d x inner) around axis;
 *                index in attr.index, n = attr.n_index entries, each in [0, d))
 *   VJP: dx[o, index[j], i] += dy[o, j, i]: a scatter-add, so an index that appears k times
 *   receives the sum of its k gradients (an embedding row used by k tokens).
 *   JVP: ẏ[o, j, i] = ẋ[o, index[j], i] (linear: the forward on the tangent)
 */
struct isel {
    size_t outer, d, inner;
};

static struct isel
isel_of(const tg_node *nd)
{
    const tg_tensor *x = nd->in[0];
    struct isel s = {outer_of(x, nd->attr->axis), (size_t)x->dims[nd->attr->axis], 1};
    for (int i = nd->attr->axis + 1; i < x->ndim; i++)
        s.inner *= (size_t)x->dims[i];
    return s;
}

static tg_status
index_select_shape(tg_node *nd, int *ndim, int64_t *dims)
{
    *ndim = nd->in[0]->ndim;
    memcpy(dims, nd->in[0]->dims, sizeof nd->in[0]->dims);
    dims[nd->attr->axis] = (int64_t)nd->attr->n_index;
    return TG_OK;
}

static tg_status
index_select_forward(tg_node *nd)
{
    if (nd->out->size == 0) /* nothing to copy (and outer may be huge: no index, or inner 0) */
        return TG_OK;
    struct isel s = isel_of(nd);
    size_t n = nd->attr->n_index;
    TG__DISPATCH(nd->out->dtype, T, {
        const T *x = nd->in[0]->data;
        T *y = nd->out->data;
        for (size_t o = 0; o < s.outer; o++)
            for (size_t j = 0; j < n; j++)
                memcpy(y + (o * n + j) * s.inner,
                       x + (o * s.d + (size_t)nd->attr->index[j]) * s.inner, s.inner * sizeof(T));
    });
    return TG_OK;
}

static tg_status
index_select_vjp(tg_node *nd)
{
    if (!nd->in[0]->grad || nd->out->size == 0)
        return TG_OK;
    struct isel s = isel_of(nd);
    size_t n = nd->attr->n_index;
    TG__DISPATCH(nd->out->dtype, T, {
        const T *dy = nd->out->grad;
        T *dx = nd->in[0]->grad;
        for (size_t o = 0; o < s.outer; o++)
            for (size_t j = 0; j < n; j++) {
                T *d = dx + (o * s.d + (size_t)nd->attr->index[j]) * s.inner;
                const T *g = dy + (o * n + j) * s.inner;
                for (size_t i = 0; i < s.inner; i++)
                    d[i] += g[i];
            }
    });
    return TG_OK;
}

const tg_op tg__op_index_select = {
    .name = "index_select",
    .n_inputs = 1,
    .shape = index_select_shape,
    .forward = index_select_forward,
    .vjp = index_select_vjp,
    .vjp_graph = tg__vjp_graph_linear,
    .jvp = tg__jvp_linear,
    .jvp_math = "ẏ = ẋ[…, index, …]",
    .math = "y[…, j, …] = x[…, index[j], …] along axis",
    .vjp_math = "dx[…, index[j], …] += dy[…, j, …] (scatter-add: repeats accumulate)",
    .shapes = "axis: d → n = the number of indices",
};

/* Copies n indices into the arena after checking each is in [0, d); the error names the
 * position and the value. */
static int64_t *
copy_indices(tg_tape *t, const char *op, const tg_tensor *x, int axis, const int64_t *index,
             size_t n)
{
    int64_t d = x->dims[axis];
    for (size_t j = 0; j < n; j++)
        if (index[j] < 0 || index[j] >= d) {
            tg__fail(t, TG_ERR_ARG,
                     "%s %s %s along axis %d: index[%zu] = %" PRId64 " is out of range [0, %"
                     PRId64 ")",
                     op, tg__name_text(x).s, tg__shape_text(x).s, axis, j, index[j], d);
            return NULL;
        }
    return tg__tape_copy(t, op, index, n, sizeof *index);
}

tg_tensor *
tg_index_select(tg_tape *t, tg_tensor *x, int axis, const int64_t *index, size_t n)
{
    if (!t)
        return NULL;
    if (!(x = operand(t, "index_select", x)))
        return &t->nil;
    int a = axis;
    if (!tg__axis_norm(&a, x->ndim))
        return tg__fail(t, TG_ERR_ARG, "index_select %s: axis %d is out of range for shape %s",
                        tg__name_text(x).s, axis, tg__shape_text(x).s);
    if (n > 0 && !index)
        return tg__fail(t, TG_ERR_ARG, "index_select %s: index is NULL", tg__name_text(x).s);
    if (n > (size_t)INT64_MAX)
        return tg__fail(t, TG_ERR_ARG, "index_select %s: %zu indices", tg__name_text(x).s, n);
    struct tg__attr attr = {.axis = a, .n_index = n};
    attr.index = copy_indices(t, "index_select", x, a, index, n);
    if (!attr.index)
        return &t->nil;
    return tg__record(t, &tg__op_index_select, &x, 1, &attr, NULL);
}

/*
 * gather (torch.gather):  y[c] = x[c with its axis coordinate replaced by index[c]]
 *   index has y's shape (attr.v[0]), the rank of x, and sizes <= x's off the axis.
 *   VJP: dx[c with index[c] on the axis] += dy[c]  (scatter-add; repeats accumulate)
 *   JVP: ẏ[c] = ẋ[c with index[c] on the axis] (linear: the forward on the tangent)
 */
static struct walk
gather_walk(const tg_node *nd)
{
    const tg_tensor *x = nd->in[0];
    size_t xs[TG_MAX_DIMS], n[TG_MAX_DIMS], s[TG_MAX_DIMS];
    strides_of(x, xs);
    for (int k = 0; k < x->ndim; k++) {
        n[k] = (size_t)nd->out->dims[k];
        s[k] = k == nd->attr->axis ? 0 : xs[k];
    }
    return walk_of(x->ndim, n, s, 0);
}

static size_t
axis_stride(const tg_tensor *x, int axis)
{
    size_t s = 1;
    for (int i = axis + 1; i < x->ndim; i++)
        s *= (size_t)x->dims[i];
    return s;
}

static tg_status
gather_shape(tg_node *nd, int *ndim, int64_t *dims)
{
    *ndim = nd->in[0]->ndim;
    memcpy(dims, nd->attr->v[0], sizeof nd->attr->v[0]);
    return TG_OK;
}

static tg_status
gather_forward(tg_node *nd)
{
    struct walk w = gather_walk(nd);
    size_t as = axis_stride(nd->in[0], nd->attr->axis);
    const int64_t *idx = nd->attr->index;
    TG__DISPATCH(nd->out->dtype, T, {
        const T *x = nd->in[0]->data;
        T *y = nd->out->data;
        WALK_FOR(w, y[o] = x[i + (size_t)idx[o] * as]);
    });
    return TG_OK;
}

static tg_status
gather_vjp(tg_node *nd)
{
    if (!nd->in[0]->grad)
        return TG_OK;
    struct walk w = gather_walk(nd);
    size_t as = axis_stride(nd->in[0], nd->attr->axis);
    const int64_t *idx = nd->attr->index;
    TG__DISPATCH(nd->out->dtype, T, {
        const T *dy = nd->out->grad;
        T *dx = nd->in[0]->grad;
        WALK_FOR(w, dx[i + (size_t)idx[o] * as] += dy[o]);
    });
    return TG_OK;
}

const tg_op tg__op_gather = {
    .name = "gather",
    .n_inputs = 1,
    .shape = gather_shape,
    .forward = gather_forward,
    .vjp = gather_vjp,
    .vjp_graph = tg__vjp_graph_linear,
    .jvp = tg__jvp_linear,
    .jvp_math = "ẏ[c] = ẋ[c, index[c] on the axis]",
    .math = "y[c] = x[c with c_axis = index[c]] (torch.gather)",
    .vjp_math = "dx[c with c_axis = index[c]] += dy[c] (scatter-add)",
    .shapes = "index's shape (x's rank, sizes <= x's off the axis) → y",
};

tg_tensor *
tg_gather(tg_tape *t, tg_tensor *x, int axis, const int64_t *index, int ndim,
          const int64_t *dims)
{
    if (!t)
        return NULL;
    if (!(x = operand(t, "gather", x)))
        return &t->nil;
    int a = axis;
    if (!tg__axis_norm(&a, x->ndim))
        return tg__fail(t, TG_ERR_ARG, "gather %s: axis %d is out of range for shape %s",
                        tg__name_text(x).s, axis, tg__shape_text(x).s);
    if (ndim != x->ndim || !dims)
        return tg__fail(t, TG_ERR_SHAPE, "gather %s %s: index has rank %d%s; it must be %d",
                        tg__name_text(x).s, tg__shape_text(x).s, ndim,
                        dims ? "" : " (dims NULL)", x->ndim);
    struct tg__attr attr = {.axis = a};
    size_t n = 1;
    for (int k = 0; k < ndim; k++) {
        if (dims[k] < 0 || (k != a && dims[k] > x->dims[k]))
            return tg__fail(t, TG_ERR_SHAPE,
                            "gather %s %s: index shape %s: dimension %d is %" PRId64
                            " (must be 0 … %" PRId64 " off the gathered axis)",
                            tg__name_text(x).s, tg__shape_text(x).s,
                            tg__shape_dims_text(ndim, dims).s, k, dims[k], x->dims[k]);
        if (dims[k] && n > SIZE_MAX / 64 / (size_t)dims[k])
            return tg__fail(t, TG_ERR_SHAPE, "gather %s: index shape %s is too large",
                            tg__name_text(x).s, tg__shape_dims_text(ndim, dims).s);
        attr.v[0][k] = dims[k];
        n *= (size_t)dims[k];
    }
    if (n > 0 && !index)
        return tg__fail(t, TG_ERR_ARG, "gather %s: index is NULL", tg__name_text(x).s);
    attr.index = copy_indices(t, "gather", x, a, index, n);
    attr.n_index = n;
    if (!attr.index)
        return &t->nil;
    return tg__record(t, &tg__op_gather, &x, 1, &attr, NULL);
}
