# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Activation kernels: softmax, log_softmax, logsumexp and their backward passes.

Design note
-----------
The Python layer (``fastsoftmax.activations``) checks every argument, moves the
reduced axis last and hands this module C-contiguous arrays of one float dtype; the
kernels here assume exactly that.  Results of 1 MiB or more are allocated by
``_result_pool``: 64-byte aligned, and from 32 MiB in memory of freed large results
instead of mapped anew.  Each call releases the GIL and runs the C row
kernels of ``_src/fs_activations.h`` (vectorised per instruction set, picked at import),
which split rows across OpenMP threads above a work threshold.

Arguments: ``x`` / ``grad_output`` / ``output`` are inputs (IN), ``out`` is written (OUT).
"""
cimport numpy as cnp
from libc.stddef cimport ptrdiff_t

from ._fastpath cimport (
    PyThreadState, is_plain_float, is_plain_out, overlaps, reacquire_gil, release_gil_for, threads_for,
)
from ._result_pool import MIN_ALIGNED_BYTES as _MIN_ALIGNED_BYTES, empty as _pooled_empty

cnp.import_array()

# Results of at least this many bytes are allocated by _result_pool (64-byte aligned, the
# largest pooled; a C constant: the test runs on every fast-path call).
cdef Py_ssize_t MIN_ALIGNED_BYTES = _MIN_ALIGNED_BYTES

cdef extern from "_src/fs_activations.h" nogil:
    ctypedef struct fs_act_table_f32:
        void (*softmax)(const float *, float *, ptrdiff_t, ptrdiff_t, int) noexcept nogil
        void (*log_softmax)(const float *, float *, ptrdiff_t, ptrdiff_t, int) noexcept nogil
        void (*logsumexp)(const float *, float *, ptrdiff_t, ptrdiff_t, int) noexcept nogil
        void (*softmax_backward)(const float *, const float *, float *, ptrdiff_t, ptrdiff_t, int) noexcept nogil
        void (*log_softmax_backward)(const float *, const float *, float *, ptrdiff_t, ptrdiff_t, int) noexcept nogil
    ctypedef struct fs_act_table_f64:
        void (*softmax)(const double *, double *, ptrdiff_t, ptrdiff_t, int) noexcept nogil
        void (*log_softmax)(const double *, double *, ptrdiff_t, ptrdiff_t, int) noexcept nogil
        void (*logsumexp)(const double *, double *, ptrdiff_t, ptrdiff_t, int) noexcept nogil
        void (*softmax_backward)(const double *, const double *, double *, ptrdiff_t, ptrdiff_t, int) noexcept nogil
        void (*log_softmax_backward)(const double *, const double *, double *, ptrdiff_t, ptrdiff_t, int) noexcept nogil
    fs_act_table_f32 fs_act_f32
    fs_act_table_f64 fs_act_f64
    int fs_activations_init()
    const char *fs_activations_isa()
    ptrdiff_t FS_STREAM_MIN_BYTES
    ptrdiff_t FS_STREAM_MIN_COLS

fs_activations_init()

#: Instruction set the kernels were dispatched to ("avx512", "avx2", "baseline", or "avx512+avx2":
#: AVX-512 with the AVX2 kernels for some row shapes, on AMD Zen 4; see fs_common.h's fs_pick_mixed).
ISA = fs_activations_isa().decode()

#: Results of at least STREAM_MIN_BYTES in rows of at least STREAM_MIN_COLS are written with
#: streaming stores on AVX-512 (softmax, log_softmax, the cross-entropy gradient); so are
#: float32 softmax / log_softmax results of that size in rows of 33..128 that are a whole
#: number of 64-byte lines and start on one (a 64-byte aligned result).
STREAM_MIN_BYTES = FS_STREAM_MIN_BYTES
STREAM_MIN_COLS = FS_STREAM_MIN_COLS

# Operation codes of the row-wise kernels.
cpdef enum Op:
    SOFTMAX = 0
    LOG_SOFTMAX = 1
    LOGSUMEXP = 2
    SOFTMAX_BACKWARD = 3
    LOG_SOFTMAX_BACKWARD = 4


cdef inline ptrdiff_t _leading_rows(cnp.ndarray a):
    """Product of every dimension but the last."""
    cdef ptrdiff_t n = 1
    cdef int d
    for d in range(cnp.PyArray_NDIM(a) - 1):
        n *= cnp.PyArray_DIM(a, d)
    return n


def unary_rows(int op, cnp.ndarray x, cnp.ndarray out, int nthreads):
    """Run SOFTMAX, LOG_SOFTMAX or LOGSUMEXP over the rows (last axis) of ``x``.

    x   : IN,  C-contiguous float32/float64, ndim >= 1
    out : OUT, C-contiguous, same dtype; x's shape (LOGSUMEXP: one value per row)
    """
    _unary_rows(op, x, out, nthreads)


cdef void _unary_rows(int op, cnp.ndarray x, cnp.ndarray out, int nthreads):
    cdef ptrdiff_t nrows = _leading_rows(x)
    cdef ptrdiff_t ncols = cnp.PyArray_DIM(x, cnp.PyArray_NDIM(x) - 1)
    cdef int typenum = cnp.PyArray_TYPE(x)
    cdef void *xp = cnp.PyArray_DATA(x)
    cdef void *op_ = cnp.PyArray_DATA(out)
    if nrows == 0:
        return
    cdef PyThreadState *ts = release_gil_for(nrows * ncols)
    if typenum == cnp.NPY_FLOAT:
        if op == SOFTMAX:
            fs_act_f32.softmax(<const float *>xp, <float *>op_, nrows, ncols, nthreads)
        elif op == LOG_SOFTMAX:
            fs_act_f32.log_softmax(<const float *>xp, <float *>op_, nrows, ncols, nthreads)
        else:
            fs_act_f32.logsumexp(<const float *>xp, <float *>op_, nrows, ncols, nthreads)
    else:
        if op == SOFTMAX:
            fs_act_f64.softmax(<const double *>xp, <double *>op_, nrows, ncols, nthreads)
        elif op == LOG_SOFTMAX:
            fs_act_f64.log_softmax(<const double *>xp, <double *>op_, nrows, ncols, nthreads)
        else:
            fs_act_f64.logsumexp(<const double *>xp, <double *>op_, nrows, ncols, nthreads)
    reacquire_gil(ts)


def binary_rows(int op, cnp.ndarray g, cnp.ndarray y, cnp.ndarray out, int nthreads):
    """Run SOFTMAX_BACKWARD or LOG_SOFTMAX_BACKWARD over the rows of ``g`` and ``y``.

    g, y : IN,  C-contiguous, one shape and one float dtype, ndim >= 1
    out  : OUT, C-contiguous, the same shape and dtype (may be g or y itself)
    """
    _binary_rows(op, g, y, out, nthreads)


cdef void _binary_rows(int op, cnp.ndarray g, cnp.ndarray y, cnp.ndarray out, int nthreads):
    cdef ptrdiff_t nrows = _leading_rows(g)
    cdef ptrdiff_t ncols = cnp.PyArray_DIM(g, cnp.PyArray_NDIM(g) - 1)
    cdef int typenum = cnp.PyArray_TYPE(g)
    cdef void *gp = cnp.PyArray_DATA(g)
    cdef void *yp = cnp.PyArray_DATA(y)
    cdef void *op_ = cnp.PyArray_DATA(out)
    if nrows == 0 or ncols == 0:
        return
    cdef PyThreadState *ts = release_gil_for(nrows * ncols)
    if typenum == cnp.NPY_FLOAT:
        if op == SOFTMAX_BACKWARD:
            fs_act_f32.softmax_backward(<const float *>gp, <const float *>yp, <float *>op_,
                                        nrows, ncols, nthreads)
        else:
            fs_act_f32.log_softmax_backward(<const float *>gp, <const float *>yp, <float *>op_,
                                            nrows, ncols, nthreads)
    else:
        if op == SOFTMAX_BACKWARD:
            fs_act_f64.softmax_backward(<const double *>gp, <const double *>yp, <double *>op_,
                                        nrows, ncols, nthreads)
        else:
            fs_act_f64.log_softmax_backward(<const double *>gp, <const double *>yp, <double *>op_,
                                            nrows, ncols, nthreads)
    reacquire_gil(ts)


# ---------------------------------------------------------------------------- fast path
#
# The public functions first try these: when the input is already what the kernels take
# (a native-order, C-contiguous float32/float64 ndarray reduced along its last axis) and
# `out` is absent or an exact C-contiguous match (disjoint from the inputs, or one of them:
# in place), they run the kernel without the general argument handling of
# fastsoftmax._validation.  Anything else returns None and the caller takes
# the general path, which checks and converts everything.

cdef inline bint _is_plain_rows(object a, object axis):
    if not is_plain_float(a) or type(axis) is not int:
        return False
    cdef int nd = cnp.PyArray_NDIM(<cnp.ndarray>a)
    return axis == -1 or axis == nd - 1  # Python ints: a huge axis is just "no"


cdef inline int _threads_for(cnp.ndarray a, object get_threads):
    return threads_for(cnp.PyArray_SIZE(a), get_threads)


def try_unary(int op, object x, object axis, object out, object get_threads):
    """SOFTMAX / LOG_SOFTMAX / LOGSUMEXP (keepdims=False) on the fast path, or None."""
    if not _is_plain_rows(x, axis):
        return None
    cdef cnp.ndarray a = <cnp.ndarray>x
    cdef int nd = cnp.PyArray_NDIM(a)
    cdef int res_nd = nd - 1 if op == LOGSUMEXP else nd
    cdef cnp.ndarray res
    if out is not None:
        if not is_plain_out(out, a, res_nd, (a,)):
            return None
        if op == LOGSUMEXP and cnp.PyArray_NBYTES(<cnp.ndarray>out) > 0 and overlaps(<cnp.ndarray>out, a):
            return None  # a reduction cannot work in place
        _unary_rows(op, a, <cnp.ndarray>out, _threads_for(a, get_threads))
        return out
    if op != LOGSUMEXP and cnp.PyArray_NBYTES(a) >= MIN_ALIGNED_BYTES:
        res = _pooled_empty(x.shape, x.dtype)
    else:
        res = cnp.PyArray_EMPTY(res_nd, cnp.PyArray_DIMS(a), cnp.PyArray_TYPE(a), 0)
    _unary_rows(op, a, res, _threads_for(a, get_threads))
    if op == LOGSUMEXP and nd == 1:
        return res[()]
    return res


def try_binary(int op, object g, object y, object axis, object out, object get_threads):
    """SOFTMAX_BACKWARD / LOG_SOFTMAX_BACKWARD on the fast path, or None."""
    if not _is_plain_rows(g, axis) or not _is_plain_rows(y, axis):
        return None
    cdef cnp.ndarray ga = <cnp.ndarray>g
    cdef cnp.ndarray ya = <cnp.ndarray>y
    cdef int nd = cnp.PyArray_NDIM(ga)
    if cnp.PyArray_TYPE(ga) != cnp.PyArray_TYPE(ya) or nd != cnp.PyArray_NDIM(ya):
        return None
    cdef int d
    for d in range(nd):
        if cnp.PyArray_DIM(ga, d) != cnp.PyArray_DIM(ya, d):
            return None
    if out is not None:
        if not is_plain_out(out, ga, nd, (ga, ya)):
            return None
        _binary_rows(op, ga, ya, <cnp.ndarray>out, _threads_for(ga, get_threads))
        return out
    cdef cnp.ndarray res
    if cnp.PyArray_NBYTES(ga) >= MIN_ALIGNED_BYTES:
        res = _pooled_empty(g.shape, g.dtype)
    else:
        res = cnp.PyArray_EMPTY(nd, cnp.PyArray_DIMS(ga), cnp.PyArray_TYPE(ga), 0)
    _binary_rows(op, ga, ya, res, _threads_for(ga, get_threads))
    return res
