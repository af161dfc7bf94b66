# cython: language_level=3
"""Helpers of the compiled fast paths (``_activations.try_unary`` / ``try_binary``,
``_losses.try_loss``), shared as inline functions: no module of its own.

A fast path runs a kernel straight from the arguments a caller gave when they already are
what the kernel takes, and otherwise returns None so that the Python layer's general path
checks and converts everything (and raises its exact errors).  These helpers decide whether
an ``out=`` array can be written as it is, and whether a call is worth releasing the GIL.
"""
cimport numpy as cnp
from libc.stddef cimport ptrdiff_t

cdef extern from "_src/fs_common.h":
    ptrdiff_t FS_MIN_THREADED_WORK  # below this the kernels run on one thread anyway

cdef extern from "Python.h":
    ctypedef struct PyThreadState:
        pass
    PyThreadState *PyEval_SaveThread()
    void PyEval_RestoreThread(PyThreadState *)

# Calls on fewer elements keep the GIL: releasing and taking it back costs about as much as
# the whole kernel on a (1, 10) array (measured 8% of such a call), and other Python threads
# gain nothing from a gap of a microsecond.
cdef enum:
    NOGIL_WORK = 4096


cdef inline PyThreadState *release_gil_for(ptrdiff_t work) noexcept:
    """PyEval_SaveThread() for a call on `work` elements, NULL (keep the GIL) below
    NOGIL_WORK; hand the result to reacquire_gil.  Only C code without Python objects
    may run in between."""
    return PyEval_SaveThread() if work >= NOGIL_WORK else NULL


cdef inline void reacquire_gil(PyThreadState *ts) noexcept:
    if ts != NULL:
        PyEval_RestoreThread(ts)


cdef inline bint overlaps(cnp.ndarray a, cnp.ndarray b) noexcept:
    cdef char *alo = <char *>cnp.PyArray_DATA(a)
    cdef char *blo = <char *>cnp.PyArray_DATA(b)
    return alo < blo + cnp.PyArray_NBYTES(b) and blo < alo + cnp.PyArray_NBYTES(a)


cdef inline bint is_plain_out(object out, cnp.ndarray like, int nd, tuple inputs):
    """`out` is an exact, writeable, C-contiguous, native match for a result of `like`'s dtype
    and first `nd` dimensions, and each input is either disjoint from it or the very same
    buffer (in place).  Anything else (including every error) is left to the general path."""
    if type(out) is not cnp.ndarray:
        return False
    cdef cnp.ndarray o = <cnp.ndarray>out
    if cnp.PyArray_NDIM(o) != nd or cnp.PyArray_TYPE(o) != cnp.PyArray_TYPE(like):
        return False
    if (not cnp.PyArray_IS_C_CONTIGUOUS(o) or not cnp.PyArray_ISWRITEABLE(o)
            or not cnp.PyArray_ISNOTSWAPPED(o) or not cnp.PyArray_ISALIGNED(o)):
        return False
    cdef int d
    for d in range(nd):
        if cnp.PyArray_DIM(o, d) != cnp.PyArray_DIM(like, d):
            return False
    cdef cnp.ndarray a
    cdef bint same
    for obj in inputs:
        a = <cnp.ndarray>obj
        same = (cnp.PyArray_DATA(a) == cnp.PyArray_DATA(o)
                and cnp.PyArray_NBYTES(a) == cnp.PyArray_NBYTES(o))
        if overlaps(o, a) and not same:
            return False
    return True


cdef inline bint is_plain_float(object a):
    """`a` is an ndarray of at least one dimension that the kernels read as it is: float32 or
    float64, C-contiguous, native byte order, aligned."""
    if type(a) is not cnp.ndarray:
        return False
    cdef cnp.ndarray arr = <cnp.ndarray>a
    cdef int t = cnp.PyArray_TYPE(arr)
    if cnp.PyArray_NDIM(arr) < 1 or (t != cnp.NPY_FLOAT and t != cnp.NPY_DOUBLE):
        return False
    return cnp.PyArray_IS_C_CONTIGUOUS(arr) and cnp.PyArray_ISNOTSWAPPED(arr) and cnp.PyArray_ISALIGNED(arr)


cdef inline int threads_for(ptrdiff_t work, object get_threads):
    """The thread count a kernel is given for `work` elements: 1 below FS_MIN_THREADED_WORK
    (the kernels would run on one thread anyway), else get_threads()."""
    if work < FS_MIN_THREADED_WORK:
        return 1
    return get_threads()
