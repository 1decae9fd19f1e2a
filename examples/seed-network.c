/*
 * The seed network: the two-layer network of the hand-written backprop note
 * (docs/backprop-note.md), trained with tapegrad, and the note checked.
 *
 *   examples as columns:  X (n0 x m),  Z1 = W1·X + b1,  A1 = tanh(Z1)       (n1 x m)
 *                                      Z2 = W2·A1 + b2, A2 = sigmoid(Z2)    (n2 x m)
 *   the note's loss:      J = 1/(2m) Σ (Y - A2)²
 *
 * 1. Train with SGD on a small generated data set, printing the loss as it falls.
 * 2. For every parameter, compare three gradients: the note's equations written out by hand
 *    (corrected), the engine's backward, and central finite differences.
 * 3. Run the note's formulas exactly as written and report which steps disagree with finite
 *    differences of the same quantity.
 *
 * 4. Write the recorded graph as Graphviz DOT (and SVG when built with Graphviz).
 *
 * Usage: seed-network [--steps N] [--lr ETA] [--seed S] [--graph PATH.dot | --no-graph] [--quiet]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tapegrad/dot.h>
#include <tapegrad/render.h>
#include <tapegrad/tapegrad.h>

enum { N0 = 3, N1 = 4, N2 = 2, M = 64 };

struct net {
    tg_params *params;
    tg_dense layer1, layer2;
    double x[N0 * M], y[N2 * M];
};

/* ---- small dense-matrix helpers for the hand-written equations (row-major) ---- */

/* C (r x c) = op(A) · op(B), op = transpose when the flag is set; k is the inner size. */
static void
matmul(const double *a, int ta, const double *b, int tb, double *c, int r, int k, int cols,
       int lda, int ldb)
{
    for (int i = 0; i < r; i++)
        for (int j = 0; j < cols; j++) {
            double s = 0;
            for (int p = 0; p < k; p++)
                s += (ta ? a[p * lda + i] : a[i * lda + p]) * (tb ? b[j * ldb + p] : b[p * ldb + j]);
            c[i * cols + j] = s;
        }
}

/* Largest |a - b| relative to the largest entry of either: a scale-aware relative error. */
static double
rel_diff(const double *a, const double *b, size_t n)
{
    double diff = 0, scale = 0;
    for (size_t i = 0; i < n; i++) {
        diff = fmax(diff, fabs(a[i] - b[i]));
        scale = fmax(scale, fmax(fabs(a[i]), fabs(b[i])));
    }
    return scale > 0 ? diff / scale : diff;
}

/* ---- the network through the engine ---- */

struct forward {
    double z1[N1 * M], a1[N1 * M], z2[N2 * M], a2[N2 * M];
    double loss;
};

/* Records the forward pass on t; fills f (if not NULL); runs backward when asked. */
static double
run(struct net *n, tg_tape *t, struct forward *f, int backward)
{
    tg_tape_reset(t);
    tg_tensor *x = tg_tensor_wrap(t, TG_F64, 2, (int64_t[]){N0, M}, n->x, "X");
    tg_tensor *y = tg_tensor_wrap(t, TG_F64, 2, (int64_t[]){N2, M}, n->y, "Y");
    tg_tensor *z1 = tg_add(t, tg_matmul(t, n->layer1.weight, x), n->layer1.bias);
    tg_tensor *a1 = tg_tanh(t, z1);
    tg_tensor *z2 = tg_add(t, tg_matmul(t, n->layer2.weight, a1), n->layer2.bias);
    tg_tensor *a2 = tg_sigmoid(t, z2);
    tg_tensor *loss = tg_mse_half(t, a2, y, 1);
    if (backward)
        tg_backward(t, loss);
    if (tg_tape_error(t)) {
        fprintf(stderr, "seed-network: %s\n", tg_tape_error(t));
        return NAN;
    }
    if (f) {
        tg_tensor_read(z1, f->z1, N1 * M);
        tg_tensor_read(a1, f->a1, N1 * M);
        tg_tensor_read(z2, f->z2, N2 * M);
        tg_tensor_read(a2, f->a2, N2 * M);
        f->loss = tg_tensor_item(loss);
    }
    return tg_tensor_item(loss);
}

