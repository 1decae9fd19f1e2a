/*
 * tg-bench-ops: memory-bound float32 ops against the machine's stream-copy bandwidth.
 *
 * First the reference: a plain copy (memcpy) of a large float32 buffer, src -> dst, both as
 * large as one op tensor (--size elements, default 16M = 64 MiB each), on 1 thread and on the
 * thread count tapegrad uses (each thread copies one contiguous slice); bytes = read + written
 * (2 x 4 x size); median of --repeat runs. The higher of the two is "copy": 100 %.
 *
 * Then tapegrad ops, each on one tape that is reset between repeats, after two untimed warm-up
 * repeats (so the arena, gradient buffers and thread pool exist: a warm step allocates
 * nothing; allocs/rep counts the allocations through tg_set_allocator over the timed repeats):
 *
 *   exp, add (two inputs of the same shape), sum (all elements)        on (size) tensors
 *   softmax, log_softmax, logsumexp over the last axis                 on (256 x 32768)
 *
 * and for each, the passes
 *
 *   fwd       the op call alone (node recorded, output on the arena, forward computed); the
 *             inputs are wrapped (tg_tensor_wrap, no copy) and need no gradient
 *   bwd       the op's VJP alone: tg_node_op(node)->vjp(node), called after a full backward
 *             pass set up the gradient buffers (the VJP accumulates: dx += ...)
 *   bwd_call  what tg_backward_seeded (tg_backward for sum's one-element output) costs a user
 *             for the one-node tape: the gradient buffers zeroed, the seed added, the VJP
 *   fwdbwd    (softmax family) the op call plus tg_backward_seeded, with the inputs needing
 *             a gradient
 *
 * The seed (upstream gradient dy) is uniform in [-1, 1), as are the inputs. GB/s counts the
 * op's minimum traffic in float32 elements (the same count for bwd and bwd_call, so their gap
 * is the engine's own work):
 *
 *   exp     fwd  x, y                     bwd  dy, y, dx (read + write)           2 / 4 x n
 *   add     fwd  a, b, y                  bwd  dy, da (r + w), db (r + w)         3 / 5 x n
 *   sum     fwd  x                        bwd  dx (r + w)                         1 / 2 x n
 *   softmax, log_softmax   fwd  x, y      bwd  dy, y, dx (r + w)                  2 / 4 x n
 *   logsumexp  fwd  x (+ the row results)   bwd  x, dx (r + w) (+ dy, the row results)
 *
 * fwdbwd counts fwd + bwd. % is of the copy bandwidth. After the timed repeats each op's
 * values and gradients (from one fresh backward pass) are checked against a double-precision
 * reference: sampled elements for exp/add, everything for sum, three whole rows for the
 * softmax family (check=ok, FAIL or -).
 *
 * Prints a header (CPU model from /proc/cpuinfo, CPUs, caches, threads, kernel), a table,
 * then one machine-readable line per row, which tools/bench_torch.py --ops parses:
 *
 *   result op=exp pass=fwd shape=16777216 threads=2 ms=… min_ms=… max_ms=… gbs=… pct=…
 *          bytes=… allocs=… nodes=1 check=ok
 *
 *   tg-bench-ops [--threads N] [--size N[K|M|G]] [--softmax RxC] [--repeat N]
 *                [--ops exp,add,sum,softmax,log_softmax,logsumexp]
 *
 * --threads 0 (the default) is tapegrad's own default (TG_NUM_THREADS, OMP_NUM_THREADS, else
 * the CPUs this process may use); K, M and G are binary (16M = 16777216).
 */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include <tapegrad/op.h>
#include <tapegrad/runtime.h>
#include <tapegrad/tapegrad.h>

#include "bench-clock.h"

/* The tensor-algebra ops are being added to the library as this tool is written; weak
 * references let it build and run the rows whose op exists (the others print "missing"). */
#if defined(__GNUC__) && defined(__ELF__)
#pragma weak tg_exp
#pragma weak tg_softmax
#pragma weak tg_log_softmax
#pragma weak tg_logsumexp
#endif

/* ---- timing, as tg-bench: CLOCK_MONOTONIC, medians of sorted runs ---- */

/* Sorts v[0..n) (n >= 1); the median (mean of the middle two for even n), as tg-bench. */

