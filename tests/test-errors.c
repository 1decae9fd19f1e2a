/*
 * Every error path of the core: the status, a message that names the op, the tensors and their
 * shapes, stickiness (first error wins, later calls do nothing), and no change to anything.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

static tg_tape *tape;
static void setup(void) { tape = tg_tape_new(); }
static void teardown(void) { tg_tape_free(tape); }

#define ASSERT_ERROR(status, ...) ASSERT_TAPE_ERROR(tape, status, __VA_ARGS__)

START_TEST(matmul_inner_dimensions)
{
    tg_tensor *w = tg_matrix(tape, TG_F64, 3, 4, NULL, "W2");
    tg_tensor *a = tg_matrix(tape, TG_F64, 5, 2, NULL, "A1");
    tg_tensor *y = tg_matmul(tape, w, a);
    ck_assert_str_eq(tg_tape_error(tape),
                     "matmul \"W2\"·\"A1\": inner dimensions differ: (3x4) · (5x2)");
    ck_assert_int_eq(tg_tape_status(tape), TG_ERR_SHAPE);
    ck_assert_ptr_null(tg_tensor_data(y)); /* the nil tensor */
}
END_TEST

/* Messages never carry a name's control bytes raw (a terminal would obey them), and a long
 * name is shortened in the middle so the op's shapes still fit in the message. */
static bool
has_raw_controls(const char *m)
{
    for (const unsigned char *c = (const unsigned char *)m; *c; c++)
        if (*c < 0x20 || *c == 0x7f)
            return true;
    return false;
}

START_TEST(hostile_names_escaped_in_messages)
{
    tg_tensor *w = tg_matrix(tape, TG_F64, 3, 4, NULL, "W\x1b[31m\nred\ttab\\");
    tg_tensor *a = tg_matrix(tape, TG_F64, 5, 2, NULL, "A1");
    tg_matmul(tape, w, a);
    const char *m = tg_tape_error(tape);
    ck_assert_msg(!has_raw_controls(m), "raw control bytes in: %s", m);
    ck_assert_msg(strstr(m, "\"W\\x1b[31m\\nred\\ttab\\\\\"") && strstr(m, "(3x4) · (5x2)"),
                  "%s", m);
}
END_TEST

START_TEST(long_names_keep_the_shapes)
{
    char a_name[257], b_name[257];
    for (int i = 0; i < 256; i++)
        a_name[i] = (char)('a' + i % 26), b_name[i] = (char)('A' + i % 26);
    a_name[256] = b_name[256] = '\0';
    tg_tensor *w = tg_matrix(tape, TG_F64, 3, 4, NULL, a_name);
    tg_tensor *a = tg_matrix(tape, TG_F64, 5, 2, NULL, b_name);
    tg_matmul(tape, w, a);
    const char *m = tg_tape_error(tape);
    /* both names shortened around "…", both shapes whole */
    ck_assert_msg(strstr(m, "(3x4) · (5x2)") && strstr(m, "\"abcdefghij") &&
                      strstr(m, "\"ABCDEFGHIJ") && strstr(m, "\xe2\x80\xa6"),
                  "%s", m);
    ck_assert_msg(strlen(m) < 300, "%zu bytes: %s", strlen(m), m);
}
END_TEST

static tg_status hostile_forward(tg_node *n) { (void)n; return TG_OK; }
static tg_status hostile_vjp(tg_node *n) { (void)n; return TG_OK; }
static tg_status hostile_shape(tg_node *n, int *ndim, int64_t *dims)
{
    (void)dims;
    *ndim = 0; /* an invalid rank: the record fails with a message naming the op */
    return tg_node_fail(n, TG_ERR_SHAPE, "refusing %d inputs", tg_node_input_count(n));
}

/* An op's name can be anything (graph exports escape it); messages show it escaped. */
START_TEST(custom_op_names_escaped_in_messages)
{
    static const char *const bad[] = {"esc\x1b[2J", "new\nline", "\xff\xfe bytes"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tg_tape_reset(tape);
        tg_op op = {.name = bad[i], .n_inputs = 1, .shape = hostile_shape,
                    .forward = hostile_forward, .vjp = hostile_vjp};
        tg_tensor *x = tg_matrix(tape, TG_F64, 2, 2, NULL, "x");
        tg_tensor *y = tg_custom(tape, &op, &x, 1, NULL);
        ck_assert_ptr_null(tg_tensor_data(y));
        const char *m = tg_tape_error(tape);
        ck_assert_msg(m && !has_raw_controls(m) && strstr(m, "refusing 1 inputs"), "%s",
                      m ? m : "(none)");
        ck_assert_msg(i != 0 || strstr(m, "esc\\x1b[2J"), "%s", m);
        ck_assert_msg(i != 1 || strstr(m, "new\\nline"), "%s", m);
        ck_assert_msg(i != 2 || strstr(m, "\\xff\\xfe bytes"), "%s", m);
    }
}
END_TEST

