/*
 * Losses. Each reduces to a (1x1) scalar; sums accumulate in double.
 *
 * Speed and determinism: the loops are vectorizable array loops compiled per ISA
 * (TG__VEC_CLONES) and split into fixed chunks by tg__parallel_for when large. The squared
 * differences of mse/mse_half are summed in the lane tree of loops.h, one partial per chunk of
 * TG__GRAIN elements, the partials added in chunk order; softmax_xent keeps one loss per
 * example and adds them in example order. So every loss and gradient is bit-identical for any
 * thread count.
 */
#include <string.h>
#include <tgmath.h>

#include "../kernels/kernels.h"
#include "loops.h"
#include "ops.h"

static bool
same_shape(const tg_tensor *a, const tg_tensor *b)
{
    return a->ndim == b->ndim && memcmp(a->dims, b->dims, (size_t)a->ndim * sizeof a->dims[0]) == 0;
}

static tg_status
pair_loss_shape(tg_node *nd, int *ndim, int64_t *dims)
{
    const tg_tensor *a = nd->in[0], *y = nd->in[1];
    if (!same_shape(a, y)) {
        tg__fail(nd->tape, TG_ERR_SHAPE,
                 "%s %s·%s: prediction and target shapes differ: %s vs %s", nd->op->name,
                 tg__name_text(a).s, tg__name_text(y).s, tg__shape_text(a).s,
                 tg__shape_text(y).s);
        return TG_ERR_SHAPE;
    }
    *ndim = 2;
    dims[0] = dims[1] = 1;
    return TG_OK;
}

/*
 * Kernels of the pair losses, by dtype:
 *   sqdiff:    Σ ((double)a - (double)y)², lane tree (runs of at most TG__GRAIN)
 *   resid_acc: d[i] += c (a[i] - y[i]),   resid_dec: d[i] -= c (a[i] - y[i])
 * In f32 a difference beyond ~1.8e19 squares to +inf, which is the correct IEEE result, never
 * NaN.
 */
#define PAIR_KERNELS(T, SFX)                                                                       \
    TG__DEFINE_LANE_SUM(sqdiff_##SFX, double,                                                      \
                        ((double)a[i] - (double)y[i]) * ((double)a[i] - (double)y[i]),             \
                        const T *restrict a, const T *restrict y)                                  \
    TG__VEC_CLONES static void resid_acc_##SFX(T *restrict d, T c, const T *restrict a,            \
                                               const T *restrict y, size_t n)                      \
    {                                                                                              \
        for (size_t i = 0; i < n; i++)                                                             \
            d[i] += c * (a[i] - y[i]);                                                             \
    }                                                                                              \
    TG__VEC_CLONES static void resid_dec_##SFX(T *restrict d, T c, const T *restrict a,            \
                                               const T *restrict y, size_t n)                      \
    {                                                                                              \
        for (size_t i = 0; i < n; i++)                                                             \
            d[i] -= c * (a[i] - y[i]);                                                             \
    }

PAIR_KERNELS(float, f32)
PAIR_KERNELS(double, f64)

/*
 * Kernels of the pair losses' JVPs, by dtype, in double (lane tree, runs of at most TG__GRAIN):
 *   resid_dot:   Σ (a - y) t                (one input has a tangent t)
 *   resid_dot2:  Σ (a - y) (ȧ - ẏ)          (both have)
 */
#define PAIR_JVP_KERNELS(T, SFX)                                                                   \
    TG__DEFINE_LANE_SUM(resid_dot_##SFX, double,                                                   \
                        ((double)a[i] - (double)y[i]) * (double)t[i], const T *restrict a,         \
                        const T *restrict y, const T *restrict t)                                  \
    TG__DEFINE_LANE_SUM(resid_dot2_##SFX, double,                                                  \
                        ((double)a[i] - (double)y[i]) * ((double)ta[i] - (double)ty[i]),           \
                        const T *restrict a, const T *restrict y, const T *restrict ta,            \
                        const T *restrict ty)

PAIR_JVP_KERNELS(float, f32)
PAIR_JVP_KERNELS(double, f64)

/* Scratch of the pair losses: one double per chunk (the partial sums). */
static size_t
pair_loss_scratch(const tg_node *nd)
{
    return tg__parallel_chunks(nd->in[0]->size, TG__GRAIN) * sizeof(double);
}

struct pair_job {
    const tg_node *nd;
    double c;
};

static void
sqdiff_chunk(size_t e0, size_t e1, void *vctx)
{
    const tg_node *nd = ((const struct pair_job *)vctx)->nd;
    double *part = (double *)nd->scratch + e0 / TG__GRAIN;
    if (nd->out->dtype == TG_F32)
        *part = sqdiff_f32((const float *)nd->in[0]->data + e0,
                           (const float *)nd->in[1]->data + e0, e1 - e0);
    else
        *part = sqdiff_f64((const double *)nd->in[0]->data + e0,
                           (const double *)nd->in[1]->data + e0, e1 - e0);
}

