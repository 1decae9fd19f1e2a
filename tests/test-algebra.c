/*
 * The tensor-algebra ops (tapegrad.h, "Tensor algebra"), against PyTorch's semantics:
 *   - bad input: a sticky error that names the op, the tensor, its shape and the offending
 *     value, with no node recorded, the inputs untouched and every later call a no-op;
 *   - the values PyTorch gives instead of an error (NaN, -inf, clamp with lo > hi, the
 *     gradient at kinks and ties);
 *   - semantics: views, stop-gradient, scatter-add, joins of 1 to 10 inputs, slices with a
 *     step, padding, broadcasting gradients, keepdims, negative axes, bmm against tg_matmul_t,
 *     stability at |x| = 1000, cross_entropy against tg_softmax_xent, values by hand;
 *   - a warm step through the new ops allocates nothing.
 */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

static tg_tape *tape;

/* ---- tensors, watched for "the failing call wrote nothing" ---- */
#define MAX_WATCH 32
#define MAX_WATCH_SIZE 256
static struct {
    tg_tensor *x;
    size_t n;
    double v[MAX_WATCH_SIZE];
} watch[MAX_WATCH];
static int n_watch;

static void setup(void) { tape = tg_tape_new(); n_watch = 0; }
static void teardown(void) { tg_tape_free(tape); }
/* A fresh step on the same tape (the watched tensors are gone with it). */
static void reset(void) { tg_tape_reset(tape); n_watch = 0; }

/* D(2, 3) is the (ndim, dims) pair of a (2x3) shape; V(...) a list of values. */
#define D(...) (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (int64_t[]){__VA_ARGS__}
#define V(...) ((const double[]){__VA_ARGS__})
#define F64 TG_F64
#define F32 TG_F32
#define DT(i) ((i) ? TG_F32 : TG_F64) /* loop tests: 0 is float64, 1 float32 */
#define PI 3.14159265358979323846
#define LN2 0.69314718055994530942

/* A tensor with the given values (NULL: 0.5, 1.5, 2.5, … so that every element differs). */
static tg_tensor *
mk(tg_dtype dt, int ndim, const int64_t *dims, const double *v, const char *name)
{
    tg_tensor *x = tg_tensor_new(tape, dt, ndim, dims, name);
    size_t n = tg_tensor_size(x);
    ck_assert_msg(tg_tape_status(tape) == TG_OK, "making %s: %s", name ? name : "a tensor",
                  tg_tape_error(tape));
    double *tmp = malloc((n ? n : 1) * sizeof *tmp);
    for (size_t i = 0; i < n; i++)
        tmp[i] = v ? v[i] : (double)i + 0.5;
    ck_assert_int_eq(tg_tensor_write(x, tmp, n), TG_OK);
    free(tmp);
    if (n_watch < MAX_WATCH && n <= MAX_WATCH_SIZE) {
        watch[n_watch].x = x;
        watch[n_watch].n = n;
        ck_assert_int_eq(tg_tensor_read(x, watch[n_watch].v, n), TG_OK);
        n_watch++;
    }
    return x;
}

/* Same, asking for its gradient. */
static tg_tensor *
mkg(tg_dtype dt, int ndim, const int64_t *dims, const double *v, const char *name)
{
    tg_tensor *x = mk(dt, ndim, dims, v, name);
    tg_tensor_set_requires_grad(x, true);
    return x;
}

/* ---- message checks, loose about wording ----
 * A wanted token is a plain substring, "~text" (case-insensitive: "~nan"), or "#number": the
 * number as a whole token ("#3" matches "axis 3," and "[3]" but not "13", "3.5" or "-3").
 * "a|b" accepts either. */
static bool
is_digit(char c) { return c >= '0' && c <= '9'; }

static const char *
find_ci(const char *hay, const char *needle, size_t len)
{
    for (; *hay; hay++) {
        size_t k = 0;
        while (k < len && hay[k]) {
            char a = hay[k], b = needle[k];
            if (a >= 'A' && a <= 'Z')
                a = (char)(a - 'A' + 'a');
            if (b >= 'A' && b <= 'Z')
                b = (char)(b - 'A' + 'a');
            if (a != b)
                break;
            k++;
        }
        if (k == len)
            return hay;
    }
    return NULL;
}

static bool
has_number(const char *msg, const char *num, size_t len)
{
    for (const char *p = msg; *p; p++) {
        if (strncmp(p, num, len) != 0)
            continue;
        char before = p == msg ? ' ' : p[-1];
        char after = p[len];
        if (is_digit(before) || before == '.' || (num[0] != '-' && before == '-'))
            continue;
        if (is_digit(after) || (after == '.' && is_digit(p[len + 1])))
            continue;
        return true;
    }
    return false;
}

static bool
has_token(const char *msg, const char *tok, size_t len)
{
    char buf[128];
    if (len >= sizeof buf)
        len = sizeof buf - 1;
    memcpy(buf, tok, len);
    buf[len] = 0;
    if (buf[0] == '#')
        return has_number(msg, buf + 1, len - 1);
    if (buf[0] == '~')
        return find_ci(msg, buf + 1, len - 1) != NULL;
    return strstr(msg, buf) != NULL;
}

static bool
matches(const char *msg, const char *want)
{
    for (const char *alt = want;;) {
        const char *bar = strchr(alt, '|');
        size_t len = bar ? (size_t)(bar - alt) : strlen(alt);
        if (has_token(msg, alt, len))
            return true;
        if (!bar)
            return false;
        alt = bar + 1;
    }
}

/* The call that just failed: a shape or argument error whose message holds every wanted
 * token; it returned the nil tensor, recorded no node, left every watched tensor as it was,
 * and the tape stays failed (a valid op afterwards is a no-op with the message unchanged). */
static void
check_rejected(tg_tensor *y, size_t nodes, const char *call, const char *const *want)
{
    tg_status s = tg_tape_status(tape);
    const char *msg = tg_tape_error(tape);
    ck_assert_msg(s == TG_ERR_ARG || s == TG_ERR_SHAPE,
                  "%s: status %d (%s), expected an argument or shape error; message: %s", call,
                  (int)s, tg_status_string(s), msg ? msg : "(none)");
    ck_assert_ptr_nonnull(msg);
    for (int k = 0; want[k]; k++)
        ck_assert_msg(matches(msg, want[k]), "%s: message \"%s\" lacks \"%s\"", call, msg,
                      want[k]);
    ck_assert_msg(tg_tensor_data(y) == NULL, "%s: returned a tensor with data, not nil", call);
    ck_assert_msg(tg_tape_node_count(tape) == nodes, "%s: %zu nodes after, %zu before", call,
                  tg_tape_node_count(tape), nodes);
    ck_assert_msg(tg_tape_node(tape, nodes) == NULL, "%s: a node was recorded", call);
    for (int w = 0; w < n_watch; w++) {
        double now[MAX_WATCH_SIZE];
        ck_assert_int_eq(tg_tensor_read(watch[w].x, now, watch[w].n), TG_OK);
        ck_assert_msg(memcmp(now, watch[w].v, watch[w].n * sizeof(double)) == 0,
                      "%s: input %d was written", call, w);
    }
    /* sticky: the next valid ops are no-ops */
    char first[1024];
    snprintf(first, sizeof first, "%s", msg);
    if (n_watch > 0) {
        tg_tensor *x0 = watch[0].x;
        ck_assert_ptr_null(tg_tensor_data(tg_neg(tape, x0)));
        ck_assert_ptr_null(tg_tensor_data(tg_sum_axes(tape, x0, NULL, 0, false)));
        ck_assert_ptr_null(tg_tensor_data(tg_reshape(tape, x0, 1, (int64_t[]){-1})));
    }
    ck_assert_ptr_null(tg_tensor_data(tg_tensor_new(tape, TG_F64, 1, (int64_t[]){2}, NULL)));
    ck_assert_str_eq(tg_tape_error(tape), first);
    ck_assert_int_eq(tg_tape_status(tape), s);
    ck_assert_uint_eq(tg_tape_node_count(tape), nodes);
}

