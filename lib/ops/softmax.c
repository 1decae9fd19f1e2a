/*
 * The softmax family: softmax and log_softmax along one axis, logsumexp over a set of axes.
 *
 * Stability: every form subtracts the maximum m first, so e^(x - m) <= 1 never overflows and
 * the largest term is exactly 1 (the sum is >= 1, its log well conditioned):
 *   logsumexp(x) = m + log Σ e^(x - m),   log_softmax(x) = (x - m) - log Σ e^(x - m),
 *   softmax(x) = e^(x - m) / Σ e^(x - m).
 * A non-finite m (all -inf, or a +inf) shifts by 0 instead, so that all -inf gives
 * logsumexp = -inf as PyTorch does, not -inf - (-inf) = NaN.
 *
 * Speed: the common case, the reduced axis last (rows of contiguous elements), runs one row at
 * a time in the node's dtype with vmath.h's e^x in vectorized loops (lane-wise max, 16-lane
 * sum tree, so the order is fixed by the row length alone), rows split across threads in
 * whole rows (tg__parallel_for): bit-identical for any thread count. A row of up to ~64 K
 * floats stays in L2 across the passes, so memory sees about one read of x and one write of
 * y. Other axes (x seen as outer x len x inner) take scalar strided loops in double.
 */
#include <math.h>
#include <string.h>

#include "../kernels/kernels.h"
#include "loops.h"
#include "ops.h"
#include "vmath.h"

#define VEXP(x) _Generic((x), float: tg__vexpf_fma, double: tg__vexp)(x)
#define LOG(x) _Generic((x), float: logf, double: log)(x)

/* x around the axis: (outer x len x inner) */
struct sm {
    size_t outer, len, inner;
};

static struct sm
sm_of(const tg_tensor *x, int axis)
{
    struct sm s = {1, (size_t)x->dims[axis], 1};
    for (int i = 0; i < axis; i++)
        s.outer *= (size_t)x->dims[i];
    for (int i = axis + 1; i < x->ndim; i++)
        s.inner *= (size_t)x->dims[i];
    return s;
}

/*
 * Row kernels, by dtype:
 *   rmax:     max over x[0 … n) (lane-wise; a NaN may or may not win, the sum makes it NaN)
 *   rexpsum:  Σ e^(x[i] - m), lane tree; with y, also y[i] = e^(x[i] - m)
 *   rscale:   y[i] *= c
 *   rlogsm:   y[i] = (x[i] - m) - L
 *   rdot:     Σ a[i] b[i], lane tree
 *   rsm_vjp:  dx[i] += y[i] (dy[i] - s)           (softmax)
 *   rlsm_vjp: dx[i] += dy[i] - e^(y[i]) s          (log_softmax)
 *   rlse_vjp: dx[i] += g e^(x[i] - y)              (logsumexp)
 * (the VJPs write instead of adding when `set`: dx is fresh, tg__grad_take_fresh)
 * and for forward mode:
 *   rsm_jvp:  yd[i] = y[i] (xd[i] - s)             (softmax)
 *   rexpdot:  Σ e^(a[i]) b[i], lane tree            (log_softmax: e^y is the softmax)
 *   rminus:   yd[i] = xd[i] - s                     (log_softmax)
 *   rlse_dot: Σ e^(x[i] - m) b[i], lane tree        (logsumexp, m = y)
 */
