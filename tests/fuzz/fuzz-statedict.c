/*
 * Fuzz target: layer helpers and state dicts, loading a PyTorch-shaped state dict.
 *
 * The input is a model description (the first SPEC_BYTES bytes) and a safetensors blob (the
 * rest). The description picks a dtype, a name prefix and up to MAX_ITEMS items: layers from
 * the helpers (tg_dense_init: "<name>/W", "<name>/b"; tg_conv2d_layer_init; tg_batch_norm_
 * layer_init, whose running statistics are buffers) and parameters or buffers named the way
 * PyTorch's state_dict() names them ("fc1.weight" (out x in), "fc1.bias" (out),
 * "bn.running_mean", "bn.num_batches_tracked" (a scalar)), from a table of names (dotted,
 * slashed, unicode, empty, long) and small shapes (0 to 8 per axis). The set is registered in
 * a state dict, maybe twice or under a second prefix, with a raw buffer beside it, and the
 * blob is loaded into that state dict.
 *
 * Invariants:
 *   - building: a layer helper that fails adds nothing (parameter and buffer counts and the
 *     size unchanged), and a failed tg_params_add / tg_params_add_buffer neither;
 *   - a failed load sets a non-empty message and leaves every parameter value, every gradient,
 *     every buffer of the set and the raw buffer bitwise unchanged (all-or-nothing), and the
 *     set's own status untouched;
 *   - a successful load, saved again and loaded back strictly into the same state dict,
 *     reproduces the loaded values and buffers bitwise (save and load agree on names, shapes
 *     and bytes), and the layers then run forward on a tape.
 * Crashes, leaks and hangs are the sanitizers' and libFuzzer's to report.
 *
 * Seeds (corpus/statedict/) are the description followed by a file this model saved, or by a
 * reference file of safetensors' own samples for a model of matching names.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <tapegrad/checkpoint.h>
#include <tapegrad/tapegrad.h>

#define FUZZ_TARGET "fuzz-statedict"
#define FUZZ_FILE_NAME "tg-fuzz-sd-%ld.safetensors"
#include "fuzz-file.h"

enum { SPEC_BYTES = 32, MAX_ITEMS = 9, MAX_LAYERS = MAX_ITEMS };

/* Module names: PyTorch's dotted paths, tapegrad's slashes, names that collide once a suffix
 * is added ("fc1/W" as a layer name gives "fc1/W/W"), the reference samples' "f" and "d",
 * non-ASCII, empty, and one long enough that "<name>/W" passes the 256-byte limit. */
static const char *const module_names[] = {
    "fc1", "fc2", "fc3", "layers.0", "encoder.layers.1.linear", "f", "d", "fc1/W",
    "caf\xc3\xa9", "", "module.fc1", "a\"b\\c", "bn", "head", "x\x01y", NULL, /* long */
};
enum { N_MODULE_NAMES = sizeof module_names / sizeof module_names[0] };
static char long_name[256];

static const char *const prefixes[] = {"", "model.", "module.", "optim/m/", NULL /* long */};
enum { N_PREFIXES = sizeof prefixes / sizeof prefixes[0] };
static char long_prefix[1100];

static const char *
module_name(unsigned b)
{
    const char *n = module_names[b % N_MODULE_NAMES];
    return n ? n : long_name;
}

static const char *
prefix_of(unsigned b)
{
    const char *p = prefixes[b % N_PREFIXES];
    return p ? p : long_prefix;
}

/* memcpy, memset and memcmp for buffers that may be empty (an empty set has no values: NULL) */
static void
copy(void *d, const void *src, size_t n)
{
    if (n)
        memcpy(d, src, n);
}
static void
fill(void *d, int c, size_t n)
{
    if (n)
        memset(d, c, n);
}
static bool
same(const void *a, const void *b, size_t n)
{
    return n == 0 || memcmp(a, b, n) == 0;
}

