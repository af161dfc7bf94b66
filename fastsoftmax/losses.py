"""Negative log-likelihood and cross-entropy losses, and the fused cross-entropy gradient.

This layer checks arguments (``fastsoftmax._loss_validation``) and arranges memory; the work
is done by the compiled row kernels in ``fastsoftmax._losses``.  The common call (C-contiguous
float32/float64 logits and int64 class indices; see ``try_loss`` there) is first tried on that
module's compiled fast path, which falls back here for anything else; both sum the per-row
losses with ``_losses.sum_row_losses``, so they give the same bits.  The class axis is the
LAST axis; semantics otherwise follow ``torch.nn.functional.nll_loss`` / ``cross_entropy``.

Memory: the kernels read C-contiguous ``(rows, classes)`` arrays of the compute dtype.  Inputs
that already are (float32/float64, C-contiguous) are used in place; others are converted a
block of rows at a time (N-d arrays whose leading axes cannot be merged into one without a
copy, such as Fortran-ordered ones, are read and written by row index), so no full-size
temporary is made for them either.  The gradient is
written once, straight into its destination; with ``out=logits`` nothing of the logits' size
is allocated at all.
"""

from __future__ import annotations

import numpy as np

from . import _losses as _k
from ._result_pool import empty as pooled_empty
from ._loss_validation import check_grad_out, check_loss_args, reduce_row_losses
from ._threads import get_num_threads

__all__ = ["nll_loss", "cross_entropy", "cross_entropy_with_grad"]

# The compiled fast path of the common call (see _losses.pyx); None: take the general path.
_try_loss = _k.try_loss
_CROSS_ENTROPY = int(_k.LossKind.CROSS_ENTROPY)
_NLL = int(_k.LossKind.NLL)

# Elements per block of rows when inputs must be converted (float16, integers, other layouts).
_CHUNK_ELEMENTS = 1 << 18


def _mean_denominator(args) -> float:
    """What "mean" divides by: the summed weights of the non-ignored class indices (their
    number without weights), or the number of samples for probability targets (0 when the
    logits are empty, so the mean is NaN, as in torch)."""
    n_rows, n_classes = args.rows_shape
    if args.probabilities:
        return float(n_rows) if args.logits.size else 0.0
    typenum = np.dtype(args.compute_dtype).num
    return _k.total_weight(args.target, args.weight, n_classes, typenum)


def _is_kernel_ready(a, dtype) -> bool:
    return a is None or (a.dtype == dtype and a.flags.c_contiguous and a.flags.aligned)


def _same_memory_layout(a: np.ndarray, b: np.ndarray) -> bool:
    return (
        a.shape == b.shape
        and a.strides == b.strides
        and a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
    )


def _as_rows(a: np.ndarray, rows_shape: tuple):
    """`a` as an ``(N, C)`` view, or None when that would take a copy: an N-d array whose
    leading axes cannot be merged into one (Fortran order, swapped axes).  Such arrays are read
    and written a block of rows at a time (`_take_rows`, `_row_index`)."""
    if a.ndim > 2 and a.size:
        lead = [(n, s) for n, s in zip(a.shape[:-1], a.strides[:-1]) if n != 1]
        if any(s0 != s1 * n1 for (_, s0), (n1, s1) in zip(lead, lead[1:])):
            return None
    rows = a.reshape(rows_shape)
    return rows if rows.size == 0 or np.may_share_memory(rows, a) else None


def _row_index(lead_shape: tuple, i: int, j: int) -> tuple:
    """Index of rows [i, j) of an array of shape ``lead_shape + (C,)`` in C order."""
    return np.unravel_index(np.arange(i, j), lead_shape)


def _take_rows(a: np.ndarray, rows, i: int, j: int) -> np.ndarray:
    """Rows [i, j) of `a` as an ``(j - i, C)`` array: a slice of its rows view `rows`, or, when
    it has none, a copy of just those rows."""
    return rows[i:j] if rows is not None else a[_row_index(a.shape[:-1], i, j)]


def _overlaps(a, arrays) -> bool:
    return any(b is not None and np.may_share_memory(a, b) for b in arrays)


