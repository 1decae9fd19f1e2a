/*
 * Activations: y = g(x) elementwise, shape(y) = shape(x), and the fused dense-layer tail
 * bias_act: Y = g(X + b).
 *
 * Each VJP is dx += dy ⊙ g'(x), with g' written from whichever of x and y is cheaper and
 * stable (sigmoid, tanh and relu use the saved output y). These are the g'(z) of the note's
 * step 2, dZ = dA ⊙ g'(Z) — which the note replaced by the previous layer's output.
 *
 * Speed: the loops below are plain array loops over one dtype with the math of vmath.h
 * (branch-free, vectorizable) inside functions compiled for AVX-512, AVX2 and baseline x86-64
 * and picked at run time (TG__VEC_CLONES). Float64 keeps libm for softplus and gelu (log1p,
 * erf); float32 gelu keeps libm's erff. Tensors larger than ACT_GRAIN elements are split into
 * fixed chunks of ACT_GRAIN run by tg__parallel_for: elementwise work, so the result is the
 * same for any thread count; smaller ones run inline with no threading cost.
 */
#include <math.h>
#include <string.h>

#include "../kernels/kernels.h"
#include "ops.h"
#include "vmath.h"

#define ACT_GRAIN 32768 /* elements per parallel chunk: ~128 KiB of float, L2-resident */
enum { BLOCK = 1024 }; /* elements per stack block inside a chunk (8 KiB of double) */

#define INV_SQRT2 0.70710678118654752440   /* 1/√2 */
#define INV_SQRT2PI 0.39894228040143267794 /* 1/√(2π) */

/* ---- the per-element rules, one array loop per activation and dtype ----
 *
 * g_fwd_T(act, alpha, z, y, n):          y = g(z)             (z == y is allowed: in place)
 * g_vjp_T(act, alpha, z, y, dy, dz, n):  dz[i] = dy[i] · g'(z[i]) (z may be NULL when g' is
 *                                         read from y; dz may alias dy)
 */
#define ACT_LOOP(n, ...)                                                                      \
    do {                                                                                       \
        for (size_t i = 0; i < (n); i++) {                                                     \
            __VA_ARGS__;                                                                       \
        }                                                                                      \
    } while (0)

TG__VEC_CLONES static void
g_fwd_f32(tg_activation act, float alpha, const float *z, float *y, size_t n)
{
    switch (act) {
    case TG_ACT_IDENTITY: ACT_LOOP(n, y[i] = z[i]); break;
    case TG_ACT_SIGMOID: ACT_LOOP(n, y[i] = tg__vsigmoidf(z[i])); break;
    case TG_ACT_TANH: ACT_LOOP(n, y[i] = tg__vtanhf(z[i])); break;
    case TG_ACT_RELU: ACT_LOOP(n, float x = z[i]; y[i] = x < 0 ? 0 : x); break;
    case TG_ACT_LEAKY_RELU: ACT_LOOP(n, float x = z[i]; y[i] = x < 0 ? alpha * x : x); break;
    case TG_ACT_SOFTPLUS:
        ACT_LOOP(n, float x = z[i]; y[i] = (x > 0 ? x : 0) + tg__vlog1pexpf(x));
        break;
    case TG_ACT_GELU:
        /* x < -20: Φ(x) is 0 in f32, and x·Φ(x) would be -inf·0 = NaN at -inf */
        ACT_LOOP(n, float x = z[i];
                 y[i] = x < -20 ? -0.0f : x * (0.5f * (1 + erff(x * (float)INV_SQRT2))));
        break;
    }
}

