/**
 * @file
 * Optimizers over a parameter set: SGD (momentum, Nesterov, weight decay), Adam and AdamW with
 * bias correction, gradient clipping by global norm, and learning-rate schedules (step decay,
 * cosine, each with an optional linear warm-up).
 *
 *     tg_optim_options o = tg_optim_defaults(TG_OPTIM_ADAM);   // lr 1e-3, β (0.9, 0.999)
 *     o.clip_norm = 1.0;
 *     o.schedule = (tg_schedule){.kind = TG_SCHEDULE_COSINE, .warmup_steps = 100,
 *                                .total_steps = 10000};
 *     const char *err;
 *     tg_optim *opt = tg_optim_new(model, &o, &err);
 *     if (!opt) { fprintf(stderr, "%s\n", err); ... }
 *     for (...) { forward; tg_backward(tape, loss); if (tg_optim_step(opt)) ...; }
 *
 * One step reads the gradients of every parameter, updates the values and zeroes the gradients
 * in a single pass over the parameter set's contiguous buffers (plus one read-only pass for
 * the norm when clipping is on). Optimizer state lives in parameter sets that mirror the model
 * (same names, shapes and dtype), allocated when the optimizer is made, so a step allocates
 * nothing and the state can be saved and loaded like the model itself
 * (tg_optim_add_to_state_dict). Parameters added to the model after the optimizer was made
 * get zero state at the next step (which then allocates once).
 *
 * Errors: a failing call returns a status and leaves a message on the optimizer
 * (tg_optim_error), e.g.
 *
 *     adam: clip: gradient norm is nan (non-finite gradient); parameters left unchanged
 *
 * and leaves the parameters, the gradients and the state as they were.
 */
#ifndef TAPEGRAD_OPTIM_H
#define TAPEGRAD_OPTIM_H

#include <tapegrad/tapegrad.h>

