/*
 * The conv2d layer helper (PyTorch's nn.Conv2d): a weight "<name>/W" (O, C/groups, kh, kw) and
 * a bias "<name>/b" (O), both initialized as PyTorch does, U(±1/√fan_in) with fan_in =
 * C/groups · kh · kw; the forward is one tg_conv2d.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>

#include "../internal.h"

tg_status
tg_conv2d_layer_init(tg_conv2d_layer *layer, tg_params *p, const char *name, int64_t in_channels,
                     int64_t out_channels, int64_t kh, int64_t kw, const tg_conv_options *opt,
                     bool bias, tg_rng *rng)
{
    if (!layer || !p || !name)
        return TG_ERR_ARG;
    tg_conv_options o = opt ? *opt : tg_conv_defaults();
    if (o.groups < 1 || in_channels < 1 || out_channels < 1 || in_channels % o.groups ||
        out_channels % o.groups || kh < 1 || kw < 1) {
        p->last = TG_ERR_ARG;
        tg__params_fail(p, TG_ERR_ARG,
                        "conv2d layer \"%s\": %" PRId64 " -> %" PRId64 " channels, kernel %" PRId64
                        "x%" PRId64 ", groups %" PRId64 " (channels and kernel >= 1, groups >= 1 "
                        "dividing both channel counts)",
                        name, in_channels, out_channels, kh, kw, o.groups);
        return TG_ERR_ARG;
    }
    char wname[TG__NAME_MAX + 8], bname[TG__NAME_MAX + 8];
    snprintf(wname, sizeof wname, "%s/W", name);
    snprintf(bname, sizeof bname, "%s/b", name);
    struct tg__params_mark mark = tg__params_mark(p); /* atomic: see tg_dense_init */
    tg_tensor *w = tg_params_add(p, wname, 4,
                                 (int64_t[]){out_channels, in_channels / o.groups, kh, kw});
    tg_tensor *b = w && bias ? tg_params_add(p, bname, 1, (int64_t[]){out_channels}) : NULL;
    tg_status s = w && (b || !bias) ? TG_OK : p->last;
    if (s == TG_OK && rng) {
        double bound = 1 / sqrt((double)(in_channels / o.groups * kh * kw));
        s = tg_tensor_fill_uniform(w, rng, -bound, bound);
        if (s == TG_OK && b)
            s = tg_tensor_fill_uniform(b, rng, -bound, bound);
    }
    if (s != TG_OK) {
        tg__params_rollback(p, mark);
        return s;
    }
    layer->weight = w;
    layer->bias = b;
    layer->options = o;
    return TG_OK;
}

tg_tensor *
tg_conv2d_layer_forward(tg_tape *t, const tg_conv2d_layer *layer, tg_tensor *x)
{
    if (!t)
        return NULL;
    if (!layer)
        return tg__fail(t, TG_ERR_ARG, "conv2d layer: layer is NULL");
    return tg_conv2d(t, x, layer->weight, layer->bias, &layer->options);
}
