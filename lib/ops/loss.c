/*
 * Losses. Each reduces to a (1x1) scalar; sums accumulate in double.
 */
#include <string.h>
#include <tgmath.h>

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

/* Σ (a - y)², accumulated in double. In f32 a difference beyond ~1.8e19 squares to +inf,
 * which is the correct IEEE result, never NaN. */
static double
sum_sq_diff(const tg_node *nd)
{
    double acc = 0;
    TG__DISPATCH(nd->out->dtype, T, {
        const T *a = nd->in[0]->data, *y = nd->in[1]->data;
        for (size_t i = 0; i < nd->in[0]->size; i++) {
            double d = (double)a[i] - (double)y[i];
            acc += d * d;
        }
    });
    return acc;
}

/* da += c (a - y), dy -= c (a - y), c = scalar gradient times the loss's constant factor. */
static void
pair_loss_vjp(tg_node *nd, double factor)
{
    tg_tensor *a = nd->in[0], *y = nd->in[1];
    TG__DISPATCH(nd->out->dtype, T, {
        const T c = (T)(factor * (double)((const T *)nd->out->grad)[0]);
        const T *av = a->data, *yv = y->data;
        T *da = a->grad, *dy = y->grad;
        for (size_t i = 0; i < a->size; i++) {
            T r = c * (av[i] - yv[i]);
            if (da)
                da[i] += r;
            if (dy)
                dy[i] -= r;
        }
    });
}

/*
 * mse_half (the note's loss):  J = 1/(2m) Σ_all (Y - A)²,   m = size of the batch axis
 *   ∂J/∂A = (A - Y) / m       — the note's step 1 (it wrote mean(Y - A), a scalar: the sign
 *                               is flipped and the gradient is a matrix, one entry per output)
 *   VJP: dA += dJ (A - Y) / m,   dY += dJ (Y - A) / m
 */
static tg_status
mse_half_shape(tg_node *nd, int *ndim, int64_t *dims)
{
    tg_status s = pair_loss_shape(nd, ndim, dims);
    if (s != TG_OK)
        return s;
    const tg_tensor *a = nd->in[0];
    int axis = nd->attr.axis;
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
    return (double)nd->in[0]->dims[nd->attr.axis];
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

const tg_op tg__op_mse_half = {
    .name = "mse_half",
    .n_inputs = 2,
    .shape = mse_half_shape,
    .forward = mse_half_forward,
    .vjp = mse_half_vjp,
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

const tg_op tg__op_mse = {
    .name = "mse",
    .n_inputs = 2,
    .shape = mse_shape,
    .forward = mse_forward,
    .vjp = mse_vjp,
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
 *
 *   Edge values: a row containing +inf has lse = +inf; a row that is all -inf has lse = -inf
 *   and a NaN loss (0/0, as in PyTorch); NaN propagates.
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
    if (nd->attr.axis == 1) {
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
    int axis = nd->attr.axis;
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
    const int32_t *user = nd->attr.labels;
    if (!user) {
        tg__fail(nd->tape, TG_ERR_ARG, "softmax_xent %s: labels is NULL", tg__name_text(s).s);
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
    nd->attr.labels = labels;
    *ndim = 2;
    dims[0] = dims[1] = 1;
    return TG_OK;
}

static size_t
xent_scratch(const tg_node *nd)
{
    /* per example: m = max and log Σ e^(s - m), kept apart so that the VJP's s - lse is
     * (s - m) - log Σ: computing lse = m + log Σ first rounds away log Σ's low bits when |m|
     * is large (1e6 + ln 2 has an ulp of 1e-10) */
    return 2 * xent_layout(nd).batch * sizeof(double);
}

static tg_status
xent_forward(tg_node *nd)
{
    struct xent_layout l = xent_layout(nd);
    double *lse = nd->scratch, total = 0;
    TG__DISPATCH(nd->out->dtype, T, {
        const T *s = nd->in[0]->data;
        for (size_t j = 0; j < l.batch; j++) {
            const T *sj = s + j * l.ex_stride;
            double m = -INFINITY;
            for (size_t c = 0; c < l.classes; c++) {
                double v = (double)sj[c * l.class_stride];
                m = (v > m || isnan(v)) && !isnan(m) ? v : m; /* a NaN score makes m NaN */
            }
            double acc = 0;
            if (isfinite(m))
                for (size_t c = 0; c < l.classes; c++)
                    acc += exp((double)sj[c * l.class_stride] - m);
            double label_score = (double)sj[(size_t)nd->attr.labels[j] * l.class_stride];
            lse[2 * j] = m; /* ±inf or NaN pass through */
            lse[2 * j + 1] = isfinite(m) ? log(acc) : 0;
            /* (m - s_l) + log Σ: m - s_l is exact-ish, so no digits are lost to a large m. */
            total += isfinite(m) ? (m - label_score) + log(acc) : m - label_score;
        }
        ((T *)nd->out->data)[0] = (T)(total / (double)l.batch);
    });
    return TG_OK;
}

static tg_status
xent_vjp(tg_node *nd)
{
    tg_tensor *s = nd->in[0];
    if (!s->grad)
        return TG_OK;
    struct xent_layout l = xent_layout(nd);
    const double *lse = nd->scratch;
    TG__DISPATCH(nd->out->dtype, T, {
        const double g = (double)((const T *)nd->out->grad)[0] / (double)l.batch;
        const T *sv = s->data;
        T *ds = s->grad;
        for (size_t j = 0; j < l.batch; j++)
            for (size_t c = 0; c < l.classes; c++) {
                size_t at = j * l.ex_stride + c * l.class_stride;
                double p = exp(((double)sv[at] - lse[2 * j]) - lse[2 * j + 1]);
                double onehot = (size_t)nd->attr.labels[j] == c ? 1.0 : 0.0;
                ds[at] += (T)(g * (p - onehot));
            }
    });
    return TG_OK;
}

const tg_op tg__op_softmax_xent = {
    .name = "softmax_xent",
    .n_inputs = 1,
    .shape = xent_shape,
    .forward = xent_forward,
    .vjp = xent_vjp,
    .scratch_size = xent_scratch,
};

tg_tensor *
tg_softmax_xent(tg_tape *t, tg_tensor *scores, const int32_t *labels, int class_axis)
{
    if (!t)
        return NULL;
    struct tg__attr attr = {.axis = class_axis, .labels = (int32_t *)labels};
    return tg__record(t, &tg__op_softmax_xent, &scores, 1, &attr, NULL);
}
