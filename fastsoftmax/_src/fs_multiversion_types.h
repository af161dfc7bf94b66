/* fs_multiversion_types.h -- FS_IMPL_HEADER for float and for double (see fs_multiversion.h). */
#define FS_T float
#define FS_IS_F32 1
#define FS_SUF f32
#include FS_IMPL_HEADER
#undef FS_T
#undef FS_IS_F32
#undef FS_SUF

#define FS_T double
#define FS_IS_F32 0
#define FS_SUF f64
#include FS_IMPL_HEADER
#undef FS_T
#undef FS_IS_F32
#undef FS_SUF
