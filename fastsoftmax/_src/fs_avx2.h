/*
 * fs_avx2.h -- hand-vectorised AVX2 + FMA row primitives (x86-64 machines without AVX-512, and
 * the row shapes that AMD Zen 4 runs on AVX2, fs_activations.h's mixed tables).
 *
 * The primitives of fs_avx512.h on 8 float / 4 double lanes: the long-row ones (row max and
 * min, exp + store + sum, split sums, scale, subtraction), the backward passes, vector log1p
 * for batches of rows, and short-row blocks (float32 softmax, log_softmax, cross-entropy: 8
 * rows a block; float64: 4; transposed in registers, rows of up to 16 by kernels compiled
 * per length; float32 log_softmax of rows under 8 and softmax under 3 gathered).  No mask registers (blends and masked loads instead; no masked store in a main
 * loop: vmaskmovps / vmaskmovpd stores are microcoded on AMD Zen), 2^n built from exponent
 * bits (in two factors where a result may be subnormal) instead of vscalef; rows within a
 * spread of their max (FS_EXACT_SPREAD, FS_SPREAD_F64) take exps without range tests
 * (fs256_exp_spread_ps, fs256_exp_bounded_pd), float32 softmax without the TwoSum there; the
 * exps from tables of 2^(j/8) (float32, a degree-3 polynomial) and 2^(j/4) (float64, degree
 * 8), one vpermd each.  Streamed rows: fs_avx2_stream_impl.h.
 */
#ifndef FS_AVX2_H
#define FS_AVX2_H
#if FS_X86_MULTIVERSION
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx2,fma")

#define FS256_INLINE static inline __attribute__((always_inline))

/* Lane masks for the first k elements (lanes at or beyond k are off). */
FS256_INLINE __m256i fs256_tail_mask32(ptrdiff_t k)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)k), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
FS256_INLINE __m256i fs256_tail_mask64(ptrdiff_t k)
{
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x((long long)k), _mm256_setr_epi64x(0, 1, 2, 3));
}

/* The float32 exps: with k = round(t * 8 / ln2) = 8 e + j (0 <= j < 8) and r = t - k ln2 / 8
   (|r| <= ln2 / 16; ln2 / 8 in two parts, k ln2_hi exact for |k| < 2048),
   exp(t) = 2^e 2^(j/8) e^r, e^r = 1 + q with q = r (1 + r (c2 + c3 r)) (a degree-3 minimax fit
   on [-ln2/16, ln2/16]: relative error 2.8e-8), and the result s + s q rounded once for
   s = 2^e 2^(j/8).  The table, one vpermd indexed by k's low three bits (the lanes of kb, whose
   bits are 0x4B400000 + k), holds 2^(j/8)'s bits less j << 20, so that adding kb's bits shifted
   left by 20 ((k << 20) mod 2^32) puts e into the exponent field.  Against the degree-5 form on
   [-ln2/2, ln2/2] that the portable path keeps (and AVX-512 for rows not within
   FS_EXACT_SPREAD of their max; its bounded rows take this table exp on 16 lanes,
   fs512_exp_table_spread_ps): 2 FMA-pipe operations fewer (7 in fs256_exp_spread_ps where that
   took 9, of 11 operations against 13) and a shorter chain; exp + store + sum of a float32 row
   in L1 0.88-0.92x the time on an AMD EPYC (Zen 3); every float32 t in [-32, 0] within 1.16 ulp
   of exp(t) (mean 0.071; the degree-5 form: 1.98, mean 0.093).
   `full` (a constant after inlining): any t <= 89 (lanes below -104 give 0, NaN propagates), s
   in two factors s1 * 2^e2 with e2 = floor(e / 2) so that both are normal and results below
   2^-126 subnormal, the product by 2^e2 exact otherwise: the same bits as fs256_exp_spread_ps
   wherever both apply.  `use_lo` (a constant too) adds lo to r (the TwoSum correction of
   t = x - m; the compiler may not drop an addition of 0: -0 + 0 is +0). */
#define FS_EXP8_INV_STEP 11.5415603271117073f /* 8 / ln2 */
#define FS_EXP8_STEP_HI 0x1.62Ep-4f           /* ln2 / 8 in two parts */
#define FS_EXP8_STEP_LO 0x1.0BFBE8p-18f
#define FS_EXP8_C3 0x1.5548CEp-3f
#define FS_EXP8_C2 0x1.000876p-1f
#define FS_EXP8_TABLE_BITS \
    0x3F800000, 0x3F7B95C2, 0x3F7837F0, 0x3F75FED7, 0x3F7504F3, 0x3F75672A, 0x3F7744FD, 0x3F7AC0C7

FS256_INLINE __m256 fs256_exp_table_impl_ps(__m256 t, __m256 lo, int use_lo, int full)
{
    const __m256 magic = _mm256_set1_ps(12582912.0f); /* 1.5 * 2^23 */
    const __m256 tc = full ? _mm256_max_ps(t, _mm256_set1_ps(-104.0f)) : t; /* NaN: max returns -104 */
    const __m256 kb = _mm256_fmadd_ps(tc, _mm256_set1_ps(FS_EXP8_INV_STEP), magic);
    const __m256 k = _mm256_sub_ps(kb, magic);
    __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(FS_EXP8_STEP_HI), tc);
    r = _mm256_fnmadd_ps(k, _mm256_set1_ps(FS_EXP8_STEP_LO), r);
    if (use_lo) r = _mm256_add_ps(r, lo);
    __m256 q = _mm256_fmadd_ps(_mm256_set1_ps(FS_EXP8_C3), r, _mm256_set1_ps(FS_EXP8_C2));
    q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(1.0f));
    q = _mm256_mul_ps(q, r);
    const __m256i kbits = _mm256_castps_si256(kb);
    const __m256i table = _mm256_setr_epi32(FS_EXP8_TABLE_BITS);
    __m256i sbits = _mm256_add_epi32(_mm256_permutevar8x32_epi32(table, kbits), _mm256_slli_epi32(kbits, 20));
    if (!full) {
        const __m256 s = _mm256_castsi256_ps(sbits);
        return _mm256_fmadd_ps(s, q, s);
    }
    const __m256i e2 = _mm256_srai_epi32(_mm256_sub_epi32(kbits, _mm256_castps_si256(magic)), 4); /* floor(k / 16) */
    const __m256 s1 = _mm256_castsi256_ps(_mm256_sub_epi32(sbits, _mm256_slli_epi32(e2, 23)));
    const __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(e2, _mm256_set1_epi32(127)), 23));
    __m256 y = _mm256_mul_ps(_mm256_fmadd_ps(s1, q, s1), s2);
    y = _mm256_andnot_ps(_mm256_cmp_ps(t, _mm256_set1_ps(-104.0f), _CMP_LT_OQ), y);
    return _mm256_blendv_ps(y, t, _mm256_cmp_ps(t, t, _CMP_UNORD_Q)); /* NaN in, NaN out */
}

/* exp(t + lo) for t <= 89 (lanes below -104 give 0, NaN propagates); use_lo == 0 (a constant
   after inlining) skips the addition of lo. */
FS256_INLINE __m256 fs256_exp_nonpos_impl_ps(__m256 t, __m256 lo, int use_lo) { return fs256_exp_table_impl_ps(t, lo, use_lo, 1); }

FS256_INLINE __m256 fs256_exp_nonpos_ps(__m256 t) { return fs256_exp_nonpos_impl_ps(t, t, 0); }

/* exp(t) for lanes with -FS_EXACT_SPREAD <= t <= 0 (t = x - m in a row within FS_EXACT_SPREAD
   of its max m) or NaN: s in one factor (e >= -47 gives a normal one), no clamp and no
   underflow test, NaN propagating through q: the same value as fs256_exp_nonpos_ps in 11
   operations where it takes 23.  As on AVX-512 (fs512_exp_spread_keep_ps), a lane below -104
   can only come from a row holding a NaN that the min dropped: it may give anything instead
   of 0, in a row whose sum, hence every result, is NaN anyway. */
FS256_INLINE __m256 fs256_exp_spread_ps(__m256 t) { return fs256_exp_table_impl_ps(t, t, 0, 0); }

/* The float64 exps, from a table of four as the float32 ones: k = round(t * 4 / ln2) = 4 e + j
   (0 <= j < 4), r = t - k ln2 / 4 (fdlibm's two-part ln2 divided by 4: k ln2_hi exact),
   |r| <= ln2 / 8, e^r - 1 = r P(r) with P a degree-7 polynomial (Chebyshev fit of (e^r - 1) / r
   on [-ln2/8, ln2/8]: relative error of 1 + r P(r) 1.05e-17 with the coefficients rounded), and
   exp(t) = s + s (e^r - 1) rounded once, s = 2^e 2^(j/4).  The table, one vpermd (the dword
   indices 2j, 2j + 1 from k in the low dword of v = t * 4 / ln2 + 1.5 * 2^52), holds 2^(j/4)
   correctly rounded, its bits less j << 50, so that adding v's bits shifted left by 50
   ((k << 50) mod 2^64) puts e into the exponent field.  Against the degree-11 polynomial on
   [-ln2/2, ln2/2] that the portable path keeps: 12 FMA-pipe operations where it took 15, and a
   shorter chain; exp + store + sum of 1024 doubles in L1, four exps interleaved, 0.84-0.92x the
   time on an AMD EPYC (Zen 3); within 0.81 * 2^-52 relative of exp (150M random t in
   [-708, 709], against expl; the degree-11 form: 0.80 on 20M). */
#define FS256_EXP_PD_C8 0x1.a02bc81e9aa25p-16
#define FS256_EXP_PD_HORNER(STEP)                                                               \
    STEP(0x1.a03039d502330p-13) STEP(0x1.6c16c116aade3p-10) STEP(0x1.111110a649a5bp-7)          \
    STEP(0x1.55555555565c1p-5) STEP(0x1.5555555557e62p-3) STEP(0x1.0000000000000p-1)            \
    STEP(0x1.fffffffffffffp-1)
#define FS256_EXP_PD_MAGIC 6755399441055744.0 /* 1.5 * 2^52 */
/* 2^(j/4)'s bits less j << 50, j = 0..3 */
#define FS256_EXP_PD_TABLE                                                                      \
    _mm256_setr_epi64x(0x3FF0000000000000LL, 0x3FF306FE0A31B715LL - (1LL << 50),              \
                       0x3FF6A09E667F3BCDLL - (2LL << 50), 0x3FFAE89F995AD3ADLL - (3LL << 50))

/* s = 2^e 2^(j/4) (its bits) for v = t * 4 / ln2 + 1.5 * 2^52 rounded, e >= -1022 */
FS256_INLINE __m256i fs256_exp_scale_bits_pd(__m256d v)
{
    const __m256i vb = _mm256_castpd_si256(v);
    const __m256i k2 = _mm256_shuffle_epi32(vb, _MM_SHUFFLE(2, 2, 0, 0)); /* k in both dwords */
    const __m256i idx = _mm256_or_si256(_mm256_add_epi32(k2, k2), _mm256_setr_epi32(0, 1, 0, 1, 0, 1, 0, 1));
    return _mm256_add_epi64(_mm256_permutevar8x32_epi32(FS256_EXP_PD_TABLE, idx), _mm256_slli_epi64(vb, 50));
}

/* The shared part of the float64 exps: v (above, returned in *v_out), k = v - 1.5 * 2^52 (in
   *k_out), and e^r - 1. */
FS256_INLINE __m256d fs256_exp_reduced_pd(__m256d t, __m256d *v_out, __m256d *k_out)
{
    const __m256d magic = _mm256_set1_pd(FS256_EXP_PD_MAGIC);
    const __m256d v = _mm256_fmadd_pd(t, _mm256_set1_pd(0x1.71547652b82fep+2), magic); /* 4 / ln2 */
    const __m256d k = _mm256_sub_pd(v, magic);
    __m256d r = _mm256_fnmadd_pd(k, _mm256_set1_pd(6.93147180369123816490e-01 * 0.25), t);
    r = _mm256_fnmadd_pd(k, _mm256_set1_pd(1.90821492927058770002e-10 * 0.25), r);
    __m256d p = _mm256_set1_pd(FS256_EXP_PD_C8);
#define FS256_EXP_PD_STEP1(c) p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(c));
    FS256_EXP_PD_HORNER(FS256_EXP_PD_STEP1)
#undef FS256_EXP_PD_STEP1
    *v_out = v;
    *k_out = k;
    return _mm256_mul_pd(p, r);
}

/* exp(t) in float64 for any t (clamped to [-746, 710]; NaN propagates): s in two factors,
   s1 * 2^e2 with e2 = floor(e / 2), so that both are normal (results below 2^-1022 subnormal;
   the product by 2^e2 exact otherwise: the same bits as fs256_exp_bounded_pd wherever both
   apply). */
FS256_INLINE __m256d fs256_exp_pd(__m256d t)
{
    const __m256d tc = _mm256_max_pd(_mm256_min_pd(t, _mm256_set1_pd(710.0)), _mm256_set1_pd(-746.0));
    __m256d v, k;
    const __m256d em1 = fs256_exp_reduced_pd(tc, &v, &k);
    /* e2 = floor(k / 8), its bits shifted into the exponent field from e2 + 1.5 * 2^52 */
    const __m256d e2 = _mm256_floor_pd(_mm256_mul_pd(k, _mm256_set1_pd(0.125)));
    const __m256i e2sh = _mm256_slli_epi64(_mm256_castpd_si256(_mm256_add_pd(e2, _mm256_set1_pd(FS256_EXP_PD_MAGIC))), 52);
    const __m256d s1 = _mm256_castsi256_pd(_mm256_sub_epi64(fs256_exp_scale_bits_pd(v), e2sh));
    const __m256d s2 = _mm256_castsi256_pd(_mm256_add_epi64(e2sh, _mm256_set1_epi64x(1023LL << 52)));
    __m256d y = _mm256_mul_pd(_mm256_fmadd_pd(s1, em1, s1), s2);
    y = _mm256_andnot_pd(_mm256_cmp_pd(t, _mm256_set1_pd(-746.0), _CMP_LT_OQ), y);
    y = _mm256_blendv_pd(y, _mm256_set1_pd(INFINITY), _mm256_cmp_pd(t, _mm256_set1_pd(710.0), _CMP_GT_OQ));
    return _mm256_blendv_pd(y, t, _mm256_cmp_pd(t, t, _CMP_UNORD_Q));
}

