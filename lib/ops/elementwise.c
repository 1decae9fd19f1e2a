/*
 * Elementwise binary ops with broadcasting (add, sub, mul) and scale.
 *
 * Broadcasting (numpy rules): shapes are aligned from the last dimension; in each position the
 * sizes are equal or one of them is 1, and a size-1 operand is repeated. This is the bias in
 * Z = W·A + b, where b (n x 1) repeats over the m columns of W·A (n x m), and in Z = X·Wᵀ + b,
 * where b (1 x n) repeats over the rows.
 *
 * VJP of a broadcast operand: an element repeated over k outputs receives the sum of their k
 * gradients, ∂J/∂b_i = Σ_j ∂J/∂Z_ij — the note's step 4, db = Σ over the m columns of dZ.
 *
 * Speed. The common shapes take fast paths: the output is seen as (rows x cols) and each
 * operand is either the whole output (FULL), a row repeated over the rows (ROW: (1 x n) or (n)
 * over (m x n), any B…BF…F pattern of broadcast and full dimensions), or a column repeated over
 * the columns (COL: (n x 1) over (n x m), F…FB…B; a scalar is a column with rows = 1). Same
 * shapes, FULL·ROW and FULL·COL run as flat loops over rows that the compiler vectorizes
 * (compiled for AVX-512, AVX2 and baseline x86-64, TG__VEC_CLONES); anything else (an outer
 * product (n x 1)·(1 x m), a middle dimension broadcast in 3-D/4-D) takes the generic strided
 * loop BCAST_FOR.
 *
 * Threads. A fast path splits the output into fixed chunks of TG__GRAIN elements
 * (tg__parallel_for; outputs of at most TG__GRAIN elements run inline). Forward values and the
 * FULL operand's gradient are elementwise, so they do not depend on the thread count. The
 * broadcast operand's gradient is a sum over the repeated axis: each chunk writes its own
 * partial sums into the node's scratch (ROW: one row of column sums per chunk; COL: one sum
 * per row segment the chunk holds, each row segment summed in the fixed lane tree of loops.h),
 * and the partials are added into the gradient in chunk order afterwards. The summation order
 * depends only on the shape, so the gradient is bit-identical for any thread count.
 */
#include <string.h>
#include <tgmath.h>

#include "../kernels/kernels.h"
#include "loops.h"
#include "ops.h"

bool
tg__broadcast_shape(const tg_tensor *a, const tg_tensor *b, int *ndim, int64_t *dims)
{
    int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
    for (int i = 0; i < nd; i++) {
        int ia = a->ndim - nd + i, ib = b->ndim - nd + i;
        int64_t da = ia >= 0 ? a->dims[ia] : 1, db = ib >= 0 ? b->dims[ib] : 1;
        if (da != db && da != 1 && db != 1)
            return false;
        dims[i] = da == 1 ? db : da;
    }
    *ndim = nd;
    return true;
}

tg_status
tg__shape_same(tg_node *n, int *ndim, int64_t *dims)
{
    *ndim = n->in[0]->ndim;
    memcpy(dims, n->in[0]->dims, sizeof n->in[0]->dims);
    return TG_OK;
}

/* ---- the generic path: any broadcast, one strided loop ---- */

/* Output dims padded to 4 (leading 1s) and each operand's element strides along them, 0 where
 * the operand is broadcast. */
struct bcast {
    size_t n[4];
    size_t sa[4], sb[4];
};

static void
strides_for(const tg_tensor *x, const tg_tensor *out, size_t *s)
{
    size_t stride = 1;
    for (int i = 3; i >= 0; i--) {
        int ix = x->ndim - 4 + i, io = out->ndim - 4 + i;
        int64_t dx = ix >= 0 ? x->dims[ix] : 1, dout = io >= 0 ? out->dims[io] : 1;
        s[i] = (dx == 1 && dout != 1) ? 0 : stride;
        stride *= (size_t)dx;
    }
}

static struct bcast
bcast_of(const tg_node *nd)
{
    const tg_tensor *a = nd->in[0], *b = nd->in[1], *out = nd->out;
    struct bcast bc;
    for (int i = 0; i < 4; i++) {
        int io = out->ndim - 4 + i;
        bc.n[i] = io >= 0 ? (size_t)out->dims[io] : 1;
    }
    strides_for(a, out, bc.sa);
    strides_for(b, out, bc.sb);
    return bc;
}

/* Runs the body (the variadic argument) for every output element o with operand offsets ia, ib. */
#define BCAST_FOR(bc, ...)                                                                         \
    do {                                                                                           \
        size_t o = 0;                                                                              \
        for (size_t i0 = 0; i0 < (bc).n[0]; i0++)                                                  \
            for (size_t i1 = 0; i1 < (bc).n[1]; i1++)                                              \
                for (size_t i2 = 0; i2 < (bc).n[2]; i2++) {                                        \
                    size_t ra = i0 * (bc).sa[0] + i1 * (bc).sa[1] + i2 * (bc).sa[2];               \
                    size_t rb = i0 * (bc).sb[0] + i1 * (bc).sb[1] + i2 * (bc).sb[2];               \
                    for (size_t i3 = 0; i3 < (bc).n[3]; i3++, o++) {                               \
                        size_t ia = ra + i3 * (bc).sa[3], ib = rb + i3 * (bc).sb[3];               \
                        __VA_ARGS__;                                                               \
                    }                                                                              \
                }                                                                                  \
    } while (0)

