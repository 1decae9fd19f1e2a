/*
 * Results do not depend on the thread count: a few training steps of B-mnist-like networks at
 * 1 and at 2 threads give bit-identical parameters (memcmp), in both dtypes and both layouts.
 * The shapes are large enough that every parallel path runs more than one chunk: the GEMMs,
 * bias_act forward and VJP (128 x 512 = 65536 elements > two chunks of 32768, with per-chunk
 * bias-gradient partials), and elementwise activations. A second test case runs each threaded
 * elementwise, reduction and loss op alone on multi-chunk shapes (below). The steps' trial
 * (kernels.h, tg__step_trial), whose first probes would run them on one thread, is off here.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <tapegrad/runtime.h>

#include "../lib/internal.h"
#include "../lib/kernels/kernels.h"
#include "common.h"

struct net {
    tg_params *p;
    tg_dense l[3];
    tg_sgd *opt;
};

/* Trains `steps` steps from the same seed and returns a copy of the parameter values. */
static void *
train(tg_dtype dt, tg_layout layout, tg_activation act, int threads, int steps, size_t *bytes)
{
    ck_assert_int_eq(tg_set_num_threads(threads), TG_OK);
    tg__step_trial_off = true;
    /* Under valgrind the input layer is 64 wide instead of 784: the 512-wide hidden layer
     * still spans two bias_act chunks, and the run takes minutes less. */
    const int64_t dims[4] = {getenv("TG_UNDER_VALGRIND") ? 64 : 784, 512, 256, 10},
                  batch = 128;
    tg_rng *rng = tg_rng_new(7);
    struct net n;
    n.p = tg_params_new(dt);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(tg_dense_init(&n.l[i], n.p, i == 0 ? "l1" : i == 1 ? "l2" : "l3",
                                       dims[i], dims[i + 1], i == 2 ? TG_ACT_IDENTITY : act,
                                       layout, rng),
                         TG_OK);
    n.opt = tg_sgd_new(n.p, &(tg_sgd_options){.lr = 0.05, .momentum = 0.9}, NULL);
    bool rows = layout == TG_EXAMPLES_AS_ROWS;
    size_t nx = (size_t)(batch * dims[0]);
    double *x = malloc(nx * sizeof *x);
    for (size_t i = 0; i < nx; i++)
        x[i] = tg_rng_uniform(rng) - 0.5;
    int32_t labels[128];
    for (int j = 0; j < batch; j++)
        labels[j] = (int32_t)(tg_rng_u64(rng) % 10);
    tg_tape *t = tg_tape_new();
    for (int s = 0; s < steps; s++) {
        tg_tape_reset(t);
        int64_t xd[2] = {rows ? batch : dims[0], rows ? dims[0] : batch};
        tg_tensor *h = tg_tensor_new(t, dt, 2, xd, "X");
        tg_tensor_write(h, x, nx);
        for (int i = 0; i < 3; i++)
            h = tg_dense_forward(t, &n.l[i], h);
        tg_backward(t, tg_softmax_xent(t, h, labels, (size_t)batch, rows ? 1 : 0));
        ck_assert_msg(!tg_tape_error(t), "%s", tg_tape_error(t));
        ck_assert_int_eq(tg_sgd_step(n.opt), TG_OK);
    }
    *bytes = n.p->size * tg_dtype_size(dt);
    void *copy = malloc(*bytes);
    memcpy(copy, n.p->values, *bytes);
    tg_tape_free(t);
    tg_sgd_free(n.opt);
    tg_params_free(n.p);
    tg_rng_free(rng);
    free(x);
    ck_assert_int_eq(tg_set_num_threads(0), TG_OK);
    tg__step_trial_off = false;
    return copy;
}

static const struct {
    tg_dtype dt;
    tg_layout layout;
    tg_activation act;
} configs[] = {
    {TG_F32, TG_EXAMPLES_AS_ROWS, TG_ACT_RELU},
    {TG_F64, TG_EXAMPLES_AS_ROWS, TG_ACT_RELU},
    {TG_F32, TG_EXAMPLES_AS_COLUMNS, TG_ACT_TANH},
    {TG_F64, TG_EXAMPLES_AS_COLUMNS, TG_ACT_SIGMOID},
    {TG_F32, TG_EXAMPLES_AS_ROWS, TG_ACT_GELU},
};

