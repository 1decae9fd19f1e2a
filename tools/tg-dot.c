/*
 * tg-dot: export the graph of a bundled example network as Graphviz DOT, and render it when
 * this build has Graphviz.
 *
 *   tg-dot seed --values --svg              # seed.dot and seed.svg
 *   tg-dot wrong-op --check -r wrong.svg    # the custom op with the broken VJP, in red
 *   tg-dot mlp --grads -o - | dot -Tpng > mlp.png
 *
 * Networks (see usage()):
 *   seed      the note's two-layer network, as examples/seed-network.c builds it
 *   mlp       an MLP classifier for 28x28 images (Fashion-MNIST's shape), examples as rows
 *   wrong-op  the seed network whose output sigmoid is a custom op with a VJP that forgets
 *             the factor (1 - y): the node-local gradient check (tg_gradcheck_nodes) finds
 *             it, and the picture shows that one node red
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tapegrad/dot.h>
#include <tapegrad/render.h>
#include <tapegrad/gradcheck.h>
#include <tapegrad/op.h>
#include <tapegrad/tapegrad.h>

#define MAX_NAMES 8

/* A recorded network and what the exporter needs to show it. */
struct network {
    const char *title;
    tg_tape *tape;
    tg_params *params;
    tg_tensor *loss;
    tg_dot_name names[MAX_NAMES]; /* display names for op outputs ("Z1", "A1", ...) */
    size_t n_names;
    int32_t *labels;
};

static void
name(struct network *net, const tg_tensor *x, const char *text)
{
    if (net->n_names < MAX_NAMES)
        net->names[net->n_names++] = (tg_dot_name){x, text};
}

/* ---- the wrong op: σ with a VJP that forgets a factor ---------------------------------- */

/* y = σ(x) = 1 / (1 + e^-x), split at 0 so that e^-x never overflows. */
static tg_status
my_sigmoid_forward(tg_node *n)
{
    tg_tensor *x = tg_node_input(n, 0), *y = tg_node_output(n);
    for (size_t i = 0; i < tg_tensor_size(y); i++) {
        double v = tg_tensor_get(x, i);
        double s = v >= 0 ? 1 / (1 + exp(-v)) : exp(v) / (1 + exp(v));
        if (tg_tensor_dtype(y) == TG_F32)
            ((float *)tg_tensor_data(y))[i] = (float)s;
        else
            ((double *)tg_tensor_data(y))[i] = s;
    }
    return TG_OK;
}

/* The deliberate bug: dσ/dx = y (1 - y), but this adds dy ⊙ y, the factor (1 - y) forgotten
 * (a mistake that still trains, slowly, which is why it needs a checker to be found). */
static tg_status
my_sigmoid_vjp(tg_node *n)
{
    tg_tensor *x = tg_node_input(n, 0), *y = tg_node_output(n);
    void *dx = tg_tensor_grad(x);
    if (!dx)
        return TG_OK;
    for (size_t i = 0; i < tg_tensor_size(y); i++) {
        double g = tg_tensor_grad_get(y, i) * tg_tensor_get(y, i); /* should be y (1 - y) */
        if (tg_tensor_dtype(x) == TG_F32)
            ((float *)dx)[i] += (float)g;
        else
            ((double *)dx)[i] += g;
    }
    return TG_OK;
}

static const tg_op my_sigmoid = {
    .name = "my_sigmoid", .n_inputs = 1, .forward = my_sigmoid_forward, .vjp = my_sigmoid_vjp};

/* ---- the networks --------------------------------------------------------------------- */

/* The note's network with examples/seed-network.c's sizes: X (3 x 64), layer1 3 -> 4 tanh,
 * layer2 4 -> 2 sigmoid, J = 1/(2m) Σ (Y - A2)². The targets are a fixed function of X so
 * that the values shown mean something. */
enum { SEED_N0 = 3, SEED_N1 = 4, SEED_N2 = 2, SEED_M = 64 };

