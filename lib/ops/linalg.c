/*
 * Linear algebra: matmul (with optional transposes of either operand) and transpose.
 * Notation as in the seed note: Z = W·A with W (n^l x n^(l-1)), A (n^(l-1) x m).
 */
#include <string.h>

#include "../kernels/kernels.h"
#include "ops.h"

/*
 * matmul:  C = op(A) · op(B)          op(X) = Xᵀ when trans_X
 *          op(A) (m x k), op(B) (k x n)  ->  C (m x n)
 *
 *   With dC = ∂J/∂C, the chain rule per element C_ij = Σ_p A'_ip B'_pj gives
 *     dA' = dC · op(B)ᵀ                 (m x k)
 *     dB' = op(A)ᵀ · dC                 (k x n)
 *   and when an operand is stored transposed its gradient is transposed back:
 *     trans_a:  dA = (dA')ᵀ = op(B) · dCᵀ    (k x m)
 *     trans_b:  dB = (dB')ᵀ = dCᵀ · op(A)    (n x k)
 *   This is the note's step 3, dW = dZ·Aᵀ, and step 5, dA = Wᵀ·dZ, for W·A; the kernel
 *   reads the transposes in place, nothing is materialized.
 *
 *   JVP (product rule): Ċ = op(Ȧ) · op(B) + op(A) · op(Ḃ), two products accumulated into the
 *   zeroed tangent (beta = 1), one per input that has a tangent.
 */
struct mm_dims {
    size_t m, n, k, lda, ldb;
};

static struct mm_dims
mm_dims(const tg_node *nd)
{
    const tg_tensor *a = nd->in[0], *b = nd->in[1];
    struct mm_dims d;
    d.m = (size_t)(nd->attr->trans_a ? a->dims[1] : a->dims[0]);
    d.k = (size_t)(nd->attr->trans_a ? a->dims[0] : a->dims[1]);
    d.n = (size_t)(nd->attr->trans_b ? b->dims[0] : b->dims[1]);
    d.lda = (size_t)a->dims[1];
    d.ldb = (size_t)b->dims[1];
    return d;
}

static tg_status
matmul_shape(tg_node *nd, int *ndim, int64_t *dims)
{
    const tg_tensor *a = nd->in[0], *b = nd->in[1];
    bool ta = nd->attr->trans_a, tb = nd->attr->trans_b;
    if (a->ndim != 2 || b->ndim != 2) {
        tg__fail(nd->tape, TG_ERR_SHAPE, "matmul %s·%s: both operands must be 2-D, got %s · %s",
                 tg__name_text(a).s, tg__name_text(b).s, tg__shape_text(a).s,
                 tg__shape_text(b).s);
        return TG_ERR_SHAPE;
    }
    int64_t ka = ta ? a->dims[0] : a->dims[1];
    int64_t kb = tb ? b->dims[1] : b->dims[0];
    if (ka != kb) {
        tg__fail(nd->tape, TG_ERR_SHAPE, "matmul %s%s·%s%s: inner dimensions differ: %s%s · %s%s",
                 tg__name_text(a).s, ta ? "ᵀ" : "", tg__name_text(b).s, tb ? "ᵀ" : "",
                 tg__shape_text(a).s, ta ? "ᵀ" : "", tg__shape_text(b).s, tb ? "ᵀ" : "");
        return TG_ERR_SHAPE;
    }
    *ndim = 2;
    dims[0] = ta ? a->dims[1] : a->dims[0];
    dims[1] = tb ? b->dims[0] : b->dims[1];
    return TG_OK;
}

/* C = op(A) · op(B) for one matrix of each (bmm calls it per batch), in the dtype dt. */
static void
mm_product(tg_dtype dt, bool ta, bool tb, struct mm_dims d, const void *a, const void *b,
           void *c)
{
    if (dt == TG_F32)
        tg__gemm_f32(ta, tb, d.m, d.n, d.k, 1.0f, a, d.lda, b, d.ldb, 0.0f, c, d.n);
    else
        tg__gemm_f64(ta, tb, d.m, d.n, d.k, 1.0, a, d.lda, b, d.ldb, 0.0, c, d.n);
}

