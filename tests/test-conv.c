/*
 * Convolution, transposed convolution, pooling, batch norm and dropout (lib/ops/conv.c,
 * conv_transpose.c, pool.c, norm.c, dropout.c, kernels/conv.c) and parameter buffers, beyond
 * the finite-difference cases of test-ops and tg-gradcheck's sweep:
 *   - batch norm's running statistics (PyTorch's update rule), evaluation mode, buffers that
 *     optimizers never touch and checkpoints keep; dropout's mask (reproducible, the same on
 *     any thread count, the right rate and scale) and evaluation mode;
 *   - values against direct loops written from PyTorch's definitions (every configuration:
 *     strides, padding and "same", output padding, dilation, groups and depthwise, bias),
 *     both dtypes; conv_transpose2d as conv2d's adjoint, in value and gradient;
 *   - empty tensors (a zero extent, with huge others) return at once;
 *   - max pooling's tie rule and NaN, average pooling's divisor;
 *   - the same bits on 1 and 2 threads, forward and backward;
 *   - bad input: a sticky error naming the op, the shapes and the parameter, nothing recorded;
 *   - a warm training step through conv, transposed conv and pool allocates nothing.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <unistd.h>

#include <tapegrad/checkpoint.h>
#include <tapegrad/optim.h>
#include <tapegrad/runtime.h>

#include "common.h"

/* A tensor of the given shape with values from rng in [-1, 1) (or `fill` everywhere). */
static tg_tensor *
rnd_tensor(tg_tape *t, tg_dtype dt, int nd, const int64_t *dims, tg_rng *rng, const char *name)
{
    tg_tensor *x = tg_tensor_new(t, dt, nd, dims, name);
    tg_tensor_fill_uniform(x, rng, -1, 1);
    return x;
}

struct conv_cfg {
    int64_t n, c, h, w, o, kh, kw, groups;
    tg_conv_options opt;
    bool bias;
};

/* y by the definition: y[n,o,p,q] = b[o] + Σ_{c in o's group, i, j} w[o,c',i,j] x[n,c,...] */
static void
conv_direct(const struct conv_cfg *g, const double *x, const double *w, const double *b,
            int64_t oh, int64_t ow, int64_t pt, int64_t pl, double *y)
{
    int64_t cg = g->c / g->groups, og = g->o / g->groups;
    const int64_t *s = g->opt.stride, *d = g->opt.dilation;
    for (int64_t n = 0; n < g->n; n++)
        for (int64_t o = 0; o < g->o; o++)
            for (int64_t p = 0; p < oh; p++)
                for (int64_t q = 0; q < ow; q++) {
                    double acc = b ? b[o] : 0;
                    int64_t grp = o / og;
                    for (int64_t cc = 0; cc < cg; cc++)
                        for (int64_t i = 0; i < g->kh; i++)
                            for (int64_t j = 0; j < g->kw; j++) {
                                int64_t ih = p * s[0] - pt + i * d[0];
                                int64_t iw = q * s[1] - pl + j * d[1];
                                if (ih < 0 || ih >= g->h || iw < 0 || iw >= g->w)
                                    continue;
                                int64_t c = grp * cg + cc;
                                acc += w[((o * cg + cc) * g->kh + i) * g->kw + j] *
                                       x[((n * g->c + c) * g->h + ih) * g->w + iw];
                            }
                    y[((n * g->o + o) * oh + p) * ow + q] = acc;
                }
}

static double *
values(tg_tensor *x)
{
    size_t n = tg_tensor_size(x);
    double *v = malloc((n ? n : 1) * sizeof *v);
    ck_assert_int_eq(tg_tensor_read(x, v, n), TG_OK);
    return v;
}

START_TEST(conv2d_matches_definition)
{
    tg_rng *rng = tg_rng_new(11);
    for (int trial = 0; trial < 120; trial++) {
        tg_dtype dt = trial % 2 ? TG_F32 : TG_F64;
        struct conv_cfg g = {.opt = tg_conv_defaults()};
        g.groups = 1 + (int64_t)(tg_rng_u64(rng) % 3);
        g.n = 1 + (int64_t)(tg_rng_u64(rng) % 2);
        g.c = g.groups * (1 + (int64_t)(tg_rng_u64(rng) % 3));
        g.o = trial % 7 == 0 ? g.c : g.groups * (1 + (int64_t)(tg_rng_u64(rng) % 3));
        if (trial % 7 == 0) /* depthwise */
            g.groups = g.c;
        g.kh = 1 + (int64_t)(tg_rng_u64(rng) % 4), g.kw = 1 + (int64_t)(tg_rng_u64(rng) % 4);
        g.opt.groups = g.groups;
        g.opt.padding_same = trial % 5 == 0;
        int64_t pad[2];
        for (int a = 0; a < 2; a++) {
            g.opt.dilation[a] = 1 + (int64_t)(tg_rng_u64(rng) % 2);
            g.opt.stride[a] = g.opt.padding_same ? 1 : 1 + (int64_t)(tg_rng_u64(rng) % 3);
            g.opt.padding[a] = (int64_t)(tg_rng_u64(rng) % 3);
            int64_t k = a ? g.kw : g.kh, span = g.opt.dilation[a] * (k - 1) + 1;
            pad[a] = g.opt.padding_same ? (span - 1) / 2 : g.opt.padding[a];
            int64_t total = g.opt.padding_same ? span - 1 : 2 * g.opt.padding[a];
            int64_t need = span - total;
            int64_t sz = (need < 1 ? 1 : need) + (int64_t)(tg_rng_u64(rng) % 6);
            if (a)
                g.w = sz;
            else
                g.h = sz;
        }
        g.bias = trial % 3 != 0;
        tg_tape *t = tg_tape_new();
        tg_tensor *x = rnd_tensor(t, dt, 4, (int64_t[]){g.n, g.c, g.h, g.w}, rng, "x");
        tg_tensor *w = rnd_tensor(t, dt, 4, (int64_t[]){g.o, g.c / g.groups, g.kh, g.kw}, rng,
                                  "w");
        tg_tensor *b = g.bias ? rnd_tensor(t, dt, 1, (int64_t[]){g.o}, rng, "b") : NULL;
        tg_tensor *y = tg_conv2d(t, x, w, b, &g.opt);
        ck_assert_msg(!tg_tape_error(t), "trial %d: %s", trial, tg_tape_error(t));
        int64_t oh = tg_tensor_dim(y, 2), ow = tg_tensor_dim(y, 3);
        for (int a = 0; a < 2; a++) {
            int64_t in = a ? g.w : g.h, k = a ? g.kw : g.kh;
            int64_t span = g.opt.dilation[a] * (k - 1) + 1;
            int64_t total = g.opt.padding_same ? span - 1 : 2 * g.opt.padding[a];
            int64_t want = (in + total - span) / g.opt.stride[a] + 1;
            ck_assert_int_eq(a ? ow : oh, want);
            if (g.opt.padding_same)
                ck_assert_int_eq(a ? ow : oh, in);
        }
        double *xv = values(x), *wv = values(w), *bv = b ? values(b) : NULL, *yv = values(y);
        double *ref = malloc(tg_tensor_size(y) * sizeof *ref);
        conv_direct(&g, xv, wv, bv, oh, ow, pad[0], pad[1], ref);
        /* float64: both sum the same products, in different orders (round-off only);
         * float32: ~1e-7 per product, at most 4·4·9 + 1 terms of magnitude <= 1 */
        double tol = dt == TG_F64 ? 1e-13 : 2e-5;
        for (size_t i = 0; i < tg_tensor_size(y); i++)
            ck_assert_msg(fabs(yv[i] - ref[i]) <= tol, "trial %d: y[%zu] = %.17g, wanted %.17g",
                          trial, i, yv[i], ref[i]);
        free(xv), free(wv), free(bv), free(yv), free(ref);
        tg_tape_free(t);
    }
    tg_rng_free(rng);
}
END_TEST

/* A batch too large for one chunk of the products (the library splits the samples so that a
 * chunk's columns and outputs stay near 4 MiB; here a sample's are (288 + 10) x 400 doubles,
 * 0.95 MiB, so 9 samples take three chunks, and 2 groups split each product): forward and
 * every gradient against the definition, summed directly. The VJP of a linear map is its
 * transpose: dx[n,c,ih,iw] = Σ w[o,c',i,j] dy[n,o,p,q], dw[o,c',i,j] = Σ x[n,c,ih,iw]
 * dy[n,o,p,q] over the taps that read (ih, iw), db[o] = Σ dy[n,o,p,q]. Run twice over the
 * same step, as the second backward must find the forward's results intact. */
