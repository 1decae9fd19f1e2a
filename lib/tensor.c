/*
 * Tensors on a tape (inputs, constants) and the accessors shared with parameters.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

#define TAPE_OR_NULL(t)                                                                        \
    do {                                                                                       \
        if (!(t))                                                                              \
            return NULL;                                                                       \
        if ((t)->status != TG_OK)                                                              \
            return &(t)->nil;                                                                  \
    } while (0)

/* False for a tape tensor made before the tape's last reset. Up to TG__HEADER_GENS - 1 resets
 * old its header is intact (see header_slot in tape.c) but its data, gradient and name live in
 * the main arena and may by now belong to a tensor of the current step, so the accessors below
 * must not hand them out or write through them (nor its producing node, also in the arena);
 * shape and dtype are in the header and stay readable. An older handle may resolve to
 * tg__stale instead (its slot holds a newer tensor), which reads as a 0-d float64. */
static bool
current(const tg_tensor *x)
{
    return x->kind == TG__KIND_PARAM || x->kind == TG__KIND_NIL ||
           (x->kind != TG__KIND_STALE && (!x->tape || x->gen == x->tape->gen));
}

tg_tensor *
tg_tensor_new(tg_tape *t, tg_dtype dt, int ndim, const int64_t *dims, const char *name)
{
    TAPE_OR_NULL(t);
    return tg__handle(tg__tape_tensor(t, "tensor", dt, ndim, dims, true, name));
}

tg_tensor *
tg_tensor_from(tg_tape *t, tg_dtype dt, int ndim, const int64_t *dims, const void *data,
               const char *name)
{
    TAPE_OR_NULL(t);
    if (!data)
        return tg__fail(t, TG_ERR_ARG, "tensor %s%s%s: data is NULL", name ? "\"" : "",
                        name ? name : "", name ? "\"" : "");
    tg_tensor *x = tg__tape_tensor(t, "tensor", dt, ndim, dims, false, name);
    if (x->kind != TG__KIND_NIL)
        memcpy(x->data, data, tg__nbytes(x));
    return tg__handle(x);
}

tg_tensor *
tg_tensor_wrap(tg_tape *t, tg_dtype dt, int ndim, const int64_t *dims, void *data,
               const char *name)
{
    TAPE_OR_NULL(t);
    if (!data)
        return tg__fail(t, TG_ERR_ARG, "tensor %s%s%s: data is NULL", name ? "\"" : "",
                        name ? name : "", name ? "\"" : "");
    size_t size;
    char err[TG__ERRMSG_SIZE];
    tg_status s = tg__check_dims(ndim, dims, dt, &size, err, sizeof err, "tensor");
    if (s != TG_OK)
        return tg__fail(t, s, "%s", err);
    /* The header comes from the arena (made with no elements); the data is the caller's. */
    int64_t no_elements[TG_MAX_DIMS] = {0};
    tg_tensor *x = tg__tape_tensor(t, "tensor", dt, ndim, no_elements, false, name);
    if (x->kind == TG__KIND_NIL)
        return x;
    memcpy(x->dims, dims, (size_t)ndim * sizeof *dims);
    x->size = size;
    x->data = data;
    return tg__handle(x);
}

tg_tensor *
tg_matrix(tg_tape *t, tg_dtype dt, int64_t rows, int64_t cols, const void *data,
          const char *name)
{
    int64_t dims[2] = {rows, cols};
    return data ? tg_tensor_from(t, dt, 2, dims, data, name)
                : tg_tensor_new(t, dt, 2, dims, name);
}

void
tg_tensor_set_requires_grad(tg_tensor *x, bool on)
{
    x = tg__tensor(x);
    if (x && x->kind == TG__KIND_INPUT && current(x))
        x->requires_grad = on;
}

bool
tg_tensor_requires_grad(const tg_tensor *x)
{
    x = tg__tensor(x);
    return x && x->requires_grad;
}

bool
tg_tensor_is_param(const tg_tensor *x)
{
    x = tg__tensor(x);
    return x && x->kind == TG__KIND_PARAM;
}

tg_node *
tg_tensor_node(const tg_tensor *x)
{
    x = tg__tensor(x);
    return x && current(x) ? x->node : NULL; /* nodes live in the tape's arena */
}

tg_dtype
tg_tensor_dtype(const tg_tensor *x)
{
    x = tg__tensor(x);
    return x ? x->dtype : TG_F64;
}

int
tg_tensor_ndim(const tg_tensor *x)
{
    x = tg__tensor(x);
    return x ? x->ndim : 0;
}

int64_t
tg_tensor_dim(const tg_tensor *x, int axis)
{
    x = tg__tensor(x);
    return x && axis >= 0 && axis < x->ndim ? x->dims[axis] : 0;
}

size_t
tg_tensor_size(const tg_tensor *x)
{
    x = tg__tensor(x);
    return x ? x->size : 0;
}

const char *
tg_tensor_name(const tg_tensor *x)
{
    x = tg__tensor(x);
    return x && current(x) ? x->name : NULL; /* a tape tensor's name is in the tape's arena */
}

char *
tg_tensor_shape_string(const tg_tensor *x, char *buf, size_t size)
{
    x = tg__tensor(x);
    if (!buf || size == 0)
        return buf;
    snprintf(buf, size, "%s", x ? tg__shape_text(x).s : "(null)");
    return buf;
}

