/*
 * Recurrent cells: lstm_cell and gru_cell (PyTorch's nn.LSTMCell / nn.GRUCell gate orders),
 * one step of a recurrence each, fused: one node, one GEMM forward and two in the VJP.
 *
 * The split. A layer over a sequence computes the input projection of every step at once,
 * XW = X·W_ihᵀ over the (T·B, I) input, as one plain matmul (one big GEMM forward, two in its
 * VJP); each cell then takes its step's rows of XW (`xw`) instead of x and W_ih, and does only
 * h·W_hhᵀ and the gate math. The public cells take an xw of exactly (B, G·H); the layer helper
 * (lib/layers/recurrent.c) hands the whole XW with the row of batch b at step τ given by
 * attr.v[0] = {first row, row stride} (τ·B + b for (T, B, I) input, b·T + τ for batch_first),
 * so no per-step slice of XW is ever copied.
 *
 * The LSTM's two outputs (h', c') travel as one state tensor (B, 2H) = [h | c] that the next
 * step reads directly (h as its first H columns, with a leading dimension of 2H); the layer
 * slices h out of the stacked states once per sequence.
 *
 * Saved for the VJP, in the node's scratch: the gate activations (B, 4H) per step and a flag.
 * The VJP turns them into the gate pre-activation gradients in place (that is the GEMMs'
 * operand), so a step keeps 4BH values of scratch and no gradient work area; the flag marks the
 * gates consumed, and a VJP run again without a forward in between (a second backward, the
 * checkers) first recomputes them exactly as the forward did (the same GEMM and loops: the
 * same bits). tanh(c') is recomputed from c' (in the output) rather than stored.
 *
 * Biases b_ih and b_hh are each optional (bias=False); both are added in the cell, so XW needs
 * no bias node. The gate loops run in the tensor's dtype on vmath.h's vectorized σ and tanh
 * (a few ulps from libm's); the bias gradients sum over the batch in double, in row order. Bits do not depend on the thread count
 * (the GEMMs' guarantee; the gate loops split the batch rows, the bias sums the columns).
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../kernels/kernels.h"
#include "ops.h"
#include "vmath.h"

/* Row kernels of the gate loops, in the tensor's dtype, on vmath.h's branch-free σ and tanh
 * (vectorized per ISA through TG__VEC_CLONES; the same bits on every path). */
#define CELL_KERNELS(T, SFX, VSIGMOID, VTANH)                                                  \
    TG__VEC_CLONES static void add_into_##SFX(T *restrict a, const T *restrict b, size_t n)    \
    {                                                                                          \
        for (size_t k = 0; k < n; k++)                                                         \
            a[k] += b[k];                                                                      \
    }                                                                                          \
    TG__VEC_CLONES static void sigmoid_rows_##SFX(T *a, size_t n)                              \
    {                                                                                          \
        for (size_t k = 0; k < n; k++)                                                         \
            a[k] = VSIGMOID(a[k]);                                                             \
    }                                                                                          \
    TG__VEC_CLONES static void tanh_rows_##SFX(T *a, size_t n)                                 \
    {                                                                                          \
        for (size_t k = 0; k < n; k++)                                                         \
            a[k] = VTANH(a[k]);                                                                \
    }                                                                                          \
    TG__VEC_CLONES static void tanh_to_##SFX(T *restrict y, const T *restrict x, size_t n)     \
    {                                                                                          \
        for (size_t k = 0; k < n; k++)                                                         \
            y[k] = VTANH(x[k]);                                                                \
    }
CELL_KERNELS(float, f32, tg__vsigmoidf, tg__vtanhf)
CELL_KERNELS(double, f64, tg__vsigmoid, tg__vtanh)
#define ADD_INTO(a, b, n) _Generic((a), float *: add_into_f32, double *: add_into_f64)(a, b, n)
#define SIGMOID_ROWS(a, n) _Generic((a), float *: sigmoid_rows_f32, double *: sigmoid_rows_f64)(a, n)
#define TANH_ROWS(a, n) _Generic((a), float *: tanh_rows_f32, double *: tanh_rows_f64)(a, n)
#define TANH_TO(y, x, n) _Generic((y), float *: tanh_to_f32, double *: tanh_to_f64)(y, x, n)

/* Elements of tanh(c') made at a time by the LSTM's VJP (on the stack) */
#define CELL_BLOCK 256

/* attr: v[0][0] first row of xw, v[0][1] row stride (batch b reads row v0 + b·v1);
 * axes bit 0: b_ih given, bit 1: b_hh given (inputs 3 and then 4, or 3 when only b_hh) */
struct cell {
    size_t b, h, g;     /* batch, hidden size, gates (4 for the LSTM, 3 for the GRU) */
    size_t row0, rstep; /* xw's rows */
    const tg_tensor *xw, *state, *w_hh, *b_ih, *b_hh;
    size_t icol[4]; /* VJP: where gate k's input-side gradient dI starts in the scratch's rows */
    const void *gates; /* JVP: the (B, 4H) gate activations, the scratch's or recomputed */
    void *dpre;        /* JVP: the (B, 4H) pre-activation tangents, laid out as dS and dI */
};

static struct cell
cell_of(const tg_node *nd, size_t gates)
{
    struct cell c = {(size_t)nd->in[1]->dims[0], (size_t)nd->in[2]->dims[1], gates,
                     (size_t)nd->attr->v[0][0], (size_t)nd->attr->v[0][1], nd->in[0], nd->in[1],
                     nd->in[2], NULL, NULL, {0}, NULL, NULL};
    int k = 3;
    if (nd->attr->axes & 1)
        c.b_ih = nd->in[k++];
    if (nd->attr->axes & 2)
        c.b_hh = nd->in[k];
    for (size_t q = 0; q < gates; q++) /* the LSTM's dI is its dS; the GRU's skips dn̂ ⊙ r */
        c.icol[q] = (gates == 3 && q == 2 ? 3 : q) * c.h;
    return c;
}

/* The gate loops run a band of batch rows [begin, end) each, the bands spread over threads
 * (each row is independent, so the bits do not depend on the thread count). */
typedef void cell_rows_fn(tg_node *nd, const struct cell *c, size_t begin, size_t end);
struct cell_job {
    tg_node *nd;
    const struct cell *c;
    cell_rows_fn *rows;
};

static void
cell_part(size_t begin, size_t end, void *ctx)
{
    struct cell_job *j = ctx;
    j->rows(j->nd, j->c, begin, end);
}

static void
cell_rows(tg_node *nd, const struct cell *c, size_t n, cell_rows_fn *rows, size_t per)
{
    struct cell_job j = {nd, c, rows};
    tg__parallel_for(n, per ? ((size_t)1 << 14) / per + 1 : 1, cell_part, &j);
}

