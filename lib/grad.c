/*
 * Differentiable backward: tg_grad records the reverse pass as nodes of the tape, so a
 * gradient is a tensor like any other and can be differentiated again (PyTorch's
 * torch.autograd.grad with create_graph=True). It walks the tape in reverse like backward,
 * but instead of each op's numeric VJP it calls the op's vjp_graph, which records dx_k from
 * dy with ops; contributions to a tensor read by several nodes are added with tg_add.
 *
 * Two kinds of vjp_graph:
 *  - composed, in the op's own file next to its VJP: the same formula written with ops
 *    (matmul: dA = dC·op(B)ᵀ as a tg_matmul_t), differentiable because its ops are;
 *  - tg__vjp_graph_linear, here, for ops whose Jacobian J is locally constant (linear and
 *    piecewise linear ops): a "vjp" node dx_k = J_kᵀ·dy that runs the op's own VJP on a copy
 *    of the original node. Its VJP is J_k·w, the op's own JVP, and its JVP J_kᵀ·u̇, the op's
 *    own VJP again; its vjp_graph is a "jvp" node, whose vjp_graph is a "vjp" node. J being
 *    constant, nothing else depends on the inputs (the second derivative is 0 wherever it
 *    exists), so every order is exact.
 *
 * tg_hvp builds on it: H·v = d/dε ∇f(x + εv) by forward mode over the recorded gradient
 * (tg_jvp), or ∇⟨∇f, v⟩ by a second tg_grad.
 */
#include <string.h>

#include "internal.h"
#include "ops/ops.h"

tg_tensor *
tg__constant(tg_tape *t, tg_dtype dt, double value)
{
    tg_tensor *c = tg__tensor(tg_tensor_new(t, dt, 1, (int64_t[]){1}, NULL));
    if (c->kind != TG__KIND_NIL)
        tg_tensor_fill(c, value);
    return c;
}

tg_tensor *
tg__sum_to(tg_tape *t, tg_tensor *g, const tg_tensor *like)
{
    g = tg__tensor(g);
    if (g->kind == TG__KIND_NIL)
        return g;
    if (g->ndim == like->ndim &&
        memcmp(g->dims, like->dims, (size_t)g->ndim * sizeof g->dims[0]) == 0)
        return g;
    int axes[TG_MAX_DIMS], n = 0;
    for (int i = 0; i < g->ndim; i++) {
        int il = like->ndim - g->ndim + i;
        if (il < 0 || (like->dims[il] == 1 && g->dims[i] != 1))
            axes[n++] = i;
    }
    tg_tensor *s = n ? tg_sum_axes(t, g, axes, n, true) : g;
    return tg__tensor(tg_reshape(t, s, like->ndim, like->dims));
}

/* ---- the vjp and jvp nodes of a locally linear op ----
 *
 * Both keep the original node in ctx and the input k in attr.axis. A rule runs the original
 * op's VJP or JVP on a shadow: a copy of the node whose headers are copies too, with only the
 * gradient or tangent pointers the rule needs set, and a private copy of the original's
 * scratch (what its forward saved), refreshed before each use: the original's own buffers are
 * never written.
 */
struct shadow {
    tg_node node;
    tg_tensor hdr[TG_MAX_INPUTS];
    tg_tensor *in[TG_MAX_INPUTS];
    tg_tensor out;
};

/* The headers of nd's original copied, no gradient or tangent set, scratch the given block */
static void
shadow_init(struct shadow *s, const tg_node *nd, void *scratch)
{
    const tg_node *orig = nd->ctx;
    s->node = *orig;
    for (int k = 0; k < orig->n_in; k++) {
        s->hdr[k] = *orig->in[k];
        s->hdr[k].grad = s->hdr[k].tangent = NULL;
        s->hdr[k].grad_fresh = s->hdr[k].grad_borrowed = false;
        s->in[k] = &s->hdr[k];
    }
    s->out = *orig->out;
    s->out.grad = s->out.tangent = NULL;
    s->node.in = s->in;
    s->node.out = &s->out;
    s->node.scratch = scratch;
}

/* The shadow for a rule that reads what the original's forward saved: a fresh copy of it */
static void
shadow_of(struct shadow *s, const tg_node *nd)
{
    const tg_node *orig = nd->ctx;
    shadow_init(s, nd, nd->scratch);
    if (orig->scratch_bytes)
        memcpy(nd->scratch, orig->scratch, orig->scratch_bytes);
}

