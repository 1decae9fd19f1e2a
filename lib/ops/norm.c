/*
 * Normalization: batch_norm (PyTorch's F.batch_norm), over axis 1 of x (N, C, ...): each
 * channel c is normalized over its M = N·(spatial size) values.
 *
 * Training (tg_tape_training(t)):
 *   μ_c = (1/M) Σ x,  σ²_c = (1/M) Σ (x − μ_c)²,  x̂ = (x − μ_c) / √(σ²_c + ε),
 *   y = γ_c x̂ + β_c,
 *   and, when running statistics are given, as a side effect of the forward:
 *   r_μ ← (1 − m) r_μ + m μ_c,  r_σ² ← (1 − m) r_σ² + m σ²_c · M / (M − 1)  (unbiased, as
 *   PyTorch). M = 1 is refused, as in PyTorch ("more than 1 value per channel").
 *   VJP, with g = Σ dy and h = Σ dy ⊙ x̂ over the channel:
 *     dx += (γ_c / √(σ²_c + ε)) (dy − g/M − x̂ h/M),  dγ_c += h,  dβ_c += g
 * Evaluation, or no running statistics given... in evaluation they are required:
 *   y = γ_c (x − r_μ) / √(r_σ² + ε) + β_c, an affine map per channel:
 *   VJP: dx += dy γ_c / √(r_σ² + ε),  dγ_c += Σ dy ⊙ x̂,  dβ_c += Σ dy
 *
 * With an activation g fused in (tg_batch_norm_act; attr.axis = the tg_activation, 0 for
 * none): y = g(z), z = γ_c x̂ + β_c, one node and one tensor instead of two. The VJP first
 * takes dz = dy ⊙ g'(z) (g' from y, or from z recomputed from x when g needs it), then runs
 * the rules above on dz in place of dy; dz is made a block at a time, twice (once for the
 * sums, once for dx), and never stored.
 *
 * JVP: ẏ = g'(z) ⊙ ż (g' as in the VJP; ẏ = ż without an activation), ż = γ̇_c x̂ + γ_c x̂̇ + β̇_c,
 *   from the statistics the forward saved (its side effect is never repeated: the running
 *   statistics are updated once, by the forward). With k = γ_c / √(σ²_c + ε):
 *   training: μ̇ = Σ ẋ / M, (σ²)˙ = 2 Σ (x − μ) ẋ / M, so
 *     γ_c x̂̇ = k (ẋ − μ̇ − x̂ Σ(x̂ ẋ)/M) = k (ẋ − μ̇) + a (x − μ),
 *     a = −k Σ((x − μ) ẋ) / (M (σ² + ε)), from x − μ in double as the forward;
 *   evaluation: γ_c x̂̇ = k ẋ (the statistics are constants).
 *
 * γ and β are optional (affine=False). Sums run in double, over each channel in a fixed
 * order; channels are split across threads, so the bits do not depend on the thread count.
 * The scratch keeps μ_c and 1/√(σ² + ε) per channel (the running ones in evaluation).
 */
#include <inttypes.h>
#include <math.h>

#include "../kernels/kernels.h"
#include "norm_sums.h"
#include "ops.h"
#include "unary.h"

#define BN_BLOCK 256 /* elements of z or dz made at a time by a fused activation */

/* The fused activation's rule applied through T's variant (z: a T * block). */
#define RULE_FWD(r, alpha, z, y, n)                                                            \
    _Generic((z), float *: (r)->fwd_f32, double *: (r)->fwd_f64)(alpha, 0, z, y, n)
#define RULE_DZ(r, alpha, z, y, dy, dz, n)                                                     \
    _Generic((dz), float *: (r)->dz_f32, double *: (r)->dz_f64)(alpha, 0, z, y, dy, dz, n)

/* The fused activation of a batch_norm node (NULL: none) and its constant. */
static const struct tg__unary_rule *
bn_act(const tg_node *nd, double *alpha)
{
    *alpha = 0;
    return nd->attr->axis ? tg__act_rule((tg_activation)nd->attr->axis, alpha) : NULL;
}

/* attr: scale = momentum, scale2 = ε, keepdims = training, axis = the fused tg_activation
 * (TG_ACT_IDENTITY: none), axes bit 0: γ given, bit 1: β
 * given (they are inputs 1 and then 2, or 1 when only β); stats: running mean and var */
struct bn {
    size_t n, c, inner; /* x as (n, c, inner) */
    const tg_tensor *gamma, *beta;
};

static struct bn
bn_of(const tg_node *nd)
{
    const tg_tensor *x = nd->in[0];
    struct bn b = {(size_t)x->dims[0], (size_t)x->dims[1], 1, NULL, NULL};
    for (int i = 2; i < x->ndim; i++)
        b.inner *= (size_t)x->dims[i];
    int k = 1;
    if (nd->attr->axes & 1)
        b.gamma = nd->in[k++];
    if (nd->attr->axes & 2)
        b.beta = nd->in[k];
    return b;
}

static size_t
bn_scratch(const tg_node *nd)
{
    return 2 * (size_t)nd->in[0]->dims[1] * sizeof(double);
}

struct bn_job {
    tg_node *nd;
    struct bn b;
};

