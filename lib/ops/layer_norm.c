/*
 * Normalization over the trailing axes of each sample: layer_norm (F.layer_norm) and rms_norm
 * (F.rms_norm, the T5 / LLaMA norm). x is seen as (rows x M): its last n_norm axes (the
 * normalized shape) make one row of M values, the leading axes count the rows. γ and β, when
 * given, have the normalized shape and act elementwise along the row.
 *
 * Rows are split across threads (tg__parallel_for); each row's sums run in double in a fixed
 * order (norm_sums.h). dγ and dβ are sums over the rows: threads take blocks of columns and
 * each block adds its rows in order, so the bits do not depend on the thread count.
 */
#include <inttypes.h>
#include <math.h>

#include "../kernels/kernels.h"
#include "norm_sums.h"
#include "ops.h"

#define AFFINE_COLUMNS 64 /* the columns of γ, β whose gradients one part sums over the rows */

/* attr: axis = n_norm (the trailing axes normalized), scale2 = ε, axes bit 0: γ given, bit 1:
 * β given (inputs 1 and then 2, or 1 when only β) */
struct rows {
    size_t n, m; /* x as (n rows x m values) */
    const tg_tensor *gamma, *beta;
};

static struct rows
rows_of(const tg_node *nd)
{
    const tg_tensor *x = nd->in[0];
    struct rows r = {1, 1, NULL, NULL};
    for (int i = 0; i < x->ndim; i++)
        *(i < x->ndim - nd->attr->axis ? &r.n : &r.m) *= (size_t)x->dims[i];
    int k = 1;
    if (nd->attr->axes & 1)
        r.gamma = nd->in[k++];
    if (nd->attr->axes & 2)
        r.beta = nd->in[k];
    return r;
}

struct rows_job {
    tg_node *nd;
    struct rows r;
};

static size_t
row_grain(size_t m)
{
    return ((size_t)1 << 14) / (m ? m : 1) + 1;
}

/* Σ_rows a(row, j) for the columns j of the blocks [begin, end), added into dγ (a = dy x̂,
 * x̂ = (x − shift) · scale per row) and dβ (a = dy); shift and scale come from the scratch:
 * layer_norm's μ and 1/σ, rms_norm's 0 and r. */
struct affine_job {
    tg_node *nd;
    struct rows r;
    const double *shift, *scale; /* per row; shift NULL: 0 */
};

static void
affine_part(size_t begin, size_t end, void *ctx)
{
    struct affine_job *j = ctx;
    tg_node *nd = j->nd;
    struct rows r = j->r;
    TG__DISPATCH(nd->out->dtype, T, {
        const T *x = nd->in[0]->data, *dy = nd->out->grad;
        T *dgamma = r.gamma && r.gamma->grad ? r.gamma->grad : NULL;
        T *dbeta = r.beta && r.beta->grad ? r.beta->grad : NULL;
        for (size_t blk = begin; blk < end; blk++) {
            size_t c0 = blk * AFFINE_COLUMNS;
            size_t len = r.m - c0 < AFFINE_COLUMNS ? r.m - c0 : AFFINE_COLUMNS;
            double sg[AFFINE_COLUMNS] = {0}, sb[AFFINE_COLUMNS] = {0};
            for (size_t row = 0; row < r.n; row++) {
                const T *xr = x + row * r.m + c0, *dyr = dy + row * r.m + c0;
                double shift = j->shift ? j->shift[row] : 0, scale = j->scale[row];
                for (size_t i = 0; i < len; i++) {
                    sg[i] += (double)dyr[i] * ((xr[i] - shift) * scale);
                    sb[i] += dyr[i];
                }
            }
            for (size_t i = 0; i < len; i++) {
                if (dgamma)
                    dgamma[c0 + i] += (T)sg[i];
                if (dbeta)
                    dbeta[c0 + i] += (T)sb[i];
            }
        }
    });
}

static void
affine_grads(tg_node *nd, struct rows r, const double *shift, const double *scale)
{
    if (!(r.gamma && r.gamma->grad) && !(r.beta && r.beta->grad))
        return;
    struct affine_job j = {nd, r, shift, scale};
    tg__parallel_for((r.m + AFFINE_COLUMNS - 1) / AFFINE_COLUMNS, 1, affine_part, &j);
}

