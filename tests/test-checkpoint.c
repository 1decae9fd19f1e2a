/* safetensors checkpoints: round trips, the reference sample files, every malformed-file case
 * of RELIABILITY.md (bad inputs 26-43) crafted byte by byte, all-or-nothing loads, and atomic
 * saves under injected failures, a file-size limit and SIGKILL; stale temporaries of killed saves
 * removed by the next one (live writers' kept); saves through symbolic links. */
#include "common.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <tapegrad/checkpoint.h>

extern int tg__ckpt_fault; /* lib/checkpoint.c: 1 write, 2 fsync, 3 close, 4 rename, 5 dirsync */

#define SAMPLES TG_SOURCE_DIR "/tests/data/safetensors/"

static char dir[256];

static void
setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/tg-ckpt-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    tg__ckpt_fault = 0;
}

static void
teardown(void)
{
    tg__ckpt_fault = 0;
    tg_set_allocator(NULL);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "chmod -R u+w '%s'; rm -rf '%s'", dir, dir);
    ck_assert_int_eq(system(cmd), 0);
}

static const char *
path_of(const char *name)
{
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

/* Bytes of a file (malloc'd), or NULL when it cannot be read. */
static unsigned char *
slurp(const char *p, size_t *n)
{
    FILE *f = fopen(p, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 16, len = 0;
    unsigned char *b = malloc(cap);
    size_t r;
    while ((r = fread(b + len, 1, cap - len, f)) > 0) {
        len += r;
        if (len == cap)
            b = realloc(b, cap *= 2);
    }
    fclose(f);
    *n = len;
    return b;
}

/* Entries in the temporary directory other than . and .. */
static int
dir_entries(void)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return n;
}

/* A file: u64 LE length of header, header, then data_len bytes (0x11, 0x22, ...). */
static const char *
craft(const char *name, const char *header, size_t hlen, size_t data_len)
{
    const char *p = path_of(name);
    FILE *f = fopen(p, "wb");
    ck_assert_ptr_nonnull(f);
    unsigned char len[8];
    for (int i = 0; i < 8; i++)
        len[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    ck_assert_uint_eq(fwrite(len, 1, 8, f), 8);
    ck_assert_uint_eq(fwrite(header, 1, hlen, f), hlen);
    for (size_t i = 0; i < data_len; i++)
        fputc((int)(0x11 * (i % 15 + 1)), f);
    ck_assert_int_eq(fclose(f), 0);
    return p;
}

static const char *
craft_raw(const char *name, const void *bytes, size_t n)
{
    const char *p = path_of(name);
    FILE *f = fopen(p, "wb");
    ck_assert_ptr_nonnull(f);
    if (n)
        ck_assert_uint_eq(fwrite(bytes, 1, n, f), n);
    ck_assert_int_eq(fclose(f), 0);
    return p;
}

/* A small model: fc1/W (3x4), fc1/b (3x1), out/W (2x3), values offset + i / 8. */
static tg_params *
make_model(tg_dtype dt, double offset)
{
    tg_params *p = tg_params_new(dt);
    ck_assert_ptr_nonnull(p);
    static const struct {
        const char *name;
        int ndim;
        int64_t dims[2];
    } shapes[] = {{"fc1/W", 2, {3, 4}}, {"fc1/b", 2, {3, 1}}, {"out/W", 2, {2, 3}}};
    for (int i = 0; i < 3; i++)
        ck_assert_ptr_nonnull(tg_params_add(p, shapes[i].name, shapes[i].ndim, shapes[i].dims));
    for (size_t i = 0; i < tg_params_size(p); i++) {
        double v = offset + (double)i / 8;
        if (dt == TG_F32)
            ((float *)tg_params_values(p))[i] = (float)v;
        else
            ((double *)tg_params_values(p))[i] = v;
    }
    return p;
}

static size_t
params_bytes(tg_params *p)
{
    return tg_params_size(p) * tg_dtype_size(tg_params_dtype(p));
}

static bool
params_equal(tg_params *a, tg_params *b)
{
    return params_bytes(a) == params_bytes(b) &&
           memcmp(tg_params_values(a), tg_params_values(b), params_bytes(a)) == 0;
}

static void
assert_msg(tg_status got, tg_status want, const char *msg, const char *n1, const char *n2)
{
    ck_assert_msg(got == want, "status %d (%s), expected %d; message: %s", got,
                  tg_status_string(got), want, msg ? msg : "(none)");
    ck_assert_ptr_nonnull(msg);
    ck_assert_msg(strstr(msg, n1), "message lacks '%s': %s", n1, msg);
    if (n2)
        ck_assert_msg(strstr(msg, n2), "message lacks '%s': %s", n2, msg);
}

/* Evaluates the call before the message (argument evaluation order is unspecified). */
#define ASSERT_FAILS(call, want, errfn, obj, n1, n2)                                            \
    do {                                                                                       \
        tg_status st_ = (call);                                                                \
        assert_msg(st_, want, errfn(obj), n1, n2);                                             \
    } while (0)

/* ---------------------------------------------------------------------------------------
 * Round trips.
 */
START_TEST(round_trip_bitwise)
{
    tg_dtype dt = _i ? TG_F64 : TG_F32;
    tg_params *a = make_model(dt, -1.0), *m = make_model(TG_F64, 0.5);
    /* Awkward values survive bit for bit: -0, subnormals, NaN payloads, infinities. */
    if (dt == TG_F32) {
        float *v = tg_params_values(a);
        v[0] = -0.0f, v[1] = 1e-45f, v[2] = INFINITY, v[3] = -NAN, v[4] = 3.4028235e38f;
    } else {
        double *v = tg_params_values(a);
        v[0] = -0.0, v[1] = 4.9e-324, v[2] = -INFINITY, v[3] = NAN, v[4] = 1.7976931348623157e308;
    }
    double step = 1234.0;
    tg_state_dict *sd = tg_state_dict_new();
    ck_assert_int_eq(tg_state_dict_add_params(sd, "", a), TG_OK);
    ck_assert_int_eq(tg_state_dict_add_params(sd, "optim/m/", m), TG_OK);
    ck_assert_int_eq(tg_state_dict_add_buffer(sd, "optim/step", TG_F64, 0, NULL, &step), TG_OK);
    ck_assert_int_eq(tg_state_dict_set_metadata(sd, "epoch", "3"), TG_OK);
    ck_assert_int_eq(tg_state_dict_set_metadata(sd, "format", "pt"), TG_OK);
    const char *p = path_of("rt.safetensors");
    ck_assert_msg(tg_state_dict_save(sd, p) == TG_OK, "%s", tg_state_dict_error(sd));
    ck_assert_ptr_null(tg_state_dict_error(sd));

    tg_params *a2 = make_model(dt, 100.0), *m2 = make_model(TG_F64, 100.0);
    double step2 = 0;
    tg_state_dict *sd2 = tg_state_dict_new();
    tg_state_dict_add_params(sd2, NULL, a2);
    tg_state_dict_add_params(sd2, "optim/m/", m2);
    tg_state_dict_add_buffer(sd2, "optim/step", TG_F64, 0, NULL, &step2);
    ck_assert_msg(tg_state_dict_load(sd2, p, 0) == TG_OK, "%s", tg_state_dict_error(sd2));
    ck_assert(params_equal(a, a2));
    ck_assert(params_equal(m, m2));
    ck_assert_double_eq(step2, 1234.0);
    ck_assert_str_eq(tg_state_dict_metadata(sd2, "epoch"), "3");
    ck_assert_str_eq(tg_state_dict_metadata(sd2, "format"), "pt");
    ck_assert_ptr_null(tg_state_dict_metadata(sd2, "nope"));

    /* Deterministic: the same state gives the same bytes; the header is padded to 8. */
    const char *p2 = path_of("rt2.safetensors");
    ck_assert_int_eq(tg_state_dict_save(sd2, p2), TG_OK);
    size_t n1 = 0, n2 = 0;
    unsigned char *b1 = slurp(p, &n1), *b2 = slurp(p2, &n2);
    ck_assert_uint_eq(n1, n2);
    ck_assert(memcmp(b1, b2, n1) == 0);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--)
        hl = hl << 8 | b1[i];
    ck_assert_uint_eq(hl % 8, 0);
    ck_assert_uint_eq(b1[8], '{');
    ck_assert_uint_eq(n1, 8 + hl + params_bytes(a) + params_bytes(m) + 8);
    /* Little-endian on disk: the step counter's 8 bytes are the last in the file. */
    double le;
    memcpy(&le, b1 + n1 - 8, 8);
    ck_assert_double_eq(le, 1234.0);
    free(b1);
    free(b2);
    tg_state_dict_free(sd);
    tg_state_dict_free(sd2);
    tg_params_free(a);
    tg_params_free(m);
    tg_params_free(a2);
    tg_params_free(m2);
}
END_TEST

START_TEST(round_trip_shorthand_and_odd_names)
{
    tg_params *a = tg_params_new(TG_F32);
    int64_t d[1] = {2};
    const char *names[] = {"quote\"d", "back\\slash", "ctl\x01\x1f", "caf\xc3\xa9", "tab\tnl\n"};
    for (int i = 0; i < 5; i++)
        ck_assert_ptr_nonnull(tg_params_add(a, names[i], 1, d));
    for (size_t i = 0; i < tg_params_size(a); i++)
        ((float *)tg_params_values(a))[i] = (float)i;
    char err[512];
    const char *p = path_of("odd.safetensors");
    ck_assert_msg(tg_checkpoint_save_params(a, p, err, sizeof err) == TG_OK, "%s", err);
    tg_checkpoint *ck = tg_checkpoint_open(p);
    ck_assert_msg(tg_checkpoint_status(ck) == TG_OK, "%s", tg_checkpoint_error(ck));
    ck_assert_uint_eq(tg_checkpoint_count(ck), 5);
    for (int i = 0; i < 5; i++) {
        ck_assert_str_eq(tg_checkpoint_name(ck, (size_t)i), names[i]);
        ck_assert_int_eq(tg_checkpoint_find(ck, names[i]), i);
    }
    tg_checkpoint_free(ck);
    tg_params *b = tg_params_new(TG_F32);
    for (int i = 4; i >= 0; i--) /* another order: loads match by name */
        tg_params_add(b, names[i], 1, d);
    ck_assert_msg(tg_checkpoint_load_params(b, p, err, sizeof err) == TG_OK, "%s", err);
    for (int i = 0; i < 5; i++) {
        float *x = tg_tensor_data(tg_params_find(b, names[i]));
        ck_assert_float_eq(x[1], (float)(2 * i + 1));
    }
    tg_params_free(a);
    tg_params_free(b);
}
END_TEST

/* ---------------------------------------------------------------------------------------
 * The reference implementation's sample files (copied into tests/data/safetensors/).
 */
static const struct {
    const char *file, *dtype;
} samples[] = {
    {"f", "F32"}, {"d", "F64"}, {"e", "F16"}, {"B", "U8"},  {"H", "U16"},
    {"I", "U32"}, {"b", "I8"},  {"h", "I16"}, {"i", "I32"},
};

START_TEST(reference_samples_inspect)
{
    char p[512];
    snprintf(p, sizeof p, SAMPLES "%s.safetensors", samples[_i].file);
    tg_checkpoint *ck = tg_checkpoint_open(p);
    ck_assert_ptr_nonnull(ck);
    ck_assert_msg(tg_checkpoint_status(ck) == TG_OK, "%s", tg_checkpoint_error(ck));
    ck_assert_uint_eq(tg_checkpoint_count(ck), 1);
    ck_assert_str_eq(tg_checkpoint_name(ck, 0), samples[_i].file);
    ck_assert_str_eq(tg_checkpoint_dtype_name(ck, 0), samples[_i].dtype);
    ck_assert_int_eq(tg_checkpoint_ndim(ck, 0), 1);
    ck_assert_int_eq(tg_checkpoint_dim(ck, 0, 0), 6);
    ck_assert_uint_eq(tg_checkpoint_size(ck, 0), 6);
    ck_assert_uint_eq(tg_checkpoint_metadata_count(ck), 1);
    ck_assert_str_eq(tg_checkpoint_metadata_key(ck, 0), "test");
    ck_assert_str_eq(tg_checkpoint_metadata_get(ck, "test"), "a");
    double v[6];
    tg_status st = tg_checkpoint_read(ck, 0, v, 6);
    if (_i < 2) {
        ck_assert_int_eq(st, TG_OK);
        for (int k = 0; k < 6; k++)
            ck_assert_double_eq(v[k], k - 3);
        ck_assert_ptr_nonnull(tg_checkpoint_data(ck, 0));
    } else {
        assert_msg(st, TG_ERR_UNSUPPORTED, tg_checkpoint_error(ck), samples[_i].dtype,
                   "is not supported");
        ck_assert_ptr_null(tg_checkpoint_data(ck, 0));
    }
    tg_checkpoint_free(ck);
}
END_TEST

START_TEST(reference_samples_load)
{
    /* Load each file into an F32 model with one tensor of its name: only f.safetensors
     * matches; the others are refused naming both dtypes. */
    char p[512];
    snprintf(p, sizeof p, SAMPLES "%s.safetensors", samples[_i].file);
    tg_params *m = tg_params_new(_i == 1 ? TG_F64 : TG_F32);
    int64_t d[1] = {6};
    tg_params_add(m, samples[_i].file, 1, d);
    char err[512];
    tg_status st = tg_checkpoint_load_params(m, p, err, sizeof err);
    if (_i < 2) {
        ck_assert_msg(st == TG_OK, "%s", err);
        for (size_t k = 0; k < 6; k++)
            ck_assert_double_eq(tg_tensor_get(tg_params_get(m, 0), k), (double)k - 3);
    } else {
        char want[64];
        snprintf(want, sizeof want, "dtype in file %s, model expects F32", samples[_i].dtype);
        assert_msg(st, TG_ERR_FORMAT, err, want, "tensor \"");
        for (size_t k = 0; k < 6; k++) /* untouched */
            ck_assert_double_eq(tg_tensor_get(tg_params_get(m, 0), k), 0.0);
    }
    tg_params_free(m);
}
END_TEST

START_TEST(reference_overall)
{
    const char *p = SAMPLES "overall.safetensors";
    tg_checkpoint *ck = tg_checkpoint_open(p);
    ck_assert_msg(tg_checkpoint_status(ck) == TG_OK, "%s", tg_checkpoint_error(ck));
    ck_assert_uint_eq(tg_checkpoint_count(ck), 9);
    long f = tg_checkpoint_find(ck, "f"), d = tg_checkpoint_find(ck, "d");
    ck_assert(f >= 0 && d >= 0);
    tg_dtype dt;
    ck_assert_int_eq(tg_checkpoint_dtype(ck, (size_t)f, &dt), TG_OK);
    ck_assert_int_eq(dt, TG_F32);
    ck_assert_float_eq(((const float *)tg_checkpoint_data(ck, (size_t)f))[0], -3.0f);
    ck_assert_double_eq(((const double *)tg_checkpoint_data(ck, (size_t)d))[5], 2.0);
    long e = tg_checkpoint_find(ck, "e");
    ASSERT_FAILS(tg_checkpoint_dtype(ck, (size_t)e, &dt), TG_ERR_UNSUPPORTED, tg_checkpoint_error, ck, "tensor \"e\": dtype F16", NULL);
    ck_assert_int_eq(tg_checkpoint_find(ck, "zz"), -1);
    tg_checkpoint_free(ck);

    /* Strict load of f and d: the seven other tensors are unexpected, named. */
    tg_params *pf = tg_params_new(TG_F32), *pd = tg_params_new(TG_F64);
    int64_t six[1] = {6};
    tg_params_add(pf, "f", 1, six);
    tg_params_add(pd, "d", 1, six);
    tg_state_dict *sd = tg_state_dict_new();
    tg_state_dict_add_params(sd, "", pf);
    tg_state_dict_add_params(sd, "", pd);
    ASSERT_FAILS(tg_state_dict_load(sd, p, 0), TG_ERR_FORMAT, tg_state_dict_error, sd,
               "7 unexpected tensors in the file: \"B\", \"H\", \"I\", \"b\", \"e\", \"h\", \"i\"",
               "overall.safetensors");
    ck_assert_double_eq(tg_tensor_get(tg_params_get(pf, 0), 0), 0.0);
    ck_assert_int_eq(tg_state_dict_load(sd, p, TG_LOAD_ALLOW_UNEXPECTED), TG_OK);
    ck_assert_double_eq(tg_tensor_get(tg_params_get(pf, 0), 0), -3.0);
    ck_assert_double_eq(tg_tensor_get(tg_params_get(pd, 0), 5), 2.0);
    ck_assert_str_eq(tg_state_dict_metadata(sd, "test"), "a");
    tg_state_dict_free(sd);
    tg_params_free(pf);
    tg_params_free(pd);
}
END_TEST

/* ---------------------------------------------------------------------------------------
 * Malformed files. The model holds w (F32, shape [2]) = {7, 8}; every bad file must leave it
 * so and give a message naming the file and what is wrong.
 */
static tg_params *model;

static void
setup_model(void)
{
    setup();
    model = tg_params_new(TG_F32);
    int64_t d[1] = {2};
    tg_params_add(model, "w", 1, d);
    ((float *)tg_params_values(model))[0] = 7;
    ((float *)tg_params_values(model))[1] = 8;
}

static void
teardown_model(void)
{
    tg_params_free(model);
    teardown();
}

static void
expect_load_error(const char *path, tg_status want, const char *n1, const char *n2)
{
    char err[512];
    tg_status st = tg_checkpoint_load_params(model, path, err, sizeof err);
    assert_msg(st, want, err, n1, n2);
    ck_assert_msg(strstr(err, path), "message does not name the file: %s", err);
    const float *v = tg_params_values(model);
    ck_assert_float_eq(v[0], 7.0f);
    ck_assert_float_eq(v[1], 8.0f);
    /* The inspection reader refuses structural faults too (not model mismatches). */
    (void)n2;
}

#define W(shape, offs) "{\"w\":{\"dtype\":\"F32\",\"shape\":" shape ",\"data_offsets\":" offs "}}"

static const struct bad_header {
    const char *header;
    size_t data;
    const char *needle;
} bad_headers[] = {
    /* bad input 28: not JSON, not an object, truncated JSON */
    {"{\"w\":", 8, "not valid JSON at byte"},
    {"[1,2]", 8, "is an array, must be a JSON object"},
    {"\"str\"", 8, "not valid JSON"},
    {"{\"w\":{\"dtype\":\"F32\"", 8, "not valid JSON"},
    {W("[2]", "[0,8]") "xx", 8, "not valid JSON"},
    {"{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},}", 8, "not valid JSON"},
    /* bad input 29: duplicate key */
    {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
     "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
     8, "duplicate"},
    {"{\"w\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
     "duplicate"},
    /* bad input 30: unknown dtype; dtype differs from the model's */
    {"{\"w\":{\"dtype\":\"F33\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
     "tensor \"w\": unknown dtype \"F33\""},
    {"{\"w\":{\"dtype\":7,\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "dtype is an integer"},
    {"{\"w\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]}}", 16,
     "tensor \"w\": dtype in file F64, model expects F32"},
    {"{\"w\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[0,8]}}", 8,
     "dtype in file BF16, model expects F32"},
    /* bad input 31: shape differs */
    {W("[1,2]", "[0,8]"), 8, "tensor \"w\": shape in file (1x2), model expects (2)"},
    {W("[]", "[0,4]"), 4, "shape in file (scalar), model expects (2)"},
    /* bad input 32: offsets */
    {W("[2]", "[8,0]"), 8, "[8, 0] end before begin"},
    {W("[2]", "[0,16]"), 8, "run past the data section of 8 bytes"},
    {W("[2]", "[4,12]"), 12, "leave a hole: expected begin 0"},
    {W("[2]", "[0,8]"), 12, "4 trailing bytes"},
    {W("[2]", "[0,4]"), 8, "span 4 bytes, shape (2) of F32 needs 8"},
    {"{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"v\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
     8, "overlap tensor \"w\""},
    {"{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"v\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[12,16]}}",
     16, "tensor \"v\": data_offsets [12, 16] leave a hole: expected begin 8"},
    {"{}", 8, "no tensors, but 8 data bytes"},
    /* bad input 33: shape overflow */
    {W("[2,9223372036854775807]", "[0,8]"), 8, "overflows 64 bits"},
    {W("[4294967296,4294967296,4294967296]", "[0,8]"), 8, "overflows 64 bits"},
    /* bad input 34: -1, 2.5, 1e30, strings, null; numbers past 2^63 */
    {W("[-1]", "[0,8]"), 8, "shape[0] is negative"},
    {W("[2.5]", "[0,8]"), 8, "shape[0] is a real number"},
    {W("[1e30]", "[0,8]"), 8, "shape[0] is a real number"},
    {W("[2e0]", "[0,8]"), 8, "shape[0] is a real number"},
    {W("[\"2\"]", "[0,8]"), 8, "shape[0] is a string"},
    {W("[null]", "[0,8]"), 8, "shape[0] is null"},
    {W("[18446744073709551615]", "[0,8]"), 8, "not valid JSON"},
    {W("[2]", "[-1,8]"), 8, "data_offsets[0] is negative"},
    {W("[2]", "[0,8.0]"), 8, "data_offsets[1] is a real number"},
    {W("[2]", "[0,null]"), 8, "data_offsets[1] is null"},
    {W("[2]", "[0]"), 8, "data_offsets must be an array [begin, end]"},
    {W("[2]", "[0,4,8]"), 8, "data_offsets must be an array [begin, end]"},
    {W("2", "[0,8]"), 8, "shape is an integer, must be an array"},
    /* bad input 35: metadata */
    {"{\"__metadata__\":{\"a\":1},\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
     "__metadata__ \"a\" is an integer, must be a string"},
    {"{\"__metadata__\":[],\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
     "__metadata__ is an array"},
    /* names, fields, rank (rules 6, 9) */
    {"{\"\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "empty name"},
    {"{\"w\\u0000x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
     "not valid JSON"},
    {"{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"extra\":1}}", 8,
     "unknown field \"extra\""},
    {"{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8, "missing field \"shape\""},
    {"{\"w\":5}", 8, "entry is an integer, must be an object"},
    {W("[1,1,1,1,2]", "[0,8]"), 8, "rank 5 exceeds the maximum 4"},
    /* bad input 36: missing / unexpected */
    {"{\"v\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
     "1 tensors missing from the file: \"w\"; 1 unexpected: \"v\""},
    /* bad input 38: data 2 bytes short */
    {W("[2]", "[0,8]"), 6, "run past the data section of 6 bytes"},
};

START_TEST(bad_header_rejected)
{
    const struct bad_header *b = &bad_headers[_i];
    char name[32];
    snprintf(name, sizeof name, "bad%d.safetensors", _i);
    const char *p = craft(name, b->header, strlen(b->header), b->data);
    expect_load_error(p, TG_ERR_FORMAT, b->needle, NULL);
}
END_TEST

/* A name or field of 100 bytes that each need escaping (\x7f, 4 characters shown): the quoted
 * text in the message is cut at 80 bytes with "...". The quoting buffer once held 3 characters
 * per byte and overflowed here (fuzz-checkpoint: corpus crash-quote-escaped-key-overflow). */
START_TEST(escaped_names_cut_in_messages)
{
    char key[101], header[512];
    memset(key, 0x7f, 100);
    key[100] = '\0';
    snprintf(header, sizeof header,
             "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"%s\":1}}", key);
    expect_load_error(craft("esc-field", header, strlen(header), 8), TG_ERR_FORMAT,
                      "unknown field \"\\x7f\\x7f", "\\x7f...\" (expected dtype");
    snprintf(header, sizeof header,
             "{\"%s\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", key);
    expect_load_error(craft("esc-name", header, strlen(header), 8), TG_ERR_FORMAT,
                      "1 unexpected: \"\\x7f", NULL);
}
END_TEST

START_TEST(good_header_variants_accepted)
{
    /* Leading/trailing whitespace, a reordered entry and metadata are fine. */
    const char *h = "  {\"__metadata__\":{\"k\":\"v\"},\"w\":{\"data_offsets\":[0,8],"
                    "\"shape\":[2],\"dtype\":\"F32\"}}  \n ";
    char err[512];
    ck_assert_msg(tg_checkpoint_load_params(model, craft("ok", h, strlen(h), 8), err,
                                            sizeof err) == TG_OK,
                  "%s", err);
    ck_assert_float_ne(((float *)tg_params_values(model))[0], 7.0f);
}
END_TEST

START_TEST(header_length_checks)
{
    /* bad input 26: empty, shorter than 8 */
    expect_load_error(craft_raw("empty", "", 0), TG_ERR_FORMAT, "header too small", "0 bytes");
    expect_load_error(craft_raw("five", "\x10\0\0\0\0", 5), TG_ERR_FORMAT, "header too small",
                      NULL);
    /* bad input 27: N > cap, N > file, N = 2^64-1 (8 + N overflows) */
    unsigned char raw[64] = {0};
    uint64_t ns[] = {(uint64_t)TG_CHECKPOINT_HEADER_MAX + 1, UINT64_MAX, 100,
                     TG_CHECKPOINT_HEADER_MAX, 0};
    const char *want[] = {"exceeds the cap", "exceeds the cap", "runs past the end",
                          "runs past the end", "too small for a JSON object"};
    for (int k = 0; k < 5; k++) {
        for (int i = 0; i < 8; i++)
            raw[i] = (unsigned char)(ns[k] >> (8 * i));
        char name[16];
        snprintf(name, sizeof name, "len%d", k);
        expect_load_error(craft_raw(name, raw, sizeof raw), TG_ERR_FORMAT, want[k], NULL);
    }
    /* bad input 28: not UTF-8 (with the offset), and nesting 10^6 deep */
    expect_load_error(craft("utf", "{\"w\xff\":1}", 8, 0), TG_ERR_FORMAT,
                      "not valid UTF-8 at byte 11", NULL);
    expect_load_error(craft("utf2", "{\"\xc0\xaf\":1}", 7, 0), TG_ERR_FORMAT,
                      "not valid UTF-8 at byte 10", NULL); /* overlong '/' */
    size_t deep = 1000000;
    char *h = malloc(deep + 1);
    memset(h, '[', deep);
    h[0] = '{';
    expect_load_error(craft("deep", h, deep, 0), TG_ERR_FORMAT, "nests deeper than 64", NULL);
    free(h);
}
END_TEST

START_TEST(io_errors)
{
    /* bad input 39: missing, directory, FIFO */
    expect_load_error(path_of("missing"), TG_ERR_IO, "cannot open", strerror(ENOENT));
    expect_load_error(dir, TG_ERR_IO, "a directory", NULL);
    const char *fifo = path_of("fifo");
    ck_assert_int_eq(mkfifo(fifo, 0600), 0);
    expect_load_error(fifo, TG_ERR_IO, "not a regular file", NULL);
    tg_checkpoint *ck = tg_checkpoint_open(fifo);
    ASSERT_FAILS(tg_checkpoint_status(ck), TG_ERR_IO, tg_checkpoint_error, ck, "not a regular file",
               NULL);
    ck_assert_uint_eq(tg_checkpoint_count(ck), 0);
    ck_assert_ptr_null(tg_checkpoint_name(ck, 0));
    tg_checkpoint_free(ck);
    tg_checkpoint_free(NULL);
    /* bad input 40: save to a missing directory, to a directory path, read-only directory */
    char err[512];
    char p[600];
    snprintf(p, sizeof p, "%s/no/such/dir/x.safetensors", dir);
    assert_msg(tg_checkpoint_save_params(model, p, err, sizeof err), TG_ERR_IO, err,
               "cannot create a temporary file", strerror(ENOENT));
    snprintf(p, sizeof p, "%s/", dir);
    assert_msg(tg_checkpoint_save_params(model, p, err, sizeof err), TG_ERR_ARG, err,
               "names a directory", NULL);
    if (geteuid() != 0) { /* root writes anywhere */
        const char *ro = path_of("ro");
        ck_assert_int_eq(mkdir(ro, 0555), 0);
        snprintf(p, sizeof p, "%s/x.safetensors", ro);
        assert_msg(tg_checkpoint_save_params(model, p, err, sizeof err), TG_ERR_IO, err,
                   strerror(EACCES), NULL);
    }
}
END_TEST

START_TEST(all_or_nothing_second_tensor_bad)
{
    /* The first tensor matches; the second has the wrong shape: the first must not be copied. */
    tg_params *m = make_model(TG_F32, 1.0), *orig = make_model(TG_F32, 1.0);
    tg_params *other = tg_params_new(TG_F32);
    int64_t d34[2] = {3, 4}, d13[2] = {1, 3}, d23[2] = {2, 3};
    tg_params_add(other, "fc1/W", 2, d34);
    tg_params_add(other, "fc1/b", 2, d13); /* model has 3x1 */
    tg_params_add(other, "out/W", 2, d23);
    for (size_t i = 0; i < tg_params_size(other); i++)
        ((float *)tg_params_values(other))[i] = -5;
    char err[512];
    const char *p = path_of("x.safetensors");
    ck_assert_int_eq(tg_checkpoint_save_params(other, p, err, sizeof err), TG_OK);
    assert_msg(tg_checkpoint_load_params(m, p, err, sizeof err), TG_ERR_FORMAT, err,
               "tensor \"fc1/b\": shape in file (1x3), model expects (3x1)", NULL);
    ck_assert(params_equal(m, orig));
    tg_params_free(m);
    tg_params_free(orig);
    tg_params_free(other);
}
END_TEST

START_TEST(missing_and_unexpected_flags)
{
    tg_params *m = make_model(TG_F32, 1.0);
    char err[512];
    const char *p = path_of("m.safetensors");
    ck_assert_int_eq(tg_checkpoint_save_params(m, p, err, sizeof err), TG_OK);
    tg_params *bigger = make_model(TG_F32, 0.0);
    int64_t d[1] = {5};
    tg_params_add(bigger, "extra", 1, d);
    assert_msg(tg_checkpoint_load_params(bigger, p, err, sizeof err), TG_ERR_FORMAT, err,
               "1 tensor missing from the file: \"extra\"", NULL);
    tg_state_dict *sd = tg_state_dict_new();
    tg_state_dict_add_params(sd, "", bigger);
    ck_assert_int_eq(tg_state_dict_load(sd, p, TG_LOAD_ALLOW_MISSING), TG_OK);
    ck_assert_double_eq(tg_tensor_get(tg_params_find(bigger, "fc1/W"), 0), 1.0);
    ck_assert_double_eq(tg_tensor_get(tg_params_find(bigger, "extra"), 0), 0.0);
    tg_state_dict_free(sd);
    tg_params *smaller = tg_params_new(TG_F32);
    int64_t d34[2] = {3, 4};
    tg_params_add(smaller, "fc1/W", 2, d34);
    assert_msg(tg_checkpoint_load_params(smaller, p, err, sizeof err), TG_ERR_FORMAT, err,
               "2 unexpected tensors in the file: \"fc1/b\", \"out/W\"", NULL);
    tg_params_free(m);
    tg_params_free(bigger);
    tg_params_free(smaller);
}
END_TEST

START_TEST(finite_check_opt_in)
{
    /* bad input 37: NaN/Inf load by default; the opt-in check names tensor and index. */
    tg_params *m = make_model(TG_F64, 0.0);
    ((double *)tg_tensor_data(tg_params_find(m, "fc1/b")))[2] = INFINITY;
    const char *p = path_of("nan.safetensors");
    char err[512];
    ck_assert_int_eq(tg_checkpoint_save_params(m, p, err, sizeof err), TG_OK);
    tg_params *into = make_model(TG_F64, 9.0), *orig = make_model(TG_F64, 9.0);
    tg_state_dict *sd = tg_state_dict_new();
    tg_state_dict_add_params(sd, "", into);
    ASSERT_FAILS(tg_state_dict_load(sd, p, TG_LOAD_CHECK_FINITE), TG_ERR_NONFINITE, tg_state_dict_error, sd, "tensor \"fc1/b\": element 2 is inf", NULL);
    ck_assert(params_equal(into, orig));
    ck_assert_int_eq(tg_state_dict_load(sd, p, 0), TG_OK);
    ck_assert(isinf(tg_tensor_get(tg_params_find(into, "fc1/b"), 2)));
    tg_state_dict_free(sd);
    tg_params_free(m);
    tg_params_free(into);
    tg_params_free(orig);
}
END_TEST

START_TEST(state_dict_api_errors)
{
    tg_params *m = make_model(TG_F32, 0.0);
    tg_state_dict *sd = tg_state_dict_new();
    float x[4] = {0};
    int64_t neg[1] = {-1}, four[1] = {4};
    ASSERT_FAILS(tg_state_dict_add_buffer(sd, "b", TG_F32, 1, neg, x), TG_ERR_ARG, tg_state_dict_error, sd, "dim 0 is -1", NULL);
    ASSERT_FAILS(tg_state_dict_add_buffer(sd, "b", TG_F32, 5, four, x), TG_ERR_ARG, tg_state_dict_error, sd, "rank 5", NULL);
    ASSERT_FAILS(tg_state_dict_add_buffer(sd, "b", (tg_dtype)3, 1, four, x), TG_ERR_ARG, tg_state_dict_error, sd, "dtype 3", NULL);
    ASSERT_FAILS(tg_state_dict_add_buffer(sd, "b", TG_F32, 1, four, NULL), TG_ERR_ARG, tg_state_dict_error, sd, "data is NULL", NULL);
    ASSERT_FAILS(tg_state_dict_add_buffer(sd, "", TG_F32, 1, four, x), TG_ERR_ARG, tg_state_dict_error, sd, "non-empty", NULL);
    ASSERT_FAILS(tg_state_dict_add_buffer(sd, "\xff", TG_F32, 1, four, x), TG_ERR_ARG, tg_state_dict_error, sd, "UTF-8", NULL);
    ASSERT_FAILS(tg_state_dict_add_params(sd, "", NULL), TG_ERR_ARG, tg_state_dict_error, sd,
               "NULL", NULL);
    ASSERT_FAILS(tg_state_dict_set_metadata(sd, "k", "\xc3"), TG_ERR_ARG, tg_state_dict_error, sd,
               "UTF-8", NULL);
    ck_assert_int_eq(tg_state_dict_set_metadata(sd, "k", "1"), TG_OK);
    ck_assert_int_eq(tg_state_dict_set_metadata(sd, "k", "2"), TG_OK);
    ck_assert_str_eq(tg_state_dict_metadata(sd, "k"), "2");
    ck_assert_int_eq(tg_state_dict_set_metadata(sd, "k", NULL), TG_OK);
    ck_assert_ptr_null(tg_state_dict_metadata(sd, "k"));

    /* Names collide across groups and buffers: refused at save, nothing written. */
    ck_assert_int_eq(tg_state_dict_add_params(sd, "", m), TG_OK);
    ck_assert_int_eq(tg_state_dict_add_buffer(sd, "fc1/b", TG_F32, 1, four, x), TG_OK);
    const char *p = path_of("dup.safetensors");
    ASSERT_FAILS(tg_state_dict_save(sd, p), TG_ERR_ARG, tg_state_dict_error, sd,
               "two tensors are named \"fc1/b\"", NULL);
    ck_assert_int_eq(dir_entries(), 0);
    tg_state_dict_free(sd);
    sd = tg_state_dict_new();
    tg_state_dict_add_buffer(sd, "__metadata__", TG_F32, 1, four, x);
    ASSERT_FAILS(tg_state_dict_save(sd, p), TG_ERR_ARG, tg_state_dict_error, sd, "__metadata__",
               NULL);
    ck_assert_int_eq(tg_state_dict_save(NULL, p), TG_ERR_ARG);
    ASSERT_FAILS(tg_state_dict_save(sd, NULL), TG_ERR_ARG, tg_state_dict_error, sd, "NULL", NULL);
    tg_state_dict_free(sd);
    tg_state_dict_free(NULL);
    /* An empty state dict is a valid (header-only) file. */
    sd = tg_state_dict_new();
    ck_assert_int_eq(tg_state_dict_save(sd, p), TG_OK);
    ck_assert_int_eq(tg_state_dict_load(sd, p, 0), TG_OK);
    tg_state_dict_free(sd);
    tg_params_free(m);
}
END_TEST

/* ---------------------------------------------------------------------------------------
 * Atomic save (rule 17, bad inputs 41-42).
 */
START_TEST(injected_failures_leave_old_file)
{
    tg_params *a = make_model(TG_F32, 1.0), *b = make_model(TG_F32, 2.0);
    const char *p = path_of("ck.safetensors");
    char err[512];
    ck_assert_int_eq(tg_checkpoint_save_params(a, p, err, sizeof err), TG_OK);
    size_t n0 = 0, n1 = 0;
    unsigned char *before = slurp(p, &n0);
    static const char *what[] = {"", "writing the header", "fsync", "closing", "renaming"};
    for (int fault = 1; fault <= 4; fault++) {
        tg__ckpt_fault = fault;
        assert_msg(tg_checkpoint_save_params(b, p, err, sizeof err), TG_ERR_IO, err, what[fault],
                   "ck.safetensors");
        tg__ckpt_fault = 0;
        unsigned char *after = slurp(p, &n1);
        ck_assert_uint_eq(n0, n1);
        ck_assert_msg(memcmp(before, after, n0) == 0, "fault %d changed the old file", fault);
        free(after);
        ck_assert_int_eq(dir_entries(), 1); /* no temporary left */
    }
    /* The directory sync failing after the rename: the new file is in place, and we say so. */
    tg__ckpt_fault = 5;
    assert_msg(tg_checkpoint_save_params(b, p, err, sizeof err), TG_ERR_IO, err,
               "the new file is in place", NULL);
    tg__ckpt_fault = 0;
    tg_params *c = make_model(TG_F32, 0.0);
    ck_assert_int_eq(tg_checkpoint_load_params(c, p, err, sizeof err), TG_OK);
    ck_assert(params_equal(b, c));
    free(before);
    tg_params_free(a);
    tg_params_free(b);
    tg_params_free(c);
}
END_TEST

static tg_params *
make_big(float value)
{
    tg_params *p = tg_params_new(TG_F32);
    int64_t d[2] = {256, 256};
    tg_params_add(p, "big/W", 2, d);
    int64_t d2[1] = {1000};
    tg_params_add(p, "big/b", 1, d2);
    for (size_t i = 0; i < tg_params_size(p); i++)
        ((float *)tg_params_values(p))[i] = value;
    return p;
}

START_TEST(file_size_limit_leaves_old_file)
{
    tg_params *a = make_model(TG_F32, 1.0);
    const char *p = path_of("ck.safetensors");
    char err[512];
    ck_assert_int_eq(tg_checkpoint_save_params(a, p, err, sizeof err), TG_OK);
    size_t n0 = 0, n1 = 0;
    unsigned char *before = slurp(p, &n0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        /* Child: writes past 64 KiB fail with EFBIG instead of killing us. */
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {65536, 65536};
        setrlimit(RLIMIT_FSIZE, &rl);
        tg_params *big = make_big(3.0f);
        char e[512];
        tg_status st = tg_checkpoint_save_params(big, p, e, sizeof e);
        tg_params_free(big); /* free all: valgrind checks the child's leaks too */
        tg_params_free(a);
        free(before);
        _exit(st == TG_ERR_IO && strstr(e, strerror(EFBIG)) ? 0 : 1);
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "child: save did not fail with EFBIG (status %d)", status);
    unsigned char *after = slurp(p, &n1);
    ck_assert_uint_eq(n0, n1);
    ck_assert(memcmp(before, after, n0) == 0);
    ck_assert_int_eq(dir_entries(), 1);
    free(before);
    free(after);
    tg_params_free(a);
}
END_TEST

START_TEST(sigkill_during_saves_never_breaks_the_file)
{
    char p[512];
    snprintf(p, sizeof p, "%s", path_of("ck.safetensors"));
    tg_params *a = make_big(1.0f);
    char err[512];
    ck_assert_int_eq(tg_checkpoint_save_params(a, p, err, sizeof err), TG_OK);
    int rounds = getenv("TG_UNDER_VALGRIND") ? 4 : 40;
    unsigned seed = (unsigned)time(NULL);
    fprintf(stderr, "sigkill test: seed %u\n", seed);
    srand(seed);
    int saw[3] = {0};
    for (int r = 0; r < rounds; r++) {
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            tg_params *x = make_big(1.0f), *y = make_big(2.0f);
            char e[512];
            for (;;) {
                tg_checkpoint_save_params(y, p, e, sizeof e);
                tg_checkpoint_save_params(x, p, e, sizeof e);
            }
        }
        struct timespec pause = {0, (long)(rand() % 20000) * 1000};
        nanosleep(&pause, NULL);
        kill(pid, SIGKILL);
        int status;
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        /* The file loads cleanly and is all old or all new. */
        tg_params *c = make_big(0.0f);
        ck_assert_msg(tg_checkpoint_load_params(c, p, err, sizeof err) == TG_OK,
                      "round %d: %s", r, err);
        const float *v = tg_params_values(c);
        float first = v[0];
        ck_assert(first == 1.0f || first == 2.0f);
        for (size_t i = 0; i < tg_params_size(c); i++)
            ck_assert_float_eq(v[i], first);
        saw[(int)first]++;
        tg_params_free(c);
        /* A killed save may leave its temporary behind (never the target): remove it. */
        DIR *d = opendir(dir);
        struct dirent *e;
        while ((e = readdir(d)))
            if (strncmp(e->d_name, ".ck.safetensors.", 16) == 0)
                unlink(path_of(e->d_name));
        closedir(d);
    }
    fprintf(stderr, "sigkill test: %d rounds, file held the first model %d times, the second %d\n",
            rounds, saw[1], saw[2]);
    tg_params_free(a);
}
END_TEST