/* One of the original op's callbacks on the shadow, the tape marked busy with it */
static tg_status
run_rule(tg_node *nd, struct shadow *s, tg_status (*rule)(tg_node *), const char *what)
{
    tg_tape *t = nd->tape;
    const tg_node *busy = t->busy_node;
    const char *busy_what = t->busy_what;
    t->busy_node = &s->node, t->busy_what = what;
    tg_status st = rule(&s->node);
    t->busy_node = busy, t->busy_what = busy_what;
    return st;
}

static tg_status
run_vjp(tg_node *nd, struct shadow *s)
{
    return run_rule(nd, s, ((const tg_node *)nd->ctx)->op->vjp, "VJP");
}

static tg_status
run_jvp(tg_node *nd, struct shadow *s)
{
    return run_rule(nd, s, ((const tg_node *)nd->ctx)->op->jvp, "JVP");
}

/* n rounded up to the 64-byte alignment of the areas cut from a node's scratch */
static size_t
aligned(size_t n)
{
    return (n + 63) & ~(size_t)63;
}

static size_t
orig_scratch(const tg_node *nd)
{
    return ((const tg_node *)nd->ctx)->scratch_bytes;
}

static tg_tensor *record_vjp_node(tg_tape *t, const tg_node *orig, int k, tg_tensor *dy);
static tg_tensor *record_jvp_node(tg_tape *t, const tg_node *orig, int k, tg_tensor *w);

/*
 * vjp (internal):  dx_k = J_kᵀ · dy      (J_k of the original node, constant)
 *   VJP: ddy += J_k · w     (the original's JVP along w on input k)
 *   JVP: ḋx_k = J_kᵀ · ḋy   (the original's VJP of the tangent)
 */
static tg_status
vjp_node_shape(tg_node *nd, int *ndim, int64_t *dims)
{
    const tg_tensor *x = ((const tg_node *)nd->ctx)->in[nd->attr->axis];
    *ndim = x->ndim;
    memcpy(dims, x->dims, sizeof x->dims);
    return TG_OK;
}

static size_t
vjp_node_scratch(const tg_node *nd)
{
    /* the original's scratch, then J_k·w (the output of the original) for the VJP */
    const tg_node *orig = nd->ctx;
    return aligned(orig->scratch_bytes) + tg__nbytes(orig->out);
}

static void *
vjp_node_temp(const tg_node *nd)
{
    return (char *)nd->scratch + aligned(orig_scratch(nd));
}

static tg_status
vjp_node_forward(tg_node *nd)
{
    struct shadow s;
    shadow_of(&s, nd);
    int k = nd->attr->axis;
    memset(nd->out->data, 0, tg__nbytes(nd->out));
    s.out.grad = nd->in[0]->data;
    s.hdr[k].grad = nd->out->data;
    return run_vjp(nd, &s);
}

static tg_status
vjp_node_vjp(tg_node *nd)
{
    if (!nd->in[0]->grad)
        return TG_OK;
    struct shadow s;
    shadow_of(&s, nd);
    const tg_node *orig = nd->ctx;
    void *jw = vjp_node_temp(nd);
    memset(jw, 0, tg__nbytes(orig->out));
    s.hdr[nd->attr->axis].tangent = nd->out->grad;
    s.out.tangent = jw;
    tg_status st = run_jvp(nd, &s);
    if (st == TG_OK)
        tg__add_into(nd->out->dtype, nd->in[0]->grad, jw, nd->in[0]->size);
    return st;
}

static tg_status
vjp_node_jvp(tg_node *nd)
{
    if (!nd->in[0]->tangent)
        return TG_OK;
    struct shadow s;
    shadow_of(&s, nd);
    s.out.grad = nd->in[0]->tangent;
    s.hdr[nd->attr->axis].grad = nd->out->tangent;
    return run_vjp(nd, &s);
}

static tg_tensor *
vjp_node_graph(tg_node *nd, int k, tg_tensor *w)
{
    (void)k;
    return record_jvp_node(nd->tape, nd->ctx, nd->attr->axis, w);
}

