/*
 * The tape: fan-out accumulation, reuse over many steps without allocating, gradients only
 * where needed, backward semantics, and a whole MLP against finite differences.
 */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

/* ---- allocation counting through the library's allocator hook ---- */
static atomic_size_t n_allocs; /* pool workers may allocate too */
static void *count_malloc(size_t n, void *ctx) { (void)ctx; n_allocs++; return malloc(n); }
static void *count_realloc(void *p, size_t n, void *ctx) { (void)ctx; n_allocs++; return realloc(p, n); }
static void count_free(void *p, void *ctx) { (void)ctx; free(p); }
static const tg_allocator counting = {count_malloc, count_realloc, count_free, NULL};

/* y = x ⊙ x + x: dy/dx = 2x + 1, through two uses of x (fan-out) and the mul's two inputs. */
START_TEST(fan_out_accumulates)
{
    tg_tape *t = tg_tape_new();
    tg_tensor *x = tg_matrix(t, TG_F64, 1, 3, (double[]){-1.5, 0.25, 2}, "x");
    tg_tensor_set_requires_grad(x, true);
    tg_tensor *y = tg_sum(t, tg_add(t, tg_mul(t, x, x), x));
    ck_assert_int_eq(tg_backward(t, y), TG_OK);
    ck_assert_double_eq(tg_tensor_grad_get(x, 0), -2);
    ck_assert_double_eq(tg_tensor_grad_get(x, 1), 1.5);
    ck_assert_double_eq(tg_tensor_grad_get(x, 2), 5);
    tg_tape_free(t);
}
END_TEST

/* Diamond: a = tanh(x); y = Σ (a ⊙ sigmoid(a) + a). Compared with finite differences. */
static tg_tensor *
diamond(tg_tape *t, tg_tensor **in, void *ctx)
{
    tg_tensor *a = tg_tanh(t, in[0]);
    return tg_sum(t, tg_add(t, tg_mul(t, a, tg_sigmoid(t, a)), a));
}

START_TEST(diamond_matches_finite_differences)
{
    double v[6] = {-1, -0.3, 0.2, 0.7, 1.1, 2};
    struct test_input in = {2, {2, 3}, v};
    struct fd_result r = fd_check(TG_F64, diamond, NULL, &in, 1, 1e-6);
    ck_assert_msg(!r.error, "%s", r.error);
    ck_assert_msg(r.max_err < 1e-6, "error %.3g", r.max_err);
}
END_TEST

/* Gradients flow only where needed: an input without requires_grad gets no buffer, and a
 * branch that does not lead to the loss is not differentiated. */
START_TEST(gradients_only_where_needed)
{
    tg_tape *t = tg_tape_new();
    tg_params *p = tg_params_new(TG_F64);
    tg_tensor *w = tg_params_add(p, "w", 2, (int64_t[]){1, 2});
    tg_tensor_fill(w, 3);
    tg_tensor *x = tg_matrix(t, TG_F64, 1, 2, (double[]){1, 2}, "x");
    tg_tensor *unrelated = tg_sum(t, tg_mul(t, w, w)); /* recorded, not on the loss's path */
    tg_tensor *loss = tg_sum(t, tg_mul(t, w, x));
    ck_assert_int_eq(tg_backward(t, loss), TG_OK);
    ck_assert_ptr_null(tg_tensor_grad(x));
    ck_assert_double_eq(tg_tensor_grad_get(unrelated, 0), 0);
    ck_assert_double_eq(tg_tensor_grad_get(w, 0), 1); /* d/dw Σ w x = x, not 2w + x */
    ck_assert_double_eq(tg_tensor_grad_get(w, 1), 2);
    tg_params_free(p);
    tg_tape_free(t);
}
END_TEST

