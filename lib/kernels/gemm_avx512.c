/*
 * AVX-512 path (Skylake-X and later, Zen 4 and later). Compiled with -mavx512f -mavx512vl
 * -mfma; only called after the CPU and the OS (XSAVE state) report AVX-512F.
 *
 * Register tile 8 x 32 (f32) / 8 x 16 (f64): 8·2 = 16 accumulators + 2 B vectors + 1
 * broadcast of the 32 zmm registers; per k step 16 FMAs against 2 loads and 8 broadcasts.
 * 16 independent chains cover 2 FMA pipes x 4 cycles latency twice over. 8 rows divide the
 * MLP batch sizes (128, 256) and 2 vectors every power-of-two n from 32 (f32) / 16 (f64), so
 * the common shapes have no padded tiles.
 *
 * Tuned on a Zen 5 (48 KiB L1d, 1 MiB L2 per core, 32 MiB L3; the reference machine
 * kind) with a harness that calls this file's block functions directly, variants built side
 * by side and interleaved over 3 rounds, 1 thread, medians in GFLOP/s (peak ~276 f32, ~138
 * f64; figures from different sweeps differ by a few % as the machine drifts):
 *   Blocks with the earlier 12 x 32 / 12 x 16 tiles: f32 MC x KC 96x256 -> 192x512 took square
 *     n = 512/1024/2048 from 247/240/231 to 250/250/250 and B-wide's dW (Aᵀ, 4096x4096x256)
 *     235 -> 242; f64 144x128 -> 96x384 took square 114/109/92 -> 120/120/118 and B-wide's
 *     m = 256 (short-C) products 95-97 -> 102-111. Long k runs halve the read-modify-write
 *     passes over C; the KC x NR micro-panel of B (f32 64 KiB at KC 512) then no longer fits
 *     L1, and Zen 5's L2 feeds it fast enough. KC 768-1024, MC 48-384 and NC 256-2048 on 1
 *     thread: no better beyond the noise (+-3 %); f64 NC on 2 threads: below.
 *   Tiles, same blocks: f32 8 x 32 against 12 x 32 was faster on every shape swept: square
 *     2048/1024/512 242/240/254 vs 234/243/246, B-wide's products 219-249 vs 209-231, B-mnist's
 *     233-245 vs 225-242, 128x256x512 230 vs 219, 2 threads n = 2048 465 vs 450. f64 8 x 16
 *     against 12 x 16: square 116-121 vs 111-117, B-wide's 108-120 vs 101-112. 8 x 48 / 8 x 24
 *     (3 vectors: fewer loads per FMA) matched 8 x 32 / 8 x 16 on large shapes but lost
 *     12-25 % where n = 256, 10 or 16 leaves the last 48- or 24-column panel mostly padding.
 *   f64 KC 512 (with 8 x 16; with 12 x 16 it was ~10 % slower on B-wide's short-C products,
 *     A's 256 x 512 run filling L2) and MC 96 for both types.
 * The MC x KC block of A (f32 192 KiB, f64 384 KiB) sits in L2, the KC x NC block of B in L3.
 *
 * NC: as many columns as keep the packed B block within tg__gemm_b_block_bytes() (4 MiB for a
 * product on one thread, 2 MiB per thread for two), at most 4096. The 32 MiB L3 is shared
 * with the VM's neighbours, and with a row split both threads pack the whole of B: at NC 4096
 * two threads' f32 blocks at k = 512 took 16 MiB (n = 4096) or 8 MiB (n = 2048). Harness,
 * interleaved, medians of 6-8 rounds, 2 threads: f32 n = 4096 398 -> 455 GFLOP/s with 2 MiB
 * blocks, n = 2048 456 -> 466 (+2-5 % over three runs); f64 2048 +0-3 %, 1024 +5 %; 1 MiB per
 * thread was 1-4 % slower than 2. One thread: 4 MiB against 2 MiB 1-2 % faster at f32 n =
 * 2048 and 4096 and f64 n = 2048, 4 % slower at f64 n = 4096 (noisy rounds); against NC 4096's
 * 8 MiB at f32 n = 4096, 5 % faster (one run).
 * B-wide's dW (4096x4096x256, k = 256): 2 MiB blocks at NC 2048 against 4096 +1 %, f64 NC
 * 2048 against 1024 on one thread equal (3 runs against OpenBLAS: 1.08-1.11 both). f64 had a
 * fixed NC 1024 before (two threads at n = 2048: 230 GFLOP/s against 203 at NC 2048), which
 * the budget now gives one thread at k = 512. With the budget, f32 KC 256 against 512 (which
 * also halves the block) over 7 shapes on 1 and 2 threads: time ratios 0.995-1.035, no gain;
 * a software prefetch of B and A 8 or 16 lines ahead in the micro-kernel: 1.00-1.03, slower.
 * The AVX2 path, at half the speed, showed no difference (+-1.5 %) and keeps its fixed NC.
 * No prefetch of the next B micro-panel (GT_PREFETCH_B_PANEL, which the AVX2 path keeps for
 * its Zen 3 gains): without it, harness, interleaved, medians of 6-8 rounds, time ratios
 * with/without: square f64 n = 1024 1.02 (1 thread) / 1.03 (2), 2048 1.04 (2); f32 2048 1.02
 * / 1.03; B-wide's dW shapes (Aᵀ, k = 256) 4096x4096 f32 1.02 / 1.05, f64 1.04 / 1.04, 1024
 * x4096 f32 1.02 / 1.00, f64 1.04 / 1.04. The AVX2 path on this Zen 5: 1.00-1.02.
 * Checked on hardware: every kernel test passes on this path, on a Xeon with AVX-512F/VL/BW
 * and on the Zen 5 above.
 */
