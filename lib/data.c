/*
 * Data sets: IDX and numeric CSV readers (plain or gzip, through zlib) and shuffled minibatches.
 *
 * Every reader validates the whole file into temporaries and only then replaces the data set's
 * contents, so a failed load leaves the data set as it was. Sizes from the file are multiplied
 * with overflow checks and compared with the bytes actually present before anything is
 * allocated from them (plain files), or the buffer grows only as data arrives (gzip, whose
 * decompressed size is unknown until read), so a lying header cannot make us allocate much.
 */
#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

#include <tapegrad/data.h>

#include "internal.h"

struct tg_dataset {
    tg_status status;
    char errmsg[TG__ERRMSG_SIZE];
    tg_dtype dtype;
    size_t count;    /* examples */
    size_t features; /* values per example */
    int ndim;        /* rank of one example */
    int64_t dims[TG_MAX_DIMS];
    void *data;      /* count x features, dtype */
    int32_t *labels; /* count, or NULL */
    int32_t num_classes;
};

/* A data set's contents while it is being built; moved into the data set on success. */
struct contents {
    tg_dtype dtype;
    size_t count, features;
    int ndim;
    int64_t dims[TG_MAX_DIMS];
    void *data;
    int32_t *labels;
    int32_t num_classes;
};

static tg_status
ds_fail(tg_dataset *ds, tg_status s, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static tg_status
ds_fail(tg_dataset *ds, tg_status s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ds->errmsg, sizeof ds->errmsg, fmt, ap);
    va_end(ap);
    ds->status = s;
    return s;
}

static tg_status
ds_ok(tg_dataset *ds)
{
    ds->status = TG_OK;
    ds->errmsg[0] = '\0';
    return TG_OK;
}

static void
contents_free(struct contents *c)
{
    tg__free(c->data);
    tg__free(c->labels);
    c->data = NULL;
    c->labels = NULL;
}

/* Replace ds's contents with c (which is consumed). */
static tg_status
ds_take(tg_dataset *ds, struct contents *c)
{
    tg__free(ds->data);
    tg__free(ds->labels);
    ds->dtype = c->dtype;
    ds->count = c->count;
    ds->features = c->features;
    ds->ndim = c->ndim;
    memcpy(ds->dims, c->dims, sizeof ds->dims);
    ds->data = c->data;
    ds->labels = c->labels;
    ds->num_classes = c->num_classes;
    c->data = NULL;
    c->labels = NULL;
    return ds_ok(ds);
}

tg_dataset *
tg_dataset_new(void)
{
    tg_dataset *ds = tg__calloc(1, sizeof *ds);
    if (ds)
        ds->dtype = TG_F32;
    return ds;
}

void
tg_dataset_free(tg_dataset *ds)
{
    if (!ds)
        return;
    tg__free(ds->data);
    tg__free(ds->labels);
    tg__free(ds);
}

tg_status
tg_dataset_status(const tg_dataset *ds)
{
    return ds ? ds->status : TG_ERR_ARG;
}

const char *
tg_dataset_error(const tg_dataset *ds)
{
    if (!ds)
        return "dataset: NULL data set";
    return ds->status == TG_OK ? NULL : ds->errmsg;
}

size_t
tg_dataset_count(const tg_dataset *ds)
{
    return ds ? ds->count : 0;
}

size_t
tg_dataset_features(const tg_dataset *ds)
{
    return ds ? ds->features : 0;
}

int
tg_dataset_ndim(const tg_dataset *ds)
{
    return ds ? ds->ndim : 0;
}

int64_t
tg_dataset_dim(const tg_dataset *ds, int axis)
{
    if (!ds || axis < 0 || axis >= ds->ndim)
        return 0;
    return ds->dims[axis];
}

tg_dtype
tg_dataset_dtype(const tg_dataset *ds)
{
    return ds ? ds->dtype : TG_F32;
}

const void *
tg_dataset_data(const tg_dataset *ds)
{
    return ds ? ds->data : NULL;
}

const int32_t *
tg_dataset_labels(const tg_dataset *ds)
{
    return ds ? ds->labels : NULL;
}

int32_t
tg_dataset_num_classes(const tg_dataset *ds)
{
    return ds ? ds->num_classes : 0;
}

/* ---------------------------------------------------------------------------------------
 * Input files: a regular file, plain or gzip (recognised by its first two bytes, 1f 8b, not
 * its name). Gzip goes through zlib's inflate directly rather than gzread, which stops at
 * the end of the last member without a word about bytes after it: here a file may hold
 * several members (`cat a.gz b.gz`, read as one stream as gzip -d does), and any byte after
 * the last one, zeros included, is a format error naming the offset where it starts.
 * Errors go into the data set.
 */
#define SRC_INBUF (1u << 17)

struct src {
    const char *path;
    int fd;
    uint64_t file_size; /* bytes on disk */
    uint64_t pos;       /* bytes delivered so far (decompressed) */
    bool direct;        /* not compressed: file_size bounds what can be read */
    /* gzip only */
    z_stream z;
    bool z_live;         /* inflateInit2 succeeded */
    unsigned char *in;   /* SRC_INBUF bytes of compressed input */
    uint64_t raw_read;   /* bytes read from the file so far */
    bool raw_eof;        /* read() returned 0 */
    bool done;           /* the last member ended and nothing follows */
    unsigned members;    /* members finished */
    uint64_t member_at;  /* file offset where the current member starts */
};

static tg_status
src_open(tg_dataset *ds, struct src *s, const char *path)
{
    memset(s, 0, sizeof *s);
    s->path = path;
    s->fd = -1;
    /* O_NONBLOCK: opening a FIFO must not hang; it is refused below as not a regular file. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return ds_fail(ds, TG_ERR_IO, "\"%s\": cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return ds_fail(ds, TG_ERR_IO, "\"%s\": cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return ds_fail(ds, TG_ERR_IO, "\"%s\": not a regular file (%s)", path,
                       S_ISDIR(st.st_mode) ? "a directory" : "a FIFO, socket or device");
    }
    int flags = fcntl(fd, F_GETFL);
    if (flags >= 0)
        (void)fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    s->fd = fd;
    s->file_size = (uint64_t)st.st_size;
    unsigned char magic[2];
    ssize_t r;
    do
        r = pread(fd, magic, 2, 0);
    while (r < 0 && errno == EINTR);
    if (r < 0) {
        int e = errno;
        close(fd);
        s->fd = -1;
        return ds_fail(ds, TG_ERR_IO, "\"%s\": read error at byte 0: %s", path, strerror(e));
    }
    s->direct = !(r == 2 && magic[0] == 0x1f && magic[1] == 0x8b);
    if (s->direct)
        return TG_OK;
    s->in = tg__malloc(SRC_INBUF);
    if (!s->in) {
        close(fd);
        s->fd = -1;
        return ds_fail(ds, TG_ERR_NOMEM, "\"%s\": out of memory opening the file", path);
    }
    /* 15 + 16: a gzip wrapper only (its CRC-32 and length are checked at each member's end). */
    int zr = inflateInit2(&s->z, 15 + 16);
    if (zr != Z_OK) {
        tg__free(s->in);
        s->in = NULL;
        close(fd);
        s->fd = -1;
        return ds_fail(ds, zr == Z_MEM_ERROR ? TG_ERR_NOMEM : TG_ERR_IO,
                       "\"%s\": cannot start zlib: %s", path, s->z.msg ? s->z.msg : "error");
    }
    s->z_live = true;
    return TG_OK;
}