#define SM_KERNELS(T, SFX)                                                                         \
    TG__VEC_CLONES static T rmax_##SFX(const T *restrict x, size_t n)                              \
    {                                                                                              \
        T l[TG__LANES];                                                                            \
        for (size_t k = 0; k < TG__LANES; k++)                                                     \
            l[k] = -(T)INFINITY;                                                                   \
        size_t base = 0;                                                                           \
        for (; base + TG__LANES <= n; base += TG__LANES)                                           \
            for (size_t k = 0; k < TG__LANES; k++)                                                 \
                l[k] = x[base + k] > l[k] ? x[base + k] : l[k];                                    \
        T m = -(T)INFINITY;                                                                        \
        for (size_t k = 0; k < TG__LANES; k++)                                                     \
            m = l[k] > m ? l[k] : m;                                                               \
        for (size_t i = base; i < n; i++)                                                          \
            m = x[i] > m ? x[i] : m;                                                               \
        return m;                                                                                  \
    }                                                                                              \
    TG__VEC_CLONES static T rexpsum_##SFX(const T *restrict x, T *restrict y, T m, size_t n)       \
    {                                                                                              \
        T l[TG__LANES] = {0};                                                                      \
        size_t base = 0;                                                                           \
        for (; base + TG__LANES <= n; base += TG__LANES)                                           \
            for (size_t k = 0; k < TG__LANES; k++) {                                               \
                T e = VEXP(x[base + k] - m);                                                       \
                y[base + k] = e;                                                                   \
                l[k] += e;                                                                         \
            }                                                                                      \
        TG__FOLD_LANES(l);                                                                         \
        T s = l[0];                                                                                \
        for (size_t i = base; i < n; i++) {                                                        \
            T e = VEXP(x[i] - m);                                                                  \
            y[i] = e;                                                                              \
            s += e;                                                                                \
        }                                                                                          \
        return s;                                                                                  \
    }                                                                                              \
    TG__DEFINE_LANE_SUM(rexpsum_only_##SFX, T, VEXP(x[i] - m), const T *restrict x, T m)           \
    TG__DEFINE_LANE_SUM(rdot_##SFX, T, a[i] * b[i], const T *restrict a, const T *restrict b)      \
    TG__DEFINE_LANE_SUM(rsum_##SFX, T, a[i], const T *restrict a)                                  \
    TG__VEC_CLONES static void rscale_##SFX(T *restrict y, T c, size_t n)                          \
    {                                                                                              \
        for (size_t i = 0; i < n; i++)                                                             \
            y[i] *= c;                                                                             \
    }                                                                                              \
    TG__VEC_CLONES static void rlogsm_##SFX(const T *restrict x, T *restrict y, T m, T L,          \
                                            size_t n)                                              \
    {                                                                                              \
        for (size_t i = 0; i < n; i++)                                                             \
            y[i] = (x[i] - m) - L;                                                                 \
    }                                                                                              \
    TG__VEC_CLONES static void rsm_vjp_##SFX(T *restrict dx, const T *restrict y,                  \
                                             const T *restrict dy, T s, size_t n, bool set)        \
    {                                                                                              \
        if (set)                                                                                   \
            for (size_t i = 0; i < n; i++)                                                         \
                dx[i] = y[i] * (dy[i] - s);                                                        \
        else                                                                                       \
            for (size_t i = 0; i < n; i++)                                                         \
                dx[i] += y[i] * (dy[i] - s);                                                       \
    }                                                                                              \
    TG__VEC_CLONES static void rlsm_vjp_##SFX(T *restrict dx, const T *restrict y,                 \
                                              const T *restrict dy, T s, size_t n, bool set)       \
    {                                                                                              \
        if (set)                                                                                   \
            for (size_t i = 0; i < n; i++)                                                         \
                dx[i] = dy[i] - VEXP(y[i]) * s;                                                    \
        else                                                                                       \
            for (size_t i = 0; i < n; i++)                                                         \
                dx[i] += dy[i] - VEXP(y[i]) * s;                                                   \
    }                                                                                              \
    TG__VEC_CLONES static void rlse_vjp_##SFX(T *restrict dx, const T *restrict x, T y, T g,       \
                                              size_t n, bool set)                                  \
    {                                                                                              \
        if (set)                                                                                   \
            for (size_t i = 0; i < n; i++)                                                         \
                dx[i] = g * VEXP(x[i] - y);                                                        \
        else                                                                                       \
            for (size_t i = 0; i < n; i++)                                                         \
                dx[i] += g * VEXP(x[i] - y);                                                       \
    }                                                                                              \
    TG__VEC_CLONES static void rsm_jvp_##SFX(T *restrict yd, const T *restrict y,                  \
                                             const T *restrict xd, T s, size_t n)                  \
    {                                                                                              \
        for (size_t i = 0; i < n; i++)                                                             \
            yd[i] = y[i] * (xd[i] - s);                                                            \
    }                                                                                              \
    TG__DEFINE_LANE_SUM(rexpdot_##SFX, T, VEXP(a[i]) * b[i], const T *restrict a,                  \
                        const T *restrict b)                                                       \
    TG__VEC_CLONES static void rminus_##SFX(T *restrict yd, const T *restrict xd, T s, size_t n)   \
    {                                                                                              \
        for (size_t i = 0; i < n; i++)                                                             \
            yd[i] = xd[i] - s;                                                                     \
    }                                                                                              \
    TG__DEFINE_LANE_SUM(rlse_dot_##SFX, T, VEXP(x[i] - m) * b[i], const T *restrict x, T m,        \
                        const T *restrict b)

