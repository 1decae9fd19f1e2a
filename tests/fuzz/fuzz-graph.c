/*
 * Fuzz target: the graph-building API driven by fuzz bytes.
 *
 * The bytes are a little program: make tensors (any rank, any dims including 0, -1 and
 * overflowing ones; values drawn from an edge-value table: ±0, ±inf, NaN, ±1e20, ±1000,
 * subnormals, DBL_MAX), apply random ops to random operands (mismatched shapes, dtypes, bad
 * axes, labels and factors included), run backward from random tensors (seeded or not),
 * reset the tape, toggle finite tracing, step an SGD optimizer, fail the n-th allocation.
 * Every tensor-algebra, convolution, pooling and recurrent-cell op is reached (algebra_call) with fuzzed axes,
 * axis sets, shapes, strides, paddings, dilations and groups,
 * slice bounds, pad widths, indices, labels, counts and class weights.
 *
 * Invariants checked after every call (a violation aborts, which libFuzzer reports):
 *   - a failing call returns the nil tensor (no data) and sets a non-empty message;
 *   - the first error sticks: later calls leave the status, the message and the node count
 *     unchanged until tg_tape_reset;
 *   - a successful op's output has the size its dims say;
 *   - parameters are bitwise unchanged by any failed call.
 * Leaks are caught by LSan (libFuzzer + ASan), hangs by libFuzzer's -timeout; sizes are
 * bounded (dims <= 9, <= 64 calls) so every input runs in well under a millisecond.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tapegrad/op.h>
#include <tapegrad/tapegrad.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                            \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "fuzz-graph: invariant failed at line %d: %s\n", __LINE__, #cond); \
            abort();                                                                           \
        }                                                                                      \
    } while (0)

struct input {
    const uint8_t *p;
    size_t n;
};

static unsigned
byte(struct input *in)
{
    if (in->n == 0)
        return 0;
    in->n--;
    return *in->p++;
}

static const double edge_values[] = {
    0.0,  -0.0,    1.0,      -1.0,    0.25,     -0.25,     2.0,     -3.0,    1000.0,
    -1000.0, 1e20, -1e20,    INFINITY, -INFINITY, NAN,     1e-40,   -1e-40,  4.9e-324,
    1e300, -1e300, DBL_MAX,  -DBL_MAX, 88.8,    710.0,     -745.2,  3.14159, 1e-5,
};
#define N_EDGE (sizeof edge_values / sizeof edge_values[0])

static double
value(struct input *in)
{
    unsigned b = byte(in);
    if (b < 2 * N_EDGE)
        return edge_values[b % N_EDGE];
    return ((double)b - 160.0) / 16.0; /* ordinary values in [-6, 6) */
}

/* ---- allocator: caps single allocations (so huge dims fail cleanly instead of tripping the
 * fuzzer's malloc limit) and optionally fails the n-th call ---- */
static long alloc_calls, fail_at = -1;

static void *
fz_malloc(size_t n, void *ctx)
{
    (void)ctx;
    if (n > (64u << 20) || alloc_calls++ == fail_at)
        return NULL;
    return malloc(n);
}

static void *
fz_realloc(void *p, size_t n, void *ctx)
{
    (void)ctx;
    if (n > (64u << 20) || alloc_calls++ == fail_at)
        return NULL;
    return realloc(p, n);
}

static void
fz_free(void *p, void *ctx)
{
    (void)ctx;
    free(p);
}

/* ---- a custom op whose behaviour the bytes choose: fine, failing, NaN-writing ---- */
static tg_status
cube_forward(tg_node *n)
{
    tg_tensor *x = tg_node_input(n, 0), *y = tg_node_output(n);
    intptr_t mode = (intptr_t)tg_node_ctx(n);
    if (mode == 1)
        return tg_node_fail(n, TG_ERR_OP, "forward refused (mode %d)", (int)mode);
    size_t size = tg_tensor_size(y);
    for (size_t i = 0; i < size; i++) {
        double v = tg_tensor_get(x, i);
        v = mode == 3 ? NAN : v * v * v;
        if (tg_tensor_dtype(y) == TG_F32)
            ((float *)tg_tensor_data(y))[i] = (float)v;
        else
            ((double *)tg_tensor_data(y))[i] = v;
    }
    return TG_OK;
}