static void
src_close(struct src *s)
{
    if (s->z_live)
        inflateEnd(&s->z);
    s->z_live = false;
    tg__free(s->in);
    s->in = NULL;
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
}

/* read(2) of up to n bytes at the file's current offset, retried on EINTR. */
static tg_status
src_raw_read(tg_dataset *ds, struct src *s, unsigned char *buf, size_t n, size_t *got)
{
    *got = 0;
    while (*got < n) {
        size_t want = n - *got;
        if (want > (1u << 30))
            want = 1u << 30;
        ssize_t r = read(s->fd, buf + *got, want);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return ds_fail(ds, TG_ERR_IO, "\"%s\": read error at byte %llu: %s", s->path,
                           (unsigned long long)(s->raw_read + *got), strerror(errno));
        if (r == 0) {
            s->raw_eof = true;
            break;
        }
        *got += (size_t)r;
    }
    s->raw_read += *got;
    return TG_OK;
}

/* Compressed input: move what is left to the front of the buffer and read more after it. */
static tg_status
src_fill(tg_dataset *ds, struct src *s)
{
    if (s->raw_eof)
        return TG_OK;
    size_t left = s->z.avail_in;
    if (left && s->z.next_in != s->in)
        memmove(s->in, s->z.next_in, left);
    size_t got;
    tg_status st = src_raw_read(ds, s, s->in + left, SRC_INBUF - left, &got);
    s->z.next_in = s->in;
    s->z.avail_in = (uInt)(left + got);
    return st;
}

/* File offset of the next compressed byte inflate has not consumed. */
static uint64_t
src_raw_pos(const struct src *s)
{
    return s->raw_read - s->z.avail_in;
}

/* Inflate up to n bytes into buf; *got is what arrived. */
static tg_status
src_inflate(tg_dataset *ds, struct src *s, unsigned char *buf, size_t n, size_t *got)
{
    *got = 0;
    while (*got < n && !s->done) {
        if (s->z.avail_in == 0) {
            tg_status st = src_fill(ds, s);
            if (st)
                return st;
        }
        size_t want = n - *got;
        if (want > (1u << 30))
            want = 1u << 30;
        s->z.next_out = buf + *got;
        s->z.avail_out = (uInt)want;
        int zr = inflate(&s->z, Z_NO_FLUSH);
        *got += want - s->z.avail_out;
        unsigned long long at = (unsigned long long)(s->pos + *got);
        if (zr == Z_STREAM_END) {
            s->members++;
            /* Another member, or the end of the file; anything else is trailing garbage. */
            if (s->z.avail_in < 2) {
                tg_status st = src_fill(ds, s);
                if (st)
                    return st;
            }
            if (s->z.avail_in == 0) {
                s->done = true;
                break;
            }
            uint64_t end = src_raw_pos(s);
            if (s->z.avail_in >= 2 && s->z.next_in[0] == 0x1f && s->z.next_in[1] == 0x8b) {
                s->member_at = end;
                inflateReset(&s->z);
                continue;
            }
            uint64_t extra = s->file_size > end ? s->file_size - end : s->z.avail_in;
            return ds_fail(ds, TG_ERR_FORMAT,
                           "\"%s\": %llu trailing bytes after the gzip data, from byte %llu "
                           "(the end of gzip member %u) to the end of the file",
                           s->path, (unsigned long long)extra, (unsigned long long)end,
                           s->members);
        }
        if (zr == Z_MEM_ERROR)
            return ds_fail(ds, TG_ERR_NOMEM, "\"%s\": out of memory decompressing", s->path);
        if (zr == Z_DATA_ERROR || zr == Z_NEED_DICT || zr == Z_STREAM_ERROR)
            return ds_fail(ds, TG_ERR_FORMAT,
                           "\"%s\": corrupt gzip data in member %u (which starts at byte %llu), "
                           "near byte %llu, after %llu decompressed bytes: %s",
                           s->path, s->members + 1, (unsigned long long)s->member_at,
                           (unsigned long long)src_raw_pos(s), at,
                           s->z.msg ? s->z.msg : "invalid data");
        if (zr == Z_BUF_ERROR || (s->z.avail_in == 0 && s->raw_eof && s->z.avail_out > 0)) {
            /* No progress possible: the input ran out inside a member. */
            if (s->z.avail_in == 0 && s->raw_eof)
                return ds_fail(ds, TG_ERR_FORMAT,
                               "\"%s\": truncated gzip stream: member %u (from byte %llu) is "
                               "cut at the end of the file, byte %llu, after %llu "
                               "decompressed bytes",
                               s->path, s->members + 1, (unsigned long long)s->member_at,
                               (unsigned long long)s->raw_read, at);
        }
    }
    return TG_OK;
}

/* Read up to n bytes; *got is what arrived. A short count without an error is end of file. */
static tg_status
src_read(tg_dataset *ds, struct src *s, void *buf, size_t n, size_t *got)
{
    tg_status st = s->direct ? src_raw_read(ds, s, buf, n, got) : src_inflate(ds, s, buf, n, got);
    s->pos += *got;
    return st;
}

/* Read exactly n bytes or fail with a "truncated" message naming `what`. */
static tg_status
src_read_exact(tg_dataset *ds, struct src *s, void *buf, size_t n, const char *what)
{
    uint64_t at = s->pos;
    size_t got;
    tg_status st = src_read(ds, s, buf, n, &got);
    if (st)
        return st;
    if (got < n)
        return ds_fail(ds, TG_ERR_FORMAT,
                       "\"%s\": truncated: %s needs %zu bytes at byte %llu, only %zu present",
                       s->path, what, n, (unsigned long long)at, got);
    return TG_OK;
}

/* Fails when anything follows the expected end of the data. */
static tg_status
src_expect_eof(tg_dataset *ds, struct src *s)
{
    unsigned char extra[4096];
    uint64_t at = s->pos;
    uint64_t more = 0;
    for (;;) {
        size_t got;
        tg_status st = src_read(ds, s, extra, sizeof extra, &got);
        if (st)
            return st;
        if (got == 0)
            break;
        more += got;
        if (more >= (1u << 20))
            break; /* enough to say it is wrong */
    }
    if (more)
        return ds_fail(ds, TG_ERR_FORMAT,
                       "\"%s\": %s%llu trailing bytes after the data, which ends at %sbyte %llu",
                       s->path, more >= (1u << 20) ? "at least " : "", (unsigned long long)more,
                       s->direct ? "" : "decompressed ", (unsigned long long)at);
    return TG_OK;
}