/* Σ (a - y)² in double: chunk partials, added in chunk order. */
static double
sum_sq_diff(const tg_node *nd)
{
    struct pair_job j = {nd, 0};
    size_t n = nd->in[0]->size;
    tg__parallel_for(n, TG__GRAIN, sqdiff_chunk, &j);
    double acc = 0;
    const double *part = nd->scratch;
    for (size_t c = 0, chunks = tg__parallel_chunks(n, TG__GRAIN); n && c < chunks; c++)
        acc += part[c];
    return acc;
}

#define PAIR_VJP_CHUNK(T, SFX)                                                                     \
    static void pair_vjp_chunk_##SFX(size_t e0, size_t e1, void *vctx)                             \
    {                                                                                              \
        const struct pair_job *j = vctx;                                                           \
        const tg_tensor *a = j->nd->in[0], *y = j->nd->in[1];                                      \
        const T c = (T)j->c, *av = (const T *)a->data + e0, *yv = (const T *)y->data + e0;         \
        if (a->grad)                                                                               \
            resid_acc_##SFX((T *)a->grad + e0, c, av, yv, e1 - e0);                                \
        if (y->grad)                                                                               \
            resid_dec_##SFX((T *)y->grad + e0, c, av, yv, e1 - e0);                                \
    }

PAIR_VJP_CHUNK(float, f32)
PAIR_VJP_CHUNK(double, f64)

/* da += c (a - y), dy -= c (a - y), c = scalar gradient times the loss's constant factor. */
static void
pair_loss_vjp(tg_node *nd, double factor)
{
    if (!nd->in[0]->grad && !nd->in[1]->grad)
        return;
    struct pair_job j = {nd, 0};
    TG__DISPATCH(nd->out->dtype, T, {
        j.c = (double)(T)(factor * (double)((const T *)nd->out->grad)[0]);
    });
    tg__parallel_for(nd->in[0]->size, TG__GRAIN,
                     nd->out->dtype == TG_F32 ? pair_vjp_chunk_f32 : pair_vjp_chunk_f64, &j);
}

struct pair_jvp_job {
    const tg_node *nd;
    double *part; /* one partial per chunk of TG__GRAIN elements (the JVP's scratch) */
};

#define PAIR_JVP_CHUNK(T, SFX)                                                                     \
    static void pair_jvp_chunk_##SFX(size_t e0, size_t e1, void *vctx)                             \
    {                                                                                              \
        const struct pair_jvp_job *j = vctx;                                                       \
        const tg_tensor *a = j->nd->in[0], *y = j->nd->in[1];                                      \
        const T *av = (const T *)a->data + e0, *yv = (const T *)y->data + e0;                      \
        const T *ta = a->tangent, *ty = y->tangent;                                                \
        size_t n = e1 - e0;                                                                        \
        j->part[e0 / TG__GRAIN] = ta && ty ? resid_dot2_##SFX(av, yv, ta + e0, ty + e0, n)         \
                                  : ta     ? resid_dot_##SFX(av, yv, ta + e0, n)                   \
                                           : -resid_dot_##SFX(av, yv, ty + e0, n);                 \
    }

PAIR_JVP_CHUNK(float, f32)
PAIR_JVP_CHUNK(double, f64)

/* J = (factor/2) Σ (a - y)²:  J̇ = factor Σ (a - y)(ȧ - ẏ), an absent tangent being 0. The
 * chunk partials are added in chunk order, as the forward does. */
static tg_status
pair_loss_jvp(tg_node *nd, double factor)
{
    size_t n = nd->in[0]->size, chunks = tg__parallel_chunks(n, TG__GRAIN);
    struct pair_jvp_job j = {nd, tg__jvp_scratch(nd, chunks * sizeof(double))};
    if (!j.part)
        return TG_ERR_NOMEM;
    tg__parallel_for(n, TG__GRAIN,
                     nd->out->dtype == TG_F32 ? pair_jvp_chunk_f32 : pair_jvp_chunk_f64, &j);
    double acc = 0;
    for (size_t c = 0; n && c < chunks; c++)
        acc += j.part[c];
    TG__DISPATCH(nd->out->dtype, T, { ((T *)nd->out->tangent)[0] = (T)(factor * acc); });
    return TG_OK;
}

/*
 * mse_half (the note's loss):  J = 1/(2m) Σ_all (Y - A)²,   m = size of the batch axis
 *   ∂J/∂A = (A - Y) / m       — the note's step 1 (it wrote mean(Y - A), a scalar: the sign
 *                               is flipped and the gradient is a matrix, one entry per output)
 *   VJP: dA += dJ (A - Y) / m,   dY += dJ (Y - A) / m
 *   JVP: J̇ = (1/m) Σ (A - Y) ⊙ (Ȧ - Ẏ)
 */
static tg_status
mse_half_shape(tg_node *nd, int *ndim, int64_t *dims)
{
    tg_status s = pair_loss_shape(nd, ndim, dims);
    if (s != TG_OK)
        return s;
    const tg_tensor *a = nd->in[0];
    int axis = nd->attr->axis;
    if (axis < 0 || axis >= a->ndim) {
        tg__fail(nd->tape, TG_ERR_ARG, "mse_half %s: batch axis %d is out of range for shape %s",
                 tg__name_text(a).s, axis, tg__shape_text(a).s);
        return TG_ERR_ARG;
    }
    if (a->dims[axis] == 0 || a->size == 0) {
        tg__fail(nd->tape, TG_ERR_SHAPE, "mse_half %s: empty input %s", tg__name_text(a).s,
                 tg__shape_text(a).s);
        return TG_ERR_SHAPE;
    }
    return TG_OK;
}

