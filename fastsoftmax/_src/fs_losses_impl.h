/*
 * fs_losses_impl.h -- row kernels of nll_loss and cross_entropy (loss, and optionally its
 * gradient), for one element type and one instruction set.
 *
 * Included by fs_losses.h with FS_T (float or double), FS_SUF (f32 or f64) and FS_ISA
 * (baseline, avx2, avx512) defined.  Every function works on C-contiguous rows of `n`
 * classes.
 *
 * The maths, per row x with max m, e_i = exp(x_i - m), s = sum e_i, lse = ln s,
 * p_i = e_i / s and -log_softmax(x)_i = (m - x_i) + lse.  Every loss of SPEC section 3 is
 * sum_i a_i (-log p_i) for per-row coefficients a:
 *   class index t, smoothing eps, weights w (W = sum w):  a = (1-eps) w_t onehot(t) + (eps/n) w
 *   probabilities q:                                      a = w * ((1-eps) q + eps/n)
 * and its gradient with respect to x is p * sum(a) - a.  With eps = 0 and a class index the
 * loss is w_t * (-log p_t) alone (torch computes no smoothing term then, so -inf logits off
 * the target do not matter).
 *
 * Passes over a row: (1) max (read); (2) e_i = exp(x_i - m) (read x, store e into the
 * gradient, or into a per-thread scratch row for a loss-only call, so that both compute the
 * very same loss; the AVX-512 common case stores nothing without a gradient, its sums being
 * the same) with, in the same loop, the sums the loss needs; (3) the gradient,
 * g_i = e_i * k1 - k2 * a_i (in cache, read + write).  The gradient may be x itself: pass 2
 * reads x_i before it writes g_i, x_t is read before pass 2, and pass 3 no longer reads x.
 * On AVX-512 the common case (class index, no smoothing) stores nothing in pass 2 when there
 * is no gradient; when the gradient is too large for the caches, e goes to a per-thread
 * scratch row and pass 3 streams the gradient out (ce_index_row_plain).  Those streamed rows
 * of up to FS_CE_SCAN_MAX_BYTES (AVX-512: float32; AVX2: float32 and float64) also take the
 * next row's max (AVX2: and min) in pass 2, saving that row its pass 1 (ce_ahead).
 *
 * Sums run in blocks of FS_BLOCK elements: inside a block in FS_T with one accumulator per
 * SIMD lane, across blocks in double, compensated (fs_block_total), so the error does not grow
 * with the row length (a plain running sum was 4-40 ulps off a float64 loss at 1e6-4e6 classes).
 * In the block that holds the first maximum, the elements equal to m are counted rather than
 * added, so `rest` = s - 1 keeps its precision and lse = log1p(rest) (a confident prediction's
 * loss of 1e-7 is not rounded away against the 1; for the float32 rows of the row loop's
 * one-row path, the loop takes the log1p of eight rows at once on vectors, FS_CE_LSE_BATCH).
 * The target column of the gradient, where p_t - 1 would cancel, is computed in double: as
 * (e_t - 1 - rest) / (1 + rest) from the stored exp in the one-row path
 * (target_grad_from_exp), as expm1(log p_t) elsewhere.
 *
 * Special values follow torch: a row whose max is not finite (+inf somewhere, or every entry
 * -inf) has NaN loss and gradient; NaN anywhere propagates; a zero coefficient times an
 * infinite -log p gives NaN (IEEE, as torch's products do), and an infinite coefficient
 * gives an infinite loss, or NaN where torch's -log p is 0 (sum_rounds_to_one): the sums
 * a_i (m - x_i) leave out the elements equal to m, whose term is 0 for a finite a_i, so that
 * an infinite a_i there adds a_i * lse through sum(a) * lse, as torch's a_i * (-log p_i)
 * does, not inf * 0.  Ignored rows have loss 0 and gradient 0 whatever their values.
 */
#define FS_FN(name) FS_CAT(FS_CAT(name, FS_SUF), FS_ISA)
/* A streamed gradient row still being written (AVX-512: fs512_pending_*; AVX2: pending_row of
   fs_avx2_stream_impl.h); elsewhere unused. */
#ifdef FS_USE_AVX512
#define FS_PENDING FS_CAT(fs512_pending, FS_SUF)
#elif defined(FS_USE_AVX2)
#include "fs_avx2_stream_impl.h"
#define FS_PENDING FS_FN(pending_row)
#else
#define FS_PENDING void
#endif
#define FS_EXP FS_CAT(fs_exp, FS_SUF)

/* The rows' loop (ce_rows_span) tells each row which row follows it in the span (`row`, or
   NULL) and which row to prefetch if it scans that one (`pf`); a streamed gradient row takes
   the next row's max (AVX2: and min) during its exp pass (`known`, `max`, `min`), which saves
   that row its own max pass, as softmax_like_stream_span does (AVX-512: float32 only; there
   float64 softmax's rows of up to FS512_AHEAD_MAX_F64 columns do too).  Elsewhere `known`
   stays 0.  Only rows of up to FS_CE_SCAN_MAX_BYTES do: this row, its exps, the pending row's
   exps, the next row and the one prefetched must stay in the caches together.  On AMD Zen 4
   (float32, one process, alternating with the kernels that keep the max pass): 4096x1000
   1.01-1.16x as fast, 2048x2000 1.05-1.11x, but 2048x4096 0.95-0.99x, 1024x8192 0.94-0.95x,
   512x16384 0.90-0.93x, 512x50257 0.91-1.04x. */
#ifndef FS_CE_SCAN_MAX_BYTES
#define FS_CE_SCAN_MAX_BYTES 8192
#endif
/* The losses of the one-row path's rows, float32 on AVX-512 and AVX2: each row leaves its
   rest, m - x_t, w_t, whether x_t is the max, and its index here, and the row loop
   (ce_rows_span) takes log1p of FS_CE_LSE_BATCH rests at once on vectors
   (fs512_log1p_accurate_pd: worst 1.73 ulp of a double against libm's 0.79, far below a
   float32 loss's rounding) instead of libm's log1p a row: 10-17 ns a row less (one process
   against the previous build: 4096x1000 with out= 1.03x as fast, 1024x1000 1.04x, 16384x128
   1.09x).  Every class-index row without smoothing that the loop takes goes this way, with a
   gradient or without, streamed or in cache, so they all give the same bits: which rows take
   the loop depends on the shape, the targets and the smoothing, never on the gradient.  Short
   rows take it only in calls of fewer rows than a short block; in larger calls the short-row
   blocks use their own float32 log1p, and the rows left over libm's.  float64 keeps libm's
   log1p: there the ulp is the result's. */
