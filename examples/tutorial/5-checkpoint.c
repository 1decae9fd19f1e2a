/* Tutorial step 5: save the model and the optimizer to a safetensors checkpoint, load it into
 * a fresh process's worth of objects, and resume: the resumed run matches the uninterrupted
 * one bit for bit.
 *
 * usage: 5-checkpoint [DIR]   writes DIR/moons.safetensors */
#include <stdio.h>
#include <string.h>
#include <tapegrad/checkpoint.h>
#include <tapegrad/optim.h>
#include <tapegrad/tapegrad.h>

#include "moons.h"

static float x_train[N_TRAIN * 2];
static int32_t y_train[N_TRAIN];

/* Train for `steps` steps, writing each step's loss to losses. */
static int
train(struct model *m, tg_optim *opt, int steps, double *losses)
{
    tg_tape *tape = tg_tape_new();
    for (int s = 0; s < steps; s++) {
        tg_tape_reset(tape);
        tg_tensor *X = tg_matrix(tape, TG_F32, N_TRAIN, 2, x_train, "X");
        tg_tensor *loss = tg_cross_entropy(tape, model_forward(tape, &m->fc1, &m->fc2, X),
                                           y_train, N_TRAIN, 1, NULL, 0.0);
        tg_backward(tape, loss);
        if (tg_tape_error(tape) || tg_optim_step(opt) != TG_OK) {
            fprintf(stderr, "step %d: %s\n", s,
                    tg_tape_error(tape) ? tg_tape_error(tape) : tg_optim_error(opt));
            tg_tape_free(tape);
            return 1;
        }
        losses[s] = tg_tensor_item(loss);
    }
    tg_tape_free(tape);
    return 0;
}

/* The model's parameters as "model/..." and Adam's moments and step as "optim/...". */
static tg_state_dict *
state_of(struct model *m, tg_optim *opt)
{
    tg_state_dict *sd = tg_state_dict_new();
    tg_state_dict_add_params(sd, "model/", m->params);
    tg_optim_add_to_state_dict(opt, sd, "optim/");
    return sd; /* errors stick to sd: tg_state_dict_status() */
}

int
main(int argc, char **argv)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/moons.safetensors", argc > 1 ? argv[1] : ".");
    tg_rng *data_rng = tg_rng_new(1);
    make_moons(data_rng, N_TRAIN, x_train, y_train);
    tg_optim_options o = tg_optim_defaults(TG_OPTIM_ADAM);
    o.lr = 0.05;
    enum { BEFORE = 100, AFTER = 100 };
    double straight[BEFORE + AFTER], resumed[AFTER];

    /* Run A: 100 steps, save, then 100 more. */
    tg_rng *rng = tg_rng_new(7);
    struct model a;
    model_init(&a, rng);
    tg_optim *adam_a = tg_optim_new(a.params, &o, NULL);
    if (!adam_a || train(&a, adam_a, BEFORE, straight))
        return 1;
    tg_state_dict *sd = state_of(&a, adam_a);
    tg_state_dict_set_metadata(sd, "note", "tutorial step 5, after 100 steps");
    if (tg_state_dict_save(sd, path) != TG_OK) { /* atomic: old file or new, never half */
        fprintf(stderr, "%s\n", tg_state_dict_error(sd));
        return 1;
    }
    tg_state_dict_free(sd);
    printf("saved %s after %d steps (loss %.4f)\n", path, BEFORE, straight[BEFORE - 1]);
    if (train(&a, adam_a, AFTER, straight + BEFORE))
        return 1;

    /* Run B: fresh objects (other initial weights), load, then the same 100 steps. */
    tg_rng *other = tg_rng_new(99);
    struct model b;
    model_init(&b, other);
    tg_optim *adam_b = tg_optim_new(b.params, &o, NULL);
    sd = state_of(&b, adam_b);
    if (tg_state_dict_load(sd, path, 0) != TG_OK) { /* all or nothing */
        fprintf(stderr, "%s\n", tg_state_dict_error(sd));
        return 1;
    }
    printf("loaded it: \"%s\", optimizer at step %ld\n", tg_state_dict_metadata(sd, "note"),
           tg_optim_steps(adam_b));
    tg_state_dict_free(sd);
    if (train(&b, adam_b, AFTER, resumed))
        return 1;

    int same = memcmp(straight + BEFORE, resumed, sizeof resumed) == 0;
    printf("after %d more steps: loss %.6f straight, %.6f resumed: %s\n", AFTER,
           straight[BEFORE + AFTER - 1], resumed[AFTER - 1],
           same ? "identical at every step" : "DIFFERENT");
    tg_optim_free(adam_a);
    tg_optim_free(adam_b);
    tg_params_free(a.params);
    tg_params_free(b.params);
    tg_rng_free(rng);
    tg_rng_free(other);
    tg_rng_free(data_rng);
    return same ? 0 : 1;
}
