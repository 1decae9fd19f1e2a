/*
 * Optimizers against values computed by hand for a few steps, clipping, schedules, bad
 * options, state slots and the no-allocation rule for warm steps.
 *
 * Tolerances: float64 expectations are the hand formulas evaluated in double; the library
 * evaluates the same formulas in a different order (e.g. Adam's √v / √(1 − β2^t) instead of
 * √(v / (1 − β2^t))), so results agree to a few ulps of the values (~1e-16); 1e-13 leaves
 * three orders of margin. float32 runs use 1e-6: about 8 float ulps (6e-8 each) of values
 * near 1, the same few roundings in single precision.
 */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <tapegrad/optim.h>

#include "common.h"

#define TOL64 1e-13
#define TOL32 1e-6

/* One parameter w = [1, -2]; gradients are set by hand before each step. */
static tg_params *
one_param(tg_dtype dt, tg_tensor **w)
{
    tg_params *p = tg_params_new(dt);
    *w = tg_params_add(p, "w", 1, (int64_t[]){2});
    tg_tensor_write(*w, (double[]){1, -2}, 2);
    return p;
}

static void
set_grad(tg_tensor *w, double g0, double g1)
{
    double *g = tg_tensor_grad(w);
    if (tg_tensor_dtype(w) == TG_F32) {
        float *f = tg_tensor_grad(w);
        f[0] = (float)g0, f[1] = (float)g1;
    } else {
        g[0] = g0, g[1] = g1;
    }
}

static tg_optim *
make(tg_params *p, tg_optim_options o)
{
    const char *err = NULL;
    tg_optim *opt = tg_optim_new(p, &o, &err);
    ck_assert_msg(opt != NULL, "tg_optim_new: %s", err);
    ck_assert_ptr_null(err);
    return opt;
}

/* ---------------------------------------------------------------------------------------
 * SGD (the core tg_sgd API and tg_optim's SGD share one implementation).
 */

START_TEST(sgd_plain)
{
    tg_tensor *w;
    tg_params *p = one_param(TG_F64, &w);
    tg_sgd *s = tg_sgd_new(p, &(tg_sgd_options){.lr = 0.1}, NULL);
    set_grad(w, 0.5, 0.25);
    ck_assert_int_eq(tg_sgd_step(s), TG_OK);
    /* w ← w − η g = [1 − 0.05, −2 − 0.025] */
    ck_assert_double_eq_tol(tg_tensor_get(w, 0), 0.95, TOL64);
    ck_assert_double_eq_tol(tg_tensor_get(w, 1), -2.025, TOL64);
    ck_assert_double_eq(tg_tensor_grad_get(w, 0), 0); /* zeroed after the step */
    ck_assert_double_eq(tg_tensor_grad_get(w, 1), 0);
    tg_sgd_free(s);
    tg_params_free(p);
}
END_TEST

START_TEST(sgd_momentum_weight_decay)
{
    tg_tensor *w;
    tg_params *p = one_param(TG_F64, &w);
    tg_sgd *s = tg_sgd_new(p, &(tg_sgd_options){.lr = 0.1, .momentum = 0.9, .weight_decay = 0.01},
                           NULL);
    /* step 1: g = 0.5 + 0.01·1 = 0.51; v = 0.51; w = 1 − 0.051 = 0.949
     * step 2: g = 0.5 + 0.01·0.949 = 0.50949; v = 0.9·0.51 + 0.50949 = 0.96849;
     *         w = 0.949 − 0.096849 = 0.852151 */
    set_grad(w, 0.5, 0.25);
    tg_sgd_step(s);
    ck_assert_double_eq_tol(tg_tensor_get(w, 0), 0.949, TOL64);
    set_grad(w, 0.5, 0.25);
    tg_sgd_step(s);
    ck_assert_double_eq_tol(tg_tensor_get(w, 0), 0.852151, TOL64);
    tg_sgd_free(s);
    tg_params_free(p);
}
END_TEST

START_TEST(sgd_nesterov)
{
    tg_tensor *w;
    tg_params *p = one_param(TG_F64, &w);
    tg_sgd *s = tg_sgd_new(p, &(tg_sgd_options){.lr = 0.1, .momentum = 0.9, .nesterov = true},
                           NULL);
    /* step 1: v = 0.5; w = 1 − 0.1 (0.5 + 0.9·0.5) = 0.905
     * step 2: v = 0.45 + 0.5 = 0.95; w = 0.905 − 0.1 (0.5 + 0.855) = 0.7695 */
    set_grad(w, 0.5, 0.25);
    tg_sgd_step(s);
    ck_assert_double_eq_tol(tg_tensor_get(w, 0), 0.905, TOL64);
    set_grad(w, 0.5, 0.25);
    tg_sgd_step(s);
    ck_assert_double_eq_tol(tg_tensor_get(w, 0), 0.7695, TOL64);
    tg_sgd_free(s);
    tg_params_free(p);
}
END_TEST