static void
bn_forward_part(size_t begin, size_t end, void *ctx)
{
    struct bn_job *j = ctx;
    tg_node *nd = j->nd;
    struct bn b = j->b;
    double *mean = nd->scratch, *inv = mean + b.c;
    double eps = nd->attr->scale2, m = nd->attr->scale, alpha;
    const struct tg__unary_rule *act = bn_act(nd, &alpha);
    bool training = nd->attr->keepdims;
    size_t count = b.n * b.inner;
    TG__DISPATCH(nd->out->dtype, T, {
        const T *x = nd->in[0]->data, *gamma = b.gamma ? b.gamma->data : NULL;
        const T *beta = b.beta ? b.beta->data : NULL;
        T *y = nd->out->data;
        T *rmean = nd->attr->stats[0] ? nd->attr->stats[0]->data : NULL;
        T *rvar = nd->attr->stats[1] ? nd->attr->stats[1]->data : NULL;
        for (size_t c = begin; c < end; c++) {
            double mu, var;
            if (training) {
                double s = 0, s2 = 0;
                for (size_t n = 0; n < b.n; n++)
                    s += NORM_SUM(x + (n * b.c + c) * b.inner, b.inner);
                mu = s / (double)count;
                for (size_t n = 0; n < b.n; n++)
                    s2 += NORM_SQDEV(x + (n * b.c + c) * b.inner, b.inner, mu);
                var = s2 / (double)count;
                if (rmean)
                    rmean[c] = (T)((1 - m) * rmean[c] + m * mu);
                if (rvar)
                    rvar[c] = (T)((1 - m) * rvar[c] + m * var * (double)count / (double)(count - 1));
            } else {
                mu = rmean[c];
                var = rvar[c];
            }
            mean[c] = mu;
            inv[c] = 1 / sqrt(var + eps);
            /* y = k (x − μ) + β, k = γ / √(σ² + ε), in double: x − μ first, so nothing cancels
             * when |μ| dwarfs the spread (vectorized all the same) */
            double k = (gamma ? gamma[c] : 1) * inv[c], bias = beta ? beta[c] : 0;
            for (size_t n = 0; n < b.n; n++) {
                const T *xr = x + (n * b.c + c) * b.inner;
                T *yr = y + (n * b.c + c) * b.inner;
                if (!act) {
                    for (size_t i = 0; i < b.inner; i++)
                        yr[i] = (T)(k * (xr[i] - mu) + bias);
                    continue;
                }
                T z[BN_BLOCK]; /* y = g(z), a block of z at a time */
                for (size_t i0 = 0; i0 < b.inner; i0 += BN_BLOCK) {
                    size_t len = b.inner - i0 < BN_BLOCK ? b.inner - i0 : BN_BLOCK;
                    for (size_t i = 0; i < len; i++)
                        z[i] = (T)(k * (xr[i0 + i] - mu) + bias);
                    RULE_FWD(act, (T)alpha, z, yr + i0, len);
                }
            }
        }
    });
}

static tg_status
bn_forward(tg_node *nd)
{
    struct bn_job j = {nd, bn_of(nd)};
    size_t per = j.b.n * j.b.inner;
    tg__parallel_for(j.b.c, per ? ((size_t)1 << 14) / per + 1 : 1, bn_forward_part, &j);
    return TG_OK;
}

/* dz = dy ⊙ g'(z) for the len elements at x, y, dy (one block of a row), into dzb; z = k (x −
 * μ) + β into zb first when g' reads it */
#define BN_DZ(T, act, alpha, k, mu, bias, x, y, dy, zb, dzb, len)                              \
    do {                                                                                       \
        if ((act)->needs_x)                                                                    \
            for (size_t i_ = 0; i_ < (len); i_++)                                              \
                (zb)[i_] = (T)((k) * ((x)[i_] - (mu)) + (bias));                               \
        RULE_DZ(act, (T)(alpha), (act)->needs_x ? (zb) : NULL, y, dy, dzb, len);               \
    } while (0)

static void
bn_vjp_part(size_t begin, size_t end, void *ctx)
{
    struct bn_job *j = ctx;
    tg_node *nd = j->nd;
    struct bn b = j->b;
    const double *mean = nd->scratch, *inv = mean + b.c;
    bool training = nd->attr->keepdims;
    double count = (double)(b.n * b.inner);
    tg_tensor *xt = nd->in[0];
    double alpha;
    const struct tg__unary_rule *act = bn_act(nd, &alpha);
    TG__DISPATCH(nd->out->dtype, T, {
        const T *x = xt->data, *dy = nd->out->grad, *y = nd->out->data;
        const T *gamma = b.gamma ? b.gamma->data : NULL, *beta = b.beta ? b.beta->data : NULL;
        T *dx = xt->grad;
        T *dgamma = b.gamma && b.gamma->grad ? b.gamma->grad : NULL;
        T *dbeta = b.beta && b.beta->grad ? b.beta->grad : NULL;
        T zb[BN_BLOCK], dzb[BN_BLOCK];
        for (size_t c = begin; c < end; c++) {
            double k = (gamma ? gamma[c] : 1) * inv[c], mu = mean[c];
            double bias = beta ? beta[c] : 0;
            double g = 0, h = 0;
            for (size_t n = 0; n < b.n; n++) {
                size_t r = (n * b.c + c) * b.inner;
                if (!act) {
                    NORM_DSUMS(dy + r, x + r, b.inner, mu, &g, &h);
                    continue;
                }
                for (size_t i0 = 0; i0 < b.inner; i0 += BN_BLOCK) {
                    size_t len = b.inner - i0 < BN_BLOCK ? b.inner - i0 : BN_BLOCK;
                    BN_DZ(T, act, alpha, k, mu, bias, x + r + i0, y + r + i0, dy + r + i0, zb, dzb, len);
                    NORM_DSUMS((const T *)dzb, x + r + i0, len, mu, &g, &h);
                }
            }
            h *= inv[c]; /* Σ dz ⊙ x̂ */
            if (dgamma)
                dgamma[c] += (T)h;
            if (dbeta)
                dbeta[c] += (T)g;
            if (!dx)
                continue;
            /* dx += k (dz − g/M − x̂ h/M) = k (dz − g/M) + a (x − μ), a = −k inv h/M; in double,
             * from x − μ, as the forward (the three terms nearly cancel for a loss that is
             * nearly invariant to the channel's shift and scale) */
            double a = training ? -k * inv[c] * h / count : 0;
            double gm = training ? g / count : 0;
            for (size_t n = 0; n < b.n; n++) {
                size_t r = (n * b.c + c) * b.inner;
                const T *xr = x + r, *dyr = dy + r;
                T *dxr = dx + r;
                if (!act) {
                    for (size_t i = 0; i < b.inner; i++)
                        dxr[i] += (T)(k * (dyr[i] - gm) + a * (xr[i] - mu));
                    continue;
                }
                for (size_t i0 = 0; i0 < b.inner; i0 += BN_BLOCK) {
                    size_t len = b.inner - i0 < BN_BLOCK ? b.inner - i0 : BN_BLOCK;
                    BN_DZ(T, act, alpha, k, mu, bias, x + r + i0, y + r + i0, dy + r + i0, zb, dzb, len);
                    for (size_t i = 0; i < len; i++)
                        dxr[i0 + i] += (T)(k * (dzb[i] - gm) + a * (xr[i0 + i] - mu));
                }
            }
        }
    });
}