/* ---- allocation counting through the library's hook, as tg-bench ---- */
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

/* ---- results ---- */
struct row {
    char op[24], pass[12], shape[32], check[8];
    int threads, nodes;
    double ms, min_ms, max_ms, bytes, gbs, pct, allocs;
    const char *note;   /* why there is no time ("missing", the tape's error), or NULL */
    const char *status; /* with a note: missing, error or n/a */
};

enum { MAX_ROWS = 64 };
static struct row rows[MAX_ROWS];
static int n_rows;
static double copy_gbs; /* the reference: the best stream copy */

static const char *
row_table_line(const struct row *r, char *buf, size_t size)
{
    if (r->note)
        snprintf(buf, size, "%-12s %-9s %-14s %3d  %s", r->op, r->pass, r->shape, r->threads,
                 r->note);
    else
        snprintf(buf, size,
                 "%-12s %-9s %-14s %3d  %10.3f %10.3f %10.3f %8.2f %7.1f %9.1f %7.2f %5d  %s",
                 r->op, r->pass, r->shape, r->threads, r->ms, r->min_ms, r->max_ms, r->gbs,
                 r->pct, r->bytes / 1048576.0, r->allocs, r->nodes, r->check);
    return buf;
}

static void
add_row(const struct row *r)
{
    char line[512];
    if (n_rows < MAX_ROWS)
        rows[n_rows++] = *r;
    printf("%s\n", row_table_line(r, line, sizeof line));
    fflush(stdout);
}

/* Times in seconds -> the row's statistics (sorts t). */
static void
fill_stats(struct row *r, double *t, int n, double bytes)
{
    r->ms = median(t, n) * 1e3;
    r->min_ms = t[0] * 1e3;
    r->max_ms = t[n - 1] * 1e3;
    r->bytes = bytes;
    r->gbs = bytes / (r->ms * 1e-3) * 1e-9;
    r->pct = copy_gbs > 0 ? 100 * r->gbs / copy_gbs : NAN;
}

/* ---- machine info ---- */
static void
print_machine(void)
{
    char model[256] = "unknown", line[512];
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        while (fgets(line, sizeof line, f)) {
            char *colon = strchr(line, ':');
            if (colon && (!strncmp(line, "model name", 10) || !strncmp(line, "Model", 5) ||
                          !strncmp(line, "cpu model", 9))) {
                char *v = colon + 1;
                while (*v == ' ' || *v == '\t')
                    v++;
                v[strcspn(v, "\n")] = '\0';
                snprintf(model, sizeof model, "%s", v);
                break;
            }
        }
        fclose(f);
    }
    int usable = -1;
#ifdef CPU_COUNT
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0)
        usable = CPU_COUNT(&set);
#endif
    printf("# cpu: %s; %ld CPUs online, %d usable by this process\n", model,
           sysconf(_SC_NPROCESSORS_ONLN), usable);
    /* cache sizes of cpu0 (the 64 MiB tensors should not fit) */
    printf("# caches (cpu0):");
    int shown = 0;
    for (int i = 0; i < 8; i++) {
        char path[128], level[16] = "", type[32] = "", size[32] = "";
        FILE *g;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/level", i);
        if (!(g = fopen(path, "r")))
            break;
        if (!fgets(level, sizeof level, g))
            level[0] = '\0';
        fclose(g);
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/type", i);
        if ((g = fopen(path, "r"))) {
            if (!fgets(type, sizeof type, g))
                type[0] = '\0';
            fclose(g);
        }
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/size", i);
        if ((g = fopen(path, "r"))) {
            if (!fgets(size, sizeof size, g))
                size[0] = '\0';
            fclose(g);
        }
        level[strcspn(level, "\n")] = type[strcspn(type, "\n")] = size[strcspn(size, "\n")] = '\0';
        if (strcmp(type, "Instruction"))
            printf(" L%s%s %s", level, !strcmp(type, "Data") ? "d" : "", size), shown++;
    }
    printf("%s\n", shown ? "" : " unknown (no /sys/devices/system/cpu/cpu0/cache)");
}

/* ---- stream copy: `threads` threads (this one and threads - 1 workers), one slice each ---- */
struct copy_pool {
    int threads;
    const float *src;
    float *dst;
    size_t n;
    pthread_barrier_t start, done;
    bool quit;
};

