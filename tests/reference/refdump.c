/*
 * refdump: builds one random float64 network per seed through the public API, runs forward
 * and backward, and prints the whole computation as text for tests/reference/torch_ref.py,
 * which replays it in PyTorch (float64, its own autograd) and compares the loss, every leaf's
 * gradient and the Hessian-vector product H·v (tg_hvp, both modes) with H the loss's Hessian
 * w.r.t. all leaves jointly. The two sides share nothing but this trace: op names,
 * attributes, operand ids, leaf values and the direction v.
 *
 *   refdump SEED      one network
 *
 * Trace lines (ids are dense, in creation order; every tensor is 2-D, rows x cols):
 *   leaf ID ROWS COLS v...              a tensor that requires a gradient
 *   op ID NAME ROWS COLS ATTR... : IN...  one recorded op and its output shape
 *   labels N l...                      softmax_xent's labels
 *   loss ID VALUE
 *   grad ID g...                       d(loss)/d(leaf), one line per leaf
 *   dir ID v...                        the leaf's part of v, standard normal
 *   hvp_for ID h...                    the leaf's part of H·v, forward over reverse
 *   hvp_ror ID h...                    the same, reverse over reverse
 *
 * Networks: 1-3 layers of random widths, examples as rows or columns, the product as
 * matmul / matmul_t with either operand transposed, the bias by add or fused bias_act, any
 * activation, optional gates (mul/sub/add with a full, row, column or scalar operand, scale),
 * an optional transpose pair, and one of mse_half, mse, softmax_xent, mean(sum_axis), mean_axis.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <tapegrad/tapegrad.h>

#define MAX_IDS 256

static tg_tensor *ids[MAX_IDS];
static int n_ids;
static bool is_leaf[MAX_IDS];

static int
id_of(const tg_tensor *x)
{
    for (int i = 0; i < n_ids; i++)
        if (ids[i] == x)
            return i;
    fprintf(stderr, "refdump: unknown tensor\n");
    exit(2);
}

static int
new_id(tg_tensor *x)
{
    if (n_ids == MAX_IDS) {
        fprintf(stderr, "refdump: too many tensors\n");
        exit(2);
    }
    ids[n_ids] = x;
    return n_ids++;
}

static int
irand(tg_rng *r, int lo, int hi) /* in [lo, hi] */
{
    return lo + (int)(tg_rng_u64(r) % (uint64_t)(hi - lo + 1));
}

static tg_tensor *
leaf(tg_tape *t, tg_rng *r, int64_t rows, int64_t cols, double scale)
{
    tg_tensor *x = tg_matrix(t, TG_F64, rows, cols, NULL, NULL);
    tg_tensor_fill_uniform(x, r, -scale, scale);
    tg_tensor_set_requires_grad(x, true);
    int id = new_id(x);
    is_leaf[id] = true;
    printf("leaf %d %lld %lld", id, (long long)rows, (long long)cols);
    for (size_t i = 0; i < tg_tensor_size(x); i++)
        printf(" %.17g", tg_tensor_get(x, i));
    printf("\n");
    return x;
}

/* Records the op line for y = NAME(ATTR; inputs). */
static tg_tensor *
op(tg_tensor *y, const char *name, const char *attr, tg_tensor *a, tg_tensor *b)
{
    int id = new_id(y);
    printf("op %d %s %lld %lld %s :", id, name, (long long)tg_tensor_dim(y, 0),
           (long long)tg_tensor_dim(y, 1), attr);
    printf(" %d", id_of(a));
    if (b)
        printf(" %d", id_of(b));
    printf("\n");
    return y;
}

static const char *const act_names[] = {"identity", "sigmoid", "tanh", "relu",
                                        "leaky_relu", "softplus", "gelu"};

/* A gate of a random broadcast shape against h (rows x cols): full, row, column or scalar. */
static tg_tensor *
gate(tg_tape *t, tg_rng *r, tg_tensor *h)
{
    int64_t rows = tg_tensor_dim(h, 0), cols = tg_tensor_dim(h, 1);
    switch (irand(r, 0, 3)) {
    case 0: return leaf(t, r, rows, cols, 1.0);
    case 1: return leaf(t, r, 1, cols, 1.0);
    case 2: return leaf(t, r, rows, 1, 1.0);
    default: return leaf(t, r, 1, 1, 1.0);
    }
}

