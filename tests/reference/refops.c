/*
 * refops: one random float64 graph per seed over the tensor-algebra ops (every op of the
 * "Tensor algebra" section of <tapegrad/tapegrad.h>), built through the public API on shapes
 * of rank 1-4; runs forward and backward and prints the computation as a trace for
 * tests/reference/torch_ref_ops.py, which replays it with PyTorch's own functions in float64
 * and compares every op's value and gradient, the loss, every leaf's gradient and H·v (tg_hvp,
 * both modes) with H the loss's Hessian w.r.t. all leaves jointly.
 *
 *   refops SEED      one graph
 *
 * The graph: 5 chains of 1-3 ops. Each chain's first op is chosen by rotation (seed·5 + chain
 * mod N_OPS), so every op heads a chain in any 11 consecutive seeds; later ops are drawn at
 * random and take the previous output as their input where its shape and values suit them (a
 * fresh leaf otherwise); a loss ends its chain. Every tested op's output y adds sum(R ⊙ y) to
 * the loss, R a fixed random constant of y's shape, so every element of every output carries
 * its own gradient (a loss op adds R · loss). The glue (mul, sum, add) is the long-tested
 * 2-D-era ops; detach is checked as x ⊙ detach(x), whose gradient is R ⊙ x, not 2 R ⊙ x.
 *
 * Trace lines (ids dense, in creation order; shapes as NDIM D0 .. D(NDIM-1)):
 *   leaf ID NDIM D.. : v...                  a tensor that requires a gradient
 *   const ID NDIM D.. : v...                 a constant (mask, R): no gradient
 *   op ID NAME NDIM D.. KEY=VAL... : IN...   one recorded op, its output shape and attributes
 *   loss ID VALUE
 *   grad ID g...        d(loss)/d(leaf), one line per leaf
 *   val ID v...         the value of op ID's output
 *   ograd ID g...       d(loss)/d(op ID's output), where tapegrad kept one
 *   dir ID v...         the leaf's part of the direction v, standard normal
 *   hvp_for ID h...     the leaf's part of H·v, forward over reverse
 *   hvp_ror ID h...     the same, reverse over reverse
 *   hvp_error MODE MESSAGE  in place of the lines from MODE (hvp_for, hvp_ror) on: tg_hvp's
 *                       error (torch_ref_ops.py skips the comparison when it names an op
 *                       without a differentiable VJP, tg_op.vjp_graph, and fails otherwise)
 * Attribute lists are comma-separated ("axes=0,-1", "axes=all" for every axis, "stop=end" for
 * TG_END); doubles are printed with %.17g, so they round-trip.
 *
 * Values are kept where both sides compute them to near full precision: log, sqrt and
 * fractional powers see inputs >= 0.05, denominators and negative powers |x| >= 0.3, exp
 * inputs < 3. Ops whose derivative jumps (abs, clamp, maximum/minimum, max/min reductions)
 * only take inputs that are bit-exact on both sides (leaves, or leaves moved by shape ops),
 * so a tie here is a tie in torch too; ties are then made on purpose (copied or quantized
 * values), as are the other kink points (abs at 0, clamp at its bounds, l1 at d = 0).
 */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tapegrad/op.h>
#include <tapegrad/tapegrad.h>

#define MAX_IDS 2048
#define N_CHAINS 5
#define MAX_CHAIN_ELEMS 200 /* a larger output ends its chain, keeping every graph small */

enum { K_LEAF, K_CONST, K_OP };

static tg_tape *tape;
static tg_rng *rng;
static unsigned long long seed;
static tg_tensor *ids[MAX_IDS];
static unsigned char kinds[MAX_IDS];
/* Bit-identical in torch: leaves, and what shape ops (and neg/abs/clamp/max/min) make of
 * them. Only such values may meet a kink, where one ulp of difference would flip a branch. */
static bool exact[MAX_IDS];
static int n_ids;

typedef struct shape {
    int ndim;
    int64_t d[TG_MAX_DIMS];
} shape;

/* ---- the trace ---- */

static void
fail(const char *what)
{
    fprintf(stderr, "refops: seed %llu: %s: %s\n", seed, what,
            tg_tape_error(tape) ? tg_tape_error(tape) : "(no message)");
    exit(2);
}

static int
new_id(tg_tensor *x, int kind)
{
    if (n_ids == MAX_IDS) {
        fprintf(stderr, "refops: seed %llu: too many tensors\n", seed);
        exit(2);
    }
    ids[n_ids] = x;
    kinds[n_ids] = (unsigned char)kind;
    return n_ids++;
}

static shape
shape_of(int id)
{
    shape s = {tg_tensor_ndim(ids[id]), {0}};
    for (int i = 0; i < s.ndim; i++)
        s.d[i] = tg_tensor_dim(ids[id], i);
    return s;
}

static size_t
numel(const shape *s)
{
    size_t n = 1;
    for (int i = 0; i < s->ndim; i++)
        n *= (size_t)s->d[i];
    return n;
}

static void
print_shape(const tg_tensor *x)
{
    printf(" %d", tg_tensor_ndim(x));
    for (int i = 0; i < tg_tensor_ndim(x); i++)
        printf(" %lld", (long long)tg_tensor_dim(x, i));
}

static void
print_values(const tg_tensor *x, bool grad)
{
    for (size_t i = 0; i < tg_tensor_size(x); i++)
        printf(" %.17g", grad ? tg_tensor_grad_get(x, i) : tg_tensor_get(x, i));
}

/* Attributes of the next recorded op, appended as " key=value" tokens. */
static char attrs[1 << 15];
static size_t attrs_len;

static void
attr(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(attrs + attrs_len, sizeof attrs - attrs_len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof attrs - attrs_len) {
        fprintf(stderr, "refops: seed %llu: attributes too long\n", seed);
        exit(2);
    }
    attrs_len += (size_t)n;
}

static void
attr_ints(const char *key, const int *v, int n)
{
    attr(" %s=", key);
    for (int i = 0; i < n; i++)
        attr(i ? ",%d" : "%d", v[i]);
}

static void
attr_i64s(const char *key, const int64_t *v, size_t n)
{
    attr(" %s=", key);
    for (size_t i = 0; i < n; i++)
        attr(i ? ",%lld" : "%lld", (long long)v[i]);
}

static void
attr_doubles(const char *key, const double *v, size_t n)
{
    attr(" %s=", key);
    for (size_t i = 0; i < n; i++)
        attr(i ? ",%.17g" : "%.17g", v[i]);
}

/* A tensor of shape s, not yet in the trace: the caller fills it, then emits it. */
static tg_tensor *
fresh(const shape *s, double lo, double hi)
{
    tg_tensor *x = tg_tensor_new(tape, TG_F64, s->ndim, s->d, NULL);
    if (tg_tape_status(tape) != TG_OK)
        fail("tg_tensor_new");
    if (tg_tensor_fill_uniform(x, rng, lo, hi) != TG_OK) {
        fprintf(stderr, "refops: seed %llu: tg_tensor_fill_uniform failed\n", seed);
        exit(2);
    }
    return x;
}

static int
emit(tg_tensor *x, int kind)
{
    if (kind == K_LEAF)
        tg_tensor_set_requires_grad(x, true);
    int id = new_id(x, kind);
    exact[id] = true;
    printf("%s %d", kind == K_LEAF ? "leaf" : "const", id);
    print_shape(x);
    printf(" :");
    print_values(x, false);
    printf("\n");
    return id;
}

static int
leaf(const shape *s, double lo, double hi)
{
    return emit(fresh(s, lo, hi), K_LEAF);
}

/* Records the op line for y = NAME(attrs; in...) and clears the attributes. */
static int
op(tg_tensor *y, const char *name, const int *in, int n_in)
{
    if (tg_tape_status(tape) != TG_OK)
        fail(name);
    int id = new_id(y, K_OP);
    printf("op %d %s", id, name);
    print_shape(y);
    printf("%s :", attrs);
    for (int i = 0; i < n_in; i++)
        printf(" %d", in[i]);
    printf("\n");
    attrs_len = 0;
    attrs[0] = '\0';
    return id;
}

static int
op1(tg_tensor *y, const char *name, int a)
{
    return op(y, name, &a, 1);
}

