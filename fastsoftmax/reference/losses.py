"""Pure-NumPy twins of the loss functions: the same signatures, errors and special values.

Readable rather than fast: torch's formulas written out on ``(N, C)`` rows in the compute
dtype, with per-sample losses accumulated in float64.  Argument checks come from the same
helpers as the public API (``fastsoftmax._loss_validation``), so both raise the same errors.
"""

from __future__ import annotations

import numpy as np

from .._loss_validation import check_grad_out, check_loss_args, reduce_row_losses
from .activations import _log_sum_exp_shifted

__all__ = ["nll_loss", "cross_entropy", "cross_entropy_with_grad"]


def _log_softmax_rows(x):
    """log_softmax of each row of a 2-D array; NaN rows where the max is not finite (torch)."""
    if x.shape[-1] == 0:
        return x.copy()
    m = x.max(axis=-1, keepdims=True)
    finite = np.isfinite(m)
    m = np.where(finite, m, 0)
    # ln sum exp(x - m) as log1p of the sum without one maximum, so it keeps its precision
    # when one class dominates (a loss of 1e-7 is not rounded away against the 1).
    logp = (x - m) - _log_sum_exp_shifted(x, m)
    return np.where(finite, logp, np.nan)


def _zero_in_torch(x):
    """Where torch's -log p is exactly 0 while ours is not: at a row's max, when the sum of the
    exps (1 + the rest) rounds to 1 in the compute dtype.  Only an infinite coefficient tells
    the two apart: torch's inf * 0 is NaN."""
    if x.shape[-1] == 0:
        return np.zeros(x.shape, bool)
    m = x.max(axis=-1, keepdims=True)
    return (x == m) & (np.exp(x - m).sum(axis=-1, keepdims=True) == 1)


def _times_neg_logp(coef, logp, zero):
    """coef * (-logp), with torch's -log p = 0 where `zero` for infinite coefficients."""
    return coef * np.where(np.isinf(coef) & zero, 0, -logp)


def _class_indices(args):
    """(valid, safe): which samples are not ignored, and their indices with ignored set to 0."""
    n_classes = args.rows_shape[1]
    t = args.target
    valid = (t >= 0) & (t < n_classes)  # the checks left only ignore_index outside [0, C)
    return valid, np.where(valid, t, 0)


def _mean_denominator(args, weight):
    n_rows = args.rows_shape[0]
    if args.probabilities:
        return float(n_rows) if args.logits.size else 0.0
    valid, t = _class_indices(args)
    return float(np.sum(weight[t[valid]], dtype=np.float64))


