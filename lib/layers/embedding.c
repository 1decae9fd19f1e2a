/*
 * Embedding lookups (nn.Embedding, F.embedding) and a learned positional embedding (GPT-2's
 * wpe): parameters plus plain ops. A lookup is one tg_index_select along axis 0 of the table
 * and a reshape to the index's shape, so a row used by k tokens receives the sum of its k
 * gradients (index_select's scatter-add). The positional forward is a slice of the table and a
 * broadcasting add.
 */
#include <inttypes.h>
#include <stdio.h>

#include "../internal.h"

/* The table behind handle w if it is a matrix, else NULL with the tape's error set. */
static tg_tensor *
table_operand(tg_tape *t, const char *op, tg_tensor *w)
{
    tg_tensor *v = tg__operand(t, op, "weight", w);
    if (v && v->ndim != 2) {
        tg__fail(t, TG_ERR_SHAPE, "%s %s %s: the table must be (num x dim), rank 2", op,
                 tg__name_text(v).s, tg__shape_text(v).s);
        return NULL;
    }
    return v;
}

tg_tensor *
tg_embedding(tg_tape *t, tg_tensor *weight, const int64_t *index, int ndim, const int64_t *dims)
{
    if (!t)
        return NULL;
    if (t->status != TG_OK || !(weight = table_operand(t, "embedding", weight)))
        return &t->nil;
    struct tg__text wname = tg__name_text(weight);
    const char *wn = wname.s;
    if (ndim < 0 || ndim > TG_MAX_DIMS - 1 || (ndim > 0 && !dims))
        return tg__fail(t, TG_ERR_ARG,
                        "embedding %s %s: the index has %d dimensions%s (0 to %d: the output "
                        "adds one)",
                        wn, tg__shape_text(weight).s, ndim, ndim > 0 && !dims ? ", dims NULL" : "",
                        TG_MAX_DIMS - 1);
    size_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (dims[i] < 0 || (dims[i] > 0 && n > SIZE_MAX / (size_t)dims[i]))
            return tg__fail(t, TG_ERR_SHAPE, "embedding %s %s: index dims %s are negative or too "
                            "large", wn, tg__shape_text(weight).s,
                            tg__shape_dims_text(ndim, dims).s);
        n *= (size_t)dims[i];
    }
    if (n > 0 && !index)
        return tg__fail(t, TG_ERR_ARG, "embedding %s %s: index is NULL", wn,
                        tg__shape_text(weight).s);
    int64_t num = weight->dims[0];
    for (size_t j = 0; j < n; j++)
        if (index[j] < 0 || index[j] >= num)
            return tg__fail(t, TG_ERR_ARG,
                            "embedding %s %s: index[%zu] = %" PRId64 " is out of range [0, %"
                            PRId64 ") (index dims %s)",
                            wn, tg__shape_text(weight).s, j, index[j], num,
                            tg__shape_dims_text(ndim, dims).s);
    int64_t out[TG_MAX_DIMS];
    for (int i = 0; i < ndim; i++)
        out[i] = dims[i];
    out[ndim] = weight->dims[1];
    tg_tensor *rows = tg_index_select(t, weight, 0, index, n);
    return tg_reshape(t, rows, ndim + 1, out);
}

/* Adds "<name>/W" (rows x cols), N(0, 1) from rng or zero; atomic (see tg_dense_init). */
static tg_status
table_init(tg_params *p, const char *what, const char *name, int64_t rows, int64_t cols,
           tg_rng *rng, tg_tensor **w)
{
    if (rows < 1 || cols < 1) {
        p->last = TG_ERR_ARG;
        tg__params_fail(p, TG_ERR_ARG, "%s layer \"%s\": table (%" PRId64 " x %" PRId64
                        "), both sizes must be >= 1", what, name, rows, cols);
        return TG_ERR_ARG;
    }
    char full[TG__NAME_MAX + 8];
    snprintf(full, sizeof full, "%s/W", name);
    int64_t dims[2] = {rows, cols};
    struct tg__params_mark mark = tg__params_mark(p);
    tg_tensor *v = tg_params_add(p, full, 2, dims);
    tg_status s = v ? TG_OK : p->last;
    if (s == TG_OK && rng && (s = tg_tensor_fill_normal(v, rng, 0, 1)) != TG_OK) {
        p->last = s;
        tg__params_fail(p, s, "%s layer \"%s\": initializing %s failed: %s", what, name, full,
                        tg_status_string(s));
    }
    if (s != TG_OK) {
        tg__params_rollback(p, mark);
        return s;
    }
    *w = v;
    return TG_OK;
}

tg_status
tg_embedding_layer_init(tg_embedding_layer *layer, tg_params *p, const char *name,
                        int64_t num_embeddings, int64_t embedding_dim, tg_rng *rng)
{
    if (!layer || !p || !name)
        return TG_ERR_ARG;
    tg_tensor *w;
    tg_status s = table_init(p, "embedding", name, num_embeddings, embedding_dim, rng, &w);
    if (s == TG_OK)
        layer->weight = w;
    return s;
}

tg_tensor *
tg_embedding_layer_forward(tg_tape *t, const tg_embedding_layer *layer, const int64_t *index,
                           int ndim, const int64_t *dims)
{
    if (!t)
        return NULL;
    if (!layer)
        return tg__fail(t, TG_ERR_ARG, "embedding layer: layer is NULL");
    return tg_embedding(t, layer->weight, index, ndim, dims);
}

tg_status
tg_positional_embedding_layer_init(tg_positional_embedding_layer *layer, tg_params *p,
                                   const char *name, int64_t max_len, int64_t dim, tg_rng *rng)
{
    if (!layer || !p || !name)
        return TG_ERR_ARG;
    tg_tensor *w;
    tg_status s = table_init(p, "positional_embedding", name, max_len, dim, rng, &w);
    if (s == TG_OK)
        layer->weight = w;
    return s;
}

tg_tensor *
tg_positional_embedding_layer_forward(tg_tape *t, const tg_positional_embedding_layer *layer,
                                      tg_tensor *x)
{
    if (!t)
        return NULL;
    if (!layer)
        return tg__fail(t, TG_ERR_ARG, "positional_embedding layer: layer is NULL");
    tg_tensor *w;
    if (t->status != TG_OK || !(w = table_operand(t, "positional_embedding", layer->weight)) ||
        !(x = tg__operand(t, "positional_embedding", "x", x)))
        return &t->nil;
    int64_t len = x->ndim >= 2 ? x->dims[x->ndim - 2] : -1;
    if (x->ndim < 2 || len > w->dims[0] || x->dims[x->ndim - 1] != w->dims[1])
        return tg__fail(t, TG_ERR_SHAPE,
                        "positional_embedding %s %s: x %s %s must be (..., T, %" PRId64
                        ") with T <= max_len = %" PRId64,
                        tg__name_text(w).s, tg__shape_text(w).s, tg__name_text(x).s,
                        tg__shape_text(x).s, w->dims[1], w->dims[0]);
    tg_tensor *positions = w;
    if (len < w->dims[0])
        positions = tg_slice(t, w, (const int64_t[]){0, 0}, (const int64_t[]){len, TG_END},
                             NULL);
    return tg_add(t, x, positions);
}
