/*
 * User-defined ops: the same tg_op struct as the built-ins, recorded by the same tg__record,
 * so backward, the gradient checkers and graph export treat them alike.
 */
#include <stdio.h>

#include "ops.h"

tg_tensor *
tg_custom(tg_tape *t, const tg_op *op, tg_tensor *const *inputs, int n_inputs, void *ctx)
{
    if (!t)
        return NULL;
    if (t->status != TG_OK)
        return &t->nil;
    if (!op || !op->name || !op->forward || !op->vjp)
        return tg__fail(t, TG_ERR_ARG, "custom op%s%s: needs a name, a forward and a VJP",
                        op && op->name ? " " : "",
                        op && op->name ? tg__escaped_text(op->name).s : "");
    if (op->n_inputs == TG_VARIADIC ? n_inputs < 1 || n_inputs > TG_MAX_INPUTS
                                    : op->n_inputs < 1 || op->n_inputs > TG_MAX_INPUTS ||
                                          n_inputs != op->n_inputs)
        return tg__fail(t, TG_ERR_ARG,
                        "%s: called with %d inputs; the op declares %d (must be 1..%d, or "
                        "TG_VARIADIC for 1..%d given at the call)",
                        op->name, n_inputs, op->n_inputs, TG_MAX_INPUTS, TG_MAX_INPUTS);
    if (!inputs)
        return tg__fail(t, TG_ERR_ARG, "%s: inputs is NULL", op->name);
    /* A built-in op's attributes (axes, bounds, indices) are set and checked by its own
     * function; recorded here they would be zero, which several ops cannot run with. */
    for (size_t i = 0; i < TG_OP_COUNT; i++)
        if (tg__builtin_ops[i] == op)
            return tg__fail(t, TG_ERR_ARG, "custom op %s: a built-in op; call tg_%s instead",
                            op->name, op->name);
    return tg__record_ex(t, op, inputs, n_inputs, NULL, ctx, true);
}

const tg_op *
tg_node_op(const tg_node *n)
{
    return n ? n->op : NULL;
}

int
tg_node_input_count(const tg_node *n)
{
    return n ? n->n_in : 0;
}

tg_tensor *
tg_node_input(const tg_node *n, int i)
{
    return n && i >= 0 && i < n->n_in ? tg__handle(n->in[i]) : NULL;
}

tg_tensor *
tg_node_output(const tg_node *n)
{
    return n ? tg__handle(n->out) : NULL;
}

tg_tape *
tg_node_tape(const tg_node *n)
{
    return n ? n->tape : NULL;
}

void *
tg_node_ctx(const tg_node *n)
{
    return n ? n->ctx : NULL;
}

void *
tg_node_scratch(const tg_node *n)
{
    return n ? n->scratch : NULL;
}

size_t
tg_node_index(const tg_node *n)
{
    return n ? n->index : 0;
}

tg_status
tg_node_fail(tg_node *n, tg_status s, const char *fmt, ...)
{
    if (!n)
        return s;
    if (s == TG_OK)
        s = TG_ERR_OP;
    char msg[TG__ERRMSG_SIZE];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt ? fmt : "failed", ap);
    va_end(ap);
    tg__fail(n->tape, s, "%s (node #%zu): %s", n->op->name, n->index, msg);
    return s;
}