/* Read n bytes of payload into a new buffer. For a plain file the size was checked against
 * the file already; for gzip the buffer grows as data arrives (a header that claims terabytes
 * fails with "truncated" once the stream ends, having allocated about what was there). */
static tg_status
src_read_payload(tg_dataset *ds, struct src *s, size_t n, const char *what, void **out)
{
    *out = NULL;
    size_t cap = n;
    if (!s->direct && cap > ((size_t)1 << 24))
        cap = (size_t)1 << 24;
    unsigned char *buf = tg__malloc(cap);
    if (!buf)
        return ds_fail(ds, TG_ERR_NOMEM, "\"%s\": out of memory (%zu bytes) for %s", s->path,
                       cap, what);
    size_t have = 0;
    uint64_t start = s->pos;
    while (have < n) {
        if (have == cap) {
            size_t ncap = cap > n / 2 ? n : cap * 2;
            unsigned char *nb = tg__realloc(buf, ncap);
            if (!nb) {
                tg__free(buf);
                return ds_fail(ds, TG_ERR_NOMEM, "\"%s\": out of memory (%zu bytes) for %s",
                               s->path, ncap, what);
            }
            buf = nb;
            cap = ncap;
        }
        size_t got;
        tg_status st = src_read(ds, s, buf + have, cap - have, &got);
        if (st) {
            tg__free(buf);
            return st;
        }
        have += got;
        if (got == 0)
            break;
    }
    if (have < n) {
        tg__free(buf);
        return ds_fail(ds, TG_ERR_FORMAT,
                       "\"%s\": truncated: %s needs %zu bytes from byte %llu, only %zu present",
                       s->path, what, n, (unsigned long long)start, have);
    }
    *out = buf;
    return TG_OK;
}

/* ---------------------------------------------------------------------------------------
 * IDX.
 */
struct idx {
    int type;        /* 0x08 ... 0x0E */
    int rank;
    uint32_t dims[TG_MAX_DIMS];
    size_t count;    /* product of dims */
    size_t esize;    /* bytes per value */
    unsigned char *raw; /* count * esize bytes, big-endian */
};

static size_t
idx_type_size(int type)
{
    switch (type) {
    case 0x08: /* unsigned byte */
    case 0x09: /* signed byte */
        return 1;
    case 0x0B: /* short */
        return 2;
    case 0x0C: /* int */
    case 0x0D: /* float */
        return 4;
    case 0x0E: /* double */
        return 8;
    default:
        return 0;
    }
}

static const char *
idx_type_name(int type)
{
    switch (type) {
    case 0x08: return "u8";
    case 0x09: return "i8";
    case 0x0B: return "i16";
    case 0x0C: return "i32";
    case 0x0D: return "f32";
    case 0x0E: return "f64";
    default: return "?";
    }
}

static uint32_t
be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static uint64_t
be64(const unsigned char *p)
{
    return (uint64_t)be32(p) << 32 | be32(p + 4);
}

static void
idx_dims_text(const struct idx *x, char *buf, size_t size)
{
    size_t off = 0;
    buf[0] = '\0';
    for (int i = 0; i < x->rank && off < size; i++) {
        int n = snprintf(buf + off, size - off, "%s%lu", i ? "x" : "", (unsigned long)x->dims[i]);
        if (n < 0)
            break;
        off += (size_t)n;
    }
}

static tg_status
idx_read(tg_dataset *ds, const char *path, struct idx *x)
{
    memset(x, 0, sizeof *x);
    struct src s;
    tg_status st = src_open(ds, &s, path);
    if (st)
        return st;

    unsigned char head[4];
    size_t got;
    st = src_read(ds, &s, head, 4, &got);
    if (st)
        goto out;
    if (got < 4) {
        st = ds_fail(ds, TG_ERR_FORMAT,
                     "\"%s\": truncated: %zu bytes, shorter than the 4-byte IDX magic", path, got);
        goto out;
    }
    if (head[0] != 0 || head[1] != 0) {
        st = ds_fail(ds, TG_ERR_FORMAT,
                     "\"%s\": bad magic %02x %02x %02x %02x: an IDX file starts with 00 00, a "
                     "type byte and a rank byte",
                     path, head[0], head[1], head[2], head[3]);
        goto out;
    }
    x->type = head[2];
    x->esize = idx_type_size(x->type);
    if (!x->esize) {
        st = ds_fail(ds, TG_ERR_FORMAT,
                     "\"%s\": unknown IDX type byte 0x%02x at byte 2 (known: 0x08 u8, 0x09 i8, "
                     "0x0B i16, 0x0C i32, 0x0D f32, 0x0E f64)",
                     path, x->type);
        goto out;
    }
    x->rank = head[3];
    if (x->rank < 1 || x->rank > TG_MAX_DIMS) {
        st = ds_fail(ds, TG_ERR_FORMAT, "\"%s\": IDX rank %d at byte 3, must be 1..%d", path,
                     x->rank, TG_MAX_DIMS);
        goto out;
    }
    unsigned char dimbuf[4 * TG_MAX_DIMS];
    st = src_read_exact(ds, &s, dimbuf, 4 * (size_t)x->rank, "the dimensions");
    if (st)
        goto out;
    size_t count = 1;
    bool overflow = false;
    for (int i = 0; i < x->rank; i++) {
        x->dims[i] = be32(dimbuf + 4 * i);
        if (__builtin_mul_overflow(count, (size_t)x->dims[i], &count))
            overflow = true;
    }
    size_t nbytes = 0;
    char dims_text[96];
    idx_dims_text(x, dims_text, sizeof dims_text);
    if (overflow || __builtin_mul_overflow(count, x->esize, &nbytes)) {
        st = ds_fail(ds, TG_ERR_FORMAT,
                     "\"%s\": dims %s of %s values overflow the address space", path, dims_text,
                     idx_type_name(x->type));
        goto out;
    }
    x->count = count;
    uint64_t header = 4 + 4 * (uint64_t)x->rank;
    if (s.direct) {
        /* Plain file: compare with the bytes present before allocating anything. */
        uint64_t present = s.file_size > header ? s.file_size - header : 0;
        if (present < nbytes) {
            st = ds_fail(ds, TG_ERR_FORMAT,
                         "\"%s\": truncated: dims %s of %s need %zu bytes of data after byte "
                         "%llu, the file has %llu",
                         path, dims_text, idx_type_name(x->type), nbytes,
                         (unsigned long long)header, (unsigned long long)present);
            goto out;
        }
        if (present > nbytes) {
            st = ds_fail(ds, TG_ERR_FORMAT,
                         "\"%s\": %llu trailing bytes from byte %llu: dims %s of %s need %zu "
                         "bytes of data after byte %llu, the file has %llu",
                         path, (unsigned long long)(present - nbytes),
                         (unsigned long long)(header + nbytes), dims_text,
                         idx_type_name(x->type), nbytes, (unsigned long long)header,
                         (unsigned long long)present);
            goto out;
        }
    }
    char what[160];
    snprintf(what, sizeof what, "data of dims %s (%s)", dims_text, idx_type_name(x->type));
    void *raw = NULL;
    st = src_read_payload(ds, &s, nbytes, what, &raw);
    if (st)
        goto out;
    x->raw = raw;
    st = src_expect_eof(ds, &s);
    if (st) {
        tg__free(x->raw);
        x->raw = NULL;
    }
out:
    src_close(&s);
    return st;
}

