/*
 * fs_avx2_stream_impl.h -- streamed rows on AVX2, for one element type: included by
 * fs_activations_impl.h (softmax_like_stream_span; softmax_medium_slice_n and
 * log_softmax_medium_stream_span_n take only stream_lines, whole rows at once) and
 * fs_losses_impl.h (the cross-entropy gradient, ce_index_row_plain) under FS_USE_AVX2, with
 * FS_T, FS_SUF, FS_IS_F32 and FS_FN defined.  Guarded per element type (FS256_STREAM_F32 /
 * _F64), so that a translation unit including both fs_activations.h and fs_losses.h gets one
 * copy of each.
 *
 * A pending row (pending_row) is y = src * a (softmax: src the row's exps in a scratch row,
 * two in turn; the cross-entropy gradient: the same, with the target column `patch` set to
 * patch_value) or (src - m) - a (log_softmax: src = x): the values the in-cache paths write.
 * Its elements before y's first 64-byte boundary are written when it starts (ordinary
 * stores), then whole lines with streaming stores, one line per line of the next row's exp
 * pass (piped_sums); pending_finish writes the lines left and the partial last line
 * (ordinary stores).  Rows that share a line therefore meet in ordinary stores, and no line
 * is written both ways.  The sums are those of the one-row kernels, in the same order
 * (FS_CHUNK pieces; float32 in blocks of 128 lane-wise, float64 straight into two double
 * accumulators): the same bits.
 */
#if FS_IS_F32 ? !defined(FS256_STREAM_F32) : !defined(FS256_STREAM_F64)
#if FS_IS_F32
#define FS256_STREAM_F32
#else
#define FS256_STREAM_F64
#endif
#if FS_IS_F32
#define FS256_V __m256
#define FS256_LANES 8
#define FS256_ADD _mm256_add_ps
#define FS256_SUB _mm256_sub_ps
#define FS256_MUL _mm256_mul_ps
#define FS256_MAX _mm256_max_ps
#define FS256_MIN _mm256_min_ps
#define FS256_AND _mm256_and_ps
#define FS256_ANDNOT _mm256_andnot_ps
#define FS256_CMPEQ(a, b) _mm256_cmp_ps(a, b, _CMP_EQ_OQ)
#define FS256_SET1 _mm256_set1_ps
#define FS256_SETZERO _mm256_setzero_ps
#define FS256_LOADU _mm256_loadu_ps
#define FS256_STOREU _mm256_storeu_ps
#define FS256_STREAM _mm256_stream_ps
#define FS256_TAIL_MASK fs256_tail_mask32
#define FS256_MASKF _mm256_castsi256_ps
#define FS256_CASTSI _mm256_castps_si256
#define FS256_MASKLOAD _mm256_maskload_ps
#define FS256_WIDEN_ADD fs256_widen_add
#define FS256_HMAX fs256_hmax_ps
#define FS256_HMIN fs256_hmin_ps
#define FS256_EXP_SPLIT(t, bounded) ((bounded) ? fs256_exp_spread_ps(t) : fs256_exp_nonpos_ps(t))
#define FS256_EXP_SOFTMAX(x, negm, bounded) fs256_exp_x_minus_m_ps(x, negm, !(bounded))
#define FS256_SPREAD FS_EXACT_SPREAD
#else
#define FS256_V __m256d
#define FS256_LANES 4
#define FS256_ADD _mm256_add_pd
#define FS256_SUB _mm256_sub_pd
#define FS256_MUL _mm256_mul_pd
#define FS256_MAX _mm256_max_pd
#define FS256_MIN _mm256_min_pd
#define FS256_AND _mm256_and_pd
#define FS256_ANDNOT _mm256_andnot_pd
#define FS256_CMPEQ(a, b) _mm256_cmp_pd(a, b, _CMP_EQ_OQ)
#define FS256_SET1 _mm256_set1_pd
#define FS256_SETZERO _mm256_setzero_pd
#define FS256_LOADU _mm256_loadu_pd
#define FS256_STOREU _mm256_storeu_pd
#define FS256_STREAM _mm256_stream_pd
#define FS256_TAIL_MASK fs256_tail_mask64
#define FS256_MASKF _mm256_castsi256_pd
#define FS256_CASTSI _mm256_castpd_si256
#define FS256_MASKLOAD _mm256_maskload_pd
#define FS256_WIDEN_ADD _mm256_add_pd
#define FS256_HMAX fs256_hmax_pd
#define FS256_HMIN fs256_hmin_pd
#define FS256_EXP_SPLIT(t, bounded) fs256_exp_t_pd(t, bounded)
#define FS256_EXP_SOFTMAX(x, negm, bounded) fs256_exp_t_pd(_mm256_add_pd(x, negm), bounded)
#define FS256_SPREAD FS_SPREAD_F64
#endif
#define FS256_LINE (64 / (ptrdiff_t)sizeof(FS_T)) /* elements per 64-byte line: two vectors */

