/*
 * Repeated steps on a tape, for the DOT exporter's folded picture (tg_dot_options.fold_loops).
 * Never installed.
 */
#ifndef TG_DOT_FOLD_H
#define TG_DOT_FOLD_H

#include <stddef.h>

#include "internal.h"

/* count consecutive steps of period nodes each, the first at tape node start: step k is nodes
 * [start + k·period, start + (k + 1)·period). */
struct tg__dot_run {
    size_t start, period, count;
};

/* Whether a and b have one dtype and one shape. */
bool tg__dot_same_shape(const tg_tensor *a, const tg_tensor *b);

/* The runs of at least min_repeats (>= 2) steps of at most max_period nodes, in tape order and
 * disjoint, written to runs (room for n_nodes / min_repeats of them, which is enough: each run
 * covers at least min_repeats nodes). Returns how many. */
size_t tg__dot_find_runs(const tg_tape *t, size_t min_repeats, size_t max_period,
                         struct tg__dot_run *runs);

#endif /* TG_DOT_FOLD_H */