static tg_status
bn_vjp(tg_node *nd)
{
    struct bn_job j = {nd, bn_of(nd)};
    if (!nd->in[0]->grad && !(j.b.gamma && j.b.gamma->grad) && !(j.b.beta && j.b.beta->grad))
        return TG_OK;
    size_t per = j.b.n * j.b.inner;
    tg__parallel_for(j.b.c, per ? ((size_t)1 << 14) / per + 1 : 1, bn_vjp_part, &j);
    return TG_OK;
}

/* ẏ of the channels [begin, end): ż = k ẋ + slope (x − μ) + shift in double, slope and shift
 * per channel from the ẋ sums (training) and γ̇, β̇; through g' when an activation is fused */
static void
bn_jvp_part(size_t begin, size_t end, void *ctx)
{
    struct bn_job *j = ctx;
    tg_node *nd = j->nd;
    struct bn b = j->b;
    const double *mean = nd->scratch, *inv = mean + b.c;
    bool training = nd->attr->keepdims;
    double count = (double)(b.n * b.inner), alpha;
    const struct tg__unary_rule *act = bn_act(nd, &alpha);
    TG__DISPATCH(nd->out->dtype, T, {
        const T *x = nd->in[0]->data, *xdot = nd->in[0]->tangent, *y = nd->out->data;
        const T *gamma = b.gamma ? b.gamma->data : NULL, *beta = b.beta ? b.beta->data : NULL;
        const T *gamma_dot = b.gamma ? b.gamma->tangent : NULL;
        const T *beta_dot = b.beta ? b.beta->tangent : NULL;
        T *ydot = nd->out->tangent;
        T zb[BN_BLOCK], zdot[BN_BLOCK];
        for (size_t c = begin; c < end; c++) {
            double k = (gamma ? gamma[c] : 1) * inv[c], mu = mean[c];
            double slope = gamma_dot ? gamma_dot[c] * inv[c] : 0;
            double shift = beta_dot ? beta_dot[c] : 0;
            if (xdot && training) { /* μ̇ = s/M; a = −k inv² h/M */
                double s = 0, h = 0;
                for (size_t n = 0; n < b.n; n++) {
                    size_t r = (n * b.c + c) * b.inner;
                    NORM_DSUMS(xdot + r, x + r, b.inner, mu, &s, &h);
                }
                slope -= k * inv[c] * inv[c] * h / count;
                shift -= k * s / count;
            }
            double kx = xdot ? k : 0, bias = beta ? beta[c] : 0;
            for (size_t n = 0; n < b.n; n++) {
                size_t r = (n * b.c + c) * b.inner;
                const T *xr = x + r, *xdr = xdot ? xdot + r : NULL;
                T *ydr = ydot + r;
                if (!act) {
                    for (size_t i = 0; i < b.inner; i++)
                        ydr[i] = (T)((xdr ? kx * xdr[i] : 0) + slope * (xr[i] - mu) + shift);
                    continue;
                }
                for (size_t i0 = 0; i0 < b.inner; i0 += BN_BLOCK) {
                    size_t len = b.inner - i0 < BN_BLOCK ? b.inner - i0 : BN_BLOCK;
                    for (size_t i = 0; i < len; i++)
                        zdot[i] = (T)((xdr ? kx * xdr[i0 + i] : 0) + slope * (xr[i0 + i] - mu) +
                                      shift);
                    if (act->needs_x)
                        for (size_t i = 0; i < len; i++)
                            zb[i] = (T)(k * (xr[i0 + i] - mu) + bias);
                    RULE_DZ(act, (T)alpha, act->needs_x ? zb : NULL, y + r + i0, zdot,
                            ydr + i0, len);
                }
            }
        }
    });
}

static tg_status
bn_jvp(tg_node *nd)
{
    struct bn_job j = {nd, bn_of(nd)};
    size_t per = j.b.n * j.b.inner;
    tg__parallel_for(j.b.c, per ? ((size_t)1 << 14) / per + 1 : 1, bn_jvp_part, &j);
    return TG_OK;
}

/* (1, C, 1, …): x's shape with every axis but the channel axis 1 made 1, the shape a
 * per-channel vector takes to broadcast against x; the other axes into axes[], their count
 * returned */
