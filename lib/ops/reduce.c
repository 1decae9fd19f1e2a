/*
 * Reductions: sum and mean, over everything (-> 1x1) or along one axis (kept as size 1, so
 * the result broadcasts back against the input).
 *
 * Sums accumulate in double whatever the dtype: the mean of 10^7 float32 terms would otherwise
 * be dominated by rounding.
 */
#include <tgmath.h>

#include "ops.h"

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

/* y[o, i] = c · Σ_k x[o, k, i] */
static void
reduce_forward(tg_node *nd, bool mean)
{
    if (nd->out->size == 0)
        return; /* outer x inner = out size; skip, or a (2^40 x 0) input loops 2^40 times */
    struct red r = red_of(nd);
    double c = mean ? 1.0 / (double)r.len : 1.0; /* len 0: the empty sum is 0, mean NaN */
    TG__DISPATCH(nd->out->dtype, T, {
        const T *x = nd->in[0]->data;
        T *y = nd->out->data;
        for (size_t o = 0; o < r.outer; o++)
            for (size_t i = 0; i < r.inner; i++) {
                double acc = 0;
                for (size_t k = 0; k < r.len; k++)
                    acc += (double)x[(o * r.len + k) * r.inner + i];
                y[o * r.inner + i] = (T)(c * acc);
            }
    });
}

/* dx[o, k, i] += c · dy[o, i] */
static void
reduce_vjp(tg_node *nd, bool mean)
{
    if (!nd->in[0]->grad || nd->out->size == 0)
        return;
    struct red r = red_of(nd);
    TG__DISPATCH(nd->out->dtype, T, {
        const T c = mean ? (T)(1.0 / (double)r.len) : (T)1;
        const T *dy = nd->out->grad;
        T *dx = nd->in[0]->grad;
        for (size_t o = 0; o < r.outer; o++)
            for (size_t k = 0; k < r.len; k++)
                for (size_t i = 0; i < r.inner; i++)
                    dx[(o * r.len + k) * r.inner + i] += c * dy[o * r.inner + i];
    });
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