static tg_status
cube_vjp(tg_node *n)
{
    tg_tensor *x = tg_node_input(n, 0), *y = tg_node_output(n);
    intptr_t mode = (intptr_t)tg_node_ctx(n);
    if (mode == 2)
        return TG_ERR_OP; /* without a message: the engine must write one */
    void *dx = tg_tensor_grad(x);
    if (!dx)
        return TG_OK;
    size_t size = tg_tensor_size(y);
    for (size_t i = 0; i < size; i++) {
        double g = tg_tensor_grad_get(y, i) * 3 * tg_tensor_get(x, i) * tg_tensor_get(x, i);
        if (mode == 4)
            g = INFINITY;
        if (tg_tensor_dtype(x) == TG_F32)
            ((float *)dx)[i] += (float)g;
        else
            ((double *)dx)[i] += g;
    }
    return TG_OK;
}

static const tg_op cube_op = {"cube", 1, NULL, cube_forward, cube_vjp, NULL};

#define POOL 16

struct state {
    tg_tape *tape;
    tg_params *params;
    tg_sgd *sgd;
    tg_tensor *pool[POOL];
    int n_pool;
    /* the tape's first error, to check stickiness */
    char first[512];
    tg_status first_status;
    size_t nodes_at_error;
    /* parameter values before the current call, to check failed calls change nothing */
    unsigned char *snapshot;
    size_t snapshot_bytes;
};

static tg_tensor *
pick(struct state *s, struct input *in)
{
    unsigned b = byte(in);
    if (b == 255)
        return NULL;
    if (s->n_pool == 0 || b == 254)
        return tg_params_get(s->params, b % 3);
    return s->pool[b % (unsigned)s->n_pool];
}

static void
remember(struct state *s, tg_tensor *x)
{
    if (!x)
        return;
    if (s->n_pool < POOL)
        s->pool[s->n_pool++] = x;
    else
        s->pool[(tg_tape_node_count(s->tape) + (size_t)s->n_pool) % POOL] = x;
}

static int64_t
dim(struct input *in)
{
    unsigned b = byte(in);
    switch (b) {
    case 250: return -1;
    case 251: return INT64_C(1) << 32;
    case 252: return INT64_C(1) << 40;
    case 253: return INT64_MAX;
    case 254: return INT64_MIN;
    default: return (int64_t)(b % 10);
    }
}

static void
make_tensor(struct state *s, struct input *in, tg_dtype dt)
{
    unsigned b = byte(in);
    int ndim = (int)(b % 6); /* 0 and 5 are invalid ranks */
    int64_t dims[5] = {0};
    for (int i = 0; i < ndim; i++)
        dims[i] = dim(in);
    size_t n = 1;
    bool small = true;
    for (int i = 0; i < ndim; i++) {
        if (dims[i] < 0 || dims[i] > 9)
            small = false;
        else
            n *= (size_t)dims[i];
    }
    double vals[9 * 9 * 9 * 9];
    float fvals[9 * 9 * 9 * 9];
    tg_tensor *x;
    const char *name = (b & 0x40) ? "x" : (b & 0x80) ? "bad\xff" : NULL;
    if (small && ndim >= 1 && ndim <= 4) {
        for (size_t i = 0; i < n; i++)
            fvals[i] = (float)(vals[i] = value(in));
        x = tg_tensor_from(s->tape, dt, ndim, dims, dt == TG_F32 ? (void *)fvals : (void *)vals,
                           name);
    } else {
        x = tg_tensor_new(s->tape, dt, ndim, dims, name);
    }
    if (tg_tensor_data(x)) {
        CHECK(tg_tensor_ndim(x) == ndim);
        tg_tensor_set_requires_grad(x, (b & 0x20) != 0);
    }
    remember(s, x);
}

