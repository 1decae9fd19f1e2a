/* Data readers: IDX (plain and gzip), numeric CSV, minibatches. Every malformed file is
 * crafted in a fresh temporary directory by the test that uses it. */
#include "common.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <zlib.h>

#include <tapegrad/data.h>

static char dir[256];
static tg_dataset *ds;

static void
setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/tg-data-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    ds = tg_dataset_new();
    ck_assert_ptr_nonnull(ds);
}

static void
teardown(void)
{
    tg_dataset_free(ds);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
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

static const char *
write_file(const char *name, const void *data, size_t n)
{
    const char *p = path_of(name);
    FILE *f = fopen(p, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(data, 1, n, f), n);
    ck_assert_int_eq(fclose(f), 0);
    return p;
}

static const char *
write_gz(const char *name, const void *data, size_t n)
{
    const char *p = path_of(name);
    gzFile g = gzopen(p, "wb");
    ck_assert_ptr_nonnull(g);
    if (n)
        ck_assert_int_eq(gzwrite(g, data, (unsigned)n), (int)n);
    ck_assert_int_eq(gzclose(g), Z_OK);
    return p;
}

static const char *
write_text(const char *name, const char *text)
{
    return write_file(name, text, strlen(text));
}

static void
append_file(const char *p, const void *data, size_t n)
{
    FILE *f = fopen(p, "ab");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(data, 1, n, f), n);
    ck_assert_int_eq(fclose(f), 0);
}

static long
size_of(const char *p)
{
    struct stat st;
    ck_assert_int_eq(stat(p, &st), 0);
    return (long)st.st_size;
}

/* Appends the bytes of file `from` to file `to` (to make multi-member gzip files). */
static void
append_file_of(const char *to, const char *from)
{
    static unsigned char b[1 << 16];
    FILE *f = fopen(from, "rb");
    ck_assert_ptr_nonnull(f);
    size_t n = fread(b, 1, sizeof b, f);
    fclose(f);
    append_file(to, b, n);
}

/* An IDX file in memory: header + payload. */
struct buf {
    unsigned char b[1 << 12];
    size_t n;
};

static void
put_be32(struct buf *x, uint32_t v)
{
    x->b[x->n++] = (unsigned char)(v >> 24);
    x->b[x->n++] = (unsigned char)(v >> 16);
    x->b[x->n++] = (unsigned char)(v >> 8);
    x->b[x->n++] = (unsigned char)v;
}

static struct buf
idx_header(int type, int rank, const uint32_t *dims)
{
    struct buf x = {{0}, 0};
    x.b[x.n++] = 0;
    x.b[x.n++] = 0;
    x.b[x.n++] = (unsigned char)type;
    x.b[x.n++] = (unsigned char)rank;
    for (int i = 0; i < rank; i++)
        put_be32(&x, dims[i]);
    return x;
}

/* 3 images of 2x2 u8: image i has pixels 10i + {0, 1, 2, 255}. Labels 2, 0, 1. */
static struct buf
images_u8(void)
{
    uint32_t dims[3] = {3, 2, 2};
    struct buf x = idx_header(0x08, 3, dims);
    for (int i = 0; i < 3; i++) {
        x.b[x.n++] = (unsigned char)(10 * i);
        x.b[x.n++] = (unsigned char)(10 * i + 1);
        x.b[x.n++] = (unsigned char)(10 * i + 2);
        x.b[x.n++] = 255;
    }
    return x;
}

static struct buf
labels_u8(uint32_t n)
{
    uint32_t dims[1] = {n};
    struct buf x = idx_header(0x08, 1, dims);
    static const unsigned char lab[] = {2, 0, 1, 3, 4};
    for (uint32_t i = 0; i < n; i++)
        x.b[x.n++] = lab[i % 5];
    return x;
}

/* Loads the good 3-image set so that a failing load can be shown to leave it as it was. */
static void
load_good(void)
{
    struct buf im = images_u8(), lb = labels_u8(3);
    ck_assert_int_eq(tg_dataset_load_idx(ds, write_file("good-img", im.b, im.n),
                                         write_file("good-lab", lb.b, lb.n), NULL),
                     TG_OK);
}

static void
assert_good_unchanged(void)
{
    ck_assert_uint_eq(tg_dataset_count(ds), 3);
    ck_assert_uint_eq(tg_dataset_features(ds), 4);
    const float *x = tg_dataset_data(ds);
    ck_assert_float_eq(x[5], 11.0f);
    ck_assert_int_eq(tg_dataset_labels(ds)[0], 2);
}

/* Asserts the last call failed with status s and a message holding every needle. */
static void
assert_fail(tg_status got, tg_status s, const char *n1, const char *n2)
{
    const char *msg = tg_dataset_error(ds);
    ck_assert_msg(got == s, "status %d (%s), expected %d; message: %s", got,
                  tg_status_string(got), s, msg ? msg : "(none)");
    ck_assert_ptr_nonnull(msg);
    ck_assert_msg(strstr(msg, n1), "message lacks \"%s\": %s", n1, msg);
    if (n2)
        ck_assert_msg(strstr(msg, n2), "message lacks \"%s\": %s", n2, msg);
}

/* ---------------------------------------------------------------------------------------
 * IDX: good files.
 */
START_TEST(idx_plain_and_gzip_agree)
{
    struct buf im = images_u8(), lb = labels_u8(3);
    for (int gz = 0; gz < 2; gz++) {
        const char *pi = gz ? write_gz("i.gz", im.b, im.n) : write_file("i", im.b, im.n);
        const char *pl = gz ? write_gz("l.gz", lb.b, lb.n) : write_file("l", lb.b, lb.n);
        ck_assert_int_eq(tg_dataset_load_idx(ds, pi, pl, NULL), TG_OK);
        ck_assert_ptr_null(tg_dataset_error(ds));
        ck_assert_uint_eq(tg_dataset_count(ds), 3);
        ck_assert_uint_eq(tg_dataset_features(ds), 4);
        ck_assert_int_eq(tg_dataset_ndim(ds), 2);
        ck_assert_int_eq(tg_dataset_dim(ds, 0), 2);
        ck_assert_int_eq(tg_dataset_dim(ds, 1), 2);
        ck_assert_int_eq(tg_dataset_dim(ds, 2), 0);
        ck_assert_int_eq(tg_dataset_dtype(ds), TG_F32);
        const float *x = tg_dataset_data(ds);
        ck_assert_float_eq(x[0], 0.0f);
        ck_assert_float_eq(x[6], 12.0f);
        ck_assert_float_eq(x[11], 255.0f);
        const int32_t *y = tg_dataset_labels(ds);
        ck_assert_int_eq(y[0], 2);
        ck_assert_int_eq(y[1], 0);
        ck_assert_int_eq(y[2], 1);
        ck_assert_int_eq(tg_dataset_num_classes(ds), 3);
    }
}
END_TEST

START_TEST(idx_scale_and_f64)
{
    struct buf im = images_u8();
    const char *pi = write_file("i", im.b, im.n);
    tg_idx_options o = {.dtype = TG_F64, .scale_to_unit = true};
    ck_assert_int_eq(tg_dataset_load_idx(ds, pi, NULL, &o), TG_OK);
    ck_assert_ptr_null(tg_dataset_labels(ds));
    ck_assert_int_eq(tg_dataset_num_classes(ds), 0);
    const double *x = tg_dataset_data(ds);
    ck_assert_double_eq(x[3], 1.0);
    ck_assert_double_eq(x[4], 10.0 / 255.0);
    o.dtype = TG_F32;
    ck_assert_int_eq(tg_dataset_load_idx(ds, pi, NULL, &o), TG_OK);
    const float *xf = tg_dataset_data(ds);
    ck_assert_float_eq(xf[3], 1.0f);
    ck_assert_float_eq(xf[5], 11.0f / 255.0f);
    for (size_t i = 0; i < 12; i++)
        ck_assert(xf[i] >= 0.0f && xf[i] <= 1.0f);
}
END_TEST