/* Element i of an IDX payload as a double (exact for every IDX type). */
static inline double
idx_value(const struct idx *x, size_t i)
{
    const unsigned char *p = x->raw + i * x->esize;
    switch (x->type) {
    case 0x08: return p[0];
    case 0x09: return (int8_t)p[0];
    case 0x0B: return (int16_t)(uint16_t)((unsigned)p[0] << 8 | p[1]);
    case 0x0C: return (int32_t)be32(p);
    case 0x0D: {
        uint32_t u = be32(p);
        float f;
        memcpy(&f, &u, sizeof f);
        return f;
    }
    default: {
        uint64_t u = be64(p);
        double d;
        memcpy(&d, &u, sizeof d);
        return d;
    }
    }
}

static tg_status
idx_to_features(tg_dataset *ds, const char *path, const struct idx *x, const tg_idx_options *o,
                struct contents *c)
{
    if (o->scale_to_unit && x->type != 0x08)
        return ds_fail(ds, TG_ERR_ARG,
                       "\"%s\": scale_to_unit applies to u8 (0x08) data, the file holds %s",
                       path, idx_type_name(x->type));
    size_t esize = tg__dtype_bytes(o->dtype);
    c->dtype = o->dtype;
    c->count = x->dims[0];
    c->features = 1;
    c->ndim = x->rank > 1 ? x->rank - 1 : 1;
    memset(c->dims, 0, sizeof c->dims);
    c->dims[0] = 1;
    for (int i = 1; i < x->rank; i++) {
        c->dims[i - 1] = x->dims[i];
        /* Checked even though the total was: with dims[0] = 0 the rest may still overflow. */
        if (__builtin_mul_overflow(c->features, (size_t)x->dims[i], &c->features))
            return ds_fail(ds, TG_ERR_FORMAT, "\"%s\": the dims of one example overflow", path);
    }
    /* Examples with no values are no data to train on, and a 16-byte header declaring 2^32
     * of them would make every batcher allocate 8 bytes per example (found by fuzz-idx). */
    if (c->features == 0 && c->count > 0)
        return ds_fail(ds, TG_ERR_FORMAT,
                       "\"%s\": %zu examples of 0 values each (a dim after the first is 0)",
                       path, c->count);
    size_t bytes;
    if (__builtin_mul_overflow(x->count, esize, &bytes))
        return ds_fail(ds, TG_ERR_NOMEM, "\"%s\": %zu values of %zu bytes overflow", path,
                       x->count, esize);
    c->data = tg__malloc(bytes);
    if (!c->data)
        return ds_fail(ds, TG_ERR_NOMEM, "\"%s\": out of memory (%zu bytes) for the features",
                       path, bytes);
    if (o->dtype == TG_F32) {
        float *dst = c->data;
        if (x->type == 0x08) {
            const unsigned char *src = x->raw;
            if (o->scale_to_unit)
                for (size_t i = 0; i < x->count; i++)
                    dst[i] = (float)src[i] / 255.0f;
            else
                for (size_t i = 0; i < x->count; i++)
                    dst[i] = (float)src[i];
        } else {
            for (size_t i = 0; i < x->count; i++) {
                double v = idx_value(x, i);
                if (isfinite(v) && fabs(v) > FLT_MAX) /* out-of-range conversion is UB */
                    return ds_fail(ds, TG_ERR_FORMAT,
                                   "\"%s\": value %zu is %g, outside the float32 range", path, i,
                                   v);
                dst[i] = (float)v;
            }
        }
    } else {
        double *dst = c->data;
        if (x->type == 0x08) {
            const unsigned char *src = x->raw;
            for (size_t i = 0; i < x->count; i++)
                dst[i] = o->scale_to_unit ? src[i] / 255.0 : (double)src[i];
        } else {
            for (size_t i = 0; i < x->count; i++)
                dst[i] = idx_value(x, i);
        }
    }
    return TG_OK;
}

static tg_status
idx_to_labels(tg_dataset *ds, const char *images_path, const char *path, const struct idx *x,
              struct contents *c)
{
    if (x->type != 0x08 && x->type != 0x09 && x->type != 0x0B && x->type != 0x0C)
        return ds_fail(ds, TG_ERR_FORMAT,
                       "\"%s\": labels must be an integer IDX type (u8, i8, i16, i32), the file "
                       "holds %s",
                       path, idx_type_name(x->type));
    if (x->rank != 1) {
        char dims_text[96];
        idx_dims_text(x, dims_text, sizeof dims_text);
        return ds_fail(ds, TG_ERR_FORMAT, "\"%s\": labels must have rank 1, the file has dims %s",
                       path, dims_text);
    }
    if ((size_t)x->dims[0] != c->count)
        return ds_fail(ds, TG_ERR_FORMAT,
                       "\"%s\": %lu labels but \"%s\" has %zu images: the counts must agree", path,
                       (unsigned long)x->dims[0], images_path, c->count);
    c->labels = tg__malloc(x->count * sizeof *c->labels);
    if (!c->labels)
        return ds_fail(ds, TG_ERR_NOMEM, "\"%s\": out of memory (%zu bytes) for the labels",
                       path, x->count * sizeof *c->labels);
    int32_t maxl = -1;
    for (size_t i = 0; i < x->count; i++) {
        double v = idx_value(x, i);
        if (v < 0)
            return ds_fail(ds, TG_ERR_FORMAT, "\"%s\": label %zu is %.0f, labels must be >= 0",
                           path, i, v);
        c->labels[i] = (int32_t)v;
        if (c->labels[i] > maxl)
            maxl = c->labels[i];
    }
    if (maxl == INT32_MAX)
        return ds_fail(ds, TG_ERR_FORMAT, "\"%s\": label %d leaves no room for a class count",
                       path, maxl);
    c->num_classes = maxl + 1;
    return TG_OK;
}

