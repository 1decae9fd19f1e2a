/*
 * The LSTM and GRU layer helpers (PyTorch's nn.LSTM / nn.GRU): parameters named after
 * PyTorch's state_dict keys, and a forward that unrolls the sequence on the tape.
 *
 * Per layer l and direction d: XW = X·W_ihᵀ over the whole (T·B, in) input (one matmul), then
 * T cell nodes, each reading its step's rows of XW in place (ops/recurrent.c says why), the
 * reverse direction from τ = T − 1 down. The states are gathered once per sequence: stacked
 * along time (tg_stack, in groups of TG_MAX_INPUTS), the LSTM's h sliced out of [h | c], the
 * two directions concatenated on the last axis; that is the next layer's input.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../ops/ops.h"

static tg_status
rnn_init(tg_rnn_layer *layer, tg_params *p, const char *what, int gates, const char *name,
         int64_t input_size, int64_t hidden_size, int num_layers, bool bidirectional, bool bias,
         tg_rng *rng)
{
    if (!layer || !p || !name)
        return TG_ERR_ARG;
    if (input_size < 1 || hidden_size < 1 || num_layers < 1 || num_layers > TG_RNN_MAX_LAYERS) {
        p->last = TG_ERR_ARG;
        tg__params_fail(p, TG_ERR_ARG,
                        "%s layer \"%s\": input_size %" PRId64 ", hidden_size %" PRId64
                        ", num_layers %d (sizes >= 1, 1 to %d layers)",
                        what, name, input_size, hidden_size, num_layers, TG_RNN_MAX_LAYERS);
        return TG_ERR_ARG;
    }
    tg_rnn_layer l = {.gates = gates, .input_size = input_size, .hidden_size = hidden_size,
                      .num_layers = num_layers, .num_directions = bidirectional ? 2 : 1};
    int64_t gh = gates * hidden_size;
    double bound = 1 / sqrt((double)hidden_size);
    struct tg__params_mark mark = tg__params_mark(p); /* atomic: see tg_dense_init */
    tg_status s = TG_OK;
    for (int k = 0; k < num_layers * l.num_directions && s == TG_OK; k++) {
        int li = k / l.num_directions;
        const char *rev = k % l.num_directions ? "_reverse" : "";
        int64_t in = li ? l.num_directions * hidden_size : input_size;
        tg_tensor **slot[4] = {&l.weight_ih[k], &l.weight_hh[k], &l.bias_ih[k], &l.bias_hh[k]};
        static const char *const key[4] = {"weight_ih", "weight_hh", "bias_ih", "bias_hh"};
        for (int q = 0; q < (bias ? 4 : 2) && s == TG_OK; q++) {
            char full[TG__NAME_MAX + 32];
            snprintf(full, sizeof full, "%s%s%s_l%d%s", name, *name ? "/" : "", key[q], li, rev);
            int64_t dims[2] = {gh, q == 0 ? in : hidden_size};
            *slot[q] = tg_params_add(p, full, q < 2 ? 2 : 1, dims);
            s = *slot[q] ? TG_OK : p->last;
            if (s == TG_OK && rng)
                s = tg_tensor_fill_uniform(*slot[q], rng, -bound, bound);
        }
    }
    if (s != TG_OK) {
        tg__params_rollback(p, mark);
        return s;
    }
    *layer = l;
    return TG_OK;
}

tg_status
tg_lstm_layer_init(tg_lstm_layer *layer, tg_params *p, const char *name, int64_t input_size,
                   int64_t hidden_size, int num_layers, bool bidirectional, bool bias,
                   tg_rng *rng)
{
    return rnn_init(layer, p, "lstm", 4, name, input_size, hidden_size, num_layers,
                    bidirectional, bias, rng);
}

tg_status
tg_gru_layer_init(tg_gru_layer *layer, tg_params *p, const char *name, int64_t input_size,
                  int64_t hidden_size, int num_layers, bool bidirectional, bool bias,
                  tg_rng *rng)
{
    return rnn_init(layer, p, "gru", 3, name, input_size, hidden_size, num_layers,
                    bidirectional, bias, rng);
}

/* xs[0 … n) joined along a new axis `axis`, for any n: stacks of TG_MAX_INPUTS, then concats
 * of those (xs is overwritten). */
