/*
 * Losses over class scores with integer labels and optional class weights: nll_loss (on
 * log-probabilities) and cross_entropy (softmax_xent with PyTorch's weight= and
 * label_smoothing=). Input (B x C) with class_axis 1, or (C x B) with class_axis 0; the
 * result is (1 x 1). Labels and weights are validated and copied onto the tape when the op is
 * recorded. Loops are sequential over examples in double: the result is fixed by the input.
 *
 * PyTorch's mean with class weights divides by the weights of the labels, not by B:
 *   J = Σ_i ℓ_i / Z,   Z = Σ_i w[y_i]     (Z = B without weights)
 */
#include <math.h>
#include <string.h>

#include "ops.h"

struct cls {
    size_t batch, classes;
    size_t ex_stride, class_stride;
};

static struct cls
cls_of(const tg_node *nd)
{
    const tg_tensor *s = nd->in[0];
    struct cls l;
    if (nd->attr->axis == 1)
        l = (struct cls){(size_t)s->dims[0], (size_t)s->dims[1], (size_t)s->dims[1], 1};
    else
        l = (struct cls){(size_t)s->dims[1], (size_t)s->dims[0], 1, (size_t)s->dims[1]};
    return l;
}

static double
weight_of(const tg_node *nd, size_t c)
{
    return nd->attr->weights ? nd->attr->weights[c] : 1.0;
}

/* Z = Σ_i w[y_i] */
static double
label_weight_sum(const tg_node *nd, struct cls l)
{
    double z = 0;
    for (size_t i = 0; i < l.batch; i++)
        z += weight_of(nd, (size_t)nd->attr->labels[i]);
    return z;
}

static tg_status
cls_shape(tg_node *nd, int *ndim, int64_t *dims)
{
    (void)nd;
    *ndim = 2;
    dims[0] = dims[1] = 1;
    return TG_OK;
}

/* Validates x, class_axis, labels (n_labels = B of them, each in [0, C)), weights (C, each finite and
 * >= 0) and label smoothing, and copies labels and weights onto the tape. */
static bool
cls_attr(tg_tape *t, const char *op, tg_tensor *x, const int32_t *labels, size_t n_labels,
         int class_axis, const double *weight, double smoothing, struct tg__attr *attr)
{
    if (t->status != TG_OK || !(x = tg__operand(t, op, "scores", x)))
        return false;
    if (x->ndim != 2 || (class_axis != 0 && class_axis != 1)) {
        tg__fail(t, TG_ERR_SHAPE, "%s %s: needs a 2-D input and class_axis 0 or 1, got %s and %d",
                 op, tg__name_text(x).s, tg__shape_text(x).s, class_axis);
        return false;
    }
    size_t classes = (size_t)x->dims[class_axis], batch = (size_t)x->dims[1 - class_axis];
    if (batch == 0 || classes == 0) {
        tg__fail(t, TG_ERR_SHAPE, "%s %s: empty input %s", op, tg__name_text(x).s,
                 tg__shape_text(x).s);
        return false;
    }
    if (!labels) {
        tg__fail(t, TG_ERR_ARG, "%s %s: labels is NULL", op, tg__name_text(x).s);
        return false;
    }
    if (n_labels != batch) {
        tg__fail(t, TG_ERR_ARG,
                 "%s %s %s: %zu labels given for %zu examples (class_axis %d: one label per "
                 "example)",
                 op, tg__name_text(x).s, tg__shape_text(x).s, n_labels, batch, class_axis);
        return false;
    }
    for (size_t i = 0; i < batch; i++)
        if (labels[i] < 0 || (size_t)labels[i] >= classes) {
            tg__fail(t, TG_ERR_ARG, "%s %s %s: labels[%zu] = %d is outside [0, %zu)", op,
                     tg__name_text(x).s, tg__shape_text(x).s, i, (int)labels[i], classes);
            return false;
        }
    for (size_t c = 0; weight && c < classes; c++)
        if (!isfinite(weight[c]) || weight[c] < 0) {
            tg__fail(t, TG_ERR_ARG, "%s %s: weight[%zu] = %g (class weights must be finite and "
                     ">= 0)",
                     op, tg__name_text(x).s, c, weight[c]);
            return false;
        }
    if (!(smoothing >= 0 && smoothing <= 1)) {
        tg__fail(t, TG_ERR_ARG, "%s %s: label_smoothing %g is outside [0, 1]", op,
                 tg__name_text(x).s, smoothing);
        return false;
    }
    *attr = (struct tg__attr){.axis = class_axis, .scale2 = smoothing};
    attr->labels = tg__tape_copy(t, op, labels, batch, sizeof *labels);
    if (!attr->labels)
        return false;
    if (weight && !(attr->weights = tg__tape_copy(t, op, weight, classes, sizeof *weight)))
        return false;
    return true;
}

