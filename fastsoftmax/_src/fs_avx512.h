/*
 * fs_avx512.h -- hand-vectorised AVX-512 row primitives for the hottest loops.
 *
 * The portable kernels (fs_*_impl.h) are compiler-vectorised; on AVX-512 machines the
 * row primitives below replace their inner loops: four independent accumulators, masked
 * tails instead of scalar epilogues, exp with `vscalefps` (exact 2^n scaling including
 * subnormals and overflow), float sums widened to double as they are added.
 *
 * Primitives (T = f32 | f64; x, y point to one row of n elements; m a finite max):
 *   fs512_row_max_T(x, n)                     max (NaN-tolerant: see fs_activations_impl.h)
 *   fs512_exp_store_sum_T(x, m, y, n)         y = exp(x - m), returns sum(y) in double
 *   fs512_exp_sum_split_T(x, m, n, &count)    sum of exp(x - m) over x != m, and count(x == m)
 *   fs512_scale_T(src, s, y, n)               y = src * s
 *   fs512_sub_T(x, c, y, n)                   y = (x - m) - c   (c passed with m)
 * The float32 exp of x - m adds the rounding error of the subtraction (TwoSum), so its
 * result is as accurate as exp of the exact difference.
 */
#ifndef FS_AVX512_H
#define FS_AVX512_H
#if FS_X86_MULTIVERSION
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,fma")

#define FS512_INLINE static inline __attribute__((always_inline))

/* Mask of the first k (0..16 / 0..8) lanes. */
FS512_INLINE __mmask16 fs512_mask16(ptrdiff_t k) { return (__mmask16)((1u << k) - 1u); }
FS512_INLINE __mmask8 fs512_mask8(ptrdiff_t k) { return (__mmask8)((1u << k) - 1u); }

/* ---------------------------------------------------------------- exp */

/* exp(t + lo), t = x - m rounded, lo its rounding error (or 0).  Lanes with t < -104 are 0. */
FS512_INLINE __m512 fs512_exp_ps(__m512 t, __m512 lo)
{
    const __m512 tc = _mm512_max_ps(_mm512_set1_ps(-104.0f), _mm512_min_ps(_mm512_set1_ps(89.0f), t));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(tc, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(FS_LN2_HI_F32), tc);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(FS_LN2_LO_F32), r);
    r = _mm512_add_ps(r, lo);
    __m512 p = _mm512_set1_ps(FS_EXP_C5_F32);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(FS_EXP_C4_F32));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(FS_EXP_C3_F32));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(FS_EXP_C2_F32));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(FS_EXP_C1_F32));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    __m512 y = _mm512_scalef_ps(p, n);
    __mmask16 under = _mm512_cmp_ps_mask(t, _mm512_set1_ps(-104.0f), _CMP_LT_OQ);
    return _mm512_mask_mov_ps(y, under, _mm512_setzero_ps());
}

FS512_INLINE __m512d fs512_exp_pd(__m512d t)
{
    const __m512d tc = _mm512_max_pd(_mm512_set1_pd(-746.0), _mm512_min_pd(_mm512_set1_pd(710.0), t));
    const __m512d n = _mm512_roundscale_pd(_mm512_mul_pd(tc, _mm512_set1_pd(1.4426950408889634)),
                                           _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512d r = _mm512_fnmadd_pd(n, _mm512_set1_pd(6.93147180369123816490e-01), tc);
    r = _mm512_fnmadd_pd(n, _mm512_set1_pd(1.90821492927058770002e-10), r);
    __m512d p = _mm512_set1_pd(1.0 / 6227020800.0);
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 479001600.0));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 39916800.0));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 3628800.0));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 362880.0));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 40320.0));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 5040.0));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 720.0));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 120.0));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 24.0));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 6.0));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(0.5));
    p = _mm512_fmadd_pd(p, _mm512_mul_pd(r, r), r);
    p = _mm512_add_pd(p, _mm512_set1_pd(1.0));
    __m512d y = _mm512_scalef_pd(p, n);
    __mmask8 under = _mm512_cmp_pd_mask(t, _mm512_set1_pd(-746.0), _CMP_LT_OQ);
    return _mm512_mask_mov_pd(y, under, _mm512_setzero_pd());
}

/* exp(t + lo) for t <= 0 (t = x - m with m >= x): no clamping needed, because every lane
   with t < -104 (where n would be out of range: -inf, huge negative) is set to 0, and NaN
   propagates through the polynomial. */
