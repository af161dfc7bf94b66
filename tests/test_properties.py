"""Property-based tests (hypothesis): every kernel against ``fastsoftmax.reference`` (issue 6).

Inputs are drawn over arbitrary shapes (0-size included), axes (negative, tuples, None),
memory layouts (C, Fortran, strided, negative strides, byte-swapped, unaligned, permuted),
float32/float64, and values from ordinary to extreme: NaN, +-inf, +-1e30, the largest finite
numbers, subnormals, rows of a few repeated values.  Arrays are made from a drawn seed plus
drawn special values at drawn positions (fast, and shrinkable to the few elements that
matter), or element by element for small arrays.

The oracle is the reference twin evaluated in float64: on the float64 input itself, and on
the exactly upcast input for float32 (so for float32 it measures the kernel's own error).
Results are compared in three steps: NaN where the reference evaluated in the kernel's own
dtype has NaN; the same infinities; elsewhere finite and within an error bound of the float64
oracle.  (The own-dtype reference decides the special values because they can depend on the
precision: a float32 exp(-100) underflows to 0, and 0 * inf is NaN where float64 gives inf.)

Error bounds.  u is the unit roundoff of the dtype the kernel computes in (2**-24 for
float32, 2**-53 for float64), eta the smallest subnormal, n the row length, K = 4 the
allowance for the few ulps of an exp or log1p and for both twins' roundings (for float32
the oracle's own error is negligible).  S(n) is the relative error of a kernel's sum of n
terms of one sign, in units of u: float32 kernels add at most 128 terms in float32 lanes of
8 or more and everything beyond in float64, which stays within K c(n) with
c(n) = log2(n + 1) + 2; float64 has no wider accumulator and its vector lanes add
sequentially, so S(n) = n + K, the bound for any order of summation.  Each bound is a
first-order error analysis of the formula:

- softmax ``y = exp(x - m) / sum``:   ``|dy| <= u (K (|x - m| + 2) + S(n)) |y|``.  The
  argument ``x - m`` is rounded (relative error u, so exp's result is off by u |x - m|), then
  the sum, exp and the scaling.
- log_softmax ``y = (x - m) - log(sum)``:   ``|dy| <= u (K (|y| + |x - m| + 2) + S(n))``
  (two terms of the same sign: no cancellation).
- logsumexp ``m + log(sum)``:   ``|dy| <= u (K (|y| + |m| + 2) + S(n))``  (m and log(sum)
  may cancel: the error is relative to their magnitudes).
- softmax_backward ``y (g - s)``, ``s = sum g y``:
  ``|dr| <= u |y| (K (|g| + |s|) + S(n) sum |g y|)``.
- log_softmax_backward ``g - exp(y) S``, ``S = sum g``:
  ``|dr| <= u (K |g| + exp(y) (K |S| (2 + |y|) + S(n) sum |g|))``  (exp of an argument of
  magnitude |y| is off by about u |y| after range reduction).
- losses: a row's loss is ``sum_c a_c (-log p_c)`` with coefficients a (weight, smoothing,
  probabilities; their magnitudes are those of the terms they are computed from), so
  ``|dL| <= u sum_c |a_c| (K (2 |log p_c| + |x_c - m| + 2) + S(C) (1 + |log p_c|))`` (log
  p_c is off by its own bound, then the products and their sum over C); the reductions add
  the float64 sum over rows (NumPy's pairwise sum in both twins: ``K 2**-53 c(N) sum |L_r|``),
  for "mean" the denominator (a float64 sum of N weights, ``(N + c(N)) 2**-53`` relative
  in any order).  The gradient ``scale (p_c sum(a) - a_c)`` is bounded by
  ``u |scale| (p_c sum|a| (K (|x_c - m| + 4) + 2 S(C)) + K |a_c|)``.
- underflow: a result or intermediate in the subnormal range is rounded absolutely, not
  relatively (``fl(a op b) = (a op b)(1 + d) + e`` with ``|e| <= eta``): each bound gets
  ``K eta`` times the number of such roundings that reach the element (about n + 2, scaled
  like the term they enter).
- every result is finally rounded to its dtype: ``u |y| + eta`` more.
- SGD: every line is one fused multiply-add, rounded once (2u between the twins: each may be
  off by u from the exact value, float64 and the float32 double-rounding emulation of the
  reference included); the bound follows the errors through the update, step after step.

Hypothesis profiles (tests/conftest.py): "dev" (default, 100 examples per property) and "ci"
(``HYPOTHESIS_PROFILE=ci``: 2,000 examples per property, derandomized so a failure reproduces
with the same command).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, note
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastsoftmax as fs
from fastsoftmax import reference as ref

FLOATS = [np.float32, np.float64]
U = {np.dtype(np.float32): 2.0**-24, np.dtype(np.float64): 2.0**-53}
K = 4.0
MAX_SIZE = 3000  # elements per array: keeps 2,000 examples per property within seconds


def _u(dtype):
    return U[np.dtype(dtype)]


def _sub(dtype):
    return float(np.finfo(dtype).smallest_subnormal)


def _c(n):
    return np.log2(np.asarray(n, np.float64) + 1.0) + 2.0


def _sum_error(n, dtype):
    """Relative error of a kernel's sum of n terms of the same sign, in units of u (see the
    module docstring): float32 kernels add at most 128 terms in float32 lanes of 8 or more
    (16 additions per lane, then a tree) and everything beyond in float64, within
    K c(n) u32; float64 has no wider accumulator and the lanes add sequentially, so the
    bound is the one for any order of summation, n - 1 (plus the final rounding)."""
    if np.dtype(dtype) == np.float32:
        return K * _c(n)
    return np.asarray(n, np.float64) + K


# ------------------------------------------------------------------------------ strategies


@st.composite
def shapes(draw, min_dims=1, max_dims=4, max_size=MAX_SIZE):
    """A shape whose size stays within max_size; sides span SIMD widths and block edges
    (0, 1, 7, 8, 15-17, 31-33, ...) with now and then a long axis (1023-2049)."""
    ndim = draw(st.integers(min_dims, max_dims))
    sides = []
    budget = max_size
    for _ in range(ndim):
        side = draw(
            st.one_of(
                st.integers(0, 6),
                st.integers(0, 40),
                st.sampled_from([64, 127, 128, 129, 255, 1023, 1024, 1025, 2049]),
            )
        )
        side = min(side, max(budget, 1))
        sides.append(side)
        budget //= max(side, 1)
    return tuple(sides)


def _specials(dtype, finite_only=False, bound=None):
    info = np.finfo(dtype)
    finite = [0.0, -0.0, float(info.tiny), float(info.smallest_subnormal), -float(info.smallest_subnormal)]
    if bound is None:
        finite += [1e30, -1e30, float(info.max), -float(info.max), float(info.max) / 2, 88.7, -103.9, 709.7, -745.0]
    else:
        finite += [bound, -bound, bound / 3]
    if finite_only:
        return finite
    return finite + [np.nan, np.inf, -np.inf]


@st.composite
def float_arrays(draw, shape, dtype, bound=None, upper=None, specials=True):
    """Values of `shape` and `dtype`: from a drawn seed (several distributions) with drawn
    special values at drawn positions, or element by element for small arrays.  `bound`
    limits finite magnitudes, `upper` the largest value (after the specials)."""
    n = math.prod(shape)
    if 0 < n <= 48 and draw(st.integers(0, 3)) == 0:
        width = np.dtype(dtype).itemsize * 8
        if bound is None:
            elements = st.floats(width=width, allow_nan=specials, allow_infinity=specials)
        else:
            b = float(np.nextafter(np.asarray(bound, dtype), 0))  # representable in dtype, <= bound
            elements = st.floats(-b, b, width=width)
            if specials:
                elements = st.one_of(elements, st.sampled_from([np.nan, np.inf, -np.inf]))
        a = draw(hnp.arrays(dtype, shape, elements=elements))
    else:
        seed = draw(st.integers(0, 2**32 - 1))
        kind = draw(st.sampled_from(["normal", "wide", "few", "offset", "tiny", "huge", "constant"]))
        rng = np.random.default_rng(seed)
        if kind == "normal":
            a = rng.standard_normal(shape) * draw(st.sampled_from([1e-3, 1.0, 3.0, 10.0, 30.0]))
        elif kind == "wide":
            a = rng.standard_normal(shape) * np.exp(rng.uniform(-20, 20, shape))
        elif kind == "few":
            values = rng.standard_normal(draw(st.integers(1, 4))) * draw(st.sampled_from([0.01, 1.0, 20.0]))
            a = rng.choice(values, size=shape)
        elif kind == "offset":
            a = rng.standard_normal(shape) + draw(st.sampled_from([1e3, -1e4, 1e6]))
        elif kind == "tiny":
            a = rng.standard_normal(shape) * 1e-30
        elif kind == "huge":
            a = rng.standard_normal(shape) * 1e30
        else:
            a = np.full(shape, draw(st.sampled_from([0.0, 1.0, -5.0, 1e20])))
        if bound is not None:
            a = np.clip(a, -bound, bound)
        with np.errstate(over="ignore"):
            a = a.astype(dtype)
        if specials and n:
            for _ in range(draw(st.integers(0, 6))):
                at = draw(st.integers(0, n - 1))
                a.flat[at] = draw(st.sampled_from(_specials(dtype, bound=bound)))
    if upper is not None:
        a = np.minimum(a, np.asarray(upper, dtype))
    return np.array(a, dtype, order="C")  # (np.ascontiguousarray would make a 0-d array 1-d)


LAYOUTS = ["C", "F", "strided", "negative", "byteswapped", "unaligned", "permuted"]


@st.composite
def laid_out(draw, a, layouts=LAYOUTS):
    """The values of the C-contiguous `a` in a drawn memory layout (a fresh array or view)."""
    kind = draw(st.sampled_from(layouts))
    if kind == "C" or a.ndim == 0:
        return a.copy()
    if kind == "F":
        return np.asfortranarray(a)
    if kind == "strided":
        step = draw(st.integers(2, 3))
        big = np.full(tuple(step * s + 1 for s in a.shape), 7, a.dtype)
        view = big[tuple(slice(1, None, step) for _ in a.shape)][tuple(slice(0, s) for s in a.shape)]
        view[...] = a
        return view
    if kind == "negative":
        axes = tuple(d for d in range(a.ndim) if draw(st.booleans())) or tuple(range(a.ndim))
        return np.flip(np.flip(a, axes).copy(), axes)
    if kind == "byteswapped":
        return a.astype(a.dtype.newbyteorder())
    if kind == "unaligned":
        buf = np.zeros(a.nbytes + 1, np.uint8)
        u = buf[1:].view(a.dtype).reshape(a.shape) if a.size else a.copy()
        u[...] = a
        return u
    # permuted: a C array of the axes in another order, viewed back in the original order
    perm = draw(st.permutations(range(a.ndim)))
    return np.ascontiguousarray(a.transpose(perm)).transpose(np.argsort(perm))


@st.composite
def axes_for(draw, ndim):
    """An int axis (either sign) mostly; now and then a tuple of axes or None."""
    choice = draw(st.integers(0, 9))
    if choice <= 6 or ndim == 0:
        return draw(st.integers(-ndim, ndim - 1))
    if choice == 7:
        return None
    chosen = draw(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True))
    return tuple(d - ndim if draw(st.booleans()) else d for d in chosen)


def _axes_tuple(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    items = axis if isinstance(axis, tuple) else (axis,)
    return tuple(sorted(a % ndim for a in items))


# ------------------------------------------------------------------------------ comparison


def _assert_matches(got, want, tol, dtype, what="result", like=None):
    """NaN and infinities where `like` has them (the reference evaluated in the kernel's own
    dtype: a float32 exp that underflows to 0 before multiplying an infinity gives NaN there,
    as it does in the kernel); elsewhere finite and within `tol` of the float64 oracle `want`.
    Without `like`, the oracle rounded to `dtype` gives the special values."""
    got = np.asarray(got)
    want = np.asarray(want, np.float64)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    g = got.astype(np.float64)
    with np.errstate(over="ignore"):
        special = (want.astype(dtype) if like is None else np.asarray(like)).astype(np.float64)
    assert special.shape == want.shape
    bad = np.isnan(g) != np.isnan(special)
    assert not bad.any(), (
        f"{what}: NaN mismatch at {np.argwhere(bad)[:5].tolist()}: got {g[bad][:5]}, want {special[bad][:5]}")
    bad = np.isinf(special) & (g != special)
    assert not bad.any(), (
        f"{what}: infinity mismatch at {np.argwhere(bad)[:5].tolist()}: got {g[bad][:5]}, want {special[bad][:5]}")
    fin = np.isfinite(special) & np.isfinite(want)
    # ... plus the rounding of the result to its dtype: half an ulp, u |want| above the
    # normal range, eta / 2 below it.
    with np.errstate(all="ignore"):
        tol = np.asarray(tol, np.float64) + np.abs(want) * _u(dtype) + _sub(dtype)
    tol = np.broadcast_to(tol, want.shape)
    with np.errstate(invalid="ignore"):
        err = np.abs(g - want)
        bad = fin & ~((g == want) | (err <= tol))
    if bad.any():
        i = tuple(int(k) for k in np.argwhere(bad)[0])
        raise AssertionError(
            f"{what}: {int(bad.sum())} element(s) outside the error bound; first at {i}: "
            f"got {g[i]!r}, want {want[i]!r}, |error| {err[i]:.3e} > bound {tol[i]:.3e}"
        )


def _snapshot(a):
    """Bytes of `a` and of the whole buffer it views."""
    root = a
    while isinstance(root.base, np.ndarray):
        root = root.base
    return a.tobytes(), root.tobytes()


# ------------------------------------------------------------------------------ activations

FORWARD = ["softmax", "log_softmax", "logsumexp"]


def _forward_tolerance(name, x64, axes, want, dtype, keepdims):
    u, eta = _u(dtype), _sub(dtype)
    with np.errstate(all="ignore"):
        m = np.max(x64, axis=axes, keepdims=True, initial=-np.inf)
        n = math.prod(x64.shape[a] for a in axes)
        s = _sum_error(n, dtype)
        if name == "softmax":
            d = np.abs(x64 - m)
            return (K * (d + 2) + s) * np.abs(want) * u + K * eta * (n + 2)
        if name == "log_softmax":
            d = np.abs(x64 - m)
            return u * (K * (np.abs(want) + d + 2) + s) + K * eta * (n + 2)
        mm = m if keepdims else np.squeeze(m, axis=axes)
        return u * (K * (np.abs(want) + np.abs(mm) + 2) + s) + K * eta * (n + 2)


@pytest.mark.parametrize("name", FORWARD)
@given(data=st.data())
def test_forward_matches_reference(name, data):
    dtype = data.draw(st.sampled_from(FLOATS), label="dtype")
    shape = data.draw(shapes(), label="shape")
    axis = data.draw(axes_for(len(shape)), label="axis")
    base = data.draw(float_arrays(shape, dtype), label="values")
    x = data.draw(laid_out(base), label="x")
    kw = {"keepdims": data.draw(st.booleans(), label="keepdims")} if name == "logsumexp" else {}
    before = _snapshot(x)

    got = getattr(fs, name)(x, axis=axis, **kw)
    assert _snapshot(x) == before, "the input was written"
    x64 = base.astype(np.float64)
    want = getattr(ref, name)(x64, axis=axis, **kw)
    assert np.asarray(got).dtype == np.dtype(dtype)
    axes = _axes_tuple(axis, len(shape))
    like = getattr(ref, name)(base, axis=axis, **kw)
    tol = _forward_tolerance(name, x64, axes, np.asarray(want), dtype, kw.get("keepdims"))
    _assert_matches(got, want, tol, dtype, like=like)

    # out=: a fresh array in a drawn layout, or the input itself (in place) -- the same bits.
    mode = data.draw(st.sampled_from(["fresh", "laid_out", "in_place"]), label="out")
    expected = np.array(got)
    if mode == "in_place":
        if name == "logsumexp" or not (x.dtype == np.dtype(dtype) and x.flags.writeable):
            return
        out = x
    elif mode == "fresh":
        out = np.full(expected.shape, 5, dtype)
    else:
        out = data.draw(laid_out(np.full(expected.shape, 5, dtype), ["F", "strided", "negative", "permuted"]),
                        label="out layout")
    result = getattr(fs, name)(x, axis=axis, out=out, **kw)
    assert result is out
    np.testing.assert_array_equal(out, expected, strict=True)


@pytest.mark.parametrize("name", ["softmax_backward", "log_softmax_backward"])
@given(data=st.data())
def test_backward_matches_reference(name, data):
    g_dtype = data.draw(st.sampled_from(FLOATS), label="grad_output dtype")
    y_dtype = data.draw(st.sampled_from([g_dtype, g_dtype, np.float32, np.float64]), label="output dtype")
    res_dtype = np.result_type(g_dtype, y_dtype)
    shape = data.draw(shapes(), label="shape")
    axis = data.draw(axes_for(len(shape)), label="axis")
    # Magnitudes B for which no intermediate can overflow, even off by the error bound
    # (n c(n) B**3 stays below the dtype's maximum): the special values are NaN and +-inf.
    bound = 1e10 if res_dtype == np.float32 else 1e90
    def bound_for(dtype):  # (a float32 input of a float64 result: its own range)
        return min(bound, 1e30) if dtype == np.float32 else bound

    g_base = data.draw(float_arrays(shape, g_dtype, bound=bound_for(g_dtype)), label="grad_output values")
    if name == "softmax_backward":
        y_base = data.draw(float_arrays(shape, y_dtype, bound=bound_for(y_dtype)), label="output values")
    else:  # exp(output) must not overflow either: log-probabilities are <= 0; allow up to 20
        y_base = data.draw(float_arrays(shape, y_dtype, bound=bound_for(y_dtype), upper=20.0),
                           label="output values")
    g = data.draw(laid_out(g_base), label="grad_output")
    y = data.draw(laid_out(y_base), label="output")
    before = _snapshot(g), _snapshot(y)

    got = getattr(fs, name)(g, y, axis=axis)
    assert (_snapshot(g), _snapshot(y)) == before, "an input was written"
    assert got.dtype == res_dtype
    # The kernel computes in the promoted dtype: the oracle starts from the same values.
    g64 = g_base.astype(res_dtype).astype(np.float64)
    y64 = y_base.astype(res_dtype).astype(np.float64)
    want = getattr(ref, name)(g64, y64, axis=axis)
    axes = _axes_tuple(axis, len(shape))
    n = math.prod(shape[a] for a in axes)
    u, c, eta = _u(res_dtype), _sum_error(n, res_dtype), _sub(res_dtype)
    with np.errstate(all="ignore"):
        if name == "softmax_backward":
            s = np.sum(g64 * y64, axis=axes, keepdims=True)
            sa = np.sum(np.abs(g64 * y64), axis=axes, keepdims=True)
            # (magnitudes first: K u |y| would underflow for a subnormal y)
            tol = np.abs(y64) * (K * (np.abs(g64) + np.abs(s)) + c * sa) * u + K * eta * (1 + np.abs(y64) * (n + 2))
        else:
            s = np.sum(g64, axis=axes, keepdims=True)
            sa = np.sum(np.abs(g64), axis=axes, keepdims=True)
            # (exp(y) may itself be subnormal: its absolute error eta is multiplied by S)
            tol = ((K * np.abs(g64) + np.exp(y64) * (K * np.abs(s) * (2 + np.abs(y64)) + c * sa)) * u
                   + K * eta * (1 + np.abs(s) + np.exp(y64) * (n + 2)))
    like = getattr(ref, name)(g_base.astype(res_dtype), y_base.astype(res_dtype), axis=axis)
    _assert_matches(got, want, tol, res_dtype, like=like)

    if data.draw(st.booleans(), label="in place"):
        target = g if data.draw(st.booleans(), label="into grad_output") else y
        if target.dtype == res_dtype and target.flags.writeable:
            expected = got.copy()
            assert getattr(fs, name)(g if target is not g else target, y if target is not y else target,
                                     axis=axis, out=target) is target
            np.testing.assert_array_equal(target, expected, strict=True)


# ------------------------------------------------------------------------------ losses


@st.composite
def loss_problems(draw, func):
    """(kwargs for the call, float64 oracle kwargs, dtype, details for the bounds)."""
    dtype = draw(st.sampled_from(FLOATS), label="dtype")
    lead = draw(shapes(min_dims=0, max_dims=2, max_size=400), label="lead shape")
    n_rows = math.prod(lead)
    n_classes = draw(st.one_of(st.integers(0, 40), st.sampled_from([127, 128, 129, 1025])), label="classes")
    n_classes = min(n_classes, max(MAX_SIZE // max(n_rows, 1), 1))
    shape = lead + (n_classes,)
    # Magnitudes for which the exact loss cannot overflow (sum_c |a_c x_c| stays finite): a
    # loss that overflows is +inf in the reference's order of summation and NaN in the
    # kernel's and torch's, which is no error of either.
    logits = draw(float_arrays(shape, dtype, bound=1e30 if dtype == np.float32 else 1e300), label="logits")

    kind = "index"
    if func != "nll_loss" and draw(st.booleans(), label="probabilities"):
        kind = "probabilities"
    kw = {}
    if kind == "index":
        choices = [-100, -1, n_classes + 3] + ([draw(st.integers(0, n_classes - 1))] if n_classes else [])
        ignore_index = draw(st.sampled_from(choices), label="ignore_index")
        seed = draw(st.integers(0, 2**32 - 1))
        rng = np.random.default_rng(seed)
        t = rng.integers(0, max(n_classes, 1), lead) if n_classes else np.full(lead, ignore_index)
        p_ignored = draw(st.sampled_from([0.0, 0.0, 0.3, 1.0]))
        t = np.where(rng.random(lead) < p_ignored, ignore_index, t).astype(np.int64)
        t_dtype = draw(st.sampled_from([np.int64, np.int32, np.int16, np.uint16, np.uint8]), label="target dtype")
        if t.size and (t.min() < np.iinfo(t_dtype).min or t.max() > np.iinfo(t_dtype).max):
            t_dtype = np.int64
        target = np.asarray(t.astype(t_dtype))
        if ignore_index != -100 or draw(st.booleans()):
            kw["ignore_index"] = ignore_index
        else:
            ignore_index = -100
    else:
        ignore_index = -100
        q_kind = draw(st.sampled_from(["softmax", "uniform", "onehot", "arbitrary"]), label="probability kind")
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        if q_kind == "softmax":
            q = ref.softmax(rng.standard_normal(shape) * 3) if n_classes else np.zeros(shape)
        elif q_kind == "uniform":
            q = rng.random(shape)
        elif q_kind == "onehot":
            q = np.zeros(shape)
            if n_classes:
                np.put_along_axis(q, rng.integers(0, n_classes, lead + (1,)), 1.0, axis=-1)
        else:
            q = rng.standard_normal(shape) * 2
        target = np.ascontiguousarray(q.astype(dtype))
    if draw(st.booleans(), label="weighted"):
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        w = rng.choice([0.0, 0.5, 1.0, 2.0, 3.7], size=n_classes).astype(dtype)
        kw["weight"] = draw(laid_out(w, ["C", "strided", "negative", "byteswapped"]), label="weight")
        w64 = w.astype(np.float64)
    else:
        w64 = np.ones(n_classes)
    kw["reduction"] = draw(st.sampled_from(["mean", "sum", "none"]), label="reduction")
    eps = 0.0
    if func != "nll_loss":
        eps = draw(st.sampled_from([0.0, 0.0, 0.1, 1.0, 0.37]), label="label_smoothing")
        if eps or draw(st.booleans()):
            kw["label_smoothing"] = eps
    x = draw(laid_out(logits), label="logits layout")
    tgt = draw(laid_out(target, ["C", "strided", "negative", "byteswapped", "F"]), label="target layout") \
        if target.ndim else target
    oracle_kw = dict(kw)
    if "weight" in kw:
        oracle_kw["weight"] = w64
    oracle_target = target.astype(np.float64) if kind == "probabilities" else target
    own_kw = dict(kw)
    if "weight" in kw:
        own_kw["weight"] = w
    details = dict(kind=kind, logits=logits.astype(np.float64), target=target, w=w64, eps=eps,
                   ignore_index=ignore_index, reduction=kw["reduction"], own=(logits, own_kw))
    return x, tgt, kw, oracle_target, oracle_kw, dtype, details


def _rows(a):
    """`a` as (rows, classes)."""
    return a.reshape(math.prod(a.shape[:-1]), a.shape[-1])


def _coefficients(details):
    """|a| (N, C) and valid (N,): each row's loss is sum_c a_c (-log p_c); valid marks the rows
    not ignored.  The magnitudes are those of the terms a_c is computed from (w (1 - eps) |q|
    + w eps / C for probabilities), since those, not a_c, set the rounding error of a_c when
    the terms cancel (q < 0)."""
    x = _rows(details["logits"])
    n_rows, n_classes = x.shape
    w, eps = details["w"], details["eps"]
    if details["kind"] == "probabilities":
        q = details["target"].astype(np.float64).reshape(x.shape)
        return w * ((1 - eps) * np.abs(q) + eps / max(n_classes, 1)), np.ones(n_rows, bool)
    t = details["target"].astype(np.int64).reshape(-1)
    valid = (t >= 0) & (t < n_classes) & (t != details["ignore_index"])
    a = np.zeros(x.shape)
    if n_classes:
        a[valid] = (eps / n_classes) * w
        rows = np.flatnonzero(valid)
        a[rows, t[valid]] += (1 - eps) * w[t[valid]]
    return a, valid


def _loss_bounds(details, dtype, nll):
    """Per-row loss bounds (N,), and the float64 values needed for the reductions."""
    x = _rows(details["logits"])
    n_classes = x.shape[-1]
    u, c, eta = _u(dtype), _sum_error(n_classes, dtype), _sub(dtype)
    a, valid = _coefficients(details)
    with np.errstate(all="ignore"):
        if nll:
            terms = np.where(a == 0, 0.0, np.abs(a * x))
            return K * u * terms.sum(axis=-1) + K * eta * 2, a, valid, None, None
        m = np.max(x, axis=-1, keepdims=True, initial=-np.inf)
        d = np.abs(x - m)
        logp = ref.log_softmax(x, axis=-1)
        # log p_c (its own error, the log of a sum), the product, then the sum over the classes
        per = np.where(a == 0, 0.0, np.abs(a) * (K * (2 * np.abs(logp) + d + 2) + c * (1 + np.abs(logp))))
        under = K * eta * (n_classes + 2) * (np.abs(a).sum(axis=-1) + 1)
        return u * per.sum(axis=-1) + under, a, valid, logp, d


@pytest.mark.parametrize("func", ["nll_loss", "cross_entropy", "cross_entropy_with_grad"])
@given(data=st.data())
def test_losses_match_reference(func, data):
    x, target, kw, oracle_target, oracle_kw, dtype, details = data.draw(loss_problems(func), label="problem")
    nll = func == "nll_loss"
    first = "log_probs" if nll else "logits"
    arrays = [a for a in (x, target, kw.get("weight")) if isinstance(a, np.ndarray)]
    before = [_snapshot(a) for a in arrays]

    result = getattr(fs, func)(**{first: x}, target=target, **kw)
    assert [_snapshot(a) for a in arrays] == before, "an input was written"
    want = getattr(ref, func)(**{first: details["logits"]}, target=oracle_target, **oracle_kw)
    own_logits, own_kw = details["own"]
    like = getattr(ref, func)(**{first: own_logits}, target=details["target"], **own_kw)
    if func == "cross_entropy_with_grad":
        (loss, grad), (want_loss, want_grad), (like_loss, like_grad) = result, want, like
    else:
        loss, want_loss, like_loss = result, want, like
    assert np.asarray(loss).dtype == np.dtype(dtype)
    row_bound, a, valid, logp, d = _loss_bounds(details, dtype, nll)
    note(f"kind={details['kind']} reduction={details['reduction']} eps={details['eps']}")
    _check_rows_and_reduction(loss, want_loss, like_loss, row_bound, details, dtype, a, valid, nll)

    if func != "cross_entropy_with_grad":
        return
    assert grad.dtype == np.dtype(dtype) and grad.shape == x.shape
    scale = 1.0
    if details["reduction"] == "mean":
        denom = _denominator(details, valid)
        scale = np.inf if denom == 0 else 1.0 / denom
    n_classes = x.shape[-1]
    with np.errstate(all="ignore"):
        p = np.exp(logp)
        sum_abs_a = np.abs(a).sum(axis=-1, keepdims=True)
        spread = np.where(p == 0, 0.0, p * sum_abs_a * (K * (d + 4) + 2 * _sum_error(n_classes, dtype)))
        tol = abs(scale) * (_u(dtype) * (spread + K * np.abs(a)) + K * _sub(dtype) * (sum_abs_a + 1) * (n_classes + 2))
    tol = tol.reshape(x.shape)
    if details["reduction"] == "mean":
        with np.errstate(all="ignore"):
            tol = tol + _denominator_error(valid.size) * np.abs(np.asarray(want_grad, np.float64))
    _assert_matches(grad, want_grad, tol, dtype, "grad", like=like_grad)

    # out=: a fresh array in a drawn layout, or the logits themselves -- the same bits.
    mode = data.draw(st.sampled_from(["laid_out", "logits"]), label="out")
    expected_loss, expected_grad = np.array(loss), grad.copy()
    if mode == "logits":
        if not (x.dtype == np.dtype(dtype) and x.flags.writeable):
            return
        out = x
    else:
        out = data.draw(laid_out(np.full(x.shape, 5, dtype), ["C", "F", "strided", "negative"]), label="out layout")
    loss2, grad2 = fs.cross_entropy_with_grad(logits=x, target=target, **kw, out=out)
    assert grad2 is out
    np.testing.assert_array_equal(out, expected_grad, strict=True,
                                  err_msg=f"out={mode}: a different gradient than without out=")
    np.testing.assert_array_equal(np.asarray(loss2), expected_loss, strict=True,
                                  err_msg=f"out={mode}: a different loss than without out=")


def _denominator_error(n_rows):
    """Relative distance of the twins' "mean" denominators: each sums n_rows float64 weights
    in its own order (the kernel left to right, the reference pairwise), which is exact to
    (n_rows - 1) 2**-53 relative in any order (non-negative weights), plus log2 for the other."""
    return (n_rows + _c(n_rows)) * 2.0**-53


def _denominator(details, valid):
    n_rows = valid.size
    if details["kind"] == "probabilities":
        return float(n_rows) if details["logits"].size else 0.0
    t = details["target"].astype(np.int64).reshape(-1)
    return float(np.sum(details["w"][t[valid]]))


@pytest.mark.parametrize("n_classes", [127, 128, 300], ids=["127_classes", "128_classes", "300_classes"])
def test_probability_target_sums_follow_the_lane_model(n_classes):
    """float32 cross-entropy with probability targets and label smoothing, on logits of
    magnitudes 1e-9..3e8 (terms of very different sizes in every block sum), within the row
    bounds of _sum_error's model (16 additions per lane, then a tree) -- whatever the compiler
    does with the loops.  A build that did not vectorise the block sums (UBSan's instrumentation)
    added a block's 128 terms one after another and failed this test at all three sizes (up to
    1.4 times the bound) until the kernel kept its lanes explicit."""
    rng = np.random.default_rng(20261128 + n_classes)
    shape = (400, n_classes)
    x = (rng.choice([-1, 1], size=shape) * 10.0 ** rng.uniform(-9, 8.5, size=shape)).astype(np.float32)
    q = np.zeros(shape, np.float32)
    q[np.arange(shape[0]), rng.integers(0, n_classes, shape[0])] = 1
    kw = {"reduction": "none", "label_smoothing": 0.1}
    details = {"kind": "probabilities", "logits": x.astype(np.float64), "target": q.astype(np.float64),
               "w": np.ones(n_classes), "eps": 0.1, "ignore_index": -100, "reduction": "none", "own": (x, kw)}
    loss, _ = fs.cross_entropy_with_grad(x, q, **kw)
    want, _ = ref.cross_entropy_with_grad(x.astype(np.float64), q.astype(np.float64), **kw)
    like, _ = ref.cross_entropy_with_grad(x, q, **kw)
    row_bound, a, valid, _, _ = _loss_bounds(details, np.float32, False)
    _check_rows_and_reduction(loss, want, like, row_bound, details, np.float32, a, valid, False)


def _check_rows_and_reduction(loss, want, like, row_bound, details, dtype, a, valid, nll):
    """The loss against the oracle: per row for "none"; for "sum" and "mean" the row bounds add
    up, plus the float64 summation of the rows (both twins sum in float64: K 2**-53 c(N) per
    unit of sum |L_r|), the denominator's own float64 sum (relative, the same size) and the
    final rounding to the result dtype."""
    reduction = details["reduction"]
    lead = details["logits"].shape[:-1]
    want = np.asarray(want, np.float64)
    if reduction == "none":
        with np.errstate(all="ignore"):
            tol = row_bound.reshape(lead) + _u(dtype) * np.abs(want)
        _assert_matches(loss, want, tol, dtype, "loss", like=like)
        return
    with np.errstate(all="ignore"):
        n_rows = row_bound.size
        r64 = 2.0**-53
        summed = np.sum(row_bound) + K * r64 * _c(n_rows) * _row_loss_magnitudes(details, a, nll)
        if reduction == "sum":
            tol = summed
        else:
            denom = _denominator(details, valid)
            tol = summed / denom + _denominator_error(n_rows) * np.abs(want) if denom else np.inf
        tol = tol + _u(dtype) * np.abs(want)
    _assert_matches(loss, want, tol, dtype, "loss", like=like)


def _row_loss_magnitudes(details, a, nll):
    """sum_r |L_r| <= sum_r sum_c |a_c| |log p_c| (float64)."""
    x = _rows(details["logits"])
    with np.errstate(all="ignore"):
        logp = x if nll else ref.log_softmax(x, axis=-1)
        return float(np.sum(np.where(a == 0, 0.0, np.abs(a * logp))))


# ------------------------------------------------------------------------------ SGD


@st.composite
def hyperparameters(draw):
    momentum = draw(st.sampled_from([0.0, 0.0, 0.5, 0.9, 0.99, 1.5]), label="momentum")
    dampening = draw(st.sampled_from([0.0, 0.0, 0.1, 0.5, -0.5, 1.0]), label="dampening")
    nesterov = momentum > 0 and dampening == 0 and draw(st.booleans(), label="nesterov")
    return dict(
        lr=draw(st.sampled_from([0.0, 1e-3, 0.1, 1.0, 7.5]), label="lr"),
        momentum=momentum,
        dampening=dampening,
        weight_decay=draw(st.sampled_from([0.0, 0.0, 1e-4, 0.5]), label="weight_decay"),
        nesterov=nesterov,
        maximize=draw(st.booleans(), label="maximize"),
    )


def _sgd_bound(p, grad, v, h, u, e_p, e_v, first, eta):
    """Propagate the twins' distance bounds (e_p, e_v) through one update (see the module
    docstring); p, grad and v are the reference's float64 values before the step; eta is the
    absolute rounding error of a subnormal result."""
    mu, damp, wd, lr = h["momentum"], h["dampening"], h["weight_decay"], h["lr"]
    with np.errstate(all="ignore"):
        t = np.abs(grad) + wd * np.abs(p) if wd else np.abs(grad)  # (0 * NaN would leak)
        e_g = 2 * u * t + 2 * eta + wd * e_p if wd else np.zeros_like(t)
        if mu:
            if first:
                vn, e_v2 = t, e_g
            else:
                vn = mu * np.abs(v) + abs(1 - damp) * t
                e_v2 = 3 * u * vn + 3 * eta + mu * e_v + abs(1 - damp) * e_g
            if h["nesterov"]:
                big_g = t + mu * vn
                e_big = e_g + mu * e_v2 + 2 * u * big_g + 2 * eta
            else:
                big_g, e_big = vn, e_v2
        else:
            big_g, e_big, e_v2 = t, e_g, e_v
        e_p2 = e_p + 2 * u * (np.abs(p) + lr * big_g) + 2 * eta + lr * e_big
    return e_p2, e_v2


@given(data=st.data())
def test_sgd_step_matches_reference(data):
    dtype = data.draw(st.sampled_from(FLOATS), label="dtype")
    shape = data.draw(shapes(min_dims=0, max_dims=3), label="shape")
    h = data.draw(hyperparameters(), label="hyperparameters")
    bound = 1e15 if dtype == np.float32 else 1e100  # no overflow inside a line of the update
    p0 = data.draw(float_arrays(shape, dtype, bound=bound), label="param")
    g0 = data.draw(float_arrays(shape, dtype, bound=bound), label="grad")
    v0 = data.draw(float_arrays(shape, dtype, bound=bound), label="velocity")
    # param and velocity: C-contiguous views in the middle of larger buffers (writes outside
    # them would show); grad in any layout.
    n = p0.size
    p_buf, v_buf = np.full(n + 8, 3, dtype), np.full(n + 8, 3, dtype)
    p, v = p_buf[4:4 + n].reshape(shape), v_buf[4:4 + n].reshape(shape)
    p[...], v[...] = p0, v0
    g = data.draw(laid_out(g0), label="grad layout")
    g_before = _snapshot(g)
    velocity = v if h["momentum"] else data.draw(st.sampled_from([None, v]), label="unused velocity")
    v_buf_before = v_buf.tobytes()

    assert fs.sgd_step(p, g, velocity, **h) is None
    assert _snapshot(g) == g_before, "grad was written"
    assert np.array_equal(p_buf[:4], np.full(4, 3, dtype)) and np.array_equal(p_buf[4 + n:], np.full(4, 3, dtype))
    if not h["momentum"]:
        assert v_buf.tobytes() == v_buf_before, "velocity was touched with momentum 0"
    assert np.array_equal(v_buf[:4], np.full(4, 3, dtype)) and np.array_equal(v_buf[4 + n:], np.full(4, 3, dtype))

    rp, rv = p0.copy(), v0.copy()
    ref.sgd_step(rp, g0.copy(), rv if h["momentum"] else None, **h)
    u = _u(dtype)
    e_p, e_v = _sgd_bound(p0.astype(np.float64), g0.astype(np.float64), v0.astype(np.float64), h, u,
                          np.zeros(shape), np.zeros(shape), first=False, eta=_sub(dtype))
    _assert_matches(p, rp, 2 * e_p, dtype, "param")
    if h["momentum"]:
        _assert_matches(v, rv, 2 * e_v, dtype, "velocity")


@given(data=st.data())
def test_sgd_optimizer_matches_reference(data):
    """SGD over several parameters in groups, a few steps (the first seeds the momentum),
    gradients sometimes skipped, a learning-rate change between steps."""
    n_params = data.draw(st.integers(1, 4), label="parameters")
    specs = [(data.draw(st.sampled_from(FLOATS)), data.draw(shapes(min_dims=0, max_dims=2, max_size=600)))
             for _ in range(n_params)]
    defaults = data.draw(hyperparameters(), label="defaults")
    split = data.draw(st.integers(0, n_params), label="group split")
    params0 = [data.draw(float_arrays(s, d, bound=1e6), label=f"param {i}") for i, (d, s) in enumerate(specs)]
    fs_params = [p.copy() for p in params0]
    ref_params = [p.copy() for p in params0]

    def groups(ps):
        if split in (0, n_params):
            return ps
        return [{"params": ps[:split]}, {"params": ps[split:], **group_override}]

    group_override = data.draw(hyperparameters(), label="group 1")
    opt = fs.SGD(groups(fs_params), **defaults)
    twin = ref.SGD(groups(ref_params), **defaults)
    group_of = [0 if (split in (0, n_params) or i < split) else 1 for i in range(n_params)]
    hypers = [defaults, {**defaults, **group_override}]
    e_p = [np.zeros(s) for _, s in specs]
    e_v = [np.zeros(s) for _, s in specs]
    started = [False] * n_params
    for step in range(data.draw(st.integers(1, 3), label="steps")):
        grads = []
        for i, (d, s) in enumerate(specs):
            if data.draw(st.integers(0, 4), label="skip") == 0:
                grads.append(None)
            else:
                grads.append(data.draw(float_arrays(s, d, bound=1e6), label=f"grad {i}"))
        before = [p.astype(np.float64) for p in ref_params]
        v_before = _velocities(twin, n_params)
        opt.step([None if gi is None else gi.copy() for gi in grads])
        twin.step(grads)
        for i in range(n_params):
            if grads[i] is None:
                continue
            h = hypers[group_of[i]]
            u = _u(specs[i][0])
            v_prev = v_before[i] if v_before[i] is not None else np.zeros(specs[i][1])
            e_p[i], e_v[i] = _sgd_bound(before[i], grads[i].astype(np.float64), v_prev, h, u, e_p[i], e_v[i],
                                        first=not started[i], eta=_sub(specs[i][0]))
            if h["momentum"]:
                started[i] = True
        v_fs, v_ref = _velocities(opt, n_params), _velocities(twin, n_params)
        for i in range(n_params):
            _assert_matches(fs_params[i], ref_params[i], 2 * e_p[i], specs[i][0], f"param {i} after step {step}")
            assert (v_fs[i] is None) == (v_ref[i] is None)
            if v_fs[i] is not None:
                _assert_matches(v_fs[i], v_ref[i], 2 * e_v[i], specs[i][0], f"velocity {i} after step {step}")
        if data.draw(st.booleans(), label="change lr"):
            new_lr = data.draw(st.sampled_from([0.0, 0.01, 2.0]))
            for o in (opt, twin):
                o.param_groups[0]["lr"] = new_lr
            hypers[0] = {**hypers[0], "lr": new_lr}
            if split in (0, n_params):
                hypers[1] = hypers[0]


def _velocities(opt, n):
    state = opt.state_dict()["state"]
    return [state[i]["momentum_buffer"].astype(np.float64) if i in state else None for i in range(n)]


# ------------------------------------------------------------------------------ fixed cases
# Regions the draws reach only now and then, checked every run.


@pytest.mark.parametrize("rows", [1, 20], ids=["one_row", "row_block"])
@pytest.mark.parametrize("name", FORWARD)
def test_float32_results_in_the_subnormal_range(name, rows):
    """exp(x - m) between float32's smallest subnormal and smallest normal (x - m in about
    [-103.9, -87.4]): the result is a float32 subnormal, within the same bound as above."""
    t = np.linspace(-104.5, -86.0, 75, dtype=np.float32)
    base = np.zeros((rows, t.size, 3), np.float32)
    base[:, :, 1] = t
    base[:, :, 2] = -1.0
    base = base.reshape(-1, 3)
    got = getattr(fs, name)(base)
    x64 = base.astype(np.float64)
    want = getattr(ref, name)(x64)
    like = getattr(ref, name)(base)
    tol = _forward_tolerance(name, x64, (1,), np.asarray(want), np.float32, False)
    _assert_matches(got, want, tol, np.float32, like=like)


def _unaligned_copy(a):
    buf = np.zeros(a.nbytes + 1, np.uint8)
    u = buf[1:].view(a.dtype).reshape(a.shape)
    u[...] = a
    assert not u.flags.aligned and u.flags.c_contiguous
    return u


@pytest.mark.parametrize("dtype", FLOATS, ids=["float32", "float64"])
def test_unaligned_arrays_give_the_aligned_results(dtype):
    """C-contiguous arrays whose data is not aligned to the itemsize (np.frombuffer at an odd
    offset): as inputs and as out=, every function gives the bits it gives on aligned memory.
    (The kernels dereference typed pointers: without an alignment check before them this is
    undefined behaviour, which the sanitizer build reports; see tools/sanitize.sh.)"""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((40, 7)).astype(dtype)
    g = rng.standard_normal((40, 7)).astype(dtype)
    t = rng.integers(0, 7, 40)
    q = fs.softmax(rng.standard_normal((40, 7)).astype(dtype))
    w = rng.random(7).astype(dtype)
    ux, ug, ut, uq, uw = (_unaligned_copy(a) for a in (x, g, t, q, w))
    for name in FORWARD:
        want = getattr(fs, name)(x)
        np.testing.assert_array_equal(getattr(fs, name)(ux), want, strict=True)
        out = _unaligned_copy(np.zeros_like(want))
        assert getattr(fs, name)(x, out=out) is out
        np.testing.assert_array_equal(out, want, strict=True)
    for name in ["softmax_backward", "log_softmax_backward"]:
        want = getattr(fs, name)(g, x)
        np.testing.assert_array_equal(getattr(fs, name)(ug, ux), want, strict=True)
        out = _unaligned_copy(np.zeros_like(want))
        assert getattr(fs, name)(g, x, out=out) is out
        np.testing.assert_array_equal(out, want, strict=True)
    for target, utarget in ((t, ut), (q, uq)):
        want_loss, want_grad = fs.cross_entropy_with_grad(x, target, weight=w)
        loss, grad = fs.cross_entropy_with_grad(ux, utarget, weight=uw)
        np.testing.assert_array_equal(grad, want_grad, strict=True)
        assert loss == want_loss
        out = _unaligned_copy(np.zeros_like(x))
        loss, grad = fs.cross_entropy_with_grad(x, target, weight=w, out=out)
        assert grad is out and loss == want_loss
        np.testing.assert_array_equal(out, want_grad, strict=True)
        assert fs.cross_entropy(ux, utarget, weight=uw) == fs.cross_entropy(x, target, weight=w)
    assert fs.nll_loss(ux, ut, weight=uw) == fs.nll_loss(x, t, weight=w)
    # sgd_step: an unaligned gradient is read (copied first); parameters must be aligned.
    p, up = x.copy(), x.copy()
    fs.sgd_step(p, g, lr=0.1)
    fs.sgd_step(up, ug, lr=0.1)
    np.testing.assert_array_equal(up, p, strict=True)
