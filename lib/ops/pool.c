/*
 * Pooling over the planes of x (N, C, H, W): max_pool2d and avg_pool2d with a (kh, kw) window,
 * strides (sh, sw) and zero-or-more padding (pt, pl) on each side, PyTorch's semantics
 * (floor mode); global average pooling is a mean over (H, W).
 *
 *   oh = ⌊(H + 2·pt − kh) / sh⌋ + 1, ow likewise; the window of output (p, q) starts at
 *   (p·sh − pt, q·sw − pl).
 *
 * max_pool2d:  y[n,c,p,q] = max over the window of x (padding is −inf, never chosen)
 *   VJP: dx[argmax] += dy. Ties: the first maximum in the window's row-major scan takes the
 *   whole gradient (as PyTorch's CPU kernel); a NaN in the window is the maximum.
 *   JVP: ẏ[n,c,p,q] = ẋ[n,c,argmax], the argmax the forward saved (so at a tie the directional
 *   derivative of the same choice the VJP makes).
 * avg_pool2d:  y[n,c,p,q] = (1 / (kh·kw)) Σ over the window of x (padding counts as zeros:
 *   PyTorch's count_include_pad=True)
 *   VJP: dx[i] += Σ over the windows holding i of dy / (kh·kw)
 *   JVP: ẏ = avg_pool2d(ẋ) (linear)
 *
 * The loops are in kernels/conv.c (plane by plane, threaded, bit-identical for any thread
 * count).
 */
#include <inttypes.h>

#include "../kernels/kernels.h"
#include "ops.h"

/* attr: v[0] = {kh, kw, sh, sw}, v[1] = {pt, pl} */
static struct tg__conv_geom
pool_geom(const tg_node *nd)
{
    const tg_tensor *x = nd->in[0], *y = nd->out;
    const int64_t *v = nd->attr->v[0];
    struct tg__conv_geom g = {
        .n = (size_t)x->dims[0], .c = (size_t)x->dims[1], .h = (size_t)x->dims[2],
        .w = (size_t)x->dims[3], .kh = (size_t)v[0], .kw = (size_t)v[1],
        .oh = (size_t)y->dims[2], .ow = (size_t)y->dims[3], .sh = v[2], .sw = v[3], .dh = 1,
        .dw = 1, .pt = nd->attr->v[1][0], .pl = nd->attr->v[1][1]};
    return g;
}

static tg_status
pool_shape(tg_node *nd, int *ndim, int64_t *dims)
{
    const tg_tensor *x = nd->in[0];
    const int64_t *v = nd->attr->v[0], *pad = nd->attr->v[1];
    *ndim = 4;
    dims[0] = x->dims[0];
    dims[1] = x->dims[1];
    dims[2] = (x->dims[2] + 2 * pad[0] - v[0]) / v[2] + 1;
    dims[3] = (x->dims[3] + 2 * pad[1] - v[1]) / v[3] + 1;
    return TG_OK;
}

/* max_pool2d keeps each output's argmax (a flat index within its plane of x) for the VJP */
static size_t
max_pool2d_scratch(const tg_node *nd)
{
    return nd->out->size * sizeof(int64_t);
}

static tg_status
max_pool2d_forward(tg_node *nd)
{
    if (nd->out->size == 0) /* no planes to write (N·C may be huge when a size is 0) */
        return TG_OK;
    struct tg__conv_geom g = pool_geom(nd);
    tg__pool2d(&g, nd->in[0]->data, nd->out->data, nd->scratch, true,
               nd->out->dtype == TG_F64);
    return TG_OK;
}

static tg_status
max_pool2d_vjp(tg_node *nd)
{
    if (!nd->in[0]->grad || nd->out->size == 0)
        return TG_OK;
    struct tg__conv_geom g = pool_geom(nd);
    tg__pool2d_vjp(&g, nd->out->grad, nd->in[0]->grad, nd->scratch, true,
                   nd->out->dtype == TG_F64);
    return TG_OK;
}