static void
snapshot_params(struct state *s)
{
    size_t bytes = tg_params_size(s->params) * tg_dtype_size(tg_params_dtype(s->params));
    if (bytes > s->snapshot_bytes) {
        free(s->snapshot);
        s->snapshot = malloc(bytes);
        s->snapshot_bytes = s->snapshot ? bytes : 0;
    }
    if (s->snapshot && bytes)
        memcpy(s->snapshot, tg_params_values(s->params), bytes);
}

static bool
params_unchanged(struct state *s)
{
    size_t bytes = tg_params_size(s->params) * tg_dtype_size(tg_params_dtype(s->params));
    return bytes == 0 || !s->snapshot || memcmp(s->snapshot, tg_params_values(s->params), bytes) == 0;
}

/* Small integer arguments: axes in -5 … 4 (out of range both ways), counts and indices
 * around the valid range, per-axis arrays as long as the largest rank reads. */
static int
small_axis(struct input *in)
{
    return (int)(byte(in) % 10) - 5;
}

static int64_t
small_int(struct input *in)
{
    unsigned b = byte(in);
    return b == 255 ? TG_END : b == 254 ? INT64_MIN : (int64_t)(b % 13) - 3;
}

/* One tensor-algebra op (tapegrad.h's section of that name) on fuzzed operands and
 * attributes; *first gets its first operand. */