/* exp(t) for lanes with -FS_SPREAD_F64 <= t <= 709 or NaN: s in one factor (-1022 <= e <= 1022),
   NaN propagating through the polynomial.  A lane below can only come from a row holding a NaN
   that the min dropped (fs256_row_max_bounded_f64): garbage there, in a row that is NaN
   anyway. */
FS256_INLINE __m256d fs256_exp_bounded_pd(__m256d t)
{
    __m256d v, k;
    const __m256d em1 = fs256_exp_reduced_pd(t, &v, &k);
    const __m256d s = _mm256_castsi256_pd(fs256_exp_scale_bits_pd(v));
    return _mm256_fmadd_pd(s, em1, s);
}

/* exp(t) for t <= 0 or NaN (x - m, m the row max): as fs256_exp_pd, but a vector whose lanes
   are all >= -708 (or NaN: it propagates through the polynomial) has s >= 2^-1022 in one
   factor, and needs neither the clamps nor the overflow blend: the same bits (s + s (e^r - 1)
   rounded once either way) without the clamps, the second factor and the blends.  `any_sign`
   (a constant after inlining) also sends vectors with a lane above 709 to fs256_exp_pd
   (s < 2^1023 below it), for log_softmax_backward's exp of its `output` argument, which may
   hold anything. */
FS256_INLINE __m256d fs256_exp_fast_impl_pd(__m256d t, int any_sign)
{
    __m256d out = _mm256_cmp_pd(t, _mm256_set1_pd(-708.0), _CMP_LT_OQ);
    if (any_sign) out = _mm256_or_pd(out, _mm256_cmp_pd(t, _mm256_set1_pd(709.0), _CMP_GT_OQ));
    if (_mm256_movemask_pd(out) != 0) return fs256_exp_pd(t);
    return fs256_exp_bounded_pd(t);
}

FS256_INLINE __m256d fs256_exp_nonpos_pd(__m256d t) { return fs256_exp_fast_impl_pd(t, 0); }
/* exp(t), t <= 0: fs256_exp_bounded_pd when `bounded` (a constant after inlining), else
   fs256_exp_nonpos_pd. */
FS256_INLINE __m256d fs256_exp_t_pd(__m256d t, int bounded) { return bounded ? fs256_exp_bounded_pd(t) : fs256_exp_nonpos_pd(t); }
FS256_INLINE __m256d fs256_exp_any_pd(__m256d t) { return fs256_exp_fast_impl_pd(t, 1); }

/* Four float64 exps at once, in place: fs256_exp_bounded_pd's operations (so the same bits),
   each step applied to the four vectors before the next.  The exp is a chain of about 14
   dependent operations; written one vector after another, the out-of-order window held too
   few of them to keep the FMA pipes busy (with the degree-11 exp: exp + store + sum of 1024
   doubles in L1 1.02-1.05 ns an element one vector after another, 0.91 interleaved, on an AMD
   EPYC (Zen 3), where its 15 FMA-pipe operations per vector would allow about 0.63). */
#define FS256_EACH4(stmt)                        \
    do {                                         \
        for (int u = 0; u < 4; u++) { stmt; }    \
    } while (0)
FS256_INLINE void fs256_exp4_bounded_pd(__m256d *t)
{
    const __m256d magic = _mm256_set1_pd(FS256_EXP_PD_MAGIC);
    __m256d v[4], k[4], r[4], p[4];
    FS256_EACH4(v[u] = _mm256_fmadd_pd(t[u], _mm256_set1_pd(0x1.71547652b82fep+2), magic));
    FS256_EACH4(k[u] = _mm256_sub_pd(v[u], magic));
    FS256_EACH4(r[u] = _mm256_fnmadd_pd(k[u], _mm256_set1_pd(6.93147180369123816490e-01 * 0.25), t[u]));
    FS256_EACH4(r[u] = _mm256_fnmadd_pd(k[u], _mm256_set1_pd(1.90821492927058770002e-10 * 0.25), r[u]));
    FS256_EACH4(p[u] = _mm256_set1_pd(FS256_EXP_PD_C8));
#define FS256_EXP_PD_STEP4(c) FS256_EACH4(p[u] = _mm256_fmadd_pd(p[u], r[u], _mm256_set1_pd(c)));
    FS256_EXP_PD_HORNER(FS256_EXP_PD_STEP4)
#undef FS256_EXP_PD_STEP4
    FS256_EACH4(p[u] = _mm256_mul_pd(p[u], r[u]));
    FS256_EACH4(const __m256d s = _mm256_castsi256_pd(fs256_exp_scale_bits_pd(v[u])); t[u] = _mm256_fmadd_pd(s, p[u], s));
}

/* fs256_exp_t_pd of four vectors, in place, the same bits: bounded, or none of their lanes below
   -708, interleaved (fs256_exp4_bounded_pd); else one vector at a time. */
FS256_INLINE void fs256_exp4_t_pd(__m256d *t, int bounded)
{
    if (!bounded) {
        const __m256d lim = _mm256_set1_pd(-708.0);
        const __m256d out = _mm256_or_pd(_mm256_or_pd(_mm256_cmp_pd(t[0], lim, _CMP_LT_OQ), _mm256_cmp_pd(t[1], lim, _CMP_LT_OQ)),
                                         _mm256_or_pd(_mm256_cmp_pd(t[2], lim, _CMP_LT_OQ), _mm256_cmp_pd(t[3], lim, _CMP_LT_OQ)));
        if (_mm256_movemask_pd(out) != 0) {
            FS256_EACH4(t[u] = fs256_exp_nonpos_pd(t[u]));
            return;
        }
    }
    fs256_exp4_bounded_pd(t);
}

/* For each column j < n of a float64 block (c[j], lane k = row k): COL(j, e) with
   e = fs256_exp_t_pd(c[j] - mx, bounded), the columns in order, their exps four at a time
   interleaved (fs256_exp4_t_pd).  The four exps are taken before the four COL steps, so COL(j, e)
   may read and write c[j] only. */
#define FS256_EACH_COLUMN_EXP_F64(c, n, mx, bounded, COL)                                  \
    do {                                                                                   \
        ptrdiff_t j4_ = 0;                                                                 \
        for (; j4_ + 4 <= (n); j4_ += 4) {                                                 \
            __m256d e4_[4];                                                                \
            FS256_EACH4(e4_[u] = _mm256_sub_pd((c)[j4_ + u], (mx)));                       \
            fs256_exp4_t_pd(e4_, (bounded));                                               \
            FS256_EACH4(COL(j4_ + u, e4_[u]));                                             \
        }                                                                                  \
        for (; j4_ < (n); j4_++) COL(j4_, fs256_exp_t_pd(_mm256_sub_pd((c)[j4_], (mx)), (bounded))); \
    } while (0)

FS256_INLINE __m256 fs256_exp_minus_ps(__m256 x, __m256 negm)
{
    __m256 t = _mm256_add_ps(x, negm);
    __m256 bb = _mm256_sub_ps(t, x);
    __m256 lo = _mm256_add_ps(_mm256_sub_ps(x, _mm256_sub_ps(t, bb)), _mm256_sub_ps(negm, bb));
    return fs256_exp_nonpos_impl_ps(t, lo, 1);
}

/* exp(x - m) for m >= x: with the TwoSum correction of x - m when `twosum` (a constant after
   inlining), or for rows within FS_EXACT_SPREAD of m without it. */
FS256_INLINE __m256 fs256_exp_x_minus_m_ps(__m256 x, __m256 negm, int twosum)
{
    return twosum ? fs256_exp_minus_ps(x, negm) : fs256_exp_spread_ps(_mm256_add_ps(x, negm));
}

FS256_INLINE __m256d fs256_widen_add(__m256d acc, __m256 v)
{
    acc = _mm256_add_pd(acc, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
    return _mm256_add_pd(acc, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
}

FS256_INLINE float fs256_hmax_ps(__m256 v)
{
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}
FS256_INLINE float fs256_hmin_ps(__m256 v)
{
    __m128 m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_min_ps(m, _mm_movehl_ps(m, m));
    m = _mm_min_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}
FS256_INLINE double fs256_hmax_pd(__m256d v)
{
    __m128d m = _mm_max_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    m = _mm_max_sd(m, _mm_unpackhi_pd(m, m));
    return _mm_cvtsd_f64(m);
}
FS256_INLINE double fs256_hmin_pd(__m256d v)
{
    __m128d m = _mm_min_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    m = _mm_min_sd(m, _mm_unpackhi_pd(m, m));
    return _mm_cvtsd_f64(m);
}
FS256_INLINE double fs256_hsum_pd(__m256d v)
{
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    s = _mm_add_sd(s, _mm_unpackhi_pd(s, s));
    return _mm_cvtsd_f64(s);
}

/* ---------------------------------------------------------------- float32 rows */

static inline float fs256_row_max_f32(const float *x, ptrdiff_t n)
{
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    __m256 a0 = ninf, a1 = ninf, a2 = ninf, a3 = ninf;
    ptrdiff_t i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm256_max_ps(a0, _mm256_loadu_ps(x + i));
        a1 = _mm256_max_ps(a1, _mm256_loadu_ps(x + i + 8));
        a2 = _mm256_max_ps(a2, _mm256_loadu_ps(x + i + 16));
        a3 = _mm256_max_ps(a3, _mm256_loadu_ps(x + i + 24));
    }
    for (; i + 8 <= n; i += 8) a0 = _mm256_max_ps(a0, _mm256_loadu_ps(x + i));
    float m = fs256_hmax_ps(_mm256_max_ps(_mm256_max_ps(a0, a1), _mm256_max_ps(a2, a3)));
    for (; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}

/* Max and min of a row in one pass (the min tells whether exp(x - m) needs the TwoSum); a NaN
   may be dropped from either, as in fs256_row_max_f32. */
static inline float fs256_row_minmax_f32(const float *x, ptrdiff_t n, float *min_out)
{
    const __m256 ninf = _mm256_set1_ps(-INFINITY), pinf = _mm256_set1_ps(INFINITY);
    __m256 a0 = ninf, a1 = ninf, a2 = ninf, a3 = ninf, b0 = pinf, b1 = pinf, b2 = pinf, b3 = pinf;
    ptrdiff_t i = 0;
    for (; i + 32 <= n; i += 32) {
        const __m256 v0 = _mm256_loadu_ps(x + i), v1 = _mm256_loadu_ps(x + i + 8);
        const __m256 v2 = _mm256_loadu_ps(x + i + 16), v3 = _mm256_loadu_ps(x + i + 24);
        a0 = _mm256_max_ps(a0, v0);
        a1 = _mm256_max_ps(a1, v1);
        a2 = _mm256_max_ps(a2, v2);
        a3 = _mm256_max_ps(a3, v3);
        b0 = _mm256_min_ps(b0, v0);
        b1 = _mm256_min_ps(b1, v1);
        b2 = _mm256_min_ps(b2, v2);
        b3 = _mm256_min_ps(b3, v3);
    }
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        a0 = _mm256_max_ps(a0, v);
        b0 = _mm256_min_ps(b0, v);
    }
    float m = fs256_hmax_ps(_mm256_max_ps(_mm256_max_ps(a0, a1), _mm256_max_ps(a2, a3)));
    float lo = fs256_hmin_ps(_mm256_min_ps(_mm256_min_ps(b0, b1), _mm256_min_ps(b2, b3)));
    for (; i < n; i++) {
        m = x[i] > m ? x[i] : m;
        lo = x[i] < lo ? x[i] : lo;
    }
    *min_out = lo;
    return m;
}

/* The max of a row, *bounded telling whether every element lies within FS_EXACT_SPREAD of it
   (the exps may then be fs256_exp_spread_ps). */
static inline float fs256_row_max_bounded_f32(const float *x, ptrdiff_t n, int *bounded)
{
    float lo;
    const float m = fs256_row_minmax_f32(x, n, &lo);
    *bounded = m - lo <= FS_EXACT_SPREAD;
    return m;
}

/* Max and min of a float64 row in one pass; a NaN may be dropped from either. */
static inline double fs256_row_minmax_f64(const double *x, ptrdiff_t n, double *min_out)
{
    const __m256d ninf = _mm256_set1_pd(-INFINITY), pinf = _mm256_set1_pd(INFINITY);
    __m256d a0 = ninf, a1 = ninf, a2 = ninf, a3 = ninf, b0 = pinf, b1 = pinf, b2 = pinf, b3 = pinf;
    ptrdiff_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m256d v0 = _mm256_loadu_pd(x + i), v1 = _mm256_loadu_pd(x + i + 4);
        const __m256d v2 = _mm256_loadu_pd(x + i + 8), v3 = _mm256_loadu_pd(x + i + 12);
        a0 = _mm256_max_pd(a0, v0);
        a1 = _mm256_max_pd(a1, v1);
        a2 = _mm256_max_pd(a2, v2);
        a3 = _mm256_max_pd(a3, v3);
        b0 = _mm256_min_pd(b0, v0);
        b1 = _mm256_min_pd(b1, v1);
        b2 = _mm256_min_pd(b2, v2);
        b3 = _mm256_min_pd(b3, v3);
    }
    for (; i + 4 <= n; i += 4) {
        const __m256d v = _mm256_loadu_pd(x + i);
        a0 = _mm256_max_pd(a0, v);
        b0 = _mm256_min_pd(b0, v);
    }
    double m = fs256_hmax_pd(_mm256_max_pd(_mm256_max_pd(a0, a1), _mm256_max_pd(a2, a3)));
    double lo = fs256_hmin_pd(_mm256_min_pd(_mm256_min_pd(b0, b1), _mm256_min_pd(b2, b3)));
    for (; i < n; i++) {
        m = x[i] > m ? x[i] : m;
        lo = x[i] < lo ? x[i] : lo;
    }
    *min_out = lo;
    return m;
}

/* The max of a float64 row, *bounded telling whether every element lies within FS_SPREAD_F64
   of it (the exps then need no range test: fs256_exp_bounded_pd). */
static inline double fs256_row_max_bounded_f64(const double *x, ptrdiff_t n, int *bounded)
{
    double lo;
    const double m = fs256_row_minmax_f64(x, n, &lo);
    *bounded = m - lo <= FS_SPREAD_F64;
    return m;
}

