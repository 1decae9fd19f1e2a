/*
 * Convolution: conv2d (and conv1d, a conv2d of height 1), PyTorch's layout and semantics.
 *
 *   x (N, C, H, W), w (O, C/G, kh, kw), b (O) or none, G groups: channel block g of x
 *   (C/G channels) meets output block g (O/G filters) only.
 *
 *   y[n, o, p, q] = b[o] + Σ_{c in group(o), i, j} w[o, c', i, j] ·
 *                              x[n, c, p·sh − pt + i·dh, q·sw − pl + j·dw]
 *   (x is 0 in the padding), with oh = ⌊(H + pt + pb − dh(kh − 1) − 1) / sh⌋ + 1, and so ow.
 *
 * As matrices (kernels/conv.c has the layout): col = im2col(x) is (C·kh·kw) x (N·oh·ow), and
 * per group  Y_g = W_g · col_g, W_g (O/G) x (C/G·kh·kw), Y_g (O/G) x (N·oh·ow).
 *
 * VJP, from dY (dy laid out as Y):
 *   dW_g += dY_g · col_gᵀ                 (summed over the chunks of samples, in order)
 *   db[o] += Σ_{n, p, q} dy[n, o, p, q]
 *   dx   += col2im(W_gᵀ · dY_g)           (each tap's gradient added back where it was read)
 *
 * Differentiable VJP (tg_grad): y is bilinear in (x, w), so the VJPs and the product are
 * nodes that run this op's own VJP and JVP on substituted data (tg__vjp_graph_bilinear).
 *
 * JVP: ẏ = conv(ẋ, w) + conv(x, ẇ) + ḃ (y is bilinear in (x, w)), as matrices per group
 *   Ẏ_g = W_g · im2col(ẋ)_g + Ẇ_g · col_g,   ẏ[n, o, p, q] = Ẏ[o, (n, p, q)] + ḃ[o],
 *   the forward's product once with ẋ in place of x and once with ẇ in place of w (each only
 *   when that tangent is not zero), summed by the second GEMM (beta = 1), over the same
 *   chunks of samples.
 *
 * The products are large GEMMs on the threaded kernels, over chunks of samples (below); a warm
 * step allocates nothing (the scratch comes from the tape's arena).
 */
#include <inttypes.h>

#include "../kernels/kernels.h"
#include "ops.h"

/* attr: v[0] = {sh, sw, dh, dw}, v[1] = {pt, pl, pb, pr}, axis = groups */
static struct tg__conv_geom
conv_geom(const tg_node *nd)
{
    const tg_tensor *x = nd->in[0], *w = nd->in[1], *y = nd->out;
    struct tg__conv_geom g = {
        .n = (size_t)x->dims[0], .c = (size_t)x->dims[1], .h = (size_t)x->dims[2],
        .w = (size_t)x->dims[3], .kh = (size_t)w->dims[2], .kw = (size_t)w->dims[3],
        .oh = (size_t)y->dims[2], .ow = (size_t)y->dims[3],
        .sh = nd->attr->v[0][0], .sw = nd->attr->v[0][1], .dh = nd->attr->v[0][2],
        .dw = nd->attr->v[0][3], .pt = nd->attr->v[1][0], .pl = nd->attr->v[1][1]};
    return g;
}

/*
 * The products run over chunks of samples: col for samples [n0, n1) is K x (n1 − n0)·plane,
 * small enough (CONV_CHUNK_BYTES with its Y block) to stay in the caches, so a
 * convolution's working memory does not grow with the batch. The chunk depends on the shapes
 * alone (never on the thread count), so results are reproducible; dW sums its chunks in order.
 * The VJP builds each chunk's columns again (an im2col pass, cheap beside the products), and
 * then writes dx's columns over them: the scratch is one chunk, for forward and VJP alike, and
 * a second backward over the same step finds nothing it needs overwritten.
 */
#define CONV_CHUNK_BYTES ((size_t)2 << 20)

/* The sizes of the products: K rows of col per group, P = N·oh·ow columns, chunks of `cs`
 * samples (pc = cs·plane columns at most). */
struct conv_mats {
    size_t groups, og, kg, k, p, plane, cs, pc;
};

