/**
 * @file
 * tapegrad — tape-based reverse-mode automatic differentiation in C.
 *
 * A forward pass records one node per op on a tape (tg_tape). tg_backward() walks the tape in
 * reverse and calls each node's own vector-Jacobian-product (VJP) rule. Parameters live in a
 * parameter set (tg_params) that outlives tapes; intermediates live in the tape's arena, which
 * tg_tape_reset() rewinds without freeing, so a warm training step allocates nothing.
 *
 * Errors stick to the tape: the first failing call records a message such as
 *
 *     matmul "W2"·"A1": inner dimensions differ: (3x4) · (5x2)
 *
 * and returns the tape's nil tensor; every later op on that tape returns the nil tensor at once.
 * Check tg_tape_error() once per step.
 *
 * Threads: a tape, and everything made on it, belongs to one thread at a time. Separate tapes
 * (each with its own tg_params, optimizer and rng) may be used from separate threads at once;
 * sharing one tape, parameter set, optimizer or rng between threads without a lock is
 * unsupported. Process-wide settings (tg_set_allocator, tg_set_num_threads, tg_set_kernel) are
 * meant to be set before threads start. The library never changes process-global state: not
 * the floating-point environment (rounding, exception masks, FTZ/DAZ), not the locale (number
 * parsing uses the C locale of the calling thread only, restored before returning), not signal
 * handlers or masks; and it never calls abort() or exit().
 *
 * errno: failures are reported by status and message, never only through errno. A call may
 * leave errno changed (as C library calls do), even when it succeeds; messages about files
 * include strerror(errno) of the failing system call.
 *
 * Conventions: tensors are dense, row-major, up to TG_MAX_DIMS dimensions, float32 or float64.
 * Shapes are written (rows x cols). A "scalar" is any tensor of one element; reductions to a
 * scalar give shape (1x1). Strings returned by the library are owned by it.
 */
#ifndef TAPEGRAD_H
#define TAPEGRAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <tapegrad/features.h>
#include <tapegrad/version.h>

/**
 * @def TG_API
 * Marks a function the shared library exports (default visibility with GCC and Clang,
 * dllexport when building the DLL on Windows; empty otherwise).
 */
#if defined(_WIN32) && defined(TG_BUILDING_SHARED)
#define TG_API __declspec(dllexport)
#elif defined(__GNUC__)
#define TG_API __attribute__((visibility("default")))
#else
#define TG_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/** The most dimensions a tensor has. */
#define TG_MAX_DIMS 4

/** @name Objects and status
 * @{ */
typedef struct tg_tape tg_tape;     /**< records one forward pass; owns an arena */
typedef struct tg_tensor tg_tensor; /**< dense row-major tensor, on a tape or in a tg_params */
typedef struct tg_params tg_params; /**< a model's parameters, one contiguous buffer */
typedef struct tg_rng tg_rng;       /**< seeded random number generator (`xoshiro256**`) */
typedef struct tg_sgd tg_sgd;       /**< stochastic gradient descent over a tg_params */

/** Element type of a tensor. */
typedef enum tg_dtype {
    TG_F32 = 0, /**< float32 (`float`) */
    TG_F64 = 1, /**< float64 (`double`) */
} tg_dtype;

/** What a call returns, and what sticks to a tape, parameter set or other object. */
typedef enum tg_status {
    TG_OK = 0,          /**< success */
    TG_ERR_NOMEM,       /**< an allocation failed */
    TG_ERR_SHAPE,       /**< operand shapes are incompatible */
    TG_ERR_DTYPE,       /**< operands mix float32 and float64 */
    TG_ERR_ARG,         /**< NULL, out-of-range or otherwise invalid argument */
    TG_ERR_NOT_SCALAR,  /**< backward() from an output with more than one element */
    TG_ERR_UNSUPPORTED, /**< feature not built in (e.g. Graphviz) */
    TG_ERR_IO,          /**< a file could not be read or written */
    TG_ERR_FORMAT,      /**< a file's contents are malformed */
    TG_ERR_NONFINITE,   /**< a NaN or Inf appeared where the caller asked to be told */
    TG_ERR_CHECK,       /**< a gradient check found a mismatch */
    TG_ERR_OP,          /**< a custom op's forward or VJP reported a failure */
} tg_status;

/** Human-readable name of a status ("out of memory", "shape mismatch", ...). */
TG_API const char *tg_status_string(tg_status s);
/** Bytes per element: 4 for TG_F32, 8 for TG_F64, 0 for anything else. */
TG_API size_t tg_dtype_size(tg_dtype dt);
/** "f32" / "f64" ("unknown dtype" for anything else). */
TG_API const char *tg_dtype_name(tg_dtype dt);
/** @} */

/* --------------------------------------------------------------------------------------- */
/** @name Memory
 * Every allocation the library makes goes through these hooks (default: the C library's),
 * except the JSON parser's (jansson) while a checkpoint header is read or written. Set them
 * before creating any object; they are process-wide.
 * @{ */
/** Allocation hooks: malloc, realloc and free with a context pointer. */
typedef struct tg_allocator {
    void *(*malloc)(size_t size, void *ctx);            /**< as malloc(size) */
    void *(*realloc)(void *ptr, size_t size, void *ctx); /**< as realloc(ptr, size) */
    void (*free)(void *ptr, void *ctx);                 /**< as free(ptr) */
    void *ctx;                                          /**< passed to each hook */
} tg_allocator;
/** Use a's hooks for every later allocation; NULL restores the default allocator. */
TG_API void tg_set_allocator(const tg_allocator *a);
/** @} */

/* --------------------------------------------------------------------------------------- */
/** @name Random numbers
 * An explicit, seeded generator so the same seed gives the same run bit for bit.
 * @{ */
TG_API tg_rng *tg_rng_new(uint64_t seed); /**< A new generator; NULL only when out of memory. */
TG_API void tg_rng_free(tg_rng *r);       /**< Free the generator; NULL is a no-op. */
TG_API uint64_t tg_rng_u64(tg_rng *r);    /**< The next 64 random bits. */
TG_API double tg_rng_uniform(tg_rng *r); /**< Uniform in [0, 1). */
TG_API double tg_rng_normal(tg_rng *r);  /**< Standard normal (Box-Muller). */
/** @} */

/* --------------------------------------------------------------------------------------- */
/** @name Tape
 * Re-entrancy: while a tape records a node or runs backward, the op's own callbacks (shape
 * rule, forward, VJP; tapegrad/op.h) must not record on that tape, run backward on it,
 * reset it or free it. Each of these is refused: nothing happens except that the tape's error
 * is set (TG_ERR_ARG, naming the op, the callback and the node), so the recording call returns
 * the nil tensor, or backward its error, instead of succeeding with partial results. A refused
 * tg_tape_free leaves the tape allocated; free it after the call that was running returns.
 * The same holds for the tapes a gradient check uses (gradcheck.h): while tg_gradcheck or
 * tg_gradcheck_taylor runs, the tape it gives the function and the tapes of its inputs; while
 * tg_gradcheck_nodes runs, the tape it checks. Resetting or freeing one of them is refused
 * (TG_ERR_ARG on that tape) and the check fails, naming the call.
 * @{ */
TG_API tg_tape *tg_tape_new(void);         /**< A new tape; NULL only when out of memory. */
TG_API void tg_tape_reset(tg_tape *t);     /**< Forget nodes, clear the error, keep the memory. */
/** Free the tape and every tensor on it; NULL is a no-op. */
TG_API void tg_tape_free(tg_tape *t);
/** TG_OK, or the status of the tape's first error (TG_ERR_ARG for a NULL tape). */
TG_API tg_status tg_tape_status(const tg_tape *t);
/** The first error's message, or NULL when all is well. */
TG_API const char *tg_tape_error(const tg_tape *t);
/** Number of nodes (ops) recorded since the last reset. */
TG_API size_t tg_tape_node_count(const tg_tape *t);
/** Bytes the tape's arena holds (in use or free), for memory reports. */
TG_API size_t tg_tape_arena_bytes(const tg_tape *t);
/** Cap tg_tape_arena_bytes() at `bytes` (0, the default: no cap). A tensor, node, scratch or
 * gradient that would take the tape past it fails with TG_ERR_NOMEM, naming the op, the bytes
 * asked for and the cap. Parameters (tg_params) live outside the tape and are not counted.
 * Memory the tape already holds is kept; tg_tape_reset() clears the error and reuses it. */
TG_API void tg_tape_set_memory_limit(tg_tape *t, size_t bytes);
/** Opt-in: after every forward node and every VJP, fail with TG_ERR_NONFINITE naming the first
 * node whose output (or gradient) holds a NaN or Inf. Off by default; costs nothing when off. */
TG_API void tg_tape_set_check_finite(tg_tape *t, bool on);
/** Whether backward keeps the gradient of every op output (on, the default: each stays
 * readable through tg_tensor_grad until tg_tape_reset) or drops it as soon as the VJP of the
 * op that made it has used it (off, as PyTorch keeps no gradient of a non-leaf tensor), and
 * reuses its memory for the gradients still to come. Off, a chain of layers holds about two
 * layers' gradients at a time instead of all of them, and tg_tensor_grad is NULL for op
 * outputs after backward; tensors made by tg_tensor_new/from/wrap, parameters and the tensor
 * backward starts from keep theirs. Gradient values are the same either way. The setting
 * survives tg_tape_reset. */