START_TEST(parameters_bit_identical_for_1_and_2_threads)
{
    size_t b1, b2;
    void *one = train(configs[_i].dt, configs[_i].layout, configs[_i].act, 1, 3, &b1);
    void *two = train(configs[_i].dt, configs[_i].layout, configs[_i].act, 2, 3, &b2);
    ck_assert_uint_eq(b1, b2);
    ck_assert_msg(memcmp(one, two, b1) == 0, "%s %s %s: parameters differ between 1 and 2 threads",
                  tg_dtype_name(configs[_i].dt),
                  configs[_i].layout == TG_EXAMPLES_AS_ROWS ? "rows" : "columns",
                  tg_activation_name(configs[_i].act));
    free(one);
    free(two);
}
END_TEST

/* ======================================================================================
 * Each threaded elementwise, reduction and loss op on its own, on shapes that span several
 * chunks of 32768 elements (300 x 257 = 77100: three chunks, boundaries inside rows): forward
 * value and input gradients memcmp-identical at 1 and 2 threads, and equal to a plain
 * reference computed here (the chunked paths must be right, not only repeatable).
 */
enum big_op { B_ADD, B_SUB, B_MUL, B_SCALE, B_SUM, B_MEAN, B_MSE, B_MSE_HALF, B_XENT };

static const struct big_case {
    const char *label;
    enum big_op op;
    int64_t a[2], b[2]; /* operand shapes (b unused by unary ops) */
    int axis;           /* reductions: -1 all; mse_half: batch axis; xent: class axis */
} big_cases[] = {
    {"add (300x257)+(300x257)", B_ADD, {300, 257}, {300, 257}, 0},
    {"add (300x257)+(1x257) row", B_ADD, {300, 257}, {1, 257}, 0},
    {"add (300x1)+(300x257) column on the left", B_ADD, {300, 1}, {300, 257}, 0},
    {"sub (300x257)-(300x1) column", B_SUB, {300, 257}, {300, 1}, 0},
    {"sub (1x257)-(300x257) row on the left", B_SUB, {1, 257}, {300, 257}, 0},
    {"sub (300x257)-(1x1) scalar", B_SUB, {300, 257}, {1, 1}, 0},
    {"mul (300x257)⊙(300x257)", B_MUL, {300, 257}, {300, 257}, 0},
    {"mul (300x257)⊙(1x257) row", B_MUL, {300, 257}, {1, 257}, 0},
    {"mul (300x257)⊙(300x1) column", B_MUL, {300, 257}, {300, 1}, 0},
    {"mul (1x1)⊙(300x257) scalar", B_MUL, {1, 1}, {300, 257}, 0},
    {"scale (300x257)", B_SCALE, {300, 257}, {0, 0}, 0},
    {"sum all (300x257)", B_SUM, {300, 257}, {0, 0}, -1},
    {"sum axis 0 (300x257)", B_SUM, {300, 257}, {0, 0}, 0},
    {"sum axis 1 (300x257)", B_SUM, {300, 257}, {0, 0}, 1},
    {"sum axis 1 (1x77100) one long row", B_SUM, {1, 77100}, {0, 0}, 1},
    {"mean all (300x257)", B_MEAN, {300, 257}, {0, 0}, -1},
    {"mean axis 0 (300x257)", B_MEAN, {300, 257}, {0, 0}, 0},
    {"mean axis 1 (300x257)", B_MEAN, {300, 257}, {0, 0}, 1},
    {"mse (300x257)", B_MSE, {300, 257}, {300, 257}, 0},
    {"mse_half (300x257) batch axis 0", B_MSE_HALF, {300, 257}, {300, 257}, 0},
    {"softmax_xent (4000x20) classes on axis 1", B_XENT, {4000, 20}, {0, 0}, 1},
    {"softmax_xent (20x4000) classes on axis 0", B_XENT, {20, 4000}, {0, 0}, 0},
};
#define N_BIG ((int)(sizeof big_cases / sizeof big_cases[0]))

