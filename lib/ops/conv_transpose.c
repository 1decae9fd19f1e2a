/*
 * Transposed convolution: conv_transpose2d, PyTorch's layout and semantics
 * (torch.nn.functional.conv_transpose2d).
 *
 *   x (N, C, H, W), w (C, O/G, kh, kw), b (O) or none, G groups: input block g of x (C/G
 *   channels) meets output block g (O/G channels) only; o = g·O/G + o', c in block g.
 *
 *   y[n, o, i·sh − ph + a·dh, j·sw − pw + b·dw] += x[n, c, i, j] · w[c, o', a, b]
 *   (summed over c in group(o), i, j, a, b; only where that position lies inside y), + b[o],
 *   with oh = (H − 1)·sh − 2·ph + dh·(kh − 1) + oph + 1, and so ow (oph: output_padding).
 *
 * It is the adjoint of conv2d with respect to its input: z ↦ conv2d(z, w), with w read as a
 * conv2d weight (C filters of O/G channels), maps (N, O, oh, ow) to (N, C, H, W), and
 * y = (that map)ᵀ x (+ b). So the matrices are conv2d's (lib/ops/conv.c, kernels/conv.c) with
 * the roles swapped. The geometry is that conv2d's: input y's shape (O, oh, ow), output x's
 * (H, W), the same strides, dilations and padding before (the padding after is implied), and
 * im2col of an (N, O, oh, ow) tensor is (O·kh·kw) x (N·H·W). With X = x laid out as
 * (C x N·H·W) and, per group, W_g (C/G) x (O/G·kh·kw) (w's rows of block g, as stored),
 * X_g (C/G) x (N·H·W):
 *
 *   forward:  dcol_g = W_gᵀ · X_g                y = col2im(dcol) + b
 *   VJP, from dy, with col = im2col(dy) (a conv2d of dy, no bias):
 *             dX_g  = W_g · col_g                dx += dX laid back to (N, C, H, W)
 *             dW_g += X_g · col_gᵀ               db[o] += Σ_{n, p, q} dy[n, o, p, q]
 *   derivative: L = ⟨dy, y⟩ = ⟨dy, col2im(dcol)⟩ = ⟨im2col(dy), dcol⟩ (col2im is im2col's
 *   adjoint) = Σ_g tr(col_gᵀ W_gᵀ X_g), so ∂L/∂X_g = W_g col_g and ∂L/∂W_g = X_g col_gᵀ
 *   ((C/G) x (O/G·kh·kw): block g's rows of w, in w's (C, O/G, kh, kw) order).
 *
 * Differentiable VJP (tg_grad): y is bilinear in (x, w), so the VJPs and the product are
 * nodes that run this op's own VJP and JVP on substituted data (tg__vjp_graph_bilinear).
 *
 * JVP: ẏ = conv_transpose(ẋ, w) + conv_transpose(x, ẇ) + ḃ (y is bilinear in (x, w)), per
 *   group  dcol̇_g = W_gᵀ · Ẋ_g + Ẇ_gᵀ · X_g,   ẏ = col2im(dcol̇) + ḃ[o],
 *   with X the forward's saved rows of x and Ẋ those of ẋ; a product only for a tangent that
 *   is not zero, the second adding to the first (beta = 1), and one col2im for both.
 *
 * The node's scratch holds X (C x N·H·W, kept from the forward for dW and the JVP's Ẇᵀ·X)
 * and one (O·kh·kw) x (N·H·W) matrix: dcol in the forward, col in the VJP. dX comes from the
 * tape's arena, so a warm step allocates nothing. The products are single large GEMMs per
 * group on the threaded kernels; every loop writes its own memory in a fixed order (the same
 * bits on any thread count).
 */
#include <inttypes.h>

#include "../kernels/kernels.h"
#include "ops.h"

/* attr: v[0] = {sh, sw, dh, dw}, v[1] = {ph, pw, oph, opw}, axis = groups */