static tg_status
build_seed(struct network *net, tg_rng *rng, bool wrong_op)
{
    tg_dense l1, l2;
    tg_status s = tg_dense_init(&l1, net->params, "layer1", SEED_N0, SEED_N1, TG_ACT_TANH,
                                TG_EXAMPLES_AS_COLUMNS, rng);
    if (s == TG_OK)
        s = tg_dense_init(&l2, net->params, "layer2", SEED_N1, SEED_N2, TG_ACT_SIGMOID,
                          TG_EXAMPLES_AS_COLUMNS, rng);
    if (s != TG_OK)
        return s;
    tg_tape *t = net->tape;
    double x[SEED_N0 * SEED_M], y[SEED_N2 * SEED_M];
    for (int j = 0; j < SEED_M; j++) {
        for (int i = 0; i < SEED_N0; i++)
            x[i * SEED_M + j] = 2 * tg_rng_uniform(rng) - 1;
        y[0 * SEED_M + j] = x[0 * SEED_M + j] * x[1 * SEED_M + j] > 0;
        y[1 * SEED_M + j] = x[2 * SEED_M + j] > 0;
    }
    tg_tensor *X = tg_matrix(t, TG_F64, SEED_N0, SEED_M, x, "X");
    tg_tensor *Y = tg_matrix(t, TG_F64, SEED_N2, SEED_M, y, "Y");
    tg_tensor *z1 = tg_add(t, tg_matmul(t, l1.weight, X), l1.bias);
    tg_tensor *a1 = tg_tanh(t, z1);
    tg_tensor *z2 = tg_add(t, tg_matmul(t, l2.weight, a1), l2.bias);
    tg_tensor *a2 = wrong_op ? tg_custom(t, &my_sigmoid, &z2, 1, NULL) : tg_sigmoid(t, z2);
    net->loss = tg_mse_half(t, a2, Y, 1);
    name(net, z1, "layer1/Z1");
    name(net, a1, "layer1/A1");
    name(net, z2, "layer2/Z2");
    name(net, a2, "layer2/A2");
    name(net, net->loss, "J");
    return tg_tape_status(t);
}

/* 784 -> 128 -> 64 -> 10, ReLU, softmax cross-entropy over a batch of 32 images (rows). */
enum { MLP_BATCH = 32, MLP_IN = 784, MLP_H1 = 128, MLP_H2 = 64, MLP_CLASSES = 10 };

static tg_status
build_mlp(struct network *net, tg_rng *rng)
{
    tg_dense fc1, fc2, fc3;
    tg_status s = tg_dense_init(&fc1, net->params, "fc1", MLP_IN, MLP_H1, TG_ACT_RELU,
                                TG_EXAMPLES_AS_ROWS, rng);
    if (s == TG_OK)
        s = tg_dense_init(&fc2, net->params, "fc2", MLP_H1, MLP_H2, TG_ACT_RELU,
                          TG_EXAMPLES_AS_ROWS, rng);
    if (s == TG_OK)
        s = tg_dense_init(&fc3, net->params, "fc3", MLP_H2, MLP_CLASSES, TG_ACT_IDENTITY,
                          TG_EXAMPLES_AS_ROWS, rng);
    if (s != TG_OK)
        return s;
    net->labels = malloc(MLP_BATCH * sizeof *net->labels);
    if (!net->labels)
        return TG_ERR_NOMEM;
    tg_tape *t = net->tape;
    tg_tensor *X = tg_tensor_new(t, TG_F32, 2, (int64_t[]){MLP_BATCH, MLP_IN}, "X");
    tg_tensor_fill_uniform(X, rng, 0, 1); /* pixel intensities */
    for (int i = 0; i < MLP_BATCH; i++)
        net->labels[i] = (int32_t)(tg_rng_u64(rng) % MLP_CLASSES);
    tg_tensor *h1 = tg_dense_forward(t, &fc1, X);
    tg_tensor *h2 = tg_dense_forward(t, &fc2, h1);
    tg_tensor *logits = tg_dense_forward(t, &fc3, h2);
    net->loss = tg_softmax_xent(t, logits, net->labels, MLP_BATCH, 1);
    name(net, h1, "fc1/H1");
    name(net, h2, "fc2/H2");
    name(net, logits, "fc3/logits");
    name(net, net->loss, "loss");
    return tg_tape_status(t);
}

/* An Elman RNN unrolled over RNN_STEPS steps, the loop a C for: h_t = tanh(x_t·W_ihᵀ + b_ih +
 * h_(t-1)·W_hhᵀ + b_hh), h_0 = 0, a prediction y_t = h_t·W_outᵀ + b_out and its MSE at every
 * step, the loss their mean. Flat, its picture has 100 copies of one step; --fold draws one. */
