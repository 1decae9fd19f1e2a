/*
 * Reference matrix multiply: plain loops, i-k-j order so the inner loop streams rows of B and
 * C. Correct for every shape and stride; the optimized kernels are tested against it.
 */
#include "kernels.h"

#define GEMM_REFERENCE(NAME, T)                                                                \
    void NAME(bool ta, bool tb, size_t m, size_t n, size_t k, T alpha, const T *a, size_t lda, \
              const T *b, size_t ldb, T beta, T *c, size_t ldc)                                \
    {                                                                                          \
        for (size_t i = 0; i < m; i++) {                                                       \
            T *ci = c + i * ldc;                                                               \
            if (beta == 0)                                                                     \
                for (size_t j = 0; j < n; j++)                                                 \
                    ci[j] = 0;                                                                 \
            else if (beta != 1)                                                                \
                for (size_t j = 0; j < n; j++)                                                 \
                    ci[j] *= beta;                                                             \
            for (size_t p = 0; p < k; p++) {                                                   \
                T aip = alpha * (ta ? a[p * lda + i] : a[i * lda + p]);                        \
                if (tb)                                                                        \
                    for (size_t j = 0; j < n; j++)                                             \
                        ci[j] += aip * b[j * ldb + p];                                         \
                else                                                                           \
                    for (size_t j = 0; j < n; j++)                                             \
                        ci[j] += aip * b[p * ldb + j];                                         \
            }                                                                                  \
        }                                                                                      \
    }

GEMM_REFERENCE(tg__gemm_ref_f32, float)
GEMM_REFERENCE(tg__gemm_ref_f64, double)
