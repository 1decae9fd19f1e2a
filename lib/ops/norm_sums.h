/*
 * Row sums shared by the normalization families (norm.c, layer_norm.c): Σ row[i], Σ (row[i] −
 * c)² and Σ dy, Σ dy (x − c) over n contiguous values, in double, in 8 lanes that the compiler
 * vectorizes. The lanes are added in a fixed tree, so for a given n the bits never depend on
 * how rows are split across threads.
 */
#ifndef TG_OPS_NORM_SUMS_H
#define TG_OPS_NORM_SUMS_H

#include <stddef.h>

#define NORM_LANES_TOTAL(l)                                                                    \
    ((((l)[0] + (l)[1]) + ((l)[2] + (l)[3])) + (((l)[4] + (l)[5]) + ((l)[6] + (l)[7])))

#define NORM_ROW_SUMS(T, SFX)                                                                  \
    static inline double norm_sum_##SFX(const T *row, size_t n)                                \
    {                                                                                          \
        double l[8] = {0};                                                                     \
        size_t i = 0;                                                                          \
        for (; i + 8 <= n; i += 8)                                                             \
            for (int k = 0; k < 8; k++)                                                        \
                l[k] += row[i + k];                                                            \
        for (; i < n; i++)                                                                     \
            l[i % 8] += row[i];                                                                \
        return NORM_LANES_TOTAL(l);                                                            \
    }                                                                                          \
    static inline double norm_sqdev_##SFX(const T *row, size_t n, double c)                    \
    {                                                                                          \
        double l[8] = {0};                                                                     \
        size_t i = 0;                                                                          \
        for (; i + 8 <= n; i += 8)                                                             \
            for (int k = 0; k < 8; k++) {                                                      \
                double d = row[i + k] - c;                                                     \
                l[k] += d * d;                                                                 \
            }                                                                                  \
        for (; i < n; i++) {                                                                   \
            double d = row[i] - c;                                                             \
            l[i % 8] += d * d;                                                                 \
        }                                                                                      \
        return NORM_LANES_TOTAL(l);                                                            \
    }                                                                                          \
    /* Σ dy and Σ dy (x − c), added into *g and *h */                                          \
    static inline void norm_dsums_##SFX(const T *dy, const T *x, size_t n, double c,           \
                                        double *g, double *h)                                  \
    {                                                                                          \
        double lg[8] = {0}, lh[8] = {0};                                                       \
        size_t i = 0;                                                                          \
        for (; i + 8 <= n; i += 8)                                                             \
            for (int k = 0; k < 8; k++) {                                                      \
                lg[k] += dy[i + k];                                                            \
                lh[k] += (double)dy[i + k] * (x[i + k] - c);                                   \
            }                                                                                  \
        for (; i < n; i++) {                                                                   \
            lg[i % 8] += dy[i];                                                                \
            lh[i % 8] += (double)dy[i] * (x[i] - c);                                           \
        }                                                                                      \
        *g += NORM_LANES_TOTAL(lg);                                                            \
        *h += NORM_LANES_TOTAL(lh);                                                            \
    }
NORM_ROW_SUMS(float, f32)
NORM_ROW_SUMS(double, f64)
#define NORM_SUM(row, n)                                                                       \
    _Generic((row), const float *: norm_sum_f32, const double *: norm_sum_f64)(row, n)
#define NORM_SQDEV(row, n, c)                                                                  \
    _Generic((row), const float *: norm_sqdev_f32, const double *: norm_sqdev_f64)(row, n, c)
#define NORM_DSUMS(dy, x, n, c, g, h)                                                          \
    _Generic((dy), const float *: norm_dsums_f32, const double *: norm_dsums_f64)(dy, x, n, c, \
                                                                                  g, h)

#endif /* TG_OPS_NORM_SUMS_H */