#define EXPECT_BAD(call, ...)                                                                  \
    do {                                                                                       \
        ck_assert_msg(tg_tape_status(tape) == TG_OK, "the tape failed before %s: %s", #call,  \
                      tg_tape_error(tape));                                                    \
        size_t nodes_ = tg_tape_node_count(tape);                                              \
        tg_tensor *y_ = (call);                                                                \
        check_rejected(y_, nodes_, #call, (const char *const[]){__VA_ARGS__, NULL});           \
    } while (0)

/* ---- value checks ---- */
static void
no_error(void)
{
    ck_assert_msg(tg_tape_status(tape) == TG_OK, "tape error: %s", tg_tape_error(tape));
}

static bool
close_to(double got, double want, double tol)
{
    if (isnan(want))
        return isnan(got);
    if (isinf(want))
        return got == want;
    return fabs(got - want) <= tol * fmax(1.0, fabs(want));
}

/* Elements of y (values, or the gradient) against want, relative tolerance tol (absolute
 * below 1); NaN must be NaN, ±inf exactly ±inf. */
static void
expect_vals_(tg_tensor *y, bool grad, const double *want, size_t n, double tol, int line)
{
    no_error();
    ck_assert_msg(tg_tensor_size(y) == n, "line %d: %zu elements, expected %zu", line,
                  tg_tensor_size(y), n);
    for (size_t i = 0; i < n; i++) {
        double got = grad ? tg_tensor_grad_get(y, i) : tg_tensor_get(y, i);
        ck_assert_msg(close_to(got, want[i], tol), "line %d: %s[%zu] = %.17g, expected %.17g",
                      line, grad ? "grad" : "value", i, got, want[i]);
    }
}
#define EXPECT_VALS(y, want, n, tol) expect_vals_((y), false, (want), (n), (tol), __LINE__)
#define EXPECT_GRAD(x, want, n, tol) expect_vals_((x), true, (want), (n), (tol), __LINE__)

static void
expect_shape_(tg_tensor *y, int ndim, const int64_t *dims, int line)
{
    no_error();
    char got[64];
    tg_tensor_shape_string(y, got, sizeof got);
    bool ok = tg_tensor_ndim(y) == ndim;
    for (int i = 0; ok && i < ndim; i++)
        ok = tg_tensor_dim(y, i) == dims[i];
    ck_assert_msg(ok, "line %d: shape %s, rank %d", line, got, tg_tensor_ndim(y));
}
#define EXPECT_SHAPE(y, ...) expect_shape_((y), D(__VA_ARGS__), __LINE__)

/* Backward from Σ y ⊙ R with R[i] = i + 1, so each output position has its own weight. */
static void
backward_weighted(tg_tensor *y)
{
    no_error();
    int64_t dims[TG_MAX_DIMS];
    for (int i = 0; i < tg_tensor_ndim(y); i++)
        dims[i] = tg_tensor_dim(y, i);
    tg_tensor *r = tg_tensor_new(tape, tg_tensor_dtype(y), tg_tensor_ndim(y), dims, "R");
    for (size_t i = 0; i < tg_tensor_size(y); i++)
        ((tg_tensor_dtype(y) == TG_F64) ? (void)(((double *)tg_tensor_data(r))[i] = (double)i + 1)
                                        : (void)(((float *)tg_tensor_data(r))[i] = (float)i + 1));
    ck_assert_int_eq(tg_backward(tape, tg_sum(tape, tg_mul(tape, y, r))), TG_OK);
}

static void
backward_sum(tg_tensor *y)
{
    no_error();
    tg_status s = tg_backward(tape, tg_sum(tape, y));
    ck_assert_msg(s == TG_OK, "backward: %s", tg_tape_error(tape));
}

/* ======================================================================================
 * 1. Bad input.
 */

typedef tg_tensor *(*reduce_fn)(tg_tape *, tg_tensor *, const int *, int, bool);
static tg_tensor *
var_unbiased(tg_tape *t, tg_tensor *x, const int *axes, int n, bool keepdims)
{
    return tg_var(t, x, axes, n, 1, keepdims);
}
static const struct {
    const char *name;
    reduce_fn fn;
} reductions[] = {
    {"sum", tg_sum_axes},   {"mean", tg_mean_axes},       {"max", tg_max_axes},
    {"min", tg_min_axes},   {"logsumexp", tg_logsumexp}, {"var", var_unbiased},
};
#define N_REDUCTIONS ((int)(sizeof reductions / sizeof reductions[0]))

/* x (4x5x6): no dimension is 1, 2 or 3, so "#3" can only be the axis. */
START_TEST(reduce_bad_axes)
{
    const char *op = reductions[_i].name;
    reduce_fn fn = reductions[_i].fn;
    for (int keep = 0; keep < 2; keep++) {
        reset();
        tg_tensor *x = mk(F64, D(4, 5, 6), NULL, "X");
        EXPECT_BAD(fn(tape, x, (int[]){3}, 1, keep), op, "\"X\"", "(4x5x6)", "#3");
        reset();
        x = mk(F64, D(4, 5, 6), NULL, "X");
        EXPECT_BAD(fn(tape, x, (int[]){0, -4}, 2, keep), op, "\"X\"", "(4x5x6)", "#-4");
        reset();
        x = mk(F32, D(4, 5, 6), NULL, "X");
        EXPECT_BAD(fn(tape, x, (int[]){1, 1}, 2, keep), op, "\"X\"", "(4x5x6)", "#1");
        reset();
        /* -1 is axis 2: given twice */
        x = mk(F64, D(4, 5, 6), NULL, "X");
        EXPECT_BAD(fn(tape, x, (int[]){2, 0, -1}, 3, keep), op, "\"X\"", "(4x5x6)", "#2|#-1");
        reset();
        x = mk(F64, D(4, 5, 6), NULL, "X");
        EXPECT_BAD(fn(tape, x, (int[]){-7}, 1, keep), op, "(4x5x6)", "#-7");
    }
}
END_TEST

START_TEST(softmax_bad_axis)
{
    tg_tensor *x = mk(F64, D(4, 5, 6), NULL, "S");
    EXPECT_BAD(tg_softmax(tape, x, 3), "softmax", "\"S\"", "(4x5x6)", "#3");
    reset();
    x = mk(F32, D(4, 5, 6), NULL, "S");
    EXPECT_BAD(tg_softmax(tape, x, -4), "softmax", "\"S\"", "(4x5x6)", "#-4");
    reset();
    x = mk(F64, D(4, 5, 6), NULL, "S");
    EXPECT_BAD(tg_log_softmax(tape, x, 3), "log_softmax", "\"S\"", "(4x5x6)", "#3");
    reset();
    x = mk(F64, D(4, 5, 6), NULL, "S");
    EXPECT_BAD(tg_log_softmax(tape, x, -4), "log_softmax", "\"S\"", "(4x5x6)", "#-4");
}
END_TEST

START_TEST(concat_stack_bad_axis)
{
    tg_tensor *a = mk(F64, D(4, 5, 6), NULL, "A"), *b = mk(F64, D(4, 5, 6), NULL, "B");
    EXPECT_BAD(tg_concat(tape, (tg_tensor *[]){a, b}, 2, 3), "concat", "(4x5x6)", "#3");
    reset();
    a = mk(F64, D(4, 5, 6), NULL, "A"), b = mk(F64, D(4, 5, 6), NULL, "B");
    EXPECT_BAD(tg_concat(tape, (tg_tensor *[]){a, b}, 2, -4), "concat", "(4x5x6)", "#-4");
    /* stack adds an axis: [-4, 3] is valid for rank 3 */
    reset();
    a = mk(F64, D(5, 6, 7), NULL, "A"), b = mk(F64, D(5, 6, 7), NULL, "B");
    EXPECT_BAD(tg_stack(tape, (tg_tensor *[]){a, b}, 2, 4), "stack", "(5x6x7)", "#4");
    reset();
    a = mk(F64, D(5, 6, 7), NULL, "A"), b = mk(F64, D(5, 6, 7), NULL, "B");
    EXPECT_BAD(tg_stack(tape, (tg_tensor *[]){a, b}, 2, -5), "stack", "(5x6x7)", "#-5");
    /* stacking rank-4 tensors would make rank 5 */
    reset();
    a = mk(F64, D(1, 2, 3, 4), NULL, "A"), b = mk(F64, D(1, 2, 3, 4), NULL, "B");
    EXPECT_BAD(tg_stack(tape, (tg_tensor *[]){a, b}, 2, 0), "stack", "(1x2x3x4)");
}
END_TEST

START_TEST(index_bad_axis)
{
    tg_tensor *x = mk(F64, D(4, 5, 6), NULL, "X");
    EXPECT_BAD(tg_index_select(tape, x, 3, (int64_t[]){0}, 1), "index_select", "\"X\"",
               "(4x5x6)", "#3");
    reset();
    x = mk(F64, D(4, 5, 6), NULL, "X");
    EXPECT_BAD(tg_index_select(tape, x, -4, (int64_t[]){0}, 1), "index_select", "\"X\"",
               "(4x5x6)", "#-4");
    reset();
    x = mk(F64, D(4, 5, 6), NULL, "X");
    EXPECT_BAD(tg_gather(tape, x, 3, (int64_t[]){0}, D(1, 1, 1)), "gather", "\"X\"", "(4x5x6)",
               "#3");
    reset();
    x = mk(F64, D(4, 5, 6), NULL, "X");
    EXPECT_BAD(tg_gather(tape, x, -4, (int64_t[]){0}, D(1, 1, 1)), "gather", "\"X\"", "(4x5x6)",
               "#-4");
}
END_TEST

START_TEST(reshape_bad_counts)
{
    tg_tensor *x = mk(F64, D(2, 3), NULL, "X");
    EXPECT_BAD(tg_reshape(tape, x, D(4, 2)), "reshape", "\"X\"", "(2x3)", "(4x2)|#8");
    reset();
    x = mk(F32, D(2, 3), NULL, "X");
    EXPECT_BAD(tg_reshape(tape, x, D(-1, -1)), "reshape", "\"X\"", "(2x3)", "#-1");
    reset();
    /* 6 elements do not fill rows of 4 */
    x = mk(F64, D(2, 3), NULL, "X");
    EXPECT_BAD(tg_reshape(tape, x, D(4, -1)), "reshape", "\"X\"", "(2x3)", "#4");
    reset();
    x = mk(F64, D(2, 3), NULL, "X");
    EXPECT_BAD(tg_reshape(tape, x, D(-2, -3)), "reshape", "\"X\"", "(2x3)", "#-2|#-3");
    reset();
    x = mk(F64, D(2, 3), NULL, "X");
    EXPECT_BAD(tg_reshape(tape, x, D(1, 1, 1, 1, 6)), "reshape", "\"X\"", "#5");
}
END_TEST

START_TEST(slice_out_of_bounds)
{
    tg_tensor *x = mk(F64, D(3, 4), NULL, "X");
    EXPECT_BAD(tg_slice(tape, x, (int64_t[]){0, 0}, (int64_t[]){3, 5}, NULL), "slice", "\"X\"",
               "(3x4)", "#5");
    reset();
    x = mk(F64, D(3, 4), NULL, "X");
    EXPECT_BAD(tg_slice(tape, x, (int64_t[]){-5, 0}, (int64_t[]){TG_END, TG_END}, NULL),
               "slice", "\"X\"", "(3x4)", "#-5|#-2");
    reset();
    x = mk(F64, D(3, 4), NULL, "X");
    EXPECT_BAD(tg_slice(tape, x, (int64_t[]){0, 0}, (int64_t[]){TG_END, -6}, NULL), "slice",
               "\"X\"", "(3x4)", "#-6|#-2");
    reset();
    /* start after stop */
    x = mk(F32, D(3, 4), NULL, "X");
    EXPECT_BAD(tg_slice(tape, x, (int64_t[]){2, 0}, (int64_t[]){1, 4}, NULL), "slice", "\"X\"",
               "(3x4)", "#2", "#1");
    reset();
    x = mk(F64, D(3, 4), NULL, "X");
    EXPECT_BAD(tg_slice(tape, x, (int64_t[]){0, 0}, (int64_t[]){3, 4}, (int64_t[]){1, 0}),
               "slice", "\"X\"", "(3x4)", "step", "#0");
    reset();
    x = mk(F64, D(3, 4), NULL, "X");
    EXPECT_BAD(tg_slice(tape, x, (int64_t[]){0, 0}, (int64_t[]){3, 4}, (int64_t[]){-1, 1}),
               "slice", "\"X\"", "(3x4)", "step", "#-1");
}
END_TEST

START_TEST(concat_stack_shapes_differ)
{
    tg_tensor *a = mk(F64, D(2, 3), NULL, "A"), *b = mk(F64, D(5, 3), NULL, "B");
    tg_tensor *c = mk(F64, D(2, 4), NULL, "C");
    /* input 2 differs in dimension 1 */
    EXPECT_BAD(tg_concat(tape, (tg_tensor *[]){a, b, c}, 3, 0), "concat", "\"C\"|input 2",
               "(2x4)", "#1");
    reset();
    a = mk(F64, D(2, 3), NULL, "A");
    tg_tensor *r3 = mk(F64, D(2, 3, 1), NULL, "R3");
    EXPECT_BAD(tg_concat(tape, (tg_tensor *[]){a, r3}, 2, 1), "concat", "\"R3\"|input 1",
               "(2x3x1)");
    reset();
    a = mk(F64, D(2, 3), NULL, "A");
    b = mk(F64, D(3, 2), NULL, "B");
    EXPECT_BAD(tg_stack(tape, (tg_tensor *[]){a, a, b}, 3, 0), "stack", "\"B\"|input 2",
               "(3x2)", "(2x3)");
    reset();
    a = mk(F64, D(2, 3), NULL, "A");
    EXPECT_BAD(tg_concat(tape, (tg_tensor *[]){a}, 0, 0), "concat", "#0");
    reset();
    a = mk(F64, D(2, 3), NULL, "A");
    tg_tensor *f = tg_matrix(tape, TG_F32, 2, 3, NULL, "F");
    tg_concat(tape, (tg_tensor *[]){a, f}, 2, 0);
    ck_assert_int_eq(tg_tape_status(tape), TG_ERR_DTYPE);
    ck_assert_ptr_nonnull(strstr(tg_tape_error(tape), "concat"));
}
END_TEST

START_TEST(index_out_of_range)
{
    tg_tensor *x = mk(F64, D(3, 4), NULL, "X");
    EXPECT_BAD(tg_index_select(tape, x, 0, (int64_t[]){0, 2, 1, 7}, 4), "index_select",
               "\"X\"", "(3x4)", "index[3]|[3]", "#7", "[0, 3)|0 … 2|0..2|0 to 2|< 3");
    reset();
    x = mk(F64, D(3, 4), NULL, "X");
    EXPECT_BAD(tg_index_select(tape, x, 1, (int64_t[]){0, -1}, 2), "index_select", "\"X\"",
               "(3x4)", "[1]", "#-1");
    reset();
    x = mk(F32, D(3, 4), NULL, "X");
    EXPECT_BAD(tg_index_select(tape, x, -1, (int64_t[]){9}, 1), "index_select", "\"X\"",
               "(3x4)", "[0]", "#9", "[0, 4)|0 … 3|0..3|0 to 3|< 4");
    reset();
    /* gather along axis 1 of (3x4): position (2, 0), flat 4, holds 9 */
    x = mk(F64, D(3, 4), NULL, "X");
    EXPECT_BAD(tg_gather(tape, x, 1, (int64_t[]){0, 1, 2, 3, 9, 0}, D(3, 2)), "gather", "\"X\"",
               "(3x4)", "#9", "[4]|[2][0]|[2, 0]|(2, 0)|[2,0]",
               "[0, 4)|0 … 3|0..3|0 to 3|< 4");
    reset();
    x = mk(F64, D(3, 4), NULL, "X");
    EXPECT_BAD(tg_gather(tape, x, 0, (int64_t[]){0, 1, -2, 0}, D(2, 2)), "gather", "\"X\"",
               "(3x4)", "#-2");
    reset();
    /* the index may not be larger than x in the other dimensions, nor of another rank */
    x = mk(F64, D(3, 4), NULL, "X");
    EXPECT_BAD(tg_gather(tape, x, 1, (int64_t[]){0, 0, 0, 0, 0, 0, 0, 0}, D(4, 2)), "gather",
               "\"X\"", "(3x4)", "(4x2)|#4");
    reset();
    x = mk(F64, D(3, 4), NULL, "X");
    EXPECT_BAD(tg_gather(tape, x, 0, (int64_t[]){0, 0}, D(2)), "gather", "\"X\"", "(3x4)");
}
END_TEST

START_TEST(permute_not_a_permutation)
{
    tg_tensor *x = mk(F64, D(2, 3, 4), NULL, "P");
    EXPECT_BAD(tg_permute(tape, x, (int[]){0, 0, 1}), "permute", "\"P\"", "(2x3x4)", "#0");
    reset();
    x = mk(F64, D(2, 3, 4), NULL, "P");
    EXPECT_BAD(tg_permute(tape, x, (int[]){0, 1, 5}), "permute", "\"P\"", "(2x3x4)", "#5");
    reset();
    x = mk(F64, D(2, 3, 4), NULL, "P");
    EXPECT_BAD(tg_permute(tape, x, NULL), "permute", "\"P\"");
}
END_TEST

START_TEST(expand_incompatible)
{
    tg_tensor *x = mk(F64, D(2, 3), NULL, "E");
    EXPECT_BAD(tg_expand(tape, x, D(4, 3)), "expand", "\"E\"", "(2x3)", "(4x3)|#4");
    reset();
    x = mk(F64, D(2, 3), NULL, "E");
    EXPECT_BAD(tg_expand(tape, x, D(5, 2, 5)), "expand", "\"E\"", "(2x3)", "(5x2x5)|#5");
    reset();
    /* to a lower rank */
    x = mk(F64, D(2, 3), NULL, "E");
    EXPECT_BAD(tg_expand(tape, x, D(6)), "expand", "\"E\"", "(2x3)");
    reset();
    /* -1 in a new leading axis has no size to keep (torch refuses it too) */
    x = mk(F64, D(3), NULL, "E");
    EXPECT_BAD(tg_expand(tape, x, D(-1, 3)), "expand", "\"E\"", "(3)", "#-1");
    reset();
    x = mk(F64, D(1, 3), NULL, "E");
    EXPECT_BAD(tg_expand(tape, x, D(4, -2)), "expand", "\"E\"", "(1x3)", "#-2");
}
END_TEST

START_TEST(pad_negative_width)
{
    tg_tensor *x = mk(F64, D(2, 3), NULL, "X");
    EXPECT_BAD(tg_pad(tape, x, (int64_t[]){0, -1}, (int64_t[]){0, 0}, 0), "pad", "\"X\"",
               "(2x3)", "#-1");
    reset();
    x = mk(F32, D(2, 3), NULL, "X");
    EXPECT_BAD(tg_pad(tape, x, (int64_t[]){0, 0}, (int64_t[]){-4, 1}, 0), "pad", "\"X\"",
               "(2x3)", "#-4");
}
END_TEST

START_TEST(bmm_bad_shapes)
{
    tg_tensor *a = mk(F64, D(2, 3, 4), NULL, "A"), *b = mk(F64, D(2, 5, 6), NULL, "B");
    EXPECT_BAD(tg_bmm(tape, a, false, b, false), "bmm", "\"A\"", "\"B\"", "(2x3x4)", "(2x5x6)");
    reset();
    /* Aᵀ is (2x3x4)ᵀ → inner 3 against B's 4 */
    a = mk(F64, D(2, 3, 4), NULL, "A"), b = mk(F64, D(2, 4, 6), NULL, "B");
    EXPECT_BAD(tg_bmm(tape, a, true, b, false), "bmm", "\"A\"", "\"B\"", "(2x3x4)", "(2x4x6)");
    reset();
    /* batch 2 against 3 */
    a = mk(F64, D(2, 3, 4), NULL, "A"), b = mk(F64, D(3, 4, 5), NULL, "B");
    EXPECT_BAD(tg_bmm(tape, a, false, b, false), "bmm", "\"A\"", "\"B\"", "(2x3x4)", "(3x4x5)");
    reset();
    a = mk(F64, D(2, 2, 3, 4), NULL, "A"), b = mk(F64, D(3, 1, 4, 5), NULL, "B");
    EXPECT_BAD(tg_bmm(tape, a, false, b, false), "bmm", "(2x2x3x4)", "(3x1x4x5)");
    reset();
    a = mk(F64, D(4), NULL, "A"), b = mk(F64, D(2, 4, 5), NULL, "B");
    EXPECT_BAD(tg_bmm(tape, a, false, b, false), "bmm", "\"A\"", "(4)");
}
END_TEST

START_TEST(where_not_broadcastable)
{
    tg_tensor *m = mk(F64, D(2, 3), V(1, 0, 1, 0, 1, 0), "M");
    tg_tensor *a = mk(F64, D(2, 3), NULL, "A"), *b = mk(F64, D(4, 3), NULL, "B");
    EXPECT_BAD(tg_where(tape, m, a, b), "where", "\"B\"", "(4x3)", "(2x3)");
    reset();
    m = mk(F64, D(3, 2), NULL, "M");
    a = mk(F64, D(2, 3), NULL, "A"), b = mk(F64, D(2, 3), NULL, "B");
    EXPECT_BAD(tg_where(tape, m, a, b), "where", "\"M\"", "(3x2)", "(2x3)");
}
END_TEST

typedef tg_tensor *(*loss2_fn)(tg_tape *, tg_tensor *, tg_tensor *);
static tg_tensor *huber1(tg_tape *t, tg_tensor *a, tg_tensor *y) { return tg_huber(t, a, y, 1); }
static tg_tensor *sl1_1(tg_tape *t, tg_tensor *a, tg_tensor *y) { return tg_smooth_l1(t, a, y, 1); }
static const struct {
    const char *name;
    loss2_fn fn;
} losses2[] = {
    {"bce_with_logits", tg_bce_with_logits},
    {"l1", tg_l1},
    {"huber", huber1},
    {"smooth_l1", sl1_1},
};
#define N_LOSSES2 ((int)(sizeof losses2 / sizeof losses2[0]))

START_TEST(loss_shapes_differ)
{
    tg_tensor *a = mk(F64, D(2, 3), NULL, "A"), *y = mk(F64, D(3, 2), NULL, "Y");
    EXPECT_BAD(losses2[_i].fn(tape, a, y), losses2[_i].name, "\"A\"", "\"Y\"", "(2x3)", "(3x2)");
    /* the target must have a's shape: no broadcasting (1x3 against 2x3) */
    reset();
    a = mk(F32, D(2, 3), NULL, "A"), y = mk(F32, D(1, 3), NULL, "Y");
    EXPECT_BAD(losses2[_i].fn(tape, a, y), losses2[_i].name, "\"A\"", "\"Y\"", "(2x3)", "(1x3)");
}
END_TEST

START_TEST(class_losses_bad_labels)
{
    /* nll_loss: (2x5), label 9 in example 1 */
    tg_tensor *lp = mk(F64, D(2, 5), NULL, "LP");
    EXPECT_BAD(tg_nll_loss(tape, lp, (int32_t[]){1, 9}, 2, 1, NULL), "nll", "\"LP\"", "(2x5)", "#9",
               "#1", "[0, 5)|0 … 4|0..4|0 to 4|< 5");
    reset();
    lp = mk(F64, D(2, 5), NULL, "LP");
    EXPECT_BAD(tg_nll_loss(tape, lp, (int32_t[]){-1, 0}, 2, 1, NULL), "nll", "\"LP\"", "(2x5)",
               "#-1");
    reset();
    /* classes on axis 0: (6x2) has 6 classes */
    lp = mk(F64, D(6, 2), NULL, "LP");
    EXPECT_BAD(tg_nll_loss(tape, lp, (int32_t[]){0, 8}, 2, 0, NULL), "nll", "\"LP\"", "(6x2)", "#8");
    reset();
    lp = mk(F64, D(2, 5), NULL, "LP");
    EXPECT_BAD(tg_nll_loss(tape, lp, (int32_t[]){0, 0}, 2, 3, NULL), "nll", "(2x5)", "#3");
    reset();
    lp = mk(F64, D(2, 5, 1), NULL, "LP");
    EXPECT_BAD(tg_nll_loss(tape, lp, (int32_t[]){0, 0}, 2, 1, NULL), "nll", "(2x5x1)");
    reset();
    /* the count must match the examples: (8x3) with classes on axis 0 has 3 examples, and
     * classes on axis 1 have 8 (a short array would be read past its end) */
    lp = mk(F64, D(8, 3), NULL, "LP");
    EXPECT_BAD(tg_nll_loss(tape, lp, (int32_t[]){0, 1, 2, 0, 1, 2, 0, 1}, 8, 0, NULL), "nll",
               "\"LP\"", "(8x3)", "#8", "#3");
    reset();
    lp = mk(F64, D(8, 3), NULL, "LP");
    EXPECT_BAD(tg_cross_entropy(tape, lp, (int32_t[]){0, 1, 2}, 3, 1, NULL, 0), "cross_entropy",
               "\"LP\"", "(8x3)", "#3", "#8");
    reset();
    tg_tensor *s = mk(F32, D(2, 5), NULL, "S");
    EXPECT_BAD(tg_cross_entropy(tape, s, (int32_t[]){0, 7}, 2, 1, NULL, 0), "cross_entropy", "\"S\"",
               "(2x5)", "#7", "#1");
    reset();
    s = mk(F64, D(5, 2), NULL, "S");
    EXPECT_BAD(tg_cross_entropy(tape, s, (int32_t[]){-3, 0}, 2, 0, NULL, 0), "cross_entropy",
               "\"S\"", "(5x2)", "#-3");
}
END_TEST

START_TEST(class_losses_bad_constants)
{
    const double w[5] = {1, -2, 1, 1, 1};
    tg_tensor *lp = mk(F64, D(2, 5), NULL, "LP");
    EXPECT_BAD(tg_nll_loss(tape, lp, (int32_t[]){0, 1}, 2, 1, w), "nll", "weight", "#-2");
    reset();
    tg_tensor *s = mk(F64, D(2, 5), NULL, "S");
    EXPECT_BAD(tg_cross_entropy(tape, s, (int32_t[]){0, 1}, 2, 1, w, 0), "cross_entropy", "weight",
               "#-2");
    reset();
    s = mk(F64, D(2, 5), NULL, "S");
    EXPECT_BAD(tg_cross_entropy(tape, s, (int32_t[]){0, 1}, 2, 1, NULL, 1.5), "cross_entropy",
               "smoothing", "#1.5");
    reset();
    s = mk(F64, D(2, 5), NULL, "S");
    EXPECT_BAD(tg_cross_entropy(tape, s, (int32_t[]){0, 1}, 2, 1, NULL, -0.25), "cross_entropy",
               "smoothing", "#-0.25");
    reset();
    s = mk(F64, D(2, 5), NULL, "S");
    EXPECT_BAD(tg_cross_entropy(tape, s, (int32_t[]){0, 1}, 2, 1, NULL, NAN), "cross_entropy",
               "smoothing", "~nan");
}
END_TEST

/* Constants that must be finite: pow's exponent, clamp's bounds (±inf allowed, NaN not),
 * elu's alpha, huber's delta. */
START_TEST(nonfinite_constants)
{
    tg_tensor *x = mk(F64, D(2, 3), NULL, "X");
    EXPECT_BAD(tg_pow(tape, x, NAN), "pow", "\"X\"", "~nan");
    reset();
    x = mk(F64, D(2, 3), NULL, "X");
    EXPECT_BAD(tg_pow(tape, x, INFINITY), "pow", "\"X\"", "~inf");
    reset();
    x = mk(F64, D(2, 3), NULL, "X");
    EXPECT_BAD(tg_pow(tape, x, -INFINITY), "pow", "\"X\"", "~inf");
    reset();
    x = mk(F64, D(2, 3), NULL, "X");
    EXPECT_BAD(tg_clamp(tape, x, NAN, 1), "clamp", "\"X\"", "~nan");
    reset();
    x = mk(F32, D(2, 3), NULL, "X");
    EXPECT_BAD(tg_clamp(tape, x, 0, NAN), "clamp", "\"X\"", "~nan");
    reset();
    x = mk(F64, D(2, 3), NULL, "X");
    EXPECT_BAD(tg_elu(tape, x, NAN), "elu", "\"X\"", "~nan");
    reset();
    x = mk(F64, D(2, 3), NULL, "X");
    EXPECT_BAD(tg_elu(tape, x, INFINITY), "elu", "\"X\"", "~inf");
    reset();
    tg_tensor *a = mk(F64, D(2, 3), NULL, "A"), *y = mk(F64, D(2, 3), NULL, "Y");
    EXPECT_BAD(tg_huber(tape, a, y, NAN), "huber", "~nan");
    reset();
    a = mk(F64, D(2, 3), NULL, "A"), y = mk(F64, D(2, 3), NULL, "Y");
    EXPECT_BAD(tg_huber(tape, a, y, INFINITY), "huber", "~inf");
}
END_TEST

/* torch.nn.HuberLoss needs delta > 0 and SmoothL1Loss beta >= 0. */
START_TEST(loss_constants_out_of_range)
{
    tg_tensor *a = mk(F64, D(2, 3), NULL, "A"), *y = mk(F64, D(2, 3), NULL, "Y");
    EXPECT_BAD(tg_huber(tape, a, y, -1), "huber", "delta|δ", "#-1");
    reset();
    a = mk(F64, D(2, 3), NULL, "A"), y = mk(F64, D(2, 3), NULL, "Y");
    EXPECT_BAD(tg_huber(tape, a, y, 0), "huber", "delta|δ", "#0");
    reset();
    a = mk(F64, D(2, 3), NULL, "A"), y = mk(F64, D(2, 3), NULL, "Y");
    EXPECT_BAD(tg_smooth_l1(tape, a, y, -0.5), "smooth_l1", "beta|β", "#-0.5");
    reset();
    a = mk(F64, D(2, 3), NULL, "A"), y = mk(F64, D(2, 3), NULL, "Y");
    EXPECT_BAD(tg_smooth_l1(tape, a, y, NAN), "smooth_l1", "beta|β", "~nan");
}
END_TEST

/* ======================================================================================
 * 2. Values PyTorch gives instead of an error.
 */

/* IEEE results (NaN, ±inf, small integers) are exact: tolerance 0; ln 4 is libm's, within
 * an ulp (1e-16 relative in float64, 1e-7 in float32). */
START_TEST(domain_edges_like_pytorch)
{
    tg_dtype dt = DT(_i);
    tg_tensor *x = mkg(dt, D(1, 4), V(-1, 0, 1, 4), "x");
    EXPECT_VALS(tg_log(tape, x), V(NAN, -INFINITY, 0, log(4.0)), 4, dt == F64 ? 1e-16 : 1e-7);
    EXPECT_VALS(tg_sqrt(tape, x), V(NAN, 0, 1, 2), 4, 0);
    EXPECT_VALS(tg_log1p(tape, mk(dt, D(3), V(-2, -1, 0), NULL)), V(NAN, -INFINITY, 0), 3, 0);
    tg_tensor *neg = mk(dt, D(1, 3), V(-2, -8, -0.5), "neg");
    EXPECT_VALS(tg_pow(tape, neg, 0.5), V(NAN, NAN, NAN), 3, 0);
    EXPECT_VALS(tg_pow(tape, neg, 1.0 / 3), V(NAN, NAN, NAN), 3, 0);
    EXPECT_VALS(tg_pow(tape, neg, 3), V(-8, -512, -0.125), 3, 0);
    EXPECT_VALS(tg_pow(tape, neg, 2), V(4, 64, 0.25), 3, 0);
    EXPECT_VALS(tg_pow(tape, neg, -1), V(-0.5, -0.125, -2), 3, 0);
    EXPECT_VALS(tg_pow(tape, mk(dt, D(2), V(0, 3), NULL), 0), V(1, 1), 2, 0); /* 0^0 = 1 */
    /* pow(-2, 3) exactly -8, and its gradient 3·(-2)² = 12 exactly */
    tg_tensor *m2 = mkg(dt, D(1), V(-2), "m2");
    tg_tensor *p3 = tg_pow(tape, m2, 3);
    ck_assert(tg_tensor_get(p3, 0) == -8.0);
    backward_sum(p3);
    ck_assert(tg_tensor_grad_get(m2, 0) == 12.0);
    no_error();
}
END_TEST

/* torch.clamp: min(max(x, lo), hi), so lo > hi gives hi; NaN stays NaN; gradient 1 on
 * lo <= x <= hi (bounds included), 0 elsewhere, so 0 everywhere when lo > hi. Exact, except
 * ±1e30 which float32 stores to 1e-7 relative. */
START_TEST(clamp_like_pytorch)
{
    tg_dtype dt = DT(_i);
    tg_tensor *x = mkg(dt, D(1, 6), V(-3, -1, 0, 1, 2.5, 5), "x");
    tg_tensor *y = tg_clamp(tape, x, 2, 1);
    EXPECT_VALS(y, V(1, 1, 1, 1, 1, 1), 6, 0);
    backward_sum(y);
    EXPECT_GRAD(x, V(0, 0, 0, 0, 0, 0), 6, 0);

    reset();
    x = mkg(dt, D(1, 6), V(-3, -1, 0, 1, 2.5, 5), "x");
    y = tg_clamp(tape, x, -1, 1);
    EXPECT_VALS(y, V(-1, -1, 0, 1, 1, 1), 6, 0);
    backward_sum(y);
    EXPECT_GRAD(x, V(0, 1, 1, 1, 0, 0), 6, 0);

    reset();
    x = mkg(dt, D(1, 4), V(-1e30, NAN, 3, 1e30), "x");
    y = tg_clamp(tape, x, -INFINITY, 2);
    EXPECT_VALS(y, V(-1e30, NAN, 2, 2), 4, dt == F64 ? 0 : 1e-7);
    y = tg_clamp(tape, x, 0, INFINITY);
    EXPECT_VALS(y, V(0, NAN, 3, 1e30), 4, dt == F64 ? 0 : 1e-7);
}
END_TEST

/* Gradients at kinks, as PyTorch: abs' (0) = 0 (sgn); relu'(0) = 0; leaky_relu'(0) = slope;
 * elu'(0) = alpha (x <= 0 branch). Exact, but elu' at ±tiny goes through e^x (one ulp). */
START_TEST(kinks_like_pytorch)
{
    tg_dtype dt = DT(_i);
    tg_tensor *x = mkg(dt, D(1, 3), V(-2, 0, 3), "x");
    backward_weighted(tg_abs(tape, x));
    EXPECT_GRAD(x, V(-1, 0, 3), 3, 0);
    EXPECT_VALS(tg_abs(tape, mk(dt, D(1), V(-0.0), NULL)), V(0), 1, 0);

    reset();
    x = mkg(dt, D(1, 3), V(-2, 0, 3), "x");
    backward_weighted(tg_relu(tape, x));
    EXPECT_GRAD(x, V(0, 0, 3), 3, 0);

    reset();
    x = mkg(dt, D(1, 3), V(-2, 0, 3), "x");
    backward_weighted(tg_leaky_relu(tape, x, 0.25));
    EXPECT_GRAD(x, V(0.25, 0.5, 3), 3, 0);

    reset();
    x = mkg(dt, D(1, 3), V(-1e-300, 0, 1e-30), "x");
    backward_weighted(tg_elu(tape, x, 0.5));
    EXPECT_GRAD(x, V(0.5, 1.0, 3), 3, dt == F64 ? 1e-15 : 1e-7);

    reset();
    x = mkg(dt, D(1, 1), V(0), "x");
    backward_sum(tg_elu(tape, x, 0.5));
    EXPECT_GRAD(x, V(0.5), 1, 0);
}
END_TEST

/* torch.maximum/minimum: gradient split ½/½ where a == b; NaN propagates. Exact. */
START_TEST(maximum_minimum_ties)
{
    tg_dtype dt = DT(_i);
    tg_tensor *a = mkg(dt, D(1, 3), V(1, 2, 3), "a"), *b = mkg(dt, D(1, 3), V(1, 3, 2), "b");
    tg_tensor *y = tg_maximum(tape, a, b);
    EXPECT_VALS(y, V(1, 3, 3), 3, 0);
    backward_sum(y);
    EXPECT_GRAD(a, V(0.5, 0, 1), 3, 0);
    EXPECT_GRAD(b, V(0.5, 1, 0), 3, 0);

    reset();
    a = mkg(dt, D(1, 3), V(1, 2, 3), "a"), b = mkg(dt, D(1, 3), V(1, 3, 2), "b");
    y = tg_minimum(tape, a, b);
    EXPECT_VALS(y, V(1, 2, 2), 3, 0);
    backward_sum(y);
    EXPECT_GRAD(a, V(0.5, 1, 0), 3, 0);
    EXPECT_GRAD(b, V(0.5, 0, 1), 3, 0);

    /* broadcast b (1x2) over a (2x2), ties at (0,0) and (1,1): db sums its shares */
    reset();
    a = mkg(dt, D(2, 2), V(1, 2, 3, 4), "a"), b = mkg(dt, D(1, 2), V(1, 4), "b");
    y = tg_maximum(tape, a, b);
    EXPECT_VALS(y, V(1, 4, 3, 4), 4, 0);
    backward_sum(y);
    EXPECT_GRAD(a, V(0.5, 0, 1, 0.5), 4, 0);
    EXPECT_GRAD(b, V(0.5, 1.5), 2, 0);

    reset();
    a = mk(dt, D(1, 3), V(NAN, 1, 2), "a"), b = mk(dt, D(1, 3), V(0, NAN, 1), "b");
    EXPECT_VALS(tg_maximum(tape, a, b), V(NAN, NAN, 2), 3, 0);
    EXPECT_VALS(tg_minimum(tape, a, b), V(NAN, NAN, 1), 3, 0);
}
END_TEST

/* amax/amin: the gradient is split evenly between tied extremes. Exact (½, ⅓ of small
 * integers: the tolerance covers ⅓'s rounding). */
START_TEST(max_min_axes_ties)
{
    tg_dtype dt = DT(_i);
    double tol = dt == F64 ? 1e-15 : 1e-7;
    tg_tensor *x = mkg(dt, D(1, 4), V(1, 3, 3, 2), "x");
    tg_tensor *y = tg_max_axes(tape, x, NULL, 0, false);
    EXPECT_SHAPE(y, 1);
    EXPECT_VALS(y, V(3), 1, 0);
    backward_sum(y);
    EXPECT_GRAD(x, V(0, 0.5, 0.5, 0), 4, 0);

    reset();
    x = mkg(dt, D(4), V(2, 1, 1, 1), "x");
    y = tg_min_axes(tape, x, (int[]){0}, 1, false);
    EXPECT_VALS(y, V(1), 1, 0);
    backward_sum(y);
    EXPECT_GRAD(x, V(0, 1.0 / 3, 1.0 / 3, 1.0 / 3), 4, tol);

    /* per row, with weights 1 and 2 on the two outputs */
    reset();
    x = mkg(dt, D(2, 4), V(1, 3, 3, 2, 5, 5, 5, 0), "x");
    y = tg_max_axes(tape, x, (int[]){-1}, 1, true);
    EXPECT_SHAPE(y, 2, 1);
    EXPECT_VALS(y, V(3, 5), 2, 0);
    backward_weighted(y);
    EXPECT_GRAD(x, V(0, 0.5, 0.5, 0, 2.0 / 3, 2.0 / 3, 2.0 / 3, 0), 8, tol);

    /* over axis 0 of (2x4): ties within columns */
    reset();
    x = mkg(dt, D(2, 4), V(1, 3, 3, 2, 1, 0, 3, 2), "x");
    y = tg_min_axes(tape, x, (int[]){0}, 1, false);
    EXPECT_SHAPE(y, 4);
    EXPECT_VALS(y, V(1, 0, 3, 2), 4, 0);
    backward_weighted(y);
    EXPECT_GRAD(x, V(0.5, 0, 1.5, 2, 0.5, 2, 1.5, 2), 8, 0);

    /* NaN is the maximum and the minimum (torch.amax/amin propagate it) */
    reset();
    x = mk(dt, D(1, 3), V(1, NAN, 2), "x");
    EXPECT_VALS(tg_max_axes(tape, x, NULL, 0, false), V(NAN), 1, 0);
    EXPECT_VALS(tg_min_axes(tape, x, NULL, 0, false), V(NAN), 1, 0);
}
END_TEST

/* ======================================================================================
 * 3. Semantics. The shape ops only move values (and add gradients of small integers): their
 * checks are exact, tolerance 0.
 */

START_TEST(reshape_is_a_view)
{
    tg_dtype dt = DT(_i);
    tg_tensor *x = mkg(dt, D(2, 3), V(1, 2, 3, 4, 5, 6), "x");
    tg_tensor *y = tg_reshape(tape, x, D(3, -1));
    EXPECT_SHAPE(y, 3, 2);
    ck_assert_ptr_eq(tg_tensor_data(y), tg_tensor_data(x));
    tg_tensor *z = tg_reshape(tape, y, D(6));
    EXPECT_SHAPE(z, 6);
    ck_assert_ptr_eq(tg_tensor_data(z), tg_tensor_data(x));
    EXPECT_VALS(z, V(1, 2, 3, 4, 5, 6), 6, 0);
    tg_tensor *w = tg_reshape(tape, x, D(1, 2, 1, 3));
    EXPECT_SHAPE(w, 1, 2, 1, 3);
    /* gradient through two reshapes: Σ z ⊙ R, R = 1 … 6, back to x's layout */
    backward_weighted(tg_mul(tape, z, tg_reshape(tape, tg_scale(tape, w, 0.5), D(6))));
    /* d/dx Σ_i R_i x_i (x_i / 2) = R_i x_i */
    EXPECT_GRAD(x, V(1, 4, 9, 16, 25, 36), 6, 0);

    /* a view and its base both used: Σ y ⊙ y + Σ x, dx = 2x + 1 (the view's gradient adds to
     * the base's, neither overwrites nor doubles it) */
    reset();
    x = mkg(dt, D(2, 3), V(1, 2, 3, 4, 5, 6), "x");
    y = tg_reshape(tape, x, D(3, 2));
    backward_sum(tg_add(tape, tg_sum(tape, tg_mul(tape, y, y)), tg_sum(tape, x)));
    EXPECT_GRAD(x, V(3, 5, 7, 9, 11, 13), 6, 0);
}
END_TEST

START_TEST(detach_stops_gradients)
{
    tg_dtype dt = DT(_i);
    tg_tensor *x = mkg(dt, D(1, 3), V(1, -2, 3), "x");
    tg_tensor *d = tg_detach(tape, x);
    EXPECT_SHAPE(d, 1, 3);
    EXPECT_VALS(d, V(1, -2, 3), 3, 0);
    ck_assert_ptr_eq(tg_tensor_data(d), tg_tensor_data(x));
    /* Σ x ⊙ detach(x): dx = detach(x) = x, not 2x */
    backward_sum(tg_mul(tape, x, d));
    EXPECT_GRAD(x, V(1, -2, 3), 3, 0);
    /* a loss that only reaches x through detach gives it no gradient */
    reset();
    x = mkg(dt, D(1, 3), V(1, -2, 3), "x");
    tg_tensor *l = tg_sum(tape, tg_square(tape, tg_detach(tape, x)));
    tg_status s = tg_backward(tape, l);
    ck_assert_msg(s == TG_OK, "%s", tg_tape_error(tape));
    ck_assert_double_eq(tg_tensor_item(l), 14);
    for (size_t i = 0; i < 3; i++)
        ck_assert(tg_tensor_grad(x) == NULL || tg_tensor_grad_get(x, i) == 0);
}
END_TEST

/* index_select with repeated indices is an embedding lookup; repeats add their gradients. */
START_TEST(index_select_accumulates)
{
    tg_dtype dt = DT(_i);
    tg_tensor *table = mkg(dt, D(4, 3), NULL, "table"); /* 0.5 … 11.5 */
    tg_tensor *y = tg_index_select(tape, table, 0, (int64_t[]){1, 3, 1, 1}, 4);
    EXPECT_SHAPE(y, 4, 3);
    EXPECT_VALS(y, V(3.5, 4.5, 5.5, 9.5, 10.5, 11.5, 3.5, 4.5, 5.5, 3.5, 4.5, 5.5), 12, 0);
    backward_weighted(y); /* output rows weighted (1 2 3) (4 5 6) (7 8 9) (10 11 12) */
    EXPECT_GRAD(table, V(0, 0, 0, 18, 21, 24, 0, 0, 0, 4, 5, 6), 12, 0);

    /* along axis 1 (and -1), columns 2, 2, 0 */
    for (int neg = 0; neg < 2; neg++) {
        reset();
        table = mkg(dt, D(2, 3), V(1, 2, 3, 4, 5, 6), "table");
        y = tg_index_select(tape, table, neg ? -1 : 1, (int64_t[]){2, 2, 0}, 3);
        EXPECT_SHAPE(y, 2, 3);
        EXPECT_VALS(y, V(3, 3, 1, 6, 6, 4), 6, 0);
        backward_weighted(y);
        EXPECT_GRAD(table, V(3, 0, 3, 6, 0, 9), 6, 0);
    }
    /* no indices: an empty result, as torch */
    reset();
    table = mk(dt, D(4, 3), NULL, "table");
    y = tg_index_select(tape, table, 0, (int64_t[]){0}, 0);
    EXPECT_SHAPE(y, 0, 3);
}
END_TEST

START_TEST(gather_values_and_gradient)
{
    tg_dtype dt = DT(_i);
    /* torch.gather(x, 1, [[0, 0], [2, 1]]) of x = [[1 2 3], [4 5 6]] = [[1 1], [6 5]] */
    tg_tensor *x = mkg(dt, D(2, 3), V(1, 2, 3, 4, 5, 6), "x");
    tg_tensor *y = tg_gather(tape, x, 1, (int64_t[]){0, 0, 2, 1}, D(2, 2));
    EXPECT_SHAPE(y, 2, 2);
    EXPECT_VALS(y, V(1, 1, 6, 5), 4, 0);
    backward_weighted(y);
    EXPECT_GRAD(x, V(3, 0, 0, 0, 4, 3), 6, 0);
    /* along axis 0 with a smaller index: gather(x, 0, [[1, 0, 1]]) = [[4 2 6]] */
    reset();
    x = mkg(dt, D(2, 3), V(1, 2, 3, 4, 5, 6), "x");
    y = tg_gather(tape, x, -2, (int64_t[]){1, 0, 1}, D(1, 3));
    EXPECT_VALS(y, V(4, 2, 6), 3, 0);
    backward_weighted(y);
    EXPECT_GRAD(x, V(0, 2, 0, 1, 0, 3), 6, 0);
}
END_TEST

/* n tensors of shape (2x3), tensor k holding 100k + 0 … 5. */
static void
make_parts(tg_dtype dt, int n, tg_tensor **xs)
{
    for (int k = 0; k < n; k++) {
        double v[6];
        for (int i = 0; i < 6; i++)
            v[i] = 100.0 * k + i;
        xs[k] = mkg(dt, D(2, 3), v, NULL);
    }
}

/* concat and stack of 1, 5 (past the four inputs a node keeps in place) and 10 inputs,
 * values and gradients, along the first and the last axis (given both ways). */
START_TEST(join_many_inputs)
{
    tg_dtype dt = DT(_i);
    const int counts[3] = {1, 5, 10};
    for (int c = 0; c < 3; c++) {
        int n = counts[c];
        for (int mode = 0; mode < 6; mode++) {
            /* 0/1: concat axis 0 / -2, 2/3: concat axis 1 / -1, 4: stack axis 0, 5: stack -1 */
            reset();
            tg_tensor *xs[10];
            make_parts(dt, n, xs);
            tg_tensor *y;
            if (mode < 4)
                y = tg_concat(tape, xs, n, (int[]){0, -2, 1, -1}[mode]);
            else
                y = tg_stack(tape, xs, n, mode == 4 ? 0 : -1);
            no_error();
            if (mode < 2)
                EXPECT_SHAPE(y, 2 * n, 3);
            else if (mode < 4)
                EXPECT_SHAPE(y, 2, 3 * n);
            else if (mode == 4)
                EXPECT_SHAPE(y, n, 2, 3);
            else
                EXPECT_SHAPE(y, 2, 3, n);
            /* where element i of input k lands in y */
            size_t pos[10][6];
            for (int k = 0; k < n; k++)
                for (int i = 0; i < 6; i++) {
                    size_t r = (size_t)i / 3, col = (size_t)i % 3;
                    if (mode < 2)
                        pos[k][i] = ((size_t)k * 2 + r) * 3 + col;
                    else if (mode < 4)
                        pos[k][i] = r * 3 * (size_t)n + (size_t)k * 3 + col;
                    else if (mode == 4)
                        pos[k][i] = (size_t)k * 6 + (size_t)i;
                    else
                        pos[k][i] = (size_t)i * (size_t)n + (size_t)k;
                }
            for (int k = 0; k < n; k++)
                for (int i = 0; i < 6; i++)
                    ck_assert_msg(tg_tensor_get(y, pos[k][i]) == 100.0 * k + i,
                                  "n %d mode %d: input %d element %d: got %g", n, mode, k, i,
                                  tg_tensor_get(y, pos[k][i]));
            backward_weighted(y);
            for (int k = 0; k < n; k++)
                for (int i = 0; i < 6; i++)
                    ck_assert_msg(tg_tensor_grad_get(xs[k], (size_t)i) == (double)pos[k][i] + 1,
                                  "n %d mode %d: grad of input %d element %d: got %g, want %zu",
                                  n, mode, k, i, tg_tensor_grad_get(xs[k], (size_t)i),
                                  pos[k][i] + 1);
        }
    }
}
END_TEST

START_TEST(join_mixed_sizes_and_repeats)
{
    tg_dtype dt = DT(_i);
    tg_tensor *a = mkg(dt, D(1, 2), V(1, 2), "a"), *b = mkg(dt, D(3, 2), V(3, 4, 5, 6, 7, 8), "b");
    tg_tensor *y = tg_concat(tape, (tg_tensor *[]){a, b, a}, 3, 0);
    EXPECT_SHAPE(y, 5, 2);
    EXPECT_VALS(y, V(1, 2, 3, 4, 5, 6, 7, 8, 1, 2), 10, 0);
    backward_weighted(y);
    EXPECT_GRAD(a, V(1 + 9, 2 + 10), 2, 0); /* a appears twice: its gradients add */
    EXPECT_GRAD(b, V(3, 4, 5, 6, 7, 8), 6, 0);
    /* the same tensor six times (past the inline inputs) */
    reset();
    a = mkg(dt, D(2), V(1, 2), "a");
    tg_tensor *six[6] = {a, a, a, a, a, a};
    y = tg_stack(tape, six, 6, 1);
    EXPECT_SHAPE(y, 2, 6);
    backward_weighted(y);
    EXPECT_GRAD(a, V(1 + 2 + 3 + 4 + 5 + 6, 7 + 8 + 9 + 10 + 11 + 12), 2, 0);
}
END_TEST

START_TEST(slice_with_step)
{
    tg_dtype dt = DT(_i);
    tg_tensor *x = mkg(dt, D(4, 5), NULL, "x"); /* x[r][c] = 5r + c + 0.5 */
    /* x[1::2, ::2] */
    tg_tensor *y = tg_slice(tape, x, (int64_t[]){1, 0}, (int64_t[]){TG_END, TG_END},
                            (int64_t[]){2, 2});
    EXPECT_SHAPE(y, 2, 3);
    EXPECT_VALS(y, V(5.5, 7.5, 9.5, 15.5, 17.5, 19.5), 6, 0);
    backward_weighted(y);
    EXPECT_GRAD(x, V(0, 0, 0, 0, 0, 1, 0, 2, 0, 3, 0, 0, 0, 0, 0, 4, 0, 5, 0, 6), 20, 0);

    /* x[-2:, -3:-1] */
    reset();
    x = mkg(dt, D(4, 5), NULL, "x");
    y = tg_slice(tape, x, (int64_t[]){-2, -3}, (int64_t[]){TG_END, -1}, NULL);
    EXPECT_SHAPE(y, 2, 2);
    EXPECT_VALS(y, V(12.5, 13.5, 17.5, 18.5), 4, 0);

    /* x[0:4:3, 0:5:4]: a step past the end keeps only the first of each stride */
    reset();
    x = mk(dt, D(4, 5), NULL, "x");
    y = tg_slice(tape, x, (int64_t[]){0, 0}, (int64_t[]){4, 5}, (int64_t[]){3, 4});
    EXPECT_SHAPE(y, 2, 2);
    EXPECT_VALS(y, V(0.5, 4.5, 15.5, 19.5), 4, 0);

    /* start == stop is an empty slice; a 3-D slice in the middle axis */
    reset();
    x = mk(dt, D(4, 5), NULL, "x");
    y = tg_slice(tape, x, (int64_t[]){2, 0}, (int64_t[]){2, TG_END}, NULL);
    EXPECT_SHAPE(y, 0, 5);
    reset();
    x = mkg(dt, D(2, 3, 2), NULL, "x");
    y = tg_slice(tape, x, (int64_t[]){0, 1, 0}, (int64_t[]){2, 3, 2}, (int64_t[]){1, 1, 2});
    EXPECT_SHAPE(y, 2, 2, 1);
    EXPECT_VALS(y, V(2.5, 4.5, 8.5, 10.5), 4, 0);
    backward_weighted(y);
    EXPECT_GRAD(x, V(0, 0, 1, 0, 2, 0, 0, 0, 3, 0, 4, 0), 12, 0);
}
END_TEST

START_TEST(pad_values_and_gradient)
{
    tg_dtype dt = DT(_i);
    tg_tensor *x = mkg(dt, D(2, 2), V(1, 2, 3, 4), "x");
    tg_tensor *y = tg_pad(tape, x, (int64_t[]){1, 0}, (int64_t[]){0, 2}, 9);
    EXPECT_SHAPE(y, 3, 4);
    EXPECT_VALS(y, V(9, 9, 9, 9, 1, 2, 9, 9, 3, 4, 9, 9), 12, 0);
    backward_weighted(y);
    EXPECT_GRAD(x, V(5, 6, 9, 10), 4, 0);
    /* -inf padding (a max-pool's), zero widths copy, 1-D */
    reset();
    x = mk(dt, D(3), V(1, 2, 3), "x");
    EXPECT_VALS(tg_pad(tape, x, (int64_t[]){2}, (int64_t[]){1}, -INFINITY),
                V(-INFINITY, -INFINITY, 1, 2, 3, -INFINITY), 6, 0);
    EXPECT_VALS(tg_pad(tape, x, (int64_t[]){0}, (int64_t[]){0}, 5), V(1, 2, 3), 3, 0);
}
END_TEST

START_TEST(expand_and_permute)
{
    tg_dtype dt = DT(_i);
    tg_tensor *x = mkg(dt, D(3, 1), V(1, 2, 3), "x");
    tg_tensor *y = tg_expand(tape, x, D(2, 3, 4));
    EXPECT_SHAPE(y, 2, 3, 4);
    for (size_t i = 0; i < 24; i++)
        ck_assert_double_eq(tg_tensor_get(y, i), (double)((i / 4) % 3 + 1));
    backward_weighted(y); /* dx[r] = Σ_{b,c} R[b][r][c] = Σ of (1 + 12b + 4r + c) */
    EXPECT_GRAD(x, V(10 + 58, 26 + 74, 42 + 90), 3, 0);
    /* -1 keeps a size */
    reset();
    x = mk(dt, D(3, 1), V(1, 2, 3), "x");
    EXPECT_SHAPE(tg_expand(tape, x, D(2, -1, 4)), 2, 3, 4);
    EXPECT_SHAPE(tg_expand(tape, x, D(3, 1)), 3, 1);

    /* permute (2x3x4) by (2, 0, 1): y[i][j][k] = x[j][k][i] */
    reset();
    x = mkg(dt, D(2, 3, 4), NULL, "x");
    y = tg_permute(tape, x, (int[]){2, 0, 1});
    EXPECT_SHAPE(y, 4, 2, 3);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 2; j++)
            for (int k = 0; k < 3; k++)
                ck_assert_double_eq(tg_tensor_get(y, (size_t)(i * 6 + j * 3 + k)),
                                    (double)(j * 12 + k * 4 + i) + 0.5);
    backward_weighted(y);
    for (int j = 0; j < 2; j++)
        for (int k = 0; k < 3; k++)
            for (int i = 0; i < 4; i++)
                ck_assert_double_eq(tg_tensor_grad_get(x, (size_t)(j * 12 + k * 4 + i)),
                                    (double)(i * 6 + j * 3 + k) + 1);
}
END_TEST