/* scratch: the (B, 4H) gates, then the flag "gates hold activations" (the VJP consumes them) */
static size_t
cell_scratch(const tg_node *nd)
{
    size_t b = (size_t)nd->in[1]->dims[0], h = (size_t)nd->in[2]->dims[1];
    return b * 4 * h * tg__dtype_bytes(nd->in[0]->dtype) + sizeof(double);
}

static bool *
gates_valid(const tg_node *nd)
{
    return (bool *)((char *)nd->scratch + nd->scratch_bytes - sizeof(double));
}

/* G = h·W_hhᵀ (B x g·H, leading dimension 4H) into the scratch: the step's one GEMM. h is the
 * state's first H columns (leading dimension ldh). */
static void
cell_gemm(const tg_node *nd, struct cell c, size_t ldh)
{
    size_t n = c.g * c.h;
    if (nd->out->dtype == TG_F32)
        tg__gemm_f32(false, true, c.b, n, c.h, 1.0f, c.state->data, ldh, c.w_hh->data, c.h,
                     0.0f, nd->scratch, 4 * c.h);
    else
        tg__gemm_f64(false, true, c.b, n, c.h, 1.0, c.state->data, ldh, c.w_hh->data, c.h, 0.0,
                     nd->scratch, 4 * c.h);
}

/* The pre-activation gradients' use, shared by both cells: dS (B x g·H, leading dimension 4H,
 * the scratch) is d(h·W_hhᵀ + b_hh); dI (columns `icol` of the scratch) is d(xw + b_ih).
 *   dh_prev += dS·W_hh   (B x H, into the state gradient, leading dimension ldh)
 *   dW_hh  += dSᵀ·h_prev
 *   db_hh += Σ_b dS,  db_ih += Σ_b dI,  dxw[rows] += dI */
/* dxw[rows of b] += dI for the batch rows [begin, end) */
static void
dxw_rows(tg_node *nd, const struct cell *c, size_t begin, size_t end)
{
    size_t ld = 4 * c->h, n = c->g * c->h;
    TG__DISPATCH(nd->out->dtype, T, {
        const T *ds = nd->scratch;
        T *dxw = c->xw->grad;
        for (size_t b = begin; b < end; b++) {
            T *dr = dxw + (c->row0 + b * c->rstep) * n;
            for (size_t q = 0; q < c->g; q++)
                for (size_t j = 0; j < c->h; j++)
                    dr[q * c->h + j] += ds[b * ld + c->icol[q] + j];
        }
    });
}

/* db_ih += Σ_b dI and db_hh += Σ_b dS for the bias elements [begin, end), 64 at a time: each
 * sums its batch rows in order, in double */
static void
bias_cols(tg_node *nd, const struct cell *c, size_t begin, size_t end)
{
    size_t ld = 4 * c->h;
    TG__DISPATCH(nd->out->dtype, T, {
        const T *ds = nd->scratch;
        T *dbi = c->b_ih ? c->b_ih->grad : NULL, *dbh = c->b_hh ? c->b_hh->grad : NULL;
        for (size_t k0 = begin; k0 < end; k0 += 64) {
            size_t len = end - k0 < 64 ? end - k0 : 64;
            double si[64] = {0}, sh[64] = {0};
            for (size_t b = 0; b < c->b; b++)
                for (size_t i = 0; i < len; i++) {
                    size_t k = k0 + i;
                    si[i] += ds[b * ld + c->icol[k / c->h] + k % c->h];
                    sh[i] += ds[b * ld + k];
                }
            for (size_t i = 0; i < len; i++) {
                if (dbi)
                    dbi[k0 + i] += (T)si[i];
                if (dbh)
                    dbh[k0 + i] += (T)sh[i];
            }
        }
    });
}

/* The pre-activation gradients' use, shared by both cells: dS (B x g·H, leading dimension 4H,
 * the scratch) is d(h·W_hhᵀ + b_hh); dI (columns icol of the scratch) is d(xw + b_ih).
 *   dh_prev += dS·W_hh   (B x H, into the state gradient, leading dimension ldh)
 *   dW_hh  += dSᵀ·h_prev
 *   db_hh += Σ_b dS,  db_ih += Σ_b dI,  dxw[rows] += dI */
static void
cell_vjp_common(tg_node *nd, const struct cell *cp, size_t ldh)
{
    struct cell c = *cp;
    size_t ld = 4 * c.h, n = c.g * c.h;
    if (c.xw->grad)
        cell_rows(nd, cp, c.b, dxw_rows, n);
    if ((c.b_ih && c.b_ih->grad) || (c.b_hh && c.b_hh->grad)) {
        struct cell_job j = {nd, cp, bias_cols};
        tg__parallel_for(n, c.b ? ((size_t)1 << 14) / c.b / 64 * 64 + 64 : n, cell_part, &j);
    }
    void *dstate = c.state->grad, *dw = c.w_hh->grad;
    bool f64 = nd->out->dtype == TG_F64;
    if (dstate)
        tg__gemm_typed(f64, false, false, c.b, c.h, n, nd->scratch, ld, c.w_hh->data, c.h, 1.0,
                       dstate, ldh);
    if (dw)
        tg__gemm_typed(f64, true, false, n, c.h, c.b, nd->scratch, ld, c.state->data, ldh, 1.0,
                       dw, c.h);
}

/* Forward mode, shared by both cells. The pre-activation tangents go where the VJP puts the
 * pre-activation gradients: the hidden side Ṡ = d(h·W_hhᵀ + b_hh) in columns q·H of the row
 * (leading dimension 4H), the input side İ = d(xw + b_ih) in columns icol[q] (the same columns
 * for the LSTM, whose gates add the two; column 3H for the GRU's n, kept apart because Ṡ_n is
 * multiplied by r):
 *   İ = ẋw[rows] + ḃ_ih,   Ṡ = ḃ_hh + ḣ·W_hhᵀ + h·Ẇ_hhᵀ   (the GEMMs accumulate, beta = 1) */
static void
dpre_rows(tg_node *nd, const struct cell *c, size_t begin, size_t end)
{
    size_t h = c->h, ld = 4 * h, n = c->g * h;
    TG__DISPATCH(nd->out->dtype, T, {
        T *dp = c->dpre;
        const T *dxw = c->xw->tangent, *dbi = c->b_ih ? c->b_ih->tangent : NULL;
        const T *dbh = c->b_hh ? c->b_hh->tangent : NULL;
        for (size_t b = begin; b < end; b++) {
            T *dr = dp + b * ld;
            memset(dr, 0, ld * sizeof(T));
            const T *xr = dxw ? dxw + (c->row0 + b * c->rstep) * n : NULL;
            for (size_t q = 0; q < c->g; q++) {
                if (xr)
                    ADD_INTO(dr + c->icol[q], xr + q * h, h);
                if (dbi)
                    ADD_INTO(dr + c->icol[q], dbi + q * h, h);
                if (dbh)
                    ADD_INTO(dr + q * h, dbh + q * h, h);
            }
        }
    });
}

