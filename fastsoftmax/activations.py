"""Softmax, log-softmax, logsumexp and their backward passes (the public API).

This layer checks arguments and arranges memory (``fastsoftmax._validation``); the work is
done by the compiled row kernels in ``fastsoftmax._activations``.  A call whose input is
already a C-contiguous float32/float64 array reduced along its last axis, without ``out=``,
goes straight to the kernel (``_activations.try_unary`` / ``try_binary``).
"""

from __future__ import annotations

from . import _activations as _k
from ._result_pool import empty as _pooled_empty
from ._threads import get_num_threads
from ._validation import apply_reduction, apply_rowwise, apply_rowwise_binary

__all__ = ["softmax", "log_softmax", "logsumexp", "softmax_backward", "log_softmax_backward"]

_try_unary = _k.try_unary
_try_binary = _k.try_binary

_SOFTMAX = int(_k.Op.SOFTMAX)
_LOG_SOFTMAX = int(_k.Op.LOG_SOFTMAX)
_LOGSUMEXP = int(_k.Op.LOGSUMEXP)
_SOFTMAX_BACKWARD = int(_k.Op.SOFTMAX_BACKWARD)
_LOG_SOFTMAX_BACKWARD = int(_k.Op.LOG_SOFTMAX_BACKWARD)


def _unary(op):
    def compute_rows(rows, res):
        _k.unary_rows(op, rows, res, get_num_threads())

    return compute_rows


def _binary(op):
    def compute_rows(g, y, res):
        _k.binary_rows(op, g, y, res, get_num_threads())

    return compute_rows


_softmax_rows = _unary(_SOFTMAX)
_log_softmax_rows = _unary(_LOG_SOFTMAX)
_logsumexp_rows = _unary(_LOGSUMEXP)
_softmax_backward_rows = _binary(_SOFTMAX_BACKWARD)
_log_softmax_backward_rows = _binary(_LOG_SOFTMAX_BACKWARD)


def softmax(x, axis=-1, *, out=None):
    """Softmax along an axis: ``exp(x - max) / sum(exp(x - max))``, numerically stable.

    Parameters
    ----------
    x : array_like
        Input. float32 and float64 are computed in their own precision; integers and bool
        become float64; float16 is computed in float32 and returned as float16.
    axis : int, tuple of int or None, optional
        Axis (default: the last) along which the values sum to 1.  A tuple or None treats
        those axes (all axes) together as one row, as ``scipy.special.softmax`` does.
    out : ndarray, optional
        Where to write the result: exactly the result's shape and dtype.  May be `x` itself.

    Returns
    -------
    ndarray
        Probabilities, the shape of `x`; `out` when given.

    Notes
    -----
    A row that contains NaN or +inf, or whose entries are all -inf, is all NaN (as in
    ``torch.softmax``); entries of -inf in an otherwise finite row give 0.

    Examples
    --------
    >>> import numpy as np
    >>> from fastsoftmax import softmax
    >>> softmax(np.array([1.0, 2.0, 3.0]))
    array([0.09003057, 0.24472847, 0.66524096])
    >>> softmax(np.array([[0.0, 0.0], [1000.0, -np.inf]], dtype=np.float32))
    array([[0.5, 0.5],
           [1. , 0. ]], dtype=float32)
    """
    fast = _try_unary(_SOFTMAX, x, axis, out, get_num_threads)
    if fast is not None:
        return fast
    return apply_rowwise("softmax", x, axis, out, _softmax_rows, _pooled_empty)


def log_softmax(x, axis=-1, *, out=None):
    """Log of the softmax along an axis: ``x - max - log(sum(exp(x - max)))``.

    Parameters
    ----------
    x : array_like
        Input (dtype rules as for :func:`softmax`).
    axis : int, tuple of int or None, optional
        Axis (default: the last) of each row.
    out : ndarray, optional
        Where to write the result: exactly the result's shape and dtype.  May be `x` itself.

    Returns
    -------
    ndarray
        Log-probabilities, the shape of `x`; `out` when given.

    Notes
    -----
    More accurate than ``log(softmax(x))``: no probability is rounded to 0 before its log
    is taken.  Special values follow ``torch.log_softmax``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastsoftmax import log_softmax
    >>> log_softmax(np.array([1000.0, 1.0]))
    array([   0., -999.])
    >>> log_softmax(np.array([0.0, -np.inf]))
    array([  0., -inf])
    """
    fast = _try_unary(_LOG_SOFTMAX, x, axis, out, get_num_threads)
    if fast is not None:
        return fast
    return apply_rowwise("log_softmax", x, axis, out, _log_softmax_rows, _pooled_empty)


