"""Every bad input gets the exception SPEC names, a message naming the argument, and changes
nothing (issue 6).

One table, one row per case, over every public array function and the optimizer.  Each row
is run against the compiled API and against its reference twin (``fastsoftmax.reference``):

- the exception's type is exactly the one SPEC names (``AxisError`` for a bad axis,
  ``IndexError`` for a class index out of range, ``TypeError`` for a wrong dtype or a
  non-array where an array is written, ``ValueError`` for shapes, options, read-only
  arrays and hyperparameters);
- the message names the function and the argument (the row's regex);
- every array the call was given -- inputs, ``out``, parameters, gradients, velocities,
  and the whole buffer each of them is a view of -- is byte for byte as it was, and so is
  an optimizer's state (``state_dict()``);
- the twin raises the same exception with the same message.

Rows are built fresh for each run (a row's ``build(impl)`` makes its own arrays), so a row
that wrote into its arguments cannot hide the write from the next one.
"""

from __future__ import annotations

import pickle
import re

import numpy as np
import pytest
from numpy.exceptions import AxisError

import fastsoftmax as fs
from fastsoftmax import reference as ref

IMPLS = [pytest.param(fs, id="fastsoftmax"), pytest.param(ref, id="reference")]

UNARY = ["softmax", "log_softmax", "logsumexp"]
BINARY = ["softmax_backward", "log_softmax_backward"]
LOSSES = ["nll_loss", "cross_entropy", "cross_entropy_with_grad"]
NAN, INF = float("nan"), float("inf")


# ---------------------------------------------------------------------------- array makers


def X(shape=(2, 3), dtype=np.float64, seed=0):
    """Fresh random data (finite) of a shape and dtype."""
    return (np.random.default_rng(seed).standard_normal(shape) * 3).astype(dtype)


def ro(a):
    """`a`, made read-only."""
    a.flags.writeable = False
    return a


def strided(a):
    """The values of `a` as a non-contiguous view of a buffer twice as long on each axis."""
    big = np.full(tuple(2 * n for n in a.shape), 7.0, a.dtype)
    view = big[tuple(slice(None, None, 2) for _ in a.shape)]
    view[...] = a
    return view


def unaligned(n, dtype=np.float64):
    """A writeable float array whose data pointer is not aligned to its itemsize."""
    itemsize = np.dtype(dtype).itemsize
    return np.frombuffer(bytearray(n * itemsize + 1), dtype, n, 1)


def T(n=3, classes=4, seed=1):
    """Valid class indices for (n, classes) logits."""
    return np.random.default_rng(seed).integers(0, classes, n)


def P(shape=(3, 4), dtype=np.float64):
    """Valid probability targets."""
    return np.full(shape, 1.0 / shape[-1], dtype)


# ---------------------------------------------------------------------------- rows


def call(func, *args, **kwargs):
    """A row's build: ``impl.func(*args, **kwargs)`` with each ``fresh`` argument made anew."""

    def build(impl):
        a = [v.make() if isinstance(v, fresh) else v for v in args]
        k = {key: (v.make() if isinstance(v, fresh) else v) for key, v in kwargs.items()}
        return getattr(impl, func), a, k, None

    return build


class fresh:
    """An argument made anew for each run of a row."""

    def __init__(self, make):
        self.make = make


def same(func, make):
    """A row's build whose arguments refer to one another: ``make()`` gives (args, kwargs)."""

    def build(impl):
        a, k = make()
        return getattr(impl, func), list(a), k, None

    return build


def row(func, case_id, build, exc, arg):
    """One case: `build` (see `call`) must raise exactly `exc` with a message that names
    `func` and the argument (`arg`: a plain name, or a regex of a path such as grads[1])."""
    return pytest.param(func, build, exc, arg, id=f"{func}-{case_id}")


def unary(case_id, build_args, exc, arg):
    """The same case for softmax, log_softmax and logsumexp (one row each)."""
    return [row(f, case_id, _bind(f, build_args), exc, arg) for f in UNARY]


def unary_f(case_id, build_args, exc, arg):
    """As `unary`, with `build_args(func)` given the function's name (see `_res`)."""
    return [row(f, case_id, _bind(f, build_args, pass_func=True), exc, arg) for f in UNARY]


def _res(func, shape=(2, 3)):
    """The result shape of `func` on an input of `shape` along the last axis."""
    return shape[:-1] if func == "logsumexp" else shape


def binary(case_id, build_args, exc, arg):
    """The same case for both backward passes (one row each)."""
    return [row(f, case_id, _bind(f, build_args), exc, arg) for f in BINARY]


def losses(case_id, build_args, exc, arg, funcs=LOSSES):
    """The same case for the loss functions (one row each); `build_args(func)` names the
    logits argument 'log_probs' for nll_loss."""
    return [row(f, case_id, _bind(f, build_args, pass_func=True), exc, _arg_for(f, arg)) for f in funcs]


def _arg_for(func, arg):
    return "log_probs" if (func == "nll_loss" and arg == "logits") else arg


def _bind(func, build_args, pass_func=False):
    def make():
        return build_args(func) if pass_func else build_args()

    return same(func, make)


def _logits_kw(func, logits, target, **kw):
    """Keyword arguments of a loss call (logits named log_probs for nll_loss)."""
    name = "log_probs" if func == "nll_loss" else "logits"
    return (), {name: logits, "target": target, **kw}


# ---- SGD rows: built against an optimizer that has already taken two steps --------------


def _params():
    rng = np.random.default_rng(8)
    return [rng.standard_normal((5, 4)), rng.standard_normal(3), rng.standard_normal(6).astype(np.float32)]


def _grads(params, value=0.25):
    return [np.full(p.shape, value, p.dtype) for p in params]


def sgd_step_row(case_id, make, exc, arg):
    """sgd_step(param, grad, velocity, **kw) with ``make() -> (param, grad, velocity, kw)``."""

    def build(impl):
        param, grad, velocity, kw = make()
        return impl.sgd_step, [param, grad, velocity], {"lr": 0.1, **kw}, None

    return row("sgd_step", case_id, build, exc, arg)


def sgd_row(case_id, make, exc, arg):
    """SGD(params, **kw) with ``make() -> (params, kw)``."""

    def build(impl):
        params, kw = make()
        return impl.SGD, [params], {"lr": 0.1, **kw}, None

    return row("SGD", case_id, build, exc, arg)


