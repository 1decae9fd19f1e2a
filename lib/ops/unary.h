/*
 * The machinery of elementwise one-input ops (activations in activation.c, math functions in
 * math.c): y = g(x), shape(y) = shape(x), VJP dx += dy ⊙ g'(x).
 *
 * How such an op is written: its math comment, then two expressions of one element,
 *   <NAME>_Y(T, x, alpha, beta)          the forward, y = g(x)
 *   <NAME>_DYDX(T, x, y, alpha, beta)    the derivative g'(x), from x or the saved output y
 *   <NAME>_VJP_GRAPH                     the VJP recorded as ops, for tg_grad (dx = dy ⊙ g'
 *                                        with g' written in ops; tg__vjp_graph_linear for the
 *                                        piecewise linear ones; NULL: not differentiable twice)
 * (alpha and beta are the op's constants, attr.scale and attr.scale2: leaky_relu's slope,
 * pow's exponent, clamp's bounds), and UNARY_OP(name, NAME, needs_x, MATH, VJP), which turns
 * them into array loops for float and double (compiled for AVX-512, AVX2 and baseline x86-64,
 * chosen at run time), the tg_op (MATH and VJP are its one-line docs for docs/ops.md) and,
 * for ops without constants, the public function tg_<name>(tape, x). needs_x says whether g'
 * reads x (so the fused bias_act must keep Z).
 *
 * Threads: tensors larger than TG__UNARY_GRAIN elements are split into fixed chunks of that
 * size run by tg__parallel_for. The work is elementwise, so results are the same for any
 * thread count; smaller tensors run inline with no threading cost.
 */
#ifndef TG_OPS_UNARY_H
#define TG_OPS_UNARY_H

#include "ops.h"
#include "vmath.h"

/* Elements per parallel chunk: 32 KiB of float. An activation is a serial stretch between two
 * split products unless it is cut: with 32768, B-seed's 128 x 256 tanh ran as one chunk on one
 * thread while the other waited. A chunk of 8192 still costs a few microseconds (vmath's tanh,
 * ~0.5 ns per element), several times a hand-off to a spinning worker. */
#define TG__UNARY_GRAIN 8192

struct tg__unary_rule {
    void (*fwd_f32)(float alpha, float beta, const float *x, float *y, size_t n);
    void (*fwd_f64)(double alpha, double beta, const double *x, double *y, size_t n);
    /* dz[i] = dy[i] · g'(x[i]); x is NULL when !needs_x; dz may not alias the inputs */
    void (*dz_f32)(float alpha, float beta, const float *x, const float *y, const float *dy,
                   float *dz, size_t n);
    void (*dz_f64)(double alpha, double beta, const double *x, const double *y,
                   const double *dy, double *dz, size_t n);
    bool needs_x;
};

/* The rule of a tg_activation (valid: checked by the caller) and its constant (leaky_relu's
 * slope), for the ops that fuse one: bias_act, batch_norm. */
const struct tg__unary_rule *tg__act_rule(tg_activation act, double *alpha);

/* The forward and VJP of node nd with rule r (alpha, beta from nd->attr). */
tg_status tg__unary_forward(tg_node *nd, const struct tg__unary_rule *r);
tg_status tg__unary_vjp(tg_node *nd, const struct tg__unary_rule *r);
/* Forward mode: ẏ = g'(x) ⊙ ẋ, the same g' as the VJP (written once per op: the exact check
 * of such an op tests the loops, the central-difference check of its JVP tests g'). */
tg_status tg__unary_jvp(tg_node *nd, const struct tg__unary_rule *r);

#define TG__UNARY_LOOPS(op, NAME, T, SFX)                                                          \
    TG__VEC_CLONES static void op##_fwd_##SFX(T alpha, T beta, const T *restrict x,                \
                                              T *restrict y, size_t n)                             \
    {                                                                                              \
        (void)alpha, (void)beta;                                                                   \
        for (size_t i = 0; i < n; i++)                                                             \
            y[i] = NAME##_Y(T, x[i], alpha, beta);                                                 \
    }                                                                                              \
    TG__VEC_CLONES static void op##_dz_##SFX(T alpha, T beta, const T *restrict x,                 \
                                             const T *restrict y, const T *restrict dy,            \
                                             T *restrict dz, size_t n)                             \
    {                                                                                              \
        (void)alpha, (void)beta, (void)x, (void)y;                                                 \
        for (size_t i = 0; i < n; i++)                                                             \
            dz[i] = dy[i] * (NAME##_DYDX(T, x[i], y[i], alpha, beta));                             \
    }

/* Kernels, the rule and the tg_op, without the public function (ops with constants write
 * their own, which checks the constants). */
#define UNARY_RULE(op, NAME, needs_x_, MATH, VJP)                                                  \
    TG__UNARY_LOOPS(op, NAME, float, f32)                                                          \
    TG__UNARY_LOOPS(op, NAME, double, f64)                                                         \
    static const struct tg__unary_rule op##_rule = {op##_fwd_f32, op##_fwd_f64, op##_dz_f32,       \
                                                    op##_dz_f64, needs_x_};                        \
    static tg_status op##_forward(tg_node *nd)                                                     \
    {                                                                                              \
        return tg__unary_forward(nd, &op##_rule);                                                  \
    }                                                                                              \
    static tg_status op##_vjp(tg_node *nd)                                                         \
    {                                                                                              \
        return tg__unary_vjp(nd, &op##_rule);                                                      \
    }                                                                                              \
    static tg_status op##_jvp(tg_node *nd)                                                         \
    {                                                                                              \
        return tg__unary_jvp(nd, &op##_rule);                                                      \
    }                                                                                              \
    const tg_op tg__op_##op = {                                                                    \
        .name = #op,                                                                               \
        .n_inputs = 1,                                                                             \
        .shape = tg__shape_same,                                                                   \
        .forward = op##_forward,                                                                   \
        .vjp = op##_vjp,                                                                           \
        .math = MATH,                                                                              \
        .vjp_math = VJP,                                                                           \
        .shapes = "x any shape → y the same",                                                      \
        .jvp = op##_jvp,                                                                           \
        .vjp_graph = NAME##_VJP_GRAPH,                                                             \
        .jvp_math = "ẏ = g'(x) ⊙ ẋ, g' as in the VJP",                                           \
    };

#define UNARY_OP(op, NAME, needs_x_, MATH, VJP)                                                    \
    UNARY_RULE(op, NAME, needs_x_, MATH, VJP)                                                      \
    tg_tensor *tg_##op(tg_tape *t, tg_tensor *x)                                                   \
    {                                                                                              \
        return t ? tg__record(t, &tg__op_##op, &x, 1, NULL, NULL) : NULL;                          \
    }

#endif /* TG_OPS_UNARY_H */
