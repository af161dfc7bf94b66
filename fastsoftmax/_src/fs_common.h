/*
 * fs_common.h -- shared pieces of every fastsoftmax kernel.
 *
 * Design note
 * -----------
 * Kernels are written as plain, branch-free C loops over one contiguous row.  The
 * compiler vectorises them (`#pragma omp simd`), once per instruction set: each
 * domain header (fs_activations.h, ...) includes its per-ISA body several times,
 * under `#pragma GCC target(...)`, with a different FS_ISA suffix, and picks the
 * best table of function pointers at import time (fs_pick_isa()).  No
 * -march=native: the built extension runs on any x86-64, and on other machines
 * only the portable baseline body is compiled.
 *
 * The exp used everywhere is fs_exp_f32 / fs_exp_f64 below: Cody-Waite range
 * reduction, a polynomial, and 2^n built from exponent bits in two factors so
 * that subnormal and near-overflow results are right.  Special values are
 * selected explicitly (exp(-inf) = 0, exp(+inf) = inf, exp(NaN) = NaN), so no
 * finite-math assumption is needed and none is made.
 */
#ifndef FS_COMMON_H
#define FS_COMMON_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#define FS_PRAGMA(x) _Pragma(#x)
#define FS_OMP_SIMD FS_PRAGMA(omp simd)
#define FS_OMP_SIMD_SUM(v) FS_PRAGMA(omp simd reduction(+ : v))
#define FS_OMP_SIMD_MAX(v) FS_PRAGMA(omp simd reduction(max : v))
#define FS_OMP_SIMD_SUM2(a, b) FS_PRAGMA(omp simd reduction(+ : a, b))
#else
#define FS_OMP_SIMD
#define FS_OMP_SIMD_SUM(v)
#define FS_OMP_SIMD_MAX(v)
#define FS_OMP_SIMD_SUM2(a, b)
#endif

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)) && !defined(FS_NO_MULTIVERSION)
#define FS_X86_MULTIVERSION 1
#else
#define FS_X86_MULTIVERSION 0
#endif

/* Elements per partial sum: lanes accumulate in the element type inside a block, blocks in double. */
#define FS_BLOCK 128

/* A running total of block sums in double, compensated (Neumaier): float64 block sums have no
   spare precision in double, and a plain running sum lost about one rounding per block (20-40
   ulps of the terms in the float64 backward passes at 4e6 elements; 4-87 ulps in the forward
   passes, logsumexp and the losses at 1e6-4e6).  An infinite or NaN total is returned as it
   is (its compensation would be NaN). */
typedef struct {
    double s, c;
} fs_block_total;

static inline void fs_block_total_add(fs_block_total *t, double v)
{
    const double s = t->s + v;
    t->c += fabs(t->s) >= fabs(v) ? (t->s - s) + v : (v - s) + t->s;
    t->s = s;
}

/* The same, for the row's first block (`first`): the total starts at v, without the
   compensation's dependency chain (a row of one chunk or block ends sooner). */
static inline void fs_block_total_add_at(fs_block_total *t, double v, int first)
{
    if (first) *t = (fs_block_total){v, 0.0};
    else fs_block_total_add(t, v);
}

static inline double fs_block_total_value(const fs_block_total *t)
{
    return isfinite(t->s) ? t->s + t->c : t->s;
}

#define FS_CAT_(a, b) a##_##b
#define FS_CAT(a, b) FS_CAT_(a, b)

/* Instruction-set levels, in increasing order. */
enum { FS_ISA_BASELINE = 0, FS_ISA_AVX2 = 1, FS_ISA_AVX512 = 2 };