static void
cell_dpre(tg_node *nd, const struct cell *cp, size_t ldh)
{
    struct cell c = *cp;
    size_t ld = 4 * c.h, n = c.g * c.h;
    bool f64 = nd->out->dtype == TG_F64;
    cell_rows(nd, cp, c.b, dpre_rows, ld);
    if (c.state->tangent) /* Ṡ += ḣ·W_hhᵀ */
        tg__gemm_typed(f64, false, true, c.b, n, c.h, c.state->tangent, ldh, c.w_hh->data, c.h,
                       1.0, c.dpre, ld);
    if (c.w_hh->tangent) /* Ṡ += h·Ẇ_hhᵀ */
        tg__gemm_typed(f64, false, true, c.b, n, c.h, c.state->data, ldh, c.w_hh->tangent, c.h,
                       1.0, c.dpre, ld);
}

/* The JVP's one scratch block: the pre-activation tangents (B, 4H), and, when a VJP has
 * consumed the saved gates, room for the gates recomputed as the forward made them (the node's
 * own scratch is left as it is: a later VJP reads its flag). Sets c->gates and c->dpre. */
static bool
cell_jvp_setup(tg_node *nd, struct cell *c, void (*gates)(tg_node *, const struct cell *))
{
    size_t esize = tg__dtype_bytes(nd->out->dtype), dbytes = c->b * 4 * c->h * esize;
    bool valid = *gates_valid(nd);
    size_t gbytes = valid ? 0 : (nd->scratch_bytes + 63) / 64 * 64;
    char *block = tg__jvp_scratch(nd, gbytes + dbytes);
    if (!block)
        return false;
    c->dpre = block + gbytes;
    c->gates = nd->scratch;
    if (!valid) {
        tg_node copy = *nd;
        copy.scratch = block;
        gates(&copy, c);
        c->gates = block;
    }
    return true;
}

/* ---- the differentiable VJP (tg_grad), shared by both cells ----
 * The rules recompute the gates with ops from the node's inputs and write the VJP formulas
 * with ops, so that their derivatives come from those ops' own rules. */

/* x[:, from:to] of a 2-D tensor, recorded */
static tg_tensor *
graph_cols(tg_tape *t, tg_tensor *x, int64_t from, int64_t to)
{
    return tg_slice(t, x, (const int64_t[]){0, from}, (const int64_t[]){TG_END, to}, NULL);
}

/* σ'(a) = s (1 − s) from s = σ(a), recorded */
static tg_tensor *
graph_sigmoid_slope(tg_tape *t, tg_tensor *one, tg_tensor *s)
{
    return tg_mul(t, s, tg_sub(t, one, s));
}

/* The cell's rows of xw (B, G·H): xw itself when the cell reads it whole, else the recorded
 * selection xw[row0 : row0 + (B − 1)·rstep + 1 : rstep] (the rows row0 + b·rstep) */
static tg_tensor *
graph_xw_rows(tg_node *nd)
{
    tg_tensor *xw = nd->in[0];
    int64_t b = nd->in[1]->dims[0], row0 = nd->attr->v[0][0], rstep = nd->attr->v[0][1];
    if (row0 == 0 && rstep == 1 && xw->dims[0] == b)
        return xw;
    return tg_slice(nd->tape, xw, (const int64_t[]){row0, 0},
                    (const int64_t[]){row0 + (b - 1) * rstep + 1, TG_END},
                    (const int64_t[]){rstep, 1});
}

/* dxw from the gradient dI of the rows graph_xw_rows took: dI itself, or the selection's
 * adjoint (dI scattered into xw's shape, zeros elsewhere) as the slice's own vjp_graph */
static tg_tensor *
graph_dxw(tg_node *nd, tg_tensor *rows, tg_tensor *d_rows)
{
    if (rows == nd->in[0])
        return d_rows;
    tg_tensor *r = tg__tensor(rows);
    if (r->kind == TG__KIND_NIL || !r->node)
        return r;
    return r->node->op->vjp_graph(r->node, 0, d_rows);
}

/* The gradient of input k from the pre-activation gradients: dI = d(xw + b_ih) (B, G·H) and
 * dS = d(h·W_hhᵀ + b_hh) (B, G·H), h_prev (B, H); dh_prev is the state's (its own rule).
 *   dxw = dI in the cell's rows, dW_hh = dSᵀ·h_prev, db_ih = Σ_b dI, db_hh = Σ_b dS */
static tg_tensor *
graph_cell_input_grad(tg_node *nd, int k, tg_tensor *rows, tg_tensor *d_in, tg_tensor *d_hid,
                      tg_tensor *h_prev)
{
    tg_tape *t = nd->tape;
    const int batch_axis = 0;
    if (k == 0)
        return graph_dxw(nd, rows, d_in);
    if (k == 2)
        return tg_matmul_t(t, d_hid, true, h_prev, false);
    bool is_b_ih = k == 3 && (nd->attr->axes & 1);
    return tg_sum_axes(t, is_b_ih ? d_in : d_hid, &batch_axis, 1, false);
}

/* Checks shared by both cells: xw (B, g·H) (exact_rows) or holding the rows the layer names,
 * state (B, sw·H), w_hh (g·H, H), b_ih and b_hh (g·H) or NULL, one dtype. Resolves every
 * handle in place. */
