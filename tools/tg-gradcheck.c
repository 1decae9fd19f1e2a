/*
 * tg-gradcheck: sweep every built-in op (and composed MLPs) through the three gradient checks,
 * in both dtypes, over random shapes including broadcasting and the 1x1, 1xn, nx1 sizes.
 *
 *   tg-gradcheck [--seed N] [--op NAME] [--list] [--verbose] [--help]
 *
 * Each row: op, input shapes, dtype, the whole-graph check's max abs/rel error (float64
 * central differences; a float32 row is re-run in float64), the Taylor test's observed order,
 * the node-local check of every node (a float32 row checks the float32 VJPs that ran), and
 * pass/FAIL. Exit status 1 when any row fails, 2 on a usage error.
 *
 * The checked scalar is L = Σ (R ⊙ y + ½ y ⊙ y) for the op's output y and a fixed random R:
 * every output element matters, and L is never affine in the inputs, so the Taylor order is
 * always resolved (2 for a correct gradient, 1 for a wrong one).
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tapegrad/gradcheck.h>
#include <tapegrad/op.h>
#include <tapegrad/tapegrad.h>

#define MAX_IN 7

struct sweep_case {
    char label[96]; /* shapes and attributes, for the table */
    const char *op; /* built-in op name, or "mlp" */
    int n_in;
    int64_t dims[MAX_IN][2];
    int axis;
    bool ta, tb;
    double c;
    tg_activation act;
    bool rows; /* mlp: examples as rows */
    int32_t labels[8];
    double *r;  /* R for the loss, output-sized */
    size_t r_n;
    int64_t out[2];
};

static tg_tensor *
constant(tg_tape *t, tg_dtype dt, const int64_t *dims, const double *v)
{
    tg_tensor *x = tg_tensor_new(t, dt, 2, dims, "R");
    tg_tensor_write(x, v, (size_t)(dims[0] * dims[1]));
    return x;
}

/* The op (or network) under test, built with the public API. */
static tg_tensor *
apply(tg_tape *t, tg_tensor *const *in, const struct sweep_case *c)
{
    const char *op = c->op;
    if (!strcmp(op, "matmul"))
        return tg_matmul_t(t, in[0], c->ta, in[1], c->tb);
    if (!strcmp(op, "transpose"))
        return tg_transpose(t, in[0]);
    if (!strcmp(op, "add"))
        return tg_add(t, in[0], in[1]);
    if (!strcmp(op, "sub"))
        return tg_sub(t, in[0], in[1]);
    if (!strcmp(op, "mul"))
        return tg_mul(t, in[0], in[1]);
    if (!strcmp(op, "scale"))
        return tg_scale(t, in[0], c->c);
    if (!strcmp(op, "sum"))
        return c->axis < 0 ? tg_sum(t, in[0]) : tg_sum_axis(t, in[0], c->axis);
    if (!strcmp(op, "mean"))
        return c->axis < 0 ? tg_mean(t, in[0]) : tg_mean_axis(t, in[0], c->axis);
    if (!strcmp(op, "identity"))
        return tg_identity(t, in[0]);
    if (!strcmp(op, "sigmoid"))
        return tg_sigmoid(t, in[0]);
    if (!strcmp(op, "tanh"))
        return tg_tanh(t, in[0]);
    if (!strcmp(op, "relu"))
        return tg_relu(t, in[0]);
    if (!strcmp(op, "leaky_relu"))
        return tg_leaky_relu(t, in[0], c->c);
    if (!strcmp(op, "softplus"))
        return tg_softplus(t, in[0]);
    if (!strcmp(op, "gelu"))
        return tg_gelu(t, in[0]);
    if (!strcmp(op, "mse_half"))
        return tg_mse_half(t, in[0], in[1], c->axis);
    if (!strcmp(op, "mse"))
        return tg_mse(t, in[0], in[1]);
    if (!strcmp(op, "softmax_xent"))
        return tg_softmax_xent(t, in[0], c->labels, c->axis);
    if (!strcmp(op, "bias_act"))
        return tg_bias_act(t, in[0], in[1], c->act);
    if (!strcmp(op, "mlp")) {
        /* in: W1 (h x i), b1, W2 (o x h), b2, X, [Y] */
        if (!c->rows) { /* examples as columns: A = act(W X + b), loss mse_half over columns */
            tg_tensor *a1 = tg_activate(t, tg_add(t, tg_matmul(t, in[0], in[4]), in[1]), c->act);
            tg_tensor *a2 = tg_sigmoid(t, tg_add(t, tg_matmul(t, in[2], a1), in[3]));
            return tg_mse_half(t, a2, in[5], 1);
        }
        /* examples as rows: A = act(X Wᵀ + b), softmax cross-entropy over classes */
        tg_tensor *a1 = tg_activate(
            t, tg_add(t, tg_matmul_t(t, in[4], false, in[0], true), in[1]), c->act);
        tg_tensor *s = tg_add(t, tg_matmul_t(t, a1, false, in[2], true), in[3]);
        return tg_softmax_xent(t, s, c->labels, 1);
    }
    /* An op this tool has no tailored cases for (added after it): run it through tg_custom,
     * which records the same tg_op with zeroed attributes. */
    const tg_op *bop = tg_builtin_op_find(op);
    return bop ? tg_custom(t, bop, in, c->n_in, NULL) : NULL;
}