TG_API void tg_tape_set_retain_grads(tg_tape *t, bool retain);
TG_API bool tg_tape_retains_grads(const tg_tape *t); /**< The setting; false for NULL */
/** Training or evaluation mode (PyTorch's module.train() / module.eval()), read by the ops
 * that behave differently at record time: tg_dropout (off in evaluation) and tg_batch_norm
 * (batch statistics and running-average updates in training; the running statistics in
 * evaluation). A new tape is in training mode; the mode survives tg_tape_reset. */
TG_API void tg_tape_set_training(tg_tape *t, bool training);
TG_API bool tg_tape_training(const tg_tape *t); /**< True in training mode; false for NULL */
/** @} */


/* --------------------------------------------------------------------------------------- */
/** @name Tensors
 * Tensors created on a tape live until tg_tape_reset()/tg_tape_free(); the name is
 * copied. Names show in error messages, reports and graph exports; NULL means unnamed.
 * On error these return the tape's nil tensor and set the tape's error.
 *
 * Do not keep a tape tensor across a reset. One made before a reset is caught: an op or
 * backward given it fails with TG_ERR_ARG ("... is stale: it was made before
 * tg_tape_reset"), and the accessors below neither read nor write the memory it had (data,
 * grad, name and node give NULL, get NaN, read/write/fill TG_ERR_ARG). This holds for a
 * handle of any age. Up to 15 resets old it still finds its own header (the tape keeps 16
 * steps' worth of headers, about 2.3 KiB per tensor of a step, and allocates no more once a
 * step has run), so the message names its generation and its shape and dtype still answer;
 * an older one whose header now holds a newer tensor is told apart by the use count its
 * handle carries ("... 16 or more resets ago"), and reads as a 0-d float64. (That count lives
 * in the top 16 bits of the handle on x86-64; on other targets handles are plain addresses and
 * only the 15-reset guarantee holds.) Handles compare equal exactly when they are the same
 * tensor. After tg_tape_free() every tensor of the tape is gone. Parameters (tg_params) are
 * not tape tensors and stay valid.
 * @{ */
/** A zero-filled tensor. dims has ndim entries, each >= 0. */
TG_API tg_tensor *tg_tensor_new(tg_tape *t, tg_dtype dt, int ndim, const int64_t *dims,
                                const char *name);
/** A tensor holding a copy of data (ndim/dims as above, data in row-major order). */
TG_API tg_tensor *tg_tensor_from(tg_tape *t, tg_dtype dt, int ndim, const int64_t *dims,
                                 const void *data, const char *name);
/** A tensor that uses the caller's memory without copying; it must outlive the tape's step. */
TG_API tg_tensor *tg_tensor_wrap(tg_tape *t, tg_dtype dt, int ndim, const int64_t *dims,
                                 void *data, const char *name);
/** Shorthand for a 2-D tg_tensor_from(): a (rows x cols) copy of data. */
TG_API tg_tensor *tg_matrix(tg_tape *t, tg_dtype dt, int64_t rows, int64_t cols,
                            const void *data, const char *name);
/** Ask for d(loss)/d(x) on a tape tensor (inputs need none by default; parameters always do). */
TG_API void tg_tensor_set_requires_grad(tg_tensor *x, bool on);

TG_API tg_dtype tg_tensor_dtype(const tg_tensor *x); /**< The element type. */
TG_API int tg_tensor_ndim(const tg_tensor *x);       /**< The number of dimensions. */
/** The size of dimension axis; 0 when axis is out of range. */
TG_API int64_t tg_tensor_dim(const tg_tensor *x, int axis);
TG_API size_t tg_tensor_size(const tg_tensor *x);      /**< The number of elements. */
TG_API const char *tg_tensor_name(const tg_tensor *x); /**< The name; NULL when unnamed or stale */
/** "(3x4)"-style shape text into buf (always NUL-terminated); returns buf. */
TG_API char *tg_tensor_shape_string(const tg_tensor *x, char *buf, size_t size);
/** Raw element storage (float* or double* by dtype); NULL for the nil tensor or a stale one. */
TG_API void *tg_tensor_data(tg_tensor *x);
/** Gradient storage after tg_backward, same layout as the data; NULL if it has none. */
TG_API void *tg_tensor_grad(tg_tensor *x);
/** x's tangent in the latest tg_jvp pass over its tape (x's dtype and size), or NULL when it
 * is zero: not seeded, no seed reaches it, or no pass has run. A JVP rule (tg_op.jvp) reads
 * its inputs' tangents and writes its output's through this. */
TG_API void *tg_tensor_tangent(const tg_tensor *x);
/** Element i (flat, row-major) of the data, as a double; NaN when out of range. */
TG_API double tg_tensor_get(const tg_tensor *x, size_t i);
/** Element i (flat, row-major) of the gradient, as a double; NaN when out of range (or when
 * there is no gradient). */
TG_API double tg_tensor_grad_get(const tg_tensor *x, size_t i);
/** The value of a one-element tensor (NaN otherwise): the loss. */
TG_API double tg_tensor_item(const tg_tensor *x);
/** Copy the data out into dst, converting to double. n must equal tg_tensor_size(). */
TG_API tg_status tg_tensor_read(const tg_tensor *x, double *dst, size_t n);
/** Copy src in, converting from double. n must equal tg_tensor_size(). */
TG_API tg_status tg_tensor_write(tg_tensor *x, const double *src, size_t n);
/** Set every element to value. */
TG_API tg_status tg_tensor_fill(tg_tensor *x, double value);
/** Uniform in [lo, hi), from a seeded generator. */
TG_API tg_status tg_tensor_fill_uniform(tg_tensor *x, tg_rng *r, double lo, double hi);
/** Normal(mean, std), from a seeded generator. */
TG_API tg_status tg_tensor_fill_normal(tg_tensor *x, tg_rng *r, double mean, double std);
/** @} */

/* --------------------------------------------------------------------------------------- */
/** @name Parameters
 * Named tensors of one dtype that persist across tapes. All values sit in one
 * contiguous buffer and all gradients in another, in the order the parameters were added, so
 * optimizers and all-reduces make one pass. Adding a parameter may move both buffers: take
 * data pointers after the model is built.
 * @{ */
/** An empty parameter set of dtype dt; NULL only when out of memory (or when dt is neither
 * TG_F32 nor TG_F64). */
TG_API tg_params *tg_params_new(tg_dtype dt);
/** Free the set, its parameters and its buffers; NULL is a no-op. */
TG_API void tg_params_free(tg_params *p);
/** A new zero-filled parameter, or NULL with tg_params_error() set (duplicate or bad name,
 * bad dims, out of memory). Names must be unique, non-empty, valid UTF-8.
 * A refused call is atomic: tg_params_add, and every layer helper (tg_dense_init), either
 * succeeds or leaves the set exactly as it was (a layer helper removes the parameters it had
 * already added), and the set stays usable: later adds work and its data is unchanged.
 * The first refusal's status and message stay readable through tg_params_status() and
 * tg_params_error() (so a model can be built and checked once, as a tape is), and an
 * optimizer refuses a set with such an error until tg_params_clear_error() says it was
 * handled. */
TG_API tg_tensor *tg_params_add(tg_params *p, const char *name, int ndim, const int64_t *dims);
/** TG_OK, or the status of the first refusal (see tg_params_add). */
TG_API tg_status tg_params_status(const tg_params *p);
/** The first refusal's message; NULL when all is well. */
TG_API const char *tg_params_error(const tg_params *p);
/** Forget the recorded refusal (status back to TG_OK); the parameters are not touched. NULL is
 * a no-op. */
TG_API void tg_params_clear_error(tg_params *p);
TG_API tg_dtype tg_params_dtype(const tg_params *p);  /**< The dtype of every parameter. */
TG_API size_t tg_params_count(const tg_params *p);    /**< The number of parameters. */
/** Parameter i, in the order of addition; NULL when out of range. */
TG_API tg_tensor *tg_params_get(const tg_params *p, size_t i);
/** The parameter (or buffer) of that name, or NULL when there is none. */
TG_API tg_tensor *tg_params_find(const tg_params *p, const char *name);
/** Total number of scalar values over all parameters. */
TG_API size_t tg_params_size(const tg_params *p);
/** The contiguous value buffer (float* or double* by dtype), in the order of addition. */
TG_API void *tg_params_values(tg_params *p);
/** The contiguous gradient buffer, laid out as the values. */
TG_API void *tg_params_grads(tg_params *p);
/** Zero every gradient: gradients accumulate across backward passes until zeroed. */
TG_API void tg_params_zero_grad(tg_params *p);
/** A new buffer: named state that belongs to the model but is not trained, such as batch
 * norm's running mean and variance (PyTorch's register_buffer). A buffer is zero-filled, has no
 * gradient, lies outside tg_params_size/values/grads (so optimizers and gradient all-reduces
 * never touch it) and is saved and loaded with the parameters by tg_state_dict_add_params.
 * Names are unique across parameters and buffers; tg_params_find finds either. Refusals
 * follow tg_params_add's rules (atomic, recorded in the set). */
TG_API tg_tensor *tg_params_add_buffer(tg_params *p, const char *name, int ndim,
                                       const int64_t *dims);