START_TEST(idx_wide_types_big_endian)
{
    /* i16, i32, f32, f64 payloads: 2 examples of 1 value each, big-endian. */
    uint32_t dims[1] = {2};
    struct buf x = idx_header(0x0B, 1, dims);
    x.b[x.n++] = 0xFF, x.b[x.n++] = 0xFE; /* -2 */
    x.b[x.n++] = 0x01, x.b[x.n++] = 0x00; /* 256 */
    ck_assert_int_eq(tg_dataset_load_idx(ds, write_file("i16", x.b, x.n), NULL, NULL), TG_OK);
    ck_assert_float_eq(((const float *)tg_dataset_data(ds))[0], -2.0f);
    ck_assert_float_eq(((const float *)tg_dataset_data(ds))[1], 256.0f);

    x = idx_header(0x0C, 1, dims);
    put_be32(&x, 0xFFFFFFFFu); /* -1 */
    put_be32(&x, 70000);
    ck_assert_int_eq(tg_dataset_load_idx(ds, write_file("i32", x.b, x.n), NULL, NULL), TG_OK);
    ck_assert_float_eq(((const float *)tg_dataset_data(ds))[0], -1.0f);
    ck_assert_float_eq(((const float *)tg_dataset_data(ds))[1], 70000.0f);

    x = idx_header(0x0D, 1, dims);
    put_be32(&x, 0x3FC00000u); /* 1.5f */
    put_be32(&x, 0xC0200000u); /* -2.5f */
    ck_assert_int_eq(tg_dataset_load_idx(ds, write_file("f32", x.b, x.n), NULL, NULL), TG_OK);
    ck_assert_float_eq(((const float *)tg_dataset_data(ds))[0], 1.5f);
    ck_assert_float_eq(((const float *)tg_dataset_data(ds))[1], -2.5f);

    x = idx_header(0x0E, 1, dims);
    put_be32(&x, 0x3FF80000u), put_be32(&x, 0); /* 1.5 */
    put_be32(&x, 0x7FEFFFFFu), put_be32(&x, 0xFFFFFFFFu); /* DBL_MAX */
    tg_idx_options o = {.dtype = TG_F64};
    ck_assert_int_eq(tg_dataset_load_idx(ds, write_file("f64", x.b, x.n), NULL, &o), TG_OK);
    ck_assert_double_eq(((const double *)tg_dataset_data(ds))[0], 1.5);
    /* DBL_MAX does not fit in float32: an error, not undefined behaviour. */
    assert_fail(tg_dataset_load_idx(ds, path_of("f64"), NULL, NULL), TG_ERR_FORMAT,
                "outside the float32 range", NULL);
}
END_TEST

START_TEST(idx_empty_set)
{
    uint32_t dims[3] = {0, 28, 28};
    struct buf x = idx_header(0x08, 3, dims);
    ck_assert_int_eq(tg_dataset_load_idx(ds, write_file("e", x.b, x.n), NULL, NULL), TG_OK);
    ck_assert_uint_eq(tg_dataset_count(ds), 0);
    ck_assert_uint_eq(tg_dataset_features(ds), 784);
}
END_TEST

/* ---------------------------------------------------------------------------------------
 * IDX: malformed files. Each leaves the previously loaded set unchanged.
 */
START_TEST(idx_bad_magic)
{
    load_good();
    struct buf x = images_u8();
    x.b[0] = 0x12;
    assert_fail(tg_dataset_load_idx(ds, write_file("m", x.b, x.n), NULL, NULL), TG_ERR_FORMAT,
                "bad magic 12 00 08 03", "/m\"");
    assert_good_unchanged();
    x = images_u8();
    x.b[1] = 1;
    assert_fail(tg_dataset_load_idx(ds, write_file("m2", x.b, x.n), NULL, NULL), TG_ERR_FORMAT,
                "bad magic", NULL);
    assert_good_unchanged();
}
END_TEST

START_TEST(idx_unknown_type_and_rank)
{
    load_good();
    struct buf x = images_u8();
    x.b[2] = 0x0A;
    assert_fail(tg_dataset_load_idx(ds, write_file("t", x.b, x.n), NULL, NULL), TG_ERR_FORMAT,
                "unknown IDX type byte 0x0a", NULL);
    x = images_u8();
    x.b[3] = 0;
    assert_fail(tg_dataset_load_idx(ds, write_file("r0", x.b, x.n), NULL, NULL), TG_ERR_FORMAT,
                "rank 0", NULL);
    x.b[3] = 200;
    assert_fail(tg_dataset_load_idx(ds, write_file("r200", x.b, x.n), NULL, NULL), TG_ERR_FORMAT,
                "rank 200", NULL);
    assert_good_unchanged();
}
END_TEST

START_TEST(idx_truncated)
{
    load_good();
    struct buf x = images_u8();
    /* Empty, inside the magic, inside the dims, inside the data: plain and gzip. */
    const size_t cuts[] = {0, 3, 9, x.n - 1};
    const char *want[] = {"shorter than the 4-byte IDX magic", "shorter than the 4-byte IDX magic",
                          "truncated: the dimensions", "truncated"};
    for (int gz = 0; gz < 2; gz++)
        for (size_t k = 0; k < 4; k++) {
            char name[32];
            snprintf(name, sizeof name, "cut%zu%s", k, gz ? ".gz" : "");
            const char *p = gz ? write_gz(name, x.b, cuts[k]) : write_file(name, x.b, cuts[k]);
            assert_fail(tg_dataset_load_idx(ds, p, NULL, NULL), TG_ERR_FORMAT, want[k], name);
            assert_good_unchanged();
        }
    /* The data check for plain files names the byte counts. */
    assert_fail(tg_dataset_load_idx(ds, path_of("cut3"), NULL, NULL), TG_ERR_FORMAT,
                "need 12 bytes of data after byte 16, the file has 11", NULL);
}
END_TEST

START_TEST(idx_trailing_bytes)
{
    load_good();
    struct buf x = images_u8();
    x.b[x.n++] = 7;
    x.b[x.n++] = 7;
    assert_fail(tg_dataset_load_idx(ds, write_file("tr", x.b, x.n), NULL, NULL), TG_ERR_FORMAT,
                "2 trailing bytes", NULL);
    /* the message says where the trailing bytes start. */
    assert_fail(tg_dataset_load_idx(ds, path_of("tr"), NULL, NULL), TG_ERR_FORMAT,
                "2 trailing bytes from byte 28", NULL);
    assert_fail(tg_dataset_load_idx(ds, write_gz("tr.gz", x.b, x.n), NULL, NULL), TG_ERR_FORMAT,
                "2 trailing bytes", NULL);
    assert_good_unchanged();
}
END_TEST

START_TEST(idx_dims_overflow)
{
    load_good();
    uint32_t dims[4] = {0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu};
    struct buf x = idx_header(0x0E, 4, dims);
    assert_fail(tg_dataset_load_idx(ds, write_file("ovf", x.b, x.n), NULL, NULL), TG_ERR_FORMAT,
                "overflow", "4294967295x4294967295");
    /* A first dim of 0 does not excuse the others from overflowing. */
    uint32_t dims0[4] = {0, 0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu};
    x = idx_header(0x08, 4, dims0);
    assert_fail(tg_dataset_load_idx(ds, write_file("ovf0", x.b, x.n), NULL, NULL), TG_ERR_FORMAT,
                "overflow", NULL);
    assert_good_unchanged();
}
END_TEST

