/*
 * fs_avx512.h -- hand-vectorised AVX-512 row primitives for the hottest loops.
 *
 * The portable kernels (fs_*_impl.h) are compiler-vectorised; on AVX-512 machines the
 * row primitives below replace their inner loops: two to four independent accumulators,
 * masked tails instead of scalar epilogues, exp with `vscalefps`/`vscalefpd` (exact 2^n
 * scaling including subnormals and overflow; float32 rows within FS_EXACT_SPREAD of their
 * max take the AVX2 table exp instead, float64 softmax's streamed rows within FS_SPREAD_F64
 * build 2^n in integer registers), float sums widened to double per block.
 *
 * Primitives (T = f32 | f64; x, y point to one row of n elements; m a finite max):
 *   fs512_row_max_T(x, n)                     max (a NaN may be dropped here; it still makes
 *                                             the row's sum NaN, hence the row)
 *   fs512_row_minmax_T(x, n, &min)            max and min (whether a row needs the TwoSum,
 *                                             float64: whether its exps need a range test)
 *   fs512_exp_store_sum_T(x, m, y, n)         y = exp(x - m), returns sum(y) in double;
 *                                             float32 feeds back the rounding of x - m
 *                                             (TwoSum), ..._fast_f32 does not
 *   fs512_exp_sum_split_store_T(x, m, t, n, &count)  sum of exp(x - m) over x != m, and
 *                                             count(x == m); stores t = x - m
 *   fs512_exp_store_sum_split_T(x, m, y, n, &count)  y = exp(x - m), with the split sums
 *                                             (..._piped_T: streaming a pending row; float32
 *                                             also takes the max of the next row, as float64
 *                                             softmax's fs512_exp_store_sum_piped_f64 takes
 *                                             its max and min)
 *   fs512_exp_sum_split_T(x, m, n, &count)   the split sums, nothing stored
 *   fs512_scale_T(src, s, y, n)               y = src * s
 *   fs512_sub_const_T(src, c, y, n)           y = src - c
 *   fs512_pending_{begin,advance,finish}_T    y = x * a or (x - m) - a (y[p] = v), written
 *                                             with streaming stores (large results) a few
 *                                             vectors at a time: the *_piped sums of the
 *                                             next row advance it (and scan the row after)
 *   fs512_log1p_ps / _pd                      vector log1p
 *   fs512_medium_block_f32, ..._scale_f32     float32 softmax rows of 33..128, 16 rows a block
 *   (..._max_f32, ..._inv_f32, ..._stream_f32)  (its steps; the results streamed)
 *   fs512_exp_table_spread_ps, fs512_table_*  the AVX2 float32 exps and medium-row sums
 *                                             (softmax's, log_softmax's split sums) on 16 lanes
 *                                             (Zen 4)
 *   fs512_short_rows_T, fs512_ce_short_rows_T  rows of <= 32 elements, 16 (8) rows a block
 */
#ifndef FS_AVX512_H
#define FS_AVX512_H
#if FS_X86_MULTIVERSION
#include <immintrin.h>
#include "fs_avx2.h" /* FS256_CASES_* (the short rows' lengths compiled as constants) */

#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,fma")

#define FS512_INLINE static inline __attribute__((always_inline))

/* Streamed float64 softmax rows (FS_STREAM_MIN_COLS or more columns) of up to this many take
   the max and min of the next row during each row's exp pass (softmax_like_stream_span):
   three rows of 4096 doubles and the two scratch rows stay well inside L2, five rows of 50257
   would not. */
#ifndef FS512_AHEAD_MAX_F64
#define FS512_AHEAD_MAX_F64 4096
#endif

/* Mask of the first k (0..16 / 0..8) lanes. */
FS512_INLINE __mmask16 fs512_mask16(ptrdiff_t k) { return (__mmask16)((1u << k) - 1u); }
FS512_INLINE __mmask8 fs512_mask8(ptrdiff_t k) { return (__mmask8)((1u << k) - 1u); }

/* ---------------------------------------------------------------- exp */

/* 2^(j/16), j = 0..15, correctly rounded. */
static const double fs512_exp2_sixteenths[16] __attribute__((aligned(64))) = {
    0x1.0000000000000p+0, 0x1.0b5586cf9890fp+0, 0x1.172b83c7d517bp+0, 0x1.2387a6e756238p+0,
    0x1.306fe0a31b715p+0, 0x1.3dea64c123422p+0, 0x1.4bfdad5362a27p+0, 0x1.5ab07dd485429p+0,
    0x1.6a09e667f3bcdp+0, 0x1.7a11473eb0187p+0, 0x1.8ace5422aa0dbp+0, 0x1.9c49182a3f090p+0,
    0x1.ae89f995ad3adp+0, 0x1.c199bdd85529cp+0, 0x1.d5818dcfba487p+0, 0x1.ea4afa2a490dap+0};

/* The shared part of the float64 exps below, for t <= 0 (x - m with m the row max), by a
   table of 16: t = (16 q + j) ln2/16 + r, |r| <= ln2/32, exp(t) = 2^q 2^(j/16) e^r with e^r
   a degree-6 polynomial (relative error 1.2e-17 on that range, fitted to minimise it).
   Returns e^r - 1, with v = t / ln2 + 1.5 * 2^48 in *v_out and m = v - 1.5 * 2^48 in *m_out:
   the bias leaves 4 fraction bits, so m = q + j/16 with j the low 4 bits of v, and
   floor(m) = q. */
FS512_INLINE __m512d fs512_exp_reduced_pd(__m512d t, __m512d *v_out, __m512d *m_out)
{
    const __m512d magic = _mm512_set1_pd(0x1.8p+48);
    const __m512d v = _mm512_fmadd_pd(t, _mm512_set1_pd(0x1.71547652b82fep+0), magic); /* 1/ln2 */
    const __m512d m = _mm512_sub_pd(v, magic);
    /* fdlibm's ln2 in two parts: m * hi is exact (m has at most 15 significant bits) */
    __m512d r = _mm512_fnmadd_pd(m, _mm512_set1_pd(6.93147180369123816490e-01), t);
    r = _mm512_fnmadd_pd(m, _mm512_set1_pd(1.90821492927058770002e-10), r);
    __m512d p = _mm512_set1_pd(0x1.6c12e860c39edp-10);
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(0x1.11123cefd3aedp-7));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(0x1.5555555bb105cp-5));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(0x1.555555548ba35p-3));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(0x1.fffffffffff7ep-2));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0));
    *v_out = v;
    *m_out = m;
    return _mm512_mul_pd(p, r);
}

/* exp(t) for t <= 0 in the lanes of `keep` (others 0).  Seven FMA-unit operations instead of
   a degree-11 polynomial's 13; the table is two registers and one permutation, on the
   shuffle port the FMAs leave idle; vscalefpd takes q = floor(q + j/16) by itself.  No
   clamping: lanes below -746 (q out of range) are set to 0, NaN propagates (NaN lanes are
   kept). */
FS512_INLINE __m512d fs512_exp_nonpos_keep_pd(__m512d t, __mmask8 keep)
{
    __m512d v, m;
    const __m512d em1 = fs512_exp_reduced_pd(t, &v, &m);
    const __m512d tab = _mm512_permutex2var_pd(_mm512_load_pd(fs512_exp2_sixteenths), _mm512_castpd_si512(v),
                                               _mm512_load_pd(fs512_exp2_sixteenths + 8));
    __mmask8 ok = _mm512_mask_cmp_pd_mask(keep, t, _mm512_set1_pd(-746.0), _CMP_NLT_UQ);
    /* 2^(j/16) e^r = T + T (e^r - 1): one rounding at the end */
    return _mm512_maskz_scalef_pd(ok, _mm512_fmadd_pd(tab, em1, tab), m);
}

/* fs512_exp2_sixteenths' bits less j << 48 (j = 0..15): adding the bits of v shifted left
   by 48, (16 q + j) << 48 mod 2^64, gives the bits of 2^q 2^(j/16) while q >= -1022. */
static const int64_t fs512_exp2_sixteenths_scale[16] __attribute__((aligned(64))) = {
    0x3FF0000000000000LL - (0LL << 48),  0x3FF0B5586CF9890FLL - (1LL << 48),  0x3FF172B83C7D517BLL - (2LL << 48),
    0x3FF2387A6E756238LL - (3LL << 48),  0x3FF306FE0A31B715LL - (4LL << 48),  0x3FF3DEA64C123422LL - (5LL << 48),
    0x3FF4BFDAD5362A27LL - (6LL << 48),  0x3FF5AB07DD485429LL - (7LL << 48),  0x3FF6A09E667F3BCDLL - (8LL << 48),
    0x3FF7A11473EB0187LL - (9LL << 48),  0x3FF8ACE5422AA0DBLL - (10LL << 48), 0x3FF9C49182A3F090LL - (11LL << 48),
    0x3FFAE89F995AD3ADLL - (12LL << 48), 0x3FFC199BDD85529CLL - (13LL << 48), 0x3FFD5818DCFBA487LL - (14LL << 48),
    0x3FFEA4AFA2A490DALL - (15LL << 48)};

/* fs512_exp_nonpos_keep_pd for lanes with -FS_SPREAD_F64 <= t <= 0 (or NaN: it propagates
   through the polynomial), the same bits: there m >= -1021.4375, so q >= -1022 and, with
   j >= 9 when q = -1022, every result is normal; 2^q 2^(j/16) is then put together in
   integer registers (a shift and an add, off the FMA pipes) and the last FMA rounds once, as
   vscalefpd's exact scaling of the same product did (checked bit for bit on 42M random t in
   [-708, 0], [-30, 0] and [-0.1, 0]).  No range test and no vscalefpd (which Zen 4 issues at
   half an FMA's rate): exp + store + sum of 1000 doubles in L1 12.8 cycles a vector instead
   of 14.0.  A lane below -FS_SPREAD_F64 (or above 0) can only come from a row holding a NaN
   that hid a lane's min or max: garbage there, in a row whose results are all NaN anyway. */
FS512_INLINE __m512d fs512_exp_bounded_keep_pd(__m512d t, __mmask8 keep)
{
    __m512d v, m;
    const __m512d em1 = fs512_exp_reduced_pd(t, &v, &m);
    (void)m;
    const __m512i vb = _mm512_castpd_si512(v);
    const __m512i tb = _mm512_permutex2var_epi64(_mm512_load_si512((const void *)fs512_exp2_sixteenths_scale), vb,
                                                 _mm512_load_si512((const void *)(fs512_exp2_sixteenths_scale + 8)));
    const __m512d s = _mm512_castsi512_pd(_mm512_add_epi64(tb, _mm512_slli_epi64(vb, 48)));
    return _mm512_maskz_fmadd_pd(keep, s, em1, s);
}

/* exp(t + lo) for t <= 0 (t = x - m with m >= x), in the lanes of `keep` (others 0): no
   clamping is needed, because every lane with t < -104 (where n would be out of range:
   -inf, huge negative) is set to 0, and NaN propagates through the polynomial.  n is
   rounded with the magic-bias trick (one FMA and a subtraction, on any FP port).  With
   use_lo == 0 (a constant after inlining) lo is ignored: adding a zero is an instruction
   the compiler may not drop (-0 + 0 is +0).  (Lanes known to lie within FS_EXACT_SPREAD of
   0 take fs512_exp_spread_keep_ps instead.) */
FS512_INLINE __m512 fs512_exp_nonpos_impl_ps(__m512 t, __m512 lo, __mmask16 keep, int use_lo)
{
    const __m512 magic = _mm512_set1_ps(12582912.0f); /* 1.5 * 2^23 */
    const __m512 n = _mm512_sub_ps(_mm512_fmadd_ps(t, _mm512_set1_ps(1.44269504088896341f), magic), magic);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(FS_LN2_HI_F32), t);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(FS_LN2_LO_F32), r);
    if (use_lo) r = _mm512_add_ps(r, lo);
    __m512 p = _mm512_set1_ps(FS_EXP_C5_F32);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(FS_EXP_C4_F32));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(FS_EXP_C3_F32));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(FS_EXP_C2_F32));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(FS_EXP_C1_F32));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    /* "not less than -104", true for NaN lanes too: they stay NaN */
    __mmask16 ok = _mm512_mask_cmp_ps_mask(keep, t, _mm512_set1_ps(-104.0f), _CMP_NLT_UQ);
    return _mm512_maskz_scalef_ps(ok, p, n);
}

FS512_INLINE __m512 fs512_exp_nonpos_lo_keep_ps(__m512 t, __m512 lo, __mmask16 keep)
{
    return fs512_exp_nonpos_impl_ps(t, lo, keep, 1);
}

/* exp(t) for t <= 0 in the lanes of `keep` (others 0). */
FS512_INLINE __m512 fs512_exp_nonpos_keep_ps(__m512 t, __mmask16 keep)
{
    return fs512_exp_nonpos_impl_ps(t, t, keep, 0);
}

/* fs256_exp_spread_ps on 16 lanes, operation for operation (exp(t) for -FS_EXACT_SPREAD <=
   t <= 0, or NaN; the same bits): vpermd on 16 lanes reads four bits of the index, so the
   table of eight is there twice. */
FS512_INLINE __m512 fs512_exp_table_spread_ps(__m512 t)
{
    const __m512 magic = _mm512_set1_ps(12582912.0f); /* 1.5 * 2^23 */
    const __m512 kb = _mm512_fmadd_ps(t, _mm512_set1_ps(FS_EXP8_INV_STEP), magic);
    const __m512 k = _mm512_sub_ps(kb, magic);
    __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(FS_EXP8_STEP_HI), t);
    r = _mm512_fnmadd_ps(k, _mm512_set1_ps(FS_EXP8_STEP_LO), r);
    __m512 q = _mm512_fmadd_ps(_mm512_set1_ps(FS_EXP8_C3), r, _mm512_set1_ps(FS_EXP8_C2));
    q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(1.0f));
    q = _mm512_mul_ps(q, r);
    const __m512i kbits = _mm512_castps_si512(kb);
    const __m512i table = _mm512_broadcast_i64x4(_mm256_setr_epi32(FS_EXP8_TABLE_BITS));
    const __m512 sc = _mm512_castsi512_ps(
        _mm512_add_epi32(_mm512_permutexvar_epi32(kbits, table), _mm512_slli_epi32(kbits, 20)));
    return _mm512_fmadd_ps(sc, q, sc);
}

/* exp(t) for lanes within FS_EXACT_SPREAD of 0 (-32 <= t <= 0), or of rows holding a NaN,
   in the lanes of `keep` (others 0): the AVX2 table exp above, whose 7 FMA-pipe operations
   replace the polynomial's 9 (8 FMAs and vscalefps, which Zen 4 issues at half an FMA's rate:
   10 of each took 21.3 cycles where 10 FMAs alone took 10.5), and more accurate (1.16 ulp at
   worst against 1.98).  Long float32 softmax rows on Zen 4, C loop, one process, the two
   alternating: 4096x1000 0.89-0.93x the time with this exp, 64x1000 (in cache) 0.92-0.94x.
   As on AVX2, a lane below -104 can only come from a row holding a NaN that the min dropped:
   it may give anything instead of 0, in a row that is all NaN anyway. */
FS512_INLINE __m512 fs512_exp_spread_keep_ps(__m512 t, __mmask16 keep)
{
    return _mm512_maskz_mov_ps(keep, fs512_exp_table_spread_ps(t));
}

FS512_INLINE __m512 fs512_exp_nonpos_ps(__m512 t)
{
    return fs512_exp_nonpos_impl_ps(t, t, (__mmask16)0xFFFF, 0);
}

/* exp(x - m) for float32 and m >= x, with the subtraction's rounding error fed back (TwoSum). */
FS512_INLINE __m512 fs512_exp_minus_keep_ps(__m512 x, __m512 negm, __mmask16 keep)
{
    __m512 t = _mm512_add_ps(x, negm);
    __m512 bb = _mm512_sub_ps(t, x);
    __m512 lo = _mm512_add_ps(_mm512_sub_ps(x, _mm512_sub_ps(t, bb)), _mm512_sub_ps(negm, bb));
    return fs512_exp_nonpos_lo_keep_ps(t, lo, keep);
}

FS512_INLINE __m512 fs512_exp_minus_ps(__m512 x, __m512 negm)
{
    return fs512_exp_minus_keep_ps(x, negm, (__mmask16)0xFFFF);
}