struct model {
    tg_params *p;
    tg_dense dense[MAX_ITEMS];
    tg_conv2d_layer conv[MAX_ITEMS];
    tg_batch_norm_layer bn[MAX_ITEMS];
    int n_dense, n_conv, n_bn;
    tg_state_dict *sd;
    double buffer[4];
    size_t buffer_n; /* elements of buffer registered (0: none) */
};

/* The set's counts, to check that a refused add or layer left it as it was. */
struct counts {
    size_t params, buffers, size;
};
static struct counts
counts_of(const tg_params *p)
{
    return (struct counts){tg_params_count(p), tg_params_buffer_count(p), tg_params_size(p)};
}
static void
check_unchanged(const tg_params *p, struct counts c)
{
    struct counts now = counts_of(p);
    CHECK(now.params == c.params && now.buffers == c.buffers && now.size == c.size);
}

/* A parameter, or a buffer when `buffer`; a refusal must change nothing. */
static void
add(tg_params *p, bool buffer, const char *name, int ndim, const int64_t *dims)
{
    struct counts c = counts_of(p);
    tg_tensor *x = buffer ? tg_params_add_buffer(p, name, ndim, dims)
                          : tg_params_add(p, name, ndim, dims);
    if (!x)
        check_unchanged(p, c);
}

