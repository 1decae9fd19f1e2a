/*
 * Fashion-MNIST: a 784-512-256-10 ReLU classifier (examples as rows, softmax cross-entropy)
 * trained with SGD, SGD with momentum, Adam or AdamW, with a checkpoint to stop and resume.
 *
 *   build/examples/fashion-mnist                                  # Adam, lr 1e-3, 5 epochs
 *   build/examples/fashion-mnist --optimizer momentum --lr 0.05 --epochs 10
 *   build/examples/fashion-mnist --epochs 2 --save ck.safetensors
 *   build/examples/fashion-mnist --epochs 5 --resume ck.safetensors   # epochs 3..5
 *
 * The data set is Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist/, the
 * four IDX files of the original distribution, gzip-compressed); --data DIR reads them from
 * elsewhere. Pixels are scaled to [0, 1]; nothing else is done to them.
 *
 * stderr: a progress bar per epoch (examples/s, running mean loss), redrawn in place on a
 * terminal and written once per epoch otherwise. stdout: one line per epoch (training loss,
 * test accuracy, time) and the totals.
 *
 * Determinism: the weights are drawn from --seed; epoch e's shuffle from its own generator
 * seeded by (--seed, e), so a run resumed at an epoch boundary draws the same batches as a run
 * that never stopped. The checkpoint (safetensors) holds the parameters, the optimizer state
 * ("optim/m/fc1/W", ..., "optim/step") and, as metadata, the epoch, the step and the
 * hyper-parameters; with the same flags and thread-count-independent kernels, "2 epochs, save,
 * resume for 3 more" ends with the same bits as "5 epochs".
 *
 * With --save the checkpoint is written (atomically) after every epoch.
 *
 * Exit status: 0 on success, 1 on a training or checkpoint error, 2 on bad flags, 77 when the
 * data set is not installed (the test-suite's "skip").
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <tapegrad/checkpoint.h>
#include <tapegrad/data.h>
#include <tapegrad/optim.h>
#include <tapegrad/runtime.h>
#include <tapegrad/tapegrad.h>

#define PROG "fashion-mnist"
#define DEFAULT_DATA "/usr/share/datasets/fashion-mnist"
#define FEATURES 784
#define CLASSES 10
#define EVAL_ROWS 1000

struct options {
    const char *data, *save, *resume, *optimizer, *schedule;
    long epochs, threads, limit, warmup;
    long batch;
    double lr; /* NAN: the optimizer's default */
    uint64_t seed;
    bool quiet;
};

struct model {
    tg_params *p;
    tg_dense fc1, fc2, fc3;
};

static double
now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void
usage(FILE *f)
{
    fprintf(f,
            "usage: " PROG " [--epochs N] [--batch B] [--lr ETA] [--optimizer sgd|momentum|adam|adamw]\n"
            "                     [--schedule constant|cosine] [--warmup STEPS] [--threads T]\n"
            "                     [--seed S] [--save PATH] [--resume PATH] [--data DIR] [--limit N]\n"
            "                     [--quiet]\n"
            "  --epochs N     total epochs (a resumed run continues up to N; default 8)\n"
            "  --batch B      examples per step (default 128)\n"
            "  --lr ETA       learning rate (default: sgd 0.1, momentum 0.05, adam/adamw 1e-3)\n"
            "  --optimizer    sgd | momentum (SGD, momentum 0.9) | adam | adamw (default adam)\n"
            "  --schedule     learning rate: constant, or cosine decay to 0 over all the epochs'\n"
            "                 steps (default cosine)\n"
            "  --warmup STEPS linear warm-up over the first STEPS steps (default 0)\n"
            "  --threads T    matrix-multiply threads (default: TG_NUM_THREADS or all CPUs)\n"
            "  --seed S       initialization and shuffling seed (default 1)\n"
            "  --save PATH    write a checkpoint after every epoch (safetensors)\n"
            "  --resume PATH  continue from a checkpoint written by --save\n"
            "  --data DIR     the four Fashion-MNIST IDX files (default " DEFAULT_DATA ")\n"
            "  --limit N      train on N examples per epoch (the first N of its shuffled order)\n"
            "  --quiet        no progress bar\n");
}