struct max_pool_jvp_job {
    const tg_node *nd;
    struct tg__conv_geom g;
};

/* ẏ of the planes [begin, end): a gather through the saved argmax */
static void
max_pool2d_jvp_part(size_t begin, size_t end, void *ctx)
{
    const struct max_pool_jvp_job *j = ctx;
    size_t in_plane = j->g.h * j->g.w, out_plane = j->g.oh * j->g.ow;
    const int64_t *argmax = j->nd->scratch;
    TG__DISPATCH(j->nd->out->dtype, T, {
        const T *xdot = j->nd->in[0]->tangent;
        T *ydot = j->nd->out->tangent;
        for (size_t nc = begin; nc < end; nc++)
            for (size_t o = nc * out_plane; o < (nc + 1) * out_plane; o++)
                if (argmax[o] >= 0)
                    ydot[o] = xdot[nc * in_plane + (size_t)argmax[o]];
    });
}

static tg_status
max_pool2d_jvp(tg_node *nd)
{
    if (!nd->in[0]->tangent || nd->out->size == 0)
        return TG_OK;
    struct max_pool_jvp_job j = {nd, pool_geom(nd)};
    size_t out_plane = j.g.oh * j.g.ow;
    tg__parallel_for(j.g.n * j.g.c, ((size_t)1 << 14) / out_plane + 1, max_pool2d_jvp_part, &j);
    return TG_OK;
}

const tg_op tg__op_max_pool2d = {
    .name = "max_pool2d",
    .n_inputs = 1,
    .shape = pool_shape,
    .forward = max_pool2d_forward,
    .vjp = max_pool2d_vjp,
    .vjp_graph = tg__vjp_graph_linear,
    .jvp = max_pool2d_jvp,
    .scratch_size = max_pool2d_scratch,
    .math = "y[n,c,p,q] = max over the (kh x kw) window at (p·s_h−pad_h, q·s_w−pad_w) of x",
    .vjp_math = "dx[argmax] += dy (ties: the first maximum in row-major order)",
    .jvp_math = "ẏ = ẋ[argmax] (the forward's argmax: at ties the first maximum)",
    .shapes = "(N,C,H,W) -> (N,C,oh,ow), oh = ⌊(H+2·pad_h−kh)/s_h⌋+1",
};

static tg_status
avg_pool2d_forward(tg_node *nd)
{
    if (nd->out->size == 0)
        return TG_OK;
    struct tg__conv_geom g = pool_geom(nd);
    tg__pool2d(&g, nd->in[0]->data, nd->out->data, NULL, false, nd->out->dtype == TG_F64);
    return TG_OK;
}

static tg_status
avg_pool2d_vjp(tg_node *nd)
{
    if (!nd->in[0]->grad || nd->out->size == 0)
        return TG_OK;
    struct tg__conv_geom g = pool_geom(nd);
    tg__pool2d_vjp(&g, nd->out->grad, nd->in[0]->grad, NULL, false, nd->out->dtype == TG_F64);
    return TG_OK;
}

static tg_status
avg_pool2d_jvp(tg_node *nd)
{
    if (!nd->in[0]->tangent || nd->out->size == 0)
        return TG_OK;
    struct tg__conv_geom g = pool_geom(nd);
    tg__pool2d(&g, nd->in[0]->tangent, nd->out->tangent, NULL, false, nd->out->dtype == TG_F64);
    return TG_OK;
}

const tg_op tg__op_avg_pool2d = {
    .name = "avg_pool2d",
    .n_inputs = 1,
    .shape = pool_shape,
    .forward = avg_pool2d_forward,
    .vjp = avg_pool2d_vjp,
    .vjp_graph = tg__vjp_graph_linear,
    .jvp = avg_pool2d_jvp,
    .math = "y[n,c,p,q] = (1/(kh·kw)) Σ over the window of x (padding counts as 0)",
    .vjp_math = "dx[i] += Σ over the windows holding i of dy/(kh·kw)",
    .jvp_math = "ẏ = avg_pool2d(ẋ)",
    .shapes = "(N,C,H,W) -> (N,C,oh,ow), oh = ⌊(H+2·pad_h−kh)/s_h⌋+1",
};