START_TEST(conv2d_chunked_batch_matches_definition)
{
    tg_rng *rng = tg_rng_new(21);
    struct conv_cfg g = {.n = 9, .c = 32, .h = 20, .w = 20, .o = 10, .kh = 3, .kw = 3,
                         .groups = 2, .opt = tg_conv_defaults(), .bias = true};
    g.opt.padding[0] = g.opt.padding[1] = 1, g.opt.groups = 2;
    tg_tape *t = tg_tape_new();
    tg_tensor *x = rnd_tensor(t, TG_F64, 4, (int64_t[]){g.n, g.c, g.h, g.w}, rng, "x");
    tg_tensor *w = rnd_tensor(t, TG_F64, 4, (int64_t[]){g.o, g.c / 2, 3, 3}, rng, "w");
    tg_tensor *b = rnd_tensor(t, TG_F64, 1, (int64_t[]){g.o}, rng, "b");
    tg_tensor *seed = rnd_tensor(t, TG_F64, 4, (int64_t[]){g.n, g.o, g.h, g.w}, rng, "dy");
    tg_tensor_set_requires_grad(x, true);
    tg_tensor_set_requires_grad(w, true);
    tg_tensor_set_requires_grad(b, true);
    tg_tensor *y = tg_conv2d(t, x, w, b, &g.opt);
    ck_assert_msg(!tg_tape_error(t), "%s", tg_tape_error(t));
    double *xv = values(x), *wv = values(w), *bv = values(b), *yv = values(y);
    double *dy = values(seed);
    size_t nx = tg_tensor_size(x), nw = tg_tensor_size(w), ny = tg_tensor_size(y);
    double *ref = malloc(ny * sizeof *ref), *dx = calloc(nx, sizeof *dx);
    double *dw = calloc(nw, sizeof *dw), db[10] = {0};
    conv_direct(&g, xv, wv, bv, g.h, g.w, 1, 1, ref);
    for (size_t i = 0; i < ny; i++) /* 145 products of magnitude <= 1 summed in other orders */
        ck_assert_msg(fabs(yv[i] - ref[i]) <= 1e-13, "y[%zu] = %.17g, wanted %.17g", i, yv[i],
                      ref[i]);
    int64_t cg = g.c / 2, og = g.o / 2;
    for (int64_t n = 0; n < g.n; n++)
        for (int64_t o = 0; o < g.o; o++)
            for (int64_t p = 0; p < g.h; p++)
                for (int64_t q = 0; q < g.w; q++) {
                    double d = dy[((n * g.o + o) * g.h + p) * g.w + q];
                    db[o] += d;
                    for (int64_t cc = 0; cc < cg; cc++)
                        for (int64_t i = 0; i < 3; i++)
                            for (int64_t j = 0; j < 3; j++) {
                                int64_t ih = p - 1 + i, iw = q - 1 + j;
                                if (ih < 0 || ih >= g.h || iw < 0 || iw >= g.w)
                                    continue;
                                size_t xi = (size_t)(((n * g.c + o / og * cg + cc) * g.h + ih) *
                                                         g.w + iw);
                                size_t wi = (size_t)(((o * cg + cc) * 3 + i) * 3 + j);
                                dx[xi] += wv[wi] * d;
                                dw[wi] += xv[xi] * d;
                            }
                }
    for (int pass = 1; pass <= 2; pass++) {
        ck_assert_int_eq(tg_backward_seeded(t, y, seed), TG_OK);
        double *gx = tg_tensor_grad(x), *gw = tg_tensor_grad(w), *gb = tg_tensor_grad(b);
        /* dx: at most 9·5 terms; dw: 9·400 terms of magnitude <= 1, so 1e-11 is ~30x the
         * round-off of such sums (|sum| <= 3600, 2^-52 x 3600 x a few) */
        for (size_t i = 0; i < nx; i++)
            ck_assert_msg(fabs(gx[i] - dx[i]) <= 1e-12, "pass %d: dx[%zu] = %.17g, wanted %.17g",
                          pass, i, gx[i], dx[i]);
        for (size_t i = 0; i < nw; i++)
            ck_assert_msg(fabs(gw[i] - dw[i]) <= 1e-11, "pass %d: dw[%zu] = %.17g, wanted %.17g",
                          pass, i, gw[i], dw[i]);
        for (int o = 0; o < 10; o++)
            ck_assert_msg(fabs(gb[o] - db[o]) <= 1e-11, "pass %d: db[%d] = %.17g, wanted %.17g",
                          pass, o, gb[o], db[o]);
    }
    free(xv), free(wv), free(bv), free(yv), free(dy), free(ref), free(dx), free(dw);
    tg_tape_free(t);
    tg_rng_free(rng);
}
END_TEST

/* conv1d is conv2d on height-1 views: same values, and (N, O, L) out. */
START_TEST(conv1d_is_conv2d_of_height_one)
{
    tg_rng *rng = tg_rng_new(3);
    tg_tape *t = tg_tape_new();
    tg_tensor *x = rnd_tensor(t, TG_F64, 3, (int64_t[]){2, 4, 9}, rng, "x");
    tg_tensor *w = rnd_tensor(t, TG_F64, 3, (int64_t[]){6, 2, 3}, rng, "w");
    tg_tensor *b = rnd_tensor(t, TG_F64, 1, (int64_t[]){6}, rng, "b");
    tg_conv_options o = tg_conv_defaults();
    o.stride[0] = 2, o.padding[0] = 2, o.dilation[0] = 2, o.groups = 2;
    tg_tensor *y = tg_conv1d(t, x, w, b, &o);
    tg_tensor *x4 = tg_reshape(t, x, 4, (int64_t[]){2, 4, 1, 9});
    tg_tensor *w4 = tg_reshape(t, w, 4, (int64_t[]){6, 2, 1, 3});
    tg_conv_options o2 = tg_conv_defaults();
    o2.stride[1] = 2, o2.padding[1] = 2, o2.dilation[1] = 2, o2.groups = 2;
    tg_tensor *y2 = tg_conv2d(t, x4, w4, b, &o2);
    ck_assert_msg(!tg_tape_error(t), "%s", tg_tape_error(t));
    ck_assert_int_eq(tg_tensor_ndim(y), 3);
    ck_assert_int_eq(tg_tensor_dim(y, 2), (9 + 4 - 5) / 2 + 1);
    ck_assert_uint_eq(tg_tensor_size(y), tg_tensor_size(y2));
    for (size_t i = 0; i < tg_tensor_size(y); i++)
        ck_assert(tg_tensor_get(y, i) == tg_tensor_get(y2, i));
    tg_tape_free(t);
    tg_rng_free(rng);
}
END_TEST

/* ---- conv_transpose2d ---------------------------------------------------------------------- */

struct ct_cfg {
    int64_t n, c, h, w, o, kh, kw, groups;
    tg_conv_transpose_options opt;
    bool bias;
};

/* y by the definition, x (N, C, H, W), w (C, O/G, kh, kw):
 *   y[n, o, i·s − p + a·d, j·s − p + b·d] += x[n, c, i, j] · w[c, o', a, b]
 * for o = group(c)·O/G + o', wherever that position lies inside y; y starts as the bias. */
static void
conv_transpose_direct(const struct ct_cfg *g, const double *x, const double *w,
                      const double *b, int64_t oh, int64_t ow, double *y)
{
    int64_t cg = g->c / g->groups, og = g->o / g->groups;
    const int64_t *s = g->opt.stride, *d = g->opt.dilation, *p = g->opt.padding;
    for (int64_t n = 0; n < g->n; n++)
        for (int64_t o = 0; o < g->o; o++)
            for (int64_t q = 0; q < oh * ow; q++)
                y[(n * g->o + o) * oh * ow + q] = b ? b[o] : 0;
    for (int64_t n = 0; n < g->n; n++)
        for (int64_t c = 0; c < g->c; c++)
            for (int64_t i = 0; i < g->h; i++)
                for (int64_t j = 0; j < g->w; j++)
                    for (int64_t oo = 0; oo < og; oo++)
                        for (int64_t a = 0; a < g->kh; a++)
                            for (int64_t bb = 0; bb < g->kw; bb++) {
                                int64_t yi = i * s[0] - p[0] + a * d[0];
                                int64_t yj = j * s[1] - p[1] + bb * d[1];
                                if (yi < 0 || yi >= oh || yj < 0 || yj >= ow)
                                    continue;
                                int64_t o = (c / cg) * og + oo;
                                y[((n * g->o + o) * oh + yi) * ow + yj] +=
                                    x[((n * g->c + c) * g->h + i) * g->w + j] *
                                    w[((c * og + oo) * g->kh + a) * g->kw + bb];
                            }
}

/* A random configuration: groups 1-3 (depthwise every 7th), kernels 1-4, strides 1-3,
 * dilations 1-2, padding 0-2 (lowered until the output has a row and a column), output
 * padding below the larger of stride and dilation, sizes 1-5. */
static struct ct_cfg
ct_random(tg_rng *rng, int trial)
{
    struct ct_cfg g = {.opt = tg_conv_transpose_defaults()};
    g.groups = 1 + (int64_t)(tg_rng_u64(rng) % 3);
    g.n = 1 + (int64_t)(tg_rng_u64(rng) % 2);
    g.c = g.groups * (1 + (int64_t)(tg_rng_u64(rng) % 3));
    g.o = g.groups * (1 + (int64_t)(tg_rng_u64(rng) % 3));
    if (trial % 7 == 0) /* depthwise */
        g.groups = g.o = g.c;
    g.opt.groups = g.groups;
    g.kh = 1 + (int64_t)(tg_rng_u64(rng) % 4), g.kw = 1 + (int64_t)(tg_rng_u64(rng) % 4);
    g.h = 1 + (int64_t)(tg_rng_u64(rng) % 5), g.w = 1 + (int64_t)(tg_rng_u64(rng) % 5);
    for (int a = 0; a < 2; a++) {
        int64_t *s = &g.opt.stride[a], *d = &g.opt.dilation[a], *p = &g.opt.padding[a];
        int64_t *op = &g.opt.output_padding[a], in = a ? g.w : g.h, k = a ? g.kw : g.kh;
        *s = 1 + (int64_t)(tg_rng_u64(rng) % 3);
        *d = 1 + (int64_t)(tg_rng_u64(rng) % 2);
        *op = (int64_t)(tg_rng_u64(rng) % (uint64_t)(*s > *d ? *s : *d));
        *p = (int64_t)(tg_rng_u64(rng) % 3);
        while (*p > 0 && (in - 1) * *s - 2 * *p + *d * (k - 1) + *op + 1 < 1)
            --*p;
    }
    g.bias = trial % 3 != 0;
    return g;
}

START_TEST(conv_transpose2d_matches_definition)
{
    tg_rng *rng = tg_rng_new(12);
    for (int trial = 0; trial < 120; trial++) {
        tg_dtype dt = trial % 2 ? TG_F32 : TG_F64;
        struct ct_cfg g = ct_random(rng, trial);
        tg_tape *t = tg_tape_new();
        tg_tensor *x = rnd_tensor(t, dt, 4, (int64_t[]){g.n, g.c, g.h, g.w}, rng, "x");
        tg_tensor *w = rnd_tensor(t, dt, 4, (int64_t[]){g.c, g.o / g.groups, g.kh, g.kw}, rng,
                                  "w");
        tg_tensor *b = g.bias ? rnd_tensor(t, dt, 1, (int64_t[]){g.o}, rng, "b") : NULL;
        tg_tensor *y = tg_conv_transpose2d(t, x, w, b, &g.opt);
        ck_assert_msg(!tg_tape_error(t), "trial %d: %s", trial, tg_tape_error(t));
        ck_assert_int_eq(tg_tensor_dim(y, 0), g.n);
        ck_assert_int_eq(tg_tensor_dim(y, 1), g.o);
        int64_t oh = tg_tensor_dim(y, 2), ow = tg_tensor_dim(y, 3);
        for (int a = 0; a < 2; a++) {
            int64_t in = a ? g.w : g.h, k = a ? g.kw : g.kh;
            int64_t want = (in - 1) * g.opt.stride[a] - 2 * g.opt.padding[a] +
                           g.opt.dilation[a] * (k - 1) + g.opt.output_padding[a] + 1;
            ck_assert_int_eq(a ? ow : oh, want);
        }
        double *xv = values(x), *wv = values(w), *bv = b ? values(b) : NULL, *yv = values(y);
        double *ref = malloc(tg_tensor_size(y) * sizeof *ref);
        conv_transpose_direct(&g, xv, wv, bv, oh, ow, ref);
        /* float64: the same products summed in another order; float32: ~1e-7 per product, at
         * most 3·4·4 + 1 terms of magnitude <= 1 per element */
        double tol = dt == TG_F64 ? 1e-13 : 2e-5;
        for (size_t i = 0; i < tg_tensor_size(y); i++)
            ck_assert_msg(fabs(yv[i] - ref[i]) <= tol, "trial %d: y[%zu] = %.17g, wanted %.17g",
                          trial, i, yv[i], ref[i]);
        free(xv), free(wv), free(bv), free(yv), free(ref);
        tg_tape_free(t);
    }
    tg_rng_free(rng);
}
END_TEST

