/**
 * @file
 * Data-parallel training over MPI (libtapegrad-mpi; built when meson finds MPI, which
 * <tapegrad/features.h> reports as TG_HAS_MPI 1).
 *
 * Every rank holds the whole model and runs forward/backward on its own slice of each global
 * batch; after backward the ranks average their gradients, so every rank applies the same
 * update and the parameters stay identical. A step:
 *
 *     tg_mpi *m = tg_mpi_new(MPI_COMM_WORLD, NULL);       // after MPI_Init, on every rank
 *     tg_mpi_broadcast_params(m, params);                 // every rank starts from rank 0's
 *     for (...) {
 *         tg_tape_reset(tape);
 *         ... forward on this rank's examples, tg_backward(tape, loss) ...
 *         if (tg_mpi_average_grads(m, params, tape))      // ONE allreduce of the gradients
 *             { fprintf(stderr, "%s\n", tg_mpi_error(m)); break; }   // same on every rank
 *         tg_sgd_step(opt);
 *     }
 *     tg_mpi_free(m);                                     // before MPI_Finalize
 *
 * The caller owns MPI: call MPI_Init (or MPI_Init_thread) before tg_mpi_new and MPI_Finalize
 * after tg_mpi_free. The library never calls MPI_Init, MPI_Finalize, MPI_Abort or exit, and
 * calls MPI only from the thread that calls it (MPI_THREAD_SINGLE/FUNNELED suffice).
 *
 * Collective calls. Every function that takes a tg_mpi, except the accessors, is collective:
 * every rank of the communicator must call it, in the same order. Each one first agrees on
 * an error flag with one small allreduce (5 integers), in which every rank also reports
 * the parameter count and dtype it is about to communicate. If any rank brings an error
 * (its tape failed, a bad argument, a different model), no rank starts the data transfer;
 * every rank returns the same status and tg_mpi_error() reads, on every rank,
 *
 *     average_grads: rank 1 of 2: matmul "fc1/W"·<x>: inner dimensions differ: (512x784) · ...
 *
 * so all ranks stop together with the failing rank's message instead of hanging in a
 * collective that one rank never reaches. What this cannot catch: a rank that crashes or never
 * calls at all (MPI's own job control ends those), and a NULL tg_mpi (nothing to talk over).
 *
 * The communicator is duplicated with MPI_ERRORS_RETURN, so a failing MPI call returns here
 * (TG_ERR_IO, with MPI's error string) instead of aborting the job, and our traffic never
 * mixes with the application's.
 *
 * Status: tg_mpi_status()/tg_mpi_error() describe the last collective call (TG_OK / NULL after
 * one that succeeded), like tg_dataset; a failed call leaves the handle usable.
 *
 * Memory: libtapegrad-mpi is built on libtapegrad's public API only. Its one allocation, the
 * handle in tg_mpi_new, uses calloc/free (the allocator hook is internal to libtapegrad);
 * no other call allocates, so a warm training step allocates nothing.
 */
#ifndef TAPEGRAD_MPI_H
#define TAPEGRAD_MPI_H

#include <mpi.h>

#include <tapegrad/checkpoint.h>
#include <tapegrad/tapegrad.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tg_mpi tg_mpi; /**< a duplicated communicator + status + statistics */

/** Options of tg_mpi_new (zero, or NULL: the defaults). */
typedef struct tg_mpi_options {
    /** Gradient allreduce granularity. 0 (the default): one allreduce over the whole
     * contiguous gradient buffer. > 0: consecutive buckets of at most this many bytes (at
     * least one element each), all in flight at once (MPI_Iallreduce + MPI_Waitall). Buckets
     * bound the message size; they do not change the result (each element is still the sum
     * of the same per-rank values). Either way, calls are split at INT_MAX elements. */
    size_t bucket_bytes;
} tg_mpi_options;

/** A handle over a duplicate of comm. Collective over comm. Duplicates comm (MPI_Comm_dup), so
 * comm may be freed afterwards. opt may be NULL. NULL only when out of memory; otherwise check
 * tg_mpi_status() (TG_ERR_ARG when MPI is not initialized, TG_ERR_IO when an MPI call fails). */
TG_API tg_mpi *tg_mpi_new(MPI_Comm comm, const tg_mpi_options *opt);
/** Free the handle. Collective (frees the duplicated communicator). NULL is a no-op; after
 * MPI_Finalize the communicator is not touched. */
TG_API void tg_mpi_free(tg_mpi *m);
/** The status of the last collective call (TG_OK after one that succeeded). */
TG_API tg_status tg_mpi_status(const tg_mpi *m);
/** The message of the last collective call; NULL when it succeeded. */
TG_API const char *tg_mpi_error(const tg_mpi *m);
TG_API int tg_mpi_rank(const tg_mpi *m);          /**< This rank; -1 for NULL */
TG_API int tg_mpi_size(const tg_mpi *m);          /**< The number of ranks; 0 for NULL */

