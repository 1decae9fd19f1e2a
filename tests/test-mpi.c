/*
 * Data-parallel training over MPI (<tapegrad/mpi.h>). Run as `mpirun -np 2 test-mpi` (meson
 * test does); with any other number of ranks it reports a skip (exit 77).
 *
 * Every test is collective: both ranks run the same tests in the same order, in-process
 * (CK_NOFORK: a forked child cannot use its parent's MPI). So that a failed assertion on one
 * rank cannot leave the other waiting in a collective, each test does all its communication
 * first and asserts afterwards.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <tapegrad/checkpoint.h>
#include <tapegrad/mpi.h>
#include <tapegrad/tapegrad.h>

enum { NIN = 20, NHID = 16, NOUT = 5, GLOBAL_BATCH = 128, NSTEPS = 25 };

static tg_mpi *m;
static int rank, nranks;

static void
setup(void)
{
    m = tg_mpi_new(MPI_COMM_WORLD, NULL);
    ck_assert_ptr_nonnull(m);
    ck_assert_int_eq(tg_mpi_status(m), TG_OK);
    rank = tg_mpi_rank(m);
    nranks = tg_mpi_size(m);
}

static void
teardown(void)
{
    tg_mpi_free(m);
    m = NULL;
}

/* ---------------------------------------------------------------------------------------
 * A small classifier NIN -> NHID (tanh) -> NOUT, examples as rows, softmax cross-entropy.
 * tanh rather than ReLU keeps the loss smooth, so a rounding-level difference in the weights
 * can never flip a kink and turn into an O(1) gradient difference.
 */
struct model {
    tg_params *p;
    tg_dense l1, l2;
};

static void
model_init(struct model *md, tg_dtype dt, uint64_t seed)
{
    md->p = tg_params_new(dt);
    ck_assert_ptr_nonnull(md->p);
    tg_rng *r = tg_rng_new(seed);
    ck_assert_int_eq(tg_dense_init(&md->l1, md->p, "fc1", NIN, NHID, TG_ACT_TANH,
                                   TG_EXAMPLES_AS_ROWS, r),
                     TG_OK);
    ck_assert_int_eq(tg_dense_init(&md->l2, md->p, "fc2", NHID, NOUT, TG_ACT_IDENTITY,
                                   TG_EXAMPLES_AS_ROWS, r),
                     TG_OK);
    tg_rng_free(r);
}

/* Forward + backward on `rows` examples; the loss is the mean over them. */
static tg_status
grads(tg_tape *t, struct model *md, const double *x, const int32_t *y, int64_t rows)
{
    tg_tape_reset(t);
    int64_t dims[2] = {rows, NIN};
    tg_tensor *X = tg_tensor_wrap(t, TG_F64, 2, dims, (void *)(uintptr_t)x, "x");
    tg_tensor *s = tg_dense_forward(t, &md->l2, tg_dense_forward(t, &md->l1, X));
    return tg_backward(t, tg_softmax_xent(t, s, y, (size_t)rows, 1));
}

struct data {
    double *x;  /* (NSTEPS * GLOBAL_BATCH) x NIN */
    int32_t *y;
};

static struct data
data_make(void)
{
    size_t n = (size_t)NSTEPS * GLOBAL_BATCH;
    struct data d = {malloc(n * NIN * sizeof(double)), malloc(n * sizeof(int32_t))};
    ck_assert(d.x && d.y);
    tg_rng *r = tg_rng_new(7);
    for (size_t i = 0; i < n * NIN; i++)
        d.x[i] = 2 * tg_rng_uniform(r) - 1;
    for (size_t i = 0; i < n; i++)
        d.y[i] = (int32_t)(tg_rng_u64(r) % NOUT);
    tg_rng_free(r);
    return d;
}

static void
data_free(struct data *d)
{
    free(d->x);
    free(d->y);
}

static const tg_sgd_options sgd_opt = {.lr = 0.1, .momentum = 0.9, .weight_decay = 1e-4};

static double
max_abs(const double *a, size_t n)
{
    double v = 0;
    for (size_t i = 0; i < n; i++)
        v = fmax(v, fabs(a[i]));
    return v;
}

static double
max_abs_diff(const double *a, const double *b, size_t n)
{
    double v = 0;
    for (size_t i = 0; i < n; i++)
        v = fmax(v, fabs(a[i] - b[i]));
    return v;
}

