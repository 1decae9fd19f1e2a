/*
 * tg-bench-gemm: GEMM throughput of tapegrad's kernels against the machine's measured FMA peak
 * and, when built with a CBLAS, against OpenBLAS side by side in the same run.
 *
 *   tg-bench-gemm [--quick]
 *
 * Peak: fma-peak.h (independent FMA chains on every thread at once, best of 15 short runs).
 * Measured in this run, per element type and thread count, so clock and turbo are the same as
 * for the GEMMs.
 *
 * GEMM: square n x n x n, C = A·B (beta = 0), n = 64…2048, f32 and f64, 1 and 2 threads;
 * GFLOP/s = 2n³ / median time. Then the MLP shapes the engine runs (forward X·Wᵀ, backward
 * dZ·W and dZᵀ·X), in µs. With OpenBLAS, each case runs in rounds, a short block of each
 * per round, the order alternating (median_paired: >= 5 rounds and >= 0.5 s, 7 for the MLP
 * shapes); the ratio is the median of the per-round ratios, and "won" counts the rounds ours
 * was faster. Without it, ours alone: median of >= 5 runs and >= 0.2 s.
 *
 * OpenBLAS fairness: OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE in the environment force weaker
 * kernels and are read when the library loads, so the program re-executes itself without
 * them (our kernels ignore both).
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <tapegrad/runtime.h>
#include <tapegrad/tapegrad.h>

#include "fma-peak.h"
#include "bench-clock.h"
#include "kernels/kernels.h"

#if BENCH_HAS_CBLAS
#include <cblas.h>
void openblas_set_num_threads(int); /* OpenBLAS extension; declared here in case cblas.h lacks it */
#endif

/* Median of v[0..n) (n >= 1); sorts v. */

/* ---- timing ---- */

typedef void bench_fn(void *ctx);

#if !BENCH_HAS_CBLAS
/* Median seconds of fn over >= min_runs runs and >= 0.2 s (at most 200 runs), after one
 * warm-up run (buffers, page faults, thread pool). */
static double
median_seconds(bench_fn *fn, void *ctx, int min_runs)
{
    enum { MAX_RUNS = 200 };
    double times[MAX_RUNS];
    int runs = 0;
    fn(ctx);
    double start = now();
    while (runs < MAX_RUNS && (runs < min_runs || now() - start < 0.2)) {
        double t0 = now();
        fn(ctx);
        times[runs++] = now() - t0;
    }
    return median(times, runs);
}
#else

/* Ours against a peer, side by side, in rounds: each round times a short block of each (>= 2
 * runs and >= 40 ms; median of the block), the order alternating round by round, until
 * >= min_rounds rounds and >= 0.5 s (at most 64). On a shared machine the speed drifts by
 * 10-30 % over seconds; timing the two in one block each lets a slow spell land on one side
 * only, while a round compares blocks a few tens of milliseconds apart.
 * With more than one thread each block starts after QUIET_S of idle, then WARM_S of untimed
 * calls: an idle library's worker threads keep spinning after its last call (OpenBLAS's for
 * 2^28 cycles, ~0.1 s here; tapegrad's pool for 2 ms) and take a core from whatever runs
 * next. On the 2-vCPU VM, without the pause, OpenBLAS's 2-thread f64 ran at 171-178 GFLOP/s
 * at n = 512 right after tapegrad's blocks, and at 205-209 with it; tapegrad on OpenMP took
 * 4.8-5.9 ms per 128x512x784 f64 product right after an OpenBLAS block, 0.45-0.6 ms after
 * 0.15 s idle. After the pause the second vCPU is slow for a while: 2-thread 512³ f32
 * products took ~830 µs for the first ~8 ms of calls, then 550-570 µs (mean of 8 pauses), so
 * the warm-up runs past that. Each block thus measures one library in its steady state with
 * the other's helpers asleep, as a program that uses one library alone would see it. */
#define QUIET_S 0.2
#define WARM_S 0.03
struct paired {
    double ours_s, peer_s; /* median over rounds of the block medians, seconds */
    double ratio;          /* median over rounds of peer / ours: > 1, ours is faster */
    int won, rounds;       /* rounds where ours was faster */
};

static double
block_median(bench_fn *fn, void *ctx, bool settle)
{
    enum { MAX_RUNS = 64 };
    double times[MAX_RUNS];
    int runs = 0;
    if (settle) {
        nanosleep(&(struct timespec){0, (long)(QUIET_S * 1e9)}, NULL);
        double warm = now();
        do
            fn(ctx);
        while (now() - warm < WARM_S);
    }
    double start = now();
    while (runs < MAX_RUNS && (runs < 2 || now() - start < 0.04)) {
        double t0 = now();
        fn(ctx);
        times[runs++] = now() - t0;
    }
    return median(times, runs);
}