static int
channel_view(const tg_tensor *x, int64_t *dims, int *axes)
{
    int n = 0;
    for (int i = 0; i < x->ndim; i++) {
        dims[i] = i == 1 ? x->dims[1] : 1;
        if (i != 1)
            axes[n++] = i;
    }
    return n;
}

/* The per-channel doubles v as a constant (1, C, 1, …) tensor of x's dtype */
static tg_tensor *
channel_constant(tg_tape *t, const tg_tensor *x, const double *v)
{
    int64_t dims[TG_MAX_DIMS];
    int axes[TG_MAX_DIMS];
    channel_view(x, dims, axes);
    tg_tensor *c = tg__tensor(tg_tensor_new(t, x->dtype, x->ndim, dims, NULL));
    if (c->kind == TG__KIND_NIL)
        return c;
    TG__DISPATCH(x->dtype, T, {
        T *d = c->data;
        for (int64_t i = 0; i < x->dims[1]; i++)
            d[i] = (T)v[i];
    });
    return c;
}

tg_tensor *
tg__normalize_graph(tg_tape *t, tg_tensor *x, const int *axes, int n, double eps,
                    tg_tensor **r)
{
    tg_tensor *centered = tg_sub(t, x, tg_mean_axes(t, x, axes, n, true));
    tg_tensor *var = tg_mean_axes(t, tg_square(t, centered), axes, n, true);
    *r = tg_pow(t, tg_add(t, var, tg__constant(t, tg__tensor(x)->dtype, eps)), -0.5);
    return tg_mul(t, centered, *r);
}

tg_tensor *
tg__normalized_dx_graph(tg_tape *t, tg_tensor *u, tg_tensor *xhat, tg_tensor *r,
                        const int *axes, int n)
{
    tg_tensor *mean_u = tg_mean_axes(t, u, axes, n, true);
    tg_tensor *mean_ux = tg_mean_axes(t, tg_mul(t, u, xhat), axes, n, true);
    return tg_mul(t, r, tg_sub(t, tg_sub(t, u, mean_u), tg_mul(t, xhat, mean_ux)));
}

/* dz = dy ⊙ g'(z) for the fused activation g of a batch_norm node, with ops: sigmoid, tanh,
 * softplus and gelu by their own vjp_graph on y = g(z) (z recorded only for the g' that read
 * it); relu and leaky relu by a constant mask [z > 0] = [y > 0] (α = 0.01 > 0 keeps the sign) */
static tg_tensor *
bn_act_dz(tg_node *nd, tg_tensor *dy, tg_tensor *z)
{
    static const tg_op *const act_ops[] = {
        [TG_ACT_SIGMOID] = &tg__op_sigmoid, [TG_ACT_TANH] = &tg__op_tanh,
        [TG_ACT_SOFTPLUS] = &tg__op_softplus, [TG_ACT_GELU] = &tg__op_gelu,
    };
    tg_tape *t = nd->tape;
    tg_activation act = (tg_activation)nd->attr->axis;
    const tg_tensor *y = nd->out;
    if (act == TG_ACT_RELU || act == TG_ACT_LEAKY_RELU) {
        tg_tensor *mask = tg__tensor(tg_tensor_new(t, y->dtype, y->ndim, y->dims, NULL));
        if (mask->kind == TG__KIND_NIL)
            return mask;
        TG__DISPATCH(y->dtype, T, {
            const T *yv = y->data;
            T *m = mask->data;
            for (size_t i = 0; i < y->size; i++)
                m[i] = yv[i] > 0;
        });
        if (act == TG_ACT_RELU)
            return tg_mul(t, dy, mask);
        return tg_mul(t, dy, tg_where(t, mask, tg__constant(t, y->dtype, 1),
                                      tg__constant(t, y->dtype, 0.01)));
    }
    /* the activation's node as it would be, y = g(z): its vjp_graph reads only in[0] and out */
    tg_node g = *nd;
    g.op = act_ops[act];
    g.n_in = 1;
    g.in = g.in_small;
    g.in_small[0] = z;
    return g.op->vjp_graph(&g, 0, dy);
}

/* For tg_grad, with ops over the axes (N, spatial) of each channel; ε and, in evaluation, the
 * running statistics are constants (attr.stats are no inputs of the node: no gradient):
 *   training: x̂ = (x − mean(x)) r, r = (mean((x − mean(x))²) + ε)^−½ recomputed with ops;
 *   evaluation: x̂ = (x − r_μ) r, r = (r_σ² + ε)^−½, the forward's, as constants;
 *   dz = dy ⊙ g'(z), z = γ x̂ + β recomputed where g' reads it (dz = dy without g);
 *   dγ = Σ dz ⊙ x̂,  dβ = Σ dz,
 *   dx = r (u − mean(u) − x̂ mean(u ⊙ x̂)) (training) or r u (evaluation), u = γ dz */