static struct conv_mats
conv_mats(const tg_node *nd)
{
    const tg_tensor *w = nd->in[1], *y = nd->out;
    struct conv_mats m;
    m.groups = (size_t)nd->attr->axis;
    m.og = (size_t)w->dims[0] / m.groups;
    m.kg = (size_t)(w->dims[1] * w->dims[2] * w->dims[3]);
    m.k = m.kg * m.groups;
    m.plane = (size_t)(y->dims[2] * y->dims[3]);
    m.p = (size_t)y->dims[0] * m.plane;
    size_t n = (size_t)y->dims[0], per_sample = (m.k + (size_t)w->dims[0]) * m.plane *
                                                    tg__dtype_bytes(y->dtype);
    size_t cs = per_sample ? CONV_CHUNK_BYTES / per_sample : n;
    cs = cs < 1 ? 1 : cs > n ? n : cs;
    if (n) /* even chunks: the same count, none much smaller than the others */
        cs = (n + (n + cs - 1) / cs - 1) / ((n + cs - 1) / cs);
    m.cs = cs;
    m.pc = cs * m.plane;
    return m;
}

/* scratch: one chunk's col (K x pc), then its Y or dY (O x pc) */
static size_t
conv2d_scratch(const tg_node *nd)
{
    struct conv_mats m = conv_mats(nd);
    return (m.k + m.og * m.groups) * m.pc * tg__dtype_bytes(nd->out->dtype);
}

static tg_status
conv2d_shape(tg_node *nd, int *ndim, int64_t *dims)
{
    const tg_tensor *x = nd->in[0], *w = nd->in[1];
    const int64_t *s = nd->attr->v[0], *pad = nd->attr->v[1];
    *ndim = 4;
    dims[0] = x->dims[0];
    dims[1] = w->dims[0];
    dims[2] = (x->dims[2] + pad[0] + pad[2] - s[2] * (w->dims[2] - 1) - 1) / s[0] + 1;
    dims[3] = (x->dims[3] + pad[1] + pad[3] - s[3] * (w->dims[3] - 1) - 1) / s[1] + 1;
    return TG_OK;
}

/* The chunk of samples [n0, n0 + gc->n): gc is g for those samples, x their first image. */
static const char *
chunk_input(const tg_node *nd, const struct tg__conv_geom *g, size_t n0, size_t cs,
            struct tg__conv_geom *gc)
{
    *gc = *g;
    gc->n = n0 + cs > g->n ? g->n - n0 : cs;
    return (const char *)nd->in[0]->data + n0 * g->c * g->h * g->w * tg__dtype_bytes(nd->out->dtype);
}

static tg_status
conv2d_forward(tg_node *nd)
{
    if (nd->out->size == 0) /* nothing to write (and N·O may be huge when a size is 0) */
        return TG_OK;
    struct tg__conv_geom g = conv_geom(nd), gc;
    struct conv_mats m = conv_mats(nd);
    tg_dtype dt = nd->out->dtype;
    size_t es = tg__dtype_bytes(dt), o_all = m.og * m.groups;
    char *col = nd->scratch, *ybuf = col + m.k * m.pc * es;
    const char *w = nd->in[1]->data;
    const tg_tensor *b = nd->n_in > 2 ? nd->in[2] : NULL;
    for (size_t n0 = 0; n0 < g.n; n0 += m.cs) {
        tg__im2col(&gc, chunk_input(nd, &g, n0, m.cs, &gc), col, dt == TG_F64);
        size_t pc = gc.n * m.plane; /* this chunk's columns (the last may be short) */
        for (size_t gi = 0; gi < m.groups; gi++)
            tg__gemm_typed(dt == TG_F64, false, false, m.og, pc, m.kg, w + gi * m.og * m.kg * es,
                           m.kg, col + gi * m.kg * pc * es, pc, 0.0, ybuf + gi * m.og * pc * es,
                           pc);
        /* Y (O x cs·plane) -> y (N, O, plane), plus the bias */
        tg__rows_to_planes(gc.n, o_all, m.plane, pc, ybuf, b ? b->data : NULL, false,
                           (char *)nd->out->data + n0 * o_all * m.plane * es, dt == TG_F64);
    }
    return TG_OK;
}

