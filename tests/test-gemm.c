/*
 * Matrix-multiply kernels (lib/kernels): every path this machine supports against the plain
 * reference loops, bit-identical results for 1 and 2 threads, the parallel-for partitioning,
 * no allocation on warm calls, and the run-time settings API.
 */
#include <check.h>
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tapegrad/runtime.h>
#include <tapegrad/tapegrad.h>

#include "kernels/kernels.h"

static const char *const paths[] = {"generic", "avx2", "avx512", "blas"};
#define N_PATHS (int)(sizeof paths / sizeof paths[0])

/* The shapes that matter: around the register tiles (MR 4/6/8, NR 8/16/32) and the
 * cache blocks (KC 256-512: 257 crosses the smaller ones). */
static const size_t dims[] = {0, 1, 2, 3, 7, 15, 16, 17, 31, 33, 64, 100, 257};
#define N_DIMS (sizeof dims / sizeof dims[0])

/*
 * Quick mode: under valgrind (TG_UNDER_VALGRIND, set by the meson 'valgrind' test setup) or
 * with TG_TEST_QUICK=1. Memcheck runs this test ~50x slower, and the memory errors it looks
 * for depend on which code paths run, not on how many shapes or how large: so the same paths
 * with fewer, smaller shapes (the full run took 11-14 minutes of the CI's valgrind step).
 *
 * What every path must still meet, with the register tiles MR x NR of 4x8 (generic), 6x16 and
 * 6x8 (AVX2 f32/f64), 8x32 and 8x16 (AVX-512) and the cache blocks MC <= 192, KC <= 512,
 * NC <= 4096 (lib/kernels/gemm_*.c):
 *   quick_dims, all m x n x k:  0 (nothing to do); 1, 3 (a partial row and column tile);
 *     7 (one full MR 4 or 6 tile plus a partial one); 12 (full row tiles for MR 4, 6);
 *     16 (full row tiles for MR 8, column tiles for NR 8, 16); 17, 33 (full tiles plus one
 *     row or column); as k,
 *     16 is whole 8x8 / 4x4 blocks of the transposed-B packing, 17 and 33 leave a remainder.
 *   path_matches_reference_blocks (both modes): m, k or n past every MC, KC or NC.
 *   path_matches_reference_mlp_shapes: m and k past MC and KC together.
 * every one in every loop order (blocked, short-C and direct, path_and_order), with all four
 * transpose combinations, alpha 1/0.5/-2, beta 0/1/-0.75 and row padding 0/3/17, in f32 and
 * f64.
 */
static bool quick;
static const size_t quick_dims[] = {0, 1, 3, 7, 12, 16, 17, 33};
#define N_QUICK_DIMS (sizeof quick_dims / sizeof quick_dims[0])

/* splitmix64: a tiny seeded generator so the suite needs nothing from tests/common.c. */
static uint64_t rng_state;
static double
uniform(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    z ^= z >> 31;
    return (double)(z >> 11) * 0x1p-53 * 2 - 1; /* [-1, 1) */
}

/* The defaults of tg__gemm_short_c_bytes, tg__gemm_direct_bytes and tg__gemm_b_block_budget,
 * restored after every test (as is tg__gemm_split). */
static size_t default_short_c_bytes, default_direct_bytes, default_b_block_budget;

static void
setup(void)
{
    default_short_c_bytes = tg__gemm_short_c_bytes;
    default_direct_bytes = tg__gemm_direct_bytes;
    default_b_block_budget = tg__gemm_b_block_budget;
}

static void
teardown(void)
{
    tg_set_kernel("auto");
    tg_set_num_threads(0);
    tg__gemm_short_c_bytes = default_short_c_bytes;
    tg__gemm_direct_bytes = default_direct_bytes;
    tg__gemm_b_block_budget = default_b_block_budget;
    tg__gemm_split = TG_GEMM_SPLIT_BY_COST;
}

/*
 * The path tests run three times per path, _i = order·N_PATHS + path: order 0 forces the
 * blocked loop order of gemm_template.h for every product, order 1 the short-C order, order 2
 * the direct (unpacked) order where the path has one (AVX2, AVX-512; elsewhere order 2 runs
 * the short-C order again). By default a product picks one by its size (kernels.h), so that
 * every shape below meets all of them.
 */
