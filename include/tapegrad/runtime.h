/**
 * @file
 * Run-time settings: threads and the matrix-multiply kernel in use.
 *
 * Threads: the default is TG_NUM_THREADS from the environment, else OMP_NUM_THREADS, else the
 * number of CPUs this process may run on. Kernels run on tapegrad's own thread pool, started
 * on the first threaded call. Results are bit-identical whatever the thread count (fixed
 * partitioning and reduction order).
 *
 * Training steps: tg_optim_step (and so tg_sgd_step) times whole steps, the time from one call
 * to the next, and runs them on one thread where that is faster than on the thread count
 * (a small network on a machine whose cores pass data slowly): every 1024 steps, and at most
 * every 2 s, it tries 4 steps on one thread and 4 on all, twice, and keeps the faster. Only the calling thread, and
 * only between its steps, is held to one thread; tg_optim_free lifts that. Results do not
 * change. TG_STEP_TRIAL=0 in the environment turns the trial off (every step on the count).
 *
 * Kernels: the best path the CPU supports is chosen at first use (avx512, avx2, generic);
 * TG_KERNEL=generic|avx2|avx512|blas in the environment forces one (an unsupported choice falls
 * back to the best supported and tg_kernel_name() says so).
 */
#ifndef TAPEGRAD_RUNTIME_H
#define TAPEGRAD_RUNTIME_H

#include <tapegrad/tapegrad.h>

#ifdef __cplusplus
extern "C" {
#endif

/** The most threads tapegrad runs on (its pool's size, the calling thread included). */
#define TG_MAX_THREADS 256

/** Set the thread count: n in 1 … TG_MAX_THREADS, or 0 for the default. Returns TG_ERR_ARG, and
 * keeps the previous setting, for n < 0 or n > TG_MAX_THREADS. Process-wide. */
TG_API tg_status tg_set_num_threads(int n);
/** The count in use: the setting, else the default (environment or CPUs) capped at
 * TG_MAX_THREADS. */
TG_API int tg_num_threads(void);
/** The matrix-multiply path in use: "avx512", "avx2", "generic" or "blas". */
TG_API const char *tg_kernel_name(void);
/** Force a path by name (as TG_KERNEL does); TG_ERR_UNSUPPORTED if this CPU/build lacks it. */
TG_API tg_status tg_set_kernel(const char *name);

#ifdef __cplusplus
}
#endif

#endif /* TAPEGRAD_RUNTIME_H */