START_TEST(broadcast_mismatch)
{
    tg_add(tape, tg_matrix(tape, TG_F64, 3, 4, NULL, "Z"), tg_matrix(tape, TG_F64, 2, 4, NULL, "b"));
    ASSERT_ERROR(TG_ERR_SHAPE, "add", "\"Z\"", "\"b\"", "(3x4)", "(2x4)");
}
END_TEST

START_TEST(dtype_mix)
{
    tg_mul(tape, tg_matrix(tape, TG_F32, 2, 2, NULL, "a"), tg_matrix(tape, TG_F64, 2, 2, NULL, "b"));
    ASSERT_ERROR(TG_ERR_DTYPE, "mul", "\"a\" is f32", "\"b\" is f64");
}
END_TEST

START_TEST(null_arguments)
{
    tg_relu(tape, NULL);
    ASSERT_ERROR(TG_ERR_ARG, "relu", "NULL");
    /* NULL tape: NULL back, no crash. */
    ck_assert_ptr_null(tg_relu(NULL, NULL));
    ck_assert_ptr_null(tg_tensor_new(NULL, TG_F64, 1, (int64_t[]){1}, NULL));
    ck_assert_int_eq(tg_backward(NULL, NULL), TG_ERR_ARG);
    tg_tape_free(NULL);
    tg_params_free(NULL);
    tg_rng_free(NULL);
    tg_sgd_free(NULL);
}
END_TEST

START_TEST(null_data)
{
    tg_tensor_from(tape, TG_F64, 2, (int64_t[]){2, 2}, NULL, "X");
    ASSERT_ERROR(TG_ERR_ARG, "tensor", "\"X\"", "NULL");
}
END_TEST

START_TEST(non_scalar_backward)
{
    tg_tensor *y = tg_tanh(tape, tg_matrix(tape, TG_F64, 3, 4, NULL, "Z"));
    ck_assert_int_eq(tg_backward(tape, y), TG_ERR_NOT_SCALAR);
    ASSERT_ERROR(TG_ERR_NOT_SCALAR, "backward", "(3x4)", "seed");
}
END_TEST

START_TEST(bad_dims)
{
    tg_tensor_new(tape, TG_F64, 2, (int64_t[]){-1, 3}, NULL);
    ASSERT_ERROR(TG_ERR_ARG, "dim 0 is -1, must be >= 0");
}
END_TEST

START_TEST(overflowing_dims)
{
    tg_tensor_new(tape, TG_F64, 2, (int64_t[]){INT64_C(1) << 32, INT64_C(1) << 32}, NULL);
    ASSERT_ERROR(TG_ERR_ARG, "(4294967296x4294967296)");
    tg_tape_reset(tape);
    /* elements fit, bytes do not */
    tg_tensor_new(tape, TG_F64, 1, (int64_t[]){INT64_C(1) << 61}, NULL);
    ck_assert_int_ne(tg_tape_status(tape), TG_OK);
    ck_assert_ptr_nonnull(strstr(tg_tape_error(tape), "bytes"));
}
END_TEST

START_TEST(bad_rank)
{
    tg_tensor_new(tape, TG_F64, 5, (int64_t[]){1, 1, 1, 1, 1}, NULL);
    ASSERT_ERROR(TG_ERR_ARG, "rank 5");
    tg_tape_reset(tape);
    tg_matmul(tape, tg_tensor_new(tape, TG_F64, 3, (int64_t[]){2, 2, 2}, "T"),
              tg_matrix(tape, TG_F64, 2, 2, NULL, "M"));
    ASSERT_ERROR(TG_ERR_SHAPE, "matmul", "2-D", "(2x2x2)");
}
END_TEST

START_TEST(mse_shape_mismatch)
{
    tg_mse_half(tape, tg_matrix(tape, TG_F64, 1, 4, NULL, "A2"), tg_matrix(tape, TG_F64, 4, 1, NULL, "Y"), 1);
    ASSERT_ERROR(TG_ERR_SHAPE, "mse_half", "\"A2\"", "\"Y\"", "(1x4)", "(4x1)");
}
END_TEST

