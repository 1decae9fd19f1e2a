/*
 * Elementwise binary ops with broadcasting (add, sub, mul) and scale.
 *
 * Broadcasting (numpy rules): shapes are aligned from the last dimension; in each position the
 * sizes are equal or one of them is 1, and a size-1 operand is repeated. This is the bias in
 * Z = W·A + b, where b (n x 1) repeats over the m columns of W·A (n x m), and in Z = X·Wᵀ + b,
 * where b (1 x n) repeats over the rows.
 *
 * VJP of a broadcast operand: an element repeated over k outputs receives the sum of their k
 * gradients, ∂J/∂b_i = Σ_j ∂J/∂Z_ij — the note's step 4, db = Σ over the m columns of dZ.
 * The loops below get this for free: they walk the output and scatter-add into the operand
 * through a stride of 0 along broadcast dimensions.
 */
#include <string.h>
#include <tgmath.h>

#include "ops.h"

bool
tg__broadcast_shape(const tg_tensor *a, const tg_tensor *b, int *ndim, int64_t *dims)
{
    int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
    for (int i = 0; i < nd; i++) {
        int ia = a->ndim - nd + i, ib = b->ndim - nd + i;
        int64_t da = ia >= 0 ? a->dims[ia] : 1, db = ib >= 0 ? b->dims[ib] : 1;
        if (da != db && da != 1 && db != 1)
            return false;
        dims[i] = da == 1 ? db : da;
    }
    *ndim = nd;
    return true;
}

tg_status
tg__shape_same(tg_node *n, int *ndim, int64_t *dims)
{
    *ndim = n->in[0]->ndim;
    memcpy(dims, n->in[0]->dims, sizeof n->in[0]->dims);
    return TG_OK;
}

/* Output dims padded to 4 (leading 1s) and each operand's element strides along them, 0 where
 * the operand is broadcast. */
struct bcast {
    size_t n[4];
    size_t sa[4], sb[4];
    bool same; /* no broadcasting: a flat loop will do */
};

static void
strides_for(const tg_tensor *x, const tg_tensor *out, size_t *s)
{
    size_t stride = 1;
    for (int i = 3; i >= 0; i--) {
        int ix = x->ndim - 4 + i, io = out->ndim - 4 + i;
        int64_t dx = ix >= 0 ? x->dims[ix] : 1, dout = io >= 0 ? out->dims[io] : 1;
        s[i] = (dx == 1 && dout != 1) ? 0 : stride;
        stride *= (size_t)dx;
    }
}

static struct bcast
bcast_of(const tg_node *nd)
{
    const tg_tensor *a = nd->in[0], *b = nd->in[1], *out = nd->out;
    struct bcast bc;
    for (int i = 0; i < 4; i++) {
        int io = out->ndim - 4 + i;
        bc.n[i] = io >= 0 ? (size_t)out->dims[io] : 1;
    }
    strides_for(a, out, bc.sa);
    strides_for(b, out, bc.sb);
    bc.same = a->size == out->size && b->size == out->size;
    return bc;
}

/* Runs the body (the variadic argument) for every output element o with operand offsets ia, ib. */
#define BCAST_FOR(bc, ...)                                                                    \
    do {                                                                                       \
        if ((bc).n[0] * (bc).n[1] * (bc).n[2] * (bc).n[3] == 0)                                \
            break; /* empty output: skip, or (2^40 x 0) would loop 2^40 times */              \
        if ((bc).same) {                                                                       \
            size_t total_ = (bc).n[0] * (bc).n[1] * (bc).n[2] * (bc).n[3];                     \
            for (size_t o = 0; o < total_; o++) {                                              \
                size_t ia = o, ib = o;                                                         \
                __VA_ARGS__;                                                                   \
            }                                                                                  \
            break;                                                                             \
        }                                                                                      \
        size_t o = 0;                                                                          \
        for (size_t i0 = 0; i0 < (bc).n[0]; i0++)                                              \
            for (size_t i1 = 0; i1 < (bc).n[1]; i1++)                                          \
                for (size_t i2 = 0; i2 < (bc).n[2]; i2++) {                                    \
                    size_t ra = i0 * (bc).sa[0] + i1 * (bc).sa[1] + i2 * (bc).sa[2];            \
                    size_t rb = i0 * (bc).sb[0] + i1 * (bc).sb[1] + i2 * (bc).sb[2];            \
                    for (size_t i3 = 0; i3 < (bc).n[3]; i3++, o++) {                           \
                        size_t ia = ra + i3 * (bc).sa[3], ib = rb + i3 * (bc).sb[3];           \
                        __VA_ARGS__;                                                           \
                    }                                                                          \
                }                                                                              \
    } while (0)

