/*
 * Reductions over a set of axes: sum, mean, max, min, var (logsumexp is with the softmax
 * family in softmax.c). The reduced axes are attr.axes (a bit mask); keepdims keeps them as
 * size 1 (the result then broadcasts back against the input), else they are removed (a
 * reduction to one element without keepdims has shape (1)). tg_sum/tg_mean reduce everything
 * with keepdims ((1 x 1) for a matrix), tg_sum_axis/tg_mean_axis one axis with keepdims.
 *
 * Sums accumulate in double whatever the dtype: the mean of 10^7 float32 terms would otherwise
 * be dominated by rounding.
 *
 * Summation order (fixed by the shape alone, so results are bit-identical for any thread
 * count and any vector width):
 *   - over everything, or along an axis with nothing after it (a row): the lane tree of
 *     loops.h over blocks of TG__GRAIN elements, block sums added in block order. Over
 *     everything the blocks are tg__parallel_for's chunks: each writes its partial into the
 *     node's scratch and the partials are added in order afterwards; rows are split across
 *     threads by whole rows;
 *   - along an axis with dimensions after it: y[o, i] = Σ_k x[o, k, i] adds k in order, with
 *     the i contiguous in the vectorized loop; threads take whole output blocks (o, 1024 i's).
 * The VJP is a broadcast copy, dx += c dy, in fixed element chunks.
 */
#include <string.h>
#include <tgmath.h>

#include "../kernels/kernels.h"
#include "loops.h"
#include "ops.h"

enum { COLS_BLOCK = 1024 }; /* output columns per block along an inner axis (8 KiB of double) */

/* The input seen as (outer x len x inner) around the reduced axis; axis -1 reduces all. */
struct red {
    size_t outer, len, inner;
};

static struct red
red_of(const tg_node *nd)
{
    const tg_tensor *x = nd->in[0];
    struct red r = {1, 1, 1};
    unsigned m = nd->attr->axes;
    int lo = 0, hi = x->ndim - 1;
    while (lo < x->ndim && !(m >> lo & 1))
        lo++;
    while (hi >= 0 && !(m >> hi & 1))
        hi--;
    for (int i = 0; i < x->ndim; i++)
        *(i < lo ? &r.outer : i > hi ? &r.inner : &r.len) *= (size_t)x->dims[i];
    return r;
}

/* The reduced axes are one run lo … hi (then (outer x len x inner) describes the reduction). */
static bool
red_contiguous(const tg_node *nd)
{
    unsigned m = nd->attr->axes;
    while (m && !(m & 1))
        m >>= 1;
    return (m & (m + 1)) == 0;
}

bool
tg__axes_mask(tg_tape *t, const char *op, const tg_tensor *x, const int *axes, int n_axes,
              unsigned *mask)
{
    if (t->status != TG_OK)
        return false;
    if (!(x = tg__operand(t, op, "x", x)))
        return false;
    if (n_axes < 0 || (n_axes > 0 && !axes)) {
        tg__fail(t, TG_ERR_ARG, "%s %s: %d axes given%s", op, tg__name_text(x).s, n_axes,
                 n_axes > 0 ? " but the axes array is NULL" : "");
        return false;
    }
    if (n_axes == 0) {
        *mask = (1u << x->ndim) - 1;
        return true;
    }
    unsigned m = 0;
    for (int i = 0; i < n_axes; i++) {
        int a = axes[i];
        if (!tg__axis_norm(&a, x->ndim)) {
            tg__fail(t, TG_ERR_ARG,
                     "%s %s: axis %d (axes[%d]) is out of range for shape %s (valid: %d … %d)",
                     op, tg__name_text(x).s, axes[i], i, tg__shape_text(x).s, -x->ndim,
                     x->ndim - 1);
            return false;
        }
        if (m >> a & 1) {
            tg__fail(t, TG_ERR_ARG, "%s %s: axis %d is given twice (axes[%d] = %d) for shape %s",
                     op, tg__name_text(x).s, a, i, axes[i], tg__shape_text(x).s);
            return false;
        }
        m |= 1u << a;
    }
    *mask = m;
    return true;
}