void *
tg_tensor_data(tg_tensor *x)
{
    x = tg__tensor(x);
    return x && x->kind != TG__KIND_NIL && current(x) ? x->data : NULL;
}

void *
tg_tensor_grad(tg_tensor *x)
{
    x = tg__tensor(x);
    return x && current(x) ? x->grad : NULL;
}

void *
tg_tensor_tangent(const tg_tensor *x)
{
    x = tg__tensor(x);
    return x && current(x) ? x->tangent : NULL;
}

static double
element(const void *v, tg_dtype dt, size_t i)
{
    return dt == TG_F32 ? (double)((const float *)v)[i] : ((const double *)v)[i];
}

double
tg_tensor_get(const tg_tensor *x, size_t i)
{
    x = tg__tensor(x);
    if (!x || !x->data || i >= x->size || !current(x))
        return NAN;
    return element(x->data, x->dtype, i);
}

double
tg_tensor_grad_get(const tg_tensor *x, size_t i)
{
    x = tg__tensor(x);
    if (!x || !x->grad || i >= x->size || !current(x))
        return NAN;
    return element(x->grad, x->dtype, i);
}

double
tg_tensor_item(const tg_tensor *x)
{
    x = tg__tensor(x);
    return x && x->size == 1 ? tg_tensor_get(x, 0) : NAN;
}

static tg_status
writable(const tg_tensor *x)
{
    return x && x->kind != TG__KIND_NIL && x->data && current(x) ? TG_OK : TG_ERR_ARG;
}

tg_status
tg_tensor_read(const tg_tensor *x, double *dst, size_t n)
{
    x = tg__tensor(x);
    if (writable(x) != TG_OK || !dst || n != x->size)
        return TG_ERR_ARG;
    for (size_t i = 0; i < n; i++)
        dst[i] = element(x->data, x->dtype, i);
    return TG_OK;
}

tg_status
tg_tensor_write(tg_tensor *x, const double *src, size_t n)
{
    x = tg__tensor(x);
    if (writable(x) != TG_OK || !src || n != x->size)
        return TG_ERR_ARG;
    TG__DISPATCH(x->dtype, T, {
        T *v = x->data;
        for (size_t i = 0; i < n; i++)
            v[i] = (T)src[i];
    });
    return TG_OK;
}

tg_status
tg_tensor_fill(tg_tensor *x, double value)
{
    x = tg__tensor(x);
    if (writable(x) != TG_OK)
        return TG_ERR_ARG;
    TG__DISPATCH(x->dtype, T, {
        T *v = x->data;
        for (size_t i = 0; i < x->size; i++)
            v[i] = (T)value;
    });
    return TG_OK;
}

tg_status
tg_tensor_fill_uniform(tg_tensor *x, tg_rng *r, double lo, double hi)
{
    x = tg__tensor(x);
    if (writable(x) != TG_OK || !r || !isfinite(lo) || !isfinite(hi) || hi < lo)
        return TG_ERR_ARG;
    TG__DISPATCH(x->dtype, T, {
        T *v = x->data;
        for (size_t i = 0; i < x->size; i++)
            v[i] = (T)(lo + (hi - lo) * tg_rng_uniform(r));
    });
    return TG_OK;
}

tg_status
tg_tensor_fill_normal(tg_tensor *x, tg_rng *r, double mean, double std)
{
    x = tg__tensor(x);
    if (writable(x) != TG_OK || !r || !isfinite(mean) || !isfinite(std) || std < 0)
        return TG_ERR_ARG;
    TG__DISPATCH(x->dtype, T, {
        T *v = x->data;
        for (size_t i = 0; i < x->size; i++)
            v[i] = (T)(mean + std * tg_rng_normal(r));
    });
    return TG_OK;
}

/* Fans of a weight (out x in): fan_in = in, fan_out = out. */
static bool
fans(const tg_tensor *w, double *fan_in, double *fan_out)
{
    if (!w || w->ndim != 2)
        return false;
    *fan_out = (double)w->dims[0];
    *fan_in = (double)w->dims[1];
    return *fan_in > 0 && *fan_out > 0;
}

/* Glorot & Bengio (2010): Var(w) = 2 / (in + out) keeps activations and gradients at the same
 * scale through tanh/sigmoid layers; U(-a, a) has variance a²/3, so a = sqrt(6 / (in + out)). */
tg_status
tg_init_xavier_uniform(tg_tensor *w, tg_rng *r)
{
    w = tg__tensor(w);
    double in, out;
    if (!fans(w, &in, &out))
        return TG_ERR_ARG;
    double a = sqrt(6.0 / (in + out));
    return tg_tensor_fill_uniform(w, r, -a, a);
}

/* He et al. (2015): ReLU zeroes half the inputs, so Var(w) = 2 / in keeps the variance. */
tg_status
tg_init_he_normal(tg_tensor *w, tg_rng *r)
{
    w = tg__tensor(w);
    double in, out;
    if (!fans(w, &in, &out))
        return TG_ERR_ARG;
    return tg_tensor_fill_normal(w, r, 0.0, sqrt(2.0 / in));
}
