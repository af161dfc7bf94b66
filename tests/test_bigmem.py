"""Arrays of more than 2**31 elements (issue 6): index arithmetic is 64-bit throughout.

Opt-in: ``python -m pytest -m bigmem tests/test_bigmem.py`` (``-m "not bigmem"`` in pytest's
addopts leaves these out of the default run and of CI).  Each test holds one float32 array
of 2**31 + a few elements, 8.6 GB, and works in place (``out=`` the input) so that nothing
else of that size is allocated; the big arrays are freed before anything is asserted.

- Many rows: ``(2**21 + 8, 1024)``.  logsumexp and the cross-entropy loss (no large
  output), then softmax in place, then (on a refilled array) the fused cross-entropy
  gradient in place; the rows at and past 2**31 elements, and the first and last ones, are
  checked against the reference on copies of those rows.
- One row longer than 2**31 elements: ``(1, 2**31 + 16)`` with its maximum in the very last
  element; logsumexp, then softmax in place, checked on slices against values computed in
  float64 from the (periodic) contents.
"""

from __future__ import annotations

import gc

import numpy as np
import pytest

import fastsoftmax as fs
from fastsoftmax import reference as ref

pytestmark = pytest.mark.bigmem

ROWS, COLS = 2**21 + 8, 1024
LONG = 2**31 + 16
PERIOD = 4096
CHECKED = np.array([0, 1, 2**31 // COLS - 1, 2**31 // COLS, 2**31 // COLS + 1, ROWS - 2, ROWS - 1])


def _fill_rows(x):
    rng = np.random.default_rng(0)
    base = (rng.standard_normal((64, COLS)) * 4).astype(np.float32)
    for start in range(0, x.shape[0], 1 << 16):
        stop = min(start + (1 << 16), x.shape[0])
        x[start:stop] = base[np.arange(start, stop) % 64]
    x[CHECKED, CHECKED % COLS] = 40.0  # a distinct maximum in each checked row


def _rows_results():
    """Everything the many-rows test checks, as small arrays (the 8.6 GB array is gone)."""
    x = np.empty((ROWS, COLS), np.float32)
    assert x.size > 2**31
    _fill_rows(x)
    rows = x[CHECKED].copy()
    target = (np.arange(ROWS) * 7) % COLS
    r = {"rows": rows, "target": target[CHECKED]}
    lse = fs.logsumexp(x)
    r["lse"] = lse[CHECKED]
    r["lse_periodic"] = (lse[128:192], lse[64:128])  # (rows free of the checked ones)
    r["ce"] = fs.cross_entropy(x, target, reduction="none")[CHECKED]
    assert fs.softmax(x, out=x) is x
    r["softmax"] = x[CHECKED].copy()
    r["softmax_row_sum"] = x[-3].sum(dtype=np.float64)
    _fill_rows(x)
    loss, grad = fs.cross_entropy_with_grad(x, target, reduction="none", out=x)
    assert grad is x
    r["ceg"] = (loss[CHECKED], x[CHECKED].copy())
    del x, grad
    gc.collect()
    return r


def test_rows_past_2_31_elements():
    r = _rows_results()
    rows, target = r["rows"].astype(np.float64), r["target"]  # the reference in float64: an oracle
    np.testing.assert_allclose(r["lse"], ref.logsumexp(rows), rtol=2e-6)
    np.testing.assert_array_equal(*r["lse_periodic"])  # periodic rows: the same bits
    np.testing.assert_allclose(r["ce"], ref.cross_entropy(rows, target, reduction="none"), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r["softmax"], ref.softmax(rows), rtol=2e-6, atol=1e-35)
    np.testing.assert_allclose(r["softmax_row_sum"], 1.0, rtol=1e-5)
    want_loss, want_grad = ref.cross_entropy_with_grad(rows, target, reduction="none")
    np.testing.assert_allclose(r["ceg"][0], want_loss, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r["ceg"][1], want_grad, rtol=2e-6, atol=1e-7)


def _long_row_results():
    rng = np.random.default_rng(1)
    base = (rng.standard_normal(PERIOD) * 4).astype(np.float32)
    x = np.empty((1, LONG), np.float32)
    flat = x.reshape(-1)
    full = LONG // PERIOD * PERIOD
    flat[:full].reshape(-1, PERIOD)[...] = base
    flat[full:] = base[: LONG - full]
    flat[-1] = 40.0  # the maximum, past 2**31: a wrapped index would miss it
    lse = fs.logsumexp(x)
    assert fs.softmax(x, out=x) is x
    spans = [(0, PERIOD), (2**31 - 4000, 2**31 + 10), (LONG - 1 - PERIOD, LONG - 1)]  # all but the max
    slices = [flat[a:b].copy() for a, b in spans]
    last = flat[-1]
    del x, flat
    gc.collect()
    return base, lse, spans, slices, last


def test_one_row_longer_than_2_31_elements():
    base, lse, spans, slices, last = _long_row_results()
    # The exact row sum of exp(x - 40) from the period (float64): the row is `base` repeated,
    # then 40.
    m = 40.0
    e = np.exp(base.astype(np.float64) - m)
    reps, tail = divmod(LONG - 1, PERIOD)
    total = reps * e.sum() + e[:tail].sum() + 1.0
    np.testing.assert_allclose(lse, [m + np.log(total)], rtol=1e-6)
    for (a, b), got in zip(spans, slices):
        idx = np.arange(a, b)
        want = np.exp(base[idx % PERIOD].astype(np.float64) - m) / total
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-40)
    np.testing.assert_allclose(last, 1.0 / total, rtol=2e-6)
