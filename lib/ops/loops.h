/*
 * Array loops shared by the elementwise, reduction and loss ops: the parallel grain, a row
 * iterator for element ranges, and sums with a fixed summation tree.
 *
 * Determinism: every reduction below adds in an order that depends only on the sizes, never on
 * the thread count or the vector width:
 *   - a run of n elements is summed in TG__LANES interleaved lanes (lane k takes elements
 *     k, k + TG__LANES, …), the lanes are folded pairwise (k + 8, then + 4, + 2, + 1), then the
 *     tail is added in order. That is plain C with no reassociation for the compiler to do, so
 *     SLP vectorization gives the same bits at any width (ISO C, no -ffast-math, no FMA
 *     contraction: see vmath.h);
 *   - a run longer than TG__GRAIN is cut into blocks of TG__GRAIN elements whose lane sums
 *     are added in block order — the chunks of tg__parallel_for(n, TG__GRAIN, …), so a
 *     threaded sum (one partial per chunk, partials added in chunk order afterwards) and a
 *     serial one give the same bits.
 */
#ifndef TG_OPS_LOOPS_H
#define TG_OPS_LOOPS_H

#include <stddef.h>

#include "../internal.h"
#include "vmath.h"

/* Elements per parallel chunk (~128 KiB of float, L2-resident), as ACT_GRAIN in activation.c.
 * Tensors of at most TG__GRAIN elements run inline on the calling thread: a small net pays no
 * threading cost. */
#define TG__GRAIN ((size_t)32768)

/* Rows of `cols` elements per chunk for loops split by whole rows (at least 1). */
static inline size_t
tg__grain_rows(size_t cols)
{
    return cols && cols < TG__GRAIN ? TG__GRAIN / cols : 1;
}

/*
 * Runs the body over the elements [e0, e1) of a (rows x cols) row-major array, cut at row
 * boundaries, with `row`, `col`, `nrows`, `ncols` set: either one segment of one row
 * (nrows = 1, elements col … col + ncols - 1 of it), or nrows whole rows (col = 0,
 * ncols = cols). The segments cover [e0, e1) in order; at most three per call.
 */
#define TG__FOR_SEGMENTS(e0, e1, cols, ...)                                                        \
    do {                                                                                           \
        size_t pos_ = (e0), end_ = (e1), cols_ = (cols);                                           \
        while (pos_ < end_) {                                                                      \
            size_t row = pos_ / cols_, col = pos_ % cols_, nrows, ncols;                           \
            if (col != 0 || end_ - pos_ < cols_) {                                                 \
                nrows = 1;                                                                         \
                ncols = cols_ - col < end_ - pos_ ? cols_ - col : end_ - pos_;                     \
            } else {                                                                               \
                nrows = (end_ - pos_) / cols_;                                                     \
                ncols = cols_;                                                                     \
            }                                                                                      \
            __VA_ARGS__;                                                                           \
            pos_ += nrows * ncols;                                                                 \
        }                                                                                          \
    } while (0)

/*
 * The body of a column sum acc[j] += Σ_i TERM over an (nrows x ncols) array, rows in order,
 * TERM an expression of the element's offset `at` (i·ncols + j). Each column's additions keep
 * that order, so the bits are those of the plain loop. On short rows the plain loop (rows
 * outer) is bound by its own stores: every add into acc waits for the store of the row before
 * (store-to-load forwarding, several cycles a row; a third of a bias's backward on 32x16).
 * Short rows therefore keep TG__COLSUM_BLOCK columns at a time in locals, which the compiler
 * holds in registers across the rows, and a narrower tail column by column. Long rows keep the
 * plain loop: its rows are independent enough to overlap, where a block's sum is one chain.
 */
#define TG__COLSUM_BLOCK 16
#define TG__COLSUM_SHORT 128
#define TG__COLSUM(T, acc, nrows, ncols, TERM)                                                     \
    do {                                                                                           \
        size_t j0_ = 0;                                                                            \
        if ((ncols) < TG__COLSUM_SHORT) {                                                          \
            for (; j0_ + TG__COLSUM_BLOCK <= (ncols); j0_ += TG__COLSUM_BLOCK) {                   \
                T s_[TG__COLSUM_BLOCK];                                                            \
                for (size_t k_ = 0; k_ < TG__COLSUM_BLOCK; k_++)                                   \
                    s_[k_] = (acc)[j0_ + k_];                                                      \
                for (size_t i_ = 0; i_ < (nrows); i_++)                                            \
                    for (size_t k_ = 0; k_ < TG__COLSUM_BLOCK; k_++) {                             \
                        size_t at = i_ * (ncols) + j0_ + k_;                                       \
                        s_[k_] += (TERM);                                                          \
                    }                                                                              \
                for (size_t k_ = 0; k_ < TG__COLSUM_BLOCK; k_++)                                   \
                    (acc)[j0_ + k_] = s_[k_];                                                      \
            }                                                                                      \
            for (; j0_ < (ncols); j0_++) {                                                         \
                T s_ = (acc)[j0_];                                                                 \
                for (size_t i_ = 0; i_ < (nrows); i_++) {                                          \
                    size_t at = i_ * (ncols) + j0_;                                                \
                    s_ += (TERM);                                                                  \
                }                                                                                  \
                (acc)[j0_] = s_;                                                                   \
            }                                                                                      \
        } else {                                                                                   \
            for (size_t i_ = 0; i_ < (nrows); i_++)                                                \
                for (size_t j_ = 0; j_ < (ncols); j_++) {                                          \
                    size_t at = i_ * (ncols) + j_;                                                 \
                    (acc)[j_] += (TERM);                                                           \
                }                                                                                  \
        }                                                                                          \
    } while (0)