SM_KERNELS(float, f32)
SM_KERNELS(double, f64)

/* The shift: m when finite, else 0 (see the top of the file). */
#define SHIFT(m) (isfinite(m) ? (m) : 0)

enum sm_kind { SOFTMAX, LOG_SOFTMAX, LSE };

struct sm_job {
    const tg_node *nd;
    enum sm_kind kind;
    size_t len;
    bool set; /* VJP: dx is fresh, write it */
};

/* Rows [r0, r1): forward of the kind. */
#define SM_ROWS(T, SFX)                                                                            \
    static void sm_fwd_rows_##SFX(size_t r0, size_t r1, void *vctx)                               \
    {                                                                                              \
        const struct sm_job *j = vctx;                                                             \
        size_t n = j->len;                                                                         \
        const T *x = j->nd->in[0]->data;                                                           \
        T *y = j->nd->out->data;                                                                   \
        for (size_t r = r0; r < r1; r++) {                                                         \
            const T *xr = x + r * n;                                                               \
            T m = rmax_##SFX(xr, n), sh = SHIFT(m);                                                \
            if (j->kind == SOFTMAX) {                                                              \
                T s = rexpsum_##SFX(xr, y + r * n, sh, n);                                         \
                rscale_##SFX(y + r * n, 1 / s, n);                                                 \
            } else if (j->kind == LOG_SOFTMAX) {                                                   \
                rlogsm_##SFX(xr, y + r * n, sh, LOG(rexpsum_only_##SFX(xr, sh, n)), n);            \
            } else {                                                                               \
                y[r] = sh + LOG(rexpsum_only_##SFX(xr, sh, n));                                    \
            }                                                                                      \
        }                                                                                          \
    }                                                                                              \
    static void sm_vjp_rows_##SFX(size_t r0, size_t r1, void *vctx)                                \
    {                                                                                              \
        const struct sm_job *j = vctx;                                                             \
        size_t n = j->len;                                                                         \
        const T *x = j->nd->in[0]->data, *y = j->nd->out->data, *dy = j->nd->out->grad;            \
        T *dx = j->nd->in[0]->grad;                                                                \
        for (size_t r = r0; r < r1; r++) {                                                         \
            size_t at = r * n;                                                                     \
            if (j->kind == SOFTMAX)                                                                \
                rsm_vjp_##SFX(dx + at, y + at, dy + at, rdot_##SFX(dy + at, y + at, n), n,         \
                              j->set);                                                             \
            else if (j->kind == LOG_SOFTMAX)                                                       \
                rlsm_vjp_##SFX(dx + at, y + at, dy + at, rsum_##SFX(dy + at, n), n, j->set);       \
            else                                                                                   \
                rlse_vjp_##SFX(dx + at, x + at, y[r], dy[r], n, j->set);                           \
        }                                                                                          \
    }                                                                                              \
    static void sm_jvp_rows_##SFX(size_t r0, size_t r1, void *vctx)                                \
    {                                                                                              \
        const struct sm_job *j = vctx;                                                             \
        size_t n = j->len;                                                                         \
        const T *x = j->nd->in[0]->data, *y = j->nd->out->data, *xd = j->nd->in[0]->tangent;       \
        T *yd = j->nd->out->tangent;                                                               \
        for (size_t r = r0; r < r1; r++) {                                                         \
            size_t at = r * n;                                                                     \
            if (j->kind == SOFTMAX)                                                                \
                rsm_jvp_##SFX(yd + at, y + at, xd + at, rdot_##SFX(y + at, xd + at, n), n);        \
            else if (j->kind == LOG_SOFTMAX)                                                       \
                rminus_##SFX(yd + at, xd + at, rexpdot_##SFX(y + at, xd + at, n), n);              \
            else                                                                                   \
                yd[r] = rlse_dot_##SFX(x + at, y[r], xd + at, n);                                  \
        }                                                                                          \
    }

SM_ROWS(float, f32)
SM_ROWS(double, f64)