#if (defined(FS_USE_AVX512) || defined(FS_USE_AVX2)) && FS_IS_F32
#define FS_CE_LSE_BATCH 8
typedef struct {
    double rest[FS_CE_LSE_BATCH], base[FS_CE_LSE_BATCH], wt[FS_CE_LSE_BATCH];
    ptrdiff_t row[FS_CE_LSE_BATCH];
    int at_max[FS_CE_LSE_BATCH];
    int count;
    ptrdiff_t this_row; /* the row being computed (set by the row loop) */
} FS_FN(ce_lse_batch);
#endif

typedef struct {
    const FS_T *row, *pf;
    int known;
    FS_T max, min;
#ifdef FS_CE_LSE_BATCH
    FS_FN(ce_lse_batch) *lse; /* or NULL: the row computes its loss itself */
#endif
} FS_FN(ce_ahead);

/* Max of a row, and the start of the first block of FS_BLOCK elements that holds it. */
static inline FS_T FS_FN(loss_row_max)(const FS_T *x, ptrdiff_t n, ptrdiff_t *first_block)
{
    FS_T m = -(FS_T)INFINITY;
    ptrdiff_t k = 0;
    for (ptrdiff_t b = 0; b < n; b += FS_BLOCK) {
        ptrdiff_t end = b + FS_BLOCK < n ? b + FS_BLOCK : n;
        FS_T bm = -(FS_T)INFINITY;
        FS_OMP_SIMD_MAX(bm)
        for (ptrdiff_t i = b; i < end; i++) bm = x[i] > bm ? x[i] : bm;
        if (bm > m) {
            m = bm;
            k = b;
        }
    }
    *first_block = k;
    return m;
}

/* The target column of the gradient, w_t gs (p_t - 1), with p_t - 1 = expm1(log p_t) (no
   cancellation when p_t is close to 1); NaN when w_t gs is infinite, as torch's
   log_softmax backward gives there (-inf - p_t * -inf). */
static inline double FS_FN(target_grad)(double wt_gs, double nll)
{
    return isinf(wt_gs) ? (double)NAN : wt_gs * expm1(-nll);
}

/* The same from the pass-2 exp e_t = exp(x_t - m) and rest (the sum of the exps without one
   maximum), without expm1: p_t - 1 = (e_t - (1 + rest)) / (1 + rest).  At the max (x_t == m,
   e_t = 1) that is -rest / (1 + rest), exact where rest is tiny; elsewhere 1 + rest >= 1 + e_t,
   so p_t < 1/2 and (e_t - 1) - rest adds two negative terms: no cancellation.  The error is
   that of e_t (float32: the exp's, plus |x_t - m| 2^-24 relative from the rounding of
   x_t - m): in absolute terms at most about p_t (2^-23 + |x_t - m| 2^-24) < 0.8 2^-23 against
   |p_t - 1| > 1/2, so one to two ulps of the float32 result at most (float64 likewise; the
   error of rest enters only times p_t / (1 + rest)).  It saves a libm call a row (C loop, 16x1000
   float32 in L2: 0.93x the time of the whole cross-entropy). */
static inline double FS_FN(target_grad_from_exp)(double wt_gs, FS_T et, int at_max, double rest)
{
    const double num = at_max ? -rest : ((double)et - 1.0) - rest;
    return isinf(wt_gs) ? (double)NAN : wt_gs * (num / (1.0 + rest));
}

/* torch computes -log p = lse - (x - m) in the compute dtype, so that at a row's max it is
   exactly 0 once the sum of the exps, 1 + rest, rounds to 1; we keep the precise log1p(rest).
   The two differ in kind only for an infinite coefficient there: inf * 0 is NaN in torch.
   These helpers give torch's result in that case and the precise one elsewhere. */
static inline int FS_FN(sum_rounds_to_one)(double rest)
{
    return (FS_T)(1.0 + rest) == (FS_T)1;
}

/* w * (-log p) of one class (nll; at_max: the class holds the row's max). */
static inline double FS_FN(weighted_nll)(double w, double nll, int at_max, double rest)
{
    return isinf(w) && at_max && FS_FN(sum_rounds_to_one)(rest) ? w * 0.0 : w * nll;
}

/* The loss's sums split -log p_i = (m - x_i) + lse into sum a_i (m - x_i) + sum(a) * lse,
   which is not torch's sum a_i ((m - x_i) + lse) when an a_i is infinite and torch's lse is 0
   (the sum rounds to 1, above): the product sum(a) * lse is then inf * lse, or inf * 0 = NaN,
   where torch's only product by 0 is that of the max element.  That element is then the only
   one whose e = exp(x - m) (pass 2's stores) is 1 (rest < 1): its index, or -1; the caller
   adds a_k * 0 in place of sum(a) * lse. */
static ptrdiff_t FS_FN(sole_max_index)(const FS_T *e, ptrdiff_t n)
{
    for (ptrdiff_t i = 0; i < n; i++)
        if (e[i] == (FS_T)1) return i;
    return -1;
}

static void FS_FN(loss_fill)(FS_T *g, ptrdiff_t n, FS_T v)
{
    FS_OMP_SIMD
    for (ptrdiff_t i = 0; i < n; i++) g[i] = v;
}

/*
 * Pass 2 over x[b:end] for a class-index target: e_i = exp(x_i - m), stored in g[i].  Adds
 * sum e_i to *rest -- without the elements equal to m when EXCL, whose number goes to *cnt --
 * and, when SMOOTH, sum w_i (m - x_i) over x_i != m to *s1 (w_i = 1 unless WEIGHTED).  The
 * flags are compile-time constants at every call, so each combination is its own vectorised
 * loop.
 */