static bool
cell_check(tg_tape *t, const char *op, size_t g, size_t sw, tg_tensor **xw, tg_tensor **state,
           tg_tensor **w_hh, tg_tensor **b_ih, tg_tensor **b_hh, int64_t row0, int64_t rstep,
           bool exact_rows)
{
    if (!(*xw = tg__operand(t, op, "xw", *xw)) ||
        !(*state = tg__operand(t, op, sw == 2 ? "state" : "h", *state)) ||
        !(*w_hh = tg__operand(t, op, "w_hh", *w_hh)) ||
        (*b_ih && !(*b_ih = tg__operand(t, op, "b_ih", *b_ih))) ||
        (*b_hh && !(*b_hh = tg__operand(t, op, "b_hh", *b_hh))))
        return false;
    const tg_tensor *x = *xw, *s = *state, *w = *w_hh, *bi = *b_ih, *bh = *b_hh;
    char shapes[6 * (TG__NAME_MAX + 64) + 64];
    snprintf(shapes, sizeof shapes, "xw %s %s, %s %s %s, w_hh %s %s", tg__name_text(x).s,
             tg__shape_text(x).s, sw == 2 ? "state" : "h", tg__name_text(s).s,
             tg__shape_text(s).s, tg__name_text(w).s, tg__shape_text(w).s);
    const tg_tensor *bias[2] = {bi, bh};
    for (int k = 0; k < 3 + 2; k++) {
        const tg_tensor *v = k == 0 ? x : k == 1 ? s : k == 2 ? w : bias[k - 3];
        if (v && v->dtype != x->dtype) {
            tg__fail(t, TG_ERR_DTYPE, "%s: %s: dtypes differ: %s is %s, xw is %s", op, shapes,
                     tg__name_text(v).s, tg_dtype_name(v->dtype), tg_dtype_name(x->dtype));
            return false;
        }
    }
    if (w->ndim != 2 || w->dims[0] % (int64_t)g || w->dims[0] / (int64_t)g != w->dims[1]) {
        tg__fail(t, TG_ERR_SHAPE, "%s: %s: w_hh must be (%zu·H, H)", op, shapes, g);
        return false;
    }
    int64_t h = w->dims[1];
    if (s->ndim != 2 || s->dims[1] != (int64_t)sw * h) {
        tg__fail(t, TG_ERR_SHAPE,
                 "%s: %s: hidden size differs: w_hh says H = %" PRId64 ", so %s must be (B, %"
                 PRId64 ")",
                 op, shapes, h, sw == 2 ? "state [h | c]" : "h", (int64_t)sw * h);
        return false;
    }
    int64_t b = s->dims[0];
    int64_t rows_needed = b ? row0 + (b - 1) * rstep + 1 : 0;
    bool rows_ok = exact_rows ? x->dims[0] == b : x->dims[0] >= rows_needed;
    if (x->ndim != 2 || x->dims[1] != (int64_t)g * h || !rows_ok) {
        tg__fail(t, TG_ERR_SHAPE,
                 "%s: %s: xw must be (B, %zu·H) = (%" PRId64 ", %" PRId64 ") (the input "
                 "projection x·W_ihᵀ, whose rows must match the state's batch)",
                 op, shapes, g, b, (int64_t)g * h);
        return false;
    }
    for (int k = 0; k < 2; k++)
        if (bias[k] && (bias[k]->ndim != 1 || bias[k]->dims[0] != (int64_t)g * h)) {
            tg__fail(t, TG_ERR_SHAPE, "%s: %s: %s %s %s must be a vector of %" PRId64, op,
                     shapes, k ? "b_hh" : "b_ih", tg__name_text(bias[k]).s,
                     tg__shape_text(bias[k]).s, (int64_t)g * h);
            return false;
        }
    return true;
}

static tg_status
cell_shape(tg_node *nd, int *ndim, int64_t *dims)
{
    *ndim = 2;
    dims[0] = nd->in[1]->dims[0];
    dims[1] = nd->in[1]->dims[1];
    return TG_OK;
}

static tg_tensor *
cell_record(tg_tape *t, const tg_op *op, tg_tensor *xw, tg_tensor *state, tg_tensor *w_hh,
            tg_tensor *b_ih, tg_tensor *b_hh, int64_t row0, int64_t rstep)
{
    struct tg__attr attr = {.axes = (b_ih ? 1u : 0u) | (b_hh ? 2u : 0u)};
    attr.v[0][0] = row0;
    attr.v[0][1] = rstep;
    tg_tensor *in[5] = {xw, state, w_hh, b_ih ? b_ih : b_hh, b_ih ? b_hh : NULL};
    return tg__record(t, op, in, 3 + !!b_ih + !!b_hh, &attr, NULL);
}

/*
 * lstm_cell:  state (B, 2H) = [h | c], xw (B, 4H) = x·W_ihᵀ, W_hh (4H, H), b_ih, b_hh (4H)
 *   a = xw + b_ih + h·W_hhᵀ + b_hh = [a_i | a_f | a_g | a_o]  (PyTorch's order)
 *   i = σ(a_i), f = σ(a_f), g = tanh(a_g), o = σ(a_o)
 *   c' = f ⊙ c + i ⊙ g,  h' = o ⊙ tanh(c')  ->  state' = [h' | c'] (B, 2H)
 *
 *   VJP, from dstate' = [dh' | dc']:
 *     dc̃ = dc' + dh' ⊙ o ⊙ (1 − tanh²(c'))     (the total gradient at c')
 *     da_i = dc̃ ⊙ g ⊙ i(1 − i),  da_f = dc̃ ⊙ c ⊙ f(1 − f)
 *     da_g = dc̃ ⊙ i ⊙ (1 − g²),  da_o = dh' ⊙ tanh(c') ⊙ o(1 − o)
 *     dc += dc̃ ⊙ f,  dh += da·W_hh,  dW_hh += daᵀ·h,  dxw += da,  db_ih += Σ_b da,
 *     db_hh += Σ_b da
 *
 *   JVP, from [ḣ | ċ], ẋw, Ẇ_hh, ḃ_ih, ḃ_hh:
 *     ȧ = ẋw + ḃ_ih + ḃ_hh + ḣ·W_hhᵀ + h·Ẇ_hhᵀ
 *     i̇ = i(1 − i) ȧ_i,  ḟ = f(1 − f) ȧ_f,  ġ = (1 − g²) ȧ_g,  ȯ = o(1 − o) ȧ_o
 *     ċ' = ḟ ⊙ c + f ⊙ ċ + i̇ ⊙ g + i ⊙ ġ,  ḣ' = ȯ ⊙ tanh(c') + o ⊙ (1 − tanh²(c')) ⊙ ċ'
 *   from the saved activations i, f, g, o and tanh(c') recomputed from c' (as the VJP does).
 */
static void
lstm_gate_rows(tg_node *nd, const struct cell *cp, size_t begin, size_t end)
{
    struct cell c = *cp;
    size_t h = c.h, ld = 4 * h;
    TG__DISPATCH(nd->out->dtype, T, {
        T *a = nd->scratch;
        const T *xw = c.xw->data, *bi = c.b_ih ? c.b_ih->data : NULL;
        const T *bh = c.b_hh ? c.b_hh->data : NULL;
        for (size_t b = begin; b < end; b++) {
            T *ar = a + b * ld; /* h·W_hhᵀ, from the GEMM */
            ADD_INTO(ar, xw + (c.row0 + b * c.rstep) * ld, ld);
            if (bi)
                ADD_INTO(ar, bi, ld);
            if (bh)
                ADD_INTO(ar, bh, ld);
            SIGMOID_ROWS(ar, 2 * h); /* i, f */
            TANH_ROWS(ar + 2 * h, h); /* g */
            SIGMOID_ROWS(ar + 3 * h, h); /* o */
        }
    });
}