static int
op2(tg_tensor *y, const char *name, int a, int b)
{
    int in[2] = {a, b};
    return op(y, name, in, 2);
}

/* ---- random shapes and values ---- */

static int
irand(int lo, int hi) /* in [lo, hi] */
{
    return lo + (int)(tg_rng_u64(rng) % (uint64_t)(hi - lo + 1));
}

static double
urand(double lo, double hi)
{
    return lo + (hi - lo) * tg_rng_uniform(rng);
}

static bool
chance(int n) /* true with probability 1/n */
{
    return irand(1, n) == 1;
}

static int
max_dim(int ndim) /* keeps a rank-4 tensor at <= 81 elements */
{
    static const int m[TG_MAX_DIMS + 1] = {1, 6, 5, 4, 3};
    return m[ndim];
}

static shape
rand_shape(int lo_rank, int hi_rank)
{
    shape s = {irand(lo_rank, hi_rank), {0}};
    for (int i = 0; i < s.ndim; i++)
        s.d[i] = irand(1, max_dim(s.ndim));
    return s;
}

static double *
data(int id)
{
    return tg_tensor_data(ids[id]);
}

static double
min_of(int id, bool absolute)
{
    double m = INFINITY;
    const double *v = data(id);
    for (size_t i = 0; i < tg_tensor_size(ids[id]); i++)
        m = fmin(m, absolute ? fabs(v[i]) : v[i]);
    return m;
}

static double
max_of(int id)
{
    double m = -INFINITY;
    const double *v = data(id);
    for (size_t i = 0; i < tg_tensor_size(ids[id]); i++)
        m = fmax(m, v[i]);
    return m;
}

/* Flat index into an operand of shape in, broadcast (aligned from the last axis) over out. */
static size_t
bcast_index(const shape *out, const shape *in, size_t o)
{
    size_t i = 0, stride = 1;
    for (int k = out->ndim - 1, j = in->ndim - 1; j >= 0; k--, j--) {
        size_t c = (size_t)(o % (size_t)out->d[k]);
        o /= (size_t)out->d[k];
        if (in->d[j] != 1)
            i += c * stride;
        stride *= (size_t)in->d[j];
    }
    return i;
}

/* The broadcast result of an operand of shape base: leading axes may be added, size-1 axes
 * grown, so that base itself is broadcast too. */
static shape
grow(const shape *base)
{
    shape out = *base;
    if (out.ndim < TG_MAX_DIMS && chance(3)) {
        int add = irand(1, TG_MAX_DIMS - out.ndim);
        memmove(out.d + add, out.d, (size_t)out.ndim * sizeof out.d[0]);
        out.ndim += add;
        for (int i = 0; i < add; i++)
            out.d[i] = irand(1, 3);
    }
    for (int i = out.ndim - base->ndim; i < out.ndim; i++)
        if (out.d[i] == 1 && chance(3))
            out.d[i] = irand(2, 3);
    return out;
}

/* A random operand shape that broadcasts to out, attaining every axis of out that the
 * operands so far (covered[], aligned with out) leave at size 1; updates covered. */
static shape
partner(const shape *out, bool *covered)
{
    int min_rank = 1;
    for (int i = 0; i < out->ndim; i++)
        if (!covered[i] && out->d[i] > 1) {
            min_rank = out->ndim - i;
            break;
        }
    shape s = {irand(min_rank, out->ndim), {0}};
    for (int j = 0; j < s.ndim; j++) {
        int i = out->ndim - s.ndim + j;
        s.d[j] = covered[i] && out->d[i] > 1 && chance(2) ? 1 : out->d[i];
        covered[i] |= s.d[j] == out->d[i];
    }
    return s;
}

static void
covered_by(const shape *out, const shape *s, bool *covered)
{
    for (int i = 0; i < out->ndim; i++)
        covered[i] = false;
    for (int j = 0; j < s->ndim; j++)
        covered[out->ndim - s->ndim + j] = s->d[j] == out->d[out->ndim - s->ndim + j];
}

/* Values in [-1, 1] rounded to a grid of 1/q: 2q + 1 values, so a reduction over a few
 * elements ties. */
static void
quantize(tg_tensor *x, int q)
{
    double *v = tg_tensor_data(x);
    for (size_t i = 0; i < tg_tensor_size(x); i++)
        v[i] = round(v[i] * q) / q;
}

/* A random set of axes of a rank-n tensor, some counted from the end; *n_axes 0 means all
 * (sometimes with axes NULL). */
static const int *
rand_axes(int n, int *axes, int *n_axes)
{
    *n_axes = 0;
    if (chance(4))
        return chance(2) ? NULL : axes;
    for (int i = 0; i < n; i++)
        if (chance(2))
            axes[(*n_axes)++] = chance(3) ? i - n : i;
    for (int i = *n_axes - 1; i > 0; i--) { /* any order */
        int j = irand(0, i), tmp = axes[i];
        axes[i] = axes[j];
        axes[j] = tmp;
    }
    return axes;
}

static int
rand_axis(int n) /* in [-n, n) */
{
    int a = irand(0, n - 1);
    return chance(3) ? a - n : a;
}

/* ---- the ops under test ---- */

enum {
    OP_NEG, OP_EXP, OP_LOG, OP_LOG1P, OP_SQRT, OP_SQUARE, OP_ABS, OP_POW, OP_CLAMP, OP_SILU,
    OP_ELU, OP_GELU_TANH,
    OP_DIV, OP_MAXIMUM, OP_MINIMUM, OP_WHERE,
    OP_SUM_AXES, OP_MEAN_AXES, OP_MAX_AXES, OP_MIN_AXES, OP_LOGSUMEXP, OP_VAR,
    OP_SOFTMAX, OP_LOG_SOFTMAX,
    OP_RESHAPE, OP_PERMUTE, OP_EXPAND, OP_SLICE, OP_CONCAT, OP_STACK, OP_PAD,
    OP_INDEX_SELECT, OP_GATHER, OP_DETACH,
    OP_BMM,
    OP_CONV2D, OP_CONV1D, OP_CONV_TRANSPOSE2D, OP_MAX_POOL2D, OP_AVG_POOL2D,
    OP_GLOBAL_AVG_POOL2D,
    OP_BATCH_NORM, OP_GROUP_NORM, OP_LAYER_NORM, OP_RMS_NORM, OP_DROPOUT, OP_SDPA,
    OP_LSTM_CELL, OP_GRU_CELL,
    OP_NLL_LOSS, OP_BCE_WITH_LOGITS, OP_L1, OP_HUBER, OP_SMOOTH_L1, OP_CROSS_ENTROPY,
    N_OPS
};

static const char *const op_names[N_OPS] = {
    "neg", "exp", "log", "log1p", "sqrt", "square", "abs", "pow", "clamp", "silu",
    "elu", "gelu_tanh",
    "div", "maximum", "minimum", "where",
    "sum_axes", "mean_axes", "max_axes", "min_axes", "logsumexp", "var",
    "softmax", "log_softmax",
    "reshape", "permute", "expand", "slice", "concat", "stack", "pad",
    "index_select", "gather", "detach",
    "bmm",
    "conv2d", "conv1d", "conv_transpose2d", "max_pool2d", "avg_pool2d",
    "global_avg_pool2d",
    "batch_norm", "group_norm", "layer_norm", "rms_norm", "dropout",
    "scaled_dot_product_attention",
    "lstm_cell", "gru_cell",
    "nll_loss", "bce_with_logits", "l1", "huber", "smooth_l1", "cross_entropy",
};

static bool
is_loss(int which)
{
    return which >= OP_NLL_LOSS;
}

/* The chain's input if usable (cur >= 0 and ok), else a fresh leaf of a random shape. */
static int
input(int cur, bool ok, double lo, double hi)
{
    if (cur >= 0 && ok)
        return cur;
    shape s = rand_shape(1, TG_MAX_DIMS);
    return leaf(&s, lo, hi);
}