tg_status
tg__reduce_shape(tg_node *nd, int *ndim, int64_t *dims)
{
    const tg_tensor *x = nd->in[0];
    unsigned m = nd->attr->axes;
    int k = 0;
    for (int i = 0; i < x->ndim; i++)
        if (!(m >> i & 1))
            dims[k++] = x->dims[i];
        else if (nd->attr->keepdims)
            dims[k++] = 1;
    if (k == 0)
        dims[k++] = 1;
    *ndim = k;
    return TG_OK;
}

/* One run summed whole (everything, or one row of a single-row input): split into chunks. */
static bool
red_flat(struct red r)
{
    return r.outer == 1 && r.inner == 1;
}

/* sum and mean: the reduced count must be > 0 for mean (the mean of nothing is 0/0) */
static tg_status
reduce_shape(tg_node *nd, int *ndim, int64_t *dims)
{
    const tg_tensor *x = nd->in[0];
    if (nd->op == &tg__op_mean && red_of(nd).len == 0) {
        tg__fail(nd->tape, TG_ERR_SHAPE, "mean %s: empty input %s (the mean of nothing is 0/0)",
                 tg__name_text(x).s, tg__shape_text(x).s);
        return TG_ERR_SHAPE;
    }
    return tg__reduce_shape(nd, ndim, dims);
}

/* Scratch: one double per chunk for a flat sum; one per output element for a set of axes
 * that is not one run. */
static size_t
reduce_scratch(const tg_node *nd)
{
    struct red r = red_of(nd);
    if (!red_contiguous(nd))
        return nd->out->size * sizeof(double); /* the generic loop's accumulators */
    return red_flat(r) ? tg__parallel_chunks(r.len, TG__GRAIN) * sizeof(double) : 0;
}

/*
 * Kernels, by dtype:
 *   lanesum:  Σ_i x[i] in double, lane tree (runs of at most TG__GRAIN)
 *   colacc:   acc[i] += Σ_k x[k·ld + i] in double, k in order
 *   bcast1:   d[r][j] += c · s[r]          (rows of ncols; the reduced axis is the last one)
 *   axpy:     d[j] += c · s[j]
 */
#define REDUCE_KERNELS(T, SFX)                                                                     \
    TG__DEFINE_LANE_SUM(lanesum_##SFX, double, (double)x[i], const T *restrict x)                  \
    TG__VEC_CLONES static void colacc_##SFX(double *restrict acc, const T *restrict x, size_t ld,  \
                                            size_t len, size_t n)                                  \
    {                                                                                              \
        for (size_t k = 0; k < len; k++)                                                           \
            for (size_t i = 0; i < n; i++)                                                         \
                acc[i] += (double)x[k * ld + i];                                                   \
    }                                                                                              \
    TG__VEC_CLONES static void bcast1_##SFX(T *restrict d, T c, const T *restrict s,               \
                                            size_t nrows, size_t ncols)                            \
    {                                                                                              \
        for (size_t r = 0; r < nrows; r++) {                                                       \
            const T v = c * s[r];                                                                  \
            for (size_t j = 0; j < ncols; j++)                                                     \
                d[r * ncols + j] += v;                                                             \
        }                                                                                          \
    }                                                                                              \
    TG__VEC_CLONES static void axpy_##SFX(T *restrict d, T c, const T *restrict s, size_t n)       \
    {                                                                                              \
        for (size_t j = 0; j < n; j++)                                                             \
            d[j] += c * s[j];                                                                      \
    }                                                                                              \
    /* Σ x[0 … n) in blocks of TG__GRAIN, block sums in order */                                 \
    static double blocksum_##SFX(const T *x, size_t n)                                             \
    {                                                                                              \
        double s = 0;                                                                              \
        for (size_t b = 0; b < n; b += TG__GRAIN)                                                  \
            s += lanesum_##SFX(x + b, n - b < TG__GRAIN ? n - b : TG__GRAIN);                      \
        return s;                                                                                  \
    }