static tg_status
matmul_forward(tg_node *nd)
{
    mm_product(nd->out->dtype, nd->attr->trans_a, nd->attr->trans_b, mm_dims(nd),
               nd->in[0]->data, nd->in[1]->data, nd->out->data);
    return TG_OK;
}

/* One gemm call, C = op(A)·op(B) + beta·C, beta 1 (accumulate) or 0 (overwrite: C is not
 * read), in the node's dtype. */
static void
gemm_into(tg_dtype dt, bool ta, bool tb, size_t m, size_t n, size_t k, const void *a, size_t lda,
          const void *b, size_t ldb, bool overwrite, void *c, size_t ldc)
{
    if (dt == TG_F32)
        tg__gemm_f32(ta, tb, m, n, k, 1.0f, a, lda, b, ldb, overwrite ? 0.0f : 1.0f, c, ldc);
    else
        tg__gemm_f64(ta, tb, m, n, k, 1.0, a, lda, b, ldb, overwrite ? 0.0 : 1.0, c, ldc);
}

/* One gemm call with accumulation (beta = 1), in the node's dtype. */
static void
gemm_acc(tg_dtype dt, bool ta, bool tb, size_t m, size_t n, size_t k, const void *a, size_t lda,
         const void *b, size_t ldb, void *c, size_t ldc)
{
    gemm_into(dt, ta, tb, m, n, k, a, lda, b, ldb, false, c, ldc);
}

/* The VJP of one product (bmm calls it per batch): dA and dB (either NULL: not wanted) += the
 * rules above, from A, B and dC; with da_fresh (db_fresh) the gradient holds nothing yet and
 * is written, not added to. */
static void
mm_vjp_one(tg_dtype dt, bool ta, bool tb, struct mm_dims d, const void *a, const void *b,
           const void *dc, void *da, bool da_fresh, void *db, bool db_fresh)
{
    if (da) {
        if (!ta) /* dA (m x k) += dC · op(B)ᵀ */
            gemm_into(dt, false, !tb, d.m, d.k, d.n, dc, d.n, b, d.ldb, da_fresh, da, d.k);
        else /* dA (k x m) += op(B) · dCᵀ */
            gemm_into(dt, tb, true, d.k, d.m, d.n, b, d.ldb, dc, d.n, da_fresh, da, d.m);
    }
    if (db) {
        if (!tb) /* dB (k x n) += op(A)ᵀ · dC */
            gemm_into(dt, !ta, false, d.k, d.n, d.m, a, d.lda, dc, d.n, db_fresh, db, d.n);
        else /* dB (n x k) += dCᵀ · op(A) */
            gemm_into(dt, true, ta, d.n, d.k, d.m, dc, d.n, a, d.lda, db_fresh, db, d.k);
    }
}

/* Listed by tg__vjp_takes_fresh: a fresh gradient (an op output's, not yet added to: the
 * hidden activations of a network) is written with beta = 0 instead of being zeroed by the
 * tape and accumulated into. A·A (one tensor, both operands) takes it once: dA's product
 * writes, dB's adds. */
static tg_status
matmul_vjp(tg_node *nd)
{
    tg_tensor *a = nd->in[0], *b = nd->in[1], *c = nd->out;
    bool a_fresh = a->grad && tg__grad_take_fresh(a);
    bool b_fresh = b->grad && tg__grad_take_fresh(b);
    mm_vjp_one(c->dtype, nd->attr->trans_a, nd->attr->trans_b, mm_dims(nd), a->data, b->data,
               c->grad, a->grad, a_fresh, b->grad, b_fresh);
    return TG_OK;
}

