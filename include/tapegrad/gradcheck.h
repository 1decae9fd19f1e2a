/**
 * @file
 * Gradient checking: is every VJP rule right, and if not, which one is wrong?
 *
 * Three checks, all of which work on built-in and custom ops alike:
 *
 * - tg_gradcheck(): whole graph: the engine's gradient of a scalar function against
 *   central finite differences in float64, element by element, with a
 *   report per input tensor (max abs/rel error, the worst element); or, in fast mode
 *   (tg_gradcheck_options::fast_projections), along a few random directions per tensor.
 * - tg_gradcheck_nodes(): node-local: every node of a recorded tape is re-run on its own and
 *   its VJP compared with its forward through the adjoint (dot-product)
 *   test ⟨v, J·u⟩ = ⟨VJPᵀ(v), u⟩ and, for small nodes, the full
 *   Jacobian. Names the node whose rule is wrong.
 * - tg_gradcheck_taylor(): tolerance-free: the Taylor remainder |f(x+h·d) − f(x) − h⟨∇f, d⟩|
 *   must shrink like h² (observed order ≈ 2); a wrong gradient shows ≈ 1.
 *
 * The function to check is a callback that records the graph on the tape it is given, from
 * the input tensors it is given, and returns a one-element tensor:
 *
 *     static tg_tensor *
 *     loss_fn(tg_tape *t, tg_tensor *const *in, void *ctx)
 *     {
 *         // in[0] = W, in[1] = b, in[2] = X, in[3] = Y, as passed to tg_gradcheck
 *         tg_tensor *a = tg_tanh(t, tg_add(t, tg_matmul(t, in[0], in[2]), in[1]));
 *         return tg_mse_half(t, a, in[3], 1);
 *     }
 *
 * The checker runs it on a private tape, in float64 whatever the dtype of the tensors passed
 * in (a float32 graph is re-run in float64, so that finite differences are accurate). The
 * callback must therefore make any tensor of its own (constants, targets) with
 * tg_tensor_dtype(in[0]), never a fixed dtype; a graph that insists on float32 cannot be
 * checked in float64 and the report says so. It must not keep tensors between calls.
 *
 * The element check (tg_gradcheck without fast mode) calls the function once: each perturbed
 * evaluation writes the one element into that recording and re-runs just the nodes that
 * depend on it (a product reading the input directly is updated by one row or column), which
 * gives the values a fresh recording would, to round-off. So the function must record the
 * same graph whatever its inputs' values: one that branches on them (tg_tensor_get of an
 * input deciding which op to record) keeps the branch taken at the unperturbed point. A
 * dropout keeps its mask; batch-norm running statistics move only when their node re-runs.
 * Fast mode and tg_gradcheck_taylor call the function for every evaluation.
 *
 * Layer helpers (tg_dense_forward and the like) may run inside the callback, on a copy of
 * the layer whose tensors are the callback's inputs, since the checker differentiates and
 * perturbs its own float64 copies of what it was given, not the parameters themselves:
 *
 *     tg_dense l = *layer;                    // ctx points at the model's layer
 *     l.weight = in[0], l.bias = in[1];       // as passed: inputs = {W, b, X}
 *     return tg_sum(t, tg_square(t, tg_dense_forward(t, &l, in[2])));
 *
 * A callback that reads a checked parameter itself (tg_dense_forward(t, layer, x) on the
 * model's layer) would compare a gradient of zero with differences of zero; the check refuses
 * it with TG_ERR_ARG, naming the parameter and the input slot to use. Parameters that are not
 * checked may be read directly (they are constants then) when their dtype is float64.
 *
 * Every check has a report with a _print (short, or everything when verbose) and a _free
 * (also after an error; NULL is a no-op).
 *
 * Re-entrancy. While a check runs, the tapes it uses are held: the tape it gives the function
 * and the tapes of its inputs (tg_gradcheck, tg_gradcheck_taylor), the tape it checks
 * (tg_gradcheck_nodes). A tg_tape_reset or tg_tape_free of one of them, by the function or by
 * a callback of a custom op, is refused (the tape keeps its memory and gets a TG_ERR_ARG
 * error) and the check stops with TG_ERR_ARG, its message naming the check and the call,
 * instead of going on with partial results or freed memory. Checks do not nest: one called
 * from the function of another, or from an op's callback inside it, returns TG_ERR_ARG; so
 * does tg_gradcheck_nodes on a tape whose op is running a callback, and a whole-graph or
 * Taylor check whose input is on such a tape (run checks after the callbacks return).
 */