FS512_INLINE __m512 fs512_exp_nonpos_ps(__m512 t, __m512 lo)
{
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(t, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(FS_LN2_HI_F32), t);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(FS_LN2_LO_F32), r);
    r = _mm512_add_ps(r, lo);
    __m512 p = _mm512_set1_ps(FS_EXP_C5_F32);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(FS_EXP_C4_F32));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(FS_EXP_C3_F32));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(FS_EXP_C2_F32));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(FS_EXP_C1_F32));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    __mmask16 under = _mm512_cmp_ps_mask(t, _mm512_set1_ps(-104.0f), _CMP_LT_OQ);
    return _mm512_maskz_scalef_ps((__mmask16)~under, p, n);
}

/* exp(x - m) for float32 and m >= x, with the subtraction's rounding error fed back (TwoSum). */
FS512_INLINE __m512 fs512_exp_minus_ps(__m512 x, __m512 negm)
{
    __m512 t = _mm512_add_ps(x, negm);
    __m512 bb = _mm512_sub_ps(t, x);
    __m512 lo = _mm512_add_ps(_mm512_sub_ps(x, _mm512_sub_ps(t, bb)), _mm512_sub_ps(negm, bb));
    return fs512_exp_nonpos_ps(t, lo);
}

/* Sum of the 16 floats of v, widened to double. */
FS512_INLINE __m512d fs512_widen_add(__m512d acc, __m512 v)
{
    acc = _mm512_add_pd(acc, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
    return _mm512_add_pd(acc, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
}

/* ---------------------------------------------------------------- float32 rows */

static inline float fs512_row_max_f32(const float *x, ptrdiff_t n)
{
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    __m512 a0 = ninf, a1 = ninf, a2 = ninf, a3 = ninf;
    ptrdiff_t i = 0;
    for (; i + 64 <= n; i += 64) {
        a0 = _mm512_max_ps(a0, _mm512_loadu_ps(x + i));
        a1 = _mm512_max_ps(a1, _mm512_loadu_ps(x + i + 16));
        a2 = _mm512_max_ps(a2, _mm512_loadu_ps(x + i + 32));
        a3 = _mm512_max_ps(a3, _mm512_loadu_ps(x + i + 48));
    }
    for (; i + 16 <= n; i += 16) a0 = _mm512_max_ps(a0, _mm512_loadu_ps(x + i));
    if (i < n) a1 = _mm512_max_ps(a1, _mm512_mask_loadu_ps(ninf, fs512_mask16(n - i), x + i));
    return _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(a0, a1), _mm512_max_ps(a2, a3)));
}

static inline double fs512_exp_store_sum_f32(const float *x, float m, float *y, ptrdiff_t n)
{
    const __m512 negm = _mm512_set1_ps(-m);
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    ptrdiff_t i = 0;
    /* Lanes sum 16 values in float (a block of 256 elements), then widen to double. */
    while (i + 64 <= n) {
        __m512 b0 = _mm512_setzero_ps(), b1 = _mm512_setzero_ps();
        ptrdiff_t end = i + 256 <= n ? i + 256 : n - n % 64;
        for (; i < end; i += 64) {
            __m512 e0 = fs512_exp_minus_ps(_mm512_loadu_ps(x + i), negm);
            __m512 e1 = fs512_exp_minus_ps(_mm512_loadu_ps(x + i + 16), negm);
            __m512 e2 = fs512_exp_minus_ps(_mm512_loadu_ps(x + i + 32), negm);
            __m512 e3 = fs512_exp_minus_ps(_mm512_loadu_ps(x + i + 48), negm);
            _mm512_storeu_ps(y + i, e0);
            _mm512_storeu_ps(y + i + 16, e1);
            _mm512_storeu_ps(y + i + 32, e2);
            _mm512_storeu_ps(y + i + 48, e3);
            b0 = _mm512_add_ps(b0, _mm512_add_ps(e0, e1));
            b1 = _mm512_add_ps(b1, _mm512_add_ps(e2, e3));
        }
        s0 = fs512_widen_add(s0, b0);
        s1 = fs512_widen_add(s1, b1);
    }
    for (; i < n; i += 16) {
        __mmask16 k = n - i >= 16 ? (__mmask16)0xFFFF : fs512_mask16(n - i);
        __m512 e = fs512_exp_minus_ps(_mm512_maskz_loadu_ps(k, x + i), negm);
        e = _mm512_maskz_mov_ps(k, e);
        _mm512_mask_storeu_ps(y + i, k, e);
        s0 = fs512_widen_add(s0, e);
    }
    return _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
}

