/*
 * fs_activations_impl.h -- row kernels of softmax, log_softmax, logsumexp and their
 * backward passes, for one element type and one instruction set.
 *
 * Included by fs_activations.h with FS_T (float or double), FS_SUF (f32 or f64) and
 * FS_ISA (baseline, avx2, avx512) defined.  Every function works on C-contiguous rows of
 * `ncols` elements.  Sums run in blocks of FS_BLOCK elements: inside a block in FS_T
 * with one accumulator per SIMD lane (a loop the compiler vectorises), across blocks in
 * double, so the float32 error does not grow with the row length; a row's chunks
 * (FS_CHUNK) are added with compensation (fs_block_total), so neither does the float64
 * one.  Passes over a row: max (read), exp + store + sum (read, write), scale (in cache).
 * On AVX-512: results too large for the caches are written with streaming stores during
 * the next row's exp pass (softmax_like_stream_span); float32 softmax rows of 33..128 go
 * 16 rows a block (softmax_medium_span); short rows and log_softmax's medium rows have block
 * paths of their own.  Large float32 results in medium rows of a whole number of vectors are
 * streamed too, a block (batch) behind the sums (softmax_medium_stream_span,
 * log_softmax_medium_stream_span).  On AVX2: short rows 8 (float32) or 4 (float64) rows a
 * block, transposed in registers (fs_avx2.h), softmax's medium rows 8 rows a block
 * (softmax_medium_slice; large float32 results streamed a block behind), log_softmax's medium
 * rows and logsumexp's rows batched as on AVX-512 (large log_softmax results in rows of whole
 * lines streamed a batch behind, log_softmax_medium_stream_span; softmax's blocks and these
 * streamed batches compiled for their width at 64, 128 and 256 columns, FS256_POW2_WIDTH_CASES),
 * long rows of large results streamed (softmax_like_stream_span on fs_avx2_stream_impl.h's
 * pending rows); rows within a spread of their max take cheaper exps (row_max_bounded).
 * On AMD Zen 4 (the mixed tables of fs_activations.h) float32 softmax's and log_softmax's
 * medium rows of whole vectors take the AVX2 kernels' values on AVX-512 registers
 * (softmax_medium_table_span, log_softmax_medium_table_span).
 * A row whose max is not finite is all NaN (SPEC section 2).
 */
#define FS_FN(name) FS_CAT(FS_CAT(name, FS_SUF), FS_ISA)
#define FS_EXP FS_CAT(fs_exp, FS_SUF)
#define FS_TWO_SUM_ERR FS_CAT(fs_two_sum_err, FS_SUF)

/* ---- row primitives: portable versions (the compiler vectorises them) ---- */