/* ---------------------------------------------------------------------------------------
 * Equivalence: 2 ranks x 64 examples == 1 process x 128 examples, step by step.
 *
 * Everything is float64 and identical on both paths (initialization, data, optimizer) except
 * the order of one sum: the 128-example gradient sums of the reference (inside the GEMM of
 * dW = dZᵀ X and the bias column sums) are, data-parallel, two 64-example sums added by the
 * allreduce. The loss scales 1/128 and 1/64 then 1/2 are powers of two, exact either way, so
 * no other rounding differs. A reordered sum of k terms differs by at most ~k u Σ|terms|
 * (u = 1.1e-16), in practice ~sqrt(k) u Σ|terms|: with gradients O(0.1-1) and lr 0.1 that is
 * ~1e-16 absolute per step in the weights. Over N = 25 steps momentum and the loss's
 * curvature carry and amplify earlier differences (at most by (1 + lr ||H||) per step, a few
 * times over 25 steps here), so we expect ~1e-15 .. 1e-14 relative to max|w| (~0.5); measured
 * 3e-16 on x86-64 (printed). The bound 1e-12 relative leaves two orders of margin over the
 * worst case of that estimate and is still eleven orders below the distance the weights
 * travel (0.43; asserted >= 1e-2, so the test is not vacuous). Summing instead of averaging
 * gives 0.26 relative, so the bound does catch a wrong reduction. The ranks themselves must agree
 * bitwise: both receive the same allreduce sums (MPI_SUM of two values commutes).
 */
#define EQUIV_REL_TOL 1e-12

START_TEST(two_ranks_match_one_process)
{
    struct data d = data_make();
    /* Data-parallel: rank 1 starts from a different seed on purpose; the broadcast must fix
     * that. */
    struct model md;
    model_init(&md, TG_F64, rank == 0 ? 42 : 4242);
    tg_status bcast = tg_mpi_broadcast_params(m, md.p);
    size_t n = tg_params_size(md.p);
    double *w0 = malloc(n * sizeof *w0);
    ck_assert_ptr_nonnull(w0);
    memcpy(w0, tg_params_values(md.p), n * sizeof *w0);

    tg_sgd *opt = tg_sgd_new(md.p, &sgd_opt, NULL);
    tg_tape *t = tg_tape_new();
    size_t lo, hi;
    ck_assert_int_eq(tg_mpi_shard_range(GLOBAL_BATCH, rank, nranks, &lo, &hi), TG_OK);
    tg_status st = bcast;
    for (int s = 0; s < NSTEPS && st == TG_OK; s++) {
        size_t row = (size_t)s * GLOBAL_BATCH + lo;
        tg_status g = grads(t, &md, d.x + row * NIN, d.y + row, (int64_t)(hi - lo));
        st = tg_mpi_average_grads(m, md.p, t);
        if (st == TG_OK && g == TG_OK)
            st = tg_sgd_step(opt);
    }
    tg_status same = tg_mpi_verify_params(m, md.p);
    tg_mpi_stats stats;
    tg_mpi_get_stats(m, &stats);
    /* Communication is over; from here on each rank asserts on its own. */

    ck_assert_msg(st == TG_OK, "data-parallel training failed: %s", tg_mpi_error(m));
    ck_assert_msg(same == TG_OK, "ranks diverged: %s", tg_mpi_error(m));
    ck_assert_int_eq(stats.reductions, NSTEPS);
    ck_assert(stats.bytes == (double)NSTEPS * (double)(n * sizeof(double)));

    /* The reference, on every rank (no collectives): 1 process, batch 128, seed 42. */
    struct model ref;
    model_init(&ref, TG_F64, 42);
    ck_assert_msg(memcmp(w0, tg_params_values(ref.p), n * sizeof *w0) == 0,
                  "broadcast did not deliver rank 0's initial parameters");
    tg_sgd *ref_opt = tg_sgd_new(ref.p, &sgd_opt, NULL);
    for (int s = 0; s < NSTEPS; s++) {
        size_t row = (size_t)s * GLOBAL_BATCH;
        ck_assert_int_eq(grads(t, &ref, d.x + row * NIN, d.y + row, GLOBAL_BATCH), TG_OK);
        ck_assert_int_eq(tg_sgd_step(ref_opt), TG_OK);
    }
    const double *w = tg_params_values(md.p), *wr = tg_params_values(ref.p);
    double scale = max_abs(wr, n), diff = max_abs_diff(w, wr, n), moved = max_abs_diff(wr, w0, n);
    if (rank == 0)
        printf("equivalence: %d steps, max|w_mpi - w_ref| = %.3g, max|w| = %.3g "
               "(relative %.3g, bound %.0e); weights moved %.3g\n",
               NSTEPS, diff, scale, diff / scale, EQUIV_REL_TOL, moved);
    ck_assert_msg(moved >= 1e-2, "weights barely moved (%g): the test would be vacuous", moved);
    ck_assert_msg(diff <= EQUIV_REL_TOL * scale,
                  "2x64 vs 1x128: max abs difference %.3g exceeds %.0e x max|w| = %.3g", diff,
                  EQUIV_REL_TOL, EQUIV_REL_TOL * scale);

    tg_sgd_free(ref_opt);
    tg_params_free(ref.p);
    tg_tape_free(t);
    tg_sgd_free(opt);
    free(w0);
    tg_params_free(md.p);
    data_free(&d);
}
END_TEST

