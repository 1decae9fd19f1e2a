/*
 * Attention: scaled dot-product attention as one fused node.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../kernels/kernels.h"
#include "ops.h"
#include "vmath.h"

/* z[c] = e^(z[c] − shift) in place, in the tile's dtype through vmath.h's vectorized exp (per
 * ISA; the same bits on every path). In float the shift (the row's maximum, or its logsumexp
 * in the VJP) is rounded to float first; that moves every P of the row by the same factor,
 * within 2^-24·|shift| of 1, and the forward's running sum divides it out again. */
TG__VEC_CLONES static void
exp_shifted_f32(float *z, size_t n, double shift)
{
    float s = (float)shift;
    for (size_t c = 0; c < n; c++)
        z[c] = tg__vexpf(z[c] - s);
}
TG__VEC_CLONES static void
exp_shifted_f64(double *z, size_t n, double shift)
{
    for (size_t c = 0; c < n; c++)
        z[c] = tg__vexp(z[c] - shift);
}
#define EXP_SHIFTED(z, n, shift)                                                               \
    _Generic((z), float *: exp_shifted_f32, double *: exp_shifted_f64)(z, n, shift)

/*
 * scaled_dot_product_attention:  O = softmax(c · Q Kᵀ + M) · V   per (batch, head)
 *   Q (T x d), K (S x d), V (S x dv) per head, M an additive mask broadcast to (B, H, T, S)
 *   (-inf: masked), causal: logits with s > t are -inf (top-left aligned, as torch.tril).
 *   With Z = c Q Kᵀ + M and P = softmax(Z) row by row, O = P V, and dO = ∂J/∂O:
 *     dV = Pᵀ dO,  dP = dO Vᵀ,
 *     dZ_ts = P_ts (dP_ts − Σ_s' P_ts' dP_ts') = P_ts (dP_ts − D_t),  D_t = Σ_c dO_tc O_tc
 *     (Σ_s' P_ts' dP_ts' = Σ_c dO_tc Σ_s' P_ts' V_s'c = Σ_c dO_tc O_tc: one dot per row, not
 *     one per logit), dQ = c dZ K,  dK = c dZᵀ Q,  dM += dZ summed over M's broadcast axes.
 *   P is never stored. The forward runs over tiles of TQ query rows and TK keys with the
 *   running softmax: per row the running maximum m and sum l = Σ e^(z − m); a new tile with a
 *   larger maximum m' rescales l and the row of O accumulated so far by e^(m − m'), and at
 *   the end O /= l. The scratch keeps one number per row, lse = m + log l, from which the VJP
 *   recomputes each tile of P exactly: P = e^(Z − lse). A row whose every logit is -inf
 *   (fully masked) has l = 0: its output is 0 and lse = -inf, and the VJP takes its P as 0
 *   (not e^(-inf − (-inf)) = NaN), so all its gradients are 0.
 *   Parts are sets of (batch, head) pairs, a fixed number of them whatever the thread count,
 *   each with its own two tiles in the scratch (see sdpa_scratch). Products run on the GEMM
 *   kernels; row statistics are in double.
 *   JVP: Ż = c (Q̇ Kᵀ + Q K̇ᵀ) + Ṁ,  Ṗ_ts = P_ts (Ż_ts − r_t) with r_t = Σ_s P_ts Ż_ts,
 *     Ȯ = Ṗ V + P V̇ = (P ⊙ Ż) V − r O + P V̇   (Σ_s P_ts r_t V_s = r_t O_t).
 *   The second form needs r only at the end, so one sweep over the key tiles does it, as the
 *   forward does: per tile P is recomputed from the saved lse (0 on a fully masked row, so its
 *   tangent is 0), W = P ⊙ Ż is formed in place of Ż, r += rowsum(W) in double, and Ȯ += W V_j
 *   + P V̇_j; after the last tile Ȯ −= r O. Terms whose tangents are all NULL are skipped (no
 *   Ż without a tangent of Q, K or M; no P V̇ without V̇).
 */
/* attr: scale = c (resolved), causal */
#define SDPA_TQ 64       /* query rows per tile */
#define SDPA_TK 64       /* keys per tile */
#define SDPA_MAX_PARTS 8 /* parts (and tile pairs in the scratch) at most; <= TG_GEMM_CALLER_PARTS */

