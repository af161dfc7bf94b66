/*
 * fs_activations.h -- the activation kernels, compiled once per instruction set and
 * dispatched at import time (see fs_common.h).  The public entry points are the
 * fs_<kernel>_<f32|f64> functions at the bottom; fs_activations_init() must run first.
 */
#ifndef FS_ACTIVATIONS_H
#define FS_ACTIVATIONS_H
#include "fs_common.h"
#include "fs_avx2.h"
#include "fs_avx512.h"

#define FS_ACT_KERNELS(T, SUF, ISA)                                                          \
    {                                                                                        \
        FS_CAT(FS_CAT(softmax_rows, SUF), ISA), FS_CAT(FS_CAT(log_softmax_rows, SUF), ISA),  \
        FS_CAT(FS_CAT(logsumexp_rows, SUF), ISA),                                            \
        FS_CAT(FS_CAT(softmax_backward_rows, SUF), ISA),                                     \
        FS_CAT(FS_CAT(log_softmax_backward_rows, SUF), ISA)                                  \
    }

#define FS_DECLARE_ACT_TABLE(T, SUF)                                                                   \
    typedef struct {                                                                                   \
        void (*softmax)(const T *, T *, ptrdiff_t, ptrdiff_t, int);                                    \
        void (*log_softmax)(const T *, T *, ptrdiff_t, ptrdiff_t, int);                                \
        void (*logsumexp)(const T *, T *, ptrdiff_t, ptrdiff_t, int);                                  \
        void (*softmax_backward)(const T *, const T *, T *, ptrdiff_t, ptrdiff_t, int);                \
        void (*log_softmax_backward)(const T *, const T *, T *, ptrdiff_t, ptrdiff_t, int);            \
    } FS_CAT(fs_act_table, SUF);
FS_DECLARE_ACT_TABLE(float, f32)
FS_DECLARE_ACT_TABLE(double, f64)

/* ---- one body per element type and instruction set ---- */
#define FS_IMPL_HEADER "fs_activations_impl.h"
#include "fs_multiversion.h"
#undef FS_IMPL_HEADER

static fs_act_table_f32 fs_act_f32 = FS_ACT_KERNELS(float, f32, baseline);
static fs_act_table_f64 fs_act_f64 = FS_ACT_KERNELS(double, f64, baseline);
static int fs_act_isa = FS_ISA_BASELINE;
static int fs_act_mixed = 0;

#if FS_X86_MULTIVERSION
/* The AVX-512 level on AMD Zen 4 (fs_pick_mixed): float32 softmax's short and medium rows (up
   to 128 columns) take the AVX2 kernels, which measured faster there (one process, the two
   alternating, AVX-512 / AVX2 time): 65536x10 1.71-1.93x, 65536x32 3.0x (the AVX-512 float32
   blocks gather every column twice, the AVX2 ones transpose in registers), 16384x128
   1.05-1.16x (the AVX2 medium rows are compiled for their width).  Medium rows of whole
   vectors (48..128 columns, n % 16 == 0) then take the AVX2 blocks' values computed on 16
   lanes (softmax_like_medium_table_rows, fs_activations_impl.h): the same bits, 1.2-1.4x as
   fast (16384x128 in the package, one process: 1.33x); so do float32 log_softmax's medium rows
   of whole vectors in calls of at least 16 rows (the AVX2 batches' values, AVX-512 registers:
   16384x128 1.35x in a C loop), which took the AVX-512 kernels until then (smaller calls, and
   other widths, still do).  (These timings predate the table exp of AVX-512's bounded rows,
   fs512_exp_spread_keep_ps, which narrows the gap between the two kernels' exps.)  float32
   log_softmax's short rows stay at AVX-512 (1.0x at 10 columns, 0.46x at 3), as does every
   float64 row: their AVX-512 blocks transpose in registers too, and took 0.75-0.87x the AVX2
   time at 65536x3..32 (softmax). */
static void softmax_rows_f32_mixed(const float *x, float *y, ptrdiff_t nrows, ptrdiff_t ncols, int nthreads)
{
    if (ncols > FS512_MEDIUM_MAX) softmax_rows_f32_avx512(x, y, nrows, ncols, nthreads);
    else if (!softmax_like_medium_table_rows_f32_avx512(x, y, nrows, ncols, nthreads, 0))
        softmax_rows_f32_avx2(x, y, nrows, ncols, nthreads);
}

static void log_softmax_rows_f32_mixed(const float *x, float *y, ptrdiff_t nrows, ptrdiff_t ncols, int nthreads)
{
    if (!softmax_like_medium_table_rows_f32_avx512(x, y, nrows, ncols, nthreads, 1))
        log_softmax_rows_f32_avx512(x, y, nrows, ncols, nthreads);
}
#endif

static int fs_activations_init(void)
{
    fs_act_isa = fs_pick_isa();
    fs_act_mixed = 0;
#if FS_X86_MULTIVERSION
    if (fs_act_isa == FS_ISA_AVX512) {
        fs_act_table_f32 t32 = FS_ACT_KERNELS(float, f32, avx512);
        fs_act_table_f64 t64 = FS_ACT_KERNELS(double, f64, avx512);
        fs_act_f32 = t32;
        fs_act_f64 = t64;
        fs_act_mixed = fs_pick_mixed(fs_act_isa);
        if (fs_act_mixed) {
            fs_act_f32.softmax = softmax_rows_f32_mixed;
            fs_act_f32.log_softmax = log_softmax_rows_f32_mixed;
        }
    } else if (fs_act_isa == FS_ISA_AVX2) {
        fs_act_table_f32 t32 = FS_ACT_KERNELS(float, f32, avx2);
        fs_act_table_f64 t64 = FS_ACT_KERNELS(double, f64, avx2);
        fs_act_f32 = t32;
        fs_act_f64 = t64;
    }
#endif
    return fs_act_isa;
}

static const char *fs_activations_isa(void) { return fs_act_mixed ? "avx512+avx2" : fs_isa_name(fs_act_isa); }

#endif /* FS_ACTIVATIONS_H */