/* conv2d's geometry from y (its input) to x (its output) */
static struct tg__conv_geom
ct_geom(const tg_node *nd)
{
    const tg_tensor *x = nd->in[0], *w = nd->in[1], *y = nd->out;
    struct tg__conv_geom g = {
        .n = (size_t)y->dims[0], .c = (size_t)y->dims[1], .h = (size_t)y->dims[2],
        .w = (size_t)y->dims[3], .kh = (size_t)w->dims[2], .kw = (size_t)w->dims[3],
        .oh = (size_t)x->dims[2], .ow = (size_t)x->dims[3],
        .sh = nd->attr->v[0][0], .sw = nd->attr->v[0][1], .dh = nd->attr->v[0][2],
        .dw = nd->attr->v[0][3], .pt = nd->attr->v[1][0], .pl = nd->attr->v[1][1]};
    return g;
}

/* The products' sizes: cg = C/G rows of X_g and W_g, kg = O/G·kh·kw rows of col_g (k in
 * all), P = N·H·W columns, plane = H·W. */
struct ct_mats {
    size_t groups, cg, c, kg, k, p, plane;
};

static struct ct_mats
ct_mats(const tg_node *nd)
{
    const tg_tensor *x = nd->in[0], *w = nd->in[1];
    struct ct_mats m;
    m.groups = (size_t)nd->attr->axis;
    m.c = (size_t)w->dims[0];
    m.cg = m.c / m.groups;
    m.kg = (size_t)(w->dims[1] * w->dims[2] * w->dims[3]);
    m.k = m.kg * m.groups;
    m.plane = (size_t)(x->dims[2] * x->dims[3]);
    m.p = (size_t)x->dims[0] * m.plane;
    return m;
}

/* scratch: X (C x P), then dcol / col (K x P) */
static size_t
conv_transpose2d_scratch(const tg_node *nd)
{
    struct ct_mats m = ct_mats(nd);
    return (m.c + m.k) * m.p * tg__dtype_bytes(nd->out->dtype);
}

/* oh = (H − 1)·s − 2·p + d·(k − 1) + op + 1 */
static int64_t
ct_out_size(int64_t in, int64_t kern, int64_t s, int64_t d, int64_t pad, int64_t op)
{
    return (in - 1) * s - 2 * pad + d * (kern - 1) + op + 1;
}

static tg_status
conv_transpose2d_shape(tg_node *nd, int *ndim, int64_t *dims)
{
    const tg_tensor *x = nd->in[0], *w = nd->in[1];
    const int64_t *s = nd->attr->v[0], *p = nd->attr->v[1];
    *ndim = 4;
    dims[0] = x->dims[0];
    dims[1] = w->dims[1] * nd->attr->axis;
    dims[2] = ct_out_size(x->dims[2], w->dims[2], s[0], s[2], p[0], p[2]);
    dims[3] = ct_out_size(x->dims[3], w->dims[3], s[1], s[3], p[1], p[3]);
    return TG_OK;
}

