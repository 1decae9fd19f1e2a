/*
 * Losses that are the mean of a pointwise term of a prediction a and a target y of the same
 * shape (any rank): bce_with_logits, l1, huber, smooth_l1. The result is (1 x 1):
 *   J = (1/N) Σ_i f(a_i, y_i),   VJP da_i += dJ ∂f/∂a_i / N,  dy_i += dJ ∂f/∂y_i / N
 *   JVP: J̇ = (1/N) Σ_i [∂f/∂a_i ȧ_i + ∂f/∂y_i ẏ_i], the term of an input without a tangent left
 *   out (not multiplied by 0: ∂f/∂y = -a of bce is infinite at an infinite logit)
 * For tg_grad each op writes its VJP with ops too (<op>_vjp_graph, after the op): dJ ⊙ ∂f/∂a / N
 * with ∂f/∂a in ops.
 * Both inputs get gradients (a target computed by the network is differentiated too, as in
 * PyTorch). Sums run in double, in element order, so the value is fixed by the input.
 */
#include <math.h>
#include <string.h>

#include "ops.h"
#include "vmath.h"

/*
 * A loss from expressions of a, y (doubles) and the constant c (attr.scale):
 *   F       the term f(a, y);  DA, DY  its partial derivatives
 *   JA, JY  the directional derivative's terms along ȧ = ta and along ẏ = ty
 */
#define POINTWISE_LOSS(op, F, DA, DY, JA, JY, MATH, VJP, JVP)                                      \
    static tg_tensor *op##_vjp_graph(tg_node *nd, int k, tg_tensor *dj);                           \
    static tg_status op##_forward(tg_node *nd)                                                     \
    {                                                                                              \
        double acc = 0, c = nd->attr->scale;                                                        \
        (void)c;                                                                                   \
        TG__DISPATCH(nd->out->dtype, T, {                                                          \
            const T *av = nd->in[0]->data, *yv = nd->in[1]->data;                                  \
            for (size_t i = 0; i < nd->in[0]->size; i++) {                                         \
                double a = (double)av[i], y = (double)yv[i];                                       \
                acc += (F);                                                                        \
            }                                                                                      \
            ((T *)nd->out->data)[0] = (T)(acc / (double)nd->in[0]->size);                          \
        });                                                                                        \
        return TG_OK;                                                                              \
    }                                                                                              \
    static tg_status op##_vjp(tg_node *nd)                                                         \
    {                                                                                              \
        double c = nd->attr->scale;                                                                 \
        (void)c;                                                                                   \
        TG__DISPATCH(nd->out->dtype, T, {                                                          \
            const T *av = nd->in[0]->data, *yv = nd->in[1]->data;                                  \
            T *da = nd->in[0]->grad, *dy = nd->in[1]->grad;                                        \
            double g = (double)((const T *)nd->out->grad)[0] / (double)nd->in[0]->size;            \
            for (size_t i = 0; i < nd->in[0]->size; i++) {                                         \
                double a = (double)av[i], y = (double)yv[i];                                       \
                (void)a, (void)y;                                                                  \
                if (da)                                                                            \
                    da[i] += (T)(g * (DA));                                                        \
                if (dy)                                                                            \
                    dy[i] += (T)(g * (DY));                                                        \
            }                                                                                      \
        });                                                                                        \
        return TG_OK;                                                                              \
    }                                                                                              \
    static tg_status op##_jvp(tg_node *nd)                                                         \
    {                                                                                              \
        double acc = 0, c = nd->attr->scale;                                                        \
        (void)c;                                                                                   \
        TG__DISPATCH(nd->out->dtype, T, {                                                          \
            const T *av = nd->in[0]->data, *yv = nd->in[1]->data;                                  \
            const T *tav = nd->in[0]->tangent, *tyv = nd->in[1]->tangent;                          \
            for (size_t i = 0; i < nd->in[0]->size; i++) {                                         \
                double a = (double)av[i], y = (double)yv[i];                                       \
                if (tav) {                                                                         \
                    double ta = (double)tav[i];                                                    \
                    acc += (JA);                                                                   \
                }                                                                                  \
                if (tyv) {                                                                         \
                    double ty = (double)tyv[i];                                                    \
                    acc += (JY);                                                                   \
                }                                                                                  \
            }                                                                                      \
            ((T *)nd->out->tangent)[0] = (T)(acc / (double)nd->in[0]->size);                       \
        });                                                                                        \
        return TG_OK;                                                                              \
    }                                                                                              \
    const tg_op tg__op_##op = {                                                                    \
        .name = #op,                                                                               \
        .n_inputs = 2,                                                                             \
        .shape = pointwise_shape,                                                                  \
        .forward = op##_forward,                                                                   \
        .vjp = op##_vjp,                                                                           \
        .jvp = op##_jvp,                                                                           \
        .vjp_graph = op##_vjp_graph,                                                               \
        .math = MATH,                                                                              \
        .vjp_math = VJP,                                                                           \
        .jvp_math = JVP,                                                                           \
        .shapes = "a, y the same shape (any rank, not empty) → (1 x 1)",                           \
    };