FS_LOSS_INLINE void FS_FN(ce_index_block)(const FS_T *x, FS_T *g, const FS_T *w, ptrdiff_t b,
                                          ptrdiff_t end, FS_T m, const int EXCL, const int SMOOTH,
                                          const int WEIGHTED, fs_block_total *rest, double *cnt, fs_block_total *s1)
{
    /* One loop per combination, each reducing only the sums it needs: GCC finishes every
       `omp simd` reduction with a scalar pass over the lanes, which costs per block. */
    FS_T br = 0, bc = 0, bs = 0;
    if (EXCL && SMOOTH) {
        FS_LOSS_SIMD_SUM3(br, bc, bs)
        for (ptrdiff_t i = b; i < end; i++) {
            FS_T xi = x[i], d = xi - m, e = FS_EXP(d, 0);
            g[i] = e;
            int is_max = xi == m;
            br += is_max ? (FS_T)0 : e;
            bc += is_max ? (FS_T)1 : (FS_T)0;
            bs += is_max ? (FS_T)0 : WEIGHTED ? w[i] * -d : -d;
        }
    } else if (EXCL) {
        FS_OMP_SIMD_SUM2(br, bc)
        for (ptrdiff_t i = b; i < end; i++) {
            FS_T xi = x[i], e = FS_EXP(xi - m, 0);
            g[i] = e;
            int is_max = xi == m;
            br += is_max ? (FS_T)0 : e;
            bc += is_max ? (FS_T)1 : (FS_T)0;
        }
    } else if (SMOOTH) {
        FS_OMP_SIMD_SUM2(br, bs)
        for (ptrdiff_t i = b; i < end; i++) {
            FS_T d = x[i] - m, e = FS_EXP(d, 0);
            g[i] = e;
            br += e;
            bs += d == 0 ? (FS_T)0 : WEIGHTED ? w[i] * -d : -d;
        }
    } else {
        FS_OMP_SIMD_SUM(br)
        for (ptrdiff_t i = b; i < end; i++) {
            FS_T e = FS_EXP(x[i] - m, 0);
            g[i] = e;
            br += e;
        }
    }
    fs_block_total_add(rest, (double)br);
    *cnt += (double)bc;
    fs_block_total_add(s1, (double)bs);
}

FS_LOSS_INLINE void FS_FN(ce_index_pass2)(const FS_T *x, FS_T *g, const FS_T *w, ptrdiff_t n,
                                          FS_T m, ptrdiff_t kb, const int SMOOTH, const int WEIGHTED,
                                          fs_block_total *rest, double *cnt, fs_block_total *s1)
{
    for (ptrdiff_t b = 0; b < n; b += FS_BLOCK) {
        ptrdiff_t end = b + FS_BLOCK < n ? b + FS_BLOCK : n;
        if (b == kb)
            FS_FN(ce_index_block)(x, g, w, b, end, m, 1, SMOOTH, WEIGHTED, rest, cnt, s1);
        else
            FS_FN(ce_index_block)(x, g, w, b, end, m, 0, SMOOTH, WEIGHTED, rest, cnt, s1);
    }
}

/*
 * One row, class index t in [0, n): returns the row's loss
 *   eps = 0:  w_t (-log p_t)
 *   eps > 0:  (1-eps) w_t (-log p_t) + (eps/n) sum_i w_i (-log p_i)      (torch's definition)
 * g receives exp(x - m) (it is scratch space when !want_grad; the AVX-512 common case may
 * leave it untouched then) and then, when want_grad,
 * gs * d(loss)/dx.  g may be x itself.
 */
#if defined(FS_USE_AVX512) || defined(FS_USE_AVX2)
#ifdef FS_USE_AVX512
#define FS_LOSS_ROW_MAX FS_CAT(fs512_row_max, FS_SUF)
#define FS_LOSS_EXP_STORE_SUM_SPLIT FS_CAT(fs512_exp_store_sum_split, FS_SUF)
#define FS_LOSS_SCALE FS_CAT(fs512_scale, FS_SUF)
#else /* AVX2 takes fs256_row_max_bounded_T instead of a row max */
#define FS_LOSS_EXP_STORE_SUM_SPLIT FS_CAT(fs256_exp_store_sum_split, FS_SUF)
#define FS_LOSS_SCALE FS_CAT(fs256_scale, FS_SUF)
#endif
#if defined(FS_USE_AVX2)
#define FS_LOSS_BOUNDED , bounded
#else
#define FS_LOSS_BOUNDED
#endif
/* The common case (class index, no label smoothing; weights only scale the row) on the
   hand-vectorised primitives: max; e = exp(x - m) into g with the split sum; g *= k1; then
   the target column.  The same maths as ce_index_row below.
   On AVX-512, without a gradient the sums are taken without storing anything (the same
   sums, bit for bit); with `stream` (a per-thread scratch row, given when the gradient is too
   large for the caches, see FS_STREAM_MIN_BYTES) the exps go to the scratch row, which stays
   in L1/L2, and the gradient scratch * k1, with the target column, is written with streaming
   stores, software-pipelined as softmax's (softmax_like_stream_span): `pend` is the previous
   row's gradient, streamed during this row's exp pass; this row's gradient is left pending
   in its place (the caller alternates two scratch rows and finishes the last one).  x may
   be g. */