/* Sum of the 16 floats of v, widened to double. */
FS512_INLINE __m512d fs512_widen_add(__m512d acc, __m512 v)
{
    acc = _mm512_add_pd(acc, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
    return _mm512_add_pd(acc, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
}

/* ---------------------------------------------------------------- streaming writers
 *
 * The last pass of softmax / log_softmax / cross-entropy's gradient over a row when the whole
 * result is too large to stay in the caches: y is computed from x (in cache) and written with
 * streaming stores, so its lines are not read from memory before being written (a third of
 * the traffic of a normal store pass).  Values as the in-cache passes give them, bit for bit:
 *   FS512_SCALE               y = x * a            (x: the exps, stored in a scratch row in
 *                             cache; a = 1 / sum, or cross-entropy's scale)
 *   FS512_SUB_SUB             y = (x - m) - a      (a = log of the sum)
 * Element `patch` (if 0 <= patch < n) is written as `patch_value` instead (cross-entropy's
 * target column): a later ordinary store to a line still in a write-combining buffer would
 * need a fence per row.  Lines of y before the first 64-byte boundary and after the last
 * whole vector are written with ordinary masked stores.  Each thread issues _mm_sfence()
 * when its rows are done.
 *
 * A row goes out through a pending record (fs512_pending_T): fs512_pending_begin_T writes its
 * head, fs512_pending_finish_T whatever is left.  In between, the exp pass of the next row
 * (the *_piped primitives) streams a few vectors of it per step (fs512_pending_advance_T),
 * so that the stores drain to memory while the exps are computed instead of in a pass of
 * their own, in which the core waits on the write bandwidth (software pipelining; a
 * pending record with n == 0 writes nothing).
 */
enum { FS512_SCALE = 0, FS512_SUB_SUB = 1 };

typedef struct {
    const float *src; /* the exps (FS512_SCALE) or x (FS512_SUB_SUB), in cache */
    float *y;
    ptrdiff_t j, n; /* elements [j, n) of y are still to be written */
    ptrdiff_t patch;
    float m, a, patch_value;
    int kind;
} fs512_pending_f32;

typedef struct {
    const double *src;
    double *y;
    ptrdiff_t j, n;
    ptrdiff_t patch;
    double m, a, patch_value;
    int kind;
} fs512_pending_f64;

/* Ask for the `lines` 64-byte lines from p to be brought into L1 (`l1`) or L2 (a row ahead's,
   during this row's exp pass: spread over the pass rather than in bursts; fs_prefetch_l1). */
FS512_INLINE void fs512_prefetch_lines(const void *p, int lines, int l1)
{
    for (int k = 0; k < lines; k++) fs_prefetch_line((const char *)p + 64 * k, l1);
}

FS512_INLINE __m512 fs512_stream_value_ps(__m512 x, __m512 negm, __m512 a, int kind)
{
    if (kind == FS512_SUB_SUB) return _mm512_sub_ps(_mm512_add_ps(x, negm), a);
    return _mm512_mul_ps(x, a);
}

/* Elements before y's first 64-byte boundary (all of them if y is not even element-aligned). */
FS512_INLINE ptrdiff_t fs512_stream_head(const void *y, size_t elsize, ptrdiff_t n)
{
    uintptr_t addr = (uintptr_t)y;
    ptrdiff_t head = (ptrdiff_t)(((64 - (addr & 63)) & 63) / elsize);
    return (addr % elsize != 0 || head > n) ? n : head;
}

/* v with lane (patch - i) set to `value` when element i + lane is the patch. */
FS512_INLINE __m512 fs512_patch_ps(__m512 v, ptrdiff_t i, ptrdiff_t patch, float value)
{
    if ((size_t)(patch - i) >= 16) return v;
    return _mm512_mask_mov_ps(v, (__mmask16)(1u << (patch - i)), _mm512_set1_ps(value));
}

/* The record of a pending row whose elements [j, n) of y are still to be written. */
FS512_INLINE void fs512_pending_set_f32(fs512_pending_f32 *p, const float *src, float m, float a, float *y, ptrdiff_t j,
                                        ptrdiff_t n, ptrdiff_t patch, float patch_value, int kind)
{
    *p = (fs512_pending_f32){src, y, j, n, patch, m, a, patch_value, kind};
}

/* Start writing y = f(src) (see above): its head now, the rest by advance / finish. */
static inline void fs512_pending_begin_f32(fs512_pending_f32 *p, const float *src, float m, float a, float *y,
                                           ptrdiff_t n, ptrdiff_t patch, float patch_value, int kind)
{
    const __m512 negm = _mm512_set1_ps(-m), va = _mm512_set1_ps(a);
    const ptrdiff_t head = fs512_stream_head(y, sizeof(float), n);
    for (ptrdiff_t i = 0; i < head; i += 16) {
        __mmask16 k = head - i >= 16 ? (__mmask16)0xFFFF : fs512_mask16(head - i);
        __m512 v = fs512_stream_value_ps(_mm512_maskz_loadu_ps(k, src + i), negm, va, kind);
        _mm512_mask_storeu_ps(y + i, k, fs512_patch_ps(v, i, patch, patch_value));
    }
    fs512_pending_set_f32(p, src, m, a, y, head, n, patch, patch_value, kind);
}

/* A pending row of which only [j0, end) is to be written, all of it streamed: y + j0 on a
   64-byte boundary and end - j0 a whole number of vectors (the caller writes the rest). */
static inline void fs512_pending_span_f32(fs512_pending_f32 *p, const float *src, float m, float a, float *y,
                                          ptrdiff_t j0, ptrdiff_t end, int kind)
{
    fs512_pending_set_f32(p, src, m, a, y, j0, end, -1, 0, kind);
}

/* Up to `count` whole vectors of a pending row (a copy of the record, kept in registers),
   from element j; returns the new j.  `kind` (p.kind) and `patched` (whether p.patch may be
   a column of the row) are constants after inlining: each piped primitive below advances
   the rows of one kernel, which all have the same kind (softmax: FS512_SCALE, log_softmax:
   FS512_SUB_SUB, the cross-entropy: FS512_SCALE with its target column patched). */
FS512_INLINE ptrdiff_t fs512_pending_advance_f32(fs512_pending_f32 p, __m512 negm, __m512 va, ptrdiff_t j, int count,
                                                 int kind, int patched)
{
    for (int v = 0; v < count && j + 16 <= p.n; v++, j += 16) {
        __m512 val = fs512_stream_value_ps(_mm512_loadu_ps(p.src + j), negm, va, kind);
        _mm512_stream_ps(p.y + j, patched ? fs512_patch_ps(val, j, p.patch, p.patch_value) : val);
    }
    return j;
}

FS512_INLINE void fs512_pending_finish_impl_f32(fs512_pending_f32 *p, int kind)
{
    const __m512 negm = _mm512_set1_ps(-p->m), va = _mm512_set1_ps(p->a);
    const float *x = p->src, pv = p->patch_value;
    float *y = p->y;
    const ptrdiff_t n = p->n, patch = p->patch;
    ptrdiff_t i = p->j;
    for (; i + 32 <= n; i += 32) {
        __m512 v0 = fs512_stream_value_ps(_mm512_loadu_ps(x + i), negm, va, kind);
        __m512 v1 = fs512_stream_value_ps(_mm512_loadu_ps(x + i + 16), negm, va, kind);
        _mm512_stream_ps(y + i, fs512_patch_ps(v0, i, patch, pv));
        _mm512_stream_ps(y + i + 16, fs512_patch_ps(v1, i + 16, patch, pv));
    }
    for (; i < n; i += 16) {
        __mmask16 k = n - i >= 16 ? (__mmask16)0xFFFF : fs512_mask16(n - i);
        __m512 v = fs512_patch_ps(fs512_stream_value_ps(_mm512_maskz_loadu_ps(k, x + i), negm, va, kind), i, patch, pv);
        if (k == (__mmask16)0xFFFF) _mm512_stream_ps(y + i, v);
        else _mm512_mask_storeu_ps(y + i, k, v);
    }
    p->j = p->n = 0;
}

/* The rest of a pending row; then nothing is pending. */
static inline void fs512_pending_finish_f32(fs512_pending_f32 *p)
{
    if (p->kind == FS512_SUB_SUB) fs512_pending_finish_impl_f32(p, FS512_SUB_SUB);
    else fs512_pending_finish_impl_f32(p, FS512_SCALE);
}

/* Rows streamed one after another that do not end on a line boundary share a line: the tail
   of one and the head of the next.  Written with two ordinary stores, that line is read from
   memory first, and the core waits for it (4096x1000 float32: 1.09-1.10x np.copyto against
   1.03-1.07x for rows of 1008).  fs512_pending_finish_carry_f32 keeps a row's tail values in
   a carry instead, and fs512_pending_begin_join_f32 completes the line with the next row's
   head and streams it; a carry that the next row does not continue is stored as before. */
typedef struct {
    float v[16] __attribute__((aligned(64)));
    float *y; /* the line (its first `lanes` elements carried), or NULL: nothing carried */
    ptrdiff_t lanes;
} fs512_carry_f32;

static inline void fs512_carry_flush_f32(fs512_carry_f32 *c)
{
    if (c->y != NULL) _mm512_mask_storeu_ps(c->y, fs512_mask16(c->lanes), _mm512_load_ps(c->v));
    c->y = NULL;
}

/* As fs512_pending_finish_f32, but a partial last line goes into the (empty) carry. */
static inline void fs512_pending_finish_carry_f32(fs512_pending_f32 *p, fs512_carry_f32 *c)
{
    const ptrdiff_t rem = (p->n - p->j) % 16, end = p->n;
    if (rem == 0) {
        fs512_pending_finish_f32(p);
        return;
    }
    const float *src = p->src;
    float *y = p->y;
    const ptrdiff_t patch = p->patch;
    const float pv = p->patch_value;
    const __m512 negm = _mm512_set1_ps(-p->m), va = _mm512_set1_ps(p->a);
    const int kind = p->kind;
    p->n = end - rem;
    fs512_pending_finish_f32(p);
    const __m512 v = fs512_stream_value_ps(_mm512_maskz_loadu_ps(fs512_mask16(rem), src + end - rem), negm, va, kind);
    _mm512_store_ps(c->v, fs512_patch_ps(v, end - rem, patch, pv));
    c->y = y + end - rem;
    c->lanes = rem;
}

/* As fs512_pending_begin_f32, but a head that completes the carried line is streamed with it. */
static inline void fs512_pending_begin_join_f32(fs512_pending_f32 *p, fs512_carry_f32 *c, const float *src, float m,
                                                float a, float *y, ptrdiff_t n, ptrdiff_t patch, float patch_value,
                                                int kind)
{
    const ptrdiff_t head = fs512_stream_head(y, sizeof(float), n);
    if (c->y == NULL || c->y + c->lanes != y || c->lanes + head != 16 || head >= n) {
        fs512_carry_flush_f32(c);
        fs512_pending_begin_f32(p, src, m, a, y, n, patch, patch_value, kind);
        return;
    }
    const __mmask16 second = (__mmask16)(0xFFFFu << c->lanes);
    __m512 v = fs512_stream_value_ps(_mm512_maskz_expandloadu_ps(second, src), _mm512_set1_ps(-m), _mm512_set1_ps(a),
                                     kind);
    if (patch >= 0) v = fs512_patch_ps(v, -c->lanes, patch, patch_value); /* lane c->lanes + i: element i */
    _mm512_stream_ps(c->y, _mm512_mask_blend_ps(second, _mm512_load_ps(c->v), v));
    c->y = NULL;
    fs512_pending_set_f32(p, src, m, a, y, head, n, patch, patch_value, kind);
}

FS512_INLINE __m512d fs512_stream_value_pd(__m512d x, __m512d vm, __m512d a, int kind)
{
    if (kind == FS512_SUB_SUB) return _mm512_sub_pd(_mm512_sub_pd(x, vm), a);
    return _mm512_mul_pd(x, a);
}

FS512_INLINE __m512d fs512_patch_pd(__m512d v, ptrdiff_t i, ptrdiff_t patch, double value)
{
    if ((size_t)(patch - i) >= 8) return v;
    return _mm512_mask_mov_pd(v, (__mmask8)(1u << (patch - i)), _mm512_set1_pd(value));
}

static inline void fs512_pending_begin_f64(fs512_pending_f64 *p, const double *src, double m, double a, double *y,
                                           ptrdiff_t n, ptrdiff_t patch, double patch_value, int kind)
{
    const __m512d vm = _mm512_set1_pd(m), va = _mm512_set1_pd(a);
    const ptrdiff_t head = fs512_stream_head(y, sizeof(double), n);
    for (ptrdiff_t i = 0; i < head; i += 8) {
        __mmask8 k = head - i >= 8 ? (__mmask8)0xFF : fs512_mask8(head - i);
        __m512d v = fs512_stream_value_pd(_mm512_maskz_loadu_pd(k, src + i), vm, va, kind);
        _mm512_mask_storeu_pd(y + i, k, fs512_patch_pd(v, i, patch, patch_value));
    }
    *p = (fs512_pending_f64){src, y, head, n, patch, m, a, patch_value, kind};
}

FS512_INLINE ptrdiff_t fs512_pending_advance_f64(fs512_pending_f64 p, __m512d vm, __m512d va, ptrdiff_t j, int count,
                                                 int kind, int patched)
{
    for (int v = 0; v < count && j + 8 <= p.n; v++, j += 8) {
        __m512d val = fs512_stream_value_pd(_mm512_loadu_pd(p.src + j), vm, va, kind);
        _mm512_stream_pd(p.y + j, patched ? fs512_patch_pd(val, j, p.patch, p.patch_value) : val);
    }
    return j;
}

FS512_INLINE void fs512_pending_finish_impl_f64(fs512_pending_f64 *p, int kind)
{
    const __m512d vm = _mm512_set1_pd(p->m), va = _mm512_set1_pd(p->a);
    const double *x = p->src, pv = p->patch_value;
    double *y = p->y;
    const ptrdiff_t n = p->n, patch = p->patch;
    ptrdiff_t i = p->j;
    for (; i + 16 <= n; i += 16) {
        __m512d v0 = fs512_stream_value_pd(_mm512_loadu_pd(x + i), vm, va, kind);
        __m512d v1 = fs512_stream_value_pd(_mm512_loadu_pd(x + i + 8), vm, va, kind);
        _mm512_stream_pd(y + i, fs512_patch_pd(v0, i, patch, pv));
        _mm512_stream_pd(y + i + 8, fs512_patch_pd(v1, i + 8, patch, pv));
    }
    for (; i < n; i += 8) {
        __mmask8 k = n - i >= 8 ? (__mmask8)0xFF : fs512_mask8(n - i);
        __m512d v = fs512_patch_pd(fs512_stream_value_pd(_mm512_maskz_loadu_pd(k, x + i), vm, va, kind), i, patch, pv);
        if (k == (__mmask8)0xFF) _mm512_stream_pd(y + i, v);
        else _mm512_mask_storeu_pd(y + i, k, v);
    }
    p->j = p->n = 0;
}

static inline void fs512_pending_finish_f64(fs512_pending_f64 *p)
{
    if (p->kind == FS512_SUB_SUB) fs512_pending_finish_impl_f64(p, FS512_SUB_SUB);
    else fs512_pending_finish_impl_f64(p, FS512_SCALE);
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

/* Lanewise max and min over a row (*mx, *mn; each lane the max / min of its elements). */
FS512_INLINE void fs512_row_minmax_lanes_f32(const float *x, ptrdiff_t n, __m512 *mx, __m512 *mn)
{
    const __m512 ninf = _mm512_set1_ps(-INFINITY), pinf = _mm512_set1_ps(INFINITY);
    __m512 a0 = ninf, a1 = ninf, b0 = pinf, b1 = pinf;
    ptrdiff_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512 v0 = _mm512_loadu_ps(x + i), v1 = _mm512_loadu_ps(x + i + 16);
        a0 = _mm512_max_ps(a0, v0);
        a1 = _mm512_max_ps(a1, v1);
        b0 = _mm512_min_ps(b0, v0);
        b1 = _mm512_min_ps(b1, v1);
    }
    for (; i < n; i += 16) {
        __mmask16 k = n - i >= 16 ? (__mmask16)0xFFFF : fs512_mask16(n - i);
        a0 = _mm512_max_ps(a0, _mm512_mask_loadu_ps(ninf, k, x + i));
        b0 = _mm512_min_ps(b0, _mm512_mask_loadu_ps(pinf, k, x + i));
    }
    *mx = _mm512_max_ps(a0, a1);
    *mn = _mm512_min_ps(b0, b1);
}

/* Max and min of a row in one pass (the min tells whether exp(x - m) needs the TwoSum).  Rows
   of 256 or more first take 64 elements a step with four accumulators of each: two wait on
   the latency of vmaxps (measured 2-3% of a whole softmax at rows of 1000 and 50257; rows
   of 128, now on the block path, lost 4-7% to the merging). */
static inline float fs512_row_minmax_f32(const float *x, ptrdiff_t n, float *min_out)
{
    __m512 mx, mn;
    if (n >= 256) {
        const __m512 ninf = _mm512_set1_ps(-INFINITY), pinf = _mm512_set1_ps(INFINITY);
        __m512 a0 = ninf, a1 = ninf, a2 = ninf, a3 = ninf, b0 = pinf, b1 = pinf, b2 = pinf, b3 = pinf;
        ptrdiff_t i = 0;
        for (; i + 64 <= n; i += 64) {
            __m512 v0 = _mm512_loadu_ps(x + i), v1 = _mm512_loadu_ps(x + i + 16);
            __m512 v2 = _mm512_loadu_ps(x + i + 32), v3 = _mm512_loadu_ps(x + i + 48);
            a0 = _mm512_max_ps(a0, v0);
            a1 = _mm512_max_ps(a1, v1);
            a2 = _mm512_max_ps(a2, v2);
            a3 = _mm512_max_ps(a3, v3);
            b0 = _mm512_min_ps(b0, v0);
            b1 = _mm512_min_ps(b1, v1);
            b2 = _mm512_min_ps(b2, v2);
            b3 = _mm512_min_ps(b3, v3);
        }
        fs512_row_minmax_lanes_f32(x + i, n - i, &mx, &mn); /* the last < 64 */
        mx = _mm512_max_ps(_mm512_max_ps(mx, a0), _mm512_max_ps(a1, _mm512_max_ps(a2, a3)));
        mn = _mm512_min_ps(_mm512_min_ps(mn, b0), _mm512_min_ps(b1, _mm512_min_ps(b2, b3)));
    } else {
        fs512_row_minmax_lanes_f32(x, n, &mx, &mn);
    }
    *min_out = _mm512_reduce_min_ps(mn);
    return _mm512_reduce_max_ps(mx);
}

/* exp(x - m) in the lanes of `keep` (others 0), with the TwoSum correction of x - m when
   `twosum` (a constant after inlining); without it, for rows within FS_EXACT_SPREAD of
   their max m (the only ones that go without). */
FS512_INLINE __m512 fs512_exp_x_minus_m_ps(__m512 x, __m512 negm, __mmask16 keep, int twosum)
{
    return twosum ? fs512_exp_minus_keep_ps(x, negm, keep) : fs512_exp_spread_keep_ps(_mm512_add_ps(x, negm), keep);
}

/* y = exp(x - m), returns sum(y); lanes sum 16 values in float (a block of 256 elements),
   then widen to double.  With `pend` (NULL or a constant after inlining), every 64 elements
   also stream 64 of the pending row and prefetch 256 bytes of the next row from pf (the
   same offsets; NULL: none). */
FS512_INLINE __m512d fs512_exp_store_sum_lanes_f32(const float *x, float m, float *y, ptrdiff_t n, int twosum,
                                                   fs512_pending_f32 *pend, const float *pf, const float *ahead,
                                                   __m512 *amax, __m512 *amin)
{
    const int pf_l1 = fs_prefetch_l1(pf, x);
    const __m512 ninf = _mm512_set1_ps(-INFINITY), pinf = _mm512_set1_ps(INFINITY);
    __m512 am0 = ninf, am1 = ninf, an0 = pinf, an1 = pinf;
    const __m512 negm = _mm512_set1_ps(-m), zero = _mm512_setzero_ps();
    const __mmask16 all = (__mmask16)0xFFFF;
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    fs512_pending_f32 q = {0};
    __m512 qnegm = zero, qa = zero;
    ptrdiff_t i = 0, j = 0;
    if (pend != NULL) {
        q = *pend;
        j = q.j;
        qnegm = _mm512_set1_ps(-q.m);
        qa = _mm512_set1_ps(q.a);
    }
    while (i + 64 <= n) {
        __m512 b0 = zero, b1 = zero;
        ptrdiff_t end = i + 256 <= n ? i + 256 : n - n % 64;
        for (; i < end; i += 64) {
            __m512 e0 = fs512_exp_x_minus_m_ps(_mm512_loadu_ps(x + i), negm, all, twosum);
            __m512 e1 = fs512_exp_x_minus_m_ps(_mm512_loadu_ps(x + i + 16), negm, all, twosum);
            __m512 e2 = fs512_exp_x_minus_m_ps(_mm512_loadu_ps(x + i + 32), negm, all, twosum);
            __m512 e3 = fs512_exp_x_minus_m_ps(_mm512_loadu_ps(x + i + 48), negm, all, twosum);
            _mm512_storeu_ps(y + i, e0);
            _mm512_storeu_ps(y + i + 16, e1);
            _mm512_storeu_ps(y + i + 32, e2);
            _mm512_storeu_ps(y + i + 48, e3);
            b0 = _mm512_add_ps(b0, _mm512_add_ps(e0, e1));
            b1 = _mm512_add_ps(b1, _mm512_add_ps(e2, e3));
            if (pf != NULL) fs512_prefetch_lines(pf + i, 4, pf_l1);
            if (pend != NULL) j = fs512_pending_advance_f32(q, qnegm, qa, j, 4, FS512_SCALE, 0);
            if (ahead != NULL) {
                __m512 v0 = _mm512_loadu_ps(ahead + i), v1 = _mm512_loadu_ps(ahead + i + 16);
                __m512 v2 = _mm512_loadu_ps(ahead + i + 32), v3 = _mm512_loadu_ps(ahead + i + 48);
                am0 = _mm512_max_ps(_mm512_max_ps(am0, v0), v2);
                am1 = _mm512_max_ps(_mm512_max_ps(am1, v1), v3);
                an0 = _mm512_min_ps(_mm512_min_ps(an0, v0), v2);
                an1 = _mm512_min_ps(_mm512_min_ps(an1, v1), v3);
            }
        }
        s0 = fs512_widen_add(s0, b0);
        s1 = fs512_widen_add(s1, b1);
    }
    if (ahead != NULL) { /* the rest of the next row */
        fs512_row_minmax_lanes_f32(ahead + i, n - i, amax, amin);
        *amax = _mm512_max_ps(*amax, _mm512_max_ps(am0, am1));
        *amin = _mm512_min_ps(*amin, _mm512_min_ps(an0, an1));
    }
    for (; i < n; i += 16) {
        __mmask16 k = n - i >= 16 ? all : fs512_mask16(n - i);
        __m512 e = fs512_exp_x_minus_m_ps(_mm512_maskz_loadu_ps(k, x + i), negm, k, twosum);
        _mm512_mask_storeu_ps(y + i, k, e);
        s0 = fs512_widen_add(s0, e);
    }
    if (pend != NULL) pend->j = j;
    return _mm512_add_pd(s0, s1); /* the caller adds its lanes as _mm512_reduce_add_pd does */
}

FS512_INLINE double fs512_exp_store_sum_impl_f32(const float *x, float m, float *y, ptrdiff_t n, int twosum,
                                                 fs512_pending_f32 *pend, const float *pf, const float *ahead,
                                                 __m512 *amax, __m512 *amin)
{
    return _mm512_reduce_add_pd(fs512_exp_store_sum_lanes_f32(x, m, y, n, twosum, pend, pf, ahead, amax, amin));
}

/* With the TwoSum correction: as accurate as exp of the exact difference. */
static inline double fs512_exp_store_sum_f32(const float *x, float m, float *y, ptrdiff_t n)
{
    return fs512_exp_store_sum_impl_f32(x, m, y, n, 1, NULL, NULL, NULL, NULL, NULL);
}

/* Without it, for rows where every |x - m| <= FS_EXACT_SPREAD, whose rounding error is then
   at most 2^-20 relative. */
static inline double fs512_exp_store_sum_fast_f32(const float *x, float m, float *y, ptrdiff_t n)
{
    return fs512_exp_store_sum_impl_f32(x, m, y, n, 0, NULL, NULL, NULL, NULL, NULL);
}

/* The same sums for streamed results: advancing a pending row, prefetching from pf, and taking
   the max and min of the row `ahead` (or NULL: none) into *ahead_max, *ahead_min. */
static inline double fs512_exp_store_sum_piped_f32(const float *x, float m, float *y, ptrdiff_t n, int twosum,
                                                   fs512_pending_f32 *pend, const float *pf, const float *ahead,
                                                   float *ahead_max, float *ahead_min)
{
    __m512 amax, amin;
    double s = twosum ? fs512_exp_store_sum_impl_f32(x, m, y, n, 1, pend, pf, ahead, &amax, &amin)
                      : fs512_exp_store_sum_impl_f32(x, m, y, n, 0, pend, pf, ahead, &amax, &amin);
    if (ahead != NULL) {
        *ahead_max = _mm512_reduce_max_ps(amax);
        *ahead_min = _mm512_reduce_min_ps(amin);
    }
    return s;
}

/* Sum of exp(x - m) over the elements that are not equal to m (*at_max counts the others),
   storing t = x - m into t_out when `store`: log_softmax then only subtracts a constant from
   t_out, and its output lines are fetched during this exp-heavy pass rather than the light
   last one. */
FS512_INLINE double fs512_exp_sum_split_impl_f32(const float *x, float m, float *t_out, ptrdiff_t n, double *at_max,
                                                 int store, fs512_pending_f32 *pend, const float *pf,
                                                 const float *ahead, __m512 *amax)
{
    const int pf_l1 = fs_prefetch_l1(pf, x);
    __m512 am0 = _mm512_set1_ps(-INFINITY), am1 = am0;
    /* The exps only feed a sum >= 1: the rounding of x - m (relative error |x - m| 2^-24 in
       a term e^(x - m)) changes it by less than 2^-25, so no TwoSum here. */
    const __m512 negm = _mm512_set1_ps(-m), vm = _mm512_set1_ps(m), one = _mm512_set1_ps(1.0f);
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    __m512 cnt = _mm512_setzero_ps();
    fs512_pending_f32 q = {0};
    __m512 qnegm = cnt, qa = cnt;
    ptrdiff_t i = 0, j = 0;
    if (pend != NULL) { /* as in fs512_exp_store_sum_impl_f32 */
        q = *pend;
        j = q.j;
        qnegm = _mm512_set1_ps(-q.m);
        qa = _mm512_set1_ps(q.a);
    }
    while (i + 32 <= n) {
        __m512 b0 = _mm512_setzero_ps(), b1 = _mm512_setzero_ps();
        ptrdiff_t end = i + 256 <= n ? i + 256 : n - n % 32;
        for (; i < end; i += 32) {
            __m512 x0 = _mm512_loadu_ps(x + i), x1 = _mm512_loadu_ps(x + i + 16);
            __m512 t0 = _mm512_add_ps(x0, negm), t1 = _mm512_add_ps(x1, negm);
            __mmask16 q0 = _mm512_cmp_ps_mask(x0, vm, _CMP_EQ_OQ), q1 = _mm512_cmp_ps_mask(x1, vm, _CMP_EQ_OQ);
            if (store) {
                _mm512_storeu_ps(t_out + i, t0);
                _mm512_storeu_ps(t_out + i + 16, t1);
            }
            b0 = _mm512_add_ps(b0, fs512_exp_nonpos_keep_ps(t0, (__mmask16)~q0));
            b1 = _mm512_add_ps(b1, fs512_exp_nonpos_keep_ps(t1, (__mmask16)~q1));
            cnt = _mm512_mask_add_ps(cnt, q0, cnt, one);
            cnt = _mm512_mask_add_ps(cnt, q1, cnt, one);
            if (pf != NULL) fs512_prefetch_lines(pf + i, 2, pf_l1);
            if (pend != NULL) j = fs512_pending_advance_f32(q, qnegm, qa, j, 2, FS512_SUB_SUB, 0);
            if (ahead != NULL) {
                am0 = _mm512_max_ps(am0, _mm512_loadu_ps(ahead + i));
                am1 = _mm512_max_ps(am1, _mm512_loadu_ps(ahead + i + 16));
            }
        }
        s0 = fs512_widen_add(s0, b0);
        s1 = fs512_widen_add(s1, b1);
    }
    if (ahead != NULL) { /* the rest of the next row */
        __m512 unused;
        fs512_row_minmax_lanes_f32(ahead + i, n - i, amax, &unused);
        *amax = _mm512_max_ps(*amax, _mm512_max_ps(am0, am1));
    }
    for (; i < n; i += 16) {
        __mmask16 k = n - i >= 16 ? (__mmask16)0xFFFF : fs512_mask16(n - i);
        __m512 x0 = _mm512_maskz_loadu_ps(k, x + i);
        __m512 t0 = _mm512_add_ps(x0, negm);
        __mmask16 q0 = _mm512_mask_cmp_ps_mask(k, x0, vm, _CMP_EQ_OQ);
        if (store) _mm512_mask_storeu_ps(t_out + i, k, t0);
        s0 = fs512_widen_add(s0, fs512_exp_nonpos_keep_ps(t0, k & (__mmask16)~q0));
        cnt = _mm512_mask_add_ps(cnt, q0, cnt, one);
    }
    if (pend != NULL) pend->j = j;
    *at_max = (double)_mm512_reduce_add_ps(cnt);
    return _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
}

static inline double fs512_exp_sum_split_store_f32(const float *x, float m, float *t_out, ptrdiff_t n, double *at_max)
{
    return fs512_exp_sum_split_impl_f32(x, m, t_out, n, at_max, 1, NULL, NULL, NULL, NULL);
}

static inline double fs512_exp_sum_split_f32(const float *x, float m, ptrdiff_t n, double *at_max)
{
    return fs512_exp_sum_split_impl_f32(x, m, NULL, n, at_max, 0, NULL, NULL, NULL, NULL);
}

/* The split sums (nothing stored), advancing a pending row, prefetching from pf and taking
   the max of the row `ahead` (or NULL) into *ahead_max. */
static inline double fs512_exp_sum_split_piped_f32(const float *x, float m, ptrdiff_t n, double *at_max,
                                                   fs512_pending_f32 *pend, const float *pf, const float *ahead,
                                                   float *ahead_max)
{
    __m512 amax;
    double s = fs512_exp_sum_split_impl_f32(x, m, NULL, n, at_max, 0, pend, pf, ahead, &amax);
    if (ahead != NULL) *ahead_max = _mm512_reduce_max_ps(amax);
    return s;
}

/* y = src - c */
static inline void fs512_sub_const_f32(const float *src, float c, float *y, ptrdiff_t n)
{
    const __m512 vc = _mm512_set1_ps(c);
    ptrdiff_t i = 0;
    for (; i + 32 <= n; i += 32) {
        _mm512_storeu_ps(y + i, _mm512_sub_ps(_mm512_loadu_ps(src + i), vc));
        _mm512_storeu_ps(y + i + 16, _mm512_sub_ps(_mm512_loadu_ps(src + i + 16), vc));
    }
    for (; i < n; i += 16) {
        __mmask16 k = n - i >= 16 ? (__mmask16)0xFFFF : fs512_mask16(n - i);
        _mm512_mask_storeu_ps(y + i, k, _mm512_sub_ps(_mm512_maskz_loadu_ps(k, src + i), vc));
    }
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

/* The max of a float64 row, and its min into *min_out (NaN may be dropped by either: a row
   holding one is NaN whatever they are). */
static inline double fs512_row_minmax_f64(const double *x, ptrdiff_t n, double *min_out)
{
    const __m512d ninf = _mm512_set1_pd(-INFINITY), pinf = _mm512_set1_pd(INFINITY);
    __m512d a0 = ninf, a1 = ninf, b0 = pinf, b1 = pinf;
    ptrdiff_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512d v0 = _mm512_loadu_pd(x + i), v1 = _mm512_loadu_pd(x + i + 8);
        a0 = _mm512_max_pd(a0, v0);
        a1 = _mm512_max_pd(a1, v1);
        b0 = _mm512_min_pd(b0, v0);
        b1 = _mm512_min_pd(b1, v1);
    }
    for (; i < n; i += 8) {
        const __mmask8 k = n - i >= 8 ? (__mmask8)0xFF : fs512_mask8(n - i);
        a0 = _mm512_mask_max_pd(a0, k, a0, _mm512_maskz_loadu_pd(k, x + i));
        b0 = _mm512_mask_min_pd(b0, k, b0, _mm512_maskz_loadu_pd(k, x + i));
    }
    *min_out = _mm512_reduce_min_pd(_mm512_min_pd(b0, b1));
    return _mm512_reduce_max_pd(_mm512_max_pd(a0, a1));
}

/* y = exp(x - m), returns sum(y); `pend` and `pf` as in fs512_exp_store_sum_impl_f32.  With
   `bounded` (a constant after inlining; every x within FS_SPREAD_F64 of m) the exps take
   fs512_exp_bounded_keep_pd: the same bits.  With `ahead` (NULL or not, a constant after
   inlining) the max and min of that row are taken into *amax, *amin. */
FS512_INLINE double fs512_exp_store_sum_impl_f64(const double *x, double m, double *y, ptrdiff_t n, int bounded,
                                                 fs512_pending_f64 *pend, const double *pf, const double *ahead,
                                                 double *amax, double *amin)
{
    const int pf_l1 = fs_prefetch_l1(pf, x);
    const __m512d vm = _mm512_set1_pd(m);
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    __m512d am0 = _mm512_set1_pd(-INFINITY), am1 = am0, an0 = _mm512_set1_pd(INFINITY), an1 = an0;
    fs512_pending_f64 q = {0};
    __m512d qm = s0, qa = s0;
    ptrdiff_t i = 0, j = 0;
    if (pend != NULL) {
        q = *pend;
        j = q.j;
        qm = _mm512_set1_pd(q.m);
        qa = _mm512_set1_pd(q.a);
    }
    for (; i + 16 <= n; i += 16) {
        const __m512d t0 = _mm512_sub_pd(_mm512_loadu_pd(x + i), vm);
        const __m512d t1 = _mm512_sub_pd(_mm512_loadu_pd(x + i + 8), vm);
        __m512d e0, e1;
        if (bounded) {
            e0 = fs512_exp_bounded_keep_pd(t0, 0xFF);
            e1 = fs512_exp_bounded_keep_pd(t1, 0xFF);
        } else {
            e0 = fs512_exp_nonpos_keep_pd(t0, 0xFF);
            e1 = fs512_exp_nonpos_keep_pd(t1, 0xFF);
        }
        _mm512_storeu_pd(y + i, e0);
        _mm512_storeu_pd(y + i + 8, e1);
        s0 = _mm512_add_pd(s0, e0);
        s1 = _mm512_add_pd(s1, e1);
        if (pf != NULL) fs512_prefetch_lines(pf + i, 2, pf_l1);
        if (pend != NULL) j = fs512_pending_advance_f64(q, qm, qa, j, 2, FS512_SCALE, 0);
        if (ahead != NULL) {
            const __m512d v0 = _mm512_loadu_pd(ahead + i), v1 = _mm512_loadu_pd(ahead + i + 8);
            am0 = _mm512_max_pd(am0, v0);
            am1 = _mm512_max_pd(am1, v1);
            an0 = _mm512_min_pd(an0, v0);
            an1 = _mm512_min_pd(an1, v1);
        }
    }
    if (ahead != NULL) { /* the rest of the next row */
        double lo;
        const double hi = fs512_row_minmax_f64(ahead + i, n - i, &lo);
        const double mx = _mm512_reduce_max_pd(_mm512_max_pd(am0, am1));
        const double mn = _mm512_reduce_min_pd(_mm512_min_pd(an0, an1));
        *amax = hi > mx ? hi : mx;
        *amin = lo < mn ? lo : mn;
    }
    for (; i < n; i += 8) {
        __mmask8 k = n - i >= 8 ? (__mmask8)0xFF : fs512_mask8(n - i);
        const __m512d t = _mm512_sub_pd(_mm512_maskz_loadu_pd(k, x + i), vm);
        __m512d e = bounded ? fs512_exp_bounded_keep_pd(t, k) : fs512_exp_nonpos_keep_pd(t, k);
        _mm512_mask_storeu_pd(y + i, k, e);
        s0 = _mm512_add_pd(s0, e);
    }
    if (pend != NULL) pend->j = j;
    return _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
}

static inline double fs512_exp_store_sum_f64(const double *x, double m, double *y, ptrdiff_t n)
{
    return fs512_exp_store_sum_impl_f64(x, m, y, n, 0, NULL, NULL, NULL, NULL, NULL);
}

/* As fs512_exp_store_sum_piped_f32, `exact` telling the rows not within FS_SPREAD_F64 of their
   max (float64 needs no TwoSum).  Rows with no row ahead (long rows, and the last row of a
   span) take the exp with its range test whatever `exact` says (the same bits): two copies of
   the loop rather than four, for the long rows' code (256x50257, package, time against the
   previous build: 1.033x with four copies, 1.008-1.036x over two builds with two, within the
   layout noise of a new build). */
static inline double fs512_exp_store_sum_piped_f64(const double *x, double m, double *y, ptrdiff_t n, int exact,
                                                   fs512_pending_f64 *pend, const double *pf, const double *ahead,
                                                   double *ahead_max, double *ahead_min)
{
    if (ahead == NULL) return fs512_exp_store_sum_impl_f64(x, m, y, n, 0, pend, pf, NULL, NULL, NULL);
    return exact ? fs512_exp_store_sum_impl_f64(x, m, y, n, 0, pend, pf, ahead, ahead_max, ahead_min)
                 : fs512_exp_store_sum_impl_f64(x, m, y, n, 1, pend, pf, ahead, ahead_max, ahead_min);
}

/* Elements i..i+7 of x, or of xf widened to double when xf is not NULL (a constant after
   inlining); the first k of them (others 0) in the masked form. */
FS512_INLINE __m512d fs512_load8_pd(const double *x, const float *xf, ptrdiff_t i)
{
    return xf != NULL ? _mm512_cvtps_pd(_mm256_loadu_ps(xf + i)) : _mm512_loadu_pd(x + i);
}

FS512_INLINE __m512d fs512_maskz_load8_pd(__mmask8 k, const double *x, const float *xf, ptrdiff_t i)
{
    return xf != NULL ? _mm512_cvtps_pd(_mm256_maskz_loadu_ps(k, xf + i)) : _mm512_maskz_loadu_pd(k, x + i);
}

/* The split sums below read the float32 elements xf instead of x when xf is not NULL
   (logsumexp's float32 rows, whose exps are taken in double). */
FS512_INLINE double fs512_exp_sum_split_impl_f64(const double *x, double m, double *t_out, ptrdiff_t n, double *at_max,
                                                 int store, fs512_pending_f64 *pend, const double *pf, const float *xf)
{
    const int pf_l1 = fs_prefetch_l1(pf, x); /* rows read from xf (logsumexp's float32) are never prefetched: pf NULL */
    const __m512d vm = _mm512_set1_pd(m), one = _mm512_set1_pd(1.0);
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd(), cnt = _mm512_setzero_pd();
    fs512_pending_f64 q = {0};
    __m512d qm = s0, qa = s0;
    ptrdiff_t i = 0, j = 0;
    if (pend != NULL) {
        q = *pend;
        j = q.j;
        qm = _mm512_set1_pd(q.m);
        qa = _mm512_set1_pd(q.a);
    }
    for (; i + 16 <= n; i += 16) {
        __m512d x0 = fs512_load8_pd(x, xf, i), x1 = fs512_load8_pd(x, xf, i + 8);
        __m512d t0 = _mm512_sub_pd(x0, vm), t1 = _mm512_sub_pd(x1, vm);
        __mmask8 q0 = _mm512_cmp_pd_mask(x0, vm, _CMP_EQ_OQ), q1 = _mm512_cmp_pd_mask(x1, vm, _CMP_EQ_OQ);
        if (store) {
            _mm512_storeu_pd(t_out + i, t0);
            _mm512_storeu_pd(t_out + i + 8, t1);
        }
        s0 = _mm512_add_pd(s0, fs512_exp_nonpos_keep_pd(t0, (__mmask8)~q0));
        s1 = _mm512_add_pd(s1, fs512_exp_nonpos_keep_pd(t1, (__mmask8)~q1));
        cnt = _mm512_mask_add_pd(cnt, q0, cnt, one);
        cnt = _mm512_mask_add_pd(cnt, q1, cnt, one);
        if (pf != NULL) fs512_prefetch_lines(pf + i, 2, pf_l1);
        if (pend != NULL) j = fs512_pending_advance_f64(q, qm, qa, j, 2, FS512_SUB_SUB, 0);
    }
    for (; i < n; i += 8) {
        __mmask8 k = n - i >= 8 ? (__mmask8)0xFF : fs512_mask8(n - i);
        __m512d x0 = fs512_maskz_load8_pd(k, x, xf, i);
        __m512d t0 = _mm512_sub_pd(x0, vm);
        __mmask8 q0 = _mm512_mask_cmp_pd_mask(k, x0, vm, _CMP_EQ_OQ);
        if (store) _mm512_mask_storeu_pd(t_out + i, k, t0);
        s0 = _mm512_add_pd(s0, fs512_exp_nonpos_keep_pd(t0, k & (__mmask8)~q0));
        cnt = _mm512_mask_add_pd(cnt, q0, cnt, one);
    }
    if (pend != NULL) pend->j = j;
    *at_max = _mm512_reduce_add_pd(cnt);
    return _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
}

static inline double fs512_exp_sum_split_store_f64(const double *x, double m, double *t_out, ptrdiff_t n, double *at_max)
{
    return fs512_exp_sum_split_impl_f64(x, m, t_out, n, at_max, 1, NULL, NULL, NULL);
}

static inline double fs512_exp_sum_split_f64(const double *x, double m, ptrdiff_t n, double *at_max)
{
    return fs512_exp_sum_split_impl_f64(x, m, NULL, n, at_max, 0, NULL, NULL, NULL);
}

/* The same sums of float32 elements, in double (the same bits as on the widened elements). */
static inline double fs512_exp_sum_split_widen_f32(const float *xf, double m, ptrdiff_t n, double *at_max)
{
    return fs512_exp_sum_split_impl_f64(NULL, m, NULL, n, at_max, 0, NULL, NULL, xf);
}

static inline double fs512_exp_sum_split_piped_f64(const double *x, double m, ptrdiff_t n, double *at_max,
                                                   fs512_pending_f64 *pend, const double *pf, const double *ahead,
                                                   double *ahead_max)
{
    (void)ahead; /* NULL: float64 log_softmax does not scan ahead */
    (void)ahead_max;
    return fs512_exp_sum_split_impl_f64(x, m, NULL, n, at_max, 0, pend, pf, NULL);
}

/* y = src - c */
static inline void fs512_sub_const_f64(const double *src, double c, double *y, ptrdiff_t n)
{
    const __m512d vc = _mm512_set1_pd(c);
    ptrdiff_t i = 0;
    for (; i + 16 <= n; i += 16) {
        _mm512_storeu_pd(y + i, _mm512_sub_pd(_mm512_loadu_pd(src + i), vc));
        _mm512_storeu_pd(y + i + 8, _mm512_sub_pd(_mm512_loadu_pd(src + i + 8), vc));
    }
    for (; i < n; i += 8) {
        __mmask8 k = n - i >= 8 ? (__mmask8)0xFF : fs512_mask8(n - i);
        _mm512_mask_storeu_pd(y + i, k, _mm512_sub_pd(_mm512_maskz_loadu_pd(k, src + i), vc));
    }
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




/* y = exp(x - m) for a row whose max is m (no TwoSum: as torch's exp(x - max)); returns the sum
   of y over the elements not equal to m (*at_max counts those, whose y is exactly 1), so that
   log1p(rest + count - 1) keeps the precision of a confident prediction's tiny loss.  `pend`
   and `pf` as in fs512_exp_store_sum_impl_f32; with `ahead` (NULL or not, a constant after
   inlining) the max of that row's first n elements goes to the lanes of *amax. */
FS512_INLINE double fs512_exp_store_sum_split_impl_f32(const float *x, float m, float *y, ptrdiff_t n, double *at_max,
                                                       fs512_pending_f32 *pend, const float *pf, const float *ahead,
                                                       __m512 *amax)
{
    const int pf_l1 = fs_prefetch_l1(pf, x);
    __m512 am0 = _mm512_set1_ps(-INFINITY), am1 = am0;
    const __m512 negm = _mm512_set1_ps(-m), vm = _mm512_set1_ps(m), one = _mm512_set1_ps(1.0f);
    const __m512 zero = _mm512_setzero_ps();
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    __m512 cnt = zero;
    fs512_pending_f32 q = {0};
    __m512 qnegm = zero, qa = zero;
    ptrdiff_t i = 0, j = 0;
    if (pend != NULL) {
        q = *pend;
        j = q.j;
        qnegm = _mm512_set1_ps(-q.m);
        qa = _mm512_set1_ps(q.a);
    }
    while (i + 32 <= n) {
        __m512 b0 = zero, b1 = zero;
        ptrdiff_t end = i + 256 <= n ? i + 256 : n - n % 32;
        for (; i < end; i += 32) {
            __m512 x0 = _mm512_loadu_ps(x + i), x1 = _mm512_loadu_ps(x + i + 16);
            __m512 e0 = fs512_exp_nonpos_ps(_mm512_add_ps(x0, negm));
            __m512 e1 = fs512_exp_nonpos_ps(_mm512_add_ps(x1, negm));
            __mmask16 q0 = _mm512_cmp_ps_mask(x0, vm, _CMP_EQ_OQ), q1 = _mm512_cmp_ps_mask(x1, vm, _CMP_EQ_OQ);
            _mm512_storeu_ps(y + i, e0);
            _mm512_storeu_ps(y + i + 16, e1);
            b0 = _mm512_mask_add_ps(b0, (__mmask16)~q0, b0, e0);
            b1 = _mm512_mask_add_ps(b1, (__mmask16)~q1, b1, e1);
            cnt = _mm512_mask_add_ps(cnt, q0, cnt, one);
            cnt = _mm512_mask_add_ps(cnt, q1, cnt, one);
            if (pf != NULL) fs512_prefetch_lines(pf + i, 2, pf_l1);
            if (pend != NULL) j = fs512_pending_advance_f32(q, qnegm, qa, j, 2, FS512_SCALE, 1);
            if (ahead != NULL) {
                am0 = _mm512_max_ps(am0, _mm512_loadu_ps(ahead + i));
                am1 = _mm512_max_ps(am1, _mm512_loadu_ps(ahead + i + 16));
            }
        }
        s0 = fs512_widen_add(s0, b0);
        s1 = fs512_widen_add(s1, b1);
    }
    if (ahead != NULL) { /* the rest of the next row */
        __m512 unused;
        fs512_row_minmax_lanes_f32(ahead + i, n - i, amax, &unused);
        *amax = _mm512_max_ps(*amax, _mm512_max_ps(am0, am1));
    }
    for (; i < n; i += 16) {
        __mmask16 k = n - i >= 16 ? (__mmask16)0xFFFF : fs512_mask16(n - i);
        __m512 x0 = _mm512_maskz_loadu_ps(k, x + i);
        __m512 e0 = fs512_exp_nonpos_keep_ps(_mm512_add_ps(x0, negm), k);
        __mmask16 q0 = _mm512_mask_cmp_ps_mask(k, x0, vm, _CMP_EQ_OQ);
        _mm512_mask_storeu_ps(y + i, k, e0);
        s0 = fs512_widen_add(s0, _mm512_maskz_mov_ps((__mmask16)(k & ~q0), e0));
        cnt = _mm512_mask_add_ps(cnt, q0, cnt, one);
    }
    if (pend != NULL) pend->j = j;
    *at_max = (double)_mm512_reduce_add_ps(cnt);
    return _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
}

static inline double fs512_exp_store_sum_split_f32(const float *x, float m, float *y, ptrdiff_t n, double *at_max)
{
    return fs512_exp_store_sum_split_impl_f32(x, m, y, n, at_max, NULL, NULL, NULL, NULL);
}

/* The same for streamed gradients: advancing a pending row, prefetching from pf, and taking
   the max of the row `ahead` (or NULL: none) into *ahead_max. */
static inline double fs512_exp_store_sum_split_piped_f32(const float *x, float m, float *y, ptrdiff_t n,
                                                         double *at_max, fs512_pending_f32 *pend, const float *pf,
                                                         const float *ahead, float *ahead_max)
{
    __m512 amax;
    if (ahead == NULL) return fs512_exp_store_sum_split_impl_f32(x, m, y, n, at_max, pend, pf, NULL, NULL);
    const double s = fs512_exp_store_sum_split_impl_f32(x, m, y, n, at_max, pend, pf, ahead, &amax);
    *ahead_max = _mm512_reduce_max_ps(amax);
    return s;
}

FS512_INLINE double fs512_exp_store_sum_split_impl_f64(const double *x, double m, double *y, ptrdiff_t n,
                                                       double *at_max, fs512_pending_f64 *pend, const double *pf)
{
    const int pf_l1 = fs_prefetch_l1(pf, x);
    const __m512d vm = _mm512_set1_pd(m), one = _mm512_set1_pd(1.0);
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd(), cnt = _mm512_setzero_pd();
    fs512_pending_f64 q = {0};
    __m512d qm = s0, qa = s0;
    ptrdiff_t i = 0, j = 0;
    if (pend != NULL) {
        q = *pend;
        j = q.j;
        qm = _mm512_set1_pd(q.m);
        qa = _mm512_set1_pd(q.a);
    }
    for (; i + 16 <= n; i += 16) {
        __m512d x0 = _mm512_loadu_pd(x + i), x1 = _mm512_loadu_pd(x + i + 8);
        __m512d e0 = fs512_exp_nonpos_keep_pd(_mm512_sub_pd(x0, vm), 0xFF), e1 = fs512_exp_nonpos_keep_pd(_mm512_sub_pd(x1, vm), 0xFF);
        __mmask8 q0 = _mm512_cmp_pd_mask(x0, vm, _CMP_EQ_OQ), q1 = _mm512_cmp_pd_mask(x1, vm, _CMP_EQ_OQ);
        _mm512_storeu_pd(y + i, e0);
        _mm512_storeu_pd(y + i + 8, e1);
        s0 = _mm512_mask_add_pd(s0, (__mmask8)~q0, s0, e0);
        s1 = _mm512_mask_add_pd(s1, (__mmask8)~q1, s1, e1);
        cnt = _mm512_mask_add_pd(cnt, q0, cnt, one);
        cnt = _mm512_mask_add_pd(cnt, q1, cnt, one);
        if (pf != NULL) fs512_prefetch_lines(pf + i, 2, pf_l1);
        if (pend != NULL) j = fs512_pending_advance_f64(q, qm, qa, j, 2, FS512_SCALE, 1);
    }
    for (; i < n; i += 8) {
        __mmask8 k = n - i >= 8 ? (__mmask8)0xFF : fs512_mask8(n - i);
        __m512d x0 = _mm512_maskz_loadu_pd(k, x + i);
        __m512d e0 = fs512_exp_nonpos_keep_pd(_mm512_sub_pd(x0, vm), k);
        __mmask8 q0 = _mm512_mask_cmp_pd_mask(k, x0, vm, _CMP_EQ_OQ);
        _mm512_mask_storeu_pd(y + i, k, e0);
        s0 = _mm512_mask_add_pd(s0, (__mmask8)(k & ~q0), s0, e0);
        cnt = _mm512_mask_add_pd(cnt, q0, cnt, one);
    }
    if (pend != NULL) pend->j = j;
    *at_max = _mm512_reduce_add_pd(cnt);
    return _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
}

static inline double fs512_exp_store_sum_split_f64(const double *x, double m, double *y, ptrdiff_t n, double *at_max)
{
    return fs512_exp_store_sum_split_impl_f64(x, m, y, n, at_max, NULL, NULL);
}

static inline double fs512_exp_store_sum_split_piped_f64(const double *x, double m, double *y, ptrdiff_t n,
                                                         double *at_max, fs512_pending_f64 *pend, const double *pf)
{
    return fs512_exp_store_sum_split_impl_f64(x, m, y, n, at_max, pend, pf);
}

/* ---------------------------------------------------------------- backward passes
 *
 * The last pass over a row: gx = y * (g - s) (softmax_backward) or g - exp(y) * s
 * (log_softmax_backward), rounded as written (a product, a difference).  exp takes any y:
 * clamped at 89 / 710 (exp overflows before: +inf stays +inf), NaN kept (vminps returns its
 * second operand, y, for a NaN), 0 below -104 / -746.  With `stream` (a large result) the
 * whole lines of gx go out with streaming stores, so they are not read from memory before
 * being written (a quarter of the traffic of this pass); the caller fences (_mm_sfence).
 */
enum { FS512_BWD_SOFTMAX = 0, FS512_BWD_LOG_SOFTMAX = 1 };

/* The first pass's block sums, sum(g * y) (sum(g) when y is NULL), on vectors with the bits of
   block_dot / block_sum (fs_activations_impl.h): lane l adds terms l, l + 16, ... (a product,
   then a sum, as written; the tail's other lanes untouched, so a -0 stays -0), then the same
   tree, since _mm512_reduce_add_* pairs lane l with l + 8, then l + 4, l + 2, l + 1.  The
   portable loop ended every block of 128 with a scalar tree: 65536x10 took 1.1x the NumPy
   reference's time. */
static inline float fs512_block_dot_f32(const float *g, const float *y, ptrdiff_t n)
{
    __m512 acc = _mm512_setzero_ps();
    ptrdiff_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_loadu_ps(g + i);
        if (y != NULL) v = _mm512_mul_ps(v, _mm512_loadu_ps(y + i));
        acc = _mm512_add_ps(acc, v);
    }
    if (i < n) {
        const __mmask16 k = fs512_mask16(n - i);
        __m512 v = _mm512_maskz_loadu_ps(k, g + i);
        if (y != NULL) v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(k, y + i));
        acc = _mm512_mask_add_ps(acc, k, acc, v);
    }
    return _mm512_reduce_add_ps(acc);
}

/* The same for float64: lanes 0-7 of the 16 in a0, 8-15 in a1 (the tree's first step adds them). */
static inline double fs512_block_dot_f64(const double *g, const double *y, ptrdiff_t n)
{
    __m512d a0 = _mm512_setzero_pd(), a1 = _mm512_setzero_pd();
    ptrdiff_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512d v0 = _mm512_loadu_pd(g + i), v1 = _mm512_loadu_pd(g + i + 8);
        if (y != NULL) {
            v0 = _mm512_mul_pd(v0, _mm512_loadu_pd(y + i));
            v1 = _mm512_mul_pd(v1, _mm512_loadu_pd(y + i + 8));
        }
        a0 = _mm512_add_pd(a0, v0);
        a1 = _mm512_add_pd(a1, v1);
    }
    for (int half = 0; half < 2 && i < n; half++, i += 8) {
        const __mmask8 k = fs512_mask8(n - i < 8 ? n - i : 8);
        __m512d v = _mm512_maskz_loadu_pd(k, g + i);
        if (y != NULL) v = _mm512_mul_pd(v, _mm512_maskz_loadu_pd(k, y + i));
        if (half == 0) a0 = _mm512_mask_add_pd(a0, k, a0, v);
        else a1 = _mm512_mask_add_pd(a1, k, a1, v);
    }
    return _mm512_reduce_add_pd(_mm512_add_pd(a0, a1));
}