static int
unary(int which, int cur)
{
    tg_tensor *y;
    int x;
    switch (which) {
    case OP_NEG:
        x = input(cur, true, -2, 2);
        y = tg_neg(tape, ids[x]);
        break;
    case OP_EXP:
        x = input(cur, cur >= 0 && max_of(cur) < 3, -2, 2);
        return op1(tg_exp(tape, ids[x]), "exp", x);
    case OP_LOG:
        x = input(cur, cur >= 0 && min_of(cur, false) >= 0.05, 0.1, 3);
        return op1(tg_log(tape, ids[x]), "log", x);
    case OP_LOG1P:
        x = input(cur, cur >= 0 && min_of(cur, false) >= -0.9, -0.8, 2);
        return op1(tg_log1p(tape, ids[x]), "log1p", x);
    case OP_SQRT:
        x = input(cur, cur >= 0 && min_of(cur, false) >= 0.05, 0.1, 3);
        return op1(tg_sqrt(tape, ids[x]), "sqrt", x);
    case OP_SQUARE:
        x = input(cur, true, -2, 2);
        return op1(tg_square(tape, ids[x]), "square", x);
    case OP_ABS:
        if (cur >= 0 && exact[cur]) {
            x = cur;
        } else { /* a fresh leaf, sometimes holding an exact 0 (gradient 0 there) */
            shape s = rand_shape(1, TG_MAX_DIMS);
            tg_tensor *v = fresh(&s, -2, 2);
            if (chance(2))
                ((double *)tg_tensor_data(v))[irand(0, (int)numel(&s) - 1)] = 0;
            x = emit(v, K_LEAF);
        }
        y = tg_abs(tape, ids[x]);
        break;
    case OP_POW: {
        /* Integer exponents >= 0 on any sign; negative integers away from 0; fractional
         * ones on positive inputs only (NaN below 0). */
        static const double ps[] = {2, 3, 1, 0, 4, -1, -2, 0.5, 1.5, -0.5, 2.5, 0.3, -1.7};
        double p = ps[irand(0, (int)(sizeof ps / sizeof ps[0]) - 1)];
        bool integer = p == floor(p);
        bool ok = cur >= 0 && (integer && p >= 0 ? max_of(cur) < 3 && min_of(cur, false) > -3
                               : integer ? min_of(cur, true) >= 0.3 && max_of(cur) < 3
                                         : min_of(cur, false) >= 0.05 && max_of(cur) < 5);
        x = input(cur, ok, integer && p >= 0 ? -2 : 0.3, 2);
        attr(" p=%.17g", p);
        return op1(tg_pow(tape, ids[x], p), "pow", x);
    }
    case OP_CLAMP: {
        double lo = urand(-1.5, 0.5), hi = lo + urand(0.1, 2);
        if (chance(6))
            lo = -INFINITY;
        else if (chance(6))
            hi = INFINITY;
        if (cur >= 0 && exact[cur]) {
            x = cur;
        } else { /* a fresh leaf with values at the bounds (inclusive: the gradient passes) */
            shape s = rand_shape(1, TG_MAX_DIMS);
            tg_tensor *v = fresh(&s, -2, 2);
            double *d = tg_tensor_data(v);
            if (isfinite(lo) && chance(2))
                d[irand(0, (int)numel(&s) - 1)] = lo;
            if (isfinite(hi) && chance(2))
                d[irand(0, (int)numel(&s) - 1)] = hi;
            x = emit(v, K_LEAF);
        }
        attr(" lo=%.17g hi=%.17g", lo, hi);
        y = tg_clamp(tape, ids[x], lo, hi);
        break;
    }
    case OP_SILU:
        x = input(cur, true, -3, 3);
        return op1(tg_silu(tape, ids[x]), "silu", x);
    case OP_ELU: {
        static const double alphas[] = {1.0, 0.5, 1.7};
        double alpha = alphas[irand(0, 2)];
        /* for α ≠ 1 the derivative jumps at 0 (1 above, α below): no chain value within
         * round-off of 0 (a group-normalized mean is ~1e-17 of either sign) */
        x = input(cur, alpha == 1 || (cur >= 0 && min_of(cur, true) >= 1e-6), -3, 3);
        attr(" alpha=%.17g", alpha);
        return op1(tg_elu(tape, ids[x], alpha), "elu", x);
    }
    default:
        x = input(cur, true, -3, 3);
        return op1(tg_gelu_tanh(tape, ids[x]), "gelu_tanh", x);
    }
    int id = op1(y, op_names[which], x);
    exact[id] = exact[x];
    return id;
}

/* div, maximum, minimum, where: the chain's input is one operand, the others are fresh, with
 * shapes that broadcast either way. */
static int
binary(int which, int cur)
{
    bool kink = which == OP_MAXIMUM || which == OP_MINIMUM;
    bool use = cur >= 0 && (!kink || exact[cur]);
    shape base = use ? shape_of(cur) : rand_shape(1, TG_MAX_DIMS);
    /* A third of the time all shapes equal: the kernels take a separate path then. */
    bool same = chance(3);
    shape out = same ? base : grow(&base);
    bool covered[TG_MAX_DIMS];
    covered_by(&out, &base, covered);
    shape other = same ? base : partner(&out, covered);
    bool cur_first = chance(2);

    if (which == OP_DIV) {
        /* The chain's value as numerator, or as denominator if it stays away from 0. */
        if (use && !cur_first && min_of(cur, true) < 0.3)
            cur_first = true;
        int a, b;
        if (cur_first) {
            a = use ? cur : leaf(&base, -2, 2);
            tg_tensor *v = fresh(&other, 0.5, 2);
            double *d = tg_tensor_data(v);
            for (size_t i = 0; i < numel(&other); i++)
                d[i] = chance(2) ? -d[i] : d[i];
            b = emit(v, K_LEAF);
        } else {
            b = use ? cur : leaf(&base, 0.5, 2);
            a = leaf(&other, -2, 2);
        }
        return op2(tg_div(tape, ids[a], ids[b]), "div", a, b);
    }
    if (kink) {
        int a = use ? cur : leaf(&base, -2, 2);
        tg_tensor *v = fresh(&other, -2, 2);
        /* Ties: copy a's value into b at about a third of the output positions. */
        shape sa = shape_of(a);
        double *db = tg_tensor_data(v);
        for (size_t o = 0; o < numel(&out); o++)
            if (chance(3))
                db[bcast_index(&out, &other, o)] = data(a)[bcast_index(&out, &sa, o)];
        int b = emit(v, K_LEAF);
        if (!cur_first) {
            int tmp = a;
            a = b, b = tmp;
        }
        tg_tensor *y = which == OP_MAXIMUM ? tg_maximum(tape, ids[a], ids[b])
                                           : tg_minimum(tape, ids[a], ids[b]);
        int id = op2(y, op_names[which], a, b);
        exact[id] = exact[a] && exact[b];
        return id;
    }
    /* where: the mask is a 0/1 constant of a third broadcast shape. */
    int a = use ? cur : leaf(&base, -2, 2);
    int b = leaf(&other, -2, 2);
    if (!cur_first) {
        int tmp = a;
        a = b, b = tmp;
    }
    shape ms = same ? base : partner(&out, covered);
    tg_tensor *m = fresh(&ms, 0, 1);
    double *dm = tg_tensor_data(m);
    for (size_t i = 0; i < numel(&ms); i++)
        dm[i] = dm[i] < 0.5 ? 0.0 : 1.0;
    int mask = emit(m, K_CONST);
    int in[3] = {mask, a, b};
    int id = op(tg_where(tape, ids[mask], ids[a], ids[b]), "where", in, 3);
    exact[id] = exact[a] && exact[b];
    return id;
}

