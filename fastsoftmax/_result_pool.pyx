# cython: language_level=3
"""Large results reuse the memory of large results already freed.

Design note
-----------
Without this, a result of more than 32 MiB gets freshly mapped pages on every call
(glibc maps such blocks anew and unmaps them on free) and the operating system zeroes
each page when it is first written: a third of a 51 MB softmax on the project's
machine.  ``empty`` creates such results with a NumPy memory handler (NEP 49) that keeps
a few freed blocks (``_src/fs_result_pool.h``), so a training loop that computes a large
softmax or cross-entropy gradient every step writes into memory already mapped.  The
arrays are ordinary NumPy arrays owning their data.  Results of ``MIN_ALIGNED_BYTES``
(1 MiB) up to that size come from a second handler that only aligns them to 64 bytes
(malloc gives 16): a result starting inside a cache line splits every vector store over
two lines, and its streamed rows need the lines they share written apart.  Smaller
results, and every array made by other code, use NumPy's default allocator.

``FASTSOFTMAX_RESULT_CACHE_MB`` (default 512, read at import) caps the bytes kept;
0 turns the pool off.  :func:`release` hands the kept memory back to the system.
"""
cimport numpy as cnp
from libc.stdint cimport SIZE_MAX

import os
import warnings

import numpy as np

cnp.import_array()

cdef extern from "_src/fs_result_pool.h":
    object fs_pool_init(size_t cap)
    object fs_aligned_init()
    void fs_pool_set_cap(size_t cap) nogil
    void fs_pool_release() nogil
    size_t fs_pool_cached_bytes() nogil
    int fs_pool_after_fork()
    void fs_pool_hold_lock(int hold) nogil

cdef extern from "numpy/arrayobject.h":
    object PyDataMem_SetHandler(object handler)
    object PyDataMem_GetHandler()

#: Results of at least this many bytes come from the pool; glibc keeps smaller freed
#: blocks mapped itself.
MIN_POOLED_BYTES = 32 << 20

#: Results of at least this many bytes (and less than MIN_POOLED_BYTES) are allocated
#: 64-byte aligned (malloc gives 16): whole cache lines for the kernels' vector and
#: streaming stores.  Below, NumPy's allocator (switching handlers costs a few hundred ns).
MIN_ALIGNED_BYTES = 1 << 20

#: Most megabytes of freed results kept when FASTSOFTMAX_RESULT_CACHE_MB is not set.
DEFAULT_CACHE_MB = 512


def _cap_from_environment():
    text = os.environ.get("FASTSOFTMAX_RESULT_CACHE_MB")
    if text is None:
        return DEFAULT_CACHE_MB << 20
    try:
        mb = int(text)
    except ValueError:
        mb = -1
    if mb < 0 or mb > (SIZE_MAX >> 20):
        warnings.warn(
            f"FASTSOFTMAX_RESULT_CACHE_MB={text!r} is not a whole number of megabytes "
            f"from 0 to {SIZE_MAX >> 20}; using {DEFAULT_CACHE_MB}",
            RuntimeWarning,
            stacklevel=2,
        )
        mb = DEFAULT_CACHE_MB
    return mb << 20


cdef size_t _cap = _cap_from_environment()
cdef object _handler = fs_pool_init(_cap)
cdef object _aligned_handler = fs_aligned_init()
# NumPy's default handler: a handler the user set (NEP 49) is left in charge of every array.
cdef object _numpy_default = PyDataMem_GetHandler()


def _after_fork_in_child():
    if fs_pool_after_fork() != 0:
        raise MemoryError("fastsoftmax: no memory for the result pool's lock after fork")


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _hold_lock(bint hold):
    """Take (True) or release (False) the pool's lock; only for the fork test."""
    fs_pool_hold_lock(hold)


def empty(shape, dtype):
    """``np.empty(shape, dtype)``; from the pool when it holds ``MIN_POOLED_BYTES`` or more
    (unless the pool is off), 64-byte aligned from ``MIN_ALIGNED_BYTES`` (pooled blocks are
    too); NumPy's allocator below, or when another memory handler than NumPy's default is
    in use."""
    cdef object nbytes = np.dtype(dtype).itemsize
    for n in shape:
        nbytes *= n
    if nbytes < MIN_ALIGNED_BYTES or PyDataMem_GetHandler() is not _numpy_default:
        return np.empty(shape, dtype)
    handler = _handler if _cap != 0 and nbytes >= MIN_POOLED_BYTES else _aligned_handler
    previous = PyDataMem_SetHandler(handler)
    try:
        return np.empty(shape, dtype)
    finally:
        PyDataMem_SetHandler(previous)


def set_limit(size_t nbytes):
    """Keep at most `nbytes` of freed results (0: keep none, the pool is off)."""
    global _cap
    _cap = nbytes
    fs_pool_set_cap(nbytes)


def get_limit():
    """Most bytes of freed results kept."""
    return _cap


def release():
    """Hand every kept block back to the operating system."""
    fs_pool_release()


def cached_bytes():
    """Bytes of freed results kept now."""
    return fs_pool_cached_bytes()