FS512_INLINE __m512 fs512_backward_value_ps(__m512 g, __m512 y, __m512 s, int op)
{
    if (op == FS512_BWD_SOFTMAX) return _mm512_mul_ps(y, _mm512_sub_ps(g, s));
    return _mm512_sub_ps(g, _mm512_mul_ps(fs512_exp_nonpos_ps(_mm512_min_ps(_mm512_set1_ps(89.0f), y)), s));
}

FS512_INLINE __m512d fs512_backward_value_pd(__m512d g, __m512d y, __m512d s, int op)
{
    if (op == FS512_BWD_SOFTMAX) return _mm512_mul_pd(y, _mm512_sub_pd(g, s));
    const __m512d e = fs512_exp_nonpos_keep_pd(_mm512_min_pd(_mm512_set1_pd(710.0), y), 0xFF);
    return _mm512_sub_pd(g, _mm512_mul_pd(e, s));
}

/* Elements before gx's first line boundary (masked), whole vectors streamed from there, the
   rest masked; everything with ordinary stores when !stream or gx is not element-aligned. */
static inline void fs512_backward_pass_f32(const float *g, const float *y, float s, float *gx, ptrdiff_t n, int op,
                                           int stream)
{
    const __m512 vs = _mm512_set1_ps(s);
    const ptrdiff_t head = stream ? fs512_stream_head(gx, sizeof(float), n) : n;
    ptrdiff_t i = 0;
    if (head < n) {
        if (head > 0) {
            const __mmask16 k = fs512_mask16(head);
            _mm512_mask_storeu_ps(gx, k, fs512_backward_value_ps(_mm512_maskz_loadu_ps(k, g),
                                                                 _mm512_maskz_loadu_ps(k, y), vs, op));
        }
        for (i = head; i + 16 <= n; i += 16)
            _mm512_stream_ps(gx + i, fs512_backward_value_ps(_mm512_loadu_ps(g + i), _mm512_loadu_ps(y + i), vs, op));
    } else {
        for (; i + 16 <= n; i += 16)
            _mm512_storeu_ps(gx + i, fs512_backward_value_ps(_mm512_loadu_ps(g + i), _mm512_loadu_ps(y + i), vs, op));
    }
    if (i < n) {
        const __mmask16 k = fs512_mask16(n - i);
        _mm512_mask_storeu_ps(gx + i, k, fs512_backward_value_ps(_mm512_maskz_loadu_ps(k, g + i),
                                                                 _mm512_maskz_loadu_ps(k, y + i), vs, op));
    }
}