/* y = exp(x - m), returns sum(y) in double lanes (fs256_hsum_pd of them is the sum); with
   `twosum` (a constant after inlining) the rounding of x - m is fed back, without it (rows
   within FS_EXACT_SPREAD of m) the exp is fs256_exp_spread_ps. */
FS256_INLINE __m256d fs256_exp_store_sum_lanes_f32(const float *x, float m, float *y, ptrdiff_t n, int twosum)
{
    const __m256 negm = _mm256_set1_ps(-m);
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
    ptrdiff_t i = 0;
    while (i + 16 <= n) {
        __m256 b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps();
        ptrdiff_t end = i + 128 <= n ? i + 128 : n - n % 16;
        /* unrolled whole in softmax's medium blocks of a constant width (softmax_medium_blocks;
           16384x128 float32, a build with only that width compiled: 7.21M -> 6.95M
           instructions); elsewhere 8 at a time, instructions within 2% */
#pragma GCC unroll 8
        for (; i < end; i += 16) {
            __m256 e0 = fs256_exp_x_minus_m_ps(_mm256_loadu_ps(x + i), negm, twosum);
            __m256 e1 = fs256_exp_x_minus_m_ps(_mm256_loadu_ps(x + i + 8), negm, twosum);
            _mm256_storeu_ps(y + i, e0);
            _mm256_storeu_ps(y + i + 8, e1);
            b0 = _mm256_add_ps(b0, e0);
            b1 = _mm256_add_ps(b1, e1);
        }
        s0 = fs256_widen_add(s0, b0);
        s1 = fs256_widen_add(s1, b1);
    }
    for (; i < n; i += 8) {
        __m256i k = fs256_tail_mask32(n - i); /* all lanes while 8 or more are left */
        __m256 e = fs256_exp_x_minus_m_ps(_mm256_maskload_ps(x + i, k), negm, twosum);
        e = _mm256_and_ps(e, _mm256_castsi256_ps(k)); /* the spread exp of a zero lane may be garbage */
        _mm256_maskstore_ps(y + i, k, e);
        s0 = fs256_widen_add(s0, e);
    }
    return _mm256_add_pd(s0, s1);
}

FS256_INLINE double fs256_exp_store_sum_impl_f32(const float *x, float m, float *y, ptrdiff_t n, int twosum)
{
    return fs256_hsum_pd(fs256_exp_store_sum_lanes_f32(x, m, y, n, twosum));
}

/* With the TwoSum correction: as accurate as exp of the exact difference. */
static inline double fs256_exp_store_sum_f32(const float *x, float m, float *y, ptrdiff_t n)
{
    return fs256_exp_store_sum_impl_f32(x, m, y, n, 1);
}

/* Without it, for rows within FS_EXACT_SPREAD of m (see FS_EXACT_SPREAD). */
static inline double fs256_exp_store_sum_fast_f32(const float *x, float m, float *y, ptrdiff_t n)
{
    return fs256_exp_store_sum_impl_f32(x, m, y, n, 0);
}

static inline void fs256_scale_f32(const float *src, float s, float *y, ptrdiff_t n)
{
    const __m256 vs = _mm256_set1_ps(s);
    const ptrdiff_t nv = n - n % 8; /* (not i + 8 <= n: with n a constant, GCC warned of the tail loop) */
    ptrdiff_t i = 0;
    for (; i < nv; i += 8) _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_loadu_ps(src + i), vs));
    for (; i < n; i++) y[i] = src[i] * s;
}

/* ---- softmax of medium rows, 8 rows a block: the helpers (the blocks themselves are
   medium_block_sums and softmax_medium_slice in fs_activations_impl.h) ----
   The one-row kernel (softmax_row) pays per row for two horizontal reductions (max and min),
   one for the sum, a scalar division and the set-up of three loops, and each row's exps wait
   for its max: at 64-128 float32 columns that was about a third of its instructions
   (callgrind: 433 for a row of 64, the exp loop 152).  A block takes the 8 rows' max and min
   as vectors, then reduces them across the rows at once (fs256_medium_minmax8_T), the sums
   too (fs256_hsum4_pd: the additions of fs256_hsum_pd, lane by lane) and divides them in one
   vector: the same values as softmax_row. */
#define FS256_MEDIUM_MAX_F32 256

/* Max and min of a row as vectors (lane-wise over its elements; the lanes past n in the last
   vector are -inf / +inf); a NaN may be dropped, as in fs256_row_minmax_f32. */
FS256_INLINE void fs256_row_minmax_lanes_f32(const float *x, ptrdiff_t n, __m256 *mx, __m256 *mn)
{
    const __m256 ninf = _mm256_set1_ps(-INFINITY), pinf = _mm256_set1_ps(INFINITY);
    __m256 a0 = ninf, a1 = ninf, b0 = pinf, b1 = pinf;
    ptrdiff_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m256 v0 = _mm256_loadu_ps(x + i), v1 = _mm256_loadu_ps(x + i + 8);
        a0 = _mm256_max_ps(a0, v0);
        a1 = _mm256_max_ps(a1, v1);
        b0 = _mm256_min_ps(b0, v0);
        b1 = _mm256_min_ps(b1, v1);
    }
    for (; i < n; i += 8) {
        const __m256i k = fs256_tail_mask32(n - i);
        const __m256 v = _mm256_maskload_ps(x + i, k);
        a0 = _mm256_max_ps(a0, _mm256_blendv_ps(ninf, v, _mm256_castsi256_ps(k)));
        b0 = _mm256_min_ps(b0, _mm256_blendv_ps(pinf, v, _mm256_castsi256_ps(k)));
    }
    *mx = _mm256_max_ps(a0, a1);
    *mn = _mm256_min_ps(b0, b1);
}

/* Lane k: the max (`max`, a constant after inlining) or the min of the lanes of v[k], k < 8. */
FS256_INLINE __m256 fs256_across8_ps(const __m256 *v, int max)
{
#define FS256_OP_(a, b) (max ? _mm256_max_ps((a), (b)) : _mm256_min_ps((a), (b)))
    __m256 h[2];
    for (int g = 0; g < 2; g++) {
        const __m256 *w = v + 4 * g;
        /* per 128-bit half: (v0 l0|l2, v1 l0|l2, v0 l1|l3, v1 l1|l3), the same for v2, v3 */
        const __m256 a = FS256_OP_(_mm256_unpacklo_ps(w[0], w[1]), _mm256_unpackhi_ps(w[0], w[1]));
        const __m256 b = FS256_OP_(_mm256_unpacklo_ps(w[2], w[3]), _mm256_unpackhi_ps(w[2], w[3]));
        /* per half: rows 4g .. 4g + 3 over that half's four lanes */
        h[g] = FS256_OP_(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(1, 0, 1, 0)), _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 2, 3, 2)));
    }
    return FS256_OP_(_mm256_permute2f128_ps(h[0], h[1], 0x20), _mm256_permute2f128_ps(h[0], h[1], 0x31));
#undef FS256_OP_
}

/* Lane k: fs256_hsum_pd(v[k]) for k < 4, the same additions ((l0 + l2) + (l1 + l3)). */
FS256_INLINE __m256d fs256_hsum4_pd(const __m256d *v)
{
    const __m256d s02 = _mm256_add_pd(_mm256_permute2f128_pd(v[0], v[2], 0x20), _mm256_permute2f128_pd(v[0], v[2], 0x31));
    const __m256d s13 = _mm256_add_pd(_mm256_permute2f128_pd(v[1], v[3], 0x20), _mm256_permute2f128_pd(v[1], v[3], 0x31));
    return _mm256_add_pd(_mm256_unpacklo_pd(s02, s13), _mm256_unpackhi_pd(s02, s13));
}

/* The max and min of each of 8 rows of n floats (m[k], lo[k] for row k, n apart). */
FS256_INLINE void fs256_medium_minmax8_f32(const float *x, ptrdiff_t n, float *m, float *lo)
{
    __m256 mx[8], mn[8];
    for (int k = 0; k < 8; k++) fs256_row_minmax_lanes_f32(x + k * n, n, &mx[k], &mn[k]);
    _mm256_storeu_ps(m, fs256_across8_ps(mx, 1));
    _mm256_storeu_ps(lo, fs256_across8_ps(mn, 0));
}

/* y = src - c */
static inline void fs256_sub_const_f32(const float *src, float c, float *y, ptrdiff_t n)
{
    const __m256 vc = _mm256_set1_ps(c);
    const ptrdiff_t nv = n - n % 8; /* (as fs256_scale_f32) */
    ptrdiff_t i = 0;
    for (; i < nv; i += 8) _mm256_storeu_ps(y + i, _mm256_sub_ps(_mm256_loadu_ps(src + i), vc));
    for (; i < n; i++) y[i] = src[i] - c;
}

/* ---------------------------------------------------------------- float64 rows */

static inline double fs256_row_max_f64(const double *x, ptrdiff_t n)
{
    const __m256d ninf = _mm256_set1_pd(-INFINITY);
    __m256d a0 = ninf, a1 = ninf, a2 = ninf, a3 = ninf;
    ptrdiff_t i = 0;
    for (; i + 16 <= n; i += 16) {
        a0 = _mm256_max_pd(a0, _mm256_loadu_pd(x + i));
        a1 = _mm256_max_pd(a1, _mm256_loadu_pd(x + i + 4));
        a2 = _mm256_max_pd(a2, _mm256_loadu_pd(x + i + 8));
        a3 = _mm256_max_pd(a3, _mm256_loadu_pd(x + i + 12));
    }
    for (; i + 4 <= n; i += 4) a0 = _mm256_max_pd(a0, _mm256_loadu_pd(x + i));
    double m = fs256_hmax_pd(_mm256_max_pd(_mm256_max_pd(a0, a1), _mm256_max_pd(a2, a3)));
    for (; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}

/* y = exp(x - m), returns sum(y) in double lanes (fs256_hsum_pd of them is the sum);
   `bounded` (a constant after inlining): every element lies within FS_SPREAD_F64 of m, and
   the exp needs no per-vector range test. */
FS256_INLINE __m256d fs256_exp_store_sum_lanes_f64(const double *x, double m, double *y, ptrdiff_t n, int bounded)
{
    const __m256d vm = _mm256_set1_pd(m);
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
    ptrdiff_t i = 0;
    for (; i + 16 <= n; i += 16) { /* two of the loop below at once, the exps interleaved: the same sums */
        __m256d e[4];
        FS256_EACH4(e[u] = _mm256_sub_pd(_mm256_loadu_pd(x + i + 4 * u), vm));
        fs256_exp4_t_pd(e, bounded);
        FS256_EACH4(_mm256_storeu_pd(y + i + 4 * u, e[u]));
        s0 = _mm256_add_pd(s0, e[0]);
        s1 = _mm256_add_pd(s1, e[1]);
        s0 = _mm256_add_pd(s0, e[2]);
        s1 = _mm256_add_pd(s1, e[3]);
    }
    for (; i + 8 <= n; i += 8) {
        __m256d e0 = fs256_exp_t_pd(_mm256_sub_pd(_mm256_loadu_pd(x + i), vm), bounded);
        __m256d e1 = fs256_exp_t_pd(_mm256_sub_pd(_mm256_loadu_pd(x + i + 4), vm), bounded);
        _mm256_storeu_pd(y + i, e0);
        _mm256_storeu_pd(y + i + 4, e1);
        s0 = _mm256_add_pd(s0, e0);
        s1 = _mm256_add_pd(s1, e1);
    }
    for (; i < n; i += 4) {
        __m256i k = fs256_tail_mask64(n - i);
        __m256d e = fs256_exp_t_pd(_mm256_sub_pd(_mm256_maskload_pd(x + i, k), vm), bounded);
        e = _mm256_and_pd(e, _mm256_castsi256_pd(k)); /* a zero lane's bounded exp may be garbage */
        if (y != NULL) _mm256_maskstore_pd(y + i, k, e);
        s0 = _mm256_add_pd(s0, e);
    }
    return _mm256_add_pd(s0, s1);
}

FS256_INLINE double fs256_exp_store_sum_impl_f64(const double *x, double m, double *y, ptrdiff_t n, int bounded)
{
    return fs256_hsum_pd(fs256_exp_store_sum_lanes_f64(x, m, y, n, bounded));
}

static inline double fs256_exp_store_sum_f64(const double *x, double m, double *y, ptrdiff_t n)
{
    return fs256_exp_store_sum_impl_f64(x, m, y, n, 0);
}

static inline double fs256_exp_store_sum_bounded_f64(const double *x, double m, double *y, ptrdiff_t n)
{
    return fs256_exp_store_sum_impl_f64(x, m, y, n, 1);
}

static inline void fs256_scale_f64(const double *src, double s, double *y, ptrdiff_t n)
{
    const __m256d vs = _mm256_set1_pd(s);
    ptrdiff_t i = 0;
    for (; i + 4 <= n; i += 4) _mm256_storeu_pd(y + i, _mm256_mul_pd(_mm256_loadu_pd(src + i), vs));
    for (; i < n; i++) y[i] = src[i] * s;
}

/* ---- float64 softmax of medium rows, 8 rows a block: as float32's (above) ----
   Rows of at most 64: the exps take a larger share of a float64 row, and in C loop A/B the
   blocks measured 0.78-0.90x the one-row kernel's time at 40-48 columns, 0.91-0.92x (median)
   at 64 and no gain at 128 (0.93-1.22x, noisy). */
#define FS256_MEDIUM_MAX_F64 64

/* Max and min of a float64 row as vectors (the lanes past n in the last vector are -inf /
   +inf). */
FS256_INLINE void fs256_row_minmax_lanes_f64(const double *x, ptrdiff_t n, __m256d *mx, __m256d *mn)
{
    const __m256d ninf = _mm256_set1_pd(-INFINITY), pinf = _mm256_set1_pd(INFINITY);
    __m256d a0 = ninf, a1 = ninf, b0 = pinf, b1 = pinf;
    ptrdiff_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256d v0 = _mm256_loadu_pd(x + i), v1 = _mm256_loadu_pd(x + i + 4);
        a0 = _mm256_max_pd(a0, v0);
        a1 = _mm256_max_pd(a1, v1);
        b0 = _mm256_min_pd(b0, v0);
        b1 = _mm256_min_pd(b1, v1);
    }
    for (; i < n; i += 4) {
        const __m256i k = fs256_tail_mask64(n - i);
        const __m256d v = _mm256_maskload_pd(x + i, k);
        a0 = _mm256_max_pd(a0, _mm256_blendv_pd(ninf, v, _mm256_castsi256_pd(k)));
        b0 = _mm256_min_pd(b0, _mm256_blendv_pd(pinf, v, _mm256_castsi256_pd(k)));
    }
    *mx = _mm256_max_pd(a0, a1);
    *mn = _mm256_min_pd(b0, b1);
}