static tg_tensor *
bn_vjp_graph(tg_node *nd, int k, tg_tensor *dy)
{
    tg_tape *t = nd->tape;
    tg_tensor *x = nd->in[0];
    if (x->size == 0) /* empty x: every gradient is empty or a sum of nothing, 0 */
        return NULL;
    tg_tensor *gamma = nd->attr->axes & 1 ? nd->in[1] : NULL;
    tg_tensor *beta = nd->attr->axes & 2 ? nd->in[gamma ? 2 : 1] : NULL;
    bool training = nd->attr->keepdims, wants_gamma = gamma && k == 1;
    tg_activation act = (tg_activation)nd->attr->axis;
    bool needs_z = act == TG_ACT_SOFTPLUS || act == TG_ACT_GELU; /* their g' read z */
    int64_t cdims[TG_MAX_DIMS];
    int axes[TG_MAX_DIMS], n = channel_view(x, cdims, axes);
    tg_tensor *gamma_c = gamma ? tg_reshape(t, gamma, x->ndim, cdims) : NULL;
    tg_tensor *xhat = NULL, *r = NULL;
    if (k == 0 || wants_gamma || needs_z) {
        const double *mean = nd->scratch, *inv = mean + x->dims[1];
        if (training) {
            xhat = tg__normalize_graph(t, x, axes, n, nd->attr->scale2, &r);
        } else {
            r = channel_constant(t, x, inv);
            xhat = tg_mul(t, tg_sub(t, x, channel_constant(t, x, mean)), r);
        }
    }
    tg_tensor *dz = dy;
    if (act != TG_ACT_IDENTITY) {
        tg_tensor *z = &t->nil; /* read only by the g' that need it */
        if (needs_z) {
            z = gamma_c ? tg_mul(t, gamma_c, xhat) : xhat;
            if (beta)
                z = tg_add(t, z, tg_reshape(t, beta, x->ndim, cdims));
            z = tg__tensor(z);
        }
        dz = bn_act_dz(nd, dy, z);
    }
    if (k != 0) /* dγ or dβ: the sums over (N, spatial), a (C) vector */
        return tg_sum_axes(t, wants_gamma ? tg_mul(t, dz, xhat) : dz, axes, n, false);
    tg_tensor *u = gamma_c ? tg_mul(t, dz, gamma_c) : dz;
    return training ? tg__normalized_dx_graph(t, u, xhat, r, axes, n) : tg_mul(t, u, r);
}

const tg_op tg__op_batch_norm = {
    .name = "batch_norm",
    .n_inputs = TG_VARIADIC, /* x, then γ and β when given */
    .forward = bn_forward,
    .vjp = bn_vjp,
    .vjp_graph = bn_vjp_graph,
    .jvp = bn_jvp,
    .scratch_size = bn_scratch,
    .math = "y = g(γ (x − μ_c)/√(σ²_c + ε) + β) per channel (axis 1), g a fused activation or "
            "none; training: batch μ, σ² (biased) and running averages updated; evaluation: "
            "the running ones",
    .vjp_math = "dz = dy ⊙ g'(z); training: dx += γ/√(σ²+ε) (dz − Σdz/M − x̂ Σ(dz x̂)/M); "
                "evaluation: dx += dz γ/√(σ²+ε); dγ += Σ dz x̂, dβ += Σ dz",
    .jvp_math = "ż = γ̇ x̂ + γ x̂̇ + β̇, training: x̂̇ = (ẋ − Σẋ/M − x̂ Σ(x̂ ẋ)/M)/√(σ²+ε), "
                "evaluation: x̂̇ = ẋ/√(σ²+ε); ẏ = g'(z) ⊙ ż",
    .shapes = "x (N,C,…), γ, β, running mean and var (C) -> same as x",
};

/* Checks the per-channel vector *h (optional: NULL passes) and resolves the handle in place. */
static bool
channel_vector(tg_tape *t, const tg_tensor *x, tg_tensor **h, const char *what)
{
    if (!*h)
        return true;
    const tg_tensor *v = *h = tg__operand(t, "batch_norm", what, *h);
    if (!v)
        return false;
    if (v->ndim != 1 || v->dims[0] != x->dims[1] || v->dtype != x->dtype) {
        tg__fail(t, v->dtype != x->dtype ? TG_ERR_DTYPE : TG_ERR_SHAPE,
                 "batch_norm %s %s: %s %s %s must be a %s vector of %" PRId64 " (one per "
                 "channel)",
                 tg__name_text(x).s, tg__shape_text(x).s, what, tg__name_text(v).s,
                 tg__shape_text(v).s, tg_dtype_name(x->dtype), x->dims[1]);
        return false;
    }
    return true;
}

tg_tensor *
tg_batch_norm(tg_tape *t, tg_tensor *x, tg_tensor *gamma, tg_tensor *beta,
              tg_tensor *running_mean, tg_tensor *running_var, double momentum, double eps)
{
    return tg_batch_norm_act(t, x, gamma, beta, running_mean, running_var, momentum, eps,
                             TG_ACT_IDENTITY);
}