/* OUT is the forward expression of a = a[ia], b = b[ib]; DA and DB are ∂out/∂a and ∂out/∂b,
 * multiplied by the output gradient g and added into the operands' gradients. */
#define GENERIC_FORWARD(nd, OUT)                                                                   \
    do {                                                                                           \
        struct bcast bc = bcast_of(nd);                                                            \
        TG__DISPATCH((nd)->out->dtype, T, {                                                        \
            const T *av = (nd)->in[0]->data, *bv = (nd)->in[1]->data;                              \
            T *yv = (nd)->out->data;                                                               \
            BCAST_FOR(bc, {                                                                        \
                const T a = av[ia], b = bv[ib];                                                    \
                (void)a, (void)b;                                                                  \
                yv[o] = (OUT);                                                                     \
            });                                                                                    \
        });                                                                                        \
    } while (0)

#define GENERIC_VJP(nd, DA, DB)                                                                    \
    do {                                                                                           \
        struct bcast bc = bcast_of(nd);                                                            \
        TG__DISPATCH((nd)->out->dtype, T, {                                                        \
            const T *av = (nd)->in[0]->data, *bv = (nd)->in[1]->data;                              \
            const T *gv = (nd)->out->grad;                                                         \
            T *dav = (nd)->in[0]->grad, *dbv = (nd)->in[1]->grad;                                  \
            if (dav)                                                                               \
                BCAST_FOR(bc, {                                                                    \
                    const T a = av[ia], b = bv[ib], g = gv[o];                                     \
                    (void)a, (void)b;                                                              \
                    dav[ia] += g * (DA);                                                           \
                });                                                                                \
            if (dbv)                                                                               \
                BCAST_FOR(bc, {                                                                    \
                    const T a = av[ia], b = bv[ib], g = gv[o];                                     \
                    (void)a, (void)b;                                                              \
                    dbv[ib] += g * (DB);                                                           \
                });                                                                                \
        });                                                                                        \
    } while (0)

/* ---- one element: scalar graphs (a chain of ops on numbers) ---- */

/* An output of one element has operands of one element (broadcasting never shrinks), so the
 * op is one expression: no plan, no chunks, no kernel call, which were most of the cost of
 * a scalar op. The same IEEE operations as the kernels (a + b; d += g · v; d -= g is
 * d + (-g)), in the same operand order, so the bits are those of any other path. */
#define ONE_ELEMENT_FORWARD(nd, OUT)                                                               \
    TG__DISPATCH((nd)->out->dtype, T, {                                                            \
        const T a = *(const T *)(nd)->in[0]->data, b = *(const T *)(nd)->in[1]->data;              \
        (void)a, (void)b;                                                                          \
        *(T *)(nd)->out->data = (OUT);                                                             \
    })

#define ONE_ELEMENT_VJP(nd, DA, DB)                                                                \
    TG__DISPATCH((nd)->out->dtype, T, {                                                            \
        const T a = *(const T *)(nd)->in[0]->data, b = *(const T *)(nd)->in[1]->data;              \
        const T g = *(const T *)(nd)->out->grad;                                                   \
        T *dav = (nd)->in[0]->grad, *dbv = (nd)->in[1]->grad;                                      \
        (void)a, (void)b;                                                                          \
        if (dav)                                                                                   \
            *dav += g * (DA);                                                                      \
        if (dbv)                                                                                   \
            *dbv += g * (DB);                                                                      \
    })

/* ---- the fast paths: the output as (rows x cols) ---- */

/* How an operand repeats over the output (see the top of the file). */
enum rep { REP_FULL, REP_ROW, REP_COL, REP_OTHER };

static enum rep
rep_of(const tg_tensor *x, const tg_tensor *out)
{
    /* An operand that broadcasts to out with as many elements is out's shape (leading 1s
     * aside): a repeated dimension would make it smaller. The common case, decided without
     * the walk. */
    if (x->size == out->size)
        return REP_FULL;
    bool saw_full = false, saw_bcast = false, row_ok = true, col_ok = true;
    for (int i = 0; i < out->ndim; i++) {
        int ix = x->ndim - out->ndim + i;
        int64_t d = ix >= 0 ? x->dims[ix] : 1, n = out->dims[i];
        if (n == 1)
            continue; /* neither full nor broadcast */
        if (d == n) {
            col_ok = col_ok && !saw_bcast; /* F after B: not F…FB…B */
            saw_full = true;
        } else {
            row_ok = row_ok && !saw_full; /* B after F: not B…BF…F */
            saw_bcast = true;
        }
    }
    if (!saw_bcast)
        return REP_FULL;
    if (!saw_full)
        return REP_COL; /* one element: a scalar, one "row" of the whole output */
    return row_ok ? REP_ROW : col_ok ? REP_COL : REP_OTHER;
}

