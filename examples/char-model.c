/*
 * A character-level language model of English words: an embedding, an LSTM (or a GRU) and a
 * linear read-out predict each next character of a word from the ones before it. Trained on
 * Debian's word list (package wamerican, /usr/share/dict/words), it prints the held-out loss
 * per epoch and then 20 new words sampled from the model.
 *
 *   build/examples/char-model                        # LSTM, 5 epochs
 *   build/examples/char-model --cell gru --epochs 3 --threads 2
 *   build/examples/char-model --bptt 4         # truncated BPTT: state detached every 4 steps
 *
 * The data: every line of the list made only of the letters a-z (so no proper nouns and no
 * possessives), each word once. A word w of length L is a sequence of T = L + 1 steps:
 * inputs ". w1 … wL", targets "w1 … wL .", where "." (class 0) marks both ends. 90/10 split,
 * seeded: a word is held out when FNV-1a(seed as 8 little-endian bytes, then the word) mod 10
 * is 0, so the split is the same for any machine and list order (examples/char_model_torch.py
 * does the same). Batches hold words of one length, so no step is padding: the tape records
 * T steps for each batch, with T chosen at run time by the data. Each epoch shuffles the words
 * within each length and the order of the batches (generator seeded by (seed, epoch)).
 *
 * The model, float32: embedding 27 -> 32, one LSTM layer of 128 (PyTorch's gate order and
 * initialization), a dense 128 -> 27 (examples as rows), softmax cross-entropy averaged over
 * every step of the batch, Adam (lr 2e-3). The held-out loss is the mean cross-entropy per
 * predicted character (nats), over every held-out word.
 *
 * stderr: progress within each epoch (words/s, running loss). stdout: one line per epoch
 * (training loss, held-out loss, time), then the samples.
 *
 * Exit status: 0 on success, 1 on a training error (or a held-out loss above --max-loss), 2 on
 * bad flags, 77 when the word list is not installed (the test-suite's "skip").
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <tapegrad/optim.h>
#include <tapegrad/runtime.h>
#include <tapegrad/tapegrad.h>

#define PROG "char-model"
#define DEFAULT_WORDS "/usr/share/dict/words"
#define VOCAB 27   /* "." and a-z */
#define MAX_LEN 24 /* longer words are left out (a handful in the list) */

struct options {
    const char *words, *cell;
    long epochs, batch, hidden, embed, threads, limit, samples, bptt;
    double lr, bar; /* bar: the most held-out loss accepted after the last epoch (0: any) */
    uint64_t seed;
    bool quiet;
};

static void
usage(FILE *out)
{
    fprintf(out,
            "Usage: " PROG " [options]\n"
            "Train a character-level LSTM or GRU on a word list; print the held-out loss per\n"
            "epoch and sample new words.\n\n"
            "  --words PATH   the word list (default " DEFAULT_WORDS ", Debian's wamerican)\n"
            "  --cell NAME    lstm (default) or gru\n"
            "  --epochs N     passes over the training words (default 5)\n"
            "  --batch N      words per batch, all of one length (default 64)\n"
            "  --hidden N     hidden size (default 128)\n"
            "  --embed N      embedding size (default 32)\n"
            "  --lr X         Adam's learning rate (default 0.002)\n"
            "  --seed N       the split, the weights, the shuffles and the samples (default 1)\n"
            "  --threads N    worker threads (default: tapegrad's default)\n"
            "  --limit N      use only the first N words of the list (tests)\n"
            "  --samples N    words sampled at the end (default 20)\n"
            "  --bptt K       truncated backpropagation through time: the state is detached\n"
            "                 every K steps (default 0: through the whole word)\n"
            "  --max-loss X   exit 1 unless the last held-out loss is at most X (tests)\n"
            "  --quiet        no progress within epochs\n");
}

static bool
parse_long(const char *s, long lo, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo)
        return false;
    *out = v;
    return true;
}

