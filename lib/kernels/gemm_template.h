/*
 * The packed, cache-blocked matrix multiply (GotoBLAS/BLIS structure), written once and
 * instantiated per ISA and element type by gemm_generic.c, gemm_avx2.c and gemm_avx512.c.
 *
 *   C (m x n) = alpha · op(A) (m x k) · op(B) (k x n) + beta · C
 *
 *   for jc in 0..n step NC            B block  (KC x NC) lives in L3, packed once per (jc, pc)
 *     for pc in 0..k step KC
 *       pack op(B)[pc.., jc..] into NR-wide micro-panels: Bp[panel][p][0..NR)
 *       for ic in 0..m step MC        A block  (MC x KC) lives in L2
 *         pack op(A)[ic.., pc..] into MR-tall micro-panels: Ap[panel][p][0..MR)
 *         for jr in 0..nc step NR     B micro-panel (KC x NR) stays in L1
 *           for ir in 0..mc step MR   MR x NR tile of C in registers
 *             acc = Σ_p Ap[ir][p][:] ⊗ Bp[jr][p][:]   (p ascending)
 *             C_tile = alpha·acc + beta'·C_tile      (beta' = beta for pc = 0, else 1)
 *
 * A short C (op(A)'s kc run fits tg__gemm_short_c_bytes: m is a batch) skips the jc and ic
 * loops and packs B a few columns at a time instead (short_c, below); the sums are the same.
 * A small product (both operands fit tg__gemm_direct_bytes) packs no A and at most one B
 * panel at a time (direct, below): the micro-kernel reads A, and a plain B, where they lie;
 * the sums are the same again.
 *
 * Each C element therefore sees its k products summed in runs of at most KC, in ascending p,
 * then folded into C in ascending pc — an order fixed by k and KC alone, not by how the caller
 * splits C between threads. Transposes only change the packing loops' addressing, so
 * backward's dZ·Aᵀ and Wᵀ·dZ never build a transposed copy. Partial panels are zero-padded,
 * so the micro-kernel always runs a full MR x NR tile; edge tiles go through a local tile.
 *
 * The includer defines:
 *   GT              element type (float or double)
 *   GT_PREFIX       identifier prefix for this instantiation's static functions
 *   GT_BLOCK        name of the generated tg__gemm_block_* function
 *   GT_COST         name of the generated tg__gemm_cost_* function (gemm_impl.h)
 *   GT_REF          the reference gemm of this type (fallback when no workspace)
 *   GT_MR, GT_NR    register tile; GT_NR a multiple of GT_VL
 *   GT_MC, GT_KC, GT_NC   cache blocks; GT_MC a multiple of GT_MR, GT_NC of GT_NR
 *   GT_VL, GT_VT    vector lanes and type
 *   GT_V_ZERO(), GT_V_LOAD(p) (64-byte-aligned packed data), GT_V_LOADU(p), GT_V_STOREU(p, v),
 *   GT_V_SET1(x), GT_V_MUL(a, b), GT_V_FMA(a, b, c) = a·b + c,
 *   GT_S_FMA(a, b, c)   the scalar twin of GT_V_FMA (same rounding), for edge tiles.
 * and optionally, for packing a transposed B with vector shuffles (transpose_x86.h):
 *   GT_TB, GT_TRANSPOSE(src, lds, dst, ldd)   dst[p·ldd + j] = src[j·lds + p], p, j < GT_TB;
 *                   GT_NR a multiple of GT_TB.
 * and optionally GT_B_BLOCK_BYTES, an expression: the most bytes a packed KC x NC block of B
 * may take; NC shrinks below GT_NC (in whole NR panels) to stay within it. NC only sets
 * which columns are packed together, so it changes no bits.
 * and optionally GT_PREFETCH_B_PANEL, defined: the blocked order prefetches the next B
 * micro-panel into L2 while the current one computes (macro_kernel says where that pays).
 * and optionally GT_DIRECT, defined: the path has the direct order (worth it with SIMD
 * micro-kernels; the generic path's scalar tile only vectorizes over packed, contiguous data),
 * with GT_V_LOADU_N(p, n), GT_V_STOREU_N(p, v, n): the first n < GT_VL lanes only (masked:
 * nothing past them is read or written), with which it stores edge tiles from registers.
 *
 * Block sizes are balanced: k is cut into ceil(k/KC) runs of equal length (rounded up to 4)
 * rather than full KC runs and a short tail, and likewise m and n into MR/NR-aligned blocks of
 * at most MC and NC — a short tail block repacks a whole operand for a sliver of work (n = 4096
 * with NC = 4080 used to pack all of A again for 16 columns). The runs depend on k alone, so
 * the summation order stays independent of the thread split.
 */
#include <stdint.h>
#include <string.h>

#include "gemm_impl.h"
#include "kernels.h"

#define GT_CAT2(a, b) a##b
#define GT_CAT(a, b) GT_CAT2(a, b)
#define GT_FN(name) GT_CAT(GT_PREFIX, name)

#define GT_NV (GT_NR / GT_VL)
#if defined(__GNUC__)
#define GT_PREFETCH(p) __builtin_prefetch(p, 1, 3)
#define GT_PREFETCH_READ(p) __builtin_prefetch(p, 0, 2)
#else
#define GT_PREFETCH(p) ((void)(p))
#define GT_PREFETCH_READ(p) ((void)(p))
#endif

_Static_assert(GT_NR % GT_VL == 0, "NR must be a whole number of vectors");
_Static_assert(GT_MC % GT_MR == 0, "MC must be a whole number of MR panels");
_Static_assert(GT_NC % GT_NR == 0, "NC must be a whole number of NR panels");

/*
 * A register tile into C:
 *   C = alpha·acc                 when beta = 0 (C is not read: NaN there does not propagate)
 *   C = fma(beta, C, alpha·acc)   otherwise (beta = 1 gives C + alpha·acc rounded once)
 */
#if defined(__GNUC__)
__attribute__((always_inline))
#endif
static inline void
GT_FN(store_acc)(GT_VT acc[GT_MR][GT_NV], GT *restrict c, size_t ldc, GT alpha, GT beta)
{
    GT_VT va = GT_V_SET1(alpha);
    if (beta == 0) {
#pragma GCC unroll 32
        for (int i = 0; i < GT_MR; i++)
#pragma GCC unroll 8
            for (int v = 0; v < GT_NV; v++)
                GT_V_STOREU(c + (size_t)i * ldc + v * GT_VL, GT_V_MUL(va, acc[i][v]));
    } else {
        GT_VT vb = GT_V_SET1(beta);
#pragma GCC unroll 32
        for (int i = 0; i < GT_MR; i++)
#pragma GCC unroll 8
            for (int v = 0; v < GT_NV; v++) {
                GT *cij = c + (size_t)i * ldc + v * GT_VL;
                GT_V_STOREU(cij, GT_V_FMA(vb, GT_V_LOADU(cij), GT_V_MUL(va, acc[i][v])));
            }
    }
}

/*
 * Micro-kernel: acc (MR x NR) = Σ_{p<kc} ap[p][0..MR) ⊗ bp[p][0..NR), then store_acc.
 * ap and bp are packed and 64-byte aligned; c is any row-major tile with row stride ldc.
 */