static tg_status
matmul_jvp(tg_node *nd)
{
    const tg_tensor *a = nd->in[0], *b = nd->in[1];
    struct mm_dims d = mm_dims(nd);
    bool ta = nd->attr->trans_a, tb = nd->attr->trans_b;
    if (a->tangent)
        gemm_acc(nd->out->dtype, ta, tb, d.m, d.n, d.k, a->tangent, d.lda, b->data, d.ldb,
                 nd->out->tangent, d.n);
    if (b->tangent)
        gemm_acc(nd->out->dtype, ta, tb, d.m, d.n, d.k, a->data, d.lda, b->tangent, d.ldb,
                 nd->out->tangent, d.n);
    return TG_OK;
}

/* For tg_grad, the rules above written with tg_matmul_t (so they are differentiable):
 *   dA' = dC · op(B)ᵀ, or op(B) · dCᵀ when trans_a;  dB' = op(A)ᵀ · dC, or dCᵀ · op(A) when
 *   trans_b. */
static tg_tensor *
matmul_vjp_graph(tg_node *nd, int k, tg_tensor *dc)
{
    tg_tape *t = nd->tape;
    tg_tensor *a = nd->in[0], *b = nd->in[1];
    bool ta = nd->attr->trans_a, tb = nd->attr->trans_b;
    if (k == 0)
        return ta ? tg_matmul_t(t, b, tb, dc, true) : tg_matmul_t(t, dc, false, b, !tb);
    return tb ? tg_matmul_t(t, dc, true, a, ta) : tg_matmul_t(t, a, !ta, dc, false);
}

const tg_op tg__op_matmul = {
    .name = "matmul",
    .n_inputs = 2,
    .shape = matmul_shape,
    .forward = matmul_forward,
    .vjp = matmul_vjp,
    .vjp_graph = matmul_vjp_graph,
    .jvp = matmul_jvp,
    .jvp_math = "Ċ = op(Ȧ) · op(B) + op(A) · op(Ḃ)",
    .math = "C = op(A) · op(B), op(X) = X or Xᵀ",
    .vjp_math = "dA += dC · op(B)ᵀ (or op(B) · dCᵀ if trans_a);  dB += op(A)ᵀ · dC (or dCᵀ · op(A) if trans_b)",
    .shapes = "(m x k) · (k x n) → (m x n), 2-D",
};

tg_tensor *
tg_matmul_t(tg_tape *t, tg_tensor *a, bool trans_a, tg_tensor *b, bool trans_b)
{
    if (!t)
        return NULL;
    struct tg__attr attr = {.trans_a = trans_a, .trans_b = trans_b};
    tg_tensor *in[2] = {a, b};
    return tg__record(t, &tg__op_matmul, in, 2, &attr, NULL);
}

tg_tensor *
tg_matmul(tg_tape *t, tg_tensor *a, tg_tensor *b)
{
    return tg_matmul_t(t, a, false, b, false);
}

/*
 * transpose:  Y = Xᵀ                   X (m x n) -> Y (n x m)
 *
 *   Y_ji = X_ij, so dX_ij += dY_ji:  dX += dYᵀ
 *   JVP: Ẏ = Ẋᵀ (linear: the forward on the tangent)
 */
static tg_status
transpose_shape(tg_node *nd, int *ndim, int64_t *dims)
{
    const tg_tensor *x = nd->in[0];
    if (x->ndim != 2) {
        tg__fail(nd->tape, TG_ERR_SHAPE, "transpose %s: needs a 2-D tensor, got %s",
                 tg__name_text(x).s, tg__shape_text(x).s);
        return TG_ERR_SHAPE;
    }
    *ndim = 2;
    dims[0] = x->dims[1];
    dims[1] = x->dims[0];
    return TG_OK;
}