TG_API size_t tg_params_buffer_count(const tg_params *p); /**< The number of buffers. */
/** Buffer i, in the order of addition; NULL when out of range. */
TG_API tg_tensor *tg_params_buffer(const tg_params *p, size_t i);

/** Initializer of a 2-D weight of shape (out x in): U(±sqrt(6/(in+out))) (fan_in = in,
 * fan_out = out). */
TG_API tg_status tg_init_xavier_uniform(tg_tensor *w, tg_rng *r);
/** Initializer of a 2-D weight of shape (out x in): N(0, sqrt(2/in)) (fan_in = in). */
TG_API tg_status tg_init_he_normal(tg_tensor *w, tg_rng *r);
/** @} */

/* --------------------------------------------------------------------------------------- */
/** @name Ops
 * Each records one node and returns its output on the tape. `a`, `b` and `x` may be
 * tape tensors or parameters; both operands must have the same dtype.
 *
 * Elementwise ops broadcast: shapes are aligned from the last dimension; each pair of
 * dimensions must be equal or one of them 1. Covers the bias (n x 1) over (n x m) and
 * (1 x n) over (m x n).
 *
 * Reductions keep dims: over everything, every axis becomes 1 ((1 x 1) for a matrix);
 * along one axis, that axis becomes 1. tg_sum_axes and friends below take any set of axes.
 * @{ */
/** C = A B                   (m x k)(k x n) -> (m x n) */
TG_API tg_tensor *tg_matmul(tg_tape *t, tg_tensor *a, tg_tensor *b);
/** C = op(A) op(B), op(X) = Xᵀ when the flag is set: the products backward needs, without
 * materializing a transpose. tg_matmul_t(t, x, false, w, true) is X Wᵀ. */
TG_API tg_tensor *tg_matmul_t(tg_tape *t, tg_tensor *a, bool trans_a, tg_tensor *b,
                              bool trans_b);
/** Y = Xᵀ                    (m x n) -> (n x m) */
TG_API tg_tensor *tg_transpose(tg_tape *t, tg_tensor *x);

TG_API tg_tensor *tg_add(tg_tape *t, tg_tensor *a, tg_tensor *b); /**< a + b, broadcasting */
TG_API tg_tensor *tg_sub(tg_tape *t, tg_tensor *a, tg_tensor *b); /**< a - b, broadcasting */
TG_API tg_tensor *tg_mul(tg_tape *t, tg_tensor *a, tg_tensor *b); /**< a ⊙ b, broadcasting */
TG_API tg_tensor *tg_scale(tg_tape *t, tg_tensor *x, double c);   /**< c x */

/** Σ x over every element; every axis becomes 1. */
TG_API tg_tensor *tg_sum(tg_tape *t, tg_tensor *x);
/** Σ x along one axis, which becomes 1. */
TG_API tg_tensor *tg_sum_axis(tg_tape *t, tg_tensor *x, int axis);
/** Mean of every element; every axis becomes 1. */
TG_API tg_tensor *tg_mean(tg_tape *t, tg_tensor *x);
/** Mean along one axis, which becomes 1. */
TG_API tg_tensor *tg_mean_axis(tg_tape *t, tg_tensor *x, int axis);

TG_API tg_tensor *tg_identity(tg_tape *t, tg_tensor *x);                /**< x */
TG_API tg_tensor *tg_sigmoid(tg_tape *t, tg_tensor *x);                 /**< 1 / (1 + e^-x) */
TG_API tg_tensor *tg_tanh(tg_tape *t, tg_tensor *x);                    /**< tanh x */
TG_API tg_tensor *tg_relu(tg_tape *t, tg_tensor *x);                    /**< max(x, 0) */
TG_API tg_tensor *tg_leaky_relu(tg_tape *t, tg_tensor *x, double alpha);/**< x>0 ? x : αx */
TG_API tg_tensor *tg_softplus(tg_tape *t, tg_tensor *x);                /**< log(1 + e^x) */
TG_API tg_tensor *tg_gelu(tg_tape *t, tg_tensor *x);                    /**< x Φ(x), exact erf */

/** The note's J = 1/(2m) Σ (Y - A)² -> (1 x 1), m = the size of batch_axis (1 when examples
 * are columns, as in the note; 0 when they are rows). */
TG_API tg_tensor *tg_mse_half(tg_tape *t, tg_tensor *a, tg_tensor *y, int batch_axis);
/** Mean over all entries, (1/N) Σ (A - Y)² -> (1 x 1). */
TG_API tg_tensor *tg_mse(tg_tape *t, tg_tensor *a, tg_tensor *y);
/** Mean over examples of -log softmax(scores)[label] -> (1 x 1), computed as
 * lse(s) - s[label] (log-sum-exp, stable). class_axis is the axis that indexes
 * classes (1 for (batch x classes), 0 for (classes x batch)); labels has n_labels
 * entries, which must be one per example (the scores' extent on the other axis: an
 * error naming both counts otherwise, so a short array is caught instead of read past
 * its end), each in [0, classes). The labels are copied.
 * A row whose scores are all -inf has no softmax (0/0): its loss is NaN
 * (lse - s[label] = -inf + inf, as in PyTorch), so the mean is NaN, but its
 * gradient is 0 (never NaN), leaving the other rows' gradients usable. */
TG_API tg_tensor *tg_softmax_xent(tg_tape *t, tg_tensor *scores, const int32_t *labels,
                                  size_t n_labels, int class_axis);
/** @} */

/* --------------------------------------------------------------------------------------- */
/** @name Tensor algebra
 * Every op below runs in float32 and float64 on any rank up to TG_MAX_DIMS;
 * its math and VJP are in docs/ops.md (generated from the op table). Axes are counted from 0;
 * a negative axis counts from the end (-1 is the last), as in PyTorch.
 *
 * One-input elementwise ops keep the shape. Values outside a function's domain give what
 * PyTorch gives, not an error: log(x < 0), sqrt(x < 0) and pow(x < 0, non-integer p) are NaN,
 * log(0) is -inf. Two- and three-input elementwise ops use numpy broadcasting at every rank
 * (as tg_add).
 *
 * Reductions over a set of axes (axes NULL or n_axes 0: all of them): keepdims keeps each
 * reduced axis as size 1; without it they are removed, and a reduction to one element has
 * shape (1) (tapegrad has no 0-d tensors). An axis out of range or given twice is an error.
 *
 * Losses take the mean over elements (or examples) -> (1 x 1). In the two-input losses y is
 * the target: same shape as a, and it gets a gradient too. (torch.nn.HuberLoss / SmoothL1Loss
 * for tg_huber and tg_smooth_l1.)
 * @{ */
TG_API tg_tensor *tg_neg(tg_tape *t, tg_tensor *x);                 /**< -x */
TG_API tg_tensor *tg_exp(tg_tape *t, tg_tensor *x);                 /**< e^x */
TG_API tg_tensor *tg_log(tg_tape *t, tg_tensor *x);                 /**< ln x */
TG_API tg_tensor *tg_log1p(tg_tape *t, tg_tensor *x);               /**< ln(1 + x) */
TG_API tg_tensor *tg_sqrt(tg_tape *t, tg_tensor *x);                /**< √x */
TG_API tg_tensor *tg_square(tg_tape *t, tg_tensor *x);              /**< x² */
TG_API tg_tensor *tg_abs(tg_tape *t, tg_tensor *x);                 /**< |x| (gradient 0 at 0) */
TG_API tg_tensor *tg_pow(tg_tape *t, tg_tensor *x, double p);       /**< x^p, p a finite constant */
/** min(max(x, lo), hi); lo = -INFINITY or hi = INFINITY leave that side open. lo > hi gives hi
 * everywhere, as torch.clamp does. The gradient passes where lo <= x <= hi. */
TG_API tg_tensor *tg_clamp(tg_tape *t, tg_tensor *x, double lo, double hi);
TG_API tg_tensor *tg_silu(tg_tape *t, tg_tensor *x);                /**< x σ(x) */
TG_API tg_tensor *tg_elu(tg_tape *t, tg_tensor *x, double alpha);   /**< x>0 ? x : α(e^x - 1) */
/** ½ x (1 + tanh(√(2/π) (x + 0.044715 x³))): PyTorch's gelu(approximate="tanh") */
TG_API tg_tensor *tg_gelu_tanh(tg_tape *t, tg_tensor *x);

TG_API tg_tensor *tg_div(tg_tape *t, tg_tensor *a, tg_tensor *b);     /**< a / b */
/** max(a, b); where a == b the gradient is split evenly (½ each), as PyTorch. */
TG_API tg_tensor *tg_maximum(tg_tape *t, tg_tensor *a, tg_tensor *b);
/** min(a, b); where a == b the gradient is split evenly (½ each), as PyTorch. */
TG_API tg_tensor *tg_minimum(tg_tape *t, tg_tensor *a, tg_tensor *b);
/** mask != 0 ? a : b. The mask is a constant (same dtype; it receives no gradient). */
TG_API tg_tensor *tg_where(tg_tape *t, tg_tensor *mask, tg_tensor *a, tg_tensor *b);

/** Σ x over a set of axes. */
TG_API tg_tensor *tg_sum_axes(tg_tape *t, tg_tensor *x, const int *axes, int n_axes,
                              bool keepdims);