static inline void fs512_backward_pass_f64(const double *g, const double *y, double s, double *gx, ptrdiff_t n,
                                           int op, int stream)
{
    const __m512d vs = _mm512_set1_pd(s);
    const ptrdiff_t head = stream ? fs512_stream_head(gx, sizeof(double), n) : n;
    ptrdiff_t i = 0;
    if (head < n) {
        if (head > 0) {
            const __mmask8 k = fs512_mask8(head);
            _mm512_mask_storeu_pd(gx, k, fs512_backward_value_pd(_mm512_maskz_loadu_pd(k, g),
                                                                 _mm512_maskz_loadu_pd(k, y), vs, op));
        }
        for (i = head; i + 8 <= n; i += 8)
            _mm512_stream_pd(gx + i, fs512_backward_value_pd(_mm512_loadu_pd(g + i), _mm512_loadu_pd(y + i), vs, op));
    } else {
        for (; i + 8 <= n; i += 8)
            _mm512_storeu_pd(gx + i, fs512_backward_value_pd(_mm512_loadu_pd(g + i), _mm512_loadu_pd(y + i), vs, op));
    }
    if (i < n) {
        const __mmask8 k = fs512_mask8(n - i);
        _mm512_mask_storeu_pd(gx + i, k, fs512_backward_value_pd(_mm512_maskz_loadu_pd(k, g + i),
                                                                 _mm512_maskz_loadu_pd(k, y + i), vs, op));
    }
}