/*
 * nll_loss:  J = Σ_i w[y_i] (-x[i, y_i]) / Σ_i w[y_i]     (x log-probabilities)
 *   ∂J/∂x[i, c] = -[c = y_i] w[y_i] / Z:   VJP dx[i, y_i] -= dJ w[y_i] / Z
 *   JVP: J̇ = -Σ_i w[y_i] ẋ[i, y_i] / Z (linear in x: the forward on the tangent)
 */
static tg_status
nll_forward(tg_node *nd)
{
    struct cls l = cls_of(nd);
    double z = label_weight_sum(nd, l), acc = 0;
    TG__DISPATCH(nd->out->dtype, T, {
        const T *x = nd->in[0]->data;
        for (size_t i = 0; i < l.batch; i++) {
            size_t y = (size_t)nd->attr->labels[i];
            acc -= weight_of(nd, y) * (double)x[i * l.ex_stride + y * l.class_stride];
        }
        ((T *)nd->out->data)[0] = (T)(acc / z);
    });
    return TG_OK;
}

static tg_status
nll_vjp(tg_node *nd)
{
    if (!nd->in[0]->grad)
        return TG_OK;
    struct cls l = cls_of(nd);
    double z = label_weight_sum(nd, l);
    TG__DISPATCH(nd->out->dtype, T, {
        double g = (double)((const T *)nd->out->grad)[0] / z;
        T *dx = nd->in[0]->grad;
        for (size_t i = 0; i < l.batch; i++) {
            size_t y = (size_t)nd->attr->labels[i];
            dx[i * l.ex_stride + y * l.class_stride] -= (T)(g * weight_of(nd, y));
        }
    });
    return TG_OK;
}

const tg_op tg__op_nll_loss = {
    .name = "nll_loss",
    .n_inputs = 1,
    .shape = cls_shape,
    .forward = nll_forward,
    .vjp = nll_vjp,
    .vjp_graph = tg__vjp_graph_linear,
    .jvp = tg__jvp_linear,
    .math = "J = Σ_i w[y_i] (-x[i, y_i]) / Σ_i w[y_i], x log-probabilities",
    .vjp_math = "dx[i, y_i] -= dJ w[y_i] / Σ w[y]",
    .jvp_math = "J̇ = -Σ_i w[y_i] ẋ[i, y_i] / Σ w[y]",
    .shapes = "x (B x C) or (C x B), B labels → (1 x 1)",
};

tg_tensor *
tg_nll_loss(tg_tape *t, tg_tensor *log_probs, const int32_t *labels, size_t n_labels,
            int class_axis, const double *weight)
{
    if (!t)
        return NULL;
    struct tg__attr attr;
    if (!cls_attr(t, "nll_loss", log_probs, labels, n_labels, class_axis, weight, 0, &attr))
        return &t->nil;
    return tg__record(t, &tg__op_nll_loss, &log_probs, 1, &attr, NULL);
}

/*
 * cross_entropy:  with p = softmax(s_i) over classes, ε the label smoothing, C classes,
 *   ℓ_i = (1 - ε) w[y_i] (lse_i - s[i, y_i]) + (ε/C) Σ_c w[c] (lse_i - s[i, c])
 *   J = Σ_i ℓ_i / Z,   Z = Σ_i w[y_i]           (torch.nn.CrossEntropyLoss, same values)
 *   ∂ℓ_i/∂s[i, c] = (1 - ε) w[y_i] (p_c - [c = y_i]) + (ε/C) (W p_c - w[c]),  W = Σ_c w[c]
 *   VJP: ds[i, c] += dJ ∂ℓ_i/∂s[i, c] / Z
 *   lse_i = m + log Σ e^(s - m) (stable); the VJP recomputes m and the sum per example.
 *   JVP: with p·ṡ_i = Σ_c p_c ṡ[i, c] the tangent of lse_i,
 *     ℓ̇_i = ((1 - ε) w[y_i] + (ε/C) W) p·ṡ_i - (1 - ε) w[y_i] ṡ[i, y_i] - (ε/C) Σ_c w[c] ṡ[i, c]
 *     J̇ = Σ_i ℓ̇_i / Z;  p·ṡ_i = Σ_c e^(s - m) ṡ / Σ_c e^(s - m), one pass with the sum (the
 *     forward's cost: a max pass and an exp pass per example).
 */
