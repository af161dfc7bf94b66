# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""SGD kernels: one in-place update of one array (``sgd_step``) and the multi-tensor step of
an optimizer (``MultiSGD``).

Design note
-----------
The Python layer (``fastsoftmax.optim``, checks in ``fastsoftmax._optim_validation``)
validates parameters and hyperparameters; this module only sees what it was given.
``MultiSGD`` is built once per optimizer: it holds a C table of every parameter (data
pointer, velocity pointer, size, group) and a table of group hyperparameters, so a step is
a gather of the gradients' data pointers (a C loop that checks each gradient's type, dtype,
shape, layout and overlap; anything unusual is handed to the Python checker, which raises
the documented error or returns a usable copy) followed by ONE call of the C kernel
``fs_sgd_multi`` with the GIL released.  Nothing is written before every gradient passed.

Arguments: parameters and velocities are written (OUT), gradients are read (IN).
"""
cimport numpy as cnp
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stddef cimport ptrdiff_t
from libc.stdint cimport uintptr_t
from libc.string cimport memset

cnp.import_array()

cdef extern from "_src/fs_sgd.h" nogil:
    ctypedef struct fs_sgd_hyper:
        double lr
        double momentum
        double dampening
        double weight_decay
        int nesterov
        int maximize
    ctypedef struct fs_sgd_tensor:
        void *param
        void *velocity
        ptrdiff_t n
        ptrdiff_t offset
        int group
        int is_f64
        int first
    void fs_sgd_multi(fs_sgd_tensor *t, const void **grads, ptrdiff_t ntensors,
                      const fs_sgd_hyper *groups, int nthreads)
    int fs_sgd_init()
    const char *fs_sgd_isa()

fs_sgd_init()

#: Instruction set the kernels were dispatched to ("avx512", "avx2" or "baseline").
ISA = fs_sgd_isa().decode()


def sgd_step(cnp.ndarray param, cnp.ndarray grad, velocity, double lr, double momentum,
             double dampening, double weight_decay, bint nesterov, bint maximize, int nthreads):
    """One update of one array, in place.

    param    : OUT, C-contiguous aligned float32/float64
    grad     : IN,  the same size and dtype, C-contiguous aligned, not overlapping param/velocity
    velocity : OUT, the same size and dtype, or None when momentum == 0
    """
    cdef fs_sgd_tensor t
    cdef fs_sgd_hyper h
    cdef const void *g = cnp.PyArray_DATA(grad)
    t.param = cnp.PyArray_DATA(param)
    t.velocity = NULL if velocity is None else cnp.PyArray_DATA(<cnp.ndarray>velocity)
    t.n = cnp.PyArray_SIZE(param)
    t.offset = 0
    t.group = 0
    t.is_f64 = cnp.PyArray_TYPE(param) == cnp.NPY_DOUBLE
    t.first = 0
    h.lr = lr
    h.momentum = momentum
    h.dampening = dampening
    h.weight_decay = weight_decay
    h.nesterov = nesterov
    h.maximize = maximize
    if t.n == 0:
        return
    with nogil:
        fs_sgd_multi(&t, &g, 1, &h, nthreads)


cdef bint _writable_float_array(object o):
    cdef cnp.ndarray a
    if not cnp.PyArray_Check(o):
        return False
    a = <cnp.ndarray>o
    return ((cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT or cnp.PyArray_TYPE(a) == cnp.NPY_DOUBLE)
            and cnp.PyArray_ISCARRAY_RO(a) and cnp.PyArray_ISWRITEABLE(a) and cnp.PyArray_ISNOTSWAPPED(a))


cdef class MultiSGD:
    """The native state of one optimizer: pointer tables over fixed parameter arrays.

    params  : tuple of validated parameter arrays (OUT), held for the optimizer's lifetime
    groups  : tuple, the group index of each parameter
    ngroups : number of groups (hyperparameters set by ``set_group``)
    checker : Python object whose ``grads(grads, n)``, ``param(i, p)`` and ``grad(i, g, p)``
              raise the documented error (``grad`` otherwise returns a fresh C-contiguous
              copy of the gradient in the parameter's dtype)
    """
    cdef Py_ssize_t n, ngroups, niv
    cdef bint busy  # a step is running (GIL released): no other step or table change meanwhile
    cdef fs_sgd_tensor *t
    cdef const void **g
    cdef fs_sgd_hyper *h
    cdef int *typenum
    cdef int *ndim
    cdef Py_ssize_t *dim_at
    cdef cnp.npy_intp *dims
    cdef uintptr_t *iv_lo
    cdef uintptr_t *iv_hi
    cdef tuple params
    cdef list velocities
    cdef object checker

    def __cinit__(self, tuple params, tuple groups, Py_ssize_t ngroups, checker):
        cdef Py_ssize_t n = len(params), i, d, ndims = 0
        cdef cnp.ndarray p
        if len(groups) != n or ngroups < 1:
            raise ValueError("MultiSGD: one group index per parameter and at least one group")
        for i in range(n):  # the caller validated these; re-checked here as the C code relies on them
            if not _writable_float_array(params[i]):
                raise TypeError(f"MultiSGD: params[{i}] is not a writeable aligned C-contiguous float array")
            if not 0 <= groups[i] < ngroups:
                raise ValueError(f"MultiSGD: group index {groups[i]!r} of params[{i}] is out of range")
        self.n = n
        self.ngroups = ngroups
        self.params = params
        self.velocities = [None] * n
        self.checker = checker
        for i in range(n):
            ndims += cnp.PyArray_NDIM(<cnp.ndarray>params[i])
        self.t = <fs_sgd_tensor *>PyMem_Malloc(max(n, 1) * sizeof(fs_sgd_tensor))
        self.g = <const void **>PyMem_Malloc(max(n, 1) * sizeof(void *))
        self.h = <fs_sgd_hyper *>PyMem_Malloc(ngroups * sizeof(fs_sgd_hyper))
        self.typenum = <int *>PyMem_Malloc(max(n, 1) * sizeof(int))
        self.ndim = <int *>PyMem_Malloc(max(n, 1) * sizeof(int))
        self.dim_at = <Py_ssize_t *>PyMem_Malloc(max(n, 1) * sizeof(Py_ssize_t))
        self.dims = <cnp.npy_intp *>PyMem_Malloc(max(ndims, 1) * sizeof(cnp.npy_intp))
        self.iv_lo = <uintptr_t *>PyMem_Malloc(max(2 * n, 1) * sizeof(uintptr_t))
        self.iv_hi = <uintptr_t *>PyMem_Malloc(max(2 * n, 1) * sizeof(uintptr_t))
        if (self.t == NULL or self.g == NULL or self.h == NULL or self.typenum == NULL
                or self.ndim == NULL or self.dim_at == NULL or self.dims == NULL
                or self.iv_lo == NULL or self.iv_hi == NULL):
            raise MemoryError()
        memset(self.h, 0, ngroups * sizeof(fs_sgd_hyper))
        cdef ptrdiff_t offset = 0
        cdef Py_ssize_t at = 0
        for i in range(n):
            p = <cnp.ndarray>params[i]
            self.t[i].param = cnp.PyArray_DATA(p)
            self.t[i].velocity = NULL
            self.t[i].n = cnp.PyArray_SIZE(p)
            self.t[i].offset = offset
            self.t[i].group = <int>groups[i]
            self.t[i].is_f64 = cnp.PyArray_TYPE(p) == cnp.NPY_DOUBLE
            self.t[i].first = 1
            offset += self.t[i].n
            self.typenum[i] = cnp.PyArray_TYPE(p)
            self.ndim[i] = cnp.PyArray_NDIM(p)
            self.dim_at[i] = at
            for d in range(self.ndim[i]):
                self.dims[at + d] = cnp.PyArray_DIM(p, d)
            at += self.ndim[i]
        self._rebuild_intervals()

    def __dealloc__(self):
        PyMem_Free(self.t)
        PyMem_Free(self.g)
        PyMem_Free(self.h)
        PyMem_Free(self.typenum)
        PyMem_Free(self.ndim)
        PyMem_Free(self.dim_at)
        PyMem_Free(self.dims)
        PyMem_Free(self.iv_lo)
        PyMem_Free(self.iv_hi)

    cdef _rebuild_intervals(self):
        """Sorted byte ranges of every parameter and velocity (disjoint by construction)."""
        cdef list ranges = []
        cdef Py_ssize_t i, k = 0
        cdef cnp.ndarray a
        for i in range(self.n):
            a = <cnp.ndarray>self.params[i]
            if cnp.PyArray_NBYTES(a) > 0:
                ranges.append((<uintptr_t>cnp.PyArray_DATA(a), cnp.PyArray_NBYTES(a)))
            if self.velocities[i] is not None:
                a = <cnp.ndarray>self.velocities[i]
                if cnp.PyArray_NBYTES(a) > 0:
                    ranges.append((<uintptr_t>cnp.PyArray_DATA(a), cnp.PyArray_NBYTES(a)))
        ranges.sort()
        for start, nbytes in ranges:
            self.iv_lo[k] = start
            self.iv_hi[k] = start + nbytes
            k += 1
        self.niv = k

    cdef inline bint _overlaps(self, uintptr_t lo, uintptr_t hi) noexcept:
        """True when the byte range [lo, hi) meets a parameter or a velocity."""
        cdef Py_ssize_t a = 0, b = self.niv, m
        if hi <= lo:
            return False
        while a < b:  # number of ranges that start before hi
            m = a + (b - a) // 2
            if self.iv_lo[m] < hi:
                a = m + 1
            else:
                b = m
        return a > 0 and self.iv_hi[a - 1] > lo

    def set_group(self, Py_ssize_t k, double lr, double momentum, double dampening,
                  double weight_decay, bint nesterov, bint maximize):
        """Hyperparameters of group k (validated by the caller)."""
        if self.busy:
            raise RuntimeError("SGD: the optimizer is stepping in another thread")
        if not 0 <= k < self.ngroups:
            raise IndexError(k)
        self.h[k].lr = lr
        self.h[k].momentum = momentum
        self.h[k].dampening = dampening
        self.h[k].weight_decay = weight_decay
        self.h[k].nesterov = nesterov
        self.h[k].maximize = maximize

    def set_velocities(self, indices, arrays):
        """Attach velocities: arrays[j] (a fresh C-contiguous array of the parameter's shape and
        dtype) to parameter indices[j]."""
        cdef Py_ssize_t i
        cdef cnp.ndarray p
        if self.busy:
            raise RuntimeError("SGD: the optimizer is stepping in another thread")
        pairs = list(zip(indices, arrays))
        for i, v in pairs:  # all checked before any is attached
            if not 0 <= i < self.n:
                raise IndexError(i)
            p = <cnp.ndarray>self.params[i]
            if (not _writable_float_array(v) or cnp.PyArray_TYPE(<cnp.ndarray>v) != cnp.PyArray_TYPE(p)
                    or cnp.PyArray_SIZE(<cnp.ndarray>v) != cnp.PyArray_SIZE(p)):
                raise TypeError(f"MultiSGD: velocity {i} does not match its parameter")
        for i, v in pairs:
            self.velocities[i] = v
            self.t[i].velocity = cnp.PyArray_DATA(<cnp.ndarray>v)
        self._rebuild_intervals()

    def velocity(self, Py_ssize_t i):
        return self.velocities[i]

    def set_started(self, Py_ssize_t i, bint started):
        """Whether parameter i's momentum buffer holds a value (else the next step seeds it)."""
        if self.busy:
            raise RuntimeError("SGD: the optimizer is stepping in another thread")
        if not 0 <= i < self.n:
            raise IndexError(i)
        self.t[i].first = not started

    def started(self, Py_ssize_t i):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return not self.t[i].first

    cdef inline bint _param_unchanged(self, Py_ssize_t i, cnp.ndarray p) noexcept:
        cdef int d
        if (cnp.PyArray_DATA(p) != self.t[i].param or cnp.PyArray_TYPE(p) != self.typenum[i]
                or cnp.PyArray_NDIM(p) != self.ndim[i]
                or not cnp.PyArray_ISWRITEABLE(p) or not cnp.PyArray_IS_C_CONTIGUOUS(p)
                or not cnp.PyArray_ISNOTSWAPPED(p)):
            return False
        for d in range(self.ndim[i]):
            if cnp.PyArray_DIM(p, d) != self.dims[self.dim_at[i] + d]:
                return False
        return True

    cdef inline bint _grad_ok(self, Py_ssize_t i, object o) noexcept:
        """The fast path: an aligned, native, C-contiguous ndarray of the parameter's dtype
        and shape that overlaps no parameter or velocity."""
        cdef cnp.ndarray a
        cdef int d
        cdef uintptr_t lo
        if not cnp.PyArray_Check(o):
            return False
        a = <cnp.ndarray>o
        if (cnp.PyArray_TYPE(a) != self.typenum[i] or cnp.PyArray_NDIM(a) != self.ndim[i]
                or not cnp.PyArray_ISCARRAY_RO(a) or not cnp.PyArray_ISNOTSWAPPED(a)):
            return False
        for d in range(self.ndim[i]):
            if cnp.PyArray_DIM(a, d) != self.dims[self.dim_at[i] + d]:
                return False
        lo = <uintptr_t>cnp.PyArray_DATA(a)
        return not self._overlaps(lo, lo + <uintptr_t>cnp.PyArray_NBYTES(a))

    def step(self, grads, int nthreads):
        """Check every parameter and gradient, then update all of them in one kernel call."""
        cdef Py_ssize_t i, n = self.n
        cdef tuple seq
        cdef list keep = None
        cdef object o
        if not isinstance(grads, (list, tuple)) or len(grads) != n:
            self.checker.grads(grads, n)  # raises
        seq = tuple(grads)  # holds every gradient for the duration of the call
        if len(seq) != n:
            self.checker.grads(seq, n)
        for i in range(n):
            if not self._param_unchanged(i, <cnp.ndarray>self.params[i]):
                self.checker.param(i, self.params[i])  # raises
                raise AssertionError("MultiSGD: parameter check disagreed")
        if self.busy:  # checked and set with the GIL held and no call in between: atomic
            raise RuntimeError("SGD.step() is already running in another thread")
        self.busy = True
        try:
            for i in range(n):
                o = seq[i]
                if o is None:
                    self.g[i] = NULL
                    continue
                if not self._grad_ok(i, o):
                    o = self.checker.grad(i, o, self.params[i])  # raises, or returns a fresh copy
                    if not self._grad_ok(i, o):
                        raise AssertionError("MultiSGD: gradient check disagreed")
                    if keep is None:
                        keep = []
                    keep.append(o)
                self.g[i] = cnp.PyArray_DATA(<cnp.ndarray>o)
            with nogil:
                fs_sgd_multi(self.t, self.g, n, self.h, nthreads)
        finally:
            self.busy = False