TG__VEC_CLONES static void
g_fwd_f64(tg_activation act, double alpha, const double *z, double *y, size_t n)
{
    switch (act) {
    case TG_ACT_IDENTITY: ACT_LOOP(n, y[i] = z[i]); break;
    case TG_ACT_SIGMOID: ACT_LOOP(n, y[i] = tg__vsigmoid(z[i])); break;
    case TG_ACT_TANH: ACT_LOOP(n, y[i] = tg__vtanh(z[i])); break;
    case TG_ACT_RELU: ACT_LOOP(n, double x = z[i]; y[i] = x < 0 ? 0 : x); break;
    case TG_ACT_LEAKY_RELU: ACT_LOOP(n, double x = z[i]; y[i] = x < 0 ? alpha * x : x); break;
    case TG_ACT_SOFTPLUS:
        ACT_LOOP(n, double x = z[i]; y[i] = (x > 0 ? x : 0) + log1p(exp(-fabs(x))));
        break;
    case TG_ACT_GELU:
        /* x < -40: Φ(x) is 0 in f64, and x·Φ(x) would be -inf·0 = NaN at -inf */
        ACT_LOOP(n, double x = z[i];
                 y[i] = x < -40 ? -0.0 : x * (0.5 * (1 + erf(x * INV_SQRT2))));
        break;
    }
}

TG__VEC_CLONES static void
g_vjp_f32(tg_activation act, float alpha, const float *z, const float *y, const float *dy,
          float *dz, size_t n)
{
    switch (act) {
    case TG_ACT_IDENTITY: ACT_LOOP(n, dz[i] = dy[i]); break;
    case TG_ACT_SIGMOID: ACT_LOOP(n, dz[i] = dy[i] * (y[i] * (1 - y[i]))); break;
    case TG_ACT_TANH: ACT_LOOP(n, dz[i] = dy[i] * (1 - y[i] * y[i])); break;
    case TG_ACT_RELU: ACT_LOOP(n, dz[i] = dy[i] * (y[i] > 0 ? 1.0f : 0.0f)); break;
    case TG_ACT_LEAKY_RELU: ACT_LOOP(n, dz[i] = dy[i] * (z[i] > 0 ? 1.0f : alpha)); break;
    case TG_ACT_SOFTPLUS: ACT_LOOP(n, dz[i] = dy[i] * tg__vsigmoidf(z[i])); break;
    case TG_ACT_GELU:
        /* |x| > 20: φ(x) is 0 in f32 and gelu' = [x > 0]; x·φ(x) would be inf·0 at ±inf */
        ACT_LOOP(n, float x = z[i];
                 dz[i] = dy[i] * (fabsf(x) > 20 ? (x > 0 ? 1.0f : 0.0f)
                                                : 0.5f * (1 + erff(x * (float)INV_SQRT2)) +
                                                      x * tg__vexpf(-0.5f * x * x) *
                                                          (float)INV_SQRT2PI));
        break;
    }
}

TG__VEC_CLONES static void
g_vjp_f64(tg_activation act, double alpha, const double *z, const double *y, const double *dy,
          double *dz, size_t n)
{
    switch (act) {
    case TG_ACT_IDENTITY: ACT_LOOP(n, dz[i] = dy[i]); break;
    case TG_ACT_SIGMOID: ACT_LOOP(n, dz[i] = dy[i] * (y[i] * (1 - y[i]))); break;
    case TG_ACT_TANH: ACT_LOOP(n, dz[i] = dy[i] * (1 - y[i] * y[i])); break;
    case TG_ACT_RELU: ACT_LOOP(n, dz[i] = dy[i] * (y[i] > 0 ? 1.0 : 0.0)); break;
    case TG_ACT_LEAKY_RELU: ACT_LOOP(n, dz[i] = dy[i] * (z[i] > 0 ? 1.0 : alpha)); break;
    case TG_ACT_SOFTPLUS: ACT_LOOP(n, dz[i] = dy[i] * tg__vsigmoid(z[i])); break;
    case TG_ACT_GELU:
        /* |x| > 40: φ(x) is 0 in f64 and gelu' = [x > 0]; x·φ(x) would be inf·0 at ±inf */
        ACT_LOOP(n, double x = z[i];
                 dz[i] = dy[i] * (fabs(x) > 40 ? (x > 0 ? 1.0 : 0.0)
                                               : 0.5 * (1 + erf(x * INV_SQRT2)) +
                                                     x * exp(-0.5 * x * x) * INV_SQRT2PI));
        break;
    }
}

/* dst[i] += src[i] */
TG__VEC_CLONES static void
acc_f32(float *restrict dst, const float *restrict src, size_t n)
{
    ACT_LOOP(n, dst[i] += src[i]);
}

