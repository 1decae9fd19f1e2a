/*
 * layer_norm and rms_norm: values and gradients against a direct double loop over the rows,
 * the statistics of the output, one-value rows, a large offset, bits on one and two threads,
 * bad input; their layer helpers; the embedding and positional-embedding lookups.
 * (Finite-difference checks of both VJPs are in test-ops.c and tg-gradcheck.)
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <tapegrad/runtime.h>

#include "common.h"

static tg_tensor *
rnd_tensor(tg_tape *t, tg_dtype dt, int nd, const int64_t *dims, tg_rng *rng, double lo,
           double hi, const char *name)
{
    tg_tensor *x = tg_tensor_new(t, dt, nd, dims, name);
    tg_tensor_fill_uniform(x, rng, lo, hi);
    tg_tensor_set_requires_grad(x, true);
    return x;
}

static double *
values(const tg_tensor *x)
{
    double *v = malloc((tg_tensor_size(x) + 1) * sizeof *v);
    tg_tensor_read(x, v, tg_tensor_size(x));
    return v;
}

static double *
grads(const tg_tensor *x)
{
    size_t n = tg_tensor_size(x);
    double *v = malloc((n + 1) * sizeof *v);
    for (size_t i = 0; i < n; i++)
        v[i] = tg_tensor_grad_get(x, i);
    return v;
}

/* The reference: rows x m values, γ, β optional (NULL); rms: no mean taken out and no β.
 * y, and for the seed dy: dx, dγ, dβ (accumulated from zero), from the definitions:
 *   layer: x̂ = (x − μ) s, s = 1/√(σ² + ε), dx = s (u − mean u − x̂ mean(u x̂)), u = γ dy
 *   rms:   y = γ x r, r = 1/√(mean x² + ε),   dx = r (u − x r² mean(u x)) */
static void
reference(bool rms, size_t rows, size_t m, const double *x, const double *g, const double *b,
          double eps, const double *dy, double *y, double *dx, double *dg, double *db)
{
    for (size_t j = 0; j < m; j++)
        dg[j] = db[j] = 0;
    for (size_t r = 0; r < rows; r++) {
        const double *xr = x + r * m, *dyr = dy + r * m;
        double mu = 0, var = 0;
        if (!rms) {
            for (size_t j = 0; j < m; j++)
                mu += xr[j];
            mu /= (double)m;
        }
        for (size_t j = 0; j < m; j++)
            var += (xr[j] - mu) * (xr[j] - mu);
        double s = 1 / sqrt(var / (double)m + eps), mu_ = 0, mux = 0;
        for (size_t j = 0; j < m; j++) {
            double xh = (xr[j] - mu) * s, u = (g ? g[j] : 1) * dyr[j];
            y[r * m + j] = (g ? g[j] : 1) * xh + (b && !rms ? b[j] : 0);
            mu_ += u / (double)m, mux += u * (rms ? xr[j] : xh) / (double)m;
            dg[j] += dyr[j] * xh, db[j] += dyr[j];
        }
        for (size_t j = 0; j < m; j++) {
            double u = (g ? g[j] : 1) * dyr[j];
            dx[r * m + j] = rms ? s * (u - xr[j] * s * s * mux)
                                : s * (u - mu_ - (xr[j] - mu) * s * mux);
        }
    }
}

static void
assert_close(const double *got, const double *want, size_t n, double tol, const char *what,
             const char *label)
{
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(fabs(got[i] - want[i]) <= tol * (1 + fabs(want[i])),
                      "%s %s[%zu]: %.17g, want %.17g", label, what, i, got[i], want[i]);
}

struct norm_case {
    bool rms;
    int nd;
    int64_t dims[4];
    int n_norm;
    bool gamma, beta;
    double offset, spread, eps;
};