static tg_status
conv2d_vjp(tg_node *nd)
{
    tg_tensor *x = nd->in[0], *w = nd->in[1], *b = nd->n_in > 2 ? nd->in[2] : NULL;
    if ((!x->grad && !w->grad && !(b && b->grad)) || nd->out->size == 0)
        return TG_OK;
    struct tg__conv_geom g = conv_geom(nd), gc;
    struct conv_mats m = conv_mats(nd);
    tg_dtype dt = nd->out->dtype;
    size_t es = tg__dtype_bytes(dt), o_all = m.og * m.groups;
    char *col = nd->scratch, *dyb = col + m.k * m.pc * es;
    const char *wd = w->data;
    for (size_t n0 = 0; n0 < g.n; n0 += m.cs) {
        const char *xc = chunk_input(nd, &g, n0, m.cs, &gc);
        size_t pc = gc.n * m.plane;
        /* dy (N, O, plane) -> dY (O x cs·plane); db from its rows, in a fixed order */
        tg__planes_to_rows(gc.n, o_all, m.plane, pc,
                           (const char *)nd->out->grad + n0 * o_all * m.plane * es, dyb,
                           dt == TG_F64);
        TG__DISPATCH(dt, T, {
            const T *d = (const T *)dyb;
            T *db = b && b->grad ? b->grad : NULL;
            for (size_t o = 0; db && o < o_all; o++) {
                T s = 0;
                for (size_t q = 0; q < pc; q++)
                    s += d[o * pc + q];
                db[o] += s;
            }
        });
        if (w->grad) {
            tg__im2col(&gc, xc, col, dt == TG_F64);
            for (size_t gi = 0; gi < m.groups; gi++)
                tg__gemm_typed(dt == TG_F64, false, true, m.og, m.kg, pc, dyb + gi * m.og * pc * es,
                               pc, col + gi * m.kg * pc * es, pc, 1.0,
                               (char *)w->grad + gi * m.og * m.kg * es, m.kg);
        }
        if (x->grad) { /* dcol = Wᵀ·dY over col's buffer (its columns are used up) */
            for (size_t gi = 0; gi < m.groups; gi++)
                tg__gemm_typed(dt == TG_F64, true, false, m.kg, pc, m.og,
                               wd + gi * m.og * m.kg * es, m.kg, dyb + gi * m.og * pc * es, pc, 0.0,
                               col + gi * m.kg * pc * es, pc);
            tg__col2im_add(&gc, col, (char *)x->grad + (size_t)(xc - (const char *)x->data),
                           dt == TG_F64);
        }
    }
    return TG_OK;
}

static tg_status
conv2d_jvp(tg_node *nd)
{
    const tg_tensor *x = nd->in[0], *w = nd->in[1], *b = nd->n_in > 2 ? nd->in[2] : NULL;
    const void *bias_dot = b ? b->tangent : NULL;
    tg_tensor *y = nd->out;
    if (y->size == 0)
        return TG_OK;
    struct tg__conv_geom g = conv_geom(nd), gc;
    struct conv_mats m = conv_mats(nd);
    tg_dtype dt = y->dtype;
    size_t es = tg__dtype_bytes(dt), o_all = m.og * m.groups;
    if (!x->tangent && !w->tangent) { /* ẏ[n, o, ·] = ḃ[o] */
        TG__DISPATCH(dt, T, {
            const T *bd = bias_dot;
            T *yd = y->tangent;
            for (size_t n = 0; n < g.n; n++)
                for (size_t o = 0; o < o_all; o++)
                    for (size_t q = 0; q < m.plane; q++)
                        yd[(n * o_all + o) * m.plane + q] = bd[o];
        });
        return TG_OK;
    }
    /* one chunk's col and Ẏ, as the forward's scratch */
    char *col = tg__jvp_scratch(nd, conv2d_scratch(nd));
    if (!col)
        return TG_ERR_NOMEM;
    char *ydot = col + m.k * m.pc * es;
    const char *wd = w->data, *wdot = w->tangent;
    for (size_t n0 = 0; n0 < g.n; n0 += m.cs) {
        const char *xc = chunk_input(nd, &g, n0, m.cs, &gc);
        size_t pc = gc.n * m.plane;
        double beta = 0; /* the second product adds to the first */
        if (x->tangent) {
            tg__im2col(&gc, (const char *)x->tangent + (size_t)(xc - (const char *)x->data), col,
                       dt == TG_F64);
            for (size_t gi = 0; gi < m.groups; gi++)
                tg__gemm_typed(dt == TG_F64, false, false, m.og, pc, m.kg,
                               wd + gi * m.og * m.kg * es, m.kg, col + gi * m.kg * pc * es, pc, 0.0,
                               ydot + gi * m.og * pc * es, pc);
            beta = 1;
        }
        if (wdot) {
            tg__im2col(&gc, xc, col, dt == TG_F64);
            for (size_t gi = 0; gi < m.groups; gi++)
                tg__gemm_typed(dt == TG_F64, false, false, m.og, pc, m.kg,
                               wdot + gi * m.og * m.kg * es, m.kg, col + gi * m.kg * pc * es, pc,
                               beta, ydot + gi * m.og * pc * es, pc);
        }
        tg__rows_to_planes(gc.n, o_all, m.plane, pc, ydot, bias_dot, false,
                           (char *)y->tangent + n0 * o_all * m.plane * es, dt == TG_F64);
    }
    return TG_OK;
}