static inline FS_T FS_FN(row_max)(const FS_T *restrict x, ptrdiff_t n)
{
    FS_T m = -(FS_T)INFINITY;
    FS_OMP_SIMD_MAX(m)
    for (ptrdiff_t i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}

/* y = exp(x - m) (the subtraction's rounding error fed back); returns sum(y). */
static inline double FS_FN(exp_store_sum)(const FS_T *x, FS_T m, FS_T *y, ptrdiff_t n)
{
    double s = 0.0;
    for (ptrdiff_t b = 0; b < n; b += FS_BLOCK) {
        ptrdiff_t end = b + FS_BLOCK < n ? b + FS_BLOCK : n;
        FS_T bs = 0;
        FS_OMP_SIMD_SUM(bs)
        for (ptrdiff_t i = b; i < end; i++) {
            FS_T t = x[i] - m;
            FS_T e = FS_EXP(t, FS_TWO_SUM_ERR(x[i], -m, t));
            y[i] = e;
            bs += e;
        }
        s += (double)bs;
    }
    return s;
}

/* Sum of exp(x - m) over x != m; *at_max counts x == m. */
static inline double FS_FN(exp_sum_split)(const FS_T *restrict x, FS_T m, ptrdiff_t n, double *at_max)
{
    double rest = 0.0, count = 0.0;
    for (ptrdiff_t b = 0; b < n; b += FS_BLOCK) {
        ptrdiff_t end = b + FS_BLOCK < n ? b + FS_BLOCK : n;
        FS_T brest = 0, bmax = 0;
        FS_OMP_SIMD_SUM2(brest, bmax)
        for (ptrdiff_t i = b; i < end; i++) {
            FS_T e = FS_EXP(x[i] - m, 0);
            int is_max = x[i] == m;
            brest += is_max ? (FS_T)0 : e;
            bmax += is_max ? (FS_T)1 : (FS_T)0;
        }
        rest += (double)brest;
        count += (double)bmax;
    }
    *at_max = count;
    return rest;
}

/* y = src * s (src may be y). */
static inline void FS_FN(scale)(const FS_T *src, FS_T s, FS_T *y, ptrdiff_t n)
{
    FS_OMP_SIMD
    for (ptrdiff_t i = 0; i < n; i++) y[i] = src[i] * s;
}

static inline void FS_FN(sub)(const FS_T *x, FS_T m, FS_T c, FS_T *y, ptrdiff_t n)
{
    FS_OMP_SIMD
    for (ptrdiff_t i = 0; i < n; i++) y[i] = (x[i] - m) - c;
}

/* On AVX-512 and AVX2 the hand-vectorised primitives of fs_avx512.h / fs_avx2.h take
   their place. */
#ifdef FS_USE_AVX512
#define FS_ROW_MAX FS_CAT(fs512_row_max, FS_SUF)
#define FS_EXP_STORE_SUM FS_CAT(fs512_exp_store_sum, FS_SUF)
#define FS_SCALE FS_CAT(fs512_scale, FS_SUF)
#define FS_ROW_MINMAX_F32 fs512_row_minmax_f32
#define FS_EXP_STORE_SUM_FAST_F32 fs512_exp_store_sum_fast_f32
#elif defined(FS_USE_AVX2)
/* rows within FS_EXACT_SPREAD (float32: no TwoSum) or FS_SPREAD_F64 (float64: no range test) */
#if FS_IS_F32
#define FS_EXP_STORE_SUM_BOUNDED fs256_exp_store_sum_fast_f32
#else
#define FS_EXP_STORE_SUM_BOUNDED fs256_exp_store_sum_bounded_f64
#endif
#define FS_ROW_MAX FS_CAT(fs256_row_max, FS_SUF)
#define FS_EXP_STORE_SUM FS_CAT(fs256_exp_store_sum, FS_SUF)
#define FS_SCALE FS_CAT(fs256_scale, FS_SUF)
#else
#define FS_ROW_MAX FS_FN(row_max)
#define FS_EXP_STORE_SUM FS_FN(exp_store_sum)
#define FS_EXP_SUM_SPLIT FS_FN(exp_sum_split)
#define FS_SCALE FS_FN(scale)
#define FS_SUB FS_FN(sub)
#endif

/* logsumexp's sums over n <= FS_CHUNK elements, in double whatever FS_T (its result can
   cancel, m + ln(sum) near 0, so float32 rows take their exps in double too): the sum of
   exp(x - m) over x != m, *at_max counting x == m.  On AVX-512 and AVX2 the float64 split sums
   of log_softmax (float32 elements widened as they are loaded): the loop below, left to the
   compiler there, took 4.5x their time (4096x1000 float32, 12.6 ms against 2.8; float64 13.4
   against 3.5).  Elsewhere that loop. */
static inline double FS_FN(lse_chunk_sums)(const FS_T *restrict x, ptrdiff_t n, double md, double *at_max)
{
#if defined(FS_USE_AVX512) && FS_IS_F32
    return fs512_exp_sum_split_widen_f32(x, md, n, at_max);
#elif defined(FS_USE_AVX512)
    return fs512_exp_sum_split_f64(x, md, n, at_max);
#elif defined(FS_USE_AVX2) && FS_IS_F32
    return fs256_exp_sum_split_widen_f32(x, md, n, at_max);
#elif defined(FS_USE_AVX2)
    return fs256_exp_sum_split_f64(x, md, n, at_max, 0);
#else
    double rest = 0.0, count = 0.0;
    FS_OMP_SIMD_SUM2(rest, count)
    for (ptrdiff_t i = 0; i < n; i++) {
        double xi = (double)x[i];
        double e = fs_exp_f64(xi - md, 0);
        int is_max = xi == md;
        rest += is_max ? 0.0 : e;
        count += is_max ? 1.0 : 0.0;
    }
    *at_max = count;
    return rest;
#endif
}

/* ln(sum_i exp(x_i - m)) for a finite m, as log1p of the sum without one max element (so
[0, -40] gives exp(-40), not 0), in double precision whatever FS_T.  The chunks' sums are
added with compensation (a plain running sum was 13-87 ulps off at 4e6 elements). */
static inline double FS_FN(row_log_sum_exp_shifted_f64)(const FS_T *restrict x, ptrdiff_t n, FS_T m)
{
    fs_block_total rest = {0.0, 0.0};
    double at_max = 0.0;
    for (ptrdiff_t c = 0; c < n; c += FS_CHUNK) {
        double k;
        const double chunk = FS_FN(lse_chunk_sums)(x + c, n - c < FS_CHUNK ? n - c : FS_CHUNK, (double)m, &k);
        fs_block_total_add_at(&rest, chunk, c == 0);
        at_max += k;
    }
    return log1p((at_max - 1.0) + fs_block_total_value(&rest));
}

static void FS_FN(fill_nan)(FS_T *restrict y, ptrdiff_t n)
{
    for (ptrdiff_t i = 0; i < n; i++) y[i] = (FS_T)NAN;
}

/* The max of a row, and on AVX2 whether every element lies within FS_EXACT_SPREAD (float32) or
   FS_SPREAD_F64 (float64) of it (*bounded): the exps then take fs256_exp_spread_ps (the same
   values for 11 operations instead of 23; softmax skips the TwoSum) or fs256_exp_bounded_pd
   (no range test per vector); elsewhere *bounded = 0. */
static inline FS_T FS_FN(row_max_bounded)(const FS_T *x, ptrdiff_t n, int *bounded)
{
#if defined(FS_USE_AVX2)
    return FS_CAT(fs256_row_max_bounded, FS_SUF)(x, n, bounded);
#else
    *bounded = 0;
    return FS_ROW_MAX(x, n);
#endif
}

/* ---- row kernels ---- */

/* Passes over one row: max (from memory), y = exp(x - m) with its sum (x from cache),
   y /= sum (in cache).  `next` (or NULL) is the following row: it is prefetched while this
   one is computed, so that the memory traffic of the max pass overlaps the exps. */
static void FS_FN(softmax_row)(const FS_T *x, FS_T *y, ptrdiff_t n, const FS_T *next)
{
#if defined(FS_USE_AVX512) && FS_IS_F32
    /* A row whose values all lie within FS_EXACT_SPREAD of its max does not need the
       TwoSum correction of x - m (see fs512_exp_store_sum_fast_f32). */
    float lowest;
    FS_T m = FS_ROW_MINMAX_F32(x, n, &lowest);
    int exact = !(m - lowest <= FS_EXACT_SPREAD);
#elif defined(FS_USE_AVX2)
    /* the same for float32; float64 rows within FS_SPREAD_F64 skip the exp's range test */
    int bounded;
    FS_T m = FS_FN(row_max_bounded)(x, n, &bounded);
    int exact = !bounded;
#else
    FS_T m = FS_ROW_MAX(x, n);
    const int exact = 1;
#endif
    if (!isfinite(m)) { FS_FN(fill_nan)(y, n); return; }
    fs_block_total s = {0.0, 0.0};
    for (ptrdiff_t c = 0; c < n; c += FS_CHUNK) {
        ptrdiff_t len = n - c < FS_CHUNK ? n - c : FS_CHUNK;
        if (next != NULL) fs_prefetch_span(next + c, (size_t)len * sizeof(FS_T), x + c);
#if defined(FS_USE_AVX512) && FS_IS_F32
        if (!exact) { fs_block_total_add_at(&s, FS_EXP_STORE_SUM_FAST_F32(x + c, m, y + c, len), c == 0); continue; }
#elif defined(FS_USE_AVX2)
        if (!exact) { fs_block_total_add_at(&s, FS_EXP_STORE_SUM_BOUNDED(x + c, m, y + c, len), c == 0); continue; }
#endif
        fs_block_total_add_at(&s, FS_EXP_STORE_SUM(x + c, m, y + c, len), c == 0);
    }
    (void)exact;
    FS_SCALE(y, (FS_T)(1.0 / fs_block_total_value(&s)), y, n);
}

/* log_softmax's exp pass over a piece of a row: the sum of exp(x - m) over x != m (*at_max
   counts x == m).  On AVX-512 and AVX2 it also stores x - m into y, so that the last pass only
   subtracts a constant from y in cache, and the output's lines are fetched during this
   exp-heavy pass (measured 10-20% faster on rows that come from memory); the portable path
   computes (x - m) - c again at the end.  Both round the same way: (x - m), then - c. */
static inline double FS_FN(log_softmax_sums)(const FS_T *x, FS_T m, FS_T *y, ptrdiff_t n, double *at_max,
                                             int bounded)
{
    (void)bounded;
#ifdef FS_USE_AVX512
    return FS_CAT(fs512_exp_sum_split_store, FS_SUF)(x, m, y, n, at_max);
#elif defined(FS_USE_AVX2)
    return FS_CAT(fs256_exp_sum_split_store, FS_SUF)(x, m, y, n, at_max, bounded);
#else
    (void)y;
    return FS_EXP_SUM_SPLIT(x, m, n, at_max);
#endif
}


/* y = (x - m) - c, after log_softmax_sums wrote its piece(s) of y. */
static inline void FS_FN(log_softmax_finish)(const FS_T *x, FS_T m, FS_T c, FS_T *y, ptrdiff_t n)
{
#ifdef FS_USE_AVX512
    (void)x;
    (void)m;
    FS_CAT(fs512_sub_const, FS_SUF)(y, c, y, n);
#elif defined(FS_USE_AVX2)
    (void)x;
    (void)m;
    FS_CAT(fs256_sub_const, FS_SUF)(y, c, y, n);
#else
    FS_SUB(x, m, c, y, n);
#endif
}

static void FS_FN(log_softmax_row)(const FS_T *x, FS_T *y, ptrdiff_t n, const FS_T *next)
{
    int bounded;
    FS_T m = FS_FN(row_max_bounded)(x, n, &bounded);
    if (!isfinite(m)) { FS_FN(fill_nan)(y, n); return; }
    fs_block_total rest = {0.0, 0.0};
    double at_max = 0.0;
    for (ptrdiff_t c = 0; c < n; c += FS_CHUNK) {
        ptrdiff_t len = n - c < FS_CHUNK ? n - c : FS_CHUNK;
        double k;
        if (next != NULL) fs_prefetch_span(next + c, (size_t)len * sizeof(FS_T), x + c);
        fs_block_total_add_at(&rest, FS_FN(log_softmax_sums)(x + c, m, y + c, len, &k, bounded), c == 0);
        at_max += k;
    }
    FS_FN(log_softmax_finish)(x, m, (FS_T)log1p((at_max - 1.0) + fs_block_total_value(&rest)), y, n);
}

#ifdef FS_USE_AVX512
/* softmax (log_out = 0) or log_softmax of rows [r0, r1) of a result too large for the caches
   (FS_STREAM_MIN_BYTES), software-pipelined.  Row r takes the sums of the one-row kernels
   (softmax storing its exps into a scratch row that stays in L1/L2, two of them in turn;
   log_softmax storing nothing), and during that exp pass
   - row r - 1 is written with streaming stores (fs512_pending_*): scratch * (1 / sum), or
     (x - m) - log(sum): y's lines are never read from memory before being written, nor passed
     over again in cache, and the stores drain while the exps are computed;
   - float32: the max (and for softmax the min) of row r + 1 is taken, so that row's own max
     pass is saved (it was 8-17% of the time), and row r + 2 is prefetched.  On the Intel
     Xeon rows of up to 2048 columns went without that prefetch (it cost 4-6% at 4096x1000 in
     a C loop A/B; without it log_softmax took 1.4-1.6x the time at 256x50257); on AMD Zen 4
     they need it: with it, in one process alternating, log_softmax 4096x1000 took 0.77-0.83x
     the time, 2000x2000 0.65x, softmax 2000x2000 0.63x, softmax 4096x1000 1.00-1.03x.
     float64 softmax does the same for rows of up to FS512_AHEAD_MAX_F64 columns, and takes
     the min too, so that rows within FS_SPREAD_F64 of their max take the exp without range
     test or vscalefpd (fs512_exp_bounded_keep_pd, the same bits; the last row of a span,
     with no row ahead, keeps the range test); longer float64 rows, and log_softmax's,
     prefetch row r + 1 and keep their max pass (row r + 2 measured 0.93-1.04x on Zen 4).  On
     Zen 4, one process alternating with the previous build, both writing the same 64-byte
     aligned result: softmax float64 2048x2000 1.12-1.13x as fast, 1024x4096 1.09-1.13x,
     4096x999 1.14x, 4096x1000 0.96-1.07x over eight runs in the package (1.06-1.09x in a C
     loop on huge pages, as NumPy's arrays have); in the C loop the scan ahead alone gave
     1.02-1.03x, the exp alone (with a min pass of its own) 0.98-0.99x.
     Reading x is what bounds these rows: with x in cache (the same four rows over and over)
     4096x1000 takes 0.52-0.58 ns an element, from memory 0.75-0.97, where a single pass
     taking the max of 32 MB takes 0.38-0.43 (one core reads about 20 GB/s here).
   The same values as the one-row kernels, bit for bit (the max and min are exact in any
   order).  float32 rows that share a line (rows not a whole number of lines) write it as one
   streamed vector (fs512_carry_f32).  If softmax's scratch rows cannot be allocated, the rows
   take the in-cache path. */
static void FS_FN(softmax_like_stream_span)(const FS_T *x, FS_T *y, ptrdiff_t r0, ptrdiff_t r1, ptrdiff_t nrows,
                                            ptrdiff_t ncols, int log_out)
{
    const ptrdiff_t stride = (ncols + 15) & ~(ptrdiff_t)15; /* scratch rows a whole number of lines apart */
    FS_T *scratch = log_out || r0 >= r1 ? NULL : (FS_T *)malloc(sizeof(FS_T) * (size_t)(2 * stride));
    if (!log_out && scratch == NULL) {
        for (ptrdiff_t r = r0; r < r1; r++)
            FS_FN(softmax_row)(x + r * ncols, y + r * ncols, ncols, r + 1 < nrows ? x + (r + 1) * ncols : NULL);
        return;
    }
    const int scan_ahead = FS_IS_F32 || (!log_out && ncols <= FS512_AHEAD_MAX_F64);
    FS_CAT(fs512_pending, FS_SUF) pend = {0}; /* nothing pending */
#if FS_IS_F32
    fs512_carry_f32 carry = {{0}, NULL, 0}; /* the tail of row r - 1, when it shares a line with row r */
#endif
    int known = 0;         /* the max (and min) of row r were taken during row r - 1 */
    FS_T next_max = 0, next_min = 0;
    for (ptrdiff_t r = r0; r < r1; r++) {
        const FS_T *xr = x + r * ncols;
        const FS_T *ahead = scan_ahead && r + 1 < r1 ? xr + ncols : NULL;
        const ptrdiff_t pf_row = scan_ahead ? r + 2 : r + 1;
        const FS_T *pf = pf_row < nrows ? x + pf_row * ncols : NULL;
        FS_T *yr = y + r * ncols, *e = log_out ? NULL : scratch + (r & 1) * stride;
        FS_T m, lowest = 0;
        if (known) {
            m = next_max;
            lowest = next_min;
        } else {
#if FS_IS_F32
            m = log_out ? FS_ROW_MAX(xr, ncols) : fs512_row_minmax_f32(xr, ncols, &lowest);
#else
            m = scan_ahead ? fs512_row_minmax_f64(xr, ncols, &lowest) : FS_ROW_MAX(xr, ncols);
#endif
        }
        known = 0;
        double a = 0.0;
        if (isfinite(m)) {
            /* in FS_CHUNK pieces, the sums added in the order of the one-row kernels
               (softmax_row, log_softmax_row): the same bits */
            /* float32: softmax's TwoSum decision (as softmax_row); float64: rows whose min was
               taken (scan_ahead) and lies within FS_SPREAD_F64 take fs512_exp_bounded_keep_pd,
               but for the last row of the span (fs512_exp_store_sum_piped_f64) */
            const int exact = FS_IS_F32 ? !(m - lowest <= FS_EXACT_SPREAD)
                                        : !(scan_ahead && m - lowest <= FS_SPREAD_F64);
            fs_block_total sum = {0.0, 0.0};
            double at_max = 0.0;
            next_max = -(FS_T)INFINITY;
            next_min = (FS_T)INFINITY;
            for (ptrdiff_t c = 0; c < ncols; c += FS_CHUNK) {
                const ptrdiff_t len = ncols - c < FS_CHUNK ? ncols - c : FS_CHUNK;
                const FS_T *pfc = pf != NULL ? pf + c : NULL, *aheadc = ahead != NULL ? ahead + c : NULL;
                FS_T cmax = 0, cmin = 0;
                if (log_out) {
                    double k = 0.0;
                    const double chunk = FS_CAT(fs512_exp_sum_split_piped, FS_SUF)(xr + c, m, len, &k, &pend, pfc,
                                                                                   aheadc, &cmax);
                    fs_block_total_add_at(&sum, chunk, c == 0);
                    at_max += k;
                } else {
                    const double chunk = FS_CAT(fs512_exp_store_sum_piped, FS_SUF)(xr + c, m, e + c, len, exact, &pend,
                                                                                   pfc, aheadc, &cmax, &cmin);
                    fs_block_total_add_at(&sum, chunk, c == 0);
                }
                if (ahead != NULL) { /* exact in any order (a NaN may be dropped: the row is NaN anyway) */
                    next_max = cmax > next_max ? cmax : next_max;
                    next_min = cmin < next_min ? cmin : next_min;
                }
            }
            const double total = fs_block_total_value(&sum);
            a = log_out ? log1p((at_max - 1.0) + total) : 1.0 / total;
            known = ahead != NULL;
        }
#if FS_IS_F32
        fs512_pending_finish_carry_f32(&pend, &carry); /* the rest of row r - 1 */
        if (!isfinite(m)) {
            fs512_carry_flush_f32(&carry);
            FS_FN(fill_nan)(yr, ncols);
        } else {
            fs512_pending_begin_join_f32(&pend, &carry, log_out ? xr : e, m, (float)a, yr, ncols, -1, 0,
                                         log_out ? FS512_SUB_SUB : FS512_SCALE);
        }
#else
        FS_CAT(fs512_pending_finish, FS_SUF)(&pend); /* the rest of row r - 1 */
        if (!isfinite(m)) FS_FN(fill_nan)(yr, ncols);
        else FS_CAT(fs512_pending_begin, FS_SUF)(&pend, log_out ? xr : e, m, (FS_T)a, yr, ncols, -1, 0,
                                                 log_out ? FS512_SUB_SUB : FS512_SCALE);
#endif
    }
#if FS_IS_F32
    fs512_carry_flush_f32(&carry); /* empty here (a join or a NaN row took it); kept safe */
#endif
    FS_CAT(fs512_pending_finish, FS_SUF)(&pend);
    free(scratch);
    _mm_sfence(); /* this thread's streamed rows are complete */
}
#elif defined(FS_USE_AVX2)
/* The same on AVX2, simpler (the pending rows and piped sums of fs_avx2_stream_impl.h): row r's
   sums (softmax's exps into a scratch row, two in turn), during which row r - 1 is streamed
   out, the max and min of row r + 1 are taken and row r + 2 is prefetched.  The same bits as
   the one-row kernels (a row with a NaN is all NaN on both, possibly not the same NaN: the max
   taken ahead may keep or drop it, as on AVX-512).  Measured on an AMD EPYC (Zen 3) in a C
   loop against the one-row kernels: float64 4096x1000 and 256x50256 10-20% faster, float32
   0-15%. */
#include "fs_avx2_stream_impl.h"

static void FS_FN(softmax_like_stream_span)(const FS_T *x, FS_T *y, ptrdiff_t r0, ptrdiff_t r1, ptrdiff_t nrows,
                                            ptrdiff_t ncols, int log_out)
{
    const ptrdiff_t stride = (ncols + 15) & ~(ptrdiff_t)15;
    FS_T *scratch = log_out || r0 >= r1 ? NULL : (FS_T *)malloc(sizeof(FS_T) * (size_t)(2 * stride));
    if (!log_out && scratch == NULL) {
        for (ptrdiff_t r = r0; r < r1; r++)
            FS_FN(softmax_row)(x + r * ncols, y + r * ncols, ncols, r + 1 < nrows ? x + (r + 1) * ncols : NULL);
        return;
    }
    FS_FN(pending_row) pend = {0}; /* nothing pending */
    int known = 0;                 /* the max and min of row r were taken during row r - 1 */
    FS_T m = 0, lo = 0, next_max = 0, next_min = 0;
    for (ptrdiff_t r = r0; r < r1; r++) {
        const FS_T *xr = x + r * ncols, *ahead = r + 1 < r1 ? xr + ncols : NULL;
        const FS_T *pf2 = r + 2 < nrows ? xr + 2 * ncols : NULL; /* prefetched a line per line */
        FS_T *yr = y + r * ncols, *e = log_out ? NULL : scratch + (r & 1) * stride;
        if (known) {
            m = next_max;
            lo = next_min;
        } else {
            m = FS_CAT(fs256_row_minmax, FS_SUF)(xr, ncols, &lo);
        }
        known = 0;
        double a = 0.0;
        if (isfinite(m)) {
            const int bounded = m - lo <= (FS_IS_F32 ? FS_EXACT_SPREAD : FS_SPREAD_F64);
            fs_block_total sum = {0.0, 0.0};
            double at_max = 0.0;
            next_max = -(FS_T)INFINITY;
            next_min = (FS_T)INFINITY;
            for (ptrdiff_t c = 0; c < ncols; c += FS_CHUNK) {
                const ptrdiff_t len = ncols - c < FS_CHUNK ? ncols - c : FS_CHUNK;
                FS_T cmax = 0, cmin = 0;
                double k = 0.0;
                fs_block_total_add_at(&sum, FS_FN(piped_sums)(xr + c, m, log_out ? NULL : e + c, len, bounded, log_out,
                                                              &k, &pend, ahead != NULL ? ahead + c : NULL, &cmax, &cmin,
                                                              pf2 != NULL ? pf2 + c : NULL),
                                      c == 0);
                at_max += k;
                if (ahead != NULL) { /* exact in any order (a NaN may be dropped: the row is NaN anyway) */
                    next_max = cmax > next_max ? cmax : next_max;
                    next_min = cmin < next_min ? cmin : next_min;
                }
            }
            const double total = fs_block_total_value(&sum);
            a = log_out ? log1p((at_max - 1.0) + total) : 1.0 / total;
            known = ahead != NULL;
        }
        FS_FN(pending_finish)(&pend); /* the rest of row r - 1 */
        if (!isfinite(m)) FS_FN(fill_nan)(yr, ncols);
        else FS_FN(pending_begin)(&pend, log_out ? xr : e, m, (FS_T)a, yr, ncols, log_out, -1, 0);
    }
    FS_FN(pending_finish)(&pend);
    free(scratch);
    _mm_sfence(); /* this thread's streamed rows are complete */
}
#endif

/* Rows per batch of log_softmax_row_batch, logsumexp_row_batch and the streamed
   log_softmax_medium_stream_span. */
#ifndef FS_LSM_BATCH
#define FS_LSM_BATCH 16
#endif

#if defined(FS_USE_AVX512) || defined(FS_USE_AVX2)
/* c = log1p(u) for a batch of FS_LSM_BATCH sums, on vectors (AVX-512: 8 lanes; AVX2: 4, the
   same arithmetic); `accurate` takes the accurate form (logsumexp of float64). */
static inline void FS_FN(log1p_batch)(const double *u, double *c, int accurate)
{
#ifdef FS_USE_AVX512
    for (ptrdiff_t k = 0; k < FS_LSM_BATCH; k += 8) {
        const __m512d uk = _mm512_loadu_pd(u + k);
        _mm512_storeu_pd(c + k, accurate ? fs512_log1p_accurate_pd(uk) : fs512_log1p_pd(uk));
    }
#else
    for (ptrdiff_t k = 0; k < FS_LSM_BATCH; k += 4) {
        const __m256d uk = _mm256_loadu_pd(u + k);
        _mm256_storeu_pd(c + k, accurate ? fs256_log1p_accurate_pd(uk) : fs256_log1p_pd(uk));
    }
#endif
}
#endif

#if defined(FS_USE_AVX512) || defined(FS_USE_AVX2)
/* log_softmax of FS_LSM_BATCH consecutive rows (at most; `count`) of a medium length: the
   max and the sums of every row first, then one vector log1p for all of them, then the
   subtraction pass (the rows are still in L1).  Saves the scalar log1p per row, which costs
   as much as the rest of a 128-element float32 row.  Only for rows of at most
   FS_LSM_BATCH_MAX_BYTES: beyond, the batch leaves L1 and the one-row path is faster
   (measured: 10-25% slower at 2-4 KB rows, 30% faster at 512 B). */
#ifndef FS_LSM_BATCH_MAX_BYTES
#define FS_LSM_BATCH_MAX_BYTES 1024
#endif
static void FS_FN(log_softmax_row_batch)(const FS_T *x, FS_T *y, ptrdiff_t count, ptrdiff_t n, int more)
{
    FS_T m[FS_LSM_BATCH];
    double u[FS_LSM_BATCH], c[FS_LSM_BATCH];
    for (ptrdiff_t k = 0; k < FS_LSM_BATCH; k++) u[k] = 0.0;
    for (ptrdiff_t k = 0; k < count; k++) {
        const FS_T *row = x + k * n;
        /* the next row (or the next batch's first) comes in while this one is computed */
        if (k + 1 < count || more) fs_prefetch_span(row + n, (size_t)n * sizeof(FS_T), row);
        int bounded;
        m[k] = FS_FN(row_max_bounded)(row, n, &bounded);
        if (!isfinite(m[k])) continue;
        double at_max;
        double rest = FS_FN(log_softmax_sums)(row, m[k], y + k * n, n, &at_max, bounded);
        u[k] = (at_max - 1.0) + rest;
    }
    FS_FN(log1p_batch)(u, c, 0);
    for (ptrdiff_t k = 0; k < count; k++) {
        if (isfinite(m[k])) FS_FN(log_softmax_finish)(x + k * n, m[k], (FS_T)c[k], y + k * n, n);
        else FS_FN(fill_nan)(y + k * n, n);
    }
}
#endif

#if defined(FS_USE_AVX2)
/* Whether a result of medium rows is streamed on AVX2 (log_softmax_medium_stream_span; float32
   softmax, medium_rows_stream_avx2): large (FS_STREAM_MIN_BYTES), in rows of whole 64-byte
   lines starting on lines. */
static inline int FS_FN(whole_lines_stream_avx2)(const FS_T *y, ptrdiff_t nrows, ptrdiff_t ncols)
{
    return ((uintptr_t)y & 63) == 0 && (ncols * (ptrdiff_t)sizeof(FS_T)) % 64 == 0 &&
           nrows * ncols * (ptrdiff_t)sizeof(FS_T) >= FS_STREAM_MIN_BYTES;
}

/* Cases of a switch on a row's width n: the power-of-two widths 64, 128 and 256 when at most
   `max`, each calling CALL(n) with n a constant (then return).  An inlined row kernel so
   called has every loop over the row unrolled or with a known count, the tests for partial
   vectors and lines gone: float32 softmax 16384x128 took 435 instructions a row where the
   same code with n a variable took 575 (callgrind).  Every width of whole lines so compiled
   (1-16 lines) measured 400 KB more code and 1.5x the build time of this file; powers of two
   are the widths rows most often have (hidden sizes, attention heads). */
#define FS256_POW2_WIDTH_CASE_(w, max, CALL)                                                   \
    case (w):                                                                                \
        if ((w) <= (max)) {                                                                  \
            CALL(w);                                                                         \
            return;                                                                          \
        }                                                                                    \
        break;
#define FS256_POW2_WIDTH_CASES(max, CALL)                                                    \
    FS256_POW2_WIDTH_CASE_(64, max, CALL)                                                    \
    FS256_POW2_WIDTH_CASE_(128, max, CALL)                                                   \
    FS256_POW2_WIDTH_CASE_(256, max, CALL)                                                   \
    default:                                                                                 \
        break;

/* log_softmax_sums without the store of x - m: the same sums (`bounded` a constant). */
FS256_INLINE double FS_FN(split_sums)(const FS_T *x, FS_T m, ptrdiff_t n, double *at_max, int bounded)
{
#if FS_IS_F32
    return fs256_exp_split_impl_f32(x, m, NULL, NULL, n, at_max, bounded);
#else
    return fs256_exp_split_impl_f64(x, m, NULL, NULL, n, at_max, 0, bounded);
#endif
}

/* Row k of a finished batch: (x - m) - c written with streaming stores, or NaN if its max is
   not finite. */
FS256_INLINE void FS_FN(lsm_batch_row_stream)(const FS_T *x, FS_T m, FS_T c, FS_T *y, ptrdiff_t n)
{
    if (isfinite(m)) FS_FN(stream_lines)(x, m, c, y, n, 1);
    else FS_FN(fill_nan)(y, n);
}

/* log_softmax_row_batch for a result too large for the caches (whole_lines_stream_avx2): row
   k of batch b - 1 -- whose log-sum that batch's vector log1p gave -- is written with
   streaming stores ((x - m) - c, x still in L1/L2) after row k of batch b's max and sums, so
   that y's lines are never read; row r + 2 is prefetched before row r (within the span).
   The same sums and the same bits as log_softmax_row_batch (a row with a NaN is all NaN on
   both, possibly not the same NaN).  `len` a multiple of FS_LSM_BATCH.  Inlined with n a
   constant for the widths FS256_POW2_WIDTH_CASES names (log_softmax_medium_stream_batches). */
FS256_INLINE void FS_FN(log_softmax_medium_stream_span_n)(const FS_T *x, FS_T *y, ptrdiff_t len, ptrdiff_t n)
{
    FS_T m[2][FS_LSM_BATCH], c[2][FS_LSM_BATCH];
    double u[FS_LSM_BATCH], lc[FS_LSM_BATCH];
    ptrdiff_t b = 0;
    for (; b + FS_LSM_BATCH <= len; b += FS_LSM_BATCH) {
        const int h = (int)(b / FS_LSM_BATCH) & 1;
        for (int k = 0; k < FS_LSM_BATCH; k++) {
            const ptrdiff_t r = b + k;
            const FS_T *xr = x + r * n;
            if (r + 2 < len) fs_prefetch_span(xr + 2 * n, (size_t)n * sizeof(FS_T), xr);
            FS_T lo;
            const FS_T mk = FS_CAT(fs256_row_minmax, FS_SUF)(xr, n, &lo);
            m[h][k] = mk;
            u[k] = 0.0;
            if (isfinite(mk)) {
                const int bounded = mk - lo <= (FS_IS_F32 ? FS_EXACT_SPREAD : FS_SPREAD_F64); /* as row_max_bounded */
                double at_max;
                const double rest = bounded ? FS_FN(split_sums)(xr, mk, n, &at_max, 1)
                                            : FS_FN(split_sums)(xr, mk, n, &at_max, 0);
                u[k] = (at_max - 1.0) + rest;
            }
            if (b > 0) FS_FN(lsm_batch_row_stream)(xr - FS_LSM_BATCH * n, m[h ^ 1][k], c[h ^ 1][k],
                                                   y + (r - FS_LSM_BATCH) * n, n);
        }
        FS_FN(log1p_batch)(u, lc, 0);
        for (int k = 0; k < FS_LSM_BATCH; k++) c[h][k] = (FS_T)lc[k];
    }
    if (b > 0) { /* the last batch */
        const int h = (int)(b / FS_LSM_BATCH - 1) & 1;
        for (int k = 0; k < FS_LSM_BATCH; k++)
            FS_FN(lsm_batch_row_stream)(x + (b - FS_LSM_BATCH + k) * n, m[h][k], c[h][k],
                                        y + (b - FS_LSM_BATCH + k) * n, n);
    }
    _mm_sfence(); /* this thread's streamed rows are complete */
}

static void FS_FN(log_softmax_medium_stream_batches)(const FS_T *x, FS_T *y, ptrdiff_t len, ptrdiff_t n)
{
#define FS256_LSM_STREAM_CALL(w) FS_FN(log_softmax_medium_stream_span_n)(x, y, len, w)
    switch (n) { FS256_POW2_WIDTH_CASES(FS_LSM_BATCH_MAX_BYTES / (ptrdiff_t)sizeof(FS_T), FS256_LSM_STREAM_CALL) }
#undef FS256_LSM_STREAM_CALL
    FS_FN(log_softmax_medium_stream_span_n)(x, y, len, n);
}

/* The streamed batches, then the rows after the last batch (log_softmax_row_batch). */
static void FS_FN(log_softmax_medium_stream_span)(const FS_T *x, FS_T *y, ptrdiff_t len, ptrdiff_t n)
{
    const ptrdiff_t whole = len - len % FS_LSM_BATCH;
    FS_FN(log_softmax_medium_stream_batches)(x, y, whole, n);
    if (whole < len) FS_FN(log_softmax_row_batch)(x + whole * n, y + whole * n, len - whole, n, 0);
}
#endif

#ifdef FS_USE_AVX512

#if FS_IS_F32
/* log_softmax_row_batch for a result too large for the caches (FS_STREAM_MIN_BYTES),
   software-pipelined as softmax_medium_stream_span: during row k's sums in batch b, row k
   of batch b - 1 is written with streaming stores ((x - m) - c, from x still in L1/L2) and
   the max of row k of batch b + 1 is taken.  The same bits as log_softmax_row_batch (a row
   with a NaN is all NaN on both, but vmaxps may keep another NaN, or none, of the row).
   Rows that do not start on cache lines stream the lines they share as softmax's do
   (softmax_medium_stream_span), a row whose max is not finite giving NaN in its lanes. */
static void FS_FN(log_softmax_medium_stream_span)(const float *x, float *y, ptrdiff_t len, ptrdiff_t n)
{
    const ptrdiff_t h = fs512_stream_head(y, sizeof(float), n); /* 0: rows start on lines */
    float m[FS_LSM_BATCH], mprev[FS_LSM_BATCH], cprev[FS_LSM_BATCH];
    double u[FS_LSM_BATCH], c[FS_LSM_BATCH];
    fs512_carry_f32 carry = {{0}, NULL, 0}; /* batch b - 2's last tail, until batch b - 1's head */
    const float *xprev = NULL; /* batch b - 1 (its results are pending), or none */
    float *yprev = NULL;
    ptrdiff_t b = 0;
    if (len >= FS_LSM_BATCH)
        for (int k = 0; k < FS_LSM_BATCH; k++) m[k] = FS_ROW_MAX(x + k * n, n);
    for (; b + FS_LSM_BATCH <= len; b += FS_LSM_BATCH) {
        const float *xb = x + b * n;
        float *yb = y + b * n;
        /* the last batch scans itself again (in L1) rather than rows past its span */
        const float *next = b + 2 * FS_LSM_BATCH <= len ? xb + FS_LSM_BATCH * n : xb;
        float mnext[FS_LSM_BATCH];
        for (int k = 0; k < FS_LSM_BATCH; k++) {
            fs512_pending_f32 pend = {0}; /* n == 0: nothing pending */
            fs512_row_values r = {0, 0, 0};
            if (xprev != NULL) {
                r.m = mprev[k];
                r.a = cprev[k];
                r.nan = !isfinite(mprev[k]);
            }
            if (xprev != NULL && h == 0) {
                if (!r.nan)
                    fs512_pending_begin_f32(&pend, xprev + k * n, mprev[k], cprev[k], yprev + k * n, n, -1, 0,
                                            FS512_SUB_SUB);
                else
                    FS_FN(fill_nan)(yprev + k * n, n);
            } else if (xprev != NULL) { /* rows off the lines: the whole lines of the row, then its seam */
                if (k == 0) fs512_seam_head_f32(&carry, xprev, r, yprev, h, FS512_SUB_SUB);
                if (!r.nan)
                    fs512_pending_span_f32(&pend, xprev + k * n, mprev[k], cprev[k], yprev + k * n, h, n - (16 - h),
                                           FS512_SUB_SUB);
                else
                    FS_FN(fill_nan)(yprev + k * n + h, n - 16);
            }
            u[k] = 0.0;
            if (isfinite(m[k])) {
                double at_max;
                double rest = fs512_exp_sum_split_piped_f32(xb + k * n, m[k], n, &at_max, &pend, NULL, next + k * n,
                                                            &mnext[k]);
                u[k] = (at_max - 1.0) + rest;
            } else {
                mnext[k] = FS_ROW_MAX(next + k * n, n);
            }
            fs512_pending_finish_f32(&pend);
            if (xprev != NULL && h != 0) { /* the line row k shares with row k + 1 (the last: carried) */
                const ptrdiff_t seam = (k + 1) * n - (16 - h);
                const int last = k == FS_LSM_BATCH - 1;
                const fs512_row_values next_row = {last ? 0 : mprev[k + 1], last ? 0 : cprev[k + 1],
                                                   !last && !isfinite(mprev[k + 1])};
                fs512_seam_tail_f32(&carry, xprev + seam, r, last ? NULL : &next_row, yprev + seam, h, FS512_SUB_SUB);
            }
        }
        for (int k = 0; k < FS_LSM_BATCH; k += 8) _mm512_storeu_pd(c + k, fs512_log1p_pd(_mm512_loadu_pd(u + k)));
        for (int k = 0; k < FS_LSM_BATCH; k++) {
            mprev[k] = m[k];
            cprev[k] = (float)c[k];
            m[k] = mnext[k];
        }
        xprev = xb;
        yprev = yb;
    }
    fs512_carry_flush_f32(&carry);
    for (int k = 0; xprev != NULL && k < FS_LSM_BATCH; k++) {
        if (!isfinite(mprev[k])) {
            FS_FN(fill_nan)(yprev + k * n, n);
            continue;
        }
        fs512_pending_f32 pend;
        fs512_pending_begin_f32(&pend, xprev + k * n, mprev[k], cprev[k], yprev + k * n, n, -1, 0, FS512_SUB_SUB);
        fs512_pending_finish_f32(&pend);
    }
    _mm_sfence(); /* this thread's streamed rows are complete */
    if (b < len) FS_FN(log_softmax_row_batch)(x + b * n, y + b * n, len - b, n, 0);
}
#endif
#endif

static FS_T FS_FN(logsumexp_row)(const FS_T *x, ptrdiff_t n)
{
    FS_T m = FS_ROW_MAX(x, n);
    if (!isfinite(m)) {
        /* +inf, or -inf with every element -inf, unless a NaN is present. */
        for (ptrdiff_t i = 0; i < n; i++)
            if (isnan(x[i])) return x[i];
        return m;
    }
    return (FS_T)((double)m + FS_FN(row_log_sum_exp_shifted_f64)(x, n, m));
}

/* The backward passes' sums over a block of at most FS_BLOCK terms, in FS_T: 16 accumulators
   (lane l adds terms l, l + 16, ...), then a fixed tree.  Written out rather than left to an
   `omp simd` reduction, whose order (and error: up to n - 1 roundings in a row) depends on
   whether the compiler vectorises: the -O1 sanitizer build did not, and a float32 sum of 64
   terms broke the error bound the tests hold every build to. */
static inline FS_T FS_FN(lanes_total)(FS_T *acc)
{
    for (int w = 8; w > 0; w >>= 1)
        for (int l = 0; l < w; l++) acc[l] += acc[l + w];
    return acc[0];
}

static inline FS_T FS_FN(block_dot)(const FS_T *g, const FS_T *y, ptrdiff_t n)
{
    FS_T acc[16] = {0};
    ptrdiff_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++) acc[l] += g[i + l] * y[i + l];
    for (int l = 0; i + l < n; l++) acc[l] += g[i + l] * y[i + l];
    return FS_FN(lanes_total)(acc);
}