/* One case in dtype dt: forward and backward (seeded with a random dy) against reference. */
static void
check_case(const struct norm_case *c, tg_dtype dt, uint64_t seed)
{
    char label[160];
    snprintf(label, sizeof label, "%s %s nd %d n_norm %d gamma %d beta %d offset %g",
             c->rms ? "rms_norm" : "layer_norm", dt == TG_F32 ? "f32" : "f64", c->nd,
             c->n_norm, c->gamma, c->beta, c->offset);
    tg_rng *rng = tg_rng_new(seed);
    tg_tape *t = tg_tape_new();
    const int64_t *wdims = c->dims + c->nd - c->n_norm;
    tg_tensor *x = rnd_tensor(t, dt, c->nd, c->dims, rng, c->offset - c->spread,
                              c->offset + c->spread, "x");
    tg_tensor *w = c->gamma ? rnd_tensor(t, dt, c->n_norm, wdims, rng, 0.5, 1.5, "w") : NULL;
    tg_tensor *b = c->beta ? rnd_tensor(t, dt, c->n_norm, wdims, rng, -1, 1, "b") : NULL;
    tg_tensor *y = c->rms ? tg_rms_norm(t, x, c->n_norm, w, c->eps)
                          : tg_layer_norm(t, x, c->n_norm, w, b, c->eps);
    ck_assert_msg(!tg_tape_error(t), "%s: %s", label, tg_tape_error(t));
    ck_assert_uint_eq(tg_tape_node_count(t), 1);
    ck_assert_int_eq(tg_tensor_ndim(y), c->nd);
    tg_tensor *seed_t = tg_tensor_new(t, dt, c->nd, c->dims, "dy");
    tg_tensor_fill_uniform(seed_t, rng, -1, 1);
    ck_assert_int_eq(tg_backward_seeded(t, y, seed_t), TG_OK);
    size_t n = tg_tensor_size(x), m = tg_tensor_size(x) ? 1 : 0;
    m = 1;
    for (int i = c->nd - c->n_norm; i < c->nd; i++)
        m *= (size_t)c->dims[i];
    size_t rows = m ? n / m : 0;
    double *xv = values(x), *gv = w ? values(w) : NULL, *bv = b ? values(b) : NULL;
    double *dyv = values(seed_t), *yv = values(y), *dxv = grads(x);
    double *ry = malloc(n * sizeof *ry), *rdx = malloc(n * sizeof *rdx);
    double *rdg = malloc(m * sizeof *rdg), *rdb = malloc(m * sizeof *rdb);
    reference(c->rms, rows, m, xv, gv, bv, c->eps, dyv, ry, rdx, rdg, rdb);
    /* x itself is only known to its rounding, |offset|·2⁻⁵³ in float64, which moves x̂ by as
     * much; a formula that cancels (E[x²] − μ², or y from γ s x − γ s μ) loses ~offset²·2⁻⁵³
     * instead, 1e-4 at offset 1e6 */
    double tol = dt == TG_F32 ? 2e-5 : 1e-11 + 1e-14 * fabs(c->offset);
    assert_close(yv, ry, n, tol, "y", label);
    assert_close(dxv, rdx, n, dt == TG_F32 ? 1e-4 : 1e-9 + 1e-14 * fabs(c->offset), "dx", label);
    if (w) {
        double *dg = grads(w);
        assert_close(dg, rdg, m, tol * 10, "dweight", label);
        free(dg);
    }
    if (b) {
        double *db = grads(b);
        assert_close(db, rdb, m, tol * 10, "dbias", label);
        free(db);
    }
    free(xv), free(gv), free(bv), free(dyv), free(yv), free(dxv);
    free(ry), free(rdx), free(rdg), free(rdb);
    tg_tape_free(t);
    tg_rng_free(rng);
}

START_TEST(values_and_gradients_match_direct_loop)
{
    const struct norm_case cases[] = {
        {false, 2, {5, 7}, 1, true, true, 0, 2, 1e-5},
        {false, 3, {2, 3, 8}, 1, false, false, 0, 1, 1e-5},
        {false, 3, {2, 3, 8}, 2, true, false, 0, 1, 1e-3},
        {false, 4, {2, 2, 3, 5}, 2, false, true, 0, 3, 1e-5},
        {false, 2, {3, 37}, 2, true, true, 0.5, 1, 1e-5}, /* n_norm = rank: one row */
        {false, 2, {6, 1}, 1, true, true, 0, 1, 1e-5},    /* one value a row */
        {false, 3, {4, 3, 70}, 1, true, true, 0, 1, 1e-5}, /* rows past the 8-lane sums */
        {true, 2, {5, 7}, 1, true, false, 0, 2, 1e-6},
        {true, 3, {2, 3, 8}, 1, false, false, 0, 1, 1e-6},
        {true, 3, {2, 3, 8}, 2, true, false, 0, 1, 1e-3},
        {true, 2, {6, 1}, 1, true, false, 0, 1, 1e-6},
        {true, 3, {4, 3, 70}, 2, true, false, 1, 1, 1e-6},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        check_case(&cases[k], TG_F64, 10 + k);
        check_case(&cases[k], TG_F32, 40 + k);
    }
}
END_TEST

/* Without affine every row comes out with mean 0 and variance 1 (biased, up to ε), and an
 * offset of 1e6 on values spread over ±1 changes nothing beyond the input's own rounding: the
 * statistics are taken from x − μ. In float32 the input is the rounded one; the reference
 * loop reads the same values. */
