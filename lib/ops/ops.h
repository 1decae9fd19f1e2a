/*
 * The built-in ops. Each lives in one file of its family with its math comment, forward and
 * VJP side by side; table.c is the only list of them.
 */
#ifndef TG_OPS_H
#define TG_OPS_H

#include "../internal.h"

enum tg__op_id {
    TG_OP_MATMUL,
    TG_OP_TRANSPOSE,
    TG_OP_ADD,
    TG_OP_SUB,
    TG_OP_MUL,
    TG_OP_SCALE,
    TG_OP_SUM,
    TG_OP_MEAN,
    TG_OP_IDENTITY,
    TG_OP_SIGMOID,
    TG_OP_TANH,
    TG_OP_RELU,
    TG_OP_LEAKY_RELU,
    TG_OP_SOFTPLUS,
    TG_OP_GELU,
    TG_OP_MSE_HALF,
    TG_OP_MSE,
    TG_OP_SOFTMAX_XENT,
    TG_OP_BIAS_ACT,
    /* math.c */
    TG_OP_NEG,
    TG_OP_EXP,
    TG_OP_LOG,
    TG_OP_LOG1P,
    TG_OP_SQRT,
    TG_OP_SQUARE,
    TG_OP_ABS,
    TG_OP_POW,
    TG_OP_CLAMP,
    /* activation.c */
    TG_OP_SILU,
    TG_OP_ELU,
    TG_OP_GELU_TANH,
    /* binary.c */
    TG_OP_DIV,
    TG_OP_MAXIMUM,
    TG_OP_MINIMUM,
    TG_OP_WHERE,
    /* reduce.c */
    TG_OP_MAX,
    TG_OP_MIN,
    TG_OP_VAR,
    /* shape.c */
    TG_OP_RESHAPE,
    TG_OP_PERMUTE,
    TG_OP_EXPAND,
    TG_OP_SLICE,
    TG_OP_CONCAT,
    TG_OP_STACK,
    TG_OP_PAD,
    TG_OP_INDEX_SELECT,
    TG_OP_GATHER,
    TG_OP_DETACH,
    /* softmax.c */
    TG_OP_SOFTMAX,
    TG_OP_LOG_SOFTMAX,
    TG_OP_LOGSUMEXP,
    /* nll.c */
    TG_OP_NLL_LOSS,
    TG_OP_CROSS_ENTROPY,
    /* loss_pointwise.c */
    TG_OP_BCE_WITH_LOGITS,
    TG_OP_L1,
    TG_OP_HUBER,
    TG_OP_SMOOTH_L1,
    /* linalg.c */
    TG_OP_BMM,
    /* conv.c, conv_transpose.c, pool.c */
    TG_OP_CONV2D,
    TG_OP_CONV_TRANSPOSE2D,
    TG_OP_MAX_POOL2D,
    TG_OP_AVG_POOL2D,
    /* dropout.c, norm.c */
    TG_OP_DROPOUT,
    TG_OP_BATCH_NORM,
    TG_OP_GROUP_NORM,
    /* attention.c */
    TG_OP_SCALED_DOT_PRODUCT_ATTENTION,
    /* layer_norm.c */
    TG_OP_LAYER_NORM,
    TG_OP_RMS_NORM,
    /* recurrent.c */
    TG_OP_LSTM_CELL,
    TG_OP_GRU_CELL,
    TG_OP_COUNT
};

extern const tg_op tg__op_matmul, tg__op_transpose;                              /* linalg.c */
extern const tg_op tg__op_add, tg__op_sub, tg__op_mul, tg__op_scale;             /* elementwise.c */
extern const tg_op tg__op_sum, tg__op_mean;                                      /* reduce.c */
extern const tg_op tg__op_identity, tg__op_sigmoid, tg__op_tanh, tg__op_relu,    /* activation.c */
    tg__op_leaky_relu, tg__op_softplus, tg__op_gelu, tg__op_bias_act;