def step_row(case_id, spoil, exc, arg, momentum=0.9):
    """SGD.step(grads) after two good steps; ``spoil(opt, params, grads) -> grads`` breaks the
    call (a bad gradient, or a bad hyperparameter set in a group between steps)."""

    def build(impl):
        params = _params()
        opt = impl.SGD([{"params": params[:2]}, {"params": params[2:], "weight_decay": 0.0}],
                       lr=0.1, momentum=momentum, weight_decay=1e-3)
        opt.step(_grads(params, 0.5))
        opt.step(_grads(params, -0.25))
        grads = spoil(opt, params, _grads(params))
        return opt.step, [grads], {}, opt

    return row("SGD.step", case_id, build, exc, arg)


def load_row(case_id, corrupt, exc, arg):
    """SGD.load_state_dict(corrupt(a good state dict)) after two steps."""

    def build(impl):
        params = _params()
        opt = impl.SGD([{"params": params[:2]}, {"params": params[2:], "lr": 0.2}], lr=0.1, momentum=0.9)
        opt.step(_grads(params, 0.5))
        good = opt.state_dict()
        opt.step(_grads(params, -0.25))
        return opt.load_state_dict, [corrupt(good)], {}, opt

    return row("SGD.load_state_dict", case_id, build, exc, arg)


def _set_group(k, **values):
    def spoil(opt, params, grads):
        opt.param_groups[k].update(values)
        return grads

    return spoil


def _replace_grad(i, make):
    def spoil(opt, params, grads):
        grads = list(grads)
        grads[i] = make(params[i])
        return grads

    return spoil


# ---------------------------------------------------------------------------- the table

# Unsupported dtypes (SPEC 1: complex, object, string, bytes, datetime, timedelta, longdouble).
BAD_DTYPE_ARRAYS = {
    "complex128": lambda: np.ones((2, 3), np.complex128),
    "complex64": lambda: np.ones((2, 3), np.complex64),
    "object": lambda: np.ones((2, 3), object),
    "str": lambda: np.array([["a", "b", "c"]] * 2),
    "bytes": lambda: np.array([[b"a", b"b", b"c"]] * 2),
    "datetime64": lambda: np.zeros((2, 3), "datetime64[s]"),
    "timedelta64": lambda: np.zeros((2, 3), "timedelta64[s]"),
    "longdouble": lambda: np.ones((2, 3), np.longdouble),
    "list_of_str": lambda: [["a", "b", "c"]] * 2,
    "none": lambda: None,
}

ROWS = []

# ---- softmax, log_softmax, logsumexp ----
for _name, _make in BAD_DTYPE_ARRAYS.items():
    ROWS += unary(f"x_{_name}", lambda m=_make: ((m(),), {}), TypeError, "x")
ROWS += [
    *unary("x_ragged_list", lambda: (([[1.0, 2.0], [3.0]],), {}), ValueError, "x"),
    *unary("x_0d_array", lambda: ((np.array(1.5),), {}), AxisError, "axis"),
    *unary("x_python_scalar", lambda: ((1.5,), {}), AxisError, "axis"),
    *unary("x_numpy_scalar", lambda: ((np.float32(1.5),), {}), AxisError, "axis"),
    *unary("x_0d_array_axis0", lambda: ((np.array(1.5),), {"axis": 0}), AxisError, "axis"),
    *unary("axis_too_large", lambda: ((X(),), {"axis": 2}), AxisError, "axis"),
    *unary("axis_too_negative", lambda: ((X(),), {"axis": -3}), AxisError, "axis"),
    *unary("axis_huge", lambda: ((X(),), {"axis": 2**70}), AxisError, "axis"),
    *unary("axis_huge_negative", lambda: ((X(),), {"axis": -(2**70)}), AxisError, "axis"),
    *unary("axis_numpy_int_too_large", lambda: ((X(),), {"axis": np.int64(5)}), AxisError, "axis"),
    *unary("axis_float32_input_too_large", lambda: ((X(dtype=np.float32),), {"axis": 7}), AxisError, "axis"),
    *unary("axis_float", lambda: ((X(),), {"axis": 1.0}), TypeError, "axis"),
    *unary("axis_str", lambda: ((X(),), {"axis": "1"}), TypeError, "axis"),
    *unary("axis_bool", lambda: ((X(),), {"axis": True}), TypeError, "axis"),
    *unary("axis_list", lambda: ((X(),), {"axis": [0, 1]}), TypeError, "axis"),
    *unary("axis_tuple_repeated", lambda: ((X(),), {"axis": (0, 0)}), ValueError, "axis"),
    *unary("axis_tuple_same_axis_twice", lambda: ((X(),), {"axis": (1, -1)}), ValueError, "axis"),
    *unary("axis_tuple_out_of_range", lambda: ((X(),), {"axis": (0, 2)}), AxisError, "axis"),
    *unary("out_list", lambda: ((X(),), {"out": [[0.0] * 3] * 2}), TypeError, "out"),
    *unary("out_memoryview", lambda: ((X(),), {"out": memoryview(bytearray(48)).cast("d", (2, 3))}),
           TypeError, "out"),
    *unary("out_numpy_scalar", lambda: ((X((3,)),), {"out": np.float64(0.0)}), TypeError, "out"),
    *unary_f("out_wrong_dtype_f32", lambda f: ((X(),), {"out": np.zeros(_res(f), np.float32)}), TypeError, "out"),
    *unary_f("out_wrong_dtype_for_int_input", lambda f: ((np.ones((2, 3), np.int32),), {"out": np.zeros(_res(f), np.float32)}),
           TypeError, "out"),
    *unary_f("out_f32_for_f16_input", lambda f: ((X(dtype=np.float16),), {"out": np.zeros(_res(f), np.float32)}),
           TypeError, "out"),
    *unary_f("out_f64_for_f32_input", lambda f: ((X(dtype=np.float32),), {"out": np.zeros(_res(f), np.float64)}),
           TypeError, "out"),
    *unary_f("out_byteswapped", lambda f: ((X(),), {"out": np.zeros(_res(f), ">f8")}), TypeError, "out"),
    *unary_f("out_int", lambda f: ((X(),), {"out": np.zeros(_res(f), np.int64)}), TypeError, "out"),
    *unary_f("out_read_only_right_shape", lambda f: ((X(),), {"out": ro(np.zeros(_res(f)))}), ValueError, "out"),
    *unary("out_wrong_shape_transposed", lambda: ((X(),), {"out": np.zeros((3, 2))}), ValueError, "out"),
    *unary("out_wrong_shape_broadcastable", lambda: ((X(),), {"out": np.zeros((1, 3))}), ValueError, "out"),
    *unary("out_wrong_ndim", lambda: ((X(),), {"out": np.zeros((2, 3, 1))}), ValueError, "out"),
    *unary("out_read_only", lambda: ((X(),), {"out": ro(np.zeros((2, 3)))}), ValueError, "out"),
    *unary("out_read_only_strided", lambda: ((X(),), {"out": ro(strided(np.zeros((2, 3))))}), ValueError, "out"),
]
ROWS += [
    *unary("out_is_read_only_input", lambda: (lambda x: ((x,), {"out": x}))(ro(X())), ValueError, "out"),
    row("softmax", "out_wrong_shape_with_axis0", call("softmax", fresh(X), axis=0, out=fresh(lambda: np.zeros((3, 2)))),
        ValueError, "out"),
    row("logsumexp", "out_full_shape", call("logsumexp", fresh(X), out=fresh(lambda: np.zeros((2, 3)))),
        ValueError, "out"),
    row("logsumexp", "out_keepdims_shape_without_keepdims",
        call("logsumexp", fresh(X), out=fresh(lambda: np.zeros((2, 1)))), ValueError, "out"),
    row("logsumexp", "out_reduced_shape_with_keepdims",
        call("logsumexp", fresh(X), keepdims=True, out=fresh(lambda: np.zeros(2))), ValueError, "out"),
    row("logsumexp", "out_0d_for_1d_input_wrong_dtype",
        call("logsumexp", fresh(lambda: X((5,))), out=fresh(lambda: np.zeros((), np.float32))), TypeError, "out"),
    row("logsumexp", "out_python_float_for_0d_result", call("logsumexp", fresh(lambda: X((5,))), out=0.0),
        TypeError, "out"),
    row("logsumexp", "out_read_only_reduced", call("logsumexp", fresh(X), out=fresh(lambda: ro(np.zeros(2)))),
        ValueError, "out"),
    row("logsumexp", "keepdims_str", call("logsumexp", fresh(X), keepdims="yes"), TypeError, "keepdims"),
    row("logsumexp", "keepdims_none", call("logsumexp", fresh(X), keepdims=None), TypeError, "keepdims"),
]

