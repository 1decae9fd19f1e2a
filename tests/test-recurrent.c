/*
 * Recurrent cells and layers (lib/ops/recurrent.c, lib/layers/recurrent.c), beyond the
 * finite-difference cases of test-ops and tg-gradcheck and the PyTorch comparison of
 * reference/torch_rnn_ref.py:
 *   - one step of each cell against a direct double loop of its formula, both dtypes, biases
 *     or none;
 *   - a VJP run twice (the saved gates consumed by the first, recomputed by the second) gives
 *     the same gradients;
 *   - the layers: parameter names and shapes (PyTorch's keys), the U(±1/√H) initialization,
 *     atomic init; output, h_n, c_n shapes for stacked bidirectional layers, sequence-first and
 *     batch_first; h0 of zeros equals no h0, a nonzero h0 changes the output; a sequence past
 *     TG_MAX_INPUTS steps (the stacked gathering);
 *   - forward mode through a 2-step LSTM layer and GRU layer (both directions, h0 and c0, the
 *     GRU batch_first so its cells read rows b·T + τ): tg_jvp against central differences in
 *     float64 and against the VJP; a JVP after a backward (the saved gates consumed) gives the
 *     same bits and leaves the next backward as it was;
 *   - second derivatives through the same two layers: tg_hvp in both modes against central
 *     differences of the gradient in float64, and the modes against each other;
 *   - the same bits on 1 and 2 threads (the gate loops and bias sums split into parts);
 *   - bad input: a sticky error naming the op and the shapes, nothing recorded or written;
 *   - a warm training step through both layers allocates nothing.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <tapegrad/runtime.h>

#include "common.h"

static double
sig(double x)
{
    return 1 / (1 + exp(-x));
}

static tg_tensor *
rnd_tensor(tg_tape *t, tg_dtype dt, int nd, const int64_t *dims, tg_rng *rng, const char *name)
{
    tg_tensor *x = tg_tensor_new(t, dt, nd, dims, name);
    tg_tensor_fill_uniform(x, rng, -1, 1);
    return x;
}

/* float64: a few ulp of O(1) values; float32 stores every operand and output in float (the
 * gate math runs in double), so ~1e-7 relative */
static double
tol_of(tg_dtype dt)
{
    return dt == TG_F64 ? 1e-13 : 2e-6;
}

START_TEST(cells_match_direct_loops)
{
    enum { B = 3, H = 4 };
    for (int dti = 0; dti < 2; dti++)
        for (int gru = 0; gru < 2; gru++)
            for (int with_bias = 0; with_bias < 2; with_bias++) {
                tg_dtype dt = dti ? TG_F64 : TG_F32;
                int g = gru ? 3 : 4, sw = gru ? 1 : 2;
                tg_rng *rng = tg_rng_new(7 + (uint64_t)(4 * dti + 2 * gru + with_bias));
                tg_tape *t = tg_tape_new();
                tg_tensor *xw = rnd_tensor(t, dt, 2, (int64_t[]){B, g * H}, rng, "xw");
                tg_tensor *s = rnd_tensor(t, dt, 2, (int64_t[]){B, sw * H}, rng, "s");
                tg_tensor *w = rnd_tensor(t, dt, 2, (int64_t[]){g * H, H}, rng, "w_hh");
                tg_tensor *bi = with_bias ? rnd_tensor(t, dt, 1, (int64_t[]){g * H}, rng, "b_ih")
                                          : NULL;
                tg_tensor *bh = with_bias ? rnd_tensor(t, dt, 1, (int64_t[]){g * H}, rng, "b_hh")
                                          : NULL;
                tg_tensor *y = gru ? tg_gru_cell(t, xw, s, w, bi, bh)
                                   : tg_lstm_cell(t, xw, s, w, bi, bh);
                ck_assert_msg(!tg_tape_error(t), "%s", tg_tape_error(t));
                ck_assert_int_eq(tg_tensor_dim(y, 0), B);
                ck_assert_int_eq(tg_tensor_dim(y, 1), sw * H);
                double worst = 0;
                for (int b = 0; b < B; b++) {
                    double a[4 * H], hw[4 * H];
                    for (int k = 0; k < g * H; k++) {
                        hw[k] = with_bias ? tg_tensor_get(bh, (size_t)k) : 0;
                        for (int j = 0; j < H; j++)
                            hw[k] += tg_tensor_get(s, (size_t)(b * sw * H + j)) *
                                     tg_tensor_get(w, (size_t)(k * H + j));
                        a[k] = tg_tensor_get(xw, (size_t)(b * g * H + k)) +
                               (with_bias ? tg_tensor_get(bi, (size_t)k) : 0);
                    }
                    for (int j = 0; j < H; j++) {
                        double hp = tg_tensor_get(s, (size_t)(b * sw * H + j)), want[2];
                        if (gru) {
                            double r = sig(a[j] + hw[j]), z = sig(a[H + j] + hw[H + j]);
                            double n = tanh(a[2 * H + j] + r * hw[2 * H + j]);
                            want[0] = (1 - z) * n + z * hp;
                        } else {
                            double i = sig(a[j] + hw[j]), f = sig(a[H + j] + hw[H + j]);
                            double gg = tanh(a[2 * H + j] + hw[2 * H + j]);
                            double o = sig(a[3 * H + j] + hw[3 * H + j]);
                            double cp = tg_tensor_get(s, (size_t)(b * sw * H + H + j));
                            want[1] = f * cp + i * gg;
                            want[0] = o * tanh(want[1]);
                        }
                        for (int q = 0; q < sw; q++) {
                            size_t at = (size_t)(b * sw * H + q * H + j);
                            worst = fmax(worst, fabs(tg_tensor_get(y, at) - want[q]));
                        }
                    }
                }
                ck_assert_msg(worst <= tol_of(dt), "%s %s bias %d: max error %g",
                              gru ? "gru" : "lstm", tg_dtype_name(dt), with_bias, worst);
                tg_tape_free(t);
                tg_rng_free(rng);
            }
}
END_TEST

