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
 * and picked at run time (TG__VEC_CLONES). Float64 keeps libm for softplus (log1p); gelu's
 * erf is vmath's in both dtypes (1.2 ulp in float, 3.2 in double). Tensors larger than
 * ACT_GRAIN elements are split into fixed chunks of ACT_GRAIN run by tg__parallel_for: elementwise work, so the result is the
 * same for any thread count; smaller ones run inline with no threading cost.
 */
#include <math.h>
#include <string.h>

#include "../kernels/kernels.h"
#include "loops.h"
#include "ops.h"
#include "unary.h"

#define ACT_GRAIN 8192 /* elements per parallel chunk: see TG__UNARY_GRAIN */
enum { BLOCK = 1024 }; /* elements per stack block inside a chunk (8 KiB of double) */

#define INV_SQRT2 0.70710678118654752440   /* 1/√2 */
#define INV_SQRT2PI 0.39894228040143267794 /* 1/√(2π) */

/* Math of either dtype, picked by the argument's type (vmath.h: branch-free, vectorizable). */
#define VSIGMOID(x) _Generic((x), float: tg__vsigmoidf, double: tg__vsigmoid)(x)
#define VTANH(x) _Generic((x), float: tg__vtanhf, double: tg__vtanh)(x)
#define VEXP(x) _Generic((x), float: tg__vexpf, double: tg__vexp)(x)
#define VLOG1PEXP(x) _Generic((x), float: tg__vlog1pexpf, double: log1pexp_f64)(x)
#define ERF(x) _Generic((x), float: tg__verff, double: tg__verf)(x)

/* log1p(e^-|x|) in double: libm (no vmath version is as accurate yet). */
static inline double
log1pexp_f64(double x)
{
    return log1p(exp(-fabs(x)));
}

/*
 * identity:  y = x
 *   VJP: dx += dy
 */
#define IDENTITY_Y(T, x, alpha, beta) (x)
#define IDENTITY_DYDX(T, x, y, alpha, beta) ((T)1)
#define IDENTITY_VJP_GRAPH tg__vjp_graph_linear
UNARY_OP(identity, IDENTITY, false,
         "y = x",
         "dx += dy")

/*
 * sigmoid:  y = σ(x) = 1 / (1 + e^-x)
 *   σ'(x) = σ(x)(1 - σ(x)):   VJP dx += dy ⊙ y ⊙ (1 - y)     (from the saved output)
 *   Evaluated as e^x / (1 + e^x) for x < 0: e^-x would overflow to inf for x << 0. Both
 *   forms are exact where they are used; σ(±inf) = 1 / 0 with gradient 0; NaN stays NaN.
 *   (tg__vsigmoidf / tg__vsigmoid in vmath.h: ≤ 3 ulp, tested in test-vmath.c.)
 */
#define SIGMOID_Y(T, x, alpha, beta) VSIGMOID(x)
#define SIGMOID_DYDX(T, x, y, alpha, beta) ((y) * (1 - (y)))
static tg_tensor * /* dx = dy ⊙ (y - y²) */
sigmoid_vjp_graph(tg_node *nd, int k, tg_tensor *dy)
{
    (void)k;
    tg_tape *t = nd->tape;
    return tg_mul(t, dy, tg_sub(t, nd->out, tg_square(t, nd->out)));
}
#define SIGMOID_VJP_GRAPH sigmoid_vjp_graph
UNARY_OP(sigmoid, SIGMOID, false,
         "y = σ(x) = 1 / (1 + e^-x)",
         "dx += dy ⊙ y ⊙ (1 - y)")

/*
 * tanh:  y = tanh(x) = sign(x) u / (u + 2),  u = e^(2|x|) - 1   (vmath.h, ≤ 3 ulp)
 *   tanh'(x) = 1 - tanh²(x):  VJP dx += dy ⊙ (1 - y²)
 */
#define TANH_Y(T, x, alpha, beta) VTANH(x)
#define TANH_DYDX(T, x, y, alpha, beta) (1 - (y) * (y))
static tg_tensor * /* dx = dy - dy ⊙ y² */
tanh_vjp_graph(tg_node *nd, int k, tg_tensor *dy)
{
    (void)k;
    tg_tape *t = nd->tape;
    return tg_sub(t, dy, tg_mul(t, dy, tg_square(t, nd->out)));
}
#define TANH_VJP_GRAPH tanh_vjp_graph
UNARY_OP(tanh, TANH, false,
         "y = tanh x",
         "dx += dy ⊙ (1 - y²)")

