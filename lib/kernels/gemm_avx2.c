/*
 * AVX2 + FMA path (Haswell and later, Zen 1 and later). Compiled with -mavx2 -mfma; only
 * called after the CPU reports both.
 *
 * Register tile 6 x 16 (f32) / 6 x 8 (f64): 6·2 = 12 accumulators + 2 B vectors + 1 broadcast
 * of the 16 ymm registers; each k step issues 12 FMAs against 2 loads and 6 broadcasts, enough
 * independent chains (12 ≥ 2 pipes x 4-5 cycles latency) to keep both FMA pipes busy.
 * Blocks: the KC x NR micro-panel of B (384·16·4 B = 24 KiB f32, 256·8·8 B = 16 KiB f64)
 * stays in the 32 KiB L1; the MC x KC block of A (192·384·4 B = 288 KiB f32, 144·256·8 B =
 * 288 KiB f64) in a 512 KiB L2 with room for the streaming B; KC x NC of B (6 MiB f32,
 * 8 MiB f64) in L3. KC 384 and the k-unrolling plus prefetching C (~15 %) came from a sweep
 * on Zen 3 (n = 256…2048). MC was 96 (f32) / 72 (f64), a 144 KiB A block; once the short-C
 * order (gemm_template.h) took every product with a batch-sized m, the blocked order only
 * runs large-m products, where each MC block of A re-reads the whole packed B block from L3:
 * a 288 KiB A block halves that. Interleaved, 1 thread, harness on the blocked order: B-wide's
 * three dW products (m 1024-4096, k 256) f32 60.8/61.5 -> 65.5/64.3 GFLOP/s (MC 96 -> 192),
 * f64 27.9 -> 30.2 (MC 72 -> 144); square 2048 f32 60.5/63.0 -> 64.0/64.8, f64 30.1 -> 33.1;
 * square 1024 within noise. Larger MC (216-288) was no better than that beyond the noise.
 */
#include <immintrin.h>

#include "gemm_impl.h"
#include "kernels.h"
#include "transpose_x86.h"

/* Lane masks for the direct order's edge tiles: lane l is on when l < n (sign bit set). */
#define AVX2_MASK32(n)                                                                         \
    _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
#define AVX2_MASK64(n)                                                                         \
    _mm256_cmpgt_epi64(_mm256_set1_epi64x((long long)(n)), _mm256_setr_epi64x(0, 1, 2, 3))

#define GT_DIRECT
#define GT_MC 192
#define GT_KC 384
#define GT_NC 4096
#define GT_PREFETCH_B_PANEL

/* ---- float32: 6 x 16 ---- */
#define GT float
#define GT_PREFIX avx2_f32_
#define GT_BLOCK tg__gemm_block_avx2_f32
#define GT_COST tg__gemm_cost_avx2_f32
#define GT_REF tg__gemm_ref_f32
#define GT_MR 6
#define GT_NR 16
#define GT_VL 8
#define GT_VT __m256
#define GT_V_ZERO() _mm256_setzero_ps()
#define GT_V_LOAD(p) _mm256_load_ps(p)
#define GT_V_LOADU(p) _mm256_loadu_ps(p)
#define GT_V_STOREU(p, v) _mm256_storeu_ps(p, v)
#define GT_V_LOADU_N(p, n) _mm256_maskload_ps(p, AVX2_MASK32(n))
#define GT_V_STOREU_N(p, v, n) _mm256_maskstore_ps(p, AVX2_MASK32(n), v)
#define GT_V_SET1(x) _mm256_set1_ps(x)
#define GT_V_MUL(a, b) _mm256_mul_ps(a, b)
#define GT_V_FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define GT_S_FMA(a, b, c) __builtin_fmaf(a, b, c)
#define GT_TB 8
#define GT_TRANSPOSE tg__transpose_8x8_f32
tg__gemm_block_f32 tg__gemm_block_avx2_f32;
tg__gemm_cost tg__gemm_cost_avx2_f32;
#include "gemm_template.h"
#undef GT
#undef GT_PREFIX
#undef GT_BLOCK
#undef GT_COST
#undef GT_REF
#undef GT_MR
#undef GT_NR
#undef GT_VL
#undef GT_VT
#undef GT_V_ZERO
#undef GT_V_LOAD
#undef GT_V_LOADU
#undef GT_V_STOREU
#undef GT_V_LOADU_N
#undef GT_V_STOREU_N
#undef GT_V_SET1
#undef GT_V_MUL
#undef GT_V_FMA
#undef GT_S_FMA
#undef GT_TB
#undef GT_TRANSPOSE
#undef GT_MC

/* ---- float64: 6 x 8 ----
 * KC 256 rather than f32's 384: the f64 micro-panels are twice the bytes, and at 384 the B
 * panel (24 KiB) plus the A panel streaming past it (18 KiB) overflow the 32 KiB L1, so B was
 * reloaded from L2 inside the micro-kernel (the hottest instruction in a B-wide profile).
 * At 256: 16 + 12 KiB. B-wide f64, 1 thread, interleaved: 1.38-1.45 s per step at KC 256 /
 * MC 72 vs 1.53-1.60 at KC 384 / MC 48; B-seed and B-mnist f64 within run-to-run noise
 * (±3 %). MC is now 144, an A block of 288 KiB as f32's (see the top of this file). */
#undef GT_KC
#define GT_KC 256
#define GT_MC 144
#define GT double
#define GT_PREFIX avx2_f64_
#define GT_BLOCK tg__gemm_block_avx2_f64
#define GT_COST tg__gemm_cost_avx2_f64
#define GT_REF tg__gemm_ref_f64
#define GT_MR 6
#define GT_NR 8
#define GT_VL 4
#define GT_VT __m256d
#define GT_V_ZERO() _mm256_setzero_pd()
#define GT_V_LOAD(p) _mm256_load_pd(p)
#define GT_V_LOADU(p) _mm256_loadu_pd(p)
#define GT_V_STOREU(p, v) _mm256_storeu_pd(p, v)
#define GT_V_LOADU_N(p, n) _mm256_maskload_pd(p, AVX2_MASK64(n))
#define GT_V_STOREU_N(p, v, n) _mm256_maskstore_pd(p, AVX2_MASK64(n), v)
#define GT_V_SET1(x) _mm256_set1_pd(x)
#define GT_V_MUL(a, b) _mm256_mul_pd(a, b)
#define GT_V_FMA(a, b, c) _mm256_fmadd_pd(a, b, c)
#define GT_S_FMA(a, b, c) __builtin_fma(a, b, c)
#define GT_TB 4
#define GT_TRANSPOSE tg__transpose_4x4_f64
tg__gemm_block_f64 tg__gemm_block_avx2_f64;
tg__gemm_cost tg__gemm_cost_avx2_f64;
#include "gemm_template.h"

const struct tg__gemm_kernel tg__gemm_kernel_avx2 = {
    .name = "avx2",
    .mr_f32 = 6, .nr_f32 = 16, .mr_f64 = 6, .nr_f64 = 8,
    .f32 = tg__gemm_block_avx2_f32,
    .f64 = tg__gemm_block_avx2_f64,
    .cost_f32 = tg__gemm_cost_avx2_f32,
    .cost_f64 = tg__gemm_cost_avx2_f64,
};
