/* The tutorial's data and model, shared by steps 2-5.
 *
 * Data: "two moons", two interleaved half circles in the plane with Gaussian noise, a
 * classification problem no straight line solves. Model: a 2-16-2 MLP, examples as rows
 * (PyTorch's layout: X is (batch x 2), the logits (batch x 2)), tanh between the layers. */
#ifndef TUTORIAL_MOONS_H
#define TUTORIAL_MOONS_H

#include <math.h>
#include <tapegrad/tapegrad.h>

enum { N_TRAIN = 256, N_TEST = 256, N_HIDDEN = 16 };

/* n points: x (n x 2, row-major), labels y in {0, 1}; the same rng seed gives the same set. */
static inline void
make_moons(tg_rng *rng, int n, float *x, int32_t *y)
{
    const double pi = 3.14159265358979323846;
    for (int i = 0; i < n; i++) {
        int upper = i % 2;
        double a = pi * tg_rng_uniform(rng);
        double px = upper ? cos(a) : 1 - cos(a), py = upper ? sin(a) : 0.5 - sin(a);
        x[2 * i] = (float)(px + 0.2 * tg_rng_normal(rng));
        x[2 * i + 1] = (float)(py + 0.2 * tg_rng_normal(rng));
        y[i] = upper;
    }
}

struct model {
    tg_params *params; /* "fc1/W" (16x2), "fc1/b" (1x16), "fc2/W" (2x16), "fc2/b" (1x2) */
    tg_dense fc1, fc2;
};

/* TG_OK, or the status of the layer that could not be made (the reason: tg_params_error). */
static inline tg_status
model_init(struct model *m, tg_rng *rng)
{
    m->params = tg_params_new(TG_F32);
    if (!m->params)
        return TG_ERR_NOMEM;
    tg_dense_init(&m->fc1, m->params, "fc1", 2, N_HIDDEN, TG_ACT_TANH, TG_EXAMPLES_AS_ROWS, rng);
    tg_dense_init(&m->fc2, m->params, "fc2", N_HIDDEN, 2, TG_ACT_IDENTITY, TG_EXAMPLES_AS_ROWS,
                  rng);
    return tg_params_status(m->params);
}

/* The logits (batch x 2) of X (batch x 2). */
static inline tg_tensor *
model_forward(tg_tape *t, const tg_dense *fc1, const tg_dense *fc2, tg_tensor *X)
{
    return tg_dense_forward(t, fc2, tg_dense_forward(t, fc1, X));
}

/* Fraction of rows whose larger logit is the label's. */
static inline double
accuracy(tg_tensor *logits, const int32_t *y, int n)
{
    int right = 0;
    for (int i = 0; i < n; i++)
        right += (tg_tensor_get(logits, 2 * (size_t)i + 1) >
                  tg_tensor_get(logits, 2 * (size_t)i)) == (y[i] == 1);
    return (double)right / n;
}

#endif
