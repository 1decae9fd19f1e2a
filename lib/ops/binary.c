/*
 * Elementwise ops of two or three inputs with numpy broadcasting at every rank: div, maximum,
 * minimum, and where(mask, a, b). (add, sub and mul, whose fast paths are tuned for the bias
 * shapes of dense layers, are in elementwise.c.)
 *
 * Broadcasting: shapes are aligned from the last dimension; in each position the sizes are
 * equal or one of them is 1, and a size-1 operand is repeated. The VJP of a repeated operand
 * sums the gradients of the outputs it reached: dx[i] = Σ_{o reading x[i]} dy[o] ∂y[o]/∂x[i].
 *
 * Two paths. Operands of the output's shape (no broadcasting) run as flat loops in fixed
 * chunks of TG__GRAIN elements (tg__parallel_for): elementwise, so the same for any thread
 * count. Any broadcast takes one strided loop over the output in row-major order (single
 * threaded), in which a broadcast operand's gradient accumulates in that fixed order.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../kernels/kernels.h"
#include "loops.h"
#include "ops.h"
#include "vmath.h"

/* The output's dims padded to 4 (leading 1s) and each operand's element strides along them,
 * 0 where the operand is broadcast. */
struct nbcast {
    size_t n[4];
    size_t s[3][4];
};

static struct nbcast
nbcast_of(const tg_node *nd)
{
    struct nbcast bc = {{0}, {{0}}}; /* strides of absent operands stay 0 */
    const tg_tensor *out = nd->out;
    for (int i = 0; i < 4; i++) {
        int io = out->ndim - 4 + i;
        bc.n[i] = io >= 0 ? (size_t)out->dims[io] : 1;
    }
    for (int k = 0; k < nd->n_in; k++) {
        const tg_tensor *x = nd->in[k];
        size_t stride = 1;
        for (int i = 3; i >= 0; i--) {
            int ix = x->ndim - 4 + i;
            size_t dx = ix >= 0 ? (size_t)x->dims[ix] : 1;
            bc.s[k][i] = dx == 1 && bc.n[i] != 1 ? 0 : stride;
            stride *= dx;
        }
    }
    return bc;
}

/* Runs the body for every output element o with operand offsets i0, i1, i2 (row-major). */
#define NBCAST_FOR(bc, ...)                                                                        \
    do {                                                                                           \
        if (!((bc).n[0] && (bc).n[1] && (bc).n[2] && (bc).n[3]))                                   \
            break; /* no elements: do not spin through the other dims (2^40 x 0) */                \
        size_t o = 0;                                                                              \
        for (size_t a0 = 0; a0 < (bc).n[0]; a0++)                                                  \
            for (size_t a1 = 0; a1 < (bc).n[1]; a1++)                                              \
                for (size_t a2 = 0; a2 < (bc).n[2]; a2++)                                          \
                    for (size_t a3 = 0; a3 < (bc).n[3]; a3++, o++) {                               \
                        size_t i0 = a0 * (bc).s[0][0] + a1 * (bc).s[0][1] +                        \
                                    a2 * (bc).s[0][2] + a3 * (bc).s[0][3];                         \
                        size_t i1 = a0 * (bc).s[1][0] + a1 * (bc).s[1][1] +                        \
                                    a2 * (bc).s[1][2] + a3 * (bc).s[1][3];                         \
                        size_t i2 = a0 * (bc).s[2][0] + a1 * (bc).s[2][1] +                        \
                                    a2 * (bc).s[2][2] + a3 * (bc).s[2][3];                         \
                        (void)i2;                                                                  \
                        __VA_ARGS__;                                                               \
                    }                                                                              \
    } while (0)

static bool
all_full(const tg_node *nd)
{
    for (int k = 0; k < nd->n_in; k++)
        if (nd->in[k]->size != nd->out->size)
            return false;
    return true;
}

