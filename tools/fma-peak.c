/* The measured FMA peak of tg-bench-gemm and tg-bench: fma-peak.h. */
#define _POSIX_C_SOURCE 200809L
#include "fma-peak.h"
#include "bench-clock.h"

#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <time.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define BENCH_X86 1
#else
#define BENCH_X86 0
#endif

#if BENCH_X86
/* FMA chain loops. The asm barrier keeps every accumulator in a register each iteration (an
 * array would be spilled and the loop would measure stores instead). Returns flops done. */
#define CHAINS_BODY(V, FMA, SET1, N, BARRIER)                                                 \
    V x = SET1(0.9999), y = SET1(1e-4);                                                        \
    V c0 = SET1(1), c1 = SET1(2), c2 = SET1(3), c3 = SET1(4), c4 = SET1(5), c5 = SET1(6);     \
    V c6 = SET1(7), c7 = SET1(8), c8 = SET1(9), c9 = SET1(10), c10 = SET1(11), c11 = SET1(12);\
    for (long it = 0; it < iters; it++) {                                                      \
        c0 = FMA(c0, x, y); c1 = FMA(c1, x, y); c2 = FMA(c2, x, y); c3 = FMA(c3, x, y);        \
        c4 = FMA(c4, x, y); c5 = FMA(c5, x, y); c6 = FMA(c6, x, y); c7 = FMA(c7, x, y);        \
        c8 = FMA(c8, x, y); c9 = FMA(c9, x, y); c10 = FMA(c10, x, y); c11 = FMA(c11, x, y);    \
        __asm__ volatile("" : "+" BARRIER(c0), "+" BARRIER(c1), "+" BARRIER(c2),               \
                         "+" BARRIER(c3), "+" BARRIER(c4), "+" BARRIER(c5), "+" BARRIER(c6),   \
                         "+" BARRIER(c7), "+" BARRIER(c8), "+" BARRIER(c9),                    \
                         "+" BARRIER(c10), "+" BARRIER(c11));                                  \
    }                                                                                          \
    volatile V sink = c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7 + c8 + c9 + c10 + c11;             \
    (void)sink;                                                                                \
    return 12.0 * 2.0 * (double)(sizeof(V) / (N)) * (double)iters;

#define XREG(v) "x"(v)
#define VREG(v) "v"(v)

__attribute__((target("avx2,fma"))) static double
chains_avx2_f32(long iters)
{
    CHAINS_BODY(__m256, _mm256_fmadd_ps, _mm256_set1_ps, sizeof(float), XREG)
}
__attribute__((target("avx2,fma"))) static double
chains_avx2_f64(long iters)
{
    CHAINS_BODY(__m256d, _mm256_fmadd_pd, _mm256_set1_pd, sizeof(double), XREG)
}
__attribute__((target("avx512f,fma"))) static double
chains_avx512_f32(long iters)
{
    CHAINS_BODY(__m512, _mm512_fmadd_ps, _mm512_set1_ps, sizeof(float), VREG)
}
__attribute__((target("avx512f,fma"))) static double
chains_avx512_f64(long iters)
{
    CHAINS_BODY(__m512d, _mm512_fmadd_pd, _mm512_set1_pd, sizeof(double), VREG)
}
#endif

#if BENCH_X86
struct chains_run {
    double (*chains)(long);
    long iters;
    double flops;
};

static void *
chains_thread(void *arg)
{
    struct chains_run *r = arg;
    r->flops = r->chains(r->iters);
    return NULL;
}

/* FLOPs of `threads` threads (this one and threads - 1 new ones) each running chains(iters)
 * at once; threads that fail to start are not counted. */
static double
chains_together(double (*chains)(long), long iters, int threads)
{
    enum { MAX_THREADS = 64 };
    struct chains_run runs[MAX_THREADS];
    pthread_t tid[MAX_THREADS];
    bool started[MAX_THREADS] = {false};
    if (threads > MAX_THREADS)
        threads = MAX_THREADS;
    for (int t = 1; t < threads; t++) {
        runs[t] = (struct chains_run){chains, iters, 0};
        started[t] = pthread_create(&tid[t], NULL, chains_thread, &runs[t]) == 0;
    }
    double flops = chains(iters);
    for (int t = 1; t < threads; t++)
        if (started[t]) {
            pthread_join(tid[t], NULL);
            flops += runs[t].flops;
        }
    return flops;
}
#endif

double
fma_peak_gflops(bool f64, int threads, const char **isa)
{
#if BENCH_X86
    __builtin_cpu_init();
    bool avx512 = __builtin_cpu_supports("avx512f");
    bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (!avx2 && !avx512) {
        *isa = "none";
        return NAN;
    }
    *isa = avx512 ? "avx512" : "avx2";
    double (*chains)(long) = avx512 ? (f64 ? chains_avx512_f64 : chains_avx512_f32)
                                    : (f64 ? chains_avx2_f64 : chains_avx2_f32);
    /* Many short runs (~15 ms each), best kept: on a shared machine one of them is likely to
     * run without being preempted, which is what the GEMM medians compare against. */
    long iters = 5000000;
    chains(iters); /* warm up the clock */
    double best = 0;
    for (int rep = 0; rep < 15; rep++) {
        double t0 = now();
        double flops = chains_together(chains, iters, threads);
        double gf = flops / (now() - t0) * 1e-9;
        best = gf > best ? gf : best;
    }
    return best;
#else
    (void)f64;
    (void)threads;
    *isa = "none";
    return NAN;
#endif
}