/* Checks γ or β (*h, optional: NULL passes) against x's normalized shape and resolves the
 * handle in place. */
static bool
normalized_vector(tg_tape *t, const char *op, const tg_tensor *x, int n_norm, tg_tensor **h,
                  const char *what)
{
    if (!*h)
        return true;
    const tg_tensor *v = *h = tg__operand(t, op, what, *h);
    if (!v)
        return false;
    bool same = v->ndim == n_norm;
    for (int i = 0; same && i < n_norm; i++)
        same = v->dims[i] == x->dims[x->ndim - n_norm + i];
    if (!same || v->dtype != x->dtype) {
        tg__fail(t, v->dtype != x->dtype ? TG_ERR_DTYPE : TG_ERR_SHAPE,
                 "%s %s %s: %s %s %s %s must be %s of the normalized shape (the last %d axes of "
                 "x)",
                 op, tg__name_text(x).s, tg__shape_text(x).s, what, tg__name_text(v).s,
                 tg__shape_text(v).s, tg_dtype_name(v->dtype), tg_dtype_name(x->dtype), n_norm);
        return false;
    }
    return true;
}

/* The checks both ops share; false with the tape's error set. */
static bool
check_rows(tg_tape *t, const char *op, tg_tensor **x, int n_norm, tg_tensor **gamma,
           tg_tensor **beta, double eps)
{
    if (t->status != TG_OK || !(*x = tg__operand(t, op, "x", *x)))
        return false;
    const tg_tensor *v = *x;
    if (n_norm < 1 || n_norm > v->ndim) {
        tg__fail(t, TG_ERR_ARG, "%s %s %s: n_norm_axes %d must be in [1, %d] (the rank of x)",
                 op, tg__name_text(v).s, tg__shape_text(v).s, n_norm, v->ndim);
        return false;
    }
    if (!(eps > 0) || !isfinite(eps)) {
        tg__fail(t, TG_ERR_ARG, "%s %s %s: eps = %g must be finite and > 0", op,
                 tg__name_text(v).s, tg__shape_text(v).s, eps);
        return false;
    }
    return normalized_vector(t, op, v, n_norm, gamma, "weight") &&
           normalized_vector(t, op, v, n_norm, beta, "bias");
}

/*
 * layer_norm: per row of M values
 *   μ = (1/M) Σ x,  σ² = (1/M) Σ (x − μ)²  (biased),  x̂ = (x − μ)/√(σ² + ε),  y = γ x̂ + β
 *   VJP, with u = γ ⊙ dy (the gradient at x̂) and means over the row:
 *     dx += (1/√(σ² + ε)) (u − mean(u) − x̂ mean(u x̂)),  dγ += Σ_rows dy x̂,  dβ += Σ_rows dy
 *   JVP: μ̇ = mean(ẋ), (σ²)˙ = 2 mean((x − μ) ẋ) (Σ (x − μ) = 0), so
 *     x̂̇ = (1/√(σ² + ε)) (ẋ − mean(ẋ) − x̂ mean(x̂ ẋ)),  ẏ = γ x̂̇ + γ̇ x̂ + β̇
 * σ² is summed from x − μ (two passes), and y and dx are formed from x − μ in double, so
 * nothing cancels when |μ| dwarfs the spread of the row (an offset of 1e6 costs no digits).
 * The scratch keeps μ and 1/√(σ² + ε) per row.
 */
static size_t
ln_scratch(const tg_node *nd)
{
    return 2 * rows_of(nd).n * sizeof(double);
}

static void
ln_forward_part(size_t begin, size_t end, void *ctx)
{
    struct rows_job *j = ctx;
    tg_node *nd = j->nd;
    struct rows r = j->r;
    double *mean = nd->scratch, *inv = mean + r.n;
    TG__DISPATCH(nd->out->dtype, T, {
        const T *x = nd->in[0]->data, *gamma = r.gamma ? r.gamma->data : NULL;
        const T *beta = r.beta ? r.beta->data : NULL;
        T *y = nd->out->data;
        for (size_t row = begin; row < end; row++) {
            const T *xr = x + row * r.m;
            T *yr = y + row * r.m;
            double mu = NORM_SUM(xr, r.m) / (double)r.m;
            double iv = 1 / sqrt(NORM_SQDEV(xr, r.m, mu) / (double)r.m + nd->attr->scale2);
            mean[row] = mu, inv[row] = iv;
            for (size_t i = 0; i < r.m; i++)
                yr[i] = (T)((gamma ? gamma[i] : 1) * ((xr[i] - mu) * iv) + (beta ? beta[i] : 0));
        }
    });
}

