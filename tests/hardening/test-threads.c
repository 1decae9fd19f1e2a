/*
 * Separate tapes used from separate threads at once (RELIABILITY.md row 46). Each thread owns
 * its tape, its parameters and its optimizer and trains the same small network from the same
 * seed; the shared state is only what the library keeps process-wide (the allocator hook, the
 * op table, the kernel choice, the thread count), which must be safe to read concurrently.
 * Run under ThreadSanitizer by tools/ci/sanitizers.sh (suite 'threads'): a data race fails it.
 * Every thread must also get bit-identical results to a single-threaded run.
 *
 * One tape shared by two threads is unsupported (documented in tapegrad.h) and not tested.
 */
#include <check.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tapegrad/tapegrad.h>

#define N_THREADS 4
#define STEPS 30

struct job {
    uint64_t seed;
    double loss; /* final loss */
    double w0;   /* a weight after training */
    char error[256];
    bool expect_error; /* this thread also provokes errors on its own tape */
};

static void *
train(void *arg)
{
    struct job *job = arg;
    tg_rng *rng = tg_rng_new(job->seed);
    tg_params *p = tg_params_new(TG_F64);
    tg_tape *t = tg_tape_new();
    tg_dense l1, l2;
    tg_multihead_attention att;
    tg_multihead_attention_init(&att, p, "att", 4, 2, rng);
    tg_dense_init(&l1, p, "l1", 4, 16, TG_ACT_TANH, TG_EXAMPLES_AS_ROWS, rng);
    tg_dense_init(&l2, p, "l2", 16, 3, TG_ACT_IDENTITY, TG_EXAMPLES_AS_ROWS, rng);
    tg_sgd *opt = tg_sgd_new(p, &(tg_sgd_options){.lr = 0.1, .momentum = 0.9}, NULL);
    double x[32 * 4];
    int32_t labels[32];
    for (int i = 0; i < 32 * 4; i++)
        x[i] = tg_rng_normal(rng);
    for (int i = 0; i < 32; i++)
        labels[i] = (int32_t)(tg_rng_u64(rng) % 3);
    for (int step = 0; step < STEPS; step++) {
        tg_tape_reset(t);
        tg_tape_set_check_finite(t, step & 1);
        tg_tensor *in = tg_matrix(t, TG_F64, 32, 4, x, "x");
        /* the 32 rows as 4 sequences of 8, through causal self-attention first */
        tg_tensor *seq = tg_reshape(t, in, 3, (int64_t[]){4, 8, 4});
        in = tg_reshape(t, tg_multihead_attention_forward(t, &att, seq, true, NULL), 2,
                        (int64_t[]){32, 4});
        tg_tensor *loss = tg_softmax_xent(t, tg_dense_forward(t, &l2, tg_dense_forward(t, &l1, in)),
                                          labels, 32, 1);
        if (job->expect_error && step % 5 == 0) {
            /* errors are per tape: this must not disturb the other threads */
            tg_matmul(t, in, in);
            snprintf(job->error, sizeof job->error, "%s", tg_tape_error(t) ? tg_tape_error(t) : "");
            continue;
        }
        tg_backward(t, loss);
        if (tg_tape_error(t)) {
            snprintf(job->error, sizeof job->error, "step %d: %s", step, tg_tape_error(t));
            break;
        }
        job->loss = tg_tensor_item(loss);
        tg_sgd_step(opt);
    }
    job->w0 = tg_tensor_get(l1.weight, 0);
    tg_sgd_free(opt);
    tg_tape_free(t);
    tg_params_free(p);
    tg_rng_free(rng);
    return NULL;
}

START_TEST(separate_tapes_in_parallel)
{
    struct job ref = {.seed = 42};
    train(&ref);
    ck_assert_str_eq(ref.error, "");

    pthread_t th[N_THREADS];
    struct job jobs[N_THREADS];
    for (int i = 0; i < N_THREADS; i++) {
        jobs[i] = (struct job){.seed = 42, .expect_error = i == N_THREADS - 1};
        ck_assert_int_eq(pthread_create(&th[i], NULL, train, &jobs[i]), 0);
    }
    for (int i = 0; i < N_THREADS; i++)
        ck_assert_int_eq(pthread_join(th[i], NULL), 0);
    for (int i = 0; i < N_THREADS - 1; i++) {
        ck_assert_msg(jobs[i].error[0] == '\0', "thread %d: %s", i, jobs[i].error);
        /* bit-identical to the single-threaded run */
        ck_assert(memcmp(&jobs[i].loss, &ref.loss, sizeof ref.loss) == 0);
        ck_assert(memcmp(&jobs[i].w0, &ref.w0, sizeof ref.w0) == 0);
    }
    ck_assert_ptr_nonnull(strstr(jobs[N_THREADS - 1].error, "matmul"));
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("threads");
    TCase *tc = tcase_create("separate tapes");
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, separate_tapes_in_parallel);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