extern const tg_op tg__op_silu, tg__op_elu, tg__op_gelu_tanh;                   /* activation.c */
extern const tg_op tg__op_neg, tg__op_exp, tg__op_log, tg__op_log1p, tg__op_sqrt, /* math.c */
    tg__op_square, tg__op_abs, tg__op_pow, tg__op_clamp;
extern const tg_op tg__op_mse_half, tg__op_mse, tg__op_softmax_xent;             /* loss.c */

extern const tg_op tg__op_div, tg__op_maximum, tg__op_minimum, tg__op_where; /* binary.c */
/* Reductions (reduce.c): the axes of a tg_*_axes call as a bit mask (n_axes 0: all), or false
 * with the tape's error set naming op, x and the bad axis; and the output shape rule from
 * attr.axes and attr.keepdims. */
bool tg__axes_mask(tg_tape *t, const char *op, const tg_tensor *x, const int *axes, int n_axes,
                   unsigned *mask);
tg_status tg__reduce_shape(tg_node *nd, int *ndim, int64_t *dims);

extern const tg_op tg__op_max, tg__op_min, tg__op_var;                          /* reduce.c */
extern const tg_op tg__op_reshape, tg__op_permute, tg__op_expand, tg__op_slice, /* shape.c */
    tg__op_concat, tg__op_stack, tg__op_pad, tg__op_index_select, tg__op_gather, tg__op_detach;
extern const tg_op tg__op_softmax, tg__op_log_softmax, tg__op_logsumexp;         /* softmax.c */
extern const tg_op tg__op_nll_loss, tg__op_cross_entropy;                     /* nll.c */
extern const tg_op tg__op_bce_with_logits, tg__op_l1, tg__op_huber, tg__op_smooth_l1; /* loss_pointwise.c */
extern const tg_op tg__op_bmm;                                                  /* linalg.c */
extern const tg_op tg__op_conv2d;                                               /* conv.c */
extern const tg_op tg__op_conv_transpose2d;                         /* conv_transpose.c */
extern const tg_op tg__op_max_pool2d, tg__op_avg_pool2d;                        /* pool.c */
extern const tg_op tg__op_dropout;                                              /* dropout.c */
extern const tg_op tg__op_batch_norm, tg__op_group_norm;                        /* norm.c */
/* The differentiable VJPs of the normalizations (norm.c, used by layer_norm.c too), recorded
 * with ops over axes (kept): x̂ = (x − mean(x)) r with r = (mean((x − mean(x))²) + ε)^−½
 * (into *r), and the gradient at x given u at x̂, r (u − mean(u) − x̂ mean(u ⊙ x̂)). The
 * tensors may be handles (what the recording functions return). */
tg_tensor *tg__normalize_graph(tg_tape *t, tg_tensor *x, const int *axes, int n, double eps,
                               tg_tensor **r);
tg_tensor *tg__normalized_dx_graph(tg_tape *t, tg_tensor *u, tg_tensor *xhat, tg_tensor *r,
                                   const int *axes, int n);
extern const tg_op tg__op_scaled_dot_product_attention;                         /* attention.c */
extern const tg_op tg__op_layer_norm, tg__op_rms_norm;                          /* layer_norm.c */
extern const tg_op tg__op_lstm_cell, tg__op_gru_cell;                          /* recurrent.c */
/* The cells on rows row0 + b·rstep of a whole sequence's input projection xw (the layer
 * helpers'; exact_rows: xw is (B, G·H) itself, as the public tg_lstm_cell / tg_gru_cell). */
tg_tensor *tg__lstm_cell_rows(tg_tape *t, tg_tensor *xw, int64_t row0, int64_t rstep,
                              bool exact_rows, tg_tensor *state, tg_tensor *w_hh,
                              tg_tensor *b_ih, tg_tensor *b_hh);
tg_tensor *tg__gru_cell_rows(tg_tape *t, tg_tensor *xw, int64_t row0, int64_t rstep,
                             bool exact_rows, tg_tensor *h, tg_tensor *w_hh, tg_tensor *b_ih,
                             tg_tensor *b_hh);
extern const tg_op *const tg__builtin_ops[TG_OP_COUNT];

#endif /* TG_OPS_H */
