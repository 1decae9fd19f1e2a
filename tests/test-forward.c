/*
 * Forward mode (tg_jvp): a network's J·u against central differences and against the VJP,
 * parameters as seeds, what a pass leaves behind, warm passes without allocation, and every
 * refusal (bad seeds, a custom op without a JVP rule, a non-finite tangent); and the
 * refusals of tg_grad and tg_hvp's treatment of its direction. Every op's own rules are
 * checked in test-ops (jvp_matches_central_differences, hvp_matches_differences_of_the_
 * gradient).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

/* A two-layer MLP, examples as rows: L = mean((tanh(X·W1ᵀ + b1)·W2ᵀ + b2 − Y)²) */
struct mlp {
    tg_params *p;
    tg_dense l1, l2;
};

static void
mlp_init(struct mlp *m, tg_dtype dt, uint64_t seed)
{
    tg_rng *r = tg_rng_new(seed);
    m->p = tg_params_new(dt);
    ck_assert_int_eq(tg_dense_init(&m->l1, m->p, "l1", 5, 7, TG_ACT_TANH, TG_EXAMPLES_AS_ROWS, r), TG_OK);
    ck_assert_int_eq(tg_dense_init(&m->l2, m->p, "l2", 7, 3, TG_ACT_IDENTITY, TG_EXAMPLES_AS_ROWS, r), TG_OK);
    for (size_t i = 0; i < tg_params_count(m->p); i++) /* nonzero biases */
        tg_tensor_fill_uniform(tg_params_get(m->p, i), r, -0.8, 0.8);
    tg_rng_free(r);
}

static tg_tensor *
mlp_loss(tg_tape *t, const struct mlp *m, tg_tensor *x, tg_tensor *y)
{
    tg_tensor *h = tg_dense_forward(t, &m->l1, x);
    return tg_mse(t, tg_dense_forward(t, &m->l2, h), y);
}

static double
scalar(const void *v, tg_dtype dt)
{
    return !v ? 0 : dt == TG_F32 ? *(const float *)v : *(const double *)v;
}

/* d L / d W1 along U (a random direction of W1's shape) and along an input direction: the
 * JVP against central differences (float64, h = 1e-6: error ~1e-9 for these O(1) values, bar
 * 1e-6 as in test-ops) and against ⟨∇L, U⟩ (both rules, 1e-12 relative: a few hundred
 * roundings of ε = 1.1e-16 on terms of size S). */
