/*
 * fs_sgd.h -- the multi-tensor SGD kernel, compiled once per instruction set and dispatched
 * at import time (see fs_common.h).  fs_sgd_init() must run first.
 *
 * Design note
 * -----------
 * An optimizer step is ONE call, fs_sgd_multi(), over a table of tensors (parameter and
 * velocity pointers, sizes, a group index into a table of hyperparameters) and an array of
 * gradient pointers (gathered per step by the caller; NULL skips a tensor).  The tensors are
 * laid end to end as one index space of `total` elements; small steps run on the calling
 * thread, large ones split that index space into one contiguous span per thread, so 200
 * arrays of 1000 elements cost one parallel region (or none), not 200.  Every element is
 * computed by the same expression whatever the split (the scalar remainder of a vector loop
 * included), so results do not depend on the number of threads.
 */
#ifndef FS_SGD_H
#define FS_SGD_H
#include "fs_common.h"

/* Hyperparameters of one parameter group (already validated by the caller). */
typedef struct {
    double lr, momentum, dampening, weight_decay;
    int nesterov, maximize;
} fs_sgd_hyper;

/* One parameter: C-contiguous, aligned, not overlapping any other parameter or velocity. */
typedef struct {
    void *param;       /* n elements, written */
    void *velocity;    /* n elements, written; NULL while the group has no momentum */
    ptrdiff_t n;       /* number of elements */
    ptrdiff_t offset;  /* sum of n over the tensors before this one */
    int group;         /* index into the fs_sgd_hyper table */
    int is_f64;        /* element type: 0 float32, 1 float64 */
    int first;         /* momentum buffer not started: the first step seeds it with the gradient */
} fs_sgd_tensor;

typedef void (*fs_sgd_range_fn)(void *, const void *, void *, ptrdiff_t, const fs_sgd_hyper *, int);

/* ---- one body per instruction set ---- */
#define FS_ISA baseline
#if defined(__FP_FAST_FMAF)
#define FS_SGD_FMA(a, b, c) __builtin_fmaf((a), (b), (c))
#else
/* No FMA instruction: the float32 product is exact in double, so this rounds like an FMA
   (up to a double rounding, rare by a factor of 2^29). */
#define FS_SGD_FMA(a, b, c) ((float)((double)(a) * (double)(b) + (double)(c)))
#endif
#define FS_T float
#define FS_SUF f32
#include "fs_sgd_impl.h"
#undef FS_T
#undef FS_SUF
#undef FS_SGD_FMA
/* float64 has no wider type to round through: the C library's fma (hardware FMA where the
   CPU has it, chosen by glibc at load time; correctly rounded in software otherwise).  One
   call per element, not vectorised: slower, but every ISA gives the same float64 results. */
#define FS_SGD_FMA(a, b, c) __builtin_fma((a), (b), (c))
#define FS_T double
#define FS_SUF f64
#include "fs_sgd_impl.h"
#undef FS_T
#undef FS_SUF
#undef FS_SGD_FMA
#undef FS_ISA

#if FS_X86_MULTIVERSION
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define FS_ISA avx2
#define FS_SGD_FMA(a, b, c) __builtin_fmaf((a), (b), (c))
#define FS_T float
#define FS_SUF f32
#include "fs_sgd_impl.h"
#undef FS_T
#undef FS_SUF
#undef FS_SGD_FMA
#define FS_SGD_FMA(a, b, c) __builtin_fma((a), (b), (c))
#define FS_T double
#define FS_SUF f64
#include "fs_sgd_impl.h"
#undef FS_T
#undef FS_SUF
#undef FS_SGD_FMA
#undef FS_ISA
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,fma,prefer-vector-width=512")
#define FS_ISA avx512
#define FS_SGD_FMA(a, b, c) __builtin_fmaf((a), (b), (c))
#define FS_T float
#define FS_SUF f32
#include "fs_sgd_impl.h"
#undef FS_T
#undef FS_SUF
#undef FS_SGD_FMA
#define FS_SGD_FMA(a, b, c) __builtin_fma((a), (b), (c))
#define FS_T double
#define FS_SUF f64
#include "fs_sgd_impl.h"
#undef FS_T
#undef FS_SUF
#undef FS_SGD_FMA
#undef FS_ISA
#pragma GCC pop_options
#endif

static fs_sgd_range_fn fs_sgd_range_f32 = sgd_range_f32_baseline;
static fs_sgd_range_fn fs_sgd_range_f64 = sgd_range_f64_baseline;
static int fs_sgd_isa_level = FS_ISA_BASELINE;