tg_status
tg_dataset_load_idx(tg_dataset *ds, const char *images_path, const char *labels_path,
                    const tg_idx_options *opt)
{
    if (!ds)
        return TG_ERR_ARG;
    if (!images_path)
        return ds_fail(ds, TG_ERR_ARG, "load_idx: images path is NULL");
    tg_idx_options o = opt ? *opt : (tg_idx_options){.dtype = TG_F32};
    if (o.dtype != TG_F32 && o.dtype != TG_F64)
        return ds_fail(ds, TG_ERR_ARG, "load_idx: dtype %d is neither TG_F32 nor TG_F64",
                       (int)o.dtype);

    struct idx img, lab;
    memset(&lab, 0, sizeof lab);
    struct contents c;
    memset(&c, 0, sizeof c);
    tg_status st = idx_read(ds, images_path, &img);
    if (st)
        return st;
    st = idx_to_features(ds, images_path, &img, &o, &c);
    tg__free(img.raw);
    if (st)
        goto fail;
    if (labels_path) {
        st = idx_read(ds, labels_path, &lab);
        if (st)
            goto fail;
        st = idx_to_labels(ds, images_path, labels_path, &lab, &c);
        tg__free(lab.raw);
        if (st)
            goto fail;
    }
    return ds_take(ds, &c);
fail:
    contents_free(&c);
    return st;
}

/* ---------------------------------------------------------------------------------------
 * CSV.
 */

/* One UTF-8 sequence at p (n >= 1 bytes left): its length, with the code point in *cp, or 0
 * when the bytes are not valid UTF-8 (a stray continuation byte, an overlong form, a
 * surrogate, above U+10FFFF, or a sequence cut short). */
static size_t
utf8_decode(const unsigned char *p, size_t n, uint32_t *cp)
{
    unsigned char c = p[0];
    size_t len;
    uint32_t v, min;
    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if (c >= 0xC2 && c <= 0xDF) {
        len = 2, v = c & 0x1Fu, min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3, v = c & 0x0Fu, min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4, v = c & 0x07u, min = 0x10000;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        v = v << 6 | (p[i] & 0x3Fu);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
        return 0;
    *cp = v;
    return len;
}

/* Characters that print as nothing or as a plain space, or reorder text: controls (C0, DEL,
 * C1), no-break and other spaces, zero-width characters, bidi controls, the byte-order mark,
 * variation selectors, tags, noncharacters. A message shows them escaped. */
static bool
invisible(uint32_t c)
{
    return c < 0x20 || (c >= 0x7F && c <= 0xA0) || c == 0xAD || c == 0x34F || c == 0x61C ||
           c == 0x115F || c == 0x1160 || c == 0x17B4 || c == 0x17B5 ||
           (c >= 0x180B && c <= 0x180F) || (c >= 0x2000 && c <= 0x200F) ||
           (c >= 0x2028 && c <= 0x202F) || (c >= 0x205F && c <= 0x206F) || c == 0x3000 ||
           c == 0x3164 || (c >= 0xFE00 && c <= 0xFE0F) || c == 0xFEFF || c == 0xFFA0 ||
           (c >= 0xFFF0 && c <= 0xFFFB) || c == 0xFFFE || c == 0xFFFF ||
           (c >= 0x1BCA0 && c <= 0x1BCA3) || (c >= 0x1D173 && c <= 0x1D17A) ||
           (c >= 0xE0000 && c <= 0xE0FFF) || c >= 0xF0000 || (c & 0xFFFE) == 0xFFFE;
}

/* File content as it goes between quotes in a message: at most 40 bytes of it (cut between
 * characters, then "..."), printable UTF-8 as it is, \t \n \r \" \\ for those, other
 * invisible characters as \uXXXX (\UXXXXXXXX above U+FFFF), other control bytes and bytes
 * that are not UTF-8 as \xNN. Every message that quotes the file goes through here. */
static void
quote_text(const char *text, size_t n, char *buf, size_t size)
{
    const unsigned char *p = (const unsigned char *)text;
    size_t o = 0, i = 0;
    while (i < n) {
        uint32_t cp = 0;
        size_t len = utf8_decode(p + i, n - i, &cp);
        /* Room for the longest escape, "..." and the NUL. */
        if (i + (len ? len : 1) > 40 || size - o < 16)
            break;
        int w;
        if (!len)
            w = snprintf(buf + o, size - o, "\\x%02x", p[i]);
        else if (cp == '\t')
            w = snprintf(buf + o, size - o, "\\t");
        else if (cp == '\n')
            w = snprintf(buf + o, size - o, "\\n");
        else if (cp == '\r')
            w = snprintf(buf + o, size - o, "\\r");
        else if (cp == '"' || cp == '\\')
            w = snprintf(buf + o, size - o, "\\%c", (char)cp);
        else if (cp < 0x20 || cp == 0x7F)
            w = snprintf(buf + o, size - o, "\\x%02x", (unsigned)cp);
        else if (invisible(cp))
            w = snprintf(buf + o, size - o, cp > 0xFFFF ? "\\U%08lx" : "\\u%04lx",
                         (unsigned long)cp);
        else {
            memcpy(buf + o, p + i, len);
            w = (int)len;
        }
        o += (size_t)w;
        i += len ? len : 1;
    }
    if (i < n && size - o >= 4) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o] = '\0';
}

struct csv_line {
    char *p;    /* start */
    size_t n;   /* length without the line ending */
    size_t num; /* 1-based line number */
};

static bool
is_blank(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != ' ' && p[i] != '\t')
            return false;
    return true;
}

/* Parse one cell [p, p+n) as a C-locale number; false when it is not one. The cell's end
 * byte is temporarily overwritten with NUL (the buffer is ours). */
static bool
parse_number(char *p, size_t n, double *v, bool *range)
{
    while (n && (*p == ' ' || *p == '\t')) {
        p++;
        n--;
    }
    while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
        n--;
    *range = false;
    if (!n)
        return false;
    char save = p[n];
    p[n] = '\0';
    char *end;
    errno = 0;
    double d = strtod(p, &end);
    bool ok = end == p + n;
    if (ok && errno == ERANGE && isinf(d))
        *range = true;
    p[n] = save;
    *v = d;
    return ok && !*range;
}

static size_t
count_cells(const char *p, size_t n, char delim)
{
    size_t k = 1;
    for (size_t i = 0; i < n; i++)
        k += p[i] == delim;
    return k;
}

/* Why a cell that is not a number may be one after all, for the message (or ""): a decimal
 * comma, another delimiter inside it, quotes. */
static void
cell_hint(const char *q, size_t n, char delim, char *buf, size_t size)
{
    buf[0] = '\0';
    while (n && (*q == ' ' || *q == '\t'))
        q++, n--;
    while (n && (q[n - 1] == ' ' || q[n - 1] == '\t'))
        n--;
    if (!n)
        return;
    if (n >= 2 && (q[0] == '"' || q[0] == '\'') && q[n - 1] == q[0]) {
        snprintf(buf, size, " (quoted cells are not read as numbers)");
        return;
    }
    const char *comma = memchr(q, ',', n);
    if (comma && delim != ',' && n < 64 && !memchr(comma + 1, ',', n - (size_t)(comma - q) - 1)) {
        char t[64];
        memcpy(t, q, n);
        t[comma - q] = '.';
        double v;
        bool range;
        if (parse_number(t, n, &v, &range)) {
            snprintf(buf, size, " (a decimal comma? numbers need a '.')");
            return;
        }
    }
    if (memchr(q, '\t', n)) { /* spaces and tabs around a number are ignored, so never cells */
        snprintf(buf, size, " (it holds a tab: tab-separated files are not read, the delimiter "
                            "cannot be a tab)");
        return;
    }
    static const char others[] = ",;|";
    for (const char *c = others; *c; c++)
        if (*c != delim && memchr(q, *c, n)) {
            char a[16], b[16];
            quote_text(c, 1, a, sizeof a);
            quote_text(&delim, 1, b, sizeof b);
            snprintf(buf, size, " (it holds '%s': is that the delimiter? the delimiter is '%s')",
                     a, b);
            return;
        }
}