START_TEST(mlp_jvp_matches_differences_and_vjp)
{
    struct mlp m;
    mlp_init(&m, TG_F64, 3);
    tg_tensor *w1 = tg_params_find(m.p, "l1/W");
    tg_rng *r = tg_rng_new(9);
    tg_tape *t = tg_tape_new();
    tg_tensor *x = tg_matrix(t, TG_F64, 4, 5, NULL, "X"), *y = tg_matrix(t, TG_F64, 4, 3, NULL, "Y");
    tg_tensor *u = tg_matrix(t, TG_F64, 7, 5, NULL, "U"), *ux = tg_matrix(t, TG_F64, 4, 5, NULL, "UX");
    tg_tensor_fill_uniform(x, r, -1, 1);
    tg_tensor_fill_uniform(y, r, -1, 1);
    tg_tensor_fill_normal(u, r, 0, 1);
    tg_tensor_fill_normal(ux, r, 0, 1);
    tg_tensor_set_requires_grad(x, true);
    tg_tensor *loss = mlp_loss(t, &m, x, y);
    tg_tensor *seeds[2] = {w1, x}, *dirs[2] = {u, ux};
    ck_assert_int_eq(tg_jvp(t, 2, seeds, dirs), TG_OK);
    double jvp = scalar(tg_tensor_tangent(loss), TG_F64);
    ck_assert_ptr_null(tg_tensor_tangent(w1)); /* a parameter's seed is not kept */
    ck_assert_ptr_eq(tg_tensor_tangent(x), tg_tensor_data(ux)); /* an input's is borrowed */

    /* ⟨∇L, (U, UX)⟩ from backward on the same recording */
    tg_params_zero_grad(m.p);
    ck_assert_int_eq(tg_backward(t, loss), TG_OK);
    double adj = 0, S = 0;
    for (size_t i = 0; i < 35; i++) {
        double term = tg_tensor_grad_get(w1, i) * tg_tensor_get(u, i);
        adj += term, S += fabs(term);
    }
    for (size_t i = 0; i < 20; i++) {
        double term = tg_tensor_grad_get(x, i) * tg_tensor_get(ux, i);
        adj += term, S += fabs(term);
    }
    ck_assert_msg(fabs(jvp - adj) <= 1e-12 * S, "JVP %.17g, VJP %.17g", jvp, adj);

    /* central differences along (U, UX) */
    double w0[35], f[2];
    tg_tensor_read(w1, w0, 35);
    for (int side = 0; side < 2; side++) {
        double h = side ? -1e-6 : 1e-6, wv[35], xp[20], yv[12];
        for (size_t i = 0; i < 35; i++)
            wv[i] = w0[i] + h * tg_tensor_get(u, i);
        for (size_t i = 0; i < 20; i++)
            xp[i] = tg_tensor_get(x, i) + h * tg_tensor_get(ux, i);
        tg_tensor_read(y, yv, 12);
        tg_tensor_write(w1, wv, 35);
        tg_tape *tf = tg_tape_new();
        f[side] = tg_tensor_item(mlp_loss(tf, &m, tg_matrix(tf, TG_F64, 4, 5, xp, "X"),
                                          tg_matrix(tf, TG_F64, 4, 3, yv, "Y")));
        tg_tape_free(tf);
    }
    tg_tensor_write(w1, w0, 35);
    double numeric = (f[0] - f[1]) / 2e-6;
    ck_assert_msg(fabs(jvp - numeric) <= 1e-6 * fmax(1, fabs(numeric)),
                  "JVP %.17g, differences %.17g", jvp, numeric);

    /* a reset starts a new generation: no tangents */
    tg_tape_reset(t);
    tg_tensor *x2 = tg_matrix(t, TG_F64, 4, 5, NULL, "X");
    ck_assert_ptr_null(tg_tensor_tangent(x2));
    tg_tape_free(t);
    tg_rng_free(r);
    tg_params_free(m.p);
}
END_TEST

/* Only what lies downstream of a seed gets a tangent; a pass replaces the one before it. */
START_TEST(tangents_only_downstream)
{
    for (tg_dtype dt = TG_F32; dt <= TG_F64; dt++) {
        tg_tape *t = tg_tape_new();
        tg_tensor *a = tg_matrix(t, dt, 2, 3, NULL, "a"), *b = tg_matrix(t, dt, 2, 3, NULL, "b");
        tg_tensor_fill(a, 0.5), tg_tensor_fill(b, -2);
        tg_tensor *ea = tg_exp(t, a), *sb = tg_square(t, b), *y = tg_sum(t, tg_mul(t, ea, sb));
        tg_tensor *da = tg_matrix(t, dt, 2, 3, NULL, "da");
        tg_tensor_fill(da, 1);
        ck_assert_int_eq(tg_jvp(t, 1, &a, &da), TG_OK);
        ck_assert_ptr_nonnull(tg_tensor_tangent(ea));
        ck_assert_ptr_null(tg_tensor_tangent(sb)); /* no seed reaches b's branch */
        /* ẏ = Σ e^a ⊙ b² ⊙ 1 = 6 · e^0.5 · 4 */
        ck_assert_double_eq_tol(scalar(tg_tensor_tangent(y), dt), 24 * exp(0.5), 1e-4);
        ck_assert_int_eq(tg_jvp(t, 1, &b, &da), TG_OK); /* now along b */
        ck_assert_ptr_null(tg_tensor_tangent(ea));
        /* ẏ = Σ e^a ⊙ 2b = 6 · e^0.5 · (−4) */
        ck_assert_double_eq_tol(scalar(tg_tensor_tangent(y), dt), -24 * exp(0.5), 1e-4);
        ck_assert_int_eq(tg_jvp(t, 0, NULL, NULL), TG_OK); /* no seeds: everything zero */
        ck_assert_ptr_null(tg_tensor_tangent(y));
        tg_tape_free(t);
    }
}
END_TEST

/* A repeated pass, on the same recording or on the step recorded again after a reset,
 * allocates nothing. */