enum { TG__LANES = 16 };

/* Folds the lanes pairwise (k + 8, + 4, + 2, + 1) into l[0]. */
#define TG__FOLD_LANES(l)                                                                          \
    do {                                                                                           \
        for (size_t w_ = TG__LANES / 2; w_ > 0; w_ /= 2)                                           \
            for (size_t k_ = 0; k_ < w_; k_++)                                                     \
                (l)[k_] += (l)[k_ + w_];                                                           \
    } while (0)

/*
 * Defines `static ACC name(<the variadic parameters>, size_t n)`: Σ_{i<n} TERM in the lane
 * tree above, where TERM is an expression of the index i (accumulated in type ACC). Compiled
 * per ISA (TG__VEC_CLONES). No blocking: callers cut runs longer than TG__GRAIN.
 */
#define TG__DEFINE_LANE_SUM(name, ACC, TERM, ...)                                                  \
    TG__VEC_CLONES static ACC name(__VA_ARGS__, size_t n)                                          \
    {                                                                                              \
        ACC l[TG__LANES] = {0};                                                                    \
        size_t base = 0;                                                                           \
        for (; base + TG__LANES <= n; base += TG__LANES)                                           \
            for (size_t k = 0; k < TG__LANES; k++) {                                               \
                size_t i = base + k;                                                               \
                l[k] += (TERM);                                                                    \
            }                                                                                      \
        TG__FOLD_LANES(l);                                                                         \
        ACC s = l[0];                                                                              \
        for (size_t i = base; i < n; i++)                                                          \
            s += (TERM);                                                                           \
        return s;                                                                                  \
    }

/*
 * A reduction over any set of axes as one strided pass: the input seen as 4-D (leading 1s),
 * os[] the output's element strides along those dims (0 along a reduced axis), count the
 * number of reduced elements per output. TG__RED4_FOR(r, body) runs body for every input
 * element in row-major order with i its offset and o its output's offset; a body that
 * accumulates into o therefore adds in a fixed order.
 */
struct tg__red4 {
    size_t n[4], os[4];
    size_t count;
};

static inline struct tg__red4
tg__red4_of(const tg_tensor *x, unsigned axes)
{
    struct tg__red4 r;
    size_t stride = 1;
    r.count = 1;
    for (int i = 3; i >= 0; i--) {
        int ax = x->ndim - 4 + i;
        r.n[i] = ax >= 0 ? (size_t)x->dims[ax] : 1;
        bool reduced = ax >= 0 && (axes >> ax & 1);
        r.os[i] = reduced ? 0 : stride;
        if (reduced)
            r.count *= r.n[i];
        else
            stride *= r.n[i];
    }
    return r;
}

#define TG__RED4_FOR(r, ...)                                                                       \
    do {                                                                                           \
        if (!((r).n[0] && (r).n[1] && (r).n[2] && (r).n[3]))                                       \
            break; /* no elements: do not spin through the other dims (2^40 x 0) */                \
        size_t i = 0;                                                                              \
        for (size_t b0 = 0; b0 < (r).n[0]; b0++)                                                   \
            for (size_t b1 = 0; b1 < (r).n[1]; b1++)                                               \
                for (size_t b2 = 0; b2 < (r).n[2]; b2++) {                                         \
                    size_t o_ = b0 * (r).os[0] + b1 * (r).os[1] + b2 * (r).os[2];                  \
                    for (size_t b3 = 0; b3 < (r).n[3]; b3++, i++) {                                \
                        size_t o = o_ + b3 * (r).os[3];                                            \
                        __VA_ARGS__;                                                               \
                    }                                                                              \
                }                                                                                  \
    } while (0)

#endif /* TG_OPS_LOOPS_H */