/* Σ cell(...) ⊙ R, backward twice: the second VJP finds its gates consumed and recomputes
 * them; the gradients must be the same bits. */
START_TEST(second_backward_gives_the_same_gradients)
{
    enum { B = 2, H = 3 };
    for (int gru = 0; gru < 2; gru++) {
        int g = gru ? 3 : 4, sw = gru ? 1 : 2;
        tg_rng *rng = tg_rng_new(11);
        tg_tape *t = tg_tape_new();
        tg_tensor *in[5] = {
            rnd_tensor(t, TG_F64, 2, (int64_t[]){B, g * H}, rng, "xw"),
            rnd_tensor(t, TG_F64, 2, (int64_t[]){B, sw * H}, rng, "s"),
            rnd_tensor(t, TG_F64, 2, (int64_t[]){g * H, H}, rng, "w"),
            rnd_tensor(t, TG_F64, 1, (int64_t[]){g * H}, rng, "bi"),
            rnd_tensor(t, TG_F64, 1, (int64_t[]){g * H}, rng, "bh"),
        };
        for (int k = 0; k < 5; k++)
            tg_tensor_set_requires_grad(in[k], true);
        tg_tensor *y = gru ? tg_gru_cell(t, in[0], in[1], in[2], in[3], in[4])
                           : tg_lstm_cell(t, in[0], in[1], in[2], in[3], in[4]);
        tg_tensor *loss = tg_sum(t, tg_mul(t, y, rnd_tensor(t, TG_F64, 2,
                                                            (int64_t[]){B, sw * H}, rng, "R")));
        double first[5][4 * H * 4 * H];
        ck_assert_int_eq(tg_backward(t, loss), TG_OK);
        for (int k = 0; k < 5; k++)
            memcpy(first[k], tg_tensor_grad(in[k]), tg_tensor_size(in[k]) * sizeof(double));
        ck_assert_int_eq(tg_backward(t, loss), TG_OK);
        for (int k = 0; k < 5; k++)
            ck_assert_msg(!memcmp(first[k], tg_tensor_grad(in[k]),
                                  tg_tensor_size(in[k]) * sizeof(double)),
                          "%s: input %d's gradient changed on the second backward",
                          gru ? "gru" : "lstm", k);
        tg_tape_free(t);
        tg_rng_free(rng);
    }
}
END_TEST

START_TEST(layer_parameters_named_as_pytorch)
{
    tg_params *p = tg_params_new(TG_F64);
    tg_rng *rng = tg_rng_new(3);
    tg_lstm_layer l;
    ck_assert_int_eq(tg_lstm_layer_init(&l, p, "enc", 5, 4, 2, true, true, rng), TG_OK);
    static const char *const want[] = {
        "enc/weight_ih_l0", "enc/weight_hh_l0", "enc/bias_ih_l0", "enc/bias_hh_l0",
        "enc/weight_ih_l0_reverse", "enc/weight_hh_l0_reverse", "enc/bias_ih_l0_reverse",
        "enc/bias_hh_l0_reverse", "enc/weight_ih_l1", "enc/weight_hh_l1", "enc/bias_ih_l1",
        "enc/bias_hh_l1", "enc/weight_ih_l1_reverse", "enc/weight_hh_l1_reverse",
        "enc/bias_ih_l1_reverse", "enc/bias_hh_l1_reverse",
    };
    ck_assert_uint_eq(tg_params_count(p), 16);
    double bound = 1 / sqrt(4.0), lo = 1, hi = -1;
    for (size_t i = 0; i < 16; i++) {
        tg_tensor *w = tg_params_get(p, i);
        ck_assert_str_eq(tg_tensor_name(w), want[i]);
        int q = (int)(i % 4), layer = (int)(i / 8);
        ck_assert_int_eq(tg_tensor_dim(w, 0), 16);
        if (q < 2)
            ck_assert_int_eq(tg_tensor_dim(w, 1), q == 1 ? 4 : layer ? 8 : 5);
        for (size_t k = 0; k < tg_tensor_size(w); k++) {
            double v = tg_tensor_get(w, k);
            lo = fmin(lo, v), hi = fmax(hi, v);
        }
    }
    ck_assert_msg(lo >= -bound && hi < bound && lo < -0.4 && hi > 0.4,
                  "weights in [%g, %g], want U(-%g, %g)", lo, hi, bound, bound);
    ck_assert_ptr_eq(l.weight_hh[3], tg_params_get(p, 13));
    /* no biases, GRU, no prefix: PyTorch's keys themselves */
    tg_gru_layer gl;
    tg_params *q = tg_params_new(TG_F32);
    ck_assert_int_eq(tg_gru_layer_init(&gl, q, "", 2, 3, 1, false, false, NULL), TG_OK);
    ck_assert_uint_eq(tg_params_count(q), 2);
    ck_assert_str_eq(tg_tensor_name(tg_params_get(q, 0)), "weight_ih_l0");
    ck_assert_int_eq(tg_tensor_dim(tg_params_get(q, 1), 0), 9);
    ck_assert_ptr_null(gl.bias_ih[0]);
    /* atomic: a clash on the third parameter leaves the set as it was */
    tg_params *r = tg_params_new(TG_F64);
    tg_params_add(r, "x/bias_ih_l0", 1, (int64_t[]){1});
    tg_lstm_layer untouched;
    memset(&untouched, 0x5a, sizeof untouched);
    ck_assert_int_ne(tg_lstm_layer_init(&untouched, r, "x", 2, 3, 1, false, true, rng), TG_OK);
    ck_assert_uint_eq(tg_params_count(r), 1);
    ck_assert_int_eq(((unsigned char *)&untouched)[0], 0x5a);
    ck_assert_int_eq(tg_lstm_layer_init(&untouched, r, "x", 2, 3, 0, false, true, rng),
                     TG_ERR_ARG);
    tg_params_free(r);
    tg_params_free(q);
    tg_params_free(p);
    tg_rng_free(rng);
}
END_TEST

