/*
 * AVX-512 path (Skylake-X and later, Zen 4 and later). Compiled with -mavx512f -mavx512vl
 * -mfma; only called after the CPU and the OS (XSAVE state) report AVX-512F.
 *
 * Register tile 12 x 32 (f32) / 12 x 16 (f64): 12·2 = 24 accumulators + 2 B vectors + 1
 * broadcast of the 32 zmm registers; per k step 24 FMAs against 2 loads and 12 broadcasts.
 * 24 independent chains cover 2 FMA pipes x 4 cycles latency three times over. MR = 12 wastes
 * little on the MLP batch sizes (128 = 10·12 + 8; 256 = 21·12 + 4) where 14 would waste more.
 * Blocks: the KC x NR micro-panel of B must stay in L1 while the MR x KC micro-panels of A
 * stream past it. f32 at KC 256: B 32 KiB + A 12 KiB = 44 KiB, inside Zen 5's and Sapphire
 * Rapids' 48 KiB L1. f64 at KC 128: B 16 KiB + A 12 KiB (at 256 it was 32 + 24 KiB, more than
 * any of these L1s; the same overflow on the AVX2 path cost B-wide f64 ~9 %, gemm_avx2.c).
 * The MC x KC block of A (96·256·4 B = 96 KiB f32, 144·128·8 B = 144 KiB f64) sits in the
 * 1-2 MiB L2; KC x NC of B in L3.
 * Checked on hardware once (the device machine's Xeon with AVX-512F/VL/BW, this session): every
 * kernel test passes on this path. The block sizes are NOT tuned there: its timings swung by 2x
 * between identical runs; a sweep of MC 48-192 x KC 256-512 for f32 found nothing better than
 * 96/256 beyond that noise, and adding the next-B prefetch (gemm_template.h) helped in 4 of 5
 * rounds.
 */
#include <immintrin.h>

#include "gemm_impl.h"
#include "kernels.h"
#include "transpose_x86.h"

#define GT_KC 256
#define GT_NC 4096

/* ---- float32: 12 x 32 ---- */
#define GT_MC 96
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
#define GT_KC 128
#define GT_MC 144
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