/* The broadcast shape of every input, or an error naming the op, the inputs and their shapes. */
static tg_status
nbroadcast_shape(tg_node *nd, int *ndim, int64_t *dims)
{
    int nd_out = 0;
    for (int k = 0; k < nd->n_in; k++)
        nd_out = nd->in[k]->ndim > nd_out ? nd->in[k]->ndim : nd_out;
    for (int i = 0; i < nd_out; i++) {
        int64_t d = 1;
        for (int k = 0; k < nd->n_in; k++) {
            const tg_tensor *x = nd->in[k];
            int ix = x->ndim - nd_out + i;
            int64_t dx = ix >= 0 ? x->dims[ix] : 1;
            if (dx != 1 && d != 1 && dx != d) {
                char shapes[3 * (TG__NAME_MAX + 64)] = "";
                size_t used = 0;
                for (int j = 0; j < nd->n_in && used < sizeof shapes; j++)
                    used += (size_t)snprintf(shapes + used, sizeof shapes - used, "%s%s %s",
                                             j ? ", " : "", tg__name_text(nd->in[j]).s,
                                             tg__shape_text(nd->in[j]).s);
                tg__fail(nd->tape, TG_ERR_SHAPE,
                         "%s: shapes cannot be broadcast: %s (each dimension, aligned from the "
                         "last, must match or be 1; axis %d has %lld and %lld)",
                         nd->op->name, shapes, i - nd_out, (long long)d, (long long)dx);
                return TG_ERR_SHAPE;
            }
            d = dx != 1 ? dx : d;
        }
        dims[i] = d;
    }
    *ndim = nd_out;
    return TG_OK;
}

static tg_tensor *
record_n(tg_tape *t, const tg_op *op, tg_tensor **in, int n)
{
    return t ? tg__record(t, op, in, n, NULL, NULL) : NULL;
}

/*
 * A two-input op from five element expressions of a = a[i], b = b[i] (and y, g = dy, and the
 * tangents adot = ȧ[i], bdot = ḃ[i]):
 *   OUT         the forward
 *   DA, DB      ∂y/∂a · g and ∂y/∂b · g, added into the operands' gradients
 *   JA, JB      ∂y/∂a · ȧ and ∂y/∂b · ḃ, the two terms of the tangent ẏ (an operand without a
 *               tangent contributes no term)
 *   GRAPH       the VJP written with ops, for tg_grad (tg_op.vjp_graph)
 * BINARY_OP(name, OUT, DA, DB, JA, JB, GRAPH, MATH, VJP, JVP) writes the flat kernels (vectorized,
 * threaded), the strided broadcast loop, the forward/VJP/JVP and the tg_op.
 */
struct bin_job {
    const tg_node *nd;
    int k; /* VJP: which operand */
};