/* ---------------------------------------------------------------------------------------
 * Temporaries left by killed saves: the next save of the same path removes those
 * it can lock, named exactly as save_atomic names them, and nothing else.
 */
static bool
exists_in_dir(const char *name)
{
    struct stat s;
    return lstat(path_of(name), &s) == 0;
}

/* Hidden entries of dir that start with ".<base>." (a temporary of base, in any naming). */
static int
temporaries_of(const char *base, char *first, size_t size)
{
    char prefix[300];
    snprintf(prefix, sizeof prefix, ".%s.", base);
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strncmp(e->d_name, prefix, strlen(prefix)) == 0) {
            if (n++ == 0 && first)
                snprintf(first, size, "%s", e->d_name);
        }
    closedir(d);
    return n;
}

/* A child that holds an exclusive flock on dir/name (a live writer) until released. */
struct locker {
    pid_t pid;
    int release; /* write end: closing it lets the child exit */
};

static struct locker
lock_in_child(const char *name)
{
    int ready[2], rel[2];
    ck_assert_int_eq(pipe(ready), 0);
    ck_assert_int_eq(pipe(rel), 0);
    const char *p = path_of(name);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(ready[0]);
        close(rel[1]);
        int fd = open(p, O_RDWR);
        char ok = fd >= 0 && flock(fd, LOCK_EX) == 0 ? 'y' : 'n';
        if (write(ready[1], &ok, 1) != 1)
            _exit(2);
        char c;
        while (read(rel[0], &c, 1) > 0)
            ;
        _exit(0);
    }
    close(ready[1]);
    close(rel[0]);
    char ok = 0;
    ck_assert_int_eq(read(ready[0], &ok, 1), 1);
    ck_assert_int_eq(ok, 'y');
    close(ready[0]);
    return (struct locker){pid, rel[1]};
}