enum { RNN_STEPS = 100, RNN_BATCH = 4, RNN_IN = 3, RNN_HIDDEN = 8 };

static tg_status
build_rnn(struct network *net, tg_rng *rng)
{
    tg_dense ih, hh, out;
    tg_status s = tg_dense_init(&ih, net->params, "rnn/ih", RNN_IN, RNN_HIDDEN, TG_ACT_IDENTITY,
                                TG_EXAMPLES_AS_ROWS, rng);
    if (s == TG_OK)
        s = tg_dense_init(&hh, net->params, "rnn/hh", RNN_HIDDEN, RNN_HIDDEN, TG_ACT_IDENTITY,
                          TG_EXAMPLES_AS_ROWS, rng);
    if (s == TG_OK)
        s = tg_dense_init(&out, net->params, "out", RNN_HIDDEN, 1, TG_ACT_IDENTITY,
                          TG_EXAMPLES_AS_ROWS, rng);
    if (s != TG_OK)
        return s;
    tg_tape *t = net->tape;
    tg_tensor *h = tg_tensor_new(t, TG_F64, 2, (int64_t[]){RNN_BATCH, RNN_HIDDEN}, "h0");
    tg_tensor *total = tg_tensor_new(t, TG_F64, 2, (int64_t[]){1, 1}, NULL); /* Σ MSE_t, from 0 */
    for (int step = 0; step < RNN_STEPS; step++) {
        /* x_t: a noisy sine per sequence; the target its next value */
        tg_tensor *x = tg_tensor_new(t, TG_F64, 2, (int64_t[]){RNN_BATCH, RNN_IN}, NULL);
        tg_tensor *y = tg_tensor_new(t, TG_F64, 2, (int64_t[]){RNN_BATCH, 1}, NULL);
        tg_tensor_fill_uniform(x, rng, -1, 1);
        tg_tensor_fill_uniform(y, rng, -1, 1);
        h = tg_tanh(t, tg_add(t, tg_dense_forward(t, &ih, x), tg_dense_forward(t, &hh, h)));
        total = tg_add(t, total, tg_mse(t, tg_dense_forward(t, &out, h), y));
    }
    net->loss = tg_scale(t, total, 1.0 / RNN_STEPS);
    name(net, net->loss, "loss");
    return tg_tape_status(t);
}

/* nn.LSTM(3, 8) over RNN_STEPS steps through tg_lstm_layer (one input-projection matmul, then
 * a fused lstm_cell per step), a dense read-out of every step and its MSE. */
static tg_status
build_lstm(struct network *net, tg_rng *rng)
{
    tg_lstm_layer lstm;
    tg_dense out;
    tg_status s = tg_lstm_layer_init(&lstm, net->params, "lstm", RNN_IN, RNN_HIDDEN, 1, false,
                                     true, rng);
    if (s == TG_OK)
        s = tg_dense_init(&out, net->params, "out", RNN_HIDDEN, 1, TG_ACT_IDENTITY,
                          TG_EXAMPLES_AS_ROWS, rng);
    if (s != TG_OK)
        return s;
    tg_tape *t = net->tape;
    tg_tensor *x = tg_tensor_new(t, TG_F64, 3, (int64_t[]){RNN_STEPS, RNN_BATCH, RNN_IN}, "x");
    tg_tensor *y = tg_tensor_new(t, TG_F64, 2, (int64_t[]){RNN_STEPS * RNN_BATCH, 1}, "y");
    tg_tensor_fill_uniform(x, rng, -1, 1);
    tg_tensor_fill_uniform(y, rng, -1, 1);
    tg_tensor *h = tg_lstm_layer_forward(t, &lstm, x, NULL, NULL, NULL, NULL);
    h = tg_reshape(t, h, 2, (int64_t[]){RNN_STEPS * RNN_BATCH, RNN_HIDDEN});
    net->loss = tg_mse(t, tg_dense_forward(t, &out, h), y);
    name(net, net->loss, "loss");
    return tg_tape_status(t);
}

