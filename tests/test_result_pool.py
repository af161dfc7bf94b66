"""Large results reuse freed memory (fastsoftmax._result_pool, _src/fs_result_pool.h).

Results of MIN_POOLED_BYTES (32 MiB) or more are allocated by a NumPy memory handler that
keeps a few freed blocks, results of MIN_ALIGNED_BYTES (1 MiB) or more by one that aligns
them to 64 bytes.  These tests hold them to what an array's memory must do: the
handlers are used only for large results, a kept block is handed out again (and its stale
contents never show through a result), the limit and the number of blocks kept hold,
resize keeps the data, and the environment variable sets the limit.
"""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
from numpy._core.multiarray import get_handler_name

import fastsoftmax as fs
from fastsoftmax import _result_pool as pool
from fastsoftmax import reference as ref

POOL = "fastsoftmax_result_pool"
ALIGNED = "fastsoftmax_aligned"
BIG_ROWS, BIG_COLS = 168, 50257  # 33.8 MB float32: just above MIN_POOLED_BYTES (32 MiB)


@pytest.fixture
def fresh_pool():
    """An empty pool with the default limit, restored afterwards."""
    limit = pool.get_limit()
    pool.set_limit(pool.DEFAULT_CACHE_MB << 20)
    gc.collect()  # a pooled array of an earlier test freed now, not in the middle of this one
    pool.release()
    yield
    pool.release()
    pool.set_limit(limit)


def _handler(a):
    """Name of the memory handler of the array that owns `a`'s data."""
    while a.base is not None:
        a = a.base
    return get_handler_name(a)


def _block(nbytes):
    """Length of the pool block holding `nbytes` of data (64-byte header, 2 MiB grain)."""
    grain = 2 << 20
    return (nbytes + 64 + grain - 1) // grain * grain


def _big(dtype=np.float32, seed=0):
    return np.random.default_rng(seed).standard_normal((BIG_ROWS, BIG_COLS)).astype(dtype)


def test_big_inputs_are_above_the_threshold():
    assert _big().nbytes >= pool.MIN_POOLED_BYTES > _big()[:-40].nbytes


LARGE_RESULTS = {
    "softmax": lambda x: fs.softmax(x),
    "log_softmax": lambda x: fs.log_softmax(x),
    "softmax_backward": lambda x: fs.softmax_backward(x, x),
    "log_softmax_backward": lambda x: fs.log_softmax_backward(x, x),
    "softmax_general_path": lambda x: fs.softmax(x, axis=(0, 1)),
    "cross_entropy_with_grad": lambda x: fs.cross_entropy_with_grad(x, np.zeros(len(x), np.int64))[1],
}


@pytest.mark.parametrize("func", LARGE_RESULTS.values(), ids=LARGE_RESULTS.keys())
def test_large_results_come_from_the_pool(fresh_pool, func):
    assert _handler(func(_big())) == POOL


@pytest.mark.parametrize("func", LARGE_RESULTS.values(), ids=LARGE_RESULTS.keys())
def test_smaller_results_are_only_aligned(fresh_pool, func):
    # below MIN_POOLED_BYTES, from MIN_ALIGNED_BYTES (1 MiB): the aligning handler, not the pool
    x = _big()[:-40]
    assert pool.MIN_ALIGNED_BYTES <= x.nbytes < pool.MIN_POOLED_BYTES
    res = func(x)
    assert _handler(res) == ALIGNED
    assert res.ctypes.data % 64 == 0


@pytest.mark.parametrize("func", LARGE_RESULTS.values(), ids=LARGE_RESULTS.keys())
@pytest.mark.parametrize("rows", [52, 53, 59, 64], ids=lambda r: f"rows{r}")
def test_results_of_a_mebibyte_or_more_are_64_byte_aligned(func, rows):
    # malloc aligns to 16 bytes: a result inside a cache line would split every vector store
    x = _big(seed=rows)[:rows, :5041]  # 52 rows: just below 1 MiB float32, 53 and more above
    res = func(np.ascontiguousarray(x))
    if x.nbytes >= pool.MIN_ALIGNED_BYTES:
        assert _handler(res) == ALIGNED
        assert res.ctypes.data % 64 == 0
        assert res.flags.writeable and res.flags.c_contiguous
    else:
        assert _handler(res) == get_handler_name()


