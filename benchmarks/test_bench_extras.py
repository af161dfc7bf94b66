"""logsumexp and the two backward passes, which issue 5's list leaves out, at its activation
shapes, float32 and float64: fastsoftmax against fastsoftmax.reference, scipy.special.logsumexp
and torch (``torch.logsumexp``, ``torch._softmax_backward_data``,
``torch._log_softmax_backward_data``: the kernels autograd calls), each only when installed.
Not in ``python -m fastsoftmax`` (its table is issue 5's); run with

    python -m pytest benchmarks/test_bench_extras.py --benchmark-only

Every competitor's result is checked against fastsoftmax.reference on float64 inputs:
fastsoftmax and its twin tightly, torch and SciPy loosely (a mis-configured benchmark).
Threads are pinned as in the rest of the suite (conftest.py)."""

import os

import numpy as np
import pytest

import fastsoftmax as fs
from fastsoftmax import _bench
from fastsoftmax import reference as ref

OPS = ("logsumexp", "softmax_backward", "log_softmax_backward")
PEERS = {"logsumexp": ("scipy", "torch"), "softmax_backward": ("torch",), "log_softmax_backward": ("torch",)}
# max abs error over max |oracle|: fastsoftmax and the reference, then torch and SciPy
BOUND = {"float32": (1e-5, 1e-3), "float64": (1e-12, 1e-8)}


def _params():
    for op in OPS:
        for dtype in _bench.DTYPES:
            for shape in _bench.ACTIVATION_SHAPES:
                for who in ("fastsoftmax", "reference") + PEERS[op]:
                    yield pytest.param(op, dtype, shape, who, id=f"{op}-{dtype}-{'x'.join(map(str, shape))}-{who}")


def _inputs(op, dtype, shape):
    rng = np.random.default_rng(20240605)
    x = (3.0 * rng.standard_normal(shape)).astype(dtype)
    if op == "logsumexp":
        return (x,)
    forward = ref.softmax if op == "softmax_backward" else ref.log_softmax
    return rng.standard_normal(shape).astype(dtype), forward(x)  # g, y


def _runner(op, who, args):
    if who in ("fastsoftmax", "reference"):
        fn = getattr(fs if who == "fastsoftmax" else ref, op)
        return lambda: fn(*args)
    if who == "scipy":
        special = pytest.importorskip("scipy.special")
        return lambda: special.logsumexp(args[0], axis=-1)
    torch = pytest.importorskip("torch")
    t = [torch.from_numpy(a) for a in args]
    if op == "logsumexp":
        return lambda: torch.logsumexp(t[0], -1).numpy()
    backward = torch._softmax_backward_data if op == "softmax_backward" else torch._log_softmax_backward_data
    return lambda: backward(t[0], t[1], -1, t[1].dtype).numpy()


@pytest.mark.parametrize("op,dtype,shape,who", list(_params()))
def test_extra(benchmark, request, op, dtype, shape, who):
    quick = request.config.getoption("--quick-bench") or os.environ.get("FASTSOFTMAX_QUICK_BENCH", "") not in ("", "0")
    if quick:
        shape = _bench.QUICK_SHAPES[(False, shape)]
    args = _inputs(op, dtype, shape)
    run = _runner(op, who, args)
    want = getattr(ref, op)(*[a.astype(np.float64) for a in args])
    got = np.asarray(run(), np.float64)
    error = float(np.max(np.abs(got - want), initial=0.0)) / max(float(np.max(np.abs(want), initial=0.0)), 1e-300)
    bound = BOUND[dtype][who not in ("fastsoftmax", "reference")]
    benchmark.group = f"{op} {dtype} {'x'.join(map(str, shape))}"
    benchmark.extra_info.update(competitor=who, relative_error=error, bound=bound)
    benchmark(run)
    assert error <= bound, (op, dtype, shape, who, error)