/* The strided path for softmax / log_softmax along an axis with dimensions after it. */
static void
sm_strided_forward(const tg_node *nd, enum sm_kind kind, struct sm s)
{
    TG__DISPATCH(nd->out->dtype, T, {
        const T *x = nd->in[0]->data;
        T *y = nd->out->data;
        for (size_t o = 0; o < s.outer; o++)
            for (size_t i = 0; i < s.inner; i++) {
                size_t base = o * s.len * s.inner + i;
                double m = -INFINITY, sum = 0;
                for (size_t k = 0; k < s.len; k++)
                    m = (double)x[base + k * s.inner] > m ? (double)x[base + k * s.inner] : m;
                double sh = SHIFT(m);
                for (size_t k = 0; k < s.len; k++)
                    sum += exp((double)x[base + k * s.inner] - sh);
                for (size_t k = 0; k < s.len; k++) {
                    double v = (double)x[base + k * s.inner] - sh;
                    y[base + k * s.inner] = (T)(kind == SOFTMAX ? exp(v) / sum : v - log(sum));
                }
            }
    });
}

static void
sm_strided_vjp(const tg_node *nd, enum sm_kind kind, struct sm s)
{
    TG__DISPATCH(nd->out->dtype, T, {
        const T *y = nd->out->data, *dy = nd->out->grad;
        T *dx = nd->in[0]->grad;
        for (size_t o = 0; o < s.outer; o++)
            for (size_t i = 0; i < s.inner; i++) {
                size_t base = o * s.len * s.inner + i;
                double acc = 0;
                for (size_t k = 0; k < s.len; k++) {
                    size_t at = base + k * s.inner;
                    acc += kind == SOFTMAX ? (double)dy[at] * (double)y[at] : (double)dy[at];
                }
                for (size_t k = 0; k < s.len; k++) {
                    size_t at = base + k * s.inner;
                    dx[at] += (T)(kind == SOFTMAX ? (double)y[at] * ((double)dy[at] - acc)
                                                  : (double)dy[at] - exp((double)y[at]) * acc);
                }
            }
    });
}

/* ẏ along a strided axis: s = Σ_k y_k ẋ_k (softmax) or Σ_k e^(y_k) ẋ_k (log_softmax) in
 * double, then y ⊙ (ẋ - s) or ẋ - s */
static void
sm_strided_jvp(const tg_node *nd, enum sm_kind kind, struct sm s)
{
    TG__DISPATCH(nd->out->dtype, T, {
        const T *y = nd->out->data, *xd = nd->in[0]->tangent;
        T *yd = nd->out->tangent;
        for (size_t o = 0; o < s.outer; o++)
            for (size_t i = 0; i < s.inner; i++) {
                size_t base = o * s.len * s.inner + i;
                double acc = 0;
                for (size_t k = 0; k < s.len; k++) {
                    size_t at = base + k * s.inner;
                    double p = kind == SOFTMAX ? (double)y[at] : exp((double)y[at]);
                    acc += p * (double)xd[at];
                }
                for (size_t k = 0; k < s.len; k++) {
                    size_t at = base + k * s.inner;
                    yd[at] = (T)(kind == SOFTMAX ? (double)y[at] * ((double)xd[at] - acc)
                                                 : (double)xd[at] - acc);
                }
            }
    });
}

static tg_status
along_jvp(tg_node *nd, enum sm_kind kind)
{
    if (!nd->in[0]->tangent || nd->out->size == 0)
        return TG_OK;
    struct sm s = sm_of(nd->in[0], nd->attr->axis);
    if (s.inner == 1) {
        struct sm_job j = {nd, kind, s.len, false};
        tg__parallel_for(s.outer, tg__grain_rows(s.len),
                         nd->out->dtype == TG_F32 ? sm_jvp_rows_f32 : sm_jvp_rows_f64, &j);
    } else {
        sm_strided_jvp(nd, kind, s);
    }
    return TG_OK;
}

static tg_status
along_forward(tg_node *nd, enum sm_kind kind)
{
    if (nd->out->size == 0) /* nothing to write; outer or inner may be huge (found by fuzzing) */
        return TG_OK;
    struct sm s = sm_of(nd->in[0], nd->attr->axis);
    if (s.inner == 1) {
        struct sm_job j = {nd, kind, s.len, false};
        tg__parallel_for(s.outer, tg__grain_rows(s.len),
                         nd->out->dtype == TG_F32 ? sm_fwd_rows_f32 : sm_fwd_rows_f64, &j);
    } else {
        sm_strided_forward(nd, kind, s);
    }
    return TG_OK;
}

