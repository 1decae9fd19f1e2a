/*
 * AVX-512 path (Skylake-X and later, Zen 4 and later). Compiled with -mavx512f -mavx512vl
 * -mfma; only called after the CPU and the OS (XSAVE state) report AVX-512F.
 *
 * Register tile 12 x 32 (f32) / 12 x 16 (f64): 12·2 = 24 accumulators + 2 B vectors + 1
 * broadcast of the 32 zmm registers; per k step 24 FMAs against 2 loads and 12 broadcasts.
 * 24 independent chains cover 2 FMA pipes x 4 cycles latency three times over. MR = 12 wastes
 * little on the MLP batch sizes (128 = 10·12 + 8; 256 = 21·12 + 4) where 14 would waste more.
 * Blocks, tuned on a Zen 5 (48 KiB L1d, 1 MiB L2 per core, 32 MiB L3; the reference
 * machine kind) with a harness that calls this file's block functions directly, variants
 * interleaved over 3 rounds, 1 thread, medians in GFLOP/s (f32 peak 276, f64 138):
 *   f32 MC x KC   96x256 (before)  192x512 (now)   square n = 512/1024/2048: 247/240/231 ->
 *                 250/250/250; dW of B-wide (Aᵀ, 4096x4096x256) 235 -> 242; the m = 256
 *                 products of B-wide (short C) 214-218 either way.
 *   f64 MC x KC   144x128 (before) 96x384 (now)    square 114/109/92 -> 120/120/118; B-wide's
 *                 short-C products 95-97 -> 102-111, its dW 101 -> 113.
 * The KC x NR micro-panel of B (f32 64 KiB, f64 48 KiB) no longer fits L1: Zen 5's L2 feeds
 * the B and A micro-panels fast enough, and a long k run halves the passes over C (read and
 * written once per run). KC 512 for f64 was better still on square n = 2048 (112-116) but
 * ~10 % worse on B-wide's short-C products: A's 256 x 512 run is then all of L2. KC 768-1024
 * (f32) and MC 48-384 were no better beyond the noise (+-3 %).
 * The MC x KC block of A (f32 384 KiB, f64 288 KiB) sits in L2, the KC x NC block of B in L3.
 * Checked on hardware: every kernel test passes on this path, on a Xeon with AVX-512F/VL/BW
 * and on the Zen 5 above.
 */
#include <immintrin.h>

#include "gemm_impl.h"
#include "kernels.h"
#include "transpose_x86.h"

#define GT_NC 4096

/* ---- float32: 12 x 32 ---- */
#define GT_KC 512
#define GT_MC 192
#define GT float
#define GT_PREFIX avx512_f32_
#define GT_BLOCK tg__gemm_block_avx512_f32
#define GT_REF tg__gemm_ref_f32
#define GT_MR 12
#define GT_NR 32
#define GT_VL 16
#define GT_VT __m512
#define GT_V_ZERO() _mm512_setzero_ps()
#define GT_V_LOAD(p) _mm512_load_ps(p)
#define GT_V_LOADU(p) _mm512_loadu_ps(p)
#define GT_V_STOREU(p, v) _mm512_storeu_ps(p, v)
#define GT_V_SET1(x) _mm512_set1_ps(x)
#define GT_V_MUL(a, b) _mm512_mul_ps(a, b)
#define GT_V_FMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define GT_S_FMA(a, b, c) __builtin_fmaf(a, b, c)
#define GT_TB 8 /* 256-bit shuffles: AVX-512F implies AVX2 */
#define GT_TRANSPOSE tg__transpose_8x8_f32
tg__gemm_block_f32 tg__gemm_block_avx512_f32;
#include "gemm_template.h"
#undef GT
#undef GT_PREFIX
#undef GT_BLOCK
#undef GT_REF
#undef GT_MR
#undef GT_NR
#undef GT_VL
#undef GT_VT
#undef GT_V_ZERO
#undef GT_V_LOAD
#undef GT_V_LOADU
#undef GT_V_STOREU
#undef GT_V_SET1
#undef GT_V_MUL
#undef GT_V_FMA
#undef GT_S_FMA
#undef GT_TB
#undef GT_TRANSPOSE
#undef GT_MC

/* ---- float64: 12 x 16 ---- */
#undef GT_KC
#define GT_KC 384
#define GT_MC 96
#define GT double
#define GT_PREFIX avx512_f64_
#define GT_BLOCK tg__gemm_block_avx512_f64
#define GT_REF tg__gemm_ref_f64
#define GT_MR 12
#define GT_NR 16
#define GT_VL 8
#define GT_VT __m512d
#define GT_V_ZERO() _mm512_setzero_pd()
#define GT_V_LOAD(p) _mm512_load_pd(p)
#define GT_V_LOADU(p) _mm512_loadu_pd(p)
#define GT_V_STOREU(p, v) _mm512_storeu_pd(p, v)
#define GT_V_SET1(x) _mm512_set1_pd(x)
#define GT_V_MUL(a, b) _mm512_mul_pd(a, b)
#define GT_V_FMA(a, b, c) _mm512_fmadd_pd(a, b, c)
#define GT_S_FMA(a, b, c) __builtin_fma(a, b, c)
#define GT_TB 4
#define GT_TRANSPOSE tg__transpose_4x4_f64
tg__gemm_block_f64 tg__gemm_block_avx512_f64;
#include "gemm_template.h"

const struct tg__gemm_kernel tg__gemm_kernel_avx512 = {
    .name = "avx512",
    .mr_f32 = 12, .nr_f32 = 32, .mr_f64 = 12, .nr_f64 = 16,
    .f32 = tg__gemm_block_avx512_f32,
    .f64 = tg__gemm_block_avx512_f64,
};