static tg_status
conv_transpose2d_forward(tg_node *nd)
{
    tg_tensor *y = nd->out;
    if (y->size == 0) /* nothing to write (and N·O may be huge when a size is 0) */
        return TG_OK;
    const tg_tensor *x = nd->in[0], *b = nd->n_in > 2 ? nd->in[2] : NULL;
    struct tg__conv_geom g = ct_geom(nd);
    struct ct_mats m = ct_mats(nd);
    tg_dtype dt = y->dtype;
    size_t es = tg__dtype_bytes(dt), oplane = g.h * g.w;
    /* y starts as the bias (or 0); col2im adds the taps */
    TG__DISPATCH(dt, T, {
        const T *bias = b ? b->data : NULL;
        T *yd = y->data;
        for (size_t n = 0; n < g.n; n++)
            for (size_t o = 0; o < g.c; o++) {
                T *dst = yd + (n * g.c + o) * oplane, v = bias ? bias[o] : 0;
                for (size_t q = 0; q < oplane; q++)
                    dst[q] = v;
            }
    });
    if (x->size == 0) /* no input channels or an empty plane: the bias alone */
        return TG_OK;
    char *xb = nd->scratch, *dcol = xb + m.c * m.p * es;
    /* x (N, C, plane) -> X (C x N·plane) */
    tg__planes_to_rows(g.n, m.c, m.plane, m.p, x->data, xb, dt == TG_F64);
    const char *w = nd->in[1]->data;
    for (size_t gi = 0; gi < m.groups; gi++)
        tg__gemm_typed(dt == TG_F64, true, false, m.kg, m.p, m.cg, w + gi * m.cg * m.kg * es, m.kg,
                       xb + gi * m.cg * m.p * es, m.p, 0.0, dcol + gi * m.kg * m.p * es, m.p);
    tg__col2im_add(&g, dcol, y->data, dt == TG_F64);
    return TG_OK;
}

static tg_status
conv_transpose2d_vjp(tg_node *nd)
{
    tg_tensor *x = nd->in[0], *w = nd->in[1], *b = nd->n_in > 2 ? nd->in[2] : NULL;
    if ((!x->grad && !w->grad && !(b && b->grad)) || nd->out->size == 0)
        return TG_OK;
    struct tg__conv_geom g = ct_geom(nd);
    struct ct_mats m = ct_mats(nd);
    tg_dtype dt = nd->out->dtype;
    size_t es = tg__dtype_bytes(dt), oplane = g.h * g.w;
    if (b && b->grad) /* db[o] = Σ_n Σ_q dy[n, o, q], in a fixed order */
        TG__DISPATCH(dt, T, {
            const T *dy = nd->out->grad;
            T *db = b->grad;
            for (size_t o = 0; o < g.c; o++) {
                T s = 0;
                for (size_t n = 0; n < g.n; n++) {
                    const T *src = dy + (n * g.c + o) * oplane;
                    for (size_t q = 0; q < oplane; q++)
                        s += src[q];
                }
                db[o] += s;
            }
        });
    if (x->size == 0 || (!x->grad && !w->grad)) /* no taps: x and w get nothing */
        return TG_OK;
    char *xb = nd->scratch, *col = xb + m.c * m.p * es;
    tg__im2col(&g, nd->out->grad, col, dt == TG_F64);
    if (w->grad)
        for (size_t gi = 0; gi < m.groups; gi++)
            tg__gemm_typed(dt == TG_F64, false, true, m.cg, m.kg, m.p, xb + gi * m.cg * m.p * es,
                           m.p, col + gi * m.kg * m.p * es, m.p, 1.0,
                           (char *)w->grad + gi * m.cg * m.kg * es, m.kg);
    if (x->grad) {
        char *dxb = tg__arena_alloc(&nd->tape->arena, m.c * m.p * es);
        if (!dxb)
            return tg_node_fail(nd, TG_ERR_NOMEM, "out of memory (%zu bytes) for dx's rows",
                                m.c * m.p * es);
        const char *wd = w->data;
        for (size_t gi = 0; gi < m.groups; gi++)
            tg__gemm_typed(dt == TG_F64, false, false, m.cg, m.p, m.kg, wd + gi * m.cg * m.kg * es,
                           m.kg, col + gi * m.kg * m.p * es, m.p, 0.0, dxb + gi * m.cg * m.p * es,
                           m.p);
        /* dX (C x N·plane) added to dx (N, C, plane) */
        tg__rows_to_planes(g.n, m.c, m.plane, m.p, dxb, NULL, true, x->grad, dt == TG_F64);
    }
    return TG_OK;
}