#define BINARY_OP(op, OUT, DA, DB, JA, JB, GRAPH, MATH, VJP, JVP)                                  \
    BINARY_FLAT(op, OUT, DA, DB, JA, JB, float, f32)                                               \
    BINARY_FLAT(op, OUT, DA, DB, JA, JB, double, f64)                                              \
    static void op##_fwd_chunk(size_t e0, size_t e1, void *vctx)                                   \
    {                                                                                              \
        const struct bin_job *j = vctx;                                                            \
        const tg_node *nd = j->nd;                                                                 \
        if (nd->out->dtype == TG_F32)                                                              \
            op##_fwd_f32((const float *)nd->in[0]->data + e0,                                      \
                         (const float *)nd->in[1]->data + e0, (float *)nd->out->data + e0,         \
                         e1 - e0);                                                                 \
        else                                                                                       \
            op##_fwd_f64((const double *)nd->in[0]->data + e0,                                     \
                         (const double *)nd->in[1]->data + e0, (double *)nd->out->data + e0,       \
                         e1 - e0);                                                                 \
    }                                                                                              \
    static void op##_vjp_chunk(size_t e0, size_t e1, void *vctx)                                   \
    {                                                                                              \
        const struct bin_job *j = vctx;                                                            \
        const tg_node *nd = j->nd;                                                                 \
        if (nd->out->dtype == TG_F32)                                                              \
            op##_vjp_f32(j->k, (const float *)nd->in[0]->data + e0,                                \
                         (const float *)nd->in[1]->data + e0, (const float *)nd->out->data + e0,   \
                         (const float *)nd->out->grad + e0, (float *)nd->in[j->k]->grad + e0,      \
                         e1 - e0);                                                                 \
        else                                                                                       \
            op##_vjp_f64(j->k, (const double *)nd->in[0]->data + e0,                               \
                         (const double *)nd->in[1]->data + e0,                                     \
                         (const double *)nd->out->data + e0, (const double *)nd->out->grad + e0,   \
                         (double *)nd->in[j->k]->grad + e0, e1 - e0);                              \
    }                                                                                              \
    static void op##_jvp_chunk(size_t e0, size_t e1, void *vctx)                                   \
    {                                                                                              \
        const struct bin_job *j = vctx;                                                            \
        const tg_node *nd = j->nd;                                                                 \
        const void *ad = nd->in[0]->tangent, *bd = nd->in[1]->tangent;                             \
        if (nd->out->dtype == TG_F32)                                                              \
            op##_jvp_f32((const float *)nd->in[0]->data + e0,                                      \
                         (const float *)nd->in[1]->data + e0, (const float *)nd->out->data + e0,   \
                         ad ? (const float *)ad + e0 : NULL, bd ? (const float *)bd + e0 : NULL,   \
                         (float *)nd->out->tangent + e0, e1 - e0);                                 \
        else                                                                                       \
            op##_jvp_f64((const double *)nd->in[0]->data + e0,                                     \
                         (const double *)nd->in[1]->data + e0,                                     \
                         (const double *)nd->out->data + e0,                                       \
                         ad ? (const double *)ad + e0 : NULL,                                      \
                         bd ? (const double *)bd + e0 : NULL,                                      \
                         (double *)nd->out->tangent + e0, e1 - e0);                                \
    }                                                                                              \
    static tg_status op##_forward(tg_node *nd)                                                     \
    {                                                                                              \
        struct bin_job j = {nd, 0};                                                                \
        if (all_full(nd)) {                                                                        \
            tg__parallel_for(nd->out->size, TG__GRAIN, op##_fwd_chunk, &j);                        \
            return TG_OK;                                                                          \
        }                                                                                          \
        struct nbcast bc = nbcast_of(nd);                                                          \
        TG__DISPATCH(nd->out->dtype, T, {                                                          \
            const T *av = nd->in[0]->data, *bv = nd->in[1]->data;                                  \
            T *yv = nd->out->data;                                                                 \
            NBCAST_FOR(bc, {                                                                       \
                const T a = av[i0], b = bv[i1];                                                    \
                yv[o] = (OUT);                                                                     \
            });                                                                                    \
        });                                                                                        \
        return TG_OK;                                                                              \
    }                                                                                              \
    static tg_status op##_vjp(tg_node *nd)                                                         \
    {                                                                                              \
        bool full = all_full(nd);                                                                  \
        struct nbcast bc = nbcast_of(nd);                                                          \
        for (int k = 0; k < 2; k++) {                                                              \
            if (!nd->in[k]->grad)                                                                  \
                continue;                                                                          \
            struct bin_job j = {nd, k};                                                            \
            if (full) {                                                                            \
                tg__parallel_for(nd->out->size, TG__GRAIN, op##_vjp_chunk, &j);                    \
                continue;                                                                          \
            }                                                                                      \
            TG__DISPATCH(nd->out->dtype, T, {                                                      \
                const T *av = nd->in[0]->data, *bv = nd->in[1]->data;                              \
                const T *yv = nd->out->data, *gv = nd->out->grad;                                  \
                T *d = nd->in[k]->grad;                                                            \
                NBCAST_FOR(bc, {                                                                   \
                    const T a = av[i0], b = bv[i1], y = yv[o], g = gv[o];                          \
                    (void)a, (void)b, (void)y;                                                     \
                    d[k ? i1 : i0] += k ? (DB) : (DA);                                             \
                });                                                                                \
            });                                                                                    \
        }                                                                                          \
        return TG_OK;                                                                              \
    }                                                                                              \
    /* ẏ = JA + JB: the flat chunks or the row-major strided loop, as the forward */               \
    static tg_status op##_jvp(tg_node *nd)                                                         \
    {                                                                                              \
        if (all_full(nd)) {                                                                        \
            struct bin_job j = {nd, 0};                                                            \
            tg__parallel_for(nd->out->size, TG__GRAIN, op##_jvp_chunk, &j);                        \
            return TG_OK;                                                                          \
        }                                                                                          \
        struct nbcast bc = nbcast_of(nd);                                                          \
        TG__DISPATCH(nd->out->dtype, T, {                                                          \
            const T *av = nd->in[0]->data, *bv = nd->in[1]->data, *yv = nd->out->data;             \
            const T *adv = nd->in[0]->tangent, *bdv = nd->in[1]->tangent;                          \
            T *ydv = nd->out->tangent;                                                             \
            NBCAST_FOR(bc, {                                                                       \
                const T a = av[i0], b = bv[i1], y = yv[o];                                         \
                (void)a, (void)b, (void)y;                                                         \
                T s = 0;                                                                           \
                if (adv) {                                                                         \
                    const T adot = adv[i0];                                                        \
                    s += (JA);                                                                     \
                }                                                                                  \
                if (bdv) {                                                                         \
                    const T bdot = bdv[i1];                                                        \
                    s += (JB);                                                                     \
                }                                                                                  \
                ydv[o] = s;                                                                        \
            });                                                                                    \
        });                                                                                        \
        return TG_OK;                                                                              \
    }                                                                                              \
    const tg_op tg__op_##op = {                                                                    \
        .name = #op,                                                                               \
        .n_inputs = 2,                                                                             \
        .shape = nbroadcast_shape,                                                                 \
        .forward = op##_forward,                                                                   \
        .vjp = op##_vjp,                                                                           \
        .jvp = op##_jvp,                                                                           \
        .vjp_graph = GRAPH,                                                                        \
        .math = MATH,                                                                              \
        .vjp_math = VJP,                                                                           \
        .jvp_math = JVP,                                                                           \
        .shapes = "a, b broadcast (numpy rules, any rank) → y the broadcast shape",                \
    };                                                                                             \
    tg_tensor *tg_##op(tg_tape *t, tg_tensor *a, tg_tensor *b)                                     \
    {                                                                                              \
        tg_tensor *in[2] = {a, b};                                                                 \
        return record_n(t, &tg__op_##op, in, 2);                                                   \
    }

#define BINARY_FLAT(op, OUT, DA, DB, JA, JB, T, SFX)                                               \
    TG__VEC_CLONES static void op##_fwd_##SFX(const T *restrict av, const T *restrict bv,          \
                                              T *restrict yv, size_t n)                            \
    {                                                                                              \
        for (size_t i = 0; i < n; i++) {                                                           \
            const T a = av[i], b = bv[i];                                                          \
            yv[i] = (OUT);                                                                         \
        }                                                                                          \
    }                                                                                              \
    TG__VEC_CLONES static void op##_vjp_##SFX(int k, const T *restrict av, const T *restrict bv,   \
                                              const T *restrict yv, const T *restrict gv,          \
                                              T *restrict d, size_t n)                             \
    {                                                                                              \
        if (k == 0)                                                                                \
            for (size_t i = 0; i < n; i++) {                                                       \
                const T a = av[i], b = bv[i], y = yv[i], g = gv[i];                                \
                (void)a, (void)b, (void)y;                                                         \
                d[i] += (DA);                                                                      \
            }                                                                                      \
        else                                                                                       \
            for (size_t i = 0; i < n; i++) {                                                       \
                const T a = av[i], b = bv[i], y = yv[i], g = gv[i];                                \
                (void)a, (void)b, (void)y;                                                         \
                d[i] += (DB);                                                                      \
            }                                                                                      \
    }                                                                                              \
    /* yd = JA + JB, or the one term whose tangent is given (not both NULL) */                     \
    TG__VEC_CLONES static void op##_jvp_##SFX(const T *restrict av, const T *restrict bv,          \
                                              const T *restrict yv, const T *restrict adv,         \
                                              const T *restrict bdv, T *restrict yd, size_t n)     \
    {                                                                                              \
        if (adv && bdv)                                                                            \
            for (size_t i = 0; i < n; i++) {                                                       \
                const T a = av[i], b = bv[i], y = yv[i], adot = adv[i], bdot = bdv[i];             \
                (void)a, (void)b, (void)y;                                                         \
                yd[i] = (JA) + (JB);                                                               \
            }                                                                                      \
        else if (adv)                                                                              \
            for (size_t i = 0; i < n; i++) {                                                       \
                const T a = av[i], b = bv[i], y = yv[i], adot = adv[i];                            \
                (void)a, (void)b, (void)y;                                                         \
                yd[i] = (JA);                                                                      \
            }                                                                                      \
        else                                                                                       \
            for (size_t i = 0; i < n; i++) {                                                       \
                const T a = av[i], b = bv[i], y = yv[i], bdot = bdv[i];                            \
                (void)a, (void)b, (void)y;                                                         \
                yd[i] = (JB);                                                                      \
            }                                                                                      \
    }