static tg_status
broadcast_shape(tg_node *nd, int *ndim, int64_t *dims)
{
    const tg_tensor *a = nd->in[0], *b = nd->in[1];
    if (!tg__broadcast_shape(a, b, ndim, dims)) {
        tg__fail(nd->tape, TG_ERR_SHAPE,
                 "%s %s·%s: shapes cannot be broadcast: %s and %s (each dimension must match "
                 "or be 1)",
                 nd->op->name, tg__name_text(a).s, tg__name_text(b).s, tg__shape_text(a).s,
                 tg__shape_text(b).s);
        return TG_ERR_SHAPE;
    }
    return TG_OK;
}

/* Binary op blocks: OUT is the forward expression of a[ia], b[ib]; DA and DB are ∂out/∂a and
 * ∂out/∂b, multiplied by the output gradient g and added into the operands' gradients. */
#define BINARY_FORWARD(nd, OUT)                                                                \
    do {                                                                                       \
        struct bcast bc = bcast_of(nd);                                                        \
        TG__DISPATCH((nd)->out->dtype, T, {                                                    \
            const T *av = (nd)->in[0]->data, *bv = (nd)->in[1]->data;                          \
            T *yv = (nd)->out->data;                                                           \
            BCAST_FOR(bc, {                                                                    \
                const T a = av[ia], b = bv[ib];                                                \
                (void)a, (void)b;                                                              \
                yv[o] = (OUT);                                                                 \
            });                                                                                \
        });                                                                                    \
    } while (0)

#define BINARY_VJP(nd, DA, DB)                                                                 \
    do {                                                                                       \
        struct bcast bc = bcast_of(nd);                                                        \
        TG__DISPATCH((nd)->out->dtype, T, {                                                    \
            const T *av = (nd)->in[0]->data, *bv = (nd)->in[1]->data;                          \
            const T *gv = (nd)->out->grad;                                                     \
            T *dav = (nd)->in[0]->grad, *dbv = (nd)->in[1]->grad;                              \
            if (dav)                                                                           \
                BCAST_FOR(bc, {                                                                \
                    const T a = av[ia], b = bv[ib], g = gv[o];                                 \
                    (void)a, (void)b;                                                          \
                    dav[ia] += g * (DA);                                                       \
                });                                                                            \
            if (dbv)                                                                           \
                BCAST_FOR(bc, {                                                                \
                    const T a = av[ia], b = bv[ib], g = gv[o];                                 \
                    (void)a, (void)b;                                                          \
                    dbv[ib] += g * (DB);                                                       \
                });                                                                            \
        });                                                                                    \
    } while (0)

static tg_tensor *
record_binary(tg_tape *t, const tg_op *op, tg_tensor *a, tg_tensor *b)
{
    if (!t)
        return NULL;
    tg_tensor *in[2] = {a, b};
    return tg__record(t, op, in, 2, NULL, NULL);
}

/*
 * add:  y = a + b        ∂y/∂a = 1, ∂y/∂b = 1
 *   VJP: da += Σ_broadcast dy,  db += Σ_broadcast dy
 */