static double
dot_values(tg_tensor *a, tg_tensor *b, bool grad_a)
{
    ck_assert_uint_eq(tg_tensor_size(a), tg_tensor_size(b));
    double s = 0;
    for (size_t i = 0; i < tg_tensor_size(a); i++)
        s += (grad_a ? tg_tensor_grad_get(a, i) : tg_tensor_get(a, i)) * tg_tensor_get(b, i);
    return s;
}

/* conv_transpose2d is conv2d's adjoint in its input, with the same weight read as a conv2d
 * weight (C filters of O/G channels) and output_padding making up conv2d's floor:
 *   ⟨conv2d(z, w), x⟩ = ⟨z, conv_transpose2d(x, w)⟩;
 * and its VJPs are conv2d's roles swapped: the gradient of ⟨r, conv_transpose2d(x, w)⟩ is
 * conv2d(r, w) for x, and for w that of ⟨x, conv2d(r, w)⟩. Float64, random configurations. */
START_TEST(conv_transpose2d_is_the_adjoint_of_conv2d)
{
    tg_rng *rng = tg_rng_new(13);
    for (int trial = 0; trial < 60; trial++) {
        struct ct_cfg g = ct_random(rng, trial);
        tg_conv_options co = tg_conv_defaults();
        co.groups = g.groups;
        int64_t zs[2];
        for (int a = 0; a < 2; a++) {
            co.stride[a] = g.opt.stride[a], co.dilation[a] = g.opt.dilation[a];
            co.padding[a] = g.opt.padding[a];
            int64_t k = a ? g.kw : g.kh, span = co.dilation[a] * (k - 1) + 1;
            zs[a] = (span > 2 * co.padding[a] ? span - 2 * co.padding[a] : 1) +
                    (int64_t)(tg_rng_u64(rng) % 6);
            int64_t out = (zs[a] + 2 * co.padding[a] - span) / co.stride[a] + 1;
            /* conv2d's floor drops (z + 2p − span) mod s rows: the output padding restores
             * them (it is below the stride, so allowed) */
            g.opt.output_padding[a] = zs[a] - ((out - 1) * co.stride[a] - 2 * co.padding[a] + span);
            if (a)
                g.w = out;
            else
                g.h = out;
        }
        tg_tape *t = tg_tape_new();
        tg_tensor *w = rnd_tensor(t, TG_F64, 4, (int64_t[]){g.c, g.o / g.groups, g.kh, g.kw},
                                  rng, "w");
        tg_tensor *z = rnd_tensor(t, TG_F64, 4, (int64_t[]){g.n, g.o, zs[0], zs[1]}, rng, "z");
        tg_tensor *x = rnd_tensor(t, TG_F64, 4, (int64_t[]){g.n, g.c, g.h, g.w}, rng, "x");
        tg_tensor_set_requires_grad(x, true);
        tg_tensor_set_requires_grad(w, true);
        tg_tensor *cz = tg_conv2d(t, z, w, NULL, &co);
        tg_tensor *tx = tg_conv_transpose2d(t, x, w, NULL, &g.opt);
        ck_assert_msg(!tg_tape_error(t), "trial %d: %s", trial, tg_tape_error(t));
        ck_assert_int_eq(tg_tensor_dim(tx, 2), zs[0]);
        ck_assert_int_eq(tg_tensor_dim(tx, 3), zs[1]);
        double lhs = dot_values(cz, x, false), rhs = dot_values(z, tx, false);
        ck_assert_msg(fabs(lhs - rhs) <= 1e-12 * (1 + fabs(lhs)), "trial %d: %.17g vs %.17g",
                      trial, lhs, rhs);

        /* r plays dy: backward from ⟨r, conv_transpose2d(x, w)⟩ */
        tg_tensor *r = rnd_tensor(t, TG_F64, 4, (int64_t[]){g.n, g.o, zs[0], zs[1]}, rng, "r");
        ck_assert_int_eq(tg_backward(t, tg_sum(t, tg_mul(t, tx, r))), TG_OK);
        size_t nw = tg_tensor_size(w);
        double *dw = malloc(nw * sizeof *dw);
        for (size_t i = 0; i < nw; i++)
            dw[i] = tg_tensor_grad_get(w, i);
        tg_tensor *cr = tg_conv2d(t, r, w, NULL, &co);
        ck_assert_msg(!tg_tape_error(t), "trial %d: %s", trial, tg_tape_error(t));
        for (size_t i = 0; i < tg_tensor_size(x); i++)
            ck_assert_msg(fabs(tg_tensor_grad_get(x, i) - tg_tensor_get(cr, i)) <= 1e-12,
                          "trial %d: dx[%zu] = %.17g, conv2d(r, w) = %.17g", trial, i,
                          tg_tensor_grad_get(x, i), tg_tensor_get(cr, i));
        ck_assert_int_eq(tg_backward(t, tg_sum(t, tg_mul(t, cr, x))), TG_OK);
        for (size_t i = 0; i < nw; i++)
            ck_assert_msg(fabs(dw[i] - tg_tensor_grad_get(w, i)) <= 1e-12 * (1 + fabs(dw[i])),
                          "trial %d: dw[%zu] = %.17g, through conv2d %.17g", trial, i, dw[i],
                          tg_tensor_grad_get(w, i));
        free(dw);
        tg_tape_free(t);
    }
    tg_rng_free(rng);
}
END_TEST

/* The weight (2, 3, 2, 2) of halves and the bias (3) of twos, on a fresh tape generation. */
static void
ct_empty_operands(tg_tape *t, tg_dtype dt, tg_tensor **w, tg_tensor **b)
{
    *w = tg_tensor_new(t, dt, 4, (int64_t[]){2, 3, 2, 2}, "w");
    *b = tg_tensor_new(t, dt, 1, (int64_t[]){3}, "b");
    tg_tensor_fill(*w, 0.5);
    tg_tensor_fill(*b, 2.0);
    tg_tensor_set_requires_grad(*w, true);
    tg_tensor_set_requires_grad(*b, true);
}

/* Empty inputs: N = 0 is an empty output (even with huge planes); no input channels or an
 * empty plane leave the bias alone (broadcast), whose gradient still sums dy; forward and
 * backward return at once, in both dtypes. */
START_TEST(conv_transpose2d_empty_inputs)
{
    for (int d = 0; d < 2; d++) {
        tg_dtype dt = d ? TG_F32 : TG_F64;
        tg_tape *t = tg_tape_new();
        tg_tensor *w, *b;
        /* N = 0 with planes of 2^30 x 2^30: an empty output of that size */
        int64_t big = (int64_t)1 << 30;
        ct_empty_operands(t, dt, &w, &b);
        tg_tensor *x0 = tg_tensor_new(t, dt, 4, (int64_t[]){0, 2, big, big}, "x0");
        tg_tensor_set_requires_grad(x0, true);
        tg_tensor *y = tg_conv_transpose2d(t, x0, w, b, NULL);
        ck_assert_msg(!tg_tape_error(t), "%s", tg_tape_error(t));
        ck_assert_uint_eq(tg_tensor_size(y), 0);
        ck_assert_int_eq(tg_tensor_dim(y, 1), 3);
        ck_assert_int_eq(tg_tensor_dim(y, 2), big + 1);
        ck_assert_int_eq(tg_backward(t, tg_sum(t, y)), TG_OK);
        ck_assert(tg_tensor_grad_get(b, 0) == 0 && tg_tensor_grad_get(w, 0) == 0);

        /* an empty plane (H = 0): the kernel's span still makes 2 rows, of the bias alone */
        tg_tape_reset(t);
        ct_empty_operands(t, dt, &w, &b);
        tg_tensor *xh = tg_tensor_new(t, dt, 4, (int64_t[]){2, 2, 0, 3}, "xh");
        tg_tensor_set_requires_grad(xh, true);
        tg_conv_transpose_options o = tg_conv_transpose_defaults();
        o.dilation[0] = 2;
        y = tg_conv_transpose2d(t, xh, w, b, &o); /* height (0 − 1)·1 + 2·(2 − 1) + 1 = 2 */
        ck_assert_msg(!tg_tape_error(t), "%s", tg_tape_error(t));
        ck_assert_int_eq(tg_tensor_dim(y, 2), 2);
        ck_assert_int_eq(tg_tensor_dim(y, 3), 4);
        for (size_t i = 0; i < tg_tensor_size(y); i++)
            ck_assert(tg_tensor_get(y, i) == 2.0);
        ck_assert_int_eq(tg_backward(t, tg_sum(t, y)), TG_OK);
        for (size_t o2 = 0; o2 < 3; o2++) /* N·oh·ow = 2·2·4 ones each */
            ck_assert(tg_tensor_grad_get(b, o2) == 16);
        for (size_t i = 0; i < tg_tensor_size(w); i++)
            ck_assert(tg_tensor_grad_get(w, i) == 0);

        /* no input channels: x (1, 0, 2, 2), a weight (0, 3, 2, 2), groups 1 */
        tg_tape_reset(t);
        ct_empty_operands(t, dt, &w, &b);
        tg_tensor *xc = tg_tensor_new(t, dt, 4, (int64_t[]){1, 0, 2, 2}, "xc");
        tg_tensor *w0 = tg_tensor_new(t, dt, 4, (int64_t[]){0, 3, 2, 2}, "w0");
        y = tg_conv_transpose2d(t, xc, w0, b, NULL);
        ck_assert_msg(!tg_tape_error(t), "%s", tg_tape_error(t));
        ck_assert_uint_eq(tg_tensor_size(y), 3 * 3 * 3);
        for (size_t i = 0; i < tg_tensor_size(y); i++)
            ck_assert(tg_tensor_get(y, i) == 2.0);
        ck_assert_int_eq(tg_backward(t, tg_sum(t, y)), TG_OK);
        ck_assert(tg_tensor_grad_get(b, 0) == 9);
        tg_tape_free(t);
    }
}
END_TEST