/*
 * relu:  y = max(x, 0)    (written x < 0 ? 0 : x so that NaN passes through)
 *   relu'(x) = [x > 0] (we take 0 at the kink x = 0, as PyTorch does)
 *   VJP: dx += dy ⊙ [y > 0]   ([y > 0] = [x > 0], and false for NaN either way)
 */
#define RELU_Y(T, x, alpha, beta) ((x) < 0 ? (T)0 : (x))
#define RELU_DYDX(T, x, y, alpha, beta) ((y) > 0 ? (T)1 : (T)0)
#define RELU_VJP_GRAPH tg__vjp_graph_linear
UNARY_OP(relu, RELU, false,
         "y = max(x, 0)",
         "dx += dy ⊙ [x > 0]")

/*
 * softplus:  y = log(1 + e^x) = max(x, 0) + log1p(e^-|x|)
 *   The second form never overflows (e^-|x| <= 1) and keeps precision for x << 0, where
 *   log(1 + tiny) would round to 0: softplus(1000) = 1000, softplus(-1000) = e^-1000.
 *   softplus'(x) = σ(x):  VJP dx += dy ⊙ σ(x)   (the two-form σ above)
 */
#define SOFTPLUS_Y(T, x, alpha, beta) (((x) > 0 ? (x) : (T)0) + VLOG1PEXP(x))
#define SOFTPLUS_DYDX(T, x, y, alpha, beta) VSIGMOID(x)
static tg_tensor * /* dx = dy ⊙ σ(x) */
softplus_vjp_graph(tg_node *nd, int k, tg_tensor *dy)
{
    (void)k;
    return tg_mul(nd->tape, dy, tg_sigmoid(nd->tape, nd->in[0]));
}
#define SOFTPLUS_VJP_GRAPH softplus_vjp_graph
UNARY_OP(softplus, SOFTPLUS, true,
         "y = log(1 + e^x) = max(x, 0) + log1p(e^-|x|)",
         "dx += dy ⊙ σ(x)")

/*
 * gelu (exact):  y = x Φ(x),  Φ(x) = ½ (1 + erf(x / √2))
 *   gelu'(x) = Φ(x) + x φ(x),  φ(x) = e^(-x²/2) / √(2π)
 *   VJP: dx += dy ⊙ (Φ(x) + x φ(x))
 *   Limits: below x = -40 Φ(x) is 0 in both dtypes, so y = -0 there instead of
 *   -inf · 0 = NaN at -inf; beyond |x| = 40 φ(x) is 0 and gelu' = [x > 0], so gelu'(±inf) =
 *   1 / 0 instead of inf · 0.
 */
#define GELU_PHI(T, x) ((T)0.5 * (1 + ERF((x) * (T)INV_SQRT2)))
#define GELU_Y(T, x, alpha, beta) ((x) < -40 ? (T)-0.0 : (x) * GELU_PHI(T, x))
#define GELU_DYDX(T, x, y, alpha, beta)                                                                  \
    ((x) > 40 || (x) < -40 ? ((x) > 0 ? (T)1 : (T)0)                                               \
                           : GELU_PHI(T, x) + (x) * VEXP((T)-0.5 * (x) * (x)) * (T)INV_SQRT2PI)
/* gelu_grad (internal, only in tg_grad's graphs):  y = gelu'(x) = Φ(x) + x φ(x)
 *   y' = gelu''(x) = φ(x) (2 - x²):   VJP dx += dy ⊙ φ(x) (2 - x²)
 *   (Φ has no op of its own, so the derivative of gelu is this op rather than ops) */
#define GELU_GRAD_Y(T, x, alpha, beta) GELU_DYDX(T, x, 0, alpha, beta)
#define GELU_GRAD_DYDX(T, x, y, alpha, beta)                                                       \
    ((x) > 40 || (x) < -40 ? (T)0 : VEXP((T)-0.5 * (x) * (x)) * (T)INV_SQRT2PI * (2 - (x) * (x)))