START_TEST(idx_gzip_lying_header)
{
    /* A gzip file whose header claims 60000x10000x10000 bytes but holds 12: fails as
     * truncated, having allocated about what was there (the buffer grows with the data). */
    load_good();
    uint32_t dims[3] = {60000, 10000, 10000};
    struct buf x = idx_header(0x08, 3, dims);
    memset(x.b + x.n, 1, 12);
    x.n += 12;
    assert_fail(tg_dataset_load_idx(ds, write_gz("lie.gz", x.b, x.n), NULL, NULL),
                TG_ERR_FORMAT, "truncated", "only 12 present");
    assert_good_unchanged();
}
END_TEST

START_TEST(idx_gzip_corrupt)
{
    load_good();
    /* Compress something large enough that a flipped byte lands in deflate data. */
    static unsigned char big[4 + 4 * 3 + 3 * 100 * 100];
    uint32_t dims[3] = {3, 100, 100};
    struct buf h = idx_header(0x08, 3, dims);
    memcpy(big, h.b, h.n);
    for (size_t i = h.n; i < sizeof big; i++)
        big[i] = (unsigned char)(i * 2654435761u >> 13);
    const char *p = write_gz("c.gz", big, sizeof big);
    FILE *f = fopen(p, "r+b");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    /* Corrupt the CRC32 in the trailer: the data decompresses but fails the check. */
    fseek(f, size - 8, SEEK_SET);
    fputc(0x5A ^ 0xFF, f);
    fclose(f);
    tg_status st = tg_dataset_load_idx(ds, p, NULL, NULL);
    assert_fail(st, TG_ERR_FORMAT, "gzip", "/c.gz");
    assert_good_unchanged();
    /* Cut inside the deflate stream. */
    f = fopen(p, "r+b");
    ck_assert_int_eq(ftruncate(fileno(f), size / 2), 0);
    fclose(f);
    assert_fail(tg_dataset_load_idx(ds, p, NULL, NULL), TG_ERR_FORMAT, "truncated", NULL);
    assert_good_unchanged();
}
END_TEST

/* bytes after the last gzip member were ignored (zlib's gzread stops there without
 * an error), although gzip -t reports them. Concatenated members are legal gzip and read as
 * one stream; anything else after the last one fails, naming the offset where it starts. */
START_TEST(idx_gzip_members_and_trailing_garbage)
{
    load_good();
    struct buf im = images_u8();
    /* Garbage after one member: the message names the byte where the member ends. */
    const char *p = write_gz("g.gz", im.b, im.n);
    long end = size_of(p);
    append_file(p, "XYZ", 3);
    char want[96];
    snprintf(want, sizeof want, "3 trailing bytes after the gzip data, from byte %ld", end);
    assert_fail(tg_dataset_load_idx(ds, p, NULL, NULL), TG_ERR_FORMAT, want, "/g.gz\"");
    assert_good_unchanged();
    /* Zeros (padding) are trailing bytes too, and so is a lone first byte of a gzip magic. */
    p = write_gz("z.gz", im.b, im.n);
    append_file(p, "\0\0\0\0\0\0\0\0", 8);
    snprintf(want, sizeof want, "8 trailing bytes after the gzip data, from byte %ld", end);
    assert_fail(tg_dataset_load_idx(ds, p, NULL, NULL), TG_ERR_FORMAT, want, NULL);
    p = write_gz("m1.gz", im.b, im.n);
    append_file(p, "\x1f", 1);
    snprintf(want, sizeof want, "1 trailing bytes after the gzip data, from byte %ld", end);
    assert_fail(tg_dataset_load_idx(ds, p, NULL, NULL), TG_ERR_FORMAT, want, NULL);
    /* Labels go through the same reader. */
    struct buf lb = labels_u8(3);
    const char *pl = write_gz("lab.gz", lb.b, lb.n);
    long lend = size_of(pl);
    append_file(pl, "junk", 4);
    snprintf(want, sizeof want, "from byte %ld", lend);
    assert_fail(tg_dataset_load_idx(ds, write_file("img", im.b, im.n), pl, NULL), TG_ERR_FORMAT,
                "/lab.gz\": 4 trailing bytes", want);
    assert_good_unchanged();

    /* Two members, split inside the header and inside the data: one stream. */
    for (size_t cut = 1; cut < im.n; cut += 7) {
        const char *a = write_gz("a.gz", im.b, cut);
        append_file_of(a, write_gz("b.gz", im.b + cut, im.n - cut));
        ck_assert_msg(tg_dataset_load_idx(ds, a, NULL, NULL) == TG_OK, "cut %zu: %s", cut,
                      tg_dataset_error(ds));
        ck_assert_uint_eq(tg_dataset_count(ds), 3);
        ck_assert_float_eq(((const float *)tg_dataset_data(ds))[5], 11.0f);
    }
    /* Three members, an empty one in the middle, then garbage after the last. */
    const char *a = write_gz("a.gz", im.b, 10);
    append_file_of(a, write_gz("e.gz", "", 0));
    append_file_of(a, write_gz("b.gz", im.b + 10, im.n - 10));
    ck_assert_int_eq(tg_dataset_load_idx(ds, a, NULL, NULL), TG_OK);
    end = size_of(a);
    append_file(a, "!", 1);
    snprintf(want, sizeof want, "1 trailing bytes after the gzip data, from byte %ld", end);
    assert_fail(tg_dataset_load_idx(ds, a, NULL, NULL), TG_ERR_FORMAT, want, NULL);
    /* A second member whose data holds more than the dims say: decompressed trailing bytes. */
    a = write_gz("a.gz", im.b, im.n);
    append_file_of(a, write_gz("b.gz", "\7\7", 2));
    assert_fail(tg_dataset_load_idx(ds, a, NULL, NULL), TG_ERR_FORMAT, "2 trailing bytes", NULL);
    /* A gzip magic followed by junk is a corrupt second member, not trailing bytes. */
    a = write_gz("a.gz", im.b, im.n);
    append_file(a, "\x1f\x8b\x08\x00junkjunkjunk", 16);
    assert_fail(tg_dataset_load_idx(ds, a, NULL, NULL), TG_ERR_FORMAT, "gzip", "member 2");
}
END_TEST

START_TEST(idx_counts_disagree)
{
    load_good();
    struct buf im = images_u8(), lb = labels_u8(4);
    const char *pi = write_file("img", im.b, im.n);
    assert_fail(tg_dataset_load_idx(ds, pi, write_file("lab4", lb.b, lb.n), NULL), TG_ERR_FORMAT,
                "4 labels but", "has 3 images");
    lb = labels_u8(2);
    assert_fail(tg_dataset_load_idx(ds, pi, write_gz("lab2.gz", lb.b, lb.n), NULL),
                TG_ERR_FORMAT, "2 labels but", "/img\" has 3 images");
    assert_good_unchanged();
}
END_TEST