# ---- softmax_backward, log_softmax_backward ----
for _name, _make in BAD_DTYPE_ARRAYS.items():
    ROWS += binary(f"grad_output_{_name}", lambda m=_make: ((m(), X()), {}), TypeError, "grad_output")
    ROWS += binary(f"output_{_name}", lambda m=_make: ((X(), m()), {}), TypeError, "output")
ROWS += [
    *binary("shapes_transposed", lambda: ((X((2, 3)), X((3, 2))), {}), ValueError, "grad_output"),
    *binary("shapes_broadcastable", lambda: ((X((2, 3)), X((1, 3))), {}), ValueError, "grad_output"),
    *binary("shapes_ndim", lambda: ((X((2, 3)), X((2, 3, 1))), {}), ValueError, "grad_output"),
    *binary("grad_output_scalar", lambda: ((1.0, X()), {}), ValueError, "grad_output"),
    *binary("grad_output_list_wrong_shape", lambda: (([1.0, 2.0, 3.0], X()), {}), ValueError, "grad_output"),
    *binary("grad_output_ragged", lambda: (([[1.0], [2.0, 3.0]], X()), {}), ValueError, "grad_output"),
    *binary("both_0d", lambda: ((np.array(1.0), np.array(0.0)), {}), AxisError, "axis"),
    *binary("both_python_scalars", lambda: ((1.0, 0.0), {}), AxisError, "axis"),
    *binary("axis_too_large", lambda: ((X(), X(seed=1)), {"axis": 2}), AxisError, "axis"),
    *binary("axis_huge", lambda: ((X(), X(seed=1)), {"axis": 2**70}), AxisError, "axis"),
    *binary("axis_float", lambda: ((X(), X(seed=1)), {"axis": -1.0}), TypeError, "axis"),
    *binary("axis_tuple_repeated", lambda: ((X(), X(seed=1)), {"axis": (1, 1)}), ValueError, "axis"),
    *binary("out_list", lambda: ((X(), X(seed=1)), {"out": [[0.0] * 3] * 2}), TypeError, "out"),
    *binary("out_f32_for_promoted_f64", lambda: ((X(dtype=np.float32), X(seed=1)), {"out": np.zeros((2, 3), np.float32)}),
            TypeError, "out"),
    *binary("out_f32_for_int_grad_output", lambda: ((np.ones((2, 3), np.int8), X(seed=1, dtype=np.float32)),
                                                    {"out": np.zeros((2, 3), np.float32)}), TypeError, "out"),
    *binary("out_wrong_shape", lambda: ((X(), X(seed=1)), {"out": np.zeros((3, 2))}), ValueError, "out"),
    *binary("out_read_only", lambda: ((X(), X(seed=1)), {"out": ro(np.zeros((2, 3)))}), ValueError, "out"),
    *binary("out_is_read_only_grad_output", lambda: (lambda g: ((g, X(seed=1)), {"out": g}))(ro(X())),
            ValueError, "out"),
    *binary("out_is_output_wrong_dtype", lambda: (lambda y: ((X(), y), {"out": y}))(X(seed=1, dtype=np.float32)),
            TypeError, "out"),
]

# ---- nll_loss, cross_entropy, cross_entropy_with_grad ----
for _name, _make in BAD_DTYPE_ARRAYS.items():
    ROWS += losses(f"logits_{_name}", lambda f, m=_make: _logits_kw(f, m(), T(2, 3)), TypeError, "logits")