START_TEST(row_statistics_and_large_offset)
{
    tg_rng *rng = tg_rng_new(3);
    tg_tape *t = tg_tape_new();
    tg_tensor *x = rnd_tensor(t, TG_F64, 3, (int64_t[]){3, 4, 50}, rng, -1, 1, "x");
    tg_tensor *y = tg_layer_norm(t, x, 1, NULL, NULL, 1e-12);
    for (size_t row = 0; row < 12; row++) {
        double s = 0, s2 = 0;
        for (size_t i = 0; i < 50; i++) {
            double v = tg_tensor_get(y, row * 50 + i);
            s += v, s2 += v * v;
        }
        ck_assert_double_eq_tol(s / 50, 0, 1e-13);
        ck_assert_double_eq_tol(s2 / 50, 1, 1e-10);
    }
    /* the same values shifted by 1e6: the same output to the shift's rounding (~1e-10) */
    double *xv = values(x);
    for (size_t i = 0; i < 600; i++)
        xv[i] += 1e6;
    tg_tensor *xs = tg_tensor_from(t, TG_F64, 3, (int64_t[]){3, 4, 50}, xv, "x_shifted");
    tg_tensor *ys = tg_layer_norm(t, xs, 1, NULL, NULL, 1e-12);
    for (size_t i = 0; i < 600; i++)
        ck_assert_double_eq_tol(tg_tensor_get(ys, i), tg_tensor_get(y, i), 1e-8);
    free(xv);
    tg_tape_free(t);
    tg_rng_free(rng);
    /* forward and backward with the offset against the reference, both dtypes */
    const struct norm_case off[] = {
        {false, 2, {4, 64}, 1, true, true, 1e6, 1, 1e-5},
        {false, 3, {2, 3, 9}, 2, false, false, -1e6, 2, 1e-5},
    };
    for (size_t k = 0; k < 2; k++) {
        check_case(&off[k], TG_F64, 70 + k);
        check_case(&off[k], TG_F32, 80 + k);
    }
}
END_TEST

/* A row of one value: x̂ = 0, y = β, dx = 0 (layer_norm); rms_norm keeps x's sign. */
START_TEST(one_value_rows)
{
    tg_tape *t = tg_tape_new();
    double xv[3] = {5, -2, 1e6}, bv[1] = {0.25};
    tg_tensor *x = tg_tensor_from(t, TG_F64, 2, (int64_t[]){3, 1}, xv, "x");
    tg_tensor_set_requires_grad(x, true);
    tg_tensor *b = tg_tensor_from(t, TG_F64, 1, (int64_t[]){1}, bv, "b");
    tg_tensor *y = tg_layer_norm(t, x, 1, NULL, b, 1e-5);
    tg_tensor *r = tg_rms_norm(t, x, 1, NULL, 1e-5);
    for (size_t i = 0; i < 3; i++) {
        ck_assert_double_eq(tg_tensor_get(y, i), 0.25);
        ck_assert_double_eq_tol(tg_tensor_get(r, i), xv[i] / sqrt(xv[i] * xv[i] + 1e-5), 1e-15);
    }
    ck_assert_int_eq(tg_backward(t, tg_sum(t, y)), TG_OK);
    for (size_t i = 0; i < 3; i++)
        ck_assert_double_eq(tg_tensor_grad_get(x, i), 0);
    /* no rows, or rows of no values: empty outputs, forward and backward do nothing */
    const int64_t empty[2][2] = {{0, 4}, {3, 0}};
    for (int k = 0; k < 2; k++) {
        tg_tape_reset(t);
        tg_tensor *e = tg_tensor_new(t, TG_F64, 2, empty[k], "e");
        tg_tensor_set_requires_grad(e, true);
        tg_tensor *w = tg_tensor_new(t, TG_F64, 1, empty[k] + 1, "w");
        tg_tensor *ye = tg_layer_norm(t, e, 1, w, w, 1e-5);
        tg_tensor *re = tg_rms_norm(t, e, 1, w, 1e-5);
        ck_assert_msg(!tg_tape_error(t), "%s", tg_tape_error(t));
        ck_assert_uint_eq(tg_tensor_size(ye), 0);
        ck_assert_uint_eq(tg_tensor_size(re), 0);
        ck_assert_int_eq(tg_backward(t, tg_add(t, tg_sum(t, ye), tg_sum(t, re))), TG_OK);
    }
    tg_tape_free(t);
}
END_TEST