START_TEST(idx_bad_labels)
{
    load_good();
    struct buf im = images_u8();
    const char *pi = write_file("img", im.b, im.n);
    uint32_t d1[1] = {3}, d2[2] = {3, 1};
    struct buf lb = idx_header(0x0D, 1, d1); /* float labels */
    for (int i = 0; i < 3; i++)
        put_be32(&lb, 0);
    assert_fail(tg_dataset_load_idx(ds, pi, write_file("lf", lb.b, lb.n), NULL), TG_ERR_FORMAT,
                "integer IDX type", "holds f32");
    lb = idx_header(0x08, 2, d2);
    lb.b[lb.n++] = 1, lb.b[lb.n++] = 1, lb.b[lb.n++] = 1;
    assert_fail(tg_dataset_load_idx(ds, pi, write_file("l2", lb.b, lb.n), NULL), TG_ERR_FORMAT,
                "rank 1", "3x1");
    lb = idx_header(0x09, 1, d1);
    lb.b[lb.n++] = 1, lb.b[lb.n++] = 0xFF, lb.b[lb.n++] = 1; /* -1 */
    assert_fail(tg_dataset_load_idx(ds, pi, write_file("ln", lb.b, lb.n), NULL), TG_ERR_FORMAT,
                "label 1 is -1", NULL);
    assert_good_unchanged();
}
END_TEST

START_TEST(idx_bad_args_and_paths)
{
    load_good();
    assert_fail(tg_dataset_load_idx(ds, NULL, NULL, NULL), TG_ERR_ARG, "NULL", NULL);
    tg_idx_options o = {.dtype = (tg_dtype)7};
    struct buf im = images_u8();
    const char *pi = write_file("img", im.b, im.n);
    assert_fail(tg_dataset_load_idx(ds, pi, NULL, &o), TG_ERR_ARG, "dtype 7", NULL);
    uint32_t d1[1] = {2};
    struct buf x = idx_header(0x0C, 1, d1);
    put_be32(&x, 1), put_be32(&x, 2);
    o = (tg_idx_options){.scale_to_unit = true};
    assert_fail(tg_dataset_load_idx(ds, write_file("i32", x.b, x.n), NULL, &o), TG_ERR_ARG,
                "scale_to_unit", "i32");
    assert_fail(tg_dataset_load_idx(ds, path_of("missing"), NULL, NULL), TG_ERR_IO,
                "cannot open", strerror(ENOENT));
    assert_fail(tg_dataset_load_idx(ds, dir, NULL, NULL), TG_ERR_IO, "a directory", NULL);
    const char *fifo = path_of("fifo");
    ck_assert_int_eq(mkfifo(fifo, 0600), 0);
    assert_fail(tg_dataset_load_idx(ds, fifo, NULL, NULL), TG_ERR_IO, "not a regular file",
                NULL);
    assert_fail(tg_dataset_load_idx(ds, pi, fifo, NULL), TG_ERR_IO, "not a regular file", NULL);
    assert_good_unchanged();
    ck_assert_int_eq(tg_dataset_load_idx(NULL, pi, NULL, NULL), TG_ERR_ARG);
    ck_assert_uint_eq(tg_dataset_count(NULL), 0);
    ck_assert_ptr_nonnull(tg_dataset_error(NULL));
    tg_dataset_free(NULL);
}
END_TEST

/* ---------------------------------------------------------------------------------------
 * CSV.
 */
START_TEST(csv_good)
{
    const char *p = write_text("a.csv", "x,y,label\n1.5, -2 ,0\r\n\n  \n3e2,nan,2\n0x10,inf,1");
    tg_csv_options o = {.has_labels = true, .label_column = -1};
    ck_assert_int_eq(tg_dataset_load_csv(ds, p, &o), TG_OK);
    ck_assert_uint_eq(tg_dataset_count(ds), 3);
    ck_assert_uint_eq(tg_dataset_features(ds), 2);
    ck_assert_int_eq(tg_dataset_ndim(ds), 1);
    ck_assert_int_eq(tg_dataset_dim(ds, 0), 2);
    const float *x = tg_dataset_data(ds);
    ck_assert_float_eq(x[0], 1.5f);
    ck_assert_float_eq(x[1], -2.0f);
    ck_assert_float_eq(x[2], 300.0f);
    ck_assert(isnan(x[3]));
    ck_assert_float_eq(x[4], 16.0f);
    ck_assert(isinf(x[5]));
    ck_assert_int_eq(tg_dataset_labels(ds)[1], 2);
    ck_assert_int_eq(tg_dataset_num_classes(ds), 3);

    /* Header modes: none keeps the first line, present skips it even when numeric. */
    p = write_text("b.csv", "1;2\n3;4\n");
    o = (tg_csv_options){.dtype = TG_F64, .delimiter = ';', .header = TG_CSV_HEADER_NONE};
    ck_assert_int_eq(tg_dataset_load_csv(ds, p, &o), TG_OK);
    ck_assert_uint_eq(tg_dataset_count(ds), 2);
    ck_assert_double_eq(((const double *)tg_dataset_data(ds))[3], 4.0);
    o.header = TG_CSV_HEADER_PRESENT;
    ck_assert_int_eq(tg_dataset_load_csv(ds, p, &o), TG_OK);
    ck_assert_uint_eq(tg_dataset_count(ds), 1);
    o.header = TG_CSV_HEADER_AUTO;
    ck_assert_int_eq(tg_dataset_load_csv(ds, p, &o), TG_OK);
    ck_assert_uint_eq(tg_dataset_count(ds), 2);

    /* Label in the first column; gzip. */
    const char *text = "7,0.25,0.5\n3,1,2\n";
    p = write_gz("c.csv.gz", text, strlen(text));
    o = (tg_csv_options){.has_labels = true, .label_column = 0};
    ck_assert_int_eq(tg_dataset_load_csv(ds, p, &o), TG_OK);
    ck_assert_int_eq(tg_dataset_labels(ds)[0], 7);
    ck_assert_float_eq(((const float *)tg_dataset_data(ds))[1], 0.5f);
    ck_assert_int_eq(tg_dataset_num_classes(ds), 8);
}
END_TEST

static void
load_good_csv(void)
{
    ck_assert_int_eq(tg_dataset_load_csv(ds, write_text("good.csv", "1,2\n3,4\n5,6\n"), NULL),
                     TG_OK);
}

static void
assert_good_csv_unchanged(void)
{
    ck_assert_uint_eq(tg_dataset_count(ds), 3);
    ck_assert_uint_eq(tg_dataset_features(ds), 2);
    ck_assert_float_eq(((const float *)tg_dataset_data(ds))[5], 6.0f);
}

START_TEST(csv_non_numeric)
{
    load_good_csv();
    const char *p = write_text("n.csv", "a,b,c\n1,2,3\n4,five,6\n");
    assert_fail(tg_dataset_load_csv(ds, p, NULL), TG_ERR_FORMAT, "/n.csv\": line 3, column 2",
                "\"five\" is not a number");
    assert_good_csv_unchanged();
    p = write_text("n2.csv", "1,2\n3,4x\n");
    assert_fail(tg_dataset_load_csv(ds, p, NULL), TG_ERR_FORMAT, "line 2, column 2",
                "\"4x\" is not a number");
    /* Control bytes in a cell are shown escaped. */
    p = write_text("n3.csv", "1,2\n3,\x1b[31m\n");
    assert_fail(tg_dataset_load_csv(ds, p, NULL), TG_ERR_FORMAT, "\\x1b[31m", NULL);
    assert_good_csv_unchanged();
}
END_TEST

START_TEST(csv_empty_cell)
{
    load_good_csv();
    assert_fail(tg_dataset_load_csv(ds, write_text("e.csv", "1,2,3\n4,,6\n"), NULL),
                TG_ERR_FORMAT, "line 2, column 2: empty cell", NULL);
    assert_fail(tg_dataset_load_csv(ds, write_text("e2.csv", "1,2,\n"), NULL), TG_ERR_FORMAT,
                "line 1, column 3: empty cell", NULL);
    assert_good_csv_unchanged();
}
END_TEST