static tg_status
transpose_forward(tg_node *nd)
{
    size_t m = (size_t)nd->in[0]->dims[0], n = (size_t)nd->in[0]->dims[1];
    if (m == 0 || n == 0)
        return TG_OK; /* (2^40 x 0): nothing to move, and no 2^40-step empty loop */
    TG__DISPATCH(nd->out->dtype, T, {
        const T *x = nd->in[0]->data;
        T *y = nd->out->data;
        for (size_t i = 0; i < m; i++)
            for (size_t j = 0; j < n; j++)
                y[j * m + i] = x[i * n + j];
    });
    return TG_OK;
}

static tg_status
transpose_vjp(tg_node *nd)
{
    tg_tensor *x = nd->in[0];
    if (!x->grad || x->size == 0)
        return TG_OK;
    size_t m = (size_t)x->dims[0], n = (size_t)x->dims[1];
    TG__DISPATCH(x->dtype, T, {
        const T *dy = nd->out->grad;
        T *dx = x->grad;
        for (size_t i = 0; i < m; i++)
            for (size_t j = 0; j < n; j++)
                dx[i * n + j] += dy[j * m + i];
    });
    return TG_OK;
}

const tg_op tg__op_transpose = {
    .name = "transpose",
    .n_inputs = 1,
    .shape = transpose_shape,
    .forward = transpose_forward,
    .vjp = transpose_vjp,
    .vjp_graph = tg__vjp_graph_linear,
    .jvp = tg__jvp_linear,
    .jvp_math = "Ẏ = Ẋᵀ",
    .math = "Y = Xᵀ",
    .vjp_math = "dX += dYᵀ",
    .shapes = "(m x n) → (n x m)",
};

tg_tensor *
tg_transpose(tg_tape *t, tg_tensor *x)
{
    if (!t)
        return NULL;
    return tg__record(t, &tg__op_transpose, &x, 1, NULL, NULL);
}

/*
 * bmm (batched matmul):  C[β] = op(A[β_A]) · op(B[β_B])  over the last two axes
 *   A (…, m, k) or (…, k, m) with trans_a, B (…, k, n) or (…, n, k) with trans_b; the batch
 *   axes β (all but the last two) broadcast as numpy does, and a 2-D operand is one matrix
 *   shared by every batch. Per batch this is matmul, so per batch the VJP is matmul's:
 *     dA[β_A] += dC[β] · op(B)ᵀ   (or op(B) · dC[β]ᵀ when trans_a),
 *     dB[β_B] += op(A)ᵀ · dC[β]   (or dC[β]ᵀ · op(A) when trans_b),
 *   summed over the batches β that share a broadcast operand, in batch order. Every product
 *   runs on the GEMM kernels with the transposes read in place.
 *   JVP: Ċ[β] = op(Ȧ[β]) · op(B[β]) + op(A[β]) · op(Ḃ[β]), the forward run once per input
 *   with a tangent (tg__jvp_multilinear)
 */
struct bmm_plan {
    struct mm_dims d;
    size_t nb[2];          /* output batch dims, padded in front to two */
    size_t sa[2], sb[2];   /* A's and B's matrix strides along them (0: broadcast) */
    size_t a_mat, b_mat, c_mat; /* elements per matrix */
};

static struct bmm_plan
bmm_plan_of(const tg_node *nd)
{
    const tg_tensor *a = nd->in[0], *b = nd->in[1], *c = nd->out;
    struct bmm_plan p;
    int ar = a->ndim, br = b->ndim;
    size_t a0 = (size_t)a->dims[ar - 2], a1 = (size_t)a->dims[ar - 1];
    size_t b0 = (size_t)b->dims[br - 2], b1 = (size_t)b->dims[br - 1];
    p.d.m = nd->attr->trans_a ? a1 : a0;
    p.d.k = nd->attr->trans_a ? a0 : a1;
    p.d.n = nd->attr->trans_b ? b0 : b1;
    p.d.lda = a1, p.d.ldb = b1;
    p.a_mat = a0 * a1, p.b_mat = b0 * b1, p.c_mat = p.d.m * p.d.n;
    int cb = c->ndim - 2; /* output batch rank, 0 … 2 */
    size_t sa = 1, sb = 1;
    for (int i = 1; i >= 0; i--) {
        int ic = cb - 2 + i, ia = ar - 2 - 2 + i, ib = br - 2 - 2 + i;
        p.nb[i] = ic >= 0 ? (size_t)c->dims[ic] : 1;
        size_t da = ia >= 0 ? (size_t)a->dims[ia] : 1, db = ib >= 0 ? (size_t)b->dims[ib] : 1;
        p.sa[i] = da == 1 ? 0 : sa;
        p.sb[i] = db == 1 ? 0 : sb;
        sa *= da, sb *= db;
    }
    return p;
}