/** Mean over a set of axes. */
TG_API tg_tensor *tg_mean_axes(tg_tape *t, tg_tensor *x, const int *axes, int n_axes,
                               bool keepdims);
/** Maximum over a set of axes. Where several elements tie for the extreme, the gradient is
 * split evenly between them (PyTorch's amax). */
TG_API tg_tensor *tg_max_axes(tg_tape *t, tg_tensor *x, const int *axes, int n_axes,
                              bool keepdims);
/** Minimum over a set of axes. Where several elements tie for the extreme, the gradient is
 * split evenly between them (PyTorch's amin). */
TG_API tg_tensor *tg_min_axes(tg_tape *t, tg_tensor *x, const int *axes, int n_axes,
                              bool keepdims);
/** log Σ e^x, computed as m + log Σ e^(x - m), m the maximum (stable) */
TG_API tg_tensor *tg_logsumexp(tg_tape *t, tg_tensor *x, const int *axes, int n_axes,
                               bool keepdims);
/** Variance over a set of axes: Σ (x - mean)² / (N - correction), N the reduced count
 * (correction 1 is PyTorch's default, unbiased). */
TG_API tg_tensor *tg_var(tg_tape *t, tg_tensor *x, const int *axes, int n_axes, int correction,
                         bool keepdims);

/** Softmax along one axis, stable (the maximum is subtracted first). */
TG_API tg_tensor *tg_softmax(tg_tape *t, tg_tensor *x, int axis);
/** Log-softmax along one axis, stable (the maximum is subtracted first). */
TG_API tg_tensor *tg_log_softmax(tg_tape *t, tg_tensor *x, int axis);

/** The same elements in a new shape; one entry of dims may be -1 (inferred). A view: no copy. */
TG_API tg_tensor *tg_reshape(tg_tape *t, tg_tensor *x, int ndim, const int64_t *dims);
/** Y's axis i is X's axis perm[i] (perm a permutation of 0 … ndim-1), as torch.permute. */
TG_API tg_tensor *tg_permute(tg_tape *t, tg_tensor *x, const int *perm);
/** Broadcast to dims (torch.expand / broadcast_to): aligned from the last axis, each size of x
 * equal or 1; -1 keeps x's size. */
TG_API tg_tensor *tg_expand(tg_tape *t, tg_tensor *x, int ndim, const int64_t *dims);
#define TG_END INT64_MAX /**< a slice's stop meaning "to the end of the axis" */
/** x[start[i] : stop[i] : step[i]] along every axis i (arrays of x's rank; step NULL: all 1).
 * Negative start/stop count from the end; after that 0 <= start <= stop <= size is required
 * (an out-of-range bound is an error, not clamped), and step >= 1. */
TG_API tg_tensor *tg_slice(tg_tape *t, tg_tensor *x, const int64_t *start, const int64_t *stop,
                           const int64_t *step);
/** Join n tensors (1 <= n <= TG_MAX_INPUTS) along an existing axis: every other size equal. */
TG_API tg_tensor *tg_concat(tg_tape *t, tg_tensor *const *xs, int n, int axis);
/** Join n tensors (1 <= n <= TG_MAX_INPUTS) along a new axis: all shapes equal; the result has
 * one more axis. */
TG_API tg_tensor *tg_stack(tg_tape *t, tg_tensor *const *xs, int n, int axis);
/** Constant padding: before[i] and after[i] (>= 0) elements of `value` around axis i. */
TG_API tg_tensor *tg_pad(tg_tape *t, tg_tensor *x, const int64_t *before, const int64_t *after,
                         double value);
/** Y = X taken at index[0 … n) along axis (torch.index_select): Y's axis has size n. Indices
 * may repeat (their gradients add: the VJP scatter-adds); each must be in [0, size). With
 * axis 0 of a (vocabulary x dim) table this is an embedding lookup. The indices are copied. */
TG_API tg_tensor *tg_index_select(tg_tape *t, tg_tensor *x, int axis, const int64_t *index,
                                  size_t n);
/** torch.gather: Y[i][j]… = X[…][index[i][j]…][…] with the index replacing the position along
 * axis; index has Y's shape (ndim, dims; the same rank as x, other sizes <= x's). */
TG_API tg_tensor *tg_gather(tg_tape *t, tg_tensor *x, int axis, const int64_t *index, int ndim,
                            const int64_t *dims);
/** The same values with no gradient path (stop-gradient; a view). */
TG_API tg_tensor *tg_detach(tg_tape *t, tg_tensor *x);

/** Batched matmul: C[…] = op(A[…]) · op(B[…]) over the last two axes, the leading (batch)
 * axes broadcast (numpy rules; a 2-D operand is shared by every batch). op(X) = Xᵀ of the
 * last two axes when the flag is set, read in place. 2-D by 2-D is tg_matmul_t. */
TG_API tg_tensor *tg_bmm(tg_tape *t, tg_tensor *a, bool trans_a, tg_tensor *b, bool trans_b);

/** -mean log_probs[label] over the examples of a 2-D (batch x classes) input
 * (class_axis 1) or (classes x batch) (class_axis 0); with weight (one per class, or NULL)
 * Σ w[y] (-log p[y]) / Σ w[y], as torch.nn.NLLLoss(weight=).
 * n_labels must equal the number of examples (an error otherwise: the count is what lets a
 * short labels array be caught instead of read past its end). */
TG_API tg_tensor *tg_nll_loss(tg_tape *t, tg_tensor *log_probs, const int32_t *labels,
                              size_t n_labels, int class_axis, const double *weight);
/** Mean of max(x, 0) - x y + log(1 + e^-|x|), stable for any |x|. */
TG_API tg_tensor *tg_bce_with_logits(tg_tape *t, tg_tensor *x, tg_tensor *y);
/** Mean |a - y|. */
TG_API tg_tensor *tg_l1(tg_tape *t, tg_tensor *a, tg_tensor *y);
/** Mean of ½d² (|d| < δ) or δ(|d| - ½δ), d = a - y (δ = delta). */
TG_API tg_tensor *tg_huber(tg_tape *t, tg_tensor *a, tg_tensor *y, double delta);
/** Mean of ½d²/β (|d| < β) or |d| - ½β, d = a - y (β = beta). */
TG_API tg_tensor *tg_smooth_l1(tg_tape *t, tg_tensor *a, tg_tensor *y, double beta);
/** tg_softmax_xent with torch.nn.CrossEntropyLoss's weight= (one per class, or NULL) and
 * label_smoothing= (in [0, 1]): loss_i = (1-ε) w[y_i] (-log p[y_i]) + (ε/C) Σ_c w[c] (-log
 * p[c]), mean = Σ_i loss_i / Σ_i w[y_i]. Weights and labels are copied.
 * n_labels must equal the number of examples (an error otherwise: the count is what lets a
 * short labels array be caught instead of read past its end). */
TG_API tg_tensor *tg_cross_entropy(tg_tape *t, tg_tensor *scores, const int32_t *labels,
                                   size_t n_labels, int class_axis, const double *weight,
                                   double label_smoothing);
/** @} */

/* --------------------------------------------------------------------------------------- */
/** @name Convolution and pooling
 * NCHW, PyTorch's layouts and semantics (torch.nn.functional):
 * x (N, C, H, W); a conv2d weight is (O, C/groups, kh, kw), a conv1d weight (O, C/groups, k),
 * a conv_transpose2d weight (C, O/groups, kh, kw); the bias (O) or NULL. Output sizes floor:
 * oh = ⌊(H + 2·pad − dilation·(kh − 1) − 1) / stride⌋ + 1 (pools: dilation 1). Formulas and
 * VJPs: docs/ops.md.
 * @{ */
/** Options of tg_conv2d and tg_conv1d (tg_conv_defaults for the defaults). */
typedef struct tg_conv_options {
    int64_t stride[2];   /**< (height, width), >= 1 */
    int64_t padding[2];  /**< zeros added before and after, (height, width), >= 0 */
    int64_t dilation[2]; /**< spacing of the kernel's taps, >= 1 */
    int64_t groups;      /**< >= 1, divides C and O; groups = C = O is a depthwise convolution */
    bool padding_same;   /**< PyTorch's padding="same" (stride 1 only): the output keeps the
                          * input's size, an odd total padding puts the extra zero after;
                          * padding[] is ignored */
} tg_conv_options;
/** stride 1, padding 0, dilation 1, groups 1, padding_same false */
TG_API tg_conv_options tg_conv_defaults(void);
/** F.conv2d(x, w, b, stride, padding, dilation, groups); opt NULL: tg_conv_defaults(). */
TG_API tg_tensor *tg_conv2d(tg_tape *t, tg_tensor *x, tg_tensor *w, tg_tensor *b,
                            const tg_conv_options *opt);
/** F.conv1d on x (N, C, L) with w (O, C/groups, k): element [0] of each option pair applies. */
TG_API tg_tensor *tg_conv1d(tg_tape *t, tg_tensor *x, tg_tensor *w, tg_tensor *b,
                            const tg_conv_options *opt);