START_TEST(csv_ragged)
{
    load_good_csv();
    assert_fail(tg_dataset_load_csv(ds, write_text("r.csv", "1,2,3\n4,5,6\n7,8\n"), NULL),
                TG_ERR_FORMAT, "line 3 has 2 columns, expected 3 (as on line 1)", NULL);
    assert_fail(tg_dataset_load_csv(ds, write_text("r2.csv", "a,b\n\n1,2,3\n"), NULL),
                TG_ERR_FORMAT, "line 3 has 3 columns, expected 2 (as on line 1)", NULL);
    assert_good_csv_unchanged();
}
END_TEST

START_TEST(csv_bad_labels)
{
    load_good_csv();
    tg_csv_options o = {.has_labels = true, .label_column = -1};
    assert_fail(tg_dataset_load_csv(ds, write_text("l.csv", "1,2\n3,1.5\n"), &o), TG_ERR_FORMAT,
                "line 2, column 2: label \"1.5\" is not an integer", NULL);
    assert_fail(tg_dataset_load_csv(ds, write_text("l2.csv", "1,-1\n"), &o), TG_ERR_FORMAT,
                "label \"-1\"", NULL);
    assert_fail(tg_dataset_load_csv(ds, write_text("l3.csv", "1,nan\n"), &o), TG_ERR_FORMAT,
                "label \"nan\"", NULL);
    o.label_column = 5;
    assert_fail(tg_dataset_load_csv(ds, write_text("l4.csv", "1,2\n"), &o), TG_ERR_ARG,
                "label_column 5 is out of range for 2 columns", NULL);
    o.label_column = 0;
    assert_fail(tg_dataset_load_csv(ds, write_text("l5.csv", "1\n2\n"), &o), TG_ERR_FORMAT,
                "no features beside the label", NULL);
    assert_good_csv_unchanged();
}
END_TEST

START_TEST(csv_range_and_bytes)
{
    load_good_csv();
    assert_fail(tg_dataset_load_csv(ds, write_text("o.csv", "1,1e999\n"), NULL), TG_ERR_FORMAT,
                "\"1e999\" is out of range", NULL);
    assert_fail(tg_dataset_load_csv(ds, write_text("o2.csv", "1,1e300\n"), NULL), TG_ERR_FORMAT,
                "outside the float32 range", NULL);
    tg_csv_options o = {.dtype = TG_F64};
    ck_assert_int_eq(tg_dataset_load_csv(ds, path_of("o2.csv"), &o), TG_OK);
    load_good_csv();
    assert_fail(tg_dataset_load_csv(ds, write_file("z.csv", "1,2\n3,\0\n", 7), NULL),
                TG_ERR_FORMAT, "line 2: NUL byte at byte 6", NULL);
    assert_fail(tg_dataset_load_csv(ds, write_text("h.csv", "a,b\n\n"), NULL), TG_ERR_FORMAT,
                "no data rows", NULL);
    assert_fail(tg_dataset_load_csv(ds, write_text("empty.csv", ""), NULL), TG_ERR_FORMAT,
                "no data rows", NULL);
    o = (tg_csv_options){.delimiter = '.'};
    assert_fail(tg_dataset_load_csv(ds, path_of("good.csv"), &o), TG_ERR_ARG, "delimiter", NULL);
    assert_fail(tg_dataset_load_csv(ds, path_of("nope.csv"), NULL), TG_ERR_IO, "cannot open",
                NULL);
    assert_good_csv_unchanged();
}
END_TEST

/* a UTF-8 byte-order mark (Excel's "CSV UTF-8") made the first line a header, so
 * its row was lost without an error; with headers off the cell read "\xef\xbb\xbf1.5". */
START_TEST(csv_utf8_bom)
{
    const char *text = "\xEF\xBB\xBF" "1.5,2.5\n3.5,4.5\n";
    const char *p = write_text("bom.csv", text);
    for (int mode = 0; mode < 2; mode++) {
        tg_csv_options o = {.header = mode ? TG_CSV_HEADER_NONE : TG_CSV_HEADER_AUTO};
        ck_assert_msg(tg_dataset_load_csv(ds, p, &o) == TG_OK, "%s", tg_dataset_error(ds));
        ck_assert_uint_eq(tg_dataset_count(ds), 2);
        ck_assert_uint_eq(tg_dataset_features(ds), 2);
        const float *x = tg_dataset_data(ds);
        ck_assert_float_eq(x[0], 1.5f);
        ck_assert_float_eq(x[3], 4.5f);
    }
    /* Gzip-compressed, with CRLF. */
    text = "\xEF\xBB\xBF" "1,2\r\n3,4\r\n";
    ck_assert_int_eq(tg_dataset_load_csv(ds, write_gz("bom.csv.gz", text, strlen(text)), NULL),
                     TG_OK);
    ck_assert_uint_eq(tg_dataset_count(ds), 2);
    ck_assert_float_eq(((const float *)tg_dataset_data(ds))[0], 1.0f);
    /* A real header after the mark is still a header. */
    p = write_text("bomh.csv", "\xEF\xBB\xBF" "x,y\n1,2\n");
    ck_assert_int_eq(tg_dataset_load_csv(ds, p, NULL), TG_OK);
    ck_assert_uint_eq(tg_dataset_count(ds), 1);
    /* Only a mark: empty. A mark anywhere else is content, shown escaped. */
    load_good_csv();
    assert_fail(tg_dataset_load_csv(ds, write_text("bom0.csv", "\xEF\xBB\xBF"), NULL),
                TG_ERR_FORMAT, "no data rows", "empty");
    assert_fail(tg_dataset_load_csv(ds, write_text("bom2.csv", "1,2\n\xEF\xBB\xBF" "3,4\n"), NULL),
                TG_ERR_FORMAT, "line 2, column 1: \"\\ufeff3\" is not a number", NULL);
    /* UTF-16 is named instead of failing on its first NUL byte. */
    assert_fail(tg_dataset_load_csv(ds, write_file("u16.csv", "\xFF\xFE" "1\0,\0" "2\0\n\0", 10),
                                    NULL),
                TG_ERR_FORMAT, "UTF-16", "/u16.csv\"");
    assert_fail(tg_dataset_load_csv(ds, write_file("u16be.csv", "\xFE\xFF\0" "1\0,\0" "2", 8),
                                    NULL),
                TG_ERR_FORMAT, "UTF-16", NULL);
    assert_good_csv_unchanged();
}
END_TEST

/* file content quoted in a message shows invisible and control characters escaped,
 * and bytes that are not UTF-8 as \xNN, so the message says what the file holds. */