static void
lstm_gates(tg_node *nd, const struct cell *c)
{
    cell_gemm(nd, *c, 2 * c->h);
    cell_rows(nd, c, c->b, lstm_gate_rows, 4 * c->h);
    *gates_valid(nd) = true;
}

static void
lstm_out_rows(tg_node *nd, const struct cell *cp, size_t begin, size_t end)
{
    struct cell c = *cp;
    size_t h = c.h;
    TG__DISPATCH(nd->out->dtype, T, {
        const T *a = nd->scratch, *s = c.state->data;
        T *y = nd->out->data;
        for (size_t b = begin; b < end; b++) {
            const T *ar = a + b * 4 * h, *sr = s + b * 2 * h;
            T *yr = y + b * 2 * h;
            for (size_t j = 0; j < h; j++) /* c' = f ⊙ c + i ⊙ g */
                yr[h + j] = ar[h + j] * sr[h + j] + ar[j] * ar[2 * h + j];
            TANH_TO(yr, yr + h, h);
            for (size_t j = 0; j < h; j++) /* h' = o ⊙ tanh(c') */
                yr[j] *= ar[3 * h + j];
        }
    });
}

static tg_status
lstm_forward(tg_node *nd)
{
    if (nd->out->size == 0) /* (B, 0) or (0, ·): nothing to do, and B may be huge */
        return TG_OK;
    struct cell c = cell_of(nd, 4);
    lstm_gates(nd, &c);
    cell_rows(nd, &c, c.b, lstm_out_rows, 4 * c.h);
    return TG_OK;
}

static void
lstm_dgate_rows(tg_node *nd, const struct cell *cp, size_t begin, size_t end)
{
    struct cell c = *cp;
    size_t h = c.h;
    TG__DISPATCH(nd->out->dtype, T, {
        T *a = nd->scratch, *dst = c.state->grad;
        const T *s = c.state->data, *y = nd->out->data, *dy = nd->out->grad;
        T tc[CELL_BLOCK], dc[CELL_BLOCK];
        for (size_t b = begin; b < end; b++) {
            T *ar = a + b * 4 * h;
            const T *sr = s + b * 2 * h, *yr = y + b * 2 * h, *dyr = dy + b * 2 * h;
            for (size_t j0 = 0; j0 < h; j0 += CELL_BLOCK) {
                size_t len = h - j0 < CELL_BLOCK ? h - j0 : CELL_BLOCK;
                T *ai = ar + j0, *af = ai + h, *ag = af + h, *ao = ag + h;
                TANH_TO(tc, yr + h + j0, len);
                for (size_t j = 0; j < len; j++) {
                    T i = ai[j], f = af[j], g = ag[j], o = ao[j], dh = dyr[j0 + j];
                    T d = dyr[h + j0 + j] + dh * o * (1 - tc[j] * tc[j]);
                    ai[j] = d * g * i * (1 - i);
                    af[j] = d * sr[h + j0 + j] * f * (1 - f);
                    ag[j] = d * i * (1 - g * g);
                    ao[j] = dh * tc[j] * o * (1 - o);
                    dc[j] = d * f;
                }
                if (dst)
                    ADD_INTO(dst + b * 2 * h + h + j0, dc, len);
            }
        }
    });
}

static tg_status
lstm_vjp(tg_node *nd)
{
    if (nd->out->size == 0)
        return TG_OK;
    struct cell c = cell_of(nd, 4);
    if (!c.xw->grad && !c.state->grad && !c.w_hh->grad && !(c.b_ih && c.b_ih->grad) &&
        !(c.b_hh && c.b_hh->grad))
        return TG_OK;
    if (!*gates_valid(nd))
        lstm_gates(nd, &c);
    cell_rows(nd, &c, c.b, lstm_dgate_rows, 4 * c.h);
    *gates_valid(nd) = false;
    cell_vjp_common(nd, &c, 2 * c.h);
    return TG_OK;
}

/* [ḣ' | ċ'] for the batch rows [begin, end), from the pre-activation tangents ȧ */
static void
lstm_tangent_rows(tg_node *nd, const struct cell *cp, size_t begin, size_t end)
{
    struct cell c = *cp;
    size_t h = c.h;
    TG__DISPATCH(nd->out->dtype, T, {
        const T *a = c.gates, *da = c.dpre, *s = c.state->data, *ds = c.state->tangent;
        const T *y = nd->out->data;
        T *dy = nd->out->tangent;
        T tc[CELL_BLOCK];
        for (size_t b = begin; b < end; b++) {
            const T *ar = a + b * 4 * h, *dar = da + b * 4 * h, *sr = s + b * 2 * h;
            const T *dsr = ds ? ds + b * 2 * h : NULL, *yr = y + b * 2 * h;
            T *dyr = dy + b * 2 * h;
            for (size_t j0 = 0; j0 < h; j0 += CELL_BLOCK) {
                size_t len = h - j0 < CELL_BLOCK ? h - j0 : CELL_BLOCK;
                const T *ai = ar + j0, *af = ai + h, *ag = af + h, *ao = ag + h;
                const T *dai = dar + j0, *daf = dai + h, *dag = daf + h, *dao = dag + h;
                TANH_TO(tc, yr + h + j0, len);
                for (size_t j = 0; j < len; j++) {
                    T i = ai[j], f = af[j], g = ag[j], o = ao[j];
                    T di = dai[j] * i * (1 - i), df = daf[j] * f * (1 - f);
                    T dg = dag[j] * (1 - g * g), dout = dao[j] * o * (1 - o);
                    T dc = df * sr[h + j0 + j] + di * g + i * dg;
                    if (dsr)
                        dc += f * dsr[h + j0 + j];
                    dyr[h + j0 + j] = dc;
                    dyr[j0 + j] = dout * tc[j] + o * (1 - tc[j] * tc[j]) * dc;
                }
            }
        }
    });
}

static tg_status
lstm_jvp(tg_node *nd)
{
    if (nd->out->size == 0)
        return TG_OK;
    struct cell c = cell_of(nd, 4);
    if (!cell_jvp_setup(nd, &c, lstm_gates))
        return TG_ERR_NOMEM;
    cell_dpre(nd, &c, 2 * c.h);
    cell_rows(nd, &c, c.b, lstm_tangent_rows, 4 * c.h);
    return TG_OK;
}