static tg_tensor *
stack_any(tg_tape *t, tg_tensor **xs, size_t n, int axis)
{
    if (n <= TG_MAX_INPUTS)
        return tg_stack(t, xs, (int)n, axis);
    size_t m = 0;
    for (size_t i = 0; i < n; i += TG_MAX_INPUTS)
        xs[m++] = tg_stack(t, xs + i, (int)(n - i < TG_MAX_INPUTS ? n - i : TG_MAX_INPUTS), axis);
    while (m > TG_MAX_INPUTS) {
        size_t k = 0;
        for (size_t i = 0; i < m; i += TG_MAX_INPUTS)
            xs[k++] = tg_concat(t, xs + i, (int)(m - i < TG_MAX_INPUTS ? m - i : TG_MAX_INPUTS),
                                axis);
        m = k;
    }
    return tg_concat(t, xs, (int)m, axis);
}

/* x[..., lo:hi] over the last axis of a rank-3 tensor */
static tg_tensor *
last_cols(tg_tape *t, tg_tensor *x, int64_t lo, int64_t hi)
{
    return tg_slice(t, x, (const int64_t[]){0, 0, lo}, (const int64_t[]){TG_END, TG_END, hi},
                    NULL);
}

/* Checks an initial state (L·D, B, H) or NULL; resolves the handle in place. */
static bool
check_state0(tg_tape *t, const char *op, const tg_rnn_layer *l, const tg_tensor *x, int64_t b,
             tg_tensor **s, const char *what)
{
    if (!*s)
        return true;
    if (!(*s = tg__operand(t, op, what, *s)))
        return false;
    const tg_tensor *v = *s;
    int64_t ld = (int64_t)l->num_layers * l->num_directions;
    if (v->dtype != x->dtype) {
        tg__fail(t, TG_ERR_DTYPE, "%s: x %s %s is %s, %s %s %s is %s", op, tg__name_text(x).s,
                 tg__shape_text(x).s, tg_dtype_name(x->dtype), what, tg__name_text(v).s,
                 tg__shape_text(v).s, tg_dtype_name(v->dtype));
        return false;
    }
    if (v->ndim != 3 || v->dims[0] != ld || v->dims[1] != b || v->dims[2] != l->hidden_size) {
        tg__fail(t, TG_ERR_SHAPE,
                 "%s: x %s %s: %s %s %s must be (num_layers·num_directions, B, H) = (%" PRId64
                 "x%" PRId64 "x%" PRId64 ")",
                 op, tg__name_text(x).s, tg__shape_text(x).s, what, tg__name_text(v).s,
                 tg__shape_text(v).s, ld, b, l->hidden_size);
        return false;
    }
    return true;
}

/* Row k of an initial state (L·D, B, H) as (B, H), or zeros (B, H) when s0 is NULL */
static tg_tensor *
state0_row(tg_tape *t, tg_tensor *s0, int k, int64_t b, int64_t h, tg_dtype dt)
{
    if (!s0)
        return tg_tensor_new(t, dt, 2, (const int64_t[]){b, h}, NULL);
    tg_tensor *r = tg_slice(t, s0, (const int64_t[]){k, 0, 0},
                            (const int64_t[]){k + 1, TG_END, TG_END}, NULL);
    return tg_reshape(t, r, 2, (const int64_t[]){b, h});
}