START_TEST(csv_messages_escape_content)
{
    load_good_csv();
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"1,2\n3,4\xC2\xA0x\n", "\"4\\u00a0x\" is not a number"},       /* no-break space */
        {"1,2\n3,\xE2\x80\x8B" "4\n", "\"\\u200b4\" is not a number"},  /* zero-width space */
        {"1,2\n3,4\xE2\x80\xAE" "5\n", "\"4\\u202e5\" is not a number"}, /* right-to-left */
        {"1,2\n3,4\xFF\n", "\"4\\xff\" is not a number"},                 /* not UTF-8 */
        {"1,2\n3,4\xC0\xAF\n", "\"4\\xc0\\xaf\" is not a number"},        /* overlong */
        {"1,2\n3,4\xED\xA0\x80\n", "\"4\\xed\\xa0\\x80\" is not a number"}, /* surrogate */
        {"1,2\n3,4\xE2\x82\n", "\"4\\xe2\\x82\" is not a number"},        /* cut sequence */
        {"1,2\n3,4\xC2\x85\n", "\"4\\u0085\" is not a number"},           /* C1 control */
        {"1,2\n3,4\t5\n", "\"4\\t5\" is not a number"},
        {"1,2\n3,4\x7f\n", "\"4\\x7f\" is not a number"},
        {"1,2\n3,\"4\"\n", "\"\\\"4\\\"\" is not a number"},
        {"1,2\n3,a\\b\n", "\"a\\\\b\" is not a number"},
        {"1,2\n3,\xC3\xA9t\xC3\xA9\n", "\"\xC3\xA9t\xC3\xA9\" is not a number"}, /* printable */
        {"1,2\n3,4\xF3\xA0\x80\x81\n", "\"4\\U000e0001\" is not a number"},       /* tag */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "esc%zu.csv", i);
        assert_fail(tg_dataset_load_csv(ds, write_text(name, cases[i].text), NULL),
                    TG_ERR_FORMAT, cases[i].want, "line 2, column 2");
    }
    /* A long cell is cut at a character boundary, never inside a UTF-8 sequence. */
    char text[200] = "1,2\n3,";
    for (int i = 0; i < 30; i++)
        strcat(text, "\xC3\xA9"); /* 60 bytes of é */
    strcat(text, "\n");
    assert_fail(tg_dataset_load_csv(ds, write_text("long.csv", text), NULL), TG_ERR_FORMAT,
                "\"\xC3\xA9\xC3\xA9", "...\" is not a number");
    const char *msg = tg_dataset_error(ds);
    ck_assert_ptr_null(strstr(msg, "\\x"));
    /* Labels and ranges go through the same quoting. */
    tg_csv_options o = {.has_labels = true, .label_column = -1};
    assert_fail(tg_dataset_load_csv(ds, write_text("lab.csv", "1,2\n3,4\xEF\xBB\xBF\n"), &o),
                TG_ERR_FORMAT, "\"4\\ufeff\" is not a number", NULL);
    assert_good_csv_unchanged();
}
END_TEST

/* CR-only line ends (classic Mac OS) made the file one line, taken as a header:
 * "no data rows". LF, CRLF and CR all end a line now, also mixed in one file. */
START_TEST(csv_cr_line_ends)
{
    load_good_csv();
    const char *p = write_text("cr.csv", "x,y\r1,2\r3,4\r");
    ck_assert_msg(tg_dataset_load_csv(ds, p, NULL) == TG_OK, "%s", tg_dataset_error(ds));
    ck_assert_uint_eq(tg_dataset_count(ds), 2);
    ck_assert_float_eq(((const float *)tg_dataset_data(ds))[3], 4.0f);
    tg_csv_options o = {.header = TG_CSV_HEADER_NONE};
    ck_assert_int_eq(tg_dataset_load_csv(ds, write_text("cr2.csv", "1,2\r3,4"), &o), TG_OK);
    ck_assert_uint_eq(tg_dataset_count(ds), 2);
    ck_assert_int_eq(tg_dataset_load_csv(ds, write_text("mix.csv", "1,2\r\n3,4\r5,6\n\r\n\r7,8"),
                                         NULL),
                     TG_OK);
    ck_assert_uint_eq(tg_dataset_count(ds), 4);
    ck_assert_float_eq(((const float *)tg_dataset_data(ds))[7], 8.0f);
    /* Line numbers count CR line ends: CRLF is one end, CR CR two. */
    assert_fail(tg_dataset_load_csv(ds, write_text("crl.csv", "1,2\r\r3,4\r\n5,x\r"), NULL),
                TG_ERR_FORMAT, "line 4, column 2: \"x\" is not a number", NULL);
    assert_fail(tg_dataset_load_csv(ds, write_file("crz.csv", "1,2\r3,\0\r", 8), NULL),
                TG_ERR_FORMAT, "line 2: NUL byte at byte 6", NULL);
    assert_fail(tg_dataset_load_csv(ds, write_text("crr.csv", "1,2\r3\r"), NULL), TG_ERR_FORMAT,
                "line 2 has 1 columns, expected 2 (as on line 1)", NULL);
    load_good_csv();
    assert_good_csv_unchanged();
}
END_TEST

/* "no data rows" said nothing of the only line having been taken as a header. The
 * messages now say which line was read as a header and why (which cell is not a number),
 * also when the first data line then fails, with a hint for decimal commas and delimiters. */
START_TEST(csv_header_reasons)
{
    load_good_csv();
    tg_csv_options semi = {.delimiter = ';'};
    /* One line of decimal commas, ';'-delimited. */
    assert_fail(tg_dataset_load_csv(ds, write_text("dc1.csv", "1,5;2,5\n"), &semi),
                TG_ERR_FORMAT, "no data rows: line 1 was read as a header",
                "column 1, \"1,5\", is not a number");
    assert_fail(tg_dataset_load_csv(ds, path_of("dc1.csv"), &semi), TG_ERR_FORMAT,
                "decimal comma", NULL);
    /* Two lines: the first data line fails, and the message says line 1 was a header. */
    assert_fail(tg_dataset_load_csv(ds, write_text("dc2.csv", "1,5;2,5\n3,5;4,5\n"), &semi),
                TG_ERR_FORMAT, "line 2, column 1: \"3,5\" is not a number",
                "line 1 was read as a header");
    assert_fail(tg_dataset_load_csv(ds, path_of("dc2.csv"), &semi), TG_ERR_FORMAT,
                "column 1, \"1,5\", is not a number", "decimal comma");
    /* The same file with the default ',' delimiter: line 1 is "1", "5;2", "5", numbers and
     * text, so it is neither a header nor data; the hint names the ';'. */
    assert_fail(tg_dataset_load_csv(ds, path_of("dc2.csv"), NULL), TG_ERR_FORMAT,
                "line 1, column 2: \"5;2\" is not a number", "column 1, \"1\", is:");
    assert_fail(tg_dataset_load_csv(ds, path_of("dc2.csv"), NULL), TG_ERR_FORMAT, "';'", NULL);
    /* A plain header alone. */
    assert_fail(tg_dataset_load_csv(ds, write_text("h.csv", "a,b\n\n"), NULL), TG_ERR_FORMAT,
                "no data rows: line 1 was read as a header", "column 1, \"a\", is not a number");
    /* A header followed by a ragged line. */
    assert_fail(tg_dataset_load_csv(ds, write_text("hr.csv", "a,b\n1,2,3\n"), NULL),
                TG_ERR_FORMAT, "line 2 has 3 columns, expected 2 (as on line 1)",
                "line 1 was read as a header");
    /* A header found by auto-detection is named only while the first data line fails. */
    assert_fail(tg_dataset_load_csv(ds, write_text("h3.csv", "a,b\n1,2\n3,x\n"), NULL),
                TG_ERR_FORMAT, "line 3, column 2", NULL);
    ck_assert_ptr_null(strstr(tg_dataset_error(ds), "header"));
    /* TG_CSV_HEADER_PRESENT skips line 1 whatever it holds. */
    tg_csv_options pres = {.header = TG_CSV_HEADER_PRESENT};
    assert_fail(tg_dataset_load_csv(ds, write_text("p.csv", "\n1,2\n"), &pres), TG_ERR_FORMAT,
                "no data rows: line 2 was skipped as a header", "TG_CSV_HEADER_PRESENT");
    /* Nothing at all. */
    assert_fail(tg_dataset_load_csv(ds, write_text("e.csv", ""), NULL), TG_ERR_FORMAT,
                "no data rows", "the file is empty");
    assert_fail(tg_dataset_load_csv(ds, write_text("b.csv", "\n  \r\n\t\n"), NULL),
                TG_ERR_FORMAT, "no data rows", "only blank lines");
    assert_good_csv_unchanged();
}
END_TEST

/* with auto-detection a first line that is numbers but for one
 * bad cell ("1.5,abc") was taken as a header, and its row was lost with status OK. A first
 * line is a header only when no cell of it is a number; one mixing numbers and text is an
 * error naming the line, both cells and their columns, escaped. */