static int
reduction(int which, int cur)
{
    int x;
    bool kink = which == OP_MAX_AXES || which == OP_MIN_AXES;
    if (cur >= 0 && (!kink || exact[cur])) {
        x = cur;
    } else {
        shape s = rand_shape(1, TG_MAX_DIMS);
        tg_tensor *v = fresh(&s, -1, 1);
        if (kink && !chance(4))
            quantize(v, irand(1, 2));
        x = emit(v, K_LEAF);
    }
    shape s = shape_of(x);
    int axes_buf[TG_MAX_DIMS], n_axes;
    const int *axes = rand_axes(s.ndim, axes_buf, &n_axes);
    bool keep = chance(2);
    if (n_axes == 0)
        attr(" axes=all");
    else
        attr_ints("axes", axes, n_axes);
    attr(" keep=%d", keep);
    tg_tensor *y;
    switch (which) {
    case OP_SUM_AXES: y = tg_sum_axes(tape, ids[x], axes, n_axes, keep); break;
    case OP_MEAN_AXES: y = tg_mean_axes(tape, ids[x], axes, n_axes, keep); break;
    case OP_MAX_AXES: y = tg_max_axes(tape, ids[x], axes, n_axes, keep); break;
    case OP_MIN_AXES: y = tg_min_axes(tape, ids[x], axes, n_axes, keep); break;
    case OP_LOGSUMEXP: y = tg_logsumexp(tape, ids[x], axes, n_axes, keep); break;
    default: {
        /* correction < N (the reduced count), else the variance is 0/0 */
        size_t n = 1;
        for (int i = 0; i < s.ndim; i++) {
            bool in_set = n_axes == 0;
            for (int k = 0; k < n_axes; k++)
                in_set |= (axes[k] + s.ndim) % s.ndim == i;
            n *= in_set ? (size_t)s.d[i] : 1;
        }
        int correction = irand(0, n > 2 ? 2 : (int)n - 1);
        attr(" correction=%d", correction);
        y = tg_var(tape, ids[x], axes, n_axes, correction, keep);
        break;
    }
    }
    int id = op1(y, op_names[which], x);
    exact[id] = kink;
    return id;
}

/* A random shape with the same element count: n's prime factors dealt to 1-4 axes. */
static shape
refactor(size_t n)
{
    shape s = {irand(1, TG_MAX_DIMS), {0}};
    for (int i = 0; i < s.ndim; i++)
        s.d[i] = 1;
    for (size_t p = 2; n > 1; p++)
        while (n % p == 0) {
            s.d[irand(0, s.ndim - 1)] *= (int64_t)p;
            n /= p;
        }
    return s;
}

static int
shape_op(int which, int cur)
{
    int x = input(cur, true, -2, 2);
    shape s = shape_of(x);
    tg_tensor *y;
    switch (which) {
    case OP_SOFTMAX:
    case OP_LOG_SOFTMAX: {
        int axis = rand_axis(s.ndim);
        attr(" axis=%d", axis);
        y = which == OP_SOFTMAX ? tg_softmax(tape, ids[x], axis)
                                : tg_log_softmax(tape, ids[x], axis);
        return op1(y, op_names[which], x);
    }
    case OP_RESHAPE: {
        shape to = refactor(numel(&s));
        if (chance(2))
            to.d[irand(0, to.ndim - 1)] = -1;
        attr_i64s("dims", to.d, (size_t)to.ndim);
        y = tg_reshape(tape, ids[x], to.ndim, to.d);
        break;
    }
    case OP_PERMUTE: {
        int perm[TG_MAX_DIMS];
        for (int i = 0; i < s.ndim; i++)
            perm[i] = i;
        for (int i = s.ndim - 1; i > 0; i--) {
            int j = irand(0, i), tmp = perm[i];
            perm[i] = perm[j];
            perm[j] = tmp;
        }
        attr_ints("perm", perm, s.ndim);
        y = tg_permute(tape, ids[x], perm);
        break;
    }
    case OP_EXPAND: {
        shape to = grow(&s);
        if (numel(&to) == numel(&s)) { /* make it broadcast something */
            if (to.ndim < TG_MAX_DIMS) {
                memmove(to.d + 1, to.d, (size_t)to.ndim * sizeof to.d[0]);
                to.ndim++;
                to.d[0] = 2;
            } else {
                for (int i = 0; i < to.ndim; i++)
                    if (to.d[i] == 1)
                        to.d[i] = 2;
            }
        }
        for (int j = 0; j < s.ndim; j++) /* -1 keeps x's size */
            if (to.d[to.ndim - s.ndim + j] == s.d[j] && chance(3))
                to.d[to.ndim - s.ndim + j] = -1;
        attr_i64s("dims", to.d, (size_t)to.ndim);
        y = tg_expand(tape, ids[x], to.ndim, to.d);
        break;
    }
    case OP_SLICE: {
        int64_t start[TG_MAX_DIMS], stop[TG_MAX_DIMS], step[TG_MAX_DIMS];
        bool steps = !chance(4);
        for (int i = 0; i < s.ndim; i++) {
            int64_t n = s.d[i], a = irand(0, (int)n - 1), b = irand((int)a + 1, (int)n);
            step[i] = steps ? irand(1, 3) : 1;
            start[i] = chance(3) ? a - n : a;
            stop[i] = b == n && chance(2) ? TG_END : b < n && chance(3) ? b - n : b;
        }
        attr(" start=");
        for (int i = 0; i < s.ndim; i++)
            attr(i ? ",%lld" : "%lld", (long long)start[i]);
        attr(" stop=");
        for (int i = 0; i < s.ndim; i++) {
            if (stop[i] == TG_END)
                attr(i ? ",end" : "end");
            else
                attr(i ? ",%lld" : "%lld", (long long)stop[i]);
        }
        if (steps)
            attr_i64s("step", step, (size_t)s.ndim);
        y = tg_slice(tape, ids[x], start, stop, steps ? step : NULL);
        break;
    }
    case OP_PAD: {
        int64_t before[TG_MAX_DIMS], after[TG_MAX_DIMS];
        int most = numel(&s) > 60 ? 1 : 2;
        for (int i = 0; i < s.ndim; i++) {
            before[i] = irand(0, most);
            after[i] = irand(0, most);
        }
        static const double values[] = {0, 0.5, -1.25};
        double value = chance(4) ? urand(-1, 1) : values[irand(0, 2)];
        attr_i64s("before", before, (size_t)s.ndim);
        attr_i64s("after", after, (size_t)s.ndim);
        attr(" value=%.17g", value);
        y = tg_pad(tape, ids[x], before, after, value);
        break;
    }
    case OP_INDEX_SELECT: {
        int axis = rand_axis(s.ndim);
        int64_t size = s.d[(axis + s.ndim) % s.ndim], index[6];
        size_t n = (size_t)irand(1, 5);
        for (size_t i = 0; i < n; i++)
            index[i] = irand(0, (int)size - 1);
        if (n > 1 && chance(2)) /* a repeated index: the gradients add */
            index[n - 1] = index[0];
        attr(" axis=%d", axis);
        attr_i64s("index", index, n);
        y = tg_index_select(tape, ids[x], axis, index, n);
        break;
    }
    case OP_GATHER: {
        int axis = rand_axis(s.ndim), ax = (axis + s.ndim) % s.ndim;
        shape is = s;
        for (int i = 0; i < s.ndim; i++)
            is.d[i] = i == ax ? irand(1, 4) : irand(1, (int)s.d[i]);
        int64_t index[4 * MAX_CHAIN_ELEMS];
        for (size_t i = 0; i < numel(&is); i++) /* repeats come by themselves */
            index[i] = irand(0, (int)s.d[ax] - 1);
        attr(" axis=%d", axis);
        attr_i64s("ishape", is.d, (size_t)is.ndim);
        attr_i64s("index", index, numel(&is));
        y = tg_gather(tape, ids[x], axis, index, is.ndim, is.d);
        break;
    }
    default: { /* detach, then x ⊙ detach(x): x's gradient must be R ⊙ x, not 2 R ⊙ x */
        int d = op1(tg_detach(tape, ids[x]), "detach", x);
        exact[d] = exact[x];
        return op2(tg_mul(tape, ids[x], ids[d]), "mul", x, d);
    }
    }
    int id = op1(y, op_names[which], x);
    exact[id] = exact[x];
    return id;
}