START_TEST(warm_jvp_allocates_nothing)
{
    struct mlp m;
    mlp_init(&m, TG_F32, 4);
    tg_tensor *w1 = tg_params_find(m.p, "l1/W");
    float xv[20], yv[12], uv[35];
    for (int i = 0; i < 35; i++)
        uv[i] = (float)((i * 5) % 11) / 11.0f - 0.5f;
    for (int i = 0; i < 20; i++)
        xv[i] = (float)((i * 3) % 7) / 7.0f - 0.5f;
    for (int i = 0; i < 12; i++)
        yv[i] = (float)(i % 5) / 5.0f;
    tg_set_allocator(&test_counting_allocator);
    tg_tape *t = tg_tape_new();
    size_t before = 0;
    double first = 0;
    for (int step = 0; step < 4; step++) {
        if (step == 1)
            before = test_alloc_count();
        tg_tape_reset(t);
        tg_tensor *x = tg_tensor_wrap(t, TG_F32, 2, (int64_t[]){4, 5}, xv, "X");
        tg_tensor *y = tg_tensor_wrap(t, TG_F32, 2, (int64_t[]){4, 3}, yv, "Y");
        tg_tensor *u = tg_tensor_wrap(t, TG_F32, 2, (int64_t[]){7, 5}, uv, "U");
        tg_tensor *loss = mlp_loss(t, &m, x, y);
        for (int pass = 0; pass < 2; pass++) {
            ck_assert_int_eq(tg_jvp(t, 1, &w1, &u), TG_OK);
            double v = scalar(tg_tensor_tangent(loss), TG_F32);
            if (step == 0 && pass == 0)
                first = v;
            ck_assert_double_eq(v, first); /* the same bits every time */
        }
    }
    size_t warm = test_alloc_count() - before;
    tg_tape_free(t);
    tg_set_allocator(NULL);
    tg_params_free(m.p);
    ck_assert_msg(warm == 0, "%zu allocations in 3 warm steps of 2 passes", warm);
}
END_TEST

/* cube: y = x³, with and without a JVP rule */
static tg_status
cube_forward(tg_node *n)
{
    const double *x = tg_tensor_data(tg_node_input(n, 0));
    double *y = tg_tensor_data(tg_node_output(n));
    for (size_t i = 0; i < tg_tensor_size(tg_node_output(n)); i++)
        y[i] = x[i] * x[i] * x[i];
    return TG_OK;
}

static tg_status
cube_vjp(tg_node *n)
{
    const double *x = tg_tensor_data(tg_node_input(n, 0));
    const double *dy = tg_tensor_grad(tg_node_output(n));
    double *dx = tg_tensor_grad(tg_node_input(n, 0));
    for (size_t i = 0; dx && i < tg_tensor_size(tg_node_output(n)); i++)
        dx[i] += 3 * x[i] * x[i] * dy[i];
    return TG_OK;
}

/* ẏ = 3x² ⊙ ẋ */
static tg_status
cube_jvp(tg_node *n)
{
    const double *x = tg_tensor_data(tg_node_input(n, 0));
    const double *tx = tg_tensor_tangent(tg_node_input(n, 0));
    double *ty = tg_tensor_tangent(tg_node_output(n));
    for (size_t i = 0; i < tg_tensor_size(tg_node_output(n)); i++)
        ty[i] = 3 * x[i] * x[i] * tx[i];
    return TG_OK;
}

static const tg_op cube_no_jvp = {"cube", 1, NULL, cube_forward, cube_vjp, NULL, NULL, NULL, NULL};
static const tg_op cube = {.name = "cube", .n_inputs = 1, .forward = cube_forward,
                           .vjp = cube_vjp, .jvp = cube_jvp};