static void
assert_shape(tg_tensor *x, int64_t a, int64_t b, int64_t c, const char *what)
{
    ck_assert_msg(tg_tensor_ndim(x) == 3 && tg_tensor_dim(x, 0) == a && tg_tensor_dim(x, 1) == b &&
                      tg_tensor_dim(x, 2) == c,
                  "%s: (%lldx%lldx%lld), want (%lldx%lldx%lld)", what,
                  (long long)tg_tensor_dim(x, 0), (long long)tg_tensor_dim(x, 1),
                  (long long)tg_tensor_dim(x, 2), (long long)a, (long long)b, (long long)c);
}

START_TEST(layer_shapes_stacked_bidirectional)
{
    enum { T = 4, B = 2, I = 3, H = 5 };
    tg_rng *rng = tg_rng_new(5);
    for (int gru = 0; gru < 2; gru++)
        for (int dirs = 1; dirs <= 2; dirs++)
            for (int bf = 0; bf < 2; bf++) {
                tg_params *p = tg_params_new(TG_F32);
                tg_rnn_layer l;
                tg_status s = gru ? tg_gru_layer_init(&l, p, "r", I, H, 3, dirs == 2, true, rng)
                                  : tg_lstm_layer_init(&l, p, "r", I, H, 3, dirs == 2, true, rng);
                ck_assert_int_eq(s, TG_OK);
                l.batch_first = bf;
                tg_tape *t = tg_tape_new();
                tg_tensor *x = rnd_tensor(t, TG_F32, 3, bf ? (int64_t[]){B, T, I}
                                                           : (int64_t[]){T, B, I}, rng, "x");
                tg_tensor *hn = NULL, *cn = NULL;
                tg_tensor *y = gru ? tg_gru_layer_forward(t, &l, x, NULL, &hn)
                                   : tg_lstm_layer_forward(t, &l, x, NULL, NULL, &hn, &cn);
                ck_assert_msg(!tg_tape_error(t), "%s", tg_tape_error(t));
                if (bf)
                    assert_shape(y, B, T, dirs * H, "output");
                else
                    assert_shape(y, T, B, dirs * H, "output");
                assert_shape(hn, 3 * dirs, B, H, "h_n");
                if (!gru)
                    assert_shape(cn, 3 * dirs, B, H, "c_n");
                /* the last step of the top forward direction is h_n's row 2·dirs */
                for (int b = 0; b < B; b++)
                    for (int j = 0; j < H; j++) {
                        size_t at = bf ? ((size_t)b * T + T - 1) * dirs * H + j
                                       : ((size_t)(T - 1) * B + b) * dirs * H + j;
                        ck_assert(tg_tensor_get(y, at) ==
                                  tg_tensor_get(hn, ((size_t)2 * dirs * B + b) * H + j));
                    }
                tg_backward(t, tg_sum(t, y));
                ck_assert_msg(!tg_tape_error(t), "%s", tg_tape_error(t));
                tg_tape_free(t);
                tg_params_free(p);
            }
    tg_rng_free(rng);
}
END_TEST

START_TEST(h0_zero_equals_none_and_h0_matters)
{
    enum { T = 3, B = 2, I = 2, H = 3 };
    tg_rng *rng = tg_rng_new(9);
    for (int gru = 0; gru < 2; gru++) {
        tg_params *p = tg_params_new(TG_F64);
        tg_rnn_layer l;
        ck_assert_int_eq(gru ? tg_gru_layer_init(&l, p, "r", I, H, 2, true, true, rng)
                             : tg_lstm_layer_init(&l, p, "r", I, H, 2, true, true, rng),
                         TG_OK);
        tg_tape *t = tg_tape_new();
        tg_tensor *x = rnd_tensor(t, TG_F64, 3, (int64_t[]){T, B, I}, rng, "x");
        tg_tensor *zero = tg_tensor_new(t, TG_F64, 3, (int64_t[]){4, B, H}, "zeros");
        tg_tensor *h0 = rnd_tensor(t, TG_F64, 3, (int64_t[]){4, B, H}, rng, "h0");
        tg_tensor *y[3];
        y[0] = gru ? tg_gru_layer_forward(t, &l, x, NULL, NULL)
                   : tg_lstm_layer_forward(t, &l, x, NULL, NULL, NULL, NULL);
        y[1] = gru ? tg_gru_layer_forward(t, &l, x, zero, NULL)
                   : tg_lstm_layer_forward(t, &l, x, zero, zero, NULL, NULL);
        y[2] = gru ? tg_gru_layer_forward(t, &l, x, h0, NULL)
                   : tg_lstm_layer_forward(t, &l, x, h0, NULL, NULL, NULL);
        ck_assert_msg(!tg_tape_error(t), "%s", tg_tape_error(t));
        double differs = 0;
        for (size_t i = 0; i < tg_tensor_size(y[0]); i++) {
            ck_assert(tg_tensor_get(y[0], i) == tg_tensor_get(y[1], i));
            differs = fmax(differs, fabs(tg_tensor_get(y[0], i) - tg_tensor_get(y[2], i)));
        }
        ck_assert_msg(differs > 1e-3, "h0 changed the output by %g only", differs);
        tg_tape_free(t);
        tg_params_free(p);
    }
    tg_rng_free(rng);
}
END_TEST