/* Rows split across 1 and 2 threads: the same bits for y, dx, dγ and dβ. */
static void
norm_step(int threads, bool rms, double *out, size_t *n_out)
{
    tg_set_num_threads(threads);
    tg_rng *rng = tg_rng_new(5);
    tg_tape *t = tg_tape_new();
    tg_tensor *x = rnd_tensor(t, TG_F32, 3, (int64_t[]){8, 40, 130}, rng, -2, 2, "x");
    tg_tensor *w = rnd_tensor(t, TG_F32, 1, (int64_t[]){130}, rng, 0.5, 1.5, "w");
    tg_tensor *b = rnd_tensor(t, TG_F32, 1, (int64_t[]){130}, rng, -1, 1, "b");
    tg_tensor *y = rms ? tg_rms_norm(t, x, 1, w, 1e-6) : tg_layer_norm(t, x, 1, w, b, 1e-5);
    tg_tensor *dy = tg_tensor_new(t, TG_F32, 3, (int64_t[]){8, 40, 130}, "dy");
    tg_tensor_fill_uniform(dy, rng, -1, 1);
    ck_assert_int_eq(tg_backward_seeded(t, y, dy), TG_OK);
    size_t at = 0;
    for (size_t i = 0; i < tg_tensor_size(y); i++)
        out[at++] = tg_tensor_get(y, i);
    tg_tensor *in[3] = {x, w, b};
    for (int k = 0; k < (rms ? 2 : 3); k++)
        for (size_t i = 0; i < tg_tensor_size(in[k]); i++)
            out[at++] = tg_tensor_grad_get(in[k], i);
    *n_out = at;
    tg_tape_free(t);
    tg_rng_free(rng);
    tg_set_num_threads(0);
}

START_TEST(same_bits_on_one_and_two_threads)
{
    enum { MAXV = 2 * 8 * 40 * 130 + 2 * 130 };
    static double a[MAXV], b[MAXV];
    for (int rms = 0; rms < 2; rms++) {
        size_t na, nb;
        norm_step(1, rms, a, &na);
        norm_step(2, rms, b, &nb);
        ck_assert_uint_eq(na, nb);
        ck_assert_msg(memcmp(a, b, na * sizeof a[0]) == 0, "%s differs across threads",
                      rms ? "rms_norm" : "layer_norm");
    }
}
END_TEST

/* Each refusal: the status, no node, the nil tensor, the message naming the op and the
 * shapes; x is left as it was. */
static void
refused(tg_tape *t, tg_tensor *y, tg_status st, const char *const *tokens, const double *x0,
        tg_tensor *x)
{
    ck_assert_int_eq(tg_tape_status(t), st);
    ck_assert_uint_eq(tg_tape_node_count(t), 0);
    ck_assert_int_eq(tg_tensor_ndim(y), 0);
    const char *msg = tg_tape_error(t);
    for (const char *const *k = tokens; *k; k++)
        ck_assert_msg(strstr(msg, *k), "message lacks \"%s\": %s", *k, msg);
    for (size_t i = 0; x0 && i < 24; i++)
        ck_assert_double_eq(tg_tensor_get(x, i), x0[i]);
}
#define TOKENS(...) ((const char *const[]){__VA_ARGS__, NULL})

START_TEST(bad_input_refused_by_name)
{
    tg_rng *rng = tg_rng_new(9);
    tg_tape *t = tg_tape_new();
    double x0[24];
    for (int k = 0; k < 11; k++) {
        tg_tape_reset(t);
        tg_tensor *x = rnd_tensor(t, TG_F64, 3, (int64_t[]){2, 3, 4}, rng, -1, 1, "x");
        tg_tensor_read(x, x0, 24);
        tg_tensor *w4 = rnd_tensor(t, TG_F64, 1, (int64_t[]){4}, rng, -1, 1, "w4");
        tg_tensor *w3 = rnd_tensor(t, TG_F64, 1, (int64_t[]){3}, rng, -1, 1, "w3");
        tg_tensor *w34 = rnd_tensor(t, TG_F64, 2, (int64_t[]){4, 3}, rng, -1, 1, "w43");
        tg_tensor *f4 = rnd_tensor(t, TG_F32, 1, (int64_t[]){4}, rng, -1, 1, "f4");
        tg_tensor *y = NULL;
        switch (k) {
        case 0:
            y = tg_layer_norm(t, x, 1, w3, NULL, 1e-5);
            refused(t, y, TG_ERR_SHAPE, TOKENS("layer_norm", "\"x\" (2x3x4)", "weight \"w3\" (3)"),
                    x0, x);
            break;
        case 1:
            y = tg_layer_norm(t, x, 1, w4, w3, 1e-5);
            refused(t, y, TG_ERR_SHAPE, TOKENS("layer_norm", "(2x3x4)", "bias \"w3\" (3)"), x0, x);
            break;
        case 2:
            y = tg_layer_norm(t, x, 2, w34, NULL, 1e-5); /* (4x3) is not (3x4) */
            refused(t, y, TG_ERR_SHAPE,
                    TOKENS("layer_norm", "(2x3x4)", "\"w43\" (4x3)", "last 2 axes"), x0, x);
            break;
        case 3:
            y = tg_layer_norm(t, x, 0, NULL, NULL, 1e-5);
            refused(t, y, TG_ERR_ARG,
                    TOKENS("layer_norm", "(2x3x4)", "n_norm_axes 0 must be in [1, 3]"), x0, x);
            break;
        case 4:
            y = tg_rms_norm(t, x, 4, NULL, 1e-5);
            refused(t, y, TG_ERR_ARG, TOKENS("rms_norm", "(2x3x4)", "n_norm_axes 4"), x0, x);
            break;
        case 5:
            y = tg_layer_norm(t, x, 1, NULL, NULL, 0);
            refused(t, y, TG_ERR_ARG, TOKENS("layer_norm", "(2x3x4)", "eps = 0 must be"), x0, x);
            break;
        case 6:
            y = tg_rms_norm(t, x, 1, NULL, -1);
            refused(t, y, TG_ERR_ARG, TOKENS("rms_norm", "eps = -1"), x0, x);
            break;
        case 7:
            y = tg_layer_norm(t, x, 1, NULL, NULL, NAN);
            refused(t, y, TG_ERR_ARG, TOKENS("layer_norm", "eps = nan"), x0, x);
            break;
        case 8:
            y = tg_layer_norm(t, x, 1, f4, NULL, 1e-5);
            refused(t, y, TG_ERR_DTYPE, TOKENS("layer_norm", "(2x3x4)", "weight \"f4\" (4) f32",
                                               "must be f64"),
                    x0, x);
            break;
        case 9:
            y = tg_rms_norm(t, x, 1, w3, 1e-5);
            refused(t, y, TG_ERR_SHAPE, TOKENS("rms_norm", "(2x3x4)", "weight \"w3\" (3)"), x0, x);
            break;
        case 10:
            y = tg_layer_norm(t, NULL, 1, NULL, NULL, 1e-5);
            refused(t, y, TG_ERR_ARG, TOKENS("layer_norm"), NULL, x);
            break;
        }
        /* sticky: later ops are no-ops */
        y = tg_layer_norm(t, x, 1, NULL, NULL, 1e-5);
        ck_assert_uint_eq(tg_tape_node_count(t), 0);
    }
    ck_assert_ptr_null(tg_layer_norm(NULL, NULL, 1, NULL, NULL, 1e-5));
    tg_tape_free(t);
    tg_rng_free(rng);
}
END_TEST

