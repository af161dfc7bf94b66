/*
 * fs_multiversion.h -- include the kernel body FS_IMPL_HEADER once per element type (float,
 * double) and per instruction set (baseline; on x86 also AVX2 and AVX-512 under
 * `#pragma GCC target`).  No include guard: a domain header does
 *
 *     #define FS_IMPL_HEADER "fs_losses_impl.h"
 *     #include "fs_multiversion.h"
 *     #undef FS_IMPL_HEADER
 *
 * and gets name_f32_baseline, name_f64_avx2, ... for every function its body defines.  The
 * body sees FS_T, FS_SUF (f32 | f64), FS_IS_F32, FS_ISA, and FS_USE_AVX2 / FS_USE_AVX512 when
 * the hand-vectorised primitives of fs_avx2.h / fs_avx512.h may be used.
 */
#define FS_ISA baseline
#include "fs_multiversion_types.h"
#undef FS_ISA

#if FS_X86_MULTIVERSION
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define FS_ISA avx2
#define FS_USE_AVX2
#include "fs_multiversion_types.h"
#undef FS_USE_AVX2
#undef FS_ISA
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,fma,prefer-vector-width=512")
#define FS_ISA avx512
#define FS_USE_AVX512
#include "fs_multiversion_types.h"
#undef FS_USE_AVX512
#undef FS_ISA
#pragma GCC pop_options
#endif