static tg_tensor * /* dx = dy ⊙ φ(x) (2 - x²),  φ(x) = e^(-x²/2) / √(2π) */
gelu_grad_vjp_graph(tg_node *nd, int k, tg_tensor *dy)
{
    (void)k;
    tg_tape *t = nd->tape;
    tg_tensor *x = nd->in[0], *x2 = tg_square(t, x);
    tg_tensor *phi = tg_scale(t, tg_exp(t, tg_scale(t, x2, -0.5)), INV_SQRT2PI);
    return tg_mul(t, dy, tg_mul(t, phi, tg_sub(t, tg__constant(t, x->dtype, 2), x2)));
}
#define GELU_GRAD_VJP_GRAPH gelu_grad_vjp_graph
UNARY_RULE(gelu_grad, GELU_GRAD, true, "y = Φ(x) + x φ(x), gelu's derivative",
           "dx += dy ⊙ φ(x)(2 - x²)")

static tg_tensor * /* dx = dy ⊙ gelu'(x), gelu' the node above */
gelu_vjp_graph(tg_node *nd, int k, tg_tensor *dy)
{
    (void)k;
    tg_tape *t = nd->tape;
    return tg_mul(t, dy, tg__record(t, &tg__op_gelu_grad, &nd->in[0], 1, NULL, NULL));
}
#define GELU_VJP_GRAPH gelu_vjp_graph
UNARY_OP(gelu, GELU, true,
         "y = x Φ(x), Φ(x) = ½(1 + erf(x/√2))",
         "dx += dy ⊙ (Φ(x) + x φ(x))")

/*
 * gelu_tanh (PyTorch's approximate="tanh"):  y = ½ x (1 + tanh u),  u = c (x + k x³),
 *   c = √(2/π), k = 0.044715
 *   y' = ½ (1 + tanh u) + ½ x (1 - tanh² u) c (1 + 3k x²)
 *   VJP: dx += dy ⊙ y'
 *   vmath.h's tanh saturates to ±1 for large |u|, so y = x or -0 and y' = 1 or 0 there (the
 *   second term is x · 0 = 0 until x³ overflows past |x| ≈ 1e102, float 1e12, clamped below).
 */
#define GELU_TANH_C 0.79788456080286535588 /* √(2/π) */
#define GELU_TANH_K 0.044715
#define GELU_TANH_X(T, x) ((x) > (T)1e6 ? (T)1e6 : (x) < (T)-1e6 ? (T)-1e6 : (x))
#define GELU_TANH_T(T, x)                                                                          \
    VTANH((T)GELU_TANH_C * (GELU_TANH_X(T, x) +                                                    \
                            (T)GELU_TANH_K * GELU_TANH_X(T, x) * GELU_TANH_X(T, x) *               \
                                GELU_TANH_X(T, x)))
#define GELU_TANH_Y(T, x, alpha, beta) ((T)0.5 * (x) * (1 + GELU_TANH_T(T, x)))
#define GELU_TANH_DYDX(T, x, y, alpha, beta)                                                       \
    ((T)0.5 * (1 + GELU_TANH_T(T, x)) +                                                            \
     (T)0.5 * GELU_TANH_X(T, x) * (1 - GELU_TANH_T(T, x) * GELU_TANH_T(T, x)) *                    \
         (T)GELU_TANH_C * (1 + 3 * (T)GELU_TANH_K * GELU_TANH_X(T, x) * GELU_TANH_X(T, x)))
static tg_tensor * /* dx = dy ⊙ (½(1 + th) + ½ x (1 - th²) c (1 + 3k x²)), th = tanh u */
gelu_tanh_vjp_graph(tg_node *nd, int k, tg_tensor *dy)
{
    (void)k;
    tg_tape *t = nd->tape;
    tg_tensor *x = nd->in[0], *x2 = tg_square(t, x), *one = tg__constant(t, x->dtype, 1);
    tg_tensor *u = tg_scale(t, tg_add(t, x, tg_scale(t, tg_mul(t, x2, x), GELU_TANH_K)),
                            GELU_TANH_C);
    tg_tensor *th = tg_tanh(t, u);
    tg_tensor *a = tg_scale(t, tg_add(t, th, one), 0.5);
    tg_tensor *b = tg_mul(t, tg_mul(t, tg_scale(t, x, 0.5), tg_sub(t, one, tg_square(t, th))),
                          tg_scale(t, tg_add(t, one, tg_scale(t, x2, 3 * GELU_TANH_K)), GELU_TANH_C));
    return tg_mul(t, dy, tg_add(t, a, b));
}
#define GELU_TANH_VJP_GRAPH gelu_tanh_vjp_graph
UNARY_OP(gelu_tanh, GELU_TANH, true, "y = ½x(1 + tanh(√(2/π)(x + 0.044715x³)))",
         "dx += dy ⊙ (½(1 + t) + ½x(1 - t²)√(2/π)(1 + 0.134145x²)), t = tanh(…)")

