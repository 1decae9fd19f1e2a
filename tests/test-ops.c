/*
 * Every built-in op: VJP against central differences in float64 over shapes that include
 * broadcasting and the 1x1, 1xn, nx1 edge sizes; forward values against values worked out by
 * hand; float32 forward against float64.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/ops/ops.h"
#include "common.h"

/* Central differences in float64 with h = 1e-6: truncation error ~h²·|f'''| ≈ 1e-12 and
 * round-off ~ε·|f|/h ≈ 1e-10 for our O(1) losses, so a correct rule shows errors near 1e-9;
 * 1e-6 (the bar for every op) leaves three orders of margin, and a wrong rule is off by O(1). */
#define FD_STEP 1e-6
#define FD_TOL 1e-6

/* One test case: an op applied to inputs of given shapes. The checked scalar is
 * Σ op(inputs) ⊙ R with a fixed random R, so every element of the output's VJP matters. */
struct op_case {
    const char *label;
    int n_in;
    int ndim[2];
    int64_t dims[2][TG_MAX_DIMS];
    tg_tensor *(*apply)(tg_tape *t, tg_tensor **in, const struct op_case *c);
    double lo, hi;  /* input range */
    bool avoid_kink; /* keep |x| >= 0.01 (relu family: FD across the kink is meaningless) */
    int axis;
    bool ta, tb;
    /* the case holds a stop-gradient, which finite differences see through by design: its
     * gradient is checked against the frozen-value derivative instead (detach_stops_gradient) */
    bool stop_gradient;
    double c;
};

static int32_t case_labels[8] = {2, 0, 1, 3, 1, 2, 0, 3};

static tg_tensor *ap_matmul(tg_tape *t, tg_tensor **in, const struct op_case *c)
{
    return tg_matmul_t(t, in[0], c->ta, in[1], c->tb);
}
static tg_tensor *ap_transpose(tg_tape *t, tg_tensor **in, const struct op_case *c)
{
    return tg_transpose(t, in[0]);
}
static tg_tensor *ap_add(tg_tape *t, tg_tensor **in, const struct op_case *c)
{
    return tg_add(t, in[0], in[1]);
}
static tg_tensor *ap_sub(tg_tape *t, tg_tensor **in, const struct op_case *c)
{
    return tg_sub(t, in[0], in[1]);
}
static tg_tensor *ap_mul(tg_tape *t, tg_tensor **in, const struct op_case *c)
{
    return tg_mul(t, in[0], in[1]);
}
static tg_tensor *ap_scale(tg_tape *t, tg_tensor **in, const struct op_case *c)
{
    return tg_scale(t, in[0], c->c);
}
static tg_tensor *ap_sum(tg_tape *t, tg_tensor **in, const struct op_case *c)
{
    return c->axis < 0 ? tg_sum(t, in[0]) : tg_sum_axis(t, in[0], c->axis);
}
static tg_tensor *ap_mean(tg_tape *t, tg_tensor **in, const struct op_case *c)
{
    return c->axis < 0 ? tg_mean(t, in[0]) : tg_mean_axis(t, in[0], c->axis);
}
static tg_tensor *ap_identity(tg_tape *t, tg_tensor **in, const struct op_case *c)
{
    return tg_identity(t, in[0]);
}
static tg_tensor *ap_sigmoid(tg_tape *t, tg_tensor **in, const struct op_case *c)
{
    return tg_sigmoid(t, in[0]);
}
static tg_tensor *ap_tanh(tg_tape *t, tg_tensor **in, const struct op_case *c)
{
    return tg_tanh(t, in[0]);
}
static tg_tensor *ap_relu(tg_tape *t, tg_tensor **in, const struct op_case *c)
{
    return tg_relu(t, in[0]);
}
static tg_tensor *ap_leaky(tg_tape *t, tg_tensor **in, const struct op_case *c)
{
    return tg_leaky_relu(t, in[0], c->c);
}
static tg_tensor *ap_softplus(tg_tape *t, tg_tensor **in, const struct op_case *c)
{
    return tg_softplus(t, in[0]);
}
static tg_tensor *ap_gelu(tg_tape *t, tg_tensor **in, const struct op_case *c)
{
    return tg_gelu(t, in[0]);
}
static tg_tensor *ap_mse_half(tg_tape *t, tg_tensor **in, const struct op_case *c)
{
    return tg_mse_half(t, in[0], in[1], c->axis);
}
static tg_tensor *ap_mse(tg_tape *t, tg_tensor **in, const struct op_case *c)
{
    return tg_mse(t, in[0], in[1]);
}
static tg_tensor *ap_xent(tg_tape *t, tg_tensor **in, const struct op_case *c)
{
    return tg_softmax_xent(t, in[0], case_labels, (size_t)tg_tensor_dim(in[0], 1 - c->axis),
                           c->axis);
}
static tg_tensor *ap_bias_act(tg_tape *t, tg_tensor **in, const struct op_case *c)
{
    return tg_bias_act(t, in[0], in[1], (tg_activation)c->axis); /* axis: the activation */
}

/* bias_act of op outputs, as in a network: X' = 1.5 X and b' = -0.5 b reach its VJP with
 * fresh gradients (written, not added: tg__vjp_takes_fresh); with .ta, X' is also added to
 * the output, so its gradient holds the add's term first and the VJP adds to it. */
static tg_tensor *ap_bias_act_ops(tg_tape *t, tg_tensor **in, const struct op_case *c)
{
    tg_tensor *x = tg_scale(t, in[0], 1.5), *b = tg_scale(t, in[1], -0.5);
    tg_tensor *y = tg_bias_act(t, x, b, (tg_activation)c->axis);
    return c->ta ? tg_add(t, y, x) : y;
}

/* matmul of op outputs, as in a network's hidden layers: A' = 1.5 A and B' = -0.5 B reach
 * its VJP with fresh gradients (written with beta 0, not zeroed and added to:
 * tg__vjp_takes_fresh). With .c = 1 the product is taken twice and summed, so the first VJP
 * the sweep meets writes each gradient and the second adds to it. */
static tg_tensor *ap_matmul_ops(tg_tape *t, tg_tensor **in, const struct op_case *c)
{
    tg_tensor *a = tg_scale(t, in[0], 1.5), *b = tg_scale(t, in[1], -0.5);
    tg_tensor *y = tg_matmul_t(t, a, c->ta, b, c->tb);
    return c->c != 0 ? tg_add(t, y, tg_matmul_t(t, a, c->ta, b, c->tb)) : y;
}
/* A'·A'ᵀ of one op output: one fresh gradient for both operands, written by dA's product and
 * added to by dB's. */
static tg_tensor *ap_matmul_self_ops(tg_tape *t, tg_tensor **in, const struct op_case *c)
{
    tg_tensor *a = tg_scale(t, in[0], 1.5);
    return tg_matmul_t(t, a, false, a, true);
}

/* ---- the tensor-algebra ops (fixed attributes per apply function) ---- */
static const int axes_02[] = {0, 2}, axes_last[] = {-1}, axes_1[] = {1};
static tg_tensor *ap_neg(tg_tape *t, tg_tensor **in, const struct op_case *c) { return tg_neg(t, in[0]); }
static tg_tensor *ap_exp(tg_tape *t, tg_tensor **in, const struct op_case *c) { return tg_exp(t, in[0]); }
static tg_tensor *ap_log(tg_tape *t, tg_tensor **in, const struct op_case *c) { return tg_log(t, in[0]); }
static tg_tensor *ap_log1p(tg_tape *t, tg_tensor **in, const struct op_case *c) { return tg_log1p(t, in[0]); }
static tg_tensor *ap_sqrt(tg_tape *t, tg_tensor **in, const struct op_case *c) { return tg_sqrt(t, in[0]); }
static tg_tensor *ap_square(tg_tape *t, tg_tensor **in, const struct op_case *c) { return tg_square(t, in[0]); }
static tg_tensor *ap_abs(tg_tape *t, tg_tensor **in, const struct op_case *c) { return tg_abs(t, in[0]); }
static tg_tensor *ap_pow(tg_tape *t, tg_tensor **in, const struct op_case *c) { return tg_pow(t, in[0], c->c); }
static tg_tensor *ap_clamp(tg_tape *t, tg_tensor **in, const struct op_case *c) { return tg_clamp(t, in[0], -c->c, c->c); }
static tg_tensor *ap_silu(tg_tape *t, tg_tensor **in, const struct op_case *c) { return tg_silu(t, in[0]); }
static tg_tensor *ap_elu(tg_tape *t, tg_tensor **in, const struct op_case *c) { return tg_elu(t, in[0], c->c); }
static tg_tensor *ap_gelu_tanh(tg_tape *t, tg_tensor **in, const struct op_case *c) { return tg_gelu_tanh(t, in[0]); }
static tg_tensor *ap_div(tg_tape *t, tg_tensor **in, const struct op_case *c) { return tg_div(t, in[0], in[1]); }
static tg_tensor *ap_maximum(tg_tape *t, tg_tensor **in, const struct op_case *c) { return tg_maximum(t, in[0], in[1]); }
static tg_tensor *ap_minimum(tg_tape *t, tg_tensor **in, const struct op_case *c) { return tg_minimum(t, in[0], in[1]); }
/* where(x0 > 0 as a constant mask, a, b): the mask is made from a's values, without gradient */
static tg_tensor *ap_where(tg_tape *t, tg_tensor **in, const struct op_case *c)
{
    int64_t dims[TG_MAX_DIMS];
    for (int i = 0; i < tg_tensor_ndim(in[0]); i++)
        dims[i] = tg_tensor_dim(in[0], i);
    tg_tensor *m = tg_tensor_new(t, tg_tensor_dtype(in[0]), tg_tensor_ndim(in[0]), dims, "mask");
    for (size_t i = 0; i < tg_tensor_size(m); i++)
        ((tg_tensor_dtype(m) == TG_F32) ? (void)(((float *)tg_tensor_data(m))[i] = (float)(i % 3 == 0))
                                        : (void)(((double *)tg_tensor_data(m))[i] = (double)(i % 3 == 0)));
    return tg_where(t, m, in[0], in[1]);
}
/* A constant operand (no gradient, so no tangent: the rules' one-operand branches) of the
 * case's second shape, values 0.5 … 2 (a safe divisor) */
static tg_tensor *
const_operand(tg_tape *t, tg_tensor *like, const struct op_case *c)
{
    tg_tensor *k = tg_tensor_new(t, tg_tensor_dtype(like), c->ndim[1], c->dims[1], "const");
    size_t n = tg_tensor_size(k);
    double *vals = malloc((n ? n : 1) * sizeof *vals);
    for (size_t i = 0; i < n; i++)
        vals[i] = 0.5 + 0.25 * (double)(i % 7);
    tg_tensor_write(k, vals, n);
    free(vals);
    return k;
}
/* .ta: the constant is the first operand */
static tg_tensor *ap_div_const(tg_tape *t, tg_tensor **in, const struct op_case *c)
{
    tg_tensor *k = const_operand(t, in[0], c);
    return c->ta ? tg_div(t, k, in[0]) : tg_div(t, in[0], k);
}
/* max(x, x): every element a tie, both tangents ẋ (the even split must give ẋ, not 2ẋ or 0) */
static tg_tensor *ap_maximum_self(tg_tape *t, tg_tensor **in, const struct op_case *c) { return tg_maximum(t, in[0], in[0]); }
/* x' = detach(x) + (z - detach(z)): x's values exactly (z - z = 0) with z's tangent, so x and x'
 * tie everywhere with different tangents; finite differences cannot see such a tie (they move
 * x' with x), so these rows are judged by the adjoint check alone (.stop_gradient) */