static tg_tensor *
loss_fn(tg_tape *t, tg_tensor *const *in, void *ctx)
{
    const struct sweep_case *c = ctx;
    tg_tensor *y = apply(t, in, c);
    if (!y || tg_tape_status(t) != TG_OK)
        return y;
    /* L = Σ (R + ½ y) ⊙ y, with R made in the inputs' dtype (the checker may re-run in f64) */
    tg_tensor *r = constant(t, tg_tensor_dtype(in[0]), c->out, c->r);
    return tg_sum(t, tg_mul(t, tg_add(t, r, tg_scale(t, y, 0.5)), y));
}

/* Ops with tailored cases (shapes and attributes); any other built-in op gets generic cases. */
static const char *const tailored_ops[] = {
    "matmul", "transpose", "add", "sub", "mul", "scale", "sum", "mean", "identity", "sigmoid",
    "tanh", "relu", "leaky_relu", "softplus", "gelu", "mse_half", "mse", "softmax_xent",
    "bias_act",
};

static bool
is_tailored(const char *op)
{
    for (size_t i = 0; i < sizeof tailored_ops / sizeof tailored_ops[0]; i++)
        if (!strcmp(tailored_ops[i], op))
            return true;
    return !strcmp(op, "mlp");
}

static int64_t
rnd_dim(tg_rng *r)
{
    return 2 + (int64_t)(tg_rng_u64(r) % 4); /* 2..5 */
}

