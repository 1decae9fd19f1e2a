/*
 * Resume bit-identity: N steps, save (parameters + optimizer state), load into a fresh process
 * and fresh objects, M more steps == N + M steps straight, bit for bit, for SGD with momentum
 * (and Nesterov, weight decay), Adam and AdamW (with clipping and a cosine schedule, whose
 * position is the restored step count).
 *
 * Each half runs in a forked child that builds everything from scratch (the second child
 * starts from a different random initialization, so only the checkpoint can make it agree)
 * and reports through files only. No tolerance anywhere: the comparison is memcmp.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <tapegrad/checkpoint.h>
#include <tapegrad/optim.h>

#include "common.h"

#define N_STEPS 7
#define M_STEPS 5
#define BATCH 16
#define IN 8
#define HIDDEN 16
#define CLASSES 4

struct run {
    tg_params *p;
    tg_dense l1, l2;
    tg_optim *opt;
    tg_state_dict *sd;
    tg_tape *t;
};

static tg_optim_options
options_for(int kind)
{
    tg_optim_options o;
    switch (kind) {
    case 0: /* SGD, momentum, weight decay */
        o = tg_optim_defaults(TG_OPTIM_SGD);
        o.lr = 0.05, o.momentum = 0.9, o.weight_decay = 1e-3;
        break;
    case 1: /* SGD, Nesterov, step decay */
        o = tg_optim_defaults(TG_OPTIM_SGD);
        o.lr = 0.05, o.momentum = 0.9, o.nesterov = true;
        o.schedule = (tg_schedule){.kind = TG_SCHEDULE_STEP, .step_size = 4, .gamma = 0.5};
        break;
    case 2: /* Adam */
        o = tg_optim_defaults(TG_OPTIM_ADAM);
        o.lr = 0.01;
        break;
    default: /* AdamW, clipping, cosine with warm-up across the save point */
        o = tg_optim_defaults(TG_OPTIM_ADAMW);
        o.lr = 0.01, o.clip_norm = 0.5;
        o.schedule = (tg_schedule){.kind = TG_SCHEDULE_COSINE, .warmup_steps = N_STEPS + 1,
                                   .total_steps = N_STEPS + M_STEPS + 2};
        break;
    }
    return o;
}

/* Everything from scratch: model (weights from init_seed), optimizer, state dict, tape.
 * false (with a message on stderr) on any failure. */
static bool
run_new(struct run *r, int kind, uint64_t init_seed)
{
    memset(r, 0, sizeof *r);
    tg_rng *rng = tg_rng_new(init_seed);
    r->p = tg_params_new(TG_F32);
    tg_dense_init(&r->l1, r->p, "l1", IN, HIDDEN, TG_ACT_RELU, TG_EXAMPLES_AS_ROWS, rng);
    tg_dense_init(&r->l2, r->p, "l2", HIDDEN, CLASSES, TG_ACT_IDENTITY, TG_EXAMPLES_AS_ROWS, rng);
    tg_rng_free(rng);
    tg_optim_options o = options_for(kind);
    const char *err = NULL;
    r->opt = tg_optim_new(r->p, &o, &err);
    r->sd = tg_state_dict_new();
    r->t = tg_tape_new();
    if (!r->opt || !r->sd || !r->t || tg_state_dict_add_params(r->sd, "", r->p) != TG_OK ||
        tg_optim_add_to_state_dict(r->opt, r->sd, "optim/") != TG_OK) {
        fprintf(stderr, "run_new: %s\n", err ? err : tg_state_dict_error(r->sd));
        return false;
    }
    return true;
}

static void
run_free(struct run *r)
{
    tg_tape_free(r->t);
    tg_state_dict_free(r->sd);
    tg_optim_free(r->opt);
    tg_params_free(r->p);
}

/* Steps [from, to): batch k is a function of k alone (its own generator), as a data loader
 * whose shuffle is seeded per epoch would give after a resume. */