static const struct {
    const char *name, *title, *help;
} networks[] = {
    {"seed", "seed network: Z1 = W1·X + b1, A1 = tanh(Z1), Z2 = W2·A1 + b2, A2 = σ(Z2), "
             "J = 1/(2m) Σ (Y − A2)²",
     "the note's 2-layer network: 3-4-2, tanh, sigmoid, J = 1/(2m) sum (Y - A2)^2, m = 64"},
    {"mlp", "MLP classifier: 784-128-64-10, ReLU, softmax cross-entropy",
     "an MLP classifier: 784-128-64-10, examples as rows, ReLU, softmax cross-entropy"},
    {"wrong-op", "seed network with a wrong custom op: my_sigmoid's VJP forgets (1 − y)",
     "the seed network with a custom sigmoid whose VJP forgets the factor (1 - y)"},
    {"rnn", "Elman RNN, 100 steps: h_t = tanh(x_t·W_ihᵀ + b_ih + h_(t−1)·W_hhᵀ + b_hh), "
            "loss = mean_t MSE(h_t·W_outᵀ + b_out, y_t)",
     "an RNN unrolled over 100 steps, a loss at every step (try --fold)"},
    {"lstm", "nn.LSTM(3, 8) over 100 steps (tg_lstm_layer), a dense read-out of every step, MSE",
     "an LSTM layer over 100 steps: fused cells (try --fold)"},
};

/* ---- gradient check -> annotations ------------------------------------------------------ */

struct check_glue {
    tg_nodecheck_report report;
    double *errors;
    bool *failed;
    const char **notes;
    size_t n;
};

/* Node-local check of every node; the checker's verdict colours the node (its rule is
 * |a − n| <= atol + rtol·|n|, not one tolerance), its relative error is shown. */
static tg_status
run_check(const tg_tape *t, struct check_glue *g)
{
    tg_status s = tg_gradcheck_nodes(t, NULL, &g->report);
    if (s != TG_OK && s != TG_ERR_CHECK) {
        fprintf(stderr, "tg-dot: the gradient check could not run: %s\n", g->report.message);
        return s;
    }
    g->n = g->report.n_nodes;
    g->errors = calloc(g->n ? g->n : 1, sizeof *g->errors);
    g->failed = calloc(g->n ? g->n : 1, sizeof *g->failed);
    g->notes = calloc(g->n ? g->n : 1, sizeof *g->notes);
    if (!g->errors || !g->failed || !g->notes)
        return TG_ERR_NOMEM;
    for (size_t i = 0; i < g->n; i++) {
        const tg_gradcheck_node *r = &g->report.nodes[i];
        g->errors[i] = NAN;
        switch (r->verdict) {
        case TG_NODE_PASS:
            g->errors[i] = r->max_rel_err;
            break;
        case TG_NODE_FAIL:
            g->errors[i] = r->max_rel_err;
            g->failed[i] = true;
            break;
        case TG_NODE_KINK:
            g->notes[i] = "at a kink: not judged";
            break;
        case TG_NODE_SKIPPED:
            break; /* needs no gradient: nothing to say */
        case TG_NODE_ERROR:
            g->failed[i] = true;
            g->notes[i] = r->message;
            break;
        }
    }
    fprintf(stderr, "tg-dot: gradient check: %zu of %zu nodes failed\n", g->report.n_failed,
            g->n);
    if (g->report.n_failed)
        tg_nodecheck_report_print(&g->report, stderr, false);
    return TG_OK;
}

static void
check_glue_free(struct check_glue *g)
{
    tg_nodecheck_report_free(&g->report);
    free(g->errors);
    free(g->failed);
    free(g->notes);
}

/* ---- command line ------------------------------------------------------------------------ */

