/*
 * Between the gemm dispatcher (gemm.c, runtime.c: compiled for baseline x86-64 or any CPU) and
 * the per-ISA implementations (gemm_generic.c, gemm_avx2.c, gemm_avx512.c: each compiled with
 * its own -m flags, only called once the CPU is known to support them).
 */
#ifndef TG_GEMM_IMPL_H
#define TG_GEMM_IMPL_H

#include <stdbool.h>
#include <stddef.h>

#include <tapegrad/features.h>

/* Single-threaded packed GEMM on one block of C (same contract as tg__gemm_*; the dispatcher
 * has already offset the pointers to the block and handled m/n = 0, k = 0 and alpha = 0). */
typedef void tg__gemm_block_f32(bool trans_a, bool trans_b, size_t m, size_t n, size_t k,
                                float alpha, const float *a, size_t lda, const float *b,
                                size_t ldb, float beta, float *c, size_t ldc);
typedef void tg__gemm_block_f64(bool trans_a, bool trans_b, size_t m, size_t n, size_t k,
                                double alpha, const double *a, size_t lda, const double *b,
                                size_t ldb, double beta, double *c, size_t ldc);

/* The loop orders of gemm_template.h, which a path picks per product from its shape. */
enum tg__gemm_order { TG_GEMM_DIRECT, TG_GEMM_SHORT_C, TG_GEMM_BLOCKED };

/* What one block of C (m x n, k deep, op(A) and op(B) with strides lda, ldb) costs a path on
 * one thread, in multiply-adds, counting the packing its order does (gemm_template.h,
 * GT_COST); b_block_bytes as tg__gemm_b_block_bytes() would be while it runs. The dispatcher
 * compares splits with it; only ratios matter. */
typedef double tg__gemm_cost(bool trans_a, bool trans_b, size_t m, size_t n, size_t k,
                             size_t lda, size_t ldb, size_t b_block_bytes);

/* One matrix-multiply path. mr/nr are its register tile: the dispatcher splits C between
 * threads only at multiples of them, so every tile (and with it every element's arithmetic)
 * is the same whatever the thread count. */
struct tg__gemm_kernel {
    const char *name;
    size_t mr_f32, nr_f32, mr_f64, nr_f64;
    bool self_threaded; /* BLAS: runs its own threads, so it gets the whole of C at once */
    tg__gemm_block_f32 *f32;
    tg__gemm_block_f64 *f64;
    tg__gemm_cost *cost_f32, *cost_f64; /* NULL for a self-threaded path */
};

extern const struct tg__gemm_kernel tg__gemm_kernel_generic;
#if TG_KERNELS_X86
extern const struct tg__gemm_kernel tg__gemm_kernel_avx2;
extern const struct tg__gemm_kernel tg__gemm_kernel_avx512;
#endif
#if TG_HAS_BLAS
extern const struct tg__gemm_kernel tg__gemm_kernel_blas;
#endif

/* The calling thread's packing buffer, at least `bytes` long and 64-byte aligned, grown on
 * demand through tg__malloc and kept for the life of the thread (so warm calls allocate
 * nothing). NULL when the allocation fails: the caller falls back to the reference loops. */
void *tg__gemm_workspace(size_t bytes);

/*
 * How many bytes the calling thread's packed KC x NC block of B may take: the share of the
 * last-level cache this product can count on. tg__gemm_b_block_budget (kernels.h) for a
 * product on one thread; split evenly between the parts of a threaded product, whose threads
 * each pack a block of their own (for a row split, copies of the same block) into the one
 * shared L3.
 */
size_t tg__gemm_b_block_bytes(void);

/* The path in use (resolved from TG_KERNEL and the CPU on first use). */
const struct tg__gemm_kernel *tg__gemm_active_kernel(void);

#endif /* TG_GEMM_IMPL_H */
