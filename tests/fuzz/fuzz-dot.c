/*
 * Fuzz target: DOT export of arbitrary names.
 *
 * The input is split at NUL bytes into strings that become everything a user can put in a DOT
 * file: tensor and parameter names (when the API accepts them), display names, a custom op's
 * name, the title, per-node notes and (through a failing op) the tape's error message. The
 * graph is exported with and without clusters, and the output is checked:
 *   - it is valid UTF-8, ends with "}\n", and its braces and brackets balance outside quotes;
 *   - inside a quoted string the only escapes are \\ \" \n \l \r (so no user \N, \G, \L or
 *     trailing backslash survives), and there are no raw control bytes;
 *   - no injection: with clusters off, the text outside quoted strings is byte-identical to the
 *     export of the same graph with every user string replaced by a placeholder, so no
 *     string can add a statement or an attribute;
 *   - the output size is linear in the input.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tapegrad/dot.h>
#include <tapegrad/op.h>
#include <tapegrad/tapegrad.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                            \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "fuzz-dot: invariant failed at line %d: %s\n", __LINE__, #cond);   \
            abort();                                                                           \
        }                                                                                      \
    } while (0)

#define N_STR 10

static tg_status
twice_forward(tg_node *n)
{
    tg_tensor *x = tg_node_input(n, 0), *y = tg_node_output(n);
    for (size_t i = 0; i < tg_tensor_size(y); i++)
        ((double *)tg_tensor_data(y))[i] = 2 * tg_tensor_get(x, i);
    return TG_OK;
}

static tg_status
twice_vjp(tg_node *n)
{
    (void)n;
    return TG_OK;
}

static bool
utf8_ok(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3
                                  : (c & 0xF8) == 0xF0 ? 4 : 0;
        if (len == 0 || i + len > n)
            return false;
        for (size_t k = 1; k < len; k++)
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
        i += len;
    }
    return true;
}

/* Validates the DOT text and writes the bytes outside quoted strings to skel. */
static void
validate(const char *dot, size_t n, char *skel, size_t *skel_len)
{
    CHECK(utf8_ok((const unsigned char *)dot, n));
    CHECK(n >= 2 && dot[n - 2] == '}' && dot[n - 1] == '\n');
    int braces = 0, brackets = 0;
    bool quoted = false;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)dot[i];
        if (quoted) {
            CHECK(c >= 0x20 && c != 0x7f); /* no raw control bytes in a string */
            if (c == '\\') {
                CHECK(i + 1 < n);
                char e = dot[++i];
                CHECK(e == '\\' || e == '"' || e == 'n' || e == 'l' || e == 'r');
            } else if (c == '"') {
                quoted = false;
                skel[k++] = '"';
            }
            continue;
        }
        skel[k++] = (char)c;
        CHECK(c != '\\' && c < 0x80);
        switch (c) {
        case '"': quoted = true; break;
        case '{': braces++; break;
        case '}': braces--; CHECK(braces >= 0); break;
        case '[': brackets++; break;
        case ']': brackets--; CHECK(brackets >= 0); break;
        case '<': case '>': CHECK(i > 0 && dot[i - 1] == '-' && c == '>'); break; /* only "->" */
        default: break;
        }
    }
    CHECK(!quoted && braces == 0 && brackets == 0);
    *skel_len = k;
}

/* Builds the graph from the strings (a NULL entry means "use a placeholder") and exports it.
 * Returns the DOT text (malloc'd) or NULL. */