#if defined(__GNUC__)
/* Kept out of line: inlined into the block loops, the 12-16 accumulators compete with the loop
 * state for the 16 AVX2 registers and gcc 12 reloaded B from memory for every FMA (18 loads
 * per 12 FMAs; B-wide f32 603-646 ms per step inlined, 555-592 out of line). One call per
 * MR x NR x KC tile costs nothing measurable. */
__attribute__((noinline))
#endif
static void
GT_FN(micro_kernel)(size_t kc, const GT *restrict ap, const GT *restrict bp, GT *restrict c,
                    size_t ldc, GT alpha, GT beta)
{
    GT_VT acc[GT_MR][GT_NV];
#pragma GCC unroll 32
    for (int i = 0; i < GT_MR; i++) {
        GT_PREFETCH(c + (size_t)i * ldc);
        GT_PREFETCH(c + (size_t)i * ldc + GT_NR - 1);
#pragma GCC unroll 8
        for (int v = 0; v < GT_NV; v++)
            acc[i][v] = GT_V_ZERO();
    }

#pragma GCC unroll 4
    for (size_t p = 0; p < kc; p++) {
        GT_VT bv[GT_NV];
#pragma GCC unroll 8
        for (int v = 0; v < GT_NV; v++)
            bv[v] = GT_V_LOAD(bp + v * GT_VL);
#pragma GCC unroll 32
        for (int i = 0; i < GT_MR; i++) {
            GT_VT ai = GT_V_SET1(ap[i]);
#pragma GCC unroll 8
            for (int v = 0; v < GT_NV; v++)
                acc[i][v] = GT_V_FMA(ai, bv[v], acc[i][v]);
        }
        ap += GT_MR;
        bp += GT_NR;
    }

    GT_FN(store_acc)(acc, c, ldc, alpha, beta);
}

/* The first mr x nr values of a full tile (alpha·acc, row stride NR) into C, with the same
 * formula as a full tile's store_acc. */
static void
GT_FN(tile_to_c)(const GT *tile, GT *c, size_t ldc, size_t mr, size_t nr, GT beta)
{
    for (size_t i = 0; i < mr; i++) {
        GT *ci = c + i * ldc;
        const GT *ti = tile + i * GT_NR;
        if (beta == 0)
            for (size_t j = 0; j < nr; j++)
                ci[j] = ti[j];
        else
            for (size_t j = 0; j < nr; j++)
                ci[j] = GT_S_FMA(beta, ci[j], ti[j]);
    }
}

/* An edge tile (mr <= MR rows, nr <= NR columns): the micro-kernel writes alpha·acc into a
 * local full tile, then C takes its mr x nr corner. */
static void
GT_FN(edge_tile)(size_t kc, const GT *ap, const GT *bp, GT *c, size_t ldc, size_t mr, size_t nr,
                 GT alpha, GT beta)
{
    _Alignas(64) GT tile[GT_MR * GT_NR];
    GT_FN(micro_kernel)(kc, ap, bp, tile, GT_NR, alpha, 0);
    GT_FN(tile_to_c)(tile, c, ldc, mr, nr, beta);
}

/*
 * Packs op(A)[0..mc, 0..kc) into ceil(mc/MR) micro-panels, each kc x MR: dst[p·MR + i] =
 * op(A)[i][p], rows past mc zero. op(A)[i][p] is a[i·lda + p], or a[p·lda + i] transposed.
 */
static void
GT_FN(pack_a)(bool trans, size_t mc, size_t kc, const GT *restrict a, size_t lda,
              GT *restrict dst)
{
    for (size_t ir = 0; ir < mc; ir += GT_MR) {
        size_t mr = mc - ir < GT_MR ? mc - ir : GT_MR;
        if (trans) {
            /* Rows of stored A hold MR consecutive i for one p: contiguous copies. */
            for (size_t p = 0; p < kc; p++) {
                const GT *src = a + p * lda + ir;
                GT *d = dst + p * GT_MR;
                if (mr == GT_MR) {
#pragma GCC unroll 32
                    for (int i = 0; i < GT_MR; i++)
                        d[i] = src[i];
                } else {
                    for (size_t i = 0; i < GT_MR; i++)
                        d[i] = i < mr ? src[i] : 0;
                }
            }
        } else if (mr == GT_MR) {
            /* MR rows read in step, interleaved on the way out: a transpose, MR x kc -> kc x MR.
             * One scalar load and store per element cost ~1 cycle each: 37 % of a 128x10x256
             * product (every element of A is used by one tile only) and 3 % of a B-mnist step.
             * Where the path has a shuffle transpose, GT_TB columns of GROUPS x GT_TB rows go
             * through it: group g lands at dst[p·MR + g·TB ...], TB wide, so when GROUPS·TB >
             * MR the last group's stores run GROUPS·TB - MR (< TB) values into the next p's
             * row. Groups are stored last to first, so group 0 overwrites that spill; the
             * block's last row spills into the next block, or the scalar tail, or at p = kc
             * into the next panel's first row, all written later (the panels go in order, and
             * a panel that reads GROUPS·TB rows is never the last). Rows past MR are read but
             * never kept: valid rows of A as long as ir + GROUPS·TB <= mc; the panels past
             * that, and kc's last kc % TB values, go element by element. */
            const GT *src = a + ir * lda;
            size_t p_done = 0;
#ifdef GT_TB
            enum { GROUPS = (GT_MR + GT_TB - 1) / GT_TB };
            if (ir + GROUPS * GT_TB <= mc)
                for (; p_done + GT_TB <= kc; p_done += GT_TB)
                    for (int g = GROUPS - 1; g >= 0; g--)
                        GT_TRANSPOSE(src + (size_t)g * GT_TB * lda + p_done, lda,
                                     dst + p_done * GT_MR + (size_t)g * GT_TB, GT_MR);
#endif
            for (size_t p = p_done; p < kc; p++) {
#pragma GCC unroll 32
                for (int i = 0; i < GT_MR; i++)
                    dst[p * GT_MR + i] = src[(size_t)i * lda + p];
            }
        } else {
            for (size_t p = 0; p < kc; p++)
                for (size_t i = 0; i < GT_MR; i++)
                    dst[p * GT_MR + i] = i < mr ? a[(ir + i) * lda + p] : 0;
        }
        dst += kc * GT_MR;
    }
}

/*
 * Packs op(B)[0..kc, 0..nc) into ceil(nc/NR) micro-panels, each kc x NR: dst[p·NR + j] =
 * op(B)[p][j], columns past nc zero. op(B)[p][j] is b[p·ldb + j], or b[j·ldb + p] transposed.
 */