#ifdef __cplusplus
extern "C" {
#endif

/* --------------------------------------------------------------------------------------- */
/** @name Learning-rate schedules
 * The rate for update number `step` (0 for the first update), from
 * the base rate η:
 *
 *     warm-up (step < W, W = warmup_steps > 0):   η (step + 1) / W
 *     then, with s = step − W:
 *       TG_SCHEDULE_CONSTANT:  η
 *       TG_SCHEDULE_STEP:      η γ^⌊s / step_size⌋
 *       TG_SCHEDULE_COSINE:    η_min + (η − η_min) (1 + cos(π s / D)) / 2, D = total_steps − W;
 *                              η_min once s >= D
 *
 * A zero-initialized struct is the constant schedule without warm-up.
 * @{ */
/** The shape of a schedule after its warm-up. */
typedef enum tg_schedule_kind {
    TG_SCHEDULE_CONSTANT = 0, /**< η */
    TG_SCHEDULE_STEP,         /**< η γ^⌊s / step_size⌋ */
    TG_SCHEDULE_COSINE,       /**< cosine from η down to η_min over total_steps − W updates */
} tg_schedule_kind;

/** A learning-rate schedule (zero-initialized: constant, no warm-up). */
typedef struct tg_schedule {
    tg_schedule_kind kind; /**< constant, step decay or cosine */
    long warmup_steps; /**< W >= 0 */
    long step_size;    /**< STEP: decay every step_size updates after warm-up, >= 1 */
    double gamma;      /**< STEP: factor γ in (0, 1] */
    long total_steps;  /**< COSINE: updates including warm-up, > W */
    double min_lr;     /**< COSINE: η_min in [0, η] */
} tg_schedule;

/** The learning rate for update `step` (>= 0) from base rate base_lr; NaN when the schedule is
 * invalid for base_lr (see tg_schedule_check) or step < 0. */
TG_API double tg_lr_at(const tg_schedule *s, double base_lr, long step);
/** TG_OK, or TG_ERR_ARG with a message naming the field and its value written to err (which
 * may be NULL; always NUL-terminated when errsize > 0). */
TG_API tg_status tg_schedule_check(const tg_schedule *s, double base_lr, char *err,
                                   size_t errsize);
/** @} */

/* --------------------------------------------------------------------------------------- */
/** @name Optimizers
 * Update rules, with g the gradient (times the clipping factor), λ the weight decay, η the
 * scheduled rate and t the update count starting at 1:
 *
 *     TG_OPTIM_SGD    g ← g + λ w
 *                     μ = 0:     w ← w − η g
 *                     μ > 0:     v ← μ v + g;  w ← w − η v          (v starts at 0)
 *                     Nesterov:  v ← μ v + g;  w ← w − η (g + μ v)
 *     TG_OPTIM_ADAM   g ← g + λ w                                    (L2 in the gradient)
 *                     m ← β1 m + (1 − β1) g;   v ← β2 v + (1 − β2) g²
 *                     w ← w − (η / (1 − β1^t)) m / (√v / √(1 − β2^t) + ε)
 *     TG_OPTIM_ADAMW  w ← w (1 − η λ), then Adam's update with λ = 0  (decoupled decay)
 *
 * These are PyTorch's torch.optim.SGD (dampening 0), Adam and AdamW (amsgrad off).
 * Clipping: with c = clip_norm > 0 and n = ‖all gradients‖₂, g ← g min(1, c / (n + 1e-6))
 * (torch.nn.utils.clip_grad_norm_).
 * @{ */
/** Which update rule. */
typedef enum tg_optim_kind {
    TG_OPTIM_SGD = 0, /**< SGD, with optional momentum (Nesterov) and weight decay */
    TG_OPTIM_ADAM,    /**< Adam, weight decay as L2 in the gradient */
    TG_OPTIM_ADAMW,   /**< AdamW: Adam with decoupled weight decay */
} tg_optim_kind;

/** Options of tg_optim_new (start from tg_optim_defaults). */
typedef struct tg_optim_options {
    tg_optim_kind kind;  /**< the update rule */
    double lr;           /**< base rate η, finite and >= 0 */
    double weight_decay; /**< λ, finite and >= 0 */
    double momentum;     /**< SGD: μ in [0, 1) */
    bool nesterov;       /**< SGD: needs μ > 0 */
    double beta1;        /**< Adam/AdamW: β1 in [0, 1) */
    double beta2;        /**< Adam/AdamW: β2 in [0, 1) */
    double eps;          /**< Adam/AdamW: ε, finite and > 0 */
    double clip_norm;    /**< > 0: clip the global gradient norm to this; 0: off */
    tg_schedule schedule; /**< the learning-rate schedule (zero: constant) */
} tg_optim_options;

/** PyTorch's defaults for kind: SGD lr 0.01; Adam lr 1e-3, β (0.9, 0.999), ε 1e-8; AdamW the
 * same with λ 0.01. No clipping, constant rate. */
TG_API tg_optim_options tg_optim_defaults(tg_optim_kind kind);
TG_API const char *tg_optim_kind_name(tg_optim_kind kind); /**< "sgd", "adam", "adamw" */

/** An optimizer: options, state and step count over one parameter set. */
typedef struct tg_optim tg_optim;

/** NULL on bad options (the message names the option and its value), on a parameter set in an
 * error state, or when out of memory; the reason goes to *err when err is not NULL (it stays
 * valid until the next failing call in the same thread). p is borrowed and must outlive the
 * optimizer. */
TG_API tg_optim *tg_optim_new(tg_params *p, const tg_optim_options *opt, const char **err);
/** Free the optimizer and its state (not the parameters); NULL is a no-op. */
TG_API void tg_optim_free(tg_optim *o);
/** The last failure's message, or NULL when the last call succeeded. Owned by o. */
TG_API const char *tg_optim_error(const tg_optim *o);

/** One update of every parameter from its gradient at the scheduled rate, then the gradients
 * are zeroed and the step count goes up by one. Errors (nothing changed): TG_ERR_NONFINITE
 * when clipping is on and the gradient norm is NaN/Inf, TG_ERR_ARG for a step count that is
 * not a whole number >= 0 (a corrupt loaded state), TG_ERR_NOMEM growing the state. */
TG_API tg_status tg_optim_step(tg_optim *o);

/** Change the base rate (the schedule scales it); TG_ERR_ARG and nothing changes when lr is
 * not finite and >= 0 or the schedule is invalid with it. */
TG_API tg_status tg_optim_set_lr(tg_optim *o, double lr);
/** The rate the next step will use (base rate through the schedule at the step count). */
TG_API double tg_optim_lr(const tg_optim *o);
/** The options in force (with the current base rate). */
TG_API const tg_optim_options *tg_optim_options_get(const tg_optim *o);
/** Updates done so far (restored by a checkpoint load); -1 for a count outside [0, 2^53) (a
 * corrupt loaded state). */
TG_API long tg_optim_steps(const tg_optim *o);
/** Set the update count; TG_ERR_ARG when < 0 (or >= 2^53). */
TG_API tg_status tg_optim_set_steps(tg_optim *o, long steps);
/** Global L2 norm of the gradients seen by the last step, before clipping (NaN before the
 * first step; computed only when clipping is on, else NaN). */
TG_API double tg_optim_last_grad_norm(const tg_optim *o);
/** @} */

/* --------------------------------------------------------------------------------------- */
/** @name State for checkpoints
 * Slots: none for plain SGD, "velocity" for SGD with momentum, "m" and
 * "v" for Adam/AdamW. Each slot is a parameter set mirroring the model (names, shapes, dtype);
 * the step count is a float64 scalar (exact for any count below 2^53).
 * @{ */
TG_API size_t tg_optim_state_count(const tg_optim *o); /**< The number of state slots. */
/** The name of state slot i ("velocity", "m", "v"); NULL out of range. */
TG_API const char *tg_optim_state_name(const tg_optim *o, size_t i);
/** The parameter set of state slot i; NULL out of range. */
TG_API tg_params *tg_optim_state(tg_optim *o, size_t i);
/** The step counter's storage (a double holding a whole number), for raw checkpoint buffers. */
TG_API double *tg_optim_steps_buffer(tg_optim *o);

struct tg_state_dict; /* tg_state_dict, <tapegrad/checkpoint.h> */
/** Registers the whole optimizer state on sd: "<prefix><slot>/<param name>" for every state
 * slot and "<prefix>step" for the step count, e.g. "optim/m/fc1/W" and "optim/step" with
 * prefix "optim/". After a successful tg_state_dict_load the optimizer continues exactly where
 * the saved one stopped. */
TG_API tg_status tg_optim_add_to_state_dict(tg_optim *o, struct tg_state_dict *sd,
                                            const char *prefix);
/** @} */

#ifdef __cplusplus
}
#endif

#endif /* TAPEGRAD_OPTIM_H */
