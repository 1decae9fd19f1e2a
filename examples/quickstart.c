/* README's short program: a 2-16-1 network learns XOR-like data with SGD. */
#include <stdio.h>
#include <tapegrad/tapegrad.h>

int
main(void)
{
    /* 4 examples as rows: inputs X (4x2), targets Y (4x1) */
    float x[] = {0, 0, 0, 1, 1, 0, 1, 1}, y[] = {0, 1, 1, 0};

    tg_rng *rng = tg_rng_new(42);
    tg_params *model = tg_params_new(TG_F32);
    tg_dense hidden, out;
    tg_dense_init(&hidden, model, "hidden", 2, 16, TG_ACT_TANH, TG_EXAMPLES_AS_ROWS, rng);
    tg_dense_init(&out, model, "out", 16, 1, TG_ACT_SIGMOID, TG_EXAMPLES_AS_ROWS, rng);
    tg_sgd *sgd = tg_sgd_new(model, &(tg_sgd_options){.lr = 1.0, .momentum = 0.9}, NULL);

    tg_tape *tape = tg_tape_new();
    for (int step = 0; step <= 500; step++) {
        tg_tape_reset(tape); /* reuses the tape's memory: no malloc after the first step */
        tg_tensor *X = tg_matrix(tape, TG_F32, 4, 2, x, "X");
        tg_tensor *Y = tg_matrix(tape, TG_F32, 4, 1, y, "Y");
        tg_tensor *A = tg_dense_forward(tape, &out, tg_dense_forward(tape, &hidden, X));
        tg_tensor *loss = tg_mse(tape, A, Y);
        tg_backward(tape, loss);
        if (tg_tape_error(tape)) { /* one check per step: errors stick to the tape */
            fprintf(stderr, "step %d: %s\n", step, tg_tape_error(tape));
            return 1;
        }
        tg_sgd_step(sgd); /* w -= lr * dw for every parameter, then zero the gradients */
        if (step % 100 == 0)
            printf("step %3d  loss %.5f\n", step, tg_tensor_item(loss));
    }
    tg_tape_free(tape);
    tg_sgd_free(sgd);
    tg_params_free(model);
    tg_rng_free(rng);
    return 0;
}