static tg_tensor *
tie_with_other_tangent(tg_tape *t, tg_tensor *x, tg_tensor *z)
{
    return tg_add(t, tg_detach(t, x), tg_sub(t, z, tg_detach(t, z)));
}
static tg_tensor *ap_maximum_tie(tg_tape *t, tg_tensor **in, const struct op_case *c)
{
    return tg_maximum(t, in[0], tie_with_other_tangent(t, in[0], in[1]));
}
/* bias_act with one operand a constant: .ta the bias (X = in[0]), else X (b = in[0]) */
static tg_tensor *ap_bias_act_const(tg_tape *t, tg_tensor **in, const struct op_case *c)
{
    tg_tensor *k = const_operand(t, in[0], c);
    return tg_bias_act(t, c->ta ? in[0] : k, c->ta ? k : in[0], (tg_activation)c->axis);
}
static tg_tensor *ap_minimum_const(tg_tape *t, tg_tensor **in, const struct op_case *c)
{
    tg_tensor *k = const_operand(t, in[0], c);
    return c->ta ? tg_minimum(t, k, in[0]) : tg_minimum(t, in[0], k);
}
/* where(m, x, constant), or where(m, constant, x) with .ta; m in the shape of the first */
static tg_tensor *ap_where_const(tg_tape *t, tg_tensor **in, const struct op_case *c)
{
    tg_tensor *k = const_operand(t, in[0], c), *a = c->ta ? k : in[0], *b = c->ta ? in[0] : k;
    int64_t dims[TG_MAX_DIMS];
    for (int i = 0; i < tg_tensor_ndim(a); i++)
        dims[i] = tg_tensor_dim(a, i);
    tg_tensor *m = tg_tensor_new(t, tg_tensor_dtype(a), tg_tensor_ndim(a), dims, "mask");
    size_t n = tg_tensor_size(m);
    double *vals = malloc((n ? n : 1) * sizeof *vals);
    for (size_t i = 0; i < n; i++)
        vals[i] = (double)(i % 3 == 0);
    tg_tensor_write(m, vals, n);
    free(vals);
    return tg_where(t, m, a, b);
}
static tg_tensor *ap_max02(tg_tape *t, tg_tensor **in, const struct op_case *c) { return tg_max_axes(t, in[0], axes_02, 2, c->ta); }
/* max over the last axis of [x, x] (ties, the same tangent) or [x, x'] (ties, x' as above) */
static tg_tensor *ap_max_ties(tg_tape *t, tg_tensor **in, const struct op_case *c)
{
    tg_tensor *xs[2] = {in[0], c->n_in == 2 ? tie_with_other_tangent(t, in[0], in[1]) : in[0]};
    return tg_max_axes(t, tg_concat(t, xs, 2, -1), axes_last, 1, c->ta);
}
static tg_tensor *ap_min_last(tg_tape *t, tg_tensor **in, const struct op_case *c) { return tg_min_axes(t, in[0], axes_last, 1, c->ta); }
static tg_tensor *ap_var1(tg_tape *t, tg_tensor **in, const struct op_case *c) { return tg_var(t, in[0], axes_1, 1, c->axis, c->ta); }
static tg_tensor *ap_sum02(tg_tape *t, tg_tensor **in, const struct op_case *c) { return tg_sum_axes(t, in[0], axes_02, 2, c->ta); }
static tg_tensor *ap_mean02(tg_tape *t, tg_tensor **in, const struct op_case *c) { return tg_mean_axes(t, in[0], axes_02, 2, c->ta); }
static tg_tensor *ap_lse02(tg_tape *t, tg_tensor **in, const struct op_case *c) { return tg_logsumexp(t, in[0], axes_02, 2, c->ta); }
static tg_tensor *ap_lse_last(tg_tape *t, tg_tensor **in, const struct op_case *c) { return tg_logsumexp(t, in[0], axes_last, 1, c->ta); }
static tg_tensor *ap_softmax(tg_tape *t, tg_tensor **in, const struct op_case *c) { return tg_softmax(t, in[0], c->axis); }
static tg_tensor *ap_log_softmax(tg_tape *t, tg_tensor **in, const struct op_case *c) { return tg_log_softmax(t, in[0], c->axis); }
static tg_tensor *ap_reshape(tg_tape *t, tg_tensor **in, const struct op_case *c)
{
    const int64_t dims[] = {-1, 2};
    return tg_reshape(t, in[0], 2, dims);
}
static tg_tensor *ap_permute(tg_tape *t, tg_tensor **in, const struct op_case *c)
{
    const int perm[] = {2, 0, 1};
    return tg_permute(t, in[0], perm);
}
static tg_tensor *ap_expand(tg_tape *t, tg_tensor **in, const struct op_case *c)
{
    const int64_t dims[] = {2, -1, 4};
    return tg_expand(t, in[0], 3, dims);
}
static tg_tensor *ap_slice(tg_tape *t, tg_tensor **in, const struct op_case *c)
{
    const int64_t start[] = {1, -4}, stop[] = {TG_END, 5}, step[] = {2, 3};
    return tg_slice(t, in[0], start, stop, step);
}
static tg_tensor *ap_concat(tg_tape *t, tg_tensor **in, const struct op_case *c)
{
    tg_tensor *xs[] = {in[0], in[1], in[0], in[1], in[1], in[0]}; /* 6: the arena input list */
    return tg_concat(t, xs, 6, c->axis);
}
static tg_tensor *ap_stack(tg_tape *t, tg_tensor **in, const struct op_case *c)
{
    tg_tensor *xs[] = {in[0], in[1], in[0]};
    return tg_stack(t, xs, 3, c->axis);
}
static tg_tensor *ap_pad(tg_tape *t, tg_tensor **in, const struct op_case *c)
{
    const int64_t before[] = {1, 0, 2}, after[] = {0, 2, 1};
    return tg_pad(t, in[0], before, after, 0.25);
}
static tg_tensor *ap_index_select(tg_tape *t, tg_tensor **in, const struct op_case *c)
{
    const int64_t index[] = {2, 0, 2, 1, 2}; /* repeats: the VJP's scatter-add */
    return tg_index_select(t, in[0], c->axis, index, 5);
}
static tg_tensor *ap_gather(tg_tape *t, tg_tensor **in, const struct op_case *c)
{
    const int64_t index[] = {0, 2, 1, 1, 0, 0, 3, 3}, dims[] = {2, 4};
    return tg_gather(t, in[0], 1, index, 2, dims);
}
/* detach(x) ⊙ x: d/dx through the second factor only (x ⊙ x would give 2x) */
static tg_tensor *ap_detach(tg_tape *t, tg_tensor **in, const struct op_case *c) { return tg_mul(t, tg_detach(t, in[0]), in[0]); }
static tg_tensor *ap_bmm(tg_tape *t, tg_tensor **in, const struct op_case *c) { return tg_bmm(t, in[0], c->ta, in[1], c->tb); }
/* conv2d: .axis selects the configuration (0: stride 2, padding 1, dilation 1; 1: padding
 * "same" with dilation 2; 2: 2 groups, stride (1, 2)); conv1d: stride 2, padding 1 */
static tg_tensor *
ap_conv2d(tg_tape *t, tg_tensor **in, const struct op_case *c)
{
    tg_conv_options o = tg_conv_defaults();
    if (c->axis == 0)
        o.stride[0] = o.stride[1] = 2, o.padding[0] = o.padding[1] = 1;
    else if (c->axis == 1)
        o.padding_same = true, o.dilation[0] = o.dilation[1] = 2;
    else
        o.groups = 2, o.stride[1] = 2;
    return tg_conv2d(t, in[0], in[1], NULL, &o);
}
static tg_tensor *
ap_conv1d(tg_tape *t, tg_tensor **in, const struct op_case *c)
{
    tg_conv_options o = tg_conv_defaults();
    o.stride[0] = 2, o.padding[0] = 1;
    return tg_conv1d(t, in[0], in[1], NULL, &o);
}
/* conv_transpose2d: .axis selects the configuration (0: stride 2, padding 1, output_padding
 * 1; 1: dilation 2, padding 2, output_padding 1 (below the dilation, stride 1); 2: 2 groups,
 * stride (1, 2), output_padding (0, 1)) */
static tg_tensor *
ap_conv_transpose2d(tg_tape *t, tg_tensor **in, const struct op_case *c)
{
    tg_conv_transpose_options o = tg_conv_transpose_defaults();
    if (c->axis == 0)
        o.stride[0] = o.stride[1] = 2, o.padding[0] = o.padding[1] = 1,
        o.output_padding[0] = o.output_padding[1] = 1;
    else if (c->axis == 1)
        o.dilation[0] = o.dilation[1] = 2, o.padding[0] = o.padding[1] = 2,
        o.output_padding[0] = o.output_padding[1] = 1;
    else
        o.groups = 2, o.stride[1] = 2, o.output_padding[1] = 1;
    return tg_conv_transpose2d(t, in[0], in[1], NULL, &o);
}
/* A constant (no tangent, no gradient) of the given shape, the same values in every call. */
static tg_tensor *
constant_of(tg_tape *t, tg_dtype dt, int ndim, const int64_t *dims)
{
    tg_tensor *k = tg_tensor_new(t, dt, ndim, dims, "constant");
    tg_rng *r = tg_rng_new(31);
    tg_tensor_fill_uniform(k, r, -1, 1);
    tg_rng_free(r);
    return k;
}
/* conv2d (.ta false) or conv_transpose2d (.ta true) with a bias, a 3x3 kernel and padding 1;
 * .axis picks the operands that are inputs (with a tangent), the others are constants, so
 * that each term of the JVP is checked alone and with the others:
 *   0: in[0] = x, in[1] = [w | b] (O, C, 3, 4), or (C, O, 3, 4) for conv_transpose2d:
 *      w = in[1][:, :, :, :3], b = in[1][:, 0, 0, 3] (in[1][0, :, 0, 3])
 *   1: in[0] = x, in[1] = b, w constant
 *   2: in[0] = [w | b] as in 0, x a constant shaped as dims[1]
 *   3: in[0] = b, x (dims[1]) and w constant */
static tg_tensor *
ap_conv_bias(tg_tape *t, tg_tensor **in, const struct op_case *c)
{
    tg_dtype dt = tg_tensor_dtype(in[0]);
    bool x_given = c->axis < 2, w_given = c->axis % 2 == 0;
    tg_tensor *x = x_given ? in[0] : constant_of(t, dt, 4, c->dims[1]), *w, *b;
    if (w_given) {
        tg_tensor *wb = in[x_given];
        int64_t out_c = tg_tensor_dim(wb, c->ta ? 1 : 0);
        w = tg_slice(t, wb, (const int64_t[]){0, 0, 0, 0},
                     (const int64_t[]){TG_END, TG_END, TG_END, 3}, NULL);
        b = tg_reshape(t,
                       tg_slice(t, wb, (const int64_t[]){0, 0, 0, 3},
                                c->ta ? (const int64_t[]){1, TG_END, 1, 4}
                                      : (const int64_t[]){TG_END, 1, 1, 4},
                                NULL),
                       1, &out_c);
    } else {
        b = in[x_given];
        int64_t ch = tg_tensor_dim(x, 1), out_c = tg_tensor_dim(b, 0);
        w = constant_of(t, dt, 4,
                        c->ta ? (const int64_t[]){ch, out_c, 3, 3}
                              : (const int64_t[]){out_c, ch, 3, 3});
    }
    if (c->ta) {
        tg_conv_transpose_options o = tg_conv_transpose_defaults();
        o.padding[0] = o.padding[1] = 1;
        return tg_conv_transpose2d(t, x, w, b, &o);
    }
    tg_conv_options o = tg_conv_defaults();
    o.padding[0] = o.padding[1] = 1;
    return tg_conv2d(t, x, w, b, &o);
}
/* dropout p = 0.4 with a generator seeded afresh each call (the same mask in every re-run);
 * batch_norm with running statistics made on the tape: .axis 0 training with γ and β both
 * in[1] (its gradient is dγ + dβ), 1 training without affine, 2 evaluation, 3 training with γ
 * = in[1] only, 4 evaluation with β = in[1] only, 5 training with γ = β = in[0] and x a
 * constant shaped as dims[1]; .c the fused activation (tg_batch_norm_act; 0 none) */
static tg_tensor *
ap_dropout(tg_tape *t, tg_tensor **in, const struct op_case *c)
{
    tg_rng *r = tg_rng_new(77);
    tg_tensor *y = tg_dropout(t, in[0], 0.4, r);
    tg_rng_free(r);
    return y;
}
static tg_tensor *
ap_batch_norm(tg_tape *t, tg_tensor **in, const struct op_case *c)
{
    tg_dtype dt = tg_tensor_dtype(in[0]);
    bool x_given = c->axis != 5;
    tg_tensor *x = x_given ? in[0] : constant_of(t, dt, c->ndim[1], c->dims[1]);
    tg_tensor *affine = x_given ? in[1] : in[0];
    int64_t ch = tg_tensor_dim(x, 1);
    tg_tensor *rm = tg_tensor_new(t, dt, 1, &ch, "running_mean");
    tg_tensor *rv = tg_tensor_new(t, dt, 1, &ch, "running_var");
    for (int64_t k = 0; k < ch; k++) {
        double m = 0.1 * (double)k - 0.2, v = 0.5 + 0.25 * (double)k;
        ((dt == TG_F32) ? (void)(((float *)tg_tensor_data(rm))[k] = (float)m)
                        : (void)(((double *)tg_tensor_data(rm))[k] = m));
        ((dt == TG_F32) ? (void)(((float *)tg_tensor_data(rv))[k] = (float)v)
                        : (void)(((double *)tg_tensor_data(rv))[k] = v));
    }
    bool eval = c->axis == 2 || c->axis == 4;
    tg_tape_set_training(t, !eval);
    tg_tensor *y = tg_batch_norm_act(t, x, c->axis == 1 || c->axis == 4 ? NULL : affine,
                                     c->axis == 1 || c->axis == 3 ? NULL : affine, rm, rv, 0.1,
                                     1e-5, (tg_activation)c->c);
    tg_tape_set_training(t, true);
    return y;
}
/* group_norm: 2 groups, γ = β = in[1] when given (.axis 0), none (.axis 1), β = in[1] only
 * (.axis 2), γ = β = in[0] with x a constant shaped as dims[1] (.axis 3) */
static tg_tensor *
ap_group_norm(tg_tape *t, tg_tensor **in, const struct op_case *c)
{
    if (c->axis == 3)
        return tg_group_norm(t, constant_of(t, tg_tensor_dtype(in[0]), c->ndim[1], c->dims[1]),
                             2, in[0], in[0], 1e-5);
    tg_tensor *g = c->axis == 0 ? in[1] : NULL, *b = c->axis != 1 ? in[1] : NULL;
    return tg_group_norm(t, in[0], 2, g, b, 1e-5);
}
/* A constant operand, which no tangent reaches (its tangent stays NULL): 0.9 sin(0.7 i + 0.3) */
static tg_tensor *
fixed_operand(tg_tape *t, tg_dtype dt, int ndim, const int64_t *dims, const char *name)
{
    tg_tensor *x = tg_tensor_new(t, dt, ndim, dims, name);
    size_t n = tg_tensor_size(x);
    double *vals = malloc((n ? n : 1) * sizeof *vals);
    for (size_t i = 0; i < n; i++)
        vals[i] = 0.9 * sin(0.7 * (double)i + 0.3);
    tg_tensor_write(x, vals, n);
    free(vals);
    return x;
}

/* scaled_dot_product_attention: in[1] holds k and v side by side on its last axis (k the
 * first d columns, d = in[0]'s last size); .axis 1 packs a differentiable additive mask after
 * q's d columns of in[0] (its width is S), .axis 2 adds a constant mask with -inf entries,
 * .axis 3 both (their sum); .ta: causal. The differentiable mask is whole (.c 0), or only
 * batch 0 and head 0 of it, broadcast over batch and heads (.c 1), or only batch 0 and query
 * row 0, broadcast over batch and rows (.c 2). The constant mask has -inf at every third
 * entry, never a whole row (.c 0), or also on all of query row 1 (.c 3: a fully masked row).
 * .axis 4: in[0] is the one operand with a tangent, q (.c 0), k (1), v (2) or the mask (3), of
 * a rank-4 attention with in[0]'s batch and heads, T 3, S 5, d 4, dv 3; the others are
 * constants. */