#ifndef TAPEGRAD_GRADCHECK_H
#define TAPEGRAD_GRADCHECK_H

#include <stdio.h>

#include <tapegrad/op.h>
#include <tapegrad/tapegrad.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Records a scalar function of the inputs on t and returns it (a one-element tensor). */
typedef tg_tensor *(*tg_gradcheck_fn)(tg_tape *t, tg_tensor *const *inputs, void *ctx);

/** Options of the three checks (tg_gradcheck_defaults, or NULL, for the defaults). */
typedef struct tg_gradcheck_options {
    /** Central-difference step in float64, finite and > 0. Default 1e-6. */
    double eps;
    /** An element passes when |analytic − numeric| <= atol + rtol·|numeric| (PyTorch's rule).
     * Finite and >= 0. Defaults 1e-5 and 1e-3. */
    double atol, rtol;
    /** @var tg_gradcheck_options::rtol
     * The relative tolerance of that rule (see atol), finite and >= 0. Default 1e-3. */
    /** Per input (n_inputs flags): differentiate and check with respect to it. NULL: all.
     * Inputs not checked are constants (targets, data). tg_gradcheck and tg_gradcheck_taylor. */
    const bool *wrt;
    /** At most this many elements per tensor, a random subset (seeded) of larger tensors.
     * >= 1; SIZE_MAX (the default) checks every element. Not used in fast mode. */
    size_t max_elements;
    /** Fast mode of tg_gradcheck (PyTorch's gradcheck(fast_mode=True)): 0 (the default)
     * compares every element; N > 0 compares, per checked tensor, N directional derivatives
     * ⟨∇f, u⟩ along seeded random unit directions u (u = z/‖z‖, z standard normal over the
     * tensor's elements) with (f(x + eps·u) − f(x − eps·u)) / 2eps, by the element rule
     * |a − n| <= atol + rtol·|n|. Costs 1 backward and 2·N forward runs per checked tensor
     * instead of 2 per element. An error e in the gradient of a tensor of n elements escapes
     * one projection with probability at most about √(2/π)·(atol·√n + rtol·‖∇f‖) /
     * (‖e‖ − rtol·‖∇f‖), and N projections with about its N-th power: a whole-tensor mistake
     * is caught, an error in a single element only when it is large against the tensor's
     * gradient (docs/gradient-checking.md derives the bound). >= 0. */
    int fast_projections;
    /** Seeds the element subset, the fast-mode directions, the probe vectors and the Taylor
     * direction. */
    uint64_t seed;

    /* Node-local check. */
    int probes;          /**< node-local check: random (u, v) pairs per node input, >= 1.
                          * Default 3 */
    size_t jacobian_max; /**< node-local check: full Jacobian when out × in elements <= this
                          * (0: never). 256 */
    /** Float32 custom nodes are checked in float32 (their forward may not run in float64) with
     * this step and these tolerances. Float32 central differences with h = 2^-8 on O(1) values
     * carry errors of about ε32·|F|/h ≈ 1.5e-5·|F| (round-off) + h²·|F'''|/6 ≈ 2.5e-6·|F'''|
     * (truncation), so the defaults 2^-8, 1e-3, 1e-2 leave two orders of margin; scale them
     * with your values. */
    double eps_f32, atol_f32, rtol_f32;
    /** @var tg_gradcheck_options::atol_f32
     * The absolute tolerance for float32 custom nodes (see eps_f32). Default 1e-3. */
    /** @var tg_gradcheck_options::rtol_f32
     * The relative tolerance for float32 custom nodes (see eps_f32). Default 1e-2. */
    /** Custom ops whose forward and VJP handle both dtypes: promote float32 nodes to float64 like
     * built-ins (more precise). Default false. */
    bool promote_custom;
    /** Node-local check: the exact mode. Each node's VJP is compared with its JVP instead of
     * with finite differences: per checked input k and probe, ⟨v, J_k·u⟩ (tg_jvp) against
     * ⟨J_kᵀ·v, u⟩ (the VJP), which are equal in exact arithmetic, in the node's own dtype. No
     * step, no truncation error: the two sides differ by the round-off of two dot products
     * and of the rules themselves, and the bound is |a − b| <= 2·γ_N·(S_a + S_b) + 8·r,
     * γ_N = N·ε/(1 − N·ε), ε the dtype's unit round-off, N = out + in elements + 64 (the
     * length of the two dot products plus a rule's own sums), S_a, S_b the sums of the
     * absolute terms, and r the round-off of a − b measured: the largest change of
     * (a − b)/σ along σ·u and σ·v, σ = 1 + 2⁻¹⁰ and 1 − 3·2⁻¹¹ (equal in exact arithmetic;
     * this covers a Jacobian that is 0 exactly but computed from large inner terms, e.g. a
     * norm over two elements), plus γ_N·‖v‖·‖u‖ (a Jacobian that is 0 exactly but computed
     * from O(1) coefficients rounded once, e.g. a softmax over one class: its entries are
     * ε-sized, and the check does not judge below that).
     * A float64 node is then judged at about 1e-13 instead of finite differences' 1e-3 rtol.
     * Ops without a JVP rule (custom ops with no tg_op.jvp) get the verdict
     * TG_NODE_ERROR. The JVP rules themselves are judged by central differences in the
     * default mode, so a JVP wrong in the same way as its VJP is caught there. Default false. */
    bool exact;
    /** Taylor test of second order: the remainder also subtracts ½h²·⟨d, H·d⟩, H·d from
     * tg_hvp on the function's graph, so it is O(h³) when the Hessian-vector products are
     * right and O(h²) when they are wrong; the observed order must then be >= 2.5 (half-way
     * between 2 and 3, as pyadjoint's second-order test). Every op of the function needs a
     * differentiable VJP (tg_op.vjp_graph). Default false. */
    bool taylor_second_order;
} tg_gradcheck_options;

