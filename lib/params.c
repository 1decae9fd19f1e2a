/*
 * Parameter sets. Values and gradients of all parameters live in two contiguous buffers, in
 * the order the parameters were added, so an optimizer update or a data-parallel all-reduce
 * is one pass over one buffer. Each parameter is still a tensor of its own (name, shape) whose
 * data/grad point into those buffers; growing the buffers re-points them.
 */
#include <stdio.h>
#include <string.h>

#include "internal.h"

tg_params *
tg_params_new(tg_dtype dt)
{
    if (dt != TG_F32 && dt != TG_F64)
        return NULL;
    tg_params *p = tg__calloc(1, sizeof *p);
    if (p)
        p->dtype = dt;
    return p;
}

void
tg_params_free(tg_params *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->count; i++) {
        tg__free((char *)p->tensors[i]->name);
        tg__free(p->tensors[i]);
    }
    for (size_t i = 0; i < p->n_buffers; i++) {
        tg__free((char *)p->buffers[i]->name);
        tg__free(p->buffers[i]->data);
        tg__free(p->buffers[i]);
    }
    tg__free(p->buffers);
    tg__free(p->tensors);
    tg__free(p->offsets);
    tg__free(p->values);
    tg__free(p->grads);
    tg__free(p);
}

tg_tensor *
tg_params_find(const tg_params *p, const char *name)
{
    if (!p || !name)
        return NULL;
    for (size_t i = 0; i < p->count; i++)
        if (strcmp(p->tensors[i]->name, name) == 0)
            return p->tensors[i];
    for (size_t i = 0; i < p->n_buffers; i++)
        if (strcmp(p->buffers[i]->name, name) == 0)
            return p->buffers[i];
    return NULL;
}

static void
repoint(tg_params *p)
{
    size_t esz = tg__dtype_bytes(p->dtype);
    for (size_t i = 0; i < p->count; i++) {
        p->tensors[i]->data = (char *)p->values + p->offsets[i] * esz;
        p->tensors[i]->grad = (char *)p->grads + p->offsets[i] * esz;
    }
}

tg_tensor *
tg_params_add(tg_params *p, const char *name, int ndim, const int64_t *dims)
{
    if (!p)
        return NULL;
    if (!name || !tg__name_ok(name)) {
        p->last = TG_ERR_ARG;
        tg__params_fail(p, TG_ERR_ARG,
                        "params_add: a parameter needs a non-empty valid UTF-8 name of at most "
                        "%d bytes",
                        TG__NAME_MAX);
        return NULL;
    }
    if (tg_params_find(p, name)) {
        p->last = TG_ERR_ARG;
        tg__params_fail(p, TG_ERR_ARG, "params_add: a parameter named \"%s\" already exists",
                        name);
        return NULL;
    }
    char what[TG__NAME_MAX + 32];
    snprintf(what, sizeof what, "params_add \"%s\"", name);
    size_t size;
    char err[TG__ERRMSG_SIZE];
    tg_status s = tg__check_dims(ndim, dims, p->dtype, &size, err, sizeof err, what);
    size_t total;
    if (s == TG_OK && __builtin_add_overflow(p->size, size, &total)) {
        snprintf(err, sizeof err, "%s: the parameter set would exceed SIZE_MAX elements", what);
        s = TG_ERR_NOMEM;
    }
    if (s != TG_OK) {
        p->last = s;
        tg__params_fail(p, s, "%s", err);
        return NULL;
    }

    size_t esz = tg__dtype_bytes(p->dtype);
    tg_tensor *x = tg__calloc(1, sizeof *x);
    char *nm = x ? tg__strdup(name) : NULL;
    bool ok = x && nm;
    if (ok && p->count == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 8;
        tg_tensor **tensors = tg__realloc(p->tensors, cap * sizeof *tensors);
        if (tensors)
            p->tensors = tensors;
        size_t *offsets = tensors ? tg__realloc(p->offsets, cap * sizeof *offsets) : NULL;
        if (offsets)
            p->offsets = offsets;
        ok = tensors && offsets;
        if (ok)
            p->cap = cap;
    }
    /* Grow both buffers; on failure the old ones stay valid (realloc keeps them). */
    void *values = ok ? tg__realloc(p->values, total * esz) : NULL;
    if (values) {
        p->values = values;
        repoint(p);
    }
    void *grads = values ? tg__realloc(p->grads, total * esz) : NULL;
    if (grads) {
        p->grads = grads;
        repoint(p);
    }
    if (!grads) {
        tg__free(nm);
        tg__free(x);
        p->last = TG_ERR_NOMEM;
        tg__params_fail(p, TG_ERR_NOMEM, "%s: out of memory (%zu bytes)", what, total * esz);
        return NULL;
    }
    memset((char *)p->values + p->size * esz, 0, size * esz);
    memset((char *)p->grads + p->size * esz, 0, size * esz);

    x->dtype = p->dtype;
    x->ndim = ndim;
    memcpy(x->dims, dims, (size_t)ndim * sizeof *dims);
    x->size = size;
    x->name = nm;
    x->kind = TG__KIND_PARAM;
    x->requires_grad = true;
    x->params = p;
    x->id = p->count;
    p->tensors[p->count] = x;
    p->offsets[p->count] = p->size;
    p->count++;
    p->size = total;
    repoint(p);
    return x;
}