struct copy_worker {
    struct copy_pool *pool;
    int k;
};

static void
copy_slice(const struct copy_pool *p, int k)
{
    /* slice boundaries on 16-float (64-byte) lines */
    size_t lines = (p->n + 15) / 16;
    size_t b = lines * (size_t)k / (size_t)p->threads * 16,
           e = lines * (size_t)(k + 1) / (size_t)p->threads * 16;
    if (e > p->n)
        e = p->n;
    if (b < e)
        memcpy(p->dst + b, p->src + b, (e - b) * sizeof(float));
}

static void *
copy_thread(void *arg)
{
    struct copy_worker *w = arg;
    for (;;) {
        pthread_barrier_wait(&w->pool->start);
        if (w->pool->quit)
            return NULL;
        copy_slice(w->pool, w->k);
        pthread_barrier_wait(&w->pool->done);
    }
}

/* Median GB/s (read + written) of `repeat` copies on `threads` threads; 0 on failure. */
static double
copy_bench(int threads, const float *src, float *dst, size_t n, int repeat, struct row *r)
{
    enum { MAX_THREADS = 256 };
    if (threads > MAX_THREADS)
        threads = MAX_THREADS;
    struct copy_pool p = {.threads = threads, .src = src, .dst = dst, .n = n};
    pthread_t tid[MAX_THREADS];
    struct copy_worker w[MAX_THREADS];
    pthread_barrier_init(&p.start, NULL, (unsigned)threads);
    pthread_barrier_init(&p.done, NULL, (unsigned)threads);
    int started = 1;
    for (int k = 1; k < threads; k++, started++) {
        w[k] = (struct copy_worker){&p, k};
        if (pthread_create(&tid[k], NULL, copy_thread, &w[k]) != 0)
            break;
    }
    double *t = calloc((size_t)repeat, sizeof *t);
    if (started == threads && t) {
        for (int i = -2; i < repeat; i++) { /* two warm-up copies */
            double s = now();
            pthread_barrier_wait(&p.start);
            copy_slice(&p, 0);
            pthread_barrier_wait(&p.done);
            if (i >= 0)
                t[i] = now() - s;
        }
        fill_stats(r, t, repeat, 2.0 * (double)n * sizeof(float));
    }
    if (started == threads) {
        p.quit = true;
        pthread_barrier_wait(&p.start);
    }
    for (int k = 1; k < started; k++)
        pthread_join(tid[k], NULL);
    pthread_barrier_destroy(&p.start);
    pthread_barrier_destroy(&p.done);
    bool ok = started == threads && t;
    free(t);
    return ok ? r->gbs : 0;
}

/* ---- ops ---- */
enum op_id { OP_EXP, OP_ADD, OP_SUM, OP_SOFTMAX, OP_LOG_SOFTMAX, OP_LOGSUMEXP };
enum pass { P_FWD, P_BWD, P_BWD_CALL, P_FWDBWD };
static const char *const pass_names[] = {"fwd", "bwd", "bwd_call", "fwdbwd"};

struct opdef {
    const char *name;
    enum op_id id;
    bool rows; /* the softmax family: (R x C) input, over the last axis */
    int n_in;
    void (*sym)(void); /* the library function (NULL: not in this build) */
    /* minimum traffic in elements: fwd = fi·in + fo·out, VJP = bi·in + bo·out */
    double fi, fo, bi, bo;
    enum pass passes[3];
    int n_passes;
};

static const struct opdef ops[] = {
    {"exp", OP_EXP, false, 1, (void (*)(void))tg_exp, 1, 1, 2, 2, {P_FWD, P_BWD, P_BWD_CALL}, 3},
    {"add", OP_ADD, false, 2, (void (*)(void))tg_add, 2, 1, 4, 1, {P_FWD, P_BWD, P_BWD_CALL}, 3},
    {"sum", OP_SUM, false, 1, (void (*)(void))tg_sum, 1, 0, 2, 0, {P_FWD, P_BWD, P_BWD_CALL}, 3},
    {"softmax", OP_SOFTMAX, true, 1, (void (*)(void))tg_softmax, 1, 1, 2, 2,
     {P_FWD, P_BWD, P_FWDBWD}, 3},
    {"log_softmax", OP_LOG_SOFTMAX, true, 1, (void (*)(void))tg_log_softmax, 1, 1, 2, 2,
     {P_FWD, P_BWD, P_FWDBWD}, 3},
    {"logsumexp", OP_LOGSUMEXP, true, 1, (void (*)(void))tg_logsumexp, 1, 1, 3, 2,
     {P_FWD, P_BWD, P_FWDBWD}, 3},
};
#define N_OPS (sizeof ops / sizeof ops[0])