/* J as a function of an intermediate, for finite differences of that intermediate:
 * the rest of the network downstream of it, in plain C. */
static double
loss_from_a2(const struct net *n, const double *a2)
{
    double s = 0;
    for (int i = 0; i < N2 * M; i++)
        s += (n->y[i] - a2[i]) * (n->y[i] - a2[i]);
    return s / (2.0 * M);
}

static double
loss_from_z2(const struct net *n, const double *z2)
{
    double a2[N2 * M];
    for (int i = 0; i < N2 * M; i++)
        a2[i] = 1 / (1 + exp(-z2[i]));
    return loss_from_a2(n, a2);
}

static double
loss_from_a1(const struct net *n, const double *a1)
{
    const double *w2 = tg_tensor_data(n->layer2.weight), *b2 = tg_tensor_data(n->layer2.bias);
    double z2[N2 * M];
    matmul(w2, 0, a1, 0, z2, N2, N1, M, N1, M);
    for (int i = 0; i < N2; i++)
        for (int j = 0; j < M; j++)
            z2[i * M + j] += b2[i];
    return loss_from_z2(n, z2);
}

/* Central differences of f at every element of v (v is restored). h = 1e-6: truncation ~h²
 * and round-off ~1e-16/h, both far below the 1e-6 we compare at. */
static void
fd_of(const struct net *n, double (*f)(const struct net *, const double *), double *v,
      size_t len, double *out)
{
    const double h = 1e-6;
    for (size_t i = 0; i < len; i++) {
        double v0 = v[i];
        v[i] = v0 + h;
        double fp = f(n, v);
        v[i] = v0 - h;
        double fm = f(n, v);
        v[i] = v0;
        out[i] = (fp - fm) / (2 * h);
    }
}

/* Finite differences of J with respect to every parameter value, through the engine. */
static void
fd_params(struct net *n, tg_tape *t, double *out)
{
    double *w = tg_params_values(n->params);
    const double h = 1e-6;
    for (size_t i = 0; i < tg_params_size(n->params); i++) {
        double w0 = w[i];
        w[i] = w0 + h;
        double fp = run(n, t, NULL, 0);
        w[i] = w0 - h;
        double fm = run(n, t, NULL, 0);
        w[i] = w0;
        out[i] = (fp - fm) / (2 * h);
    }
}

/* The note's equations, corrected (docs/backprop-note.md), written out by hand. Output in
 * the parameter buffer's layout: W1, b1, W2, b2. */
static void
hand_gradients(struct net *n, const struct forward *f, double *g)
{
    const double *w2 = tg_tensor_data(n->layer2.weight);
    double da2[N2 * M], dz2[N2 * M], da1[N1 * M], dz1[N1 * M];
    double *dw1 = g, *db1 = g + N1 * N0, *dw2 = db1 + N1, *db2 = dw2 + N2 * N1;
    for (int i = 0; i < N2 * M; i++) {
        da2[i] = (f->a2[i] - n->y[i]) / M;                /* 1: dA2 = (A2 - Y)/m      */
        dz2[i] = da2[i] * f->a2[i] * (1 - f->a2[i]);      /* 2: dZ2 = dA2 ⊙ σ'(Z2)    */
    }
    matmul(dz2, 0, f->a1, 1, dw2, N2, M, N1, M, M);       /* 3: dW2 = dZ2·A1ᵀ         */
    for (int i = 0; i < N2; i++) {                        /* 4: db2 = Σ_columns dZ2   */
        db2[i] = 0;
        for (int j = 0; j < M; j++)
            db2[i] += dz2[i * M + j];
    }
    matmul(w2, 1, dz2, 0, da1, N1, N2, M, N1, M);         /* 5: dA1 = W2ᵀ·dZ2         */
    for (int i = 0; i < N1 * M; i++)
        dz1[i] = da1[i] * (1 - f->a1[i] * f->a1[i]);      /* 2: dZ1 = dA1 ⊙ tanh'(Z1) */
    matmul(dz1, 0, n->x, 1, dw1, N1, M, N0, M, M);        /* 3: dW1 = dZ1·Xᵀ          */
    for (int i = 0; i < N1; i++) {                        /* 4: db1 = Σ_columns dZ1   */
        db1[i] = 0;
        for (int j = 0; j < M; j++)
            db1[i] += dz1[i * M + j];
    }
}