/* Builds the model of the description; every failure along the way must be atomic. */
static void
build(struct model *m, const uint8_t *spec)
{
    tg_dtype dt = (spec[0] & 1) ? TG_F64 : TG_F32;
    m->p = tg_params_new(dt);
    m->sd = tg_state_dict_new();
    m->n_dense = m->n_conv = m->n_bn = 0;
    if (!m->p || !m->sd)
        return;
    tg_rng *rng = tg_rng_new(spec[1]);
    int n_items = spec[2] % (MAX_ITEMS + 1);
    for (int i = 0; i < n_items; i++) {
        const uint8_t *it = spec + 3 + 3 * i;
        const char *name = module_name(it[0] >> 3);
        int64_t a = it[1] % 9, b = it[2] % 9;
        struct counts c = counts_of(m->p);
        char full[1400];
        switch (it[0] & 7) {
        case 0: { /* a dense layer */
            tg_activation act = (tg_activation)((it[1] >> 4) % 7);
            tg_layout layout = (it[2] & 0x80) ? TG_EXAMPLES_AS_ROWS : TG_EXAMPLES_AS_COLUMNS;
            if (tg_dense_init(&m->dense[m->n_dense], m->p, name, a, b, act, layout, rng) == TG_OK)
                m->n_dense++;
            else
                check_unchanged(m->p, c);
            break;
        }
        case 1: { /* a conv2d layer (out, in, kh, kw), bias or not, maybe grouped */
            tg_conv_options o = tg_conv_defaults();
            o.groups = 1 + (it[1] >> 7);
            int64_t kh = 1 + (it[1] >> 4) % 3, kw = 1 + (it[2] >> 4) % 3;
            if (tg_conv2d_layer_init(&m->conv[m->n_conv], m->p, name, a % 5, b % 5, kh, kw, &o,
                                     it[2] & 0x80, rng) == TG_OK)
                m->n_conv++;
            else
                check_unchanged(m->p, c);
            break;
        }
        case 2: /* a batch-norm layer: W, b, and the buffers running_mean, running_var */
            if (tg_batch_norm_layer_init(&m->bn[m->n_bn], m->p, name, a) == TG_OK)
                m->n_bn++;
            else
                check_unchanged(m->p, c);
            break;
        case 3: /* PyTorch's Linear.weight: (out x in) */
            snprintf(full, sizeof full, "%s.weight", name);
            add(m->p, false, full, 2, (int64_t[]){b, a});
            break;
        case 4: /* Linear.bias (a parameter), BatchNorm's running_mean (a buffer): (n) */
            snprintf(full, sizeof full, "%s.%s", name, (it[1] & 0x80) ? "running_mean" : "bias");
            add(m->p, it[1] & 0x80, full, 1, (int64_t[]){a});
            break;
        case 5: /* BatchNorm's num_batches_tracked: a scalar buffer (or parameter) */
            snprintf(full, sizeof full, "%s.num_batches_tracked", name);
            add(m->p, !(it[1] & 0x80), full, 0, NULL);
            break;
        default: { /* the module name itself, rank 1 to 4 (the samples' "f", "d": [6]) */
            int ndim = 1 + (it[1] >> 6);
            int64_t dims[4] = {a, b, (it[2] >> 4) % 4, 2};
            if (ndim == 1 && (it[2] & 0x80))
                dims[0] = 6;
            add(m->p, (it[0] & 7) == 7, name, ndim, dims);
            break;
        }
        }
    }
    tg_rng_free(rng);
    /* Values that are not all zero, so that an unchanged check has teeth. */
    size_t n = tg_params_size(m->p);
    for (size_t i = 0; i < n; i++) {
        if (dt == TG_F32)
            ((float *)tg_params_values(m->p))[i] = (float)i * 0.25f - 1.0f;
        else
            ((double *)tg_params_values(m->p))[i] = (double)i * 0.125 - 2.0;
    }
    for (size_t i = 0; i < n; i++) {
        if (dt == TG_F32)
            ((float *)tg_params_grads(m->p))[i] = 3.0f;
        else
            ((double *)tg_params_grads(m->p))[i] = 3.0;
    }
    for (size_t k = 0; k < tg_params_buffer_count(m->p); k++) {
        tg_tensor *x = tg_params_buffer(m->p, k);
        void *v = tg_tensor_data(x);
        for (size_t i = 0; i < tg_tensor_size(x); i++) {
            if (dt == TG_F32)
                ((float *)v)[i] = 0.5f + (float)(k + i);
            else
                ((double *)v)[i] = 0.5 + (double)(k + i);
        }
    }
    tg_params_clear_error(m->p); /* refusals above are handled: the model is what was added */

    uint8_t reg = spec[30];
    tg_state_dict_add_params(m->sd, prefix_of(reg), m->p);
    if (reg & 0x08) /* the same set again: under another prefix, or the same (duplicates) */
        tg_state_dict_add_params(m->sd, prefix_of(reg >> 4), m->p);
    m->buffer[0] = 7, m->buffer[1] = 8, m->buffer[2] = 9, m->buffer[3] = 10;
    m->buffer_n = 0;
    if (reg & 0x80) {
        int nd = spec[31] % 3;
        if (tg_state_dict_add_buffer(m->sd, (spec[31] & 0x10) ? "step" : "fc1/W", TG_F64, nd,
                                     (int64_t[]){2, 2}, m->buffer) == TG_OK)
            m->buffer_n = (size_t)1 << nd;
    }
}

/* All buffers of the set, one after the other (malloc'ed; *bytes their size). */
static void *
buffers_copy(tg_params *p, size_t *bytes)
{
    size_t es = tg_params_dtype(p) == TG_F32 ? 4 : 8, n = 0;
    for (size_t k = 0; k < tg_params_buffer_count(p); k++)
        n += tg_tensor_size(tg_params_buffer(p, k)) * es;
    char *c = malloc(n ? n : 1);
    if (!c)
        return NULL;
    size_t at = 0;
    for (size_t k = 0; k < tg_params_buffer_count(p); k++) {
        tg_tensor *x = tg_params_buffer(p, k);
        copy(c + at, tg_tensor_data(x), tg_tensor_size(x) * es);
        at += tg_tensor_size(x) * es;
    }
    *bytes = n;
    return c;
}

static bool
buffers_same(tg_params *p, const void *saved, size_t bytes)
{
    size_t now_bytes = 0;
    void *now = buffers_copy(p, &now_bytes);
    bool ok = !now || (now_bytes == bytes && same(now, saved, bytes));
    free(now);
    return ok;
}

