/*
 * Gradient checking: whole graph against central differences, node-local adjoint and
 * Jacobian tests, and the Taylor remainder test. See <tapegrad/gradcheck.h> for the contract.
 *
 * Nothing here touches the caller's tapes: the whole-graph and Taylor checks run the callback
 * on a private float64 tape, and the node-local check re-records each node alone on private
 * tapes (same op, same attributes, same ctx) from copies of its inputs.
 */
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tapegrad/gradcheck.h>

#include "internal.h"
#include "ops/ops.h"

tg_gradcheck_options
tg_gradcheck_defaults(void)
{
    tg_gradcheck_options o = {
        .eps = 1e-6,
        .atol = 1e-5,
        .rtol = 1e-3,
        .wrt = NULL,
        .max_elements = SIZE_MAX,
        .fast_projections = 0,
        .seed = 0x7467726164636b31ull, /* "tgradck1" */
        .probes = 3,
        .jacobian_max = 256,
        .eps_f32 = 0x1p-8,
        .atol_f32 = 1e-3,
        .rtol_f32 = 1e-2,
        .promote_custom = false,
        .exact = false,
        .taylor_second_order = false,
    };
    return o;
}

static void
put(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void
put(char *buf, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, size, fmt, ap);
    va_end(ap);
}

static bool
nonneg(double x)
{
    return isfinite(x) && x >= 0;
}

/* Validates the options; on error writes the reason and returns TG_ERR_ARG. */
static tg_status
check_options(const tg_gradcheck_options *o, char *msg, size_t size)
{
    if (!(isfinite(o->eps) && o->eps > 0)) {
        put(msg, size, "gradcheck: eps must be finite and > 0 (got %g)", o->eps);
        return TG_ERR_ARG;
    }
    if (!nonneg(o->atol) || !nonneg(o->rtol)) {
        put(msg, size, "gradcheck: atol and rtol must be finite and >= 0 (got atol %g, rtol %g)",
            o->atol, o->rtol);
        return TG_ERR_ARG;
    }
    if (o->max_elements == 0) {
        put(msg, size,
            "gradcheck: max_elements is 0, which would check nothing (SIZE_MAX checks every "
            "element)");
        return TG_ERR_ARG;
    }
    if (o->fast_projections < 0) {
        put(msg, size, "gradcheck: fast_projections must be >= 0 (got %d; 0 checks every element)",
            o->fast_projections);
        return TG_ERR_ARG;
    }
    if (o->probes < 1) {
        put(msg, size, "gradcheck: probes must be >= 1 (got %d)", o->probes);
        return TG_ERR_ARG;
    }
    if (!(isfinite(o->eps_f32) && o->eps_f32 > 0) || !nonneg(o->atol_f32) ||
        !nonneg(o->rtol_f32)) {
        put(msg, size,
            "gradcheck: eps_f32 must be finite and > 0, atol_f32 and rtol_f32 finite and >= 0 "
            "(got %g, %g, %g)",
            o->eps_f32, o->atol_f32, o->rtol_f32);
        return TG_ERR_ARG;
    }
    return TG_OK;
}

/* "[1,2]" for flat index i of a tensor with these dims. */
static void
index_text(int ndim, const int64_t *dims, size_t i, char *buf, size_t size)
{
    size_t idx[TG_MAX_DIMS] = {0};
    for (int d = ndim - 1; d >= 0; d--) {
        size_t n = dims[d] > 0 ? (size_t)dims[d] : 1;
        idx[d] = i % n;
        i /= n;
    }
    size_t used = (size_t)snprintf(buf, size, "[");
    for (int d = 0; d < ndim && used < size; d++)
        used += (size_t)snprintf(buf + used, size - used, "%s%zu", d ? "," : "", idx[d]);
    if (used < size)
        snprintf(buf + used, size - used, "]");
}

static double
rel_err(double a, double n)
{
    double m = fmax(fabs(a), fabs(n));
    double d = fabs(a - n);
    if (isnan(d))
        return INFINITY;
    return m > 0 ? d / m : 0;
}

/* How far past the tolerance: > 1 fails. NaN counts as infinitely far. */
static double
badness(double a, double n, double atol, double rtol)
{
    double d = fabs(a - n), tol = atol + rtol * fabs(n);
    if (isnan(d) || isnan(tol))
        return INFINITY;
    if (tol == 0)
        return d > 0 ? INFINITY : 0;
    return d / tol;
}

/* At a non-differentiable point the one-sided slopes disagree by more than the tolerance and
 * the analytic value lies between them (it is a one-sided derivative or a subgradient). */
static bool
is_kink(double analytic, double left, double right, double tol)
{
    if (!isfinite(left) || !isfinite(right) || !isfinite(analytic))
        return false;
    double lo = fmin(left, right), hi = fmax(left, right);
    return hi - lo > tol && analytic >= lo - tol && analytic <= hi + tol;
}

/* ---------------------------------------------------------------------------------------
 * Running the user's function on a private float64 tape.
 */
/* The check running on this thread (its public name), or NULL. Checks do not nest: a check
 * called from the function of another, or from a callback of an op recorded by it, is
 * refused (the inner one would run on tapes the outer one is using, and tg_gradcheck_nodes
 * from inside a custom op's forward would re-run that forward without end). */
static _Thread_local const char *running_check;

static bool
enter_check(const char *name, char *msg, size_t size)
{
    if (running_check) {
        put(msg, size,
            "%s: called while %s is running on this thread (from its function, or from a "
            "callback of an op recorded there): checks do not nest; run it after the other "
            "check returns",
            name, running_check);
        return false;
    }
    running_check = name;
    return true;
}

static void
leave_check(void)
{
    running_check = NULL;
}

struct fn_runner {
    const char *who; /* "tg_gradcheck" or "tg_gradcheck_taylor", for messages */
    bool taylor;     /* who is tg_gradcheck_taylor */
    tg_gradcheck_fn fn;
    void *ctx;
    int n;
    bool inputs_held; /* the inputs' tapes are held (tg__tape_hold) */
    tg_tensor **src; /* the tensors behind the caller's handles (tg__tensor) */
    double **vals;  /* current values of each input (perturbed in place) */
    bool *wrt;      /* differentiate with respect to input k */
    const char **names;
    tg_tape *tape;
    tg_tensor **made; /* this run's input tensors */
    /* Replay (runner_replay): the last recording's output, and what an evaluation does at
     * each of its nodes for input plan_for (plan_nodes entries used, plan_cap allocated) */
    tg_tensor *y;
    struct replay_node *plan;
    size_t plan_nodes, plan_cap;
    int plan_for;
    char *msg;
    size_t msgsize;
};

struct replay_node;
static void runner_unplan(struct fn_runner *r);

/* Holds (or releases) the tape of every input that is not a parameter: the function may not
 * reset or free them while the check reads their names, shapes and values. */
static void
hold_inputs(struct fn_runner *r, bool hold)
{
    for (int k = 0; k < r->n; k++)
        if (r->src[k]->kind != TG__KIND_PARAM) {
            if (hold)
                tg__tape_hold(r->src[k]->tape, r->taylor ? "tg_gradcheck_taylor reads its "
                                                           "inputs from this tape"
                                                         : "tg_gradcheck reads its inputs "
                                                           "from this tape");
            else
                tg__tape_release(r->src[k]->tape);
        }
    r->inputs_held = hold;
}

static void
runner_free(struct fn_runner *r)
{
    if (r->inputs_held)
        hold_inputs(r, false);
    if (r->vals)
        for (int k = 0; k < r->n; k++)
            tg__free(r->vals[k]);
    tg__free(r->vals);
    tg__free(r->wrt);
    tg__free(r->made);
    runner_unplan(r);
    tg__free(r->plan);
    tg__free(r->src);
    tg_tape_free(r->tape);
    memset(r, 0, sizeof *r);
}

static tg_status
runner_init(struct fn_runner *r, const char *who, tg_gradcheck_fn fn, void *ctx,
            tg_tensor *const *inputs, int n_inputs, const bool *wrt, char *msg, size_t msgsize)
{
    memset(r, 0, sizeof *r);
    r->who = who;
    r->taylor = strcmp(who, "tg_gradcheck_taylor") == 0;
    r->msg = msg;
    r->msgsize = msgsize;
    if (!fn) {
        put(msg, msgsize, "gradcheck: the function is NULL");
        return TG_ERR_ARG;
    }
    if (!inputs || n_inputs < 1) {
        put(msg, msgsize, "gradcheck: needs at least one input tensor (got %d%s)", n_inputs,
            inputs ? "" : ", inputs is NULL");
        return TG_ERR_ARG;
    }
    for (int k = 0; k < n_inputs; k++) {
        const tg_tensor *x = tg__tensor(inputs[k]);
        if (x && x->kind == TG__KIND_STALE) {
            put(msg, msgsize,
                "%s: input %d is stale: it was made before tg_tape_reset (%d or more resets "
                "ago: its header now holds a newer tensor)",
                who, k, TG__HEADER_GENS);
            return TG_ERR_ARG;
        }
        if (!x || x->kind == TG__KIND_NIL || !x->data) {
            put(msg, msgsize, "gradcheck: input %d is %s", k,
                !x ? "NULL" : "the nil tensor returned by a failed call");
            return TG_ERR_ARG;
        }
        if (x->kind == TG__KIND_PARAM)
            continue;
        if (x->gen != x->tape->gen) {
            put(msg, msgsize,
                "%s: input %d is stale: it was made before tg_tape_reset (generation %llu, "
                "its tape is at %llu)",
                who, k, (unsigned long long)x->gen, (unsigned long long)x->tape->gen);
            return TG_ERR_ARG;
        }
        if (x->tape->busy_node) {
            const tg_node *b = x->tape->busy_node;
            put(msg, msgsize,
                "%s: input %d (%s) is on a tape whose op %s is running its %s (node #%zu): "
                "run the check after the op's callbacks return",
                who, k, tg__name_text(x).s, b->op->name, x->tape->busy_what, b->index);
            return TG_ERR_ARG;
        }
    }
    r->fn = fn;
    r->ctx = ctx;
    r->plan_for = -1;
    r->n = n_inputs;
    r->src = tg__calloc((size_t)n_inputs, sizeof *r->src);
    r->tape = tg_tape_new();
    r->vals = tg__calloc((size_t)n_inputs, sizeof *r->vals);
    r->wrt = tg__calloc((size_t)n_inputs, sizeof *r->wrt);
    r->made = tg__calloc((size_t)n_inputs, sizeof *r->made);
    if (!r->src || !r->tape || !r->vals || !r->wrt || !r->made)
        goto nomem;
    for (int k = 0; k < n_inputs; k++) {
        const tg_tensor *x = r->src[k] = tg__tensor(inputs[k]);
        size_t n = x->size;
        r->vals[k] = tg__malloc((n ? n : 1) * sizeof(double));
        if (!r->vals[k])
            goto nomem;
        for (size_t i = 0; i < n; i++)
            r->vals[k][i] = x->dtype == TG_F32 ? (double)((const float *)x->data)[i]
                                               : ((const double *)x->data)[i];
        r->wrt[k] = wrt ? wrt[k] : true;
    }
    hold_inputs(r, true);
    return TG_OK;
nomem:
    put(msg, msgsize, "gradcheck: out of memory");
    runner_free(r);
    r->msg = msg;
    r->msgsize = msgsize;
    return TG_ERR_NOMEM;
}

/* A parameter passed to the check must reach the function as inputs[k], the copy the checker
 * perturbs. A function that reads the parameter itself (typically through a layer helper
 * holding it: tg_dense_forward(t, &layer, x)) would have a gradient and differences of zero
 * with respect to inputs[k] and pass without checking anything, so that is an error, naming
 * the parameter and the node that read it. */
static bool
reads_a_source_directly(struct fn_runner *r, const tg_tape *t)
{
    for (size_t i = 0; i < t->n_nodes; i++) {
        const tg_node *node = t->nodes[i];
        for (int j = 0; j < node->n_in; j++) {
            const tg_tensor *x = node->in[j];
            if (x->kind != TG__KIND_PARAM)
                continue;
            for (int k = 0; k < r->n; k++)
                if (r->src[k] == x) {
                    put(r->msg, r->msgsize,
                        "gradcheck: the function read parameter %s itself (as input %d of %s "
                        "#%zu) instead of inputs[%d], the copy the checker perturbs; a layer "
                        "helper must run on a copy of the layer whose tensors are the inputs "
                        "(e.g. tg_dense l = layer; l.weight = inputs[%d])",
                        tg__name_text(x).s, j, node->op->name, i, k, k);
                    return true;
                }
        }
    }
    return false;
}

