/*
 * Fashion-MNIST with a small CNN, the network of examples/fashion_mnist_cnn_torch.py:
 *
 *   conv 1->32 3x3 (padding 1), batch norm, ReLU, 2x2 max pool      (32 x 14 x 14)
 *   conv 32->64 3x3 (padding 1), batch norm, ReLU, 2x2 max pool     (64 x 7 x 7)
 *   dropout 0.25, dense 3136->128, ReLU, dropout 0.25, dense 128->10
 *   softmax cross-entropy, Adam (lr 1e-3) with a cosine schedule over all steps, batch 64
 *
 *   build/examples/fashion-mnist-cnn                          # 15 epochs
 *   build/examples/fashion-mnist-cnn --epochs 2 --save cnn.safetensors
 *   build/examples/fashion-mnist-cnn --verify cnn.safetensors # a fresh process, same logits
 *
 * Training runs in training mode (batch statistics, dropout on), evaluation in evaluation
 * mode (running statistics, dropout off): tg_tape_set_training. The checkpoint holds the
 * parameters, the batch-norm buffers and, as "check/logits", the evaluation logits of the
 * first 256 test images; --verify loads it into a fresh model, recomputes those logits and
 * exits 0 only when every bit matches.
 *
 * stderr: a progress line per epoch; stdout: per epoch the training loss, test accuracy and
 * time. Exit status: 0, 1 on an error (or a --verify mismatch), 2 on bad flags, 77 when the
 * data set is not installed.
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

#define PROG "fashion-mnist-cnn"
#define DEFAULT_DATA "/usr/share/datasets/fashion-mnist"
#define CLASSES 10
#define EVAL_ROWS 500
#define CHECK_ROWS 256

struct options {
    const char *data, *save, *verify;
    long epochs, batch, limit, threads;
    double lr;
    uint64_t seed;
    bool quiet;
};

struct model {
    tg_params *p;
    tg_conv2d_layer conv1, conv2;
    tg_batch_norm_layer bn1, bn2;
    tg_dense fc1, fc2;
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
    *o = (struct options){.data = DEFAULT_DATA, .epochs = 15, .batch = 64, .lr = 1e-3, .seed = 1,
                          .limit = -1};
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
        if (!strcmp(a, "--epochs") && number)
            o->epochs = n;
        else if (!strcmp(a, "--batch") && number)
            o->batch = n;
        else if (!strcmp(a, "--limit") && number)
            o->limit = n;
        else if (!strcmp(a, "--threads") && number)
            o->threads = n;
        else if (!strcmp(a, "--seed") && v && end != v && !*end && n >= 0)
            o->seed = (uint64_t)n;
        else if (!strcmp(a, "--lr") && (o->lr = strtod(v, &end)) > 0 && !*end)
            ;
        else if (!strcmp(a, "--save"))
            o->save = v;
        else if (!strcmp(a, "--verify"))
            o->verify = v;
        else if (!strcmp(a, "--data"))
            o->data = v;
        else
            return fprintf(stderr, PROG ": %s %s: unknown flag or bad value\n", a, v), -1;
    }
    return 0;
}

/* 0, 77 when a file is missing, 1 when malformed */
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
                "      apt-get install dataset-fashion-mnist   (or tools/install-deps.sh --all)\n",
                missing, strerror(errno));
        return 77;
    }
    tg_idx_options idx = {.dtype = TG_F32, .scale_to_unit = true};
    if (tg_dataset_load_idx(ds, ip, lp, &idx) != TG_OK || tg_dataset_features(ds) != 784) {
        fprintf(stderr, PROG ": %s: %s\n", ip,
                tg_dataset_error(ds) ? tg_dataset_error(ds) : "expected 28x28 images");
        return 1;
    }
    return 0;
}

static tg_status
model_init(struct model *m, uint64_t seed)
{
    m->p = tg_params_new(TG_F32);
    tg_rng *r = tg_rng_new(seed);
    tg_conv_options same = tg_conv_defaults();
    same.padding[0] = same.padding[1] = 1;
    tg_conv2d_layer_init(&m->conv1, m->p, "conv1", 1, 32, 3, 3, &same, true, r);
    tg_batch_norm_layer_init(&m->bn1, m->p, "bn1", 32);
    tg_conv2d_layer_init(&m->conv2, m->p, "conv2", 32, 64, 3, 3, &same, true, r);
    tg_batch_norm_layer_init(&m->bn2, m->p, "bn2", 64);
    tg_dense_init(&m->fc1, m->p, "fc1", 64 * 7 * 7, 128, TG_ACT_RELU, TG_EXAMPLES_AS_ROWS, r);
    tg_dense_init(&m->fc2, m->p, "fc2", 128, CLASSES, TG_ACT_IDENTITY, TG_EXAMPLES_AS_ROWS, r);
    m->bn1.act = m->bn2.act = TG_ACT_RELU; /* batch norm and ReLU as one node each */
    tg_rng_free(r);
    return tg_params_status(m->p);
}

