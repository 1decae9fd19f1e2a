/*
 * tg-bench: training-step benchmark of four MLPs (forward, backward, SGD update).
 *
 *   B-small  MLP 2-16-16-1,         tanh hidden, identity out, MSE (mean),       batch 32
 *   B-seed   MLP 784-256-128-10,    tanh hidden, sigmoid out,  the note's MSE,   batch 128
 *            (J = 1/(2m) Σ (Y - A)², m = batch)
 *   B-seed4  the same with batch 4: products too small to split (does a second thread pay?)
 *   B-mnist  MLP 784-512-256-10,    ReLU hidden, identity out, softmax x-entropy, batch 128
 *   B-wide   MLP 1024-4096-4096-1024, ReLU hidden, identity out, MSE (mean),    batch 256
 *   B-cnn    examples/fashion-mnist-cnn's network,                             batch 64
 *   B-conv1  B-cnn's first convolution alone: 1->32 3x3 pad 1 on 28x28, forward and dW
 *   B-conv2  B-cnn's second alone: 32->64 3x3 pad 1 on 14x14, forward, dX and dW
 *            (each with its bias; backward from a fixed seed; batch 64)
 *   B-lstm   a character-model step: embedding 64 of a 64-symbol vocabulary, one LSTM layer of
 *            256 over T = 32 steps, a dense 256 -> 64 read-out and softmax cross-entropy at
 *            every step (mean over the 32x32 predictions),                        batch 32
 *   B-attn   one pre-norm transformer block (tg_transformer_block: d 256, 4 heads, feed-forward
 *            1024, GELU) on x (16, 128, 256), MSE against a fixed target,         batch 16
 *   B-chain  bookkeeping alone: a chain of 10^5 one-element nodes, y = tanh(y·a + a) three
 *            nodes at a time from one parameter a, recorded and run backward (its line also
 *            gives ns_per_node: the step over the node count)
 *
 * Examples as rows (X is batch x features, Z = X·Wᵀ + b, PyTorch's nn.Linear layout); SGD with
 * lr 0.1, no momentum; inputs and targets fixed, uniform in [0, 1) from a seeded generator.
 *
 * For each network, dtype (f32, f64) and thread count (1, 2) one child process is forked, so
 * each configuration's peak RSS (getrusage ru_maxrss) is its own. The child warms up, then
 * times `reps` runs of `iters` steps (iters chosen so one run takes >= ~0.2 s, at least 1) and
 * prints one line:
 *
 *   net=B-small dtype=f32 threads=1 median_us=… min_us=… max_us=… gflops=… allocs_per_step=…
 *   peak_rss_kib=… kernel=avx2 steps=… peak_gflops=… pct_peak=…
 *
 * GFLOP/s counts the multiply-adds of the three matrix products per step as 2 flops each:
 * forward X·Wᵀ (2·B·in·out per layer), dW (the same) and dX for layers 2 and 3 (the first
 * layer's input needs no gradient, and none is computed). Elementwise work is not counted.
 * Allocations per step are counted through tg_set_allocator over the timed (warm) steps.
 *
 * peak_gflops is the FMA peak for the dtype and thread count (fma-peak.h, as tg-bench-gemm
 * measures it), measured in the same child before the model is built and again after the
 * timed runs, the higher kept: the machine's speed drifts over minutes, and a peak taken in
 * another run can sit in a faster or slower spell than the steps. pct_peak = gflops at the
 * median step over that peak (the target: B-wide at >= 75 % of the FMA peak overall); with no
 * x86 FMA both print nan.
 *
 *   tg-bench [--nets B-small,...,B-chain] [--dtypes f32,f64] [--threads 1,2]
 *            [--reps N] [--min-time S]
 */
#define _POSIX_C_SOURCE 200809L
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <tapegrad/runtime.h>
#include <tapegrad/tapegrad.h>

#include "fma-peak.h"
#include "bench-clock.h"

struct net {
    const char *name;
    int64_t dims[4]; /* in, h1, h2, out */
    int64_t batch;
    tg_activation hidden, out;
    enum { LOSS_MSE, LOSS_MSE_HALF, LOSS_XENT } loss;
    bool cnn; /* the Fashion-MNIST CNN (dims unused): see cnn_step */
    /* one convolution alone, of B-cnn's layer `conv` (1 or 2): dims[0] and dims[3] are the
     * input's and output's sizes per sample; the output's seed is y */
    int conv;
    long chain; /* B-chain: the number of nodes (dims unused) */
    bool lstm;  /* B-lstm (dims: vocabulary, embedding, hidden, vocabulary; batch; T below) */
    bool attn;  /* B-attn (dims: d, heads, feed-forward, d; batch; T below) */
};
#define ATTN_T 128
#define LSTM_STEPS 32

