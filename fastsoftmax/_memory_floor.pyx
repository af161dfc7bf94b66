# cython: language_level=3
"""A copy with streaming stores: the benchmark's floor for results written that way.

Design note
-----------
The benchmark suite times ``np.copyto`` of an array of the case's size as the memory-traffic
floor.  np.copyto stores normally, so every destination line is read before it is written;
fastsoftmax writes large results with streaming stores, which are not, and can then take
less time than np.copyto.  :func:`stream_copy` copies with streaming stores and does
nothing else (``_src/fs_stream_copy.h``): no kernel that reads an array and writes a result
of its size with streaming stores can be faster.  It is for ``fastsoftmax._bench`` only, not
part of the public API.
"""
cimport numpy as cnp

import numpy as np

cnp.import_array()

cdef extern from "_src/fs_stream_copy.h":
    void fs_stream_copy(void *dst, const void *src, size_t nbytes) nogil


def stream_copy(dst, src):
    """Copy the bytes of `src` into `dst` with streaming stores.

    Parameters
    ----------
    dst : ndarray  # OUT
        C-contiguous and writeable, of as many bytes as `src`.
    src : ndarray  # IN
        C-contiguous.

    Examples
    --------
    >>> import numpy as np
    >>> from fastsoftmax._memory_floor import stream_copy
    >>> src = np.arange(6, dtype=np.float32)
    >>> dst = np.zeros_like(src)
    >>> stream_copy(dst, src)
    >>> dst
    array([0., 1., 2., 3., 4., 5.], dtype=float32)
    """
    for name, a in (("dst", dst), ("src", src)):
        if not isinstance(a, np.ndarray):
            raise TypeError(f"stream_copy() argument '{name}' must be a numpy.ndarray, not {type(a).__name__}")
        if not a.flags.c_contiguous:
            raise ValueError(f"stream_copy() argument '{name}' must be C-contiguous")
    if not dst.flags.writeable:
        raise ValueError("stream_copy() argument 'dst' is read-only")
    if dst.nbytes != src.nbytes:
        raise ValueError(
            f"stream_copy() argument 'dst' has {dst.nbytes} bytes, argument 'src' {src.nbytes}")
    cdef cnp.ndarray d = dst
    cdef cnp.ndarray s = src
    cdef size_t n = dst.nbytes
    cdef void *dp = cnp.PyArray_DATA(d)
    cdef const void *sp = cnp.PyArray_DATA(s)
    with nogil:
        fs_stream_copy(dp, sp, n)