START_TEST(where_values_and_gradient)
{
    tg_dtype dt = DT(_i);
    tg_tensor *m = mk(dt, D(2, 3), V(1, 0, 1, 0, 0, -2), "mask"); /* != 0 is true */
    tg_tensor_set_requires_grad(m, true);
    tg_tensor *a = mkg(dt, D(2, 3), V(1, 2, 3, 4, 5, 6), "a");
    tg_tensor *b = mkg(dt, D(1, 3), V(-1, -2, -3), "b");
    tg_tensor *y = tg_where(tape, m, a, b);
    EXPECT_SHAPE(y, 2, 3);
    EXPECT_VALS(y, V(1, -2, 3, -1, -2, 6), 6, 0);
    backward_weighted(y);
    EXPECT_GRAD(a, V(1, 0, 3, 0, 0, 6), 6, 0);
    EXPECT_GRAD(b, V(4, 2 + 5, 0), 3, 0);
    for (size_t i = 0; i < 6; i++)
        ck_assert(tg_tensor_grad(m) == NULL || tg_tensor_grad_get(m, i) == 0);
}
END_TEST

/* The indexing and joining ops along the middle axis of 3-D tensors (the strided paths). */
START_TEST(middle_axis_3d)
{
    tg_dtype dt = DT(_i);
    /* gather along axis 1 of (2x3x2): y[i][j][k] = x[i][index[i][j][k]][k] */
    tg_tensor *x = mkg(dt, D(2, 3, 2), NULL, "x"); /* x[i][j][k] = 6i + 2j + k + 0.5 */
    tg_tensor *y = tg_gather(tape, x, 1, (int64_t[]){2, 0, 1, 1, 0, 0, 2, 2}, D(2, 2, 2));
    EXPECT_SHAPE(y, 2, 2, 2);
    EXPECT_VALS(y, V(4.5, 1.5, 2.5, 3.5, 6.5, 7.5, 10.5, 11.5), 8, 0);
    backward_weighted(y);
    EXPECT_GRAD(x, V(0, 2, 3, 4, 1, 0, 5, 6, 0, 0, 7, 8), 12, 0);
    /* index_select along axis 1, repeated */
    reset();
    x = mkg(dt, D(2, 3, 2), NULL, "x");
    y = tg_index_select(tape, x, 1, (int64_t[]){2, 2}, 2);
    EXPECT_SHAPE(y, 2, 2, 2);
    EXPECT_VALS(y, V(4.5, 5.5, 4.5, 5.5, 10.5, 11.5, 10.5, 11.5), 8, 0);
    backward_weighted(y);
    EXPECT_GRAD(x, V(0, 0, 0, 0, 4, 6, 0, 0, 0, 0, 12, 14), 12, 0);
    /* concat along axis 1 of (2x1x3) and (2x2x3) */
    reset();
    tg_tensor *a = mkg(dt, D(2, 1, 3), V(1, 2, 3, 4, 5, 6), "a");
    tg_tensor *b = mkg(dt, D(2, 2, 3), V(11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22), "b");
    y = tg_concat(tape, (tg_tensor *[]){a, b}, 2, 1);
    EXPECT_SHAPE(y, 2, 3, 3);
    EXPECT_VALS(y, V(1, 2, 3, 11, 12, 13, 14, 15, 16, 4, 5, 6, 17, 18, 19, 20, 21, 22), 18, 0);
    backward_weighted(y);
    EXPECT_GRAD(a, V(1, 2, 3, 10, 11, 12), 6, 0);
    EXPECT_GRAD(b, V(4, 5, 6, 7, 8, 9, 13, 14, 15, 16, 17, 18), 12, 0);
    /* stack along axis 1 of two (2x2) */
    reset();
    a = mkg(dt, D(2, 2), V(1, 2, 3, 4), "a");
    b = mkg(dt, D(2, 2), V(5, 6, 7, 8), "b");
    y = tg_stack(tape, (tg_tensor *[]){a, b}, 2, 1);
    EXPECT_SHAPE(y, 2, 2, 2);
    EXPECT_VALS(y, V(1, 2, 5, 6, 3, 4, 7, 8), 8, 0);
    backward_weighted(y);
    EXPECT_GRAD(a, V(1, 2, 5, 6), 4, 0);
    EXPECT_GRAD(b, V(3, 4, 7, 8), 4, 0);
    /* pad the middle axis of (1x2x2) by (1, 1) */
    reset();
    x = mkg(dt, D(1, 2, 2), V(1, 2, 3, 4), "x");
    y = tg_pad(tape, x, (int64_t[]){0, 1, 0}, (int64_t[]){0, 1, 0}, -1);
    EXPECT_SHAPE(y, 1, 4, 2);
    EXPECT_VALS(y, V(-1, -1, 1, 2, 3, 4, -1, -1), 8, 0);
    backward_weighted(y);
    EXPECT_GRAD(x, V(3, 4, 5, 6), 4, 0);
    /* bmm with an empty batch is empty, as torch */
    reset();
    a = mk(dt, D(0, 2, 3), NULL, "a");
    b = mk(dt, D(0, 3, 4), NULL, "b");
    EXPECT_SHAPE(tg_bmm(tape, a, false, b, false), 0, 2, 4);
}
END_TEST

