/*
 * fs_losses.h -- the loss kernels (nll_loss, cross_entropy and its fused gradient), compiled
 * once per instruction set and dispatched at import time (see fs_common.h).  The public entry
 * points are the tables fs_loss_f32 / fs_loss_f64; fs_losses_init() must run first.
 *
 * Every kernel works on C-contiguous rows of `ncols` classes (class axis last) and writes one
 * float64 loss per row; the caller reduces those in a fixed order, so results do not depend on
 * the number of threads.  Class-index targets arrive as int64, already checked by the caller:
 * a target outside [0, ncols) means "ignored" here, so no kernel ever indexes outside a row.
 */
#ifndef FS_LOSSES_H
#define FS_LOSSES_H
#include "fs_common.h"
#include "fs_avx2.h"
#include "fs_avx512.h"

#ifdef _OPENMP
#define FS_LOSS_SIMD_SUM3(a, b, c) FS_PRAGMA(omp simd reduction(+ : a, b, c))
#define FS_LOSS_SIMD_SUM4(a, b, c, d) FS_PRAGMA(omp simd reduction(+ : a, b, c, d))
#else
#define FS_LOSS_SIMD_SUM3(a, b, c)
#define FS_LOSS_SIMD_SUM4(a, b, c, d)
#endif

#if defined(__GNUC__)
#define FS_LOSS_INLINE static inline __attribute__((always_inline))
#else
#define FS_LOSS_INLINE static inline
#endif

#define FS_LOSS_KERNELS(SUF, ISA)                                                             \
    {                                                                                         \
        FS_CAT(FS_CAT(ce_rows, SUF), ISA), FS_CAT(FS_CAT(nll_rows, SUF), ISA),                \
        FS_CAT(FS_CAT(total_weight, SUF), ISA)                                                \
    }

/*
 * ce(x, target, prob, weight, nrows, ncols, label_smoothing, grad_scale, grad, row_loss, nthreads)
 *   x         IN   nrows x ncols logits
 *   target    IN   nrows class indices (int64), or NULL when `prob` is given
 *   prob      IN   nrows x ncols probability targets, or NULL
 *   weight    IN   ncols class weights, or NULL (all ones)
 *   grad      OUT  nrows x ncols gradient times grad_scale, or NULL (loss only); may be x itself
 *   row_loss  OUT  nrows per-row (weighted, unscaled) losses
 *   returns 0, or -1 if a loss-only call could not allocate its scratch row (one per thread)
 * nll(x, target, weight, nrows, ncols, row_loss): row_loss[r] = -weight[t] * x[r, t] (0 if ignored)
 * total_weight(target, weight, nrows, ncols): sum of weight[t] over the non-ignored targets
 */
#define FS_DECLARE_LOSS_TABLE(T, SUF)                                                                  \
    typedef struct {                                                                                   \
        int (*ce)(const T *, const int64_t *, const T *, const T *, ptrdiff_t, ptrdiff_t, double,      \
                  double, T *, double *, int);                                                         \
        void (*nll)(const T *, const int64_t *, const T *, ptrdiff_t, ptrdiff_t, double *);            \
        double (*total_weight)(const int64_t *, const T *, ptrdiff_t, ptrdiff_t);                      \
    } FS_CAT(fs_loss_table, SUF);
FS_DECLARE_LOSS_TABLE(float, f32)
FS_DECLARE_LOSS_TABLE(double, f64)

/* ---- one body per element type and instruction set ---- */
#define FS_IMPL_HEADER "fs_losses_impl.h"
#include "fs_multiversion.h"
#undef FS_IMPL_HEADER

static fs_loss_table_f32 fs_loss_f32 = FS_LOSS_KERNELS(f32, baseline);
static fs_loss_table_f64 fs_loss_f64 = FS_LOSS_KERNELS(f64, baseline);
static int fs_loss_isa = FS_ISA_BASELINE;
static int fs_loss_mixed = 0;

#if FS_X86_MULTIVERSION
/* The AVX-512 level on AMD Zen 4 (fs_pick_mixed): the float32 cross-entropy's short rows (class
   indices, no smoothing) take the AVX2 kernels, which transpose their blocks in registers where
   the AVX-512 float32 ones gather every column: on Zen 4, 65536x10 (one process, the two
   alternating, AVX-512 / AVX2 time) 1.31-1.35x.  Longer rows stay at AVX-512, as do float64's
   short rows (their AVX-512 blocks are transposed in registers: 0.71-0.89x the AVX2 time at
   65536x3..32). */
