/*
 * Internal structures shared by the library's files. Never installed.
 *
 * Naming: exported API is tg_<noun>_<verb>; internal helpers use a double underscore
 * (tg__fail, tg__arena_alloc) so the exported-symbols test can require ^tg_[a-z].
 */
#ifndef TG_INTERNAL_H
#define TG_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <tapegrad/op.h>
#include <tapegrad/tapegrad.h>

#include "arena.h"

#define TG__ERRMSG_SIZE 512
#define TG__NAME_MAX 256 /* bytes of a tensor name, without the NUL */

/* ---- memory (every allocation goes through the hook; see tg_set_allocator) ---- */
void *tg__malloc(size_t size);
void *tg__calloc(size_t n, size_t size);
void *tg__realloc(void *ptr, size_t size);
void tg__free(void *ptr);
char *tg__strdup(const char *s);

/* ---- tensors ---- */
enum tg__kind {
    TG__KIND_NIL = 0, /* the tape's nil tensor, returned by failing calls */
    TG__KIND_INPUT,   /* made on a tape by tg_tensor_new/from/wrap */
    TG__KIND_PARAM,   /* lives in a tg_params */
    TG__KIND_OP,      /* output of a node */
    TG__KIND_STALE,   /* tg__stale: what a handle resolves to once its slot holds a newer tensor */
};

struct tg_tensor {
    tg_dtype dtype;
    int ndim;
    int64_t dims[TG_MAX_DIMS];
    size_t size; /* product of dims */
    void *data;
    void *grad; /* NULL until backward allocates it (tape tensors) or always (parameters) */
    const char *name;
    enum tg__kind kind;
    bool requires_grad;
    uint64_t grad_pass;  /* backward: the pass that last prepared grad (each prepared once) */
    uint64_t live_pass;  /* backward: the latest pass in which a gradient reached this tensor */
    /* backward: grad is not zeroed yet. The tape zeroes it before the first VJP that adds
     * into it, unless that VJP's op overwrites a fresh gradient itself (tg__grad_take_fresh) */
    bool grad_fresh;
    /* backward_seeded: grad points at the seed's data (read, never written, by the VJPs) and
     * grad_own keeps the tensor's own buffer, restored when a later pass prepares it */
    bool grad_borrowed;
    void *grad_own;
    /* tg_jvp: the tangent in the latest pass (NULL: zero): a seed's data, borrowed, or
     * tangent_buf, the tensor's own buffer on the arena, allocated once per tape generation
     * (op outputs only) */
    void *tangent;
    void *tangent_buf;
    /* tg_grad: the gradient recorded as a tensor of the tape, valid when grad_sym_pass is
     * the tape's current tg_grad pass */
    struct tg_tensor *grad_sym;
    uint64_t grad_sym_pass;
    tg_tape *tape;       /* owning tape (NULL for parameters) */
    uint64_t gen;        /* the owning tape's generation when made (stale-handle check) */
    tg_params *params;   /* owning parameter set (parameters only) */
    struct tg_node *node; /* producer (ops only) */
    size_t id;           /* tape order of creation, or index in the parameter set */
    /* Tape tensors: how many tensors this header slot has held, this one included (1 to
     * TG__SLOT_USES_MAX), kept when the slot is reused; the handle carries it (tg__handle).
     * 0 for parameters and nil tensors, whose handles are their plain addresses. */
    uint16_t uses;
};

/*
 * Handles. A tape tensor's handle is its header's address with the header slot's use count
 * in the top 16 bits, where x86-64 user-space addresses hold zeros (bit 47 and up). Every entry
 * point turns a handle back into the header with tg__tensor before reading it, and that
 * compares the handle's count with the slot's: once the slot holds a newer tensor (a later
 * step's), the counts differ and the handle resolves to tg__stale, which every check rejects.
 * So a handle of any age is caught, for the cost of a shift and a compare; a handle up to
 * TG__HEADER_GENS - 1 resets old also still finds its own header (the ring in tape.c), so its
 * message can name its generation. A slot that has held TG__SLOT_USES_MAX tensors is retired
 * (never given out again) rather than let its count wrap. Elsewhere (AArch64 heaps may tag
 * the top byte themselves; 32-bit builds have no spare bits) handles are plain addresses and
 * the ring's guarantee is what is left.
 */
#define TG__SLOT_USES_MAX UINT16_MAX
#if defined(__x86_64__)
#define TG__HANDLE_SHIFT 48
#endif
extern tg_tensor tg__stale;