struct bench {
    tg_tape *tape;
    int repeat;
    int64_t n, R, C;
    float *x, *b, *dy;    /* n elements each (the elementwise ops) */
    float *sx, *sdy, *rdy; /* R·C, R·C and R (the softmax family) */
};

static tg_tensor *
record(const struct opdef *op, tg_tape *t, tg_tensor *const *in)
{
    switch (op->id) {
    case OP_EXP:
        return tg_exp(t, in[0]);
    case OP_ADD:
        return tg_add(t, in[0], in[1]);
    case OP_SUM:
        return tg_sum(t, in[0]);
    case OP_SOFTMAX:
        return tg_softmax(t, in[0], -1);
    case OP_LOG_SOFTMAX:
        return tg_log_softmax(t, in[0], -1);
    case OP_LOGSUMEXP:
        return tg_logsumexp(t, in[0], (const int[]){-1}, 1, false);
    }
    return NULL;
}

/* The op's inputs wrapped on the (reset) tape. */
static void
wrap_inputs(const struct bench *B, const struct opdef *op, bool grad, tg_tensor **in)
{
    tg_tape *t = B->tape;
    if (op->rows) {
        in[0] = tg_tensor_wrap(t, TG_F32, 2, (int64_t[]){B->R, B->C}, B->sx, "x");
    } else {
        in[0] = tg_tensor_wrap(t, TG_F32, 1, (int64_t[]){B->n}, B->x, "a");
        if (op->n_in > 1)
            in[1] = tg_tensor_wrap(t, TG_F32, 1, (int64_t[]){B->n}, B->b, "b");
    }
    for (int k = 0; grad && k < op->n_in; k++)
        tg_tensor_set_requires_grad(in[k], true);
}

/* Backward from y: a seeded pass (dy from the bench's buffers) or, for one element, tg_backward. */
static tg_status
backward(const struct bench *B, const struct opdef *op, tg_tensor *y)
{
    tg_tape *t = B->tape;
    if (op->id == OP_SUM)
        return tg_backward(t, y);
    float *seed = op->id == OP_LOGSUMEXP ? B->rdy : op->rows ? B->sdy : B->dy;
    int ndim = tg_tensor_ndim(y);
    int64_t dims[TG_MAX_DIMS];
    for (int i = 0; i < ndim && i < TG_MAX_DIMS; i++)
        dims[i] = tg_tensor_dim(y, i);
    tg_tensor *s = tg_tensor_wrap(t, TG_F32, ndim, dims, seed, "dy");
    return tg_backward_seeded(t, y, s);
}

/* One repeat of a pass; returns the timed seconds, or < 0 with the tape's error set. */
static double
run_once(const struct bench *B, const struct opdef *op, enum pass pass, int *nodes)
{
    tg_tape *t = B->tape;
    tg_tensor *in[2];
    tg_tape_reset(t);
    wrap_inputs(B, op, pass != P_FWD, in);
    if (tg_tape_error(t))
        return -1;
    size_t nodes0 = tg_tape_node_count(t);
    double s = 0, e = 0;
    if (pass == P_FWD || pass == P_FWDBWD)
        s = now();
    tg_tensor *y = record(op, t, in);
    if (pass == P_FWD)
        e = now();
    *nodes = (int)(tg_tape_node_count(t) - nodes0);
    if (tg_tape_error(t))
        return -1;
    if (pass == P_BWD_CALL)
        s = now();
    if (pass != P_FWD && backward(B, op, y) != TG_OK)
        return -1;
    if (pass == P_BWD_CALL || pass == P_FWDBWD)
        e = now();
    if (pass == P_BWD) {
        tg_node *nd = tg_tensor_node(y);
        if (!nd || *nodes != 1)
            return -2; /* not one node: the VJP of the op is not one call */
        s = now();
        tg_status st = tg_node_op(nd)->vjp(nd);
        e = now();
        if (st != TG_OK || tg_tape_error(t))
            return -1;
    }
    return e - s;
}