static tg_status
bmm_shape(tg_node *nd, int *ndim, int64_t *dims)
{
    const tg_tensor *a = nd->in[0], *b = nd->in[1];
    bool ta = nd->attr->trans_a, tb = nd->attr->trans_b;
    if (a->ndim < 2 || b->ndim < 2) {
        tg__fail(nd->tape, TG_ERR_SHAPE, "bmm %s·%s: operands need at least 2 dimensions, got "
                 "%s · %s",
                 tg__name_text(a).s, tg__name_text(b).s, tg__shape_text(a).s,
                 tg__shape_text(b).s);
        return TG_ERR_SHAPE;
    }
    int ar = a->ndim, br = b->ndim;
    int64_t ka = ta ? a->dims[ar - 2] : a->dims[ar - 1];
    int64_t kb = tb ? b->dims[br - 1] : b->dims[br - 2];
    if (ka != kb) {
        tg__fail(nd->tape, TG_ERR_SHAPE, "bmm %s%s·%s%s: inner dimensions differ: %s%s · %s%s "
                 "(%lld vs %lld)",
                 tg__name_text(a).s, ta ? "ᵀ" : "", tg__name_text(b).s, tb ? "ᵀ" : "",
                 tg__shape_text(a).s, ta ? "ᵀ" : "", tg__shape_text(b).s, tb ? "ᵀ" : "",
                 (long long)ka, (long long)kb);
        return TG_ERR_SHAPE;
    }
    int nb = (ar > br ? ar : br) - 2;
    for (int i = 0; i < nb; i++) {
        int ia = ar - 2 - nb + i, ib = br - 2 - nb + i;
        int64_t da = ia >= 0 ? a->dims[ia] : 1, db = ib >= 0 ? b->dims[ib] : 1;
        if (da != db && da != 1 && db != 1) {
            tg__fail(nd->tape, TG_ERR_SHAPE,
                     "bmm %s·%s: batch dimensions cannot be broadcast: %s · %s (batch axis %d: "
                     "%lld vs %lld)",
                     tg__name_text(a).s, tg__name_text(b).s, tg__shape_text(a).s,
                     tg__shape_text(b).s, i, (long long)da, (long long)db);
            return TG_ERR_SHAPE;
        }
        dims[i] = da == 1 ? db : da;
    }
    dims[nb] = ta ? a->dims[ar - 1] : a->dims[ar - 2];
    dims[nb + 1] = tb ? b->dims[br - 2] : b->dims[br - 1];
    *ndim = nb + 2;
    return TG_OK;
}

/* Runs the body for every output batch (β0, β1) with ia, ib, ic the matrices' element offsets. */
#define BMM_FOR(p, ...)                                                                            \
    for (size_t b0_ = 0, bc_ = 0; b0_ < (p).nb[0]; b0_++)                                          \
        for (size_t b1_ = 0; b1_ < (p).nb[1]; b1_++, bc_++) {                                      \
            size_t ia = (b0_ * (p).sa[0] + b1_ * (p).sa[1]) * (p).a_mat;                           \
            size_t ib = (b0_ * (p).sb[0] + b1_ * (p).sb[1]) * (p).b_mat;                           \
            size_t ic = bc_ * (p).c_mat;                                                           \
            __VA_ARGS__;                                                                           \
        }