static double FS_FN(ce_index_row_plain)(const FS_T *x, ptrdiff_t n, ptrdiff_t t, const FS_T *w, FS_T *g,
                                        int want_grad, double gs, const FS_T *next, FS_T *stream,
                                        FS_PENDING *pend, FS_FN(ce_ahead) *ahead)
{
#if defined(FS_USE_AVX2)
    int bounded; /* the row within FS_EXACT_SPREAD (FS_SPREAD_F64) of its max: the cheaper exp, the same values */
    FS_T m;
    if (ahead != NULL && ahead->known) { /* its max and min taken during the previous row's exp pass */
        m = ahead->max;
        bounded = m - ahead->min <= (FS_IS_F32 ? FS_EXACT_SPREAD : FS_SPREAD_F64);
    } else {
        m = FS_CAT(fs256_row_max_bounded, FS_SUF)(x, n, &bounded);
    }
#else
    /* the max, exact in any order, may have been taken during the previous row's exp pass */
    const FS_T m = ahead != NULL && ahead->known ? ahead->max : FS_LOSS_ROW_MAX(x, n);
#endif
    if (ahead != NULL) ahead->known = 0;
    const FS_T xt = x[t];
    if (!isfinite(m)) {
        if (want_grad) FS_FN(loss_fill)(g, n, (FS_T)NAN);
        return NAN;
    }
    /* exps in chunks, each with a prefetch of the same span of the next row, so that the next
       row's max pass finds it in cache (the streamed gradient: spread over the chunk, which
       also advances the pending row; a row that scans the next one prefetches the row after
       it instead) */
#if defined(FS_USE_AVX512) || defined(FS_USE_AVX2)
    FS_T *e = want_grad && stream != NULL ? stream : g; /* where the exps go, if anywhere */
#if (defined(FS_USE_AVX512) && FS_IS_F32) || defined(FS_USE_AVX2)
    /* a streamed row (AVX-512: float32) scans the next one for its max (AVX2: and min) and
       prefetches the row after */
    const FS_T *scan = e != g && ahead != NULL ? ahead->row : NULL;
    const FS_T *pf = scan != NULL ? ahead->pf : next;
    FS_T next_max = -(FS_T)INFINITY, next_min = (FS_T)INFINITY;
#endif
#else
    FS_T *e = g;
    (void)stream;
    (void)pend;
#endif
    fs_block_total sums = {0.0, 0.0};
    double cnt = 0.0;
    for (ptrdiff_t c = 0; c < n; c += FS_CHUNK) {
        ptrdiff_t len = n - c < FS_CHUNK ? n - c : FS_CHUNK;
        double k;
#ifdef FS_USE_AVX512
        if (e != g) {
#if FS_IS_F32
            FS_T cmax = 0;
            const double chunk = fs512_exp_store_sum_split_piped_f32(x + c, m, e + c, len, &k, pend,
                                                                     pf != NULL ? pf + c : NULL,
                                                                     scan != NULL ? scan + c : NULL, &cmax);
            if (scan != NULL) next_max = cmax > next_max ? cmax : next_max; /* a NaN may be dropped: its row is NaN anyway */
#else
            const double chunk = FS_CAT(fs512_exp_store_sum_split_piped, FS_SUF)(x + c, m, e + c, len, &k, pend,
                                                                                 next != NULL ? next + c : NULL);
#endif
            fs_block_total_add_at(&sums, chunk, c == 0);
            cnt += k;
            continue;
        }
#elif defined(FS_USE_AVX2)
        if (e != g) { /* the exps into the scratch row, the previous row's gradient streamed meanwhile */
            FS_T cmax = 0, cmin = 0;
            const double chunk = FS_FN(piped_sums)(x + c, m, e + c, len, bounded, FS256_PIPE_CE, &k, pend,
                                                   scan != NULL ? scan + c : NULL, &cmax, &cmin,
                                                   pf != NULL ? pf + c : NULL);
            if (scan != NULL) { /* exact in any order (a NaN may be dropped: its row is NaN anyway) */
                next_max = cmax > next_max ? cmax : next_max;
                next_min = cmin < next_min ? cmin : next_min;
            }
            fs_block_total_add_at(&sums, chunk, c == 0);
            cnt += k;
            continue;
        }
#endif
        if (next != NULL) fs_prefetch_span(next + c, (size_t)len * sizeof(FS_T), x + c);
#ifdef FS_USE_AVX512
        if (!want_grad) fs_block_total_add_at(&sums, FS_CAT(fs512_exp_sum_split, FS_SUF)(x + c, m, len, &k), c == 0);
        else
#endif
            fs_block_total_add_at(&sums, FS_LOSS_EXP_STORE_SUM_SPLIT(x + c, m, e + c, len, &k FS_LOSS_BOUNDED), c == 0);
        cnt += k;
    }
#if (defined(FS_USE_AVX512) && FS_IS_F32) || defined(FS_USE_AVX2)
    if (scan != NULL) {
        ahead->known = 1;
        ahead->max = next_max;
        ahead->min = next_min;
    }
#endif
    const double rest = fs_block_total_value(&sums) + (cnt - 1.0);
    const double wt = w != NULL ? (double)w[t] : 1.0;
    double loss;
#ifdef FS_CE_LSE_BATCH
    if (ahead != NULL && ahead->lse != NULL) { /* the row loop's vector log1p gives the loss */
        FS_FN(ce_lse_batch) *b = ahead->lse;
        b->rest[b->count] = rest;
        b->base[b->count] = (double)m - (double)xt;
        b->wt[b->count] = wt;
        b->at_max[b->count] = xt == m;
        b->row[b->count++] = b->this_row;
        loss = 0.0; /* replaced when the batch is done */
    } else
#endif
        loss = FS_FN(weighted_nll)(wt, log1p(rest) + ((double)m - (double)xt), xt == m, rest);
    if (!want_grad) return loss;
    const double wt_gs = wt * gs;
    const FS_T k1 = (FS_T)(wt_gs / (1.0 + rest));
    const FS_T gt = (FS_T)FS_FN(target_grad_from_exp)(wt_gs, e[t], xt == m, rest);
#ifdef FS_USE_AVX512
    if (e != g) { /* the target column goes out with the streamed row */
#if FS_IS_F32
        /* a line shared with the previous row goes out as one streamed vector (fs512_carry_f32),
           as softmax's rows do: written with two ordinary stores, it was read from memory
           first (4096x1000 float32, one process against the previous build: 1.16-1.33x as fast) */
        fs512_carry_f32 carry; /* nothing carried; its 64-byte line is written before it is read */
        carry.y = NULL;
        carry.lanes = 0;
        fs512_pending_finish_carry_f32(pend, &carry); /* the rest of the previous row */
        fs512_pending_begin_join_f32(pend, &carry, e, m, k1, g, n, t, gt, FS512_SCALE);
#else
        FS_CAT(fs512_pending_finish, FS_SUF)(pend); /* the rest of the previous row */
        FS_CAT(fs512_pending_begin, FS_SUF)(pend, e, m, k1, g, n, t, gt, FS512_SCALE);
#endif
        return loss;
    }
#elif defined(FS_USE_AVX2)
    if (e != g) { /* the target column goes out with the streamed row */
        FS_FN(pending_finish)(pend); /* the rest of the previous row */
        FS_FN(pending_begin)(pend, e, m, k1, g, n, 0, t, gt);
        return loss;
    }
#endif
    FS_LOSS_SCALE(g, k1, g, n);
    g[t] = gt;
    return loss;
}
#undef FS_LOSS_ROW_MAX
#undef FS_LOSS_EXP_STORE_SUM_SPLIT
#undef FS_LOSS_SCALE
#undef FS_LOSS_BOUNDED
#endif