struct ew_plan {
    bool fast;        /* else the generic path */
    size_t n;         /* output elements */
    size_t rows, cols;
    enum rep ra, rb;  /* FULL, ROW or COL; at most one of them not FULL */
    size_t chunks;    /* tg__parallel_chunks(n, TG__GRAIN) */
    size_t slot;      /* scratch elements per chunk: the broadcast operand's partial sums */
};

static struct ew_plan
plan_of(const tg_node *nd)
{
    const tg_tensor *a = nd->in[0], *b = nd->in[1], *out = nd->out;
    struct ew_plan p = {.n = out->size};
    if (p.n == 0)
        return p;
    /* Decided on locals, then stored: gcc compares p.ra and p.rb as one 8-byte load right
     * after storing them as two 4-byte values, and such a load cannot be forwarded from the
     * stores (a stall that was 12 % of a chain of scalar ops). */
    enum rep ra = rep_of(a, out), rb = rep_of(b, out);
    p.ra = ra;
    p.rb = rb;
    p.chunks = tg__parallel_chunks(p.n, TG__GRAIN);
    const tg_tensor *v; /* the broadcast operand */
    enum rep r;
    if (ra == REP_FULL && rb == REP_FULL) {
        p.fast = true, p.rows = 1, p.cols = p.n;
        return p;
    } else if (ra == REP_FULL && (rb == REP_ROW || rb == REP_COL)) {
        v = b, r = rb;
    } else if (rb == REP_FULL && (ra == REP_ROW || ra == REP_COL)) {
        v = a, r = ra;
    } else {
        return p;
    }
    p.fast = true;
    if (r == REP_ROW) {
        p.cols = v->size, p.rows = p.n / p.cols;
        p.slot = p.cols;
    } else {
        p.rows = v->size, p.cols = p.n / p.rows;
        /* a chunk of TG__GRAIN elements touches at most TG__GRAIN / cols + 2 rows */
        p.slot = TG__GRAIN / p.cols + 2 < p.rows ? TG__GRAIN / p.cols + 2 : p.rows;
    }
    return p;
}

/* Row stride of an operand in the (rows x cols) view, and its offset at (row, col). */
static size_t
rep_stride(enum rep r, size_t cols)
{
    return r == REP_FULL ? cols : r == REP_ROW ? 0 : 1;
}

static size_t
rep_at(enum rep r, size_t cols, size_t row, size_t col)
{
    return r == REP_FULL ? row * cols + col : r == REP_ROW ? col : row;
}

/* Loop forms: along a row both operands advance (VV), or one of them is one value per row
 * (VS: b is a column, SV: a is a column). */
enum form { VV, VS, SV };

static enum form
form_of(const struct ew_plan *p)
{
    return p->rb == REP_COL ? VS : p->ra == REP_COL ? SV : VV;
}

/*
 * Forward kernels of one op: y[i][j] = OUT(a, b) over nrows rows of ncols, row i of y at
 * y + i·ncols, of a at a + i·ra, of b at b + i·rb; in form VS b[i·rb] is one value per row.
 */
#define EW_FWD_KERNELS(op, OUT, T, SFX)                                                            \
    TG__VEC_CLONES static void op##_vv_##SFX(const T *restrict av, size_t ra,                      \
                                             const T *restrict bv, size_t rb, T *restrict y,       \
                                             size_t nrows, size_t ncols)                           \
    {                                                                                              \
        for (size_t i = 0; i < nrows; i++)                                                         \
            for (size_t j = 0; j < ncols; j++) {                                                   \
                const T a = av[i * ra + j], b = bv[i * rb + j];                                    \
                y[i * ncols + j] = (OUT);                                                          \
            }                                                                                      \
    }                                                                                              \
    TG__VEC_CLONES static void op##_vs_##SFX(const T *restrict av, size_t ra,                      \
                                             const T *restrict bv, size_t rb, T *restrict y,       \
                                             size_t nrows, size_t ncols)                           \
    {                                                                                              \
        for (size_t i = 0; i < nrows; i++) {                                                       \
            const T b = bv[i * rb];                                                                \
            for (size_t j = 0; j < ncols; j++) {                                                   \
                const T a = av[i * ra + j];                                                        \
                y[i * ncols + j] = (OUT);                                                          \
            }                                                                                      \
        }                                                                                          \
    }                                                                                              \
    TG__VEC_CLONES static void op##_sv_##SFX(const T *restrict av, size_t ra,                      \
                                             const T *restrict bv, size_t rb, T *restrict y,       \
                                             size_t nrows, size_t ncols)                           \
    {                                                                                              \
        for (size_t i = 0; i < nrows; i++) {                                                       \
            const T a = av[i * ra];                                                                \
            for (size_t j = 0; j < ncols; j++) {                                                   \
                const T b = bv[i * rb + j];                                                        \
                y[i * ncols + j] = (OUT);                                                          \
            }                                                                                      \
        }                                                                                          \
    }