static bool
train(struct run *r, int from, int to)
{
    float x[BATCH * IN];
    int32_t y[BATCH];
    for (int k = from; k < to; k++) {
        tg_rng *g = tg_rng_new(1000 + (uint64_t)k);
        for (int i = 0; i < BATCH; i++) {
            y[i] = (int32_t)(tg_rng_u64(g) % CLASSES);
            for (int j = 0; j < IN; j++)
                x[i * IN + j] = (float)(tg_rng_normal(g) + (j % CLASSES == y[i] ? 1.5 : 0));
        }
        tg_rng_free(g);
        tg_tape_reset(r->t);
        tg_tensor *X = tg_tensor_wrap(r->t, TG_F32, 2, (int64_t[]){BATCH, IN}, x, "X");
        tg_tensor *s = tg_dense_forward(r->t, &r->l2, tg_dense_forward(r->t, &r->l1, X));
        tg_backward(r->t, tg_softmax_xent(r->t, s, y, BATCH, 1));
        if (tg_tape_error(r->t) || tg_optim_step(r->opt) != TG_OK) {
            fprintf(stderr, "train step %d: %s\n", k,
                    tg_tape_error(r->t) ? tg_tape_error(r->t) : tg_optim_error(r->opt));
            return false;
        }
    }
    return true;
}

/* Runs fn in a child process; true when it exited 0. */
static bool
in_child(bool (*fn)(int, const char *, const char *), int kind, const char *a, const char *b)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0)
        _exit(fn(kind, a, b) ? 0 : 1);
    int status = 0;
    ck_assert_int_gt(pid, 0);
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/* First process: N steps from seed 1, save. */
static bool
first_half(int kind, const char *path, const char *unused)
{
    struct run r;
    bool ok = run_new(&r, kind, 1) && train(&r, 0, N_STEPS) &&
              tg_state_dict_save(r.sd, path) == TG_OK;
    if (!ok && r.sd && tg_state_dict_error(r.sd))
        fprintf(stderr, "first half: %s\n", tg_state_dict_error(r.sd));
    run_free(&r);
    return ok;
}

/* Second process: a different initialization (seed 2), load, M steps, save. */
static bool
second_half(int kind, const char *in, const char *out)
{
    struct run r;
    bool ok = run_new(&r, kind, 2) && tg_state_dict_load(r.sd, in, 0) == TG_OK &&
              tg_optim_steps(r.opt) == N_STEPS && train(&r, N_STEPS, N_STEPS + M_STEPS) &&
              tg_state_dict_save(r.sd, out) == TG_OK;
    if (!ok && r.sd && tg_state_dict_error(r.sd))
        fprintf(stderr, "second half: %s\n", tg_state_dict_error(r.sd));
    run_free(&r);
    return ok;
}

static bool
same_params(tg_params *a, tg_params *b)
{
    return tg_params_size(a) == tg_params_size(b) &&
           memcmp(tg_params_values(a), tg_params_values(b),
                  tg_params_size(a) * tg_dtype_size(tg_params_dtype(a))) == 0;
}