static double
batch_size(const tg_node *nd)
{
    return (double)nd->in[0]->dims[nd->attr->axis];
}

static tg_status
mse_half_forward(tg_node *nd)
{
    double j = sum_sq_diff(nd) / (2.0 * batch_size(nd));
    TG__DISPATCH(nd->out->dtype, T, { ((T *)nd->out->data)[0] = (T)j; });
    return TG_OK;
}

static tg_status
mse_half_vjp(tg_node *nd)
{
    pair_loss_vjp(nd, 1.0 / batch_size(nd));
    return TG_OK;
}

static tg_status
mse_half_jvp(tg_node *nd)
{
    return pair_loss_jvp(nd, 1.0 / batch_size(nd));
}

/* For tg_grad, the VJP with ops: dA = c (A - Y) dJ, dY = -dA (c = 1/m for mse_half, 2/N for
 * mse; dJ is (1 x 1) and broadcasts) */
static tg_tensor *
pair_loss_vjp_graph(tg_node *nd, int k, tg_tensor *dj, double c)
{
    tg_tape *t = nd->tape;
    tg_tensor *da = tg_scale(t, tg_mul(t, tg_sub(t, nd->in[0], nd->in[1]), dj), c);
    return tg__tensor(tg_reshape(t, k ? tg_neg(t, da) : da, nd->in[k]->ndim, nd->in[k]->dims));
}

static tg_tensor *
mse_half_vjp_graph(tg_node *nd, int k, tg_tensor *dj)
{
    return pair_loss_vjp_graph(nd, k, dj, 1.0 / batch_size(nd));
}

const tg_op tg__op_mse_half = {
    .name = "mse_half",
    .n_inputs = 2,
    .shape = mse_half_shape,
    .forward = mse_half_forward,
    .vjp = mse_half_vjp,
    .vjp_graph = mse_half_vjp_graph,
    .jvp = mse_half_jvp,
    .scratch_size = pair_loss_scratch,
    .math = "J = 1/(2m) Σ (Y - A)², m the size of the batch axis",
    .vjp_math = "dA += dJ (A - Y)/m;  dY -= the same",
    .jvp_math = "J̇ = (1/m) Σ (A - Y) ⊙ (Ȧ - Ẏ)",
    .shapes = "A, Y (2-D, same shape) → (1 x 1)",
};

tg_tensor *
tg_mse_half(tg_tape *t, tg_tensor *a, tg_tensor *y, int batch_axis)
{
    if (!t)
        return NULL;
    struct tg__attr attr = {.axis = batch_axis};
    tg_tensor *in[2] = {a, y};
    return tg__record(t, &tg__op_mse_half, in, 2, &attr, NULL);
}

/*
 * mse (mean over all N entries):  J = (1/N) Σ (A - Y)²
 *   VJP: dA += dJ · 2 (A - Y) / N,   dY -= dJ · 2 (A - Y) / N
 *   JVP: J̇ = (2/N) Σ (A - Y) ⊙ (Ȧ - Ẏ)
 */
static tg_status
mse_shape(tg_node *nd, int *ndim, int64_t *dims)
{
    tg_status s = pair_loss_shape(nd, ndim, dims);
    if (s == TG_OK && nd->in[0]->size == 0) {
        tg__fail(nd->tape, TG_ERR_SHAPE, "mse %s: empty input %s", tg__name_text(nd->in[0]).s,
                 tg__shape_text(nd->in[0]).s);
        return TG_ERR_SHAPE;
    }
    return s;
}

static tg_status
mse_forward(tg_node *nd)
{
    double j = sum_sq_diff(nd) / (double)nd->in[0]->size;
    TG__DISPATCH(nd->out->dtype, T, { ((T *)nd->out->data)[0] = (T)j; });
    return TG_OK;
}

static tg_status
mse_vjp(tg_node *nd)
{
    pair_loss_vjp(nd, 2.0 / (double)nd->in[0]->size);
    return TG_OK;
}

static tg_status
mse_jvp(tg_node *nd)
{
    return pair_loss_jvp(nd, 2.0 / (double)nd->in[0]->size);
}

static tg_tensor *
mse_vjp_graph(tg_node *nd, int k, tg_tensor *dj)
{
    return pair_loss_vjp_graph(nd, k, dj, 2.0 / (double)nd->in[0]->size);
}

const tg_op tg__op_mse = {
    .name = "mse",
    .n_inputs = 2,
    .shape = mse_shape,
    .forward = mse_forward,
    .vjp = mse_vjp,
    .vjp_graph = mse_vjp_graph,
    .jvp = mse_jvp,
    .scratch_size = pair_loss_scratch,
    .math = "J = (1/N) Σ (A - Y)²",
    .vjp_math = "dA += dJ 2(A - Y)/N;  dY -= the same",
    .jvp_math = "J̇ = (2/N) Σ (A - Y) ⊙ (Ȧ - Ẏ)",
    .shapes = "A, Y same shape → (1 x 1)",
};