static const tg_op vjp_node_op = {
    .name = "vjp",
    .n_inputs = 1,
    .shape = vjp_node_shape,
    .forward = vjp_node_forward,
    .vjp = vjp_node_vjp,
    .scratch_size = vjp_node_scratch,
    .jvp = vjp_node_jvp,
    .vjp_graph = vjp_node_graph,
    .math = "dx_k = J_kᵀ dy of a locally linear node (tg_grad)",
    .vjp_math = "ddy += J_k w (the node's JVP)",
    .jvp_math = "ḋx_k = J_kᵀ ḋy (the node's VJP)",
};

/*
 * jvp (internal):  y = J_k · w      (J_k of the original node, constant)
 *   VJP: dw += J_kᵀ · dy    (the original's VJP)
 *   JVP: ẏ = J_k · ẇ        (the original's JVP)
 */
static tg_status
jvp_node_shape(tg_node *nd, int *ndim, int64_t *dims)
{
    const tg_tensor *y = ((const tg_node *)nd->ctx)->out;
    *ndim = y->ndim;
    memcpy(dims, y->dims, sizeof y->dims);
    return TG_OK;
}

static size_t
jvp_node_scratch(const tg_node *nd)
{
    return orig_scratch(nd);
}

static tg_status
jvp_node_forward(tg_node *nd)
{
    struct shadow s;
    shadow_of(&s, nd);
    memset(nd->out->data, 0, tg__nbytes(nd->out));
    s.hdr[nd->attr->axis].tangent = nd->in[0]->data;
    s.out.tangent = nd->out->data;
    return run_jvp(nd, &s);
}

static tg_status
jvp_node_vjp(tg_node *nd)
{
    if (!nd->in[0]->grad)
        return TG_OK;
    struct shadow s;
    shadow_of(&s, nd);
    s.out.grad = nd->out->grad;
    s.hdr[nd->attr->axis].grad = nd->in[0]->grad; /* the original's VJP adds */
    return run_vjp(nd, &s);
}

static tg_status
jvp_node_jvp(tg_node *nd)
{
    if (!nd->in[0]->tangent)
        return TG_OK;
    struct shadow s;
    shadow_of(&s, nd);
    s.hdr[nd->attr->axis].tangent = nd->in[0]->tangent;
    s.out.tangent = nd->out->tangent;
    return run_jvp(nd, &s);
}

static tg_tensor *
jvp_node_graph(tg_node *nd, int k, tg_tensor *dy)
{
    (void)k;
    return record_vjp_node(nd->tape, nd->ctx, nd->attr->axis, dy);
}

static const tg_op jvp_node_op = {
    .name = "jvp",
    .n_inputs = 1,
    .shape = jvp_node_shape,
    .forward = jvp_node_forward,
    .vjp = jvp_node_vjp,
    .scratch_size = jvp_node_scratch,
    .jvp = jvp_node_jvp,
    .vjp_graph = jvp_node_graph,
    .math = "y = J_k w of a locally linear node (tg_grad)",
    .vjp_math = "dw += J_kᵀ dy (the node's VJP)",
    .jvp_math = "ẏ = J_k ẇ (the node's JVP)",
};

static tg_tensor *
record_vjp_node(tg_tape *t, const tg_node *orig, int k, tg_tensor *dy)
{
    struct tg__attr attr = {.axis = k};
    return tg__record(t, &vjp_node_op, &dy, 1, &attr, (void *)orig);
}

static tg_tensor *
record_jvp_node(tg_tape *t, const tg_node *orig, int k, tg_tensor *w)
{
    struct tg__attr attr = {.axis = k};
    return tg__record(t, &jvp_node_op, &w, 1, &attr, (void *)orig);
}

tg_tensor *
tg__vjp_graph_linear(tg_node *nd, int k, tg_tensor *dy)
{
    const tg_node *orig = nd;
    /* A vjp or jvp node of a vjp or jvp node is one of the original's (J_kᵀ's adjoint is J_k) */
    if (nd->op == &vjp_node_op || nd->op == &jvp_node_op)
        return nd->op->vjp_graph(nd, k, dy);
    return record_vjp_node(nd->tape, orig, k, dy);
}