/* tg_optim's SGD with momentum, three steps of changing gradients, both dtypes.
 *   g = 1, −1, 0.5;  μ = 0.5;  η = 0.1
 *   step 1: v = 1;                    w = 1 − 0.1           = 0.9
 *   step 2: v = 0.5 − 1 = −0.5;       w = 0.9 + 0.05        = 0.95
 *   step 3: v = −0.25 + 0.5 = 0.25;   w = 0.95 − 0.025      = 0.925 */
START_TEST(optim_sgd_momentum)
{
    tg_dtype dt = _i ? TG_F32 : TG_F64;
    double tol = _i ? TOL32 : TOL64;
    tg_tensor *w;
    tg_params *p = one_param(dt, &w);
    tg_optim_options o = tg_optim_defaults(TG_OPTIM_SGD);
    o.lr = 0.1, o.momentum = 0.5;
    tg_optim *opt = make(p, o);
    const double g[3] = {1, -1, 0.5}, want[3] = {0.9, 0.95, 0.925};
    for (int k = 0; k < 3; k++) {
        set_grad(w, g[k], 0);
        ck_assert_int_eq(tg_optim_step(opt), TG_OK);
        ck_assert_double_eq_tol(tg_tensor_get(w, 0), want[k], tol);
        ck_assert_double_eq(tg_tensor_get(w, 1), -2); /* zero gradient, no decay: unchanged */
    }
    ck_assert_int_eq(tg_optim_steps(opt), 3);
    ck_assert_double_eq_tol(tg_tensor_get(tg_params_get(tg_optim_state(opt, 0), 0), 0), 0.25,
                            tol);
    tg_optim_free(opt);
    tg_params_free(p);
}
END_TEST

/* ---------------------------------------------------------------------------------------
 * Adam / AdamW. η = 0.1, β1 = 0.9, β2 = 0.999, ε = 1e-8, w0 = 1, gradients 0.5, −0.25, 0.125.
 *
 *   t = 1: m = 0.1·0.5 = 0.05                    v = 0.001·0.25 = 0.00025
 *          m̂ = 0.05 / 0.1 = 0.5                   v̂ = 0.00025 / 0.001 = 0.25, √v̂ = 0.5
 *          w = 1 − 0.1·0.5 / (0.5 + 1e-8)         = 0.900000002 (to 1e-17)
 *   t = 2: m = 0.045 − 0.025 = 0.02              v = 0.00024975 + 0.0000625 = 0.00031225
 *          m̂ = 0.02 / 0.19 = 0.1052631578947368  v̂ = 0.00031225 / 0.001999 = 0.1562031015507777
 *          √v̂ = 0.3952253807016671
 *          w = 0.900000002 − 0.1·0.10526315789 / 0.39522538 = 0.8733662987078463
 *   t = 3: m = 0.018 + 0.0125 = 0.0305           v = 0.00031193775 + 0.000015625 = 0.00032756275
 *          m̂ = 0.0305 / 0.271 = 0.1125461254612546
 *          v̂ = 0.00032756275 / 0.002997001 = 0.1092968437447970, √v̂ = 0.3306007316156409
 *          w = 0.8733662987078463 − 0.1·0.11254612546 / 0.33060073 = 0.8393233849166541
 * The second element has gradient 0 throughout: m = v = 0, the update 0 / (0 + ε) = 0.
 * Without bias correction step 1 alone would give w = 1 − 0.1·0.05 / 0.0158 = 0.684.
 */
