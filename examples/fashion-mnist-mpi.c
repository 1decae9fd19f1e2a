/*
 * Fashion-MNIST, data-parallel over MPI: the 784-512-256-10 ReLU classifier (softmax
 * cross-entropy, SGD with momentum) trained by P processes, each on its share of every global
 * batch.
 *
 *   mpirun -np 2 build/examples/fashion-mnist-mpi            # 2 ranks x 1 thread
 *   mpirun -np 1 build/examples/fashion-mnist-mpi            # the single-process reference
 *
 * Every rank loads the data set, draws the same shuffled order (same seed) and takes rows
 * [lo, hi) of each global batch (tg_mpi_shard_range). Its loss is the mean over its rows,
 * scaled by (hi - lo) / batch, so that the sum over ranks (tg_mpi_sum_grads: one allreduce of
 * the contiguous gradient buffer) is exactly the gradient of the global batch's mean loss,
 * whatever the split (a short last batch included). Every rank then applies the same SGD
 * update; the parameters never drift apart (checked every epoch with tg_mpi_verify_params).
 * So P ranks follow the single-process trajectory up to the order of the batch sums, and
 * reach the same accuracy. The test set is evaluated in shards too, counts summed.
 *
 * Reported per epoch (rank 0): mean training loss, test accuracy, training throughput
 * (examples/s over all ranks, evaluation excluded) and the time per step spent in
 * communication (gradient allreduce + error agreement, averaged over ranks; it includes
 * waiting for the slowest rank).
 *
 * Usage: fashion-mnist-mpi [--data DIR] [--epochs N] [--steps N] [--batch GLOBAL] [--lr ETA]
 *                          [--momentum MU] [--seed S] [--threads T] [--bucket-kb K]
 *                          [--save PATH] [--comm-bench N] [--quiet]
 *   --steps N     stop after N steps (a quick benchmark; evaluation still runs)
 *   --threads T   threads per rank (default 1: one core per rank)
 *   --bucket-kb K allreduce in buckets of K KiB (default 0: one allreduce per step)
 *   --save PATH   rank 0 writes the trained parameters (safetensors)
 *   --comm-bench N  before training, time N gradient allreduces alone (a barrier before each,
 *                 so waiting for a slower rank is excluded): the pure cost of communication
 * Exits 77 (skip) when the data set is not installed (Debian: dataset-fashion-mnist).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tapegrad/data.h>
#include <tapegrad/mpi.h>
#include <tapegrad/runtime.h>
#include <tapegrad/tapegrad.h>

#define DEFAULT_DATA "/usr/share/datasets/fashion-mnist"

struct options {
    const char *data, *save;
    int epochs, threads;
    long steps, comm_bench;
    size_t batch, bucket_kb;
    double lr, momentum;
    uint64_t seed;
    bool quiet;
};

struct model {
    tg_params *p;
    tg_dense fc1, fc2, fc3;
};

static int
parse(int argc, char **argv, struct options *o)
{
    *o = (struct options){.data = DEFAULT_DATA, .epochs = 5, .threads = 1, .steps = -1,
                          .batch = 128, .lr = 0.02, .momentum = 0.9, .seed = 1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--quiet") == 0) {
            o->quiet = true;
            continue;
        }
        if (!v)
            return -1;
        i++;
        if (strcmp(a, "--data") == 0)
            o->data = v;
        else if (strcmp(a, "--save") == 0)
            o->save = v;
        else if (strcmp(a, "--epochs") == 0)
            o->epochs = atoi(v);
        else if (strcmp(a, "--steps") == 0)
            o->steps = atol(v);
        else if (strcmp(a, "--comm-bench") == 0)
            o->comm_bench = atol(v);
        else if (strcmp(a, "--threads") == 0)
            o->threads = atoi(v);
        else if (strcmp(a, "--batch") == 0)
            o->batch = (size_t)atol(v);
        else if (strcmp(a, "--bucket-kb") == 0)
            o->bucket_kb = (size_t)atol(v);
        else if (strcmp(a, "--lr") == 0)
            o->lr = atof(v);
        else if (strcmp(a, "--momentum") == 0)
            o->momentum = atof(v);
        else if (strcmp(a, "--seed") == 0)
            o->seed = (uint64_t)atoll(v);
        else
            return -1;
    }
    return o->epochs >= 1 && o->threads >= 1 && o->batch >= 1 ? 0 : -1;
}

/* Scores (rows x 10) for rows examples of x (rows x 784). */
static tg_tensor *
forward(tg_tape *t, const struct model *md, const float *x, int64_t rows)
{
    int64_t dims[2] = {rows, 784};
    tg_tensor *X = tg_tensor_wrap(t, TG_F32, 2, dims, (void *)(uintptr_t)x, "x");
    return tg_dense_forward(t, &md->fc3, tg_dense_forward(t, &md->fc2,
                                                           tg_dense_forward(t, &md->fc1, X)));
}