/* Sizes large enough for the threaded and vectorized paths, against loops in double over
 * the stored (dtype-rounded) inputs: sums of 300 terms of O(1) agree to 1e-12 relative in
 * float64 and 1e-4 in float32 (its own accumulation); the maximum is exact. */
START_TEST(large_reductions_and_softmax)
{
    tg_dtype dt = DT(_i);
    double tol = dt == F64 ? 1e-12 : 1e-4;
    enum { R = 67, C = 301 };
    double *v = malloc(R * C * sizeof *v), rs[R], cs[C], rmax[R], lse[R];
    tg_rng *rng = tg_rng_new(11);
    fill_uniform(v, R * C, rng, -4, 4);
    tg_tape_reset(tape);
    n_watch = 0;
    tg_tensor *x = tg_tensor_new(tape, dt, 2, (int64_t[]){R, C}, "x");
    tg_tensor_write(x, v, R * C);
    tg_tensor_read(x, v, R * C);
    for (int c = 0; c < C; c++)
        cs[c] = 0;
    for (int r = 0; r < R; r++) {
        rs[r] = 0;
        rmax[r] = -INFINITY;
        for (int c = 0; c < C; c++) {
            rs[r] += v[r * C + c];
            cs[c] += v[r * C + c];
            rmax[r] = fmax(rmax[r], v[r * C + c]);
        }
        double e = 0;
        for (int c = 0; c < C; c++)
            e += exp(v[r * C + c] - rmax[r]);
        lse[r] = rmax[r] + log(e);
    }
    EXPECT_VALS(tg_sum_axes(tape, x, (int[]){1}, 1, false), rs, R, tol);
    EXPECT_VALS(tg_sum_axes(tape, x, (int[]){0}, 1, false), cs, C, tol);
    EXPECT_VALS(tg_max_axes(tape, x, (int[]){-1}, 1, false), rmax, R, 0);
    EXPECT_VALS(tg_logsumexp(tape, x, (int[]){1}, 1, false), lse, R, tol);
    tg_tensor *sm = tg_softmax(tape, x, 1);
    no_error();
    for (int r = 0; r < R; r++) {
        double sum = 0;
        for (int c = 0; c < C; c++)
            sum += tg_tensor_get(sm, (size_t)(r * C + c));
        ck_assert_msg(fabs(sum - 1) <= tol, "row %d sums to %.17g", r, sum);
        for (int c = 0; c < C; c += 37)
            ck_assert(close_to(tg_tensor_get(sm, (size_t)(r * C + c)),
                               exp(v[r * C + c] - lse[r]), tol));
    }
    tg_rng_free(rng);
    free(v);
}
END_TEST

