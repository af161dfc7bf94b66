"""Loss kernels (nll_loss, cross_entropy, cross_entropy_with_grad) against the reference twin,
finite differences and torch, over a generated grid of reductions, weights, ignore_index,
label smoothing, target kinds, dtypes, shapes and special values; then memory (out=logits),
layouts, threads, dtype rules and every documented error."""

import inspect
import math
import tracemalloc

import numpy as np
import pytest

import fastsoftmax as fs
from fastsoftmax import _activations as _k
from fastsoftmax import _losses as _lk
from fastsoftmax import reference as ref

FUNCS = ["nll_loss", "cross_entropy", "cross_entropy_with_grad"]
REDUCTIONS = ["mean", "sum", "none"]
SHAPES = {
    "2d": (6, 7),
    "1d": (5,),
    "3d": (2, 3, 300),  # 300 classes: rows of several blocks
    "short_rows": (70, 10),  # many short rows: the AVX-512 row-block path (16 rows at a time)
}
DTYPES = [np.float16, np.float32, np.float64]
# Kernel against the reference in the same precision (both round; float16 results are rounded
# from float32 by both, so they may differ by one float16 ulp).
RTOL = {np.float16: 2e-3, np.float32: 2e-5, np.float64: 1e-12}
HUGE = {np.float16: 3e4, np.float32: 1e30, np.float64: 1e30}
IGNORE_MODES = {  # name: (ignore_index, whether some targets are ignored)
    "no_ignored": (-100, False),
    "ignored": (-100, True),
    "ignored_class": (1, True),  # ignore_index is itself a class
}


def _make(shape, dtype, kind, ignore_mode="no_ignored", weighted=False, extreme=False, seed=0):
    """logits, target, weight and ignore_index for one case.

    extreme: row 0 holds +-HUGE (the target is neither), the last row a -inf off the target.
    """
    rng = np.random.default_rng(seed)
    n_classes = shape[-1]
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    x2 = x.reshape(-1, n_classes)
    ignore_index, some_ignored = IGNORE_MODES[ignore_mode]
    if kind == "index":
        t = rng.integers(0, n_classes, shape[:-1])
        t2 = t.reshape(-1)
        if extreme:
            t2[0], t2[-1] = 2, 4
        if some_ignored:
            t2[::3] = ignore_index
    else:
        t = rng.random(shape).astype(dtype) + 0.05
        t /= t.sum(axis=-1, keepdims=True)
    if extreme:
        x2[0, 0], x2[0, 1] = HUGE[dtype], -HUGE[dtype]
        x2[-1, 3] = -np.inf
    w = (rng.random(n_classes) + 0.25).astype(dtype) if weighted else None
    return x, t, w, ignore_index


def _assert_close(actual, desired, dtype, scale=1.0):
    actual, desired = np.asarray(actual), np.asarray(desired)
    assert actual.shape == desired.shape
    assert actual.dtype == desired.dtype
    np.testing.assert_allclose(actual, desired, rtol=RTOL[dtype], atol=RTOL[dtype] * scale, equal_nan=True)


def _parity_grid():
    for shape_id, shape in SHAPES.items():
        for dtype in DTYPES:
            for kind in ["index", "probabilities"]:
                modes = list(IGNORE_MODES) if kind == "index" else ["no_ignored"]
                for ignore_mode in modes:
                    for weighted in [False, True]:
                        for ls in [0.0, 0.2]:
                            for reduction in REDUCTIONS:
                                for extreme in [False, True]:
                                    yield pytest.param(
                                        shape, dtype, kind, ignore_mode, weighted, ls, reduction, extreme,
                                        id=f"{shape_id}-{np.dtype(dtype).name}-{kind}-{ignore_mode}-"
                                        f"{'w' if weighted else 'nw'}-ls{ls}-{reduction}"
                                        f"{'-extreme' if extreme else ''}",
                                    )


@pytest.mark.parametrize("shape,dtype,kind,ignore_mode,weighted,ls,reduction,extreme", list(_parity_grid()))
def test_cross_entropy_matches_reference(shape, dtype, kind, ignore_mode, weighted, ls, reduction, extreme):
    x, t, w, ii = _make(shape, dtype, kind, ignore_mode, weighted, extreme)
    kw = dict(weight=w, ignore_index=ii, reduction=reduction, label_smoothing=ls)
    x_before = x.copy()
    loss = fs.cross_entropy(x, t, **kw)
    loss_g, grad = fs.cross_entropy_with_grad(x, t, **kw)
    ref_loss, ref_grad = ref.cross_entropy_with_grad(x, t, **kw)
    np.testing.assert_array_equal(x, x_before)
    # The fused call returns exactly cross_entropy's loss.
    np.testing.assert_array_equal(loss_g, loss)
    assert type(loss) is type(ref_loss)
    _assert_close(loss, ref_loss, dtype)
    _assert_close(ref.cross_entropy(x, t, **kw), ref_loss, dtype)
    _assert_close(grad, ref_grad, dtype, scale=1.0 if w is None else float(np.max(w)))
    assert grad.shape == x.shape and grad.dtype == x.dtype


def _nll_grid():
    for shape_id, shape in SHAPES.items():
        for dtype in DTYPES:
            for ignore_mode in IGNORE_MODES:
                for weighted in [False, True]:
                    for reduction in REDUCTIONS:
                        yield pytest.param(
                            shape, dtype, ignore_mode, weighted, reduction,
                            id=f"{shape_id}-{np.dtype(dtype).name}-{ignore_mode}-{'w' if weighted else 'nw'}-{reduction}",
                        )


@pytest.mark.parametrize("shape,dtype,ignore_mode,weighted,reduction", list(_nll_grid()))
def test_nll_loss_matches_reference(shape, dtype, ignore_mode, weighted, reduction):
    x, t, w, ii = _make(shape, dtype, "index", ignore_mode, weighted, extreme=True)
    log_probs = ref.log_softmax(x)
    kw = dict(weight=w, ignore_index=ii, reduction=reduction)
    got = fs.nll_loss(log_probs, t, **kw)
    want = ref.nll_loss(log_probs, t, **kw)
    assert type(got) is type(want)
    _assert_close(got, want, dtype)
    # nll_loss of log_softmax is cross_entropy.
    _assert_close(got, ref.cross_entropy(x, t, **kw), dtype, scale=10.0)


# --------------------------------------------------------------------------- finite differences


def _fd_grid():
    for shape_id, shape in {"2d": (3, 4), "1d": (5,), "3d": (2, 2, 3)}.items():
        for kind in ["index", "probabilities"]:
            for ignore_mode in (["no_ignored", "ignored"] if kind == "index" else ["no_ignored"]):
                for weighted in [False, True]:
                    for ls in [0.0, 0.3]:
                        for reduction in REDUCTIONS:
                            if shape_id == "1d" and ignore_mode == "ignored":
                                continue  # the only sample is ignored: covered by the all-ignored tests
                            yield pytest.param(
                                shape, kind, ignore_mode, weighted, ls, reduction,
                                id=f"{shape_id}-{kind}-{ignore_mode}-{'w' if weighted else 'nw'}-ls{ls}-{reduction}",
                            )


@pytest.mark.parametrize("shape,kind,ignore_mode,weighted,ls,reduction", list(_fd_grid()))
def test_grad_matches_fourth_order_finite_differences(shape, kind, ignore_mode, weighted, ls, reduction):
    x, t, w, ii = _make(shape, np.float64, kind, ignore_mode, weighted, seed=3)
    kw = dict(weight=w, ignore_index=ii, reduction=reduction, label_smoothing=ls)

    def f(z):  # "none": the gradient is that of the sum of the per-sample losses
        return float(np.sum(fs.cross_entropy(z, t, **kw)))

    h = 1e-3
    fd = np.empty_like(x)
    for i in np.ndindex(x.shape):
        def at(k):
            z = x.copy()
            z[i] += k * h
            return f(z)

        fd[i] = (-at(2) + 8 * at(1) - 8 * at(-1) + at(-2)) / (12 * h)
    _, grad = fs.cross_entropy_with_grad(x, t, **kw)
    np.testing.assert_allclose(grad, fd, rtol=1e-7, atol=1e-9)
    if ignore_mode == "ignored":  # ignored samples have no gradient at all
        rows = t.reshape(-1) == ii
        assert np.all(grad.reshape(-1, x.shape[-1])[rows] == 0)