/* 70 steps: more states than one stack node takes (TG_MAX_INPUTS); the output still equals the
 * cells run one by one */
START_TEST(long_sequence_gathered_in_groups)
{
    enum { T = 70, B = 2, I = 2, H = 2 };
    tg_rng *rng = tg_rng_new(13);
    tg_params *p = tg_params_new(TG_F64);
    tg_gru_layer l;
    ck_assert_int_eq(tg_gru_layer_init(&l, p, "g", I, H, 1, false, true, rng), TG_OK);
    tg_tape *t = tg_tape_new();
    tg_tensor *x = rnd_tensor(t, TG_F64, 3, (int64_t[]){T, B, I}, rng, "x");
    tg_tensor *hn = NULL;
    tg_tensor *y = tg_gru_layer_forward(t, &l, x, NULL, &hn);
    ck_assert_msg(!tg_tape_error(t), "%s", tg_tape_error(t));
    assert_shape(y, T, B, H, "output");
    tg_tensor *xw = tg_matmul_t(t, tg_reshape(t, x, 2, (int64_t[]){T * B, I}), false,
                                l.weight_ih[0], true);
    tg_tensor *h = tg_tensor_new(t, TG_F64, 2, (int64_t[]){B, H}, NULL);
    for (int s = 0; s < T; s++) {
        tg_tensor *xs = tg_slice(t, xw, (int64_t[]){s * B, 0}, (int64_t[]){s * B + B, 3 * H},
                                 NULL);
        h = tg_gru_cell(t, xs, h, l.weight_hh[0], l.bias_ih[0], l.bias_hh[0]);
        for (size_t i = 0; i < B * H; i++)
            ck_assert(tg_tensor_get(h, i) == tg_tensor_get(y, (size_t)s * B * H + i));
    }
    ck_assert(!tg_tape_error(t));
    tg_tape_free(t);
    tg_params_free(p);
    tg_rng_free(rng);
}
END_TEST

/* Each refusal: the error sticks, names the op and the shapes given, records no node and
 * leaves h_n / c_n as they were. */
START_TEST(bad_input_refused_by_name)
{
    tg_rng *rng = tg_rng_new(17);
    tg_params *p = tg_params_new(TG_F64);
    tg_lstm_layer l;
    ck_assert_int_eq(tg_lstm_layer_init(&l, p, "enc", 4, 3, 2, true, true, rng), TG_OK);
    struct bad {
        const char *what, *op, *shape1, *shape2;
        int kind; /* 0 lstm cell, 1 gru cell, 2 layer */
        int64_t xdims[3];
        int64_t h0dims[3];
        tg_dtype xdt, h0dt;
        tg_status status;
    } bad[] = {
        {"layer: input size", "lstm layer", "(5x2x3)", "(12x4)", 2, {5, 2, 3}, {0}, TG_F64, TG_F64, TG_ERR_SHAPE},
        {"layer: length 0", "lstm layer", "(0x2x4)", "length 0", 2, {0, 2, 4}, {0}, TG_F64, TG_F64, TG_ERR_SHAPE},
        {"layer: h0 shape", "lstm layer", "(4x3x3)", "(4x2x3)", 2, {5, 2, 4}, {4, 3, 3}, TG_F64, TG_F64, TG_ERR_SHAPE},
        {"layer: h0 hidden size", "lstm layer", "(4x2x5)", "(4x2x3)", 2, {5, 2, 4}, {4, 2, 5}, TG_F64, TG_F64, TG_ERR_SHAPE},
        {"layer: h0 layers", "lstm layer", "(2x2x3)", "(4x2x3)", 2, {5, 2, 4}, {2, 2, 3}, TG_F64, TG_F64, TG_ERR_SHAPE},
        {"layer: x dtype", "lstm layer", "is f32", "(12x4) is f64", 2, {5, 2, 4}, {0}, TG_F32, TG_F64, TG_ERR_DTYPE},
        {"layer: h0 dtype", "lstm layer", "is f32", "(4x2x3)", 2, {5, 2, 4}, {4, 2, 3}, TG_F64, TG_F32, TG_ERR_DTYPE},
        {"lstm cell: xw width", "lstm_cell", "(2x10)", "(12x3)", 0, {2, 10}, {2, 6}, TG_F64, TG_F64, TG_ERR_SHAPE},
        {"lstm cell: state width", "lstm_cell", "(2x5)", "(12x3)", 0, {2, 12}, {2, 5}, TG_F64, TG_F64, TG_ERR_SHAPE},
        {"lstm cell: xw rows", "lstm_cell", "(3x12)", "(2x6)", 0, {3, 12}, {2, 6}, TG_F64, TG_F64, TG_ERR_SHAPE},
        {"lstm cell: dtype", "lstm_cell", "is f32", "(2x6)", 0, {2, 12}, {2, 6}, TG_F32, TG_F64, TG_ERR_DTYPE},
        {"gru cell: hidden size", "gru_cell", "(2x4)", "(9x3)", 1, {2, 9}, {2, 4}, TG_F64, TG_F64, TG_ERR_SHAPE},
        {"gru cell: xw width", "gru_cell", "(2x12)", "(9x3)", 1, {2, 12}, {2, 3}, TG_F64, TG_F64, TG_ERR_SHAPE},
    };
    tg_params *gp = tg_params_new(TG_F64);
    tg_tensor *gw = tg_params_add(gp, "gru/w_hh", 2, (int64_t[]){9, 3});
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        struct bad *c = &bad[k];
        tg_tape *t = tg_tape_new();
        tg_tensor *x = tg_tensor_new(t, c->xdt, c->kind == 2 ? 3 : 2, c->xdims, "x");
        tg_tensor *h0 = c->h0dims[0] ? tg_tensor_new(t, c->h0dt, c->kind == 2 ? 3 : 2,
                                                     c->h0dims, "h0")
                                     : NULL;
        size_t nodes = tg_tape_node_count(t);
        tg_tensor *sentinel = x, *hn = sentinel, *cn = sentinel, *y;
        if (c->kind == 2)
            y = tg_lstm_layer_forward(t, &l, x, h0, NULL, &hn, &cn);
        else if (c->kind == 0)
            y = tg_lstm_cell(t, x, h0, l.weight_hh[0], l.bias_ih[0], NULL);
        else
            y = tg_gru_cell(t, x, h0, gw, NULL, NULL);
        const char *e = tg_tape_error(t);
        ck_assert_msg(e && tg_tape_status(t) == c->status, "%s: status %d, error %s", c->what,
                      (int)tg_tape_status(t), e ? e : "none");
        ck_assert_msg(strstr(e, c->op) && strstr(e, c->shape1) && strstr(e, c->shape2),
                      "%s: message lacks \"%s\", \"%s\" or \"%s\": %s", c->what, c->op,
                      c->shape1, c->shape2, e);
        ck_assert_msg(tg_tape_node_count(t) == nodes, "%s: %zu nodes recorded", c->what,
                      tg_tape_node_count(t) - nodes);
        ck_assert(hn == sentinel && cn == sentinel);
        /* sticky: a later good call does nothing */
        tg_tensor *after = tg_sum(t, y);
        ck_assert(tg_tape_node_count(t) == nodes && tg_tape_status(t) == c->status);
        (void)after;
        tg_tape_free(t);
    }
    tg_params_free(gp);
    tg_params_free(p);
    tg_rng_free(rng);
}
END_TEST