static tg_status runner_call(struct fn_runner *r, bool backward, double *value);

/* A tg_tape_reset or tg_tape_free that the function (or a callback of an op in it) tried on
 * a tape the check holds: refused, and the check stops, saying so. */
static tg_status
runner_refused(struct fn_runner *r)
{
    const char *what = tg__tape_held_refused(r->tape);
    int k = -1;
    for (int j = 0; !what && j < r->n; j++)
        if (r->src[j]->kind != TG__KIND_PARAM && (what = tg__tape_held_refused(r->src[j]->tape)))
            k = j;
    if (!what)
        return TG_OK;
    char where[160];
    if (k < 0)
        put(where, sizeof where, "the tape the check gave it");
    else
        put(where, sizeof where, "the tape of input %d (%s), which the check reads", k,
            tg__name_text(r->src[k]).s);
    put(r->msg, r->msgsize,
        "%s: the function (or a callback of an op it recorded) called tg_%s on %s while the "
        "check was running: refused, and the check stops (it would have gone on with partial "
        "results or freed memory); record on the tape given, never reset or free it",
        r->who, what, where);
    return TG_ERR_ARG;
}

/* One run of the function at the current values; with backward, gradients are left on the
 * made tensors. The tape is held while the function and backward run. */
static tg_status
runner_eval(struct fn_runner *r, bool backward, double *value)
{
    tg_tape *t = r->tape;
    tg_tape_reset(t);
    for (int k = 0; k < r->n; k++) {
        const tg_tensor *s = r->src[k];
        r->made[k] = tg_tensor_from(t, TG_F64, s->ndim, s->dims, r->vals[k], s->name);
        tg_tensor_set_requires_grad(r->made[k], r->wrt[k]);
    }
    if (tg_tape_status(t) != TG_OK) {
        put(r->msg, r->msgsize, "gradcheck: could not make the float64 inputs: %s",
            tg_tape_error(t));
        return tg_tape_status(t);
    }
    tg__tape_hold(t, r->taylor ? "tg_gradcheck_taylor is running its function on this tape"
                               : "tg_gradcheck is running its function on this tape");
    tg_status s = runner_call(r, backward, value);
    tg_status refused = runner_refused(r);
    tg__tape_release(t);
    return refused != TG_OK ? refused : s;
}

static tg_status
runner_call(struct fn_runner *r, bool backward, double *value)
{
    tg_tape *t = r->tape;
    tg_tensor *y = tg__tensor(r->fn(t, r->made, r->ctx)); /* a handle: see tg__handle */
    if (tg_tape_status(t) != TG_OK) {
        tg_status s = tg_tape_status(t);
        put(r->msg, r->msgsize, "gradcheck: the function failed when re-run in float64: %s%s",
            tg_tape_error(t),
            s == TG_ERR_DTYPE ? " (make every tensor of its own with tg_tensor_dtype(inputs[0]),"
                                " never a fixed dtype; a layer helper must run on a copy of the "
                                "layer whose tensors are the inputs)"
                              : "");
        return s;
    }
    if (!y || y->kind == TG__KIND_NIL) {
        put(r->msg, r->msgsize, "gradcheck: the function returned %s",
            y ? "the nil tensor" : "NULL");
        return TG_ERR_ARG;
    }
    if (y->kind != TG__KIND_PARAM && y->tape != t) {
        put(r->msg, r->msgsize,
            "gradcheck: the function returned a tensor that is not on the tape it was given");
        return TG_ERR_ARG;
    }
    if (reads_a_source_directly(r, t))
        return TG_ERR_ARG;
    if (y->dtype != TG_F64) {
        put(r->msg, r->msgsize,
            "gradcheck: cannot check in float64: the function returned a %s output for float64 "
            "inputs, so its graph does not follow the inputs' dtype (it builds tensors in %s or "
            "ignores the inputs it is given) and cannot be re-run in float64; make every tensor "
            "of its own with tg_tensor_dtype(inputs[0])",
            tg_dtype_name(y->dtype), tg_dtype_name(y->dtype));
        return TG_ERR_DTYPE;
    }
    if (y->size != 1) {
        put(r->msg, r->msgsize,
            "gradcheck: the function returned %s %s; it must return one element (a loss)",
            tg__name_text(y).s, tg__shape_text(y).s);
        return TG_ERR_NOT_SCALAR;
    }
    if (backward && tg_backward(t, y) != TG_OK) {
        put(r->msg, r->msgsize, "gradcheck: backward failed: %s", tg_tape_error(t));
        return tg_tape_status(t);
    }
    r->y = y;
    runner_unplan(r); /* a new graph */
    *value = tg_tensor_item(y);
    return TG_OK;
}

/*
 * Replay: the whole-graph check's perturbed evaluations. The first run of the function
 * recorded its graph on r->tape; an evaluation with input k changed writes the change into
 * the run's input tensor and re-runs, in tape order, only the nodes that depend on input k.
 * Nothing is re-recorded (recording cost more than the arithmetic on small graphs), and the
 * nodes that do not see input k keep their values. The forwards run on the same operands as
 * in a fresh recording, so they give the same values bit for bit, provided the function
 * records the same graph whatever its inputs' values: one that branches on them keeps the
 * branch taken at the unperturbed point, as an op's kink does. (Dropout keeps its mask, drawn
 * at record time; a batch norm's running statistics move only when its node re-runs.)
 *
 * When one element of input k changes, most of a matrix product need not run again. The
 * change of a 2-D tensor is tracked as a region, a row or a column (or all of it), and a
 * product C = op(A)·op(B) with one operand changed in a row or column of op(·) gets (C0, op(A)0
 * the unperturbed values kept at the start of input k):
 *   the input itself, element op(X)[i][j]:  row i of C (X = A) += δ·op(B)[j][·], or column j
 *                                           (X = B) += δ·op(A)[·][i]        → that row/column
 *   op(A) row i:     C[i][·] = op(A)[i][·]·op(B), recomputed              → row i
 *   op(A) column j:  C = C0 + (op(A)[·][j] − op(A)0[·][j]) ⊗ op(B)[j][·]  → all of C
 *   op(B) row j:     C = C0 + op(A)[·][j] ⊗ (op(B)[j][·] − op(B)0[j][·])  → all of C
 *   op(B) column j:  C[·][j] = op(A)·op(B)[·][j], recomputed              → column j
 * and an elementwise node of one changed input (activations, bias_act's x) runs whole and
 * keeps its input's region. For the 784-256-128-10 MLP a change of W1 then costs a column of
 * the first product, the hidden activations, and an outer product for the second. Each update
 * differs from the product recomputed by the round-off of one dot product of the inner
 * dimension k, at most γ_k·Σ|a·b| (γ_k = k·u/(1 − k·u)) per element, which reaches f scaled by
 * its derivatives: far below the central difference's own round-off of about u·|f|/h. The
 * graph is put back by exact forwards after each input (runner_restore).
 */
enum region { REGION_ALL, REGION_ROW, REGION_COL };

enum replay_how {
    HOW_FORWARD,      /* run the forward; the output changes anywhere */
    HOW_ELEMENTWISE,  /* run the forward; the output changes where input `changed` does */
    HOW_INPUT_LINE,   /* a product reading input k: one line of C from the element */
    HOW_RECOMPUTE,    /* a product with a changed row of op(A) or column of op(B): that line */
    HOW_OUTER,        /* a product with a changed column of op(A) or row of op(B): C0 + outer */
};

/* What an evaluation does at one node downstream of input k (runner_plan). */
struct replay_node {
    bool down;            /* depends on input k */
    enum replay_how how;
    int changed;          /* the input that changes (products, elementwise) */
    enum region region;   /* where the output differs from its unperturbed value */
    size_t at;            /* which row or column, this evaluation */
    double *c0, *x0;      /* unperturbed output, and changed operand (HOW_OUTER) */
    bool line_dirty;      /* HOW_INPUT_LINE, HOW_RECOMPUTE: line `prev` of C is perturbed */
    size_t prev;
};

static bool
elementwise_op(const tg_op *op)
{
    static const tg_op *const ops[] = {
        &tg__op_identity, &tg__op_sigmoid, &tg__op_tanh,  &tg__op_relu,      &tg__op_leaky_relu,
        &tg__op_softplus, &tg__op_gelu,    &tg__op_silu,  &tg__op_elu,       &tg__op_gelu_tanh,
        &tg__op_neg,      &tg__op_exp,     &tg__op_log,   &tg__op_log1p,     &tg__op_sqrt,
        &tg__op_scale,    &tg__op_bias_act,
    };
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
        if (op == ops[i])
            return true;
    return false;
}

static void
runner_unplan(struct fn_runner *r)
{
    for (size_t n = 0; r->plan && n < r->plan_nodes; n++) {
        tg__free(r->plan[n].c0);
        tg__free(r->plan[n].x0);
    }
    r->plan_nodes = 0;
    r->plan_for = -1;
}

static double *
snapshot(const tg_tensor *x)
{
    double *c = tg__malloc(tg__nbytes(x) ? tg__nbytes(x) : 1);
    if (c)
        memcpy(c, x->data, tg__nbytes(x));
    return c;
}

/* The plan of input k's evaluations, made at the unperturbed point (the snapshots). */
static bool
runner_plan(struct fn_runner *r, int k)
{
    tg_tape *t = r->tape;
    if (r->plan_for == k)
        return true;
    runner_unplan(r);
    if (r->plan_cap < t->n_nodes) {
        struct replay_node *p = tg__realloc(r->plan, t->n_nodes * sizeof *p);
        if (!p)
            return false;
        r->plan = p;
        r->plan_cap = t->n_nodes;
    }
    memset(r->plan, 0, t->n_nodes * sizeof *r->plan);
    r->plan_nodes = t->n_nodes;
    const tg_tensor *x = tg__tensor(r->made[k]);
    for (size_t i = 0; i < t->n_nodes; i++) {
        tg_node *nd = t->nodes[i];
        struct replay_node *p = &r->plan[i];
        int n_down = 0, changed = -1;
        bool from_x = false;
        for (int j = 0; j < nd->n_in; j++) {
            const tg_tensor *in = nd->in[j];
            bool d = in == x || (in->kind == TG__KIND_OP && r->plan[in->node->index].down);
            if (d)
                n_down++, changed = j, from_x = in == x;
        }
        p->down = n_down > 0;
        p->how = HOW_FORWARD;
        p->region = REGION_ALL;
        if (n_down != 1)
            continue;
        p->changed = changed;
        const tg_tensor *in = nd->in[changed];
        enum region in_region = from_x ? REGION_ALL : r->plan[in->node->index].region;
        if (nd->op == &tg__op_matmul && in->ndim == 2) {
            bool trans = changed ? nd->attr->trans_b : nd->attr->trans_a;
            if (from_x) {
                p->how = HOW_INPUT_LINE;
                p->region = changed ? REGION_COL : REGION_ROW;
            } else if (in_region != REGION_ALL) {
                /* the changed line of op(X): a stored row is a column of op(X) when trans */
                bool op_row = (in_region == REGION_ROW) != trans;
                bool recompute = changed ? !op_row : op_row;
                p->how = recompute ? HOW_RECOMPUTE : HOW_OUTER;
                p->region = !recompute ? REGION_ALL : changed ? REGION_COL : REGION_ROW;
                if (!recompute && !(p->x0 = snapshot(in)))
                    return false;
            }
            if (p->how != HOW_FORWARD && !(p->c0 = snapshot(nd->out)))
                return false;
        } else if (!from_x && in_region != REGION_ALL && elementwise_op(nd->op) &&
                   (nd->op != &tg__op_bias_act || changed == 0) &&
                   nd->out->ndim == 2 && in->ndim == 2) {
            p->how = HOW_ELEMENTWISE;
            p->region = in_region;
        }
    }
    r->plan_for = k;
    return true;
}

/* op(X)[i][j] of a stored 2-D matrix X, op(X) = Xᵀ when trans */
static inline double
op_at(const tg_tensor *x, bool trans, size_t i, size_t j)
{
    size_t s = (size_t)x->dims[1];
    return ((const double *)x->data)[trans ? j * s + i : i * s + j];
}