/* nn.LayerNorm / nn.RMSNorm helpers: names, shapes, initial values, atomic refusals; the
 * forward is the op with the layer's tensors. */
START_TEST(norm_layers)
{
    tg_params *p = tg_params_new(TG_F64);
    tg_layer_norm_layer ln;
    ck_assert_int_eq(tg_layer_norm_layer_init(&ln, p, "ln", 2, (int64_t[]){3, 4}, true), TG_OK);
    ck_assert_ptr_eq(ln.weight, tg_params_find(p, "ln/W"));
    ck_assert_ptr_eq(ln.bias, tg_params_find(p, "ln/b"));
    ck_assert_int_eq(tg_tensor_ndim(ln.weight), 2);
    ck_assert_int_eq(tg_tensor_dim(ln.bias, 1), 4);
    for (size_t i = 0; i < 12; i++) {
        ck_assert_double_eq(tg_tensor_get(ln.weight, i), 1);
        ck_assert_double_eq(tg_tensor_get(ln.bias, i), 0);
    }
    ck_assert_double_eq(ln.eps, 1e-5);
    ck_assert_int_eq(ln.n_norm_axes, 2);
    tg_rms_norm_layer rn;
    ck_assert_int_eq(tg_rms_norm_layer_init(&rn, p, "rms", 1, (int64_t[]){4}, true), TG_OK);
    ck_assert_ptr_eq(rn.weight, tg_params_find(p, "rms/W"));
    ck_assert_ptr_null(tg_params_find(p, "rms/b"));
    size_t count = tg_params_count(p);
    /* "ln/W" exists already: nothing added, *layer untouched */
    tg_layer_norm_layer again = {0};
    ck_assert_int_ne(tg_layer_norm_layer_init(&again, p, "ln", 1, (int64_t[]){4}, true), TG_OK);
    ck_assert_uint_eq(tg_params_count(p), count);
    ck_assert_ptr_null(again.weight);
    /* "x/W" is new but "x/b" exists: the weight is rolled back */
    ck_assert_ptr_nonnull(tg_params_add(p, "x/b", 1, (int64_t[]){4}));
    count = tg_params_count(p);
    ck_assert_int_ne(tg_layer_norm_layer_init(&again, p, "x", 1, (int64_t[]){4}, true), TG_OK);
    ck_assert_uint_eq(tg_params_count(p), count);
    ck_assert_ptr_null(tg_params_find(p, "x/W"));
    ck_assert_int_eq(tg_rms_norm_layer_init(&rn, p, "bad", 0, (int64_t[]){4}, true), TG_ERR_ARG);
    ck_assert_int_eq(tg_layer_norm_layer_init(&again, p, "bad", 1, (int64_t[]){0}, true),
                     TG_ERR_ARG);
    ck_assert_uint_eq(tg_params_count(p), count);
    /* without affine: no parameters */
    tg_layer_norm_layer plain;
    ck_assert_int_eq(tg_layer_norm_layer_init(&plain, p, "plain", 1, (int64_t[]){4}, false), TG_OK);
    ck_assert_uint_eq(tg_params_count(p), count);
    ck_assert_ptr_null(plain.weight);
    ck_assert_ptr_null(plain.bias);

    tg_rng *rng = tg_rng_new(4);
    tg_tape *t = tg_tape_new();
    tg_tensor *x = rnd_tensor(t, TG_F64, 3, (int64_t[]){2, 3, 4}, rng, -1, 1, "x");
    tg_tensor *y = tg_layer_norm_layer_forward(t, &ln, x);
    tg_tensor *z = tg_layer_norm(t, x, 2, NULL, NULL, 1e-5);
    tg_tensor *r = tg_rms_norm_layer_forward(t, &rn, x);
    tg_tensor *rz = tg_rms_norm(t, x, 1, NULL, 1e-6);
    ck_assert_msg(!tg_tape_error(t), "%s", tg_tape_error(t));
    for (size_t i = 0; i < 24; i++) {
        ck_assert_double_eq(tg_tensor_get(y, i), tg_tensor_get(z, i));
        ck_assert_double_eq(tg_tensor_get(r, i), tg_tensor_get(rz, i));
    }
    ck_assert_int_eq(tg_backward(t, tg_sum(t, tg_mul(t, y, y))), TG_OK);
    ck_assert(fabs(tg_tensor_grad_get(ln.weight, 0)) > 0);
    tg_tensor_get(ln.bias, 0);
    tg_layer_norm_layer_forward(t, NULL, x);
    ASSERT_TAPE_ERROR(t, TG_ERR_ARG, "layer_norm layer");
    tg_tape_free(t);
    tg_rng_free(rng);
    tg_params_free(p);
}
END_TEST

