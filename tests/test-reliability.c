/*
 * The bad-input catalogue of RELIABILITY.md (rows 1-25, 46 elsewhere), numerical edge values,
 * non-finite tracing and process-global state. test-errors.c has the basic error paths (the
 * message texts of rows 2, 3, 5, 10-13, 19 and allocation failure during a training step);
 * this file adds what those leave out: that failed calls change nothing (parameters bitwise,
 * the first error, the node count, allocations), the remaining rows, and the cases that are
 * about values rather than shapes. Rows 26-43 (checkpoints) are in test-checkpoint.c, 44-45
 * (DOT) in test-dot.c and the DOT fuzz target, 24 (gradcheck options) in test-gradcheck.c,
 * 46 (threads) in hardening/test-threads.c.
 */
#include <fenv.h>
#include <float.h>
#include <limits.h>
#include <locale.h>
#include <math.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

#include <tapegrad/checkpoint.h>
#include <tapegrad/data.h>
#include <tapegrad/dot.h>
#include <tapegrad/runtime.h>

#include "common.h"

static tg_tape *tape;
static void setup(void) { tape = tg_tape_new(); }
static void teardown(void) { tg_tape_free(tape); }

#define ASSERT_ERROR(status, ...) ASSERT_TAPE_ERROR(tape, status, __VA_ARGS__)

/* Bitwise equality of doubles (NaN == NaN with the same payload, -0 != +0). */
#define ASSERT_BITS_EQ(x, y)                                                                   \
    do {                                                                                       \
        double x_ = (x), y_ = (y);                                                             \
        ck_assert_msg(memcmp(&x_, &y_, sizeof x_) == 0, "%s = %.17g, expected %.17g", #x, x_, \
                      y_);                                                                     \
    } while (0)

static tg_tensor *
vec(tg_dtype dt, size_t n, const double *v, const char *name)
{
    tg_tensor *x = tg_tensor_new(tape, dt, 2, (int64_t[]){1, (int64_t)n}, name);
    tg_tensor_write(x, v, n);
    return x;
}

/* ---- counting allocator: how many allocations a call made ---- */
static atomic_long n_allocs; /* atomic: a pool worker may allocate its part's buffer */
static size_t biggest_refused, alloc_cap = SIZE_MAX;
static void *
count_malloc(size_t n, void *ctx)
{
    (void)ctx;
    n_allocs++;
    if (n > alloc_cap) {
        biggest_refused = n;
        return NULL;
    }
    return malloc(n);
}
static void *
count_realloc(void *p, size_t n, void *ctx)
{
    (void)ctx;
    n_allocs++;
    if (n > alloc_cap) {
        biggest_refused = n;
        return NULL;
    }
    return realloc(p, n);
}
static void count_free(void *p, void *ctx) { (void)ctx; free(p); }
static const tg_allocator counting = {count_malloc, count_realloc, count_free, NULL};

/* ======================================================================================
 * Rows 1-13: shapes, handles, stickiness.
 */

/* Row 1: a 0 dim gives an empty result, (n x 0)(0 x m) gives zeros, gradients are zero;
 * only the ops with no value on empty input (MSE, mean, softmax_xent) are errors. */
START_TEST(row01_zero_dims)
{
    for (int d = 0; d < 2; d++) {
        tg_dtype dt = d ? TG_F32 : TG_F64;
        tg_tape_reset(tape);
        tg_tensor *e = tg_tensor_new(tape, dt, 2, (int64_t[]){0, 3}, "E");
        tg_tensor_set_requires_grad(e, true);
        tg_tensor *s = tg_add(tape, e, e);
        ck_assert_uint_eq(tg_tensor_size(s), 0);
        ck_assert_int_eq(tg_tensor_dim(s, 0), 0);
        ck_assert_uint_eq(tg_tensor_size(tg_mul(tape, e, tg_matrix(tape, dt, 1, 3, NULL, NULL))), 0);

        tg_tensor *a = tg_tensor_new(tape, dt, 2, (int64_t[]){4, 0}, "A");
        tg_tensor *b = tg_tensor_new(tape, dt, 2, (int64_t[]){0, 5}, "B");
        tg_tensor_set_requires_grad(a, true);
        tg_tensor *c = tg_matmul(tape, a, b);
        ck_assert_int_eq(tg_tensor_dim(c, 0), 4);
        ck_assert_int_eq(tg_tensor_dim(c, 1), 5);
        for (size_t i = 0; i < 20; i++)
            ck_assert(tg_tensor_get(c, i) == 0);
        tg_tensor *total = tg_add(tape, tg_sum(tape, c), tg_sum(tape, s));
        ck_assert_int_eq(tg_backward(tape, total), TG_OK);
        ck_assert_uint_eq(tg_tensor_size(a), 0);
        ck_assert_double_eq(tg_tensor_item(total), 0);
        /* sums over an empty axis are 0; the empty sum of everything is 0 */
        tg_tensor *z = tg_sum_axis(tape, e, 0);
        ck_assert_int_eq(tg_tensor_dim(z, 1), 3);
        for (size_t i = 0; i < 3; i++)
            ck_assert(tg_tensor_get(z, i) == 0);
        ck_assert_ptr_null(tg_tape_error(tape));

        tg_mse(tape, e, e);
        ASSERT_ERROR(TG_ERR_SHAPE, "mse", "empty input", "(0x3)");
        tg_tape_reset(tape);
        tg_mean(tape, tg_tensor_new(tape, dt, 2, (int64_t[]){0, 3}, "E"));
        ASSERT_ERROR(TG_ERR_SHAPE, "mean", "empty input", "(0x3)");
        tg_tape_reset(tape);
        tg_softmax_xent(tape, tg_tensor_new(tape, dt, 2, (int64_t[]){0, 3}, "S"),
                        (int32_t[]){0}, 0, 1);
        ASSERT_ERROR(TG_ERR_SHAPE, "softmax_xent", "empty input", "(0x3)");
    }
}
END_TEST

/* Row 1, regression (found by fuzz-graph): an empty tensor with a huge dimension, such as
 * (2^40 x 0), used to make reductions, transpose and broadcasting run an empty outer loop
 * 2^40 times (a hang at -O0 or with clang); the work must be bounded by the elements. */