START_TEST(label_out_of_range)
{
    int32_t labels[2] = {1, 10};
    tg_softmax_xent(tape, tg_matrix(tape, TG_F64, 2, 10, NULL, "logits"), labels, 2, 1);
    ASSERT_ERROR(TG_ERR_ARG, "softmax_xent", "\"logits\"", "label 10 of example 1", "[0, 10)");
}
END_TEST

/* the labels' count is checked against the batch, the scores' extent on the
 * axis that is not class_axis. (8x3) with classes on axis 0 is 3 examples: 8 labels is the
 * count of the wrong axis (it once read 3 of them and said nothing). */
START_TEST(softmax_xent_label_count)
{
    int32_t labels[8] = {0, 1, 2, 0, 1, 2, 0, 1};
    tg_tensor *s = tg_matrix(tape, TG_F64, 8, 3, NULL, "S");
    tg_softmax_xent(tape, s, labels, 8, 0);
    ASSERT_ERROR(TG_ERR_ARG, "softmax_xent", "\"S\"", "(8x3)", "8 labels given for 3 examples",
                 "class_axis 0");
    /* too few: 7 labels for the 8 examples of class_axis 1 */
    tg_tape_reset(tape);
    s = tg_matrix(tape, TG_F64, 8, 3, NULL, "S");
    tg_softmax_xent(tape, s, labels, 7, 1);
    ASSERT_ERROR(TG_ERR_ARG, "softmax_xent", "(8x3)", "7 labels given for 8 examples");
    /* too many */
    tg_tape_reset(tape);
    s = tg_matrix(tape, TG_F64, 8, 3, NULL, "S");
    tg_softmax_xent(tape, s, labels, 4, 0);
    ASSERT_ERROR(TG_ERR_ARG, "softmax_xent", "(8x3)", "4 labels given for 3 examples");
    /* the right counts work, on both axes: all-zero scores give ln(classes) per example
     * (8 classes on axis 0, 3 on axis 1) */
    for (int axis = 0; axis < 2; axis++) {
        tg_tape_reset(tape);
        s = tg_matrix(tape, TG_F64, 8, 3, NULL, "S");
        tg_tensor *loss = tg_softmax_xent(tape, s, labels, axis ? 8 : 3, axis);
        ck_assert_msg(!tg_tape_error(tape), "%s", tg_tape_error(tape));
        /* lse of C zeros is log(C) itself, and s[label] = 0: a few ulps */
        ck_assert_double_eq_tol(tg_tensor_item(loss), log(axis ? 3.0 : 8.0), 1e-15);
    }
}
END_TEST

START_TEST(bad_axis)
{
    tg_sum_axis(tape, tg_matrix(tape, TG_F64, 2, 3, NULL, "X"), 2);
    ASSERT_ERROR(TG_ERR_ARG, "sum", "axis 2", "(2x3)");
}
END_TEST

/* After the first error, 100 more chained ops return the nil tensor, compute nothing and
 * leave the first message unchanged. */
START_TEST(errors_stick)
{
    tg_tensor *y = tg_matmul(tape, tg_matrix(tape, TG_F64, 2, 3, NULL, "a"),
                             tg_matrix(tape, TG_F64, 4, 5, NULL, "b"));
    char first[512];
    snprintf(first, sizeof first, "%s", tg_tape_error(tape));
    size_t nodes = tg_tape_node_count(tape);
    for (int i = 0; i < 100; i++)
        y = tg_sigmoid(tape, tg_add(tape, y, y));
    ck_assert_int_eq(tg_backward(tape, tg_sum(tape, y)), TG_ERR_SHAPE);
    ck_assert_str_eq(tg_tape_error(tape), first);
    ck_assert_uint_eq(tg_tape_node_count(tape), nodes);
    /* reset clears the error */
    tg_tape_reset(tape);
    ck_assert_ptr_null(tg_tape_error(tape));
}
END_TEST

START_TEST(tensor_from_another_tape)
{
    tg_tape *other = tg_tape_new();
    tg_tensor *x = tg_matrix(other, TG_F64, 2, 2, NULL, "x");
    tg_relu(tape, x);
    ASSERT_ERROR(TG_ERR_ARG, "relu", "\"x\"", "another tape");
    tg_tape_free(other);
}
END_TEST

START_TEST(stale_tensor_after_reset)
{
    /* The stale handle's memory is still the tape's (the arena is kept), so the generation
     * counter sees it was made before the reset. */
    tg_tensor *x = tg_matrix(tape, TG_F64, 2, 2, NULL, "x");
    tg_tape_reset(tape);
    tg_tensor *fresh = tg_matrix(tape, TG_F64, 8, 8, NULL, "fresh"); /* different layout */
    (void)fresh;
    tg_tanh(tape, x);
    ck_assert_int_eq(tg_tape_status(tape), TG_ERR_ARG);
}
END_TEST