static void
GT_FN(pack_b)(bool trans, size_t kc, size_t nc, const GT *restrict b, size_t ldb,
              GT *restrict dst)
{
    if (!trans) {
        /* Rows of op(B) are rows of stored B. Eight rows at a time across every full panel:
         * each row is read front to back (eight streams the hardware prefetchers follow),
         * rather than one NR-wide piece of each of kc rows per panel, down the columns. */
        size_t full = nc / GT_NR * GT_NR;
        for (size_t p0 = 0; p0 < kc; p0 += 8) {
            size_t p1 = kc - p0 < 8 ? kc : p0 + 8;
            for (size_t jr = 0; jr < full; jr += GT_NR) {
                GT *panel = dst + jr * kc;
                for (size_t p = p0; p < p1; p++) {
                    const GT *src = b + p * ldb + jr;
#pragma GCC unroll 8
                    for (int v = 0; v < GT_NV; v++)
                        GT_V_STOREU(panel + p * GT_NR + v * GT_VL, GT_V_LOADU(src + v * GT_VL));
                }
            }
        }
        if (full < nc) {
            size_t nr = nc - full;
            GT *panel = dst + full * kc;
#ifdef GT_V_LOADU_N
            /* masked loads (zeros past nr, no read past the row): the element-by-element
             * copy of a narrow B had been most of a small dW's packing (B-small's dZᵀ·X) */
            for (size_t p = 0; p < kc; p++) {
                const GT *src = b + p * ldb + full;
                for (size_t v = 0; v < GT_NV; v++) {
                    size_t lo = v * GT_VL, left = nr > lo ? nr - lo : 0;
                    GT_V_STOREU(panel + p * GT_NR + lo,
                                left >= GT_VL ? GT_V_LOADU(src + lo)
                                : left        ? GT_V_LOADU_N(src + lo, left)
                                              : GT_V_ZERO());
                }
            }
#else
            for (size_t p = 0; p < kc; p++)
                for (size_t j = 0; j < GT_NR; j++)
                    panel[p * GT_NR + j] = j < nr ? b[p * ldb + full + j] : 0;
#endif
        }
        return;
    }
    for (size_t jr = 0; jr < nc; jr += GT_NR) {
        size_t nr = nc - jr < GT_NR ? nc - jr : GT_NR;
        /* Column j of op(B) is row j of stored B: NR rows read in step, transposed in
         * GT_TB x GT_TB blocks where the path has a shuffle transpose, element by element
         * for the rest (the last kc % GT_TB values, the last nr % GT_TB columns). A partial
         * panel takes the blocks too: B-small's 16-wide W2ᵀ in the 32-wide f32 panels had
         * gone element by element, a tenth of its step. */
        if (nr < GT_NR)
            memset(dst, 0, kc * GT_NR * sizeof(GT));
        size_t p_done = 0, j_done = 0;
#ifdef GT_TB
        p_done = kc / GT_TB * GT_TB;
        if (nr == GT_NR) { /* a constant bound: the loop over j0 is unrolled */
            j_done = GT_NR;
            for (size_t p0 = 0; p0 < p_done; p0 += GT_TB)
                for (size_t j0 = 0; j0 < GT_NR; j0 += GT_TB)
                    GT_TRANSPOSE(b + (jr + j0) * ldb + p0, ldb, dst + p0 * GT_NR + j0,
                                 GT_NR);
        } else {
            j_done = nr / GT_TB * GT_TB;
            for (size_t p0 = 0; p0 < p_done; p0 += GT_TB)
                for (size_t j0 = 0; j0 < j_done; j0 += GT_TB)
                    GT_TRANSPOSE(b + (jr + j0) * ldb + p0, ldb, dst + p0 * GT_NR + j0,
                                 GT_NR);
        }
#endif
        if (p_done < kc)
            for (size_t j = 0; j < j_done; j++)
                for (size_t p = p_done; p < kc; p++)
                    dst[p * GT_NR + j] = b[(jr + j) * ldb + p];
        for (size_t j = j_done; j < nr; j++)
            for (size_t p = 0; p < kc; p++)
                dst[p * GT_NR + j] = b[(jr + j) * ldb + p];
        dst += kc * GT_NR;
    }
}

static size_t
GT_FN(round_up)(size_t x, size_t to)
{
    return (x + to - 1) / to * to;
}

/*
 * Prefetch of the next B block while this one computes. Packing reads op(B) once; when B is
 * large and C short (m = 256 against a 4096 x 4096 weight, every B-wide product) that read
 * comes from memory at memory speed while the FMA units wait. Spreading prefetches of the
 * next block's lines evenly over this block's micro-kernel calls overlaps the two, and the
 * next pack_b reads from cache. (Device sweep, Xeon AVX-512, f32 B-wide shapes: 80-87 ->
 * 96-116 GFLOP/s in 4 of 5 rounds.) The next block's source is kc rows of nc elements, or
 * for a transposed B nc rows of kc elements; prefetched into L2 (locality 2), from where
 * lines that do not fit fall to L3.
 */
struct GT_FN(next_b) {
    const char *row;  /* start of the row being prefetched */
    size_t row_bytes, stride, rows_left, offset, lines_per_call;
};

static struct GT_FN(next_b)
GT_FN(next_b_start)(bool trans_b, const GT *b, size_t ldb, size_t pc, size_t kc, size_t jc,
                    size_t nc, size_t calls)
{
    size_t rows = trans_b ? nc : kc, row_len = trans_b ? kc : nc;
    struct GT_FN(next_b) nb = {
        .row = (const char *)(trans_b ? b + jc * ldb + pc : b + pc * ldb + jc),
        .row_bytes = row_len * sizeof(GT),
        .stride = ldb * sizeof(GT),
        .rows_left = rows,
    };
    size_t lines = rows * ((nb.row_bytes + 63) / 64);
    nb.lines_per_call = calls ? (lines + calls - 1) / calls : 0;
    return nb;
}

static inline void
GT_FN(next_b_step)(struct GT_FN(next_b) *nb)
{
    for (size_t i = 0; i < nb->lines_per_call && nb->rows_left; i++) {
        GT_PREFETCH_READ(nb->row + nb->offset);
        nb->offset += 64;
        if (nb->offset >= nb->row_bytes) {
            nb->offset = 0;
            nb->row += nb->stride;
            nb->rows_left--;
        }
    }
}

/* The step that cuts dim into ceil(dim / max) equal blocks, rounded up to a multiple of unit
 * (max is a multiple of unit, so the step never exceeds it). */
static size_t
GT_FN(balanced_step)(size_t dim, size_t max, size_t unit)
{
    size_t blocks = (dim + max - 1) / max;
    return GT_FN(round_up)((dim + blocks - 1) / blocks, unit);
}

