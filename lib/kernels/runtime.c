/*
 * Run-time settings (include/tapegrad/runtime.h): the thread count and the matrix-multiply
 * path, plus tg__parallel_for. Settings are process-wide atomics: any thread may read them
 * while another sets them, and a gemm uses the values it read when it started.
 */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT (glibc); guarded below */
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <tapegrad/runtime.h>

#include "gemm_impl.h"
#include "kernels.h"

/* ---- threads ---- */

static atomic_int requested_threads; /* tg_set_num_threads; 0 = default */

#if TG_HAS_THREADS
static atomic_int default_threads = -1; /* resolved on first use; -1 = not yet */

/* The CPUs this process may run on (its affinity mask: taskset, cgroup cpusets), else the
 * online CPU count. */
static int
usable_cpus(void)
{
#if defined(__linux__) && defined(__GLIBC__)
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
#endif
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 && n <= 4096 ? (int)n : 1;
}

/* A positive integer from the environment (at most 4096), else 0. */
static int
env_threads(const char *name)
{
    const char *env = getenv(name);
    if (!env || !*env)
        return 0;
    char *end;
    long v = strtol(env, &end, 10);
    return *end == '\0' && v > 0 && v <= 4096 ? (int)v : 0;
}

/* TG_NUM_THREADS when it is a positive integer, else OMP_NUM_THREADS (the variable programs
 * that mix libraries already set; a plain number only), else the usable CPUs. Racing first
 * calls compute the same value, so no lock is needed. */
static int
resolve_default_threads(void)
{
    int cached = atomic_load_explicit(&default_threads, memory_order_relaxed);
    if (cached > 0)
        return cached;
    int threads = env_threads("TG_NUM_THREADS");
    if (threads == 0)
        threads = env_threads("OMP_NUM_THREADS");
    if (threads == 0)
        threads = usable_cpus();
    if (threads > TG_MAX_THREADS)
        threads = TG_MAX_THREADS;
    atomic_store_explicit(&default_threads, threads, memory_order_relaxed);
    return threads;
}
#endif

/* The pool runs at most TG_POOL_MAX_THREADS threads (the caller and its workers). */
_Static_assert(TG_MAX_THREADS == TG_POOL_MAX_THREADS, "runtime.h documents the pool's limit");

tg_status
tg_set_num_threads(int n)
{
    if (n < 0 || n > TG_MAX_THREADS)
        return TG_ERR_ARG; /* the setting is left as it was */
    atomic_store_explicit(&requested_threads, n, memory_order_relaxed);
    return TG_OK;
}

int
tg_num_threads(void)
{
#if TG_HAS_THREADS
    int n = atomic_load_explicit(&requested_threads, memory_order_relaxed);
    return n > 0 ? n : resolve_default_threads();
#else
    return 1; /* built with -Dthreads=disabled: everything runs on the calling thread */
#endif
}

/* tg__step_trial's cap: true while the calling thread's steps run on one thread. */
static _Thread_local bool capped_to_one;

int
tg__num_threads(void)
{
    return capped_to_one ? 1 : tg_num_threads();
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

struct parallel_for {
    size_t n, grain;
    void (*fn)(size_t begin, size_t end, void *ctx);
    void *ctx;
};

static void
parallel_for_chunk(size_t chunk, void *ctx)
{
    const struct parallel_for *pf = ctx;
    size_t begin = chunk * pf->grain;
    size_t end = pf->n - begin < pf->grain ? pf->n : begin + pf->grain;
    pf->fn(begin, end, pf->ctx);
}

/* More than one chunk (tg__parallel_for, kernels.h, takes the rest inline). */
void
tg__parallel_for_chunks(size_t n, size_t grain, void (*fn)(size_t begin, size_t end, void *ctx),
                        void *ctx)
{
    size_t chunks = tg__parallel_chunks(n, grain);
    int threads = tg__num_threads();
    if ((size_t)threads > chunks)
        threads = (int)chunks;
    /* Chunks are claimed by whichever thread is free (pool.c); which thread runs a chunk does
     * not change what the chunk computes. */
    struct parallel_for pf = {n, grain, fn, ctx};
    tg__pool_run(threads, chunks, parallel_for_chunk, &pf);
}

/* ---- one thread or all, by trial (kernels.h) ---- */

uint64_t
tg__now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

bool tg__step_trial_off;
static atomic_int step_trial_env = -1; /* TG_STEP_TRIAL=0 in the environment: 0; else 1 */

static bool
step_trial_on(void)
{
    if (tg__step_trial_off)
        return false;
    int e = atomic_load_explicit(&step_trial_env, memory_order_relaxed);
    if (e < 0) {
        const char *v = getenv("TG_STEP_TRIAL");
        e = !(v && strcmp(v, "0") == 0);
        atomic_store_explicit(&step_trial_env, e, memory_order_relaxed);
    }
    return e != 0;
}

void
tg__step_trial_tick(struct tg__step_trial *tr, uint64_t now_ns)
{
    const uint64_t probes = (uint64_t)TG_TRIAL_BLOCK * TG_TRIAL_BLOCKS;
    if (tr->in_round > 0) { /* the step that just ended */
        uint64_t ended = tr->in_round - 1;
        if (ended < probes && now_ns - tr->last_ns < tr->fastest_ns[ended / TG_TRIAL_BLOCK % 2])
            tr->fastest_ns[ended / TG_TRIAL_BLOCK % 2] = now_ns - tr->last_ns;
        if (ended == probes - 1)
            tr->one = tr->fastest_ns[0] < tr->fastest_ns[1];
    }
    if (tr->in_round >= TG_TRIAL_PERIOD && now_ns - tr->round_ns >= TG_TRIAL_ROUND_NS)
        tr->in_round = 0;
    if (tr->in_round == 0) {
        tr->fastest_ns[0] = tr->fastest_ns[1] = UINT64_MAX;
        tr->round_ns = now_ns;
    }
    bool one = tr->in_round < probes ? tr->in_round / TG_TRIAL_BLOCK % 2 == 0 : tr->one;
    capped_to_one = one && step_trial_on() && tg_num_threads() > 1;
    tr->last_ns = now_ns;
    tr->in_round++;
}

void
tg__thread_cap_clear(void)
{
    capped_to_one = false;
}