/* ---- the product, vjp_x and vjp_w nodes of a bilinear op ----
 *
 * An op y = F(x, w) + (a linear term of its other inputs, a bias) with F bilinear (conv2d,
 * conv_transpose2d): its VJPs are bilinear too, dx = Vx(dy, w) = J_x(w)ᵀ dy and dw =
 * Vw(dy, x) = J_w(x)ᵀ dy, and with the product P(x, w) = F(x, w) the three close under
 * differentiation:
 *     P(x, w):   dx += Vx(g, w),  dw += Vw(g, x);   Ṗ = P(ẋ, w) + P(x, ẇ)
 *     Vx(dy, w): ddy += P(g, w),  dw += Vw(dy, g);  V̇x = Vx(ḋy, w) + Vx(dy, ẇ)
 *     Vw(dy, x): ddy += P(x, g),  dx += Vx(dy, g);  V̇w = Vw(ḋy, x) + Vw(dy, ẋ)
 * (each from ⟨g, Vx(dy, w)⟩ = ⟨P(g, w), dy⟩ = ⟨Vw(dy, g), w⟩). Each is computed by the
 * original op on a shadow whose x and w data are substituted: P by its JVP along x, Vx and Vw
 * by its VJP. The shadow's forward is run first, on the substituted data with a private
 * scratch, since a VJP may read what the forward saved (conv's unfolded input).
 */
enum bil { BIL_P, BIL_VX, BIL_VW };

/* Scratch: the original's, then two outputs of it: the shadow forward's, and a term to add */
static size_t
bil_scratch(const tg_node *nd)
{
    const tg_node *orig = nd->ctx;
    return aligned(orig->scratch_bytes) + 2 * aligned(tg__nbytes(orig->out));
}

static void *
bil_term(const tg_node *nd)
{
    const tg_node *orig = nd->ctx;
    return (char *)nd->scratch + aligned(orig->scratch_bytes) + aligned(tg__nbytes(orig->out));
}

/* The shadow of the original with x, w data given (NULL: the original's), its forward run */
static tg_status
bil_shadow(tg_node *nd, struct shadow *s, const void *x, const void *w)
{
    const tg_node *orig = nd->ctx;
    shadow_init(s, nd, orig->scratch_bytes ? nd->scratch : NULL);
    if (x)
        s->hdr[0].data = (void *)x;
    if (w)
        s->hdr[1].data = (void *)w;
    s->out.data = (char *)nd->scratch + aligned(orig->scratch_bytes);
    return run_rule(nd, s, orig->op->forward, "forward");
}

/* P(x, w) into y (zeroed): the original's JVP along x alone, at w */
static tg_status
bil_product(tg_node *nd, const void *x, const void *w, void *y)
{
    struct shadow s;
    tg_status st = bil_shadow(nd, &s, x, w);
    if (st != TG_OK)
        return st;
    s.hdr[0].tangent = (void *)x;
    s.out.tangent = y;
    return run_jvp(nd, &s);
}

/* dx += Vx(dy, w) (into dx) and dw += Vw(dy, x) (into dw), either NULL: the original's VJP */
static tg_status
bil_vjp(tg_node *nd, const void *x, const void *w, const void *dy, void *dx, void *dw)
{
    struct shadow s;
    tg_status st = bil_shadow(nd, &s, x, w);
    if (st != TG_OK)
        return st;
    s.out.grad = (void *)dy;
    s.hdr[0].grad = dx;
    s.hdr[1].grad = dw;
    return run_vjp(nd, &s);
}

static tg_tensor *record_bil(tg_tape *t, const tg_node *orig, enum bil kind, tg_tensor *a,
                             tg_tensor *b);

static tg_status
bil_shape(tg_node *nd, int *ndim, int64_t *dims)
{
    const tg_node *orig = nd->ctx;
    enum bil kind = (enum bil)nd->attr->axis;
    const tg_tensor *like = kind == BIL_P ? orig->out : kind == BIL_VX ? orig->in[0] : orig->in[1];
    *ndim = like->ndim;
    memcpy(dims, like->dims, sizeof like->dims);
    return TG_OK;
}

/* in[0], in[1] of each kind: P (x, w), Vx (dy, w), Vw (dy, x) */
static tg_status
bil_forward(tg_node *nd)
{
    const void *a = nd->in[0]->data, *b = nd->in[1]->data;
    memset(nd->out->data, 0, tg__nbytes(nd->out));
    switch ((enum bil)nd->attr->axis) {
    case BIL_P:
        return bil_product(nd, a, b, nd->out->data);
    case BIL_VX:
        return bil_vjp(nd, NULL, b, a, nd->out->data, NULL);
    default:
        return bil_vjp(nd, b, NULL, a, NULL, nd->out->data);
    }
}

