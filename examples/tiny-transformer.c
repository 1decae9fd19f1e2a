/*
 * A tiny transformer that learns to reverse sequences of 16 digits, the model of
 * examples/tiny_transformer_torch.py:
 *
 *   token embedding 10 -> 64 + learned positional embedding (16 positions)
 *   2 pre-norm transformer blocks (d 64, 4 heads, feed-forward 256, GELU; tg_transformer_block)
 *   final layer norm, dense 64 -> 10 at every position
 *   softmax cross-entropy over all 16 positions, Adam, batch 64, float32
 *
 * Encoder-only and without a causal mask: output position i attends to the whole input and
 * must come to read input position 15 − i. Training sequences are drawn fresh for every batch
 * (digits uniform in 0..9 from a tg_rng seeded by --seed); the held-out set is 2000 sequences
 * from a fixed seed, never trained on: of 10^16 possible sequences a run of the default
 * 2000 steps at most sees 64 x 2000 = 128 000, so the expected number of held-out sequences
 * that were also trained on is below 2000 x 128 000 / 10^16 ≈ 3·10^-8.
 *
 * Every --eval-every steps it prints the step, the mean training loss since the last line and
 * the held-out token and exact-sequence accuracy; it stops as soon as the sequence accuracy
 * reaches --target (99 %) or after --steps, prints the final accuracy and the training time
 * (evaluations included) and exits 0 when the target was reached, 1 otherwise.
 *
 *   build/examples/tiny-transformer                  # the full run: to 99 %, or 2000 steps
 *   build/examples/tiny-transformer --seed 2 --threads 2 --eval-every 5
 *
 * Defaults: Adam lr 3e-3, no warm-up, constant rate, evaluation every 10 steps. The task is
 * easy for attention with learned positions: 99 % is reached after some 30 to 40 steps
 * (2000 to 2600 sequences); most of the wall time then goes to the evaluations.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <tapegrad/optim.h>
#include <tapegrad/runtime.h>
#include <tapegrad/tapegrad.h>

#define PROG "tiny-transformer"
#define LEN 16
#define DIGITS 10
#define D_MODEL 64
#define HEADS 4
#define FF 256
#define BLOCKS 2
#define HELD_OUT 2000
#define HELD_OUT_SEED 20261207u
#define EVAL_ROWS 500

struct options {
    long steps, threads, eval_every, warmup, batch;
    double lr, target;
    uint64_t seed;
    bool quiet;
};

struct model {
    tg_params *p;
    tg_embedding_layer tok;
    tg_positional_embedding_layer pos;
    tg_transformer_block block[BLOCKS];
    tg_layer_norm_layer norm;
    tg_dense head;
};

static double
now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int
parse(int argc, char **argv, struct options *o)
{
    *o = (struct options){.steps = 2000, .eval_every = 10, .warmup = 0, .batch = 64,
                          .lr = 3e-3, .target = 0.99, .seed = 1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--quiet")) {
            o->quiet = true;
            continue;
        }
        const char *v = i + 1 < argc ? argv[++i] : NULL;
        char *end = NULL;
        long n = v ? strtol(v, &end, 10) : 0;
        bool number = v && end != v && !*end && n >= 1;
        if (!v)
            return fprintf(stderr, PROG ": %s needs a value\n", a), -1;
        if (!strcmp(a, "--steps") && number)
            o->steps = n;
        else if (!strcmp(a, "--threads") && number)
            o->threads = n;
        else if (!strcmp(a, "--eval-every") && number)
            o->eval_every = n;
        else if (!strcmp(a, "--batch") && number)
            o->batch = n;
        else if (!strcmp(a, "--warmup") && v && end != v && !*end && n >= 0)
            o->warmup = n;
        else if (!strcmp(a, "--seed") && v && end != v && !*end && n >= 0)
            o->seed = (uint64_t)n;
        else if (!strcmp(a, "--lr") && (o->lr = strtod(v, &end)) > 0 && !*end)
            ;
        else if (!strcmp(a, "--target") && (o->target = strtod(v, &end)) >= 0 && !*end &&
                 o->target <= 1)
            ;
        else
            return fprintf(stderr, PROG ": %s %s: unknown flag or bad value\n", a, v), -1;
    }
    return 0;
}

static tg_status
model_init(struct model *m, tg_rng *rng)
{
    m->p = tg_params_new(TG_F32);
    tg_status s = tg_embedding_layer_init(&m->tok, m->p, "tok", DIGITS, D_MODEL, rng);
    if (s == TG_OK)
        s = tg_positional_embedding_layer_init(&m->pos, m->p, "pos", LEN, D_MODEL, rng);
    for (int b = 0; b < BLOCKS && s == TG_OK; b++) {
        char name[16];
        snprintf(name, sizeof name, "block%d", b);
        s = tg_transformer_block_init(&m->block[b], m->p, name, D_MODEL, HEADS, FF, rng);
    }
    if (s == TG_OK)
        s = tg_layer_norm_layer_init(&m->norm, m->p, "norm", 1, (int64_t[]){D_MODEL}, true);
    if (s == TG_OK)
        s = tg_dense_init(&m->head, m->p, "head", D_MODEL, DIGITS, TG_ACT_IDENTITY,
                          TG_EXAMPLES_AS_ROWS, NULL);
    if (s == TG_OK) { /* nn.Linear's initialization, as the PyTorch script's read-out */
        double bound = 1 / sqrt((double)D_MODEL);
        s = tg_tensor_fill_uniform(m->head.weight, rng, -bound, bound);
        if (s == TG_OK)
            s = tg_tensor_fill_uniform(m->head.bias, rng, -bound, bound);
    }
    if (s != TG_OK)
        fprintf(stderr, PROG ": %s\n", tg_params_error(m->p));
    return s;
}