static void
unlock_child(struct locker l)
{
    close(l.release);
    int status;
    ck_assert_int_eq(waitpid(l.pid, &status, 0), l.pid);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

START_TEST(stale_temporaries_removed_on_next_save)
{
    tg_params *a = make_model(TG_F32, 1.0), *b = make_model(TG_F32, 0.0);
    char p[512]; /* path_of() rotates 4 buffers */
    snprintf(p, sizeof p, "%s", path_of("ck.safetensors"));
    char err[512];
    ck_assert_int_eq(tg_checkpoint_save_params(a, p, err, sizeof err), TG_OK);
    static const char *stale[] = {
        ".ck.safetensors.tg-save.AbC123",
        ".ck.safetensors.tg-save.000000",
        ".ck.safetensors.tg-save.zZ9yY8",
    };
    static const char *kept[] = {
        ".ck.safetensors.AbC123",            /* rsync's temporaries (and the old naming) */
        ".ck.safetensors.tg-save.AbC12",     /* 5 random characters */
        ".ck.safetensors.tg-save.AbC1234",   /* 7 */
        ".ck.safetensors.tg-save.AbC-12",    /* not a mkstemp character */
        ".ck.safetensors.tg-save.AbC12.",
        ".ck.safetensors.tg-save.",
        "ck.safetensors.tg-save.AbC123",     /* not hidden */
        ".other.safetensors.tg-save.AbC123", /* another checkpoint's */
        ".xck.safetensors.tg-save.AbC123",
        ".k.safetensors.tg-save.AbC123",
        "victim",
    };
    for (size_t i = 0; i < sizeof stale / sizeof stale[0]; i++)
        craft_raw(stale[i], "partial", 7);
    for (size_t i = 0; i < sizeof kept / sizeof kept[0]; i++)
        craft_raw(kept[i], "keep me", 7);
    /* Matching names that are not regular files the library made: kept, and never opened in a
     * way that blocks (the FIFO) or follows (the link). */
    ck_assert_int_eq(mkdir(path_of(".ck.safetensors.tg-save.DiR001"), 0755), 0);
    ck_assert_int_eq(symlink("victim", path_of(".ck.safetensors.tg-save.LnK001")), 0);
    ck_assert_int_eq(mkfifo(path_of(".ck.safetensors.tg-save.FiFo01"), 0600), 0);
    /* A live writer: its temporary is locked by another process. */
    craft_raw(".ck.safetensors.tg-save.LiVe01", "writing", 7);
    struct locker live = lock_in_child(".ck.safetensors.tg-save.LiVe01");

    ck_assert_msg(tg_checkpoint_save_params(b, p, err, sizeof err) == TG_OK, "%s", err);
    for (size_t i = 0; i < sizeof stale / sizeof stale[0]; i++)
        ck_assert_msg(!exists_in_dir(stale[i]), "stale temporary %s was not removed", stale[i]);
    for (size_t i = 0; i < sizeof kept / sizeof kept[0]; i++)
        ck_assert_msg(exists_in_dir(kept[i]), "%s was removed", kept[i]);
    ck_assert(exists_in_dir(".ck.safetensors.tg-save.DiR001"));
    ck_assert(exists_in_dir(".ck.safetensors.tg-save.LnK001"));
    ck_assert(exists_in_dir(".ck.safetensors.tg-save.FiFo01"));
    ck_assert_msg(exists_in_dir(".ck.safetensors.tg-save.LiVe01"),
                  "the temporary of a live (locked) writer was removed");
    size_t n = 0;
    unsigned char *v = slurp(path_of("victim"), &n);
    ck_assert(v && n == 7 && memcmp(v, "keep me", 7) == 0);
    free(v);
    int want = 1 + (int)(sizeof kept / sizeof kept[0]) + 4;
    ck_assert_int_eq(dir_entries(), want);
    tg_params *c = make_model(TG_F32, 9.0);
    ck_assert_int_eq(tg_checkpoint_load_params(c, p, err, sizeof err), TG_OK);
    ck_assert(params_equal(b, c));

    /* The writer is gone (died without renaming): its temporary is stale now. */
    unlock_child(live);
    ck_assert_int_eq(tg_checkpoint_save_params(a, p, err, sizeof err), TG_OK);
    ck_assert(!exists_in_dir(".ck.safetensors.tg-save.LiVe01"));
    ck_assert_int_eq(dir_entries(), want - 1);
    tg_params_free(a);
    tg_params_free(b);
    tg_params_free(c);
}
END_TEST

/* 64 tensors of 64 Ki floats (16 MiB, one write each), all `value`; 16 of them (4 MiB) under
 * valgrind, where writing is slow enough that a quarter still takes long to save. */
static tg_params *
make_huge(float value)
{
    tg_params *p = tg_params_new(TG_F32);
    int layers = getenv("TG_UNDER_VALGRIND") ? 16 : 64;
    for (int i = 0; i < layers; i++) {
        char name[32];
        snprintf(name, sizeof name, "layer%02d/W", i);
        int64_t d[2] = {256, 256};
        ck_assert_ptr_nonnull(tg_params_add(p, name, 2, d));
    }
    for (size_t i = 0; i < tg_params_size(p); i++)
        ((float *)tg_params_values(p))[i] = value;
    return p;
}

/* Forks a child that saves `value` to dir/base (forever when `loop`), and stops it (SIGSTOP)
 * once a temporary of base exists and is partly written (0 < size < full). Returns the stopped
 * child, or -1 when the child finished before it was caught. */
static pid_t
stop_child_mid_save(const char *base, float value, bool loop, off_t full)
{
    char p[512];
    snprintf(p, sizeof p, "%s", path_of(base));
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        tg_params *x = make_huge(value);
        char e[512];
        tg_status st;
        do
            st = tg_checkpoint_save_params(x, p, e, sizeof e);
        while (loop);
        tg_params_free(x);
        _exit(st == TG_OK ? 0 : 1);
    }
    for (long spins = 0; spins < 2000000; spins++) {
        char name[256];
        struct stat s;
        if (temporaries_of(base, name, sizeof name) == 1 && lstat(path_of(name), &s) == 0 &&
            s.st_size > 0 && s.st_size < full) {
            kill(pid, SIGSTOP);
            int status;
            ck_assert_int_eq(waitpid(pid, &status, WUNTRACED), pid);
            if (!WIFSTOPPED(status))
                return -1; /* it exited meanwhile */
            /* Frozen now: is it still mid-write? */
            if (temporaries_of(base, name, sizeof name) == 1 && lstat(path_of(name), &s) == 0 &&
                s.st_size > 0 && s.st_size < full)
                return pid;
            kill(pid, SIGCONT);
        }
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid)
            return -1;
        struct timespec pause = {0, 20000};
        nanosleep(&pause, NULL);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    ck_abort_msg("never saw a temporary of %s mid-write", base);
    return -1;
}