REDUCE_KERNELS(float, f32)
REDUCE_KERNELS(double, f64)

struct red_job {
    const tg_node *nd;
    struct red r;
    double c; /* 1, or 1/len for mean */
    size_t col_blocks, grain;
};

/* Flat: the partial sum of chunk [e0, e1). */
static void
red_flat_chunk(size_t e0, size_t e1, void *vctx)
{
    const struct red_job *j = vctx;
    const tg_node *nd = j->nd;
    double *part = (double *)nd->scratch + e0 / TG__GRAIN;
    if (nd->out->dtype == TG_F32)
        *part = lanesum_f32((const float *)nd->in[0]->data + e0, e1 - e0);
    else
        *part = lanesum_f64((const double *)nd->in[0]->data + e0, e1 - e0);
}

/* Rows [o0, o1) of (outer x len): y[o] = c · Σ_k x[o, k]. */
#define RED_ROWS_CHUNK(T, SFX)                                                                     \
    static void red_rows_chunk_##SFX(size_t o0, size_t o1, void *vctx)                             \
    {                                                                                              \
        const struct red_job *j = vctx;                                                            \
        const T *x = j->nd->in[0]->data;                                                           \
        T *y = j->nd->out->data;                                                                   \
        for (size_t o = o0; o < o1; o++)                                                           \
            y[o] = (T)(j->c * blocksum_##SFX(x + o * j->r.len, j->r.len));                         \
    }

/* Output blocks [u0, u1), block u = (o, columns cb·COLS_BLOCK …): y[o, i] = c · Σ_k x[o, k, i]. */
#define RED_COLS_CHUNK(T, SFX)                                                                     \
    static void red_cols_chunk_##SFX(size_t u0, size_t u1, void *vctx)                             \
    {                                                                                              \
        const struct red_job *j = vctx;                                                            \
        const T *x = j->nd->in[0]->data;                                                           \
        T *y = j->nd->out->data;                                                                   \
        double acc[COLS_BLOCK];                                                                    \
        for (size_t u = u0; u < u1; u++) {                                                         \
            size_t o = u / j->col_blocks, i0 = (u % j->col_blocks) * COLS_BLOCK;                   \
            size_t n = j->r.inner - i0 < COLS_BLOCK ? j->r.inner - i0 : COLS_BLOCK;                \
            memset(acc, 0, n * sizeof acc[0]);                                                     \
            colacc_##SFX(acc, x + o * j->r.len * j->r.inner + i0, j->r.inner, j->r.len, n);        \
            for (size_t i = 0; i < n; i++)                                                         \
                y[o * j->r.inner + i0 + i] = (T)(j->c * acc[i]);                                   \
        }                                                                                          \
    }

RED_ROWS_CHUNK(float, f32)
RED_ROWS_CHUNK(double, f64)
RED_COLS_CHUNK(float, f32)
RED_COLS_CHUNK(double, f64)

/* y[o, i] = c · Σ_k x[o, k, i] */
static void
reduce_forward(tg_node *nd, bool mean)
{
    if (nd->out->size == 0)
        return; /* outer x inner = out size; skip, or a (2^40 x 0) input loops 2^40 times */
    struct red_job j = {.nd = nd, .r = red_of(nd)};
    j.c = mean ? 1.0 / (double)j.r.len : 1.0; /* len 0: the empty sum is 0, mean NaN */
    bool f32 = nd->out->dtype == TG_F32;
    if (!red_contiguous(nd)) { /* e.g. axes {0, 2} of a 3-D tensor: one strided pass */
        struct tg__red4 r4 = tg__red4_of(nd->in[0], nd->attr->axes);
        double *acc = nd->scratch;
        memset(acc, 0, nd->out->size * sizeof *acc);
        TG__DISPATCH(nd->out->dtype, T, {
            const T *x = nd->in[0]->data;
            T *y = nd->out->data;
            TG__RED4_FOR(r4, acc[o] += (double)x[i]);
            for (size_t o = 0; o < nd->out->size; o++)
                y[o] = (T)(mean ? acc[o] / (double)r4.count : acc[o]);
        });
    } else if (red_flat(j.r)) {
        double s = 0; /* the empty sum */
        if (j.r.len > 0) {
            tg__parallel_for(j.r.len, TG__GRAIN, red_flat_chunk, &j);
            const double *part = nd->scratch;
            for (size_t c = 0, n = tg__parallel_chunks(j.r.len, TG__GRAIN); c < n; c++)
                s += part[c];
        }
        TG__DISPATCH(nd->out->dtype, T, { ((T *)nd->out->data)[0] = (T)(j.c * s); });
    } else if (j.r.inner == 1) {
        tg__parallel_for(j.r.outer, tg__grain_rows(j.r.len),
                         f32 ? red_rows_chunk_f32 : red_rows_chunk_f64, &j);
    } else {
        j.col_blocks = (j.r.inner + COLS_BLOCK - 1) / COLS_BLOCK;
        size_t block = j.r.inner < COLS_BLOCK ? j.r.inner : COLS_BLOCK;
        size_t work = j.r.len * block; /* elements read per output block */
        j.grain = work && work < TG__GRAIN ? TG__GRAIN / work : 1;
        tg__parallel_for(j.r.outer * j.col_blocks, j.grain,
                         f32 ? red_cols_chunk_f32 : red_cols_chunk_f64, &j);
    }
}

/* dx[o, k, i] += c · dy[o, i] over the input's elements [e0, e1). */
#define RED_VJP_CHUNK(T, SFX)                                                                      \
    static void red_vjp_chunk_##SFX(size_t e0, size_t e1, void *vctx)                              \
    {                                                                                              \
        const struct red_job *j = vctx;                                                            \
        const T *dy = j->nd->out->grad;                                                            \
        T *dx = j->nd->in[0]->grad;                                                                \
        const T c = (T)j->c;                                                                       \
        if (j->r.inner == 1) /* rows of len, one dy per row */                                     \
            TG__FOR_SEGMENTS(e0, e1, j->r.len, {                                                   \
                bcast1_##SFX(dx + row * j->r.len + col, c, dy + row, nrows, ncols);                \
            });                                                                                    \
        else /* rows of inner; row R = (o, k) reads dy row o = R / len */                          \
            TG__FOR_SEGMENTS(e0, e1, j->r.inner, {                                                 \
                for (size_t r = row; r < row + nrows; r++)                                         \
                    axpy_##SFX(dx + r * j->r.inner + col, c,                                       \
                               dy + (r / j->r.len) * j->r.inner + col, ncols);                     \
            });                                                                                    \
    }

