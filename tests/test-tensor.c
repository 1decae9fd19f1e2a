/* Tensors, parameter sets and the seeded generator. */
#include <math.h>
#include <string.h>

#include "common.h"

START_TEST(create_read_fill)
{
    tg_tape *t = tg_tape_new();
    double v[6] = {1, 2, 3, 4, 5, 6};
    tg_tensor *x = tg_matrix(t, TG_F32, 2, 3, (float[]){1, 2, 3, 4, 5, 6}, "x");
    ck_assert_int_eq(tg_tensor_dtype(x), TG_F32);
    ck_assert_int_eq(tg_tensor_ndim(x), 2);
    ck_assert_int_eq(tg_tensor_dim(x, 0), 2);
    ck_assert_int_eq(tg_tensor_dim(x, 1), 3);
    ck_assert_int_eq(tg_tensor_dim(x, 2), 0);
    ck_assert_uint_eq(tg_tensor_size(x), 6);
    ck_assert_str_eq(tg_tensor_name(x), "x");
    char buf[32];
    ck_assert_str_eq(tg_tensor_shape_string(x, buf, sizeof buf), "(2x3)");
    double out[6];
    ck_assert_int_eq(tg_tensor_read(x, out, 6), TG_OK);
    ck_assert_mem_eq(out, v, sizeof v);
    ck_assert_int_eq(tg_tensor_read(x, out, 5), TG_ERR_ARG); /* wrong count */
    ck_assert_int_eq(tg_tensor_fill(x, 0.5), TG_OK);
    ck_assert_double_eq(tg_tensor_get(x, 5), 0.5);
    ck_assert(isnan(tg_tensor_get(x, 6)));
    ck_assert(isnan(tg_tensor_item(x)));
    /* 4-D tensors exist; elementwise ops work on them */
    tg_tensor *q = tg_tensor_new(t, TG_F64, 4, (int64_t[]){2, 1, 3, 2}, "q");
    tg_tensor_fill(q, 1);
    tg_tensor *r = tg_add(t, q, tg_tensor_new(t, TG_F64, 2, (int64_t[]){3, 1}, NULL));
    ck_assert_int_eq(tg_tensor_ndim(r), 4);
    ck_assert_double_eq(tg_tensor_item(tg_sum(t, r)), 12);
    /* wrap uses the caller's memory */
    double mine[2] = {7, 8};
    tg_tensor *w = tg_tensor_wrap(t, TG_F64, 1, (int64_t[]){2}, mine, NULL);
    mine[1] = 9;
    ck_assert_double_eq(tg_tensor_get(w, 1), 9);
    ck_assert_ptr_null(tg_tape_error(t));
    tg_tape_free(t);
}
END_TEST

START_TEST(rng_is_reproducible)
{
    tg_rng *a = tg_rng_new(123), *b = tg_rng_new(123), *c = tg_rng_new(124);
    bool differs = false;
    for (int i = 0; i < 1000; i++) {
        uint64_t x = tg_rng_u64(a), y = tg_rng_u64(b), z = tg_rng_u64(c);
        ck_assert_uint_eq(x, y);
        differs |= x != z;
    }
    ck_assert(differs);
    /* uniform in [0, 1) with the right mean; normal with mean 0 and variance 1: over 10^5
     * draws the standard error of the mean is 0.003, so 0.02 is a 6-sigma bound. */
    double su = 0, sn = 0, sn2 = 0;
    for (int i = 0; i < 100000; i++) {
        double u = tg_rng_uniform(a), n = tg_rng_normal(a);
        ck_assert(u >= 0 && u < 1);
        su += u, sn += n, sn2 += n * n;
    }
    ck_assert_double_eq_tol(su / 1e5, 0.5, 0.02);
    ck_assert_double_eq_tol(sn / 1e5, 0, 0.02);
    ck_assert_double_eq_tol(sn2 / 1e5, 1, 0.02);
    tg_rng_free(a), tg_rng_free(b), tg_rng_free(c);
}
END_TEST

START_TEST(params_are_contiguous)
{
    tg_params *p = tg_params_new(TG_F64);
    tg_tensor *w1 = tg_params_add(p, "layer1/W", 2, (int64_t[]){3, 2});
    tg_tensor *b1 = tg_params_add(p, "layer1/b", 2, (int64_t[]){3, 1});
    tg_tensor *w2 = tg_params_add(p, "layer2/W", 2, (int64_t[]){1, 3});
    ck_assert_uint_eq(tg_params_count(p), 3);
    ck_assert_uint_eq(tg_params_size(p), 12);
    double *v = tg_params_values(p), *g = tg_params_grads(p);
    ck_assert_ptr_eq(tg_tensor_data(w1), v);
    ck_assert_ptr_eq(tg_tensor_data(b1), v + 6);
    ck_assert_ptr_eq(tg_tensor_data(w2), v + 9);
    ck_assert_ptr_eq(tg_tensor_grad(w2), g + 9);
    ck_assert_ptr_eq(tg_params_find(p, "layer1/b"), b1);
    ck_assert_ptr_null(tg_params_find(p, "nope"));
    ck_assert_ptr_eq(tg_params_get(p, 2), w2);
    ck_assert_ptr_null(tg_params_get(p, 3));
    ck_assert(tg_tensor_is_param(w1));
    for (int i = 0; i < 12; i++)
        ck_assert_double_eq(v[i], 0);
    tg_params_free(p);
}
END_TEST

START_TEST(initializers_are_seeded_and_scaled)
{
    tg_params *p = tg_params_new(TG_F32);
    tg_tensor *w = tg_params_add(p, "W", 2, (int64_t[]){200, 300});
    tg_rng *r = tg_rng_new(5);
    ck_assert_int_eq(tg_init_xavier_uniform(w, r), TG_OK);
    double a = sqrt(6.0 / 500), mx = 0;
    for (size_t i = 0; i < tg_tensor_size(w); i++)
        mx = fmax(mx, fabs(tg_tensor_get(w, i)));
    ck_assert(mx <= a && mx > 0.99 * a);
    ck_assert_int_eq(tg_init_he_normal(w, r), TG_OK);
    double s2 = 0;
    for (size_t i = 0; i < tg_tensor_size(w); i++)
        s2 += tg_tensor_get(w, i) * tg_tensor_get(w, i);
    /* variance 2/300 from 60000 draws: relative standard error ~0.6%, 5% is safe */
    ck_assert_double_eq_tol(s2 / 60000, 2.0 / 300, 0.05 * 2.0 / 300);
    tg_rng_free(r);
    tg_params_free(p);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("tensor");
    TCase *tc = tcase_create("tensors");
    tcase_add_test(tc, create_read_fill);
    suite_add_tcase(s, tc);
    tc = tcase_create("rng and initializers");
    tcase_add_test(tc, rng_is_reproducible);
    tcase_add_test(tc, initializers_are_seeded_and_scaled);
    suite_add_tcase(s, tc);
    tc = tcase_create("parameter sets");
    tcase_add_test(tc, params_are_contiguous);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
