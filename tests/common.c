#include "common.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

size_t
dims_size(int ndim, const int64_t *dims)
{
    size_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= (size_t)dims[i];
    return n;
}

void
fill_uniform(double *vals, size_t n, tg_rng *r, double lo, double hi)
{
    for (size_t i = 0; i < n; i++)
        vals[i] = lo + (hi - lo) * tg_rng_uniform(r);
}

/* Evaluate fn on the inputs (as given), optionally running backward; returns the loss. */
static double
evaluate(tg_tape *t, tg_dtype dt, test_graph_fn fn, void *ctx, struct test_input *in, int n_in,
         tg_tensor **made, bool backward, const char **error)
{
    tg_tape_reset(t);
    for (int k = 0; k < n_in; k++) {
        made[k] = tg_tensor_new(t, dt, in[k].ndim, in[k].dims, NULL);
        tg_tensor_write(made[k], in[k].vals, dims_size(in[k].ndim, in[k].dims));
        tg_tensor_set_requires_grad(made[k], true);
    }
    tg_tensor *loss = fn(t, made, ctx);
    if (backward)
        tg_backward(t, loss);
    *error = tg_tape_error(t);
    return tg_tensor_item(loss);
}

struct fd_result
fd_check(tg_dtype dt, test_graph_fn fn, void *ctx, struct test_input *in, int n_in, double h)
{
    struct fd_result r = {0};
    tg_tape *t = tg_tape_new();
    tg_tensor *made[TEST_MAX_INPUTS];
    double *analytic[TEST_MAX_INPUTS] = {0};

    evaluate(t, dt, fn, ctx, in, n_in, made, true, &r.error);
    if (r.error) {
        tg_tape_free(t);
        return r;
    }
    for (int k = 0; k < n_in; k++) {
        size_t n = dims_size(in[k].ndim, in[k].dims);
        analytic[k] = calloc(n ? n : 1, sizeof(double));
        for (size_t i = 0; i < n; i++)
            analytic[k][i] = tg_tensor_grad_get(made[k], i);
    }
    r.max_err = -1;
    for (int k = 0; k < n_in; k++) {
        size_t n = dims_size(in[k].ndim, in[k].dims);
        for (size_t i = 0; i < n; i++) {
            double x0 = in[k].vals[i];
            in[k].vals[i] = x0 + h;
            double fp = evaluate(t, dt, fn, ctx, in, n_in, made, false, &r.error);
            in[k].vals[i] = x0 - h;
            double fm = evaluate(t, dt, fn, ctx, in, n_in, made, false, &r.error);
            in[k].vals[i] = x0;
            double numeric = (fp - fm) / (2 * h);
            double a = analytic[k][i];
            double scale = fmax(1.0, fmax(fabs(a), fabs(numeric)));
            double err = fabs(a - numeric) / scale;
            if (!(err <= r.max_err)) { /* also catches NaN */
                r.max_err = err;
                r.input = k;
                r.index = i;
                r.analytic = a;
                r.numeric = numeric;
            }
            r.checked++;
        }
    }
    if (r.max_err < 0)
        r.max_err = 0;
    for (int k = 0; k < n_in; k++)
        free(analytic[k]);
    tg_tape_free(t);
    return r;
}

int
run_suite(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

static size_t counted_allocs;

static void *
counting_malloc(size_t n, void *ctx)
{
    (void)ctx;
    counted_allocs++;
    return malloc(n);
}

static void *
counting_realloc(void *p, size_t n, void *ctx)
{
    (void)ctx;
    counted_allocs++;
    return realloc(p, n);
}

static void
counting_free(void *p, void *ctx)
{
    (void)ctx;
    free(p);
}

const tg_allocator test_counting_allocator = {counting_malloc, counting_realloc, counting_free,
                                              NULL};

size_t
test_alloc_count(void)
{
    return counted_allocs;
}