/* ---- checks against double precision, after one fresh backward pass ---- */
static bool
close_to(double got, double ref, double scale, double tol)
{
    return fabs(got - ref) <= tol * (fabs(ref) + scale);
}

static int max_reported = 3;

static bool
report_bad(const char *op, const char *what, size_t i, double got, double ref)
{
    if (max_reported-- > 0)
        fprintf(stderr, "tg-bench-ops: check %s: %s[%zu] = %.9g, expected %.9g\n", op, what, i,
                got, ref);
    return false;
}

static bool
check_op(const struct bench *B, const struct opdef *op)
{
    tg_tape *t = B->tape;
    tg_tensor *in[2];
    tg_tape_reset(t);
    wrap_inputs(B, op, true, in);
    tg_tensor *y = record(op, t, in);
    if (tg_tape_error(t) || backward(B, op, y) != TG_OK)
        return false;
    const float *yv = tg_tensor_data(y), *g0 = tg_tensor_grad(in[0]),
                *g1 = op->n_in > 1 ? tg_tensor_grad(in[1]) : NULL;
    if (!yv || !g0 || (op->n_in > 1 && !g1))
        return false;
    bool ok = true;
    if (!op->rows) {
        size_t n = (size_t)B->n;
        if (op->id == OP_SUM) {
            double ref = 0, abs = 0;
            for (size_t i = 0; i < n; i++)
                ref += B->x[i], abs += fabs(B->x[i]);
            if (tg_tensor_size(y) != 1 || !close_to(yv[0], ref, abs, 1e-6))
                ok = report_bad(op->name, "y", 0, yv[0], ref);
            for (size_t i = 0; i < n; i++)
                if (g0[i] != 1.0f) {
                    ok = report_bad(op->name, "dx", i, g0[i], 1);
                    break;
                }
            return ok;
        }
        if (tg_tensor_size(y) != n)
            return false;
        size_t samples = n < 65536 ? n : 65536;
        for (size_t k = 0; k < samples; k++) {
            size_t i = samples == n ? k : (size_t)((double)k * (double)(n - 1) / (samples - 1));
            double x = B->x[i], dy = B->dy[i];
            if (op->id == OP_EXP) {
                double ref = exp(x);
                if (!close_to(yv[i], ref, 0, 5e-7)) /* vmath's exp: 1.5 ulp */
                    ok = report_bad(op->name, "y", i, yv[i], ref);
                if (!close_to(g0[i], dy * ref, 1e-30, 1e-6))
                    ok = report_bad(op->name, "dx", i, g0[i], dy * ref);
            } else { /* add */
                double ref = (double)B->x[i] + (double)B->b[i];
                if (!close_to(yv[i], ref, 0, 1e-7))
                    ok = report_bad(op->name, "y", i, yv[i], ref);
                if (g0[i] != B->dy[i])
                    ok = report_bad(op->name, "da", i, g0[i], dy);
                if (g1[i] != B->dy[i])
                    ok = report_bad(op->name, "db", i, g1[i], dy);
            }
            if (!ok)
                break;
        }
        return ok;
    }
    /* softmax family: rows 0, R/2, R-1 whole */
    size_t C = (size_t)B->C;
    size_t want = op->id == OP_LOGSUMEXP ? (size_t)B->R : (size_t)(B->R * B->C);
    if (tg_tensor_size(y) != want)
        return report_bad(op->name, "size", 0, (double)tg_tensor_size(y), (double)want);
    int64_t check_rows[3] = {0, B->R / 2, B->R - 1};
    double *p = malloc(C * sizeof *p);
    if (!p)
        return false;
    for (int k = 0; k < 3 && ok; k++) {
        size_t r = (size_t)check_rows[k];
        const float *x = B->sx + r * C, *dy = B->sdy + r * C;
        const float *g = g0 + r * C;
        double m = -INFINITY, z = 0, dot = 0, sdy = 0;
        for (size_t j = 0; j < C; j++)
            m = x[j] > m ? x[j] : m;
        for (size_t j = 0; j < C; j++)
            z += (p[j] = exp(x[j] - m));
        for (size_t j = 0; j < C; j++) {
            p[j] /= z;
            dot += dy[j] * p[j];
            sdy += dy[j];
        }
        double lse = m + log(z);
        if (op->id == OP_LOGSUMEXP) {
            if (!close_to(yv[r], lse, 1, 1e-6))
                ok = report_bad(op->name, "y", r, yv[r], lse);
            double d = B->rdy[r];
            for (size_t j = 0; j < C && ok; j++)
                if (!close_to(g[j], d * p[j], 1.0 / (double)C, 1e-4))
                    ok = report_bad(op->name, "dx", r * C + j, g[j], d * p[j]);
            continue;
        }
        for (size_t j = 0; j < C && ok; j++) {
            size_t i = r * C + j;
            double yref, gref, ys, gs, ytol;
            if (op->id == OP_SOFTMAX) {
                yref = p[j];
                gref = p[j] * (dy[j] - dot);
                ys = 1.0 / (double)C;
                gs = 1.0 / (double)C;
                ytol = 1e-4; /* a float sum of C terms */
            } else {
                yref = log(p[j]);
                gref = dy[j] - p[j] * sdy;
                ys = 1;
                gs = 1;
                ytol = 1e-5;
            }
            if (!close_to(yv[i], yref, ys, ytol))
                ok = report_bad(op->name, "y", i, yv[i], yref);
            else if (!close_to(g[j], gref, gs, 1e-4))
                ok = report_bad(op->name, "dx", i, g[j], gref);
        }
    }
    free(p);
    return ok;
}