START_TEST(resume_is_bit_identical)
{
    int kind = _i;
    char dir[] = "/tmp/tg-resume-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char mid[64], end[64];
    snprintf(mid, sizeof mid, "%s/mid.safetensors", dir);
    snprintf(end, sizeof end, "%s/end.safetensors", dir);

    ck_assert_msg(in_child(first_half, kind, mid, NULL), "first half failed (kind %d)", kind);
    ck_assert_msg(in_child(second_half, kind, mid, end), "second half failed (kind %d)", kind);

    /* straight N + M, here */
    struct run straight, resumed;
    ck_assert(run_new(&straight, kind, 1));
    ck_assert(train(&straight, 0, N_STEPS + M_STEPS));
    /* the resumed run's final state, into fresh objects (seed 3: nothing left to chance) */
    ck_assert(run_new(&resumed, kind, 3));
    ck_assert_msg(tg_state_dict_load(resumed.sd, end, 0) == TG_OK, "%s",
                  tg_state_dict_error(resumed.sd));

    ck_assert_msg(same_params(straight.p, resumed.p), "kind %d: parameters differ", kind);
    ck_assert_uint_eq(tg_optim_state_count(straight.opt), tg_optim_state_count(resumed.opt));
    for (size_t i = 0; i < tg_optim_state_count(straight.opt); i++)
        ck_assert_msg(same_params(tg_optim_state(straight.opt, i),
                                  tg_optim_state(resumed.opt, i)),
                      "kind %d: optimizer state \"%s\" differs", kind,
                      tg_optim_state_name(straight.opt, i));
    ck_assert_int_eq(tg_optim_steps(resumed.opt), N_STEPS + M_STEPS);
    ck_assert_double_eq(tg_optim_lr(resumed.opt), tg_optim_lr(straight.opt));

    /* and the runs really moved: a fresh seed-1 model differs from the trained one */
    struct run fresh;
    ck_assert(run_new(&fresh, kind, 1));
    ck_assert(!same_params(fresh.p, straight.p));
    run_free(&fresh);

    run_free(&straight);
    run_free(&resumed);
    unlink(mid);
    unlink(end);
    rmdir(dir);
}
END_TEST

/* Without the optimizer state (parameters only), a momentum/Adam resume is NOT identical: the
 * state in the checkpoint is what the test above relies on. */
START_TEST(parameters_alone_are_not_enough)
{
    char dir[] = "/tmp/tg-resume-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char path[64];
    snprintf(path, sizeof path, "%s/p.safetensors", dir);
    struct run a, b;
    ck_assert(run_new(&a, 2, 1));
    ck_assert(train(&a, 0, N_STEPS));
    char err[512];
    ck_assert_int_eq(tg_checkpoint_save_params(a.p, path, err, sizeof err), TG_OK);
    ck_assert(train(&a, N_STEPS, N_STEPS + M_STEPS));
    ck_assert(run_new(&b, 2, 1));
    ck_assert_int_eq(tg_checkpoint_load_params(b.p, path, err, sizeof err), TG_OK);
    ck_assert(train(&b, N_STEPS, N_STEPS + M_STEPS));
    ck_assert(!same_params(a.p, b.p));
    run_free(&a);
    run_free(&b);
    unlink(path);
    rmdir(dir);
}
END_TEST

/* A checkpoint of one optimizer does not load into another: Adam's m/v are not a velocity. */
START_TEST(optimizer_mismatch_is_refused)
{
    char dir[] = "/tmp/tg-resume-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char path[64];
    snprintf(path, sizeof path, "%s/adam.safetensors", dir);
    struct run a, s;
    ck_assert(run_new(&a, 2, 1));
    ck_assert(train(&a, 0, 2));
    ck_assert_int_eq(tg_state_dict_save(a.sd, path), TG_OK);
    ck_assert(run_new(&s, 0, 1));
    float before = ((float *)tg_params_values(s.p))[0];
    ck_assert_int_eq(tg_state_dict_load(s.sd, path, 0), TG_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(tg_state_dict_error(s.sd), "optim/velocity/l1/W"));
    ck_assert_float_eq(((float *)tg_params_values(s.p))[0], before); /* all or nothing */
    ck_assert_int_eq(tg_optim_steps(s.opt), 0);
    run_free(&a);
    run_free(&s);
    unlink(path);
    rmdir(dir);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("resume");
    TCase *tc = tcase_create("bit identity");
    tcase_set_timeout(tc, 60);
    /* 0 SGD momentum + decay, 1 Nesterov + step decay, 2 Adam, 3 AdamW + clip + cosine */
    tcase_add_loop_test(tc, resume_is_bit_identical, 0, 4);
    tcase_add_test(tc, parameters_alone_are_not_enough);
    suite_add_tcase(s, tc);
    tc = tcase_create("mismatch");
    tcase_add_test(tc, optimizer_mismatch_is_refused);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
