"""SPEC review: one test per SPEC sentence that the other test files do not already pin down.

Each case compares against an independent oracle where one exists (torch, SciPy, a float64
NumPy evaluation of SPEC's formula, or SPEC's own table) and runs on the compiled API and,
where SPEC says the reference twin behaves the same, on ``fastsoftmax.reference`` too.

Sections follow SPEC: 1 common rules (dtypes, axes, out=, warnings, threads),
2 activations (special-value table on every kernel path, backward formulas, SciPy's and
torch's own test cases), 3 losses (torch parity for N-d / float16 / every target dtype /
torch's own label-smoothing tests), 4 optimizer (torch.optim.SGD with hyperparameters changed
between steps, pickled state), 5 reference twin (signatures as SPEC writes them).
"""

from __future__ import annotations

import math
import os
import pickle
import subprocess
import sys
import warnings
import zlib

import numpy as np
import pytest
from numpy.exceptions import AxisError

import fastsoftmax as fs
from fastsoftmax import reference as ref

IMPLS = [pytest.param(fs, id="kernel"), pytest.param(ref, id="reference")]
FORWARD = ["softmax", "log_softmax", "logsumexp"]
BACKWARD = ["softmax_backward", "log_softmax_backward"]
ROWWISE = ["softmax", "log_softmax"]
DTYPES = [pytest.param(np.float32, id="f32"), pytest.param(np.float64, id="f64")]
PKG_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fs.__file__)))


def _call(impl, name, x, **kw):
    f = getattr(impl, name)
    if name in BACKWARD:
        return f(x, x, **kw)
    return f(x, **kw)