/* Bucketed allreduce gives the very bits of the single call: each element is still the sum of
 * the same two values. 40-byte buckets over 421 doubles = 85 buckets, more than the 64 kept in
 * flight at once, so the wait-and-continue path runs too. */
START_TEST(buckets_give_identical_results)
{
    tg_mpi_options opt = {.bucket_bytes = 40};
    tg_mpi *mb = tg_mpi_new(MPI_COMM_WORLD, &opt);
    struct data d = data_make();
    struct model md;
    model_init(&md, TG_F64, 42);
    tg_tape *t = tg_tape_new();
    size_t n = tg_params_size(md.p);
    size_t lo = (size_t)rank * 64;
    grads(t, &md, d.x + lo * NIN, d.y + lo, 64);
    double *g = malloc(n * sizeof *g);
    ck_assert_ptr_nonnull(g);
    memcpy(g, tg_params_grads(md.p), n * sizeof *g);
    tg_status whole = tg_mpi_average_grads(m, md.p, t);
    double *gw = malloc(n * sizeof *gw);
    ck_assert_ptr_nonnull(gw);
    memcpy(gw, tg_params_grads(md.p), n * sizeof *gw);
    memcpy(tg_params_grads(md.p), g, n * sizeof *g);
    tg_status bucketed = tg_mpi_average_grads(mb, md.p, t);
    tg_mpi_stats stats;
    tg_mpi_get_stats(mb, &stats);

    ck_assert_int_eq(n, 421);
    ck_assert_int_eq(whole, TG_OK);
    ck_assert_msg(bucketed == TG_OK, "%s", tg_mpi_error(mb));
    ck_assert_int_eq(stats.messages, 85);
    ck_assert(memcmp(gw, tg_params_grads(md.p), n * sizeof *gw) == 0);
    ck_assert(max_abs_diff(gw, g, n) > 0); /* the other rank's half did arrive */

    free(gw);
    free(g);
    tg_tape_free(t);
    tg_params_free(md.p);
    data_free(&d);
    tg_mpi_free(mb);
}
END_TEST

START_TEST(float32_sum_and_average)
{
    tg_params *p = tg_params_new(TG_F32);
    int64_t dims[1] = {3};
    ck_assert_ptr_nonnull(tg_params_add(p, "v", 1, dims));
    float *g = tg_params_grads(p);
    for (int i = 0; i < 3; i++)
        g[i] = (float)(rank + 1) * (float)(i + 1); /* rank 0: 1 2 3; rank 1: 2 4 6 */
    tg_status s1 = tg_mpi_sum_grads(m, p, NULL);
    float sum[3];
    memcpy(sum, g, sizeof sum);
    tg_status s2 = tg_mpi_average_grads(m, p, NULL);

    ck_assert_int_eq(s1, TG_OK);
    ck_assert_int_eq(s2, TG_OK);
    for (int i = 0; i < 3; i++) {
        ck_assert_float_eq(sum[i], 3.0f * (float)(i + 1));
        ck_assert_float_eq(g[i], 3.0f * (float)(i + 1)); /* mean of (3, 3)(i+1) */
    }
    tg_params_free(p);
}
END_TEST

/* ---------------------------------------------------------------------------------------
 * Errors: one rank's failure becomes every rank's error, with its message; nothing moves.
 */