/* Lane k: the max (`max`) or the min of the lanes of v[k], k < 4. */
FS256_INLINE __m256d fs256_across4_pd(const __m256d *v, int max)
{
#define FS256_OP_(a, b) (max ? _mm256_max_pd((a), (b)) : _mm256_min_pd((a), (b)))
    const __m256d a = FS256_OP_(_mm256_unpacklo_pd(v[0], v[1]), _mm256_unpackhi_pd(v[0], v[1]));
    const __m256d b = FS256_OP_(_mm256_unpacklo_pd(v[2], v[3]), _mm256_unpackhi_pd(v[2], v[3]));
    return FS256_OP_(_mm256_permute2f128_pd(a, b, 0x20), _mm256_permute2f128_pd(a, b, 0x31));
#undef FS256_OP_
}

/* The max and min of each of 8 rows of n doubles. */
FS256_INLINE void fs256_medium_minmax8_f64(const double *x, ptrdiff_t n, double *m, double *lo)
{
    __m256d mx[8], mn[8];
    for (int k = 0; k < 8; k++) fs256_row_minmax_lanes_f64(x + k * n, n, &mx[k], &mn[k]);
    _mm256_storeu_pd(m, fs256_across4_pd(mx, 1));
    _mm256_storeu_pd(m + 4, fs256_across4_pd(mx + 4, 1));
    _mm256_storeu_pd(lo, fs256_across4_pd(mn, 0));
    _mm256_storeu_pd(lo + 4, fs256_across4_pd(mn + 4, 0));
}

static inline void fs256_sub_const_f64(const double *src, double c, double *y, ptrdiff_t n)
{
    const __m256d vc = _mm256_set1_pd(c);
    const ptrdiff_t nv = n - n % 4; /* (as fs256_scale_f32) */
    ptrdiff_t i = 0;
    for (; i < nv; i += 4) _mm256_storeu_pd(y + i, _mm256_sub_pd(_mm256_loadu_pd(src + i), vc));
    for (; i < n; i++) y[i] = src[i] - c;
}


/* The sum of the four 64-bit lanes of k (counts), as a double. */
FS256_INLINE double fs256_count_total(__m256i k)
{
    int64_t lanes[4];
    _mm256_storeu_si256((__m256i *)lanes, k);
    return (double)(lanes[0] + lanes[1] + lanes[2] + lanes[3]);
}

/* The same for eight 32-bit lanes (float32 counts), widened to 64 bits. */
FS256_INLINE double fs256_count_total32(__m256i k)
{
    return fs256_count_total(_mm256_add_epi64(_mm256_cvtepi32_epi64(_mm256_castsi256_si128(k)),
                                              _mm256_cvtepi32_epi64(_mm256_extracti128_si256(k, 1))));
}

/* Sum of exp(x - m) over x != m, *at_max counting x == m; y = exp(x - m) unless y is NULL
   (a constant after inlining).  See fs512_exp_store_sum_split_f32.  `bounded` (a constant
   too): every element lies within FS_EXACT_SPREAD of m (fs256_row_max_bounded_f32), and the
   exp is fs256_exp_spread_ps (the same values).  Whole vectors and two accumulators in the
   main loop, masks only in the tail: a masked store per vector (vmaskmovps, microcoded on
   AMD Zen) made the cross-entropy's exp pass take about twice the time. */
FS256_INLINE double fs256_exp_split_impl_f32(const float *x, float m, float *y, float *t_out, ptrdiff_t n,
                                             double *at_max, int bounded)
{
    const __m256 negm = _mm256_set1_ps(-m), vm = _mm256_set1_ps(m);
    const __m256 zero = _mm256_setzero_ps();
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
    __m256i cnt = _mm256_setzero_si256(); /* 32-bit counts: minus the all-ones compares */
    ptrdiff_t i = 0;
    while (i + 16 <= n) {
        __m256 b0 = zero, b1 = zero;
        const ptrdiff_t end = i + 128 <= n ? i + 128 : n - n % 16;
        for (; i < end; i += 16) {
            const __m256 x0 = _mm256_loadu_ps(x + i), x1 = _mm256_loadu_ps(x + i + 8);
            const __m256 t0 = _mm256_add_ps(x0, negm), t1 = _mm256_add_ps(x1, negm);
            const __m256 e0 = bounded ? fs256_exp_spread_ps(t0) : fs256_exp_nonpos_ps(t0);
            const __m256 e1 = bounded ? fs256_exp_spread_ps(t1) : fs256_exp_nonpos_ps(t1);
            const __m256 q0 = _mm256_cmp_ps(x0, vm, _CMP_EQ_OQ), q1 = _mm256_cmp_ps(x1, vm, _CMP_EQ_OQ);
            if (y != NULL) {
                _mm256_storeu_ps(y + i, e0);
                _mm256_storeu_ps(y + i + 8, e1);
            }
            if (t_out != NULL) {
                _mm256_storeu_ps(t_out + i, t0);
                _mm256_storeu_ps(t_out + i + 8, t1);
            }
            b0 = _mm256_add_ps(b0, _mm256_andnot_ps(q0, e0));
            b1 = _mm256_add_ps(b1, _mm256_andnot_ps(q1, e1));
            cnt = _mm256_sub_epi32(cnt, _mm256_castps_si256(q0));
            cnt = _mm256_sub_epi32(cnt, _mm256_castps_si256(q1));
        }
        s0 = fs256_widen_add(s0, b0);
        s1 = fs256_widen_add(s1, b1);
    }
    for (; i < n; i += 8) {
        const __m256i k = n - i >= 8 ? _mm256_set1_epi32(-1) : fs256_tail_mask32(n - i);
        const __m256 km = _mm256_castsi256_ps(k);
        const __m256 x0 = _mm256_maskload_ps(x + i, k);
        const __m256 t0 = _mm256_add_ps(x0, negm);
        /* a zero lane's spread exp may be garbage: masked off */
        const __m256 e = _mm256_and_ps(bounded ? fs256_exp_spread_ps(t0) : fs256_exp_nonpos_ps(t0), km);
        const __m256 q = _mm256_and_ps(_mm256_cmp_ps(x0, vm, _CMP_EQ_OQ), km);
        if (y != NULL) _mm256_maskstore_ps(y + i, k, e);
        if (t_out != NULL) _mm256_maskstore_ps(t_out + i, k, t0);
        s0 = fs256_widen_add(s0, _mm256_andnot_ps(q, e));
        cnt = _mm256_sub_epi32(cnt, _mm256_castps_si256(q));
    }
    *at_max = fs256_count_total32(cnt);
    return fs256_hsum_pd(_mm256_add_pd(s0, s1));
}

/* 4 doubles from x + i: float64, or float32 widened as loaded (`wide`, a constant after
   inlining); the tail's lanes at or beyond k are 0. */
FS256_INLINE __m256d fs256_load4_pd(const void *x, ptrdiff_t i, int wide)
{
    return wide ? _mm256_cvtps_pd(_mm_loadu_ps((const float *)x + i)) : _mm256_loadu_pd((const double *)x + i);
}
FS256_INLINE __m256d fs256_maskload4_pd(const void *x, ptrdiff_t i, __m256i k, int wide)
{
    if (!wide) return _mm256_maskload_pd((const double *)x + i, k);
    /* the low 32 bits of each 64-bit mask lane are the lane's 32-bit mask */
    const __m128i k32 = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(k, _mm256_setr_epi32(0, 2, 4, 6, 0, 0, 0, 0)));
    return _mm256_cvtps_pd(_mm_maskload_ps((const float *)x + i, k32));
}

/* Sum of exp(x - m) over x != m in double, *at_max counting x == m; y = exp(x - m) unless y
   is NULL (float64 only).  x is float64, or float32 (`wide`: logsumexp's sums, in double
   because its result can cancel).  Two accumulators and whole vectors in the main loop: with
   one accumulator and a masked load per vector, 4096x1000 took 1.5x this time. */
FS256_INLINE double fs256_exp_split_impl_f64(const void *x, double m, double *y, double *t_out, ptrdiff_t n,
                                             double *at_max, int wide, int bounded)
{
    const __m256d vm = _mm256_set1_pd(m), one = _mm256_set1_pd(1.0);
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd(), c0 = _mm256_setzero_pd(), c1 = _mm256_setzero_pd();
    /* Without y (log_softmax, logsumexp) the counts go in integers (the compare is -1 where x == m):
       one operation instead of two, 256x128 log_softmax 0.91-0.92x the time in a C loop; with y
       (cross-entropy) that form measured 1.05-1.14x, so the counts stay in double there.  Exact
       either way. */
    __m256i k0 = _mm256_setzero_si256(), k1 = _mm256_setzero_si256();
#define FS256_COUNT_EQ(c, k, q) \
    do { \
        if (y == NULL) k = _mm256_sub_epi64(k, _mm256_castpd_si256(q)); \
        else c = _mm256_add_pd(c, _mm256_and_pd(q, one)); \
    } while (0)
    ptrdiff_t i = 0;
    for (; i + 16 <= n; i += 16) { /* two of the loop below at once, the exps interleaved: the same sums */
        __m256d xv[4], t[4], e[4];
        FS256_EACH4(xv[u] = fs256_load4_pd(x, i + 4 * u, wide); t[u] = _mm256_sub_pd(xv[u], vm); e[u] = t[u]);
        fs256_exp4_t_pd(e, bounded);
        if (y != NULL) FS256_EACH4(_mm256_storeu_pd(y + i + 4 * u, e[u]));
        if (t_out != NULL) FS256_EACH4(_mm256_storeu_pd(t_out + i + 4 * u, t[u]));
        for (int u = 0; u < 4; u += 2) {
            const __m256d q0 = _mm256_cmp_pd(xv[u], vm, _CMP_EQ_OQ), q1 = _mm256_cmp_pd(xv[u + 1], vm, _CMP_EQ_OQ);
            s0 = _mm256_add_pd(s0, _mm256_andnot_pd(q0, e[u]));
            s1 = _mm256_add_pd(s1, _mm256_andnot_pd(q1, e[u + 1]));
            FS256_COUNT_EQ(c0, k0, q0);
            FS256_COUNT_EQ(c1, k1, q1);
        }
    }
    for (; i + 8 <= n; i += 8) {
        const __m256d x0 = fs256_load4_pd(x, i, wide), x1 = fs256_load4_pd(x, i + 4, wide);
        const __m256d t0 = _mm256_sub_pd(x0, vm), t1 = _mm256_sub_pd(x1, vm);
        const __m256d e0 = fs256_exp_t_pd(t0, bounded), e1 = fs256_exp_t_pd(t1, bounded);
        const __m256d q0 = _mm256_cmp_pd(x0, vm, _CMP_EQ_OQ), q1 = _mm256_cmp_pd(x1, vm, _CMP_EQ_OQ);
        if (y != NULL) {
            _mm256_storeu_pd(y + i, e0);
            _mm256_storeu_pd(y + i + 4, e1);
        }
        if (t_out != NULL) {
            _mm256_storeu_pd(t_out + i, t0);
            _mm256_storeu_pd(t_out + i + 4, t1);
        }
        s0 = _mm256_add_pd(s0, _mm256_andnot_pd(q0, e0));
        s1 = _mm256_add_pd(s1, _mm256_andnot_pd(q1, e1));
        FS256_COUNT_EQ(c0, k0, q0);
        FS256_COUNT_EQ(c1, k1, q1);
    }
    for (; i < n; i += 4) {
        const __m256i k = n - i >= 4 ? _mm256_set1_epi64x(-1) : fs256_tail_mask64(n - i);
        const __m256d km = _mm256_castsi256_pd(k);
        const __m256d x0 = fs256_maskload4_pd(x, i, k, wide);
        const __m256d t0 = _mm256_sub_pd(x0, vm);
        const __m256d e = _mm256_and_pd(fs256_exp_t_pd(t0, bounded), km);
        const __m256d q = _mm256_and_pd(_mm256_cmp_pd(x0, vm, _CMP_EQ_OQ), km);
        if (y != NULL) _mm256_maskstore_pd(y + i, k, e);
        if (t_out != NULL) _mm256_maskstore_pd(t_out + i, k, t0);
        s0 = _mm256_add_pd(s0, _mm256_andnot_pd(q, e));
        FS256_COUNT_EQ(c0, k0, q);
    }
#undef FS256_COUNT_EQ
    if (y == NULL) {
        *at_max = fs256_count_total(_mm256_add_epi64(k0, k1));
    } else {
        *at_max = fs256_hsum_pd(_mm256_add_pd(c0, c1));
    }
    return fs256_hsum_pd(_mm256_add_pd(s0, s1));
}

static inline double fs256_exp_store_sum_split_f32(const float *x, float m, float *y, ptrdiff_t n, double *at_max,
                                                   int bounded)
{
    return bounded ? fs256_exp_split_impl_f32(x, m, y, NULL, n, at_max, 1)
                   : fs256_exp_split_impl_f32(x, m, y, NULL, n, at_max, 0);
}

/* The split sums, storing t = x - m into t_out (log_softmax: its last pass then subtracts a
   constant in cache, and the result's lines are fetched during this exp-heavy pass, as on
   AVX-512). */
static inline double fs256_exp_sum_split_store_f32(const float *x, float m, float *t_out, ptrdiff_t n, double *at_max,
                                                   int bounded)
{
    return bounded ? fs256_exp_split_impl_f32(x, m, NULL, t_out, n, at_max, 1)
                   : fs256_exp_split_impl_f32(x, m, NULL, t_out, n, at_max, 0);
}

static inline double fs256_exp_store_sum_split_f64(const double *x, double m, double *y, ptrdiff_t n, double *at_max,
                                                   int bounded)
{
    return bounded ? fs256_exp_split_impl_f64(x, m, y, NULL, n, at_max, 0, 1)
                   : fs256_exp_split_impl_f64(x, m, y, NULL, n, at_max, 0, 0);
}