/* Why a line was taken as a header, for messages about the data after it. */
struct csv_header {
    size_t line;      /* 0 while no line was */
    bool detected;    /* by TG_CSV_HEADER_AUTO (else TG_CSV_HEADER_PRESENT) */
    size_t col;       /* detected: 1-based column of the first cell that is not a number */
    char shown[200];  /* that cell, quoted */
    char hint[160];   /* cell_hint of it */
};

static void
header_reason(const struct csv_header *h, char *buf, size_t size)
{
    if (h->detected)
        snprintf(buf, size,
                 "line %zu was read as a header because no cell of it is a number (column "
                 "%zu, \"%s\", is not a number%s)",
                 h->line, h->col, h->shown, h->hint);
    else
        snprintf(buf, size, "line %zu was skipped as a header (TG_CSV_HEADER_PRESENT)", h->line);
}

/* 1-based line of byte i: LF, CRLF and a lone CR each end a line. */
static size_t
line_of(const char *text, size_t len, size_t i)
{
    size_t line = 1;
    for (size_t j = 0; j < i; j++)
        line += text[j] == '\n' || (text[j] == '\r' && (j + 1 >= len || text[j + 1] != '\n'));
    return line;
}

static tg_status
csv_parse(tg_dataset *ds, const char *path, char *text, size_t len, const tg_csv_options *o,
          struct contents *c)
{
    char delim = o->delimiter ? o->delimiter : ',';
    size_t esize = tg__dtype_bytes(o->dtype);
    size_t ncols = 0, first_line = 0;
    size_t cap_rows = 0, rows = 0;
    int32_t maxl = -1;
    bool header_pending = o->header != TG_CSV_HEADER_NONE;
    size_t label_col = 0;
    struct csv_header hdr;
    hdr.line = 0;
    tg_status st = TG_OK;

    const unsigned char *u = (const unsigned char *)text;
    if (len >= 2 && ((u[0] == 0xFF && u[1] == 0xFE) || (u[0] == 0xFE && u[1] == 0xFF)))
        return ds_fail(ds, TG_ERR_FORMAT,
                       "\"%s\": UTF-16 text (byte-order mark %02x %02x at byte 0); the reader "
                       "takes UTF-8 or ASCII: save the file as UTF-8",
                       path, u[0], u[1]);
    for (size_t i = 0; i < len; i++)
        if (text[i] == '\0')
            return ds_fail(ds, TG_ERR_FORMAT,
                           "\"%s\": line %zu: NUL byte at byte %zu (binary data, or UTF-16 "
                           "text without a byte-order mark? the reader takes UTF-8 text)",
                           path, line_of(text, len, i), i);