#define N_ORDERS 3
static const char *
path_and_order(int i)
{
    int order = i / N_PATHS;
    tg__gemm_short_c_bytes = order == 0 ? 0 : SIZE_MAX;
    tg__gemm_direct_bytes = order == 2 ? SIZE_MAX : 0;
    return paths[i % N_PATHS];
}

/* Switches to the named path; false (and a note) when this CPU or build lacks it. */
static bool
use_path(const char *name)
{
    tg_status s = tg_set_kernel(name);
    if (s == TG_ERR_UNSUPPORTED) {
        fprintf(stderr, "gemm: path %s not supported here, skipped\n", name);
        return false;
    }
    ck_assert_int_eq(s, TG_OK);
    ck_assert_str_eq(tg_kernel_name(), name);
    return true;
}

/*
 * One case, instantiated for float and double. Storage: A is (m x k) or, transposed, (k x m)
 * with row stride lda = cols + pad; likewise B and C.
 *
 * Tolerance. Both the path under test and the reference compute every element as a sum of k
 * products plus the beta term, in some order, in precision u (2^-24 f32, 2^-53 f64). The
 * standard bound for such a sum (Higham, Accuracy and Stability, eq. 3.5) is
 *     |fl(s) - s| <= gamma_{k+2} · (|alpha|·Σ_p |a_ip|·|b_pj| + |beta|·|c_ij|),  gamma_n ≈ n·u,
 * so the two results differ by at most twice that. We compute the magnitude term exactly
 * enough in double with the reference on |A|, |B|, |C| and allow 2·(k+2)·u of it (plus the
 * smallest normal, for all-zero rows). It is k-scaled, as it must be: a fixed tolerance is
 * either too loose for k = 1 or too tight for k = 257 in f32. In practice the observed error is
 * ~sqrt(k)·u, well inside.
 */
#define DEFINE_CHECK_CASE(NAME, T, GEMM, REF, EPS, TINY)                                       \
    static void NAME(const char *path, bool ta, bool tb, size_t m, size_t n, size_t k,        \
                     size_t pad, T alpha, T beta)                                              \
    {                                                                                          \
        size_t a_rows = ta ? k : m, a_cols = ta ? m : k;                                       \
        size_t b_rows = tb ? n : k, b_cols = tb ? k : n;                                       \
        size_t lda = a_cols + pad, ldb = b_cols + (pad ? pad + 1 : 0), ldc = n + pad;          \
        T *a = malloc(sizeof(T) * (a_rows * lda + 1));                                         \
        T *b = malloc(sizeof(T) * (b_rows * ldb + 1));                                         \
        T *c = malloc(sizeof(T) * (m * ldc + 1));                                              \
        T *c_ref = malloc(sizeof(T) * (m * ldc + 1));                                          \
        double *mag = malloc(sizeof(double) * (m * n + 1));                                    \
        if (!(a && b && c && c_ref && mag))                                                    \
            ck_abort_msg("out of memory");                                                     \
        for (size_t i = 0; i < a_rows * lda; i++)                                              \
            a[i] = (T)uniform();                                                               \
        for (size_t i = 0; i < b_rows * ldb; i++)                                              \
            b[i] = (T)uniform();                                                               \
        for (size_t i = 0; i < m * ldc; i++)                                                   \
            c[i] = c_ref[i] = (T)uniform();                                                    \
        /* |alpha|·|op(A)|·|op(B)| + |beta|·|C|, in double, before C is overwritten. */        \
        for (size_t i = 0; i < m; i++)                                                         \
            for (size_t j = 0; j < n; j++) {                                                   \
                double s = 0;                                                                  \
                for (size_t p = 0; p < k; p++) {                                               \
                    double aip = ta ? a[p * lda + i] : a[i * lda + p];                         \
                    double bpj = tb ? b[j * ldb + p] : b[p * ldb + j];                         \
                    s += fabs(aip * bpj);                                                      \
                }                                                                              \
                mag[i * n + j] = fabs((double)alpha) * s +                                     \
                                 fabs((double)beta) * fabs((double)c[i * ldc + j]);            \
            }                                                                                  \
        if (beta == 0) /* beta = 0 must overwrite C without reading it */                      \
            for (size_t i = 0; i < m * ldc; i++)                                               \
                c[i] = (T)NAN;                                                                 \
        REF(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c_ref, ldc);                         \
        GEMM(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);                            \
        for (size_t i = 0; i < m; i++) {                                                       \
            for (size_t j = 0; j < ldc; j++) {                                                 \
                T got = c[i * ldc + j], want = c_ref[i * ldc + j];                             \
                /* Plain ifs, not ck_assert per element: in fork mode every passing        \
                 * ck_assert reports its location to the parent through a pipe. */            \
                if (j >= n) { /* padding past the n columns must be untouched */               \
                    if (beta == 0 ? !isnan(got) : got != want)                                 \
                        ck_abort_msg("%s: padding written", path);                             \
                    continue;                                                                  \
                }                                                                              \
                double tol = 2.0 * (double)(k + 2) * EPS * mag[i * n + j] + TINY;              \
                if (!(fabs((double)got - (double)want) <= tol))                                \
                    ck_abort_msg("%s %s ta=%d tb=%d m=%zu n=%zu k=%zu pad=%zu alpha=%g "       \
                                 "beta=%g: C[%zu][%zu] = %.9g, reference %.9g, tol %.3g",      \
                                 path, #T, ta, tb, m, n, k, pad, (double)alpha, (double)beta,  \
                                 i, j, (double)got, (double)want, tol);                        \
            }                                                                                  \
        }                                                                                      \
        free(a);                                                                               \
        free(b);                                                                               \
        free(c);                                                                               \
        free(c_ref);                                                                           \
        free(mag);                                                                             \
    }