/*
 * The tiles of one packed block: C[0..mc, 0..nc) (c at its top-left) from the packed A
 * panels ap (kc x MR each) and B panels bp (kc x NR each), B panel by B panel, so one B
 * micro-panel stays in L1 while the A panels stream past it. Spreads the next block's
 * prefetch over the calls.
 *
 * b_in_l3: bp is the blocked order's KC x NC block, packed before the first MC block and read
 * back from L3 by every later one. With GT_PREFETCH_B_PANEL the next micro-panel is prefetched
 * into L2, spread evenly over this panel's tiles, because on the AVX2 path on a Zen 3 the first
 * tiles of each B micro-panel waited on L3. Paired runs, 1 thread, Zen 3, old and new binaries
 * alternated (8 rounds; median ratio, rounds won): square f64 n = 2048 1.10 (7/8), 1024 1.035
 * (6/8), 768 1.04 (6/8); f32 n = 2048 1.03 (5/8), 1024 1.03 (5/8); B-wide's dW product (4096 x
 * 4096 x 256, Aᵀ) f32 1.16 (6/6); n = 512 f64 0.98 (2/8). The AVX-512 path does without it:
 * on the Zen 5 the prefetch loop stalled (a cpu-clock profile of f64 1024³ on 2 threads put
 * 1.9 % of the time on it) and the hardware prefetchers keep up alone; gemm_avx512.c has the
 * numbers. The short-C order packs each B strip right before use (still in L1/L2) and skips
 * it: there the prefetches only cost (B-wide's 256 x 4096 x 4096 products 0.96-1.00, 2-3 of 6).
 */
static void
GT_FN(macro_kernel)(size_t kc, size_t mc, size_t nc, const GT *ap, const GT *bp, bool b_in_l3,
                    GT *c, size_t ldc, GT alpha, GT beta, struct GT_FN(next_b) *next)
{
#ifdef GT_PREFETCH_B_PANEL
    size_t tiles = (mc + GT_MR - 1) / GT_MR;
    size_t panel_lines = kc * GT_NR * sizeof(GT) / 64; /* kc·NR elements, whole lines */
    size_t lines_per_tile = (panel_lines + tiles - 1) / tiles;
#else
    (void)b_in_l3;
#endif
    for (size_t jr = 0; jr < nc; jr += GT_NR) {
        size_t nr = nc - jr < GT_NR ? nc - jr : GT_NR;
        const GT *bpanel = bp + jr * kc;
#ifdef GT_PREFETCH_B_PANEL
        const char *bnext = b_in_l3 && jr + GT_NR < nc ? (const char *)(bpanel + kc * GT_NR)
                                                       : NULL;
        size_t bnext_line = 0;
#endif
        for (size_t ir = 0; ir < mc; ir += GT_MR) {
            size_t mr = mc - ir < GT_MR ? mc - ir : GT_MR;
            const GT *apanel = ap + ir * kc;
            GT *ctile = c + ir * ldc + jr;
            GT_FN(next_b_step)(next);
#ifdef GT_PREFETCH_B_PANEL
            for (size_t l = 0; bnext && l < lines_per_tile && bnext_line < panel_lines; l++)
                GT_PREFETCH_READ(bnext + 64 * bnext_line++);
#endif
            if (mr == GT_MR && nr == GT_NR)
                GT_FN(micro_kernel)(kc, apanel, bpanel, ctile, ldc, alpha, beta);
            else
                GT_FN(edge_tile)(kc, apanel, bpanel, ctile, ldc, mr, nr, alpha, beta);
        }
    }
}

/*
 * Short C: m small and B large, as in every product of an MLP whose m is the batch (B-wide:
 * 256 x 4096 x 4096). The blocked order below packs a KC x NC block of B (6 MiB) to memory and
 * reads it back from L3 once per MC block of A, and its packing runs apart from any compute.
 * Here op(A)'s whole kc run is packed once (it fits L2: tg__gemm_short_c_bytes, kernels.h),
 * and B a few columns at a time into a small buffer right before the m / MR tiles that use
 * them, while the next columns' source is prefetched: B is read from memory once and its
 * packed copy never leaves L1/L2. Same k runs and same tile arithmetic as the blocked order,
 * so the same bits (a thread's share of m may pick either order). Measured on the 8 products
 * of B-wide, f32, 1 thread, interleaved (Zen 3): 69.0 -> 76.5 GFLOP/s; B-mnist's 73.6 -> 81.0.
 *
 * How many columns at a time: a transposed B (X·Wᵀ) one NR-wide micro-panel, NR rows of W
 * read front to back. A plain B (dZ·W) GT_SHORT_STRIP = 64 columns: one micro-panel's worth
 * of a row is a single cache line, and with W 4096 wide the rows lie 16-32 KiB apart, so the
 * lines of one panel fell into 2-4 L2 sets and the prefetches of the next evicted each other.
 * B-wide's two dZ·W products, 1 thread, interleaved: f64 30.6 -> 33.8 GFLOP/s, f32 70.5 ->
 * 79.7 (16, 32, 128 and 256 columns in between or no better).
 */
#define GT_SHORT_STRIP (GT_NR > 64 ? GT_NR : 64 / GT_NR * GT_NR)

static void
GT_FN(short_c)(bool trans_a, bool trans_b, size_t m, size_t n, size_t k, size_t kc_step, GT alpha,
               const GT *a, size_t lda, const GT *b, size_t ldb, GT beta, GT *c, size_t ldc,
               GT *ap, GT *bp)
{
    size_t tiles = (m + GT_MR - 1) / GT_MR;
    size_t strip = trans_b ? GT_NR : GT_SHORT_STRIP;
    for (size_t pc = 0; pc < k; pc += kc_step) {
        size_t kc = k - pc < kc_step ? k - pc : kc_step;
        GT beta_block = pc == 0 ? beta : 1;
        GT_FN(pack_a)(trans_a, m, kc, trans_a ? a + pc * lda : a + pc, lda, ap);
        for (size_t jc = 0; jc < n; jc += strip) {
            size_t nc = n - jc < strip ? n - jc : strip;
            GT_FN(pack_b)(trans_b, kc, nc, trans_b ? b + jc * ldb + pc : b + pc * ldb + jc, ldb,
                          bp);
            struct GT_FN(next_b) next = {0};
            size_t next_jc = jc + strip;
            if (next_jc < n)
                next = GT_FN(next_b_start)(trans_b, b, ldb, pc, kc, next_jc,
                                           n - next_jc < strip ? n - next_jc : strip,
                                           tiles * ((nc + GT_NR - 1) / GT_NR));
            GT_FN(macro_kernel)(kc, m, nc, ap, bp, false, c + jc, ldc, alpha, beta_block, &next);
        }
    }
}

/*
 * Which order a product takes, and its block steps: a function of the shape (and of the byte
 * budgets in kernels.h) alone, so that GT_BLOCK, which runs the plan, and GT_COST, which
 * prices it for the dispatcher, agree.
 */
struct GT_FN(plan) {
    enum tg__gemm_order order;
    size_t kc_step, mc_step, nc_step;
    size_t a_elems; /* packed A (short-C: the whole kc run; blocked: one MC block), whole lines */
};

/* The direct order reads a plain B's rows where they lie, unless a row stride of whole 4 KiB
 * pages puts a panel's rows in the same two L1 sets (f32 n = 1024, 4096; f64 n = 512:
 * 0.82-0.86x the packed order). With a transposed A it packs B (see direct, below) unless
 * all of B's k rows lie in 4 KiB: those lines fall in distinct L1 sets, whatever the strides
 * (B-small's dW products, 32 x 16 or 32 x 2). */
static bool
GT_FN(direct_b_in_place)(bool trans_a, bool trans_b, size_t k, size_t ldb)
{
    if (trans_b)
        return false;
    return trans_a ? (double)k * (double)ldb * sizeof(GT) <= 4096
                   : ldb * sizeof(GT) % 4096 != 0;
}