TG__VEC_CLONES static void
acc_f64(double *restrict dst, const double *restrict src, size_t n)
{
    ACT_LOOP(n, dst[i] += src[i]);
}

/* g' needs the input z (not only the output y). */
static bool
needs_z(tg_activation act)
{
    return act == TG_ACT_LEAKY_RELU || act == TG_ACT_SOFTPLUS || act == TG_ACT_GELU;
}

/* ---- plain activations: y = g(x) ---- */

struct act_job {
    tg_activation act;
    double alpha;
    tg_dtype dt;
    const void *z, *y, *dy;
    void *out, *dx;
};

static void
act_fwd_chunk(size_t b, size_t e, void *vctx)
{
    const struct act_job *j = vctx;
    if (j->dt == TG_F32)
        g_fwd_f32(j->act, (float)j->alpha, (const float *)j->z + b, (float *)j->out + b, e - b);
    else
        g_fwd_f64(j->act, j->alpha, (const double *)j->z + b, (double *)j->out + b, e - b);
}

/* dx += dy ⊙ g': dy ⊙ g' goes into a stack block, then is added, so the VJP accumulates. */
static void
act_vjp_chunk(size_t b, size_t e, void *vctx)
{
    const struct act_job *j = vctx;
    for (size_t s = b; s < e; s += BLOCK) {
        size_t n = e - s < BLOCK ? e - s : BLOCK;
        if (j->dt == TG_F32) {
            float tmp[BLOCK];
            const float *z = j->z;
            g_vjp_f32(j->act, (float)j->alpha, z ? z + s : NULL, (const float *)j->y + s,
                      (const float *)j->dy + s, tmp, n);
            acc_f32((float *)j->dx + s, tmp, n);
        } else {
            double tmp[BLOCK];
            const double *z = j->z;
            g_vjp_f64(j->act, j->alpha, z ? z + s : NULL, (const double *)j->y + s,
                      (const double *)j->dy + s, tmp, n);
            acc_f64((double *)j->dx + s, tmp, n);
        }
    }
}

static tg_status
unary_forward(tg_node *nd, tg_activation act)
{
    struct act_job j = {.act = act, .alpha = nd->attr.scale, .dt = nd->out->dtype,
                        .z = nd->in[0]->data, .out = nd->out->data};
    tg__parallel_for(nd->out->size, ACT_GRAIN, act_fwd_chunk, &j);
    return TG_OK;
}

static tg_status
unary_vjp(tg_node *nd, tg_activation act)
{
    if (!nd->in[0]->grad)
        return TG_OK;
    struct act_job j = {.act = act, .alpha = nd->attr.scale, .dt = nd->out->dtype,
                        .z = nd->in[0]->data, .y = nd->out->data, .dy = nd->out->grad,
                        .dx = nd->in[0]->grad};
    tg__parallel_for(nd->out->size, ACT_GRAIN, act_vjp_chunk, &j);
    return TG_OK;
}