/* Sums of a few small integers: exact in both dtypes (var's thirds within one rounding). */
START_TEST(reductions_by_hand)
{
    tg_dtype dt = DT(_i);
    double tol = dt == F64 ? 1e-15 : 2e-7;
    tg_tensor *x = mkg(dt, D(2, 3), V(1, 5, 3, 4, 2, 6), "x");
    tg_tensor *y = tg_sum_axes(tape, x, (int[]){0}, 1, false);
    EXPECT_SHAPE(y, 3);
    EXPECT_VALS(y, V(5, 7, 9), 3, 0);
    y = tg_sum_axes(tape, x, (int[]){1}, 1, true);
    EXPECT_SHAPE(y, 2, 1);
    EXPECT_VALS(y, V(9, 12), 2, 0);
    y = tg_sum_axes(tape, x, NULL, 0, false);
    EXPECT_SHAPE(y, 1);
    EXPECT_VALS(y, V(21), 1, 0);
    y = tg_sum_axes(tape, x, (int[]){0, 1}, 2, false);
    EXPECT_SHAPE(y, 1);
    y = tg_sum_axes(tape, x, NULL, 0, true);
    EXPECT_SHAPE(y, 1, 1);
    y = tg_mean_axes(tape, x, (int[]){1}, 1, false);
    EXPECT_VALS(y, V(3, 4), 2, 0);
    EXPECT_VALS(tg_max_axes(tape, x, (int[]){1}, 1, false), V(5, 6), 2, 0);
    EXPECT_VALS(tg_min_axes(tape, x, (int[]){0}, 1, false), V(1, 2, 3), 3, 0);
    /* var: rows [1 5 3] and [4 2 6] have mean 3, 4 and Σ(x - mean)² = 8 each */
    EXPECT_VALS(tg_var(tape, x, (int[]){1}, 1, 1, false), V(4, 4), 2, tol);
    EXPECT_VALS(tg_var(tape, x, (int[]){1}, 1, 0, false), V(8.0 / 3, 8.0 / 3), 2, tol);
    /* all six: mean 3.5, Σ(x - mean)² = 17.5 */
    EXPECT_VALS(tg_var(tape, x, NULL, 0, 1, false), V(3.5), 1, tol);
    y = tg_var(tape, x, NULL, 0, 0, true);
    EXPECT_SHAPE(y, 1, 1);
    EXPECT_VALS(y, V(17.5 / 6), 1, tol);
    /* d var / dx = 2 (x - mean) / (N - correction) */
    backward_sum(tg_var(tape, x, NULL, 0, 1, false));
    EXPECT_GRAD(x, V(-1, 0.6, -0.2, 0.2, -0.6, 1), 6, tol);
    /* mean's gradient 1/N over the reduced axes */
    reset();
    x = mkg(dt, D(2, 3), V(1, 5, 3, 4, 2, 6), "x");
    backward_weighted(tg_mean_axes(tape, x, (int[]){0}, 1, false));
    EXPECT_GRAD(x, V(0.5, 1, 1.5, 0.5, 1, 1.5), 6, 0);
}
END_TEST

/* logsumexp against log Σ e^x in double (values of size 6: no overflow): rounding only. */
START_TEST(logsumexp_by_hand)
{
    tg_dtype dt = DT(_i);
    double tol = dt == F64 ? 1e-15 : 5e-7;
    tg_tensor *x = mkg(dt, D(2, 3), V(1, 5, 3, 4, 2, 6), "x");
    tg_tensor *y = tg_logsumexp(tape, x, (int[]){-1}, 1, false);
    EXPECT_SHAPE(y, 2);
    EXPECT_VALS(y, V(5.1429316284999, 6.142931628499899), 2, tol);
    backward_sum(y); /* the gradient is softmax of each row */
    double s0 = exp(1) + exp(5) + exp(3), s1 = exp(4) + exp(2) + exp(6);
    EXPECT_GRAD(x, V(exp(1) / s0, exp(5) / s0, exp(3) / s0, exp(4) / s1, exp(2) / s1, exp(6) / s1),
                6, tol);
    /* stable at ±1000 */
    reset();
    x = mkg(dt, D(2, 2), V(1000, 1000, -1000, -1000), "x");
    y = tg_logsumexp(tape, x, (int[]){1}, 1, true);
    EXPECT_SHAPE(y, 2, 1);
    EXPECT_VALS(y, V(1000 + LN2, -1000 + LN2), 2, dt == F64 ? 1e-15 : 1e-7);
    backward_sum(y);
    /* the gradient e^(x - lse), as PyTorch computes it, inherits lse's rounding at 1000:
     * ulp(1000)/2 = 5.7e-14 in float64, 3.1e-5 in float32 */
    EXPECT_GRAD(x, V(0.5, 0.5, 0.5, 0.5), 4, dt == F64 ? 1e-13 : 1e-4);
}
END_TEST

/* keepdims and negative axes over (2x3x4): loops in double give the reference (sums of
 * 0.5 … 23.5 are exact). */
START_TEST(keepdims_and_negative_axes)
{
    tg_dtype dt = DT(_i);
    tg_tensor *x = mk(dt, D(2, 3, 4), NULL, "x"); /* x[i][j][k] = 12i + 4j + k + 0.5 */
    double want[3] = {0, 0, 0};
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 3; j++)
            for (int k = 0; k < 4; k++)
                want[j] += 12 * i + 4 * j + k + 0.5;
    tg_tensor *y = tg_sum_axes(tape, x, (int[]){0, 2}, 2, false);
    EXPECT_SHAPE(y, 3);
    EXPECT_VALS(y, want, 3, 0);
    y = tg_sum_axes(tape, x, (int[]){-1, -3}, 2, false);
    EXPECT_SHAPE(y, 3);
    EXPECT_VALS(y, want, 3, 0);
    y = tg_sum_axes(tape, x, (int[]){2, 0}, 2, true);
    EXPECT_SHAPE(y, 1, 3, 1);
    EXPECT_VALS(y, want, 3, 0);
    y = tg_max_axes(tape, x, (int[]){-2}, 1, false);
    EXPECT_SHAPE(y, 2, 4);
    EXPECT_VALS(y, V(8.5, 9.5, 10.5, 11.5, 20.5, 21.5, 22.5, 23.5), 8, 0);
    y = tg_min_axes(tape, x, (int[]){1, 2}, 2, false);
    EXPECT_SHAPE(y, 2);
    EXPECT_VALS(y, V(0.5, 12.5), 2, 0);
    y = tg_mean_axes(tape, x, NULL, 0, false);
    EXPECT_SHAPE(y, 1);
    EXPECT_VALS(y, V(12), 1, 0);
    y = tg_mean_axes(tape, x, NULL, 0, true);
    EXPECT_SHAPE(y, 1, 1, 1);
    /* every axis named is the full reduction too */
    y = tg_max_axes(tape, x, (int[]){0, 1, -1}, 3, false);
    EXPECT_SHAPE(y, 1);
    EXPECT_VALS(y, V(23.5), 1, 0);
    /* a 4-D reduction over the middle two axes */
    tg_tensor *x4 = mk(dt, D(2, 2, 2, 2), NULL, "x4");
    y = tg_sum_axes(tape, x4, (int[]){1, -2}, 2, false);
    EXPECT_SHAPE(y, 2, 2);
    EXPECT_VALS(y, V(0.5 + 2.5 + 4.5 + 6.5, 1.5 + 3.5 + 5.5 + 7.5, 8.5 + 10.5 + 12.5 + 14.5,
                     9.5 + 11.5 + 13.5 + 15.5),
                4, 0);
    /* softmax / log_softmax along -1 and along 2 are the same */
    tg_tensor *s1 = tg_softmax(tape, x, -1), *s2 = tg_softmax(tape, x, 2);
    tg_tensor *l1 = tg_log_softmax(tape, x, -3), *l2 = tg_log_softmax(tape, x, 0);
    no_error();
    for (size_t i = 0; i < 24; i++) {
        ck_assert(tg_tensor_get(s1, i) == tg_tensor_get(s2, i));
        ck_assert(tg_tensor_get(l1, i) == tg_tensor_get(l2, i));
    }
}
END_TEST