def _no_warnings(fn):
    """Run fn with every warning turned into an error; return its result."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fn()


def _run_python(code, **env):
    """Run `code` in a fresh interpreter (fastsoftmax importable) and return its stdout."""
    full_env = dict(os.environ)
    full_env.pop("OMP_NUM_THREADS", None)
    full_env.update(env)
    full_env["PYTHONPATH"] = PKG_ROOT + os.pathsep + full_env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


# =============================================================================== section 1
# ---- dtype rules ----------------------------------------------------------------------

BAD_DTYPES = [
    pytest.param(np.longdouble, id="longdouble"),
    pytest.param(np.complex64, id="complex64"),
    pytest.param(np.complex128, id="complex128"),
    pytest.param(object, id="object"),
    pytest.param("U3", id="str"),
    pytest.param("S3", id="bytes"),
    pytest.param("M8[s]", id="datetime64"),
    pytest.param("m8[s]", id="timedelta64"),
]


def _bad_array(dtype, shape=(2, 3)):
    return np.ones(shape).astype(dtype)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("bad", BAD_DTYPES)
@pytest.mark.parametrize("which", ["grad_output", "output"])
@pytest.mark.parametrize("name", BACKWARD)
def test_backward_bad_dtype_is_type_error_naming_the_dtype(impl, name, which, bad):
    good = np.ones((2, 3))
    badarr = _bad_array(bad)
    args = (badarr, good) if which == "grad_output" else (good, badarr)
    with pytest.raises(TypeError) as info:
        getattr(impl, name)(*args)
    assert str(badarr.dtype) in str(info.value)


def _loss_bad_dtype_cases():
    for arg in ["logits", "weight", "probability_target"]:
        for bad in BAD_DTYPES:
            if arg == "probability_target" and np.dtype(bad.values[0]).kind not in "fc":
                continue  # only a float (or complex) array is read as probabilities
            yield pytest.param(arg, bad.values[0], id=f"{arg}-{bad.id}")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("arg, bad", list(_loss_bad_dtype_cases()))
def test_loss_bad_dtype_is_type_error_naming_the_dtype(impl, arg, bad):
    x = np.zeros((3, 4))
    t = np.array([0, 1, 2])
    kw = {}
    if arg == "logits":
        x = _bad_array(bad, (3, 4))
        named = x.dtype
    elif arg == "weight":
        kw["weight"] = _bad_array(bad, (4,))
        named = kw["weight"].dtype
    else:
        t = _bad_array(bad, (3, 4))
        named = t.dtype
    with pytest.raises(TypeError) as info:
        impl.cross_entropy(x, t, **kw)
    assert str(named) in str(info.value)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    "g_dtype, y_dtype, want",
    [
        pytest.param(np.int8, np.float16, np.float64, id="int8+f16->f64"),
        pytest.param(np.bool_, np.float32, np.float64, id="bool+f32->f64"),
        pytest.param(np.float16, np.float16, np.float16, id="f16+f16->f16"),
        pytest.param(np.float16, np.float32, np.float32, id="f16+f32->f32"),
        pytest.param(np.uint64, np.int8, np.float64, id="u64+i8->f64"),
        pytest.param(">f4", "<f4", np.float32, id="swapped_f32"),
    ],
)
@pytest.mark.parametrize("name", BACKWARD)
def test_backward_promotion(impl, name, g_dtype, y_dtype, want):
    rng = np.random.default_rng(0)
    g = (rng.standard_normal((3, 5)) * 3).astype(g_dtype)
    y = fs.softmax(rng.standard_normal((3, 5))).astype(y_dtype) if name == "softmax_backward" else \
        fs.log_softmax(rng.standard_normal((3, 5))).astype(y_dtype)
    res = getattr(impl, name)(g, y)
    assert type(res) is np.ndarray and res.dtype == want
    oracle = getattr(ref, name)(g.astype(np.float64), y.astype(np.float64))
    tol = {np.float16: 5e-3, np.float32: 1e-5, np.float64: 1e-12}[np.dtype(want).type]
    np.testing.assert_allclose(res.astype(np.float64), oracle, rtol=tol, atol=tol)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype, want", [
    pytest.param(np.float16, np.float16, id="f16"),
    pytest.param(np.int32, np.float64, id="int32"),
    pytest.param(np.bool_, np.float64, id="bool"),
    pytest.param(">f4", np.float32, id="swapped_f32"),
    pytest.param(">i8", np.float64, id="swapped_i8"),
])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_loss_result_dtypes_and_scalar_types(impl, dtype, want, reduction):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((4, 3)) * 3).astype(dtype)
    t = np.array([0, 2, 1, 1])
    loss, grad = impl.cross_entropy_with_grad(x, t, reduction=reduction)
    assert grad.dtype == want and grad.shape == x.shape and type(grad) is np.ndarray
    if reduction == "mean":
        assert isinstance(loss, np.generic) and loss.dtype == want
    else:
        assert type(loss) is np.ndarray and loss.dtype == want
    assert np.asarray(impl.nll_loss(x, t, reduction=reduction)).dtype == want


# ---- axis rules -------------------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name", FORWARD + BACKWARD)
def test_zero_d_input_is_axis_error(impl, name):
    with pytest.raises(AxisError):
        _call(impl, name, np.float64(1.0))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("axis", [2, -3], ids=["axis2", "axis-3"])
@pytest.mark.parametrize("name", BACKWARD)
def test_backward_invalid_axis_is_axis_error(impl, name, axis):
    with pytest.raises(AxisError):
        getattr(impl, name)(np.ones((2, 3)), np.ones((2, 3)), axis=axis)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name", FORWARD + BACKWARD)
@pytest.mark.parametrize("axis", [np.int64(0), np.int32(-2), np.intp(1)], ids=["i64_0", "i32_-2", "intp_1"])
def test_numpy_integer_axis(impl, name, axis):
    x = np.random.default_rng(2).standard_normal((3, 4))
    want = _call(impl, name, x, axis=int(axis))
    np.testing.assert_array_equal(_call(impl, name, x, axis=axis), want)


# ---- out= rules ----------------------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_logsumexp_out_is_the_input_itself(impl, dtype):
    # keepdims over a length-1 axis: the result has the input's shape, so out=x is in place.
    x = np.random.default_rng(3).standard_normal((5, 1)).astype(dtype)
    want = x.copy()
    res = impl.logsumexp(x, axis=-1, keepdims=True, out=x)
    assert res is x
    np.testing.assert_array_equal(x, want)


@pytest.mark.parametrize("impl", IMPLS)
def test_logsumexp_out_strided_view(impl):
    # torch's test_logsumexp: out is a column of a wider array.
    rng = np.random.default_rng(4)
    a = rng.standard_normal((5, 4))
    a[0, 0] = 1000.0
    b = np.zeros((5, 2))
    c = b[:, 0]
    res = impl.logsumexp(a, 1, out=c)
    assert res is c
    sp = pytest.importorskip("scipy.special")
    np.testing.assert_allclose(b[:, 0], sp.logsumexp(a, 1), rtol=1e-13)
    assert not b[:, 1].any()


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shift", [-1, 1], ids=["out_before", "out_after"])
@pytest.mark.parametrize("which", ["grad_output", "output"])
@pytest.mark.parametrize("name", BACKWARD)
def test_backward_out_partially_overlapping_an_input(impl, name, which, shift):
    rng = np.random.default_rng(5)
    R, C = 6, 7
    g0 = rng.standard_normal((R, C))
    y0 = fs.softmax(rng.standard_normal((R, C)))
    want = getattr(ref, name)(g0, y0)
    buf = np.zeros(R * C + C)
    lo, hi = (buf[C:], buf[:R * C]) if shift < 0 else (buf[:R * C], buf[C:])
    inp = lo.reshape(R, C)
    out = hi.reshape(R, C)
    if which == "grad_output":
        inp[...] = g0
        res = getattr(impl, name)(inp, y0, out=out)
    else:
        inp[...] = y0
        res = getattr(impl, name)(g0, inp, out=out)
    assert res is out
    np.testing.assert_allclose(out, want, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name", BACKWARD)
def test_backward_all_three_arguments_the_same_array(impl, name):
    y0 = fs.softmax(np.random.default_rng(6).standard_normal((4, 9)))
    want = getattr(ref, name)(y0.copy(), y0.copy())
    y = y0.copy()
    assert getattr(impl, name)(y, y, out=y) is y
    np.testing.assert_allclose(y, want, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("impl", IMPLS)
def test_cross_entropy_out_is_the_probability_target(impl):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((5, 6))
    p = rng.random((5, 6))
    p /= p.sum(-1, keepdims=True)
    want_loss, want_grad = ref.cross_entropy_with_grad(x, p.copy(), label_smoothing=0.1)
    loss, grad = impl.cross_entropy_with_grad(x, p, label_smoothing=0.1, out=p)
    assert grad is p
    np.testing.assert_allclose(grad, want_grad, rtol=1e-13, atol=1e-16)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-13)


# ---- nothing written that is not documented as written -------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
def test_inputs_are_never_written(impl):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((20, 40))
    y = fs.softmax(x)
    t = rng.integers(0, 40, 20)
    t[3] = 7
    p = fs.softmax(rng.standard_normal((20, 40)))
    w = rng.random(40) + 0.5
    arrays = [x, y, t, p, w]
    before = [a.copy() for a in arrays]
    for name in FORWARD:
        getattr(impl, name)(x)
        getattr(impl, name)(x, axis=0)
    for name in BACKWARD:
        getattr(impl, name)(x, y)
        getattr(impl, name)(y, y)
    impl.nll_loss(x, t, weight=w, ignore_index=7)
    impl.cross_entropy_with_grad(x, t, weight=w, ignore_index=7, label_smoothing=0.3)
    impl.cross_entropy_with_grad(x, p, weight=w, label_smoothing=0.3)
    for a, b in zip(arrays, before):
        np.testing.assert_array_equal(a, b)


# ---- no RuntimeWarnings ------------------------------------------------------------------

F16 = np.float16
WARNING_CASES = [
    pytest.param(lambda m: m.log_softmax(np.array([[6e4, -6e4, 0.0]], F16)), id="log_softmax_f16_result_overflows"),
    pytest.param(lambda m: m.log_softmax(np.array([[6e4], [-6e4], [0.0]], F16), axis=0),
                 id="log_softmax_f16_axis0_result_overflows"),
    pytest.param(lambda m: m.softmax_backward(np.array([6e4, -6e4, 0.0], F16), np.array([6e4, -6e4, 0.0], F16)),
                 id="softmax_backward_f16_result_overflows"),
    pytest.param(lambda m: m.log_softmax_backward(np.array([6e4, 6e4, 6e4], F16), np.zeros(3, F16)),
                 id="log_softmax_backward_f16_result_overflows"),
    pytest.param(lambda m: m.nll_loss(np.array([[-1.0, -2.0]], F16), np.array([1]), weight=np.array([1e6, 1e6])),
                 id="nll_loss_f16_weight_conversion_overflows"),
    pytest.param(lambda m: m.cross_entropy(np.array([[1.0, 2.0]], F16), np.array([1]), weight=np.array([1e6, 1e6])),
                 id="cross_entropy_f16_weight_conversion_overflows"),
    # Special values in every dtype (these already pass; they guard the fix of the ones above).
    pytest.param(lambda m: m.softmax(np.array([[np.inf, -np.inf, np.nan], [-np.inf, -np.inf, -np.inf]], F16)),
                 id="softmax_f16_specials"),
    pytest.param(lambda m: m.logsumexp(np.array([[np.inf, -np.inf], [-np.inf, -np.inf]], np.float32), axis=0),
                 id="logsumexp_f32_specials_axis0"),
    pytest.param(lambda m: m.softmax_backward(np.array([np.inf, 0.0]), np.array([0.0, np.nan])),
                 id="softmax_backward_f64_specials"),
    pytest.param(lambda m: m.cross_entropy_with_grad(np.array([[-np.inf, 0.0], [np.nan, 1.0]]), np.array([0, 1]),
                                                     weight=np.array([0.0, 1.0]), label_smoothing=0.5),
                 id="cross_entropy_with_grad_specials"),
]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", WARNING_CASES)
def test_no_runtime_warnings(impl, case):
    _no_warnings(lambda: case(impl))


# ---- threads --------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 3])
def test_omp_num_threads_sets_the_default(n):
    out = _run_python("import fastsoftmax as fs; print(fs.get_num_threads())", OMP_NUM_THREADS=str(n))
    assert out == str(n)


def test_threadpoolctl_limit_is_reported_and_lifted():
    pytest.importorskip("threadpoolctl")
    out = _run_python(
        "import fastsoftmax as fs, threadpoolctl\n"
        "a = fs.get_num_threads()\n"
        "with threadpoolctl.threadpool_limits(limits=1, user_api='openmp'):\n"
        "    b = fs.get_num_threads()\n"
        "print(a, b, fs.get_num_threads())",
        OMP_NUM_THREADS="3",
    )
    assert out == "3 1 3"


def test_set_num_threads_holds_in_every_python_thread():
    # set_num_threads is a process-wide setting: a kernel called from another Python thread
    # (a data loader, a server worker) must see the same limit.  OpenMP's
    # omp_set_num_threads only changes the calling thread's ICV, so with OMP_NUM_THREADS=1
    # a worker thread reports (and uses) 1 after set_num_threads(2).
    out = _run_python(
        "import fastsoftmax as fs, threading\n"
        "fs.set_num_threads(2)\n"
        "seen = []\n"
        "th = threading.Thread(target=lambda: seen.append(fs.get_num_threads()))\n"
        "th.start(); th.join()\n"
        "print(fs.get_num_threads(), seen[0])",
        OMP_NUM_THREADS="1",
    )
    assert out == "2 2"


# =============================================================================== section 2
# ---- special-value table, on every kernel path -----------------------------------------------

ROW_KINDS = ["nan", "nan_and_infs", "posinf", "posinf_and_neginf", "all_neginf", "some_neginf", "huge"]
PATHS = {  # name: (rows, row length, axis of the special row)
    "one_short_row": (1, 5, -1),
    "block_of_short_rows": (20, 5, -1),  # >16 rows of <=32: the row-block kernels
    "one_long_row": (1, 1500, -1),  # >1000: the long-row kernels
    "many_long_rows": (48, 1500, -1),  # >65536 elements: threaded
    "non_last_axis": (20, 37, 0),
}


def _special_row(kind, n, dtype, rng):
    row = (rng.standard_normal(n) * 3).astype(dtype)
    if kind == "nan":
        row[n - 1] = np.nan
    elif kind == "nan_and_infs":
        row[0], row[n // 2], row[n - 1] = np.inf, np.nan, -np.inf
    elif kind == "posinf":
        row[n // 2] = np.inf
    elif kind == "posinf_and_neginf":
        row[0], row[n - 1] = -np.inf, np.inf
    elif kind == "all_neginf":
        row[:] = -np.inf
    elif kind == "some_neginf":
        row[::2] = -np.inf
        row[n - 1] = -np.inf
    elif kind == "huge":
        row[0], row[n - 1] = 1e30, -1e30
        row[n // 2] = 1e30 * (1 - 2.0 ** -20)
    return row


def _table_oracle(kind, row, name):
    """SPEC's table; finite cases in float64 from the formula."""
    n = row.size
    if kind in ("nan", "nan_and_infs"):
        return np.full(n, np.nan) if name != "logsumexp" else np.float64(np.nan)
    if kind in ("posinf", "posinf_and_neginf"):
        return np.full(n, np.nan) if name != "logsumexp" else np.float64(np.inf)
    if kind == "all_neginf":
        return np.full(n, np.nan) if name != "logsumexp" else np.float64(-np.inf)
    r = row.astype(np.float64)
    m = r.max()
    with np.errstate(all="ignore"):
        # ln sum exp(r - m) as log1p of the terms other than one maximum: no cancellation.
        at_max = r == m
        lse = m + np.log1p(np.sum(np.exp(r[~at_max] - m)) + (at_max.sum() - 1))
        if name == "softmax":
            return np.exp(r - lse)
        if name == "log_softmax":
            return r - lse
    return lse


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("kind", ROW_KINDS)
@pytest.mark.parametrize("name", FORWARD)
def test_special_value_table(impl, name, kind, path, dtype):
    rows, n, axis = PATHS[path]
    rng = np.random.default_rng(zlib.crc32(f"{name}-{kind}-{path}".encode()))
    x = (rng.standard_normal((rows, n)) * 3).astype(dtype)
    k = rows // 2
    x[k] = _special_row(kind, n, dtype, rng)
    if axis == 0:
        x = np.ascontiguousarray(x.T)
    res = _no_warnings(lambda: getattr(impl, name)(x, axis=axis))
    assert res.dtype == dtype
    got = res[k] if name == "logsumexp" or axis == -1 else res[:, k]
    want = _table_oracle(kind, x[k] if axis == -1 else x[:, k], name)
    rtol = 2e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(got, want, rtol=rtol, atol=0, equal_nan=True)
    if kind == "some_neginf" and name != "logsumexp":
        at = np.isneginf(x[k] if axis == -1 else x[:, k])
        assert np.all(got[at] == (0 if name == "softmax" else -np.inf))
    # The other rows are not touched by the special one.
    others = [i for i in range(rows) if i != k]
    if others:
        sub = x[others] if axis == -1 else x[:, others]
        want_others = getattr(ref, name)(sub, axis=axis)
        got_others = res[others] if (name == "logsumexp" or axis == -1) else res[:, others]
        np.testing.assert_allclose(got_others, want_others, rtol=1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64], ids=["f16", "f32", "f64"])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_length_zero_rows(impl, dtype, axis):
    x = np.zeros((3, 0, 2), dtype)
    for name in ROWWISE:
        r = getattr(impl, name)(x, axis=axis)
        assert r.shape == x.shape and r.dtype == dtype
    lse = impl.logsumexp(x, axis=axis)
    want_shape = tuple(s for i, s in enumerate(x.shape) if i != axis % 3)
    assert lse.shape == want_shape and lse.dtype == dtype
    if axis == 1:
        assert np.all(np.isneginf(lse))