/* The handle to give the caller for x (NULL and the nil tensor pass through). */
static inline tg_tensor *
tg__handle(tg_tensor *x)
{
#ifdef TG__HANDLE_SHIFT
    if (x && x->uses && !((uintptr_t)x >> TG__HANDLE_SHIFT))
        return (tg_tensor *)((uintptr_t)x | (uintptr_t)x->uses << TG__HANDLE_SHIFT);
#endif
    return x;
}

/* The header behind a caller's handle h: h's own tensor, or &tg__stale when h's slot has
 * since been given to a newer tensor. Also takes a plain address (our own pointers, already
 * resolved), so resolving twice is harmless. */
static inline tg_tensor *
tg__tensor(const tg_tensor *h)
{
#ifdef TG__HANDLE_SHIFT
    uintptr_t v = (uintptr_t)h;
    unsigned uses = (unsigned)(v >> TG__HANDLE_SHIFT);
    if (uses) {
        tg_tensor *x = (tg_tensor *)(v & (((uintptr_t)1 << TG__HANDLE_SHIFT) - 1));
        return x->uses == uses ? x : &tg__stale;
    }
#endif
    return (tg_tensor *)h;
}

/* tg_dtype_size inline: the library asks it several times per node, and the exported
 * function is a call away (another translation unit). */
static inline size_t
tg__dtype_bytes(tg_dtype dt)
{
    return dt == TG_F32 ? 4 : dt == TG_F64 ? 8 : 0;
}

/* Bytes of x's data. Never overflows: sizes are checked when shapes are made. */
static inline size_t
tg__nbytes(const tg_tensor *x)
{
    return x->size * tg__dtype_bytes(x->dtype);
}

/* Shape text "(3x4)" and a tensor's description `"W2" (3x4)` for messages. The struct is
 * returned by value so several can appear in one printf call. */
struct tg__text {
    char s[TG__NAME_MAX + 64];
};
struct tg__text tg__shape_text(const tg_tensor *x);
struct tg__text tg__shape_dims_text(int ndim, const int64_t *dims);
/* "W2", or <tanh#3>, or <input#0>: escaped (control bytes as \n or \xNN, invalid UTF-8 as
 * \xNN) and, past 64 bytes, shortened in the middle ("abc…xyz") so messages keep their shapes */
struct tg__text tg__name_text(const tg_tensor *x);
/* Any string (an op's name, a path) escaped and shortened the same way */
struct tg__text tg__escaped_text(const char *s);
/* Escapes raw control bytes and invalid UTF-8 in a stored message, in place (tg__vfail and
 * tg__params_fail do it; other modules' error buffers may too) */
void tg__sanitize_message(char *buf, size_t size);

/* Validates ndim/dims and computes the element count with overflow checks. On error writes a
 * message (prefixed with `what`) into err and returns the status. */
tg_status tg__check_dims(int ndim, const int64_t *dims, tg_dtype dt, size_t *size, char *err,
                         size_t errsize, const char *what);
/* Validates a name: NULL ok; otherwise non-empty, <= TG__NAME_MAX bytes, UTF-8, no NUL. */
bool tg__name_ok(const char *name);
bool tg__utf8_valid(const char *s, size_t n);