RED_VJP_CHUNK(float, f32)
RED_VJP_CHUNK(double, f64)

static void
reduce_vjp(tg_node *nd, bool mean)
{
    if (!nd->in[0]->grad || nd->out->size == 0)
        return;
    struct red_job j = {.nd = nd, .r = red_of(nd)};
    /* c rounded to the dtype first, as c · dy is computed in it */
    j.c = mean ? (double)(nd->out->dtype == TG_F32 ? (float)(1.0 / (double)j.r.len)
                                                  : 1.0 / (double)j.r.len)
               : 1.0;
    if (!red_contiguous(nd)) {
        struct tg__red4 r4 = tg__red4_of(nd->in[0], nd->attr->axes);
        TG__DISPATCH(nd->out->dtype, T, {
            const T *dy = nd->out->grad;
            T *dx = nd->in[0]->grad;
            const T c = mean ? (T)1 / (T)r4.count : (T)1;
            TG__RED4_FOR(r4, dx[i] += c * dy[o]);
        });
        return;
    }
    tg__parallel_for(nd->in[0]->size, TG__GRAIN,
                     nd->out->dtype == TG_F32 ? red_vjp_chunk_f32 : red_vjp_chunk_f64, &j);
}

/*
 * sum:  y = Σ_k x_k        (k over the reduced axes)
 *   ∂y/∂x_k = 1:  VJP dx += dy, broadcast back over the reduced axes
 *   JVP: ẏ = Σ_k ẋ_k (linear: the forward on the tangent)
 */