    size_t line_no = 0;
    /* A UTF-8 byte-order mark (Excel's "CSV UTF-8") is not content. */
    size_t bom = len >= 3 && u[0] == 0xEF && u[1] == 0xBB && u[2] == 0xBF ? 3 : 0;
    char *p = text + bom, *end = text + len;
    while (p < end) {
        /* A line ends at LF, CRLF or a lone CR (classic Mac OS); the text has no NUL. */
        char *le = p + strcspn(p, "\r\n");
        struct csv_line L = {p, (size_t)(le - p), ++line_no};
        p = le < end ? le + 1 + (le[0] == '\r' && le + 1 < end && le[1] == '\n') : end;
        if (is_blank(L.p, L.n))
            continue;
        size_t k = count_cells(L.p, L.n, delim);

        if (header_pending) {
            header_pending = false;
            bool header = o->header == TG_CSV_HEADER_PRESENT;
            if (!header) {
                /* Auto: a header when no cell is a number and some cell is text (an empty
                 * cell counts as neither; an out-of-range one such as 1e999 as a number). A
                 * line with both is an error: taking it as a header would drop a data row
                 * with a typo in it, and as data it fails on its text cell anyway, so name
                 * both cells instead of guessing. */
                char *q = L.p;
                size_t num_col = 0;
                char num_shown[200];
                for (size_t j = 0; j < k; j++) {
                    char *ce = memchr(q, delim, (size_t)(L.p + L.n - q));
                    if (!ce)
                        ce = L.p + L.n;
                    double v;
                    bool range;
                    size_t cn = (size_t)(ce - q);
                    if (parse_number(q, cn, &v, &range) || range) {
                        if (!num_col) {
                            num_col = j + 1;
                            quote_text(q, cn, num_shown, sizeof num_shown);
                        }
                    } else if (!header && !is_blank(q, cn)) {
                        header = true;
                        hdr.detected = true;
                        hdr.col = j + 1;
                        quote_text(q, cn, hdr.shown, sizeof hdr.shown);
                        cell_hint(q, cn, delim, hdr.hint, sizeof hdr.hint);
                    }
                    q = ce + 1;
                }
                if (header && num_col)
                    return ds_fail(ds, TG_ERR_FORMAT,
                                   "\"%s\": line %zu, column %zu: \"%s\" is not a number%s, "
                                   "but column %zu, \"%s\", is: a first line mixing numbers "
                                   "and text is neither a header nor data (TG_CSV_HEADER_AUTO "
                                   "takes a header only when no cell of it is a number; "
                                   "TG_CSV_HEADER_PRESENT skips it whatever it holds)",
                                   path, L.num, hdr.col, hdr.shown, hdr.hint, num_col,
                                   num_shown);
            } else {
                hdr.detected = false;
            }
            if (header) {
                hdr.line = L.num;
                ncols = k;
                first_line = L.num;
                continue;
            }
        }
        if (!ncols) {
            ncols = k;
            first_line = L.num;
        }
        if (k != ncols) {
            st = ds_fail(ds, TG_ERR_FORMAT,
                         "\"%s\": line %zu has %zu columns, expected %zu (as on line %zu)", path,
                         L.num, k, ncols, first_line);
            goto row_fail;
        }
        if (!c->data) {
            /* First data row: fix the layout. */
            if (o->has_labels) {
                if (o->label_column < -1 || (o->label_column >= 0 &&
                                              (size_t)o->label_column >= ncols))
                    return ds_fail(ds, TG_ERR_ARG,
                                   "\"%s\": label_column %d is out of range for %zu columns",
                                   path, o->label_column, ncols);
                if (ncols < 2) {
                    st = ds_fail(ds, TG_ERR_FORMAT,
                                 "\"%s\": line %zu has 1 column: no features beside the label",
                                 path, L.num);
                    goto row_fail;
                }
                label_col = o->label_column < 0 ? ncols - 1 : (size_t)o->label_column;
            }
            c->features = ncols - (o->has_labels ? 1 : 0);
            cap_rows = 64;
            size_t bytes;
            if (__builtin_mul_overflow(cap_rows * c->features, esize, &bytes))
                return ds_fail(ds, TG_ERR_FORMAT, "\"%s\": %zu columns overflow", path, ncols);
            c->data = tg__malloc(bytes);
            if (!c->data)
                return ds_fail(ds, TG_ERR_NOMEM, "\"%s\": out of memory (%zu bytes)", path,
                               bytes);
            if (o->has_labels) {
                c->labels = tg__malloc(cap_rows * sizeof *c->labels);
                if (!c->labels)
                    return ds_fail(ds, TG_ERR_NOMEM, "\"%s\": out of memory", path);
            }
        }
        if (rows == cap_rows) {
            size_t ncap, bytes;
            if (__builtin_mul_overflow(cap_rows, 2, &ncap) ||
                __builtin_mul_overflow(ncap, c->features * esize, &bytes))
                return ds_fail(ds, TG_ERR_NOMEM, "\"%s\": too many rows", path);
            void *nd = tg__realloc(c->data, bytes);
            if (!nd)
                return ds_fail(ds, TG_ERR_NOMEM, "\"%s\": out of memory (%zu bytes)", path,
                               bytes);
            c->data = nd;
            if (c->labels) {
                int32_t *nlab = tg__realloc(c->labels, ncap * sizeof *nlab);
                if (!nlab)
                    return ds_fail(ds, TG_ERR_NOMEM, "\"%s\": out of memory", path);
                c->labels = nlab;
            }
            cap_rows = ncap;
        }
        char *q = L.p;
        size_t f = 0;
        for (size_t j = 0; j < k; j++) {
            char *ce = memchr(q, delim, (size_t)(L.p + L.n - q));
            if (!ce)
                ce = L.p + L.n;
            size_t cn = (size_t)(ce - q);
            double v;
            bool range;
            char shown[200];
            if (!parse_number(q, cn, &v, &range)) {
                quote_text(q, cn, shown, sizeof shown);
                if (range)
                    st = ds_fail(ds, TG_ERR_FORMAT,
                                 "\"%s\": line %zu, column %zu: \"%s\" is out of range", path,
                                 L.num, j + 1, shown);
                else if (is_blank(q, cn))
                    st = ds_fail(ds, TG_ERR_FORMAT, "\"%s\": line %zu, column %zu: empty cell",
                                 path, L.num, j + 1);
                else {
                    char hint[160];
                    cell_hint(q, cn, delim, hint, sizeof hint);
                    st = ds_fail(ds, TG_ERR_FORMAT,
                                 "\"%s\": line %zu, column %zu: \"%s\" is not a number%s", path,
                                 L.num, j + 1, shown, hint);
                }
                goto row_fail;
            }
            if (o->has_labels && j == label_col) {
                if (!(v >= 0 && v <= INT32_MAX - 1 && v == floor(v))) {
                    quote_text(q, cn, shown, sizeof shown);
                    st = ds_fail(ds, TG_ERR_FORMAT,
                                 "\"%s\": line %zu, column %zu: label \"%s\" is not an "
                                 "integer in [0, %d]",
                                 path, L.num, j + 1, shown, INT32_MAX - 1);
                    goto row_fail;
                }
                c->labels[rows] = (int32_t)v;
                if (c->labels[rows] > maxl)
                    maxl = c->labels[rows];
            } else {
                size_t at = rows * c->features + f++;
                if (o->dtype == TG_F32) {
                    if (isfinite(v) && fabs(v) > FLT_MAX) {
                        quote_text(q, cn, shown, sizeof shown);
                        st = ds_fail(ds, TG_ERR_FORMAT,
                                     "\"%s\": line %zu, column %zu: \"%s\" is outside the "
                                     "float32 range",
                                     path, L.num, j + 1, shown);
                        goto row_fail;
                    }
                    ((float *)c->data)[at] = (float)v;
                } else {
                    ((double *)c->data)[at] = v;
                }
            }
            q = ce + 1;
        }
        rows++;
    }
    if (!rows) {
        char why[640];
        if (hdr.line) {
            header_reason(&hdr, why, sizeof why);
            return ds_fail(ds, TG_ERR_FORMAT,
                           "\"%s\": no data rows: %s, and no data line follows it", path, why);
        }
        return ds_fail(ds, TG_ERR_FORMAT, "\"%s\": no data rows: %s", path,
                       len > bom ? "the file has only blank lines" : "the file is empty");
    }
    c->count = rows;
    c->dtype = o->dtype;
    c->ndim = 1;
    memset(c->dims, 0, sizeof c->dims);
    c->dims[0] = (int64_t)c->features;
    c->num_classes = o->has_labels ? maxl + 1 : 0;
    return TG_OK;

row_fail:
    /* A failing first data line after a detected header: say that the line before it was
     * read as a header, and why, as the header may be a data line that should not be one. */
    if (rows == 0 && hdr.line && hdr.detected) {
        char why[640];
        header_reason(&hdr, why, sizeof why);
        size_t n = strlen(ds->errmsg);
        snprintf(ds->errmsg + n, sizeof ds->errmsg - n, "; %s", why);
    }
    return st;
}