/* The strided paths add: a fresh gradient is zeroed first. */
static void
zero_if_fresh(tg_tensor *x)
{
    if (tg__grad_take_fresh(x) && tg__nbytes(x))
        memset(x->grad, 0, tg__nbytes(x));
}

static tg_status
along_vjp(tg_node *nd, enum sm_kind kind)
{
    if (!nd->in[0]->grad || nd->out->size == 0)
        return TG_OK;
    struct sm s = sm_of(nd->in[0], nd->attr->axis);
    if (s.inner == 1) {
        struct sm_job j = {nd, kind, s.len, tg__grad_take_fresh(nd->in[0])};
        tg__parallel_for(s.outer, tg__grain_rows(s.len),
                         nd->out->dtype == TG_F32 ? sm_vjp_rows_f32 : sm_vjp_rows_f64, &j);
    } else {
        zero_if_fresh(nd->in[0]);
        sm_strided_vjp(nd, kind, s);
    }
    return TG_OK;
}

static tg_tensor *
record_along(tg_tape *t, const tg_op *op, tg_tensor *x, int axis)
{
    if (!t)
        return NULL;
    if (t->status != TG_OK)
        return &t->nil;
    if (!(x = tg__operand(t, op->name, "x", x)))
        return &t->nil;
    int a = axis;
    if (!tg__axis_norm(&a, x->ndim))
        return tg__fail(t, TG_ERR_ARG, "%s %s: axis %d is out of range for shape %s (valid: %d "
                        "… %d)",
                        op->name, tg__name_text(x).s, axis, tg__shape_text(x).s, -x->ndim,
                        x->ndim - 1);
    struct tg__attr attr = {.axis = a};
    return tg__record(t, op, &x, 1, &attr, NULL);
}

/*
 * softmax:  y_k = e^(x_k - m) / Σ_j e^(x_j - m)    along attr.axis
 *   ∂y_k/∂x_j = y_k ([k = j] - y_j):   VJP dx = y ⊙ (dy - Σ_j dy_j y_j)
 *   JVP: ẏ = y ⊙ (ẋ - Σ_j y_j ẋ_j)   (the saved output; the Jacobian is symmetric, so this has
 *   the VJP's form with ẋ for dy)
 */
static tg_status
softmax_forward(tg_node *nd)
{
    return along_forward(nd, SOFTMAX);
}

static tg_status
softmax_vjp(tg_node *nd)
{
    return along_vjp(nd, SOFTMAX);
}

static tg_status
softmax_jvp(tg_node *nd)
{
    return along_jvp(nd, SOFTMAX);
}

/* For tg_grad: dx = y ⊙ (dy - Σ_axis dy ⊙ y) with ops */
static tg_tensor *
softmax_vjp_graph(tg_node *nd, int k, tg_tensor *dy)
{
    (void)k;
    tg_tape *t = nd->tape;
    int axis = nd->attr->axis;
    tg_tensor *s = tg_sum_axes(t, tg_mul(t, dy, nd->out), &axis, 1, true);
    return tg_mul(t, nd->out, tg_sub(t, dy, s));
}

const tg_op tg__op_softmax = {
    .name = "softmax",
    .n_inputs = 1,
    .shape = tg__shape_same,
    .forward = softmax_forward,
    .vjp = softmax_vjp,
    .vjp_graph = softmax_vjp_graph,
    .jvp = softmax_jvp,
    .math = "y = e^(x - m) / Σ e^(x - m) along axis, m the max",
    .vjp_math = "dx += y ⊙ (dy - Σ dy ⊙ y)",
    .jvp_math = "ẏ = y ⊙ (ẋ - Σ y ⊙ ẋ)",
    .shapes = "x any shape → the same; one axis",
};

tg_tensor *
tg_softmax(tg_tape *t, tg_tensor *x, int axis)
{
    return record_along(t, &tg__op_softmax, x, axis);
}