/* 0: run; 1: help; 2: bad flags */
static int
parse_args(int argc, char **argv, struct options *o)
{
    *o = (struct options){.words = DEFAULT_WORDS, .cell = "lstm", .epochs = 5, .batch = 64,
                          .hidden = 128, .embed = 32, .threads = 0, .limit = 0,
                          .samples = 20, .lr = 2e-3, .seed = 1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long n;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 1;
        } else if (!strcmp(a, "--quiet")) {
            o->quiet = true;
            continue;
        }
        if (!v) {
            fprintf(stderr, PROG ": %s needs a value (try --help)\n", a);
            return 2;
        }
        i++;
        bool ok = true;
        if (!strcmp(a, "--words"))
            o->words = v;
        else if (!strcmp(a, "--cell"))
            ok = !strcmp(v, "lstm") || !strcmp(v, "gru"), o->cell = v;
        else if (!strcmp(a, "--epochs"))
            ok = parse_long(v, 0, &o->epochs);
        else if (!strcmp(a, "--batch"))
            ok = parse_long(v, 1, &o->batch);
        else if (!strcmp(a, "--hidden"))
            ok = parse_long(v, 1, &o->hidden);
        else if (!strcmp(a, "--embed"))
            ok = parse_long(v, 1, &o->embed);
        else if (!strcmp(a, "--threads"))
            ok = parse_long(v, 1, &o->threads);
        else if (!strcmp(a, "--limit"))
            ok = parse_long(v, 1, &o->limit);
        else if (!strcmp(a, "--samples"))
            ok = parse_long(v, 0, &o->samples);
        else if (!strcmp(a, "--bptt"))
            ok = parse_long(v, 0, &o->bptt);
        else if (!strcmp(a, "--seed"))
            ok = parse_long(v, 0, &n), o->seed = (uint64_t)n;
        else if (!strcmp(a, "--max-loss")) {
            char *end;
            o->bar = strtod(v, &end);
            ok = *v && !*end && o->bar > 0 && isfinite(o->bar);
        } else if (!strcmp(a, "--lr")) {
            char *end;
            o->lr = strtod(v, &end);
            ok = *v && !*end && o->lr > 0 && isfinite(o->lr);
        } else {
            fprintf(stderr, PROG ": unknown option %s (try --help)\n", a);
            return 2;
        }
        if (!ok) {
            fprintf(stderr, PROG ": bad value \"%s\" for %s (try --help)\n", v, a);
            return 2;
        }
    }
    return 0;
}

static double
now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- the words ---- */

struct word {
    char s[MAX_LEN + 1];
    int len;
};

struct words {
    struct word *w;
    size_t n, cap;
};

/* FNV-1a over the seed's 8 bytes (little-endian) and then the word: the split's hash. */
static uint64_t
split_hash(uint64_t seed, const char *s)
{
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    for (int i = 0; i < 8; i++)
        h = (h ^ ((seed >> (8 * i)) & 0xff)) * UINT64_C(0x100000001b3);
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * UINT64_C(0x100000001b3);
    return h;
}

static bool
push(struct words *ws, const char *s, int len)
{
    if (ws->n == ws->cap) {
        size_t cap = ws->cap ? 2 * ws->cap : 4096;
        struct word *w = realloc(ws->w, cap * sizeof *w);
        if (!w)
            return false;
        ws->w = w, ws->cap = cap;
    }
    memcpy(ws->w[ws->n].s, s, (size_t)len + 1);
    ws->w[ws->n++].len = len;
    return true;
}

/* Reads the list into train and held; 0, or an exit status. */
static int
load_words(const struct options *o, struct words *train, struct words *held)
{
    FILE *f = fopen(o->words, "r");
    if (!f) {
        fprintf(stderr, PROG ": cannot open %s: %s (Debian: apt-get install wamerican)\n",
                o->words, strerror(errno));
        return errno == ENOENT ? 77 : 1;
    }
    char line[256], prev[256] = "";
    long seen = 0;
    while (fgets(line, sizeof line, f) && (!o->limit || seen < o->limit)) {
        size_t len = strcspn(line, "\r\n");
        line[len] = '\0';
        bool letters = len > 0 && len <= MAX_LEN;
        for (size_t i = 0; letters && i < len; i++)
            letters = line[i] >= 'a' && line[i] <= 'z';
        seen++;
        if (!letters || !strcmp(line, prev)) /* the list is sorted: repeats are adjacent */
            continue;
        strcpy(prev, line);
        if (!push(split_hash(o->seed, line) % 10 == 0 ? held : train, line, (int)len)) {
            fclose(f);
            fprintf(stderr, PROG ": out of memory reading %s\n", o->words);
            return 1;
        }
    }
    fclose(f);
    if (!train->n || !held->n) {
        fprintf(stderr, PROG ": %s gave %zu training and %zu held-out words; need both\n",
                o->words, train->n, held->n);
        return 1;
    }
    return 0;
}

/* ---- batches: runs of words of one length ---- */

struct batch {
    size_t first, count; /* in the words array, sorted by length */
};