#ifdef GT_DIRECT
#ifndef GT_V_STOREU_N
#error "GT_DIRECT needs GT_V_LOADU_N and GT_V_STOREU_N for its edge tiles"
#endif
/*
 * Direct order, for small products (both operands within tg__gemm_direct_bytes, kernels.h):
 * packing costs as much as the product when each packed value is used by only a few tiles (a
 * 64³ product packs 8k values for 262k multiply-adds; 128x10x256 packs all of A for one
 * mostly padded column of tiles). Here the micro-kernel broadcasts op(A)[i][p] from
 * a[i·rs_a + p·cs_a] where it lies, and loads op(B)'s row p, NR values, from b + p·rs_b: the
 * source for a plain B, one packed NR-wide panel for a transposed B (columns of op(B) are
 * rows of W) or a partial one (zero-padded: no read past the matrix). With a transposed A
 * (dW = dZᵀ·X) B is packed too: A's tile rows and B's rows, both one power-of-two stride
 * apart, fell into the same few L1 sets (f64 n = 256 0.84x the packed order, 1.04x with B
 * packed). Same tiles, same k runs, same FMA order as the packed micro-kernel: same bits.
 * Measured against the packed orders on this path (Zen 5, 1 thread, interleaved, 5-8 rounds):
 * square n = 32-128 1.07-1.52x f32 and 1.06-1.31x f64 over the four transposes, n = 256
 * 1.04-1.09x / 1.00-1.04x; 128x10x256 1.20x / 1.42x; B-mnist's 128x784x512 1.08x f32;
 * 16x32x16 1.07x. Past the operand budget it loses: f64 512x784x128 (Aᵀ, 1.3 MiB) 0.85x,
 * f32 512³ 0.95x, 1024³ 0.72x; and within it on short, wide products: m = 16-64, n = 1024-
 * 4096 f32 (512 f64) 0.79-0.86x, 0.79-0.98x with B packed when its rows are whole pages
 * apart, so rows of C of 4 KiB or more stay packed (make_plan); n = 500-1000 f32 won
 * 1.14-1.25x. AVX2 path: 1.00-1.23x on the same small shapes, 1.14-1.44x with masked edge
 * stores (store_acc_part). Generic path: 0.2-0.7x (not vectorized), so off.
 */
/* store_acc for the top-left mr x nr of the tile (mr <= MR, nr <= NR), the same formula.
 * Direct order against the packed orders (AVX-512, 1 thread, interleaved, whole products),
 * edge tiles through a local tile -> stored from registers: 32x16x2 (Bᵀ) 1.04x -> 2.7x,
 * 32x16x16 1.06x -> 1.9x, 128x10x256 1.20x -> 1.28x (f32), 1.42x -> 1.49x (f64), 100x37x61
 * (Aᵀ, Bᵀ) 1.19x -> 1.36x: the scalar copy-out had cost more than the multiply-adds. */
#if defined(__GNUC__)
__attribute__((always_inline))
#endif
static inline void
GT_FN(store_acc_part)(GT_VT acc[GT_MR][GT_NV], GT *restrict c, size_t ldc, size_t mr, size_t nr,
                      GT alpha, GT beta)
{
    GT_VT va = GT_V_SET1(alpha), vb = GT_V_SET1(beta);
#pragma GCC unroll 32
    for (int i = 0; i < GT_MR; i++) {
        if ((size_t)i >= mr)
            break;
#pragma GCC unroll 8
        for (int v = 0; v < GT_NV; v++) {
            size_t j = (size_t)v * GT_VL;
            if (j >= nr)
                break;
            GT *cij = c + (size_t)i * ldc + j;
            GT_VT t = GT_V_MUL(va, acc[i][v]);
            if (nr - j >= GT_VL) {
                if (beta != 0)
                    t = GT_V_FMA(vb, GT_V_LOADU(cij), t);
                GT_V_STOREU(cij, t);
            } else {
                if (beta != 0)
                    t = GT_V_FMA(vb, GT_V_LOADU_N(cij, nr - j), t);
                GT_V_STOREU_N(cij, t, nr - j);
            }
        }
    }
}

/*
 * The direct micro-kernel for a tile of at most ROWS x (VECS·VL) that C's edge leaves (the
 * whole MR x NR tile when ROWS = MR and VECS = NV): only those accumulators get multiply-adds.
 * Every element of C still gets the same FMAs in the same k order as in the full tile (each
 * lane is its own sum), so the bits are the same; the narrow tiles only skip the lanes and rows
 * that would be thrown away. Small networks are made of such edges: B-small's 32x1x16 output
 * layer ran a full 8 x 32 f32 tile for 1 column of C, 32 times the multiply-adds it needs.
 */
#if defined(__GNUC__)
__attribute__((always_inline))
#endif
static inline void
GT_FN(micro_kernel_direct_body)(int rows, int vecs, size_t kc, const GT *a, size_t rs_a,
                                size_t cs_a, size_t mr, size_t nr, const GT *b, size_t rs_b,
                                GT *restrict c, size_t ldc, GT alpha, GT beta)
{
    /* Rows past mr read row mr - 1 (inside A) and are never stored. */
    const GT *arow[GT_MR];
#pragma GCC unroll 32
    for (int i = 0; i < GT_MR; i++)
        arow[i] = a + ((size_t)i < mr ? (size_t)i : mr - 1) * rs_a;
    GT_VT acc[GT_MR][GT_NV];
#pragma GCC unroll 32
    for (int i = 0; i < GT_MR; i++)
#pragma GCC unroll 8
        for (int v = 0; v < GT_NV; v++)
            acc[i][v] = GT_V_ZERO();

    size_t a_off = 0;
#pragma GCC unroll 4
    for (size_t p = 0; p < kc; p++) {
        GT_VT bv[GT_NV];
#pragma GCC unroll 8
        for (int v = 0; v < vecs; v++)
            bv[v] = GT_V_LOADU(b + v * GT_VL);
#pragma GCC unroll 32
        for (int i = 0; i < rows; i++) {
            GT_VT ai = GT_V_SET1(arow[i][a_off]);
#pragma GCC unroll 8
            for (int v = 0; v < vecs; v++)
                acc[i][v] = GT_V_FMA(ai, bv[v], acc[i][v]);
        }
        a_off += cs_a;
        b += rs_b;
    }
    if (mr < GT_MR || nr < GT_NR) {
        GT_FN(store_acc_part)(acc, c, ldc, mr, nr, alpha, beta);
        return;
    }
    GT_FN(store_acc)(acc, c, ldc, alpha, beta);
}

/* One out-of-line kernel per tile shape, the shape a constant inside (the loops unroll).
 * NAME: rows (1, 2, 4, or mr for all MR) and vectors (w: all NV, n: one). */
#define GT_DIRECT_KERNEL(NAME, ROWS, VECS)                                                     \
    __attribute__((noinline)) static void GT_FN(NAME)(                                         \
        size_t kc, const GT *a, size_t rs_a, size_t cs_a, size_t mr, size_t nr, const GT *b,   \
        size_t rs_b, GT *restrict c, size_t ldc, GT alpha, GT beta)                            \
    {                                                                                          \
        GT_FN(micro_kernel_direct_body)(ROWS, VECS, kc, a, rs_a, cs_a, mr, nr, b, rs_b, c, ldc, \
                                        alpha, beta);                                          \
    }