static void
usage(FILE *out)
{
    fprintf(out,
            "Usage: tg-dot [options] NETWORK\n"
            "Export the graph of a bundled example network as Graphviz DOT, and render it.\n"
            "\n"
            "Networks:\n");
    for (size_t i = 0; i < sizeof networks / sizeof networks[0]; i++)
        fprintf(out, "  %-10s %s\n", networks[i].name, networks[i].help);
    fprintf(out,
            "\n"
            "Options:\n"
            "  -o, --output FILE  write the DOT text to FILE (default NETWORK.dot; - for stdout)\n"
            "      --svg          also render the .dot file's name with .svg, when this build\n"
            "                     has Graphviz (otherwise say so and carry on)\n"
            "  -r, --render FILE  render FILE, the format from its extension (.svg .png .pdf);\n"
            "                     an error when this build has no Graphviz\n"
            "      --values       show each tensor's min / max / mean\n"
            "      --grads        run backward and show each gradient's norm\n"
            "      --check        run the node-local gradient check; failing ops turn red\n"
            "      --flat         no boxes around name scopes (layer1/..., fc1/...)\n"
            "      --fold         draw an unrolled loop's repeated steps once, labelled with\n"
            "                     the repeat count\n"
            "      --rankdir DIR  LR (default), TB, BT or RL\n"
            "      --title TEXT   the title (default: the network's formula)\n"
            "      --seed N       seed of the weights and data (default 1)\n"
            "  -h, --help         this text\n"
            "\n"
            "Exit status: 0 when the files were written (whatever the check found; it is\n"
            "reported on stderr), 1 on an error, 2 on a usage error.\n");
}

struct args {
    const char *network, *output, *render, *title;
    bool svg, values, grads, check, flat, fold;
    tg_dot_rankdir rankdir;
    unsigned long long seed;
};

static const char *
format_of(const char *path)
{
    const char *dot = strrchr(path, '.');
    if (dot && (!strcmp(dot, ".svg") || !strcmp(dot, ".png") || !strcmp(dot, ".pdf")))
        return dot + 1;
    return NULL;
}

/* 0: run; 1: stop with success (help); 2: usage error. */
static int
parse_args(int argc, char **argv, struct args *a)
{
    *a = (struct args){.seed = 1};
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        const char *value = i + 1 < argc ? argv[i + 1] : NULL;
        bool takes_value = true;
        if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) {
            usage(stdout);
            return 1;
        } else if (!strcmp(arg, "-o") || !strcmp(arg, "--output")) {
            a->output = value;
        } else if (!strcmp(arg, "-r") || !strcmp(arg, "--render")) {
            a->render = value;
        } else if (!strcmp(arg, "--title")) {
            a->title = value;
        } else if (!strcmp(arg, "--rankdir")) {
            static const char *const dirs[] = {"LR", "TB", "BT", "RL"};
            int found = -1;
            for (int d = 0; value && d < 4; d++)
                if (!strcmp(value, dirs[d]))
                    found = d;
            if (found < 0) {
                fprintf(stderr, "tg-dot: --rankdir takes LR, TB, BT or RL\n");
                return 2;
            }
            a->rankdir = (tg_dot_rankdir)found;
        } else if (!strcmp(arg, "--seed")) {
            char *end = NULL;
            errno = 0;
            a->seed = value ? strtoull(value, &end, 10) : 0;
            if (!value || !*value || *end || errno) {
                fprintf(stderr, "tg-dot: --seed takes a non-negative integer\n");
                return 2;
            }
        } else {
            takes_value = false;
            if (!strcmp(arg, "--svg")) {
                a->svg = true;
            } else if (!strcmp(arg, "--values")) {
                a->values = true;
            } else if (!strcmp(arg, "--grads")) {
                a->grads = true;
            } else if (!strcmp(arg, "--check")) {
                a->check = true;
            } else if (!strcmp(arg, "--flat")) {
                a->flat = true;
            } else if (!strcmp(arg, "--fold")) {
                a->fold = true;
            } else if (arg[0] == '-' && arg[1]) {
                fprintf(stderr, "tg-dot: unknown option %s (try --help)\n", arg);
                return 2;
            } else if (a->network) {
                fprintf(stderr, "tg-dot: one network at a time (%s, then %s)\n", a->network,
                        arg);
                return 2;
            } else {
                a->network = arg;
            }
        }
        if (takes_value) {
            if (!value) {
                fprintf(stderr, "tg-dot: %s needs a value\n", arg);
                return 2;
            }
            i++;
        }
    }
    if (!a->network) {
        usage(stderr);
        return 2;
    }
    if (a->render && !format_of(a->render)) { /* before anything is written */
        fprintf(stderr, "tg-dot: cannot tell the format of %s: name it .svg, .png or .pdf\n",
                a->render);
        return 2;
    }
    return 0;
}