static void
bench_op(const struct bench *B, const struct opdef *op, int threads)
{
    double in_el = op->rows ? (double)(B->R * B->C) : (double)B->n;
    double out_el = op->id == OP_SUM        ? 1
                    : op->id == OP_LOGSUMEXP ? (double)B->R
                                             : in_el;
    double fwd_bytes = (op->fi * in_el + op->fo * out_el) * sizeof(float),
           vjp_bytes = (op->bi * in_el + op->bo * out_el) * sizeof(float);
    bool have = op->sym != NULL;
    bool check_done = false, check_ok = false;
    double *t = calloc((size_t)B->repeat, sizeof *t);
    for (int q = 0; q < op->n_passes; q++) {
        enum pass pass = op->passes[q];
        struct row r = {.threads = threads};
        snprintf(r.op, sizeof r.op, "%s", op->name);
        snprintf(r.pass, sizeof r.pass, "%s", pass_names[pass]);
        if (op->rows)
            snprintf(r.shape, sizeof r.shape, "%lldx%lld", (long long)B->R, (long long)B->C);
        else
            snprintf(r.shape, sizeof r.shape, "%lld", (long long)B->n);
        snprintf(r.check, sizeof r.check, "-");
        if (!have) {
            r.note = "missing (not in this build of the library)";
            r.status = "missing";
            add_row(&r);
            continue;
        }
        double bytes = pass == P_FWD      ? fwd_bytes
                       : pass == P_FWDBWD ? fwd_bytes + vjp_bytes
                                          : vjp_bytes;
        static char err[256];
        bool failed = false;
        size_t allocs0 = 0;
        for (int i = -2; i < B->repeat && !failed; i++) {
            if (i == 0)
                allocs0 = atomic_load(&n_allocs);
            double s = run_once(B, op, pass, &r.nodes);
            if (s == -2) {
                snprintf(err, sizeof err, "n/a: the op recorded %d nodes, not one", r.nodes);
                failed = true;
            } else if (s < 0) {
                const char *e = tg_tape_error(B->tape);
                snprintf(err, sizeof err, "error: %s", e ? e : "VJP failed");
                failed = true;
            } else if (i >= 0) {
                t[i] = s;
            }
        }
        if (failed) {
            r.note = err;
            r.status = err[0] == 'n' ? "n/a" : "error";
            add_row(&r);
            continue;
        }
        r.allocs = (double)(atomic_load(&n_allocs) - allocs0) / B->repeat;
        if (!check_done) {
            check_ok = check_op(B, op);
            check_done = true;
        }
        snprintf(r.check, sizeof r.check, "%s", check_ok ? "ok" : "FAIL");
        fill_stats(&r, t, B->repeat, bytes);
        add_row(&r);
    }
    free(t);
}