#define UNARY_OP(NAME, ACT)                                                                    \
    static tg_status NAME##_forward(tg_node *nd)                                               \
    {                                                                                          \
        return unary_forward(nd, ACT);                                                         \
    }                                                                                          \
    static tg_status NAME##_vjp(tg_node *nd)                                                   \
    {                                                                                          \
        return unary_vjp(nd, ACT);                                                             \
    }                                                                                          \
    const tg_op tg__op_##NAME = {                                                              \
        .name = #NAME,                                                                         \
        .n_inputs = 1,                                                                         \
        .shape = tg__shape_same,                                                               \
        .forward = NAME##_forward,                                                             \
        .vjp = NAME##_vjp,                                                                     \
    };                                                                                         \
    tg_tensor *tg_##NAME(tg_tape *t, tg_tensor *x)                                             \
    {                                                                                          \
        return t ? tg__record(t, &tg__op_##NAME, &x, 1, NULL, NULL) : NULL;                    \
    }

/*
 * identity:  y = x
 *   VJP: dx += dy
 */
UNARY_OP(identity, TG_ACT_IDENTITY)

/*
 * sigmoid:  y = σ(x) = 1 / (1 + e^-x)
 *   σ'(x) = σ(x)(1 - σ(x)):   VJP dx += dy ⊙ y ⊙ (1 - y)     (from the saved output)
 *   For x < 0 we evaluate e^x / (1 + e^x): e^-x would overflow to inf for x << 0. Both
 *   branches are exact where they are used; σ(±inf) = 1 / 0 with gradient 0.
 *   (tg__vsigmoidf / tg__vsigmoid in vmath.h: ≤ 3 ulp, tested in test-vmath.c.)
 */
UNARY_OP(sigmoid, TG_ACT_SIGMOID)

/*
 * tanh:  y = tanh(x) = sign(x) u / (u + 2),  u = e^(2|x|) - 1   (vmath.h, ≤ 3 ulp)
 *   tanh'(x) = 1 - tanh²(x):  VJP dx += dy ⊙ (1 - y²)
 */
UNARY_OP(tanh, TG_ACT_TANH)

/*
 * relu:  y = max(x, 0)
 *   relu'(x) = [x > 0] (we take 0 at the kink x = 0, as PyTorch does); NaN stays NaN
 *   VJP: dx += dy ⊙ [y > 0]   ([y > 0] = [x > 0], and false for NaN either way)
 */
UNARY_OP(relu, TG_ACT_RELU)

/*
 * softplus:  y = log(1 + e^x) = max(x, 0) + log1p(e^-|x|)
 *   The second form never overflows (e^-|x| <= 1) and keeps precision for x << 0, where
 *   log(1 + tiny) would round to 0: softplus(1000) = 1000, softplus(-1000) = e^-1000.
 *   softplus'(x) = σ(x):  VJP dx += dy ⊙ σ(x)   (two-branch σ as above)
 */
UNARY_OP(softplus, TG_ACT_SOFTPLUS)

/*
 * gelu (exact):  y = x Φ(x),  Φ(x) = ½ (1 + erf(x / √2))
 *   gelu'(x) = Φ(x) + x φ(x),  φ(x) = e^(-x²/2) / √(2π)
 *   VJP: dx += dy ⊙ (Φ(x) + x φ(x))
 *   Limits: where Φ(x) = 0 (x <= -38.5 in double, and -inf) y = 0, not -inf · 0 = NaN; x φ(x)
 *   is evaluated at x clamped to ±40, where φ has underflowed to 0 in both dtypes, so
 *   gelu'(±inf) = Φ(±inf) = 1 / 0 instead of inf · 0.
 */
UNARY_OP(gelu, TG_ACT_GELU)

/*
 * leaky_relu:  y = x > 0 ? x : α x
 *   VJP: dx += dy ⊙ (x > 0 ? 1 : α)
 */
static tg_status
leaky_relu_forward(tg_node *nd)
{
    return unary_forward(nd, TG_ACT_LEAKY_RELU);
}

static tg_status
leaky_relu_vjp(tg_node *nd)
{
    return unary_vjp(nd, TG_ACT_LEAKY_RELU);
}

const tg_op tg__op_leaky_relu = {
    .name = "leaky_relu",
    .n_inputs = 1,
    .shape = tg__shape_same,
    .forward = leaky_relu_forward,
    .vjp = leaky_relu_vjp,
};

tg_tensor *
tg_leaky_relu(tg_tape *t, tg_tensor *x, double alpha)
{
    if (!t)
        return NULL;
    if (t->status == TG_OK && !isfinite(alpha))
        return tg__fail(t, TG_ERR_ARG, "leaky_relu: alpha %g is not finite", alpha);
    struct tg__attr attr = {.scale = alpha};
    return tg__record(t, &tg__op_leaky_relu, &x, 1, &attr, NULL);
}

/*
 * bias_act (fused dense-layer tail):  Z = X + b,  Y = g(Z)
 *   X (r x c); b (1 x c) repeats over the r rows (examples as rows, Z = X·Wᵀ + b) or
 *   b (r x 1) repeats over the c columns (examples as columns, the note's Z = W·A + b);
 *   g any tg_activation (α = 0.01 for leaky_relu, as tg_activate uses).
 *
 *   dZ = dY ⊙ g'(Z)                 (g' from the saved Y, or for leaky_relu, softplus and gelu
 *                                    from Z, which the node keeps in its scratch)
 *   VJP: dX += dZ
 *        db += Σ_i dZ_ij  (row bias)   or   db_i += Σ_j dZ_ij  (column bias) — the note's
 *        step 4, db = Σ over the batch of dZ
 *   The same values as tg_activate(tg_add(X, b)) (the same roundings: z = x + b, then g), in
 *   one pass over the data each way instead of two, with one node instead of two.
 *
 *   Rows are split into fixed chunks of about ACT_GRAIN elements (tg__parallel_for): a row
 *   bias's gradient is summed per chunk into the node's scratch and the chunk sums are added
 *   in chunk order, a column bias's per row in one chunk, so db is bit-identical for any
 *   thread count. Inside a chunk, work goes in stack blocks of BLOCK elements (whole rows when
 *   a row fits), so every loop is a flat vectorizable loop over cache-resident data.
 */
#define BIAS_HELPERS(T, SFX)                                                                   \
    /* z = x + b[j] over an (nrows x ncols) block of full rows (or one row segment) */         \
    TG__VEC_CLONES static void bias_rows_##SFX(const T *restrict x, const T *restrict b,       \
                                               T *restrict z, size_t nrows, size_t ncols)      \
    {                                                                                          \
        for (size_t i = 0; i < nrows; i++)                                                     \
            for (size_t j = 0; j < ncols; j++)                                                 \
                z[i * ncols + j] = x[i * ncols + j] + b[j];                                    \
    }                                                                                          \
    /* z = x + b[i] */                                                                         \
    TG__VEC_CLONES static void bias_cols_##SFX(const T *restrict x, const T *restrict b,       \
                                               T *restrict z, size_t nrows, size_t ncols)      \
    {                                                                                          \
        for (size_t i = 0; i < nrows; i++) {                                                   \
            const T bi = b[i];                                                                 \
            for (size_t j = 0; j < ncols; j++)                                                 \
                z[i * ncols + j] = x[i * ncols + j] + bi;                                      \
        }                                                                                      \
    }                                                                                          \
    /* acc[j] += Σ_i v[i][j], rows in order */                                                 \
    TG__VEC_CLONES static void colsum_##SFX(T *restrict acc, const T *restrict v,             \
                                            size_t nrows, size_t ncols)                        \
    {                                                                                          \
        for (size_t i = 0; i < nrows; i++)                                                     \
            for (size_t j = 0; j < ncols; j++)                                                 \
                acc[j] += v[i * ncols + j];                                                    \
    }                                                                                          \
    /* acc[i] += Σ_j v[i][j]: 8 lane sums (j mod 8) in a fixed tree, then the tail, so the   \
     * compiler can vectorize without reassociating anything on its own */                   \
    TG__VEC_CLONES static void rowsum_##SFX(T *restrict acc, const T *restrict v,             \
                                            size_t nrows, size_t ncols)                        \
    {                                                                                          \
        for (size_t i = 0; i < nrows; i++) {                                                   \
            const T *row = v + i * ncols;                                                      \
            T l[8] = {0, 0, 0, 0, 0, 0, 0, 0};                                                 \
            size_t j = 0;                                                                      \
            for (; j + 8 <= ncols; j += 8)                                                     \
                for (size_t k = 0; k < 8; k++)                                                 \
                    l[k] += row[j + k];                                                        \
            T s = ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]));           \
            for (; j < ncols; j++)                                                             \
                s += row[j];                                                                   \
            acc[i] += s;                                                                       \
        }                                                                                      \
    }