START_TEST(csv_header_mixed_first_line)
{
    load_good_csv();
    assert_fail(tg_dataset_load_csv(ds, write_text("mx.csv", "1.5,abc\n3.5,4.5\n"), NULL),
                TG_ERR_FORMAT, "/mx.csv\": line 1, column 2: \"abc\" is not a number",
                "but column 1, \"1.5\", is");
    assert_fail(tg_dataset_load_csv(ds, path_of("mx.csv"), NULL), TG_ERR_FORMAT,
                "TG_CSV_HEADER_PRESENT", NULL);
    /* The first text cell and the first number are named, wherever they are; after blank
     * lines the line number is the first non-blank line's; the cell is shown escaped. */
    const char *p = write_text("mx2.csv", "\n\nx,\t,7,y,8\n1,2,3,4,5\n");
    assert_fail(tg_dataset_load_csv(ds, p, NULL), TG_ERR_FORMAT,
                "line 3, column 1: \"x\" is not a number", "column 3, \"7\", is");
    p = write_text("mx3.csv", "1,2,a\xE2\x80\x8B\n3,4,5\n");
    assert_fail(tg_dataset_load_csv(ds, p, NULL), TG_ERR_FORMAT,
                "line 1, column 3: \"a\\u200b\" is not a number", NULL);
    /* A number out of range is still a number; with text beside it the line is mixed. */
    assert_fail(tg_dataset_load_csv(ds, write_text("mx4.csv", "x,1e999\n1,2\n"), NULL),
                TG_ERR_FORMAT, "column 1: \"x\" is not a number", "column 2, \"1e999\", is");
    /* Numeric column names ("year,2019") are mixed too; PRESENT skips the line, NONE fails
     * on it as data. */
    p = write_text("yr.csv", "id,2019,2020\n1,2,3\n4,5,6\n");
    assert_fail(tg_dataset_load_csv(ds, p, NULL), TG_ERR_FORMAT,
                "line 1, column 1: \"id\" is not a number", "column 2, \"2019\", is");
    tg_csv_options pres = {.header = TG_CSV_HEADER_PRESENT};
    ck_assert_msg(tg_dataset_load_csv(ds, p, &pres) == TG_OK, "%s", tg_dataset_error(ds));
    ck_assert_uint_eq(tg_dataset_count(ds), 2);
    ck_assert_float_eq(((const float *)tg_dataset_data(ds))[0], 1.0f);
    load_good_csv();
    tg_csv_options none = {.header = TG_CSV_HEADER_NONE};
    assert_fail(tg_dataset_load_csv(ds, p, &none), TG_ERR_FORMAT,
                "line 1, column 1: \"id\" is not a number", NULL);
    /* Still headers: all text; text and empty cells (pandas' index column). */
    ck_assert_int_eq(tg_dataset_load_csv(ds, write_text("hd.csv", "a,b\n1,2\n"), NULL), TG_OK);
    ck_assert_uint_eq(tg_dataset_count(ds), 1);
    ck_assert_int_eq(tg_dataset_load_csv(ds, write_text("hp.csv", ",a,b\n0,1,2\n1,3,4\n"), NULL),
                     TG_OK);
    ck_assert_uint_eq(tg_dataset_count(ds), 2);
    ck_assert_float_eq(((const float *)tg_dataset_data(ds))[5], 4.0f);
    /* Still data: all numbers, and an empty cell among numbers fails as data. */
    ck_assert_int_eq(tg_dataset_load_csv(ds, write_text("dd.csv", "1,2\n3,4\n"), NULL), TG_OK);
    ck_assert_uint_eq(tg_dataset_count(ds), 2);
    load_good_csv();
    assert_fail(tg_dataset_load_csv(ds, write_text("de.csv", "1,\n3,4\n"), NULL), TG_ERR_FORMAT,
                "line 1, column 2: empty cell", NULL);
    assert_good_csv_unchanged();
}
END_TEST

/* gzip CSV files are read by the same reader as IDX: members are one stream and
 * bytes after the last one fail with their offset. */
START_TEST(csv_gzip_members_and_trailing_garbage)
{
    load_good_csv();
    const char *a = write_gz("a.csv.gz", "x,y\n1,", 6);
    append_file_of(a, write_gz("b.gz", "2\n3,4\n", 6));
    ck_assert_msg(tg_dataset_load_csv(ds, a, NULL) == TG_OK, "%s", tg_dataset_error(ds));
    ck_assert_uint_eq(tg_dataset_count(ds), 2);
    ck_assert_float_eq(((const float *)tg_dataset_data(ds))[1], 2.0f);
    long end = size_of(a);
    append_file(a, "garbage\n", 8);
    char want[96];
    snprintf(want, sizeof want, "8 trailing bytes after the gzip data, from byte %ld", end);
    assert_fail(tg_dataset_load_csv(ds, a, NULL), TG_ERR_FORMAT, want, "/a.csv.gz\"");
    load_good_csv();
    const char *p = write_gz("c.csv.gz", "1,2\n3,4\n5,6\n", 12);
    end = size_of(p);
    append_file(p, "\n", 1);
    snprintf(want, sizeof want, "1 trailing bytes after the gzip data, from byte %ld", end);
    assert_fail(tg_dataset_load_csv(ds, p, NULL), TG_ERR_FORMAT, want, NULL);
    assert_good_csv_unchanged();
}
END_TEST

/* ---------------------------------------------------------------------------------------
 * Minibatches.
 */
static void
load_range(size_t n, size_t f)
{
    /* Example i has features i*f .. i*f+f-1 and label i. */
    size_t cap = n * (f + 1) * 24 + 1;
    char *text = malloc(cap);
    ck_assert_ptr_nonnull(text);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        for (size_t k = 0; k < f; k++)
            o += (size_t)snprintf(text + o, cap - o, "%zu,", i * f + k);
        o += (size_t)snprintf(text + o, cap - o, "%zu\n", i);
    }
    tg_csv_options opt = {.has_labels = true, .label_column = -1};
    ck_assert_int_eq(tg_dataset_load_csv(ds, write_text("range.csv", text), &opt), TG_OK);
    free(text);
}

START_TEST(batches_cover_every_example_once)
{
    load_range(10, 3);
    tg_rng *r = tg_rng_new(42);
    tg_batcher *b = tg_batcher_new(ds, 4, TG_EXAMPLES_AS_ROWS, false, r, NULL);
    ck_assert_ptr_nonnull(b);
    ck_assert_uint_eq(tg_batcher_num_batches(b), 3);
    for (int epoch = 0; epoch < 3; epoch++) {
        int seen[10] = {0};
        size_t sizes = 0, nb = 0;
        tg_batch bt;
        while (tg_batcher_next(b, &bt)) {
            const float *x = bt.x;
            for (size_t j = 0; j < bt.size; j++) {
                size_t i = bt.indices[j];
                ck_assert_int_eq(bt.labels[j], (int)i);
                for (size_t k = 0; k < 3; k++)
                    ck_assert_float_eq(x[j * 3 + k], (float)(i * 3 + k));
                seen[i]++;
            }
            sizes += bt.size;
            nb++;
        }
        ck_assert_uint_eq(sizes, 10);
        ck_assert_uint_eq(nb, 3);
        for (int i = 0; i < 10; i++)
            ck_assert_int_eq(seen[i], 1);
        ck_assert(!tg_batcher_next(b, &bt));
        tg_batcher_reset(b);
    }
    tg_batcher_free(b);
    tg_rng_free(r);
}
END_TEST