/* concat and stack of 2-5 tensors, the chain's input at a random place among fresh leaves. */
static int
join(int which, int cur)
{
    bool stack = which == OP_STACK;
    int x = cur;
    if (cur < 0 || (stack && tg_tensor_ndim(ids[cur]) == TG_MAX_DIMS)) { /* stack adds an axis */
        shape s = rand_shape(1, stack ? TG_MAX_DIMS - 1 : TG_MAX_DIMS);
        x = leaf(&s, -2, 2);
    }
    shape s = shape_of(x);
    int n = irand(2, 5), at = irand(0, n - 1), axis, in[5];
    bool all_exact = true;
    if (stack) {
        axis = irand(0, s.ndim);
        axis = chance(3) ? axis - s.ndim - 1 : axis;
    } else {
        axis = rand_axis(s.ndim);
    }
    for (int i = 0; i < n; i++) {
        if (i == at) {
            in[i] = x;
        } else {
            shape p = s;
            if (!stack)
                p.d[(axis + s.ndim) % s.ndim] = irand(1, 3);
            in[i] = leaf(&p, -2, 2);
        }
        all_exact &= exact[in[i]];
    }
    tg_tensor *xs[5];
    for (int i = 0; i < n; i++)
        xs[i] = ids[in[i]];
    attr(" axis=%d", axis);
    tg_tensor *y = stack ? tg_stack(tape, xs, n, axis) : tg_concat(tape, xs, n, axis);
    int id = op(y, op_names[which], in, n);
    exact[id] = all_exact;
    return id;
}

/* The broadcast batch shape of an operand with batch axes b: at most two batch axes. */
static shape
grow_batch(const shape *b)
{
    shape out = grow(b);
    while (out.ndim > 2) { /* drop added leading axes: b's own are the last ones */
        memmove(out.d, out.d + 1, (size_t)(out.ndim - 1) * sizeof out.d[0]);
        out.ndim--;
    }
    return out;
}

/* bmm with broadcast batch axes (either side may be 2-D) and either operand transposed. */
static int
bmm(int cur)
{
    bool ta = chance(2), tb = chance(2);
    bool use = cur >= 0 && tg_tensor_ndim(ids[cur]) >= 2;
    bool cur_is_a = chance(2);
    int64_t m = irand(1, 4), k = irand(1, 4), n = irand(1, 4);
    shape mine = {0, {0}}, out; /* batch axes of the chain's operand, of the result */
    if (use) {
        shape c = shape_of(cur);
        int64_t r0 = c.d[c.ndim - 2], r1 = c.d[c.ndim - 1];
        if (cur_is_a)
            m = ta ? r1 : r0, k = ta ? r0 : r1;
        else
            k = tb ? r1 : r0, n = tb ? r0 : r1;
        mine.ndim = c.ndim - 2;
        memcpy(mine.d, c.d, (size_t)mine.ndim * sizeof mine.d[0]);
    } else {
        mine = rand_shape(0, 2);
    }
    if (mine.ndim > 0)
        out = grow_batch(&mine);
    else if (chance(4)) /* 2-D by 2-D: one matrix product */
        out = mine;
    else /* a 2-D operand shared over a batch of the other */
        out = rand_shape(1, 2);
    bool covered[TG_MAX_DIMS];
    covered_by(&out, &mine, covered);
    bool mine_is_out = mine.ndim == out.ndim; /* then the other may be 2-D */
    for (int i = 0; i < out.ndim; i++)
        mine_is_out &= covered[i];
    shape other = out.ndim > 0 ? partner(&out, covered) : out;
    if (mine.ndim > 0 && mine_is_out && chance(4)) /* the other operand 2-D */
        other.ndim = 0;
    /* sa, sb: the batch axes of a and b (the chain's operand keeps its own) */
    shape sa = cur_is_a ? mine : other, sb = cur_is_a ? other : mine;
    int a, b;
    if (use && cur_is_a) {
        a = cur;
    } else {
        sa.d[sa.ndim] = ta ? k : m;
        sa.d[sa.ndim + 1] = ta ? m : k;
        sa.ndim += 2;
        a = leaf(&sa, -1.5, 1.5);
    }
    if (use && !cur_is_a) {
        b = cur;
    } else {
        sb.d[sb.ndim] = tb ? n : k;
        sb.d[sb.ndim + 1] = tb ? k : n;
        sb.ndim += 2;
        b = leaf(&sb, -1.5, 1.5);
    }
    attr(" ta=%d tb=%d", ta, tb);
    return op2(tg_bmm(tape, ids[a], ta, ids[b], tb), "bmm", a, b);
}

/* conv2d / conv1d on the chain's value when it has the rank (4 / 3), else on a fresh leaf:
 * random groups, kernels 1-3, strides 1-3, dilations 1-2, padding 0-2 or "same", a bias leaf
 * or none; the weight is a leaf. Sizes stay small (N, C <= 2 per group). */
static int
conv(int which, int cur)
{
    bool one_d = which == OP_CONV1D;
    int rank = one_d ? 3 : 4;
    int x;
    if (cur >= 0 && tg_tensor_ndim(ids[cur]) == rank && tg_tensor_dim(ids[cur], 1) <= 4) {
        x = cur;
    } else {
        shape s = {rank, {irand(1, 2), irand(1, 4), irand(1, 5), irand(1, 5)}};
        x = leaf(&s, -1.5, 1.5);
    }
    shape xs = shape_of(x);
    int64_t c = xs.d[1];
    int64_t groups = c % 2 == 0 && chance(2) ? 2 : 1;
    if (chance(4))
        groups = c; /* depthwise */
    int64_t out_c = groups * irand(1, 2);
    tg_conv_options o = tg_conv_defaults();
    o.groups = groups;
    o.padding_same = chance(4);
    int64_t k[2] = {1, 1};
    for (int a = one_d ? 1 : 0; a < 2; a++) {
        int src = one_d ? 0 : a;
        int64_t in = xs.d[one_d ? 2 : 2 + a];
        o.dilation[src] = irand(1, 2);
        o.stride[src] = o.padding_same ? 1 : irand(1, 3);
        o.padding[src] = irand(0, 2);
        int64_t kk = irand(1, 3); /* shrunk until the padded input holds its span */
        while (!o.padding_same && kk > 1 && o.dilation[src] * (kk - 1) + 1 > in + 2 * o.padding[src])
            kk--;
        k[a] = kk;
    }
    shape ws = one_d ? (shape){3, {out_c, c / groups, k[1]}}
                     : (shape){4, {out_c, c / groups, k[0], k[1]}};
    int w = leaf(&ws, -1, 1);
    int b = -1;
    if (chance(2)) {
        shape bs = {1, {out_c}};
        b = leaf(&bs, -1, 1);
    }
    int n_d = one_d ? 1 : 2;
    attr(" groups=%lld same=%d", (long long)groups, o.padding_same);
    attr(" stride=%lld", (long long)o.stride[0]);
    if (n_d == 2)
        attr(",%lld", (long long)o.stride[1]);
    attr(" padding=%lld", (long long)o.padding[0]);
    if (n_d == 2)
        attr(",%lld", (long long)o.padding[1]);
    attr(" dilation=%lld", (long long)o.dilation[0]);
    if (n_d == 2)
        attr(",%lld", (long long)o.dilation[1]);
    tg_tensor *bt = b >= 0 ? ids[b] : NULL;
    tg_tensor *y = one_d ? tg_conv1d(tape, ids[x], ids[w], bt, &o)
                         : tg_conv2d(tape, ids[x], ids[w], bt, &o);
    int in[3] = {x, w, b};
    return op(y, op_names[which], in, b >= 0 ? 3 : 2);
}

/* conv_transpose2d on the chain's value when it is 4-D with at most 4 channels, else on a
 * fresh leaf: random groups (depthwise too), kernels 1-3, strides 1-3, dilations 1-2, padding
 * 0-2 (lowered until the output has a row and a column), output_padding below the stride or
 * the dilation, a bias leaf or none; the weight (C, O/groups, kh, kw) is a leaf. */