tg_tensor *
tg_mse(tg_tape *t, tg_tensor *a, tg_tensor *y)
{
    if (!t)
        return NULL;
    tg_tensor *in[2] = {a, y};
    return tg__record(t, &tg__op_mse, in, 2, NULL, NULL);
}

/*
 * softmax_xent:  scores S (B x C) with class_axis 1, or (C x B) with class_axis 0;
 *                labels l_j in [0, C), one per example
 *   J = (1/B) Σ_j [ lse(S_j) - S_j,l_j ],   lse(s) = m + log Σ_c e^(s_c - m),  m = max_c s_c
 *   = (1/B) Σ_j -log softmax(S_j)_l_j, never computed as log(softmax): exp(s - m) <= 1 cannot
 *   overflow, and the largest term is exactly 1, so the log never sees 0.
 *
 *   ∂J/∂S_jc = (softmax(S_j)_c - [c = l_j]) / B
 *   VJP: dS += dJ (P - onehot(l)) / B, P recomputed as e^((s - m) - log Σ) from the saved m and log Σ.
 *   JVP: J̇ = (1/B) Σ_j [ Σ_c P_jc Ṡ_jc - Ṡ_j,l_j ], P recomputed the same way; a row that is
 *   all -inf adds 0 (its gradient is defined as 0 below, and this is its directional form).
 *
 *   Edge values (RELIABILITY.md rows 16 and 17), per example row s:
 *   - -inf at some classes: e^-inf = 0, so they get probability 0 and gradient 0; -inf at the
 *     label (finite elsewhere) makes the loss +inf;
 *   - +inf anywhere: lse = +inf, the loss is +inf (NaN if the label's score is +inf too) and
 *     the gradient NaN at the +inf classes; NaN anywhere: loss and gradient NaN;
 *   - all -inf (row 17): lse = -inf and softmax is 0/0. The loss is NaN, not +inf:
 *     lse - s_l = -inf - (-inf) has no value (scores all sliding to -inf together leave the
 *     loss at its finite value, the label sliding alone sends it to +inf), as in PyTorch's
 *     cross_entropy, and NaN is what tg_tape_set_check_finite and a loss check catch. The
 *     gradient of such a row is defined as 0 (safe, always on, no flag): the row says nothing
 *     about which way the scores should move, and a NaN there would reach every parameter
 *     through the first matmul's VJP and the optimizer step. The other rows' gradients are
 *     unaffected; the mean loss is NaN, which says the bad row is there.
 *
 *   Speed: e^x is tg__vexp from vmath.h in double for both dtypes (≤ 1.5 ulp, tested in
 *   test-vmath.c; libm's exp before), and Σ_c e^(s_c - m) uses the lane tree of loops.h for
 *   each example in both layouts (with classes on axis 0, the same lanes run across a block of
 *   examples), so the layouts give the same bits. Examples are split across threads in fixed
 *   chunks; each example's loss is kept in the scratch and the losses are added in example
 *   order, so the loss is bit-identical for any thread count.
 */
struct xent_layout {
    size_t batch, classes;
    size_t ex_stride, class_stride; /* element strides between examples and between classes */
};

static struct xent_layout
xent_layout(const tg_node *nd)
{
    const tg_tensor *s = nd->in[0];
    struct xent_layout l;
    if (nd->attr->axis == 1) {
        l.batch = (size_t)s->dims[0], l.classes = (size_t)s->dims[1];
        l.ex_stride = l.classes, l.class_stride = 1;
    } else {
        l.classes = (size_t)s->dims[0], l.batch = (size_t)s->dims[1];
        l.ex_stride = 1, l.class_stride = l.batch;
    }
    return l;
}

static tg_status
xent_shape(tg_node *nd, int *ndim, int64_t *dims)
{
    const tg_tensor *s = nd->in[0];
    int axis = nd->attr->axis;
    if (s->ndim != 2 || (axis != 0 && axis != 1)) {
        tg__fail(nd->tape, TG_ERR_SHAPE,
                 "softmax_xent %s: needs 2-D scores and class_axis 0 or 1, got %s and %d",
                 tg__name_text(s).s, tg__shape_text(s).s, axis);
        return TG_ERR_SHAPE;
    }
    struct xent_layout l = xent_layout(nd);
    if (l.batch == 0 || l.classes == 0) {
        tg__fail(nd->tape, TG_ERR_SHAPE, "softmax_xent %s: empty input %s", tg__name_text(s).s,
                 tg__shape_text(s).s);
        return TG_ERR_SHAPE;
    }
    const int32_t *user = nd->attr->labels;
    if (!user) {
        tg__fail(nd->tape, TG_ERR_ARG, "softmax_xent %s: labels is NULL", tg__name_text(s).s);
        return TG_ERR_ARG;
    }
    if (nd->attr->n_labels != l.batch) {
        tg__fail(nd->tape, TG_ERR_ARG,
                 "softmax_xent %s %s: %zu labels given for %zu examples (class_axis %d: one "
                 "label per example)",
                 tg__name_text(s).s, tg__shape_text(s).s, nd->attr->n_labels, l.batch, axis);
        return TG_ERR_ARG;
    }
    for (size_t j = 0; j < l.batch; j++)
        if (user[j] < 0 || (size_t)user[j] >= l.classes) {
            tg__fail(nd->tape, TG_ERR_ARG,
                     "softmax_xent %s: label %d of example %zu is outside [0, %zu)",
                     tg__name_text(s).s, (int)user[j], j, l.classes);
            return TG_ERR_ARG;
        }
    /* Keep our own copy: the caller's array may change before backward. */
    int32_t *labels = tg__arena_alloc(&nd->tape->arena, l.batch * sizeof *labels);
    if (!labels) {
        tg__fail(nd->tape, TG_ERR_NOMEM, "softmax_xent: out of memory (%zu bytes) for labels",
                 l.batch * sizeof *labels);
        return TG_ERR_NOMEM;
    }
    memcpy(labels, user, l.batch * sizeof *labels);
    nd->attr->labels = labels;
    *ndim = 2;
    dims[0] = dims[1] = 1;
    return TG_OK;
}