static tg_status
pointwise_shape(tg_node *nd, int *ndim, int64_t *dims)
{
    const tg_tensor *a = nd->in[0], *y = nd->in[1];
    if (a->ndim != y->ndim || memcmp(a->dims, y->dims, (size_t)a->ndim * sizeof a->dims[0])) {
        tg__fail(nd->tape, TG_ERR_SHAPE, "%s %s·%s: input and target shapes differ: %s vs %s",
                 nd->op->name, tg__name_text(a).s, tg__name_text(y).s, tg__shape_text(a).s,
                 tg__shape_text(y).s);
        return TG_ERR_SHAPE;
    }
    if (a->size == 0) {
        tg__fail(nd->tape, TG_ERR_SHAPE, "%s %s: empty input %s (the mean of nothing is 0/0)",
                 nd->op->name, tg__name_text(a).s, tg__shape_text(a).s);
        return TG_ERR_SHAPE;
    }
    *ndim = 2;
    dims[0] = dims[1] = 1;
    return TG_OK;
}

extern const tg_op tg__op_huber;

static tg_tensor *
record_pair(tg_tape *t, const tg_op *op, tg_tensor *a, tg_tensor *y, double c, bool check_c)
{
    if (!t)
        return NULL;
    bool huber = op == &tg__op_huber;
    if (t->status == TG_OK && check_c && !(isfinite(c) && (huber ? c > 0 : c >= 0))) {
        if (!(a = tg__operand(t, op->name, "input", a)))
            return &t->nil;
        return tg__fail(t, TG_ERR_ARG, "%s %s: %s %g must be finite and %s", op->name,
                        tg__name_text(a).s, huber ? "delta" : "beta", c, huber ? "> 0" : ">= 0");
    }
    struct tg__attr attr = {.scale = c};
    tg_tensor *in[2] = {a, y};
    return tg__record(t, op, in, 2, &attr, NULL);
}

static inline double
sign(double d)
{
    return d > 0 ? 1 : d < 0 ? -1 : 0;
}

/*
 * bce_with_logits:  f = max(a, 0) - a y + log(1 + e^-|a|)     (a the logit, y the target)
 *   = -[y log σ(a) + (1 - y) log(1 - σ(a))], written so that nothing overflows for any |a|
 *   (e^-|a| <= 1) and log1p keeps the small tail for large |a|.
 *   ∂f/∂a = σ(a) - y,   ∂f/∂y = -a
 *   JVP: J̇ = (1/N) Σ [(σ(a) - y) ȧ - a ẏ]
 */
#define BCE_F (fmax(a, 0) - a * y + log1p(tg__vexp(-fabs(a))))
POINTWISE_LOSS(bce_with_logits, BCE_F, tg__vsigmoid(a) - y, -a, (tg__vsigmoid(a) - y) * ta,
               -a * ty, "J = mean(max(a, 0) - a y + log(1 + e^-|a|))",
               "da += dJ (σ(a) - y) / N;  dy -= dJ a / N", "J̇ = mean((σ(a) - y) ȧ - a ẏ)")

/* g in input k's shape: dJ is (1 x 1), so g ⊙ dJ of a rank-1 input came out (1 x N) */
static tg_tensor *
as_input(tg_tape *t, const tg_node *nd, int k, tg_tensor *g)
{
    return tg_reshape(t, g, nd->in[k]->ndim, nd->in[k]->dims);
}

/* dJ/N times:  da: σ(a) - y;  dy: -a */
static tg_tensor *
bce_with_logits_vjp_graph(tg_node *nd, int k, tg_tensor *dj)
{
    tg_tape *t = nd->tape;
    tg_tensor *a = nd->in[0], *y = nd->in[1];
    tg_tensor *d = k ? tg_neg(t, a) : tg_sub(t, tg_sigmoid(t, a), y);
    return as_input(t, nd, k, tg_scale(t, tg_mul(t, d, dj), 1.0 / (double)a->size));
}

tg_tensor *
tg_bce_with_logits(tg_tape *t, tg_tensor *x, tg_tensor *y)
{
    return record_pair(t, &tg__op_bce_with_logits, x, y, 0, false);
}

/*
 * l1:  f = |a - y|
 *   ∂f/∂a = sign(a - y) (0 at a = y, as PyTorch),   ∂f/∂y = -sign(a - y)
 *   JVP: J̇ = (1/N) Σ sign(a - y) (ȧ - ẏ), 0 at a = y as the VJP's subgradient
 */