static int
by_length(const void *a, const void *b)
{
    const struct word *x = a, *y = b;
    return x->len != y->len ? x->len - y->len : strcmp(x->s, y->s);
}

/* Sorts ws by length and cuts each length's words into batches of at most `size`; the words
 * of each length are shuffled first when rng is given. Returns the batch count. */
static size_t
make_batches(struct words *ws, size_t size, tg_rng *rng, struct batch *out)
{
    qsort(ws->w, ws->n, sizeof *ws->w, by_length);
    size_t nb = 0;
    for (size_t i = 0; i < ws->n;) {
        size_t j = i;
        while (j < ws->n && ws->w[j].len == ws->w[i].len)
            j++;
        for (size_t k = j - i; rng && k > 1; k--) { /* Fisher-Yates within the length */
            size_t r = (size_t)(tg_rng_u64(rng) % k);
            struct word tmp = ws->w[i + k - 1];
            ws->w[i + k - 1] = ws->w[i + r];
            ws->w[i + r] = tmp;
        }
        for (size_t b = i; b < j; b += size)
            out[nb++] = (struct batch){b, j - b < size ? j - b : size};
        i = j;
    }
    for (size_t k = nb; rng && k > 1; k--) {
        size_t r = (size_t)(tg_rng_u64(rng) % k);
        struct batch tmp = out[k - 1];
        out[k - 1] = out[r];
        out[r] = tmp;
    }
    return nb;
}

/* ---- the model ---- */

struct model {
    bool gru;
    long bptt; /* > 0: the recurrence is cut (tg_detach) every bptt steps */
    tg_embedding_layer embed;
    tg_rnn_layer rnn;
    tg_dense out;
    long hidden;
};

static tg_status
model_init(struct model *m, tg_params *p, const struct options *o, tg_rng *rng)
{
    m->gru = !strcmp(o->cell, "gru");
    m->bptt = o->bptt;
    m->hidden = o->hidden;
    tg_status s = tg_embedding_layer_init(&m->embed, p, "embed", VOCAB, o->embed, rng);
    if (s == TG_OK)
        s = m->gru ? tg_gru_layer_init(&m->rnn, p, "rnn", o->embed, o->hidden, 1, false, true, rng)
                   : tg_lstm_layer_init(&m->rnn, p, "rnn", o->embed, o->hidden, 1, false, true,
                                        rng);
    if (s == TG_OK)
        s = tg_dense_init(&m->out, p, "out", o->hidden, VOCAB, TG_ACT_IDENTITY,
                          TG_EXAMPLES_AS_ROWS, rng);
    return s;
}

/* The hidden states (T, B, H) for inputs idx (T, B). With truncated BPTT the sequence runs in
 * chunks of m->bptt steps, each starting from the state the one before ended in, detached:
 * the forward is the same, but no gradient flows back across a chunk boundary, so the
 * backward's cost and memory per chunk stay bounded however long the sequence is. */
static tg_tensor *
model_hidden(tg_tape *t, const struct model *m, const int64_t *idx, int64_t steps,
             int64_t batch)
{
    int64_t chunk = m->bptt > 0 ? m->bptt : steps;
    tg_tensor *parts[MAX_LEN + 1], *h = NULL, *c = NULL;
    int n = 0;
    for (int64_t t0 = 0; t0 < steps; t0 += chunk, n++) {
        int64_t len = steps - t0 < chunk ? steps - t0 : chunk;
        tg_tensor *x = tg_embedding_layer_forward(t, &m->embed, idx + t0 * batch, 2,
                                                  (int64_t[]){len, batch});
        tg_tensor *h0 = h ? tg_detach(t, h) : NULL, *c0 = c ? tg_detach(t, c) : NULL;
        parts[n] = m->gru ? tg_gru_layer_forward(t, &m->rnn, x, h0, &h)
                          : tg_lstm_layer_forward(t, &m->rnn, x, h0, c0, &h, &c);
    }
    return n == 1 ? parts[0] : tg_concat(t, parts, n, 0);
}

/* The logits (T·B, VOCAB) for inputs idx (T, B) (row t·B + b is step t of word b). */
static tg_tensor *
model_logits(tg_tape *t, const struct model *m, const int64_t *idx, int64_t steps, int64_t batch)
{
    tg_tensor *h = model_hidden(t, m, idx, steps, batch);
    h = tg_reshape(t, h, 2, (int64_t[]){steps * batch, m->hidden});
    return tg_dense_forward(t, &m->out, h);
}

/* Inputs and targets of the words [first, first + count), all of length len: step 0 reads
 * ".", step s reads letter s; step s's target is letter s + 1, the last step's ".". */