/*
 * silu (swish):  y = x σ(x)
 *   y' = σ(x) + x σ(x)(1 - σ(x)) = σ(x)(1 + x(1 - σ(x)))
 *   VJP: dx += dy ⊙ σ(x)(1 + x(1 - σ(x)))     (σ the two-form sigmoid above: stable)
 */
#define SILU_Y(T, x, alpha, beta) ((x) * VSIGMOID(x))
#define SILU_DYDX(T, x, y, alpha, beta) (VSIGMOID(x) * (1 + (x) * (1 - VSIGMOID(x))))
static tg_tensor * /* dx = dy ⊙ (s + x (s - s²)), s = σ(x) */
silu_vjp_graph(tg_node *nd, int k, tg_tensor *dy)
{
    (void)k;
    tg_tape *t = nd->tape;
    tg_tensor *s = tg_sigmoid(t, nd->in[0]);
    return tg_mul(t, dy, tg_add(t, s, tg_mul(t, nd->in[0], tg_sub(t, s, tg_square(t, s)))));
}
#define SILU_VJP_GRAPH silu_vjp_graph
UNARY_OP(silu, SILU, true, "y = x σ(x)", "dx += dy ⊙ σ(x)(1 + x(1 - σ(x)))")

/*
 * elu:  y = x > 0 ? x : α (e^x - 1)       (α a constant, attr.scale; PyTorch's default 1)
 *   y' = x > 0 ? 1 : α e^x
 *   VJP: dx += dy ⊙ (x > 0 ? 1 : α e^x)    (expm1 keeps y exact for x near 0⁻)
 */
#define VEXPM1(x) _Generic((x), float: tg__vexpm1f, double: tg__vexpm1)(x)
#define ELU_Y(T, x, alpha, beta) ((x) > 0 ? (x) : (alpha) * VEXPM1(x))
#define ELU_DYDX(T, x, y, alpha, beta) ((x) > 0 ? (T)1 : (alpha) * VEXP(x))
static tg_tensor * /* dx = dy ⊙ (x > 0 ? 1 : y + α), the mask a constant */
elu_vjp_graph(tg_node *nd, int k, tg_tensor *dy)
{
    (void)k;
    tg_tape *t = nd->tape;
    const tg_tensor *x = nd->in[0];
    tg_tensor *mask = tg__tensor(tg_tensor_new(t, x->dtype, x->ndim, x->dims, NULL));
    if (mask->kind == TG__KIND_NIL)
        return mask;
    TG__DISPATCH(x->dtype, T, {
        const T *xv = x->data;
        T *m = mask->data;
        for (size_t i = 0; i < x->size; i++)
            m[i] = xv[i] > 0;
    });
    tg_tensor *left = tg_add(t, nd->out, tg__constant(t, x->dtype, nd->attr->scale));
    return tg_mul(t, dy, tg_where(t, mask, tg__constant(t, x->dtype, 1), left));
}
#define ELU_VJP_GRAPH elu_vjp_graph
UNARY_RULE(elu, ELU, true, "y = x > 0 ? x : α(e^x - 1)", "dx += dy ⊙ (x > 0 ? 1 : α e^x)")

tg_tensor *
tg_elu(tg_tape *t, tg_tensor *x, double alpha)
{
    if (!t)
        return NULL;
    if (t->status == TG_OK && !isfinite(alpha)) {
        if (!(x = tg__operand(t, "elu", "x", x)))
            return &t->nil;
        return tg__fail(t, TG_ERR_ARG, "elu %s: alpha %g is not finite", tg__name_text(x).s,
                        alpha);
    }
    struct tg__attr attr = {.scale = alpha};
    return tg__record(t, &tg__op_elu, &x, 1, &attr, NULL);
}

/*
 * leaky_relu:  y = x > 0 ? x : α x      (α a constant, 0.01 in tg_activate)
 *   VJP: dx += dy ⊙ (x > 0 ? 1 : α)
 */