typedef struct {
    const FS_T *src;
    FS_T *y;
    ptrdiff_t j, end, n; /* lines [j, end) still to stream, then [end, n) */
    ptrdiff_t patch;     /* the element set to patch_value (the target column), or -1 */
    FS_T m, a, patch_value;
    int log_out;
} FS_FN(pending_row);

/* What piped_sums computes: softmax's exps and their sum, log_softmax's split sums, or the
   cross-entropy's exps with the split sums. */
#ifndef FS256_PIPE_SOFTMAX
#define FS256_PIPE_SOFTMAX 0
#define FS256_PIPE_LOG_SOFTMAX 1
#define FS256_PIPE_CE 2
#endif

FS256_INLINE FS256_V FS_FN(pending_value)(FS256_V v, FS256_V negm, FS256_V a, int log_out)
{
    return log_out ? FS256_SUB(FS256_ADD(v, negm), a) : FS256_MUL(v, a);
}

static inline void FS_FN(pending_begin)(FS_FN(pending_row) *p, const FS_T *src, FS_T m, FS_T a, FS_T *y,
                                        ptrdiff_t n, int log_out, ptrdiff_t patch, FS_T patch_value)
{
    const uintptr_t addr = (uintptr_t)y;
    ptrdiff_t head = (ptrdiff_t)(((64 - (addr & 63)) & 63) / sizeof(FS_T));
    if (addr % sizeof(FS_T) != 0 || head > n) head = n;
    for (ptrdiff_t i = 0; i < head; i++) y[i] = i == patch ? patch_value : log_out ? (src[i] + -m) - a : src[i] * a;
    *p = (FS_FN(pending_row)){src, y, head, head + (n - head) / FS256_LINE * FS256_LINE, n, patch, m, a, patch_value,
                              log_out};
}

/* v (elements j0 .. j0 + lanes - 1) with the patch element, if it is among them, set. */
FS256_INLINE FS256_V FS_FN(pending_patch)(FS256_V v, FS_FN(pending_row) p, ptrdiff_t j0)
{
    if ((size_t)(p.patch - j0) >= (size_t)FS256_LANES) return v;
    FS_T lanes[FS256_LANES];
    FS256_STOREU(lanes, v);
    lanes[p.patch - j0] = p.patch_value;
    return FS256_LOADU(lanes);
}

/* One line of the pending row (a copy of the record, kept in registers), if any is left.
   `log_out` is the row's p.log_out and `patched` is 0 when it has no patch element, as
   constants where the caller knows them (piped_sums: from its mode), so that the loop tests
   neither. */
FS256_INLINE ptrdiff_t FS_FN(pending_advance)(FS_FN(pending_row) p, FS256_V negm, FS256_V va, ptrdiff_t j,
                                              int log_out, int patched)
{
    if (j < p.end) {
        FS256_V v0 = FS_FN(pending_value)(FS256_LOADU(p.src + j), negm, va, log_out);
        FS256_V v1 = FS_FN(pending_value)(FS256_LOADU(p.src + j + FS256_LANES), negm, va, log_out);
        if (patched && (size_t)(p.patch - j) < (size_t)FS256_LINE) { /* the target column's line */
            v0 = FS_FN(pending_patch)(v0, p, j);
            v1 = FS_FN(pending_patch)(v1, p, j + FS256_LANES);
        }
        FS256_STREAM(p.y + j, v0);
        FS256_STREAM(p.y + j + FS256_LANES, v1);
        j += FS256_LINE;
    }
    return j;
}

/* y = src * a (softmax, log_out 0) or (src - m) - a (log_softmax, log_out 1: the values the
   pending rows write) with streaming stores, for y on a 64-byte line and n a whole number
   of lines (rows of softmax's streamed medium blocks, src their exps in L1, and of
   log_softmax's streamed batches, src = x); `log_out` a constant. */