DEFINE_CHECK_CASE(check_case_f32, float, tg__gemm_f32, tg__gemm_ref_f32, 0x1p-24, 0x1p-126)
DEFINE_CHECK_CASE(check_case_f64, double, tg__gemm_f64, tg__gemm_ref_f64, 0x1p-53, 0x1p-1022)

/* Both dtypes of one case, with alpha, beta and the row padding picked by index (mod 3). */
static void
check_case_both(const char *path, bool ta, bool tb, size_t m, size_t n, size_t k,
                size_t alpha_i, size_t beta_i, size_t pad_i)
{
    static const double alphas[] = {1, 0.5, -2};
    static const double betas[] = {0, 1, -0.75};
    static const size_t pads[] = {0, 3, 17};
    double alpha = alphas[alpha_i % 3], beta = betas[beta_i % 3];
    size_t pad = pads[pad_i % 3];
    check_case_f32(path, ta, tb, m, n, k, pad, (float)alpha, (float)beta);
    check_case_f64(path, ta, tb, m, n, k, pad, alpha, beta);
}

/*
 * All 4 transpose combinations x all m, n, k in dims (quick_dims in quick mode), for f32 and
 * f64. alpha, beta and the stride padding cycle with the case number so that every
 * combination of them meets many shapes without a full cross product (which would take
 * minutes on the generic path). Cases with m·n·k above 2^16 are thinned to one in eight,
 * keeping the large ones represented (quick_dims has none).
 */
START_TEST(path_matches_reference)
{
    const char *path = path_and_order(_i);
    if (!use_path(path))
        return;
    const size_t *d = quick ? quick_dims : dims;
    size_t nd = quick ? N_QUICK_DIMS : N_DIMS;
    rng_state = 20240601;
    size_t case_no = 0;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (size_t im = 0; im < nd; im++)
                for (size_t in = 0; in < nd; in++)
                    for (size_t ik = 0; ik < nd; ik++) {
                        size_t m = d[im], n = d[in], k = d[ik];
                        case_no++;
                        if (m * n * k > ((size_t)1 << 16) && case_no % 8 != 0)
                            continue;
                        check_case_both(path, ta, tb, m, n, k, case_no, case_no / 3,
                                        case_no / 9);
                    }
}
END_TEST

/*
 * One dimension past every path's cache block at a time (MC <= 192, KC <= 512, NC <= 4096),
 * the others small: several blocks along it, and for k the later blocks accumulating into C
 * (beta 1 after the first). Every beta with every transpose. The last shape runs with the
 * AVX-512 path's B-block budget cut to 48 KiB: at its k (one 132-long run) NC narrows to 64
 * columns f32 and 32 f64 (32 and 16 per part on two threads), so n takes 5-19 blocks.
 */