static tg_status
ln_forward(tg_node *nd)
{
    struct rows_job j = {nd, rows_of(nd)};
    if (j.r.m == 0)
        return TG_OK;
    tg__parallel_for(j.r.n, row_grain(j.r.m), ln_forward_part, &j);
    return TG_OK;
}

static void
ln_dx_part(size_t begin, size_t end, void *ctx)
{
    struct rows_job *j = ctx;
    tg_node *nd = j->nd;
    struct rows r = j->r;
    const double *mean = nd->scratch, *inv = mean + r.n;
    double m = (double)r.m;
    TG__DISPATCH(nd->out->dtype, T, {
        const T *x = nd->in[0]->data, *dy = nd->out->grad;
        const T *gamma = r.gamma ? r.gamma->data : NULL;
        T *dx = nd->in[0]->grad;
        for (size_t row = begin; row < end; row++) {
            const T *xr = x + row * r.m, *dyr = dy + row * r.m;
            T *dxr = dx + row * r.m;
            double mu = mean[row], iv = inv[row], su = 0, sux = 0; /* Σu, Σ u (x − μ) */
            if (!gamma)
                NORM_DSUMS(dyr, xr, r.m, mu, &su, &sux);
            else
                for (size_t i = 0; i < r.m; i++) {
                    double u = (double)gamma[i] * dyr[i];
                    su += u, sux += u * (xr[i] - mu);
                }
            /* dx = iv (u − Σu/M) − iv³ (Σ u (x − μ)/M) (x − μ) */
            double a = -iv * iv * iv * sux / m, e = -iv * su / m;
            for (size_t i = 0; i < r.m; i++) {
                double u = (gamma ? gamma[i] : 1) * (double)dyr[i];
                dxr[i] += (T)(iv * u + a * (xr[i] - mu) + e);
            }
        }
    });
}

static tg_status
ln_vjp(tg_node *nd)
{
    struct rows_job j = {nd, rows_of(nd)};
    if (j.r.m == 0 || j.r.n == 0)
        return TG_OK;
    if (nd->in[0]->grad)
        tg__parallel_for(j.r.n, row_grain(j.r.m), ln_dx_part, &j);
    const double *mean = nd->scratch;
    affine_grads(nd, j.r, mean, mean + j.r.n);
    return TG_OK;
}

/* ẏ row by row from the saved μ and 1/√(σ² + ε); the two sums Σ ẋ and Σ (x − μ) ẋ run in
 * double in the fixed lanes of norm_sums.h, like the VJP's. */
static void
ln_jvp_part(size_t begin, size_t end, void *ctx)
{
    struct rows_job *j = ctx;
    tg_node *nd = j->nd;
    struct rows r = j->r;
    const double *mean = nd->scratch, *inv = mean + r.n;
    double m = (double)r.m;
    TG__DISPATCH(nd->out->dtype, T, {
        const T *x = nd->in[0]->data, *dotx = nd->in[0]->tangent;
        const T *gamma = r.gamma ? r.gamma->data : NULL;
        const T *dotgamma = r.gamma ? r.gamma->tangent : NULL;
        const T *dotbeta = r.beta ? r.beta->tangent : NULL;
        T *doty = nd->out->tangent;
        for (size_t row = begin; row < end; row++) {
            const T *xr = x + row * r.m;
            T *dotyr = doty + row * r.m;
            double mu = mean[row], iv = inv[row];
            /* x̂̇ = iv ẋ + a (x − μ) + e, a = −iv³ Σ (x − μ) ẋ / M, e = −iv Σ ẋ / M */
            double a = 0, e = 0;
            const T *dotxr = dotx ? dotx + row * r.m : NULL;
            if (dotxr) {
                double sdx = 0, sxdx = 0;
                NORM_DSUMS(dotxr, xr, r.m, mu, &sdx, &sxdx);
                a = -iv * iv * iv * sxdx / m, e = -iv * sdx / m;
            }
            for (size_t i = 0; i < r.m; i++) {
                double xc = xr[i] - mu, acc = 0;
                if (dotxr)
                    acc = (gamma ? gamma[i] : 1) * (iv * dotxr[i] + a * xc + e);
                if (dotgamma)
                    acc += (double)dotgamma[i] * (xc * iv);
                if (dotbeta)
                    acc += dotbeta[i];
                dotyr[i] = (T)acc;
            }
        }
    });
}