/* One evaluation's update of product nd (see Replay above); `element` and `delta` describe
 * the input's change for HOW_INPUT_LINE. */
static void
product_update(struct fn_runner *r, tg_node *nd, struct replay_node *p, size_t element,
               double delta)
{
    const tg_tensor *a = nd->in[0], *b = nd->in[1];
    bool ta = nd->attr->trans_a, tb = nd->attr->trans_b;
    size_t m = (size_t)nd->out->dims[0], n = (size_t)nd->out->dims[1];
    size_t kk = (size_t)(ta ? a->dims[0] : a->dims[1]);
    double *C = nd->out->data;
    bool rows = p->region == REGION_ROW; /* a line of C: row or column */
    if (p->line_dirty) { /* put the last line back */
        for (size_t q = 0; q < (rows ? n : m); q++) {
            size_t at = rows ? p->prev * n + q : q * n + p->prev;
            C[at] = p->c0[at];
        }
        p->line_dirty = false;
    }
    if (p->how == HOW_INPUT_LINE) {
        const tg_tensor *x = nd->in[p->changed];
        size_t row = element / (size_t)x->dims[1], col = element % (size_t)x->dims[1];
        bool trans = p->changed ? tb : ta;
        size_t i = trans ? col : row, j = trans ? row : col; /* op(X)[i][j] moved */
        if (p->changed == 0) /* row i of C += delta·op(B)[j][·] */
            for (size_t q = 0; q < n; q++)
                C[i * n + q] = p->c0[i * n + q] + delta * op_at(b, tb, j, q);
        else /* column j of C += delta·op(A)[·][i] */
            for (size_t q = 0; q < m; q++)
                C[q * n + j] = p->c0[q * n + j] + delta * op_at(a, ta, q, i);
        p->at = p->prev = p->changed ? j : i;
        p->line_dirty = true;
        return;
    }
    const tg_tensor *x = nd->in[p->changed];
    /* the line of op(X) that changed: the index of the stored row or column (runner_plan chose
     * the update from which it is of op(X)) */
    size_t line = r->plan[x->node->index].at;
    if (p->how == HOW_RECOMPUTE) {
        if (p->changed == 0) /* op(A) row `line`: C row `line` */
            for (size_t q = 0; q < n; q++) {
                double sum = 0;
                for (size_t j = 0; j < kk; j++)
                    sum += op_at(a, ta, line, j) * op_at(b, tb, j, q);
                C[line * n + q] = sum;
            }
        else /* op(B) column `line`: C column `line` */
            for (size_t q = 0; q < m; q++) {
                double sum = 0;
                for (size_t j = 0; j < kk; j++)
                    sum += op_at(a, ta, q, j) * op_at(b, tb, j, line);
                C[q * n + line] = sum;
            }
        p->at = p->prev = line;
        p->line_dirty = true;
        return;
    }
    /* HOW_OUTER: C = C0 + u ⊗ v, u a column of op(A) and v a row of op(B), one of them the
     * change of the changed operand's line (its current value minus its snapshot) */
    tg_tensor x0 = *x;
    x0.data = p->x0;
    for (size_t i = 0; i < m; i++) {
        double u = p->changed ? op_at(a, ta, i, line)
                              : op_at(a, ta, i, line) - op_at(&x0, ta, i, line);
        for (size_t q = 0; q < n; q++) {
            double v = p->changed ? op_at(b, tb, line, q) - op_at(&x0, tb, line, q)
                                  : op_at(b, tb, line, q);
            C[i * n + q] = p->c0[i * n + q] + u * v;
        }
    }
}

/* f at the current values. Element i of input k (unperturbed: x0) is the only one changed
 * since the last evaluation; with i = SIZE_MAX, any of input k's elements may have changed
 * and every node downstream runs its forward (fast mode's directions, and runner_restore). */
static tg_status
runner_replay(struct fn_runner *r, int k, size_t i, double x0, double *value)
{
    tg_tape *t = r->tape;
    if (!runner_plan(r, k)) {
        put(r->msg, r->msgsize, "gradcheck: out of memory");
        return TG_ERR_NOMEM;
    }
    tg_tensor *x = tg__tensor(r->made[k]);
    if (i == SIZE_MAX)
        memcpy(x->data, r->vals[k], x->size * sizeof(double));
    else
        ((double *)x->data)[i] = r->vals[k][i];
    tg__tape_hold(t, "tg_gradcheck is re-running the function's graph on this tape");
    tg_status s = TG_OK;
    for (size_t n = 0; n < t->n_nodes && s == TG_OK; n++) {
        tg_node *nd = t->nodes[n];
        struct replay_node *p = &r->plan[n];
        if (!p->down)
            continue;
        if (i != SIZE_MAX && p->how != HOW_FORWARD && p->how != HOW_ELEMENTWISE) {
            product_update(r, nd, p, i, r->vals[k][i] - x0);
            continue;
        }
        if (p->how == HOW_ELEMENTWISE)
            p->at = r->plan[nd->in[p->changed]->node->index].at;
        p->line_dirty = false; /* the forward writes all of the output */
        if (nd->zero_output)
            memset(nd->out->data, 0, tg__nbytes(nd->out));
        t->busy_node = nd;
        t->busy_what = "forward";
        s = nd->op->forward(nd);
        t->busy_node = NULL;
        if (s == TG_OK && t->status != TG_OK)
            s = t->status;
        if (s != TG_OK)
            put(r->msg, r->msgsize, "gradcheck: node #%zu (%s) failed when re-run: %s",
                nd->index, nd->op->name,
                t->status != TG_OK ? tg_tape_error(t) : tg_status_string(s));
    }
    tg_status refused = runner_refused(r);
    tg__tape_release(t);
    *value = ((const double *)r->y->data)[0];
    return refused != TG_OK ? refused : s;
}

/* Input k back at r->vals[k] everywhere in the graph, by exact forwards (after its
 * evaluations: the next input's snapshots and the nodes beside it must be unperturbed). */
static tg_status
runner_restore(struct fn_runner *r, int k)
{
    double f;
    return runner_replay(r, k, SIZE_MAX, 0, &f);
}

static double *
runner_grads(struct fn_runner *r, int k)
{
    size_t n = r->src[k]->size;
    double *g = tg__calloc(n ? n : 1, sizeof *g);
    const double *made_grad = tg_tensor_grad(r->made[k]);
    if (g && made_grad)
        for (size_t i = 0; i < n; i++)
            g[i] = made_grad[i];
    return g;
}

/* The names used in reports: the tensor's, or "input <k>". */
static char *
input_name(const tg_tensor *x, int k)
{
    char buf[32];
    if (x->name)
        return tg__strdup(x->name);
    snprintf(buf, sizeof buf, "input %d", k);
    return tg__strdup(buf);
}

/* ---------------------------------------------------------------------------------------
 * Whole-graph check.
 */
static int
cmp_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

