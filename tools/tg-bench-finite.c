/*
 * tg-bench-finite: what non-finite tracing (tg_tape_set_check_finite) costs.
 *
 * Times full training steps (forward, backward, SGD) of two workloads with tracing off, on,
 * and off again (the second "off" shows the run-to-run noise, so "off costs nothing" can be
 * read against it):
 *   mlp:   784-256-256-10 tanh MLP, batch 64, f32, softmax cross-entropy (GEMM-bound)
 *   chain: 40 elementwise ops on a 256x256 f32 tensor (memory-bound: the worst case, since
 *          the check reads every output and gradient once more)
 * Prints the median step time of each mode and the overhead of "on" relative to "off".
 *
 *   tg-bench-finite [steps]      (default 200; TG_NUM_THREADS applies to the GEMMs)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <tapegrad/runtime.h>
#include <tapegrad/tapegrad.h>

#include "bench-clock.h"

struct model {
    tg_params *p;
    tg_dense l[3];
    tg_sgd *opt;
    tg_rng *rng;
    float *x;
    int32_t *labels;
};

static tg_status
mlp_step(tg_tape *t, struct model *m)
{
    tg_tape_reset(t);
    tg_tensor *h = tg_tensor_wrap(t, TG_F32, 2, (int64_t[]){64, 784}, m->x, "x");
    for (int i = 0; i < 3; i++)
        h = tg_dense_forward(t, &m->l[i], h);
    tg_status s = tg_backward(t, tg_softmax_xent(t, h, m->labels, 64, 1));
    if (s == TG_OK)
        s = tg_sgd_step(m->opt);
    return s;
}

static tg_status
chain_step(tg_tape *t, struct model *m)
{
    tg_tape_reset(t);
    tg_tensor *x = tg_tensor_wrap(t, TG_F32, 2, (int64_t[]){256, 256}, m->x, "x");
    tg_tensor_set_requires_grad(x, true);
    tg_tensor *h = x;
    for (int i = 0; i < 10; i++) {
        h = tg_tanh(t, h);
        h = tg_add(t, h, x);
        h = tg_scale(t, h, 0.5);
        h = tg_mul(t, h, x);
    }
    return tg_backward(t, tg_mean(t, h));
}

static double
median_step(tg_status (*step)(tg_tape *, struct model *), struct model *m, bool check, int steps)
{
    tg_tape *t = tg_tape_new();
    tg_tape_set_check_finite(t, check);
    double *times = malloc((size_t)steps * sizeof *times);
    for (int i = 0; i < 5; i++) /* warm-up: arena, page faults, thread pool */
        step(t, m);
    for (int i = 0; i < steps; i++) {
        tg_tape_set_check_finite(t, check);
        double t0 = now();
        tg_status s = step(t, m);
        times[i] = now() - t0;
        if (s != TG_OK) {
            fprintf(stderr, "step failed: %s\n", tg_tape_error(t));
            exit(1);
        }
    }
    qsort(times, (size_t)steps, sizeof *times, cmp_double);
    double med = times[steps / 2];
    free(times);
    tg_tape_free(t);
    return med;
}

int
main(int argc, char **argv)
{
    int steps = argc > 1 ? atoi(argv[1]) : 200;
    if (steps < 1)
        steps = 1;
    struct model m = {0};
    m.rng = tg_rng_new(1);
    m.p = tg_params_new(TG_F32);
    const int64_t sizes[] = {784, 256, 256, 10};
    const char *names[] = {"l1", "l2", "l3"};
    for (int i = 0; i < 3; i++)
        tg_dense_init(&m.l[i], m.p, names[i], sizes[i], sizes[i + 1],
                      i < 2 ? TG_ACT_TANH : TG_ACT_IDENTITY, TG_EXAMPLES_AS_ROWS, m.rng);
    m.opt = tg_sgd_new(m.p, &(tg_sgd_options){.lr = 1e-3}, NULL);
    m.x = malloc(256 * 784 * sizeof *m.x);
    m.labels = malloc(64 * sizeof *m.labels);
    for (int i = 0; i < 256 * 784; i++)
        m.x[i] = (float)(tg_rng_uniform(m.rng) - 0.5);
    for (int i = 0; i < 64; i++)
        m.labels[i] = i % 10;

    printf("tg-bench-finite: median of %d steps, kernel %s, %d thread(s)\n", steps,
           tg_kernel_name(), tg_num_threads());
    printf("%-6s %12s %12s %12s %10s\n", "graph", "off (us)", "on (us)", "off again", "overhead");
    struct {
        const char *name;
        tg_status (*step)(tg_tape *, struct model *);
    } work[] = {{"mlp", mlp_step}, {"chain", chain_step}};
    for (size_t w = 0; w < 2; w++) {
        double off = median_step(work[w].step, &m, false, steps);
        double on = median_step(work[w].step, &m, true, steps);
        double off2 = median_step(work[w].step, &m, false, steps);
        double base = off < off2 ? off : off2;
        printf("%-6s %12.1f %12.1f %12.1f %9.1f%%\n", work[w].name, off * 1e6, on * 1e6,
               off2 * 1e6, 100 * (on - base) / base);
    }
    free(m.x);
    free(m.labels);
    tg_sgd_free(m.opt);
    tg_params_free(m.p);
    tg_rng_free(m.rng);
    return 0;
}