GT_DIRECT_KERNEL(micro_kernel_direct, GT_MR, GT_NV)
GT_DIRECT_KERNEL(direct_2w, 2, GT_NV)
GT_DIRECT_KERNEL(direct_1w, 1, GT_NV)
#if GT_MR > 4
GT_DIRECT_KERNEL(direct_4w, 4, GT_NV)
#endif
#if GT_NV > 1
GT_DIRECT_KERNEL(direct_mrn, GT_MR, 1)
GT_DIRECT_KERNEL(direct_4n, 4, 1)
GT_DIRECT_KERNEL(direct_2n, 2, 1)
GT_DIRECT_KERNEL(direct_1n, 1, 1)
#endif
#undef GT_DIRECT_KERNEL

#if GT_NV > 1
/*
 * Two tiles' rows, one vector: C's rows [0, mr) (MR < mr <= 2·MR) by at most VL columns, the
 * shape of every product of a narrow layer (B-small's 16-wide ones: 32x16 outputs, n = VL f32).
 * There the MR x 1 kernel keeps MR accumulators, one FMA chain each: MR chains of a 4-cycle FMA
 * only just cover two FMA pipes, and each call pays its set-up and store for MR·kc FMAs. Here
 * 2·MR chains (2·MR <= NV·MR: the full tile's registers) halve the calls and leave the pipes
 * slack. Each element of C still gets the same FMAs in the same k order and store_acc_part's
 * formula: the bits of the MR-row tiles.
 */
__attribute__((noinline)) static void
GT_FN(direct_tall)(size_t kc, const GT *a, size_t rs_a, size_t cs_a, size_t mr, size_t nr,
                   const GT *b, size_t rs_b, GT *restrict c, size_t ldc, GT alpha, GT beta)
{
    enum { ROWS = 2 * GT_MR };
    GT_VT acc[ROWS];
#pragma GCC unroll 32
    for (int i = 0; i < ROWS; i++)
        acc[i] = GT_V_ZERO();
    if (mr == ROWS) {
        /* Both halves from one stride: row i at top[i·rs_a] or bottom[(i - MR)·rs_a]. Sixteen
         * row pointers (the form below) outran the general registers, and gcc reloaded them
         * from the stack inside the k loop. */
        const GT *top = a, *bottom = a + GT_MR * rs_a;
#pragma GCC unroll 2
        for (size_t p = 0; p < kc; p++) {
            GT_VT bv = GT_V_LOADU(b);
#pragma GCC unroll 32
            for (int i = 0; i < GT_MR; i++)
                acc[i] = GT_V_FMA(GT_V_SET1(top[(size_t)i * rs_a]), bv, acc[i]);
#pragma GCC unroll 32
            for (int i = 0; i < GT_MR; i++)
                acc[GT_MR + i] = GT_V_FMA(GT_V_SET1(bottom[(size_t)i * rs_a]), bv, acc[GT_MR + i]);
            top += cs_a;
            bottom += cs_a;
            b += rs_b;
        }
    } else {
        /* Rows past mr read row mr - 1 (inside A) and are never stored. */
        const GT *arow[ROWS];
#pragma GCC unroll 32
        for (int i = 0; i < ROWS; i++)
            arow[i] = a + ((size_t)i < mr ? (size_t)i : mr - 1) * rs_a;
        size_t a_off = 0;
        for (size_t p = 0; p < kc; p++) {
            GT_VT bv = GT_V_LOADU(b);
#pragma GCC unroll 32
            for (int i = 0; i < ROWS; i++)
                acc[i] = GT_V_FMA(GT_V_SET1(arow[i][a_off]), bv, acc[i]);
            a_off += cs_a;
            b += rs_b;
        }
    }
    GT_VT va = GT_V_SET1(alpha), vb = GT_V_SET1(beta);
#pragma GCC unroll 32
    for (int i = 0; i < ROWS; i++) {
        if ((size_t)i >= mr)
            break;
        GT *ci = c + (size_t)i * ldc;
        GT_VT t = GT_V_MUL(va, acc[i]);
        if (nr >= GT_VL) {
            if (beta != 0)
                t = GT_V_FMA(vb, GT_V_LOADU(ci), t);
            GT_V_STOREU(ci, t);
        } else {
            if (beta != 0)
                t = GT_V_FMA(vb, GT_V_LOADU_N(ci, nr), t);
            GT_V_STOREU_N(ci, t, nr);
        }
    }
}
#endif

typedef void GT_FN(direct_kernel)(size_t kc, const GT *a, size_t rs_a, size_t cs_a, size_t mr,
                                  size_t nr, const GT *b, size_t rs_b, GT *restrict c,
                                  size_t ldc, GT alpha, GT beta);

/* The narrowest kernel that covers an mr x nr tile. */
static GT_FN(direct_kernel) *
GT_FN(direct_kernel_for)(size_t mr, size_t nr)
{
#if GT_NV > 1
    if (nr <= GT_VL)
        return mr <= 1   ? GT_FN(direct_1n)
               : mr <= 2 ? GT_FN(direct_2n)
               : mr <= 4 ? GT_FN(direct_4n)
                         : GT_FN(direct_mrn);
#endif
    if (mr <= 1)
        return GT_FN(direct_1w);
    if (mr <= 2)
        return GT_FN(direct_2w);
#if GT_MR > 4
    if (mr <= 4)
        return GT_FN(direct_4w);
#endif
    return GT_FN(micro_kernel_direct);
}

static void
GT_FN(direct)(bool trans_a, bool trans_b, size_t m, size_t n, size_t k, size_t kc_step, GT alpha,
              const GT *a, size_t lda, const GT *b, size_t ldb, GT beta, GT *c, size_t ldc,
              GT *bp)
{
    size_t rs_a = trans_a ? 1 : lda, cs_a = trans_a ? lda : 1;
    bool b_in_place = GT_FN(direct_b_in_place)(trans_a, trans_b, k, ldb);
    for (size_t pc = 0; pc < k; pc += kc_step) {
        size_t kc = k - pc < kc_step ? k - pc : kc_step;
        GT beta_block = pc == 0 ? beta : 1;
        for (size_t jr = 0; jr < n; jr += GT_NR) {
            size_t nr = n - jr < GT_NR ? n - jr : GT_NR;
            const GT *bpanel = bp;
            size_t rs_b = GT_NR;
            /* in place when the kernel's loads stay inside B's rows: a full panel, or one
             * vector, which is all the narrow kernels (direct_kernel_for) read */
            if (b_in_place && (nr == GT_NR || (GT_NV > 1 && nr == GT_VL))) {
                bpanel = b + pc * ldb + jr;
                rs_b = ldb;
            } else {
                GT_FN(pack_b)(trans_b, kc, nr, trans_b ? b + jr * ldb + pc : b + pc * ldb + jr,
                              ldb, bp);
            }
            for (size_t ir = 0; ir < m;) {
                size_t mr = m - ir < GT_MR ? m - ir : GT_MR;
                const GT *apanel = a + ir * rs_a + pc * cs_a;
                GT *ctile = c + ir * ldc + jr;
#if GT_NV > 1
                if (nr <= GT_VL && m - ir > GT_MR) {
                    mr = m - ir < 2 * GT_MR ? m - ir : 2 * GT_MR;
                    GT_FN(direct_tall)(kc, apanel, rs_a, cs_a, mr, nr, bpanel, rs_b, ctile, ldc,
                                       alpha, beta_block);
                    ir += mr;
                    continue;
                }
#endif
                GT_FN(direct_kernel_for)(mr, nr)(kc, apanel, rs_a, cs_a, mr, nr, bpanel, rs_b,
                                                 ctile, ldc, alpha, beta_block);
                ir += mr;
            }
        }
    }
}