static void
print_verdict(const char *step, const char *note, const char *why, double err, int ok)
{
    printf("  %-3s %-28s %-10s %s\n", step, note, ok ? "agrees" : "DISAGREES", why);
    if (!isnan(err))
        printf("      %-28s max relative difference from finite differences: %.2e\n", "", err);
}

/* Runs the note's formulas exactly as written, each step fed with the correct upstream
 * quantity, and compares the result with finite differences of the same quantity. Returns
 * how many steps disagree. */
static int
check_note_as_written(struct net *n, const struct forward *f)
{
    int wrong = 0;
    double fd_a2[N2 * M], fd_z2[N2 * M], fd_a1[N1 * M];
    double a2[N2 * M], z2[N2 * M], a1[N1 * M];
    memcpy(a2, f->a2, sizeof a2);
    memcpy(z2, f->z2, sizeof z2);
    memcpy(a1, f->a1, sizeof a1);
    fd_of(n, loss_from_a2, a2, N2 * M, fd_a2);
    fd_of(n, loss_from_z2, z2, N2 * M, fd_z2);
    fd_of(n, loss_from_a1, a1, N1 * M, fd_a1);

    printf("\nThe note's formulas as written, each fed the correct upstream gradient:\n");

    /* Step 1: ΔA^L = (1/m) Σ (y - a^L) = mean(y - a^L), "a scalar". */
    double mean = 0;
    for (int i = 0; i < N2 * M; i++)
        mean += (n->y[i] - f->a2[i]) / M;
    double note1[N2 * M];
    for (int i = 0; i < N2 * M; i++)
        note1[i] = mean; /* the scalar, broadcast to every entry */
    double e1 = rel_diff(note1, fd_a2, N2 * M);
    int ok1 = e1 < 1e-6;
    wrong += !ok1;
    print_verdict("1", "dA2 = mean(Y - A2)", "sign flipped; a scalar where each entry differs "
                  "(correct: (A2 - Y)/m)", e1, ok1);

    /* Step 2: ΔZ^L = ΔA^L · a^(L-1): (n2 x m) times (n1 x m) does not even conform. */
    int ok2 = 0;
    if (N1 == N2) {
        double note2[N2 * M];
        for (int i = 0; i < N2 * M; i++)
            note2[i] = fd_a2[i] * f->a1[i];
        ok2 = rel_diff(note2, fd_z2, N2 * M) < 1e-6;
    }
    wrong += !ok2;
    char why2[160];
    snprintf(why2, sizeof why2,
             "dA2 is (%dx%d), A1 is (%dx%d): uses the previous layer's output where g'(Z2) "
             "belongs (correct: dA2 ⊙ A2(1 - A2))", N2, M, N1, M);
    print_verdict("2", "dZ2 = dA2 * A1", why2, NAN, ok2);

    /* Step 4: Δb^L has shape (n^L, m): dZ itself, not summed over the batch. */
    double db_true[N2], db_note_col0[N2];
    for (int i = 0; i < N2; i++) {
        db_true[i] = 0;
        for (int j = 0; j < M; j++)
            db_true[i] += fd_z2[i * M + j];
        db_note_col0[i] = fd_z2[i * M]; /* one column of the note's (n2 x m) "db" */
    }
    double e4 = rel_diff(db_note_col0, db_true, N2);
    int ok4 = e4 < 1e-6;
    wrong += !ok4;
    char why4[160];
    snprintf(why4, sizeof why4,
             "shape (%dx%d) instead of (%dx1): the bias is shared by all %d examples, its "
             "gradient sums dZ2 over the columns", N2, M, N2, M);
    print_verdict("4", "db2 = dZ2, shape (n2 x m)", why4, e4, ok4);

    /* Step 5: ΔA^(L-1) = ΔZ^L · w^(L-1): (n2 x m)·(n2 x n1) does not conform; the correct
     * product is W2ᵀ·dZ2. Evaluate the note's operands transposed as the only reading that
     * conforms, dZ2ᵀ·W2 (m x n1), and compare with dA1ᵀ. */
    const double *w2 = tg_tensor_data(n->layer2.weight);
    double note5[M * N1], fd_a1_t[M * N1];
    matmul(fd_z2, 1, w2, 0, note5, M, N2, N1, M, N1);
    for (int i = 0; i < N1; i++)
        for (int j = 0; j < M; j++)
            fd_a1_t[j * N1 + i] = fd_a1[i * M + j];
    double e5 = rel_diff(note5, fd_a1_t, M * N1);
    /* As written, (n2 x m)·(n2 x n1) is undefined, so the step is wrong even where the
     * transposed reading happens to give the right numbers. */
    int ok5 = 0;
    wrong += !ok5;
    char why5[200];
    snprintf(why5, sizeof why5,
             "(%dx%d)·(%dx%d) does not conform; transpose missing, operands swapped, layer index "
             "shifted (correct: W2ᵀ·dZ2; the transposed reading dZ2ᵀ·W2 = dA1ᵀ differs by %.1e)",
             N2, M, N2, N1, e5);
    print_verdict("5", "dA1 = dZ2 * W1", why5, NAN, ok5);

    /* Step 3 is only named in the note's dictionary; its standard form is right. */
    printf("  %-3s %-28s %-10s %s\n", "3", "dW2 (only named)", "-",
           "not written in the note; dW = dZ·Aᵀ is used above and agrees");
    /* "J -> (1, m) => J' -> dJ/dm": J is one number; nothing is differentiated by m. */
    printf("  %-3s %-28s %-10s %s\n", "-", "J -> (1, m), J' = dJ/dm", "DISAGREES",
           "J is a scalar (the engine's loss is 1x1); m is a count, not a variable");
    return wrong + 1;
}