START_TEST(path_matches_reference_blocks)
{
    const char *path = path_and_order(_i);
    if (!use_path(path))
        return;
    rng_state = 11;
    static const size_t shapes[][3] = {{257, 17, 33}, {7, 17, 513}, {13, 4133, 5}, {9, 300, 130}};
    const size_t n_shapes = sizeof shapes / sizeof shapes[0];
    size_t case_no = 0;
    for (size_t s = 0; s < n_shapes; s++) {
        if (s == n_shapes - 1)
            tg__gemm_b_block_budget = (size_t)48 << 10;
        for (int t = 0; t < 4; t++, case_no++)
            for (size_t beta_i = 0; beta_i < 3; beta_i++)
                check_case_both(path, t & 1, t >> 1, shapes[s][0], shapes[s][1], shapes[s][2],
                                case_no + beta_i, beta_i, case_no / 3);
    }
}
END_TEST

/* The MLP shapes the engine multiplies, forward (X·Wᵀ-like) and backward (dZ·W, dZᵀ·X), and
 * 256 x 128 x 768, whose m and k cross MC and KC together on every path (MC <= 192, KC <= 512).
 * In quick mode, smaller ones: 256 x 24 x 768 crosses both everywhere; 390 crosses KC on the
 * generic and AVX2 paths (256, 384), 130 crosses MC on generic (128) and AVX-512 (96);
 * the small sides, 20 and 24, give whole and partial register tiles. */
START_TEST(path_matches_reference_mlp_shapes)
{
    const char *path = path_and_order(_i);
    if (!use_path(path))
        return;
    rng_state = 7;
    static const size_t shapes[][3] = {
        {128, 512, 784}, {128, 784, 512}, {512, 784, 128}, {256, 128, 768}, {16, 32, 16},
        {32, 16, 2},     {32, 1, 16},     {1, 300, 500},   {600, 1, 70},
    };
    static const size_t shapes_quick[][3] = {
        {130, 20, 390}, {20, 130, 390}, {390, 20, 130}, {256, 24, 768}, {16, 32, 16},
        {32, 16, 2},    {32, 1, 16},    {1, 300, 500},  {600, 1, 70},
    };
    _Static_assert(sizeof shapes == sizeof shapes_quick, "same number of shapes");
    const size_t(*sh)[3] = quick ? shapes_quick : shapes;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int t = 0; t < 4; t++) {
            check_case_f32(path, t & 1, t >> 1, sh[s][0], sh[s][1], sh[s][2], 0, 1.0f,
                           t == 3 ? 1.0f : 0.0f);
            check_case_f64(path, t & 1, t >> 1, sh[s][0], sh[s][1], sh[s][2], 0, 1.0,
                           t == 3 ? 1.0 : 0.0);
        }
}
END_TEST

/*
 * Bit-identical for 1 and 2 threads and for every loop order: one thread in the blocked order,
 * two threads each picking its order by its share's size and the split by its cost (the
 * defaults), two threads in the short-C order split by rows, two in the direct order (where
 * the path has it) split by columns. The shapes are big enough for the dispatcher to split
 * them (m·n·k well past its per-thread minimum), with edges. Quick mode: just past the
 * minimum for two threads (2 x 2^18), k past every KC.
 */