def _gradient_rows(grad: np.ndarray, rows_shape: tuple, logits: np.ndarray, x2, reads: tuple):
    """Where the gradient's row blocks go: ``(d2, direct)``.  `d2`: an ``(N, C)`` view of `grad`
    (or None: blocks of rows are put into `grad` by index, `_row_index`); `direct` False: `d2` is fresh
    memory, copied into `grad` at the end.  Written directly when `grad` is disjoint from every
    array read, or laid out exactly on top of the logits (in place: each block of rows is read
    before it is written); otherwise it overlaps an input in some other way, and the result
    goes to fresh memory first."""
    d2 = _as_rows(grad, rows_shape)
    if d2 is not None and x2 is not None:
        in_place = _same_memory_layout(d2, x2)
    else:
        in_place = _same_memory_layout(grad, logits)
    if _overlaps(grad, reads) or (np.may_share_memory(grad, logits) and not in_place):
        return pooled_empty(rows_shape, grad.dtype), False
    if x2 is None and in_place:
        d2 = None  # the logits are read by index: write the same rows the same way
    return d2, True


def _run(args, want_grad: bool, out, nll: bool = False):
    """Per-row losses (float64, shape (N,)), the mean's denominator and the gradient array."""
    n_rows, n_classes = args.rows_shape
    comp = args.compute_dtype
    row_loss = np.empty(n_rows, np.float64)
    denominator = _mean_denominator(args) if args.reduction == "mean" else 1.0
    grad_scale = 1.0
    if args.reduction == "mean":
        with np.errstate(divide="ignore"):
            grad_scale = float(np.float64(1.0) / np.float64(denominator))
    nthreads = get_num_threads()
    eps = args.label_smoothing
    weight = args.weight
    x2 = _as_rows(args.logits, args.rows_shape)
    q = args.target if args.probabilities else None
    p2 = _as_rows(q, args.rows_shape) if q is not None else None
    t = None if args.probabilities else args.target

    def kernel(xs, ts, ps, gs_buf, losses):
        if nll:
            _k.nll_rows(xs, ts, weight, losses)
        else:
            _k.ce_rows(xs, ts, ps, weight, eps, grad_scale, gs_buf, losses, nthreads)

    grad = d2 = None
    direct = True
    if want_grad:
        grad = out if out is not None else pooled_empty(args.logits.shape, args.result_dtype)
        d2, direct = _gradient_rows(grad, args.rows_shape, args.logits, x2, (q, t, weight))

    inputs_ready = (
        x2 is not None
        and _is_kernel_ready(x2, comp)
        and (q is None or (p2 is not None and _is_kernel_ready(p2, comp)))
    )
    if inputs_ready and (not want_grad or (d2 is not None and _is_kernel_ready(d2, comp))):
        kernel(x2, t, p2, d2, row_loss)
    else:
        step = max(1, _CHUNK_ELEMENTS // max(n_classes, 1))
        g_buf = np.empty((min(step, n_rows), n_classes), comp) if want_grad else None
        with np.errstate(over="ignore"):
            for i in range(0, n_rows, step):
                j = min(i + step, n_rows)
                xs = np.ascontiguousarray(_take_rows(args.logits, x2, i, j), dtype=comp)
                ps = None if q is None else np.ascontiguousarray(_take_rows(q, p2, i, j), dtype=comp)
                ts = None if t is None else t[i:j]
                gs_buf = None if g_buf is None else g_buf[: j - i]
                kernel(xs, ts, ps, gs_buf, row_loss[i:j])
                if gs_buf is None:
                    continue
                if d2 is not None:
                    d2[i:j] = gs_buf
                else:
                    grad[_row_index(grad.shape[:-1], i, j)] = gs_buf
    if want_grad and not direct:
        np.copyto(grad, d2.reshape(grad.shape), casting="unsafe")
    return row_loss, denominator, grad


def nll_loss(log_probs, target, *, weight=None, ignore_index=-100, reduction="mean"):
    """Negative log-likelihood of class indices, like ``torch.nn.functional.nll_loss``.

    For each sample (row) with class index ``t`` the loss is ``-weight[t] * log_probs[..., t]``;
    samples whose target equals `ignore_index` contribute nothing.

    Parameters
    ----------
    log_probs : array_like, shape (..., C)
        Log-probabilities, class axis last (e.g. the output of
        :func:`fastsoftmax.log_softmax`).  float32/float64 are computed in their own
        precision, integers and bool as float64, float16 in float32 (returned as float16).
    target : array_like of int, shape (...)
        Class indices in ``[0, C)`` or equal to `ignore_index`; any integer dtype.
    weight : array_like, shape (C,), optional
        Per-class weights (converted to the dtype of `log_probs`).
    ignore_index : int, optional
        Target value whose samples are ignored (default -100).
    reduction : {"mean", "sum", "none"}, optional
        ``"none"``: per-sample losses of shape ``(...)``.  ``"sum"``: their sum.  ``"mean"``:
        their sum divided by the summed weights of the non-ignored targets (their number
        without `weight`); NaN when every target is ignored.

    Returns
    -------
    numpy scalar or ndarray
        The loss, in the result dtype of `log_probs`, accumulated in float64.

    Raises
    ------
    IndexError
        A target outside ``[0, C)`` that is not `ignore_index` (the message names the value
        and its position).
    TypeError
        A float target, or an unsupported dtype.
    ValueError
        Shape mismatch, 0-d `log_probs`, unknown `reduction`.

    Examples
    --------
    >>> import numpy as np
    >>> from fastsoftmax import nll_loss
    >>> log_probs = np.log(np.array([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]]))
    >>> nll_loss(log_probs, np.array([0, 1]), reduction="none")
    array([0.69314718, 0.22314355])
    >>> nll_loss(log_probs, np.array([0, -100]))
    np.float64(0.6931471805599453)
    """
    fast = _try_loss(_NLL, log_probs, target, weight, ignore_index, reduction, 0.0, None, False, get_num_threads)
    if fast is not None:
        return fast
    args = check_loss_args(
        "nll_loss", log_probs, target, weight, ignore_index, reduction,
        logits_name="log_probs", allow_probabilities=False,
    )
    row_loss, denominator, _ = _run(args, False, None, nll=True)
    return reduce_row_losses(args, row_loss, denominator, _k.sum_row_losses)


def cross_entropy(logits, target, *, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """Cross-entropy between logits and targets, like ``torch.nn.functional.cross_entropy``.

    With ``log p = log_softmax(logits)`` along the last axis, the loss of one sample is

    - class index ``t``: ``(1 - eps) * w[t] * (-log p[t]) + (eps / C) * sum_c w[c] * (-log p[c])``
      (just ``w[t] * (-log p[t])`` for ``eps = 0``); ignored samples contribute nothing;
    - probabilities ``q``: ``sum_c w[c] * q'[c] * (-log p[c])`` with ``q' = (1 - eps) * q + eps / C``,

    where ``eps`` is `label_smoothing` and ``w`` is `weight` (all ones by default).

    Parameters
    ----------
    logits : array_like, shape (..., C)
        Unnormalised scores, class axis last.  float32/float64 are computed in their own
        precision, integers and bool as float64, float16 in float32 (returned as float16).
    target : array_like
        Either integer class indices of shape ``(...)`` (any integer dtype; each in ``[0, C)``
        or equal to `ignore_index`), or class probabilities of the logits' shape and dtype.
    weight : array_like, shape (C,), optional
        Per-class weights (converted to the logits' dtype).
    ignore_index : int, optional
        Class-index target whose samples are ignored (default -100).  Must be negative with
        probability targets.
    reduction : {"mean", "sum", "none"}, optional
        ``"none"``: per-sample losses of shape ``(...)``.  ``"sum"``: their sum.  ``"mean"``:
        with class indices, the sum divided by the summed weights of the non-ignored targets
        (their number without `weight`; NaN when all are ignored); with probabilities, the
        sum divided by the number of samples.
    label_smoothing : float in [0, 1], optional
        Mass moved uniformly onto every class (torch's definition, for both target kinds).

    Returns
    -------
    numpy scalar or ndarray
        The loss, in the logits' result dtype, accumulated in float64.

    Raises
    ------
    IndexError
        A class index outside ``[0, C)`` that is not `ignore_index` (the message names the
        value and its position); nothing is computed.
    TypeError
        A probability target whose dtype is not the logits' (after conversion), a target that
        is neither integer nor float, or an unsupported dtype.
    ValueError
        Shape mismatch, 0-d logits, unknown `reduction`, `label_smoothing` outside [0, 1],
        `ignore_index` >= 0 with probability targets.

    Notes
    -----
    Rows follow torch's special values: a row with NaN or +inf, or all -inf, has a NaN loss;
    a -inf logit at the target gives +inf.  Computed in one fused pass per row (max, then
    ``exp`` and the sums), without materialising ``log_softmax``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastsoftmax import cross_entropy
    >>> logits = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]])
    >>> cross_entropy(logits, np.array([0, 1]))
    np.float64(0.3185397696491856)
    >>> cross_entropy(logits, np.array([0, 1]), reduction="none", label_smoothing=0.1)
    array([0.51369668, 0.36004952])
    >>> cross_entropy(logits, np.array([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]]), reduction="sum")
    np.float64(1.7370795392983713)
    """
    fast = _try_loss(
        _CROSS_ENTROPY, logits, target, weight, ignore_index, reduction, label_smoothing, None, False, get_num_threads
    )
    if fast is not None:
        return fast
    args = check_loss_args(
        "cross_entropy", logits, target, weight, ignore_index, reduction, label_smoothing
    )
    row_loss, denominator, _ = _run(args, False, None)
    return reduce_row_losses(args, row_loss, denominator, _k.sum_row_losses)


def cross_entropy_with_grad(
    logits, target, *, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0, out=None
):
    """:func:`cross_entropy` and its gradient with respect to the logits, in one fused pass.

    For one sample the loss is ``sum_c a[c] * (-log softmax(logits)[c])`` with coefficients
    ``a = (1 - eps) * w[t] * onehot(t) + (eps / C) * w`` (class index ``t``) or
    ``a = w * ((1 - eps) * q + eps / C)`` (probabilities ``q``), so its gradient is
    ``softmax(logits) * sum(a) - a``; with ``eps = 0`` and no weights that is
    ``softmax(logits) - onehot(t)``.  The gradient is scaled like the loss (divided by the
    mean's denominator for ``"mean"``); for ``"none"`` it is the gradient of the SUM of the
    per-sample losses.  Ignored samples have a zero gradient.

    Parameters
    ----------
    logits, target, weight, ignore_index, reduction, label_smoothing
        As for :func:`cross_entropy`.
    out : ndarray, optional
        Where to write the gradient: exactly the logits' shape and result dtype, writeable.
        May be `logits` itself: the gradient then overwrites the logits and no array of that
        size is allocated (for large vocabularies this halves the peak memory).

    Returns
    -------
    loss : numpy scalar or ndarray
        As returned by :func:`cross_entropy`.
    grad : ndarray
        ``d loss / d logits``, the logits' shape and result dtype; `out` when given.

    Raises
    ------
    IndexError, TypeError, ValueError
        As for :func:`cross_entropy`; and a bad `out` (``TypeError`` for a wrong dtype or a
        non-array, ``ValueError`` for a wrong shape or a read-only array).  Every check runs
        before anything is written.

    Examples
    --------
    >>> import numpy as np
    >>> from fastsoftmax import cross_entropy_with_grad
    >>> logits = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]])
    >>> loss, grad = cross_entropy_with_grad(logits, np.array([0, 1]))
    >>> loss
    np.float64(0.3185397696491856)
    >>> grad
    array([[-0.17049943,  0.12121649,  0.04928295],
           [ 0.05430187, -0.09876047,  0.04445861]])

    A training step that reuses the logits' memory for the gradient:

    >>> x = np.array([[0.2, -1.0], [1.5, 0.5], [0.0, 0.3]])   # features
    >>> W = np.zeros((2, 2))                                     # weights
    >>> y = np.array([0, 0, 1])                                  # labels
    >>> logits = x @ W
    >>> loss, g = cross_entropy_with_grad(logits, y, out=logits)
    >>> g is logits
    True
    >>> W -= 0.5 * (x.T @ g)
    >>> bool(cross_entropy(x @ W, y) < loss)
    True
    """
    fast = _try_loss(
        _CROSS_ENTROPY, logits, target, weight, ignore_index, reduction, label_smoothing, out, True, get_num_threads
    )
    if fast is not None:
        return fast
    args = check_loss_args(
        "cross_entropy_with_grad", logits, target, weight, ignore_index, reduction, label_smoothing
    )
    if out is not None:
        check_grad_out(out, args)
    row_loss, denominator, grad = _run(args, True, out)
    return reduce_row_losses(args, row_loss, denominator, _k.sum_row_losses), grad