static struct paired
median_paired(bench_fn *ours, bench_fn *peer, void *ctx, int threads, int min_rounds)
{
    enum { MAX_ROUNDS = 64 };
    double t_ours[MAX_ROUNDS], t_peer[MAX_ROUNDS], ratio[MAX_ROUNDS];
    struct paired r = {0};
    ours(ctx); /* warm-up: buffers, page faults, thread pools */
    peer(ctx);
    double start = now();
    while (r.rounds < MAX_ROUNDS && (r.rounds < min_rounds || now() - start < 0.5)) {
        int i = r.rounds;
        if (i % 2 == 0) {
            t_ours[i] = block_median(ours, ctx, threads > 1);
            t_peer[i] = block_median(peer, ctx, threads > 1);
        } else {
            t_peer[i] = block_median(peer, ctx, threads > 1);
            t_ours[i] = block_median(ours, ctx, threads > 1);
        }
        ratio[i] = t_peer[i] / t_ours[i];
        r.won += t_ours[i] < t_peer[i];
        r.rounds++;
    }
    r.ours_s = median(t_ours, r.rounds);
    r.peer_s = median(t_peer, r.rounds);
    r.ratio = median(ratio, r.rounds);
    return r;
}
#endif

struct gemm_case {
    bool f64, ta, tb;
    size_t m, n, k;
    void *a, *b, *c;
    int threads;
};

static void
run_ours(void *ctx)
{
    struct gemm_case *g = ctx;
    size_t lda = g->ta ? g->m : g->k, ldb = g->tb ? g->k : g->n;
    if (g->f64)
        tg__gemm_f64(g->ta, g->tb, g->m, g->n, g->k, 1, g->a, lda, g->b, ldb, 0, g->c, g->n);
    else
        tg__gemm_f32(g->ta, g->tb, g->m, g->n, g->k, 1, g->a, lda, g->b, ldb, 0, g->c, g->n);
}

#if BENCH_HAS_CBLAS
static void
run_openblas(void *ctx)
{
    struct gemm_case *g = ctx;
    int lda = (int)(g->ta ? g->m : g->k), ldb = (int)(g->tb ? g->k : g->n);
    enum CBLAS_TRANSPOSE ta = g->ta ? CblasTrans : CblasNoTrans;
    enum CBLAS_TRANSPOSE tb = g->tb ? CblasTrans : CblasNoTrans;
    if (g->f64)
        cblas_dgemm(CblasRowMajor, ta, tb, (int)g->m, (int)g->n, (int)g->k, 1, g->a, lda, g->b,
                    ldb, 0, g->c, (int)g->n);
    else
        cblas_sgemm(CblasRowMajor, ta, tb, (int)g->m, (int)g->n, (int)g->k, 1, g->a, lda, g->b,
                    ldb, 0, g->c, (int)g->n);
}
#endif

static void
fill(void *p, size_t count, bool f64)
{
    uint64_t s = 12345;
    for (size_t i = 0; i < count; i++) {
        s = s * 6364136223846793005u + 1442695040888963407u;
        double v = (double)(s >> 11) * 0x1p-53 - 0.5;
        if (f64)
            ((double *)p)[i] = v;
        else
            ((float *)p)[i] = (float)v;
    }
}

/* Sets up buffers for one case; false when out of memory. */
static bool
case_alloc(struct gemm_case *g)
{
    size_t es = g->f64 ? sizeof(double) : sizeof(float);
    g->a = malloc(es * g->m * g->k);
    g->b = malloc(es * g->k * g->n);
    g->c = malloc(es * g->m * g->n);
    if (!g->a || !g->b || !g->c)
        return false;
    fill(g->a, g->m * g->k, g->f64);
    fill(g->b, g->k * g->n, g->f64);
    memset(g->c, 0, es * g->m * g->n);
    return true;
}

static void
case_free(struct gemm_case *g)
{
    free(g->a);
    free(g->b);
    free(g->c);
}

static void
set_threads(int threads)
{
    tg_set_num_threads(threads);
#if BENCH_HAS_CBLAS
    openblas_set_num_threads(threads);
#endif
}