static inline double fs256_exp_sum_split_f64(const double *x, double m, ptrdiff_t n, double *at_max, int bounded)
{
    return bounded ? fs256_exp_split_impl_f64(x, m, NULL, NULL, n, at_max, 0, 1)
                   : fs256_exp_split_impl_f64(x, m, NULL, NULL, n, at_max, 0, 0);
}

static inline double fs256_exp_sum_split_store_f64(const double *x, double m, double *t_out, ptrdiff_t n,
                                                   double *at_max, int bounded)
{
    return bounded ? fs256_exp_split_impl_f64(x, m, NULL, t_out, n, at_max, 0, 1)
                   : fs256_exp_split_impl_f64(x, m, NULL, t_out, n, at_max, 0, 0);
}

/* The same sums of float32 elements, widened to double as they are loaded. */
static inline double fs256_exp_sum_split_widen_f32(const float *x, double m, ptrdiff_t n, double *at_max)
{
    return fs256_exp_split_impl_f64(x, m, NULL, NULL, n, at_max, 1, 0);
}

/* ---------------------------------------------------------------- backward passes
 *
 * As fs512_block_dot_T / fs512_backward_pass_T (fs_avx512.h) on 8 float / 4 double lanes.
 * The block sums keep block_dot / block_sum's bits (fs_activations_impl.h): the 16 lanes
 * are two (four) vectors, lane l adding terms l, l + 16, ... (a product, then a sum, as
 * written; a tail's other lanes untouched, so a -0 stays -0), then the same tree (l + 8,
 * l + 4, l + 2, l + 1).  The portable loops ran a scalar tree per block and, for
 * log_softmax_backward, an exp the compiler left scalar: 0.17-0.61x torch's AVX2 speed.
 */

/* The tail of a block (0 < k < 8 elements) into lanes 0..k-1 of acc, the others untouched. */
FS256_INLINE __m256 fs256_block_tail_add_ps(__m256 acc, const float *g, const float *y, ptrdiff_t k)
{
    const __m256i mk = fs256_tail_mask32(k);
    __m256 v = _mm256_maskload_ps(g, mk);
    if (y != NULL) v = _mm256_mul_ps(v, _mm256_maskload_ps(y, mk));
    return _mm256_blendv_ps(acc, _mm256_add_ps(acc, v), _mm256_castsi256_ps(mk));
}

/* sum(g * y) over a block of at most FS_BLOCK elements (sum(g) when y is NULL). */
static inline float fs256_block_dot_f32(const float *g, const float *y, ptrdiff_t n)
{
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(); /* lanes 0-7, 8-15 */
    ptrdiff_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 v0 = _mm256_loadu_ps(g + i), v1 = _mm256_loadu_ps(g + i + 8);
        if (y != NULL) {
            v0 = _mm256_mul_ps(v0, _mm256_loadu_ps(y + i));
            v1 = _mm256_mul_ps(v1, _mm256_loadu_ps(y + i + 8));
        }
        a0 = _mm256_add_ps(a0, v0);
        a1 = _mm256_add_ps(a1, v1);
    }
    if (n - i >= 8) {
        __m256 v = _mm256_loadu_ps(g + i);
        if (y != NULL) v = _mm256_mul_ps(v, _mm256_loadu_ps(y + i));
        a0 = _mm256_add_ps(a0, v);
        i += 8;
        if (i < n) a1 = fs256_block_tail_add_ps(a1, g + i, y != NULL ? y + i : NULL, n - i);
    } else if (i < n) {
        a0 = fs256_block_tail_add_ps(a0, g + i, y != NULL ? y + i : NULL, n - i);
    }
    const __m256 w8 = _mm256_add_ps(a0, a1);
    __m128 w = _mm_add_ps(_mm256_castps256_ps128(w8), _mm256_extractf128_ps(w8, 1));
    w = _mm_add_ps(w, _mm_movehl_ps(w, w));
    return _mm_cvtss_f32(_mm_add_ss(w, _mm_movehdup_ps(w)));
}

FS256_INLINE __m256d fs256_block_tail_add_pd(__m256d acc, const double *g, const double *y, ptrdiff_t k)
{
    const __m256i mk = fs256_tail_mask64(k);
    __m256d v = _mm256_maskload_pd(g, mk);
    if (y != NULL) v = _mm256_mul_pd(v, _mm256_maskload_pd(y, mk));
    return _mm256_blendv_pd(acc, _mm256_add_pd(acc, v), _mm256_castsi256_pd(mk));
}

static inline double fs256_block_dot_f64(const double *g, const double *y, ptrdiff_t n)
{
    __m256d a[4] = {_mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd()};
    ptrdiff_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int q = 0; q < 4; q++) {
            __m256d v = _mm256_loadu_pd(g + i + 4 * q);
            if (y != NULL) v = _mm256_mul_pd(v, _mm256_loadu_pd(y + i + 4 * q));
            a[q] = _mm256_add_pd(a[q], v);
        }
    for (int q = 0; q < 4 && i < n; q++, i += 4) {
        if (n - i >= 4) {
            __m256d v = _mm256_loadu_pd(g + i);
            if (y != NULL) v = _mm256_mul_pd(v, _mm256_loadu_pd(y + i));
            a[q] = _mm256_add_pd(a[q], v);
        } else {
            a[q] = fs256_block_tail_add_pd(a[q], g + i, y != NULL ? y + i : NULL, n - i);
        }
    }
    const __m256d w4 = _mm256_add_pd(_mm256_add_pd(a[0], a[2]), _mm256_add_pd(a[1], a[3]));
    const __m128d w = _mm_add_pd(_mm256_castpd256_pd128(w4), _mm256_extractf128_pd(w4, 1));
    return _mm_cvtsd_f64(_mm_add_sd(w, _mm_unpackhi_pd(w, w)));
}

/* gx = y * (g - s) (log_out == 0) or g - exp(y) * s, rounded as written; exp takes any y
   (clamped at 89 / 710: +inf gives inf, NaN kept as min returns its second operand). */
FS256_INLINE __m256 fs256_backward_value_ps(__m256 g, __m256 y, __m256 s, int log_out)
{
    if (!log_out) return _mm256_mul_ps(y, _mm256_sub_ps(g, s));
    return _mm256_sub_ps(g, _mm256_mul_ps(fs256_exp_nonpos_ps(_mm256_min_ps(_mm256_set1_ps(89.0f), y)), s));
}

static inline void fs256_backward_pass_f32(const float *g, const float *y, float s, float *gx, ptrdiff_t n,
                                           int log_out)
{
    const __m256 vs = _mm256_set1_ps(s);
    ptrdiff_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(gx + i, fs256_backward_value_ps(_mm256_loadu_ps(g + i), _mm256_loadu_ps(y + i), vs, log_out));
    if (i < n) {
        const __m256i k = fs256_tail_mask32(n - i);
        _mm256_maskstore_ps(gx + i, k, fs256_backward_value_ps(_mm256_maskload_ps(g + i, k),
                                                               _mm256_maskload_ps(y + i, k), vs, log_out));
    }
}

FS256_INLINE __m256d fs256_backward_value_pd(__m256d g, __m256d y, __m256d s, int log_out)
{
    if (!log_out) return _mm256_mul_pd(y, _mm256_sub_pd(g, s));
    return _mm256_sub_pd(g, _mm256_mul_pd(fs256_exp_any_pd(y), s));
}

static inline void fs256_backward_pass_f64(const double *g, const double *y, double s, double *gx, ptrdiff_t n,
                                           int log_out)
{
    const __m256d vs = _mm256_set1_pd(s);
    ptrdiff_t i = 0;
    for (; i + 4 <= n; i += 4)
        _mm256_storeu_pd(gx + i, fs256_backward_value_pd(_mm256_loadu_pd(g + i), _mm256_loadu_pd(y + i), vs, log_out));
    if (i < n) {
        const __m256i k = fs256_tail_mask64(n - i);
        _mm256_maskstore_pd(gx + i, k, fs256_backward_value_pd(_mm256_maskload_pd(g + i, k),
                                                               _mm256_maskload_pd(y + i, k), vs, log_out));
    }
}

/* ---------------------------------------------------------------- short rows
 *
 * As fs512_short_rows_T (fs_avx512.h): rows of at most FS256_SHORT_MAX elements go 8 (float64:
 * 4) rows a block, one per lane, so that no per-row horizontal reduction or scalar log is paid:
 * the max, the exps and the sums are vertical (lane = row).  The block is transposed in
 * registers (fs256_load_columns8_ps: 8x8 blocks of floats; fs256_load_columns4_pd: 4x4 of
 * doubles), the results transposed back; AMD Zen's gathers cost several times the shuffles.
 * Rows of 1-7 float32 elements (log_softmax) or 1-2 (softmax) keep the gathered form
 * (fs256_short_rows_gathered_f32: columns gathered for the reductions, the elementwise work
 * over the block's contiguous memory, each lane's constants fetched by a permutation),
 * measured faster there.  A row whose max is not finite is filled with NaN.  One row at a
 * time, 65536x10 float32 log_softmax took 2.8x torch's AVX2 time.
 */
#define FS256_SHORT_MAX 32

/* Rows of up to 16 elements take the short-row kernels compiled for their length (a switch
   over `case k: return KERNEL(k)` for each k): the column loops unrolled, the block's columns
   kept in registers.  On an AMD EPYC (Zen 3), rows of 10 in cache: float32 softmax 0.63-0.69x
   the time of the kernel compiled for any length, log_softmax 0.73-0.77x, cross-entropy
   0.69-0.77x, float64 softmax 0.73-0.86x, log_softmax 0.80-0.88x; about 175 KB of code with
   the float64 cross-entropy's. */
#define FS256_CASES_1_2(C) C(1) C(2)
#define FS256_CASES_3_7(C) C(3) C(4) C(5) C(6) C(7)
#define FS256_CASES_8_16(C) C(8) C(9) C(10) C(11) C(12) C(13) C(14) C(15) C(16)

/* log1p(u) for 0 <= u < 2^126 (NaN propagates), with fs512_log1p_ps's arithmetic (its
   getexp / scalef by exponent bits): u = 2^e m - 1 with m in [0.75, 1.5), log m = 2 atanh((m-1)/(m+1)),
   the rounding of 1 + u corrected as in log1p's classic formulation log(w) * u / (w - 1). */
FS256_INLINE __m256 fs256_log1p_ps(__m256 u)
{
    const __m256 one = _mm256_set1_ps(1.0f);
    const __m256 w = _mm256_add_ps(u, one);
    const __m256i eb = _mm256_sub_epi32(_mm256_srli_epi32(_mm256_castps_si256(_mm256_mul_ps(w, _mm256_set1_ps(4.0f / 3.0f))), 23),
                                        _mm256_set1_epi32(127));
    const __m256 e = _mm256_cvtepi32_ps(eb);
    const __m256 m = _mm256_mul_ps(w, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_sub_epi32(_mm256_set1_epi32(127), eb), 23)));
    const __m256 f = _mm256_div_ps(_mm256_sub_ps(m, one), _mm256_add_ps(m, one));
    const __m256 f2 = _mm256_mul_ps(f, f);
    __m256 p = _mm256_set1_ps(1.0f / 9.0f);
    p = _mm256_fmadd_ps(p, f2, _mm256_set1_ps(1.0f / 7.0f));
    p = _mm256_fmadd_ps(p, f2, _mm256_set1_ps(1.0f / 5.0f));
    p = _mm256_fmadd_ps(p, f2, _mm256_set1_ps(1.0f / 3.0f));
    const __m256 twof = _mm256_add_ps(f, f);
    const __m256 logm = _mm256_fmadd_ps(_mm256_mul_ps(twof, f2), p, twof);
    const __m256 logw = _mm256_fmadd_ps(e, _mm256_set1_ps(0.693147180559945309f), logm);
    const __m256 wm1 = _mm256_sub_ps(w, one);
    const __m256 exact = _mm256_cmp_ps(wm1, _mm256_setzero_ps(), _CMP_EQ_OQ);
    return _mm256_blendv_ps(_mm256_mul_ps(logw, _mm256_div_ps(u, wm1)), u, exact);
}

/* log1p(u) in float64 for 0 <= u < 2^1000 (NaN propagates), fs512_log1p_impl_pd's arithmetic
   (see there) with its getexp / scalef done on exponent bits; `accurate` (a constant after
   inlining) divides for the quotient's correction where AVX-512 takes a 14-bit reciprocal. */
FS256_INLINE __m256d fs256_log1p_impl_pd(__m256d u, int accurate)
{
    const __m256d one = _mm256_set1_pd(1.0);
    const __m256d w = _mm256_add_pd(u, one);
    /* e = floor(log2(w * 4/3)) from the exponent field: as a double via 2^52's bits */
    const __m256i eb = _mm256_srli_epi64(_mm256_castpd_si256(_mm256_mul_pd(w, _mm256_set1_pd(4.0 / 3.0))), 52);
    const __m256d two52 = _mm256_set1_pd(4503599627370496.0);
    const __m256d e = _mm256_sub_pd(_mm256_sub_pd(_mm256_castsi256_pd(_mm256_or_si256(eb, _mm256_castpd_si256(two52))), two52),
                                    _mm256_set1_pd(1023.0));
    const __m256d m = _mm256_mul_pd(w, _mm256_castsi256_pd(_mm256_slli_epi64(_mm256_sub_epi64(_mm256_set1_epi64x(2046), eb), 52)));
    const __m256d num = _mm256_sub_pd(m, one), d = _mm256_add_pd(m, one);
    __m256d f = _mm256_div_pd(num, d);
    if (accurate) {
        const __m256d bb = _mm256_sub_pd(d, one);
        const __m256d dl = _mm256_add_pd(_mm256_sub_pd(one, _mm256_sub_pd(d, bb)), _mm256_sub_pd(m, bb));
        f = _mm256_add_pd(f, _mm256_div_pd(_mm256_fnmadd_pd(f, dl, _mm256_fnmadd_pd(f, d, num)), d));
    }
    const __m256d f2 = _mm256_mul_pd(f, f);
    __m256d p = _mm256_set1_pd(1.0 / 23.0);
    p = _mm256_fmadd_pd(p, f2, _mm256_set1_pd(1.0 / 21.0));
    p = _mm256_fmadd_pd(p, f2, _mm256_set1_pd(1.0 / 19.0));
    p = _mm256_fmadd_pd(p, f2, _mm256_set1_pd(1.0 / 17.0));
    p = _mm256_fmadd_pd(p, f2, _mm256_set1_pd(1.0 / 15.0));
    p = _mm256_fmadd_pd(p, f2, _mm256_set1_pd(1.0 / 13.0));
    p = _mm256_fmadd_pd(p, f2, _mm256_set1_pd(1.0 / 11.0));
    p = _mm256_fmadd_pd(p, f2, _mm256_set1_pd(1.0 / 9.0));
    p = _mm256_fmadd_pd(p, f2, _mm256_set1_pd(1.0 / 7.0));
    p = _mm256_fmadd_pd(p, f2, _mm256_set1_pd(1.0 / 5.0));
    p = _mm256_fmadd_pd(p, f2, _mm256_set1_pd(1.0 / 3.0));
    const __m256d twof = _mm256_add_pd(f, f);
    const __m256d logm = _mm256_fmadd_pd(_mm256_mul_pd(twof, f2), p, twof);
    const __m256d hi = _mm256_set1_pd(6.93147180369123816490e-01), lo = _mm256_set1_pd(1.90821492927058770002e-10);
    const __m256d logw = accurate ? _mm256_fmadd_pd(e, hi, _mm256_fmadd_pd(e, lo, logm))
                                  : _mm256_fmadd_pd(e, lo, _mm256_fmadd_pd(e, hi, logm));
    const __m256d wm1 = _mm256_sub_pd(w, one);
    const __m256d exact = _mm256_cmp_pd(wm1, _mm256_setzero_pd(), _CMP_EQ_OQ);
    const __m256d r = accurate ? _mm256_add_pd(logw, _mm256_div_pd(_mm256_sub_pd(u, wm1), w))
                               : _mm256_mul_pd(logw, _mm256_div_pd(u, wm1));
    return _mm256_blendv_pd(r, u, exact);
}