START_TEST(batches_same_seed_same_order)
{
    load_range(50, 1);
    size_t order[2][3][50];
    for (int run = 0; run < 2; run++) {
        tg_rng *r = tg_rng_new(7);
        tg_batcher *b = tg_batcher_new(ds, 8, TG_EXAMPLES_AS_ROWS, false, r, NULL);
        for (int e = 0; e < 3; e++) {
            size_t k = 0;
            tg_batch bt;
            while (tg_batcher_next(b, &bt))
                for (size_t j = 0; j < bt.size; j++)
                    order[run][e][k++] = bt.indices[j];
            tg_batcher_reset(b);
        }
        tg_batcher_free(b);
        tg_rng_free(r);
    }
    ck_assert(memcmp(order[0], order[1], sizeof order[0]) == 0);
    /* Epochs differ from each other and from file order (50! orders: a tie is a bug). */
    ck_assert(memcmp(order[0][0], order[0][1], sizeof order[0][0]) != 0);
    size_t ident[50];
    for (size_t i = 0; i < 50; i++)
        ident[i] = i;
    ck_assert(memcmp(order[0][0], ident, sizeof ident) != 0);
}
END_TEST

START_TEST(batches_columns_drop_last_no_rng)
{
    load_range(5, 2);
    tg_batcher *b = tg_batcher_new(ds, 2, TG_EXAMPLES_AS_COLUMNS, true, NULL, NULL);
    ck_assert_ptr_nonnull(b);
    ck_assert_uint_eq(tg_batcher_num_batches(b), 2);
    tg_batch bt;
    ck_assert(tg_batcher_next(b, &bt));
    /* (features x batch): column j is example j (file order without an rng). */
    const float *x = bt.x;
    ck_assert_float_eq(x[0], 0.0f); /* f0 of ex0 */
    ck_assert_float_eq(x[1], 2.0f); /* f0 of ex1 */
    ck_assert_float_eq(x[2], 1.0f); /* f1 of ex0 */
    ck_assert_float_eq(x[3], 3.0f); /* f1 of ex1 */
    ck_assert(tg_batcher_next(b, &bt));
    ck_assert_uint_eq(bt.indices[0], 2);
    ck_assert(!tg_batcher_next(b, &bt)); /* the fifth example is dropped */
    tg_batcher_free(b);
}
END_TEST

START_TEST(batcher_bad_args)
{
    const char *err = NULL;
    ck_assert_ptr_null(tg_batcher_new(NULL, 2, TG_EXAMPLES_AS_ROWS, false, NULL, &err));
    ck_assert_ptr_nonnull(strstr(err, "NULL"));
    ck_assert_ptr_null(tg_batcher_new(ds, 2, TG_EXAMPLES_AS_ROWS, false, NULL, &err));
    ck_assert_ptr_nonnull(strstr(err, "empty"));
    load_range(3, 1);
    ck_assert_ptr_null(tg_batcher_new(ds, 0, TG_EXAMPLES_AS_ROWS, false, NULL, &err));
    ck_assert_ptr_nonnull(strstr(err, "batch_size"));
    ck_assert_ptr_null(tg_batcher_new(ds, 4, TG_EXAMPLES_AS_ROWS, true, NULL, &err));
    ck_assert_ptr_nonnull(strstr(err, "drop_last"));
    tg_batcher *b = tg_batcher_new(ds, 100, TG_EXAMPLES_AS_ROWS, false, NULL, &err);
    ck_assert_ptr_nonnull(b);
    ck_assert_uint_eq(tg_batcher_num_batches(b), 1);
    tg_batcher_free(b);
    tg_batcher_free(NULL);
    ck_assert(!tg_batcher_next(NULL, NULL));
}
END_TEST

/* ---------------------------------------------------------------------------------------
 * The real data set, when the Debian package is installed.
 */
#define FMNIST "/usr/share/datasets/fashion-mnist/"

START_TEST(fashion_mnist)
{
    if (access(FMNIST "train-images-idx3-ubyte.gz", R_OK) != 0) {
        fprintf(stderr, "fashion_mnist: skipped, package dataset-fashion-mnist not installed\n");
        return;
    }
    if (getenv("TG_UNDER_VALGRIND") && _i == 0) {
        fprintf(stderr, "fashion_mnist: train set skipped under valgrind\n");
        return;
    }
    const char *im = _i ? FMNIST "t10k-images-idx3-ubyte.gz" : FMNIST "train-images-idx3-ubyte.gz";
    const char *lb = _i ? FMNIST "t10k-labels-idx1-ubyte.gz" : FMNIST "train-labels-idx1-ubyte.gz";
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    tg_idx_options o = {.dtype = TG_F32, .scale_to_unit = true};
    tg_status st = tg_dataset_load_idx(ds, im, lb, &o);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    ck_assert_msg(st == TG_OK, "%s", tg_dataset_error(ds));
    ck_assert_uint_eq(tg_dataset_count(ds), _i ? 10000 : 60000);
    ck_assert_uint_eq(tg_dataset_features(ds), 784);
    ck_assert_int_eq(tg_dataset_dim(ds, 0), 28);
    ck_assert_int_eq(tg_dataset_num_classes(ds), 10);
    /* Fashion-MNIST is balanced: every class has exactly n/10 examples. */
    size_t per[10] = {0};
    for (size_t i = 0; i < tg_dataset_count(ds); i++)
        per[tg_dataset_labels(ds)[i]]++;
    for (int c = 0; c < 10; c++)
        ck_assert_uint_eq(per[c], tg_dataset_count(ds) / 10);
    fprintf(stderr, "fashion_mnist: %s loaded in %.3f s\n", _i ? "test" : "train",
            (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
}
END_TEST

static Suite *
data_suite(void)
{
    Suite *s = suite_create("data");
    struct {
        const char *name;
        const TTest *tests[16];
    } cases[] = {
        {"idx good files",
         {idx_plain_and_gzip_agree, idx_scale_and_f64, idx_wide_types_big_endian, idx_empty_set}},
        {"idx bad magic, type, rank", {idx_bad_magic, idx_unknown_type_and_rank}},
        {"idx truncated and trailing bytes", {idx_truncated, idx_trailing_bytes}},
        {"idx dims overflow", {idx_dims_overflow}},
        {"idx gzip damage",
         {idx_gzip_lying_header, idx_gzip_corrupt, idx_gzip_members_and_trailing_garbage}},
        {"idx counts and labels", {idx_counts_disagree, idx_bad_labels}},
        {"idx arguments and paths", {idx_bad_args_and_paths}},
        {"csv good files", {csv_good}},
        {"csv non-numeric and empty cells", {csv_non_numeric, csv_empty_cell}},
        {"csv ragged rows", {csv_ragged}},
        {"csv labels", {csv_bad_labels}},
        {"csv ranges, bytes, arguments", {csv_range_and_bytes}},
        {"csv byte-order mark and escaped messages", {csv_utf8_bom, csv_messages_escape_content}},
        {"csv line ends and header reasons",
         {csv_cr_line_ends, csv_header_reasons, csv_header_mixed_first_line}},
        {"csv gzip members", {csv_gzip_members_and_trailing_garbage}},
        {"minibatches",
         {batches_cover_every_example_once, batches_same_seed_same_order,
          batches_columns_drop_last_no_rng, batcher_bad_args}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_add_checked_fixture(tc, setup, teardown);
        for (int k = 0; cases[i].tests[k]; k++)
            tcase_add_test(tc, cases[i].tests[k]);
        suite_add_tcase(s, tc);
    }
    TCase *tc = tcase_create("fashion-mnist");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, fashion_mnist, 0, 2);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    return run_suite(data_suite());
}