#define LEAKY_RELU_Y(T, x, alpha, beta) ((x) < 0 ? (alpha) * (x) : (x))
#define LEAKY_RELU_DYDX(T, x, y, alpha, beta) ((x) > 0 ? (T)1 : (alpha))
#define LEAKY_RELU_VJP_GRAPH tg__vjp_graph_linear
UNARY_RULE(leaky_relu, LEAKY_RELU, true, "y = x > 0 ? x : α x",
           "dx += dy ⊙ (x > 0 ? 1 : α)")

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

/* The rules by tg_activation, for the fused bias_act below. */
static const struct tg__unary_rule *const act_rules[] = {
    [TG_ACT_IDENTITY] = &identity_rule, [TG_ACT_SIGMOID] = &sigmoid_rule,
    [TG_ACT_TANH] = &tanh_rule,         [TG_ACT_RELU] = &relu_rule,
    [TG_ACT_LEAKY_RELU] = &leaky_relu_rule, [TG_ACT_SOFTPLUS] = &softplus_rule,
    [TG_ACT_GELU] = &gelu_rule,
};
_Static_assert(sizeof act_rules / sizeof act_rules[0] == TG_ACT_GELU + 1,
               "act_rules out of sync with tg_activation");

const struct tg__unary_rule *
tg__act_rule(tg_activation act, double *alpha)
{
    *alpha = act == TG_ACT_LEAKY_RELU ? 0.01 : 0;
    return act_rules[act];
}

/* dst[i] += src[i] */
TG__VEC_CLONES static void
acc_f32(float *restrict dst, const float *restrict src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] += src[i];
}

TG__VEC_CLONES static void
acc_f64(double *restrict dst, const double *restrict src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] += src[i];
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
 *   JVP: Ż = Ẋ + ḃ (broadcast as in the forward),  Ẏ = g'(Z) ⊙ Ż   (the rule's g', from the
 *        saved Y or Z as the VJP takes it; a missing Ẋ or ḃ reads 0)
 *   The same values as tg_activate(tg_add(X, b)) (the same roundings: z = x + b, then g), in
 *   one pass over the data each way instead of two, with one node instead of two.
 *
 *   Rows are split into fixed chunks of about ACT_GRAIN elements (tg__parallel_for): a row
 *   bias's gradient is summed per chunk into the node's scratch and the chunk sums are added
 *   in chunk order, a column bias's per row in one chunk, so db is bit-identical for any
 *   thread count. Inside a chunk, work goes in stack blocks of BLOCK elements (whole rows when
 *   a row fits), so every loop is a flat vectorizable loop over cache-resident data.
 */