static inline FS_T FS_FN(block_sum)(const FS_T *g, ptrdiff_t n)
{
    FS_T acc[16] = {0};
    ptrdiff_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++) acc[l] += g[i + l];
    for (int l = 0; i + l < n; l++) acc[l] += g[i + l];
    return FS_FN(lanes_total)(acc);
}

/* One row of softmax_backward (log_out = 0) or log_softmax_backward: the sum, then the last
   pass (fs512_backward_pass_T on AVX-512, streaming when `stream`; fs256_backward_pass_T on AVX2). */
static void FS_FN(backward_row)(const FS_T *g, const FS_T *y, FS_T *gx, ptrdiff_t n, int log_out, int stream)
{
    fs_block_total s = {0.0, 0.0};
    for (ptrdiff_t b = 0; b < n; b += FS_BLOCK) {
        const ptrdiff_t len = b + FS_BLOCK < n ? FS_BLOCK : n - b;
#if defined(FS_USE_AVX512)
        const FS_T block = FS_CAT(fs512_block_dot, FS_SUF)(g + b, log_out ? NULL : y + b, len);
#elif defined(FS_USE_AVX2)
        const FS_T block = FS_CAT(fs256_block_dot, FS_SUF)(g + b, log_out ? NULL : y + b, len);
#else
        const FS_T block = log_out ? FS_FN(block_sum)(g + b, len) : FS_FN(block_dot)(g + b, y + b, len);
#endif
        fs_block_total_add_at(&s, (double)block, b == 0);
    }
    FS_T st = (FS_T)fs_block_total_value(&s);
#ifdef FS_USE_AVX512
    FS_CAT(fs512_backward_pass, FS_SUF)(g, y, st, gx, n, log_out ? FS512_BWD_LOG_SOFTMAX : FS512_BWD_SOFTMAX, stream);
#elif defined(FS_USE_AVX2)
    (void)stream;
    FS_CAT(fs256_backward_pass, FS_SUF)(g, y, st, gx, n, log_out);
#else
    (void)stream;
    if (log_out) {
        FS_OMP_SIMD
        for (ptrdiff_t i = 0; i < n; i++) gx[i] = g[i] - FS_EXP(y[i], 0) * st;
    } else {
        FS_OMP_SIMD
        for (ptrdiff_t i = 0; i < n; i++) gx[i] = y[i] * (g[i] - st);
    }
#endif
}