tg_tensor *
tg_batch_norm_act(tg_tape *t, tg_tensor *x, tg_tensor *gamma, tg_tensor *beta,
                  tg_tensor *running_mean, tg_tensor *running_var, double momentum, double eps,
                  tg_activation act)
{
    if (!t)
        return NULL;
    if (t->status != TG_OK || !(x = tg__operand(t, "batch_norm", "x", x)))
        return &t->nil;
    if (x->ndim < 2)
        return tg__fail(t, TG_ERR_SHAPE, "batch_norm %s %s: expected x (N, C, ...) of rank >= 2",
                        tg__name_text(x).s, tg__shape_text(x).s);
    if (!channel_vector(t, x, &gamma, "weight") || !channel_vector(t, x, &beta, "bias") ||
        !channel_vector(t, x, &running_mean, "running_mean") ||
        !channel_vector(t, x, &running_var, "running_var"))
        return &t->nil;
    if (!(eps > 0) || !isfinite(eps) || !(momentum >= 0 && momentum <= 1))
        return tg__fail(t, TG_ERR_ARG,
                        "batch_norm %s: eps = %g must be finite and > 0, momentum = %g in [0, 1]",
                        tg__name_text(x).s, eps, momentum);
    if ((unsigned)act > TG_ACT_GELU)
        return tg__fail(t, TG_ERR_ARG, "batch_norm %s: activation %d is not a tg_activation",
                        tg__name_text(x).s, (int)act);
    if (!running_mean != !running_var)
        return tg__fail(t, TG_ERR_ARG,
                        "batch_norm %s: give both running statistics or neither (running_%s is "
                        "NULL)",
                        tg__name_text(x).s, running_mean ? "var" : "mean");
    /* PyTorch: without running statistics, evaluation normalizes with the batch's too */
    bool training = !t->eval || !running_mean;
    size_t per_channel = x->dims[1] ? x->size / (size_t)x->dims[1] : 0;
    if (training && per_channel <= 1 && x->size > 0)
        return tg__fail(t, TG_ERR_SHAPE,
                        "batch_norm %s %s: training needs more than 1 value per channel (%zu "
                        "here); use evaluation mode or a larger batch",
                        tg__name_text(x).s, tg__shape_text(x).s, per_channel);
    struct tg__attr attr = {.scale = momentum, .scale2 = eps, .keepdims = training,
                            .axis = (int)act, .axes = (gamma ? 1u : 0u) | (beta ? 2u : 0u),
                            .stats = {running_mean, running_var}};
    tg_tensor *in[3] = {x, gamma ? gamma : beta, gamma ? beta : NULL};
    return tg__record(t, &tg__op_batch_norm, in, 1 + !!gamma + !!beta, &attr, NULL);
}

/*
 * group_norm (F.group_norm): x (N, C, ...) with C split into G groups of C/G channels; each
 * (sample, group) is normalized over its M = (C/G)·(spatial size) values, the same in training
 * and evaluation (no running statistics), then scaled and shifted per channel:
 *   μ, σ² (biased) over the group,  x̂ = (x − μ) / √(σ² + ε),  y = γ_c x̂ + β_c
 *   VJP, with u = γ_c dy (the gradient at x̂) and sums over the group:
 *     dx += (1/√(σ² + ε)) (u − Σu/M − x̂ Σ(u x̂)/M),  dγ_c += Σ_{n,i} dy x̂,  dβ_c += Σ_{n,i} dy
 *   JVP: ẏ = γ_c x̂̇ + γ̇_c x̂ + β̇_c, with sums over the group μ̇ = Σ ẋ / M and
 *     (σ²)˙ = 2 Σ (x − μ) ẋ / M, so  x̂̇ = (ẋ − μ̇ − x̂ Σ(x̂ ẋ)/M) / √(σ² + ε)
 * The scratch keeps μ and 1/√(σ² + ε) per (sample, group). Parts of the forward and of dx are
 * (sample, group) pairs; dγ and dβ are summed per channel over the samples in order. Every
 * sum is in double, in a fixed order.
 */
/* attr: axis = G, scale2 = ε, axes bit 0: γ given, bit 1: β given */
struct gn {
    size_t n, c, inner, groups, cg; /* cg channels per group */
    const tg_tensor *gamma, *beta;
};

static struct gn
gn_of(const tg_node *nd)
{
    struct bn b = bn_of(nd);
    struct gn g = {b.n, b.c, b.inner, (size_t)nd->attr->axis, b.c / (size_t)nd->attr->axis,
                   b.gamma, b.beta};
    return g;
}

static size_t
gn_scratch(const tg_node *nd)
{
    return 2 * (size_t)nd->in[0]->dims[0] * (size_t)nd->attr->axis * sizeof(double);
}

struct gn_job {
    tg_node *nd;
    struct gn g;
};

static void
gn_forward_part(size_t begin, size_t end, void *ctx)
{
    struct gn_job *j = ctx;
    tg_node *nd = j->nd;
    struct gn g = j->g;
    double *mean = nd->scratch, *inv = mean + g.n * g.groups;
    size_t len = g.cg * g.inner; /* a group's values are contiguous */
    TG__DISPATCH(nd->out->dtype, T, {
        const T *x = nd->in[0]->data, *gamma = g.gamma ? g.gamma->data : NULL;
        const T *beta = g.beta ? g.beta->data : NULL;
        T *y = nd->out->data;
        for (size_t ng = begin; ng < end; ng++) {
            const T *xg = x + ng * len;
            double mu = NORM_SUM(xg, len) / (double)len;
            double iv = 1 / sqrt(NORM_SQDEV(xg, len, mu) / (double)len + nd->attr->scale2);
            mean[ng] = mu, inv[ng] = iv;
            for (size_t cc = 0; cc < g.cg; cc++) {
                size_t c = ng % g.groups * g.cg + cc;
                double k = (gamma ? gamma[c] : 1) * iv, bias = beta ? beta[c] : 0;
                const T *xr = xg + cc * g.inner;
                T *yr = y + ng * len + cc * g.inner;
                for (size_t i = 0; i < g.inner; i++)
                    yr[i] = (T)(k * (xr[i] - mu) + bias);
            }
        }
    });
}

static tg_status
gn_forward(tg_node *nd)
{
    struct gn_job j = {nd, gn_of(nd)};
    size_t len = j.g.cg * j.g.inner;
    tg__parallel_for(j.g.n * j.g.groups, len ? ((size_t)1 << 14) / len + 1 : 1,
                     gn_forward_part, &j);
    return TG_OK;
}

