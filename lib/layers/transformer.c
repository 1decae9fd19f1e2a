/*
 * The pre-norm transformer encoder block (PyTorch's nn.TransformerEncoderLayer with
 * norm_first=True, activation="gelu", dropout=0, batch_first=True):
 *   y   = x + MHA(LN1(x))                                 x (B, T, d)
 *   out = y + W2 · gelu(W1 · LN2(y) + b1) + b2            on the B·T rows of y, (B·T, d)
 * gelu is the exact erf form, PyTorch's default. Nothing here but the sub-layers' helpers and
 * plain ops, so the derivative is theirs: dL/dx = dL/dy (1 + ∂MHA(LN1(x))/∂x) and
 * dL/dy = dL/dout (1 + ∂FF(LN2(y))/∂y); the residual adds carry the identity terms.
 * Parameters under "<name>/": "norm1/W", "norm1/b", "self_attn/in_proj_weight",
 * "self_attn/in_proj_bias", "self_attn/out_proj/W", "self_attn/out_proj/b", "norm2/W",
 * "norm2/b", "linear1/W", "linear1/b", "linear2/W", "linear2/b": PyTorch's state_dict keys
 * with "/" for "." and the dense layer's "W"/"b" for weight/bias.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>

#include "../internal.h"

/* nn.Linear's reset_parameters: kaiming_uniform_(a = √5) on W is U(±1/√fan_in), and the bias
 * U(±1/√fan_in) too. */
static tg_status
torch_linear_init(tg_dense *layer, int64_t fan_in, tg_rng *rng)
{
    double bound = 1 / sqrt((double)fan_in);
    tg_status s = tg_tensor_fill_uniform(layer->weight, rng, -bound, bound);
    return s == TG_OK ? tg_tensor_fill_uniform(layer->bias, rng, -bound, bound) : s;
}

tg_status
tg_transformer_block_init(tg_transformer_block *block, tg_params *p, const char *name,
                          int64_t d_model, int64_t nhead, int64_t dim_feedforward, tg_rng *rng)
{
    if (!block || !p || !name)
        return TG_ERR_ARG;
    if (d_model < 1 || nhead < 1 || dim_feedforward < 1 || d_model % nhead) {
        p->last = TG_ERR_ARG;
        tg__params_fail(p, TG_ERR_ARG,
                        "transformer_block \"%s\": d_model = %" PRId64 " is not divisible by %" PRId64
                        " heads, or dim_feedforward = %" PRId64
                        " < 1 (all must be >= 1, heads dividing d_model)",
                        name, d_model, nhead, dim_feedforward);
        return TG_ERR_ARG;
    }
    char sub[TG__NAME_MAX + 16];
    tg_transformer_block b = {0};
    /* Atomic: every sub-layer's parameters go in after this mark; any failure below rolls all
     * of them back, so a refused block adds nothing. */
    struct tg__params_mark mark = tg__params_mark(p);
    snprintf(sub, sizeof sub, "%s/norm1", name);
    tg_status s = tg_layer_norm_layer_init(&b.norm1, p, sub, 1, &d_model, true);
    if (s == TG_OK) {
        snprintf(sub, sizeof sub, "%s/self_attn", name);
        s = tg_multihead_attention_init(&b.self_attn, p, sub, d_model, nhead, rng);
    }
    if (s == TG_OK) {
        snprintf(sub, sizeof sub, "%s/norm2", name);
        s = tg_layer_norm_layer_init(&b.norm2, p, sub, 1, &d_model, true);
    }
    if (s == TG_OK) {
        snprintf(sub, sizeof sub, "%s/linear1", name);
        s = tg_dense_init(&b.linear1, p, sub, d_model, dim_feedforward, TG_ACT_GELU,
                          TG_EXAMPLES_AS_ROWS, NULL);
    }
    if (s == TG_OK) {
        snprintf(sub, sizeof sub, "%s/linear2", name);
        s = tg_dense_init(&b.linear2, p, sub, dim_feedforward, d_model, TG_ACT_IDENTITY,
                          TG_EXAMPLES_AS_ROWS, NULL);
    }
    if (s == TG_OK && rng) {
        s = torch_linear_init(&b.linear1, d_model, rng);
        if (s == TG_OK)
            s = torch_linear_init(&b.linear2, dim_feedforward, rng);
        if (s != TG_OK) {
            p->last = s;
            tg__params_fail(p, s, "transformer_block \"%s\": initializing failed: %s", name,
                            tg_status_string(s));
        }
    }
    if (s != TG_OK) {
        tg__params_rollback(p, mark);
        return s;
    }
    b.d_model = d_model;
    b.nhead = nhead;
    b.dim_feedforward = dim_feedforward;
    *block = b;
    return TG_OK;
}

tg_tensor *
tg_transformer_block_forward(tg_tape *t, const tg_transformer_block *block, tg_tensor *x,
                             bool is_causal, tg_tensor *attn_mask)
{
    if (!t)
        return NULL;
    if (!block || !block->norm1.weight)
        return tg__fail(t, TG_ERR_ARG, "transformer_block: block is NULL or not initialized");
    if (t->status != TG_OK || !(x = tg__operand(t, "transformer_block", "x", x)))
        return &t->nil;
    int64_t d = block->d_model;
    tg_dtype dt = tg_tensor_dtype(block->norm1.weight);
    if (x->ndim != 3 || x->dims[2] != d || x->dims[1] == 0 || tg_tensor_dtype(x) != dt)
        return tg__fail(t, TG_ERR_SHAPE,
                        "transformer_block: x %s %s %s must be (B, T, %" PRId64
                        ") %s with T >= 1 (the block's d_model and dtype)",
                        tg__name_text(x).s, tg__shape_text(x).s, tg_dtype_name(tg_tensor_dtype(x)),
                        d, tg_dtype_name(dt));
    int64_t rows = x->dims[0] * x->dims[1];
    tg_tensor *attended = tg_multihead_attention_forward(
        t, &block->self_attn, tg_layer_norm_layer_forward(t, &block->norm1, x), is_causal,
        attn_mask);
    tg_tensor *y = tg_reshape(t, tg_add(t, x, attended), 2, (int64_t[]){rows, d});
    tg_tensor *hidden = tg_dense_forward(t, &block->linear1,
                                         tg_layer_norm_layer_forward(t, &block->norm2, y));
    tg_tensor *out = tg_add(t, y, tg_dense_forward(t, &block->linear2, hidden));
    return tg_reshape(t, out, 3, x->dims);
}
