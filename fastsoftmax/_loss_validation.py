"""Argument checks of the loss functions, shared by the public API and the reference twin.

Everything a caller can get wrong is checked here, before any array is written, with a
message that names the function and the argument (SPEC sections 1 and 3).  Both
``fastsoftmax.losses`` and ``fastsoftmax.reference.losses`` call :func:`check_loss_args`
first, so they raise the same errors; what it returns is all either needs to compute.
"""

from __future__ import annotations

import math
import numbers
import operator
from typing import NamedTuple, Optional

import numpy as np

from ._validation import aligned, as_float_array, as_ndarray, check_out, compute_dtype_of, result_dtype_of

__all__ = ["REDUCTIONS", "LossArgs", "check_loss_args", "check_grad_out", "reduce_row_losses"]

REDUCTIONS = ("mean", "sum", "none")


class LossArgs(NamedTuple):
    """Checked arguments of a loss call.

    ``logits`` is ``np.asarray`` of the input, not yet converted; ``rows_shape`` the ``(N, C)``
    view of it.  ``target`` is either int64 class indices of shape ``(N,)`` (C-contiguous; an
    entry outside ``[0, C)`` marks an ignored sample, and every ignored sample is outside
    ``[0, C)``, even when ``ignore_index`` is a class) or, when ``probabilities`` is true,
    ``np.asarray`` of the probability target (the logits' shape, not yet converted).
    ``weight`` is ``None`` or a C-contiguous ``(C,)`` array in the compute dtype.
    """

    func: str
    logits: np.ndarray
    result_dtype: np.dtype
    compute_dtype: np.dtype
    lead_shape: tuple
    rows_shape: tuple
    target: np.ndarray
    probabilities: bool
    weight: Optional[np.ndarray]
    ignore_index: int
    reduction: str
    label_smoothing: float


def _check_reduction(reduction, func: str) -> str:
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(
            f"{func}() argument 'reduction' must be 'mean', 'sum' or 'none', got {reduction!r}"
        )
    return reduction


def _check_label_smoothing(label_smoothing, func: str) -> float:
    if isinstance(label_smoothing, (bool, np.bool_)) or not isinstance(label_smoothing, numbers.Real):
        raise TypeError(
            f"{func}() argument 'label_smoothing' must be a real number, "
            f"not {type(label_smoothing).__name__}"
        )
    value = float(label_smoothing)
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise ValueError(f"{func}() argument 'label_smoothing' must be in [0, 1], got {label_smoothing!r}")
    return value


def _check_ignore_index(ignore_index, func: str) -> int:
    if isinstance(ignore_index, (bool, np.bool_)):
        raise TypeError(f"{func}() argument 'ignore_index' must be an integer, not bool")
    try:
        return operator.index(ignore_index)
    except TypeError:
        raise TypeError(
            f"{func}() argument 'ignore_index' must be an integer, not {type(ignore_index).__name__}"
        ) from None


def _as_array(x, func: str, name: str) -> np.ndarray:
    return aligned(as_ndarray(x, f"{func}() argument '{name}'"))


def _check_class_indices(t: np.ndarray, n_classes: int, ignore_index: int, func: str) -> np.ndarray:
    """int64 copy (or view) of integer targets `t`, after checking every value.

    The comparisons run in `t`'s own dtype (NumPy compares with Python ints exactly), so a
    uint64 value that would wrap to a negative int64 is caught too.
    """
    if t.dtype == np.int64:
        # one pass for the common case: as unsigned, a negative value is >= n_classes too
        bad = t.view(np.uint64) >= n_classes
        if bad.any():
            bad &= t != ignore_index
    else:
        bad = (t < 0) | (t >= n_classes)
        bad &= t != ignore_index
    if bad.any():
        flat = int(np.argmax(bad.reshape(-1)))
        position = tuple(int(i) for i in np.unravel_index(flat, t.shape))
        value = t.reshape(-1)[flat].item()
        raise IndexError(
            f"{func}() argument 'target' has value {value} at position {position}, "
            f"outside [0, {n_classes}) and not equal to ignore_index={ignore_index}"
        )
    t64 = np.require(t.reshape(-1), np.int64, ["C", "A"])  # the kernels read it as int64_t *
    if 0 <= ignore_index < n_classes:
        # An ignored class inside [0, C): mark those samples -1 (a new array: `target` may be
        # the caller's memory), so that "outside [0, C)" alone means "ignored" from here on.
        t64 = np.where(t64 == ignore_index, np.int64(-1), t64)
    return t64