START_TEST(adam_three_steps)
{
    tg_dtype dt = _i ? TG_F32 : TG_F64;
    double tol = _i ? TOL32 : TOL64;
    tg_tensor *w;
    tg_params *p = one_param(dt, &w);
    tg_optim_options o = tg_optim_defaults(TG_OPTIM_ADAM);
    o.lr = 0.1;
    tg_optim *opt = make(p, o);
    const double g[3] = {0.5, -0.25, 0.125};
    const double want[3] = {0.900000002, 0.8733662987078463, 0.8393233849166541};
    const double want_m[3] = {0.05, 0.02, 0.0305}, want_v[3] = {0.00025, 0.00031225, 0.00032756275};
    for (int k = 0; k < 3; k++) {
        set_grad(w, g[k], 0);
        ck_assert_int_eq(tg_optim_step(opt), TG_OK);
        ck_assert_double_eq_tol(tg_tensor_get(w, 0), want[k], tol);
        ck_assert_double_eq(tg_tensor_get(w, 1), -2);
        ck_assert_double_eq_tol(tg_tensor_get(tg_params_get(tg_optim_state(opt, 0), 0), 0),
                                want_m[k], tol);
        ck_assert_double_eq_tol(tg_tensor_get(tg_params_get(tg_optim_state(opt, 1), 0), 0),
                                want_v[k], tol);
    }
    tg_optim_free(opt);
    tg_params_free(p);
}
END_TEST

/* Weight decay λ = 0.1, one step from w = 1 with gradient 0.5, η = 0.1:
 *   Adam (L2 in the gradient): g = 0.5 + 0.1·1 = 0.6, m̂ = 0.6, √v̂ = 0.6,
 *        w = 1 − 0.1·0.6 / (0.6 + 1e-8) = 0.9000000016666666
 *   AdamW (decoupled): w = 1·(1 − 0.1·0.1) = 0.99, then g = 0.5 as in adam_three_steps,
 *        w = 0.99 − 0.1·0.5 / (0.5 + 1e-8) = 0.890000002 */
START_TEST(adam_weight_decay_vs_adamw)
{
    tg_tensor *w;
    tg_params *p = one_param(TG_F64, &w);
    tg_optim_options o = tg_optim_defaults(TG_OPTIM_ADAM);
    o.lr = 0.1, o.weight_decay = 0.1;
    tg_optim *opt = make(p, o);
    set_grad(w, 0.5, 0);
    tg_optim_step(opt);
    ck_assert_double_eq_tol(tg_tensor_get(w, 0), 0.9000000016666666, TOL64);
    tg_optim_free(opt);

    tg_tensor_write(w, (double[]){1, -2}, 2);
    o.kind = TG_OPTIM_ADAMW;
    opt = make(p, o);
    set_grad(w, 0.5, 0);
    tg_optim_step(opt);
    ck_assert_double_eq_tol(tg_tensor_get(w, 0), 0.890000002, TOL64);
    /* decoupled decay applies to the zero-gradient element too: −2 · 0.99 */
    ck_assert_double_eq_tol(tg_tensor_get(w, 1), -1.98, TOL64);
    tg_optim_free(opt);
    tg_params_free(p);
}
END_TEST

/* ---------------------------------------------------------------------------------------
 * Clipping by global norm.
 */

/* g = [3, 4], ‖g‖ = 5, c = 1: scale 1 / (5 + 1e-6); SGD η = 1:
 *   w = [1 − 3 / 5.000001, −2 − 4 / 5.000001] = [0.400000119999976, −2.799999840000032] */
START_TEST(clip_scales_to_norm)
{
    tg_tensor *w;
    tg_params *p = one_param(TG_F64, &w);
    tg_optim_options o = tg_optim_defaults(TG_OPTIM_SGD);
    o.lr = 1, o.clip_norm = 1;
    tg_optim *opt = make(p, o);
    set_grad(w, 3, 4);
    ck_assert_int_eq(tg_optim_step(opt), TG_OK);
    ck_assert_double_eq(tg_optim_last_grad_norm(opt), 5);
    ck_assert_double_eq_tol(tg_tensor_get(w, 0), 0.400000119999976, TOL64);
    ck_assert_double_eq_tol(tg_tensor_get(w, 1), -2.799999840000032, TOL64);
    tg_optim_free(opt);
    tg_params_free(p);
}
END_TEST

/* g = [0.3, 0.4], ‖g‖ = 0.5 < c = 1: no scaling, w = [1 − 0.3, −2 − 0.4]. */
START_TEST(clip_leaves_small_gradients)
{
    tg_tensor *w;
    tg_params *p = one_param(TG_F64, &w);
    tg_optim_options o = tg_optim_defaults(TG_OPTIM_SGD);
    o.lr = 1, o.clip_norm = 1;
    tg_optim *opt = make(p, o);
    set_grad(w, 0.3, 0.4);
    ck_assert_int_eq(tg_optim_step(opt), TG_OK);
    ck_assert_double_eq_tol(tg_optim_last_grad_norm(opt), 0.5, TOL64);
    ck_assert_double_eq_tol(tg_tensor_get(w, 0), 0.7, TOL64);
    ck_assert_double_eq_tol(tg_tensor_get(w, 1), -2.4, TOL64);
    tg_optim_free(opt);
    tg_params_free(p);
}
END_TEST