/*
 * Scratch, four arrays of B doubles (one entry per example):
 *   M     m = max_c s_c; +inf for a row that is all -inf, so that the VJP's e^((s - m) - L) =
 *         e^(-inf) = 0 there instead of e^(-inf + inf) = NaN
 *   L     log Σ_c e^(s_c - m), kept apart from m so that the VJP's s - lse is (s - m) - log Σ:
 *         computing lse = m + log Σ first rounds away log Σ's low bits when |m| is large
 *         (1e6 + ln 2 has an ulp of 1e-10); 0 where m is not finite
 *   W     1, or 0 for a row that is all -inf (its gradient is 0)
 *   LOSS  the example's loss lse - s_l, added in example order after the parallel loop
 */
enum { XENT_BLOCK = 128 }; /* examples per block when classes are on axis 0 */

static size_t
xent_scratch(const tg_node *nd)
{
    return 4 * xent_layout(nd).batch * sizeof(double);
}

struct xent_job {
    const tg_node *nd;
    struct xent_layout l;
    double *M, *L, *W, *loss;
    double g; /* VJP: dJ / B */
};

static struct xent_job
xent_job_of(const tg_node *nd)
{
    struct xent_job j = {.nd = nd, .l = xent_layout(nd)};
    j.M = nd->scratch;
    j.L = j.M + j.l.batch;
    j.W = j.L + j.l.batch;
    j.loss = j.W + j.l.batch;
    return j;
}

/* max(m, v), NaN once either is NaN (so the running max of a row with a NaN is NaN). */
static inline double
max_nan(double m, double v)
{
    return tg__sel_f64(((v > m) | tg__isnan_f64(v)) & !tg__isnan_f64(m), v, m);
}

/* An example's results from its max m, Σ e^(s - m) (ignored unless m is finite) and the score
 * at its label. */
static void
xent_finish(const struct xent_job *j, size_t ex, double m, double sum, double label_score)
{
    bool finite = isfinite(m), dead = m == -INFINITY;
    /* (m - s_l) + log Σ: m - s_l is exact-ish, so no digits are lost to a large m. ±inf or NaN
     * in m pass through: all -inf gives -inf - (-inf) = NaN. */
    j->loss[ex] = finite ? (m - label_score) + log(sum) : m - label_score;
    j->L[ex] = finite ? log(sum) : 0;
    j->M[ex] = dead ? INFINITY : m;
    j->W[ex] = dead ? 0 : 1;
}

/*
 * Kernels, by dtype (all in double):
 *   rowmax:       max_nan over x[0 … n), lane-wise
 *   expsum:       Σ e^(x[i] - m), lane tree
 *   softmax_acc:  d[i] += (T)(g · e^((s[i] - m) - L))
 * and their versions across a block of examples (classes on axis 0, s one class's row):
 *   colmax:       M[j] = max_nan(M[j], s[j])
 *   colexp:       acc[j] += e^(s[j] - M[j])
 *   colsoftmax:   d[j] += (T)(G[j] · e^((s[j] - M[j]) - L[j]))
 */