/* (H·v)_i = Σ_j ∂²loss/∂x_i∂x_j · v_j over all leaves x_i jointly, v_j standard normal from
 * a generator of its own (so the network drawn for a seed does not change), by tg_hvp in
 * both modes, after the first-order trace. */
static tg_status
print_hvp(tg_tape *t, tg_tensor *loss, uint64_t seed)
{
    tg_tensor *x[MAX_IDS], *v[MAX_IDS], *hv[MAX_IDS];
    int n = 0;
    tg_rng *r = tg_rng_new(seed * 6151 + 3);
    if (!r)
        return TG_ERR_NOMEM;
    for (int i = 0; i < n_ids; i++) {
        if (!is_leaf[i])
            continue;
        x[n] = ids[i];
        v[n] = tg_matrix(t, TG_F64, tg_tensor_dim(ids[i], 0), tg_tensor_dim(ids[i], 1), NULL,
                         NULL);
        tg_tensor_fill_normal(v[n], r, 0, 1);
        printf("dir %d", i);
        for (size_t k = 0; k < tg_tensor_size(v[n]); k++)
            printf(" %.17g", tg_tensor_get(v[n], k));
        printf("\n");
        n++;
    }
    tg_rng_free(r);
    static const char *const line[2] = {"hvp_for", "hvp_ror"};
    static const tg_hvp_mode mode[2] = {TG_HVP_FORWARD_OVER_REVERSE,
                                        TG_HVP_REVERSE_OVER_REVERSE};
    for (int m = 0; m < 2; m++) {
        if (tg_hvp(t, loss, n, x, v, mode[m], hv) != TG_OK)
            return tg_tape_status(t);
        for (int j = 0; j < n; j++) {
            printf("%s %d", line[m], id_of(x[j]));
            for (size_t k = 0; k < tg_tensor_size(hv[j]); k++)
                printf(" %.17g", tg_tensor_get(hv[j], k));
            printf("\n");
        }
    }
    return TG_OK;
}

