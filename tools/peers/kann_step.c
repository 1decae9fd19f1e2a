/* kann_step.c: time one kann training step (forward + backward + optimizer update).
 *
 * Our own driver, built against an unmodified kann checkout (tools/peers/build.sh); no kann
 * code is copied here. Networks match tools/tg-bench.c's B-mnist and B-small:
 *   mnist: 784-512-256-10, ReLU hidden, softmax + multi-class cross-entropy (KANN_C_CEM), b=128
 *   small: 2-16-16-1, tanh hidden, linear output + MSE (KANN_C_MSE, mean over entries), b=32
 * Data: one fixed random batch (x ~ N(0,1); mnist: one-hot random class; small: y ~ U[0,1)).
 * Weights: kann's own init (N(0, 1/fan_in)), biases 0; seed fixed.
 * One step = kann_cost(ann, 0, 1)   (forward + kad_grad; gradients are zeroed inside)
 *          + update: --opt rmsprop -> kann_RMSprop(n_var, lr, 0, 0.9, g, x, r)  (kann's own,
 *                    as used by kann_train_fnn1); --opt sgd -> x -= lr*g via kad_saxpy.
 * --threads N > 1 calls kann_mt(ann, N, batch): kann splits the batch over N pthreads, each
 * with a clone of the net; the main thread sums the gradients (only kann_cost is threaded).
 *
 * Timing: every step is timed on its own (CLOCK_MONOTONIC). Prints, over all timed steps,
 * the per-step median [min - max], and, as tg-bench times, R samples of S steps,
 * median [min - max] of the sample means.
 *
 * --check-grad N: instead of timing steps, run kann's own kad_check_grad (one random
 * direction: compares g.delta with the central difference (f(x+d)-f(x-d))/2, |d_i| <= 1e-5,
 * float32) N times on the cost node, timing each call; kann prints its verdict on stderr.
 *
 * Usage: kann_step [--config mnist|small] [--threads N] [--opt rmsprop|sgd] [--lr F]
 *                  [--warmup W] [--steps S] [--repeats R] [--check-grad N]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <math.h>
#include "kann.h"
#ifdef HAVE_CBLAS
#include <cblas.h>
#endif

static double now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec * 1e-3;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double median(double *v, int n) /* sorts v */
{
	qsort(v, n, sizeof(double), cmp_double);
	return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static double gauss(void) /* Box-Muller on rand(); data only, not timed */
{
	double u1 = (rand() + 1.0) / (RAND_MAX + 2.0), u2 = (rand() + 1.0) / (RAND_MAX + 2.0);
	return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

int main(int argc, char *argv[])
{
	const char *config = "mnist", *opt = "rmsprop";
	int threads = 1, warmup = 50, steps = 200, repeats = 7, check_grad = 0, i, j, k;
	float lr = 0.001f;
	for (i = 1; i < argc; ++i) {
		if (i + 1 >= argc) { fprintf(stderr, "missing value for %s\n", argv[i]); return 2; }
		if (!strcmp(argv[i], "--config")) config = argv[++i];
		else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--opt")) opt = argv[++i];
		else if (!strcmp(argv[i], "--lr")) lr = (float)atof(argv[++i]);
		else if (!strcmp(argv[i], "--warmup")) warmup = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--steps")) steps = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--repeats")) repeats = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--check-grad")) check_grad = atoi(argv[++i]);
		else { fprintf(stderr, "unknown option %s\n", argv[i]); return 2; }
	}
	int is_mnist = !strcmp(config, "mnist");
	if (!is_mnist && strcmp(config, "small")) { fprintf(stderr, "config: mnist|small\n"); return 2; }
	int use_sgd = !strcmp(opt, "sgd");
	if (!use_sgd && strcmp(opt, "rmsprop")) { fprintf(stderr, "opt: rmsprop|sgd\n"); return 2; }

	int n_in = is_mnist ? 784 : 2, n_out = is_mnist ? 10 : 1, batch = is_mnist ? 128 : 32;
	kann_srand(11);
	srand(11);
	kad_node_t *t = kann_layer_input(n_in);
	if (is_mnist) {
		t = kad_relu(kann_layer_dense(t, 512));
		t = kad_relu(kann_layer_dense(t, 256));
		t = kann_layer_cost(t, n_out, KANN_C_CEM);
	} else {
		t = kad_tanh(kann_layer_dense(t, 16));
		t = kad_tanh(kann_layer_dense(t, 16));
		t = kann_layer_cost(t, n_out, KANN_C_MSE);
	}
	kann_t *ann = kann_new(t, 0);
	if (!ann) { fprintf(stderr, "kann_new failed\n"); return 1; }
	int n_var = kann_size_var(ann);

	float *x = malloc((size_t)batch * n_in * sizeof(float));
	float *y = calloc((size_t)batch * n_out, sizeof(float));
	float *r = calloc(n_var, sizeof(float)); /* RMSprop state */
	for (i = 0; i < batch * n_in; ++i) x[i] = (float)gauss();
	for (i = 0; i < batch; ++i) {
		if (is_mnist) y[i * n_out + rand() % n_out] = 1.0f;
		else for (j = 0; j < n_out; ++j) y[i * n_out + j] = (float)(rand() / (RAND_MAX + 1.0));
	}
	kann_feed_bind(ann, KANN_F_IN, 0, &x);
	kann_feed_bind(ann, KANN_F_TRUTH, 0, &y);
	kann_set_batch_size(ann, batch);
	kann_switch(ann, 1);
	if (check_grad > 0) {
		int i_cost = kann_find(ann, KANN_F_COST, 0);
		for (i = 0; i < check_grad; ++i) {
			double t0 = now_us();
			kad_check_grad(ann->n, ann->v, i_cost);
			fprintf(stderr, "kann %s kad_check_grad #%d: %.1f us (n_var %d)\n", config, i + 1,
			        now_us() - t0, n_var);
		}
		kann_delete(ann);
		free(r); free(y); free(x);
		return 0;
	}
	if (threads > 1) kann_mt(ann, threads, batch);

	if (repeats > 64) repeats = 64;
	int total = steps * repeats;
	double *dt = malloc(total * sizeof(double)), sample[64];
	float cost0 = 0.0f, cost = 0.0f;
	for (i = 0; i < warmup + total; ++i) {
		double t0 = now_us();
		cost = kann_cost(ann, 0, 1);
		if (use_sgd) kad_saxpy(n_var, -lr, ann->g, ann->x);
		else kann_RMSprop(n_var, lr, 0, 0.9f, ann->g, ann->x, r);
		double t1 = now_us();
		if (i == 0) cost0 = cost;
		if (i >= warmup) dt[i - warmup] = t1 - t0;
	}
	for (k = 0; k < repeats; ++k) {
		double s = 0.0;
		for (j = 0; j < steps; ++j) s += dt[k * steps + j];
		sample[k] = s / steps;
	}
	double smed = median(sample, repeats), smin = sample[0], smax = sample[repeats - 1];
	double pmed = median(dt, total), pmin = dt[0], pmax = dt[total - 1];
	const char *ct = getenv("OPENBLAS_CORETYPE");
#ifdef HAVE_CBLAS
	const char *blas = openblas_get_corename();
	int blas_threads = openblas_get_num_threads();
#else
	const char *blas = "none(kann sgemm)";
	int blas_threads = 0;
#endif
	printf("kann %s %s threads=%d blas=%s blas_threads=%d OPENBLAS_CORETYPE=%s params=%d  "
	       "per-step us median %.1f [%.1f - %.1f] (%d steps)  "
	       "sample-mean us median %.1f [%.1f - %.1f] (%dx%d)  steps/s %.0f  loss %.4g -> %.4g\n",
	       config, opt, threads, blas, blas_threads, ct ? ct : "(unset)", n_var,
	       pmed, pmin, pmax, total, smed, smin, smax, repeats, steps, 1e6 / smed, cost0, cost);
	if (threads > 1) kann_mt(ann, 0, 0);
	kann_delete(ann);
	free(dt); free(r); free(y); free(x);
	return 0;
}