ROWS += [
    *losses("logits_0d", lambda f: _logits_kw(f, np.array(1.0), np.array(0)), ValueError, "logits"),
    *losses("logits_python_scalar", lambda f: _logits_kw(f, 1.0, 0), ValueError, "logits"),
    *losses("logits_ragged", lambda f: _logits_kw(f, [[1.0, 2.0], [3.0]], T(2, 2)), ValueError, "logits"),
    *losses("target_float64_labels", lambda f: _logits_kw(f, X((3, 4)), np.array([0.0, 1.0, 2.0])),
            TypeError, "target", funcs=["nll_loss"]),
    *losses("target_list_of_float_labels", lambda f: _logits_kw(f, X((3, 4)), [0.0, 1.0, 2.0]), TypeError, "target",
            funcs=["nll_loss"]),
    *losses("target_float_probabilities", lambda f: _logits_kw(f, X((3, 4)), P()), TypeError, "target",
            funcs=["nll_loss"]),
    # A float target of the logits' shape is a probability target: it must have their dtype.
    *losses("target_float32_probabilities_float64_logits", lambda f: _logits_kw(f, X((3, 4)), P(dtype=np.float32)),
            TypeError, "target", funcs=["cross_entropy", "cross_entropy_with_grad"]),
    *losses("target_float64_probabilities_float16_logits",
            lambda f: _logits_kw(f, X((3, 4), np.float16), P()), TypeError, "target",
            funcs=["cross_entropy", "cross_entropy_with_grad"]),
    *losses("target_float_labels_shape_of_index", lambda f: _logits_kw(f, X((3, 4)), np.array([0.0, 1.0, 2.0])),
            ValueError, "target", funcs=["cross_entropy", "cross_entropy_with_grad"]),
    *losses("target_probabilities_wrong_shape", lambda f: _logits_kw(f, X((3, 4)), P((3, 5))), ValueError, "target",
            funcs=["cross_entropy", "cross_entropy_with_grad"]),
    *losses("target_probabilities_ignore_index_0", lambda f: _logits_kw(f, X((3, 4)), P(), ignore_index=0),
            ValueError, "ignore_index", funcs=["cross_entropy", "cross_entropy_with_grad"]),
    *losses("target_bool", lambda f: _logits_kw(f, X((3, 4)), np.zeros(3, bool)), TypeError, "target"),
    *losses("target_complex", lambda f: _logits_kw(f, X((3, 4)), np.zeros(3, complex)), TypeError, "target"),
    *losses("target_object", lambda f: _logits_kw(f, X((3, 4)), np.zeros(3, object)), TypeError, "target"),
    *losses("target_str", lambda f: _logits_kw(f, X((3, 4)), np.array(["0", "1", "2"])), TypeError, "target"),
    *losses("target_none", lambda f: _logits_kw(f, X((3, 4)), None), TypeError, "target"),
    *losses("target_datetime", lambda f: _logits_kw(f, X((3, 4)), np.zeros(3, "datetime64[s]")), TypeError, "target"),
    *losses("target_too_large", lambda f: _logits_kw(f, X((3, 4)), np.array([0, 4, 1])), IndexError, "target"),
    *losses("target_negative", lambda f: _logits_kw(f, X((3, 4)), np.array([0, 1, -1])), IndexError, "target"),
    *losses("target_huge", lambda f: _logits_kw(f, X((3, 4)), np.array([2**40, 0, 1])), IndexError, "target"),
    *losses("target_int64_min", lambda f: _logits_kw(f, X((3, 4)), np.array([0, np.iinfo(np.int64).min, 1])),
            IndexError, "target"),
    *losses("target_uint64_max", lambda f: _logits_kw(f, X((3, 4)), np.array([0, 2**64 - 1, 1], np.uint64),
                                                      ignore_index=-1), IndexError, "target"),
    *losses("target_uint32_wraps_to_ignore", lambda f: _logits_kw(f, X((3, 4)), np.array([0, 2**32 - 100, 1], np.uint32)),
            IndexError, "target"),
    *losses("target_int8_too_large", lambda f: _logits_kw(f, X((3, 4)), np.array([0, 4, 1], np.int8)),
            IndexError, "target"),
    *losses("target_ignore_index_of_other_call", lambda f: _logits_kw(f, X((3, 4)), np.array([0, -100, 1]),
                                                                      ignore_index=-1), IndexError, "target"),
    *losses("target_list_out_of_range", lambda f: _logits_kw(f, X((3, 4)).tolist(), [0, 1, 9]), IndexError, "target"),
    *losses("target_last_row_bad_3d", lambda f: _logits_kw(f, X((2, 3, 4)), np.array([[0, 1, 2], [3, 0, 4]])),
            IndexError, "target"),
    *losses("target_no_classes", lambda f: _logits_kw(f, X((3, 0)), np.array([0, 0, 0])), IndexError, "target"),
    *losses("target_wrong_shape", lambda f: _logits_kw(f, X((3, 4)), np.array([0, 1])), ValueError, "target"),
    *losses("target_wrong_ndim", lambda f: _logits_kw(f, X((3, 4)), np.array([[0, 1, 2]])), ValueError, "target"),
    *losses("target_scalar_for_2d", lambda f: _logits_kw(f, X((3, 4)), 1), ValueError, "target"),
    *losses("target_shape_of_logits_int", lambda f: _logits_kw(f, X((3, 4)), np.zeros((3, 4), np.int64)),
            ValueError, "target"),
    *losses("target_empty_for_rows", lambda f: _logits_kw(f, X((3, 4)), np.zeros(0, np.int64)), ValueError, "target"),
    *losses("weight_short", lambda f: _logits_kw(f, X((3, 4)), T(), weight=np.ones(3)), ValueError, "weight"),
    *losses("weight_2d", lambda f: _logits_kw(f, X((3, 4)), T(), weight=np.ones((1, 4))), ValueError, "weight"),
    *losses("weight_scalar", lambda f: _logits_kw(f, X((3, 4)), T(), weight=1.0), ValueError, "weight"),
    *losses("weight_list_wrong_length", lambda f: _logits_kw(f, X((3, 4)), T(), weight=[1.0, 2.0]), ValueError,
            "weight"),
    *losses("weight_complex", lambda f: _logits_kw(f, X((3, 4)), T(), weight=np.ones(4, complex)), TypeError,
            "weight"),
    *losses("weight_str", lambda f: _logits_kw(f, X((3, 4)), T(), weight=np.array(["1"] * 4)), TypeError, "weight"),
    *losses("weight_object", lambda f: _logits_kw(f, X((3, 4)), T(), weight=np.ones(4, object)), TypeError, "weight"),
    *losses("reduction_unknown", lambda f: _logits_kw(f, X((3, 4)), T(), reduction="avg"), ValueError, "reduction"),
    *losses("reduction_upper_case", lambda f: _logits_kw(f, X((3, 4)), T(), reduction="MEAN"), ValueError,
            "reduction"),
    *losses("reduction_none_object", lambda f: _logits_kw(f, X((3, 4)), T(), reduction=None), ValueError, "reduction"),
    *losses("reduction_int", lambda f: _logits_kw(f, X((3, 4)), T(), reduction=0), ValueError, "reduction"),
    *losses("ignore_index_float", lambda f: _logits_kw(f, X((3, 4)), T(), ignore_index=-100.0), TypeError,
            "ignore_index"),
    *losses("ignore_index_none", lambda f: _logits_kw(f, X((3, 4)), T(), ignore_index=None), TypeError,
            "ignore_index"),
    *losses("ignore_index_bool", lambda f: _logits_kw(f, X((3, 4)), T(), ignore_index=True), TypeError,
            "ignore_index"),
]
_CE = ["cross_entropy", "cross_entropy_with_grad"]
for _case, _value, _exc in [
    ("negative", -0.1, ValueError), ("above_1", 1.0000001, ValueError), ("nan", NAN, ValueError),
    ("inf", INF, ValueError), ("minus_inf", -INF, ValueError), ("numpy_nan", np.float32("nan"), ValueError),
    ("str", "0.1", TypeError), ("none", None, TypeError), ("array", np.array([0.1]), TypeError),
]:
    ROWS += losses(f"label_smoothing_{_case}",
                   lambda f, v=_value: _logits_kw(f, X((3, 4)), T(), label_smoothing=v), _exc, "label_smoothing",
                   funcs=_CE)
    ROWS += losses(f"label_smoothing_{_case}_probabilities",
                   lambda f, v=_value: _logits_kw(f, X((3, 4)), P(), label_smoothing=v), _exc, "label_smoothing",
                   funcs=_CE)
