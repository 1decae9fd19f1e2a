/*
 * Optional BLAS path (meson -Dblas=enabled|auto): the system CBLAS (OpenBLAS) does the whole
 * product with its own threads. Chosen automatically only where we have no SIMD path (see
 * runtime.c); TG_KERNEL=blas forces it. Bit-identical results across thread counts are then
 * up to the BLAS library, and CBLAS takes int sizes (products past INT_MAX rows, columns or
 * strides are beyond it — and beyond any step of a network this library trains).
 */
#include <cblas.h>

#include "gemm_impl.h"
#include "kernels.h"

static void
blas_f32(bool trans_a, bool trans_b, size_t m, size_t n, size_t k, float alpha, const float *a,
         size_t lda, const float *b, size_t ldb, float beta, float *c, size_t ldc)
{
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k, alpha, a, (int)lda,
                b, (int)ldb, beta, c, (int)ldc);
}

static void
blas_f64(bool trans_a, bool trans_b, size_t m, size_t n, size_t k, double alpha,
         const double *a, size_t lda, const double *b, size_t ldb, double beta, double *c,
         size_t ldc)
{
    cblas_dgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k, alpha, a, (int)lda,
                b, (int)ldb, beta, c, (int)ldc);
}

const struct tg__gemm_kernel tg__gemm_kernel_blas = {
    .name = "blas",
    .mr_f32 = 1, .nr_f32 = 1, .mr_f64 = 1, .nr_f64 = 1,
    .self_threaded = true,
    .f32 = blas_f32,
    .f64 = blas_f64,
};