FS256_INLINE void FS_FN(stream_lines)(const FS_T *src, FS_T m, FS_T a, FS_T *y, ptrdiff_t n, int log_out)
{
    const FS256_V negm = FS256_SET1(-m), va = FS256_SET1(a);
    for (ptrdiff_t j = 0; j < n; j += FS256_LINE) {
        FS256_STREAM(y + j, FS_FN(pending_value)(FS256_LOADU(src + j), negm, va, log_out));
        FS256_STREAM(y + j + FS256_LANES, FS_FN(pending_value)(FS256_LOADU(src + j + FS256_LANES), negm, va, log_out));
    }
}

/* The rest of a pending row; then nothing is pending. */
static inline void FS_FN(pending_finish)(FS_FN(pending_row) *p)
{
    const FS256_V negm = FS256_SET1(-p->m), va = FS256_SET1(p->a);
    ptrdiff_t j = p->j;
    if (p->log_out)
        while (j < p->end) j = FS_FN(pending_advance)(*p, negm, va, j, 1, 0);
    else if (p->patch < 0)
        while (j < p->end) j = FS_FN(pending_advance)(*p, negm, va, j, 0, 0);
    else
        while (j < p->end) j = FS_FN(pending_advance)(*p, negm, va, j, 0, 1);
    for (ptrdiff_t i = p->end; i < p->n; i++)
        p->y[i] = i == p->patch ? p->patch_value : p->log_out ? (p->src[i] + -p->m) - p->a : p->src[i] * p->a;
    p->j = p->end = p->n = 0;
}

/* Sums of a piece of row r (`mode`: softmax, its exps stored into e; log_softmax, the split
   sums, *at_max counting x == m; cross-entropy, both), advancing the pending row (row r - 1)
   by a line per line of the piece, taking the max and min of the same piece of row r + 1
   (`ahead`, when `scan`) into *amax, *amin, and asking for the same piece of row r + 2 (pf2)
   to be brought into cache (into L1 or L2, fs_prefetch_l1.  Into L2, when it was added, it
   made 4096x1000 float32 softmax take 0.80-0.84 ns an element against 0.92-1.08 without,
   256x50257 0.79-0.82 against 0.92-0.93, in alternating processes).
   `bounded`, `mode` and `scan` are constants after inlining. */