START_TEST(tape_error_on_one_rank_fails_all)
{
    struct data d = data_make();
    struct model md;
    model_init(&md, TG_F64, 42);
    tg_tape *t = tg_tape_new();
    grads(t, &md, d.x, d.y, 64);
    if (rank == 1) /* (64 x 20) · (64 x 20): inner dimensions differ */
        tg_matmul(t, tg_tensor_wrap(t, TG_F64, 2, (int64_t[]){64, NIN}, d.x, "a"),
                  tg_tensor_wrap(t, TG_F64, 2, (int64_t[]){64, NIN}, d.x, "b"));
    size_t n = tg_params_size(md.p);
    double *g = malloc(n * sizeof *g);
    ck_assert_ptr_nonnull(g);
    memcpy(g, tg_params_grads(md.p), n * sizeof *g);
    tg_status s = tg_mpi_average_grads(m, md.p, t);
    const char *msg = tg_mpi_error(m);

    ck_assert_int_eq(s, TG_ERR_SHAPE);
    ck_assert_ptr_nonnull(msg);
    ck_assert_msg(strstr(msg, "average_grads: rank 1 of 2: matmul"), "message: %s", msg);
    ck_assert_msg(strstr(msg, "inner dimensions differ"), "message: %s", msg);
    ck_assert(memcmp(g, tg_params_grads(md.p), n * sizeof *g) == 0);

    free(g);
    tg_tape_free(t);
    tg_params_free(md.p);
    data_free(&d);
}
END_TEST

START_TEST(check_reports_lowest_failing_rank)
{
    tg_status a = tg_mpi_check(m, TG_OK, NULL);
    tg_status b = tg_mpi_check(m, TG_ERR_IO, rank == 0 ? "open \"x\": no such file" : "other");
    char msg_b[256];
    snprintf(msg_b, sizeof msg_b, "%s", tg_mpi_error(m) ? tg_mpi_error(m) : "(none)");
    tg_status c = tg_mpi_check(m, rank == 1 ? TG_ERR_NOMEM : TG_OK, NULL);
    char msg_c[256];
    snprintf(msg_c, sizeof msg_c, "%s", tg_mpi_error(m) ? tg_mpi_error(m) : "(none)");
    tg_status d = tg_mpi_check(m, TG_OK, NULL);

    ck_assert_int_eq(a, TG_OK);
    ck_assert_int_eq(b, TG_ERR_IO);
    ck_assert_str_eq(msg_b, "check: rank 0 of 2: open \"x\": no such file");
    ck_assert_int_eq(c, TG_ERR_NOMEM);
    ck_assert_str_eq(msg_c, "check: rank 1 of 2: out of memory");
    ck_assert_int_eq(d, TG_OK); /* a failed call leaves the handle usable */
    ck_assert_ptr_null(tg_mpi_error(m));
}
END_TEST

START_TEST(different_models_are_refused)
{
    /* rank 1 has one more parameter value */
    tg_params *p = tg_params_new(TG_F64);
    int64_t dims[1] = {rank == 0 ? 10 : 11};
    tg_params_add(p, "v", 1, dims);
    tg_status s1 = tg_mpi_average_grads(m, p, NULL);
    char msg1[256];
    snprintf(msg1, sizeof msg1, "%s", tg_mpi_error(m) ? tg_mpi_error(m) : "(none)");
    tg_status s2 = tg_mpi_broadcast_params(m, p);
    tg_params_free(p);

    /* same count, different dtype */
    p = tg_params_new(rank == 0 ? TG_F64 : TG_F32);
    dims[0] = 10;
    tg_params_add(p, "v", 1, dims);
    tg_status s3 = tg_mpi_average_grads(m, p, NULL);
    char msg3[256];
    snprintf(msg3, sizeof msg3, "%s", tg_mpi_error(m) ? tg_mpi_error(m) : "(none)");

    /* NULL parameters on one rank */
    tg_status s4 = tg_mpi_average_grads(m, rank == 1 ? NULL : p, NULL);
    char msg4[256];
    snprintf(msg4, sizeof msg4, "%s", tg_mpi_error(m) ? tg_mpi_error(m) : "(none)");
    tg_params_free(p);

    ck_assert_int_eq(s1, TG_ERR_SHAPE);
    ck_assert_str_eq(msg1, "average_grads: ranks hold different parameters: rank 0 has 10 "
                           "values, rank 1 has 11");
    ck_assert_int_eq(s2, TG_ERR_SHAPE);
    ck_assert_int_eq(s3, TG_ERR_DTYPE);
    ck_assert_str_eq(msg3, "average_grads: ranks hold different parameters: rank 1 has f32 "
                           "values, rank 0 has f64");
    ck_assert_int_eq(s4, TG_ERR_ARG);
    ck_assert_str_eq(msg4, "average_grads: rank 1 of 2: params is NULL");
}
END_TEST

