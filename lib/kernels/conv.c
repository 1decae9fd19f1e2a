/*
 * Convolution's data movement: im2col and its adjoint col2im, and the windows of pooling.
 * The arithmetic of a convolution is a matrix product (gemm.c); these loops only lay the
 * input out for it (lib/ops/conv.c has the math).
 *
 * Layout. x is (N, C, H, W), row-major. col is (C·kh·kw) x (N·oh·ow): row (c, i, j) holds, for
 * every sample and output position, the input under kernel tap (i, j) of channel c:
 *
 *   col[(c·kh + i)·kw + j][(n·oh + y)·ow + z] = x[n, c, y·sh − pt + i·dh, z·sw − pl + j·dw]
 *
 * or 0 where that position is in the padding. Rows follow the weight's (C, kh, kw) order, so
 * W (O x C·kh·kw) · col is the convolution of every sample at once, (O x N·oh·ow).
 *
 * Threads: im2col splits the rows, col2im the (sample, channel) planes of dx, pooling the
 * planes of y (or dx); each part writes only its own memory and sums in a fixed order, so the
 * results are bit-identical for any thread count.
 */
#include <math.h>
#include <string.h>

#include "kernels.h"

/* The first output index z whose tap lands inside [0, len): z·s − p + off >= 0, and the end
 * of that run: z·s − p + off < len. Empty when end <= begin. */
static void
valid_run(int64_t len, int64_t s, int64_t p, int64_t off, int64_t n_out, int64_t *begin,
          int64_t *end)
{
    int64_t lo = p - off; /* need z·s >= lo */
    int64_t b = lo <= 0 ? 0 : (lo + s - 1) / s;
    int64_t hi = len + p - off; /* need z·s < hi */
    int64_t e = hi <= 0 ? 0 : (hi + s - 1) / s;
    *begin = b < n_out ? b : n_out;
    *end = e < n_out ? e : n_out;
    if (*end < *begin)
        *end = *begin;
}

struct im2col_job {
    const struct tg__conv_geom *g;
    const void *x;
    void *col;
    bool f64;
};

#define IM2COL_ROWS(T)                                                                         \
    do {                                                                                       \
        const struct tg__conv_geom *g = job->g;                                                \
        const T *x = job->x;                                                                   \
        T *col = job->col;                                                                     \
        size_t plane = g->oh * g->ow, ld = g->n * plane;                                       \
        for (size_t r = begin; r < end; r++) {                                                 \
            size_t c = r / (g->kh * g->kw), i = r / g->kw % g->kh, j = r % g->kw;              \
            int64_t z0, z1;                                                                    \
            valid_run((int64_t)g->w, g->sw, g->pl, (int64_t)j * g->dw, (int64_t)g->ow, &z0,    \
                      &z1);                                                                    \
            for (size_t n = 0; n < g->n; n++) {                                                \
                const T *xp = x + (n * g->c + c) * g->h * g->w;                                \
                T *row = col + r * ld + n * plane;                                             \
                for (size_t y = 0; y < g->oh; y++, row += g->ow) {                             \
                    int64_t ih = (int64_t)y * g->sh - g->pt + (int64_t)i * g->dh;              \
                    if (ih < 0 || ih >= (int64_t)g->h || z0 == z1) {                           \
                        memset(row, 0, g->ow * sizeof(T));                                     \
                        continue;                                                              \
                    }                                                                          \
                    /* x index of output z: base + z·sw, inside the row for z in [z0, z1) */  \
                    int64_t base = ih * (int64_t)g->w + (int64_t)j * g->dw - g->pl;            \
                    for (int64_t z = 0; z < z0; z++)                                           \
                        row[z] = 0;                                                            \
                    if (g->sw == 1)                                                            \
                        memcpy(row + z0, xp + base + z0, (size_t)(z1 - z0) * sizeof(T));       \
                    else                                                                       \
                        for (int64_t z = z0; z < z1; z++)                                      \
                            row[z] = xp[base + z * g->sw];                                     \
                    for (int64_t z = z1; z < (int64_t)g->ow; z++)                              \
                        row[z] = 0;                                                            \
                }                                                                              \
            }                                                                                  \
        }                                                                                      \
    } while (0)

static void
im2col_part(size_t begin, size_t end, void *ctx)
{
    struct im2col_job *job = ctx;
    if (job->f64)
        IM2COL_ROWS(double);
    else
        IM2COL_ROWS(float);
}

