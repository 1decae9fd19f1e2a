/*
 * The thread pool behind tg__parallel_for and the threaded gemm: tg__pool_run(threads, parts,
 * fn, ctx) calls fn(part, ctx) once for every part in [0, parts), on the calling thread and up
 * to threads - 1 pool workers, and returns when every part is done.
 *
 * Parts are claimed, not assigned: each thread, the caller included, takes the next unclaimed
 * part from an atomic counter until none is left, and the caller then waits only for parts a
 * worker has claimed and not finished. A worker that is slow to wake therefore costs at most
 * the parallelism, never a wait: the caller runs the parts itself, and the late worker finds
 * nothing left. Each thread claims from its home range first (thread t of T: parts
 * [t·P/T, (t+1)·P/T), the caller being thread 0), then from the others': so when every thread
 * is on time, part p of a recurring job (a product's band of a weight, a chunk of the update
 * pass) runs on the same thread step after step, and its data stays in that thread's cache
 * instead of crossing between cores. On the 2-vCPU VM in its slow mode (a cache line's round
 * trip between the vCPUs 420-490 ns, not 57-110), tg-bench at 2 threads, 3 alternating rounds:
 * B-seed f32 616 -> 567 µs, f64 1190 -> 1084, B-mnist 1384 -> 1304, 2543 -> 2468; at 110 ns
 * 0.99-1.05x. What a part computes never depends on which thread runs it, so results stay
 * bit-identical for any thread count (the callers' partitionings are fixed; kernels.h).
 *
 * Why not OpenMP (which these kernels used before): at the end of a parallel region libgomp's
 * threads busy-wait with `pause` for milliseconds, and the region cannot end before every
 * team thread has run its share. On the 2-vCPU Zen 5 VM these kernels are tuned on, a team
 * woken after ~100 ms idle often had its worker placed on the caller's CPU (4 of 6 rounds in
 * one test); the caller then spun at the barrier until the scheduler tick (4 ms) let the
 * worker run, and the pair went on trading the CPU tick by tick. A 2-thread 128x512x784 f64
 * product that takes 450 µs back to back had a 90th percentile of 4.5-7.0 ms over calls made
 * after 100 ms idle (5 runs of 320 calls), and took 4.8-5.9 ms per call right after OpenBLAS
 * had run (OpenBLAS's idle threads spin for ~0.1 s). With this pool the same calls measured a
 * p90 of 0.62-0.68 ms and a median of 0.47 ms: every wait here (a worker waiting for work,
 * the caller waiting for claimed parts) yields the CPU between short spins, so two threads
 * that share a CPU take turns at once, and a worker that finds itself on the caller's CPU
 * moves to another CPU the process may use.
 *
 * Workers start on the first threaded call and live until tg__pool_shutdown (or the process
 * ends). Between jobs a worker spins ~POOL_SPIN_NS, checking for new work and yielding, then
 * sleeps on a condition variable; a new job wakes sleepers. One job runs at a time: a call
 * that finds the pool busy (another user thread's gemm, or a call from inside a part) runs its
 * parts on its own thread, which gives the same results.
 *
 * Lifetime of a job: it lives on the caller's stack, published through pool.job. A worker
 * announces itself in pool.visitors before it reads pool.job and leaves when it is done with
 * the job; the caller clears pool.job and then waits until no visitor is left, so no worker
 * can touch the job after tg__pool_run returns (sequentially consistent atomics: a visitor
 * either is counted by the caller's check or reads pool.job after it was cleared).
 */
#define _GNU_SOURCE /* sched_getcpu, pthread_setaffinity_np (glibc); guarded below */
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define POOL_PAUSE() _mm_pause()
#else
#define POOL_PAUSE() ((void)0)
#endif

#include "kernels.h"

/* Most workers a pool starts (tg_num_threads() may ask for up to 4096). */
#define POOL_MAX_WORKERS (TG_POOL_MAX_THREADS - 1)
/* How long an idle worker keeps looking for work before it sleeps. A training step's
 * parallel loops come microseconds apart, and a sleeping worker takes ~20 µs to wake
 * (measured on the 2-vCPU VM), so workers stay awake across a step and through short pauses
 * between steps; libgomp's default spin is of the same order. */
