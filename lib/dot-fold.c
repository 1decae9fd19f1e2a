/*
 * Finding the repeated steps of an unrolled loop on a tape (for tg_dot_options.fold_loops).
 *
 * A C loop that records one step per iteration leaves the same nodes again and again: step k
 * is nodes [s + k·p, s + (k + 1)·p) for some start s and period p. Node j of a step and node
 * j + p of the next are the same step when
 *   - they run the same op, with as many inputs, and outputs of the same shape and dtype;
 *   - and each pair of inputs (a of node j, b of node j + p) is
 *       the same tensor (a weight, or a value made before the loop and read by every step),
 *       or two op outputs made p nodes apart (the same value of consecutive steps, whether
 *         made in the step itself or in the step before: the recurrence),
 *       or two leaves of the same shape that are not parameters (per-step data: x_t, y_t),
 *       or, for the first step only in effect, a leaf and an output of the step before of
 *         the same shape (the initial state h0 against the state the first step made).
 * Nothing else is compared (not the names, not the op's attributes: a slice at offset t is
 * the same step as a slice at t + 1), so two steps that match have the same picture.
 *
 * The search is greedy in tape order: at node i it tries every period p up to max_period and
 * keeps the one covering the most nodes (the smallest on a tie); a run is taken when it has
 * at least min_repeats steps, and the search goes on after it, else at i + 1. A run that is
 * entered mid-step (after a step that differs) starts where the match starts, so its first
 * step may be the tail of one iteration and the head of the next: the picture is still
 * exact, only rotated. A step that
 * does not match from its first node fails at the first compare, so a tape with no loop
 * costs about n·max_period compares of one node; a period is not tried when it cannot beat
 * the run already found.
 */
#include "dot-fold.h"

bool
tg__dot_same_shape(const tg_tensor *a, const tg_tensor *b)
{
    if (a->dtype != b->dtype || a->ndim != b->ndim)
        return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->dims[i] != b->dims[i])
            return false;
    return true;
}

/* Input a of a node and input b of the node period later, which starts its step at
 * step_start: the same input of the same step? (the rules above) */
static bool
inputs_match(const tg_tensor *a, const tg_tensor *b, size_t period, size_t step_start)
{
    if (a == b)
        return true;
    if (!tg__dot_same_shape(a, b))
        return false;
    if (a->node && b->node)
        return b->node->index == a->node->index + period;
    if (!a->node && !b->node)
        return a->kind != TG__KIND_PARAM && b->kind != TG__KIND_PARAM;
    /* a leaf where the next step reads what the step before it made: an initial state */
    return !a->node && a->kind != TG__KIND_PARAM && b->node->index < step_start &&
           b->node->index + period >= step_start;
}

static bool
nodes_match(const tg_node *a, const tg_node *b, size_t period, size_t step_start)
{
    if (a->op != b->op || a->n_in != b->n_in || !tg__dot_same_shape(a->out, b->out))
        return false;
    for (int k = 0; k < a->n_in; k++)
        if (!inputs_match(a->in[k], b->in[k], period, step_start))
            return false;
    return true;
}

/* Whether the step of period nodes at step_start repeats the step before it. */
static bool
step_matches(const tg_tape *t, size_t step_start, size_t period)
{
    for (size_t q = 0; q < period; q++)
        if (!nodes_match(t->nodes[step_start - period + q], t->nodes[step_start + q], period,
                         step_start))
            return false;
    return true;
}

size_t
tg__dot_find_runs(const tg_tape *t, size_t min_repeats, size_t max_period,
                  struct tg__dot_run *runs)
{
    size_t n = t->n_nodes, n_runs = 0;
    if (min_repeats < 2)
        min_repeats = 2;
    for (size_t i = 0; i < n;) {
        struct tg__dot_run best = {i, 0, 0};
        for (size_t p = 1; p <= max_period && p * min_repeats <= n - i; p++) {
            if ((n - i) / p * p <= best.period * best.count)
                continue; /* cannot cover more than the run found */
            size_t count = 1;
            while ((count + 1) * p <= n - i && step_matches(t, i + count * p, p))
                count++;
            if (count >= min_repeats && count * p > best.period * best.count)
                best = (struct tg__dot_run){i, p, count};
        }
        if (best.count) {
            runs[n_runs++] = best;
            i = best.start + best.period * best.count;
        } else {
            i++;
        }
    }
    return n_runs;
}