/*
 * A narrow product, n at most a quarter of a vector (a layer with one output, B-small's
 * 32x1x16, or the dW of one with a few inputs, its 16x2x32 dZᵀ·X), leaves most lanes of every
 * FMA idle: a vector of C's row holds n values. It is run as Cᵀ = op(B)ᵀ·op(A)ᵀ instead, m
 * wide, into a buffer of C's size, and stored transposed. Each element of C gets the same FMAs
 * in the same k order (a·b and b·a round alike), and with a single k run (k <= kc_step) the
 * buffer holds the raw sums, to which the store applies store_acc's alpha·acc + beta·C: the
 * bits of the plain order. op(A)ᵀ is the new B: a copy of a transposed A, but a gather of a
 * plain one, which pays only on small, aligned runs.
 * Measured against the plain direct order (AVX-512, 1 thread, best of 9 x 200 calls, m 16-128,
 * n 1-7, k 1-128, all four transposes, both types): these conditions took 320 shapes 1.47x
 * faster in geometric mean, the slowest 0.90x (f64 128x2x16), most within 3 %; B-small's two
 * f32 products 210 -> 106 ns and 216 -> 120 ns. Outside them it lost: k <= 12 0.3-0.96x (the extra pass over C costs more
 * than the lanes save), n = 7 f32 or 4 f64 0.6-1.0x at k = 32, a gathered op(A)ᵀ with k = 20
 * 0.6-0.9x. Returns false (nothing done) for any other product.
 */
#define GT_TRANSPOSED_MAX 1024 /* elements of C: the buffer lives on the stack */
static bool
GT_FN(direct_transposed)(bool trans_a, bool trans_b, size_t m, size_t n, size_t k,
                         size_t kc_step, GT alpha, const GT *a, size_t lda, const GT *b,
                         size_t ldb, GT beta, GT *c, size_t ldc, GT *bp)
{
    if (n > GT_VL / 4 || k < 16 || k > kc_step || m * n > GT_TRANSPOSED_MAX)
        return false;
    if (trans_a ? m < GT_VL : m < 2 * GT_VL || k % 8 != 0 || m * k > 1024)
        return false;
    GT t[GT_TRANSPOSED_MAX];
    GT_FN(direct)(!trans_b, !trans_a, n, m, k, kc_step, 1, b, ldb, a, lda, 0, t, m, bp);
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < n; j++) {
            GT v = alpha * t[j * m + i];
            c[i * ldc + j] = beta != 0 ? GT_S_FMA(beta, c[i * ldc + j], v) : v;
        }
    return true;
}
#undef GT_TRANSPOSED_MAX
#endif

/* The blocked order's steps: MC, and NC as wide as keeps the packed KC x NC block of B within
 * b_block_bytes (in whole NR panels, at most GT_NC). */
static struct GT_FN(plan)
GT_FN(plan_blocked)(size_t m, size_t n, size_t kc_step, size_t b_block_bytes)
{
    struct GT_FN(plan) plan = {.order = TG_GEMM_BLOCKED, .kc_step = kc_step};
    plan.mc_step = GT_FN(balanced_step)(m, GT_MC, GT_MR);
    size_t nc_max = GT_NC;
    if (nc_max * kc_step * sizeof(GT) > b_block_bytes) {
        nc_max = b_block_bytes / (kc_step * sizeof(GT)) / GT_NR * GT_NR;
        nc_max = nc_max < GT_NR ? GT_NR : nc_max;
    }
    plan.nc_step = GT_FN(balanced_step)(n, nc_max, GT_NR);
    plan.a_elems = GT_FN(round_up)(plan.mc_step * kc_step, 64 / sizeof(GT));
    return plan;
}

/* Short C when op(A)'s whole kc run fits tg__gemm_short_c_bytes, else blocked. */
static struct GT_FN(plan)
GT_FN(plan_packed)(size_t m, size_t n, size_t kc_step, size_t b_block_bytes)
{
    size_t a_short = GT_FN(round_up)(GT_FN(round_up)(m, GT_MR) * kc_step, 64 / sizeof(GT));
    if (a_short <= tg__gemm_short_c_bytes / sizeof(GT))
        return (struct GT_FN(plan)){
            .order = TG_GEMM_SHORT_C, .kc_step = kc_step, .a_elems = a_short};
    return GT_FN(plan_blocked)(m, n, kc_step, b_block_bytes);
}

#ifdef GT_DIRECT
/* Whether a product takes the direct order. m·k + k·n in double: the product can exceed size_t
 * on 32-bit targets. Rows of C of a page or more (n >= 1024 f32, 512 f64) stay packed: with
 * m = 16-64 the direct order ran those at 0.79-0.95x the short-C order (one B panel per 2-8
 * short tiles). So does a transposed A whose rows are whole pages apart: the direct
 * micro-kernel reads one row of it per k step, a new page each time (f64 512x392x128 Aᵀ with
 * lda = 512: 0.86x the packed order, 1.00x with lda = 520). The tests' SIZE_MAX lifts both
 * limits. */
static bool
GT_FN(takes_direct)(bool trans_a, size_t m, size_t n, size_t k, size_t lda)
{
    bool direct_forced = tg__gemm_direct_bytes == SIZE_MAX;
    return ((double)m * (double)k + (double)k * (double)n) * sizeof(GT) <=
               (double)tg__gemm_direct_bytes &&
           (direct_forced ||
            (n * sizeof(GT) < 4096 && !(trans_a && lda * sizeof(GT) % 4096 == 0)));
}
#endif

static struct GT_FN(plan)
GT_FN(make_plan)(bool trans_a, size_t m, size_t n, size_t k, size_t lda, size_t b_block_bytes)
{
    size_t kc_step = GT_FN(balanced_step)(k, GT_KC, 4);
#ifdef GT_DIRECT
    if (GT_FN(takes_direct)(trans_a, m, n, k, lda))
        return (struct GT_FN(plan)){.order = TG_GEMM_DIRECT, .kc_step = kc_step};
#else
    (void)trans_a;
    (void)lda;
#endif
    return GT_FN(plan_packed)(m, n, kc_step, b_block_bytes);
}

#ifndef GT_B_BLOCK_BYTES
#define GT_B_BLOCK_BYTES SIZE_MAX
#define GT_B_BLOCK_BYTES_DEFAULTED
#endif