static tg_status
sum_forward(tg_node *nd)
{
    reduce_forward(nd, false);
    return TG_OK;
}

static tg_status
sum_vjp(tg_node *nd)
{
    reduce_vjp(nd, false);
    return TG_OK;
}

const tg_op tg__op_sum = {
    .name = "sum",
    .n_inputs = 1,
    .shape = reduce_shape,
    .forward = sum_forward,
    .vjp = sum_vjp,
    .vjp_graph = tg__vjp_graph_linear,
    .jvp = tg__jvp_linear,
    .jvp_math = "ẏ = Σ_k ẋ_k",
    .scratch_size = reduce_scratch,
    .math = "y = Σ_k x_k over the reduced axes",
    .vjp_math = "dx += dy broadcast back over the reduced axes",
    .shapes = "axes any set (negative from the end); reduced axes kept as 1 or removed",
};

/*
 * mean:  y = (1/N) Σ_k x_k      (N the number of reduced elements)
 *   VJP: dx += dy / N
 *   JVP: ẏ = (1/N) Σ_k ẋ_k (linear: the forward on the tangent)
 */
static tg_status
mean_forward(tg_node *nd)
{
    reduce_forward(nd, true);
    return TG_OK;
}

static tg_status
mean_vjp(tg_node *nd)
{
    reduce_vjp(nd, true);
    return TG_OK;
}

const tg_op tg__op_mean = {
    .name = "mean",
    .n_inputs = 1,
    .shape = reduce_shape,
    .forward = mean_forward,
    .vjp = mean_vjp,
    .vjp_graph = tg__vjp_graph_linear,
    .jvp = tg__jvp_linear,
    .jvp_math = "ẏ = (1/N) Σ_k ẋ_k",
    .scratch_size = reduce_scratch,
    .math = "y = (1/N) Σ_k x_k, N the reduced count",
    .vjp_math = "dx += dy / N broadcast back",
    .shapes = "as sum (N = 0 is an error)",
};

static tg_tensor *
record_axes(tg_tape *t, const tg_op *op, tg_tensor *x, const int *axes, int n_axes,
            bool keepdims, int correction)
{
    if (!t)
        return NULL;
    struct tg__attr attr = {.keepdims = keepdims, .axis = correction};
    if (!tg__axes_mask(t, op->name, x, axes, n_axes, &attr.axes))
        return &t->nil;
    return tg__record(t, op, &x, 1, &attr, NULL);
}

static tg_tensor *
record_axis(tg_tape *t, const tg_op *op, tg_tensor *x, int axis)
{
    return record_axes(t, op, x, &axis, 1, true, 0);
}

tg_tensor *
tg_sum(tg_tape *t, tg_tensor *x)
{
    return record_axes(t, &tg__op_sum, x, NULL, 0, true, 0);
}

tg_tensor *
tg_sum_axis(tg_tape *t, tg_tensor *x, int axis)
{
    return record_axis(t, &tg__op_sum, x, axis);
}

tg_tensor *
tg_mean(tg_tape *t, tg_tensor *x)
{
    return record_axes(t, &tg__op_mean, x, NULL, 0, true, 0);
}

tg_tensor *
tg_mean_axis(tg_tape *t, tg_tensor *x, int axis)
{
    return record_axis(t, &tg__op_mean, x, axis);
}

tg_tensor *
tg_sum_axes(tg_tape *t, tg_tensor *x, const int *axes, int n_axes, bool keepdims)
{
    return record_axes(t, &tg__op_sum, x, axes, n_axes, keepdims, 0);
}

tg_tensor *
tg_mean_axes(tg_tape *t, tg_tensor *x, const int *axes, int n_axes, bool keepdims)
{
    return record_axes(t, &tg__op_mean, x, axes, n_axes, keepdims, 0);
}

/* ---- max, min, var: one strided pass per step over the input (tg__red4) ---- */

