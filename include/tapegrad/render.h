/**
 * @file
 * Rendering an exported graph to SVG, PNG or PDF through Graphviz's libraries (libgvc,
 * libcgraph). This is libtapegrad-render, a library of its own beside libtapegrad, so that
 * programs that only export DOT (and static links, for which Debian ships no static Graphviz)
 * never link Graphviz:
 *
 *     cc prog.c $(pkg-config --cflags --libs tapegrad-render)      # brings tapegrad too
 *
 *     tg_dot_options o = {.values = true, .grads = true};
 *     char err[256];
 *     if (tg_dot_render(tape, &o, "svg", "net.svg", err, sizeof err) != TG_OK)
 *         fprintf(stderr, "%s\n", err);
 *
 * The library exists whether or not Graphviz was found at build time, so a program links
 * either way; without Graphviz, tg_dot_can_render() is false and tg_dot_render says so.
 */
#ifndef TAPEGRAD_RENDER_H
#define TAPEGRAD_RENDER_H

#include <tapegrad/dot.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Lay out with Graphviz's "dot" engine and render to path. format: "svg", "png" or "pdf".
 * What is rendered is exactly the text tg_dot_write produces for the same options.
 * Built without Graphviz this returns TG_ERR_UNSUPPORTED with "built without Graphviz".
 * TG_ERR_ARG for an unknown format, TG_ERR_UNSUPPORTED when this Graphviz has no renderer
 * for it, TG_ERR_IO when path cannot be written (a partly written picture is removed).
 * Not thread-safe: Graphviz's own state is global. */
TG_API tg_status tg_dot_render(const tg_tape *t, const tg_dot_options *opt, const char *format,
                               const char *path, char *err, size_t errsize);
/** True when this build of libtapegrad-render can render (it found Graphviz at build time). */
TG_API bool tg_dot_can_render(void);

#ifdef __cplusplus
}
#endif

#endif /* TAPEGRAD_RENDER_H */