/* backward from an output that depends on no parameter: OK, and gradients stay zero. */
START_TEST(backward_without_parameters)
{
    tg_tape *t = tg_tape_new();
    tg_params *p = tg_params_new(TG_F64);
    tg_tensor *w = tg_params_add(p, "w", 2, (int64_t[]){1, 1});
    tg_tensor *x = tg_matrix(t, TG_F64, 1, 1, (double[]){2}, "x");
    ck_assert_int_eq(tg_backward(t, tg_sigmoid(t, x)), TG_OK);
    ck_assert_double_eq(tg_tensor_grad_get(w, 0), 0);
    tg_params_free(p);
    tg_tape_free(t);
}
END_TEST

/* backward twice on an unchanged tape: parameter gradients accumulate (documented), tape
 * tensor gradients are recomputed, and the second pass adds exactly the first's values. */
START_TEST(backward_twice_accumulates_parameters)
{
    tg_tape *t = tg_tape_new();
    tg_params *p = tg_params_new(TG_F64);
    tg_tensor *w = tg_params_add(p, "w", 2, (int64_t[]){1, 2});
    tg_tensor_write(w, (double[]){0.5, -1}, 2);
    tg_tensor *x = tg_matrix(t, TG_F64, 1, 2, (double[]){1, 2}, "x");
    tg_tensor_set_requires_grad(x, true);
    tg_tensor *loss = tg_sum(t, tg_tanh(t, tg_mul(t, w, x)));
    ck_assert_int_eq(tg_backward(t, loss), TG_OK);
    double g1 = tg_tensor_grad_get(w, 1), gx1 = tg_tensor_grad_get(x, 1);
    ck_assert_int_eq(tg_backward(t, loss), TG_OK);
    ck_assert_double_eq(tg_tensor_grad_get(w, 1), 2 * g1);
    ck_assert_double_eq(tg_tensor_grad_get(x, 1), gx1);
    tg_params_free(p);
    tg_tape_free(t);
}
END_TEST

/* Two passes on one recording, from different outputs. The second must not see the first's
 * marks: a = x ⊙ x feeds only loss1, so after backward(loss2) a's and loss1's gradients read
 * zero and x's is loss2's alone; a tensor the first pass reached is not live in the second.
 * Then a third pass from loss1 again gives its gradients back (tensors recorded after loss1,
 * such as b, are outside that pass and keep what they had). */
START_TEST(passes_from_different_outputs_are_independent)
{
    tg_tape *t = tg_tape_new();
    tg_tensor *x = tg_matrix(t, TG_F64, 1, 2, (double[]){1.5, -2}, "x");
    tg_tensor_set_requires_grad(x, true);
    tg_tensor *a = tg_mul(t, x, x);
    tg_tensor *loss1 = tg_sum(t, a);                /* d/dx = 2x */
    tg_tensor *b = tg_tanh(t, x);                   /* recorded after loss1 */
    tg_tensor *loss2 = tg_sum(t, tg_scale(t, b, 3)); /* d/dx = 3 (1 - tanh² x) */
    ck_assert_int_eq(tg_backward(t, loss1), TG_OK);
    ck_assert_double_eq(tg_tensor_grad_get(x, 0), 3);
    ck_assert_double_eq(tg_tensor_grad_get(a, 1), 1);
    ck_assert_int_eq(tg_backward(t, loss2), TG_OK);
    for (int i = 0; i < 2; i++) {
        double xi = i ? -2 : 1.5, th = tanh(xi);
        ck_assert_double_eq_tol(tg_tensor_grad_get(x, i), 3 * (1 - th * th), 1e-15);
        ck_assert_double_eq(tg_tensor_grad_get(a, i), 0);
    }
    ck_assert_double_eq(tg_tensor_grad_get(loss1, 0), 0);
    ck_assert_int_eq(tg_backward(t, loss1), TG_OK);
    ck_assert_double_eq(tg_tensor_grad_get(x, 1), -4);
    tg_tape_free(t);
}
END_TEST

/* The note's network, examples as columns, with the parameters checked against central
 * differences taken by perturbing the parameter buffer directly. */
struct mlp {
    tg_params *p;
    tg_dense l1, l2;
    double *x, *y;
    int64_t n_in, n_hidden, n_out, m;
};