const tg_op tg__op_conv2d = {
    .name = "conv2d",
    .n_inputs = TG_VARIADIC, /* x, w, and the bias when there is one */
    .shape = conv2d_shape,
    .forward = conv2d_forward,
    .vjp = conv2d_vjp,
    .vjp_graph = tg__vjp_graph_bilinear,
    .jvp = conv2d_jvp,
    .scratch_size = conv2d_scratch,
    .math = "y[n,o,p,q] = b[o] + Σ_{c∈group(o),i,j} w[o,c,i,j] x[n,c,p·s_h−pad_t+i·d_h, "
            "q·s_w−pad_l+j·d_w] (zero padding)",
    .vjp_math = "per group: dW += dY·colᵀ, dx += col2im(Wᵀ·dY), db[o] += Σ_{n,p,q} dy[n,o,p,q]",
    .jvp_math = "per group: Ẏ = W·im2col(ẋ) + Ẇ·col, ẏ[n,o,p,q] = Ẏ[o,(n,p,q)] + ḃ[o]",
    .shapes = "x (N,C,H,W), w (O,C/G,kh,kw), b (O) optional -> (N,O,oh,ow), "
              "oh = ⌊(H+pad_t+pad_b−d_h(kh−1)−1)/s_h⌋+1",
};

tg_conv_options
tg_conv_defaults(void)
{
    return (tg_conv_options){.stride = {1, 1}, .padding = {0, 0}, .dilation = {1, 1},
                             .groups = 1};
}

/* Validates o against x (N,C,H,W) and w (O,C/G,kh,kw) for `op`, filling attr; false with the
 * tape's error set. conv1d (spatial 1) passes height-1 views: its only spatial axis is the
 * width, configured by element [0] of each pair of o. */
