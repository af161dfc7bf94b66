# cython: language_level=3
"""Thread controls shared by every kernel module.

The kernels are parallelised with OpenMP.  The limit in force is the smaller of the
value given to :func:`set_num_threads` and OpenMP's own ``omp_get_max_threads()``, which
``OMP_NUM_THREADS`` sets and ``threadpoolctl`` lowers.  Without OpenMP everything runs
on one thread.
"""

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define FS_HAVE_OPENMP 1
    #else
    #define FS_HAVE_OPENMP 0
    static int omp_get_max_threads(void) { return 1; }
    static void omp_set_num_threads(int n) { (void)n; }
    #endif
    """
    int FS_HAVE_OPENMP
    int omp_get_max_threads() nogil
    void omp_set_num_threads(int n) nogil

cdef int _user_limit = 0   # 0: not set, follow OpenMP

HAVE_OPENMP = bool(FS_HAVE_OPENMP)


cpdef int get_num_threads():
    """The number of threads the kernels may use (the limit in force)."""
    cdef int omp = omp_get_max_threads()
    if _user_limit > 0 and _user_limit < omp:
        return _user_limit
    return omp


def set_num_threads(n):
    """Set the number of threads the kernels may use for large work (n >= 1)."""
    global _user_limit
    if isinstance(n, bool) or not isinstance(n, int):
        import operator
        try:
            n = operator.index(n)
        except TypeError:
            raise TypeError(
                f"set_num_threads() argument 'n' must be an integer, not {type(n).__name__}"
            ) from None
        if isinstance(n, bool):
            raise TypeError("set_num_threads() argument 'n' must be an integer, not bool")
    if n < 1:
        raise ValueError(f"set_num_threads() argument 'n' must be >= 1, got {n}")
    if n > 1 << 16:
        raise ValueError(f"set_num_threads() argument 'n' must be <= 65536, got {n}")
    _user_limit = n
    if FS_HAVE_OPENMP:
        omp_set_num_threads(n)