/* dx for the (sample, group) pairs [begin, end) */
static void
gn_dx_part(size_t begin, size_t end, void *ctx)
{
    struct gn_job *j = ctx;
    tg_node *nd = j->nd;
    struct gn g = j->g;
    const double *mean = nd->scratch, *inv = mean + g.n * g.groups;
    size_t len = g.cg * g.inner;
    TG__DISPATCH(nd->out->dtype, T, {
        const T *x = nd->in[0]->data, *dy = nd->out->grad;
        const T *gamma = g.gamma ? g.gamma->data : NULL;
        T *dx = nd->in[0]->grad;
        for (size_t ng = begin; ng < end; ng++) {
            double su = 0, sux = 0; /* Σu and Σ u (x − μ) over the group */
            for (size_t cc = 0; cc < g.cg; cc++) {
                size_t c = ng % g.groups * g.cg + cc, at = ng * len + cc * g.inner;
                double gc = gamma ? gamma[c] : 1, s = 0, h = 0;
                NORM_DSUMS(dy + at, x + at, g.inner, mean[ng], &s, &h);
                su += gc * s, sux += gc * h;
            }
            double iv = inv[ng], m = (double)len;
            double a = -iv * iv * iv * sux / m, e = -iv * su / m; /* dx = iv u + a (x−μ) + e */
            for (size_t cc = 0; cc < g.cg; cc++) {
                size_t c = ng % g.groups * g.cg + cc, at = ng * len + cc * g.inner;
                double k = (gamma ? gamma[c] : 1) * iv;
                for (size_t i = 0; i < g.inner; i++)
                    dx[at + i] += (T)(k * dy[at + i] + a * (x[at + i] - mean[ng]) + e);
            }
        }
    });
}

/* dγ and dβ for the channels [begin, end) */
static void
gn_affine_part(size_t begin, size_t end, void *ctx)
{
    struct gn_job *j = ctx;
    tg_node *nd = j->nd;
    struct gn g = j->g;
    const double *mean = nd->scratch, *inv = mean + g.n * g.groups;
    TG__DISPATCH(nd->out->dtype, T, {
        const T *x = nd->in[0]->data, *dy = nd->out->grad;
        T *dgamma = g.gamma && g.gamma->grad ? g.gamma->grad : NULL;
        T *dbeta = g.beta && g.beta->grad ? g.beta->grad : NULL;
        for (size_t c = begin; c < end; c++) {
            double s = 0, h = 0;
            for (size_t n = 0; n < g.n; n++) {
                size_t ng = n * g.groups + c / g.cg, at = (n * g.c + c) * g.inner;
                double sn = 0, hn = 0;
                NORM_DSUMS(dy + at, x + at, g.inner, mean[ng], &sn, &hn);
                s += sn, h += hn * inv[ng];
            }
            if (dgamma)
                dgamma[c] += (T)h;
            if (dbeta)
                dbeta[c] += (T)s;
        }
    });
}

static tg_status
gn_vjp(tg_node *nd)
{
    struct gn_job j = {nd, gn_of(nd)};
    size_t len = j.g.cg * j.g.inner;
    if (nd->in[0]->grad)
        tg__parallel_for(j.g.n * j.g.groups, len ? ((size_t)1 << 14) / len + 1 : 1, gn_dx_part,
                         &j);
    if ((j.g.gamma && j.g.gamma->grad) || (j.g.beta && j.g.beta->grad))
        tg__parallel_for(j.g.c, 64, gn_affine_part, &j);
    return TG_OK;
}

/* ẏ for the (sample, group) pairs [begin, end): ẏ = k ẋ + slope_c (x − μ) + shift_c in double,
 * k = γ_c iv, from the group's ẋ sums s = Σ ẋ, h = Σ (x − μ) ẋ:
 *   slope_c = γ̇_c iv − k iv² h/M,  shift_c = β̇_c − k s/M */
static void
gn_jvp_part(size_t begin, size_t end, void *ctx)
{
    struct gn_job *j = ctx;
    tg_node *nd = j->nd;
    struct gn g = j->g;
    const double *mean = nd->scratch, *inv = mean + g.n * g.groups;
    size_t len = g.cg * g.inner;
    TG__DISPATCH(nd->out->dtype, T, {
        const T *x = nd->in[0]->data, *xdot = nd->in[0]->tangent;
        const T *gamma = g.gamma ? g.gamma->data : NULL;
        const T *gamma_dot = g.gamma ? g.gamma->tangent : NULL;
        const T *beta_dot = g.beta ? g.beta->tangent : NULL;
        T *ydot = nd->out->tangent;
        for (size_t ng = begin; ng < end; ng++) {
            double mu = mean[ng], iv = inv[ng], s = 0, h = 0;
            if (xdot)
                NORM_DSUMS(xdot + ng * len, x + ng * len, len, mu, &s, &h);
            for (size_t cc = 0; cc < g.cg; cc++) {
                size_t c = ng % g.groups * g.cg + cc, at = ng * len + cc * g.inner;
                double k = (gamma ? gamma[c] : 1) * iv;
                double slope = (gamma_dot ? gamma_dot[c] * iv : 0) - k * iv * iv * h / (double)len;
                double shift = (beta_dot ? beta_dot[c] : 0) - k * s / (double)len;
                if (!xdot)
                    for (size_t i = 0; i < g.inner; i++)
                        ydot[at + i] = (T)(slope * (x[at + i] - mu) + shift);
                else
                    for (size_t i = 0; i < g.inner; i++)
                        ydot[at + i] = (T)(k * xdot[at + i] + slope * (x[at + i] - mu) + shift);
            }
        }
    });
}

static tg_status
gn_jvp(tg_node *nd)
{
    struct gn_job j = {nd, gn_of(nd)};
    size_t len = j.g.cg * j.g.inner;
    tg__parallel_for(j.g.n * j.g.groups, len ? ((size_t)1 << 14) / len + 1 : 1, gn_jvp_part,
                     &j);
    return TG_OK;
}

