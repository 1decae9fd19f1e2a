/*
 * The pre-norm transformer encoder block (lib/layers/transformer.c):
 *   - the block against the same composition written out with plain ops on the same tape
 *     (tg_layer_norm, the attention layer, tg_add, tg_matmul_t, tg_gelu), values and the
 *     gradients of x and of all twelve parameters, f64, causal with a mask and not;
 *   - parameters: names, shapes, PyTorch's initialization bounds, atomic init;
 *   - bad input: a sticky error naming transformer_block and the shapes;
 *   - a warm training step (forward, backward, Adam) allocates nothing.
 * PyTorch's nn.TransformerEncoderLayer itself is compared in tests/reference/
 * torch_transformer_interop.py.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tapegrad/optim.h>
#include <tapegrad/runtime.h>

#include "common.h"

enum { B = 2, T = 5, D = 8, HEADS = 2, FF = 16, NPARAM = 12 };

static const char *const param_names[NPARAM] = {
    "blk/norm1/W",      "blk/norm1/b",          "blk/self_attn/in_proj_weight",
    "blk/self_attn/in_proj_bias", "blk/self_attn/out_proj/W", "blk/self_attn/out_proj/b",
    "blk/norm2/W",      "blk/norm2/b",          "blk/linear1/W",
    "blk/linear1/b",    "blk/linear2/W",        "blk/linear2/b",
};

/* y = x + MHA(LN1(x)); out = y + gelu(y_n W1ᵀ + b1) W2ᵀ + b2, each step its own plain op */
static tg_tensor *
written_out(tg_tape *t, const tg_transformer_block *b, tg_tensor *x, bool causal, tg_tensor *m)
{
    tg_tensor *ln1 = tg_layer_norm(t, x, 1, b->norm1.weight, b->norm1.bias, 1e-5);
    tg_tensor *y = tg_add(t, x, tg_multihead_attention_forward(t, &b->self_attn, ln1, causal, m));
    tg_tensor *rows = tg_reshape(t, y, 2, (int64_t[]){B * T, D});
    tg_tensor *ln2 = tg_layer_norm(t, rows, 1, b->norm2.weight, b->norm2.bias, 1e-5);
    tg_tensor *h = tg_gelu(t, tg_add(t, tg_matmul_t(t, ln2, false, b->linear1.weight, true),
                                     b->linear1.bias));
    tg_tensor *f = tg_add(t, tg_matmul_t(t, h, false, b->linear2.weight, true), b->linear2.bias);
    return tg_reshape(t, tg_add(t, rows, f), 3, (int64_t[]){B, T, D});
}

/* max |a - b| over max |b|: the two sides run the same ops in the same order except the fused
 * bias + GELU node against tg_add then tg_gelu, so they agree to rounding (f64: ~1e-16 per
 * operation, a few dozen operations deep); 1e-12 of the scale leaves room for that and none
 * for a wrong term, which moves the output by O(1). */
static double
rel_diff(const double *a, const double *b, size_t n)
{
    double scale = 0, worst = 0;
    for (size_t i = 0; i < n; i++) {
        scale = fmax(scale, fabs(b[i]));
        worst = fmax(worst, fabs(a[i] - b[i]));
    }
    return scale > 0 ? worst / scale : (worst > 0 ? INFINITY : 0);
}