_CEG = ["cross_entropy_with_grad"]
ROWS += [
    *losses("out_list", lambda f: _logits_kw(f, X((3, 4)), T(), out=[[0.0] * 4] * 3), TypeError, "out", funcs=_CEG),
    *losses("out_numpy_scalar", lambda f: _logits_kw(f, X((4,)), np.array(1), out=np.float64(0)), TypeError, "out",
            funcs=_CEG),
    *losses("out_wrong_shape", lambda f: _logits_kw(f, X((3, 4)), T(), out=np.zeros((4, 3))), ValueError, "out",
            funcs=_CEG),
    *losses("out_loss_shape", lambda f: _logits_kw(f, X((3, 4)), T(), reduction="none", out=np.zeros(3)),
            ValueError, "out", funcs=_CEG),
    *losses("out_wrong_dtype", lambda f: _logits_kw(f, X((3, 4)), T(), out=np.zeros((3, 4), np.float32)),
            TypeError, "out", funcs=_CEG),
    *losses("out_f32_for_f16_logits", lambda f: _logits_kw(f, X((3, 4), np.float16), T(),
                                                           out=np.zeros((3, 4), np.float32)), TypeError, "out",
            funcs=_CEG),
    *losses("out_f32_for_int_logits", lambda f: _logits_kw(f, np.ones((3, 4), np.int16), T(),
                                                           out=np.zeros((3, 4), np.float32)), TypeError, "out",
            funcs=_CEG),
    *losses("out_byteswapped", lambda f: _logits_kw(f, X((3, 4)), T(), out=np.zeros((3, 4), ">f8")), TypeError,
            "out", funcs=_CEG),
    *losses("out_read_only", lambda f: _logits_kw(f, X((3, 4)), T(), out=ro(np.zeros((3, 4)))), ValueError, "out",
            funcs=_CEG),
    *losses("out_is_read_only_logits", lambda f: (lambda x: _logits_kw(f, x, T(), out=x))(ro(X((3, 4)))),
            ValueError, "out", funcs=_CEG),
    *losses("out_is_probability_target_read_only", lambda f: (lambda p: _logits_kw(f, X((3, 4)), p, out=p))(ro(P())),
            ValueError, "out", funcs=_CEG),
    # Checks of the other arguments run before anything is written through out=logits.
    *losses("out_is_logits_target_out_of_range", lambda f: (lambda x: _logits_kw(f, x, np.array([0, 1, 4]), out=x))(
        X((3, 4))), IndexError, "target", funcs=_CEG),
    *losses("out_is_logits_bad_weight", lambda f: (lambda x: _logits_kw(f, x, T(), weight=np.ones(5), out=x))(
        X((3, 4))), ValueError, "weight", funcs=_CEG),
    *losses("out_is_logits_bad_reduction", lambda f: (lambda x: _logits_kw(f, x, T(), reduction="avg", out=x))(
        X((3, 4))), ValueError, "reduction", funcs=_CEG),
    *losses("out_is_logits_float16_bad_target", lambda f: (lambda x: _logits_kw(f, x, np.array([0, 1, 9]), out=x))(
        X((3, 4), np.float16)), IndexError, "target", funcs=_CEG),
    *losses("out_is_strided_logits_bad_target", lambda f: (lambda x: _logits_kw(f, x, np.array([0, 1, 9]), out=x))(
        strided(X((3, 4)))), IndexError, "target", funcs=_CEG),
    *losses("out_is_logits_label_smoothing_nan", lambda f: (lambda x: _logits_kw(f, x, T(), label_smoothing=NAN,
                                                                                 out=x))(X((3, 4))),
            ValueError, "label_smoothing", funcs=_CEG),
]