START_TEST(row01_empty_with_huge_dim_is_instant)
{
    const int64_t huge = INT64_C(1) << 40;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    tg_tensor *x = tg_tensor_new(tape, TG_F64, 4, (int64_t[]){huge, 0, 9, 0}, "X");
    tg_tensor_set_requires_grad(x, true);
    tg_tensor *r = tg_sum_axis(tape, x, 1);
    tg_tensor *m = tg_tensor_new(tape, TG_F64, 2, (int64_t[]){huge, 0}, "M");
    tg_tensor_set_requires_grad(m, true);
    tg_tensor *mt = tg_transpose(tape, m);
    tg_tensor *b = tg_add(tape, m, tg_tensor_new(tape, TG_F64, 2, (int64_t[]){1, 0}, "row"));
    tg_tensor *loss = tg_add(tape, tg_add(tape, tg_sum(tape, r), tg_sum(tape, mt)),
                             tg_sum(tape, b));
    ck_assert_int_eq(tg_backward(tape, loss), TG_OK);
    ck_assert_double_eq(tg_tensor_item(loss), 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    ck_assert_msg(s < 1.0, "empty tensors took %.3f s", s);
}
END_TEST

/* Rows 2-5 through the parameter set and tg_tensor_wrap: the error names the value, and the
 * parameter set is unchanged (count, values, no allocation before the check). */
START_TEST(rows02_05_params_and_wrap)
{
    tg_params *p = tg_params_new(TG_F64);
    tg_tensor *w = tg_params_add(p, "w", 1, (int64_t[]){3});
    tg_tensor_write(w, (double[]){1, 2, 3}, 3);
    size_t count = tg_params_count(p);

    tg_set_allocator(&counting);
    n_allocs = 0;
    ck_assert_ptr_null(tg_params_add(p, "neg", 2, (int64_t[]){2, -1}));
    ck_assert_ptr_nonnull(strstr(tg_params_error(p), "dim 1 is -1, must be >= 0"));
    ck_assert_ptr_null(tg_params_add(p, "big", 2, (int64_t[]){INT64_C(1) << 32, INT64_C(1) << 32}));
    ck_assert_ptr_null(tg_params_add(p, "rank", 5, (int64_t[]){1, 1, 1, 1, 1}));
    ck_assert_int_eq(n_allocs, 0); /* rejected before any allocation */
    tg_set_allocator(NULL);
    ck_assert_uint_eq(tg_params_count(p), count);
    ck_assert_double_eq(tg_tensor_get(w, 2), 3);
    tg_params_free(p);

    double buf[4] = {0};
    tg_tensor_wrap(tape, TG_F64, 2, (int64_t[]){-1, 4}, buf, "wrapped");
    ASSERT_ERROR(TG_ERR_ARG, "dim 0 is -1");
    tg_tape_reset(tape);
    tg_tensor_wrap(tape, TG_F64, 2, (int64_t[]){INT64_C(1) << 62, 4}, buf, "wrapped");
    ck_assert_int_ne(tg_tape_status(tape), TG_OK);
    tg_tape_reset(tape);
    /* rank 0 and negative ranks are rejected, never read from dims */
    tg_tensor_new(tape, TG_F64, 0, NULL, NULL);
    ASSERT_ERROR(TG_ERR_ARG, "rank 0");
    tg_tape_reset(tape);
    tg_tensor_new(tape, TG_F64, -3, (int64_t[]){1}, NULL);
    ASSERT_ERROR(TG_ERR_ARG, "rank -3");
    tg_tape_reset(tape);
    tg_tensor_new(tape, TG_F64, 2, NULL, NULL);
    ASSERT_ERROR(TG_ERR_ARG, "dims is NULL");
    tg_tape_reset(tape);
    tg_tensor_new(tape, (tg_dtype)7, 1, (int64_t[]){1}, NULL);
    ASSERT_ERROR(TG_ERR_ARG, "dtype 7");
    /* an op that only takes 2-D tensors, given 3-D ones */
    tg_tape_reset(tape);
    tg_transpose(tape, tg_tensor_new(tape, TG_F64, 3, (int64_t[]){2, 2, 2}, "T"));
    ASSERT_ERROR(TG_ERR_SHAPE, "transpose", "\"T\"", "(2x2x2)");
    tg_tape_reset(tape);
    tg_softmax_xent(tape, tg_tensor_new(tape, TG_F64, 3, (int64_t[]){2, 2, 2}, "S"),
                    (int32_t[]){0, 0}, 2, 1);
    ASSERT_ERROR(TG_ERR_SHAPE, "softmax_xent", "\"S\"", "(2x2x2)");
}
END_TEST

/* Row 4: a size that fits size_t but not in memory: the error names the op and the bytes. */
START_TEST(row04_over_memory_cap)
{
    alloc_cap = (size_t)1 << 30; /* a 1 GiB "machine" */
    tg_set_allocator(&counting);
    tg_tensor_new(tape, TG_F64, 2, (int64_t[]){50000, 50000}, "huge");
    tg_set_allocator(NULL);
    alloc_cap = SIZE_MAX;
    ASSERT_ERROR(TG_ERR_NOMEM, "out of memory", "20000000000 bytes", "(50000x50000)");
    ck_assert_uint_eq(tg_tape_node_count(tape), 0);
    /* the tape stays usable after a reset */
    tg_tape_reset(tape);
    ck_assert_double_eq(tg_tensor_item(tg_sum(tape, tg_matrix(tape, TG_F64, 1, 2,
                                                              (double[]){1, 2}, NULL))), 3);
}
END_TEST

/* Row 4, the configured cap: tg_tape_set_memory_limit. Over it, the error names the op, the
 * bytes asked for and the cap, nothing is allocated for the refused request and the tape's
 * memory stays under the cap; under it, nothing fails (even where the arena's doubling growth
 * alone would cross the cap); reset makes the tape usable again; 0 lifts the cap. */
START_TEST(row04_tape_memory_limit)
{
    const size_t cap = (size_t)1 << 20;
    tg_tape_set_memory_limit(tape, cap);
    tg_tensor *col = tg_tensor_new(tape, TG_F64, 2, (int64_t[]){1000, 1}, "col");
    tg_tensor *row = tg_tensor_new(tape, TG_F64, 2, (int64_t[]){1, 1000}, "row");
    ck_assert_int_eq(tg_tape_status(tape), TG_OK);
    size_t held = tg_tape_arena_bytes(tape);
    ck_assert_uint_le(held, cap);

    n_allocs = 0;
    tg_set_allocator(&counting);
    tg_tensor *outer = tg_matmul(tape, col, row); /* (1000x1000) f64: 8 MB */
    tg_set_allocator(NULL);
    ck_assert_uint_eq(n_allocs, 0);
    ck_assert_ptr_null(tg_tensor_data(outer)); /* the nil tensor */
    ASSERT_ERROR(TG_ERR_NOMEM, "matmul", "8000000 bytes", "(1000x1000)",
                 "memory limit of 1048576 bytes");
    ck_assert_uint_eq(tg_tape_node_count(tape), 0);
    ck_assert_uint_eq(tg_tape_arena_bytes(tape), held);

    /* Under the cap: a 300000-byte tensor, then one whose block the doubling rule would make
     * 600000 bytes (past the cap) but which itself fits: the block is cut to what is left. */
    tg_tape_reset(tape);
    for (int step = 0; step < 2; step++) {
        tg_tape_reset(tape);
        tg_tensor *a = tg_tensor_new(tape, TG_F64, 2, (int64_t[]){300, 125}, "a");
        tg_tensor *b = tg_tensor_new(tape, TG_F64, 2, (int64_t[]){100, 50}, "b");
        tg_tensor *s = tg_add(tape, tg_sum(tape, a), tg_sum(tape, b));
        ck_assert_msg(tg_tape_status(tape) == TG_OK, "step %d: %s", step, tg_tape_error(tape));
        ck_assert_double_eq(tg_tensor_item(s), 0);
        ck_assert_uint_le(tg_tape_arena_bytes(tape), cap);
    }
    /* ... and what is left after that is refused, with the arena still under the cap */
    tg_tensor_new(tape, TG_F32, 2, (int64_t[]){1000, 1000}, "big");
    ASSERT_ERROR(TG_ERR_NOMEM,
                 "tensor: out of memory (4000000 bytes) for a f32 tensor (1000x1000)",
                 "memory limit of 1048576 bytes");
    ck_assert_uint_le(tg_tape_arena_bytes(tape), cap);

    /* No cap: the same product runs. */
    tg_tape_set_memory_limit(tape, 0);
    tg_tape_reset(tape);
    col = tg_tensor_new(tape, TG_F64, 2, (int64_t[]){1000, 1}, "col");
    row = tg_tensor_new(tape, TG_F64, 2, (int64_t[]){1, 1000}, "row");
    tg_tensor_fill(col, 2);
    tg_tensor_fill(row, 3);
    ck_assert_double_eq(tg_tensor_item(tg_mean(tape, tg_matmul(tape, col, row))), 6);
    ck_assert_int_eq(tg_tape_status(tape), TG_OK);
}
END_TEST

/* Row 6: the message names the op and the byte count; after the failure the same tape,
 * reset, runs the step (consistent), and leaks are left to ASan/valgrind. Every allocation of
 * a softmax step with finite tracing and a seeded backward fails in turn. */
static long fail_at = -1, calls;
static void *
fail_malloc(size_t n, void *ctx)
{
    (void)ctx;
    return calls++ == fail_at ? NULL : malloc(n);
}
static void *
fail_realloc(void *p, size_t n, void *ctx)
{
    (void)ctx;
    return calls++ == fail_at ? NULL : realloc(p, n);
}
static const tg_allocator failing = {fail_malloc, fail_realloc, count_free, NULL};

static tg_status
xent_step(tg_tape *t, tg_params *p)
{
    tg_tape_reset(t);
    tg_tape_set_check_finite(t, true);
    tg_tensor *w = tg_params_find(p, "w");
    tg_tensor *x = tg_matrix(t, TG_F64, 4, 3, (double[]){1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 3}, "x");
    tg_tensor *h = tg_gelu(t, tg_matmul_t(t, x, false, w, true));
    tg_tensor *loss = tg_softmax_xent(t, h, (int32_t[]){0, 1, 1, 0}, 4, 1);
    tg_tensor *seed = tg_matrix(t, TG_F64, 1, 1, (double[]){0.5}, "seed");
    return tg_backward_seeded(t, loss, seed);
}

START_TEST(row06_allocation_failure_every_site_softmax_step)
{
    for (long at = 0;; at++) {
        fail_at = at;
        calls = 0;
        tg_set_allocator(&failing);
        tg_tape *t = tg_tape_new();
        tg_params *p = t ? tg_params_new(TG_F64) : NULL;
        tg_tensor *w = p ? tg_params_add(p, "w", 2, (int64_t[]){2, 3}) : NULL;
        tg_status s = w ? xent_step(t, p) : TG_ERR_NOMEM;
        bool failed = calls > at;
        if (w && s != TG_OK) {
            ck_assert_int_eq(s, TG_ERR_NOMEM);
            const char *msg = tg_tape_error(t);
            ck_assert_msg(strstr(msg, "out of memory") && strstr(msg, "bytes"), "%s", msg);
        }
        if (w) {
            tg_set_allocator(NULL); /* consistent: the same tape runs the step once reset */
            ck_assert_int_eq(xent_step(t, p), TG_OK);
            ck_assert(isfinite(tg_tensor_grad_get(w, 0)));
        }
        tg_set_allocator(NULL);
        tg_params_free(p);
        tg_tape_free(t);
        if (!failed)
            break; /* every site has failed once */
        ck_assert_msg(at < 1000, "more than 1000 allocations in one step");
    }
}
END_TEST

/* Row 7: NULL everywhere a pointer goes; documented no-ops for free(NULL). */
START_TEST(row07_null_everywhere)
{
    ck_assert_ptr_null(tg_tensor_from(NULL, TG_F64, 1, (int64_t[]){1}, (double[]){1}, NULL));
    ck_assert_ptr_null(tg_matrix(NULL, TG_F64, 1, 1, NULL, NULL));
    ck_assert_ptr_null(tg_matmul(NULL, NULL, NULL));
    ck_assert_ptr_null(tg_softmax_xent(NULL, NULL, NULL, 0, 1));
    ck_assert_ptr_null(tg_dense_forward(NULL, NULL, NULL));
    ck_assert_ptr_null(tg_custom(NULL, NULL, NULL, 0, NULL));
    ck_assert_int_eq(tg_backward_seeded(NULL, NULL, NULL), TG_ERR_ARG);
    ck_assert_int_eq(tg_tape_status(NULL), TG_ERR_ARG);
    ck_assert_ptr_nonnull(tg_tape_error(NULL));
    ck_assert_uint_eq(tg_tape_node_count(NULL), 0);
    tg_tape_reset(NULL);
    tg_tape_set_check_finite(NULL, true);
    /* accessors on NULL tensors */
    ck_assert_int_eq(tg_tensor_ndim(NULL), 0);
    ck_assert_uint_eq(tg_tensor_size(NULL), 0);
    ck_assert_ptr_null(tg_tensor_data(NULL));
    ck_assert_ptr_null(tg_tensor_grad(NULL));
    ck_assert(isnan(tg_tensor_get(NULL, 0)));
    ck_assert(isnan(tg_tensor_item(NULL)));
    ck_assert_int_eq(tg_tensor_write(NULL, (double[]){1}, 1), TG_ERR_ARG);
    ck_assert_int_eq(tg_tensor_fill(NULL, 1), TG_ERR_ARG);
    ck_assert_int_eq(tg_tensor_fill_uniform(NULL, NULL, 0, 1), TG_ERR_ARG);
    char buf[16];
    ck_assert_str_eq(tg_tensor_shape_string(NULL, buf, sizeof buf), "(null)");
    ck_assert_ptr_null(tg_tensor_shape_string(NULL, NULL, 0));
    tg_tensor_set_requires_grad(NULL, true);
    /* parameters, optimizer, rng */
    ck_assert_ptr_null(tg_params_add(NULL, "w", 1, (int64_t[]){1}));
    ck_assert_ptr_null(tg_params_find(NULL, "w"));
    ck_assert_ptr_nonnull(tg_params_error(NULL));
    tg_params_zero_grad(NULL);
    ck_assert_int_eq(tg_dense_init(NULL, NULL, NULL, 1, 1, TG_ACT_RELU, 0, NULL), TG_ERR_ARG);
    ck_assert_int_eq(tg_sgd_step(NULL), TG_ERR_ARG);
    ck_assert_ptr_null(tg_sgd_new(NULL, NULL, NULL));
    ck_assert_int_eq(tg_init_xavier_uniform(NULL, NULL), TG_ERR_ARG);
    (void)tg_rng_u64(NULL);
    (void)tg_rng_normal(NULL);
    tg_params *p = tg_params_new(TG_F64);
    ck_assert_ptr_null(tg_params_add(p, NULL, 1, (int64_t[]){1}));
    ck_assert_ptr_null(tg_params_find(p, NULL));
    tg_params_free(p);
    /* NULL operands on a tape name the op and the operand; NULL labels too */
    tg_mul(tape, tg_matrix(tape, TG_F64, 1, 1, NULL, "a"), NULL);
    ASSERT_ERROR(TG_ERR_ARG, "mul", "input 1", "NULL");
    tg_tape_reset(tape);
    tg_softmax_xent(tape, tg_matrix(tape, TG_F64, 2, 3, NULL, "s"), NULL, 2, 1);
    ASSERT_ERROR(TG_ERR_ARG, "softmax_xent", "labels is NULL");
    tg_tape_reset(tape);
    tg_backward_seeded(tape, tg_matrix(tape, TG_F64, 1, 1, NULL, "y"), NULL);
    ASSERT_ERROR(TG_ERR_ARG, "backward", "seed", "NULL");
    tg_tape_reset(tape);
    tg_custom(tape, NULL, NULL, 1, NULL);
    ASSERT_ERROR(TG_ERR_ARG, "custom op");
    tg_tape_reset(tape);
    tg_dense_forward(tape, NULL, NULL);
    ASSERT_ERROR(TG_ERR_ARG, "dense", "NULL");
}
END_TEST

/* Row 8: the message names both tapes; as the second operand too. Parameters belong to no
 * tape and may be used on any. */
START_TEST(row08_foreign_tape_both_named)
{
    tg_tape *other = tg_tape_new();
    tg_tensor *x = tg_matrix(other, TG_F64, 2, 2, NULL, "x");
    tg_tensor *mine = tg_matrix(tape, TG_F64, 2, 2, NULL, "mine");
    tg_add(tape, mine, x);
    char a[32], b[32];
    snprintf(a, sizeof a, "%p", (void *)other);
    snprintf(b, sizeof b, "%p", (void *)tape);
    ASSERT_ERROR(TG_ERR_ARG, "add", "input 1", "\"x\"", "another tape", a, b);
    ck_assert_uint_eq(tg_tape_node_count(other), 0);
    ck_assert_ptr_null(tg_tape_error(other)); /* the other tape is not touched */

    tg_tape_reset(tape);
    tg_params *p = tg_params_new(TG_F64);
    tg_tensor *w = tg_params_add(p, "w", 2, (int64_t[]){2, 2});
    tg_backward(tape, tg_sum(tape, tg_matmul(tape, w, tg_matrix(tape, TG_F64, 2, 2, NULL, NULL))));
    tg_backward(other, tg_sum(other, tg_matmul(other, w, x)));
    ck_assert_ptr_null(tg_tape_error(tape));
    ck_assert_ptr_null(tg_tape_error(other));
    tg_params_free(p);
    tg_tape_free(other);
}
END_TEST

/* Row 9: stale handles in every position (operand, loss, seed), after one and two resets. */
START_TEST(row09_stale_everywhere)
{
    tg_tensor *x = tg_matrix(tape, TG_F64, 1, 1, (double[]){2}, "x");
    tg_tensor *y = tg_tanh(tape, x);
    tg_tape_reset(tape);
    tg_tensor *fresh = tg_matrix(tape, TG_F64, 1, 1, (double[]){3}, "fresh");
    tg_add(tape, fresh, x);
    ASSERT_ERROR(TG_ERR_ARG, "add", "input 1", "stale", "generation 0", "at 1");
    tg_tape_reset(tape);
    ck_assert_int_eq(tg_backward(tape, y), TG_ERR_ARG);
    ASSERT_ERROR(TG_ERR_ARG, "backward", "stale");
    tg_tape_reset(tape);
    fresh = tg_matrix(tape, TG_F64, 1, 1, (double[]){3}, "fresh");
    ck_assert_int_eq(tg_backward_seeded(tape, tg_identity(tape, fresh), y), TG_ERR_ARG);
    ASSERT_ERROR(TG_ERR_ARG, "backward", "seed", "stale");
    /* An argument error that names the operand must check the operand first (scale's factor;
     * fuzz-graph read a stale handle's name pointer here: corpus crash-scale-nonfinite-*). */
    tg_tape_reset(tape);
    tg_scale(tape, x, NAN);
    ASSERT_ERROR(TG_ERR_ARG, "scale", "x", "stale");
}
END_TEST

/* Row 9 through the accessors: a handle from the step before the reset must not read or write
 * the memory that now belongs to this step's tensors (the op checks above do not cover
 * tg_tensor_write and friends, which take no tape). */
START_TEST(row09_stale_accessors)
{
    tg_tensor *x = tg_matrix(tape, TG_F64, 2, 2, (double[]){1, 2, 3, 4}, "x");
    tg_tensor_set_requires_grad(x, true);
    tg_tensor *y = tg_tanh(tape, x);
    ck_assert_int_eq(tg_backward(tape, tg_sum(tape, y)), TG_OK);
    ck_assert_ptr_nonnull(tg_tensor_grad(x));
    ck_assert_ptr_nonnull(tg_tensor_node(y));
    tg_tape_reset(tape);
    /* Same shape and order: this step's tensor takes the data memory x had. */
    tg_tensor *fresh = tg_matrix(tape, TG_F64, 2, 2, (double[]){5, 6, 7, 8}, "fresh");
    ck_assert_ptr_null(tg_tensor_data(x));
    ck_assert_ptr_null(tg_tensor_grad(x));
    ck_assert_ptr_null(tg_tensor_node(y)); /* its node's memory is this step's now */
    ck_assert(isnan(tg_tensor_get(x, 0)));
    ck_assert(isnan(tg_tensor_grad_get(x, 0)));
    double out[4];
    ck_assert_int_eq(tg_tensor_read(x, out, 4), TG_ERR_ARG);
    ck_assert_int_eq(tg_tensor_write(x, (double[]){-1, -1, -1, -1}, 4), TG_ERR_ARG);
    ck_assert_int_eq(tg_tensor_fill(x, -1), TG_ERR_ARG);
    tg_rng *r = tg_rng_new(1);
    ck_assert_int_eq(tg_tensor_fill_uniform(x, r, 0, 1), TG_ERR_ARG);
    ck_assert_int_eq(tg_tensor_fill_normal(x, r, 0, 1), TG_ERR_ARG);
    tg_rng_free(r);
    ck_assert_int_eq(tg_tensor_read(fresh, out, 4), TG_OK);
    for (int i = 0; i < 4; i++)
        ck_assert_double_eq(out[i], 5 + i);
    /* the shape is in the header, which is intact; the name was in the arena ("fresh" took
     * its bytes: the accessor handed that out before) */
    ck_assert_int_eq(tg_tensor_dim(x, 0), 2);
    ck_assert_ptr_null(tg_tensor_name(x));
    ck_assert_str_eq(tg_tensor_name(fresh), "fresh");
    ck_assert_ptr_null(tg_tape_error(tape));
}
END_TEST

/* Row 11/12 for every broadcasting op and both losses, with the nothing-changed checks. */
START_TEST(rows11_12_every_binary_op)
{
    tg_tensor *(*ops[])(tg_tape *, tg_tensor *, tg_tensor *) = {tg_add, tg_sub, tg_mul, tg_mse};
    const char *names[] = {"add", "sub", "mul", "mse"};
    for (size_t i = 0; i < 4; i++) {
        tg_tape_reset(tape);
        tg_tensor *a = tg_matrix(tape, TG_F64, 3, 4, NULL, "Z");
        tg_tensor *b = tg_matrix(tape, TG_F64, 2, 4, NULL, "b");
        size_t nodes = tg_tape_node_count(tape);
        tg_tensor *y = ops[i](tape, a, b);
        ASSERT_ERROR(TG_ERR_SHAPE, names[i], "\"Z\"", "\"b\"", "(3x4)", "(2x4)");
        ck_assert_ptr_null(tg_tensor_data(y));
        ck_assert_uint_eq(tg_tape_node_count(tape), nodes);
    }
    /* broadcasting that is allowed: (3x1)+(1x4), rank 1 against rank 2 */
    tg_tape_reset(tape);
    tg_tensor *y = tg_add(tape, tg_matrix(tape, TG_F64, 3, 1, (double[]){1, 2, 3}, NULL),
                          tg_tensor_from(tape, TG_F64, 1, (int64_t[]){4},
                                         (double[]){10, 20, 30, 40}, NULL));
    ck_assert_int_eq(tg_tensor_dim(y, 0), 3);
    ck_assert_int_eq(tg_tensor_dim(y, 1), 4);
    ck_assert_double_eq(tg_tensor_get(y, 11), 43);
}
END_TEST

/* Row 13: after the first error nothing runs: no allocation, no node, no gradient, no
 * parameter change; tensor constructors return nil too, and the message is unchanged. */
START_TEST(row13_nothing_after_first_error)
{
    tg_params *p = tg_params_new(TG_F64);
    tg_tensor *w = tg_params_add(p, "w", 2, (int64_t[]){2, 2});
    tg_tensor_write(w, (double[]){1, 2, 3, 4}, 4);
    tg_tensor *x = tg_matrix(tape, TG_F64, 3, 3, NULL, "x");
    tg_tensor *bad = tg_matmul(tape, w, x);
    char first[512];
    snprintf(first, sizeof first, "%s", tg_tape_error(tape));
    size_t nodes = tg_tape_node_count(tape);
    size_t arena = tg_tape_arena_bytes(tape);
    tg_set_allocator(&counting);
    n_allocs = 0;
    tg_tensor *y = bad;
    for (int i = 0; i < 100; i++) {
        y = tg_add(tape, tg_matmul(tape, w, y), tg_matrix(tape, TG_F64, 64, 64, NULL, "big"));
        y = tg_softmax_xent(tape, y, (int32_t[]){0}, 1, 1);
    }
    ck_assert_int_eq(tg_backward(tape, y), TG_ERR_SHAPE);
    ck_assert_int_eq(tg_backward_seeded(tape, y, y), TG_ERR_SHAPE);
    tg_set_allocator(NULL);
    ck_assert_int_eq(n_allocs, 0);
    ck_assert_str_eq(tg_tape_error(tape), first);
    ck_assert_uint_eq(tg_tape_node_count(tape), nodes);
    ck_assert_uint_eq(tg_tape_arena_bytes(tape), arena);
    ck_assert_double_eq(tg_tensor_grad_get(w, 0), 0);
    ck_assert_double_eq(tg_tensor_get(w, 3), 4);
    tg_params_free(p);
}
END_TEST

/* ======================================================================================
 * Rows 14-18: values.
 */

/* Row 14: NaN propagates through every op, forward and backward (never masked): 128x128
 * tensors with every third element NaN. In backward, a NaN input reaches the gradient where
 * the derivative depends on it (sigmoid, tanh, softplus, gelu, mul, matmul); linear ops have
 * derivatives that do not (identity, scale, add, sub, sum: the gradient stays finite), and
 * relu/leaky_relu take the x <= 0 branch at NaN (derivative 0 and alpha, as PyTorch's
 * threshold_backward), while their forward passes the NaN on. */
static tg_tensor *
unary_by_index(tg_tape *t, tg_tensor *x, int i)
{
    switch (i) {
    case 0: return tg_identity(t, x);
    case 1: return tg_sigmoid(t, x);
    case 2: return tg_tanh(t, x);
    case 3: return tg_relu(t, x);
    case 4: return tg_leaky_relu(t, x, 0.01);
    case 5: return tg_softplus(t, x);
    case 6: return tg_gelu(t, x);
    case 7: return tg_scale(t, x, 3.0);
    case 8: return tg_add(t, x, x);
    case 9: return tg_mul(t, x, x);
    case 10: return tg_sub(t, x, tg_transpose(t, x));
    case 11: return tg_matmul(t, x, x);
    default: return tg_sum_axis(t, x, 1);
    }
}
#define N_UNARY 13
static const bool nan_reaches_grad[N_UNARY] = {false, true, true, false, false, true, true,
                                               false, false, true, false, true, false};

START_TEST(row14_nan_propagates_every_op)
{
    const size_t n = 128;
    double *v = malloc(n * n * sizeof *v);
    for (size_t i = 0; i < n * n; i++)
        v[i] = i % 3 == 0 ? NAN : 0.001 * (double)(i % 17) - 0.008;
    for (int d = 0; d < 2; d++)
        for (int op = 0; op < N_UNARY; op++) {
            tg_tape_reset(tape);
            tg_dtype dt = d ? TG_F32 : TG_F64;
            tg_tensor *x = tg_tensor_new(tape, dt, 2, (int64_t[]){(int64_t)n, (int64_t)n}, "x");
            tg_tensor_write(x, v, n * n);
            tg_tensor_set_requires_grad(x, true);
            tg_tensor *y = unary_by_index(tape, x, op);
            ck_assert_ptr_null(tg_tape_error(tape));
            /* NaN at element 0 of the input reaches element 0 of the output (row 0 for the
             * matrix ops) and element 0 of the gradient */
            ck_assert_msg(isnan(tg_tensor_get(y, 0)), "op %d dtype %d", op, d);
            ck_assert_int_eq(tg_backward(tape, tg_sum(tape, y)), TG_OK);
            ck_assert_msg(isnan(tg_tensor_grad_get(x, 0)) == nan_reaches_grad[op],
                          "op %d dtype %d: grad %g", op, d, tg_tensor_grad_get(x, 0));
            if (op < 8) /* elementwise: the NaN does not leak into finite positions */
                ck_assert_msg(isfinite(tg_tensor_get(y, 1)) && isfinite(tg_tensor_grad_get(x, 1)),
                              "op %d", op);
        }
    free(v);
}
END_TEST

/* Rows 15-16 (and the numerical section): per-op IEEE results on ±inf, huge and tiny values,
 * in both dtypes. Each expectation is the exact mathematical limit or the correctly rounded
 * value; none may be NaN. */
struct edge {
    int op; /* index for unary_by_index, 0..7 */
    double x, y, dydx;
};

START_TEST(rows15_16_activation_edges)
{
    const struct edge cases[] = {
        {1, INFINITY, 1, 0},        {1, -INFINITY, 0, 0},      {1, 1000, 1, 0},
        {1, -1000, 0, 0},           {1, 1e20, 1, 0},           {1, -1e20, 0, 0},
        {2, INFINITY, 1, 0},        {2, -INFINITY, -1, 0},     {2, 1e20, 1, 0},
        {2, -1000, -1, 0},          {3, INFINITY, INFINITY, 1}, {3, -INFINITY, 0, 0},
        {4, -INFINITY, -INFINITY, 0.01}, {5, INFINITY, INFINITY, 1}, {5, -INFINITY, 0, 0},
        {5, 1000, 1000, 1},         {5, -1000, 0, 0},          {5, 1e20, 1e20, 1},
        {6, INFINITY, INFINITY, 1}, {6, 1e20, 1e20, 1},        {6, 1000, 1000, 1},
        {6, -INFINITY, 0, 0},       {6, -1000, 0, 0},          {6, -1e20, 0, 0},
        {0, INFINITY, INFINITY, 1}, {7, -1e308, -INFINITY, 3},
    };
    for (int d = 0; d < 2; d++)
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            const struct edge *c = &cases[i];
            tg_dtype dt = d ? TG_F32 : TG_F64;
            if (dt == TG_F32 && fabs(c->x) > FLT_MAX && isfinite(c->x))
                continue;
            tg_tape_reset(tape);
            tg_tensor *x = vec(dt, 1, &c->x, "x");
            tg_tensor_set_requires_grad(x, true);
            tg_tensor *y = unary_by_index(tape, x, c->op);
            ck_assert_int_eq(tg_backward(tape, y), TG_OK);
            double got = tg_tensor_get(y, 0), g = tg_tensor_grad_get(x, 0);
            double want = dt == TG_F32 ? (double)(float)c->y : c->y;
            ck_assert_msg(got == want, "case %zu (%s, op %d, x=%g): y=%.17g want %.17g", i,
                          tg_dtype_name(dt), c->op, c->x, got, want);
            ck_assert_msg(fabs(g - c->dydx) <= 1e-6 * fabs(c->dydx) || g == c->dydx,
                          "case %zu (%s, op %d, x=%g): dy/dx=%.17g want %.17g", i,
                          tg_dtype_name(dt), c->op, c->x, g, c->dydx);
        }
}
END_TEST