START_TEST(sigkill_leftover_removed_by_next_save)
{
    tg_params *big = make_huge(1.0f), *small = make_model(TG_F32, 1.0);
    char p[512]; /* path_of() rotates 4 buffers */
    snprintf(p, sizeof p, "%s", path_of("ck.safetensors"));
    char err[512];
    ck_assert_int_eq(tg_checkpoint_save_params(big, p, err, sizeof err), TG_OK);
    struct stat s;
    ck_assert_int_eq(stat(p, &s), 0);
    pid_t pid = -1;
    for (int tries = 0; pid < 0 && tries < 20; tries++)
        pid = stop_child_mid_save("ck.safetensors", 2.0f, true, s.st_size);
    ck_assert_int_gt(pid, 0);
    kill(pid, SIGKILL);
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    char left[256];
    ck_assert_int_eq(temporaries_of("ck.safetensors", left, sizeof left), 1);
    ck_assert_int_eq(dir_entries(), 2);
    /* The killed save left its partial temporary; the file itself is complete. */
    tg_params *c = make_huge(0.0f);
    ck_assert_msg(tg_checkpoint_load_params(c, p, err, sizeof err) == TG_OK, "%s", err);
    /* The next save (in this process) removes it. */
    ck_assert_int_eq(tg_checkpoint_save_params(big, p, err, sizeof err), TG_OK);
    ck_assert_msg(!exists_in_dir(left), "the killed save's temporary %s is still there", left);
    ck_assert_int_eq(dir_entries(), 1);
    (void)small;
    tg_params_free(big);
    tg_params_free(small);
    tg_params_free(c);
}
END_TEST