static void
row_lse(const tg_node *nd, struct cls l, size_t i, double *m_out, double *lse_out)
{
    TG__DISPATCH(nd->in[0]->dtype, T, {
        const T *s = (const T *)nd->in[0]->data + i * l.ex_stride;
        double m = -INFINITY, sum = 0;
        for (size_t c = 0; c < l.classes; c++)
            m = (double)s[c * l.class_stride] > m ? (double)s[c * l.class_stride] : m;
        double sh = isfinite(m) ? m : 0;
        for (size_t c = 0; c < l.classes; c++)
            sum += exp((double)s[c * l.class_stride] - sh);
        *m_out = sh;
        *lse_out = sh + log(sum);
    });
}

static tg_status
xe_forward(tg_node *nd)
{
    struct cls l = cls_of(nd);
    double eps = nd->attr->scale2, z = label_weight_sum(nd, l), acc = 0;
    TG__DISPATCH(nd->out->dtype, T, {
        for (size_t i = 0; i < l.batch; i++) {
            const T *s = (const T *)nd->in[0]->data + i * l.ex_stride;
            double m, lse, smooth = 0;
            row_lse(nd, l, i, &m, &lse);
            size_t y = (size_t)nd->attr->labels[i];
            if (eps > 0)
                for (size_t c = 0; c < l.classes; c++)
                    smooth += weight_of(nd, c) * (lse - (double)s[c * l.class_stride]);
            acc += (1 - eps) * weight_of(nd, y) * (lse - (double)s[y * l.class_stride]) +
                   eps / (double)l.classes * smooth;
        }
        ((T *)nd->out->data)[0] = (T)(acc / z);
    });
    return TG_OK;
}

static tg_status
xe_vjp(tg_node *nd)
{
    if (!nd->in[0]->grad)
        return TG_OK;
    struct cls l = cls_of(nd);
    double eps = nd->attr->scale2, z = label_weight_sum(nd, l), wsum = 0;
    for (size_t c = 0; c < l.classes; c++)
        wsum += weight_of(nd, c);
    TG__DISPATCH(nd->out->dtype, T, {
        double g = (double)((const T *)nd->out->grad)[0] / z;
        for (size_t i = 0; i < l.batch; i++) {
            const T *s = (const T *)nd->in[0]->data + i * l.ex_stride;
            T *ds = (T *)nd->in[0]->grad + i * l.ex_stride;
            double m, lse;
            row_lse(nd, l, i, &m, &lse);
            size_t y = (size_t)nd->attr->labels[i];
            double wy = weight_of(nd, y);
            for (size_t c = 0; c < l.classes; c++) {
                double p = exp((double)s[c * l.class_stride] - lse);
                double d = (1 - eps) * wy * (p - (c == y)) +
                           eps / (double)l.classes * (wsum * p - weight_of(nd, c));
                ds[c * l.class_stride] += (T)(g * d);
            }
        }
    });
    return TG_OK;
}

static tg_status
xe_jvp(tg_node *nd)
{
    struct cls l = cls_of(nd);
    double eps = nd->attr->scale2, share = eps / (double)l.classes;
    double z = label_weight_sum(nd, l), wsum = 0, acc = 0;
    for (size_t c = 0; c < l.classes; c++)
        wsum += weight_of(nd, c);
    TG__DISPATCH(nd->out->dtype, T, {
        for (size_t i = 0; i < l.batch; i++) {
            const T *s = (const T *)nd->in[0]->data + i * l.ex_stride;
            const T *ds = (const T *)nd->in[0]->tangent + i * l.ex_stride;
            double m = -INFINITY;
            for (size_t c = 0; c < l.classes; c++)
                m = (double)s[c * l.class_stride] > m ? (double)s[c * l.class_stride] : m;
            double sh = isfinite(m) ? m : 0, sum = 0, dot = 0, wdot = 0;
            for (size_t c = 0; c < l.classes; c++) {
                size_t at = c * l.class_stride;
                double e = exp((double)s[at] - sh), t = (double)ds[at];
                sum += e;
                dot += e * t;
                wdot += weight_of(nd, c) * t;
            }
            size_t y = (size_t)nd->attr->labels[i];
            double wy = (1 - eps) * weight_of(nd, y);
            acc += (wy + share * wsum) * (dot / sum) - wy * (double)ds[y * l.class_stride] -
                   share * wdot;
        }
        ((T *)nd->out->tangent)[0] = (T)(acc / z);
    });
    return TG_OK;
}