static tg_status
add_forward(tg_node *nd)
{
    BINARY_FORWARD(nd, a + b);
    return TG_OK;
}

static tg_status
add_vjp(tg_node *nd)
{
    BINARY_VJP(nd, 1, 1);
    return TG_OK;
}

const tg_op tg__op_add = {
    .name = "add",
    .n_inputs = 2,
    .shape = broadcast_shape,
    .forward = add_forward,
    .vjp = add_vjp,
};

tg_tensor *
tg_add(tg_tape *t, tg_tensor *a, tg_tensor *b)
{
    return record_binary(t, &tg__op_add, a, b);
}

/*
 * sub:  y = a - b        ∂y/∂a = 1, ∂y/∂b = -1
 *   VJP: da += Σ_broadcast dy,  db -= Σ_broadcast dy
 */
static tg_status
sub_forward(tg_node *nd)
{
    BINARY_FORWARD(nd, a - b);
    return TG_OK;
}

static tg_status
sub_vjp(tg_node *nd)
{
    BINARY_VJP(nd, 1, -1);
    return TG_OK;
}

const tg_op tg__op_sub = {
    .name = "sub",
    .n_inputs = 2,
    .shape = broadcast_shape,
    .forward = sub_forward,
    .vjp = sub_vjp,
};

tg_tensor *
tg_sub(tg_tape *t, tg_tensor *a, tg_tensor *b)
{
    return record_binary(t, &tg__op_sub, a, b);
}

/*
 * mul:  y = a ⊙ b        ∂y/∂a = b, ∂y/∂b = a
 *   VJP: da += Σ_broadcast dy ⊙ b,  db += Σ_broadcast dy ⊙ a
 *   (x ⊙ x gets both terms: 2x dy, through fan-out accumulation)
 */
static tg_status
mul_forward(tg_node *nd)
{
    BINARY_FORWARD(nd, a * b);
    return TG_OK;
}

static tg_status
mul_vjp(tg_node *nd)
{
    BINARY_VJP(nd, b, a);
    return TG_OK;
}

const tg_op tg__op_mul = {
    .name = "mul",
    .n_inputs = 2,
    .shape = broadcast_shape,
    .forward = mul_forward,
    .vjp = mul_vjp,
};

tg_tensor *
tg_mul(tg_tape *t, tg_tensor *a, tg_tensor *b)
{
    return record_binary(t, &tg__op_mul, a, b);
}

/*
 * scale:  y = c x        (c a constant)
 *   VJP: dx += c dy
 */
static tg_status
scale_forward(tg_node *nd)
{
    TG__DISPATCH(nd->out->dtype, T, {
        const T c = (T)nd->attr.scale, *x = nd->in[0]->data;
        T *y = nd->out->data;
        for (size_t i = 0; i < nd->out->size; i++)
            y[i] = c * x[i];
    });
    return TG_OK;
}

static tg_status
scale_vjp(tg_node *nd)
{
    if (!nd->in[0]->grad)
        return TG_OK;
    TG__DISPATCH(nd->out->dtype, T, {
        const T c = (T)nd->attr.scale, *dy = nd->out->grad;
        T *dx = nd->in[0]->grad;
        for (size_t i = 0; i < nd->out->size; i++)
            dx[i] += c * dy[i];
    });
    return TG_OK;
}

const tg_op tg__op_scale = {
    .name = "scale",
    .n_inputs = 1,
    .shape = tg__shape_same,
    .forward = scale_forward,
    .vjp = scale_vjp,
};

tg_tensor *
tg_scale(tg_tape *t, tg_tensor *x, double c)
{
    if (!t)
        return NULL;
    if (t->status == TG_OK && !isfinite(c))
        return tg__fail(t, TG_ERR_ARG, "scale %s: factor %g is not finite",
                        x ? tg__name_text(x).s : "(null)", c);
    struct tg__attr attr = {.scale = c};
    return tg__record(t, &tg__op_scale, &x, 1, &attr, NULL);
}