static int32_t big_labels[4000];

/* Values at 1 thread or 2: output, then da, then db, as raw bytes. */
struct big_run {
    unsigned char *bytes;
    size_t n_bytes;
    double *y, *da, *db; /* the same as doubles, for the reference check */
    double *dy;          /* the seed */
    double *av, *bv;     /* the inputs as stored (rounded to the dtype) */
    size_t na, nb, ny;
};

static void
big_free(struct big_run *r)
{
    free(r->bytes), free(r->y), free(r->da), free(r->db), free(r->av), free(r->bv), free(r->dy);
}

static double *
read_all(tg_tensor *x, bool grad)
{
    size_t n = tg_tensor_size(x);
    double *v = malloc((n ? n : 1) * sizeof *v);
    for (size_t i = 0; i < n; i++)
        v[i] = grad ? tg_tensor_grad_get(x, i) : tg_tensor_get(x, i);
    return v;
}

static struct big_run
run_big(const struct big_case *c, tg_dtype dt, int threads)
{
    ck_assert_int_eq(tg_set_num_threads(threads), TG_OK);
    tg_rng *rng = tg_rng_new(1234);
    tg_tape *t = tg_tape_new();
    bool binary = c->op <= B_MUL || c->op == B_MSE || c->op == B_MSE_HALF;
    struct big_run r = {0};
    r.na = (size_t)(c->a[0] * c->a[1]);
    r.nb = binary ? (size_t)(c->b[0] * c->b[1]) : 0;
    double *v = malloc((r.na > r.nb ? r.na : r.nb) * sizeof *v);
    tg_tensor *a = tg_tensor_new(t, dt, 2, c->a, "a"), *b = NULL;
    fill_uniform(v, r.na, rng, -2, 2);
    tg_tensor_write(a, v, r.na);
    tg_tensor_set_requires_grad(a, true);
    if (binary) {
        b = tg_tensor_new(t, dt, 2, c->b, "b");
        fill_uniform(v, r.nb, rng, -2, 2);
        tg_tensor_write(b, v, r.nb);
        tg_tensor_set_requires_grad(b, true);
    }
    for (size_t j = 0; j < 4000; j++)
        big_labels[j] = (int32_t)(tg_rng_u64(rng) % 20);
    tg_tensor *y = NULL;
    switch (c->op) {
    case B_ADD: y = tg_add(t, a, b); break;
    case B_SUB: y = tg_sub(t, a, b); break;
    case B_MUL: y = tg_mul(t, a, b); break;
    case B_SCALE: y = tg_scale(t, a, -1.75); break;
    case B_SUM: y = c->axis < 0 ? tg_sum(t, a) : tg_sum_axis(t, a, c->axis); break;
    case B_MEAN: y = c->axis < 0 ? tg_mean(t, a) : tg_mean_axis(t, a, c->axis); break;
    case B_MSE: y = tg_mse(t, a, b); break;
    case B_MSE_HALF: y = tg_mse_half(t, a, b, c->axis); break;
    case B_XENT: y = tg_softmax_xent(t, a, big_labels, (size_t)c->a[1 - c->axis], c->axis); break;
    }
    ck_assert_msg(!tg_tape_error(t), "%s: %s", c->label, tg_tape_error(t));
    /* seed: random dY of y's shape, so that every output element's VJP matters */
    r.ny = tg_tensor_size(y);
    int64_t yd[2] = {tg_tensor_dim(y, 0), tg_tensor_dim(y, 1)};
    tg_tensor *seed = tg_tensor_new(t, dt, 2, yd, "dY");
    double *sv = malloc(r.ny * sizeof *sv);
    fill_uniform(sv, r.ny, rng, -1, 1);
    tg_tensor_write(seed, sv, r.ny);
    ck_assert_int_eq(tg_backward_seeded(t, y, seed), TG_OK);
    size_t es = tg_dtype_size(dt);
    r.n_bytes = (r.ny + r.na + r.nb) * es;
    r.bytes = malloc(r.n_bytes);
    memcpy(r.bytes, tg_tensor_data(y), r.ny * es);
    memcpy(r.bytes + r.ny * es, tg_tensor_grad(a), r.na * es);
    if (b)
        memcpy(r.bytes + (r.ny + r.na) * es, tg_tensor_grad(b), r.nb * es);
    r.y = read_all(y, false);
    r.av = read_all(a, false);
    r.da = read_all(a, true);
    if (b) {
        r.bv = read_all(b, false);
        r.db = read_all(b, true);
    }
    r.dy = read_all(seed, false);
    free(sv);
    free(v);
    tg_tape_free(t);
    tg_rng_free(rng);
    ck_assert_int_eq(tg_set_num_threads(0), TG_OK);
    return r;
}