/*
 * Forward mode through the layers. f = Σ R ⊙ y + Σ R_h ⊙ h_n (+ Σ R_c ⊙ c_n) over a 2-step
 * bidirectional layer, with every leaf seeded: x, h0, c0 and the layer's weights and biases,
 * each along a random direction u. tg_jvp's ḟ is compared
 *  - with central differences (f(v + s·u) − f(v − s·u)) / 2s, s = 1e-6, in float64, to 1e-6
 *    relative (as test-ops' cell cases);
 *  - with ⟨∇f, u⟩ from tg_backward, written independently: the two agree to round-off,
 *    |ḟ − ⟨∇f, u⟩| ≤ 1000 ε S with S = Σ |∂f/∂v · u| (test-ops' bound);
 *  - and a JVP run after the backward, which finds the saved gates consumed and recomputes
 *    them, must give the same bits, and a second backward after it the same gradients.
 */
enum { JT = 2, JB = 2, JI = 3, JH = 3, JD = 2, J_LEAVES = 3 + 4 * JD };

struct jvp_layer {
    int gru;
    tg_rnn_layer l;
    tg_params *p;
    int n;                        /* leaves: x, h0, (c0), then the parameters */
    int ndim[J_LEAVES];
    int64_t dims[J_LEAVES][3];
    tg_tensor *param[J_LEAVES];   /* the parameter of a leaf, NULL for x, h0, c0 */
    double *base[J_LEAVES], *u[J_LEAVES];
    double *r_out, *r_h, *r_c;    /* the weights R of f */
};

static size_t
jl_size(const struct jvp_layer *j, int k)
{
    return dims_size(j->ndim[k], j->dims[k]);
}

/* Records f with every leaf at base + s·u; tensors[k] gets the leaf's tape tensor (x, h0,
 * c0) or parameter. */
static tg_tensor *
jl_record(tg_tape *t, struct jvp_layer *j, double s, tg_tensor **tensors)
{
    for (int k = 0; k < j->n; k++) {
        size_t n = jl_size(j, k);
        tg_tensor *v = j->param[k] ? j->param[k]
                                   : tg_tensor_new(t, TG_F64, j->ndim[k], j->dims[k], NULL);
        double *d = tg_tensor_data(v);
        for (size_t i = 0; i < n; i++)
            d[i] = j->base[k][i] + s * j->u[k][i];
        if (!j->param[k])
            tg_tensor_set_requires_grad(v, true);
        tensors[k] = v;
    }
    tg_tensor *hn = NULL, *cn = NULL;
    tg_tensor *y = j->gru ? tg_gru_layer_forward(t, &j->l, tensors[0], tensors[1], &hn)
                          : tg_lstm_layer_forward(t, &j->l, tensors[0], tensors[1], tensors[2],
                                                  &hn, &cn);
    int64_t ydims[3] = {JT, JB, JD * JH}, sdims[3] = {JD, JB, JH};
    if (j->gru)
        ydims[0] = JB, ydims[1] = JT;
    tg_tensor *ry = tg_tensor_new(t, TG_F64, 3, ydims, "R");
    tg_tensor *rh = tg_tensor_new(t, TG_F64, 3, sdims, "R_h");
    tg_tensor_write(ry, j->r_out, JT * JB * JD * JH);
    tg_tensor_write(rh, j->r_h, JD * JB * JH);
    tg_tensor *f = tg_add(t, tg_sum(t, tg_mul(t, y, ry)), tg_sum(t, tg_mul(t, hn, rh)));
    if (!j->gru) {
        tg_tensor *rc = tg_tensor_new(t, TG_F64, 3, sdims, "R_c");
        tg_tensor_write(rc, j->r_c, JD * JB * JH);
        f = tg_add(t, f, tg_sum(t, tg_mul(t, cn, rc)));
    }
    ck_assert_msg(!tg_tape_error(t), "%s", tg_tape_error(t));
    return f;
}