FS256_INLINE __m256d fs256_log1p_pd(__m256d u) { return fs256_log1p_impl_pd(u, 0); }
FS256_INLINE __m256d fs256_log1p_accurate_pd(__m256d u) { return fs256_log1p_impl_pd(u, 1); }

/* The lanes of v that are not finite (NaN, +-inf): all ones there (v - v is NaN), else 0. */
FS256_INLINE __m256 fs256_nonfinite_ps(__m256 v)
{
    return _mm256_cmp_ps(_mm256_sub_ps(v, v), _mm256_setzero_ps(), _CMP_NEQ_UQ);
}

/* The row (lane) of each element of a block of 8 rows of n: rowof[k] for elements 8k..8k+7;
   gidx: the offset of each lane's row. */
FS256_INLINE void fs256_short_layout(ptrdiff_t n, __m256i *rowof, __m256i *gidx)
{
    int32_t lanes[8 * FS256_SHORT_MAX];
    for (ptrdiff_t r = 0; r < 8; r++)
        for (ptrdiff_t j = 0; j < n; j++) lanes[r * n + j] = (int32_t)r;
    for (ptrdiff_t k = 0; k < n; k++) rowof[k] = _mm256_loadu_si256((const __m256i *)(lanes + 8 * k));
    *gidx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32((int32_t)n));
}

/* Softmax (log_out = 0) or log_softmax (log_out = 1) of rows of n float32 elements, 8 rows at a
   time, the columns gathered (fs256_short_rows_f32 takes this form for rows shorter than it
   transposes).  Returns how many rows it did (a multiple of 8).  softmax: the
   exps (TwoSum-corrected as fs256_exp_store_sum_f32, or fs256_exp_spread_ps when the block's
   rows are all within FS_EXACT_SPREAD of their maxima) into y, gathered back for the sums, then
   scaled; log_softmax: the split sums (count of max elements, sum of the other exps) on the
   gathered columns, one vector log1p, then (x - max) - log. */
static inline ptrdiff_t fs256_short_rows_gathered_f32(const float *x, float *y, ptrdiff_t nrows, ptrdiff_t n, int log_out)
{
    __m256i rowof[FS256_SHORT_MAX], gidx;
    fs256_short_layout(n, rowof, &gidx);
    const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f);
    ptrdiff_t r0 = 0;
    for (; r0 + 8 <= nrows; r0 += 8) {
        const float *xb = x + r0 * n;
        float *yb = y + r0 * n;
        __m256 v[FS256_SHORT_MAX];
        __m256 mx = _mm256_set1_ps(-INFINITY), mn = _mm256_set1_ps(INFINITY);
        for (ptrdiff_t j = 0; j < n; j++) {
            v[j] = _mm256_i32gather_ps(xb + j, gidx, 4);
            mx = _mm256_max_ps(mx, v[j]);
            mn = _mm256_min_ps(mn, v[j]);
        }
        /* every row of the block within FS_EXACT_SPREAD of its max: the 13-operation exp */
        const int bounded =
            _mm256_movemask_ps(_mm256_cmp_ps(_mm256_sub_ps(mx, mn), _mm256_set1_ps(FS_EXACT_SPREAD), _CMP_LE_OQ)) == 0xFF;
        const __m256 badv = fs256_nonfinite_ps(mx);
        const int bad = _mm256_movemask_ps(badv);
        mx = _mm256_blendv_ps(mx, zero, badv);
        const __m256 negm = _mm256_sub_ps(zero, mx);
        if (log_out) {
            __m256 rest0 = zero, rest1 = zero, cnt = zero;
            for (ptrdiff_t j = 0; j < n; j++) {
                const __m256 at_max = _mm256_cmp_ps(v[j], mx, _CMP_EQ_OQ);
                /* only the sum (>= 1) needs these: no TwoSum (as fs256_exp_sum_split_store_f32) */
                const __m256 t = _mm256_add_ps(v[j], negm);
                const __m256 e = _mm256_andnot_ps(at_max, bounded ? fs256_exp_spread_ps(t) : fs256_exp_nonpos_ps(t));
                if (j & 1) rest1 = _mm256_add_ps(rest1, e); else rest0 = _mm256_add_ps(rest0, e);
                cnt = _mm256_add_ps(cnt, _mm256_and_ps(at_max, one));
            }
            const __m256 lse = fs256_log1p_ps(_mm256_add_ps(_mm256_sub_ps(cnt, one), _mm256_add_ps(rest0, rest1)));
            for (ptrdiff_t k = 0; k < n; k++) {
                const __m256 xm = _mm256_sub_ps(_mm256_loadu_ps(xb + 8 * k), _mm256_permutevar8x32_ps(mx, rowof[k]));
                _mm256_storeu_ps(yb + 8 * k, _mm256_sub_ps(xm, _mm256_permutevar8x32_ps(lse, rowof[k])));
            }
        } else {
            for (ptrdiff_t k = 0; k < n; k++) {
                const __m256 xk = _mm256_loadu_ps(xb + 8 * k), nk = _mm256_permutevar8x32_ps(negm, rowof[k]);
                _mm256_storeu_ps(yb + 8 * k, bounded ? fs256_exp_spread_ps(_mm256_add_ps(xk, nk)) : fs256_exp_minus_ps(xk, nk));
            }
            __m256 s0 = zero, s1 = zero;
            for (ptrdiff_t j = 0; j < n; j++) {
                const __m256 e = _mm256_i32gather_ps(yb + j, gidx, 4);
                if (j & 1) s1 = _mm256_add_ps(s1, e); else s0 = _mm256_add_ps(s0, e);
            }
            const __m256 inv = _mm256_div_ps(one, _mm256_add_ps(s0, s1));
            for (ptrdiff_t k = 0; k < n; k++)
                _mm256_storeu_ps(yb + 8 * k, _mm256_mul_ps(_mm256_loadu_ps(yb + 8 * k), _mm256_permutevar8x32_ps(inv, rowof[k])));
        }
        for (int rows = bad; rows; rows &= rows - 1) {
            const int lane = __builtin_ctz((unsigned)rows);
            for (ptrdiff_t j = 0; j < n; j++) yb[lane * n + j] = NAN;
        }
    }
    return r0;
}

/* Rows of 8 floats of a block in, columns out (and back: the transpose is its own inverse). */
FS256_INLINE void fs256_transpose8_ps(__m256 r[8])
{
    __m256 t[8], u[8];
    for (int k = 0; k < 8; k += 2) {
        t[k] = _mm256_unpacklo_ps(r[k], r[k + 1]);     /* a0 b0 a1 b1 | a4 b4 a5 b5 */
        t[k + 1] = _mm256_unpackhi_ps(r[k], r[k + 1]); /* a2 b2 a3 b3 | a6 b6 a7 b7 */
    }
    for (int k = 0; k < 8; k += 4) {
        u[k] = _mm256_shuffle_ps(t[k], t[k + 2], 0x44);     /* a0 b0 c0 d0 | a4 b4 c4 d4 */
        u[k + 1] = _mm256_shuffle_ps(t[k], t[k + 2], 0xEE); /* a1 b1 c1 d1 | a5 b5 c5 d5 */
        u[k + 2] = _mm256_shuffle_ps(t[k + 1], t[k + 3], 0x44);
        u[k + 3] = _mm256_shuffle_ps(t[k + 1], t[k + 3], 0xEE);
    }
    for (int k = 0; k < 4; k++) {
        r[k] = _mm256_permute2f128_ps(u[k], u[k + 4], 0x20);
        r[k + 4] = _mm256_permute2f128_ps(u[k], u[k + 4], 0x31);
    }
}

/* The first `k` (1..7) floats of v to dst, by ordinary stores (vmaskmovps is microcoded on AMD). */
FS256_INLINE void fs256_store_head_ps(float *dst, __m256 v, ptrdiff_t k)
{
    __m128 h = _mm256_castps256_ps128(v);
    if (k & 4) {
        _mm_storeu_ps(dst, h);
        h = _mm256_extractf128_ps(v, 1);
        dst += 4;
    }
    if (k & 2) {
        _mm_storel_pi((__m64 *)dst, h);
        h = _mm_movehl_ps(h, h);
        dst += 2;
    }
    if (k & 1) _mm_store_ss(dst, h);
}

/* Rows k and k + 4 (k = 0..3) of 4 floats in the two halves of r[k] in, columns out (lane k of
   column j: row k's element j), and back: a 4x4 transpose within each 128-bit half. */
FS256_INLINE void fs256_transpose4x2_ps(__m256 r[4])
{
    const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    r[0] = _mm256_shuffle_ps(t0, t2, 0x44);
    r[1] = _mm256_shuffle_ps(t0, t2, 0xEE);
    r[2] = _mm256_shuffle_ps(t1, t3, 0x44);
    r[3] = _mm256_shuffle_ps(t1, t3, 0xEE);
}

/* A block of 8 rows of n <= FS256_SHORT_MAX floats at xb, transposed into c[0..n) (c[j]: column
   j, lane k = row k), 8 columns at a time by 8x8 transposes; a last group of 1-4 columns by a
   4x4 transpose in each half (rows k and k + 4 in one register: 8 shuffles, not 24), rows 4-7
   read masked when it has fewer than 4 (nothing past the block is read); a last group of 5-7
   columns read masked. */
FS256_INLINE void fs256_load_columns8_ps(const float *xb, ptrdiff_t n, __m256 *c)
{
    const ptrdiff_t groups = (n + 7) / 8, last = n - 8 * (groups - 1);
    for (ptrdiff_t g = 0; g < groups; g++) {
        const float *xg = xb + 8 * g;
        if (g + 1 < groups || last == 8) {
            for (int k = 0; k < 8; k++) c[8 * g + k] = _mm256_loadu_ps(xg + k * n);
            fs256_transpose8_ps(c + 8 * g);
        } else if (last <= 4) {
            const __m128i tail = _mm256_castsi256_si128(fs256_tail_mask32(last));
            for (int k = 0; k < 4; k++) {
                const __m128 hi = last == 4 ? _mm_loadu_ps(xg + (k + 4) * n) : _mm_maskload_ps(xg + (k + 4) * n, tail);
                c[8 * g + k] = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_loadu_ps(xg + k * n)), hi, 1);
            }
            fs256_transpose4x2_ps(c + 8 * g);
        } else {
            const __m256i tail = fs256_tail_mask32(last);
            for (int k = 0; k < 8; k++) c[8 * g + k] = _mm256_maskload_ps(xg + k * n, tail);
            fs256_transpose8_ps(c + 8 * g);
        }
    }
}

/* The inverse: columns c[0..n) of a block of 8 rows back to rows of n at yb (c is clobbered);
   the last 1-7 columns of each row by ordinary stores, so nothing outside the block is written
   (whatever the columns past n hold is never stored). */
FS256_INLINE void fs256_store_columns8_ps(float *yb, ptrdiff_t n, __m256 *c)
{
    const ptrdiff_t groups = (n + 7) / 8, last = n - 8 * (groups - 1);
    for (ptrdiff_t g = 0; g < groups; g++) {
        float *yg = yb + 8 * g;
        if (g + 1 < groups || last == 8) {
            fs256_transpose8_ps(c + 8 * g);
            for (int k = 0; k < 8; k++) _mm256_storeu_ps(yg + k * n, c[8 * g + k]);
        } else if (last <= 4) {
            fs256_transpose4x2_ps(c + 8 * g);
            for (int k = 0; k < 4; k++) {
                fs256_store_head_ps(yg + k * n, c[8 * g + k], last);
                fs256_store_head_ps(yg + (k + 4) * n, _mm256_castps128_ps256(_mm256_extractf128_ps(c[8 * g + k], 1)), last);
            }
        } else {
            fs256_transpose8_ps(c + 8 * g);
            for (int k = 0; k < 8; k++) fs256_store_head_ps(yg + k * n, c[8 * g + k], last);
        }
    }
}

/* The lanes' maxima over columns c[0..n) into *mx (0 where not finite: *badv all ones there);
   returns whether every lane is within FS_EXACT_SPREAD of its max (the 13-operation exp). */
FS256_INLINE int fs256_columns_max8_ps(const __m256 *c, ptrdiff_t n, __m256 *mx, __m256 *badv)
{
    __m256 hi = _mm256_set1_ps(-INFINITY), lo = _mm256_set1_ps(INFINITY);
    for (ptrdiff_t j = 0; j < n; j++) {
        hi = _mm256_max_ps(hi, c[j]);
        lo = _mm256_min_ps(lo, c[j]);
    }
    const int bounded =
        _mm256_movemask_ps(_mm256_cmp_ps(_mm256_sub_ps(hi, lo), _mm256_set1_ps(FS_EXACT_SPREAD), _CMP_LE_OQ)) == 0xFF;
    *badv = fs256_nonfinite_ps(hi);
    *mx = _mm256_blendv_ps(hi, _mm256_setzero_ps(), *badv);
    return bounded;
}

