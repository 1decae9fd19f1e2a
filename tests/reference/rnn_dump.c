/*
 * rnn_dump [bug]: an LSTM and a GRU layer (2 layers, bidirectional, biases, h0 (and c0) given;
 * T = 5, B = 3, I = 4, H = 6, float64) with seeded weights, run forward and backward on
 *   J = Σ output ⊙ R_out + Σ h_n ⊙ R_h (+ Σ c_n ⊙ R_c),   R fixed random,
 * then written to stdout as JSON: every input, weight, output and gradient, for
 * torch_rnn_ref.py to replay with torch.nn.LSTM / nn.GRU. The LSTM also runs batch_first on
 * the same values (transposed), whose output must equal the sequence-first one.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tapegrad/op.h>
#include <tapegrad/tapegrad.h>

enum { T = 5, B = 3, I = 4, H = 6, L = 2, D = 2 };

static void
put_array(const char *key, tg_tensor *x, bool grad, bool *first)
{
    size_t n = tg_tensor_size(x);
    const double *v = grad ? tg_tensor_grad(x) : tg_tensor_data(x);
    printf("%s\n  \"%s\": {\"shape\": [", *first ? "" : ",", key);
    for (int i = 0; i < tg_tensor_ndim(x); i++)
        printf("%s%lld", i ? ", " : "", (long long)tg_tensor_dim(x, i));
    printf("], \"data\": [");
    for (size_t i = 0; i < n; i++)
        printf("%s%.17g", i ? ", " : "", v ? v[i] : 0.0);
    printf("]}");
    *first = false;
}

static tg_tensor *
random_input(tg_tape *t, tg_rng *r, int ndim, const int64_t *dims, const char *name, bool grad)
{
    tg_tensor *x = tg_tensor_new(t, TG_F64, ndim, dims, name);
    tg_tensor_fill_uniform(x, r, -1, 1);
    tg_tensor_set_requires_grad(x, grad);
    return x;
}

/* Σ y ⊙ R with R drawn from r (no gradient) */
static tg_tensor *
weighted_sum(tg_tape *t, tg_rng *r, tg_tensor *y, const char *name)
{
    int64_t dims[TG_MAX_DIMS];
    for (int i = 0; i < tg_tensor_ndim(y); i++)
        dims[i] = tg_tensor_dim(y, i);
    tg_tensor *w = random_input(t, r, tg_tensor_ndim(y), dims, name, false);
    return tg_sum(t, tg_mul(t, y, w));
}

static int
run(bool lstm, bool *first)
{
    const char *tag = lstm ? "lstm" : "gru";
    tg_params *p = tg_params_new(TG_F64);
    tg_rng *r = tg_rng_new(lstm ? 2024 : 2025);
    tg_rnn_layer layer;
    tg_status s = lstm ? tg_lstm_layer_init(&layer, p, tag, I, H, L, true, true, r)
                       : tg_gru_layer_init(&layer, p, tag, I, H, L, true, true, r);
    if (s != TG_OK) {
        fprintf(stderr, "rnn_dump: %s\n", tg_params_error(p));
        return 1;
    }
    tg_tape *t = tg_tape_new();
    tg_tensor *x = random_input(t, r, 3, (const int64_t[]){T, B, I}, "x", true);
    tg_tensor *h0 = random_input(t, r, 3, (const int64_t[]){L * D, B, H}, "h0", true);
    tg_tensor *c0 = lstm ? random_input(t, r, 3, (const int64_t[]){L * D, B, H}, "c0", true)
                         : NULL;
    tg_tensor *hn = NULL, *cn = NULL;
    tg_tensor *y = lstm ? tg_lstm_layer_forward(t, &layer, x, h0, c0, &hn, &cn)
                        : tg_gru_layer_forward(t, &layer, x, h0, &hn);
    tg_tensor *loss = tg_add(t, weighted_sum(t, r, y, "R_out"), weighted_sum(t, r, hn, "R_h"));
    if (lstm)
        loss = tg_add(t, loss, weighted_sum(t, r, cn, "R_c"));
    tg_backward(t, loss);
    if (tg_tape_error(t)) {
        fprintf(stderr, "rnn_dump: %s: %s\n", tag, tg_tape_error(t));
        return 1;
    }
    /* batch_first on the same values: (B, T, I) must give the transposed output */
    tg_tape *tb = tg_tape_new();
    tg_tensor *xb = tg_permute(tb, tg_tensor_from(tb, TG_F64, 3, (const int64_t[]){T, B, I},
                                                  tg_tensor_data(x), NULL),
                               (const int[]){1, 0, 2});
    layer.batch_first = true;
    tg_tensor *hnb = NULL, *cnb = NULL;
    const int64_t sdims[3] = {L * D, B, H};
    tg_tensor *h0b = tg_tensor_from(tb, TG_F64, 3, sdims, tg_tensor_data(h0), NULL);
    tg_tensor *yb = lstm ? tg_lstm_layer_forward(tb, &layer, xb, h0b,
                                                 tg_tensor_from(tb, TG_F64, 3, sdims,
                                                                tg_tensor_data(c0), NULL),
                                                 &hnb, &cnb)
                         : tg_gru_layer_forward(tb, &layer, xb, h0b, &hnb);
    layer.batch_first = false;
    if (tg_tape_error(tb)) {
        fprintf(stderr, "rnn_dump: %s batch_first: %s\n", tag, tg_tape_error(tb));
        return 1;
    }
    yb = tg_permute(tb, yb, (const int[]){1, 0, 2});
    char key[256];
#define PUT(name, tensor, grad)                                                                \
    do {                                                                                       \
        snprintf(key, sizeof key, "%s/%s", tag, name);                                         \
        put_array(key, tensor, grad, first);                                                   \
    } while (0)
    PUT("x", x, false);
    PUT("h0", h0, false);
    if (lstm)
        PUT("c0", c0, false);
    PUT("output", y, false);
    PUT("h_n", hn, false);
    if (lstm)
        PUT("c_n", cn, false);
    PUT("output_batch_first", yb, false);
    PUT("h_n_batch_first", hnb, false);
    PUT("grad/x", x, true);
    PUT("grad/h0", h0, true);
    if (lstm)
        PUT("grad/c0", c0, true);
    for (size_t i = 0; i < tg_params_count(p); i++) {
        tg_tensor *w = tg_params_get(p, i);
        char name[160];
        snprintf(name, sizeof name, "param/%s", tg_tensor_name(w));
        PUT(name, w, false);
        snprintf(name, sizeof name, "grad/%s", tg_tensor_name(w));
        PUT(name, w, true);
    }
    for (size_t i = 0; i < tg_tape_node_count(t); i++) {
        tg_node *n = tg_tape_node(t, i);
        for (int k = 0; k < tg_node_input_count(n); k++) {
            tg_tensor *in = tg_node_input(n, k);
            const char *nm = tg_tensor_name(in);
            if (nm && nm[0] == 'R' && nm[1] == '_')
                PUT(nm, in, false);
        }
    }
    tg_tape_free(tb);
    tg_tape_free(t);
    tg_rng_free(r);
    tg_params_free(p);
    return 0;
}

int
main(void)
{
    bool first = true;
    printf("{");
    int rc = run(true, &first) || run(false, &first);
    printf("\n}\n");
    return rc;
}