#define XENT_KERNELS(T, SFX)                                                                       \
    TG__VEC_CLONES static double rowmax_##SFX(const T *restrict x, size_t n)                       \
    {                                                                                              \
        double l[TG__LANES];                                                                       \
        for (size_t k = 0; k < TG__LANES; k++)                                                     \
            l[k] = -INFINITY;                                                                      \
        size_t base = 0;                                                                           \
        for (; base + TG__LANES <= n; base += TG__LANES)                                           \
            for (size_t k = 0; k < TG__LANES; k++)                                                 \
                l[k] = max_nan(l[k], (double)x[base + k]);                                         \
        double m = -INFINITY;                                                                      \
        for (size_t k = 0; k < TG__LANES; k++)                                                     \
            m = max_nan(m, l[k]);                                                                  \
        for (size_t i = base; i < n; i++)                                                          \
            m = max_nan(m, (double)x[i]);                                                          \
        return m;                                                                                  \
    }                                                                                              \
    TG__DEFINE_LANE_SUM(expsum_##SFX, double, tg__vexp((double)x[i] - m), const T *restrict x,     \
                        double m)                                                                  \
    TG__VEC_CLONES static void softmax_acc_##SFX(T *restrict d, const T *restrict s, double m,     \
                                                 double L, double g, size_t n)                     \
    {                                                                                              \
        for (size_t i = 0; i < n; i++)                                                             \
            d[i] += (T)(g * tg__vexp(((double)s[i] - m) - L));                                     \
    }                                                                                              \
    TG__VEC_CLONES static void colmax_##SFX(double *restrict M, const T *restrict s, size_t n)     \
    {                                                                                              \
        for (size_t j = 0; j < n; j++)                                                             \
            M[j] = max_nan(M[j], (double)s[j]);                                                    \
    }                                                                                              \
    TG__VEC_CLONES static void colexp_##SFX(double *restrict acc, const T *restrict s,             \
                                            const double *restrict M, size_t n)                    \
    {                                                                                              \
        for (size_t j = 0; j < n; j++)                                                             \
            acc[j] += tg__vexp((double)s[j] - M[j]);                                               \
    }                                                                                              \
    TG__VEC_CLONES static void colsoftmax_##SFX(T *restrict d, const T *restrict s,                \
                                                const double *restrict M,                          \
                                                const double *restrict L,                          \
                                                const double *restrict G, size_t n)                \
    {                                                                                              \
        for (size_t j = 0; j < n; j++)                                                             \
            d[j] += (T)(G[j] * tg__vexp(((double)s[j] - M[j]) - L[j]));                            \
    }

/*
 * Kernels of the JVP, by dtype (in double), t the scores' tangent:
 *   softmax_dot:     Σ_i e^((x[i] - m) - L) t[i], lane tree (x one example's scores)
 *   colsoftmax_dot:  acc[j] += e^((s[j] - M[j]) - L[j]) t[j]   (across a block of examples)
 */
#define XENT_JVP_KERNELS(T, SFX)                                                                   \
    TG__DEFINE_LANE_SUM(softmax_dot_##SFX, double,                                                 \
                        tg__vexp(((double)x[i] - m) - L) * (double)t[i], const T *restrict x,      \
                        const T *restrict t, double m, double L)                                   \
    TG__VEC_CLONES static void colsoftmax_dot_##SFX(double *restrict acc, const T *restrict s,     \
                                                    const T *restrict t,                           \
                                                    const double *restrict M,                      \
                                                    const double *restrict L, size_t n)            \
    {                                                                                              \
        for (size_t j = 0; j < n; j++)                                                             \
            acc[j] += tg__vexp(((double)s[j] - M[j]) - L[j]) * (double)t[j];                       \
    }

XENT_JVP_KERNELS(float, f32)
XENT_JVP_KERNELS(double, f64)

/* acc[j] += add[j] (folding lanes across a block of examples) */
TG__VEC_CLONES static void
fold_into(double *restrict acc, const double *restrict add, size_t n)
{
    for (size_t j = 0; j < n; j++)
        acc[j] += add[j];
}

XENT_KERNELS(float, f32)
XENT_KERNELS(double, f64)

/*
 * Forward over examples [j0, j1): classes on axis 1 one row at a time; on axis 0 in blocks of
 * XENT_BLOCK examples, class rows in order, with TG__LANES accumulators per example that take
 * classes c ≡ k (mod TG__LANES), folded as TG__FOLD_LANES does, then the tail classes: the
 * operations of expsum, in the same order.
 */
#define XENT_FWD_CHUNK(T, SFX)                                                                     \
    static void xent_fwd_chunk_##SFX(size_t j0, size_t j1, void *vctx)                             \
    {                                                                                              \
        const struct xent_job *j = vctx;                                                           \
        const T *s = j->nd->in[0]->data;                                                           \
        const int32_t *labels = j->nd->attr->labels;                                                \
        size_t B = j->l.batch, C = j->l.classes;                                                   \
        if (j->l.class_stride == 1) {                                                              \
            for (size_t ex = j0; ex < j1; ex++) {                                                  \
                const T *sj = s + ex * C;                                                          \
                double m = rowmax_##SFX(sj, C);                                                    \
                double sum = isfinite(m) ? expsum_##SFX(sj, m, C) : 0;                             \
                xent_finish(j, ex, m, sum, (double)sj[labels[ex]]);                                \
            }                                                                                      \
            return;                                                                                \
        }                                                                                          \
        double acc[TG__LANES][XENT_BLOCK];                                                         \
        size_t C16 = C - C % TG__LANES;                                                            \
        for (size_t jb = j0; jb < j1; jb += XENT_BLOCK) {                                          \
            size_t n = j1 - jb < XENT_BLOCK ? j1 - jb : XENT_BLOCK;                                \
            double *M = j->M + jb;                                                                 \
            for (size_t i = 0; i < n; i++)                                                         \
                M[i] = -INFINITY;                                                                  \
            for (size_t c = 0; c < C; c++)                                                         \
                colmax_##SFX(M, s + c * B + jb, n);                                                \
            memset(acc, 0, sizeof acc);                                                            \
            for (size_t c = 0; c < C16; c++)                                                       \
                colexp_##SFX(acc[c % TG__LANES], s + c * B + jb, M, n);                            \
            for (size_t w = TG__LANES / 2; w > 0; w /= 2)                                          \
                for (size_t k = 0; k < w; k++)                                                     \
                    fold_into(acc[k], acc[k + w], n);                                              \
            for (size_t c = C16; c < C; c++)                                                       \
                colexp_##SFX(acc[0], s + c * B + jb, M, n);                                        \
            for (size_t i = 0; i < n; i++) {                                                       \
                size_t ex = jb + i;                                                                \
                xent_finish(j, ex, M[i], acc[0][i], (double)s[(size_t)labels[ex] * B + ex]);       \
            }                                                                                      \
        }                                                                                          \
    }