def logsumexp(x, axis=-1, *, keepdims=False, out=None):
    """``log(sum(exp(x)))`` along an axis, without overflow or underflow.

    Parameters
    ----------
    x : array_like
        Input (dtype rules as for :func:`softmax`).
    axis : int, tuple of int or None, optional
        Axis (default: the last) to reduce; a tuple or None reduces those (all) axes.
    keepdims : bool, optional
        Keep the reduced axis as a dimension of length 1.
    out : ndarray, optional
        Where to write the result: exactly the result's shape and dtype.

    Returns
    -------
    ndarray or numpy scalar
        The reduced values; a NumPy scalar of the result dtype for a 0-d result; `out`
        when given.

    Notes
    -----
    A row with NaN gives NaN; with +inf (and no NaN) +inf; all -inf or empty, -inf.

    Examples
    --------
    >>> import numpy as np
    >>> from fastsoftmax import logsumexp
    >>> logsumexp(np.array([1000.0, 1000.0]))
    np.float64(1000.6931471805599)
    >>> logsumexp(np.array([[0.0, -40.0], [1.0, 1.0]]))
    array([4.24835426e-18, 1.69314718e+00])
    """
    if keepdims is False:
        fast = _try_unary(_LOGSUMEXP, x, axis, out, get_num_threads)
        if fast is not None:
            return fast
    return apply_reduction("logsumexp", x, axis, keepdims, out, _logsumexp_rows)


def softmax_backward(grad_output, output, axis=-1, *, out=None):
    """Gradient of a loss through softmax: ``output * (grad_output - sum(grad_output * output))``.

    Parameters
    ----------
    grad_output : array_like
        Gradient of the loss with respect to the softmax output.
    output : array_like
        The softmax output (same shape as `grad_output`).
    axis : int, tuple of int or None, optional
        The axis softmax was taken along (default: the last).
    out : ndarray, optional
        Where to write the result; may be `grad_output` or `output` itself.

    Returns
    -------
    ndarray
        Gradient with respect to the softmax input, in NumPy's promoted dtype of the two.

    Examples
    --------
    >>> import numpy as np
    >>> from fastsoftmax import softmax, softmax_backward
    >>> y = softmax(np.array([0.0, 0.0]))
    >>> softmax_backward(np.array([1.0, 0.0]), y)
    array([ 0.25, -0.25])
    """
    fast = _try_binary(_SOFTMAX_BACKWARD, grad_output, output, axis, out, get_num_threads)
    if fast is not None:
        return fast
    return apply_rowwise_binary(
        "softmax_backward", grad_output, output, axis, out, _softmax_backward_rows, _pooled_empty
    )


def log_softmax_backward(grad_output, output, axis=-1, *, out=None):
    """Gradient of a loss through log_softmax: ``grad_output - exp(output) * sum(grad_output)``.

    Parameters
    ----------
    grad_output : array_like
        Gradient of the loss with respect to the log_softmax output.
    output : array_like
        The log_softmax output (same shape as `grad_output`).
    axis : int, tuple of int or None, optional
        The axis log_softmax was taken along (default: the last).
    out : ndarray, optional
        Where to write the result; may be `grad_output` or `output` itself.

    Returns
    -------
    ndarray
        Gradient with respect to the log_softmax input.

    Examples
    --------
    >>> import numpy as np
    >>> from fastsoftmax import log_softmax, log_softmax_backward
    >>> y = log_softmax(np.array([0.0, 0.0]))
    >>> log_softmax_backward(np.array([-1.0, 0.0]), y)
    array([-0.5,  0.5])
    """
    fast = _try_binary(_LOG_SOFTMAX_BACKWARD, grad_output, output, axis, out, get_num_threads)
    if fast is not None:
        return fast
    return apply_rowwise_binary(
        "log_softmax_backward", grad_output, output, axis, out, _log_softmax_backward_rows, _pooled_empty
    )