/* Row 16/17 and log-sum-exp: softmax_xent is lse(s) - s[label]. */
static double
xent(tg_dtype dt, int n, const double *s, int32_t label, double *grad)
{
    tg_tape_reset(tape);
    tg_tensor *x = vec(dt, (size_t)n, s, "s");
    tg_tensor_set_requires_grad(x, true);
    tg_tensor *loss = tg_softmax_xent(tape, x, &label, 1, 1);
    ck_assert_int_eq(tg_backward(tape, loss), TG_OK);
    for (int i = 0; grad && i < n; i++)
        grad[i] = tg_tensor_grad_get(x, (size_t)i);
    return tg_tensor_item(loss);
}

START_TEST(rows16_17_logsumexp_edges)
{
    double g[4];
    for (int d = 0; d < 2; d++) {
        tg_dtype dt = d ? TG_F32 : TG_F64;
        double tol = dt == TG_F32 ? 1e-6 : 1e-15;
        /* lse([1e6, 1e6]) = 1e6 + ln 2: the loss is exactly ln 2, the gradient (1/2 - 1, 1/2) */
        double loss = xent(dt, 2, (double[]){1e6, 1e6}, 0, g);
        ck_assert_double_eq_tol(loss, 0.69314718055994530942, tol);
        ck_assert_double_eq_tol(g[0], -0.5, tol);
        ck_assert_double_eq_tol(g[1], 0.5, tol);
        /* large spreads: e^-2000 underflows to 0, no NaN */
        loss = xent(dt, 2, (double[]){1000, -1000}, 1, g);
        ck_assert_double_eq_tol(loss, 2000, 2000 * tol);
        ck_assert_double_eq_tol(g[0], 1, tol);
        ck_assert_double_eq_tol(g[1], -1, tol);
        loss = xent(dt, 3, (double[]){-1e20, 0, 1e20}, 2, g);
        ck_assert_double_eq(loss, 0);
        /* a row that is all -inf: lse = -inf, the loss is NaN (documented, as PyTorch), the
         * gradient 0 (row 17's safe behaviour) */
        loss = xent(dt, 2, (double[]){-INFINITY, -INFINITY}, 0, g);
        ck_assert(isnan(loss));
        ck_assert(g[0] == 0 && g[1] == 0);
        /* -inf at the label, finite elsewhere: the loss is +inf (probability 0) */
        loss = xent(dt, 3, (double[]){-INFINITY, 1, 2}, 0, NULL);
        ck_assert(isinf(loss) && loss > 0);
        /* -inf elsewhere: ignored, as e^-inf = 0 */
        loss = xent(dt, 3, (double[]){-INFINITY, 1, -INFINITY}, 1, g);
        ck_assert_double_eq(loss, 0);
        ck_assert_double_eq(g[0], 0);
        ck_assert_double_eq(g[1], 0);
        /* +inf anywhere: lse = +inf */
        loss = xent(dt, 2, (double[]){INFINITY, 1}, 1, NULL);
        ck_assert(isinf(loss) && loss > 0);
        /* NaN propagates */
        ck_assert(isnan(xent(dt, 2, (double[]){NAN, 1}, 1, NULL)));
    }
}
END_TEST