static const struct net nets[] = {
    {"B-small", {2, 16, 16, 1}, 32, TG_ACT_TANH, TG_ACT_IDENTITY, LOSS_MSE, .cnn = false},
    {"B-seed", {784, 256, 128, 10}, 128, TG_ACT_TANH, TG_ACT_SIGMOID, LOSS_MSE_HALF, .cnn = false},
    {"B-seed4", {784, 256, 128, 10}, 4, TG_ACT_TANH, TG_ACT_SIGMOID, LOSS_MSE_HALF, .cnn = false},
    {"B-mnist", {784, 512, 256, 10}, 128, TG_ACT_RELU, TG_ACT_IDENTITY, LOSS_XENT, .cnn = false},
    {"B-wide", {1024, 4096, 4096, 1024}, 256, TG_ACT_RELU, TG_ACT_IDENTITY, LOSS_MSE, .cnn = false},
    /* examples/fashion-mnist-cnn's network on 28x28 inputs: conv 1->32 3x3 pad 1, batch norm,
     * ReLU, 2x2 max pool, conv 32->64, batch norm, ReLU, pool, dropout 0.25, dense 3136->128
     * ReLU, dropout 0.25, dense 128->10, softmax cross-entropy */
    {"B-cnn", {784, 128, 10, 10}, 64, TG_ACT_RELU, TG_ACT_IDENTITY, LOSS_XENT, .cnn = true},
    {"B-conv1", {784, 0, 0, 32 * 784}, 64, TG_ACT_IDENTITY, TG_ACT_IDENTITY, LOSS_MSE, .conv = 1},
    {"B-conv2", {32 * 196, 0, 0, 64 * 196}, 64, TG_ACT_IDENTITY, TG_ACT_IDENTITY, LOSS_MSE,
     .conv = 2},
    {"B-lstm", {64, 64, 256, 64}, 32, TG_ACT_IDENTITY, TG_ACT_IDENTITY, LOSS_XENT, .lstm = true},
    {"B-attn", {256, 4, 1024, 256}, 16, TG_ACT_IDENTITY, TG_ACT_IDENTITY, LOSS_MSE, .attn = true},
    {"B-chain", {1, 0, 0, 1}, 1, TG_ACT_IDENTITY, TG_ACT_IDENTITY, LOSS_MSE, .chain = 100000},
};
/* B-conv1/2: input channels, output channels, height = width */
static const int64_t conv_geom[3][3] = {{0}, {1, 32, 28}, {32, 64, 14}};
#define N_NETS (sizeof nets / sizeof nets[0])

/* ---- allocation counting through the library's hook ---- */
static atomic_size_t n_allocs;

static void *
count_malloc(size_t size, void *ctx)
{
    (void)ctx;
    atomic_fetch_add(&n_allocs, 1);
    return malloc(size);
}

static void *
count_realloc(void *p, size_t size, void *ctx)
{
    (void)ctx;
    atomic_fetch_add(&n_allocs, 1);
    return realloc(p, size);
}

static void
count_free(void *p, void *ctx)
{
    (void)ctx;
    free(p);
}

struct model {
    const struct net *net;
    tg_dtype dt;
    tg_params *params;
    tg_dense layer[3];
    tg_conv2d_layer conv[2];
    tg_batch_norm_layer bn[2];
    tg_rng *drop;
    tg_tensor *chain_a; /* B-chain's parameter */
    tg_embedding_layer embed; /* B-lstm */
    tg_lstm_layer lstm;
    int64_t *tokens; /* B-lstm's inputs (T x batch) */
    tg_transformer_block block; /* B-attn */
    tg_sgd *opt;
    tg_tape *tape;
    void *x, *y;
    int32_t *labels;
};