/* ---- drivers over rows: threads split the rows statically ---- */

/* Rows of softmax (log_out = 0) or log_softmax (log_out = 1).  On AVX-512 (softmax_like_rows):
   short rows go a block of rows at a time (fs512_short_rows_*), float32 softmax of medium rows
   16 rows a block (softmax_medium_span) and log_softmax of medium rows a batch of rows per
   vector log1p (log_softmax_row_batch), both streamed when the result is large and its rows
   a whole number of vectors (*_medium_stream_span); long rows of large results are streamed
   (softmax_like_stream_span); threads take contiguous slices of rows.  On AVX2 the same, with
   blocks of 8 short rows, of 8 medium rows for softmax (softmax_medium_slice) and batches of
   medium rows for log_softmax. */
static void FS_FN(softmax_like_row)(const FS_T *x, FS_T *y, ptrdiff_t ncols, const FS_T *next, int log_out)
{
    if (log_out) FS_FN(log_softmax_row)(x, y, ncols, next);
    else FS_FN(softmax_row)(x, y, ncols, next);
}

#if defined(FS_USE_AVX512)
#define FS_SHORT_ROWS FS_CAT(fs512_short_rows, FS_SUF)
#define FS_SHORT_MAX FS512_SHORT_MAX
#define FS_SHORT_BLOCK 16
#elif defined(FS_USE_AVX2)
#define FS_SHORT_ROWS FS_CAT(fs256_short_rows, FS_SUF)
#define FS_SHORT_MAX FS256_SHORT_MAX
#define FS_SHORT_BLOCK (FS_IS_F32 ? 8 : 4)
#endif