int
main(int argc, char **argv)
{
    bool quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
#if BENCH_HAS_CBLAS
    if (getenv("OPENBLAS_CORETYPE") || getenv("OPENBLAS_L2_SIZE")) {
        unsetenv("OPENBLAS_CORETYPE");
        unsetenv("OPENBLAS_L2_SIZE");
        execv("/proc/self/exe", argv);
        fprintf(stderr, "note: could not re-exec without OPENBLAS_CORETYPE (%s); OpenBLAS "
                        "numbers below use the forced core type\n", strerror(errno));
    }
#endif
    printf("tapegrad GEMM benchmark: kernel path %s, threads %s, up to %d threads\n",
           tg_kernel_name(), TG_HAS_THREADS ? "yes" : "no", tg_num_threads());
#if BENCH_HAS_CBLAS
    printf("OpenBLAS side by side (OPENBLAS_CORETYPE/L2_SIZE unset)\n");
#else
    printf("built without CBLAS: no OpenBLAS comparison\n");
#endif

    static const int thread_counts[] = {1, 2};
    double peak[2][2]; /* [f64][threads-1] */
    for (int f = 0; f < 2; f++)
        for (int t = 0; t < 2; t++) {
            const char *isa;
            peak[f][t] = fma_peak_gflops(f, thread_counts[t], &isa);
            printf("measured FMA peak (%s chains) %s %d thread%s: %.1f GFLOP/s\n", isa,
                   f ? "f64" : "f32", thread_counts[t], t ? "s" : " ", peak[f][t]);
        }

    static const size_t sizes[] = {64, 128, 256, 512, 1024, 2048};
    size_t n_sizes = quick ? 4 : sizeof sizes / sizeof sizes[0];
#if BENCH_HAS_CBLAS
    printf("\nsquare C = A·B (ours and OpenBLAS in alternating blocks, >= 5 rounds and "
           ">= 0.5 s; medians)\n");
#else
    printf("\nsquare C = A·B (median of >= 5 runs and >= 0.2 s)\n");
#endif
    printf("%-4s %-3s %5s  %10s %7s", "type", "thr", "n", "ours GF/s", "% peak");
#if BENCH_HAS_CBLAS
    printf("  %12s %7s  %6s  %s", "OpenBLAS GF/s", "% peak", "ratio", "won");
#endif
    printf("\n");
    for (int f = 0; f < 2; f++)
        for (int t = 0; t < 2; t++)
            for (size_t s = 0; s < n_sizes; s++) {
                size_t n = sizes[s];
                struct gemm_case g = {.f64 = f, .m = n, .n = n, .k = n};
                if (!case_alloc(&g)) {
                    fprintf(stderr, "out of memory at n = %zu\n", n);
                    case_free(&g);
                    return EXIT_FAILURE;
                }
                set_threads(thread_counts[t]);
                double flops = 2.0 * (double)n * (double)n * (double)n;
#if BENCH_HAS_CBLAS
                struct paired p = median_paired(run_ours, run_openblas, &g, thread_counts[t], 5);
                double ours = flops / p.ours_s * 1e-9, theirs = flops / p.peer_s * 1e-9;
#else
                double ours = flops / median_seconds(run_ours, &g, 5) * 1e-9;
#endif
                printf("%-4s %-3d %5zu  %10.1f %6.1f%%", f ? "f64" : "f32", thread_counts[t],
                       n, ours, 100 * ours / peak[f][t]);
#if BENCH_HAS_CBLAS
                printf("  %12.1f %6.1f%%  %6.2f  %3d/%d", theirs, 100 * theirs / peak[f][t],
                       p.ratio, p.won, p.rounds);
#endif
                printf("\n");
                fflush(stdout);
                case_free(&g);
            }

    /* The products of an MLP step: batch 128, 784-512-256-10 and the tiny B-small ones. */
    static const struct {
        const char *what;
        bool ta, tb;
        size_t m, n, k;
    } shapes[] = {
        {"X·W1ᵀ    fwd", false, true, 128, 512, 784},
        {"dZ·W1    bwd", false, false, 128, 784, 512},
        {"dZᵀ·X    bwd", true, false, 512, 784, 128},
        {"A·W2ᵀ    fwd", false, true, 128, 256, 512},
        {"256x128x64   ", false, false, 256, 128, 64},
        {"A·W3ᵀ    fwd", false, true, 128, 10, 256},
        {"16x32x16     ", false, false, 16, 32, 16},
        {"32x16x2      ", false, false, 32, 16, 2},
    };
    printf("\nMLP shapes, C = op(A)·op(B), median µs\n");
    printf("%-14s %-4s %-3s %15s  %9s", "product", "type", "thr", "m x n x k", "ours µs");
#if BENCH_HAS_CBLAS
    printf("  %11s  %6s  %s", "OpenBLAS µs", "ratio", "won");
#endif
    printf("\n");
    for (int f = 0; f < 2; f++)
        for (int t = 0; t < 2; t++)
            for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
                struct gemm_case g = {.f64 = f, .ta = shapes[s].ta, .tb = shapes[s].tb,
                                      .m = shapes[s].m, .n = shapes[s].n, .k = shapes[s].k};
                if (!case_alloc(&g)) {
                    case_free(&g);
                    return EXIT_FAILURE;
                }
                set_threads(thread_counts[t]);
#if BENCH_HAS_CBLAS
                struct paired p = median_paired(run_ours, run_openblas, &g, thread_counts[t], 7);
                double ours = p.ours_s * 1e6;
#else
                double ours = median_seconds(run_ours, &g, 20) * 1e6;
#endif
                char dims[48];
                snprintf(dims, sizeof dims, "%zux%zux%zu", g.m, g.n, g.k);
                printf("%-14s %-4s %-3d %15s  %9.2f", shapes[s].what, f ? "f64" : "f32",
                       thread_counts[t], dims, ours);
#if BENCH_HAS_CBLAS
                printf("  %11.2f  %6.2f  %3d/%d", p.peer_s * 1e6, p.ratio, p.won, p.rounds);
#endif
                printf("\n");
                case_free(&g);
            }
#if BENCH_HAS_CBLAS
    printf("\nratio = median over rounds of OpenBLAS time / ours (a block of each per round, "
           "alternating order): > 1 means ours is faster; won = rounds ours was faster\n");
#endif
    return EXIT_SUCCESS;
}
