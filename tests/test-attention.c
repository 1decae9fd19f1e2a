/*
 * Scaled dot-product attention (lib/ops/attention.c) and the multi-head attention layer
 * (lib/layers/attention.c), beyond the finite-difference cases of test-ops and tg-gradcheck's
 * sweep:
 *   - the fused node against the composition bmm, scale, add the mask, softmax, bmm built from
 *     existing ops on the same tape, values and every gradient (q, k, v and the mask), both
 *     dtypes, rank 4 and rank 3, T and S over one tile (64) and not multiples of it, causal with
 *     T < S and T > S, a mask with -inf entries and broadcast axes;
 *   - a fully masked row: output 0, gradients finite and 0 there;
 *   - the same bits on 1 and 2 threads; bytes stored per node against storing P;
 *   - bad input: a sticky error naming the op and the shapes, nothing recorded;
 *   - the layer: parameters, d not divisible by the heads, a warm step allocates nothing.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tapegrad/op.h>
#include <tapegrad/runtime.h>

#include "common.h"

/* x[i] = val in x's dtype */
static void
set_elem(tg_tensor *x, size_t i, double val)
{
    if (tg_tensor_dtype(x) == TG_F32)
        ((float *)tg_tensor_data(x))[i] = (float)val;
    else
        ((double *)tg_tensor_data(x))[i] = val;
}

static tg_tensor *
rnd(tg_tape *t, tg_dtype dt, int nd, const int64_t *dims, tg_rng *rng, const char *name)
{
    tg_tensor *x = tg_tensor_new(t, dt, nd, dims, name);
    tg_tensor_fill_uniform(x, rng, -1, 1);
    tg_tensor_set_requires_grad(x, true);
    return x;
}

struct sdpa_cfg {
    int rank;                 /* 4: (B, H, T, d); 3: (B, T, d) */
    int64_t b, h, t, s, d, dv;
    bool causal;
    int mask_rank;            /* 0: no mask */
    int64_t mask_dims[4];
    double mask_holes;        /* fraction of mask entries set to -inf (never a whole row) */
    bool mask_grad;
};

static const struct sdpa_cfg cfgs[] = {
    {4, 2, 3, 5, 7, 4, 3, false, 0, {0}, 0, false},
    {4, 2, 3, 5, 7, 4, 3, true, 0, {0}, 0, false},
    {4, 2, 3, 9, 4, 4, 5, true, 0, {0}, 0, false},                /* T > S, causal */
    {4, 2, 3, 5, 7, 4, 3, false, 4, {2, 3, 5, 7}, 0.3, true},     /* full mask, -inf holes */
    {4, 2, 3, 5, 7, 4, 3, true, 2, {5, 7}, 0.2, true},            /* (T, S), broadcast */
    {4, 2, 2, 6, 5, 3, 2, false, 4, {2, 1, 1, 5}, 0.2, true},     /* key padding */
    {4, 1, 2, 70, 130, 8, 6, true, 4, {1, 2, 70, 130}, 0.1, true}, /* several tiles */
    {4, 1, 1, 130, 67, 5, 4, false, 2, {130, 1}, 0, true},        /* mask over T only */
    {3, 3, 1, 6, 8, 4, 4, false, 3, {3, 6, 8}, 0.25, true},       /* rank 3 */
    {3, 2, 1, 7, 7, 3, 3, true, 0, {0}, 0, false},
};

/* Writes a mask with -inf at a fraction `holes` of the entries, one entry per row kept. */
static void
fill_mask(tg_tensor *m, const struct sdpa_cfg *c, tg_rng *rng)
{
    size_t n = tg_tensor_size(m), last = (size_t)c->mask_dims[c->mask_rank - 1];
    for (size_t i = 0; i < n; i++) {
        double u = tg_rng_uniform(rng);
        double val = 2 * tg_rng_uniform(rng) - 1;
        set_elem(m, i, (u < c->mask_holes && i % last != 0) ? -INFINITY : val);
    }
}