/* scores (rows·LEN, DIGITS) for the digit sequences seq (rows x LEN) */
static tg_tensor *
forward(tg_tape *t, const struct model *m, const int64_t *seq, int64_t rows)
{
    tg_tensor *h = tg_embedding_layer_forward(t, &m->tok, seq, 2, (int64_t[]){rows, LEN});
    h = tg_positional_embedding_layer_forward(t, &m->pos, h);
    for (int b = 0; b < BLOCKS; b++)
        h = tg_transformer_block_forward(t, &m->block[b], h, false, NULL);
    h = tg_layer_norm_layer_forward(t, &m->norm, h);
    return tg_dense_forward(t, &m->head, tg_reshape(t, h, 2, (int64_t[]){rows * LEN, D_MODEL}));
}

/* rows random sequences and their reversals (the labels) */
static void
draw(tg_rng *rng, int64_t rows, int64_t *seq, int32_t *reversed)
{
    for (int64_t r = 0; r < rows; r++)
        for (int i = 0; i < LEN; i++)
            seq[r * LEN + i] = (int64_t)(tg_rng_u64(rng) % DIGITS);
    for (int64_t r = 0; r < rows; r++)
        for (int i = 0; i < LEN; i++)
            reversed[r * LEN + i] = (int32_t)seq[r * LEN + LEN - 1 - i];
}

/* held-out token and exact-sequence accuracy; -1 on a tape error */
static int
evaluate(tg_tape *t, const struct model *m, const int64_t *seq, const int32_t *want,
         double *token_acc, double *seq_acc)
{
    long tokens = 0, whole = 0;
    for (int64_t r0 = 0; r0 < HELD_OUT; r0 += EVAL_ROWS) {
        tg_tape_reset(t);
        tg_tensor *scores = forward(t, m, seq + r0 * LEN, EVAL_ROWS);
        if (tg_tape_error(t))
            return fprintf(stderr, PROG ": %s\n", tg_tape_error(t)), -1;
        const float *s = tg_tensor_data(scores);
        for (int64_t r = 0; r < EVAL_ROWS; r++) {
            int right = 0;
            for (int i = 0; i < LEN; i++) {
                const float *row = s + ((r * LEN) + i) * DIGITS;
                int best = 0;
                for (int c = 1; c < DIGITS; c++)
                    best = row[c] > row[best] ? c : best;
                right += best == want[(r0 + r) * LEN + i];
            }
            tokens += right;
            whole += right == LEN;
        }
    }
    *token_acc = (double)tokens / (HELD_OUT * LEN);
    *seq_acc = (double)whole / HELD_OUT;
    return 0;
}