START_TEST(verify_detects_divergence)
{
    tg_params *p = tg_params_new(TG_F64);
    int64_t dims[1] = {4};
    tg_params_add(p, "v", 1, dims);
    double *v = tg_params_values(p);
    v[2] = 1.5;
    tg_status same = tg_mpi_verify_params(m, p);
    if (rank == 1)
        v[3] = 1e-300;
    tg_status diverged = tg_mpi_verify_params(m, p);
    char msg[256];
    snprintf(msg, sizeof msg, "%s", tg_mpi_error(m) ? tg_mpi_error(m) : "(none)");
    tg_params_free(p);

    ck_assert_int_eq(same, TG_OK);
    ck_assert_int_eq(diverged, TG_ERR_CHECK);
    ck_assert_msg(strstr(msg, "rank 1"), "message: %s", msg);
}
END_TEST

START_TEST(null_communicator_is_refused_without_hanging)
{
    tg_mpi *bad = tg_mpi_new(MPI_COMM_NULL, NULL);
    ck_assert_ptr_nonnull(bad);
    ck_assert_int_eq(tg_mpi_status(bad), TG_ERR_ARG);
    ck_assert_ptr_nonnull(tg_mpi_error(bad));
    ck_assert_int_eq(tg_mpi_check(bad, TG_OK, NULL), TG_ERR_ARG); /* returns, no collective */
    ck_assert_int_eq(tg_mpi_rank(bad), -1);
    tg_mpi_free(bad);
    ck_assert_int_eq(tg_mpi_check(NULL, TG_OK, NULL), TG_ERR_ARG);
    ck_assert_int_eq(tg_mpi_rank(NULL), -1);
    ck_assert_int_eq(tg_mpi_size(NULL), 0);
    ck_assert_ptr_nonnull(tg_mpi_error(NULL));
    tg_mpi_free(NULL);
}
END_TEST

/* ---------------------------------------------------------------------------------------
 * Checkpoints: rank 0 writes, every rank loads.
 */
START_TEST(checkpoint_rank0_saves_all_load)
{
    /* rank 0 picks the file name; everyone learns it */
    char path[256] = {0};
    if (rank == 0)
        snprintf(path, sizeof path, "%s/tg-test-mpi-%ld.safetensors",
                 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (long)getpid());
    MPI_Bcast(path, sizeof path, MPI_CHAR, 0, MPI_COMM_WORLD);

    struct model md;
    model_init(&md, TG_F64, rank == 0 ? 1 : 2);
    size_t n = tg_params_size(md.p);
    double *mine = malloc(n * sizeof *mine);
    ck_assert_ptr_nonnull(mine);
    memcpy(mine, tg_params_values(md.p), n * sizeof *mine);
    tg_status saved = tg_mpi_save_params(m, md.p, path);
    int exists_on_0 = rank == 0 ? access(path, F_OK) == 0 : 1;
    tg_params_zero_grad(md.p);
    memset(tg_params_values(md.p), 0, n * sizeof(double));
    tg_status loaded = tg_mpi_load_params(m, md.p, path);
    tg_status same = tg_mpi_verify_params(m, md.p);
    double d0 = max_abs_diff(mine, tg_params_values(md.p), n); /* 0 on rank 0 */

    /* A state dict (e.g. with optimizer state): every rank reads the file itself. */
    tg_state_dict *sd = tg_state_dict_new();
    tg_state_dict_add_params(sd, "", md.p);
    memset(tg_params_values(md.p), 0, n * sizeof(double));
    tg_status sd_loaded = tg_mpi_load_state_dict(m, sd, path, 0);
    double d1 = max_abs_diff(mine, tg_params_values(md.p), n);
    tg_status sd_saved = tg_mpi_save_state_dict(m, sd, path);

    /* Failures: rank 0 cannot write -> everyone gets rank 0's message; a missing file ->
     * everyone fails and no value changes. */
    tg_status bad_save = tg_mpi_save_params(m, md.p, "/nonexistent-dir/x.safetensors");
    char msg_save[512];
    snprintf(msg_save, sizeof msg_save, "%s", tg_mpi_error(m) ? tg_mpi_error(m) : "(none)");
    tg_status bad_load = tg_mpi_load_params(m, md.p, "/nonexistent-dir/x.safetensors");
    double d2 = max_abs_diff(mine, tg_params_values(md.p), n);
    tg_status bad_sd_load = tg_mpi_load_state_dict(
        m, sd, rank == 1 ? "/nonexistent-dir/x.safetensors" : path, 0);
    char msg_sd[512];
    snprintf(msg_sd, sizeof msg_sd, "%s", tg_mpi_error(m) ? tg_mpi_error(m) : "(none)");
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0)
        unlink(path);

    ck_assert_int_eq(saved, TG_OK);
    ck_assert(exists_on_0);
    ck_assert_int_eq(loaded, TG_OK);
    ck_assert_int_eq(same, TG_OK);
    if (rank == 0)
        ck_assert(d0 == 0);
    else
        ck_assert(d0 > 0); /* rank 1 now holds rank 0's values, not its own */
    ck_assert_int_eq(sd_loaded, TG_OK);
    ck_assert(d1 == d0);
    ck_assert_int_eq(sd_saved, TG_OK);
    ck_assert_int_eq(bad_save, TG_ERR_IO);
    ck_assert_msg(strstr(msg_save, "save_params: rank 0 of 2: "), "message: %s", msg_save);
    ck_assert_msg(strstr(msg_save, "nonexistent-dir"), "message: %s", msg_save);
    ck_assert_int_eq(bad_load, TG_ERR_IO);
    ck_assert(d2 == d0);
    ck_assert_int_eq(bad_sd_load, TG_ERR_IO);
    ck_assert_msg(strstr(msg_sd, "load_state_dict: rank 1 of 2: "), "message: %s", msg_sd);

    tg_state_dict_free(sd);
    free(mine);
    tg_params_free(md.p);
}
END_TEST