/* For tg_grad, with ops: a = xw[rows] + b_ih + h·W_hhᵀ + b_hh and i, f, g, o, c' = f ⊙ c + i ⊙ g
 * recomputed; dc̃ = dc' + dh' ⊙ o ⊙ (1 − tanh² c'), da = [dc̃ ⊙ g ⊙ i(1−i) | dc̃ ⊙ c ⊙ f(1−f) |
 * dc̃ ⊙ i ⊙ (1−g²) | dh' ⊙ tanh c' ⊙ o(1−o)]; dstate = [da·W_hh | dc̃ ⊙ f], dW_hh = daᵀ·h,
 * dxw = da in the cell's rows, db_ih = db_hh = Σ_b da */
static tg_tensor *
lstm_vjp_graph(tg_node *nd, int k, tg_tensor *dy)
{
    if (nd->out->size == 0)
        return NULL;
    tg_tape *t = nd->tape;
    int64_t h = nd->in[2]->dims[1];
    tg_tensor *state = nd->in[1], *w_hh = nd->in[2];
    tg_tensor *one = tg__constant(t, nd->out->dtype, 1);
    tg_tensor *rows = graph_xw_rows(nd);
    tg_tensor *h_prev = graph_cols(t, state, 0, h), *c_prev = graph_cols(t, state, h, 2 * h);
    tg_tensor *a = tg_add(t, rows, tg_matmul_t(t, h_prev, false, w_hh, true));
    for (int q = 3; q < nd->n_in; q++) /* b_ih, b_hh, whichever are given */
        a = tg_add(t, a, nd->in[q]);
    tg_tensor *i = tg_sigmoid(t, graph_cols(t, a, 0, h));
    tg_tensor *f = tg_sigmoid(t, graph_cols(t, a, h, 2 * h));
    tg_tensor *g = tg_tanh(t, graph_cols(t, a, 2 * h, 3 * h));
    tg_tensor *o = tg_sigmoid(t, graph_cols(t, a, 3 * h, 4 * h));
    tg_tensor *tc = tg_tanh(t, tg_add(t, tg_mul(t, f, c_prev), tg_mul(t, i, g)));
    tg_tensor *dh = graph_cols(t, dy, 0, h), *dc = graph_cols(t, dy, h, 2 * h);
    tg_tensor *dc_total =
        tg_add(t, dc, tg_mul(t, tg_mul(t, dh, o), tg_sub(t, one, tg_square(t, tc))));
    tg_tensor *da_gates[4] = {
        tg_mul(t, tg_mul(t, dc_total, g), graph_sigmoid_slope(t, one, i)),
        tg_mul(t, tg_mul(t, dc_total, c_prev), graph_sigmoid_slope(t, one, f)),
        tg_mul(t, tg_mul(t, dc_total, i), tg_sub(t, one, tg_square(t, g))),
        tg_mul(t, tg_mul(t, dh, tc), graph_sigmoid_slope(t, one, o)),
    };
    tg_tensor *da = tg_concat(t, da_gates, 4, 1);
    if (k == 1) {
        tg_tensor *dstate[2] = {tg_matmul(t, da, w_hh), tg_mul(t, dc_total, f)};
        return tg_concat(t, dstate, 2, 1);
    }
    return graph_cell_input_grad(nd, k, rows, da, da, h_prev);
}

const tg_op tg__op_lstm_cell = {
    .name = "lstm_cell",
    .n_inputs = TG_VARIADIC, /* xw, state, w_hh, then b_ih and b_hh when given */
    .shape = cell_shape,
    .forward = lstm_forward,
    .vjp = lstm_vjp,
    .jvp = lstm_jvp,
    .vjp_graph = lstm_vjp_graph,
    .scratch_size = cell_scratch,
    .math = "a = xw + b_ih + h·W_hhᵀ + b_hh = [i f g o]; i, f, o = σ, g = tanh; c' = f ⊙ c + "
            "i ⊙ g, h' = o ⊙ tanh(c'); state [h | c] -> [h' | c']",
    .vjp_math = "dc̃ = dc' + dh' o (1 − tanh² c'); da = [dc̃ g i(1−i), dc̃ c f(1−f), dc̃ i "
                "(1−g²), dh' tanh(c') o(1−o)]; dc += dc̃ f, dh += da W_hh, dW_hh += daᵀ h, "
                "dxw += da, db_ih = db_hh += Σ da",
    .jvp_math = "ȧ = ẋw + ḃ_ih + ḃ_hh + ḣ W_hhᵀ + h Ẇ_hhᵀ; i̇ = i(1−i) ȧ_i, ḟ = f(1−f) ȧ_f, "
                "ġ = (1−g²) ȧ_g, ȯ = o(1−o) ȧ_o; ċ' = ḟ c + f ċ + i̇ g + i ġ, ḣ' = ȯ tanh(c') + "
                "o (1 − tanh² c') ċ'",
    .shapes = "xw (B,4H), state (B,2H), W_hh (4H,H), b_ih, b_hh (4H) -> (B,2H)",
};

tg_tensor *
tg__lstm_cell_rows(tg_tape *t, tg_tensor *xw, int64_t row0, int64_t rstep, bool exact_rows,
                   tg_tensor *state, tg_tensor *w_hh, tg_tensor *b_ih, tg_tensor *b_hh)
{
    if (!t)
        return NULL;
    if (t->status != TG_OK ||
        !cell_check(t, "lstm_cell", 4, 2, &xw, &state, &w_hh, &b_ih, &b_hh, row0, rstep,
                   exact_rows))
        return &t->nil;
    return cell_record(t, &tg__op_lstm_cell, xw, state, w_hh, b_ih, b_hh, row0, rstep);
}

tg_tensor *
tg_lstm_cell(tg_tape *t, tg_tensor *xw, tg_tensor *state, tg_tensor *w_hh, tg_tensor *b_ih,
             tg_tensor *b_hh)
{
    return tg__lstm_cell_rows(t, xw, 0, 1, true, state, w_hh, b_ih, b_hh);
}

