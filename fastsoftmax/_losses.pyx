# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Loss kernels: nll_loss, cross_entropy and the fused cross-entropy gradient.

Design note
-----------
The Python layer (``fastsoftmax.losses``) checks every argument (``_loss_validation``),
checks every class index, and hands this module C-contiguous 2-D ``(rows, classes)`` arrays
of one float dtype, int64 class indices and a float64 buffer for the per-row losses; the
kernels here assume exactly that.  Each call releases the GIL and runs the C row kernels of
``_src/fs_losses.h`` (vectorised per instruction set, picked at import), which split rows
across OpenMP threads above a work threshold.  The per-row losses are reduced by the caller
in a fixed order, so results do not depend on the number of threads.

Arguments: ``x`` / ``target`` / ``prob`` / ``weight`` are inputs (IN), ``grad`` and
``row_loss`` are written (OUT).
"""
cimport numpy as cnp
from libc.stddef cimport ptrdiff_t
from libc.stdint cimport int64_t

cnp.import_array()

cdef extern from "_src/fs_losses.h" nogil:
    ctypedef struct fs_loss_table_f32:
        int (*ce)(const float *, const int64_t *, const float *, const float *, ptrdiff_t, ptrdiff_t,
                  double, double, float *, double *, int) noexcept nogil
        void (*nll)(const float *, const int64_t *, const float *, ptrdiff_t, ptrdiff_t, double *) noexcept nogil
        double (*total_weight)(const int64_t *, const float *, ptrdiff_t, ptrdiff_t) noexcept nogil
    ctypedef struct fs_loss_table_f64:
        int (*ce)(const double *, const int64_t *, const double *, const double *, ptrdiff_t, ptrdiff_t,
                  double, double, double *, double *, int) noexcept nogil
        void (*nll)(const double *, const int64_t *, const double *, ptrdiff_t, ptrdiff_t, double *) noexcept nogil
        double (*total_weight)(const int64_t *, const double *, ptrdiff_t, ptrdiff_t) noexcept nogil
    fs_loss_table_f32 fs_loss_f32
    fs_loss_table_f64 fs_loss_f64
    int fs_losses_init()
    const char *fs_losses_isa()

fs_losses_init()

#: Instruction set the kernels were dispatched to ("avx512", "avx2", "baseline", or "avx512+avx2":
#: AVX-512 with the AVX2 kernels for some row shapes, on AMD Zen 4; see fs_common.h's fs_pick_mixed).
ISA = fs_losses_isa().decode()


cdef inline void *_data_or_null(object a):
    if a is None:
        return NULL
    return cnp.PyArray_DATA(<cnp.ndarray>a)


def ce_rows(cnp.ndarray x, object target, object prob, object weight, double label_smoothing,
            double grad_scale, object grad, cnp.ndarray row_loss, int nthreads):
    """Cross-entropy over the rows of ``x``: per-row losses and, optionally, the gradient.

    x         : IN,  C-contiguous float32/float64, shape (N, C)
    target    : IN,  C-contiguous int64, shape (N,); entries outside [0, C) are ignored rows;
                or None when ``prob`` is given
    prob      : IN,  C-contiguous, x's shape and dtype (probability targets), or None
    weight    : IN,  C-contiguous, x's dtype, shape (C,), or None
    grad      : OUT, C-contiguous, x's shape and dtype, or None (loss only); may be x itself
                but must not overlap ``prob`` or ``weight``; receives grad_scale * d(loss)/dx
    row_loss  : OUT, C-contiguous float64, shape (N,): each row's (weighted) loss

    Without ``grad``, each thread uses a scratch row of C elements (MemoryError if it cannot
    be allocated; nothing the caller sees has been written then).
    """
    cdef ptrdiff_t nrows = cnp.PyArray_DIM(x, 0)
    cdef ptrdiff_t ncols = cnp.PyArray_DIM(x, 1)
    cdef int typenum = cnp.PyArray_TYPE(x)
    cdef void *xp = cnp.PyArray_DATA(x)
    cdef const int64_t *tp = <const int64_t *>_data_or_null(target)
    cdef void *pp = _data_or_null(prob)
    cdef void *wp = _data_or_null(weight)
    cdef void *gp = _data_or_null(grad)
    cdef double *lp = <double *>cnp.PyArray_DATA(row_loss)
    cdef int status
    if nrows == 0:
        return
    with nogil:
        if typenum == cnp.NPY_FLOAT:
            status = fs_loss_f32.ce(<const float *>xp, tp, <const float *>pp, <const float *>wp, nrows, ncols,
                           label_smoothing, grad_scale, <float *>gp, lp, nthreads)
        else:
            status = fs_loss_f64.ce(<const double *>xp, tp, <const double *>pp, <const double *>wp, nrows, ncols,
                           label_smoothing, grad_scale, <double *>gp, lp, nthreads)
    if status != 0:
        raise MemoryError("cross_entropy: could not allocate a scratch row of the class axis")


def nll_rows(cnp.ndarray x, cnp.ndarray target, object weight, cnp.ndarray row_loss):
    """Negative log-likelihood per row: ``row_loss[r] = -weight[t] * x[r, t]`` (0 if ignored).

    x        : IN,  C-contiguous float32/float64, shape (N, C) (log-probabilities)
    target   : IN,  C-contiguous int64, shape (N,); entries outside [0, C) are ignored rows
    weight   : IN,  C-contiguous, x's dtype, shape (C,), or None
    row_loss : OUT, C-contiguous float64, shape (N,)
    """
    cdef ptrdiff_t nrows = cnp.PyArray_DIM(x, 0)
    cdef ptrdiff_t ncols = cnp.PyArray_DIM(x, 1)
    cdef int typenum = cnp.PyArray_TYPE(x)
    cdef void *xp = cnp.PyArray_DATA(x)
    cdef const int64_t *tp = <const int64_t *>cnp.PyArray_DATA(target)
    cdef void *wp = _data_or_null(weight)
    cdef double *lp = <double *>cnp.PyArray_DATA(row_loss)
    with nogil:
        if typenum == cnp.NPY_FLOAT:
            fs_loss_f32.nll(<const float *>xp, tp, <const float *>wp, nrows, ncols, lp)
        else:
            fs_loss_f64.nll(<const double *>xp, tp, <const double *>wp, nrows, ncols, lp)


def total_weight(cnp.ndarray target, object weight, Py_ssize_t ncols, int typenum):
    """Sum (float64) of ``weight[t]`` over the targets in [0, ncols) (their count if no weight).

    target : IN, C-contiguous int64, shape (N,)
    weight : IN, C-contiguous, shape (ncols,), of the NumPy type number ``typenum``
             (NPY_FLOAT or NPY_DOUBLE), or None
    """
    cdef ptrdiff_t nrows = cnp.PyArray_DIM(target, 0)
    cdef const int64_t *tp = <const int64_t *>cnp.PyArray_DATA(target)
    cdef void *wp = _data_or_null(weight)
    cdef double s
    with nogil:
        if typenum == cnp.NPY_FLOAT:
            s = fs_loss_f32.total_weight(tp, <const float *>wp, nrows, ncols)
        else:
            s = fs_loss_f64.total_weight(tp, <const double *>wp, nrows, ncols)
    return s