static double
mlp_loss(struct mlp *net, tg_tape *t, bool backward)
{
    tg_tape_reset(t);
    tg_tensor *x = tg_matrix(t, TG_F64, net->n_in, net->m, net->x, "X");
    tg_tensor *y = tg_matrix(t, TG_F64, net->n_out, net->m, net->y, "Y");
    tg_tensor *a1 = tg_dense_forward(t, &net->l1, x);
    tg_tensor *a2 = tg_dense_forward(t, &net->l2, a1);
    tg_tensor *loss = tg_mse_half(t, a2, y, 1);
    if (backward)
        tg_backward(t, loss);
    ck_assert_msg(!tg_tape_error(t), "%s", tg_tape_error(t));
    return tg_tensor_item(loss);
}

START_TEST(mlp_matches_finite_differences)
{
    tg_rng *rng = tg_rng_new(42 + (uint64_t)_i);
    struct mlp net = {.p = tg_params_new(TG_F64), .n_in = 3, .n_hidden = 5, .n_out = 2, .m = 4};
    tg_activation acts[3] = {TG_ACT_TANH, TG_ACT_SIGMOID, TG_ACT_GELU};
    tg_dense_init(&net.l1, net.p, "layer1", net.n_in, net.n_hidden, acts[_i % 3],
                  TG_EXAMPLES_AS_COLUMNS, rng);
    tg_dense_init(&net.l2, net.p, "layer2", net.n_hidden, net.n_out, TG_ACT_SIGMOID,
                  TG_EXAMPLES_AS_COLUMNS, rng);
    tg_tensor_fill_uniform(net.l1.bias, rng, -0.5, 0.5);
    net.x = malloc(sizeof(double) * 12);
    net.y = malloc(sizeof(double) * 8);
    fill_uniform(net.x, 12, rng, -1, 1);
    fill_uniform(net.y, 8, rng, 0, 1);
    tg_tape *t = tg_tape_new();
    tg_params_zero_grad(net.p);
    mlp_loss(&net, t, true);

    double *w = tg_params_values(net.p), *g = tg_params_grads(net.p);
    size_t n = tg_params_size(net.p);
    double *analytic = malloc(n * sizeof *analytic);
    memcpy(analytic, g, n * sizeof *analytic);
    const double h = 1e-6;
    for (size_t i = 0; i < n; i++) {
        double w0 = w[i];
        w[i] = w0 + h;
        double fp = mlp_loss(&net, t, false);
        w[i] = w0 - h;
        double fm = mlp_loss(&net, t, false);
        w[i] = w0;
        double numeric = (fp - fm) / (2 * h);
        double err = fabs(numeric - analytic[i]) / fmax(1, fmax(fabs(numeric), fabs(analytic[i])));
        /* FD_TOL as in test-ops.c: errors of a correct rule are ~1e-10 here */
        ck_assert_msg(err < 1e-6, "parameter element %zu: analytic %.17g numeric %.17g", i,
                      analytic[i], numeric);
    }
    free(analytic);
    free(net.x);
    free(net.y);
    tg_tape_free(t);
    tg_params_free(net.p);
    tg_rng_free(rng);
}
END_TEST

/* A tape reused for many training steps: after the first step, no allocation at all, the
 * arena stops growing, and the loss falls. */