static double FS_FN(ce_index_row)(const FS_T *x, ptrdiff_t n, ptrdiff_t t, const FS_T *w,
                                  double wsum, double eps, FS_T *g, int want_grad, double gs,
                                  const FS_T *next, FS_T *stream, FS_PENDING *pend, FS_FN(ce_ahead) *ahead)
{
#if defined(FS_USE_AVX512) || defined(FS_USE_AVX2)
    if (!(eps > 0.0)) return FS_FN(ce_index_row_plain)(x, n, t, w, g, want_grad, gs, next, stream, pend, ahead);
#endif
    if (ahead != NULL) ahead->known = 0;
    (void)next;
    (void)stream;
    (void)pend;
    ptrdiff_t kb;
    const FS_T m = FS_FN(loss_row_max)(x, n, &kb);
    const FS_T xt = x[t];
    if (!isfinite(m)) {
        if (want_grad) FS_FN(loss_fill)(g, n, (FS_T)NAN);
        return NAN;
    }
    const int smooth = eps > 0.0, weighted = w != NULL;
    fs_block_total sums = {0.0, 0.0}, smooth_sums = {0.0, 0.0};
    double cnt = 0.0;
    if (!smooth) FS_FN(ce_index_pass2)(x, g, w, n, m, kb, 0, 0, &sums, &cnt, &smooth_sums);
    else if (weighted) FS_FN(ce_index_pass2)(x, g, w, n, m, kb, 1, 1, &sums, &cnt, &smooth_sums);
    else FS_FN(ce_index_pass2)(x, g, w, n, m, kb, 1, 0, &sums, &cnt, &smooth_sums);
    const double rest = fs_block_total_value(&sums) + (cnt - 1.0); /* sum of e_i over every element but one maximum */
    const double s1 = fs_block_total_value(&smooth_sums);
    const double lse = log1p(rest);
    const double s = 1.0 + rest;
    const double wt = weighted ? (double)w[t] : 1.0;
    const double nll = lse + ((double)m - (double)xt); /* -log p_t */
    const double per_class = eps / (double)n;          /* smoothing mass of each class */
    double loss = FS_FN(weighted_nll)(wt, nll, xt == m, rest);
    if (smooth) {
        double smooth_sum = s1 + wsum * lse; /* sum_i w_i (-log p_i) */
        if (!isfinite(wsum) && FS_FN(sum_rounds_to_one)(rest)) { /* s1 + w_k * 0 (see sole_max_index) */
            const ptrdiff_t k = FS_FN(sole_max_index)(g, n);
            smooth_sum = s1 + (k < 0 ? 0.0 : (weighted ? (double)w[k] : 1.0) * 0.0);
        }
        loss = (1.0 - eps) * loss + per_class * smooth_sum;
    }
    if (!want_grad) return loss;

    /* Pass 3: g_i = gs * (p_i * sum(a) - a_i), then the target column in double.  gs scales w_t
       before anything else, as torch's nll backward does: a mean over weights that sum to 0
       (gs = inf) then gives a NaN row for a zero-weight target, as in torch. */
    const double wt_gs = wt * gs;
    const double coef_gs = smooth ? (1.0 - eps) * wt_gs + per_class * wsum * gs : wt_gs; /* gs*sum(a) */
    const FS_T k1 = (FS_T)(coef_gs / s);
    if (!smooth) {
        FS_OMP_SIMD
        for (ptrdiff_t i = 0; i < n; i++) g[i] = g[i] * k1;
    } else {
        const FS_T k2 = (FS_T)(gs * per_class);
        if (weighted) {
            FS_OMP_SIMD
            for (ptrdiff_t i = 0; i < n; i++) g[i] = g[i] * k1 - k2 * w[i];
        } else {
            FS_OMP_SIMD
            for (ptrdiff_t i = 0; i < n; i++) g[i] = g[i] * k1 - k2;
        }
    }
    /* p_t - 1 = expm1(log p_t): no cancellation when p_t is close to 1. */
    double gt = FS_FN(target_grad)(wt_gs, nll);
    if (smooth) {
        /* p_t in the compute dtype when a weight is infinite: where it underflows to 0 there,
           torch's wsum * p_t is inf * 0 = NaN */
        const double pt = isfinite(wsum) ? exp(-nll) : (double)(FS_T)exp(-nll);
        gt = (1.0 - eps) * gt + per_class * gs * (wsum * pt - (weighted ? wt : 1.0));
    }
    g[t] = (FS_T)gt;
    return loss;
}

/*
 * Pass 2 over x[b:end] for probability targets q: as ce_index_block for e_i and the sum, plus
 * a_i = w_i ((1-eps) q_i + eps/n) (keep = 1-eps, add = eps/n; just q_i when !SMOOTH, w_i = 1
 * unless WEIGHTED): *sa += sum a_i (m - x_i) over x_i != m, *sb += sum a_i.
 *
 * float32: the block's sums run in FS_PROB_LANES explicit lanes (element b + 8k + j in lane j:
 * at most 16 additions per lane for a block of FS_BLOCK), then a fixed tree, so the error
 * model of the float32 sums (tests/test_properties.py, _sum_error) holds however the compiler
 * treats the loop.  An `omp simd` reduction leaves the lanes to the vectoriser, and a build
 * that does not vectorise the loop (UBSan's instrumentation, measured) added the block's 128
 * terms one after another: a float32 loss 1.36 times the test's bound on logits of 1e8.
 * float64 (whose bound holds for any order) keeps the `omp simd` reduction: the explicit lanes
 * measured 1.3-1.5x its time there.
 */
#define FS_PROB_LANES 8 /* prob_lanes_total adds exactly 8 */

/* Element i's terms: g[i] = e_i, and its share of the four sums (br, bc only when EXCL). */
FS_LOSS_INLINE void FS_FN(ce_prob_term)(const FS_T *x, FS_T *g, const FS_T *q, const FS_T *w, ptrdiff_t i,
                                        FS_T m, FS_T keep, FS_T add, const int EXCL, const int SMOOTH,
                                        const int WEIGHTED, FS_T *br, FS_T *bc, FS_T *ba, FS_T *bb)
{
    const FS_T xi = x[i];
    FS_T a = SMOOTH ? q[i] * keep + add : q[i];
    if (WEIGHTED) a = a * w[i];
    const FS_T d = xi - m, e = FS_EXP(d, 0);
    g[i] = e;
    const int is_max = EXCL ? xi == m : d == 0;
    *br += EXCL && is_max ? (FS_T)0 : e;
    if (EXCL) *bc += is_max ? (FS_T)1 : (FS_T)0;
    *ba += is_max ? (FS_T)0 : a * -d;
    *bb += a;
}