static tg_tensor *
algebra_call(struct state *s, struct input *in, tg_tensor **first)
{
    tg_tape *t = s->tape;
    tg_tensor *a = pick(s, in), *b, *c;
    *first = a;
    int axes[5];
    int n_axes = (int)(byte(in) % 6);
    for (int i = 0; i < n_axes; i++)
        axes[i] = small_axis(in);
    bool keep = byte(in) & 1;
    int64_t v0[TG_MAX_DIMS], v1[TG_MAX_DIMS], v2[TG_MAX_DIMS];
    for (int i = 0; i < TG_MAX_DIMS; i++)
        v0[i] = small_int(in), v1[i] = small_int(in), v2[i] = small_int(in);
    static int64_t index[9 * 9 * 9 * 9];
    size_t n_index = byte(in) % 17;
    for (size_t i = 0; i < sizeof index / sizeof index[0]; i++)
        index[i] = i < 16 ? small_int(in) : index[i % 16];
    int32_t labels[16];
    for (int i = 0; i < 16; i++)
        labels[i] = (int32_t)(byte(in) % 8) - 1;
    double weight[16];
    for (int i = 0; i < 16; i++)
        weight[i] = value(in);
    tg_tensor *xs[8];
    int n_xs = (int)(byte(in) % 8); /* 0 is refused */
    for (int i = 0; i < n_xs; i++)
        xs[i] = pick(s, in);
    switch (byte(in) % 40) {
    case 0: return tg_neg(t, a);
    case 1: return tg_exp(t, a);
    case 2: return tg_log(t, a);
    case 3: return tg_log1p(t, a);
    case 4: return tg_sqrt(t, a);
    case 5: return tg_square(t, a);
    case 6: return tg_abs(t, a);
    case 7: return tg_pow(t, a, value(in));
    case 8: return tg_clamp(t, a, value(in), value(in));
    case 9: return tg_silu(t, a);
    case 10: return tg_elu(t, a, value(in));
    case 11: return tg_gelu_tanh(t, a);
    case 12: b = pick(s, in); return tg_div(t, a, b);
    case 13: b = pick(s, in); return tg_maximum(t, a, b);
    case 14: b = pick(s, in); return tg_minimum(t, a, b);
    case 15: b = pick(s, in), c = pick(s, in); return tg_where(t, a, b, c);
    case 16: return tg_sum_axes(t, a, axes, n_axes, keep);
    case 17: return tg_mean_axes(t, a, axes, n_axes, keep);
    case 18: return tg_max_axes(t, a, axes, n_axes, keep);
    case 19: return tg_min_axes(t, a, axes, n_axes, keep);
    case 20: return tg_logsumexp(t, a, axes, n_axes, keep);
    case 21: return tg_var(t, a, axes, n_axes, (int)(byte(in) % 4) - 1, keep);
    case 22: return tg_softmax(t, a, small_axis(in));
    case 23: return tg_log_softmax(t, a, small_axis(in));
    case 24: return tg_reshape(t, a, (int)(byte(in) % 6), v0);
    case 25: {
        int perm[TG_MAX_DIMS];
        for (int i = 0; i < TG_MAX_DIMS; i++)
            perm[i] = small_axis(in);
        return tg_permute(t, a, perm);
    }
    case 26: return tg_expand(t, a, (int)(byte(in) % 6), v0);
    case 27: return tg_slice(t, a, v0, v1, (byte(in) & 1) ? v2 : NULL);
    case 28: return tg_concat(t, xs, n_xs, small_axis(in));
    case 29: return tg_stack(t, xs, n_xs, small_axis(in));
    case 30: return tg_pad(t, a, v0, v1, value(in));
    case 31: return tg_index_select(t, a, small_axis(in), index, n_index);
    case 32: return tg_gather(t, a, small_axis(in), index, (int)(byte(in) % 6), v0);
    case 33: return tg_detach(t, a);
    case 34: b = pick(s, in); return tg_bmm(t, a, byte(in) & 1, b, byte(in) & 1);
    case 35: return tg_nll_loss(t, a, labels, byte(in) % 17, (int)(byte(in) % 3) - 1,
                                (byte(in) & 1) ? weight : NULL);
    case 36: return tg_cross_entropy(t, a, labels, byte(in) % 17, (int)(byte(in) % 3) - 1,
                                     (byte(in) & 1) ? weight : NULL, value(in));
    case 37: b = pick(s, in); return tg_bce_with_logits(t, a, b);
    case 38: b = pick(s, in); return tg_l1(t, a, b);
    default: {
        b = pick(s, in);
        unsigned k = byte(in);
        if (k < 128) /* the inputs of the corpus from before convolution keep their meaning */
            return (k & 1) ? tg_huber(t, a, b, value(in)) : tg_smooth_l1(t, a, b, value(in));
        c = (byte(in) & 1) ? pick(s, in) : NULL; /* a bias, or none */
        tg_conv_options o = {.stride = {v0[0], v0[1]}, .padding = {v1[0], v1[1]},
                             .dilation = {v2[0], v2[1]}, .groups = small_int(in),
                             .padding_same = byte(in) % 3 == 0};
        switch ((k - 128) % 14) {
        case 0: return tg_conv2d(t, a, b, c, (byte(in) & 1) ? &o : NULL);
        case 1: return tg_conv1d(t, a, b, c, (byte(in) & 1) ? &o : NULL);
        case 2: return tg_max_pool2d(t, a, (byte(in) & 1) ? v0 : NULL, (byte(in) & 1) ? v1 : NULL,
                                     (byte(in) & 1) ? v2 : NULL);
        case 3: return tg_avg_pool2d(t, a, (byte(in) & 1) ? v0 : NULL, (byte(in) & 1) ? v1 : NULL,
                                     (byte(in) & 1) ? v2 : NULL);
        case 4: return tg_global_avg_pool2d(t, a);
        case 5: {
            tg_rng *r = tg_rng_new(byte(in));
            tg_tape_set_training(t, byte(in) % 4 != 0);
            tg_tensor *y = tg_dropout(t, a, value(in), (byte(in) % 8) ? r : NULL);
            tg_rng_free(r);
            return y;
        }
        case 6:
            return tg_group_norm(t, a, small_int(in), (byte(in) & 1) ? b : NULL,
                                 (byte(in) & 1) ? c : NULL, value(in));
        case 9: /* n_norm_axes -1 … 4, γ and β from the pool (most shapes refused by name) */
            return tg_layer_norm(t, a, (int)(byte(in) % 6) - 1, (byte(in) & 1) ? b : NULL,
                                 (byte(in) & 1) ? c : NULL, value(in));
        case 10:
            return tg_rms_norm(t, a, (int)(byte(in) % 6) - 1, (byte(in) & 1) ? b : NULL,
                               value(in));
        case 11:
            return tg_scaled_dot_product_attention(t, a, b, c ? c : a,
                                                   (byte(in) & 1) ? pick(s, in) : NULL,
                                                   byte(in) & 1, value(in));
        case 8: {
            tg_conv_transpose_options ot = {
                .stride = {v0[0], v0[1]}, .padding = {v1[0], v1[1]},
                .output_padding = {v2[2], v2[3]}, .dilation = {v2[0], v2[1]},
                .groups = o.groups};
            return tg_conv_transpose2d(t, a, b, c, (byte(in) & 1) ? &ot : NULL);
        }
        case 12: /* the recurrent cells: xw, state, W_hh, then optional biases */
        case 13: {
            tg_tensor *w = pick(s, in), *bi = (byte(in) & 1) ? pick(s, in) : NULL;
            tg_tensor *bh = (byte(in) & 1) ? pick(s, in) : NULL;
            return (k - 128) % 14 == 12 ? tg_lstm_cell(t, a, b, w, bi, bh)
                                        : tg_gru_cell(t, a, b, w, bi, bh);
        }
        default: {
            /* running statistics from the pool's tape tensors only: a successful training
             * call updates them, and parameters must only change through the optimizer */
            tg_tensor *rm = pick(s, in), *rv = pick(s, in);
            for (size_t i = 0; i < tg_params_count(s->params); i++) {
                if (rm == tg_params_get(s->params, i))
                    rm = NULL;
                if (rv == tg_params_get(s->params, i))
                    rv = NULL;
            }
            tg_tape_set_training(t, byte(in) % 4 != 0);
            /* any int as the fused activation: most are refused by name */
            return tg_batch_norm_act(t, a, (byte(in) & 1) ? b : NULL, (byte(in) & 1) ? c : NULL,
                                     (byte(in) & 1) ? rm : NULL, (byte(in) & 1) ? rv : NULL,
                                     value(in), value(in), (tg_activation)(byte(in) % 9));
        }
        }
    }
    }
}

