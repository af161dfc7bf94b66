# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Loss kernels: nll_loss, cross_entropy and the fused cross-entropy gradient.

Design note
-----------
The Python layer (``fastsoftmax.losses``) checks every argument (``_loss_validation``),
checks every class index, and hands this module C-contiguous 2-D ``(rows, classes)`` arrays
of one float dtype, int64 class indices and a float64 buffer for the per-row losses; the
kernels here assume exactly that.  Each call releases the GIL (on the fast path, below, only
from 4096 elements) and runs the C row kernels of ``_src/fs_losses.h`` (vectorised per
instruction set, picked at import), which split rows across OpenMP threads above a work
threshold.  The per-row losses are summed in a fixed order (``sum_row_losses``), so results
do not depend on the number of threads.

Arguments: ``x`` / ``target`` / ``prob`` / ``weight`` are inputs (IN), ``grad`` and
``row_loss`` are written (OUT).
"""
cimport numpy as cnp
from libc.math cimport INFINITY, NAN, copysign
from libc.stddef cimport ptrdiff_t
from libc.stdint cimport INT64_MAX, INT64_MIN, int64_t

from ._fastpath cimport PyThreadState, is_plain_float, is_plain_out, overlaps, reacquire_gil, release_gil_for, threads_for
from ._result_pool import MIN_ALIGNED_BYTES as _MIN_ALIGNED_BYTES, empty as _pooled_empty

cnp.import_array()

cdef Py_ssize_t MIN_ALIGNED_BYTES = _MIN_ALIGNED_BYTES

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
    double fs_sum_row_losses(const double *, ptrdiff_t)
    int fs_class_indices_ok(const int64_t *, ptrdiff_t, ptrdiff_t, int64_t)

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


def sum_row_losses(cnp.ndarray row_loss):
    """The sum (float64) of the per-row losses, as the fast path takes it (fs_sum_row_losses:
    NumPy's pairwise summation), so that both paths give the same "sum" and "mean".

    row_loss : IN, C-contiguous float64
    """
    return fs_sum_row_losses(<const double *>cnp.PyArray_DATA(row_loss), cnp.PyArray_SIZE(row_loss))


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


# ---------------------------------------------------------------------------- fast path
#
# nll_loss, cross_entropy and cross_entropy_with_grad first try `try_loss`: when the call is
# the common one -- C-contiguous native float32/float64 logits of at least two dimensions,
# C-contiguous native int64 class indices of the leading shape, an integer ignore_index outside
# [0, C), a known reduction, a label smoothing given as a Python float or int in [0, 1], no
# weight or a C-contiguous one of the logits' dtype, and `out` absent or an exact match (the
# logits themselves, or memory disjoint from every input) -- it checks the targets in one pass
# and runs the kernel without the general path's argument handling (about 20 small NumPy calls:
# most of the time of a call on a small batch).  Anything else, including every call that must
# raise, returns None and the Python layer takes the general path, which checks and converts
# everything and raises its exact errors.  Both paths give the same bits: the same kernel on
# the same memory, the same mean's denominator (total_weight) and the same sum of the per-row
# losses (sum_row_losses).

cpdef enum LossKind:
    CROSS_ENTROPY = 0
    NLL = 1

cdef object _REDUCTIONS = {"mean": 0, "sum": 1, "none": 2}


cdef inline bint _is_plain_targets(object target, cnp.ndarray x):
    """`target` is a C-contiguous, native, aligned int64 ndarray of x's shape without its
    last axis."""
    if type(target) is not cnp.ndarray:
        return False
    cdef cnp.ndarray t = <cnp.ndarray>target
    cdef int nd = cnp.PyArray_NDIM(t)
    if nd != cnp.PyArray_NDIM(x) - 1:
        return False
    if not cnp.PyArray_ISSIGNED(t) or cnp.PyArray_ITEMSIZE(t) != 8:
        return False
    if not cnp.PyArray_IS_C_CONTIGUOUS(t) or not cnp.PyArray_ISNOTSWAPPED(t) or not cnp.PyArray_ISALIGNED(t):
        return False
    cdef int d
    for d in range(nd):
        if cnp.PyArray_DIM(t, d) != cnp.PyArray_DIM(x, d):
            return False
    return True


cdef extern from "numpy/arrayobject.h":
    object PyArray_Scalar(void *data, cnp.dtype descr, object base)


cdef object _scalar(double value, int typenum):
    """A NumPy scalar of the result dtype (the C cast rounds as astype does, without its
    overflow warning, which the general path silences too)."""
    cdef float f
    if typenum == cnp.NPY_FLOAT:
        f = <float>value
        return PyArray_Scalar(&f, cnp.PyArray_DescrFromType(cnp.NPY_FLOAT), None)
    return PyArray_Scalar(&value, cnp.PyArray_DescrFromType(cnp.NPY_DOUBLE), None)


def try_loss(int kind, object logits, object target, object weight, object ignore_index, object reduction,
             object label_smoothing, object out, bint want_grad, object get_threads):
    """The loss (and, with `want_grad`, ``(loss, grad)``) of a call on the fast path, or None.

    kind                   : CROSS_ENTROPY or NLL (then `logits` are log-probabilities, and
                             there is no smoothing and no gradient)
    logits, target, weight : IN, as given by the caller
    out                    : OUT, as given by the caller (cross_entropy_with_grad), or None
    """
    if not is_plain_float(logits):
        return None
    cdef cnp.ndarray x = <cnp.ndarray>logits
    cdef int nd = cnp.PyArray_NDIM(x)
    cdef int typenum = cnp.PyArray_TYPE(x)
    if nd < 2 or not _is_plain_targets(target, x):
        return None
    cdef cnp.ndarray t = <cnp.ndarray>target
    cdef ptrdiff_t ncols = cnp.PyArray_DIM(x, nd - 1)
    cdef ptrdiff_t nrows = cnp.PyArray_SIZE(t)
    if nrows == 0 or ncols == 0:
        return None
    cdef cnp.ndarray w = None
    if weight is not None:
        if (not is_plain_float(weight) or cnp.PyArray_TYPE(<cnp.ndarray>weight) != typenum
                or cnp.PyArray_NDIM(<cnp.ndarray>weight) != 1 or cnp.PyArray_DIM(<cnp.ndarray>weight, 0) != ncols):
            return None
        w = <cnp.ndarray>weight
    if type(reduction) is not str or reduction not in _REDUCTIONS:
        return None
    cdef int red = _REDUCTIONS[reduction]
    cdef double eps = 0.0
    if kind == CROSS_ENTROPY:
        if type(label_smoothing) is not float and type(label_smoothing) is not int:
            return None
        if not 0 <= label_smoothing <= 1:  # (NaN too) the general path raises
            return None
        eps = label_smoothing
    # ignore_index outside [0, C): the ignored samples are then exactly those outside it
    if type(ignore_index) is not int or 0 <= ignore_index < ncols or not INT64_MIN <= ignore_index <= INT64_MAX:
        return None
    cdef int64_t ignore = ignore_index
    if out is not None and (not want_grad or not is_plain_out(out, x, nd, (x,)) or overlaps(<cnp.ndarray>out, t)
                            or (w is not None and overlaps(<cnp.ndarray>out, w))):
        return None
    cdef const int64_t *tp = <const int64_t *>cnp.PyArray_DATA(t)
    if not fs_class_indices_ok(tp, nrows, ncols, ignore):
        return None  # a target the general path reports

    cdef void *wp = cnp.PyArray_DATA(w) if w is not None else NULL
    cdef double denominator = 1.0  # the mean's: the summed weights of the targets (their count)
    if red == 0:
        if typenum == cnp.NPY_FLOAT:
            denominator = fs_loss_f32.total_weight(tp, <const float *>wp, nrows, ncols)
        else:
            denominator = fs_loss_f64.total_weight(tp, <const double *>wp, nrows, ncols)
    cdef cnp.ndarray row_loss = cnp.PyArray_EMPTY(nd - 1, cnp.PyArray_DIMS(x), cnp.NPY_DOUBLE, 0)
    cdef cnp.ndarray grad = None
    if want_grad:
        if out is not None:
            grad = <cnp.ndarray>out
        elif cnp.PyArray_NBYTES(x) >= MIN_ALIGNED_BYTES:
            grad = _pooled_empty(logits.shape, logits.dtype)
        else:
            grad = cnp.PyArray_EMPTY(nd, cnp.PyArray_DIMS(x), typenum, 0)
    cdef double grad_scale = 1.0
    if red == 0:
        grad_scale = 1.0 / denominator if denominator != 0 else copysign(INFINITY, denominator)  # as NumPy's 1 / 0
    cdef int nthreads = threads_for(nrows * ncols, get_threads)
    cdef void *xp = cnp.PyArray_DATA(x)
    cdef void *gp = cnp.PyArray_DATA(grad) if grad is not None else NULL
    cdef double *lp = <double *>cnp.PyArray_DATA(row_loss)
    cdef int status = 0
    cdef PyThreadState *ts = release_gil_for(nrows if kind == NLL else nrows * ncols)  # nll reads a value a row
    if kind == NLL:
        if typenum == cnp.NPY_FLOAT:
            fs_loss_f32.nll(<const float *>xp, tp, <const float *>wp, nrows, ncols, lp)
        else:
            fs_loss_f64.nll(<const double *>xp, tp, <const double *>wp, nrows, ncols, lp)
    elif typenum == cnp.NPY_FLOAT:
        status = fs_loss_f32.ce(<const float *>xp, tp, NULL, <const float *>wp, nrows, ncols, eps, grad_scale,
                                <float *>gp, lp, nthreads)
    else:
        status = fs_loss_f64.ce(<const double *>xp, tp, NULL, <const double *>wp, nrows, ncols, eps, grad_scale,
                                <double *>gp, lp, nthreads)
    reacquire_gil(ts)
    if status != 0:
        raise MemoryError("cross_entropy: could not allocate a scratch row of the class axis")

    cdef object loss
    cdef cnp.ndarray losses32
    cdef float *l32
    cdef ptrdiff_t i
    cdef double total
    if red == 2:  # "none": the per-sample losses in the result dtype
        if typenum == cnp.NPY_DOUBLE:
            loss = row_loss
        else:
            losses32 = cnp.PyArray_EMPTY(nd - 1, cnp.PyArray_DIMS(x), cnp.NPY_FLOAT, 0)
            l32 = <float *>cnp.PyArray_DATA(losses32)
            for i in range(nrows):
                l32[i] = <float>lp[i]
            loss = losses32
    else:
        total = fs_sum_row_losses(lp, nrows)
        if red == 0:
            total = total / denominator if denominator != 0 else NAN  # weights summing to 0: NaN, as torch
        loss = _scalar(total, typenum)
    return (loss, grad) if want_grad else loss