static bool
parse_long(const char *flag, const char *v, long lo, long *out)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo) {
        fprintf(stderr, PROG ": %s: \"%s\" is not an integer >= %ld\n", flag, v, lo);
        return false;
    }
    *out = x;
    return true;
}

static int
parse(int argc, char **argv, struct options *o)
{
    *o = (struct options){.data = DEFAULT_DATA, .optimizer = "adam", .schedule = "cosine",
                          .epochs = 8, .batch = 128, .lr = NAN, .seed = 1, .limit = -1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            exit(0);
        }
        if (!strcmp(a, "--quiet")) {
            o->quiet = true;
            continue;
        }
        const char *v = i + 1 < argc ? argv[++i] : NULL;
        if (!v || strncmp(a, "--", 2) != 0) {
            fprintf(stderr, PROG ": %s%s\n", a, v ? ": unknown argument" : " needs a value");
            return -1;
        }
        long n;
        bool ok = true;
        if (!strcmp(a, "--epochs"))
            ok = parse_long(a, v, 1, &o->epochs);
        else if (!strcmp(a, "--batch"))
            ok = parse_long(a, v, 1, &o->batch);
        else if (!strcmp(a, "--threads"))
            ok = parse_long(a, v, 1, &o->threads);
        else if (!strcmp(a, "--limit"))
            ok = parse_long(a, v, 1, &o->limit);
        else if (!strcmp(a, "--warmup"))
            ok = parse_long(a, v, 0, &o->warmup);
        else if (!strcmp(a, "--schedule")) {
            o->schedule = v;
            if (strcmp(v, "constant") && strcmp(v, "cosine")) {
                fprintf(stderr, PROG ": --schedule: \"%s\" is not constant or cosine\n", v);
                ok = false;
            }
        }
        else if (!strcmp(a, "--seed") && (ok = parse_long(a, v, 0, &n)))
            o->seed = (uint64_t)n;
        else if (!strcmp(a, "--lr")) {
            char *end;
            o->lr = strtod(v, &end);
            if (end == v || *end || !(o->lr > 0) || o->lr > 1e6) {
                fprintf(stderr, PROG ": --lr: \"%s\" is not a positive number\n", v);
                ok = false;
            }
        } else if (!strcmp(a, "--optimizer")) {
            o->optimizer = v;
            if (strcmp(v, "sgd") && strcmp(v, "momentum") && strcmp(v, "adam") &&
                strcmp(v, "adamw")) {
                fprintf(stderr, PROG ": --optimizer: \"%s\" is not sgd, momentum, adam or adamw\n",
                        v);
                ok = false;
            }
        } else if (!strcmp(a, "--save"))
            o->save = v;
        else if (!strcmp(a, "--resume"))
            o->resume = v;
        else if (!strcmp(a, "--data"))
            o->data = v;
        else if (ok) {
            fprintf(stderr, PROG ": %s: unknown flag\n", a);
            ok = false;
        }
        if (!ok)
            return -1;
    }
    return 0;
}

static tg_optim_options
optim_options(const struct options *o, size_t n_train)
{
    tg_optim_options oo;
    if (!strcmp(o->optimizer, "adam") || !strcmp(o->optimizer, "adamw")) {
        oo = tg_optim_defaults(!strcmp(o->optimizer, "adam") ? TG_OPTIM_ADAM : TG_OPTIM_ADAMW);
    } else {
        oo = tg_optim_defaults(TG_OPTIM_SGD);
        oo.lr = 0.1;
        if (!strcmp(o->optimizer, "momentum"))
            oo.momentum = 0.9, oo.lr = 0.05;
    }
    if (!isnan(o->lr))
        oo.lr = o->lr;
    long steps_per_epoch = (long)((n_train + (size_t)o->batch - 1) / (size_t)o->batch);
    oo.schedule.warmup_steps = o->warmup;
    if (!strcmp(o->schedule, "cosine")) {
        oo.schedule.kind = TG_SCHEDULE_COSINE;
        oo.schedule.total_steps = o->epochs * steps_per_epoch;
    }
    return oo;
}

/* ---------------------------------------------------------------------------------------
 * Data.
 */