/* Max pooling: on a constant plane every window ties, and the first element of each window
 * (row-major) takes the whole gradient; a NaN is the maximum of its window. Average pooling
 * divides by kh·kw even where the window covers padding. */
START_TEST(pool_ties_nan_and_divisor)
{
    tg_tape *t = tg_tape_new();
    tg_tensor *x = tg_tensor_new(t, TG_F64, 4, (int64_t[]){1, 1, 4, 4}, "x");
    tg_tensor_fill(x, 1.0);
    tg_tensor_set_requires_grad(x, true);
    tg_tensor *y = tg_max_pool2d(t, x, (const int64_t[]){2, 2}, NULL, NULL);
    tg_backward(t, tg_sum(t, y));
    ck_assert_msg(!tg_tape_error(t), "%s", tg_tape_error(t));
    static const double want[16] = {1, 0, 1, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0};
    for (int i = 0; i < 16; i++)
        ck_assert_msg(tg_tensor_grad_get(x, (size_t)i) == want[i], "dx[%d] = %g", i,
                      tg_tensor_grad_get(x, (size_t)i));

    tg_tape_reset(t);
    double v[9] = {1, 2, 3, 4, NAN, 6, 7, 8, 9};
    x = tg_tensor_from(t, TG_F64, 4, (int64_t[]){1, 1, 3, 3}, v, "x");
    y = tg_max_pool2d(t, x, (const int64_t[]){2, 2}, (const int64_t[]){1, 1}, NULL);
    for (int i = 0; i < 4; i++)
        ck_assert(isnan(tg_tensor_get(y, (size_t)i)));

    tg_tape_reset(t);
    x = tg_tensor_from(t, TG_F64, 4, (int64_t[]){1, 1, 3, 3}, (double[]){1, 2, 3, 4, 5, 6, 7, 8, 9},
                       "x");
    y = tg_avg_pool2d(t, x, (const int64_t[]){3, 3}, (const int64_t[]){3, 3},
                      (const int64_t[]){1, 1});
    ck_assert_int_eq(tg_tensor_dim(y, 2), 1);
    /* the window at (-1, -1) holds 1, 2, 4, 5 and five zeros of padding */
    ck_assert_double_eq_tol(tg_tensor_get(y, 0), (1 + 2 + 4 + 5) / 9.0, 1e-15);
    tg_tensor *gp = tg_global_avg_pool2d(t, x);
    ck_assert_int_eq(tg_tensor_ndim(gp), 4);
    ck_assert_int_eq(tg_tensor_dim(gp, 2), 1);
    ck_assert_double_eq_tol(tg_tensor_get(gp, 0), 5.0, 1e-15);
    tg_tape_free(t);
}
END_TEST

/* One step of conv -> relu -> max pool -> conv -> avg pool -> transposed conv -> sum of
 * squares, returning the loss; the gradients of x, w1, b1, w2, w3 are read back into g. */
static double
conv_step(int threads, double *g, size_t *n_g)
{
    tg_set_num_threads(threads);
    tg_rng *rng = tg_rng_new(21);
    tg_tape *t = tg_tape_new();
    tg_tensor *x = rnd_tensor(t, TG_F32, 4, (int64_t[]){4, 3, 17, 15}, rng, "x");
    tg_tensor *w1 = rnd_tensor(t, TG_F32, 4, (int64_t[]){8, 3, 3, 3}, rng, "w1");
    tg_tensor *b1 = rnd_tensor(t, TG_F32, 1, (int64_t[]){8}, rng, "b1");
    tg_tensor *w2 = rnd_tensor(t, TG_F32, 4, (int64_t[]){8, 2, 3, 3}, rng, "w2");
    tg_tensor *w3 = rnd_tensor(t, TG_F32, 4, (int64_t[]){8, 3, 3, 3}, rng, "w3");
    tg_tensor *in[] = {x, w1, b1, w2, w3};
    for (int k = 0; k < 5; k++)
        tg_tensor_set_requires_grad(in[k], true);
    tg_conv_options o = tg_conv_defaults();
    o.padding_same = true;
    tg_tensor *h = tg_relu(t, tg_conv2d(t, x, w1, b1, &o));
    h = tg_max_pool2d(t, h, (const int64_t[]){2, 2}, NULL, NULL);
    o = tg_conv_defaults();
    o.groups = 4, o.stride[0] = 2, o.padding[1] = 1;
    h = tg_avg_pool2d(t, tg_conv2d(t, h, w2, NULL, &o), (const int64_t[]){2, 2},
                      (const int64_t[]){1, 1}, (const int64_t[]){1, 1});
    tg_conv_transpose_options up = tg_conv_transpose_defaults();
    up.groups = 2, up.stride[0] = up.stride[1] = 2, up.padding[0] = 1;
    up.output_padding[0] = up.output_padding[1] = 1; /* (4, 8, 4, 8) -> (4, 6, 8, 18) */
    h = tg_conv_transpose2d(t, h, w3, NULL, &up);
    tg_tensor *loss = tg_sum(t, tg_square(t, h));
    tg_backward(t, loss);
    ck_assert_msg(!tg_tape_error(t), "%s", tg_tape_error(t));
    size_t at = 0;
    for (int k = 0; k < 5; k++)
        for (size_t i = 0; i < tg_tensor_size(in[k]); i++)
            g[at++] = tg_tensor_grad_get(in[k], i);
    *n_g = at;
    double l = tg_tensor_item(loss);
    tg_tape_free(t);
    tg_rng_free(rng);
    tg_set_num_threads(0);
    return l;
}

START_TEST(same_bits_on_one_and_two_threads)
{
    enum { MAXG = 4 * 3 * 17 * 15 + 8 * 27 + 8 + 8 * 18 + 8 * 27 };
    static double g1[MAXG], g2[MAXG];
    size_t n1, n2;
    double l1 = conv_step(1, g1, &n1), l2 = conv_step(2, g2, &n2);
    ck_assert_uint_eq(n1, n2);
    ck_assert(l1 == l2);
    ck_assert(memcmp(g1, g2, n1 * sizeof g1[0]) == 0);
}
END_TEST

/* ---- bad input ---------------------------------------------------------------------------- */

/* The call must fail with `st`, record nothing, leave the tape's error naming every token. */
static void
refused(tg_tape *t, size_t nodes_before, tg_tensor *y, tg_status st, const char *const *tokens)
{
    ck_assert_int_eq(tg_tape_status(t), st);
    ck_assert_uint_eq(tg_tape_node_count(t), nodes_before);
    ck_assert_int_eq(tg_tensor_ndim(y), 0);
    const char *msg = tg_tape_error(t);
    for (const char *const *k = tokens; *k; k++)
        ck_assert_msg(strstr(msg, *k), "message lacks \"%s\": %s", *k, msg);
    /* sticky: a later op is a no-op returning the nil tensor */
    tg_tensor *z = tg_relu(t, y);
    ck_assert_uint_eq(tg_tape_node_count(t), nodes_before);
    ck_assert_int_eq(tg_tensor_ndim(z), 0);
}

#define TOKENS(...) ((const char *const[]){__VA_ARGS__, NULL})