static tg_status
ln_jvp(tg_node *nd)
{
    struct rows_job j = {nd, rows_of(nd)};
    if (j.r.m == 0 || j.r.n == 0)
        return TG_OK;
    tg__parallel_for(j.r.n, row_grain(j.r.m), ln_jvp_part, &j);
    return TG_OK;
}

/* The trailing n_norm axes of x (a row), into axes[] */
static void
row_axes(const tg_tensor *x, int n_norm, int *axes)
{
    for (int i = 0; i < n_norm; i++)
        axes[i] = x->ndim - n_norm + i;
}

/* For tg_grad, with ops over each row (the last n_norm axes, kept):
 *   x̂ = (x − mean(x)) r, r = (mean((x − mean(x))²) + ε)^−½, recomputed with ops;
 *   dx = r (u − mean(u) − x̂ mean(u ⊙ x̂)), u = γ ⊙ dy;
 *   dγ = Σ_rows dy ⊙ x̂,  dβ = Σ_rows dy */
static tg_tensor *
ln_vjp_graph(tg_node *nd, int k, tg_tensor *dy)
{
    tg_tape *t = nd->tape;
    tg_tensor *x = nd->in[0];
    if (x->size == 0) /* empty x: every gradient is empty or a sum of nothing, 0 */
        return NULL;
    tg_tensor *gamma = nd->attr->axes & 1 ? nd->in[1] : NULL;
    if (k != 0 && !(gamma && k == 1)) /* dβ */
        return tg__sum_to(t, dy, nd->in[k]);
    int n = nd->attr->axis, axes[TG_MAX_DIMS] = {0}; /* n >= 1 (the shape rule), but unseen here */
    row_axes(x, n, axes);
    tg_tensor *r, *xhat = tg__normalize_graph(t, x, axes, n, nd->attr->scale2, &r);
    if (k != 0) /* dγ */
        return tg__sum_to(t, tg_mul(t, dy, xhat), gamma);
    return tg__normalized_dx_graph(t, gamma ? tg_mul(t, dy, gamma) : dy, xhat, r, axes, n);
}

const tg_op tg__op_layer_norm = {
    .name = "layer_norm",
    .n_inputs = TG_VARIADIC, /* x, then γ and β when given */
    .forward = ln_forward,
    .vjp = ln_vjp,
    .vjp_graph = ln_vjp_graph,
    .jvp = ln_jvp,
    .jvp_math = "ẏ = γ (ẋ − mean(ẋ) − x̂ mean(x̂ ẋ))/√(σ²+ε) + γ̇ x̂ + β̇ per row",
    .scratch_size = ln_scratch,
    .math = "y = γ (x − μ)/√(σ² + ε) + β, μ, σ² (biased) over each row of the last n_norm "
            "axes",
    .vjp_math = "u = γ dy: dx += (u − mean(u) − x̂ mean(u x̂))/√(σ²+ε) per row; dγ += Σ_rows "
                "dy x̂, dβ += Σ_rows dy",
    .shapes = "x (…, normalized shape), γ, β (normalized shape) -> same as x",
};

tg_tensor *
tg_layer_norm(tg_tape *t, tg_tensor *x, int n_norm_axes, tg_tensor *weight, tg_tensor *bias,
              double eps)
{
    if (!t)
        return NULL;
    if (!check_rows(t, "layer_norm", &x, n_norm_axes, &weight, &bias, eps))
        return &t->nil;
    struct tg__attr attr = {.scale2 = eps, .axis = n_norm_axes,
                            .axes = (weight ? 1u : 0u) | (bias ? 2u : 0u)};
    tg_tensor *in[3] = {x, weight ? weight : bias, weight ? bias : NULL};
    return tg__record(t, &tg__op_layer_norm, in, 1 + !!weight + !!bias, &attr, NULL);
}