static bool
conv_attr(tg_tape *t, const char *op, int spatial, tg_tensor *x, tg_tensor *w, tg_tensor *b,
          const tg_conv_options *o, struct tg__attr *attr, const tg_tensor *sx,
          const tg_tensor *sw)
{
    if (x->ndim != 4 || w->ndim != 4) {
        tg__fail(t, TG_ERR_SHAPE,
                 "%s %s %s, weight %s %s: expected x (N, C, H, W) and weight (O, C/groups, kh, "
                 "kw)",
                 op, tg__name_text(sx).s, tg__shape_text(sx).s, tg__name_text(sw).s,
                 tg__shape_text(sw).s);
        return false;
    }
    int64_t groups = o->groups, c = x->dims[1], out_c = w->dims[0];
    if (groups < 1 || groups > INT32_MAX || c % groups || out_c % groups) {
        tg__fail(t, TG_ERR_ARG,
                 "%s %s %s, weight %s %s: groups %" PRId64 " must be >= 1 and divide the input "
                 "channels (%" PRId64 ") and the output channels (%" PRId64 ")",
                 op, tg__name_text(sx).s, tg__shape_text(sx).s, tg__name_text(sw).s,
                 tg__shape_text(sw).s, groups, c, out_c);
        return false;
    }
    if (w->dims[1] * groups != c) {
        tg__fail(t, TG_ERR_SHAPE,
                 "%s %s %s, weight %s %s: the input has %" PRId64 " channels, the weight expects "
                 "%" PRId64 " (%" PRId64 " per group x %" PRId64 " groups)",
                 op, tg__name_text(sx).s, tg__shape_text(sx).s, tg__name_text(sw).s,
                 tg__shape_text(sw).s, c, w->dims[1] * groups, w->dims[1], groups);
        return false;
    }
    if (b && (b->ndim != 1 || b->dims[0] != out_c)) {
        tg__fail(t, TG_ERR_SHAPE, "%s %s: bias %s %s must be (%" PRId64 ")", op,
                 tg__name_text(sx).s, tg__name_text(b).s, tg__shape_text(b).s, out_c);
        return false;
    }
    attr->axis = (int)groups;
    for (int k = 0; k < 2; k++) {
        bool unit = spatial == 1 && k == 0; /* conv1d's height: one row, nothing to set */
        int src = spatial == 1 ? 0 : k;
        const char *name = spatial == 1 ? "length" : k ? "width" : "height";
        int64_t in = x->dims[2 + k], kern = w->dims[2 + k];
        int64_t s = unit ? 1 : o->stride[src], d = unit ? 1 : o->dilation[src];
        if (s < 1 || d < 1 || s > INT32_MAX || d > INT32_MAX) {
            tg__fail(t, TG_ERR_ARG,
                     "%s %s: stride %" PRId64 " and dilation %" PRId64 " along the %s (each "
                     "must be >= 1)",
                     op, tg__name_text(sx).s, s, d, name);
            return false;
        }
        if (in > INT32_MAX || kern > INT32_MAX) {
            tg__fail(t, TG_ERR_SHAPE, "%s %s %s: sizes above 2^31 are not supported", op,
                     tg__name_text(sx).s, tg__shape_text(sx).s);
            return false;
        }
        int64_t span = d * (kern - 1) + 1, before, after;
        if (o->padding_same && !unit) {
            if (s != 1) {
                tg__fail(t, TG_ERR_ARG,
                         "%s %s: padding \"same\" needs stride 1 (the %s's is %" PRId64 ")", op,
                         tg__name_text(sx).s, name, s);
                return false;
            }
            before = (span - 1) / 2; /* as PyTorch: the odd one goes after */
            after = span - 1 - before;
        } else {
            before = after = unit ? 0 : o->padding[src];
            if (before < 0 || before > INT32_MAX) {
                tg__fail(t, TG_ERR_ARG, "%s %s: padding %" PRId64 " along the %s (must be >= 0)",
                         op, tg__name_text(sx).s, before, name);
                return false;
            }
        }
        if (kern < 1 || span > in + before + after) {
            tg__fail(t, TG_ERR_SHAPE,
                     "%s %s %s, weight %s %s: the kernel spans %" PRId64 " along the %s (size "
                     "%" PRId64 ", dilation %" PRId64 "), more than the padded input's %" PRId64,
                     op, tg__name_text(sx).s, tg__shape_text(sx).s, tg__name_text(sw).s,
                     tg__shape_text(sw).s, span, name, kern, d, in + before + after);
            return false;
        }
        attr->v[0][k] = s;
        attr->v[0][2 + k] = d;
        attr->v[1][k] = before;
        attr->v[1][2 + k] = after;
    }
    /* The products' sizes must fit: col and Y, (C·kh·kw + O) x (N·oh·ow) elements. (A tensor
     * with a zero extent may have a huge other one.) */
    uint64_t oh = (uint64_t)((x->dims[2] + attr->v[1][0] + attr->v[1][2] -
                              attr->v[0][2] * (w->dims[2] - 1) - 1) / attr->v[0][0] + 1);
    uint64_t ow = (uint64_t)((x->dims[3] + attr->v[1][1] + attr->v[1][3] -
                              attr->v[0][3] * (w->dims[3] - 1) - 1) / attr->v[0][1] + 1);
    uint64_t cols, rows, total;
    if (__builtin_mul_overflow((uint64_t)x->dims[0], oh * ow, &cols) ||
        __builtin_mul_overflow((uint64_t)c, (uint64_t)(w->dims[2] * w->dims[3]), &rows) ||
        __builtin_add_overflow(rows, (uint64_t)out_c, &rows) ||
        __builtin_mul_overflow(rows, cols, &total) || total > ((uint64_t)1 << 60) / 8) {
        tg__fail(t, TG_ERR_SHAPE,
                 "%s %s %s, weight %s %s: the convolution's matrices would be too large", op,
                 tg__name_text(sx).s, tg__shape_text(sx).s, tg__name_text(sw).s,
                 tg__shape_text(sw).s);
        return false;
    }
    return true;
}