START_TEST(tape_reuse_allocates_nothing_when_warm)
{
    tg_set_allocator(&counting);
    tg_rng *rng = tg_rng_new(7);
    tg_params *p = tg_params_new(TG_F32);
    tg_dense l1, l2;
    tg_dense_init(&l1, p, "l1", 4, 16, TG_ACT_TANH, TG_EXAMPLES_AS_ROWS, rng);
    tg_dense_init(&l2, p, "l2", 16, 3, TG_ACT_IDENTITY, TG_EXAMPLES_AS_ROWS, rng);
    tg_sgd *opt = tg_sgd_new(p, &(tg_sgd_options){.lr = 0.1, .momentum = 0.9}, NULL);
    float x[32 * 4];
    int32_t labels[32];
    for (int i = 0; i < 32; i++) {
        labels[i] = i % 3;
        for (int j = 0; j < 4; j++)
            x[i * 4 + j] = (float)(tg_rng_normal(rng) + (j == labels[i] ? 2.0 : 0.0));
    }
    tg_tape *t = tg_tape_new();
    double first = 0, last = 0;
    size_t arena_after_first = 0, allocs_before = 0;
    for (int step = 0; step < 200; step++) {
        if (step == 1)
            allocs_before = n_allocs;
        tg_tape_reset(t);
        tg_tensor *xs = tg_tensor_wrap(t, TG_F32, 2, (int64_t[]){32, 4}, x, "X");
        tg_tensor *loss =
            tg_softmax_xent(t, tg_dense_forward(t, &l2, tg_dense_forward(t, &l1, xs)), labels, 32, 1);
        tg_backward(t, loss);
        ck_assert_msg(!tg_tape_error(t), "%s", tg_tape_error(t));
        ck_assert_int_eq(tg_sgd_step(opt), TG_OK);
        if (step == 0)
            first = tg_tensor_item(loss), arena_after_first = tg_tape_arena_bytes(t);
        last = tg_tensor_item(loss);
    }
    size_t warm_allocs = n_allocs - allocs_before;
    ck_assert_msg(warm_allocs == 0, "%zu allocations in 199 warm steps", warm_allocs);
    ck_assert_uint_eq(tg_tape_arena_bytes(t), arena_after_first);
    ck_assert_uint_eq(tg_tape_node_count(t), 5); /* 2 x (matmul, bias_act) + softmax_xent */
    ck_assert_msg(last < 0.5 * first, "loss did not fall: %g -> %g", first, last);
    tg_tape_free(t);
    tg_sgd_free(opt);
    tg_params_free(p);
    tg_rng_free(rng);
    tg_set_allocator(NULL);
}
END_TEST

/* twice(x) = 2x, dx += 2 dy; the VJP notes where its dy lives (seen[], for memory reuse). */
static const void *seen[16];
static int n_seen;

static tg_status
twice_forward(tg_node *n)
{
    const double *x = tg_tensor_data(tg_node_input(n, 0));
    double *y = tg_tensor_data(tg_node_output(n));
    for (size_t i = 0; i < tg_tensor_size(tg_node_output(n)); i++)
        y[i] = 2 * x[i];
    return TG_OK;
}

static tg_status
twice_vjp(tg_node *n)
{
    const double *dy = tg_tensor_grad(tg_node_output(n));
    double *dx = tg_tensor_grad(tg_node_input(n, 0));
    if (n_seen < 16)
        seen[n_seen++] = dy;
    for (size_t i = 0; dx && i < tg_tensor_size(tg_node_output(n)); i++)
        dx[i] += 2 * dy[i];
    return TG_OK;
}

static const tg_op twice_op = {.name = "twice", .n_inputs = 1, .forward = twice_forward,
                               .vjp = twice_vjp};

/* One step of a small CNN with a fan-out (a feeds mul, sigmoid and add) on tape t with
 * parameters w, b, d (conv weight, bias, dense weight), from x (4, 3, 32, 32). */
static tg_tensor *
drop_net(tg_tape *t, tg_tensor *x, tg_tensor *const *pr, tg_tensor **mid)
{
    tg_conv_options o = tg_conv_defaults();
    o.padding[0] = o.padding[1] = 1;
    tg_tensor *y1 = tg_relu(t, tg_conv2d(t, x, pr[0], pr[1], &o)); /* (4, 16, 32, 32): 512 KiB */
    tg_tensor *a = tg_tanh(t, y1);
    tg_tensor *z = tg_add(t, tg_mul(t, a, tg_sigmoid(t, a)), a);
    tg_tensor *h = tg_max_pool2d(t, z, (int64_t[]){2, 2}, NULL, NULL); /* (4, 16, 16, 16) */
    h = tg_matmul(t, tg_reshape(t, h, 2, (int64_t[]){4, 4096}), pr[2]);
    *mid = y1;
    return tg_softmax_xent(t, h, (const int32_t[]){0, 3, 1, 2}, 4, 1);
}