/* The lanes' total: pairs (0, 4), (1, 5), (2, 6), (3, 7), then (0, 2), (1, 3), then (0, 1)
   (written for FS_PROB_LANES == 8). */
FS_LOSS_INLINE double FS_FN(prob_lanes_total)(const FS_T *v)
{
    const FS_T a0 = v[0] + v[4], a1 = v[1] + v[5], a2 = v[2] + v[6], a3 = v[3] + v[7];
    return (double)((a0 + a2) + (a1 + a3));
}

FS_LOSS_INLINE void FS_FN(ce_prob_block)(const FS_T *x, FS_T *g, const FS_T *q, const FS_T *w,
                                         ptrdiff_t b, ptrdiff_t end, FS_T m, FS_T keep, FS_T add,
                                         const int EXCL, const int SMOOTH, const int WEIGHTED,
                                         fs_block_total *rest, double *cnt, fs_block_total *sa, fs_block_total *sb)
{
#if FS_IS_F32
    FS_T br[FS_PROB_LANES] = {0}, bc[FS_PROB_LANES] = {0}, ba[FS_PROB_LANES] = {0}, bb[FS_PROB_LANES] = {0};
    ptrdiff_t i = b;
    for (; i + FS_PROB_LANES <= end; i += FS_PROB_LANES) {
        FS_OMP_SIMD
        for (int j = 0; j < FS_PROB_LANES; j++)
            FS_FN(ce_prob_term)(x, g, q, w, i + j, m, keep, add, EXCL, SMOOTH, WEIGHTED, &br[j], &bc[j],
                                &ba[j], &bb[j]);
    }
    for (int j = 0; i + j < end; j++)
        FS_FN(ce_prob_term)(x, g, q, w, i + j, m, keep, add, EXCL, SMOOTH, WEIGHTED, &br[j], &bc[j], &ba[j],
                            &bb[j]);
    fs_block_total_add(rest, FS_FN(prob_lanes_total)(br));
    if (EXCL) *cnt += FS_FN(prob_lanes_total)(bc);
    fs_block_total_add(sa, FS_FN(prob_lanes_total)(ba));
    fs_block_total_add(sb, FS_FN(prob_lanes_total)(bb));
#else
    FS_T br = 0, bc = 0, ba = 0, bb = 0;
    if (EXCL) {
        FS_LOSS_SIMD_SUM4(br, bc, ba, bb)
        for (ptrdiff_t i = b; i < end; i++)
            FS_FN(ce_prob_term)(x, g, q, w, i, m, keep, add, 1, SMOOTH, WEIGHTED, &br, &bc, &ba, &bb);
    } else {
        FS_LOSS_SIMD_SUM3(br, ba, bb)
        for (ptrdiff_t i = b; i < end; i++)
            FS_FN(ce_prob_term)(x, g, q, w, i, m, keep, add, 0, SMOOTH, WEIGHTED, &br, &bc, &ba, &bb);
    }
    fs_block_total_add(rest, (double)br);
    *cnt += (double)bc;
    fs_block_total_add(sa, (double)ba);
    fs_block_total_add(sb, (double)bb);
#endif
}

FS_LOSS_INLINE void FS_FN(ce_prob_pass2)(const FS_T *x, FS_T *g, const FS_T *q, const FS_T *w,
                                         ptrdiff_t n, FS_T m, ptrdiff_t kb, FS_T keep, FS_T add,
                                         const int SMOOTH, const int WEIGHTED, fs_block_total *rest,
                                         double *cnt, fs_block_total *sa, fs_block_total *sb)
{
    for (ptrdiff_t b = 0; b < n; b += FS_BLOCK) {
        ptrdiff_t end = b + FS_BLOCK < n ? b + FS_BLOCK : n;
        if (b == kb)
            FS_FN(ce_prob_block)(x, g, q, w, b, end, m, keep, add, 1, SMOOTH, WEIGHTED, rest, cnt,
                                 sa, sb);
        else
            FS_FN(ce_prob_block)(x, g, q, w, b, end, m, keep, add, 0, SMOOTH, WEIGHTED, rest, cnt,
                                 sa, sb);
    }
}

#define FS_PROB_PASS2(SMOOTH, WEIGHTED)                                                          \
    FS_FN(ce_prob_pass2)(x, g, q, w, n, m, kb, keep, add, SMOOTH, WEIGHTED, &sums, &cnt, &a_sums, &a_total)

/*
 * One row of probability targets q (never ignored): returns sum_i a_i (-log p_i); g receives
 * exp(x - m) and then, when want_grad, gs * (p * sum(a) - a).  g may be x, but not q or w.
 */
static double FS_FN(ce_prob_row)(const FS_T *x, const FS_T *q, ptrdiff_t n, const FS_T *w,
                                 double eps, FS_T *g, int want_grad, double gs)
{
    if (n == 0) return 0.0;
    ptrdiff_t kb;
    const FS_T m = FS_FN(loss_row_max)(x, n, &kb);
    if (!isfinite(m)) {
        if (want_grad) FS_FN(loss_fill)(g, n, (FS_T)NAN);
        return NAN;
    }
    const int smooth = eps > 0.0, weighted = w != NULL;
    const FS_T keep = (FS_T)(1.0 - eps), add = (FS_T)(eps / (double)n);
    fs_block_total sums = {0.0, 0.0}, a_sums = {0.0, 0.0}, a_total = {0.0, 0.0};
    double cnt = 0.0;
    if (smooth && weighted) FS_PROB_PASS2(1, 1);
    else if (smooth) FS_PROB_PASS2(1, 0);
    else if (weighted) FS_PROB_PASS2(0, 1);
    else FS_PROB_PASS2(0, 0);
    const double rest = fs_block_total_value(&sums) + (cnt - 1.0);
    const double sa = fs_block_total_value(&a_sums), sb = fs_block_total_value(&a_total);
    const double lse = log1p(rest);
    double loss = sa + sb * lse;
    if (!isfinite(sb) && FS_FN(sum_rounds_to_one)(rest)) { /* sa + a_k * 0 (see sole_max_index) */
        const ptrdiff_t k = FS_FN(sole_max_index)(g, n);
        const FS_T ak = k < 0 ? 0 : (smooth ? q[k] * keep + add : q[k]) * (weighted ? w[k] : (FS_T)1);
        loss = sa + (double)ak * 0.0;
    }
    if (!want_grad) return loss;

    const FS_T k1 = (FS_T)(gs * sb / (1.0 + rest));
    const FS_T k3 = (FS_T)gs;
    if (smooth && weighted) {
        FS_OMP_SIMD
        for (ptrdiff_t i = 0; i < n; i++) g[i] = g[i] * k1 - k3 * ((q[i] * keep + add) * w[i]);
    } else if (smooth) {
        FS_OMP_SIMD
        for (ptrdiff_t i = 0; i < n; i++) g[i] = g[i] * k1 - k3 * (q[i] * keep + add);
    } else if (weighted) {
        FS_OMP_SIMD
        for (ptrdiff_t i = 0; i < n; i++) g[i] = g[i] * k1 - k3 * (q[i] * w[i]);
    } else {
        FS_OMP_SIMD
        for (ptrdiff_t i = 0; i < n; i++) g[i] = g[i] * k1 - k3 * q[i];
    }
    return loss;
}
#undef FS_PROB_PASS2