/* Sum of exp(x - m) over the elements that are not equal to m; *at_max counts the others. */
static inline double fs512_exp_sum_split_f32(const float *x, float m, ptrdiff_t n, double *at_max)
{
    const __m512 negm = _mm512_set1_ps(-m), vm = _mm512_set1_ps(m);
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    ptrdiff_t count = 0, i = 0;
    while (i + 32 <= n) {
        __m512 b0 = _mm512_setzero_ps(), b1 = _mm512_setzero_ps();
        ptrdiff_t end = i + 256 <= n ? i + 256 : n - n % 32;
        for (; i < end; i += 32) {
            __m512 x0 = _mm512_loadu_ps(x + i), x1 = _mm512_loadu_ps(x + i + 16);
            __mmask16 q0 = _mm512_cmp_ps_mask(x0, vm, _CMP_EQ_OQ), q1 = _mm512_cmp_ps_mask(x1, vm, _CMP_EQ_OQ);
            b0 = _mm512_add_ps(b0, _mm512_mask_mov_ps(fs512_exp_minus_ps(x0, negm), q0, _mm512_setzero_ps()));
            b1 = _mm512_add_ps(b1, _mm512_mask_mov_ps(fs512_exp_minus_ps(x1, negm), q1, _mm512_setzero_ps()));
            count += __builtin_popcount(q0) + __builtin_popcount(q1);
        }
        s0 = fs512_widen_add(s0, b0);
        s1 = fs512_widen_add(s1, b1);
    }
    for (; i < n; i += 16) {
        __mmask16 k = n - i >= 16 ? (__mmask16)0xFFFF : fs512_mask16(n - i);
        __m512 x0 = _mm512_maskz_loadu_ps(k, x + i);
        __mmask16 q0 = _mm512_mask_cmp_ps_mask(k, x0, vm, _CMP_EQ_OQ);
        __m512 e0 = _mm512_maskz_mov_ps(k & ~q0, fs512_exp_minus_ps(x0, negm));
        count += __builtin_popcount(q0);
        s0 = fs512_widen_add(s0, e0);
    }
    *at_max = (double)count;
    return _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
}

static inline void fs512_scale_f32(const float *src, float s, float *y, ptrdiff_t n)
{
    const __m512 vs = _mm512_set1_ps(s);
    ptrdiff_t i = 0;
    for (; i + 32 <= n; i += 32) {
        _mm512_storeu_ps(y + i, _mm512_mul_ps(_mm512_loadu_ps(src + i), vs));
        _mm512_storeu_ps(y + i + 16, _mm512_mul_ps(_mm512_loadu_ps(src + i + 16), vs));
    }
    for (; i < n; i += 16) {
        __mmask16 k = n - i >= 16 ? (__mmask16)0xFFFF : fs512_mask16(n - i);
        _mm512_mask_storeu_ps(y + i, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, src + i), vs));
    }
}

/* y = (x - m) - c */
static inline void fs512_sub_f32(const float *x, float m, float c, float *y, ptrdiff_t n)
{
    const __m512 vm = _mm512_set1_ps(m), vc = _mm512_set1_ps(c);
    ptrdiff_t i = 0;
    for (; i + 32 <= n; i += 32) {
        _mm512_storeu_ps(y + i, _mm512_sub_ps(_mm512_sub_ps(_mm512_loadu_ps(x + i), vm), vc));
        _mm512_storeu_ps(y + i + 16, _mm512_sub_ps(_mm512_sub_ps(_mm512_loadu_ps(x + i + 16), vm), vc));
    }
    for (; i < n; i += 16) {
        __mmask16 k = n - i >= 16 ? (__mmask16)0xFFFF : fs512_mask16(n - i);
        _mm512_mask_storeu_ps(y + i, k, _mm512_sub_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), vm), vc));
    }
}

/* ---------------------------------------------------------------- float64 rows */

static inline double fs512_row_max_f64(const double *x, ptrdiff_t n)
{
    const __m512d ninf = _mm512_set1_pd(-INFINITY);
    __m512d a0 = ninf, a1 = ninf, a2 = ninf, a3 = ninf;
    ptrdiff_t i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm512_max_pd(a0, _mm512_loadu_pd(x + i));
        a1 = _mm512_max_pd(a1, _mm512_loadu_pd(x + i + 8));
        a2 = _mm512_max_pd(a2, _mm512_loadu_pd(x + i + 16));
        a3 = _mm512_max_pd(a3, _mm512_loadu_pd(x + i + 24));
    }
    for (; i + 8 <= n; i += 8) a0 = _mm512_max_pd(a0, _mm512_loadu_pd(x + i));
    if (i < n) a1 = _mm512_max_pd(a1, _mm512_mask_loadu_pd(ninf, fs512_mask8(n - i), x + i));
    return _mm512_reduce_max_pd(_mm512_max_pd(_mm512_max_pd(a0, a1), _mm512_max_pd(a2, a3)));
}

