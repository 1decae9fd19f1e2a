/*
 * transformer_interop FILE: loads a PyTorch nn.TransformerEncoderLayer's weights (norm_first,
 * gelu, written by torch_transformer_interop.py under tapegrad's names) into
 * tg_transformer_block, runs the saved input through it (once without a mask, once causal)
 * and backward from Σ R ⊙ y, and compares the output and the gradients of x and of every
 * parameter with PyTorch's, saved beside them (float64). Exit 0 when each tensor is within
 * 1e-9 x its largest |element| of PyTorch's.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tapegrad/checkpoint.h>
#include <tapegrad/tapegrad.h>

enum { B = 2, T = 5, D = 8, HEADS = 2, FF = 16, NPARAM = 12, NWHAT = 2 + NPARAM };

#define TOL 1e-9

/* the run's tensors in the file: "<run>/y", "<run>/dx", "<run>/d/<parameter name>" */
static const char *const runs[2] = {"plain", "causal"};

static int
compare(const char *run, const char *name, const double *ours, const double *want, size_t n)
{
    double scale = 0, worst = 0;
    for (size_t i = 0; i < n; i++)
        scale = fmax(scale, fabs(want[i]));
    for (size_t i = 0; i < n; i++)
        worst = fmax(worst, fabs(ours[i] - want[i]));
    bool ok = worst <= TOL * scale && scale > 0;
    printf("  %-6s %-32s max |tapegrad - torch| = %.3g of %.3g (bound %.0e relative)  %s\n",
           run, name, worst, scale, TOL, ok ? "ok" : "MISMATCH");
    return ok ? 0 : 1;
}

int
main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: transformer_interop FILE\n");
        return 2;
    }
    tg_params *p = tg_params_new(TG_F64);
    tg_transformer_block blk;
    if (tg_transformer_block_init(&blk, p, "blk", D, HEADS, FF, NULL) != TG_OK ||
        tg_params_count(p) != NPARAM) {
        fprintf(stderr, "transformer_interop: %s\n", tg_params_error(p));
        return 1;
    }
    static double x[B * T * D], r[B * T * D], want[2][NWHAT][3 * D * D];
    int64_t sizes[NWHAT];
    char names[2][NWHAT][96];
    sizes[0] = sizes[1] = B * T * D;
    for (int w = 0; w < NPARAM; w++)
        sizes[2 + w] = (int64_t)tg_tensor_size(tg_params_get(p, (size_t)w));
    tg_state_dict *sd = tg_state_dict_new();
    tg_state_dict_add_params(sd, "", p);
    tg_state_dict_add_buffer(sd, "check/x", TG_F64, 3, (int64_t[]){B, T, D}, x);
    tg_state_dict_add_buffer(sd, "check/R", TG_F64, 3, (int64_t[]){B, T, D}, r);
    for (int k = 0; k < 2; k++)
        for (int w = 0; w < NWHAT; w++) {
            if (w < 2)
                snprintf(names[k][w], sizeof names[k][w], "%s/%s", runs[k], w ? "dx" : "y");
            else
                snprintf(names[k][w], sizeof names[k][w], "%s/d/%s", runs[k],
                         tg_tensor_name(tg_params_get(p, (size_t)(w - 2))));
            tg_state_dict_add_buffer(sd, names[k][w], TG_F64, 1, &sizes[w], want[k][w]);
        }
    if (tg_state_dict_load(sd, argv[1], 0) != TG_OK) {
        fprintf(stderr, "transformer_interop: %s\n", tg_state_dict_error(sd));
        return 1;
    }
    printf("transformer_interop %s (f64, B %d, T %d, d %d, %d heads, ff %d):\n", argv[1], B, T,
           D, HEADS, FF);
    int failed = 0;
    tg_tape *t = tg_tape_new();
    static double got[3 * D * D];
    for (int k = 0; k < 2; k++) {
        tg_tape_reset(t);
        tg_params_zero_grad(p);
        tg_tensor *xt = tg_tensor_wrap(t, TG_F64, 3, (int64_t[]){B, T, D}, x, "x");
        tg_tensor_set_requires_grad(xt, true);
        tg_tensor *y = tg_transformer_block_forward(t, &blk, xt, k == 1, NULL);
        tg_tensor *rt = tg_tensor_wrap(t, TG_F64, 3, (int64_t[]){B, T, D}, r, "R");
        tg_backward(t, tg_sum(t, tg_mul(t, y, rt)));
        if (tg_tape_error(t)) {
            fprintf(stderr, "transformer_interop: %s\n", tg_tape_error(t));
            return 1;
        }
        for (int w = 0; w < NWHAT; w++) {
            tg_tensor *of = w == 0 ? y : w == 1 ? xt : tg_params_get(p, (size_t)(w - 2));
            for (int64_t i = 0; i < sizes[w]; i++)
                got[i] = w == 0 ? tg_tensor_get(of, (size_t)i) : tg_tensor_grad_get(of, (size_t)i);
            failed |= compare(runs[k], names[k][w] + strlen(runs[k]) + 1, got, want[k][w],
                              (size_t)sizes[w]);
        }
    }
    tg_tape_free(t);
    tg_state_dict_free(sd);
    tg_params_free(p);
    return failed;
}