/* Clipping across several parameters: the norm is global. a = [3], b = [4]: ‖g‖ = 5, Adam's
 * first step is ±η regardless of scale, so use SGD η = 1, c = 2.5: scale 2.5 / 5.000001,
 *   a = 0 − 3·0.4999999 = −1.4999997, b = 0 − 4·0.4999999 = −1.9999996 */
START_TEST(clip_is_global)
{
    tg_params *p = tg_params_new(TG_F64);
    tg_tensor *a = tg_params_add(p, "a", 1, (int64_t[]){1});
    tg_tensor *b = tg_params_add(p, "b", 1, (int64_t[]){1});
    tg_optim_options o = tg_optim_defaults(TG_OPTIM_SGD);
    o.lr = 1, o.clip_norm = 2.5;
    tg_optim *opt = make(p, o);
    ((double *)tg_tensor_grad(a))[0] = 3;
    ((double *)tg_tensor_grad(b))[0] = 4;
    tg_optim_step(opt);
    ck_assert_double_eq_tol(tg_tensor_get(a, 0), -3 * 2.5 / 5.000001, TOL64);
    ck_assert_double_eq_tol(tg_tensor_get(b, 0), -4 * 2.5 / 5.000001, TOL64);
    tg_optim_free(opt);
    tg_params_free(p);
}
END_TEST

/* A NaN gradient under clipping: the step is refused, nothing changes. */
START_TEST(clip_refuses_nonfinite)
{
    tg_tensor *w;
    tg_params *p = one_param(TG_F64, &w);
    tg_optim_options o = tg_optim_defaults(TG_OPTIM_ADAM);
    o.clip_norm = 1;
    tg_optim *opt = make(p, o);
    set_grad(w, NAN, 1);
    ck_assert_int_eq(tg_optim_step(opt), TG_ERR_NONFINITE);
    ck_assert_ptr_nonnull(strstr(tg_optim_error(opt), "gradient norm is nan"));
    ck_assert_ptr_nonnull(strstr(tg_optim_error(opt), "unchanged"));
    ck_assert_double_eq(tg_tensor_get(w, 0), 1);
    ck_assert_double_eq(tg_tensor_get(w, 1), -2);
    ck_assert(isnan(tg_tensor_grad_get(w, 0))); /* gradients kept for inspection */
    ck_assert_int_eq(tg_optim_steps(opt), 0);
    ck_assert_double_eq(tg_tensor_get(tg_params_get(tg_optim_state(opt, 0), 0), 1), 0);
    /* a good step afterwards clears the error */
    set_grad(w, 1, 1);
    ck_assert_int_eq(tg_optim_step(opt), TG_OK);
    ck_assert_ptr_null(tg_optim_error(opt));
    tg_optim_free(opt);
    tg_params_free(p);
}
END_TEST

/* ---------------------------------------------------------------------------------------
 * Schedules (exact arithmetic on small dyadic values unless noted).
 */

START_TEST(schedule_constant_warmup)
{
    tg_schedule s = {.kind = TG_SCHEDULE_CONSTANT, .warmup_steps = 4};
    /* η (step + 1) / 4 for step < 4, then η */
    ck_assert_double_eq(tg_lr_at(&s, 1.0, 0), 0.25);
    ck_assert_double_eq(tg_lr_at(&s, 1.0, 1), 0.5);
    ck_assert_double_eq(tg_lr_at(&s, 1.0, 3), 1.0);
    ck_assert_double_eq(tg_lr_at(&s, 1.0, 1000), 1.0);
    tg_schedule none = {0};
    ck_assert_double_eq(tg_lr_at(&none, 0.5, 0), 0.5);
    ck_assert(isnan(tg_lr_at(&none, 0.5, -1)));
}
END_TEST

