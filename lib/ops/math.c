/*
 * Elementwise math of one input: neg, exp, log, log1p, sqrt, square, abs, pow, clamp.
 * y = g(x), shape(y) = shape(x), VJP dx += dy ⊙ g'(x) (unary.h has the machinery). For
 * tg_grad each op also writes dy ⊙ g'(x) with ops (<NAME>_VJP_GRAPH), so g'' comes from
 * those ops' own rules; the piecewise linear ones (neg, abs, clamp) use the generic node.
 *
 * Outside a function's domain the result is what PyTorch (and IEEE libm) gives, not an error:
 * log(x < 0) = NaN, log(0) = -inf, sqrt(x < 0) = NaN, pow(x < 0, non-integer p) = NaN. A NaN
 * can then be caught by tg_tape_set_check_finite, which names the node that made it.
 *
 * exp, neg, square, abs and clamp are branch-free and vectorized (vmath.h's e^x); log, log1p,
 * sqrt and pow call libm per element (sqrt compiles to the vector instruction).
 */
#include <math.h>

#include "../kernels/kernels.h"
#include "unary.h"

#define VEXP(x) _Generic((x), float: tg__vexpf_fma, double: tg__vexp)(x)
#define LOG(x) _Generic((x), float: logf, double: log)(x)
#define LOG1P(x) _Generic((x), float: log1pf, double: log1p)(x)
#define SQRT(x) _Generic((x), float: sqrtf, double: sqrt)(x)
#define POW(x, p) _Generic((x), float: powf, double: pow)(x, p)

/*
 * neg:  y = -x
 *   VJP: dx -= dy
 */
#define NEG_Y(T, x, alpha, beta) (-(x))
#define NEG_DYDX(T, x, y, alpha, beta) ((T)-1)
#define NEG_VJP_GRAPH tg__vjp_graph_linear
UNARY_OP(neg, NEG, false, "y = -x", "dx -= dy")

/*
 * exp:  y = e^x
 *   (e^x)' = e^x = y:   VJP dx += dy ⊙ y   (from the saved output: no second exp)
 *   vmath.h's e^x (float: the FMA form, ≤ 1.5 ulp); overflows to inf past x ≈ 88.7 (float) / 709.8 (double).
 */
#define EXP_Y(T, x, alpha, beta) VEXP(x)
#define EXP_DYDX(T, x, y, alpha, beta) (y)
static tg_tensor * /* dx = dy ⊙ y */
exp_vjp_graph(tg_node *nd, int k, tg_tensor *dy)
{
    (void)k;
    return tg_mul(nd->tape, dy, nd->out);
}
#define EXP_VJP_GRAPH exp_vjp_graph
UNARY_OP(exp, EXP, false, "y = e^x", "dx += dy ⊙ y")

/*
 * log:  y = ln x
 *   (ln x)' = 1/x:   VJP dx += dy / x     (x = 0: ±inf, as PyTorch)
 */
#define LOG_Y(T, x, alpha, beta) LOG(x)
#define LOG_DYDX(T, x, y, alpha, beta) (1 / (x))
static tg_tensor * /* dx = dy / x */
log_vjp_graph(tg_node *nd, int k, tg_tensor *dy)
{
    (void)k;
    return tg_div(nd->tape, dy, nd->in[0]);
}
#define LOG_VJP_GRAPH log_vjp_graph
UNARY_OP(log, LOG, true, "y = ln x (NaN for x < 0, -inf at 0)", "dx += dy / x")

/*
 * log1p:  y = ln(1 + x)    (exact near x = 0, where 1 + x would round)
 *   VJP: dx += dy / (1 + x)
 */
#define LOG1P_Y(T, x, alpha, beta) LOG1P(x)
#define LOG1P_DYDX(T, x, y, alpha, beta) (1 / (1 + (x)))
static tg_tensor * /* dx = dy / (1 + x) */
log1p_vjp_graph(tg_node *nd, int k, tg_tensor *dy)
{
    (void)k;
    tg_tape *t = nd->tape;
    return tg_div(t, dy, tg_add(t, nd->in[0], tg__constant(t, nd->out->dtype, 1)));
}
#define LOG1P_VJP_GRAPH log1p_vjp_graph
UNARY_OP(log1p, LOG1P, true, "y = ln(1 + x)", "dx += dy / (1 + x)")

/*
 * sqrt:  y = √x
 *   (√x)' = 1 / (2√x) = 1 / (2y):   VJP dx += dy / (2y)   (inf at x = 0, as PyTorch)
 */
#define SQRT_Y(T, x, alpha, beta) SQRT(x)
#define SQRT_DYDX(T, x, y, alpha, beta) ((T)0.5 / (y))
static tg_tensor * /* dx = ½ dy / y */
sqrt_vjp_graph(tg_node *nd, int k, tg_tensor *dy)
{
    (void)k;
    return tg_div(nd->tape, tg_scale(nd->tape, dy, 0.5), nd->out);
}
#define SQRT_VJP_GRAPH sqrt_vjp_graph
UNARY_OP(sqrt, SQRT, false, "y = √x (NaN for x < 0)", "dx += dy / (2y)")