/*
 * max:  y = max_k x_k    (k over the reduced axes)
 *   Tie rule: where c elements share the maximum, each gets 1/c of the gradient (PyTorch's
 *   amax: an even split, so the VJP is symmetric in the tied elements).
 *   VJP: dx_k += dy ⊙ [x_k = y] / c,  c = #{k : x_k = y}
 *   NaN: a NaN among the elements makes y NaN (as amax); no element equals NaN, so its
 *   gradient is 0 everywhere.
 *   JVP: ẏ = Σ_k [x_k = y] ẋ_k / c, the mean of the tied elements' tangents (the directional
 *   derivative of the even split; 0 where y is NaN, c = 0, as the VJP). Counts and sums in
 *   double in the forward-mode scratch: the node's scratch is the VJP's.
 * min likewise with min. The counts c live in the node's scratch (one double per output).
 */
static size_t
extreme_scratch(const tg_node *nd)
{
    return nd->out->size * sizeof(double);
}

static tg_status
extreme_forward(tg_node *nd, bool is_max)
{
    struct tg__red4 r4 = tg__red4_of(nd->in[0], nd->attr->axes);
    if (r4.count == 0) {
        tg__fail(nd->tape, TG_ERR_SHAPE, "%s %s: empty reduction over %s (no elements)",
                 nd->op->name, tg__name_text(nd->in[0]).s, tg__shape_text(nd->in[0]).s);
        return TG_ERR_SHAPE;
    }
    TG__DISPATCH(nd->out->dtype, T, {
        const T *x = nd->in[0]->data;
        T *y = nd->out->data;
        for (size_t o = 0; o < nd->out->size; o++)
            y[o] = is_max ? -(T)INFINITY : (T)INFINITY;
        /* x != x: a NaN wins and stays (every comparison with it is false) */
        TG__RED4_FOR(r4, {
            T v = x[i];
            if (v != v || (is_max ? v > y[o] : v < y[o]))
                y[o] = y[o] != y[o] ? y[o] : v;
        });
    });
    return TG_OK;
}

static tg_status
extreme_vjp(tg_node *nd)
{
    if (!nd->in[0]->grad || nd->out->size == 0)
        return TG_OK;
    struct tg__red4 r4 = tg__red4_of(nd->in[0], nd->attr->axes);
    double *count = nd->scratch;
    memset(count, 0, nd->out->size * sizeof *count);
    TG__DISPATCH(nd->out->dtype, T, {
        const T *x = nd->in[0]->data, *y = nd->out->data, *dy = nd->out->grad;
        T *dx = nd->in[0]->grad;
        TG__RED4_FOR(r4, count[o] += x[i] == y[o]);
        TG__RED4_FOR(r4, {
            if (x[i] == y[o])
                dx[i] += dy[o] / (T)count[o];
        });
    });
    return TG_OK;
}

static tg_status
extreme_jvp(tg_node *nd)
{
    if (!nd->in[0]->tangent || nd->out->size == 0)
        return TG_OK;
    struct tg__red4 r4 = tg__red4_of(nd->in[0], nd->attr->axes);
    size_t n = nd->out->size;
    double *tied_sum = tg__jvp_scratch(nd, 2 * n * sizeof(double));
    if (!tied_sum)
        return TG_ERR_NOMEM;
    double *count = tied_sum + n;
    memset(tied_sum, 0, 2 * n * sizeof *tied_sum);
    TG__DISPATCH(nd->out->dtype, T, {
        const T *x = nd->in[0]->data, *y = nd->out->data, *xd = nd->in[0]->tangent;
        T *yd = nd->out->tangent;
        TG__RED4_FOR(r4, {
            if (x[i] == y[o]) {
                tied_sum[o] += (double)xd[i];
                count[o] += 1;
            }
        });
        for (size_t o = 0; o < n; o++)
            yd[o] = count[o] > 0 ? (T)(tied_sum[o] / count[o]) : 0;
    });
    return TG_OK;
}

static tg_status
max_forward(tg_node *nd)
{
    return extreme_forward(nd, true);
}

static tg_status
min_forward(tg_node *nd)
{
    return extreme_forward(nd, false);
}

