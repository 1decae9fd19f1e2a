/*
 * Results do not depend on the thread count: a few training steps of B-mnist-like networks at
 * 1 and at 2 threads give bit-identical parameters (memcmp), in both dtypes and both layouts.
 * The shapes are large enough that every parallel path runs more than one chunk: the GEMMs,
 * bias_act forward and VJP (128 x 512 = 65536 elements > two chunks of 32768, with per-chunk
 * bias-gradient partials), and elementwise activations.
 */
#include <stdlib.h>
#include <string.h>

#include <tapegrad/runtime.h>

#include "../lib/internal.h"
#include "common.h"

struct net {
    tg_params *p;
    tg_dense l[3];
    tg_sgd *opt;
};

/* Trains `steps` steps from the same seed and returns a copy of the parameter values. */
static void *
train(tg_dtype dt, tg_layout layout, tg_activation act, int threads, int steps, size_t *bytes)
{
    ck_assert_int_eq(tg_set_num_threads(threads), TG_OK);
    /* Under valgrind the input layer is 64 wide instead of 784: the 512-wide hidden layer
     * still spans two bias_act chunks, and the run takes minutes less. */
    const int64_t dims[4] = {getenv("TG_UNDER_VALGRIND") ? 64 : 784, 512, 256, 10},
                  batch = 128;
    tg_rng *rng = tg_rng_new(7);
    struct net n;
    n.p = tg_params_new(dt);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(tg_dense_init(&n.l[i], n.p, i == 0 ? "l1" : i == 1 ? "l2" : "l3",
                                       dims[i], dims[i + 1], i == 2 ? TG_ACT_IDENTITY : act,
                                       layout, rng),
                         TG_OK);
    n.opt = tg_sgd_new(n.p, &(tg_sgd_options){.lr = 0.05, .momentum = 0.9}, NULL);
    bool rows = layout == TG_EXAMPLES_AS_ROWS;
    size_t nx = (size_t)(batch * dims[0]);
    double *x = malloc(nx * sizeof *x);
    for (size_t i = 0; i < nx; i++)
        x[i] = tg_rng_uniform(rng) - 0.5;
    int32_t labels[128];
    for (int j = 0; j < batch; j++)
        labels[j] = (int32_t)(tg_rng_u64(rng) % 10);
    tg_tape *t = tg_tape_new();
    for (int s = 0; s < steps; s++) {
        tg_tape_reset(t);
        int64_t xd[2] = {rows ? batch : dims[0], rows ? dims[0] : batch};
        tg_tensor *h = tg_tensor_new(t, dt, 2, xd, "X");
        tg_tensor_write(h, x, nx);
        for (int i = 0; i < 3; i++)
            h = tg_dense_forward(t, &n.l[i], h);
        tg_backward(t, tg_softmax_xent(t, h, labels, rows ? 1 : 0));
        ck_assert_msg(!tg_tape_error(t), "%s", tg_tape_error(t));
        ck_assert_int_eq(tg_sgd_step(n.opt), TG_OK);
    }
    *bytes = n.p->size * tg_dtype_size(dt);
    void *copy = malloc(*bytes);
    memcpy(copy, n.p->values, *bytes);
    tg_tape_free(t);
    tg_sgd_free(n.opt);
    tg_params_free(n.p);
    tg_rng_free(rng);
    free(x);
    ck_assert_int_eq(tg_set_num_threads(0), TG_OK);
    return copy;
}

static const struct {
    tg_dtype dt;
    tg_layout layout;
    tg_activation act;
} configs[] = {
    {TG_F32, TG_EXAMPLES_AS_ROWS, TG_ACT_RELU},
    {TG_F64, TG_EXAMPLES_AS_ROWS, TG_ACT_RELU},
    {TG_F32, TG_EXAMPLES_AS_COLUMNS, TG_ACT_TANH},
    {TG_F64, TG_EXAMPLES_AS_COLUMNS, TG_ACT_SIGMOID},
    {TG_F32, TG_EXAMPLES_AS_ROWS, TG_ACT_GELU},
};

START_TEST(parameters_bit_identical_for_1_and_2_threads)
{
    size_t b1, b2;
    void *one = train(configs[_i].dt, configs[_i].layout, configs[_i].act, 1, 3, &b1);
    void *two = train(configs[_i].dt, configs[_i].layout, configs[_i].act, 2, 3, &b2);
    ck_assert_uint_eq(b1, b2);
    ck_assert_msg(memcmp(one, two, b1) == 0, "%s %s %s: parameters differ between 1 and 2 threads",
                  tg_dtype_name(configs[_i].dt),
                  configs[_i].layout == TG_EXAMPLES_AS_ROWS ? "rows" : "columns",
                  tg_activation_name(configs[_i].act));
    free(one);
    free(two);
}
END_TEST

static Suite *
parallel_suite(void)
{
    Suite *s = suite_create("parallel");
    TCase *tc = tcase_create("thread-count independence");
    tcase_set_timeout(tc, 600);
    tcase_add_loop_test(tc, parameters_bit_identical_for_1_and_2_threads, 0,
                        (int)(sizeof configs / sizeof configs[0]));
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    return run_suite(parallel_suite());
}
