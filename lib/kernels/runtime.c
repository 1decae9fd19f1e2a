/*
 * Run-time settings (include/tapegrad/runtime.h): the thread count and the matrix-multiply
 * path, plus tg__parallel_for. Settings are process-wide atomics: any thread may read them
 * while another sets them, and a gemm uses the values it read when it started.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <tapegrad/runtime.h>

#if TG_HAS_OPENMP
#include <omp.h>
#endif

#include "gemm_impl.h"
#include "kernels.h"

/* ---- threads ---- */

static atomic_int requested_threads; /* tg_set_num_threads; 0 = default */

#if TG_HAS_OPENMP
static atomic_int default_threads = -1; /* resolved on first use; -1 = not yet */

/* TG_NUM_THREADS when it is a positive integer, else the OpenMP default (OMP_NUM_THREADS or
 * the CPU count). Racing first calls compute the same value, so no lock is needed. */
static int
resolve_default_threads(void)
{
    int cached = atomic_load_explicit(&default_threads, memory_order_relaxed);
    if (cached > 0)
        return cached;
    int threads = 0;
    const char *env = getenv("TG_NUM_THREADS");
    if (env && *env) {
        char *end;
        long v = strtol(env, &end, 10);
        if (*end == '\0' && v > 0 && v <= 4096)
            threads = (int)v;
    }
    if (threads == 0)
        threads = omp_get_max_threads();
    if (threads < 1)
        threads = 1;
    atomic_store_explicit(&default_threads, threads, memory_order_relaxed);
    return threads;
}
#endif

tg_status
tg_set_num_threads(int n)
{
    if (n < 0)
        return TG_ERR_ARG;
    atomic_store_explicit(&requested_threads, n, memory_order_relaxed);
    return TG_OK;
}

int
tg_num_threads(void)
{
#if TG_HAS_OPENMP
    int n = atomic_load_explicit(&requested_threads, memory_order_relaxed);
    return n > 0 ? n : resolve_default_threads();
#else
    return 1; /* built without OpenMP: everything runs on the calling thread */
#endif
}

int
tg__num_threads(void)
{
    return tg_num_threads();
}

/* ---- the matrix-multiply path ---- */

static bool
kernel_supported(const struct tg__gemm_kernel *k)
{
#if TG_KERNELS_X86
    __builtin_cpu_init();
    /* libgcc's __builtin_cpu_supports reports AVX2/AVX-512F only when the OS also saves the
     * ymm/zmm state (XCR0), so a kernel with AVX-512 masked by the hypervisor is refused. */
    if (k == &tg__gemm_kernel_avx512)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("fma");
    if (k == &tg__gemm_kernel_avx2)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    return k != NULL;
}

/* Known paths by name, in order of preference for the automatic choice. A built-in BLAS
 * ranks below our SIMD paths (as fast or faster where they run, and bit-identical across
 * thread counts by construction) but above the portable C path, for the CPUs where ours has
 * no SIMD kernel. TG_KERNEL=blas forces it anywhere. */
static const struct tg__gemm_kernel *const all_kernels[] = {
#if TG_KERNELS_X86
    &tg__gemm_kernel_avx512,
    &tg__gemm_kernel_avx2,
#endif
#if TG_HAS_BLAS
    &tg__gemm_kernel_blas,
#endif
    &tg__gemm_kernel_generic,
};
#define N_KERNELS (sizeof all_kernels / sizeof all_kernels[0])

static const struct tg__gemm_kernel *
best_kernel(void)
{
    for (size_t i = 0; i < N_KERNELS; i++)
        if (kernel_supported(all_kernels[i]))
            return all_kernels[i];
    return &tg__gemm_kernel_generic;
}

/* NULL for a name that is not a path at all; otherwise the path, supported or not. */
static const struct tg__gemm_kernel *
kernel_by_name(const char *name)
{
    static const char *const known[] = {"generic", "avx2", "avx512", "blas"};
    for (size_t i = 0; i < N_KERNELS; i++)
        if (strcmp(all_kernels[i]->name, name) == 0)
            return all_kernels[i];
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcmp(known[i], name) == 0)
            return &tg__gemm_kernel_generic; /* a path this build lacks: caller rejects */
    return NULL;
}

static _Atomic(const struct tg__gemm_kernel *) active_kernel; /* NULL until resolved */

/* TG_KERNEL names a path; one the CPU or build lacks (or an unknown name) falls back to the
 * best supported, and tg_kernel_name() reports what actually runs. */
static const struct tg__gemm_kernel *
resolve_kernel(void)
{
    const char *env = getenv("TG_KERNEL");
    if (env && *env && strcmp(env, "auto") != 0) {
        const struct tg__gemm_kernel *k = kernel_by_name(env);
        if (k && strcmp(k->name, env) == 0 && kernel_supported(k))
            return k;
    }
    return best_kernel();
}

const struct tg__gemm_kernel *
tg__gemm_active_kernel(void)
{
    const struct tg__gemm_kernel *k = atomic_load_explicit(&active_kernel, memory_order_acquire);
    if (!k) {
        /* Racing first calls resolve the same path; whichever store lands is that path. */
        const struct tg__gemm_kernel *expected = NULL;
        k = resolve_kernel();
        if (!atomic_compare_exchange_strong(&active_kernel, &expected, k))
            k = expected;
    }
    return k;
}

const char *
tg_kernel_name(void)
{
    return tg__gemm_active_kernel()->name;
}

tg_status
tg_set_kernel(const char *name)
{
    if (!name)
        return TG_ERR_ARG;
    if (strcmp(name, "auto") == 0) {
        atomic_store_explicit(&active_kernel, resolve_kernel(), memory_order_release);
        return TG_OK;
    }
    const struct tg__gemm_kernel *k = kernel_by_name(name);
    if (!k)
        return TG_ERR_ARG;
    if (strcmp(k->name, name) != 0 || !kernel_supported(k))
        return TG_ERR_UNSUPPORTED;
    atomic_store_explicit(&active_kernel, k, memory_order_release);
    return TG_OK;
}

/* ---- parallel loops ---- */

size_t
tg__parallel_chunks(size_t n, size_t grain)
{
    if (n == 0 || grain == 0 || grain >= n)
        return 1;
    return n / grain + (n % grain != 0);
}

void
tg__parallel_for(size_t n, size_t grain, void (*fn)(size_t begin, size_t end, void *ctx),
                 void *ctx)
{
    if (n == 0)
        return;
    if (grain == 0 || grain >= n) {
        fn(0, n, ctx);
        return;
    }
    size_t chunks = tg__parallel_chunks(n, grain);
    int threads = tg__num_threads();
    if ((size_t)threads > chunks)
        threads = (int)chunks;
#if TG_HAS_OPENMP
    if (threads > 1) {
        /* Static schedule: chunk c goes to thread c·T/chunks; which thread runs a chunk does
         * not change what the chunk computes. */
        long long nchunks = (long long)chunks;
#pragma omp parallel for schedule(static) num_threads(threads)
        for (long long c = 0; c < nchunks; c++) {
            size_t begin = (size_t)c * grain;
            size_t end = n - begin < grain ? n : begin + grain;
            fn(begin, end, ctx);
        }
        return;
    }
#endif
    for (size_t begin = 0; begin < n; begin += grain)
        fn(begin, n - begin < grain ? n : begin + grain, ctx);
}