static tg_tensor *
ap_sdpa(tg_tape *t, tg_tensor **in, const struct op_case *c)
{
    if (c->axis == 4) {
        int64_t b = tg_tensor_dim(in[0], 0), h = tg_tensor_dim(in[0], 1);
        const int64_t dims[4][4] = {{b, h, 3, 4}, {b, h, 5, 4}, {b, h, 5, 3}, {b, h, 3, 5}};
        static const char *const names[4] = {"q", "k", "v", "mask"};
        tg_tensor *x[4];
        for (int i = 0; i < 4; i++)
            x[i] = i == (int)c->c ? in[0]
                                  : fixed_operand(t, tg_tensor_dtype(in[0]), 4, dims[i], names[i]);
        return tg_scaled_dot_product_attention(t, x[0], x[1], x[2], x[3], c->ta, 0);
    }
    int r = tg_tensor_ndim(in[0]);
    int64_t s = tg_tensor_dim(in[1], r - 2), d = tg_tensor_dim(in[0], r - 1);
    if (c->axis == 1 || c->axis == 3)
        d -= s;
    int64_t start[4] = {0, 0, 0, 0}, stop[4] = {TG_END, TG_END, TG_END, TG_END};
    stop[r - 1] = d;
    tg_tensor *q = tg_slice(t, in[0], start, stop, NULL);
    tg_tensor *k = tg_slice(t, in[1], start, stop, NULL);
    start[r - 1] = d, stop[r - 1] = TG_END;
    tg_tensor *v = tg_slice(t, in[1], start, stop, NULL);
    tg_tensor *mask = NULL;
    if (c->axis == 1 || c->axis == 3) {
        if (c->c == 1)
            for (int i = 0; i < r - 2; i++)
                stop[i] = 1;
        if (c->c == 2)
            stop[0] = stop[r - 2] = 1;
        mask = tg_slice(t, in[0], start, stop, NULL);
    }
    if (c->axis == 2 || c->axis == 3) {
        int64_t tl = tg_tensor_dim(in[0], r - 2);
        tg_tensor *fixed = tg_tensor_new(t, tg_tensor_dtype(in[0]), 2, (int64_t[]){tl, s}, "mask");
        double *vals = malloc((size_t)(tl * s) * sizeof *vals);
        for (int64_t i = 0; i < tl * s; i++)
            vals[i] = (i % s != 0 && i % 3 == 1) || (c->c == 3 && i / s == 1)
                          ? -INFINITY
                          : 0.25 * (double)(i % 5) - 0.5;
        tg_tensor_write(fixed, vals, (size_t)(tl * s));
        free(vals);
        mask = mask ? tg_add(t, mask, fixed) : fixed;
    }
    return tg_scaled_dot_product_attention(t, q, k, v, mask, c->ta, 0);
}

/* layer_norm over the last .axis axes, γ = β = in[1] (.ta), only γ = in[1] (.ta, .c 1), only
 * β = in[1] (.ta, .c 2) or none; rms_norm likewise, γ = in[1] (.ta) or none. .c 3: x is a
 * constant of 4 rows (no tangent) and in[0] the weight (and layer_norm's bias). */
static tg_tensor *
norm_constant_x(tg_tape *t, tg_tensor *weight)
{
    int64_t dims[TG_MAX_DIMS] = {4};
    int n = tg_tensor_ndim(weight);
    for (int i = 0; i < n; i++)
        dims[1 + i] = tg_tensor_dim(weight, i);
    return fixed_operand(t, tg_tensor_dtype(weight), 1 + n, dims, "x");
}
static tg_tensor *
ap_layer_norm(tg_tape *t, tg_tensor **in, const struct op_case *c)
{
    if (c->c == 3)
        return tg_layer_norm(t, norm_constant_x(t, in[0]), c->axis, in[0], in[0], 1e-5);
    tg_tensor *g = c->ta ? in[1] : NULL;
    return tg_layer_norm(t, in[0], c->axis, c->c == 2 ? NULL : g, c->c == 1 ? NULL : g, 1e-5);
}
static tg_tensor *
ap_rms_norm(tg_tape *t, tg_tensor **in, const struct op_case *c)
{
    if (c->c == 3)
        return tg_rms_norm(t, norm_constant_x(t, in[0]), c->axis, in[0], 1e-6);
    return tg_rms_norm(t, in[0], c->axis, c->ta ? in[1] : NULL, 1e-6);
}

/* lstm_cell (.axis 0) and gru_cell (.axis 1) with H = 2 from two inputs, so that every
 * operand is checked: in[0] = [xw | state] (B, G·H + S·H), in[1] = [W_hh | b_ih | b_hh]
 * (G·H, H + 2); .ta: no biases */
static tg_tensor *
ap_cell(tg_tape *t, tg_tensor **in, const struct op_case *c)
{
    int64_t h = 2, g = c->axis == 0 ? 4 : 3, sw = c->axis == 0 ? 2 : 1, b = c->dims[0][0];
    tg_tensor *xw = tg_slice(t, in[0], (const int64_t[]){0, 0}, (const int64_t[]){b, g * h}, NULL);
    tg_tensor *st = tg_slice(t, in[0], (const int64_t[]){0, g * h},
                             (const int64_t[]){b, g * h + sw * h}, NULL);
    tg_tensor *w = tg_slice(t, in[1], (const int64_t[]){0, 0}, (const int64_t[]){g * h, h}, NULL);
    tg_tensor *bias[2] = {NULL, NULL};
    for (int k = 0; k < 2 && !c->ta; k++)
        bias[k] = tg_reshape(t, tg_slice(t, in[1], (const int64_t[]){0, h + k},
                                         (const int64_t[]){g * h, h + k + 1}, NULL),
                             1, (const int64_t[]){g * h});
    return c->axis == 0 ? tg_lstm_cell(t, xw, st, w, bias[0], bias[1])
                        : tg_gru_cell(t, xw, st, w, bias[0], bias[1]);
}
/* pools: (3x3) windows, stride 2, padding 1; max_pool2d .axis 1: (2x2), stride 2, no padding
 * (the kernel's path without bounds checks) */
static tg_tensor *
ap_max_pool2d(tg_tape *t, tg_tensor **in, const struct op_case *c)
{
    if (c->axis == 1)
        return tg_max_pool2d(t, in[0], (const int64_t[]){2, 2}, NULL, NULL);
    return tg_max_pool2d(t, in[0], (const int64_t[]){3, 3}, (const int64_t[]){2, 2},
                         (const int64_t[]){1, 1});
}
static tg_tensor *
ap_avg_pool2d(tg_tape *t, tg_tensor **in, const struct op_case *c)
{
    return tg_avg_pool2d(t, in[0], (const int64_t[]){3, 3}, (const int64_t[]){2, 2},
                         (const int64_t[]){1, 1});
}
static const int32_t cls_labels[] = {1, 0, 2, 2, 1};
static const double cls_weights[] = {0.5, 2.0, 1.25};
static tg_tensor *ap_nll(tg_tape *t, tg_tensor **in, const struct op_case *c)
{
    return tg_nll_loss(t, in[0], cls_labels, 5, c->axis, c->ta ? cls_weights : NULL);
}
static tg_tensor *ap_cross_entropy(tg_tape *t, tg_tensor **in, const struct op_case *c)
{
    return tg_cross_entropy(t, in[0], cls_labels, 5, c->axis, c->ta ? cls_weights : NULL, c->c);
}
static tg_tensor *ap_bce(tg_tape *t, tg_tensor **in, const struct op_case *c) { return tg_bce_with_logits(t, in[0], in[1]); }
static tg_tensor *ap_l1(tg_tape *t, tg_tensor **in, const struct op_case *c) { return tg_l1(t, in[0], in[1]); }
static tg_tensor *ap_huber(tg_tape *t, tg_tensor **in, const struct op_case *c) { return tg_huber(t, in[0], in[1], c->c); }
static tg_tensor *ap_smooth_l1(tg_tape *t, tg_tensor **in, const struct op_case *c) { return tg_smooth_l1(t, in[0], in[1], c->c); }

#define M2(r, c) {r, c}
#define ONE(name, fn, d0, d1, ...)                                                            \
    {.label = name, .n_in = 1, .ndim = {2, 0}, .dims = {M2(d0, d1)}, .apply = fn, __VA_ARGS__}
#define D1(a) {a}
#define D3(a, b, c) {a, b, c}
#define D4(a, b, c, d) {a, b, c, d}
/* Inputs of any rank: ND(name, fn, n_in, ndim0, ndim1, dims0, dims1, ...) */
#define ND(name, fn, nin, nd0, nd1, d0, d1, ...)                                                   \
    {.label = name, .n_in = nin, .ndim = {nd0, nd1}, .dims = {d0, d1}, .apply = fn, __VA_ARGS__}
#define TWO(name, fn, a0, a1, b0, b1, ...)                                                     \
    {.label = name, .n_in = 2, .ndim = {2, 2}, .dims = {M2(a0, a1), M2(b0, b1)}, .apply = fn,       \
     __VA_ARGS__}

