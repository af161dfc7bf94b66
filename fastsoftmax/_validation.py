"""Argument checks and layout handling shared by the public API and the reference twin.

Everything a caller can get wrong is checked here, before any array is written, with a
message that names the function and the argument.  The compiled kernels only ever see
what these helpers hand them: C-contiguous float32/float64 arrays whose last axis is the
row.  The reference twin (``fastsoftmax.reference``) runs the same checks, so both raise
the same errors.
"""

from __future__ import annotations

import operator

import numpy as np
from numpy.exceptions import AxisError

__all__ = [
    "AxisError",
    "as_ndarray",
    "as_float_array",
    "aligned",
    "result_dtype_of",
    "check_out",
    "normalize_axes",
    "RowLayout",
    "apply_rowwise",
    "apply_rowwise_binary",
    "apply_reduction",
]

_FLOAT16 = np.dtype(np.float16)
_FLOAT32 = np.dtype(np.float32)
_FLOAT64 = np.dtype(np.float64)


def result_dtype_of(dtype: np.dtype, func: str, name: str) -> np.dtype:
    """The dtype a function returns for an input of `dtype` (SPEC section 1)."""
    kind = dtype.kind
    if kind in "biu":
        return _FLOAT64
    if kind == "f" and dtype.itemsize in (2, 4, 8):
        return np.dtype(dtype.type)  # native byte order
    raise TypeError(
        f"{func}() argument '{name}' has unsupported dtype {dtype}; "
        "expected float16, float32, float64, an integer or bool dtype"
    )


def compute_dtype_of(result_dtype: np.dtype) -> np.dtype:
    """float16 is computed in float32; float32 and float64 in their own precision."""
    return _FLOAT32 if result_dtype == _FLOAT16 else result_dtype


def as_ndarray(x, what: str) -> np.ndarray:
    """``np.asarray(x)``; ValueError "<what> is not a valid array" for ragged lists and the
    like (`what` names the argument, e.g. "softmax() argument 'x'")."""
    try:
        return np.asarray(x)
    except Exception as exc:
        raise ValueError(f"{what} is not a valid array: {exc}") from exc


def as_float_array(x, func: str, name: str) -> tuple[np.ndarray, np.dtype]:
    """``np.asarray(x)`` checked against SPEC's dtype rules.

    Returns the array (not yet converted to the compute dtype; an aligned copy if its data
    was not aligned) and the dtype of the result.
    """
    a = as_ndarray(x, f"{func}() argument '{name}'")
    return aligned(a), result_dtype_of(a.dtype, func, name)


def aligned(a: np.ndarray) -> np.ndarray:
    """`a`, or an aligned copy when its data is not aligned to its itemsize: the kernels
    dereference typed pointers (an unaligned one is undefined behaviour in C; UBSan reports
    it), and NumPy's ascontiguousarray keeps an unaligned C-contiguous array as it is."""
    return a if a.flags.aligned else a.copy()


def normalize_axes(axis, ndim: int, func: str) -> tuple[int, ...]:
    """Sorted non-negative axes from an int, a tuple of ints, or None (all axes)."""
    if axis is None:
        return tuple(range(ndim))
    items = axis if isinstance(axis, tuple) else (axis,)
    axes = []
    for item in items:
        if isinstance(item, (bool, np.bool_)):
            raise TypeError(f"{func}() argument 'axis' must be an integer, not bool")
        try:
            index = operator.index(item)
        except TypeError:
            raise TypeError(
                f"{func}() argument 'axis' must be an integer, a tuple of integers or None, "
                f"not {type(item).__name__}"
            ) from None
        if not -ndim <= index < ndim:
            raise AxisError(index, ndim, f"{func}() argument 'axis'")
        axes.append(index % ndim)
    if len(set(axes)) != len(axes):
        raise ValueError(f"{func}() argument 'axis' has a repeated axis: {axis!r}")
    return tuple(sorted(axes))