START_TEST(nil_from_failed_call)
{
    tg_tape *other = tg_tape_new();
    tg_tensor *bad = tg_matmul(other, tg_matrix(other, TG_F64, 1, 2, NULL, NULL),
                               tg_matrix(other, TG_F64, 3, 1, NULL, NULL));
    tg_relu(tape, bad);
    ASSERT_ERROR(TG_ERR_ARG, "relu", "nil tensor", "failed call");
    tg_tape_free(other);
}
END_TEST

START_TEST(bad_names)
{
    tg_matrix(tape, TG_F64, 1, 1, NULL, "");
    ASSERT_ERROR(TG_ERR_ARG, "name");
    tg_tape_reset(tape);
    tg_matrix(tape, TG_F64, 1, 1, NULL, "bad\xff utf8");
    ASSERT_ERROR(TG_ERR_ARG, "UTF-8");
    tg_params *p = tg_params_new(TG_F32);
    ck_assert_ptr_nonnull(tg_params_add(p, "w", 1, (int64_t[]){2}));
    ck_assert_ptr_null(tg_params_add(p, "w", 1, (int64_t[]){3}));
    ck_assert_int_eq(tg_params_status(p), TG_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(tg_params_error(p), "\"w\" already exists"));
    ck_assert_uint_eq(tg_params_count(p), 1);
    tg_params_free(p);
}
END_TEST

/* ---- allocation failure injected at every allocation site in turn ---- */
static long fail_at = -1, alloc_calls;
static bool injected;
static void *
failing_malloc(size_t n, void *ctx)
{
    (void)ctx;
    if (alloc_calls++ == fail_at) {
        injected = true;
        return NULL;
    }
    return malloc(n);
}
static void *
failing_realloc(void *p, size_t n, void *ctx)
{
    (void)ctx;
    if (alloc_calls++ == fail_at) {
        injected = true;
        return NULL;
    }
    return realloc(p, n);
}
static void failing_free(void *p, void *ctx) { (void)ctx; free(p); }
static const tg_allocator failing = {failing_malloc, failing_realloc, failing_free, NULL};

struct step_result {
    bool ok;       /* the whole step succeeded */
    double loss;   /* its loss when ok */
    long calls;    /* allocations it asked for */
};

/* One training step of a small network with allocation number `at` failing. Any failure must
 * be reported as out of memory (never a crash), unless the library degrades gracefully (e.g.
 * the matrix multiply falls back to an unpacked loop), which the caller checks by the loss. */
static struct step_result
one_step_with_failure_at(long at)
{
    fail_at = at;
    alloc_calls = 0;
    injected = false;
    tg_set_allocator(&failing);
    struct step_result r = {false, NAN, 0};
    tg_rng *rng = tg_rng_new(1);
    tg_params *p = rng ? tg_params_new(TG_F64) : NULL;
    tg_tape *t = p ? tg_tape_new() : NULL;
    if (t) {
        tg_dense l1 = {0}, l2 = {0};
        tg_status s1 = tg_dense_init(&l1, p, "l1", 3, 8, TG_ACT_RELU, TG_EXAMPLES_AS_COLUMNS, rng);
        tg_status s2 = tg_dense_init(&l2, p, "l2", 8, 2, TG_ACT_SIGMOID, TG_EXAMPLES_AS_COLUMNS, rng);
        if (s1 == TG_OK && s2 == TG_OK) {
            tg_sgd *opt = tg_sgd_new(p, &(tg_sgd_options){.lr = 0.1, .momentum = 0.5}, NULL);
            double xv[12] = {1, -2, 3, 0.5, 0.25, -1, 2, 1, -0.5, 1.5, 0, 1};
            tg_tensor *x = tg_matrix(t, TG_F64, 3, 4, xv, "X");
            tg_tensor *y = tg_matrix(t, TG_F64, 2, 4, NULL, "Y");
            tg_tensor *loss =
                tg_mse_half(t, tg_dense_forward(t, &l2, tg_dense_forward(t, &l1, x)), y, 1);
            tg_status s = tg_backward(t, loss);
            if (s != TG_OK) {
                ck_assert_int_eq(s, TG_ERR_NOMEM);
                ck_assert_ptr_nonnull(strstr(tg_tape_error(t), "out of memory"));
            } else if (opt && tg_sgd_step(opt) == TG_OK) {
                r.ok = true;
                r.loss = tg_tensor_item(loss);
            }
            tg_sgd_free(opt);
        } else {
            ck_assert_int_eq(tg_params_status(p), TG_ERR_NOMEM);
            ck_assert_ptr_nonnull(strstr(tg_params_error(p), "out of memory"));
        }
    }
    tg_tape_free(t);
    tg_params_free(p);
    tg_rng_free(rng);
    tg_set_allocator(NULL);
    r.calls = alloc_calls;
    return r;
}