int
main(int argc, char **argv)
{
    uint64_t seed = argc > 1 ? strtoull(argv[1], NULL, 10) : 1;
    tg_rng *r = tg_rng_new(seed * 7919 + 17);
    tg_tape *t = tg_tape_new();
    if (!r || !t)
        return 2;

    bool rows_layout = irand(r, 0, 1); /* examples as rows: h is (batch x features) */
    int batch = irand(r, 1, 6), depth = irand(r, 1, 3);
    int width = irand(r, 1, 6);
    tg_tensor *h = rows_layout ? leaf(t, r, batch, width, 2.0) : leaf(t, r, width, batch, 2.0);

    for (int l = 0; l < depth; l++) {
        int out = irand(r, 1, 6);
        /* W stored (out x in) or transposed (in x out): both product forms get used. */
        bool w_t = irand(r, 0, 1);
        tg_tensor *w = w_t ? leaf(t, r, width, out, 1.2) : leaf(t, r, out, width, 1.2);
        tg_tensor *z;
        if (rows_layout) /* Z = H · Wᵀ (batch x out) */
            z = op(tg_matmul_t(t, h, false, w, !w_t), "matmul_t", w_t ? "0 0" : "0 1", h, w);
        else /* Z = W · H (out x batch) */
            z = op(tg_matmul_t(t, w, w_t, h, false), "matmul_t", w_t ? "1 0" : "0 0", w, h);
        tg_tensor *b = rows_layout ? leaf(t, r, 1, out, 0.5) : leaf(t, r, out, 1, 0.5);
        int act = irand(r, 0, 6);
        char attr[32];
        snprintf(attr, sizeof attr, "%s", act_names[act]);
        if (irand(r, 0, 1)) {
            h = op(tg_bias_act(t, z, b, (tg_activation)act), "bias_act", attr, z, b);
        } else {
            tg_tensor *zb = op(tg_add(t, z, b), "add", "-", z, b);
            h = op(tg_activate(t, zb, (tg_activation)act), "act", attr, zb, NULL);
        }
        if (irand(r, 0, 2) == 0) {
            tg_tensor *g = gate(t, r, h);
            switch (irand(r, 0, 2)) {
            case 0: h = op(tg_mul(t, h, g), "mul", "-", h, g); break;
            case 1: h = op(tg_sub(t, g, h), "sub", "-", g, h); break;
            default: h = op(tg_add(t, h, g), "add", "-", h, g); break;
            }
        }
        if (irand(r, 0, 3) == 0)
            h = op(tg_scale(t, h, -1.75), "scale", "-1.75", h, NULL);
        if (irand(r, 0, 4) == 0) {
            h = op(tg_transpose(t, h), "transpose", "-", h, NULL);
            h = op(tg_transpose(t, h), "transpose", "-", h, NULL);
        }
        width = out;
    }

    int64_t rows = tg_tensor_dim(h, 0), cols = tg_tensor_dim(h, 1);
    int class_axis = rows_layout ? 1 : 0, batch_axis = rows_layout ? 0 : 1;
    tg_tensor *loss;
    char attr[32];
    switch (irand(r, 0, 4)) {
    case 0: {
        tg_tensor *y = leaf(t, r, rows, cols, 1.0);
        snprintf(attr, sizeof attr, "%d", batch_axis);
        loss = op(tg_mse_half(t, h, y, batch_axis), "mse_half", attr, h, y);
        break;
    }
    case 1: {
        tg_tensor *y = leaf(t, r, rows, cols, 1.0);
        loss = op(tg_mse(t, h, y), "mse", "-", h, y);
        break;
    }
    case 2: {
        int64_t classes = rows_layout ? cols : rows, examples = rows_layout ? rows : cols;
        int32_t labels[16];
        printf("labels %lld", (long long)examples);
        for (int64_t i = 0; i < examples; i++) {
            labels[i] = (int32_t)irand(r, 0, (int)classes - 1);
            printf(" %d", labels[i]);
        }
        printf("\n");
        snprintf(attr, sizeof attr, "%d", class_axis);
        loss = op(tg_softmax_xent(t, h, labels, (size_t)examples, class_axis), "softmax_xent", attr, h, NULL);
        break;
    }
    case 3: {
        int axis = irand(r, 0, 1);
        snprintf(attr, sizeof attr, "%d", axis);
        tg_tensor *s = op(tg_sum_axis(t, h, axis), "sum_axis", attr, h, NULL);
        loss = op(tg_mean(t, s), "mean", "-", s, NULL);
        break;
    }
    default: {
        int axis = irand(r, 0, 1);
        snprintf(attr, sizeof attr, "%d", axis);
        tg_tensor *s = op(tg_mean_axis(t, h, axis), "mean_axis", attr, h, NULL);
        tg_tensor *q = op(tg_mul(t, s, s), "mul", "-", s, s);
        loss = op(tg_sum(t, q), "sum", "-", q, NULL);
        break;
    }
    }

    if (tg_backward(t, loss) != TG_OK) {
        fprintf(stderr, "refdump: seed %llu: %s\n", (unsigned long long)seed, tg_tape_error(t));
        return 1;
    }
    printf("loss %d %.17g\n", id_of(loss), tg_tensor_item(loss));
    for (int i = 0; i < n_ids; i++) {
        if (!is_leaf[i])
            continue;
        printf("grad %d", i);
        for (size_t k = 0; k < tg_tensor_size(ids[i]); k++)
            printf(" %.17g", tg_tensor_grad_get(ids[i], k));
        printf("\n");
    }
    if (print_hvp(t, loss, seed) != TG_OK) {
        fprintf(stderr, "refdump: seed %llu: hvp: %s\n", (unsigned long long)seed,
                tg_tape_error(t) ? tg_tape_error(t) : "out of memory");
        return 1;
    }
    tg_tape_free(t);
    tg_rng_free(r);
    return 0;
}