static int
conv_transpose(int cur)
{
    int x;
    if (cur >= 0 && tg_tensor_ndim(ids[cur]) == 4 && tg_tensor_dim(ids[cur], 1) <= 4) {
        x = cur;
    } else {
        shape s = {4, {irand(1, 2), irand(1, 4), irand(1, 4), irand(1, 4)}};
        x = leaf(&s, -1.5, 1.5);
    }
    shape xs = shape_of(x);
    int64_t c = xs.d[1];
    int64_t groups = c % 2 == 0 && chance(2) ? 2 : 1;
    if (chance(4))
        groups = c; /* depthwise */
    int64_t out_c = groups * irand(1, 2);
    tg_conv_transpose_options o = tg_conv_transpose_defaults();
    o.groups = groups;
    int64_t k[2];
    for (int a = 0; a < 2; a++) {
        int64_t in = xs.d[2 + a];
        k[a] = irand(1, 3);
        o.stride[a] = irand(1, 3);
        o.dilation[a] = irand(1, 2);
        int64_t most = o.stride[a] > o.dilation[a] ? o.stride[a] : o.dilation[a];
        o.output_padding[a] = irand(0, (int)most - 1);
        o.padding[a] = irand(0, 2);
        while (o.padding[a] > 0 && (in - 1) * o.stride[a] - 2 * o.padding[a] +
                                           o.dilation[a] * (k[a] - 1) + o.output_padding[a] +
                                           1 < 1)
            o.padding[a]--;
    }
    shape ws = {4, {c, out_c / groups, k[0], k[1]}};
    int w = leaf(&ws, -1, 1);
    int b = -1;
    if (chance(2)) {
        shape bs = {1, {out_c}};
        b = leaf(&bs, -1, 1);
    }
    attr(" groups=%lld stride=%lld,%lld padding=%lld,%lld output_padding=%lld,%lld"
         " dilation=%lld,%lld",
         (long long)groups, (long long)o.stride[0], (long long)o.stride[1],
         (long long)o.padding[0], (long long)o.padding[1], (long long)o.output_padding[0],
         (long long)o.output_padding[1], (long long)o.dilation[0], (long long)o.dilation[1]);
    tg_tensor *y = tg_conv_transpose2d(tape, ids[x], ids[w], b >= 0 ? ids[b] : NULL, &o);
    int in[3] = {x, w, b};
    return op(y, op_names[OP_CONV_TRANSPOSE2D], in, b >= 0 ? 3 : 2);
}

/* dropout (training mode) on the chain's value when none of it is 0, else a leaf in [0.5,
 * 1.5]: so the mask, which comes from tapegrad's generator, not torch's, reads off the output
 * (kept where y != 0) and goes into the trace; torch then computes F.dropout's definition
 * x ⊙ mask / (1 − p) and its gradient. What this checks is the scale and the VJP, given the
 * mask; the mask's rate and seeding are test-conv's. p = 0 sometimes (the identity). */
static int
dropout(int cur)
{
    int x = -1;
    if (cur >= 0) {
        shape s = shape_of(cur);
        bool nonzero = true;
        for (size_t i = 0; i < numel(&s); i++)
            nonzero &= data(cur)[i] != 0;
        if (nonzero)
            x = cur;
    }
    if (x < 0) {
        shape s = rand_shape(1, 4);
        x = leaf(&s, 0.5, 1.5);
    }
    double p = chance(4) ? 0 : urand(0, 0.9);
    tg_rng *r = tg_rng_new(seed * 7919 + (uint64_t)x);
    tg_tensor *y = tg_dropout(tape, ids[x], p, r);
    tg_rng_free(r);
    if (tg_tape_status(tape) != TG_OK)
        fail("dropout");
    attr(" p=%.17g mask=", p);
    const double *yv = tg_tensor_data(y);
    for (size_t i = 0; i < tg_tensor_size(y); i++)
        attr(i ? ",%d" : "%d", yv[i] != 0);
    if (y == ids[x]) /* p = 0 records nothing and gives x back: the trace still shows the op */
        y = tg_scale(tape, ids[x], 1.0);
    return op1(y, "dropout", x);
}

/* Pools on the chain's value when it is 4-D (max pooling only on bit-exact values, whose ties
 * are ties in torch too; none are made, a tie's gradient rule is test-conv's), else a leaf. */
static int
pool(int which, int cur)
{
    int x;
    bool max = which == OP_MAX_POOL2D;
    if (cur >= 0 && tg_tensor_ndim(ids[cur]) == 4 && (!max || exact[cur])) {
        x = cur;
    } else {
        shape s = {4, {irand(1, 2), irand(1, 3), irand(1, 6), irand(1, 6)}};
        x = leaf(&s, -2, 2);
    }
    if (which == OP_GLOBAL_AVG_POOL2D)
        return op1(tg_global_avg_pool2d(tape, ids[x]), op_names[which], x);
    shape xs = shape_of(x);
    int64_t kern[2], stride[2], pad[2];
    for (int a = 0; a < 2; a++) {
        int64_t in = xs.d[2 + a];
        kern[a] = irand(1, (int)(in < 3 ? in : 3));
        stride[a] = irand(1, 3);
        pad[a] = irand(0, (int)(kern[a] / 2));
    }
    bool default_stride = chance(3);
    attr(" kernel=%lld,%lld stride=%lld,%lld padding=%lld,%lld", (long long)kern[0],
         (long long)kern[1], (long long)(default_stride ? kern[0] : stride[0]),
         (long long)(default_stride ? kern[1] : stride[1]), (long long)pad[0], (long long)pad[1]);
    tg_tensor *y = max ? tg_max_pool2d(tape, ids[x], kern, default_stride ? NULL : stride, pad)
                       : tg_avg_pool2d(tape, ids[x], kern, default_stride ? NULL : stride, pad);
    return op1(y, op_names[which], x);
}

/* batch_norm on the chain's value (rank 2-4, two or more values per channel) or a leaf, with
 * or without a fused activation; γ and β leaves or none; training (with running statistics or without) or evaluation (with them,
 * constants with variances in [0.3, 2)). The trace lists x, then γ, β, running mean and
 * variance, as the flags say. The running statistics' update is test-conv's. */
static int
batch_norm(int cur)
{
    int x;
    if (cur >= 0 && tg_tensor_ndim(ids[cur]) >= 2 &&
        tg_tensor_size(ids[cur]) / (size_t)tg_tensor_dim(ids[cur], 1) >= 2) {
        x = cur;
    } else {
        shape s = rand_shape(2, 4);
        if (s.d[0] < 2)
            s.d[0] = 2;
        x = leaf(&s, -2, 2);
    }
    shape cs = {1, {tg_tensor_dim(ids[x], 1)}};
    bool gamma = chance(4) ? false : true, beta = chance(4) ? false : true;
    bool training = chance(2), stats = !training || chance(2);
    int in[5] = {x}, n = 1;
    if (gamma)
        in[n++] = leaf(&cs, 0.5, 1.5);
    if (beta)
        in[n++] = leaf(&cs, -1, 1);
    tg_tensor *rm = NULL, *rv = NULL;
    if (stats) {
        in[n++] = emit(fresh(&cs, -0.5, 0.5), K_CONST);
        in[n++] = emit(fresh(&cs, 0.3, 2), K_CONST);
        rm = ids[in[n - 2]], rv = ids[in[n - 1]];
    }
    double momentum = urand(0, 1), eps = chance(2) ? 1e-5 : urand(1e-3, 0.1);
    /* half the time an activation fused in (tg_batch_norm_act), any of them */
    tg_activation act = chance(2) ? TG_ACT_IDENTITY : (tg_activation)irand(1, TG_ACT_GELU);
    attr(" gamma=%d beta=%d stats=%d training=%d momentum=%.17g eps=%.17g act=%s", gamma, beta,
         stats, training, momentum, eps, tg_activation_name(act));
    tg_tape_set_training(tape, training);
    tg_tensor *y = tg_batch_norm_act(tape, ids[x], gamma ? ids[in[1]] : NULL,
                                     beta ? ids[in[1 + gamma]] : NULL, rm, rv, momentum, eps, act);
    tg_tape_set_training(tape, true);
    return op(y, "batch_norm", in, n);
}

/* group_norm on the chain's value (rank 2-4, at least two values per group) or a leaf, with
 * groups dividing C, γ and β leaves or none. */
