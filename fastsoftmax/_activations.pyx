# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Activation kernels: softmax, log_softmax, logsumexp and their backward passes.

Design note
-----------
The Python layer (``fastsoftmax.activations``) checks every argument, moves the
reduced axis last and hands this module C-contiguous arrays of one float dtype; the
kernels here assume exactly that.  Each call releases the GIL and runs the C row
kernels of ``_src/fs_activations.h`` (vectorised per instruction set, picked at import),
which split rows across OpenMP threads above a work threshold.

Arguments: ``x`` / ``grad_output`` / ``output`` are inputs (IN), ``out`` is written (OUT).
"""
cimport numpy as cnp
from libc.stddef cimport ptrdiff_t

cnp.import_array()

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

fs_activations_init()

#: Instruction set the kernels were dispatched to ("avx512", "avx2" or "baseline").
ISA = fs_activations_isa().decode()

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
    cdef ptrdiff_t nrows = _leading_rows(x)
    cdef ptrdiff_t ncols = cnp.PyArray_DIM(x, cnp.PyArray_NDIM(x) - 1)
    cdef int typenum = cnp.PyArray_TYPE(x)
    cdef void *xp = cnp.PyArray_DATA(x)
    cdef void *op_ = cnp.PyArray_DATA(out)
    if nrows == 0:
        return
    with nogil:
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


def binary_rows(int op, cnp.ndarray g, cnp.ndarray y, cnp.ndarray out, int nthreads):
    """Run SOFTMAX_BACKWARD or LOG_SOFTMAX_BACKWARD over the rows of ``g`` and ``y``.

    g, y : IN,  C-contiguous, one shape and one float dtype, ndim >= 1
    out  : OUT, C-contiguous, the same shape and dtype (may be g or y itself)
    """
    cdef ptrdiff_t nrows = _leading_rows(g)
    cdef ptrdiff_t ncols = cnp.PyArray_DIM(g, cnp.PyArray_NDIM(g) - 1)
    cdef int typenum = cnp.PyArray_TYPE(g)
    cdef void *gp = cnp.PyArray_DATA(g)
    cdef void *yp = cnp.PyArray_DATA(y)
    cdef void *op_ = cnp.PyArray_DATA(out)
    if nrows == 0 or ncols == 0:
        return
    with nogil:
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