/* Row 17, "safe" gradient: a row of all -inf scores has a NaN loss (lse - s_l = -inf + inf,
 * undefined) and a zero gradient, and the other rows keep theirs, in both layouts and dtypes.
 * Batch of 3, 3 classes: rows 0 and 2 finite, row 1 all -inf. */
START_TEST(row17_all_minus_inf_row_gradient_is_zero)
{
    const double good[2][3] = {{1, 2, 3}, {0.5, -1, 0}};
    const int32_t labels[3] = {2, 0, 1};
    for (int d = 0; d < 2; d++)
        for (int axis = 0; axis < 2; axis++) {
            tg_dtype dt = d ? TG_F32 : TG_F64;
            double tol = dt == TG_F32 ? 1e-6 : 1e-15; /* a few roundings of O(1) values */
            double s[3][3];                            /* [example][class] */
            for (int c = 0; c < 3; c++) {
                s[0][c] = good[0][c];
                s[1][c] = -INFINITY;
                s[2][c] = good[1][c];
            }
            double v[9];
            for (int j = 0; j < 3; j++)
                for (int c = 0; c < 3; c++)
                    v[axis ? j * 3 + c : c * 3 + j] = s[j][c];
            tg_tape_reset(tape);
            tg_tensor *x = tg_tensor_new(tape, dt, 2, (int64_t[]){3, 3}, "S");
            tg_tensor_write(x, v, 9);
            tg_tensor_set_requires_grad(x, true);
            tg_tensor *loss = tg_softmax_xent(tape, x, labels, 3, axis);
            ck_assert_int_eq(tg_backward(tape, loss), TG_OK);
            ck_assert_msg(isnan(tg_tensor_item(loss)), "%s axis %d: loss %g, want NaN",
                          tg_dtype_name(dt), axis, tg_tensor_item(loss));
            for (int j = 0; j < 3; j++) {
                double lse = 0, p[3];
                if (j != 1) {
                    double m = fmax(fmax(s[j][0], s[j][1]), s[j][2]);
                    for (int c = 0; c < 3; c++)
                        lse += exp(s[j][c] - m);
                    for (int c = 0; c < 3; c++)
                        p[c] = exp(s[j][c] - m) / lse;
                }
                for (int c = 0; c < 3; c++) {
                    double g = tg_tensor_grad_get(x, (size_t)(axis ? j * 3 + c : c * 3 + j));
                    double want = j == 1 ? 0 : (p[c] - (c == labels[j])) / 3;
                    ck_assert_msg(j == 1 ? g == 0 : fabs(g - want) <= tol,
                                  "%s axis %d: dS[%d][%d] = %.17g, want %.17g",
                                  tg_dtype_name(dt), axis, j, c, g, want);
                }
            }
        }
}
END_TEST

/* Numerical section, MSE: (x - y)^2 beyond f32 range is +inf, never NaN; sums of 10^6 f32
 * terms accumulate in double (the mean of 10^6 copies of 0.1f is 0.1f to f32 rounding). */
START_TEST(mse_edges)
{
    for (int d = 0; d < 2; d++) {
        tg_dtype dt = d ? TG_F32 : TG_F64;
        tg_tape_reset(tape);
        tg_tensor *a = vec(dt, 2, (double[]){1e20, 0}, "a");
        tg_tensor *y = vec(dt, 2, (double[]){-1e20, 0}, "y");
        tg_tensor_set_requires_grad(a, true);
        tg_tensor *l = tg_mse(tape, a, y);
        ck_assert_int_eq(tg_backward(tape, l), TG_OK);
        if (dt == TG_F32)
            ck_assert(isinf(tg_tensor_item(l)) && tg_tensor_item(l) > 0);
        else
            ck_assert_double_eq_tol(tg_tensor_item(l), 2e40, 1e26);
        /* 2(x - y)/n = 2e20, to the dtype's rounding */
        ck_assert_double_eq_tol(tg_tensor_grad_get(a, 0), 2e20, 2e20 * (d ? 1e-7 : 1e-15));
        ck_assert_double_eq(tg_tensor_grad_get(a, 1), 0);
        tg_tape_reset(tape);
        a = vec(dt, 1, (double[]){INFINITY}, "a");
        y = vec(dt, 1, (double[]){0}, "y");
        ck_assert(isinf(tg_tensor_item(tg_mse(tape, a, y))));
    }
    const size_t n = 1000000;
    tg_tape_reset(tape);
    tg_tensor *a = tg_tensor_new(tape, TG_F32, 2, (int64_t[]){1, (int64_t)n}, "a");
    tg_tensor_fill(a, 0.1);
    tg_tensor *zero = tg_tensor_new(tape, TG_F32, 2, (int64_t[]){1, (int64_t)n}, "zero");
    ck_assert_float_eq_tol((float)tg_tensor_item(tg_mean(tape, a)), 0.1f, 1e-8f);
    ck_assert_float_eq_tol((float)tg_tensor_item(tg_mse(tape, a, zero)), 0.01f, 1e-9f);
}
END_TEST

/* Row 18: subnormal inputs give correctly rounded results. */
START_TEST(row18_subnormals)
{
    double sub64[] = {4.9e-324, -4.9e-324, DBL_MIN / 2, 1e-310};
    float sub32[] = {1e-40f, -1e-40f, FLT_MIN / 2, 1e-45f};
    for (int d = 0; d < 2; d++) {
        tg_dtype dt = d ? TG_F32 : TG_F64;
        for (int i = 0; i < 4; i++) {
            double v = d ? (double)sub32[i] : sub64[i];
            tg_tape_reset(tape);
            tg_tensor *x = vec(dt, 1, &v, "x");
            tg_tensor_set_requires_grad(x, true);
            ck_assert(tg_tensor_get(x, 0) == v); /* stored exactly, not flushed */
            ck_assert(tg_tensor_get(tg_identity(tape, x), 0) == v);
            ck_assert(tg_tensor_get(tg_add(tape, x, x), 0) == 2 * v); /* exact */
            ck_assert(tg_tensor_get(tg_relu(tape, x), 0) == (v > 0 ? v : 0));
            ck_assert(tg_tensor_get(tg_scale(tape, x, 0.5), 0) ==
                      (d ? (double)(float)(0.5 * v) : 0.5 * v));
            ck_assert(tg_tensor_get(tg_sigmoid(tape, x), 0) == 0.5);
            ck_assert(tg_tensor_get(tg_tanh(tape, x), 0) == v); /* tanh x = x to rounding */
            ck_assert(tg_tensor_get(tg_sum(tape, x), 0) == v);
            tg_tensor *y = tg_mul(tape, x, vec(dt, 1, (double[]){4}, NULL));
            ck_assert(tg_tensor_get(y, 0) == 4 * v);
            ck_assert_int_eq(tg_backward(tape, y), TG_OK);
            ck_assert(tg_tensor_grad_get(x, 0) == 4);
        }
    }
}
END_TEST

/* ======================================================================================
 * Rows 19-23: backward and custom ops.
 */

/* Row 20: backward twice on an unchanged tape gives the same tape gradients bitwise and
 * parameter gradients that accumulate (exactly twice, as documented). */