START_TEST(bad_input_refused_by_name)
{
    tg_rng *rng = tg_rng_new(1);
    tg_tape *t = tg_tape_new();
    tg_conv_options o;
#define FRESH()                                                                                \
    tg_tape_reset(t);                                                                          \
    tg_tensor *x = rnd_tensor(t, TG_F64, 4, (int64_t[]){2, 4, 5, 5}, rng, "img");              \
    tg_tensor *w = rnd_tensor(t, TG_F64, 4, (int64_t[]){6, 4, 3, 3}, rng, "filt");             \
    size_t nodes = tg_tape_node_count(t);                                                      \
    (void)x, (void)w, (void)nodes;                                                             \
    o = tg_conv_defaults()

    { /* a kernel larger than the padded input */
        FRESH();
        tg_tensor *big = rnd_tensor(t, TG_F64, 4, (int64_t[]){6, 4, 7, 3}, rng, "big");
        refused(t, nodes, tg_conv2d(t, x, big, NULL, &o), TG_ERR_SHAPE,
                TOKENS("conv2d", "\"img\"", "(2x4x5x5)", "(6x4x7x3)", "height", "spans 7"));
    }
    { /* dilation makes it too large, with padding */
        FRESH();
        o.dilation[1] = 3, o.padding[1] = 0;
        refused(t, nodes, tg_conv2d(t, x, w, NULL, &o), TG_ERR_SHAPE,
                TOKENS("conv2d", "width", "dilation 3", "spans 7", "padded input's 5"));
    }
    { /* stride 0 */
        FRESH();
        o.stride[0] = 0;
        refused(t, nodes, tg_conv2d(t, x, w, NULL, &o), TG_ERR_ARG,
                TOKENS("conv2d", "\"img\"", "stride 0", "height"));
    }
    { /* dilation 0 */
        FRESH();
        o.dilation[1] = 0;
        refused(t, nodes, tg_conv2d(t, x, w, NULL, &o), TG_ERR_ARG,
                TOKENS("conv2d", "dilation 0", "width"));
    }
    { /* channels that do not match the weight */
        FRESH();
        tg_tensor *w3 = rnd_tensor(t, TG_F64, 4, (int64_t[]){6, 3, 3, 3}, rng, "w3");
        refused(t, nodes, tg_conv2d(t, x, w3, NULL, &o), TG_ERR_SHAPE,
                TOKENS("conv2d", "\"w3\"", "(6x3x3x3)", "4 channels", "expects 3"));
    }
    { /* groups that do not divide the channels */
        FRESH();
        o.groups = 3;
        refused(t, nodes, tg_conv2d(t, x, w, NULL, &o), TG_ERR_ARG,
                TOKENS("conv2d", "groups 3", "input channels (4)", "output channels (6)"));
    }
    { /* groups 0 */
        FRESH();
        o.groups = 0;
        refused(t, nodes, tg_conv2d(t, x, w, NULL, &o), TG_ERR_ARG, TOKENS("groups 0"));
    }
    { /* a bias of the wrong length */
        FRESH();
        tg_tensor *b = rnd_tensor(t, TG_F64, 1, (int64_t[]){5}, rng, "bias");
        refused(t, nodes, tg_conv2d(t, x, w, b, &o), TG_ERR_SHAPE,
                TOKENS("conv2d", "\"bias\"", "(5)", "must be (6)"));
    }
    { /* padding "same" with a stride */
        FRESH();
        o.padding_same = true, o.stride[1] = 2;
        refused(t, nodes, tg_conv2d(t, x, w, NULL, &o), TG_ERR_ARG,
                TOKENS("same", "stride 1", "width", "is 2"));
    }
    { /* negative padding */
        FRESH();
        o.padding[0] = -1;
        refused(t, nodes, tg_conv2d(t, x, w, NULL, &o), TG_ERR_ARG,
                TOKENS("padding -1", "height"));
    }
    { /* wrong ranks; conv1d names its own shapes */
        FRESH();
        tg_tensor *x3 = rnd_tensor(t, TG_F64, 3, (int64_t[]){2, 4, 5}, rng, "seq");
        refused(t, nodes + 0, tg_conv2d(t, x3, w, NULL, &o), TG_ERR_SHAPE,
                TOKENS("conv2d", "\"seq\"", "(2x4x5)", "(N, C, H, W)"));
    }
    {
        FRESH();
        tg_tensor *x3 = rnd_tensor(t, TG_F64, 3, (int64_t[]){2, 4, 5}, rng, "seq");
        tg_tensor *w3 = rnd_tensor(t, TG_F64, 3, (int64_t[]){6, 2, 7}, rng, "k7");
        nodes = tg_tape_node_count(t);
        tg_tensor *y = tg_conv1d(t, x3, w3, NULL, &o);
        ck_assert_int_eq(tg_tape_status(t), TG_ERR_SHAPE);
        ck_assert_msg(strstr(tg_tape_error(t), "conv1d") && strstr(tg_tape_error(t), "(2x4x5)") &&
                          strstr(tg_tape_error(t), "\"k7\""),
                      "%s", tg_tape_error(t));
        ck_assert_int_eq(tg_tensor_ndim(y), 0);
    }
    { /* mixed dtypes */
        FRESH();
        tg_tensor *w32 = rnd_tensor(t, TG_F32, 4, (int64_t[]){6, 4, 3, 3}, rng, "w32");
        refused(t, nodes, tg_conv2d(t, x, w32, NULL, &o), TG_ERR_DTYPE, TOKENS("conv2d"));
    }
    { /* pools: a kernel larger than the padded input, stride 0, too much padding, NULL */
        FRESH();
        refused(t, nodes, tg_max_pool2d(t, x, (const int64_t[]){6, 2}, NULL, NULL),
                TG_ERR_SHAPE, TOKENS("max_pool2d", "\"img\"", "(2x4x5x5)", "kernel (6)", "height"));
    }
    {
        FRESH();
        refused(t, nodes,
                tg_avg_pool2d(t, x, (const int64_t[]){2, 2}, (const int64_t[]){1, 0}, NULL),
                TG_ERR_ARG, TOKENS("avg_pool2d", "stride 0", "width"));
    }
    {
        FRESH();
        refused(t, nodes,
                tg_max_pool2d(t, x, (const int64_t[]){2, 3}, NULL, (const int64_t[]){0, 2}),
                TG_ERR_ARG, TOKENS("max_pool2d", "padding 2", "width", "kernel/2 = 1"));
    }
    {
        FRESH();
        refused(t, nodes, tg_max_pool2d(t, x, NULL, NULL, NULL), TG_ERR_ARG,
                TOKENS("max_pool2d", "kernel is NULL"));
    }

#undef FRESH
    tg_tape_free(t);
    tg_rng_free(rng);
}
END_TEST

/* conv_transpose2d refuses, by name, shape and parameter: channels that do not match the
 * weight's first extent, groups that do not divide them, stride or dilation 0, padding or
 * output padding below 0, output padding not below the stride nor the dilation, an output of
 * no rows, a bias of the wrong length, wrong ranks, mixed dtypes, a NULL operand. An output
 * padding below the dilation only is allowed (PyTorch's rule). */
START_TEST(conv_transpose2d_bad_input_refused_by_name)
{
    tg_rng *rng = tg_rng_new(5);
    tg_tape *t = tg_tape_new();
    tg_conv_transpose_options o;
#define FRESH()                                                                                \
    tg_tape_reset(t);                                                                          \
    tg_tensor *x = rnd_tensor(t, TG_F64, 4, (int64_t[]){2, 4, 5, 5}, rng, "img");              \
    tg_tensor *w = rnd_tensor(t, TG_F64, 4, (int64_t[]){4, 3, 3, 3}, rng, "filt");             \
    size_t nodes = tg_tape_node_count(t);                                                      \
    (void)x, (void)w, (void)nodes;                                                             \
    o = tg_conv_transpose_defaults()
#define SHAPES "conv_transpose2d", "\"img\"", "(2x4x5x5)", "\"filt\"", "(4x3x3x3)"

    { /* channels that do not match the weight's first extent */
        FRESH();
        tg_tensor *w3 = rnd_tensor(t, TG_F64, 4, (int64_t[]){3, 3, 3, 3}, rng, "w3");
        refused(t, nodes, tg_conv_transpose2d(t, x, w3, NULL, &o), TG_ERR_SHAPE,
                TOKENS("conv_transpose2d", "\"img\"", "(2x4x5x5)", "\"w3\"", "(3x3x3x3)",
                       "4 channels", "first dimension 3"));
    }
    { /* groups that do not divide the input channels */
        FRESH();
        o.groups = 3;
        refused(t, nodes, tg_conv_transpose2d(t, x, w, NULL, &o), TG_ERR_ARG,
                TOKENS(SHAPES, "groups 3", "input channels (4)"));
    }
    {
        FRESH();
        o.groups = 0;
        refused(t, nodes, tg_conv_transpose2d(t, x, w, NULL, &o), TG_ERR_ARG,
                TOKENS(SHAPES, "groups 0"));
    }
    { /* stride 0 */
        FRESH();
        o.stride[0] = 0;
        refused(t, nodes, tg_conv_transpose2d(t, x, w, NULL, &o), TG_ERR_ARG,
                TOKENS(SHAPES, "stride 0", "height"));
    }
    { /* dilation 0 */
        FRESH();
        o.dilation[1] = 0;
        refused(t, nodes, tg_conv_transpose2d(t, x, w, NULL, &o), TG_ERR_ARG,
                TOKENS(SHAPES, "dilation 0", "width"));
    }
    { /* output padding equal to the stride, above the dilation */
        FRESH();
        o.stride[1] = 2, o.output_padding[1] = 2;
        refused(t, nodes, tg_conv_transpose2d(t, x, w, NULL, &o), TG_ERR_ARG,
                TOKENS(SHAPES, "output_padding 2", "width", "stride (2)", "dilation (1)"));
    }
    { /* output padding equal to both */
        FRESH();
        o.stride[0] = 2, o.dilation[0] = 2, o.output_padding[0] = 2;
        refused(t, nodes, tg_conv_transpose2d(t, x, w, NULL, &o), TG_ERR_ARG,
                TOKENS(SHAPES, "output_padding 2", "height", "stride (2)", "dilation (2)"));
    }
    { /* output padding 1 with stride 1 is refused at dilation 1 ... */
        FRESH();
        o.output_padding[0] = 1;
        refused(t, nodes, tg_conv_transpose2d(t, x, w, NULL, &o), TG_ERR_ARG,
                TOKENS(SHAPES, "output_padding 1", "height", "stride (1)", "dilation (1)"));
    }
    { /* ... and allowed at dilation 2: (5 − 1) + 2·2 + 1 + 1 = 10 rows */
        FRESH();
        o.output_padding[0] = 1, o.dilation[0] = 2;
        tg_tensor *y = tg_conv_transpose2d(t, x, w, NULL, &o);
        ck_assert_msg(!tg_tape_error(t), "%s", tg_tape_error(t));
        ck_assert_int_eq(tg_tensor_dim(y, 2), 10);
        ck_assert_int_eq(tg_tensor_dim(y, 3), 7);
    }
    { /* negative output padding */
        FRESH();
        o.stride[1] = 2, o.output_padding[1] = -1;
        refused(t, nodes, tg_conv_transpose2d(t, x, w, NULL, &o), TG_ERR_ARG,
                TOKENS(SHAPES, "output_padding -1", "width"));
    }
    { /* negative padding */
        FRESH();
        o.padding[0] = -1;
        refused(t, nodes, tg_conv_transpose2d(t, x, w, NULL, &o), TG_ERR_ARG,
                TOKENS(SHAPES, "padding -1", "height"));
    }
    { /* a negative output size: (5 − 1) − 2·4 + (3 − 1) + 1 = −1 */
        FRESH();
        o.padding[0] = 4;
        refused(t, nodes, tg_conv_transpose2d(t, x, w, NULL, &o), TG_ERR_SHAPE,
                TOKENS(SHAPES, "height would be", "= -1", "must be >= 1"));
    }
    { /* and a zero one, along the width: (1 − 1)·2 − 2·1 + (2 − 1) + 0 + 1 = 0 */
        FRESH();
        tg_tensor *x1 = rnd_tensor(t, TG_F64, 4, (int64_t[]){2, 4, 5, 1}, rng, "col");
        tg_tensor *w2 = rnd_tensor(t, TG_F64, 4, (int64_t[]){4, 3, 3, 2}, rng, "w2");
        nodes = tg_tape_node_count(t);
        o.stride[1] = 2, o.padding[1] = 1;
        refused(t, nodes, tg_conv_transpose2d(t, x1, w2, NULL, &o), TG_ERR_SHAPE,
                TOKENS("conv_transpose2d", "\"col\"", "(2x4x5x1)", "\"w2\"", "(4x3x3x2)",
                       "width would be", "= 0", "must be >= 1"));
    }
    { /* a bias of the wrong length: C_out = 3 */
        FRESH();
        tg_tensor *b = rnd_tensor(t, TG_F64, 1, (int64_t[]){4}, rng, "bias");
        nodes = tg_tape_node_count(t);
        refused(t, nodes, tg_conv_transpose2d(t, x, w, b, &o), TG_ERR_SHAPE,
                TOKENS(SHAPES, "\"bias\"", "(4)", "must be (3)"));
    }
    { /* with 2 groups the bias is (6) */
        FRESH();
        o.groups = 2;
        tg_tensor *b = rnd_tensor(t, TG_F64, 1, (int64_t[]){3}, rng, "bias");
        nodes = tg_tape_node_count(t);
        refused(t, nodes, tg_conv_transpose2d(t, x, w, b, &o), TG_ERR_SHAPE,
                TOKENS(SHAPES, "\"bias\"", "(3)", "must be (6)"));
    }
    { /* wrong ranks */
        FRESH();
        tg_tensor *x3 = rnd_tensor(t, TG_F64, 3, (int64_t[]){2, 4, 5}, rng, "seq");
        nodes = tg_tape_node_count(t);
        refused(t, nodes, tg_conv_transpose2d(t, x3, w, NULL, &o), TG_ERR_SHAPE,
                TOKENS("conv_transpose2d", "\"seq\"", "(2x4x5)", "(N, C_in, H, W)"));
    }
    { /* mixed dtypes */
        FRESH();
        tg_tensor *w32 = rnd_tensor(t, TG_F32, 4, (int64_t[]){4, 3, 3, 3}, rng, "w32");
        nodes = tg_tape_node_count(t);
        refused(t, nodes, tg_conv_transpose2d(t, x, w32, NULL, &o), TG_ERR_DTYPE,
                TOKENS("conv_transpose2d", "\"w32\""));
    }
    { /* a NULL weight */
        FRESH();
        tg_tensor *y = tg_conv_transpose2d(t, x, NULL, NULL, &o);
        ck_assert_int_ne(tg_tape_status(t), TG_OK);
        ck_assert_uint_eq(tg_tape_node_count(t), nodes);
        ck_assert_int_eq(tg_tensor_ndim(y), 0);
        ck_assert_msg(strstr(tg_tape_error(t), "conv_transpose2d") &&
                          strstr(tg_tape_error(t), "weight"),
                      "%s", tg_tape_error(t));
    }
    ck_assert_ptr_null(tg_conv_transpose2d(NULL, NULL, NULL, NULL, NULL));
#undef SHAPES
#undef FRESH
    tg_tape_free(t);
    tg_rng_free(rng);
}
END_TEST

