/**
 * @file
 * Defining ops. Built-in ops and user (custom) ops are the same struct: a name, an arity, a
 * shape rule, a forward and a VJP. Everything that works on built-ins (backward, the gradient
 * checkers, graph export) works on custom ops.
 *
 *     static tg_status cube_shape(tg_node *n, int *ndim, int64_t *dims);  // out shape = in shape
 *     static tg_status cube_forward(tg_node *n);  // y = x³
 *     static tg_status cube_vjp(tg_node *n);      // dx += dy ⊙ 3x²
 *     static const tg_op cube = { "cube", 1, cube_shape, cube_forward, cube_vjp, NULL };
 *     tg_tensor *y = tg_custom(tape, &cube, &x, 1, NULL);
 *
 * A forward-mode rule is optional: add `.jvp = cube_jvp` (ẏ = 3x² ⊙ ẋ) to use the op under
 * tg_jvp and the exact check (tg_gradcheck_options.exact).
 *
 * Contract: forward writes every element of the output (its dtype is the inputs' dtype, its
 * shape what `shape` said). vjp *adds* into the gradient of each input whose gradient pointer
 * is not NULL (tg_tensor_grad()); the engine allocates and zeroes those buffers, so a VJP never
 * chooses a size. Both may be called more than once for the same node (the gradient checkers
 * re-run them on perturbed inputs), so they must not keep state between calls except in the
 * node's scratch. Return TG_OK, or tg_node_fail(...) to stop the tape with a message.
 * Callbacks must not record ops on, run backward on, reset or free the tape they run on: each
 * is refused with an error naming the op (see tg_tape_free in tapegrad.h). They may use
 * other tapes.
 */
#ifndef TAPEGRAD_OP_H
#define TAPEGRAD_OP_H

#include <tapegrad/tapegrad.h>

#ifdef __cplusplus
extern "C" {
#endif

/** The most inputs one node takes (concat and stack of n tensors). A node keeps up to four
 * inputs in place and a longer list on the tape's arena. */
#define TG_MAX_INPUTS 64
/** tg_op.n_inputs for an op that takes any count from 1 to TG_MAX_INPUTS (given at record time) */
#define TG_VARIADIC 0

/** One recorded op on a tape: its op, inputs, output, context and scratch. */
typedef struct tg_node tg_node;

/** An op: what a node runs. Built-in ops and custom ops alike. */
typedef struct tg_op {
    const char *name; /**< shown in errors, reports and graph exports */
    int n_inputs;     /**< 1 .. TG_MAX_INPUTS, or TG_VARIADIC */
    /** Check the inputs (shapes, attributes) and write the output's shape. NULL: same shape as
     * input 0. */
    tg_status (*shape)(tg_node *n, int *ndim, int64_t dims[TG_MAX_DIMS]);
    /** Compute the output from the inputs: write every element of tg_node_output(n). */
    tg_status (*forward)(tg_node *n);
    /** Add the VJP into the gradient of each input whose gradient is not NULL. */
    tg_status (*vjp)(tg_node *n);
    /** Bytes of per-node scratch (kept between forward and vjp); NULL for none. */
    size_t (*scratch_size)(const tg_node *n);
    const char *math;     /**< one-line documentation of the forward, e.g. "y = e^x", printed
                           * by `tg-gradcheck --list --markdown` (docs/ops.md); optional for
                           * custom ops */
    const char *vjp_math; /**< the VJP of every input, e.g. "dx += dy ⊙ y" (optional) */
    const char *shapes;   /**< the shape rule (optional) */
    /** Forward mode (tg_jvp): the output's tangent ẏ = Σ_k J_k·ẋ_k from the tangents ẋ_k of
     * the inputs whose tangent is not NULL (tg_tensor_tangent(); NULL reads as zero). The
     * output's tangent is zero-filled before the call, so a rule may add each input's term
     * into it. NULL: the op has no forward mode, and tg_jvp through it fails naming the op.
     * Same rules as vjp: no state kept except the node's scratch, which it may read (what
     * the forward saved) but must not change. */
    tg_status (*jvp)(tg_node *n);
    const char *jvp_math; /**< the JVP, e.g. "ẏ = y ⊙ ẋ" (optional) */
    /** Differentiable backward (tg_grad): the VJP of input k recorded as ops on the node's
     * tape, from dy (a tensor of the output's shape) and the node's inputs and output, so
     * that it can be differentiated again; returns dx_k (input k's shape), NULL for no
     * gradient, or the tape's nil tensor after a failed recording. Unlike the other
     * callbacks it records (the tape is not busy while it runs). NULL: tg_grad through the
     * op fails naming it (tg_backward, tg_jvp and the checks do not need it). */
    tg_tensor *(*vjp_graph)(tg_node *n, int k, tg_tensor *dy);
} tg_op;

/** Record a node running `op` on inputs; ctx is handed to the op through tg_node_ctx(). Built-in
 * ops are refused (their own tg_<name> functions set their attributes). */
TG_API tg_tensor *tg_custom(tg_tape *t, const tg_op *op, tg_tensor *const *inputs, int n_inputs,
                            void *ctx);

TG_API const tg_op *tg_node_op(const tg_node *n);   /**< The op the node runs. */
TG_API int tg_node_input_count(const tg_node *n);   /**< The number of inputs. */
TG_API tg_tensor *tg_node_input(const tg_node *n, int i); /**< Input i; NULL when out of range */
TG_API tg_tensor *tg_node_output(const tg_node *n); /**< The node's output tensor. */
TG_API void *tg_node_ctx(const tg_node *n);         /**< The ctx given to tg_custom. */
/** The tape the node is on (what a vjp_graph records on). */
TG_API tg_tape *tg_node_tape(const tg_node *n);
/** The node's scratch (tg_op.scratch_size bytes, kept between forward and vjp). */
TG_API void *tg_node_scratch(const tg_node *n);
TG_API size_t tg_node_index(const tg_node *n); /**< The node's position on the tape. */
/** Record an error on the node's tape, prefixed with the op's name and the node's index;
 * returns s (TG_ERR_OP when s is TG_OK). */
TG_API tg_status tg_node_fail(tg_node *n, tg_status s, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/** The number of built-in ops, which come in a fixed order (for tools that sweep every op). */
TG_API size_t tg_builtin_op_count(void);
/** Built-in op i; NULL when out of range. */
TG_API const tg_op *tg_builtin_op(size_t i);
/** The built-in op of that name; NULL when unknown. */
TG_API const tg_op *tg_builtin_op_find(const char *name);

/** Walking a recorded tape (for tools: checkers, exporters): node i, NULL when out of range. */
TG_API tg_node *tg_tape_node(const tg_tape *t, size_t i);
/** The node that produced x, or NULL for inputs, constants, parameters and stale handles. */
TG_API tg_node *tg_tensor_node(const tg_tensor *x);
TG_API bool tg_tensor_is_param(const tg_tensor *x); /**< True for a parameter (tg_params). */

/** True when x needs a gradient: a parameter, a tensor given tg_tensor_set_requires_grad, or
 * the output of an op with such an input. */
TG_API bool tg_tensor_requires_grad(const tg_tensor *x);

#ifdef __cplusplus
}
#endif

#endif /* TAPEGRAD_OP_H */