START_TEST(schedule_step_decay)
{
    tg_schedule s = {.kind = TG_SCHEDULE_STEP, .step_size = 3, .gamma = 0.5};
    /* η γ^⌊step / 3⌋ */
    ck_assert_double_eq(tg_lr_at(&s, 1.0, 0), 1.0);
    ck_assert_double_eq(tg_lr_at(&s, 1.0, 2), 1.0);
    ck_assert_double_eq(tg_lr_at(&s, 1.0, 3), 0.5);
    ck_assert_double_eq(tg_lr_at(&s, 1.0, 8), 0.25);
    ck_assert_double_eq(tg_lr_at(&s, 1.0, 9), 0.125);
    /* with warm-up 2, decay counts from the end of the warm-up */
    s.warmup_steps = 2;
    ck_assert_double_eq(tg_lr_at(&s, 1.0, 0), 0.5);
    ck_assert_double_eq(tg_lr_at(&s, 1.0, 4), 1.0);
    ck_assert_double_eq(tg_lr_at(&s, 1.0, 5), 0.5);
}
END_TEST

START_TEST(schedule_cosine_warmup)
{
    tg_schedule s = {.kind = TG_SCHEDULE_COSINE, .warmup_steps = 2, .total_steps = 6};
    /* warm-up: 0.5, 1; then D = 4, η (1 + cos(π s / 4)) / 2 for s = 0..3, then η_min = 0.
     * cos(π/4) = √2/2: (1 + 0.70710678) / 2 = 0.8535533905932737 (to 1 ulp: TOL64) */
    ck_assert_double_eq(tg_lr_at(&s, 1.0, 0), 0.5);
    ck_assert_double_eq(tg_lr_at(&s, 1.0, 1), 1.0);
    ck_assert_double_eq(tg_lr_at(&s, 1.0, 2), 1.0);
    ck_assert_double_eq_tol(tg_lr_at(&s, 1.0, 3), 0.8535533905932737, TOL64);
    ck_assert_double_eq_tol(tg_lr_at(&s, 1.0, 4), 0.5, TOL64);
    ck_assert_double_eq_tol(tg_lr_at(&s, 1.0, 5), 0.14644660940672627, TOL64);
    ck_assert_double_eq(tg_lr_at(&s, 1.0, 6), 0.0);
    ck_assert_double_eq(tg_lr_at(&s, 1.0, 100), 0.0);
    /* η_min = 0.1: 0.1 + 0.9 · 0.5 at the midpoint */
    s.min_lr = 0.1;
    ck_assert_double_eq_tol(tg_lr_at(&s, 1.0, 4), 0.55, TOL64);
    ck_assert_double_eq(tg_lr_at(&s, 1.0, 7), 0.1);
}
END_TEST