/* ---- a warm step allocates nothing ---------------------------------------------------------- */

static size_t n_allocs;
static void *
count_malloc(size_t n, void *ctx)
{
    (void)ctx;
    n_allocs++;
    return malloc(n);
}
static void *
count_realloc(void *p, size_t n, void *ctx)
{
    (void)ctx;
    n_allocs++;
    return realloc(p, n);
}
static void
count_free(void *p, void *ctx)
{
    (void)ctx;
    free(p);
}

START_TEST(warm_step_allocates_nothing)
{
    tg_set_allocator(&(tg_allocator){count_malloc, count_realloc, count_free, NULL});
    tg_rng *rng = tg_rng_new(2);
    tg_params *p = tg_params_new(TG_F32);
    tg_tensor *w = tg_params_add(p, "conv/W", 4, (int64_t[]){8, 1, 3, 3});
    tg_tensor *b = tg_params_add(p, "conv/b", 1, (int64_t[]){8});
    tg_tensor *wt = tg_params_add(p, "up/W", 4, (int64_t[]){8, 2, 2, 2});
    tg_tensor *bt = tg_params_add(p, "up/b", 1, (int64_t[]){4});
    tg_tensor_fill_uniform(w, rng, -0.3, 0.3);
    tg_tensor_fill_uniform(wt, rng, -0.3, 0.3);
    tg_tape *t = tg_tape_new();
    size_t before = 0;
    float img[2 * 12 * 12];
    for (int i = 0; i < 2 * 12 * 12; i++)
        img[i] = (float)((i * 7) % 13) / 13.0f;
    for (int step = 0; step < 4; step++) {
        if (step == 1)
            before = n_allocs;
        tg_tape_reset(t);
        tg_tensor *x = tg_tensor_wrap(t, TG_F32, 4, (int64_t[]){2, 1, 12, 12}, img, "x");
        tg_conv_options o = tg_conv_defaults();
        o.padding[0] = o.padding[1] = 1;
        tg_tensor *h = tg_max_pool2d(t, tg_relu(t, tg_conv2d(t, x, w, b, &o)),
                                     (const int64_t[]){2, 2}, NULL, NULL);
        tg_conv_transpose_options up = tg_conv_transpose_defaults();
        up.stride[0] = up.stride[1] = 2, up.groups = 2; /* (2, 8, 6, 6) -> (2, 4, 12, 12) */
        h = tg_conv_transpose2d(t, h, wt, bt, &up);
        tg_tensor *loss = tg_mean(t, tg_square(t, tg_global_avg_pool2d(t, h)));
        tg_backward(t, loss);
        ck_assert_msg(!tg_tape_error(t), "step %d: %s", step, tg_tape_error(t));
        tg_params_zero_grad(p);
    }
    size_t warm = n_allocs - before;
    tg_tape_free(t);
    tg_params_free(p);
    tg_rng_free(rng);
    tg_set_allocator(NULL);
    ck_assert_msg(warm == 0, "%zu allocations in 3 warm steps", warm);
}
END_TEST

/* tg_batch_norm_act against tg_activate(tg_batch_norm(...)), for every activation, training
 * and evaluation, both dtypes, a plane longer than the fused VJP's 256-element blocks: the
 * same output bit for bit (the same z, rounded to the dtype, then the same g), one node, the
 * same running statistics; gradients equal to round-off (the fused VJP sums dz block by
 * block, the pair over whole rows: float64 1e-12 relative, float32 1e-4 relative: sums of
 * 2·300 terms of order 1 in float32 products). An activation outside the enum is refused. */
START_TEST(batch_norm_act_matches_composition)
{
    tg_rng *rng = tg_rng_new(31);
    for (int act = TG_ACT_IDENTITY; act <= TG_ACT_GELU; act++)
        for (int mode = 0; mode < 4; mode++) {
            tg_dtype dt = mode & 1 ? TG_F32 : TG_F64;
            bool training = mode < 2;
            int64_t dims[4] = {2, 3, 15, 20};
            tg_tensor *xs[2], *gs[2], *bs[2], *ys[2], *rms[2];
            tg_tape *t[2];
            double seedv = 1 + 0.5 * act;
            for (int k = 0; k < 2; k++) {
                tg_rng *r = tg_rng_new(100 + (uint64_t)act);
                t[k] = tg_tape_new();
                tg_tape_set_training(t[k], training);
                xs[k] = rnd_tensor(t[k], dt, 4, dims, r, "x");
                gs[k] = rnd_tensor(t[k], dt, 1, (int64_t[]){3}, r, "gamma");
                bs[k] = rnd_tensor(t[k], dt, 1, (int64_t[]){3}, r, "beta");
                rms[k] = rnd_tensor(t[k], dt, 1, (int64_t[]){3}, r, "running_mean");
                tg_tensor *rv = tg_tensor_new(t[k], dt, 1, (int64_t[]){3}, "running_var");
                tg_tensor_fill(rv, 0.7);
                tg_tensor *w = rnd_tensor(t[k], dt, 4, dims, r, "w"); /* loss Σ w ⊙ y */
                for (int v = 0; v < 3; v++)
                    tg_tensor_set_requires_grad(v == 0 ? xs[k] : v == 1 ? gs[k] : bs[k], true);
                size_t before = tg_tape_node_count(t[k]);
                ys[k] = k ? tg_batch_norm_act(t[k], xs[k], gs[k], bs[k], rms[k], rv, 0.1, 1e-5,
                                              (tg_activation)act)
                          : tg_activate(t[k], tg_batch_norm(t[k], xs[k], gs[k], bs[k], rms[k], rv,
                                                            0.1, 1e-5),
                                        (tg_activation)act);
                if (k)
                    ck_assert_uint_eq(tg_tape_node_count(t[k]) - before, 1);
                tg_backward(t[k], tg_scale(t[k], tg_sum(t[k], tg_mul(t[k], w, ys[k])), seedv));
                ck_assert_msg(!tg_tape_error(t[k]), "%s", tg_tape_error(t[k]));
                tg_rng_free(r);
            }
            for (size_t i = 0; i < tg_tensor_size(ys[0]); i++)
                ck_assert_msg(tg_tensor_get(ys[0], i) == tg_tensor_get(ys[1], i),
                              "%s mode %d: y[%zu] %.17g vs %.17g", tg_activation_name(act), mode,
                              i, tg_tensor_get(ys[0], i), tg_tensor_get(ys[1], i));
            for (int i = 0; i < 3; i++)
                ck_assert(tg_tensor_get(rms[0], i) == tg_tensor_get(rms[1], i));
            double rel = dt == TG_F64 ? 1e-12 : 1e-4;
            for (int v = 0; v < 3; v++) {
                tg_tensor *a = v == 0 ? xs[0] : v == 1 ? gs[0] : bs[0];
                tg_tensor *b = v == 0 ? xs[1] : v == 1 ? gs[1] : bs[1];
                double scale = 0;
                for (size_t i = 0; i < tg_tensor_size(a); i++)
                    scale = fmax(scale, fabs(tg_tensor_grad_get(a, i)));
                for (size_t i = 0; i < tg_tensor_size(a); i++)
                    ck_assert_msg(fabs(tg_tensor_grad_get(a, i) - tg_tensor_grad_get(b, i)) <=
                                      rel * (scale + 1e-30),
                                  "%s mode %d input %d [%zu]: %.17g vs %.17g",
                                  tg_activation_name(act), mode, v, i, tg_tensor_grad_get(a, i),
                                  tg_tensor_grad_get(b, i));
            }
            for (int k = 0; k < 2; k++)
                tg_tape_free(t[k]);
        }
    tg_tape *t = tg_tape_new();
    tg_tensor *x = rnd_tensor(t, TG_F64, 2, (int64_t[]){4, 3}, rng, "x");
    tg_batch_norm_act(t, x, NULL, NULL, NULL, NULL, 0.1, 1e-5, (tg_activation)99);
    ck_assert_int_eq(tg_tape_status(t), TG_ERR_ARG);
    ck_assert_msg(strstr(tg_tape_error(t), "batch_norm") && strstr(tg_tape_error(t), "99"), "%s",
                  tg_tape_error(t));
    tg_tape_free(t);
    tg_rng_free(rng);
}
END_TEST