tg_status
tg_dataset_load_csv(tg_dataset *ds, const char *path, const tg_csv_options *opt)
{
    if (!ds)
        return TG_ERR_ARG;
    if (!path)
        return ds_fail(ds, TG_ERR_ARG, "load_csv: path is NULL");
    tg_csv_options o = opt ? *opt : (tg_csv_options){.dtype = TG_F32};
    if (o.dtype != TG_F32 && o.dtype != TG_F64)
        return ds_fail(ds, TG_ERR_ARG, "load_csv: dtype %d is neither TG_F32 nor TG_F64",
                       (int)o.dtype);
    if (o.header != TG_CSV_HEADER_AUTO && o.header != TG_CSV_HEADER_NONE &&
        o.header != TG_CSV_HEADER_PRESENT)
        return ds_fail(ds, TG_ERR_ARG, "load_csv: unknown header mode %d", (int)o.header);
    char d = o.delimiter ? o.delimiter : ',';
    if (d == '\n' || d == '\r' || d == ' ' || d == '\t' || d == '.' || d == '-' || d == '+' ||
        (d >= '0' && d <= '9') || (d >= 'a' && d <= 'z') || (d >= 'A' && d <= 'Z'))
        return ds_fail(ds, TG_ERR_ARG, "load_csv: delimiter 0x%02x cannot separate numbers",
                       (unsigned char)d);

    struct src s;
    tg_status st = src_open(ds, &s, path);
    if (st)
        return st;
    /* Whole file into memory (grows as it arrives; +1 for a terminator). */
    size_t cap = 1 << 16, len = 0;
    char *text = tg__malloc(cap);
    if (!text) {
        src_close(&s);
        return ds_fail(ds, TG_ERR_NOMEM, "\"%s\": out of memory", path);
    }
    for (;;) {
        if (cap - len < 2) {
            size_t ncap;
            if (__builtin_mul_overflow(cap, 2, &ncap)) {
                st = ds_fail(ds, TG_ERR_NOMEM, "\"%s\": file too large", path);
                break;
            }
            char *nt = tg__realloc(text, ncap);
            if (!nt) {
                st = ds_fail(ds, TG_ERR_NOMEM, "\"%s\": out of memory (%zu bytes)", path, ncap);
                break;
            }
            text = nt;
            cap = ncap;
        }
        size_t got;
        st = src_read(ds, &s, text + len, cap - len - 1, &got);
        if (st || !got)
            break;
        len += got;
    }
    src_close(&s);
    if (st) {
        tg__free(text);
        return st;
    }
    text[len] = '\0';

    locale_t c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0);
    if (c_locale == (locale_t)0) {
        tg__free(text);
        return ds_fail(ds, TG_ERR_NOMEM, "\"%s\": cannot create the C locale", path);
    }
    locale_t prev = uselocale(c_locale); /* this thread only: strtod reads "1.5" everywhere */
    struct contents c;
    memset(&c, 0, sizeof c);
    st = csv_parse(ds, path, text, len, &o, &c);
    uselocale(prev);
    freelocale(c_locale);
    tg__free(text);
    if (st) {
        contents_free(&c);
        return st;
    }
    return ds_take(ds, &c);
}

/* ---------------------------------------------------------------------------------------
 * Minibatches.
 */
struct tg_batcher {
    const tg_dataset *ds;
    size_t batch_size;
    tg_layout layout;
    bool drop_last;
    tg_rng *rng;
    size_t count, features, esize;
    size_t *order;
    size_t pos;
    void *x;
    int32_t *labels;
};

/* Uniform in [0, n) without modulo bias: reject the top 2^64 mod n values. */
static uint64_t
rng_below(tg_rng *r, uint64_t n)
{
    uint64_t threshold = (0 - n) % n;
    for (;;) {
        uint64_t x = tg_rng_u64(r);
        if (x >= threshold)
            return x % n;
    }
}

tg_batcher *
tg_batcher_new(const tg_dataset *ds, size_t batch_size, tg_layout layout, bool drop_last,
               tg_rng *rng, const char **err)
{
    const char *why = NULL;
    if (!ds)
        why = "batcher: NULL data set";
    else if (!ds->count || !ds->data)
        why = "batcher: the data set is empty";
    else if (!batch_size)
        why = "batcher: batch_size must be >= 1";
    else if (layout != TG_EXAMPLES_AS_ROWS && layout != TG_EXAMPLES_AS_COLUMNS)
        why = "batcher: unknown layout";
    else if (drop_last && batch_size > ds->count)
        why = "batcher: drop_last with batch_size larger than the data set gives no batches";
    if (why) {
        if (err)
            *err = why;
        return NULL;
    }
    if (batch_size > ds->count)
        batch_size = ds->count;
    tg_batcher *b = tg__calloc(1, sizeof *b);
    size_t xbytes;
    bool ovf = __builtin_mul_overflow(batch_size, ds->features, &xbytes) ||
               __builtin_mul_overflow(xbytes, tg__dtype_bytes(ds->dtype), &xbytes);
    if (b && !ovf) {
        b->order = tg__calloc(ds->count, sizeof *b->order);
        b->x = tg__malloc(xbytes);
        if (ds->labels)
            b->labels = tg__calloc(batch_size, sizeof *b->labels);
    }
    if (!b || ovf || !b->order || !b->x || (ds->labels && !b->labels)) {
        tg_batcher_free(b);
        if (err)
            *err = "batcher: out of memory";
        return NULL;
    }
    b->ds = ds;
    b->batch_size = batch_size;
    b->layout = layout;
    b->drop_last = drop_last;
    b->rng = rng;
    b->count = ds->count;
    b->features = ds->features;
    b->esize = tg__dtype_bytes(ds->dtype);
    tg_batcher_reset(b);
    if (err)
        *err = NULL;
    return b;
}

void
tg_batcher_free(tg_batcher *b)
{
    if (!b)
        return;
    tg__free(b->order);
    tg__free(b->x);
    tg__free(b->labels);
    tg__free(b);
}

void
tg_batcher_reset(tg_batcher *b)
{
    if (!b)
        return;
    for (size_t i = 0; i < b->count; i++)
        b->order[i] = i;
    if (b->rng)
        for (size_t i = b->count - 1; i > 0; i--) { /* Fisher-Yates */
            size_t j = (size_t)rng_below(b->rng, (uint64_t)i + 1);
            size_t t = b->order[i];
            b->order[i] = b->order[j];
            b->order[j] = t;
        }
    b->pos = 0;
}

size_t
tg_batcher_num_batches(const tg_batcher *b)
{
    if (!b)
        return 0;
    return b->drop_last ? b->count / b->batch_size
                        : b->count / b->batch_size + (b->count % b->batch_size != 0);
}

bool
tg_batcher_next(tg_batcher *b, tg_batch *out)
{
    if (!b || !out)
        return false;
    size_t left = b->count - b->pos;
    if (!left || (b->drop_last && left < b->batch_size)) {
        memset(out, 0, sizeof *out);
        return false;
    }
    size_t n = left < b->batch_size ? left : b->batch_size;
    const size_t *idx = b->order + b->pos;
    const unsigned char *src = b->ds->data;
    size_t row = b->features * b->esize;
    if (b->layout == TG_EXAMPLES_AS_ROWS) {
        unsigned char *dst = b->x;
        for (size_t j = 0; j < n; j++)
            memcpy(dst + j * row, src + idx[j] * row, row);
    } else if (b->esize == sizeof(float)) {
        float *dst = b->x;
        const float *s = b->ds->data;
        for (size_t j = 0; j < n; j++)
            for (size_t f = 0; f < b->features; f++)
                dst[f * n + j] = s[idx[j] * b->features + f];
    } else {
        double *dst = b->x;
        const double *s = b->ds->data;
        for (size_t j = 0; j < n; j++)
            for (size_t f = 0; f < b->features; f++)
                dst[f * n + j] = s[idx[j] * b->features + f];
    }
    if (b->labels)
        for (size_t j = 0; j < n; j++)
            b->labels[j] = b->ds->labels[idx[j]];
    out->size = n;
    out->x = b->x;
    out->labels = b->labels;
    out->indices = idx;
    b->pos += n;
    return true;
}