START_TEST(custom_op_jvp)
{
    tg_tape *t = tg_tape_new();
    tg_tensor *x = tg_matrix(t, TG_F64, 1, 3, (double[]){1, -2, 0.5}, "x");
    tg_tensor *d = tg_matrix(t, TG_F64, 1, 3, (double[]){1, 1, 2}, "dx");
    tg_tensor *y = tg_custom(t, &cube, &x, 1, NULL);
    ck_assert_int_eq(tg_jvp(t, 1, &x, &d), TG_OK);
    const double *ty = tg_tensor_tangent(y);
    ck_assert_double_eq(ty[0], 3);
    ck_assert_double_eq(ty[1], 12);
    ck_assert_double_eq(ty[2], 1.5);
    /* without a rule: refused by name, once a seed reaches it */
    tg_tensor *z = tg_custom(t, &cube_no_jvp, &y, 1, NULL);
    (void)z;
    tg_tensor *other = tg_matrix(t, TG_F64, 1, 1, (double[]){1}, "other");
    tg_tensor *do_ = tg_matrix(t, TG_F64, 1, 1, (double[]){1}, "d_other");
    ck_assert_int_eq(tg_jvp(t, 1, &other, &do_), TG_OK); /* does not reach the cube */
    ck_assert_int_eq(tg_jvp(t, 1, &x, &d), TG_ERR_OP);
    ASSERT_TAPE_ERROR(t, TG_ERR_OP, "jvp", "cube", "node #1", "no forward-mode rule");
    tg_tape_free(t);
}
END_TEST

/* Bad seeds are refused with a sticky error naming what is wrong; nothing runs. */
START_TEST(bad_seeds_refused)
{
    struct {
        const char *want[3];
        tg_status status;
    } cases[] = {
        {{"jvp", "output of", "tanh"}, TG_ERR_ARG},
        {{"jvp", "tangent", "(3x2)"}, TG_ERR_SHAPE},
        {{"jvp", "f32", "f64"}, TG_ERR_SHAPE},
        {{"jvp", "seeded twice"}, TG_ERR_ARG},
        {{"jvp", "no tangents"}, TG_ERR_ARG},
        {{"jvp", "stale"}, TG_ERR_ARG},
    };
    for (int c = 0; c < 6; c++) {
        tg_tape *t = tg_tape_new();
        tg_tensor *x = tg_matrix(t, TG_F64, 2, 3, NULL, "x");
        tg_tensor *y = tg_tanh(t, x);
        tg_tensor *good = tg_matrix(t, TG_F64, 2, 3, NULL, "good");
        tg_tensor *seeds[2] = {x, x}, *dirs[2] = {good, good};
        tg_status s;
        switch (c) {
        case 0: s = tg_jvp(t, 1, &y, &good); break;
        case 1: dirs[0] = tg_matrix(t, TG_F64, 3, 2, NULL, "wrong"); s = tg_jvp(t, 1, seeds, dirs); break;
        case 2: dirs[0] = tg_matrix(t, TG_F32, 2, 3, NULL, "f32"); s = tg_jvp(t, 1, seeds, dirs); break;
        case 3: s = tg_jvp(t, 2, seeds, dirs); break;
        case 4: s = tg_jvp(t, 1, seeds, NULL); break;
        default: {
            tg_tape *t2 = tg_tape_new();
            tg_tensor *old = tg_matrix(t2, TG_F64, 2, 3, NULL, "old");
            for (int r = 0; r < 20; r++)
                tg_tape_reset(t2);
            tg_tensor *x2 = tg_matrix(t2, TG_F64, 2, 3, NULL, "x2");
            tg_tanh(t2, x2);
            s = tg_jvp(t2, 1, &x2, &old);
            ASSERT_TAPE_ERROR(t2, TG_ERR_ARG, "jvp", "stale");
            ck_assert_int_eq(s, TG_ERR_ARG);
            tg_tape_free(t2);
            tg_tape_free(t);
            continue;
        }
        }
        ck_assert_int_eq(s, cases[c].status);
        ASSERT_TAPE_ERROR(t, cases[c].status, cases[c].want[0], cases[c].want[1],
                          cases[c].want[2] ? cases[c].want[2] : cases[c].want[0]);
        ck_assert_ptr_null(tg_tensor_tangent(y));
        tg_tape_free(t);
    }
    ck_assert_int_eq(tg_jvp(NULL, 0, NULL, NULL), TG_ERR_ARG);
}
END_TEST

/* With finite tracing on, a non-finite tangent names the node that made it. */
START_TEST(nonfinite_tangent_named)
{
    tg_tape *t = tg_tape_new();
    tg_tape_set_check_finite(t, true);
    tg_tensor *x = tg_matrix(t, TG_F64, 1, 2, (double[]){0, 1}, "x");
    tg_tensor *d = tg_matrix(t, TG_F64, 1, 2, (double[]){1, 1}, "d");
    tg_sqrt(t, x); /* d√x/dx = ∞ at 0 */
    ck_assert_int_eq(tg_jvp(t, 1, &x, &d), TG_ERR_NONFINITE);
    ASSERT_TAPE_ERROR(t, TG_ERR_NONFINITE, "sqrt", "node #0", "tangent");
    tg_tape_free(t);
}
END_TEST