static void
one_call(struct state *s, struct input *in, tg_dtype dt)
{
    tg_tape *t = s->tape;
    bool had_error = tg_tape_status(t) != TG_OK;
    size_t nodes = tg_tape_node_count(t);
    unsigned op = byte(in) % 34;
    tg_tensor *a = NULL, *b = NULL, *y = NULL;
    bool is_op = true;
    snapshot_params(s);

    switch (op) {
    case 0: case 1: make_tensor(s, in, (byte(in) & 1) ? TG_F32 : dt); is_op = false; break;
    case 2: a = pick(s, in); b = pick(s, in); y = tg_add(t, a, b); break;
    case 3: a = pick(s, in); b = pick(s, in); y = tg_sub(t, a, b); break;
    case 4: a = pick(s, in); b = pick(s, in); y = tg_mul(t, a, b); break;
    case 5: a = pick(s, in); b = pick(s, in); y = tg_matmul(t, a, b); break;
    case 6: {
        unsigned f = byte(in);
        a = pick(s, in);
        b = pick(s, in);
        y = tg_matmul_t(t, a, f & 1, b, f & 2);
        break;
    }
    case 7: a = pick(s, in); y = tg_transpose(t, a); break;
    case 8: a = pick(s, in); y = tg_scale(t, a, value(in)); break;
    case 9: a = pick(s, in); y = tg_sum(t, a); break;
    case 10: a = pick(s, in); y = tg_sum_axis(t, a, (int)(byte(in) % 7) - 2); break;
    case 11: a = pick(s, in); y = tg_mean(t, a); break;
    case 12: a = pick(s, in); y = tg_mean_axis(t, a, (int)(byte(in) % 7) - 2); break;
    case 13: a = pick(s, in); y = tg_sigmoid(t, a); break;
    case 14: a = pick(s, in); y = tg_tanh(t, a); break;
    case 15: a = pick(s, in); y = tg_relu(t, a); break;
    case 16: a = pick(s, in); y = tg_leaky_relu(t, a, value(in)); break;
    case 17: a = pick(s, in); y = tg_softplus(t, a); break;
    case 18: a = pick(s, in); y = tg_gelu(t, a); break;
    case 19: a = pick(s, in); y = tg_identity(t, a); break;
    case 20: a = pick(s, in); b = pick(s, in); y = tg_mse(t, a, b); break;
    case 21: a = pick(s, in); b = pick(s, in); y = tg_mse_half(t, a, b, (int)(byte(in) % 4) - 1); break;
    case 22: {
        /* The count is the batch (as long as the array holds it) or a drawn one that is
         * usually wrong: a wrong count must be refused before any label is read. */
        static int32_t labels[1 << 12];
        for (int i = 0; i < 16; i++)
            labels[i] = (int32_t)(byte(in) % 12) - 1;
        for (size_t i = 16; i < sizeof labels / sizeof labels[0]; i++)
            labels[i] = labels[i % 16];
        a = pick(s, in);
        unsigned axis = byte(in);
        int class_axis = (int)(axis % 4) - 1;
        size_t cap = sizeof labels / sizeof labels[0], n = byte(in);
        size_t batch = (size_t)tg_tensor_dim(a, 1 - class_axis);
        n = (n & 1) ? (batch < cap ? batch : cap) : (n >> 1) % 17;
        y = tg_softmax_xent(t, a, axis == 255 ? NULL : labels, n, class_axis);
        break;
    }
    case 23: {
        a = pick(s, in);
        tg_tensor *in1[1] = {a};
        y = tg_custom(t, &cube_op, in1, 1, (void *)(intptr_t)(byte(in) % 5));
        break;
    }
    case 24: case 25: {
        a = pick(s, in);
        tg_status st;
        unsigned how = byte(in) % 4;
        if (op == 25) {
            b = pick(s, in);
            st = tg_backward_seeded(t, a, b);
        } else if (how == 1) { /* forward mode: a seed (often not a leaf), b its tangent */
            b = pick(s, in);
            st = tg_jvp(t, 1, &a, &b);
        } else if (how == 2) { /* the differentiable backward of a, with respect to b */
            b = pick(s, in);
            tg_tensor *g = NULL;
            st = tg_grad(t, a, NULL, 1, &b, &g);
            CHECK(g != NULL);
            if (st == TG_OK)
                remember(s, g);
        } else {
            st = tg_backward(t, a);
        }
        CHECK(st == tg_tape_status(t) || st == TG_OK);
        is_op = false;
        break;
    }
    case 26:
        tg_tape_reset(t);
        CHECK(tg_tape_status(t) == TG_OK && tg_tape_error(t) == NULL);
        CHECK(tg_tape_node_count(t) == 0);
        /* keep the stale handles in the pool: using them must be reported, never a crash */
        s->first[0] = '\0';
        return;
    case 27: tg_tape_set_check_finite(t, byte(in) & 1); is_op = false; break;
    case 28:
        if (s->sgd) {
            tg_sgd_step(s->sgd);
            snapshot_params(s);
        }
        is_op = false;
        break;
    case 29:
        tg_params_zero_grad(s->params);
        is_op = false;
        break;
    case 30: {
        unsigned act = byte(in) % 8;
        a = pick(s, in);
        y = tg_activate(t, a, (tg_activation)act);
        break;
    }
    case 32: case 33:
        y = algebra_call(s, in, &a);
        break;
    default: {
        /* a value read through the accessors, out of range included */
        a = pick(s, in);
        size_t i = byte(in);
        (void)tg_tensor_get(a, i);
        (void)tg_tensor_grad_get(a, i);
        (void)tg_tensor_item(a);
        char buf[64];
        tg_tensor_shape_string(a, buf, sizeof buf);
        CHECK(memchr(buf, '\0', sizeof buf) != NULL);
        is_op = false;
        break;
    }
    }

    tg_status st = tg_tape_status(t);
    if (st != TG_OK) {
        const char *msg = tg_tape_error(t);
        CHECK(msg && msg[0]);
        if (had_error) {
            /* sticky: first error unchanged, nothing recorded */
            CHECK(st == s->first_status);
            CHECK(strcmp(msg, s->first) == 0);
            CHECK(tg_tape_node_count(t) == s->nodes_at_error);
        } else {
            snprintf(s->first, sizeof s->first, "%s", msg);
            s->first_status = st;
            s->nodes_at_error = tg_tape_node_count(t);
            CHECK(tg_tape_node_count(t) <= nodes + 1);
        }
        if (is_op)
            CHECK(tg_tensor_data(y) == NULL); /* the nil tensor */
        if (op != 28)
            CHECK(params_unchanged(s));
    } else if (is_op) {
        CHECK(y != NULL && tg_tensor_data(y) != NULL);
        size_t n = 1;
        for (int i = 0; i < tg_tensor_ndim(y); i++)
            n *= (size_t)tg_tensor_dim(y, i);
        CHECK(n == tg_tensor_size(y));
        /* one node per op, ending in y; conv1d records its reshapes around one conv2d (4 in
         * all); an op that is the identity here (dropout in evaluation or with p = 0) records
         * none and gives its input back */
        size_t added = tg_tape_node_count(t) - nodes;
        CHECK(added == 0 || added == 1 || added == 4);
        if (added)
            CHECK(tg_node_output(tg_tape_node(t, tg_tape_node_count(t) - 1)) == y);
    }
    if (is_op)
        remember(s, y);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct input in = {data, size};
    unsigned head = byte(&in);
    tg_dtype dt = (head & 1) ? TG_F32 : TG_F64;
    alloc_calls = 0;
    fail_at = (head & 2) ? (long)byte(&in) : -1;
    static const tg_allocator capped = {fz_malloc, fz_realloc, fz_free, NULL};
    tg_set_allocator(&capped);

    struct state s = {0};
    s.tape = tg_tape_new();
    s.params = tg_params_new(dt);
    if (s.tape && s.params) {
        tg_params_add(s.params, "w", 2, (int64_t[]){3, 2});
        tg_params_add(s.params, "b", 2, (int64_t[]){3, 1});
        tg_params_add(s.params, "v", 1, (int64_t[]){2});
        for (size_t i = 0; i < tg_params_size(s.params); i++) {
            if (dt == TG_F32)
                ((float *)tg_params_values(s.params))[i] = (float)i - 2.5f;
            else
                ((double *)tg_params_values(s.params))[i] = (double)i - 2.5;
        }
        tg_sgd_options o = {.lr = (head & 4) ? 0.5 : 0.01, .momentum = (head & 8) ? 0.9 : 0};
        s.sgd = tg_sgd_new(s.params, &o, NULL);
        tg_tape_set_check_finite(s.tape, head & 16);
        for (int k = 0; k < 64 && in.n > 0; k++)
            one_call(&s, &in, dt);
    }
    tg_sgd_free(s.sgd);
    tg_tape_free(s.tape);
    tg_params_free(s.params);
    free(s.snapshot);
    tg_set_allocator(NULL);
    return 0;
}