POINTWISE_LOSS(l1, fabs(a - y), sign(a - y), -sign(a - y), sign(a - y) * ta, -sign(a - y) * ty,
               "J = mean |a - y|", "da += dJ sign(a - y) / N;  dy -= the same",
               "J̇ = mean(sign(a - y) (ȧ - ẏ))")

/* piecewise linear: the generic node */
static tg_tensor *
l1_vjp_graph(tg_node *nd, int k, tg_tensor *dj)
{
    return tg__vjp_graph_linear(nd, k, dj);
}

tg_tensor *
tg_l1(tg_tape *t, tg_tensor *a, tg_tensor *y)
{
    return record_pair(t, &tg__op_l1, a, y, 0, false);
}

/*
 * huber (δ = attr.scale > 0):  d = a - y,  f = |d| < δ ? ½ d² : δ (|d| - ½ δ)
 *   ∂f/∂a = |d| < δ ? d : δ sign(d)   (continuous: both are ±δ at |d| = δ),  ∂f/∂y = -∂f/∂a
 *   JVP: J̇ = (1/N) Σ f'(d) (ȧ - ẏ),  f'(d) = |d| < δ ? d : δ sign(d)
 */
#define HUBER_F (fabs(a - y) < c ? 0.5 * (a - y) * (a - y) : c * (fabs(a - y) - 0.5 * c))
#define HUBER_D (fabs(a - y) < c ? (a - y) : c * sign(a - y))
POINTWISE_LOSS(huber, HUBER_F, HUBER_D, -(HUBER_D), HUBER_D * ta, -(HUBER_D) * ty,
               "J = mean(|d| < δ ? ½d² : δ(|d| - ½δ)), d = a - y",
               "da += dJ (|d| < δ ? d : δ sign d) / N;  dy -= the same",
               "J̇ = mean((|d| < δ ? d : δ sign d) (ȧ - ẏ))")

/* dJ/N times ±clamp(a - y, -δ, δ) (f'(d) written with ops) */
static tg_tensor *
huber_vjp_graph(tg_node *nd, int k, tg_tensor *dj)
{
    tg_tape *t = nd->tape;
    double c = nd->attr->scale;
    tg_tensor *fd = tg_clamp(t, tg_sub(t, nd->in[0], nd->in[1]), -c, c);
    return as_input(t, nd, k, tg_scale(t, tg_mul(t, fd, dj), (k ? -1.0 : 1.0) / (double)nd->in[0]->size));
}

tg_tensor *
tg_huber(tg_tape *t, tg_tensor *a, tg_tensor *y, double delta)
{
    return record_pair(t, &tg__op_huber, a, y, delta, true);
}

/*
 * smooth_l1 (β = attr.scale >= 0):  d = a - y,  f = |d| < β ? ½ d² / β : |d| - ½ β
 *   = huber / β for β > 0; β = 0 is l1 (the first branch never holds), as PyTorch.
 *   ∂f/∂a = |d| < β ? d / β : sign(d),   ∂f/∂y = -∂f/∂a
 *   JVP: J̇ = (1/N) Σ f'(d) (ȧ - ẏ),  f'(d) = |d| < β ? d / β : sign(d)
 */
#define SL1_F (fabs(a - y) < c ? 0.5 * (a - y) * (a - y) / c : fabs(a - y) - 0.5 * c)
#define SL1_D (fabs(a - y) < c ? (a - y) / c : sign(a - y))
POINTWISE_LOSS(smooth_l1, SL1_F, SL1_D, -(SL1_D), SL1_D * ta, -(SL1_D) * ty,
               "J = mean(|d| < β ? ½d²/β : |d| - ½β), d = a - y",
               "da += dJ (|d| < β ? d/β : sign d) / N;  dy -= the same",
               "J̇ = mean((|d| < β ? d/β : sign d) (ȧ - ẏ))")

/* dJ/N times ±clamp(a - y, -β, β) / β; β = 0 is l1 (piecewise linear: the generic node) */
static tg_tensor *
smooth_l1_vjp_graph(tg_node *nd, int k, tg_tensor *dj)
{
    tg_tape *t = nd->tape;
    double c = nd->attr->scale;
    if (c == 0)
        return tg__vjp_graph_linear(nd, k, dj);
    tg_tensor *fd = tg_clamp(t, tg_sub(t, nd->in[0], nd->in[1]), -c, c);
    return as_input(t, nd, k, tg_scale(t, tg_mul(t, fd, dj), (k ? -1.0 : 1.0) / (c * (double)nd->in[0]->size)));
}

tg_tensor *
tg_smooth_l1(tg_tape *t, tg_tensor *a, tg_tensor *y, double beta)
{
    return record_pair(t, &tg__op_smooth_l1, a, y, beta, true);
}
