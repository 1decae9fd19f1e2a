/*
 * The benchmarks' clock and median, one copy for every tool: monotonic seconds, and the
 * median of n timings (sorted in place; the mean of the middle two when n is even).
 */
#ifndef TG_TOOLS_BENCH_CLOCK_H
#define TG_TOOLS_BENCH_CLOCK_H

#include <stdlib.h>
#include <time.h>

static inline double
now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static inline int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static inline double
median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

#endif