#define BIAS_HELPERS(T, SFX)                                                                       \
    /* z = x + b[j] over an (nrows x ncols) block of full rows (or one row segment) */         \
    /* Rows shorter than TG__COLSUM_SHORT go in blocks of TG__COLSUM_BLOCK columns with b's  \
     * block in locals, then a narrower tail column by column (as TG__COLSUM): the plain loop  \
     * pays a vector loop's entry and tail per row, most of a 32 x 16 block's time. */          \
    TG__VEC_CLONES static void bias_rows_##SFX(const T *restrict x, const T *restrict b,           \
                                               T *restrict z, size_t nrows, size_t ncols)          \
    {                                                                                              \
        if (ncols >= TG__COLSUM_SHORT) {                                                           \
            for (size_t i = 0; i < nrows; i++)                                                     \
                for (size_t j = 0; j < ncols; j++)                                                 \
                    z[i * ncols + j] = x[i * ncols + j] + b[j];                                    \
            return;                                                                                \
        }                                                                                          \
        size_t j0 = 0;                                                                             \
        for (; j0 + TG__COLSUM_BLOCK <= ncols; j0 += TG__COLSUM_BLOCK) {                           \
            T bb[TG__COLSUM_BLOCK];                                                                \
            for (size_t k = 0; k < TG__COLSUM_BLOCK; k++)                                          \
                bb[k] = b[j0 + k];                                                                 \
            for (size_t i = 0; i < nrows; i++)                                                     \
                for (size_t k = 0; k < TG__COLSUM_BLOCK; k++)                                      \
                    z[i * ncols + j0 + k] = x[i * ncols + j0 + k] + bb[k];                         \
        }                                                                                          \
        for (; j0 < ncols; j0++) {                                                                 \
            const T bj = b[j0];                                                                    \
            for (size_t i = 0; i < nrows; i++)                                                     \
                z[i * ncols + j0] = x[i * ncols + j0] + bj;                                        \
        }                                                                                          \
    }                                                                                              \
    /* z = x + b[i] */                                                                         \
    TG__VEC_CLONES static void bias_cols_##SFX(const T *restrict x, const T *restrict b,           \
                                               T *restrict z, size_t nrows, size_t ncols)          \
    {                                                                                              \
        for (size_t i = 0; i < nrows; i++) {                                                       \
            const T bi = b[i];                                                                     \
            for (size_t j = 0; j < ncols; j++)                                                     \
                z[i * ncols + j] = x[i * ncols + j] + bi;                                          \
        }                                                                                          \
    }                                                                                              \
    /* acc[j] += Σ_i v[i][j], rows in order */                                                 \
    TG__VEC_CLONES static void colsum_##SFX(T *restrict acc, const T *restrict v,                  \
                                            size_t nrows, size_t ncols)                            \
    {                                                                                              \
        TG__COLSUM(T, acc, nrows, ncols, v[at]);                                                   \
    }                                                                                              \
    /* acc[i] += Σ_j v[i][j]: 8 lane sums (j mod 8) in a fixed tree, then the tail, so the   \
     * compiler can vectorize without reassociating anything on its own */                         \
    TG__VEC_CLONES static void rowsum_##SFX(T *restrict acc, const T *restrict v,                  \
                                            size_t nrows, size_t ncols)                            \
    {                                                                                              \
        for (size_t i = 0; i < nrows; i++) {                                                       \
            const T *row = v + i * ncols;                                                          \
            T l[8] = {0, 0, 0, 0, 0, 0, 0, 0};                                                     \
            size_t j = 0;                                                                          \
            for (; j + 8 <= ncols; j += 8)                                                         \
                for (size_t k = 0; k < 8; k++)                                                     \
                    l[k] += row[j + k];                                                            \
            T s = ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]));               \
            for (; j < ncols; j++)                                                                 \
                s += row[j];                                                                       \
            acc[i] += s;                                                                           \
        }                                                                                          \
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

static const struct tg__unary_rule *
rule_of(const tg_node *nd)
{
    return act_rules[nd->attr->axis];
}

static bool
needs_z_attr(const tg_node *nd)
{
    return rule_of(nd)->needs_x;
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
    return n * tg__dtype_bytes(nd->in[0]->dtype);
}

struct ba_job {
    const tg_node *nd;
    struct ba_shape s;
    bool assign_dx; /* VJP: dX holds nothing yet: dZ is written straight into it */
};

/* Runs the body on the blocks of rows [r0, r1) with row, col, nrows, ncols set: whole rows
 * when a row fits in BLOCK, else row segments; either way nrows·ncols contiguous elements. */
#define FOR_BLOCKS(s, r0, r1, ...)                                                                 \
    do {                                                                                           \
        if ((s).cols <= BLOCK) {                                                                   \
            size_t per_ = (s).cols ? BLOCK / (s).cols : 1;                                         \
            for (size_t row = (r0); row < (r1); row += per_) {                                     \
                size_t nrows = (r1) - row < per_ ? (r1) - row : per_, col = 0,                     \
                       ncols = (s).cols;                                                           \
                __VA_ARGS__;                                                                       \
            }                                                                                      \
        } else {                                                                                   \
            for (size_t row = (r0); row < (r1); row++)                                             \
                for (size_t col = 0; col < (s).cols; col += BLOCK) {                               \
                    size_t nrows = 1,                                                              \
                           ncols = (s).cols - col < BLOCK ? (s).cols - col : BLOCK;                \
                    __VA_ARGS__;                                                                   \
                }                                                                                  \
        }                                                                                          \
    } while (0)

