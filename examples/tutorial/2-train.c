/* Tutorial step 2: train a small network with Adam, and measure it on held-out data. */
#include <stdio.h>
#include <tapegrad/optim.h>
#include <tapegrad/tapegrad.h>

#include "moons.h"

int
main(void)
{
    static float x_train[N_TRAIN * 2], x_test[N_TEST * 2];
    static int32_t y_train[N_TRAIN], y_test[N_TEST];
    tg_rng *rng = tg_rng_new(1); /* one seed: the same data, weights and losses every run */
    make_moons(rng, N_TRAIN, x_train, y_train);
    make_moons(rng, N_TEST, x_test, y_test);

    struct model m;
    if (model_init(&m, rng) != TG_OK) {
        fprintf(stderr, "model: %s\n", tg_params_error(m.params));
        return 1;
    }
    tg_optim_options opt = tg_optim_defaults(TG_OPTIM_ADAM);
    opt.lr = 0.05;
    const char *why;
    tg_optim *adam = tg_optim_new(m.params, &opt, &why);
    if (!adam) {
        fprintf(stderr, "optimizer: %s\n", why);
        return 1;
    }

    tg_tape *tape = tg_tape_new();
    for (int step = 0; step <= 300; step++) {
        tg_tape_reset(tape); /* one tape, reused: no allocation after the first step */
        tg_tensor *X = tg_matrix(tape, TG_F32, N_TRAIN, 2, x_train, "X");
        tg_tensor *logits = model_forward(tape, &m.fc1, &m.fc2, X);
        /* mean over examples of -log softmax(logits)[label]; class axis 1 */
        tg_tensor *loss = tg_cross_entropy(tape, logits, y_train, N_TRAIN, 1, NULL, 0.0);
        tg_backward(tape, loss);
        if (tg_tape_error(tape)) {
            fprintf(stderr, "step %d: %s\n", step, tg_tape_error(tape));
            return 1;
        }
        tg_optim_step(adam); /* update every parameter, then zero the gradients */
        if (step % 50 == 0)
            printf("step %3d  loss %.4f  train accuracy %.3f\n", step, tg_tensor_item(loss),
                   accuracy(logits, y_train, N_TRAIN));
    }

    tg_tape_reset(tape);
    tg_tensor *X = tg_matrix(tape, TG_F32, N_TEST, 2, x_test, "X");
    double acc = accuracy(model_forward(tape, &m.fc1, &m.fc2, X), y_test, N_TEST);
    printf("held-out accuracy %.3f on %d points\n", acc, N_TEST);

    tg_tape_free(tape);
    tg_optim_free(adam);
    tg_params_free(m.params);
    tg_rng_free(rng);
    return acc > 0.9 ? 0 : 1;
}
