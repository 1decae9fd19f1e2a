/*
 * Reductions: sum and mean, over everything (-> 1x1) or along one axis (kept as size 1, so
 * the result broadcasts back against the input).
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
    struct red r = {1, x->size, 1};
    int axis = nd->attr.axis;
    if (axis >= 0) {
        r.len = (size_t)x->dims[axis];
        for (int i = 0; i < axis; i++)
            r.outer *= (size_t)x->dims[i];
        for (int i = axis + 1; i < x->ndim; i++)
            r.inner *= (size_t)x->dims[i];
    }
    return r;
}

/* One run summed whole (everything, or one row of a single-row input): split into chunks. */
static bool
red_flat(struct red r)
{
    return r.outer == 1 && r.inner == 1;
}

static tg_status
reduce_shape(tg_node *nd, int *ndim, int64_t *dims)
{
    const tg_tensor *x = nd->in[0];
    int axis = nd->attr.axis;
    if (nd->op == &tg__op_mean && (axis < 0 ? x->size == 0 : (axis < x->ndim && x->dims[axis] == 0))) {
        tg__fail(nd->tape, TG_ERR_SHAPE, "mean %s: empty input %s (the mean of nothing is 0/0)",
                 tg__name_text(x).s, tg__shape_text(x).s);
        return TG_ERR_SHAPE;
    }
    if (axis < 0) {
        *ndim = 2;
        dims[0] = dims[1] = 1;
        return TG_OK;
    }
    if (axis >= x->ndim) {
        tg__fail(nd->tape, TG_ERR_ARG, "%s %s: axis %d is out of range for shape %s",
                 nd->op->name, tg__name_text(x).s, axis, tg__shape_text(x).s);
        return TG_ERR_ARG;
    }
    dims[axis] = 1;
    return TG_OK;
}

/* Scratch: one double per chunk for a flat sum. */
static size_t
reduce_scratch(const tg_node *nd)
{
    struct red r = red_of(nd);
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
    if (red_flat(j.r)) {
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
    tg__parallel_for(nd->in[0]->size, TG__GRAIN,
                     nd->out->dtype == TG_F32 ? red_vjp_chunk_f32 : red_vjp_chunk_f64, &j);
}

/*
 * sum:  y = Σ_k x_k        (over all, or along `axis`)
 *   ∂y/∂x_k = 1:  VJP dx += dy, broadcast back over the reduced axis
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
    .scratch_size = reduce_scratch,
};

/*
 * mean:  y = (1/len) Σ_k x_k
 *   VJP: dx += dy / len
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
    .scratch_size = reduce_scratch,
};

static tg_tensor *
record_reduce(tg_tape *t, const tg_op *op, tg_tensor *x, int axis)
{
    if (!t)
        return NULL;
    if (t->status == TG_OK && axis < -1)
        return tg__fail(t, TG_ERR_ARG, "%s: axis %d is negative", op->name, axis);
    struct tg__attr attr = {.axis = axis};
    return tg__record(t, op, &x, 1, &attr, NULL);
}

tg_tensor *
tg_sum(tg_tape *t, tg_tensor *x)
{
    return record_reduce(t, &tg__op_sum, x, -1);
}

tg_tensor *
tg_sum_axis(tg_tape *t, tg_tensor *x, int axis)
{
    return record_reduce(t, &tg__op_sum, x, axis);
}

tg_tensor *
tg_mean(tg_tape *t, tg_tensor *x)
{
    return record_reduce(t, &tg__op_mean, x, -1);
}

tg_tensor *
tg_mean_axis(tg_tape *t, tg_tensor *x, int axis)
{
    return record_reduce(t, &tg__op_mean, x, axis);
}
