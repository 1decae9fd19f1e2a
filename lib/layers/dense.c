/*
 * The dense layer helper: parameters plus a composition of plain ops, nothing more.
 *   examples as columns:  Z = W·A + b,  b (out x 1)     (the note's layout)
 *   examples as rows:     Z = X·Wᵀ + b, b (1 x out)     (PyTorch's nn.Linear)
 */
#include <stdio.h>

#include "../internal.h"

const char *
tg_activation_name(tg_activation act)
{
    static const char *const names[] = {
        [TG_ACT_IDENTITY] = "identity", [TG_ACT_SIGMOID] = "sigmoid",
        [TG_ACT_TANH] = "tanh",         [TG_ACT_RELU] = "relu",
        [TG_ACT_LEAKY_RELU] = "leaky_relu", [TG_ACT_SOFTPLUS] = "softplus",
        [TG_ACT_GELU] = "gelu",
    };
    return (unsigned)act < sizeof names / sizeof names[0] ? names[act] : "unknown activation";
}

tg_tensor *
tg_activate(tg_tape *t, tg_tensor *x, tg_activation act)
{
    switch (act) {
    case TG_ACT_IDENTITY: return tg_identity(t, x);
    case TG_ACT_SIGMOID: return tg_sigmoid(t, x);
    case TG_ACT_TANH: return tg_tanh(t, x);
    case TG_ACT_RELU: return tg_relu(t, x);
    case TG_ACT_LEAKY_RELU: return tg_leaky_relu(t, x, 0.01);
    case TG_ACT_SOFTPLUS: return tg_softplus(t, x);
    case TG_ACT_GELU: return tg_gelu(t, x);
    }
    if (!t)
        return NULL;
    return tg__fail(t, TG_ERR_ARG, "activate: unknown activation %d", (int)act);
}

tg_status
tg_dense_init(tg_dense *layer, tg_params *p, const char *name, int64_t n_in, int64_t n_out,
              tg_activation act, tg_layout layout, tg_rng *rng)
{
    if (!layer || !p || !name)
        return TG_ERR_ARG;
    if ((unsigned)act > TG_ACT_GELU || (layout != TG_EXAMPLES_AS_COLUMNS &&
                                        layout != TG_EXAMPLES_AS_ROWS)) {
        p->last = TG_ERR_ARG;
        tg__params_fail(p, TG_ERR_ARG, "dense \"%s\": unknown activation %d or layout %d", name,
                        (int)act, (int)layout);
        return TG_ERR_ARG;
    }
    char wname[TG__NAME_MAX + 8], bname[TG__NAME_MAX + 8];
    snprintf(wname, sizeof wname, "%s/W", name);
    snprintf(bname, sizeof bname, "%s/b", name);
    int64_t wdims[2] = {n_out, n_in};
    int64_t bdims[2] = {layout == TG_EXAMPLES_AS_COLUMNS ? n_out : 1,
                        layout == TG_EXAMPLES_AS_COLUMNS ? 1 : n_out};
    /* Atomic: every parameter this helper adds goes in after the mark, and any failure rolls
     * the set back to it (a layer helper is mark, adds, init, rollback on failure). */
    struct tg__params_mark mark = tg__params_mark(p);
    tg_tensor *w = tg_params_add(p, wname, 2, wdims);
    tg_tensor *b = w ? tg_params_add(p, bname, 2, bdims) : NULL;
    tg_status s = w && b ? TG_OK : p->last;
    if (s == TG_OK && rng && n_in > 0 && n_out > 0) {
        bool relu_like = act == TG_ACT_RELU || act == TG_ACT_LEAKY_RELU || act == TG_ACT_GELU;
        s = relu_like ? tg_init_he_normal(w, rng) : tg_init_xavier_uniform(w, rng);
        if (s != TG_OK) {
            p->last = s;
            tg__params_fail(p, s, "dense \"%s\": initializing %s failed: %s", name, wname,
                            tg_status_string(s));
        }
    }
    if (s != TG_OK) {
        tg__params_rollback(p, mark);
        return s;
    }
    layer->weight = w;
    layer->bias = b;
    layer->act = act;
    layer->layout = layout;
    return TG_OK;
}

tg_tensor *
tg_dense_forward(tg_tape *t, const tg_dense *layer, tg_tensor *x)
{
    if (!t)
        return NULL;
    if (!layer)
        return tg__fail(t, TG_ERR_ARG, "dense: layer is NULL");
    tg_tensor *z = layer->layout == TG_EXAMPLES_AS_COLUMNS
                       ? tg_matmul(t, layer->weight, x)
                       : tg_matmul_t(t, x, false, layer->weight, true);
    /* One fused node for bias + activation (ops/activation.c, bias_act): the same values as
     * tg_activate(tg_add(z, b)), one pass each way. */
    return tg_bias_act(t, z, layer->bias, layer->act);
}