static const struct op_case cases[] = {
    TWO("matmul (3x4)(4x5)", ap_matmul, 3, 4, 4, 5, .axis = 0),
    TWO("matmul (1x1)(1x1)", ap_matmul, 1, 1, 1, 1, .axis = 0),
    TWO("matmul (1x4)(4x1)", ap_matmul, 1, 4, 4, 1, .axis = 0),
    TWO("matmul (4x1)(1x3)", ap_matmul, 4, 1, 1, 3, .axis = 0),
    TWO("matmul (4x3)ᵀ(4x5)", ap_matmul, 4, 3, 4, 5, .ta = true),
    TWO("matmul (3x4)(5x4)ᵀ", ap_matmul, 3, 4, 5, 4, .tb = true),
    TWO("matmul (4x3)ᵀ(5x4)ᵀ", ap_matmul, 4, 3, 5, 4, .ta = true, .tb = true),
    TWO("matmul of op outputs (3x4)(5x4)ᵀ: fresh dA and dB written", ap_matmul_ops, 3, 4, 5, 4,
        .tb = true),
    TWO("matmul of op outputs (4x3)ᵀ(4x5): fresh dA and dB written", ap_matmul_ops, 4, 3, 4, 5,
        .ta = true),
    TWO("matmul of op outputs (3x4)(4x5) taken twice: written, then added to", ap_matmul_ops, 3,
        4, 4, 5, .c = 1),
    ONE("matmul of one op output A'·A'ᵀ (3x4): written by dA, added to by dB",
        ap_matmul_self_ops, 3, 4, .axis = 0),
    ONE("transpose (3x4)", ap_transpose, 3, 4, .axis = 0),
    ONE("transpose (1x5)", ap_transpose, 1, 5, .axis = 0),
    TWO("add (3x4)+(3x4)", ap_add, 3, 4, 3, 4, .axis = 0),
    TWO("add (3x4)+(3x1) bias, examples as columns", ap_add, 3, 4, 3, 1, .axis = 0),
    TWO("add (3x4)+(1x4) bias, examples as rows", ap_add, 3, 4, 1, 4, .axis = 0),
    TWO("add (3x1)+(1x4) outer", ap_add, 3, 1, 1, 4, .axis = 0),
    TWO("add (1x1)+(3x4)", ap_add, 1, 1, 3, 4, .axis = 0),
    TWO("add (1x1)+(1x1)", ap_add, 1, 1, 1, 1, .axis = 0),
    TWO("sub (3x4)-(3x1)", ap_sub, 3, 4, 3, 1, .axis = 0),
    TWO("sub (1x4)-(3x4)", ap_sub, 1, 4, 3, 4, .axis = 0),
    TWO("mul (3x4)⊙(3x4)", ap_mul, 3, 4, 3, 4, .axis = 0),
    TWO("mul (3x4)⊙(1x4)", ap_mul, 3, 4, 1, 4, .axis = 0),
    /* rows shorter than TG__COLSUM_SHORT: the bias's column sums run in register blocks of
     * TG__COLSUM_BLOCK columns, then a tail column by column (loops.h) */
    TWO("add (4x21)+(1x21) bias, short rows: a column block and a tail", ap_add, 4, 21, 1, 21,
        .axis = 0),
    TWO("mul (3x18)⊙(1x18), short rows: a column block and a tail", ap_mul, 3, 18, 1, 18,
        .axis = 0),
    TWO("mul (4x1)⊙(4x3)", ap_mul, 4, 1, 4, 3, .axis = 0),
    /* every fast path of elementwise.c: FULL·ROW, ROW·FULL, FULL·COL, COL·FULL (a scalar is a
     * COL of one row) for each op, and ranks 1 and 3 */
    TWO("add (1x4)+(3x4) row on the left", ap_add, 1, 4, 3, 4, .axis = 0),
    TWO("sub (3x4)-(1x4) row", ap_sub, 3, 4, 1, 4, .axis = 0),
    TWO("sub (3x1)-(3x4) column on the left", ap_sub, 3, 1, 3, 4, .axis = 0),
    TWO("sub (3x4)-(1x1) scalar", ap_sub, 3, 4, 1, 1, .axis = 0),
    TWO("mul (3x4)⊙(3x1) column", ap_mul, 3, 4, 3, 1, .axis = 0),
    TWO("mul (1x4)⊙(3x4) row on the left", ap_mul, 1, 4, 3, 4, .axis = 0),
    TWO("mul (1x1)⊙(3x4) scalar", ap_mul, 1, 1, 3, 4, .axis = 0),
    ND("add (2x3x4)+(4) rank-1 row", ap_add, 2, 3, 1, D3(2, 3, 4), D1(4), .axis = 0),
    ND("mul (2x3x4)⊙(2x3x1) column", ap_mul, 2, 3, 3, D3(2, 3, 4), D3(2, 3, 1), .axis = 0),
    ND("sub (2x3x4)-(1x3x1) middle (generic loop)", ap_sub, 2, 3, 3, D3(2, 3, 4), D3(1, 3, 1), .axis = 0),
    ONE("scale (3x4)", ap_scale, 3, 4, .c = -2.5),
    ONE("sum all (3x4)", ap_sum, 3, 4, .axis = -1),
    ONE("sum axis 0 (3x4)", ap_sum, 3, 4, .axis = 0),
    ONE("sum axis 1 (3x4)", ap_sum, 3, 4, .axis = 1),
    ONE("sum all (1x1)", ap_sum, 1, 1, .axis = -1),
    ONE("mean all (3x4)", ap_mean, 3, 4, .axis = -1),
    ONE("mean axis 0 (3x4)", ap_mean, 3, 4, .axis = 0),
    ONE("mean axis 1 (1x5)", ap_mean, 1, 5, .axis = 1),
    ND("sum axis 1 (2x3x4)", ap_sum, 1, 3, 0, D3(2, 3, 4), D1(0), .axis = 1),
    ND("mean axis 2 (2x3x4)", ap_mean, 1, 3, 0, D3(2, 3, 4), D1(0), .axis = 2),
    ND("sum axis 0 (2x3x4)", ap_sum, 1, 3, 0, D3(2, 3, 4), D1(0), .axis = 0),
    ONE("identity (3x4)", ap_identity, 3, 4, .axis = 0),
    ONE("sigmoid (3x4)", ap_sigmoid, 3, 4, .lo = -6, .hi = 6),
    ONE("sigmoid (1x1)", ap_sigmoid, 1, 1, .axis = 0),
    ONE("tanh (3x4)", ap_tanh, 3, 4, .lo = -3, .hi = 3),
    ONE("tanh (4x1)", ap_tanh, 4, 1, .axis = 0),
    ONE("relu (3x4)", ap_relu, 3, 4, .avoid_kink = true),
    ONE("leaky_relu (3x4)", ap_leaky, 3, 4, .avoid_kink = true, .c = 0.1),
    ONE("softplus (3x4)", ap_softplus, 3, 4, .lo = -8, .hi = 8),
    ONE("gelu (3x4)", ap_gelu, 3, 4, .lo = -4, .hi = 4),
    TWO("mse_half (3x4) batch axis 1", ap_mse_half, 3, 4, 3, 4, .axis = 1),
    TWO("mse_half (4x3) batch axis 0", ap_mse_half, 4, 3, 4, 3, .axis = 0),
    TWO("mse_half (1x1)", ap_mse_half, 1, 1, 1, 1, .axis = 1),
    TWO("mse (3x4)", ap_mse, 3, 4, 3, 4, .axis = 0),
    TWO("mse (1x5)", ap_mse, 1, 5, 1, 5, .axis = 0),
    ONE("softmax_xent (5x4) classes on axis 1", ap_xent, 5, 4, .axis = 1, .lo = -4, .hi = 4),
    ONE("softmax_xent (4x6) classes on axis 0", ap_xent, 4, 6, .axis = 0, .lo = -4, .hi = 4),
    ONE("softmax_xent (1x4) one example", ap_xent, 1, 4, .axis = 1),
    ONE("softmax_xent (3x20) classes on axis 1, a full run of lanes", ap_xent, 3, 20, .axis = 1, .lo = -4, .hi = 4),
    TWO("bias_act (4x3)+(1x3) tanh, examples as rows", ap_bias_act, 4, 3, 1, 3,
        .axis = TG_ACT_TANH, .lo = -2, .hi = 2),
    TWO("bias_act (3x4)+(3x1) sigmoid, examples as columns", ap_bias_act, 3, 4, 3, 1,
        .axis = TG_ACT_SIGMOID, .lo = -4, .hi = 4),
    TWO("bias_act (3x5)+(1x5) relu", ap_bias_act, 3, 5, 1, 5, .axis = TG_ACT_RELU,
        .avoid_kink = true),
    TWO("bias_act (3x9)+(3x1) leaky_relu", ap_bias_act, 3, 9, 3, 1, .axis = TG_ACT_LEAKY_RELU,
        .avoid_kink = true),
    TWO("bias_act (2x3)+(1x3) softplus", ap_bias_act, 2, 3, 1, 3, .axis = TG_ACT_SOFTPLUS),
    TWO("bias_act (3x2)+(3x1) gelu", ap_bias_act, 3, 2, 3, 1, .axis = TG_ACT_GELU),
    TWO("bias_act (1x1)+(1x1) identity", ap_bias_act, 1, 1, 1, 1, .axis = TG_ACT_IDENTITY),
    TWO("bias_act (2x1030)+(1x1030) tanh, rows longer than a block", ap_bias_act, 2, 1030, 1, 1030,
        .axis = TG_ACT_TANH),
    TWO("bias_act (5x37)+(1x37) tanh, short rows: two column blocks and a tail", ap_bias_act, 5,
        37, 1, 37, .axis = TG_ACT_TANH),
    TWO("bias_act of op outputs (4x5)+(1x5) tanh: fresh dX and db written", ap_bias_act_ops, 4,
        5, 1, 5, .axis = TG_ACT_TANH),
    TWO("bias_act of op outputs (3x4)+(3x1) gelu, examples as columns", ap_bias_act_ops, 3, 4,
        3, 1, .axis = TG_ACT_GELU),
    TWO("bias_act of op outputs (4x5)+(1x5) sigmoid, X' read twice: dX added to", ap_bias_act_ops,
        4, 5, 1, 5, .axis = TG_ACT_SIGMOID, .ta = true),
    ND("bias_act (4x3)+constant (1x3) gelu", ap_bias_act_const, 1, 2, 2, M2(4, 3), M2(1, 3),
       .axis = TG_ACT_GELU, .ta = true),
    ND("bias_act constant (3x4)+(3x1) softplus", ap_bias_act_const, 1, 2, 2, M2(3, 1), M2(3, 4),
       .axis = TG_ACT_SOFTPLUS),
    ND("bias_act constant (2x5)+(1x5) tanh", ap_bias_act_const, 1, 2, 2, M2(1, 5), M2(2, 5),
       .axis = TG_ACT_TANH),
    /* the tensor-algebra ops; .ta is keepdims for reductions, weights for the class losses */
    ONE("neg (3x4)", ap_neg, 3, 4, .axis = 0),
    ONE("exp (3x4)", ap_exp, 3, 4, .lo = -3, .hi = 3),
    ONE("log (3x4)", ap_log, 3, 4, .lo = 0.2, .hi = 3),
    ONE("log1p (3x4)", ap_log1p, 3, 4, .lo = -0.8, .hi = 3),
    ONE("sqrt (3x4)", ap_sqrt, 3, 4, .lo = 0.2, .hi = 3),
    ONE("square (3x4)", ap_square, 3, 4, .axis = 0),
    ONE("abs (3x4)", ap_abs, 3, 4, .avoid_kink = true),
    ONE("pow (3x4) p = 2.5", ap_pow, 3, 4, .lo = 0.2, .hi = 2, .c = 2.5),
    ONE("pow (3x4) p = -1.5", ap_pow, 3, 4, .lo = 0.2, .hi = 2, .c = -1.5),
    ONE("pow (3x4) p = 3 negative base", ap_pow, 3, 4, .lo = -2, .hi = 2, .c = 3),
    ONE("clamp (3x4) [-1, 1]", ap_clamp, 3, 4, .c = 1),
    ONE("silu (3x4)", ap_silu, 3, 4, .lo = -6, .hi = 6),
    ONE("elu (3x4)", ap_elu, 3, 4, .avoid_kink = true, .c = 1.5),
    ONE("gelu_tanh (3x4)", ap_gelu_tanh, 3, 4, .lo = -4, .hi = 4),
    TWO("div (3x4)/(3x1)", ap_div, 3, 4, 3, 1, .lo = 0.5, .hi = 2),
    ND("div (2x3x4)/(1x3x1) middle", ap_div, 2, 3, 3, D3(2, 3, 4), D3(1, 3, 1), .lo = 0.5, .hi = 2),
    TWO("div (3x4)/(3x4)", ap_div, 3, 4, 3, 4, .lo = 0.5, .hi = 2),
    ND("div (3x4)/constant (3x4)", ap_div_const, 1, 2, 2, M2(3, 4), M2(3, 4), .lo = 0.5, .hi = 2),
    ND("div constant (2x3x4)/(1x3x1)", ap_div_const, 1, 3, 3, D3(1, 3, 1), D3(2, 3, 4), .lo = 0.5, .hi = 2, .ta = true),
    TWO("maximum (3x4),(3x4)", ap_maximum, 3, 4, 3, 4, .axis = 0),
    ND("maximum (2x3x4),(4) broadcast", ap_maximum, 2, 3, 1, D3(2, 3, 4), D1(4), .axis = 0),
    ONE("maximum (3x4) of x and x: every element a tie", ap_maximum_self, 3, 4, .axis = 0),
    TWO("maximum (3x4) of x and a tie with another tangent", ap_maximum_tie, 3, 4, 3, 4, .stop_gradient = true),
    TWO("minimum (3x4),(1x4)", ap_minimum, 3, 4, 1, 4, .axis = 0),
    ND("minimum (3x4),constant (3x4)", ap_minimum_const, 1, 2, 2, M2(3, 4), M2(3, 4), .lo = -1, .hi = 3),
    ND("minimum constant (2x3x4),(4)", ap_minimum_const, 1, 1, 3, D1(4), D3(2, 3, 4), .lo = -1, .hi = 3, .ta = true),
    TWO("where (3x4),(3x4)", ap_where, 3, 4, 3, 4, .axis = 0),
    ND("where (2x3x4),(3x1) broadcast", ap_where, 2, 3, 2, D3(2, 3, 4), M2(3, 1), .axis = 0),
    ND("where (3x4),constant (3x4)", ap_where_const, 1, 2, 2, M2(3, 4), M2(3, 4), .axis = 0),
    ND("where constant (2x3x4),(3x1)", ap_where_const, 1, 2, 3, M2(3, 1), D3(2, 3, 4), .ta = true),
    ND("max axes 0,2 (2x3x4)", ap_max02, 1, 3, 0, D3(2, 3, 4), D1(0), .axis = 0),
    ND("max axes 0,2 keepdims (2x3x4)", ap_max02, 1, 3, 0, D3(2, 3, 4), D1(0), .ta = true),
    ONE("max axis -1 (3x4) of [x, x]: ties", ap_max_ties, 3, 4, .axis = 0),
    TWO("max axis -1 keepdims (3x4) of [x, x']: ties with another tangent", ap_max_ties, 3, 4, 3, 4, .ta = true, .stop_gradient = true),
    ND("min axis -1 (2x3x4)", ap_min_last, 1, 3, 0, D3(2, 3, 4), D1(0), .axis = 0),
    ND("var axis 1 (2x3x4) unbiased", ap_var1, 1, 3, 0, D3(2, 3, 4), D1(0), .axis = 1),
    ND("var axis 1 keepdims (2x3x4) biased", ap_var1, 1, 3, 0, D3(2, 3, 4), D1(0), .axis = 0, .ta = true),
    ND("sum axes 0,2 (2x3x4)", ap_sum02, 1, 3, 0, D3(2, 3, 4), D1(0), .axis = 0),
    ND("mean axes 0,2 keepdims (2x3x4)", ap_mean02, 1, 3, 0, D3(2, 3, 4), D1(0), .ta = true),
    ND("logsumexp axes 0,2 (2x3x4)", ap_lse02, 1, 3, 0, D3(2, 3, 4), D1(0), .axis = 0),
    ND("logsumexp axis -1 keepdims (2x3x4)", ap_lse_last, 1, 3, 0, D3(2, 3, 4), D1(0), .ta = true),
    ND("softmax axis -1 (2x3x4)", ap_softmax, 1, 3, 0, D3(2, 3, 4), D1(0), .axis = -1),
    ND("softmax axis 1 (2x3x4)", ap_softmax, 1, 3, 0, D3(2, 3, 4), D1(0), .axis = 1),
    ND("log_softmax axis -1 (2x3x4)", ap_log_softmax, 1, 3, 0, D3(2, 3, 4), D1(0), .axis = -1),
    ND("log_softmax axis 0 (2x3x4)", ap_log_softmax, 1, 3, 0, D3(2, 3, 4), D1(0), .axis = 0),
    ND("reshape (2x3x4) -> (-1x2)", ap_reshape, 1, 3, 0, D3(2, 3, 4), D1(0), .axis = 0),
    ND("permute (2x3x4) (2,0,1)", ap_permute, 1, 3, 0, D3(2, 3, 4), D1(0), .axis = 0),
    ND("expand (3x1) -> (2x3x4)", ap_expand, 1, 2, 0, M2(3, 1), D1(0), .axis = 0),
    ONE("slice (5x7) [1::2, -4:5:3]", ap_slice, 5, 7, .axis = 0),
    TWO("concat 6 of (2x3),(2x1) axis 1", ap_concat, 2, 3, 2, 1, .axis = 1),
    TWO("concat 6 of (2x3),(1x3) axis 0", ap_concat, 2, 3, 1, 3, .axis = 0),
    TWO("stack 3 of (2x3) axis 1", ap_stack, 2, 3, 2, 3, .axis = 1),
    TWO("stack 3 of (2x3) axis -1", ap_stack, 2, 3, 2, 3, .axis = -1),
    ND("pad (2x3x2)", ap_pad, 1, 3, 0, D3(2, 3, 2), D1(0), .axis = 0),
    ND("index_select (2x3x4) axis 1, repeated", ap_index_select, 1, 3, 0, D3(2, 3, 4), D1(0), .axis = 1),
    ONE("index_select (3x2) axis 0 (embedding)", ap_index_select, 3, 2, .axis = 0),
    ONE("gather (3x5) axis 1", ap_gather, 3, 5, .axis = 0),
    ONE("detach (3x4)", ap_detach, 3, 4, .stop_gradient = true),
    ND("bmm (2x3x4)(4x5)", ap_bmm, 2, 3, 2, D3(2, 3, 4), M2(4, 5), .axis = 0),
    ND("bmm (2x4x3)ᵀ(1x5x4)ᵀ", ap_bmm, 2, 3, 3, D3(2, 4, 3), D3(1, 5, 4), .ta = true, .tb = true),
    ONE("nll_loss (5x3) weighted", ap_nll, 5, 3, .axis = 1, .ta = true),
    ONE("nll_loss (3x5) class axis 0", ap_nll, 3, 5, .axis = 0),
    ONE("cross_entropy (5x3) weights, smoothing 0.1", ap_cross_entropy, 5, 3, .axis = 1, .ta = true, .c = 0.1),
    ONE("cross_entropy (3x5) class axis 0, smoothing 0.3", ap_cross_entropy, 3, 5, .axis = 0, .c = 0.3),
    ONE("cross_entropy (5x3) weights, no smoothing", ap_cross_entropy, 5, 3, .axis = 1, .ta = true),
    TWO("bce_with_logits (3x4)", ap_bce, 3, 4, 3, 4, .lo = -4, .hi = 4),
    TWO("l1 (3x4)", ap_l1, 3, 4, 3, 4, .axis = 0),
    TWO("huber (3x4) delta 0.8", ap_huber, 3, 4, 3, 4, .c = 0.8),
    TWO("smooth_l1 (3x4) beta 0.6", ap_smooth_l1, 3, 4, 3, 4, .c = 0.6),
    /* rank 1: the (1 x 1) loss's gradient must come back in the input's own shape */
    ND("bce_with_logits (5) rank 1", ap_bce, 2, 1, 1, D1(5), D1(5), .lo = -4, .hi = 4),
    ND("huber (6) rank 1, delta 0.8", ap_huber, 2, 1, 1, D1(6), D1(6), .c = 0.8),
    ND("smooth_l1 (6) rank 1, beta 0.6", ap_smooth_l1, 2, 1, 1, D1(6), D1(6), .c = 0.6),
    ND("conv2d (2x3x5x6)*(4x3x3x3) stride 2 pad 1", ap_conv2d, 2, 4, 4, D4(2, 3, 5, 6), D4(4, 3, 3, 3), .axis = 0),
    ND("conv2d (1x2x5x5)*(3x2x2x3) same, dilation 2", ap_conv2d, 2, 4, 4, D4(1, 2, 5, 5), D4(3, 2, 2, 3), .axis = 1),
    ND("conv2d (2x4x4x5)*(6x2x3x2) groups 2", ap_conv2d, 2, 4, 4, D4(2, 4, 4, 5), D4(6, 2, 3, 2), .axis = 2),
    ND("conv2d (2x3x4x5)*(4x3x3x3)+b pad 1", ap_conv_bias, 2, 4, 4, D4(2, 3, 4, 5), D4(4, 3, 3, 4), .axis = 0),
    ND("conv2d (2x3x4x5)*w+(4) pad 1, constant weight", ap_conv_bias, 2, 4, 1, D4(2, 3, 4, 5), D1(4), .axis = 1),
    ND("conv2d x*(4x3x3x3)+b pad 1, constant x (2x3x4x5)", ap_conv_bias, 1, 4, 4, D4(4, 3, 3, 4), D4(2, 3, 4, 5), .axis = 2),
    ND("conv2d x*w+(4) pad 1, constant x (2x3x4x5) and weight", ap_conv_bias, 1, 1, 4, D1(4), D4(2, 3, 4, 5), .axis = 3),
    ND("conv1d (2x3x7)*(2x3x3) stride 2 pad 1", ap_conv1d, 2, 3, 3, D3(2, 3, 7), D3(2, 3, 3), .axis = 0),
    ND("conv_transpose2d (2x3x3x4)*(3x2x3x3) stride 2 pad 1 outpad 1", ap_conv_transpose2d, 2, 4, 4, D4(2, 3, 3, 4), D4(3, 2, 3, 3), .axis = 0),
    ND("conv_transpose2d (1x2x4x3)*(2x3x2x3) dilation 2 pad 2 outpad 1", ap_conv_transpose2d, 2, 4, 4, D4(1, 2, 4, 3), D4(2, 3, 2, 3), .axis = 1),
    ND("conv_transpose2d (2x4x3x3)*(4x3x2x2) groups 2", ap_conv_transpose2d, 2, 4, 4, D4(2, 4, 3, 3), D4(4, 3, 2, 2), .axis = 2),
    ND("conv_transpose2d (2x3x3x4)*(3x4x3x3)+b pad 1", ap_conv_bias, 2, 4, 4, D4(2, 3, 3, 4), D4(3, 4, 3, 4), .axis = 0, .ta = true),
    ND("conv_transpose2d (2x3x3x4)*w+(4) pad 1, constant weight", ap_conv_bias, 2, 4, 1, D4(2, 3, 3, 4), D1(4), .axis = 1, .ta = true),
    ND("conv_transpose2d x*(3x4x3x3)+b pad 1, constant x (2x3x3x4)", ap_conv_bias, 1, 4, 4, D4(3, 4, 3, 4), D4(2, 3, 3, 4), .axis = 2, .ta = true),
    ND("conv_transpose2d x*w+(4) pad 1, constant x (2x3x3x4) and weight", ap_conv_bias, 1, 1, 4, D1(4), D4(2, 3, 3, 4), .axis = 3, .ta = true),
    ONE("dropout (6x7) p 0.4", ap_dropout, 6, 7, .axis = 0),
    ND("batch_norm (3x4x2x3) training, γ = β", ap_batch_norm, 2, 4, 1, D4(3, 4, 2, 3), D1(4), .axis = 0),
    ND("batch_norm (5x3) training, no affine", ap_batch_norm, 1, 2, 0, M2(5, 3), D1(0), .axis = 1),
    ND("batch_norm (2x3x4) evaluation", ap_batch_norm, 2, 3, 1, D3(2, 3, 4), D1(3), .axis = 2),
    ND("batch_norm+tanh (3x4x2x3) training", ap_batch_norm, 2, 4, 1, D4(3, 4, 2, 3), D1(4), .axis = 0, .c = TG_ACT_TANH),
    ND("batch_norm+gelu (5x3) training, no affine", ap_batch_norm, 1, 2, 0, M2(5, 3), D1(0), .axis = 1, .c = TG_ACT_GELU),
    ND("batch_norm+sigmoid (2x3x4) evaluation", ap_batch_norm, 2, 3, 1, D3(2, 3, 4), D1(3), .axis = 2, .c = TG_ACT_SIGMOID),
    ND("batch_norm (4x3x5) training, γ only", ap_batch_norm, 2, 3, 1, D3(4, 3, 5), D1(3), .axis = 3),
    ND("batch_norm+relu (3x4x2x3) training", ap_batch_norm, 2, 4, 1, D4(3, 4, 2, 3), D1(4), .axis = 0, .c = TG_ACT_RELU),
    ND("batch_norm+leaky_relu (2x3x4) evaluation", ap_batch_norm, 2, 3, 1, D3(2, 3, 4), D1(3), .axis = 2, .c = TG_ACT_LEAKY_RELU),
    ND("batch_norm+softplus (4x3x5) training, γ only", ap_batch_norm, 2, 3, 1, D3(4, 3, 5), D1(3), .axis = 3, .c = TG_ACT_SOFTPLUS),
    ND("batch_norm (2x3x4) evaluation, β only", ap_batch_norm, 2, 3, 1, D3(2, 3, 4), D1(3), .axis = 4),
    ND("batch_norm (4) training, γ = β, constant x (3x4x2x3)", ap_batch_norm, 1, 1, 4, D1(4), D4(3, 4, 2, 3), .axis = 5),
    ND("batch_norm+tanh (4) training, γ = β, constant x (3x4x2x3)", ap_batch_norm, 1, 1, 4, D1(4), D4(3, 4, 2, 3), .axis = 5, .c = TG_ACT_TANH),
    ND("group_norm (2x4x3x2) 2 groups, affine", ap_group_norm, 2, 4, 1, D4(2, 4, 3, 2), D1(4), .axis = 0),
    ND("group_norm (3x6x5) 2 groups", ap_group_norm, 1, 3, 0, D3(3, 6, 5), D1(0), .axis = 1),
    ND("group_norm (2x4x3) 2 groups, β only", ap_group_norm, 2, 3, 1, D3(2, 4, 3), D1(4), .axis = 2),
    ND("group_norm (4) 2 groups, γ = β, constant x (2x4x3x2)", ap_group_norm, 1, 1, 4, D1(4), D4(2, 4, 3, 2), .axis = 3),
    ND("scaled_dot_product_attention (2x2x3x4) S 5", ap_sdpa, 2, 4, 4, D4(2, 2, 3, 4), D4(2, 2, 5, 7), .axis = 0),
    ND("scaled_dot_product_attention (2x2x4x3) S 3 causal", ap_sdpa, 2, 4, 4, D4(2, 2, 4, 3), D4(2, 2, 3, 5), .axis = 0, .ta = true),
    ND("scaled_dot_product_attention (2x2x3x4) S 5 mask (differentiable)", ap_sdpa, 2, 4, 4, D4(2, 2, 3, 4 + 5), D4(2, 2, 5, 7), .axis = 1),
    ND("scaled_dot_product_attention (1x3x4x2) S 4 causal, mask (differentiable)", ap_sdpa, 2, 4, 4, D4(1, 3, 4, 2 + 4), D4(1, 3, 4, 5), .axis = 1, .ta = true),
    ND("scaled_dot_product_attention (2x2x3x4) S 6 -inf mask", ap_sdpa, 2, 4, 4, D4(2, 2, 3, 4), D4(2, 2, 6, 7), .axis = 2),
    ND("scaled_dot_product_attention (3x4x3) S 5 rank 3, causal, -inf mask", ap_sdpa, 2, 3, 3, D3(3, 4, 3), D3(3, 5, 5), .axis = 2, .ta = true),
    ND("scaled_dot_product_attention (2x2x3x4) S 5 mask (1x1x3x5) broadcast over batch and heads (differentiable)", ap_sdpa, 2, 4, 4, D4(2, 2, 3, 4 + 5), D4(2, 2, 5, 7), .axis = 1, .c = 1),
    ND("scaled_dot_product_attention (2x3x4x3) S 5 causal, mask (1x3x1x5) broadcast over batch and rows (differentiable)", ap_sdpa, 2, 4, 4, D4(2, 3, 4, 3 + 5), D4(2, 3, 5, 4), .axis = 1, .ta = true, .c = 2),
    ND("scaled_dot_product_attention (3x4x2) S 5 rank 3, mask (1x4x5) broadcast over batch (differentiable)", ap_sdpa, 2, 3, 3, D3(3, 4, 2 + 5), D3(3, 5, 5), .axis = 1, .c = 1),
    ND("scaled_dot_product_attention (2x2x3x4) S 6 differentiable mask + -inf mask, row 1 fully masked", ap_sdpa, 2, 4, 4, D4(2, 2, 3, 4 + 6), D4(2, 2, 6, 7), .axis = 3, .c = 3),
    ND("scaled_dot_product_attention (1x2x70x3) S 67 causal, two tiles of rows and of keys", ap_sdpa, 2, 4, 4, D4(1, 2, 70, 3), D4(1, 2, 67, 3 + 4), .axis = 0, .ta = true),
    ND("scaled_dot_product_attention (2x2x3x4) S 5, only q has a tangent", ap_sdpa, 1, 4, 0, D4(2, 2, 3, 4), D1(0), .axis = 4, .c = 0),
    ND("scaled_dot_product_attention (2x2x3x4) S 5 causal, only k has a tangent", ap_sdpa, 1, 4, 0, D4(2, 2, 5, 4), D1(0), .axis = 4, .ta = true, .c = 1),
    ND("scaled_dot_product_attention (2x2x3x4) S 5, only v has a tangent", ap_sdpa, 1, 4, 0, D4(2, 2, 5, 3), D1(0), .axis = 4, .c = 2),
    ND("scaled_dot_product_attention (2x2x3x4) S 5, only the mask has a tangent", ap_sdpa, 1, 4, 0, D4(2, 2, 3, 5), D1(0), .axis = 4, .c = 3),
    ND("layer_norm (4x5) last axis, affine", ap_layer_norm, 2, 2, 1, M2(4, 5), D1(5), .axis = 1, .ta = true),
    ND("layer_norm (2x3x4) last 2 axes, affine", ap_layer_norm, 2, 3, 2, D3(2, 3, 4), M2(3, 4), .axis = 2, .ta = true),
    ND("layer_norm (3x2x7) last axis", ap_layer_norm, 1, 3, 0, D3(3, 2, 7), D1(0), .axis = 1),
    ND("layer_norm (2x2x3x3) last 3 axes", ap_layer_norm, 1, 4, 0, D4(2, 2, 3, 3), D1(0), .axis = 3),
    ND("layer_norm (6) whole vector, affine", ap_layer_norm, 2, 1, 1, D1(6), D1(6), .axis = 1, .ta = true),
    ND("layer_norm (3x5) last axis, weight only", ap_layer_norm, 2, 2, 1, M2(3, 5), D1(5), .axis = 1, .ta = true, .c = 1),
    ND("layer_norm (2x3x4) last 2 axes, bias only", ap_layer_norm, 2, 3, 2, D3(2, 3, 4), M2(3, 4), .axis = 2, .ta = true, .c = 2),
    ND("layer_norm (4x3x2) last 2 axes, x constant: only γ = β has a tangent", ap_layer_norm, 1, 2, 0, M2(3, 2), D1(0), .axis = 2, .ta = true, .c = 3),
    ND("rms_norm (4x5) last axis, weight", ap_rms_norm, 2, 2, 1, M2(4, 5), D1(5), .axis = 1, .ta = true),
    ND("rms_norm (2x3x4) last 2 axes, weight", ap_rms_norm, 2, 3, 2, D3(2, 3, 4), M2(3, 4), .axis = 2, .ta = true),
    ND("rms_norm (3x2x7) last axis", ap_rms_norm, 1, 3, 0, D3(3, 2, 7), D1(0), .axis = 1),
    ND("rms_norm (1x9) one row", ap_rms_norm, 1, 2, 0, M2(1, 9), D1(0), .axis = 2),
    ND("rms_norm (4x6) last axis, x constant: only γ has a tangent", ap_rms_norm, 1, 1, 0, D1(6), D1(0), .axis = 1, .ta = true, .c = 3),
    ND("lstm_cell (3x8) state (3x4), H 2, biases", ap_cell, 2, 2, 2, M2(3, 12), M2(8, 4), .axis = 0),
    ND("lstm_cell (1x8) state (1x4), H 2, no biases", ap_cell, 2, 2, 2, M2(1, 12), M2(8, 4), .axis = 0, .ta = true),
    ND("gru_cell (3x6) h (3x2), H 2, biases", ap_cell, 2, 2, 2, M2(3, 8), M2(6, 4), .axis = 1),
    ND("gru_cell (2x6) h (2x2), H 2, no biases", ap_cell, 2, 2, 2, M2(2, 8), M2(6, 4), .axis = 1, .ta = true),
    ND("max_pool2d (2x2x5x6) 3x3/2 pad 1", ap_max_pool2d, 1, 4, 0, D4(2, 2, 5, 6), D1(0), .axis = 0),
    ND("max_pool2d (2x3x4x7) 2x2/2", ap_max_pool2d, 1, 4, 0, D4(2, 3, 4, 7), D1(0), .axis = 1),
    ND("avg_pool2d (2x2x5x6) 3x3/2 pad 1", ap_avg_pool2d, 1, 4, 0, D4(2, 2, 5, 6), D1(0), .axis = 0),
};
#define N_CASES ((int)(sizeof cases / sizeof cases[0]))