static double
jl_eval(struct jvp_layer *j, double s)
{
    tg_tape *t = tg_tape_new();
    tg_tensor *tensors[J_LEAVES];
    double f = tg_tensor_item(jl_record(t, j, s, tensors));
    tg_tape_free(t);
    return f;
}

/* ḟ along u, with tangents of the leaves' shapes */
static double
jl_jvp(tg_tape *t, struct jvp_layer *j, tg_tensor **tensors, tg_tensor **dirs, tg_tensor *f)
{
    ck_assert_int_eq(tg_jvp(t, j->n, tensors, dirs), TG_OK);
    const double *fd = tg_tensor_tangent(f);
    ck_assert_ptr_nonnull(fd);
    return *fd;
}

/* The layer (bidirectional, 1 layer, biases; the GRU batch_first so that its cells read rows
 * b·T + τ), its leaves and directions u and the weights R, all from rng */
static void
jl_init(struct jvp_layer *j, int gru, tg_rng *rng)
{
    *j = (struct jvp_layer){.gru = gru, .p = tg_params_new(TG_F64)};
    ck_assert_int_eq(gru ? tg_gru_layer_init(&j->l, j->p, "r", JI, JH, 1, true, true, rng)
                         : tg_lstm_layer_init(&j->l, j->p, "r", JI, JH, 1, true, true, rng),
                     TG_OK);
    j->l.batch_first = gru;
    int64_t xd[3] = {JT, JB, JI}, sd[3] = {JD, JB, JH};
    if (gru)
        xd[0] = JB, xd[1] = JT;
    memcpy(j->dims[j->n], xd, sizeof xd), j->ndim[j->n++] = 3;
    for (int q = 0; q < (gru ? 1 : 2); q++)
        memcpy(j->dims[j->n], sd, sizeof sd), j->ndim[j->n++] = 3;
    for (int k = 0; k < JD; k++) {
        tg_tensor *w[4] = {j->l.weight_ih[k], j->l.weight_hh[k], j->l.bias_ih[k],
                           j->l.bias_hh[k]};
        for (int q = 0; q < 4; q++) {
            j->param[j->n] = w[q];
            j->ndim[j->n] = tg_tensor_ndim(w[q]);
            for (int d = 0; d < j->ndim[j->n]; d++)
                j->dims[j->n][d] = tg_tensor_dim(w[q], d);
            j->n++;
        }
    }
    for (int k = 0; k < j->n; k++) {
        size_t n = jl_size(j, k);
        j->base[k] = malloc(n * sizeof(double));
        j->u[k] = malloc(n * sizeof(double));
        if (j->param[k])
            memcpy(j->base[k], tg_tensor_data(j->param[k]), n * sizeof(double));
        else
            fill_uniform(j->base[k], n, rng, -1, 1);
        fill_uniform(j->u[k], n, rng, -1, 1);
    }
    j->r_out = malloc(JT * JB * JD * JH * sizeof(double));
    j->r_h = malloc(JD * JB * JH * sizeof(double));
    j->r_c = malloc(JD * JB * JH * sizeof(double));
    fill_uniform(j->r_out, JT * JB * JD * JH, rng, -1, 1);
    fill_uniform(j->r_h, JD * JB * JH, rng, -1, 1);
    fill_uniform(j->r_c, JD * JB * JH, rng, -1, 1);
}

static void
jl_free(struct jvp_layer *j)
{
    for (int k = 0; k < j->n; k++)
        free(j->base[k]), free(j->u[k]);
    free(j->r_out), free(j->r_h), free(j->r_c);
    tg_params_free(j->p);
}

