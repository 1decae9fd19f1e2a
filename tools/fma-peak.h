/*
 * The machine's FMA peak, measured: what the benchmarks (tg-bench-gemm, tg-bench) quote their
 * GFLOP/s against, so that "% of peak" means the same in both.
 *
 * Every thread runs 12 independent FMA chains on registers — enough chains to hide the FMA
 * latency on two pipes — with the widest vectors the CPU has (AVX-512, else AVX2+FMA), for a
 * fixed count, all threads at once; peak = flops / wall time, the best of 15 short runs (~15 ms
 * each: on a shared machine one of them is likely to run unpreempted, the figure the medians
 * of the benchmarks are held against). Whatever path the library's kernels take, the peak is
 * the CPU's widest one.
 */
#ifndef TG_TOOLS_FMA_PEAK_H
#define TG_TOOLS_FMA_PEAK_H

#include <stdbool.h>

/* GFLOP/s of `threads` threads (this one and threads - 1 new ones) running the chains in f64
 * or f32; *isa is set to "avx512", "avx2" or "none". NaN where there is no x86 FMA (the
 * percentages then read nan, or n/a in bench_torch.py). */
double fma_peak_gflops(bool f64, int threads, const char **isa);

#endif
