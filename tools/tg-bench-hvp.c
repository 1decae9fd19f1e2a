/*
 * tg-bench-hvp: forward mode and Hessian-vector products on the benchmark MLPs.
 *
 *   B-mnist  784-512-256-10, ReLU hidden, identity out, softmax cross-entropy, batch 128
 *   B-seed   784-256-128-10, tanh hidden, sigmoid out, the note's MSE,        batch 128
 *
 * (tg-bench's networks, examples as rows.) Per network, dtype and thread count, one line:
 *
 *   net=B-mnist dtype=f32 threads=1 forward_us=… jvp_us=… jvp_over_forward=… hvp_for_us=…
 *   hvp_ror_us=… hvp_agree=…
 *
 * forward_us: recording the loss (reset, forward) — the cost a JVP is measured against;
 * jvp_us: tg_jvp over that recording along a random direction of every parameter (the pass
 * alone; the recording is not repeated); hvp_for_us / hvp_ror_us: one Hessian-vector product
 * with respect to every parameter, from nothing: reset, forward, tg_hvp in forward-over-reverse
 * or reverse-over-reverse mode (PyTorch's torch.autograd.functional.hvp does the same work:
 * forward, gradient with create_graph, and its derivative); hvp_agree: the largest difference
 * of the two modes' products over the largest |H·v| entry. Each figure is the median of
 * `reps` runs of enough repetitions to last `min_time`.
 *
 *   tg-bench-hvp [--nets B-mnist,B-seed] [--dtypes f32,f64] [--threads 1,2] [--reps N]
 *                [--min-time S]
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tapegrad/runtime.h>
#include <tapegrad/tapegrad.h>

#include "bench-clock.h"

struct net {
    const char *name;
    int64_t dims[4];
    tg_activation hidden, out;
    bool xent; /* else the note's MSE, 1/(2m) Σ (Y − A)² */
};

static const struct net nets[] = {
    {"B-mnist", {784, 512, 256, 10}, TG_ACT_RELU, TG_ACT_IDENTITY, true},
    {"B-seed", {784, 256, 128, 10}, TG_ACT_TANH, TG_ACT_SIGMOID, false},
};
#define BATCH 128

struct model {
    const struct net *net;
    tg_dtype dt;
    tg_params *p;
    tg_dense layer[3];
    tg_tape *t;
    void *x, *y;
    int32_t labels[BATCH];
    tg_tensor *wrt[6];
    void *v[6];
};

static int
model_init(struct model *m, const struct net *net, tg_dtype dt)
{
    memset(m, 0, sizeof *m);
    m->net = net, m->dt = dt;
    tg_rng *r = tg_rng_new(42);
    m->p = tg_params_new(dt);
    static const char *const names[3] = {"l1", "l2", "l3"};
    for (int i = 0; i < 3; i++)
        if (tg_dense_init(&m->layer[i], m->p, names[i], net->dims[i], net->dims[i + 1],
                          i == 2 ? net->out : net->hidden, TG_EXAMPLES_AS_ROWS, r) != TG_OK)
            return -1;
    size_t es = tg_dtype_size(dt), nx = BATCH * (size_t)net->dims[0], ny = BATCH * 10;
    m->x = malloc(nx * es), m->y = malloc(ny * es);
    if (!m->x || !m->y)
        return -1;
    for (size_t i = 0; i < nx + ny; i++) {
        double u = tg_rng_uniform(r);
        void *dst = i < nx ? m->x : m->y;
        size_t j = i < nx ? i : i - nx;
        if (dt == TG_F32)
            ((float *)dst)[j] = (float)u;
        else
            ((double *)dst)[j] = u;
    }
    for (int j = 0; j < BATCH; j++)
        m->labels[j] = j % 10;
    for (size_t i = 0; i < tg_params_count(m->p); i++) {
        m->wrt[i] = tg_params_get(m->p, i);
        size_t n = tg_tensor_size(m->wrt[i]);
        m->v[i] = malloc(n * es);
        if (!m->v[i])
            return -1;
        for (size_t j = 0; j < n; j++) {
            double z = tg_rng_normal(r);
            if (dt == TG_F32)
                ((float *)m->v[i])[j] = (float)z;
            else
                ((double *)m->v[i])[j] = z;
        }
    }
    tg_rng_free(r);
    m->t = tg_tape_new();
    return m->t ? 0 : -1;
}

static tg_tensor *
forward(struct model *m)
{
    tg_tape *t = m->t;
    tg_tape_reset(t);
    tg_tensor *h = tg_tensor_wrap(t, m->dt, 2, (int64_t[]){BATCH, m->net->dims[0]}, m->x, "X");
    for (int i = 0; i < 3; i++)
        h = tg_dense_forward(t, &m->layer[i], h);
    if (m->net->xent)
        return tg_softmax_xent(t, h, m->labels, BATCH, 1);
    return tg_mse_half(t, h, tg_tensor_wrap(t, m->dt, 2, (int64_t[]){BATCH, 10}, m->y, "Y"), 0);
}

/* The directions as tensors of the current recording */
static void
directions(struct model *m, tg_tensor **v)
{
    for (size_t i = 0; i < tg_params_count(m->p); i++) {
        const tg_tensor *w = m->wrt[i];
        int64_t dims[2] = {tg_tensor_dim(w, 0), tg_tensor_ndim(w) > 1 ? tg_tensor_dim(w, 1) : 1};
        v[i] = tg_tensor_wrap(m->t, m->dt, tg_tensor_ndim(w), dims, m->v[i], "v");
    }
}