/* c[0..n) is written by fs256_load_columns8_ps, which GCC does not always see */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
FS256_INLINE ptrdiff_t fs256_short_rows_transposed_f32(const float *x, float *y, ptrdiff_t nrows, ptrdiff_t n, int log_out)
{
    const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f), nan = _mm256_set1_ps(NAN);
    ptrdiff_t r0 = 0;
    for (; r0 + 8 <= nrows; r0 += 8) {
        __m256 c[FS256_SHORT_MAX];
        fs256_load_columns8_ps(x + r0 * n, n, c);
        __m256 mx, badv;
        const int bounded = fs256_columns_max8_ps(c, n, &mx, &badv);
        const __m256 negm = _mm256_sub_ps(zero, mx);
        __m256 s0 = zero, s1 = zero, cnt = zero;
        if (log_out) {
            for (ptrdiff_t j = 0; j < n; j++) {
                const __m256 at_max = _mm256_cmp_ps(c[j], mx, _CMP_EQ_OQ);
                /* only the sum (>= 1) needs these: no TwoSum (as fs256_exp_sum_split_store_f32) */
                const __m256 t = _mm256_add_ps(c[j], negm);
                const __m256 e = _mm256_andnot_ps(at_max, bounded ? fs256_exp_spread_ps(t) : fs256_exp_nonpos_ps(t));
                if (j & 1) s1 = _mm256_add_ps(s1, e); else s0 = _mm256_add_ps(s0, e);
                cnt = _mm256_add_ps(cnt, _mm256_and_ps(at_max, one));
                c[j] = t;
            }
            const __m256 lse = fs256_log1p_ps(_mm256_add_ps(_mm256_sub_ps(cnt, one), _mm256_add_ps(s0, s1)));
            for (ptrdiff_t j = 0; j < n; j++) c[j] = _mm256_blendv_ps(_mm256_sub_ps(c[j], lse), nan, badv);
        } else {
            for (ptrdiff_t j = 0; j < n; j++) {
                const __m256 e = bounded ? fs256_exp_spread_ps(_mm256_add_ps(c[j], negm)) : fs256_exp_minus_ps(c[j], negm);
                if (j & 1) s1 = _mm256_add_ps(s1, e); else s0 = _mm256_add_ps(s0, e);
                c[j] = e;
            }
            const __m256 inv = _mm256_div_ps(one, _mm256_add_ps(s0, s1));
            for (ptrdiff_t j = 0; j < n; j++) c[j] = _mm256_blendv_ps(_mm256_mul_ps(c[j], inv), nan, badv);
        }
        fs256_store_columns8_ps(y + r0 * n, n, c);
    }
    return r0;
}
static inline ptrdiff_t fs256_short_rows_f32(const float *x, float *y, ptrdiff_t nrows, ptrdiff_t n, int log_out)
{
    if (n < (log_out ? 8 : 3)) return fs256_short_rows_gathered_f32(x, y, nrows, n, log_out);
#define FS256_CASE(k) case k: return fs256_short_rows_transposed_f32(x, y, nrows, k, log_out);
    if (log_out) {
        switch (n) { FS256_CASES_8_16(FS256_CASE) default: break; }
    } else {
        switch (n) { FS256_CASES_3_7(FS256_CASE) FS256_CASES_8_16(FS256_CASE) default: break; }
    }
#undef FS256_CASE
    return fs256_short_rows_transposed_f32(x, y, nrows, n, log_out);
}
#pragma GCC diagnostic pop

/* Rows of 4 doubles of a block in, columns out (and back: the transpose is its own inverse). */
FS256_INLINE void fs256_transpose4_pd(__m256d r[4])
{
    const __m256d t0 = _mm256_unpacklo_pd(r[0], r[1]), t1 = _mm256_unpackhi_pd(r[0], r[1]);
    const __m256d t2 = _mm256_unpacklo_pd(r[2], r[3]), t3 = _mm256_unpackhi_pd(r[2], r[3]);
    r[0] = _mm256_permute2f128_pd(t0, t2, 0x20);
    r[1] = _mm256_permute2f128_pd(t1, t3, 0x20);
    r[2] = _mm256_permute2f128_pd(t0, t2, 0x31);
    r[3] = _mm256_permute2f128_pd(t1, t3, 0x31);
}

/* The lanes' maxima over columns c[0..n) into *mx (0 where not finite: *badv all ones there);
   returns whether every lane is within FS_SPREAD_F64 of its max (fs256_exp_bounded_pd). */
FS256_INLINE int fs256_columns_max4_pd(const __m256d *c, ptrdiff_t n, __m256d *mx, __m256d *badv)
{
    __m256d hi = _mm256_set1_pd(-INFINITY), lo = _mm256_set1_pd(INFINITY);
    for (ptrdiff_t j = 0; j < n; j++) {
        hi = _mm256_max_pd(hi, c[j]);
        lo = _mm256_min_pd(lo, c[j]);
    }
    const int bounded =
        _mm256_movemask_pd(_mm256_cmp_pd(_mm256_sub_pd(hi, lo), _mm256_set1_pd(FS_SPREAD_F64), _CMP_LE_OQ)) == 0xF;
    *badv = _mm256_cmp_pd(_mm256_sub_pd(hi, hi), _mm256_setzero_pd(), _CMP_NEQ_UQ); /* max not finite */
    *mx = _mm256_blendv_pd(hi, _mm256_setzero_pd(), *badv);
    return bounded;
}

/* A block of 4 rows of n <= FS256_SHORT_MAX doubles at xb, transposed into c[0..n) (c[j]: column
   j, lane k = row k) by 4x4 transposes, the last group of columns read with masked loads. */
FS256_INLINE void fs256_load_columns4_pd(const double *xb, ptrdiff_t n, __m256d *c)
{
    const ptrdiff_t groups = (n + 3) / 4, last = n - 4 * (groups - 1); /* columns in the last group: 1..4 */
    const __m256i tail = fs256_tail_mask64(last);
    for (ptrdiff_t g = 0; g < groups; g++) {
        for (int k = 0; k < 4; k++)
            c[4 * g + k] = g + 1 < groups ? _mm256_loadu_pd(xb + k * n + 4 * g) : _mm256_maskload_pd(xb + k * n + 4 * g, tail);
        fs256_transpose4_pd(c + 4 * g);
    }
}

/* The inverse: columns c[0..n) of a block of 4 rows back to rows of n at yb (c is clobbered), the
   last 1-3 columns by ordinary stores (vmaskmovpd is microcoded on AMD): nothing outside the
   block is written. */
FS256_INLINE void fs256_store_columns4_pd(double *yb, ptrdiff_t n, __m256d *c)
{
    const ptrdiff_t groups = (n + 3) / 4, last = n - 4 * (groups - 1);
    for (ptrdiff_t g = 0; g < groups; g++) {
        fs256_transpose4_pd(c + 4 * g);
        for (int k = 0; k < 4; k++) {
            double *dst = yb + k * n + 4 * g;
            if (g + 1 < groups || last == 4) {
                _mm256_storeu_pd(dst, c[4 * g + k]);
            } else {
                const __m128d lo = _mm256_castpd256_pd128(c[4 * g + k]);
                if (last == 1) _mm_store_sd(dst, lo);
                else _mm_storeu_pd(dst, lo);
                if (last == 3) _mm_store_sd(dst + 2, _mm256_extractf128_pd(c[4 * g + k], 1));
            }
        }
    }
}

/* The last stage of a float64 block of 4 rows: y = e * (1 / s) (softmax) or t - log1p(s)
   (log_softmax), transposed back to yb; rows whose max is not finite (`bad`) filled with NaN. */
FS256_INLINE void fs256_short_finish_f64(__m256d *c, __m256d s, double *yb, ptrdiff_t n, int log_out, int bad)
{
    if (log_out) {
        const __m256d lse = fs256_log1p_pd(s);
        for (ptrdiff_t j = 0; j < n; j++) c[j] = _mm256_sub_pd(c[j], lse);
    } else {
        const __m256d inv = _mm256_div_pd(_mm256_set1_pd(1.0), s);
        for (ptrdiff_t j = 0; j < n; j++) c[j] = _mm256_mul_pd(c[j], inv);
    }
    fs256_store_columns4_pd(yb, n, c);
    for (int rows = bad; rows; rows &= rows - 1) {
        const int lane = __builtin_ctz((unsigned)rows);
        for (ptrdiff_t j = 0; j < n; j++) yb[lane * n + j] = NAN;
    }
}

/* Softmax (log_out = 0) or log_softmax (log_out = 1) of rows of n <= FS256_SHORT_MAX float64
   elements, 4 rows a block, one per lane.  The block is transposed in registers (4x4 blocks of
   doubles: 8 shuffles per 16 elements, where AMD Zen's gathers cost several times that), so
   the max, the exps and the sums are vertical; the results are transposed back.  The maths
   of the one-row kernels: softmax e = exp(x - m), y = e * (1 / sum e); log_softmax the split
   sums (count of max elements, sum of the other exps), one vector log1p, y = (x - m) - log.
   Blocks within FS_SPREAD_F64 of their maxima take fs256_exp_bounded_pd.  A row whose max is
   not finite is filled with NaN.  Returns how many rows it did (a multiple of 4).  One row at
   a time, 65536x10 float64 softmax took 1.1x JAX's time on an AMD EPYC (Zen 3).  Blocks are
   software-pipelined: block b's last stage (the log1p or reciprocal of its sum, a
   chain of dependent operations) runs after block b + 1's exps in program order, so that it
   overlaps them; two blocks' columns are kept, in turn. */
FS256_INLINE ptrdiff_t fs256_short_rows_any_f64(const double *x, double *y, ptrdiff_t nrows, ptrdiff_t n, int log_out)
{
    const __m256d zero = _mm256_setzero_pd(), one = _mm256_set1_pd(1.0), two52 = _mm256_set1_pd(4503599627370496.0);
    __m256d c[2][FS256_SHORT_MAX]; /* c[b & 1][j]: column j of block b, lane k = row k */
    __m256d pending_s = zero;      /* block b - 1's sum (log_softmax: cnt - 1 + rest) */
    int pending_bad = 0;
    ptrdiff_t r0 = 0;
    for (; r0 + 4 <= nrows; r0 += 4) {
        __m256d *cb = c[(r0 >> 2) & 1];
        fs256_load_columns4_pd(x + r0 * n, n, cb);
        __m256d mx, badv;
        const int bounded = fs256_columns_max4_pd(cb, n, &mx, &badv);
        const int bad = _mm256_movemask_pd(badv);
        __m256d s0 = zero, s1 = zero;
        __m256i cnt = _mm256_setzero_si256(); /* 64-bit counts: minus the all-ones compares */
#define FS256_SHORT_COL_F64(j_, e_in)                                      \
    do {                                                                    \
        __m256d e_ = (e_in);                                                \
        if (log_out) {                                                      \
            const __m256d at_max = _mm256_cmp_pd(cb[j_], mx, _CMP_EQ_OQ);   \
            e_ = _mm256_andnot_pd(at_max, e_);                              \
            cnt = _mm256_sub_epi64(cnt, _mm256_castpd_si256(at_max));       \
            cb[j_] = _mm256_sub_pd(cb[j_], mx);                             \
        } else {                                                            \
            cb[j_] = e_;                                                    \
        }                                                                   \
        if ((j_) & 1) s1 = _mm256_add_pd(s1, e_); else s0 = _mm256_add_pd(s0, e_); \
    } while (0)
        FS256_EACH_COLUMN_EXP_F64(cb, n, mx, bounded, FS256_SHORT_COL_F64);
#undef FS256_SHORT_COL_F64
        if (r0 > 0) fs256_short_finish_f64(c[((r0 >> 2) & 1) ^ 1], pending_s, y + (r0 - 4) * n, n, log_out, pending_bad);
        if (log_out) { /* the counts (at most FS256_SHORT_MAX) as doubles: 2^52 + count, less 2^52 */
            const __m256d cntd = _mm256_sub_pd(_mm256_castsi256_pd(_mm256_or_si256(cnt, _mm256_castpd_si256(two52))), two52);
            pending_s = _mm256_add_pd(_mm256_sub_pd(cntd, one), _mm256_add_pd(s0, s1));
        } else {
            pending_s = _mm256_add_pd(s0, s1);
        }
        pending_bad = bad;
    }
    if (r0 > 0) fs256_short_finish_f64(c[((r0 >> 2) & 1) ^ 1], pending_s, y + (r0 - 4) * n, n, log_out, pending_bad);
    return r0;
}

static inline ptrdiff_t fs256_short_rows_f64(const double *x, double *y, ptrdiff_t nrows, ptrdiff_t n, int log_out)
{
#define FS256_CASE(k) case k: return log_out ? fs256_short_rows_any_f64(x, y, nrows, k, 1) : fs256_short_rows_any_f64(x, y, nrows, k, 0);
    switch (n) { FS256_CASES_1_2(FS256_CASE) FS256_CASES_3_7(FS256_CASE) FS256_CASES_8_16(FS256_CASE) default: break; }
#undef FS256_CASE
    return fs256_short_rows_any_f64(x, y, nrows, n, log_out);
}

/* Cross-entropy with class-index targets, no label smoothing, for rows of n <= FS256_SHORT_MAX
   float32 classes, 8 rows a block, one per lane: fs512_ce_short_rows_f32's maths on 8 lanes
   (see there: loss = w_t (lse + m - x_t), 0 for an ignored row, NaN for a row whose max is not
   finite; grad = gs w_t (softmax - onehot), p_t - 1 taken as -rest/s when x_t is the only
   maximum; the target column NaN where w_t gs is infinite).  The block is transposed in
   registers (8x8 blocks: 24 shuffles per 64 elements, where the gathered form took about 2n + 3
   gathers a block, several times that on AMD Zen), so the max, the exps, the sums, the target's
   logit and exp (a compare per column, no gather) and the gradient's target column are all
   vertical; the gradient is transposed back.  Returns how many rows it did (a multiple of 8). */