/* ---- batch norm, buffers ------------------------------------------------------------------ */

START_TEST(batch_norm_statistics_and_modes)
{
    tg_tape *t = tg_tape_new();
    /* x (3, 2, 2): channel 0 holds 1..6 (two per example), channel 1 holds 10 x that */
    double xv[12] = {1, 2, 10, 20, 3, 4, 30, 40, 5, 6, 50, 60};
    tg_tensor *x = tg_tensor_from(t, TG_F64, 3, (int64_t[]){3, 2, 2}, xv, "x");
    tg_params *p = tg_params_new(TG_F64);
    tg_tensor *rm = tg_params_add_buffer(p, "bn/running_mean", 1, (int64_t[]){2});
    tg_tensor *rv = tg_params_add_buffer(p, "bn/running_var", 1, (int64_t[]){2});
    ck_assert_ptr_nonnull(rm);
    tg_tensor_fill(rv, 1.0);
    tg_tensor *y = tg_batch_norm(t, x, NULL, NULL, rm, rv, 0.1, 1e-5);
    ck_assert_msg(!tg_tape_error(t), "%s", tg_tape_error(t));
    /* channel 0: mean 3.5, biased var 35/12, unbiased 3.5 */
    double inv = 1 / sqrt(35.0 / 12 + 1e-5);
    ck_assert_double_eq_tol(tg_tensor_get(y, 0), (1 - 3.5) * inv, 1e-12);
    ck_assert_double_eq_tol(tg_tensor_get(rm, 0), 0.1 * 3.5, 1e-15);
    ck_assert_double_eq_tol(tg_tensor_get(rm, 1), 0.1 * 35, 1e-13);
    ck_assert_double_eq_tol(tg_tensor_get(rv, 0), 0.9 + 0.1 * 3.5, 1e-15);
    ck_assert_double_eq_tol(tg_tensor_get(rv, 1), 0.9 + 0.1 * 350, 1e-12);

    /* evaluation: the running statistics, not the batch's, and no update */
    tg_tape_reset(t);
    tg_tape_set_training(t, false);
    ck_assert(!tg_tape_training(t));
    x = tg_tensor_from(t, TG_F64, 3, (int64_t[]){3, 2, 2}, xv, "x");
    y = tg_batch_norm(t, x, NULL, NULL, rm, rv, 0.1, 1e-5);
    ck_assert_double_eq_tol(tg_tensor_get(y, 0), (1 - 0.35) / sqrt(1.25 + 1e-5), 1e-12);
    ck_assert_double_eq_tol(tg_tensor_get(rm, 0), 0.35, 1e-15);
    /* evaluation without running statistics normalizes with the batch's (as PyTorch) */
    tg_tensor *y2 = tg_batch_norm(t, x, NULL, NULL, NULL, NULL, 0.1, 1e-5);
    ck_assert_double_eq_tol(tg_tensor_get(y2, 0), (1 - 3.5) * inv, 1e-12);
    /* evaluation allows one value per channel; training refuses it, by name */
    tg_tensor *one = tg_tensor_from(t, TG_F64, 2, (int64_t[]){1, 2}, xv, "one");
    tg_batch_norm(t, one, NULL, NULL, rm, rv, 0.1, 1e-5);
    ck_assert_msg(!tg_tape_error(t), "%s", tg_tape_error(t));
    tg_tape_set_training(t, true);
    size_t nodes = tg_tape_node_count(t);
    y = tg_batch_norm(t, one, NULL, NULL, rm, rv, 0.1, 1e-5);
    ck_assert_int_eq(tg_tape_status(t), TG_ERR_SHAPE);
    ck_assert_uint_eq(tg_tape_node_count(t), nodes);
    ck_assert_msg(strstr(tg_tape_error(t), "batch_norm") && strstr(tg_tape_error(t), "\"one\"") &&
                      strstr(tg_tape_error(t), "more than 1 value per channel"),
                  "%s", tg_tape_error(t));
    ck_assert_double_eq_tol(tg_tensor_get(rm, 0), 0.35, 1e-15); /* untouched */

    /* bad weight, momentum, eps, a lone running statistic */
    const struct {
        double momentum, eps;
        int which;
        const char *token;
    } bad[] = {{0.1, 1e-5, 1, "weight"}, {1.5, 1e-5, 0, "momentum = 1.5"},
               {0.1, 0, 0, "eps = 0"}, {0.1, 1e-5, 2, "running_var is NULL"}};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        tg_tape_reset(t);
        x = tg_tensor_from(t, TG_F64, 3, (int64_t[]){3, 2, 2}, xv, "x");
        tg_tensor *g3 = tg_tensor_new(t, TG_F64, 1, (int64_t[]){3}, "g3");
        nodes = tg_tape_node_count(t);
        y = tg_batch_norm(t, x, bad[k].which == 1 ? g3 : NULL, NULL, rm,
                          bad[k].which == 2 ? NULL : rv, bad[k].momentum, bad[k].eps);
        ck_assert_int_ne(tg_tape_status(t), TG_OK);
        ck_assert_uint_eq(tg_tape_node_count(t), nodes);
        ck_assert_msg(strstr(tg_tape_error(t), bad[k].token), "%s", tg_tape_error(t));
    }
    tg_tape_free(t);
    tg_params_free(p);
}
END_TEST

/* group_norm: with groups = C each (sample, channel) plane comes out with mean 0 and
 * variance 1 (instance norm); bad groups, weight and eps are refused by name. */
START_TEST(group_norm_values_and_errors)
{
    tg_rng *rng = tg_rng_new(6);
    tg_tape *t = tg_tape_new();
    tg_tensor *x = rnd_tensor(t, TG_F64, 4, (int64_t[]){2, 3, 4, 5}, rng, "x");
    tg_tensor *y = tg_group_norm(t, x, 3, NULL, NULL, 1e-12);
    ck_assert_msg(!tg_tape_error(t), "%s", tg_tape_error(t));
    for (size_t plane = 0; plane < 6; plane++) {
        double s = 0, s2 = 0;
        for (size_t i = 0; i < 20; i++) {
            double v = tg_tensor_get(y, plane * 20 + i);
            s += v, s2 += v * v;
        }
        ck_assert_double_eq_tol(s / 20, 0, 1e-12);
        ck_assert_double_eq_tol(s2 / 20, 1, 1e-9);
    }
    tg_tensor *w2 = tg_tensor_new(t, TG_F64, 1, (int64_t[]){2}, "w2");
    const struct {
        int64_t groups;
        bool bad_weight;
        double eps;
        const char *token;
    } bad[] = {{2, false, 1e-5, "groups 2 must be >= 1 and divide the 3 channels"},
               {0, false, 1e-5, "groups 0"},
               {3, true, 1e-5, "weight \"w2\" (2)"},
               {1, false, -1, "eps = -1"}};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        size_t nodes = tg_tape_node_count(t);
        y = tg_group_norm(t, x, bad[k].groups, bad[k].bad_weight ? w2 : NULL, NULL, bad[k].eps);
        ck_assert_int_ne(tg_tape_status(t), TG_OK);
        ck_assert_uint_eq(tg_tape_node_count(t), nodes);
        ck_assert_int_eq(tg_tensor_ndim(y), 0);
        ck_assert_msg(strstr(tg_tape_error(t), "group_norm") &&
                          strstr(tg_tape_error(t), bad[k].token),
                      "%s", tg_tape_error(t));
        tg_tape_reset(t);
        x = rnd_tensor(t, TG_F64, 4, (int64_t[]){2, 3, 4, 5}, rng, "x");
        w2 = tg_tensor_new(t, TG_F64, 1, (int64_t[]){2}, "w2");
    }
    tg_tape_free(t);
    tg_rng_free(rng);
}
END_TEST

/* Buffers live in the set (found by name, saved and loaded) but outside its trained values:
 * an optimizer step with weight decay leaves them bit for bit. */
START_TEST(buffers_are_kept_not_trained)
{
    tg_rng *rng = tg_rng_new(4);
    tg_params *p = tg_params_new(TG_F32);
    tg_tensor *w = tg_params_add(p, "w", 1, (int64_t[]){3});
    tg_tensor *buf = tg_params_add_buffer(p, "stats", 1, (int64_t[]){3});
    tg_tensor_fill_uniform(w, rng, -1, 1);
    tg_tensor_fill_uniform(buf, rng, 1, 2);
    ck_assert_uint_eq(tg_params_size(p), 3);
    ck_assert_uint_eq(tg_params_count(p), 1);
    ck_assert_uint_eq(tg_params_buffer_count(p), 1);
    ck_assert_ptr_eq(tg_params_buffer(p, 0), buf);
    ck_assert_ptr_eq(tg_params_find(p, "stats"), buf);
    ck_assert_ptr_null(tg_tensor_grad(buf));
    ck_assert_ptr_null(tg_params_add_buffer(p, "w", 1, (int64_t[]){1})); /* name taken */
    ck_assert_msg(strstr(tg_params_error(p), "\"w\" already exists"), "%s", tg_params_error(p));
    tg_params_clear_error(p);
    float before[3];
    memcpy(before, tg_tensor_data(buf), sizeof before);

    tg_optim_options o = tg_optim_defaults(TG_OPTIM_ADAMW);
    o.weight_decay = 0.5;
    tg_optim *opt = tg_optim_new(p, &o, NULL);
    ck_assert_ptr_nonnull(opt);
    tg_tape *t = tg_tape_new();
    for (int step = 0; step < 3; step++) {
        tg_tape_reset(t);
        tg_tensor *loss = tg_sum(t, tg_mul(t, w, buf)); /* reads the buffer as a constant */
        ck_assert_int_eq(tg_backward(t, loss), TG_OK);
        ck_assert_int_eq(tg_optim_step(opt), TG_OK);
    }
    ck_assert(memcmp(before, tg_tensor_data(buf), sizeof before) == 0);

    char path[] = "/tmp/tg-test-buffers-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    char err[256];
    ck_assert_int_eq(tg_checkpoint_save_params(p, path, err, sizeof err), TG_OK);
    tg_params *q = tg_params_new(TG_F32);
    tg_params_add(q, "w", 1, (int64_t[]){3});
    tg_tensor *qbuf = tg_params_add_buffer(q, "stats", 1, (int64_t[]){3});
    ck_assert_msg(tg_checkpoint_load_params(q, path, err, sizeof err) == TG_OK, "%s", err);
    ck_assert(memcmp(before, tg_tensor_data(qbuf), sizeof before) == 0);
    /* a model without the buffer refuses the file by the buffer's name */
    tg_params *r = tg_params_new(TG_F32);
    tg_params_add(r, "w", 1, (int64_t[]){3});
    ck_assert_int_eq(tg_checkpoint_load_params(r, path, err, sizeof err), TG_ERR_FORMAT);
    ck_assert_msg(strstr(err, "stats"), "%s", err);
    remove(path);
    tg_params_free(r);
    tg_params_free(q);
    tg_tape_free(t);
    tg_optim_free(opt);
    tg_params_free(p);
    tg_rng_free(rng);
}
END_TEST

