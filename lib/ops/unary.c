/*
 * The array loops shared by every elementwise one-input op (unary.h says how an op plugs in):
 * fixed chunks of TG__UNARY_GRAIN elements over tg__parallel_for; a VJP chunk computes
 * dy ⊙ g' into a stack block of BLOCK elements, then adds it into dx, so the VJP accumulates.
 */
#include "../kernels/kernels.h"
#include "unary.h"

enum { BLOCK = 1024 }; /* elements per stack block inside a chunk (8 KiB of double) */


/* Forward: y = g(x) over [b, e). */
static void
rule_forward(const struct tg__unary_rule *r, tg_dtype dt, double alpha, double beta, const void *x,
             void *y, size_t b, size_t e)
{
    if (dt == TG_F32)
        r->fwd_f32((float)alpha, (float)beta, (const float *)x + b, (float *)y + b, e - b);
    else
        r->fwd_f64(alpha, beta, (const double *)x + b, (double *)y + b, e - b);
}

/* dz = dy ⊙ g'(x) over n elements starting at `at` of x, y, dy; dz is a block of its own. */
static void
rule_dz(const struct tg__unary_rule *r, tg_dtype dt, double alpha, double beta, const void *x,
        const void *y, const void *dy, void *dz, size_t at, size_t n)
{
    if (dt == TG_F32)
        r->dz_f32((float)alpha, (float)beta, x ? (const float *)x + at : NULL, (const float *)y + at,
                  (const float *)dy + at, dz, n);
    else
        r->dz_f64(alpha, beta, x ? (const double *)x + at : NULL, (const double *)y + at,
                  (const double *)dy + at, dz, n);
}

/* dst[i] += src[i] */
TG__VEC_CLONES static void
acc_f32(float *restrict dst, const float *restrict src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] += src[i];
}

TG__VEC_CLONES static void
acc_f64(double *restrict dst, const double *restrict src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] += src[i];
}

struct act_job {
    const struct tg__unary_rule *rule;
    double alpha, beta;
    tg_dtype dt;
    const void *x, *y, *dy;
    void *out, *dx;
    bool assign; /* VJP: dx holds nothing yet: write dy ⊙ g' straight into it */
};

static void
act_fwd_chunk(size_t b, size_t e, void *vctx)
{
    const struct act_job *j = vctx;
    rule_forward(j->rule, j->dt, j->alpha, j->beta, j->x, j->out, b, e);
}

/* dx += dy ⊙ g': dy ⊙ g' goes into a stack block, then is added, so the VJP accumulates. */
static void
act_vjp_chunk(size_t b, size_t e, void *vctx)
{
    const struct act_job *j = vctx;
    if (j->assign) { /* dx = dy ⊙ g' */
        rule_dz(j->rule, j->dt, j->alpha, j->beta, j->rule->needs_x ? j->x : NULL, j->y, j->dy,
                (char *)j->dx + b * tg__dtype_bytes(j->dt), b, e - b);
        return;
    }
    double block[BLOCK]; /* BLOCK doubles, or 2·BLOCK floats of which BLOCK are used */
    for (size_t s = b; s < e; s += BLOCK) {
        size_t n = e - s < BLOCK ? e - s : BLOCK;
        rule_dz(j->rule, j->dt, j->alpha, j->beta, j->rule->needs_x ? j->x : NULL, j->y, j->dy, block, s,
                n);
        if (j->dt == TG_F32)
            acc_f32((float *)j->dx + s, (const float *)block, n);
        else
            acc_f64((double *)j->dx + s, block, n);
    }
}

tg_status
tg__unary_forward(tg_node *nd, const struct tg__unary_rule *rule)
{
    if (nd->out->size == 1) { /* a scalar graph: the one chunk's call, without the job */
        rule_forward(rule, nd->out->dtype, nd->attr->scale, nd->attr->scale2, nd->in[0]->data,
                     nd->out->data, 0, 1);
        return TG_OK;
    }
    struct act_job j = {.rule = rule, .alpha = nd->attr->scale, .beta = nd->attr->scale2, .dt = nd->out->dtype,
                        .x = nd->in[0]->data, .out = nd->out->data};
    tg__parallel_for(nd->out->size, TG__UNARY_GRAIN, act_fwd_chunk, &j);
    return TG_OK;
}

/* ẏ = g'(x) ⊙ ẋ: the VJP's kernel, dz = dy ⊙ g', with ẋ in place of dy, written straight
 * into the output's tangent (the same chunks, so any thread count gives the same bits). */
tg_status
tg__unary_jvp(tg_node *nd, const struct tg__unary_rule *rule)
{
    if (!nd->in[0]->tangent)
        return TG_OK;
    struct act_job j = {.rule = rule, .alpha = nd->attr->scale, .beta = nd->attr->scale2, .dt = nd->out->dtype,
                        .x = nd->in[0]->data, .y = nd->out->data, .dy = nd->in[0]->tangent,
                        .dx = nd->out->tangent, .assign = true};
    tg__parallel_for(nd->out->size, TG__UNARY_GRAIN, act_vjp_chunk, &j);
    return TG_OK;
}

tg_status
tg__unary_vjp(tg_node *nd, const struct tg__unary_rule *rule)
{
    tg_tensor *x = nd->in[0];
    if (!x->grad)
        return TG_OK;
    if (nd->out->size == 1) { /* a scalar graph: act_vjp_chunk's work on one element */
        bool assign = tg__grad_take_fresh(x);
        union {
            float f;
            double d;
        } dz;
        rule_dz(rule, nd->out->dtype, nd->attr->scale, nd->attr->scale2,
                rule->needs_x ? x->data : NULL, nd->out->data, nd->out->grad,
                assign ? x->grad : (void *)&dz, 0, 1);
        if (!assign) {
            if (nd->out->dtype == TG_F32)
                *(float *)x->grad += dz.f;
            else
                *(double *)x->grad += dz.d;
        }
        return TG_OK;
    }
    struct act_job j = {.rule = rule, .alpha = nd->attr->scale, .beta = nd->attr->scale2, .dt = nd->out->dtype,
                        .x = x->data, .y = nd->out->data, .dy = nd->out->grad,
                        .dx = x->grad, .assign = tg__grad_take_fresh(x)};
    tg__parallel_for(nd->out->size, TG__UNARY_GRAIN, act_vjp_chunk, &j);
    return TG_OK;
}

