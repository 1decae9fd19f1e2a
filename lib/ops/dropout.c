/*
 * dropout, inverted (PyTorch's F.dropout): in training, each element is kept with probability
 * 1 − p and scaled by 1 / (1 − p), so the expectation is unchanged and evaluation needs no
 * rescaling; in evaluation (tg_tape_set_training(t, false)) it is the identity.
 *
 *   y = x ⊙ m / (1 − p),  m_i = [u_i >= p],  u_i uniform in [0, 1)
 *   VJP: dx += dy ⊙ m / (1 − p)
 *   JVP: ẏ = ẋ ⊙ m / (1 − p), the same mask (remade from the recorded key, no new draw)
 *
 * The mask is a function of one 64-bit key drawn from the caller's generator at record time
 * and of the element's index: u_i = (splitmix64(key + i·φ) >> 11) · 2^-53. It is never stored
 * (the VJP and the JVP recompute it), any thread computes any element's mask alone, so a
 * seeded run is bit-identical for any thread count, and the generator advances by exactly one
 * draw per call.
 */
#include <inttypes.h>
#include <math.h>

#include "../kernels/kernels.h"
#include "ops.h"

/* attr: scale = p; v[0][0] = the key (its bits) */
static inline bool
kept(uint64_t key, size_t i, double p)
{
    uint64_t z = key + (uint64_t)i * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) * 0x1.0p-53 >= p;
}

struct dropout_job {
    const tg_node *nd;
    const void *src; /* x (forward), dy (VJP) or ẋ (JVP) */
    void *dst;       /* y, dx or ẏ */
    bool add;
};

static void
dropout_part(size_t begin, size_t end, void *ctx)
{
    const struct dropout_job *j = ctx;
    double p = j->nd->attr->scale;
    uint64_t key = (uint64_t)j->nd->attr->v[0][0];
    TG__DISPATCH(j->nd->out->dtype, T, {
        const T *src = j->src;
        T *dst = j->dst;
        T scale = (T)(1 / (1 - p));
        for (size_t i = begin; i < end; i++) {
            T v = kept(key, i, p) ? src[i] * scale : 0;
            dst[i] = j->add ? dst[i] + v : v;
        }
    });
}

static tg_status
dropout_forward(tg_node *nd)
{
    struct dropout_job j = {nd, nd->in[0]->data, nd->out->data, false};
    tg__parallel_for(nd->out->size, (size_t)1 << 14, dropout_part, &j);
    return TG_OK;
}

static tg_status
dropout_vjp(tg_node *nd)
{
    if (!nd->in[0]->grad)
        return TG_OK;
    struct dropout_job j = {nd, nd->out->grad, nd->in[0]->grad, true};
    tg__parallel_for(nd->out->size, (size_t)1 << 14, dropout_part, &j);
    return TG_OK;
}

static tg_status
dropout_jvp(tg_node *nd)
{
    if (!nd->in[0]->tangent)
        return TG_OK;
    struct dropout_job j = {nd, nd->in[0]->tangent, nd->out->tangent, false};
    tg__parallel_for(nd->out->size, (size_t)1 << 14, dropout_part, &j);
    return TG_OK;
}

const tg_op tg__op_dropout = {
    .name = "dropout",
    .n_inputs = 1,
    .forward = dropout_forward,
    .vjp = dropout_vjp,
    .vjp_graph = tg__vjp_graph_linear,
    .jvp = dropout_jvp,
    .math = "y = x ⊙ m / (1 − p), m_i = [u_i ≥ p] from a seeded key (training; identity in "
            "evaluation)",
    .vjp_math = "dx += dy ⊙ m / (1 − p)",
    .jvp_math = "ẏ = ẋ ⊙ m / (1 − p), the forward's mask",
    .shapes = "same as x",
};

tg_tensor *
tg_dropout(tg_tape *t, tg_tensor *x, double p, tg_rng *rng)
{
    if (!t)
        return NULL;
    if (t->status != TG_OK || !(x = tg__operand(t, "dropout", "x", x)))
        return &t->nil;
    if (!(p >= 0 && p < 1))
        return tg__fail(t, TG_ERR_ARG, "dropout %s %s: p = %g must be in [0, 1)",
                        tg__name_text(x).s, tg__shape_text(x).s, p);
    if (t->eval || p == 0)
        return tg__handle(x); /* as PyTorch: the input itself, nothing recorded */
    if (!rng)
        return tg__fail(t, TG_ERR_ARG, "dropout %s: rng is NULL (the mask's generator)",
                        tg__name_text(x).s);
    struct tg__attr attr = {.scale = p};
    attr.v[0][0] = (int64_t)tg_rng_u64(rng);
    return tg__record(t, &tg__op_dropout, &x, 1, &attr, NULL);
}