#define BA_FORWARD_CHUNK(T, SFX)                                                                   \
    static void ba_fwd_chunk_##SFX(size_t r0, size_t r1, void *vctx)                               \
    {                                                                                              \
        const struct ba_job *j = vctx;                                                             \
        const tg_node *nd = j->nd;                                                                 \
        const T *x = nd->in[0]->data, *b = nd->in[1]->data;                                        \
        T *y = nd->out->data, *zs = needs_z_attr(nd) ? (T *)nd->scratch : NULL;                    \
        const struct tg__unary_rule *rule = rule_of(nd);                                                 \
        T tmp[BLOCK];                                                                              \
        FOR_BLOCKS(j->s, r0, r1, {                                                                 \
            size_t at = row * j->s.cols + col, n = nrows * ncols;                                  \
            T *z = zs ? zs + at : tmp;                                                             \
            if (j->s.row_bias)                                                                     \
                bias_rows_##SFX(x + at, b + col, z, nrows, ncols);                                 \
            else                                                                                   \
                bias_cols_##SFX(x + at, b + row, z, nrows, ncols);                                 \
            rule->fwd_##SFX((T)nd->attr->scale, (T)nd->attr->scale2, z, y + at, n);                                      \
        });                                                                                        \
    }

#define BA_VJP_CHUNK(T, SFX)                                                                       \
    static void ba_vjp_chunk_##SFX(size_t r0, size_t r1, void *vctx)                               \
    {                                                                                              \
        const struct ba_job *j = vctx;                                                             \
        const tg_node *nd = j->nd;                                                                 \
        const T *y = nd->out->data, *dy = nd->out->grad;                                           \
        T *dx = nd->in[0]->grad, *db = nd->in[1]->grad;                                            \
        const T *zs = needs_z_attr(nd) ? (const T *)nd->scratch : NULL;                            \
        T *part = NULL;                                                                            \
        if (j->s.row_bias && db) {                                                                 \
            part = (T *)nd->scratch + (zs ? j->s.rows * j->s.cols : 0) +                           \
                   (r0 / j->s.grain_rows) * j->s.cols;                                             \
            memset(part, 0, j->s.cols * sizeof(T));                                                \
        }                                                                                          \
        const struct tg__unary_rule *rule = rule_of(nd);                                                 \
        T tmp[BLOCK];                                                                              \
        FOR_BLOCKS(j->s, r0, r1, {                                                                 \
            size_t at = row * j->s.cols + col, n = nrows * ncols;                                  \
            T *dz = j->assign_dx ? dx + at : tmp;                                                  \
            rule->dz_##SFX((T)nd->attr->scale, (T)nd->attr->scale2, zs ? zs + at : NULL, y + at,   \
                           dy + at, dz, n);                                                        \
            if (dx && !j->assign_dx)                                                               \
                acc_##SFX(dx + at, tmp, n);                                                        \
            if (part)                                                                              \
                colsum_##SFX(part + col, dz, nrows, ncols);                                        \
            else if (db && !j->s.row_bias)                                                         \
                rowsum_##SFX(db + row, dz, nrows, ncols);                                          \
        });                                                                                        \
    }

/* Ẏ = g'(Z) ⊙ Ż over the blocks of rows [r0, r1), Ż = Ẋ + ḃ built per block in a stack block
 * (Ẋ itself when there is no ḃ) */
#define BA_JVP_CHUNK(T, SFX)                                                                       \
    static void ba_jvp_chunk_##SFX(size_t r0, size_t r1, void *vctx)                               \
    {                                                                                              \
        const struct ba_job *j = vctx;                                                             \
        const tg_node *nd = j->nd;                                                                 \
        const T *y = nd->out->data, *xd = nd->in[0]->tangent, *bd = nd->in[1]->tangent;            \
        const T *zs = needs_z_attr(nd) ? (const T *)nd->scratch : NULL;                            \
        T *yd = nd->out->tangent;                                                                  \
        const struct tg__unary_rule *rule = rule_of(nd);                                           \
        T zd_block[BLOCK];                                                                         \
        FOR_BLOCKS(j->s, r0, r1, {                                                                 \
            size_t at = row * j->s.cols + col, n = nrows * ncols;                                  \
            const T *zd = xd ? xd + at : zd_block;                                                 \
            if (bd) {                                                                              \
                const T *bb = j->s.row_bias ? bd + col : bd + row;                                 \
                if (xd && j->s.row_bias)                                                           \
                    bias_rows_##SFX(xd + at, bb, zd_block, nrows, ncols);                          \
                else if (xd)                                                                       \
                    bias_cols_##SFX(xd + at, bb, zd_block, nrows, ncols);                          \
                else                                                                               \
                    for (size_t i = 0; i < nrows; i++)                                             \
                        for (size_t c = 0; c < ncols; c++)                                         \
                            zd_block[i * ncols + c] = j->s.row_bias ? bb[c] : bb[i];               \
                zd = zd_block;                                                                     \
            }                                                                                      \
            rule->dz_##SFX((T)nd->attr->scale, (T)nd->attr->scale2, zs ? zs + at : NULL, y + at,     \
                           zd, yd + at, n);                                                        \
        });                                                                                        \
    }