static int ce_rows_mixed_f32(const float *x, const int64_t *target, const float *prob, const float *w,
                             ptrdiff_t nrows, ptrdiff_t ncols, double eps, double gs, float *grad, double *row_loss,
                             int nthreads)
{
    const int short_rows = prob == NULL && !(eps > 0.0) && ncols <= FS512_SHORT_MAX;
    return (short_rows ? ce_rows_f32_avx2 : ce_rows_f32_avx512)(x, target, prob, w, nrows, ncols, eps, gs, grad,
                                                                row_loss, nthreads);
}
#endif

static int fs_losses_init(void)
{
    fs_loss_isa = fs_pick_isa();
    fs_loss_mixed = 0;
#if FS_X86_MULTIVERSION
    if (fs_loss_isa == FS_ISA_AVX512) {
        fs_loss_table_f32 t32 = FS_LOSS_KERNELS(f32, avx512);
        fs_loss_table_f64 t64 = FS_LOSS_KERNELS(f64, avx512);
        fs_loss_f32 = t32;
        fs_loss_f64 = t64;
        fs_loss_mixed = fs_pick_mixed(fs_loss_isa);
        if (fs_loss_mixed) {
            fs_loss_f32.ce = ce_rows_mixed_f32;
        }
    } else if (fs_loss_isa == FS_ISA_AVX2) {
        fs_loss_table_f32 t32 = FS_LOSS_KERNELS(f32, avx2);
        fs_loss_table_f64 t64 = FS_LOSS_KERNELS(f64, avx2);
        fs_loss_f32 = t32;
        fs_loss_f64 = t64;
    }
#endif
    return fs_loss_isa;
}

static const char *fs_losses_isa(void) { return fs_loss_mixed ? "avx512+avx2" : fs_isa_name(fs_loss_isa); }

/* ---- for the compiled fast path (_losses.pyx's try_loss) ---- */

/* NumPy's pairwise summation of n doubles (its pairwise_sum: under 8 elements one running sum
   from 0, up to 128 eight running sums added as ((r0 + r1) + (r2 + r3)) + ((r4 + r5) +
   (r6 + r7)) then the rest one by one, above that the two halves, split at a multiple of 8). */
static double fs_pairwise_sum_f64(const double *a, ptrdiff_t n)
{
    if (n < 8) {
        double res = 0.0;
        for (ptrdiff_t i = 0; i < n; i++) res += a[i];
        return res;
    }
    if (n <= 128) {
        double r[8];
        for (int j = 0; j < 8; j++) r[j] = a[j];
        ptrdiff_t i = 8;
        for (; i < n - n % 8; i += 8)
            for (int j = 0; j < 8; j++) r[j] += a[i + j];
        double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < n; i++) res += a[i];
        return res;
    }
    ptrdiff_t n2 = n / 2;
    n2 -= n2 % 8;
    return fs_pairwise_sum_f64(a, n2) + fs_pairwise_sum_f64(a + n2, n - n2);
}

/* The sum of the per-row losses, for "sum" and "mean", on both the fast and the general path
   (_losses.sum_row_losses), so that the two agree on any NumPy.  It is np.sum(row_losses) bit
   for bit from NumPy 2.3 on (np.add.reduce of a contiguous float64 array starts from 0 and adds
   the pairwise sum of all of it); NumPy 1.26-2.2 add the pairwise sums of blocks of 8192
   (the reference twin keeps np.sum, and is compared within rounding). */
static double fs_sum_row_losses(const double *a, ptrdiff_t n) { return 0.0 + fs_pairwise_sum_f64(a, n); }

/* Class-index targets as the fast path takes them (ignore_index outside [0, ncols)): 1 when
   each is in [0, ncols) or equal to ignore_index, else 0 (the general path then raises the
   error that names the first bad one). */
static int fs_class_indices_ok(const int64_t *t, ptrdiff_t n, ptrdiff_t ncols, int64_t ignore_index)
{
    for (ptrdiff_t i = 0; i < n; i++)
        if ((uint64_t)t[i] >= (uint64_t)ncols && t[i] != ignore_index) return 0;
    return 1;
}

#endif /* FS_LOSSES_H */