/* Shapes for an op. Returns the number of cases written (at most cap). */
static int
make_cases(const char *op, tg_rng *r, struct sweep_case *out, int cap)
{
    int n = 0;
    int64_t m = rnd_dim(r), k = rnd_dim(r), p = rnd_dim(r);
#define NEW() (n < cap ? memset(&out[n], 0, sizeof out[n]), &out[n++] : NULL)
#define SET2(cs, i, a, b) ((cs)->dims[i][0] = (a), (cs)->dims[i][1] = (b))
    struct sweep_case *c;
    if (!strcmp(op, "matmul")) {
        int64_t shapes[][3] = {{m, k, p}, {1, 1, 1}, {1, k, 1}, {m, 1, p}, {1, k, p}, {m, k, 1}};
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            for (int tr = 0; tr < (s == 0 ? 4 : 1); tr++) {
                if (!(c = NEW()))
                    return n;
                c->n_in = 2;
                c->ta = tr & 1, c->tb = tr & 2;
                int64_t a0 = shapes[s][0], a1 = shapes[s][1], b1 = shapes[s][2];
                SET2(c, 0, c->ta ? a1 : a0, c->ta ? a0 : a1);
                SET2(c, 1, c->tb ? b1 : a1, c->tb ? a1 : b1);
            }
    } else if (!strcmp(op, "add") || !strcmp(op, "sub") || !strcmp(op, "mul")) {
        /* same, bias (n x 1) over columns, (1 x n) over rows, scalar, outer broadcast */
        int64_t pairs[][4] = {{m, k, m, k}, {m, k, m, 1}, {m, k, 1, k}, {m, k, 1, 1},
                              {1, 1, m, k}, {m, 1, 1, k}, {1, k, 1, k}, {m, 1, m, 1}};
        for (size_t s = 0; s < sizeof pairs / sizeof pairs[0] && (c = NEW()); s++) {
            c->n_in = 2;
            SET2(c, 0, pairs[s][0], pairs[s][1]);
            SET2(c, 1, pairs[s][2], pairs[s][3]);
        }
    } else if (!strcmp(op, "sum") || !strcmp(op, "mean")) {
        int64_t shapes[][2] = {{m, k}, {1, 1}, {1, k}, {m, 1}};
        for (size_t s = 0; s < 4; s++)
            for (int axis = -1; axis <= 1 && (c = NEW()); axis++) {
                c->n_in = 1;
                c->axis = axis;
                SET2(c, 0, shapes[s][0], shapes[s][1]);
            }
    } else if (!strcmp(op, "mse_half") || !strcmp(op, "mse")) {
        int64_t shapes[][2] = {{m, k}, {1, 1}, {1, k}, {m, 1}};
        for (size_t s = 0; s < 4; s++)
            for (int axis = 0; axis <= (op[3] == '_' ? 1 : 0) && (c = NEW()); axis++) {
                c->n_in = 2;
                c->axis = axis;
                SET2(c, 0, shapes[s][0], shapes[s][1]);
                SET2(c, 1, shapes[s][0], shapes[s][1]);
            }
    } else if (!strcmp(op, "softmax_xent")) {
        int64_t shapes[][2] = {{m, k}, {1, k}, {m, 1}, {1, 1}};
        for (size_t s = 0; s < 4; s++)
            for (int axis = 0; axis <= 1 && (c = NEW()); axis++) {
                c->n_in = 1;
                c->axis = axis;
                SET2(c, 0, shapes[s][0], shapes[s][1]);
                int64_t classes = shapes[s][axis], batch = shapes[s][1 - axis];
                for (int64_t j = 0; j < batch; j++)
                    c->labels[j] = (int32_t)(tg_rng_u64(r) % (uint64_t)classes);
            }
    } else if (!strcmp(op, "bias_act")) { /* row bias (1 x k) and column bias (m x 1) */
        for (int rows = 0; rows <= 1; rows++)
            for (int a = TG_ACT_IDENTITY; a <= TG_ACT_GELU && (c = NEW()); a++) {
                c->n_in = 2;
                c->act = (tg_activation)a;
                SET2(c, 0, m, k);
                SET2(c, 1, rows ? 1 : m, rows ? k : 1);
            }
    } else if (!strcmp(op, "mlp")) {
        static const tg_activation acts[] = {TG_ACT_TANH, TG_ACT_SIGMOID, TG_ACT_RELU,
                                             TG_ACT_LEAKY_RELU, TG_ACT_SOFTPLUS, TG_ACT_GELU};
        for (int rows = 0; rows <= 1; rows++)
            for (size_t a = 0; a < sizeof acts / sizeof acts[0] && (c = NEW()); a++) {
                int64_t i = rnd_dim(r), h = rnd_dim(r), o = rnd_dim(r), b = rnd_dim(r);
                c->act = acts[a];
                c->rows = rows;
                c->n_in = rows ? 5 : 6;
                SET2(c, 0, h, i);
                SET2(c, 2, o, h);
                if (rows) {
                    SET2(c, 1, 1, h), SET2(c, 3, 1, o), SET2(c, 4, b, i);
                    for (int64_t j = 0; j < b; j++)
                        c->labels[j] = (int32_t)(tg_rng_u64(r) % (uint64_t)o);
                } else {
                    SET2(c, 1, h, 1), SET2(c, 3, o, 1), SET2(c, 4, i, b), SET2(c, 5, o, b);
                }
            }
    } else if (!is_tailored(op)) {
        /* generic: input 0 (m x k), the others the same, a row (1 x k) or a column (m x 1) */
        const tg_op *bop = tg_builtin_op_find(op);
        int64_t others[][2] = {{m, k}, {1, k}, {m, 1}};
        for (size_t s = 0; bop && s < (bop->n_inputs > 1 ? 3u : 1u) && (c = NEW()); s++) {
            c->n_in = bop->n_inputs;
            SET2(c, 0, m, k);
            for (int j = 1; j < c->n_in; j++)
                SET2(c, j, others[s][0], others[s][1]);
        }
    } else { /* unary: transpose, scale, activations */
        int64_t shapes[][2] = {{m, k}, {1, 1}, {1, k}, {m, 1}};
        for (size_t s = 0; s < 4 && (c = NEW()); s++) {
            c->n_in = 1;
            c->c = !strcmp(op, "leaky_relu") ? 0.01 : -1.75;
            SET2(c, 0, shapes[s][0], shapes[s][1]);
        }
    }
    for (int i = 0; i < n; i++) {
        c = &out[i];
        c->op = op;
        size_t used = 0;
        for (int j = 0; j < c->n_in && used < sizeof c->label; j++)
            used += (size_t)snprintf(c->label + used, sizeof c->label - used, "%s%" PRId64
                                     "x%" PRId64, j ? "," : "", c->dims[j][0], c->dims[j][1]);
        if (used < sizeof c->label) {
            if (!strcmp(op, "matmul") && (c->ta || c->tb))
                snprintf(c->label + used, sizeof c->label - used, " %s%s", c->ta ? "A^T" : "",
                         c->tb ? "B^T" : "");
            else if (!strcmp(op, "sum") || !strcmp(op, "mean") || !strcmp(op, "mse_half") ||
                     !strcmp(op, "softmax_xent"))
                snprintf(c->label + used, sizeof c->label - used, " axis %d", c->axis);
            else if (!strcmp(op, "bias_act"))
                snprintf(c->label + used, sizeof c->label - used, " %s", tg_activation_name(c->act));
            else if (!strcmp(op, "mlp"))
                snprintf(c->label + used, sizeof c->label - used, " %s %s",
                         c->rows ? "rows" : "cols", tg_activation_name(c->act));
            else if (!is_tailored(op))
                snprintf(c->label + used, sizeof c->label - used, " generic");
        }
    }
#undef NEW
#undef SET2
    return n;
}