/** Agree on an error: every rank passes its own status (TG_OK when all is well) and message
 * (may be NULL). Returns TG_OK on every rank when every rank passed TG_OK; otherwise every
 * rank returns the status of the lowest failing rank and carries its message. Use it around
 * anything that can fail on one rank only (reading a file, a custom check). */
TG_API tg_status tg_mpi_check(tg_mpi *m, tg_status local, const char *local_msg);

/** Copy rank 0's parameter values to every rank (MPI_Bcast of the contiguous value buffer).
 * Every rank must hold the same parameters (count, dtype); otherwise TG_ERR_SHAPE /
 * TG_ERR_DTYPE on every rank and no values move. */
TG_API tg_status tg_mpi_broadcast_params(tg_mpi *m, tg_params *p);

/** After backward on every rank: replace each rank's gradients with the mean over ranks,
 *
 *     g ← (1/P) Σ_r g_r        (P ranks; one in-place MPI_Allreduce of the gradient buffer)
 *
 * which is the gradient of the global-batch loss when each rank's loss is the mean over an
 * equal share of the global batch. tape (may be NULL) is the tape backward ran on: if its
 * status is not TG_OK on any rank, every rank returns that error and no gradient changes. */
TG_API tg_status tg_mpi_average_grads(tg_mpi *m, tg_params *p, const tg_tape *tape);
/** Same without the 1/P: g ← Σ_r g_r. For unequal shares (a short last batch), let each rank
 * scale its loss by local_examples / global_examples (tg_scale) and sum. */
TG_API tg_status tg_mpi_sum_grads(tg_mpi *m, tg_params *p, const tg_tape *tape);

/** TG_OK when every rank's parameter values are bitwise equal (compared through a 64-bit
 * FNV-1a checksum of the value buffer, one allreduce); TG_ERR_CHECK otherwise. A cheap
 * guard to run every few hundred steps. */
TG_API tg_status tg_mpi_verify_params(tg_mpi *m, tg_params *p);

/** This rank's share of n items, for sharding a data set or a global batch: the contiguous
 * range [*begin, *end) of rank `rank` among `size`. Shares differ by at most one item (the
 * first n % size ranks get one more) and tile [0, n) in rank order. TG_ERR_ARG (and an empty
 * range) when size < 1, rank is outside [0, size) or an output pointer is NULL. Not
 * collective; needs no tg_mpi. */
TG_API tg_status tg_mpi_shard_range(size_t n, int rank, int size, size_t *begin, size_t *end);

/** @name Checkpoints
 * Checkpoints (<tapegrad/checkpoint.h>, safetensors). Saving: rank 0 alone writes the file;
 * every rank returns rank 0's outcome (and message). Loading parameters: rank 0 reads the
 * file and broadcasts the values, so the path needs to exist on rank 0 only; a failed load
 * changes nothing on any rank. Loading a state dict (which may hold optimizer state): every
 * rank reads path itself (a shared file system, or a copy per machine); if any rank fails,
 * every rank returns the error, and ranks that succeeded have loaded the file.
 * @{ */
/** Save p to path: rank 0 alone writes the file; every rank returns rank 0's outcome. */
TG_API tg_status tg_mpi_save_params(tg_mpi *m, tg_params *p, const char *path);
/** Load path into p: rank 0 reads the file and broadcasts the values; a failed load changes
 * nothing on any rank. */
TG_API tg_status tg_mpi_load_params(tg_mpi *m, tg_params *p, const char *path);
/** Save sd to path: rank 0 alone writes the file; every rank returns rank 0's outcome. */
TG_API tg_status tg_mpi_save_state_dict(tg_mpi *m, tg_state_dict *sd, const char *path);
/** Load path into sd on every rank (each reads path itself); if any rank fails, every rank
 * returns the error. flags as tg_state_dict_load. */
TG_API tg_status tg_mpi_load_state_dict(tg_mpi *m, tg_state_dict *sd, const char *path,
                                        unsigned flags);
/** @} */

/** Time and traffic since tg_mpi_new or the last reset, on this rank. Times are wall-clock
 * (MPI_Wtime) around the MPI calls, so they include waiting for slower ranks. */
typedef struct tg_mpi_stats {
    uint64_t reductions;     /**< tg_mpi_average_grads / tg_mpi_sum_grads calls that reduced */
    uint64_t messages;       /**< gradient allreduce calls (buckets) */
    double bytes;            /**< gradient bytes this rank contributed */
    double reduce_seconds;   /**< in gradient allreduces (and the 1/P scaling) */
    double check_seconds;    /**< in the error agreements of every collective call */
    double other_seconds;    /**< broadcasts, checkpoint agreement, verification */
} tg_mpi_stats;
/** Copy this rank's statistics to *out (TG_ERR_ARG for NULL). Not collective. */
TG_API tg_status tg_mpi_get_stats(const tg_mpi *m, tg_mpi_stats *out);
/** Zero this rank's statistics. Not collective. */
TG_API void tg_mpi_reset_stats(tg_mpi *m);

#ifdef __cplusplus
}
#endif

#endif /* TAPEGRAD_MPI_H */
