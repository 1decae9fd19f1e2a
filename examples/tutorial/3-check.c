/* Tutorial step 3: check the network's gradients three ways, in float64. */
#include <stdio.h>
#include <tapegrad/gradcheck.h>
#include <tapegrad/tapegrad.h>

#include "moons.h"

struct check_ctx {
    const struct model *m;
    const int32_t *labels;
};

/* The loss as a function of the checked tensors, in = {fc1/W, fc1/b, fc2/W, fc2/b, X}. The
 * checker re-runs it in float64 on float64 copies of in[], so the layers are copies whose
 * tensors are in[] (the model's own float32 parameters would not be the ones perturbed). */
static tg_tensor *
loss_fn(tg_tape *t, tg_tensor *const *in, void *ctx)
{
    const struct check_ctx *c = ctx;
    tg_dense fc1 = c->m->fc1, fc2 = c->m->fc2;
    fc1.weight = in[0], fc1.bias = in[1];
    fc2.weight = in[2], fc2.bias = in[3];
    tg_tensor *logits = model_forward(t, &fc1, &fc2, in[4]);
    return tg_cross_entropy(t, logits, c->labels, (size_t)tg_tensor_dim(in[4], 0), 1, NULL, 0.0);
}

int
main(void)
{
    enum { N = 16 }; /* a small batch: whole-graph differences cost 2 runs per element */
    float x[N * 2];
    int32_t y[N];
    tg_rng *rng = tg_rng_new(1);
    make_moons(rng, N, x, y);
    struct model m;
    if (model_init(&m, rng) != TG_OK)
        return 1;

    tg_tape *tape = tg_tape_new();
    tg_tensor *X = tg_matrix(tape, TG_F32, N, 2, x, "X");
    tg_tensor *in[] = {m.fc1.weight, m.fc1.bias, m.fc2.weight, m.fc2.bias, X};
    struct check_ctx ctx = {&m, y};
    tg_gradcheck_options opt = tg_gradcheck_defaults();
    opt.wrt = (const bool[]){true, true, true, true, false}; /* X is data */

    /* 1. Whole graph: the engine's gradient against central differences, element by element. */
    tg_gradcheck_report whole;
    tg_gradcheck(loss_fn, &ctx, in, 5, &opt, &whole);
    tg_gradcheck_report_print(&whole, stdout, true);

    /* 2. Taylor: |f(x + h·d) - f(x) - h<grad, d>| must shrink like h² (no tolerance). */
    tg_taylor_report taylor;
    tg_gradcheck_taylor(loss_fn, &ctx, in, 5, &opt, &taylor);
    tg_taylor_report_print(&taylor, stdout, false);

    /* 3. Node-local, on a recorded tape: every node's VJP against its own forward; a wrong
     *    rule is named by node. The model's own layers are fine here: nothing is re-run. */
    tg_tensor *loss = tg_cross_entropy(tape, model_forward(tape, &m.fc1, &m.fc2, X), y, N, 1,
                                       NULL, 0.0);
    tg_backward(tape, loss);
    tg_nodecheck_report nodes;
    tg_gradcheck_nodes(tape, &opt, &nodes);
    tg_nodecheck_report_print(&nodes, stdout, false);

    int ok = whole.pass && taylor.pass && nodes.pass;
    printf("%s\n", ok ? "all three checks pass" : "A CHECK FAILED");
    tg_gradcheck_report_free(&whole);
    tg_taylor_report_free(&taylor);
    tg_nodecheck_report_free(&nodes);
    tg_tape_free(tape);
    tg_params_free(m.params);
    tg_rng_free(rng);
    return ok ? 0 : 1;
}