/*
 * gru_cell:  h (B, H), xw (B, 3H) = x·W_ihᵀ = [x_r | x_z | x_n], W_hh (3H, H), b_ih, b_hh (3H)
 *   [s_r | s_z | s_n] = h·W_hhᵀ + b_hh
 *   r = σ(x_r + b_ir + s_r),  z = σ(x_z + b_iz + s_z),  n = tanh(x_n + b_in + r ⊙ s_n)
 *   h' = (1 − z) ⊙ n + z ⊙ h                                   (B, H)
 *
 *   VJP, from dh':
 *     dn̂ = dh' ⊙ (1 − z) ⊙ (1 − n²)               (at n's pre-activation)
 *     dr̂ = dn̂ ⊙ s_n ⊙ r(1 − r),  dẑ = dh' ⊙ (h − n) ⊙ z(1 − z)
 *     the input side: dI = [dr̂ | dẑ | dn̂],  the hidden side: dS = [dr̂ | dẑ | dn̂ ⊙ r]
 *     dh += dh' ⊙ z + dS·W_hh,  dW_hh += dSᵀ·h,  dxw += dI,  db_ih += Σ_b dI,  db_hh += Σ_b dS
 * The scratch holds [r | z | s_n | n] per row; the VJP turns it into [dr̂ | dẑ | dn̂ ⊙ r | dn̂],
 * so dS is its first 3H columns and dI is columns 0-2H and 3H-4H.
 *
 *   JVP, from ḣ, ẋw, Ẇ_hh, ḃ_ih, ḃ_hh:
 *     ṡ = ḃ_hh + ḣ·W_hhᵀ + h·Ẇ_hhᵀ
 *     ṙ = r(1 − r) (ẋ_r + ḃ_ir + ṡ_r),  ż = z(1 − z) (ẋ_z + ḃ_iz + ṡ_z)
 *     ṅ = (1 − n²) (ẋ_n + ḃ_in + ṙ ⊙ s_n + r ⊙ ṡ_n)
 *     ḣ' = ż ⊙ (h − n) + (1 − z) ⊙ ṅ + z ⊙ ḣ
 *   from the saved [r | z | s_n | n]; the pre-activation tangents are laid out as the VJP's
 *   gradients, [ṙ̂ | ż̂ | ṡ_n | ẋ_n + ḃ_in], and the gate math runs in double, as the VJP's.
 */
static void
gru_gate_rows(tg_node *nd, const struct cell *cp, size_t begin, size_t end)
{
    struct cell c = *cp;
    size_t h = c.h, ld = 4 * h, n3 = 3 * h;
    TG__DISPATCH(nd->out->dtype, T, {
        T *a = nd->scratch;
        const T *xw = c.xw->data, *bi = c.b_ih ? c.b_ih->data : NULL;
        const T *bh = c.b_hh ? c.b_hh->data : NULL;
        for (size_t b = begin; b < end; b++) {
            T *ar = a + b * ld; /* [s_r | s_z | s_n] = h·W_hhᵀ from the GEMM, then room for n */
            const T *xr = xw + (c.row0 + b * c.rstep) * n3;
            ADD_INTO(ar, xr, 2 * h);
            if (bi)
                ADD_INTO(ar, bi, 2 * h);
            if (bh)
                ADD_INTO(ar, bh, n3); /* b_hr, b_hz into r and z; b_hn into s_n */
            SIGMOID_ROWS(ar, 2 * h); /* r, z */
            T *n = ar + n3;
            for (size_t j = 0; j < h; j++) /* x_n + b_in + r ⊙ s_n */
                n[j] = xr[2 * h + j] + (bi ? bi[2 * h + j] : 0) + ar[j] * ar[2 * h + j];
            TANH_ROWS(n, h);
        }
    });
}

static void
gru_gates(tg_node *nd, const struct cell *c)
{
    cell_gemm(nd, *c, c->h);
    cell_rows(nd, c, c->b, gru_gate_rows, 4 * c->h);
    *gates_valid(nd) = true;
}

static void
gru_out_rows(tg_node *nd, const struct cell *cp, size_t begin, size_t end)
{
    size_t h = cp->h;
    TG__DISPATCH(nd->out->dtype, T, {
        const T *a = nd->scratch, *hp = cp->state->data;
        T *y = nd->out->data;
        for (size_t b = begin; b < end; b++) {
            const T *ar = a + b * 4 * h, *hr = hp + b * h;
            for (size_t j = 0; j < h; j++) {
                double z = ar[h + j], n = ar[3 * h + j];
                y[b * h + j] = (T)((1 - z) * n + z * hr[j]);
            }
        }
    });
}

static tg_status
gru_forward(tg_node *nd)
{
    if (nd->out->size == 0) /* (B, 0) or (0, ·): nothing to do, and B may be huge */
        return TG_OK;
    struct cell c = cell_of(nd, 3);
    gru_gates(nd, &c);
    cell_rows(nd, &c, c.b, gru_out_rows, 4 * c.h);
    return TG_OK;
}

static void
gru_dgate_rows(tg_node *nd, const struct cell *cp, size_t begin, size_t end)
{
    size_t h = cp->h;
    TG__DISPATCH(nd->out->dtype, T, {
        T *a = nd->scratch, *dhp = cp->state->grad;
        const T *hp = cp->state->data, *dy = nd->out->grad;
        for (size_t b = begin; b < end; b++) {
            T *ar = a + b * 4 * h;
            for (size_t j = 0; j < h; j++) {
                double r = ar[j], z = ar[h + j], sn = ar[2 * h + j], n = ar[3 * h + j];
                double d = dy[b * h + j], hv = hp[b * h + j];
                double dn = d * (1 - z) * (1 - n * n);
                ar[j] = (T)(dn * sn * r * (1 - r));
                ar[h + j] = (T)(d * (hv - n) * z * (1 - z));
                ar[2 * h + j] = (T)(dn * r);
                ar[3 * h + j] = (T)dn;
                if (dhp)
                    dhp[b * h + j] += (T)(d * z);
            }
        }
    });
}

static tg_status
gru_vjp(tg_node *nd)
{
    if (nd->out->size == 0)
        return TG_OK;
    struct cell c = cell_of(nd, 3);
    if (!c.xw->grad && !c.state->grad && !c.w_hh->grad && !(c.b_ih && c.b_ih->grad) &&
        !(c.b_hh && c.b_hh->grad))
        return TG_OK;
    if (!*gates_valid(nd))
        gru_gates(nd, &c);
    cell_rows(nd, &c, c.b, gru_dgate_rows, 4 * c.h);
    *gates_valid(nd) = false;
    cell_vjp_common(nd, &c, c.h);
    return TG_OK;
}

/* ḣ' for the batch rows [begin, end), from the pre-activation tangents */
static void
gru_tangent_rows(tg_node *nd, const struct cell *cp, size_t begin, size_t end)
{
    size_t h = cp->h;
    TG__DISPATCH(nd->out->dtype, T, {
        const T *a = cp->gates, *da = cp->dpre, *hp = cp->state->data, *dhp = cp->state->tangent;
        T *dy = nd->out->tangent;
        for (size_t b = begin; b < end; b++) {
            const T *ar = a + b * 4 * h, *dar = da + b * 4 * h;
            for (size_t j = 0; j < h; j++) {
                double r = ar[j], z = ar[h + j], sn = ar[2 * h + j], n = ar[3 * h + j];
                double dr = dar[j] * r * (1 - r), dz = dar[h + j] * z * (1 - z);
                double dn = (1 - n * n) * (dar[3 * h + j] + dr * sn + r * dar[2 * h + j]);
                double v = dz * (hp[b * h + j] - n) + (1 - z) * dn;
                if (dhp)
                    v += z * dhp[b * h + j];
                dy[b * h + j] = (T)v;
            }
        }
    });
}