/* tg_tape_set_retain_grads(t, false): the same gradients bit for bit (parameters, the input,
 * and with two passes over one step, which accumulate in the parameters), no gradient left on
 * op outputs, their memory reused, and warm steps that allocate nothing and do not grow the
 * arena. */
START_TEST(dropped_gradients_match_retained)
{
    tg_set_allocator(&counting);
    tg_rng *rng = tg_rng_new(5);
    double xv[4 * 3 * 32 * 32];
    for (size_t i = 0; i < sizeof xv / sizeof *xv; i++)
        xv[i] = tg_rng_normal(rng);
    tg_params *p[2];
    tg_tensor *pr[2][3];
    tg_tape *t[2];
    for (int m = 0; m < 2; m++) {
        tg_rng *init = tg_rng_new(9);
        p[m] = tg_params_new(TG_F64);
        pr[m][0] = tg_params_add(p[m], "w", 4, (int64_t[]){16, 3, 3, 3});
        pr[m][1] = tg_params_add(p[m], "b", 1, (int64_t[]){16});
        pr[m][2] = tg_params_add(p[m], "d", 2, (int64_t[]){4096, 4});
        for (int k = 0; k < 3; k++)
            tg_tensor_fill_uniform(pr[m][k], init, -0.5, 0.5);
        tg_rng_free(init);
        t[m] = tg_tape_new();
    }
    tg_tape_set_retain_grads(t[1], false);
    ck_assert(tg_tape_retains_grads(t[0]) && !tg_tape_retains_grads(t[1]));
    size_t arena[2][3], allocs_warm = 0;
    for (int step = 0; step < 3; step++) {
        tg_tensor *xs[2];
        for (int m = 0; m < 2; m++) {
            if (m == 1 && step == 2)
                allocs_warm = n_allocs;
            tg_tape_reset(t[m]);
            tg_params_zero_grad(p[m]);
            tg_tensor *x = tg_tensor_wrap(t[m], TG_F64, 4, (int64_t[]){4, 3, 32, 32}, xv, "x");
            tg_tensor_set_requires_grad(x, true);
            xs[m] = x;
            tg_tensor *mid, *loss = drop_net(t[m], x, pr[m], &mid);
            for (int pass = 0; pass < 1 + (step == 1); pass++)
                ck_assert_int_eq(tg_backward(t[m], loss), TG_OK);
            if (m == 1 && step == 2)
                ck_assert_msg(n_allocs == allocs_warm, "%zu allocations in a warm step",
                              n_allocs - allocs_warm);
            arena[m][step] = tg_tape_arena_bytes(t[m]);
            ck_assert_msg(!tg_tape_error(t[m]), "%s", tg_tape_error(t[m]));
            ck_assert(tg_tensor_grad(loss) != NULL);
            ck_assert(tg_tensor_grad(x) != NULL);
            ck_assert(m == 1 ? tg_tensor_grad(mid) == NULL : tg_tensor_grad(mid) != NULL);
            if (m == 0)
                continue;
            ck_assert(memcmp(tg_tensor_grad(xs[0]), tg_tensor_grad(xs[1]), sizeof xv) == 0);
            for (int k = 0; k < 3; k++) {
                const double *g0 = tg_tensor_grad(pr[0][k]), *g1 = tg_tensor_grad(pr[1][k]);
                ck_assert(memcmp(g0, g1, tg_tensor_size(pr[0][k]) * sizeof *g0) == 0);
            }
        }
    }
    for (int m = 0; m < 2; m++)
        ck_assert_uint_eq(arena[m][2], arena[m][1]);
    /* Memory reuse, seen by the VJPs themselves: along a chain of 12 ops, each VJP notes the
     * address of the gradient it reads. Kept, they are 12 buffers; dropped, each gradient takes
     * the block its consumer's just gave back, so two buffers alternate. */
    for (int m = 0; m < 2; m++) {
        tg_tape *u = tg_tape_new();
        tg_tape_set_retain_grads(u, m == 0);
        tg_tensor *z = tg_tensor_new(u, TG_F64, 2, (int64_t[]){64, 64}, "z");
        tg_tensor_set_requires_grad(z, true);
        n_seen = 0;
        for (int i = 0; i < 12; i++)
            z = tg_custom(u, &twice_op, &z, 1, NULL);
        ck_assert_int_eq(tg_backward(u, tg_sum(u, z)), TG_OK);
        ck_assert_int_eq(n_seen, 12);
        size_t distinct = 0;
        for (int i = 0; i < n_seen; i++) {
            bool again = false;
            for (int j = 0; j < i; j++)
                again |= seen[j] == seen[i];
            distinct += !again;
        }
        ck_assert_uint_eq(distinct, m == 0 ? 12 : 2);
        tg_tape_free(u);
    }
    for (int m = 0; m < 2; m++) {
        tg_tape_free(t[m]);
        tg_params_free(p[m]);
    }
    tg_rng_free(rng);
    tg_set_allocator(NULL);
}
END_TEST