/* The composition from plain ops: softmax(scale q kᵀ + mask (+ causal -inf)) v. */
static tg_tensor *
composed(tg_tape *t, const struct sdpa_cfg *c, tg_tensor *q, tg_tensor *k, tg_tensor *v,
         tg_tensor *mask, double scale, tg_dtype dt)
{
    tg_tensor *z = tg_scale(t, tg_bmm(t, q, false, k, true), scale);
    if (mask)
        z = tg_add(t, z, mask);
    if (c->causal) {
        tg_tensor *tri = tg_tensor_new(t, dt, 2, (int64_t[]){c->t, c->s}, "causal");
        for (int64_t i = 0; i < c->t; i++)
            for (int64_t j = 0; j < c->s; j++)
                set_elem(tri, (size_t)(i * c->s + j), j <= i ? 0 : -INFINITY);
        z = tg_add(t, z, tri);
    }
    return tg_bmm(t, tg_softmax(t, z, -1), false, v, false);
}

static double
rel_err(double a, double b)
{
    return fabs(a - b) / (1 + fabs(b));
}

/* Gradient of Σ R ⊙ out into copies (q, k, v, mask concatenated). */
static size_t
grads_of(tg_tape *t, tg_tensor *out, tg_tensor *r, tg_tensor *const *x, int n, double *g)
{
    ck_assert_int_eq(tg_backward(t, tg_sum(t, tg_mul(t, out, r))), TG_OK);
    size_t at = 0;
    for (int i = 0; i < n; i++)
        for (size_t j = 0; j < tg_tensor_size(x[i]); j++)
            g[at++] = tg_tensor_grad_get(x[i], j);
    return at;
}

/*
 * Tolerances: the two graphs compute the same sums in a different order (the fused node tiles
 * the keys and rescales with a running maximum, the composition sums each row at once), so
 * they differ by round-off only: float64 1e-12 relative (sums of at most 130 terms of order 1,
 * each ~1e-16), float32 2e-4 (the same in ~1e-7 steps, the gradient going through two
 * products and a softmax).
 */
START_TEST(fused_matches_composition)
{
    const struct sdpa_cfg *c = &cfgs[_i];
    for (tg_dtype dt = TG_F32; dt <= TG_F64; dt++) {
        double tol = dt == TG_F64 ? 1e-12 : 2e-4;
        tg_rng *rng = tg_rng_new(100 + (uint64_t)_i);
        tg_tape *t = tg_tape_new();
        int64_t qd[4], kd[4], vd[4];
        int r = c->rank;
        int64_t lead[2] = {c->b, c->h};
        for (int i = 0; i < r - 2; i++)
            qd[i] = kd[i] = vd[i] = lead[i];
        qd[r - 2] = c->t, qd[r - 1] = c->d;
        kd[r - 2] = c->s, kd[r - 1] = c->d;
        vd[r - 2] = c->s, vd[r - 1] = c->dv;
        tg_tensor *x[4];
        x[0] = rnd(t, dt, r, qd, rng, "q");
        x[1] = rnd(t, dt, r, kd, rng, "k");
        x[2] = rnd(t, dt, r, vd, rng, "v");
        x[3] = NULL;
        int nx = 3;
        if (c->mask_rank) {
            x[3] = tg_tensor_new(t, dt, c->mask_rank, c->mask_dims, "mask");
            fill_mask(x[3], c, rng);
            tg_tensor_set_requires_grad(x[3], c->mask_grad);
            nx = c->mask_grad ? 4 : 3;
        }
        double scale = 1 / sqrt((double)c->d);
        tg_tensor *fused = tg_scaled_dot_product_attention(t, x[0], x[1], x[2], x[3], c->causal, 0);
        ck_assert_msg(!tg_tape_error(t), "%s", tg_tape_error(t));
        tg_tensor *ref = composed(t, c, x[0], x[1], x[2], x[3], scale, dt);
        ck_assert_msg(!tg_tape_error(t), "%s", tg_tape_error(t));
        ck_assert_int_eq(tg_tensor_size(fused), tg_tensor_size(ref));
        for (int i = 0; i < r; i++)
            ck_assert_int_eq(tg_tensor_dim(fused, i), tg_tensor_dim(ref, i));
        size_t n = tg_tensor_size(fused);
        for (size_t i = 0; i < n; i++) {
            double a = tg_tensor_get(fused, i), b = tg_tensor_get(ref, i);
            ck_assert_msg(rel_err(a, b) < tol, "case %d %s: out[%zu] %.17g vs %.17g", _i,
                          tg_dtype_name(dt), i, a, b);
        }
        tg_tensor *rw = tg_tensor_new(t, dt, tg_tensor_ndim(fused), (int64_t[]){
            tg_tensor_dim(fused, 0), tg_tensor_dim(fused, 1), tg_tensor_dim(fused, 2),
            r == 4 ? tg_tensor_dim(fused, 3) : 1}, "R");
        tg_tensor_fill_uniform(rw, rng, -1, 1);
        size_t total = 0;
        for (int i = 0; i < nx; i++)
            total += tg_tensor_size(x[i]);
        double *g1 = malloc(total * sizeof *g1), *g2 = malloc(total * sizeof *g2);
        grads_of(t, fused, rw, x, nx, g1);
        grads_of(t, ref, rw, x, nx, g2);
        for (size_t i = 0; i < total; i++)
            ck_assert_msg(isfinite(g1[i]) && rel_err(g1[i], g2[i]) < tol,
                          "case %d %s: gradient %zu: %.17g vs %.17g", _i, tg_dtype_name(dt), i,
                          g1[i], g2[i]);
        free(g1);
        free(g2);
        tg_tape_free(t);
        tg_rng_free(rng);
    }
}
END_TEST