/*
 * VJP over examples [j0, j1): ds += (T)(g (P - onehot)). The vectorized loops add (T)(g P)
 * everywhere; the label's entry is then rewritten from its old value as old + (T)(g (P_l - 1)),
 * the same rounding as one pass with the onehot inside. Rows that are all -inf are skipped
 * (classes on axis 1) or get G = 0 and P = e^(-inf) = 0 (axis 0): their gradient stays 0.
 */
#define XENT_VJP_CHUNK(T, SFX)                                                                     \
    static void xent_vjp_chunk_##SFX(size_t j0, size_t j1, void *vctx)                             \
    {                                                                                              \
        const struct xent_job *j = vctx;                                                           \
        const T *s = j->nd->in[0]->data;                                                           \
        T *ds = j->nd->in[0]->grad;                                                                \
        const int32_t *labels = j->nd->attr->labels;                                                \
        size_t B = j->l.batch, C = j->l.classes;                                                   \
        const double g = j->g;                                                                     \
        if (j->l.class_stride == 1) {                                                              \
            for (size_t ex = j0; ex < j1; ex++) {                                                  \
                if (j->W[ex] == 0)                                                                 \
                    continue;                                                                      \
                const T *sj = s + ex * C;                                                          \
                T *dj = ds + ex * C, old = dj[labels[ex]];                                         \
                softmax_acc_##SFX(dj, sj, j->M[ex], j->L[ex], g, C);                               \
                double pl = tg__vexp(((double)sj[labels[ex]] - j->M[ex]) - j->L[ex]);              \
                dj[labels[ex]] = old + (T)(g * (pl - 1.0));                                        \
            }                                                                                      \
            return;                                                                                \
        }                                                                                          \
        double G[XENT_BLOCK];                                                                      \
        T old[XENT_BLOCK];                                                                         \
        for (size_t jb = j0; jb < j1; jb += XENT_BLOCK) {                                          \
            size_t n = j1 - jb < XENT_BLOCK ? j1 - jb : XENT_BLOCK;                                \
            for (size_t i = 0; i < n; i++) {                                                       \
                G[i] = j->W[jb + i] != 0 ? g : 0;                                                  \
                old[i] = ds[(size_t)labels[jb + i] * B + jb + i];                                  \
            }                                                                                      \
            for (size_t c = 0; c < C; c++)                                                         \
                colsoftmax_##SFX(ds + c * B + jb, s + c * B + jb, j->M + jb, j->L + jb, G, n);     \
            for (size_t i = 0; i < n; i++) {                                                       \
                size_t ex = jb + i, at = (size_t)labels[ex] * B + ex;                              \
                double pl = tg__vexp(((double)s[at] - j->M[ex]) - j->L[ex]);                       \
                ds[at] = G[i] != 0 ? old[i] + (T)(g * (pl - 1.0)) : old[i];                        \
            }                                                                                      \
        }                                                                                          \
    }

/*
 * JVP over examples [j0, j1): each example's P·Ṡ_j - Ṡ_j,l_j into rate[ex] (0 for a row
 * that is all -inf), with the scores' tangent Ṡ read in the forward's layout.
 */
struct xent_jvp_job {
    struct xent_job x;
    double *rate; /* B doubles (the JVP's scratch) */
};

#define XENT_JVP_CHUNK(T, SFX)                                                                     \
    static void xent_jvp_chunk_##SFX(size_t j0, size_t j1, void *vctx)                             \
    {                                                                                              \
        const struct xent_jvp_job *jj = vctx;                                                      \
        const struct xent_job *j = &jj->x;                                                         \
        const T *s = j->nd->in[0]->data, *ds = j->nd->in[0]->tangent;                              \
        const int32_t *labels = j->nd->attr->labels;                                                \
        size_t B = j->l.batch, C = j->l.classes;                                                   \
        if (j->l.class_stride == 1) {                                                              \
            for (size_t ex = j0; ex < j1; ex++)                                                    \
                jj->rate[ex] = j->W[ex] == 0 ? 0                                                   \
                                             : softmax_dot_##SFX(s + ex * C, ds + ex * C,          \
                                                                 j->M[ex], j->L[ex], C) -          \
                                                   (double)ds[ex * C + (size_t)labels[ex]];        \
            return;                                                                                \
        }                                                                                          \
        double acc[XENT_BLOCK];                                                                    \
        for (size_t jb = j0; jb < j1; jb += XENT_BLOCK) {                                          \
            size_t n = j1 - jb < XENT_BLOCK ? j1 - jb : XENT_BLOCK;                                \
            memset(acc, 0, n * sizeof acc[0]);                                                     \
            for (size_t c = 0; c < C; c++)                                                         \
                colsoftmax_dot_##SFX(acc, s + c * B + jb, ds + c * B + jb, j->M + jb, j->L + jb,   \
                                     n);                                                           \
            for (size_t i = 0; i < n; i++) {                                                       \
                size_t ex = jb + i;                                                                \
                jj->rate[ex] = j->W[ex] == 0                                                       \
                                   ? 0                                                             \
                                   : acc[i] - (double)ds[(size_t)labels[ex] * B + ex];             \
            }                                                                                      \
        }                                                                                          \
    }