#define POOL_SPIN_NS 2000000
/* Spins (a `pause` and a load each) between yields while waiting. */
#define POOL_SPINS_PER_YIELD 32

struct pool_job {
    void (*fn)(size_t part, void *ctx);
    void *ctx;
    size_t parts;
    int helpers;        /* workers 0 .. helpers-1 may join (threads - 1) */
    int threads;        /* helpers + 1: thread 0 is the caller, worker w is thread w + 1 */
    atomic_size_t done; /* parts finished */
};

/* Per home range of the job in flight (one at a time: pool.busy), the next unclaimed part;
 * a line each, so the threads claiming their own ranges do not trade one line. */
static struct {
    _Alignas(64) atomic_size_t next;
} home_next[TG_POOL_MAX_THREADS];

/* Thread t's home range of parts: [home_begin(t), home_begin(t + 1)). */
static size_t
home_begin(const struct pool_job *job, int t)
{
    return job->parts * (size_t)t / (size_t)job->threads;
}

static struct {
    atomic_flag busy;                /* set while a caller runs a job (or shuts the pool) */
    _Atomic(struct pool_job *) job;  /* the job in flight, or NULL */
    atomic_uint generation;          /* bumped once per job: what idle workers watch */
    atomic_int visitors;             /* workers that may hold a pointer to the job */
    atomic_int sleepers;             /* workers asleep (or going to sleep) on `wake` */
    atomic_int caller_cpu;           /* the CPU of the latest job's caller (-1 unknown) */
    atomic_int helpers;              /* the latest job's helpers: other workers stay out */
    atomic_bool stopping;            /* tg__pool_shutdown: workers exit */
    pthread_mutex_t lock;            /* guards the sleep on `wake` */
    pthread_cond_t wake;
    int workers;                     /* started; only the holder of `busy` changes it */
    pthread_t thread[POOL_MAX_WORKERS];
} pool = {
    .busy = ATOMIC_FLAG_INIT,
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .wake = PTHREAD_COND_INITIALIZER,
};

static int
current_cpu(void)
{
#if defined(__linux__) && defined(__GLIBC__)
    return sched_getcpu();
#else
    return -1;
#endif
}

/* A worker that runs on the caller's CPU takes that CPU out of its affinity mask: the
 * scheduler sometimes wakes it there with another CPU idle and leaves it for several ticks
 * (see the top of the file). The new mask is the worker's first one (inherited from the
 * thread that started the pool) less the caller's CPU; only the worker's own mask changes.
 * If the caller later runs where the worker is, the next job moves the worker again. */
#if defined(__linux__) && defined(__GLIBC__)
#define POOL_AFFINITY 1
typedef cpu_set_t pool_cpus;
#else
#define POOL_AFFINITY 0
typedef char pool_cpus;
#endif

static bool
home_cpus(pool_cpus *home)
{
#if POOL_AFFINITY
    return sched_getaffinity(0, sizeof *home, home) == 0;
#else
    (void)home;
    return false;
#endif
}

static void
move_off_cpu(int caller_cpu, const pool_cpus *home)
{
#if POOL_AFFINITY
    if (caller_cpu < 0 || caller_cpu >= CPU_SETSIZE || current_cpu() != caller_cpu)
        return;
    cpu_set_t others = *home;
    CPU_CLR(caller_cpu, &others);
    if (CPU_COUNT(&others) > 0)
        pthread_setaffinity_np(pthread_self(), sizeof others, &others);
#else
    (void)caller_cpu;
    (void)home;
#endif
}

static _Thread_local bool in_job;

bool
tg__pool_in_job(void)
{
    return in_job;
}

/* Claims and runs parts until none is left: thread `self`'s home range first, then whatever
 * is left of the others'. */
