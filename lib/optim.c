/*
 * Optimizers: SGD (momentum, Nesterov, weight decay), Adam, AdamW; global-norm clipping;
 * learning-rate schedules. The rules are written out in <tapegrad/optim.h>.
 *
 * State (velocity, Adam's m and v) is kept in parameter sets that mirror the model, so the
 * update is one pass over four (at most) contiguous buffers of equal length in the same order,
 * and the checkpoint module saves and loads it by name like any parameter set. The step count
 * is a double so that it can be a raw F64 checkpoint buffer.
 *
 * tg_sgd (the core API in tapegrad.h) is a thin wrapper over a TG_OPTIM_SGD optimizer.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <tgmath.h>

#include <tapegrad/checkpoint.h>
#include <tapegrad/optim.h>

#include "internal.h"
#include "kernels/kernels.h"

#define MAX_SLOTS 2
#define MAX_EXACT_STEPS 9007199254740992.0 /* 2^53: every whole double below it is exact */
#define CLIP_EPS 1e-6                      /* torch.nn.utils.clip_grad_norm_'s guard */
#define PI 3.14159265358979323846

struct tg_optim {
    tg_params *params;
    tg_optim_options opt;
    int n_slots;
    const char *slot_names[MAX_SLOTS];
    tg_params *slots[MAX_SLOTS]; /* mirror params: same names, shapes, dtype, order */
    double steps;                /* updates done; a whole number (see MAX_EXACT_STEPS) */
    double last_norm;
    struct tg__step_trial step_threads; /* one thread or all for the steps (kernels.h) */
    char errmsg[TG__ERRMSG_SIZE];
};