/* ---------------------------------------------------------------- medium rows (float32 softmax)
 *
 * Rows of FS512_SHORT_MAX + 1 .. FS512_MEDIUM_MAX elements, 16 rows a block.  One row of 128
 * is 8 vectors, and its horizontal reductions (max, min, sum, each an extract-and-combine
 * chain) and its scalar division were a quarter of its work and a long dependency chain;
 * here each row only accumulates one vector per reduction, and the 16 rows' vectors are
 * reduced together by a transposition (fs512_transpose_reduce16_ps: 46 operations for the
 * block), with one vector division for the 16 scales.  A block goes this way when every row
 * lies within FS_EXACT_SPREAD of its finite max (no TwoSum); otherwise nothing is written and
 * the caller takes the one-row kernel for its rows.  Each row's exps and sums are the one-row
 * kernel's (fs512_exp_store_sum_lanes_f32) and the transposition adds the last lanes in its
 * order, so a row gets the same bits whichever path takes it.
 * Results of FS_STREAM_MIN_BYTES in rows of a whole number of vectors are streamed out
 * during the next block's exp pass (softmax_medium_stream_span, fs_activations_impl.h),
 * the lines that rows share (rows that do not start on cache lines) as one vector with both
 * rows' scales (fs512_seam_f32); others are written with ordinary stores.
 */
#define FS512_MEDIUM_MAX 128

/* Lane k = max (is_max) or min of the 16 lanes of v[k]: pairs of rows share a vector, then
   pairs of pairs, halving the lanes each time; the last permutation puts lane k in place. */
FS512_INLINE __m512 fs512_transpose_reduce16_ps(const __m512 *v, int is_max)
{
#define FS512_TR_OP(a, b) (is_max ? _mm512_max_ps((a), (b)) : _mm512_min_ps((a), (b)))
    __m512 u[8], w[4], z[2];
    for (int i = 0; i < 8; i++)
        u[i] = FS512_TR_OP(_mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0x44),
                           _mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0xEE));
    for (int i = 0; i < 4; i++)
        w[i] = FS512_TR_OP(_mm512_shuffle_f32x4(u[2 * i], u[2 * i + 1], 0x88),
                           _mm512_shuffle_f32x4(u[2 * i], u[2 * i + 1], 0xDD));
    for (int i = 0; i < 2; i++)
        z[i] = FS512_TR_OP(_mm512_shuffle_ps(w[2 * i], w[2 * i + 1], 0x44), _mm512_shuffle_ps(w[2 * i], w[2 * i + 1], 0xEE));
    __m512 r = FS512_TR_OP(_mm512_shuffle_ps(z[0], z[1], 0x88), _mm512_shuffle_ps(z[0], z[1], 0xDD));
#undef FS512_TR_OP
    /* lane 4j + l holds row j + 4l */
    return _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), r);
}

/* Lane k = the sum of the 8 lanes of d[k], for 8 rows. */
FS512_INLINE __m512d fs512_transpose_sum8_pd(const __m512d *d)
{
    __m512d u[4], w[2];
    for (int i = 0; i < 4; i++)
        u[i] = _mm512_add_pd(_mm512_shuffle_f64x2(d[2 * i], d[2 * i + 1], 0x44),
                             _mm512_shuffle_f64x2(d[2 * i], d[2 * i + 1], 0xEE));
    for (int i = 0; i < 2; i++)
        w[i] = _mm512_add_pd(_mm512_shuffle_f64x2(u[2 * i], u[2 * i + 1], 0x88),
                             _mm512_shuffle_f64x2(u[2 * i], u[2 * i + 1], 0xDD));
    __m512d r = _mm512_add_pd(_mm512_shuffle_pd(w[0], w[1], 0x00), _mm512_shuffle_pd(w[0], w[1], 0xFF));
    /* lane 2j + l holds row j + 4l */
    return _mm512_permutexvar_pd(_mm512_setr_epi64(0, 2, 4, 6, 1, 3, 5, 7), r);
}

/* The 16 row maxima of a block into mk from each row's max and min vectors (mx, mn).
   Returns 0 when a row's max or min is infinite or NaN or its spread wider than
   FS_EXACT_SPREAD: the block then goes to the one-row kernel (a NaN that vmaxps / vminps
   drop lets its row through: its exps, sum and results are NaN, as SPEC wants). */
FS512_INLINE int fs512_medium_max_f32(const __m512 mx[16], const __m512 mn[16], float mk[16])
{
    const __m512 m = fs512_transpose_reduce16_ps(mx, 1), lowest = fs512_transpose_reduce16_ps(mn, 0);
    /* false for NaN (an infinite max or min makes m - lowest infinite or NaN) */
    if (_mm512_cmp_ps_mask(_mm512_sub_ps(m, lowest), _mm512_set1_ps(FS_EXACT_SPREAD), _CMP_LE_OQ) != 0xFFFF)
        return 0;
    _mm512_storeu_ps(mk, m);
    return 1;
}

/* The 16 scales 1 / sum from the rows' sum vectors (fs512_exp_store_sum_lanes_f32): the
   transposition adds the lanes in the order of _mm512_reduce_add_pd, so a row gets the same
   bits on the block path as on the one-row kernel. */
FS512_INLINE void fs512_medium_inv_f32(const __m512d d[16], float inv[16])
{
    const __m512d one = _mm512_set1_pd(1.0);
    _mm256_storeu_ps(inv, _mm512_cvtpd_ps(_mm512_div_pd(one, fs512_transpose_sum8_pd(d))));
    _mm256_storeu_ps(inv + 8, _mm512_cvtpd_ps(_mm512_div_pd(one, fs512_transpose_sum8_pd(d + 8))));
}

/* The sums of a block of 16 rows of n (FS512_SHORT_MAX < n <= FS512_MEDIUM_MAX) at x: the
   exps into e (16 rows of n), the 16 scales 1 / sum into inv.  Returns 0, with nothing
   written, when fs512_medium_max_f32 turns the block down.  `next` (or NULL), the next
   block, is prefetched during the exp pass. */
static inline int fs512_medium_block_f32(const float *x, float *e, ptrdiff_t n, float inv[16], const float *next)
{
    __m512 mx[16], mn[16];
    float mk[16] __attribute__((aligned(64)));
    for (int k = 0; k < 16; k++) fs512_row_minmax_lanes_f32(x + k * n, n, &mx[k], &mn[k]);
    if (!fs512_medium_max_f32(mx, mn, mk)) return 0;
    __m512d d[16];
    for (int k = 0; k < 16; k++) {
        if (next != NULL) fs_prefetch_span(next + k * n, (size_t)n * sizeof(float), x + k * n);
        /* the one-row kernel's exps and sums (without TwoSum), short of its last reduction */
        d[k] = fs512_exp_store_sum_lanes_f32(x + k * n, mk[k], e + k * n, n, 0, NULL, NULL, NULL, NULL, NULL);
    }
    fs512_medium_inv_f32(d, inv);
    return 1;
}

/* y = e * inv[row] for a block of 16 rows of n, with ordinary stores (e may be y). */
static inline void fs512_medium_scale_f32(const float *e, const float inv[16], float *y, ptrdiff_t n)
{
    const ptrdiff_t full = n & ~(ptrdiff_t)15;
    const __mmask16 tail = fs512_mask16(n - full);
    for (int k = 0; k < 16; k++) {
        const __m512 s = _mm512_set1_ps(inv[k]);
        const float *er = e + k * n;
        float *yr = y + k * n;
        for (ptrdiff_t i = 0; i < full; i += 16) _mm512_storeu_ps(yr + i, _mm512_mul_ps(_mm512_loadu_ps(er + i), s));
        if (tail) _mm512_mask_storeu_ps(yr + full, tail, _mm512_mul_ps(_mm512_maskz_loadu_ps(tail, er + full), s));
    }
}