const tg_op tg__op_max = {
    .name = "max",
    .n_inputs = 1,
    .shape = tg__reduce_shape,
    .forward = max_forward,
    .vjp = extreme_vjp,
    .vjp_graph = tg__vjp_graph_linear,
    .jvp = extreme_jvp,
    .scratch_size = extreme_scratch,
    .math = "y = max_k x_k over the reduced axes",
    .vjp_math = "dx_k += dy ⊙ [x_k = y] / #{k: x_k = y} (ties split evenly)",
    .jvp_math = "ẏ = Σ_k [x_k = y] ẋ_k / #{k: x_k = y}",
    .shapes = "as sum",
};

const tg_op tg__op_min = {
    .name = "min",
    .n_inputs = 1,
    .shape = tg__reduce_shape,
    .forward = min_forward,
    .vjp = extreme_vjp,
    .vjp_graph = tg__vjp_graph_linear,
    .jvp = extreme_jvp,
    .scratch_size = extreme_scratch,
    .math = "y = min_k x_k over the reduced axes",
    .vjp_math = "dx_k += dy ⊙ [x_k = y] / #{k: x_k = y} (ties split evenly)",
    .jvp_math = "ẏ = Σ_k [x_k = y] ẋ_k / #{k: x_k = y}",
    .shapes = "as sum",
};

tg_tensor *
tg_max_axes(tg_tape *t, tg_tensor *x, const int *axes, int n_axes, bool keepdims)
{
    return record_axes(t, &tg__op_max, x, axes, n_axes, keepdims, 0);
}

tg_tensor *
tg_min_axes(tg_tape *t, tg_tensor *x, const int *axes, int n_axes, bool keepdims)
{
    return record_axes(t, &tg__op_min, x, axes, n_axes, keepdims, 0);
}

/*
 * var:  y = Σ_k (x_k - μ)² / (N - c),  μ = (1/N) Σ_k x_k,  N the reduced count, c the
 *       correction (attr.axis; 1 = Bessel's, PyTorch's default)
 *   ∂y/∂x_j = 2 (x_j - μ) / (N - c)   (the terms through μ cancel: Σ_k (x_k - μ) = 0)
 *   VJP: dx += dy ⊙ 2 (x - μ) / (N - c)
 *   Two passes (mean, then squared deviations), accumulated in double: the one-pass
 *   E[x²] - μ² cancels catastrophically when |μ| >> σ. N <= c gives inf or NaN, as
 *   PyTorch (the value divides by max(0, N - c), the gradient by N - c, as PyTorch's do).
 *   μ stays in the scratch for the VJP.
 *   JVP: ẏ = 2 Σ_k (x_k - μ) ẋ_k / (N - c)   (the saved μ; summed in double, divided by
 *   N - c as the gradient is)
 */
static size_t
var_scratch(const tg_node *nd)
{
    return 2 * nd->out->size * sizeof(double); /* μ, then the sums of squares */
}

static tg_status
var_forward(tg_node *nd)
{
    if (nd->out->size == 0)
        return TG_OK; /* no outputs (a kept axis of size 0): nothing to compute, no scratch */
    struct tg__red4 r4 = tg__red4_of(nd->in[0], nd->attr->axes);
    /* PyTorch divides the value by max(0, N - c) (so N <= c gives inf or NaN) but its
     * gradient by N - c itself: both are matched */
    double *mu = nd->scratch, n = (double)r4.count, dof = fmax(0, n - nd->attr->axis);
    memset(mu, 0, nd->out->size * sizeof *mu);
    TG__DISPATCH(nd->out->dtype, T, {
        const T *x = nd->in[0]->data;
        T *y = nd->out->data;
        TG__RED4_FOR(r4, mu[o] += (double)x[i]);
        for (size_t o = 0; o < nd->out->size; o++)
            mu[o] /= n;
        double *acc = mu + nd->out->size;
        memset(acc, 0, nd->out->size * sizeof *acc);
        TG__RED4_FOR(r4, {
            double d = (double)x[i] - mu[o];
            acc[o] += d * d;
        });
        for (size_t o = 0; o < nd->out->size; o++)
            y[o] = (T)(acc[o] / dof);
    });
    return TG_OK;
}