static void
model_free(struct model *m)
{
    tg_state_dict_free(m->sd);
    tg_params_free(m->p);
}

/* The save of a loaded model is its own checkpoint: reloaded strictly, the same values. */
static void
round_trip(struct model *m)
{
    static char path2[4200];
    snprintf(path2, sizeof path2, "%s.2", fuzz_path);
    tg_status saved = tg_state_dict_save(m->sd, path2);
    if (saved != TG_OK) /* what the loader took, the saver must write */
        fprintf(stderr, FUZZ_TARGET ": saving what was loaded failed: %s\n",
                tg_state_dict_error(m->sd));
    CHECK(saved == TG_OK);
    size_t bytes = tg_params_size(m->p) * (tg_params_dtype(m->p) == TG_F32 ? 4 : 8), bbytes = 0;
    void *want = malloc(bytes ? bytes : 1), *bufs = buffers_copy(m->p, &bbytes);
    double buf[4];
    memcpy(buf, m->buffer, sizeof buf);
    if (want && bufs) {
        copy(want, tg_params_values(m->p), bytes);
        fill(tg_params_values(m->p), 0x5a, bytes);
        for (size_t k = 0; k < tg_params_buffer_count(m->p); k++)
            tg_tensor_fill(tg_params_buffer(m->p, k), -3);
        memset(m->buffer, 0x5a, sizeof m->buffer);
        tg_status s = tg_state_dict_load(m->sd, path2, 0);
        if (s != TG_OK)
            fprintf(stderr, FUZZ_TARGET ": reloading its own save failed: %s\n",
                    tg_state_dict_error(m->sd));
        CHECK(s == TG_OK);
        CHECK(same(want, tg_params_values(m->p), bytes));
        CHECK(buffers_same(m->p, bufs, bbytes));
        CHECK(same(buf, m->buffer, m->buffer_n * sizeof buf[0]));
    }
    free(want);
    free(bufs);
    unlink(path2);
}

/* After a load the layers are usable: forward on a tape of ones (training mode, so batch norm
 * also updates its running statistics). */