/* |got - want| within tol · scale (scale: Σ|terms| of a sum, |value| otherwise) */
#define NEAR(what, i, got, want, scale)                                                            \
    ck_assert_msg(fabsl((got) - (want)) <= tol * (scale) + 1e-300L,                                  \
                  "%s %s: %s[%zu] = %.17g, reference %.17g", c->label, tg_dtype_name(dt), what,    \
                  (size_t)(i), (double)(got), (double)(want))

/* The reference: plain loops in long double over the stored inputs. */
static void
check_reference(const struct big_case *c, tg_dtype dt, const struct big_run *r)
{
    /* Sums of up to 300 terms in the dtype (the broadcast operand's gradient, f32 partials):
     * recursive summation is within n·u·Σ|t| (Higham, ASNA 2nd ed., 4.2), 300·6e-8 = 1.8e-5
     * in f32 and 300·1.1e-16 = 3.3e-14 in f64; the bounds leave 5x and 30x. Sums kept in
     * double and single products are far inside them. */
    const long double tol = dt == TG_F32 ? 1e-4 : 1e-12;
    const double *dy = r->dy;
    size_t R = (size_t)c->a[0] > (size_t)c->b[0] ? (size_t)c->a[0] : (size_t)c->b[0];
    size_t C = (size_t)c->a[1] > (size_t)c->b[1] ? (size_t)c->a[1] : (size_t)c->b[1];
    if (c->op <= B_MUL) {
        long double *ga = calloc(r->na, sizeof *ga), *gb = calloc(r->nb, sizeof *gb),
                    *sa = calloc(r->na, sizeof *sa), *sb = calloc(r->nb, sizeof *sb);
        for (size_t i = 0; i < R; i++)
            for (size_t j = 0; j < C; j++) {
                size_t ia = (c->a[0] == 1 ? 0 : i) * (size_t)c->a[1] + (c->a[1] == 1 ? 0 : j);
                size_t ib = (c->b[0] == 1 ? 0 : i) * (size_t)c->b[1] + (c->b[1] == 1 ? 0 : j);
                long double x = r->av[ia], w = r->bv[ib], g = dy[i * C + j];
                long double want = c->op == B_ADD ? x + w : c->op == B_SUB ? x - w : x * w;
                NEAR("y", i * C + j, r->y[i * C + j], want, fabsl(want));
                long double tda = c->op == B_MUL ? g * w : g;
                long double tdb = c->op == B_MUL ? g * x : c->op == B_SUB ? -g : g;
                ga[ia] += tda, sa[ia] += fabsl(tda);
                gb[ib] += tdb, sb[ib] += fabsl(tdb);
            }
        for (size_t i = 0; i < r->na; i++)
            NEAR("da", i, r->da[i], ga[i], sa[i]);
        for (size_t i = 0; i < r->nb; i++)
            NEAR("db", i, r->db[i], gb[i], sb[i]);
        free(ga), free(gb), free(sa), free(sb);
    } else if (c->op == B_SCALE) {
        for (size_t i = 0; i < r->na; i++) {
            NEAR("y", i, r->y[i], -1.75L * r->av[i], fabsl(1.75L * r->av[i]));
            NEAR("da", i, r->da[i], -1.75L * dy[i], fabsl(1.75L * dy[i]));
        }
    } else if (c->op == B_SUM || c->op == B_MEAN) {
        size_t rows = (size_t)c->a[0], cols = (size_t)c->a[1];
        long double k = c->op == B_SUM ? 1
                        : 1.0L / (c->axis < 0 ? rows * cols : c->axis == 0 ? rows : cols);
        long double *y = calloc(r->ny, sizeof *y), *s = calloc(r->ny, sizeof *s);
        for (size_t i = 0; i < rows; i++)
            for (size_t j = 0; j < cols; j++) {
                size_t o = c->axis < 0 ? 0 : c->axis == 0 ? j : i;
                y[o] += r->av[i * cols + j], s[o] += fabsl(r->av[i * cols + j]);
                NEAR("da", i * cols + j, r->da[i * cols + j], k * dy[o], fabsl(k * dy[o]));
            }
        for (size_t o = 0; o < r->ny; o++)
            NEAR("y", o, r->y[o], k * y[o], k * s[o]);
        free(y), free(s);
    } else if (c->op == B_MSE || c->op == B_MSE_HALF) {
        long double f = c->op == B_MSE ? 2.0L / r->na : 1.0L / (long double)c->a[c->axis];
        long double sum = 0;
        for (size_t i = 0; i < r->na; i++) {
            long double d = (long double)r->av[i] - r->bv[i];
            sum += d * d;
            NEAR("da", i, r->da[i], f * dy[0] * d, fabsl(f * dy[0] * d));
            NEAR("db", i, r->db[i], -f * dy[0] * d, fabsl(f * dy[0] * d));
        }
        NEAR("y", 0, r->y[0], sum * f / 2, sum * f / 2);
    } else {
        bool rows = c->axis == 1;
        size_t B = (size_t)(rows ? c->a[0] : c->a[1]), K = (size_t)(rows ? c->a[1] : c->a[0]);
        long double total = 0, stotal = 0;
        for (size_t j = 0; j < B; j++) {
            long double m = -INFINITY, z = 0;
            for (size_t k = 0; k < K; k++)
                m = fmaxl(m, r->av[rows ? j * K + k : k * B + j]);
            for (size_t k = 0; k < K; k++)
                z += expl(r->av[rows ? j * K + k : k * B + j] - m);
            long double lj = m + logl(z) - r->av[rows ? j * K + big_labels[j] : big_labels[j] * B + j];
            total += lj, stotal += fabsl(lj);
            for (size_t k = 0; k < K; k++) {
                size_t at = rows ? j * K + k : k * B + j;
                long double p = expl(r->av[at] - m) / z, oh = (size_t)big_labels[j] == k;
                NEAR("dS", at, r->da[at], dy[0] * (p - oh) / B, fabsl(dy[0]) * (p + oh) / B);
            }
        }
        NEAR("y", 0, r->y[0], total / B, stotal / B);
    }
}