XENT_FWD_CHUNK(float, f32)
XENT_FWD_CHUNK(double, f64)
XENT_VJP_CHUNK(float, f32)
XENT_VJP_CHUNK(double, f64)
XENT_JVP_CHUNK(float, f32)
XENT_JVP_CHUNK(double, f64)

static tg_status
xent_forward(tg_node *nd)
{
    struct xent_job j = xent_job_of(nd);
    tg__parallel_for(j.l.batch, tg__grain_rows(j.l.classes),
                     nd->out->dtype == TG_F32 ? xent_fwd_chunk_f32 : xent_fwd_chunk_f64, &j);
    double total = 0;
    for (size_t ex = 0; ex < j.l.batch; ex++)
        total += j.loss[ex];
    TG__DISPATCH(nd->out->dtype, T, { ((T *)nd->out->data)[0] = (T)(total / (double)j.l.batch); });
    return TG_OK;
}

static tg_status
xent_vjp(tg_node *nd)
{
    if (!nd->in[0]->grad)
        return TG_OK;
    struct xent_job j = xent_job_of(nd);
    TG__DISPATCH(nd->out->dtype, T, {
        j.g = (double)((const T *)nd->out->grad)[0] / (double)j.l.batch;
    });
    tg__parallel_for(j.l.batch, tg__grain_rows(j.l.classes),
                     nd->out->dtype == TG_F32 ? xent_vjp_chunk_f32 : xent_vjp_chunk_f64, &j);
    return TG_OK;
}

/* J̇ = (1/B) Σ_ex rate[ex], added in example order (as the forward adds the losses). */
static tg_status
xent_jvp(tg_node *nd)
{
    struct xent_jvp_job j = {.x = xent_job_of(nd)};
    if (!(j.rate = tg__jvp_scratch(nd, j.x.l.batch * sizeof(double))))
        return TG_ERR_NOMEM;
    tg__parallel_for(j.x.l.batch, tg__grain_rows(j.x.l.classes),
                     nd->out->dtype == TG_F32 ? xent_jvp_chunk_f32 : xent_jvp_chunk_f64, &j);
    double total = 0;
    for (size_t ex = 0; ex < j.x.l.batch; ex++)
        total += j.rate[ex];
    TG__DISPATCH(nd->out->dtype, T,
                 { ((T *)nd->out->tangent)[0] = (T)(total / (double)j.x.l.batch); });
    return TG_OK;
}

/* For tg_grad, the VJP with ops: dS = (softmax(S) - onehot(labels)) dJ / B, the one-hot a
 * constant */
static tg_tensor *
softmax_xent_vjp_graph(tg_node *nd, int k, tg_tensor *dj)
{
    (void)k;
    tg_tape *t = nd->tape;
    const tg_tensor *s = nd->in[0];
    struct xent_layout l = xent_layout(nd);
    tg_tensor *onehot = tg__tensor(tg_tensor_new(t, s->dtype, s->ndim, s->dims, NULL));
    if (onehot->kind == TG__KIND_NIL)
        return onehot;
    TG__DISPATCH(s->dtype, T, {
        T *o = onehot->data;
        for (size_t b = 0; b < l.batch; b++)
            o[b * l.ex_stride + (size_t)nd->attr->labels[b] * l.class_stride] = 1;
    });
    tg_tensor *p = tg_softmax(t, nd->in[0], nd->attr->axis);
    return tg_scale(t, tg_mul(t, tg_sub(t, p, onehot), dj), 1.0 / (double)l.batch);
}

const tg_op tg__op_softmax_xent = {
    .name = "softmax_xent",
    .n_inputs = 1,
    .shape = xent_shape,
    .forward = xent_forward,
    .vjp = xent_vjp,
    .vjp_graph = softmax_xent_vjp_graph,
    .jvp = xent_jvp,
    .scratch_size = xent_scratch,
    .math = "J = (1/B) Σ_j [lse(S_j) - S_j,l_j]",
    .vjp_math = "dS_jc += dJ (softmax(S_j)_c - [c = l_j]) / B",
    .jvp_math = "J̇ = (1/B) Σ_j [Σ_c softmax(S_j)_c Ṡ_jc - Ṡ_j,l_j]",
    .shapes = "S (B x C) or (C x B), B labels → (1 x 1)",
};

tg_tensor *
tg_softmax_xent(tg_tape *t, tg_tensor *scores, const int32_t *labels, size_t n_labels,
                int class_axis)
{
    if (!t)
        return NULL;
    struct tg__attr attr = {.axis = class_axis, .labels = (int32_t *)labels, .n_labels = n_labels};
    return tg__record(t, &tg__op_softmax_xent, &scores, 1, &attr, NULL);
}