typedef void ew_fwd_f32(const float *, size_t, const float *, size_t, float *, size_t, size_t);
typedef void ew_fwd_f64(const double *, size_t, const double *, size_t, double *, size_t, size_t);

/* How ∂out/∂x looks for one operand: 1, -1, or the other operand (mul). */
enum deriv { D_ONE, D_NEG, D_OTHER };

struct ew_rule {
    ew_fwd_f32 *fwd_f32[3]; /* by form */
    ew_fwd_f64 *fwd_f64[3];
    enum deriv da, db;
};

#define EW_RULE(op, OUT, DA, DB)                                                                   \
    EW_FWD_KERNELS(op, OUT, float, f32)                                                            \
    EW_FWD_KERNELS(op, OUT, double, f64)                                                           \
    static const struct ew_rule op##_rule = {                                                      \
        {op##_vv_f32, op##_vs_f32, op##_sv_f32}, {op##_vv_f64, op##_vs_f64, op##_sv_f64}, DA, DB};

/*
 * Gradient kernels, shared by the ops:
 *   acc:        d[i] += g[i]                      (flat)
 *   dec:        d[i] -= g[i]
 *   mulacc_vv:  d[i][j] += g[i][j] · v[i·rv + j]  (v the other operand, advancing)
 *   mulacc_vs:  d[i][j] += g[i][j] · v[i·rv]      (v one value per row)
 *   colsum:     part[j] += Σ_i g[i][j]            (rows in order)
 *   colsum_mul: part[j] += Σ_i g[i][j] · v[i][j]
 *   rowsum:     part[i] += Σ_j g[i][j]            (lane tree, loops.h)
 *   rowsum_mul: part[i] += Σ_j g[i][j] · v[i][j]
 * g, v and d rows are ncols apart unless a stride is given.
 */
#define EW_GRAD_KERNELS(T, SFX)                                                                    \
    TG__VEC_CLONES static void acc_##SFX(T *restrict d, const T *restrict g, size_t n)             \
    {                                                                                              \
        for (size_t i = 0; i < n; i++)                                                             \
            d[i] += g[i];                                                                          \
    }                                                                                              \
    TG__VEC_CLONES static void dec_##SFX(T *restrict d, const T *restrict g, size_t n)             \
    {                                                                                              \
        for (size_t i = 0; i < n; i++)                                                             \
            d[i] -= g[i];                                                                          \
    }                                                                                              \
    TG__VEC_CLONES static void mulacc_vv_##SFX(T *restrict d, const T *restrict g,                 \
                                               const T *restrict v, size_t rv, size_t nrows,       \
                                               size_t ncols)                                       \
    {                                                                                              \
        for (size_t i = 0; i < nrows; i++)                                                         \
            for (size_t j = 0; j < ncols; j++)                                                     \
                d[i * ncols + j] += g[i * ncols + j] * v[i * rv + j];                              \
    }                                                                                              \
    TG__VEC_CLONES static void mulacc_vs_##SFX(T *restrict d, const T *restrict g,                 \
                                               const T *restrict v, size_t rv, size_t nrows,       \
                                               size_t ncols)                                       \
    {                                                                                              \
        for (size_t i = 0; i < nrows; i++) {                                                       \
            const T vi = v[i * rv];                                                                \
            for (size_t j = 0; j < ncols; j++)                                                     \
                d[i * ncols + j] += g[i * ncols + j] * vi;                                         \
        }                                                                                          \
    }                                                                                              \
    TG__VEC_CLONES static void colsum_##SFX(T *restrict part, const T *restrict g,                 \
                                            const T *restrict v, size_t nrows, size_t ncols)       \
    {                                                                                              \
        (void)v;                                                                                   \
        TG__COLSUM(T, part, nrows, ncols, g[at]);                                                  \
    }                                                                                              \
    TG__VEC_CLONES static void colsum_mul_##SFX(T *restrict part, const T *restrict g,             \
                                                const T *restrict v, size_t nrows, size_t ncols)   \
    {                                                                                              \
        TG__COLSUM(T, part, nrows, ncols, g[at] * v[at]);                                          \
    }                                                                                              \
    TG__DEFINE_LANE_SUM(lanesum_##SFX, T, g[i], const T *restrict g)                               \
    TG__DEFINE_LANE_SUM(lanesum_mul_##SFX, T, g[i] * v[i], const T *restrict g,                    \
                        const T *restrict v)                                                       \
    static void rowsum_##SFX(T *part, const T *g, const T *v, size_t nrows, size_t ncols)          \
    {                                                                                              \
        (void)v;                                                                                   \
        for (size_t i = 0; i < nrows; i++)                                                         \
            part[i] += lanesum_##SFX(g + i * ncols, ncols);                                        \
    }                                                                                              \
    static void rowsum_mul_##SFX(T *part, const T *g, const T *v, size_t nrows, size_t ncols)      \
    {                                                                                              \
        for (size_t i = 0; i < nrows; i++)                                                         \
            part[i] += lanesum_mul_##SFX(g + i * ncols, v + i * ncols, ncols);                     \
    }

EW_GRAD_KERNELS(float, f32)
EW_GRAD_KERNELS(double, f64)

struct ew_job {
    const tg_node *nd;
    const struct ew_rule *rule;
    struct ew_plan p;
};

static void
ew_fwd_chunk(size_t e0, size_t e1, void *vctx)
{
    const struct ew_job *j = vctx;
    const struct ew_plan *p = &j->p;
    const tg_node *nd = j->nd;
    enum form f = form_of(p);
    if (p->ra == REP_FULL && p->rb == REP_FULL) { /* same shapes: one flat run */
        if (nd->out->dtype == TG_F32)
            j->rule->fwd_f32[VV]((const float *)nd->in[0]->data + e0, 0,
                                 (const float *)nd->in[1]->data + e0, 0,
                                 (float *)nd->out->data + e0, 1, e1 - e0);
        else
            j->rule->fwd_f64[VV]((const double *)nd->in[0]->data + e0, 0,
                                 (const double *)nd->in[1]->data + e0, 0,
                                 (double *)nd->out->data + e0, 1, e1 - e0);
        return;
    }
    size_t ra = rep_stride(p->ra, p->cols), rb = rep_stride(p->rb, p->cols);
    TG__FOR_SEGMENTS(e0, e1, p->cols, {
        size_t ia = rep_at(p->ra, p->cols, row, col), ib = rep_at(p->rb, p->cols, row, col);
        size_t at = row * p->cols + col;
        if (nd->out->dtype == TG_F32)
            j->rule->fwd_f32[f]((const float *)nd->in[0]->data + ia, ra,
                                (const float *)nd->in[1]->data + ib, rb,
                                (float *)nd->out->data + at, nrows, ncols);
        else
            j->rule->fwd_f64[f]((const double *)nd->in[0]->data + ia, ra,
                                (const double *)nd->in[1]->data + ib, rb,
                                (double *)nd->out->data + at, nrows, ncols);
    });
}

/*
 * One chunk [e0, e1) of the VJP. The FULL operands' gradients are updated in place; the
 * broadcast operand's partial sums go to this chunk's slot of the scratch (zeroed here, added
 * into its gradient in chunk order by ew_vjp).
 */
#define EW_VJP_CHUNK(T, SFX)                                                                       \
    static void ew_vjp_chunk_##SFX(size_t e0, size_t e1, void *vctx)                               \
    {                                                                                              \
        const struct ew_job *j = vctx;                                                             \
        const struct ew_plan *p = &j->p;                                                           \
        const tg_node *nd = j->nd;                                                                 \
        const T *g = nd->out->grad;                                                                \
        for (int k = 0; k < 2; k++) {                                                              \
            tg_tensor *x = nd->in[k], *other = nd->in[1 - k];                                      \
            if (!x->grad)                                                                          \
                continue;                                                                          \
            T *dx = x->grad;                                                                       \
            enum rep rx = k ? p->rb : p->ra, rv = k ? p->ra : p->rb;                               \
            enum deriv d = k ? j->rule->db : j->rule->da;                                          \
            const T *v = other->data;                                                              \
            if (rx == REP_FULL) {                                                                  \
                if (d == D_ONE)                                                                    \
                    acc_##SFX(dx + e0, g + e0, e1 - e0);                                           \
                else if (d == D_NEG)                                                               \
                    dec_##SFX(dx + e0, g + e0, e1 - e0);                                           \
                else if (rv == REP_FULL) /* same shapes: one flat run */                           \
                    mulacc_vv_##SFX(dx + e0, g + e0, v + e0, 0, 1, e1 - e0);                       \
                else                                                                               \
                    TG__FOR_SEGMENTS(e0, e1, p->cols, {                                            \
                        size_t at = row * p->cols + col,                                           \
                               iv = rep_at(rv, p->cols, row, col),                                 \
                               sv = rep_stride(rv, p->cols);                                       \
                        if (rv == REP_COL)                                                         \
                            mulacc_vs_##SFX(dx + at, g + at, v + iv, sv, nrows, ncols);            \
                        else                                                                       \
                            mulacc_vv_##SFX(dx + at, g + at, v + iv, sv, nrows, ncols);            \
                    });                                                                            \
                continue;                                                                          \
            }                                                                                      \
            /* the broadcast operand: partial sums of g (or g ⊙ v, v FULL) */                 \
            T *part = (T *)nd->scratch + (e0 / TG__GRAIN) * p->slot;                               \
            size_t r0 = e0 / p->cols;                                                              \
            memset(part, 0, p->slot * sizeof(T));                                                  \
            TG__FOR_SEGMENTS(e0, e1, p->cols, {                                                    \
                size_t at = row * p->cols + col;                                                   \
                if (rx == REP_ROW && d == D_OTHER)                                                 \
                    colsum_mul_##SFX(part + col, g + at, v + at, nrows, ncols);                    \
                else if (rx == REP_ROW)                                                            \
                    colsum_##SFX(part + col, g + at, NULL, nrows, ncols);                          \
                else if (d == D_OTHER)                                                             \
                    rowsum_mul_##SFX(part + (row - r0), g + at, v + at, nrows, ncols);             \
                else                                                                               \
                    rowsum_##SFX(part + (row - r0), g + at, NULL, nrows, ncols);                   \
            });                                                                                    \
        }                                                                                          \
    }

EW_VJP_CHUNK(float, f32)
EW_VJP_CHUNK(double, f64)

/* Scratch: the broadcast operand's partial sums, one slot per chunk. */
__attribute__((noinline)) static size_t
ew_scratch_planned(const tg_node *nd)
{
    struct ew_plan p = plan_of(nd);
    if (!p.fast || (p.ra == REP_FULL && p.rb == REP_FULL))
        return 0;
    return p.chunks * p.slot * tg__dtype_bytes(nd->out->dtype);
}

static size_t
ew_scratch(const tg_node *nd)
{
    size_t n = nd->out->size;
    if (nd->in[0]->size == n && nd->in[1]->size == n)
        return 0; /* same shapes (rep_of): nothing is reduced */
    return ew_scratch_planned(nd);
}

static void
ew_forward(tg_node *nd, const struct ew_rule *rule, struct ew_plan p)
{
    struct ew_job j = {nd, rule, p};
    tg__parallel_for(p.n, TG__GRAIN, ew_fwd_chunk, &j);
}

static void
ew_vjp(tg_node *nd, const struct ew_rule *rule, struct ew_plan p)
{
    struct ew_job j = {nd, rule, p};
    tg__parallel_for(p.n, TG__GRAIN,
                     nd->out->dtype == TG_F32 ? ew_vjp_chunk_f32 : ew_vjp_chunk_f64, &j);
    if (p.ra == REP_FULL && p.rb == REP_FULL)
        return;
    /* the broadcast operand's gradient += its chunks' partials, in chunk order */
    int k = p.ra == REP_FULL ? 1 : 0;
    tg_tensor *x = nd->in[k];
    if (!x->grad)
        return;
    bool neg = (k ? rule->db : rule->da) == D_NEG, row = (k ? p.rb : p.ra) == REP_ROW;
    TG__DISPATCH(nd->out->dtype, T, {
        T *dx = x->grad;
        const T *part = nd->scratch;
        for (size_t c = 0; c < p.chunks; c++, part += p.slot) {
            size_t e0 = c * TG__GRAIN, e1 = p.n - e0 < TG__GRAIN ? p.n : e0 + TG__GRAIN;
            size_t first = row ? 0 : e0 / p.cols; /* COL: the rows chunk c touched */
            size_t count = row ? p.cols : (e1 - 1) / p.cols - first + 1;
            T *d = dx + first;
            if (neg)
                for (size_t i = 0; i < count; i++)
                    d[i] -= part[i];
            else
                for (size_t i = 0; i < count; i++)
                    d[i] += part[i];
        }
    });
}

/* Out of line: the four message texts (320 bytes each) would be in every call's frame. */
__attribute__((noinline, cold)) static tg_status
fail_broadcast(const tg_node *nd)
{
    const tg_tensor *a = nd->in[0], *b = nd->in[1];
    tg__fail(nd->tape, TG_ERR_SHAPE,
             "%s %s·%s: shapes cannot be broadcast: %s and %s (each dimension must match "
             "or be 1)",
             nd->op->name, tg__name_text(a).s, tg__name_text(b).s, tg__shape_text(a).s,
             tg__shape_text(b).s);
    return TG_ERR_SHAPE;
}

static tg_status
broadcast_shape(tg_node *nd, int *ndim, int64_t *dims)
{
    return tg__broadcast_shape(nd->in[0], nd->in[1], ndim, dims) ? TG_OK : fail_broadcast(nd);
}

static tg_tensor *
record_binary(tg_tape *t, const tg_op *op, tg_tensor *a, tg_tensor *b)
{
    if (!t)
        return NULL;
    tg_tensor *in[2] = {a, b};
    return tg__record(t, op, in, 2, NULL, NULL);
}

/*
 * The forward and VJP of a binary op: the fast path of its rule when the plan has one, else
 * the generic loop with OUT (forward expression of a, b) and DA, DB (∂out/∂a, ∂out/∂b).
 */
#define BINARY_FORWARD(nd, rule, OUT)                                                              \
    do {                                                                                           \
        if ((nd)->out->size == 1) {                                                                \
            ONE_ELEMENT_FORWARD(nd, OUT);                                                          \
            break;                                                                                 \
        }                                                                                          \
        struct ew_plan p_ = plan_of(nd);                                                           \
        if (p_.fast)                                                                               \
            ew_forward(nd, &(rule), p_);                                                           \
        else if (p_.n)                                                                             \
            GENERIC_FORWARD(nd, OUT);                                                              \
    } while (0)

#define BINARY_VJP(nd, rule, DA, DB)                                                               \
    do {                                                                                           \
        if ((nd)->out->size == 1) {                                                                \
            ONE_ELEMENT_VJP(nd, DA, DB);                                                           \
            break;                                                                                 \
        }                                                                                          \
        struct ew_plan p_ = plan_of(nd);                                                           \
        if (p_.fast)                                                                               \
            ew_vjp(nd, &(rule), p_);                                                               \
        else if (p_.n)                                                                             \
            GENERIC_VJP(nd, DA, DB);                                                               \
    } while (0)

/*
 * add:  y = a + b        ∂y/∂a = 1, ∂y/∂b = 1
 *   VJP: da += Σ_broadcast dy,  db += Σ_broadcast dy
 *   JVP: ẏ = ȧ + ḃ (each repeated as in the forward): add is linear, so its JVP is its
 *   forward run on the tangents (tg__jvp_linear)
 */
EW_RULE(add, a + b, D_ONE, D_ONE)

static tg_status
add_forward(tg_node *nd)
{
    BINARY_FORWARD(nd, add_rule, a + b);
    return TG_OK;
}

static tg_status
add_vjp(tg_node *nd)
{
    BINARY_VJP(nd, add_rule, 1, 1);
    return TG_OK;
}

/* For tg_grad: the VJP with ops (Σ_broadcast is tg__sum_to) */
static tg_tensor * /* da = Σ_broadcast dy, db = Σ_broadcast dy */
add_vjp_graph(tg_node *nd, int k, tg_tensor *dy)
{
    return tg__sum_to(nd->tape, dy, nd->in[k]);
}

const tg_op tg__op_add = {
    .name = "add",
    .n_inputs = 2,
    .shape = broadcast_shape,
    .forward = add_forward,
    .vjp = add_vjp,
    .vjp_graph = add_vjp_graph,
    .jvp = tg__jvp_linear,
    .jvp_math = "ẏ = ȧ + ḃ (broadcast)",
    .scratch_size = ew_scratch,
    .math = "y = a + b",
    .vjp_math = "da += Σ_broadcast dy;  db += Σ_broadcast dy",
    .shapes = "a, b broadcast (numpy rules) → the broadcast shape",
};

tg_tensor *
tg_add(tg_tape *t, tg_tensor *a, tg_tensor *b)
{
    return record_binary(t, &tg__op_add, a, b);
}

/*
 * sub:  y = a - b        ∂y/∂a = 1, ∂y/∂b = -1
 *   VJP: da += Σ_broadcast dy,  db -= Σ_broadcast dy
 *   JVP: ẏ = ȧ - ḃ (linear: the forward on the tangents)
 */
EW_RULE(sub, a - b, D_ONE, D_NEG)

static tg_status
sub_forward(tg_node *nd)
{
    BINARY_FORWARD(nd, sub_rule, a - b);
    return TG_OK;
}

static tg_status
sub_vjp(tg_node *nd)
{
    BINARY_VJP(nd, sub_rule, 1, -1);
    return TG_OK;
}

static tg_tensor * /* da = Σ_broadcast dy, db = -Σ_broadcast dy */
sub_vjp_graph(tg_node *nd, int k, tg_tensor *dy)
{
    return tg__sum_to(nd->tape, k ? tg_neg(nd->tape, dy) : dy, nd->in[k]);
}

const tg_op tg__op_sub = {
    .name = "sub",
    .n_inputs = 2,
    .shape = broadcast_shape,
    .forward = sub_forward,
    .vjp = sub_vjp,
    .vjp_graph = sub_vjp_graph,
    .jvp = tg__jvp_linear,
    .jvp_math = "ẏ = ȧ - ḃ (broadcast)",
    .scratch_size = ew_scratch,
    .math = "y = a - b",
    .vjp_math = "da += Σ_broadcast dy;  db -= Σ_broadcast dy",
    .shapes = "as add",
};

tg_tensor *
tg_sub(tg_tape *t, tg_tensor *a, tg_tensor *b)
{
    return record_binary(t, &tg__op_sub, a, b);
}

/*
 * mul:  y = a ⊙ b        ∂y/∂a = b, ∂y/∂b = a
 *   VJP: da += Σ_broadcast dy ⊙ b,  db += Σ_broadcast dy ⊙ a
 *   (x ⊙ x gets both terms: 2x dy, through fan-out accumulation)
 *   JVP: ẏ = ȧ ⊙ b + a ⊙ ḃ, the forward run twice (tg__jvp_multilinear)
 */
EW_RULE(mul, a * b, D_OTHER, D_OTHER)

static tg_status
mul_forward(tg_node *nd)
{
    BINARY_FORWARD(nd, mul_rule, a * b);
    return TG_OK;
}

static tg_status
mul_vjp(tg_node *nd)
{
    BINARY_VJP(nd, mul_rule, b, a);
    return TG_OK;
}

static tg_status
mul_jvp(tg_node *nd)
{
    return tg__jvp_multilinear(nd, 2);
}

static tg_tensor * /* da = Σ_broadcast dy ⊙ b, db = Σ_broadcast dy ⊙ a */
mul_vjp_graph(tg_node *nd, int k, tg_tensor *dy)
{
    return tg__sum_to(nd->tape, tg_mul(nd->tape, dy, nd->in[1 - k]), nd->in[k]);
}

const tg_op tg__op_mul = {
    .name = "mul",
    .n_inputs = 2,
    .shape = broadcast_shape,
    .forward = mul_forward,
    .vjp = mul_vjp,
    .vjp_graph = mul_vjp_graph,
    .jvp = mul_jvp,
    .jvp_math = "ẏ = ȧ ⊙ b + a ⊙ ḃ (broadcast)",
    .scratch_size = ew_scratch,
    .math = "y = a ⊙ b",
    .vjp_math = "da += Σ_broadcast dy ⊙ b;  db += Σ_broadcast dy ⊙ a",
    .shapes = "as add",
};

tg_tensor *
tg_mul(tg_tape *t, tg_tensor *a, tg_tensor *b)
{
    return record_binary(t, &tg__op_mul, a, b);
}

/*
 * scale:  y = c x        (c a constant)
 *   VJP: dx += c dy
 *   JVP: ẏ = c ẋ (linear: the forward on the tangent)
 *   Flat loops in chunks of TG__GRAIN (elementwise: the same for any thread count).
 */
#define SCALE_KERNELS(T, SFX)                                                                      \
    TG__VEC_CLONES static void scale_fwd_##SFX(T c, const T *restrict x, T *restrict y, size_t n)  \
    {                                                                                              \
        for (size_t i = 0; i < n; i++)                                                             \
            y[i] = c * x[i];                                                                       \
    }                                                                                              \
    TG__VEC_CLONES static void scale_vjp_##SFX(T c, const T *restrict dy, T *restrict dx,          \
                                               size_t n)                                           \
    {                                                                                              \
        for (size_t i = 0; i < n; i++)                                                             \
            dx[i] += c * dy[i];                                                                    \
    }