/* ---- options (listed() is bench-clock.h's) ---- */
/* "16M", "1048576", "64K" -> elements (binary suffixes); 0 when malformed */
static int64_t
parse_size(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    double mul = 1;
    if (*end == 'K' || *end == 'k')
        mul = 1024, end++;
    else if (*end == 'M' || *end == 'm')
        mul = 1048576, end++;
    else if (*end == 'G' || *end == 'g')
        mul = 1073741824, end++;
    if (*end || !(v > 0))
        return 0;
    return (int64_t)(v * mul);
}

/* The copy's buffers get the memory the ops get: tapegrad's arena asks for transparent huge
 * pages on large blocks (lib/arena.c), so these do too; a copy over 4 KiB pages would pay
 * TLB misses the ops do not, and flatter every percentage. */
static float *
alloc_floats(size_t n)
{
    const size_t huge = (size_t)1 << 21;
    size_t bytes = (n * sizeof(float) + huge - 1) / huge * huge;
    float *p = aligned_alloc(huge, bytes ? bytes : huge);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (p)
        (void)madvise(p, bytes, MADV_HUGEPAGE);
#endif
    return p;
}

static void
fill_uniform(float *v, size_t n, tg_rng *rng)
{
    for (size_t i = 0; i < n; i++)
        v[i] = (float)(2 * tg_rng_uniform(rng) - 1);
}