/* Time n allreduces of the gradient buffer, each after a barrier; rank 0 prints the median. */
static tg_status
comm_bench(tg_mpi *m, tg_params *p, long n)
{
    double *ms = malloc((size_t)n * sizeof *ms);
    tg_status st = tg_mpi_check(m, ms ? TG_OK : TG_ERR_NOMEM, NULL);
    for (long i = 0; i < n && st == TG_OK; i++) {
        MPI_Barrier(MPI_COMM_WORLD);
        double t0 = MPI_Wtime();
        st = tg_mpi_average_grads(m, p, NULL);
        ms[i] = 1e3 * (MPI_Wtime() - t0);
    }
    if (st == TG_OK && tg_mpi_rank(m) == 0 && tg_mpi_size(m) == 1)
        printf("comm-bench: 1 rank, nothing moves\n");
    else if (st == TG_OK && tg_mpi_rank(m) == 0) {
        for (long i = 1; i < n; i++) /* insertion sort: n is small */
            for (long j = i; j > 0 && ms[j - 1] > ms[j]; j--) {
                double x = ms[j];
                ms[j] = ms[j - 1];
                ms[j - 1] = x;
            }
        double bytes = (double)tg_params_size(p) * (double)tg_dtype_size(tg_params_dtype(p));
        printf("comm-bench: %ld allreduces of %.2f MiB over %d ranks: median %.3f ms "
               "(min %.3f, max %.3f), %.2f GB/s of gradient per rank\n",
               n, bytes / 1048576, tg_mpi_size(m), ms[n / 2], ms[0], ms[n - 1],
               bytes / (ms[n / 2] * 1e-3) / 1e9);
    }
    tg_params_zero_grad(p);
    free(ms);
    return st;
}