@pytest.mark.parametrize("factor", [0.1, 1.0, 1.7, 40.0], ids=["shrink", "same", "grow", "grow_much"])
def test_aligned_resize_keeps_the_data(factor):
    a = pool.empty((1 << 19,), np.float32)  # 2 MiB: the aligning handler
    assert get_handler_name(a) == ALIGNED
    a[:] = np.arange(a.size, dtype=np.float32)
    n = int(a.size * factor)
    a.resize((n,), refcheck=False)
    kept = min(n, 1 << 19)
    np.testing.assert_array_equal(a[:kept], np.arange(kept, dtype=np.float32))
    assert get_handler_name(a) == ALIGNED
    assert a.ctypes.data % 64 == 0
    a[:] = 1.0  # all of the new length is writable (a memory checker sees any overrun)


def test_the_reference_never_uses_the_pool(fresh_pool):
    assert _handler(ref.softmax(_big())) == get_handler_name()


def test_a_freed_block_is_handed_out_again(fresh_pool):
    a = pool.empty((BIG_ROWS, BIG_COLS), np.float32)
    address = a.ctypes.data
    assert pool.cached_bytes() == 0
    del a
    assert pool.cached_bytes() == _block(BIG_ROWS * BIG_COLS * 4)
    b = pool.empty((BIG_ROWS, BIG_COLS), np.float32)
    assert b.ctypes.data == address
    assert pool.cached_bytes() == 0


def test_a_block_much_larger_than_asked_is_not_handed_out(fresh_pool):
    a = pool.empty((4 * BIG_ROWS, BIG_COLS), np.float32)
    address = a.ctypes.data
    del a
    b = pool.empty((BIG_ROWS, BIG_COLS), np.float32)
    assert b.ctypes.data != address
    assert pool.cached_bytes() == _block(4 * BIG_ROWS * BIG_COLS * 4)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_stale_contents_never_show_through(fresh_pool, name):
    x = _big(seed=1)
    first = getattr(fs, name)(x)
    first.fill(np.nan)
    del first
    second = getattr(fs, name)(x)
    np.testing.assert_allclose(second, getattr(ref, name)(x), rtol=2e-6, atol=1e-30)


def test_stale_contents_never_show_through_a_gradient(fresh_pool):
    x = _big(seed=2)
    t = np.arange(len(x)) % x.shape[1]
    first = fs.cross_entropy_with_grad(x, t)[1]
    assert _handler(first) == POOL
    first.fill(np.nan)
    del first
    loss, second = fs.cross_entropy_with_grad(x, t)
    want_loss, want_grad = ref.cross_entropy_with_grad(x, t)
    np.testing.assert_allclose(second, want_grad, rtol=2e-5, atol=1e-12)
    np.testing.assert_allclose(loss, want_loss, rtol=2e-5)


def test_the_result_is_writable_aligned_and_owns_its_data(fresh_pool):
    res = fs.softmax(_big())
    assert res.flags.owndata and res.flags.writeable and res.flags.c_contiguous
    assert res.ctypes.data % 64 == 0


def test_at_most_four_blocks_are_kept_oldest_dropped_first(fresh_pool):
    arrays = [pool.empty((BIG_ROWS + 20 * i, BIG_COLS), np.float32) for i in range(5)]
    addresses = [a.ctypes.data for a in arrays]
    for i in range(5):  # freed in order: array 0's block is the oldest
        arrays[i] = None
    # the first (oldest) block was dropped, the last four are kept
    assert pool.cached_bytes() == sum(_block((BIG_ROWS + 20 * i) * BIG_COLS * 4) for i in range(1, 5))
    again = pool.empty((BIG_ROWS + 80, BIG_COLS), np.float32)
    assert again.ctypes.data == addresses[4]