START_TEST(op_bit_identical_for_1_and_2_threads)
{
    const struct big_case *c = &big_cases[_i];
    /* Under valgrind one dtype per case, alternating: every path still runs, in half the time */
    bool quick = getenv("TG_UNDER_VALGRIND") != NULL;
    for (int d = quick ? _i % 2 : 0; d < (quick ? _i % 2 + 1 : 2); d++) {
        tg_dtype dt = d ? TG_F32 : TG_F64;
        struct big_run one = run_big(c, dt, 1), two = run_big(c, dt, 2);
        ck_assert_uint_eq(one.n_bytes, two.n_bytes);
        ck_assert_msg(memcmp(one.bytes, two.bytes, one.n_bytes) == 0,
                      "%s %s: forward value or gradients differ between 1 and 2 threads",
                      c->label, tg_dtype_name(dt));
        check_reference(c, dt, &one);
        big_free(&one);
        big_free(&two);
    }
}
END_TEST

/* Training steps run on one thread or all by trial (kernels.h, tg__step_trial): each round
 * (at least TG_TRIAL_PERIOD ticks and TG_TRIAL_ROUND_NS) starts with blocks of one thread and
 * all in turn, then keeps the count whose fastest step was faster (all on a tie), capping
 * tg__num_threads() on the ticking thread. Times are fed in, so the choice is checked without
 * a clock: the blocks in order, a slow first step of a block outweighed by the block's others,
 * one thread chosen when faster, all when faster or tied, the cap lifted, and no cap at 1
 * thread. */