/* The best level this CPU runs, lowered by FASTSOFTMAX_ISA=baseline|avx2|avx512. */
static int fs_pick_isa(void)
{
    int best = FS_ISA_BASELINE;
#if FS_X86_MULTIVERSION
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        best = FS_ISA_AVX2;
    if (best == FS_ISA_AVX2 && __builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl"))
        best = FS_ISA_AVX512;
#endif
    const char *env = getenv("FASTSOFTMAX_ISA");
    if (env != NULL) {
        int want = best;
        if (strcmp(env, "baseline") == 0) want = FS_ISA_BASELINE;
        else if (strcmp(env, "avx2") == 0) want = FS_ISA_AVX2;
        else if (strcmp(env, "avx512") == 0 || strcmp(env, "avx512+avx2") == 0) want = FS_ISA_AVX512;
        if (want < best) best = want;
    }
    return best;
}

static const char *fs_isa_name(int isa)
{
    return isa == FS_ISA_AVX512 ? "avx512" : isa == FS_ISA_AVX2 ? "avx2" : "baseline";
}

/* Whether the AVX-512 level mixes in AVX2 kernels (the activations' and losses' tables; their
   isa name is then "avx512+avx2"): on AMD family 19h with AVX-512 (Zen 4), which runs 512-bit
   operations as two 256-bit halves and gathers 512 bits slowly, the AVX2 kernels of some row
   shapes measured faster (fs_activations.h, fs_losses.h say which).  Zen 5 (family 1Ah, full
   512-bit datapaths) was not measured and keeps AVX-512.  FASTSOFTMAX_ISA=avx512 keeps every
   kernel at AVX-512; FASTSOFTMAX_ISA=avx512+avx2 mixes on any AVX-512 CPU (for the tests). */
static inline int fs_pick_mixed(int isa)
{
#if FS_X86_MULTIVERSION
    const char *env = getenv("FASTSOFTMAX_ISA");
    if (isa != FS_ISA_AVX512) return 0;
    if (env != NULL && strcmp(env, "avx512+avx2") == 0) return 1;
    return !(env != NULL && strcmp(env, "avx512") == 0) && __builtin_cpu_is("amdfam19h");
#else
    (void)isa;
    return 0;
#endif
}

static inline float fs_f32_from_bits(int32_t i) { float f; memcpy(&f, &i, sizeof f); return f; }
static inline int32_t fs_bits_from_f32(float f) { int32_t i; memcpy(&i, &f, sizeof i); return i; }
static inline double fs_f64_from_bits(int64_t i) { double f; memcpy(&f, &i, sizeof f); return f; }
static inline int64_t fs_bits_from_f64(double f) { int64_t i; memcpy(&i, &f, sizeof i); return i; }

/*
 * float32 exp constants: ln 2 split so that n * FS_LN2_HI_F32 is exact (its last 7 bits are
 * zero), and a degree-5 minimax polynomial for exp on [-ln2/2, ln2/2]:
 * exp(r) ~ 1 + r*(c1 + r*(c2 + r*(c3 + r*(c4 + r*c5)))) (the coefficients XNNPACK uses).
 * The portable and AVX-512 paths use them; the AVX2 path a table of 2^(j/8) and a degree-3
 * polynomial (fs256_exp_table_impl_ps), as AVX-512 does for rows within FS_EXACT_SPREAD of
 * their max (fs512_exp_spread_keep_ps).
 */
#define FS_LN2_HI_F32 0x1.62E400p-1f
#define FS_LN2_LO_F32 0x1.7F7D1Cp-20f
#define FS_EXP_C1_F32 0x1.FFFFF6p-1f
#define FS_EXP_C2_F32 0x1.FFFDC6p-2f
#define FS_EXP_C3_F32 0x1.555A80p-3f
#define FS_EXP_C4_F32 0x1.573A1Ap-5f
#define FS_EXP_C5_F32 0x1.0F9F9Cp-7f

/*
 * exp(x + lo) in float32, lo a tiny correction term (the rounding error of x when
 * x = a - b was rounded; pass 0 otherwise).  About 1.5 ulp.
 */
static inline float fs_exp_f32(float x, float lo)
{
    const float magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    float xc = x < -104.0f ? -104.0f : x;
    xc = xc > 89.0f ? 89.0f : xc;
    float nb = xc * 1.44269504088896341f + magic;
    float n = nb - magic;
    float r = xc - n * FS_LN2_HI_F32;
    r = r - n * FS_LN2_LO_F32;
    r = r + lo;
    float p = FS_EXP_C5_F32;
    p = p * r + FS_EXP_C4_F32;
    p = p * r + FS_EXP_C3_F32;
    p = p * r + FS_EXP_C2_F32;
    p = p * r + FS_EXP_C1_F32;
    p = p * r + 1.0f;
    /* 2^n for n in [-150, 128], as 2^n1 * 2^n2 with n1 = floor(n / 2), so that both factors
       are normal: p * 2^n rounded once (by the second product).  Shifts and adds, no
       comparison: SSE2 has no 64-bit compare, and the float64 twin's selects kept its loops
       scalar there.  In unsigned arithmetic: a NaN x gives a meaningless ni, never undefined
       behaviour. */
    int32_t ni = fs_bits_from_f32(nb) - fs_bits_from_f32(magic);
    uint32_t n1 = ((uint32_t)(ni + 256) >> 1) - 128u, n2 = (uint32_t)ni - n1;
    float s1 = fs_f32_from_bits((int32_t)((n1 + 127u) << 23));
    float s2 = fs_f32_from_bits((int32_t)((n2 + 127u) << 23));
    float y = (p * s1) * s2;
    y = x < -104.0f ? 0.0f : y;
    y = x > 89.0f ? (float)INFINITY : y;
    return y;
}

/* exp(x) in float64: fdlibm's two-part ln2, a degree-13 Taylor polynomial, <~ 1 ulp. */
static inline double fs_exp_f64(double x, double lo)
{
    const double magic = 6755399441055744.0; /* 1.5 * 2^52 */
    double xc = x < -746.0 ? -746.0 : x;
    xc = xc > 710.0 ? 710.0 : xc;
    double nb = xc * 1.4426950408889634 + magic;
    double n = nb - magic;
    double r = xc - n * 6.93147180369123816490e-01;
    r = r - n * 1.90821492927058770002e-10;
    r = r + lo;
    double p = 1.0 / 6227020800.0;
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
    p = p * (r * r) + r + 1.0;
    /* 2^n = 2^n1 * 2^n2, n1 = floor(n / 2), n in [-1077, 1024], as in fs_exp_f32 */
    int64_t ni = fs_bits_from_f64(nb) - fs_bits_from_f64(magic);
    uint64_t n1 = ((uint64_t)(ni + 2048) >> 1) - 1024u, n2 = (uint64_t)ni - n1;
    double s1 = fs_f64_from_bits((int64_t)((n1 + 1023u) << 52));
    double s2 = fs_f64_from_bits((int64_t)((n2 + 1023u) << 52));
    double y = (p * s1) * s2;
    y = x < -746.0 ? 0.0 : y;
    y = x > 710.0 ? (double)INFINITY : y;
    return y;
}

/* Rounding error of s = a + b (Knuth's TwoSum): a + b == s + fs_two_sum_err(a, b, s) exactly. */
static inline float fs_two_sum_err_f32(float a, float b, float s)
{
    float bb = s - a;
    return (a - (s - bb)) + (b - bb);
}
static inline double fs_two_sum_err_f64(double a, double b, double s)
{
    double bb = s - a;
    return (a - (s - bb)) + (b - bb);
}

/* A float32 softmax row whose values all lie within this distance of its max gets
   exp(x - m) without correcting the rounding of x - m: that rounding is at most half an
   ulp of 16..32, 2^-20 = 9.5e-7 relative in the output, which keeps the total under the
   2e-6 bound (worst measured 1.2e-6; at 64 it would reach 2.2e-6, see
   test_float32_softmax_error_where_x_minus_max_rounds_most). */
#define FS_EXACT_SPREAD 32.0f

/* A float64 row within this distance of its max has exp(x - m) >= 2^-1022 (normal) everywhere:
   the AVX2 exp's scale 2^e 2^(j/4) (e >= -1022) fits one factor and needs no range test per
   vector (fs256_exp_bounded_pd), nor does AVX-512's 2^q 2^(j/16) (fs512_exp_bounded_keep_pd). */
#define FS_SPREAD_F64 708.0

/* softmax / log_softmax results and cross-entropy gradients of at least FS_STREAM_MIN_BYTES,
   in rows of at least FS_STREAM_MIN_COLS, are written with streaming stores (AVX-512 and
   AVX2), which bypass the caches, each row during the next row's exp pass (software
   pipelining, see fs512_pending_f32 and fs_avx2_stream_impl.h).  Measured in Python on the
   project's machine (one thread, calls repeated as in a loop, time over np.copyto of the
   same array in the same process; two builds in alternating processes): streamed, 2048x1000 float64 (16 MB) 1.0-1.2 vs 1.3-1.7,
   6144x1000 float32 (24 MB) 1.2-1.4 vs 1.4-1.9, 4096x1000 float32 (16 MB) 1.2-1.4 vs 1.2-1.7,
   2048x1000 and 1024x1000 float32 (8 and 4 MB) equal within the noise; without the
   pipelining a 16 MB result was slower streamed (it stays in L3 from call to call with
   ordinary stores), hence the earlier 24 MiB.  Results smaller than 8 MiB are left in the
   caches for whatever reads them next.  Rows of 128 were 30-60% slower streamed even
   pipelined (per-row setup), rows of 256 equal; float32 softmax / log_softmax of rows of
   33..128 are streamed a block of 16 rows at a time instead, when the rows are a whole
   number of vectors (softmax_medium_stream_span, log_softmax_medium_stream_span; on AVX2,
   float32 softmax rows of 33..256 in blocks of 8, and log_softmax rows of up to 1 KB, float32
   and float64, a batch of 16 behind, when the rows are whole lines starting on lines).  On an AMD
   EPYC (Zen 3, AVX2) the same thresholds held: 2100x1000 (streamed) against 2000x1000 (not),
   float32 softmax 0.93 vs 1.02 ns an element, float64 1.87 vs 2.26; rows of 128 streamed
   1.05-1.09 vs 0.92-1.00 (slower, as on AVX-512). */
#ifndef FS_STREAM_MIN_BYTES
#define FS_STREAM_MIN_BYTES ((ptrdiff_t)8 << 20)
#endif
#ifndef FS_STREAM_MIN_COLS
#define FS_STREAM_MIN_COLS 768
#endif

/* Elements of a row handled between two prefetches of the next row. */
#define FS_CHUNK 1024

/* Software prefetches of the rows ahead.  A line asked for at most FS_PREFETCH_L1_BYTES ahead
   of the line being read goes into L1 (x86 prefetcht0), a farther one into L2 only
   (prefetcht1), where it waits for its turn without evicting the lines in use.  Distances are
   in bytes of the array read (row r + 2 of 4 KB rows: 8 KB ahead).  On AMD Zen 4, C loop, one
   process, the two alternating, time with L1 / with L2 prefetches of row r + 2 in the
   streamed softmax rows: 2 KB rows 0.75, 4 KB 0.85, 8 KB 0.97, 16 KB 1.07, 32 KB 1.06, 200 KB
   1.05 (log_softmax 0.86, 0.97, 0.93, 1.04, 1.06, 1.09).  In the package (one process, the
   builds alternating, old time / new): float32 4096x1000 softmax 1.14-1.19x, log_softmax
   1.04-1.08x, the cross-entropy 1.01-1.08x; float64 4096x1000 1.04-1.26x and 1.07-1.11x; but
   float32 softmax 2048x2000 (16,000 bytes ahead) 0.78-0.92x in three processes (same-build
   control 1.01) and 2048x1500 0.93x, hence 8 KB, not 16. */
#ifndef FS_PREFETCH_L1_BYTES
#define FS_PREFETCH_L1_BYTES 8192
#endif

/* Whether lines at `ahead` (NULL: no prefetch) go into L1 while `now` is read. */
static inline int fs_prefetch_l1(const void *ahead, const void *now)
{
    return ahead != NULL && now != NULL && (const char *)ahead >= (const char *)now &&
           (size_t)((const char *)ahead - (const char *)now) <= FS_PREFETCH_L1_BYTES;
}

/* Ask for the 64-byte line at p: into L1 (`l1`) or L2. */
static inline void fs_prefetch_line(const void *p, int l1)
{
#if defined(__GNUC__)
    if (l1) __builtin_prefetch(p, 0, 3);
    else __builtin_prefetch(p, 0, 2);
#else
    (void)p; (void)l1;
#endif
}

/* Ask for `bytes` from p to be brought into cache while `now` is read (one request per 64-byte
   line; L1 or L2 as fs_prefetch_l1 decides). */
static inline void fs_prefetch_span(const void *p, size_t bytes, const void *now)
{
    const char *c = (const char *)p;
    const int l1 = fs_prefetch_l1(p, now);
    for (size_t off = 0; off < bytes; off += 64) fs_prefetch_line(c + off, l1);
}

/* for (ptrdiff_t i = 0; i < count; i++) { body }: split statically over up to `nt` OpenMP
   threads (a variable named nt must be in scope; at most `count`), else a plain loop.  An
   OpenMP region with if(0) still builds and frees a team (malloc, free, locks): that cost
   30% of a (1, 10) softmax call. */
#ifdef _OPENMP
#define FS_ROWS_FOR(i, count, ...)                                           \
    do {                                                                     \
        /* no more threads than iterations: an idle worker is woken too */   \
        const int fs_team_ = (ptrdiff_t)nt < (count) ? nt : (int)(count);   \
        if (fs_team_ > 1) {                                                  \
            _Pragma("omp parallel for schedule(static) num_threads(fs_team_)") \
            for (ptrdiff_t i = 0; i < (count); i++) { __VA_ARGS__; }         \
        } else {                                                             \
            for (ptrdiff_t i = 0; i < (count); i++) { __VA_ARGS__; }         \
        }                                                                    \
    } while (0)
#else
#define FS_ROWS_FOR(i, count, ...)                                           \
    do {                                                                     \
        (void)nt;                                                            \
        for (ptrdiff_t i = 0; i < (count); i++) { __VA_ARGS__; }             \
    } while (0)
#endif

/* *flag = 1, from any thread of an FS_ROWS_FOR loop. */
static inline void fs_set_flag(int *flag)
{
#ifdef _OPENMP
#pragma omp atomic write
#endif
    *flag = 1;
}

/* Fewer elements than this run on one thread: waking a sleeping OpenMP worker (the wait
   policy is passive, see fastsoftmax/__init__.py) costs tens of microseconds on a shared VM,
   which made two threads slower than one at 32K elements (measured 0.55x) and faster from
   64K on (1.4-1.7x). */
#define FS_MIN_THREADED_WORK ((ptrdiff_t)1 << 16)

/* Threads for a job of `work` elements in `nrows` independent rows. */
static inline int fs_threads_for(int nthreads, ptrdiff_t nrows, ptrdiff_t work)
{
    if (nthreads < 1 || nrows < 2 || work < FS_MIN_THREADED_WORK) return 1;
    if ((ptrdiff_t)nthreads > nrows) return (int)nrows;
    return nthreads;
}

#endif /* FS_COMMON_H */