/** The defaults above. Passing NULL options to a check means the same. */
TG_API tg_gradcheck_options tg_gradcheck_defaults(void);

/* --------------------------------------------------------------------------------------- */
/** @name Whole-graph check
 * @{ */
/** The whole-graph check's result for one checked input tensor. In fast mode every count and
 * error below is over projections instead of elements: checked is the number of
 * projections, the worst "element" is the worst projection (worst_index its number p,
 * worst_at "·u<p>", worst_analytic ⟨∇f, u_p⟩ from the backward pass, worst_numeric its central
 * difference), and a kink is a projection whose one-sided slopes along u_p disagree. */
typedef struct tg_gradcheck_tensor {
    const char *name;   /**< the input's name, or "input <k>" (owned by the report) */
    char shape[48];     /**< "(3x4)" */
    int input;          /**< position in the inputs */
    size_t size;        /**< elements in the tensor */
    size_t checked;     /**< elements compared (size, or max_elements of them) */
    size_t failures;    /**< elements that failed atol + rtol·|numeric| */
    size_t kinks;       /**< elements at a non-differentiable point (neither passed nor failed) */
    double max_abs_err; /**< max |analytic − numeric| over the compared, differentiable elements */
    /** max |analytic − numeric| / max(|analytic|, |numeric|) (0 when both 0) */
    double max_rel_err;
    /** The worst element: largest |a − n| / (atol + rtol·|n|). Its index, flat, row-major. */
    size_t worst_index;
    char worst_at[48];  /**< the same as "[i,j]" */
    /** The worst element's analytic gradient (the engine's). */
    double worst_analytic, worst_numeric;
    /** @var tg_gradcheck_tensor::worst_numeric
     * The worst element's numeric gradient (central differences). */
    /** The first non-differentiable point: one-sided slopes (f(x) − f(x−eps))/eps, (f(x+eps) −
     * f(x))/eps disagree by more than the tolerance and the analytic value lies between them
     * (a subgradient, e.g. relu at 0). Its index, flat, row-major. */
    size_t kink_index;
    char kink_at[48]; /**< the same as "[i,j]" */
    /** The first non-differentiable point's left slope (f(x) − f(x−eps))/eps. */
    double kink_left, kink_right, kink_analytic;
    /** @var tg_gradcheck_tensor::kink_right
     * The first non-differentiable point's right slope (f(x+eps) − f(x))/eps. */
    /** @var tg_gradcheck_tensor::kink_analytic
     * The analytic gradient at the first non-differentiable point (between the two slopes). */
    bool pass; /**< no compared element failed (kinks excepted) */
} tg_gradcheck_tensor;

