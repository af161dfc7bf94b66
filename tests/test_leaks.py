"""No leaks: 100,000 calls of each public function grow the process's RSS by less than 5 MB
(issue 6).

Each function is called through a cycle of variants -- the C-contiguous fast path, the
general path (another axis, another layout, out=), and error paths that raise -- 100,000
calls in all, after a warm-up.  RSS is read from /proc/self/statm.  The arrays are small
(so the whole file stays well under a minute) but not tiny: a leaked array, result or
exception per call would be 50 MB or more.  The reference counts of the arguments are
checked too, which catches a leaked reference to an input even when it costs no memory.
"""

from __future__ import annotations

import gc
import os
import sys

import numpy as np
import pytest

import fastsoftmax as fs

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc/self/statm (Linux)")

CALLS = 100_000
WARMUP = 5_000
LIMIT = 5 * 2**20
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def _raises(exc, fn, *args, **kwargs):
    def call():
        try:
            fn(*args, **kwargs)
        except exc:
            return
        raise AssertionError(f"{fn.__name__} did not raise {exc.__name__}")

    return call


rng = np.random.default_rng(0)
X = rng.standard_normal((8, 16))  # 1 KiB
X32 = X.astype(np.float32)
XF = np.asfortranarray(X)
G = rng.standard_normal((8, 16))
Y = fs.softmax(X)
LY = fs.log_softmax(X)
T = rng.integers(0, 16, 8)
Q = fs.softmax(rng.standard_normal((8, 16)))
W = rng.random(16)
OUT = np.empty((8, 16))
OUT32 = np.empty((8, 16), np.float32)
OUT_LSE = np.zeros(8)
RO = np.zeros((8, 16))
RO.flags.writeable = False
P = rng.standard_normal((8, 16))
V = np.zeros((8, 16))
PG = rng.standard_normal((8, 16))


def _unary(name):
    f = getattr(fs, name)
    out = OUT_LSE if name == "logsumexp" else OUT
    return [
        lambda: f(X),
        lambda: f(X32),
        lambda: f(XF, axis=0),
        lambda: f(X, axis=(0, 1)),
        lambda: f(X, out=out),
        lambda: f(X.tolist()),
        _raises(TypeError, f, X, out=OUT32 if name != "logsumexp" else OUT_LSE.astype(np.float32)),
        _raises(ValueError, f, X, out=RO if name != "logsumexp" else RO[:, 0]),
        _raises(np.exceptions.AxisError, f, X, axis=5),
        _raises(TypeError, f, np.ones((8, 16), complex)),
    ]


def _binary(name):
    f = getattr(fs, name)
    y = Y if name == "softmax_backward" else LY
    return [
        lambda: f(G, y),
        lambda: f(G.astype(np.float32), y.astype(np.float32)),
        lambda: f(np.asfortranarray(G), y, axis=0),
        lambda: f(G, y, out=OUT),
        _raises(ValueError, f, G, y[:4]),
        _raises(TypeError, f, G, y, out=OUT32),
        _raises(TypeError, f, G.astype(complex), y),
    ]


def _loss(name):
    f = getattr(fs, name)
    first = "log_probs" if name == "nll_loss" else "logits"
    lp = LY if name == "nll_loss" else X
    variants = [
        lambda: f(**{first: lp}, target=T),
        lambda: f(**{first: lp.astype(np.float32)}, target=T.astype(np.int32), reduction="none"),
        lambda: f(**{first: lp}, target=T, weight=W, reduction="sum"),
        lambda: f(**{first: np.asfortranarray(lp)}, target=T, ignore_index=3),
        _raises(IndexError, f, **{first: lp}, target=T + 16),
        _raises(ValueError, f, **{first: lp}, target=T, reduction="avg"),
        _raises(TypeError, f, **{first: lp}, target=T.astype(float) if name == "nll_loss" else T.astype(complex)),
    ]
    if name != "nll_loss":
        variants += [
            lambda: f(X, Q, label_smoothing=0.1),
            _raises(ValueError, f, X, T, label_smoothing=1.5),
        ]
    if name == "cross_entropy_with_grad":
        variants += [
            lambda: f(X, T, out=OUT),
            _raises(ValueError, f, X, T, out=RO),
        ]
    return variants