/* A custom op is recorded and differentiated like a built-in: cube(x) = x³, dx += 3x² dy. */
static tg_status
cube_forward(tg_node *n)
{
    tg_tensor *x = tg_node_input(n, 0), *y = tg_node_output(n);
    const double *xv = tg_tensor_data(x);
    double *yv = tg_tensor_data(y);
    for (size_t i = 0; i < tg_tensor_size(y); i++)
        yv[i] = xv[i] * xv[i] * xv[i];
    return TG_OK;
}

static tg_status
cube_vjp(tg_node *n)
{
    tg_tensor *x = tg_node_input(n, 0), *y = tg_node_output(n);
    const double *xv = tg_tensor_data(x), *dy = tg_tensor_grad(y);
    double *dx = tg_tensor_grad(x);
    if (dx)
        for (size_t i = 0; i < tg_tensor_size(y); i++)
            dx[i] += 3 * xv[i] * xv[i] * dy[i];
    return TG_OK;
}

static const tg_op cube = {"cube", 1, NULL, cube_forward, cube_vjp, NULL};

static tg_tensor *
cube_graph(tg_tape *t, tg_tensor **in, void *ctx)
{
    return tg_sum(t, tg_custom(t, &cube, in, 1, NULL));
}

START_TEST(custom_op_differentiates)
{
    double v[4] = {-2, -0.5, 0.3, 1.7};
    struct test_input in = {2, {2, 2}, v};
    struct fd_result r = fd_check(TG_F64, cube_graph, NULL, &in, 1, 1e-6);
    ck_assert_msg(!r.error, "%s", r.error);
    ck_assert_msg(r.max_err < 1e-6, "error %.3g", r.max_err);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("tape");
    TCase *tc = tcase_create("fan-out");
    tcase_add_test(tc, fan_out_accumulates);
    tcase_add_test(tc, diamond_matches_finite_differences);
    suite_add_tcase(s, tc);

    tc = tcase_create("backward");
    tcase_add_test(tc, gradients_only_where_needed);
    tcase_add_test(tc, backward_without_parameters);
    tcase_add_test(tc, backward_twice_accumulates_parameters);
    tcase_add_test(tc, passes_from_different_outputs_are_independent);
    tcase_add_test(tc, custom_op_differentiates);
    suite_add_tcase(s, tc);

    tc = tcase_create("whole MLP vs finite differences");
    tcase_add_loop_test(tc, mlp_matches_finite_differences, 0, 6);
    suite_add_tcase(s, tc);

    tc = tcase_create("tape reuse");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, tape_reuse_allocates_nothing_when_warm);
    tcase_add_test(tc, dropped_gradients_match_retained);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