START_TEST(block_matches_written_out_composition)
{
    bool causal = _i & 1, with_mask = _i & 2;
    tg_rng *rng = tg_rng_new(21 + (uint64_t)_i);
    tg_params *p = tg_params_new(TG_F64);
    tg_transformer_block blk;
    ck_assert_int_eq(tg_transformer_block_init(&blk, p, "blk", D, HEADS, FF, rng), TG_OK);
    /* the norms' affine and the attention biases start at 1 and 0: move them so that every
     * term of the composition is exercised */
    for (size_t i = 0; i < tg_params_count(p); i++)
        tg_tensor_fill_uniform(tg_params_get(p, i), rng, -0.8, 0.8);
    static double x[B * T * D], r[B * T * D], mask[T * T];
    for (int i = 0; i < B * T * D; i++) {
        x[i] = 2 * tg_rng_uniform(rng) - 1;
        r[i] = 2 * tg_rng_uniform(rng) - 1;
    }
    for (int i = 0; i < T * T; i++)
        mask[i] = i % T == 0 ? 0 : ((i * 7) % 5 == 0 ? -INFINITY : tg_rng_uniform(rng) - 0.5);
    size_t total = tg_params_size(p);
    double *vals[2], *grads[2], *dx[2];
    tg_tape *t = tg_tape_new();
    for (int side = 0; side < 2; side++) {
        tg_tape_reset(t);
        tg_params_zero_grad(p);
        tg_tensor *xt = tg_tensor_wrap(t, TG_F64, 3, (int64_t[]){B, T, D}, x, "x");
        tg_tensor_set_requires_grad(xt, true);
        tg_tensor *mt = with_mask ? tg_tensor_wrap(t, TG_F64, 2, (int64_t[]){T, T}, mask, "mask")
                                  : NULL;
        tg_tensor *y = side == 0 ? tg_transformer_block_forward(t, &blk, xt, causal, mt)
                                 : written_out(t, &blk, xt, causal, mt);
        tg_tensor *rt = tg_tensor_wrap(t, TG_F64, 3, (int64_t[]){B, T, D}, r, "R");
        tg_backward(t, tg_sum(t, tg_mul(t, y, rt)));
        ck_assert_msg(!tg_tape_error(t), "%s", tg_tape_error(t));
        ck_assert_int_eq(tg_tensor_dim(y, 0), B);
        ck_assert_int_eq(tg_tensor_dim(y, 1), T);
        ck_assert_int_eq(tg_tensor_dim(y, 2), D);
        vals[side] = malloc(B * T * D * sizeof(double));
        dx[side] = malloc(B * T * D * sizeof(double));
        grads[side] = malloc(total * sizeof(double));
        for (size_t i = 0; i < B * T * D; i++) {
            vals[side][i] = tg_tensor_get(y, i);
            dx[side][i] = tg_tensor_grad_get(xt, i);
        }
        memcpy(grads[side], tg_params_grads(p), total * sizeof(double));
    }
    double ev = rel_diff(vals[0], vals[1], B * T * D), ex = rel_diff(dx[0], dx[1], B * T * D);
    ck_assert_msg(ev <= 1e-12 && ex <= 1e-12, "causal %d mask %d: y %.3g dx %.3g", causal,
                  with_mask, ev, ex);
    /* each parameter's gradient on its own scale */
    size_t off = 0;
    for (size_t i = 0; i < tg_params_count(p); i++) {
        size_t n = tg_tensor_size(tg_params_get(p, i));
        double e = rel_diff(grads[0] + off, grads[1] + off, n);
        ck_assert_msg(e <= 1e-12, "causal %d mask %d: d %s %.3g", causal, with_mask,
                      param_names[i], e);
        off += n;
    }
    for (int side = 0; side < 2; side++) {
        free(vals[side]);
        free(dx[side]);
        free(grads[side]);
    }
    tg_tape_free(t);
    tg_params_free(p);
    tg_rng_free(rng);
}
END_TEST