# ---- backward: SPEC's formulas, special values included ---------------------------------------


def _formula(name, g, y):
    with np.errstate(all="ignore"):
        if name == "softmax_backward":
            return y * (g - np.sum(g * y, axis=-1, keepdims=True))
        return g - np.exp(y) * np.sum(g, axis=-1, keepdims=True)


def _backward_cases():
    inf, nan = np.inf, np.nan
    rows = [
        ("nan_in_grad", [1.0, nan, 2.0], [0.2, 0.3, 0.5]),
        ("nan_in_output", [1.0, 0.5, 2.0], [0.2, nan, 0.5]),
        ("inf_in_grad", [1.0, inf, 2.0], [0.2, 0.3, 0.5]),
        ("inf_in_grad_zero_output", [inf, 1.0, 2.0], [0.0, 0.5, 0.5]),
        ("opposite_infs_in_grad", [inf, -inf, 2.0], [0.2, 0.3, 0.5]),
        ("neginf_output", [1.0, 2.0, 3.0], [-inf, 0.0, -1.0]),
        ("posinf_output", [1.0, 2.0, 3.0], [inf, 0.0, -1.0]),
        ("huge_grads", [1e30, 1.0, 2.0], [0.25, 0.25, 0.5]),
        # g*y overflows in the formula (+inf and -inf in the sum: NaN); a fused multiply-add
        # does not round the product and gives +-inf instead.
        ("product_overflow_adjacent", [1.0, 2.0], [inf, "-big"]),
        ("product_overflow_same_lane", [1.0] + [0.0] * 15 + [2.0], [inf] + [0.0] * 15 + ["-big"]),
    ]
    for case_id, g, y in rows:
        for name in BACKWARD:
            for dtype, big in [(np.float32, -3e38), (np.float64, -1e308)]:
                gy = [np.array([big if v == "-big" else v for v in a], dtype) for a in (g, y)]
                yield pytest.param(name, gy[0], gy[1], id=f"{name}-{case_id}-{np.dtype(dtype).name}")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name, g, y", list(_backward_cases()))