# --------------------------------------------------------------------------- torch


def _torch_grid():
    for shape_id, shape in SHAPES.items():
        for dtype in [np.float32, np.float64]:
            for kind in ["index", "probabilities"]:
                for ignore_mode in (list(IGNORE_MODES) if kind == "index" else ["no_ignored"]):
                    for weighted in [False, True]:
                        for ls in [0.0, 0.2]:
                            for reduction in REDUCTIONS:
                                yield pytest.param(
                                    shape, dtype, kind, ignore_mode, weighted, ls, reduction,
                                    id=f"{shape_id}-{np.dtype(dtype).name}-{kind}-{ignore_mode}-"
                                    f"{'w' if weighted else 'nw'}-ls{ls}-{reduction}",
                                )


def _to_torch(torch, a, class_axis_moved):
    """A tensor with the class axis where torch wants it (axis 1 for N-d input)."""
    if a is None:
        return None
    if class_axis_moved and a.ndim > 2:
        a = np.moveaxis(a, -1, 1)
    return torch.from_numpy(np.array(a, order="C"))  # (ascontiguousarray would make 0-d 1-d)


TORCH_TOL = {np.float32: dict(rtol=1e-5, atol=2e-6), np.float64: dict(rtol=1e-12, atol=1e-14)}


@pytest.mark.parametrize("shape,dtype,kind,ignore_mode,weighted,ls,reduction", list(_torch_grid()))
def test_cross_entropy_matches_torch_values_and_autograd(shape, dtype, kind, ignore_mode, weighted, ls, reduction):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x, t, w, ii = _make(shape, dtype, kind, ignore_mode, weighted, extreme=True, seed=5)
    kw = dict(ignore_index=ii, reduction=reduction, label_smoothing=ls)
    loss, grad = fs.cross_entropy_with_grad(x, t, weight=w, **kw)

    xt = _to_torch(torch, x, True).requires_grad_(True)
    tt = _to_torch(torch, t, kind == "probabilities")
    lt = F.cross_entropy(xt, tt, weight=_to_torch(torch, w, False), **kw)
    lt.sum().backward()
    want_loss = lt.detach().numpy()
    want_grad = xt.grad.numpy()
    if x.ndim > 2:
        want_grad = np.moveaxis(want_grad, 1, -1)
    np.testing.assert_allclose(np.asarray(loss), want_loss, equal_nan=True, **TORCH_TOL[dtype])
    assert np.asarray(loss).shape == want_loss.shape
    np.testing.assert_allclose(grad, want_grad, equal_nan=True, **TORCH_TOL[dtype])


@pytest.mark.parametrize("kind", ["index", "probabilities"])
@pytest.mark.parametrize("ls", [0.0, 0.5, 1.0], ids=["ls0", "ls0.5", "ls1"])
@pytest.mark.parametrize(
    "weights", ["zero_at_minus_inf", "zero_for_every_target", "negative", "inf_at_a_target", "inf_at_the_max"],
)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_edge_semantics_match_torch(kind, ls, weights, reduction):
    """Zero weights against -inf logits (0 * inf), a mean over weights that sum to 0, negative
    weights, infinite weights (on a target class; on the class of row 0's max, where p is 1
    and -log p is 0), label_smoothing = 1: the NaN / inf pattern and the finite values are
    torch's."""
    torch = pytest.importorskip("torch")
    x, t, _, ii = _make((6, 7), np.float64, kind, "ignored" if kind == "index" else "no_ignored",
                        extreme=True, seed=11)
    w = np.linspace(0.5, 2.0, 7)
    if weights == "zero_at_minus_inf":
        w[3] = 0.0  # the last row has -inf at class 3
    elif weights == "zero_for_every_target":
        w[:] = 0.0
        w[0] = 1.0
        if kind == "index":
            t[(t == 0)] = 5
    elif weights == "negative":
        w[1] = -0.75
    elif weights == "inf_at_a_target":
        w[2] = np.inf  # row 0's target (index targets)
    else:
        w[0] = np.inf  # row 0 holds +HUGE at class 0
    loss, grad = fs.cross_entropy_with_grad(x, t, weight=w, ignore_index=ii, reduction=reduction, label_smoothing=ls)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    lt = torch.nn.functional.cross_entropy(
        xt, torch.from_numpy(t), weight=torch.from_numpy(w), ignore_index=ii, reduction=reduction, label_smoothing=ls
    )
    lt.sum().backward()
    want_grad = xt.grad.numpy()
    if kind == "index" and ls > 0 and weights.startswith("inf"):
        # SPEC: ignored samples have a zero gradient.  torch's smoothing term masks their
        # losses to 0, and its backward then multiplies that 0 by the weights: inf * 0 = NaN.
        ignored = t == ii
        assert np.all(grad[ignored] == 0) and np.all(np.isnan(want_grad[ignored]))
        want_grad = np.where(ignored[:, None], 0.0, want_grad)
    np.testing.assert_allclose(np.asarray(loss), lt.detach().numpy(), equal_nan=True, **TORCH_TOL[np.float64])
    np.testing.assert_allclose(grad, want_grad, equal_nan=True, **TORCH_TOL[np.float64])


# How far a row's max leads the rest: its p then rounds to 1 in the dtype (torch's -log p is 0
# there, ours log1p(rest) > 0), or every other exp underflows to 0 (lse = 0 for both).
LEADS = {"p_rounds_to_1": {np.float32: 20.0, np.float64: 40.0},
         "exps_underflow": {np.float32: 200.0, np.float64: 800.0}}