/** Options of tg_conv_transpose2d (tg_conv_transpose_defaults for the defaults). */
typedef struct tg_conv_transpose_options {
    int64_t stride[2];         /**< (height, width), >= 1 */
    int64_t padding[2];        /**< removed from each side of the full output, >= 0 (the
                                * padding of the conv2d this op is the adjoint of) */
    int64_t output_padding[2]; /**< added to the output's end, >= 0 and smaller than the
                                * stride or the dilation of its axis (PyTorch's rule) */
    int64_t dilation[2];       /**< spacing of the kernel's taps, >= 1 */
    int64_t groups;            /**< >= 1, divides C_in; C_out = groups · w's second extent */
} tg_conv_transpose_options;
/** stride 1, padding 0, output_padding 0, dilation 1, groups 1 */
TG_API tg_conv_transpose_options tg_conv_transpose_defaults(void);
/**
 * @brief F.conv_transpose2d(x, w, b, stride, padding, output_padding, groups, dilation);
 *        opt NULL: tg_conv_transpose_defaults().
 *
 * x (N, C_in, H, W), w (C_in, C_out/groups, kh, kw) (PyTorch's layout), b (C_out) or NULL ->
 * (N, C_out, oh, ow), oh = (H − 1)·stride − 2·padding + dilation·(kh − 1) + output_padding
 * + 1 (and so ow), which must be >= 1. The adjoint of tg_conv2d with respect to its input:
 * each x[n, c, i, j] adds x[n, c, i, j] · w[c, o', a, b] to y[n, o, i·stride − padding +
 * a·dilation, j·stride − padding + b·dilation] (where that lies inside y) for each output
 * channel o = g·C_out/groups + o' of c's group g and each tap (a, b).
 */
TG_API tg_tensor *tg_conv_transpose2d(tg_tape *t, tg_tensor *x, tg_tensor *w, tg_tensor *b,
                                      const tg_conv_transpose_options *opt);
/** F.max_pool2d (floor mode): kernel (kh, kw); stride NULL means the kernel; padding NULL
 * means 0, at most half the kernel. Ties: the first maximum of the window in row-major order
 * takes the whole gradient. */
TG_API tg_tensor *tg_max_pool2d(tg_tape *t, tg_tensor *x, const int64_t kernel[2],
                                const int64_t stride[2], const int64_t padding[2]);
/** F.avg_pool2d (count_include_pad=True, floor mode): kernel (kh, kw); stride NULL means the
 * kernel; padding NULL means 0, at most half the kernel. */
TG_API tg_tensor *tg_avg_pool2d(tg_tape *t, tg_tensor *x, const int64_t kernel[2],
                                const int64_t stride[2], const int64_t padding[2]);
/** (N, C, H, W) -> (N, C, 1, 1), the mean of each plane (nn.AdaptiveAvgPool2d(1)). */
TG_API tg_tensor *tg_global_avg_pool2d(tg_tape *t, tg_tensor *x);
/** @} */

/* --------------------------------------------------------------------------------------- */
/** @name Dropout and normalization
 * Both read the tape's mode (tg_tape_set_training).
 * @{ */
/** F.dropout, inverted: in training mode each element is zeroed with probability p and the
 * others scaled by 1/(1 − p); in evaluation mode (tg_tape_set_training) and for p = 0 it
 * returns x itself. p in [0, 1). The mask comes from one draw of rng per call and the
 * element's index, so a seeded run is bit-identical for any thread count. */
TG_API tg_tensor *tg_dropout(tg_tape *t, tg_tensor *x, double p, tg_rng *rng);
/** F.batch_norm over axis 1 of x (N, C, ...): weight γ and bias β (C) or NULL; running_mean
 * and running_var (C) (typically buffers, tg_params_add_buffer) or both NULL. In training mode
 * it normalizes with the batch's mean and biased variance and, when given, updates the
 * running statistics in place during this call: r ← (1 − momentum) r + momentum · batch
 * (the variance unbiased), PyTorch's rule (momentum 0.1, eps 1e-5 are its defaults). In
 * evaluation mode it uses the running statistics (the batch's when none are given). Training
 * with one value per channel is refused. */
TG_API tg_tensor *tg_batch_norm(tg_tape *t, tg_tensor *x, tg_tensor *gamma, tg_tensor *beta,
                                tg_tensor *running_mean, tg_tensor *running_var,
                                double momentum, double eps);
/**
 * @brief F.group_norm: x (N, C, ...) normalized over each sample's groups of C/groups channels
 *        (the same in training and evaluation), then γ_c x̂ + β_c.
 *
 * groups divides C; weight γ and bias β (C) or NULL; eps > 0 (PyTorch's default 1e-5).
 * groups = C is instance norm, groups = 1 normalizes each sample over all its channels.
 */
TG_API tg_tensor *tg_group_norm(tg_tape *t, tg_tensor *x, int64_t groups, tg_tensor *gamma,
                                tg_tensor *beta, double eps);
/**
 * @brief F.layer_norm: each row of x's last n_norm_axes axes (the normalized shape) is
 *        normalized to mean 0 and (biased) variance 1, then γ x̂ + β elementwise.
 *
 * weight γ and bias β have the normalized shape (x's last n_norm_axes sizes) or are NULL;
 * 1 <= n_norm_axes <= rank of x; eps > 0 (PyTorch's default 1e-5). The same in training and
 * evaluation. A row of one value comes out as β (x̂ = 0).
 */
TG_API tg_tensor *tg_layer_norm(tg_tape *t, tg_tensor *x, int n_norm_axes, tg_tensor *weight,
                                tg_tensor *bias, double eps);
/**
 * @brief F.rms_norm (T5, LLaMA): y = γ ⊙ x / √(mean(x²) + ε), the mean over each row of x's
 *        last n_norm_axes axes.
 *
 * weight γ has the normalized shape or is NULL; 1 <= n_norm_axes <= rank of x; eps > 0.
 */
TG_API tg_tensor *tg_rms_norm(tg_tape *t, tg_tensor *x, int n_norm_axes, tg_tensor *weight,
                              double eps);
/** @} */

/* --------------------------------------------------------------------------------------- */
/** @name Attention
 * @{ */
/**
 * @brief softmax(scale · q kᵀ + attn_mask) · v, as one node (PyTorch's
 *        F.scaled_dot_product_attention without dropout).
 *
 * q (B, H, T, d), k (B, H, S, d), v (B, H, S, dv) give (B, H, T, dv); the same without the
 * heads axis, q (B, T, d), k (B, S, d), v (B, S, dv), gives (B, T, dv). T, S, d and dv must be
 * >= 1. attn_mask (or NULL) is added to the logits and broadcasts to (B, H, T, S) (numpy
 * rules, aligned from the last axis, e.g. (T, S) or (B, 1, 1, S)); -inf masks a position out.
 * It is an input like any other: when it needs a gradient it gets the logits' gradient summed
 * over its broadcast axes. is_causal masks the keys s > t (top-left aligned, torch.tril with
 * diagonal 0, as PyTorch's is_causal), on top of attn_mask. scale 0 or NAN means 1/√d
 * (PyTorch's scale=None); any other value must be finite.
 *
 * A row whose every logit is masked (-inf) gives output 0 and gradients 0 (PyTorch gives
 * NaN). The node stores one logsumexp per query row, not the (T x S) probabilities: the VJP
 * recomputes them tile by tile. q, k, v and attn_mask must share a dtype.
 */
TG_API tg_tensor *tg_scaled_dot_product_attention(tg_tape *t, tg_tensor *q, tg_tensor *k,
                                                  tg_tensor *v, tg_tensor *attn_mask,
                                                  bool is_causal, double scale);
/** @} */

/* --------------------------------------------------------------------------------------- */
/** @name Recurrent cells
 * One step of an LSTM or a GRU as one fused node (PyTorch's gate orders: i, f, g, o and r, z,
 * n). The cells take the step's input projection xw = x·W_ihᵀ (B, G·H), not x and W_ih: a
 * sequence's projections are one matmul over all its steps (tg_matmul_t(x, false, W_ih, true)
 * on the (T·B, I) input), which is what tg_lstm_layer_forward does; each cell then runs one
 * GEMM, h·W_hhᵀ, and its gate math. b_ih and b_hh (G·H) are each optional (NULL: none). Every
 * operand has one dtype. Formulas and VJPs: docs/ops.md.
 * @{ */
/**
 * @brief One LSTM step: state (B, 2H) = [h | c] -> [h' | c'].
 *
 * a = xw + b_ih + h·W_hhᵀ + b_hh = [a_i | a_f | a_g | a_o] (B, 4H); i, f, o = σ, g = tanh;
 * c' = f ⊙ c + i ⊙ g, h' = o ⊙ tanh(c'). xw (B, 4H), w_hh (4H, H). The two outputs travel as
 * one state so that the next step reads it directly; h' is its first H columns (tg_slice).
 */
TG_API tg_tensor *tg_lstm_cell(tg_tape *t, tg_tensor *xw, tg_tensor *state, tg_tensor *w_hh,
                               tg_tensor *b_ih, tg_tensor *b_hh);
/**
 * @brief One GRU step: h (B, H) -> h' (B, H).
 *
 * [s_r | s_z | s_n] = h·W_hhᵀ + b_hh; r = σ(x_r + b_ir + s_r), z = σ(x_z + b_iz + s_z),
 * n = tanh(x_n + b_in + r ⊙ s_n), h' = (1 − z) ⊙ n + z ⊙ h, with xw = [x_r | x_z | x_n]
 * (B, 3H) and w_hh (3H, H).
 */