# ---- sgd_step ----
_HYPER_BAD = [
    ("lr_nan", {"lr": NAN}, ValueError, "lr"),
    ("lr_negative", {"lr": -0.1}, ValueError, "lr"),
    ("lr_inf", {"lr": INF}, ValueError, "lr"),
    ("lr_numpy_nan", {"lr": np.float32("nan")}, ValueError, "lr"),
    ("lr_str", {"lr": "0.1"}, TypeError, "lr"),
    ("lr_none", {"lr": None}, TypeError, "lr"),
    ("lr_array", {"lr": np.array([0.1])}, TypeError, "lr"),
    ("lr_complex", {"lr": 0.1 + 0j}, TypeError, "lr"),
    ("momentum_nan", {"momentum": NAN}, ValueError, "momentum"),
    ("momentum_negative", {"momentum": -0.9}, ValueError, "momentum"),
    ("momentum_inf", {"momentum": INF}, ValueError, "momentum"),
    ("dampening_nan", {"momentum": 0.9, "dampening": NAN}, ValueError, "dampening"),
    ("dampening_inf", {"momentum": 0.9, "dampening": INF}, ValueError, "dampening"),
    ("dampening_minus_inf", {"momentum": 0.9, "dampening": -INF}, ValueError, "dampening"),
    ("weight_decay_nan", {"weight_decay": NAN}, ValueError, "weight_decay"),
    ("weight_decay_negative", {"weight_decay": -1e-4}, ValueError, "weight_decay"),
    ("weight_decay_inf", {"weight_decay": INF}, ValueError, "weight_decay"),
    ("nesterov_without_momentum", {"nesterov": True, "momentum": 0.0}, ValueError, "nesterov"),
    ("nesterov_with_dampening", {"nesterov": True, "momentum": 0.9, "dampening": 0.1}, ValueError, "nesterov"),
    ("nesterov_str", {"nesterov": "yes"}, TypeError, "nesterov"),
    ("maximize_int", {"maximize": 1}, TypeError, "maximize"),
]


def _sgd_arrays(dtype=np.float64, n=6):
    rng = np.random.default_rng(3)
    return rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)


for _case, _kw, _exc, _arg in _HYPER_BAD:
    ROWS.append(sgd_step_row(f"{_case}", lambda kw=_kw: (*_sgd_arrays(), {"momentum": 0.9, **kw}), _exc, _arg))
ROWS += [
    sgd_step_row("param_list", lambda: ([1.0, 2.0], np.ones(2), None, {}), TypeError, "param"),
    sgd_step_row("param_python_scalar", lambda: (1.0, 1.0, None, {}), TypeError, "param"),
    sgd_step_row("param_numpy_scalar", lambda: (np.float64(1.0), np.float64(1.0), None, {}), TypeError, "param"),
    sgd_step_row("param_int", lambda: (np.ones(3, np.int64), np.ones(3), None, {}), TypeError, "param"),
    sgd_step_row("param_float16", lambda: (np.ones(3, np.float16), np.ones(3, np.float16), None, {}), TypeError,
                 "param"),
    sgd_step_row("param_complex", lambda: (np.ones(3, complex), np.ones(3, complex), None, {}), TypeError, "param"),
    sgd_step_row("param_longdouble", lambda: (np.ones(3, np.longdouble), np.ones(3), None, {}), TypeError, "param"),
    sgd_step_row("param_byteswapped", lambda: (np.ones(3, ">f8"), np.ones(3), None, {}), TypeError, "param"),
    sgd_step_row("param_read_only", lambda: (ro(X((3,))), np.ones(3), None, {}), ValueError, "param"),
    sgd_step_row("param_strided", lambda: (strided(X((3,))), np.ones(3), None, {}), ValueError, "param"),
    sgd_step_row("param_fortran", lambda: (np.asfortranarray(X((3, 4))), np.ones((3, 4)), None, {}), ValueError,
                 "param"),
    sgd_step_row("param_negative_stride", lambda: (X((6,))[::-1], np.ones(6), None, {}), ValueError, "param"),
    sgd_step_row("param_unaligned", lambda: (unaligned(4), np.ones(4), None, {}), ValueError, "param"),
    sgd_step_row("grad_wrong_shape", lambda: (X((3,)), np.ones(4), None, {}), ValueError, "grad"),
    sgd_step_row("grad_transposed", lambda: (X((2, 3)), np.ones((3, 2)), None, {}), ValueError, "grad"),
    sgd_step_row("grad_0d", lambda: (X((3,)), np.float64(1.0), None, {}), ValueError, "grad"),
    sgd_step_row("grad_ragged", lambda: (X((2,)), [[1.0], [1.0, 2.0]], None, {}), ValueError, "grad"),
    sgd_step_row("grad_float32_for_float64", lambda: (X((3,)), np.ones(3, np.float32), None, {}), TypeError, "grad"),
    sgd_step_row("grad_float64_for_float32", lambda: (X((3,), np.float32), np.ones(3), None, {}), TypeError, "grad"),
    sgd_step_row("grad_int", lambda: (X((3,)), np.ones(3, np.int64), None, {}), TypeError, "grad"),
    sgd_step_row("grad_int_list", lambda: (X((3,)), [1, 2, 3], None, {}), TypeError, "grad"),
    sgd_step_row("grad_float_list_for_float32", lambda: (X((3,), np.float32), [1.0, 2.0, 3.0], None, {}), TypeError,
                 "grad"),
    sgd_step_row("grad_complex", lambda: (X((3,)), np.ones(3, complex), None, {}), TypeError, "grad"),
    sgd_step_row("grad_object", lambda: (X((3,)), np.ones(3, object), None, {}), TypeError, "grad"),
    sgd_step_row("grad_str", lambda: (X((3,)), np.array(["1", "2", "3"]), None, {}), TypeError, "grad"),
    sgd_step_row("grad_none", lambda: (X((3,)), None, None, {}), ValueError, "grad"),  # a 0-d object array
    sgd_step_row("grad_none_0d_param", lambda: (np.ones(()), None, None, {}), TypeError, "grad"),
    sgd_step_row("grad_bad_with_momentum", lambda: (X((3,)), np.ones(4), X((3,), seed=2), {"momentum": 0.9}),
                 ValueError, "grad"),
    sgd_step_row("velocity_missing", lambda: (X((3,)), np.ones(3), None, {"momentum": 0.9}), ValueError, "velocity"),
    sgd_step_row("velocity_list", lambda: (X((3,)), np.ones(3), [0.0, 0.0, 0.0], {"momentum": 0.9}), TypeError,
                 "velocity"),
    sgd_step_row("velocity_scalar", lambda: (np.ones(()), np.ones(()), 0.0, {"momentum": 0.9}), TypeError,
                 "velocity"),
    sgd_step_row("velocity_wrong_shape", lambda: (X((3,)), np.ones(3), np.zeros(4), {"momentum": 0.9}), ValueError,
                 "velocity"),
    sgd_step_row("velocity_wrong_dtype", lambda: (X((3,)), np.ones(3), np.zeros(3, np.float32), {"momentum": 0.9}),
                 TypeError, "velocity"),
    sgd_step_row("velocity_int", lambda: (X((3,)), np.ones(3), np.zeros(3, np.int64), {"momentum": 0.9}),
                 TypeError, "velocity"),
    sgd_step_row("velocity_read_only", lambda: (X((3,)), np.ones(3), ro(np.zeros(3)), {"momentum": 0.9}),
                 ValueError, "velocity"),
    sgd_step_row("velocity_strided", lambda: (X((3,)), np.ones(3), strided(np.zeros(3)), {"momentum": 0.9}),
                 ValueError, "velocity"),
    sgd_step_row("velocity_is_param", lambda: (lambda p: (p, np.ones(3), p, {"momentum": 0.9}))(X((3,))),
                 ValueError, "velocity"),
    sgd_step_row("velocity_overlaps_param", lambda: (lambda b: (b[:4], np.ones(4), b[2:6], {"momentum": 0.9}))(X((6,))),
                 ValueError, "velocity"),
]