@pytest.mark.parametrize("rows", [1, 20], ids=["one_row", "20_rows"])
def test_backward_special_values_follow_the_formula(impl, name, g, y, rows):
    G = np.tile(g, (rows, 1))
    Y = np.tile(y, (rows, 1))
    want = _formula(name, G, Y)
    got = _no_warnings(lambda: getattr(impl, name)(G, Y))
    assert got.dtype == g.dtype
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want))
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want))
    fin = np.isfinite(want)
    np.testing.assert_allclose(got[fin], want[fin], rtol=1e-6 if g.dtype == np.float32 else 1e-13, atol=1e-30)


@pytest.mark.parametrize("name", BACKWARD)
def test_backward_special_values_match_torch(name):
    torch = pytest.importorskip("torch")
    inf = np.inf
    g = np.array([[1.0, 2.0], [1.0, inf], [-inf, inf], [1.0, 2.0]])
    y = np.array([[inf, -1e308], [0.5, 0.5], [0.5, 0.5], [-inf, 0.0]])
    got = getattr(fs, name)(g, y)
    if name == "softmax_backward":
        want = torch.ops.aten._softmax_backward_data(torch.tensor(g), torch.tensor(y), 1, torch.float64)
    else:
        want = torch.ops.aten._log_softmax_backward_data(torch.tensor(g), torch.tensor(y), 1, torch.float64)
    np.testing.assert_array_equal(got, want.numpy())


# ---- SciPy's test_logsumexp.py, on the API as SPEC defines it ----------------------------------


