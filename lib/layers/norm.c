/*
 * The batch-norm layer helper (PyTorch's nn.BatchNorm1d/2d): weight "<name>/W" = 1 and bias
 * "<name>/b" = 0 (C), trained; running statistics "<name>/running_mean" = 0 and
 * "<name>/running_var" = 1 (C), buffers of the same set (checkpointed, never trained). The
 * forward is one tg_batch_norm, in the tape's mode (tg_tape_set_training).
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