#ifdef FS_SHORT_ROWS
/* `len` short rows: blocks of FS_SHORT_BLOCK rows (AVX-512 float64: 8), then the rest one
   row at a time. */
static void FS_FN(short_rows_slice)(const FS_T *x, FS_T *y, ptrdiff_t len, ptrdiff_t ncols, int log_out)
{
    ptrdiff_t done = FS_SHORT_ROWS(x, y, len, ncols, log_out);
    for (ptrdiff_t r = done; r < len; r++) FS_FN(softmax_like_row)(x + r * ncols, y + r * ncols, ncols, NULL, log_out);
}
#endif

#if defined(FS_USE_AVX512) && FS_IS_F32
/* float32 softmax of `len` rows of FS512_SHORT_MAX < n <= FS512_MEDIUM_MAX, 16 rows a block
   (fs512_medium_block_f32: the exps into y, then scaled in place); blocks it turns down, and
   the last len % 16 rows, take the one-row kernel. */
static void FS_FN(softmax_medium_span)(const float *x, float *y, ptrdiff_t len, ptrdiff_t n)
{
    float inv[16];
    ptrdiff_t b = 0;
    for (; b + 16 <= len; b += 16) {
        const float *xb = x + b * n;
        float *yb = y + b * n;
        if (fs512_medium_block_f32(xb, yb, n, inv, b + 32 <= len ? xb + 16 * n : NULL)) {
            fs512_medium_scale_f32(yb, inv, yb, n);
            continue;
        }
        for (int k = 0; k < 16; k++) FS_FN(softmax_row)(xb + k * n, yb + k * n, n, NULL);
    }
    for (; b < len; b++) FS_FN(softmax_row)(x + b * n, y + b * n, n, b + 1 < len ? x + (b + 1) * n : NULL);
}

/* The same for a result too large for the caches (FS_STREAM_MIN_BYTES), software-pipelined
   as softmax_like_stream_span does for long rows: the exps of block b go to a scratch block
   in L1 (two in turn), and during that exp pass, row k of block b - 1 is written out with
   streaming stores (fs512_pending_f32: exps * scale, the values fs512_medium_scale_f32
   writes) and the max and min of row k of block b + 1 are taken (fs512_medium_max_f32 then
   has them, with no max pass of its own).  Memory is then read and written at an even rate
   while the exps are computed, instead of a burst of loads for the max pass and a burst of
   stores in the scale pass.  The same bits as softmax_medium_span (a row with a NaN is all
   NaN on both, possibly not the same NaN: the max taken ahead may keep or drop it).
   Rows that do not start on a cache line (an out= array from NumPy's allocator is 16 or 48
   bytes past one) start h elements before one, all alike (n is a whole number of vectors):
   the pending part of row k is then its whole lines, and the line it shares with row k + 1
   is streamed after it as one vector with both rows' scales (fs512_seam_tail_f32).  The
   last row's tail waits in `carry` (fs512_carry_f32, as long rows' tails do) for the next
   block's first head, which completes its line (fs512_seam_head_f32); only the span's first
   head and last tail, and lines next to a block that is turned down, are ordinary stores.
   (Left to the rows' ordinary head and tail stores, the shared lines were read from memory
   before being written: 16384x128 at 16 bytes past a line took 1.5x the time of aligned
   rows; with the block's first head and last tail still ordinary stores, 1.15x.) */