FS256_INLINE ptrdiff_t fs256_ce_short_rows_any_f32(const float *x, const int64_t *target, const float *w,
                                                   ptrdiff_t nrows, ptrdiff_t n, float *grad, double gs,
                                                   double *row_loss)
{
    const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps(), inf = _mm256_set1_ps(INFINITY);
    const __m256 nan = _mm256_set1_ps(NAN), absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256i one_i = _mm256_set1_epi32(1);
    ptrdiff_t r0 = 0;
    for (; r0 + 8 <= nrows; r0 += 8) {
        const float *xb = x + r0 * n;
        int32_t t32[8];
        for (int l = 0; l < 8; l++) {
            const int64_t t = target[r0 + l];
            t32[l] = t >= 0 && t < (int64_t)n ? (int32_t)t : -1; /* -1: ignored, matches no column */
        }
        const __m256i tcol = _mm256_loadu_si256((const __m256i *)t32);
        const __m256 valid = _mm256_castsi256_ps(_mm256_cmpgt_epi32(tcol, _mm256_set1_epi32(-1)));

        __m256 c[FS256_SHORT_MAX]; /* c[j]: column j of the block, lane k = row k */
        fs256_load_columns8_ps(xb, n, c);
        __m256 mx, badv;
        const int bounded = fs256_columns_max8_ps(c, n, &mx, &badv);
        const __m256 negm = _mm256_sub_ps(zero, mx);
        __m256 rest0 = zero, rest1 = zero, cnt = zero, xt = zero, et = zero;
        __m256i col = _mm256_setzero_si256();
        for (ptrdiff_t j = 0; j < n; j++, col = _mm256_add_epi32(col, one_i)) {
            const __m256 at_t = _mm256_castsi256_ps(_mm256_cmpeq_epi32(tcol, col));
            xt = _mm256_blendv_ps(xt, c[j], at_t);
            const __m256 t = _mm256_add_ps(c[j], negm);
            const __m256 e = bounded ? fs256_exp_spread_ps(t) : fs256_exp_nonpos_ps(t);
            const __m256 at_max = _mm256_cmp_ps(c[j], mx, _CMP_EQ_OQ);
            if (j & 1) rest1 = _mm256_add_ps(rest1, _mm256_andnot_ps(at_max, e));
            else rest0 = _mm256_add_ps(rest0, _mm256_andnot_ps(at_max, e));
            cnt = _mm256_add_ps(cnt, _mm256_and_ps(at_max, one));
            et = _mm256_blendv_ps(et, e, at_t);
            c[j] = e;
        }
        const __m256 rest = _mm256_add_ps(_mm256_sub_ps(cnt, one), _mm256_add_ps(rest0, rest1));
        const __m256 lse = fs256_log1p_ps(rest);
        const __m256 wt = w != NULL ? _mm256_mask_i32gather_ps(zero, w, tcol, valid, 4) : _mm256_and_ps(valid, one);
        const __m256 nll = _mm256_add_ps(lse, _mm256_sub_ps(mx, xt));
        __m256 loss = _mm256_and_ps(valid, _mm256_mul_ps(wt, nll));
        /* an infinite w_t at a row's max whose sum rounds to 1: torch's -log p_t is 0 (weighted_nll) */
        const __m256 wt_inf = _mm256_cmp_ps(_mm256_and_ps(absmask, wt), inf, _CMP_EQ_OQ);
        const __m256 nll0 = _mm256_and_ps(_mm256_and_ps(wt_inf, _mm256_cmp_ps(xt, mx, _CMP_EQ_OQ)),
                                          _mm256_and_ps(valid, _mm256_cmp_ps(_mm256_add_ps(one, rest), one, _CMP_EQ_OQ)));
        loss = _mm256_blendv_ps(loss, _mm256_mul_ps(wt, zero), nll0);
        loss = _mm256_blendv_ps(loss, nan, _mm256_and_ps(badv, valid));
        _mm256_storeu_pd(row_loss + r0, _mm256_cvtps_pd(_mm256_castps256_ps128(loss)));
        _mm256_storeu_pd(row_loss + r0 + 4, _mm256_cvtps_pd(_mm256_extractf128_ps(loss, 1)));
        if (grad == NULL) continue;
        const __m256 s = _mm256_add_ps(one, rest);
        const __m256 wgs = _mm256_mul_ps(wt, _mm256_set1_ps((float)gs));
        const __m256 k1 = _mm256_div_ps(wgs, s);
        __m256 pt1 = _mm256_sub_ps(_mm256_div_ps(et, s), one);
        const __m256 sole_max = _mm256_and_ps(_mm256_cmp_ps(xt, mx, _CMP_EQ_OQ), _mm256_cmp_ps(cnt, one, _CMP_EQ_OQ));
        pt1 = _mm256_blendv_ps(pt1, _mm256_div_ps(_mm256_sub_ps(zero, rest), s), sole_max);
        /* NaN where w_t gs is infinite, as torch (fs_losses_impl.h, target_grad) */
        const __m256 wgs_inf = _mm256_cmp_ps(_mm256_and_ps(absmask, wgs), inf, _CMP_EQ_OQ);
        const __m256 gt = _mm256_blendv_ps(_mm256_mul_ps(wgs, pt1), nan, wgs_inf);
        /* whole rows: 0 where ignored, NaN where the max is not finite */
        const __m256 fill = _mm256_or_ps(_mm256_andnot_ps(valid, _mm256_castsi256_ps(_mm256_set1_epi32(-1))), badv);
        col = _mm256_setzero_si256();
        for (ptrdiff_t j = 0; j < n; j++, col = _mm256_add_epi32(col, one_i))
            c[j] = _mm256_blendv_ps(_mm256_mul_ps(c[j], k1), gt, _mm256_castsi256_ps(_mm256_cmpeq_epi32(tcol, col)));
        if (_mm256_movemask_ps(fill)) {
            const __m256 fill_value = _mm256_and_ps(valid, nan);
            for (ptrdiff_t j = 0; j < n; j++) c[j] = _mm256_blendv_ps(c[j], fill_value, fill);
        }
        fs256_store_columns8_ps(grad + r0 * n, n, c);
    }
    return r0;
}

static inline ptrdiff_t fs256_ce_short_rows_f32(const float *x, const int64_t *target, const float *w,
                                                ptrdiff_t nrows, ptrdiff_t n, float *grad, double gs,
                                                double *row_loss)
{
#define FS256_CASE(k) case k: return fs256_ce_short_rows_any_f32(x, target, w, nrows, k, grad, gs, row_loss);
    switch (n) { FS256_CASES_1_2(FS256_CASE) FS256_CASES_3_7(FS256_CASE) FS256_CASES_8_16(FS256_CASE) default: break; }
#undef FS256_CASE
    return fs256_ce_short_rows_any_f32(x, target, w, nrows, n, grad, gs, row_loss);
}

/* Cross-entropy with class-index targets, no label smoothing, for rows of n <= FS256_SHORT_MAX
   float64 classes, 4 rows a block, one per lane, transposed in registers as fs256_short_rows_f64:
   fs512_ce_short_rows_f64's maths (see fs256_ce_short_rows_any_f32 for the loss, the gradient
   and their special rows), the exps of rows within FS_SPREAD_F64 of their maxima by
   fs256_exp_bounded_pd.  Returns how many rows it did (a multiple of 4). */
FS256_INLINE ptrdiff_t fs256_ce_short_rows_any_f64(const double *x, const int64_t *target, const double *w,
                                                   ptrdiff_t nrows, ptrdiff_t n, double *grad, double gs,
                                                   double *row_loss)
{
    const __m256d one = _mm256_set1_pd(1.0), zero = _mm256_setzero_pd(), inf = _mm256_set1_pd(INFINITY);
    const __m256d nan = _mm256_set1_pd(NAN), absmask = _mm256_castsi256_pd(_mm256_set1_epi64x(0x7fffffffffffffffLL));
    const __m256i one_i = _mm256_set1_epi64x(1), n_i = _mm256_set1_epi64x((long long)n), minus1 = _mm256_set1_epi64x(-1);
    ptrdiff_t r0 = 0;
    for (; r0 + 4 <= nrows; r0 += 4) {
        __m256i tcol = _mm256_loadu_si256((const __m256i *)(target + r0));
        const __m256d valid = _mm256_castsi256_pd(_mm256_and_si256(_mm256_cmpgt_epi64(tcol, minus1), _mm256_cmpgt_epi64(n_i, tcol)));
        tcol = _mm256_blendv_epi8(minus1, tcol, _mm256_castpd_si256(valid)); /* -1: ignored, matches no column */
        __m256d c[FS256_SHORT_MAX]; /* c[j]: column j of the block, lane k = row k */
        fs256_load_columns4_pd(x + r0 * n, n, c);
        __m256d mx, badv;
        const int bounded = fs256_columns_max4_pd(c, n, &mx, &badv);
        __m256d rest0 = zero, rest1 = zero, cnt = zero, xt = zero, et = zero;
        __m256i col = _mm256_setzero_si256();
#define FS256_CE_COL_F64(j_, e_in)                                                         \
    do {                                                                                   \
        const __m256d e_ = (e_in);                                                         \
        const __m256d at_t = _mm256_castsi256_pd(_mm256_cmpeq_epi64(tcol, col));          \
        xt = _mm256_blendv_pd(xt, c[j_], at_t);                                            \
        const __m256d at_max = _mm256_cmp_pd(c[j_], mx, _CMP_EQ_OQ);                       \
        if ((j_) & 1) rest1 = _mm256_add_pd(rest1, _mm256_andnot_pd(at_max, e_));          \
        else rest0 = _mm256_add_pd(rest0, _mm256_andnot_pd(at_max, e_));                  \
        cnt = _mm256_add_pd(cnt, _mm256_and_pd(at_max, one));                              \
        et = _mm256_blendv_pd(et, e_, at_t);                                               \
        c[j_] = e_;                                                                        \
        col = _mm256_add_epi64(col, one_i);                                                \
    } while (0)
        FS256_EACH_COLUMN_EXP_F64(c, n, mx, bounded, FS256_CE_COL_F64);
#undef FS256_CE_COL_F64
        const __m256d rest = _mm256_add_pd(_mm256_sub_pd(cnt, one), _mm256_add_pd(rest0, rest1));
        const __m256d lse = fs256_log1p_pd(rest);
        const __m256d wt = w != NULL ? _mm256_mask_i64gather_pd(zero, w, tcol, valid, 8) : _mm256_and_pd(valid, one);
        const __m256d nll = _mm256_add_pd(lse, _mm256_sub_pd(mx, xt));
        __m256d loss = _mm256_and_pd(valid, _mm256_mul_pd(wt, nll));
        /* an infinite w_t at a row's max whose sum rounds to 1: torch's -log p_t is 0 (weighted_nll) */
        const __m256d wt_inf = _mm256_cmp_pd(_mm256_and_pd(absmask, wt), inf, _CMP_EQ_OQ);
        const __m256d nll0 = _mm256_and_pd(_mm256_and_pd(wt_inf, _mm256_cmp_pd(xt, mx, _CMP_EQ_OQ)),
                                           _mm256_and_pd(valid, _mm256_cmp_pd(_mm256_add_pd(one, rest), one, _CMP_EQ_OQ)));
        loss = _mm256_blendv_pd(loss, _mm256_mul_pd(wt, zero), nll0);
        loss = _mm256_blendv_pd(loss, nan, _mm256_and_pd(badv, valid));
        _mm256_storeu_pd(row_loss + r0, loss);
        if (grad == NULL) continue;
        const __m256d s = _mm256_add_pd(one, rest);
        const __m256d wgs = _mm256_mul_pd(wt, _mm256_set1_pd(gs));
        const __m256d k1 = _mm256_div_pd(wgs, s);
        __m256d pt1 = _mm256_sub_pd(_mm256_div_pd(et, s), one);
        const __m256d sole_max = _mm256_and_pd(_mm256_cmp_pd(xt, mx, _CMP_EQ_OQ), _mm256_cmp_pd(cnt, one, _CMP_EQ_OQ));
        pt1 = _mm256_blendv_pd(pt1, _mm256_div_pd(_mm256_sub_pd(zero, rest), s), sole_max);
        /* NaN where w_t gs is infinite, as torch (fs_losses_impl.h, target_grad) */
        const __m256d wgs_inf = _mm256_cmp_pd(_mm256_and_pd(absmask, wgs), inf, _CMP_EQ_OQ);
        const __m256d gt = _mm256_blendv_pd(_mm256_mul_pd(wgs, pt1), nan, wgs_inf);
        /* whole rows: 0 where ignored, NaN where the max is not finite */
        const __m256d fill = _mm256_or_pd(_mm256_andnot_pd(valid, _mm256_castsi256_pd(minus1)), badv);
        col = _mm256_setzero_si256();
        for (ptrdiff_t j = 0; j < n; j++, col = _mm256_add_epi64(col, one_i))
            c[j] = _mm256_blendv_pd(_mm256_mul_pd(c[j], k1), gt, _mm256_castsi256_pd(_mm256_cmpeq_epi64(tcol, col)));
        if (_mm256_movemask_pd(fill)) {
            const __m256d fill_value = _mm256_and_pd(valid, nan);
            for (ptrdiff_t j = 0; j < n; j++) c[j] = _mm256_blendv_pd(c[j], fill_value, fill);
        }
        fs256_store_columns4_pd(grad + r0 * n, n, c);
    }
    return r0;
}

static inline ptrdiff_t fs256_ce_short_rows_f64(const double *x, const int64_t *target, const double *w,
                                                ptrdiff_t nrows, ptrdiff_t n, double *grad, double gs,
                                                double *row_loss)
{
#define FS256_CASE(k) case k: return fs256_ce_short_rows_any_f64(x, target, w, nrows, k, grad, gs, row_loss);
    switch (n) { FS256_CASES_1_2(FS256_CASE) FS256_CASES_3_7(FS256_CASE) FS256_CASES_8_16(FS256_CASE) default: break; }
#undef FS256_CASE
    return fs256_ce_short_rows_any_f64(x, target, w, nrows, n, grad, gs, row_loss);
}

#undef FS256_EACH_COLUMN_EXP_F64 /* FS256_EACH4 stays: fs_avx2_stream_impl.h uses it */

#pragma GCC pop_options
#endif /* FS_X86_MULTIVERSION */
#endif /* FS_AVX2_H */