BIAS_HELPERS(float, f32)
BIAS_HELPERS(double, f64)

struct ba_shape {
    size_t rows, cols;
    bool row_bias; /* b (1 x c); else b (r x 1) */
    size_t grain_rows, chunks;
};

static struct ba_shape
ba_shape_of(const tg_node *nd)
{
    const tg_tensor *x = nd->in[0], *b = nd->in[1];
    struct ba_shape s;
    s.rows = (size_t)x->dims[0];
    s.cols = (size_t)x->dims[1];
    s.row_bias = b->dims[0] == 1 && b->dims[1] == x->dims[1];
    s.grain_rows = s.cols ? ACT_GRAIN / s.cols : s.rows;
    if (s.grain_rows == 0)
        s.grain_rows = 1;
    s.chunks = tg__parallel_chunks(s.rows, s.grain_rows);
    return s;
}

static bool
needs_z_attr(const tg_node *nd)
{
    return needs_z((tg_activation)nd->attr.axis);
}

static tg_status
bias_act_shape(tg_node *nd, int *ndim, int64_t *dims)
{
    const tg_tensor *x = nd->in[0], *b = nd->in[1];
    bool ok = x->ndim == 2 && b->ndim == 2 &&
              ((b->dims[0] == 1 && b->dims[1] == x->dims[1]) ||
               (b->dims[1] == 1 && b->dims[0] == x->dims[0]));
    if (!ok) {
        tg__fail(nd->tape, TG_ERR_SHAPE,
                 "bias_act %s·%s: bias must be (1 x c) or (r x 1) for a 2-D (r x c) input, got "
                 "%s and %s",
                 tg__name_text(x).s, tg__name_text(b).s, tg__shape_text(x).s,
                 tg__shape_text(b).s);
        return TG_ERR_SHAPE;
    }
    *ndim = 2;
    dims[0] = x->dims[0];
    dims[1] = x->dims[1];
    return TG_OK;
}