/* kernel (required), stride (NULL: the kernel), padding (NULL: 0; at most half the kernel) */
static tg_tensor *
pool2d(tg_tape *t, const tg_op *op, tg_tensor *x, const int64_t *kernel, const int64_t *stride,
       const int64_t *padding)
{
    if (!t)
        return NULL;
    if (t->status != TG_OK || !(x = tg__operand(t, op->name, "x", x)))
        return &t->nil;
    if (x->ndim != 4)
        return tg__fail(t, TG_ERR_SHAPE, "%s %s %s: expected x (N, C, H, W)", op->name,
                        tg__name_text(x).s, tg__shape_text(x).s);
    if (!kernel)
        return tg__fail(t, TG_ERR_ARG, "%s %s: kernel is NULL", op->name, tg__name_text(x).s);
    struct tg__attr attr = {0};
    static const char *const axis[2] = {"height", "width"};
    for (int k = 0; k < 2; k++) {
        int64_t kern = kernel[k], s = stride ? stride[k] : kern, p = padding ? padding[k] : 0;
        int64_t in = x->dims[2 + k];
        if (kern < 1 || kern > INT32_MAX || s < 1 || s > INT32_MAX || in > INT32_MAX)
            return tg__fail(t, TG_ERR_ARG,
                            "%s %s %s: kernel %" PRId64 " and stride %" PRId64 " along the %s "
                            "(each must be >= 1)",
                            op->name, tg__name_text(x).s, tg__shape_text(x).s, kern, s,
                            axis[k]);
        if (p < 0 || p > kern / 2)
            return tg__fail(t, TG_ERR_ARG,
                            "%s %s: padding %" PRId64 " along the %s must be in [0, kernel/2 = "
                            "%" PRId64 "]",
                            op->name, tg__name_text(x).s, p, axis[k], kern / 2);
        if (kern > in + 2 * p)
            return tg__fail(t, TG_ERR_SHAPE,
                            "%s %s %s: the kernel (%" PRId64 ") is larger than the padded %s "
                            "(%" PRId64 ")",
                            op->name, tg__name_text(x).s, tg__shape_text(x).s, kern, axis[k],
                            in + 2 * p);
        attr.v[0][k] = kern;
        attr.v[0][2 + k] = s;
        attr.v[1][k] = p;
    }
    return tg__record(t, op, &x, 1, &attr, NULL);
}

tg_tensor *
tg_max_pool2d(tg_tape *t, tg_tensor *x, const int64_t kernel[2], const int64_t stride[2],
              const int64_t padding[2])
{
    return pool2d(t, &tg__op_max_pool2d, x, kernel, stride, padding);
}

tg_tensor *
tg_avg_pool2d(tg_tape *t, tg_tensor *x, const int64_t kernel[2], const int64_t stride[2],
              const int64_t padding[2])
{
    return pool2d(t, &tg__op_avg_pool2d, x, kernel, stride, padding);
}

/* (N, C, H, W) -> (N, C, 1, 1): the mean of each plane (a mean over axes 2 and 3, keepdims),
 * as torch.nn.AdaptiveAvgPool2d(1). */
tg_tensor *
tg_global_avg_pool2d(tg_tape *t, tg_tensor *x)
{
    if (!t)
        return NULL;
    if (t->status != TG_OK || !(x = tg__operand(t, "global_avg_pool2d", "x", x)))
        return &t->nil;
    if (x->ndim != 4)
        return tg__fail(t, TG_ERR_SHAPE, "global_avg_pool2d %s %s: expected x (N, C, H, W)",
                        tg__name_text(x).s, tg__shape_text(x).s);
    return tg_mean_axes(t, x, (const int[]){2, 3}, 2, true);
}