static inline double fs512_exp_store_sum_f64(const double *x, double m, double *y, ptrdiff_t n)
{
    const __m512d vm = _mm512_set1_pd(m);
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    ptrdiff_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512d e0 = fs512_exp_pd(_mm512_sub_pd(_mm512_loadu_pd(x + i), vm));
        __m512d e1 = fs512_exp_pd(_mm512_sub_pd(_mm512_loadu_pd(x + i + 8), vm));
        _mm512_storeu_pd(y + i, e0);
        _mm512_storeu_pd(y + i + 8, e1);
        s0 = _mm512_add_pd(s0, e0);
        s1 = _mm512_add_pd(s1, e1);
    }
    for (; i < n; i += 8) {
        __mmask8 k = n - i >= 8 ? (__mmask8)0xFF : fs512_mask8(n - i);
        __m512d e = _mm512_maskz_mov_pd(k, fs512_exp_pd(_mm512_sub_pd(_mm512_maskz_loadu_pd(k, x + i), vm)));
        _mm512_mask_storeu_pd(y + i, k, e);
        s0 = _mm512_add_pd(s0, e);
    }
    return _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
}

static inline double fs512_exp_sum_split_f64(const double *x, double m, ptrdiff_t n, double *at_max)
{
    const __m512d vm = _mm512_set1_pd(m);
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    ptrdiff_t count = 0, i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512d x0 = _mm512_loadu_pd(x + i), x1 = _mm512_loadu_pd(x + i + 8);
        __mmask8 q0 = _mm512_cmp_pd_mask(x0, vm, _CMP_EQ_OQ), q1 = _mm512_cmp_pd_mask(x1, vm, _CMP_EQ_OQ);
        s0 = _mm512_add_pd(s0, _mm512_mask_mov_pd(fs512_exp_pd(_mm512_sub_pd(x0, vm)), q0, _mm512_setzero_pd()));
        s1 = _mm512_add_pd(s1, _mm512_mask_mov_pd(fs512_exp_pd(_mm512_sub_pd(x1, vm)), q1, _mm512_setzero_pd()));
        count += __builtin_popcount(q0) + __builtin_popcount(q1);
    }
    for (; i < n; i += 8) {
        __mmask8 k = n - i >= 8 ? (__mmask8)0xFF : fs512_mask8(n - i);
        __m512d x0 = _mm512_maskz_loadu_pd(k, x + i);
        __mmask8 q0 = _mm512_mask_cmp_pd_mask(k, x0, vm, _CMP_EQ_OQ);
        s0 = _mm512_add_pd(s0, _mm512_maskz_mov_pd(k & ~q0, fs512_exp_pd(_mm512_sub_pd(x0, vm))));
        count += __builtin_popcount(q0);
    }
    *at_max = (double)count;
    return _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
}

static inline void fs512_scale_f64(const double *src, double s, double *y, ptrdiff_t n)
{
    const __m512d vs = _mm512_set1_pd(s);
    ptrdiff_t i = 0;
    for (; i + 16 <= n; i += 16) {
        _mm512_storeu_pd(y + i, _mm512_mul_pd(_mm512_loadu_pd(src + i), vs));
        _mm512_storeu_pd(y + i + 8, _mm512_mul_pd(_mm512_loadu_pd(src + i + 8), vs));
    }
    for (; i < n; i += 8) {
        __mmask8 k = n - i >= 8 ? (__mmask8)0xFF : fs512_mask8(n - i);
        _mm512_mask_storeu_pd(y + i, k, _mm512_mul_pd(_mm512_maskz_loadu_pd(k, src + i), vs));
    }
}

static inline void fs512_sub_f64(const double *x, double m, double c, double *y, ptrdiff_t n)
{
    const __m512d vm = _mm512_set1_pd(m), vc = _mm512_set1_pd(c);
    ptrdiff_t i = 0;
    for (; i + 16 <= n; i += 16) {
        _mm512_storeu_pd(y + i, _mm512_sub_pd(_mm512_sub_pd(_mm512_loadu_pd(x + i), vm), vc));
        _mm512_storeu_pd(y + i + 8, _mm512_sub_pd(_mm512_sub_pd(_mm512_loadu_pd(x + i + 8), vm), vc));
    }
    for (; i < n; i += 8) {
        __mmask8 k = n - i >= 8 ? (__mmask8)0xFF : fs512_mask8(n - i);
        _mm512_mask_storeu_pd(y + i, k, _mm512_sub_pd(_mm512_sub_pd(_mm512_maskz_loadu_pd(k, x + i), vm), vc));
    }
}

#pragma GCC pop_options
#endif /* FS_X86_MULTIVERSION */
#endif /* FS_AVX512_H */