@pytest.mark.parametrize("lead", list(LEADS))
@pytest.mark.parametrize("ls", [0.0, 0.1], ids=["ls0", "ls0.1"])
@pytest.mark.parametrize("kind", ["index", "probabilities"])
@pytest.mark.parametrize("shape", [(16, 10), (16, 300)], ids=["short_rows", "long_rows"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_infinite_weight_at_a_dominant_max_follows_torch(dtype, shape, kind, ls, lead):
    # An infinite weight on the class that holds a dominant max: torch's -log p there is 0 once
    # the sum of exps rounds to 1, so its loss is inf * 0 = NaN; half the rows target that
    # class, the others a class whose p is tiny (or 0 in the dtype).  Short rows without
    # smoothing take the AVX-512 row-block path.
    torch = pytest.importorskip("torch")
    x, t, _, _ = _make(shape, dtype, kind, seed=14)
    x[:, 2] = x.max(axis=1) + dtype(LEADS[lead][dtype])
    w = np.ones(shape[1], dtype)
    w[2] = np.inf
    if kind == "index":
        t[::2] = 2
    loss, grad = fs.cross_entropy_with_grad(x, t, weight=w, reduction="none", label_smoothing=ls)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    lt = torch.nn.functional.cross_entropy(
        xt, torch.from_numpy(t), weight=torch.from_numpy(w), reduction="none", label_smoothing=ls
    )
    lt.sum().backward()
    np.testing.assert_allclose(loss, lt.detach().numpy(), equal_nan=True, **TORCH_TOL[dtype])
    np.testing.assert_allclose(grad, xt.grad.numpy(), equal_nan=True, **TORCH_TOL[dtype])
    ref_loss, ref_grad = ref.cross_entropy_with_grad(x, t, weight=w, reduction="none", label_smoothing=ls)
    np.testing.assert_array_equal(np.isnan(loss), np.isnan(ref_loss))
    np.testing.assert_array_equal(np.isnan(grad), np.isnan(ref_grad))


@pytest.mark.parametrize("impl", [fs, ref], ids=["fastsoftmax", "reference"])
@pytest.mark.parametrize("ls", [0.0, 0.5, 1.0], ids=["ls0", "ls0.5", "ls1"])
def test_mean_over_targets_whose_weights_sum_to_zero_is_nan(impl, ls):
    # torch divides the nll part and the smoothing part of the mean apart: the nll part is
    # 0 / 0, NaN, whatever the (finite) smoothing part.
    x = np.array([[1.0, 2.0, 3.0], [0.5, 0.0, -1.0]])
    t = np.array([0, 0])
    w = np.array([0.0, 1.0, 1.0])
    assert np.isnan(impl.cross_entropy(x, t, weight=w, label_smoothing=ls))
    assert np.isfinite(impl.cross_entropy(x, t, weight=w, label_smoothing=ls, reduction="sum"))
    try:
        import torch
    except ImportError:
        return
    want = torch.nn.functional.cross_entropy(
        torch.from_numpy(x), torch.from_numpy(t), weight=torch.from_numpy(w), label_smoothing=ls
    )
    assert torch.isnan(want)


@pytest.mark.parametrize("impl", [fs, ref], ids=["fastsoftmax", "reference"])
@pytest.mark.parametrize("shape", [(40, 10), (40, 300)], ids=["short_rows", "long_rows"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("reduction", ["sum", "none"])
def test_infinite_weight_on_the_target_gives_torchs_nan_gradient(impl, shape, dtype, reduction):
    # torch's gradient at the target is -w_t - p_t * (-w_t): -inf + inf = NaN for w_t = inf
    # (not w_t * (p_t - 1) = -inf); the other classes of those rows get +inf; other rows are
    # untouched.  Short rows take the AVX-512 row-block path, long rows the one-row kernel.
    n_rows, n_classes = shape
    x, t, _, _ = _make(shape, dtype, "index", seed=12)
    w = np.ones(n_classes, dtype)
    w[3] = np.inf
    t[::5] = 3
    loss, grad = impl.cross_entropy_with_grad(x, t, weight=w, reduction=reduction)
    hit = t == 3
    assert np.all(np.isnan(grad[hit, 3]))
    assert np.all(grad[hit][:, np.arange(n_classes) != 3] == np.inf)
    assert np.all(np.isfinite(grad[~hit]))
    if reduction == "none":
        assert np.all(loss[hit] == np.inf) and np.all(np.isfinite(loss[~hit]))
    else:
        assert loss == np.inf


@pytest.mark.parametrize("impl", [fs, ref], ids=["fastsoftmax", "reference"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("n_rows", [2, 0])
def test_label_smoothing_over_zero_classes_is_nan_as_in_torch(impl, reduction, n_rows):
    # torch adds (eps / C) * smooth_loss: eps / 0 is inf, and inf * 0 is NaN for every sample
    # (ignored ones too) and every reduction, even of an empty batch; without smoothing, or
    # with probability targets, there is no such term.
    x = np.zeros((n_rows, 0))
    t = np.full(n_rows, -100)
    loss = impl.cross_entropy(x, t, reduction=reduction, label_smoothing=0.5)
    if reduction == "none":
        assert loss.shape == (n_rows,) and np.all(np.isnan(loss))
    else:
        assert np.isnan(loss)
    assert impl.cross_entropy(x, t, reduction="sum") == 0
    assert impl.cross_entropy(x, np.zeros((n_rows, 0)), reduction="sum", label_smoothing=0.5) == 0


@pytest.mark.parametrize("shape_id", list(SHAPES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("ignore_mode", list(IGNORE_MODES))
@pytest.mark.parametrize("weighted", [False, True], ids=["nw", "w"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nll_loss_matches_torch(shape_id, dtype, ignore_mode, weighted, reduction):
    torch = pytest.importorskip("torch")
    x, t, w, ii = _make(SHAPES[shape_id], dtype, "index", ignore_mode, weighted, seed=6)
    log_probs = ref.log_softmax(x)
    got = fs.nll_loss(log_probs, t, weight=w, ignore_index=ii, reduction=reduction)
    want = torch.nn.functional.nll_loss(
        _to_torch(torch, log_probs, True), torch.from_numpy(t), weight=_to_torch(torch, w, False),
        ignore_index=ii, reduction=reduction,
    ).numpy()
    np.testing.assert_allclose(np.asarray(got), want, equal_nan=True, **TORCH_TOL[dtype])


# --------------------------------------------------------------------------- semantics by hand


def test_mean_divides_by_summed_weights_of_non_ignored_targets():
    x = np.array([[1.0, 2.0, 3.0], [0.5, 0.0, -1.0], [2.0, 2.0, 0.0]])
    t = np.array([0, 2, -100])
    w = np.array([1.0, 2.0, 3.0])
    per_sample = -ref.log_softmax(x)[[0, 1], [0, 2]]
    want = (1.0 * per_sample[0] + 3.0 * per_sample[1]) / (1.0 + 3.0)
    np.testing.assert_allclose(fs.cross_entropy(x, t, weight=w), want, rtol=1e-15)
    np.testing.assert_allclose(fs.cross_entropy(x, t), per_sample.mean(), rtol=1e-15)
    np.testing.assert_allclose(fs.cross_entropy(x, t, weight=w, reduction="sum"), 4 * want, rtol=1e-15)
    np.testing.assert_allclose(
        fs.cross_entropy(x, t, weight=w, reduction="none"), [per_sample[0], 3 * per_sample[1], 0.0], rtol=1e-15
    )


def test_label_smoothing_is_torchs_definition_for_both_target_kinds():
    x = np.array([[1.0, 2.0, 3.0, -1.0], [0.5, 0.0, -1.0, 4.0]])
    t = np.array([0, 3])
    w = np.array([0.5, 1.0, 2.0, 1.5])
    eps, n_classes = 0.25, 4
    logp = ref.log_softmax(x)
    rows = np.arange(2)
    per_sample = (1 - eps) * w[t] * -logp[rows, t] + (eps / n_classes) * -(w * logp).sum(axis=1)
    got = fs.cross_entropy(x, t, weight=w, label_smoothing=eps, reduction="none")
    np.testing.assert_allclose(got, per_sample, rtol=1e-14)
    np.testing.assert_allclose(
        fs.cross_entropy(x, t, weight=w, label_smoothing=eps), per_sample.sum() / w[t].sum(), rtol=1e-14
    )
    q = np.eye(n_classes)[t]
    smoothed = q * (1 - eps) + eps / n_classes
    got_p = fs.cross_entropy(x, q, weight=w, label_smoothing=eps, reduction="none")
    np.testing.assert_allclose(got_p, -(w * smoothed * logp).sum(axis=1), rtol=1e-14)
    # With probabilities the mean divides by the number of samples, not by weights.
    np.testing.assert_allclose(
        fs.cross_entropy(x, q, weight=w, label_smoothing=eps), got_p.sum() / 2, rtol=1e-14
    )


def test_grad_is_softmax_minus_onehot():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((5, 9))
    t = rng.integers(0, 9, 5)
    _, grad = fs.cross_entropy_with_grad(x, t, reduction="sum")
    np.testing.assert_allclose(grad, fs.softmax(x) - np.eye(9)[t], rtol=1e-14, atol=1e-16)
    _, grad_mean = fs.cross_entropy_with_grad(x, t)
    np.testing.assert_allclose(grad_mean, grad / 5, rtol=1e-14, atol=1e-17)


def test_loss_of_a_confident_prediction_keeps_its_precision():
    # -log softmax([0, -40])[0] = log1p(exp(-40)); a sum rounded against 1 would give 0.
    for dtype in [np.float32, np.float64]:
        x = np.array([[0.0, -40.0]], dtype)
        want = math.log1p(math.exp(-40.0))
        np.testing.assert_allclose(fs.cross_entropy(x, np.array([0])), want, rtol=1e-6)
        _, grad = fs.cross_entropy_with_grad(x, np.array([0]))
        np.testing.assert_allclose(grad, [[-math.exp(-40.0), math.exp(-40.0)]], rtol=1e-6)


def test_float32_loss_is_accumulated_in_float64():
    n = 200_000
    x = np.zeros((n, 2), np.float32)  # every sample's loss is ln 2
    got = fs.cross_entropy(x, np.zeros(n, np.int64), reduction="sum")
    assert isinstance(got, np.float32)
    assert got == np.float32(n * math.log(2.0))
    naive = np.float32(0)
    for _ in range(1000):  # what float32 accumulation would do (on the first 1000 samples)
        naive = np.float32(naive + np.float32(math.log(2.0)))
    assert naive != np.float32(1000 * math.log(2.0))


# --------------------------------------------------------------------------- special values


@pytest.mark.parametrize("impl", [fs, ref], ids=["fastsoftmax", "reference"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_special_rows(impl, dtype):
    inf, nan = np.inf, np.nan
    x = np.array(
        [
            [1.0, nan, 0.0],  # NaN: NaN loss and gradient
            [1.0, inf, 0.0],  # +inf: NaN
            [-inf, -inf, -inf],  # all -inf: NaN
            [-inf, 1.0, 0.0],  # -inf at the target: +inf loss, finite gradient
            [1e30, -1e30, 0.0],  # huge: exact
            [nan, 1.0, 0.0],  # ignored: counts for nothing, zero gradient
            [1.0, 2.0, 3.0],
        ],
        dtype,
    )
    t = np.array([0, 0, 0, 0, 2, -100, 1])
    loss, grad = impl.cross_entropy_with_grad(x, t, reduction="none")
    p_last = np.exp([1.0, 2.0, 3.0]) / np.exp([1.0, 2.0, 3.0]).sum()
    np.testing.assert_array_equal(loss[:3], [nan, nan, nan])
    assert loss[3] == inf and loss[5] == 0
    np.testing.assert_allclose(loss[4], 1e30, rtol=1e-6)
    np.testing.assert_allclose(loss[6], -np.log(p_last[1]), rtol=1e-6)
    assert np.all(np.isnan(grad[:3]))
    np.testing.assert_allclose(grad[3], [-1.0, 1 / (1 + np.exp(-1.0)), np.exp(-1.0) / (1 + np.exp(-1.0))], rtol=1e-6)
    np.testing.assert_array_equal(grad[4], [1.0, 0.0, -1.0])
    np.testing.assert_array_equal(grad[5], [0.0, 0.0, 0.0])
    np.testing.assert_allclose(grad[6], p_last - [0, 1, 0], rtol=1e-6, atol=1e-7)
    total = impl.cross_entropy(x[3:], t[3:], reduction="sum")
    assert total == inf


@pytest.mark.parametrize("impl", [fs, ref], ids=["fastsoftmax", "reference"])
@pytest.mark.parametrize("ls", [0.0, 0.1], ids=["ls0", "ls0.1"])
def test_every_target_ignored(impl, ls):
    x = np.random.default_rng(1).standard_normal((4, 3))
    t = np.full(4, -100)
    loss, grad = impl.cross_entropy_with_grad(x, t, label_smoothing=ls)
    assert np.isnan(loss)
    np.testing.assert_array_equal(grad, np.zeros_like(x))
    assert impl.cross_entropy(x, t, reduction="sum", label_smoothing=ls) == 0
    np.testing.assert_array_equal(impl.cross_entropy(x, t, reduction="none", label_smoothing=ls), np.zeros(4))
    assert np.isnan(impl.nll_loss(x, t))


@pytest.mark.parametrize("impl", [fs, ref], ids=["fastsoftmax", "reference"])
def test_zero_weight_products_follow_torch(impl):
    # A zero coefficient times an infinite -log p is NaN (IEEE, as in torch); a mean whose
    # weights sum to 0 is NaN, and so is the gradient of the rows that entered it (torch).
    x = np.array([[0.0, -np.inf, 1.0], [0.0, 1.0, 2.0]])
    w = np.array([1.0, 0.0, 1.0])
    assert np.isnan(impl.cross_entropy(x[:1], np.array([1]), weight=w, reduction="sum"))
    assert np.isnan(impl.cross_entropy(x[:1], np.array([[0.0, 0.0, 1.0]])))  # 0 * -log 0
    loss, grad = impl.cross_entropy_with_grad(x, np.array([1, -100]), weight=w)
    assert np.isnan(loss)
    assert np.all(np.isnan(grad[0])) and np.all(grad[1] == 0)


@pytest.mark.parametrize("impl", [fs, ref], ids=["fastsoftmax", "reference"])
@pytest.mark.parametrize("kind", ["index", "probabilities"])
@pytest.mark.parametrize("shape", [(0, 4), (3, 0)], ids=["no_rows", "no_classes"])
def test_empty(impl, kind, shape):
    x = np.zeros(shape)
    t = np.full(shape[:1], -100) if kind == "index" else np.zeros(shape)
    loss, grad = impl.cross_entropy_with_grad(x, t)
    assert np.isnan(loss) and grad.shape == shape
    assert impl.cross_entropy(x, t, reduction="sum") == 0
    assert impl.cross_entropy(x, t, reduction="none").shape == shape[:1]
    if kind == "index":
        assert np.isnan(impl.nll_loss(x, t)) and impl.nll_loss(x, t, reduction="sum") == 0


@pytest.mark.parametrize("n", [900_000, 4_000_000], ids=["n900k", "n4M"])
@pytest.mark.parametrize("func", ["cross_entropy", "cross_entropy_with_grad"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1], ids=["ls0", "ls0.1"])
@pytest.mark.parametrize("kind", ["index", "probabilities"])
def test_float64_loss_of_a_long_row_is_within_an_ulp(kind, label_smoothing, func, n):
    # One row of a million classes: its block sums (the exps', and label smoothing's
    # sum of -log p_i) were added in a plain running double sum, 4-40 ulps off the loss at
    # these lengths; compensated, the loss is within an ulp.  Class 0 is the max, 0 and the
    # target, so x - max is exact; the other logits <= -20 keep the sum of their exps small,
    # so that lse = log1p(rest) shows its relative error.  Oracle: math.fsum of np.exp and of
    # x (-log p_i = lse - x_i, so the smoothed loss is lse - (eps / n) sum(x)).
    rng = np.random.default_rng(0)
    x = -(np.abs(rng.standard_normal(n)) * 3.0 + 20.0)
    x[0] = 0.0
    lse = math.log1p(math.fsum(np.exp(x[1:])))
    want = lse if label_smoothing == 0 else math.fsum([lse, -(label_smoothing / n) * math.fsum(x)])
    target = np.array([0]) if kind == "index" else np.eye(1, n)
    result = getattr(fs, func)(x[None], target, label_smoothing=label_smoothing)
    loss = float(result[0] if func == "cross_entropy_with_grad" else result)
    assert abs(loss - want) <= np.spacing(want)


# --------------------------------------------------------------------------- out= and memory


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("kind", ["index", "probabilities"])
def test_out_is_logits_overwrites_them_in_place(dtype, kind):
    x, t, w, _ = _make((40, 300), dtype, kind, weighted=True, seed=2)
    want_loss, want_grad = fs.cross_entropy_with_grad(x, t, weight=w, label_smoothing=0.1)
    loss, grad = fs.cross_entropy_with_grad(x, t, weight=w, label_smoothing=0.1, out=x)
    assert grad is x
    assert loss == want_loss
    np.testing.assert_array_equal(x, want_grad)


@pytest.mark.parametrize("where", ["fresh", "out_offset3", "out_is_logits"])
@pytest.mark.parametrize("n_classes", [1003, 2100])
@pytest.mark.parametrize("weighted", [False, True], ids=["nw", "w"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_streamed_gradient_equals_the_in_cache_path(dtype, weighted, n_classes, where):
    # Large gradients in long rows are written with streaming stores during the next row's
    # sums (AVX-512, class indices without smoothing; STREAM_MIN_BYTES / STREAM_MIN_COLS):
    # the same bits as the in-cache path (the same rows in a small call), ignored and special
    # rows included, rows of more than one 1024-element chunk, wherever the output starts.
    assert n_classes >= _k.STREAM_MIN_COLS
    n_rows = _k.STREAM_MIN_BYTES // (n_classes * np.dtype(dtype).itemsize) + 3
    x, t, w, ignore_index = _make((n_rows, n_classes), dtype, "index", "ignored", weighted, seed=5)
    x[1, 10] = np.nan
    x[2, :] = -np.inf
    x[3, 20] = np.inf
    x[4] *= 1e3
    t[5] = n_classes - 1  # the target column in a row's tail, head and first lines
    t[6], t[7], t[-2] = 0, 1, 15
    small_rows = np.r_[0:8, n_rows - 8 : n_rows]
    want_loss, want_grad = fs.cross_entropy_with_grad(
        x[small_rows], t[small_rows], weight=w, ignore_index=ignore_index, reduction="none"
    )
    want_all = fs.cross_entropy(x, t, weight=w, ignore_index=ignore_index, reduction="none")
    out = None
    if where == "out_offset3":
        out = np.empty(x.size + 3, dtype)[3:].reshape(x.shape)
    elif where == "out_is_logits":
        out = x
    loss, grad = fs.cross_entropy_with_grad(x, t, weight=w, ignore_index=ignore_index, reduction="none", out=out)
    assert out is None or grad is out
    np.testing.assert_array_equal(loss, want_all)
    np.testing.assert_array_equal(loss[small_rows], want_loss)
    np.testing.assert_array_equal(grad[small_rows], want_grad)


@pytest.mark.parametrize("scaled", ["sum", "weighted_mean"])
@pytest.mark.parametrize("layout", ["in_cache", "streamed"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_gradient_target_column_against_a_float64_oracle(dtype, layout, scaled):
    # The target column, p_t - 1 (reduction="sum"; w_t / sum(w_t) times it with weights and
    # the mean), where it cancels (p_t close to 1: a
    # confident prediction) and where it does not (ties at the max, targets just below it,
    # ordinary rows), in long rows (the kernels' one-row path, in cache or streamed).  The
    # oracle has no cancellation: p_t - 1 = -(the sum of the other exps) / (the sum of all),
    # in float64 from the logits as given.  A float32 p_t - 1 = e_t / s - 1 would give 0 for
    # the confident rows.
    n_classes = 1000
    assert n_classes >= _k.STREAM_MIN_COLS
    n_rows = 64 if layout == "in_cache" else _k.STREAM_MIN_BYTES // (n_classes * np.dtype(dtype).itemsize) + 3
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((n_rows, n_classes)) * 3).astype(dtype)
    t = rng.integers(0, n_classes, n_rows)
    for r, lead in enumerate([1e-3, 1.0, 5.0, 20.0, 50.0, 80.0]):  # confident: p_t - 1 ~ -exp(-lead) * (a sum of exps)
        x[r, t[r]] = x[r].max() + dtype(lead)
    x[6, t[6]] = x[6].max()  # tied at the max with another class
    x[7, t[7]] = x[7].max() - dtype(1e-3)  # just below the max: p_t well under 1
    x[8, t[8]] = x[8].max()
    x[8, (t[8] + 1) % n_classes] = x[8, t[8]]  # tied, the other one after it
    if scaled == "sum":
        w, scale = None, np.ones(n_rows)
        _, grad = fs.cross_entropy_with_grad(x, t, reduction="sum")
    else:  # w_t / sum(w_t) (p_t - 1)
        w = (rng.random(n_classes) + 0.5).astype(dtype)
        scale = w[t].astype(np.float64) / np.sum(w[t].astype(np.float64))
        _, grad = fs.cross_entropy_with_grad(x, t, weight=w, reduction="mean")
    xd = x.astype(np.float64)
    e = np.exp(xd - xd.max(axis=1, keepdims=True))
    rows = np.arange(n_rows)
    e_others = e.copy()
    e_others[rows, t] = 0.0
    want = -e_others.sum(axis=1) / e.sum(axis=1) * scale
    got = grad[rows, t].astype(np.float64)
    assert np.all(got[:6] < 0)  # nothing rounded away
    # The exps are of x_i - m rounded to the dtype (no TwoSum, as torch): a relative error of
    # |x_i - m| eps/2 in each, so in the sum of the other exps, on top of a few ulps.
    eps = np.finfo(dtype).eps
    spread = xd.max(axis=1) - xd.min(axis=1)
    rtol = (4.0 + spread / 2.0) * eps
    assert np.all(np.abs(got - want) <= rtol * np.abs(want)), np.max(np.abs(got - want) / (rtol * np.abs(want)))


def _peak_bytes(fn):
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("target_dtype", [np.int64, np.int32], ids=["int64", "int32"])
@pytest.mark.parametrize("ignore_index", [-100, 3], ids=["ignore_neg", "ignore_class"])
def test_out_is_logits_peak_memory_is_per_row(target_dtype, ignore_index):
    n_rows, n_classes = 2048, 2048  # 16 MiB of float32 logits
    x = np.random.default_rng(0).standard_normal((n_rows, n_classes)).astype(np.float32)
    t = np.random.default_rng(1).integers(0, n_classes, n_rows).astype(target_dtype)
    peak = _peak_bytes(lambda: fs.cross_entropy_with_grad(x, t, ignore_index=ignore_index, out=x))
    assert peak < 40 * n_rows + 64 * 1024  # a few int64/float64/bool arrays of one value per row
    assert peak < x.nbytes / 100
    peak_loss = _peak_bytes(lambda: fs.cross_entropy(x, t, ignore_index=ignore_index))
    assert peak_loss < 40 * n_rows + 64 * 1024


@pytest.mark.parametrize("layout", ["fortran", "swapped_axes"])
@pytest.mark.parametrize("kind", ["index", "probabilities"])
def test_out_is_logits_of_any_layout_allocates_no_array_of_their_size(layout, kind):
    # 3-D logits whose leading axes cannot be merged into one row axis without a copy are
    # read, and their gradient written, a block of rows at a time.
    shape = (80, 50, 1000)  # 32 MB of logits; row blocks of 2 MB
    x, t, _, _ = _make(shape, np.float64, kind, seed=13)
    want_loss, want_grad = fs.cross_entropy_with_grad(x, t, label_smoothing=0.1)
    if layout == "fortran":
        x = np.asfortranarray(x)
    else:
        x = np.ascontiguousarray(x.swapaxes(0, 1)).swapaxes(0, 1)
    if kind == "probabilities":
        t = np.asfortranarray(t)
    assert not x.flags.c_contiguous
    got = {}

    def call():
        got["loss"], got["grad"] = fs.cross_entropy_with_grad(x, t, label_smoothing=0.1, out=x)

    peak = _peak_bytes(call)
    assert peak < x.nbytes / 3  # a block of rows of the logits, the target and the gradient
    assert got["grad"] is x
    assert got["loss"] == want_loss
    np.testing.assert_array_equal(x, want_grad)


def test_float16_out_is_logits_converts_a_block_of_rows_at_a_time():
    x = np.random.default_rng(0).standard_normal((1024, 2048)).astype(np.float16)  # 4 MiB
    t = np.random.default_rng(1).integers(0, 2048, 1024)
    want_loss, want_grad = fs.cross_entropy_with_grad(x, t, reduction="sum")
    peak = _peak_bytes(lambda: fs.cross_entropy_with_grad(x, t, reduction="sum", out=x))
    assert peak < x.nbytes  # a float32 copy of the logits alone would be 2 * x.nbytes
    np.testing.assert_array_equal(x, want_grad)


@pytest.mark.parametrize(
    "case", ["reversed_view_of_logits", "probability_target", "shifted_view_of_logits", "fortran_out"]
)
def test_out_overlapping_an_input_gives_the_fresh_result(case):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 5))
    q = rng.random((6, 5))
    q /= q.sum(axis=1, keepdims=True)
    t = q if case == "probability_target" else rng.integers(0, 5, 6)
    want_loss, want_grad = ref.cross_entropy_with_grad(x.copy(), t.copy(), label_smoothing=0.1)
    if case == "reversed_view_of_logits":
        out = x[::-1]
    elif case == "probability_target":
        out = q
    elif case == "shifted_view_of_logits":
        big = np.concatenate([x.reshape(-1), np.zeros(5)])
        x = big[:30].reshape(6, 5)
        out = big[5:].reshape(6, 5)
    else:
        out = np.asfortranarray(np.zeros((6, 5)))
    loss, grad = fs.cross_entropy_with_grad(x, t, label_smoothing=0.1, out=out)
    assert grad is out
    np.testing.assert_allclose(loss, want_loss, rtol=1e-14)
    np.testing.assert_allclose(out, want_grad, rtol=1e-13, atol=1e-16)


@pytest.mark.parametrize("layout", ["F", "strided", "negative", "byteswapped"])
@pytest.mark.parametrize("kind", ["index", "probabilities"])
def test_any_memory_layout_gives_the_same_result(layout, kind):
    x, t, w, _ = _make((2, 3, 300), np.float32, kind, weighted=True, extreme=True, seed=8)
    want = fs.cross_entropy_with_grad(x, t, weight=w, reduction="none", label_smoothing=0.1)

    def lay(a):
        if layout == "F":
            return np.asfortranarray(a)
        if layout == "strided":
            big = np.zeros(tuple(2 * n for n in a.shape), a.dtype)
            big[tuple(slice(None, None, 2) for _ in a.shape)] = a
            return big[tuple(slice(None, None, 2) for _ in a.shape)]
        if layout == "negative":
            return np.ascontiguousarray(a[..., ::-1])[..., ::-1]
        return a.astype(a.dtype.newbyteorder(">"))

    t_laid = lay(t) if kind == "probabilities" else t
    got = fs.cross_entropy_with_grad(lay(x), t_laid, weight=lay(w), reduction="none", label_smoothing=0.1)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    if layout != "byteswapped":  # out= must have exactly the result dtype
        out = lay(np.zeros_like(x))
        fs.cross_entropy_with_grad(x, t, weight=w, reduction="none", label_smoothing=0.1, out=out)
        np.testing.assert_array_equal(out, want[1])


@pytest.fixture
def restore_threads():
    before = fs.get_num_threads()
    yield
    fs.set_num_threads(before)


@pytest.mark.parametrize("kind", ["index", "probabilities"])
def test_results_do_not_depend_on_the_thread_count(restore_threads, kind):
    x, t, w, _ = _make((512, 300), np.float32, kind, weighted=True, seed=9)
    fs.set_num_threads(1)
    one = fs.cross_entropy_with_grad(x, t, weight=w, label_smoothing=0.1)
    fs.set_num_threads(4)
    many = fs.cross_entropy_with_grad(x, t, weight=w, label_smoothing=0.1)
    assert one[0] == many[0]
    np.testing.assert_array_equal(one[1], many[1])


# --------------------------------------------------------------------------- the compiled fast path
# The common call (C-contiguous float logits, int64 class indices, an ignore_index outside [0, C),
# a weight of the logits' dtype or none, a label smoothing given as a Python number) runs
# _losses.try_loss; everything else returns None there and takes the general path.  int32
# targets of the same values force the general path on the same logits.


def _fast(func, x, t, **kw):
    """What try_loss gives for fs.<func>(x, t, **kw), or None (the general path)."""
    kind = _lk.LossKind.NLL if func == "nll_loss" else _lk.LossKind.CROSS_ENTROPY
    return _lk.try_loss(
        int(kind), x, t, kw.get("weight"), kw.get("ignore_index", -100), kw.get("reduction", "mean"),
        kw.get("label_smoothing", 0.0), kw.get("out"), func == "cross_entropy_with_grad", fs.get_num_threads,
    )


def _assert_same_bits(got, want):
    assert type(got) is type(want)
    if isinstance(want, tuple):
        for g, w in zip(got, want):
            _assert_same_bits(g, w)
    elif isinstance(want, np.ndarray):
        assert got.dtype == want.dtype and got.shape == want.shape
        assert got.tobytes() == want.tobytes()
    else:
        assert np.asarray(got).tobytes() == np.asarray(want).tobytes()


def _fast_path_grid():
    """(func, options) pairs: nll_loss has no label smoothing."""
    for func in FUNCS:
        for options in ("plain", "weight", "smoothing", "weight_smoothing"):
            if func == "nll_loss" and "smoothing" in options:
                continue
            yield pytest.param(func, options, id=f"{func}-{options}")


# rows around the pairwise sum's thresholds (8, 128) and past NumPy's buffer of 8192
@pytest.mark.parametrize("n_rows", [1, 7, 9, 129, 300, 20_000])
@pytest.mark.parametrize("ignored", [False, True], ids=["none_ignored", "some_ignored"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("func,options", list(_fast_path_grid()))
def test_fast_path_gives_the_general_paths_bits(func, options, dtype, reduction, ignored, n_rows):
    rng = np.random.default_rng(n_rows)
    x = (rng.standard_normal((n_rows, 11)) * 3).astype(dtype)
    if func == "nll_loss":
        x = ref.log_softmax(x)
    t = rng.integers(0, 11, n_rows)
    if ignored:
        t[::3] = -100
    kw = {"reduction": reduction}
    if "weight" in options:
        kw["weight"] = (rng.random(11) + 0.25).astype(dtype)
    if "smoothing" in options:
        kw["label_smoothing"] = 0.1
    f = getattr(fs, func)
    fast = _fast(func, x, t, **kw)
    assert fast is not None  # the case under test does take the fast path
    _assert_same_bits(fast, f(x, t, **kw))
    _assert_same_bits(f(x, t, **kw), f(x, t.astype(np.int32), **kw))  # int32 targets: the general path


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_fast_path_of_nd_logits_and_out(reduction):
    rng = np.random.default_rng(21)
    x = rng.standard_normal((2, 3, 40)).astype(np.float32)
    t = rng.integers(0, 40, (2, 3))
    want = fs.cross_entropy_with_grad(x, t.astype(np.int32), reduction=reduction)
    out = np.full_like(x, np.nan)
    got = _fast("cross_entropy_with_grad", x, t, reduction=reduction, out=out)
    assert got is not None and got[1] is out
    _assert_same_bits(got, (want[0], want[1]))
    y = x.copy()
    loss, grad = fs.cross_entropy_with_grad(y, t, reduction=reduction, out=y)  # in place
    assert grad is y
    _assert_same_bits((loss, grad), want)


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 128, 129, 8193, 100_000])
def test_sum_of_row_losses_is_a_pairwise_sum(n):
    a = np.random.default_rng(n).random(n) * 10.0 ** np.random.default_rng(n + 1).integers(-8, 8, n)
    got = _lk.sum_row_losses(a)
    exact = math.fsum(a)
    # pairwise summation: at most about log2(n) roundings on the way to each element
    assert abs(got - exact) <= (math.log2(max(n, 2)) + 1) * np.finfo(np.float64).eps * np.sum(np.abs(a))
    if tuple(int(v) for v in np.__version__.split(".")[:2]) >= (2, 3):
        assert got == np.sum(a)  # np.sum's own pairwise sum over the whole array (blocks of 8192 before 2.3)


def _declined_cases():
    """name -> (func, logits, target, keywords): calls try_loss must hand to the general path."""
    rng = np.random.default_rng(22)
    x = rng.standard_normal((6, 5))
    t = rng.integers(0, 5, 6)
    big_t = np.zeros(12, np.int64)
    w_buf = np.ones(5)
    return {
        "weight_of_another_dtype": ("cross_entropy", x, t, {"weight": np.ones(5, np.float32)}),
        "weight_list": ("cross_entropy", x, t, {"weight": [1.0] * 5}),
        "weight_wrong_shape": ("cross_entropy", x, t, {"weight": np.ones(4)}),
        "weight_strided": ("cross_entropy", x, t, {"weight": np.ones(10)[::2]}),
        "label_smoothing_above_one": ("cross_entropy", x, t, {"label_smoothing": 1.5}),
        "label_smoothing_nan": ("cross_entropy", x, t, {"label_smoothing": float("nan")}),
        "label_smoothing_bool": ("cross_entropy", x, t, {"label_smoothing": False}),
        "label_smoothing_numpy_zero": ("cross_entropy", x, t, {"label_smoothing": np.float64(0.0)}),
        "ignore_index_a_class": ("cross_entropy", x, t, {"ignore_index": 2}),
        "ignore_index_bool": ("cross_entropy", x, t, {"ignore_index": False}),
        "ignore_index_beyond_int64": ("cross_entropy", x, t, {"ignore_index": 2**70}),
        "unknown_reduction": ("cross_entropy", x, t, {"reduction": "avg"}),
        "target_out_of_range": ("cross_entropy", x, np.array([0, 1, 2, 3, 4, 5]), {}),
        "target_negative_not_ignored": ("nll_loss", x, np.array([0, 1, -1, 3, 4, 0]), {}),
        "target_int32": ("cross_entropy", x, t.astype(np.int32), {}),
        "target_uint64": ("cross_entropy", x, t.astype(np.uint64), {}),
        "target_byteswapped": ("cross_entropy", x, t.astype(">i8"), {}),
        "target_list": ("cross_entropy", x, t.tolist(), {}),
        "target_wrong_shape": ("cross_entropy", x, t[:5], {}),
        "probabilities": ("cross_entropy", x, np.full((6, 5), 0.2), {}),
        "logits_float16": ("cross_entropy", x.astype(np.float16), t, {}),
        "logits_1d": ("cross_entropy", x[0], t[0:1].reshape(()), {}),
        "logits_fortran": ("cross_entropy", np.asfortranarray(x), t, {}),
        "logits_list": ("cross_entropy", x.tolist(), t, {}),
        "no_rows": ("cross_entropy", x[:0], t[:0], {}),
        "no_classes": ("cross_entropy", x[:, :0], t, {"ignore_index": 0}),
        # a float64 view of the targets' own buffer: out over the targets
        "out_overlaps_target": (
            "cross_entropy_with_grad", x[:, :1].copy(), big_t[:6], {"out": big_t.view(np.float64)[:6].reshape(6, 1)}
        ),
        "out_over_the_weight": ("cross_entropy_with_grad", x[:1].copy(), t[:1], {"weight": w_buf, "out": w_buf.reshape(1, 5)}),
        "out_shifted_view_of_logits": ("cross_entropy_with_grad", x[1:], t[1:], {"out": x[:-1]}),
        "out_fortran": ("cross_entropy_with_grad", x, t, {"out": np.asfortranarray(np.zeros((6, 5)))}),
        "out_float32": ("cross_entropy_with_grad", x, t, {"out": np.zeros((6, 5), np.float32)}),
        "out_read_only": ("cross_entropy_with_grad", x, t, {"out": np.zeros((6, 5))[...]}),
    }


DECLINED = _declined_cases()


@pytest.mark.parametrize("case", list(DECLINED))
def test_fast_path_declines_what_it_does_not_take(case):
    func, x, t, kw = DECLINED[case]
    if case == "out_read_only":
        kw["out"].flags.writeable = False
    assert _fast(func, x, t, **kw) is None


def test_a_bad_target_on_the_fast_paths_shape_raises_and_writes_nothing():
    x = np.random.default_rng(23).standard_normal((4, 3))
    before = x.copy()
    with pytest.raises(IndexError, match=r"has value 7 at position \(2,\), outside \[0, 3\)"):
        fs.cross_entropy_with_grad(x, np.array([0, 1, 7, 2]), out=x)
    np.testing.assert_array_equal(x, before)


# --------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("impl", [fs, ref], ids=["fastsoftmax", "reference"])
@pytest.mark.parametrize(
    "logits_dtype,result_dtype",
    [(np.float16, np.float16), (np.float32, np.float32), (np.float64, np.float64),
     (np.int32, np.float64), (np.bool_, np.float64)],
    ids=["float16", "float32", "float64", "int32", "bool"],
)
def test_result_dtypes(impl, logits_dtype, result_dtype):
    x = np.array([[1, 0, 0], [0, 1, 1]], dtype=logits_dtype)
    t = np.array([0, 2])
    loss, grad = impl.cross_entropy_with_grad(x, t)
    assert type(loss) is result_dtype and grad.dtype == result_dtype
    assert type(impl.cross_entropy(x, t, reduction="sum")) is result_dtype
    assert impl.cross_entropy(x, t, reduction="none").dtype == result_dtype
    assert type(impl.cross_entropy(x[0], t[0], reduction="none")) is result_dtype  # 0-d: a scalar
    assert type(impl.nll_loss(x, t)) is result_dtype
    q = np.array([[1, 0, 0], [0, 0.5, 0.5]], dtype=result_dtype)
    assert type(impl.cross_entropy(x, q)) is result_dtype


@pytest.mark.parametrize(
    "target_dtype", [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64]
)
def test_any_integer_target_dtype(target_dtype):
    x, t, w, _ = _make((6, 7), np.float64, "index", seed=10)
    want = fs.cross_entropy_with_grad(x, t, weight=w)
    got = fs.cross_entropy_with_grad(x, t.astype(target_dtype), weight=w)
    assert got[0] == want[0]
    np.testing.assert_array_equal(got[1], want[1])


def test_uint64_target_that_would_wrap_to_ignore_index_is_rejected():
    x = np.zeros((2, 3))
    t = np.array([0, 2**64 - 100], np.uint64)  # -100 as int64
    with pytest.raises(IndexError, match="18446744073709551516"):
        fs.cross_entropy(x, t)


def test_weight_is_converted_to_the_logits_dtype():
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float16)
    t = np.array([0, 1, 2, 1])
    w = np.array([0.1, 0.7, 1.3])  # float64: rounded to float16 like the logits
    a = fs.cross_entropy_with_grad(x, t, weight=w)
    b = fs.cross_entropy_with_grad(x, t, weight=w.astype(np.float16))
    assert a[0] == b[0]
    np.testing.assert_array_equal(a[1], b[1])
    assert fs.cross_entropy(x.astype(np.float64), t, weight=[1, 2, 3]) == fs.cross_entropy(
        x.astype(np.float64), t, weight=np.array([1.0, 2.0, 3.0])
    )


def test_array_likes():
    got = fs.cross_entropy_with_grad([[1.0, 2.0], [0.0, 0.0]], [1, 0])
    want = fs.cross_entropy_with_grad(np.array([[1.0, 2.0], [0.0, 0.0]]), np.array([1, 0]))
    assert got[0] == want[0]
    np.testing.assert_array_equal(got[1], want[1])


def test_same_signatures_as_reference():
    for name in FUNCS:
        assert inspect.signature(getattr(fs, name)) == inspect.signature(getattr(ref, name))
        assert name in fs.__all__ and name in ref.__all__


# --------------------------------------------------------------------------- errors


def _error_cases():
    """(id, function, kwargs builder, exception, message fragment)."""

    def base(kind="index", shape=(3, 4), dtype=np.float64):
        rng = np.random.default_rng(0)
        x = rng.standard_normal(shape).astype(dtype)
        if kind == "index":
            t = rng.integers(0, shape[-1], shape[:-1])
        else:
            t = np.full(shape, 1.0 / shape[-1], dtype)
        return dict(logits=x, target=t)

    def with_(kind="index", shape=(3, 4), dtype=np.float64, **changes):
        def build():
            kw = base(kind, shape, dtype)
            for key, value in changes.items():
                kw[key] = value(kw) if callable(value) else value
            return kw

        return build

    def set_target(value, index):
        def change(kw):
            t = kw["target"].copy()
            t[index] = value
            return t

        return change

    ce, ceg, nll = "cross_entropy", "cross_entropy_with_grad", "nll_loss"
    cases = [
        ("target_too_large", ce, with_(target=set_target(4, 1)), IndexError, r"value 4 at position \(1,\)"),
        ("target_negative", ceg, with_(target=set_target(-1, 2)), IndexError, r"value -1 at position \(2,\)"),
        ("target_nd_position", ceg, with_(shape=(2, 3, 4), target=set_target(9, (1, 2))), IndexError,
         r"value 9 at position \(1, 2\)"),
        ("target_0d", ceg, with_(shape=(4,), target=np.array(5)), IndexError, r"value 5 at position \(\)"),
        ("target_is_ignore_index_elsewhere", ceg, with_(target=set_target(-100, 0), ignore_index=-1), IndexError,
         "value -100"),
        ("nll_target_too_large", nll, with_(target=set_target(7, 0)), IndexError, "value 7"),
        ("index_target_wrong_shape", ceg, with_(target=np.array([0, 1])), ValueError, "'target'"),
        ("prob_target_wrong_shape", ceg, with_(kind="probabilities", target=np.full((3, 5), 0.2)), ValueError,
         "'target'"),
        ("prob_target_wrong_dtype", ceg, with_(kind="probabilities", target=lambda kw: kw["target"].astype(np.float32)),
         TypeError, "'target'"),
        ("prob_target_with_int_logits", ce,
         with_(kind="probabilities", logits=lambda kw: np.ones((3, 4), np.int64),
               target=lambda kw: kw["target"].astype(np.float32)), TypeError, "'target'"),
        ("float_target_to_nll", nll, with_(kind="probabilities"), TypeError, "'target'"),
        ("bool_target", ce, with_(target=np.zeros(3, bool)), TypeError, "'target'"),
        ("complex_target", ce, with_(target=np.zeros(3, complex)), TypeError, "'target'"),
        ("prob_target_ignore_index_nonneg", ceg, with_(kind="probabilities", ignore_index=0), ValueError,
         "'ignore_index'"),
        ("ignore_index_not_int", ce, with_(ignore_index=1.5), TypeError, "'ignore_index'"),
        ("weight_wrong_shape", ceg, with_(weight=np.ones(3)), ValueError, "'weight'"),
        ("weight_2d", nll, with_(weight=np.ones((1, 4))), ValueError, "'weight'"),
        ("weight_complex", ce, with_(weight=np.ones(4, complex)), TypeError, "'weight'"),
        ("unknown_reduction", ceg, with_(reduction="avg"), ValueError, "'reduction'"),
        ("reduction_none_object", nll, with_(reduction=None), ValueError, "'reduction'"),
        ("label_smoothing_negative", ceg, with_(label_smoothing=-0.1), ValueError, "'label_smoothing'"),
        ("label_smoothing_above_1", ce, with_(label_smoothing=1.5), ValueError, "'label_smoothing'"),
        ("label_smoothing_nan", ceg, with_(label_smoothing=float("nan")), ValueError, "'label_smoothing'"),
        ("label_smoothing_str", ce, with_(label_smoothing="0.1"), TypeError, "'label_smoothing'"),
        ("logits_0d", ceg, with_(logits=np.array(1.0), target=np.array(0)), ValueError, "'logits'"),
        ("log_probs_0d", nll, with_(logits=np.array(1.0), target=np.array(0)), ValueError, "'log_probs'"),
        ("logits_complex", ceg, with_(logits=np.ones((3, 4), complex)), TypeError, "'logits'"),
        ("out_wrong_shape", ceg, with_(out=np.zeros((3, 5))), ValueError, "'out'"),
        ("out_wrong_dtype", ceg, with_(out=np.zeros((3, 4), np.float32)), TypeError, "'out'"),
        ("out_not_array", ceg, with_(out=[[0.0] * 4] * 3), TypeError, "'out'"),
        ("out_read_only", ceg, with_(out="read_only"), ValueError, "'out'"),
        ("out_is_logits_bad_target", ceg, with_(target=set_target(4, 2), out="logits"), IndexError, "value 4"),
        ("out_is_logits_bad_weight", ceg, with_(weight=np.ones(5), out="logits"), ValueError, "'weight'"),
    ]
    for case_id, func, build, exc, match in cases:
        yield pytest.param(func, build, exc, match, id=case_id)


def _prepare(func, build):
    kw = build()
    if isinstance(kw.get("out"), str):
        if kw["out"] == "logits":
            kw["out"] = kw["logits"]
        else:  # "read_only"
            kw["out"] = np.zeros(np.shape(kw["logits"]))
            kw["out"].flags.writeable = False
    if func == "nll_loss":
        kw["log_probs"] = kw.pop("logits")
    return kw


@pytest.mark.parametrize("impl", [fs, ref], ids=["fastsoftmax", "reference"])
@pytest.mark.parametrize("func,build,exc,match", list(_error_cases()))
def test_errors_raise_and_change_nothing(impl, func, build, exc, match):
    kw = _prepare(func, build)
    arrays = {k: v for k, v in kw.items() if isinstance(v, np.ndarray)}
    before = {k: v.copy() for k, v in arrays.items()}
    with pytest.raises(exc, match=match) as info:
        getattr(impl, func)(**kw)
    assert f"{func}() argument" in str(info.value)
    for k, v in arrays.items():
        np.testing.assert_array_equal(v, before[k])
    # The twin raises the very same error.
    other = ref if impl is fs else fs
    with pytest.raises(exc) as info_other:
        getattr(other, func)(**_prepare(func, build))
    assert str(info_other.value) == str(info.value)


@pytest.mark.parametrize("ncols", [1, 3, 10, 17, 32, 33], ids=lambda n: f"C{n}")
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("weighted", [False, True], ids=["nw", "w"])
def test_special_rows_inside_row_blocks(ncols, dtype, weighted):
    # Short rows are done 16 (float64: 8) rows at a time: special and ignored rows must not
    # leak into their neighbours, and the result must match the reference row by row.
    rng = np.random.default_rng(ncols)
    x = (rng.standard_normal((53, ncols)) * 3).astype(dtype)
    t = rng.integers(0, ncols, 53)
    x[3, 0] = np.nan
    x[5, :] = -np.inf
    x[17, ncols // 2] = np.inf
    x[20, t[20]] = -np.inf
    x[33, :] = 1e30
    t[7] = t[40] = -100
    x[40, 0] = np.nan  # an ignored row: loss 0 and a zero gradient whatever its values
    x[44, t[44]] = x[44].max() + 50.0  # a confident prediction: loss ~ exp(-50)
    w = (rng.random(ncols) + 0.5).astype(dtype) if weighted else None
    loss, grad = fs.cross_entropy_with_grad(x, t, weight=w, reduction="none")
    want_loss, want_grad = ref.cross_entropy_with_grad(x, t, weight=w, reduction="none")
    rtol = 2e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(loss, want_loss, rtol=rtol, atol=0, equal_nan=True)
    np.testing.assert_allclose(grad, want_grad, rtol=rtol, atol=1e-7 if dtype == np.float32 else 1e-15, equal_nan=True)
    assert loss[40] == 0 and not grad[40].any()
    assert np.isnan(loss[[3, 5, 17]]).all()
    loss_only = fs.cross_entropy(x, t, weight=w, reduction="none")
    np.testing.assert_array_equal(loss_only, loss)


@pytest.mark.parametrize("ncols", [10, 20, 128, 1000], ids=lambda n: f"C{n}")
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_a_nan_the_min_drops_still_makes_the_loss_and_gradient_nan(ncols, dtype):
    # As tests/test_activations.py's test of the same name: -200 then NaN in one vector lane,
    # which a vector min may drop with the NaN; the cheap exp of narrow rows would then turn
    # -200 into garbage, and the row's NaN must still reach its loss and every gradient entry.
    rng = np.random.default_rng(ncols)
    x = (rng.standard_normal((48, ncols)) * 3).astype(dtype)
    step = 1 if ncols <= 32 else 32
    for r in range(0, 48, 3):
        j = (r * 7) % (ncols - 2 * step) if ncols > 2 * step else 0
        x[r, j], x[r, j + step] = -200.0, np.nan
    t = rng.integers(0, ncols, 48)
    loss, grad = fs.cross_entropy_with_grad(x, t, reduction="none")
    want_loss, want_grad = ref.cross_entropy_with_grad(x.astype(np.float64), t, reduction="none")
    nan_rows = np.isnan(x).any(axis=1)
    assert np.isnan(loss[nan_rows]).all() and np.isnan(grad[nan_rows]).all()
    rtol = 2e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(loss[~nan_rows], want_loss[~nan_rows], rtol=rtol)
    np.testing.assert_allclose(grad[~nan_rows], want_grad[~nan_rows], rtol=rtol, atol=1e-7 if dtype == np.float32 else 1e-15)


@pytest.mark.parametrize("shape", [(64, 10), (53, 3), (40, 32), (5, 300), (33, 1)], ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_out_logits_gives_the_same_loss_and_grad(shape, dtype, reduction):
    # With out=logits the kernel overwrites the logits while it reads them: every path
    # (short-row blocks, long rows) must read what it needs before it writes.
    rng = np.random.default_rng(shape[0])
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    t = rng.integers(0, shape[1], shape[0])
    t[::7] = -100
    loss, grad = fs.cross_entropy_with_grad(x, t, reduction=reduction)
    work = x.copy()
    loss2, grad2 = fs.cross_entropy_with_grad(work, t, reduction=reduction, out=work)
    assert grad2 is work
    np.testing.assert_array_equal(loss2, loss)
    np.testing.assert_array_equal(grad2, grad)
    np.testing.assert_array_equal(fs.cross_entropy(x, t, reduction=reduction), loss)
