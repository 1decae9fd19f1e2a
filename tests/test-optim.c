/* Optimizer update rules against values computed by hand for a few steps. */
#include <math.h>

#include "common.h"

/* One parameter w = [1, -2] with a constant gradient g = [0.5, 0.25] set by hand each step. */
static void
set_grad(tg_params *p, double g0, double g1)
{
    double *g = tg_params_grads(p);
    g[0] = g0, g[1] = g1;
}

START_TEST(sgd_plain)
{
    tg_params *p = tg_params_new(TG_F64);
    tg_tensor *w = tg_params_add(p, "w", 1, (int64_t[]){2});
    tg_tensor_write(w, (double[]){1, -2}, 2);
    tg_sgd *s = tg_sgd_new(p, &(tg_sgd_options){.lr = 0.1}, NULL);
    set_grad(p, 0.5, 0.25);
    tg_sgd_step(s);
    /* w ← w − η g = [1 − 0.05, −2 − 0.025] */
    ck_assert_double_eq_tol(tg_tensor_get(w, 0), 0.95, 1e-15);
    ck_assert_double_eq_tol(tg_tensor_get(w, 1), -2.025, 1e-15);
    ck_assert_double_eq(tg_tensor_grad_get(w, 0), 0); /* zeroed after the step */
    tg_sgd_free(s);
    tg_params_free(p);
}
END_TEST

START_TEST(sgd_momentum_weight_decay)
{
    tg_params *p = tg_params_new(TG_F64);
    tg_tensor *w = tg_params_add(p, "w", 1, (int64_t[]){2});
    tg_tensor_write(w, (double[]){1, -2}, 2);
    tg_sgd *s = tg_sgd_new(p, &(tg_sgd_options){.lr = 0.1, .momentum = 0.9, .weight_decay = 0.01},
                           NULL);
    /* step 1: g = 0.5 + 0.01·1 = 0.51; v = 0.51; w = 1 − 0.051 = 0.949
     * step 2: g = 0.5 + 0.01·0.949 = 0.50949; v = 0.9·0.51 + 0.50949 = 0.96849;
     *         w = 0.949 − 0.096849 = 0.852151 */
    set_grad(p, 0.5, 0.25);
    tg_sgd_step(s);
    ck_assert_double_eq_tol(tg_tensor_get(w, 0), 0.949, 1e-15);
    set_grad(p, 0.5, 0.25);
    tg_sgd_step(s);
    ck_assert_double_eq_tol(tg_tensor_get(w, 0), 0.852151, 1e-15);
    tg_sgd_free(s);
    tg_params_free(p);
}
END_TEST

START_TEST(sgd_nesterov)
{
    tg_params *p = tg_params_new(TG_F64);
    tg_tensor *w = tg_params_add(p, "w", 1, (int64_t[]){2});
    tg_tensor_write(w, (double[]){1, -2}, 2);
    tg_sgd *s = tg_sgd_new(p, &(tg_sgd_options){.lr = 0.1, .momentum = 0.9, .nesterov = true},
                           NULL);
    /* step 1: v = 0.5; w = 1 − 0.1 (0.5 + 0.9·0.5) = 0.905
     * step 2: v = 0.45 + 0.5 = 0.95; w = 0.905 − 0.1 (0.5 + 0.855) = 0.7695 */
    set_grad(p, 0.5, 0.25);
    tg_sgd_step(s);
    ck_assert_double_eq_tol(tg_tensor_get(w, 0), 0.905, 1e-15);
    set_grad(p, 0.5, 0.25);
    tg_sgd_step(s);
    ck_assert_double_eq_tol(tg_tensor_get(w, 0), 0.7695, 1e-15);
    tg_sgd_free(s);
    tg_params_free(p);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("optim");
    TCase *tc = tcase_create("sgd");
    tcase_add_test(tc, sgd_plain);
    tcase_add_test(tc, sgd_momentum_weight_decay);
    tcase_add_test(tc, sgd_nesterov);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