/*
 * log_softmax:  y_k = (x_k - m) - log Σ_j e^(x_j - m)
 *   ∂y_k/∂x_j = [k = j] - softmax_j:   VJP dx = dy - e^y Σ_j dy_j    (e^y is the softmax)
 *   JVP: ẏ = ẋ - Σ_j e^(y_j) ẋ_j   (one shift per row: the softmax-weighted mean of ẋ)
 */
static tg_status
log_softmax_forward(tg_node *nd)
{
    return along_forward(nd, LOG_SOFTMAX);
}

static tg_status
log_softmax_vjp(tg_node *nd)
{
    return along_vjp(nd, LOG_SOFTMAX);
}

static tg_status
log_softmax_jvp(tg_node *nd)
{
    return along_jvp(nd, LOG_SOFTMAX);
}

/* For tg_grad: dx = dy - e^y ⊙ Σ_axis dy with ops */
static tg_tensor *
log_softmax_vjp_graph(tg_node *nd, int k, tg_tensor *dy)
{
    (void)k;
    tg_tape *t = nd->tape;
    int axis = nd->attr->axis;
    return tg_sub(t, dy, tg_mul(t, tg_exp(t, nd->out), tg_sum_axes(t, dy, &axis, 1, true)));
}

const tg_op tg__op_log_softmax = {
    .name = "log_softmax",
    .n_inputs = 1,
    .shape = tg__shape_same,
    .forward = log_softmax_forward,
    .vjp = log_softmax_vjp,
    .vjp_graph = log_softmax_vjp_graph,
    .jvp = log_softmax_jvp,
    .math = "y = (x - m) - log Σ e^(x - m) along axis",
    .vjp_math = "dx += dy - e^y Σ dy",
    .jvp_math = "ẏ = ẋ - Σ e^y ⊙ ẋ",
    .shapes = "x any shape → the same; one axis",
};

tg_tensor *
tg_log_softmax(tg_tape *t, tg_tensor *x, int axis)
{
    return record_along(t, &tg__op_log_softmax, x, axis);
}

/*
 * logsumexp:  y = m + log Σ_k e^(x_k - m)      over the reduced axes (attr.axes, keepdims)
 *   ∂y/∂x_k = e^(x_k - y) (the softmax):   VJP dx += dy ⊙ e^(x - y)
 *   JVP: ẏ = Σ_k e^(x_k - y) ẋ_k   (the softmax-weighted mean of ẋ, from the saved y)
 *   Reduced axes that end the shape are rows (the fast path above); any other set runs as
 *   strided passes (tg__red4) with the maxima in the node's scratch (the JVP's sums in
 *   double in the forward-mode scratch).
 */
static bool
lse_rows(const tg_node *nd, size_t *len) /* the reduced axes are the trailing ones */
{
    const tg_tensor *x = nd->in[0];
    unsigned m = nd->attr->axes;
    size_t n = 1;
    int k = x->ndim - 1;
    for (; k >= 0 && (m >> k & 1); k--)
        n *= (size_t)x->dims[k];
    for (; k >= 0; k--)
        if (m >> k & 1)
            return false;
    *len = n;
    return true;
}

static size_t
lse_scratch(const tg_node *nd)
{
    size_t len;
    return lse_rows(nd, &len) ? 0 : 2 * nd->out->size * sizeof(double);
}

static tg_status
lse_forward(tg_node *nd)
{
    if (nd->out->size == 0)
        return TG_OK; /* a kept axis of size 0: no outputs, no scratch */
    size_t len;
    if (lse_rows(nd, &len)) {
        struct sm_job j = {nd, LSE, len, false};
        tg__parallel_for(nd->out->size, tg__grain_rows(len),
                         nd->out->dtype == TG_F32 ? sm_fwd_rows_f32 : sm_fwd_rows_f64, &j);
        return TG_OK;
    }
    struct tg__red4 r4 = tg__red4_of(nd->in[0], nd->attr->axes);
    double *m = nd->scratch, *sum = m + nd->out->size;
    for (size_t o = 0; o < nd->out->size; o++)
        m[o] = -INFINITY, sum[o] = 0;
    TG__DISPATCH(nd->out->dtype, T, {
        const T *x = nd->in[0]->data;
        T *y = nd->out->data;
        TG__RED4_FOR(r4, m[o] = (double)x[i] > m[o] ? (double)x[i] : m[o]);
        TG__RED4_FOR(r4, sum[o] += exp((double)x[i] - SHIFT(m[o])));
        for (size_t o = 0; o < nd->out->size; o++)
            y[o] = (T)(SHIFT(m[o]) + log(sum[o]));
    });
    return TG_OK;
}