/* The same values, y = e * inv[row], with streaming stores (each row's head and tail that
   are not whole lines with ordinary stores). */
static inline void fs512_medium_stream_f32(const float *e, const float inv[16], float *y, ptrdiff_t n)
{
    for (int k = 0; k < 16; k++) {
        fs512_pending_f32 p;
        fs512_pending_begin_f32(&p, e + k * n, 0, inv[k], y + k * n, n, -1, 0, FS512_SCALE);
        fs512_pending_finish_f32(&p);
    }
}

/* ---- float32 softmax of medium rows on AMD Zen 4: the AVX2 blocks' values on 16 lanes ----
 * On Zen 4 float32 softmax rows of up to FS512_MEDIUM_MAX columns take the AVX2 kernels
 * (fs_activations.h, softmax_rows_f32_mixed): their table exp takes 7 FMA-pipe operations
 * for 8 lanes where the degree-5 polynomial took 9 (with vscalefps, which Zen 4 issues at
 * half the rate of an FMA; AVX-512's bounded rows now take the table exp too,
 * fs512_exp_spread_keep_ps).  Rows of whole vectors there go through softmax_medium_table_span
 * (fs_activations_impl.h): the same exps on 16 lanes (fs512_exp_table_spread_ps) and the sums
 * added in the AVX2 blocks' order (fs512_table_row_f32), hence the same bits as the AVX2
 * kernels, in the AVX-512 blocks' pipeline: block b's exps, block b + 1's max and min and
 * block b - 1's results in one pass, with twice the registers of AVX2.  float32 log_softmax's
 * rows of whole vectors do the same with the AVX2 batches' split sums
 * (log_softmax_medium_table_span, fs512_table_split_row_f32). */

/* The sum of a row's exps as fs256_exp_store_sum_lanes_f32 and fs256_exp_split_impl_f32 leave
   it (4 double lanes) from b, the 16-lane float sum of its vectors: lanes 0-7 are the AVX2
   loop's b0 (elements 16 i + l), 8-15 its b1 (16 i + 8 + l); each is widened in two halves
   and added, s0 + s1 last. */
FS512_INLINE __m256d fs512_table_sums(__m512 b)
{
    const __m512d d0 = _mm512_cvtps_pd(_mm512_castps512_ps256(b));
    const __m512d d1 = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(b), 1)));
    /* lanes 0-3: s0 = b0's halves added, 4-7: s1 = b1's */
    const __m512d s = _mm512_add_pd(_mm512_shuffle_f64x2(d0, d1, 0x44), _mm512_shuffle_f64x2(d0, d1, 0xEE));
    return _mm256_add_pd(_mm512_castpd512_pd256(s), _mm512_extractf64x4_pd(s, 1));
}

/* Row k of a block of softmax_medium_table_span: e = exp(x - m) for n = 16 v <= 128 elements
   (a row within FS_EXACT_SPREAD of its finite max m), returning the sum as
   fs256_exp_store_sum_lanes_f32 leaves it: its two 8-lane float sums (elements 16 i + l and
   16 i + 8 + l) are this vector's lanes 0-7 and 8-15, widened and added in its order.  With
   `yp` (or NULL), row k of the previous block is written a vector after each exp: yp = ep * a,
   with streaming stores (`stream`) or ordinary ones; with `pf` (or NULL), a line of it is
   prefetched into L2 after each exp. */
FS512_INLINE __m256d fs512_table_row_f32(const float *x, float m, float *e, ptrdiff_t n, const float *ep, float a,
                                        float *yp, int stream, const char *pf)
{
    const __m512 negm = _mm512_set1_ps(-m), va = _mm512_set1_ps(a);
    __m512 b = _mm512_setzero_ps();
    for (ptrdiff_t i = 0; i < n; i += 16) {
        const __m512 v = fs512_exp_table_spread_ps(_mm512_add_ps(_mm512_loadu_ps(x + i), negm));
        _mm512_store_ps(e + i, v);
        b = _mm512_add_ps(b, v);
        if (yp != NULL) {
            const __m512 w = _mm512_mul_ps(_mm512_load_ps(ep + i), va);
            if (stream) _mm512_stream_ps(yp + i, w);
            else _mm512_storeu_ps(yp + i, w);
        }
        if (pf != NULL) fs_prefetch_line(pf + 4 * i, 0);
    }
    return fs512_table_sums(b);
}

/* yp = tp - cp, a row of log_softmax_medium_table_span's results (tp = x - m, stored by
   fs512_table_split_row_f32: the AVX2 rows' (x - m) - c), with streaming stores or ordinary
   ones. */
FS512_INLINE void fs512_table_lsm_out_f32(const float *tp, float cp, float *yp, ptrdiff_t n, int stream)
{
    const __m512 vc = _mm512_set1_ps(cp);
    for (ptrdiff_t i = 0; i < n; i += 16) {
        const __m512 w = _mm512_sub_ps(_mm512_load_ps(tp + i), vc);
        if (stream) _mm512_stream_ps(yp + i, w);
        else _mm512_storeu_ps(yp + i, w);
    }
}

/* log_softmax's split sums of row k of a block of log_softmax_medium_table_span: the sum of
   exp(x - m) over x != m as fs256_exp_split_impl_f32 leaves it for a bounded row (the sums of
   fs512_table_row_f32 with the lanes at the max left out), *at_max counting x == m; t = x - m
   stored (in a scratch block in L1: the results are then one subtraction from aligned loads,
   measured 1.35-1.43x as fast in a C loop as recomputing them from x).  With `yp` (or NULL),
   row k of the previous block is written a vector after each exp: yp = tp - cp, with streaming
   stores (`stream`) or ordinary ones; `pf` as in fs512_table_row_f32. */
FS512_INLINE __m256d fs512_table_split_row_f32(const float *x, float m, float *t, ptrdiff_t n, double *at_max,
                                              const float *tp, float cp, float *yp, int stream, const char *pf)
{
    const __m512 negm = _mm512_set1_ps(-m), vm = _mm512_set1_ps(m);
    __m512 b = _mm512_setzero_ps();
    int count = 0;
    for (ptrdiff_t i = 0; i < n; i += 16) {
        const __m512 v = _mm512_loadu_ps(x + i), tv = _mm512_add_ps(v, negm);
        const __mmask16 q = _mm512_cmp_ps_mask(v, vm, _CMP_EQ_OQ);
        _mm512_store_ps(t + i, tv);
        b = _mm512_mask_add_ps(b, (__mmask16)~q, b, fs512_exp_table_spread_ps(tv));
        count += __builtin_popcount((unsigned)q);
        if (yp != NULL) fs512_table_lsm_out_f32(tp + i, cp, yp + i, 16, stream);
        if (pf != NULL) fs_prefetch_line(pf + 4 * i, 0);
    }
    *at_max = (double)count;
    return fs512_table_sums(b);
}

/* The 16 scales 1 / sum of a block of softmax_medium_table_span, as the AVX2 blocks divide
   (fs256_hsum4_pd: their lanes added in fs256_hsum_pd's order). */
FS512_INLINE void fs512_table_inv_f32(const __m256d d[16], float inv[16])
{
    const __m256d one = _mm256_set1_pd(1.0);
    for (int g = 0; g < 16; g += 4) _mm_storeu_ps(inv + g, _mm256_cvtpd_ps(_mm256_div_pd(one, fs256_hsum4_pd(d + g))));
}

/* Rows of n (a multiple of 16) that start h (1..15) elements before a cache line share a
   line with their neighbours: the last 16 - h elements of one row and the first h of the
   next.  Such a line is written as one streamed vector whose lanes take their own row's
   values: `kind` FS512_SCALE (src * a) or FS512_SUB_SUB ((src - m) - a), as the streaming
   writers give them, and NaN for a row marked `nan` (log_softmax's rows whose max is not
   finite). */
typedef struct {
    float m, a;
    int nan;
} fs512_row_values;

/* The values of the 16 elements v, lanes in `second` of row r1, the others of row r0. */
FS512_INLINE __m512 fs512_two_rows_value_ps(__m512 v, __mmask16 second, fs512_row_values r0, fs512_row_values r1,
                                            int kind)
{
    const __m512 negm = _mm512_mask_blend_ps(second, _mm512_set1_ps(-r0.m), _mm512_set1_ps(-r1.m));
    const __m512 a = _mm512_mask_blend_ps(second, _mm512_set1_ps(r0.a), _mm512_set1_ps(r1.a));
    const __mmask16 nan = (__mmask16)((r0.nan ? ~second : 0) | (r1.nan ? second : 0));
    return _mm512_mask_mov_ps(fs512_stream_value_ps(v, negm, a, kind), nan, _mm512_set1_ps(NAN));
}

/* The line at y (src: the same elements of the source) that ends row r0 and starts row r1. */
FS512_INLINE void fs512_seam_f32(const float *src, fs512_row_values r0, fs512_row_values r1, float *y, ptrdiff_t h,
                                 int kind)
{
    const __mmask16 second = (__mmask16)(0xFFFFu << (16 - h));
    _mm512_stream_ps(y, fs512_two_rows_value_ps(_mm512_loadu_ps(src), second, r0, r1, kind));
}

/* Before the whole lines of the first row of a block (r; src, y: its first elements): its
   first h values, streamed with the line carried from the block before (fs512_carry_f32,
   above), or an ordinary masked store when nothing is carried (the first block of a thread's
   rows, or the one after a block turned down). */
FS512_INLINE void fs512_seam_head_f32(fs512_carry_f32 *c, const float *src, fs512_row_values r, float *y, ptrdiff_t h,
                                      int kind)
{
    const __mmask16 second = (__mmask16)(0xFFFFu << (16 - h));
    if (c->y != NULL) {
        const __m512 head = fs512_two_rows_value_ps(_mm512_maskz_expandloadu_ps(second, src), second, r, r, kind);
        _mm512_stream_ps(c->y, _mm512_mask_blend_ps(second, _mm512_load_ps(c->v), head));
    } else {
        const __mmask16 m = fs512_mask16(h);
        _mm512_mask_storeu_ps(y, m, fs512_two_rows_value_ps(_mm512_maskz_loadu_ps(m, src), 0, r, r, kind));
    }
    c->y = NULL;
}

/* After the whole lines of row r (src, y: the element where its last line starts): that line,
   streamed with the first h values of the next row (*next), or for the last row of a block
   (next == NULL) its 16 - h values carried to the next block's first row. */
FS512_INLINE void fs512_seam_tail_f32(fs512_carry_f32 *c, const float *src, fs512_row_values r,
                                      const fs512_row_values *next, float *y, ptrdiff_t h, int kind)
{
    if (next != NULL) {
        fs512_seam_f32(src, r, *next, y, h, kind);
        return;
    }
    const __m512 v = _mm512_maskz_loadu_ps(fs512_mask16(16 - h), src);
    _mm512_store_ps(c->v, fs512_two_rows_value_ps(v, 0, r, r, kind));
    c->y = y;
    c->lanes = 16 - h;
}

/* ---------------------------------------------------------------- short rows
 *
 * Rows of at most FS512_SHORT_MAX elements are done a block of rows at a time (16 float32 /
 * 8 float64 rows, one per SIMD lane), so that no per-row horizontal reduction or scalar
 * log is paid.  Column j of the block is gathered (float32) or transposed in registers
 * (float64) for the max and sums (vertical, lane = row); the elementwise work runs over the
 * block's contiguous memory, with each lane's row max / scale fetched by a permutation.  A
 * row whose max is not finite is filled with NaN.
 */
#define FS512_SHORT_MAX 32

/* vfpclass categories: +inf (0x08) and -inf (0x10). */
#define FS512_CLASS_INF 0x18

/* log1p(u) for u >= 0 (NaN propagates): u = 2^e * m with m in [0.75, 1.5),
   log m = 2 atanh((m-1)/(m+1)); the rounding of 1 + u is corrected as in log1p's
   classic formulation log(w) * u / (w - 1). */
FS512_INLINE __m512 fs512_log1p_ps(__m512 u)
{
    const __m512 one = _mm512_set1_ps(1.0f);
    __m512 w = _mm512_add_ps(u, one);
    __m512 e = _mm512_getexp_ps(_mm512_mul_ps(w, _mm512_set1_ps(4.0f / 3.0f)));
    __m512 m = _mm512_scalef_ps(w, _mm512_sub_ps(_mm512_setzero_ps(), e));
    __m512 f = _mm512_div_ps(_mm512_sub_ps(m, one), _mm512_add_ps(m, one));
    __m512 f2 = _mm512_mul_ps(f, f);
    __m512 p = _mm512_set1_ps(1.0f / 9.0f);
    p = _mm512_fmadd_ps(p, f2, _mm512_set1_ps(1.0f / 7.0f));
    p = _mm512_fmadd_ps(p, f2, _mm512_set1_ps(1.0f / 5.0f));
    p = _mm512_fmadd_ps(p, f2, _mm512_set1_ps(1.0f / 3.0f));
    __m512 twof = _mm512_add_ps(f, f);
    __m512 logm = _mm512_fmadd_ps(_mm512_mul_ps(twof, f2), p, twof);
    __m512 logw = _mm512_fmadd_ps(e, _mm512_set1_ps(0.693147180559945309f), logm);
    __m512 wm1 = _mm512_sub_ps(w, one);
    __mmask16 exact = _mm512_cmp_ps_mask(wm1, _mm512_setzero_ps(), _CMP_EQ_OQ);
    return _mm512_mask_mov_ps(_mm512_mul_ps(logw, _mm512_div_ps(u, wm1)), exact, u);
}

/* With `accurate` (a constant after inlining; logsumexp's float64 result is m + log1p(u)),
   f = (m - 1) / (m + 1) to about half an ulp: m - 1 is exact (m in [0.75, 1.5)), m + 1 is
   d + dl exactly (TwoSum), and the quotient q's remainder is exact (FMA); the correction is
   ~2^-53 of f, so a 14-bit reciprocal of d is enough for it.  e * ln2 then adds its small
   part first (one rounding where the sum may cancel: e = 1, log m < 0), and the rounding of
   w = 1 + u is corrected by adding (u - (w - 1)) / w.  Against log1pl over u from 1e-20 to
   1e15: worst 1.73 ulp, mean 0.34; without: 3.71, 0.47 (libm's log1p 0.79, 0.25), and
   1.5-3.6% faster log_softmax (65536x10 float64, 16384x128 float32), whose results round
   the log once more. */
FS512_INLINE __m512d fs512_log1p_impl_pd(__m512d u, int accurate)
{
    const __m512d one = _mm512_set1_pd(1.0);
    __m512d w = _mm512_add_pd(u, one);
    __m512d e = _mm512_getexp_pd(_mm512_mul_pd(w, _mm512_set1_pd(4.0 / 3.0)));
    __m512d m = _mm512_scalef_pd(w, _mm512_sub_pd(_mm512_setzero_pd(), e));
    const __m512d num = _mm512_sub_pd(m, one), d = _mm512_add_pd(m, one);
    __m512d f = _mm512_div_pd(num, d);
    if (accurate) {
        const __m512d bb = _mm512_sub_pd(d, one);
        const __m512d dl = _mm512_add_pd(_mm512_sub_pd(one, _mm512_sub_pd(d, bb)), _mm512_sub_pd(m, bb));
        f = _mm512_fmadd_pd(_mm512_fnmadd_pd(f, dl, _mm512_fnmadd_pd(f, d, num)), _mm512_rcp14_pd(d), f);
    }
    __m512d f2 = _mm512_mul_pd(f, f);
    __m512d p = _mm512_set1_pd(1.0 / 23.0);
    p = _mm512_fmadd_pd(p, f2, _mm512_set1_pd(1.0 / 21.0));
    p = _mm512_fmadd_pd(p, f2, _mm512_set1_pd(1.0 / 19.0));
    p = _mm512_fmadd_pd(p, f2, _mm512_set1_pd(1.0 / 17.0));
    p = _mm512_fmadd_pd(p, f2, _mm512_set1_pd(1.0 / 15.0));
    p = _mm512_fmadd_pd(p, f2, _mm512_set1_pd(1.0 / 13.0));
    p = _mm512_fmadd_pd(p, f2, _mm512_set1_pd(1.0 / 11.0));
    p = _mm512_fmadd_pd(p, f2, _mm512_set1_pd(1.0 / 9.0));
    p = _mm512_fmadd_pd(p, f2, _mm512_set1_pd(1.0 / 7.0));
    p = _mm512_fmadd_pd(p, f2, _mm512_set1_pd(1.0 / 5.0));
    p = _mm512_fmadd_pd(p, f2, _mm512_set1_pd(1.0 / 3.0));
    __m512d twof = _mm512_add_pd(f, f);
    __m512d logm = _mm512_fmadd_pd(_mm512_mul_pd(twof, f2), p, twof);
    /* e * ln2 in two parts: e is a small integer, so e * LN2_HI is exact. */
    const __m512d hi = _mm512_set1_pd(6.93147180369123816490e-01), lo = _mm512_set1_pd(1.90821492927058770002e-10);
    __m512d logw = accurate ? _mm512_fmadd_pd(e, hi, _mm512_fmadd_pd(e, lo, logm))
                            : _mm512_fmadd_pd(e, lo, _mm512_fmadd_pd(e, hi, logm));
    __m512d wm1 = _mm512_sub_pd(w, one);
    __mmask8 exact = _mm512_cmp_pd_mask(wm1, _mm512_setzero_pd(), _CMP_EQ_OQ);
    /* a division in both: for a tiny u the correction is not small against the result */
    __m512d r = accurate ? _mm512_add_pd(logw, _mm512_div_pd(_mm512_sub_pd(u, wm1), w))
                         : _mm512_mul_pd(logw, _mm512_div_pd(u, wm1));
    return _mm512_mask_mov_pd(r, exact, u);
}