struct case_ctx {
    const struct op_case *c;
    double *weights; /* R, one per output element */
    size_t n_weights;
};

static tg_tensor *
case_graph(tg_tape *t, tg_tensor **in, void *vctx)
{
    struct case_ctx *ctx = vctx;
    tg_tensor *y = ctx->c->apply(t, in, ctx->c);
    if (tg_tape_error(t))
        return y;
    /* Σ y ⊙ R: R is an input without gradient, made in y's shape. */
    int64_t dims[TG_MAX_DIMS];
    for (int i = 0; i < tg_tensor_ndim(y); i++)
        dims[i] = tg_tensor_dim(y, i);
    tg_tensor *r = tg_tensor_new(t, tg_tensor_dtype(y), tg_tensor_ndim(y), dims, "R");
    tg_tensor_write(r, ctx->weights, tg_tensor_size(y));
    return tg_sum(t, tg_mul(t, y, r));
}

static void
make_inputs(const struct op_case *c, tg_rng *rng, struct test_input *in)
{
    double lo = c->lo, hi = c->hi;
    if (lo == 0 && hi == 0)
        lo = -2, hi = 2;
    for (int k = 0; k < c->n_in; k++) {
        in[k].ndim = c->ndim[k];
        memcpy(in[k].dims, c->dims[k], sizeof in[k].dims);
        size_t n = dims_size(in[k].ndim, in[k].dims);
        in[k].vals = malloc((n ? n : 1) * sizeof(double));
        fill_uniform(in[k].vals, n, rng, lo, hi);
        if (c->avoid_kink)
            for (size_t i = 0; i < n; i++)
                if (fabs(in[k].vals[i]) < 0.01)
                    in[k].vals[i] = in[k].vals[i] < 0 ? -0.5 : 0.5;
    }
}