START_TEST(allocation_failure_at_every_site)
{
    struct step_result ref = one_step_with_failure_at(-1);
    ck_assert(ref.ok);
    ck_assert_int_gt(ref.calls, 5);
    for (long at = 0; at < ref.calls; at++) {
        struct step_result r = one_step_with_failure_at(at);
        if (!injected)
            continue; /* this run made fewer allocations (a kernel buffer was already cached) */
        /* Either the failure was reported (not ok), or the step degraded gracefully and got
         * the same loss up to rounding (an unpacked matrix multiply sums in another order:
         * a few ulp on these O(1) values, so 1e-12 relative). */
        ck_assert_msg(!r.ok || fabs(r.loss - ref.loss) <= 1e-12 * fabs(ref.loss),
                      "allocation %ld failed silently: loss %.17g vs %.17g", at, r.loss, ref.loss);
    }
    /* valgrind/ASan check that every failure path freed what it had */
}
END_TEST

START_TEST(sgd_bad_options)
{
    tg_params *p = tg_params_new(TG_F64);
    tg_tensor *w = tg_params_add(p, "w", 1, (int64_t[]){2});
    tg_tensor_write(w, (double[]){1, 2}, 2);
    const char *err = NULL;
    ck_assert_ptr_null(tg_sgd_new(p, &(tg_sgd_options){.lr = NAN}, &err));
    ck_assert_ptr_nonnull(strstr(err, "learning rate nan"));
    ck_assert_ptr_null(tg_sgd_new(p, &(tg_sgd_options){.lr = -1}, &err));
    ck_assert_ptr_null(tg_sgd_new(p, &(tg_sgd_options){.lr = INFINITY}, &err));
    ck_assert_ptr_null(tg_sgd_new(p, &(tg_sgd_options){.lr = 0.1, .momentum = 1}, &err));
    ck_assert_ptr_nonnull(strstr(err, "momentum"));
    tg_sgd *s = tg_sgd_new(p, &(tg_sgd_options){.lr = 0.1}, &err);
    ck_assert_int_eq(tg_sgd_set_lr(s, NAN), TG_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(tg_sgd_error(s), "learning rate"));
    /* a step with no gradients leaves the parameters unchanged */
    ck_assert_int_eq(tg_sgd_step(s), TG_OK);
    ck_assert_double_eq(tg_tensor_get(w, 0), 1);
    ck_assert_double_eq(tg_tensor_get(w, 1), 2);
    tg_sgd_free(s);
    tg_params_free(p);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("errors");
    TCase *tc = tcase_create("shapes and dtypes");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, matmul_inner_dimensions);
    tcase_add_test(tc, broadcast_mismatch);
    tcase_add_test(tc, dtype_mix);
    tcase_add_test(tc, bad_dims);
    tcase_add_test(tc, overflowing_dims);
    tcase_add_test(tc, bad_rank);
    tcase_add_test(tc, mse_shape_mismatch);
    tcase_add_test(tc, label_out_of_range);
    tcase_add_test(tc, softmax_xent_label_count);
    tcase_add_test(tc, bad_axis);
    suite_add_tcase(s, tc);

    tc = tcase_create("arguments and handles");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, null_arguments);
    tcase_add_test(tc, null_data);
    tcase_add_test(tc, non_scalar_backward);
    tcase_add_test(tc, tensor_from_another_tape);
    tcase_add_test(tc, stale_tensor_after_reset);
    tcase_add_test(tc, nil_from_failed_call);
    tcase_add_test(tc, bad_names);
    tcase_add_test(tc, hostile_names_escaped_in_messages);
    tcase_add_test(tc, long_names_keep_the_shapes);
    tcase_add_test(tc, custom_op_names_escaped_in_messages);
    tcase_add_test(tc, errors_stick);
    tcase_add_test(tc, sgd_bad_options);
    suite_add_tcase(s, tc);

    tc = tcase_create("allocation failure");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, allocation_failure_at_every_site);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