static tg_status
var_vjp(tg_node *nd)
{
    if (!nd->in[0]->grad || nd->out->size == 0)
        return TG_OK;
    struct tg__red4 r4 = tg__red4_of(nd->in[0], nd->attr->axes);
    const double *mu = nd->scratch, dof = (double)r4.count - nd->attr->axis;
    TG__DISPATCH(nd->out->dtype, T, {
        const T *x = nd->in[0]->data, *dy = nd->out->grad;
        T *dx = nd->in[0]->grad;
        TG__RED4_FOR(r4, dx[i] += dy[o] * (T)(2 * ((double)x[i] - mu[o]) / dof));
    });
    return TG_OK;
}

static tg_status
var_jvp(tg_node *nd)
{
    if (!nd->in[0]->tangent || nd->out->size == 0)
        return TG_OK;
    struct tg__red4 r4 = tg__red4_of(nd->in[0], nd->attr->axes);
    const double *mu = nd->scratch, dof = (double)r4.count - nd->attr->axis;
    double *acc = tg__jvp_scratch(nd, nd->out->size * sizeof(double));
    if (!acc)
        return TG_ERR_NOMEM;
    memset(acc, 0, nd->out->size * sizeof *acc);
    TG__DISPATCH(nd->out->dtype, T, {
        const T *x = nd->in[0]->data, *xd = nd->in[0]->tangent;
        T *yd = nd->out->tangent;
        TG__RED4_FOR(r4, acc[o] += ((double)x[i] - mu[o]) * (double)xd[i]);
        for (size_t o = 0; o < nd->out->size; o++)
            yd[o] = (T)(2 * acc[o] / dof);
    });
    return TG_OK;
}

/* For tg_grad: dx = dy ⊙ 2(x - μ) / (N - c) with ops, dy viewed with the reduced axes kept and
 * μ recomputed (tg_mean_axes), so both are differentiable */
static tg_tensor *
var_vjp_graph(tg_node *nd, int k, tg_tensor *dy)
{
    (void)k;
    tg_tape *t = nd->tape;
    tg_tensor *x = nd->in[0];
    int axes[TG_MAX_DIMS], n = 0;
    int64_t kept[TG_MAX_DIMS];
    double count = 1;
    for (int i = 0; i < x->ndim; i++) {
        bool reduced = nd->attr->axes & (1u << i);
        kept[i] = reduced ? 1 : x->dims[i];
        if (reduced)
            axes[n++] = i, count *= (double)x->dims[i];
    }
    tg_tensor *dyk = tg_reshape(t, dy, x->ndim, kept);
    tg_tensor *centered = tg_sub(t, x, tg_mean_axes(t, x, axes, n, true));
    return tg_scale(t, tg_mul(t, dyk, centered), 2 / (count - nd->attr->axis));
}

const tg_op tg__op_var = {
    .name = "var",
    .n_inputs = 1,
    .shape = tg__reduce_shape,
    .forward = var_forward,
    .vjp = var_vjp,
    .vjp_graph = var_vjp_graph,
    .jvp = var_jvp,
    .scratch_size = var_scratch,
    .math = "y = Σ_k (x_k - μ)² / (N - c), μ the mean, c the correction",
    .vjp_math = "dx += dy ⊙ 2(x - μ) / (N - c)",
    .jvp_math = "ẏ = 2 Σ_k (x_k - μ) ẋ_k / (N - c)",
    .shapes = "as sum",
};

tg_tensor *
tg_var(tg_tape *t, tg_tensor *x, const int *axes, int n_axes, int correction, bool keepdims)
{
    if (t && t->status == TG_OK && correction < 0) {
        if (!(x = tg__operand(t, "var", "x", x)))
            return &t->nil;
        return tg__fail(t, TG_ERR_ARG, "var %s: correction %d is negative", tg__name_text(x).s,
                        correction);
    }
    return record_axes(t, &tg__op_var, x, axes, n_axes, keepdims, correction);
}
