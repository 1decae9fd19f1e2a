/*
 * tg__gemm_f32/_f64: the entry points the ops call. Handles the degenerate cases, picks the
 * path (runtime.c), splits C between threads and keeps the packing buffers.
 *
 * Threads: C is cut into at most T rectangles along one dimension (plan_threads says which),
 * at multiples of the path's register tile (MR rows or NR columns); the pool (pool.c) hands
 * them to whichever thread is free, and each rectangle runs the whole packed algorithm with
 * its own buffer — no barriers, no shared packed panels. The k loop, its KC blocking and the
 * tile grid are the same as in a one-thread run, so every element of C gets the same
 * arithmetic in the same order: results are bit-identical whatever T, whichever dimension is
 * split and whichever thread ran a rectangle. The cost is that each thread packs the whole of
 * the un-split operand, which is what the choice of dimension weighs.
 */
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include <tapegrad/features.h>

#include "../internal.h"
#include "gemm_impl.h"
#include "kernels.h"

/* Products below this many multiply-adds per thread run on one thread: at ~100 G FMA/s (f32
 * on the Zen 5) a thread's share is then under ~2.5 µs, the order of handing a part to a
 * worker. Whether a split just past it pays depends on the machine's state (a worker's share
 * pulls its operands from the other core's cache: B-seed4's products, 0.8 M multiply-adds,
 * gained split on the VM in one state and lost in another); training steps settle that by
 * trial (tg__step_trial, kernels.h). */
#define GEMM_MIN_FMAS_PER_THREAD ((size_t)1 << 18)

size_t tg__gemm_short_c_bytes = (size_t)512 << 10;
size_t tg__gemm_direct_bytes = (size_t)1 << 20;
size_t tg__gemm_b_block_budget = (size_t)4 << 20;
int tg__gemm_split = TG_GEMM_SPLIT_BY_COST;

/* ---- packing buffers ---- */

struct workspace {
    void *raw;     /* as returned by tg__malloc */
    void *aligned; /* raw rounded up to 64 bytes (a cache line, an AVX-512 vector) */
    size_t size;   /* usable bytes from aligned */
};

/* A product on one thread packs into its thread's buffer. Part p of a threaded product packs
 * into part_workspace[p], whichever thread claimed the part (pool.c hands parts to whoever is
 * free): buffers then grow with the parts, the same way on every run, so a warm step
 * allocates nothing however its parts were claimed. (Per-thread buffers failed the
 * warm-calls test: a worker that claimed no part in the first calls grew its buffer later.)
 * Only one pool job runs at a time, so a slot has one user. */
static _Thread_local struct workspace thread_workspace;
static struct workspace part_workspace[TG_POOL_MAX_THREADS];
static _Thread_local struct workspace *active_part_workspace; /* set while a part runs */
static _Thread_local size_t active_part_b_block_bytes;        /* set while a part runs */
/* tg__gemm_caller_part: the slot of the caller's own part (its parts' products pack there) */
static struct workspace caller_part_workspace[TG_GEMM_CALLER_PARTS];
static _Thread_local struct workspace *active_caller_workspace;

/* A thread that exits frees its buffer: the key's destructor runs at pthread_exit (and when a
 * thread function returns), before the thread's _Thread_local storage goes away. Without it
 * every user thread that ran a gemm leaked its packing buffer (found by LeakSanitizer in
 * tests/hardening/test-threads.c). The main thread's buffer lives until the process ends. */
static pthread_key_t workspace_key;
static pthread_once_t workspace_once = PTHREAD_ONCE_INIT;
static bool workspace_key_ok;

static void
workspace_at_thread_exit(void *p)
{
    struct workspace *w = p;
    tg__free(w->raw);
    *w = (struct workspace){0};
}

static void
workspace_key_init(void)
{
    workspace_key_ok = pthread_key_create(&workspace_key, workspace_at_thread_exit) == 0;
}