static tg_status
lse_vjp(tg_node *nd)
{
    if (!nd->in[0]->grad || nd->out->size == 0)
        return TG_OK;
    size_t len;
    if (lse_rows(nd, &len)) {
        struct sm_job j = {nd, LSE, len, tg__grad_take_fresh(nd->in[0])};
        tg__parallel_for(nd->out->size, tg__grain_rows(len),
                         nd->out->dtype == TG_F32 ? sm_vjp_rows_f32 : sm_vjp_rows_f64, &j);
        return TG_OK;
    }
    zero_if_fresh(nd->in[0]);
    struct tg__red4 r4 = tg__red4_of(nd->in[0], nd->attr->axes);
    TG__DISPATCH(nd->out->dtype, T, {
        const T *x = nd->in[0]->data, *y = nd->out->data, *dy = nd->out->grad;
        T *dx = nd->in[0]->grad;
        TG__RED4_FOR(r4, dx[i] += (T)((double)dy[o] * exp((double)x[i] - (double)y[o])));
    });
    return TG_OK;
}

static tg_status
lse_jvp(tg_node *nd)
{
    if (!nd->in[0]->tangent || nd->out->size == 0)
        return TG_OK;
    size_t len;
    if (lse_rows(nd, &len)) {
        struct sm_job j = {nd, LSE, len, false};
        tg__parallel_for(nd->out->size, tg__grain_rows(len),
                         nd->out->dtype == TG_F32 ? sm_jvp_rows_f32 : sm_jvp_rows_f64, &j);
        return TG_OK;
    }
    struct tg__red4 r4 = tg__red4_of(nd->in[0], nd->attr->axes);
    double *acc = tg__jvp_scratch(nd, nd->out->size * sizeof(double));
    if (!acc)
        return TG_ERR_NOMEM;
    memset(acc, 0, nd->out->size * sizeof *acc);
    TG__DISPATCH(nd->out->dtype, T, {
        const T *x = nd->in[0]->data, *y = nd->out->data, *xd = nd->in[0]->tangent;
        T *yd = nd->out->tangent;
        TG__RED4_FOR(r4, acc[o] += exp((double)x[i] - (double)y[o]) * (double)xd[i]);
        for (size_t o = 0; o < nd->out->size; o++)
            yd[o] = (T)acc[o];
    });
    return TG_OK;
}

/* For tg_grad: dx = dy ⊙ e^(x - y) with ops, dy and y viewed with the reduced axes kept */
static tg_tensor *
logsumexp_vjp_graph(tg_node *nd, int k, tg_tensor *dy)
{
    (void)k;
    tg_tape *t = nd->tape;
    tg_tensor *x = nd->in[0];
    int64_t kept[TG_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++)
        kept[i] = nd->attr->axes & (1u << i) ? 1 : x->dims[i];
    tg_tensor *yk = tg_reshape(t, nd->out, x->ndim, kept), *dyk = tg_reshape(t, dy, x->ndim, kept);
    return tg_mul(t, dyk, tg_exp(t, tg_sub(t, x, yk)));
}

const tg_op tg__op_logsumexp = {
    .name = "logsumexp",
    .n_inputs = 1,
    .shape = tg__reduce_shape,
    .forward = lse_forward,
    .vjp = lse_vjp,
    .vjp_graph = logsumexp_vjp_graph,
    .jvp = lse_jvp,
    .scratch_size = lse_scratch,
    .math = "y = m + log Σ_k e^(x_k - m) over the reduced axes",
    .vjp_math = "dx += dy ⊙ e^(x - y)",
    .jvp_math = "ẏ = Σ_k e^(x_k - y) ẋ_k",
    .shapes = "as sum",
};

tg_tensor *
tg_logsumexp(tg_tape *t, tg_tensor *x, const int *axes, int n_axes, bool keepdims)
{
    if (!t)
        return NULL;
    struct tg__attr attr = {.keepdims = keepdims};
    if (!tg__axes_mask(t, "logsumexp", x, axes, n_axes, &attr.axes))
        return &t->nil;
    return tg__record(t, &tg__op_logsumexp, &x, 1, &attr, NULL);
}