/* For tg_grad: dS = (A ⊙ softmax(S) − B) dJ with ops, the constants A_i = ((1-ε) w[y_i] + (ε/C) W)
 * / Z per example (broadcast along the classes) and B_ic = ((1-ε) w[y_i] [c = y_i] + (ε/C) w_c) / Z
 * built from the labels, weights and smoothing */
static tg_tensor *
xe_vjp_graph(tg_node *nd, int k, tg_tensor *dj)
{
    (void)k;
    tg_tape *t = nd->tape;
    const tg_tensor *s = nd->in[0];
    struct cls l = cls_of(nd);
    double eps = nd->attr->scale2, share = eps / (double)l.classes;
    double z = label_weight_sum(nd, l), wsum = 0;
    for (size_t c = 0; c < l.classes; c++)
        wsum += weight_of(nd, c);
    int64_t per_example[2] = {s->dims[0], s->dims[1]};
    per_example[nd->attr->axis] = 1;
    tg_tensor *a = tg__tensor(tg_tensor_new(t, s->dtype, 2, per_example, NULL));
    if (a->kind == TG__KIND_NIL)
        return a;
    tg_tensor *b = tg__tensor(tg_tensor_new(t, s->dtype, 2, s->dims, NULL));
    if (b->kind == TG__KIND_NIL)
        return b;
    TG__DISPATCH(s->dtype, T, {
        T *av = a->data, *bv = b->data;
        for (size_t i = 0; i < l.batch; i++) {
            size_t y = (size_t)nd->attr->labels[i];
            double wy = (1 - eps) * weight_of(nd, y);
            av[i] = (T)((wy + share * wsum) / z);
            for (size_t c = 0; c < l.classes; c++)
                bv[i * l.ex_stride + c * l.class_stride] =
                    (T)(((c == y ? wy : 0) + share * weight_of(nd, c)) / z);
        }
    });
    tg_tensor *p = tg_softmax(t, nd->in[0], nd->attr->axis);
    return tg_mul(t, tg_sub(t, tg_mul(t, a, p), b), dj);
}

const tg_op tg__op_cross_entropy = {
    .name = "cross_entropy",
    .n_inputs = 1,
    .shape = cls_shape,
    .forward = xe_forward,
    .vjp = xe_vjp,
    .vjp_graph = xe_vjp_graph,
    .jvp = xe_jvp,
    .math = "J = Σ_i [(1-ε) w[y_i] (lse_i - s_iy) + (ε/C) Σ_c w_c (lse_i - s_ic)] / Σ_i w[y_i]",
    .vjp_math = "ds_ic += dJ [(1-ε) w[y_i] (p_ic - [c = y_i]) + (ε/C)(W p_ic - w_c)] / Σ w[y]",
    .jvp_math = "J̇ = Σ_i [((1-ε) w[y_i] + (ε/C) W) p_i·ṡ_i - (1-ε) w[y_i] ṡ_iy "
                "- (ε/C) Σ_c w_c ṡ_ic] / Σ w[y]",
    .shapes = "s (B x C) or (C x B), B labels, C weights or none → (1 x 1)",
};

tg_tensor *
tg_cross_entropy(tg_tape *t, tg_tensor *scores, const int32_t *labels, size_t n_labels,
                 int class_axis, const double *weight, double label_smoothing)
{
    if (!t)
        return NULL;
    struct tg__attr attr;
    if (!cls_attr(t, "cross_entropy", scores, labels, n_labels, class_axis, weight,
                  label_smoothing, &attr))
        return &t->nil;
    return tg__record(t, &tg__op_cross_entropy, &scores, 1, &attr, NULL);
}