/* The output size of a case, found by running it once. */
static size_t
case_output_size(const struct op_case *c, struct test_input *in)
{
    tg_tape *t = tg_tape_new();
    tg_tensor *made[2];
    for (int k = 0; k < c->n_in; k++)
        made[k] = tg_tensor_new(t, TG_F64, in[k].ndim, in[k].dims, NULL);
    tg_tensor *y = c->apply(t, made, c);
    ck_assert_msg(!tg_tape_error(t), "%s: %s", c->label, tg_tape_error(t));
    size_t n = tg_tensor_size(y);
    tg_tape_free(t);
    return n;
}

START_TEST(vjp_matches_central_differences)
{
    const struct op_case *c = &cases[_i];
    if (c->stop_gradient)
        return;
    for (uint64_t seed = 1; seed <= 5; seed++) {
        tg_rng *rng = tg_rng_new(seed * 7919 + (uint64_t)_i);
        struct test_input in[2];
        make_inputs(c, rng, in);
        struct case_ctx ctx = {c, NULL, case_output_size(c, in)};
        ctx.weights = malloc(ctx.n_weights * sizeof(double));
        fill_uniform(ctx.weights, ctx.n_weights, rng, -1, 1);

        struct fd_result r = fd_check(TG_F64, case_graph, &ctx, in, c->n_in, FD_STEP);
        ck_assert_msg(r.error == NULL, "%s: %s", c->label, r.error);
        ck_assert_msg(r.checked > 0 || dims_size(in[0].ndim, in[0].dims) == 0, "%s: nothing checked",
                      c->label);
        ck_assert_msg(r.max_err < FD_TOL,
                      "%s (seed %llu): error %.3g at input %d[%zu]: analytic %.17g, numeric %.17g",
                      c->label, (unsigned long long)seed, r.max_err, r.input, r.index,
                      r.analytic, r.numeric);
        for (int k = 0; k < c->n_in; k++)
            free(in[k].vals);
        free(ctx.weights);
        tg_rng_free(rng);
    }
}
END_TEST

/*
 * Forward mode. f = Σ R ⊙ op(x) is recorded once with inputs x_k and random directions u_k;
 * tg_jvp gives ḟ = Σ_k ⟨∂f/∂x_k, u_k⟩, which is compared
 *  - with central differences of f along u, (f(x + h·u) − f(x − h·u)) / 2h, in float64 at
 *    FD_TOL (the same step, error budget and bar as the VJP check above: the direction has
 *    norm O(√n) instead of 1, still O(1) for these small inputs);
 *  - with ⟨∇f, u⟩ from tg_backward: the JVP and the VJP are written independently, and the two
 *    bilinear forms agree to round-off. Each side is a sum of products; with S = Σ |∂f/∂x_ki ·
 *    u_ki| the terms' magnitudes, both sides carry the roundings of the op's own rule (a few
 *    dozen operations per element for these ops, softmax and norms included) times S, so
 *    |ḟ − ⟨∇f, u⟩| ≤ 1000 ε S with ε = 2⁻⁵² bounds them with room: 2.2e-13 S. A rule off by a
 *    sign, a factor or a transpose is off by O(S).
 *  - and in float32, with the float64 tangent, to 1e-4 S: float32's ε = 6e-8 times the same
 *    thousand roundings.
 * The stop-gradient case is judged by the adjoint comparison alone (finite differences see
 * through a detach, the JVP and the VJP both stop at it).
 */
struct jvp_run {
    double fdot, adjoint, scale;
    const char *error;
};

static double
eval_along(const struct op_case *c, struct case_ctx *ctx, struct test_input *in, double **u,
           double h)
{
    tg_tape *t = tg_tape_new();
    tg_tensor *made[2];
    for (int k = 0; k < c->n_in; k++) {
        size_t n = dims_size(in[k].ndim, in[k].dims);
        made[k] = tg_tensor_new(t, TG_F64, in[k].ndim, in[k].dims, NULL);
        double *d = tg_tensor_data(made[k]);
        for (size_t i = 0; i < n; i++)
            d[i] = in[k].vals[i] + h * u[k][i];
    }
    double f = tg_tensor_item(case_graph(t, made, ctx));
    ck_assert_msg(!tg_tape_error(t), "%s: %s", c->label, tg_tape_error(t));
    tg_tape_free(t);
    return f;
}

static struct jvp_run
jvp_run(tg_dtype dt, const struct op_case *c, struct case_ctx *ctx, struct test_input *in,
        double **u)
{
    struct jvp_run r = {0};
    tg_tape *t = tg_tape_new();
    tg_tensor *made[2], *dirs[2];
    for (int k = 0; k < c->n_in; k++) {
        size_t n = dims_size(in[k].ndim, in[k].dims);
        made[k] = tg_tensor_new(t, dt, in[k].ndim, in[k].dims, NULL);
        dirs[k] = tg_tensor_new(t, dt, in[k].ndim, in[k].dims, "u");
        tg_tensor_write(made[k], in[k].vals, n);
        tg_tensor_write(dirs[k], u[k], n);
        tg_tensor_set_requires_grad(made[k], true);
    }
    tg_tensor *f = case_graph(t, made, ctx);
    if (tg_jvp(t, c->n_in, made, dirs) != TG_OK || tg_backward(t, f) != TG_OK) {
        r.error = strdup(tg_tape_error(t));
        tg_tape_free(t);
        return r;
    }
    const void *fd = tg_tensor_tangent(f);
    r.fdot = !fd ? 0 : dt == TG_F32 ? *(const float *)fd : *(const double *)fd;
    for (int k = 0; k < c->n_in; k++)
        for (size_t i = 0; i < tg_tensor_size(made[k]); i++) {
            double g = tg_tensor_grad_get(made[k], i), term = g * u[k][i];
            r.adjoint += term;
            r.scale += fabs(term);
        }
    tg_tape_free(t);
    return r;
}

START_TEST(jvp_matches_central_differences)
{
    const struct op_case *c = &cases[_i];
    for (uint64_t seed = 1; seed <= 5; seed++) {
        tg_rng *rng = tg_rng_new(seed * 104729 + (uint64_t)_i);
        struct test_input in[2];
        make_inputs(c, rng, in);
        struct case_ctx ctx = {c, NULL, case_output_size(c, in)};
        ctx.weights = malloc(ctx.n_weights * sizeof(double));
        fill_uniform(ctx.weights, ctx.n_weights, rng, -1, 1);
        double *u[2];
        for (int k = 0; k < c->n_in; k++) {
            size_t n = dims_size(in[k].ndim, in[k].dims);
            u[k] = malloc((n ? n : 1) * sizeof(double));
            fill_uniform(u[k], n, rng, -1, 1);
        }
        struct jvp_run r64 = jvp_run(TG_F64, c, &ctx, in, u);
        ck_assert_msg(!r64.error, "%s: %s", c->label, r64.error);
        ck_assert_msg(fabs(r64.fdot - r64.adjoint) <= 1000 * 0x1p-52 * r64.scale,
                      "%s (seed %llu): JVP %.17g, VJP %.17g: differ by %.3g of S = %.3g",
                      c->label, (unsigned long long)seed, r64.fdot, r64.adjoint,
                      fabs(r64.fdot - r64.adjoint) / r64.scale, r64.scale);
        if (!c->stop_gradient) {
            double fp = eval_along(c, &ctx, in, u, FD_STEP), fm = eval_along(c, &ctx, in, u, -FD_STEP);
            double numeric = (fp - fm) / (2 * FD_STEP);
            ck_assert_msg(fabs(r64.fdot - numeric) <=
                              FD_TOL * fmax(1.0, fmax(fabs(r64.fdot), fabs(numeric))),
                          "%s (seed %llu): JVP %.17g, central differences %.17g", c->label,
                          (unsigned long long)seed, r64.fdot, numeric);
        }
        struct jvp_run r32 = jvp_run(TG_F32, c, &ctx, in, u);
        ck_assert_msg(!r32.error, "%s: %s", c->label, r32.error);
        ck_assert_msg(fabs(r32.fdot - r64.fdot) <= 1e-4 * fmax(r64.scale, 1e-30),
                      "%s (seed %llu): float32 JVP %.9g, float64 %.17g (S = %.3g)", c->label,
                      (unsigned long long)seed, r32.fdot, r64.fdot, r64.scale);
        for (int k = 0; k < c->n_in; k++)
            free(in[k].vals), free(u[k]);
        free(ctx.weights);
        tg_rng_free(rng);
    }
}
END_TEST

/*
 * Second order. For f = Σ R ⊙ op(x) and a random direction u over every input, H·u from
 * tg_hvp (forward over reverse, and reverse over reverse) against central differences of the
 * gradient, (∇f(x + h·u) − ∇f(x − h·u)) / 2h, element by element in float64 (h = 1e-6 as
 * above: truncation h²·|∂⁴f| ~ 1e-12, round-off ε·|∇f|/h ~ 1e-10, bar FD_TOL = 1e-6), and
 * the two modes against each other (the same products summed in other orders: 1e-12 of
 * max(1, |H·u|)). In float32 both modes must run and agree with float64 to 1e-3 of
 * max(1, |H·u|) (ε32 = 6e-8 times the few hundred roundings of a doubly differentiated op).
 * First, tg_grad's gradient itself against tg_backward's.
 */
/* ∇f at x + h·u (float64), into g (n_in arrays) */
static void
grad_along(const struct op_case *c, struct case_ctx *ctx, struct test_input *in, double **u,
           double h, double **g)
{
    tg_tape *t = tg_tape_new();
    tg_tensor *made[2];
    for (int k = 0; k < c->n_in; k++) {
        size_t n = dims_size(in[k].ndim, in[k].dims);
        made[k] = tg_tensor_new(t, TG_F64, in[k].ndim, in[k].dims, NULL);
        double *d = tg_tensor_data(made[k]);
        for (size_t i = 0; i < n; i++)
            d[i] = in[k].vals[i] + h * u[k][i];
        tg_tensor_set_requires_grad(made[k], true);
    }
    ck_assert_int_eq(tg_backward(t, case_graph(t, made, ctx)), TG_OK);
    for (int k = 0; k < c->n_in; k++)
        for (size_t i = 0; i < tg_tensor_size(made[k]); i++)
            g[k][i] = tg_tensor_grad_get(made[k], i);
    tg_tape_free(t);
}

/* ∇f from tg_grad (the recorded gradient) in float64, into g */
static void
grad_graph_run(const struct op_case *c, struct case_ctx *ctx, struct test_input *in, double **g)
{
    tg_tape *t = tg_tape_new();
    tg_tensor *made[2], *out[2];
    for (int k = 0; k < c->n_in; k++) {
        made[k] = tg_tensor_new(t, TG_F64, in[k].ndim, in[k].dims, NULL);
        tg_tensor_write(made[k], in[k].vals, dims_size(in[k].ndim, in[k].dims));
        tg_tensor_set_requires_grad(made[k], true);
    }
    tg_tensor *f = case_graph(t, made, ctx);
    ck_assert_msg(tg_grad(t, f, NULL, c->n_in, made, out) == TG_OK, "%s: %s", c->label,
                  tg_tape_error(t));
    for (int k = 0; k < c->n_in; k++)
        tg_tensor_read(out[k], g[k], tg_tensor_size(out[k]));
    tg_tape_free(t);
}

/* H·u in dtype dt and mode m, into hv */
static void
hvp_run(tg_dtype dt, tg_hvp_mode m, const struct op_case *c, struct case_ctx *ctx,
        struct test_input *in, double **u, double **hv)
{
    tg_tape *t = tg_tape_new();
    tg_tensor *made[2], *dirs[2], *out[2];
    for (int k = 0; k < c->n_in; k++) {
        size_t n = dims_size(in[k].ndim, in[k].dims);
        made[k] = tg_tensor_new(t, dt, in[k].ndim, in[k].dims, NULL);
        dirs[k] = tg_tensor_new(t, dt, in[k].ndim, in[k].dims, "u");
        tg_tensor_write(made[k], in[k].vals, n);
        tg_tensor_write(dirs[k], u[k], n);
        tg_tensor_set_requires_grad(made[k], true);
    }
    tg_tensor *f = case_graph(t, made, ctx);
    ck_assert_msg(tg_hvp(t, f, c->n_in, made, dirs, m, out) == TG_OK, "%s (%s, %s): %s", c->label,
                  tg_dtype_name(dt), m ? "reverse over reverse" : "forward over reverse",
                  tg_tape_error(t));
    for (int k = 0; k < c->n_in; k++)
        tg_tensor_read(out[k], hv[k], tg_tensor_size(out[k]));
    tg_tape_free(t);
}