static double
parse_double(const char *s, const char *flag)
{
    char *end;
    double v = strtod(s, &end);
    if (*end || end == s) {
        fprintf(stderr, "seed-network: %s expects a number, got \"%s\"\n", flag, s);
        exit(2);
    }
    return v;
}

int
main(int argc, char **argv)
{
    long steps = 3000;
    double lr = 2.0;
    unsigned long long seed = 1;
    int quiet = 0;
    const char *graph = "seed-network.dot";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--steps") && i + 1 < argc)
            steps = (long)parse_double(argv[++i], "--steps");
        else if (!strcmp(argv[i], "--lr") && i + 1 < argc)
            lr = parse_double(argv[++i], "--lr");
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc)
            seed = (unsigned long long)parse_double(argv[++i], "--seed");
        else if (!strcmp(argv[i], "--quiet"))
            quiet = 1;
        else if (!strcmp(argv[i], "--graph") && i + 1 < argc)
            graph = argv[++i];
        else if (!strcmp(argv[i], "--no-graph"))
            graph = NULL;
        else {
            fprintf(stderr,
                    "usage: %s [--steps N] [--lr ETA] [--seed S] [--graph PATH.dot | --no-graph] "
                    "[--quiet]\n",
                    argv[0]);
            return 2;
        }
    }

    /* Data: X uniform in [-1, 1]³, targets in (0, 1) from a smooth function of X. */
    static struct net n;
    tg_rng *rng = tg_rng_new(seed);
    for (int i = 0; i < N0 * M; i++)
        n.x[i] = 2 * tg_rng_uniform(rng) - 1;
    for (int j = 0; j < M; j++) {
        double x0 = n.x[j], x1 = n.x[M + j], x2 = n.x[2 * M + j];
        n.y[j] = 0.5 + 0.4 * sin(2 * x0) * cos(x1);
        n.y[M + j] = 1 / (1 + exp(-3 * (x1 * x2 - 0.2 * x0)));
    }

    /* The model: two dense layers, examples as columns, as in the note. */
    n.params = tg_params_new(TG_F64);
    if (tg_dense_init(&n.layer1, n.params, "layer1", N0, N1, TG_ACT_TANH,
                      TG_EXAMPLES_AS_COLUMNS, rng) != TG_OK ||
        tg_dense_init(&n.layer2, n.params, "layer2", N1, N2, TG_ACT_SIGMOID,
                      TG_EXAMPLES_AS_COLUMNS, rng) != TG_OK) {
        fprintf(stderr, "seed-network: %s\n", tg_params_error(n.params));
        return 1;
    }
    const char *err;
    tg_sgd *sgd = tg_sgd_new(n.params, &(tg_sgd_options){.lr = lr}, &err);
    tg_tape *tape = tg_tape_new();
    if (!sgd || !tape) {
        fprintf(stderr, "seed-network: %s\n", sgd ? "out of memory" : err);
        return 1;
    }

    printf("Seed network %d-%d-%d (tanh, sigmoid), J = 1/(2m) Σ (Y - A2)², m = %d, "
           "SGD η = %g\n", N0, N1, N2, M, lr);
    double first = NAN, loss = NAN;
    for (long step = 0; step <= steps; step++) {
        loss = run(&n, tape, NULL, 1);
        if (isnan(loss))
            return 1;
        if (step == 0)
            first = loss;
        if (!quiet && (step % (steps / 10 > 0 ? steps / 10 : 1) == 0))
            printf("  step %5ld   J = %.6f\n", step, loss);
        if (step < steps)
            tg_sgd_step(sgd);
    }
    printf("loss %.6f -> %.6f\n", first, loss);

    /* Three gradients at the trained parameters. */
    struct forward f;
    tg_params_zero_grad(n.params);
    run(&n, tape, &f, 1);
    size_t np = tg_params_size(n.params);
    double *autodiff = tg_params_grads(n.params);
    double *hand = malloc(np * sizeof *hand), *fd = malloc(np * sizeof *fd);
    hand_gradients(&n, &f, hand);
    fd_params(&n, tape, fd);

    printf("\nGradients at the trained parameters (max relative difference, relative to the "
           "largest entry):\n");
    printf("  %-10s %-7s %18s %18s %18s\n", "parameter", "shape", "hand vs autodiff",
           "hand vs FD", "autodiff vs FD");
    double worst = 0;
    for (size_t i = 0, off = 0; i < tg_params_count(n.params); i++) {
        tg_tensor *p = tg_params_get(n.params, i);
        size_t len = tg_tensor_size(p);
        char shape[32];
        double d1 = rel_diff(hand + off, autodiff + off, len);
        double d2 = rel_diff(hand + off, fd + off, len);
        double d3 = rel_diff(autodiff + off, fd + off, len);
        worst = fmax(worst, fmax(d1, fmax(d2, d3)));
        printf("  %-10s %-7s %18.2e %18.2e %18.2e\n", tg_tensor_name(p),
               tg_tensor_shape_string(p, shape, sizeof shape), d1, d2, d3);
        off += len;
    }
    printf("all three agree to %.1e (%s 1e-6)\n", worst, worst < 1e-6 ? "within" : "NOT within");

    int wrong = check_note_as_written(&n, &f);
    printf("\n%d of the note's steps disagree with finite differences (see "
           "docs/backprop-note.md for the corrected equations).\n", wrong);

    if (graph) {
        /* The graph of one training step, with value summaries and gradient norms. */
        tg_params_zero_grad(n.params);
        run(&n, tape, NULL, 1);
        tg_dot_options opt = {.title = "seed network: J = 1/(2m) Σ (Y - A2)²", .values = true,
                              .grads = true};
        char msg[256];
        if (tg_dot_write_path(tape, &opt, graph, msg, sizeof msg) != TG_OK) {
            fprintf(stderr, "seed-network: %s\n", msg);
            return 1;
        }
        printf("\nGraph written to %s", graph);
        size_t len = strlen(graph);
        if (tg_dot_can_render() && len > 4 && !strcmp(graph + len - 4, ".dot")) {
            char svg[4096];
            snprintf(svg, sizeof svg, "%.*s.svg", (int)(len - 4), graph);
            if (tg_dot_render(tape, &opt, "svg", svg, msg, sizeof msg) == TG_OK)
                printf(" and rendered to %s", svg);
            else
                printf(" (rendering failed: %s)", msg);
        }
        printf(".\n");
    }

    free(hand);
    free(fd);
    tg_tape_free(tape);
    tg_sgd_free(sgd);
    tg_params_free(n.params);
    tg_rng_free(rng);
    return worst < 1e-6 && loss < first ? 0 : 1;
}