SCALE_KERNELS(float, f32)
SCALE_KERNELS(double, f64)

static void
scale_fwd_chunk(size_t e0, size_t e1, void *vctx)
{
    const tg_node *nd = vctx;
    if (nd->out->dtype == TG_F32)
        scale_fwd_f32((float)nd->attr->scale, (const float *)nd->in[0]->data + e0,
                      (float *)nd->out->data + e0, e1 - e0);
    else
        scale_fwd_f64(nd->attr->scale, (const double *)nd->in[0]->data + e0,
                      (double *)nd->out->data + e0, e1 - e0);
}

static void
scale_vjp_chunk(size_t e0, size_t e1, void *vctx)
{
    const tg_node *nd = vctx;
    if (nd->out->dtype == TG_F32)
        scale_vjp_f32((float)nd->attr->scale, (const float *)nd->out->grad + e0,
                      (float *)nd->in[0]->grad + e0, e1 - e0);
    else
        scale_vjp_f64(nd->attr->scale, (const double *)nd->out->grad + e0,
                      (double *)nd->in[0]->grad + e0, e1 - e0);
}

static tg_status
scale_forward(tg_node *nd)
{
    tg__parallel_for(nd->out->size, TG__GRAIN, scale_fwd_chunk, nd);
    return TG_OK;
}