struct sdpa {
    size_t b, h, t, s, d, dv;
    size_t tq, tk;     /* tile sizes: min(T, SDPA_TQ), min(S, SDPA_TK) */
    size_t ms[4];      /* the mask's element strides along (B, H, T, S); 0 where broadcast */
    size_t grain;      /* (batch, head) pairs per part */
    size_t part_bytes; /* scratch per part */
    bool causal, f64;
    double scale;
    tg_tensor *q, *k, *v, *mask, *out;
};

static struct sdpa
sdpa_of(const tg_node *nd)
{
    struct sdpa a;
    memset(&a, 0, sizeof a);
    a.q = nd->in[0], a.k = nd->in[1], a.v = nd->in[2];
    a.mask = nd->n_in > 3 ? nd->in[3] : NULL;
    a.out = nd->out;
    int r = a.q->ndim;
    a.b = (size_t)a.q->dims[0];
    a.h = r == 4 ? (size_t)a.q->dims[1] : 1;
    a.t = (size_t)a.q->dims[r - 2], a.d = (size_t)a.q->dims[r - 1];
    a.s = (size_t)a.k->dims[r - 2], a.dv = (size_t)a.v->dims[r - 1];
    a.tq = a.t < SDPA_TQ ? a.t : SDPA_TQ;
    a.tk = a.s < SDPA_TK ? a.s : SDPA_TK;
    if (a.mask) {
        /* the mask's axes aligned from the end with (B, [H], T, S); rank 3 has no H */
        size_t stride = 1;
        for (int i = a.mask->ndim - 1; i >= 0; i--) {
            int from_end = a.mask->ndim - 1 - i;
            int axis = from_end < 2 ? 3 - from_end : (r == 4 ? 3 - from_end : 0);
            a.ms[axis] = a.mask->dims[i] == 1 ? 0 : stride;
            stride *= (size_t)a.mask->dims[i];
        }
    }
    size_t bh = a.b * a.h;
    a.grain = bh > SDPA_MAX_PARTS ? (bh + SDPA_MAX_PARTS - 1) / SDPA_MAX_PARTS : 1;
    a.part_bytes = 3 * a.tq * sizeof(double) + 2 * a.tq * a.tk * tg__dtype_bytes(a.q->dtype);
    a.part_bytes = (a.part_bytes + 63) / 64 * 64;
    a.causal = nd->attr->causal;
    a.f64 = a.q->dtype == TG_F64;
    a.scale = nd->attr->scale;
    return a;
}

/* lse (B·H·T doubles), then for each part: m, l, D (TQ doubles each) and two TQ x TK tiles
 * (the logits/probabilities and dP/dZ). */
static size_t
sdpa_lse_bytes(const struct sdpa *a)
{
    return (a->b * a->h * a->t * sizeof(double) + 63) / 64 * 64;
}

static size_t
sdpa_scratch(const tg_node *nd)
{
    struct sdpa a = sdpa_of(nd);
    size_t bh = a.b * a.h;
    return sdpa_lse_bytes(&a) + tg__parallel_chunks(bh, a.grain) * a.part_bytes;
}

static tg_status
sdpa_shape(tg_node *nd, int *ndim, int64_t *dims)
{
    const tg_tensor *q = nd->in[0], *v = nd->in[2];
    *ndim = q->ndim;
    memcpy(dims, q->dims, (size_t)q->ndim * sizeof *dims);
    dims[q->ndim - 1] = v->dims[v->ndim - 1];
    return TG_OK;
}

