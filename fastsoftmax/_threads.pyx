# cython: language_level=3
"""Thread controls shared by every kernel module.

The kernels are parallelised with OpenMP.  OpenMP keeps its thread limit per calling
thread (``omp_set_num_threads`` sets it for the caller only), so :func:`set_num_threads`
records a process-wide limit and a generation number; the first kernel call from any
Python thread after a change applies it to that thread.  From then on the limit in force
is OpenMP's own ``omp_get_max_threads()`` in the calling thread, which ``threadpoolctl``
lowers (and restores) and which ``OMP_NUM_THREADS`` sets by default.  Without OpenMP
everything runs on one thread.
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
    /* generation of set_num_threads() this OS thread has applied */
    static __thread long fs_thread_generation = 0;
    """
    int FS_HAVE_OPENMP
    long fs_thread_generation
    int omp_get_max_threads() nogil
    void omp_set_num_threads(int n) nogil

cdef int _user_limit = 0      # 0: never set, follow OpenMP's default
cdef long _generation = 0     # bumped by every set_num_threads()

HAVE_OPENMP = bool(FS_HAVE_OPENMP)


cpdef int get_num_threads():
    """The number of threads the kernels may use (the limit in force in this thread)."""
    global fs_thread_generation
    if _user_limit > 0 and fs_thread_generation != _generation:
        omp_set_num_threads(_user_limit)
        fs_thread_generation = _generation
    return omp_get_max_threads()


def set_num_threads(n):
    """Set the number of threads the kernels may use for large work (n >= 1), in every thread."""
    global _user_limit, _generation, fs_thread_generation
    if isinstance(n, bool):
        raise TypeError("set_num_threads() argument 'n' must be an integer, not bool")
    import operator
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(
            f"set_num_threads() argument 'n' must be an integer, not {type(n).__name__}"
        ) from None
    if n < 1:
        raise ValueError(f"set_num_threads() argument 'n' must be >= 1, got {n}")
    if n > 1 << 16:
        raise ValueError(f"set_num_threads() argument 'n' must be <= 65536, got {n}")
    if not FS_HAVE_OPENMP:
        return
    _user_limit = n
    _generation += 1
    omp_set_num_threads(n)
    fs_thread_generation = _generation
