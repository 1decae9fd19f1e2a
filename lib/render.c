/*
 * libtapegrad-render: rendering an exported graph through Graphviz's libraries (libgvc,
 * libcgraph). A library of its own on libtapegrad's public API (only tg_dot_write), so that
 * Graphviz is linked by the programs that render and by no other (a static link of
 * libtapegrad needs no static Graphviz, which Debian does not ship). Built without Graphviz,
 * tg_dot_render still exists and says so, so programs link either way.
 *
 * The graph goes through the same DOT text that tg_dot_write produces (via a temporary
 * file), so what is rendered is exactly what a user exporting and running `dot` would see,
 * and Graphviz's parsers only ever read text our escaping made.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <sys/stat.h>

#include <tapegrad/render.h>

static void
set_error(char *err, size_t errsize, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void
set_error(char *err, size_t errsize, const char *fmt, ...)
{
    if (!err || !errsize)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errsize, fmt, ap);
    va_end(ap);
}

#if TG_HAS_GRAPHVIZ

/* A failed render removes its output only when that is a regular file (not /dev/stdout). */
static bool
is_regular_file(FILE *f)
{
    struct stat st;
    return fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode);
}

#include <gvc.h>

/* The formats we hand to Graphviz: an allow-list, so a caller's string never selects some
 * other plugin (e.g. one that writes files of its own). */
static bool
format_known(const char *format)
{
    return format && (strcmp(format, "svg") == 0 || strcmp(format, "png") == 0 ||
                      strcmp(format, "pdf") == 0);
}

/* Graphviz reports problems through agerr, which prints to stderr unless a handler is set.
 * A library must not print, so during a render the messages are collected here and end up
 * in the caller's error text. (Graphviz itself keeps global state and is not thread-safe,
 * so neither is rendering.) */
static char gv_messages[512];

static int
collect_message(char *msg)
{
    size_t used = strlen(gv_messages);
    if (used + 1 < sizeof gv_messages)
        snprintf(gv_messages + used, sizeof gv_messages - used, "%s", msg);
    return 0;
}

/* gv_messages without the trailing newline Graphviz puts on each message. */
static const char *
graphviz_said(void)
{
    size_t n = strlen(gv_messages);
    while (n && (gv_messages[n - 1] == '\n' || gv_messages[n - 1] == ' '))
        gv_messages[--n] = '\0';
    return n ? gv_messages : "no message";
}

bool
tg_dot_can_render(void)
{
    return true;
}

/* One Graphviz context for the process, made on first use and kept (reachable) until exit.
 * A context per call would be cleaner, but Graphviz 2.42's pango plugin caches a font name
 * that gvFreeContext frees, so the next context reads freed memory (valgrind shows it under
 * textspan_size), and every context leaks part of its plugin table. Rendering is not
 * thread-safe in any case (Graphviz's own state is global). */
static GVC_t *shared_gvc;

/* The parameter is out_path, not path: Graphviz's <types.h> declares a global named path. */

tg_status
tg_dot_render(const tg_tape *t, const tg_dot_options *opt, const char *format,
              const char *out_path, char *err, size_t errsize)
{
    set_error(err, errsize, "%s", "");
    if (!t || !out_path) {
        set_error(err, errsize, "render: %s is NULL", !t ? "tape" : "path");
        return TG_ERR_ARG;
    }
    if (!format_known(format)) {
        set_error(err, errsize, "render: format must be \"svg\", \"png\" or \"pdf\"");
        return TG_ERR_ARG;
    }
    FILE *dot = tmpfile();
    if (!dot) {
        int e = errno;
        set_error(err, errsize, "render: cannot create a temporary file: %s", strerror(e));
        return TG_ERR_IO;
    }
    tg_status s = tg_dot_write(t, opt, dot, err, errsize);
    if (s != TG_OK) {
        fclose(dot);
        return s;
    }
    rewind(dot);
    FILE *out = fopen(out_path, "wb");
    if (!out) {
        int e = errno;
        set_error(err, errsize, "render: cannot open \"%s\" for writing: %s", out_path,
                  strerror(e));
        fclose(dot);
        return TG_ERR_IO;
    }

    bool regular = is_regular_file(out);
    gv_messages[0] = '\0';
    agusererrf previous = agseterrf(collect_message);
    if (!shared_gvc)
        shared_gvc = gvContext();
    GVC_t *gvc = shared_gvc;
    Agraph_t *g = gvc ? agread(dot, NULL) : NULL;
    if (!gvc) {
        set_error(err, errsize, "render: Graphviz could not start (out of memory?)");
        s = TG_ERR_NOMEM;
    } else if (!g) {
        /* Our exporter's output always parses; reaching this is a bug worth reporting. */
        set_error(err, errsize, "render: Graphviz could not read the exported graph: %s",
                  graphviz_said());
        s = TG_ERR_FORMAT;
    } else if (gvLayout(gvc, g, "dot") != 0) {
        set_error(err, errsize, "render: Graphviz layout failed: %s", graphviz_said());
        s = TG_ERR_UNSUPPORTED;
    } else {
        if (gvRender(gvc, g, format, out) != 0) {
            set_error(err, errsize, "render: this Graphviz cannot write %s: %s", format,
                      graphviz_said());
            s = TG_ERR_UNSUPPORTED;
        }
        gvFreeLayout(gvc, g);
    }
    if (g)
        agclose(g);
    agseterrf(previous);
    fclose(dot);

    if (fclose(out) != 0 && s == TG_OK) {
        int e = errno;
        set_error(err, errsize, "render: writing \"%s\" failed: %s", out_path, strerror(e));
        s = TG_ERR_IO;
    }
    if (s != TG_OK && regular)
        remove(out_path); /* a partial picture is worse than none */
    return s;
}

#else /* !TG_HAS_GRAPHVIZ */

bool
tg_dot_can_render(void)
{
    return false;
}

tg_status
tg_dot_render(const tg_tape *t, const tg_dot_options *opt, const char *format, const char *path,
              char *err, size_t errsize)
{
    (void)t;
    (void)opt;
    (void)format;
    (void)path;
    set_error(err, errsize,
              "render: built without Graphviz (install libgraphviz-dev and reconfigure with "
              "-Dgraphviz=enabled); tg_dot_write_path still writes the .dot file");
    return TG_ERR_UNSUPPORTED;
}

#endif