/* Seeds per case: 2, and 1 under valgrind (each seed the same code paths). */
START_TEST(hvp_matches_differences_of_the_gradient)
{
    const struct op_case *c = &cases[_i];
    if (c->stop_gradient)
        return;
    uint64_t seeds = getenv("TG_UNDER_VALGRIND") ? 1 : 2;
    for (uint64_t seed = 1; seed <= seeds; seed++) {
        tg_rng *rng = tg_rng_new(seed * 7477 + (uint64_t)_i);
        struct test_input in[2];
        make_inputs(c, rng, in);
        struct case_ctx ctx = {c, NULL, case_output_size(c, in)};
        ctx.weights = malloc(ctx.n_weights * sizeof(double));
        fill_uniform(ctx.weights, ctx.n_weights, rng, -1, 1);
        double *u[2], *gp[2], *gm[2], *g0[2], *gg[2], *h[4][2];
        size_t sz[2];
        for (int k = 0; k < c->n_in; k++) {
            sz[k] = dims_size(in[k].ndim, in[k].dims);
            size_t n = sz[k] ? sz[k] : 1;
            u[k] = malloc(n * sizeof(double));
            gp[k] = malloc(n * sizeof(double)), gm[k] = malloc(n * sizeof(double));
            g0[k] = malloc(n * sizeof(double)), gg[k] = malloc(n * sizeof(double));
            for (int m = 0; m < 4; m++)
                h[m][k] = malloc(n * sizeof(double));
            fill_uniform(u[k], sz[k], rng, -1, 1);
        }
        grad_along(c, &ctx, in, u, FD_STEP, gp);
        grad_along(c, &ctx, in, u, -FD_STEP, gm);
        /* first order: the recorded gradient is backward's (the same formulas in ops: a
         * few roundings apart, 1e-12 of max(1, |g|)) */
        grad_along(c, &ctx, in, u, 0, g0);
        grad_graph_run(c, &ctx, in, gg);
        for (int k = 0; k < c->n_in; k++)
            for (size_t i = 0; i < sz[k]; i++)
                ck_assert_msg(fabs(gg[k][i] - g0[k][i]) <= 1e-12 * fmax(1.0, fabs(g0[k][i])),
                              "%s: tg_grad %.17g, tg_backward %.17g (input %d [%zu])", c->label,
                              gg[k][i], g0[k][i], k, i);
        for (int m = 0; m < 4; m++)
            hvp_run(m < 2 ? TG_F64 : TG_F32, (tg_hvp_mode)(m % 2), c, &ctx, in, u, h[m]);
        for (int k = 0; k < c->n_in; k++)
            for (size_t i = 0; i < sz[k]; i++) {
                double num = (gp[k][i] - gm[k][i]) / (2 * FD_STEP), a = h[0][k][i];
                double scale = fmax(1.0, fmax(fabs(a), fabs(num)));
                ck_assert_msg(fabs(a - num) <= FD_TOL * scale,
                              "%s (seed %llu): (H·u) of input %d [%zu]: %.17g, differences %.17g",
                              c->label, (unsigned long long)seed, k, i, a, num);
                ck_assert_msg(fabs(h[1][k][i] - a) <= 1e-12 * fmax(1.0, fabs(a)),
                              "%s: input %d [%zu]: forward over reverse %.17g, reverse over "
                              "reverse %.17g", c->label, k, i, a, h[1][k][i]);
                for (int m = 2; m < 4; m++)
                    ck_assert_msg(fabs(h[m][k][i] - a) <= 1e-3 * fmax(1.0, fabs(a)),
                                  "%s: input %d [%zu]: float32 %.9g, float64 %.17g", c->label,
                                  k, i, h[m][k][i], a);
            }
        for (int k = 0; k < c->n_in; k++) {
            free(in[k].vals), free(u[k]), free(gp[k]), free(gm[k]), free(g0[k]), free(gg[k]);
            for (int m = 0; m < 4; m++)
                free(h[m][k]);
        }
        free(ctx.weights);
        tg_rng_free(rng);
    }
}
END_TEST


/* d/dx Σ R ⊙ (detach(x) ⊙ x) = R ⊙ x exactly (the detached factor is a constant), where
 * differentiating through the detach would give 2 R ⊙ x. */
START_TEST(detach_stops_gradient)
{
    for (tg_dtype dt = TG_F32; dt <= TG_F64; dt++) {
        tg_tape *t = tg_tape_new();
        tg_rng *rng = tg_rng_new(5);
        tg_tensor *x = tg_matrix(t, dt, 3, 4, NULL, "x"), *r = tg_matrix(t, dt, 3, 4, NULL, "R");
        tg_tensor_fill_uniform(x, rng, -2, 2);
        tg_tensor_fill_uniform(r, rng, -1, 1);
        tg_tensor_set_requires_grad(x, true);
        tg_tensor *d = tg_detach(t, x);
        ck_assert_ptr_eq(tg_tensor_data(d), tg_tensor_data(x)); /* a view */
        ck_assert(!tg_tensor_requires_grad(d));
        ck_assert_int_eq(tg_backward(t, tg_sum(t, tg_mul(t, tg_mul(t, d, x), r))), TG_OK);
        for (size_t i = 0; i < 12; i++) /* one rounding (x·r), the same in both dtypes */
            ck_assert_double_eq(tg_tensor_grad_get(x, i),
                                dt == TG_F32 ? (double)((float)tg_tensor_get(x, i) *
                                                        (float)tg_tensor_get(r, i))
                                             : tg_tensor_get(x, i) * tg_tensor_get(r, i));
        tg_rng_free(rng);
        tg_tape_free(t);
    }
}
END_TEST

/* A graph of one-element tensors (a scalar graph) takes the ops' one-element paths (no plan,
 * no chunks: elementwise.c, unary.c); the same graph on arrays takes the kernels. Both must
 * give the same bits, values and gradients, element by element: the paths run the same IEEE
 * operations in the same order. y = tanh(a⊙b + a) - σ(b)⊙a + a⊙a: a⊙a puts both VJP terms
 * into one gradient; tanh's VJP writes a fresh gradient, σ's (recorded first, so its VJP runs
 * last) adds to the one a⊙b gave b. An FMA contracted into one path, or a VJP term dropped or
 * swapped, fails it. */
static tg_tensor *
scalar_graph(tg_tape *t, tg_tensor *a, tg_tensor *b)
{
    tg_tensor *s = tg_sigmoid(t, b);
    tg_tensor *u = tg_tanh(t, tg_add(t, tg_mul(t, a, b), a));
    return tg_add(t, tg_sub(t, u, tg_mul(t, s, a)), tg_mul(t, a, a));
}

START_TEST(one_element_ops_match_the_array_path)
{
    enum { N = 37 }; /* a vector body and a tail on every ISA */
    for (tg_dtype dt = TG_F32; dt <= TG_F64; dt++) {
        tg_rng *rng = tg_rng_new(17);
        tg_tape *t = tg_tape_new();
        tg_tensor *a = tg_matrix(t, dt, 1, N, NULL, "a"), *b = tg_matrix(t, dt, 1, N, NULL, "b");
        tg_tensor_fill_uniform(a, rng, -2, 2);
        tg_tensor_fill_uniform(b, rng, -2, 2);
        tg_tensor_set_requires_grad(a, true);
        tg_tensor_set_requires_grad(b, true);
        tg_tensor *y = scalar_graph(t, a, b);
        ck_assert_int_eq(tg_backward(t, tg_sum(t, y)), TG_OK);
        tg_tape *ts = tg_tape_new();
        for (size_t i = 0; i < N; i++) {
            tg_tape_reset(ts);
            double av = tg_tensor_get(a, i), bv = tg_tensor_get(b, i);
            tg_tensor *a1 = tg_tensor_new(ts, dt, 1, (int64_t[]){1}, "a1");
            tg_tensor *b1 = tg_tensor_new(ts, dt, 1, (int64_t[]){1}, "b1");
            tg_tensor_write(a1, &av, 1);
            tg_tensor_write(b1, &bv, 1);
            tg_tensor_set_requires_grad(a1, true);
            tg_tensor_set_requires_grad(b1, true);
            tg_tensor *y1 = scalar_graph(ts, a1, b1);
            ck_assert_int_eq(tg_backward(ts, y1), TG_OK);
            ck_assert_msg(tg_tensor_item(y1) == tg_tensor_get(y, i) &&
                              tg_tensor_grad_get(a1, 0) == tg_tensor_grad_get(a, i) &&
                              tg_tensor_grad_get(b1, 0) == tg_tensor_grad_get(b, i),
                          "%s element %zu: y %a / %a, da %a / %a, db %a / %a (one element / "
                          "array)",
                          tg_dtype_name(dt), i, tg_tensor_item(y1), tg_tensor_get(y, i),
                          tg_tensor_grad_get(a1, 0), tg_tensor_grad_get(a, i),
                          tg_tensor_grad_get(b1, 0), tg_tensor_grad_get(b, i));
        }
        tg_tape_free(ts);
        tg_tape_free(t);
        tg_rng_free(rng);
    }
}
END_TEST

/* Every op in the table is exercised by at least one case above. */
START_TEST(every_builtin_op_has_a_case)
{
    for (size_t i = 0; i < tg_builtin_op_count(); i++) {
        const tg_op *op = tg_builtin_op(i);
        ck_assert_msg(op && op->name && op->forward && op->vjp, "op table hole at %zu", i);
        bool found = false;
        for (int k = 0; k < N_CASES && !found; k++)
            found = strncmp(cases[k].label, op->name, strlen(op->name)) == 0 &&
                    cases[k].label[strlen(op->name)] == ' ';
        ck_assert_msg(found, "op %s has no finite-difference case", op->name);
        ck_assert_msg(op->jvp, "op %s has no JVP rule (tg_op.jvp): every built-in op has one",
                      op->name);
        ck_assert_msg(op->vjp_graph,
                      "op %s has no differentiable VJP (tg_op.vjp_graph): every built-in op has "
                      "one", op->name);
    }
}
END_TEST

/* The same case in float32 gives the float64 forward value to float32 precision: relative
 * error below 1e-5 (float32 ε = 1.2e-7, times the few dozen roundings of these small ops). */
START_TEST(float32_forward_matches_float64)
{
    const struct op_case *c = &cases[_i];
    tg_rng *rng = tg_rng_new(99 + (uint64_t)_i);
    struct test_input in[2];
    make_inputs(c, rng, in);
    double out[2];
    for (int d = 0; d < 2; d++) {
        tg_dtype dt = d ? TG_F64 : TG_F32;
        tg_tape *t = tg_tape_new();
        tg_tensor *made[2];
        for (int k = 0; k < c->n_in; k++) {
            made[k] = tg_tensor_new(t, dt, in[k].ndim, in[k].dims, NULL);
            tg_tensor_write(made[k], in[k].vals, dims_size(in[k].ndim, in[k].dims));
        }
        tg_tensor *y = tg_sum(t, c->apply(t, made, c));
        ck_assert_msg(!tg_tape_error(t), "%s", tg_tape_error(t));
        out[d] = tg_tensor_item(y);
        tg_tape_free(t);
    }
    ck_assert_msg(fabs(out[0] - out[1]) <= 1e-5 * fmax(1.0, fabs(out[1])),
                  "%s: f32 %.9g vs f64 %.17g", c->label, out[0], out[1]);
    for (int k = 0; k < c->n_in; k++)
        free(in[k].vals);
    tg_rng_free(rng);
}
END_TEST

/* ---- forward values worked out by hand ---- */

static tg_tape *tape;
static void setup(void) { tape = tg_tape_new(); }
static void teardown(void) { tg_tape_free(tape); }

static tg_tensor *
mat(int64_t r, int64_t c, const double *v)
{
    tg_tensor *x = tg_matrix(tape, TG_F64, r, c, v, NULL);
    return x;
}

static void
expect_values(tg_tensor *y, const double *want, size_t n, double tol)
{
    ck_assert_msg(!tg_tape_error(tape), "%s", tg_tape_error(tape));
    ck_assert_uint_eq(tg_tensor_size(y), n);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(fabs(tg_tensor_get(y, i) - want[i]) <= tol, "element %zu: got %.17g want %.17g",
                      i, tg_tensor_get(y, i), want[i]);
}

START_TEST(forward_matmul_by_hand)
{
    /* [1 2; 3 4]·[5 6; 7 8] = [19 22; 43 50] */
    tg_tensor *y = tg_matmul(tape, mat(2, 2, (double[]){1, 2, 3, 4}), mat(2, 2, (double[]){5, 6, 7, 8}));
    expect_values(y, (double[]){19, 22, 43, 50}, 4, 0);
    /* [1 2 3]ᵀ-free product with a transposed operand: (2x3)·(2x3)ᵀ = [14 32; 32 77] */
    tg_tensor *a = mat(2, 3, (double[]){1, 2, 3, 4, 5, 6});
    expect_values(tg_matmul_t(tape, a, false, a, true), (double[]){14, 32, 32, 77}, 4, 0);
    expect_values(tg_transpose(tape, a), (double[]){1, 4, 2, 5, 3, 6}, 6, 0);
}
END_TEST