TG_API tg_tensor *tg_gru_cell(tg_tape *t, tg_tensor *xw, tg_tensor *h, tg_tensor *w_hh,
                              tg_tensor *b_ih, tg_tensor *b_hh);
/** @} */

/* --------------------------------------------------------------------------------------- */
/** @name Backward
 * @{ */
/** Reverse pass: d(loss)/d(loss) = 1, then every node's VJP in reverse tape order. loss must
 * have one element. Parameter gradients accumulate (zero them with tg_params_zero_grad);
 * gradients of tape tensors are recomputed from zero on each call. */
TG_API tg_status tg_backward(tg_tape *t, tg_tensor *loss);
/** Same, seeding d(out) with `seed` (same shape as out) for outputs of any shape. The seed is
 * not copied: until the next pass, tg_tensor_grad(out) is the seed's own data. */
TG_API tg_status tg_backward_seeded(tg_tape *t, tg_tensor *out, tg_tensor *seed);
/** @} */

/* --------------------------------------------------------------------------------------- */
/** @name Forward mode
 * @{ */
/**
 * @brief Forward mode over a recorded tape: pushes the tangents ẋ_i of n leaves (inputs or
 * parameters) through every node in tape order, ẏ = Σ_k J_k·ẋ_k, with each op's own JVP rule.
 *
 * tangents[i] has inputs[i]'s dtype and shape; its data is read, not copied, during the pass.
 * Afterwards tg_tensor_tangent(y) of any tape tensor is J·ẋ (NULL where no seed reaches, which
 * means zero), until the next pass or reset; a parameter's tangent reads NULL after the pass.
 * Leaves not seeded have zero tangent. Call it after the forward (backward may run before or
 * after: neither touches the other's buffers). A pass reuses the buffers of the pass before
 * it, so a repeated pass on the same recording, or on the same step recorded again after a
 * reset, allocates nothing. Fails, naming the op and node, at an op without a JVP rule (a
 * custom op with no tg_op.jvp) that a seed reaches.
 */
TG_API tg_status tg_jvp(tg_tape *t, int n, tg_tensor *const *inputs, tg_tensor *const *tangents);
/** @} */

/* --------------------------------------------------------------------------------------- */
/** @name Higher-order derivatives
 * @{ */
/**
 * @brief The differentiable backward (torch.autograd.grad with create_graph=True): records
 * the reverse pass of out as nodes on t and writes to grads[i] the tensor d out / d wrt[i].
 *
 * seed: d out, of out's shape and dtype, or NULL for 1 when out has one element. wrt: 1 to
 * 64 tensors of the tape or parameters; a gradient is zeros where out does not depend on the
 * tensor. The gradients are tape tensors like any other: put them in a loss (a gradient
 * penalty), differentiate them again with tg_backward, tg_grad or tg_jvp, to any order.
 * Parameter gradients are not touched (tg_backward accumulates those). Fails, naming the op
 * and node, at an op without a differentiable VJP (tg_op.vjp_graph); on any failure, also
 * on a tape already in error, grads[i] are the tape's nil tensor (so calls can be chained).
 */
TG_API tg_status tg_grad(tg_tape *t, tg_tensor *out, tg_tensor *seed, int n,
                         tg_tensor *const *wrt, tg_tensor **grads);

/** How tg_hvp differentiates the gradient. */
typedef enum tg_hvp_mode {
    /** forward mode over the recorded gradient: H·v is the tangent of ∇f along v (tg_jvp) */
    TG_HVP_FORWARD_OVER_REVERSE = 0,
    /** a second reverse pass: H·v = ∇⟨∇f, v⟩ (tg_grad of the recorded gradient) */
    TG_HVP_REVERSE_OVER_REVERSE = 1,
} tg_hvp_mode;

/**
 * @brief Hessian-vector product of the scalar f: hv[i] = Σ_j ∂²f/∂wrt[i]∂wrt[j] · v[j].
 *
 * v[j] has wrt[j]'s shape and dtype; wrt are leaves (inputs or parameters). Records the
 * gradient (tg_grad) and differentiates it in the given mode; hv[i] are new tensors of the
 * tape. Both modes give the same values to round-off.
 */
TG_API tg_status tg_hvp(tg_tape *t, tg_tensor *f, int n, tg_tensor *const *wrt,
                        tg_tensor *const *v, tg_hvp_mode mode, tg_tensor **hv);
/** @} */

/* --------------------------------------------------------------------------------------- */
/** @name Layers
 * Parameters plus a composition of plain ops. Dense layer:
 * Z = W·A + b (examples as columns, W (out x in), b (out x 1)) or
 * Z = X·Wᵀ + b (examples as rows, b (1 x out)); output act(Z). Parameters are named
 * "<name>/W" and "<name>/b"; W is initialized Xavier-uniform (He-normal for ReLU-family),
 * b zero.
 * @{ */
/** An activation function, for layers and tg_activate. */
typedef enum tg_activation {
    TG_ACT_IDENTITY = 0, /**< tg_identity */
    TG_ACT_SIGMOID,      /**< tg_sigmoid */
    TG_ACT_TANH,         /**< tg_tanh */
    TG_ACT_RELU,         /**< tg_relu */
    TG_ACT_LEAKY_RELU,   /**< tg_leaky_relu, alpha 0.01 */
    TG_ACT_SOFTPLUS,     /**< tg_softplus */
    TG_ACT_GELU,         /**< tg_gelu */
} tg_activation;

/** Which axis of a batch indexes the examples. */
typedef enum tg_layout {
    TG_EXAMPLES_AS_COLUMNS = 0, /**< the note's convention: A is (features x batch) */
    TG_EXAMPLES_AS_ROWS = 1,    /**< PyTorch's convention: X is (batch x features) */
} tg_layout;

/** A dense layer: its two parameters, activation and layout (filled by tg_dense_init). */
typedef struct tg_dense {
    tg_tensor *weight; /**< (out x in) */
    tg_tensor *bias;   /**< (out x 1) or (1 x out) */
    tg_activation act; /**< applied to Z */
    tg_layout layout;  /**< examples as columns or as rows */
} tg_dense;

/** Adds the layer's parameters to p. rng may be NULL (weights left zero). On failure (e.g. a
 * parameter of either name already exists) nothing is added, *layer is not written, the
 * status is returned and recorded in p (see tg_params_add). */
TG_API tg_status tg_dense_init(tg_dense *layer, tg_params *p, const char *name, int64_t n_in,
                               int64_t n_out, tg_activation act, tg_layout layout, tg_rng *rng);
/** The layer's output act(W·x + b) (examples as columns) or act(x·Wᵀ + b) (as rows): a matmul
 * and one fused tg_bias_act node. */
TG_API tg_tensor *tg_dense_forward(tg_tape *t, const tg_dense *layer, tg_tensor *x);

/** Conv2d layer (nn.Conv2d): weight "<name>/W" (out, in/groups, kh, kw) and, when bias is
 * true, "<name>/b" (out), both U(±1/√fan_in) as PyTorch initializes them (rng NULL: zeros);
 * opt NULL is tg_conv_defaults(). Atomic like tg_dense_init. The forward is tg_conv2d. */
typedef struct tg_conv2d_layer {
    tg_tensor *weight;       /**< (out, in/groups, kh, kw) */
    tg_tensor *bias;         /**< (out), or NULL */
    tg_conv_options options; /**< stride, padding, dilation, groups */
} tg_conv2d_layer;
/** Adds the conv2d layer's parameters to p (see tg_conv2d_layer); on failure nothing is added
 * and the status is recorded in p, as tg_dense_init. */
TG_API tg_status tg_conv2d_layer_init(tg_conv2d_layer *layer, tg_params *p, const char *name,
                                      int64_t in_channels, int64_t out_channels, int64_t kh,
                                      int64_t kw, const tg_conv_options *opt, bool bias,
                                      tg_rng *rng);
/** The layer's output: tg_conv2d with its weight, bias and options. */
TG_API tg_tensor *tg_conv2d_layer_forward(tg_tape *t, const tg_conv2d_layer *layer,
                                          tg_tensor *x);

/** Batch-norm layer (nn.BatchNorm1d/2d over axis 1): weight "<name>/W" = 1 and bias
 * "<name>/b" = 0, and the buffers "<name>/running_mean" = 0, "<name>/running_var" = 1 (see
 * tg_params_add_buffer); momentum 0.1 and eps 1e-5 (change the fields to taste). Atomic like
 * tg_dense_init. The forward is tg_batch_norm in the tape's mode. */
typedef struct tg_batch_norm_layer {
    /** γ (C), trained */
    tg_tensor *weight, *bias;
    /** @var tg_batch_norm_layer::bias
     * β (C), trained */
    /** The running mean (C), a buffer */
    tg_tensor *running_mean, *running_var;
    /** @var tg_batch_norm_layer::running_var
     * The running variance (C), a buffer */
    /** The running statistics' update factor (0.1) */
    double momentum, eps;
    /** @var tg_batch_norm_layer::eps
     * Added to the variance before its square root (1e-5) */
    /** An activation fused into the node (tg_batch_norm_act): TG_ACT_IDENTITY after init;
     * set it to TG_ACT_RELU for the usual conv, batch norm, ReLU block */
    int act;
} tg_batch_norm_layer;
/** Adds the batch-norm layer's parameters and buffers to p (see tg_batch_norm_layer); on
 * failure nothing is added and the status is recorded in p, as tg_dense_init. */