/* An explicit scale, and scale NAN meaning 1/√d, both give the composition's value. */
START_TEST(scale_argument)
{
    tg_rng *rng = tg_rng_new(3);
    tg_tape *t = tg_tape_new();
    int64_t dims[4] = {1, 2, 3, 4};
    tg_tensor *q = rnd(t, TG_F64, 4, dims, rng, "q"), *k = rnd(t, TG_F64, 4, dims, rng, "k");
    tg_tensor *v = rnd(t, TG_F64, 4, dims, rng, "v");
    struct sdpa_cfg c = {4, 1, 2, 3, 3, 4, 4, false, 0, {0}, 0, false};
    tg_tensor *a = tg_scaled_dot_product_attention(t, q, k, v, NULL, false, 0.7);
    tg_tensor *b = composed(t, &c, q, k, v, NULL, 0.7, TG_F64);
    tg_tensor *e = tg_scaled_dot_product_attention(t, q, k, v, NULL, false, NAN);
    tg_tensor *f = composed(t, &c, q, k, v, NULL, 0.5, TG_F64);
    ck_assert_msg(!tg_tape_error(t), "%s", tg_tape_error(t));
    for (size_t i = 0; i < tg_tensor_size(a); i++) {
        ck_assert(rel_err(tg_tensor_get(a, i), tg_tensor_get(b, i)) < 1e-14);
        ck_assert(rel_err(tg_tensor_get(e, i), tg_tensor_get(f, i)) < 1e-14);
    }
    tg_tape_free(t);
    tg_rng_free(rng);
}
END_TEST

/* An empty batch (B = 0) or no heads: an empty output, and a backward that adds nothing. */
START_TEST(empty_batch)
{
    for (int64_t h = 0; h < 2; h++) {
        tg_tape *t = tg_tape_new();
        int64_t lead = h ? 0 : 2, heads = h ? 3 : 0;
        tg_tensor *q = tg_tensor_new(t, TG_F64, 4, (int64_t[]){lead, heads, 4, 3}, "q");
        tg_tensor_set_requires_grad(q, true);
        tg_tensor *o = tg_scaled_dot_product_attention(t, q, q, q, NULL, true, 0);
        ck_assert_msg(!tg_tape_error(t), "%s", tg_tape_error(t));
        ck_assert_uint_eq(tg_tensor_size(o), 0);
        ck_assert_int_eq(tg_backward(t, tg_sum(t, o)), TG_OK);
        tg_tape_free(t);
    }
}
END_TEST

