/*
 * Activations: y = g(x) elementwise, shape(y) = shape(x).
 *
 * Each VJP is dx += dy ⊙ g'(x), with g' written from whichever of x and y is cheaper and
 * stable (sigmoid and tanh use the saved output y). These are the g'(z) of the note's step 2,
 * dZ = dA ⊙ g'(Z) — which the note replaced by the previous layer's output.
 */
#include <tgmath.h>

#include "ops.h"

/* Forward: for every element, y = EXPR of x (and the attribute alpha). */
#define UNARY_FORWARD(nd, EXPR)                                                                \
    TG__DISPATCH((nd)->out->dtype, T, {                                                        \
        const T *xs_ = (nd)->in[0]->data;                                                      \
        T *ys_ = (nd)->out->data;                                                              \
        const T alpha = (T)(nd)->attr.scale;                                                   \
        (void)alpha;                                                                           \
        for (size_t i = 0; i < (nd)->out->size; i++) {                                         \
            const T x = xs_[i];                                                                \
            ys_[i] = (EXPR);                                                                   \
        }                                                                                      \
    })

/* VJP: dx += dy ⊙ DYDX, DYDX an expression of x, y (and alpha). */
#define UNARY_VJP(nd, DYDX)                                                                    \
    do {                                                                                       \
        if (!(nd)->in[0]->grad)                                                                \
            break;                                                                             \
        TG__DISPATCH((nd)->out->dtype, T, {                                                    \
            const T *xs_ = (nd)->in[0]->data, *ys_ = (nd)->out->data;                          \
            const T *dys_ = (nd)->out->grad;                                                   \
            T *dxs_ = (nd)->in[0]->grad;                                                       \
            const T alpha = (T)(nd)->attr.scale;                                               \
            (void)alpha;                                                                       \
            for (size_t i = 0; i < (nd)->out->size; i++) {                                     \
                const T x = xs_[i], y = ys_[i];                                                \
                (void)x, (void)y;                                                              \
                dxs_[i] += dys_[i] * (DYDX);                                                   \
            }                                                                                  \
        });                                                                                    \
    } while (0)

#define UNARY_OP(NAME, FWD, DYDX)                                                              \
    static tg_status NAME##_forward(tg_node *nd)                                               \
    {                                                                                          \
        UNARY_FORWARD(nd, FWD);                                                                \
        return TG_OK;                                                                          \
    }                                                                                          \
    static tg_status NAME##_vjp(tg_node *nd)                                                   \
    {                                                                                          \
        UNARY_VJP(nd, DYDX);                                                                   \
        return TG_OK;                                                                          \
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
UNARY_OP(identity, x, 1)

/*
 * sigmoid:  y = σ(x) = 1 / (1 + e^-x)
 *   σ'(x) = σ(x)(1 - σ(x)):   VJP dx += dy ⊙ y ⊙ (1 - y)     (from the saved output)
 *   For x < 0 we evaluate e^x / (1 + e^x): e^-x would overflow to inf for x << 0. Both
 *   branches are exact where they are used; σ(±inf) = 1 / 0 with gradient 0.
 */
UNARY_OP(sigmoid, x >= 0 ? 1 / (1 + exp(-x)) : exp(x) / (1 + exp(x)), y * (1 - y))

/*
 * tanh:  y = tanh(x)
 *   tanh'(x) = 1 - tanh²(x):  VJP dx += dy ⊙ (1 - y²)
 */
UNARY_OP(tanh, tanh(x), 1 - y * y)

/*
 * relu:  y = max(x, 0)
 *   relu'(x) = [x > 0] (we take 0 at the kink x = 0, as PyTorch does); NaN stays NaN
 *   VJP: dx += dy ⊙ [x > 0]
 */
UNARY_OP(relu, x < 0 ? 0 : x, x > 0 ? 1 : 0) /* written so NaN passes through */

/*
 * softplus:  y = log(1 + e^x) = max(x, 0) + log1p(e^-|x|)
 *   The second form never overflows (e^-|x| <= 1) and keeps precision for x << 0, where
 *   log(1 + tiny) would round to 0: softplus(1000) = 1000, softplus(-1000) = e^-1000.
 *   softplus'(x) = σ(x):  VJP dx += dy ⊙ σ(x)   (two-branch σ as above)
 */
UNARY_OP(softplus, (x > 0 ? x : 0) + log1p(exp(-fabs(x))),
         x >= 0 ? 1 / (1 + exp(-x)) : exp(x) / (1 + exp(x)))

/*
 * gelu (exact):  y = x Φ(x),  Φ(x) = ½ (1 + erf(x / √2))
 *   gelu'(x) = Φ(x) + x φ(x),  φ(x) = e^(-x²/2) / √(2π)
 *   VJP: dx += dy ⊙ (Φ(x) + x φ(x))
 */
UNARY_OP(gelu, x * ((T)0.5 * (1 + erf(x * (T)0.70710678118654752440))),
         (T)0.5 * (1 + erf(x * (T)0.70710678118654752440)) +
             x * exp((T)-0.5 * x * x) * (T)0.39894228040143267794)

/*
 * leaky_relu:  y = x > 0 ? x : α x
 *   VJP: dx += dy ⊙ (x > 0 ? 1 : α)
 */
static tg_status
leaky_relu_forward(tg_node *nd)
{
    UNARY_FORWARD(nd, x < 0 ? alpha * x : x); /* NaN passes through */
    return TG_OK;
}

static tg_status
leaky_relu_vjp(tg_node *nd)
{
    UNARY_VJP(nd, x > 0 ? 1 : alpha);
    return TG_OK;
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