def test_scipy_logsumexp_cases():
    np.testing.assert_equal(fs.logsumexp(np.array([])), -np.inf)
    a = np.arange(200.0)
    np.testing.assert_allclose(fs.logsumexp(a), np.log(np.sum(np.exp(a))), rtol=1e-13)
    np.testing.assert_allclose(fs.logsumexp(np.array([1000.0, 1000.0])), 1000.0 + math.log(2.0), rtol=1e-15)
    np.testing.assert_allclose(fs.logsumexp(np.full((1000,), 10000)), 10000.0 + math.log(1000), rtol=1e-15)
    x = np.array([1e-40] * 1000000)
    logX = np.stack([np.log(x), np.log(x)])
    X = np.stack([x, x])
    np.testing.assert_allclose(np.exp(fs.logsumexp(logX, axis=None)), X.sum(), rtol=1e-12)
    np.testing.assert_allclose(np.exp(fs.logsumexp(logX, axis=0)), X.sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(np.exp(fs.logsumexp(logX, axis=1)), X.sum(axis=1), rtol=1e-12)
    for v in [np.inf, -np.inf, np.nan]:
        r = fs.logsumexp(np.array([v]))
        assert isinstance(r, np.float64)
        np.testing.assert_equal(r, v)
    np.testing.assert_equal(fs.logsumexp(np.array([-np.inf, -np.inf])), -np.inf)
    a = np.array([[1e10, 1e-10], [-1e10, -np.inf]])
    np.testing.assert_allclose(fs.logsumexp(a, axis=-1), [1e10, -1e10], rtol=1e-15)
    np.testing.assert_allclose(fs.logsumexp(a, axis=-1, keepdims=True), [[1e10], [-1e10]], rtol=1e-15)
    r = fs.logsumexp(a, axis=(-1, -2))
    assert isinstance(r, np.float64) and r == 1e10
    assert fs.logsumexp(np.ones((1, 2, 3, 4)), axis=2).shape == (1, 2, 4)
    assert fs.logsumexp(np.ones((1, 2, 3, 4)), axis=(1, 3)).shape == (1, 3)
    # test_xp_invalid_input / test_array_like
    assert fs.logsumexp(1, axis=None) == fs.logsumexp(np.atleast_1d(1))
    assert fs.logsumexp([1, 2, 3]) == fs.logsumexp(np.asarray([1, 2, 3]))
    np.testing.assert_allclose(fs.logsumexp([1000, 1000]), 1000.0 + math.log(2.0), rtol=1e-15)
    # test_gh18295
    np.testing.assert_allclose(fs.logsumexp(np.array([0.0, -40.0])), np.logaddexp(0.0, -40.0), rtol=1e-15)
    # test_no_writeback
    a = np.array([5.0, 4.0])
    fs.logsumexp(a)
    np.testing.assert_array_equal(a, [5.0, 4.0])


@pytest.mark.parametrize("dtype, want", [
    pytest.param(np.float32, np.float32, id="float32"),
    pytest.param(np.float64, np.float64, id="float64"),
    pytest.param(np.int32, np.float64, id="int32"),
    pytest.param(np.int64, np.float64, id="int64"),
])
def test_scipy_logsumexp_dtypes(dtype, want):
    r = fs.logsumexp(np.asarray([1000.0, 1000.0], dtype=dtype))
    assert isinstance(r, np.generic) and r.dtype == want
    np.testing.assert_allclose(r, 1000.0 + math.log(2.0), rtol=1e-6 if want == np.float32 else 1e-15)


def test_scipy_softmax_and_log_softmax_cases():
    close = dict(rtol=1e-13, atol=0)
    np.testing.assert_allclose(fs.softmax(np.array([1000.0, 0.0, 0.0, 0.0])), [1.0, 0, 0, 0], **close)
    np.testing.assert_allclose(fs.softmax(np.array([1.0, 1.0])), [0.5, 0.5], **close)
    np.testing.assert_allclose(fs.softmax(np.array([0.0, 1.0])), np.array([1, np.e]) / (1 + np.e), **close)
    expected = np.array([0.03205860328008499, 0.08714431874203256, 0.23688281808991013, 0.6439142598879722])
    x = np.arange(4, dtype=np.float64)
    np.testing.assert_allclose(fs.softmax(x), expected, **close)
    np.testing.assert_allclose(fs.softmax(x + 100), expected, **close)
    np.testing.assert_allclose(fs.softmax(x.reshape(2, 2), axis=None), expected.reshape(2, 2), **close)
    np.testing.assert_allclose(fs.softmax(np.array([[1000.0, 0.0], [1000.0, 0.0]]), axis=0), [[0.5, 0.5], [0.5, 0.5]],
                               **close)
    np.testing.assert_allclose(fs.softmax(np.array([[1000.0, 0.0], [1000.0, 0.0]]), axis=1), [[1, 0], [1, 0]], **close)
    x = np.array([[-25.0, 0.0, 25.0, 50.0], [1.0, 325.0, 749.0, 750.0]])
    expected = np.array([[2.678636961770877e-33, 1.9287498479371314e-22, 1.3887943864771144e-11, 0.999999999986112],
                         [0.0, 1.9444526359919372e-185, 0.2689414213699951, 0.7310585786300048]])
    np.testing.assert_allclose(fs.softmax(x, axis=1), expected, **close)
    np.testing.assert_allclose(fs.softmax(x.T, axis=0), expected.T, **close)
    np.testing.assert_allclose(fs.softmax(x.reshape(2, 2, 2), axis=(1, 2)), expected.reshape(2, 2, 2), **close)
    np.testing.assert_allclose(fs.softmax(np.array([1000, 0, 0, 0])), [1.0, 0, 0, 0], **close)
    np.testing.assert_allclose(fs.softmax(1000, axis=None), np.asarray(1.0), **close)
    np.testing.assert_allclose(fs.softmax([1000, 0, 0, 0]), [1.0, 0, 0, 0], **close)
    np.testing.assert_allclose(fs.log_softmax(np.array([1000.0, 1.0])), [0.0, -999.0], **close)
    np.testing.assert_allclose(fs.log_softmax(np.array([1000, 1])), [0.0, -999.0], **close)
    np.testing.assert_allclose(fs.log_softmax(1.0, axis=None), 0.0, **close)
    np.testing.assert_allclose(fs.log_softmax([1000, 1]), [0.0, -999.0], **close)
    expect = np.array([-3.4401896985611953, -2.4401896985611953, -1.4401896985611953, -0.44018969856119533])
    for offset in (0, 100):
        np.testing.assert_allclose(fs.log_softmax(np.arange(4.0) + offset), expect, **close)
    np.testing.assert_allclose(fs.log_softmax(np.arange(4.0).reshape(2, 2), axis=None), expect.reshape(2, 2), **close)
    x = np.array([[1000.0, 1.0], [1000.0, 1.0]])
    np.testing.assert_allclose(fs.log_softmax(x, axis=0), np.log(0.5) * np.ones((2, 2)), **close)
    np.testing.assert_allclose(fs.log_softmax(x, axis=1), [[0.0, -999.0], [0.0, -999.0]], **close)
    x2 = np.arange(8, dtype=np.float64).reshape(2, 4)
    e2 = np.tile(expect, (2, 1))
    np.testing.assert_allclose(fs.log_softmax(x2, axis=1), e2, **close)
    np.testing.assert_allclose(fs.log_softmax(x2.T, axis=0), e2.T, **close)
    np.testing.assert_allclose(fs.log_softmax(x2.reshape(2, 2, 2), axis=(1, 2)), e2.reshape(2, 2, 2), **close)


@pytest.mark.parametrize("dtype, offset", [
    pytest.param(np.float16, 1.5e3, id="f16"), pytest.param(np.float32, 1e7, id="f32"),
    pytest.param(np.float64, 1e7, id="f64"),
])
@pytest.mark.parametrize("shape", [(16, 4), (4, 1536), (40, 3000)], ids=["16x4", "4x1536", "40x3000"])
def test_torch_log_softmax_big(dtype, offset, shape):
    # torch's test_log_softmax_big: a constant offset, exactly representable, changes nothing.
    small = np.random.default_rng(10).integers(0, 100, shape).astype(dtype)
    big = (small + dtype(offset)).astype(dtype)
    np.testing.assert_array_equal(fs.log_softmax(big), fs.log_softmax(small))
    np.testing.assert_array_equal(fs.softmax(big), fs.softmax(small))


# =============================================================================== section 3

REDUCTIONS = ["mean", "sum", "none"]


def _torch_ce(torch, x, t, w, kind, **kw):
    F = torch.nn.functional
    xt = torch.tensor(np.moveaxis(x, -1, 1) if x.ndim > 2 else x, requires_grad=True)
    if kind == "probabilities" and x.ndim > 2:
        tt = torch.tensor(np.moveaxis(t, -1, 1).copy())
    else:
        tt = torch.tensor(np.asarray(t))
    lt = F.cross_entropy(xt, tt, weight=None if w is None else torch.tensor(w), **kw)
    lt.sum().backward()
    g = xt.grad.numpy()
    return lt.detach().numpy(), (np.moveaxis(g, 1, -1) if x.ndim > 2 else g)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("ls", [0.0, 0.3], ids=["ls0", "ls0.3"])
@pytest.mark.parametrize("weighted", [False, True], ids=["nw", "w"])
@pytest.mark.parametrize("kind, ii", [
    pytest.param("index", -100, id="index-ignore_neg"),
    pytest.param("index", 2, id="index-ignore_class"),
    pytest.param("probabilities", -100, id="probabilities"),
])
def test_four_d_class_last_matches_torch(kind, ii, weighted, ls, reduction):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(12)
    shape = (2, 3, 4, 5)
    x = rng.standard_normal(shape) * 2
    if kind == "index":
        t = rng.integers(0, 5, shape[:-1])
        t.reshape(-1)[::4] = ii
    else:
        t = rng.random(shape)
    w = rng.random(5) + 0.2 if weighted else None
    kw = dict(ignore_index=ii, reduction=reduction, label_smoothing=ls)
    loss, grad = fs.cross_entropy_with_grad(x, t, weight=w, **kw)
    want_loss, want_grad = _torch_ce(torch, x, t, w, kind, **kw)
    assert np.shape(loss) == want_loss.shape
    np.testing.assert_allclose(loss, want_loss, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-12, atol=1e-14)
    if kind == "index" and ls == 0.0:
        nll = fs.nll_loss(fs.log_softmax(x), t, weight=w, ignore_index=ii, reduction=reduction)
        np.testing.assert_allclose(nll, want_loss, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kind", ["index", "probabilities"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_float16_matches_torch_in_float32(kind, reduction):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(13)
    x = (rng.standard_normal((40, 17)) * 3).astype(np.float16)
    t = rng.integers(0, 17, 40) if kind == "index" else rng.random((40, 17)).astype(np.float16)
    w = (rng.random(17) + 0.2).astype(np.float16)
    loss, grad = fs.cross_entropy_with_grad(x, t, weight=w, reduction=reduction, label_smoothing=0.2)
    assert grad.dtype == np.float16 and np.asarray(loss).dtype == np.float16
    want_loss, want_grad = _torch_ce(torch, x.astype(np.float32), t.astype(np.float32) if kind != "index" else t,
                                     w.astype(np.float32), kind, reduction=reduction, label_smoothing=0.2)
    np.testing.assert_allclose(np.asarray(loss, np.float32), want_loss, rtol=2e-3, atol=1e-3)
    np.testing.assert_allclose(grad.astype(np.float32), want_grad, rtol=3e-3, atol=2e-4)


TARGET_DTYPES = [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64,
                 ">i2", ">u4", ">i8"]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("target_dtype", TARGET_DTYPES, ids=[np.dtype(d).str for d in TARGET_DTYPES])
@pytest.mark.parametrize("ignore_index", [-100, 3], ids=["ignore-100", "ignore3"])
def test_every_integer_target_dtype_matches_int64(impl, target_dtype, ignore_index):
    rng = np.random.default_rng(14)
    x = rng.standard_normal((2, 3, 5))
    t = np.array([[0, 4, 3], [2, 3, 1]])
    want = impl.cross_entropy_with_grad(x, t, ignore_index=ignore_index, label_smoothing=0.1, reduction="none")
    got = impl.cross_entropy_with_grad(x, t.astype(target_dtype), ignore_index=ignore_index, label_smoothing=0.1,
                                       reduction="none")
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(impl.nll_loss(x, t.astype(target_dtype), ignore_index=ignore_index),
                                  impl.nll_loss(x, t, ignore_index=ignore_index))


def test_uint8_target_with_ignore_index_255_matches_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(15).standard_normal((5, 3))
    t = np.array([1, 255, 0, 255, 1], np.uint8)
    for reduction in REDUCTIONS:
        want = torch.nn.functional.nll_loss(torch.tensor(x), torch.tensor(t.astype(np.int64)), ignore_index=255,
                                            reduction=reduction).numpy()
        np.testing.assert_allclose(fs.nll_loss(x, t, ignore_index=255, reduction=reduction), want, rtol=1e-14)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("ls", [0.05, 0.15], ids=["ls0.05", "ls0.15"])
@pytest.mark.parametrize("weighted", [False, True], ids=["nw", "w"])
@pytest.mark.parametrize("ii", [-100, -2, 2], ids=["default", "negative", "positive"])
def test_torch_label_smoothing_weight_ignore_indices(impl, reduction, ls, weighted, ii):
    # torch's test_cross_entropy_label_smoothing_weight_ignore_indices.
    torch = pytest.importorskip("torch")
    wgt = np.array([0.3, 0.6]) if weighted else None
    inp1 = np.array([[0.3, 0.4], [1.0, 2.0]])
    inp2 = np.array([[0.3, 0.6], [1.0, 2.0]])
    targ = np.array([ii, 1])
    kw = dict(reduction=reduction, label_smoothing=ls, weight=wgt, ignore_index=ii)
    a = impl.cross_entropy(inp1, targ, **kw)
    np.testing.assert_allclose(a, impl.cross_entropy(inp2, targ, **kw), rtol=1e-14)
    if reduction != "none":
        np.testing.assert_allclose(a, impl.cross_entropy(inp2[1:], targ[1:], **kw), rtol=1e-14)
    want = torch.nn.functional.cross_entropy(
        torch.tensor(inp1), torch.tensor(targ), reduction=reduction, label_smoothing=ls,
        weight=None if wgt is None else torch.tensor(wgt), ignore_index=ii).numpy()
    np.testing.assert_allclose(a, want, rtol=1e-14)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("k", [0, 1, 4])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_torch_label_smoothing_consistent_index_target_and_probs(impl, k, reduction):
    rng = np.random.default_rng(16 + k)
    N, C, ls = 10, 4, 0.15
    other = [int(rng.integers(2, 5)) for _ in range(k)]
    x = rng.standard_normal((N, *other, C))
    t = rng.integers(0, C, (N, *other))
    prob = np.where(np.eye(C)[t] == 1, 1 - ls + ls / C, ls / C)
    l1, g1 = impl.cross_entropy_with_grad(x, prob, reduction=reduction)
    l2, g2 = impl.cross_entropy_with_grad(x, t, reduction=reduction, label_smoothing=ls)
    np.testing.assert_allclose(l1, l2, rtol=1e-7, atol=1e-5)
    np.testing.assert_allclose(g1, g2, rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("ls", [0.0, 0.2], ids=["ls0", "ls0.2"])
@pytest.mark.parametrize("weighted", [False, True], ids=["nw", "w"])
def test_all_ignored_n_d_mean_is_nan_and_grad_zero(impl, ls, weighted):
    x = np.random.default_rng(17).standard_normal((2, 3, 4))
    t = np.full((2, 3), 1)
    w = np.linspace(0.5, 1.5, 4) if weighted else None
    loss, grad = impl.cross_entropy_with_grad(x, t, weight=w, ignore_index=1, label_smoothing=ls)
    assert isinstance(loss, np.float64) and np.isnan(loss)
    assert grad.shape == x.shape and not grad.any()
    assert np.isnan(impl.nll_loss(x, t, weight=w, ignore_index=1))
    assert impl.cross_entropy(x, t, weight=w, ignore_index=1, reduction="sum", label_smoothing=ls) == 0


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_zero_total_weight_matches_torch(impl, reduction):
    # torch's test_nll_loss_total_weight_is_zero (and the same through cross_entropy).
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(18).random((1, 3))
    w = np.zeros(3)
    want = torch.nn.functional.nll_loss(torch.tensor(x), torch.tensor([0]), weight=torch.tensor(w),
                                        reduction=reduction).numpy()
    np.testing.assert_array_equal(impl.nll_loss(x, np.array([0]), weight=w, reduction=reduction), want)
    want_loss, want_grad = _torch_ce(torch, x, np.array([0]), w, "index", reduction=reduction, label_smoothing=0.2)
    loss, grad = impl.cross_entropy_with_grad(x, np.array([0]), weight=w, reduction=reduction, label_smoothing=0.2)
    np.testing.assert_array_equal(loss, want_loss)
    np.testing.assert_array_equal(grad, want_grad)


@pytest.mark.parametrize("impl", IMPLS)
def test_probability_targets_with_no_classes_do_not_crash(impl):
    # torch's test_cross_entropy_loss_zero_div: (5, 0) logits and probabilities.
    x = np.random.default_rng(19).random((5, 0)).astype(np.float32)
    p = np.random.default_rng(20).random((5, 0)).astype(np.float32)
    loss = _no_warnings(lambda: impl.cross_entropy(x, p))
    assert isinstance(loss, np.float32)
    none = impl.cross_entropy(x, p, reduction="none", label_smoothing=0.5)
    np.testing.assert_array_equal(none, np.zeros(5, np.float32))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("func", ["nll_loss", "cross_entropy", "cross_entropy_with_grad"])
@pytest.mark.parametrize("case", [
    pytest.param(dict(target=np.array([[0, 1], [2, 9]]), shape=(2, 2, 4)), id="nd_position"),
    pytest.param(dict(target=np.array([[0, 1], [2, 9]]).T, shape=(2, 2, 4)), id="transposed_target_position"),
    pytest.param(dict(target=np.array([0, 1, 2**63 + 5], np.uint64), shape=(3, 4)), id="uint64_huge"),
    pytest.param(dict(target=np.array([0, -3, 1], np.int8), shape=(3, 4)), id="int8_negative"),
])
def test_index_error_names_value_and_position(impl, func, case):
    t = case["target"]
    x = np.zeros(case["shape"])
    bad = (t < 0) | (t >= 4)
    pos = tuple(int(i) for i in np.argwhere(bad)[0])
    value = t[pos].item()
    with pytest.raises(IndexError) as info:
        getattr(impl, func)(x, t)
    msg = str(info.value)
    assert str(value) in msg and str(pos) in msg


# =============================================================================== section 4


def test_sgd_hyperparameters_changed_between_steps_follow_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(21)
    schedule = [
        dict(momentum=0.0),
        dict(momentum=0.9),  # momentum switched on: the buffer is seeded now
        dict(momentum=0.9, dampening=0.5),
        dict(momentum=0.0, dampening=0.5),  # off: buffer kept, untouched
        dict(momentum=0.9, dampening=0.0, nesterov=True),  # on again: the kept buffer resumes
        dict(momentum=0.5, nesterov=False, maximize=True),
        dict(weight_decay=0.1, maximize=False, lr=0.01),
    ]
    for impl in (fs, ref):
        for dtype in (np.float32, np.float64):
            p = rng.standard_normal((3, 4)).astype(dtype)
            b = rng.standard_normal(5).astype(dtype)
            tp, tb = torch.tensor(p.copy()), torch.tensor(b.copy())
            opt = impl.SGD([{"params": [p]}, {"params": [b], "weight_decay": 0.0}], lr=0.1)
            topt = torch.optim.SGD([{"params": [tp]}, {"params": [tb], "weight_decay": 0.0}], lr=0.1)
            for s in schedule:
                for grp, tgrp in zip(opt.param_groups, topt.param_groups):
                    grp.update(s)
                    tgrp.update(s)
                gp, gb = rng.standard_normal(p.shape).astype(dtype), rng.standard_normal(b.shape).astype(dtype)
                opt.step([gp, gb])
                tp.grad, tb.grad = torch.tensor(gp), torch.tensor(gb)
                topt.step()
                tol = dict(rtol=1e-6, atol=1e-7) if dtype == np.float32 else dict(rtol=1e-13, atol=1e-15)
                np.testing.assert_allclose(p, tp.numpy(), err_msg=f"{impl.__name__} {s}", **tol)
                np.testing.assert_allclose(b, tb.numpy(), err_msg=f"{impl.__name__} {s}", **tol)


@pytest.mark.parametrize("save_impl", IMPLS)
@pytest.mark.parametrize("load_impl", IMPLS)
def test_pickled_state_dict_continues_torchs_trajectory(save_impl, load_impl):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(22)
    hyper = dict(lr=0.05, momentum=0.9, dampening=0.2, weight_decay=0.01)
    p = rng.standard_normal(6)
    tp = torch.tensor(p.copy())
    opt = save_impl.SGD([{"params": [p], "tag": "w"}], **hyper)
    topt = torch.optim.SGD([tp], **hyper)
    grads = [rng.standard_normal(6) for _ in range(6)]
    for g in grads[:3]:
        opt.step([g])
        tp.grad = torch.tensor(g)
        topt.step()
    saved = pickle.loads(pickle.dumps(opt.state_dict()))
    q = p.copy()
    opt2 = load_impl.SGD([{"params": [q]}], lr=1.0)  # other settings: the state brings them
    opt2.load_state_dict(saved)
    assert {k: v for k, v in opt2.param_groups[0].items() if k != "params"} == \
        {k: v for k, v in opt.param_groups[0].items() if k != "params"}
    for g in grads[3:]:
        opt2.step([g])
        tp.grad = torch.tensor(g)
        topt.step()
    np.testing.assert_allclose(q, tp.numpy(), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("make", [
    pytest.param(lambda a: [a, a.reshape(2, 3)], id="reshaped_view"),
    pytest.param(lambda a: [a[:4], a[3:]], id="overlapping_slices"),
    pytest.param(lambda a: [{"params": [a[:3]]}, {"params": [a[2:5]]}], id="across_groups"),
    pytest.param(lambda a: [a.view(np.float32)[:2], a[:1]], id="same_bytes_as_other_dtype"),
])
def test_params_sharing_memory_are_value_error(impl, make):
    a = np.zeros(6)
    with pytest.raises(ValueError):
        impl.SGD(make(a), lr=0.1)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("where", ["defaults", "group", "set_between_steps"])
@pytest.mark.parametrize("key", ["lr", "momentum", "dampening", "weight_decay"])
def test_nan_hyperparameters_rejected(impl, where, key):
    p = np.ones(3)
    before = p.copy()
    base = dict(lr=0.1, momentum=0.9)
    if where == "defaults":
        with pytest.raises(ValueError):
            impl.SGD([p], **{**base, key: float("nan")})
    elif where == "group":
        with pytest.raises(ValueError):
            impl.SGD([{"params": [p], key: float("nan")}], **base)
    else:
        opt = impl.SGD([p], **base)
        opt.step([np.ones(3)])
        before = p.copy()
        opt.param_groups[0][key] = np.float64("nan")
        with pytest.raises(ValueError):
            opt.step([np.ones(3)])
    np.testing.assert_array_equal(p, before)
    if key != "dampening":  # sgd_step ignores dampening only when momentum is 0
        with pytest.raises(ValueError):
            impl.sgd_step(p, np.ones(3), np.zeros(3), **{**base, key: float("nan")})
    with pytest.raises(ValueError):
        impl.sgd_step(p, np.ones(3), np.zeros(3), **{**base, "momentum": 0.9, key: float("nan")})
    np.testing.assert_array_equal(p, before)


# =============================================================================== section 5

SPEC_SIGNATURES = {
    "softmax": "(x, axis=-1, *, out=None)",
    "log_softmax": "(x, axis=-1, *, out=None)",
    "logsumexp": "(x, axis=-1, *, keepdims=False, out=None)",
    "softmax_backward": "(grad_output, output, axis=-1, *, out=None)",
    "log_softmax_backward": "(grad_output, output, axis=-1, *, out=None)",
    "nll_loss": "(log_probs, target, *, weight=None, ignore_index=-100, reduction='mean')",
    "cross_entropy": "(logits, target, *, weight=None, ignore_index=-100, reduction='mean', label_smoothing=0.0)",
    "cross_entropy_with_grad": "(logits, target, *, weight=None, ignore_index=-100, reduction='mean', "
                               "label_smoothing=0.0, out=None)",
    "sgd_step": "(param, grad, velocity=None, *, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, "
                "nesterov=False, maximize=False)",
    "SGD": "(params, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, *, maximize=False)",
}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name", list(SPEC_SIGNATURES))
def test_signature_is_the_one_spec_writes(impl, name):
    import inspect

    assert str(inspect.signature(getattr(impl, name))) == SPEC_SIGNATURES[name]
    assert name in impl.__all__