/*
 * What a product costs on one thread in the order GT_BLOCK takes for it, in multiply-adds:
 * its tiles' (padded) m·n·k, plus GT_PACK_FMAS for each value it packs. The dispatcher
 * (gemm.c) prices its thread split with it: a row split has every part pack all of op(B), a
 * column split all of op(A), and the blocked order packs A again for every NC block.
 * GT_PACK_FMAS, unless the includer sets it: 4·GT_VL, two cycles of two FMA pipes. On the
 * AVX-512 path (Zen 5) a column split of f64 1024³ packs 0.5 M fewer values per part than a
 * row split and ran 2.8 % (0.26 ms) faster: ~0.5 ns, ~36 multiply-adds, a value.
 */
#ifndef GT_PACK_FMAS
#define GT_PACK_FMAS (4 * GT_VL)
#define GT_PACK_FMAS_DEFAULTED
#endif
double
GT_COST(bool trans_a, bool trans_b, size_t m, size_t n, size_t k, size_t lda, size_t ldb,
        size_t b_block_bytes)
{
#ifdef GT_B_BLOCK_BYTES_DEFAULTED
    b_block_bytes = SIZE_MAX; /* this path's NC is fixed */
#endif
    struct GT_FN(plan) plan = GT_FN(make_plan)(trans_a, m, n, k, lda, b_block_bytes);
    double m_pad = (double)GT_FN(round_up)(m, GT_MR), n_pad = (double)GT_FN(round_up)(n, GT_NR);
    double kd = (double)k, packed = 0;
    switch (plan.order) {
    case TG_GEMM_DIRECT:
        /* Nothing packed but B's panels: a transposed B's, gathered, at the full price; the
         * operands read where they lie, and a plain B's panels (a copy that stays in L1), at a
         * quarter. (Full price for both: f32 512x784x128 Aᵀ went to a column split, 13 of 25
         * column tiles against 32 of 64 row tiles, 0.99x.) */
        packed = ((double)m * kd + kd * (double)n) / 4;
        if (trans_b)
            packed += kd * n_pad;
        else if (!GT_FN(direct_b_in_place)(trans_a, trans_b, k, ldb))
            packed += kd * n_pad / 4;
        break;
    case TG_GEMM_SHORT_C: /* A's kc runs once, B once */
        packed = m_pad * kd + kd * n_pad;
        break;
    case TG_GEMM_BLOCKED: /* A once per NC block, B once */
        packed = m_pad * kd * (double)((n + plan.nc_step - 1) / plan.nc_step) + kd * n_pad;
        break;
    }
    return m_pad * n_pad * kd + GT_PACK_FMAS * packed;
}

void
GT_BLOCK(bool trans_a, bool trans_b, size_t m, size_t n, size_t k, GT alpha, const GT *a,
         size_t lda, const GT *b, size_t ldb, GT beta, GT *c, size_t ldc)
{
    /* Each order needs a buffer; one that cannot be had falls back to the next order. (The
     * direct order is tried before the packed plan is made: it needs no block budget.) */
    size_t kc_step = GT_FN(balanced_step)(k, GT_KC, 4);
#ifdef GT_DIRECT
    if (GT_FN(takes_direct)(trans_a, m, n, k, lda)) {
        GT *bp = tg__gemm_workspace(kc_step * GT_NR * sizeof(GT));
        if (bp && GT_FN(direct_transposed)(trans_a, trans_b, m, n, k, kc_step, alpha, a, lda, b,
                                           ldb, beta, c, ldc, bp))
            return;
        if (bp) {
            GT_FN(direct)(trans_a, trans_b, m, n, k, kc_step, alpha, a, lda, b, ldb, beta, c, ldc,
                          bp);
            return;
        }
    }
#endif
    struct GT_FN(plan) plan = GT_FN(plan_packed)(m, n, kc_step, GT_B_BLOCK_BYTES);
    if (plan.order == TG_GEMM_SHORT_C) {
        GT *ap = tg__gemm_workspace((plan.a_elems + kc_step * GT_SHORT_STRIP) * sizeof(GT));
        if (ap) {
            GT_FN(short_c)(trans_a, trans_b, m, n, k, kc_step, alpha, a, lda, b, ldb, beta, c, ldc,
                           ap, ap + plan.a_elems);
            return;
        }
        plan = GT_FN(plan_blocked)(m, n, kc_step, GT_B_BLOCK_BYTES);
    }
    size_t mc_step = plan.mc_step, nc_step = plan.nc_step, a_elems = plan.a_elems;
    /* Ap then Bp; Ap rounded to 64 bytes so Bp's panels are aligned too. */
    GT *ap = tg__gemm_workspace((a_elems + nc_step * kc_step) * sizeof(GT));
    if (!ap) {
        GT_REF(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return;
    }
    GT *bp = ap + a_elems;

    for (size_t jc = 0; jc < n; jc += nc_step) {
        size_t nc = n - jc < nc_step ? n - jc : nc_step;
        for (size_t pc = 0; pc < k; pc += kc_step) {
            size_t kc = k - pc < kc_step ? k - pc : kc_step;
            GT beta_block = pc == 0 ? beta : 1;
            const GT *b_block = trans_b ? b + jc * ldb + pc : b + pc * ldb + jc;
            GT_FN(pack_b)(trans_b, kc, nc, b_block, ldb, bp);

            /* The block after this one: the next k run, else the first of the next columns. */
            struct GT_FN(next_b) next = {0};
            size_t next_pc = pc + kc < k ? pc + kc : 0, next_jc = pc + kc < k ? jc : jc + nc;
            if (next_jc < n) {
                size_t calls = (m + GT_MR - 1) / GT_MR * ((nc + GT_NR - 1) / GT_NR);
                next = GT_FN(next_b_start)(trans_b, b, ldb, next_pc,
                                           k - next_pc < kc_step ? k - next_pc : kc_step,
                                           next_jc, n - next_jc < nc_step ? n - next_jc : nc_step,
                                           calls);
            }

            for (size_t ic = 0; ic < m; ic += mc_step) {
                size_t mc = m - ic < mc_step ? m - ic : mc_step;
                const GT *a_block = trans_a ? a + pc * lda + ic : a + ic * lda + pc;
                GT_FN(pack_a)(trans_a, mc, kc, a_block, lda, ap);

                GT_FN(macro_kernel)(kc, mc, nc, ap, bp, true, c + ic * ldc + jc, ldc, alpha,
                                    beta_block, &next);
            }
        }
    }
}

#undef GT_NV
#ifdef GT_B_BLOCK_BYTES_DEFAULTED
#undef GT_B_BLOCK_BYTES
#undef GT_B_BLOCK_BYTES_DEFAULTED
#endif
#ifdef GT_PACK_FMAS_DEFAULTED
#undef GT_PACK_FMAS
#undef GT_PACK_FMAS_DEFAULTED
#endif
#undef GT_SHORT_STRIP
#undef GT_PREFETCH
#undef GT_PREFETCH_READ
#undef GT_FN
#undef GT_CAT
#undef GT_CAT2