#include <immintrin.h>

#include "gemm_impl.h"
#include "kernels.h"
#include "transpose_x86.h"

#define GT_DIRECT
#define GT_MC 96
#define GT_KC 512
#define GT_NC 4096
#define GT_B_BLOCK_BYTES tg__gemm_b_block_bytes()

/* ---- float32: 8 x 32 ---- */
#define GT float
#define GT_PREFIX avx512_f32_
#define GT_BLOCK tg__gemm_block_avx512_f32
#define GT_COST tg__gemm_cost_avx512_f32
#define GT_REF tg__gemm_ref_f32
#define GT_MR 8
#define GT_NR 32
#define GT_VL 16
#define GT_VT __m512
#define GT_V_ZERO() _mm512_setzero_ps()
#define GT_V_LOAD(p) _mm512_load_ps(p)
#define GT_V_LOADU(p) _mm512_loadu_ps(p)
#define GT_V_STOREU(p, v) _mm512_storeu_ps(p, v)
#define GT_V_LOADU_N(p, n) _mm512_maskz_loadu_ps((__mmask16)((1u << (n)) - 1), p)
#define GT_V_STOREU_N(p, v, n) _mm512_mask_storeu_ps(p, (__mmask16)((1u << (n)) - 1), v)
#define GT_V_SET1(x) _mm512_set1_ps(x)
#define GT_V_MUL(a, b) _mm512_mul_ps(a, b)
#define GT_V_FMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define GT_S_FMA(a, b, c) __builtin_fmaf(a, b, c)
#define GT_TB 8 /* 256-bit shuffles: AVX-512F implies AVX2 */
#define GT_TRANSPOSE tg__transpose_8x8_f32
tg__gemm_block_f32 tg__gemm_block_avx512_f32;
tg__gemm_cost tg__gemm_cost_avx512_f32;
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

/* ---- float64: 8 x 16 ---- */
#define GT double
#define GT_PREFIX avx512_f64_
#define GT_BLOCK tg__gemm_block_avx512_f64
#define GT_COST tg__gemm_cost_avx512_f64
#define GT_REF tg__gemm_ref_f64
#define GT_MR 8
#define GT_NR 16
#define GT_VL 8
#define GT_VT __m512d
#define GT_V_ZERO() _mm512_setzero_pd()
#define GT_V_LOAD(p) _mm512_load_pd(p)
#define GT_V_LOADU(p) _mm512_loadu_pd(p)
#define GT_V_STOREU(p, v) _mm512_storeu_pd(p, v)
#define GT_V_LOADU_N(p, n) _mm512_maskz_loadu_pd((__mmask8)((1u << (n)) - 1), p)
#define GT_V_STOREU_N(p, v, n) _mm512_mask_storeu_pd(p, (__mmask8)((1u << (n)) - 1), v)
#define GT_V_SET1(x) _mm512_set1_pd(x)
#define GT_V_MUL(a, b) _mm512_mul_pd(a, b)
#define GT_V_FMA(a, b, c) _mm512_fmadd_pd(a, b, c)
#define GT_S_FMA(a, b, c) __builtin_fma(a, b, c)
#define GT_TB 4
#define GT_TRANSPOSE tg__transpose_4x4_f64
tg__gemm_block_f64 tg__gemm_block_avx512_f64;
tg__gemm_cost tg__gemm_cost_avx512_f64;
#include "gemm_template.h"

const struct tg__gemm_kernel tg__gemm_kernel_avx512 = {
    .name = "avx512",
    .mr_f32 = 8, .nr_f32 = 32, .mr_f64 = 8, .nr_f64 = 16,
    .f32 = tg__gemm_block_avx512_f32,
    .f64 = tg__gemm_block_avx512_f64,
    .cost_f32 = tg__gemm_cost_avx512_f32,
    .cost_f64 = tg__gemm_cost_avx512_f64,
};