/** The whole-graph check's report (tg_gradcheck). */
typedef struct tg_gradcheck_report {
    /** TG_OK: every compared element passed (kinks excepted); TG_ERR_CHECK: a mismatch;
     * anything else: the check could not run, and message says why. */
    tg_status status;
    bool pass;            /**< status is TG_OK */
    char message[512];    /**< a one-line summary, or why the check could not run */
    double value;         /**< f at the point, in float64 */
    double eps, atol, rtol;
    /** @var tg_gradcheck_report::eps
     * The central-difference step used. */
    /** @var tg_gradcheck_report::atol
     * The absolute tolerance used. */
    /** @var tg_gradcheck_report::rtol
     * The relative tolerance used. */
    /** 0: checked element by element; N > 0: a fast-mode check with N projections per
     * tensor (tg_gradcheck_options::fast_projections), whose tensors count projections. */
    int fast_projections;
    size_t n_tensors;     /**< checked inputs */
    tg_gradcheck_tensor *tensors; /**< n_tensors results, one per checked input */
} tg_gradcheck_report;

/** Compare the gradient of fn at `inputs` (their current values; tape tensors or parameters of
 * either dtype; only read) with central differences, element by element or, in fast mode,
 * along random directions. Fills *report (free it with tg_gradcheck_report_free, also after
 * an error) and returns report->status. A fast-mode failure says that a tensor's gradient is
 * wrong, not where: run tg_gradcheck_nodes on the recorded graph to name the node. */
TG_API tg_status tg_gradcheck(tg_gradcheck_fn fn, void *ctx, tg_tensor *const *inputs,
                              int n_inputs, const tg_gradcheck_options *opt,
                              tg_gradcheck_report *report);
/** Prints the verdict (saying when it was a fast-mode check, and with how many projections)
 * and the tensors that failed or met a non-differentiable point; every tensor when verbose. */
TG_API void tg_gradcheck_report_print(const tg_gradcheck_report *report, FILE *out,
                                      bool verbose);
/** Free what the report holds. NULL is a no-op. */
TG_API void tg_gradcheck_report_free(tg_gradcheck_report *report);
/** @} */

/* --------------------------------------------------------------------------------------- */
/** @name Node-local check
 * Node-local check of a recorded tape (after the forward pass; backward need not have run).
 *
 * Each node is re-recorded alone on a private tape from copies of its inputs (the caller's
 * tape, its data and its gradients are never touched) and its VJP compared with its forward:
 * - adjoint test, per input k that requires a gradient and per probe: random v (output
 *   shape) and u (input shape; the first probe uses u = VJP_k(v) itself, so a rule off by a
 *   sign or a factor cannot hide in cancellation): ⟨v, F(x + h·u) − F(x − h·u)⟩ against
 *   ⟨VJP_k(v), Δx⟩, Δx the exact difference of the two perturbed points; they must agree to
 *   atol·2h + rtol·S, S the sum of the absolute terms of the two dot products;
 * - full Jacobian when out × in elements <= jacobian_max: every column by central
 *   differences, every row by the VJP of a one-hot v, compared entry by entry.
 *
 * The same differences also judge the node's JVP when its op has one (tg_op.jvp):
 * ⟨v, F(x + h·u) − F(x − h·u)⟩ against ⟨v, J_k·Δx⟩, same tolerance; jvp_failed tells which
 * rule disagreed. With tg_gradcheck_options.exact, no finite differences at all: the VJP is
 * compared with the JVP (see there).
 *
 * Float64 nodes, and float32 nodes of built-in ops, are differenced in float64 (the float32
 * VJP that actually ran is compared with a float64 forward); float32 custom nodes in float32
 * with eps_f32/atol_f32/rtol_f32, unless promote_custom is set.
 * @{ */