static tg_status
bil_backward(tg_node *nd)
{
    tg_tensor *a = nd->in[0], *b = nd->in[1];
    const void *g = nd->out->grad;
    tg_status st = TG_OK;
    switch ((enum bil)nd->attr->axis) {
    case BIL_P: /* dx += Vx(g, w), dw += Vw(g, x) */
        if (a->grad || b->grad)
            st = bil_vjp(nd, a->data, b->data, g, a->grad, b->grad);
        return st;
    case BIL_VX: /* ddy += P(g, w), dw += Vw(dy, g) */
    case BIL_VW: /* ddy += P(x, g), dx += Vx(dy, g) */ {
        bool vx = nd->attr->axis == BIL_VX;
        if (b->grad)
            st = vx ? bil_vjp(nd, g, b->data, a->data, NULL, b->grad)
                    : bil_vjp(nd, b->data, g, a->data, b->grad, NULL);
        if (st != TG_OK || !a->grad)
            return st;
        const tg_node *orig = nd->ctx;
        void *p = bil_term(nd);
        memset(p, 0, tg__nbytes(orig->out));
        st = vx ? bil_product(nd, g, b->data, p) : bil_product(nd, b->data, g, p);
        if (st == TG_OK)
            tg__add_into(nd->out->dtype, a->grad, p, a->size);
        return st;
    }
    }
    return TG_OK;
}

static tg_status
bil_jvp(tg_node *nd)
{
    tg_tensor *a = nd->in[0], *b = nd->in[1];
    void *out = nd->out->tangent;
    tg_status st = TG_OK;
    const tg_node *orig = nd->ctx;
    switch ((enum bil)nd->attr->axis) {
    case BIL_P: { /* Ṗ = P(ẋ, w) + P(x, ẇ) */
        void *p = NULL;
        if (a->tangent && b->tangent) {
            p = bil_term(nd);
            memset(p, 0, tg__nbytes(orig->out));
        }
        if (a->tangent)
            st = bil_product(nd, a->tangent, b->data, out);
        if (st == TG_OK && b->tangent) {
            st = bil_product(nd, a->data, b->tangent, p ? p : out);
            if (st == TG_OK && p)
                tg__add_into(nd->out->dtype, out, p, nd->out->size);
        }
        return st;
    }
    case BIL_VX: /* V̇x = Vx(ḋy, w) + Vx(dy, ẇ) */
        if (a->tangent)
            st = bil_vjp(nd, NULL, b->data, a->tangent, out, NULL);
        if (st == TG_OK && b->tangent)
            st = bil_vjp(nd, NULL, b->tangent, a->data, out, NULL);
        return st;
    default: /* V̇w = Vw(ḋy, x) + Vw(dy, ẋ) */
        if (a->tangent)
            st = bil_vjp(nd, b->data, NULL, a->tangent, NULL, out);
        if (st == TG_OK && b->tangent)
            st = bil_vjp(nd, b->tangent, NULL, a->data, NULL, out);
        return st;
    }
}

static tg_tensor *
bil_graph(tg_node *nd, int k, tg_tensor *g)
{
    tg_tape *t = nd->tape;
    const tg_node *orig = nd->ctx;
    tg_tensor *a = nd->in[0], *b = nd->in[1];
    switch ((enum bil)nd->attr->axis) {
    case BIL_P:
        return k == 0 ? record_bil(t, orig, BIL_VX, g, b) : record_bil(t, orig, BIL_VW, g, a);
    case BIL_VX:
        return k == 0 ? record_bil(t, orig, BIL_P, g, b) : record_bil(t, orig, BIL_VW, a, g);
    default:
        return k == 0 ? record_bil(t, orig, BIL_P, b, g) : record_bil(t, orig, BIL_VX, a, g);
    }
}

static const tg_op bil_op = {
    .name = "bilinear",
    .n_inputs = 2,
    .shape = bil_shape,
    .forward = bil_forward,
    .vjp = bil_backward,
    .scratch_size = bil_scratch,
    .jvp = bil_jvp,
    .vjp_graph = bil_graph,
    .math = "a bilinear op's product P(x, w) or VJPs Vx(dy, w), Vw(dy, x) (tg_grad)",
    .vjp_math = "each other's: P ↔ Vx, Vw",
    .jvp_math = "the sum of the two one-sided terms",
};

static tg_tensor *
record_bil(tg_tape *t, const tg_node *orig, enum bil kind, tg_tensor *a, tg_tensor *b)
{
    struct tg__attr attr = {.axis = (int)kind};
    tg_tensor *in[2] = {a, b};
    return tg__record(t, &bil_op, in, 2, &attr, (void *)orig);
}

