"""Activation kernels against the reference twin, a float64 oracle, SciPy, torch and
finite differences, over a generated grid of dtypes, shapes, axes, layouts and special values."""

import inspect
import itertools
import math

import numpy as np
import pytest
from numpy.exceptions import AxisError

import fastsoftmax as fs
from fastsoftmax import _activations as _k
from fastsoftmax import _result_pool
from fastsoftmax import reference as ref

FORWARD = ["softmax", "log_softmax", "logsumexp"]
BACKWARD = ["softmax_backward", "log_softmax_backward"]
ALL = FORWARD + BACKWARD
DTYPES = [np.float32, np.float64]
# Tolerances against a float64 oracle (issue 2): per element, relative.
ORACLE_RTOL = {np.float32: 2e-6, np.float64: 1e-13}
# Kernel against the reference evaluated in the same precision: both round.
PARITY_RTOL = {np.float32: 4e-6, np.float64: 4e-14}
TINY = {np.float32: 1e-35, np.float64: 1e-300}


def _data(shape, dtype, seed=0, scale=3.0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * scale).astype(dtype)


def _oracle(name, *arrays, **kw):
    """The reference evaluated in float64 on the (exactly representable) upcast inputs."""
    return getattr(ref, name)(*[np.asarray(a, np.float64) for a in arrays], **kw)


def _assert_close(actual, desired, rtol, atol=0.0):
    actual = np.asarray(actual)
    desired = np.asarray(desired)
    assert actual.shape == desired.shape
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=atol, equal_nan=True)


# --------------------------------------------------------------------------- layouts

SHAPES = {
    "1d": (7,),
    "one_col": (5, 1),
    "2d": (6, 33),
    "3d": (3, 4, 17),
    "empty_rows": (0, 5),
    "empty_cols": (4, 0),
    "short_rows": (70, 10),  # many short rows: the AVX-512 row-block path
    "short_32": (35, 32),
    "short_1": (40, 1),
    "mid_rows": (37, 100),  # log_softmax: 16 rows per batch, a partial last batch
}


def _layout(a, kind):
    """The same values in another memory layout."""
    if kind == "C":
        return np.ascontiguousarray(a)
    if kind == "F":
        return np.asfortranarray(a)
    if kind == "strided":
        big = np.zeros(tuple(2 * n for n in a.shape), a.dtype)
        view = big[tuple(slice(None, None, 2) for _ in a.shape)]
        view[...] = a
        return view
    if kind == "negative":
        flipped = np.ascontiguousarray(a[tuple(slice(None, None, -1) for _ in a.shape)])
        return flipped[tuple(slice(None, None, -1) for _ in a.shape)]
    if kind == "byteswapped":
        return a.astype(a.dtype.newbyteorder(">"))
    raise AssertionError(kind)


def _grid():
    for shape_id, shape in SHAPES.items():
        for axis in range(-len(shape), len(shape)):
            for layout in ["C", "F", "strided", "negative", "byteswapped"]:
                yield pytest.param(shape, axis, layout, id=f"{shape_id}-axis{axis}-{layout}")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("shape,axis,layout", list(_grid()))
@pytest.mark.parametrize("name", FORWARD)
def test_forward_matches_reference_and_oracle(name, shape, axis, layout, dtype):
    base = _data(shape, dtype, seed=len(shape) + axis)
    x = _layout(base, layout)
    before = x.copy()
    got = getattr(fs, name)(x, axis=axis)
    want = getattr(ref, name)(base, axis=axis)
    assert got.dtype == np.dtype(dtype)
    # The reference's logsumexp rounds max + log(sum) in the input precision, so it may
    # cancel near 0; its error is relative to the row's magnitude.
    atol = PARITY_RTOL[dtype] * np.max(np.abs(base), initial=1.0) if name == "logsumexp" else TINY[dtype]
    _assert_close(got, want, PARITY_RTOL[dtype], atol)
    _assert_close(got, _oracle(name, base, axis=axis), ORACLE_RTOL[dtype], TINY[dtype])
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("shape,axis,layout", list(_grid()))
@pytest.mark.parametrize("name", BACKWARD)
def test_backward_matches_reference_and_oracle(name, shape, axis, layout, dtype):
    forward = fs.softmax if name == "softmax_backward" else fs.log_softmax
    y_base = forward(_data(shape, dtype, seed=1), axis=axis)
    g_base = _data(shape, dtype, seed=2, scale=1.0)
    g, y = _layout(g_base, layout), _layout(y_base, layout)
    got = getattr(fs, name)(g, y, axis=axis)
    want = getattr(ref, name)(g_base, y_base, axis=axis)
    oracle = _oracle(name, g_base, y_base, axis=axis)
    # g - sum(g) cancels: the error is relative to the row's magnitude, not the element's.
    scale = np.max(np.abs(oracle), initial=1.0)
    _assert_close(got, want, PARITY_RTOL[dtype], 8 * PARITY_RTOL[dtype] * scale)
    _assert_close(got, oracle, ORACLE_RTOL[dtype], 8 * ORACLE_RTOL[dtype] * scale)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", BACKWARD)