/* Rows per chunk: about 64 K elements of col each, at least one row. */
static size_t
rows_grain(size_t row_len)
{
    size_t g = ((size_t)1 << 16) / (row_len ? row_len : 1);
    return g ? g : 1;
}

void
tg__im2col(const struct tg__conv_geom *g, const void *x, void *col, bool f64)
{
    struct im2col_job job = {g, x, col, f64};
    size_t rows = g->c * g->kh * g->kw;
    tg__parallel_for(rows, rows_grain(g->n * g->oh * g->ow), im2col_part, &job);
}

#define COL2IM_PLANES(T)                                                                       \
    do {                                                                                       \
        const struct tg__conv_geom *g = job->g;                                                \
        const T *col = job->x;                                                                 \
        T *dx = job->col;                                                                      \
        size_t plane = g->oh * g->ow, ld = g->n * plane;                                       \
        for (size_t nc = begin; nc < end; nc++) {                                              \
            size_t n = nc / g->c, c = nc % g->c;                                               \
            T *dxp = dx + nc * g->h * g->w;                                                    \
            for (size_t i = 0; i < g->kh; i++)                                                 \
                for (size_t j = 0; j < g->kw; j++) {                                           \
                    size_t r = (c * g->kh + i) * g->kw + j;                                    \
                    const T *row = col + r * ld + n * plane;                                   \
                    int64_t z0, z1;                                                            \
                    valid_run((int64_t)g->w, g->sw, g->pl, (int64_t)j * g->dw, (int64_t)g->ow, \
                              &z0, &z1);                                                       \
                    for (size_t y = 0; y < g->oh; y++, row += g->ow) {                         \
                        int64_t ih = (int64_t)y * g->sh - g->pt + (int64_t)i * g->dh;          \
                        if (ih < 0 || ih >= (int64_t)g->h)                                     \
                            continue;                                                          \
                        int64_t base = ih * (int64_t)g->w + (int64_t)j * g->dw - g->pl;        \
                        for (int64_t z = z0; z < z1; z++)                                      \
                            dxp[base + z * g->sw] += row[z];                                   \
                    }                                                                          \
                }                                                                              \
        }                                                                                      \
    } while (0)

static void
col2im_part(size_t begin, size_t end, void *ctx)
{
    struct im2col_job *job = ctx;
    if (job->f64)
        COL2IM_PLANES(double);
    else
        COL2IM_PLANES(float);
}

void
tg__col2im_add(const struct tg__conv_geom *g, const void *col, void *dx, bool f64)
{
    struct im2col_job job = {g, col, dx, f64};
    size_t per_plane = g->kh * g->kw * g->oh * g->ow;
    tg__parallel_for(g->n * g->c, rows_grain(per_plane), col2im_part, &job);
}

/* ---- (n, c, plane) <-> rows ------------------------------------------------------------------ */

#define PLANES_TO_ROWS(T)                                                                      \
    do {                                                                                       \
        const T *src = planes;                                                                 \
        T *dst = rows;                                                                         \
        for (size_t k = 0; k < n; k++)                                                         \
            for (size_t r = 0; r < c; r++)                                                     \
                memcpy(dst + r * ld + k * plane, src + (k * c + r) * plane, plane * sizeof(T)); \
    } while (0)

void
tg__planes_to_rows(size_t n, size_t c, size_t plane, size_t ld, const void *planes, void *rows,
                   bool f64)
{
    if (f64)
        PLANES_TO_ROWS(double);
    else
        PLANES_TO_ROWS(float);
}

#define ROWS_TO_PLANES(T)                                                                      \
    do {                                                                                       \
        const T *src = rows, *b = bias;                                                        \
        T *dst = planes;                                                                       \
        for (size_t k = 0; k < n; k++)                                                         \
            for (size_t r = 0; r < c; r++) {                                                   \
                const T *s = src + r * ld + k * plane;                                         \
                T *d = dst + (k * c + r) * plane;                                              \
                if (add)                                                                       \
                    for (size_t q = 0; q < plane; q++)                                         \
                        d[q] += s[q];                                                          \
                else {                                                                         \
                    T v = b ? b[r] : 0;                                                        \
                    for (size_t q = 0; q < plane; q++)                                         \
                        d[q] = s[q] + v;                                                       \
                }                                                                              \
            }                                                                                  \
    } while (0)

