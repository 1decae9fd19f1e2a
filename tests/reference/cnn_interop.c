/*
 * cnn_interop FILE f32|f64: loads a PyTorch CNN's state_dict (written by
 * torch_cnn_interop.py under tapegrad's layer names) into examples/fashion-mnist-cnn's
 * network, runs the saved input through it in evaluation mode and in training mode (dropout
 * 0, batch statistics), and compares with PyTorch's logits saved beside it. Exit 0 when every
 * logit is within tol x (the largest |logit|): 1e-12 in float64, 1e-5 in float32 (the
 * float32 products sum ~3000 terms in another order than oneDNN's).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tapegrad/checkpoint.h>
#include <tapegrad/tapegrad.h>

enum { N = 5 };

struct model {
    tg_params *p;
    tg_conv2d_layer conv1, conv2;
    tg_batch_norm_layer bn1, bn2;
    tg_dense fc1, fc2;
};

static tg_tensor *
forward(tg_tape *t, const struct model *m, void *x, tg_dtype dt)
{
    static const int64_t pool[2] = {2, 2};
    tg_tensor *h = tg_tensor_wrap(t, dt, 4, (int64_t[]){N, 1, 28, 28}, x, "x");
    h = tg_conv2d_layer_forward(t, &m->conv1, h);
    h = tg_max_pool2d(t, tg_relu(t, tg_batch_norm_layer_forward(t, &m->bn1, h)), pool, NULL, NULL);
    h = tg_conv2d_layer_forward(t, &m->conv2, h);
    h = tg_max_pool2d(t, tg_relu(t, tg_batch_norm_layer_forward(t, &m->bn2, h)), pool, NULL, NULL);
    h = tg_reshape(t, h, 2, (int64_t[]){N, 3136});
    return tg_dense_forward(t, &m->fc2, tg_dense_forward(t, &m->fc1, h));
}

static int
compare(const char *what, tg_tensor *y, const double *want, double tol)
{
    double scale = 0, worst = 0;
    for (size_t i = 0; i < N * 10; i++)
        scale = fmax(scale, fabs(want[i]));
    for (size_t i = 0; i < N * 10; i++)
        worst = fmax(worst, fabs(tg_tensor_get(y, i) - want[i]));
    printf("  %-22s max |tapegrad - torch| = %.3g of %.3g (bound %.0e)  %s\n", what, worst, scale,
           tol, worst <= tol * scale ? "ok" : "MISMATCH");
    return worst <= tol * scale ? 0 : 1;
}

int
main(int argc, char **argv)
{
    if (argc != 3 || (strcmp(argv[2], "f32") && strcmp(argv[2], "f64"))) {
        fprintf(stderr, "usage: cnn_interop FILE f32|f64\n");
        return 2;
    }
    tg_dtype dt = strcmp(argv[2], "f32") ? TG_F64 : TG_F32;
    double tol = dt == TG_F64 ? 1e-12 : 1e-5;
    struct model m = {.p = tg_params_new(dt)};
    tg_conv_options pad1 = tg_conv_defaults();
    pad1.padding[0] = pad1.padding[1] = 1;
    tg_conv2d_layer_init(&m.conv1, m.p, "conv1", 1, 32, 3, 3, &pad1, true, NULL);
    tg_batch_norm_layer_init(&m.bn1, m.p, "bn1", 32);
    tg_conv2d_layer_init(&m.conv2, m.p, "conv2", 32, 64, 3, 3, &pad1, true, NULL);
    tg_batch_norm_layer_init(&m.bn2, m.p, "bn2", 64);
    tg_dense_init(&m.fc1, m.p, "fc1", 3136, 128, TG_ACT_RELU, TG_EXAMPLES_AS_ROWS, NULL);
    tg_dense_init(&m.fc2, m.p, "fc2", 128, 10, TG_ACT_IDENTITY, TG_EXAMPLES_AS_ROWS, NULL);
    if (tg_params_status(m.p) != TG_OK) {
        fprintf(stderr, "cnn_interop: %s\n", tg_params_error(m.p));
        return 1;
    }
    size_t es = tg_dtype_size(dt);
    void *x = calloc(N * 784, es), *eval_logits = calloc(N * 10, es);
    void *train_logits = calloc(N * 10, es);
    tg_state_dict *sd = tg_state_dict_new();
    tg_state_dict_add_params(sd, "", m.p);
    tg_state_dict_add_buffer(sd, "check/input", dt, 4, (int64_t[]){N, 1, 28, 28}, x);
    tg_state_dict_add_buffer(sd, "check/eval_logits", dt, 2, (int64_t[]){N, 10}, eval_logits);
    tg_state_dict_add_buffer(sd, "check/train_logits", dt, 2, (int64_t[]){N, 10}, train_logits);
    if (tg_state_dict_load(sd, argv[1], 0) != TG_OK) {
        fprintf(stderr, "cnn_interop: %s\n", tg_state_dict_error(sd));
        return 1;
    }
    double want_eval[N * 10], want_train[N * 10];
    for (size_t i = 0; i < N * 10; i++) {
        want_eval[i] = dt == TG_F32 ? ((float *)eval_logits)[i] : ((double *)eval_logits)[i];
        want_train[i] = dt == TG_F32 ? ((float *)train_logits)[i] : ((double *)train_logits)[i];
    }
    printf("cnn_interop %s (%s):\n", argv[1], argv[2]);
    tg_tape *t = tg_tape_new();
    int failed = 0;
    tg_tape_set_training(t, false);
    tg_tensor *y = forward(t, &m, x, dt);
    failed |= tg_tape_error(t) ? (fprintf(stderr, "%s\n", tg_tape_error(t)), 1)
                               : compare("evaluation mode", y, want_eval, tol);
    tg_tape_reset(t);
    tg_tape_set_training(t, true);
    y = forward(t, &m, x, dt);
    failed |= tg_tape_error(t) ? (fprintf(stderr, "%s\n", tg_tape_error(t)), 1)
                               : compare("training mode", y, want_train, tol);
    tg_tape_free(t);
    tg_state_dict_free(sd);
    tg_params_free(m.p);
    free(x);
    free(eval_logits);
    free(train_logits);
    return failed;
}
