/*
 * tg-bench-attn: the fused attention node (logsumexp kept, P recomputed in the VJP) against
 * the same attention composed of ops that store P (bmm, scale, softmax, bmm), forward and
 * backward, on one attention of B-attn's size: q, k, v (16, 4, 128, 64).
 *
 *   tg-bench-attn [--threads N] [--reps R]
 *
 * Per dtype, the two are timed in alternating blocks (fused, composed, fused, ...) of one
 * forward + backward each, after two warm-up runs; prints the median of R blocks (default 9)
 * for each and the tape's arena bytes after the backward (what the step holds), then the
 * ratios. Inputs are uniform in [-1, 1) from a seeded generator; the backward is seeded by a
 * fixed dO.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tapegrad/op.h>
#include <tapegrad/runtime.h>
#include <tapegrad/tapegrad.h>

#include "bench-clock.h"

enum { B = 16, H = 4, T = 128, D = 64 };

struct bench {
    tg_dtype dt;
    void *q, *k, *v, *dout;
};

static tg_tensor *
wrap(tg_tape *t, const struct bench *b, void *data, bool grad)
{
    tg_tensor *x = tg_tensor_wrap(t, b->dt, 4, (int64_t[]){B, H, T, D}, data, NULL);
    tg_tensor_set_requires_grad(x, grad);
    return x;
}

/* One forward + backward; returns the seconds it took, and the arena bytes in *bytes. */
static double
run(tg_tape *t, const struct bench *b, bool fused, size_t *bytes)
{
    double s = now();
    tg_tape_reset(t);
    tg_tensor *q = wrap(t, b, b->q, true), *k = wrap(t, b, b->k, true);
    tg_tensor *v = wrap(t, b, b->v, true), *y;
    if (fused) {
        y = tg_scaled_dot_product_attention(t, q, k, v, NULL, false, 0);
    } else { /* softmax(q·kᵀ / √d) · v with P a tensor of the tape */
        tg_tensor *z = tg_scale(t, tg_bmm(t, q, false, k, true), 1 / 8.0);
        y = tg_bmm(t, tg_softmax(t, z, -1), false, v, false);
    }
    tg_backward_seeded(t, y, wrap(t, b, b->dout, false));
    double e = now() - s;
    if (tg_tape_error(t)) {
        fprintf(stderr, "tg-bench-attn: %s\n", tg_tape_error(t));
        exit(1);
    }
    *bytes = tg_tape_arena_bytes(t);
    return e;
}

int
main(int argc, char **argv)
{
    int threads = 1, reps = 9;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--threads N] [--reps R]\n", argv[0]);
            return 2;
        }
    }
    if (reps < 1 || reps > 1000 || tg_set_num_threads(threads) != TG_OK) {
        fprintf(stderr, "tg-bench-attn: bad --reps or --threads\n");
        return 2;
    }
    printf("# tg-bench-attn: one attention (%d, %d, %d, %d), forward + backward, %d thread%s, "
           "median of %d alternating blocks; kernel %s\n",
           B, H, T, D, threads, threads > 1 ? "s" : "", reps, tg_kernel_name());
    size_t n = (size_t)B * H * T * D;
    for (int d = 0; d < 2; d++) {
        struct bench b = {d ? TG_F64 : TG_F32, NULL, NULL, NULL, NULL};
        size_t es = tg_dtype_size(b.dt);
        void **bufs[4] = {&b.q, &b.k, &b.v, &b.dout};
        tg_rng *rng = tg_rng_new(7);
        for (int i = 0; i < 4; i++) {
            *bufs[i] = malloc(n * es);
            if (!*bufs[i] || !rng)
                return 1;
            for (size_t j = 0; j < n; j++) {
                double u = 2 * tg_rng_uniform(rng) - 1;
                if (d)
                    ((double *)*bufs[i])[j] = u;
                else
                    ((float *)*bufs[i])[j] = (float)u;
            }
        }
        tg_tape *tf = tg_tape_new(), *tc = tg_tape_new();
        double *sf = malloc((size_t)reps * sizeof *sf), *sc = malloc((size_t)reps * sizeof *sc);
        size_t bytes_f = 0, bytes_c = 0;
        for (int w = 0; w < 2; w++)
            run(tf, &b, true, &bytes_f), run(tc, &b, false, &bytes_c);
        for (int r = 0; r < reps; r++) {
            sf[r] = run(tf, &b, true, &bytes_f);
            sc[r] = run(tc, &b, false, &bytes_c);
        }
        double mf = median(sf, reps), mc = median(sc, reps);
        printf("dtype=%s fused_ms=%.2f composed_ms=%.2f composed/fused=%.2f fused_arena_mib=%.1f "
               "composed_arena_mib=%.1f\n",
               tg_dtype_name(b.dt), 1e3 * mf, 1e3 * mc, mc / mf, bytes_f / 1048576.0,
               bytes_c / 1048576.0);
        fflush(stdout);
        free(sf);
        free(sc);
        tg_tape_free(tf);
        tg_tape_free(tc);
        tg_rng_free(rng);
        for (int i = 0; i < 4; i++)
            free(*bufs[i]);
    }
    return 0;
}