static int fs_sgd_init(void)
{
    fs_sgd_isa_level = fs_pick_isa();
#if FS_X86_MULTIVERSION
    if (fs_sgd_isa_level == FS_ISA_AVX512) {
        fs_sgd_range_f32 = sgd_range_f32_avx512;
        fs_sgd_range_f64 = sgd_range_f64_avx512;
    } else if (fs_sgd_isa_level == FS_ISA_AVX2) {
        fs_sgd_range_f32 = sgd_range_f32_avx2;
        fs_sgd_range_f64 = sgd_range_f64_avx2;
    }
#endif
    return fs_sgd_isa_level;
}

static const char *fs_sgd_isa(void) { return fs_isa_name(fs_sgd_isa_level); }

/* Below this many elements per thread a step stays on one thread: waking a sleeping OpenMP
   worker costs tens of microseconds on a shared VM (two threads made a 64K-element float32
   step 1.6x slower; see FS_MIN_THREADED_WORK). */
#define FS_SGD_MIN_PER_THREAD ((ptrdiff_t)1 << 17)

static inline int fs_sgd_threads_for(int nthreads, ptrdiff_t total)
{
    if (nthreads < 2 || total < 2 * FS_SGD_MIN_PER_THREAD) return 1;
    ptrdiff_t most = total / FS_SGD_MIN_PER_THREAD;
    return (ptrdiff_t)nthreads < most ? nthreads : (int)most;
}

/* Update the elements [lo, hi) of the index space formed by the tensors laid end to end. */
static void fs_sgd_span(const fs_sgd_tensor *t, const void *const *grads, ptrdiff_t ntensors,
                        const fs_sgd_hyper *groups, ptrdiff_t lo, ptrdiff_t hi)
{
    /* first tensor that ends after lo */
    ptrdiff_t a = 0, b = ntensors;
    while (a < b) {
        ptrdiff_t m = a + (b - a) / 2;
        if (t[m].offset + t[m].n <= lo) a = m + 1;
        else b = m;
    }
    for (ptrdiff_t k = a; k < ntensors && t[k].offset < hi; k++) {
        const fs_sgd_tensor *x = &t[k];
        if (grads[k] == NULL || x->n == 0) continue;
        ptrdiff_t s = lo > x->offset ? lo - x->offset : 0;
        ptrdiff_t e = (hi < x->offset + x->n ? hi : x->offset + x->n) - x->offset;
        if (s >= e) continue;
        size_t esz = x->is_f64 ? sizeof(double) : sizeof(float);
        char *p = (char *)x->param + (size_t)s * esz;
        const char *g = (const char *)grads[k] + (size_t)s * esz;
        char *v = x->velocity ? (char *)x->velocity + (size_t)s * esz : NULL;
        (x->is_f64 ? fs_sgd_range_f64 : fs_sgd_range_f32)(p, g, v, e - s, &groups[x->group], x->first);
    }
}

/* Start of thread `i`'s span out of `nt`: an even split, rounded down to 16 elements. */
static inline ptrdiff_t fs_sgd_split(ptrdiff_t total, int nt, int i)
{
    if (i >= nt) return total;
    ptrdiff_t q = total / nt, r = total % nt;
    ptrdiff_t at = q * i + (i < r ? i : r);
    return at & ~(ptrdiff_t)15;
}

/*
 * One SGD step over every tensor.  grads[k] (NULL: skip tensor k this step) has t[k]'s
 * element type and size and overlaps no parameter or velocity.  Afterwards the momentum
 * buffer of every updated tensor whose group has momentum is marked started.
 */
static void fs_sgd_multi(fs_sgd_tensor *t, const void *const *grads, ptrdiff_t ntensors,
                         const fs_sgd_hyper *groups, int nthreads)
{
    if (ntensors <= 0) return;
    ptrdiff_t total = t[ntensors - 1].offset + t[ntensors - 1].n;
    int nt = fs_sgd_threads_for(nthreads, total);
    if (nt <= 1) {
        fs_sgd_span(t, grads, ntensors, groups, 0, total);
    } else {
#ifdef _OPENMP
#pragma omp parallel num_threads(nt)
        {
            int i = omp_get_thread_num();
            int n = omp_get_num_threads();
            fs_sgd_span(t, grads, ntensors, groups, fs_sgd_split(total, n, i), fs_sgd_split(total, n, i + 1));
        }
#else
        fs_sgd_span(t, grads, ntensors, groups, 0, total);
#endif
    }
    for (ptrdiff_t k = 0; k < ntensors; k++)
        if (grads[k] != NULL && groups[t[k].group].momentum != 0.0) t[k].first = 0;
}

#endif /* FS_SGD_H */