static int
group_norm(int cur)
{
    int x;
    if (cur >= 0 && tg_tensor_ndim(ids[cur]) >= 2 &&
        tg_tensor_size(ids[cur]) / (size_t)tg_tensor_dim(ids[cur], 0) >= 2) {
        x = cur;
    } else {
        shape s = rand_shape(2, 4);
        s.d[1] = 2 * irand(1, 2);
        x = leaf(&s, -2, 2);
    }
    int64_t c = tg_tensor_dim(ids[x], 1), groups = 1;
    for (int64_t g = c; g >= 1; g--) /* a random divisor of C that leaves two values a group */
        if (c % g == 0 && tg_tensor_size(ids[x]) / (size_t)tg_tensor_dim(ids[x], 0) / (size_t)g >= 2 &&
            chance(2)) {
            groups = g;
            break;
        }
    shape cs = {1, {c}};
    bool gamma = !chance(4), beta = !chance(4);
    int in[3] = {x}, n = 1;
    if (gamma)
        in[n++] = leaf(&cs, 0.5, 1.5);
    if (beta)
        in[n++] = leaf(&cs, -1, 1);
    double eps = chance(2) ? 1e-5 : urand(1e-3, 0.1);
    attr(" groups=%lld gamma=%d beta=%d eps=%.17g", (long long)groups, gamma, beta, eps);
    tg_tensor *y = tg_group_norm(tape, ids[x], groups, gamma ? ids[in[1]] : NULL,
                                 beta ? ids[in[1 + gamma]] : NULL, eps);
    return op(y, "group_norm", in, n);
}

/* scaled_dot_product_attention: q the chain's value when it has rank 3 or 4 (a leaf
 * otherwise), k and v leaves, S, dv from 1; a mask (T, S) or of q's rank with broadcast axes,
 * a leaf or a constant with -inf entries (never in column 0, so no row is fully masked, where
 * PyTorch's formula gives NaN), or none; causal or not; the default scale or a given one. */
static int
sdpa(int cur)
{
    int q;
    if (cur >= 0 && tg_tensor_ndim(ids[cur]) >= 3) {
        q = cur;
    } else {
        shape s = rand_shape(3, 4);
        q = leaf(&s, -2, 2);
    }
    shape qs = shape_of(q), ks = qs, vs = qs;
    int r = qs.ndim;
    int64_t slen = irand(1, 4), tlen = qs.d[r - 2];
    ks.d[r - 2] = vs.d[r - 2] = slen;
    vs.d[r - 1] = irand(1, 4);
    int in[4] = {q, leaf(&ks, -2, 2), leaf(&vs, -2, 2)}, n = 3;
    int mask_kind = irand(0, 2); /* 0 none, 1 a leaf, 2 a constant with -inf */
    if (mask_kind) {
        shape ms = qs;
        ms.d[r - 1] = slen;
        if (chance(2)) {
            ms.ndim = 2, ms.d[0] = tlen, ms.d[1] = slen;
        } else {
            for (int i = 0; i < r; i++)
                if (chance(3))
                    ms.d[i] = 1;
        }
        if (mask_kind == 1) {
            in[n++] = leaf(&ms, -1, 1);
        } else {
            tg_tensor *m = fresh(&ms, -1, 1);
            double *v = tg_tensor_data(m);
            int64_t last = ms.d[ms.ndim - 1];
            for (size_t i = 0; i < tg_tensor_size(m); i++)
                if (i % (size_t)last != 0 && chance(3))
                    v[i] = -INFINITY;
            in[n++] = emit(m, K_CONST);
        }
    }
    bool causal = chance(2);
    double scale = chance(2) ? 0 : urand(0.2, 1.5);
    attr(" mask=%d causal=%d scale=%.17g", mask_kind != 0, causal,
         scale ? scale : 1 / sqrt((double)qs.d[r - 1]));
    tg_tensor *y = tg_scaled_dot_product_attention(tape, ids[q], ids[in[1]], ids[in[2]],
                                                   mask_kind ? ids[in[3]] : NULL, causal, scale);
    return op(y, "scaled_dot_product_attention", in, n);
}

/* layer_norm (or rms_norm) on the chain's value or a leaf, over its last 1 … rank axes, γ (and
 * β) leaves of the normalized shape or none. */
static int
trailing_norm(int which, int cur)
{
    int x = input(cur, cur >= 0 && tg_tensor_ndim(ids[cur]) >= 1, -2, 2);
    shape xs = shape_of(x);
    int n_norm = irand(1, xs.ndim);
    shape ws = {n_norm, {0}};
    for (int i = 0; i < n_norm; i++)
        ws.d[i] = xs.d[xs.ndim - n_norm + i];
    bool rms = which == OP_RMS_NORM;
    bool gamma = !chance(4), beta = !rms && !chance(4);
    int in[3] = {x}, n = 1;
    if (gamma)
        in[n++] = leaf(&ws, 0.5, 1.5);
    if (beta)
        in[n++] = leaf(&ws, -1, 1);
    double eps = chance(2) ? 1e-5 : urand(1e-3, 0.1);
    attr(" n_norm=%d gamma=%d beta=%d eps=%.17g", n_norm, gamma, beta, eps);
    tg_tensor *g = gamma ? ids[in[1]] : NULL;
    tg_tensor *y = rms ? tg_rms_norm(tape, ids[x], n_norm, g, eps)
                       : tg_layer_norm(tape, ids[x], n_norm, g, beta ? ids[in[1 + gamma]] : NULL,
                                       eps);
    return op(y, op_names[which], in, n);
}

/* lstm_cell and gru_cell: the state (B, 2H) or h (B, H) is the chain's 2-D value when its
 * width suits (H <= 4), else a leaf; xw (B, G·H) and W_hh (G·H, H) leaves, each bias a leaf or
 * none. */
static int
cell(int which, int cur)
{
    bool lstm = which == OP_LSTM_CELL;
    int64_t sw = lstm ? 2 : 1, g = lstm ? 4 : 3;
    int s;
    if (cur >= 0 && tg_tensor_ndim(ids[cur]) == 2 && tg_tensor_dim(ids[cur], 1) % sw == 0 &&
        tg_tensor_dim(ids[cur], 1) / sw >= 1 && tg_tensor_dim(ids[cur], 1) / sw <= 4) {
        s = cur;
    } else {
        shape ss = {2, {irand(1, 3), sw * irand(1, 3)}};
        s = leaf(&ss, -1.5, 1.5);
    }
    int64_t b = tg_tensor_dim(ids[s], 0), h = tg_tensor_dim(ids[s], 1) / sw;
    shape xs = {2, {b, g * h}}, ws = {2, {g * h, h}}, bs = {1, {g * h}};
    int in[5] = {leaf(&xs, -1.5, 1.5), s, leaf(&ws, -1, 1)}, n = 3;
    bool bi = !chance(4), bh = !chance(4);
    if (bi)
        in[n++] = leaf(&bs, -1, 1);
    if (bh)
        in[n++] = leaf(&bs, -1, 1);
    attr(" bias_ih=%d bias_hh=%d", bi, bh);
    tg_tensor *bias_ih = bi ? ids[in[3]] : NULL, *bias_hh = bh ? ids[in[3 + bi]] : NULL;
    tg_tensor *y = lstm ? tg_lstm_cell(tape, ids[in[0]], ids[s], ids[in[2]], bias_ih, bias_hh)
                        : tg_gru_cell(tape, ids[in[0]], ids[s], ids[in[2]], bias_ih, bias_hh);
    return op(y, op_names[which], in, n);
}