/* The elements to check: all (returns NULL, *count = n) or a sorted random subset of cap. */
static size_t *
choose_elements(size_t n, size_t cap, tg_rng *rng, size_t *count, bool *nomem)
{
    *nomem = false;
    if (n <= cap) {
        *count = n;
        return NULL;
    }
    size_t *idx = tg__malloc(n * sizeof *idx);
    if (!idx) {
        *nomem = true;
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        idx[i] = i;
    for (size_t i = 0; i < cap; i++) { /* partial Fisher-Yates */
        size_t j = i + (size_t)(tg_rng_u64(rng) % (uint64_t)(n - i));
        size_t tmp = idx[i];
        idx[i] = idx[j];
        idx[j] = tmp;
    }
    qsort(idx, cap, sizeof *idx, cmp_size);
    *count = cap;
    return idx;
}

void
tg_gradcheck_report_free(tg_gradcheck_report *rep)
{
    if (!rep)
        return;
    for (size_t i = 0; rep->tensors && i < rep->n_tensors; i++)
        tg__free((void *)rep->tensors[i].name);
    tg__free(rep->tensors);
    rep->tensors = NULL;
    rep->n_tensors = 0;
}

/* What judge() recorded that the caller must name: the comparison became the tensor's worst,
 * or its first kink (the caller writes worst_at or kink_at). */
enum judged { JUDGED, JUDGED_WORST, JUDGED_FIRST_KINK };
_Static_assert(sizeof ((tg_gradcheck_tensor *)0)->worst_at ==
                   sizeof ((tg_gradcheck_tensor *)0)->kink_at,
               "worst_at and kink_at are written with one size");

/* One comparison (an element, or a projection in fast mode) of analytic a with numeric n,
 * left and right the one-sided slopes at the same step: a kink when it fails but a lies
 * between them (not judged, and kept out of the errors), a failure past atol + rtol·|n|; the
 * largest errors and the worst comparison (*worst: its badness so far) are kept. */
static enum judged
judge(tg_gradcheck_tensor *tr, double *worst, size_t i, double a, double n, double left,
      double right, const tg_gradcheck_options *o)
{
    double bad = badness(a, n, o->atol, o->rtol);
    if (bad > 1) {
        if (is_kink(a, left, right, o->atol + o->rtol * fabs(n))) {
            if (tr->kinks++)
                return JUDGED;
            tr->kink_index = i;
            tr->kink_left = left;
            tr->kink_right = right;
            tr->kink_analytic = a;
            return JUDGED_FIRST_KINK;
        }
        tr->failures++;
    }
    double ae = fabs(a - n);
    tr->max_abs_err = isnan(ae) || ae > tr->max_abs_err ? (isnan(ae) ? INFINITY : ae)
                                                         : tr->max_abs_err;
    tr->max_rel_err = fmax(tr->max_rel_err, rel_err(a, n));
    if (bad <= *worst)
        return JUDGED;
    *worst = bad;
    tr->worst_index = i;
    tr->worst_analytic = a;
    tr->worst_numeric = n;
    return JUDGED_WORST;
}

/* Checks one input tensor element by element; returns TG_OK or why it could not run. */
static tg_status
check_tensor(struct fn_runner *r, int k, const double *analytic, double f0,
             const tg_gradcheck_options *o, tg_rng *rng, tg_gradcheck_tensor *tr)
{
    const tg_tensor *src = r->src[k];
    size_t count;
    bool nomem;
    size_t *subset = choose_elements(src->size, o->max_elements, rng, &count, &nomem);
    if (nomem) {
        put(r->msg, r->msgsize, "gradcheck: out of memory choosing elements of %s",
            tg__name_text(src).s);
        return TG_ERR_NOMEM;
    }
    double worst = -1;
    tr->checked = count;
    for (size_t c = 0; c < count; c++) {
        size_t i = subset ? subset[c] : c;
        double *x = &r->vals[k][i], x0 = *x;
        double xp = x0 + o->eps, xm = x0 - o->eps, fp, fm;
        tg_status s;
        *x = xp;
        s = runner_replay(r, k, i, x0, &fp);
        *x = xm;
        if (s == TG_OK)
            s = runner_replay(r, k, i, x0, &fm);
        *x = x0;
        ((double *)tg__tensor(r->made[k])->data)[i] = x0; /* the graph's values follow below */
        if (s != TG_OK) {
            tg__free(subset);
            return s;
        }
        /* Divide by the exact distance between the two points actually evaluated. */
        double numeric = (fp - fm) / (xp - xm);
        double left = (f0 - fm) / (x0 - xm), right = (fp - f0) / (xp - x0);
        enum judged j = judge(tr, &worst, i, analytic[i], numeric, left, right, o);
        if (j != JUDGED)
            index_text(src->ndim, src->dims, i, j == JUDGED_WORST ? tr->worst_at : tr->kink_at,
                       sizeof tr->worst_at);
    }
    tg__free(subset);
    tr->pass = tr->failures == 0;
    return count ? runner_restore(r, k) : TG_OK;
}

/*
 * Fast mode for input k (PyTorch's gradcheck(fast_mode=True), with Gaussian directions). Per
 * projection p, a direction u = z/‖z‖, z ~ N(0, I) over the tensor's n elements, and
 *
 *     analytic  a = ⟨∇f, Δ⟩ / 2h,    numeric  n_p = (f(x + h·u) − f(x − h·u)) / 2h,
 *
 * Δ = (x + h·u) − (x − h·u) as rounded, the exact difference of the two points evaluated
 * (≈ 2h·u): the rounding of the perturbed values enters both sides alike, as the element
 * check divides by the exact distance. Judged by the element rule |a − n_p| <= atol +
 * rtol·|n_p|, unscaled: ‖u‖ = 1 makes the step as long as the element check's, so the
 * central difference carries the same errors (truncation h²·D³f[u,u,u]/6, round-off about
 * ε·|f|/h), and n_p ≈ ‖∇f‖·ξ/√n (ξ ~ N(0, 1)) is of the size of a typical element.
 * (PyTorch scales atol by Σu_i, about 0.87·√n for its u, so that fast mode passes wherever
 * the element check could: on a 784x256 weight an allowance 390 times the element check's,
 * which central differences of the same step length do not need.)
 *
 * Why Gaussian: for a wrong gradient ∇f + e, a − n_p ≈ ⟨e, u⟩ ≈ ‖e‖·ξ'/√n whatever the
 * pattern of e, so a miss, |⟨e, z⟩| <= atol·‖z‖ + rtol·|⟨∇f, z⟩|, has probability at most
 * about √(2/π)·(atol·√n + rtol·‖∇f‖)/(‖e‖ − rtol·‖∇f‖) (write z's parts along e/‖e‖ and
 * across it as s and t, bound |⟨∇f, z⟩| <= ‖∇f‖(|s| + |t|), and use the N(0, 1) density,
 * <= 1/√(2π), for s given t). PyTorch's u, uniform in [0, 1) and normalized, lies mostly
 * along the all-ones vector: it sees Σe_i well, and an error that sums to zero (a transpose,
 * a swap) only through a component of 0.29 per entry. ±1 entries miss an error of two equal
 * and opposite entries (a transposed 2x2 block) with probability 1/2.
 */
/* Fills z[0..n) with independent standard normals by Marsaglia's polar method: a point of the
 * square (−1, 1)², kept when inside the unit disc (π/4 of the time), gives two normals
 * v·√(−2 ln s / s), s = |v|², with one logarithm and no trigonometry (tg_rng_normal's
 * Box-Muller takes a sine and a cosine: three times as long, the larger part of a fast
 * check on a 784x256 weight). One 64-bit draw gives both coordinates, 32 bits each; the
 * smallest s (a coordinate is never 0, so s > 0) then cuts the tails at |z| ≈ 9, far past
 * what a direction needs. */
static void
fill_normal(double *z, size_t n, tg_rng *rng)
{
    for (size_t i = 0; i < n;) {
        uint64_t b = tg_rng_u64(rng);
        double v1 = ((double)(uint32_t)b + 0.5) * 0x1p-31 - 1;
        double v2 = ((double)(uint32_t)(b >> 32) + 0.5) * 0x1p-31 - 1;
        double s = v1 * v1 + v2 * v2;
        if (s >= 1)
            continue;
        double m = sqrt(-2 * log(s) / s);
        z[i++] = v1 * m;
        if (i < n)
            z[i++] = v2 * m;
    }
}

static tg_status
check_tensor_fast(struct fn_runner *r, int k, const double *g, double f0,
                  const tg_gradcheck_options *o, tg_rng *rng, tg_gradcheck_tensor *tr)
{
    size_t n = r->src[k]->size;
    double *x = r->vals[k], h = o->eps, worst = -1;
    double *x0 = tg__malloc((n ? n : 1) * sizeof *x0), *u = tg__malloc((n ? n : 1) * sizeof *u);
    if (!x0 || !u) {
        tg__free(x0);
        tg__free(u);
        put(r->msg, r->msgsize, "gradcheck: out of memory drawing directions for %s",
            tg__name_text(r->src[k]).s);
        return TG_ERR_NOMEM;
    }
    memcpy(x0, x, n * sizeof *x0);
    tr->checked = n ? (size_t)o->fast_projections : 0; /* an empty tensor has no direction */
    tg_status s = TG_OK;
    for (size_t p = 0; p < tr->checked && s == TG_OK; p++) {
        double ss = 0, dot = 0, fp = 0, fm = 0;
        fill_normal(u, n, rng);
        for (size_t i = 0; i < n; i++)
            ss += u[i] * u[i];
        double scale = ss > 0 ? h / sqrt(ss) : 0; /* h·u = scale·z */
        for (size_t i = 0; i < n; i++)
            x[i] = x0[i] + scale * u[i];
        s = runner_eval(r, false, &fp);
        for (size_t i = 0; i < n; i++) {
            double xp = x[i];
            x[i] = x0[i] - scale * u[i];
            dot += g[i] * (xp - x[i]);
        }
        if (s == TG_OK)
            s = runner_eval(r, false, &fm);
        memcpy(x, x0, n * sizeof *x0);
        if (s != TG_OK)
            break;
        enum judged j = judge(tr, &worst, p, dot / (2 * h), (fp - fm) / (2 * h), (f0 - fm) / h,
                              (fp - f0) / h, o);
        if (j != JUDGED)
            put(j == JUDGED_WORST ? tr->worst_at : tr->kink_at, sizeof tr->worst_at, "·u%zu", p);
    }
    tg__free(x0);
    tg__free(u);
    tr->pass = tr->failures == 0;
    return s;
}

static tg_status gradcheck_run(tg_gradcheck_fn fn, void *ctx, tg_tensor *const *inputs,
                               int n_inputs, const tg_gradcheck_options *opt,
                               tg_gradcheck_report *rep);

tg_status
tg_gradcheck(tg_gradcheck_fn fn, void *ctx, tg_tensor *const *inputs, int n_inputs,
             const tg_gradcheck_options *opt, tg_gradcheck_report *rep)
{
    if (!rep)
        return TG_ERR_ARG;
    memset(rep, 0, sizeof *rep);
    if (!enter_check("tg_gradcheck", rep->message, sizeof rep->message))
        return rep->status = TG_ERR_ARG;
    tg_status s = gradcheck_run(fn, ctx, inputs, n_inputs, opt, rep);
    leave_check();
    return s;
}

static tg_status
gradcheck_run(tg_gradcheck_fn fn, void *ctx, tg_tensor *const *inputs, int n_inputs,
              const tg_gradcheck_options *opt, tg_gradcheck_report *rep)
{
    tg_gradcheck_options o = opt ? *opt : tg_gradcheck_defaults();
    rep->eps = o.eps, rep->atol = o.atol, rep->rtol = o.rtol;
    rep->fast_projections = o.fast_projections;
    rep->status = check_options(&o, rep->message, sizeof rep->message);
    if (rep->status != TG_OK)
        return rep->status;

    struct fn_runner r;
    rep->status = runner_init(&r, "tg_gradcheck", fn, ctx, inputs, n_inputs, o.wrt,
                              rep->message, sizeof rep->message);
    if (rep->status != TG_OK)
        return rep->status;
    tg_rng *rng = tg_rng_new(o.seed);
    size_t n_checked = 0;
    for (int k = 0; k < n_inputs; k++)
        n_checked += r.wrt[k];
    rep->tensors = tg__calloc(n_checked ? n_checked : 1, sizeof *rep->tensors);
    double f0 = 0;
    if (!rng || !rep->tensors) {
        put(rep->message, sizeof rep->message, "gradcheck: out of memory");
        rep->status = TG_ERR_NOMEM;
        goto done;
    }
    rep->status = runner_eval(&r, true, &f0);
    if (rep->status != TG_OK)
        goto done;
    rep->value = f0;

    /* Keep the analytic gradients: every later run resets the tape. */
    double **grads = tg__calloc((size_t)n_inputs, sizeof *grads);
    if (!grads) {
        put(rep->message, sizeof rep->message, "gradcheck: out of memory");
        rep->status = TG_ERR_NOMEM;
        goto done;
    }
    for (int k = 0; k < n_inputs && rep->status == TG_OK; k++)
        if (r.wrt[k] && !(grads[k] = runner_grads(&r, k))) {
            put(rep->message, sizeof rep->message, "gradcheck: out of memory");
            rep->status = TG_ERR_NOMEM;
        }
    for (int k = 0; k < n_inputs && rep->status == TG_OK; k++) {
        if (!r.wrt[k])
            continue;
        tg_gradcheck_tensor *tr = &rep->tensors[rep->n_tensors++];
        tr->name = input_name(r.src[k], k);
        tr->input = k;
        tr->size = r.src[k]->size;
        tg_tensor_shape_string(r.src[k], tr->shape, sizeof tr->shape);
        if (!tr->name) {
            put(rep->message, sizeof rep->message, "gradcheck: out of memory");
            rep->status = TG_ERR_NOMEM;
            break;
        }
        rep->status = o.fast_projections
                          ? check_tensor_fast(&r, k, grads[k], f0, &o, rng, tr)
                          : check_tensor(&r, k, grads[k], f0, &o, rng, tr);
    }
    for (int k = 0; k < n_inputs; k++)
        tg__free(grads[k]);
    tg__free(grads);
    if (rep->status != TG_OK)
        goto done;

    size_t failed = 0, kinks = 0;
    const tg_gradcheck_tensor *first = NULL;
    for (size_t i = 0; i < rep->n_tensors; i++) {
        failed += !rep->tensors[i].pass;
        kinks += rep->tensors[i].kinks;
        if (!rep->tensors[i].pass && !first)
            first = &rep->tensors[i];
    }
    rep->pass = failed == 0;
    rep->status = rep->pass ? TG_OK : TG_ERR_CHECK;
    char mode[64] = "";
    if (o.fast_projections)
        put(mode, sizeof mode, " (fast mode, %d projection%s per tensor)", o.fast_projections,
            o.fast_projections == 1 ? "" : "s");
    const char *unit = o.fast_projections ? "projections" : "elements";
    if (first) {
        put(rep->message, sizeof rep->message,
            "gradcheck%s: %zu of %zu tensors FAILED; worst in %s: %zu of %zu %s wrong, %s%s "
            "analytic %.9g, numeric %.9g%s",
            mode, failed, rep->n_tensors, first->name, first->failures, first->checked, unit,
            first->name, first->worst_at, first->worst_analytic, first->worst_numeric,
            o.fast_projections ? "; tg_gradcheck_nodes names the node" : "");
    } else {
        put(rep->message, sizeof rep->message, "gradcheck%s: %zu tensors passed%s%s%s", mode,
            rep->n_tensors, kinks ? " (some " : "", kinks ? unit : "",
            kinks ? " at non-differentiable points were not judged)" : "");
    }
done:
    tg_rng_free(rng);
    runner_free(&r);
    return rep->status;
}

void
tg_gradcheck_report_print(const tg_gradcheck_report *rep, FILE *out, bool verbose)
{
    if (!rep || !out)
        return;
    if (rep->status != TG_OK && rep->status != TG_ERR_CHECK) {
        fprintf(out, "%s\n", rep->message);
        return;
    }
    bool fast = rep->fast_projections > 0;
    char how[160] = "float64 central differences";
    if (fast)
        put(how, sizeof how,
            "fast mode, %d random projection%s per tensor: <grad, u> against float64 central "
            "differences along u",
            rep->fast_projections, rep->fast_projections == 1 ? "" : "s");
    fprintf(out, "gradcheck: %s  (f = %.9g; %s, eps %g; pass when |a-n| <= %g + %g*|n|)\n",
            rep->pass ? "PASS" : "FAIL", rep->value, how, rep->eps, rep->atol, rep->rtol);
    size_t shown = 0;
    for (size_t i = 0; i < rep->n_tensors; i++)
        shown += verbose || !rep->tensors[i].pass || rep->tensors[i].kinks;
    if (!shown) {
        fprintf(out, "  all %zu checked tensor%s pass\n", rep->n_tensors,
                rep->n_tensors == 1 ? "" : "s");
        return;
    }
    fprintf(out, "  %-12s %-10s %9s %11s %11s  worst %s: analytic vs numeric\n", "tensor",
            "shape", "checked", "max abs err", "max rel err", fast ? "projection" : "element");
    for (size_t i = 0; i < rep->n_tensors; i++) {
        const tg_gradcheck_tensor *t = &rep->tensors[i];
        if (!verbose && t->pass && !t->kinks)
            continue;
        char checked[48];
        if (fast) /* every element is in every direction */
            snprintf(checked, sizeof checked, "%zu proj", t->checked);
        else
            snprintf(checked, sizeof checked, "%zu/%zu", t->checked, t->size);
        fprintf(out, "  %-12s %-10s %9s %11.2e %11.2e  ", t->name, t->shape, checked,
                t->max_abs_err, t->max_rel_err);
        if (t->checked > t->kinks)
            fprintf(out, "%s%s: %.9g vs %.9g", t->name, t->worst_at, t->worst_analytic,
                    t->worst_numeric);
        fprintf(out, "  %s", t->pass ? "pass" : "FAIL");
        if (!t->pass)
            fprintf(out, " (%zu wrong)", t->failures);
        fprintf(out, "\n");
        if (t->kinks)
            fprintf(out,
                    "  %-12s non-differentiable point%s: %zu %s%s, first %s%s (one-sided "
                    "slopes %.6g and %.6g, analytic %.6g): not judged\n",
                    "", t->kinks > 1 ? "s" : "", t->kinks, fast ? "projection" : "element",
                    t->kinks > 1 ? "s" : "", t->name, t->kink_at, t->kink_left, t->kink_right,
                    t->kink_analytic);
    }
    if (fast && !rep->pass)
        fprintf(out, "  a projection says that a tensor's gradient is wrong, not where: "
                     "tg_gradcheck_nodes names the node, the element check the elements\n");
}

/* ---------------------------------------------------------------------------------------
 * Node-local check.
 */
static bool
is_builtin(const tg_op *op)
{
    for (size_t i = 0; i < TG_OP_COUNT; i++)
        if (tg__builtin_ops[i] == op)
            return true;
    return false;
}

static double
load(const void *v, tg_dtype dt, size_t i)
{
    return dt == TG_F32 ? (double)((const float *)v)[i] : ((const double *)v)[i];
}

/* Stores x (rounded to dt) and returns the value stored. */
static double
store(void *v, tg_dtype dt, size_t i, double x)
{
    if (dt == TG_F32)
        return (double)(((float *)v)[i] = (float)x);
    return ((double *)v)[i] = x;
}

static double
round_to(tg_dtype dt, double x)
{
    return dt == TG_F32 ? (double)(float)x : x;
}

/* A node re-recorded alone on a private tape, from copies of the original's inputs. */
struct solo {
    tg_tape *tape;
    tg_node *node;
    tg_tensor *seed; /* output-shaped: the v of a VJP */
    tg_tensor *tangent[TG_MAX_INPUTS]; /* input-shaped: the u of a JVP */
    tg_dtype dt;
};

static tg_status
solo_record(struct solo *s, const tg_node *n, tg_dtype dt, char *msg, size_t size)
{
    tg_tape_reset(s->tape);
    s->dt = dt;
    s->node = NULL;
    tg_tensor *in[TG_MAX_INPUTS];
    for (int k = 0; k < n->n_in; k++) {
        const tg_tensor *x = n->in[k];
        in[k] = tg__tensor(tg_tensor_new(s->tape, dt, x->ndim, x->dims, x->name));
        if (in[k]->kind == TG__KIND_NIL)
            break;
        for (size_t i = 0; i < x->size; i++)
            store(in[k]->data, dt, i, load(x->data, x->dtype, i));
        tg_tensor_set_requires_grad(in[k], x->requires_grad);
    }
    /* Tensors an op reads through its attributes (batch_norm's running statistics) are
     * copied too: the re-run must neither read them in another dtype nor update the caller's. */
    struct tg__attr attr = *n->attr;
    for (int k = 0; k < 2 && tg_tape_status(s->tape) == TG_OK; k++) {
        const tg_tensor *x = n->attr->stats[k];
        if (!x)
            continue;
        attr.stats[k] = tg__tensor(tg_tensor_new(s->tape, dt, x->ndim, x->dims, x->name));
        if (attr.stats[k]->kind != TG__KIND_NIL)
            for (size_t i = 0; i < x->size; i++)
                store(attr.stats[k]->data, dt, i, load(x->data, x->dtype, i));
    }
    tg_tensor *out = tg_tape_status(s->tape) == TG_OK
                         ? tg__tensor(tg__record(s->tape, n->op, in, n->n_in, &attr, n->ctx))
                         : &s->tape->nil;
    if (out->kind != TG__KIND_NIL) {
        s->seed = tg__tensor(tg_tensor_new(s->tape, dt, out->ndim, out->dims, NULL));
        for (int k = 0; k < n->n_in; k++)
            s->tangent[k] =
                tg__tensor(tg_tensor_new(s->tape, dt, in[k]->ndim, in[k]->dims, NULL));
    }
    if (tg_tape_status(s->tape) != TG_OK) {
        put(msg, size, "re-running the node alone in %s failed: %s", tg_dtype_name(dt),
            tg_tape_error(s->tape));
        return tg_tape_status(s->tape);
    }
    s->node = out->node;
    return TG_OK;
}

struct node_check {
    const tg_node *orig;
    struct solo *sv; /* runs the VJP, in the node's own dtype */
    struct solo *sf; /* runs the forward for differences (may be sv) */
    tg_rng *rng;
    double h, atol, rtol;
    size_t out_n;
    double *v, *fp, *fm, *f0, *u, *xp, *xm;
    double *x0[TG_MAX_INPUTS], *g[TG_MAX_INPUTS];
    bool check[TG_MAX_INPUTS];
    tg_gradcheck_node *res;
    size_t fails, kinks;
    bool jvp_worst; /* the worst so far was the JVP's */
    double worst;  /* largest error / tolerance so far */
    double jworst; /* the same over Jacobian entries */
};

/* g[k] = VJP_k(v) for the checked inputs; v is replaced by the value actually used (rounded to
 * the node's dtype). */
static tg_status
nc_vjp(struct node_check *c)
{
    struct solo *s = c->sv;
    for (size_t i = 0; i < c->out_n; i++)
        c->v[i] = store(s->seed->data, s->dt, i, c->v[i]);
    if (tg_backward_seeded(s->tape, s->node->out, s->seed) != TG_OK) {
        put(c->res->message, sizeof c->res->message, "the VJP failed when run alone: %s",
            tg_tape_error(s->tape));
        return tg_tape_status(s->tape);
    }
    for (int k = 0; k < s->node->n_in; k++) {
        const tg_tensor *x = s->node->in[k];
        if (!c->check[k])
            continue;
        for (size_t i = 0; i < x->size; i++)
            c->g[k][i] = x->grad ? load(x->grad, x->dtype, i) : 0;
    }
    return TG_OK;
}

/* ⟨w, J_k·u⟩ and Σ |w_i (J_k·u)_i| on solo s, at its inputs' current values: u (rounded to
 * s's dtype) is input k's tangent, the other inputs have none. */
static tg_status
nc_jvp(struct node_check *c, struct solo *s, int k, const double *u, const double *w,
       double *dot, double *abs_sum)
{
    tg_tensor *x = s->node->in[k], *dx = s->tangent[k];
    for (size_t i = 0; i < x->size; i++)
        store(dx->data, s->dt, i, u[i]);
    if (tg_jvp(s->tape, 1, &x, &dx) != TG_OK) {
        put(c->res->message, sizeof c->res->message, "the JVP failed when run alone: %s",
            tg_tape_error(s->tape));
        return tg_tape_status(s->tape);
    }
    const void *y = s->node->out->tangent;
    *dot = *abs_sum = 0;
    for (size_t i = 0; y && i < c->out_n; i++) {
        double t = w[i] * load(y, s->dt, i);
        *dot += t;
        *abs_sum += fabs(t);
    }
    return TG_OK;
}

/* Runs the forward with input k set to xk (already rounded), output into F. */
static tg_status
nc_forward(struct node_check *c, int k, const double *xk, double *F)
{
    struct solo *s = c->sf;
    tg_node *n = s->node;
    for (size_t i = 0; i < n->in[k]->size; i++)
        store(n->in[k]->data, s->dt, i, xk[i]);
    tg_status st = n->op->forward(n);
    if (st != TG_OK || tg_tape_status(s->tape) != TG_OK) {
        put(c->res->message, sizeof c->res->message,
            "the forward failed on a perturbed input %d: %s", k,
            tg_tape_status(s->tape) != TG_OK ? tg_tape_error(s->tape) : tg_status_string(st));
        return st != TG_OK ? st : tg_tape_status(s->tape);
    }
    if (F)
        for (size_t i = 0; i < c->out_n; i++)
            F[i] = load(n->out->data, s->dt, i);
    return TG_OK;
}

/* Records a disagreement (or a kink) of one comparison (of the JVP's when jvp). */
static void
nc_judge_rule(struct node_check *c, int k, double diff, double tol, bool kink, double abs_err,
              double rel, bool jvp)
{
    double bad = isnan(diff) ? INFINITY : tol > 0 ? diff / tol : diff > 0 ? INFINITY : 0;
    if (bad > 1 && kink) {
        c->kinks++;
        return;
    }
    if (bad > 1)
        c->fails++;
    c->res->max_abs_err = fmax(c->res->max_abs_err, isnan(abs_err) ? INFINITY : abs_err);
    c->res->max_rel_err = fmax(c->res->max_rel_err, isnan(rel) ? INFINITY : rel);
    if (bad > c->worst) {
        c->worst = bad;
        c->res->worst_input = k;
        c->jvp_worst = jvp;
    }
}

static void
nc_judge(struct node_check *c, int k, double diff, double tol, bool kink, double abs_err,
         double rel)
{
    nc_judge_rule(c, k, diff, tol, kink, abs_err, rel, false);
}

/* Adjoint test for input k: ⟨v, F(x + h·u) − F(x − h·u)⟩ against ⟨VJP_k(v), Δx⟩. */
static tg_status
nc_adjoint(struct node_check *c, int k, int probes)
{
    tg_dtype fdt = c->sf->dt;
    size_t n = c->orig->in[k]->size;
    double h = c->h;
    for (int p = 0; p < probes; p++) {
        for (size_t i = 0; i < c->out_n; i++)
            c->v[i] = tg_rng_normal(c->rng);
        tg_status st = nc_vjp(c);
        if (st != TG_OK)
            return st;
        /* Probe 0 goes along the computed VJP itself: then ⟨VJP(v), u⟩ is a sum of squares and
         * a rule off by a sign or a factor cannot hide in a cancelling sum. */
        double ss = 0;
        for (size_t i = 0; i < n; i++)
            ss += c->g[k][i] * c->g[k][i];
        double rms = sqrt(ss / (double)(n ? n : 1));
        for (size_t i = 0; i < n; i++)
            c->u[i] = p == 0 && rms > 0 && isfinite(rms) ? c->g[k][i] / rms
                                                        : tg_rng_normal(c->rng);
        for (size_t i = 0; i < n; i++) {
            c->xp[i] = round_to(fdt, c->x0[k][i] + h * c->u[i]);
            c->xm[i] = round_to(fdt, c->x0[k][i] - h * c->u[i]);
        }
        if ((st = nc_forward(c, k, c->xp, c->fp)) != TG_OK ||
            (st = nc_forward(c, k, c->xm, c->fm)) != TG_OK ||
            (st = nc_forward(c, k, c->x0[k], NULL)) != TG_OK)
            return st;
        double num = 0, ana = 0, s_num = 0, s_ana = 0, num_p = 0, num_m = 0;
        for (size_t i = 0; i < c->out_n; i++) {
            num += c->v[i] * (c->fp[i] - c->fm[i]);
            s_num += fabs(c->v[i] * (c->fp[i] - c->fm[i]));
            num_p += c->v[i] * (c->fp[i] - c->f0[i]);
            num_m += c->v[i] * (c->f0[i] - c->fm[i]);
        }
        for (size_t i = 0; i < n; i++) {
            ana += c->g[k][i] * (c->xp[i] - c->xm[i]);
            s_ana += fabs(c->g[k][i] * (c->xp[i] - c->xm[i]));
        }
        double S = (s_num + s_ana) / 2, diff = fabs(num - ana);
        double tol = 2 * h * c->atol + c->rtol * S;
        bool kink = is_kink(ana / (2 * h), num_m / h, num_p / h, tol / (2 * h));
        nc_judge(c, k, diff, tol, kink, diff / (2 * h),
                 S > 0 ? diff / S : (diff > 0 ? INFINITY : 0));
        /* The same differences judge the JVP: ⟨v, F(x + h·u) − F(x − h·u)⟩ against
         * ⟨v, J_k·Δx⟩, Δx = (x + h·u) − (x − h·u) as rounded, at x (restored above). */
        if (c->orig->op->jvp) {
            for (size_t i = 0; i < n; i++)
                c->xp[i] -= c->xm[i]; /* Δx: xp is rewritten by the next probe */
            double jvp, s_jvp;
            if ((st = nc_jvp(c, c->sf, k, c->xp, c->v, &jvp, &s_jvp)) != TG_OK)
                return st;
            double Sj = (s_num + s_jvp) / 2, dj = fabs(num - jvp);
            double tolj = 2 * h * c->atol + c->rtol * Sj;
            bool kinkj = is_kink(jvp / (2 * h), num_m / h, num_p / h, tolj / (2 * h));
            nc_judge_rule(c, k, dj, tolj, kinkj, dj / (2 * h),
                          Sj > 0 ? dj / Sj : (dj > 0 ? INFINITY : 0), true);
        }
    }
    return TG_OK;
}

/* γ_N = N·ε / (1 − N·ε): the relative error bound of a sum of N rounded terms (Higham). */
static double
gamma_n(tg_dtype dt, double n)
{
    double u = dt == TG_F32 ? 0x1p-24 : 0x1p-53, nu = n * u;
    return nu < 1 ? nu / (1 - nu) : INFINITY;
}

/* Exact test for input k: ⟨v, J_k·u⟩ (the JVP) against ⟨J_kᵀ·v, u⟩ (the VJP), in the node's
 * dtype, no differences. Bound: each side is a dot product of out (or in) terms computed from
 * a rule's outputs, and each rule output carries the rule's own round-off relative to its
 * terms; 2·γ_N·(S_a + S_b), N = out + in + 64, covers both dot products and up to 64
 * roundings per rule output, plus 8 times the round-off of a − b measured along rescaled
 * directions (below), for rules whose inner terms are far larger than their outputs, plus
 * γ_N·‖v‖·‖u‖ for Jacobians that are round-off (see tg_gradcheck_options.exact). */
static tg_status
nc_exact(struct node_check *c, int k, int probes)
{
    struct solo *s = c->sv;
    size_t n = c->orig->in[k]->size;
    double N = (double)c->out_n + (double)n + 64;
    for (int p = 0; p < probes; p++) {
        for (size_t i = 0; i < c->out_n; i++)
            c->v[i] = tg_rng_normal(c->rng);
        tg_status st = nc_vjp(c);
        if (st != TG_OK)
            return st;
        /* probe 0 along the VJP itself: ⟨VJP(v), u⟩ is then a sum of squares (see nc_adjoint) */
        double ss = 0;
        for (size_t i = 0; i < n; i++)
            ss += c->g[k][i] * c->g[k][i];
        double rms = sqrt(ss / (double)(n ? n : 1));
        for (size_t i = 0; i < n; i++)
            c->u[i] = round_to(s->dt, p == 0 && rms > 0 && isfinite(rms) ? c->g[k][i] / rms
                                                                         : tg_rng_normal(c->rng));
        double jvp, s_jvp, vjp = 0, s_vjp = 0;
        if ((st = nc_jvp(c, s, k, c->u, c->v, &jvp, &s_jvp)) != TG_OK)
            return st;
        for (size_t i = 0; i < n; i++) {
            vjp += c->g[k][i] * c->u[i];
            s_vjp += fabs(c->g[k][i] * c->u[i]);
        }
        /* The round-off of each side, measured: both are linear in the direction, so along
         * σ·u (and σ·v) they scale by σ exactly, and for σ not a power of 2 every rounding
         * inside the rule falls differently. A Jacobian that is 0 in exact arithmetic (a
         * norm over one or two elements, a softmax over one class) leaves only such
         * round-off on both sides, of the size of the rule's inner terms, which the outputs
         * do not show: this term covers it. */
        double noise = 0;
        static const double sigma[2] = {1 + 0x1p-10, 1 - 0x3p-11};
        for (int r = 0; r < 2; r++) { /* the JVP side: along σ·u */
            double js, s_js, vs = 0;
            for (size_t i = 0; i < n; i++)
                c->xp[i] = round_to(s->dt, c->u[i] * sigma[r]);
            if ((st = nc_jvp(c, s, k, c->xp, c->v, &js, &s_js)) != TG_OK)
                return st;
            for (size_t i = 0; i < n; i++)
                vs += c->g[k][i] * c->xp[i];
            noise = fmax(noise, fabs((js - vs) - (jvp - vjp) * sigma[r]));
        }
        /* the VJP side: VJP(σ·v), v and VJP(v) kept in fp and xm meanwhile */
        memcpy(c->fp, c->v, c->out_n * sizeof *c->fp);
        memcpy(c->xm, c->g[k], n * sizeof *c->xm);
        for (int r = 0; r < 2; r++) {
            for (size_t i = 0; i < c->out_n; i++)
                c->v[i] = c->fp[i] * sigma[r];
            if ((st = nc_vjp(c)) != TG_OK) /* rounds v into the node's dtype */
                return st;
            double jv, s_jv, vs = 0; /* ⟨σv, J·u⟩ against ⟨VJP(σv), u⟩ */
            if ((st = nc_jvp(c, s, k, c->u, c->v, &jv, &s_jv)) != TG_OK)
                return st;
            for (size_t i = 0; i < n; i++)
                vs += c->g[k][i] * c->u[i];
            noise = fmax(noise, fabs((jv - vs) - (jvp - vjp) * sigma[r]));
        }
        memcpy(c->v, c->fp, c->out_n * sizeof *c->v);
        memcpy(c->g[k], c->xm, n * sizeof *c->xm);
        /* and a floor for coefficients rounded once: (p - 1)·u̇ with p = 1 ± ε, a softmax over
         * one class, scales with the direction like a true Jacobian: γ_N·‖v‖·‖u‖ is the
         * size of a Jacobian whose entries are the round-off of O(1) coefficients */
        double vv = 0, uu = 0;
        for (size_t i = 0; i < c->out_n; i++)
            vv += c->v[i] * c->v[i];
        for (size_t i = 0; i < n; i++)
            uu += c->u[i] * c->u[i];
        double S = s_jvp + s_vjp, diff = fabs(jvp - vjp);
        double tol = 2 * gamma_n(s->dt, N) * S + 8 * noise + gamma_n(s->dt, N) * sqrt(vv * uu);
        nc_judge(c, k, diff, tol, false, diff, S > 0 ? diff / S : (diff > 0 ? INFINITY : 0));
    }
    return TG_OK;
}

/* Full Jacobian of input k: rows by VJPs of one-hot v, columns by central differences. */
static tg_status
nc_jacobian(struct node_check *c, int k)
{
    tg_dtype fdt = c->sf->dt;
    size_t n = c->orig->in[k]->size, m = c->out_n;
    double *ja = tg__malloc((m * n > 0 ? m * n : 1) * sizeof *ja);
    if (!ja) {
        put(c->res->message, sizeof c->res->message, "out of memory for the Jacobian");
        return TG_ERR_NOMEM;
    }
    tg_status st = TG_OK;
    for (size_t i = 0; i < m && st == TG_OK; i++) {
        for (size_t r = 0; r < m; r++)
            c->v[r] = r == i;
        if ((st = nc_vjp(c)) == TG_OK)
            memcpy(ja + i * n, c->g[k], n * sizeof *ja);
    }
    for (size_t j = 0; j < n && st == TG_OK; j++) {
        memcpy(c->xp, c->x0[k], n * sizeof *c->xp);
        memcpy(c->xm, c->x0[k], n * sizeof *c->xm);
        double x0 = c->x0[k][j];
        c->xp[j] = round_to(fdt, x0 + c->h);
        c->xm[j] = round_to(fdt, x0 - c->h);
        if ((st = nc_forward(c, k, c->xp, c->fp)) != TG_OK ||
            (st = nc_forward(c, k, c->xm, c->fm)) != TG_OK ||
            (st = nc_forward(c, k, c->x0[k], NULL)) != TG_OK)
            break;
        for (size_t i = 0; i < m; i++) {
            double num = (c->fp[i] - c->fm[i]) / (c->xp[j] - c->xm[j]), a = ja[i * n + j];
            double left = (c->f0[i] - c->fm[i]) / (x0 - c->xm[j]);
            double right = (c->fp[i] - c->f0[i]) / (c->xp[j] - x0);
            double tol = c->atol + c->rtol * fabs(num), diff = fabs(a - num);
            bool kink = is_kink(a, left, right, tol);
            nc_judge(c, k, diff, tol, kink, diff, rel_err(a, num));
            double bad = kink ? 0 : badness(a, num, c->atol, c->rtol);
            if (bad > c->jworst) {
                c->jworst = bad;
                c->res->jac_input = k;
                c->res->jac_row = i;
                c->res->jac_col = j;
                c->res->jac_analytic = a;
                c->res->jac_numeric = num;
            }
        }
    }
    tg__free(ja);
    return st;
}

static char *
inputs_text(const tg_node *n)
{
    char buf[4 * (TG__NAME_MAX + 80)];
    size_t used = 0;
    buf[0] = '\0';
    for (int k = 0; k < n->n_in && used < sizeof buf; k++)
        used += (size_t)snprintf(buf + used, sizeof buf - used, "%s%s %s", k ? ", " : "",
                                 tg__name_text(n->in[k]).s, tg__shape_text(n->in[k]).s);
    return tg__strdup(buf);
}

/* Checks one node; fills c->res (verdict, errors) and returns TG_OK unless out of memory. */
static tg_status
check_node(const tg_node *n, const tg_gradcheck_options *o, struct solo *sv, struct solo *sf,
           tg_rng *rng, tg_gradcheck_node *res)
{
    struct node_check c = {.orig = n, .rng = rng, .res = res, .worst = -1, .jworst = -1};
    tg_dtype dt = n->out->dtype;
    bool promote = dt == TG_F64 || is_builtin(n->op) || o->promote_custom;
    tg_dtype fdt = promote ? TG_F64 : TG_F32;
    res->dtype = dt;
    res->fd_dtype = fdt;
    res->worst_input = -1;
    if (o->exact) /* no differences: everything runs in the node's own dtype */
        fdt = res->fd_dtype = dt;
    res->exact = o->exact;
    c.h = res->eps = o->exact ? 0 : fdt == TG_F64 ? o->eps : o->eps_f32;
    c.atol = res->atol = o->exact ? 0 : fdt == TG_F64 ? o->atol : o->atol_f32;
    c.rtol = res->rtol = o->exact ? 0 : fdt == TG_F64 ? o->rtol : o->rtol_f32;

    bool any = false;
    size_t in_total = 0;
    if (n->op == &tg__op_detach) {
        res->verdict = TG_NODE_SKIPPED;
        put(res->message, sizeof res->message,
            "detach: a stop-gradient has no VJP by definition (its output is a constant)");
        return TG_OK;
    }
    for (int k = 0; k < n->n_in; k++) {
        /* where's mask is a constant by contract: its derivative is 0 (or a jump) */
        c.check[k] = n->in[k]->requires_grad && !(n->op == &tg__op_where && k == 0);
        any |= c.check[k];
        in_total += c.check[k] ? n->in[k]->size : 0;
    }
    if (!any) {
        res->verdict = TG_NODE_SKIPPED;
        put(res->message, sizeof res->message, "no input requires a gradient");
        return TG_OK;
    }
    if (o->exact && !n->op->jvp) {
        res->verdict = TG_NODE_ERROR;
        put(res->message, sizeof res->message,
            "op %s has no JVP rule (tg_op.jvp), which the exact check compares the VJP with; "
            "check it with finite differences (exact = false)",
            tg__escaped_text(n->op->name).s);
        return TG_OK;
    }
    if (solo_record(sv, n, dt, res->message, sizeof res->message) != TG_OK ||
        (fdt != dt && solo_record(sf, n, fdt, res->message, sizeof res->message) != TG_OK)) {
        res->verdict = TG_NODE_ERROR;
        return TG_OK;
    }
    c.sv = sv;
    c.sf = fdt != dt ? sf : sv;
    c.out_n = n->out->size;

    size_t max_in = 1;
    for (int k = 0; k < n->n_in; k++)
        max_in = n->in[k]->size > max_in ? n->in[k]->size : max_in;
    size_t on = c.out_n ? c.out_n : 1;
    bool ok = (c.v = tg__malloc(on * sizeof(double))) && (c.fp = tg__malloc(on * sizeof(double))) &&
              (c.fm = tg__malloc(on * sizeof(double))) &&
              (c.f0 = tg__malloc(on * sizeof(double))) &&
              (c.u = tg__malloc(max_in * sizeof(double))) &&
              (c.xp = tg__malloc(max_in * sizeof(double))) &&
              (c.xm = tg__malloc(max_in * sizeof(double)));
    for (int k = 0; k < n->n_in && ok; k++) {
        size_t sz = n->in[k]->size ? n->in[k]->size : 1;
        ok = (c.x0[k] = tg__malloc(sz * sizeof(double))) &&
             (c.g[k] = tg__calloc(sz, sizeof(double)));
        for (size_t i = 0; ok && i < n->in[k]->size; i++)
            c.x0[k][i] = load(c.sf->node->in[k]->data, fdt, i);
    }
    tg_status st = ok ? TG_OK : TG_ERR_NOMEM;
    if (ok) {
        for (size_t i = 0; i < c.out_n; i++)
            c.f0[i] = load(c.sf->node->out->data, fdt, i);
        for (int k = 0; k < n->n_in && st == TG_OK; k++)
            if (c.check[k])
                st = o->exact ? nc_exact(&c, k, o->probes) : nc_adjoint(&c, k, o->probes);
        res->full_jacobian = !o->exact && o->jacobian_max > 0 && c.out_n > 0 && in_total > 0 &&
                             c.out_n <= o->jacobian_max / in_total;
        for (int k = 0; k < n->n_in && st == TG_OK && res->full_jacobian; k++)
            if (c.check[k])
                st = nc_jacobian(&c, k);
    } else {
        put(res->message, sizeof res->message, "out of memory");
    }
    tg__free(c.v), tg__free(c.fp), tg__free(c.fm), tg__free(c.f0);
    tg__free(c.u), tg__free(c.xp), tg__free(c.xm);
    for (int k = 0; k < TG_MAX_INPUTS; k++)
        tg__free(c.x0[k]), tg__free(c.g[k]);
    if (st != TG_OK) {
        res->verdict = TG_NODE_ERROR;
        return st == TG_ERR_NOMEM ? st : TG_OK;
    }
    res->verdict = c.fails ? TG_NODE_FAIL : c.kinks ? TG_NODE_KINK : TG_NODE_PASS;
    res->jvp_failed = res->verdict == TG_NODE_FAIL && c.jvp_worst;
    res->bound_ratio = c.worst > 0 ? c.worst : 0;
    if (res->verdict == TG_NODE_FAIL) {
        int k = res->worst_input;
        size_t used = (size_t)snprintf(
            res->message, sizeof res->message, "%s for input %d (%s %s): error %.3g (relative %.3g)",
            o->exact ? "VJP and JVP disagree (⟨v, J·u⟩ ≠ ⟨Jᵀ·v, u⟩)"
            : c.jvp_worst ? "JVP disagrees with the forward"
                          : "VJP disagrees with the forward",
            k, tg__name_text(n->in[k]).s, tg__shape_text(n->in[k]).s, res->max_abs_err,
            res->max_rel_err);
        if (res->full_jacobian && used < sizeof res->message)
            snprintf(res->message + used, sizeof res->message - used,
                     "; worst Jacobian entry d out[%zu]/d in%d[%zu]: VJP %.6g, differences %.6g",
                     res->jac_row, res->jac_input, res->jac_col, res->jac_analytic, res->jac_numeric);
    } else if (res->verdict == TG_NODE_KINK) {
        put(res->message, sizeof res->message,
            "at a non-differentiable point (one-sided differences disagree): not judged");
    }
    return TG_OK;
}

void
tg_nodecheck_report_free(tg_nodecheck_report *rep)
{
    if (!rep)
        return;
    for (size_t i = 0; rep->nodes && i < rep->n_nodes; i++) {
        tg__free((void *)rep->nodes[i].op);
        tg__free((void *)rep->nodes[i].output);
        tg__free((void *)rep->nodes[i].inputs);
    }
    tg__free(rep->nodes);
    rep->nodes = NULL;
    rep->n_nodes = 0;
}

static tg_status nodes_run(tg_tape *t, const tg_gradcheck_options *opt,
                           tg_nodecheck_report *rep);

tg_status
tg_gradcheck_nodes(const tg_tape *t, const tg_gradcheck_options *opt, tg_nodecheck_report *rep)
{
    if (!rep)
        return TG_ERR_ARG;
    memset(rep, 0, sizeof *rep);
    if (!enter_check("tg_gradcheck_nodes", rep->message, sizeof rep->message))
        return rep->status = TG_ERR_ARG;
    /* The tape is held (reset and free refused) while its nodes are re-run: the caller's
     * tape itself is not changed, its error excepted when a refused call sets it. */
    tg_status s = nodes_run((tg_tape *)t, opt, rep);
    leave_check();
    return s;
}

static tg_status
nodes_run(tg_tape *t, const tg_gradcheck_options *opt, tg_nodecheck_report *rep)
{
    tg_gradcheck_options o = opt ? *opt : tg_gradcheck_defaults();
    rep->status = check_options(&o, rep->message, sizeof rep->message);
    if (rep->status != TG_OK)
        return rep->status;
    if (!t) {
        put(rep->message, sizeof rep->message, "gradcheck nodes: the tape is NULL");
        return rep->status = TG_ERR_ARG;
    }
    if (t->busy_node) {
        put(rep->message, sizeof rep->message,
            "tg_gradcheck_nodes: called from inside %s's %s (node #%zu) on the tape being "
            "checked: run the check after the op's callbacks return",
            t->busy_node->op->name, t->busy_what, t->busy_node->index);
        return rep->status = TG_ERR_ARG;
    }
    if (t->status != TG_OK) {
        put(rep->message, sizeof rep->message,
            "gradcheck nodes: the tape has an error, so its nodes cannot be trusted: %s",
            t->errmsg);
        return rep->status = TG_ERR_ARG;
    }
    tg__tape_hold(t, "tg_gradcheck_nodes is re-running this tape's nodes");
    struct solo sv = {.tape = tg_tape_new()}, sf = {.tape = tg_tape_new()};
    tg_rng *rng = tg_rng_new(o.seed);
    rep->nodes = tg__calloc(t->n_nodes ? t->n_nodes : 1, sizeof *rep->nodes);
    if (!sv.tape || !sf.tape || !rng || !rep->nodes) {
        put(rep->message, sizeof rep->message, "gradcheck nodes: out of memory");
        rep->status = TG_ERR_NOMEM;
        goto done;
    }
    for (size_t i = 0; i < t->n_nodes; i++) {
        const tg_node *n = t->nodes[i];
        tg_gradcheck_node *res = &rep->nodes[rep->n_nodes++];
        res->index = n->index;
        res->op = tg__strdup(n->op->name);
        res->output = tg__strdup(tg__name_text(n->out).s);
        res->inputs = inputs_text(n);
        if (!res->op || !res->output || !res->inputs ||
            check_node(n, &o, &sv, &sf, rng, res) == TG_ERR_NOMEM) {
            put(rep->message, sizeof rep->message, "gradcheck nodes: out of memory");
            rep->status = TG_ERR_NOMEM;
            goto done;
        }
        const char *refused = tg__tape_held_refused(t);
        if (refused) {
            put(rep->message, sizeof rep->message,
                "tg_gradcheck_nodes: node #%zu %s: its callbacks called tg_%s on the tape "
                "being checked while the check was running: refused, and the check stops (it "
                "would have gone on with partial results or freed memory)",
                n->index, n->op->name, refused);
            rep->status = TG_ERR_ARG;
            goto done;
        }
        rep->n_failed += res->verdict == TG_NODE_FAIL;
        rep->n_kinks += res->verdict == TG_NODE_KINK;
        rep->n_skipped += res->verdict == TG_NODE_SKIPPED;
        rep->n_errors += res->verdict == TG_NODE_ERROR;
    }
    rep->pass = rep->n_failed == 0 && rep->n_errors == 0;
    rep->status = rep->n_failed ? TG_ERR_CHECK : rep->n_errors ? TG_ERR_OP : TG_OK;
    {
        const tg_gradcheck_node *first = NULL;
        for (size_t i = 0; i < rep->n_nodes && !first; i++)
            if (rep->nodes[i].verdict == TG_NODE_FAIL || rep->nodes[i].verdict == TG_NODE_ERROR)
                first = &rep->nodes[i];
        if (first)
            put(rep->message, sizeof rep->message,
                "gradcheck nodes: %zu of %zu nodes FAILED, %zu could not run; first: node #%zu "
                "%s -> %s: %s",
                rep->n_failed, rep->n_nodes, rep->n_errors, first->index, first->op,
                first->output, first->message);
        else
            put(rep->message, sizeof rep->message,
                "gradcheck nodes: %zu nodes: %zu pass, %zu at non-differentiable points, %zu "
                "skipped (no input needs a gradient)",
                rep->n_nodes, rep->n_nodes - rep->n_kinks - rep->n_skipped, rep->n_kinks,
                rep->n_skipped);
    }
done:
    tg__tape_release(t);
    tg_rng_free(rng);
    tg_tape_free(sv.tape);
    tg_tape_free(sf.tape);
    return rep->status;
}

static const char *
verdict_name(tg_node_verdict v)
{
    switch (v) {
    case TG_NODE_PASS:
        return "pass";
    case TG_NODE_FAIL:
        return "FAIL";
    case TG_NODE_KINK:
        return "non-differentiable point";
    case TG_NODE_SKIPPED:
        return "skipped";
    case TG_NODE_ERROR:
        return "ERROR";
    }
    return "?";
}

void
tg_nodecheck_report_print(const tg_nodecheck_report *rep, FILE *out, bool verbose)
{
    if (!rep || !out)
        return;
    fprintf(out, "%s\n", rep->message);
    for (size_t i = 0; i < rep->n_nodes; i++) {
        const tg_gradcheck_node *n = &rep->nodes[i];
        bool bad = n->verdict == TG_NODE_FAIL || n->verdict == TG_NODE_ERROR;
        if (!bad && !verbose)
            continue;
        fprintf(out, "  node #%zu %s -> %s  inputs: %s\n", n->index, n->op, n->output, n->inputs);
        if (n->verdict == TG_NODE_SKIPPED) {
            fprintf(out, "    skipped: %s\n", n->message);
            continue;
        }
        if (n->exact) {
            fprintf(out,
                    "    %s: exact check, VJP against JVP in %s (no differences; bound 2·γ_N·S "
                    "from round-off); max error %.3g, relative to S %.3g\n",
                    verdict_name(n->verdict), tg_dtype_name(n->dtype), n->max_abs_err,
                    n->max_rel_err);
            if (n->message[0] && n->verdict != TG_NODE_PASS)
                fprintf(out, "    %s\n", n->message);
            continue;
        }
        fprintf(out,
                "    %s: VJP%s in %s, differences in %s%s (eps %g, atol %g, rtol %g)%s; max error "
                "%.3g, relative %.3g\n",
                verdict_name(n->verdict), n->jvp_failed ? " and JVP" : "", tg_dtype_name(n->dtype),
                tg_dtype_name(n->fd_dtype),
                n->fd_dtype == TG_F32 ? " (custom float32 op: float32 step and tolerances)" : "",
                n->eps, n->atol, n->rtol, n->full_jacobian ? ", full Jacobian" : "",
                n->max_abs_err, n->max_rel_err);
        if (n->message[0] && n->verdict != TG_NODE_PASS)
            fprintf(out, "    %s\n", n->message);
    }
}

/* ---------------------------------------------------------------------------------------
 * Taylor test.
 *
 * How the order is decided without a tolerance: r(h) = |f(x+h·d) − f(x) − h⟨∇f, d⟩| is
 * C·h² + O(h³) for a correct gradient and |⟨∇f − g, d⟩|·h + O(h²) for a wrong one g, so
 * log2(r(h)/r(h/2)) tends to 2 or 1 as h → 0. Large h are not yet asymptotic (higher-order
 * terms, kinks crossed), and small h are drowned by round-off once r nears the rounding error
 * of f, about ε·(|f| + M + Σ|∂f/∂x_i·x_i|): the change in f from perturbing every input by
 * one ulp, plus M, the largest value on the tape, since an op rounds at the scale of its
 * operands (log-sum-exp of O(1) scores rounds at ~ε even when the loss is 1e-6). So an order
 * counts only if both remainders exceed
 * 2^10 times that floor, and the verdict comes from the smallest h resolved (the asymptotic
 * end): the median of the TG_TAYLOR_WINDOW smallest-h orders, robust to the one low and one
 * high order that a crossover between two terms of the expansion produces (r dips where they
 * cancel). A fall to round-off faster than h² (f exactly affine near x, as relu is past a kink
 * crossed at larger h) decides alone when it is the smallest-h order: a wrong gradient cannot
 * do that, its remainder only halves per step. The threshold 1.5 is the midpoint of the two
 * hypotheses, not a tuned tolerance.
 */
/* max |value| over the inputs and node outputs of a recorded tape */
static double
tape_magnitude(const tg_tape *t)
{
    double m = 0;
    for (size_t i = 0; i < t->n_nodes; i++) {
        const tg_node *n = t->nodes[i];
        for (int k = 0; k <= n->n_in; k++) {
            const tg_tensor *x = k < n->n_in ? n->in[k] : n->out;
            for (size_t j = 0; j < x->size; j++)
                m = fmax(m, fabs(load(x->data, x->dtype, j)));
        }
    }
    return m;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static tg_status taylor_run(tg_gradcheck_fn fn, void *ctx, tg_tensor *const *inputs,
                            int n_inputs, const tg_gradcheck_options *opt,
                            tg_taylor_report *rep);

tg_status
tg_gradcheck_taylor(tg_gradcheck_fn fn, void *ctx, tg_tensor *const *inputs, int n_inputs,
                    const tg_gradcheck_options *opt, tg_taylor_report *rep)
{
    if (!rep)
        return TG_ERR_ARG;
    memset(rep, 0, sizeof *rep);
    rep->observed_order = NAN;
    if (!enter_check("tg_gradcheck_taylor", rep->message, sizeof rep->message))
        return rep->status = TG_ERR_ARG;
    tg_status s = taylor_run(fn, ctx, inputs, n_inputs, opt, rep);
    leave_check();
    return s;
}

static tg_status
taylor_run(tg_gradcheck_fn fn, void *ctx, tg_tensor *const *inputs, int n_inputs,
           const tg_gradcheck_options *opt, tg_taylor_report *rep)
{
    tg_gradcheck_options o = opt ? *opt : tg_gradcheck_defaults();
    rep->status = check_options(&o, rep->message, sizeof rep->message);
    if (rep->status != TG_OK)
        return rep->status;
    struct fn_runner r;
    rep->status = runner_init(&r, "tg_gradcheck_taylor", fn, ctx, inputs, n_inputs, o.wrt,
                              rep->message, sizeof rep->message);
    if (rep->status != TG_OK)
        return rep->status;

    tg_rng *rng = tg_rng_new(o.seed);
    double **g = tg__calloc((size_t)n_inputs, sizeof *g), **d = tg__calloc((size_t)n_inputs, sizeof *d);
    double **x0 = tg__calloc((size_t)n_inputs, sizeof *x0);
    bool ok = rng && g && d && x0;
    for (int k = 0; ok && k < n_inputs; k++) {
        size_t n = r.src[k]->size ? r.src[k]->size : 1;
        ok = (d[k] = tg__malloc(n * sizeof(double))) && (x0[k] = tg__malloc(n * sizeof(double)));
        if (ok)
            memcpy(x0[k], r.vals[k], r.src[k]->size * sizeof(double));
    }
    if (!ok) {
        put(rep->message, sizeof rep->message, "gradcheck taylor: out of memory");
        rep->status = TG_ERR_NOMEM;
        goto done;
    }
    double f0;
    rep->status = runner_eval(&r, true, &f0);
    for (int k = 0; k < n_inputs && rep->status == TG_OK; k++)
        if (r.wrt[k] && !(g[k] = runner_grads(&r, k))) {
            put(rep->message, sizeof rep->message, "gradcheck taylor: out of memory");
            rep->status = TG_ERR_NOMEM;
        }
    if (rep->status != TG_OK)
        goto done;
    rep->value = f0;

    /* d: standard normal over the checked inputs. For the round-off floor: the sensitivity
     * Σ|g·x| and the largest magnitude of any value on the tape (an op rounds relative to its
     * operands, e.g. log-sum-exp rounds at the scale of the scores even when f is tiny). */
    double slope = 0, sens = fabs(f0) + tape_magnitude(r.tape);
    for (int k = 0; k < n_inputs; k++)
        for (size_t i = 0; r.wrt[k] && i < r.src[k]->size; i++) {
            d[k][i] = tg_rng_normal(rng);
            slope += g[k][i] * d[k][i];
            sens += fabs(g[k][i] * x0[k][i]);
        }
    rep->slope = slope;
    rep->expected_order = o.taylor_second_order ? 3 : 2;
    double curv = 0; /* ⟨d, H·d⟩: the graph of f0's evaluation is still on r.tape */
    if (o.taylor_second_order) {
        tg_tensor *x[TG_MAX_INPUTS], *dir[TG_MAX_INPUTS], *hd[TG_MAX_INPUTS];
        int m = 0, which[TG_MAX_INPUTS];
        for (int k = 0; k < n_inputs; k++)
            if (r.wrt[k]) {
                const tg_tensor *s = r.src[k];
                x[m] = r.made[k];
                dir[m] = tg_tensor_from(r.tape, TG_F64, s->ndim, s->dims, d[k], "d");
                which[m++] = k;
            }
        if (tg_hvp(r.tape, r.y, m, x, dir, TG_HVP_FORWARD_OVER_REVERSE, hd) != TG_OK) {
            put(rep->message, sizeof rep->message,
                "gradcheck taylor: the Hessian-vector product failed: %s", tg_tape_error(r.tape));
            rep->status = tg_tape_status(r.tape);
            goto done;
        }
        for (int j = 0; j < m; j++)
            for (size_t i = 0; i < r.src[which[j]]->size; i++)
                curv += d[which[j]][i] * tg_tensor_get(hd[j], i);
        rep->curvature = curv;
    }

    double floor_[TG_TAYLOR_STEPS];
    for (int s = 0; s < TG_TAYLOR_STEPS; s++) {
        double h = ldexp(1.0, -(s + 1)), lin = 0, lin_abs = 0, f;
        rep->h[s] = h;
        for (int k = 0; k < n_inputs; k++)
            for (size_t i = 0; r.wrt[k] && i < r.src[k]->size; i++) {
                r.vals[k][i] = x0[k][i] + h * d[k][i];
                double step = r.vals[k][i] - x0[k][i]; /* exactly what was applied */
                lin += g[k][i] * step;
                lin_abs += fabs(g[k][i] * step);
            }
        tg_status st = runner_eval(&r, false, &f);
        for (int k = 0; k < n_inputs; k++)
            memcpy(r.vals[k], x0[k], r.src[k]->size * sizeof(double));
        if (st != TG_OK) {
            rep->status = st;
            goto done;
        }
        rep->remainder[s] = fabs(f - f0 - lin - 0.5 * h * h * curv);
        floor_[s] = 0x1p10 * DBL_EPSILON * (sens + lin_abs + fabs(f));
    }
    double win[TG_TAYLOR_WINDOW];
    int nwin = 0;
    bool any_above = false;
    for (int s = 0; s < TG_TAYLOR_STEPS; s++) {
        any_above |= isfinite(rep->remainder[s]) && rep->remainder[s] > floor_[s];
        rep->order[s] = NAN;
    }
    for (int s = 0; s + 1 < TG_TAYLOR_STEPS; s++) {
        double a = rep->remainder[s], b = rep->remainder[s + 1];
        if (!(isfinite(a) && isfinite(b) && a > floor_[s]))
            continue;
        if (b > floor_[s + 1]) {
            rep->order[s] = log2(a / b);
        } else if (log2(a / floor_[s + 1]) > rep->expected_order + 0.5) {
            /* Fell to round-off faster than h² allows: f is affine along d from here on (a
             * kink crossed at larger h, e.g. relu); a wrong gradient would leave r = |δ|·h,
             * halving per step. The order is at least this. */
            rep->order[s] = log2(a / floor_[s + 1]);
            rep->to_roundoff[s] = true;
        }
    }
    /* The window: the TG_TAYLOR_WINDOW smallest-h counted orders. When the smallest-h one is
     * a fall to round-off, it decides alone: f is affine along d near x and the gradient
     * matched it (orders at larger h saw kinks crossed). */
    bool fell = false;
    for (int s = TG_TAYLOR_STEPS - 2; s >= 0 && nwin < TG_TAYLOR_WINDOW && !fell; s--) {
        if (isnan(rep->order[s]))
            continue;
        fell = nwin == 0 && rep->to_roundoff[s];
        rep->used[s] = true;
        win[nwin++] = rep->order[s];
    }
    if (nwin == 0) {
        rep->pass = true;
        rep->status = TG_OK;
        put(rep->message, sizeof rep->message,
            any_above ? "taylor: no two consecutive remainders above round-off; nothing "
                        "contradicts the gradient"
                      : "taylor: the remainder is at round-off for every h (f is affine along "
                        "d): nothing contradicts the gradient");
        goto done;
    }
    qsort(win, (size_t)nwin, sizeof win[0], cmp_double);
    rep->observed_order =
        nwin % 2 ? win[nwin / 2] : (win[nwin / 2 - 1] + win[nwin / 2]) / 2;
    rep->pass = rep->observed_order >= rep->expected_order - 0.5;
    rep->status = rep->pass ? TG_OK : TG_ERR_CHECK;
    if (rep->expected_order == 2)
        put(rep->message, sizeof rep->message,
            "taylor: observed order %.2f (median of the last %d resolved): %s",
            rep->observed_order, nwin,
            !rep->pass ? "FAIL (the remainder shrinks like h: the gradient is wrong)"
            : fell     ? "PASS (the remainder fell to round-off: f is affine along d near x)"
                       : "PASS (the remainder shrinks like h^2 or faster)");
    else
        put(rep->message, sizeof rep->message,
            "taylor (second order, <d, H d> = %.6g): observed order %.2f (median of the last "
            "%d resolved): %s",
            curv, rep->observed_order, nwin,
            !rep->pass ? "FAIL (the remainder shrinks like h^2: the Hessian-vector product "
                         "or the gradient is wrong)"
            : fell     ? "PASS (the remainder fell to round-off: f is quadratic along d near x)"
                       : "PASS (the remainder shrinks like h^3 or faster)");
done:
    for (int k = 0; k < n_inputs; k++) {
        if (g)
            tg__free(g[k]);
        if (d)
            tg__free(d[k]);
        if (x0)
            tg__free(x0[k]);
    }
    tg__free(g), tg__free(d), tg__free(x0);
    tg_rng_free(rng);
    runner_free(&r);
    return rep->status;
}

void
tg_taylor_report_print(const tg_taylor_report *rep, FILE *out, bool verbose)
{
    if (!rep || !out)
        return;
    fprintf(out, "%s\n", rep->message);
    if (rep->status != TG_OK && rep->status != TG_ERR_CHECK)
        return;
    if (!verbose) { /* the orders that decided, smallest h last */
        fprintf(out, "  orders used:");
        int n = 0;
        for (int s = 0; s < TG_TAYLOR_STEPS; s++)
            if (rep->used[s]) {
                fprintf(out, " %s%.3f (h %.1e)", rep->to_roundoff[s] ? ">=" : "", rep->order[s],
                        rep->h[s]);
                n++;
            }
        fprintf(out, "%s\n", n ? "" : " none");
        return;
    }
    fprintf(out, "  f = %.9g, <grad, d> = %.9g\n  %10s %12s %10s\n", rep->value, rep->slope,
            "h", "remainder", "order");
    for (int s = 0; s < TG_TAYLOR_STEPS; s++) {
        fprintf(out, "  %10.3e %12.4e ", rep->h[s], rep->remainder[s]);
        if (isnan(rep->order[s]))
            fprintf(out, "  %8s\n", "-");
        else
            fprintf(out, "%s%8.3f%s\n", rep->to_roundoff[s] ? ">=" : "  ", rep->order[s],
                    rep->used[s] ? "  *" : "");
    }
}

void
tg_taylor_report_free(tg_taylor_report *rep)
{
    /* The report owns no memory today; this resets it, so that every report of the family is
     * freed the same way and a later field that allocates needs no change in callers. */
    if (rep)
        memset(rep, 0, sizeof *rep);
}