static tg_status
conv_transpose2d_jvp(tg_node *nd)
{
    const tg_tensor *x = nd->in[0], *w = nd->in[1], *b = nd->n_in > 2 ? nd->in[2] : NULL;
    tg_tensor *y = nd->out;
    if (y->size == 0)
        return TG_OK;
    struct tg__conv_geom g = ct_geom(nd);
    struct ct_mats m = ct_mats(nd);
    tg_dtype dt = y->dtype;
    size_t es = tg__dtype_bytes(dt), oplane = g.h * g.w;
    if (b && b->tangent) /* ẏ starts as ḃ (it is zero otherwise); col2im adds the taps */
        TG__DISPATCH(dt, T, {
            const T *bd = b->tangent;
            T *yd = y->tangent;
            for (size_t n = 0; n < g.n; n++)
                for (size_t o = 0; o < g.c; o++)
                    for (size_t q = 0; q < oplane; q++)
                        yd[(n * g.c + o) * oplane + q] = bd[o];
        });
    if (x->size == 0 || (!x->tangent && !w->tangent))
        return TG_OK;
    /* dcol̇ (K x P), then Ẋ (C x P) when x has a tangent */
    size_t dcol_bytes = m.k * m.p * es;
    char *dcol = tg__jvp_scratch(nd, dcol_bytes + (x->tangent ? m.c * m.p * es : 0));
    if (!dcol)
        return TG_ERR_NOMEM;
    const char *xb = nd->scratch, *wd = w->data, *wdot = w->tangent;
    double beta = 0; /* the second product adds to the first */
    if (x->tangent) {
        char *xdot = dcol + dcol_bytes;
        tg__planes_to_rows(g.n, m.c, m.plane, m.p, x->tangent, xdot, dt == TG_F64);
        for (size_t gi = 0; gi < m.groups; gi++)
            tg__gemm_typed(dt == TG_F64, true, false, m.kg, m.p, m.cg, wd + gi * m.cg * m.kg * es,
                           m.kg, xdot + gi * m.cg * m.p * es, m.p, 0.0,
                           dcol + gi * m.kg * m.p * es, m.p);
        beta = 1;
    }
    if (wdot)
        for (size_t gi = 0; gi < m.groups; gi++)
            tg__gemm_typed(dt == TG_F64, true, false, m.kg, m.p, m.cg,
                           wdot + gi * m.cg * m.kg * es, m.kg, xb + gi * m.cg * m.p * es, m.p,
                           beta, dcol + gi * m.kg * m.p * es, m.p);
    tg__col2im_add(&g, dcol, y->tangent, dt == TG_F64);
    return TG_OK;
}

const tg_op tg__op_conv_transpose2d = {
    .name = "conv_transpose2d",
    .n_inputs = TG_VARIADIC, /* x, w, and the bias when there is one */
    .shape = conv_transpose2d_shape,
    .forward = conv_transpose2d_forward,
    .vjp = conv_transpose2d_vjp,
    .vjp_graph = tg__vjp_graph_bilinear,
    .jvp = conv_transpose2d_jvp,
    .scratch_size = conv_transpose2d_scratch,
    .math = "y[n,o,i·s_h−pad_h+a·d_h, j·s_w−pad_w+b·d_w] += w[c,o−g·O/G,a,b] x[n,c,i,j] over "
            "c∈group g of o, i, j, a, b (where inside y), + b[o]: conv2d's adjoint in its input",
    .vjp_math = "per group, col = im2col(dy) (conv2d's, X = x as C x N·H·W): dx += W·col, "
                "dW += X·colᵀ, db[o] += Σ_{n,p,q} dy[n,o,p,q]",
    .jvp_math = "per group: ẏ = col2im(Wᵀ·Ẋ + Ẇᵀ·X) + ḃ[o] (X, Ẋ: x, ẋ as C x N·H·W)",
    .shapes = "x (N,C,H,W), w (C,O/G,kh,kw), b (O) optional -> (N,O,oh,ow), "
              "oh = (H−1)·s_h−2·pad_h+d_h(kh−1)+outpad_h+1",
};