/* For tg_grad: da = Σ_broadcast dy / b, db = -Σ_broadcast dy ⊙ y / b with ops (piecewise
 * linear maximum and minimum use the generic node) */
static tg_tensor *
div_vjp_graph(tg_node *nd, int k, tg_tensor *dy)
{
    tg_tape *t = nd->tape;
    tg_tensor *b = nd->in[1];
    tg_tensor *g = k == 0 ? tg_div(t, dy, b) : tg_neg(t, tg_mul(t, dy, tg_div(t, nd->out, b)));
    return tg__sum_to(t, g, nd->in[k]);
}

/*
 * div:  y = a / b
 *   ∂y/∂a = 1/b,  ∂y/∂b = -a/b² = -y/b
 *   VJP: da += Σ_broadcast dy / b,  db -= Σ_broadcast dy ⊙ y / b
 *   JVP: ẏ = ȧ / b - ḃ ⊙ y / b   (each operand repeated as in the forward)
 *   b = 0 gives ±inf or NaN (IEEE, as PyTorch).
 */
BINARY_OP(div, a / b, g / b, -g * y / b, adot / b, -bdot * y / b, div_vjp_graph, "y = a / b",
          "da += dy / b;  db -= dy ⊙ y / b", "ẏ = ȧ / b - ḃ ⊙ y / b")