static uint64_t clock_ns;

static void
probe_round(struct tg__step_trial *tr, uint64_t one_ns, uint64_t all_ns)
{
    for (int i = 0; i < TG_TRIAL_BLOCK * TG_TRIAL_BLOCKS; i++) {
        tg__step_trial_tick(tr, clock_ns);
        bool one = i / TG_TRIAL_BLOCK % 2 == 0;
        ck_assert_int_eq(tg__num_threads(), one ? 1 : 2);
        /* a block's first step is slowest (its data moves): the fastest step decides */
        clock_ns += (one ? one_ns : all_ns) + (i % TG_TRIAL_BLOCK == 0 ? 1000 : 0);
    }
}

/* The rest of a round on the chosen count: TG_TRIAL_PERIOD steps in all and 5 more (a round
 * lasts at least TG_TRIAL_PERIOD steps and TG_TRIAL_ROUND_NS: these steps take 1 ns each),
 * the last one taking the round past its minimum time, so the next tick begins a new round. */
static void
run_rest_of_round(struct tg__step_trial *tr, int want_threads)
{
    int end = TG_TRIAL_PERIOD + 5;
    for (int i = TG_TRIAL_BLOCK * TG_TRIAL_BLOCKS; i < end; i++) {
        tg__step_trial_tick(tr, clock_ns);
        ck_assert_int_eq(tg__num_threads(), want_threads);
        clock_ns += i < end - 1 ? 1 : TG_TRIAL_ROUND_NS; /* between probes: no effect */
    }
}

START_TEST(steps_threads_by_trial)
{
    ck_assert_int_eq(tg_set_num_threads(2), TG_OK);
    struct tg__step_trial tr = {0};
    probe_round(&tr, 100, 60);
    run_rest_of_round(&tr, 2);
    probe_round(&tr, 60, 100);
    run_rest_of_round(&tr, 1);
    probe_round(&tr, 70, 70);
    run_rest_of_round(&tr, 2);
    probe_round(&tr, 60, 100);
    tg__step_trial_tick(&tr, clock_ns);
    ck_assert_int_eq(tg__num_threads(), 1);
    tg__thread_cap_clear();
    ck_assert_int_eq(tg__num_threads(), 2);

    ck_assert_int_eq(tg_set_num_threads(1), TG_OK);
    struct tg__step_trial solo = {0};
    for (int i = 0; i < TG_TRIAL_PERIOD + TG_TRIAL_BLOCK * TG_TRIAL_BLOCKS; i++) {
        tg__step_trial_tick(&solo, clock_ns);
        clock_ns += (uint64_t)(i % 7) + (i == TG_TRIAL_PERIOD ? TG_TRIAL_ROUND_NS : 0);
        ck_assert_int_eq(tg__num_threads(), 1);
    }
    ck_assert_int_eq(tg_set_num_threads(0), TG_OK);
}
END_TEST

static Suite *
parallel_suite(void)
{
    Suite *s = suite_create("parallel");
    TCase *tc = tcase_create("thread-count independence");
    tcase_set_timeout(tc, 600);
    tcase_add_loop_test(tc, parameters_bit_identical_for_1_and_2_threads, 0,
                        (int)(sizeof configs / sizeof configs[0]));
    suite_add_tcase(s, tc);

    tc = tcase_create("elementwise, reductions, losses: 1 vs 2 threads and a reference");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, op_bit_identical_for_1_and_2_threads, 0, N_BIG);
    suite_add_tcase(s, tc);

    tc = tcase_create("the training steps' thread count");
    tcase_add_test(tc, steps_threads_by_trial);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    return run_suite(parallel_suite());
}