FS512_INLINE __m512d fs512_log1p_pd(__m512d u) { return fs512_log1p_impl_pd(u, 0); }
FS512_INLINE __m512d fs512_log1p_accurate_pd(__m512d u) { return fs512_log1p_impl_pd(u, 1); }

/* A block of short rows goes in two halves, software-pipelined: the first half of block b
   (its columns gathered (float32) or transposed (float64), max, exps; softmax stores its
   exps, log_softmax keeps their sum), then the second half of block b - 1 (softmax: read the
   stored exps by column and sum them, divide, scale; log_softmax: the log, then x - max -
   log).  Done at once (when both dtypes gathered), softmax's gathers read the exps
   stored just before them (gathered a block later, when those stores have completed, the
   same loads cost less: below), and the log's divisions and polynomial were one long
   dependency chain per block; a block later both overlap the next block's independent
   work.  C loop, rows of 10, new / old time: float64 softmax 0.87-0.89x in cache,
   0.91-0.92x at 65536 rows; float64 log_softmax 0.82-0.83x, 0.84x (0.54x at 3 columns);
   float32 log_softmax 0.88x, float32 softmax 0.97-0.98x (its 16-lane gathers dominate).
   Same operations in the same order: the same values. */
typedef struct {
    const void *x;
    void *y;
    __m512i mx, u; /* row max, and log_softmax's sum of exps less one (bits of the lanes) */
    uint16_t bad;  /* rows whose max is not finite */
} fs512_short_block;

/* The second half of a float32 block (see above); `b` with y == NULL: nothing to do. */
FS512_INLINE void fs512_short_finish_f32(const fs512_short_block *b, ptrdiff_t n, __m512i gidx, const __m512i *rowof,
                                         int log_out)
{
    if (!b->y) return;
    const float *xb = (const float *)b->x;
    float *yb = (float *)b->y;
    if (log_out) {
        const __m512 mx = _mm512_castsi512_ps(b->mx);
        const __m512 lse = fs512_log1p_ps(_mm512_castsi512_ps(b->u));
        for (ptrdiff_t k = 0; k < n; k++) {
            __m512 xm = _mm512_sub_ps(_mm512_loadu_ps(xb + 16 * k), _mm512_permutexvar_ps(rowof[k], mx));
            _mm512_storeu_ps(yb + 16 * k, _mm512_sub_ps(xm, _mm512_permutexvar_ps(rowof[k], lse)));
        }
    } else {
        __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
        for (ptrdiff_t j = 0; j < n; j++) {
            __m512 e = _mm512_i32gather_ps(gidx, yb + j, 4);
            if (j & 1) s1 = _mm512_add_ps(s1, e); else s0 = _mm512_add_ps(s0, e);
        }
        const __m512 inv = _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_add_ps(s0, s1));
        for (ptrdiff_t k = 0; k < n; k++)
            _mm512_storeu_ps(yb + 16 * k, _mm512_mul_ps(_mm512_loadu_ps(yb + 16 * k), _mm512_permutexvar_ps(rowof[k], inv)));
    }
    for (unsigned bad = b->bad; bad; bad &= bad - 1u) {
        int lane = __builtin_ctz(bad);
        for (ptrdiff_t j = 0; j < n; j++) yb[lane * n + j] = NAN;
    }
}

/* Softmax (log_out = 0) or log_softmax (log_out = 1) of rows of n <= FS512_SHORT_MAX
   elements, 16 rows at a time.  Returns how many rows it did (a multiple of 16).  Rows of up
   to 16 take a copy compiled for their length (fs512_short_rows_f32 below). */
FS512_INLINE ptrdiff_t fs512_short_rows_any_f32(const float *x, float *y, ptrdiff_t nrows, ptrdiff_t n, int log_out)
{
    const __mmask16 nonfinite_class = 0x99; /* QNaN | SNaN | +inf | -inf */
    __m512i rowof[FS512_SHORT_MAX];
    int32_t lanes[16 * FS512_SHORT_MAX];
    for (ptrdiff_t r = 0; r < 16; r++) /* lane of each element of a block: its row */
        for (ptrdiff_t j = 0; j < n; j++) lanes[r * n + j] = (int32_t)r;
    for (ptrdiff_t k = 0; k < n; k++) rowof[k] = _mm512_loadu_si512((const void *)(lanes + 16 * k));
    const __m512i gidx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                            _mm512_set1_epi32((int32_t)n));
    fs512_short_block prev = {0};
    ptrdiff_t r0 = 0;
    for (; r0 + 16 <= nrows; r0 += 16) {
        const float *xb = x + r0 * n;
        float *yb = y + r0 * n;
        __m512 v[FS512_SHORT_MAX];
        __m512 mx = _mm512_set1_ps(-INFINITY), mn = _mm512_set1_ps(INFINITY);
        for (ptrdiff_t j = 0; j < n; j++) {
            v[j] = _mm512_i32gather_ps(gidx, xb + j, 4);
            mx = _mm512_max_ps(mx, v[j]);
            if (!log_out) mn = _mm512_min_ps(mn, v[j]);
        }
        __mmask16 bad = _mm512_fpclass_ps_mask(mx, nonfinite_class);
        mx = _mm512_mask_mov_ps(mx, bad, _mm512_setzero_ps());
        const __m512 negm = _mm512_sub_ps(_mm512_setzero_ps(), mx);
        fs512_short_block cur = {xb, yb, _mm512_castps_si512(mx), _mm512_setzero_si512(), bad};
        if (log_out) {
            /* sum of exp over the non-max elements, and the count of max elements */
            __m512 rest0 = _mm512_setzero_ps(), rest1 = _mm512_setzero_ps(), cnt = _mm512_setzero_ps();
            for (ptrdiff_t j = 0; j < n; j++) {
                __mmask16 at_max = _mm512_cmp_ps_mask(v[j], mx, _CMP_EQ_OQ);
                /* only the sum (>= 1) needs these: no TwoSum (as fs512_exp_sum_split_store_f32) */
                __m512 e = _mm512_mask_mov_ps(fs512_exp_nonpos_ps(_mm512_add_ps(v[j], negm)), at_max, _mm512_setzero_ps());
                if (j & 1) rest1 = _mm512_add_ps(rest1, e); else rest0 = _mm512_add_ps(rest0, e);
                cnt = _mm512_mask_add_ps(cnt, at_max, cnt, _mm512_set1_ps(1.0f));
            }
            cur.u = _mm512_castps_si512(_mm512_add_ps(_mm512_sub_ps(cnt, _mm512_set1_ps(1.0f)), _mm512_add_ps(rest0, rest1)));
        } else {
            /* every row of the block within FS_EXACT_SPREAD of its max: no TwoSum (see
               fs512_exp_store_sum_fast_f32); a NaN or infinite row takes the exact branch */
            if (_mm512_cmp_ps_mask(_mm512_sub_ps(mx, mn), _mm512_set1_ps(FS_EXACT_SPREAD), _CMP_LE_OQ) == 0xFFFF) {
                for (ptrdiff_t k = 0; k < n; k++) {
                    __m512 nm = _mm512_permutexvar_ps(rowof[k], negm);
                    _mm512_storeu_ps(yb + 16 * k,
                                     fs512_exp_spread_keep_ps(_mm512_add_ps(_mm512_loadu_ps(xb + 16 * k), nm),
                                                              (__mmask16)0xFFFF));
                }
            } else {
                for (ptrdiff_t k = 0; k < n; k++) {
                    __m512 nm = _mm512_permutexvar_ps(rowof[k], negm);
                    _mm512_storeu_ps(yb + 16 * k, fs512_exp_minus_ps(_mm512_loadu_ps(xb + 16 * k), nm));
                }
            }
        }
        fs512_short_finish_f32(&prev, n, gidx, rowof, log_out);
        prev = cur;
    }
    fs512_short_finish_f32(&prev, n, gidx, rowof, log_out);
    return r0;
}

/* float64 blocks are transposed in registers, not gathered: Zen 4 gathers 8 doubles in about
   17 cycles.  A C loop alternating with the gathered kernel: 65536x10 log_softmax 0.64x the
   time; in L1, 0.73-0.91x at 3..32 columns, softmax 0.61-0.66x (in Python, one process: 0.59x
   and 0.68x at 65536x10, the cross-entropy 0.58x).  The 8x8 transpose: 8 unpacks, 8
   two-source permutations, 8 128-bit lane shuffles; where n is a constant (softmax's and
   log_softmax's rows of up to 16, not the cross-entropy's) the compiler drops the shuffles
   of columns past n. */
FS512_INLINE void fs512_transpose8_pd(__m512d *r)
{
    const __m512d t0 = _mm512_unpacklo_pd(r[0], r[1]), t1 = _mm512_unpackhi_pd(r[0], r[1]);
    const __m512d t2 = _mm512_unpacklo_pd(r[2], r[3]), t3 = _mm512_unpackhi_pd(r[2], r[3]);
    const __m512d t4 = _mm512_unpacklo_pd(r[4], r[5]), t5 = _mm512_unpackhi_pd(r[4], r[5]);
    const __m512d t6 = _mm512_unpacklo_pd(r[6], r[7]), t7 = _mm512_unpackhi_pd(r[6], r[7]);
    /* t0 = r0[0] r1[0] | r0[2] r1[2] | r0[4] r1[4] | r0[6] r1[6]; s0 = columns 0 and 4 of rows 0-3 */
    const __m512i lo = _mm512_setr_epi64(0, 1, 8, 9, 4, 5, 12, 13), hi = _mm512_setr_epi64(2, 3, 10, 11, 6, 7, 14, 15);
    const __m512d s0 = _mm512_permutex2var_pd(t0, lo, t2), s2 = _mm512_permutex2var_pd(t0, hi, t2);
    const __m512d s1 = _mm512_permutex2var_pd(t1, lo, t3), s3 = _mm512_permutex2var_pd(t1, hi, t3);
    const __m512d s4 = _mm512_permutex2var_pd(t4, lo, t6), s6 = _mm512_permutex2var_pd(t4, hi, t6);
    const __m512d s5 = _mm512_permutex2var_pd(t5, lo, t7), s7 = _mm512_permutex2var_pd(t5, hi, t7);
    r[0] = _mm512_shuffle_f64x2(s0, s4, 0x44), r[4] = _mm512_shuffle_f64x2(s0, s4, 0xEE);
    r[1] = _mm512_shuffle_f64x2(s1, s5, 0x44), r[5] = _mm512_shuffle_f64x2(s1, s5, 0xEE);
    r[2] = _mm512_shuffle_f64x2(s2, s6, 0x44), r[6] = _mm512_shuffle_f64x2(s2, s6, 0xEE);
    r[3] = _mm512_shuffle_f64x2(s3, s7, 0x44), r[7] = _mm512_shuffle_f64x2(s3, s7, 0xEE);
}

/* A block of 8 rows of n <= FS512_SHORT_MAX doubles at b, as columns c[0..n) (c[j]: column j,
   lane k = row k); the last group of columns read with masked loads (nothing past the block). */
FS512_INLINE void fs512_load_columns8_pd(const double *b, ptrdiff_t n, __m512d *c)
{
    const ptrdiff_t groups = (n + 7) / 8, last = n - 8 * (groups - 1); /* columns in the last group: 1..8 */
    for (ptrdiff_t g = 0; g < groups; g++) {
        __m512d r[8];
        for (int k = 0; k < 8; k++)
            r[k] = g + 1 < groups ? _mm512_loadu_pd(b + k * n + 8 * g) : _mm512_maskz_loadu_pd(fs512_mask8(last), b + k * n + 8 * g);
        fs512_transpose8_pd(r);
        for (int k = 0; k < 8 && 8 * g + k < n; k++) c[8 * g + k] = r[k];
    }
}

/* The second half of a float64 block (see above); `b` with y == NULL: nothing to do. */
FS512_INLINE void fs512_short_finish_f64(const fs512_short_block *b, ptrdiff_t n, const __m512i *rowof, int log_out)
{
    if (!b->y) return;
    const double *xb = (const double *)b->x;
    double *yb = (double *)b->y;
    if (log_out) {
        const __m512d mx = _mm512_castsi512_pd(b->mx);
        const __m512d lse = fs512_log1p_pd(_mm512_castsi512_pd(b->u));
        for (ptrdiff_t k = 0; k < n; k++) {
            __m512d xm = _mm512_sub_pd(_mm512_loadu_pd(xb + 8 * k), _mm512_permutexvar_pd(rowof[k], mx));
            _mm512_storeu_pd(yb + 8 * k, _mm512_sub_pd(xm, _mm512_permutexvar_pd(rowof[k], lse)));
        }
    } else {
        __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd(), e[FS512_SHORT_MAX];
        fs512_load_columns8_pd(yb, n, e);
        for (ptrdiff_t j = 0; j < n; j++) {
            if (j & 1) s1 = _mm512_add_pd(s1, e[j]); else s0 = _mm512_add_pd(s0, e[j]);
        }
        const __m512d inv = _mm512_div_pd(_mm512_set1_pd(1.0), _mm512_add_pd(s0, s1));
        for (ptrdiff_t k = 0; k < n; k++)
            _mm512_storeu_pd(yb + 8 * k, _mm512_mul_pd(_mm512_loadu_pd(yb + 8 * k), _mm512_permutexvar_pd(rowof[k], inv)));
    }
    for (unsigned bad = b->bad; bad; bad &= bad - 1u) {
        int lane = __builtin_ctz(bad);
        for (ptrdiff_t j = 0; j < n; j++) yb[lane * n + j] = NAN;
    }
}

FS512_INLINE ptrdiff_t fs512_short_rows_any_f64(const double *x, double *y, ptrdiff_t nrows, ptrdiff_t n, int log_out)
{
    const __mmask8 nonfinite_class = 0x99;
    __m512i rowof[FS512_SHORT_MAX];
    int64_t lanes[8 * FS512_SHORT_MAX];
    for (ptrdiff_t r = 0; r < 8; r++) /* lane of each element of a block: its row */
        for (ptrdiff_t j = 0; j < n; j++) lanes[r * n + j] = (int64_t)r;
    for (ptrdiff_t k = 0; k < n; k++) rowof[k] = _mm512_loadu_si512((const void *)(lanes + 8 * k));
    fs512_short_block prev = {0};
    ptrdiff_t r0 = 0;
    for (; r0 + 8 <= nrows; r0 += 8) {
        const double *xb = x + r0 * n;
        double *yb = y + r0 * n;
        __m512d v[FS512_SHORT_MAX];
        __m512d mx = _mm512_set1_pd(-INFINITY);
        fs512_load_columns8_pd(xb, n, v);
        for (ptrdiff_t j = 0; j < n; j++) mx = _mm512_max_pd(mx, v[j]);
        __mmask8 bad = _mm512_fpclass_pd_mask(mx, nonfinite_class);
        mx = _mm512_mask_mov_pd(mx, bad, _mm512_setzero_pd());
        fs512_short_block cur = {xb, yb, _mm512_castpd_si512(mx), _mm512_setzero_si512(), bad};
        if (log_out) {
            __m512d rest0 = _mm512_setzero_pd(), rest1 = _mm512_setzero_pd(), cnt = _mm512_setzero_pd();
            for (ptrdiff_t j = 0; j < n; j++) {
                __mmask8 at_max = _mm512_cmp_pd_mask(v[j], mx, _CMP_EQ_OQ);
                __m512d e = _mm512_mask_mov_pd(fs512_exp_nonpos_keep_pd(_mm512_sub_pd(v[j], mx), 0xFF), at_max, _mm512_setzero_pd());
                if (j & 1) rest1 = _mm512_add_pd(rest1, e); else rest0 = _mm512_add_pd(rest0, e);
                cnt = _mm512_mask_add_pd(cnt, at_max, cnt, _mm512_set1_pd(1.0));
            }
            cur.u = _mm512_castpd_si512(_mm512_add_pd(_mm512_sub_pd(cnt, _mm512_set1_pd(1.0)), _mm512_add_pd(rest0, rest1)));
        } else {
            for (ptrdiff_t k = 0; k < n; k++) {
                __m512d m = _mm512_permutexvar_pd(rowof[k], mx);
                _mm512_storeu_pd(yb + 8 * k, fs512_exp_nonpos_keep_pd(_mm512_sub_pd(_mm512_loadu_pd(xb + 8 * k), m), 0xFF));
            }
        }
        fs512_short_finish_f64(&prev, n, rowof, log_out);
        prev = cur;
    }
    fs512_short_finish_f64(&prev, n, rowof, log_out);
    return r0;
}