def check_loss_args(
    func: str,
    logits,
    target,
    weight,
    ignore_index,
    reduction,
    label_smoothing=0.0,
    *,
    logits_name: str = "logits",
    allow_probabilities: bool = True,
) -> LossArgs:
    """Check every argument of a loss call (SPEC section 3); raise before anything is written."""
    x, res_dtype = as_float_array(logits, func, logits_name)
    if x.ndim == 0:
        raise ValueError(
            f"{func}() argument '{logits_name}' must have at least one dimension (the classes), got a 0-d array"
        )
    comp = compute_dtype_of(res_dtype)
    n_classes = x.shape[-1]
    lead_shape = x.shape[:-1]
    n_rows = math.prod(lead_shape)
    reduction = _check_reduction(reduction, func)
    label_smoothing = _check_label_smoothing(label_smoothing, func)
    ignore_index = _check_ignore_index(ignore_index, func)

    t = _as_array(target, func, "target")
    kind = t.dtype.kind
    if kind in "iu":
        if t.shape != lead_shape:
            raise ValueError(
                f"{func}() argument 'target' holds class indices and must have shape {lead_shape} "
                f"(the {logits_name}' shape without the class axis), got {t.shape}"
            )
        probabilities = False
    elif kind == "f" and allow_probabilities:
        if t.shape != x.shape:
            raise ValueError(
                f"{func}() argument 'target' holds probabilities and must have the {logits_name}' "
                f"shape {x.shape}, got {t.shape}"
            )
        if result_dtype_of(t.dtype, func, "target") != res_dtype:
            raise TypeError(
                f"{func}() argument 'target' holds probabilities and must have the {logits_name}' "
                f"dtype {res_dtype}, got {t.dtype}"
            )
        if ignore_index >= 0:
            raise ValueError(
                f"{func}() argument 'ignore_index' must be negative with probability targets, "
                f"got {ignore_index}"
            )
        probabilities = True
    elif kind == "f":
        raise TypeError(f"{func}() argument 'target' must hold integer class indices, got dtype {t.dtype}")
    else:
        expected = "integer class indices or float probabilities" if allow_probabilities else "integer class indices"
        raise TypeError(f"{func}() argument 'target' must hold {expected}, got dtype {t.dtype}")

    w = None
    if weight is not None:
        w, w_dtype = as_float_array(weight, func, "weight")
        if w.shape != (n_classes,):
            raise ValueError(
                f"{func}() argument 'weight' must have shape ({n_classes},) (one weight per class), got {w.shape}"
            )
        # SPEC: converted to the logits' dtype (so float16 logits round their weights to float16).
        with np.errstate(over="ignore"):  # a weight beyond float16's range becomes inf, silently
            w = np.ascontiguousarray(w.astype(res_dtype, copy=False), dtype=comp)

    if not probabilities:
        t = _check_class_indices(t, n_classes, ignore_index, func)
    return LossArgs(
        func, x, res_dtype, comp, lead_shape, (n_rows, n_classes), t, probabilities, w,
        ignore_index, reduction, label_smoothing,
    )


def check_grad_out(out, args: LossArgs) -> None:
    """`out` of cross_entropy_with_grad: the logits' shape and result dtype, writeable."""
    check_out(out, args.logits.shape, args.result_dtype, args.func)


def reduce_row_losses(args: LossArgs, row_losses: np.ndarray, denominator: float, sum_losses=None):
    """The loss a caller gets from float64 per-row losses (shape ``(N,)``, C-contiguous).

    `sum_losses`: how "sum" and "mean" add the losses up (a function of the array returning a
    float); ``np.sum`` when None (the reference twin), the compiled pairwise sum for the public
    API (``fastsoftmax._losses.sum_row_losses``: the same one its fast path takes).

    ``"none"``: the losses in the result dtype, shaped like the logits without the class axis
    (a NumPy scalar for 1-D logits).  ``"sum"``: their float64 sum; ``"mean"``: that sum
    divided by `denominator` (0/0 gives NaN, as torch); both as a NumPy scalar of the result
    dtype.

    A mean over class indices whose weights sum to 0 is NaN (with smoothing too, as torch).
    Class indices with label smoothing over zero classes give NaN, as torch, which adds
    ``(eps / C) * smooth_loss``: ``eps / 0`` is inf, and inf times the (zero) smoothing sums is
    NaN, for every sample (ignored or not) and every reduction, even of an empty batch.
    """
    if not args.probabilities and args.reduction == "mean" and denominator == 0:
        # torch's mean over class indices divides the nll part and the smoothing part apart:
        # the first is 0 / 0 when the targets' weights sum to 0, NaN whatever the smoothing.
        return np.asarray(np.nan).astype(args.result_dtype)[()]
    if not args.probabilities and args.rows_shape[1] == 0 and args.label_smoothing > 0:
        row_losses = np.full_like(row_losses, np.nan)
        if args.reduction != "none":
            return np.asarray(np.nan).astype(args.result_dtype)[()]
    with np.errstate(all="ignore"):
        if args.reduction == "none":
            values = row_losses.reshape(args.lead_shape).astype(args.result_dtype)
            return values[()] if values.ndim == 0 else values
        total = np.sum(row_losses, dtype=np.float64) if sum_losses is None else np.float64(sum_losses(row_losses))
        if args.reduction == "mean":
            total = total / np.float64(denominator)
        return np.asarray(total).astype(args.result_dtype)[()]