/* Scratch: Z (when g' needs it), then one row of bias-gradient partials per chunk. */
static size_t
bias_act_scratch(const tg_node *nd)
{
    struct ba_shape s = ba_shape_of(nd);
    size_t n = needs_z_attr(nd) ? s.rows * s.cols : 0;
    if (s.row_bias)
        n += s.chunks * s.cols;
    return n * tg_dtype_size(nd->in[0]->dtype);
}

struct ba_job {
    const tg_node *nd;
    struct ba_shape s;
};

/* Runs the body on the blocks of rows [r0, r1) with row, col, nrows, ncols set: whole rows
 * when a row fits in BLOCK, else row segments; either way nrows·ncols contiguous elements. */
#define FOR_BLOCKS(s, r0, r1, ...)                                                            \
    do {                                                                                       \
        if ((s).cols <= BLOCK) {                                                               \
            size_t per_ = (s).cols ? BLOCK / (s).cols : 1;                                     \
            for (size_t row = (r0); row < (r1); row += per_) {                                 \
                size_t nrows = (r1) - row < per_ ? (r1) - row : per_, col = 0,                 \
                       ncols = (s).cols;                                                       \
                __VA_ARGS__;                                                                   \
            }                                                                                  \
        } else {                                                                               \
            for (size_t row = (r0); row < (r1); row++)                                         \
                for (size_t col = 0; col < (s).cols; col += BLOCK) {                           \
                    size_t nrows = 1,                                                          \
                           ncols = (s).cols - col < BLOCK ? (s).cols - col : BLOCK;            \
                    __VA_ARGS__;                                                               \
                }                                                                              \
        }                                                                                      \
    } while (0)

#define BA_FORWARD_CHUNK(T, SFX)                                                               \
    static void ba_fwd_chunk_##SFX(size_t r0, size_t r1, void *vctx)                           \
    {                                                                                          \
        const struct ba_job *j = vctx;                                                         \
        const tg_node *nd = j->nd;                                                             \
        const T *x = nd->in[0]->data, *b = nd->in[1]->data;                                    \
        T *y = nd->out->data, *zs = needs_z_attr(nd) ? (T *)nd->scratch : NULL;               \
        tg_activation act = (tg_activation)nd->attr.axis;                                      \
        T tmp[BLOCK];                                                                          \
        FOR_BLOCKS(j->s, r0, r1, {                                                             \
            size_t at = row * j->s.cols + col, n = nrows * ncols;                              \
            T *z = zs ? zs + at : tmp;                                                         \
            if (j->s.row_bias)                                                                 \
                bias_rows_##SFX(x + at, b + col, z, nrows, ncols);                             \
            else                                                                               \
                bias_cols_##SFX(x + at, b + row, z, nrows, ncols);                             \
            g_fwd_##SFX(act, (T)nd->attr.scale, z, y + at, n);                                 \
        });                                                                                    \
    }