static void
optim_fail(tg_optim *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
optim_fail(tg_optim *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(o->errmsg, sizeof o->errmsg, fmt, ap);
    va_end(ap);
}

/* ---------------------------------------------------------------------------------------
 * Schedules.
 */

static const char *
schedule_kind_name(tg_schedule_kind k)
{
    switch (k) {
    case TG_SCHEDULE_CONSTANT:
        return "constant";
    case TG_SCHEDULE_STEP:
        return "step";
    case TG_SCHEDULE_COSINE:
        return "cosine";
    }
    return "?";
}

tg_status
tg_schedule_check(const tg_schedule *s, double base_lr, char *err, size_t errsize)
{
    char tmp[TG__ERRMSG_SIZE];
    if (!err || errsize == 0)
        err = tmp, errsize = sizeof tmp;
    err[0] = '\0';
    if (!s) {
        snprintf(err, errsize, "schedule: NULL schedule");
        return TG_ERR_ARG;
    }
    const char *kn = schedule_kind_name(s->kind);
    if (s->kind != TG_SCHEDULE_CONSTANT && s->kind != TG_SCHEDULE_STEP &&
        s->kind != TG_SCHEDULE_COSINE)
        snprintf(err, errsize, "schedule: unknown kind %d", (int)s->kind);
    else if (!isfinite(base_lr) || base_lr < 0)
        snprintf(err, errsize, "schedule: learning rate %g must be finite and >= 0", base_lr);
    else if (s->warmup_steps < 0)
        snprintf(err, errsize, "schedule %s: warmup_steps %ld must be >= 0", kn,
                 s->warmup_steps);
    else if (s->kind == TG_SCHEDULE_STEP && s->step_size < 1)
        snprintf(err, errsize, "schedule step: step_size %ld must be >= 1", s->step_size);
    else if (s->kind == TG_SCHEDULE_STEP && !(s->gamma > 0 && s->gamma <= 1))
        snprintf(err, errsize, "schedule step: gamma %g must be in (0, 1]", s->gamma);
    else if (s->kind == TG_SCHEDULE_COSINE && s->total_steps <= s->warmup_steps)
        snprintf(err, errsize,
                 "schedule cosine: total_steps %ld must exceed warmup_steps %ld (they include "
                 "the warm-up)",
                 s->total_steps, s->warmup_steps);
    else if (s->kind == TG_SCHEDULE_COSINE && !(s->min_lr >= 0 && s->min_lr <= base_lr))
        snprintf(err, errsize, "schedule cosine: min_lr %g must be in [0, lr %g]", s->min_lr,
                 base_lr);
    else
        return TG_OK;
    return TG_ERR_ARG;
}

double
tg_lr_at(const tg_schedule *s, double base_lr, long step)
{
    if (step < 0 || tg_schedule_check(s, base_lr, NULL, 0) != TG_OK)
        return NAN;
    if (step < s->warmup_steps)
        return base_lr * (double)(step + 1) / (double)s->warmup_steps;
    long t = step - s->warmup_steps;
    switch (s->kind) {
    case TG_SCHEDULE_CONSTANT:
        break;
    case TG_SCHEDULE_STEP:
        return base_lr * pow(s->gamma, (double)(t / s->step_size));
    case TG_SCHEDULE_COSINE: {
        long d = s->total_steps - s->warmup_steps;
        if (t >= d)
            return s->min_lr;
        return s->min_lr + (base_lr - s->min_lr) * 0.5 * (1.0 + cos(PI * (double)t / (double)d));
    }
    }
    return base_lr;
}

/* ---------------------------------------------------------------------------------------
 * Options.
 */

const char *
tg_optim_kind_name(tg_optim_kind kind)
{
    switch (kind) {
    case TG_OPTIM_SGD:
        return "sgd";
    case TG_OPTIM_ADAM:
        return "adam";
    case TG_OPTIM_ADAMW:
        return "adamw";
    }
    return "?";
}

tg_optim_options
tg_optim_defaults(tg_optim_kind kind)
{
    tg_optim_options o = {.kind = kind, .lr = 0.01};
    if (kind == TG_OPTIM_ADAM || kind == TG_OPTIM_ADAMW) {
        o.lr = 1e-3;
        o.beta1 = 0.9;
        o.beta2 = 0.999;
        o.eps = 1e-8;
        o.weight_decay = kind == TG_OPTIM_ADAMW ? 0.01 : 0;
    }
    return o;
}

/* NULL when o is valid, else a message in buf. */
static const char *
check_options(const tg_optim_options *o, char *buf, size_t size)
{
    const char *k = tg_optim_kind_name(o->kind);
    bool adam = o->kind == TG_OPTIM_ADAM || o->kind == TG_OPTIM_ADAMW;
    if (o->kind != TG_OPTIM_SGD && !adam)
        snprintf(buf, size, "optim: unknown kind %d", (int)o->kind);
    else if (!isfinite(o->lr) || o->lr < 0)
        snprintf(buf, size, "%s: learning rate %g must be finite and >= 0", k, o->lr);
    else if (!isfinite(o->weight_decay) || o->weight_decay < 0)
        snprintf(buf, size, "%s: weight decay %g must be finite and >= 0", k, o->weight_decay);
    else if (!isfinite(o->clip_norm) || o->clip_norm < 0)
        snprintf(buf, size, "%s: clip_norm %g must be finite and >= 0 (0 turns clipping off)", k,
                 o->clip_norm);
    else if (o->kind == TG_OPTIM_SGD && !(o->momentum >= 0 && o->momentum < 1))
        snprintf(buf, size, "%s: momentum %g must be in [0, 1)", k, o->momentum);
    else if (o->kind == TG_OPTIM_SGD && o->nesterov && o->momentum == 0)
        snprintf(buf, size, "%s: Nesterov needs a momentum > 0", k);
    else if (adam && !(o->beta1 >= 0 && o->beta1 < 1))
        snprintf(buf, size, "%s: beta1 %g must be in [0, 1)", k, o->beta1);
    else if (adam && !(o->beta2 >= 0 && o->beta2 < 1))
        snprintf(buf, size, "%s: beta2 %g must be in [0, 1)", k, o->beta2);
    else if (adam && !(isfinite(o->eps) && o->eps > 0))
        snprintf(buf, size, "%s: eps %g must be finite and > 0 (start from tg_optim_defaults)",
                 k, o->eps);
    else {
        size_t len = (size_t)snprintf(buf, size, "%s: ", k);
        if (len >= size)
            len = 0;
        if (tg_schedule_check(&o->schedule, o->lr, buf + len, size - len) == TG_OK)
            return NULL;
    }
    return buf;
}

/* ---------------------------------------------------------------------------------------
 * State: mirror parameter sets, grown to match the model.
 */

/* Adds zero-filled mirrors of the model's parameters that the slots lack. Allocates only when
 * the model grew since the last call. */
static tg_status
sync_state(tg_optim *o)
{
    tg_params *p = o->params;
    for (int k = 0; k < o->n_slots; k++) {
        tg_params *s = o->slots[k];
        for (size_t i = tg_params_count(s); i < tg_params_count(p); i++) {
            const tg_tensor *x = tg_params_get(p, i);
            if (!tg_params_add(s, x->name, x->ndim, x->dims)) {
                optim_fail(o, "%s: %s state for \"%s\": %s", tg_optim_kind_name(o->opt.kind),
                           o->slot_names[k], x->name, tg_params_error(s));
                return tg_params_status(s);
            }
        }
    }
    return TG_OK;
}

tg_optim *
tg_optim_new(tg_params *p, const tg_optim_options *opt, const char **err)
{
    static _Thread_local char msg[TG__ERRMSG_SIZE];
    const char *why = NULL;
    if (!p || !opt)
        why = "optim: params and options must not be NULL";
    else if (tg_params_status(p) != TG_OK) {
        snprintf(msg, sizeof msg, "%s: the parameter set is in an error state: %s",
                 tg_optim_kind_name(opt->kind), tg_params_error(p));
        why = msg;
    } else
        why = check_options(opt, msg, sizeof msg);
    tg_optim *o = why ? NULL : tg__calloc(1, sizeof *o);
    if (!why && !o)
        why = "optim: out of memory";
    if (o) {
        o->params = p;
        o->opt = *opt;
        o->last_norm = NAN;
        if (opt->kind == TG_OPTIM_SGD && opt->momentum > 0)
            o->slot_names[o->n_slots++] = "velocity";
        if (opt->kind != TG_OPTIM_SGD) {
            o->slot_names[o->n_slots++] = "m";
            o->slot_names[o->n_slots++] = "v";
        }
        for (int k = 0; k < o->n_slots && !why; k++)
            if (!(o->slots[k] = tg_params_new(p->dtype)))
                why = "optim: out of memory";
        if (!why && sync_state(o) != TG_OK) {
            snprintf(msg, sizeof msg, "%s", o->errmsg);
            why = msg;
        }
        if (why) {
            tg_optim_free(o);
            o = NULL;
        }
    }
    if (err)
        *err = why;
    return o;
}

void
tg_optim_free(tg_optim *o)
{
    if (!o)
        return;
    for (int k = 0; k < o->n_slots; k++)
        tg_params_free(o->slots[k]);
    tg__thread_cap_clear(); /* its steps are over: this thread runs on the full count again */
    tg__free(o);
}

const char *
tg_optim_error(const tg_optim *o)
{
    if (!o)
        return "optim: NULL optimizer";
    return o->errmsg[0] ? o->errmsg : NULL;
}

tg_status
tg_optim_set_lr(tg_optim *o, double lr)
{
    if (!o)
        return TG_ERR_ARG;
    tg_optim_options next = o->opt;
    next.lr = lr;
    if (check_options(&next, o->errmsg, sizeof o->errmsg))
        return TG_ERR_ARG;
    o->opt.lr = lr;
    o->errmsg[0] = '\0';
    return TG_OK;
}

double
tg_optim_lr(const tg_optim *o)
{
    if (!o || !(o->steps >= 0 && o->steps < MAX_EXACT_STEPS))
        return NAN;
    return tg_lr_at(&o->opt.schedule, o->opt.lr, (long)o->steps);
}

const tg_optim_options *
tg_optim_options_get(const tg_optim *o)
{
    return o ? &o->opt : NULL;
}

long
tg_optim_steps(const tg_optim *o)
{
    return o && o->steps >= 0 && o->steps < MAX_EXACT_STEPS ? (long)o->steps : -1;
}

tg_status
tg_optim_set_steps(tg_optim *o, long steps)
{
    if (!o)
        return TG_ERR_ARG;
    if (steps < 0 || (double)steps >= MAX_EXACT_STEPS) {
        optim_fail(o, "%s: step count %ld must be in [0, 2^53)", tg_optim_kind_name(o->opt.kind),
                   steps);
        return TG_ERR_ARG;
    }
    o->steps = (double)steps;
    o->errmsg[0] = '\0';
    return TG_OK;
}

double
tg_optim_last_grad_norm(const tg_optim *o)
{
    return o ? o->last_norm : NAN;
}

size_t
tg_optim_state_count(const tg_optim *o)
{
    return o ? (size_t)o->n_slots : 0;
}

const char *
tg_optim_state_name(const tg_optim *o, size_t i)
{
    return o && i < (size_t)o->n_slots ? o->slot_names[i] : NULL;
}

tg_params *
tg_optim_state(tg_optim *o, size_t i)
{
    return o && i < (size_t)o->n_slots ? o->slots[i] : NULL;
}

double *
tg_optim_steps_buffer(tg_optim *o)
{
    return o ? &o->steps : NULL;
}

tg_status
tg_optim_add_to_state_dict(tg_optim *o, struct tg_state_dict *sd, const char *prefix)
{
    if (!o || !sd)
        return TG_ERR_ARG;
    if (!prefix)
        prefix = "";
    tg_status s = sync_state(o);
    if (s != TG_OK)
        return s;
    /* the longest name made here is prefix + "velocity/" (or "step") */
    char name[TG_CHECKPOINT_NAME_MAX + 16];
    if (strlen(prefix) > TG_CHECKPOINT_NAME_MAX) {
        optim_fail(o, "%s: state dict prefix of %zu bytes is longer than %d",
                   tg_optim_kind_name(o->opt.kind), strlen(prefix), TG_CHECKPOINT_NAME_MAX);
        return TG_ERR_ARG;
    }
    for (int k = 0; k < o->n_slots; k++) {
        snprintf(name, sizeof name, "%s%s/", prefix, o->slot_names[k]);
        if ((s = tg_state_dict_add_params(sd, name, o->slots[k])) != TG_OK)
            return s;
    }
    snprintf(name, sizeof name, "%sstep", prefix);
    return tg_state_dict_add_buffer(sd, name, TG_F64, 0, NULL, &o->steps);
}

/* ---------------------------------------------------------------------------------------
 * The update.
 */

/* ‖g‖₂ over the whole gradient buffer, accumulated in double. */
static double
grad_norm(const tg_params *p)
{
    double ss = 0;
    TG__DISPATCH(p->dtype, T, {
        const T *g = p->grads;
        for (size_t i = 0; i < p->size; i++)
            ss += (double)g[i] * (double)g[i];
    });
    return sqrt(ss);
}

/*
 * The update pass over parameters [begin, end): purely elementwise, so tg__parallel_for may
 * split it between threads in any way and every parameter still gets the same arithmetic —
 * results are bit-identical for any thread count. It also zeroes the gradients for the next
 * step in the same pass (one read and one write of each array instead of two).
 */
struct update_pass {
    const tg_optim *o;
    double lr, clip;
};

/* Parameters per parallel chunk: a chunk's arrays (values, gradients, up to two slots) stay
 * within L2, and nets under 64k parameters run inline. */
#define UPDATE_GRAIN ((size_t)65536)

#define DEFINE_UPDATE_CHUNK(NAME, T)                                                           \
    static void NAME(size_t begin, size_t end, void *ctx)                                      \
    {                                                                                          \
        const struct update_pass *pass = ctx;                                                  \
        const tg_optim *o = pass->o;                                                           \
        const tg_params *p = o->params;                                                        \
        const tg_optim_options *op = &o->opt;                                                  \
        const double lr = pass->lr, clip = pass->clip, wd = op->weight_decay;                  \
        T *w = (T *)p->values + begin, *dw = (T *)p->grads + begin;                            \
        const T eta = (T)lr, c = (T)clip, lambda = (T)wd;                                      \
        const size_t n = end - begin;                                                          \
        if (op->kind == TG_OPTIM_SGD && op->momentum == 0) {                                   \
            for (size_t i = 0; i < n; i++) {                                                   \
                w[i] -= eta * (c * dw[i] + lambda * w[i]);                                     \
                dw[i] = 0;                                                                     \
            }                                                                                  \
        } else if (op->kind == TG_OPTIM_SGD) {                                                 \
            T *v = (T *)o->slots[0]->values + begin;                                           \
            const T mu = (T)op->momentum;                                                      \
            const bool nesterov = op->nesterov;                                                \
            for (size_t i = 0; i < n; i++) {                                                   \
                T g = c * dw[i] + lambda * w[i];                                               \
                v[i] = mu * v[i] + g;                                                          \
                w[i] -= eta * (nesterov ? g + mu * v[i] : v[i]);                               \
                dw[i] = 0;                                                                     \
            }                                                                                  \
        } else {                                                                               \
            T *m = (T *)o->slots[0]->values + begin, *v = (T *)o->slots[1]->values + begin;    \
            const double t = o->steps + 1;                                                     \
            const double bc1 = 1.0 - pow(op->beta1, t), bc2 = 1.0 - pow(op->beta2, t);         \
            /* 1 − β in double first: in float, 1 − 0.999f is off by 5e-5 relative */          \
            const T b1 = (T)op->beta1, b2 = (T)op->beta2, eps = (T)op->eps;                    \
            const T c1 = (T)(1.0 - op->beta1), c2 = (T)(1.0 - op->beta2);                      \
            const T step_size = (T)(lr / bc1), inv_sqrt_bc2 = (T)(1.0 / sqrt(bc2));            \
            const bool decoupled = op->kind == TG_OPTIM_ADAMW;                                 \
            const T l2 = decoupled ? (T)0 : lambda;                                            \
            const T decay = decoupled ? (T)(1.0 - lr * wd) : (T)1;                             \
            for (size_t i = 0; i < n; i++) {                                                   \
                T g = c * dw[i] + l2 * w[i];                                                   \
                m[i] = b1 * m[i] + c1 * g;                                                     \
                v[i] = b2 * v[i] + c2 * g * g;                                                 \
                w[i] = w[i] * decay - step_size * m[i] / (sqrt(v[i]) * inv_sqrt_bc2 + eps);    \
                dw[i] = 0;                                                                     \
            }                                                                                  \
        }                                                                                      \
    }

DEFINE_UPDATE_CHUNK(update_chunk_f32, float)
DEFINE_UPDATE_CHUNK(update_chunk_f64, double)

tg_status
tg_optim_step(tg_optim *o)
{
    if (!o)
        return TG_ERR_ARG;
    const char *k = tg_optim_kind_name(o->opt.kind);
    if (!(o->steps >= 0 && o->steps < MAX_EXACT_STEPS && o->steps == floor(o->steps))) {
        optim_fail(o, "%s: step count %g is not a whole number in [0, 2^53) (corrupt state?)", k,
                   o->steps);
        return TG_ERR_ARG;
    }
    tg_status st = sync_state(o);
    if (st != TG_OK)
        return st;
    /* A step boundary: the time since the last one is a whole step (this update, then the
     * next forward and backward, on the count this tick chose): one thread or all by trial
     * (kernels.h, tg__step_trial). Only the time depends on the choice. */
    tg__step_trial_tick(&o->step_threads, tg__now_ns());
    tg_params *p = o->params;
    const size_t n = p->size;
    const tg_optim_options *op = &o->opt;
    const double lr = tg_lr_at(&op->schedule, op->lr, (long)o->steps);

    /* clip: g ← g · min(1, c / (‖g‖ + 1e-6)), folded into the update pass */
    double clip = 1.0;
    o->last_norm = NAN;
    if (op->clip_norm > 0) {
        double norm = grad_norm(p);
        o->last_norm = norm;
        if (!isfinite(norm)) {
            optim_fail(o, "%s: clip: gradient norm is %g (non-finite gradient); parameters left "
                       "unchanged",
                       k, norm);
            return TG_ERR_NONFINITE;
        }
        clip = op->clip_norm / (norm + CLIP_EPS);
        if (clip > 1.0)
            clip = 1.0;
    }

    struct update_pass pass = {.o = o, .lr = lr, .clip = clip};
    tg__parallel_for(n, UPDATE_GRAIN, p->dtype == TG_F32 ? update_chunk_f32 : update_chunk_f64,
                     &pass);
    o->steps += 1;
    o->errmsg[0] = '\0';
    return TG_OK;
}

/* ---------------------------------------------------------------------------------------
 * tg_sgd: the core header's SGD, a TG_OPTIM_SGD optimizer underneath.
 */

struct tg_sgd {
    tg_optim *o;
};

tg_sgd *
tg_sgd_new(tg_params *p, const tg_sgd_options *opt, const char **err)
{
    if (!opt) {
        if (err)
            *err = "sgd: params and options must not be NULL";
        return NULL;
    }
    tg_optim_options o = {
        .kind = TG_OPTIM_SGD,
        .lr = opt->lr,
        .momentum = opt->momentum,
        .weight_decay = opt->weight_decay,
        .nesterov = opt->nesterov,
    };
    tg_sgd *s = tg__calloc(1, sizeof *s);
    if (!s) {
        if (err)
            *err = "sgd: out of memory";
        return NULL;
    }
    s->o = tg_optim_new(p, &o, err);
    if (!s->o) {
        tg__free(s);
        return NULL;
    }
    return s;
}

void
tg_sgd_free(tg_sgd *s)
{
    if (!s)
        return;
    tg_optim_free(s->o);
    tg__free(s);
}

const char *
tg_sgd_error(const tg_sgd *s)
{
    return s ? tg_optim_error(s->o) : NULL;
}

tg_status
tg_sgd_set_lr(tg_sgd *s, double lr)
{
    return s ? tg_optim_set_lr(s->o, lr) : TG_ERR_ARG;
}

tg_status
tg_sgd_step(tg_sgd *s)
{
    return s ? tg_optim_step(s->o) : TG_ERR_ARG;
}