int
main(int argc, char **argv)
{
    int threads_opt = 0, repeat = 7;
    int64_t n = 16 * 1048576, R = 256, C = 32768;
    const char *op_list = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            threads_opt = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--size") && i + 1 < argc) {
            n = parse_size(argv[++i]);
        } else if ((!strcmp(argv[i], "--repeat") || !strcmp(argv[i], "--reps")) && i + 1 < argc) {
            repeat = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--softmax") && i + 1 < argc) {
            char *x;
            R = strtoll(argv[++i], &x, 10);
            C = *x == 'x' || *x == 'X' ? strtoll(x + 1, &x, 10) : 0;
            if (*x)
                R = 0;
        } else if (!strcmp(argv[i], "--ops") && i + 1 < argc) {
            op_list = argv[++i];
        } else {
            fprintf(stderr,
                    "usage: %s [--threads N] [--size N[K|M|G]] [--softmax RxC] [--repeat N]\n"
                    "          [--ops exp,add,sum,softmax,log_softmax,logsumexp]\n",
                    argv[0]);
            return 2;
        }
    }
    if (n <= 0 || R <= 0 || C <= 0 || repeat < 1 || threads_opt < 0) {
        fprintf(stderr, "tg-bench-ops: bad --size, --softmax, --repeat or --threads\n");
        return 2;
    }
    tg_set_allocator(&(tg_allocator){count_malloc, count_realloc, count_free, NULL});
    tg_set_num_threads(threads_opt);
    int threads = tg_num_threads();

    printf("# tg-bench-ops: tapegrad %s, float32; median of %d repeats after 2 warm-up, "
           "tape reset between repeats\n",
           TG_VERSION_STRING, repeat);
    print_machine();
    printf("# threads: %d (tapegrad's tg_num_threads; --threads %d); matmul kernel %s\n",
           threads, threads_opt, tg_kernel_name());
    printf("# elementwise: (%lld) = %.1f MiB per tensor; softmax family: (%lld x %lld) = %.1f "
           "MiB, last axis\n",
           (long long)n, (double)n * 4 / 1048576, (long long)R, (long long)C,
           (double)(R * C) * 4 / 1048576);
    printf("%-12s %-9s %-14s %3s  %10s %10s %10s %8s %7s %9s %7s %5s  %s\n", "op", "pass",
           "shape", "thr", "median_ms", "min_ms", "max_ms", "GB/s", "%copy", "MiB", "allocs",
           "nodes", "check");
    fflush(stdout);

    tg_rng *rng = tg_rng_new(42);
    if (!rng)
        return 1;

    /* the reference copy, 1 thread and tapegrad's count */
    { /* always: it is what the percentages are of */
        float *src = alloc_floats((size_t)n), *dst = alloc_floats((size_t)n);
        if (!src || !dst) {
            fprintf(stderr, "tg-bench-ops: out of memory\n");
            return 1;
        }
        fill_uniform(src, (size_t)n, rng);
        memset(dst, 0, (size_t)n * sizeof(float));
        struct row r1 = {.threads = 1, .nodes = 0}, rn = {.threads = threads, .nodes = 0};
        double g1 = copy_bench(1, src, dst, (size_t)n, repeat, &r1);
        double gn = threads > 1 ? copy_bench(threads, src, dst, (size_t)n, repeat, &rn) : 0;
        copy_gbs = g1 > gn ? g1 : gn;
        struct row *cr[2] = {&r1, &rn};
        for (int k = 0; k < (threads > 1 ? 2 : 1); k++) {
            struct row *r = cr[k];
            snprintf(r->op, sizeof r->op, "copy");
            snprintf(r->pass, sizeof r->pass, "%dt", r->threads);
            snprintf(r->shape, sizeof r->shape, "%lld", (long long)n);
            snprintf(r->check, sizeof r->check, "-");
            if (r->gbs > 0)
                r->pct = 100 * r->gbs / copy_gbs;
            else
                r->note = "failed (threads)", r->status = "error";
            add_row(r);
        }
        free(src);
        free(dst);
        if (copy_gbs <= 0)
            return 1;
    }

    struct bench B = {.repeat = repeat, .n = n, .R = R, .C = C};
    bool want_ew = false, want_rows = false;
    for (size_t k = 0; k < N_OPS; k++)
        if (listed(op_list, ops[k].name))
            *(ops[k].rows ? &want_rows : &want_ew) = true;
    if (want_ew) {
        B.x = alloc_floats((size_t)n);
        B.b = alloc_floats((size_t)n);
        B.dy = alloc_floats((size_t)n);
        if (!B.x || !B.b || !B.dy)
            return 1;
        fill_uniform(B.x, (size_t)n, rng);
        fill_uniform(B.b, (size_t)n, rng);
        fill_uniform(B.dy, (size_t)n, rng);
    }
    if (want_rows) {
        B.sx = alloc_floats((size_t)(R * C));
        B.sdy = alloc_floats((size_t)(R * C));
        B.rdy = alloc_floats((size_t)R);
        if (!B.sx || !B.sdy || !B.rdy)
            return 1;
        fill_uniform(B.sx, (size_t)(R * C), rng);
        fill_uniform(B.sdy, (size_t)(R * C), rng);
        fill_uniform(B.rdy, (size_t)R, rng);
    }
    B.tape = tg_tape_new();
    if (!B.tape)
        return 1;
    int failed_checks = 0;
    for (size_t k = 0; k < N_OPS; k++) {
        if (!listed(op_list, ops[k].name))
            continue;
        /* one tape per op family would keep the arena smaller; one tape for all is what a
         * program would hold, and a reset keeps its memory */
        bench_op(&B, &ops[k], threads);
    }

    printf("\n");
    for (int i = 0; i < n_rows; i++) {
        const struct row *r = &rows[i];
        if (r->note) {
            printf("result op=%s pass=%s shape=%s threads=%d status=%s\n", r->op, r->pass,
                   r->shape, r->threads, r->status);
            continue;
        }
        if (!strcmp(r->check, "FAIL"))
            failed_checks++;
        printf("result op=%s pass=%s shape=%s threads=%d ms=%.4f min_ms=%.4f max_ms=%.4f "
               "gbs=%.3f pct=%.2f bytes=%.0f allocs=%.2f nodes=%d check=%s status=ok\n",
               r->op, r->pass, r->shape, r->threads, r->ms, r->min_ms, r->max_ms, r->gbs, r->pct,
               r->bytes, r->allocs, r->nodes, r->check);
    }
    char ref[64] = "1 thread";
    if (threads > 1)
        snprintf(ref, sizeof ref, "the better of 1 and %d threads", threads);
    printf("# copy reference %.2f GB/s (%s); GB/s counts the op's minimum traffic (see the "
           "source's header); tape arena %.1f MiB\n",
           copy_gbs, ref, (double)tg_tape_arena_bytes(B.tape) / 1048576);
    tg_tape_free(B.tape);
    tg_rng_free(rng);
    free(B.x);
    free(B.b);
    free(B.dy);
    free(B.sx);
    free(B.sdy);
    free(B.rdy);
    return failed_checks ? 1 : 0;
}
