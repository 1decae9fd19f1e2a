/* Helpers shared by the Check suites: fixtures, random tensors, central differences. */
#ifndef TG_TEST_COMMON_H
#define TG_TEST_COMMON_H

#include <check.h>
#include <stdio.h>
#include <string.h>

#include <tapegrad/op.h>
#include <tapegrad/tapegrad.h>

#define TEST_MAX_INPUTS 4

/* A scalar function of up to 4 input tensors, recorded on a tape. The inputs are given as
 * tape tensors (requires_grad set) built from the values in `vals`. */
typedef tg_tensor *(*test_graph_fn)(tg_tape *t, tg_tensor **in, void *ctx);

struct test_input {
    int ndim;
    int64_t dims[TG_MAX_DIMS];
    double *vals; /* size = product of dims; owned by the caller */
};

struct fd_result {
    double max_err;  /* max over elements of |analytic - numeric| / max(1, |analytic|, |numeric|) */
    int input;       /* where the worst element is */
    size_t index;
    double analytic, numeric;
    size_t checked;  /* number of elements compared */
    const char *error; /* tape error, or NULL */
};

/* Compares tg_backward's gradient with central differences f(x+h)-f(x-h) / 2h for every
 * element of every input, in dtype dt (h chosen by the caller: 1e-6 for f64). */
struct fd_result fd_check(tg_dtype dt, test_graph_fn fn, void *ctx, struct test_input *in,
                          int n_in, double h);

/* Fill vals with uniform values in [lo, hi). */
void fill_uniform(double *vals, size_t n, tg_rng *r, double lo, double hi);
size_t dims_size(int ndim, const int64_t *dims);

/* The tape t holds `status` and an error message containing every given substring (the op,
 * the tensors' names, their shapes...). */
#define ASSERT_TAPE_ERROR(t, status, ...)                                                      \
    do {                                                                                       \
        ck_assert_int_eq(tg_tape_status(t), (status));                                         \
        const char *msg_ = tg_tape_error(t);                                                   \
        ck_assert_ptr_nonnull(msg_);                                                           \
        const char *want_[] = {__VA_ARGS__};                                                   \
        for (size_t k_ = 0; k_ < sizeof want_ / sizeof want_[0]; k_++)                         \
            ck_assert_msg(strstr(msg_, want_[k_]), "message \"%s\" lacks \"%s\"", msg_,        \
                          want_[k_]);                                                          \
    } while (0)

/* An allocator hook that counts every malloc and realloc (tg_set_allocator(&
 * test_counting_allocator)); test_alloc_count() is the running total. For the "a warm step
 * allocates nothing" tests. */
extern const tg_allocator test_counting_allocator;
size_t test_alloc_count(void);

/* Run a Check suite in the current process (honours CK_FORK); returns the exit status. */
int run_suite(Suite *s);

#endif