/* The logits (rows x 10) of `rows` images; dropout draws from rng (training mode only). */
static tg_tensor *
forward(tg_tape *t, const struct model *m, const float *x, int64_t rows, tg_rng *rng)
{
    static const int64_t pool[2] = {2, 2};
    tg_tensor *h = tg_tensor_wrap(t, TG_F32, 4, (int64_t[]){rows, 1, 28, 28}, (void *)x, "x");
    h = tg_conv2d_layer_forward(t, &m->conv1, h);
    h = tg_max_pool2d(t, tg_batch_norm_layer_forward(t, &m->bn1, h), pool, NULL, NULL);
    h = tg_conv2d_layer_forward(t, &m->conv2, h);
    h = tg_max_pool2d(t, tg_batch_norm_layer_forward(t, &m->bn2, h), pool, NULL, NULL);
    h = tg_dropout(t, tg_reshape(t, h, 2, (int64_t[]){rows, 64 * 7 * 7}), 0.25, rng);
    h = tg_dropout(t, tg_dense_forward(t, &m->fc1, h), 0.25, rng);
    return tg_dense_forward(t, &m->fc2, h);
}

/* Evaluation-mode logits of the first n test images into out (n x 10); false on error. */
static bool
logits(tg_tape *t, const struct model *m, const tg_dataset *test, size_t n, float *out)
{
    const float *x = tg_dataset_data(test);
    tg_tape_set_training(t, false);
    for (size_t i = 0; i < n; i += EVAL_ROWS) {
        size_t rows = n - i < EVAL_ROWS ? n - i : EVAL_ROWS;
        tg_tape_reset(t);
        tg_tensor *s = forward(t, m, x + i * 784, (int64_t)rows, NULL);
        if (tg_tape_error(t)) {
            fprintf(stderr, PROG ": evaluation: %s\n", tg_tape_error(t));
            tg_tape_set_training(t, true);
            return false;
        }
        memcpy(out + i * CLASSES, tg_tensor_data(s), rows * CLASSES * sizeof *out);
    }
    tg_tape_set_training(t, true);
    return true;
}

static double
accuracy(const float *scores, const int32_t *y, size_t n)
{
    size_t right = 0;
    for (size_t r = 0; r < n; r++) {
        int best = 0;
        for (int c = 1; c < CLASSES; c++)
            if (scores[r * CLASSES + c] > scores[r * CLASSES + best])
                best = c;
        right += best == y[r];
    }
    return (double)right / (double)n;
}

/* --verify: a fresh model from the checkpoint must give the saved logits, bit for bit. */
static int
verify(const struct options *o, const tg_dataset *test)
{
    struct model m;
    if (model_init(&m, 12345) != TG_OK) /* other initial weights: the file must replace them */
        return 1;
    static float saved[CHECK_ROWS * CLASSES], fresh[CHECK_ROWS * CLASSES];
    tg_state_dict *sd = tg_state_dict_new();
    tg_state_dict_add_params(sd, "", m.p);
    tg_state_dict_add_buffer(sd, "check/logits", TG_F32, 2, (int64_t[]){CHECK_ROWS, CLASSES},
                             saved);
    tg_tape *t = tg_tape_new();
    int rc = 1;
    if (tg_state_dict_load(sd, o->verify, 0) != TG_OK)
        fprintf(stderr, PROG ": verify: %s\n", tg_state_dict_error(sd));
    else if (logits(t, &m, test, CHECK_ROWS, fresh)) {
        size_t diff = 0;
        for (size_t i = 0; i < CHECK_ROWS * CLASSES; i++)
            diff += memcmp(&saved[i], &fresh[i], sizeof saved[i]) != 0;
        printf("verify %s: %zu of %d logits differ from the saved ones (bit for bit)\n",
               o->verify, diff, CHECK_ROWS * CLASSES);
        rc = diff != 0;
    }
    tg_tape_free(t);
    tg_state_dict_free(sd);
    tg_params_free(m.p);
    return rc;
}