/* Softmax rows sum to 1 and stay finite at |x| = 1000; the reference values come from
 * e^0, e^-1 in double (float32: one rounding of each of a few ops, 1e-6). */
START_TEST(softmax_stable)
{
    tg_dtype dt = DT(_i);
    double tol = dt == F64 ? 1e-15 : 1e-6;
    tg_tensor *x = mkg(dt, D(2, 3), V(1000, -1000, 0, 1000, 1000, 999), "x");
    tg_tensor *y = tg_softmax(tape, x, 1);
    EXPECT_SHAPE(y, 2, 3);
    const double p = 0.4223187982515182, q = 0.15536240349696362; /* 1/(2+e^-1), e^-1/(2+e^-1) */
    EXPECT_VALS(y, V(1, 0, 0, p, p, q), 6, tol);
    for (int r = 0; r < 2; r++) {
        double s = 0;
        for (int c = 0; c < 3; c++) {
            double v = tg_tensor_get(y, (size_t)(r * 3 + c));
            ck_assert(isfinite(v));
            s += v;
        }
        ck_assert_msg(fabs(s - 1) <= tol, "row %d sums to %.17g", r, s);
    }
    /* gradient of Σ y ⊙ R: dx = y ⊙ (R - Σ y R) */
    backward_weighted(y);
    double g[6], yv[6];
    for (size_t i = 0; i < 6; i++)
        yv[i] = tg_tensor_get(y, i);
    for (int r = 0; r < 2; r++) {
        double dot = 0;
        for (int c = 0; c < 3; c++)
            dot += yv[r * 3 + c] * (r * 3 + c + 1);
        for (int c = 0; c < 3; c++)
            g[r * 3 + c] = yv[r * 3 + c] * (r * 3 + c + 1 - dot);
    }
    EXPECT_GRAD(x, g, 6, dt == F64 ? 1e-14 : 1e-5);

    /* along axis 0 of a 3-D tensor: every fibre sums to 1 */
    reset();
    tg_tensor *x3 = mk(dt, D(3, 2, 2), V(1000, -1000, 5, 0, -1000, 1000, 5, 1, 0, 0, 5, 2), "x3");
    y = tg_softmax(tape, x3, 0);
    no_error();
    for (int f = 0; f < 4; f++) {
        double s = 0;
        for (int k = 0; k < 3; k++) {
            double v = tg_tensor_get(y, (size_t)(k * 4 + f));
            ck_assert(isfinite(v));
            s += v;
        }
        ck_assert_msg(fabs(s - 1) <= tol, "fibre %d sums to %.17g", f, s);
    }
    EXPECT_VALS(y, V(1, 0, 1.0 / 3, exp(-2) / (1 + exp(-1) + exp(-2)), 0, 1, 1.0 / 3,
                     exp(-1) / (1 + exp(-1) + exp(-2)), 0, 0, 1.0 / 3, 1 / (1 + exp(-1) + exp(-2))),
                12, tol);
}
END_TEST

START_TEST(log_softmax_stable)
{
    tg_dtype dt = DT(_i);
    double tol = dt == F64 ? 1e-15 : 1e-6; /* float32: -2000 and ln(2 + e^-1) to ~1 ulp */
    tg_tensor *x = mkg(dt, D(2, 3), V(1000, -1000, 0, 1000, 1000, 999), "x");
    tg_tensor *y = tg_log_softmax(tape, x, -1);
    const double l = -0.8619948040582511; /* -ln(2 + e^-1) */
    EXPECT_VALS(y, V(0, -2000, -1000, l, l, l - 1), 6, tol);
    for (size_t i = 0; i < 6; i++)
        ck_assert(isfinite(tg_tensor_get(y, i)));
    /* d Σ log_softmax ⊙ R = R - softmax · Σ R; finite */
    backward_weighted(y);
    const double p = 0.4223187982515182, q = 0.15536240349696362;
    EXPECT_GRAD(x, V(1 - 6, 2, 3, 4 - 15 * p, 5 - 15 * p, 6 - 15 * q), 6, dt == F64 ? 1e-13 : 1e-5);
}
END_TEST

/* Infinite scores as PyTorch: a -inf entry is a mask (softmax 0 there, the rest as without
 * it, finite gradients); logsumexp of all -inf is -inf and with a +inf is +inf
 * (torch.logsumexp zeroes an infinite maximum before subtracting it). Exact: e^0 and ½. */
START_TEST(infinities_like_pytorch)
{
    tg_dtype dt = DT(_i);
    tg_tensor *x = mkg(dt, D(2, 3), V(-INFINITY, 0, 0, 1, -INFINITY, 1), "x");
    tg_tensor *y = tg_softmax(tape, x, 1);
    EXPECT_VALS(y, V(0, 0.5, 0.5, 0.5, 0, 0.5), 6, 0);
    backward_weighted(y); /* y ⊙ (R - Σ y R) */
    EXPECT_GRAD(x, V(0, -0.25, 0.25, -0.5, 0, 0.5), 6, 0);
    reset();
    x = mkg(dt, D(1, 2), V(-INFINITY, 0), "x");
    y = tg_log_softmax(tape, x, -1);
    EXPECT_VALS(y, V(-INFINITY, 0), 2, 0);
    backward_weighted(y); /* R - softmax Σ R = (1 - 0, 2 - 3) */
    EXPECT_GRAD(x, V(1, -1), 2, 0);
    reset();
    x = mk(dt, D(3, 2), V(-INFINITY, -INFINITY, INFINITY, 0, -INFINITY, 0), "x");
    EXPECT_VALS(tg_logsumexp(tape, x, (int[]){1}, 1, false), V(-INFINITY, INFINITY, 0), 3, 0);
}
END_TEST

/* var over N <= correction elements is 0/0 = NaN in PyTorch, not an error; correction 0
 * of one element is 0. */
START_TEST(var_degenerate_like_pytorch)
{
    tg_dtype dt = DT(_i);
    tg_tensor *x = mk(dt, D(1, 3), V(1, 2, 4), "x");
    EXPECT_VALS(tg_var(tape, x, (int[]){0}, 1, 1, false), V(NAN, NAN, NAN), 3, 0);
    EXPECT_VALS(tg_var(tape, x, (int[]){0}, 1, 0, false), V(0, 0, 0), 3, 0);
    EXPECT_VALS(tg_var(tape, x, NULL, 0, 2, false), V(14.0 / 3), 1, dt == F64 ? 1e-15 : 2e-7);
}
END_TEST

/* softmax and log_softmax of an empty tensor whose other dims are huge are empty, forward and
 * backward, along every axis, and take no time (they once walked 2^60 empty rows), and so is
 * bmm with an empty batch axis beside a huge one (2^40 empty batches): timeouts found by
 * fuzz-graph, whose inputs are kept in its corpus. */
START_TEST(empty_with_huge_dims)
{
    tg_dtype dt = DT(_i);
    const int64_t dims[3] = {(int64_t)1 << 40, 0, (int64_t)1 << 20};
    for (int axis = 0; axis < 3; axis++)
        for (int log = 0; log < 2; log++) {
            reset();
            tg_tensor *x = tg_tensor_new(tape, dt, 3, dims, "x");
            tg_tensor_set_requires_grad(x, true);
            tg_tensor *y = log ? tg_log_softmax(tape, x, axis) : tg_softmax(tape, x, axis);
            ck_assert_uint_eq(tg_tensor_size(y), 0);
            ck_assert_int_eq(tg_tensor_dim(y, 0), dims[0]);
            ck_assert_int_eq(tg_backward(tape, tg_sum(tape, y)), TG_OK);
            no_error();
        }
    /* bmm with batch axes (2^40 x 0): an empty output, forward and backward (an -O2 build
     * may drop the empty loop by itself; the sanitizer builds keep it and timed out) */
    reset();
    tg_tensor *a = tg_tensor_new(tape, dt, 4, (int64_t[]){(int64_t)1 << 40, 0, 2, 3}, "a");
    tg_tensor *b = tg_tensor_new(tape, dt, 2, (int64_t[]){3, 4}, "b");
    tg_tensor_set_requires_grad(a, true);
    tg_tensor_set_requires_grad(b, true);
    tg_tensor *c = tg_bmm(tape, a, false, b, false);
    ck_assert_uint_eq(tg_tensor_size(c), 0);
    ck_assert_int_eq(tg_tensor_dim(c, 3), 4);
    ck_assert_int_eq(tg_backward(tape, tg_sum(tape, c)), TG_OK);
    no_error();
    ck_assert_double_eq(tg_tensor_grad_get(b, 0), 0); /* a sum over no batch */
}
END_TEST

/* bce_with_logits at |x| > 100: loss max(x,0) - xy + log1p(e^-|x|), gradient (σ(x) - y)/N
 * for x and -x/N for y; e^-150 underflows to nothing at double precision next to 1. The
 * results are sums of a few terms: an ulp or two (1e-15 float64, 1e-7 / 2e-7 float32). */
START_TEST(bce_with_logits_stable)
{
    tg_dtype dt = DT(_i);
    tg_tensor *x = mkg(dt, D(1, 4), V(200, -200, 150, -150), "x");
    tg_tensor *y = mkg(dt, D(1, 4), V(0, 1, 1, 0), "y");
    tg_tensor *l = tg_bce_with_logits(tape, x, y);
    EXPECT_SHAPE(l, 1, 1);
    EXPECT_VALS(l, V(100), 1, dt == F64 ? 1e-15 : 1e-7);
    backward_sum(l);
    EXPECT_GRAD(x, V(0.25, -0.25, 0, 0), 4, dt == F64 ? 1e-15 : 1e-7);
    EXPECT_GRAD(y, V(-50, 50, -37.5, 37.5), 4, dt == F64 ? 1e-15 : 1e-7);
    for (size_t i = 0; i < 4; i++)
        ck_assert(isfinite(tg_tensor_grad_get(x, i)) && isfinite(tg_tensor_grad_get(y, i)));
    /* moderate: x = [0, 1], y = [0, 1]: (ln 2 + ln(1 + e^-1)) / 2; soft targets too */
    reset();
    x = mkg(dt, D(2), V(0, 1), "x");
    y = mkg(dt, D(2), V(0, 1), "y");
    l = tg_bce_with_logits(tape, x, y);
    EXPECT_VALS(l, V(0.5032044340390841), 1, dt == F64 ? 1e-15 : 2e-7);
    backward_sum(l);
    EXPECT_GRAD(x, V(0.25, (0.7310585786300049 - 1) / 2), 2, dt == F64 ? 1e-15 : 2e-7);
    EXPECT_GRAD(y, V(0, -0.5), 2, 0);
}
END_TEST

/* Both losses compute lse - s[label] in double per example: equal to ~1 ulp. */
START_TEST(cross_entropy_equals_softmax_xent)
{
    tg_dtype dt = DT(_i);
    double tol = dt == F64 ? 1e-14 : 1e-6;
    tg_rng *rng = tg_rng_new(3);
    double v[20];
    fill_uniform(v, 20, rng, -3, 3);
    int32_t labels[5] = {2, 0, 3, 3, 1};
    for (int axis = 0; axis < 2; axis++) {
        reset();
        tg_tensor *s1 = axis ? mkg(dt, D(5, 4), v, "s1") : mkg(dt, D(4, 5), v, "s1");
        tg_tensor *s2 = axis ? mkg(dt, D(5, 4), v, "s2") : mkg(dt, D(4, 5), v, "s2");
        tg_tensor *a = tg_cross_entropy(tape, s1, labels, sizeof labels / sizeof labels[0], axis, NULL, 0);
        tg_tensor *b = tg_softmax_xent(tape, s2, labels, sizeof labels / sizeof labels[0], axis);
        no_error();
        EXPECT_SHAPE(a, 1, 1);
        ck_assert_msg(close_to(tg_tensor_item(a), tg_tensor_item(b), tol), "axis %d: %.17g vs %.17g",
                      axis, tg_tensor_item(a), tg_tensor_item(b));
        ck_assert_int_eq(tg_backward(tape, tg_add(tape, a, b)), TG_OK);
        for (size_t i = 0; i < 20; i++)
            ck_assert_msg(close_to(tg_tensor_grad_get(s1, i), tg_tensor_grad_get(s2, i), tol),
                          "axis %d grad %zu: %.17g vs %.17g", axis, i, tg_tensor_grad_get(s1, i),
                          tg_tensor_grad_get(s2, i));
    }
    tg_rng_free(rng);
}
END_TEST

/* cross_entropy with weight= and label_smoothing= against the header's formula, evaluated
 * here in double from a log-softmax done by hand; float32 to 1e-5 (a few dozen roundings). */
START_TEST(cross_entropy_weight_and_smoothing)
{
    tg_dtype dt = DT(_i);
    double tol = dt == F64 ? 1e-13 : 1e-5;
    const int B = 3, C = 4;
    const double s[12] = {1, 2, 0.5, -1, 0, 0, 3, 1, -2, 1, 1, 0.25};
    const int32_t labels[3] = {1, 2, 0};
    const double w[4] = {0.5, 2, 1, 0};
    const double eps_list[3] = {0, 0.1, 1};
    for (int e = 0; e < 3; e++)
        for (int weighted = 0; weighted < 2; weighted++) {
            double eps = eps_list[e];
            const double *wt = weighted ? w : NULL;
            double total = 0, z = 0, grad[12];
            for (int i = 0; i < B; i++) {
                double m = -INFINITY, sum = 0, lp[4], p[4], a[4], asum = 0;
                for (int c = 0; c < C; c++)
                    m = fmax(m, s[i * C + c]);
                for (int c = 0; c < C; c++)
                    sum += exp(s[i * C + c] - m);
                for (int c = 0; c < C; c++) {
                    lp[c] = s[i * C + c] - m - log(sum);
                    p[c] = exp(lp[c]);
                }
                for (int c = 0; c < C; c++) {
                    double wc = wt ? wt[c] : 1;
                    a[c] = (c == labels[i] ? (1 - eps) * wc : 0) + eps / C * wc;
                    total -= a[c] * lp[c];
                    asum += a[c];
                }
                for (int c = 0; c < C; c++)
                    grad[i * C + c] = p[c] * asum - a[c];
                z += wt ? wt[labels[i]] : 1;
            }
            for (int k = 0; k < 12; k++)
                grad[k] /= z;
            reset();
            tg_tensor *x = mkg(dt, D(3, 4), s, "s");
            tg_tensor *l = tg_cross_entropy(tape, x, labels, sizeof labels / sizeof labels[0], 1, wt, eps);
            ck_assert_msg(tg_tape_status(tape) == TG_OK, "eps %g weighted %d: %s", eps, weighted,
                          tg_tape_error(tape));
            ck_assert_msg(close_to(tg_tensor_item(l), total / z, tol),
                          "eps %g weighted %d: loss %.17g, expected %.17g", eps, weighted,
                          tg_tensor_item(l), total / z);
            backward_sum(l);
            EXPECT_GRAD(x, grad, 12, tol);
            /* the same with classes on axis 0: the transposed scores and gradient */
            reset();
            double st[12], gt[12];
            for (int i = 0; i < B; i++)
                for (int c = 0; c < C; c++) {
                    st[c * B + i] = s[i * C + c];
                    gt[c * B + i] = grad[i * C + c];
                }
            x = mkg(dt, D(4, 3), st, "sT");
            l = tg_cross_entropy(tape, x, labels, sizeof labels / sizeof labels[0], 0, wt, eps);
            EXPECT_VALS(l, V(total / z), 1, tol);
            backward_sum(l);
            EXPECT_GRAD(x, gt, 12, tol);
        }
}
END_TEST