/* A row whose every logit is -inf: output exactly 0, every gradient finite, and 0 on that row
 * of q and of the mask; the other rows as the composition. */
START_TEST(fully_masked_row_gives_zero)
{
    for (tg_dtype dt = TG_F32; dt <= TG_F64; dt++) {
        tg_rng *rng = tg_rng_new(9);
        tg_tape *t = tg_tape_new();
        int64_t B = 2, H = 2, T = 4, S = 5, D = 3;
        tg_tensor *q = rnd(t, dt, 4, (int64_t[]){B, H, T, D}, rng, "q");
        tg_tensor *k = rnd(t, dt, 4, (int64_t[]){B, H, S, D}, rng, "k");
        tg_tensor *v = rnd(t, dt, 4, (int64_t[]){B, H, S, D}, rng, "v");
        tg_tensor *m = tg_tensor_new(t, dt, 4, (int64_t[]){B, H, T, S}, "mask");
        tg_tensor_fill_uniform(m, rng, -1, 1);
        tg_tensor_set_requires_grad(m, true);
        size_t row = ((1 * H + 0) * T + 2) * S; /* (b 1, h 0, t 2) */
        for (int64_t s = 0; s < S; s++)
            set_elem(m, row + (size_t)s, -INFINITY);
        tg_tensor *o = tg_scaled_dot_product_attention(t, q, k, v, m, true, 0);
        ck_assert_msg(!tg_tape_error(t), "%s", tg_tape_error(t));
        size_t orow = ((1 * H + 0) * T + 2) * D;
        for (int64_t c = 0; c < D; c++)
            ck_assert(tg_tensor_get(o, orow + (size_t)c) == 0);
        ck_assert_int_eq(tg_backward(t, tg_sum(t, tg_square(t, tg_add(t, o, q)))), TG_OK);
        tg_tensor *xs[4] = {q, k, v, m};
        for (int i = 0; i < 4; i++)
            for (size_t j = 0; j < tg_tensor_size(xs[i]); j++)
                ck_assert_msg(isfinite(tg_tensor_grad_get(xs[i], j)), "input %d[%zu]", i, j);
        for (int64_t s = 0; s < S; s++)
            ck_assert(tg_tensor_grad_get(m, row + (size_t)s) == 0);
        /* q's gradient on that row is only the direct term 2 (o + q) = 2 q */
        for (int64_t c = 0; c < D; c++) {
            double qv = tg_tensor_get(q, orow + (size_t)c);
            ck_assert(fabs(tg_tensor_grad_get(q, orow + (size_t)c) - 2 * qv) < 1e-6);
        }
        /* every row masked: all zeros, gradients zero */
        tg_tensor_fill(m, -INFINITY);
        tg_tensor *z = tg_scaled_dot_product_attention(t, q, k, v, m, false, 0);
        ck_assert_int_eq(tg_backward(t, tg_sum(t, z)), TG_OK);
        for (size_t j = 0; j < tg_tensor_size(z); j++)
            ck_assert(tg_tensor_get(z, j) == 0);
        for (int i = 0; i < 4; i++)
            for (size_t j = 0; j < tg_tensor_size(xs[i]); j++)
                ck_assert(tg_tensor_grad_get(xs[i], j) == 0);
        tg_tape_free(t);
        tg_rng_free(rng);
    }
}
END_TEST

/* B·H = 20 pairs (more than the 8 parts, several pairs per part), T and S over a tile: the
 * same bits forward and backward on 1 and 2 threads, with a broadcast mask needing a
 * gradient (summed over the pairs) and without. */