def _cross_entropy(args, want_grad):
    """Per-sample losses (float64), the mean's denominator and the gradient (compute dtype)."""
    comp = args.compute_dtype
    n_rows, n_classes = args.rows_shape
    x = np.ascontiguousarray(args.logits, dtype=comp).reshape(args.rows_shape)
    w = args.weight if args.weight is not None else np.ones(n_classes, comp)
    eps = args.label_smoothing
    with np.errstate(all="ignore"):
        logp = _log_softmax_rows(x)
        zero = _zero_in_torch(x)
        if n_classes == 0:  # nothing to sum; every class index was necessarily ignored
            losses = np.zeros(n_rows)
            coef = np.zeros_like(x)
            valid = np.full(n_rows, args.probabilities)
        elif args.probabilities:
            q = np.ascontiguousarray(args.target, dtype=comp).reshape(args.rows_shape)
            if eps > 0:
                q = q * comp.type(1 - eps) + comp.type(eps / n_classes)
            coef = w * q  # the loss is sum(coef * -logp), its gradient softmax * sum(coef) - coef
            losses = _times_neg_logp(coef, logp, zero).sum(axis=-1, dtype=np.float64)
            valid = np.ones(n_rows, bool)
        else:
            valid, t = _class_indices(args)
            rows = np.arange(n_rows)
            nll = _times_neg_logp(w[t], logp[rows, t], zero[rows, t])
            if eps > 0:
                smooth = _times_neg_logp(w, logp, zero).sum(axis=-1)
                losses = (1 - eps) * nll.astype(np.float64) + (eps / n_classes) * smooth.astype(np.float64)
            else:
                losses = nll.astype(np.float64)
            losses = np.where(valid, losses, 0.0)  # ignored samples count for nothing, even NaN
        denominator = _mean_denominator(args, w) if args.reduction == "mean" else 1.0
        grad = None
        if want_grad:
            scale = np.float64(1.0) / np.float64(denominator) if args.reduction == "mean" else np.float64(1.0)
            if n_classes == 0 or args.probabilities:
                coef_scaled = coef * comp.type(scale)
                coef_sum = coef.sum(axis=-1) * comp.type(scale)
            else:
                # The loss is sum(coef * -logp) with coef = (1-eps) w_t onehot(t) + (eps/C) w.
                # The scale multiplies w_t first, as torch's nll backward does (so that a mean
                # over weights summing to 0 gives NaN rows for zero-weight targets, as torch).
                wt_scaled = w[t].astype(np.float64) * scale
                coef_scaled = np.zeros(x.shape, np.float64)
                coef_sum = (1 - eps) * wt_scaled
                if eps > 0:
                    coef_scaled[...] = (eps / n_classes) * scale * w
                    coef_sum = coef_sum + (eps / n_classes) * scale * w.sum(dtype=np.float64)
                coef_scaled[rows, t] += (1 - eps) * wt_scaled
            grad = (np.exp(logp) * coef_sum[:, None].astype(comp) - coef_scaled.astype(comp)).astype(comp)
            grad[~valid] = 0
    return losses, denominator, grad


def nll_loss(log_probs, target, *, weight=None, ignore_index=-100, reduction="mean"):
    """Reference nll_loss: ``-weight[t] * log_probs[..., t]`` per sample, reduced as torch does."""
    args = check_loss_args(
        "nll_loss", log_probs, target, weight, ignore_index, reduction,
        logits_name="log_probs", allow_probabilities=False,
    )
    comp = args.compute_dtype
    n_rows, n_classes = args.rows_shape
    x = np.ascontiguousarray(args.logits, dtype=comp).reshape(args.rows_shape)
    w = args.weight if args.weight is not None else np.ones(n_classes, comp)
    valid, t = _class_indices(args)
    with np.errstate(all="ignore"):
        if n_classes == 0:  # every class index was necessarily ignored
            losses = np.zeros(n_rows)
        else:
            picked = x[np.arange(n_rows), t].astype(np.float64)
            losses = np.where(valid, -(w[t].astype(np.float64) * picked), 0.0)
    denominator = _mean_denominator(args, w) if args.reduction == "mean" else 1.0
    return reduce_row_losses(args, losses, denominator)


def cross_entropy(logits, target, *, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """Reference cross_entropy: torch's formula on ``log_softmax(logits)`` (class axis last)."""
    args = check_loss_args("cross_entropy", logits, target, weight, ignore_index, reduction, label_smoothing)
    losses, denominator, _ = _cross_entropy(args, False)
    return reduce_row_losses(args, losses, denominator)


def cross_entropy_with_grad(
    logits, target, *, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0, out=None
):
    """Reference cross_entropy and its gradient ``softmax * sum(coef) - coef`` (scaled like the loss)."""
    args = check_loss_args(
        "cross_entropy_with_grad", logits, target, weight, ignore_index, reduction, label_smoothing
    )
    if out is not None:
        check_grad_out(out, args)
    losses, denominator, grad = _cross_entropy(args, True)
    with np.errstate(all="ignore"):
        grad = grad.reshape(args.logits.shape)
        if out is not None:
            np.copyto(out, grad, casting="unsafe")
            grad = out
        else:
            grad = grad.astype(args.result_dtype, copy=False)
    return reduce_row_losses(args, losses, denominator), grad