static tg_status
gru_jvp(tg_node *nd)
{
    if (nd->out->size == 0)
        return TG_OK;
    struct cell c = cell_of(nd, 3);
    if (!cell_jvp_setup(nd, &c, gru_gates))
        return TG_ERR_NOMEM;
    cell_dpre(nd, &c, c.h);
    cell_rows(nd, &c, c.b, gru_tangent_rows, 4 * c.h);
    return TG_OK;
}

/* For tg_grad, with ops: [s_r | s_z | s_n] = h·W_hhᵀ + b_hh, [x_r | x_z | x_n] = xw[rows] + b_ih,
 * r, z, n recomputed; dn̂ = dh' ⊙ (1−z) ⊙ (1−n²), dr̂ = dn̂ ⊙ s_n ⊙ r(1−r),
 * dẑ = dh' ⊙ (h − n) ⊙ z(1−z); dI = [dr̂ | dẑ | dn̂], dS = [dr̂ | dẑ | dn̂ ⊙ r];
 * dh = dh' ⊙ z + dS·W_hh, dW_hh = dSᵀ·h, dxw = dI in the cell's rows, db_ih = Σ_b dI,
 * db_hh = Σ_b dS */
static tg_tensor *
gru_vjp_graph(tg_node *nd, int k, tg_tensor *dy)
{
    if (nd->out->size == 0)
        return NULL;
    tg_tape *t = nd->tape;
    int64_t h = nd->in[2]->dims[1];
    tg_tensor *h_prev = nd->in[1], *w_hh = nd->in[2];
    tg_tensor *b_ih = NULL, *b_hh = NULL;
    int q = 3;
    if (nd->attr->axes & 1)
        b_ih = nd->in[q++];
    if (nd->attr->axes & 2)
        b_hh = nd->in[q];
    tg_tensor *one = tg__constant(t, nd->out->dtype, 1);
    tg_tensor *rows = graph_xw_rows(nd);
    tg_tensor *x = b_ih ? tg_add(t, rows, b_ih) : rows;
    tg_tensor *s = tg_matmul_t(t, h_prev, false, w_hh, true);
    if (b_hh)
        s = tg_add(t, s, b_hh);
    tg_tensor *rz =
        tg_sigmoid(t, tg_add(t, graph_cols(t, x, 0, 2 * h), graph_cols(t, s, 0, 2 * h)));
    tg_tensor *r = graph_cols(t, rz, 0, h), *z = graph_cols(t, rz, h, 2 * h);
    tg_tensor *s_n = graph_cols(t, s, 2 * h, 3 * h);
    tg_tensor *n = tg_tanh(t, tg_add(t, graph_cols(t, x, 2 * h, 3 * h), tg_mul(t, r, s_n)));
    tg_tensor *dn = tg_mul(t, tg_mul(t, dy, tg_sub(t, one, z)), tg_sub(t, one, tg_square(t, n)));
    tg_tensor *dr = tg_mul(t, tg_mul(t, dn, s_n), graph_sigmoid_slope(t, one, r));
    tg_tensor *dz =
        tg_mul(t, tg_mul(t, dy, tg_sub(t, h_prev, n)), graph_sigmoid_slope(t, one, z));
    tg_tensor *d_in = NULL, *d_hid = NULL;
    if (k == 0 || (k == 3 && b_ih))
        d_in = tg_concat(t, (tg_tensor *const[]){dr, dz, dn}, 3, 1);
    else
        d_hid = tg_concat(t, (tg_tensor *const[]){dr, dz, tg_mul(t, dn, r)}, 3, 1);
    if (k == 1)
        return tg_add(t, tg_mul(t, dy, z), tg_matmul(t, d_hid, w_hh));
    return graph_cell_input_grad(nd, k, rows, d_in, d_hid, h_prev);
}

const tg_op tg__op_gru_cell = {
    .name = "gru_cell",
    .n_inputs = TG_VARIADIC, /* xw, h, w_hh, then b_ih and b_hh when given */
    .shape = cell_shape,
    .forward = gru_forward,
    .vjp = gru_vjp,
    .jvp = gru_jvp,
    .vjp_graph = gru_vjp_graph,
    .scratch_size = cell_scratch,
    .math = "[s_r s_z s_n] = h·W_hhᵀ + b_hh; r = σ(x_r + b_ir + s_r), z = σ(x_z + b_iz + s_z), "
            "n = tanh(x_n + b_in + r ⊙ s_n); h' = (1 − z) ⊙ n + z ⊙ h",
    .vjp_math = "dn̂ = dh' (1−z)(1−n²), dr̂ = dn̂ s_n r(1−r), dẑ = dh' (h−n) z(1−z); dI = [dr̂ "
                "dẑ dn̂], dS = [dr̂ dẑ dn̂ r]: dh += dh' z + dS W_hh, dW_hh += dSᵀ h, dxw += dI, "
                "db_ih += Σ dI, db_hh += Σ dS",
    .jvp_math = "ṡ = ḃ_hh + ḣ W_hhᵀ + h Ẇ_hhᵀ; ṙ = r(1−r)(ẋ_r + ḃ_ir + ṡ_r), ż = z(1−z)(ẋ_z + "
                "ḃ_iz + ṡ_z), ṅ = (1−n²)(ẋ_n + ḃ_in + ṙ s_n + r ṡ_n); ḣ' = ż (h − n) + (1 − z) "
                "ṅ + z ḣ",
    .shapes = "xw (B,3H), h (B,H), W_hh (3H,H), b_ih, b_hh (3H) -> (B,H)",
};

tg_tensor *
tg__gru_cell_rows(tg_tape *t, tg_tensor *xw, int64_t row0, int64_t rstep, bool exact_rows,
                  tg_tensor *h, tg_tensor *w_hh, tg_tensor *b_ih, tg_tensor *b_hh)
{
    if (!t)
        return NULL;
    if (t->status != TG_OK ||
        !cell_check(t, "gru_cell", 3, 1, &xw, &h, &w_hh, &b_ih, &b_hh, row0, rstep,
                   exact_rows))
        return &t->nil;
    return cell_record(t, &tg__op_gru_cell, xw, h, w_hh, b_ih, b_hh, row0, rstep);
}

tg_tensor *
tg_gru_cell(tg_tape *t, tg_tensor *xw, tg_tensor *h, tg_tensor *w_hh, tg_tensor *b_ih,
            tg_tensor *b_hh)
{
    return tg__gru_cell_rows(t, xw, 0, 1, true, h, w_hh, b_ih, b_hh);
}
