/*
 * A custom op in C, used in a graph and checked three ways.
 *
 *   swish(x) = x σ(x),   swish'(x) = σ(x) (1 + x (1 − σ(x)))
 *
 * Run `custom-op` for the checks of the correct rule, `custom-op --buggy` for a VJP that
 * forgets the second term: every check fails and the node-local check names the swish node.
 */
#include <stdio.h>
#include <string.h>
#include <tgmath.h>

#include <tapegrad/gradcheck.h>

static bool buggy;

/* One loop body for both dtypes: the checker may re-run the graph in float64. */
#define FOR_DTYPE(x, T, ...)                                                                    \
    do {                                                                                       \
        if (tg_tensor_dtype(x) == TG_F32) {                                                    \
            typedef float T;                                                                   \
            __VA_ARGS__                                                                        \
        } else {                                                                               \
            typedef double T;                                                                  \
            __VA_ARGS__                                                                        \
        }                                                                                      \
    } while (0)

static tg_status
swish_forward(tg_node *n)
{
    tg_tensor *x = tg_node_input(n, 0), *y = tg_node_output(n);
    FOR_DTYPE(x, T, {
        const T *xv = tg_tensor_data(x);
        T *yv = tg_tensor_data(y);
        for (size_t i = 0; i < tg_tensor_size(x); i++)
            yv[i] = xv[i] / (1 + exp(-xv[i]));
    });
    return TG_OK;
}

/* dx += dy ⊙ σ(x) (1 + x (1 − σ(x)));  the buggy rule keeps only σ(x) */
static tg_status
swish_vjp(tg_node *n)
{
    tg_tensor *x = tg_node_input(n, 0), *y = tg_node_output(n);
    FOR_DTYPE(x, T, {
        const T *xv = tg_tensor_data(x), *dy = tg_tensor_grad(y);
        T *dx = tg_tensor_grad(x);
        for (size_t i = 0; dx && i < tg_tensor_size(x); i++) {
            T s = 1 / (1 + exp(-xv[i]));
            dx[i] += dy[i] * (buggy ? s : s * (1 + xv[i] * (1 - s)));
        }
    });
    return TG_OK;
}

/* shape rule NULL: the output has input 0's shape; math/vjp_math feed graph docs (optional) */
static const tg_op swish = {
    .name = "swish",
    .n_inputs = 1,
    .forward = swish_forward,
    .vjp = swish_vjp,
    .math = "y = x σ(x)",
    .vjp_math = "dx += dy ⊙ (σ(x) + x σ(x)(1 - σ(x)))",
};

/* loss = mse(W2 · swish(W1 · X), Y), a scalar function of W1, W2, X, Y */
static tg_tensor *
model(tg_tape *t, tg_tensor *const *in, void *ctx)
{
    tg_tensor *h = tg_matmul(t, in[0], in[2]);
    tg_tensor *a = tg_custom(t, &swish, &h, 1, NULL);
    return tg_mse(t, tg_matmul(t, in[1], a), in[3]);
}

int
main(int argc, char **argv)
{
    buggy = argc > 1 && strcmp(argv[1], "--buggy") == 0;
    tg_tape *t = tg_tape_new();
    tg_rng *rng = tg_rng_new(42);
    tg_tensor *in[4] = {
        tg_tensor_new(t, TG_F32, 2, (int64_t[]){4, 3}, "W1"),
        tg_tensor_new(t, TG_F32, 2, (int64_t[]){2, 4}, "W2"),
        tg_tensor_new(t, TG_F32, 2, (int64_t[]){3, 5}, "X"),
        tg_tensor_new(t, TG_F32, 2, (int64_t[]){2, 5}, "Y"),
    };
    for (int k = 0; k < 4; k++)
        tg_tensor_fill_normal(in[k], rng, 0, 1);
    tg_tensor_set_requires_grad(in[0], true);
    tg_tensor_set_requires_grad(in[1], true);

    /* 1. Whole graph (re-run in float64) with respect to the weights; X and Y are data. */
    tg_gradcheck_options opt = tg_gradcheck_defaults();
    opt.wrt = (const bool[]){true, true, false, false};
    tg_gradcheck_report report;
    tg_gradcheck(model, NULL, in, 4, &opt, &report);
    tg_gradcheck_report_print(&report, stdout, true);

    /* 2. Taylor test: the remainder must shrink like h². */
    tg_taylor_report taylor;
    tg_gradcheck_taylor(model, NULL, in, 4, &opt, &taylor);
    printf("%s\n", taylor.message);

    /* 3. Node-local: record the float32 graph once and check every node's VJP alone. */
    tg_tensor *loss = model(t, in, NULL);
    tg_backward(t, loss);
    tg_nodecheck_report nodes;
    tg_gradcheck_nodes(t, &opt, &nodes);
    tg_nodecheck_report_print(&nodes, stdout, false);

    int status = report.pass && taylor.pass && nodes.pass ? 0 : 1;
    tg_gradcheck_report_free(&report);
    tg_nodecheck_report_free(&nodes);
    tg_rng_free(rng);
    tg_tape_free(t);
    return buggy ? !status : status; /* --buggy succeeds when the checks catch the bug */
}
