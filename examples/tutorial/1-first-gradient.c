/* Tutorial step 1: record a function on a tape, run backward, read the gradient. */
#include <math.h>
#include <stdio.h>
#include <tapegrad/tapegrad.h>

int
main(void)
{
    /* f(w) = Σ_i tanh((X·w)_i) for a fixed X (3x2) and a parameter-like w (2x1). */
    double x[] = {1.0, 2.0, -1.0, 0.5, 0.0, -3.0}, w[] = {0.3, -0.2};

    tg_tape *tape = tg_tape_new();
    tg_tensor *X = tg_matrix(tape, TG_F64, 3, 2, x, "X");
    tg_tensor *W = tg_matrix(tape, TG_F64, 2, 1, w, "w");
    tg_tensor_set_requires_grad(W, true); /* tape tensors need no gradient unless asked */

    tg_tensor *f = tg_sum(tape, tg_tanh(tape, tg_matmul(tape, X, W)));
    tg_backward(tape, f); /* df/df = 1, then every node's VJP in reverse order */
    if (tg_tape_error(tape)) {
        fprintf(stderr, "%s\n", tg_tape_error(tape));
        return 1;
    }

    /* By hand: df/dw_j = Σ_i (1 - tanh²(z_i)) X_ij, z = X·w. */
    double z[3], worst = 0;
    for (int i = 0; i < 3; i++)
        z[i] = x[2 * i] * w[0] + x[2 * i + 1] * w[1];
    printf("f = %.6f\n", tg_tensor_item(f));
    for (int j = 0; j < 2; j++) {
        double by_hand = 0;
        for (int i = 0; i < 3; i++)
            by_hand += (1 - tanh(z[i]) * tanh(z[i])) * x[2 * i + j];
        double engine = tg_tensor_grad_get(W, (size_t)j);
        printf("df/dw[%d]: engine %.12f  by hand %.12f\n", j, engine, by_hand);
        worst = fmax(worst, fabs(engine - by_hand));
    }

    /* Errors stick to the tape: the bad call and every later one return the nil tensor, and
     * the message names the op, the tensors and their shapes. */
    tg_tape_reset(tape);
    tg_tensor *A = tg_matrix(tape, TG_F64, 3, 2, x, "A");
    tg_tensor *bad = tg_sum(tape, tg_matmul(tape, A, A)); /* (3x2)·(3x2) */
    printf("error, as expected: %s\n", tg_tape_error(tape));
    int ok = worst < 1e-12 && tg_tape_status(tape) == TG_ERR_SHAPE && bad != NULL;
    tg_tape_free(tape);
    return ok ? 0 : 1;
}
