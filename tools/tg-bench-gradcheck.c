/*
 * tg-bench-gradcheck: time the whole-graph gradient check, element by element and in fast
 * mode, on two float64 MLPs of 784-256-128-10 with batch 4 (examples as rows, nn.Linear's
 * layout); tools/bench_torch.py --gradcheck runs torch.autograd.gradcheck on the same
 * networks beside it.
 *
 *   G-mlp   tanh, sigmoid, identity, softmax cross-entropy (labels i mod 10)
 *   B-seed  tg-bench's B-seed: tanh, tanh, sigmoid, the note's J = 1/(2m) Σ (Y − A)²
 *
 * The checked inputs are the six parameters (235146 elements); X and Y are constants.
 * Weights from tg_dense_init with seed 42, X and Y uniform in [0, 1) from the same generator.
 *
 *   tg-bench-gradcheck [--nets G-mlp,B-seed] [--modes full,fast] [--projections N]
 *                      [--max-elements K] [--reps N] [--threads N]
 *
 * full: tg_gradcheck with every element (2 forward runs each), or with --max-elements K a
 * seeded subset of K elements per tensor; fast: fast_projections = N (default 1, as PyTorch's
 * fast_mode, which draws one direction per input). Each configuration runs one untimed check,
 * then `reps` timed ones (default 5), and prints
 *
 *   net=G-mlp mode=fast checked=6 evals=13 calls=13 median_ms=… min_ms=… max_ms=…
 *   per_eval_us=… pass=1 elements=235146 threads=1
 *
 * checked: elements compared (full) or projections (fast), over all tensors; evals: the
 * evaluations of f a check makes, 1 + 2·checked (one with backward, two a comparison);
 * calls: how many of them ran the function (counted): the element check runs it once and
 * replays its graph for the rest (gradcheck.c), so there a perturbation of the first layer's
 * weight costs more than one of the last's, and a subset's time does not scale to every
 * element by per_eval_us (the median over evals) as fast mode's and PyTorch's do. Exit
 * status 1 when a check does not pass.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <tapegrad/gradcheck.h>
#include <tapegrad/runtime.h>
#include <tapegrad/tapegrad.h>

#include "bench-clock.h"

#define BATCH 4

struct gnet {
    const char *name;
    tg_activation act[3];
    bool xent; /* softmax cross-entropy; else the note's 1/(2m) Σ (Y − A)² */
};

static const struct gnet gnets[] = {
    {"G-mlp", {TG_ACT_TANH, TG_ACT_SIGMOID, TG_ACT_IDENTITY}, true},
    {"B-seed", {TG_ACT_TANH, TG_ACT_TANH, TG_ACT_SIGMOID}, false},
};
#define N_GNETS (sizeof gnets / sizeof gnets[0])

static const int64_t dims[4] = {784, 256, 128, 10};

struct bench {
    const struct gnet *net;
    tg_dense layer[3];
    int32_t labels[BATCH];
    int calls; /* runs of the function */
};

/* inputs: W1, b1, W2, b2, W3, b3, X, Y */
static tg_tensor *
loss_fn(tg_tape *t, tg_tensor *const *in, void *ctx)
{
    struct bench *b = ctx;
    b->calls++;
    tg_tensor *h = in[6];
    for (int l = 0; l < 3; l++) {
        tg_dense d = b->layer[l];
        d.weight = in[2 * l];
        d.bias = in[2 * l + 1];
        h = tg_dense_forward(t, &d, h);
    }
    return b->net->xent ? tg_softmax_xent(t, h, b->labels, BATCH, 1)
                        : tg_mse_half(t, h, in[7], 0);
}