# ---- SGD(...) ----
for _case, _kw, _exc, _arg in _HYPER_BAD:
    ROWS.append(sgd_row(_case, lambda kw=_kw: ([X((3,)), X((2, 2))], {"momentum": 0.9, **kw}), _exc, _arg))
    ROWS.append(sgd_row(f"group_{_case}", lambda kw=_kw: (
        [{"params": [X((3,))]}, {"params": [X((2, 2))], "momentum": 0.9, **kw}], {}), _exc, rf"params\[1\]\['{_arg}'\]"))
ROWS += [
    sgd_row("dampening_nan_without_momentum", lambda: ([X((3,))], {"dampening": NAN}), ValueError, "dampening"),
    sgd_row("params_empty", lambda: ([], {}), ValueError, "params"),
    sgd_row("params_bare_array", lambda: (X((3,)), {}), TypeError, "params"),
    sgd_row("params_none", lambda: (None, {}), TypeError, "params"),
    sgd_row("params_list_of_lists", lambda: ([[1.0, 2.0]], {}), TypeError, r"params\[0\]"),
    sgd_row("params_scalar", lambda: ([1.0], {}), TypeError, r"params\[0\]"),
    sgd_row("params_int", lambda: ([X((3,)), np.ones(3, np.int32)], {}), TypeError, r"params\[1\]"),
    sgd_row("params_float16", lambda: ([np.ones(3, np.float16)], {}), TypeError, r"params\[0\]"),
    sgd_row("params_read_only", lambda: ([X((3,)), ro(X((2,)))], {}), ValueError, r"params\[1\]"),
    sgd_row("params_strided", lambda: ([strided(X((3,)))], {}), ValueError, r"params\[0\]"),
    sgd_row("params_same_array_twice", lambda: (lambda p: ([p, X((2,)), p], {}))(X((3,))), ValueError, r"params\[2\]"),
    sgd_row("params_overlapping_views", lambda: (lambda b: ([b[:4], b[3:]], {}))(X((6,))), ValueError, r"params\[1\]"),
    sgd_row("params_same_array_across_groups", lambda: (lambda p: ([{"params": [p]}, {"params": [p]}], {}))(X((3,))),
            ValueError, r"params\[1\]\['params'\]\[0\]"),
    sgd_row("params_mixed", lambda: ([X((3,)), {"params": [X((2,))]}], {}), TypeError, "params"),
    sgd_row("group_without_params", lambda: ([{"lr": 0.1}], {}), ValueError, r"params\[0\]"),
    sgd_row("group_params_set", lambda: ([{"params": {1.0}}], {}), TypeError, r"params\[0\]\['params'\]"),
    sgd_row("group_bad_param", lambda: ([{"params": [X((3,))]}, {"params": [X((3,)), [1.0]]}], {}), TypeError,
            r"params\[1\]\['params'\]\[1\]"),
]

# ---- SGD.step(grads) ----
ROWS += [
    step_row("grads_too_few", lambda o, p, g: g[:2], ValueError, "grads"),
    step_row("grads_too_many", lambda o, p, g: g + [g[0]], ValueError, "grads"),
    step_row("grads_empty", lambda o, p, g: [], ValueError, "grads"),
    step_row("grads_ndarray", lambda o, p, g: g[0], TypeError, "grads"),
    step_row("grads_generator", lambda o, p, g: (x for x in g), TypeError, "grads"),
    step_row("grads_none", lambda o, p, g: None, TypeError, "grads"),
    step_row("grads_dict", lambda o, p, g: dict(enumerate(g)), TypeError, "grads"),
    step_row("last_grad_wrong_shape", _replace_grad(2, lambda p: np.ones(p.size + 1, p.dtype)), ValueError,
             r"grads\[2\]"),
    step_row("last_grad_wrong_dtype", _replace_grad(2, lambda p: np.ones(p.shape, np.float64)), TypeError,
             r"grads\[2\]"),
    step_row("middle_grad_int", _replace_grad(1, lambda p: np.ones(p.shape, np.int64)), TypeError, r"grads\[1\]"),
    step_row("middle_grad_complex", _replace_grad(1, lambda p: np.ones(p.shape, complex)), TypeError, r"grads\[1\]"),
    step_row("middle_grad_scalar", _replace_grad(1, lambda p: 1.0), ValueError, r"grads\[1\]"),
    step_row("middle_grad_ragged", _replace_grad(1, lambda p: [[1.0], [1.0, 2.0]]), ValueError, r"grads\[1\]"),
    step_row("middle_grad_str", _replace_grad(1, lambda p: np.array(["1"] * p.size)), TypeError, r"grads\[1\]"),
    step_row("middle_grad_transposed", _replace_grad(0, lambda p: np.ones(p.shape[::-1])), ValueError, r"grads\[0\]"),
    step_row("middle_grad_bad_no_momentum", _replace_grad(1, lambda p: np.ones(p.size + 1)), ValueError,
             r"grads\[1\]", momentum=0.0),
    step_row("group1_lr_nan", _set_group(1, lr=NAN), ValueError, r"param_groups\[1\]\['lr'\]"),
    step_row("group1_lr_negative", _set_group(1, lr=-1.0), ValueError, r"param_groups\[1\]\['lr'\]"),
    step_row("group0_lr_inf", _set_group(0, lr=INF), ValueError, r"param_groups\[0\]\['lr'\]"),
    step_row("group1_momentum_nan", _set_group(1, momentum=NAN), ValueError, r"param_groups\[1\]\['momentum'\]"),
    step_row("group1_momentum_negative", _set_group(1, momentum=-0.5), ValueError,
             r"param_groups\[1\]\['momentum'\]"),
    step_row("group0_dampening_inf", _set_group(0, dampening=INF), ValueError, r"param_groups\[0\]\['dampening'\]"),
    step_row("group1_weight_decay_nan", _set_group(1, weight_decay=NAN), ValueError,
             r"param_groups\[1\]\['weight_decay'\]"),
    step_row("group1_weight_decay_negative", _set_group(1, weight_decay=-1.0), ValueError,
             r"param_groups\[1\]\['weight_decay'\]"),
    step_row("group0_nesterov_with_dampening", _set_group(0, nesterov=True, dampening=0.5), ValueError,
             r"param_groups\[0\]\['nesterov'\]"),
    step_row("group1_lr_str", _set_group(1, lr="0.1"), TypeError, r"param_groups\[1\]\['lr'\]"),
    # The momentum is switched on in group 0 (its velocities get allocated) while group 1 is bad.
    step_row("group0_momentum_on_group1_bad", _set_group(1, lr=NAN), ValueError, r"param_groups\[1\]\['lr'\]",
             momentum=0.0),
    step_row("param_made_read_only", lambda o, p, g: (ro(p[1]), g)[1], ValueError, r"params\[1\]"),
]