/* tg_embedding: rows copied, output (dims…, d), repeated indices' gradients add, an out of
 * range index named with its position, an empty index; the layer's table N(0, 1). */
START_TEST(embedding_lookup)
{
    for (int d = 0; d < 2; d++) {
        tg_dtype dt = d ? TG_F32 : TG_F64;
        tg_params *p = tg_params_new(dt);
        tg_rng *rng = tg_rng_new(8);
        tg_embedding_layer emb;
        ck_assert_int_eq(tg_embedding_layer_init(&emb, p, "tok", 64, 8, rng), TG_OK);
        ck_assert_ptr_eq(emb.weight, tg_params_find(p, "tok/W"));
        double s = 0, s2 = 0;
        for (size_t i = 0; i < 512; i++) {
            double v = tg_tensor_get(emb.weight, i);
            s += v, s2 += v * v;
        }
        ck_assert_double_eq_tol(s / 512, 0, 0.15); /* 512 draws of N(0, 1): σ of the mean 0.044 */
        ck_assert_double_eq_tol(s2 / 512, 1, 0.2);
        tg_tape *t = tg_tape_new();
        const int64_t index[6] = {1, 3, 1, 63, 1, 0};
        tg_tensor *y = tg_embedding_layer_forward(t, &emb, index, 2, (int64_t[]){2, 3});
        ck_assert_msg(!tg_tape_error(t), "%s", tg_tape_error(t));
        ck_assert_int_eq(tg_tensor_ndim(y), 3);
        ck_assert_int_eq(tg_tensor_dim(y, 0), 2);
        ck_assert_int_eq(tg_tensor_dim(y, 1), 3);
        ck_assert_int_eq(tg_tensor_dim(y, 2), 8);
        for (size_t j = 0; j < 6; j++)
            for (size_t k = 0; k < 8; k++)
                ck_assert_double_eq(tg_tensor_get(y, j * 8 + k),
                                    tg_tensor_get(emb.weight, (size_t)index[j] * 8 + k));
        /* loss = Σ c_j · y[j]: row 1 gets c_0 + c_2 + c_4 = 1 + 3 + 5 */
        double cv[48];
        for (size_t i = 0; i < 48; i++)
            cv[i] = (double)(i / 8 + 1);
        tg_tensor *c = tg_tensor_new(t, dt, 3, (int64_t[]){2, 3, 8}, "c");
        tg_tensor_write(c, cv, 48);
        ck_assert_int_eq(tg_backward(t, tg_sum(t, tg_mul(t, y, c))), TG_OK);
        const double want[64] = {[0] = 6, [1] = 9, [3] = 2, [63] = 4};
        for (size_t r = 0; r < 64; r++)
            for (size_t k = 0; k < 8; k++)
                ck_assert_double_eq(tg_tensor_grad_get(emb.weight, r * 8 + k), want[r]);
        /* an empty index: (0, d), nothing to gather, the backward adds nothing */
        tg_params_zero_grad(p);
        tg_tape_reset(t);
        y = tg_embedding(t, emb.weight, NULL, 1, (int64_t[]){0});
        ck_assert_msg(!tg_tape_error(t), "%s", tg_tape_error(t));
        ck_assert_int_eq(tg_tensor_dim(y, 0), 0);
        ck_assert_int_eq(tg_tensor_dim(y, 1), 8);
        ck_assert_int_eq(tg_backward(t, tg_sum(t, y)), TG_OK);
        ck_assert_double_eq(tg_tensor_grad_get(emb.weight, 0), 0);
        /* one index, ndim 0: (d) */
        y = tg_embedding(t, emb.weight, (int64_t[]){5}, 0, NULL);
        ck_assert_int_eq(tg_tensor_ndim(y), 1);
        ck_assert_double_eq(tg_tensor_get(y, 2), tg_tensor_get(emb.weight, 5 * 8 + 2));
        /* out of range, with its position */
        size_t nodes = tg_tape_node_count(t);
        y = tg_embedding_layer_forward(t, &emb, (int64_t[]){0, 1, 2, 70}, 1, (int64_t[]){4});
        ASSERT_TAPE_ERROR(t, TG_ERR_ARG, "embedding", "\"tok/W\" (64x8)",
                          "index[3] = 70 is out of range [0, 64)");
        ck_assert_uint_eq(tg_tape_node_count(t), nodes);
        ck_assert_int_eq(tg_tensor_ndim(y), 0);
        tg_tape_reset(t);
        tg_embedding(t, emb.weight, (int64_t[]){-1}, 1, (int64_t[]){1});
        ASSERT_TAPE_ERROR(t, TG_ERR_ARG, "embedding", "index[0] = -1 is out of range [0, 64)");
        tg_tape_reset(t);
        tg_embedding(t, emb.weight, NULL, 1, (int64_t[]){2});
        ASSERT_TAPE_ERROR(t, TG_ERR_ARG, "embedding", "index is NULL");
        tg_tape_reset(t);
        tg_embedding(t, emb.weight, index, TG_MAX_DIMS, (int64_t[TG_MAX_DIMS]){1, 1, 1, 1});
        ASSERT_TAPE_ERROR(t, TG_ERR_ARG, "embedding", "dimensions");
        tg_tape_reset(t);
        tg_embedding(t, tg_tensor_new(t, dt, 1, (int64_t[]){4}, "v"), index, 1, (int64_t[]){1});
        ASSERT_TAPE_ERROR(t, TG_ERR_SHAPE, "embedding", "\"v\" (4)", "rank 2");
        /* init: an existing name adds nothing; rng NULL leaves zeros */
        size_t count = tg_params_count(p);
        tg_embedding_layer e2 = {0};
        ck_assert_int_ne(tg_embedding_layer_init(&e2, p, "tok", 4, 2, NULL), TG_OK);
        ck_assert_int_eq(tg_embedding_layer_init(&e2, p, "bad", 0, 2, NULL), TG_ERR_ARG);
        ck_assert_uint_eq(tg_params_count(p), count);
        ck_assert_ptr_null(e2.weight);
        ck_assert_int_eq(tg_embedding_layer_init(&e2, p, "zero", 4, 2, NULL), TG_OK);
        ck_assert_double_eq(tg_tensor_get(e2.weight, 7), 0);
        tg_tape_free(t);
        tg_rng_free(rng);
        tg_params_free(p);
    }
}
END_TEST