START_TEST(parameters_and_init)
{
    tg_rng *rng = tg_rng_new(3);
    tg_params *p = tg_params_new(TG_F64);
    tg_transformer_block blk;
    ck_assert_int_eq(tg_transformer_block_init(&blk, p, "blk", D, HEADS, FF, rng), TG_OK);
    ck_assert_uint_eq(tg_params_count(p), NPARAM);
    static const int64_t shape[NPARAM][2] = {{D, 0},      {D, 0},  {3 * D, D}, {3 * D, 0},
                                             {D, D},      {D, 0},  {D, 0},     {D, 0},
                                             {FF, D},     {1, FF}, {D, FF},    {1, D}};
    for (int i = 0; i < NPARAM; i++) {
        tg_tensor *w = tg_params_find(p, param_names[i]);
        ck_assert_msg(w != NULL, "%s missing", param_names[i]);
        ck_assert_ptr_eq(w, tg_params_get(p, (size_t)i));
        ck_assert_int_eq(tg_tensor_dim(w, 0), shape[i][0]);
        if (shape[i][1])
            ck_assert_int_eq(tg_tensor_dim(w, 1), shape[i][1]);
    }
    ck_assert_ptr_eq(blk.linear1.weight, tg_params_find(p, "blk/linear1/W"));
    ck_assert_int_eq(blk.linear1.act, TG_ACT_GELU);
    ck_assert_int_eq(blk.linear2.act, TG_ACT_IDENTITY);
    /* nn.Linear: weight and bias within ±1/√fan_in, and reaching most of it */
    tg_tensor *lin[4] = {blk.linear1.weight, blk.linear1.bias, blk.linear2.weight,
                         blk.linear2.bias};
    double bound[4] = {1 / sqrt((double)D), 1 / sqrt((double)D), 1 / sqrt((double)FF),
                       1 / sqrt((double)FF)};
    for (int k = 0; k < 4; k++) {
        double wmax = 0;
        for (size_t i = 0; i < tg_tensor_size(lin[k]); i++)
            wmax = fmax(wmax, fabs(tg_tensor_get(lin[k], i)));
        ck_assert(wmax <= bound[k] && wmax > 0.6 * bound[k]);
    }
    for (size_t i = 0; i < D; i++) {
        ck_assert(tg_tensor_get(blk.norm1.weight, i) == 1 && tg_tensor_get(blk.norm2.bias, i) == 0);
    }
    /* d not divisible by the heads: refused, nothing added, the block untouched */
    tg_transformer_block other = blk;
    ck_assert_int_eq(tg_transformer_block_init(&other, p, "b2", 10, 4, FF, rng), TG_ERR_ARG);
    ck_assert_msg(strstr(tg_params_error(p), "transformer_block \"b2\"") &&
                      strstr(tg_params_error(p), "d_model = 10 is not divisible by 4 heads"),
                  "%s", tg_params_error(p));
    ck_assert_uint_eq(tg_params_count(p), NPARAM);
    ck_assert_ptr_eq(other.linear1.weight, blk.linear1.weight);
    tg_params_clear_error(p);
    ck_assert_int_eq(tg_transformer_block_init(&other, p, "b2", 8, 2, 0, rng), TG_ERR_ARG);
    tg_params_clear_error(p);
    /* the same name again: refused at its first parameter; then a name whose last parameter
     * ("b3/linear2/b") is taken: refused after eleven adds, and all eleven rolled back */
    ck_assert_int_ne(tg_transformer_block_init(&other, p, "blk", D, HEADS, FF, rng), TG_OK);
    ck_assert_uint_eq(tg_params_count(p), NPARAM);
    tg_params_clear_error(p);
    tg_tensor *taken = tg_params_add(p, "b3/linear2/b", 1, (int64_t[]){3});
    ck_assert_ptr_nonnull(taken);
    ck_assert_int_ne(tg_transformer_block_init(&other, p, "b3", D, HEADS, FF, rng), TG_OK);
    ck_assert_uint_eq(tg_params_count(p), NPARAM + 1);
    ck_assert_ptr_null(tg_params_find(p, "b3/norm1/W"));
    ck_assert_ptr_null(tg_params_find(p, "b3/linear1/W"));
    tg_params_clear_error(p);
    tg_params_free(p);
    tg_rng_free(rng);
}
END_TEST