tg_conv_transpose_options
tg_conv_transpose_defaults(void)
{
    return (tg_conv_transpose_options){.stride = {1, 1}, .padding = {0, 0},
                                       .output_padding = {0, 0}, .dilation = {1, 1},
                                       .groups = 1};
}

/* The prefix of every message: the op, x and w by name and shape. */
#define CT_FMT "conv_transpose2d %s %s, weight %s %s: "
#define CT_ARGS tg__name_text(x).s, tg__shape_text(x).s, tg__name_text(w).s, tg__shape_text(w).s

/* Validates o against x (N, C, H, W) and w (C, O/G, kh, kw), filling attr; false with the
 * tape's error set. */
static bool
ct_attr(tg_tape *t, tg_tensor *x, tg_tensor *w, tg_tensor *b,
        const tg_conv_transpose_options *o, struct tg__attr *attr)
{
    if (x->ndim != 4 || w->ndim != 4) {
        tg__fail(t, TG_ERR_SHAPE,
                 CT_FMT "expected x (N, C_in, H, W) and weight (C_in, C_out/groups, kh, kw)",
                 CT_ARGS);
        return false;
    }
    int64_t groups = o->groups, c = x->dims[1];
    if (w->dims[0] != c) {
        tg__fail(t, TG_ERR_SHAPE,
                 CT_FMT "the input has %" PRId64 " channels, the weight's first dimension "
                 "%" PRId64 " (it is (C_in, C_out/groups, kh, kw))",
                 CT_ARGS, c, w->dims[0]);
        return false;
    }
    if (groups < 1 || groups > INT32_MAX || c % groups) {
        tg__fail(t, TG_ERR_ARG,
                 CT_FMT "groups %" PRId64 " must be >= 1 and divide the input channels "
                 "(%" PRId64 ")",
                 CT_ARGS, groups, c);
        return false;
    }
    int64_t out_c;
    if (__builtin_mul_overflow(w->dims[1], groups, &out_c) || out_c > INT32_MAX) {
        tg__fail(t, TG_ERR_SHAPE,
                 CT_FMT "%" PRId64 " output channels per group x %" PRId64 " groups: sizes "
                 "above 2^31 are not supported",
                 CT_ARGS, w->dims[1], groups);
        return false;
    }
    if (b && (b->ndim != 1 || b->dims[0] != out_c)) {
        tg__fail(t, TG_ERR_SHAPE, CT_FMT "bias %s %s must be (%" PRId64 ")", CT_ARGS,
                 tg__name_text(b).s, tg__shape_text(b).s, out_c);
        return false;
    }
    attr->axis = (int)groups;
    int64_t out[2];
    for (int k = 0; k < 2; k++) {
        const char *name = k ? "width" : "height";
        int64_t in = x->dims[2 + k], kern = w->dims[2 + k];
        int64_t s = o->stride[k], d = o->dilation[k], p = o->padding[k];
        int64_t op = o->output_padding[k];
        if (s < 1 || d < 1 || s > INT32_MAX || d > INT32_MAX) {
            tg__fail(t, TG_ERR_ARG,
                     CT_FMT "stride %" PRId64 " and dilation %" PRId64 " along the %s (each "
                     "must be >= 1)",
                     CT_ARGS, s, d, name);
            return false;
        }
        if (p < 0 || p > INT32_MAX) {
            tg__fail(t, TG_ERR_ARG, CT_FMT "padding %" PRId64 " along the %s (must be >= 0)",
                     CT_ARGS, p, name);
            return false;
        }
        if (op < 0 || (op >= s && op >= d)) {
            tg__fail(t, TG_ERR_ARG,
                     CT_FMT "output_padding %" PRId64 " along the %s must be >= 0 and smaller "
                     "than the stride (%" PRId64 ") or the dilation (%" PRId64 ")",
                     CT_ARGS, op, name, s, d);
            return false;
        }
        if (in > INT32_MAX || kern > INT32_MAX) {
            tg__fail(t, TG_ERR_SHAPE, CT_FMT "sizes above 2^31 are not supported", CT_ARGS);
            return false;
        }
        if (kern < 1) {
            tg__fail(t, TG_ERR_SHAPE, CT_FMT "the kernel's %s is %" PRId64 " (must be >= 1)",
                     CT_ARGS, name, kern);
            return false;
        }
        /* every term is below 2^62 (sizes, strides, dilations below 2^31): no overflow */
        out[k] = ct_out_size(in, kern, s, d, p, op);
        if (out[k] < 1) {
            tg__fail(t, TG_ERR_SHAPE,
                     CT_FMT "the output's %s would be (%" PRId64 " - 1)·%" PRId64 " - 2·%" PRId64
                     " + %" PRId64 "·(%" PRId64 " - 1) + %" PRId64 " + 1 = %" PRId64
                     " ((size - 1)·stride - 2·padding + dilation·(kernel - 1) + "
                     "output_padding + 1); it must be >= 1",
                     CT_ARGS, name, in, s, p, d, kern, op, out[k]);
            return false;
        }
        if (out[k] > INT32_MAX) {
            tg__fail(t, TG_ERR_SHAPE,
                     CT_FMT "the output's %s would be %" PRId64 ": sizes above 2^31 are not "
                     "supported",
                     CT_ARGS, name, out[k]);
            return false;
        }
        attr->v[0][k] = s;
        attr->v[0][2 + k] = d;
        attr->v[1][k] = p;
        attr->v[1][2 + k] = op;
    }
    /* The products' sizes must fit: X and dX (C x N·H·W each), col (O·kh·kw x N·H·W), and
     * the output (N·O·oh·ow). (A tensor with a zero extent may have a huge other one.) */
    uint64_t cols, rows, total, taps, ys;
    if (__builtin_mul_overflow((uint64_t)x->dims[0], (uint64_t)(x->dims[2] * x->dims[3]),
                               &cols) ||
        __builtin_mul_overflow((uint64_t)out_c, (uint64_t)(w->dims[2] * w->dims[3]), &taps) ||
        __builtin_add_overflow(taps, 2 * (uint64_t)c, &rows) ||
        __builtin_mul_overflow(rows, cols, &total) || total > ((uint64_t)1 << 60) / 8 ||
        __builtin_mul_overflow((uint64_t)x->dims[0], (uint64_t)out_c, &ys) ||
        __builtin_mul_overflow(ys, (uint64_t)out[0] * (uint64_t)out[1], &ys) ||
        ys > ((uint64_t)1 << 60) / 8) {
        tg__fail(t, TG_ERR_SHAPE, CT_FMT "the convolution's matrices would be too large",
                 CT_ARGS);
        return false;
    }
    return true;
}

tg_tensor *
tg_conv_transpose2d(tg_tape *t, tg_tensor *x, tg_tensor *w, tg_tensor *b,
                    const tg_conv_transpose_options *opt)
{
    if (!t)
        return NULL;
    if (t->status != TG_OK || !(x = tg__operand(t, "conv_transpose2d", "x", x)) ||
        !(w = tg__operand(t, "conv_transpose2d", "weight", w)) ||
        (b && !(b = tg__operand(t, "conv_transpose2d", "bias", b))))
        return &t->nil;
    tg_conv_transpose_options o = opt ? *opt : tg_conv_transpose_defaults();
    struct tg__attr attr = {0};
    if (!ct_attr(t, x, w, b, &o, &attr))
        return &t->nil;
    tg_tensor *in[3] = {x, w, b};
    return tg__record(t, &tg__op_conv_transpose2d, in, b ? 3 : 2, &attr, NULL);
}