static int
model_init(struct model *m, const struct net *net, tg_dtype dt)
{
    memset(m, 0, sizeof *m);
    m->net = net;
    m->dt = dt;
    tg_rng *rng = tg_rng_new(42);
    m->params = tg_params_new(dt);
    static const char *const names[3] = {"l1", "l2", "l3"};
    if (net->cnn) {
        tg_conv_options pad1 = tg_conv_defaults();
        pad1.padding[0] = pad1.padding[1] = 1;
        bool ok = tg_conv2d_layer_init(&m->conv[0], m->params, "c1", 1, 32, 3, 3, &pad1, true,
                                       rng) == TG_OK &&
                  tg_batch_norm_layer_init(&m->bn[0], m->params, "bn1", 32) == TG_OK &&
                  tg_conv2d_layer_init(&m->conv[1], m->params, "c2", 32, 64, 3, 3, &pad1, true,
                                       rng) == TG_OK &&
                  tg_batch_norm_layer_init(&m->bn[1], m->params, "bn2", 64) == TG_OK &&
                  tg_dense_init(&m->layer[0], m->params, "l1", 3136, 128, TG_ACT_RELU,
                                TG_EXAMPLES_AS_ROWS, rng) == TG_OK &&
                  tg_dense_init(&m->layer[1], m->params, "l2", 128, 10, TG_ACT_IDENTITY,
                                TG_EXAMPLES_AS_ROWS, rng) == TG_OK;
        m->bn[0].act = m->bn[1].act = TG_ACT_RELU; /* fused, as the example */
        m->drop = tg_rng_new(7);
        if (!ok) {
            fprintf(stderr, "tg-bench: cnn init failed: %s\n", tg_params_error(m->params));
            return -1;
        }
    }
    if (net->chain) {
        m->chain_a = tg_params_add(m->params, "a", 1, (int64_t[]){1});
        if (!m->chain_a || tg_tensor_fill(m->chain_a, 0.5) != TG_OK)
            return -1;
    }
    if (net->lstm) {
        const int64_t *d = net->dims;
        if (tg_embedding_layer_init(&m->embed, m->params, "embed", d[0], d[1], rng) != TG_OK ||
            tg_lstm_layer_init(&m->lstm, m->params, "lstm", d[1], d[2], 1, false, true, rng) !=
                TG_OK ||
            tg_dense_init(&m->layer[0], m->params, "out", d[2], d[3], TG_ACT_IDENTITY,
                          TG_EXAMPLES_AS_ROWS, rng) != TG_OK) {
            fprintf(stderr, "tg-bench: lstm init failed: %s\n", tg_params_error(m->params));
            return -1;
        }
        m->tokens = malloc(LSTM_STEPS * (size_t)net->batch * sizeof *m->tokens);
        if (!m->tokens)
            return -1;
        for (int64_t i = 0; i < LSTM_STEPS * net->batch; i++)
            m->tokens[i] = (int64_t)(tg_rng_u64(rng) % (uint64_t)d[0]);
    }
    if (net->attn && tg_transformer_block_init(&m->block, m->params, "block", net->dims[0],
                                               net->dims[1], net->dims[2], rng) != TG_OK) {
        fprintf(stderr, "tg-bench: block init failed: %s\n", tg_params_error(m->params));
        return -1;
    }
    if (net->conv) {
        tg_conv_options pad1 = tg_conv_defaults();
        pad1.padding[0] = pad1.padding[1] = 1;
        const int64_t *g = conv_geom[net->conv];
        if (tg_conv2d_layer_init(&m->conv[0], m->params, "c", g[0], g[1], 3, 3, &pad1, true,
                                 rng) != TG_OK) {
            fprintf(stderr, "tg-bench: conv init failed: %s\n", tg_params_error(m->params));
            return -1;
        }
    }
    for (int i = 0; i < 3 && !net->cnn && !net->conv && !net->chain && !net->lstm && !net->attn;
         i++)
        if (tg_dense_init(&m->layer[i], m->params, names[i], net->dims[i], net->dims[i + 1],
                          i == 2 ? net->out : net->hidden, TG_EXAMPLES_AS_ROWS, rng) != TG_OK) {
            fprintf(stderr, "tg-bench: dense init failed\n");
            return -1;
        }
    size_t per = net->attn ? ATTN_T : 1; /* B-attn: a sequence per example */
    size_t nx = (size_t)net->batch * per * (size_t)net->dims[0];
    size_t ny = (size_t)net->batch * per * (size_t)net->dims[3];
    size_t es = tg_dtype_size(dt);
    m->x = malloc(nx * es);
    m->y = malloc(ny * es);
    size_t n_labels = (size_t)net->batch * (net->lstm ? LSTM_STEPS : 1);
    m->labels = malloc(n_labels * sizeof *m->labels);
    if (!m->x || !m->y || !m->labels)
        return -1;
    for (size_t i = 0; i < nx; i++) {
        double v = tg_rng_uniform(rng);
        if (dt == TG_F32)
            ((float *)m->x)[i] = (float)v;
        else
            ((double *)m->x)[i] = v;
    }
    for (size_t i = 0; i < ny; i++) {
        double v = tg_rng_uniform(rng);
        if (dt == TG_F32)
            ((float *)m->y)[i] = (float)v;
        else
            ((double *)m->y)[i] = v;
    }
    for (size_t j = 0; j < n_labels; j++)
        m->labels[j] = (int32_t)(j % (size_t)net->dims[3]);
    tg_rng_free(rng);
    m->opt = tg_sgd_new(m->params, &(tg_sgd_options){.lr = 0.1}, NULL);
    m->tape = tg_tape_new();
    /* The CNN's step, as its example trains: only the parameters' gradients are kept, the op
     * outputs' dropped as backward goes (PyTorch's default), which halves its gradient memory.
     * The MLP rows keep every gradient (their published figures were measured so). */
    if (m->tape && net->cnn)
        tg_tape_set_retain_grads(m->tape, false);
    return m->opt && m->tape ? 0 : -1;
}

