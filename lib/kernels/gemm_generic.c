/*
 * Portable path: the same packed, blocked algorithm with a scalar C micro-kernel, for CPUs
 * without a SIMD path (and as the TG_KERNEL=generic reference point). The 4 x 8 tile keeps
 * 32 independent accumulators, which compilers vectorize with whatever the baseline ISA has
 * (SSE2 on x86-64, NEON on AArch64).
 */
#include "gemm_impl.h"
#include "kernels.h"

#define GT_MC 128
#define GT_KC 256
#define GT_NC 4096
#define GT_PREFETCH_B_PANEL
#define GT_MR 4
#define GT_NR 8
#define GT_VL 1
#define GT_V_ZERO() 0
#define GT_V_LOAD(p) (*(p))
#define GT_V_LOADU(p) (*(p))
#define GT_V_STOREU(p, v) (*(p) = (v))
#define GT_V_SET1(x) (x)
#define GT_V_MUL(a, b) ((a) * (b))
#define GT_V_FMA(a, b, c) ((a) * (b) + (c))
#define GT_S_FMA(a, b, c) ((a) * (b) + (c))

#define GT float
#define GT_VT float
#define GT_PREFIX generic_f32_
#define GT_BLOCK tg__gemm_block_generic_f32
#define GT_COST tg__gemm_cost_generic_f32
#define GT_REF tg__gemm_ref_f32
tg__gemm_block_f32 tg__gemm_block_generic_f32;
tg__gemm_cost tg__gemm_cost_generic_f32;
#include "gemm_template.h"
#undef GT
#undef GT_VT
#undef GT_PREFIX
#undef GT_BLOCK
#undef GT_COST
#undef GT_REF

#define GT double
#define GT_VT double
#define GT_PREFIX generic_f64_
#define GT_BLOCK tg__gemm_block_generic_f64
#define GT_COST tg__gemm_cost_generic_f64
#define GT_REF tg__gemm_ref_f64
tg__gemm_block_f64 tg__gemm_block_generic_f64;
tg__gemm_cost tg__gemm_cost_generic_f64;
#include "gemm_template.h"

const struct tg__gemm_kernel tg__gemm_kernel_generic = {
    .name = "generic",
    .mr_f32 = GT_MR, .nr_f32 = GT_NR, .mr_f64 = GT_MR, .nr_f64 = GT_NR,
    .f32 = tg__gemm_block_generic_f32,
    .f64 = tg__gemm_block_generic_f64,
    .cost_f32 = tg__gemm_cost_generic_f32,
    .cost_f64 = tg__gemm_cost_generic_f64,
};