tg_tensor *
tg__vjp_graph_bilinear(tg_node *nd, int k, tg_tensor *dy)
{
    if (k >= 2) /* the bias: a constant Jacobian */
        return tg__vjp_graph_linear(nd, k, dy);
    return k == 0 ? record_bil(nd->tape, nd, BIL_VX, dy, nd->in[1])
                  : record_bil(nd->tape, nd, BIL_VW, dy, nd->in[0]);
}

/* ---- tg_grad ---- */

static tg_tensor *
sym(const tg_tape *t, const tg_tensor *x)
{
    return x->grad_sym && x->grad_sym_pass == t->grad_sym_pass ? x->grad_sym : NULL;
}

static void
set_sym(tg_tape *t, tg_tensor *x, tg_tensor *g)
{
    x->grad_sym = g;
    x->grad_sym_pass = t->grad_sym_pass;
}

/* Parameters outlive the tape: their entries are dropped when a pass ends. */
static void
clear_param_syms(tg_tape *t, size_t end)
{
    for (size_t i = 0; i < end; i++) {
        tg_node *n = t->nodes[i];
        for (int k = 0; k < n->n_in; k++)
            if (n->in[k]->kind == TG__KIND_PARAM)
                n->in[k]->grad_sym = NULL;
    }
}

static bool
same_shape(const tg_tensor *a, const tg_tensor *b)
{
    return a->ndim == b->ndim && memcmp(a->dims, b->dims, (size_t)a->ndim * sizeof a->dims[0]) == 0;
}

static tg_status
grad_walk(tg_tape *t, tg_tensor *out, size_t end)
{
    for (size_t i = end; i-- > 0;) {
        tg_node *n = t->nodes[i];
        tg_tensor *dy = sym(t, n->out);
        if (!dy || !n->out->requires_grad)
            continue;
        for (int k = 0; k < n->n_in; k++) {
            tg_tensor *x = n->in[k];
            if (!x->requires_grad)
                continue;
            if (!n->op->vjp_graph) {
                tg__fail(t, TG_ERR_OP,
                         "grad: op %s (node #%zu) has no differentiable VJP (tg_op.vjp_graph); "
                         "tg_backward gives its first-order gradients",
                         tg__escaped_text(n->op->name).s, n->index);
                return t->status;
            }
            tg_tensor *c = n->op->vjp_graph(n, k, tg__handle(dy));
            if (t->status != TG_OK)
                return t->status;
            if (!c)
                continue;
            c = tg__tensor(c);
            if (!same_shape(c, x)) {
                tg__fail(t, TG_ERR_OP,
                         "grad: op %s (node #%zu): its vjp_graph gave %s for input %d, %s %s",
                         tg__escaped_text(n->op->name).s, n->index, tg__shape_text(c).s, k,
                         tg__name_text(x).s, tg__shape_text(x).s);
                return t->status;
            }
            tg_tensor *old = sym(t, x);
            set_sym(t, x, old ? tg__tensor(tg_add(t, old, c)) : c);
            if (t->status != TG_OK)
                return t->status;
        }
    }
    (void)out;
    return TG_OK;
}