/*
 * maximum:  y = max(a, b)
 *   ∂y/∂a = [a > b] + ½[a = b],  ∂y/∂b = [b > a] + ½[a = b]
 *   At a tie the two operands share the gradient evenly (PyTorch's rule: a subgradient that
 *   is symmetric in a and b). NaN in either operand gives NaN (a NaN compares false: written
 *   so the NaN operand is selected).
 *   VJP: da += Σ_broadcast dy ⊙ ∂y/∂a,  db likewise
 *   JVP: ẏ = ∂y/∂a ⊙ ȧ + ∂y/∂b ⊙ ḃ: the larger operand's tangent, ½(ȧ + ḃ) at a tie (the
 *   directional derivative of the even split, and what central differences see at a tie),
 *   0 where an operand is NaN (as the VJP)
 */
#define MAX_OUT(a, b) ((a) > (b) || (a) != (a) ? (a) : (b))
#define TIE_SHARE(x, other, g) ((x) > (other) ? (g) : (x) == (other) ? (g) / 2 : 0)
BINARY_OP(maximum, MAX_OUT(a, b), TIE_SHARE(a, b, g), TIE_SHARE(b, a, g), TIE_SHARE(a, b, adot),
          TIE_SHARE(b, a, bdot), tg__vjp_graph_linear, "y = max(a, b)", "da += dy ⊙ ([a > b] + ½[a = b]);  db likewise",
          "ẏ = ([a > b] + ½[a = b]) ⊙ ȧ + ([b > a] + ½[a = b]) ⊙ ḃ")

/*
 * minimum:  y = min(a, b)
 *   ∂y/∂a = [a < b] + ½[a = b],  ∂y/∂b = [b < a] + ½[a = b]   (ties split evenly, as maximum)
 *   JVP: ẏ = ∂y/∂a ⊙ ȧ + ∂y/∂b ⊙ ḃ   (½(ȧ + ḃ) at a tie, as maximum)
 */
#define MIN_OUT(a, b) ((a) < (b) || (a) != (a) ? (a) : (b))
#define TIE_SHARE_MIN(x, other, g) ((x) < (other) ? (g) : (x) == (other) ? (g) / 2 : 0)
BINARY_OP(minimum, MIN_OUT(a, b), TIE_SHARE_MIN(a, b, g), TIE_SHARE_MIN(b, a, g),
          TIE_SHARE_MIN(a, b, adot), TIE_SHARE_MIN(b, a, bdot), tg__vjp_graph_linear, "y = min(a, b)",
          "da += dy ⊙ ([a < b] + ½[a = b]);  db likewise",
          "ẏ = ([a < b] + ½[a = b]) ⊙ ȧ + ([b < a] + ½[a = b]) ⊙ ḃ")

/*
 * where:  y = m ≠ 0 ? a : b       (m a constant mask of the inputs' dtype; all three broadcast)
 *   ∂y/∂a = [m ≠ 0],  ∂y/∂b = [m = 0];  m gets no gradient (y is piecewise constant in m)
 *   VJP: da += Σ_broadcast dy ⊙ [m ≠ 0],  db += Σ_broadcast dy ⊙ [m = 0]
 *   JVP: ẏ = m ≠ 0 ? ȧ : ḃ   (a tangent given for m is ignored; a missing ȧ or ḃ reads 0)
 */