struct tg__params_mark
tg__params_mark(const tg_params *p)
{
    return (struct tg__params_mark){p->count, p->size, p->n_buffers};
}

void
tg__params_rollback(tg_params *p, struct tg__params_mark m)
{
    /* Parameters are appended at the end of both buffers, so the ones added since the mark
     * are the last count - m.count; the buffers keep their (larger) capacity and do not move,
     * so the data pointers of the parameters that stay remain valid. */
    while (p->count > m.count) {
        tg_tensor *x = p->tensors[--p->count];
        tg__free((char *)x->name);
        tg__free(x);
    }
    p->size = m.size;
    while (p->n_buffers > m.n_buffers) {
        tg_tensor *x = p->buffers[--p->n_buffers];
        tg__free((char *)x->name);
        tg__free(x->data);
        tg__free(x);
    }
}

tg_tensor *
tg_params_add_buffer(tg_params *p, const char *name, int ndim, const int64_t *dims)
{
    if (!p)
        return NULL;
    if (!name || !tg__name_ok(name)) {
        p->last = TG_ERR_ARG;
        tg__params_fail(p, TG_ERR_ARG,
                        "params_add_buffer: a buffer needs a non-empty valid UTF-8 name of at "
                        "most %d bytes",
                        TG__NAME_MAX);
        return NULL;
    }
    if (tg_params_find(p, name)) {
        p->last = TG_ERR_ARG;
        tg__params_fail(p, TG_ERR_ARG,
                        "params_add_buffer: a parameter or buffer named \"%s\" already exists",
                        name);
        return NULL;
    }
    char what[TG__NAME_MAX + 40];
    snprintf(what, sizeof what, "params_add_buffer \"%s\"", name);
    size_t size;
    char err[TG__ERRMSG_SIZE];
    tg_status s = tg__check_dims(ndim, dims, p->dtype, &size, err, sizeof err, what);
    if (s != TG_OK) {
        p->last = s;
        tg__params_fail(p, s, "%s", err);
        return NULL;
    }
    size_t esz = tg__dtype_bytes(p->dtype);
    tg_tensor *x = tg__calloc(1, sizeof *x);
    char *nm = x ? tg__strdup(name) : NULL;
    void *data = nm ? tg__calloc(size ? size : 1, esz) : NULL;
    bool ok = data != NULL;
    if (ok && p->n_buffers == p->cap_buffers) {
        size_t cap = p->cap_buffers ? p->cap_buffers * 2 : 4;
        tg_tensor **b = tg__realloc(p->buffers, cap * sizeof *b);
        ok = b != NULL;
        if (ok)
            p->buffers = b, p->cap_buffers = cap;
    }
    if (!ok) {
        tg__free(data);
        tg__free(nm);
        tg__free(x);
        p->last = TG_ERR_NOMEM;
        tg__params_fail(p, TG_ERR_NOMEM, "%s: out of memory (%zu bytes)", what, size * esz);
        return NULL;
    }
    x->dtype = p->dtype;
    x->ndim = ndim;
    memcpy(x->dims, dims, (size_t)ndim * sizeof *dims);
    x->size = size;
    x->name = nm;
    x->kind = TG__KIND_PARAM;
    x->requires_grad = false;
    x->params = p;
    x->data = data;
    p->buffers[p->n_buffers++] = x;
    return x;
}

size_t
tg_params_buffer_count(const tg_params *p)
{
    return p ? p->n_buffers : 0;
}

tg_tensor *
tg_params_buffer(const tg_params *p, size_t i)
{
    return p && i < p->n_buffers ? p->buffers[i] : NULL;
}

void
tg_params_clear_error(tg_params *p)
{
    if (p) {
        p->status = p->last = TG_OK;
        p->errmsg[0] = '\0';
    }
}

tg_status
tg_params_status(const tg_params *p)
{
    return p ? p->status : TG_ERR_ARG;
}

const char *
tg_params_error(const tg_params *p)
{
    if (!p)
        return "params is NULL";
    return p->status == TG_OK ? NULL : p->errmsg;
}

tg_dtype
tg_params_dtype(const tg_params *p)
{
    return p ? p->dtype : TG_F64;
}

size_t
tg_params_count(const tg_params *p)
{
    return p ? p->count : 0;
}

tg_tensor *
tg_params_get(const tg_params *p, size_t i)
{
    return p && i < p->count ? p->tensors[i] : NULL;
}

size_t
tg_params_size(const tg_params *p)
{
    return p ? p->size : 0;
}

void *
tg_params_values(tg_params *p)
{
    return p ? p->values : NULL;
}

void *
tg_params_grads(tg_params *p)
{
    return p ? p->grads : NULL;
}

void
tg_params_zero_grad(tg_params *p)
{
    if (p && p->grads)
        memset(p->grads, 0, p->size * tg__dtype_bytes(p->dtype));
}