void *
tg__gemm_workspace(size_t bytes)
{
    struct workspace *w = active_part_workspace     ? active_part_workspace
                          : active_caller_workspace ? active_caller_workspace
                                                    : &thread_workspace;
    if (bytes <= w->size && w->aligned)
        return w->aligned;
    tg__free(w->raw);
    *w = (struct workspace){0};
    if (bytes > SIZE_MAX - 64)
        return NULL;
    void *raw = tg__malloc(bytes + 64);
    if (!raw)
        return NULL;
    w->raw = raw;
    w->aligned = (void *)(((uintptr_t)raw + 63) & ~(uintptr_t)63);
    w->size = bytes;
    if (w == &thread_workspace) {
        pthread_once(&workspace_once, workspace_key_init);
        if (workspace_key_ok)
            pthread_setspecific(workspace_key, w);
    }
    return w->aligned;
}

size_t
tg__gemm_b_block_bytes(void)
{
    return active_part_b_block_bytes ? active_part_b_block_bytes : tg__gemm_b_block_budget;
}

static void
release_workspace(struct workspace *w)
{
    tg__free(w->raw);
    *w = (struct workspace){0};
}

void
tg__gemm_caller_part(size_t part)
{
    /* Outside a pool job the chunks run in order on this thread, whose own buffer then grows
     * the same way on every run; and another thread may be running chunks of its own with
     * the same numbers at the same time (the slots are for the one pool job at a time). */
    active_caller_workspace = part < TG_GEMM_CALLER_PARTS && tg__pool_in_job()
                                  ? &caller_part_workspace[part]
                                  : NULL;
}

void
tg__kernels_release(void)
{
    release_workspace(&thread_workspace);
    tg__pool_shutdown();
    for (int p = 0; p < TG_POOL_MAX_THREADS; p++)
        release_workspace(&part_workspace[p]);
    for (int p = 0; p < TG_GEMM_CALLER_PARTS; p++)
        release_workspace(&caller_part_workspace[p]);
}

/* ---- the split between threads ---- */

/* Part `part` of `parts` of [0, units) in whole units, scaled to [0, dim) elements. */
static void
split_range(size_t dim, size_t unit, int part, int parts, size_t *begin, size_t *end)
{
    size_t units = (dim + unit - 1) / unit;
    size_t b = units * (size_t)part / (size_t)parts * unit;
    size_t e = units * (size_t)(part + 1) / (size_t)parts * unit;
    *begin = b < dim ? b : dim;
    *end = e < dim ? e : dim;
}

/*
 * How many threads a product gets, and whether its parts are bands of rows (else of columns).
 * A row split has every part pack all of op(B), a column split all of op(A); the path's cost
 * estimate (GT_COST: its tiles' multiply-adds plus a price per packed value) of the largest
 * part decides, so a short C (m a batch, op(B) a weight) splits its columns and a tall one its
 * rows; a tie goes to the dimension with more register tiles (the rule before, alone). On the
 * AVX-512 path, 2 threads, harness, interleaved, time ratios of the rows / columns split where
 * the two rules differ: square f64 n = 1024 1.03, 2048 1.01, f32 2048 1.01; batch-sized m
 * (forward X·Wᵀ, backward dZ·W) f32 128x256x512 Bᵀ 1.11, 128x128x256 Bᵀ 1.08, 256x512x784 Bᵀ
 * 1.10, f64 128x128x256 Bᵀ 1.08; B-wide's dW 4096x4096x256 (Aᵀ) 1.01 f32, 1.01-1.02 f64.
 * Tall shapes keep rows (2048x512x512 0.98, 1024x256x1024 0.95-0.96, 4096x1024x256 Aᵀ
 * 0.96-0.97: columns lose). Steps, old and new builds alternated, 4 pairs, medians: B-seed
 * 2 threads 354 -> 343 µs f32, 710 -> 700 f64; B-mnist 795 -> 780 f32, 1548 -> 1525 f64;
 * B-wide equal within 1 %. Near a tie the estimate can be ~2 % wrong (f32 1024x4096x256 Aᵀ
 * splits its columns, as before, and ran 1.02x faster by rows).
 */