static tg_tensor *
rnn_forward(tg_tape *t, const tg_rnn_layer *l, int gates, tg_tensor *x, tg_tensor *h0,
            tg_tensor *c0, tg_tensor **h_n, tg_tensor **c_n)
{
    const char *op = gates == 4 ? "lstm layer" : "gru layer";
    if (!t)
        return NULL;
    if (t->status != TG_OK)
        return &t->nil;
    if (!l || l->gates != gates || l->num_layers < 1 || l->num_layers > TG_RNN_MAX_LAYERS ||
        !l->weight_ih[0])
        return tg__fail(t, TG_ERR_ARG, "%s: layer is NULL or not made by tg_%s_layer_init", op,
                        gates == 4 ? "lstm" : "gru");
    if (!(x = tg__operand(t, op, "x", x)))
        return &t->nil;
    const tg_tensor *w0 = l->weight_ih[0];
    if (x->dtype != w0->dtype)
        return tg__fail(t, TG_ERR_DTYPE, "%s: x %s %s is %s, the layer's weight_ih %s %s is %s",
                        op, tg__name_text(x).s, tg__shape_text(x).s, tg_dtype_name(x->dtype),
                        tg__name_text(w0).s, tg__shape_text(w0).s, tg_dtype_name(w0->dtype));
    if (x->ndim != 3 || x->dims[2] != w0->dims[1])
        return tg__fail(t, TG_ERR_SHAPE,
                        "%s: x %s %s must be %s with I = %" PRId64 " (the input size of %s %s)",
                        op, tg__name_text(x).s, tg__shape_text(x).s,
                        l->batch_first ? "(B, T, I)" : "(T, B, I)", w0->dims[1],
                        tg__name_text(w0).s, tg__shape_text(w0).s);
    int64_t steps = x->dims[l->batch_first ? 1 : 0], b = x->dims[l->batch_first ? 0 : 1];
    if (steps < 1)
        return tg__fail(t, TG_ERR_SHAPE, "%s: x %s %s: a sequence of length 0", op,
                        tg__name_text(x).s, tg__shape_text(x).s);
    if (!check_state0(t, op, l, x, b, &h0, "h0") ||
        (gates == 4 && !check_state0(t, op, l, x, b, &c0, "c0")))
        return &t->nil;
    int64_t h = l->hidden_size;
    int dirs = l->num_directions, n_final = l->num_layers * dirs;
    size_t n_states = (size_t)steps > (size_t)n_final ? (size_t)steps : (size_t)n_final;
    tg_tensor **states = tg__arena_alloc(&t->arena, (n_states + (size_t)n_final) * sizeof *states);
    if (!states)
        return tg__fail(t, TG_ERR_NOMEM, "%s: out of memory for %zu state handles", op,
                        n_states + (size_t)n_final);
    tg_tensor **final = states + n_states;
    tg_tensor *in = x;
    size_t tb = (size_t)steps * (size_t)b;
    int time_axis = l->batch_first ? 1 : 0;
    for (int li = 0; li < l->num_layers; li++) {
        tg_tensor *seq[2];
        tg_tensor *in2 = tg_reshape(t, in, 2, (const int64_t[]){(int64_t)tb, tg_tensor_dim(in, 2)});
        for (int d = 0; d < dirs; d++) {
            int k = li * dirs + d;
            tg_tensor *xw = tg_matmul_t(t, in2, false, l->weight_ih[k], true);
            tg_tensor *s;
            if (gates == 3)
                s = state0_row(t, h0, k, b, h, x->dtype);
            else if (!h0 && !c0)
                s = tg_tensor_new(t, x->dtype, 2, (const int64_t[]){b, 2 * h}, NULL);
            else
                s = tg_concat(t, (tg_tensor *[]){state0_row(t, h0, k, b, h, x->dtype),
                                                 state0_row(t, c0, k, b, h, x->dtype)},
                              2, 1);
            for (int64_t i = 0; i < steps; i++) {
                int64_t tau = d ? steps - 1 - i : i;
                int64_t row0 = l->batch_first ? tau : tau * b, rstep = l->batch_first ? steps : 1;
                s = gates == 4 ? tg__lstm_cell_rows(t, xw, row0, rstep, false, s,
                                                    l->weight_hh[k], l->bias_ih[k],
                                                    l->bias_hh[k])
                               : tg__gru_cell_rows(t, xw, row0, rstep, false, s, l->weight_hh[k],
                                                   l->bias_ih[k], l->bias_hh[k]);
                states[tau] = s;
            }
            final[k] = s;
            seq[d] = stack_any(t, states, (size_t)steps, time_axis);
            if (gates == 4)
                seq[d] = last_cols(t, seq[d], 0, h);
        }
        in = dirs == 1 ? seq[0] : tg_concat(t, seq, 2, 2);
    }
    tg_tensor *fin = stack_any(t, final, (size_t)n_final, 0);
    if (t->status != TG_OK)
        return &t->nil;
    if (h_n)
        *h_n = gates == 4 ? last_cols(t, fin, 0, h) : fin;
    if (c_n && gates == 4)
        *c_n = last_cols(t, fin, h, 2 * h);
    return t->status == TG_OK ? in : &t->nil;
}

tg_tensor *
tg_lstm_layer_forward(tg_tape *t, const tg_lstm_layer *layer, tg_tensor *x, tg_tensor *h0,
                      tg_tensor *c0, tg_tensor **h_n, tg_tensor **c_n)
{
    return rnn_forward(t, layer, 4, x, h0, c0, h_n, c_n);
}

tg_tensor *
tg_gru_layer_forward(tg_tape *t, const tg_gru_layer *layer, tg_tensor *x, tg_tensor *h0,
                     tg_tensor **h_n)
{
    return rnn_forward(t, layer, 3, x, h0, NULL, h_n, NULL);
}