/** The node-local check's verdict on one node. */
typedef enum tg_node_verdict {
    TG_NODE_PASS = 0, /**< the VJP agrees with the forward */
    TG_NODE_FAIL,    /**< the VJP disagrees with the forward */
    TG_NODE_KINK,    /**< at a non-differentiable point: not judged */
    TG_NODE_SKIPPED, /**< no input requires a gradient: backward never runs this VJP */
    TG_NODE_ERROR,   /**< re-running the node failed (message) */
} tg_node_verdict;

/** The node-local check's result for one tape node. */
typedef struct tg_gradcheck_node {
    size_t index;      /**< position on the tape */
    const char *op;    /**< op name (owned by the report) */
    const char *output;/**< the output's name, or `<op#index>` */
    const char *inputs;/**< each input's name and shape, e.g. `"W1" (6x4), <tanh#2> (4x8)` */
    tg_dtype dtype;    /**< the node's dtype (its VJP ran in it) */
    tg_dtype fd_dtype; /**< dtype of the finite differences */
    bool full_jacobian; /**< the full Jacobian was compared too (see jacobian_max) */
    tg_node_verdict verdict; /**< pass, fail, kink, skipped or error */
    int worst_input;   /**< input slot with the largest error (-1: none) */
    double max_abs_err;/**< adjoint test: |⟨v,ΔF⟩ − ⟨VJP(v),Δx⟩| / 2h; Jacobian: per entry */
    double max_rel_err;/**< the same over S / max(|a|, |n|) */
    /** Worst Jacobian entry (full_jacobian): d out[jac_row] / d input[jac_input][jac_col]. The
     * input slot. */
    int jac_input;
    /** The worst Jacobian entry's row (an element of the output). */
    size_t jac_row, jac_col;
    /** @var tg_gradcheck_node::jac_col
     * The worst Jacobian entry's column (an element of input jac_input). */
    /** The worst Jacobian entry from the VJP. */
    double jac_analytic, jac_numeric;
    /** @var tg_gradcheck_node::jac_numeric
     * The worst Jacobian entry from central differences. */
    /** What this node was checked with: the step. */
    double eps, atol, rtol;
    /** @var tg_gradcheck_node::atol
     * What this node was checked with: the absolute tolerance. */
    /** @var tg_gradcheck_node::rtol
     * What this node was checked with: the relative tolerance. */
    char message[320]; /**< what failed, or why the node could not run */
    bool exact;        /**< judged by the exact check (JVP against VJP), not differences */
    double bound_ratio; /**< the largest error over its tolerance (> 1: failed) */
    bool jvp_failed;   /**< the worst disagreement was the JVP's with the differences */
} tg_gradcheck_node;

/** The node-local check's report (tg_gradcheck_nodes). */
typedef struct tg_nodecheck_report {
    /** TG_OK, TG_ERR_CHECK (a node failed), TG_ERR_OP (a node could not be re-run), or why it
     * could not run */
    tg_status status;
    bool pass;         /**< no node failed and every node could be re-run */
    char message[512]; /**< a one-line summary naming the first failing node */
    size_t n_nodes;    /**< nodes checked: every node of the tape */
    /** Nodes with the verdict TG_NODE_FAIL. */
    size_t n_failed, n_kinks, n_skipped, n_errors;
    /** @var tg_nodecheck_report::n_kinks
     * Nodes with the verdict TG_NODE_KINK. */
    /** @var tg_nodecheck_report::n_skipped
     * Nodes with the verdict TG_NODE_SKIPPED. */
    /** @var tg_nodecheck_report::n_errors
     * Nodes with the verdict TG_NODE_ERROR. */
    tg_gradcheck_node *nodes; /**< one per tape node, in tape order */
} tg_nodecheck_report;

/** Check every node of t (see above). Fills *report (free it with tg_nodecheck_report_free)
 * and returns report->status. */
TG_API tg_status tg_gradcheck_nodes(const tg_tape *t, const tg_gradcheck_options *opt,
                                    tg_nodecheck_report *report);
/** Prints the failing nodes (all nodes when verbose). */
TG_API void tg_nodecheck_report_print(const tg_nodecheck_report *report, FILE *out,
                                      bool verbose);
/** Free what the report holds. NULL is a no-op. */
TG_API void tg_nodecheck_report_free(tg_nodecheck_report *report);
/** @} */

