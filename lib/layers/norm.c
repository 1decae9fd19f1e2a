/*
 * The batch-norm layer helper (PyTorch's nn.BatchNorm1d/2d): weight "<name>/W" = 1 and bias
 * "<name>/b" = 0 (C), trained; running statistics "<name>/running_mean" = 0 and
 * "<name>/running_var" = 1 (C), buffers of the same set (checkpointed, never trained). The
 * forward is one tg_batch_norm, in the tape's mode (tg_tape_set_training).
 *
 * The layer-norm and RMS-norm helpers (nn.LayerNorm, nn.RMSNorm): weight "<name>/W" = 1 and
 * (layer norm) bias "<name>/b" = 0 of the normalized shape, or nothing without elementwise
 * affine; the forward is one tg_layer_norm or tg_rms_norm node.
 */
#include <inttypes.h>
#include <stdio.h>

#include "../internal.h"

tg_status
tg_batch_norm_layer_init(tg_batch_norm_layer *layer, tg_params *p, const char *name,
                         int64_t channels)
{
    if (!layer || !p || !name)
        return TG_ERR_ARG;
    if (channels < 1) {
        p->last = TG_ERR_ARG;
        tg__params_fail(p, TG_ERR_ARG, "batch_norm layer \"%s\": %" PRId64 " channels (>= 1)",
                        name, channels);
        return TG_ERR_ARG;
    }
    static const char *const suffix[4] = {"W", "b", "running_mean", "running_var"};
    tg_tensor *made[4] = {NULL};
    struct tg__params_mark mark = tg__params_mark(p); /* atomic: see tg_dense_init */
    tg_status s = TG_OK;
    for (int k = 0; k < 4 && s == TG_OK; k++) {
        char full[TG__NAME_MAX + 16];
        snprintf(full, sizeof full, "%s/%s", name, suffix[k]);
        made[k] = k < 2 ? tg_params_add(p, full, 1, &channels)
                        : tg_params_add_buffer(p, full, 1, &channels);
        s = made[k] ? TG_OK : p->last;
    }
    if (s != TG_OK) {
        tg__params_rollback(p, mark);
        return s;
    }
    tg_tensor_fill(made[0], 1.0);
    tg_tensor_fill(made[3], 1.0);
    *layer = (tg_batch_norm_layer){made[0], made[1], made[2], made[3], 0.1, 1e-5, TG_ACT_IDENTITY};
    return TG_OK;
}

tg_tensor *
tg_batch_norm_layer_forward(tg_tape *t, const tg_batch_norm_layer *layer, tg_tensor *x)
{
    if (!t)
        return NULL;
    if (!layer)
        return tg__fail(t, TG_ERR_ARG, "batch_norm layer: layer is NULL");
    return tg_batch_norm_act(t, x, layer->weight, layer->bias, layer->running_mean,
                             layer->running_var, layer->momentum, layer->eps,
                             (tg_activation)layer->act);
}

/* Adds "<name>/W" = 1 and, when with_bias, "<name>/b" = 0 of the normalized shape (affine), or
 * nothing; atomic (see tg_dense_init). */
static tg_status
trailing_affine_init(tg_params *p, const char *what, const char *name, int n_norm_axes,
                     const int64_t *shape, bool affine, bool with_bias, tg_tensor **w,
                     tg_tensor **b)
{
    bool ok = n_norm_axes >= 1 && n_norm_axes <= TG_MAX_DIMS && shape;
    for (int i = 0; ok && i < n_norm_axes; i++)
        ok = shape[i] >= 1;
    if (!ok) {
        p->last = TG_ERR_ARG;
        tg__params_fail(p, TG_ERR_ARG,
                        "%s layer \"%s\": the normalized shape needs 1 to %d sizes >= 1 (%d "
                        "given%s)",
                        what, name, TG_MAX_DIMS, n_norm_axes,
                        shape || n_norm_axes < 1 ? "" : ", shape NULL");
        return TG_ERR_ARG;
    }
    *w = *b = NULL;
    if (!affine)
        return TG_OK;
    struct tg__params_mark mark = tg__params_mark(p);
    char full[TG__NAME_MAX + 8];
    snprintf(full, sizeof full, "%s/W", name);
    *w = tg_params_add(p, full, n_norm_axes, shape);
    if (*w && with_bias) {
        snprintf(full, sizeof full, "%s/b", name);
        *b = tg_params_add(p, full, n_norm_axes, shape);
    }
    if (!*w || (with_bias && !*b)) {
        tg_status s = p->last;
        tg__params_rollback(p, mark);
        *w = *b = NULL;
        return s;
    }
    tg_tensor_fill(*w, 1.0);
    return TG_OK;
}

tg_status
tg_layer_norm_layer_init(tg_layer_norm_layer *layer, tg_params *p, const char *name,
                         int n_norm_axes, const int64_t *normalized_shape,
                         bool elementwise_affine)
{
    if (!layer || !p || !name)
        return TG_ERR_ARG;
    tg_tensor *w, *b;
    tg_status s = trailing_affine_init(p, "layer_norm", name, n_norm_axes, normalized_shape,
                                       elementwise_affine, true, &w, &b);
    if (s == TG_OK)
        *layer = (tg_layer_norm_layer){w, b, n_norm_axes, 1e-5};
    return s;
}

tg_tensor *
tg_layer_norm_layer_forward(tg_tape *t, const tg_layer_norm_layer *layer, tg_tensor *x)
{
    if (!t)
        return NULL;
    if (!layer)
        return tg__fail(t, TG_ERR_ARG, "layer_norm layer: layer is NULL");
    return tg_layer_norm(t, x, layer->n_norm_axes, layer->weight, layer->bias, layer->eps);
}

tg_status
tg_rms_norm_layer_init(tg_rms_norm_layer *layer, tg_params *p, const char *name,
                       int n_norm_axes, const int64_t *normalized_shape, bool elementwise_affine)
{
    if (!layer || !p || !name)
        return TG_ERR_ARG;
    tg_tensor *w, *b;
    tg_status s = trailing_affine_init(p, "rms_norm", name, n_norm_axes, normalized_shape,
                                       elementwise_affine, false, &w, &b);
    if (s == TG_OK)
        *layer = (tg_rms_norm_layer){w, n_norm_axes, 1e-6};
    return s;
}

tg_tensor *
tg_rms_norm_layer_forward(tg_tape *t, const tg_rms_norm_layer *layer, tg_tensor *x)
{
    if (!t)
        return NULL;
    if (!layer)
        return tg__fail(t, TG_ERR_ARG, "rms_norm layer: layer is NULL");
    return tg_rms_norm(t, x, layer->n_norm_axes, layer->weight, layer->eps);
}