FS256_INLINE double FS_FN(piped_sums_impl)(const FS_T *x, FS_T m, FS_T *e, ptrdiff_t n, int bounded, int mode,
                                           int scan, double *at_max, FS_FN(pending_row) *pend, const FS_T *ahead,
                                           FS_T *amax, FS_T *amin, const FS_T *pf2)
{
    const int pf_l1 = fs_prefetch_l1(pf2, x);
    const FS256_V negm = FS256_SET1(-m), vm = FS256_SET1(m), one = FS256_SET1(1), zero = FS256_SETZERO();
    const FS256_V qnegm = FS256_SET1(-pend->m), qa = FS256_SET1(pend->a);
    FS256_V am = FS256_SET1(-INFINITY), an = FS256_SET1(INFINITY), cnt = zero;
    /* float64 log_softmax: the count of x == m in 64-bit integers (subtracting the all-ones compare:
       one operation, not two; 4096x1000 0.96-0.98x the time in a C loop), as fs256_exp_split_impl_f64;
       float32 log_softmax and cross-entropy in 32-bit integers (4096x1000 0.97-0.99x best,
       0.98x median); float64 cross-entropy keeps its double counts (the integer form measured
       1.05-1.14x there) */
    __m256i cnti = _mm256_setzero_si256();
#define FS256_PIPE_COUNT(q) \
    do { \
        if (!FS_IS_F32 && mode == FS256_PIPE_LOG_SOFTMAX) cnti = _mm256_sub_epi64(cnti, FS256_CASTSI(q)); \
        else if (FS_IS_F32) cnti = _mm256_sub_epi32(cnti, FS256_CASTSI(q)); \
        else cnt = FS256_ADD(cnt, FS256_AND(q, one)); \
    } while (0)
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
    ptrdiff_t i = 0, j = pend->j;
    while (i + FS256_LINE <= n) {
        FS256_V b0 = zero, b1 = zero;
        const ptrdiff_t end = i + FS_BLOCK <= n ? i + FS_BLOCK : n - n % FS256_LINE;
#if !FS_IS_F32
        /* float64: two lines at once, their four exps interleaved (fs256_exp4_t_pd), the
           sums, counts, pending lines, prefetches and max / min in the order of the loop below */
        for (; i + 2 * FS256_LINE <= end; i += 2 * FS256_LINE) {
            __m256d xv[4], ev[4];
            FS256_EACH4(xv[u] = FS256_LOADU(x + i + 4 * u); ev[u] = FS256_ADD(xv[u], negm));
            fs256_exp4_t_pd(ev, bounded);
            if (mode != FS256_PIPE_LOG_SOFTMAX) FS256_EACH4(FS256_STOREU(e + i + 4 * u, ev[u]));
            if (mode != FS256_PIPE_SOFTMAX) {
                FS256_EACH4(const FS256_V q = FS256_CMPEQ(xv[u], vm); ev[u] = FS256_ANDNOT(q, ev[u]);
                            FS256_PIPE_COUNT(q));
            }
            for (int l = 0; l < 2; l++) {
                s0 = FS256_ADD(s0, ev[2 * l]);
                s1 = FS256_ADD(s1, ev[2 * l + 1]);
                j = FS_FN(pending_advance)(*pend, qnegm, qa, j, mode == FS256_PIPE_LOG_SOFTMAX, mode == FS256_PIPE_CE);
                fs_prefetch_line(pf2 + i + l * FS256_LINE, pf_l1);
                if (scan) {
                    const FS256_V a0 = FS256_LOADU(ahead + i + l * FS256_LINE);
                    const FS256_V a1 = FS256_LOADU(ahead + i + l * FS256_LINE + FS256_LANES);
                    am = FS256_MAX(FS256_MAX(am, a0), a1);
                    an = FS256_MIN(FS256_MIN(an, a0), a1);
                }
            }
        }
#endif
        for (; i < end; i += FS256_LINE) {
            const FS256_V x0 = FS256_LOADU(x + i), x1 = FS256_LOADU(x + i + FS256_LANES);
            FS256_V e0, e1;
            if (mode != FS256_PIPE_SOFTMAX) {
                const FS256_V q0 = FS256_CMPEQ(x0, vm), q1 = FS256_CMPEQ(x1, vm);
                e0 = FS256_EXP_SPLIT(FS256_ADD(x0, negm), bounded);
                e1 = FS256_EXP_SPLIT(FS256_ADD(x1, negm), bounded);
                if (mode == FS256_PIPE_CE) {
                    FS256_STOREU(e + i, e0);
                    FS256_STOREU(e + i + FS256_LANES, e1);
                }
                e0 = FS256_ANDNOT(q0, e0);
                e1 = FS256_ANDNOT(q1, e1);
                FS256_PIPE_COUNT(q0);
                FS256_PIPE_COUNT(q1);
            } else {
                e0 = FS256_EXP_SOFTMAX(x0, negm, bounded);
                e1 = FS256_EXP_SOFTMAX(x1, negm, bounded);
                FS256_STOREU(e + i, e0);
                FS256_STOREU(e + i + FS256_LANES, e1);
            }
#if FS_IS_F32
            b0 = FS256_ADD(b0, e0);
            b1 = FS256_ADD(b1, e1);
#else /* float64 sums go straight into double, as the one-row kernels' do */
            s0 = FS256_ADD(s0, e0);
            s1 = FS256_ADD(s1, e1);
#endif
            j = FS_FN(pending_advance)(*pend, qnegm, qa, j, mode == FS256_PIPE_LOG_SOFTMAX, mode == FS256_PIPE_CE);
            fs_prefetch_line(pf2 + i, pf_l1);
            if (scan) {
                const FS256_V a0 = FS256_LOADU(ahead + i), a1 = FS256_LOADU(ahead + i + FS256_LANES);
                am = FS256_MAX(FS256_MAX(am, a0), a1);
                an = FS256_MIN(FS256_MIN(an, a0), a1);
            }
        }
#if FS_IS_F32
        s0 = FS256_WIDEN_ADD(s0, b0);
        s1 = FS256_WIDEN_ADD(s1, b1);
#else
        (void)b0;
        (void)b1;
#endif
    }
    for (; i < n; i += FS256_LANES) { /* the last piece, shorter than a line */
        const __m256i k = FS256_TAIL_MASK(n - i);
        const FS256_V km = FS256_MASKF(k), x0 = FS256_MASKLOAD(x + i, k);
        FS256_V e0;
        if (mode != FS256_PIPE_SOFTMAX) {
            const FS256_V q0 = FS256_AND(FS256_CMPEQ(x0, vm), km);
            e0 = FS256_AND(FS256_EXP_SPLIT(FS256_ADD(x0, negm), bounded), km);
            if (mode == FS256_PIPE_CE) FS256_STOREU(e + i, e0); /* the scratch row has room for whole vectors */
            e0 = FS256_ANDNOT(q0, e0);
            FS256_PIPE_COUNT(q0);
        } else {
            e0 = FS256_AND(FS256_EXP_SOFTMAX(x0, negm, bounded), km);
            FS256_STOREU(e + i, e0); /* the scratch row has room for whole vectors */
        }
        s0 = FS256_WIDEN_ADD(s0, e0);
    }
    pend->j = j;
    if (scan) {
        FS_T mx = FS256_HMAX(am), mn = FS256_HMIN(an);
        for (ptrdiff_t k = n - n % FS256_LINE; k < n; k++) {
            mx = ahead[k] > mx ? ahead[k] : mx;
            mn = ahead[k] < mn ? ahead[k] : mn;
        }
        *amax = mx;
        *amin = mn;
    }
#undef FS256_PIPE_COUNT
    if (!FS_IS_F32 && mode == FS256_PIPE_LOG_SOFTMAX) {
        *at_max = fs256_count_total(cnti);
    } else if (FS_IS_F32 && mode != FS256_PIPE_SOFTMAX) {
        *at_max = fs256_count_total32(cnti);
    } else if (mode != FS256_PIPE_SOFTMAX) {
        *at_max = fs256_hsum_pd(FS256_WIDEN_ADD(_mm256_setzero_pd(), cnt));
    }
    return fs256_hsum_pd(_mm256_add_pd(s0, s1));
}

