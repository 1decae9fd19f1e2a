/*
 * The benchmarks' clock, median and list flags, one copy for every tool: monotonic seconds,
 * the median of n timings (sorted in place; the mean of the middle two when n is even), and
 * whether a name is in a comma-separated list such as --nets B-small,B-seed.
 */
#ifndef TG_TOOLS_BENCH_CLOCK_H
#define TG_TOOLS_BENCH_CLOCK_H

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
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

/* name is one of the comma-separated entries of list (NULL: every name is) */
static inline bool
listed(const char *list, const char *name)
{
    if (!list)
        return true;
    size_t n = strlen(name);
    for (const char *p = list; (p = strstr(p, name)) != NULL; p += n)
        if ((p == list || p[-1] == ',') && (p[n] == ',' || p[n] == '\0'))
            return true;
    return false;
}

#endif