static void
encode(const struct words *ws, const struct batch *b, int64_t *idx, int32_t *target)
{
    int len = ws->w[b->first].len;
    for (int s = 0; s <= len; s++)
        for (size_t k = 0; k < b->count; k++) {
            const char *w = ws->w[b->first + k].s;
            idx[(size_t)s * b->count + k] = s == 0 ? 0 : w[s - 1] - 'a' + 1;
            target[(size_t)s * b->count + k] = s == len ? 0 : w[s] - 'a' + 1;
        }
}

/* Mean cross-entropy per predicted character over all of ws (evaluation mode, no backward). */
static double
held_out_loss(tg_tape *t, const struct model *m, const struct words *ws, const struct batch *bs,
              size_t nb, int64_t *idx, int32_t *target, tg_status *status)
{
    double sum = 0, chars = 0;
    for (size_t i = 0; i < nb && *status == TG_OK; i++) {
        int64_t steps = ws->w[bs[i].first].len + 1, batch = (int64_t)bs[i].count;
        tg_tape_reset(t);
        encode(ws, &bs[i], idx, target);
        tg_tensor *logits = model_logits(t, m, idx, steps, batch);
        tg_tensor *loss = tg_cross_entropy(t, logits, target, (size_t)(steps * batch), 1, NULL, 0);
        double v = NAN;
        *status = tg_tape_status(t);
        if (*status == TG_OK)
            *status = tg_tensor_read(loss, &v, 1);
        sum += v * (double)(steps * batch);
        chars += (double)(steps * batch);
    }
    return sum / chars;
}

/* Draws a word from the model: the letters after ".", one at a time, until it predicts "."
 * (or MAX_LEN letters). Each letter re-runs the prefix; words are short, so this is cheap. */
static tg_status
sample_word(tg_tape *t, const struct model *m, tg_rng *rng, char *out)
{
    int64_t idx[MAX_LEN + 1] = {0};
    int len = 0;
    while (len < MAX_LEN) {
        tg_tape_reset(t);
        tg_tensor *logits = model_logits(t, m, idx, len + 1, 1);
        tg_tensor *p = tg_softmax(t, logits, 1);
        double probs[(MAX_LEN + 1) * VOCAB];
        tg_status s = tg_tape_status(t);
        if (s == TG_OK)
            s = tg_tensor_read(p, probs, (size_t)(len + 1) * VOCAB);
        if (s != TG_OK)
            return s;
        const double *last = probs + (size_t)len * VOCAB;
        double u = tg_rng_uniform(rng), acc = 0;
        int c = VOCAB - 1;
        for (int k = 0; k < VOCAB; k++)
            if ((acc += last[k]) > u) {
                c = k;
                break;
            }
        if (c == 0)
            break;
        out[len] = (char)('a' + c - 1);
        idx[++len] = c;
    }
    out[len] = '\0';
    return TG_OK;
}