static double FS_FN(piped_sums)(const FS_T *x, FS_T m, FS_T *e, ptrdiff_t n, int bounded, int mode,
                                double *at_max, FS_FN(pending_row) *pend, const FS_T *ahead, FS_T *amax, FS_T *amin,
                                const FS_T *pf2)
{
    /* no tests in the loop: without a row to prefetch the piece itself is (it is in L1);
       softmax and log_softmax without a row ahead scan the piece itself (*amax and *amin then
       unused); the cross-entropy without one (rows over FS_CE_SCAN_MAX_BYTES, the last row of
       a span) scans nothing, in a copy of the loop without the scan */
    if (pf2 == NULL) pf2 = x;
    const int ce_scan = ahead != NULL;
    if (ahead == NULL) ahead = x;
#define FS256_PIPE_CALL(B, M, S) FS_FN(piped_sums_impl)(x, m, e, n, B, M, S, at_max, pend, ahead, amax, amin, pf2)
    switch (mode) {
    case FS256_PIPE_LOG_SOFTMAX:
        return bounded ? FS256_PIPE_CALL(1, FS256_PIPE_LOG_SOFTMAX, 1) : FS256_PIPE_CALL(0, FS256_PIPE_LOG_SOFTMAX, 1);
    case FS256_PIPE_CE:
        if (ce_scan) return bounded ? FS256_PIPE_CALL(1, FS256_PIPE_CE, 1) : FS256_PIPE_CALL(0, FS256_PIPE_CE, 1);
        return bounded ? FS256_PIPE_CALL(1, FS256_PIPE_CE, 0) : FS256_PIPE_CALL(0, FS256_PIPE_CE, 0);
    default:
        return bounded ? FS256_PIPE_CALL(1, FS256_PIPE_SOFTMAX, 1) : FS256_PIPE_CALL(0, FS256_PIPE_SOFTMAX, 1);
    }
#undef FS256_PIPE_CALL
}

#undef FS256_V
#undef FS256_LANES
#undef FS256_ADD
#undef FS256_SUB
#undef FS256_MUL
#undef FS256_MAX
#undef FS256_MIN
#undef FS256_AND
#undef FS256_ANDNOT
#undef FS256_CMPEQ
#undef FS256_SET1
#undef FS256_SETZERO
#undef FS256_LOADU
#undef FS256_STOREU
#undef FS256_STREAM
#undef FS256_TAIL_MASK
#undef FS256_MASKF
#undef FS256_CASTSI
#undef FS256_MASKLOAD
#undef FS256_WIDEN_ADD
#undef FS256_HMAX
#undef FS256_HMIN
#undef FS256_EXP_SPLIT
#undef FS256_EXP_SOFTMAX
#undef FS256_SPREAD
#undef FS256_LINE
#endif /* per element type */