/*
 * rms_norm: per row of M values
 *   r = 1/√(mean(x²) + ε),  y = γ ⊙ x r
 *   VJP, with u = γ ⊙ dy:  dx += r (u − x r² mean(u x)),  dγ += Σ_rows dy x r
 *   JVP: ṙ = −r³ mean(x ẋ), so  ẏ = γ ⊙ r (ẋ − x r² mean(x ẋ)) + γ̇ ⊙ x r
 * (from ∂r/∂x_i = −r³ x_i / M). No mean is taken out, so nothing cancels. The scratch keeps r
 * per row.
 */
static size_t
rms_scratch(const tg_node *nd)
{
    return rows_of(nd).n * sizeof(double);
}

static void
rms_forward_part(size_t begin, size_t end, void *ctx)
{
    struct rows_job *j = ctx;
    tg_node *nd = j->nd;
    struct rows r = j->r;
    double *rinv = nd->scratch;
    TG__DISPATCH(nd->out->dtype, T, {
        const T *x = nd->in[0]->data, *gamma = r.gamma ? r.gamma->data : NULL;
        T *y = nd->out->data;
        for (size_t row = begin; row < end; row++) {
            const T *xr = x + row * r.m;
            T *yr = y + row * r.m;
            double rr = 1 / sqrt(NORM_SQDEV(xr, r.m, 0) / (double)r.m + nd->attr->scale2);
            rinv[row] = rr;
            for (size_t i = 0; i < r.m; i++)
                yr[i] = (T)((gamma ? gamma[i] : 1) * (xr[i] * rr));
        }
    });
}

static tg_status
rms_forward(tg_node *nd)
{
    struct rows_job j = {nd, rows_of(nd)};
    if (j.r.m == 0)
        return TG_OK;
    tg__parallel_for(j.r.n, row_grain(j.r.m), rms_forward_part, &j);
    return TG_OK;
}

static void
rms_dx_part(size_t begin, size_t end, void *ctx)
{
    struct rows_job *j = ctx;
    tg_node *nd = j->nd;
    struct rows r = j->r;
    const double *rinv = nd->scratch;
    TG__DISPATCH(nd->out->dtype, T, {
        const T *x = nd->in[0]->data, *dy = nd->out->grad;
        const T *gamma = r.gamma ? r.gamma->data : NULL;
        T *dx = nd->in[0]->grad;
        for (size_t row = begin; row < end; row++) {
            const T *xr = x + row * r.m, *dyr = dy + row * r.m;
            T *dxr = dx + row * r.m;
            double rr = rinv[row], sdy = 0, sux = 0; /* Σ u x */
            if (!gamma)
                NORM_DSUMS(dyr, xr, r.m, 0, &sdy, &sux);
            else
                for (size_t i = 0; i < r.m; i++)
                    sux += (double)gamma[i] * dyr[i] * xr[i];
            double a = -rr * rr * rr * sux / (double)r.m; /* dx = r u + a x */
            for (size_t i = 0; i < r.m; i++)
                dxr[i] += (T)(rr * ((gamma ? gamma[i] : 1) * (double)dyr[i]) + a * xr[i]);
        }
    });
}

static tg_status
rms_vjp(tg_node *nd)
{
    struct rows_job j = {nd, rows_of(nd)};
    if (j.r.m == 0 || j.r.n == 0)
        return TG_OK;
    if (nd->in[0]->grad)
        tg__parallel_for(j.r.n, row_grain(j.r.m), rms_dx_part, &j);
    affine_grads(nd, j.r, NULL, nd->scratch);
    return TG_OK;
}

/* ẏ row by row from the saved r; Σ x ẋ runs in double in norm_sums.h's fixed lanes (its
 * companion sum Σ ẋ is not needed). */
