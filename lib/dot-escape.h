/*
 * Text for DOT files, shared by the exporter and its tests. Never installed.
 *
 * A user string reaches a DOT file through two encodings, applied in this order:
 *   1. escString (what Graphviz interprets in a label): "\" -> "\\", newline -> "\n", CR
 *      dropped, other control bytes and DEL shown as the text "\x1b" (so "\\x1b"), invalid
 *      UTF-8 -> U+FFFD, at most TG_DOT_TEXT_MAX shown bytes, then "…". After this no "\N",
 *      "\G", "\l" or trailing "\" of the user's survives as an escape.
 *   2. DOT quoting (what the parser reads): the string goes inside "...", where the only
 *      escape is \" for a quote. A "\\" pair stays "\\", so a quote after an escaped
 *      backslash is still escaped ("a\\\"b").
 * cgraph hands back the result of step 1, which is what the round-trip test compares.
 */
#ifndef TG_DOT_ESCAPE_H
#define TG_DOT_ESCAPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* A growable byte buffer that allocates through the allocator hook and stays NUL-terminated.
 * After a failed allocation `failed` is set and further appends do nothing. */
struct tg__dotbuf {
    char *p;
    size_t len, cap;
    bool failed;
};

void tg__dotbuf_free(struct tg__dotbuf *b);
void tg__dotbuf_append(struct tg__dotbuf *b, const char *s, size_t n);
void tg__dotbuf_puts(struct tg__dotbuf *b, const char *s);
void tg__dotbuf_printf(struct tg__dotbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Step 1: appends the escString encoding of the n bytes at s (any bytes, NUL included). */
void tg__dot_escstring(struct tg__dotbuf *b, const char *s, size_t n);
/* Step 2: appends `"` + esc with every `"` written as `\"` + `"`. */
void tg__dot_quote(struct tg__dotbuf *b, const char *esc, size_t n);

/* Whether f is a regular file. After a failed write only regular files are removed: a device,
 * FIFO or terminal named as the output belongs to the user, not to us (removing /dev/full
 * after a failed write to it would be a disaster). */
bool tg__dot_is_regular_file(FILE *f);

#endif /* TG_DOT_ESCAPE_H */