static tg_status
bmm_forward(tg_node *nd)
{
    struct bmm_plan p = bmm_plan_of(nd);
    size_t es = tg__dtype_bytes(nd->out->dtype);
    const char *a = nd->in[0]->data, *b = nd->in[1]->data;
    char *c = nd->out->data;
    if (nd->out->size == 0) /* an empty batch axis: the other one may still be huge */
        return TG_OK;
    BMM_FOR(p, {
        if (p.d.k == 0)
            memset(c + ic * es, 0, p.c_mat * es);
        else
            mm_product(nd->out->dtype, nd->attr->trans_a, nd->attr->trans_b, p.d, a + ia * es,
                       b + ib * es, c + ic * es);
    });
    return TG_OK;
}

static tg_status
bmm_vjp(tg_node *nd)
{
    tg_tensor *a = nd->in[0], *b = nd->in[1], *c = nd->out;
    struct bmm_plan p = bmm_plan_of(nd);
    size_t es = tg__dtype_bytes(c->dtype);
    const char *ad = a->data, *bd = b->data, *cg = c->grad;
    char *ag = a->grad, *bg = b->grad;
    if (c->size == 0 || p.d.k == 0) /* nothing to add (see bmm_forward) */
        return TG_OK;
    BMM_FOR(p, {
        mm_vjp_one(c->dtype, nd->attr->trans_a, nd->attr->trans_b, p.d, ad + ia * es,
                   bd + ib * es, cg + ic * es, ag ? ag + ia * es : NULL, false,
                   bg ? bg + ib * es : NULL, false);
    });
    return TG_OK;
}

static tg_status
bmm_jvp(tg_node *nd)
{
    return tg__jvp_multilinear(nd, 2);
}

/* For tg_grad: matmul's rules per batch (tg_bmm), summed over the batches a broadcast operand
 * served (tg__sum_to) */
static tg_tensor *
bmm_vjp_graph(tg_node *nd, int k, tg_tensor *dc)
{
    tg_tape *t = nd->tape;
    tg_tensor *a = nd->in[0], *b = nd->in[1];
    bool ta = nd->attr->trans_a, tb = nd->attr->trans_b;
    tg_tensor *g = k == 0 ? (ta ? tg_bmm(t, b, tb, dc, true) : tg_bmm(t, dc, false, b, !tb))
                          : (tb ? tg_bmm(t, dc, true, a, ta) : tg_bmm(t, a, !ta, dc, false));
    return tg__sum_to(t, g, nd->in[k]);
}

const tg_op tg__op_bmm = {
    .name = "bmm",
    .n_inputs = 2,
    .shape = bmm_shape,
    .forward = bmm_forward,
    .vjp = bmm_vjp,
    .vjp_graph = bmm_vjp_graph,
    .jvp = bmm_jvp,
    .jvp_math = "Ċ[β] = op(Ȧ[β]) op(B[β]) + op(A[β]) op(Ḃ[β])",
    .math = "C[β] = op(A[β]) · op(B[β]) over the last two axes, batch axes broadcast",
    .vjp_math = "dA[β] += dC[β] op(B)ᵀ (transposed back if trans_a);  dB[β] += op(A)ᵀ dC[β]",
    .shapes = "(…, m, k) · (…, k, n) → (broadcast …, m, n)",
};

tg_tensor *
tg_bmm(tg_tape *t, tg_tensor *a, bool trans_a, tg_tensor *b, bool trans_b)
{
    if (!t)
        return NULL;
    struct tg__attr attr = {.trans_a = trans_a, .trans_b = trans_b};
    tg_tensor *in[2] = {a, b};
    return tg__record(t, &tg__op_bmm, in, 2, &attr, NULL);
}