/* Layer helpers: names, shapes, PyTorch's initialization, atomic refusal, forward = the op. */
START_TEST(layers_conv2d_and_batch_norm)
{
    tg_rng *rng = tg_rng_new(8);
    tg_params *p = tg_params_new(TG_F64);
    tg_conv_options o = tg_conv_defaults();
    o.padding[0] = o.padding[1] = 1, o.groups = 2;
    tg_conv2d_layer conv;
    ck_assert_int_eq(tg_conv2d_layer_init(&conv, p, "conv1", 4, 6, 3, 3, &o, true, rng), TG_OK);
    ck_assert_ptr_eq(tg_params_find(p, "conv1/W"), conv.weight);
    ck_assert_ptr_eq(tg_params_find(p, "conv1/b"), conv.bias);
    ck_assert_int_eq(tg_tensor_dim(conv.weight, 1), 2);
    double bound = 1 / sqrt(2 * 3 * 3.0), lo = 1, hi = -1;
    for (size_t i = 0; i < tg_tensor_size(conv.weight); i++) {
        double v = tg_tensor_get(conv.weight, i);
        lo = fmin(lo, v), hi = fmax(hi, v);
    }
    ck_assert(lo >= -bound && hi <= bound && hi - lo > bound); /* spread over the range */
    tg_batch_norm_layer bn;
    ck_assert_int_eq(tg_batch_norm_layer_init(&bn, p, "bn1", 6), TG_OK);
    ck_assert_uint_eq(tg_params_count(p), 4);
    ck_assert_uint_eq(tg_params_buffer_count(p), 2);
    ck_assert_ptr_eq(tg_params_find(p, "bn1/running_var"), bn.running_var);
    ck_assert(tg_tensor_get(bn.weight, 5) == 1 && tg_tensor_get(bn.bias, 5) == 0 &&
              tg_tensor_get(bn.running_mean, 5) == 0 && tg_tensor_get(bn.running_var, 5) == 1);
    /* refusals leave the set as it was */
    size_t count = tg_params_count(p), size = tg_params_size(p);
    tg_batch_norm_layer bn2;
    ck_assert_int_eq(tg_batch_norm_layer_init(&bn2, p, "bn1", 6), TG_ERR_ARG);
    tg_conv2d_layer conv2;
    ck_assert_int_eq(tg_conv2d_layer_init(&conv2, p, "c2", 3, 6, 3, 3, &o, true, rng),
                     TG_ERR_ARG); /* groups 2 does not divide 3 */
    ck_assert_uint_eq(tg_params_count(p), count);
    ck_assert_uint_eq(tg_params_size(p), size);
    ck_assert_uint_eq(tg_params_buffer_count(p), 2);
    tg_params_clear_error(p);
    tg_tape *t = tg_tape_new();
    tg_tensor *x = rnd_tensor(t, TG_F64, 4, (int64_t[]){2, 4, 5, 5}, rng, "x");
    tg_tensor *y = tg_batch_norm_layer_forward(t, &bn, tg_conv2d_layer_forward(t, &conv, x));
    tg_tensor *z = tg_batch_norm(t, tg_conv2d(t, x, conv.weight, conv.bias, &o), bn.weight,
                                 bn.bias, NULL, NULL, 0.1, 1e-5);
    ck_assert_msg(!tg_tape_error(t), "%s", tg_tape_error(t));
    ck_assert_int_eq(tg_tensor_dim(y, 1), 6);
    for (size_t i = 0; i < tg_tensor_size(y); i++)
        ck_assert(tg_tensor_get(y, i) == tg_tensor_get(z, i));
    tg_tape_free(t);
    tg_params_free(p);
    tg_rng_free(rng);
}
END_TEST

/* ---- dropout --------------------------------------------------------------------------------- */

static void
dropout_run(int threads, uint64_t seed, float *y, float *dx, size_t n)
{
    tg_set_num_threads(threads);
    tg_tape *t = tg_tape_new();
    tg_tensor *x = tg_tensor_new(t, TG_F32, 1, (int64_t[]){(int64_t)n}, "x");
    tg_tensor_fill(x, 1.0);
    tg_tensor_set_requires_grad(x, true);
    tg_rng *r = tg_rng_new(seed);
    tg_tensor *d = tg_dropout(t, x, 0.3, r);
    tg_backward(t, tg_sum(t, d));
    ck_assert_msg(!tg_tape_error(t), "%s", tg_tape_error(t));
    memcpy(y, tg_tensor_data(d), n * sizeof *y);
    memcpy(dx, tg_tensor_grad(x), n * sizeof *dx);
    tg_rng_free(r);
    tg_tape_free(t);
    tg_set_num_threads(0);
}

START_TEST(dropout_mask_rate_scale_and_modes)
{
    enum { N = 200000 };
    static float y1[N], d1[N], y2[N], d2[N], y3[N], d3[N];
    dropout_run(1, 9, y1, d1, N);
    dropout_run(2, 9, y2, d2, N);
    dropout_run(2, 10, y3, d3, N);
    ck_assert(memcmp(y1, y2, sizeof y1) == 0 && memcmp(d1, d2, sizeof d1) == 0);
    ck_assert(memcmp(y1, y3, sizeof y1) != 0); /* another seed, another mask */
    size_t kept = 0;
    for (size_t i = 0; i < N; i++) {
        ck_assert(y1[i] == 0 || y1[i] == (float)(1 / 0.7));
        ck_assert(d1[i] == y1[i]); /* dx = dy ⊙ m / (1 - p) with dy = 1 */
        kept += y1[i] != 0;
    }
    /* kept ~ Binomial(N, 0.7): sd = sqrt(N 0.7 0.3) ~ 205; 6 sd is a 1e-9 false alarm */
    ck_assert_msg(fabs((double)kept - 0.7 * N) < 6 * 205, "kept %zu of %d", kept, N);

    tg_tape *t = tg_tape_new();
    tg_rng *r = tg_rng_new(1);
    tg_tensor *x = tg_tensor_new(t, TG_F64, 1, (int64_t[]){4}, "x");
    tg_tape_set_training(t, false);
    ck_assert_ptr_eq(tg_dropout(t, x, 0.5, r), x); /* evaluation: x itself */
    tg_tape_set_training(t, true);
    ck_assert_ptr_eq(tg_dropout(t, x, 0.0, r), x);
    size_t nodes = tg_tape_node_count(t);
    tg_tensor *bad = tg_dropout(t, x, 1.0, r);
    ck_assert_int_eq(tg_tape_status(t), TG_ERR_ARG);
    ck_assert_uint_eq(tg_tape_node_count(t), nodes);
    ck_assert_int_eq(tg_tensor_ndim(bad), 0);
    ck_assert_msg(strstr(tg_tape_error(t), "dropout") && strstr(tg_tape_error(t), "\"x\"") &&
                      strstr(tg_tape_error(t), "p = 1") && strstr(tg_tape_error(t), "[0, 1)"),
                  "%s", tg_tape_error(t));
    tg_tape_reset(t);
    x = tg_tensor_new(t, TG_F64, 1, (int64_t[]){4}, "x");
    tg_dropout(t, x, -0.1, r);
    ck_assert_msg(strstr(tg_tape_error(t), "p = -0.1"), "%s", tg_tape_error(t));
    tg_tape_reset(t);
    x = tg_tensor_new(t, TG_F64, 1, (int64_t[]){4}, "x");
    tg_dropout(t, x, 0.5, NULL);
    ck_assert_msg(strstr(tg_tape_error(t), "rng is NULL"), "%s", tg_tape_error(t));
    tg_rng_free(r);
    tg_tape_free(t);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("conv");
    TCase *tc = tcase_create("values");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, conv2d_matches_definition);
    tcase_add_test(tc, conv2d_chunked_batch_matches_definition);
    tcase_add_test(tc, conv1d_is_conv2d_of_height_one);
    tcase_add_test(tc, conv_transpose2d_matches_definition);
    tcase_add_test(tc, conv_transpose2d_is_the_adjoint_of_conv2d);
    tcase_add_test(tc, conv_transpose2d_empty_inputs);
    tcase_add_test(tc, pool_ties_nan_and_divisor);
    tcase_add_test(tc, same_bits_on_one_and_two_threads);
    tcase_add_test(tc, batch_norm_statistics_and_modes);
    tcase_add_test(tc, batch_norm_act_matches_composition);
    tcase_add_test(tc, buffers_are_kept_not_trained);
    tcase_add_test(tc, group_norm_values_and_errors);
    tcase_add_test(tc, layers_conv2d_and_batch_norm);
    tcase_add_test(tc, dropout_mask_rate_scale_and_modes);
    suite_add_tcase(s, tc);
    tc = tcase_create("errors and memory");
    tcase_add_test(tc, bad_input_refused_by_name);
    tcase_add_test(tc, conv_transpose2d_bad_input_refused_by_name);
    tcase_add_test(tc, warm_step_allocates_nothing);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