/* The short-row entries: rows of 1..16 elements run a copy of the kernel compiled with n (and
   log_out) constants, as the AVX2 short rows do (FS256_CASES_* of fs_avx2.h), so that a block's
   columns stay in registers and every loop over them is unrolled; the same operations in the
   same order, so the same values.  Zen 4, one process alternating with the kernel taking n at
   run time: see the README (AMD EPYC Zen 4 section). */
static inline ptrdiff_t fs512_short_rows_f32(const float *x, float *y, ptrdiff_t nrows, ptrdiff_t n, int log_out)
{
#define FS512_CASE(k) case k: return log_out ? fs512_short_rows_any_f32(x, y, nrows, k, 1) : fs512_short_rows_any_f32(x, y, nrows, k, 0);
    switch (n) { FS256_CASES_1_2(FS512_CASE) FS256_CASES_3_7(FS512_CASE) FS256_CASES_8_16(FS512_CASE) default: break; }
#undef FS512_CASE
    return fs512_short_rows_any_f32(x, y, nrows, n, log_out);
}

static inline ptrdiff_t fs512_short_rows_f64(const double *x, double *y, ptrdiff_t nrows, ptrdiff_t n, int log_out)
{
#define FS512_CASE(k) case k: return log_out ? fs512_short_rows_any_f64(x, y, nrows, k, 1) : fs512_short_rows_any_f64(x, y, nrows, k, 0);
    switch (n) { FS256_CASES_1_2(FS512_CASE) FS256_CASES_3_7(FS512_CASE) FS256_CASES_8_16(FS512_CASE) default: break; }
#undef FS512_CASE
    return fs512_short_rows_any_f64(x, y, nrows, n, log_out);
}


/* Cross-entropy with class-index targets, no label smoothing, for rows of n <= FS512_SHORT_MAX
   classes, 16 rows at a time (lane = row; see the short-row note above).  Per row: loss =
   w_t (lse + m - x_t), written to row_loss (0 for an ignored row: target outside [0, n); NaN
   for a row whose max is not finite).  With grad != NULL: grad = gs w_t (softmax - onehot),
   zero rows for ignored targets; p_t - 1 is taken as -rest/s when x_t is the only maximum,
   where it would cancel (the target column is NaN where w_t gs is infinite).  Returns how
   many rows it did (a multiple of 16). */
static inline ptrdiff_t fs512_ce_short_rows_f32(const float *x, const int64_t *target, const float *w,
                                                ptrdiff_t nrows, ptrdiff_t n, float *grad, double gs,
                                                double *row_loss)
{
    const __mmask16 nonfinite_class = 0x99;
    __m512i rowof[FS512_SHORT_MAX];
    int32_t lanes[16 * FS512_SHORT_MAX];
    float scratch[16 * FS512_SHORT_MAX];
    for (ptrdiff_t r = 0; r < 16; r++) /* lane of each element of a block: its row */
        for (ptrdiff_t j = 0; j < n; j++) lanes[r * n + j] = (int32_t)r;
    for (ptrdiff_t k = 0; k < n; k++) rowof[k] = _mm512_loadu_si512((const void *)(lanes + 16 * k));
    const __m512i gidx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                            _mm512_set1_epi32((int32_t)n));
    const __m512i zero64 = _mm512_setzero_si512(), n64 = _mm512_set1_epi64((long long)n);
    const __m512 one = _mm512_set1_ps(1.0f), zero = _mm512_setzero_ps();
    ptrdiff_t r0 = 0;
    for (; r0 + 16 <= nrows; r0 += 16) {
        const float *xb = x + r0 * n;
        float *gb = grad != NULL ? grad + r0 * n : scratch;
        /* targets: valid where 0 <= t < n, compared in 64 bits */
        __m512i tlo = _mm512_loadu_si512((const void *)(target + r0));
        __m512i thi = _mm512_loadu_si512((const void *)(target + r0 + 8));
        __mmask8 vlo = _mm512_cmp_epi64_mask(tlo, zero64, _MM_CMPINT_NLT) & _mm512_cmp_epi64_mask(tlo, n64, _MM_CMPINT_LT);
        __mmask8 vhi = _mm512_cmp_epi64_mask(thi, zero64, _MM_CMPINT_NLT) & _mm512_cmp_epi64_mask(thi, n64, _MM_CMPINT_LT);
        __mmask16 valid = (__mmask16)(vlo | ((unsigned)vhi << 8));
        __m512i t32 = _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi64_epi32(tlo)), _mm512_cvtepi64_epi32(thi), 1);
        t32 = _mm512_maskz_mov_epi32(valid, t32);
        const __m512i tidx = _mm512_add_epi32(gidx, t32);

        __m512 v[FS512_SHORT_MAX];
        __m512 mx = _mm512_set1_ps(-INFINITY);
        for (ptrdiff_t j = 0; j < n; j++) {
            v[j] = _mm512_i32gather_ps(gidx, xb + j, 4);
            mx = _mm512_max_ps(mx, v[j]);
        }
        __mmask16 bad = _mm512_fpclass_ps_mask(mx, nonfinite_class);
        mx = _mm512_mask_mov_ps(mx, bad, zero);
        const __m512 negm = _mm512_sub_ps(zero, mx);
        /* the target logits, read before gb (which may be xb itself: out=logits) is written */
        const __m512 xt = _mm512_mask_i32gather_ps(zero, valid, tidx, xb, 4);
        for (ptrdiff_t k = 0; k < n; k++) {
            __m512 nm = _mm512_permutexvar_ps(rowof[k], negm);
            _mm512_storeu_ps(gb + 16 * k, fs512_exp_nonpos_ps(_mm512_add_ps(_mm512_loadu_ps(xb + 16 * k), nm)));
        }
        __m512 rest0 = zero, rest1 = zero, cnt = zero;
        for (ptrdiff_t j = 0; j < n; j++) {
            __m512 e = _mm512_i32gather_ps(gidx, gb + j, 4);
            __mmask16 at_max = _mm512_cmp_ps_mask(v[j], mx, _CMP_EQ_OQ);
            if (j & 1) rest1 = _mm512_mask_add_ps(rest1, (__mmask16)~at_max, rest1, e);
            else rest0 = _mm512_mask_add_ps(rest0, (__mmask16)~at_max, rest0, e);
            cnt = _mm512_mask_add_ps(cnt, at_max, cnt, one);
        }
        const __m512 rest = _mm512_add_ps(_mm512_sub_ps(cnt, one), _mm512_add_ps(rest0, rest1));
        const __m512 lse = fs512_log1p_ps(rest);
        const __m512 wt = w != NULL ? _mm512_mask_i32gather_ps(zero, valid, t32, w, 4) : _mm512_maskz_mov_ps(valid, one);
        const __m512 nll = _mm512_add_ps(lse, _mm512_sub_ps(mx, xt));
        __m512 loss = _mm512_maskz_mul_ps(valid, wt, nll);
        /* an infinite w_t at a row's max whose sum rounds to 1: torch's -log p_t is 0 (weighted_nll) */
        const __mmask16 nll0 = _mm512_fpclass_ps_mask(wt, FS512_CLASS_INF) & _mm512_cmp_ps_mask(xt, mx, _CMP_EQ_OQ) &
                               _mm512_cmp_ps_mask(_mm512_add_ps(one, rest), one, _CMP_EQ_OQ);
        loss = _mm512_mask_mul_ps(loss, valid & nll0, wt, zero);
        loss = _mm512_mask_mov_ps(loss, bad & valid, _mm512_set1_ps(NAN));
        _mm512_storeu_pd(row_loss + r0, _mm512_cvtps_pd(_mm512_castps512_ps256(loss)));
        _mm512_storeu_pd(row_loss + r0 + 8,
                         _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(loss), 1))));
        if (grad != NULL) {
            const __m512 s = _mm512_add_ps(one, rest);
            const __m512 wgs = _mm512_mul_ps(wt, _mm512_set1_ps((float)gs));
            const __m512 k1 = _mm512_div_ps(wgs, s);
            const __m512 et = _mm512_mask_i32gather_ps(zero, valid, tidx, gb, 4);
            __m512 pt1 = _mm512_sub_ps(_mm512_div_ps(et, s), one);
            __mmask16 sole_max = _mm512_cmp_ps_mask(xt, mx, _CMP_EQ_OQ) & _mm512_cmp_ps_mask(cnt, one, _CMP_EQ_OQ);
            pt1 = _mm512_mask_mov_ps(pt1, sole_max, _mm512_div_ps(_mm512_sub_ps(zero, rest), s));
            for (ptrdiff_t k = 0; k < n; k++)
                _mm512_storeu_ps(gb + 16 * k, _mm512_mul_ps(_mm512_loadu_ps(gb + 16 * k), _mm512_permutexvar_ps(rowof[k], k1)));
            /* NaN where w_t gs is infinite, as torch (fs_losses_impl.h, target_grad) */
            const __m512 gt = _mm512_mask_mov_ps(_mm512_mul_ps(wgs, pt1), _mm512_fpclass_ps_mask(wgs, FS512_CLASS_INF),
                                                 _mm512_set1_ps(NAN));
            _mm512_mask_i32scatter_ps(gb, valid & (__mmask16)~bad, tidx, gt, 4);
            __mmask16 fix = (__mmask16)(~valid | bad);
            while (fix) {
                int lane = __builtin_ctz(fix);
                fix &= (__mmask16)(fix - 1);
                float fill = (valid >> lane) & 1 ? NAN : 0.0f;
                for (ptrdiff_t j = 0; j < n; j++) gb[lane * n + j] = fill;
            }
        }
    }
    return r0;
}

static inline ptrdiff_t fs512_ce_short_rows_f64(const double *x, const int64_t *target, const double *w,
                                                ptrdiff_t nrows, ptrdiff_t n, double *grad, double gs,
                                                double *row_loss)
{
    const __mmask8 nonfinite_class = 0x99;
    __m512i rowof[FS512_SHORT_MAX];
    int64_t lanes[8 * FS512_SHORT_MAX];
    double scratch[8 * FS512_SHORT_MAX];
    for (ptrdiff_t r = 0; r < 8; r++) /* lane of each element of a block: its row */
        for (ptrdiff_t j = 0; j < n; j++) lanes[r * n + j] = (int64_t)r;
    for (ptrdiff_t k = 0; k < n; k++) rowof[k] = _mm512_loadu_si512((const void *)(lanes + 8 * k));
    const __m256i gidx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32((int32_t)n));
    const __m512i zero64 = _mm512_setzero_si512(), n64 = _mm512_set1_epi64((long long)n);
    const __m512d one = _mm512_set1_pd(1.0), zero = _mm512_setzero_pd();
    ptrdiff_t r0 = 0;
    for (; r0 + 8 <= nrows; r0 += 8) {
        const double *xb = x + r0 * n;
        double *gb = grad != NULL ? grad + r0 * n : scratch;
        __m512i t64 = _mm512_loadu_si512((const void *)(target + r0));
        __mmask8 valid = _mm512_cmp_epi64_mask(t64, zero64, _MM_CMPINT_NLT) & _mm512_cmp_epi64_mask(t64, n64, _MM_CMPINT_LT);
        __m256i t32 = _mm256_maskz_mov_epi32(valid, _mm512_cvtepi64_epi32(t64));
        const __m256i tidx = _mm256_add_epi32(gidx, t32);

        __m512d v[FS512_SHORT_MAX];
        __m512d mx = _mm512_set1_pd(-INFINITY);
        fs512_load_columns8_pd(xb, n, v);
        for (ptrdiff_t j = 0; j < n; j++) mx = _mm512_max_pd(mx, v[j]);
        __mmask8 bad = _mm512_fpclass_pd_mask(mx, nonfinite_class);
        mx = _mm512_mask_mov_pd(mx, bad, zero);
        /* the target logits, read before gb (which may be xb itself: out=logits) is written */
        const __m512d xt = _mm512_mask_i32gather_pd(zero, valid, tidx, xb, 8);
        for (ptrdiff_t k = 0; k < n; k++) {
            __m512d m = _mm512_permutexvar_pd(rowof[k], mx);
            _mm512_storeu_pd(gb + 8 * k, fs512_exp_nonpos_keep_pd(_mm512_sub_pd(_mm512_loadu_pd(xb + 8 * k), m), 0xFF));
        }
        __m512d rest0 = zero, rest1 = zero, cnt = zero, ec[FS512_SHORT_MAX];
        fs512_load_columns8_pd(gb, n, ec);
        for (ptrdiff_t j = 0; j < n; j++) {
            const __m512d e = ec[j];
            __mmask8 at_max = _mm512_cmp_pd_mask(v[j], mx, _CMP_EQ_OQ);
            if (j & 1) rest1 = _mm512_mask_add_pd(rest1, (__mmask8)~at_max, rest1, e);
            else rest0 = _mm512_mask_add_pd(rest0, (__mmask8)~at_max, rest0, e);
            cnt = _mm512_mask_add_pd(cnt, at_max, cnt, one);
        }
        const __m512d rest = _mm512_add_pd(_mm512_sub_pd(cnt, one), _mm512_add_pd(rest0, rest1));
        const __m512d lse = fs512_log1p_pd(rest);
        const __m512d wt = w != NULL ? _mm512_mask_i32gather_pd(zero, valid, t32, w, 8) : _mm512_maskz_mov_pd(valid, one);
        const __m512d nll = _mm512_add_pd(lse, _mm512_sub_pd(mx, xt));
        __m512d loss = _mm512_maskz_mul_pd(valid, wt, nll);
        const __mmask8 nll0 = _mm512_fpclass_pd_mask(wt, FS512_CLASS_INF) & _mm512_cmp_pd_mask(xt, mx, _CMP_EQ_OQ) &
                              _mm512_cmp_pd_mask(_mm512_add_pd(one, rest), one, _CMP_EQ_OQ);
        loss = _mm512_mask_mul_pd(loss, valid & nll0, wt, zero);
        loss = _mm512_mask_mov_pd(loss, bad & valid, _mm512_set1_pd(NAN));
        _mm512_storeu_pd(row_loss + r0, loss);
        if (grad != NULL) {
            const __m512d s = _mm512_add_pd(one, rest);
            const __m512d wgs = _mm512_mul_pd(wt, _mm512_set1_pd(gs));
            const __m512d k1 = _mm512_div_pd(wgs, s);
            const __m512d et = _mm512_mask_i32gather_pd(zero, valid, tidx, gb, 8);
            __m512d pt1 = _mm512_sub_pd(_mm512_div_pd(et, s), one);
            __mmask8 sole_max = _mm512_cmp_pd_mask(xt, mx, _CMP_EQ_OQ) & _mm512_cmp_pd_mask(cnt, one, _CMP_EQ_OQ);
            pt1 = _mm512_mask_mov_pd(pt1, sole_max, _mm512_div_pd(_mm512_sub_pd(zero, rest), s));
            for (ptrdiff_t k = 0; k < n; k++)
                _mm512_storeu_pd(gb + 8 * k, _mm512_mul_pd(_mm512_loadu_pd(gb + 8 * k), _mm512_permutexvar_pd(rowof[k], k1)));
            const __m512d gt = _mm512_mask_mov_pd(_mm512_mul_pd(wgs, pt1), _mm512_fpclass_pd_mask(wgs, FS512_CLASS_INF),
                                                  _mm512_set1_pd(NAN));
            _mm512_mask_i32scatter_pd(gb, valid & (__mmask8)~bad, tidx, gt, 8);
            __mmask8 fix = (__mmask8)(~valid | bad);
            while (fix) {
                int lane = __builtin_ctz(fix);
                fix &= (__mmask8)(fix - 1);
                double fill = (valid >> lane) & 1 ? NAN : 0.0;
                for (ptrdiff_t j = 0; j < n; j++) gb[lane * n + j] = fill;
            }
        }
    }
    return r0;
}

#pragma GCC pop_options
#endif /* FS_X86_MULTIVERSION */
#endif /* FS_AVX512_H */