/* ---- parameters ---- */
struct tg_params {
    tg_dtype dtype;
    tg_status status; /* the first refusal, until tg_params_clear_error */
    tg_status last;   /* the latest refusal (what a failing layer helper returns) */
    char errmsg[TG__ERRMSG_SIZE];
    tg_tensor **tensors; /* each tensor's data/grad point into values/grads */
    size_t *offsets;     /* element offset of each tensor in the buffers */
    size_t count, cap;
    size_t size; /* total elements */
    void *values, *grads;
    /* Buffers (tg_params_add_buffer): state such as batch norm's running statistics, saved
     * with the parameters but never trained: outside values/grads (so optimizers and
     * all-reduces never see them), each with its own zeroed allocation and no gradient. */
    tg_tensor **buffers;
    size_t n_buffers, cap_buffers;
};
void tg__params_fail(tg_params *p, tg_status s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Checkpoint and rollback for calls that add several parameters (layer helpers): on failure,
 * tg__params_rollback removes every parameter added since the mark, so the set holds exactly
 * what it held before the call (its error, set by the failing add, is kept). A layer helper
 * written as mark / adds / rollback on failure is atomic by construction. */
struct tg__params_mark {
    size_t count, size, n_buffers;
};
struct tg__params_mark tg__params_mark(const tg_params *p);
void tg__params_rollback(tg_params *p, struct tg__params_mark m);

/* ---- the tape ---- */
struct tg__attr {
    double scale;   /* scale: c; leaky_relu, elu: alpha; pow: p; clamp: lo; huber: delta */
    double scale2;  /* clamp: hi; cross_entropy: label smoothing */
    int axis;       /* reductions: axis, -1 for all; losses: batch or class axis; shape ops */
    unsigned axes;  /* axis-set reductions: bit i set when axis i is reduced */
    bool keepdims;
    bool trans_a;   /* matmul */
    bool trans_b;
    bool causal;    /* scaled_dot_product_attention: logits with s > t masked */
    int32_t *labels;  /* softmax_xent, nll, cross_entropy: copied into the arena */
    size_t n_labels;  /* softmax_xent: the caller's count, checked against the batch */
    double *weights;  /* nll, cross_entropy: class weights (NULL: all 1), in the arena */
    int64_t *index;   /* index_select, gather: copied into the arena */
    size_t n_index;
    /* per-axis integers: slice start/stop/step, pad before/after, permutation, target dims */
    int64_t v[3][TG_MAX_DIMS];
    /* batch_norm: the running mean and variance it reads (evaluation) or updates (training) */
    tg_tensor *stats[2];
};

extern const struct tg__attr tg__no_attr;

struct tg_node {
    const tg_op *op;
    tg_tape *tape;
    size_t index; /* position on the tape */
    int n_in;
    tg_tensor **in; /* in_small for up to 4 inputs, else an array on the arena */
    tg_tensor *in_small[4];
    tg_tensor *out;
    /* The op's attributes: a copy on the arena, or tg__no_attr (all zero, read-only) for an op
     * recorded without any. Out of line because most nodes have none: inline, the 184 bytes
     * were most of a node, and a chain of small ops is bound by the memory its nodes take. */
    struct tg__attr *attr;
    void *scratch;
    size_t scratch_bytes;
    void *ctx; /* custom ops' user pointer */
    bool zero_output; /* the output is zero-filled before the forward runs (custom ops) */
};

/* Tensor headers of a tape live in a ring of slots (tape.c, header_slot). A handle is the
 * address of its slot, and a slot is handed to a new tensor only when the tensor it held was
 * made TG__HEADER_GENS or more resets ago, so a handle up to TG__HEADER_GENS - 1 resets old
 * still finds its own header, with its own generation, and is reported as stale. */
#define TG__HEADER_GENS 16
struct tg__header_seg {
    struct tg__header_seg *next; /* the ring is circular */
    tg_tensor *slots;
    size_t n;
    bool owns; /* slots is the start of a block this segment frees */
};

struct tg_tape {
    tg_status status;
    char errmsg[TG__ERRMSG_SIZE];
    struct tg__arena arena; /* nodes, data, scratch, gradients, names */
    /* The header ring (see TG__HEADER_GENS): hdr_cur/hdr_idx is the next slot to consider,
     * hdr_prev the segment before hdr_cur. It grows (at the cursor) while it holds fewer than
     * TG__HEADER_GENS times this generation's tensors, so a step repeated allocates nothing. */
    struct tg__header_seg *hdr_cur, *hdr_prev;
    size_t hdr_idx;
    size_t hdr_slots, hdr_bytes;
    size_t hdr_retired; /* slots that have held TG__SLOT_USES_MAX tensors: skipped for good */
    /* tg_tape_set_memory_limit: caps arena + headers together; a refusal is named in the
     * error (tg__vfail) */
    struct tg__arena_budget budget;
    tg_node **nodes; /* capacity survives resets */
    size_t n_nodes, cap_nodes;
    size_t n_tensors;
    uint64_t gen;    /* bumped by every reset */
    uint64_t grad_pass; /* bumped by every backward pass (tensors' grad_pass) */
    bool check_finite;
    /* tg_tape_set_retain_grads(t, false): backward drops each op output's gradient once its
     * producer's VJP has read it, onto free_grads, and takes later gradients from there */
    bool drop_grads;
    struct tg__free_grad *free_grads; /* blocks of this generation's arena; reset empties it */
    bool eval; /* tg_tape_set_training(t, false): dropout off, batch_norm on running stats */
    /* Set while one of an op's callbacks runs (its shape rule or forward during record, its
     * VJP during backward): recording, backward, reset and free of this tape are refused
     * then, naming busy_node's op and busy_what. */
    const tg_node *busy_node;
    const char *busy_what;
    /* Set while a gradient check uses the tape (tg__tape_hold): reset and free are refused
     * then (the check would be left with partial results or freed memory), naming held_by;
     * the first refused call is kept in held_refused for the check to report. */
    unsigned held;
    const char *held_by;
    const char *held_refused;
    /* Scratch of the forward-mode rules (tg__jvp_scratch): one block kept across passes and
     * resets, grown when a rule needs more, so a warm tg_jvp allocates nothing */
    uint64_t grad_sym_pass; /* bumped by every tg_grad */
    void *jvp_scratch, *fwd_scratch; /* the rules' own; tg__forward_on's copy of a scratch */
    size_t jvp_scratch_bytes, fwd_scratch_bytes;
    tg_tensor nil;   /* returned by every failing call */
};

/* A gradient check holds a tape while it uses it (it runs the user's function on it, reads its
 * tensors, or re-runs its nodes): tg_tape_reset and tg_tape_free are refused until the hold is
 * released, with a message naming `by` ("tg_gradcheck is re-running its function on this
 * tape"), and the first refused call is kept for tg__tape_held_refused. Holds nest (a count;
 * the first `by` is kept); the last release clears the refusal. */
void tg__tape_hold(tg_tape *t, const char *by);
void tg__tape_release(tg_tape *t);
/* "tape_reset" or "tape_free" when one was refused under the current hold, else NULL. */
const char *tg__tape_held_refused(const tg_tape *t);

/* A call that one of the tape's own op callbacks made (busy_node set): refused, naming the
 * op and `what`; returns the nil tensor. */
tg_tensor *tg__fail_busy(tg_tape *t, const char *what);

/* Record the first error on the tape (later ones are dropped) and return the nil tensor. The
 * one place where a tape's error is set: break here to catch any error. */
tg_tensor *tg__fail(tg_tape *t, tg_status s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
tg_tensor *tg__vfail(tg_tape *t, tg_status s, const char *fmt, va_list ap);

/* The tensor behind handle h if it can be used as an operand of `op` on t: not NULL, not
 * nil, same tape or a parameter, not stale. NULL otherwise, with the tape's error set naming
 * `op` and `arg`. */
tg_tensor *tg__operand(tg_tape *t, const char *op, const char *arg, const tg_tensor *h);

/* Allocate a tensor header + data on the tape (data zeroed when zero is set). */
tg_tensor *tg__tape_tensor(tg_tape *t, const char *what, tg_dtype dt, int ndim,
                           const int64_t *dims, bool zero, const char *name);

/* Record a node: checks operands, runs op->shape, allocates the output and scratch, runs the
 * forward. attr may be NULL. Returns the output or the nil tensor. */
tg_tensor *tg__record(tg_tape *t, const tg_op *op, tg_tensor *const *in, int n_in,
                      const struct tg__attr *attr, void *ctx);
/* As tg__record; zero_output zero-fills the output before the forward runs (custom ops: a
 * forward that misses elements then leaves zeros, not arena garbage from an earlier step). */
tg_tensor *tg__record_ex(tg_tape *t, const tg_op *op, tg_tensor *const *in, int n_in,
                         const struct tg__attr *attr, void *ctx, bool zero_output);
/* As tg__record for ops whose output is a view of input 0's data (reshape, detach): the
 * output's shape comes from the shape rule, its data pointer is input 0's (same size). */
tg_tensor *tg__record_view(tg_tape *t, const tg_op *op, tg_tensor *x, const struct tg__attr *attr);
/* Copies n items of `size` bytes into the tape's arena (attributes such as labels); NULL on
 * failure with the tape's error set, naming `what`. */
void *tg__tape_copy(tg_tape *t, const char *what, const void *src, size_t n, size_t size);
/* Normalizes axis (negative: from the end) against ndim; false when out of range. */
bool tg__axis_norm(int *axis, int ndim);

/* For a VJP whose op is listed by tg__vjp_takes_fresh (ops/table.c): true when x's gradient
 * holds nothing yet in this pass (not even zeros), so the VJP must write dx = … instead of
 * adding; the flag is cleared either way. */
static inline bool
tg__grad_take_fresh(tg_tensor *x)
{
    bool fresh = x->grad_fresh;
    x->grad_fresh = false;
    return fresh;
}
bool tg__vjp_takes_fresh(const tg_op *op);

/* ---- forward mode (tape.c) ---- */
/* `bytes` of scratch for the JVP rule of the node running now (aligned for any element
 * type, contents undefined), valid until the rule returns; NULL with the tape's error set
 * (naming the node's op) when out of memory. One block per tape: a rule that needs several
 * areas asks once for their sum. */
void *tg__jvp_scratch(tg_node *nd, size_t bytes);
/* The JVP of a linear op, J·ẋ = F(ẋ): nd's forward run on a copy of the node whose inputs'
 * data are their tangents (zeros where NULL) and whose output is nd's tangent; its scratch
 * is a private copy, so what the real forward saved is kept. For ops linear in every input
 * (sum, transpose, slice, concat, ...). */
tg_status tg__jvp_linear(tg_node *nd);
/* nd's forward run with some inputs' data replaced (in_data[k] non-NULL) and the output
 * written to out_data, on a copy of the node as above: the building block of the rules of
 * bilinear ops (matmul, conv: ẏ = F(ȧ, b) + F(a, ḃ)). */
tg_status tg__forward_on(tg_node *nd, const void *const *in_data, void *out_data);

/* The JVP of an op whose inputs 0 .. n_factors-1 enter as a product (each linearly) and whose
 * other inputs enter linearly and additively (a bias):
 *     ẏ = Σ_k F(x_0, .., ẋ_k, .., x_{m-1}; 0) + F(0, x_1, ..; ḃ)
 * (matmul, mul, conv: ẏ = F(ȧ, b) + F(a, ḃ)), each term a run of the forward (tg__forward_on),
 * terms without a tangent skipped. */
tg_status tg__jvp_multilinear(tg_node *nd, int n_factors);
/* y += x over n elements of dtype dt (the rules that add a second term from a temporary) */
void tg__add_into(tg_dtype dt, void *y, const void *x, size_t n);

/* ---- differentiable backward (grad.c) ---- */
/* The vjp_graph of an op whose Jacobian is locally constant (linear ops, and piecewise linear
 * ones such as relu, max, max_pool2d: their second derivative is 0 wherever it exists): one
 * node that runs the op's own VJP on dy, whose derivatives run the op's own JVP and VJP, so
 * any order is exact. */
tg_tensor *tg__vjp_graph_linear(tg_node *nd, int k, tg_tensor *dy);
/* The vjp_graph of an op y = F(x, w) + (linear in its other inputs) with F bilinear in its
 * inputs 0 and 1 (conv2d, conv_transpose2d): nodes that run the op's own VJP and JVP with
 * substituted data, closed under differentiation (grad.c says how). */
tg_tensor *tg__vjp_graph_bilinear(tg_node *nd, int k, tg_tensor *dy);
/* g summed over the axes along which it was broadcast from `like`'s shape (numpy rules),
 * reshaped to that shape: the adjoint of broadcasting, recorded on t. */
tg_tensor *tg__sum_to(tg_tape *t, tg_tensor *g, const tg_tensor *like);
/* A one-element constant of dtype dt (broadcasts against anything) */
tg_tensor *tg__constant(tg_tape *t, tg_dtype dt, double value);

/* Convenience for shape rules: same shape as input 0. */
tg_status tg__shape_same(tg_node *n, int *ndim, int64_t *dims);
/* Broadcast shape of a and b (numpy rules, aligned from the last dimension). */
bool tg__broadcast_shape(const tg_tensor *a, const tg_tensor *b, int *ndim, int64_t *dims);

/* Typed element access: one loop body for both dtypes. TG__DISPATCH(dt, T, { ... }) runs the
 * block with T = float or T = double. Math inside should come from <tgmath.h> so that exp(x)
 * on a float calls expf. */
#define TG__DISPATCH(dt, T, ...)                                                               \
    do {                                                                                       \
        if ((dt) == TG_F32) {                                                                  \
            typedef float T;                                                                   \
            __VA_ARGS__                                                                        \
        } else {                                                                               \
            typedef double T;                                                                  \
            __VA_ARGS__                                                                        \
        }                                                                                      \
    } while (0)

/* Finite check for the opt-in tracing mode: index of the first non-finite element, or -1. */
long long tg__first_nonfinite(const void *data, size_t n, tg_dtype dt);

#endif /* TG_INTERNAL_H */