START_TEST(layer_jvp_matches_central_differences)
{
    for (int gru = 0; gru < 2; gru++) {
        struct jvp_layer j;
        tg_rng *rng = tg_rng_new(31 + (uint64_t)gru);
        jl_init(&j, gru, rng);
        const char *name = gru ? "gru layer" : "lstm layer";

        double numeric = (jl_eval(&j, 1e-6) - jl_eval(&j, -1e-6)) / 2e-6;
        tg_tape *t = tg_tape_new();
        tg_tensor *tensors[J_LEAVES], *dirs[J_LEAVES];
        tg_tensor *f = jl_record(t, &j, 0, tensors);
        for (int k = 0; k < j.n; k++) {
            dirs[k] = tg_tensor_new(t, TG_F64, j.ndim[k], j.dims[k], "u");
            tg_tensor_write(dirs[k], j.u[k], jl_size(&j, k));
        }
        double fdot = jl_jvp(t, &j, tensors, dirs, f);
        ck_assert_msg(fabs(fdot - numeric) <= 1e-6 * fmax(1.0, fmax(fabs(fdot), fabs(numeric))),
                      "%s: JVP %.17g, central differences %.17g", name, fdot, numeric);

        tg_params_zero_grad(j.p);
        ck_assert_int_eq(tg_backward(t, f), TG_OK);
        double adjoint = 0, scale = 0;
        size_t n_grads = 0;
        for (int k = 0; k < j.n; k++)
            n_grads += jl_size(&j, k);
        double *grads = malloc(n_grads * sizeof(double));
        for (int k = 0, at = 0; k < j.n; k++)
            for (size_t i = 0; i < jl_size(&j, k); i++, at++) {
                grads[at] = tg_tensor_grad_get(tensors[k], i);
                adjoint += grads[at] * j.u[k][i];
                scale += fabs(grads[at] * j.u[k][i]);
            }
        ck_assert_msg(fabs(fdot - adjoint) <= 1000 * 0x1p-52 * scale,
                      "%s: JVP %.17g, VJP %.17g: differ by %.3g of S = %.3g", name, fdot,
                      adjoint, fabs(fdot - adjoint) / scale, scale);

        double again = jl_jvp(t, &j, tensors, dirs, f); /* the gates consumed by the backward */
        ck_assert_msg(!memcmp(&again, &fdot, sizeof fdot), "%s: JVP after a backward %.17g, "
                      "before %.17g", name, again, fdot);
        tg_params_zero_grad(j.p);
        ck_assert_int_eq(tg_backward(t, f), TG_OK);
        for (int k = 0, at = 0; k < j.n; k++)
            for (size_t i = 0; i < jl_size(&j, k); i++, at++)
                ck_assert_msg(tg_tensor_grad_get(tensors[k], i) == grads[at],
                              "%s: leaf %d's gradient changed after a JVP", name, k);

        free(grads);
        tg_tape_free(t);
        jl_free(&j);
        tg_rng_free(rng);
    }
}
END_TEST

/*
 * Second derivatives through the layers (the cells' vjp_graph): on the same f and leaves,
 * H·u from tg_hvp in both modes against central differences of the gradient,
 * (∇f(v + s·u) − ∇f(v − s·u)) / 2s with s = 1e-6 from tg_backward, to 1e-6 relative (test-ops'
 * bound), and the two modes against each other to 1e-12.
 */

/* ∇f at base + s·u (tg_backward), into g, the leaves one after another */
static void
jl_grad_along(struct jvp_layer *j, double s, double *g)
{
    tg_tape *t = tg_tape_new();
    tg_tensor *tensors[J_LEAVES];
    tg_tensor *f = jl_record(t, j, s, tensors);
    tg_params_zero_grad(j->p);
    ck_assert_int_eq(tg_backward(t, f), TG_OK);
    for (int k = 0, at = 0; k < j->n; k++)
        for (size_t i = 0; i < jl_size(j, k); i++)
            g[at++] = tg_tensor_grad_get(tensors[k], i);
    tg_tape_free(t);
}

/* H·u at base in mode m, into hv as jl_grad_along lays it out */
static void
jl_hvp(struct jvp_layer *j, tg_hvp_mode m, double *hv)
{
    tg_tape *t = tg_tape_new();
    tg_tensor *tensors[J_LEAVES], *dirs[J_LEAVES], *out[J_LEAVES];
    tg_tensor *f = jl_record(t, j, 0, tensors);
    for (int k = 0; k < j->n; k++) {
        dirs[k] = tg_tensor_new(t, TG_F64, j->ndim[k], j->dims[k], "u");
        tg_tensor_write(dirs[k], j->u[k], jl_size(j, k));
    }
    ck_assert_msg(tg_hvp(t, f, j->n, tensors, dirs, m, out) == TG_OK, "%s layer, %s: %s",
                  j->gru ? "gru" : "lstm",
                  m ? "reverse over reverse" : "forward over reverse", tg_tape_error(t));
    for (int k = 0, at = 0; k < j->n; at += (int)jl_size(j, k), k++)
        ck_assert_int_eq(tg_tensor_read(out[k], hv + at, jl_size(j, k)), TG_OK);
    tg_tape_free(t);
}

START_TEST(layer_hvp_matches_differences_of_the_gradient)
{
    for (int gru = 0; gru < 2; gru++) {
        struct jvp_layer j;
        tg_rng *rng = tg_rng_new(43 + (uint64_t)gru);
        jl_init(&j, gru, rng);
        const char *name = gru ? "gru layer" : "lstm layer";
        size_t n = 0;
        for (int k = 0; k < j.n; k++)
            n += jl_size(&j, k);
        double *gp = malloc(n * sizeof(double)), *gm = malloc(n * sizeof(double));
        double *hv[2] = {malloc(n * sizeof(double)), malloc(n * sizeof(double))};
        jl_grad_along(&j, 1e-6, gp);
        jl_grad_along(&j, -1e-6, gm);
        for (int m = 0; m < 2; m++)
            jl_hvp(&j, (tg_hvp_mode)m, hv[m]);
        for (int k = 0, at = 0; k < j.n; k++)
            for (size_t i = 0; i < jl_size(&j, k); i++, at++) {
                double num = (gp[at] - gm[at]) / 2e-6, a = hv[0][at];
                ck_assert_msg(fabs(a - num) <= 1e-6 * fmax(1.0, fmax(fabs(a), fabs(num))),
                              "%s: (H·u) of leaf %d [%zu]: %.17g, differences %.17g", name, k,
                              i, a, num);
                ck_assert_msg(fabs(hv[1][at] - a) <= 1e-12 * fmax(1.0, fabs(a)),
                              "%s: leaf %d [%zu]: forward over reverse %.17g, reverse over "
                              "reverse %.17g", name, k, i, a, hv[1][at]);
            }
        free(gp), free(gm), free(hv[0]), free(hv[1]);
        jl_free(&j);
        tg_rng_free(rng);
    }
}
END_TEST