struct totals {
    int rows, failed;
};

static bool
run_case(struct sweep_case *c, tg_dtype dt, uint64_t seed, bool verbose, struct totals *tot)
{
    tg_rng *r = tg_rng_new(seed);
    tg_tape *holder = tg_tape_new();
    tg_tensor *in[MAX_IN];
    for (int k = 0; k < c->n_in; k++) {
        in[k] = tg_tensor_new(holder, dt, 2, c->dims[k], NULL);
        tg_tensor_fill_uniform(in[k], r, -2, 2);
    }
    /* Output shape from one float64 run, then R. */
    tg_tensor *y = apply(holder, in, c);
    bool ok = tg_tape_status(holder) == TG_OK;
    if (ok) {
        c->out[0] = tg_tensor_dim(y, 0), c->out[1] = tg_tensor_dim(y, 1);
        c->r_n = tg_tensor_size(y);
        c->r = malloc(c->r_n * sizeof *c->r);
        for (size_t i = 0; i < c->r_n; i++)
            c->r[i] = tg_rng_uniform(r) * 2 - 1;
    } else if (!is_tailored(c->op)) { /* a generic shape the op's shape rule refuses */
        tg_tape_free(holder);
        tg_rng_free(r);
        return false;
    } else {
        printf("%-13s %-34s %-4s could not build: %s\n", c->op, c->label, tg_dtype_name(dt),
               tg_tape_error(holder));
    }

    tg_gradcheck_options o = tg_gradcheck_defaults();
    o.seed = seed;
    double abs_err = 0, rel_err = 0, order = NAN;
    bool whole = false, taylor = false, nodes = false;
    size_t kinks = 0;
    tg_gradcheck_report wr = {0};
    tg_taylor_report tr = {0};
    tg_nodecheck_report nr = {0};
    if (ok) {
        tg_gradcheck(loss_fn, c, in, c->n_in, &o, &wr);
        whole = wr.pass;
        for (size_t i = 0; i < wr.n_tensors; i++) {
            abs_err = fmax(abs_err, wr.tensors[i].max_abs_err);
            rel_err = fmax(rel_err, wr.tensors[i].max_rel_err);
            kinks += wr.tensors[i].kinks;
        }
        tg_gradcheck_taylor(loss_fn, c, in, c->n_in, &o, &tr);
        taylor = tr.pass;
        order = tr.observed_order;

        tg_tape *t = tg_tape_new();
        tg_tensor *tin[MAX_IN];
        for (int k = 0; k < c->n_in; k++) {
            tin[k] = tg_tensor_new(t, dt, 2, c->dims[k], NULL);
            double *v = malloc(tg_tensor_size(in[k]) * sizeof *v);
            tg_tensor_read(in[k], v, tg_tensor_size(in[k]));
            tg_tensor_write(tin[k], v, tg_tensor_size(in[k]));
            free(v);
            tg_tensor_set_requires_grad(tin[k], true);
        }
        loss_fn(t, tin, c);
        tg_gradcheck_nodes(t, &o, &nr);
        nodes = nr.pass;
        kinks += nr.n_kinks;
        tg_tape_free(t);
    }
    bool pass = ok && whole && taylor && nodes;
    char ord[16];
    snprintf(ord, sizeof ord, isnan(order) ? "-" : "%.2f", order);
    printf("%-13s %-34s %-4s %11.2e %11.2e %7s %6s  %s%s\n", c->op, c->label, tg_dtype_name(dt),
           abs_err, rel_err, ord, !ok ? "-" : nodes ? "ok" : "FAIL", pass ? "pass" : "FAIL",
           kinks ? " (non-differentiable point, not judged)" : "");
    if (ok && (!pass || verbose)) {
        if (!whole || verbose)
            tg_gradcheck_report_print(&wr, stdout);
        if (!taylor || verbose)
            tg_taylor_report_print(&tr, stdout);
        if (!nodes || verbose)
            tg_nodecheck_report_print(&nr, stdout, verbose);
    }
    tg_gradcheck_report_free(&wr);
    tg_nodecheck_report_free(&nr);
    free(c->r);
    c->r = NULL;
    tg_tape_free(holder);
    tg_rng_free(r);
    tot->rows++;
    tot->failed += !pass;
    return true;
}