START_TEST(row20_backward_twice)
{
    tg_params *p = tg_params_new(TG_F64);
    tg_tensor *w = tg_params_add(p, "w", 2, (int64_t[]){2, 2});
    tg_tensor_write(w, (double[]){0.1, -0.2, 0.3, 0.7}, 4);
    tg_tensor *x = tg_matrix(tape, TG_F64, 2, 2, (double[]){1, 2, 3, 4}, "x");
    tg_tensor_set_requires_grad(x, true);
    tg_tensor *loss = tg_mean(tape, tg_sigmoid(tape, tg_matmul(tape, w, x)));
    ck_assert_int_eq(tg_backward(tape, loss), TG_OK);
    double gx[4], gw[4];
    for (size_t i = 0; i < 4; i++)
        gx[i] = tg_tensor_grad_get(x, i), gw[i] = tg_tensor_grad_get(w, i);
    ck_assert_int_eq(tg_backward(tape, loss), TG_OK);
    for (size_t i = 0; i < 4; i++) {
        ASSERT_BITS_EQ(tg_tensor_grad_get(x, i), gx[i]);
        ASSERT_BITS_EQ(tg_tensor_grad_get(w, i), 2 * gw[i]);
    }
    tg_params_free(p);
}
END_TEST

/* Rows 21-22: an output that ignores a parameter gives it a zero gradient; x*x and a diamond
 * accumulate. */
START_TEST(rows21_22_unused_and_shared)
{
    tg_params *p = tg_params_new(TG_F64);
    tg_tensor *w = tg_params_add(p, "w", 1, (int64_t[]){3});
    tg_tensor_fill(w, 5);
    tg_tensor *x = vec(TG_F64, 3, (double[]){1, -2, 0.5}, "x");
    tg_tensor_set_requires_grad(x, true);
    tg_tensor *sq = tg_mul(tape, x, x);                            /* x² -> 2x */
    tg_tensor *dia = tg_add(tape, tg_tanh(tape, x), tg_sigmoid(tape, x)); /* diamond */
    ck_assert_int_eq(tg_backward(tape, tg_sum(tape, tg_add(tape, sq, dia))), TG_OK);
    const double xs[] = {1, -2, 0.5};
    for (size_t i = 0; i < 3; i++) {
        double t = tanh(xs[i]), s = 1 / (1 + exp(-xs[i]));
        ck_assert_double_eq_tol(tg_tensor_grad_get(x, i), 2 * xs[i] + (1 - t * t) + s * (1 - s),
                                1e-15);
        ck_assert_double_eq(tg_tensor_grad_get(w, i), 0);
    }
    tg_params_free(p);
}
END_TEST

/* Row 23: a custom op whose VJP fails, whose forward or VJP writes NaN, or whose shape rule
 * asks for a bad shape. */
static tg_status
bad_forward(tg_node *n)
{
    intptr_t mode = (intptr_t)tg_node_ctx(n);
    tg_tensor *y = tg_node_output(n);
    for (size_t i = 0; i < tg_tensor_size(y); i++)
        ((double *)tg_tensor_data(y))[i] = mode == 2 ? NAN : 1.0;
    return TG_OK;
}
static tg_status
bad_vjp(tg_node *n)
{
    intptr_t mode = (intptr_t)tg_node_ctx(n);
    if (mode == 1)
        return tg_node_fail(n, TG_ERR_OP, "refused at x = %g", tg_tensor_get(tg_node_input(n, 0), 0));
    if (mode == 4)
        return TG_ERR_OP; /* no message: the engine writes one */
    double *dx = tg_tensor_grad(tg_node_input(n, 0));
    if (dx)
        dx[0] += mode == 3 ? INFINITY : 1.0;
    return TG_OK;
}
static tg_status
bad_shape(tg_node *n, int *ndim, int64_t *dims)
{
    intptr_t mode = (intptr_t)tg_node_ctx(n);
    *ndim = mode == 5 ? 7 : 2;
    dims[0] = mode == 6 ? -4 : 1;
    dims[1] = 1;
    return TG_OK;
}
static const tg_op bad_op = {"wobbly", 1, bad_shape, bad_forward, bad_vjp, NULL};