START_TEST(forward_broadcast_by_hand)
{
    tg_tensor *z = mat(2, 3, (double[]){1, 2, 3, 4, 5, 6});
    expect_values(tg_add(tape, z, mat(2, 1, (double[]){10, 20})),
                  (double[]){11, 12, 13, 24, 25, 26}, 6, 0);
    expect_values(tg_add(tape, z, mat(1, 3, (double[]){10, 20, 30})),
                  (double[]){11, 22, 33, 14, 25, 36}, 6, 0);
    expect_values(tg_sub(tape, z, mat(1, 1, (double[]){1})), (double[]){0, 1, 2, 3, 4, 5}, 6, 0);
    expect_values(tg_mul(tape, z, mat(2, 1, (double[]){2, -1})),
                  (double[]){2, 4, 6, -4, -5, -6}, 6, 0);
    expect_values(tg_scale(tape, z, 0.5), (double[]){0.5, 1, 1.5, 2, 2.5, 3}, 6, 0);
    expect_values(tg_sum(tape, z), (double[]){21}, 1, 0);
    expect_values(tg_sum_axis(tape, z, 0), (double[]){5, 7, 9}, 3, 0);
    expect_values(tg_sum_axis(tape, z, 1), (double[]){6, 15}, 2, 0);
    expect_values(tg_mean(tape, z), (double[]){3.5}, 1, 0);
    expect_values(tg_mean_axis(tape, z, 1), (double[]){2, 5}, 2, 0);
}
END_TEST

START_TEST(forward_activations_by_hand)
{
    tg_tensor *x = mat(1, 5, (double[]){-1000, -1, 0, 1, 1000});
    expect_values(tg_sigmoid(tape, x),
                  (double[]){0, 0.26894142136999512, 0.5, 0.73105857863000488, 1}, 5, 1e-16);
    expect_values(tg_tanh(tape, x), (double[]){-1, -0.76159415595576489, 0, 0.76159415595576489, 1},
                  5, 1e-16);
    expect_values(tg_relu(tape, x), (double[]){0, 0, 0, 1, 1000}, 5, 0);
    expect_values(tg_leaky_relu(tape, x, 0.1), (double[]){-100, -0.1, 0, 1, 1000}, 5, 1e-13);
    /* softplus(1000) = 1000 exactly in double; softplus(-1000) = e^-1000 underflows to 0;
     * softplus(0) = ln 2; softplus(±1) = ln(1 + e^±1) */
    expect_values(tg_softplus(tape, x),
                  (double[]){0, 0.31326168751822284, 0.69314718055994531, 1.3132616875182228,
                             1000},
                  5, 1e-15);
    /* gelu(x) = x Φ(x): Φ(1) = 0.84134474606854293 */
    expect_values(tg_gelu(tape, x),
                  (double[]){-0.0, -0.15865525393145707, 0, 0.84134474606854293, 1000}, 5, 1e-15);
    expect_values(tg_identity(tape, x), (double[]){-1000, -1, 0, 1, 1000}, 5, 0);
}
END_TEST

START_TEST(forward_losses_by_hand)
{
    /* A (3x2), Y = 0: Σ A² = 1+4+9+16+25+36 = 91.
     * mse_half with examples as columns (m = 2): 91 / (2·2) = 22.75
     * mse_half with examples as rows (m = 3):    91 / (2·3) = 15.1666…
     * mse over all 6 entries:                    91 / 6 */
    tg_tensor *a = mat(3, 2, (double[]){1, 2, 3, 4, 5, 6});
    tg_tensor *y = tg_matrix(tape, TG_F64, 3, 2, NULL, "Y");
    expect_values(tg_mse_half(tape, a, y, 1), (double[]){22.75}, 1, 1e-14);
    expect_values(tg_mse_half(tape, a, y, 0), (double[]){91.0 / 6.0}, 1, 1e-14);
    expect_values(tg_mse(tape, a, y), (double[]){91.0 / 6.0}, 1, 1e-14);
    /* scores [1 2 3], label 2: lse = 3 + ln(1 + e^-1 + e^-2) = 3.4076059644443806;
     * loss = lse - 3. Second example [1000 1000 0], label 0: lse = 1000 + ln 2, loss = ln 2.
     * Mean = (0.40760596444438 + 0.69314718055995) / 2. */
    int32_t labels[2] = {2, 0};
    tg_tensor *s = mat(2, 3, (double[]){1, 2, 3, 1000, 1000, 0});
    expect_values(tg_softmax_xent(tape, s, labels, 2, 1),
                  (double[]){(0.40760596444438046 + 0.69314718055994531) / 2}, 1, 1e-15);
    /* The same scores with classes on axis 0. */
    tg_tensor *st = mat(3, 2, (double[]){1, 1000, 2, 1000, 3, 0});
    expect_values(tg_softmax_xent(tape, st, labels, 2, 0),
                  (double[]){(0.40760596444438046 + 0.69314718055994531) / 2}, 1, 1e-15);
}
END_TEST

/* Edge values from RELIABILITY.md: large finite inputs stay finite, ±inf gives IEEE results,
 * NaN propagates, subnormals are not flushed. */
START_TEST(forward_edge_values)
{
    tg_tensor *x = mat(1, 4, (double[]){INFINITY, -INFINITY, NAN, 4.9e-324});
    tg_tensor *s = tg_sigmoid(tape, x);
    ck_assert_double_eq(tg_tensor_get(s, 0), 1);
    ck_assert_double_eq(tg_tensor_get(s, 1), 0);
    ck_assert(isnan(tg_tensor_get(s, 2)));
    tg_tensor *r = tg_relu(tape, x);
    ck_assert_double_eq(tg_tensor_get(r, 3), 4.9e-324); /* subnormal survives */
    ck_assert(isnan(tg_tensor_get(r, 2)));
    /* lse([1e6, 1e6]) = 1e6 + ln 2: loss for label 0 is ln 2 */
    int32_t l0 = 0;
    tg_tensor *big = tg_softmax_xent(tape, mat(1, 2, (double[]){1e6, 1e6}), &l0, 1, 1);
    ck_assert_double_eq_tol(tg_tensor_item(big), 0.69314718055994531, 1e-10);
    /* a row with +inf: lse = +inf; the label's score is finite, so the loss is +inf */
    tg_tensor *pinf = tg_softmax_xent(tape, mat(1, 2, (double[]){0, INFINITY}), &l0, 1, 1);
    ck_assert(isinf(tg_tensor_item(pinf)) && tg_tensor_item(pinf) > 0);
    /* a row of all -inf: lse = -inf, loss = -inf - (-inf) = NaN (documented, as PyTorch) */
    tg_tensor *ninf =
        tg_softmax_xent(tape, mat(1, 2, (double[]){-INFINITY, -INFINITY}), &l0, 1, 1);
    ck_assert(isnan(tg_tensor_item(ninf)));
    /* mse in f32 of a difference of 1e20 squares to +inf, never NaN */
    float big32[2] = {1e20f, 0}, zero32[2] = {0, 0};
    tg_tensor *m = tg_mse(tape, tg_matrix(tape, TG_F32, 1, 2, big32, NULL),
                          tg_matrix(tape, TG_F32, 1, 2, zero32, NULL));
    ck_assert(isinf(tg_tensor_item(m)));
    ck_assert_msg(!tg_tape_error(tape), "%s", tg_tape_error(tape));
}
END_TEST

/* conv_transpose2d of a 2x2 image with a 2x2 kernel: stride 2 tiles the kernel scaled by
 * each pixel; stride 1 overlaps the copies; padding 1 with output_padding 1 crops one row and
 * column from the start of the stride-2 result and leaves its size at 3 (+ the bias). */
START_TEST(forward_conv_transpose2d_by_hand)
{
    const int64_t d[4] = {1, 1, 2, 2};
    tg_tensor *x = tg_tensor_from(tape, TG_F64, 4, d, (double[]){1, 2, 3, 4}, "x");
    tg_tensor *w = tg_tensor_from(tape, TG_F64, 4, d, (double[]){1, 10, 100, 1000}, "w");
    tg_tensor *b = tg_tensor_from(tape, TG_F64, 1, (int64_t[]){1}, (double[]){0.5}, "b");
    tg_conv_transpose_options o = tg_conv_transpose_defaults();
    o.stride[0] = o.stride[1] = 2;
    tg_tensor *y = tg_conv_transpose2d(tape, x, w, NULL, &o);
    ck_assert_int_eq(tg_tensor_dim(y, 2), 4);
    ck_assert_int_eq(tg_tensor_dim(y, 3), 4);
    expect_values(y,
                  (double[]){1, 10, 2, 20, 100, 1000, 200, 2000, 3, 30, 4, 40, 300, 3000, 400,
                             4000},
                  16, 0);
    y = tg_conv_transpose2d(tape, x, w, NULL, NULL);
    ck_assert_int_eq(tg_tensor_dim(y, 2), 3);
    expect_values(y, (double[]){1, 12, 20, 103, 1234, 2040, 300, 3400, 4000}, 9, 0);
    o.padding[0] = o.padding[1] = 1, o.output_padding[0] = o.output_padding[1] = 1;
    y = tg_conv_transpose2d(tape, x, w, b, &o);
    ck_assert_int_eq(tg_tensor_dim(y, 2), 3);
    ck_assert_int_eq(tg_tensor_dim(y, 3), 3);
    expect_values(y, (double[]){1000.5, 200.5, 2000.5, 30.5, 4.5, 40.5, 3000.5, 400.5, 4000.5}, 9,
                  0);
}
END_TEST

/* The norms of an empty x differentiate twice: tg_grad gives empty dx and zero dγ, dβ (sums of
 * nothing) rather than a mean over no values. */
START_TEST(empty_norms_differentiate)
{
    const int64_t dims[4][3] = {{0, 3, 2}, {2, 4, 0}, {3, 0}, {3, 0}};
    for (int op = 0; op < 4; op++) {
        tg_tape *t = tg_tape_new();
        int ndim = op < 2 ? 3 : 2;
        int64_t c = op < 2 ? dims[op][1] : dims[op][ndim - 1];
        tg_tensor *x = tg_tensor_new(t, TG_F64, ndim, dims[op], "x");
        tg_tensor *g = tg_tensor_new(t, TG_F64, 1, &c, "g");
        tg_tensor *b = tg_tensor_new(t, TG_F64, 1, &c, "b");
        tg_tensor *wrt[3] = {x, g, b}, *grads[3], *hv[3];
        tg_tensor *dirs[3] = {tg_tensor_new(t, TG_F64, ndim, dims[op], "u"),
                              tg_tensor_new(t, TG_F64, 1, &c, "u"),
                              tg_tensor_new(t, TG_F64, 1, &c, "u")};
        for (int k = 0; k < 3; k++) {
            tg_tensor_set_requires_grad(wrt[k], true);
            tg_tensor_fill(dirs[k], 1);
        }
        tg_tensor *y = op == 0   ? tg_batch_norm_act(t, x, g, b, NULL, NULL, 0.1, 1e-5, TG_ACT_TANH)
                       : op == 1 ? tg_group_norm(t, x, 2, g, b, 1e-5)
                       : op == 2 ? tg_layer_norm(t, x, 1, g, b, 1e-5)
                                 : tg_rms_norm(t, x, 1, g, 1e-5);
        tg_tensor *f = tg_sum(t, tg_square(t, y));
        int n = op == 3 ? 2 : 3;
        ck_assert_msg(tg_grad(t, f, NULL, n, wrt, grads) == TG_OK, "%d: %s", op, tg_tape_error(t));
        ck_assert_msg(tg_hvp(t, f, n, wrt, dirs, TG_HVP_REVERSE_OVER_REVERSE, hv) == TG_OK,
                      "%d: %s", op, tg_tape_error(t));
        for (int k = 1; k < n; k++)
            for (size_t i = 0; i < tg_tensor_size(grads[k]); i++)
                ck_assert(tg_tensor_get(grads[k], i) == 0 && tg_tensor_get(hv[k], i) == 0);
        tg_tape_free(t);
    }
}
END_TEST

/* A 0-sized dimension is an empty result, not a crash: (2x0)·(0x3) is a 2x3 matrix of zeros. */
START_TEST(empty_dimensions)
{
    tg_tensor *a = tg_tensor_new(tape, TG_F64, 2, (int64_t[]){2, 0}, "A");
    tg_tensor *b = tg_tensor_new(tape, TG_F64, 2, (int64_t[]){0, 3}, "B");
    tg_tensor *c = tg_matmul(tape, a, b);
    expect_values(c, (double[]){0, 0, 0, 0, 0, 0}, 6, 0);
    tg_tensor *e = tg_tensor_new(tape, TG_F64, 2, (int64_t[]){0, 3}, "E");
    tg_tensor *s = tg_add(tape, e, tg_matrix(tape, TG_F64, 1, 3, NULL, NULL));
    ck_assert_uint_eq(tg_tensor_size(s), 0);
    expect_values(tg_sum(tape, s), (double[]){0}, 1, 0);
    tg_mse(tape, e, e);
    ck_assert_int_eq(tg_tape_status(tape), TG_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(tg_tape_error(tape), "mse"));
    ck_assert_ptr_nonnull(strstr(tg_tape_error(tape), "empty"));
}
END_TEST

static Suite *
ops_suite(void)
{
    Suite *s = suite_create("ops");
    TCase *tc = tcase_create("vjp vs finite differences");
    tcase_add_loop_test(tc, vjp_matches_central_differences, 0, N_CASES);
    tcase_add_test(tc, every_builtin_op_has_a_case);
    suite_add_tcase(s, tc);

    tc = tcase_create("jvp vs finite differences and the vjp");
    tcase_add_loop_test(tc, jvp_matches_central_differences, 0, N_CASES);
    suite_add_tcase(s, tc);

    tc = tcase_create("hvp vs differences of the gradient");
    tcase_add_loop_test(tc, hvp_matches_differences_of_the_gradient, 0, N_CASES);
    suite_add_tcase(s, tc);

    tc = tcase_create("float32 vs float64");
    tcase_add_loop_test(tc, float32_forward_matches_float64, 0, N_CASES);
    tcase_add_test(tc, detach_stops_gradient);
    suite_add_tcase(s, tc);

    tc = tcase_create("one element vs arrays");
    tcase_add_test(tc, one_element_ops_match_the_array_path);
    suite_add_tcase(s, tc);

    tc = tcase_create("forward by hand");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, forward_matmul_by_hand);
    tcase_add_test(tc, forward_broadcast_by_hand);
    tcase_add_test(tc, forward_activations_by_hand);
    tcase_add_test(tc, forward_losses_by_hand);
    tcase_add_test(tc, forward_edge_values);
    tcase_add_test(tc, forward_conv_transpose2d_by_hand);
    tcase_add_test(tc, empty_dimensions);
    tcase_add_test(tc, empty_norms_differentiate);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    return run_suite(ops_suite());
}