static void
sdpa_run(int threads, bool mask_grad, double *out, double *grads, size_t *n_out, size_t *n_g)
{
    tg_set_num_threads(threads);
    tg_rng *rng = tg_rng_new(77);
    tg_tape *t = tg_tape_new();
    int64_t B = 5, H = 4, T = 70, S = 66, D = 8;
    tg_tensor *q = rnd(t, TG_F32, 4, (int64_t[]){B, H, T, D}, rng, "q");
    tg_tensor *k = rnd(t, TG_F32, 4, (int64_t[]){B, H, S, D}, rng, "k");
    tg_tensor *v = rnd(t, TG_F32, 4, (int64_t[]){B, H, S, D}, rng, "v");
    tg_tensor *m = tg_tensor_new(t, TG_F32, 2, (int64_t[]){T, S}, "mask");
    tg_tensor_fill_uniform(m, rng, -1, 1);
    tg_tensor_set_requires_grad(m, mask_grad);
    tg_tensor *o = tg_scaled_dot_product_attention(t, q, k, v, m, true, 0);
    ck_assert_int_eq(tg_backward(t, tg_sum(t, tg_square(t, o))), TG_OK);
    *n_out = tg_tensor_size(o);
    for (size_t i = 0; i < *n_out; i++)
        out[i] = tg_tensor_get(o, i);
    tg_tensor *xs[4] = {q, k, v, m};
    size_t at = 0;
    for (int i = 0; i < (mask_grad ? 4 : 3); i++)
        for (size_t j = 0; j < tg_tensor_size(xs[i]); j++)
            grads[at++] = tg_tensor_grad_get(xs[i], j);
    *n_g = at;
    tg_tape_free(t);
    tg_rng_free(rng);
    tg_set_num_threads(1);
}

START_TEST(same_bits_on_one_and_two_threads)
{
    enum { NOUT = 5 * 4 * 70 * 8, NG = 5 * 4 * (70 + 66 + 66) * 8 + 70 * 66 };
    static double o1[NOUT], o2[NOUT], g1[NG], g2[NG];
    for (int mg = 0; mg < 2; mg++) {
        size_t no1, no2, ng1, ng2;
        sdpa_run(1, mg, o1, g1, &no1, &ng1);
        sdpa_run(2, mg, o2, g2, &no2, &ng2);
        ck_assert_uint_eq(no1, no2);
        ck_assert_uint_eq(ng1, ng2);
        ck_assert(memcmp(o1, o2, no1 * sizeof o1[0]) == 0);
        ck_assert(memcmp(g1, g2, ng1 * sizeof g1[0]) == 0);
    }
}
END_TEST

/* Bytes the node keeps for B = 16, H = 4, T = S = 128, d = 64: the per-row logsumexp and the
 * parts' tiles, against the B·H·T·S probabilities a stored-P node would keep. */
START_TEST(bytes_stored_per_node)
{
    for (tg_dtype dt = TG_F32; dt <= TG_F64; dt++) {
        tg_tape *t = tg_tape_new();
        int64_t dims[4] = {16, 4, 128, 64};
        tg_tensor *q = tg_tensor_new(t, dt, 4, dims, "q"), *k = tg_tensor_new(t, dt, 4, dims, "k");
        tg_tensor *v = tg_tensor_new(t, dt, 4, dims, "v");
        tg_tensor *o = tg_scaled_dot_product_attention(t, q, k, v, NULL, false, 0);
        ck_assert_msg(!tg_tape_error(t), "%s", tg_tape_error(t));
        tg_node *nd = tg_tensor_node(o);
        size_t kept = tg_node_op(nd)->scratch_size(nd);
        size_t p_bytes = (size_t)16 * 4 * 128 * 128 * tg_dtype_size(dt);
        printf("scaled_dot_product_attention %s B16 H4 T128 S128 d64: scratch %zu bytes "
               "(logsumexp %zu), storing P: %zu bytes (%.1fx)\n",
               tg_dtype_name(dt), kept, (size_t)16 * 4 * 128 * sizeof(double), p_bytes,
               (double)p_bytes / (double)kept);
        ck_assert(kept * 4 < p_bytes);
        tg_tape_free(t);
    }
}
END_TEST

/* The whole tape after forward and backward of Σ out (q, k, v needing gradients, float32,
 * B = 16, H = 4, T = S = 128, d = 64): the fused node against the composition, which keeps
 * the logits, their scaled copy, P and the gradient of each. Arena bytes, reserved in blocks:
 * the comparison is of orders, not of exact figures. */