/* ---- drivers over rows: threads split the rows statically; one loss per row ---- */

/* The loss of row r with class-index targets (0 for an ignored row, whose gradient row is
   zeroed), exp(x - m) going to gr (the gradient row, or a scratch row without a gradient). */
static inline double FS_FN(ce_index_row_or_ignored)(const FS_T *xr, int64_t t, ptrdiff_t ncols, const FS_T *w,
                                                    double wsum, double eps, FS_T *gr, int want_grad, double gs,
                                                    const FS_T *next, FS_T *stream, FS_PENDING *pend,
                                                    FS_FN(ce_ahead) *ahead)
{
    if (t < 0 || t >= (int64_t)ncols) {
        if (ahead != NULL) ahead->known = 0;
        if (want_grad) FS_FN(loss_fill)(gr, ncols, (FS_T)0);
        return 0.0;
    }
    return FS_FN(ce_index_row)(xr, ncols, (ptrdiff_t)t, w, wsum, eps, gr, want_grad, gs, next, stream, pend, ahead);
}

#ifdef FS_CE_LSE_BATCH
/* The losses of a batch's rows into row_loss (see FS_CE_LSE_BATCH); the batch is then empty. */
static void FS_FN(ce_lse_flush)(FS_FN(ce_lse_batch) *b, double *row_loss)
{
    double lse[FS_CE_LSE_BATCH];
    for (int k = b->count; k < FS_CE_LSE_BATCH; k++) b->rest[k] = 0.0;
#ifdef FS_USE_AVX512
    _mm512_storeu_pd(lse, fs512_log1p_accurate_pd(_mm512_loadu_pd(b->rest)));
#else
    _mm256_storeu_pd(lse, fs256_log1p_accurate_pd(_mm256_loadu_pd(b->rest)));
    _mm256_storeu_pd(lse + 4, fs256_log1p_accurate_pd(_mm256_loadu_pd(b->rest + 4)));
#endif
    for (int k = 0; k < b->count; k++)
        row_loss[b->row[k]] = FS_FN(weighted_nll)(b->wt[k], lse[k] + b->base[k], b->at_max[k], b->rest[k]);
    b->count = 0;
}
#endif

/* Rows [r0, r1).  Without a gradient, exp(x - m) goes to a scratch row (or, in the AVX-512
   common case, nowhere): the same sums, so the same rounding, as with a gradient
   (cross_entropy == cross_entropy_with_grad).  With a
   gradient too large for the caches, the scratch row holds the exps of the streamed path
   (ce_index_row_plain).  Returns 0, or -1 when a loss-only call's scratch row could not be
   allocated. */
static int FS_FN(ce_rows_span)(const FS_T *x, const int64_t *target, const FS_T *prob, const FS_T *w,
                               ptrdiff_t r0, ptrdiff_t r1, ptrdiff_t nrows, ptrdiff_t ncols, double wsum,
                               double eps, double gs, FS_T *grad, double *row_loss)
{
    const int want_grad = grad != NULL;
#if defined(FS_USE_AVX512) || defined(FS_USE_AVX2) /* the common case only: class indices, no smoothing (ce_index_row_plain) */
    const int stream = want_grad && prob == NULL && !(eps > 0.0) && ncols >= FS_STREAM_MIN_COLS &&
                       nrows * ncols * (ptrdiff_t)sizeof(FS_T) >= FS_STREAM_MIN_BYTES;
#else
    const int stream = 0;
#endif
    /* streaming: two scratch rows in turn, a whole number of cache lines apart */
    const ptrdiff_t stride = (ncols + 15) & ~(ptrdiff_t)15;
    FS_T *scratch = NULL;
    if ((!want_grad || stream) && r0 < r1) {
        scratch = (FS_T *)malloc(sizeof(FS_T) * (size_t)(stream ? 2 * stride : ncols > 0 ? ncols : 1));
        if (scratch == NULL && !want_grad) return -1; /* a gradient can go without streaming */
    }
#if defined(FS_USE_AVX512) || defined(FS_USE_AVX2)
    FS_PENDING pend = {0}; /* nothing pending */
    FS_PENDING *pending = &pend;
#else
    FS_PENDING *pending = NULL;
#endif
    FS_FN(ce_ahead) ahead = {0};
#ifdef FS_CE_LSE_BATCH
    FS_FN(ce_lse_batch) lse_batch;
    lse_batch.count = 0;
    ahead.lse = &lse_batch;
#endif
    for (ptrdiff_t r = r0; r < r1; r++) {
        const FS_T *xr = x + r * ncols;
        FS_T *gr = want_grad ? grad + r * ncols : scratch;
        FS_T *row_scratch = NULL;
#if defined(FS_USE_AVX512) || defined(FS_USE_AVX2)
        /* not the scratch row of the pending gradient: ignored rows and rows whose max is not
           finite leave it pending */
        if (want_grad && scratch != NULL) row_scratch = pend.src == scratch ? scratch + stride : scratch;
#endif
        ahead.row = r + 1 < r1 && ncols * (ptrdiff_t)sizeof(FS_T) <= FS_CE_SCAN_MAX_BYTES ? xr + ncols : NULL;
        ahead.pf = r + 2 < nrows ? xr + 2 * ncols : NULL;
#ifdef FS_CE_LSE_BATCH
        lse_batch.this_row = r;
#endif
        if (prob != NULL)
            row_loss[r] = FS_FN(ce_prob_row)(xr, prob + r * ncols, ncols, w, eps, gr, want_grad, gs);
        else
            row_loss[r] = FS_FN(ce_index_row_or_ignored)(xr, target[r], ncols, w, wsum, eps, gr, want_grad, gs,
                                                         r + 1 < nrows ? xr + ncols : NULL, row_scratch, pending,
                                                         &ahead);
#ifdef FS_CE_LSE_BATCH
        if (lse_batch.count == FS_CE_LSE_BATCH) FS_FN(ce_lse_flush)(&lse_batch, row_loss);
#endif
    }
#ifdef FS_CE_LSE_BATCH
    FS_FN(ce_lse_flush)(&lse_batch, row_loss);
#endif
#ifdef FS_USE_AVX512
    FS_CAT(fs512_pending_finish, FS_SUF)(pending); /* the last streamed row's rest */
#elif defined(FS_USE_AVX2)
    FS_FN(pending_finish)(pending);
#endif
    free(scratch);
#if defined(FS_USE_AVX512) || defined(FS_USE_AVX2)
    if (stream) _mm_sfence(); /* this thread's streamed rows are complete */
#endif
    return 0;
}