/* Correct predictions on this rank's shard of the test set, summed over ranks. */
static long
evaluate(tg_mpi *m, tg_tape *t, const struct model *md, const tg_dataset *test, tg_status *st)
{
    size_t lo, hi;
    tg_mpi_shard_range(tg_dataset_count(test), tg_mpi_rank(m), tg_mpi_size(m), &lo, &hi);
    const float *x = tg_dataset_data(test);
    const int32_t *y = tg_dataset_labels(test);
    long correct = 0;
    *st = TG_OK;
    for (size_t i = lo; i < hi && *st == TG_OK; i += 1000) {
        size_t rows = hi - i < 1000 ? hi - i : 1000;
        tg_tape_reset(t);
        tg_tensor *s = forward(t, md, x + i * 784, (int64_t)rows);
        if ((*st = tg_tape_status(t)) != TG_OK)
            break;
        const float *sc = tg_tensor_data(s);
        for (size_t r = 0; r < rows; r++) {
            int best = 0;
            for (int c = 1; c < 10; c++)
                if (sc[r * 10 + c] > sc[r * 10 + best])
                    best = c;
            correct += best == y[i + r];
        }
    }
    *st = tg_mpi_check(m, *st, tg_tape_error(t));
    MPI_Allreduce(MPI_IN_PLACE, &correct, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
    return correct;
}

static int
run(tg_mpi *m, const struct options *o)
{
    int rank = tg_mpi_rank(m), size = tg_mpi_size(m);
    bool talk = rank == 0 && !o->quiet;
    char path[2][1024];
    tg_dataset *train = tg_dataset_new(), *test = tg_dataset_new();
    tg_idx_options idx = {.dtype = TG_F32, .scale_to_unit = true};
    snprintf(path[0], sizeof path[0], "%s/train-images-idx3-ubyte.gz", o->data);
    snprintf(path[1], sizeof path[1], "%s/train-labels-idx1-ubyte.gz", o->data);
    tg_status st = tg_dataset_load_idx(train, path[0], path[1], &idx);
    const char *msg = tg_dataset_error(train);
    if (st == TG_OK) {
        snprintf(path[0], sizeof path[0], "%s/t10k-images-idx3-ubyte.gz", o->data);
        snprintf(path[1], sizeof path[1], "%s/t10k-labels-idx1-ubyte.gz", o->data);
        st = tg_dataset_load_idx(test, path[0], path[1], &idx);
        msg = tg_dataset_error(test);
    }
    if (st == TG_OK && (tg_dataset_features(train) != 784 || o->batch < (size_t)size)) {
        st = TG_ERR_ARG;
        msg = "expected 28x28 images and a global batch of at least one example per rank";
    }
    /* Any rank that cannot read the data stops every rank, with its message. */
    if (tg_mpi_check(m, st, msg) != TG_OK) {
        bool unreadable = st == TG_ERR_IO || tg_mpi_status(m) == TG_ERR_IO;
        if (rank == 0)
            fprintf(stderr, "fashion-mnist-mpi: %s\n%s", tg_mpi_error(m),
                    unreadable ? "  The Fashion-MNIST data set is not installed? On Debian: "
                                 "apt-get install dataset-fashion-mnist (or "
                                 "tools/install-deps.sh --all), or pass --data DIR.\n"
                               : "");
        tg_dataset_free(train);
        tg_dataset_free(test);
        return unreadable ? 77 : 1;
    }

    struct model md = {.p = tg_params_new(TG_F32)};
    tg_rng *init = tg_rng_new(o->seed), *order = tg_rng_new(o->seed + 1);
    tg_dense_init(&md.fc1, md.p, "fc1", 784, 512, TG_ACT_RELU, TG_EXAMPLES_AS_ROWS, init);
    tg_dense_init(&md.fc2, md.p, "fc2", 512, 256, TG_ACT_RELU, TG_EXAMPLES_AS_ROWS, init);
    tg_dense_init(&md.fc3, md.p, "fc3", 256, 10, TG_ACT_IDENTITY, TG_EXAMPLES_AS_ROWS, init);
    st = tg_params_status(md.p);
    if (st == TG_OK)
        st = tg_mpi_broadcast_params(m, md.p); /* same start everywhere, whatever the seed */
    tg_sgd_options sgd_opt = {.lr = o->lr, .momentum = o->momentum};
    const char *err = NULL;
    tg_sgd *opt = tg_sgd_new(md.p, &sgd_opt, &err);
    tg_batcher *b = tg_batcher_new(train, o->batch, TG_EXAMPLES_AS_ROWS, false, order, &err);
    tg_tape *t = tg_tape_new();
    if (st == TG_OK && (!opt || !b || !t))
        st = TG_ERR_NOMEM;

    if (talk)
        printf("fashion-mnist-mpi: %d rank%s x %d thread%s, global batch %zu (%zu per rank), "
               "%zu parameters (%.1f MiB of gradients per allreduce), kernel %s\n",
               size, size > 1 ? "s" : "", o->threads, o->threads > 1 ? "s" : "", o->batch,
               o->batch / (size_t)size, tg_params_size(md.p),
               (double)tg_params_size(md.p) * 4 / 1048576, tg_kernel_name());

    if (st == TG_OK && o->comm_bench > 0)
        st = comm_bench(m, md.p, o->comm_bench);

    long step = 0;
    double train_time = 0, comm_time = 0, examples = 0;
    long steps_timed = 0;
    for (int epoch = 1; epoch <= o->epochs && st == TG_OK; epoch++) {
        tg_mpi_reset_stats(m);
        MPI_Barrier(MPI_COMM_WORLD);
        double t0 = MPI_Wtime(), loss_sum = 0, seen = 0;
        long epoch_steps = 0;
        tg_batch batch;
        while (st == TG_OK && (o->steps < 0 || step < o->steps) && tg_batcher_next(b, &batch)) {
            size_t lo, hi;
            tg_mpi_shard_range(batch.size, rank, size, &lo, &hi);
            tg_tape_reset(t);
            tg_tensor *scores = forward(t, &md, (const float *)batch.x + lo * 784,
                                        (int64_t)(hi - lo));
            tg_tensor *loss = tg_softmax_xent(t, scores, batch.labels + lo, hi - lo, 1);
            double w = (double)(hi - lo) / (double)batch.size;
            tg_backward(t, tg_scale(t, loss, w));
            st = tg_mpi_sum_grads(m, md.p, t); /* every rank fails together, or none */
            if (st == TG_OK) {
                tg_status s = tg_sgd_step(opt); /* can fail on one rank: agree on it */
                st = tg_mpi_check(m, s, s != TG_OK ? tg_sgd_error(opt) : NULL);
            }
            loss_sum += tg_tensor_item(loss) * (double)(hi - lo);
            seen += (double)batch.size;
            epoch_steps++;
            step++;
        }
        double elapsed = MPI_Wtime() - t0;
        tg_batcher_reset(b); /* the next epoch: a fresh order, the same on every rank */
        if (st != TG_OK)
            break;
        tg_mpi_stats stats;
        tg_mpi_get_stats(m, &stats);
        double comm = stats.reduce_seconds + stats.check_seconds;
        MPI_Allreduce(MPI_IN_PLACE, &loss_sum, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
        MPI_Allreduce(MPI_IN_PLACE, &comm, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
        MPI_Allreduce(MPI_IN_PLACE, &elapsed, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        comm /= size;
        train_time += elapsed;
        comm_time += comm;
        examples += seen;
        steps_timed += epoch_steps;

        st = tg_mpi_verify_params(m, md.p);
        if (st != TG_OK)
            break;
        long correct = evaluate(m, t, &md, test, &st);
        if (st != TG_OK)
            break;
        if (talk && epoch_steps > 0)
            printf("epoch %d: loss %.4f  test accuracy %.2f%%  %.0f examples/s  "
                   "step %.2f ms, communication %.3f ms (%.1f%%)\n",
                   epoch, loss_sum / seen, 100.0 * (double)correct / (double)tg_dataset_count(test),
                   seen / elapsed, 1e3 * elapsed / (double)epoch_steps,
                   1e3 * comm / (double)epoch_steps, 100.0 * comm / elapsed);
        if (rank == 0 && o->quiet && (epoch == o->epochs || (o->steps >= 0 && step >= o->steps)))
            printf("test accuracy %.2f%%\n",
                   100.0 * (double)correct / (double)tg_dataset_count(test));
        if (o->steps >= 0 && step >= o->steps)
            break;
    }
    if (st == TG_OK && rank == 0 && steps_timed > 0)
        printf("summary: %d rank%s x %d thread%s: %.0f examples/s, %.2f ms/step, communication "
               "%.3f ms/step (%.1f%% of a step)\n",
               size, size > 1 ? "s" : "", o->threads, o->threads > 1 ? "s" : "",
               examples / train_time, 1e3 * train_time / (double)steps_timed,
               1e3 * comm_time / (double)steps_timed, 100.0 * comm_time / train_time);
    if (st == TG_OK && o->save) {
        st = tg_mpi_save_params(m, md.p, o->save);
        if (st == TG_OK && talk)
            printf("saved %s\n", o->save);
    }
    if (st != TG_OK && rank == 0)
        fprintf(stderr, "fashion-mnist-mpi: %s\n",
                tg_mpi_error(m) ? tg_mpi_error(m) : tg_status_string(st));

    tg_tape_free(t);
    tg_batcher_free(b);
    tg_sgd_free(opt);
    tg_rng_free(order);
    tg_rng_free(init);
    tg_params_free(md.p);
    tg_dataset_free(train);
    tg_dataset_free(test);
    return st == TG_OK ? 0 : 1;
}

int
main(int argc, char **argv)
{
    MPI_Init(&argc, &argv); /* the caller owns MPI: tapegrad never initializes it */
    struct options o;
    int rc = 1;
    if (parse(argc, argv, &o) != 0) {
        int rank = 0;
        MPI_Comm_rank(MPI_COMM_WORLD, &rank);
        if (rank == 0)
            fprintf(stderr, "usage: mpirun -np P %s [--data DIR] [--epochs N] [--steps N] "
                            "[--batch GLOBAL] [--lr ETA] [--momentum MU] [--seed S] "
                            "[--threads T] [--bucket-kb K] [--save PATH] [--comm-bench N] "
                            "[--quiet]\n",
                    argv[0]);
        MPI_Finalize();
        return 2;
    }
    tg_set_num_threads(o.threads);
    tg_mpi_options mo = {.bucket_bytes = o.bucket_kb * 1024};
    tg_mpi *m = tg_mpi_new(MPI_COMM_WORLD, &mo);
    if (!m || tg_mpi_status(m) != TG_OK)
        fprintf(stderr, "fashion-mnist-mpi: %s\n", m ? tg_mpi_error(m) : "out of memory");
    else
        rc = run(m, &o);
    tg_mpi_free(m);
    MPI_Finalize();
    return rc;
}
