/*
 * Raw numerical loops used by the ops: matrix multiply and friends. No tapes, no errors:
 * callers have validated shapes. Every kernel must give bit-identical results whatever the
 * number of threads (fixed partitioning, fixed reduction order).
 */
#ifndef TG_KERNELS_H
#define TG_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * C = alpha · op(A) · op(B) + beta · C       row-major; op(X) = Xᵀ when trans_X
 *   op(A) is (m x k), op(B) is (k x n), C is (m x n)
 *   lda/ldb/ldc are the row strides (in elements) of A, B, C as stored.
 * beta = 0 overwrites C (NaN in C is not propagated); beta = 1 accumulates (VJPs).
 * Any of m, n, k may be 0 (k = 0 gives C = beta·C). alpha = 0 reads neither A nor B (BLAS
 * semantics). Transposes are absorbed by the packing routines: no transposed copy is made.
 *
 * Dispatches to the path tg_kernel_name() reports and runs on up to tg_num_threads() threads
 * for products large enough to pay for them. Each element of C sums its k products in the
 * same order whatever the thread count, so results are bit-identical for any thread count.
 * After the first call with a given shape on a given thread, no heap allocation happens
 * (packing buffers are per thread and kept).
 */
void tg__gemm_f32(bool trans_a, bool trans_b, size_t m, size_t n, size_t k, float alpha,
                  const float *a, size_t lda, const float *b, size_t ldb, float beta, float *c,
                  size_t ldc);
void tg__gemm_f64(bool trans_a, bool trans_b, size_t m, size_t n, size_t k, double alpha,
                  const double *a, size_t lda, const double *b, size_t ldb, double beta,
                  double *c, size_t ldc);
/* C = op(A)·op(B) + beta·C (alpha 1) through tg__gemm_f64 or _f32 by `f64`, on untyped
 * buffers: for the ops whose one body serves both dtypes (the convolutions). */
static inline void
tg__gemm_typed(bool f64, bool trans_a, bool trans_b, size_t m, size_t n, size_t k, const void *a,
               size_t lda, const void *b, size_t ldb, double beta, void *c, size_t ldc)
{
    if (f64)
        tg__gemm_f64(trans_a, trans_b, m, n, k, 1.0, a, lda, b, ldb, beta, c, ldc);
    else
        tg__gemm_f32(trans_a, trans_b, m, n, k, 1.0f, a, lda, b, ldb, (float)beta, c, ldc);
}

/*
 * For a caller whose own tg__parallel_for chunks run products (an op parallel over a batch):
 * between tg__gemm_caller_part(c) and tg__gemm_caller_part(SIZE_MAX) the calling thread's
 * products pack into the buffer of chunk c (c < TG_GEMM_CALLER_PARTS), not the thread's own,
 * so buffers grow with the chunks, the same way on every run, and a warm step allocates
 * nothing whichever thread claims a chunk (a pool worker that claimed none in the first steps
 * would otherwise grow its buffer later). Only inside a pool job (tg__pool_in_job), of which
 * one runs at a time; in the serial fallback the thread's own buffer serves, as chunks there
 * run in order on one thread, and other threads may be running their own chunk c.
 */
#define TG_GEMM_CALLER_PARTS 16
void tg__gemm_caller_part(size_t part);

/* The same contract with plain loops (i-k-j), single-threaded: the tests' reference, and the
 * fallback when a packing buffer cannot be allocated (gemm has no error channel). */
void tg__gemm_ref_f32(bool trans_a, bool trans_b, size_t m, size_t n, size_t k, float alpha,
                      const float *a, size_t lda, const float *b, size_t ldb, float beta,
                      float *c, size_t ldc);
void tg__gemm_ref_f64(bool trans_a, bool trans_b, size_t m, size_t n, size_t k, double alpha,
                      const double *a, size_t lda, const double *b, size_t ldb, double beta,
                      double *c, size_t ldc);

/*
 * Which of gemm_template.h's two packed loop orders a product takes: the short-C order when
 * op(A)'s packed k run (m rounded up to MR, times the KC run) fits this many bytes, else the
 * blocked order. Both give the same bits. 512 KiB by default, half a Zen 5 L2: f64 at m =
 * 256 (a 1 MiB run at KC 512, the whole L2) ran 1.01-1.03x faster blocked (AVX-512, 1 and 2
 * threads: 256x512x512, B-wide's 256x4096x4096 and 256x1024x4096 with Bᵀ; B-wide f64 steps
 * 342 -> 331 ms on 1 thread, 179 -> 172 on 2), while f32 at m = 256 (512 KiB) ran
 * 0.99-1.00x blocked and stays short. The tests set 0 (always blocked) and SIZE_MAX (always
 * short) to run both orders on every shape. Not for use while a gemm runs.
 */