static int
loss(int which, int cur)
{
    if (which == OP_NLL_LOSS || which == OP_CROSS_ENTROPY) {
        int x;
        if (cur >= 0 && tg_tensor_ndim(ids[cur]) == 2) {
            x = cur;
        } else {
            shape s = {2, {irand(1, 5), irand(1, 5)}};
            x = leaf(&s, which == OP_NLL_LOSS ? -3 : -2, which == OP_NLL_LOSS ? 0 : 2);
        }
        int class_axis = irand(0, 1);
        int64_t classes = tg_tensor_dim(ids[x], class_axis);
        int64_t examples = tg_tensor_dim(ids[x], 1 - class_axis);
        int32_t labels[MAX_CHAIN_ELEMS];
        double weight[MAX_CHAIN_ELEMS];
        for (int64_t i = 0; i < examples; i++)
            labels[i] = (int32_t)irand(0, (int)classes - 1);
        for (int64_t c = 0; c < classes; c++)
            weight[c] = urand(0.2, 2);
        bool weighted = chance(2);
        attr(" class_axis=%d", class_axis);
        attr(" labels=");
        for (int64_t i = 0; i < examples; i++)
            attr(i ? ",%d" : "%d", (int)labels[i]);
        if (weighted)
            attr_doubles("weight", weight, (size_t)classes);
        tg_tensor *y;
        if (which == OP_NLL_LOSS) {
            y = tg_nll_loss(tape, ids[x], labels, (size_t)tg_tensor_dim(ids[x], 1 - class_axis),
                            class_axis, weighted ? weight : NULL);
        } else {
            static const double eps[] = {0, 0.1, 1};
            double ls = chance(2) ? urand(0, 1) : eps[irand(0, 2)];
            attr(" smoothing=%.17g", ls);
            y = tg_cross_entropy(tape, ids[x], labels,
                                 (size_t)tg_tensor_dim(ids[x], 1 - class_axis), class_axis,
                                 weighted ? weight : NULL, ls);
        }
        return op1(y, op_names[which], x);
    }
    /* bce_with_logits, l1, huber, smooth_l1: a and a target y of its shape, both leaves or
     * chain values, so y's gradient is checked too. */
    int a = input(cur, true, -3, 3);
    shape s = shape_of(a);
    bool bce = which == OP_BCE_WITH_LOGITS; /* its targets are probabilities */
    tg_tensor *v = fresh(&s, bce ? 0 : -2, bce ? 1 : 2);
    if (which == OP_L1 && exact[a]) { /* d = 0 at some places: the gradient is 0 there */
        double *dv = tg_tensor_data(v);
        for (size_t i = 0; i < numel(&s); i++)
            if (chance(3))
                dv[i] = data(a)[i];
    }
    int y = emit(v, K_LEAF);
    tg_tensor *l;
    switch (which) {
    case OP_BCE_WITH_LOGITS: l = tg_bce_with_logits(tape, ids[a], ids[y]); break;
    case OP_L1: l = tg_l1(tape, ids[a], ids[y]); break;
    case OP_HUBER: {
        double delta = chance(2) ? 1.0 : urand(0.2, 2);
        attr(" delta=%.17g", delta);
        l = tg_huber(tape, ids[a], ids[y], delta);
        break;
    }
    default: {
        double beta = chance(2) ? 1.0 : urand(0.1, 2);
        attr(" beta=%.17g", beta);
        l = tg_smooth_l1(tape, ids[a], ids[y], beta);
        break;
    }
    }
    return op2(l, op_names[which], a, y);
}

static int
run_op(int which, int cur)
{
    if (which <= OP_GELU_TANH)
        return unary(which, cur);
    if (which <= OP_WHERE)
        return binary(which, cur);
    if (which <= OP_VAR)
        return reduction(which, cur);
    if (which == OP_CONCAT || which == OP_STACK)
        return join(which, cur);
    if (which <= OP_DETACH)
        return shape_op(which, cur);
    if (which == OP_BMM)
        return bmm(cur);
    if (which == OP_CONV2D || which == OP_CONV1D)
        return conv(which, cur);
    if (which == OP_CONV_TRANSPOSE2D)
        return conv_transpose(cur);
    if (which >= OP_MAX_POOL2D && which <= OP_GLOBAL_AVG_POOL2D)
        return pool(which, cur);
    if (which == OP_BATCH_NORM)
        return batch_norm(cur);
    if (which == OP_GROUP_NORM)
        return group_norm(cur);
    if (which == OP_LAYER_NORM || which == OP_RMS_NORM)
        return trailing_norm(which, cur);
    if (which == OP_DROPOUT)
        return dropout(cur);
    if (which == OP_SDPA)
        return sdpa(cur);
    if (which == OP_LSTM_CELL || which == OP_GRU_CELL)
        return cell(which, cur);
    return loss(which, cur);
}

/* loss += sum(R ⊙ y), R a random constant of y's shape. */
static int
contribute(int acc, int y)
{
    shape s = shape_of(y);
    int r = emit(fresh(&s, -1, 1), K_CONST);
    int m = op2(tg_mul(tape, ids[y], ids[r]), "mul", y, r);
    int sum = op1(tg_sum(tape, ids[m]), "sum", m);
    return acc < 0 ? sum : op2(tg_add(tape, ids[acc], ids[sum]), "add", acc, sum);
}

/* (H·v)_i = Σ_j ∂²loss/∂x_i∂x_j · v_j over all leaves x_i jointly, v_j standard normal from
 * a generator of its own (so the graph drawn for a seed does not change), by tg_hvp in both
 * modes, after the first-order trace. Where tg_hvp fails (an op of the graph without a
 * differentiable VJP, most often), its message goes into the trace instead. */
static void
print_hvp(int loss)
{
    tg_tensor *x[TG_MAX_INPUTS], *v[TG_MAX_INPUTS], *hv[TG_MAX_INPUTS];
    int leaf_id[TG_MAX_INPUTS], n = 0;
    tg_rng *r = tg_rng_new(seed * 6151 + 3);
    if (!r) {
        fprintf(stderr, "refops: out of memory\n");
        exit(2);
    }
    for (int i = 0; i < n_ids; i++) {
        if (kinds[i] != K_LEAF)
            continue;
        if (n == TG_MAX_INPUTS) {
            fprintf(stderr, "refops: seed %llu: more than %d leaves for tg_hvp\n", seed,
                    TG_MAX_INPUTS);
            exit(2);
        }
        x[n] = ids[i];
        leaf_id[n] = i;
        shape sh = shape_of(i);
        v[n] = tg_tensor_new(tape, TG_F64, sh.ndim, sh.d, NULL);
        if (tg_tensor_fill_normal(v[n], r, 0, 1) != TG_OK)
            fail("direction");
        n++;
    }
    tg_rng_free(r);
    static const char *const line[2] = {"hvp_for", "hvp_ror"};
    static const tg_hvp_mode mode[2] = {TG_HVP_FORWARD_OVER_REVERSE,
                                        TG_HVP_REVERSE_OVER_REVERSE};
    for (int m = 0; m < 2; m++) {
        if (tg_hvp(tape, ids[loss], n, x, v, mode[m], hv) != TG_OK) {
            const char *e = tg_tape_error(tape);
            printf("hvp_error %s %s\n", line[m], e ? e : "(no message)");
            return;
        }
        if (m == 0)
            for (int j = 0; j < n; j++) {
                printf("dir %d", leaf_id[j]);
                print_values(v[j], false);
                printf("\n");
            }
        for (int j = 0; j < n; j++) {
            printf("%s %d", line[m], leaf_id[j]);
            print_values(hv[j], false);
            printf("\n");
        }
    }
}

int
main(int argc, char **argv)
{
    seed = argc > 1 ? strtoull(argv[1], NULL, 10) : 1;
    rng = tg_rng_new(seed * 104729 + 31);
    tape = tg_tape_new();
    if (!rng || !tape) {
        fprintf(stderr, "refops: out of memory\n");
        return 2;
    }

    int acc = -1;
    for (int c = 0; c < N_CHAINS; c++) {
        int cur = -1, depth = irand(1, 3);
        for (int k = 0; k < depth; k++) {
            int which = k ? irand(0, N_OPS - 1) : (int)((seed * N_CHAINS + (unsigned)c) % N_OPS);
            int y = run_op(which, cur);
            acc = contribute(acc, y);
            shape s = shape_of(y);
            if (is_loss(which) || numel(&s) > MAX_CHAIN_ELEMS)
                break;
            cur = y;
        }
    }

    if (tg_backward(tape, ids[acc]) != TG_OK)
        fail("backward");
    printf("loss %d %.17g\n", acc, tg_tensor_item(ids[acc]));
    for (int i = 0; i < n_ids; i++) {
        if (kinds[i] == K_LEAF) {
            printf("grad %d", i);
            print_values(ids[i], true);
            printf("\n");
        } else if (kinds[i] == K_OP) {
            printf("val %d", i);
            print_values(ids[i], false);
            printf("\n");
            if (tg_tensor_grad(ids[i])) {
                printf("ograd %d", i);
                print_values(ids[i], true);
                printf("\n");
            }
        }
    }
    print_hvp(acc);
    tg_tape_free(tape);
    tg_rng_free(rng);
    return 0;
}
