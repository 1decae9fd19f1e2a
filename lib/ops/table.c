/*
 * The only list of built-in ops. Backward never switches on an op: it calls node->op->vjp.
 * Adding an op: write its block (math comment, forward, VJP, tg_op) in the file of its family,
 * add an enum value in ops.h and a line here; tests walk this table.
 */
#include <string.h>

#include "ops.h"

const tg_op *const tg__builtin_ops[TG_OP_COUNT] = {
    [TG_OP_MATMUL] = &tg__op_matmul,
    [TG_OP_TRANSPOSE] = &tg__op_transpose,
    [TG_OP_ADD] = &tg__op_add,
    [TG_OP_SUB] = &tg__op_sub,
    [TG_OP_MUL] = &tg__op_mul,
    [TG_OP_SCALE] = &tg__op_scale,
    [TG_OP_SUM] = &tg__op_sum,
    [TG_OP_MEAN] = &tg__op_mean,
    [TG_OP_IDENTITY] = &tg__op_identity,
    [TG_OP_SIGMOID] = &tg__op_sigmoid,
    [TG_OP_TANH] = &tg__op_tanh,
    [TG_OP_RELU] = &tg__op_relu,
    [TG_OP_LEAKY_RELU] = &tg__op_leaky_relu,
    [TG_OP_SOFTPLUS] = &tg__op_softplus,
    [TG_OP_GELU] = &tg__op_gelu,
    [TG_OP_MSE_HALF] = &tg__op_mse_half,
    [TG_OP_MSE] = &tg__op_mse,
    [TG_OP_SOFTMAX_XENT] = &tg__op_softmax_xent,
    [TG_OP_BIAS_ACT] = &tg__op_bias_act,
    [TG_OP_NEG] = &tg__op_neg,
    [TG_OP_EXP] = &tg__op_exp,
    [TG_OP_LOG] = &tg__op_log,
    [TG_OP_LOG1P] = &tg__op_log1p,
    [TG_OP_SQRT] = &tg__op_sqrt,
    [TG_OP_SQUARE] = &tg__op_square,
    [TG_OP_ABS] = &tg__op_abs,
    [TG_OP_POW] = &tg__op_pow,
    [TG_OP_CLAMP] = &tg__op_clamp,
    [TG_OP_SILU] = &tg__op_silu,
    [TG_OP_ELU] = &tg__op_elu,
    [TG_OP_GELU_TANH] = &tg__op_gelu_tanh,
    [TG_OP_DIV] = &tg__op_div,
    [TG_OP_MAXIMUM] = &tg__op_maximum,
    [TG_OP_MINIMUM] = &tg__op_minimum,
    [TG_OP_WHERE] = &tg__op_where,
    [TG_OP_MAX] = &tg__op_max,
    [TG_OP_MIN] = &tg__op_min,
    [TG_OP_VAR] = &tg__op_var,
    [TG_OP_RESHAPE] = &tg__op_reshape,
    [TG_OP_PERMUTE] = &tg__op_permute,
    [TG_OP_EXPAND] = &tg__op_expand,
    [TG_OP_SLICE] = &tg__op_slice,
    [TG_OP_CONCAT] = &tg__op_concat,
    [TG_OP_STACK] = &tg__op_stack,
    [TG_OP_PAD] = &tg__op_pad,
    [TG_OP_INDEX_SELECT] = &tg__op_index_select,
    [TG_OP_GATHER] = &tg__op_gather,
    [TG_OP_DETACH] = &tg__op_detach,
    [TG_OP_SOFTMAX] = &tg__op_softmax,
    [TG_OP_LOG_SOFTMAX] = &tg__op_log_softmax,
    [TG_OP_LOGSUMEXP] = &tg__op_logsumexp,
    [TG_OP_NLL_LOSS] = &tg__op_nll_loss,
    [TG_OP_CROSS_ENTROPY] = &tg__op_cross_entropy,
    [TG_OP_BCE_WITH_LOGITS] = &tg__op_bce_with_logits,
    [TG_OP_L1] = &tg__op_l1,
    [TG_OP_HUBER] = &tg__op_huber,
    [TG_OP_SMOOTH_L1] = &tg__op_smooth_l1,
    [TG_OP_BMM] = &tg__op_bmm,
    [TG_OP_CONV2D] = &tg__op_conv2d,
    [TG_OP_CONV_TRANSPOSE2D] = &tg__op_conv_transpose2d,
    [TG_OP_MAX_POOL2D] = &tg__op_max_pool2d,
    [TG_OP_AVG_POOL2D] = &tg__op_avg_pool2d,
    [TG_OP_DROPOUT] = &tg__op_dropout,
    [TG_OP_BATCH_NORM] = &tg__op_batch_norm,
    [TG_OP_GROUP_NORM] = &tg__op_group_norm,
    [TG_OP_SCALED_DOT_PRODUCT_ATTENTION] = &tg__op_scaled_dot_product_attention,
    [TG_OP_LAYER_NORM] = &tg__op_layer_norm,
    [TG_OP_RMS_NORM] = &tg__op_rms_norm,
    [TG_OP_LSTM_CELL] = &tg__op_lstm_cell,
    [TG_OP_GRU_CELL] = &tg__op_gru_cell,
};

_Static_assert(sizeof tg__builtin_ops / sizeof tg__builtin_ops[0] == TG_OP_COUNT,
               "tg__builtin_ops out of sync with enum tg__op_id");

/* Ops whose VJP overwrites a fresh input gradient itself (tg__grad_take_fresh) instead of
 * having the tape zero it first: the one-input elementwise ops (unary.c), the softmax
 * family, bias_act and matmul (a hidden layer's dA = dZ·W, written with beta = 0), where the
 * saved pass is a large part of the backward. Every other VJP adds. */
static const bool takes_fresh[TG_OP_COUNT] = {
    [TG_OP_IDENTITY] = true, [TG_OP_SIGMOID] = true, [TG_OP_TANH] = true,
    [TG_OP_RELU] = true,     [TG_OP_LEAKY_RELU] = true, [TG_OP_SOFTPLUS] = true,
    [TG_OP_GELU] = true,     [TG_OP_NEG] = true,     [TG_OP_EXP] = true,
    [TG_OP_LOG] = true,      [TG_OP_LOG1P] = true,   [TG_OP_SQRT] = true,
    [TG_OP_SQUARE] = true,   [TG_OP_ABS] = true,     [TG_OP_POW] = true,
    [TG_OP_CLAMP] = true,    [TG_OP_SILU] = true,    [TG_OP_ELU] = true,
    [TG_OP_GELU_TANH] = true, [TG_OP_SOFTMAX] = true, [TG_OP_LOG_SOFTMAX] = true,
    [TG_OP_LOGSUMEXP] = true, [TG_OP_BIAS_ACT] = true, [TG_OP_MATMUL] = true,
};

bool
tg__vjp_takes_fresh(const tg_op *op)
{
    for (size_t i = 0; i < TG_OP_COUNT; i++)
        if (tg__builtin_ops[i] == op)
            return takes_fresh[i];
    return false;
}

size_t
tg_builtin_op_count(void)
{
    return TG_OP_COUNT;
}

const tg_op *
tg_builtin_op(size_t i)
{
    return i < TG_OP_COUNT ? tg__builtin_ops[i] : NULL;
}

const tg_op *
tg_builtin_op_find(const char *name)
{
    for (size_t i = 0; name && i < TG_OP_COUNT; i++)
        if (tg__builtin_ops[i] && strcmp(tg__builtin_ops[i]->name, name) == 0)
            return tg__builtin_ops[i];
    return NULL;
}