static void
run_parts(struct pool_job *job, int self)
{
    in_job = true;
    for (int k = 0; k < job->threads; k++) {
        int r = (self + k) % job->threads;
        size_t end = home_begin(job, r + 1);
        for (;;) {
            size_t part = atomic_fetch_add_explicit(&home_next[r].next, 1, memory_order_relaxed);
            if (part >= end)
                break;
            job->fn(part, job->ctx);
            atomic_fetch_add_explicit(&job->done, 1, memory_order_release);
        }
    }
    in_job = false;
}

static void
relax(unsigned *spins)
{
    POOL_PAUSE();
    if (++*spins % POOL_SPINS_PER_YIELD == 0)
        sched_yield();
}

/* Waits until the generation differs from `seen` (or the pool stops): spins, then sleeps. */
static unsigned
wait_for_job(unsigned seen)
{
    uint64_t start = tg__now_ns();
    unsigned spins = 0;
    for (;;) {
        unsigned g = atomic_load(&pool.generation);
        if (g != seen || atomic_load(&pool.stopping))
            return g;
        relax(&spins);
        if (spins % 256 == 0 && tg__now_ns() - start > POOL_SPIN_NS)
            break;
    }
    pthread_mutex_lock(&pool.lock);
    atomic_fetch_add(&pool.sleepers, 1);
    unsigned g;
    while ((g = atomic_load(&pool.generation)) == seen && !atomic_load(&pool.stopping))
        pthread_cond_wait(&pool.wake, &pool.lock);
    atomic_fetch_sub(&pool.sleepers, 1);
    pthread_mutex_unlock(&pool.lock);
    return g;
}

static void *
worker_main(void *arg)
{
    int worker = (int)(intptr_t)arg;
    pool_cpus home;
    bool movable = home_cpus(&home);
    unsigned seen = 0; /* generation 0 is never a job: the first job bumps it to 1 */
    for (;;) {
        seen = wait_for_job(seen);
        if (atomic_load(&pool.stopping))
            return NULL;
        /* Before looking at the job: a worker stuck behind the caller on one CPU only runs
         * once the caller has claimed every part, and would never see a job to move for. */
        if (movable)
            move_off_cpu(atomic_load_explicit(&pool.caller_cpu, memory_order_relaxed), &home);
        /* A worker the job does not use does not visit it, so the caller never waits for it
         * to leave (a stale value only makes a worker skip a job or visit it for nothing). */
        if (worker >= atomic_load_explicit(&pool.helpers, memory_order_relaxed))
            continue;
        atomic_fetch_add(&pool.visitors, 1);
        struct pool_job *job = atomic_load(&pool.job);
        if (job && worker < job->helpers)
            run_parts(job, worker + 1);
        atomic_fetch_sub_explicit(&pool.visitors, 1, memory_order_release);
    }
}

/* fork(): the child has none of the workers, so it forgets them and starts its own on its
 * first threaded call. The lock is held across the fork, so the child never inherits it
 * locked by a worker that was going to sleep. A fork while another thread of the parent runs
 * a job leaves `busy` set in the child, whose threaded calls then all run serially. */
static void
fork_prepare(void)
{
    pthread_mutex_lock(&pool.lock);
}

static void
fork_parent(void)
{
    pthread_mutex_unlock(&pool.lock);
}

static void
fork_child(void)
{
    pthread_mutex_init(&pool.lock, NULL);
    pthread_cond_init(&pool.wake, NULL);
    pool.workers = 0;
    atomic_store(&pool.sleepers, 0);
    atomic_store(&pool.visitors, 0);
}

static void stop_workers(void);

/* When the process ends (or a shared libtapegrad is unloaded) the workers are joined, so
 * nothing of theirs is left behind (valgrind reported each worker's thread-local block as
 * possibly lost). Only if no job is in flight: another thread may be inside a gemm while the
 * program ends, and ending must not wait for it. */
static void
pool_at_exit(void)
{
    if (!atomic_flag_test_and_set(&pool.busy)) {
        stop_workers();
        atomic_flag_clear(&pool.busy);
    }
}