/* One training step: forward, loss, backward, SGD update (which also zeroes the gradients). */
static int
model_step(struct model *m)
{
    const struct net *net = m->net;
    tg_tape *t = m->tape;
    tg_tape_reset(t);
    tg_tensor *h;
    if (net->chain) {
        h = tg_tensor_wrap(t, m->dt, 1, (int64_t[]){1}, m->x, "x");
        for (long i = 0; i + 3 <= net->chain; i += 3)
            h = tg_tanh(t, tg_add(t, tg_mul(t, h, m->chain_a), m->chain_a));
        while (tg_tape_node_count(t) < (size_t)net->chain)
            h = tg_tanh(t, h);
        tg_backward(t, h);
        if (tg_tape_error(t)) {
            fprintf(stderr, "tg-bench: %s\n", tg_tape_error(t));
            return -1;
        }
        return tg_sgd_step(m->opt) == TG_OK ? 0 : -1;
    }
    if (net->conv) {
        const int64_t *g = conv_geom[net->conv];
        h = tg_tensor_wrap(t, m->dt, 4, (int64_t[]){net->batch, g[0], g[2], g[2]}, m->x, "X");
        tg_tensor_set_requires_grad(h, net->conv == 2); /* as in B-cnn: dX after the first */
        h = tg_conv2d_layer_forward(t, &m->conv[0], h);
        tg_tensor *seed =
            tg_tensor_wrap(t, m->dt, 4, (int64_t[]){net->batch, g[1], g[2], g[2]}, m->y, "dY");
        tg_backward_seeded(t, h, seed);
        if (tg_tape_error(t)) {
            fprintf(stderr, "tg-bench: %s\n", tg_tape_error(t));
            return -1;
        }
        return tg_sgd_step(m->opt) == TG_OK ? 0 : -1;
    }
    if (net->lstm) {
        h = tg_embedding_layer_forward(t, &m->embed, m->tokens, 2,
                                       (int64_t[]){LSTM_STEPS, net->batch});
        h = tg_lstm_layer_forward(t, &m->lstm, h, NULL, NULL, NULL, NULL);
        h = tg_reshape(t, h, 2, (int64_t[]){LSTM_STEPS * net->batch, net->dims[2]});
        h = tg_dense_forward(t, &m->layer[0], h);
        tg_tensor *loss =
            tg_softmax_xent(t, h, m->labels, (size_t)(LSTM_STEPS * net->batch), 1);
        tg_backward(t, loss);
        if (tg_tape_error(t)) {
            fprintf(stderr, "tg-bench: %s\n", tg_tape_error(t));
            return -1;
        }
        return tg_sgd_step(m->opt) == TG_OK ? 0 : -1;
    }
    if (net->attn) {
        int64_t d = net->dims[0];
        h = tg_tensor_wrap(t, m->dt, 3, (int64_t[]){net->batch, ATTN_T, d}, m->x, "X");
        h = tg_transformer_block_forward(t, &m->block, h, false, NULL);
        tg_tensor *y = tg_tensor_wrap(t, m->dt, 3, (int64_t[]){net->batch, ATTN_T, d}, m->y, "Y");
        tg_backward(t, tg_mse(t, h, y));
        if (tg_tape_error(t)) {
            fprintf(stderr, "tg-bench: %s\n", tg_tape_error(t));
            return -1;
        }
        return tg_sgd_step(m->opt) == TG_OK ? 0 : -1;
    }
    if (net->cnn) {
        static const int64_t pool[2] = {2, 2};
        h = tg_tensor_wrap(t, m->dt, 4, (int64_t[]){net->batch, 1, 28, 28}, m->x, "X");
        for (int i = 0; i < 2; i++) {
            h = tg_conv2d_layer_forward(t, &m->conv[i], h);
            h = tg_max_pool2d(t, tg_batch_norm_layer_forward(t, &m->bn[i], h), pool,
                              NULL, NULL);
        }
        h = tg_dropout(t, tg_reshape(t, h, 2, (int64_t[]){net->batch, 3136}), 0.25, m->drop);
        h = tg_dropout(t, tg_dense_forward(t, &m->layer[0], h), 0.25, m->drop);
        h = tg_dense_forward(t, &m->layer[1], h);
    } else {
        h = tg_tensor_wrap(t, m->dt, 2, (int64_t[]){net->batch, net->dims[0]}, m->x, "X");
        for (int i = 0; i < 3; i++)
            h = tg_dense_forward(t, &m->layer[i], h);
    }
    tg_tensor *loss;
    if (net->loss == LOSS_XENT) {
        loss = tg_softmax_xent(t, h, m->labels, (size_t)net->batch, 1);
    } else {
        tg_tensor *y =
            tg_tensor_wrap(t, m->dt, 2, (int64_t[]){net->batch, net->dims[3]}, m->y, "Y");
        loss = net->loss == LOSS_MSE ? tg_mse(t, h, y) : tg_mse_half(t, h, y, 0);
    }
    tg_backward(t, loss);
    if (tg_tape_error(t)) {
        fprintf(stderr, "tg-bench: %s\n", tg_tape_error(t));
        return -1;
    }
    return tg_sgd_step(m->opt) == TG_OK ? 0 : -1;
}