static int
train(const struct options *o, const tg_dataset *train_set, const tg_dataset *test)
{
    struct model m;
    if (model_init(&m, o->seed) != TG_OK) {
        fprintf(stderr, PROG ": model: %s\n", tg_params_error(m.p));
        return 1;
    }
    size_t n_train = tg_dataset_count(train_set);
    if (o->limit > 0 && (size_t)o->limit < n_train)
        n_train = (size_t)o->limit;
    long steps = (long)((n_train + (size_t)o->batch - 1) / (size_t)o->batch) * o->epochs;
    tg_optim_options oo = tg_optim_defaults(TG_OPTIM_ADAM);
    oo.lr = o->lr;
    oo.schedule.kind = TG_SCHEDULE_COSINE;
    oo.schedule.total_steps = steps;
    const char *err = NULL;
    tg_optim *opt = tg_optim_new(m.p, &oo, &err);
    if (!opt) {
        fprintf(stderr, PROG ": optimizer: %s\n", err);
        tg_params_free(m.p);
        return 1;
    }
    printf(PROG ": conv 32, conv 64, dense 128, %zu parameters; %zu training / %zu test images; "
           "Adam lr %g cosine, batch %ld, %d thread%s\n",
           tg_params_size(m.p), n_train, tg_dataset_count(test), o->lr, o->batch,
           tg_num_threads(), tg_num_threads() == 1 ? "" : "s");
    fflush(stdout);
    tg_tape *t = tg_tape_new();
    tg_tape_set_retain_grads(t, false); /* only the parameters' gradients are read */
    tg_rng *drop = tg_rng_new(o->seed + 1);
    size_t n_test = tg_dataset_count(test);
    float *scores = malloc(n_test * CLASSES * sizeof *scores);
    int rc = scores ? 0 : 1;
    double acc = 0, t_train = 0;
    for (long epoch = 1; !rc && epoch <= o->epochs; epoch++) {
        tg_rng *order = tg_rng_new(o->seed ^ (0x9E3779B97F4A7C15ull * (uint64_t)epoch));
        tg_batcher *b = tg_batcher_new(train_set, (size_t)o->batch, TG_EXAMPLES_AS_ROWS, false,
                                       order, &err);
        double t0 = now(), loss_sum = 0;
        size_t seen = 0;
        tg_batch batch;
        while (!rc && b && seen < n_train && tg_batcher_next(b, &batch)) {
            size_t rows = seen + batch.size > n_train ? n_train - seen : batch.size;
            tg_tape_reset(t);
            tg_tensor *loss = tg_cross_entropy(t, forward(t, &m, batch.x, (int64_t)rows, drop),
                                               batch.labels, rows, 1, NULL, 0.0);
            tg_backward(t, loss);
            if (tg_tape_error(t) || tg_optim_step(opt) != TG_OK) {
                fprintf(stderr, PROG ": epoch %ld: %s\n", epoch,
                        tg_tape_error(t) ? tg_tape_error(t) : tg_optim_error(opt));
                rc = 1;
            }
            loss_sum += tg_tensor_item(loss) * (double)rows;
            seen += rows;
            if (!o->quiet && isatty(STDERR_FILENO))
                fprintf(stderr, "\repoch %ld/%ld  %zu/%zu  loss %.4f  %.0f images/s", epoch,
                        o->epochs, seen, n_train, loss_sum / (double)seen,
                        (double)seen / (now() - t0));
        }
        if (!b) {
            fprintf(stderr, PROG ": batcher: %s\n", err);
            rc = 1;
        }
        tg_batcher_free(b);
        tg_rng_free(order);
        double secs = now() - t0;
        t_train += secs;
        if (!o->quiet && isatty(STDERR_FILENO))
            fprintf(stderr, "\n");
        if (rc || !logits(t, &m, test, n_test, scores)) {
            rc = 1;
            break;
        }
        acc = accuracy(scores, tg_dataset_labels(test), n_test);
        printf("epoch %ld/%ld: train loss %.4f  test accuracy %.2f%%  %.1f s (%.0f images/s)\n",
               epoch, o->epochs, loss_sum / (double)seen, 100 * acc, secs, (double)seen / secs);
        fflush(stdout);
    }
    if (!rc)
        printf("training %.1f s; final test accuracy %.2f%%\n", t_train, 100 * acc);
    if (!rc && o->save) {
        /* the parameters, the running statistics, and the logits --verify must reproduce */
        tg_state_dict *sd = tg_state_dict_new();
        tg_state_dict_add_params(sd, "", m.p);
        tg_state_dict_add_buffer(sd, "check/logits", TG_F32, 2,
                                 (int64_t[]){CHECK_ROWS, CLASSES}, scores);
        tg_state_dict_set_metadata(sd, "format", "tapegrad/fashion-mnist-cnn/1");
        if (n_test < CHECK_ROWS || tg_state_dict_save(sd, o->save) != TG_OK) {
            fprintf(stderr, PROG ": save: %s\n",
                    n_test < CHECK_ROWS ? "fewer test images than the check needs"
                                        : tg_state_dict_error(sd));
            rc = 1;
        } else {
            printf("saved %s\n", o->save);
        }
        tg_state_dict_free(sd);
    }
    free(scores);
    tg_rng_free(drop);
    tg_tape_free(t);
    tg_optim_free(opt);
    tg_params_free(m.p);
    return rc;
}

int
main(int argc, char **argv)
{
    struct options o;
    if (parse(argc, argv, &o) != 0) {
        fprintf(stderr, "usage: " PROG " [--epochs N] [--batch B] [--lr ETA] [--seed S] "
                        "[--limit N] [--threads T] [--save PATH] [--verify PATH] [--data DIR] "
                        "[--quiet]\n");
        return 2;
    }
    if (o.threads > 0 && tg_set_num_threads((int)o.threads) != TG_OK)
        return 2;
    tg_dataset *train_set = tg_dataset_new(), *test = tg_dataset_new();
    int rc = load(o.data, "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", test);
    if (!rc && !o.verify)
        rc = load(o.data, "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", train_set);
    if (!rc)
        rc = o.verify ? verify(&o, test) : train(&o, train_set, test);
    tg_dataset_free(train_set);
    tg_dataset_free(test);
    return rc;
}