TG_API tg_status tg_batch_norm_layer_init(tg_batch_norm_layer *layer, tg_params *p,
                                          const char *name, int64_t channels);
/** The layer's output: tg_batch_norm_act with its tensors, momentum, eps and act, in the
 * tape's mode. */
TG_API tg_tensor *tg_batch_norm_layer_forward(tg_tape *t, const tg_batch_norm_layer *layer,
                                              tg_tensor *x);
/** Multi-head self-attention layer (nn.MultiheadAttention with batch_first=True, no dropout,
 * no bias_k/bias_v): parameters "<name>/in_proj_weight" (3d x d) Xavier-uniform,
 * "<name>/in_proj_bias" (3d) = 0, "<name>/out_proj/W" (d x d) U(±1/√d) as nn.Linear and
 * "<name>/out_proj/b" (d) = 0, PyTorch's initialization (rng NULL: weights zero). Rows
 * [0, d), [d, 2d), [2d, 3d) of the in-projection give q, k and v. Atomic like tg_dense_init;
 * d not divisible by the number of heads is refused. */
typedef struct tg_multihead_attention {
    tg_tensor *in_proj_weight;  /**< (3d x d): the q, k, v projections stacked */
    tg_tensor *in_proj_bias;    /**< (3d) */
    tg_tensor *out_proj_weight; /**< (d x d) */
    tg_tensor *out_proj_bias;   /**< (d) */
    int64_t embed_dim;          /**< d */
    int64_t num_heads;          /**< H, dividing d */
} tg_multihead_attention;
/** Adds the layer's parameters to p (see tg_multihead_attention); on failure nothing is added
 * and the status is recorded in p, as tg_dense_init. */
TG_API tg_status tg_multihead_attention_init(tg_multihead_attention *layer, tg_params *p,
                                             const char *name, int64_t embed_dim,
                                             int64_t num_heads, tg_rng *rng);
/** Self-attention of x (B, T, d) -> (B, T, d): one in-projection matmul over the B·T rows,
 * the heads split off with tg_slice, tg_reshape and tg_permute, tg_scaled_dot_product_attention
 * with scale 1/√(d/H), is_causal and attn_mask (NULL, or broadcasting to (B, H, T, T), e.g. a
 * (T, T) float mask), the heads merged and the output projection. */
TG_API tg_tensor *tg_multihead_attention_forward(tg_tape *t, const tg_multihead_attention *layer,
                                                 tg_tensor *x, bool is_causal,
                                                 tg_tensor *attn_mask);

/** Layer-norm layer (nn.LayerNorm): over the last n_norm_axes axes of x, whose sizes are the
 * normalized shape; with elementwise_affine, weight "<name>/W" = 1 and bias "<name>/b" = 0 of
 * the normalized shape (the "/W", "/b" names of the other layers; PyTorch calls them weight
 * and bias), else no parameters. eps 1e-5 (change the field to taste). Atomic like
 * tg_dense_init. The forward is tg_layer_norm. */
typedef struct tg_layer_norm_layer {
    tg_tensor *weight; /**< γ (normalized shape), or NULL without elementwise_affine */
    tg_tensor *bias;   /**< β (normalized shape), or NULL without elementwise_affine */
    int n_norm_axes;   /**< the rank of the normalized shape */
    double eps;        /**< added to the variance before its square root (1e-5) */
} tg_layer_norm_layer;
/** Adds the layer-norm layer's parameters to p (see tg_layer_norm_layer): normalized_shape
 * holds n_norm_axes (1 to TG_MAX_DIMS) sizes >= 1. On failure nothing is added and the status
 * is recorded in p, as tg_dense_init. */
TG_API tg_status tg_layer_norm_layer_init(tg_layer_norm_layer *layer, tg_params *p,
                                          const char *name, int n_norm_axes,
                                          const int64_t *normalized_shape,
                                          bool elementwise_affine);
/** The layer's output: tg_layer_norm with its tensors, rank and eps. */
TG_API tg_tensor *tg_layer_norm_layer_forward(tg_tape *t, const tg_layer_norm_layer *layer,
                                              tg_tensor *x);

/** RMS-norm layer (nn.RMSNorm, T5, LLaMA): over the last n_norm_axes axes of x; with
 * elementwise_affine, weight "<name>/W" = 1 of the normalized shape, else none. eps 1e-6 (T5's
 * and LLaMA's; PyTorch's default is the dtype's machine epsilon). Atomic like tg_dense_init.
 * The forward is tg_rms_norm. */
typedef struct tg_rms_norm_layer {
    tg_tensor *weight; /**< γ (normalized shape), or NULL without elementwise_affine */
    int n_norm_axes;   /**< the rank of the normalized shape */
    double eps;        /**< added to mean(x²) before its square root (1e-6) */
} tg_rms_norm_layer;
/** Adds the RMS-norm layer's parameter to p (see tg_rms_norm_layer), as
 * tg_layer_norm_layer_init. */
TG_API tg_status tg_rms_norm_layer_init(tg_rms_norm_layer *layer, tg_params *p,
                                        const char *name, int n_norm_axes,
                                        const int64_t *normalized_shape, bool elementwise_affine);
/** The layer's output: tg_rms_norm with its weight, rank and eps. */
TG_API tg_tensor *tg_rms_norm_layer_forward(tg_tape *t, const tg_rms_norm_layer *layer,
                                            tg_tensor *x);

/** nn.functional.embedding: rows of the table weight (num_embeddings x embedding_dim) taken
 * at index, an array of ndim (0 to TG_MAX_DIMS − 1) dimensions dims (C order); the output is
 * (dims…, embedding_dim). One tg_index_select along axis 0 and a reshape: a row used k times
 * receives the sum of its k gradients. An index outside [0, num_embeddings) is refused with
 * a message naming embedding, the table's shape and the index's position. */
TG_API tg_tensor *tg_embedding(tg_tape *t, tg_tensor *weight, const int64_t *index, int ndim,
                               const int64_t *dims);
/** Embedding layer (nn.Embedding, without padding_idx or max_norm): weight "<name>/W"
 * (num_embeddings x embedding_dim), N(0, 1) as PyTorch initializes it (rng NULL: zeros).
 * Atomic like tg_dense_init. */
typedef struct tg_embedding_layer {
    tg_tensor *weight; /**< (num_embeddings x embedding_dim) */
} tg_embedding_layer;
/** Adds the embedding table to p (see tg_embedding_layer); both sizes >= 1. On failure
 * nothing is added and the status is recorded in p, as tg_dense_init. */
TG_API tg_status tg_embedding_layer_init(tg_embedding_layer *layer, tg_params *p,
                                         const char *name, int64_t num_embeddings,
                                         int64_t embedding_dim, tg_rng *rng);
/** The rows of the layer's table at index (ndim dimensions dims): (dims…, embedding_dim), as
 * tg_embedding. */
TG_API tg_tensor *tg_embedding_layer_forward(tg_tape *t, const tg_embedding_layer *layer,
                                             const int64_t *index, int ndim,
                                             const int64_t *dims);

/** Learned positional embedding (GPT-2's wpe): a table weight "<name>/W" (max_len x dim),
 * N(0, 1) from rng (NULL: zeros); the forward adds its rows 0 … T−1 to x (…, T, dim),
 * broadcast over the leading axes. Atomic like tg_dense_init. */
typedef struct tg_positional_embedding_layer {
    tg_tensor *weight; /**< (max_len x dim) */
} tg_positional_embedding_layer;
/** Adds the positional table to p (see tg_positional_embedding_layer); both sizes >= 1. On
 * failure nothing is added and the status is recorded in p, as tg_dense_init. */
TG_API tg_status tg_positional_embedding_layer_init(tg_positional_embedding_layer *layer,
                                                    tg_params *p, const char *name,
                                                    int64_t max_len, int64_t dim, tg_rng *rng);
/** x + P[0:T] for x (…, T, dim) of rank >= 2: a slice of the table and a broadcasting add.
 * T > max_len or another dim is refused, naming the layer's table and x. */
TG_API tg_tensor *tg_positional_embedding_layer_forward(
    tg_tape *t, const tg_positional_embedding_layer *layer, tg_tensor *x);

/**
 * @brief A pre-norm transformer encoder block: nn.TransformerEncoderLayer(d_model, nhead,
 *        dim_feedforward, dropout=0, activation="gelu", batch_first=True, norm_first=True).
 *
 *     y   = x + MHA(LN1(x))
 *     out = y + W2 · gelu(W1 · LN2(y) + b1) + b2
 *
 * for x (B, T, d_model); gelu is the exact erf form (tg_gelu), the feed-forward runs on the
 * B·T rows. Parameters under "<name>/": "norm1/W", "norm1/b", "norm2/W", "norm2/b" (as
 * tg_layer_norm_layer, eps 1e-5), "self_attn/in_proj_weight", "self_attn/in_proj_bias",
 * "self_attn/out_proj/W", "self_attn/out_proj/b" (as tg_multihead_attention), "linear1/W"
 * (dim_feedforward x d_model), "linear1/b" (1 x dim_feedforward), "linear2/W" (d_model x
 * dim_feedforward), "linear2/b" (1 x d_model) (as tg_dense with TG_EXAMPLES_AS_ROWS):
 * PyTorch's state_dict keys with "/" for "." and "W"/"b" for weight/bias. Initialization is
 * PyTorch's: the norms 1 and 0, the attention as tg_multihead_attention_init, linear1 and
 * linear2 weight and bias U(±1/√fan_in) as nn.Linear (rng NULL: those zero).
 */