/* nll_loss: Σ w[y] (-lp[y]) / Σ w[y], both class axes; sums of 3 terms: ~1 ulp. */
START_TEST(nll_loss_by_hand)
{
    tg_dtype dt = DT(_i);
    double tol = dt == F64 ? 1e-15 : 2e-7;
    const double lp[6] = {-0.5, -1, -2, -3, -0.25, -4}; /* (2x3): examples as rows */
    tg_tensor *x = mkg(dt, D(2, 3), lp, "lp");
    tg_tensor *l = tg_nll_loss(tape, x, (int32_t[]){2, 1}, 2, 1, NULL);
    EXPECT_SHAPE(l, 1, 1);
    EXPECT_VALS(l, V((2 + 0.25) / 2), 1, tol);
    backward_sum(l);
    EXPECT_GRAD(x, V(0, 0, -0.5, 0, -0.5, 0), 6, 0);
    /* with weights (1, 3, 0.5): (0.5·2 + 3·0.25) / 3.5 */
    reset();
    x = mkg(dt, D(2, 3), lp, "lp");
    l = tg_nll_loss(tape, x, (int32_t[]){2, 1}, 2, 1, (double[]){1, 3, 0.5});
    EXPECT_VALS(l, V((0.5 * 2 + 3 * 0.25) / 3.5), 1, tol);
    backward_sum(l);
    EXPECT_GRAD(x, V(0, 0, -0.5 / 3.5, 0, -3 / 3.5, 0), 6, tol);
    /* classes on axis 0: the same numbers transposed (3x2) */
    reset();
    x = mkg(dt, D(3, 2), V(-0.5, -3, -1, -0.25, -2, -4), "lpT");
    l = tg_nll_loss(tape, x, (int32_t[]){2, 1}, 2, 0, (double[]){1, 3, 0.5});
    EXPECT_VALS(l, V((0.5 * 2 + 3 * 0.25) / 3.5), 1, tol);
    backward_sum(l);
    EXPECT_GRAD(x, V(0, 0, 0, -3 / 3.5, -0.5 / 3.5, 0), 6, tol);
}
END_TEST

/* d = a - y = [0.5, 2, -3]: l1 5.5/3; huber δ=1: (0.125 + 1.5 + 2.5)/3; smooth_l1 β=2:
 * (0.0625 + 1 + 2)/3; β = 0 is l1. Exact binary fractions: only the /3 rounds. */
START_TEST(regression_losses_by_hand)
{
    tg_dtype dt = DT(_i);
    double tol = dt == F64 ? 1e-15 : 2e-7;
    const double av[3] = {1.5, 2, -1}, yv[3] = {1, 0, 2};
    tg_tensor *a = mkg(dt, D(3), av, "a"), *y = mkg(dt, D(3), yv, "y");
    tg_tensor *l = tg_l1(tape, a, y);
    EXPECT_VALS(l, V(5.5 / 3), 1, tol);
    backward_sum(l);
    EXPECT_GRAD(a, V(1.0 / 3, 1.0 / 3, -1.0 / 3), 3, tol);
    EXPECT_GRAD(y, V(-1.0 / 3, -1.0 / 3, 1.0 / 3), 3, tol);

    reset();
    a = mkg(dt, D(3), av, "a"), y = mkg(dt, D(3), yv, "y");
    l = tg_huber(tape, a, y, 1);
    EXPECT_VALS(l, V(4.125 / 3), 1, tol);
    backward_sum(l); /* d < δ: d; else δ sign(d) */
    EXPECT_GRAD(a, V(0.5 / 3, 1.0 / 3, -1.0 / 3), 3, tol);
    EXPECT_GRAD(y, V(-0.5 / 3, -1.0 / 3, 1.0 / 3), 3, tol);

    reset();
    a = mkg(dt, D(3), av, "a"), y = mkg(dt, D(3), yv, "y");
    l = tg_smooth_l1(tape, a, y, 2);
    EXPECT_VALS(l, V(3.0625 / 3), 1, tol);
    backward_sum(l); /* d < β: d/β; else sign(d) */
    EXPECT_GRAD(a, V(0.25 / 3, 1.0 / 3, -1.0 / 3), 3, tol);

    reset();
    a = mkg(dt, D(3), av, "a"), y = mkg(dt, D(3), yv, "y");
    l = tg_huber(tape, a, y, 2.5); /* δ = 2.5: 0.125 + 2 + 2.5·(3 - 1.25) */
    EXPECT_VALS(l, V((0.125 + 2 + 4.375) / 3), 1, tol);

    reset();
    a = mkg(dt, D(3), av, "a"), y = mkg(dt, D(3), yv, "y");
    l = tg_smooth_l1(tape, a, y, 0);
    EXPECT_VALS(l, V(5.5 / 3), 1, tol);
    backward_sum(l);
    EXPECT_GRAD(a, V(1.0 / 3, 1.0 / 3, -1.0 / 3), 3, tol);
}
END_TEST

/* Elementwise values and derivatives against libm in double: float64 to a few ulp (2e-15
 * relative, vmath.h's e^x is within 1.5 ulp), float32 to 1e-6 (ε = 6e-8, a few roundings). */
START_TEST(elementwise_by_hand)
{
    tg_dtype dt = DT(_i);
    double tol = dt == F64 ? 2e-15 : 1e-6;
    const double xv[4] = {-1, 0.5, 1, 2};
    struct {
        const char *name;
        tg_tensor *(*fn)(tg_tape *, tg_tensor *);
        double y[4], dy[4];
    } cases[] = {
        {"neg", tg_neg, {1, -0.5, -1, -2}, {-1, -1, -1, -1}},
        {"exp", tg_exp, {exp(-1), exp(0.5), exp(1), exp(2)}, {exp(-1), exp(0.5), exp(1), exp(2)}},
        {"square", tg_square, {1, 0.25, 1, 4}, {-2, 1, 2, 4}},
        {"abs", tg_abs, {1, 0.5, 1, 2}, {-1, 1, 1, 1}},
        {"silu", tg_silu,
         {-0.2689414213699951, 0.5 / (1 + exp(-0.5)), 0.7310585786300049, 2 / (1 + exp(-2))},
         {0.07232948812851325,
          (1 / (1 + exp(-0.5))) * (1 + 0.5 * (1 - 1 / (1 + exp(-0.5)))), 0.9276705118714869,
          (1 / (1 + exp(-2))) * (1 + 2 * (1 - 1 / (1 + exp(-2))))}},
        {"gelu_tanh", tg_gelu_tanh,
         {-0.15880800939172324, 0, 0.8411919906082768, 0},
         {-0.08296408384578255, 0, 1.0829640838457826, 0}},
    };
    /* gelu_tanh at 0.5 and 2 from the formula */
    for (int k = 1; k < 4; k += 2) {
        double z = xv[k], c = sqrt(2 / PI), u = c * (z + 0.044715 * z * z * z), t = tanh(u);
        cases[5].y[k] = 0.5 * z * (1 + t);
        cases[5].dy[k] = 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * c * (1 + 3 * 0.044715 * z * z);
    }
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        reset();
        tg_tensor *x = mkg(dt, D(2, 2), xv, "x");
        tg_tensor *y = cases[c].fn(tape, x);
        ck_assert_msg(tg_tape_status(tape) == TG_OK, "%s: %s", cases[c].name, tg_tape_error(tape));
        for (size_t i = 0; i < 4; i++)
            ck_assert_msg(close_to(tg_tensor_get(y, i), cases[c].y[i], tol),
                          "%s(%g) = %.17g, expected %.17g", cases[c].name, xv[i],
                          tg_tensor_get(y, i), cases[c].y[i]);
        backward_sum(y);
        for (size_t i = 0; i < 4; i++)
            ck_assert_msg(close_to(tg_tensor_grad_get(x, i), cases[c].dy[i], tol),
                          "%s'(%g) = %.17g, expected %.17g", cases[c].name, xv[i],
                          tg_tensor_grad_get(x, i), cases[c].dy[i]);
    }
    /* the domain-limited ones on positive inputs */
    reset();
    const double pv[3] = {0.25, 2, 4};
    tg_tensor *x = mkg(dt, D(3), pv, "x");
    backward_sum(tg_add(tape, tg_add(tape, tg_log(tape, x), tg_sqrt(tape, x)),
                        tg_add(tape, tg_log1p(tape, x), tg_pow(tape, x, 1.5))));
    for (size_t i = 0; i < 3; i++) {
        double z = pv[i], d = 1 / z + 0.5 / sqrt(z) + 1 / (1 + z) + 1.5 * sqrt(z);
        ck_assert_msg(close_to(tg_tensor_grad_get(x, i), d, tol), "d/dx at %g: %.17g vs %.17g", z,
                      tg_tensor_grad_get(x, i), d);
    }
    reset();
    x = mk(dt, D(3), pv, "x");
    EXPECT_VALS(tg_log(tape, x), V(log(0.25), log(2), log(4)), 3, tol);
    EXPECT_VALS(tg_sqrt(tape, x), V(0.5, sqrt(2), 2), 3, tol);
    EXPECT_VALS(tg_log1p(tape, x), V(log1p(0.25), log1p(2), log1p(4)), 3, tol);
    EXPECT_VALS(tg_pow(tape, x, 1.5), V(0.125, pow(2, 1.5), 8), 3, tol);
    /* log1p(1e-10) = 1e-10 - 5e-21: exact near 0, where ln(1 + x) would keep ~6 digits */
    double tiny = tg_tensor_get(tg_log1p(tape, mk(dt, D(1), V(1e-10), NULL)), 0) / 1e-10;
    ck_assert_msg(close_to(tiny, 0.99999999995, dt == F64 ? 1e-15 : 1e-6), "log1p(1e-10) = %.17g e-10",
                  tiny);
    /* elu below 0 and above */
    reset();
    x = mkg(dt, D(2), V(-1, 2), "x");
    tg_tensor *y = tg_elu(tape, x, 0.5);
    EXPECT_VALS(y, V(-0.31606027941427883, 2), 2, tol);
    backward_sum(y);
    EXPECT_GRAD(x, V(0.18393972058572117, 1), 2, tol);
    /* div: a/b, da = 1/b, db = -a/b² */
    reset();
    tg_tensor *a = mkg(dt, D(2, 2), V(1, -2, 3, 4), "a"), *b = mkg(dt, D(1, 2), V(2, -4), "b");
    y = tg_div(tape, a, b);
    EXPECT_VALS(y, V(0.5, 0.5, 1.5, -1), 4, 0);
    backward_sum(y);
    EXPECT_GRAD(a, V(0.5, -0.25, 0.5, -0.25), 4, 0);
    EXPECT_GRAD(b, V(-(1 + 3) / 4.0, -(-2 + 4) / 16.0), 2, 0);
}
END_TEST

/* bmm against tg_matmul_t on each batch's matrices (on a second tape), values and gradients
 * of Σ C ⊙ R. The products have k <= 5 terms of O(1): 1e-14 in float64 allows another
 * summation order, 1e-5 in float32. */
static void
bmm_vs_matmul_t(tg_dtype dt, int na, const int64_t *da, bool ta, int nb, const int64_t *db,
                bool tb)
{
    double tol = dt == F64 ? 1e-14 : 1e-5;
    tg_rng *rng = tg_rng_new(17 + (uint64_t)(na * 8 + nb * 4 + ta * 2 + tb));
    size_t sa = dims_size(na, da), sb = dims_size(nb, db);
    double *va = malloc(sa * sizeof *va), *vb = malloc(sb * sizeof *vb);
    fill_uniform(va, sa, rng, -1, 1);
    fill_uniform(vb, sb, rng, -1, 1);
    int64_t ra = da[na - 2], ca = da[na - 1], rb = db[nb - 2], cb = db[nb - 1];
    int64_t m = ta ? ca : ra, n = tb ? rb : cb;
    int nba = na - 2, nbb = nb - 2, nbo = nba > nbb ? nba : nbb;
    int64_t bo[TG_MAX_DIMS], ba[TG_MAX_DIMS], bb[TG_MAX_DIMS];
    for (int i = 0; i < nbo; i++) {
        int ia = i - (nbo - nba), ib = i - (nbo - nbb);
        ba[i] = ia >= 0 ? da[ia] : 1;
        bb[i] = ib >= 0 ? db[ib] : 1;
        bo[i] = ba[i] > bb[i] ? ba[i] : bb[i];
    }
    size_t nbatch = dims_size(nbo, bo);

    reset();
    tg_tensor *A = tg_tensor_new(tape, dt, na, da, "A"), *B = tg_tensor_new(tape, dt, nb, db, "B");
    tg_tensor_write(A, va, sa);
    tg_tensor_write(B, vb, sb);
    tg_tensor_set_requires_grad(A, true);
    tg_tensor_set_requires_grad(B, true);
    tg_tensor *C = tg_bmm(tape, A, ta, B, tb);
    no_error();
    ck_assert_int_eq(tg_tensor_ndim(C), nbo + 2);
    for (int i = 0; i < nbo; i++)
        ck_assert_int_eq(tg_tensor_dim(C, i), bo[i]);
    ck_assert_int_eq(tg_tensor_dim(C, nbo), m);
    ck_assert_int_eq(tg_tensor_dim(C, nbo + 1), n);
    size_t sc = tg_tensor_size(C);
    double *vr = malloc(sc * sizeof *vr);
    fill_uniform(vr, sc, rng, -1, 1);
    int64_t dc[TG_MAX_DIMS];
    for (int i = 0; i < nbo + 2; i++)
        dc[i] = tg_tensor_dim(C, i);
    tg_tensor *R = tg_tensor_new(tape, dt, nbo + 2, dc, "R");
    tg_tensor_write(R, vr, sc);
    ck_assert_int_eq(tg_backward(tape, tg_sum(tape, tg_mul(tape, C, R))), TG_OK);

    tg_tape *t2 = tg_tape_new();
    size_t na_b = dims_size(nba, da), nb_b = dims_size(nbb, db);
    tg_tensor *Am[8], *Bm[8];
    ck_assert(na_b <= 8 && nb_b <= 8);
    for (size_t k = 0; k < na_b; k++) {
        Am[k] = tg_matrix(t2, dt, ra, ca, NULL, NULL);
        tg_tensor_write(Am[k], va + k * (size_t)(ra * ca), (size_t)(ra * ca));
        tg_tensor_set_requires_grad(Am[k], true);
    }
    for (size_t k = 0; k < nb_b; k++) {
        Bm[k] = tg_matrix(t2, dt, rb, cb, NULL, NULL);
        tg_tensor_write(Bm[k], vb + k * (size_t)(rb * cb), (size_t)(rb * cb));
        tg_tensor_set_requires_grad(Bm[k], true);
    }
    tg_tensor *acc = NULL;
    for (size_t o = 0; o < nbatch; o++) {
        /* unravel o over bo, then ravel into A's and B's batch dims (size-1 axes broadcast) */
        size_t rem = o, ia = 0, ib = 0, sta = 1, stb = 1;
        for (int i = nbo - 1; i >= 0; i--) {
            size_t idx = rem % (size_t)bo[i];
            rem /= (size_t)bo[i];
            if (i - (nbo - nba) >= 0) {
                ia += (ba[i] == 1 ? 0 : idx) * sta;
                sta *= (size_t)ba[i];
            }
            if (i - (nbo - nbb) >= 0) {
                ib += (bb[i] == 1 ? 0 : idx) * stb;
                stb *= (size_t)bb[i];
            }
        }
        tg_tensor *co = tg_matmul_t(t2, Am[ia], ta, Bm[ib], tb);
        tg_tensor *ro = tg_matrix(t2, dt, m, n, NULL, NULL);
        tg_tensor_write(ro, vr + o * (size_t)(m * n), (size_t)(m * n));
        ck_assert_msg(!tg_tape_error(t2), "%s", tg_tape_error(t2));
        for (size_t e = 0; e < (size_t)(m * n); e++)
            ck_assert_msg(close_to(tg_tensor_get(C, o * (size_t)(m * n) + e), tg_tensor_get(co, e),
                                   tol),
                          "batch %zu element %zu: bmm %.17g, matmul_t %.17g", o, e,
                          tg_tensor_get(C, o * (size_t)(m * n) + e), tg_tensor_get(co, e));
        tg_tensor *part = tg_sum(t2, tg_mul(t2, co, ro));
        acc = acc ? tg_add(t2, acc, part) : part;
    }
    ck_assert_int_eq(tg_backward(t2, acc), TG_OK);
    for (size_t k = 0; k < na_b; k++)
        for (size_t e = 0; e < (size_t)(ra * ca); e++)
            ck_assert_msg(close_to(tg_tensor_grad_get(A, k * (size_t)(ra * ca) + e),
                                   tg_tensor_grad_get(Am[k], e), tol),
                          "dA batch %zu element %zu: %.17g vs %.17g", k, e,
                          tg_tensor_grad_get(A, k * (size_t)(ra * ca) + e),
                          tg_tensor_grad_get(Am[k], e));
    for (size_t k = 0; k < nb_b; k++)
        for (size_t e = 0; e < (size_t)(rb * cb); e++)
            ck_assert_msg(close_to(tg_tensor_grad_get(B, k * (size_t)(rb * cb) + e),
                                   tg_tensor_grad_get(Bm[k], e), tol),
                          "dB batch %zu element %zu: %.17g vs %.17g", k, e,
                          tg_tensor_grad_get(B, k * (size_t)(rb * cb) + e),
                          tg_tensor_grad_get(Bm[k], e));
    tg_tape_free(t2);
    free(va);
    free(vb);
    free(vr);
    tg_rng_free(rng);
}