static void
run_layers(struct model *m)
{
    tg_tape *t = tg_tape_new();
    if (!t)
        return;
    tg_dtype dt = tg_params_dtype(m->p);
    for (int i = 0; i < m->n_dense + m->n_conv + m->n_bn; i++) {
        if (i < m->n_dense) {
            const tg_dense *l = &m->dense[i];
            int64_t in = tg_tensor_dim(l->weight, 1);
            bool rows = l->layout == TG_EXAMPLES_AS_ROWS;
            tg_tensor *x = tg_matrix(t, dt, rows ? 2 : in, rows ? in : 2, NULL, "x");
            tg_tensor_fill(x, 1);
            tg_dense_forward(t, l, x);
        } else if (i < m->n_dense + m->n_conv) {
            const tg_conv2d_layer *l = &m->conv[i - m->n_dense];
            const tg_tensor *w = l->weight;
            int64_t dims[4] = {1, tg_tensor_dim(w, 1) * l->options.groups, tg_tensor_dim(w, 2),
                               tg_tensor_dim(w, 3)};
            tg_tensor *x = tg_tensor_new(t, dt, 4, dims, "x");
            tg_tensor_fill(x, 1);
            tg_conv2d_layer_forward(t, l, x);
        } else {
            const tg_batch_norm_layer *l = &m->bn[i - m->n_dense - m->n_conv];
            tg_tensor *x = tg_matrix(t, dt, 2, tg_tensor_dim(l->weight, 0), NULL, "x");
            tg_tensor_fill(x, 1);
            tg_batch_norm_layer_forward(t, l, x);
        }
        if (tg_tape_status(t) != TG_OK)
            fprintf(stderr, FUZZ_TARGET ": layer %d: %s\n", i, tg_tape_error(t));
        CHECK(tg_tape_status(t) == TG_OK);
        tg_tape_reset(t);
    }
    tg_tape_free(t);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < SPEC_BYTES || size > (1u << 20))
        return 0;
    if (!long_name[0]) {
        memset(long_name, 'n', 254); /* "<254>/W" is 256 bytes: the longest name allowed */
        memset(long_prefix, 'p', 1020);
    }
    if (!write_input(data + SPEC_BYTES, size - SPEC_BYTES))
        return 0;
    struct model m;
    build(&m, data);
    if (m.p && m.sd) {
        unsigned flags = data[0] >> 1 & 7; /* TG_LOAD_ALLOW_MISSING | _UNEXPECTED | _CHECK_FINITE */
        size_t bytes = tg_params_size(m.p) * (tg_params_dtype(m.p) == TG_F32 ? 4 : 8), bbytes = 0;
        void *before = malloc(bytes ? bytes : 1), *grads = malloc(bytes ? bytes : 1);
        void *bufs = buffers_copy(m.p, &bbytes);
        struct counts c = counts_of(m.p);
        double buf[4];
        memcpy(buf, m.buffer, sizeof buf);
        if (before && grads && bufs) {
            copy(before, tg_params_values(m.p), bytes);
            copy(grads, tg_params_grads(m.p), bytes);
            tg_status s = tg_state_dict_load(m.sd, fuzz_path, flags);
            check_unchanged(m.p, c);
            CHECK(same(grads, tg_params_grads(m.p), bytes));
            CHECK(tg_params_status(m.p) == TG_OK);
            if (s != TG_OK) {
                const char *msg = tg_state_dict_error(m.sd);
                CHECK(msg && msg[0]);
                CHECK(same(before, tg_params_values(m.p), bytes));
                CHECK(buffers_same(m.p, bufs, bbytes));
                CHECK(memcmp(buf, m.buffer, sizeof buf) == 0);
            } else {
                CHECK(tg_state_dict_error(m.sd) == NULL);
                run_layers(&m);
                round_trip(&m);
            }
        }
        free(before);
        free(grads);
        free(bufs);
    }
    model_free(&m);
    unlink(fuzz_path);
    return 0;
}

#ifdef FUZZ_STATEDICT_SEEDS
/*
 * Writes the seeds of corpus/statedict/: each is a description followed by the file that
 * model saves (or a reference sample, for a model that matches it). Not built by meson; run
 *   cc -DFUZZ_STATEDICT_SEEDS -Iinclude -Ibuild/include tests/fuzz/fuzz-statedict.c \
 *      -Lbuild/lib -ltapegrad -lm -o /tmp/gen && LD_LIBRARY_PATH=build/lib /tmp/gen \
 *      tests/fuzz/corpus/statedict SAMPLES
 * where SAMPLES holds f.safetensors, d.safetensors and overall.safetensors from the samples/
 * folder of the reference safetensors implementation (Unlicense).
 */
#define ITEM(kind, name, a, b) (uint8_t)((name) << 3 | (kind)), (uint8_t)(a), (uint8_t)(b)

static void
put_seed(const char *dir, const char *name, const uint8_t *spec, const char *file)
{
    FILE *in = fopen(file, "rb");
    if (!in) {
        perror(file);
        exit(1);
    }
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *out = fopen(path, "wb");
    if (!out) {
        perror(path);
        exit(1);
    }
    fwrite(spec, 1, SPEC_BYTES, out);
    int c;
    while ((c = fgetc(in)) != EOF)
        fputc(c, out);
    fclose(in);
    if (fclose(out) != 0)
        exit(1);
}

/* The model's own save, after giving its values a pattern. */
static void
saved_seed(const char *dir, const char *name, const uint8_t *spec)
{
    struct model m;
    long_name[0] = 0;
    memset(long_name, 'n', 254);
    memset(long_prefix, 'p', 1020);
    build(&m, spec);
    const char *tmp = "/tmp/tg-statedict-seed.safetensors";
    if (tg_state_dict_save(m.sd, tmp) != TG_OK) {
        fprintf(stderr, "%s: %s\n", name, tg_state_dict_error(m.sd));
        exit(1);
    }
    printf("%s: %zu parameters, %zu values\n", name, tg_params_count(m.p), tg_params_size(m.p));
    put_seed(dir, name, spec, tmp);
    unlink(tmp);
    model_free(&m);
}