static size_t
tape_bytes(bool fused)
{
    tg_tape *t = tg_tape_new();
    int64_t dims[4] = {16, 4, 128, 64};
    tg_tensor *x[3];
    for (int i = 0; i < 3; i++) {
        x[i] = tg_tensor_new(t, TG_F32, 4, dims, NULL);
        tg_tensor_fill(x[i], 0.01 * i);
        tg_tensor_set_requires_grad(x[i], true);
    }
    struct sdpa_cfg c = {4, 16, 4, 128, 128, 64, 64, false, 0, {0}, 0, false};
    tg_tensor *o = fused ? tg_scaled_dot_product_attention(t, x[0], x[1], x[2], NULL, false, 0)
                         : composed(t, &c, x[0], x[1], x[2], NULL, 0.125, TG_F32);
    ck_assert_int_eq(tg_backward(t, tg_sum(t, o)), TG_OK);
    size_t bytes = tg_tape_arena_bytes(t);
    tg_tape_free(t);
    return bytes;
}

START_TEST(tape_bytes_fused_and_composed)
{
    size_t f = tape_bytes(true), c = tape_bytes(false);
    printf("float32 B16 H4 T128 S128 d64, forward and backward: tape arena %zu bytes fused, "
           "%zu composed\n", f, c);
    ck_assert(2 * f < c);
}
END_TEST

/* ---- bad input ---------------------------------------------------------------------------- */

static void
expect_refusal(tg_tape *t, tg_tensor *y, const char *a, const char *b, const char *c)
{
    const char *e = tg_tape_error(t);
    ck_assert_msg(e && strstr(e, a) && (!b || strstr(e, b)) && (!c || strstr(e, c)),
                  "expected \"%s\", \"%s\", \"%s\" in: %s", a, b ? b : "", c ? c : "",
                  e ? e : "(no error)");
    ck_assert_ptr_eq(y, tg_tensor_node(y) ? NULL : y); /* the nil tensor has no node */
}