static void
gemm(bool f64, bool ta, bool tb, size_t m, size_t n, size_t k, double alpha, const void *a,
     size_t lda, const void *b, size_t ldb, double beta, void *c, size_t ldc)
{
    if (f64)
        tg__gemm_f64(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    else
        tg__gemm_f32(ta, tb, m, n, k, (float)alpha, a, lda, b, ldb, (float)beta, c, ldc);
}

struct sdpa_job {
    tg_node *nd;
    struct sdpa a;
    size_t grain; /* the VJP may run as one part (see sdpa_vjp) */
};

/* The logits Z = c Q_i K_jᵀ + M (+ the causal -inf) of the tile of query rows [i0, i0 + tq)
 * and keys [j0, j0 + tk) of pair bh, into z (ld tk). */
#define SDPA_LOGITS(T, a, bh, i0, tq, j0, tk, z)                                                   \
    do {                                                                                           \
        const T *q_ = (const T *)(a).q->data + (bh) * (a).t * (a).d;                               \
        const T *k_ = (const T *)(a).k->data + (bh) * (a).s * (a).d;                               \
        gemm((a).f64, false, true, tq, tk, (a).d, (a).scale, q_ + (i0) * (a).d, (a).d,            \
             k_ + (j0) * (a).d, (a).d, 0, z, tk);                                                  \
        if ((a).mask) {                                                                            \
            const T *m_ = (const T *)(a).mask->data + (bh) / (a).h * (a).ms[0] +                   \
                          (bh) % (a).h * (a).ms[1];                                                \
            for (size_t r_ = 0; r_ < (tq); r_++)                                                   \
                for (size_t c_ = 0; c_ < (tk); c_++)                                               \
                    (z)[r_ * (tk) + c_] += m_[((i0) + r_) * (a).ms[2] + ((j0) + c_) * (a).ms[3]];  \
        }                                                                                          \
        if ((a).causal)                                                                            \
            for (size_t r_ = 0; r_ < (tq); r_++)                                                   \
                for (size_t c_ = (i0) + r_ + 1 > (j0) ? (i0) + r_ + 1 - (j0) : 0; c_ < (tk);     \
                     c_++)                                                                         \
                    (z)[r_ * (tk) + c_] = (T)-INFINITY;                                            \
    } while (0)

static void
sdpa_forward_part(size_t begin, size_t end, void *ctx)
{
    struct sdpa_job *j = ctx;
    struct sdpa a = j->a;
    char *scratch = j->nd->scratch;
    double *lse_all = (double *)scratch;
    double *m = (double *)(scratch + sdpa_lse_bytes(&a) + begin / j->grain * a.part_bytes);
    double *l = m + a.tq;
    tg__gemm_caller_part(begin / j->grain);
    TG__DISPATCH(a.out->dtype, T, {
        T *z = (T *)(l + 2 * a.tq);
        for (size_t bh = begin; bh < end; bh++) {
            const T *v = (const T *)a.v->data + bh * a.s * a.dv;
            T *o = (T *)a.out->data + bh * a.t * a.dv;
            double *lse = lse_all + bh * a.t;
            for (size_t i0 = 0; i0 < a.t; i0 += a.tq) {
                size_t tq = a.t - i0 < a.tq ? a.t - i0 : a.tq;
                for (size_t r = 0; r < tq; r++)
                    m[r] = -INFINITY, l[r] = 0;
                memset(o + i0 * a.dv, 0, tq * a.dv * sizeof(T));
                for (size_t j0 = 0; j0 < a.s; j0 += a.tk) {
                    if (a.causal && j0 > i0 + tq - 1)
                        break; /* every key from here on is after every row's position */
                    size_t tk = a.s - j0 < a.tk ? a.s - j0 : a.tk;
                    SDPA_LOGITS(T, a, bh, i0, tq, j0, tk, z);
                    for (size_t r = 0; r < tq; r++) {
                        T *zr = z + r * tk;
                        double mx = m[r];
                        for (size_t c = 0; c < tk; c++)
                            mx = (double)zr[c] > mx ? (double)zr[c] : mx;
                        if (mx == -INFINITY) { /* nothing unmasked in the row yet */
                            memset(zr, 0, tk * sizeof(T));
                            continue;
                        }
                        EXP_SHIFTED(zr, tk, mx);
                        double sum = 0;
                        for (size_t c = 0; c < tk; c++)
                            sum += zr[c];
                        double rescale = exp(m[r] - mx); /* 0 when m was -inf */
                        if (rescale != 1) {
                            T *orow = o + (i0 + r) * a.dv;
                            for (size_t c = 0; c < a.dv; c++)
                                orow[c] = (T)(orow[c] * rescale);
                        }
                        l[r] = l[r] * rescale + sum;
                        m[r] = mx;
                    }
                    gemm(a.f64, false, false, tq, a.dv, tk, 1, z, tk, v + j0 * a.dv, a.dv, 1,
                         o + i0 * a.dv, a.dv);
                }
                for (size_t r = 0; r < tq; r++) {
                    T *orow = o + (i0 + r) * a.dv;
                    if (l[r] == 0) { /* fully masked: output 0 (it already is) */
                        lse[i0 + r] = -INFINITY;
                        continue;
                    }
                    double inv = 1 / l[r];
                    for (size_t c = 0; c < a.dv; c++)
                        orow[c] = (T)(orow[c] * inv);
                    lse[i0 + r] = m[r] + log(l[r]);
                }
            }
        }
    });
    tg__gemm_caller_part(SIZE_MAX);
}

static tg_status
sdpa_forward(tg_node *nd)
{
    struct sdpa_job j = {nd, sdpa_of(nd), 0};
    j.grain = j.a.grain;
    tg__parallel_for(j.a.b * j.a.h, j.grain, sdpa_forward_part, &j);
    return TG_OK;
}

static void
sdpa_vjp_part(size_t begin, size_t end, void *ctx)
{
    struct sdpa_job *j = ctx;
    struct sdpa a = j->a;
    char *scratch = j->nd->scratch;
    const double *lse_all = (const double *)scratch;
    double *dsum = (double *)(scratch + sdpa_lse_bytes(&a) + begin / j->grain * a.part_bytes);
    bool want_dz = a.q->grad || a.k->grad || (a.mask && a.mask->grad);
    tg__gemm_caller_part(begin / j->grain);
    TG__DISPATCH(a.out->dtype, T, {
        T *p = (T *)(dsum + 3 * a.tq), *dz = p + a.tq * a.tk;
        for (size_t bh = begin; bh < end; bh++) {
            const T *q = (const T *)a.q->data + bh * a.t * a.d;
            const T *k = (const T *)a.k->data + bh * a.s * a.d;
            const T *v = (const T *)a.v->data + bh * a.s * a.dv;
            const T *o = (const T *)a.out->data + bh * a.t * a.dv;
            const T *dout = (const T *)a.out->grad + bh * a.t * a.dv;
            T *dq = a.q->grad ? (T *)a.q->grad + bh * a.t * a.d : NULL;
            T *dk = a.k->grad ? (T *)a.k->grad + bh * a.s * a.d : NULL;
            T *dv = a.v->grad ? (T *)a.v->grad + bh * a.s * a.dv : NULL;
            T *dmask = a.mask && a.mask->grad
                           ? (T *)a.mask->grad + bh / a.h * a.ms[0] + bh % a.h * a.ms[1]
                           : NULL;
            const double *lse = lse_all + bh * a.t;
            for (size_t i0 = 0; i0 < a.t; i0 += a.tq) {
                size_t tq = a.t - i0 < a.tq ? a.t - i0 : a.tq;
                for (size_t r = 0; r < tq; r++) {
                    double acc = 0;
                    for (size_t c = 0; c < a.dv; c++)
                        acc += (double)dout[(i0 + r) * a.dv + c] * (double)o[(i0 + r) * a.dv + c];
                    dsum[r] = acc;
                }
                for (size_t j0 = 0; j0 < a.s; j0 += a.tk) {
                    if (a.causal && j0 > i0 + tq - 1)
                        break;
                    size_t tk = a.s - j0 < a.tk ? a.s - j0 : a.tk;
                    SDPA_LOGITS(T, a, bh, i0, tq, j0, tk, p);
                    for (size_t r = 0; r < tq; r++) {
                        T *pr = p + r * tk;
                        double lr = lse[i0 + r];
                        if (lr == -INFINITY) { /* fully masked row: P = 0 */
                            memset(pr, 0, tk * sizeof(T));
                            continue;
                        }
                        EXP_SHIFTED(pr, tk, lr);
                    }
                    if (dv) /* dV_j += P_ijᵀ dO_i */
                        gemm(a.f64, true, false, tk, a.dv, tq, 1, p, tk, dout + i0 * a.dv, a.dv,
                             1, dv + j0 * a.dv, a.dv);
                    if (!want_dz)
                        continue;
                    /* dP_ij = dO_i V_jᵀ, then dZ = P ⊙ (dP − D) in place */
                    gemm(a.f64, false, true, tq, tk, a.dv, 1, dout + i0 * a.dv, a.dv,
                         v + j0 * a.dv, a.dv, 0, dz, tk);
                    for (size_t r = 0; r < tq; r++)
                        for (size_t c = 0; c < tk; c++)
                            dz[r * tk + c] =
                                (T)((double)p[r * tk + c] * ((double)dz[r * tk + c] - dsum[r]));
                    if (dq) /* dQ_i += c dZ K_j */
                        gemm(a.f64, false, false, tq, a.d, tk, a.scale, dz, tk, k + j0 * a.d,
                             a.d, 1, dq + i0 * a.d, a.d);
                    if (dk) /* dK_j += c dZᵀ Q_i */
                        gemm(a.f64, true, false, tk, a.d, tq, a.scale, dz, tk, q + i0 * a.d, a.d,
                             1, dk + j0 * a.d, a.d);
                    if (dmask)
                        for (size_t r = 0; r < tq; r++)
                            for (size_t c = 0; c < tk; c++)
                                dmask[(i0 + r) * a.ms[2] + (j0 + c) * a.ms[3]] += dz[r * tk + c];
                }
            }
        }
    });
    tg__gemm_caller_part(SIZE_MAX);
}

static tg_status
sdpa_vjp(tg_node *nd)
{
    struct sdpa_job j = {nd, sdpa_of(nd), 0};
    size_t bh = j.a.b * j.a.h;
    j.grain = j.a.grain;
    /* A mask gradient shared by several (batch, head) pairs is summed over them in pair order,
     * in one part: parts running at once would add into the same elements. */
    if (j.a.mask && j.a.mask->grad && ((j.a.b > 1 && !j.a.ms[0]) || (j.a.h > 1 && !j.a.ms[1])))
        j.grain = bh;
    if (!j.a.q->grad && !j.a.k->grad && !j.a.v->grad && !(j.a.mask && j.a.mask->grad))
        return TG_OK;
    tg__parallel_for(bh, j.grain, sdpa_vjp_part, &j);
    return TG_OK;
}

/* The JVP's own scratch (tg__jvp_scratch), one block per part: r (TQ doubles), then the P
 * tile and the Ż / W tile (TQ x TK each). */
struct sdpa_jvp_job {
    struct sdpa a;
    const double *lse_all; /* the forward's, in the node's scratch (read only) */
    char *scratch;
    size_t part_bytes;
};

static size_t
sdpa_jvp_part_bytes(const struct sdpa *a)
{
    size_t bytes = a->tq * sizeof(double) + 2 * a->tq * a->tk * tg__dtype_bytes(a->q->dtype);
    return (bytes + 63) / 64 * 64;
}

static void
sdpa_jvp_part(size_t begin, size_t end, void *ctx)
{
    struct sdpa_jvp_job *j = ctx;
    struct sdpa a = j->a;
    double *rsum = (double *)(j->scratch + begin / a.grain * j->part_bytes);
    bool logit_tangent = a.q->tangent || a.k->tangent || (a.mask && a.mask->tangent);
    tg__gemm_caller_part(begin / a.grain);
    TG__DISPATCH(a.out->dtype, T, {
        T *p = (T *)(rsum + a.tq), *w = p + a.tq * a.tk;
        for (size_t bh = begin; bh < end; bh++) {
            const T *q = (const T *)a.q->data + bh * a.t * a.d;
            const T *k = (const T *)a.k->data + bh * a.s * a.d;
            const T *v = (const T *)a.v->data + bh * a.s * a.dv;
            const T *o = (const T *)a.out->data + bh * a.t * a.dv;
            const T *dotq = a.q->tangent ? (const T *)a.q->tangent + bh * a.t * a.d : NULL;
            const T *dotk = a.k->tangent ? (const T *)a.k->tangent + bh * a.s * a.d : NULL;
            const T *dotv = a.v->tangent ? (const T *)a.v->tangent + bh * a.s * a.dv : NULL;
            const T *dotmask = a.mask && a.mask->tangent ? (const T *)a.mask->tangent +
                                                               bh / a.h * a.ms[0] +
                                                               bh % a.h * a.ms[1]
                                                         : NULL;
            T *doto = (T *)a.out->tangent + bh * a.t * a.dv;
            const double *lse = j->lse_all + bh * a.t;
            for (size_t i0 = 0; i0 < a.t; i0 += a.tq) {
                size_t tq = a.t - i0 < a.tq ? a.t - i0 : a.tq;
                for (size_t r = 0; r < tq; r++)
                    rsum[r] = 0;
                for (size_t j0 = 0; j0 < a.s; j0 += a.tk) {
                    if (a.causal && j0 > i0 + tq - 1)
                        break;
                    size_t tk = a.s - j0 < a.tk ? a.s - j0 : a.tk;
                    SDPA_LOGITS(T, a, bh, i0, tq, j0, tk, p);
                    for (size_t r = 0; r < tq; r++) {
                        T *pr = p + r * tk;
                        double lr = lse[i0 + r];
                        if (lr == -INFINITY) { /* fully masked row: P = 0 */
                            memset(pr, 0, tk * sizeof(T));
                            continue;
                        }
                        EXP_SHIFTED(pr, tk, lr);
                    }
                    if (dotv) /* Ȯ_i += P_ij V̇_j */
                        gemm(a.f64, false, false, tq, a.dv, tk, 1, p, tk, dotv + j0 * a.dv, a.dv,
                             1, doto + i0 * a.dv, a.dv);
                    if (!logit_tangent)
                        continue;
                    /* Ż_ij = c (Q̇_i K_jᵀ + Q_i K̇_jᵀ) + Ṁ_ij */
                    double beta = 0;
                    if (dotq) {
                        gemm(a.f64, false, true, tq, tk, a.d, a.scale, dotq + i0 * a.d, a.d,
                             k + j0 * a.d, a.d, 0, w, tk);
                        beta = 1;
                    }
                    if (dotk) {
                        gemm(a.f64, false, true, tq, tk, a.d, a.scale, q + i0 * a.d, a.d,
                             dotk + j0 * a.d, a.d, beta, w, tk);
                        beta = 1;
                    }
                    if (beta == 0)
                        memset(w, 0, tq * tk * sizeof(T));
                    if (dotmask)
                        for (size_t r = 0; r < tq; r++)
                            for (size_t c = 0; c < tk; c++)
                                w[r * tk + c] +=
                                    dotmask[(i0 + r) * a.ms[2] + (j0 + c) * a.ms[3]];
                    /* W = P ⊙ Ż in place, r += rowsum(W) */
                    for (size_t r = 0; r < tq; r++) {
                        double acc = 0;
                        for (size_t c = 0; c < tk; c++) {
                            w[r * tk + c] = (T)((double)p[r * tk + c] * (double)w[r * tk + c]);
                            acc += w[r * tk + c];
                        }
                        rsum[r] += acc;
                    }
                    /* Ȯ_i += W V_j */
                    gemm(a.f64, false, false, tq, a.dv, tk, 1, w, tk, v + j0 * a.dv, a.dv, 1,
                         doto + i0 * a.dv, a.dv);
                }
                if (logit_tangent) /* Ȯ_i −= r O_i */
                    for (size_t r = 0; r < tq; r++)
                        for (size_t c = 0; c < a.dv; c++) {
                            size_t at = (i0 + r) * a.dv + c;
                            doto[at] = (T)((double)doto[at] - rsum[r] * (double)o[at]);
                        }
            }
        }
    });
    tg__gemm_caller_part(SIZE_MAX);
}

static tg_status
sdpa_jvp(tg_node *nd)
{
    struct sdpa_jvp_job j = {sdpa_of(nd), nd->scratch, NULL, 0};
    size_t bh = j.a.b * j.a.h;
    if (bh == 0)
        return TG_OK;
    j.part_bytes = sdpa_jvp_part_bytes(&j.a);
    j.scratch = tg__jvp_scratch(nd, tg__parallel_chunks(bh, j.a.grain) * j.part_bytes);
    if (!j.scratch)
        return TG_ERR_NOMEM;
    tg__parallel_for(bh, j.a.grain, sdpa_jvp_part, &j);
    return TG_OK;
}

/* P = softmax(c Q Kᵀ + M + C) recorded with ops, C the causal mask as a constant (-inf where
 * s > t). A row whose logits are all -inf (fully masked) has P = 0 in the forward, where the
 * softmax of the row would be NaN: with a constant 0/1 tensor of the live rows (B, [H], T, 1),
 * such a row's logits are replaced by 0 before the softmax and its P by 0 after (tg_where, so
 * no gradient of any order reaches its logits). Rows are only checked, not changed, when none
 * is fully masked. */
static tg_tensor *
sdpa_probs_graph(tg_node *nd)
{
    tg_tape *t = nd->tape;
    struct sdpa a = sdpa_of(nd);
    int r = a.q->ndim;
    tg_tensor *z = tg_scale(t, tg_bmm(t, a.q, false, a.k, true), a.scale);
    if (a.mask)
        z = tg_add(t, z, a.mask);
    if (a.causal) {
        int64_t ts[2] = {(int64_t)a.t, (int64_t)a.s};
        tg_tensor *c = tg__tensor(tg_tensor_new(t, a.q->dtype, 2, ts, NULL));
        if (c->kind == TG__KIND_NIL)
            return c;
        TG__DISPATCH(c->dtype, T, {
            T *cv = c->data;
            for (size_t i = 0; i < a.t; i++)
                for (size_t j = i + 1; j < a.s; j++)
                    cv[i * a.s + j] = (T)-INFINITY;
        });
        z = tg_add(t, z, c);
    }
    tg_tensor *zt = tg__tensor(z);
    if (zt->kind == TG__KIND_NIL)
        return zt;
    int64_t row_dims[4];
    memcpy(row_dims, zt->dims, (size_t)r * sizeof *row_dims);
    row_dims[r - 1] = 1;
    tg_tensor *live = tg__tensor(tg_tensor_new(t, a.q->dtype, r, row_dims, NULL));
    if (live->kind == TG__KIND_NIL)
        return live;
    size_t dead = 0;
    TG__DISPATCH(zt->dtype, T, {
        const T *zv = zt->data;
        T *lv = live->data;
        for (size_t row = 0; row < live->size; row++) {
            size_t c = 0;
            while (c < a.s && zv[row * a.s + c] == (T)-INFINITY)
                c++;
            lv[row] = c < a.s;
            dead += c == a.s;
        }
    });
    if (!dead)
        return tg_softmax(t, z, r - 1);
    tg_tensor *zero = tg__constant(t, a.q->dtype, 0);
    return tg_where(t, live, tg_softmax(t, tg_where(t, live, z, zero), r - 1), zero);
}

/* For tg_grad: with P recomputed (sdpa_probs_graph), dV = Pᵀ dO, dP = dO Vᵀ,
 * dZ = P ⊙ (dP − rowsum(dP ⊙ P)), dQ = c dZ K, dK = c dZᵀ Q, dM = dZ summed to M's shape */
static tg_tensor *
sdpa_vjp_graph(tg_node *nd, int k, tg_tensor *dout)
{
    tg_tape *t = nd->tape;
    tg_tensor *q = nd->in[0], *key = nd->in[1], *v = nd->in[2];
    double c = nd->attr->scale;
    int last = q->ndim - 1;
    tg_tensor *p = sdpa_probs_graph(nd);
    if (k == 2)
        return tg_bmm(t, p, true, dout, false);
    tg_tensor *dp = tg_bmm(t, dout, false, v, true);
    tg_tensor *rowsum = tg_sum_axes(t, tg_mul(t, dp, p), &last, 1, true);
    tg_tensor *dz = tg_mul(t, p, tg_sub(t, dp, rowsum));
    if (k == 0)
        return tg_scale(t, tg_bmm(t, dz, false, key, false), c);
    if (k == 1)
        return tg_scale(t, tg_bmm(t, dz, true, q, false), c);
    return tg__sum_to(t, dz, nd->in[3]);
}

const tg_op tg__op_scaled_dot_product_attention = {
    .name = "scaled_dot_product_attention",
    .n_inputs = TG_VARIADIC, /* q, k, v, then the additive mask when given */
    .shape = sdpa_shape,
    .forward = sdpa_forward,
    .vjp = sdpa_vjp,
    .vjp_graph = sdpa_vjp_graph,
    .jvp = sdpa_jvp,
    .jvp_math = "Ż = c (Q̇ Kᵀ + Q K̇ᵀ) + Ṁ, P from the saved logsumexp: Ȯ = (P ⊙ Ż) V − "
                "rowsum(P ⊙ Ż) ⊙ O + P V̇",
    .scratch_size = sdpa_scratch,
    .math = "O = softmax(c Q Kᵀ + M) V per (batch, head), M an additive mask (broadcast), "
            "causal: logits with s > t masked",
    .vjp_math = "P recomputed from the saved logsumexp: dV += Pᵀ dO; dZ = P ⊙ (dO Vᵀ − "
                "rowsum(dO ⊙ O)); dQ += c dZ K; dK += c dZᵀ Q; dM += dZ over its broadcast axes",
    .shapes = "q (B,H,T,d), k (B,H,S,d), v (B,H,S,dv) [or rank 3 without H], mask "
              "broadcasting to (B,H,T,S) -> (B,H,T,dv)",
};

tg_tensor *
tg_scaled_dot_product_attention(tg_tape *t, tg_tensor *q, tg_tensor *k, tg_tensor *v,
                                tg_tensor *attn_mask, bool is_causal, double scale)
{
    static const char op[] = "scaled_dot_product_attention";
    if (!t)
        return NULL;
    if (t->status != TG_OK || !(q = tg__operand(t, op, "q", q)) ||
        !(k = tg__operand(t, op, "k", k)) || !(v = tg__operand(t, op, "v", v)) ||
        (attn_mask && !(attn_mask = tg__operand(t, op, "attn_mask", attn_mask))))
        return &t->nil;
    const tg_tensor *m = attn_mask;
    if (q->dtype != k->dtype || q->dtype != v->dtype || (m && m->dtype != q->dtype))
        return tg__fail(t, TG_ERR_DTYPE, "%s: dtypes differ: q %s %s, k %s %s, v %s %s%s%s%s%s",
                        op, tg__shape_text(q).s, tg_dtype_name(q->dtype), tg__shape_text(k).s,
                        tg_dtype_name(k->dtype), tg__shape_text(v).s, tg_dtype_name(v->dtype),
                        m ? ", attn_mask " : "", m ? tg__shape_text(m).s : "", m ? " " : "",
                        m ? tg_dtype_name(m->dtype) : "");
    int r = q->ndim;
    if ((r != 3 && r != 4) || k->ndim != r || v->ndim != r)
        return tg__fail(t, TG_ERR_SHAPE,
                        "%s q %s, k %s, v %s: expected q (B, H, T, d), k (B, H, S, d), v (B, H, "
                        "S, dv), all of rank 4 (or all of rank 3 without H)",
                        op, tg__shape_text(q).s, tg__shape_text(k).s, tg__shape_text(v).s);
    bool agree = k->dims[r - 1] == q->dims[r - 1] && v->dims[r - 2] == k->dims[r - 2];
    for (int i = 0; i < r - 2; i++)
        agree = agree && k->dims[i] == q->dims[i] && v->dims[i] == q->dims[i];
    if (!agree)
        return tg__fail(t, TG_ERR_SHAPE,
                        "%s q %s, k %s, v %s: q and k must agree in batch, heads and d, k and "
                        "v in batch, heads and S",
                        op, tg__shape_text(q).s, tg__shape_text(k).s, tg__shape_text(v).s);
    int64_t tlen = q->dims[r - 2], slen = k->dims[r - 2], d = q->dims[r - 1];
    if (tlen == 0 || slen == 0 || d == 0 || v->dims[r - 1] == 0)
        return tg__fail(t, TG_ERR_SHAPE,
                        "%s q %s, k %s, v %s: sequence lengths T, S and feature sizes d, dv "
                        "must be >= 1 (a sequence of length 0 has nothing to attend to)",
                        op, tg__shape_text(q).s, tg__shape_text(k).s, tg__shape_text(v).s);
    if (m) {
        /* the logits' shape (B, [H], T, S) */
        int64_t z[4] = {q->dims[0], q->dims[1], q->dims[2], r == 4 ? q->dims[3] : 0};
        z[r - 1] = slen;
        bool fits = m->ndim >= 1 && m->ndim <= r;
        for (int i = 0; fits && i < m->ndim; i++) {
            int64_t want = z[r - m->ndim + i];
            fits = m->dims[i] == want || m->dims[i] == 1;
        }
        if (!fits) {
            char want[96];
            if (r == 4)
                snprintf(want, sizeof want, "%" PRId64 "x%" PRId64 "x%" PRId64 "x%" PRId64, z[0],
                         z[1], z[2], z[3]);
            else
                snprintf(want, sizeof want, "%" PRId64 "x%" PRId64 "x%" PRId64, z[0], z[1], z[2]);
            return tg__fail(t, TG_ERR_SHAPE,
                            "%s q %s, k %s: attn_mask %s does not broadcast to the logits' "
                            "shape (%s)",
                            op, tg__shape_text(q).s, tg__shape_text(k).s, tg__shape_text(m).s,
                            want);
        }
    }
    if (scale == 0 || isnan(scale))
        scale = 1 / sqrt((double)d);
    if (!isfinite(scale))
        return tg__fail(t, TG_ERR_ARG, "%s q %s: scale = %g must be finite (0 or NAN: 1/√d)", op,
                        tg__shape_text(q).s, scale);
    struct tg__attr attr = {.scale = scale, .causal = is_causal};
    tg_tensor *in[4] = {q, k, v, attn_mask};
    return tg__record(t, &tg__op_scaled_dot_product_attention, in, attn_mask ? 4 : 3, &attr,
                      NULL);
}
