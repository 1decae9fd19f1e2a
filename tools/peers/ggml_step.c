/* ggml_step.c: time one ggml training step through ggml's optimizer API (ggml-opt.h).
 *
 * Our own driver, built against an unmodified ggml checkout (tools/peers/build.sh); no ggml
 * code is copied here. Networks match tools/tg-bench.c's B-mnist and B-small:
 *   mnist: 784-512-256-10, ReLU hidden, linear logits + GGML_OPT_LOSS_TYPE_CROSS_ENTROPY
 *          (softmax cross-entropy, mean over the batch), b=128
 *   small: 2-16-16-1, linear output + GGML_OPT_LOSS_TYPE_MEAN_SQUARED_ERROR, b=32, hidden
 *          activation --act: ggml has no backward for GGML_UNARY_OP_TANH (nor SIGMOID, GELU;
 *          ggml_compute_backward aborts: "unsupported unary op for backward pass: TANH"), so
 *          "tanh" here is composed from ops that have one: e = expm1(2x), tanh = e / (e + 2)
 *          (ggml_scale, ggml_expm1, ggml_scale_bias, ggml_div: 4 nodes); "relu" = ggml_relu.
 * Data: one fixed random batch (x ~ N(0,1); mnist: one-hot random class; small: y ~ U[0,1)),
 * copied into the input/label tensors once (data loading is not timed).
 * Weights: U(+-1/sqrt(fan_in)) like nn.Linear (biases too); seed fixed.
 * Graph: static graphs (ctx_compute + inputs + outputs given to ggml_opt_init, as ggml_opt_fit
 * does), build type OPT, opt_period 1: one ggml_opt_alloc(opt, true) + ggml_opt_eval(opt, NULL)
 * = forward + loss + backward + optimizer step, in one backend-scheduler graph compute.
 * --opt sgd   -> GGML_OPT_OPTIMIZER_TYPE_SGD   (lr --lr, wd 0)
 * --opt adamw -> GGML_OPT_OPTIMIZER_TYPE_ADAMW (lr --lr, 0.9, 0.999, 1e-8, wd 0)
 * --threads N -> ggml_backend_cpu_set_n_threads(cpu, N).
 * Built with -DGGML_STEP_BLAS (as tools/peers/build.sh builds ggml_step_blas): the scheduler
 * gets [BLAS, CPU] backends (BLAS first = preferred; ggml's BLAS backend takes MUL_MAT with all
 * dims >= 32 and OUT_PROD, which the backward pass uses for dW and dX; the rest runs on CPU),
 * and ggml_backend_blas_set_n_threads(blas, N) too.
 *
 * Timing: every step is timed on its own (CLOCK_MONOTONIC). Prints, over all timed steps, the
 * per-step median [min - max], and, as tg-bench times, R samples of S steps,
 * median [min - max] of the sample means.
 *
 * Usage: ggml_step [--config mnist|small] [--act tanh|relu] [--threads N] [--opt sgd|adamw]
 *                  [--lr F] [--warmup W] [--steps S] [--repeats R]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ggml.h"
#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "ggml-opt.h"
#ifdef GGML_STEP_BLAS
#include "ggml-blas.h"
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

static double unif(void) { return rand() / (RAND_MAX + 1.0); }

static double gauss(void)
{
	double u1 = (rand() + 1.0) / (RAND_MAX + 2.0), u2 = (rand() + 1.0) / (RAND_MAX + 2.0);
	return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

static void fill_uniform(struct ggml_tensor *t, float bound)
{
	int64_t i, n = ggml_nelements(t);
	float *v = malloc(n * sizeof(float));
	for (i = 0; i < n; ++i) v[i] = (float)((2.0 * unif() - 1.0) * bound);
	ggml_backend_tensor_set(t, v, 0, n * sizeof(float));
	free(v);
}

static float read_loss(ggml_opt_context_t opt)
{
	float l;
	ggml_backend_tensor_get(ggml_opt_loss(opt), &l, 0, sizeof(float));
	return l;
}

int main(int argc, char *argv[])
{
	const char *config = "mnist", *opt_name = "sgd", *act = "tanh";
	int threads = 1, warmup = 50, steps = 200, repeats = 7, i, j, k;
	float lr = 0.01f;
	for (i = 1; i < argc; ++i) {
		if (i + 1 >= argc) { fprintf(stderr, "missing value for %s\n", argv[i]); return 2; }
		if (!strcmp(argv[i], "--config")) config = argv[++i];
		else if (!strcmp(argv[i], "--act")) act = argv[++i];
		else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--opt")) opt_name = argv[++i];
		else if (!strcmp(argv[i], "--lr")) lr = (float)atof(argv[++i]);
		else if (!strcmp(argv[i], "--warmup")) warmup = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--steps")) steps = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--repeats")) repeats = atoi(argv[++i]);
		else { fprintf(stderr, "unknown option %s\n", argv[i]); return 2; }
	}
	int is_mnist = !strcmp(config, "mnist");
	if (!is_mnist && strcmp(config, "small")) { fprintf(stderr, "config: mnist|small\n"); return 2; }
	int use_adamw = !strcmp(opt_name, "adamw");
	if (!use_adamw && strcmp(opt_name, "sgd")) { fprintf(stderr, "opt: sgd|adamw\n"); return 2; }
	if (repeats > 64) repeats = 64;
	int small_relu = !strcmp(act, "relu");
	if (!small_relu && strcmp(act, "tanh")) { fprintf(stderr, "act: tanh|relu\n"); return 2; }
	if (is_mnist) act = "relu";

	const int sizes_mnist[4] = {784, 512, 256, 10}, sizes_small[4] = {2, 16, 16, 1};
	const int *sz = is_mnist ? sizes_mnist : sizes_small;
	const int batch = is_mnist ? 128 : 32, n_layers = 3;
	srand(11);

	ggml_backend_t cpu = ggml_backend_cpu_init();
	if (!cpu) { fprintf(stderr, "ggml_backend_cpu_init failed\n"); return 1; }
	ggml_backend_cpu_set_n_threads(cpu, threads);
#ifdef GGML_STEP_BLAS
	ggml_backend_t blas = ggml_backend_blas_init();
	if (!blas) { fprintf(stderr, "ggml_backend_blas_init failed\n"); return 1; }
	ggml_backend_blas_set_n_threads(blas, threads);
	ggml_backend_t backends[2] = { blas, cpu };
	const int n_backends = 2;
	char blas_desc[128];
	snprintf(blas_desc, sizeof blas_desc, "OpenBLAS %s", openblas_get_corename());
#else
	ggml_backend_t backends[1] = { cpu };
	const int n_backends = 1;
	const char *blas_desc = "none";
#endif
	ggml_backend_sched_t sched = ggml_backend_sched_new(backends, NULL, n_backends, GGML_DEFAULT_GRAPH_SIZE, false, true);

	/* static context: parameters and the input batch (allocated once, by us) */
	struct ggml_init_params ps = { 64 * ggml_tensor_overhead(), NULL, true };
	struct ggml_context *ctx_static = ggml_init(ps);
	struct ggml_tensor *W[3], *b[3];
	struct ggml_tensor *x = ggml_new_tensor_2d(ctx_static, GGML_TYPE_F32, sz[0], batch);
	ggml_set_name(x, "x");
	ggml_set_input(x);
	for (i = 0; i < n_layers; ++i) {
		W[i] = ggml_new_tensor_2d(ctx_static, GGML_TYPE_F32, sz[i], sz[i + 1]); /* ne0 = fan_in */
		b[i] = ggml_new_tensor_1d(ctx_static, GGML_TYPE_F32, sz[i + 1]);
		ggml_format_name(W[i], "W%d", i + 1);
		ggml_format_name(b[i], "b%d", i + 1);
	}
	ggml_backend_buffer_t buf_static = ggml_backend_alloc_ctx_tensors(ctx_static, cpu);
	int n_params = 0;
	for (i = 0; i < n_layers; ++i) {
		float bound = 1.0f / sqrtf((float)sz[i]);
		fill_uniform(W[i], bound);
		fill_uniform(b[i], bound);
		n_params += sz[i] * sz[i + 1] + sz[i + 1];
	}
	{
		int64_t n = ggml_nelements(x);
		float *v = malloc(n * sizeof(float));
		for (i = 0; i < n; ++i) v[i] = (float)gauss();
		ggml_backend_tensor_set(x, v, 0, n * sizeof(float));
		free(v);
	}

	/* compute context: the forward graph; ggml-opt adds loss, backward and optimizer nodes */
	struct ggml_init_params pc = { GGML_DEFAULT_GRAPH_SIZE * ggml_tensor_overhead() + 3 * ggml_graph_overhead(), NULL, true };
	struct ggml_context *ctx_compute = ggml_init(pc);
	struct ggml_tensor *h = x;
	for (i = 0; i < n_layers; ++i) {
		ggml_set_param(W[i]);
		ggml_set_param(b[i]);
		h = ggml_add(ctx_compute, ggml_mul_mat(ctx_compute, W[i], h), b[i]); /* [out, batch] */
		if (i < n_layers - 1) {
			if (is_mnist || small_relu) h = ggml_relu(ctx_compute, h);
			else { /* tanh(h) = (exp(2h) - 1) / (exp(2h) + 1) */
				struct ggml_tensor *e = ggml_expm1(ctx_compute, ggml_scale(ctx_compute, h, 2.0f));
				h = ggml_div(ctx_compute, e, ggml_scale_bias(ctx_compute, e, 1.0f, 2.0f));
			}
		}
	}
	struct ggml_tensor *out = h;

	struct ggml_opt_optimizer_params op = ggml_opt_get_default_optimizer_params(NULL);
	op.adamw.alpha = lr;
	op.sgd.alpha = lr;
	op.sgd.wd = 0.0f;
	struct ggml_opt_params params = ggml_opt_default_params(sched,
		is_mnist ? GGML_OPT_LOSS_TYPE_CROSS_ENTROPY : GGML_OPT_LOSS_TYPE_MEAN_SQUARED_ERROR);
	params.ctx_compute = ctx_compute;
	params.inputs = x;
	params.outputs = out;
	params.optimizer = use_adamw ? GGML_OPT_OPTIMIZER_TYPE_ADAMW : GGML_OPT_OPTIMIZER_TYPE_SGD;
	params.get_opt_pars = ggml_opt_get_constant_optimizer_params;
	params.get_opt_pars_ud = &op;
	ggml_opt_context_t opt = ggml_opt_init(params);

	{ /* labels live in ggml-opt's static buffer */
		struct ggml_tensor *lab = ggml_opt_labels(opt);
		int64_t n = ggml_nelements(lab), n_out = sz[3];
		float *v = calloc(n, sizeof(float));
		for (i = 0; i < batch; ++i) {
			if (is_mnist) v[i * n_out + rand() % n_out] = 1.0f;
			else for (j = 0; j < n_out; ++j) v[i * n_out + j] = (float)unif();
		}
		ggml_backend_tensor_set(lab, v, 0, n * sizeof(float));
		free(v);
	}
	ggml_opt_reset(opt, true);

	int total = steps * repeats;
	double *dt = malloc(total * sizeof(double)), sample[64];
	float loss0 = 0.0f;
	for (i = 0; i < warmup + total; ++i) {
		double t0 = now_us();
		ggml_opt_alloc(opt, true);
		ggml_opt_eval(opt, NULL);
		double t1 = now_us();
		if (i == 0) loss0 = read_loss(opt);
		if (i >= warmup) dt[i - warmup] = t1 - t0;
	}
	float loss1 = read_loss(opt);
	for (k = 0; k < repeats; ++k) {
		double s = 0.0;
		for (j = 0; j < steps; ++j) s += dt[k * steps + j];
		sample[k] = s / steps;
	}
	double smed = median(sample, repeats), smin = sample[0], smax = sample[repeats - 1];
	double pmed = median(dt, total), pmin = dt[0], pmax = dt[total - 1];
	const char *ct = getenv("OPENBLAS_CORETYPE");
	printf("ggml %s %s %s threads=%d blas=%s OPENBLAS_CORETYPE=%s params=%d  per-step us median %.1f [%.1f - %.1f] (%d steps)  "
	       "sample-mean us median %.1f [%.1f - %.1f] (%dx%d)  steps/s %.0f  loss %.4g -> %.4g\n",
	       config, act, opt_name, threads, blas_desc, ct ? ct : "(unset)", n_params, pmed, pmin, pmax, total, smed, smin, smax,
	       repeats, steps, 1e6 / smed, loss0, loss1);

	ggml_opt_free(opt);
	ggml_free(ctx_compute);
	ggml_backend_buffer_free(buf_static);
	ggml_free(ctx_static);
	ggml_backend_sched_free(sched);
	ggml_backend_free(cpu);
#ifdef GGML_STEP_BLAS
	ggml_backend_free(blas);
#endif
	free(dt);
	return 0;
}