int
main(int argc, char **argv)
{
    struct options o;
    int rc = parse_args(argc, argv, &o);
    if (rc)
        return rc == 1 ? 0 : 2;
    if (o.threads && tg_set_num_threads((int)o.threads) != TG_OK) {
        fprintf(stderr, PROG ": cannot use %ld threads\n", o.threads);
        return 2;
    }
    struct words train = {0}, held = {0};
    rc = load_words(&o, &train, &held);
    if (rc) {
        free(train.w);
        free(held.w);
        return rc;
    }
    rc = 1;
    size_t max_batches = train.n + held.n;
    struct batch *tb = malloc(max_batches * sizeof *tb), *hb = malloc(max_batches * sizeof *hb);
    int64_t *idx = malloc((size_t)(MAX_LEN + 1) * (size_t)o.batch * sizeof *idx);
    int32_t *target = malloc((size_t)(MAX_LEN + 1) * (size_t)o.batch * sizeof *target);
    tg_rng *rng = tg_rng_new(o.seed);
    tg_params *p = tg_params_new(TG_F32);
    tg_tape *t = tg_tape_new();
    tg_optim *opt = NULL;
    struct model m;
    if (!tb || !hb || !idx || !target || !rng || !p || !t) {
        fprintf(stderr, PROG ": out of memory\n");
        goto done;
    }
    if (model_init(&m, p, &o, rng) != TG_OK) {
        fprintf(stderr, PROG ": %s\n", tg_params_error(p));
        goto done;
    }
    tg_optim_options oo = tg_optim_defaults(TG_OPTIM_ADAM);
    oo.lr = o.lr;
    const char *err = NULL;
    if (!(opt = tg_optim_new(p, &oo, &err))) {
        fprintf(stderr, PROG ": %s\n", err ? err : "out of memory");
        goto done;
    }
    size_t nh = make_batches(&held, (size_t)o.batch, NULL, hb);
    printf("%s: %zu training words, %zu held out; %s %ld, embedding %ld, batch %ld, Adam lr "
           "%g, %d thread%s\n",
           PROG, train.n, held.n, m.gru ? "GRU" : "LSTM", o.hidden, o.embed, o.batch, o.lr,
           tg_num_threads(), tg_num_threads() > 1 ? "s" : "");
    fflush(stdout);

    double train_time = 0, last_held = NAN;
    tg_status s = TG_OK;
    bool tty = isatty(STDERR_FILENO);
    for (long epoch = 1; epoch <= o.epochs && s == TG_OK; epoch++) {
        tg_rng *shuffle = tg_rng_new(o.seed * UINT64_C(1000003) + (uint64_t)epoch);
        if (!shuffle) {
            s = TG_ERR_NOMEM;
            break;
        }
        size_t nb = make_batches(&train, (size_t)o.batch, shuffle, tb);
        tg_rng_free(shuffle);
        double t0 = now(), loss_sum = 0, last_draw = 0;
        size_t words_done = 0, chars = 0;
        tg_tape_set_training(t, true);
        for (size_t i = 0; i < nb && s == TG_OK; i++) {
            int64_t steps = train.w[tb[i].first].len + 1, batch = (int64_t)tb[i].count;
            tg_tape_reset(t);
            encode(&train, &tb[i], idx, target);
            tg_params_zero_grad(p);
            tg_tensor *logits = model_logits(t, &m, idx, steps, batch);
            tg_tensor *loss =
                tg_cross_entropy(t, logits, target, (size_t)(steps * batch), 1, NULL, 0);
            s = tg_backward(t, loss);
            if (s == TG_OK)
                s = tg_optim_step(opt);
            double v = 0;
            if (s == TG_OK)
                tg_tensor_read(loss, &v, 1);
            loss_sum += v * (double)(steps * batch);
            chars += (size_t)(steps * batch);
            words_done += tb[i].count;
            double tn = now();
            if (!o.quiet && tty && tn - last_draw > 0.2) {
                last_draw = tn;
                fprintf(stderr, "\repoch %ld/%ld  %3d%%  %zu/%zu words  %.0f words/s  loss %.4f",
                        epoch, o.epochs, (int)(100 * words_done / train.n), words_done, train.n,
                        (double)words_done / (tn - t0), loss_sum / (double)chars);
                fflush(stderr);
            }
        }
        double secs = now() - t0;
        train_time += secs;
        if (!o.quiet && tty)
            fprintf(stderr, "\r%*s\r", 78, "");
        if (s != TG_OK)
            break;
        tg_tape_set_training(t, false);
        double hl = held_out_loss(t, &m, &held, hb, nh, idx, target, &s);
        if (s != TG_OK)
            break;
        last_held = hl;
        printf("epoch %ld  train loss %.4f  held-out loss %.4f  (%.1f s, %.0f words/s)\n",
               epoch, loss_sum / (double)chars, hl, secs, (double)train.n / secs);
        fflush(stdout);
    }
    if (s != TG_OK) {
        fprintf(stderr, PROG ": training failed: %s\n",
                tg_tape_error(t) ? tg_tape_error(t) : tg_status_string(s));
        goto done;
    }
    printf("training time %.1f s\n", train_time);
    if (o.samples) {
        printf("samples:");
        tg_tape_set_training(t, false);
        for (long k = 0; k < o.samples; k++) {
            char w[MAX_LEN + 1];
            if ((s = sample_word(t, &m, rng, w)) != TG_OK) {
                fprintf(stderr, PROG ": sampling failed: %s\n", tg_tape_error(t));
                goto done;
            }
            printf(" %s", w);
        }
        printf("\n");
    }
    rc = 0;
    if (o.bar > 0 && !(last_held <= o.bar)) {
        fprintf(stderr, PROG ": held-out loss %.4f is above --max-loss %.4f\n", last_held, o.bar);
        rc = 1;
    }
done:
    tg_optim_free(opt);
    tg_tape_free(t);
    tg_params_free(p);
    tg_rng_free(rng);
    free(tb);
    free(hb);
    free(idx);
    free(target);
    free(train.w);
    free(held.w);
    return rc;
}