START_TEST(bad_input_refused_by_name)
{
    tg_params *p = tg_params_new(TG_F64);
    tg_transformer_block blk;
    ck_assert_int_eq(tg_transformer_block_init(&blk, p, "blk", D, HEADS, FF, NULL), TG_OK);
    tg_tape *t = tg_tape_new();
    struct {
        tg_dtype dt;
        int nd;
        int64_t dims[3];
        const char *want;
    } cases[] = {
        {TG_F64, 3, {2, 3, 6}, "(2x3x6)"},
        {TG_F64, 2, {3, 8}, "(3x8)"},
        {TG_F64, 3, {2, 0, 8}, "T >= 1"},
        {TG_F32, 3, {2, 3, 8}, "f32"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        tg_tape_reset(t);
        tg_tensor *x = tg_tensor_new(t, cases[c].dt, cases[c].nd, cases[c].dims, "x");
        size_t nodes = tg_tape_node_count(t);
        tg_tensor *y = tg_transformer_block_forward(t, &blk, x, false, NULL);
        const char *e = tg_tape_error(t);
        ck_assert_msg(e && strstr(e, "transformer_block") && strstr(e, cases[c].want), "%zu: %s",
                      c, e ? e : "(no error)");
        ck_assert_uint_eq(tg_tape_node_count(t), nodes);
        /* sticky: the next call fails too, recording nothing */
        tg_transformer_block_forward(t, &blk, y, false, NULL);
        ck_assert_str_eq(tg_tape_error(t), e);
    }
    tg_tape_reset(t);
    ck_assert_ptr_nonnull(tg_transformer_block_forward(t, NULL, NULL, false, NULL));
    ck_assert_msg(strstr(tg_tape_error(t), "transformer_block"), "%s", tg_tape_error(t));
    ck_assert_ptr_null(tg_transformer_block_forward(NULL, &blk, NULL, false, NULL));
    tg_tape_free(t);
    tg_params_free(p);
}
END_TEST

/* Two blocks, a causal mask, backward and an Adam step: warm steps allocate nothing. */
START_TEST(warm_step_allocates_nothing)
{
    tg_set_allocator(&test_counting_allocator);
    tg_rng *rng = tg_rng_new(2);
    tg_params *p = tg_params_new(TG_F32);
    tg_transformer_block blk[2];
    ck_assert_int_eq(tg_transformer_block_init(&blk[0], p, "b0", 16, 4, 32, rng), TG_OK);
    ck_assert_int_eq(tg_transformer_block_init(&blk[1], p, "b1", 16, 4, 32, rng), TG_OK);
    tg_optim_options opt = tg_optim_defaults(TG_OPTIM_ADAM);
    tg_optim *o = tg_optim_new(p, &opt, NULL);
    ck_assert_ptr_nonnull(o);
    tg_tape *t = tg_tape_new();
    size_t before = 0;
    static float xs[3 * 20 * 16];
    for (int i = 0; i < 3 * 20 * 16; i++)
        xs[i] = (float)((i * 7) % 13) / 13.0f - 0.5f;
    for (int step = 0; step < 6; step++) {
        if (step == 1)
            before = test_alloc_count();
        tg_tape_reset(t);
        tg_tensor *x = tg_tensor_wrap(t, TG_F32, 3, (int64_t[]){3, 20, 16}, xs, "x");
        tg_tensor *y = tg_transformer_block_forward(t, &blk[0], x, true, NULL);
        y = tg_transformer_block_forward(t, &blk[1], y, true, NULL);
        tg_params_zero_grad(p);
        tg_backward(t, tg_mean(t, tg_square(t, y)));
        ck_assert_msg(!tg_tape_error(t), "step %d: %s", step, tg_tape_error(t));
        ck_assert_int_eq(tg_optim_step(o), TG_OK);
    }
    size_t warm = test_alloc_count() - before;
    tg_tape_free(t);
    tg_optim_free(o);
    tg_params_free(p);
    tg_rng_free(rng);
    tg_set_allocator(NULL);
    ck_assert_msg(warm == 0, "%zu allocations in 5 warm steps", warm);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("transformer");
    TCase *tc = tcase_create("block");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, block_matches_written_out_composition, 0, 4);
    tcase_add_test(tc, parameters_and_init);
    tcase_add_test(tc, bad_input_refused_by_name);
    tcase_add_test(tc, warm_step_allocates_nothing);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