extern size_t tg__gemm_short_c_bytes;
/*
 * Which products take the unpacked direct order (AVX2 and AVX-512 paths only): those whose
 * two operands together, m·k + k·n values, fit this many bytes and whose rows of C are under
 * 4 KiB (gemm_template.h says why). It reads A where it lies, and B too unless B or A is
 * transposed or B's rows are whole pages apart (then one B panel at a time is packed), and
 * gives the same bits as the packed orders. 1 MiB by default (an L2 here); the tests set 0
 * (never) and SIZE_MAX (always, whatever n). Checked before tg__gemm_short_c_bytes. Not for
 * use while a gemm runs.
 */
extern size_t tg__gemm_direct_bytes;
/*
 * The most bytes the packed KC x NC blocks of B of one product may take together (AVX-512
 * path): NC narrows to fit, split evenly between a threaded product's parts (gemm_impl.h,
 * tg__gemm_b_block_bytes). NC changes no bits. 4 MiB by default; the tests set a few KiB so
 * that small shapes take several narrow blocks. Not for use while a gemm runs.
 */
extern size_t tg__gemm_b_block_budget;

/*
 * How a threaded product's C is cut: by the path's cost estimate (the default; gemm.c), or
 * always into bands of rows, or of columns, where the shape allows two parts. The tests force
 * each. Not for use while a gemm runs.
 */
enum { TG_GEMM_SPLIT_BY_COST, TG_GEMM_SPLIT_ROWS, TG_GEMM_SPLIT_COLUMNS };
extern int tg__gemm_split;

/*
 * Parallel loop over [0, n) with a partitioning that does not depend on the thread count:
 * fn is called once per chunk [c·grain, min(n, (c+1)·grain)), c = 0 … tg__parallel_chunks()-1,
 * each chunk on exactly one thread, chunks spread over up to tg_num_threads() threads.
 * Elementwise loops are therefore deterministic, and a reduction that writes one partial per
 * chunk (index begin / grain) and then sums the partials in chunk order is bit-identical
 * whatever the thread count. With one thread (or built with -Dthreads=disabled) the chunks
 * run in order on the calling thread; n <= grain is a single inline call fn(0, n, ctx) with
 * no threading overhead. grain = 0 is treated as n (one chunk).
 */
void tg__parallel_for_chunks(size_t n, size_t grain,
                             void (*fn)(size_t begin, size_t end, void *ctx), void *ctx);
/* Inline, so that the one-chunk case (most calls on small tensors) costs a compare, not a
 * call into the pool's code. */
static inline void
tg__parallel_for(size_t n, size_t grain, void (*fn)(size_t begin, size_t end, void *ctx),
                 void *ctx)
{
    if (n == 0)
        return;
    if (grain == 0 || grain >= n)
        fn(0, n, ctx);
    else
        tg__parallel_for_chunks(n, grain, fn, ctx);
}
/* ceil(n / grain): the number of chunks tg__parallel_for makes (1 when n = 0 or grain = 0). */
static inline size_t
tg__parallel_chunks(size_t n, size_t grain)
{
    if (n == 0 || grain == 0 || grain >= n)
        return 1;
    return n / grain + (n % grain != 0);
}

/* The thread count kernels use: tg_num_threads() (1 when built with -Dthreads=disabled). */
int tg__num_threads(void);

/*
 * One thread or all for a recurring step (a training step: tg_optim_step ticks it), chosen by
 * timing whole steps. Whether a second thread pays depends on the machine's state as much as
 * on the sizes: a worker's share of a product or of the update first pulls its data from the
 * other core's cache, and on the 2-vCPU VM a cache line's round trip between the vCPUs is
 * 57-110 ns at times and 420-490 ns at others. B-seed4 (batch 4) ran 1.23x faster on 2 threads
 * than on 1 in the first state and 0.5x in the second (docs/performance.md). Timing each
 * parallel pass alone does not find that out: once both threads hold part of the data, every
 * pass is faster split than pulling it all back to one thread, even when a step that keeps
 * everything on one thread is faster than either. So whole steps are timed: each round (at
 * least TG_TRIAL_PERIOD steps and TG_TRIAL_ROUND_NS long, so the probes cost under 1 % of the
 * time when steps are fast) starts with TG_TRIAL_BLOCKS blocks of TG_TRIAL_BLOCK steps, one
 * thread and all in turn, and runs the rest with the count whose fastest step was faster (all
 * on a tie). Blocks, not alternate steps: the first step after a switch pays for moving the
 * data; the block's later ones show the steady state. One thread means tg__num_threads()
 * returns 1 on the calling thread from that tick to the next (a thread-local cap). The count
 * changes no result (partitions are fixed), only the time. One user of a trial at a time.
 */