/* tg_grad's refusals: a non-scalar output without a seed, a seed of another shape, an op
 * without a differentiable VJP (named); each leaves the nil tensor in grads. */
START_TEST(grad_refusals)
{
    tg_tape *t = tg_tape_new();
    tg_tensor *x = tg_matrix(t, TG_F64, 2, 3, (double[]){1, 2, 3, 4, 5, 6}, "x");
    tg_tensor_set_requires_grad(x, true);
    tg_tensor *y = tg_tanh(t, x), *g = NULL;
    ck_assert_int_eq(tg_grad(t, y, NULL, 1, &x, &g), TG_ERR_NOT_SCALAR);
    ASSERT_TAPE_ERROR(t, TG_ERR_NOT_SCALAR, "grad", "(2x3)", "seed");
    ck_assert_int_eq(tg_tape_status(t), TG_ERR_NOT_SCALAR);
    tg_tape_free(t);

    t = tg_tape_new();
    x = tg_matrix(t, TG_F64, 2, 3, (double[]){1, 2, 3, 4, 5, 6}, "x");
    tg_tensor_set_requires_grad(x, true);
    y = tg_tanh(t, x);
    tg_tensor *seed = tg_matrix(t, TG_F64, 3, 2, NULL, "seed");
    ck_assert_int_eq(tg_grad(t, y, seed, 1, &x, &g), TG_ERR_SHAPE);
    ASSERT_TAPE_ERROR(t, TG_ERR_SHAPE, "grad", "seed", "(3x2)", "(2x3)");
    tg_tape_free(t);

    t = tg_tape_new();
    x = tg_matrix(t, TG_F64, 1, 3, (double[]){1, -2, 0.5}, "x");
    tg_tensor_set_requires_grad(x, true);
    tg_tensor *c = tg_custom(t, &cube, &x, 1, NULL); /* a JVP, no vjp_graph */
    ck_assert_int_eq(tg_grad(t, tg_sum(t, c), NULL, 1, &x, &g), TG_ERR_OP);
    ASSERT_TAPE_ERROR(t, TG_ERR_OP, "grad", "cube", "node #0", "no differentiable VJP");
    ck_assert_int_eq(tg_tensor_ndim(g), 0); /* the nil tensor */
    tg_tape_free(t);
}
END_TEST

/* H·v with v the input itself (v depends on x): reverse-over-reverse must hold v constant and
 * give the same H·x as forward-over-reverse, not H·x + ∇f. f = Σ x³: H = diag(6x), H·x = 6x². */
START_TEST(hvp_direction_is_a_constant)
{
    for (int m = 0; m < 2; m++) {
        tg_tape *t = tg_tape_new();
        tg_tensor *x = tg_matrix(t, TG_F64, 1, 3, (double[]){1, -2, 0.5}, "x"), *hv = NULL;
        tg_tensor_set_requires_grad(x, true);
        tg_tensor *f = tg_sum(t, tg_pow(t, x, 3));
        ck_assert_int_eq(tg_hvp(t, f, 1, &x, &x, (tg_hvp_mode)m, &hv), TG_OK);
        const double want[3] = {6, 24, 1.5};
        for (int i = 0; i < 3; i++)
            ck_assert_double_eq_tol(tg_tensor_get(hv, (size_t)i), want[i], 1e-12);
        tg_tape_free(t);
    }
}
END_TEST

static Suite *
forward_suite(void)
{
    Suite *s = suite_create("forward");
    TCase *tc = tcase_create("jvp");
    tcase_add_test(tc, mlp_jvp_matches_differences_and_vjp);
    tcase_add_test(tc, tangents_only_downstream);
    tcase_add_test(tc, warm_jvp_allocates_nothing);
    tcase_add_test(tc, custom_op_jvp);
    tcase_add_test(tc, bad_seeds_refused);
    tcase_add_test(tc, nonfinite_tangent_named);
    tcase_add_test(tc, grad_refusals);
    tcase_add_test(tc, hvp_direction_is_a_constant);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    return run_suite(forward_suite());
}
