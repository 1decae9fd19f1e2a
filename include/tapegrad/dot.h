/**
 * @file
 * Graph export: a recorded tape as Graphviz DOT. Rendering it to SVG, PNG or PDF through
 * Graphviz's libraries is <tapegrad/render.h>, in a library of its own (libtapegrad-render,
 * pkg-config module tapegrad-render), so that only programs that render link Graphviz.
 *
 *     tg_dot_write_path(tape, NULL, "net.dot", NULL, 0);          // defaults, errors ignored
 *
 *     tg_dot_options o = {.values = true, .grads = true};          // zero fields are defaults
 *     char err[256];
 *     if (tg_dot_write_path(tape, &o, "net.dot", err, sizeof err) != TG_OK)
 *         fprintf(stderr, "%s\n", err);
 *
 * What the picture shows. One DOT node per tensor and one per op (tape node):
 *
 *     parameter  (tg_params)                              box, filled orange, bold border
 *     input      tape tensor that is named or requires a gradient       parallelogram, blue
 *     constant   unnamed tape tensor that needs no gradient              box, grey, dashed
 *     op         tape node: op name, "#<tape index>", "custom" for user ops          ellipse
 *     value      an op's output                                          small rounded box
 *     loss       the loss (see tg_dot_options.loss)                     double octagon, gold
 *
 * Edges run in data-flow order (tensor -> op -> output) and carry the shape that flows; an
 * op with several inputs numbers them ("0: (3x4)", "1: (4x5)") because order matters.
 * Tensors are discovered by walking the nodes' inputs, so inputs and parameters appear
 * exactly when some op reads them.
 *
 * Ids are ours and follow tape order: `"n<i>"` is tape node i (the `"#i"` of error messages and
 * the index of tg_dot_check.errors), `"t<k>"` the k-th tensor in order of first use, so the
 * same graph gives the same bytes. Every string from the user (tensor and op names, titles,
 * notes, the tape's error) is escaped: it shows literally, never injects DOT, and is capped
 * at TG_DOT_TEXT_MAX bytes (then "…"); invalid UTF-8 becomes U+FFFD and control bytes show
 * as `"\x1b"`. A tape with no nodes gives exactly `"digraph tapegrad {}\n"`. Time and memory are
 * linear in the size of the tape (plus the elements read for value summaries).
 */
#ifndef TAPEGRAD_DOT_H
#define TAPEGRAD_DOT_H

#include <stdio.h>

#include <tapegrad/tapegrad.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Bytes of one user string (a name, a title, a note) shown before it is cut with "…". */
#define TG_DOT_TEXT_MAX 200

/** The direction data flows in the picture (Graphviz's rankdir). */
typedef enum tg_dot_rankdir {
    TG_DOT_LEFT_RIGHT = 0, /**< data flows left to right (the default) */
    TG_DOT_TOP_BOTTOM,     /**< top to bottom */
    TG_DOT_BOTTOM_TOP,     /**< bottom to top */
    TG_DOT_RIGHT_LEFT,     /**< right to left */
} tg_dot_rankdir;

/** Per-node gradient-check results, indexed by tape node index (tg_node_index). Independent
 * of any particular checker: fill it from whatever produced the errors. */
typedef struct tg_dot_check {
    const double *errors; /**< errors[i]: check error of tape node i; NaN means "not checked" */
    size_t count;         /**< entries in errors; nodes at or beyond count are not checked */
    double tolerance;     /**< error <= tolerance passes (green); above, or not finite, fails:
                           * the node turns red and shows the error */
    const char *const *notes; /**< optional notes[i] shown on node i (e.g. "kink at x = 0");
                               * NULL, or entries that are NULL, for none */
    const bool *failed; /**< optional: a checker's own verdict for node i (its rule need not be
                         * "error <= tolerance"); decides red or green, tolerance unused. A
                         * node with failed[i] set is red even when errors[i] is NaN */
} tg_dot_check;

/** A display name for a tensor the API cannot name, such as an op's output ("Z1", "A1"). A
 * "scope/" prefix puts it in that scope's cluster like any other name. */
typedef struct tg_dot_name {
    const tg_tensor *tensor; /**< the tensor to name */
    const char *name;        /**< its display name */
} tg_dot_name;

/** What to draw. All fields zero (or a NULL options pointer) give the defaults. */
typedef struct tg_dot_options {
    const char *title;      /**< shown above the graph; NULL for none */
    tg_dot_rankdir rankdir; /**< direction of data flow */
    bool values;            /**< each tensor's min / max / mean (and NaN / Inf counts) */
    bool grads;             /**< each gradient's L2 norm, for tensors that have one (after
                             * tg_backward) */
    bool flat;              /**< no clusters: by default names "layer1/W" group everything of
                             * scope "layer1" (its parameters, the ops reading them and the
                             * ops that only continue them) in one box */
    const tg_tensor *loss;  /**< drawn as the loss; NULL: the output of the last node when it
                             * has one element */
    const tg_dot_check *check; /**< NULL: no check annotations */
    const tg_dot_name *names;  /**< n_names display names; a tensor's own name wins */
    size_t n_names;            /**< entries in names */
    bool fold_loops; /**< draw an unrolled loop's repeated steps once: each run of at least
                      * fold_min_repeats steps that record the same nodes (same ops and
                      * shapes, reading the same weights, each step reading the previous
                      * one's values the way the one before did) becomes one cluster labelled
                      * "× count", holding the first step; dashed edges show what the next step
                      * reads from it, and an op after the loop that reads every step's output
                      * gets one edge "a–b: shape". Failed checks inside the folded steps are
                      * counted in the cluster's label, which turns red. */
    size_t fold_min_repeats; /**< fewest repeats folded (0: 3; at least 2) */
} tg_dot_options;

/** Write the tape as DOT to out. A tape holding an error is still drawn (what was recorded
 * before the error) with the error as the title. Returns TG_OK, TG_ERR_ARG (NULL tape or
 * stream, bad options), TG_ERR_NOMEM or TG_ERR_IO (the stream failed); err (may be NULL)
 * receives the message, truncated to errsize bytes. */
TG_API tg_status tg_dot_write(const tg_tape *t, const tg_dot_options *opt, FILE *out, char *err,
                              size_t errsize);
/** The same into a file. A file that cannot be opened or written gives TG_ERR_IO naming the
 * path and strerror(errno); a partly written file is removed. */
TG_API tg_status tg_dot_write_path(const tg_tape *t, const tg_dot_options *opt,
                                   const char *path, char *err, size_t errsize);

#ifdef __cplusplus
}
#endif

#endif /* TAPEGRAD_DOT_H */