/* x (B, T, d) + P[0:T]: the table's first T rows broadcast over the batch, their gradients the
 * sums over it; T = max_len takes the whole table; T > max_len is refused. */
START_TEST(positional_embedding)
{
    tg_params *p = tg_params_new(TG_F64);
    tg_rng *rng = tg_rng_new(12);
    tg_positional_embedding_layer pos;
    ck_assert_int_eq(tg_positional_embedding_layer_init(&pos, p, "pos", 5, 4, rng), TG_OK);
    ck_assert_ptr_eq(pos.weight, tg_params_find(p, "pos/W"));
    tg_tape *t = tg_tape_new();
    for (int64_t len = 3; len <= 5; len += 2) {
        tg_tape_reset(t);
        tg_params_zero_grad(p);
        tg_tensor *x = rnd_tensor(t, TG_F64, 3, (int64_t[]){2, len, 4}, rng, -1, 1, "x");
        tg_tensor *y = tg_positional_embedding_layer_forward(t, &pos, x);
        ck_assert_msg(!tg_tape_error(t), "%s", tg_tape_error(t));
        for (size_t b = 0; b < 2; b++)
            for (size_t i = 0; i < (size_t)len * 4; i++)
                ck_assert_double_eq(tg_tensor_get(y, b * (size_t)len * 4 + i),
                                    tg_tensor_get(x, b * (size_t)len * 4 + i) +
                                        tg_tensor_get(pos.weight, i));
        ck_assert_int_eq(tg_backward(t, tg_sum(t, y)), TG_OK);
        for (size_t i = 0; i < 20; i++)
            ck_assert_double_eq(tg_tensor_grad_get(pos.weight, i), i < (size_t)len * 4 ? 2 : 0);
    }
    tg_tape_reset(t);
    tg_tensor *x = rnd_tensor(t, TG_F64, 3, (int64_t[]){2, 6, 4}, rng, -1, 1, "x");
    tg_tensor *y = tg_positional_embedding_layer_forward(t, &pos, x);
    ASSERT_TAPE_ERROR(t, TG_ERR_SHAPE, "positional_embedding", "\"pos/W\" (5x4)",
                      "\"x\" (2x6x4)", "T <= max_len = 5");
    ck_assert_int_eq(tg_tensor_ndim(y), 0);
    ck_assert_uint_eq(tg_tape_node_count(t), 0);
    tg_tape_reset(t);
    x = rnd_tensor(t, TG_F64, 2, (int64_t[]){3, 5}, rng, -1, 1, "x");
    tg_positional_embedding_layer_forward(t, &pos, x);
    ASSERT_TAPE_ERROR(t, TG_ERR_SHAPE, "positional_embedding", "(3x5)", "(..., T, 4)");
    tg_tape_free(t);
    tg_rng_free(rng);
    tg_params_free(p);
}
END_TEST