static tg_tensor *
conv_record(tg_tape *t, tg_tensor *x, tg_tensor *w, tg_tensor *b, const struct tg__attr *attr)
{
    tg_tensor *in[3] = {x, w, b};
    return tg__record(t, &tg__op_conv2d, in, b ? 3 : 2, attr, NULL);
}

tg_tensor *
tg_conv2d(tg_tape *t, tg_tensor *x, tg_tensor *w, tg_tensor *b, const tg_conv_options *opt)
{
    if (!t)
        return NULL;
    if (t->status != TG_OK || !(x = tg__operand(t, "conv2d", "x", x)) ||
        !(w = tg__operand(t, "conv2d", "weight", w)) ||
        (b && !(b = tg__operand(t, "conv2d", "bias", b))))
        return &t->nil;
    tg_conv_options o = opt ? *opt : tg_conv_defaults();
    struct tg__attr attr = {0};
    if (!conv_attr(t, "conv2d", 2, x, w, b, &o, &attr, x, w))
        return &t->nil;
    return conv_record(t, x, w, b, &attr);
}

/* conv1d: x (N, C, L), w (O, C/G, k) seen as height-1 images, (N, C, 1, L) and (O, C/G, 1, k),
 * through reshape views (no copy); the result is reshaped back to (N, O, oL). */
tg_tensor *
tg_conv1d(tg_tape *t, tg_tensor *x, tg_tensor *w, tg_tensor *b, const tg_conv_options *opt)
{
    if (!t)
        return NULL;
    if (t->status != TG_OK || !(x = tg__operand(t, "conv1d", "x", x)) ||
        !(w = tg__operand(t, "conv1d", "weight", w)) ||
        (b && !(b = tg__operand(t, "conv1d", "bias", b))))
        return &t->nil;
    if (x->ndim != 3 || w->ndim != 3)
        return tg__fail(t, TG_ERR_SHAPE,
                        "conv1d %s %s, weight %s %s: expected x (N, C, L) and weight (O, "
                        "C/groups, k)",
                        tg__name_text(x).s, tg__shape_text(x).s, tg__name_text(w).s,
                        tg__shape_text(w).s);
    tg_conv_options o = opt ? *opt : tg_conv_defaults();
    /* validated on copies of the headers shaped as the views, so that a refused call records
     * nothing (not the two reshapes) */
    tg_tensor xv = *x, wv = *w;
    xv.ndim = wv.ndim = 4;
    xv.dims[3] = x->dims[2], xv.dims[2] = 1;
    wv.dims[3] = w->dims[2], wv.dims[2] = 1;
    struct tg__attr attr = {0};
    if (!conv_attr(t, "conv1d", 1, &xv, &wv, b, &o, &attr, x, w))
        return &t->nil;
    tg_tensor *x4 = tg_reshape(t, x, 4, (int64_t[]){x->dims[0], x->dims[1], 1, x->dims[2]});
    tg_tensor *w4 = tg_reshape(t, w, 4, (int64_t[]){w->dims[0], w->dims[1], 1, w->dims[2]});
    if (t->status != TG_OK)
        return &t->nil;
    tg_tensor *y = tg__tensor(conv_record(t, x4, w4, b, &attr));
    if (t->status != TG_OK)
        return &t->nil;
    return tg_reshape(t, y, 3, (int64_t[]){y->dims[0], y->dims[1], y->dims[3]});
}