static int
render(const tg_tape *t, const tg_dot_options *o, const char *path)
{
    const char *format = format_of(path); /* known: checked with the arguments */
    char err[512];
    if (tg_dot_render(t, o, format, path, err, sizeof err) != TG_OK) {
        fprintf(stderr, "tg-dot: %s\n", err);
        return 1;
    }
    fprintf(stderr, "tg-dot: wrote %s\n", path);
    return 0;
}

int
main(int argc, char **argv)
{
    struct args a;
    int rc = parse_args(argc, argv, &a);
    if (rc)
        return rc == 1 ? 0 : 2;
    size_t which = sizeof networks / sizeof networks[0];
    for (size_t i = 0; i < sizeof networks / sizeof networks[0]; i++)
        if (!strcmp(a.network, networks[i].name))
            which = i;
    if (which == sizeof networks / sizeof networks[0]) {
        fprintf(stderr, "tg-dot: unknown network \"%s\" (seed, mlp, wrong-op, rnn or lstm)\n", a.network);
        return 2;
    }

    bool is_mlp = !strcmp(a.network, "mlp");
    struct network net = {.title = networks[which].title, .tape = tg_tape_new(),
                          .params = tg_params_new(is_mlp ? TG_F32 : TG_F64)};
    tg_rng *rng = tg_rng_new(a.seed);
    struct check_glue glue = {0};
    char dot_path[256], svg_path[256];
    rc = 1;
    if (!net.tape || !net.params || !rng) {
        fprintf(stderr, "tg-dot: out of memory\n");
        goto done;
    }
    tg_status s = is_mlp                        ? build_mlp(&net, rng)
                  : !strcmp(a.network, "rnn") ? build_rnn(&net, rng)
                  : !strcmp(a.network, "lstm") ? build_lstm(&net, rng)
                                              : build_seed(&net, rng, which == 2);
    if (s == TG_OK && a.grads)
        s = tg_backward(net.tape, net.loss);
    if (s != TG_OK) {
        fprintf(stderr, "tg-dot: building %s failed: %s\n", a.network,
                tg_tape_error(net.tape) ? tg_tape_error(net.tape) : tg_params_error(net.params));
        goto done;
    }
    if (a.check && run_check(net.tape, &glue) != TG_OK)
        goto done;

    tg_dot_check check = {.errors = glue.errors, .count = glue.n, .notes = glue.notes,
                          .failed = glue.failed};
    tg_dot_options o = {
        .title = a.title ? a.title : net.title,
        .rankdir = a.rankdir,
        .values = a.values,
        .grads = a.grads,
        .flat = a.flat,
        .fold_loops = a.fold,
        .loss = net.loss,
        .check = a.check ? &check : NULL,
        .names = net.names,
        .n_names = net.n_names,
    };

    char err[512];
    snprintf(dot_path, sizeof dot_path, "%s.dot", a.network);
    const char *out = a.output ? a.output : dot_path;
    if (!strcmp(out, "-")) {
        s = tg_dot_write(net.tape, &o, stdout, err, sizeof err);
    } else {
        s = tg_dot_write_path(net.tape, &o, out, err, sizeof err);
        if (s == TG_OK)
            fprintf(stderr, "tg-dot: wrote %s\n", out);
    }
    if (s != TG_OK) {
        fprintf(stderr, "tg-dot: %s\n", err);
        goto done;
    }
    if (a.render && render(net.tape, &o, a.render) != 0)
        goto done;
    if (a.svg) {
        /* next to the .dot file: x.dot -> x.svg */
        size_t stem = strlen(out);
        if (stem > 4 && !strcmp(out + stem - 4, ".dot"))
            snprintf(svg_path, sizeof svg_path, "%.*s.svg", (int)(stem - 4), out);
        else
            snprintf(svg_path, sizeof svg_path, "%s.svg", a.network);
        if (!tg_dot_can_render())
            fprintf(stderr, "tg-dot: not rendering %s: built without Graphviz (the .dot file "
                            "renders with `dot -Tsvg`)\n", svg_path);
        else if (render(net.tape, &o, svg_path) != 0)
            goto done;
    }
    rc = 0;
done:
    check_glue_free(&glue);
    tg_tape_free(net.tape);
    tg_params_free(net.params);
    tg_rng_free(rng);
    free(net.labels);
    return rc;
}