static void FS_FN(softmax_medium_stream_span)(const float *x, float *y, ptrdiff_t len, ptrdiff_t n)
{
    const ptrdiff_t h = fs512_stream_head(y, sizeof(float), n); /* 0: rows start on lines */
    float scratch[2][16 * FS512_MEDIUM_MAX] __attribute__((aligned(64)));
    float mk[16] __attribute__((aligned(64))), inv[16] __attribute__((aligned(64)));
    __m512 mx[16], mn[16];
    __m512d d[16];
    fs512_carry_f32 carry = {{0}, NULL, 0}; /* block b - 2's last tail, until block b - 1's head */
    const float *prev = NULL; /* block b - 1's exps (its results are pending), or none */
    float *yprev = NULL;
    int known = 0;            /* mx, mn hold this block's max and min vectors */
    ptrdiff_t b = 0;
    for (; b + 16 <= len; b += 16) {
        const float *xb = x + b * n;
        float *yb = y + b * n, *e = scratch[(b >> 4) & 1];
        if (!known)
            for (int k = 0; k < 16; k++) fs512_row_minmax_lanes_f32(xb + k * n, n, &mx[k], &mn[k]);
        if (!fs512_medium_max_f32(mx, mn, mk)) {
            fs512_carry_flush_f32(&carry); /* the next row's head is an ordinary store too */
            if (prev != NULL) fs512_medium_stream_f32(prev, inv, yprev, n);
            prev = NULL;
            known = 0;
            for (int k = 0; k < 16; k++) FS_FN(softmax_row)(xb + k * n, yb + k * n, n, NULL);
            continue;
        }
        /* the last block scans itself again (in L1) rather than a row past its span */
        const float *next = b + 32 <= len ? xb + 16 * n : xb;
        for (int k = 0; k < 16; k++) {
            fs512_pending_f32 pend = {0}; /* n == 0: nothing pending */
            if (prev != NULL && h == 0)
                fs512_pending_begin_f32(&pend, prev + k * n, 0, inv[k], yprev + k * n, n, -1, 0, FS512_SCALE);
            else if (prev != NULL) {
                const fs512_row_values r = {0, inv[k], 0};
                if (k == 0) fs512_seam_head_f32(&carry, prev, r, yprev, h, FS512_SCALE);
                fs512_pending_span_f32(&pend, prev + k * n, 0, inv[k], yprev + k * n, h, n - (16 - h), FS512_SCALE);
            }
            d[k] = fs512_exp_store_sum_lanes_f32(xb + k * n, mk[k], e + k * n, n, 0, &pend, NULL, next + k * n,
                                                 &mx[k], &mn[k]);
            fs512_pending_finish_f32(&pend);
            if (prev != NULL && h != 0) { /* the line row k shares with row k + 1 (the last: carried) */
                const ptrdiff_t seam = (k + 1) * n - (16 - h);
                const fs512_row_values r = {0, inv[k], 0}, next_row = {0, k < 15 ? inv[k + 1] : 0, 0};
                fs512_seam_tail_f32(&carry, prev + seam, r, k < 15 ? &next_row : NULL, yprev + seam, h, FS512_SCALE);
            }
        }
        known = b + 32 <= len;
        fs512_medium_inv_f32(d, inv);
        prev = e;
        yprev = yb;
    }
    fs512_carry_flush_f32(&carry);
    if (prev != NULL) fs512_medium_stream_f32(prev, inv, yprev, n);
    _mm_sfence(); /* this thread's streamed rows are complete */
    for (; b < len; b++) FS_FN(softmax_row)(x + b * n, y + b * n, n, b + 1 < len ? x + (b + 1) * n : NULL);
}
#endif

#if defined(FS_USE_AVX512) && FS_IS_F32
/* float32 softmax of `len` medium rows of n (FS512_SHORT_MAX < n <= FS512_MEDIUM_MAX, n % 16 ==
   0) on AMD Zen 4, with the AVX2 kernels' values (fs_avx512.h, "the AVX2 blocks' values on 16
   lanes"; softmax_rows_f32_mixed, fs_activations.h), 16 rows a block in one pass per block:
   row k of block b's exps go to a scratch block in L1 (two in turn), and with each of its
   vectors, a vector of row k of block b - 1 is written (scratch * its scale: streaming stores
   when `stream`, see whole_lines_stream_avx2) and a line of row k of block b + 4 is prefetched
   into L2; then row k of block b + 1's max and min are taken (its block then has no pass of
   its own for them).  Blocks that fs512_medium_max_f32 turns down (a row not finite or wider
   than FS_EXACT_SPREAD) and the rows after the last block take the AVX2 kernels, whose values
   these are.  On Zen 4, C loop, one process, AVX2 blocks' time / this (medians of 21 rounds):
   16384x128 1.20-1.41 (x 16 or 0 bytes past a line; without the prefetches a prototype took
   1.6-1.8x the time), 512x128 (in L2) 1.25, 8192x64 1.22, 16384x48 1.42, 4096x96 2.41 (the AVX2
   blocks are compiled for 64, 128 and 256 columns only). */
#define FS512_TABLE_PREFETCH_BLOCKS 4
FS512_INLINE void FS_FN(softmax_medium_table_span_n)(const float *x, float *y, ptrdiff_t len, ptrdiff_t n, int stream)
{
    float scratch[2][16 * FS512_MEDIUM_MAX] __attribute__((aligned(64)));
    float inv[2][16] __attribute__((aligned(64))) = {{0}}, mk[16] __attribute__((aligned(64)));
    __m512 mx[16], mn[16];
    const ptrdiff_t nblocks = len / 16;
    const float *ep = NULL; /* block b - 1's exps (its results are pending), or none */
    if (nblocks > 0)
        for (int k = 0; k < 16; k++) fs512_row_minmax_lanes_f32(x + k * n, n, &mx[k], &mn[k]);
    for (ptrdiff_t b = 0; b < nblocks; b++) {
        const float *xb = x + b * 16 * n;
        float *yb = y + b * 16 * n, *e = scratch[b & 1];
        const float *ip = inv[(b & 1) ^ 1];
        /* the last block scans itself again (in L1) rather than a row past the span */
        const float *ahead = b + 1 < nblocks ? xb + 16 * n : xb;
        const char *pf = b + FS512_TABLE_PREFETCH_BLOCKS < nblocks
                             ? (const char *)(xb + FS512_TABLE_PREFETCH_BLOCKS * 16 * n)
                             : NULL;
        if (!fs512_medium_max_f32(mx, mn, mk)) {
            if (ep != NULL && stream) fs512_medium_stream_f32(ep, ip, yb - 16 * n, n);
            else if (ep != NULL) fs512_medium_scale_f32(ep, ip, yb - 16 * n, n);
            ep = NULL;
            softmax_medium_slice_f32_avx2(xb, yb, 16, n, stream);
            for (int k = 0; k < 16; k++) fs512_row_minmax_lanes_f32(ahead + k * n, n, &mx[k], &mn[k]);
            continue;
        }
        __m256d d[16];
        for (int k = 0; k < 16; k++) {
            const ptrdiff_t at = k * n; /* row k: in the block, in the scratch block */
            d[k] = fs512_table_row_f32(xb + at, mk[k], e + at, n, ep != NULL ? ep + at : NULL, ip[k],
                                       ep != NULL ? yb - 16 * n + at : NULL, stream, pf != NULL ? pf + 4 * at : NULL);
            fs512_row_minmax_lanes_f32(ahead + k * n, n, &mx[k], &mn[k]);
        }
        fs512_table_inv_f32(d, inv[b & 1]);
        ep = e;
    }
    if (ep != NULL) {
        float *ylast = y + (nblocks - 1) * 16 * n;
        if (stream) fs512_medium_stream_f32(ep, inv[(nblocks - 1) & 1], ylast, n);
        else fs512_medium_scale_f32(ep, inv[(nblocks - 1) & 1], ylast, n);
    }
    if (stream) _mm_sfence(); /* this thread's streamed rows are complete */
    if (len > nblocks * 16)
        softmax_medium_slice_f32_avx2(x + nblocks * 16 * n, y + nblocks * 16 * n, len - nblocks * 16, n, stream);
}


/* float32 log_softmax of `len` medium rows of n (as softmax_medium_table_span) on AMD Zen 4,
   with the AVX2 kernels' values (fs512_table_split_row_f32: the split sums of AVX2's bounded
   rows; AVX2's log1p batch; (x - m) - c): 16 rows a block (FS_LSM_BATCH), one pass per
   block: row k of block b's sums store x - m into a scratch block in L1 (two in turn), and
   with each of its vectors a vector of row k of block b - 1's results is written (that
   block's x - m less its log-sum) and a line of row k of block b + 4 prefetched into L2; then
   row k of block b + 1's max and min are taken.  Blocks turned down and the rows after the
   last block take the AVX2 batches.  C loop, one process, time of the AVX-512 kernels of
   before / this: 16384x128 1.35-1.37 (x 16 bytes past a line), 512x128 1.42-1.43.  A block is
   a batch of AVX2's log1p (FS_LSM_BATCH rows). */
_Static_assert(FS_LSM_BATCH == 16, "log_softmax_medium_table_span's blocks are log1p batches of 16 rows");
FS512_INLINE void FS_FN(log_softmax_medium_table_span_n)(const float *x, float *y, ptrdiff_t len, ptrdiff_t n,
                                                          int stream)
{
    float scratch[2][16 * FS512_MEDIUM_MAX] __attribute__((aligned(64)));
    float mk[16] __attribute__((aligned(64))), cprev[16] = {0};
    double u[16], c[16];
    __m512 mx[16], mn[16];
    const ptrdiff_t nblocks = len / 16;
    const float *tp = NULL; /* block b - 1's x - m (its results are pending), or none */
    if (nblocks > 0)
        for (int k = 0; k < 16; k++) fs512_row_minmax_lanes_f32(x + k * n, n, &mx[k], &mn[k]);
    for (ptrdiff_t b = 0; b < nblocks; b++) {
        const float *xb = x + b * 16 * n;
        float *yb = y + b * 16 * n, *t = scratch[b & 1];
        const float *ahead = b + 1 < nblocks ? xb + 16 * n : xb;
        const char *pf = b + FS512_TABLE_PREFETCH_BLOCKS < nblocks
                             ? (const char *)(xb + FS512_TABLE_PREFETCH_BLOCKS * 16 * n)
                             : NULL;
        if (!fs512_medium_max_f32(mx, mn, mk)) {
            for (int k = 0; tp != NULL && k < 16; k++)
                fs512_table_lsm_out_f32(tp + k * n, cprev[k], yb - 16 * n + k * n, n, stream);
            tp = NULL;
            log_softmax_row_batch_f32_avx2(xb, yb, 16, n, b + 1 < nblocks || len > 16 * nblocks);
            for (int k = 0; k < 16; k++) fs512_row_minmax_lanes_f32(ahead + k * n, n, &mx[k], &mn[k]);
            continue;
        }
        for (int k = 0; k < 16; k++) {
            const ptrdiff_t at = k * n;
            double at_max;
            const __m256d d = fs512_table_split_row_f32(xb + at, mk[k], t + at, n, &at_max, tp != NULL ? tp + at : NULL,
                                                        cprev[k], tp != NULL ? yb - 16 * n + at : NULL, stream,
                                                        pf != NULL ? pf + 4 * at : NULL);
            u[k] = (at_max - 1.0) + fs256_hsum_pd(d);
            fs512_row_minmax_lanes_f32(ahead + at, n, &mx[k], &mn[k]);
        }
        log1p_batch_f32_avx2(u, c, 0);
        for (int k = 0; k < 16; k++) cprev[k] = (float)c[k];
        tp = t;
    }
    for (int k = 0; tp != NULL && k < 16; k++)
        fs512_table_lsm_out_f32(tp + k * n, cprev[k], y + (nblocks - 1) * 16 * n + k * n, n, stream);
    if (stream) _mm_sfence(); /* this thread's streamed rows are complete */
    if (len > nblocks * 16)
        log_softmax_row_batch_f32_avx2(x + nblocks * 16 * n, y + nblocks * 16 * n, len - nblocks * 16, n, 0);
}