void
tg__rows_to_planes(size_t n, size_t c, size_t plane, size_t ld, const void *rows,
                   const void *bias, bool add, void *planes, bool f64)
{
    if (f64)
        ROWS_TO_PLANES(double);
    else
        ROWS_TO_PLANES(float);
}

/* ---- pooling ------------------------------------------------------------------------------ */

struct pool_job {
    const struct tg__conv_geom *g;
    const void *x;
    void *y;
    int64_t *arg; /* max: the flat index (within its plane of x) of each output's maximum */
    bool f64, max;
};

/* Max: the first maximum in the window's row-major scan wins (a NaN wins over any number, as
 * in PyTorch); padding is never chosen (it is -inf, and every window holds an input since
 * padding <= kernel / 2). Average: the window's sum over kh·kw, padding counting as zeros
 * (PyTorch's count_include_pad=True). */
#define POOL_PLANES(T)                                                                         \
    do {                                                                                       \
        const struct tg__conv_geom *g = job->g;                                                \
        for (size_t nc = begin; nc < end; nc++) {                                              \
            const T *xp = (const T *)job->x + nc * g->h * g->w;                                \
            T *yp = (T *)job->y + nc * g->oh * g->ow;                                          \
            int64_t *ap = job->arg ? job->arg + nc * g->oh * g->ow : NULL;                     \
            for (size_t y = 0; y < g->oh; y++)                                                 \
                for (size_t z = 0; z < g->ow; z++) {                                           \
                    int64_t h0 = (int64_t)y * g->sh - g->pt, w0 = (int64_t)z * g->sw - g->pl;  \
                    T best = -(T)INFINITY, sum = 0;                                            \
                    int64_t at = -1;                                                           \
                    for (size_t i = 0; i < g->kh; i++) {                                       \
                        int64_t ih = h0 + (int64_t)i * g->dh;                                  \
                        if (ih < 0 || ih >= (int64_t)g->h)                                     \
                            continue;                                                          \
                        for (size_t j = 0; j < g->kw; j++) {                                   \
                            int64_t iw = w0 + (int64_t)j * g->dw;                              \
                            if (iw < 0 || iw >= (int64_t)g->w)                                 \
                                continue;                                                      \
                            T v = xp[ih * (int64_t)g->w + iw];                                 \
                            if (job->max) {                                                    \
                                if (at < 0 || v > best || (isnan(v) && !isnan(best))) {        \
                                    best = v;                                                  \
                                    at = ih * (int64_t)g->w + iw;                              \
                                }                                                              \
                            } else {                                                           \
                                sum += v;                                                      \
                            }                                                                  \
                        }                                                                      \
                    }                                                                          \
                    size_t o = y * g->ow + z;                                                  \
                    if (job->max) {                                                            \
                        yp[o] = best;                                                          \
                        if (ap)                                                                \
                            ap[o] = at;                                                        \
                    } else {                                                                   \
                        yp[o] = sum / (T)(g->kh * g->kw);                                      \
                    }                                                                          \
                }                                                                              \
        }                                                                                      \
    } while (0)

/* Without padding every window lies inside its plane (floor mode), so the taps need no
 * bounds checks: the common case (2x2 stride 2 after a convolution), about 5x faster. The same
 * scan order and tie rule as POOL_PLANES. */
#define POOL_PLANES_INSIDE(T)                                                                  \
    do {                                                                                       \
        const struct tg__conv_geom *g = job->g;                                                \
        size_t w = g->w;                                                                       \
        for (size_t nc = begin; nc < end; nc++) {                                              \
            const T *xp = (const T *)job->x + nc * g->h * w;                                   \
            T *yp = (T *)job->y + nc * g->oh * g->ow;                                          \
            int64_t *ap = job->arg ? job->arg + nc * g->oh * g->ow : NULL;                     \
            for (size_t y = 0; y < g->oh; y++)                                                 \
                for (size_t z = 0; z < g->ow; z++) {                                           \
                    size_t base = y * (size_t)g->sh * w + z * (size_t)g->sw, at = base;        \
                    T best = xp[base], sum = 0;                                                \
                    for (size_t i = 0; i < g->kh; i++)                                         \
                        for (size_t j = 0; j < g->kw; j++) {                                   \
                            size_t k = base + i * w + j;                                       \
                            T v = xp[k];                                                       \
                            if (job->max) { /* branch-free: ties and zeros abound */   \
                                bool take = (v > best) | ((v != v) & (best == best));          \
                                best = take ? v : best;                                        \
                                at = take ? k : at;                                            \
                            } else {                                                           \
                                sum += v;                                                      \
                            }                                                                  \
                        }                                                                      \
                    size_t o = y * g->ow + z;                                                  \
                    if (job->max) {                                                            \
                        yp[o] = best;                                                          \
                        if (ap)                                                                \
                            ap[o] = (int64_t)at;                                               \
                    } else {                                                                   \
                        yp[o] = sum / (T)(g->kh * g->kw);                                      \
                    }                                                                          \
                }                                                                              \
        }                                                                                      \
    } while (0)