/* --------------------------------------------------------------------------------------- */
/** @name Taylor test
 * Taylor test, in float64 along one random direction d (seeded, over the checked inputs):
 *
 *     r(h) = |f(x + h·d) − f(x) − h·⟨∇f, d⟩|,  h = 2^-1 … 2^-TG_TAYLOR_STEPS,
 *     order_k = log2(r(h_k) / r(h_k+1)).
 *
 * A correct gradient leaves r = O(h²), a wrong one r ≈ h·|⟨∇f − g, d⟩| = O(h). Orders count
 * where both remainders are above the round-off floor 2^10·ε·(|f| + M + Σ|∂f/∂x_i·x_i| +
 * h·Σ|∂f/∂x_i·d_i|), M the largest magnitude on the tape; where r falls from above the floor
 * to below it faster than h² could
 * (f affine along d from there on, e.g. past a relu kink crossed at larger h), the order is
 * the lower bound log2(r_k / floor) and to_roundoff[k] is set. The observed order is the
 * median of the TG_TAYLOR_WINDOW smallest-h counted orders, or that bound alone when the
 * smallest-h one is a fall to round-off; it passes when >= 1.5, half-way between the
 * hypotheses. A remainder at round-off for every h (f affine along d) passes with observed
 * order NaN.
 *
 * On networks with kinks (ReLU, max pooling, abs, clamp) single orders are not all 2. Where a
 * step h moves some unit across its kink, the remainder picks up a term of order h (the
 * one-sided slopes differ), so orders at the larger h often read 1.0 to 1.4, and the table of a
 * correct ReLU network can show half of its orders there; only the smallest steps, which cross
 * no kink, measure the gradient, and that is why the verdict is the median of the last
 * TG_TAYLOR_WINDOW resolved orders and not of all of them. A wrong gradient gives orders near 1
 * at the smallest h too. Read the verdict and the orders it used (starred in the verbose
 * table), not the rows above them.
 * @{ */
#define TG_TAYLOR_STEPS 30 /**< step sizes h = 2^-1 … 2^-30 */
#define TG_TAYLOR_WINDOW 4 /**< counted orders whose median is the observed order */

/** The Taylor test's report (tg_gradcheck_taylor). */
typedef struct tg_taylor_report {
    tg_status status; /**< TG_OK, TG_ERR_CHECK (order below 1.5), or why it could not run */
    bool pass;        /**< status is TG_OK */
    char message[512]; /**< a one-line summary, or why the test could not run */
    /** f(x) */
    double value, slope;
    /** @var tg_taylor_report::slope
     * ⟨∇f, d⟩ */
    double h[TG_TAYLOR_STEPS];         /**< the steps, 2^-1 … 2^-TG_TAYLOR_STEPS */
    double remainder[TG_TAYLOR_STEPS]; /**< r(h[k]) */
    double order[TG_TAYLOR_STEPS]; /**< order[k] from h[k] to h[k+1]; NaN when unresolved */
    bool to_roundoff[TG_TAYLOR_STEPS]; /**< order[k] is a lower bound: r fell to round-off */
    bool used[TG_TAYLOR_STEPS];    /**< in the window that decided */
    double observed_order; /**< the median of the window (NaN when no order was resolved) */
    /** 2, or 3 with tg_gradcheck_options.taylor_second_order: a correct derivative gives
     * this order; the test passes at >= expected_order − 0.5 */
    int expected_order;
    double curvature; /**< ⟨d, H·d⟩ (second order only; else 0) */
} tg_taylor_report;

/** Run the Taylor test on fn at `inputs` (as tg_gradcheck). Fills *report and returns
 * report->status. */
TG_API tg_status tg_gradcheck_taylor(tg_gradcheck_fn fn, void *ctx, tg_tensor *const *inputs,
                                     int n_inputs, const tg_gradcheck_options *opt,
                                     tg_taylor_report *report);
/** Prints the verdict and the orders that decided it; the whole table (h, remainder, order
 * for every step, the deciding ones starred) when verbose. */
TG_API void tg_taylor_report_print(const tg_taylor_report *report, FILE *out, bool verbose);
/** Free what the report holds. NULL is a no-op. */
TG_API void tg_taylor_report_free(tg_taylor_report *report);
/** @} */

#ifdef __cplusplus
}
#endif

#endif /* TAPEGRAD_GRADCHECK_H */