typedef struct tg_transformer_block {
    tg_layer_norm_layer norm1;        /**< before the attention */
    tg_multihead_attention self_attn; /**< self-attention, nhead heads */
    tg_layer_norm_layer norm2;        /**< before the feed-forward */
    tg_dense linear1;                 /**< d_model -> dim_feedforward, GELU fused */
    tg_dense linear2;                 /**< dim_feedforward -> d_model, no activation */
    int64_t d_model;                  /**< d, the width of x */
    int64_t nhead;                    /**< heads, dividing d_model */
    int64_t dim_feedforward;          /**< the hidden width of the feed-forward */
} tg_transformer_block;
/** Adds the block's twelve parameters to p (see tg_transformer_block). Atomic: on failure
 * (d_model not divisible by nhead, a size < 1, a name already taken) nothing is added, *block
 * is left as it was and the status is recorded in p, as tg_dense_init. */
TG_API tg_status tg_transformer_block_init(tg_transformer_block *block, tg_params *p,
                                           const char *name, int64_t d_model, int64_t nhead,
                                           int64_t dim_feedforward, tg_rng *rng);
/** The block's output (B, T, d_model) for x (B, T, d_model) of the parameters' dtype, T >= 1:
 * is_causal and attn_mask go to tg_multihead_attention_forward. Another rank, width or dtype
 * is a sticky tape error naming transformer_block and x's shape. */
TG_API tg_tensor *tg_transformer_block_forward(tg_tape *t, const tg_transformer_block *block,
                                               tg_tensor *x, bool is_causal,
                                               tg_tensor *attn_mask);

/** The most stacked layers of a tg_rnn_layer. */
#define TG_RNN_MAX_LAYERS 16
/**
 * @brief A multi-layer, optionally bidirectional LSTM (tg_lstm_layer_init) or GRU
 *        (tg_gru_layer_init): nn.LSTM / nn.GRU.
 *
 * Parameters are named "<name>/" + PyTorch's state_dict keys: "<name>/weight_ih_l0"
 * (G·H, I), "<name>/weight_hh_l0" (G·H, H), "<name>/bias_ih_l0", "<name>/bias_hh_l0" (G·H),
 * then "..._l0_reverse" when bidirectional, then "..._l1" and on; layer l > 0 reads
 * num_directions·H inputs. G is 4 (LSTM) or 3 (GRU). A name of "" gives PyTorch's keys
 * themselves, so nn.LSTM's state_dict loads as is; a module's "rnn.weight_ih_l0" is
 * "rnn/weight_ih_l0" here (tapegrad joins with "/", as the dense layer's "<name>/W"). Every
 * weight and bias is drawn from U(−1/√H, 1/√H), PyTorch's initialization (rng NULL: zeros).
 * The arrays are indexed l·num_directions + d (d = 1: the reverse direction).
 */
typedef struct tg_rnn_layer {
    int gates;           /**< 4 (LSTM) or 3 (GRU) */
    int64_t input_size;  /**< I */
    int64_t hidden_size; /**< H */
    int num_layers;      /**< 1 .. TG_RNN_MAX_LAYERS */
    int num_directions;  /**< 1, or 2 when bidirectional */
    bool batch_first;    /**< false after init: x is (T, B, I); true: (B, T, I) and the
                          * output (B, T, num_directions·H) (h_n keeps its layout) */
    tg_tensor *weight_ih[2 * TG_RNN_MAX_LAYERS]; /**< (G·H, I) for layer 0, else (G·H, D·H) */
    tg_tensor *weight_hh[2 * TG_RNN_MAX_LAYERS]; /**< (G·H, H) */
    tg_tensor *bias_ih[2 * TG_RNN_MAX_LAYERS];   /**< (G·H), or NULL without biases */
    tg_tensor *bias_hh[2 * TG_RNN_MAX_LAYERS];   /**< (G·H), or NULL without biases */
} tg_rnn_layer;
/** An LSTM layer (the gate order of tg_lstm_cell). */
typedef tg_rnn_layer tg_lstm_layer;
/** A GRU layer (the gate order of tg_gru_cell). */
typedef tg_rnn_layer tg_gru_layer;
/** Adds the LSTM's parameters to p (see tg_rnn_layer); on failure nothing is added, *layer is
 * not written and the status is recorded in p, as tg_dense_init. */
TG_API tg_status tg_lstm_layer_init(tg_lstm_layer *layer, tg_params *p, const char *name,
                                    int64_t input_size, int64_t hidden_size, int num_layers,
                                    bool bidirectional, bool bias, tg_rng *rng);
/** Adds the GRU's parameters to p, as tg_lstm_layer_init. */
TG_API tg_status tg_gru_layer_init(tg_gru_layer *layer, tg_params *p, const char *name,
                                   int64_t input_size, int64_t hidden_size, int num_layers,
                                   bool bidirectional, bool bias, tg_rng *rng);
/**
 * @brief nn.LSTM's forward, unrolled on the tape: x (T, B, I) (or (B, T, I) with batch_first),
 *        T >= 1 -> output (T, B, D·H), the last layer's h of every step, both directions side
 *        by side.
 *
 * h0 and c0 (L·D, B, H), or NULL for zeros. When h_n / c_n are not NULL they receive the final
 * states (L·D, B, H), PyTorch's layout. Per layer and direction: one matmul for the input
 * projection of all T steps, then T tg_lstm_cell nodes; the outputs are gathered by tg_stack,
 * tg_slice and tg_concat. A refusal (shapes, dtypes, T = 0) records nothing and writes neither
 * h_n nor c_n.
 */
TG_API tg_tensor *tg_lstm_layer_forward(tg_tape *t, const tg_lstm_layer *layer, tg_tensor *x,
                                        tg_tensor *h0, tg_tensor *c0, tg_tensor **h_n,
                                        tg_tensor **c_n);
/** nn.GRU's forward, as tg_lstm_layer_forward without a cell state. */
TG_API tg_tensor *tg_gru_layer_forward(tg_tape *t, const tg_gru_layer *layer, tg_tensor *x,
                                       tg_tensor *h0, tg_tensor **h_n);
/** Apply an activation by enum. */
TG_API tg_tensor *tg_activate(tg_tape *t, tg_tensor *x, tg_activation act);
/** act(x + b), b (1 x c) or (r x 1) over x (r x c): bias + activation as one node */
TG_API tg_tensor *tg_bias_act(tg_tape *t, tg_tensor *x, tg_tensor *b, tg_activation act);
/** act(tg_batch_norm(x, ...)) as one node: the tape holds one tensor where the two ops would
 * hold two (the normalized values are never stored; the VJP recomputes what it needs), as
 * oneDNN fuses batch norm with ReLU. TG_ACT_IDENTITY is tg_batch_norm itself. */
TG_API tg_tensor *tg_batch_norm_act(tg_tape *t, tg_tensor *x, tg_tensor *gamma,
                                    tg_tensor *beta, tg_tensor *running_mean,
                                    tg_tensor *running_var, double momentum, double eps,
                                    tg_activation act);
/** "identity", "sigmoid", "tanh", "relu", "leaky_relu", "softplus" or "gelu" ("unknown
 * activation" for any other value). */
TG_API const char *tg_activation_name(tg_activation act);
/** @} */

/* --------------------------------------------------------------------------------------- */
/** @name SGD
 * v ← μ v + (dw + λ w);  w ← w − η v   (μ = 0: w ← w − η (dw + λ w)).
 * Nesterov: w ← w − η (dw + λ w + μ v) with the updated v.
 * @{ */
/** Options of tg_sgd_new. */
typedef struct tg_sgd_options {
    double lr;           /**< η, finite and >= 0 */
    double momentum;     /**< μ in [0, 1) */
    double weight_decay; /**< λ >= 0 */
    bool nesterov;       /**< Nesterov momentum (needs μ > 0) */
} tg_sgd_options;

/** An optimizer over p. NULL on bad options or out of memory; the reason goes to *err if err
 * is not NULL. */
TG_API tg_sgd *tg_sgd_new(tg_params *p, const tg_sgd_options *opt, const char **err);
/** Free the optimizer (not the parameters); NULL is a no-op. */
TG_API void tg_sgd_free(tg_sgd *s);
/** One update of every parameter from its gradient, then gradients are zeroed. */
TG_API tg_status tg_sgd_step(tg_sgd *s);
/** Change the learning rate η; TG_ERR_ARG and nothing changes when lr is not finite and >= 0. */
TG_API tg_status tg_sgd_set_lr(tg_sgd *s, double lr);
/** The last failure's message, or NULL when the last call succeeded. */
TG_API const char *tg_sgd_error(const tg_sgd *s);
/** @} */

#ifdef __cplusplus
}
#endif

#endif /* TAPEGRAD_H */