static tg_status
scale_vjp(tg_node *nd)
{
    if (nd->in[0]->grad)
        tg__parallel_for(nd->out->size, TG__GRAIN, scale_vjp_chunk, nd);
    return TG_OK;
}

const tg_op tg__op_scale = {
    .name = "scale",
    .n_inputs = 1,
    .shape = tg__shape_same,
    .forward = scale_forward,
    .vjp = scale_vjp,
    .vjp_graph = tg__vjp_graph_linear,
    .jvp = tg__jvp_linear,
    .jvp_math = "ẏ = c ẋ",
    .math = "y = c x (c constant)",
    .vjp_math = "dx += c dy",
    .shapes = "x → the same",
};

tg_tensor *
tg_scale(tg_tape *t, tg_tensor *x, double c)
{
    if (!t)
        return NULL;
    /* The factor's error names x, so x is validated first: a stale or foreign handle must be
     * reported as such, not read (found by fuzz-graph: a stale handle's name pointer). */
    if (t->status == TG_OK && !isfinite(c)) {
        if (!(x = tg__operand(t, "scale", "x", x)))
            return &t->nil; /* tg__operand_ok recorded the error */
        return tg__fail(t, TG_ERR_ARG, "scale %s: factor %g is not finite",
                        tg__name_text(x).s, c);
    }
    struct tg__attr attr = {.scale = c};
    return tg__record(t, &tg__op_scale, &x, 1, &attr, NULL);
}