#if defined(FS_USE_AVX512) || defined(FS_USE_AVX2)
#ifdef FS_USE_AVX512
#define FS_CE_SHORT_ROWS FS_CAT(fs512_ce_short_rows, FS_SUF)
#define FS_CE_SHORT_MAX FS512_SHORT_MAX
#define FS_CE_SHORT_BLOCK 16
#else
#define FS_CE_SHORT_ROWS FS_CAT(fs256_ce_short_rows, FS_SUF)
#define FS_CE_SHORT_MAX FS256_SHORT_MAX
#define FS_CE_SHORT_BLOCK (FS_IS_F32 ? 8 : 4)
#endif
/* `len` short rows, class indices, no smoothing: blocks of FS_CE_SHORT_BLOCK rows (AVX-512
   float64: 8; AVX2 float32 8, float64 4), then the rest one row at a time. */
static void FS_FN(ce_short_rows_slice)(const FS_T *x, const int64_t *target, const FS_T *w, double wsum,
                                       ptrdiff_t len, ptrdiff_t ncols, double gs, FS_T *grad, double *row_loss)
{
    ptrdiff_t done = FS_CE_SHORT_ROWS(x, target, w, len, ncols, grad, gs, row_loss);
    for (ptrdiff_t r = done; r < len; r++) {
        FS_T tmp[FS_CE_SHORT_MAX];
        row_loss[r] = FS_FN(ce_index_row_or_ignored)(x + r * ncols, target[r], ncols, w, wsum, 0.0,
                                                     grad != NULL ? grad + r * ncols : tmp, grad != NULL, gs, NULL, NULL,
                                                     NULL, NULL);
    }
}
#endif

/* Returns 0, or -1 when the scratch row of a loss-only call could not be allocated. */
static int FS_FN(ce_rows)(const FS_T *x, const int64_t *target, const FS_T *prob, const FS_T *w,
                          ptrdiff_t nrows, ptrdiff_t ncols, double eps, double gs, FS_T *grad,
                          double *row_loss, int nthreads)
{
    double wsum = (double)ncols;
    if (w != NULL) {
        wsum = 0.0;
        for (ptrdiff_t i = 0; i < ncols; i++) wsum += (double)w[i];
    }
    int nt = fs_threads_for(nthreads, nrows, nrows * ncols);
#ifdef FS_CE_SHORT_ROWS
    if (prob == NULL && !(eps > 0.0) && ncols > 0 && ncols <= FS_CE_SHORT_MAX && nrows >= FS_CE_SHORT_BLOCK) {
        const ptrdiff_t slice = 256; /* rows per task: a multiple of the block of 16 (or 8, 4) */
        FS_ROWS_FOR(sl, (nrows + slice - 1) / slice,
                    ptrdiff_t r0 = sl * slice;
                    FS_FN(ce_short_rows_slice)(x + r0 * ncols, target + r0, w, wsum,
                                               nrows - r0 < slice ? nrows - r0 : slice, ncols, gs,
                                               grad != NULL ? grad + r0 * ncols : NULL, row_loss + r0));
        return 0;
    }
#endif
    /* one contiguous span of rows per thread (a static schedule), each with its own scratch */
    int failed = 0;
    FS_ROWS_FOR(k, nt,
                if (FS_FN(ce_rows_span)(x, target, prob, w, nrows * k / nt, nrows * (k + 1) / nt, nrows, ncols,
                                        wsum, eps, gs, grad, row_loss) != 0)
                    fs_set_flag(&failed));
    return failed ? -1 : 0;
}

static void FS_FN(nll_rows)(const FS_T *x, const int64_t *target, const FS_T *w, ptrdiff_t nrows,
                            ptrdiff_t ncols, double *row_loss)
{
    for (ptrdiff_t r = 0; r < nrows; r++) {
        int64_t t = target[r];
        if (t < 0 || t >= (int64_t)ncols) {
            row_loss[r] = 0.0;
        } else {
            double wt = w != NULL ? (double)w[t] : 1.0;
            row_loss[r] = -(wt * (double)x[r * ncols + t]);
        }
    }
}

static double FS_FN(total_weight)(const int64_t *target, const FS_T *w, ptrdiff_t nrows, ptrdiff_t ncols)
{
    if (w == NULL) { /* a count: integer adds the compiler vectorises (a double sum is a
                        chain of dependent adds, 4 cycles per row) */
        ptrdiff_t count = 0;
        for (ptrdiff_t r = 0; r < nrows; r++) count += (uint64_t)target[r] < (uint64_t)ncols;
        return (double)count;
    }
    double s[4] = {0.0, 0.0, 0.0, 0.0}; /* four independent chains, summed in a fixed order */
    for (ptrdiff_t r = 0; r < nrows; r++) {
        int64_t t = target[r];
        if (t >= 0 && t < (int64_t)ncols) s[r & 3] += (double)w[t];
    }
    return (s[0] + s[1]) + (s[2] + s[3]);
}

#undef FS_FN
#undef FS_PROB_LANES
#undef FS_PENDING
#undef FS_EXP
#undef FS_CE_SHORT_ROWS
#undef FS_CE_SHORT_MAX
#undef FS_CE_SHORT_BLOCK
#undef FS_CE_LSE_BATCH