static void
pool_part(size_t begin, size_t end, void *ctx)
{
    struct pool_job *job = ctx;
    bool inside = job->g->pt == 0 && job->g->pl == 0 && job->g->dh == 1 && job->g->dw == 1;
    if (job->f64 && inside)
        POOL_PLANES_INSIDE(double);
    else if (inside)
        POOL_PLANES_INSIDE(float);
    else if (job->f64)
        POOL_PLANES(double);
    else
        POOL_PLANES(float);
}

void
tg__pool2d(const struct tg__conv_geom *g, const void *x, void *y, int64_t *argmax, bool max,
           bool f64)
{
    struct pool_job job = {g, x, y, argmax, f64, max};
    tg__parallel_for(g->n * g->c, rows_grain(g->oh * g->ow * g->kh * g->kw), pool_part, &job);
}

/* VJPs, plane by plane (each plane of dx is written by one part):
 *   max:  dx[argmax(o)] += dy[o]
 *   avg:  dx[p] += Σ over the windows o that hold p of dy[o] / (kh·kw) */
#define POOL_VJP_PLANES(T)                                                                     \
    do {                                                                                       \
        const struct tg__conv_geom *g = job->g;                                                \
        for (size_t nc = begin; nc < end; nc++) {                                              \
            const T *dy = (const T *)job->x + nc * g->oh * g->ow;                              \
            T *dx = (T *)job->y + nc * g->h * g->w;                                            \
            if (job->max) {                                                                    \
                const int64_t *ap = job->arg + nc * g->oh * g->ow;                             \
                for (size_t o = 0; o < g->oh * g->ow; o++)                                     \
                    if (ap[o] >= 0)                                                            \
                        dx[ap[o]] += dy[o];                                                    \
                continue;                                                                      \
            }                                                                                  \
            T inv = (T)1 / (T)(g->kh * g->kw);                                                 \
            for (size_t y = 0; y < g->oh; y++)                                                 \
                for (size_t z = 0; z < g->ow; z++) {                                           \
                    T d = dy[y * g->ow + z] * inv;                                             \
                    int64_t h0 = (int64_t)y * g->sh - g->pt, w0 = (int64_t)z * g->sw - g->pl;  \
                    for (size_t i = 0; i < g->kh; i++) {                                       \
                        int64_t ih = h0 + (int64_t)i * g->dh;                                  \
                        if (ih < 0 || ih >= (int64_t)g->h)                                     \
                            continue;                                                          \
                        for (size_t j = 0; j < g->kw; j++) {                                   \
                            int64_t iw = w0 + (int64_t)j * g->dw;                              \
                            if (iw >= 0 && iw < (int64_t)g->w)                                 \
                                dx[ih * (int64_t)g->w + iw] += d;                              \
                        }                                                                      \
                    }                                                                          \
                }                                                                              \
        }                                                                                      \
    } while (0)

static void
pool_vjp_part(size_t begin, size_t end, void *ctx)
{
    struct pool_job *job = ctx;
    if (job->f64)
        POOL_VJP_PLANES(double);
    else
        POOL_VJP_PLANES(float);
}

void
tg__pool2d_vjp(const struct tg__conv_geom *g, const void *dy, void *dx, const int64_t *argmax,
               bool max, bool f64)
{
    struct pool_job job = {g, dy, dx, (int64_t *)argmax, f64, max};
    tg__parallel_for(g->n * g->c, rows_grain(g->oh * g->ow * g->kh * g->kw), pool_vjp_part,
                     &job);
}