START_TEST(row23_custom_op_failures)
{
    const struct {
        intptr_t mode;
        bool finite_check, in_backward;
        tg_status status;
        const char *want[3];
    } cases[] = {
        {1, false, true, TG_ERR_OP, {"wobbly", "node #0", "refused at x = 3"}},
        {4, false, true, TG_ERR_OP, {"wobbly", "VJP failed at node #0", "op failed"}},
        {2, true, false, TG_ERR_NONFINITE, {"wobbly", "node #0", "nan"}},
        {3, true, true, TG_ERR_NONFINITE, {"wobbly", "gradient", "inf"}},
        {5, false, false, TG_ERR_ARG, {"wobbly", "rank 7", ""}},
        {6, false, false, TG_ERR_ARG, {"wobbly", "dim 0 is -4", ""}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tg_tape_reset(tape);
        tg_tape_set_check_finite(tape, cases[i].finite_check);
        tg_tensor *x = tg_matrix(tape, TG_F64, 1, 1, (double[]){3}, "x");
        tg_tensor_set_requires_grad(x, true);
        tg_tensor *in[1] = {x};
        tg_tensor *y = tg_custom(tape, &bad_op, in, 1, (void *)cases[i].mode);
        ck_assert_int_eq(tg_tape_status(tape) != TG_OK, !cases[i].in_backward);
        tg_status s = tg_backward(tape, y);
        ck_assert_int_eq(s, cases[i].status);
        ASSERT_ERROR(cases[i].status, cases[i].want[0], cases[i].want[1], cases[i].want[2]);
    }
    tg_tape_set_check_finite(tape, false);
}
END_TEST

/* Row 25: SGD on an empty parameter set, and the general optimizer's bad options leave the
 * parameters bitwise unchanged. */
START_TEST(row25_sgd_edges)
{
    tg_params *empty = tg_params_new(TG_F32);
    tg_sgd *s = tg_sgd_new(empty, &(tg_sgd_options){.lr = 0.1}, NULL);
    ck_assert_ptr_nonnull(s);
    ck_assert_int_eq(tg_sgd_step(s), TG_OK); /* documented: nothing to do */
    tg_sgd_free(s);
    tg_params_free(empty);

    tg_params *p = tg_params_new(TG_F64);
    tg_tensor *w = tg_params_add(p, "w", 1, (int64_t[]){2});
    tg_tensor_write(w, (double[]){1, 2}, 2);
    const char *err = NULL;
    ck_assert_ptr_null(tg_sgd_new(p, &(tg_sgd_options){.lr = 0.1, .weight_decay = -1}, &err));
    ck_assert_ptr_nonnull(err);
    ck_assert_ptr_null(tg_sgd_new(p, &(tg_sgd_options){.lr = 0.1, .momentum = NAN}, &err));
    s = tg_sgd_new(p, &(tg_sgd_options){.lr = 0.1}, &err);
    ((double *)tg_params_grads(p))[0] = 1;
    ck_assert_int_eq(tg_sgd_set_lr(s, INFINITY), TG_ERR_ARG);
    ck_assert_int_eq(tg_sgd_set_lr(s, -0.5), TG_ERR_ARG);
    ck_assert_int_eq(tg_sgd_step(s), TG_OK); /* still at the old, valid rate */
    ck_assert_double_eq_tol(tg_tensor_get(w, 0), 0.9, 1e-15);
    /* NaN gradients are applied (never masked): the caller asked for this step */
    ((double *)tg_params_grads(p))[1] = NAN;
    ck_assert_int_eq(tg_sgd_step(s), TG_OK);
    ck_assert(isnan(tg_tensor_get(w, 1)));
    tg_sgd_free(s);
    tg_params_free(p);
}
END_TEST

/* ======================================================================================
 * Non-finite tracing (tg_tape_set_check_finite).
 */

/* Forward: the first node whose output holds a NaN/Inf is named with its op, position, the
 * element, the shapes and its inputs; nothing after it is recorded. */
START_TEST(finite_trace_forward_names_first_producer)
{
    for (int d = 0; d < 2; d++) {
        tg_dtype dt = d ? TG_F32 : TG_F64;
        double big = d ? 1e30 : 1e200;
        tg_tape_reset(tape);
        tg_tape_set_check_finite(tape, true);
        tg_tensor *x = vec(dt, 3, (double[]){1, big, 2}, "x");
        tg_tensor *a = tg_tanh(tape, x);            /* #0 finite */
        tg_tensor *b = tg_mul(tape, x, x);          /* #1 overflows at [1] */
        tg_tensor *c = tg_mul(tape, b, b);          /* would be the second producer */
        (void)a;
        ASSERT_ERROR(TG_ERR_NONFINITE, "mul: node #1 (mul) produced inf at output[1]",
                     "<mul#1> (1x3)", "inputs: \"x\" (1x3), \"x\" (1x3)");
        ck_assert_ptr_null(tg_tensor_data(c));
        ck_assert_uint_eq(tg_tape_node_count(tape), 2);
        /* a NaN *input* is reported at the first node that reads it */
        tg_tape_reset(tape);
        tg_tensor *n = vec(dt, 2, (double[]){0, NAN}, "n");
        tg_sigmoid(tape, tg_scale(tape, n, 2));
        ASSERT_ERROR(TG_ERR_NONFINITE, "scale: node #0 (scale) produced nan at output[1]",
                     "inputs: \"n\" (1x2)");
        /* off: the same graph records and the values propagate */
        tg_tape_reset(tape);
        tg_tape_set_check_finite(tape, false);
        x = vec(dt, 3, (double[]){1, big, 2}, "x");
        b = tg_mul(tape, tg_mul(tape, x, x), x);
        ck_assert_ptr_null(tg_tape_error(tape));
        ck_assert(isinf(tg_tensor_get(b, 1)));
    }
}
END_TEST

/* Backward: the VJP that first writes a non-finite gradient is named, with the tensor whose
 * gradient it is. The forward is finite: x = 0, c1 = c2 = 1e200, so d/dx = c1·c2 = inf. */
START_TEST(finite_trace_backward_names_vjp)
{
    tg_tape_set_check_finite(tape, true);
    tg_tensor *x = vec(TG_F64, 2, (double[]){0, 0}, "x");
    tg_tensor_set_requires_grad(x, true);
    tg_tensor *c1 = vec(TG_F64, 2, (double[]){1, 1e200}, "c1");
    tg_tensor *c2 = vec(TG_F64, 2, (double[]){1, 1e200}, "c2");
    tg_tensor *y = tg_mul(tape, tg_mul(tape, x, c1), c2);
    tg_tensor *loss = tg_sum(tape, y);
    ck_assert_double_eq(tg_tensor_item(loss), 0);
    ck_assert_int_eq(tg_backward(tape, loss), TG_ERR_NONFINITE);
    ASSERT_ERROR(TG_ERR_NONFINITE, "mul: node #0 (mul) produced inf at gradient[1] of \"x\" (1x2)",
                 "inputs: \"x\" (1x2), \"c1\" (1x2)");
    /* off: backward finishes and the inf is in the gradient */
    tg_tape_reset(tape);
    tg_tape_set_check_finite(tape, false);
    x = vec(TG_F64, 2, (double[]){0, 0}, "x");
    tg_tensor_set_requires_grad(x, true);
    c1 = vec(TG_F64, 2, (double[]){1, 1e200}, "c1");
    c2 = vec(TG_F64, 2, (double[]){1, 1e200}, "c2");
    ck_assert_int_eq(tg_backward(tape, tg_sum(tape, tg_mul(tape, tg_mul(tape, x, c1), c2))), TG_OK);
    ck_assert(isinf(tg_tensor_grad_get(x, 1)));
}
END_TEST

/* The check covers parameters' gradients too, and a loss that turns NaN in training is
 * stopped at the op that made it, not at the loss. */
START_TEST(finite_trace_in_training)
{
    tg_params *p = tg_params_new(TG_F32);
    tg_rng *r = tg_rng_new(3);
    tg_dense l1;
    tg_dense_init(&l1, p, "l1", 2, 4, TG_ACT_SOFTPLUS, TG_EXAMPLES_AS_ROWS, r);
    tg_tensor_fill(l1.weight, 1e30f); /* finite but the product overflows */
    tg_tape_set_check_finite(tape, true);
    tg_tensor *x = tg_matrix(tape, TG_F32, 3, 2, NULL, "x");
    tg_tensor_write(x, (double[]){1e10, 1e10, 1, 1, 0, 0}, 6);
    tg_tensor *h = tg_dense_forward(tape, &l1, x);
    (void)h;
    ASSERT_ERROR(TG_ERR_NONFINITE, "matmul: node #0 (matmul) produced inf", "\"x\" (3x2)",
                 "\"l1/W\" (4x2)");
    tg_rng_free(r);
    tg_params_free(p);
}
END_TEST

/* ======================================================================================
 * Process-global state: floating-point environment, locale, signal handlers.
 */

struct fpstate {
    int round;
    unsigned mxcsr_control; /* MXCSR without the sticky exception flags (bits 0-5) */
    unsigned short x87_control;
};

static struct fpstate
fp_now(void)
{
    struct fpstate s = {fegetround(), 0, 0};
#if defined(__x86_64__) || defined(__i386__)
    s.mxcsr_control = _mm_getcsr() & ~0x3fu;
    __asm__ volatile("fnstcw %0" : "=m"(s.x87_control));
#endif
    return s;
}

static bool
signals_equal(const struct sigaction *a, const struct sigaction *b)
{
    return a->sa_handler == b->sa_handler && a->sa_flags == b->sa_flags;
}

/* Everything the library does that could plausibly touch process state: threads (the pool),
 * files, locale-sensitive parsing, atomic saves (SIGPIPE/SIGXFSZ territory), DOT output. */
static void
exercise_library(void)
{
    char dir[] = "/tmp/tg-rel-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char path[256];

    tg_set_num_threads(2);
    tg_rng *r = tg_rng_new(9);
    tg_params *p = tg_params_new(TG_F32);
    tg_dense l1, l2;
    tg_dense_init(&l1, p, "l1", 64, 128, TG_ACT_GELU, TG_EXAMPLES_AS_ROWS, r);
    tg_dense_init(&l2, p, "l2", 128, 10, TG_ACT_IDENTITY, TG_EXAMPLES_AS_ROWS, r);
    tg_sgd *opt = tg_sgd_new(p, &(tg_sgd_options){.lr = 0.01, .momentum = 0.9}, NULL);
    tg_tape *t = tg_tape_new();
    int32_t labels[64];
    for (int i = 0; i < 64; i++)
        labels[i] = i % 10;
    for (int step = 0; step < 3; step++) {
        tg_tape_reset(t);
        tg_tape_set_check_finite(t, true);
        tg_tensor *x = tg_tensor_new(t, TG_F32, 2, (int64_t[]){64, 64}, "x");
        tg_tensor_fill_uniform(x, r, 1e-39, 1e-38); /* subnormal-heavy inputs */
        tg_tensor *loss = tg_softmax_xent(
            t, tg_dense_forward(t, &l2, tg_dense_forward(t, &l1, x)), labels, 64, 1);
        ck_assert_int_eq(tg_backward(t, loss), TG_OK);
        tg_sgd_step(opt);
    }
    /* an error on purpose */
    tg_matmul(t, tg_matrix(t, TG_F32, 2, 3, NULL, NULL), tg_matrix(t, TG_F32, 2, 3, NULL, NULL));

    FILE *devnull = fopen("/dev/null", "w");
    tg_dot_write(t, &(tg_dot_options){.values = true, .grads = true}, devnull, NULL, 0);
    fclose(devnull);

    snprintf(path, sizeof path, "%s/m.safetensors", dir);
    char err[256];
    ck_assert_int_eq(tg_checkpoint_save_params(p, path, err, sizeof err), TG_OK);
    ck_assert_int_eq(tg_checkpoint_load_params(p, path, err, sizeof err), TG_OK);
    tg_checkpoint_save_params(p, "/nonexistent-dir/x.safetensors", err, sizeof err);

    snprintf(path, sizeof path, "%s/d.csv", dir);
    FILE *f = fopen(path, "w");
    fputs("a,b,label\n1.5,2.25,0\n-3e2,4,1\n", f);
    fclose(f);
    tg_dataset *ds = tg_dataset_new();
    ck_assert_int_eq(tg_dataset_load_csv(ds, path, &(tg_csv_options){.has_labels = true,
                                                                     .label_column = -1}),
                     TG_OK);
    ck_assert_double_eq(((const float *)tg_dataset_data(ds))[0], 1.5);
    tg_dataset_free(ds);
    unlink(path);
    snprintf(path, sizeof path, "%s/m.safetensors", dir);
    unlink(path);
    rmdir(dir);

    tg_tape_free(t);
    tg_sgd_free(opt);
    tg_params_free(p);
    tg_rng_free(r);
    tg_set_num_threads(0);
}

START_TEST(fp_environment_unchanged)
{
    struct fpstate before = fp_now();
    exercise_library();
    struct fpstate after = fp_now();
    ck_assert_int_eq(after.round, before.round);
    ck_assert_uint_eq(after.mxcsr_control, before.mxcsr_control);
    ck_assert_uint_eq(after.x87_control, before.x87_control);

    /* A host that chose other settings keeps them: round-to-zero, FTZ/DAZ on. */
#if defined(__x86_64__) || defined(__i386__)
    unsigned saved = _mm_getcsr();
    _mm_setcsr(saved | 0x8040u); /* FTZ (bit 15) | DAZ (bit 6) */
#endif
    fesetround(FE_TOWARDZERO);
    before = fp_now();
    exercise_library();
    after = fp_now();
    fesetround(FE_TONEAREST);
#if defined(__x86_64__) || defined(__i386__)
    _mm_setcsr(saved);
    if (!getenv("TG_UNDER_VALGRIND")) /* valgrind does not emulate FTZ/DAZ: reads them as 0 */
        ck_assert_uint_eq(after.mxcsr_control & 0x8040u, 0x8040u);
#endif
    ck_assert_int_eq(after.round, FE_TOWARDZERO);
    ck_assert_uint_eq(after.mxcsr_control, before.mxcsr_control);
    ck_assert_uint_eq(after.x87_control, before.x87_control);
}
END_TEST

START_TEST(locale_and_signals_unchanged)
{
    struct sigaction before[65], after;
    int nsig = 65; /* SIGRTMAX on Linux is 64 */
    for (int s = 1; s < nsig; s++)
        sigaction(s, NULL, &before[s]);
    sigset_t mask_before, mask_after;
    sigprocmask(SIG_BLOCK, NULL, &mask_before);

    /* A non-C numeric locale where one exists (C.UTF-8 otherwise): parsing stays C. */
    const char *set = setlocale(LC_ALL, "C.UTF-8");
    char locale_before[256];
    snprintf(locale_before, sizeof locale_before, "%s", setlocale(LC_ALL, NULL));
    locale_t thread_before = uselocale((locale_t)0);

    exercise_library();

    ck_assert_str_eq(setlocale(LC_ALL, NULL), locale_before);
    ck_assert(uselocale((locale_t)0) == thread_before);
    for (int s = 1; s < nsig; s++) {
        if (sigaction(s, NULL, &after) != 0)
            continue;
        ck_assert_msg(signals_equal(&before[s], &after), "signal %d's handler changed", s);
    }
    sigprocmask(SIG_BLOCK, NULL, &mask_after);
    for (int s = 1; s < nsig; s++)
        ck_assert_int_eq(sigismember(&mask_before, s), sigismember(&mask_after, s));
    if (set)
        setlocale(LC_ALL, "C");
}
END_TEST

/* Regression (found by fuzz-idx): a 16-byte IDX header declaring 285 million examples of
 * (16 x 0) values loaded as a data set of empty examples, and a batcher over it allocated
 * 2.3 GB of indices. Empty examples are now a format error naming the count. */
START_TEST(idx_empty_examples_rejected)
{
    char path[] = "/tmp/tg-rel-idx-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    const unsigned char file[16] = {0, 0, 8, 3, 0x10, 0xff, 0x10, 0, 0, 0, 0, 0x10, 0, 0, 0, 0};
    ck_assert_int_eq(write(fd, file, sizeof file), (int)sizeof file);
    close(fd);
    tg_dataset *ds = tg_dataset_new();
    ck_assert_int_eq(tg_dataset_load_idx(ds, path, NULL, NULL), TG_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(tg_dataset_error(ds), "285151232 examples of 0 values"));
    ck_assert_uint_eq(tg_dataset_count(ds), 0);
    tg_dataset_free(ds);
    unlink(path);
}
END_TEST


/* ---- atomic layer init, stale handles, re-entrancy, thread cap ---- */

/* a layer whose second parameter is refused (its name is taken) adds nothing:
 * "<name>/W" does not stay behind, the values are untouched, *layer is not written, and
 * after the refusal is handled the set still builds and trains. */
START_TEST(dense_init_atomic_on_duplicate)
{
    tg_rng *rng = tg_rng_new(3);
    tg_params *p = tg_params_new(TG_F64);
    tg_tensor *taken = tg_params_add(p, "l1/b", 2, (int64_t[]){4, 1});
    ck_assert_int_eq(tg_tensor_fill(taken, 0.25), TG_OK);
    size_t count = tg_params_count(p), size = tg_params_size(p);

    tg_dense layer = {.weight = (tg_tensor *)&layer, .act = TG_ACT_GELU};
    tg_status s = tg_dense_init(&layer, p, "l1", 3, 4, TG_ACT_TANH, TG_EXAMPLES_AS_COLUMNS, rng);
    ck_assert_int_eq(s, TG_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(tg_params_error(p), "\"l1/b\" already exists"));
    ck_assert_uint_eq(tg_params_count(p), count);
    ck_assert_uint_eq(tg_params_size(p), size);
    ck_assert_ptr_null(tg_params_find(p, "l1/W"));
    ck_assert_ptr_eq(tg_tensor_data(taken), tg_params_values(p)); /* re-pointed if moved */
    ck_assert_ptr_eq(tg_params_get(p, 0), taken);
    for (size_t i = 0; i < 4; i++)
        ck_assert_double_eq(tg_tensor_get(taken, i), 0.25);
    ck_assert_ptr_eq(layer.weight, (tg_tensor *)&layer); /* not written */
    ck_assert_int_eq(layer.act, TG_ACT_GELU);

    /* the first refusal stays readable (build, then check once) and later adds still work */
    ck_assert_int_eq(tg_dense_init(&layer, p, "l2", 3, 4, TG_ACT_TANH, TG_EXAMPLES_AS_COLUMNS,
                                   rng),
                     TG_OK);
    ck_assert_int_eq(tg_params_status(p), TG_ERR_ARG);
    ck_assert_ptr_null(tg_sgd_new(p, &(tg_sgd_options){.lr = 0.1}, NULL));
    tg_params_clear_error(p);
    ck_assert_int_eq(tg_params_status(p), TG_OK);
    ck_assert_ptr_null(tg_params_error(p));
    ck_assert_uint_eq(tg_params_count(p), 3);
    ck_assert_ptr_eq(tg_params_get(p, 1), layer.weight);
    ck_assert_ptr_eq(tg_params_get(p, 2), layer.bias);
    ck_assert_double_eq(tg_tensor_get(taken, 3), 0.25);

    tg_sgd *opt = tg_sgd_new(p, &(tg_sgd_options){.lr = 0.1}, NULL);
    ck_assert_ptr_nonnull(opt);
    tg_tensor *a = tg_matrix(tape, TG_F64, 3, 2, (double[]){1, 2, 3, 4, 5, 6}, "A");
    tg_tensor *loss = tg_sum(tape, tg_dense_forward(tape, &layer, a));
    ck_assert_int_eq(tg_backward(tape, loss), TG_OK);
    ck_assert_int_eq(tg_sgd_step(opt), TG_OK);
    ck_assert_double_eq(tg_tensor_get(taken, 0), 0.25); /* not in the layer: no gradient */
    tg_sgd_free(opt);
    tg_params_free(p);
    tg_rng_free(rng);
}
END_TEST

/* out of memory: whichever allocation of the second parameter fails, the set is
 * left empty, and it takes the same layer once memory is back. */
START_TEST(dense_init_atomic_on_allocation_failure)
{
    bool second_failed = false;
    for (fail_at = 0; fail_at < 40; fail_at++) {
        tg_params *p = tg_params_new(TG_F32);
        tg_dense layer = {0};
        calls = 0;
        tg_set_allocator(&failing);
        tg_status s =
            tg_dense_init(&layer, p, "d", 5, 7, TG_ACT_RELU, TG_EXAMPLES_AS_ROWS, NULL);
        tg_set_allocator(NULL);
        if (s == TG_OK) {
            tg_params_free(p);
            break;
        }
        ck_assert_int_eq(s, TG_ERR_NOMEM);
        second_failed |= fail_at >= 4; /* W's own allocations are the first few */
        ck_assert_msg(tg_params_count(p) == 0, "allocation %ld: %zu parameters left behind",
                      fail_at, tg_params_count(p));
        ck_assert_uint_eq(tg_params_size(p), 0);
        ck_assert_ptr_null(layer.weight);
        tg_params_clear_error(p);
        ck_assert_int_eq(tg_dense_init(&layer, p, "d", 5, 7, TG_ACT_RELU, TG_EXAMPLES_AS_ROWS,
                                       NULL),
                         TG_OK);
        ck_assert_uint_eq(tg_params_count(p), 2);
        ck_assert_uint_eq(tg_params_size(p), 5 * 7 + 7);
        tg_params_free(p);
    }
    ck_assert(second_failed);
    fail_at = -1;
}
END_TEST

/* One step of a small graph: x (2x2), tanh, sum, backward; the same each time, so a new step's
 * tensors take the memory the last one's had. */
static void
stale_step(tg_tensor **x, tg_tensor **y, double base)
{
    *x = tg_matrix(tape, TG_F64, 2, 2, (double[]){base, base + 1, base + 2, base + 3}, "x");
    tg_tensor_set_requires_grad(*x, true);
    *y = tg_tanh(tape, *x);
    ck_assert_int_eq(tg_backward(tape, tg_sum(tape, *y)), TG_OK);
}

/* handles 2, 3 and 10 resets old are caught by every accessor and every tensor
 * position of an op or backward, and never read or write the current step's tensors. */
START_TEST(stale_handles_any_age)
{
    const int ages[] = {2, 3, 10};
    for (size_t a = 0; a < sizeof ages / sizeof ages[0]; a++)
        for (int probe = 0; probe < 4; probe++) {
            tg_tape_reset(tape);
            tg_tensor *old_x, *old_y, *x = NULL, *y = NULL;
            stale_step(&old_x, &old_y, 100);
            for (int r = 0; r < ages[a]; r++) {
                tg_tape_reset(tape);
                stale_step(&x, &y, 10 * r);
            }
            const double base = 10.0 * (ages[a] - 1);
            char what[64];
            snprintf(what, sizeof what, "age %d, probe %d", ages[a], probe);
            if (probe == 0) { /* reads and writes through the accessors */
                ck_assert_msg(tg_tensor_data(old_x) == NULL, "%s: data", what);
                ck_assert_msg(tg_tensor_grad(old_x) == NULL, "%s: grad", what);
                ck_assert_msg(tg_tensor_name(old_x) == NULL, "%s: name", what);
                ck_assert_msg(tg_tensor_node(old_y) == NULL, "%s: node", what);
                ck_assert_msg(isnan(tg_tensor_get(old_x, 0)), "%s: get", what);
                ck_assert_msg(isnan(tg_tensor_grad_get(old_x, 0)), "%s: grad_get", what);
                ck_assert_msg(isnan(tg_tensor_item(tg_sum(tape, x)) * 0 +
                                    tg_tensor_get(old_y, 0)),
                              "%s: get y", what);
                double out[4];
                ck_assert_int_eq(tg_tensor_read(old_x, out, 4), TG_ERR_ARG);
                ck_assert_int_eq(tg_tensor_write(old_x, (double[]){-1, -1, -1, -1}, 4),
                                 TG_ERR_ARG);
                ck_assert_int_eq(tg_tensor_fill(old_y, -1), TG_ERR_ARG);
                tg_rng *rng = tg_rng_new(1);
                ck_assert_int_eq(tg_tensor_fill_uniform(old_x, rng, 0, 1), TG_ERR_ARG);
                ck_assert_int_eq(tg_tensor_fill_normal(old_x, rng, 0, 1), TG_ERR_ARG);
                tg_rng_free(rng);
                tg_tensor_set_requires_grad(old_x, false);
                ck_assert(tg_tensor_requires_grad(x));
                /* the current step's tensors are untouched */
                ck_assert_int_eq(tg_tensor_read(x, out, 4), TG_OK);
                for (int i = 0; i < 4; i++)
                    ck_assert_double_eq(out[i], base + i);
                ck_assert_double_eq(tg_tensor_get(y, 0), tanh(base));
                ck_assert_str_eq(tg_tensor_name(x), "x");
                ck_assert_ptr_null(tg_tape_error(tape));
            } else if (probe == 1) { /* as an op's operand */
                tg_add(tape, x, old_x);
                ASSERT_ERROR(TG_ERR_ARG, "add", "input 1", "stale");
            } else if (probe == 2) { /* as the loss */
                ck_assert_int_eq(tg_backward(tape, tg_sum(tape, old_y)), TG_ERR_ARG);
                ASSERT_ERROR(TG_ERR_ARG, "stale");
                tg_tape_reset(tape);
                tg_tensor *fresh = tg_matrix(tape, TG_F64, 1, 1, (double[]){1}, "fresh");
                (void)fresh;
                ck_assert_int_eq(tg_backward(tape, old_y), TG_ERR_ARG);
                ASSERT_ERROR(TG_ERR_ARG, "backward", "stale");
            } else { /* as the seed */
                ck_assert_int_eq(tg_backward_seeded(tape, y, old_x), TG_ERR_ARG);
                ASSERT_ERROR(TG_ERR_ARG, "backward", "seed", "stale");
            }
        }
}
END_TEST

/* where the header memory is really reused: steps of 300 tensors, a handle kept
 * from each; after 40 steps every handle 1 to 15 resets old is still caught (the guarantee of
 * tapegrad.h), and the warm steps allocate nothing. */
START_TEST(stale_window_with_reuse)
{
    enum { STEPS = 40, PER_STEP = 300 };
    tg_tensor *kept[STEPS];
    long before = 0;
    for (int g = 0; g < STEPS; g++) {
        if (g == 1) {
            n_allocs = 0;
            tg_set_allocator(&counting);
            before = n_allocs;
        }
        tg_tape_reset(tape);
        for (int i = 0; i < PER_STEP; i++) {
            tg_tensor *x = tg_matrix(tape, TG_F64, 1, 1, (double[]){g}, NULL);
            if (i == PER_STEP / 2)
                kept[g] = x;
        }
    }
    tg_set_allocator(NULL);
    ck_assert_int_eq(n_allocs - before, 0);
    ck_assert_ptr_null(tg_tape_error(tape));
    for (int age = 1; age <= 15; age++) {
        tg_tensor *h = kept[STEPS - 1 - age];
        ck_assert_msg(tg_tensor_data(h) == NULL, "a handle %d resets old reads data", age);
        ck_assert_int_eq(tg_tensor_write(h, (double[]){-1}, 1), TG_ERR_ARG);
    }
    ck_assert_double_eq(tg_tensor_get(kept[STEPS - 1], 0), STEPS - 1);
    tg_tensor *sum = tg_add(tape, kept[STEPS - 1], kept[STEPS - 1 - 15]);
    ck_assert_ptr_null(tg_tensor_data(sum));
    ASSERT_ERROR(TG_ERR_ARG, "add", "input 1", "stale");

    /* Steps of varying size (the ring grows in the middle of its segments): every tensor of
     * the current step is its own, and the last 15 steps' handles are all caught. */
    tg_tape *t2 = tg_tape_new();
    tg_tensor **all[STEPS];
    size_t sizes[STEPS];
    tg_rng *rng = tg_rng_new(26);
    for (int g = 0; g < STEPS; g++) {
        tg_tape_reset(t2);
        sizes[g] = 1 + tg_rng_u64(rng) % (g % 7 == 6 ? 900 : 120);
        all[g] = malloc(sizes[g] * sizeof *all[g]);
        for (size_t i = 0; i < sizes[g]; i++)
            all[g][i] = tg_matrix(t2, TG_F64, 1, 1, (double[]){g * 1000.0 + (double)i}, NULL);
        for (size_t i = 0; i < sizes[g]; i++)
            ck_assert_double_eq(tg_tensor_item(all[g][i]), g * 1000.0 + (double)i);
        for (int age = 1; age <= 15 && age <= g; age++)
            for (size_t i = 0; i < sizes[g - age]; i++)
                ck_assert_msg(tg_tensor_data(all[g - age][i]) == NULL,
                              "step %d: tensor %zu of the step %d resets before is live", g, i,
                              age);
    }
    for (int g = 0; g < STEPS; g++)
        free(all[g]);
    tg_rng_free(rng);
    tg_tape_free(t2);
}
END_TEST

/* Past the ring: steps of one size reuse every header slot 16 resets on, so from then on an
 * old handle's address is a current tensor's too. Each handle kept, 1 to 99 resets old, must
 * still be caught by the accessors and the ops, and must leave the current step's tensors as
 * they are; the ones 16 or more resets old are named as such. */
START_TEST(stale_handles_past_the_ring)
{
#if !defined(__x86_64__)
    return; /* handles are plain addresses there: only the 15-reset guarantee holds */
#endif
    enum { STEPS = 100, PER_STEP = 40 };
    tg_tensor *kept[STEPS][PER_STEP];
    for (int g = 0; g < STEPS; g++) {
        tg_tape_reset(tape);
        for (int i = 0; i < PER_STEP; i++)
            kept[g][i] = tg_matrix(tape, TG_F64, 1, 1, (double[]){g * 100.0 + i}, "k");
    }
    ck_assert_ptr_null(tg_tape_error(tape));
    const int now = STEPS - 1;
#if defined(__x86_64__)
    /* the premise: an old handle names the same header as a current one (the handle is the
     * header's address in its low 48 bits) */
    const uintptr_t addr = ((uintptr_t)1 << 48) - 1;
    int reused = 0;
    for (int age = 1; age < STEPS; age++)
        for (int i = 0; i < PER_STEP; i++)
            for (int j = 0; j < PER_STEP; j++)
                reused += ((uintptr_t)kept[now - age][i] & addr) ==
                          ((uintptr_t)kept[now][j] & addr);
    ck_assert_msg(reused >= PER_STEP, "%d header slots reused: the test misses its case", reused);
#endif
    for (int age = 1; age < STEPS; age++)
        for (int i = 0; i < PER_STEP; i++) {
            tg_tensor *h = kept[now - age][i];
            ck_assert_msg(tg_tensor_data(h) == NULL, "a handle %d resets old reads data", age);
            ck_assert_msg(isnan(tg_tensor_get(h, 0)), "a handle %d resets old reads", age);
            ck_assert_msg(tg_tensor_name(h) == NULL, "a handle %d resets old has a name", age);
            ck_assert_int_eq(tg_tensor_write(h, (double[]){-1}, 1), TG_ERR_ARG);
            ck_assert_int_eq(tg_tensor_fill(h, -2), TG_ERR_ARG);
            tg_tensor_set_requires_grad(h, true);
        }
    for (int i = 0; i < PER_STEP; i++) {
        ck_assert_double_eq(tg_tensor_item(kept[now][i]), now * 100.0 + i);
        ck_assert(!tg_tensor_requires_grad(kept[now][i]));
    }
    /* as operands (each check resets the tape to clear its error, so the handles age) */
    const int ages[] = {1, 13, 14, 15, 30, 60, 90};
    int resets = 0;
    for (size_t a = 0; a < sizeof ages / sizeof ages[0]; a++) {
        tg_tensor *cur = tg_matrix(tape, TG_F64, 1, 1, (double[]){1}, "cur");
        tg_tensor *y = tg_add(tape, cur, kept[now - ages[a]][0]);
        ck_assert_ptr_null(tg_tensor_data(y));
        /* under 16 resets the header is still its own (named by generation); past the ring's
         * lap (at most 1.5 x 16 steps of one size) it holds a newer tensor */
        int age = ages[a] + resets;
        if (age < 16)
            ASSERT_ERROR(TG_ERR_ARG, "add", "input 1", "stale", "generation");
        else if (age >= 48)
            ASSERT_ERROR(TG_ERR_ARG, "add", "input 1", "stale", "16 or more resets ago");
        else
            ASSERT_ERROR(TG_ERR_ARG, "add", "input 1", "stale");
        tg_tape_reset(tape);
        resets++;
        ck_assert_int_eq(tg_backward(tape, kept[now - ages[a]][1]), TG_ERR_ARG);
        ASSERT_ERROR(TG_ERR_ARG, "backward", "loss", "stale");
        tg_tape_reset(tape);
        resets++;
    }
}
END_TEST

/* A header slot's use count (which handles carry) would wrap after 65535 tensors and let a
 * handle that old match again; the slot is retired instead. One tensor a step on a fresh tape:
 * each of its 64 slots is reused every 64 resets, so slot 0 reaches the limit after about
 * 4.2 million resets, and no tensor made since may have the first one's handle. */
START_TEST(header_slot_retired_before_its_count_wraps)
{
#if !defined(__x86_64__)
    return; /* no use counts in handles there */
#endif
    tg_tape *t = tg_tape_new();
    tg_tensor *first = tg_matrix(t, TG_F64, 1, 1, (double[]){1}, NULL);
    const long resets = 64L * 65536 + 128;
    for (long g = 1; g <= resets; g++) {
        tg_tape_reset(t);
        tg_tensor *x = tg_matrix(t, TG_F64, 1, 1, NULL, NULL);
        if (x == first || (g % 65536 == 0 && tg_tensor_data(first)))
            ck_abort_msg("reset %ld: a handle made %ld resets before is live again", g, g);
    }
    ck_assert_ptr_null(tg_tape_error(t));
    ck_assert_ptr_null(tg_tensor_data(first));
    tg_tape_free(t);
}
END_TEST

/* ---- callbacks that use their own tape ---- */
enum reenter_mode {
    RE_FWD_RESET, RE_FWD_RECORD, RE_FWD_BACKWARD, RE_FWD_FREE, RE_SHAPE_RESET,
    RE_VJP_RESET, RE_VJP_RECORD, RE_VJP_BACKWARD, RE_VJP_FREE, RE_OTHER_TAPE, RE_N
};
struct reenter {
    enum reenter_mode mode;
    tg_tape *tape;
};

static void
reenter_act(struct reenter *r, tg_node *n, bool in_vjp)
{
    tg_tensor *x = tg_node_input(n, 0);
    switch (r->mode) {
    case RE_FWD_RESET: case RE_SHAPE_RESET: case RE_VJP_RESET: tg_tape_reset(r->tape); break;
    case RE_FWD_RECORD: case RE_VJP_RECORD: tg_tanh(r->tape, x); break;
    case RE_FWD_BACKWARD: case RE_VJP_BACKWARD: tg_backward(r->tape, tg_node_output(n)); break;
    case RE_FWD_FREE: case RE_VJP_FREE: tg_tape_free(r->tape); break;
    case RE_OTHER_TAPE: {
        tg_tape *other = tg_tape_new();
        tg_tensor *c = tg_matrix(other, TG_F64, 1, 1, (double[]){2}, NULL);
        ck_assert_double_eq(tg_tensor_item(tg_scale(other, c, in_vjp ? 3 : 4)), in_vjp ? 6 : 8);
        tg_tape_free(other);
        break;
    }
    default: break;
    }
}
static tg_status
reenter_shape(tg_node *n, int *ndim, int64_t *dims)
{
    struct reenter *r = tg_node_ctx(n);
    if (r->mode == RE_SHAPE_RESET)
        reenter_act(r, n, false);
    tg_tensor *x = tg_node_input(n, 0);
    *ndim = tg_tensor_ndim(x);
    for (int i = 0; i < *ndim; i++)
        dims[i] = tg_tensor_dim(x, i);
    return TG_OK;
}
static tg_status
reenter_forward(tg_node *n)
{
    struct reenter *r = tg_node_ctx(n);
    if (r->mode <= RE_FWD_FREE || r->mode == RE_OTHER_TAPE)
        reenter_act(r, n, false);
    double *y = tg_tensor_data(tg_node_output(n));
    const double *x = tg_tensor_data(tg_node_input(n, 0));
    for (size_t i = 0; i < tg_tensor_size(tg_node_output(n)); i++)
        y[i] = 2 * x[i];
    return TG_OK;
}
static tg_status
reenter_vjp(tg_node *n)
{
    struct reenter *r = tg_node_ctx(n);
    if (r->mode >= RE_VJP_RESET)
        reenter_act(r, n, true);
    double *dx = tg_tensor_grad(tg_node_input(n, 0));
    const double *dy = tg_tensor_grad(tg_node_output(n));
    for (size_t i = 0; dx && i < tg_tensor_size(tg_node_output(n)); i++)
        dx[i] += 2 * dy[i];
    return TG_OK;
}
static const tg_op reenter_op = {"reenter", 1, reenter_shape, reenter_forward, reenter_vjp, NULL};

/* A callback that resets, records on, runs backward on or frees its own tape is refused and
 * the record (or backward) fails naming the op, instead of returning OK with partial results;
 * the tape is intact afterwards and runs the next step. Other tapes are fine. */
START_TEST(callbacks_must_not_reenter_their_tape)
{
    static const char *const phase[RE_N] = {
        [RE_FWD_RESET] = "forward", [RE_FWD_RECORD] = "forward",
        [RE_FWD_BACKWARD] = "forward", [RE_FWD_FREE] = "forward",
        [RE_SHAPE_RESET] = "shape rule", [RE_VJP_RESET] = "VJP", [RE_VJP_RECORD] = "VJP",
        [RE_VJP_BACKWARD] = "VJP", [RE_VJP_FREE] = "VJP",
    };
    static const char *const call[RE_N] = {
        [RE_FWD_RESET] = "tape_reset", [RE_FWD_RECORD] = "tanh",
        [RE_FWD_BACKWARD] = "backward", [RE_FWD_FREE] = "tape_free",
        [RE_SHAPE_RESET] = "tape_reset", [RE_VJP_RESET] = "tape_reset",
        [RE_VJP_RECORD] = "tanh", [RE_VJP_BACKWARD] = "backward", [RE_VJP_FREE] = "tape_free",
    };
    for (int m = 0; m < RE_N; m++) {
        tg_tape_reset(tape);
        struct reenter r = {(enum reenter_mode)m, tape};
        tg_tensor *x = tg_matrix(tape, TG_F64, 1, 3, (double[]){1, 2, 3}, "x");
        tg_tensor_set_requires_grad(x, true);
        tg_tensor *a = tg_square(tape, x);
        tg_tensor *y = tg_custom(tape, &reenter_op, &a, 1, &r);
        tg_tensor *loss = tg_sum(tape, y);
        tg_status s = tg_backward(tape, loss);
        if (m == RE_OTHER_TAPE) {
            ck_assert_int_eq(s, TG_OK);
            ck_assert_double_eq(tg_tensor_grad_get(x, 2), 12);
            continue;
        }
        ck_assert_msg(s == TG_ERR_ARG, "mode %d: backward gave %s", m, tg_status_string(s));
        ASSERT_ERROR(TG_ERR_ARG, call[m], "from inside reenter's", phase[m], "node #1");
        if (m < RE_VJP_RESET)
            ck_assert_ptr_null(tg_tensor_data(y)); /* the record failed */
        else
            ck_assert_double_eq(tg_tensor_get(y, 1), 8); /* forward ran, the step is intact */
        /* a shape rule's refusal comes before the node is on the tape, a forward's after */
        size_t nodes = m == RE_SHAPE_RESET ? 1 : m < RE_VJP_RESET ? 2 : 3;
        ck_assert_uint_eq(tg_tape_node_count(tape), nodes);
    }
    /* and the tape runs a clean step afterwards */
    tg_tape_reset(tape);
    tg_tensor *x = tg_matrix(tape, TG_F64, 1, 1, (double[]){2}, "x");
    tg_tensor_set_requires_grad(x, true);
    ck_assert_int_eq(tg_backward(tape, tg_sum(tape, tg_square(tape, x))), TG_OK);
    ck_assert_double_eq(tg_tensor_grad_get(x, 0), 4);
}
END_TEST

/* the thread count is capped at the pool's size, a request past it refused. */
START_TEST(thread_count_capped)
{
    int before = tg_num_threads();
    ck_assert_int_eq(tg_set_num_threads(INT_MAX), TG_ERR_ARG);
    ck_assert_int_eq(tg_num_threads(), before);
    ck_assert_int_eq(tg_set_num_threads(TG_MAX_THREADS + 1), TG_ERR_ARG);
    ck_assert_int_eq(tg_num_threads(), before);
    ck_assert_int_eq(tg_set_num_threads(TG_MAX_THREADS), TG_OK);
    ck_assert_int_eq(tg_num_threads(), TG_MAX_THREADS);
    ck_assert_int_le(TG_MAX_THREADS, 4096);
    ck_assert_int_eq(tg_set_num_threads(0), TG_OK);
    ck_assert_int_eq(tg_num_threads(), before);
    ck_assert_int_le(tg_num_threads(), TG_MAX_THREADS);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("reliability");
    TCase *tc = tcase_create("rows 1-13: shapes, handles, stickiness");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, row01_zero_dims);
    tcase_add_test(tc, row01_empty_with_huge_dim_is_instant);
    tcase_add_test(tc, rows02_05_params_and_wrap);
    tcase_add_test(tc, row04_over_memory_cap);
    tcase_add_test(tc, row04_tape_memory_limit);
    tcase_add_test(tc, row06_allocation_failure_every_site_softmax_step);
    tcase_add_test(tc, row07_null_everywhere);
    tcase_add_test(tc, row08_foreign_tape_both_named);
    tcase_add_test(tc, row09_stale_everywhere);
    tcase_add_test(tc, row09_stale_accessors);
    tcase_add_test(tc, rows11_12_every_binary_op);
    tcase_add_test(tc, idx_empty_examples_rejected);
    tcase_add_test(tc, row13_nothing_after_first_error);
    suite_add_tcase(s, tc);

    tc = tcase_create("rows 14-18: values");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, row14_nan_propagates_every_op);
    tcase_add_test(tc, rows15_16_activation_edges);
    tcase_add_test(tc, rows16_17_logsumexp_edges);
    tcase_add_test(tc, row17_all_minus_inf_row_gradient_is_zero);
    tcase_add_test(tc, mse_edges);
    tcase_add_test(tc, row18_subnormals);
    suite_add_tcase(s, tc);

    tc = tcase_create("rows 19-25: backward, custom ops, SGD");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, row20_backward_twice);
    tcase_add_test(tc, rows21_22_unused_and_shared);
    tcase_add_test(tc, row23_custom_op_failures);
    tcase_add_test(tc, row25_sgd_edges);
    suite_add_tcase(s, tc);

    tc = tcase_create("non-finite tracing");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, finite_trace_forward_names_first_producer);
    tcase_add_test(tc, finite_trace_backward_names_vjp);
    tcase_add_test(tc, finite_trace_in_training);
    suite_add_tcase(s, tc);

    tc = tcase_create("hostile inputs");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, dense_init_atomic_on_duplicate);
    tcase_add_test(tc, dense_init_atomic_on_allocation_failure);
    tcase_add_test(tc, stale_handles_any_age);
    tcase_add_test(tc, stale_window_with_reuse);
    tcase_add_test(tc, stale_handles_past_the_ring);
    tcase_add_test(tc, header_slot_retired_before_its_count_wraps);
    tcase_add_test(tc, callbacks_must_not_reenter_their_tape);
    tcase_add_test(tc, thread_count_capped);
    suite_add_tcase(s, tc);

    tc = tcase_create("process-global state");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, fp_environment_unchanged);
    tcase_add_test(tc, locale_and_signals_unchanged);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
