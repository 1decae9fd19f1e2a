/*
 * Vectorizable elementary functions for the activation and loss loops.
 *
 * Every function here is branch-free straight-line code on one element (ternaries compile to
 * blends, bit casts through memcpy, no calls, no tables), so a plain loop over an array that
 * calls them is vectorized by gcc/clang at -O2/-O3 with the baseline SSE2 of any x86-64, and
 * with AVX2/AVX-512 inside functions marked TG__VEC_CLONES (run-time selection through
 * target_clones, so one build still runs on any x86-64).
 *
 * Results do not depend on the vector width or path: the code is built as ISO C (c_std=c11,
 * where gcc defaults to -ffp-contract=off, so no FMA is ever contracted in) and never relies on
 * -ffast-math; every operation is an IEEE operation with one rounding, whatever the lane.
 *
 * Scheme (Cody & Waite; Tang, "Table-driven implementation of the exponential function",
 * ACM TOMS 15(2), 1989, without the table):
 *   e^x = 2^n · e^r,    n = round(x / ln 2),   r = x - n ln2_hi - n ln2_lo,   |r| <= ~0.35
 *   n comes from the "magic number" trick (x·log2e + 1.5·2^p - 1.5·2^p rounds to an integer
 *   and the integer sits in the low mantissa bits), and 2^n is built in the exponent field.
 *   e^r - 1 is a Taylor polynomial with no constant term (degree 7 for float: truncation
 *   0.35^8/8! < 6e-9 relative; degree 13 for double: 0.35^14/14! < 5e-18), so expm1 keeps full
 *   relative accuracy near 0.
 * Accuracy measured by tests/test-vmath.c against long double libm (the bounds it enforces
 * are in that file, with their reasons).
 *
 * Edge values: NaN in gives NaN out (every function ends with an isnan select, and every
 * range clamp is written so that a NaN compares false and passes); ±inf and huge finite
 * inputs saturate to the IEEE limits; subnormal inputs and outputs are not flushed.
 */
#ifndef TG_VMATH_H
#define TG_VMATH_H

#include <stdint.h>
#include <string.h>

/* Forces a long function into its caller's loop, which then vectorizes (gcc does not inline
 * tg__verf's 60 lines on its own). */
#if defined(__GNUC__)
#define TG__VMATH_INLINE __attribute__((always_inline))
#else
#define TG__VMATH_INLINE
#endif

/* Marks an array loop for run-time ISA selection (x86-64 with ifunc support only). */
#if defined(__x86_64__) && defined(__GNUC__) && defined(__has_attribute) && !defined(__clang__)
#if __has_attribute(target_clones) && defined(__gnu_linux__)
#define TG__VEC_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif
#endif
#ifndef TG__VEC_CLONES
#define TG__VEC_CLONES
#endif