def check_out(out, shape: tuple, dtype: np.dtype, func: str) -> None:
    """`out` must be a writeable ndarray of exactly `shape` and `dtype`."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{func}() argument 'out' must be a numpy.ndarray, not {type(out).__name__}")
    if out.shape != tuple(shape):
        raise ValueError(f"{func}() argument 'out' has shape {out.shape}, expected {tuple(shape)}")
    if out.dtype != dtype:
        raise TypeError(f"{func}() argument 'out' has dtype {out.dtype}, expected {dtype}")
    if not out.flags.writeable:
        raise ValueError(f"{func}() argument 'out' is read-only")


class RowLayout:
    """How an array of shape `shape` maps onto rows: the `axes` moved last and flattened.

    ``rows(a)`` gives a C-contiguous ``(..., L)`` array in the compute dtype (a view when
    nothing needs to move or convert); ``restore(r)`` puts an array of that layout back
    into the original axis order (a view).
    """

    def __init__(self, shape: tuple, axes: tuple[int, ...]):
        ndim = len(shape)
        self.shape = tuple(shape)
        self.axes = axes
        self.kept = tuple(d for d in range(ndim) if d not in axes)
        self.perm = self.kept + axes
        self.identity = self.perm == tuple(range(ndim))
        self.row_len = int(np.prod([shape[d] for d in axes], dtype=np.int64))
        self.lead_shape = tuple(shape[d] for d in self.kept)
        self.rows_shape = self.lead_shape + (self.row_len,)

    def rows(self, a: np.ndarray, dtype: np.dtype) -> np.ndarray:
        if not self.identity:
            a = a.transpose(self.perm)
        a = np.ascontiguousarray(a, dtype=dtype)
        if a.ndim == 0:
            return a.reshape(1)
        return a.reshape(self.rows_shape)

    def restore(self, r: np.ndarray) -> np.ndarray:
        full = r.reshape(tuple(self.shape[d] for d in self.perm))
        if self.identity:
            return full
        return full.transpose(np.argsort(self.perm))

    def reduced_shape(self, keepdims: bool) -> tuple:
        if keepdims:
            return tuple(1 if d in self.axes else n for d, n in enumerate(self.shape))
        return self.lead_shape


def is_direct_target(out: np.ndarray, dtype: np.dtype, inputs: tuple) -> bool:
    """True when a kernel may write straight into `out`: C-contiguous, aligned, the compute
    dtype, and either disjoint from every input or exactly the same buffer as one (in place: the
    kernels read each element before they write it)."""
    if out.dtype != dtype or not out.flags.c_contiguous or not out.flags.aligned:
        return False
    start = out.__array_interface__["data"][0]
    for a in inputs:
        if np.may_share_memory(out, a):
            same = (
                a.flags.c_contiguous
                and a.size == out.size
                and a.__array_interface__["data"][0] == start
            )
            if not same:
                return False
    return True


def apply_rowwise(func: str, x, axis, out, compute_rows, empty=np.empty):
    """Shape-preserving row function (softmax, log_softmax) along `axis`.

    ``compute_rows(rows_in, rows_out)`` fills a C-contiguous ``(..., L)`` array from one of the
    same shape, in the compute dtype; layout, dtype rules and ``out=`` are handled here.
    ``empty(shape, dtype)`` allocates the array the rows are computed into.
    """
    a, res_dtype = as_float_array(x, func, "x")
    axes = normalize_axes(axis, a.ndim, func)
    if out is not None:
        check_out(out, a.shape, res_dtype, func)
    comp = compute_dtype_of(res_dtype)
    layout = RowLayout(a.shape, axes)
    rows = layout.rows(a, comp)
    if out is not None and layout.identity and is_direct_target(out, comp, (rows,)):
        compute_rows(rows, out.reshape(rows.shape))
        return out
    res_rows = empty(rows.shape, comp)
    compute_rows(rows, res_rows)
    return _finish(layout.restore(res_rows), res_dtype, out, layout.identity)


def apply_rowwise_binary(func: str, grad_output, output, axis, out, compute_rows, empty=np.empty):
    """Shape-preserving function of two arrays of one shape (the backward passes)."""
    g, g_dtype = as_float_array(grad_output, func, "grad_output")
    y, y_dtype = as_float_array(output, func, "output")
    if g.shape != y.shape:
        raise ValueError(
            f"{func}() arguments 'grad_output' and 'output' must have the same shape, "
            f"got {g.shape} and {y.shape}"
        )
    res_dtype = np.result_type(g_dtype, y_dtype)
    axes = normalize_axes(axis, g.ndim, func)
    if out is not None:
        check_out(out, g.shape, res_dtype, func)
    comp = compute_dtype_of(res_dtype)
    layout = RowLayout(g.shape, axes)
    g_rows = layout.rows(g, comp)
    y_rows = layout.rows(y, comp)
    if out is not None and layout.identity and is_direct_target(out, comp, (g_rows, y_rows)):
        compute_rows(g_rows, y_rows, out.reshape(g_rows.shape))
        return out
    res_rows = empty(g_rows.shape, comp)
    compute_rows(g_rows, y_rows, res_rows)
    return _finish(layout.restore(res_rows), res_dtype, out, layout.identity)


def _finish(res: np.ndarray, res_dtype: np.dtype, out, contiguous: bool):
    # float32 -> float16 may overflow to inf: a special value, not a warning (SPEC section 1).
    with np.errstate(over="ignore"):
        if out is not None:
            np.copyto(out, res, casting="same_kind")
            return out
        if res.dtype != res_dtype or not contiguous:
            return np.ascontiguousarray(res, dtype=res_dtype)
    return res


def apply_reduction(func: str, x, axis, keepdims, out, compute_rows):
    """Row reduction (logsumexp) along `axis`: ``compute_rows(rows_in, values_out)`` writes one
    value per row into a C-contiguous array of the leading shape."""
    a, res_dtype = as_float_array(x, func, "x")
    axes = normalize_axes(axis, a.ndim, func)
    if not isinstance(keepdims, (bool, np.bool_)):
        raise TypeError(f"{func}() argument 'keepdims' must be a bool, not {type(keepdims).__name__}")
    comp = compute_dtype_of(res_dtype)
    layout = RowLayout(a.shape, axes)
    res_shape = layout.reduced_shape(bool(keepdims))
    if out is not None:
        check_out(out, res_shape, res_dtype, func)
    rows = layout.rows(a, comp)
    if out is not None and is_direct_target(out, comp, (rows,)) and not np.may_share_memory(out, rows):
        compute_rows(rows, out.reshape(layout.lead_shape))
        return out
    values = np.empty(layout.lead_shape, comp)
    compute_rows(rows, values)
    values = values.reshape(res_shape)
    with np.errstate(over="ignore"):  # float32 -> float16 may overflow to inf
        if out is not None:
            np.copyto(out, values, casting="same_kind")
            return out
        if values.dtype != res_dtype:
            values = values.astype(res_dtype)
    return values[()] if values.ndim == 0 else values
