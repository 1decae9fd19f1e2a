/*
 * Optimizers over a parameter set. Values and gradients are contiguous, so each update is one
 * pass over one buffer.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

struct tg_sgd {
    tg_params *params;
    tg_sgd_options opt;
    void *velocity; /* momentum buffer, same layout as the values; NULL when μ = 0 */
    size_t velocity_size;
    char errmsg[TG__ERRMSG_SIZE];
};

static const char *
check_sgd_options(const tg_sgd_options *o, char *buf, size_t size)
{
    if (!isfinite(o->lr) || o->lr < 0)
        snprintf(buf, size, "sgd: learning rate %g must be finite and >= 0", o->lr);
    else if (!isfinite(o->momentum) || o->momentum < 0 || o->momentum >= 1)
        snprintf(buf, size, "sgd: momentum %g must be in [0, 1)", o->momentum);
    else if (!isfinite(o->weight_decay) || o->weight_decay < 0)
        snprintf(buf, size, "sgd: weight decay %g must be finite and >= 0", o->weight_decay);
    else if (o->nesterov && o->momentum == 0)
        snprintf(buf, size, "sgd: Nesterov needs a momentum > 0");
    else
        return NULL;
    return buf;
}

tg_sgd *
tg_sgd_new(tg_params *p, const tg_sgd_options *opt, const char **err)
{
    static _Thread_local char msg[TG__ERRMSG_SIZE];
    const char *why = NULL;
    if (!p || !opt)
        why = "sgd: params and options must not be NULL";
    else
        why = check_sgd_options(opt, msg, sizeof msg);
    tg_sgd *s = why ? NULL : tg__calloc(1, sizeof *s);
    if (!why && !s)
        why = "sgd: out of memory";
    if (why) {
        if (err)
            *err = why;
        return NULL;
    }
    s->params = p;
    s->opt = *opt;
    if (err)
        *err = NULL;
    return s;
}

void
tg_sgd_free(tg_sgd *s)
{
    if (!s)
        return;
    tg__free(s->velocity);
    tg__free(s);
}

const char *
tg_sgd_error(const tg_sgd *s)
{
    return s && s->errmsg[0] ? s->errmsg : NULL;
}

tg_status
tg_sgd_set_lr(tg_sgd *s, double lr)
{
    if (!s)
        return TG_ERR_ARG;
    if (!isfinite(lr) || lr < 0) {
        snprintf(s->errmsg, sizeof s->errmsg, "sgd: learning rate %g must be finite and >= 0",
                 lr);
        return TG_ERR_ARG;
    }
    s->opt.lr = lr;
    return TG_OK;
}

/*
 *   g ← dw + λ w                      (weight decay as an L2 term in the gradient)
 *   μ = 0:     w ← w − η g
 *   μ > 0:     v ← μ v + g;  w ← w − η v            (PyTorch's SGD; v starts at 0)
 *   Nesterov:  v ← μ v + g;  w ← w − η (g + μ v)
 * Gradients are zeroed afterwards, ready for the next backward.
 */
tg_status
tg_sgd_step(tg_sgd *s)
{
    if (!s)
        return TG_ERR_ARG;
    tg_params *p = s->params;
    size_t n = p->size;
    const double lr = s->opt.lr, mu = s->opt.momentum, wd = s->opt.weight_decay;
    if (mu > 0 && s->velocity_size != n) {
        /* Parameters were added since the last step (or this is the first): new entries of
         * the velocity start at zero. */
        size_t esz = tg_dtype_size(p->dtype);
        void *v = tg__realloc(s->velocity, n * esz);
        if (!v) {
            snprintf(s->errmsg, sizeof s->errmsg,
                     "sgd: out of memory (%zu bytes) for the momentum buffer", n * esz);
            return TG_ERR_NOMEM;
        }
        memset((char *)v + s->velocity_size * esz, 0, (n - s->velocity_size) * esz);
        s->velocity = v;
        s->velocity_size = n;
    }
    TG__DISPATCH(p->dtype, T, {
        T *w = p->values, *dw = p->grads, *v = s->velocity;
        const T eta = (T)lr, m = (T)mu, lambda = (T)wd;
        if (mu == 0) {
            for (size_t i = 0; i < n; i++)
                w[i] -= eta * (dw[i] + lambda * w[i]);
        } else {
            for (size_t i = 0; i < n; i++) {
                T g = dw[i] + lambda * w[i];
                v[i] = m * v[i] + g;
                w[i] -= eta * (s->opt.nesterov ? g + m * v[i] : v[i]);
            }
        }
    });
    tg_params_zero_grad(p);
    return TG_OK;
}