static inline uint32_t
tg__bits_f32(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static inline float
tg__from_bits_f32(uint32_t u)
{
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

static inline uint64_t
tg__bits_f64(double x)
{
    uint64_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static inline double
tg__from_bits_f64(uint64_t u)
{
    double x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/*
 * Comparisons are made on the bit patterns, as integers: an ordered float compare (x < c, even x != x) may
 * raise the invalid flag on a NaN, so under gcc's default -ftrapping-math it cannot be turned
 * into a blend, and an SSE2 loop containing one is not vectorized (AVX has quiet compares;
 * SSE2 does not). Integer compares never trap. For |x| the bit patterns of non-negative floats
 * are ordered like their values, with NaN above +inf.
 */

static inline int
tg__isnan_f32(float x)
{
    return (tg__bits_f32(x) & 0x7fffffffu) > 0x7f800000u;
}

static inline int
tg__isnan_f64(double x)
{
    return (tg__bits_f64(x) & 0x7fffffffffffffffu) > 0x7ff0000000000000u;
}

/* c ? a : b as bit operations. A ternary on values computed only for the select lets gcc sink
 * the computation into a branch; a branch holding FP operations that may trap cannot be
 * if-converted back, and the loop is not vectorized. Masks leave no branch to sink into. */
static inline float
tg__sel_f32(int c, float a, float b)
{
    uint32_t m = 0u - (uint32_t)(c != 0);
    return tg__from_bits_f32((tg__bits_f32(a) & m) | (tg__bits_f32(b) & ~m));
}

static inline double
tg__sel_f64(int c, double a, double b)
{
    uint64_t m = 0u - (uint64_t)(c != 0);
    return tg__from_bits_f64((tg__bits_f64(a) & m) | (tg__bits_f64(b) & ~m));
}

/* x clamped to [-lo, hi] (lo, hi >= 0); a NaN comes back clamped too (its magnitude bits are
 * above every finite value's), so callers restore it with a final isnan select. */
static inline float
tg__clamp_f32(float x, float lo, float hi)
{
    uint32_t u = tg__bits_f32(x), a = u & 0x7fffffffu;
    int neg = (int32_t)u < 0;
    uint32_t lim = neg ? tg__bits_f32(lo) : tg__bits_f32(hi);
    float edge = tg__sel_f32(neg, -lo, hi);
    return tg__sel_f32(a > lim, edge, x);
}

static inline double
tg__clamp_f64(double x, double lo, double hi)
{
    uint64_t u = tg__bits_f64(x), a = u & 0x7fffffffffffffffu;
    int neg = (int64_t)u < 0;
    uint64_t lim = neg ? tg__bits_f64(lo) : tg__bits_f64(hi);
    double edge = tg__sel_f64(neg, -lo, hi);
    return tg__sel_f64(a > lim, edge, x);
}

/* ---- float ---- */

#define TG__MAGIC_F32 12582912.0f /* 1.5·2^23: adding it rounds |v| < 2^22 to an integer */

/* 2^k for an integer-valued float k in [-126, 127], built in the exponent field. The integer
 * is read from the magic-number sum's low bits (no float->int conversion, which SSE2 lacks
 * for some widths and which is undefined for out-of-range values). */
static inline float
tg__pow2i_f32(float k)
{
    uint32_t i = tg__bits_f32(k + TG__MAGIC_F32) - tg__bits_f32(TG__MAGIC_F32);
    return tg__from_bits_f32((i + 127u) << 23);
}

/* e^r - 1 for |r| <= 0.36: r + r²(1/2 + r(1/6 + … + r/5040)), Taylor to degree 7. */
static inline float
tg__expm1_poly_f32(float r)
{
    float p = 1.0f / 5040;
    p = p * r + 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    return r + r * r * p;
}

/* Reduction shared by exp and expm1: returns r and sets *n (integer-valued). */
static inline float
tg__reduce_f32(float x, float *n)
{
    /* ln 2 = LN2_HI + LN2_LO with LN2_HI = 0x1.63p-1 (9 significant bits), so n·LN2_HI is exact
     * for |n| < 2^15 and x - n·LN2_HI is exact (Sterbenz). */
    const float log2e = 1.44269504088896341f, ln2_hi = 0.693359375f,
                ln2_lo = -2.12194440e-4f;
    float k = (x * log2e + TG__MAGIC_F32) - TG__MAGIC_F32;
    *n = k;
    return (x - k * ln2_hi) - k * ln2_lo;
}

/* e^x. Clamped to [-104, 89] first: e^-104 < 2^-150 rounds to 0 and e^89 > FLT_MAX overflows
 * to inf, so the clamp changes no result and keeps n in [-150, 129]. 2^n is applied as two
 * factors 2^(n-h)·2^h (h = n/2 rounded), each a normal float, so subnormal results get one
 * rounding and overflow happens in the last multiply. */
static inline float
tg__vexpf(float x)
{
    float xc = tg__clamp_f32(x, 104.0f, 89.0f);
    float n, r = tg__reduce_f32(xc, &n);
    float h = (n * 0.5f + TG__MAGIC_F32) - TG__MAGIC_F32;
    float y = (1.0f + tg__expm1_poly_f32(r)) * tg__pow2i_f32(h) * tg__pow2i_f32(n - h);
    return tg__sel_f32(tg__isnan_f32(x), x, y);
}

/* tg__expm1_poly_f32 with each Horner step and the final r + r²·p as one fmaf */
static inline float
tg__expm1_poly_f32_fma(float r)
{
    float p = 1.0f / 5040;
    p = __builtin_fmaf(p, r, 1.0f / 720);
    p = __builtin_fmaf(p, r, 1.0f / 120);
    p = __builtin_fmaf(p, r, 1.0f / 24);
    p = __builtin_fmaf(p, r, 1.0f / 6);
    p = __builtin_fmaf(p, r, 0.5f);
    return __builtin_fmaf(r * r, p, r);
}

/*
 * e^x with fused multiply-adds: the same scheme as tg__vexpf (clamp, Cody-Waite reduction,
 * degree-7 Taylor, 2^n in two factors), with the reduction and Horner steps as fmaf. An FMA
 * is one IEEE operation with one rounding, so the result is still the same on every path:
 * the AVX2 and AVX-512 clones issue vfmadd, the baseline x86-64 clone calls libm's fmaf
 * (exact, slower). Half the operations of tg__vexpf, and a little more accurate; the exp op
 * and the softmax family use it, where e^x is the whole cost (a float32 exp over 16M elements
 * is compute-bound on two cores otherwise). Accuracy: tests/test-vmath.c.
 */
static inline float
tg__vexpf_fma(float x)
{
    const float log2e = 1.44269504088896341f, ln2_hi = 0.693359375f,
                ln2_lo = -2.12194440e-4f;
    float xc = tg__clamp_f32(x, 104.0f, 89.0f);
    float k = (xc * log2e + TG__MAGIC_F32) - TG__MAGIC_F32;
    float r = __builtin_fmaf(-k, ln2_lo, __builtin_fmaf(-k, ln2_hi, xc));
    float q = tg__expm1_poly_f32_fma(r);
    float h = (k * 0.5f + TG__MAGIC_F32) - TG__MAGIC_F32;
    float y = (1.0f + q) * tg__pow2i_f32(h) * tg__pow2i_f32(k - h);
    return tg__sel_f32(tg__isnan_f32(x), x, y);
}

/* e^x - 1 for x in [-20, 80] (callers clamp): 2^n (e^r - 1) + (2^n - 1). 2^n - 1 is exact for
 * n <= 24, and for larger n the first term dominates, so no cancellation anywhere; n = 0
 * gives e^r - 1 itself, which is accurate to the last bit for tiny r (and exact for
 * subnormal r). Below -17.4, e^x - 1 rounds to -1: the clamp at -20 changes nothing. */
static inline float
tg__expm1_core_f32(float x)
{
    float n, r = tg__reduce_f32(x, &n);
    float s = tg__pow2i_f32(n);
    return s * tg__expm1_poly_f32(r) + (s - 1.0f);
}

/* e^x - 1, all x: above 80, e^x - 1 = e^x in float (and the core's 2^n would overflow). */
static inline float
tg__vexpm1f(float x)
{
    float xc = tg__clamp_f32(x, 20.0f, 80.0f);
    float y = tg__sel_f32(tg__bits_f32(xc) == tg__bits_f32(80.0f), tg__vexpf(x),
                          tg__expm1_core_f32(xc));
    /* e^x - 1 has the sign of x: restores -0 (the core gives 1·(-0) + 0 = +0) */
    y = tg__from_bits_f32((tg__bits_f32(y) & 0x7fffffffu) | (tg__bits_f32(x) & 0x80000000u));
    return tg__sel_f32(tg__isnan_f32(x), x, y);
}

/* tg__expm1_core_f32 with the reduction, the Horner steps and the final sum as fused
 * multiply-adds, as in tg__vexpf_fma: same range, one rounding each. */
static inline float
tg__expm1_core_f32_fma(float x)
{
    const float log2e = 1.44269504088896341f, ln2_hi = 0.693359375f,
                ln2_lo = -2.12194440e-4f;
    float k = __builtin_fmaf(x, log2e, TG__MAGIC_F32) - TG__MAGIC_F32;
    float r = __builtin_fmaf(-k, ln2_lo, __builtin_fmaf(-k, ln2_hi, x));
    float q = tg__expm1_poly_f32_fma(r);
    float s = tg__pow2i_f32(k);
    return __builtin_fmaf(s, q, s - 1.0f);
}

/* tanh x = sign(x) · u / (u + 2),  u = e^(2|x|) - 1.
 * No cancellation for small |x| (u ≈ 2|x| keeps full precision); |x| is clamped to 9.1,
 * where tanh rounds to 1 in float (1 - tanh 9.1 ≈ 2.5e-8 < 2^-25), so u never overflows and
 * ±inf give ±1. ±0 and subnormals come back unchanged (u = 2x exactly, u/(u+2) = x).
 * u comes from tg__expm1_core_f32_fma (FMAs are single IEEE operations, so the same bits on
 * every path; the baseline clone calls libm's fmaf). A tanh of one value is a chain of
 * dependent operations, and FMAs shorten it: a scalar graph's tanh nodes and the hidden
 * layers of small networks are bound by it. Accuracy: tests/test-vmath.c. */
static inline float
tg__vtanhf(float x)
{
    float ax = tg__clamp_f32(tg__from_bits_f32(tg__bits_f32(x) & 0x7fffffffu), 0.0f, 9.1f);
    float u = tg__expm1_core_f32_fma(2.0f * ax);
    float t = u / (u + 2.0f);
    float y = tg__from_bits_f32(tg__bits_f32(t) | (tg__bits_f32(x) & 0x80000000u));
    return tg__sel_f32(tg__isnan_f32(x), x, y);
}

/* erf x for float, branch-free. Two fits (least squares on Chebyshev nodes of erf in double,
 * coefficients rounded to float):
 *   |x| < 1:   erf x = x · P(x²),  P of degree 6 (fit error 1.4e-9 relative), in double
 *   |x| >= 1:  erf |x| = 1 − e^(−x²) · Q(|x| − 2.5),  Q ≈ erfc(a) e^(a²) of degree 10 on
 *              a in [1, 4] (2.2e-7 relative, times erfc(a) <= 0.16: below an ulp of 1)
 * |x| is clamped to 4, where erf rounds to 1 in float (erfc 4 = 1.5e-8 < 2^-25). Both are
 * evaluated, the result picked by a select; the sign is copied back, NaN passes through. */
static inline TG__VMATH_INLINE float
tg__verff(float x)
{
    float a = tg__clamp_f32(tg__from_bits_f32(tg__bits_f32(x) & 0x7fffffffu), 0.0f, 4.0f);
    double ad = a, t = ad * ad; /* P in double: its Horner roundings stay far below an ulp */
    double p = 7.88250040671821159e-05;
    p = p * t - 8.01885900293720769e-04;
    p = p * t + 5.18931281129545677e-03;
    p = p * t - 2.68543295376355087e-02;
    p = p * t + 1.12835974915456189e-01;
    p = p * t - 3.76126269078912334e-01;
    p = p * t + 1.12837916588332909e+00;
    float s = a - 2.5f;
    float q = 1.671832706e-06f;
    q = q * s - 6.386209861e-06f;
    q = q * s + 1.435350623e-05f;
    q = q * s - 5.358525232e-05f;
    q = q * s + 2.129723580e-04f;
    q = q * s - 7.389984094e-04f;
    q = q * s + 2.465982223e-03f;
    q = q * s - 7.999344729e-03f;
    q = q * s + 2.493820339e-02f;
    q = q * s - 7.434760034e-02f;
    q = q * s + 2.108063549e-01f;
    float far = 1.0f - tg__vexpf(-a * a) * q;
    float y = tg__sel_f32(a < 1.0f, (float)(ad * p), far);
    y = tg__from_bits_f32(tg__bits_f32(y) | (tg__bits_f32(x) & 0x80000000u));
    return tg__sel_f32(tg__isnan_f32(x), x, y);
}

/* σ(x) = 1 / (1 + e^-x) for x >= 0, e^x / (1 + e^x) for x < 0: both are e = e^-|x| <= 1
 * (never overflows), so σ(-1000) = 0, σ(1000) = 1, σ(+inf) = 1, σ(-inf) = 0. */
static inline float
tg__vsigmoidf(float x)
{
    uint32_t ux = tg__bits_f32(x);
    float e = tg__vexpf(tg__from_bits_f32(ux | 0x80000000u)); /* e^-|x| */
    float d = 1.0f + e;
    float y = tg__sel_f32((int32_t)ux >= 0, 1.0f, e) / d; /* -0 takes e / d = 1/2 as well */
    return tg__sel_f32(tg__isnan_f32(x), x, y);
}

/* log(1 + u) for u in [0, 1]: w = 1 + u rounded, c = (u - (w - 1)) / w restores what the
 * rounding lost (w - 1 is exact), and log w = k ln 2 + log m, m = w / 2^k in [0.707, 1.414],
 * log m = 2 atanh(s) = 2 (s + s³/3 + s⁵/5 + s⁷/7 + s⁹/9), s = (m - 1)/(m + 1), |s| <= 0.172
 * (truncation s^10/11 < 3e-9 relative). */
static inline float
tg__log1p01_f32(float u)
{
    float w = 1.0f + u;
    float c = (u - (w - 1.0f)) / w;
    int big = tg__bits_f32(w) > tg__bits_f32(1.41421356f); /* w >= 1: bit order = value order */
    float m = w * tg__sel_f32(big, 0.5f, 1.0f);
    float k = tg__sel_f32(big, 0.693147180559945309f, 0.0f);
    float s = (m - 1.0f) / (m + 1.0f), s2 = s * s;
    float p = 1.0f / 9;
    p = p * s2 + 1.0f / 7;
    p = p * s2 + 1.0f / 5;
    p = p * s2 + 1.0f / 3;
    return k + (2.0f * s + 2.0f * s * s2 * p) + c;
}

/* log(1 + e^-|x|), the bounded part of softplus(x) = max(x, 0) + log(1 + e^-|x|). */
static inline float
tg__vlog1pexpf(float x)
{
    float y = tg__log1p01_f32(tg__vexpf(tg__from_bits_f32(tg__bits_f32(x) | 0x80000000u)));
    return tg__sel_f32(tg__isnan_f32(x), x, y);
}

/* ---- double ---- */

#define TG__MAGIC_F64 6755399441055744.0 /* 1.5·2^52 */

/* 2^k for an integer-valued double k in [-1022, 1023]. */
static inline double
tg__pow2i_f64(double k)
{
    uint64_t i = tg__bits_f64(k + TG__MAGIC_F64) - tg__bits_f64(TG__MAGIC_F64);
    return tg__from_bits_f64((i + 1023u) << 52);
}

/* e^r - 1 for |r| <= 0.36, Taylor to degree 13. */
static inline double
tg__expm1_poly_f64(double r)
{
    double p = 1.0 / 6227020800.0; /* 1/13! */
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    return r + r * r * p;
}

static inline double
tg__reduce_f64(double x, double *n)
{
    /* fdlibm's split: LN2_HI has 32 trailing zero bits, so n·LN2_HI is exact for |n| < 2^20. */
    const double log2e = 1.44269504088896338700e+00, ln2_hi = 6.93147180369123816490e-01,
                 ln2_lo = 1.90821492927058770002e-10;
    double k = (x * log2e + TG__MAGIC_F64) - TG__MAGIC_F64;
    *n = k;
    return (x - k * ln2_hi) - k * ln2_lo;
}

/* e^x, clamped to [-746, 710] (e^-746 < 2^-1075 rounds to 0, e^710 > DBL_MAX), 2^n in two
 * normal factors as in the float version. */
static inline double
tg__vexp(double x)
{
    double xc = tg__clamp_f64(x, 746.0, 710.0);
    double n, r = tg__reduce_f64(xc, &n);
    double h = (n * 0.5 + TG__MAGIC_F64) - TG__MAGIC_F64;
    double y = (1.0 + tg__expm1_poly_f64(r)) * tg__pow2i_f64(h) * tg__pow2i_f64(n - h);
    return tg__sel_f64(tg__isnan_f64(x), x, y);
}

/* e^x - 1 for x in [-40, 700] (callers clamp; below -37.5 the result rounds to -1). */
static inline double
tg__expm1_core_f64(double x)
{
    double n, r = tg__reduce_f64(x, &n);
    double s = tg__pow2i_f64(n);
    return s * tg__expm1_poly_f64(r) + (s - 1.0);
}

static inline double
tg__vexpm1(double x)
{
    double xc = tg__clamp_f64(x, 40.0, 700.0);
    double y = tg__sel_f64(tg__bits_f64(xc) == tg__bits_f64(700.0), tg__vexp(x),
                           tg__expm1_core_f64(xc));
    y = tg__from_bits_f64((tg__bits_f64(y) & 0x7fffffffffffffffu) |
                          (tg__bits_f64(x) & 0x8000000000000000u));
    return tg__sel_f64(tg__isnan_f64(x), x, y);
}

/* tg__expm1_core_f64 with FMAs, as tg__expm1_core_f32_fma, and the degree-13 Taylor
 * polynomial of tg__expm1_poly_f64 in Estrin's scheme: coefficient pairs c + c'·r, then pairs
 * of those by r², r⁴ and r⁸. Horner's twelve dependent FMAs made each vector of tanh a chain
 * of ~25 operations, more than the out-of-order window overlaps: Estrin's four levels took a
 * float64 tanh over 512 values from 370 to 320 ns (AVX-512, Zen 5, best of 3000). The
 * terms' rounding errors are scaled by r² <= 0.12 when p joins r, so the accuracy is
 * unchanged: 2.42 ulp worst on a sweep of [-20, 20] in steps of 1e-5, either scheme
 * (tests/test-vmath.c holds the bound). (In float the Horner chain of degree 7 is short
 * enough: Estrin there gained 4 %, and tg__expm1_poly_f32_fma is exp's too.) */
static inline double
tg__expm1_core_f64_fma(double x)
{
    const double log2e = 1.44269504088896338700e+00, ln2_hi = 6.93147180369123816490e-01,
                 ln2_lo = 1.90821492927058770002e-10;
    double k = __builtin_fma(x, log2e, TG__MAGIC_F64) - TG__MAGIC_F64;
    double r = __builtin_fma(-k, ln2_lo, __builtin_fma(-k, ln2_hi, x));
    double r2 = r * r, r4 = r2 * r2, r8 = r4 * r4;
    /* p = 1/2 + r/3! + r²/4! + … + r¹¹/13! */
    double c01 = __builtin_fma(1.0 / 6.0, r, 0.5);
    double c23 = __builtin_fma(1.0 / 120.0, r, 1.0 / 24.0);
    double c45 = __builtin_fma(1.0 / 5040.0, r, 1.0 / 720.0);
    double c67 = __builtin_fma(1.0 / 362880.0, r, 1.0 / 40320.0);
    double c89 = __builtin_fma(1.0 / 39916800.0, r, 1.0 / 3628800.0);
    double c1011 = __builtin_fma(1.0 / 6227020800.0, r, 1.0 / 479001600.0); /* 1/12!, 1/13! */
    double c0_3 = __builtin_fma(c23, r2, c01);
    double c4_7 = __builtin_fma(c67, r2, c45);
    double c8_11 = __builtin_fma(c1011, r2, c89);
    double p = __builtin_fma(c8_11, r8, __builtin_fma(c4_7, r4, c0_3));
    double q = __builtin_fma(r2, p, r); /* e^r - 1 */
    double s = tg__pow2i_f64(k);
    return __builtin_fma(s, q, s - 1.0);
}

/* tanh as in the float version, FMAs included; |x| clamped to 19.1, where
 * 1 - tanh x ≈ 2e-17 < 2^-54. */
static inline double
tg__vtanh(double x)
{
    double ax = tg__clamp_f64(tg__from_bits_f64(tg__bits_f64(x) & 0x7fffffffffffffffu), 0.0, 19.1);
    double u = tg__expm1_core_f64_fma(2.0 * ax);
    double t = u / (u + 2.0);
    double y = tg__from_bits_f64(tg__bits_f64(t) | (tg__bits_f64(x) & 0x8000000000000000u));
    return tg__sel_f64(tg__isnan_f64(x), x, y);
}

static inline double
tg__vsigmoid(double x)
{
    uint64_t ux = tg__bits_f64(x);
    double e = tg__vexp(tg__from_bits_f64(ux | 0x8000000000000000u));
    double d = 1.0 + e;
    double y = tg__sel_f64((int64_t)ux >= 0, 1.0, e) / d;
    return tg__sel_f64(tg__isnan_f64(x), x, y);
}

/* erf x for double, branch-free, in the scheme of tg__verff with more terms:
 *   |x| < 1:   erf x = x (2/√π + x² R(x²)),  R of degree 10 (weighted least squares)
 *   |x| >= 1:  erf |x| = 1 − e^(−x²) Q_k(|x| − m_k), Q_k ≈ erfc(a) e^(a²) of degree 13 on five
 *              pieces [1, 1.5), [1.5, 2), [2, 3), [3, 4.5), [4.5, 6] (least squares in relative
 *              error, centres m_k); each lane picks its piece's coefficients by selects.
 * |x| is clamped to 6, where erf rounds to 1 (erfc 6 = 2.2e-17 < 2^-54). Fitted against
 * mpmath at 40 digits; measured error in tests/test-vmath.c. */
static inline TG__VMATH_INLINE double
tg__verf(double x)
{
    double a = tg__clamp_f64(tg__from_bits_f64(tg__bits_f64(x) & 0x7fffffffffffffffu), 0.0, 6.0);
    double t = a * a;
    double r = -7.81772030507704979e-10;
    r = r * t + 1.37323881691677871e-08;
    r = r * t - 1.62114977178461943e-07;
    r = r * t + 1.64478430035310995e-06;
    r = r * t - 1.49247731705417433e-05;
    r = r * t + 1.20552969423167033e-04;
    r = r * t - 8.54832604993657741e-04;
    r = r * t + 5.22397760885457384e-03;
    r = r * t - 2.68661706434833239e-02;
    r = r * t + 1.12837916709468578e-01;
    r = r * t - 3.76126389031835595e-01;
    double near = a * (1.12837916709551256e+00 + t * r);
    int k1 = a >= 1.5, k2 = a >= 2.0, k3 = a >= 3.0, k4 = a >= 4.5;
    double s = a - tg__sel_f64(k4, 5.25000000000000000e+00, tg__sel_f64(k3, 3.75000000000000000e+00, tg__sel_f64(k2, 2.50000000000000000e+00, tg__sel_f64(k1, 1.75000000000000000e+00, 1.25000000000000000e+00))));
    double q = tg__sel_f64(k4, -1.07505986349826603e-11, tg__sel_f64(k3, -4.11162717032550271e-10, tg__sel_f64(k2, -1.66827168208310187e-08, tg__sel_f64(k1, 7.18301446386180344e-07, -1.80899948169819728e-06))));
    q = q * s + tg__sel_f64(k4, 6.72870721987137124e-11, tg__sel_f64(k3, 2.12008692121557313e-09, tg__sel_f64(k2, 7.05365036566066019e-08, tg__sel_f64(k1, 7.49123563762038784e-07, 5.57867576693454757e-06))));
    q = q * s + tg__sel_f64(k4, -4.00779249463791391e-10, tg__sel_f64(k3, -9.86677975779878790e-09, tg__sel_f64(k2, -2.72895832377967790e-07, tg__sel_f64(k1, -3.10248475842893063e-06, -1.73220997735929566e-05))));
    q = q * s + tg__sel_f64(k4, 2.48869638512154036e-09, tg__sel_f64(k3, 4.87450479368511125e-08, tg__sel_f64(k2, 1.08405757153947641e-06, tg__sel_f64(k1, 1.01007900759509194e-05, 5.40321365359927919e-05))));
    q = q * s + tg__sel_f64(k4, -1.52879315645979559e-08, tg__sel_f64(k3, -2.37604656469494652e-07, tg__sel_f64(k2, -4.21427800464605138e-06, tg__sel_f64(k1, -3.37431537235199824e-05, -1.62960741904834603e-04))));
    q = q * s + tg__sel_f64(k4, 9.27179841514236614e-08, tg__sel_f64(k3, 1.13537177699792919e-06, tg__sel_f64(k2, 1.59620503896595477e-05, tg__sel_f64(k1, 1.09504389607464509e-04, 4.73971486927506405e-04))));
    q = q * s + tg__sel_f64(k4, -5.55558027187681348e-07, tg__sel_f64(k3, -5.32667258513074646e-06, tg__sel_f64(k2, -5.88689698046743510e-05, tg__sel_f64(k1, -3.43533755549729097e-04, -1.32578294011247220e-03))));
    q = q * s + tg__sel_f64(k4, 3.28754746145514847e-06, tg__sel_f64(k3, 2.45163162702041995e-05, tg__sel_f64(k2, 2.11019807170135181e-04, tg__sel_f64(k1, 1.03920454870901958e-03, 3.55310987249568945e-03))));
    q = q * s + tg__sel_f64(k4, -1.92040786802774366e-05, tg__sel_f64(k3, -1.10579574835625524e-04, tg__sel_f64(k2, -7.33590936679860629e-04, tg__sel_f64(k1, -3.02097464514619997e-03, -9.08162763200055789e-03))));
    q = q * s + tg__sel_f64(k4, 1.10684056090312285e-04, tg__sel_f64(k3, 4.88222382949161330e-04, tg__sel_f64(k2, 2.46703681640858584e-03, tg__sel_f64(k1, 8.40431920696280144e-03, 2.20113642512338968e-02))));
    q = q * s + tg__sel_f64(k4, -6.29101491042168589e-04, tg__sel_f64(k3, -2.10728287018102905e-03, tg__sel_f64(k2, -8.00156938211707934e-03, tg__sel_f64(k1, -2.22599952414280350e-02, -5.02182743959218303e-02))));
    q = q * s + tg__sel_f64(k4, 3.52415094011069695e-03, tg__sel_f64(k3, 8.87875552729560334e-03, tg__sel_f64(k2, 2.49379970866459057e-02, tg__sel_f64(k1, 5.57636300870895940e-02, 1.06795571496596964e-01))));
    q = q * s + tg__sel_f64(k4, -1.94454446721486554e-02, tg__sel_f64(k3, -3.64562575327231631e-02, tg__sel_f64(k2, -7.43473467897945439e-02, tg__sel_f64(k1, -1.30976345514485171e-01, -2.08821875964609521e-01))));
    q = q * s + tg__sel_f64(k4, 1.05612735468891883e-01, tg__sel_f64(k3, 1.45589721275038886e-01, tg__sel_f64(k2, 2.10806364061143336e-01, tg__sel_f64(k1, 2.84972234737436325e-01, 3.67822916452361037e-01))));
    double far = 1.0 - tg__vexp(-t) * q;
    double y = tg__sel_f64(a < 1.0, near, far);
    y = tg__from_bits_f64(tg__bits_f64(y) | (tg__bits_f64(x) & 0x8000000000000000u));
    return tg__sel_f64(tg__isnan_f64(x), x, y);
}


#endif /* TG_VMATH_H */