int
main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s OUT_DIR SAMPLES_DIR\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1], *samples = argv[2];
    /* two dense layers, examples as rows, float32 */
    const uint8_t dense[SPEC_BYTES] = {0, 1, 2, ITEM(0, 0, 4 | 0x30, 8 | 0x80),
                                       ITEM(0, 1, 8, 3 | 0x80)};
    saved_seed(dir, "seed-dense-f32", dense);
    /* PyTorch names: fc1.weight, fc1.bias, fc2.weight, fc2.bias, bn.running_mean,
     * bn.num_batches_tracked, float64, under "model." */
    uint8_t torch[SPEC_BYTES] = {1, 2, 6, ITEM(3, 0, 4, 3), ITEM(4, 0, 3, 0), ITEM(3, 1, 3, 2),
                                 ITEM(4, 1, 2, 0), ITEM(4, 12, 2 | 0x80, 0), ITEM(5, 12, 0, 0)};
    torch[30] = 1;
    saved_seed(dir, "seed-torch-names-f64", torch);
    /* a small CNN: conv2d "layers.0" (3 -> 2 channels, 2x2, bias), batch norm "bn" (2, with
     * its running statistics as buffers), dense "head" (2 -> 3), float64 */
    const uint8_t cnn[SPEC_BYTES] = {1, 5, 3, ITEM(1, 3, 3 | 0x10, 2 | 0x10 | 0x80),
                                     ITEM(2, 12, 2, 0), ITEM(0, 13, 2 | 0x20, 3 | 0x80)};
    saved_seed(dir, "seed-cnn-buffers-f64", cnn);
    /* a dense layer and a batch norm under "module.", registered again under "optim/m/", and a
     * raw buffer */
    uint8_t twice[SPEC_BYTES] = {0, 3, 3, ITEM(0, 3, 2, 2), ITEM(2, 4, 2, 1 | 0x80),
                                 ITEM(3, 8, 1, 1)};
    twice[30] = 0x89; /* a buffer; "module." (0x89 % 5 = 2), again as "optim/m/" (8 % 5) */
    twice[31] = 0x10 | 1;
    saved_seed(dir, "seed-twice-buffer", twice);
    /* a layer refused (its name is taken) beside one that is not; a long name */
    uint8_t refused[SPEC_BYTES] = {1, 4, 4, ITEM(6, 7, 1, 1), ITEM(0, 0, 1, 1),
                                   ITEM(0, 15, 2, 3), ITEM(4, 15, 2, 0)};
    saved_seed(dir, "seed-refused-long", refused);
    /* the reference samples: "f" (F32 [6]) and "d" (F64 [6]) */
    char path[4200];
    const uint8_t f[SPEC_BYTES] = {0, 0, 1, ITEM(6, 5, 0, 0x80)};
    snprintf(path, sizeof path, "%s/f.safetensors", samples);
    put_seed(dir, "seed-sample-f", f, path);
    const uint8_t d[SPEC_BYTES] = {1, 0, 1, ITEM(6, 6, 0, 0x80)};
    snprintf(path, sizeof path, "%s/d.safetensors", samples);
    put_seed(dir, "seed-sample-d", d, path);
    /* overall.safetensors (every dtype) into "f" with TG_LOAD_ALLOW_UNEXPECTED */
    const uint8_t all[SPEC_BYTES] = {2 << 1, 0, 1, ITEM(6, 5, 0, 0x80)};
    snprintf(path, sizeof path, "%s/overall.safetensors", samples);
    put_seed(dir, "seed-sample-overall", all, path);
    return 0;
}
#endif