/* Either span (log_out: log_softmax's), inlined with n a constant for each width it takes. */
static void FS_FN(softmax_like_medium_table_span)(const float *x, float *y, ptrdiff_t len, ptrdiff_t n, int stream,
                                                  int log_out)
{
    switch (n) {
#define FS512_TABLE_CASE(w)                                                                      \
    case w:                                                                                      \
        if (log_out) FS_FN(log_softmax_medium_table_span_n)(x, y, len, w, stream);               \
        else FS_FN(softmax_medium_table_span_n)(x, y, len, w, stream);                           \
        return;
        FS512_TABLE_CASE(48) FS512_TABLE_CASE(64) FS512_TABLE_CASE(80) FS512_TABLE_CASE(96) FS512_TABLE_CASE(112)
        FS512_TABLE_CASE(128)
#undef FS512_TABLE_CASE
    default: /* no other width passes softmax_like_medium_table_rows's test; generic code if one did */
        if (log_out) FS_FN(log_softmax_medium_table_span_n)(x, y, len, n, stream);
        else FS_FN(softmax_medium_table_span_n)(x, y, len, n, stream);
    }
}

/* float32 softmax (log_out = 0) or log_softmax rows on Zen 4 (softmax_rows_f32_mixed,
   log_softmax_rows_f32_mixed) through the table spans when they are medium rows of whole
   vectors, at least a block of them (returns 1), else nothing (returns 0).  Results are
   streamed as the AVX2 kernels stream them (large, rows on whole lines).  Threads take spans
   of whole blocks (the last one also the rows after them), as the AVX2 blocks do: the same
   values whatever the number of threads. */
static int FS_FN(softmax_like_medium_table_rows)(const float *x, float *y, ptrdiff_t nrows, ptrdiff_t ncols,
                                                 int nthreads, int log_out)
{
    if (ncols <= FS512_SHORT_MAX || ncols > FS512_MEDIUM_MAX || ncols % 16 != 0 || nrows < 16) return 0;
    const int nt = fs_threads_for(nthreads, nrows, nrows * ncols);
    const ptrdiff_t nblocks = nrows / 16;
    const int stream = whole_lines_stream_avx2_f32_avx2(y, nrows, ncols);
    FS_ROWS_FOR(k, nt,
                ptrdiff_t r0 = nblocks * k / nt * 16;
                ptrdiff_t r1 = k + 1 == nt ? nrows : nblocks * (k + 1) / nt * 16;
                FS_FN(softmax_like_medium_table_span)(x + r0 * ncols, y + r0 * ncols, r1 - r0, ncols, stream, log_out));
    return 1;
}
#endif

#if defined(FS_USE_AVX2)
/* softmax of medium rows (FS256_SHORT_MAX < n <= FS256_MEDIUM_MAX), 8 rows a block (see
   fs_avx2.h, "softmax of medium rows"): the 8 rows' max and min at once
   (fs256_medium_minmax8_T), each row's exps into e (rows n apart) with its sum in double
   lanes, the 8 sums reduced (fs256_hsum4_pd) and divided together: inv[k] is
   softmax_row's 1 / sum, bit for bit.  A row whose max is not finite gets NaN exps and
   inv 1.  A row with a NaN is all NaN on both paths, possibly not the same NaN (which NaN a
   max keeps depends on the order of its comparisons, as on AVX-512).  `yprev` (or NULL): the
   previous block's 8 rows of y, row k written from eprev (its exps) times invprev[k] with
   streaming stores after row k's exps (stream_lines; the stores drain while the next
   row's exps are computed). */
#define FS256_MEDIUM_MAX (FS_IS_F32 ? FS256_MEDIUM_MAX_F32 : FS256_MEDIUM_MAX_F64)
FS256_INLINE void FS_FN(medium_block_sums)(const FS_T *x, FS_T *e, ptrdiff_t n, const FS_T *next, FS_T *inv,
                                           const FS_T *eprev, const FS_T *invprev, FS_T *yprev)
{
    FS_T m[8], lo[8];
    FS_CAT(fs256_medium_minmax8, FS_SUF)(x, n, m, lo);
    __m256d d[8];
    for (int k = 0; k < 8; k++) {
        if (next != NULL) fs_prefetch_span(next + k * n, (size_t)n * sizeof(FS_T), x + k * n);
        const int bounded = m[k] - lo[k] <= (FS_IS_F32 ? FS_EXACT_SPREAD : FS_SPREAD_F64);
        if (!isfinite(m[k])) {
            FS_FN(fill_nan)(e + k * n, n);
            d[k] = _mm256_set1_pd(0.25); /* a sum of 1: inv 1 */
        } else if (bounded) {
            /* the exp the one-row kernel takes (float32: no TwoSum; float64: no range test) */
            d[k] = FS_CAT(fs256_exp_store_sum_lanes, FS_SUF)(x + k * n, m[k], e + k * n, n, FS_IS_F32 ? 0 : 1);
        } else {
            d[k] = FS_CAT(fs256_exp_store_sum_lanes, FS_SUF)(x + k * n, m[k], e + k * n, n, FS_IS_F32 ? 1 : 0);
        }
        if (yprev != NULL) FS_FN(stream_lines)(eprev + k * n, 0, invprev[k], yprev + k * n, n, 0);
    }
    const __m256d one = _mm256_set1_pd(1.0);
    double r[8];
    _mm256_storeu_pd(r, _mm256_div_pd(one, fs256_hsum4_pd(d)));
    _mm256_storeu_pd(r + 4, _mm256_div_pd(one, fs256_hsum4_pd(d + 4)));
    for (int k = 0; k < 8; k++) inv[k] = (FS_T)r[k];
}

/* Whether a medium-row softmax result is streamed (softmax_medium_slice): float32, large
   (FS_STREAM_MIN_BYTES), in rows of whole 64-byte lines starting on lines.  Rows that share
   lines measured slower streamed (65536x40: 1.21-1.29x the time, the lines they share being
   ordinary stores), float64 rows of 40-64 no faster (0.98-1.09x); float32 16384x128 took
   0.86-0.99x (median) the time of the in-cache blocks. */
static inline int FS_FN(medium_rows_stream_avx2)(const FS_T *y, ptrdiff_t nrows, ptrdiff_t ncols)
{
    return FS_IS_F32 && FS_FN(whole_lines_stream_avx2)(y, nrows, ncols);
}

/* softmax of `len` medium rows (a multiple of 8), 8 rows a block.  In cache: each block's
   exps go to y and are scaled there.  Streamed (`stream`, see medium_rows_stream_avx2): they
   go to a scratch block in L1 (two in turn), and block b - 1's rows are written with
   streaming stores (scratch * inv, stream_lines) one row after each row of block b's exps,
   so that y's lines are never read before being written nor passed over twice.  The same
   values either way.  Inlined with n a constant for the widths FS256_POW2_WIDTH_CASES names
   (softmax_medium_blocks). */
FS256_INLINE void FS_FN(softmax_medium_slice_n)(const FS_T *x, FS_T *y, ptrdiff_t len, ptrdiff_t n, int stream)
{
    FS_T inv[8];
    ptrdiff_t b = 0;
    if (!stream) {
        for (; b + 8 <= len; b += 8) {
            FS_FN(medium_block_sums)(x + b * n, y + b * n, n, b + 16 <= len ? x + (b + 8) * n : NULL, inv, NULL, NULL,
                                     NULL);
            for (int k = 0; k < 8; k++) FS_CAT(fs256_scale, FS_SUF)(y + (b + k) * n, inv[k], y + (b + k) * n, n);
        }
    } else {
        FS_T scratch[2][8 * FS256_MEDIUM_MAX] __attribute__((aligned(64)));
        FS_T invs[2][8];
        for (; b + 8 <= len; b += 8) {
            const int h = (b >> 3) & 1;
            FS_FN(medium_block_sums)(x + b * n, scratch[h], n, b + 16 <= len ? x + (b + 8) * n : NULL, invs[h],
                                     scratch[h ^ 1], invs[h ^ 1], b > 0 ? y + (b - 8) * n : NULL);
        }
        if (b > 0) {
            const int h = ((b >> 3) & 1) ^ 1;
            for (int k = 0; k < 8; k++) FS_FN(stream_lines)(scratch[h] + k * n, 0, invs[h][k], y + (b - 8 + k) * n, n, 0);
        }
        _mm_sfence(); /* this thread's streamed rows are complete */
    }
}

static void FS_FN(softmax_medium_blocks)(const FS_T *x, FS_T *y, ptrdiff_t len, ptrdiff_t n, int stream)
{
#define FS256_MEDIUM_CALL(w) FS_FN(softmax_medium_slice_n)(x, y, len, w, stream)
    switch (n) { FS256_POW2_WIDTH_CASES(FS256_MEDIUM_MAX, FS256_MEDIUM_CALL) }
#undef FS256_MEDIUM_CALL
    FS_FN(softmax_medium_slice_n)(x, y, len, n, stream);
}

/* The blocks of 8 rows, then the rows after the last block one at a time. */
static void FS_FN(softmax_medium_slice)(const FS_T *x, FS_T *y, ptrdiff_t len, ptrdiff_t n, int stream)
{
    const ptrdiff_t whole = len - len % 8;
    FS_FN(softmax_medium_blocks)(x, y, whole, n, stream);
    for (ptrdiff_t b = whole; b < len; b++) FS_FN(softmax_row)(x + b * n, y + b * n, n, b + 1 < len ? x + (b + 1) * n : NULL);
}
#endif

#if defined(FS_USE_AVX512) && FS_IS_F32
/* Whether a float32 result in medium rows is streamed (*_medium_stream_span): large, in rows
   of a whole number of vectors, y aligned to its elements (every row then starts on a cache
   line or the same number of floats before one; the lines rows share are streamed too, see
   softmax_medium_stream_span). */
static inline int FS_FN(medium_rows_stream)(const float *y, ptrdiff_t nrows, ptrdiff_t ncols)
{
    return ((uintptr_t)y & 3) == 0 && ncols % 16 == 0 &&
           nrows * ncols * (ptrdiff_t)sizeof(float) >= FS_STREAM_MIN_BYTES;
}
#endif