/* ---------------------------------------------------------------------------------------
 * Sharding (no communication).
 */
START_TEST(shards_tile_the_range)
{
    for (int size = 1; size <= 7; size++)
        for (size_t n = 0; n <= 30; n++) {
            size_t next = 0;
            for (int r = 0; r < size; r++) {
                size_t b, e;
                ck_assert_int_eq(tg_mpi_shard_range(n, r, size, &b, &e), TG_OK);
                ck_assert_uint_eq(b, next);
                size_t len = e - b, q = n / (size_t)size;
                ck_assert(len == q || len == q + 1);
                next = e;
            }
            ck_assert_uint_eq(next, n);
        }
    size_t b = 9, e = 9;
    ck_assert_int_eq(tg_mpi_shard_range(10, 2, 2, &b, &e), TG_ERR_ARG);
    ck_assert_uint_eq(b, 0);
    ck_assert_uint_eq(e, 0);
    ck_assert_int_eq(tg_mpi_shard_range(10, -1, 2, &b, &e), TG_ERR_ARG);
    ck_assert_int_eq(tg_mpi_shard_range(10, 0, 0, &b, &e), TG_ERR_ARG);
    ck_assert_int_eq(tg_mpi_shard_range(10, 0, 1, NULL, &e), TG_ERR_ARG);
    /* no overflow near SIZE_MAX */
    ck_assert_int_eq(tg_mpi_shard_range(SIZE_MAX, 2, 3, &b, &e), TG_OK);
    ck_assert_uint_eq(e, SIZE_MAX);
}
END_TEST

static Suite *
mpi_suite(void)
{
    Suite *s = suite_create("mpi");
    TCase *tc = tcase_create("equivalence");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, two_ranks_match_one_process);
    tcase_add_test(tc, buckets_give_identical_results);
    tcase_add_test(tc, float32_sum_and_average);
    suite_add_tcase(s, tc);

    tc = tcase_create("errors");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, tape_error_on_one_rank_fails_all);
    tcase_add_test(tc, check_reports_lowest_failing_rank);
    tcase_add_test(tc, different_models_are_refused);
    tcase_add_test(tc, verify_detects_divergence);
    tcase_add_test(tc, null_communicator_is_refused_without_hanging);
    suite_add_tcase(s, tc);

    tc = tcase_create("checkpoints");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, checkpoint_rank0_saves_all_load);
    suite_add_tcase(s, tc);

    tc = tcase_create("sharding");
    tcase_add_test(tc, shards_tile_the_range);
    suite_add_tcase(s, tc);
    return s;
}

int
main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int me = 0, size = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &me);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (size != 2) {
        if (me == 0)
            printf("SKIP: test-mpi needs exactly 2 ranks (mpirun -np 2), got %d\n", size);
        MPI_Finalize();
        return 77;
    }
    SRunner *sr = srunner_create(mpi_suite());
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    MPI_Allreduce(MPI_IN_PLACE, &failed, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    MPI_Finalize();
    return failed ? 1 : 0;
}
