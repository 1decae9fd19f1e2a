/*
 * mha_interop FILE: loads a PyTorch nn.MultiheadAttention's weights (written by
 * torch_mha_interop.py under tapegrad's names) into tg_multihead_attention, runs the saved
 * input through it (once with the saved additive float mask, once causal) and backward from
 * Σ R ⊙ y, and compares the output and the gradients of x and of every parameter with
 * PyTorch's, saved beside them (float64). Exit 0 when each tensor is within 1e-9 x its largest
 * |element| of PyTorch's.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tapegrad/checkpoint.h>
#include <tapegrad/tapegrad.h>

enum { B = 3, T = 5, D = 8, HEADS = 2 };

#define TOL 1e-9

/* the run's tensors in the file: "<run>/<what>" */
static const char *const runs[2] = {"mask", "causal"};
static const char *const what[6] = {"y", "dx", "d_in_proj_weight", "d_in_proj_bias",
                                    "d_out_proj_weight", "d_out_proj_bias"};
static const int64_t sizes[6] = {B * T * D, B * T * D, 3 * D * D, 3 * D, D * D, D};

static int
compare(const char *run, const char *name, const double *ours, const double *want, size_t n)
{
    double scale = 0, worst = 0;
    for (size_t i = 0; i < n; i++)
        scale = fmax(scale, fabs(want[i]));
    for (size_t i = 0; i < n; i++)
        worst = fmax(worst, fabs(ours[i] - want[i]));
    bool ok = worst <= TOL * scale && scale > 0;
    printf("  %-7s %-18s max |tapegrad - torch| = %.3g of %.3g (bound %.0e relative)  %s\n", run,
           name, worst, scale, TOL, ok ? "ok" : "MISMATCH");
    return ok ? 0 : 1;
}

int
main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: mha_interop FILE\n");
        return 2;
    }
    tg_params *p = tg_params_new(TG_F64);
    tg_multihead_attention mha;
    if (tg_multihead_attention_init(&mha, p, "att", D, HEADS, NULL) != TG_OK) {
        fprintf(stderr, "mha_interop: %s\n", tg_params_error(p));
        return 1;
    }
    static double x[B * T * D], mask[T * T], r[B * T * D], want[2][6][3 * D * D];
    tg_state_dict *sd = tg_state_dict_new();
    tg_state_dict_add_params(sd, "", p);
    tg_state_dict_add_buffer(sd, "check/x", TG_F64, 3, (int64_t[]){B, T, D}, x);
    tg_state_dict_add_buffer(sd, "check/mask", TG_F64, 2, (int64_t[]){T, T}, mask);
    tg_state_dict_add_buffer(sd, "check/R", TG_F64, 3, (int64_t[]){B, T, D}, r);
    char names[2][6][48];
    for (int k = 0; k < 2; k++)
        for (int w = 0; w < 6; w++) {
            snprintf(names[k][w], sizeof names[k][w], "%s/%s", runs[k], what[w]);
            tg_state_dict_add_buffer(sd, names[k][w], TG_F64, 1, &sizes[w], want[k][w]);
        }
    if (tg_state_dict_load(sd, argv[1], 0) != TG_OK) {
        fprintf(stderr, "mha_interop: %s\n", tg_state_dict_error(sd));
        return 1;
    }
    printf("mha_interop %s (f64, B %d, T %d, d %d, %d heads):\n", argv[1], B, T, D, HEADS);
    tg_tensor *params[4] = {mha.in_proj_weight, mha.in_proj_bias, mha.out_proj_weight,
                            mha.out_proj_bias};
    int failed = 0;
    tg_tape *t = tg_tape_new();
    static double got[3 * D * D];
    for (int k = 0; k < 2; k++) {
        tg_tape_reset(t);
        tg_params_zero_grad(p);
        tg_tensor *xt = tg_tensor_wrap(t, TG_F64, 3, (int64_t[]){B, T, D}, x, "x");
        tg_tensor_set_requires_grad(xt, true);
        tg_tensor *mt = k == 0 ? tg_tensor_wrap(t, TG_F64, 2, (int64_t[]){T, T}, mask, "mask")
                               : NULL;
        tg_tensor *y = tg_multihead_attention_forward(t, &mha, xt, k == 1, mt);
        tg_tensor *rt = tg_tensor_wrap(t, TG_F64, 3, (int64_t[]){B, T, D}, r, "R");
        tg_backward(t, tg_sum(t, tg_mul(t, y, rt)));
        if (tg_tape_error(t)) {
            fprintf(stderr, "mha_interop: %s\n", tg_tape_error(t));
            return 1;
        }
        tg_tensor *of[6] = {y, xt, params[0], params[1], params[2], params[3]};
        for (int w = 0; w < 6; w++) {
            for (int64_t i = 0; i < sizes[w]; i++)
                got[i] = w == 0 ? tg_tensor_get(of[w], (size_t)i)
                                : tg_tensor_grad_get(of[w], (size_t)i);
            failed |= compare(runs[k], what[w], got, want[k][w], (size_t)sizes[w]);
        }
    }
    tg_tape_free(t);
    tg_state_dict_free(sd);
    tg_params_free(p);
    return failed;
}