static void FS_FN(softmax_like_rows)(const FS_T *x, FS_T *y, ptrdiff_t nrows, ptrdiff_t ncols, int nthreads,
                                     int log_out)
{
    int nt = fs_threads_for(nthreads, nrows, nrows * ncols);
#if defined(FS_USE_AVX512) && FS_IS_F32
    if (!log_out && ncols > FS512_SHORT_MAX && ncols <= FS512_MEDIUM_MAX && nrows >= 16) {
        /* each thread a span of whole blocks (the last one also takes the rows after them):
           the same blocks, hence the same bits, whatever the number of threads */
        const ptrdiff_t nblocks = nrows / 16;
        const int stream = FS_FN(medium_rows_stream)(y, nrows, ncols);
        FS_ROWS_FOR(k, nt,
                    ptrdiff_t r0 = nblocks * k / nt * 16;
                    ptrdiff_t r1 = k + 1 == nt ? nrows : nblocks * (k + 1) / nt * 16;
                    if (stream) FS_FN(softmax_medium_stream_span)(x + r0 * ncols, y + r0 * ncols, r1 - r0, ncols);
                    else FS_FN(softmax_medium_span)(x + r0 * ncols, y + r0 * ncols, r1 - r0, ncols));
        return;
    }
#endif
#ifdef FS_SHORT_ROWS
    if (ncols > 0 && ncols <= FS_SHORT_MAX && nrows >= FS_SHORT_BLOCK) {
        const ptrdiff_t slice = 256; /* rows per task: a multiple of the block */
        FS_ROWS_FOR(t, (nrows + slice - 1) / slice,
                    ptrdiff_t r0 = t * slice;
                    FS_FN(short_rows_slice)(x + r0 * ncols, y + r0 * ncols, nrows - r0 < slice ? nrows - r0 : slice,
                                            ncols, log_out));
        return;
    }
#endif
#if defined(FS_USE_AVX2)
    if (!log_out && ncols > FS256_SHORT_MAX && ncols <= FS256_MEDIUM_MAX && nrows >= 8) {
        /* each thread a span of whole blocks (the last one also the rows after them) */
        const ptrdiff_t nblocks = nrows / 8;
        const int stream = FS_FN(medium_rows_stream_avx2)(y, nrows, ncols);
        FS_ROWS_FOR(k, nt,
                    ptrdiff_t r0 = nblocks * k / nt * 8;
                    ptrdiff_t r1 = k + 1 == nt ? nrows : nblocks * (k + 1) / nt * 8;
                    FS_FN(softmax_medium_slice)(x + r0 * ncols, y + r0 * ncols, r1 - r0, ncols, stream));
        return;
    }
#endif
#if (defined(FS_USE_AVX512) && FS_IS_F32) || defined(FS_USE_AVX2)
    /* log_softmax results too large for the caches in rows of the batch path, streamed as
       softmax's medium rows (AVX-512: float32 rows of whole vectors; AVX2: rows of whole
       lines starting on lines); spans of whole batches */
#ifdef FS_USE_AVX512
    const int lsm_stream = ncols <= FS512_MEDIUM_MAX && FS_FN(medium_rows_stream)(y, nrows, ncols);
#else
    const int lsm_stream = ncols * (ptrdiff_t)sizeof(FS_T) <= FS_LSM_BATCH_MAX_BYTES &&
                           FS_FN(whole_lines_stream_avx2)(y, nrows, ncols);
#endif
    if (log_out && nrows >= FS_LSM_BATCH && lsm_stream) {
        const ptrdiff_t nbatches = nrows / FS_LSM_BATCH;
        FS_ROWS_FOR(k, nt,
                    ptrdiff_t r0 = nbatches * k / nt * FS_LSM_BATCH;
                    ptrdiff_t r1 = k + 1 == nt ? nrows : nbatches * (k + 1) / nt * FS_LSM_BATCH;
                    FS_FN(log_softmax_medium_stream_span)(x + r0 * ncols, y + r0 * ncols, r1 - r0, ncols));
        return;
    }
#endif
#if defined(FS_USE_AVX512) || defined(FS_USE_AVX2)
    if (log_out && ncols * (ptrdiff_t)sizeof(FS_T) <= FS_LSM_BATCH_MAX_BYTES && nrows >= FS_LSM_BATCH) {
        FS_ROWS_FOR(b, (nrows + FS_LSM_BATCH - 1) / FS_LSM_BATCH,
                    ptrdiff_t r0 = b * FS_LSM_BATCH;
                    ptrdiff_t len = nrows - r0 < FS_LSM_BATCH ? nrows - r0 : FS_LSM_BATCH;
                    FS_FN(log_softmax_row_batch)(x + r0 * ncols, y + r0 * ncols, len, ncols, r0 + len < nrows));
        return;
    }
#endif
#if defined(FS_USE_AVX512) || defined(FS_USE_AVX2)
    if (ncols >= FS_STREAM_MIN_COLS && nrows * ncols * (ptrdiff_t)sizeof(FS_T) >= FS_STREAM_MIN_BYTES) {
        FS_ROWS_FOR(k, nt,
                    FS_FN(softmax_like_stream_span)(x, y, nrows * k / nt, nrows * (k + 1) / nt, nrows, ncols, log_out));
        return;
    }
#endif
    FS_ROWS_FOR(r, nrows,
                FS_FN(softmax_like_row)(x + r * ncols, y + r * ncols, ncols,
                                        r + 1 < nrows ? x + (r + 1) * ncols : NULL, log_out));
}

static void FS_FN(softmax_rows)(const FS_T *x, FS_T *y, ptrdiff_t nrows, ptrdiff_t ncols, int nthreads)
{
    FS_FN(softmax_like_rows)(x, y, nrows, ncols, nthreads, 0);
}

static void FS_FN(log_softmax_rows)(const FS_T *x, FS_T *y, ptrdiff_t nrows, ptrdiff_t ncols, int nthreads)
{
    FS_FN(softmax_like_rows)(x, y, nrows, ncols, nthreads, 1);
}

#if defined(FS_USE_AVX512) || defined(FS_USE_AVX2)
/* logsumexp of `count` (at most FS_LSM_BATCH) rows of at most FS_CHUNK elements: every row's
   max and sums, then one vector log1p for the batch (AVX-512: 8 lanes; AVX2: 4, the same
   arithmetic), as log_softmax_row_batch does.  One row
   after another (a dependency chain each, and libm's log1p) took 65536x10 float32 6.7 ms,
   batched with libm's log1p 3.4, with the vector log1p 1.7 (torch 1.9).  float64 takes its
   accurate form: over random rows of 2-1024 elements the result is within 1.9-3.0 ulps of
   max(|max|, |log sum|), against 1.9-2.9 with libm's log1p.  Rows whose max is not finite
   take logsumexp_row. */
static void FS_FN(logsumexp_row_batch)(const FS_T *x, FS_T *out, ptrdiff_t count, ptrdiff_t n)
{
    FS_T m[FS_LSM_BATCH];
    double u[FS_LSM_BATCH], c[FS_LSM_BATCH];
    for (ptrdiff_t k = 0; k < FS_LSM_BATCH; k++) u[k] = 0.0;
    for (ptrdiff_t k = 0; k < count; k++) {
        m[k] = FS_ROW_MAX(x + k * n, n);
        if (!isfinite(m[k])) continue;
        double at_max;
        const double rest = FS_FN(lse_chunk_sums)(x + k * n, n, (double)m[k], &at_max);
        u[k] = (at_max - 1.0) + rest;
    }
    FS_FN(log1p_batch)(u, c, !FS_IS_F32);
    for (ptrdiff_t k = 0; k < count; k++)
        out[k] = isfinite(m[k]) ? (FS_T)((double)m[k] + c[k]) : FS_FN(logsumexp_row)(x + k * n, n);
}
#endif

static void FS_FN(logsumexp_rows)(const FS_T *x, FS_T *out, ptrdiff_t nrows, ptrdiff_t ncols, int nthreads)
{
    int nt = fs_threads_for(nthreads, nrows, nrows * ncols);
#if defined(FS_USE_AVX512) || defined(FS_USE_AVX2)
    if (ncols <= FS_CHUNK) { /* every row in a batch (the last one short), whatever the threads */
        FS_ROWS_FOR(b, (nrows + FS_LSM_BATCH - 1) / FS_LSM_BATCH,
                    ptrdiff_t r0 = b * FS_LSM_BATCH;
                    FS_FN(logsumexp_row_batch)(x + r0 * ncols, out + r0,
                                               nrows - r0 < FS_LSM_BATCH ? nrows - r0 : FS_LSM_BATCH, ncols));
        return;
    }
#endif
    FS_ROWS_FOR(r, nrows, out[r] = FS_FN(logsumexp_row)(x + r * ncols, ncols));
}

#ifdef FS_USE_AVX512
/* Rows [r0, r1) of a result too large for the caches, streamed, then fenced. */
static void FS_FN(backward_stream_span)(const FS_T *g, const FS_T *y, FS_T *gx, ptrdiff_t r0, ptrdiff_t r1,
                                        ptrdiff_t ncols, int log_out)
{
    for (ptrdiff_t r = r0; r < r1; r++)
        FS_FN(backward_row)(g + r * ncols, y + r * ncols, gx + r * ncols, ncols, log_out, 1);
    _mm_sfence(); /* this thread's streamed rows are complete */
}
#endif

static void FS_FN(backward_rows)(const FS_T *g, const FS_T *y, FS_T *gx, ptrdiff_t nrows, ptrdiff_t ncols,
                                 int nthreads, int log_out)
{
    int nt = fs_threads_for(nthreads, nrows, nrows * ncols);
#ifdef FS_USE_AVX512
    if (nrows * ncols * (ptrdiff_t)sizeof(FS_T) >= FS_STREAM_MIN_BYTES) {
        FS_ROWS_FOR(k, nt, FS_FN(backward_stream_span)(g, y, gx, nrows * k / nt, nrows * (k + 1) / nt, ncols, log_out));
        return;
    }
#endif
    FS_ROWS_FOR(r, nrows, FS_FN(backward_row)(g + r * ncols, y + r * ncols, gx + r * ncols, ncols, log_out, 0));
}

static void FS_FN(softmax_backward_rows)(const FS_T *g, const FS_T *y, FS_T *gx, ptrdiff_t nrows,
                                         ptrdiff_t ncols, int nthreads)
{
    FS_FN(backward_rows)(g, y, gx, nrows, ncols, nthreads, 0);
}

static void FS_FN(log_softmax_backward_rows)(const FS_T *g, const FS_T *y, FS_T *gx, ptrdiff_t nrows,
                                             ptrdiff_t ncols, int nthreads)
{
    FS_FN(backward_rows)(g, y, gx, nrows, ncols, nthreads, 1);
}

#undef FS_FN
#undef FS_EXP
#undef FS_TWO_SUM_ERR
#undef FS_SHORT_ROWS
#undef FS_SHORT_MAX
#undef FS_SHORT_BLOCK
#undef FS256_MEDIUM_MAX
#undef FS_ROW_MAX
#undef FS_ROW_MINMAX_F32
#undef FS_EXP_STORE_SUM_FAST_F32
#undef FS_EXP_STORE_SUM_BOUNDED
#undef FS_EXP_STORE_SUM
#undef FS_EXP_SUM_SPLIT
#undef FS_SCALE
#undef FS_SUB
