/*
 * AVX-512 path (Skylake-X and later, Zen 4 and later). Compiled with -mavx512f -mavx512vl
 * -mfma; only called after the CPU and the OS (XSAVE state) report AVX-512F.
 *
 * Register tiles, 24 accumulators each (of the 32 zmm registers; 24 independent chains cover
 * 2 FMA pipes x 4 cycles latency three times over):
 *   f32 12 x 32: 12·2 accumulators + 2 B vectors + 1 broadcast; per k step 24 FMAs against
 *       2 loads and 12 broadcasts.
 *   f64  8 x 24:  8·3 accumulators + 3 B vectors + 1 broadcast; per k step 24 FMAs against
 *       3 loads and 8 broadcasts (12 x 16 took 2 and 12). Harness below, 1 thread: square
 *       n = 512/1024/2048 121/122/116 -> 122/122/124 GFLOP/s, B-wide's products 107-117 ->
 *       114-125, B-mnist's 118-129 -> 121-130, 2 threads n = 2048 212 -> 224; slower where n
 *       is a small multiple of 16 (128x256x512 X·Wᵀ 116 -> 113, 128x10x256 50 -> 40: the
 *       last 24-column panel is partly padding). 8 rows also divide the batch sizes.
 *   f32 8 x 48 (the same shape in floats) was 2-5 % faster on square and B-wide's dZ·W and dW
 *       products but 12 % slower on 128x256x512 and 20 % on 128x10x256, where n = 256 and 10
 *       leave a 48-column panel a third or less used; kept at 12 x 32.
 * Blocks, tuned on a Zen 5 (48 KiB L1d, 1 MiB L2 per core, 32 MiB L3; the reference
 * machine kind) with a harness that calls this file's block functions directly, variants
 * interleaved over 3 rounds, 1 thread, medians in GFLOP/s (f32 peak 276, f64 138):
 *   f32 MC x KC   96x256 (before)  192x512 (now)   square n = 512/1024/2048: 247/240/231 ->
 *                 250/250/250; dW of B-wide (Aᵀ, 4096x4096x256) 235 -> 242; the m = 256
 *                 products of B-wide (short C) 214-218 either way.
 *   f64 MC x KC   144x128 (before) 96x384 with the 12 x 16 tile: square 114/109/92 ->
 *                 120/120/118; B-wide's short-C products 95-97 -> 102-111, its dW 101 -> 113.
 *                 With 8 x 24, 96x512 (now): KC 512 had been ~10 % slower on those short-C
 *                 products with 12 x 16 (A's 256 x 512 run is all of L2) but with 8 x 24 it
 *                 was as fast as 384 there (111-115) and faster on square n = 2048 (124 vs
 *                 118); MC 144-192 no better.
 * The KC x NR micro-panel of B (f32 64 KiB, f64 96 KiB) does not fit L1: Zen 5's L2 feeds
 * the B and A micro-panels fast enough, and a long k run halves the passes over C (read and
 * written once per run). KC 768-1024 (f32), MC 48-384 and NC 256-2048 were no better beyond
 * the noise (+-3 %). The MC x KC block of A (f32 384 KiB, f64 384 KiB) sits in L2, the
 * KC x NC block of B in L3.
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

/* ---- float64: 8 x 24 ---- */
#undef GT_KC
#undef GT_NC
#define GT_KC 512
#define GT_MC 96
#define GT_NC 4080 /* a multiple of NR = 24 */
#define GT double
#define GT_PREFIX avx512_f64_
#define GT_BLOCK tg__gemm_block_avx512_f64
#define GT_REF tg__gemm_ref_f64
#define GT_MR 8
#define GT_NR 24
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
    .mr_f32 = 12, .nr_f32 = 32, .mr_f64 = 8, .nr_f64 = 24,
    .f32 = tg__gemm_block_avx512_f32,
    .f64 = tg__gemm_block_avx512_f64,
};