/*
 * square:  y = x²
 *   VJP: dx += 2 x dy
 */
#define SQUARE_Y(T, x, alpha, beta) ((x) * (x))
#define SQUARE_DYDX(T, x, y, alpha, beta) (2 * (x))
static tg_tensor * /* dx = 2 x ⊙ dy */
square_vjp_graph(tg_node *nd, int k, tg_tensor *dy)
{
    (void)k;
    return tg_scale(nd->tape, tg_mul(nd->tape, dy, nd->in[0]), 2);
}
#define SQUARE_VJP_GRAPH square_vjp_graph
UNARY_OP(square, SQUARE, true, "y = x²", "dx += 2 x ⊙ dy")

/*
 * abs:  y = |x|
 *   |x|' = sign(x), taken 0 at the kink x = 0 (PyTorch's sgn): VJP dx += dy ⊙ sign(x)
 */
#define ABS_Y(T, x, alpha, beta) ((x) < 0 ? -(x) : (x))
#define ABS_DYDX(T, x, y, alpha, beta) ((x) > 0 ? (T)1 : (x) < 0 ? (T)-1 : (T)0)
#define ABS_VJP_GRAPH tg__vjp_graph_linear
UNARY_OP(abs, ABS, true, "y = |x|", "dx += dy ⊙ sign(x) (0 at x = 0)")

/*
 * pow:  y = x^p,  p a constant (attr.scale)
 *   (x^p)' = p x^(p-1):   VJP dx += dy ⊙ p x^(p-1)
 *   p = 0 has derivative 0 everywhere (also at x = 0, where p x^(p-1) would be 0·inf), as in
 *   PyTorch. A negative x with a non-integer p gives NaN (libm's pow, PyTorch's too).
 */
#define POW_Y(T, x, alpha, beta) POW(x, alpha)
#define POW_DYDX(T, x, y, alpha, beta) ((alpha) == 0 ? (T)0 : (alpha) * POW(x, (alpha) - 1))
static tg_tensor * /* dx = dy ⊙ p x^(p-1); none when p = 0 */
pow_vjp_graph(tg_node *nd, int k, tg_tensor *dy)
{
    (void)k;
    tg_tape *t = nd->tape;
    double p = nd->attr->scale;
    return p == 0 ? NULL : tg_mul(t, dy, tg_scale(t, tg_pow(t, nd->in[0], p - 1), p));
}
#define POW_VJP_GRAPH pow_vjp_graph
UNARY_RULE(pow, POW, true, "y = x^p (p constant)", "dx += dy ⊙ p x^(p-1) (0 when p = 0)")

tg_tensor *
tg_pow(tg_tape *t, tg_tensor *x, double p)
{
    if (!t)
        return NULL;
    if (t->status == TG_OK && !isfinite(p)) {
        if (!(x = tg__operand(t, "pow", "x", x)))
            return &t->nil;
        return tg__fail(t, TG_ERR_ARG, "pow %s: exponent %g is not finite", tg__name_text(x).s,
                        p);
    }
    struct tg__attr attr = {.scale = p};
    return tg__record(t, &tg__op_pow, &x, 1, &attr, NULL);
}

/*
 * clamp:  y = min(max(x, lo), hi)      (lo = attr.scale, hi = attr.scale2)
 *   VJP: dx += dy ⊙ [lo <= x <= hi]    (the gradient passes at the bounds themselves, as
 *   PyTorch's clamp_backward). lo > hi gives hi everywhere with gradient 0, as torch.clamp;
 *   NaN passes through (both comparisons are false).
 */
#define CLAMP_Y(T, x, alpha, beta)                                                                 \
    ((x) < (alpha) ? ((alpha) > (beta) ? (beta) : (alpha)) : (x) > (beta) ? (beta) : (x))
#define CLAMP_DYDX(T, x, y, alpha, beta) ((x) >= (alpha) && (x) <= (beta) ? (T)1 : (T)0)
#define CLAMP_VJP_GRAPH tg__vjp_graph_linear
UNARY_RULE(clamp, CLAMP, true, "y = min(max(x, lo), hi)", "dx += dy ⊙ [lo ≤ x ≤ hi]")

tg_tensor *
tg_clamp(tg_tape *t, tg_tensor *x, double lo, double hi)
{
    if (!t)
        return NULL;
    if (t->status == TG_OK && (isnan(lo) || isnan(hi))) {
        if (!(x = tg__operand(t, "clamp", "x", x)))
            return &t->nil;
        return tg__fail(t, TG_ERR_ARG, "clamp %s: bound %s is NaN (use ±INFINITY for no bound)",
                        tg__name_text(x).s, isnan(lo) ? "lo" : "hi");
    }
    struct tg__attr attr = {.scale = lo, .scale2 = hi};
    return tg__record(t, &tg__op_clamp, &x, 1, &attr, NULL);
}