#define BA_VJP_CHUNK(T, SFX)                                                                   \
    static void ba_vjp_chunk_##SFX(size_t r0, size_t r1, void *vctx)                           \
    {                                                                                          \
        const struct ba_job *j = vctx;                                                         \
        const tg_node *nd = j->nd;                                                             \
        const T *y = nd->out->data, *dy = nd->out->grad;                                       \
        T *dx = nd->in[0]->grad, *db = nd->in[1]->grad;                                        \
        const T *zs = needs_z_attr(nd) ? (const T *)nd->scratch : NULL;                        \
        T *part = NULL;                                                                        \
        if (j->s.row_bias && db) {                                                             \
            part = (T *)nd->scratch + (zs ? j->s.rows * j->s.cols : 0) +                       \
                   (r0 / j->s.grain_rows) * j->s.cols;                                         \
            memset(part, 0, j->s.cols * sizeof(T));                                            \
        }                                                                                      \
        tg_activation act = (tg_activation)nd->attr.axis;                                      \
        T tmp[BLOCK];                                                                          \
        FOR_BLOCKS(j->s, r0, r1, {                                                             \
            size_t at = row * j->s.cols + col, n = nrows * ncols;                              \
            g_vjp_##SFX(act, (T)nd->attr.scale, zs ? zs + at : NULL, y + at, dy + at, tmp, n); \
            if (dx)                                                                            \
                acc_##SFX(dx + at, tmp, n);                                                    \
            if (part)                                                                          \
                colsum_##SFX(part + col, tmp, nrows, ncols);                                   \
            else if (db && !j->s.row_bias)                                                     \
                rowsum_##SFX(db + row, tmp, nrows, ncols);                                     \
        });                                                                                    \
    }

BA_FORWARD_CHUNK(float, f32)
BA_FORWARD_CHUNK(double, f64)
BA_VJP_CHUNK(float, f32)
BA_VJP_CHUNK(double, f64)

static tg_status
bias_act_forward(tg_node *nd)
{
    struct ba_job j = {nd, ba_shape_of(nd)};
    tg__parallel_for(j.s.rows, j.s.grain_rows,
                     nd->out->dtype == TG_F32 ? ba_fwd_chunk_f32 : ba_fwd_chunk_f64, &j);
    return TG_OK;
}

static tg_status
bias_act_vjp(tg_node *nd)
{
    tg_tensor *x = nd->in[0], *b = nd->in[1];
    if (!x->grad && !b->grad)
        return TG_OK;
    struct ba_job j = {nd, ba_shape_of(nd)};
    tg__parallel_for(j.s.rows, j.s.grain_rows,
                     nd->out->dtype == TG_F32 ? ba_vjp_chunk_f32 : ba_vjp_chunk_f64, &j);
    if (j.s.row_bias && b->grad && j.s.rows > 0) {
        /* db += the chunk partials, in chunk order */
        size_t zn = needs_z_attr(nd) ? j.s.rows * j.s.cols : 0;
        TG__DISPATCH(nd->out->dtype, T, {
            const T *part = (const T *)nd->scratch + zn;
            T *db = b->grad;
            for (size_t k = 0; k < j.s.chunks; k++)
                for (size_t c = 0; c < j.s.cols; c++)
                    db[c] += part[k * j.s.cols + c];
        });
    }
    return TG_OK;
}

const tg_op tg__op_bias_act = {
    .name = "bias_act",
    .n_inputs = 2,
    .shape = bias_act_shape,
    .forward = bias_act_forward,
    .vjp = bias_act_vjp,
    .scratch_size = bias_act_scratch,
};

tg_tensor *
tg_bias_act(tg_tape *t, tg_tensor *x, tg_tensor *b, tg_activation act)
{
    if (!t)
        return NULL;
    if (t->status == TG_OK && (unsigned)act > TG_ACT_GELU)
        return tg__fail(t, TG_ERR_ARG, "bias_act: unknown activation %d", (int)act);
    struct tg__attr attr = {.axis = (int)act, .scale = act == TG_ACT_LEAKY_RELU ? 0.01 : 0};
    tg_tensor *in[2] = {x, b};
    return tg__record(t, &tg__op_bias_act, in, 2, &attr, NULL);
}