# ---- SGD.load_state_dict(state_dict) ----
ROWS += [
    load_row("not_a_dict", lambda sd: [sd], TypeError, "state_dict"),
    load_row("group_lr_nan", lambda sd: dict(sd, param_groups=[sd["param_groups"][0],
                                                               dict(sd["param_groups"][1], lr=NAN)]),
             ValueError, r"state_dict\['param_groups'\]\[1\]\['lr'\]"),
    load_row("group_momentum_negative", lambda sd: dict(sd, param_groups=[dict(sd["param_groups"][0], momentum=-1.0),
                                                                          sd["param_groups"][1]]),
             ValueError, r"state_dict\['param_groups'\]\[0\]\['momentum'\]"),
    load_row("buffer_wrong_shape", lambda sd: dict(sd, state={**sd["state"], 2: {"momentum_buffer": np.zeros(5)}}),
             ValueError, r"state_dict\['state'\]\[2\]\['momentum_buffer'\]"),
    load_row("buffer_complex", lambda sd: dict(sd, state={**sd["state"], 1: {"momentum_buffer": np.zeros(3, complex)}}),
             TypeError, r"state_dict\['state'\]\[1\]\['momentum_buffer'\]"),
]


def _row_ids():
    ids = [p.id for p in ROWS]
    duplicates = {i for i in ids if ids.count(i) > 1}
    assert not duplicates, duplicates
    return ids


_row_ids()


# ---------------------------------------------------------------------------- the checks


def _arrays_in(obj, found):
    """Every ndarray reachable from `obj` through lists, tuples and dicts (and the ndarray each
    is a view of, so that a write outside the view is seen too)."""
    if isinstance(obj, np.ndarray):
        found.append(obj)
        base = obj.base
        while isinstance(base, np.ndarray):
            found.append(base)
            base = base.base
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            _arrays_in(item, found)
    elif isinstance(obj, dict):
        for item in obj.values():
            _arrays_in(item, found)
    return found


def _snapshot(arrays):
    return [(a.shape, a.dtype.str, a.strides, a.flags.writeable, a.tobytes()) for a in arrays]


def _optimizer_snapshot(opt):
    if opt is None:
        return None
    state = opt.state_dict()
    arrays = _arrays_in(list(opt.param_groups), [])
    return pickle.dumps(state), _snapshot(arrays)


def _run(impl, func, build, exc, arg):
    """Run one row against `impl`; returns the exception after checking everything."""
    fn, args, kwargs, opt = build(impl)
    arrays = _arrays_in([args, kwargs], [])
    before = _snapshot(arrays)
    opt_before = _optimizer_snapshot(opt)
    with pytest.raises(Exception) as info:
        fn(*args, **kwargs)
    err = info.value
    assert type(err) is exc, f"expected {exc.__name__}, got {type(err).__name__}: {err}"
    message = str(err)
    pattern = "^" + re.escape(f"{func}()") + " .*" + (f"'{arg}'" if arg.isidentifier() else arg)
    assert re.search(pattern, message), f"message {message!r} does not name {func}() and {arg!r}"
    after = _snapshot(arrays)
    for a, b, arr in zip(before, after, arrays):
        assert a == b, f"{func}() raised {exc.__name__} but modified an array of shape {arr.shape}"
    assert _optimizer_snapshot(opt) == opt_before, f"{func}() raised but changed the optimizer's state"
    return err


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("func, build, exc, arg", ROWS)
def test_bad_input_raises_and_changes_nothing(impl, func, build, exc, arg):
    err = _run(impl, func, build, exc, arg)
    # The twin raises the very same error for the same (fresh) arguments.
    twin = ref if impl is fs else fs
    twin_err = _run(twin, func, build, exc, arg)
    assert str(twin_err) == str(err)


# ---- the thread controls have no reference twin --------------------------------------------


@pytest.mark.parametrize(
    "n, exc",
    [
        pytest.param(0, ValueError, id="zero"),
        pytest.param(-1, ValueError, id="negative"),
        pytest.param(2**70, ValueError, id="huge"),
        pytest.param(1.0, TypeError, id="float"),
        pytest.param("2", TypeError, id="str"),
        pytest.param(True, TypeError, id="bool"),
        pytest.param(None, TypeError, id="none"),
        pytest.param(np.float64(2.0), TypeError, id="numpy_float"),
    ],
)
def test_set_num_threads_rejects(n, exc):
    before = fs.get_num_threads()
    with pytest.raises(Exception) as info:
        fs.set_num_threads(n)
    assert type(info.value) is exc
    assert "set_num_threads() argument 'n'" in str(info.value)
    assert fs.get_num_threads() == before


def test_every_public_function_has_rows():
    """The table covers every public function and method that takes arrays."""
    covered = {p.values[0] for p in ROWS}
    public = set(fs.__all__) - {"set_num_threads", "get_num_threads", "isa"}
    assert public - {c.split(".")[0] for c in covered} == set()
    assert {"SGD", "SGD.step", "SGD.load_state_dict"} <= covered
