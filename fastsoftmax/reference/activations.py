"""Pure-NumPy twins of the activation kernels: the same signatures, errors and special values.

Readable rather than fast: each function is the textbook formula on rows (last axis) of a
C-contiguous array, evaluated in the compute dtype with NumPy's own reductions.  Argument
checks and layout come from the same helpers as the public API.
"""

from __future__ import annotations

import numpy as np

from .._validation import apply_reduction, apply_rowwise, apply_rowwise_binary

__all__ = ["softmax", "log_softmax", "logsumexp", "softmax_backward", "log_softmax_backward"]


def _row_max(rows):
    """Max of each row (kept as a column); -inf for empty rows."""
    if rows.shape[-1] == 0:
        return np.full(rows.shape[:-1] + (1,), -np.inf, rows.dtype)
    return rows.max(axis=-1, keepdims=True)


def _log_sum_exp_shifted(rows, m):
    """ln sum(exp(rows - m)) per row for finite m, as log1p of the sum without one max
    element, so that [0, -40] gives exp(-40) instead of 0."""
    at_max = rows == m
    rest = np.where(at_max, 0, np.exp(rows - m)).sum(axis=-1, keepdims=True)
    count = at_max.sum(axis=-1, keepdims=True).astype(rows.dtype)
    return np.log1p((count - 1) + rest)


def _softmax_rows(rows, res):
    with np.errstate(all="ignore"):
        m = _row_max(rows)
        e = np.exp(rows - m)
        res[...] = e / e.sum(axis=-1, keepdims=True)
        res[~np.isfinite(m[..., 0])] = np.nan


def _log_softmax_rows(rows, res):
    with np.errstate(all="ignore"):
        m = _row_max(rows)
        res[...] = (rows - m) - _log_sum_exp_shifted(rows, m)
        res[~np.isfinite(m[..., 0])] = np.nan


def _logsumexp_rows(rows, res):
    with np.errstate(all="ignore"):
        m = _row_max(rows)
        finite = np.isfinite(m)
        safe_m = np.where(finite, m, 0)
        value = np.where(finite, m + _log_sum_exp_shifted(rows, safe_m), m)
        has_nan = np.isnan(rows).any(axis=-1, keepdims=True)
        res[...] = np.where(has_nan, np.nan, value)[..., 0]


def _softmax_backward_rows(g, y, res):
    with np.errstate(all="ignore"):
        res[...] = y * (g - (g * y).sum(axis=-1, keepdims=True))


def _log_softmax_backward_rows(g, y, res):
    with np.errstate(all="ignore"):
        res[...] = g - np.exp(y) * g.sum(axis=-1, keepdims=True)


def softmax(x, axis=-1, *, out=None):
    """Reference softmax: ``exp(x - max) / sum(exp(x - max))`` along `axis`."""
    return apply_rowwise("softmax", x, axis, out, _softmax_rows)


def log_softmax(x, axis=-1, *, out=None):
    """Reference log_softmax: ``x - max - log(sum(exp(x - max)))`` along `axis`."""
    return apply_rowwise("log_softmax", x, axis, out, _log_softmax_rows)


def logsumexp(x, axis=-1, *, keepdims=False, out=None):
    """Reference logsumexp: ``max + log(sum(exp(x - max)))`` along `axis`."""
    return apply_reduction("logsumexp", x, axis, keepdims, out, _logsumexp_rows)


def softmax_backward(grad_output, output, axis=-1, *, out=None):
    """Reference softmax backward: ``output * (grad_output - sum(grad_output * output))``."""
    return apply_rowwise_binary("softmax_backward", grad_output, output, axis, out, _softmax_backward_rows)


def log_softmax_backward(grad_output, output, axis=-1, *, out=None):
    """Reference log_softmax backward: ``grad_output - exp(output) * sum(grad_output)``."""
    return apply_rowwise_binary(
        "log_softmax_backward", grad_output, output, axis, out, _log_softmax_backward_rows
    )