static double
step_flops(const struct net *net)
{
    if (net->conv) { /* forward, dW, and dX for the second */
        const int64_t *g = conv_geom[net->conv];
        double mac = (double)net->batch * (double)(g[2] * g[2]) * (double)g[1] * (double)(g[0] * 9);
        return 2 * mac * (net->conv == 2 ? 3 : 2);
    }
    if (net->cnn) { /* multiply-adds x 2; conv1 needs no dx (its input is the data) */
        double b = (double)net->batch, conv1 = b * 784 * 32 * 9, conv2 = b * 196 * 64 * 288;
        double fc1 = b * 3136 * 128, fc2 = b * 128 * 10;
        return 2 * (2 * conv1 + 3 * conv2 + 3 * fc1 + 3 * fc2);
    }
    if (net->chain)
        return 0; /* no products */
    if (net->attn) { /* q, k, v, out projections, q·kᵀ and P·v, the feed-forward pair; the
                      * VJP's recomputed q·kᵀ is not counted */
        const int64_t *d = net->dims;
        double rows = (double)net->batch * ATTN_T;
        double mac = rows * (double)(4 * d[0] * d[0] + 2 * d[0] * d[2]) +
                     (double)net->batch * 2.0 * ATTN_T * ATTN_T * (double)d[0];
        return 2 * 3 * mac;
    }
    if (net->lstm) { /* x·W_ihᵀ, h·W_hhᵀ and the read-out: forward, dW and dX each */
        const int64_t *d = net->dims;
        double rows = (double)LSTM_STEPS * (double)net->batch;
        return 2 * 3 * rows * (double)(d[1] * 4 * d[2] + d[2] * 4 * d[2] + d[2] * d[3]);
    }
    double f = 0;
    for (int i = 0; i < 3; i++) {
        double mac = (double)net->batch * (double)net->dims[i] * (double)net->dims[i + 1];
        f += 2 * mac * (i == 0 ? 2 : 3);
    }
    return f;
}