def test_backward_of_a_large_result_with_special_rows(name, dtype):
    # Results of 8 MiB or more are written with streaming stores (AVX-512) from each row's
    # first cache line on, the elements before it and after the last whole vector with
    # ordinary ones: rows of 1025 elements start at every offset within a line.  Rows with
    # +-inf and NaN in g or y, and y beyond exp's overflow (log_softmax_backward), go
    # through the same pass.
    ncols = 1025
    nrows = -(-(8 << 20) // (ncols * np.dtype(dtype).itemsize)) + 1
    forward = fs.softmax if name == "softmax_backward" else fs.log_softmax
    y = forward(_data((nrows, ncols), dtype, seed=1))
    g = _data((nrows, ncols), dtype, seed=2, scale=1.0)
    scale = np.max(np.abs(_oracle(name, g, y)))  # of the finite data, before the specials
    g[3, 5], y[7, 0], y[11, 1024], g[13, 512] = np.inf, -np.inf, np.nan, np.nan
    y[17, 3] = 100.0 if dtype == np.float32 else 800.0  # exp(y) overflows
    y[19, 2], y[19, 600] = np.inf, -1e4
    with np.errstate(all="ignore"):
        got = getattr(fs, name)(g, y)
        want = getattr(ref, name)(g, y)
    assert np.isfinite(scale)
    _assert_close(got, want, PARITY_RTOL[dtype], 8 * PARITY_RTOL[dtype] * scale)


@pytest.mark.parametrize("n", [64, 128, 1000], ids=lambda n: f"n{n}")
@pytest.mark.parametrize("name", BACKWARD)
def test_float32_backward_sum_of_one_huge_and_many_large_terms(name, n):
    # A sum the tests' hypothesis run found over its bound in the -O1 (sanitizer) build, where
    # the compiler did not vectorise the float32 block sums and added 64 terms in a row: one
    # 1e10 and 63 near 1e6, each rounded to the big one's ulp (1024).  The kernel's float32
    # block sums run in 16 lanes whatever the build: the error stays within a few roundings
    # of each lane's 8 terms, far below n roundings.
    g = np.full(n, 1e6, np.float32) + np.linspace(-1.0, 1.0, n, dtype=np.float32)
    g[0] = 1e10
    y = np.ones(n, np.float32) if name == "softmax_backward" else np.zeros(n, np.float32)
    got = getattr(fs, name)(g, y).astype(np.float64)
    want = _oracle(name, g, y)
    u = 2.0**-24
    bound = 16 * u * np.abs(g.astype(np.float64)).sum() + 2 * u * np.abs(want)
    assert np.all(np.abs(got - want) <= bound)


@pytest.mark.parametrize("name", BACKWARD)
def test_float64_backward_sum_of_a_long_row_stays_within_a_few_ulps(name):
    # 4e6 elements are 31,250 block sums; added in a plain running double sum, float64 lost
    # about n / 128 roundings (23 ulps of the term size for softmax_backward, 36-39 for
    # log_softmax_backward); compensated, about one.  math.fsum gives the correctly rounded
    # sum, an oracle independent of the kernel's summation order: of g itself, or of g * y
    # with values of 20 bits, whose products are exact.
    rng = np.random.default_rng(0)
    n = 4_000_000
    if name == "softmax_backward":
        g = rng.integers(0, 2**20, (1, n)) / 2.0**20
        y = rng.integers(0, 2**20, (1, n)) / 2.0**20
    else:
        g, y = rng.random((1, n)), rng.random((1, n))
    if name == "softmax_backward":
        total = math.fsum((g * y).ravel())
        want = y * (g - total)
        size = y * (g + total)
    else:
        total = math.fsum(g.ravel())
        want = g - np.exp(y) * total
        size = g + np.exp(y) * total
    got = getattr(fs, name)(g, y)
    zero = size == 0  # y = 0 in softmax_backward: both results are exactly 0
    np.testing.assert_array_equal(got[zero], want[zero])
    ulps = np.max(np.abs(got - want)[~zero] / size[~zero]) / np.finfo(np.float64).eps
    assert ulps < 3


@pytest.mark.parametrize("n", [900_000, 4_000_000], ids=["one_row_kernel", "streamed_row"])
@pytest.mark.parametrize("name", FORWARD)
def test_float64_sum_of_a_long_row_is_within_an_ulp(name, n):
    # A row's chunk sums (1024 elements each) were added in a plain running double sum, and
    # logsumexp's in SIMD lanes across the whole row: at these lengths 4-7 ulps off in
    # softmax's 1 / sum, 4-22 in log_softmax's and 13-87 in logsumexp (AVX-512, AVX2,
    # baseline).  Compensated, the sum is within an ulp.
    # Element 0 is the max and 0, so x - max is exact, and each result is read where it
    # shows the sum itself: softmax's y[0] = 1 / sum; log_softmax's -y[0] and logsumexp
    # = log1p(rest), the sum of the other exps, kept small (x <= -20) so that its relative
    # error is not hidden behind log(sum) >> 1.  math.fsum of np.exp is the oracle: the two
    # exps' errors (under an ulp each) average out over a million terms.
    rng = np.random.default_rng(0)
    shift = 1e-3 if name == "softmax" else 20.0
    x = -(np.abs(rng.standard_normal(n)) * 3.0 + shift)
    x[0] = 0.0
    rest = math.fsum(np.exp(x[1:]))
    if name == "softmax":
        want = 1.0 / (1.0 + rest)
        got = fs.softmax(x)[0]
    else:
        want = math.log1p(rest)
        got = -fs.log_softmax(x)[0] if name == "log_softmax" else fs.logsumexp(x)
    assert abs(got - want) <= np.spacing(want)


# ------------------------------------------------------------------ long rows, accuracy


@pytest.mark.parametrize("n", [10, 1000, 100_000, 1_000_000], ids=lambda n: f"n{n}")
@pytest.mark.parametrize("name", FORWARD)
def test_float32_error_does_not_grow_with_row_length(name, n):
    x = _data((2, n), np.float32, seed=n, scale=4.0)
    got = getattr(fs, name)(x)
    _assert_close(got, _oracle(name, x), ORACLE_RTOL[np.float32], TINY[np.float32])


@pytest.mark.parametrize("ncols", [1000, 20], ids=["rows", "short_rows"])
@pytest.mark.parametrize("spread", [31.99, 63.9, 100.0], ids=["fast_path", "two_sum_path", "two_sum_path_wide"])
def test_float32_softmax_error_where_x_minus_max_rounds_most(spread, ncols):
    # Rows spanning less than FS_EXACT_SPREAD (32) skip the correction of the rounding of
    # x - m: |x - m| in [16, 32) rounds by up to 2^-20, the largest error the 2e-6 bound has
    # to absorb; wider rows must feed the rounding back (in [32, 64) it reaches 2^-19, and
    # this test fails if they do not).  Maxima with full mantissas make the
    # differences round; 1e6 elements reach the worst case (measured 1.2e-6).
    rng = np.random.default_rng(7)
    nrows = 1_000_000 // ncols
    m = rng.uniform(0.5, 8.0, size=(nrows, 1)).astype(np.float32)
    x = (m - rng.uniform(0.0, spread, size=(nrows, ncols))).astype(np.float32)
    x[:, 0] = m[:, 0]
    got = fs.softmax(x)
    _assert_close(got, ref.softmax(x.astype(np.float64)), ORACLE_RTOL[np.float32], TINY[np.float32])


@pytest.mark.parametrize("ncols", [2, 100], ids=["short_rows", "long_rows"])
def test_float64_exp_is_within_an_ulp(ncols):
    # In a row [0, t, ..., t] with t < -45, 1 + 99 e^t rounds to 1, so softmax returns
    # the kernel's exp(t) itself: held to 2^-52 relative against exp in extended precision
    # (measured worst 0.92 * 2^-52 for the table-driven float64 exp).
    rng = np.random.default_rng(3)
    t = -rng.uniform(45.0, 700.0, size=(4000, 1))
    x = np.concatenate([np.zeros((4000, 1)), np.repeat(t, ncols - 1, axis=1)], axis=1)
    got = fs.softmax(x)[:, 1:]
    want = np.exp(np.repeat(t, ncols - 1, axis=1).astype(np.longdouble))
    rel = np.abs((got.astype(np.longdouble) - want) / want)
    assert float(rel.max()) <= 2.0**-52 * (1 + 1e-9)


@pytest.mark.parametrize("n", [100_000, 1_000_000], ids=lambda n: f"n{n}")
def test_float32_constant_row_sums_exactly(n):
    # A plain float32 running sum of n ones is wrong by far more than 2e-6 at these lengths.
    x = np.full((1, n), 0.25, np.float32)
    np.testing.assert_allclose(fs.softmax(x), np.full((1, n), 1.0 / n), rtol=2e-6)
    np.testing.assert_allclose(fs.logsumexp(x), [0.25 + np.log(n)], rtol=2e-6)


@pytest.mark.parametrize("n", [10, 1000, 100_000, 1_000_000], ids=lambda n: f"n{n}")
@pytest.mark.parametrize("name", FORWARD)
def test_float64_long_rows(name, n):
    x = _data((2, n), np.float64, seed=n, scale=4.0)
    got = getattr(fs, name)(x)
    # An independent float64 formula (not the reference): scipy-style with log/exp of the max.
    m = x.max(axis=-1, keepdims=True)
    lse = m + np.log(np.exp(x - m).sum(axis=-1, keepdims=True))
    want = {"softmax": np.exp(x - lse), "log_softmax": x - lse, "logsumexp": lse[:, 0]}[name]
    _assert_close(got, want, 1e-13 * (1 if name != "softmax" else 50), TINY[np.float64])


def _streamed_rows(ncols, dtype):
    """Rows of `ncols` enough for a result on the streaming path (AVX-512; fs_common.h)."""
    assert ncols >= _k.STREAM_MIN_COLS
    return _k.STREAM_MIN_BYTES // (ncols * np.dtype(dtype).itemsize) + 5


@pytest.mark.parametrize("where", ["out_offset0", "out_offset1", "out_offset7", "out_is_x"])
@pytest.mark.parametrize("ncols", [1003, 2100])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_streamed_results_equal_the_in_cache_path(name, dtype, ncols, where):
    # Large results in long rows are written with streaming stores during the next row's
    # sums (AVX-512; STREAM_MIN_BYTES / STREAM_MIN_COLS): the values must be those of the
    # in-cache path bit for bit (the same rows in a small call), with special rows, float32
    # rows wide enough for the TwoSum correction, rows whose length is not a multiple of the
    # vector, float64 rows within 708 of their max (the exp without range test, float64
    # softmax's streamed rows of up to 4096 columns) and beyond it, rows of more than one
    # 1024-element chunk (whose sums add in chunks), outputs starting anywhere in a cache line,
    # and in place.
    nrows = _streamed_rows(ncols, dtype)
    x = _data((nrows, ncols), dtype, seed=len(where))
    x[1, 5] = np.nan
    x[2, :] = -np.inf
    x[3, 500] = np.inf
    x[4, 0] = -np.inf
    x[6] *= 30.0  # spans more than 32: the TwoSum path of float32 softmax
    x[7] *= 400.0  # spans more than 708: float64 softmax's exp with its range test
    x[5, 10] = x[5].max() - 707.9  # within 708, an exp of 2^-1022 times 2^(j/16) e^r
    x[-1, -1] = np.nan
    small = np.concatenate([getattr(fs, name)(x[:8]), getattr(fs, name)(x[-8:])])
    fresh = getattr(fs, name)(x)
    finite = np.isfinite(x).all(axis=1)
    want = _oracle(name, x[finite])
    if where == "out_is_x":
        out = x
    else:
        offset = int(where[len("out_offset") :])
        out = np.empty(x.size + offset, dtype)[offset:].reshape(x.shape)
    got = getattr(fs, name)(x, out=out)
    assert got is out
    np.testing.assert_array_equal(np.concatenate([got[:8], got[-8:]]), small)
    np.testing.assert_array_equal(fresh, got)
    _assert_close(got[finite], want, ORACLE_RTOL[dtype], TINY[dtype])


def _medium_data(nrows, ncols, seed):
    """float32 rows (some tests cast them to float64) for the blocks of medium rows (softmax:
    AVX-512 16 rows of 33..128 columns, AVX2 8 rows of 33..256): fast blocks, then a block
    turned down by special rows, one turned down by a row wider than 32, and fast blocks again,
    with a row count that leaves rows after the last block."""
    x = _data((nrows, ncols), np.float32, seed=seed)
    x[17, 3] = np.nan
    x[18, :] = -np.inf
    x[19, -1] = np.inf
    x[20, 0] = -np.inf
    x[40] *= 30.0  # spans more than 32: the TwoSum path of the one-row kernel
    x[50, 0] = np.nan  # a NaN the block's max and min may drop: the row must still be NaN
    last_block = nrows - nrows % 16 - 16  # the last whole block (batch), streamed or not
    x[last_block + 3, :] = -np.inf
    x[last_block + 15, 5] = np.inf
    x[nrows // 32 * 16, 7] = np.nan  # the first block of the second thread's rows
    x[-1, 1] = np.nan
    return x


def _aligned_empty(shape, dtype, offset=0):
    """An uninitialised C-contiguous array starting `offset` elements after a 64-byte boundary."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape))
    buf = np.empty(size * dtype.itemsize + 64 + offset * dtype.itemsize, np.uint8)
    start = (-buf.ctypes.data) % 64 + offset * dtype.itemsize
    return buf[start : start + size * dtype.itemsize].view(dtype).reshape(shape)


def _medium_out(x, where):
    """out= for the medium-row tests: x itself (moved to a 64-byte boundary first for
    "aligned_x"), or a new array `offsetK` elements past a 64-byte boundary.  Results of
    STREAM_MIN_BYTES in 64-byte aligned rows are streamed (AVX-512), others are not."""
    if where in ("out_is_x", "aligned_x"):
        if where == "aligned_x":
            moved = _aligned_empty(x.shape, x.dtype)
            moved[...] = x
            return moved, moved
        return x, x
    return x, _aligned_empty(x.shape, x.dtype, int(where[len("offset") :]))


# offset4 and offset12: 16 and 48 bytes past a line, where NumPy's allocator puts large arrays
MEDIUM_WHERE = ["offset0", "offset1", "offset4", "offset12", "out_is_x", "aligned_x"]


@pytest.mark.parametrize("where", MEDIUM_WHERE)
@pytest.mark.parametrize("size", ["small", "large"])
@pytest.mark.parametrize("ncols", [33, 48, 64, 96, 100, 128, 200, 256])
def test_medium_rows_in_blocks_equal_the_rows_alone(ncols, size, where):
    # float32 softmax of rows of 33..128 goes 16 rows a block on AVX-512 (blocks with special
    # or wide rows are turned down to the one-row kernel), rows of 33..256 8 rows a block on
    # AVX2 (special rows handled inside the block, spans of whole blocks per thread, 64, 128
    # and 256 columns compiled for their width; large results in rows of whole lines starting
    # on lines streamed a block behind, y's rows written whole).  On AVX-512 large results in
    # rows of a whole number of vectors (ncols 48, 64, 96 and 128) are streamed, the next block's max taken
    # during this block's sums, and the lines rows share, when they do not start on lines
    # (offset1, offset4, offset12), streamed with two rows' scales (the last row's tail carried
    # to the next block, stored normally next to a block turned down and at the ends of a
    # thread's span).  Every row must get the bits it gets alone
    # (a call of one row takes the one-row kernel) and in a call of its first or last blocks,
    # in place too, and be within float32 accuracy of the float64 oracle.
    nrows = 80 + 7 if size == "small" else _k.STREAM_MIN_BYTES // (ncols * 4) + 16 * 3 + 7
    x = _medium_data(nrows, ncols, seed=ncols)
    tail = nrows % 16
    small = np.concatenate([fs.softmax(x[:48]), fs.softmax(x[nrows - tail - 32 :])])
    fresh = fs.softmax(x)
    if fresh.nbytes >= _result_pool.MIN_ALIGNED_BYTES:
        assert fresh.ctypes.data % 64 == 0  # so that a fresh result takes the streamed path
    some = np.r_[0:64, nrows - 64 : nrows, 64 : nrows - 64 : 97]
    alone = np.concatenate([fs.softmax(x[i : i + 1]) for i in some])  # before x is overwritten
    want = _oracle("softmax", x)  # special rows as SPEC section 2 has them
    x, out = _medium_out(x, where)
    got = fs.softmax(x, out=out)
    assert got is out
    np.testing.assert_array_equal(np.concatenate([got[:48], got[nrows - tail - 32 :]]), small)
    np.testing.assert_array_equal(fresh, got)
    np.testing.assert_array_equal(got[some], alone)
    _assert_close(got, want, ORACLE_RTOL[np.float32], TINY[np.float32])


@pytest.mark.parametrize("ncols", [33, 40, 63, 64, 65], ids=lambda n: f"C{n}")
def test_float64_medium_rows_in_blocks_equal_the_rows_alone(ncols):
    # float64 softmax of rows of 33..64 goes 8 rows a block on AVX2 (slices of 256 rows, the
    # rest one row at a time; 65 takes the one-row kernel throughout): every row gets the bits
    # it gets alone, special rows included, in place too.
    x = _medium_data(8 * 40 + 5, ncols, seed=ncols).astype(np.float64)
    x[60] *= 400.0  # spans more than 708: the exps with a range test
    got = fs.softmax(x)
    alone = np.concatenate([fs.softmax(x[i : i + 1]) for i in range(x.shape[0])])
    np.testing.assert_array_equal(got, alone)
    inplace = x.copy()
    fs.softmax(inplace, out=inplace)
    np.testing.assert_array_equal(inplace, got)
    _assert_close(got, _oracle("softmax", x), ORACLE_RTOL[np.float64], TINY[np.float64])


@pytest.mark.parametrize("where", MEDIUM_WHERE)
@pytest.mark.parametrize("ncols", [48, 64, 96, 128, 256])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_streamed_medium_log_softmax_equals_the_batch_path(dtype, ncols, where):
    # log_softmax of large results in rows of the batch path (AVX-512: float32 rows of 33..128
    # of a whole number of vectors; AVX2: rows of whole 64-byte lines up to 1 KB, float32 and
    # float64) is streamed, 16 rows a batch: on AVX-512 the next batch's max taken during this
    # batch's sums, the lines rows share when they do not start on lines (offset1, offset4,
    # offset12, and x itself in place) streamed with two rows' values (NaN for a row whose max
    # is not finite); on AVX2 row k of the previous batch streamed after row k's sums, rows
    # off the lines not streamed, the widths 64, 128 and 256 compiled for their width (float64
    # 256 is 2 KB, past the batch path: both take the one-row kernels).  Other results take
    # the in-cache batch path.  The two must agree bit for bit (rows after the last whole
    # batch, special rows), in place too, and be within the accuracy of the dtype against
    # the float64 oracle.
    nrows = _k.STREAM_MIN_BYTES // (ncols * np.dtype(dtype).itemsize) + 16 * 3 + 7
    x = _medium_data(nrows, ncols, seed=ncols + 1).astype(dtype)
    in_cache = np.concatenate([fs.log_softmax(x[:48]), fs.log_softmax(x[-55:])])
    misaligned = _aligned_empty(x.shape, dtype, 4)
    fs.log_softmax(x, out=misaligned)
    fresh = fs.log_softmax(x)
    assert fresh.ctypes.data % 64 == 0  # a result of this size is allocated 64-byte aligned
    want = _oracle("log_softmax", x)
    x, out = _medium_out(x, where)
    got = fs.log_softmax(x, out=out)
    assert got is out
    np.testing.assert_array_equal(np.concatenate([got[:48], got[-55:]]), in_cache)
    np.testing.assert_array_equal(got, misaligned)
    np.testing.assert_array_equal(got, fresh)
    _assert_close(got, want, ORACLE_RTOL[dtype], TINY[dtype])


# ------------------------------------------------------------------------ special values

SPECIAL_ROWS = {
    "nan": [1.0, np.nan, 2.0],
    "nan_and_inf": [np.inf, np.nan, -np.inf],
    "pos_inf": [np.inf, 1.0, 2.0],
    "two_pos_inf": [np.inf, np.inf, 0.0],
    "all_neg_inf": [-np.inf, -np.inf, -np.inf],
    "some_neg_inf": [-np.inf, 0.0, 1.0],
    "huge": [1e30, -1e30, 1e30],
    "huge_neg": [-1e30, -1e30, -1e30 + 1e24],
    "max_float32": [3.4e38, 3.4e38, 0.0],
}

# What SPEC section 2 (torch) prescribes, per row kind: softmax, log_softmax, logsumexp.
SPECIAL_WANT = {
    "nan": ("nan", "nan", np.nan),
    "nan_and_inf": ("nan", "nan", np.nan),
    "pos_inf": ("nan", "nan", np.inf),
    "two_pos_inf": ("nan", "nan", np.inf),
    "all_neg_inf": ("nan", "nan", -np.inf),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("row_id", list(SPECIAL_ROWS))
@pytest.mark.parametrize("impl", [fs, ref], ids=["kernel", "reference"])
def test_special_value_rows(impl, row_id, dtype):
    row = np.array(SPECIAL_ROWS[row_id], dtype)
    x = np.stack([row, np.array([0.0, 1.0, 2.0], dtype)])  # a normal row beside it
    sm, lsm, lse = impl.softmax(x), impl.log_softmax(x), impl.logsumexp(x)
    normal = np.array([0.0, 1.0, 2.0])
    _assert_close(sm[1], np.exp(normal) / np.exp(normal).sum(), 1e-6)
    if row_id in SPECIAL_WANT:
        want_sm, want_lsm, want_lse = SPECIAL_WANT[row_id]
        assert np.isnan(sm[0]).all()
        assert np.isnan(lsm[0]).all()
        np.testing.assert_equal(lse[0], dtype(want_lse))
    else:
        finite_row = row.astype(np.float64)
        m = finite_row.max()
        e = np.exp(finite_row - m)
        _assert_close(sm[0], e / e.sum(), 1e-6)
        _assert_close(lsm[0], (finite_row - m) - np.log(e.sum()), 1e-6)
        _assert_close(lse[0], m + np.log(e.sum()), 1e-6)
        assert np.isfinite(lse[0])
    if row_id == "some_neg_inf":
        assert sm[0, 0] == 0.0
        assert lsm[0, 0] == -np.inf


@pytest.mark.parametrize("ncols", [1, 3, 10, 17, 32], ids=lambda n: f"C{n}")
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_short_row_blocks_in_place_and_into_out(name, dtype, ncols):
    # Short rows go 16 (8) rows a block, and a block's second half runs while the next block
    # is read (log_softmax reads its x again then): in place, every block must still read its
    # own input, never a neighbour's results.
    x = _data((53, ncols), dtype, seed=ncols + 1)
    x[5, 0] = np.nan
    x[20, :] = -np.inf
    x[47, 0] = np.inf
    want = getattr(fs, name)(x)
    out = np.empty_like(x)
    assert getattr(fs, name)(x, out=out) is out
    inplace = x.copy()
    assert getattr(fs, name)(inplace, out=inplace) is inplace
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(inplace, want)
    _assert_close(want, getattr(ref, name)(x.astype(np.float64)), ORACLE_RTOL[dtype], TINY[dtype])


@pytest.mark.parametrize("ncols", [1, 3, 10, 16, 17, 32, 33, 128, 129, 256, 257], ids=lambda n: f"C{n}")
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_special_values_inside_row_blocks(name, dtype, ncols):
    # Short rows are computed 16 (8) rows at a time, and log_softmax of rows of up to 1 KB
    # 16 rows per batch: special rows must not leak into their neighbours, and every row
    # must match the same row computed on its own (which
    # takes the one-row path: the summation order differs, so allow a few rounding errors).
    # Rows 45 and 47 (the block's last lane) are in the last whole block of 16 (and of 8),
    # which short rows finish after their loop (each block's second half is done a block
    # late).  An infinite row is the one that needs softmax's NaN fill (arithmetic gives
    # 0 / inf there); log_softmax's special rows come out NaN from the arithmetic alone.
    x = _data((53, ncols), dtype, seed=ncols)
    x[3, 0] = np.nan
    x[5, :] = -np.inf
    x[17, ncols // 2] = np.inf
    x[20, 0] = -np.inf
    x[33, :] = 1e30
    x[34, 0] = -1e30
    x[45, ncols - 1] = np.nan
    x[47, 0] = np.inf
    got = getattr(fs, name)(x)
    alone = np.concatenate([getattr(fs, name)(x[r : r + 1]) for r in range(x.shape[0])])
    np.testing.assert_array_equal(np.isnan(got), np.isnan(alone))
    finite = np.isfinite(alone)
    np.testing.assert_array_equal(got[~finite], alone[~finite])
    np.testing.assert_allclose(got[finite], alone[finite], rtol=16 * np.finfo(dtype).eps, atol=TINY[dtype])
    want = getattr(ref, name)(x.astype(np.float64))
    _assert_close(got, want, ORACLE_RTOL[dtype], TINY[dtype])


def _nan_hiding_a_far_value(shape, dtype):
    """Rows of 3 * N(0, 1) with, in lane order, -200 then NaN: a vector min takes -200, then
    the NaN (minps returns its second operand), then drops it at the next element, so the
    row can look as narrow as its other values.  The exp that narrow rows get (no clamp, no
    underflow test: AVX2 and AVX-512 float32) then turns -200 into garbage; the NaN must
    still make the whole row NaN.  Short rows take one row per lane (columns 0, 1); rows of
    the one-row kernels 32 elements per accumulator step (elements j, j + 32, ...)."""
    nrows, ncols = shape
    x = _data(shape, dtype, seed=ncols)
    step = 1 if ncols <= 32 else 32
    for r in range(0, nrows, 3):
        j = (r * 7) % (ncols - 2 * step) if ncols > 2 * step else 0
        x[r, j], x[r, j + step] = -200.0, np.nan
    return x


@pytest.mark.parametrize("ncols", [10, 20, 128, 1000], ids=lambda n: f"C{n}")
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_a_nan_the_min_drops_still_makes_the_row_nan(name, dtype, ncols):
    x = _nan_hiding_a_far_value((48, ncols), dtype)
    got = getattr(fs, name)(x)
    nan_rows = np.isnan(x).any(axis=1)
    assert np.isnan(got[nan_rows]).all()
    _assert_close(got[~nan_rows], _oracle(name, x[~nan_rows]), ORACLE_RTOL[dtype], TINY[dtype])


@pytest.mark.parametrize("impl", [fs, ref], ids=["kernel", "reference"])
def test_empty_rows(impl):
    x = np.zeros((3, 0), np.float32)
    assert impl.softmax(x).shape == (3, 0)
    assert impl.log_softmax(x).shape == (3, 0)
    lse = impl.logsumexp(x)
    assert lse.dtype == np.float32
    np.testing.assert_array_equal(lse, [-np.inf] * 3)


@pytest.mark.parametrize("impl", [fs, ref], ids=["kernel", "reference"])
def test_no_runtime_warnings(impl, recwarn):
    x = np.array([[np.nan, np.inf, -np.inf], [-np.inf, -np.inf, -np.inf], [np.inf, np.inf, 1.0]])
    impl.softmax(x), impl.log_softmax(x), impl.logsumexp(x)
    impl.softmax_backward(x, x), impl.log_softmax_backward(x, x)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


@pytest.mark.parametrize("impl", [fs, ref], ids=["kernel", "reference"])
def test_logsumexp_keeps_tiny_terms(impl):
    # gh-18295 in SciPy: log(1 + exp(-40)) must not round to 0.
    np.testing.assert_allclose(impl.logsumexp(np.array([0.0, -40.0])), np.log1p(np.exp(-40.0)), rtol=1e-15)


# ------------------------------------------------------------------------- invariants


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_rows_sum_to_one(dtype):
    p = fs.softmax(_data((64, 513), dtype, scale=10.0))
    np.testing.assert_allclose(p.sum(axis=-1, dtype=np.float64), 1.0, rtol=ORACLE_RTOL[dtype] * 4)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_shift_invariance(name):
    x = _data((8, 100), np.float64)
    a = getattr(fs, name)(x)
    b = getattr(fs, name)(x + 1234.5)
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_exp_log_softmax_is_softmax(dtype):
    x = _data((16, 300), dtype)
    np.testing.assert_allclose(np.exp(fs.log_softmax(x)), fs.softmax(x), rtol=ORACLE_RTOL[dtype] * 8)


def test_logsumexp_is_log_sum_exp_in_float64():
    x = _data((16, 300), np.float64)
    np.testing.assert_allclose(fs.logsumexp(x), np.log(np.exp(x).sum(axis=-1)), rtol=1e-14)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize(
    "ncols, large",
    [(128, False), (128, True), (700, False), (1100, True)],
    ids=["medium", "medium_streamed", "in_cache", "streamed"],
)
def test_same_result_on_one_and_two_threads(dtype, ncols, large):
    # large: a float32 result of STREAM_MIN_BYTES or more (fresh results are 64-byte aligned)
    nrows = _k.STREAM_MIN_BYTES // (ncols * 4) + 16 * 3 + 7 if large else 2000
    x = _data((nrows, ncols), dtype) if ncols != 128 else _medium_data(nrows, ncols, seed=1).astype(dtype)
    saved = fs.get_num_threads()
    try:
        fs.set_num_threads(1)
        one = [fs.softmax(x), fs.log_softmax(x), fs.logsumexp(x)]
        fs.set_num_threads(2)
        two = [fs.softmax(x), fs.log_softmax(x), fs.logsumexp(x)]
    finally:
        fs.set_num_threads(saved)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------- independent peers


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("axis", [0, 1, -1, None, (0, 1)], ids=str)
@pytest.mark.parametrize("name", FORWARD)
def test_matches_scipy(name, axis, dtype):
    special = pytest.importorskip("scipy.special")
    x = _data((9, 31), dtype)
    got = getattr(fs, name)(x, axis=axis)
    want = getattr(special, name)(x.astype(np.float64), axis=axis)
    _assert_close(got, want, ORACLE_RTOL[dtype], TINY[dtype])


def test_scipy_cases():
    # Cases from SciPy's own tests of softmax / log_softmax / logsumexp.
    np.testing.assert_allclose(fs.softmax([1000.0, 0, 0, 0]), [1, 0, 0, 0], atol=1e-300)
    np.testing.assert_allclose(fs.log_softmax([1000.0, 1.0]), [0.0, -999.0])
    np.testing.assert_allclose(fs.logsumexp([1000.0, 1000.0]), 1000 + np.log(2))
    np.testing.assert_allclose(fs.softmax(np.arange(4)), np.exp(np.arange(4)) / np.exp(np.arange(4)).sum(), rtol=1e-13)
    row = np.array([1.0, 325.0, 749.0, 750.0])
    want = np.exp(row - 750) / np.exp(row - 750).sum()
    np.testing.assert_allclose(fs.softmax([row]), [want], rtol=1e-13, atol=1e-300)
    assert fs.logsumexp(np.array([-1e10, -np.inf])) == -1e10
    assert fs.softmax(3.0, axis=None) == 1.0


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("dim", [0, 1, 2])
def test_matches_torch(dim, dtype):
    torch = pytest.importorskip("torch")
    x = _data((4, 5, 66), dtype)
    x[0, 0, 3] = -np.inf
    x[1, 2, :] = -np.inf
    x[2, 1, 7] = np.inf
    x[3, 3, 9] = np.nan
    t = torch.from_numpy(x)
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-14}
    np.testing.assert_allclose(fs.softmax(x, dim), torch.softmax(t, dim).numpy(), equal_nan=True, **tol)
    np.testing.assert_allclose(fs.log_softmax(x, dim), torch.log_softmax(t, dim).numpy(), equal_nan=True, **tol)
    np.testing.assert_allclose(fs.logsumexp(x, dim), torch.logsumexp(t, dim).numpy(), equal_nan=True, **tol)


@pytest.mark.parametrize("name", BACKWARD)
def test_backward_matches_torch_autograd(name):
    torch = pytest.importorskip("torch")
    x = _data((6, 40), np.float64)
    g = _data((6, 40), np.float64, seed=5, scale=1.0)
    t = torch.from_numpy(x).requires_grad_(True)
    fwd = torch.softmax if name == "softmax_backward" else torch.log_softmax
    y = fwd(t, -1)
    y.backward(torch.from_numpy(g))
    got = getattr(fs, name)(g, y.detach().numpy())
    np.testing.assert_allclose(got, t.grad.numpy(), rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------ finite differences


def _fourth_order_gradient(f, x, h=1e-3):
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        def shifted(k):
            xs = x.copy()
            xs[idx] += k * h
            return f(xs)

        grad[idx] = (-shifted(2) + 8 * shifted(1) - 8 * shifted(-1) + shifted(-2)) / (12 * h)
    return grad


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("name", BACKWARD)
def test_backward_against_finite_differences(name, axis):
    x = _data((4, 6), np.float64, seed=3, scale=1.0)
    w = _data((4, 6), np.float64, seed=4, scale=1.0)
    forward = fs.softmax if name == "softmax_backward" else fs.log_softmax

    def loss(z):
        return float(np.sum(w * forward(z, axis=axis)))

    analytic = getattr(fs, name)(w, forward(x, axis=axis), axis=axis)
    np.testing.assert_allclose(analytic, _fourth_order_gradient(loss, x), rtol=1e-8, atol=1e-10)


def test_logsumexp_gradient_is_softmax():
    x = _data((3, 5), np.float64, seed=6, scale=1.0)
    numeric = _fourth_order_gradient(lambda z: float(np.sum(fs.logsumexp(z))), x)
    np.testing.assert_allclose(fs.softmax(x), numeric, rtol=1e-8, atol=1e-10)


# ------------------------------------------------------------------------------- API


@pytest.mark.parametrize("name", sorted(set(fs.__all__) - {"set_num_threads", "get_num_threads", "isa"}))
def test_reference_signature_equals_public(name):
    assert inspect.signature(getattr(ref, name)) == inspect.signature(getattr(fs, name))


@pytest.mark.parametrize(
    "dtype,want",
    [
        (np.int8, np.float64),
        (np.int64, np.float64),
        (np.uint16, np.float64),
        (np.bool_, np.float64),
        (np.float16, np.float16),
        (np.float32, np.float32),
        (np.float64, np.float64),
    ],
    ids=lambda v: np.dtype(v).name,
)
@pytest.mark.parametrize("name", FORWARD)
def test_result_dtypes(name, dtype, want):
    x = (np.arange(12).reshape(3, 4) % 3).astype(dtype)
    got = getattr(fs, name)(x)
    assert got.dtype == np.dtype(want)
    oracle = _oracle(name, x)
    np.testing.assert_allclose(got, oracle, rtol=1e-3 if want == np.float16 else 1e-6)


@pytest.mark.parametrize(
    "g_dtype,y_dtype,want",
    [
        (np.float32, np.float32, np.float32),
        (np.float32, np.float64, np.float64),
        (np.int32, np.float32, np.float64),
        (np.float16, np.float16, np.float16),
        (np.float16, np.float32, np.float32),
    ],
    ids=lambda v: np.dtype(v).name,
)
@pytest.mark.parametrize("name", BACKWARD)
def test_backward_dtype_promotion(name, g_dtype, y_dtype, want):
    g = np.ones((2, 3), g_dtype)
    y = np.full((2, 3), -1.0, y_dtype)
    assert getattr(fs, name)(g, y).dtype == np.dtype(want)
    assert getattr(ref, name)(g, y).dtype == np.dtype(want)


@pytest.mark.parametrize(
    "bad",
    [
        np.ones(3, np.complex128),
        np.array([1, "a"], dtype=object),
        np.array(["a", "b"]),
        np.array([b"a", b"b"]),
        np.array(["2020-01-01"], dtype="datetime64[D]"),
        np.array([1], dtype="timedelta64[s]"),
        np.ones(3, np.longdouble),
    ],
    ids=["complex", "object", "str", "bytes", "datetime", "timedelta", "longdouble"],
)
@pytest.mark.parametrize("name", FORWARD)
@pytest.mark.parametrize("impl", [fs, ref], ids=["kernel", "reference"])
def test_bad_dtypes_raise_type_error(impl, name, bad):
    if bad.dtype == np.longdouble and np.dtype(np.longdouble).itemsize == 8:
        pytest.skip("longdouble is float64 on this platform")
    with pytest.raises(TypeError, match="'x'"):
        getattr(impl, name)(bad)


@pytest.mark.parametrize("name", FORWARD)
@pytest.mark.parametrize("impl", [fs, ref], ids=["kernel", "reference"])
def test_invalid_axis(impl, name):
    with pytest.raises(AxisError):
        getattr(impl, name)(np.ones((2, 3)), axis=2)
    with pytest.raises(AxisError):
        getattr(impl, name)(np.ones((2, 3)), axis=-3)
    with pytest.raises(AxisError):
        getattr(impl, name)(np.float64(1.0))
    with pytest.raises(TypeError, match="axis"):
        getattr(impl, name)(np.ones((2, 3)), axis=1.0)


@pytest.mark.parametrize("name", BACKWARD)
@pytest.mark.parametrize("impl", [fs, ref], ids=["kernel", "reference"])
def test_backward_shape_mismatch(impl, name):
    with pytest.raises(ValueError, match="grad_output"):
        getattr(impl, name)(np.ones((2, 3)), np.ones((2, 4)))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("impl", [fs, ref], ids=["kernel", "reference"])
def test_logsumexp_0d_result_is_numpy_scalar(impl, dtype):
    got = impl.logsumexp(np.array([1.0, 2.0], dtype))
    assert isinstance(got, np.generic)
    assert got.dtype == np.dtype(dtype)
    got = impl.logsumexp(np.ones((2, 3), dtype), axis=None)
    assert isinstance(got, np.generic)


@pytest.mark.parametrize("impl", [fs, ref], ids=["kernel", "reference"])
def test_logsumexp_keepdims(impl):
    x = _data((3, 4, 5), np.float64)
    assert impl.logsumexp(x, axis=1, keepdims=True).shape == (3, 1, 5)
    assert impl.logsumexp(x, axis=(0, 2), keepdims=True).shape == (1, 4, 1)
    assert impl.logsumexp(x, axis=None, keepdims=True).shape == (1, 1, 1)


# ----------------------------------------------------------------------------- out=


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("axis", [0, -1])
def test_out_and_in_place(name, axis, dtype):
    x = _data((5, 9), dtype)
    want = getattr(fs, name)(x, axis=axis)
    out = np.empty_like(x)
    assert getattr(fs, name)(x, axis=axis, out=out) is out
    np.testing.assert_array_equal(out, want)
    inplace = x.copy()
    assert getattr(fs, name)(inplace, axis=axis, out=inplace) is inplace
    np.testing.assert_array_equal(inplace, want)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("impl", [fs, ref], ids=["kernel", "reference"])
def test_overlapping_out_is_as_if_fresh(impl, name):
    buf = _data((6 * 8,), np.float64)
    x = buf[:40].reshape(5, 8)
    want = getattr(impl, name)(x.copy())
    out = buf[8:48].reshape(5, 8)  # shifted by one row
    getattr(impl, name)(x, out=out)
    np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("name", BACKWARD)
@pytest.mark.parametrize("which", ["grad_output", "output"])
def test_backward_in_place(name, which):
    g = _data((4, 7), np.float64, seed=8)
    y = fs.log_softmax(_data((4, 7), np.float64, seed=9))
    want = getattr(fs, name)(g, y)
    g2, y2 = g.copy(), y.copy()
    target = g2 if which == "grad_output" else y2
    assert getattr(fs, name)(g2, y2, out=target) is target
    np.testing.assert_array_equal(target, want)


def test_logsumexp_out():
    x = _data((4, 7), np.float32)
    out = np.full(4, 7.0, np.float32)
    assert fs.logsumexp(x, out=out) is out
    np.testing.assert_array_equal(out, fs.logsumexp(x))
    out0 = np.zeros((), np.float32)
    assert fs.logsumexp(x[0], out=out0) is out0
    assert out0 == fs.logsumexp(x[0])


def test_float16_out_and_result():
    x = _data((3, 8), np.float16)
    out = np.empty((3, 8), np.float16)
    fs.softmax(x, out=out)
    np.testing.assert_allclose(out, _oracle("softmax", x), rtol=2e-3)


@pytest.mark.parametrize(
    "out,exc",
    [
        (np.empty((3, 5)), ValueError),
        (np.empty((3, 4), np.float32), TypeError),
        ([[0.0] * 4] * 3, TypeError),
        ("out", TypeError),
    ],
    ids=["shape", "dtype", "list", "str"],
)
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("impl", [fs, ref], ids=["kernel", "reference"])
def test_bad_out(impl, name, out, exc):
    x = np.ones((3, 4))
    with pytest.raises(exc, match="'out'"):
        getattr(impl, name)(x, out=out)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_read_only_out_raises_and_nothing_changes(name):
    x = _data((3, 4), np.float64)
    out = np.zeros((3, 4))
    out.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        getattr(fs, name)(x, out=out)
    np.testing.assert_array_equal(out, 0.0)


@pytest.mark.parametrize("name", FORWARD)
def test_read_only_input_works(name):
    x = _data((3, 4), np.float32)
    x.flags.writeable = False
    np.testing.assert_array_equal(getattr(fs, name)(x), getattr(fs, name)(x.copy()))


def test_failing_call_leaves_out_untouched():
    out = np.full((2, 3), 5.0)
    with pytest.raises(AxisError):
        fs.softmax(np.ones((2, 3)), axis=3, out=out)
    np.testing.assert_array_equal(out, 5.0)


def test_list_and_scalar_inputs():
    np.testing.assert_allclose(fs.softmax([[1, 2], [3, 4]]), ref.softmax(np.array([[1.0, 2.0], [3.0, 4.0]])))
    assert fs.logsumexp([1, 2, 3]).dtype == np.float64


# --------------------------------------------------------------------------- threads


def test_thread_controls():
    saved = fs.get_num_threads()
    try:
        fs.set_num_threads(1)
        assert fs.get_num_threads() == 1
    finally:
        fs.set_num_threads(saved)
    with pytest.raises(ValueError, match="'n'"):
        fs.set_num_threads(0)
    with pytest.raises(TypeError, match="'n'"):
        fs.set_num_threads(1.5)


def test_threadpoolctl_limits_threads():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    saved = fs.get_num_threads()
    try:
        fs.set_num_threads(2)
        with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
            assert fs.get_num_threads() == 1
    finally:
        fs.set_num_threads(saved)


AXIS_TUPLES = [axes for r in (1, 2, 3) for axes in itertools.combinations(range(3), r)]


@pytest.mark.parametrize("axes", AXIS_TUPLES, ids=str)
@pytest.mark.parametrize("name", FORWARD)
def test_axis_tuples_match_reference(name, axes):
    x = _data((3, 4, 5), np.float64)
    np.testing.assert_allclose(getattr(fs, name)(x, axes), getattr(ref, name)(x, axes), rtol=1e-13)