static int
plan_threads(const struct tg__gemm_kernel *kern, bool f64, bool trans_a, bool trans_b, size_t m,
             size_t n, size_t k, size_t lda, size_t ldb, bool *split_rows)
{
    *split_rows = false;
    int threads = tg__num_threads();
    if (threads <= 1)
        return 1;
    /* m·n·k in double: it can exceed size_t on 32-bit targets. */
    double by_work = (double)m * (double)n * (double)k / (double)GEMM_MIN_FMAS_PER_THREAD;
    if (by_work < (double)threads)
        threads = by_work < 1 ? 1 : (int)by_work;
    if (threads > TG_POOL_MAX_THREADS)
        threads = TG_POOL_MAX_THREADS;
    tg__gemm_cost *cost = f64 ? kern->cost_f64 : kern->cost_f32;
    size_t mr = f64 ? kern->mr_f64 : kern->mr_f32, nr = f64 ? kern->nr_f64 : kern->nr_f32;
    /* The dimension with more register tiles first: it keeps a tie. */
    bool rows_first = (m + mr - 1) / mr > (n + nr - 1) / nr;
    int best_threads = 1;
    double best_cost = 0;
    for (int i = 0; i <= 1; i++) {
        bool rows = i == 0 ? rows_first : !rows_first;
        if (tg__gemm_split != TG_GEMM_SPLIT_BY_COST &&
            rows != (tg__gemm_split == TG_GEMM_SPLIT_ROWS))
            continue;
        size_t dim = rows ? m : n, unit = rows ? mr : nr;
        size_t tiles = (dim + unit - 1) / unit;
        int parts = (size_t)threads < tiles ? threads : (int)tiles;
        if (parts < 2)
            continue;
        /* The largest part: split_range gives no part more than ceil(tiles / parts) tiles. */
        size_t share = (tiles + (size_t)parts - 1) / (size_t)parts * unit;
        share = share < dim ? share : dim;
        double c = cost(trans_a, trans_b, rows ? share : m, rows ? n : share, k, lda, ldb,
                        tg__gemm_b_block_budget / (size_t)parts);
        if (best_threads == 1 || c < best_cost) {
            best_threads = parts;
            best_cost = c;
            *split_rows = rows;
        }
    }
    return best_threads;
}

/*
 * C = beta·C for k = 0 or alpha = 0 (BLAS: A and B are not read). beta = 0 stores zeros
 * without reading C, so NaN or Inf there is overwritten.
 */
#define DEFINE_SCALE(NAME, T)                                                                  \
    static void NAME(size_t m, size_t n, T beta, T *c, size_t ldc)                             \
    {                                                                                          \
        if (beta == 1)                                                                         \
            return;                                                                            \
        for (size_t i = 0; i < m; i++) {                                                       \
            T *ci = c + i * ldc;                                                               \
            if (beta == 0)                                                                     \
                for (size_t j = 0; j < n; j++)                                                 \
                    ci[j] = 0;                                                                 \
            else                                                                               \
                for (size_t j = 0; j < n; j++)                                                 \
                    ci[j] *= beta;                                                             \
        }                                                                                      \
    }

DEFINE_SCALE(scale_f32, float)
DEFINE_SCALE(scale_f64, double)

