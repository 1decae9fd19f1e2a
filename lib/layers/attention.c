/*
 * The multi-head self-attention layer helper (PyTorch's nn.MultiheadAttention, batch_first):
 *   [q k v] = X W_inᵀ + b_in              X (B·T, d), W_in (3d x d): one product for all three
 *   head h of q, k, v: columns [h·d/H, (h+1)·d/H) of each third, as (B, H, T, d/H)
 *   O_h = softmax(q_h k_hᵀ / √(d/H) + M) v_h        (tg_scaled_dot_product_attention)
 *   Y = [O_1 … O_H] W_outᵀ + b_out
 * Parameters are named as PyTorch's state_dict with this repo's "/" separator and the out
 * projection as a dense layer's: "<name>/in_proj_weight", "<name>/in_proj_bias",
 * "<name>/out_proj/W", "<name>/out_proj/b".
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>

#include "../internal.h"

tg_status
tg_multihead_attention_init(tg_multihead_attention *layer, tg_params *p, const char *name,
                            int64_t embed_dim, int64_t num_heads, tg_rng *rng)
{
    if (!layer || !p || !name)
        return TG_ERR_ARG;
    if (embed_dim < 1 || num_heads < 1 || embed_dim % num_heads) {
        p->last = TG_ERR_ARG;
        tg__params_fail(p, TG_ERR_ARG,
                        "multihead_attention \"%s\": d = %" PRId64 " is not divisible by %" PRId64
                        " heads (d and heads must be >= 1, heads dividing d)",
                        name, embed_dim, num_heads);
        return TG_ERR_ARG;
    }
    static const char *const suffix[4] = {"in_proj_weight", "in_proj_bias", "out_proj/W",
                                          "out_proj/b"};
    int64_t d = embed_dim;
    const int64_t dims[4][2] = {{3 * d, d}, {3 * d, 0}, {d, d}, {d, 0}};
    tg_tensor *w[4] = {NULL};
    struct tg__params_mark mark = tg__params_mark(p); /* atomic: see tg_dense_init */
    tg_status s = TG_OK;
    for (int i = 0; i < 4 && s == TG_OK; i++) {
        char pname[TG__NAME_MAX + 24];
        snprintf(pname, sizeof pname, "%s/%s", name, suffix[i]);
        w[i] = tg_params_add(p, pname, dims[i][1] ? 2 : 1, dims[i]);
        s = w[i] ? TG_OK : p->last;
    }
    if (s == TG_OK && rng) {
        /* nn.MultiheadAttention._reset_parameters: Xavier-uniform in-projection, zero biases;
         * the out projection keeps nn.Linear's U(±1/√fan_in) */
        s = tg_init_xavier_uniform(w[0], rng);
        if (s == TG_OK)
            s = tg_tensor_fill_uniform(w[2], rng, -1 / sqrt((double)d), 1 / sqrt((double)d));
        if (s != TG_OK) {
            p->last = s;
            tg__params_fail(p, s, "multihead_attention \"%s\": initializing failed: %s", name,
                            tg_status_string(s));
        }
    }
    if (s != TG_OK) {
        tg__params_rollback(p, mark);
        return s;
    }
    layer->in_proj_weight = w[0];
    layer->in_proj_bias = w[1];
    layer->out_proj_weight = w[2];
    layer->out_proj_bias = w[3];
    layer->embed_dim = embed_dim;
    layer->num_heads = num_heads;
    return TG_OK;
}

tg_tensor *
tg_multihead_attention_forward(tg_tape *t, const tg_multihead_attention *layer, tg_tensor *x,
                               bool is_causal, tg_tensor *attn_mask)
{
    if (!t)
        return NULL;
    if (!layer)
        return tg__fail(t, TG_ERR_ARG, "multihead_attention: layer is NULL");
    if (t->status != TG_OK || !(x = tg__operand(t, "multihead_attention", "x", x)))
        return &t->nil;
    int64_t d = layer->embed_dim, heads = layer->num_heads;
    if (x->ndim != 3 || x->dims[2] != d || x->dims[1] == 0)
        return tg__fail(t, TG_ERR_SHAPE,
                        "multihead_attention: x %s %s must be (B, T, %" PRId64 ") with T >= 1",
                        tg__name_text(x).s, tg__shape_text(x).s, d);
    int64_t b = x->dims[0], len = x->dims[1], dh = d / heads;
    tg_tensor *rows = tg_reshape(t, x, 2, (int64_t[]){b * len, d});
    tg_tensor *qkv = tg_add(t, tg_matmul_t(t, rows, false, layer->in_proj_weight, true),
                            layer->in_proj_bias);
    tg_tensor *part[3];
    for (int i = 0; i < 3; i++) {
        tg_tensor *cols = tg_slice(t, qkv, (int64_t[]){0, i * d},
                                   (int64_t[]){TG_END, (i + 1) * d}, NULL);
        tg_tensor *split = tg_reshape(t, cols, 4, (int64_t[]){b, len, heads, dh});
        part[i] = tg_permute(t, split, (int[]){0, 2, 1, 3}); /* (B, H, T, d/H) */
    }
    tg_tensor *o = tg_scaled_dot_product_attention(t, part[0], part[1], part[2], attn_mask,
                                                   is_causal, 1 / sqrt((double)dh));
    tg_tensor *merged = tg_reshape(t, tg_permute(t, o, (int[]){0, 2, 1, 3}), 2,
                                   (int64_t[]){b * len, d});
    tg_tensor *y = tg_add(t, tg_matmul_t(t, merged, false, layer->out_proj_weight, true),
                          layer->out_proj_bias);
    return tg_reshape(t, y, 3, (int64_t[]){b, len, d});
}