START_TEST(schedule_invalid)
{
    char err[256];
    struct {
        tg_schedule s;
        double lr;
        const char *msg;
    } bad[] = {
        {{.kind = TG_SCHEDULE_STEP, .step_size = 0, .gamma = 0.5}, 1, "step_size 0"},
        {{.kind = TG_SCHEDULE_STEP, .step_size = 1, .gamma = 0}, 1, "gamma 0"},
        {{.kind = TG_SCHEDULE_STEP, .step_size = 1, .gamma = 1.5}, 1, "gamma 1.5"},
        {{.kind = TG_SCHEDULE_COSINE, .warmup_steps = 5, .total_steps = 5}, 1, "total_steps 5"},
        {{.kind = TG_SCHEDULE_COSINE, .total_steps = 5, .min_lr = 2}, 1, "min_lr 2"},
        {{.kind = TG_SCHEDULE_CONSTANT, .warmup_steps = -1}, 1, "warmup_steps -1"},
        {{.kind = (tg_schedule_kind)7}, 1, "unknown kind 7"},
        {{.kind = TG_SCHEDULE_CONSTANT}, NAN, "learning rate nan"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_int_eq(tg_schedule_check(&bad[i].s, bad[i].lr, err, sizeof err), TG_ERR_ARG);
        ck_assert_msg(strstr(err, bad[i].msg), "case %zu: \"%s\" lacks \"%s\"", i, err,
                      bad[i].msg);
        ck_assert(isnan(tg_lr_at(&bad[i].s, bad[i].lr, 0)));
    }
}
END_TEST

/* The optimizer follows its schedule: SGD η = 1, warm-up 2, gradient 1 each step:
 *   rates 0.5, 1, 1: w = 0 → −0.5 → −1.5 → −2.5 */
START_TEST(optim_uses_schedule)
{
    tg_params *p = tg_params_new(TG_F64);
    tg_tensor *w = tg_params_add(p, "w", 1, (int64_t[]){1});
    tg_optim_options o = tg_optim_defaults(TG_OPTIM_SGD);
    o.lr = 1, o.schedule.warmup_steps = 2;
    tg_optim *opt = make(p, o);
    const double want[3] = {-0.5, -1.5, -2.5}, rate[3] = {0.5, 1, 1};
    for (int k = 0; k < 3; k++) {
        ck_assert_double_eq(tg_optim_lr(opt), rate[k]);
        ((double *)tg_tensor_grad(w))[0] = 1;
        tg_optim_step(opt);
        ck_assert_double_eq(tg_tensor_get(w, 0), want[k]);
    }
    /* the schedule position is the step count, so restoring it restores the rate */
    ck_assert_int_eq(tg_optim_set_steps(opt, 0), TG_OK);
    ck_assert_double_eq(tg_optim_lr(opt), 0.5);
    ck_assert_int_eq(tg_optim_set_steps(opt, -3), TG_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(tg_optim_error(opt), "step count -3"));
    tg_optim_free(opt);
    tg_params_free(p);
}
END_TEST

/* ---------------------------------------------------------------------------------------
 * Bad options: a clear message naming the option and value; nothing is made or changed.
 */

START_TEST(bad_options)
{
    tg_tensor *w;
    tg_params *p = one_param(TG_F64, &w);
    struct {
        tg_optim_kind kind;
        const char *field;
        double value;
        const char *msg;
    } bad[] = {
        {TG_OPTIM_SGD, "lr", NAN, "sgd: learning rate nan"},
        {TG_OPTIM_ADAM, "lr", -1, "adam: learning rate -1"},
        {TG_OPTIM_ADAMW, "lr", INFINITY, "adamw: learning rate inf"},
        {TG_OPTIM_SGD, "momentum", 1, "momentum 1 must be in [0, 1)"},
        {TG_OPTIM_SGD, "momentum", -0.5, "momentum -0.5"},
        {TG_OPTIM_SGD, "weight_decay", NAN, "weight decay nan"},
        {TG_OPTIM_ADAM, "weight_decay", -1, "weight decay -1"},
        {TG_OPTIM_ADAM, "beta1", 1, "beta1 1 must be in [0, 1)"},
        {TG_OPTIM_ADAM, "beta2", -0.1, "beta2 -0.1"},
        {TG_OPTIM_ADAMW, "beta2", NAN, "beta2 nan"},
        {TG_OPTIM_ADAM, "eps", 0, "eps 0 must be finite and > 0"},
        {TG_OPTIM_ADAM, "clip_norm", -1, "clip_norm -1"},
        {TG_OPTIM_SGD, "clip_norm", NAN, "clip_norm nan"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tg_optim_options o = tg_optim_defaults(bad[i].kind);
        if (!strcmp(bad[i].field, "lr"))
            o.lr = bad[i].value;
        else if (!strcmp(bad[i].field, "momentum"))
            o.momentum = bad[i].value;
        else if (!strcmp(bad[i].field, "weight_decay"))
            o.weight_decay = bad[i].value;
        else if (!strcmp(bad[i].field, "beta1"))
            o.beta1 = bad[i].value;
        else if (!strcmp(bad[i].field, "beta2"))
            o.beta2 = bad[i].value;
        else if (!strcmp(bad[i].field, "eps"))
            o.eps = bad[i].value;
        else
            o.clip_norm = bad[i].value;
        const char *err = NULL;
        ck_assert_ptr_null(tg_optim_new(p, &o, &err));
        ck_assert_msg(err && strstr(err, bad[i].msg), "case %zu: \"%s\" lacks \"%s\"", i,
                      err ? err : "(null)", bad[i].msg);
    }
    const char *err = NULL;
    tg_optim_options o = tg_optim_defaults(TG_OPTIM_SGD);
    o.nesterov = true;
    ck_assert_ptr_null(tg_optim_new(p, &o, &err));
    ck_assert_ptr_nonnull(strstr(err, "Nesterov needs a momentum > 0"));
    o = tg_optim_defaults(TG_OPTIM_SGD);
    o.schedule = (tg_schedule){.kind = TG_SCHEDULE_STEP, .step_size = 10, .gamma = -1};
    ck_assert_ptr_null(tg_optim_new(p, &o, &err));
    ck_assert_ptr_nonnull(strstr(err, "sgd: schedule step: gamma -1"));
    o.kind = (tg_optim_kind)9;
    ck_assert_ptr_null(tg_optim_new(p, &o, &err));
    ck_assert_ptr_nonnull(strstr(err, "unknown kind 9"));
    ck_assert_ptr_null(tg_optim_new(NULL, &o, &err));
    ck_assert_ptr_nonnull(strstr(err, "must not be NULL"));
    /* nothing touched the parameters */
    ck_assert_double_eq(tg_tensor_get(w, 0), 1);
    ck_assert_double_eq(tg_tensor_get(w, 1), -2);
    tg_params_free(p);
}
END_TEST

/* set_lr with a bad value fails, keeps the old rate, and the next step uses the old rate. */
START_TEST(bad_set_lr_changes_nothing)
{
    tg_tensor *w;
    tg_params *p = one_param(TG_F64, &w);
    tg_optim_options o = tg_optim_defaults(TG_OPTIM_SGD);
    o.lr = 0.5;
    tg_optim *opt = make(p, o);
    ck_assert_int_eq(tg_optim_set_lr(opt, NAN), TG_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(tg_optim_error(opt), "learning rate nan"));
    ck_assert_int_eq(tg_optim_set_lr(opt, -0.1), TG_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(tg_optim_error(opt), "learning rate -0.1"));
    ck_assert_double_eq(tg_optim_lr(opt), 0.5);
    set_grad(w, 1, 1);
    ck_assert_int_eq(tg_optim_step(opt), TG_OK);
    ck_assert_double_eq(tg_tensor_get(w, 0), 0.5); /* 1 − 0.5·1 */
    ck_assert_int_eq(tg_optim_set_lr(opt, 0.25), TG_OK);
    ck_assert_double_eq(tg_optim_options_get(opt)->lr, 0.25);
    /* a cosine schedule's floor must stay below the rate */
    tg_optim_free(opt);
    o.schedule = (tg_schedule){.kind = TG_SCHEDULE_COSINE, .total_steps = 10, .min_lr = 0.1};
    opt = make(p, o);
    ck_assert_int_eq(tg_optim_set_lr(opt, 0.05), TG_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(tg_optim_error(opt), "min_lr 0.1 must be in [0, lr 0.05]"));
    ck_assert_double_eq(tg_optim_options_get(opt)->lr, 0.5);
    tg_optim_free(opt);
    tg_params_free(p);
}
END_TEST

/* A corrupt step count (as a bad checkpoint could leave it) is refused before any update. */
START_TEST(corrupt_step_count)
{
    tg_tensor *w;
    tg_params *p = one_param(TG_F64, &w);
    tg_optim *opt = make(p, tg_optim_defaults(TG_OPTIM_ADAM));
    *tg_optim_steps_buffer(opt) = 2.5;
    set_grad(w, 1, 1);
    ck_assert_int_eq(tg_optim_step(opt), TG_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(tg_optim_error(opt), "step count 2.5"));
    ck_assert_double_eq(tg_tensor_get(w, 0), 1);
    tg_optim_free(opt);
    tg_params_free(p);
}
END_TEST

/* ---------------------------------------------------------------------------------------
 * State slots and allocation.
 */

START_TEST(state_slots)
{
    tg_params *p = tg_params_new(TG_F32);
    tg_params_add(p, "fc1/W", 2, (int64_t[]){3, 2});
    tg_params_add(p, "fc1/b", 2, (int64_t[]){1, 3});
    tg_optim *sgd = make(p, tg_optim_defaults(TG_OPTIM_SGD));
    ck_assert_uint_eq(tg_optim_state_count(sgd), 0);
    ck_assert_ptr_null(tg_optim_state(sgd, 0));
    tg_optim_options mo = tg_optim_defaults(TG_OPTIM_SGD);
    mo.momentum = 0.9;
    tg_optim *mom = make(p, mo);
    ck_assert_uint_eq(tg_optim_state_count(mom), 1);
    ck_assert_str_eq(tg_optim_state_name(mom, 0), "velocity");
    tg_optim *adam = make(p, tg_optim_defaults(TG_OPTIM_ADAMW));
    ck_assert_uint_eq(tg_optim_state_count(adam), 2);
    ck_assert_str_eq(tg_optim_state_name(adam, 0), "m");
    ck_assert_str_eq(tg_optim_state_name(adam, 1), "v");
    ck_assert_ptr_null(tg_optim_state_name(adam, 2));
    /* mirrors: same names, shapes, dtype, zero-filled */
    tg_params *m = tg_optim_state(adam, 0);
    ck_assert_int_eq(tg_params_dtype(m), TG_F32);
    ck_assert_uint_eq(tg_params_count(m), 2);
    ck_assert_str_eq(tg_tensor_name(tg_params_get(m, 1)), "fc1/b");
    ck_assert_int_eq(tg_tensor_dim(tg_params_get(m, 0), 0), 3);
    ck_assert_uint_eq(tg_params_size(m), 9);
    /* a parameter added later gets state at the next step */
    tg_tensor *extra = tg_params_add(p, "fc2/W", 1, (int64_t[]){4});
    ((float *)tg_tensor_grad(extra))[0] = 1;
    ck_assert_int_eq(tg_optim_step(adam), TG_OK);
    ck_assert_uint_eq(tg_params_count(m), 3);
    ck_assert_double_eq_tol(tg_tensor_get(tg_params_find(m, "fc2/W"), 0), 0.1, TOL32);
    tg_optim_free(sgd);
    tg_optim_free(mom);
    tg_optim_free(adam);
    tg_params_free(p);
}
END_TEST

static atomic_size_t n_allocs; /* pool workers may allocate too */
static void *
count_malloc(size_t n, void *ctx)
{
    n_allocs++;
    return malloc(n);
}
static void *
count_realloc(void *q, size_t n, void *ctx)
{
    n_allocs++;
    return realloc(q, n);
}
static void
count_free(void *q, void *ctx)
{
    free(q);
}
static const tg_allocator counting = {count_malloc, count_realloc, count_free, NULL};

/* Every kind, with clipping and a schedule: steps after construction allocate nothing. */
START_TEST(steps_allocate_nothing)
{
    tg_set_allocator(&counting);
    tg_params *p = tg_params_new(TG_F32);
    tg_params_add(p, "a", 2, (int64_t[]){16, 8});
    tg_params_add(p, "b", 1, (int64_t[]){8});
    tg_optim_options o = tg_optim_defaults((tg_optim_kind)_i);
    o.momentum = _i == TG_OPTIM_SGD ? 0.9 : 0;
    o.clip_norm = 1;
    o.schedule = (tg_schedule){.kind = TG_SCHEDULE_COSINE, .warmup_steps = 2, .total_steps = 9};
    tg_optim *opt = make(p, o);
    size_t before = n_allocs;
    for (int k = 0; k < 10; k++) {
        float *g = tg_params_grads(p);
        for (size_t i = 0; i < tg_params_size(p); i++)
            g[i] = (float)(i % 7) - 3;
        ck_assert_int_eq(tg_optim_step(opt), TG_OK);
    }
    ck_assert_uint_eq(n_allocs - before, 0);
    tg_optim_free(opt);
    tg_params_free(p);
    tg_set_allocator(NULL);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("optim");
    TCase *tc = tcase_create("sgd");
    tcase_add_test(tc, sgd_plain);
    tcase_add_test(tc, sgd_momentum_weight_decay);
    tcase_add_test(tc, sgd_nesterov);
    tcase_add_loop_test(tc, optim_sgd_momentum, 0, 2); /* f64, f32 */
    suite_add_tcase(s, tc);

    tc = tcase_create("adam");
    tcase_add_loop_test(tc, adam_three_steps, 0, 2);
    tcase_add_test(tc, adam_weight_decay_vs_adamw);
    suite_add_tcase(s, tc);

    tc = tcase_create("clipping");
    tcase_add_test(tc, clip_scales_to_norm);
    tcase_add_test(tc, clip_leaves_small_gradients);
    tcase_add_test(tc, clip_is_global);
    tcase_add_test(tc, clip_refuses_nonfinite);
    suite_add_tcase(s, tc);

    tc = tcase_create("schedules");
    tcase_add_test(tc, schedule_constant_warmup);
    tcase_add_test(tc, schedule_step_decay);
    tcase_add_test(tc, schedule_cosine_warmup);
    tcase_add_test(tc, schedule_invalid);
    tcase_add_test(tc, optim_uses_schedule);
    suite_add_tcase(s, tc);

    tc = tcase_create("bad options");
    tcase_add_test(tc, bad_options);
    tcase_add_test(tc, bad_set_lr_changes_nothing);
    tcase_add_test(tc, corrupt_step_count);
    suite_add_tcase(s, tc);

    tc = tcase_create("state");
    tcase_add_test(tc, state_slots);
    tcase_add_loop_test(tc, steps_allocate_nothing, TG_OPTIM_SGD, TG_OPTIM_ADAMW + 1);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