/* A batch of 300 splits the gate loops and the bias sums into several parts: 1 and 2 threads
 * give the same bits, forward and backward, for both layers. */
START_TEST(same_bits_on_one_and_two_threads)
{
    enum { T = 3, B = 300, I = 5, H = 32 };
    int saved = tg_num_threads();
    for (int gru = 0; gru < 2; gru++) {
        double *got[2] = {NULL, NULL};
        size_t n = 0;
        for (int threads = 1; threads <= 2; threads++) {
            tg_set_num_threads(threads);
            tg_rng *rng = tg_rng_new(21);
            tg_params *p = tg_params_new(TG_F32);
            tg_rnn_layer l;
            ck_assert_int_eq(gru ? tg_gru_layer_init(&l, p, "r", I, H, 1, true, true, rng)
                                 : tg_lstm_layer_init(&l, p, "r", I, H, 1, true, true, rng),
                             TG_OK);
            tg_tape *t = tg_tape_new();
            tg_tensor *x = rnd_tensor(t, TG_F32, 3, (int64_t[]){T, B, I}, rng, "x");
            tg_tensor *y = gru ? tg_gru_layer_forward(t, &l, x, NULL, NULL)
                               : tg_lstm_layer_forward(t, &l, x, NULL, NULL, NULL, NULL);
            tg_tensor *r = rnd_tensor(t, TG_F32, 3, (int64_t[]){T, B, 2 * H}, rng, "R");
            ck_assert_int_eq(tg_backward(t, tg_sum(t, tg_mul(t, y, r))), TG_OK);
            n = tg_tensor_size(y);
            for (size_t i = 0; i < tg_params_count(p); i++)
                n += tg_tensor_size(tg_params_get(p, i));
            got[threads - 1] = malloc(n * sizeof(double));
            size_t k = 0;
            for (size_t i = 0; i < tg_tensor_size(y); i++)
                got[threads - 1][k++] = tg_tensor_get(y, i);
            for (size_t i = 0; i < tg_params_count(p); i++) {
                tg_tensor *w = tg_params_get(p, i);
                const float *g = tg_tensor_grad(w);
                for (size_t e = 0; e < tg_tensor_size(w); e++)
                    got[threads - 1][k++] = g[e];
            }
            tg_tape_free(t);
            tg_params_free(p);
            tg_rng_free(rng);
        }
        ck_assert_msg(!memcmp(got[0], got[1], n * sizeof(double)),
                      "%s: 1 and 2 threads differ", gru ? "gru" : "lstm");
        free(got[0]);
        free(got[1]);
    }
    tg_set_num_threads(saved);
}
END_TEST

START_TEST(warm_step_allocates_nothing)
{
    tg_set_allocator(&test_counting_allocator);
    tg_rng *rng = tg_rng_new(2);
    tg_params *p = tg_params_new(TG_F32);
    tg_lstm_layer l;
    tg_gru_layer g;
    ck_assert_int_eq(tg_lstm_layer_init(&l, p, "lstm", 3, 4, 2, true, true, rng), TG_OK);
    ck_assert_int_eq(tg_gru_layer_init(&g, p, "gru", 8, 4, 1, false, true, rng), TG_OK);
    tg_tape *t = tg_tape_new();
    float seq[6 * 2 * 3];
    for (int i = 0; i < 6 * 2 * 3; i++)
        seq[i] = (float)((i * 7) % 13) / 13.0f - 0.5f;
    size_t before = 0;
    for (int step = 0; step < 4; step++) {
        if (step == 1)
            before = test_alloc_count();
        tg_tape_reset(t);
        tg_tensor *x = tg_tensor_wrap(t, TG_F32, 3, (int64_t[]){6, 2, 3}, seq, "x");
        tg_tensor *hn = NULL, *cn = NULL, *gh = NULL;
        tg_tensor *y = tg_lstm_layer_forward(t, &l, x, NULL, NULL, &hn, &cn);
        y = tg_gru_layer_forward(t, &g, y, NULL, &gh);
        tg_tensor *loss = tg_add(t, tg_mean(t, tg_square(t, y)), tg_sum(t, cn));
        tg_backward(t, loss);
        ck_assert_msg(!tg_tape_error(t), "step %d: %s", step, tg_tape_error(t));
        tg_params_zero_grad(p);
    }
    size_t warm = test_alloc_count() - before;
    tg_tape_free(t);
    tg_params_free(p);
    tg_rng_free(rng);
    tg_set_allocator(NULL);
    ck_assert_msg(warm == 0, "%zu allocations in 3 warm steps", warm);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("recurrent");
    TCase *tc = tcase_create("cells");
    tcase_add_test(tc, cells_match_direct_loops);
    tcase_add_test(tc, second_backward_gives_the_same_gradients);
    suite_add_tcase(s, tc);
    tc = tcase_create("layers");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, layer_parameters_named_as_pytorch);
    tcase_add_test(tc, layer_shapes_stacked_bidirectional);
    tcase_add_test(tc, h0_zero_equals_none_and_h0_matters);
    tcase_add_test(tc, long_sequence_gathered_in_groups);
    tcase_add_test(tc, layer_jvp_matches_central_differences);
    tcase_add_test(tc, layer_hvp_matches_differences_of_the_gradient);
    tcase_add_test(tc, same_bits_on_one_and_two_threads);
    suite_add_tcase(s, tc);
    tc = tcase_create("errors and memory");
    tcase_add_test(tc, bad_input_refused_by_name);
    tcase_add_test(tc, warm_step_allocates_nothing);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