START_TEST(live_save_keeps_its_temporary)
{
    /* A save in another process, frozen mid-write, holds its temporary: a save of the same path
     * meanwhile must not remove it, and the frozen one completes when resumed. */
    tg_params *big = make_huge(1.0f), *small = make_model(TG_F32, 1.0);
    char p[512]; /* path_of() rotates 4 buffers */
    snprintf(p, sizeof p, "%s", path_of("ck.safetensors"));
    char err[512];
    ck_assert_int_eq(tg_checkpoint_save_params(big, p, err, sizeof err), TG_OK);
    struct stat s;
    ck_assert_int_eq(stat(p, &s), 0);
    off_t full = s.st_size;
    pid_t pid = -1;
    for (int tries = 0; pid < 0 && tries < 50; tries++)
        pid = stop_child_mid_save("ck.safetensors", 3.0f, false, full);
    ck_assert_int_gt(pid, 0);
    char live[256];
    ck_assert_int_eq(temporaries_of("ck.safetensors", live, sizeof live), 1);
    ck_assert_msg(tg_checkpoint_save_params(small, p, err, sizeof err) == TG_OK, "%s", err);
    ck_assert_msg(exists_in_dir(live), "a live save's temporary %s was removed", live);
    kill(pid, SIGCONT);
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the resumed save failed");
    ck_assert_int_eq(dir_entries(), 1);
    tg_params *c = make_huge(0.0f);
    ck_assert_msg(tg_checkpoint_load_params(c, p, err, sizeof err) == TG_OK, "%s", err);
    ck_assert_float_eq(((const float *)tg_params_values(c))[0], 3.0f);
    tg_params_free(big);
    tg_params_free(small);
    tg_params_free(c);
}
END_TEST