static pthread_once_t hooks_once = PTHREAD_ONCE_INIT;

static void
register_process_hooks(void)
{
    pthread_atfork(fork_prepare, fork_parent, fork_child);
    atexit(pool_at_exit);
}

/* Starts workers up to `want` (called with pool.busy held). Workers start with every signal
 * blocked, so signals keep going to the application's threads. A failed start leaves fewer
 * workers: the caller runs the parts nobody claims. */
static void
start_workers(int want)
{
    if (want > POOL_MAX_WORKERS)
        want = POOL_MAX_WORKERS;
    if (pool.workers >= want)
        return;
    pthread_once(&hooks_once, register_process_hooks);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    while (pool.workers < want) {
        if (pthread_create(&pool.thread[pool.workers], NULL, worker_main,
                           (void *)(intptr_t)pool.workers) != 0)
            break;
        pool.workers++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* The fallback: every part in order on this thread. A nested call from inside a part of a
 * pool job lands here too, and its parts are not that job's parts (tg__pool_in_job). */
static void
run_serial(size_t parts, void (*fn)(size_t part, void *ctx), void *ctx)
{
    bool outer = in_job;
    in_job = false;
    for (size_t part = 0; part < parts; part++)
        fn(part, ctx);
    in_job = outer;
}

void
tg__pool_run(int threads, size_t parts, void (*fn)(size_t part, void *ctx), void *ctx)
{
    if (threads <= 1 || parts <= 1 || atomic_flag_test_and_set(&pool.busy)) {
        run_serial(parts, fn, ctx);
        return;
    }
    start_workers(threads - 1);
    int helpers = threads - 1 < pool.workers ? threads - 1 : pool.workers;
    if (helpers == 0) {
        atomic_flag_clear(&pool.busy);
        run_serial(parts, fn, ctx);
        return;
    }
    struct pool_job job = {
        .fn = fn,
        .ctx = ctx,
        .parts = parts,
        .helpers = helpers,
        .threads = helpers + 1,
    };
    atomic_store_explicit(&pool.caller_cpu, current_cpu(), memory_order_relaxed);
    atomic_store_explicit(&pool.helpers, helpers, memory_order_relaxed);
    for (int t = 0; t < job.threads; t++)
        atomic_store_explicit(&home_next[t].next, home_begin(&job, t), memory_order_relaxed);
    atomic_init(&job.done, 0);
    atomic_store(&pool.job, &job);
    atomic_fetch_add(&pool.generation, 1);
    /* A worker that counted itself a sleeper before this load re-checks the generation under
     * the lock before it sleeps, or is woken by this broadcast; one that counts itself after
     * this load sees the new generation. */
    if (atomic_load(&pool.sleepers) > 0) {
        pthread_mutex_lock(&pool.lock);
        pthread_cond_broadcast(&pool.wake);
        pthread_mutex_unlock(&pool.lock);
    }

    run_parts(&job, 0);
    unsigned spins = 0;
    while (atomic_load_explicit(&job.done, memory_order_acquire) < parts)
        relax(&spins); /* parts a worker claimed; yielding lets it run if it shares our CPU */
    atomic_store(&pool.job, NULL);
    while (atomic_load(&pool.visitors) > 0)
        relax(&spins);
    atomic_flag_clear(&pool.busy);
}

/* Stops and joins every worker; called with pool.busy held. */
static void
stop_workers(void)
{
    if (pool.workers == 0)
        return;
    pthread_mutex_lock(&pool.lock);
    atomic_store(&pool.stopping, true);
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.lock);
    for (int w = 0; w < pool.workers; w++)
        pthread_join(pool.thread[w], NULL);
    pool.workers = 0;
    atomic_store(&pool.stopping, false);
}

void
tg__pool_shutdown(void)
{
    unsigned spins = 0;
    while (atomic_flag_test_and_set(&pool.busy))
        relax(&spins);
    stop_workers();
    atomic_flag_clear(&pool.busy);
}