/* One configuration: an untimed check, then `reps` timed ones; prints its line. */
static int
run(const struct gnet *net, bool fast, int projections, size_t max_elements, int reps,
    int threads)
{
    tg_rng *rng = tg_rng_new(42);
    tg_params *p = tg_params_new(TG_F64);
    tg_tape *holder = tg_tape_new();
    struct bench b = {.net = net};
    static const char *const names[3] = {"l1", "l2", "l3"};
    for (int l = 0; l < 3; l++)
        if (tg_dense_init(&b.layer[l], p, names[l], dims[l], dims[l + 1], net->act[l],
                          TG_EXAMPLES_AS_ROWS, rng) != TG_OK) {
            fprintf(stderr, "tg-bench-gradcheck: %s\n", tg_params_error(p));
            return 2;
        }
    for (int i = 0; i < BATCH; i++)
        b.labels[i] = i % (int32_t)dims[3];
    tg_tensor *in[8];
    for (int l = 0; l < 3; l++) {
        in[2 * l] = b.layer[l].weight;
        in[2 * l + 1] = b.layer[l].bias;
    }
    in[6] = tg_matrix(holder, TG_F64, BATCH, dims[0], NULL, "X");
    in[7] = tg_matrix(holder, TG_F64, BATCH, dims[3], NULL, "Y");
    tg_tensor_fill_uniform(in[6], rng, 0, 1);
    tg_tensor_fill_uniform(in[7], rng, 0, 1);
    static const bool wrt[8] = {true, true, true, true, true, true, false, false};
    tg_gradcheck_options o = tg_gradcheck_defaults();
    o.wrt = wrt;
    o.max_elements = max_elements;
    o.fast_projections = fast ? projections : 0;

    double *ms = calloc((size_t)reps, sizeof *ms);
    bool pass = true;
    size_t checked = 0, elements = 0;
    int calls = 0;
    for (int r = -1; r < reps; r++) { /* r = -1: warm-up, untimed */
        tg_gradcheck_report rep;
        b.calls = 0;
        double t0 = now();
        tg_status s = tg_gradcheck(loss_fn, &b, in, 8, &o, &rep);
        double t1 = now();
        if (s != TG_OK && s != TG_ERR_CHECK) {
            fprintf(stderr, "tg-bench-gradcheck: %s: %s\n", net->name, rep.message);
            tg_gradcheck_report_free(&rep);
            return 2;
        }
        if (!rep.pass)
            tg_gradcheck_report_print(&rep, stderr, false);
        pass &= rep.pass;
        checked = elements = 0;
        for (size_t i = 0; i < rep.n_tensors; i++) {
            checked += rep.tensors[i].checked;
            elements += rep.tensors[i].size;
        }
        calls = b.calls;
        if (r >= 0)
            ms[r] = (t1 - t0) * 1e3;
        tg_gradcheck_report_free(&rep);
    }
    double med = median(ms, reps); /* sorts ms */
    size_t evals = 1 + 2 * checked;
    printf("net=%s mode=%s checked=%zu evals=%zu calls=%d median_ms=%.3f min_ms=%.3f "
           "max_ms=%.3f per_eval_us=%.2f pass=%d elements=%zu threads=%d\n",
           net->name, fast ? "fast" : "full", checked, evals, calls, med, ms[0], ms[reps - 1],
           med * 1e3 / (double)evals, pass, elements, threads);
    fflush(stdout);
    free(ms);
    tg_tape_free(holder);
    tg_params_free(p);
    tg_rng_free(rng);
    return pass ? 0 : 1;
}

int
main(int argc, char **argv)
{
    const char *nets = "G-mlp,B-seed", *modes = "full,fast";
    int projections = 1, reps = 5, threads = 1;
    size_t max_elements = SIZE_MAX;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--nets") && i + 1 < argc)
            nets = argv[++i];
        else if (!strcmp(argv[i], "--modes") && i + 1 < argc)
            modes = argv[++i];
        else if (!strcmp(argv[i], "--projections") && i + 1 < argc)
            projections = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--max-elements") && i + 1 < argc)
            max_elements = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else {
            fprintf(stderr,
                    "usage: %s [--nets G-mlp,B-seed] [--modes full,fast] [--projections N] "
                    "[--max-elements K] [--reps N] [--threads N]\n",
                    argv[0]);
            return 2;
        }
    }
    if (projections < 1 || reps < 1 || threads < 1 || max_elements == 0) {
        fprintf(stderr, "tg-bench-gradcheck: --projections, --reps, --threads and "
                        "--max-elements must be >= 1\n");
        return 2;
    }
    if (tg_set_num_threads(threads) != TG_OK) {
        fprintf(stderr, "tg-bench-gradcheck: cannot use %d threads\n", threads);
        return 2;
    }
    int status = 0;
    for (size_t n = 0; n < N_GNETS; n++)
        for (int fast = 0; fast < 2; fast++)
            if (listed(nets, gnets[n].name) && listed(modes, fast ? "fast" : "full")) {
                int s = run(&gnets[n], fast, projections, max_elements, reps, threads);
                status = s > status ? s : status;
            }
    return status;
}