tg_status
tg_grad(tg_tape *t, tg_tensor *out, tg_tensor *seed, int n, tg_tensor *const *wrt,
        tg_tensor **grads)
{
    if (!t)
        return TG_ERR_ARG;
    for (int i = 0; grads && i < n && i < TG_MAX_INPUTS; i++)
        grads[i] = &t->nil; /* until they are known (a failing call leaves them so) */
    if (t->busy_node) {
        tg__fail_busy(t, "grad");
        return t->status;
    }
    if (t->status != TG_OK)
        return t->status;
    if (n < 1 || n > TG_MAX_INPUTS || !wrt || !grads) {
        tg__fail(t, TG_ERR_ARG, "grad: %d tensors to differentiate with respect to, %s", n,
                 !wrt ? "no list" : !grads ? "nowhere to write the gradients" : "1 to 64 expected");
        return t->status;
    }
    if (!(out = tg__operand(t, "grad", "output", out)) ||
        (seed && !(seed = tg__operand(t, "grad", "seed", seed))))
        return t->status;
    tg_tensor *x[TG_MAX_INPUTS];
    for (int i = 0; i < n; i++)
        if (!(x[i] = tg__operand(t, "grad", "input", wrt[i])))
            return t->status;
    if (!seed && out->size != 1) {
        tg__fail(t, TG_ERR_NOT_SCALAR,
                 "grad: output %s is %s; give a seed of the same shape or reduce to a scalar",
                 tg__name_text(out).s, tg__shape_text(out).s);
        return t->status;
    }
    if (seed && (seed->dtype != out->dtype || !same_shape(seed, out))) {
        tg__fail(t, TG_ERR_SHAPE, "grad: seed %s %s %s does not match output %s %s %s",
                 tg__name_text(seed).s, tg__shape_text(seed).s, tg_dtype_name(seed->dtype),
                 tg__name_text(out).s, tg__shape_text(out).s, tg_dtype_name(out->dtype));
        return t->status;
    }
    size_t end = out->node ? out->node->index + 1 : 0;
    t->grad_sym_pass++;
    if (!seed) {
        seed = tg__tensor(tg_tensor_new(t, out->dtype, out->ndim, out->dims, NULL));
        if (seed->kind == TG__KIND_NIL)
            return t->status;
        tg_tensor_fill(seed, 1);
    }
    set_sym(t, out, seed);
    tg_status s = grad_walk(t, out, end);
    for (int i = 0; s == TG_OK && i < n; i++) {
        tg_tensor *g = sym(t, x[i]);
        if (!g) { /* out does not depend on it */
            g = tg__tensor(tg_tensor_new(t, x[i]->dtype, x[i]->ndim, x[i]->dims, NULL));
            s = t->status;
        }
        grads[i] = tg__handle(g);
    }
    clear_param_syms(t, end);
    if (out->kind == TG__KIND_PARAM)
        out->grad_sym = NULL;
    if (s != TG_OK)
        for (int i = 0; i < n; i++)
            grads[i] = &t->nil;
    return s;
}

/* ---- Hessian-vector products ---- */

tg_status
tg_hvp(tg_tape *t, tg_tensor *f, int n, tg_tensor *const *wrt, tg_tensor *const *v,
       tg_hvp_mode mode, tg_tensor **hv)
{
    if (!t)
        return TG_ERR_ARG;
    for (int i = 0; hv && i < n && i < TG_MAX_INPUTS; i++)
        hv[i] = &t->nil;
    if (t->status != TG_OK)
        return t->status;
    if (n < 1 || n > TG_MAX_INPUTS || !wrt || !v || !hv) {
        tg__fail(t, TG_ERR_ARG, "hvp: %d tensors given, %s", n,
                 !v ? "no directions" : !hv ? "nowhere to write the products" : "1 to 64 expected");
        return t->status;
    }
    if (mode != TG_HVP_FORWARD_OVER_REVERSE && mode != TG_HVP_REVERSE_OVER_REVERSE) {
        tg__fail(t, TG_ERR_ARG, "hvp: mode %d is neither forward-over-reverse nor reverse-over-reverse",
                 (int)mode);
        return t->status;
    }
    tg_tensor *g[TG_MAX_INPUTS];
    if (tg_grad(t, f, NULL, n, wrt, g) != TG_OK)
        return t->status;
    if (mode == TG_HVP_FORWARD_OVER_REVERSE) {
        /* H·v = d/dε ∇f(x + ε v): the tangent of the recorded gradient along v */
        if (tg_jvp(t, n, wrt, v) != TG_OK)
            return t->status;
        for (int i = 0; i < n; i++) {
            tg_tensor *gi = tg__tensor(g[i]);
            tg_tensor *h = tg__tensor(tg_tensor_new(t, gi->dtype, gi->ndim, gi->dims, NULL));
            if (h->kind == TG__KIND_NIL)
                return t->status;
            if (gi->tangent)
                memcpy(h->data, gi->tangent, tg__nbytes(h));
            hv[i] = tg__handle(h);
        }
        return TG_OK;
    }
    /* H·v = ∇_x ⟨∇f(x), v⟩: a second reverse pass over the recorded gradient, v held
     * constant (a v that depends on x, v = x itself, would add ∇f) */
    tg_tensor *s = NULL;
    for (int i = 0; i < n; i++) {
        tg_tensor *term = tg_sum(t, tg_mul(t, g[i], tg_detach(t, v[i])));
        s = s ? tg_add(t, s, term) : term;
    }
    return tg_grad(t, s, NULL, n, wrt, hv);
}