/* A step of embedding + position -> layer_norm -> rms_norm -> loss, forward and backward,
 * repeated: after the first, no allocation (the statistics live in the nodes' scratch on the
 * arena), and the arena holds the same bytes each step. */
START_TEST(warm_step_allocates_nothing)
{
    tg_set_allocator(&test_counting_allocator);
    tg_rng *rng = tg_rng_new(2);
    tg_params *p = tg_params_new(TG_F32);
    tg_embedding_layer tok;
    tg_positional_embedding_layer pos;
    tg_layer_norm_layer ln;
    tg_rms_norm_layer rn;
    ck_assert_int_eq(tg_embedding_layer_init(&tok, p, "tok", 50, 16, rng), TG_OK);
    ck_assert_int_eq(tg_positional_embedding_layer_init(&pos, p, "pos", 12, 16, rng), TG_OK);
    ck_assert_int_eq(tg_layer_norm_layer_init(&ln, p, "ln", 1, (int64_t[]){16}, true), TG_OK);
    ck_assert_int_eq(tg_rms_norm_layer_init(&rn, p, "rms", 1, (int64_t[]){16}, true), TG_OK);
    tg_tape *t = tg_tape_new();
    int64_t index[4 * 10];
    size_t before = 0, bytes = 0;
    for (int step = 0; step < 4; step++) {
        for (int i = 0; i < 40; i++)
            index[i] = (i * 7 + step) % 50;
        if (step == 1)
            before = test_alloc_count();
        tg_tape_reset(t);
        tg_tensor *h = tg_embedding_layer_forward(t, &tok, index, 2, (int64_t[]){4, 10});
        h = tg_positional_embedding_layer_forward(t, &pos, h);
        h = tg_rms_norm_layer_forward(t, &rn, tg_layer_norm_layer_forward(t, &ln, h));
        tg_backward(t, tg_mean(t, tg_square(t, h)));
        ck_assert_msg(!tg_tape_error(t), "step %d: %s", step, tg_tape_error(t));
        if (step == 1)
            bytes = tg_tape_arena_bytes(t);
        ck_assert_uint_eq(tg_tape_arena_bytes(t), step ? bytes : tg_tape_arena_bytes(t));
        tg_params_zero_grad(p);
    }
    size_t warm = test_alloc_count() - before;
    tg_tape_free(t);
    tg_params_free(p);
    tg_rng_free(rng);
    tg_set_allocator(NULL);
    ck_assert_msg(warm == 0, "%zu allocations in 3 warm steps", warm);
    printf("warm step: embedding + position + layer_norm + rms_norm, (4x10x16) float32: "
           "arena %zu bytes\n", bytes);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("norm");
    TCase *tc = tcase_create("layer_norm and rms_norm");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, values_and_gradients_match_direct_loop);
    tcase_add_test(tc, row_statistics_and_large_offset);
    tcase_add_test(tc, one_value_rows);
    tcase_add_test(tc, same_bits_on_one_and_two_threads);
    tcase_add_test(tc, bad_input_refused_by_name);
    tcase_add_test(tc, norm_layers);
    suite_add_tcase(s, tc);
    tc = tcase_create("embedding");
    tcase_add_test(tc, embedding_lookup);
    tcase_add_test(tc, positional_embedding);
    tcase_add_test(tc, warm_step_allocates_nothing);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