static char *
export(const char *const *str, const bool *name_ok, bool placeholder, bool flat, bool values,
       bool fail_tape, size_t *len)
{
#define S(i) (placeholder ? "p" : str[i])
    tg_tape *t = tg_tape_new();
    tg_params *p = tg_params_new(TG_F64);
    char *text = NULL;
    if (!t || !p)
        goto done;
    tg_tensor *w = tg_params_add(p, name_ok[1] ? S(1) : "W", 2, (int64_t[]){3, 2});
    tg_tensor *x = tg_matrix(t, TG_F64, 2, 3, (double[]){1, -2, 3, 0.5, -1e300, 7},
                             name_ok[2] ? S(2) : NULL);
    tg_tensor_set_requires_grad(x, true);
    tg_tensor *h = tg_tanh(t, tg_matmul(t, x, w));
    tg_op op = {S(3), 1, NULL, twice_forward, twice_vjp, NULL};
    tg_tensor *in[1] = {h};
    tg_tensor *h2 = tg_custom(t, &op, in, 1, NULL);
    tg_tensor *loss = tg_sum(t, h2);
    tg_backward(t, loss);
    if (fail_tape) /* the error names the tensors; the title shows it */
        tg_matmul(t, x, x);
    tg_dot_name names[2] = {{h, S(4)}, {h2, S(5)}};
    double errors[5] = {0.0, 1.0, NAN, 1e-12, 2.0};
    const char *notes[5] = {S(6), NULL, S(7), S(8), ""};
    tg_dot_check check = {.errors = errors, .count = 5, .tolerance = 1e-6, .notes = notes};
    tg_dot_options o = {.title = S(0), .flat = flat, .values = values, .grads = values,
                        .check = &check, .names = names, .n_names = 2,
                        .rankdir = (tg_dot_rankdir)(str[9][0] % 4)};
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    if (!f)
        goto done;
    char err[256];
    tg_status s = tg_dot_write(t, &o, f, err, sizeof err);
    fclose(f);
    if (s == TG_OK) {
        text = buf;
        *len = n;
    } else {
        CHECK(err[0]);
        free(buf);
    }
done:
    tg_tape_free(t);
    tg_params_free(p);
    return text;
#undef S
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1u << 16)
        return 0;
    /* NUL-terminated copies of up to N_STR pieces; missing ones are empty */
    char *copy = malloc(size + N_STR + 1);
    if (!copy)
        return 0;
    memcpy(copy, data, size);
    memset(copy + size, 0, N_STR + 1);
    const char *str[N_STR];
    size_t at = 0;
    for (int i = 0; i < N_STR; i++) {
        str[i] = copy + at;
        at += strlen(copy + at);
        if (at < size + N_STR)
            at++;
    }
    /* which strings the API accepts as names: try each on a scratch tape */
    bool name_ok[N_STR];
    tg_tape *probe = tg_tape_new();
    for (int i = 0; i < N_STR; i++) {
        tg_tape_reset(probe);
        tg_matrix(probe, TG_F64, 1, 1, NULL, str[i]);
        name_ok[i] = probe && tg_tape_status(probe) == TG_OK && str[i][0];
    }
    tg_tape_free(probe);
    bool values = size & 1, fail_tape = size & 2;

    size_t n1 = 0, n2 = 0, n3 = 0;
    char *clustered = export(str, name_ok, false, false, values, fail_tape, &n1);
    char *flat = export(str, name_ok, false, true, values, fail_tape, &n2);
    char *plain = export(str, name_ok, true, true, values, fail_tape, &n3);
    if (clustered && flat && plain) {
        char *skel = malloc(n1 + n2 + n3 + 3);
        CHECK(skel);
        size_t k1, k2, k3;
        validate(clustered, n1, skel, &k1);
        validate(plain, n3, skel, &k3);
        char *skel_plain = malloc(k3 + 1);
        CHECK(skel_plain);
        memcpy(skel_plain, skel, k3);
        validate(flat, n2, skel, &k2);
        CHECK(k2 == k3 && memcmp(skel, skel_plain, k3) == 0); /* no injection */
        CHECK(n1 <= 64 * size + (1u << 16));                 /* linear in the input */
        free(skel_plain);
        free(skel);
    }
    free(clustered);
    free(flat);
    free(plain);
    free(copy);
    return 0;
}