/* ---------------------------------------------------------------------------------------
 * Saving through symbolic links: the link stays, its (final) target is replaced atomically in
 * the target's directory, or created when the link dangles.
 */
static void
assert_link(const char *name, const char *target)
{
    char buf[600];
    struct stat s;
    ck_assert_msg(lstat(path_of(name), &s) == 0 && S_ISLNK(s.st_mode),
                  "%s is no longer a symbolic link", name);
    ssize_t r = readlink(path_of(name), buf, sizeof buf - 1);
    ck_assert_int_gt(r, 0);
    buf[r] = '\0';
    ck_assert_str_eq(buf, target);
}

static void
assert_holds(const char *name, tg_params *want)
{
    char err[512];
    tg_params *c = make_model(TG_F32, 99.0);
    struct stat s;
    ck_assert_msg(lstat(path_of(name), &s) == 0 && S_ISREG(s.st_mode), "%s: no regular file",
                  name);
    ck_assert_msg(tg_checkpoint_load_params(c, path_of(name), err, sizeof err) == TG_OK, "%s",
                  err);
    ck_assert_msg(params_equal(c, want), "%s does not hold the saved model", name);
    tg_params_free(c);
}

/* Entries of dir/sub other than . and .. */
static int
entries_in(const char *sub)
{
    DIR *d = opendir(path_of(sub));
    ck_assert_ptr_nonnull(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return n;
}

START_TEST(save_through_symlinks)
{
    tg_params *a = make_model(TG_F32, 1.0), *b = make_model(TG_F32, 2.0),
              *c = make_model(TG_F32, 3.0), *d = make_model(TG_F32, 4.0);
    char err[512];
    ck_assert_int_eq(mkdir(path_of("real"), 0755), 0);
    ck_assert_int_eq(mkdir(path_of("sub"), 0755), 0);
    ck_assert_int_eq(tg_checkpoint_save_params(a, path_of("real/ckpt-10.safetensors"), err,
                                               sizeof err), TG_OK);
    ck_assert_int_eq(chmod(path_of("real/ckpt-10.safetensors"), 0640), 0);

    /* A relative link: the target is replaced, the link keeps pointing at it. */
    ck_assert_int_eq(symlink("real/ckpt-10.safetensors", path_of("latest.safetensors")), 0);
    ck_assert_msg(tg_checkpoint_save_params(b, path_of("latest.safetensors"), err, sizeof err) ==
                      TG_OK, "%s", err);
    assert_link("latest.safetensors", "real/ckpt-10.safetensors");
    assert_holds("real/ckpt-10.safetensors", b);
    struct stat s;
    ck_assert_int_eq(stat(path_of("real/ckpt-10.safetensors"), &s), 0);
    ck_assert_int_eq(s.st_mode & 07777, 0640); /* the target's permissions */

    /* An absolute link. */
    char abs[600];
    snprintf(abs, sizeof abs, "%s/real/ckpt-10.safetensors", dir);
    ck_assert_int_eq(symlink(abs, path_of("abs.safetensors")), 0);
    ck_assert_int_eq(tg_checkpoint_save_params(c, path_of("abs.safetensors"), err, sizeof err),
                     TG_OK);
    assert_link("abs.safetensors", abs);
    assert_holds("real/ckpt-10.safetensors", c);

    /* A chain, with a link in another directory whose relative target is relative to it. */
    ck_assert_int_eq(symlink("chain2", path_of("chain1")), 0);
    ck_assert_int_eq(symlink("sub/chain3", path_of("chain2")), 0);
    ck_assert_int_eq(symlink("../real/ckpt-10.safetensors", path_of("sub/chain3")), 0);
    ck_assert_int_eq(tg_checkpoint_save_params(d, path_of("chain1"), err, sizeof err), TG_OK);
    assert_link("chain1", "chain2");
    assert_link("chain2", "sub/chain3");
    assert_link("sub/chain3", "../real/ckpt-10.safetensors");
    assert_holds("real/ckpt-10.safetensors", d);

    /* Dangling links (direct and through a chain): the target is created. */
    ck_assert_int_eq(symlink("real/ckpt-11.safetensors", path_of("next.safetensors")), 0);
    ck_assert_int_eq(tg_checkpoint_save_params(a, path_of("next.safetensors"), err, sizeof err),
                     TG_OK);
    assert_link("next.safetensors", "real/ckpt-11.safetensors");
    assert_holds("real/ckpt-11.safetensors", a);
    ck_assert_int_eq(stat(path_of("real/ckpt-11.safetensors"), &s), 0);
    ck_assert_int_eq(s.st_mode & 07777, 0644);
    ck_assert_int_eq(symlink("../real/ckpt-12.safetensors", path_of("sub/d2")), 0);
    ck_assert_int_eq(symlink("sub/d2", path_of("d1")), 0);
    ck_assert_int_eq(tg_checkpoint_save_params(b, path_of("d1"), err, sizeof err), TG_OK);
    assert_link("d1", "sub/d2");
    assert_link("sub/d2", "../real/ckpt-12.safetensors");
    assert_holds("real/ckpt-12.safetensors", b);

    /* Nothing else was left anywhere: no temporaries next to the links or the targets. */
    ck_assert_int_eq(entries_in("real"), 3);
    ck_assert_int_eq(entries_in("sub"), 2);
    ck_assert_int_eq(dir_entries(), 2 + 6); /* real, sub, 6 links */
    tg_params_free(a);
    tg_params_free(b);
    tg_params_free(c);
    tg_params_free(d);
}
END_TEST

START_TEST(save_through_bad_symlinks)
{
    tg_params *a = make_model(TG_F32, 1.0);
    char err[512];
    /* Dangling into a missing directory: refused, naming the path, the target's directory and
     * the reason; the link stays. */
    ck_assert_int_eq(symlink("nodir/x.safetensors", path_of("l-nodir")), 0);
    assert_msg(tg_checkpoint_save_params(a, path_of("l-nodir"), err, sizeof err), TG_ERR_IO, err,
               "l-nodir", strerror(ENOENT));
    ck_assert_msg(strstr(err, "nodir/x.safetensors"), "no target in: %s", err);
    assert_link("l-nodir", "nodir/x.safetensors");
    /* A loop. */
    ck_assert_int_eq(symlink("loop2", path_of("loop1")), 0);
    ck_assert_int_eq(symlink("loop1", path_of("loop2")), 0);
    assert_msg(tg_checkpoint_save_params(a, path_of("loop1"), err, sizeof err), TG_ERR_IO, err,
               "loop1", strerror(ELOOP));
    assert_link("loop1", "loop2");
    assert_link("loop2", "loop1");
    /* To a directory and to a FIFO: not regular files, never replaced. */
    ck_assert_int_eq(mkdir(path_of("adir"), 0755), 0);
    ck_assert_int_eq(symlink("adir", path_of("l-dir")), 0);
    assert_msg(tg_checkpoint_save_params(a, path_of("l-dir"), err, sizeof err), TG_ERR_IO, err,
               "l-dir", "not a regular file");
    assert_link("l-dir", "adir");
    ck_assert_int_eq(mkfifo(path_of("fifo"), 0600), 0);
    ck_assert_int_eq(symlink("fifo", path_of("l-fifo")), 0);
    assert_msg(tg_checkpoint_save_params(a, path_of("l-fifo"), err, sizeof err), TG_ERR_IO, err,
               "l-fifo", "not a regular file");
    assert_link("l-fifo", "fifo");
    struct stat s;
    ck_assert(lstat(path_of("fifo"), &s) == 0 && S_ISFIFO(s.st_mode));
    ck_assert_int_eq(entries_in("adir"), 0);
    ck_assert_int_eq(dir_entries(), 7); /* the 5 links, adir, fifo: no temporary */

    /* A link another user planted in a sticky world-writable directory (/tmp) is not
     * followed (as fs.protected_symlinks); one of our own there is. Needs root for lchown. */
    if (geteuid() == 0) {
        ck_assert_int_eq(mkdir(path_of("pub"), 0777), 0);
        ck_assert_int_eq(chmod(path_of("pub"), 01777), 0);
        craft_raw("victim", "keep me", 7);
        ck_assert_int_eq(symlink("../victim", path_of("pub/evil")), 0);
        ck_assert_int_eq(lchown(path_of("pub/evil"), 12345, 12345), 0);
        assert_msg(tg_checkpoint_save_params(a, path_of("pub/evil"), err, sizeof err), TG_ERR_IO,
                   err, "pub/evil", "sticky");
        size_t n = 0;
        unsigned char *v = slurp(path_of("victim"), &n);
        ck_assert(v && n == 7 && memcmp(v, "keep me", 7) == 0);
        free(v);
        assert_link("pub/evil", "../victim");
        ck_assert_int_eq(symlink("../mine.safetensors", path_of("pub/mine")), 0);
        ck_assert_int_eq(tg_checkpoint_save_params(a, path_of("pub/mine"), err, sizeof err),
                         TG_OK);
        assert_link("pub/mine", "../mine.safetensors");
        assert_holds("mine.safetensors", a);
    }
    tg_params_free(a);
}
END_TEST

/* ---------------------------------------------------------------------------------------
 * Allocation failure at every site in turn (through the allocator hook).
 */
static long alloc_budget;
static long alloc_count;

static void *
failing_malloc(size_t n, void *ctx)
{
    (void)ctx;
    if (alloc_budget >= 0 && alloc_count++ >= alloc_budget)
        return NULL;
    return malloc(n);
}

static void *
failing_realloc(void *ptr, size_t n, void *ctx)
{
    (void)ctx;
    if (alloc_budget >= 0 && alloc_count++ >= alloc_budget)
        return NULL;
    return realloc(ptr, n);
}

static void
plain_free(void *ptr, void *ctx)
{
    (void)ctx;
    free(ptr);
}

START_TEST(allocation_failures)
{
    tg_params *a = make_model(TG_F32, 1.0), *b = make_model(TG_F32, 5.0);
    tg_params *orig = make_model(TG_F32, 5.0);
    const char *p = path_of("a.safetensors");
    char err[512];
    ck_assert_int_eq(tg_checkpoint_save_params(a, p, err, sizeof err), TG_OK);
    tg_allocator hook = {failing_malloc, failing_realloc, plain_free, NULL};
    tg_set_allocator(&hook);
    int failures = 0;
    for (alloc_budget = 0;; alloc_budget++) {
        alloc_count = 0;
        tg_status st = tg_checkpoint_load_params(b, p, err, sizeof err);
        if (st == TG_OK)
            break;
        ck_assert_msg(st == TG_ERR_NOMEM, "budget %ld: %s", alloc_budget, err);
        ck_assert(params_equal(b, orig));
        failures++;
    }
    for (alloc_budget = 0;; alloc_budget++) {
        alloc_count = 0;
        tg_status st = tg_checkpoint_save_params(a, path_of("s.safetensors"), err, sizeof err);
        if (st == TG_OK)
            break;
        ck_assert_msg(st == TG_ERR_NOMEM, "budget %ld: %s", alloc_budget, err);
        ck_assert_int_eq(dir_entries(), 1);
        failures++;
    }
    tg_set_allocator(NULL);
    ck_assert(params_equal(a, b));
    ck_assert_int_gt(failures, 5);
    tg_params_free(a);
    tg_params_free(b);
    tg_params_free(orig);
}
END_TEST

static Suite *
checkpoint_suite(void)
{
    Suite *s = suite_create("checkpoint");
    TCase *tc = tcase_create("round trips");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, round_trip_bitwise, 0, 2);
    tcase_add_test(tc, round_trip_shorthand_and_odd_names);
    suite_add_tcase(s, tc);

    tc = tcase_create("reference sample files");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, reference_samples_inspect, 0, sizeof samples / sizeof samples[0]);
    tcase_add_loop_test(tc, reference_samples_load, 0, sizeof samples / sizeof samples[0]);
    tcase_add_test(tc, reference_overall);
    suite_add_tcase(s, tc);

    tc = tcase_create("malformed headers");
    tcase_add_checked_fixture(tc, setup_model, teardown_model);
    tcase_add_loop_test(tc, bad_header_rejected, 0, sizeof bad_headers / sizeof bad_headers[0]);
    tcase_add_test(tc, escaped_names_cut_in_messages);
    tcase_add_test(tc, good_header_variants_accepted);
    tcase_add_test(tc, header_length_checks);
    suite_add_tcase(s, tc);

    tc = tcase_create("paths and io errors");
    tcase_add_checked_fixture(tc, setup_model, teardown_model);
    tcase_add_test(tc, io_errors);
    suite_add_tcase(s, tc);

    tc = tcase_create("all-or-nothing and strictness");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, all_or_nothing_second_tensor_bad);
    tcase_add_test(tc, missing_and_unexpected_flags);
    tcase_add_test(tc, finite_check_opt_in);
    tcase_add_test(tc, state_dict_api_errors);
    suite_add_tcase(s, tc);

    tc = tcase_create("atomic save");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, injected_failures_leave_old_file);
    tcase_add_test(tc, file_size_limit_leaves_old_file);
    tcase_add_test(tc, sigkill_during_saves_never_breaks_the_file);
    suite_add_tcase(s, tc);

    tc = tcase_create("temporaries and symlinks");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, stale_temporaries_removed_on_next_save);
    tcase_add_test(tc, sigkill_leftover_removed_by_next_save);
    tcase_add_test(tc, live_save_keeps_its_temporary);
    tcase_add_test(tc, save_through_symlinks);
    tcase_add_test(tc, save_through_bad_symlinks);
    suite_add_tcase(s, tc);

    tc = tcase_create("allocation failures");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, allocation_failures);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    return run_suite(checkpoint_suite());
}