BA_FORWARD_CHUNK(float, f32)
BA_FORWARD_CHUNK(double, f64)
BA_VJP_CHUNK(float, f32)
BA_VJP_CHUNK(double, f64)
BA_JVP_CHUNK(float, f32)
BA_JVP_CHUNK(double, f64)

static tg_status
bias_act_forward(tg_node *nd)
{
    struct ba_job j = {.nd = nd, .s = ba_shape_of(nd)};
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
    /* Listed by tg__vjp_takes_fresh: a fresh dX is written, not zeroed and added to (a pass
     * over it and a zeroing saved); a fresh db (a bias that is not a parameter) is zeroed
     * here, as the tape would have, since the partial sums are added into it. */
    struct ba_job j = {.nd = nd, .s = ba_shape_of(nd),
                       .assign_dx = x->grad && tg__grad_take_fresh(x)};
    if (b->grad && tg__grad_take_fresh(b))
        memset(b->grad, 0, tg__nbytes(b));
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

/* Elementwise in fixed row chunks (the forward's): the same bits for any thread count. The
 * node's scratch is only read (Z for the rules whose g' needs it). */
static tg_status
bias_act_jvp(tg_node *nd)
{
    struct ba_job j = {.nd = nd, .s = ba_shape_of(nd)};
    tg__parallel_for(j.s.rows, j.s.grain_rows,
                     nd->out->dtype == TG_F32 ? ba_jvp_chunk_f32 : ba_jvp_chunk_f64, &j);
    return TG_OK;
}

/* For tg_grad. Identity and the relu family are piecewise linear: the generic node. Otherwise
 * dz = dy ⊙ g'(z) from the activation's own vjp_graph on z = x + b (recorded again, so it is
 * differentiable) and the output y, then dx = dz, db = Σ_broadcast dz. */
static tg_tensor *
bias_act_vjp_graph(tg_node *nd, int k, tg_tensor *dy)
{
    static const tg_op *const act_ops[] = {
        [TG_ACT_SIGMOID] = &tg__op_sigmoid, [TG_ACT_TANH] = &tg__op_tanh,
        [TG_ACT_SOFTPLUS] = &tg__op_softplus, [TG_ACT_GELU] = &tg__op_gelu,
    };
    tg_activation act = (tg_activation)nd->attr->axis;
    if (act == TG_ACT_IDENTITY || act == TG_ACT_RELU || act == TG_ACT_LEAKY_RELU)
        return tg__vjp_graph_linear(nd, k, dy);
    tg_tape *t = nd->tape;
    tg_tensor *z = tg__tensor(tg_add(t, nd->in[0], nd->in[1]));
    if (z->kind == TG__KIND_NIL)
        return z;
    /* the activation's node as it would be, y = g(z): its vjp_graph reads only in[0] and out */
    tg_node g = *nd;
    g.op = act_ops[act];
    g.n_in = 1;
    g.in = g.in_small;
    g.in_small[0] = z;
    tg_tensor *dz = g.op->vjp_graph(&g, 0, dy);
    return tg__sum_to(t, dz, nd->in[k]);
}

const tg_op tg__op_bias_act = {
    .name = "bias_act",
    .n_inputs = 2,
    .shape = bias_act_shape,
    .forward = bias_act_forward,
    .vjp = bias_act_vjp,
    .vjp_graph = bias_act_vjp_graph,
    .jvp = bias_act_jvp,
    .scratch_size = bias_act_scratch,
    .math = "Y = g(X + b), g an activation",
    .vjp_math = "dZ = dY ⊙ g'(Z);  dX += dZ;  db += Σ_broadcast dZ",
    .jvp_math = "Ẏ = g'(Z) ⊙ (Ẋ + ḃ broadcast)",
    .shapes = "X (r x c), b (1 x c) or (r x 1) → (r x c)",
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