def _sgd_step():
    g32 = PG.astype(np.float32)
    return [
        lambda: fs.sgd_step(P, PG, lr=1e-9),
        lambda: fs.sgd_step(P, PG, V, lr=1e-9, momentum=0.9, weight_decay=1e-4),
        lambda: fs.sgd_step(P, np.asfortranarray(PG), V, lr=1e-9, momentum=0.9, nesterov=True),
        _raises(ValueError, fs.sgd_step, P, PG, lr=float("nan")),
        _raises(TypeError, fs.sgd_step, P, g32, lr=0.1),
        _raises(ValueError, fs.sgd_step, P, PG, None, lr=0.1, momentum=0.9),
        _raises(ValueError, fs.sgd_step, RO, PG, lr=0.1),
    ]


_PARAMS = [rng.standard_normal((8, 16)), rng.standard_normal(16), rng.standard_normal(3).astype(np.float32)]
_OPT = fs.SGD([{"params": _PARAMS[:2]}, {"params": _PARAMS[2:], "weight_decay": 0.0}], lr=1e-9, momentum=0.9,
              weight_decay=1e-4)
_GRADS = [np.full(p.shape, 0.5, p.dtype) for p in _PARAMS]


def _sgd():
    bad_shape = _GRADS[:2] + [np.ones(4, np.float32)]
    f_grads = [np.asfortranarray(_GRADS[0]), _GRADS[1], _GRADS[2]]
    return [
        lambda: _OPT.step(_GRADS),
        lambda: _OPT.step(f_grads),  # copied by the checker
        lambda: _OPT.step([_GRADS[0], None, _GRADS[2]]),
        _raises(ValueError, _OPT.step, _GRADS[:2]),
        _raises(ValueError, _OPT.step, bad_shape),
        _raises(TypeError, _OPT.step, _GRADS[0]),
        lambda: _OPT.state_dict(),
        _raises(ValueError, fs.SGD, [], lr=0.1),
        _raises(ValueError, fs.SGD, [P], lr=-1.0),
    ]


def _threads():
    n = fs.get_num_threads()
    return [
        lambda: fs.get_num_threads(),
        lambda: fs.set_num_threads(n),
        _raises(ValueError, fs.set_num_threads, 0),
        _raises(TypeError, fs.set_num_threads, 1.5),
    ]


CASES = {
    "softmax": lambda: _unary("softmax"),
    "log_softmax": lambda: _unary("log_softmax"),
    "logsumexp": lambda: _unary("logsumexp"),
    "softmax_backward": lambda: _binary("softmax_backward"),
    "log_softmax_backward": lambda: _binary("log_softmax_backward"),
    "nll_loss": lambda: _loss("nll_loss"),
    "cross_entropy": lambda: _loss("cross_entropy"),
    "cross_entropy_with_grad": lambda: _loss("cross_entropy_with_grad"),
    "sgd_step": _sgd_step,
    "SGD": _sgd,
    "threads": _threads,
}

WATCHED = [X, X32, XF, G, Y, LY, T, Q, W, OUT, OUT32, OUT_LSE, RO, P, V, PG, *_PARAMS, *_GRADS]


def _run(variants, calls):
    k = len(variants)
    for i in range(calls):
        variants[i % k]()


@pytest.mark.parametrize("name", list(CASES))
def test_100k_calls_do_not_grow_rss(name):
    variants = CASES[name]()
    _run(variants, WARMUP)
    gc.collect()
    refs = [sys.getrefcount(a) for a in WATCHED]
    before = _rss()
    _run(variants, CALLS)
    gc.collect()
    grown = _rss() - before
    assert [sys.getrefcount(a) for a in WATCHED] == refs, "a call leaked a reference to an argument"
    assert grown < LIMIT, f"{CALLS} calls of {name} grew RSS by {grown / 2**20:.1f} MB"


def test_the_measure_sees_a_leak():
    """The RSS measure itself works: keeping a 16 KiB result per call for 10,000 calls (160 MB,
    more than the free memory an earlier test can leave resident in the process) is seen."""
    big = np.tile(X, (16, 1))  # 16 KiB
    kept = []
    before = _rss()
    for _ in range(10_000):
        kept.append(fs.softmax(big))
    assert _rss() - before > LIMIT