/* Runs in the child: measure one configuration and print its line. */
static int
run_config(const struct net *net, tg_dtype dt, int threads, int reps, double min_time)
{
    tg_set_allocator(&(tg_allocator){count_malloc, count_realloc, count_free, NULL});
    tg_set_num_threads(threads);
    const char *isa;
    double peak = fma_peak_gflops(dt == TG_F64, threads, &isa);
    struct model m;
    if (model_init(&m, net, dt) != 0)
        return 1;
    /* Warm-up: first steps allocate the arena, packing buffers and thread pool. B-chain's
     * first 16 steps also take page faults: the tape's header ring holds 16 steps' headers
     * (TG__HEADER_GENS), and each step first touches a fresh sixteenth of it (~18 MB). */
    int min_warm = net->chain ? 17 : 3;
    double t0 = now();
    int warm = 0;
    do {
        if (model_step(&m) != 0)
            return 1;
        warm++;
    } while (warm < min_warm || (now() - t0 < 0.2 && warm < 50));
    double per_step = (now() - t0) / warm;
    int iters = (int)(min_time / per_step);
    if (iters < 1)
        iters = 1;

    double *us = calloc((size_t)reps, sizeof *us);
    size_t allocs0 = atomic_load(&n_allocs);
    for (int r = 0; r < reps; r++) {
        double s = now();
        for (int i = 0; i < iters; i++)
            if (model_step(&m) != 0)
                return 1;
        us[r] = (now() - s) / iters * 1e6;
    }
    size_t allocs = atomic_load(&n_allocs) - allocs0;
    double peak_after = fma_peak_gflops(dt == TG_F64, threads, &isa);
    if (peak_after > peak)
        peak = peak_after;
    double total_steps = (double)reps * iters;
    qsort(us, (size_t)reps, sizeof *us, cmp_double);
    double median = reps % 2 ? us[reps / 2] : 0.5 * (us[reps / 2 - 1] + us[reps / 2]);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double gflops = step_flops(net) / (median * 1e-6) * 1e-9;
    printf("net=%s dtype=%s threads=%d median_us=%.2f min_us=%.2f max_us=%.2f gflops=%.2f "
           "allocs_per_step=%.3f peak_rss_kib=%ld kernel=%s steps=%.0f peak_gflops=%.1f "
           "pct_peak=%.1f",
           net->name, tg_dtype_name(dt), threads, median, us[0], us[reps - 1], gflops,
           (double)allocs / total_steps, ru.ru_maxrss, tg_kernel_name(), total_steps, peak,
           100 * gflops / peak);
    if (net->chain)
        printf(" ns_per_node=%.1f", median * 1e3 / (double)net->chain);
    printf("\n");
    fflush(stdout);
    free(us);
    return 0;
}

int
main(int argc, char **argv)
{
    const char *net_list = NULL, *dtype_list = "f32,f64", *thread_list = "1,2";
    int reps = 7;
    double min_time = 0.2;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--nets") && i + 1 < argc)
            net_list = argv[++i];
        else if (!strcmp(argv[i], "--dtypes") && i + 1 < argc)
            dtype_list = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            thread_list = argv[++i];
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--min-time") && i + 1 < argc)
            min_time = atof(argv[++i]);
        else {
            fprintf(stderr,
                    "usage: %s [--nets B-small,B-seed,B-seed4,B-mnist,B-wide,B-cnn,B-conv1,"
                    "B-conv2,B-lstm,B-attn,B-chain] [--dtypes f32,f64] [--threads 1,2] [--reps N] "
                    "[--min-time S]\n",
                    argv[0]);
            return 2;
        }
    }
    if (reps < 1)
        reps = 1;
    printf("# tg-bench: µs per training step (forward + backward + SGD), median and min-max "
           "of %d runs; kernel %s\n",
           reps, tg_kernel_name());
    fflush(stdout);
    int failed = 0;
    for (size_t n = 0; n < N_NETS; n++) {
        if (!listed(net_list, nets[n].name))
            continue;
        for (int d = 0; d < 2; d++) {
            tg_dtype dt = d ? TG_F64 : TG_F32;
            if (!listed(dtype_list, d ? "f64" : "f32"))
                continue;
            for (const char *p = thread_list; *p;) {
                int threads = atoi(p);
                pid_t pid = fork();
                if (pid == 0)
                    _exit(run_config(&nets[n], dt, threads, reps, min_time));
                int status = 1;
                if (pid < 0 || waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) ||
                    WEXITSTATUS(status) != 0) {
                    fprintf(stderr, "tg-bench: %s %s %d threads failed\n", nets[n].name,
                            d ? "f64" : "f32", threads);
                    failed = 1;
                }
                p = strchr(p, ',');
                if (!p)
                    break;
                p++;
            }
        }
    }
    return failed;
}