/* One rectangle of C per part: rows [i0, i1) or columns [j0, j1) of the split. */
#define DEFINE_GEMM_PART(NAME, T, FIELD)                                                       \
    struct NAME##_job {                                                                        \
        const struct tg__gemm_kernel *kern;                                                    \
        bool trans_a, trans_b, split_rows;                                                     \
        int parts;                                                                             \
        size_t m, n, k, lda, ldb, ldc;                                                         \
        T alpha, beta;                                                                         \
        const T *a, *b;                                                                        \
        T *c;                                                                                  \
    };                                                                                         \
    static void NAME(size_t part, void *ctx)                                                   \
    {                                                                                          \
        const struct NAME##_job *g = ctx;                                                      \
        size_t i0 = 0, i1 = g->m, j0 = 0, j1 = g->n;                                           \
        if (g->split_rows)                                                                     \
            split_range(g->m, g->kern->mr_##FIELD, (int)part, g->parts, &i0, &i1);             \
        else                                                                                   \
            split_range(g->n, g->kern->nr_##FIELD, (int)part, g->parts, &j0, &j1);             \
        if (i0 == i1 || j0 == j1)                                                              \
            return;                                                                            \
        const T *a_part = g->trans_a ? g->a + i0 : g->a + i0 * g->lda;                         \
        const T *b_part = g->trans_b ? g->b + j0 * g->ldb : g->b + j0;                         \
        active_part_workspace = tg__pool_in_job() ? &part_workspace[part] : NULL;              \
        active_part_b_block_bytes = tg__gemm_b_block_budget / (size_t)g->parts;                \
        g->kern->FIELD(g->trans_a, g->trans_b, i1 - i0, j1 - j0, g->k, g->alpha, a_part,       \
                       g->lda, b_part, g->ldb, g->beta, g->c + i0 * g->ldc + j0, g->ldc);      \
        active_part_workspace = NULL;                                                          \
        active_part_b_block_bytes = 0;                                                         \
    }

DEFINE_GEMM_PART(gemm_part_f32, float, f32)
DEFINE_GEMM_PART(gemm_part_f64, double, f64)

/*
 * The parts are `threads` fixed rectangles; the pool runs each exactly once on whichever
 * thread claims it (all on the caller when the workers are late or busy), so the split, and
 * with it every bit of C, is the same either way.
 */
#define DEFINE_GEMM(NAME, T, FIELD, IS_F64, SCALE, PART)                                       \
    void NAME(bool trans_a, bool trans_b, size_t m, size_t n, size_t k, T alpha, const T *a,   \
              size_t lda, const T *b, size_t ldb, T beta, T *c, size_t ldc)                    \
    {                                                                                          \
        if (m == 0 || n == 0)                                                                  \
            return;                                                                            \
        if (k == 0 || alpha == 0) {                                                            \
            SCALE(m, n, beta, c, ldc);                                                         \
            return;                                                                            \
        }                                                                                      \
        const struct tg__gemm_kernel *kern = tg__gemm_active_kernel();                         \
        /* Under two threads' minimum (plan_threads' answer, without asking the pool);       \
         * dimensions under 2^10 keep m·n·k inside a 32-bit size_t. */                         \
        if (kern->self_threaded || (m < 1024 && n < 1024 && k < 1024 &&                        \
                                    m * n * k < 2 * GEMM_MIN_FMAS_PER_THREAD)) {               \
            kern->FIELD(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);       \
            return;                                                                            \
        }                                                                                      \
        bool split_rows;                                                                       \
        int threads = plan_threads(kern, IS_F64, trans_a, trans_b, m, n, k, lda, ldb,          \
                                   &split_rows);                                               \
        if (threads == 1) {                                                                    \
            kern->FIELD(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);       \
            return;                                                                            \
        }                                                                                      \
        struct PART##_job job = {                                                              \
            .kern = kern, .trans_a = trans_a, .trans_b = trans_b, .split_rows = split_rows,    \
            .parts = threads, .m = m, .n = n, .k = k, .lda = lda, .ldb = ldb, .ldc = ldc,      \
            .alpha = alpha, .beta = beta, .a = a, .b = b, .c = c,                              \
        };                                                                                     \
        tg__pool_run(threads, (size_t)threads, PART, &job);                                    \
    }

DEFINE_GEMM(tg__gemm_f32, float, f32, false, scale_f32, gemm_part_f32)
DEFINE_GEMM(tg__gemm_f64, double, f64, true, scale_f64, gemm_part_f64)