#define TG_TRIAL_BLOCK 4
#define TG_TRIAL_BLOCKS 4
#define TG_TRIAL_PERIOD 1024
#define TG_TRIAL_ROUND_NS ((uint64_t)2000000000) /* 2 s: the VM's states last seconds or more */
struct tg__step_trial {
    uint64_t in_round;      /* ticks since the round began */
    uint64_t round_ns;      /* when it began */
    uint64_t last_ns;       /* the latest tick */
    uint64_t fastest_ns[2]; /* this round's fastest probe step: [0] one thread, [1] all */
    bool one;               /* the choice after the probes: one thread */
};
/* A step begins (the previous one, if any, has ended): times it and sets the calling thread's
 * cap for the step that begins. now_ns: the time, from tg__now_ns(). */
void tg__step_trial_tick(struct tg__step_trial *tr, uint64_t now_ns);
/* Lifts the calling thread's cap (the trial's steps are over: tg_optim_free). */
void tg__thread_cap_clear(void);
/* True: ticks set no cap (the tests that must see every step on the configured count); also
 * off when TG_STEP_TRIAL=0 is in the environment. */
extern bool tg__step_trial_off;
/* A monotonic clock in nanoseconds. */
uint64_t tg__now_ns(void);

/*
 * The thread pool (pool.c): calls fn(part, ctx) once for each part in [0, parts) on the
 * calling thread and up to threads - 1 pool workers, and returns when all are done. Parts are
 * claimed by whichever thread is free, so what a part computes must not depend on the thread.
 * Never fails: a pool that is busy (another caller, or a call from inside a part) or cannot
 * start workers runs the parts in order on the calling thread.
 */
void tg__pool_run(int threads, size_t parts, void (*fn)(size_t part, void *ctx), void *ctx);
/* The most threads a pool job uses (the caller and TG_POOL_MAX_THREADS - 1 workers). */
#define TG_POOL_MAX_THREADS 256
/* True on a thread that is running a part of a pool job (as the caller or a worker); false in
 * the serial fallback and outside the pool. At most one pool job runs at a time. */
bool tg__pool_in_job(void);
/* Stops and joins the pool's workers (waiting for a job in flight); the next threaded call
 * starts them again. */
void tg__pool_shutdown(void);

/* Frees the calling thread's packing buffers and stops the pool, whose workers free theirs
 * as they stop (buffers are otherwise kept for the life of each thread so warm steps allocate
 * nothing). Safe to call at any time no gemm is running; the next gemm allocates again. */
void tg__kernels_release(void);

/*
 * Convolution and pooling geometry (conv.c): input (n, c, h, w), window (kh, kw) with strides
 * (sh, sw), dilations (dh, dw) and padding before the first row and column (pt, pl; the
 * padding after is implied by oh, ow), output (oh, ow) per plane. Callers have checked that
 * every size fits.
 */
struct tg__conv_geom {
    size_t n, c, h, w, kh, kw, oh, ow;
    int64_t sh, sw, dh, dw, pt, pl;
};
/* col ((c·kh·kw) x (n·oh·ow)) from x (n, c, h, w); zeros where a tap is in the padding. */
void tg__im2col(const struct tg__conv_geom *g, const void *x, void *col, bool f64);
/* The adjoint: dx += col2im(col), every tap added back where it was read. */
void tg__col2im_add(const struct tg__conv_geom *g, const void *col, void *dx, bool f64);
/* Between an activation's (n, c, plane) layout and the products' rows: row r of `rows`
 * (leading dimension ld) holds channel r of every sample, sample k at columns
 * [k·plane, (k + 1)·plane). planes_to_rows copies; rows_to_planes writes planes = rows +
 * bias[r] (bias NULL: + 0), or adds rows into planes when `add`. */
void tg__planes_to_rows(size_t n, size_t c, size_t plane, size_t ld, const void *planes,
                        void *rows, bool f64);
void tg__rows_to_planes(size_t n, size_t c, size_t plane, size_t ld, const void *rows,
                        const void *bias, bool add, void *planes, bool f64);
/* Max (argmax may be NULL: not recorded) or average pooling of every (n, c) plane of x into y
 * (n, c, oh, ow). */
void tg__pool2d(const struct tg__conv_geom *g, const void *x, void *y, int64_t *argmax,
                bool max, bool f64);
/* dx += the VJP of tg__pool2d (max: through argmax; average: dy / (kh·kw) over each window). */
void tg__pool2d_vjp(const struct tg__conv_geom *g, const void *dy, void *dx,
                    const int64_t *argmax, bool max, bool f64);

#endif /* TG_KERNELS_H */