#define DEFINE_THREADS_CASE(NAME, T, GEMM)                                                     \
    static void NAME(const char *path, bool ta, bool tb, size_t m, size_t n, size_t k, T beta) \
    {                                                                                          \
        size_t a_len = m * k, b_len = k * n, c_len = m * n;                                    \
        T *a = malloc(sizeof(T) * a_len), *b = malloc(sizeof(T) * b_len);                      \
        T *c1 = malloc(sizeof(T) * c_len), *c2 = malloc(sizeof(T) * c_len);                    \
        T *c3 = malloc(sizeof(T) * c_len), *c4 = malloc(sizeof(T) * c_len);                    \
        if (!(a && b && c1 && c2 && c3 && c4))                                                 \
            ck_abort_msg("out of memory");                                                     \
        for (size_t i = 0; i < a_len; i++)                                                     \
            a[i] = (T)uniform();                                                               \
        for (size_t i = 0; i < b_len; i++)                                                     \
            b[i] = (T)uniform();                                                               \
        for (size_t i = 0; i < c_len; i++)                                                     \
            c1[i] = c2[i] = (T)uniform();                                                      \
        size_t lda = ta ? m : k, ldb = tb ? k : n;                                             \
        memcpy(c3, c1, sizeof(T) * c_len);                                                     \
        memcpy(c4, c1, sizeof(T) * c_len);                                                     \
        tg_set_num_threads(1);                                                                 \
        tg__gemm_short_c_bytes = 0;                                                            \
        tg__gemm_direct_bytes = 0;                                                             \
        GEMM(ta, tb, m, n, k, (T)0.75, a, lda, b, ldb, beta, c1, n);                           \
        tg_set_num_threads(2);                                                                 \
        tg__gemm_short_c_bytes = default_short_c_bytes;                                        \
        tg__gemm_direct_bytes = default_direct_bytes;                                          \
        GEMM(ta, tb, m, n, k, (T)0.75, a, lda, b, ldb, beta, c2, n);                           \
        tg__gemm_short_c_bytes = SIZE_MAX;                                                     \
        tg__gemm_direct_bytes = 0;                                                             \
        tg__gemm_split = TG_GEMM_SPLIT_ROWS;                                                   \
        GEMM(ta, tb, m, n, k, (T)0.75, a, lda, b, ldb, beta, c3, n);                           \
        tg__gemm_direct_bytes = SIZE_MAX;                                                      \
        tg__gemm_split = TG_GEMM_SPLIT_COLUMNS;                                                \
        GEMM(ta, tb, m, n, k, (T)0.75, a, lda, b, ldb, beta, c4, n);                           \
        tg__gemm_split = TG_GEMM_SPLIT_BY_COST;                                                \
        ck_assert_msg(memcmp(c1, c2, sizeof(T) * c_len) == 0,                                  \
                      "%s %s ta=%d tb=%d %zux%zux%zu: 1 and 2 threads differ", path, #T, ta,   \
                      tb, m, n, k);                                                            \
        ck_assert_msg(memcmp(c1, c3, sizeof(T) * c_len) == 0,                                  \
                      "%s %s ta=%d tb=%d %zux%zux%zu: blocked and short-C (rows) differ",      \
                      path, #T, ta, tb, m, n, k);                                              \
        ck_assert_msg(memcmp(c1, c4, sizeof(T) * c_len) == 0,                                  \
                      "%s %s ta=%d tb=%d %zux%zux%zu: blocked and direct (columns) differ", path, \
                      #T, ta, tb, m, n, k);                                                    \
        free(a);                                                                               \
        free(b);                                                                               \
        free(c1);                                                                              \
        free(c2);                                                                              \
        free(c3);                                                                              \
        free(c4);                                                                              \
    }

DEFINE_THREADS_CASE(threads_case_f32, float, tg__gemm_f32)
DEFINE_THREADS_CASE(threads_case_f64, double, tg__gemm_f64)

START_TEST(bit_identical_across_threads)
{
    const char *path = paths[_i];
    if (strcmp(path, "blas") == 0) /* not ours to promise */
        return;
    if (!use_path(path))
        return;
    rng_state = 99;
    static const size_t shapes_full[][3] = {{301, 203, 517}, {128, 512, 784}, {700, 33, 129},
                                            {45, 1000, 64}};
    static const size_t shapes_quick[][3] = {{97, 33, 520}, {33, 170, 100}};
    const size_t(*shapes)[3] = quick ? shapes_quick : shapes_full;
    size_t n_shapes = quick ? sizeof shapes_quick / sizeof shapes_quick[0]
                            : sizeof shapes_full / sizeof shapes_full[0];
    for (size_t s = 0; s < n_shapes; s++)
        for (int t = 0; t < 4; t++) {
            threads_case_f32(path, t & 1, t >> 1, shapes[s][0], shapes[s][1], shapes[s][2],
                             t == 2 ? 1.0f : 0.0f);
            threads_case_f64(path, t & 1, t >> 1, shapes[s][0], shapes[s][1], shapes[s][2],
                             t == 2 ? 1.0 : 0.0);
        }
}
END_TEST

/*
 * Narrow products (n at most a quarter of a vector): the direct order runs some of them as
 * Cᵀ = op(B)ᵀ·op(A)ᵀ stored transposed (gemm_template.h, direct_transposed), which must give the
 * bits of the blocked order: same FMAs, same k order, same alpha·acc + beta·C. Shapes inside
 * and just outside its conditions (k < 16, k past KC, a gathered op(A)ᵀ with k % 8 != 0), with
 * padded strides, every transpose, beta 0 (C not read: NaN there must not leak) and 0.5.
 */
#define DEFINE_NARROW_CASE(NAME, T, GEMM)                                                      \
    static void NAME(const char *path, bool ta, bool tb, size_t m, size_t n, size_t k, T beta) \
    {                                                                                          \
        size_t lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 5, ldc = n + 2;                    \
        size_t a_len = (ta ? k : m) * lda, b_len = (tb ? n : k) * ldb, c_len = m * ldc;        \
        T *a = malloc(sizeof(T) * a_len), *b = malloc(sizeof(T) * b_len);                      \
        T *c1 = malloc(sizeof(T) * c_len), *c2 = malloc(sizeof(T) * c_len);                    \
        if (!(a && b && c1 && c2))                                                             \
            ck_abort_msg("out of memory");                                                     \
        for (size_t i = 0; i < a_len; i++)                                                     \
            a[i] = (T)uniform();                                                               \
        for (size_t i = 0; i < b_len; i++)                                                     \
            b[i] = (T)uniform();                                                               \
        for (size_t i = 0; i < c_len; i++)                                                     \
            c1[i] = c2[i] = beta != 0 ? (T)uniform() : (T)NAN;                                 \
        tg_set_num_threads(1);                                                                 \
        tg__gemm_short_c_bytes = 0;                                                            \
        tg__gemm_direct_bytes = 0;                                                             \
        GEMM(ta, tb, m, n, k, (T)0.75, a, lda, b, ldb, beta, c1, ldc);                         \
        tg__gemm_short_c_bytes = default_short_c_bytes;                                        \
        tg__gemm_direct_bytes = default_direct_bytes;                                          \
        GEMM(ta, tb, m, n, k, (T)0.75, a, lda, b, ldb, beta, c2, ldc);                         \
        for (size_t i = 0; i < m; i++)                                                         \
            for (size_t j = 0; j < n; j++)                                                     \
                ck_assert_msg(memcmp(&c1[i * ldc + j], &c2[i * ldc + j], sizeof(T)) == 0,      \
                              "%s %s ta=%d tb=%d %zux%zux%zu beta %g: C[%zu][%zu] blocked "    \
                              "%.17g, direct %.17g",                                           \
                              path, #T, ta, tb, m, n, k, (double)beta, i, j,                   \
                              (double)c1[i * ldc + j], (double)c2[i * ldc + j]);               \
        free(a);                                                                               \
        free(b);                                                                               \
        free(c1);                                                                              \
        free(c2);                                                                              \
    }

DEFINE_NARROW_CASE(narrow_case_f32, float, tg__gemm_f32)
DEFINE_NARROW_CASE(narrow_case_f64, double, tg__gemm_f64)

/* narrow_case on every shape, both types, every transpose, beta 0 and 0.5 */
static void
order_cases(const char *path, const size_t (*shapes)[3], size_t n_shapes)
{
    for (size_t s = 0; s < n_shapes; s++)
        for (int t = 0; t < 8; t++) {
            narrow_case_f32(path, t & 1, (t >> 1) & 1, shapes[s][0], shapes[s][1], shapes[s][2],
                            t & 4 ? 0.5f : 0.0f);
            narrow_case_f64(path, t & 1, (t >> 1) & 1, shapes[s][0], shapes[s][1], shapes[s][2],
                            t & 4 ? 0.5 : 0.0);
        }
}

START_TEST(narrow_products_bit_identical_across_orders)
{
    const char *path = paths[_i];
    if (strcmp(path, "blas") == 0) /* not ours to promise */
        return;
    if (!use_path(path))
        return;
    rng_state = 5;
    static const size_t shapes[][3] = {{32, 1, 16}, {16, 2, 32}, {64, 4, 16}, {40, 3, 128},
                                       {48, 2, 24}, {32, 2, 20}, {33, 1, 8},  {128, 2, 512},
                                       {20, 1, 600}, {16, 1, 16}, {8, 2, 64}};
    order_cases(path, shapes, sizeof shapes / sizeof shapes[0]);
}
END_TEST

/*
 * Small products, C at most a vector wide: the direct order runs two tiles' rows at once
 * (gemm_template.h, direct_tall) and, with a transposed A, reads a B of at most 4 KiB in
 * place. Both must keep the blocked order's bits. Shapes: B-small's products (32x16 by k = 1,
 * 2, 16; its dW products 16x16x32 and 1x16x32), row counts that leave a partial tall tile or a
 * tile past it (17, 23, 24, 13 against MR = 6 or 8), C narrower than a vector (masked stores),
 * and Aᵀ products whose B (k rows of n + 5) lies just inside and just past 4 KiB in f32
 * (k = 48: 4032 bytes, k = 64: 5376); every transpose, beta 0 and 0.5 (narrow_case, above).
 */
START_TEST(small_products_bit_identical_across_orders)
{
    const char *path = paths[_i];
    if (strcmp(path, "blas") == 0) /* not ours to promise */
        return;
    if (!use_path(path))
        return;
    rng_state = 11;
    static const size_t shapes[][3] = {{32, 16, 16}, {32, 16, 1}, {32, 16, 2}, {16, 16, 32},
                                       {1, 16, 32},  {17, 16, 5}, {23, 9, 33}, {24, 16, 7},
                                       {40, 8, 16},  {20, 4, 64}, {13, 5, 31}, {12, 3, 10},
                                       {16, 16, 48}, {16, 16, 64}, {48, 12, 40}};
    order_cases(path, shapes, sizeof shapes / sizeof shapes[0]);
}
END_TEST

/* ---- parallel for ---- */

struct sum_ctx {
    const float *x;
    size_t grain;
    float *partials;
};

static void
sum_chunk(size_t begin, size_t end, void *ctx)
{
    struct sum_ctx *s = ctx;
    float acc = 0;
    for (size_t i = begin; i < end; i++)
        acc += s->x[i];
    s->partials[begin / s->grain] = acc;
}

static float
chunked_sum(const float *x, size_t n, size_t grain)
{
    size_t chunks = tg__parallel_chunks(n, grain);
    float *partials = calloc(chunks, sizeof *partials);
    ck_assert(partials);
    struct sum_ctx ctx = {x, grain ? grain : n, partials};
    tg__parallel_for(n, grain, sum_chunk, &ctx);
    float total = 0;
    for (size_t c = 0; c < chunks; c++)
        total += partials[c];
    free(partials);
    return total;
}

START_TEST(parallel_for_chunks_are_fixed)
{
    ck_assert_uint_eq(tg__parallel_chunks(0, 10), 1);
    ck_assert_uint_eq(tg__parallel_chunks(10, 0), 1);
    ck_assert_uint_eq(tg__parallel_chunks(10, 10), 1);
    ck_assert_uint_eq(tg__parallel_chunks(11, 10), 2);
    ck_assert_uint_eq(tg__parallel_chunks(100000, 4096), 25);

    size_t n = 100003;
    float *x = malloc(n * sizeof *x);
    ck_assert(x);
    rng_state = 3;
    for (size_t i = 0; i < n; i++)
        x[i] = (float)uniform();
    tg_set_num_threads(1);
    float one = chunked_sum(x, n, 4096);
    tg_set_num_threads(2);
    float two = chunked_sum(x, n, 4096);
    ck_assert_msg(memcmp(&one, &two, sizeof one) == 0, "sum differs: %.9g vs %.9g", one, two);
    ck_assert_float_eq(chunked_sum(x, 5, 4096), x[0] + x[1] + x[2] + x[3] + x[4]);
    free(x);
}
END_TEST

/* ---- no allocation on warm calls ---- */

/* atomic: the pool's workers grow their parts' buffers at the same time */
static atomic_size_t alloc_count;
static void *
counting_malloc(size_t size, void *ctx)
{
    (void)ctx;
    alloc_count++;
    return malloc(size);
}
static void *
counting_realloc(void *p, size_t size, void *ctx)
{
    (void)ctx;
    alloc_count++;
    return realloc(p, size);
}
static void
counting_free(void *p, void *ctx)
{
    (void)ctx;
    free(p);
}

START_TEST(warm_calls_do_not_allocate)
{
    const char *path = paths[_i];
    if (strcmp(path, "blas") == 0 || !use_path(path))
        return;
    tg__kernels_release(); /* buffers from the default allocator go back to it */
    tg_allocator counting = {counting_malloc, counting_realloc, counting_free, NULL};
    tg_set_allocator(&counting);
    tg_set_num_threads(2);
    /* an MLP layer; in quick mode one just large enough for two threads, k past every KC */
    size_t m = quick ? 97 : 128, n = quick ? 64 : 512, k = quick ? 520 : 784;
    float *a = calloc(m * k, sizeof *a), *b = calloc(k * n, sizeof *b);
    float *c = calloc(m * n, sizeof *c);
    ck_assert(a && b && c);
    for (int t = 0; t < 4; t++) /* first round: buffers grow */
        tg__gemm_f32(t & 1, t >> 1, m, n, k, 1, a, (t & 1) ? m : k, b, (t >> 1) ? k : n, 0, c,
                     n);
    alloc_count = 0;
    for (int rep = 0; rep < 3; rep++)
        for (int t = 0; t < 4; t++)
            tg__gemm_f32(t & 1, t >> 1, m, n, k, 1, a, (t & 1) ? m : k, b, (t >> 1) ? k : n, 1,
                         c, n);
    size_t warm = alloc_count;
    tg__kernels_release(); /* hand the counted buffers back before restoring the allocator */
    tg_set_allocator(NULL);
    ck_assert_uint_eq(warm, 0);
    free(a);
    free(b);
    free(c);
}
END_TEST

/* ---- settings ---- */

START_TEST(settings_api)
{
    ck_assert_int_eq(tg_set_num_threads(-1), TG_ERR_ARG);
    ck_assert_int_eq(tg_set_num_threads(3), TG_OK);
#if TG_HAS_THREADS
    ck_assert_int_eq(tg_num_threads(), 3);
#else
    ck_assert_int_eq(tg_num_threads(), 1);
#endif
    ck_assert_int_eq(tg_set_num_threads(0), TG_OK);
    ck_assert_int_ge(tg_num_threads(), 1);

    ck_assert_int_eq(tg_set_kernel(NULL), TG_ERR_ARG);
    ck_assert_int_eq(tg_set_kernel("sse9"), TG_ERR_ARG);
    ck_assert_int_eq(tg_set_kernel("generic"), TG_OK);
    ck_assert_str_eq(tg_kernel_name(), "generic");
#if !TG_HAS_BLAS
    ck_assert_int_eq(tg_set_kernel("blas"), TG_ERR_UNSUPPORTED);
    ck_assert_str_eq(tg_kernel_name(), "generic");
#endif
    ck_assert_int_eq(tg_set_kernel("auto"), TG_OK);
    const char *best = tg_kernel_name();
    bool known = false;
    for (int i = 0; i < N_PATHS; i++)
        known |= strcmp(best, paths[i]) == 0;
    ck_assert_msg(known, "unknown path %s", best);
}
END_TEST

static Suite *
gemm_suite(void)
{
    Suite *s = suite_create("gemm");

    TCase *tc = tcase_create("paths vs reference");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 600);
    tcase_add_loop_test(tc, path_matches_reference, 0, N_ORDERS * N_PATHS);
    tcase_add_loop_test(tc, path_matches_reference_blocks, 0, N_ORDERS * N_PATHS);
    tcase_add_loop_test(tc, path_matches_reference_mlp_shapes, 0, N_ORDERS * N_PATHS);
    suite_add_tcase(s, tc);

    tc = tcase_create("threads");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 600);
    tcase_add_loop_test(tc, bit_identical_across_threads, 0, N_PATHS);
    tcase_add_loop_test(tc, narrow_products_bit_identical_across_orders, 0, N_PATHS);
    tcase_add_loop_test(tc, small_products_bit_identical_across_orders, 0, N_PATHS);
    tcase_add_test(tc, parallel_for_chunks_are_fixed);
    suite_add_tcase(s, tc);

    tc = tcase_create("allocation");
    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_add_loop_test(tc, warm_calls_do_not_allocate, 0, N_PATHS);
    suite_add_tcase(s, tc);

    tc = tcase_create("settings");
    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_add_test(tc, settings_api);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    const char *q = getenv("TG_TEST_QUICK");
    quick = getenv("TG_UNDER_VALGRIND") || (q && strcmp(q, "0") != 0);
    SRunner *sr = srunner_create(gemm_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