static void
rms_jvp_part(size_t begin, size_t end, void *ctx)
{
    struct rows_job *j = ctx;
    tg_node *nd = j->nd;
    struct rows r = j->r;
    const double *rinv = nd->scratch;
    TG__DISPATCH(nd->out->dtype, T, {
        const T *x = nd->in[0]->data, *dotx = nd->in[0]->tangent;
        const T *gamma = r.gamma ? r.gamma->data : NULL;
        const T *dotgamma = r.gamma ? r.gamma->tangent : NULL;
        T *doty = nd->out->tangent;
        for (size_t row = begin; row < end; row++) {
            const T *xr = x + row * r.m;
            T *dotyr = doty + row * r.m;
            double rr = rinv[row], a = 0; /* (x r)˙ = r ẋ + a x, a = −r³ Σ x ẋ / M */
            const T *dotxr = dotx ? dotx + row * r.m : NULL;
            if (dotxr) {
                double sdx = 0, sxdx = 0;
                NORM_DSUMS(dotxr, xr, r.m, 0, &sdx, &sxdx);
                a = -rr * rr * rr * sxdx / (double)r.m;
            }
            for (size_t i = 0; i < r.m; i++) {
                double acc = 0;
                if (dotxr)
                    acc = (gamma ? gamma[i] : 1) * (rr * dotxr[i] + a * xr[i]);
                if (dotgamma)
                    acc += (double)dotgamma[i] * (xr[i] * rr);
                dotyr[i] = (T)acc;
            }
        }
    });
}

static tg_status
rms_jvp(tg_node *nd)
{
    struct rows_job j = {nd, rows_of(nd)};
    if (j.r.m == 0 || j.r.n == 0)
        return TG_OK;
    tg__parallel_for(j.r.n, row_grain(j.r.m), rms_jvp_part, &j);
    return TG_OK;
}

/* For tg_grad, with ops over each row (the last n_norm axes, kept):
 *   r = (mean(x²) + ε)^−½ and x̂ = x r recomputed with ops;
 *   dx = r (u − x̂ mean(u ⊙ x̂)) (= r (u − x r² mean(u x))), u = γ ⊙ dy;  dγ = Σ_rows dy ⊙ x̂ */
static tg_tensor *
rms_vjp_graph(tg_node *nd, int k, tg_tensor *dy)
{
    tg_tape *t = nd->tape;
    tg_tensor *x = nd->in[0];
    if (x->size == 0) /* empty x: every gradient is empty or a sum of nothing, 0 */
        return NULL;
    int n = nd->attr->axis, axes[TG_MAX_DIMS];
    row_axes(x, n, axes);
    tg_tensor *mean_sq = tg_mean_axes(t, tg_square(t, x), axes, n, true);
    tg_tensor *r = tg_pow(t, tg_add(t, mean_sq, tg__constant(t, x->dtype, nd->attr->scale2)), -0.5);
    tg_tensor *xhat = tg_mul(t, x, r);
    if (k != 0) /* dγ */
        return tg__sum_to(t, tg_mul(t, dy, xhat), nd->in[1]);
    tg_tensor *u = nd->n_in > 1 ? tg_mul(t, dy, nd->in[1]) : dy;
    tg_tensor *mean_ux = tg_mean_axes(t, tg_mul(t, u, xhat), axes, n, true);
    return tg_mul(t, r, tg_sub(t, u, tg_mul(t, xhat, mean_ux)));
}

const tg_op tg__op_rms_norm = {
    .name = "rms_norm",
    .n_inputs = TG_VARIADIC, /* x, then γ when given */
    .forward = rms_forward,
    .vjp = rms_vjp,
    .vjp_graph = rms_vjp_graph,
    .jvp = rms_jvp,
    .jvp_math = "r = 1/√(mean(x²)+ε): ẏ = γ r (ẋ − x r² mean(x ẋ)) + γ̇ x r per row",
    .scratch_size = rms_scratch,
    .math = "y = γ x/√(mean(x²) + ε), the mean over each row of the last n_norm axes",
    .vjp_math = "u = γ dy, r = 1/√(mean(x²)+ε): dx += r (u − x r² mean(u x)) per row; dγ += "
                "Σ_rows dy x r",
    .shapes = "x (…, normalized shape), γ (normalized shape) -> same as x",
};

tg_tensor *
tg_rms_norm(tg_tape *t, tg_tensor *x, int n_norm_axes, tg_tensor *weight, double eps)
{
    if (!t)
        return NULL;
    tg_tensor *no_bias = NULL;
    if (!check_rows(t, "rms_norm", &x, n_norm_axes, &weight, &no_bias, eps))
        return &t->nil;
    struct tg__attr attr = {.scale2 = eps, .axis = n_norm_axes, .axes = weight ? 1u : 0u};
    tg_tensor *in[2] = {x, weight};
    return tg__record(t, &tg__op_rms_norm, in, 1 + !!weight, &attr, NULL);
}