/* 0, 77 when a file is missing (message names the package), 1 on a malformed file. */
static int
load(const char *dir, const char *images, const char *labels, tg_dataset *ds)
{
    char ip[4096], lp[4096];
    snprintf(ip, sizeof ip, "%s/%s", dir, images);
    snprintf(lp, sizeof lp, "%s/%s", dir, labels);
    const char *missing = access(ip, R_OK) ? ip : access(lp, R_OK) ? lp : NULL;
    if (missing) {
        fprintf(stderr,
                PROG ": cannot read %s: %s\n"
                "  The Fashion-MNIST data set is not installed. On Debian/Ubuntu:\n"
                "      apt-get install dataset-fashion-mnist   (or tools/install-deps.sh --all)\n"
                "  or pass --data DIR with train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,\n"
                "  t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz.\n",
                missing, strerror(errno));
        return 77;
    }
    tg_idx_options idx = {.dtype = TG_F32, .scale_to_unit = true};
    if (tg_dataset_load_idx(ds, ip, lp, &idx) != TG_OK) {
        fprintf(stderr, PROG ": %s\n", tg_dataset_error(ds));
        return 1;
    }
    if (tg_dataset_features(ds) != FEATURES || tg_dataset_num_classes(ds) > CLASSES) {
        fprintf(stderr, PROG ": %s: expected 28x28 images and labels 0..9, got %zu features and %d "
                        "classes\n",
                ip, tg_dataset_features(ds), (int)tg_dataset_num_classes(ds));
        return 1;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------
 * Model.
 */

static tg_tensor *
forward(tg_tape *t, const struct model *md, const float *x, int64_t rows)
{
    tg_tensor *X = tg_tensor_wrap(t, TG_F32, 2, (int64_t[]){rows, FEATURES}, (void *)x, "x");
    tg_tensor *a1 = tg_dense_forward(t, &md->fc1, X);
    tg_tensor *a2 = tg_dense_forward(t, &md->fc2, a1);
    return tg_dense_forward(t, &md->fc3, a2); /* scores (rows x 10) */
}

/* Test accuracy in [0, 1], or -1 with the tape's error printed. */
static double
evaluate(tg_tape *t, const struct model *md, const tg_dataset *test)
{
    const float *x = tg_dataset_data(test);
    const int32_t *y = tg_dataset_labels(test);
    size_t n = tg_dataset_count(test), correct = 0;
    for (size_t i = 0; i < n; i += EVAL_ROWS) {
        size_t rows = n - i < EVAL_ROWS ? n - i : EVAL_ROWS;
        tg_tape_reset(t);
        tg_tensor *s = forward(t, md, x + i * FEATURES, (int64_t)rows);
        if (tg_tape_error(t)) {
            fprintf(stderr, PROG ": evaluation: %s\n", tg_tape_error(t));
            return -1;
        }
        const float *sc = tg_tensor_data(s);
        for (size_t r = 0; r < rows; r++) {
            int best = 0;
            for (int c = 1; c < CLASSES; c++)
                if (sc[r * CLASSES + c] > sc[r * CLASSES + best])
                    best = c;
            correct += best == y[i + r];
        }
    }
    return (double)correct / (double)n;
}

/* ---------------------------------------------------------------------------------------
 * Progress bar: "epoch 2/5 [#######.......]  43% 25600/60000  5210 ex/s  loss 0.4213".
 */

struct progress {
    bool tty, quiet;
    double t0, last_draw;
};

static void
progress_draw(struct progress *pr, long epoch, long epochs, size_t done, size_t total,
              double loss, bool final)
{
    if (pr->quiet || (!pr->tty && !final))
        return;
    double t = now();
    if (!final && t - pr->last_draw < 0.1)
        return;
    pr->last_draw = t;
    enum { WIDTH = 30 };
    int fill = total ? (int)(WIDTH * done / total) : WIDTH;
    char bar[WIDTH + 1];
    for (int i = 0; i < WIDTH; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[WIDTH] = '\0';
    double rate = t > pr->t0 ? (double)done / (t - pr->t0) : 0;
    fprintf(stderr, "%sepoch %ld/%ld [%s] %3d%% %zu/%zu  %.0f ex/s  loss %.4f%s",
            pr->tty ? "\r" : "", epoch, epochs, bar, total ? (int)(100 * done / total) : 100, done,
            total, rate, loss, final ? "\n" : "");
    fflush(stderr);
}

/* ---------------------------------------------------------------------------------------
 * Checkpoints: parameters + optimizer state + metadata.
 */

static tg_status
meta_long(tg_state_dict *sd, const char *key, long v)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%ld", v);
    return tg_state_dict_set_metadata(sd, key, buf);
}

static tg_status
save(tg_state_dict *sd, const struct options *o, const tg_optim *opt, long epoch)
{
    char lr[32], seed[32];
    snprintf(lr, sizeof lr, "%.17g", tg_optim_options_get(opt)->lr);
    snprintf(seed, sizeof seed, "%" PRIu64, o->seed);
    tg_status s = TG_OK;
    if (!s)
        s = tg_state_dict_set_metadata(sd, "format", "tapegrad/fashion-mnist/1");
    if (!s)
        s = meta_long(sd, "epoch", epoch);
    if (!s)
        s = meta_long(sd, "step", tg_optim_steps(opt));
    if (!s)
        s = tg_state_dict_set_metadata(sd, "optimizer", o->optimizer);
    if (!s)
        s = tg_state_dict_set_metadata(sd, "lr", lr);
    if (!s)
        s = meta_long(sd, "batch", o->batch);
    if (!s)
        s = tg_state_dict_set_metadata(sd, "seed", seed);
    if (!s)
        s = meta_long(sd, "limit", o->limit);
    if (!s)
        s = tg_state_dict_set_metadata(sd, "schedule", o->schedule);
    if (!s)
        s = meta_long(sd, "warmup", o->warmup);
    if (!s)
        s = meta_long(sd, "epochs", o->epochs);
    if (!s)
        s = tg_state_dict_save(sd, o->save);
    if (s)
        fprintf(stderr, PROG ": save: %s\n", tg_state_dict_error(sd));
    return s;
}

/* Loads o->resume into the registered tensors; returns the completed epochs, or -1. */
static long
resume(tg_state_dict *sd, const struct options *o, const tg_optim *opt)
{
    /* The metadata first, for a clear message when the file is from another run or program
     * (the strict load would only list the tensors that do not match). */
    tg_checkpoint *ck = tg_checkpoint_open(o->resume);
    if (!ck || tg_checkpoint_status(ck) != TG_OK) {
        fprintf(stderr, PROG ": resume: %s\n", ck ? tg_checkpoint_error(ck) : "out of memory");
        tg_checkpoint_free(ck);
        return -1;
    }
    const char *fmt = tg_checkpoint_metadata_get(ck, "format");
    const char *kind = tg_checkpoint_metadata_get(ck, "optimizer");
    bool ours = fmt && !strcmp(fmt, "tapegrad/fashion-mnist/1");
    if (!ours)
        fprintf(stderr, PROG ": resume \"%s\": not a checkpoint of this program (metadata "
                        "format \"%s\")\n",
                o->resume, fmt ? fmt : "(none)");
    else if (!kind || strcmp(kind, o->optimizer))
        fprintf(stderr, PROG ": resume \"%s\": saved with --optimizer %s, this run has %s\n",
                o->resume, kind ? kind : "(none)", o->optimizer);
    bool ok = ours && kind && !strcmp(kind, o->optimizer);
    tg_checkpoint_free(ck);
    if (!ok)
        return -1;

    if (tg_state_dict_load(sd, o->resume, TG_LOAD_CHECK_FINITE) != TG_OK) {
        fprintf(stderr, PROG ": resume: %s\n", tg_state_dict_error(sd));
        return -1;
    }
    const char *ep = tg_state_dict_metadata(sd, "epoch");
    char *end = NULL;
    long epoch = ep ? strtol(ep, &end, 10) : -1;
    if (!ep || *end || epoch < 0) {
        fprintf(stderr, PROG ": resume \"%s\": metadata epoch \"%s\" is not a count\n",
                o->resume, ep ? ep : "(none)");
        return -1;
    }
    /* Different batch size, seed, rate or subset: allowed, but no longer the straight run. */
    /* (--epochs sets the cosine schedule's length, so it matters too.) */
    char want[7][32];
    snprintf(want[0], 32, "%ld", o->batch);
    snprintf(want[1], 32, "%" PRIu64, o->seed);
    snprintf(want[2], 32, "%.17g", tg_optim_options_get(opt)->lr);
    snprintf(want[3], 32, "%ld", o->limit);
    snprintf(want[4], 32, "%s", o->schedule);
    snprintf(want[5], 32, "%ld", o->warmup);
    snprintf(want[6], 32, "%ld", o->epochs);
    const char *keys[7] = {"batch", "seed", "lr", "limit", "schedule", "warmup", "epochs"};
    for (int i = 0; i < 7; i++) {
        if (i == 6 && strcmp(o->schedule, "cosine"))
            break;
        const char *v = tg_state_dict_metadata(sd, keys[i]);
        if (!v || strcmp(v, want[i]))
            fprintf(stderr, PROG ": note: resuming with %s %s (checkpoint: %s); the run will "
                            "differ from an uninterrupted one\n",
                    keys[i], want[i], v ? v : "(none)");
    }
    return epoch;
}

/* ---------------------------------------------------------------------------------------
 * Training.
 */

static int
run(const struct options *o)
{
    double t_start = now();
    tg_dataset *train = tg_dataset_new(), *test = tg_dataset_new();
    if (!train || !test) {
        fprintf(stderr, PROG ": out of memory\n");
        tg_dataset_free(train);
        tg_dataset_free(test);
        return 1;
    }
    int rc = load(o->data, "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", train);
    if (!rc)
        rc = load(o->data, "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", test);
    if (rc) {
        tg_dataset_free(train);
        tg_dataset_free(test);
        return rc;
    }
    size_t n_train = tg_dataset_count(train);
    if (o->limit > 0 && (size_t)o->limit < n_train)
        n_train = (size_t)o->limit;

    struct model md = {.p = tg_params_new(TG_F32)};
    tg_rng *init = tg_rng_new(o->seed);
    tg_dense_init(&md.fc1, md.p, "fc1", FEATURES, 512, TG_ACT_RELU, TG_EXAMPLES_AS_ROWS, init);
    tg_dense_init(&md.fc2, md.p, "fc2", 512, 256, TG_ACT_RELU, TG_EXAMPLES_AS_ROWS, init);
    tg_dense_init(&md.fc3, md.p, "fc3", 256, CLASSES, TG_ACT_IDENTITY, TG_EXAMPLES_AS_ROWS, init);
    tg_rng_free(init);
    tg_optim_options oo = optim_options(o, n_train);
    const char *err = NULL;
    tg_optim *opt = tg_params_status(md.p) == TG_OK ? tg_optim_new(md.p, &oo, &err) : NULL;
    tg_state_dict *sd = tg_state_dict_new();
    tg_tape *t = tg_tape_new();
    rc = 1;
    long first_epoch = 1;
    if (tg_params_status(md.p) != TG_OK)
        fprintf(stderr, PROG ": model: %s\n", tg_params_error(md.p));
    else if (!opt)
        fprintf(stderr, PROG ": optimizer: %s\n", err);
    else if (!sd || !t)
        fprintf(stderr, PROG ": out of memory\n");
    else if (tg_state_dict_add_params(sd, "", md.p) != TG_OK ||
             tg_optim_add_to_state_dict(opt, sd, "optim/") != TG_OK)
        fprintf(stderr, PROG ": checkpoint: %s\n",
                tg_state_dict_error(sd) ? tg_state_dict_error(sd) : tg_optim_error(opt));
    else if (o->resume)
        rc = (first_epoch = resume(sd, o, opt) + 1) < 1;
    else
        rc = 0;

    if (!rc) {
        printf("fashion-mnist: 784-512-256-10 ReLU, %zu parameters; %zu training / %zu test "
               "images\n",
               tg_params_size(md.p), n_train, tg_dataset_count(test));
        printf("optimizer %s, lr %g (%s schedule, %ld warm-up steps), batch %ld, seed %" PRIu64
               ", %d thread%s, kernel %s\n",
               o->optimizer, oo.lr, o->schedule, o->warmup, o->batch, o->seed, tg_num_threads(),
               tg_num_threads() == 1 ? "" : "s", tg_kernel_name());
        if (o->resume)
            printf("resumed from %s after epoch %ld (step %ld)\n", o->resume, first_epoch - 1,
                   tg_optim_steps(opt));
        fflush(stdout);
    }

    struct progress pr = {.tty = isatty(STDERR_FILENO), .quiet = o->quiet};
    double train_seconds = 0, accuracy = -1;
    long epochs_run = 0;
    for (long epoch = first_epoch; !rc && epoch <= o->epochs; epoch++) {
        /* Epoch e's order comes from its own generator: the same with or without a resume. */
        tg_rng *order = tg_rng_new(o->seed ^ (0x9E3779B97F4A7C15ull * (uint64_t)epoch));
        tg_batcher *b = order ? tg_batcher_new(train, (size_t)o->batch, TG_EXAMPLES_AS_ROWS,
                                               false, order, &err)
                              : NULL;
        if (!b) {
            fprintf(stderr, PROG ": batcher: %s\n", order ? err : "out of memory");
            tg_rng_free(order);
            rc = 1;
            break;
        }
        pr.t0 = now();
        pr.last_draw = 0;
        double loss_sum = 0;
        size_t seen = 0;
        tg_batch batch;
        while (!rc && seen < n_train && tg_batcher_next(b, &batch)) {
            /* With --limit, skip examples beyond it (the batcher walks the whole set). */
            size_t rows = batch.size;
            if (seen + rows > n_train)
                rows = n_train - seen;
            tg_tape_reset(t);
            tg_tensor *scores = forward(t, &md, batch.x, (int64_t)rows);
            tg_tensor *loss = tg_softmax_xent(t, scores, batch.labels, rows, 1);
            tg_backward(t, loss);
            if (tg_tape_error(t)) {
                fprintf(stderr, "\n" PROG ": epoch %ld, step %ld: %s\n", epoch,
                        tg_optim_steps(opt), tg_tape_error(t));
                rc = 1;
            } else if (tg_optim_step(opt) != TG_OK) {
                fprintf(stderr, "\n" PROG ": %s\n", tg_optim_error(opt));
                rc = 1;
            }
            loss_sum += tg_tensor_item(loss) * (double)rows;
            seen += rows;
            progress_draw(&pr, epoch, o->epochs, seen, n_train, loss_sum / (double)seen, false);
        }
        tg_batcher_free(b);
        tg_rng_free(order);
        if (rc)
            break;
        double secs = now() - pr.t0;
        progress_draw(&pr, epoch, o->epochs, seen, n_train, loss_sum / (double)seen, true);
        train_seconds += secs;
        epochs_run++;
        accuracy = evaluate(t, &md, test);
        if (accuracy < 0) {
            rc = 1;
            break;
        }
        printf("epoch %ld/%ld: train loss %.4f  test accuracy %.2f%%  %.1f s (%.0f examples/s)\n",
               epoch, o->epochs, loss_sum / (double)seen, 100 * accuracy, secs,
               (double)seen / secs);
        fflush(stdout);
        if (o->save && save(sd, o, opt, epoch) != TG_OK)
            rc = 1;
    }
    if (!rc) {
        if (epochs_run == 0)
            printf("nothing to do: the checkpoint has %ld epochs, --epochs is %ld\n",
                   first_epoch - 1, o->epochs);
        else
            printf("total %.1f s (training %.1f s, %.0f examples/s); final test accuracy %.2f%%\n",
                   now() - t_start, train_seconds,
                   (double)n_train * (double)epochs_run / train_seconds, 100 * accuracy);
        if (o->save && epochs_run > 0)
            printf("saved %s\n", o->save);
    }
    tg_tape_free(t);
    tg_state_dict_free(sd);
    tg_optim_free(opt);
    tg_params_free(md.p);
    tg_dataset_free(train);
    tg_dataset_free(test);
    return rc;
}

int
main(int argc, char **argv)
{
    struct options o;
    if (parse(argc, argv, &o) != 0) {
        usage(stderr);
        return 2;
    }
    if (o.threads > 0 && tg_set_num_threads((int)o.threads) != TG_OK) {
        fprintf(stderr, PROG ": --threads %ld: invalid\n", o.threads);
        return 2;
    }
    return run(&o);
}