/* For tg_grad, with ops: x viewed as (N, G, M), M = (C/G)·(spatial size), a group a row:
 *   x̂ = (x − mean(x)) r, r = (mean((x − mean(x))²) + ε)^−½ per row, recomputed with ops;
 *   dx = r (u − mean(u) − x̂ mean(u ⊙ x̂)) per row, u = γ dy;
 *   dγ = Σ_{n,i} dy ⊙ x̂,  dβ = Σ_{n,i} dy, per channel */
static tg_tensor *
gn_vjp_graph(tg_node *nd, int k, tg_tensor *dy)
{
    tg_tape *t = nd->tape;
    tg_tensor *x = nd->in[0];
    if (x->size == 0) /* empty x: every gradient is empty or a sum of nothing, 0 */
        return NULL;
    tg_tensor *gamma = nd->attr->axes & 1 ? nd->in[1] : NULL;
    int64_t cdims[TG_MAX_DIMS];
    int caxes[TG_MAX_DIMS], nc = channel_view(x, cdims, caxes);
    if (k != 0 && !(gamma && k == 1)) /* dβ */
        return tg_sum_axes(t, dy, caxes, nc, false);
    int64_t groups = nd->attr->axis, rows = x->dims[0] * groups;
    int64_t grouped[3] = {x->dims[0], groups, rows ? (int64_t)x->size / rows : 0};
    const int row_axis = 2;
    tg_tensor *r, *xhat = tg__normalize_graph(t, tg_reshape(t, x, 3, grouped), &row_axis, 1,
                                              nd->attr->scale2, &r); /* (N, G, M) */
    if (k != 0) /* dγ */
        return tg_sum_axes(t, tg_mul(t, dy, tg_reshape(t, xhat, x->ndim, x->dims)), caxes, nc,
                           false);
    tg_tensor *u = gamma ? tg_mul(t, dy, tg_reshape(t, gamma, x->ndim, cdims)) : dy;
    tg_tensor *dx = tg__normalized_dx_graph(t, tg_reshape(t, u, 3, grouped), xhat, r, &row_axis, 1);
    return tg_reshape(t, dx, x->ndim, x->dims);
}

const tg_op tg__op_group_norm = {
    .name = "group_norm",
    .n_inputs = TG_VARIADIC, /* x, then γ and β when given */
    .forward = gn_forward,
    .vjp = gn_vjp,
    .vjp_graph = gn_vjp_graph,
    .jvp = gn_jvp,
    .scratch_size = gn_scratch,
    .math = "y = γ_c (x − μ_{n,g})/√(σ²_{n,g} + ε) + β_c, μ, σ² (biased) over each sample's "
            "group of C/G channels",
    .vjp_math = "u = γ dy: dx += (u − Σu/M − x̂ Σ(u x̂)/M)/√(σ²+ε) per group; dγ += Σ_{n,i} dy "
                "x̂, dβ += Σ_{n,i} dy",
    .jvp_math = "ẏ = γ x̂̇ + γ̇ x̂ + β̇, x̂̇ = (ẋ − Σẋ/M − x̂ Σ(x̂ ẋ)/M)/√(σ²+ε) per group",
    .shapes = "x (N,C,…), γ, β (C), G divides C -> same as x",
};

tg_tensor *
tg_group_norm(tg_tape *t, tg_tensor *x, int64_t groups, tg_tensor *gamma, tg_tensor *beta,
              double eps)
{
    if (!t)
        return NULL;
    if (t->status != TG_OK || !(x = tg__operand(t, "group_norm", "x", x)))
        return &t->nil;
    if (x->ndim < 2)
        return tg__fail(t, TG_ERR_SHAPE, "group_norm %s %s: expected x (N, C, ...) of rank >= 2",
                        tg__name_text(x).s, tg__shape_text(x).s);
    if (groups < 1 || groups > INT32_MAX || x->dims[1] % groups)
        return tg__fail(t, TG_ERR_ARG,
                        "group_norm %s %s: groups %" PRId64 " must be >= 1 and divide the %" PRId64
                        " channels",
                        tg__name_text(x).s, tg__shape_text(x).s, groups, x->dims[1]);
    if (!(eps > 0) || !isfinite(eps))
        return tg__fail(t, TG_ERR_ARG, "group_norm %s: eps = %g must be finite and > 0",
                        tg__name_text(x).s, eps);
    const char *what[2] = {"weight", "bias"};
    tg_tensor *v[2] = {gamma, beta};
    for (int k = 0; k < 2; k++) {
        if (!v[k])
            continue;
        if (!(v[k] = tg__operand(t, "group_norm", what[k], v[k])))
            return &t->nil;
        if (v[k]->ndim != 1 || v[k]->dims[0] != x->dims[1])
            return tg__fail(t, TG_ERR_SHAPE,
                            "group_norm %s %s: %s %s %s must be a vector of %" PRId64
                            " (one per channel)",
                            tg__name_text(x).s, tg__shape_text(x).s, what[k],
                            tg__name_text(v[k]).s, tg__shape_text(v[k]).s, x->dims[1]);
    }
    struct tg__attr attr = {.scale2 = eps, .axis = (int)groups,
                            .axes = (gamma ? 1u : 0u) | (beta ? 2u : 0u)};
    tg_tensor *in[3] = {x, gamma ? gamma : beta, gamma ? beta : NULL};
    return tg__record(t, &tg__op_group_norm, in, 1 + !!gamma + !!beta, &attr, NULL);
}