START_TEST(bmm_matches_matmul_t)
{
    tg_dtype dt = DT(_i);
    for (int t = 0; t < 4; t++) {
        bool ta = t & 1, tb = t >> 1;
        /* (3 x 2x4)·(3 x 4x5), the flags choosing which stored shape is transposed */
        bmm_vs_matmul_t(dt, 3, ta ? (int64_t[]){3, 4, 2} : (int64_t[]){3, 2, 4}, ta, 3,
                        tb ? (int64_t[]){3, 5, 4} : (int64_t[]){3, 4, 5}, tb);
        /* a 2-D right operand shared by every batch, and a 2-D left one */
        bmm_vs_matmul_t(dt, 3, ta ? (int64_t[]){3, 4, 2} : (int64_t[]){3, 2, 4}, ta, 2,
                        tb ? (int64_t[]){5, 4} : (int64_t[]){4, 5}, tb);
        bmm_vs_matmul_t(dt, 2, ta ? (int64_t[]){4, 2} : (int64_t[]){2, 4}, ta, 3,
                        tb ? (int64_t[]){3, 5, 4} : (int64_t[]){3, 4, 5}, tb);
    }
    /* batch broadcasting: (2x1 x 3x4)·(3 x 4x2) -> (2x3 x 3x2); (1x2 x 2x3)·(2x1 x 3x1) */
    bmm_vs_matmul_t(dt, 4, (int64_t[]){2, 1, 3, 4}, false, 3, (int64_t[]){3, 4, 2}, false);
    bmm_vs_matmul_t(dt, 4, (int64_t[]){1, 2, 2, 3}, false, 4, (int64_t[]){2, 1, 3, 1}, false);
    bmm_vs_matmul_t(dt, 4, (int64_t[]){2, 1, 4, 3}, true, 4, (int64_t[]){1, 3, 2, 4}, true);
}
END_TEST

/* ======================================================================================
 * 4. A warm step through the new ops allocates nothing.
 */
static atomic_size_t n_allocs; /* pool workers may allocate too */
static void *count_malloc(size_t n, void *ctx) { (void)ctx; n_allocs++; return malloc(n); }
static void *count_realloc(void *p, size_t n, void *ctx) { (void)ctx; n_allocs++; return realloc(p, n); }
static void count_free(void *p, void *ctx) { (void)ctx; free(p); }
static const tg_allocator counting = {count_malloc, count_realloc, count_free, NULL};

struct model {
    tg_tensor *E, *W, *g;
};

/* An embedding, a batched matmul and most of the new ops, down to one loss. */
static tg_tensor *
model_loss(tg_tape *t, const struct model *md, tg_dtype dt)
{
    static const int64_t tokens[6] = {0, 3, 5, 3, 1, 2};
    static const int32_t labels[9] = {0, 3, 1, 2, 2, 0, 1, 3, 0};
    static const int64_t pick[9] = {1, 0, 3, 2, 2, 1, 0, 0, 3};
    static const double weight[4] = {1, 0.5, 2, 1};
    static const double maskv[9] = {1, 0, 1, 1, 0, 0, 1, 0, 1};
    double targetv[18];
    for (int i = 0; i < 18; i++)
        targetv[i] = (i % 3) * 0.5;

    tg_tensor *emb = tg_index_select(t, md->E, 0, tokens, 6);           /* (6x4) */
    tg_tensor *x3 = tg_reshape(t, emb, 3, (int64_t[]){2, 3, -1});        /* (2x3x4) */
    tg_tensor *h = tg_bmm(t, x3, false, md->W, false);                   /* (2x3x3) */
    tg_tensor *gb = tg_expand(t, tg_reshape(t, md->g, 3, (int64_t[]){1, 1, 3}), 3,
                              (int64_t[]){2, 3, 3});
    h = tg_clamp(t, tg_permute(t, tg_add(t, h, gb), (int[]){0, 2, 1}), -4, 4);
    tg_tensor *parts[5] = {tg_exp(t, tg_neg(t, tg_square(t, h))), tg_silu(t, h),
                           tg_elu(t, h, 1.0), tg_gelu_tanh(t, h), tg_abs(t, h)};
    tg_tensor *st = tg_stack(t, parts, 5, 0);                            /* (5x2x3x3) */
    tg_tensor *lse = tg_logsumexp(t, st, (int[]){0}, 1, false);          /* (2x3x3) */
    tg_tensor *flat = tg_reshape(t, lse, 2, (int64_t[]){6, 3});          /* (6x3) */
    tg_tensor *logits = tg_pad(t, flat, (int64_t[]){0, 0}, (int64_t[]){0, 1}, 0.0); /* (6x4) */
    tg_tensor *top = tg_slice(t, logits, (int64_t[]){0, 0}, (int64_t[]){TG_END, TG_END},
                              (int64_t[]){2, 1});                        /* (3x4) */
    tg_tensor *cat = tg_concat(t, (tg_tensor *[]){logits, top}, 2, 0);   /* (9x4) */

    tg_tensor *ce = tg_cross_entropy(t, cat, labels, sizeof labels / sizeof labels[0], 1, weight, 0.1);
    tg_tensor *nll = tg_nll_loss(t, tg_log_softmax(t, cat, 1), labels, sizeof labels / sizeof labels[0], 1, NULL);
    tg_tensor *picked = tg_gather(t, tg_softmax(t, cat, -1), 1, pick, 2, (int64_t[]){9, 1});
    tg_tensor *mx = tg_max_axes(t, cat, (int[]){1}, 1, true);            /* (9x1) */
    tg_tensor *mn = tg_min_axes(t, cat, (int[]){-1}, 1, true);
    tg_tensor *mask = tg_tensor_new(t, dt, 2, (int64_t[]){9, 1}, "mask");
    tg_tensor_write(mask, maskv, 9);
    tg_tensor *w = tg_where(t, mask, tg_maximum(t, mx, picked), tg_minimum(t, mn, picked));
    tg_tensor *den = tg_sqrt(t, tg_log1p(t, tg_square(t, tg_detach(t, mx))));
    tg_tensor *one = tg_tensor_new(t, dt, 1, (int64_t[]){1}, "one");
    tg_tensor_fill(one, 1);
    tg_tensor *ratio = tg_div(t, w, tg_add(t, den, one));
    tg_tensor *target = tg_tensor_new(t, dt, 2, (int64_t[]){6, 3}, "target");
    tg_tensor_write(target, targetv, 18);

    tg_tensor *terms[10] = {
        ce,
        nll,
        tg_var(t, cat, NULL, 0, 1, false),
        tg_bce_with_logits(t, flat, target),
        tg_huber(t, flat, target, 1.0),
        tg_l1(t, flat, target),
        tg_smooth_l1(t, flat, target, 0.5),
        tg_mean_axes(t, ratio, NULL, 0, false),
        tg_sum_axes(t, tg_pow(t, tg_abs(t, w), 1.5), NULL, 0, false),
        tg_sum(t, tg_log(t, tg_add(t, tg_abs(t, picked), one))),
    };
    tg_tensor *loss = terms[0];
    for (int i = 1; i < 10; i++)
        loss = tg_add(t, loss, terms[i]);
    return loss;
}

START_TEST(warm_step_allocates_nothing)
{
    tg_dtype dt = DT(_i);
    tg_set_allocator(&counting);
    tg_rng *rng = tg_rng_new(5);
    tg_params *p = tg_params_new(dt);
    struct model md = {
        tg_params_add(p, "E", 2, (int64_t[]){6, 4}),
        tg_params_add(p, "W", 2, (int64_t[]){4, 3}),
        tg_params_add(p, "g", 1, (int64_t[]){3}),
    };
    tg_tensor_fill_uniform(md.E, rng, -1, 1);
    tg_tensor_fill_uniform(md.W, rng, -1, 1);
    tg_tensor_fill_uniform(md.g, rng, -0.5, 0.5);
    tg_sgd *opt = tg_sgd_new(p, &(tg_sgd_options){.lr = 0.05, .momentum = 0.9}, NULL);
    ck_assert_ptr_nonnull(opt);
    tg_tape *t = tg_tape_new();
    size_t before = 0, nodes = 0, arena = 0;
    for (int step = 0; step < 4; step++) {
        if (step == 1)
            before = n_allocs;
        tg_tape_reset(t);
        tg_tensor *loss = model_loss(t, &md, dt);
        tg_backward(t, loss);
        ck_assert_msg(!tg_tape_error(t), "step %d: %s", step, tg_tape_error(t));
        ck_assert(isfinite(tg_tensor_item(loss)));
        ck_assert_int_eq(tg_sgd_step(opt), TG_OK);
        if (step == 0) {
            nodes = tg_tape_node_count(t);
            arena = tg_tape_arena_bytes(t);
        }
        ck_assert_uint_eq(tg_tape_node_count(t), nodes);
    }
    size_t warm = n_allocs - before;
    tg_tape_free(t);
    tg_sgd_free(opt);
    tg_params_free(p);
    tg_rng_free(rng);
    tg_set_allocator(NULL);
    ck_assert_msg(warm == 0, "%zu allocations in 3 warm steps", warm);
    ck_assert_uint_gt(nodes, 40);
    (void)arena;
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("algebra");
    TCase *tc = tcase_create("bad input");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, reduce_bad_axes, 0, N_REDUCTIONS);
    tcase_add_test(tc, softmax_bad_axis);
    tcase_add_test(tc, concat_stack_bad_axis);
    tcase_add_test(tc, index_bad_axis);
    tcase_add_test(tc, reshape_bad_counts);
    tcase_add_test(tc, slice_out_of_bounds);
    tcase_add_test(tc, concat_stack_shapes_differ);
    tcase_add_test(tc, index_out_of_range);
    tcase_add_test(tc, permute_not_a_permutation);
    tcase_add_test(tc, expand_incompatible);
    tcase_add_test(tc, pad_negative_width);
    tcase_add_test(tc, bmm_bad_shapes);
    tcase_add_test(tc, where_not_broadcastable);
    tcase_add_loop_test(tc, loss_shapes_differ, 0, N_LOSSES2);
    tcase_add_test(tc, class_losses_bad_labels);
    tcase_add_test(tc, class_losses_bad_constants);
    tcase_add_test(tc, nonfinite_constants);
    tcase_add_test(tc, loss_constants_out_of_range);
    suite_add_tcase(s, tc);

    /* loop index 0: float64, 1: float32 */
    tc = tcase_create("values as pytorch");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, domain_edges_like_pytorch, 0, 2);
    tcase_add_loop_test(tc, clamp_like_pytorch, 0, 2);
    tcase_add_loop_test(tc, kinks_like_pytorch, 0, 2);
    tcase_add_loop_test(tc, maximum_minimum_ties, 0, 2);
    tcase_add_loop_test(tc, max_min_axes_ties, 0, 2);
    tcase_add_loop_test(tc, infinities_like_pytorch, 0, 2);
    tcase_add_loop_test(tc, var_degenerate_like_pytorch, 0, 2);
    tcase_add_loop_test(tc, empty_with_huge_dims, 0, 2);
    suite_add_tcase(s, tc);

    tc = tcase_create("semantics");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, reshape_is_a_view, 0, 2);
    tcase_add_loop_test(tc, detach_stops_gradients, 0, 2);
    tcase_add_loop_test(tc, index_select_accumulates, 0, 2);
    tcase_add_loop_test(tc, gather_values_and_gradient, 0, 2);
    tcase_add_loop_test(tc, join_many_inputs, 0, 2);
    tcase_add_loop_test(tc, join_mixed_sizes_and_repeats, 0, 2);
    tcase_add_loop_test(tc, slice_with_step, 0, 2);
    tcase_add_loop_test(tc, pad_values_and_gradient, 0, 2);
    tcase_add_loop_test(tc, expand_and_permute, 0, 2);
    tcase_add_loop_test(tc, where_values_and_gradient, 0, 2);
    tcase_add_loop_test(tc, middle_axis_3d, 0, 2);
    tcase_add_loop_test(tc, large_reductions_and_softmax, 0, 2);
    tcase_add_loop_test(tc, reductions_by_hand, 0, 2);
    tcase_add_loop_test(tc, logsumexp_by_hand, 0, 2);
    tcase_add_loop_test(tc, keepdims_and_negative_axes, 0, 2);
    tcase_add_loop_test(tc, softmax_stable, 0, 2);
    tcase_add_loop_test(tc, log_softmax_stable, 0, 2);
    tcase_add_loop_test(tc, bce_with_logits_stable, 0, 2);
    tcase_add_loop_test(tc, cross_entropy_equals_softmax_xent, 0, 2);
    tcase_add_loop_test(tc, cross_entropy_weight_and_smoothing, 0, 2);
    tcase_add_loop_test(tc, nll_loss_by_hand, 0, 2);
    tcase_add_loop_test(tc, regression_losses_by_hand, 0, 2);
    tcase_add_loop_test(tc, elementwise_by_hand, 0, 2);
    tcase_add_loop_test(tc, bmm_matches_matmul_t, 0, 2);
    suite_add_tcase(s, tc);

    tc = tcase_create("allocation");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, warm_step_allocates_nothing, 0, 2);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