enum what { FORWARD, JVP, HVP_FOR, HVP_ROR };

static int
run_once(struct model *m, enum what w, tg_tensor **hv)
{
    if (w == JVP) { /* the recording is made once, outside the timing */
        tg_tensor *v[6];
        directions(m, v);
        return tg_jvp(m->t, (int)tg_params_count(m->p), m->wrt, v) == TG_OK ? 0 : -1;
    }
    tg_tensor *f = forward(m);
    if (w == FORWARD)
        return tg_tape_status(m->t) == TG_OK ? 0 : -1;
    tg_tensor *v[6];
    directions(m, v);
    tg_hvp_mode mode = w == HVP_FOR ? TG_HVP_FORWARD_OVER_REVERSE : TG_HVP_REVERSE_OVER_REVERSE;
    return tg_hvp(m->t, f, (int)tg_params_count(m->p), m->wrt, v, mode, hv) == TG_OK ? 0 : -1;
}

static double
time_it(struct model *m, enum what w, int reps, double min_time)
{
    tg_tensor *hv[6];
    if (w == JVP)
        forward(m);
    double t0 = now();
    int warm = 0;
    do {
        if (run_once(m, w, hv) != 0) {
            fprintf(stderr, "tg-bench-hvp: %s\n", tg_tape_error(m->t));
            exit(1);
        }
        warm++;
    } while (warm < 2 || (now() - t0 < 0.2 && warm < 50));
    int iters = (int)(min_time / ((now() - t0) / warm));
    if (iters < 1)
        iters = 1;
    double *us = calloc((size_t)reps, sizeof *us);
    for (int r = 0; r < reps; r++) {
        double s = now();
        for (int i = 0; i < iters; i++)
            run_once(m, w, hv);
        us[r] = (now() - s) / iters * 1e6;
    }
    double med = median(us, reps);
    free(us);
    return med;
}

/* max |H·v (forward over reverse) − H·v (reverse over reverse)| / max |H·v| */
static double
modes_agree(struct model *m)
{
    size_t n = tg_params_count(m->p);
    tg_tensor *hv[6];
    double *a[6], diff = 0, big = 0;
    run_once(m, HVP_FOR, hv);
    for (size_t i = 0; i < n; i++) {
        a[i] = malloc(tg_tensor_size(hv[i]) * sizeof(double));
        tg_tensor_read(hv[i], a[i], tg_tensor_size(hv[i]));
    }
    run_once(m, HVP_ROR, hv);
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < tg_tensor_size(hv[i]); j++) {
            double b = tg_tensor_get(hv[i], j);
            diff = fmax(diff, fabs(a[i][j] - b));
            big = fmax(big, fabs(b));
        }
        free(a[i]);
    }
    return big > 0 ? diff / big : diff;
}

int
main(int argc, char **argv)
{
    const char *net_list = "B-mnist,B-seed", *dtypes = "f32,f64", *threads = "1,2";
    int reps = 7;
    double min_time = 0.2;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--nets") && i + 1 < argc)
            net_list = argv[++i];
        else if (!strcmp(argv[i], "--dtypes") && i + 1 < argc)
            dtypes = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = argv[++i];
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--min-time") && i + 1 < argc)
            min_time = atof(argv[++i]);
        else {
            fprintf(stderr,
                    "usage: %s [--nets B-mnist,B-seed] [--dtypes f32,f64] [--threads 1,2] "
                    "[--reps N] [--min-time S]\n",
                    argv[0]);
            return 2;
        }
    }
    if (reps < 1)
        reps = 1;
    for (size_t k = 0; k < sizeof nets / sizeof nets[0]; k++) {
        if (!listed(net_list, nets[k].name))
            continue;
        for (int d = 0; d < 2; d++) {
            tg_dtype dt = d ? TG_F64 : TG_F32;
            if (!listed(dtypes, tg_dtype_name(dt)))
                continue;
            for (int th = 1; th <= 2; th++) {
                char thn[4];
                snprintf(thn, sizeof thn, "%d", th);
                if (!listed(threads, thn))
                    continue;
                tg_set_num_threads(th);
                struct model m;
                if (model_init(&m, &nets[k], dt) != 0) {
                    fprintf(stderr, "tg-bench-hvp: model setup failed\n");
                    return 1;
                }
                double fwd = time_it(&m, FORWARD, reps, min_time);
                double jvp = time_it(&m, JVP, reps, min_time);
                double hfor = time_it(&m, HVP_FOR, reps, min_time);
                double hror = time_it(&m, HVP_ROR, reps, min_time);
                printf("net=%s dtype=%s threads=%d forward_us=%.1f jvp_us=%.1f "
                       "jvp_over_forward=%.2f hvp_for_us=%.1f hvp_ror_us=%.1f hvp_agree=%.2e\n",
                       nets[k].name, tg_dtype_name(dt), th, fwd, jvp, jvp / fwd, hfor, hror,
                       modes_agree(&m));
                fflush(stdout);
                tg_tape_free(m.t);
                for (size_t i = 0; i < tg_params_count(m.p); i++)
                    free(m.v[i]);
                tg_params_free(m.p);
                free(m.x), free(m.y);
            }
        }
    }
    return 0;
}