static void
where_fwd_chunk(size_t e0, size_t e1, void *vctx)
{
    const tg_node *nd = vctx;
    TG__DISPATCH(nd->out->dtype, T, {
        const T *m = nd->in[0]->data, *a = nd->in[1]->data, *b = nd->in[2]->data;
        T *y = nd->out->data;
        for (size_t i = e0; i < e1; i++)
            y[i] = m[i] != 0 ? a[i] : b[i];
    });
}

static void
where_vjp_chunk(size_t e0, size_t e1, void *vctx)
{
    const tg_node *nd = vctx;
    TG__DISPATCH(nd->out->dtype, T, {
        const T *m = nd->in[0]->data, *g = nd->out->grad;
        T *da = nd->in[1]->grad, *db = nd->in[2]->grad;
        for (size_t i = e0; da && i < e1; i++)
            da[i] += m[i] != 0 ? g[i] : 0;
        for (size_t i = e0; db && i < e1; i++)
            db[i] += m[i] != 0 ? 0 : g[i];
    });
}

static void
where_jvp_chunk(size_t e0, size_t e1, void *vctx)
{
    const tg_node *nd = vctx;
    TG__DISPATCH(nd->out->dtype, T, {
        const T *m = nd->in[0]->data, *ad = nd->in[1]->tangent, *bd = nd->in[2]->tangent;
        T *yd = nd->out->tangent;
        for (size_t i = e0; i < e1; i++)
            yd[i] = m[i] != 0 ? (ad ? ad[i] : 0) : (bd ? bd[i] : 0);
    });
}

static tg_status
where_forward(tg_node *nd)
{
    if (all_full(nd)) {
        tg__parallel_for(nd->out->size, TG__GRAIN, where_fwd_chunk, nd);
        return TG_OK;
    }
    struct nbcast bc = nbcast_of(nd);
    TG__DISPATCH(nd->out->dtype, T, {
        const T *m = nd->in[0]->data, *a = nd->in[1]->data, *b = nd->in[2]->data;
        T *y = nd->out->data;
        NBCAST_FOR(bc, y[o] = m[i0] != 0 ? a[i1] : b[i2]);
    });
    return TG_OK;
}

static tg_status
where_vjp(tg_node *nd)
{
    if (all_full(nd)) {
        tg__parallel_for(nd->out->size, TG__GRAIN, where_vjp_chunk, nd);
        return TG_OK;
    }
    struct nbcast bc = nbcast_of(nd);
    TG__DISPATCH(nd->out->dtype, T, {
        const T *m = nd->in[0]->data, *g = nd->out->grad;
        T *da = nd->in[1]->grad, *db = nd->in[2]->grad;
        NBCAST_FOR(bc, {
            if (m[i0] != 0) {
                if (da)
                    da[i1] += g[o];
            } else if (db) {
                db[i2] += g[o];
            }
        });
    });
    return TG_OK;
}

static tg_status
where_jvp(tg_node *nd)
{
    if (all_full(nd)) {
        tg__parallel_for(nd->out->size, TG__GRAIN, where_jvp_chunk, nd);
        return TG_OK;
    }
    struct nbcast bc = nbcast_of(nd);
    TG__DISPATCH(nd->out->dtype, T, {
        const T *m = nd->in[0]->data, *ad = nd->in[1]->tangent, *bd = nd->in[2]->tangent;
        T *yd = nd->out->tangent;
        NBCAST_FOR(bc, yd[o] = m[i0] != 0 ? (ad ? ad[i1] : 0) : (bd ? bd[i2] : 0));
    });
    return TG_OK;
}

const tg_op tg__op_where = {
    .name = "where",
    .n_inputs = 3,
    .shape = nbroadcast_shape,
    .forward = where_forward,
    .vjp = where_vjp,
    .vjp_graph = tg__vjp_graph_linear,
    .jvp = where_jvp,
    .jvp_math = "ẏ = m ≠ 0 ? ȧ : ḃ;  m none",
    .math = "y = m ≠ 0 ? a : b (m a constant mask)",
    .vjp_math = "da += dy ⊙ [m ≠ 0];  db += dy ⊙ [m = 0];  m none",
    .shapes = "m, a, b broadcast (numpy rules, any rank) → y the broadcast shape",
};

tg_tensor *
tg_where(tg_tape *t, tg_tensor *mask, tg_tensor *a, tg_tensor *b)
{
    tg_tensor *in[3] = {mask, a, b};
    return record_n(t, &tg__op_where, in, 3);
}