START_TEST(bad_input_refused_by_name)
{
    static const char op[] = "scaled_dot_product_attention";
    struct bad {
        int64_t q[4], k[4], v[4];
        int rank, mask_rank;
        int64_t m[4];
        tg_dtype kdt;
        const char *want1, *want2;
    } cases[] = {
        {{2, 3, 5, 4}, {2, 3, 7, 4}, {2, 3, 6, 4}, 4, 0, {0}, TG_F64, "(2x3x6x4)", "S"},
        {{2, 3, 5, 4}, {2, 2, 7, 4}, {2, 2, 7, 4}, 4, 0, {0}, TG_F64, "(2x2x7x4)", "heads"},
        {{2, 3, 5, 4}, {1, 3, 7, 4}, {1, 3, 7, 4}, 4, 0, {0}, TG_F64, "(1x3x7x4)", "batch"},
        {{2, 3, 5, 4}, {2, 3, 7, 5}, {2, 3, 7, 4}, 4, 0, {0}, TG_F64, "(2x3x7x5)", "d"},
        {{2, 3, 5, 4}, {2, 3, 7, 4}, {2, 3, 7, 4}, 4, 2, {5, 6}, TG_F64, "(5x6)", "(2x3x5x7)"},
        {{2, 3, 5, 4}, {2, 3, 7, 4}, {2, 3, 7, 4}, 4, 4, {2, 2, 5, 7}, TG_F64, "(2x2x5x7)",
         "broadcast"},
        {{2, 3, 5, 4}, {2, 3, 7, 4}, {2, 3, 7, 4}, 4, 0, {0}, TG_F32, "f32", "(2x3x7x4)"},
        {{2, 3, 0, 4}, {2, 3, 7, 4}, {2, 3, 7, 4}, 4, 0, {0}, TG_F64, "(2x3x0x4)", "length 0"},
        {{2, 3, 5, 4}, {2, 3, 0, 4}, {2, 3, 0, 4}, 4, 0, {0}, TG_F64, "(2x3x0x4)", "length 0"},
        {{2, 5, 4}, {2, 7, 4}, {2, 3, 7, 4}, 3, 0, {0}, TG_F64, "(2x3x7x4)", "rank"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct bad *c = &cases[i];
        tg_tape *t = tg_tape_new();
        tg_tensor *q = tg_tensor_new(t, TG_F64, c->rank, c->q, "q");
        tg_tensor *k = tg_tensor_new(t, c->kdt, c->rank, c->k, "k");
        int vr = c->v[3] || c->rank == 4 ? 4 : c->rank;
        tg_tensor *v = tg_tensor_new(t, TG_F64, vr, c->v, "v");
        tg_tensor *m = c->mask_rank ? tg_tensor_new(t, TG_F64, c->mask_rank, c->m, "m") : NULL;
        size_t nodes = tg_tape_node_count(t);
        tg_tensor *y = tg_scaled_dot_product_attention(t, q, k, v, m, false, 0);
        expect_refusal(t, y, op, c->want1, c->want2);
        ck_assert_uint_eq(tg_tape_node_count(t), nodes); /* nothing recorded */
        /* sticky: a valid call after it is refused too */
        tg_scaled_dot_product_attention(t, q, q, q, NULL, false, 0);
        expect_refusal(t, y, op, c->want1, c->want2);
        tg_tape_free(t);
    }
    /* an infinite scale, a NULL operand */
    tg_tape *t = tg_tape_new();
    tg_tensor *q = tg_tensor_new(t, TG_F64, 4, (int64_t[]){1, 1, 2, 2}, "q");
    tg_scaled_dot_product_attention(t, q, q, q, NULL, false, INFINITY);
    expect_refusal(t, NULL, op, "scale = inf", "(1x1x2x2)");
    tg_tape_reset(t);
    q = tg_tensor_new(t, TG_F64, 4, (int64_t[]){1, 1, 2, 2}, "q");
    tg_scaled_dot_product_attention(t, q, NULL, q, NULL, false, 0);
    expect_refusal(t, NULL, op, "k is NULL", NULL);
    tg_tape_free(t);
}
END_TEST

/* ---- the layer ---------------------------------------------------------------------------- */

START_TEST(layer_parameters_and_errors)
{
    tg_params *p = tg_params_new(TG_F64);
    tg_rng *rng = tg_rng_new(4);
    tg_multihead_attention mha;
    memset(&mha, 0, sizeof mha);
    ck_assert_int_eq(tg_multihead_attention_init(&mha, p, "att", 10, 4, rng), TG_ERR_ARG);
    ck_assert_msg(strstr(tg_params_error(p), "d = 10 is not divisible by 4 heads"), "%s",
                  tg_params_error(p));
    ck_assert_uint_eq(tg_params_count(p), 0);
    ck_assert_ptr_null(mha.in_proj_weight);
    tg_params_clear_error(p);
    ck_assert_int_eq(tg_multihead_attention_init(&mha, p, "att", 8, 2, rng), TG_OK);
    ck_assert_uint_eq(tg_params_count(p), 4);
    ck_assert_ptr_eq(tg_params_find(p, "att/in_proj_weight"), mha.in_proj_weight);
    ck_assert_ptr_eq(tg_params_find(p, "att/in_proj_bias"), mha.in_proj_bias);
    ck_assert_ptr_eq(tg_params_find(p, "att/out_proj/W"), mha.out_proj_weight);
    ck_assert_ptr_eq(tg_params_find(p, "att/out_proj/b"), mha.out_proj_bias);
    ck_assert_int_eq(tg_tensor_dim(mha.in_proj_weight, 0), 24);
    ck_assert_int_eq(tg_tensor_dim(mha.in_proj_weight, 1), 8);
    double xb = sqrt(6.0 / 32), ob = 1 / sqrt(8.0), wmax = 0;
    for (size_t i = 0; i < 24 * 8; i++) {
        double w = fabs(tg_tensor_get(mha.in_proj_weight, i));
        ck_assert(w <= xb);
        wmax = w > wmax ? w : wmax;
    }
    ck_assert(wmax > 0.8 * xb);
    for (size_t i = 0; i < 64; i++)
        ck_assert(fabs(tg_tensor_get(mha.out_proj_weight, i)) <= ob);
    for (size_t i = 0; i < 24; i++)
        ck_assert(tg_tensor_get(mha.in_proj_bias, i) == 0);
    /* a second layer of the same name: refused, nothing added */
    tg_multihead_attention again = mha;
    ck_assert_int_ne(tg_multihead_attention_init(&again, p, "att", 8, 2, rng), TG_OK);
    ck_assert_uint_eq(tg_params_count(p), 4);
    tg_params_clear_error(p);
    /* x of the wrong width */
    tg_tape *t = tg_tape_new();
    tg_tensor *x = tg_tensor_new(t, TG_F64, 3, (int64_t[]){2, 3, 6}, "x");
    tg_multihead_attention_forward(t, &mha, x, false, NULL);
    ck_assert_msg(strstr(tg_tape_error(t), "multihead_attention") &&
                      strstr(tg_tape_error(t), "(2x3x6)"),
                  "%s", tg_tape_error(t));
    tg_tape_reset(t);
    x = tg_tensor_new(t, TG_F64, 3, (int64_t[]){2, 0, 8}, "x");
    tg_multihead_attention_forward(t, &mha, x, false, NULL);
    ck_assert_msg(strstr(tg_tape_error(t), "T >= 1"), "%s", tg_tape_error(t));
    tg_tape_free(t);
    tg_rng_free(rng);
    tg_params_free(p);
}
END_TEST

/* A warm training step through the layer (causal, with a mask) allocates nothing. */
START_TEST(warm_step_allocates_nothing)
{
    tg_set_allocator(&test_counting_allocator);
    tg_rng *rng = tg_rng_new(2);
    tg_params *p = tg_params_new(TG_F32);
    tg_multihead_attention mha;
    ck_assert_int_eq(tg_multihead_attention_init(&mha, p, "att", 16, 4, rng), TG_OK);
    tg_tape *t = tg_tape_new();
    size_t before = 0;
    float xs[3 * 70 * 16], mask[70 * 70];
    for (int i = 0; i < 3 * 70 * 16; i++)
        xs[i] = (float)((i * 7) % 13) / 13.0f - 0.5f;
    for (int i = 0; i < 70 * 70; i++)
        mask[i] = (i * 5) % 11 == 0 ? -INFINITY : 0.1f * (float)(i % 3);
    for (int step = 0; step < 6; step++) {
        if (step == 1)
            before = test_alloc_count();
        tg_tape_reset(t);
        tg_tensor *x = tg_tensor_wrap(t, TG_F32, 3, (int64_t[]){3, 70, 16}, xs, "x");
        tg_tensor *m = tg_tensor_wrap(t, TG_F32, 2, (int64_t[]){70, 70}, mask, "mask");
        tg_tensor *y = tg_multihead_attention_forward(t, &mha, x, true, m);
        tg_backward(t, tg_mean(t, tg_square(t, y)));
        ck_assert_msg(!tg_tape_error(t), "step %d: %s", step, tg_tape_error(t));
        tg_params_zero_grad(p);
    }
    size_t warm = test_alloc_count() - before;
    tg_tape_free(t);
    tg_params_free(p);
    tg_rng_free(rng);
    tg_set_allocator(NULL);
    ck_assert_msg(warm == 0, "%zu allocations in 5 warm steps", warm);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("attention");
    TCase *tc = tcase_create("values");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, fused_matches_composition, 0, (int)(sizeof cfgs / sizeof cfgs[0]));
    tcase_add_test(tc, scale_argument);
    tcase_add_test(tc, empty_batch);
    tcase_add_test(tc, fully_masked_row_gives_zero);
    tcase_add_test(tc, same_bits_on_one_and_two_threads);
    tcase_add_test(tc, bytes_stored_per_node);
    tcase_add_test(tc, tape_bytes_fused_and_composed);
    suite_add_tcase(s, tc);
    tc = tcase_create("errors, layer and memory");
    tcase_add_test(tc, bad_input_refused_by_name);
    tcase_add_test(tc, layer_parameters_and_errors);
    tcase_add_test(tc, warm_step_allocates_nothing);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