def test_the_limit_holds(fresh_pool):
    pool.set_limit(40 << 20)
    a = pool.empty((BIG_ROWS, BIG_COLS), np.float32)  # 34 MB block
    b = pool.empty((BIG_ROWS, BIG_COLS), np.float32)
    del a
    kept = pool.cached_bytes()
    assert kept == _block(BIG_ROWS * BIG_COLS * 4) <= 40 << 20
    del b  # the second block pushes out the first
    assert pool.cached_bytes() == kept
    pool.set_limit(20 << 20)  # smaller than any block: every kept block is dropped
    assert pool.cached_bytes() == 0
    c = pool.empty((BIG_ROWS, BIG_COLS), np.float32)
    del c
    assert pool.cached_bytes() == 0


def test_limit_zero_turns_the_pool_off(fresh_pool):
    pool.set_limit(0)
    res = fs.softmax(_big())
    assert _handler(res) == ALIGNED  # still 64-byte aligned, from malloc
    assert res.ctypes.data % 64 == 0


def test_release_empties_the_pool(fresh_pool):
    del_me = pool.empty((BIG_ROWS, BIG_COLS), np.float32)
    del del_me
    assert pool.cached_bytes() > 0
    pool.release()
    assert pool.cached_bytes() == 0


@pytest.mark.parametrize("factor", [0.5, 1.0, 3.0], ids=["shrink", "same", "grow"])
def test_resize_keeps_the_data(fresh_pool, factor):
    a = pool.empty((BIG_ROWS * BIG_COLS,), np.float32)
    a[:] = np.arange(a.size, dtype=np.float32)
    n = int(a.size * factor)
    a.resize((n,), refcheck=False)
    kept = min(n, BIG_ROWS * BIG_COLS)
    np.testing.assert_array_equal(a[:kept], np.arange(kept, dtype=np.float32))
    assert get_handler_name(a) == POOL


def test_threads_allocating_and_freeing_at_once(fresh_pool):
    errors = []

    def work(seed):
        try:
            for i in range(6):
                a = pool.empty((BIG_ROWS, BIG_COLS), np.float32)
                a[::997, ::991] = seed + i
                assert np.all(a[::997, ::991] == seed + i)
                del a
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert pool.cached_bytes() <= pool.get_limit()


def _limit_in_subprocess(value):
    code = "from fastsoftmax import _result_pool as p; print(p.get_limit())"
    env = dict(os.environ, FASTSOFTMAX_RESULT_CACHE_MB=value)
    proc = subprocess.run([sys.executable, "-W", "always", "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout), proc.stderr


@pytest.mark.parametrize("value, limit", [("0", 0), ("64", 64 << 20)], ids=["off", "64MB"])
def test_environment_sets_the_limit(value, limit):
    assert _limit_in_subprocess(value) == (limit, "")


@pytest.mark.parametrize("value", ["many", "-1", "1.5", "99999999999999999"])
def test_a_bad_environment_value_warns_and_keeps_the_default(value):
    limit, stderr = _limit_in_subprocess(value)
    assert limit == pool.DEFAULT_CACHE_MB << 20
    assert "FASTSOFTMAX_RESULT_CACHE_MB" in stderr and "RuntimeWarning" in stderr


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_can_use_the_pool_even_if_its_lock_was_held(fresh_pool):
    # Another thread may hold the pool's lock at the moment of a fork; the child gets a new
    # lock (os.register_at_fork), or its first large result would wait forever.
    pool._hold_lock(True)
    try:
        pid = os.fork()
        if pid == 0:  # child: exit 0 only if the pool works; a deadlock is killed by the alarm
            code = 1
            try:
                signal.alarm(20)
                fs.set_num_threads(1)  # GNU OpenMP's thread pool does not survive a fork
                b = pool.empty((BIG_ROWS, BIG_COLS), np.float32)
                b[0, 0] = 1.0
                del b
                code = 0 if _handler(fs.softmax(_big())) == POOL and pool.cached_bytes() > 0 else 2
            finally:
                os._exit(code)
    finally:
        pool._hold_lock(False)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