int
main(int argc, char **argv)
{
    struct options o;
    if (parse(argc, argv, &o) < 0) {
        fprintf(stderr,
                "usage: " PROG " [--steps N] [--seed S] [--threads T] [--lr LR] [--warmup N] "
                "[--batch N] [--eval-every N] [--target FRACTION] [--quiet]\n");
        return 2;
    }
    if (o.threads > 0 && tg_set_num_threads((int)o.threads) != TG_OK)
        return fprintf(stderr, PROG ": --threads %ld refused\n", o.threads), 2;
    tg_rng *rng = tg_rng_new(o.seed), *held_rng = tg_rng_new(HELD_OUT_SEED);
    struct model m;
    if (model_init(&m, rng) != TG_OK)
        return 1;
    static int64_t held_seq[HELD_OUT * LEN];
    static int32_t held_want[HELD_OUT * LEN];
    draw(held_rng, HELD_OUT, held_seq, held_want);
    int64_t *seq = malloc((size_t)(o.batch * LEN) * sizeof *seq);
    int32_t *want = malloc((size_t)(o.batch * LEN) * sizeof *want);
    tg_optim_options opt = tg_optim_defaults(TG_OPTIM_ADAM);
    opt.lr = o.lr;
    opt.schedule.warmup_steps = o.warmup;
    const char *err = NULL;
    tg_optim *adam = tg_optim_new(m.p, &opt, &err);
    if (!adam || !seq || !want)
        return fprintf(stderr, PROG ": %s\n", err ? err : "out of memory"), 1;
    if (!o.quiet)
        printf(PROG ": reverse %d digits; %zu parameters, batch %ld, Adam lr %g (warm-up %ld), "
               "%d thread%s, held-out %d sequences\n",
               LEN, tg_params_size(m.p), o.batch, o.lr, o.warmup, tg_num_threads(),
               tg_num_threads() == 1 ? "" : "s", HELD_OUT);
    tg_tape *t = tg_tape_new(), *eval_tape = tg_tape_new();
    double t0 = now(), eval_secs = 0, loss_sum = 0, first_loss = NAN, last_loss = NAN;
    double token_acc = 0, seq_acc = 0;
    long step = 0, in_sum = 0;
    bool reached = false;
    while (step < o.steps && !reached) {
        draw(rng, o.batch, seq, want);
        tg_tape_reset(t);
        tg_params_zero_grad(m.p);
        tg_tensor *loss = tg_cross_entropy(t, forward(t, &m, seq, o.batch), want,
                                           (size_t)(o.batch * LEN), 1, NULL, 0);
        tg_backward(t, loss);
        if (tg_tape_error(t))
            return fprintf(stderr, PROG ": step %ld: %s\n", step, tg_tape_error(t)), 1;
        if (tg_optim_step(adam) != TG_OK)
            return fprintf(stderr, PROG ": %s\n", tg_optim_error(adam)), 1;
        double l = tg_tensor_get(loss, 0);
        if (step == 0)
            first_loss = l;
        loss_sum += l;
        in_sum++;
        step++;
        if (step % o.eval_every == 0 || step == o.steps) {
            double e0 = now();
            if (evaluate(eval_tape, &m, held_seq, held_want, &token_acc, &seq_acc) < 0)
                return 1;
            eval_secs += now() - e0;
            last_loss = loss_sum / (double)in_sum;
            reached = seq_acc >= o.target;
            if (!o.quiet)
                printf("step %5ld  loss %.4f  held-out token %6.2f%%  sequence %6.2f%%  (%.1f s)\n",
                       step, last_loss, 100 * token_acc, 100 * seq_acc, now() - t0);
            fflush(stdout);
            loss_sum = 0;
            in_sum = 0;
        }
    }
    double secs = now() - t0;
    printf("final held-out sequence accuracy %.2f%% (token %.2f%%) after %ld steps; "
           "training %.1f s (%.1f s of it evaluating); loss %.4f -> %.4f\n",
           100 * seq_acc, 100 * token_acc, step, secs, eval_secs, first_loss, last_loss);
    if (!reached)
        printf("target %.2f%% not reached\n", 100 * o.target);
    tg_tape_free(t);
    tg_tape_free(eval_tape);
    tg_optim_free(adam);
    tg_params_free(m.p);
    tg_rng_free(rng);
    tg_rng_free(held_rng);
    free(seq);
    free(want);
    return reached ? 0 : 1;
}
