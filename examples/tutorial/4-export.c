/* Tutorial step 4: export a training step's graph as Graphviz DOT, and render it to SVG.
 *
 * usage: 4-export [DIR]   writes DIR/moons.dot (and DIR/moons.svg when Graphviz is built in) */
#include <stdio.h>
#include <tapegrad/dot.h>
#include <tapegrad/render.h>
#include <tapegrad/tapegrad.h>

#include "moons.h"

int
main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : ".";
    char dot_path[4096], svg_path[4096], err[512];
    snprintf(dot_path, sizeof dot_path, "%s/moons.dot", dir);
    snprintf(svg_path, sizeof svg_path, "%s/moons.svg", dir);

    enum { N = 32 };
    float x[N * 2];
    int32_t y[N];
    tg_rng *rng = tg_rng_new(1);
    make_moons(rng, N, x, y);
    struct model m;
    if (model_init(&m, rng) != TG_OK)
        return 1;

    /* Record one step: forward and backward, so the picture can show gradient norms too. */
    tg_tape *tape = tg_tape_new();
    tg_tensor *X = tg_matrix(tape, TG_F32, N, 2, x, "X");
    tg_tensor *loss = tg_cross_entropy(tape, model_forward(tape, &m.fc1, &m.fc2, X), y, N, 1,
                                       NULL, 0.0);
    tg_backward(tape, loss);

    /* Parameters named "fc1/W" are grouped in a box "fc1"; values shows each tensor's
     * min / max / mean, grads each gradient's norm. */
    tg_dot_options o = {.title = "two moons, one step", .values = true, .grads = true};
    int status = 0;
    if (tg_dot_write_path(tape, &o, dot_path, err, sizeof err) != TG_OK) {
        fprintf(stderr, "%s\n", err);
        status = 1;
    } else {
        printf("wrote %s (%zu ops)\n", dot_path, tg_tape_node_count(tape));
    }
    if (status == 0 && tg_dot_can_render()) { /* libtapegrad-render found Graphviz */
        if (tg_dot_render(tape, &o, "svg", svg_path, err, sizeof err) != TG_OK) {
            fprintf(stderr, "%s\n", err);
            status = 1;
        } else {
            printf("rendered %s\n", svg_path);
        }
    } else if (status == 0) {
        printf("built without Graphviz: `dot -Tsvg %s` renders the file\n", dot_path);
    }
    tg_tape_free(tape);
    tg_params_free(m.params);
    tg_rng_free(rng);
    return status;
}