static void
usage(FILE *f)
{
    fprintf(f,
            "usage: tg-gradcheck [--seed N] [--op NAME] [--list] [--verbose] [--help]\n"
            "Checks every built-in op and composed MLPs, in float32 and float64, over random\n"
            "shapes (with broadcasting and 1x1, 1xn, nx1), with the whole-graph, Taylor and\n"
            "node-local gradient checks. Exit status 1 if any row fails.\n"
            "  --seed N    seed for shapes, values and probes (default 1)\n"
            "  --op NAME   only this op (see --list); 'mlp' for the composed networks\n"
            "  --list      list the ops and exit\n"
            "  --verbose   print every report, not only those of failing rows\n");
}

int
main(int argc, char **argv)
{
    uint64_t seed = 1;
    const char *only = NULL;
    bool verbose = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--list")) {
            for (size_t k = 0; k < tg_builtin_op_count(); k++)
                printf("%s\n", tg_builtin_op(k)->name);
            printf("mlp\n");
            return 0;
        } else if (!strcmp(argv[i], "--verbose")) {
            verbose = true;
        } else if (!strcmp(argv[i], "--seed") && i + 1 < argc) {
            char *end;
            seed = strtoull(argv[++i], &end, 10);
            if (*end || !*argv[i]) {
                fprintf(stderr, "tg-gradcheck: --seed needs a number, got '%s'\n", argv[i]);
                return 2;
            }
        } else if (!strcmp(argv[i], "--op") && i + 1 < argc) {
            only = argv[++i];
        } else {
            fprintf(stderr, "tg-gradcheck: unknown or incomplete option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (only && strcmp(only, "mlp") && !tg_builtin_op_find(only)) {
        fprintf(stderr, "tg-gradcheck: no op named '%s' (--list shows them)\n", only);
        return 2;
    }

    struct totals tot = {0};
    printf("tg-gradcheck: seed %" PRIu64 "; whole graph in float64 (eps 1e-6, pass when "
           "|a-n| <= 1e-5 + 1e-3*|n|), Taylor order, node-local VJPs\n",
           seed);
    printf("%-13s %-34s %-4s %11s %11s %7s %6s  %s\n", "op", "shapes", "dtype", "max abs err",
           "max rel err", "taylor", "nodes", "result");
    /* Every op of the library's table (so a new op is swept the day it is added), then the
     * composed networks. */
    tg_rng *r = tg_rng_new(seed);
    for (size_t s = 0; s <= tg_builtin_op_count(); s++) {
        const char *op = s < tg_builtin_op_count() ? tg_builtin_op(s)->name : "mlp";
        struct sweep_case cases[32];
        int n = make_cases(op, r, cases, 32), built = 0;
        if (only && strcmp(only, op))
            continue;
        for (int i = 0; i < n; i++)
            for (int d = 0; d < 2; d++)
                built += run_case(&cases[i], d ? TG_F32 : TG_F64,
                                  seed * 1000003u + s * 101u + (uint64_t)i, verbose, &tot);
        if (!built) {
            printf("%-13s no case could be built (add tailored cases to tools/tg-gradcheck.c): "
                   "FAIL\n", op);
            tot.failed++;
        }
    }
    tg_rng_free(r);
    printf("%d rows, %d failed\n", tot.rows, tot.failed);
    return tot.failed ? 1 : 0;
}
