"""fastsoftmax._memory_floor.stream_copy, the benchmark's streaming-store copy (not public API).

It is timed as a floor, but it must still copy: checked against np.copyto over sizes that
take every branch (bytes before the first 16-byte boundary of dst, whole 64-byte steps, the
tail), with src and dst at every offset within a line."""

import numpy as np
import pytest

from fastsoftmax._memory_floor import stream_copy

SIZES = [0, 1, 15, 16, 17, 63, 64, 65, 127, 128, 200, 4096 + 37, (1 << 20) + 5]
OFFSETS = [0, 1, 8, 15, 16, 33, 63]


def _start(buf: np.ndarray, offset: int) -> int:
    """The index of `buf` that lies `offset` bytes past a 64-byte boundary."""
    return (-buf.ctypes.data) % 64 + offset


@pytest.mark.parametrize("nbytes", SIZES, ids=[f"{n}B" for n in SIZES])
@pytest.mark.parametrize("dst_offset", OFFSETS, ids=[f"dst+{o}" for o in OFFSETS])
@pytest.mark.parametrize("src_offset", [0, 5], ids=["src+0", "src+5"])
def test_stream_copy_copies_like_copyto(nbytes, dst_offset, src_offset):
    rng = np.random.default_rng(nbytes * 131 + dst_offset * 7 + src_offset)
    src_buf = rng.integers(0, 256, nbytes + 256, dtype=np.uint8)
    dst_buf = rng.integers(0, 256, nbytes + 256, dtype=np.uint8)
    expected = dst_buf.copy()
    s0, d0 = _start(src_buf, src_offset), _start(dst_buf, dst_offset)
    src, dst = src_buf[s0:s0 + nbytes], dst_buf[d0:d0 + nbytes]
    np.copyto(expected[d0:d0 + nbytes], src)
    assert stream_copy(dst, src) is None
    assert np.array_equal(dst_buf, expected)  # the copy, and not a byte outside it


def test_stream_copy_of_a_float_array():
    src = np.random.default_rng(0).standard_normal((300, 129)).astype(np.float32)
    dst = np.full_like(src, np.nan)
    stream_copy(dst, src)
    assert np.array_equal(dst, src)


@pytest.mark.parametrize(
    "make, exc, words",
    [
        (lambda d, s: (d.tolist(), s), TypeError, "'dst' must be a numpy.ndarray, not list"),
        (lambda d, s: (d, s.tolist()), TypeError, "'src' must be a numpy.ndarray, not list"),
        (lambda d, s: (d[:, ::2], s[:4]), ValueError, "'dst' must be C-contiguous"),
        (lambda d, s: (d[:4], s[:, ::2]), ValueError, "'src' must be C-contiguous"),
        (lambda d, s: (d[:-1], s), ValueError, "'dst' has 224 bytes, argument 'src' 256"),
    ],
    ids=["dst-list", "src-list", "dst-strided", "src-strided", "size-mismatch"],
)
def test_stream_copy_rejects_bad_arguments_and_writes_nothing(make, exc, words):
    src = np.arange(64, dtype=np.float32).reshape(8, 8)
    dst = np.zeros((8, 8), dtype=np.float32)
    d, s = make(dst, src)
    with pytest.raises(exc, match=words):
        stream_copy(d, s)
    assert not dst.any()


def test_stream_copy_rejects_a_read_only_dst():
    src = np.arange(8.0)
    dst = np.zeros(8)
    dst.flags.writeable = False
    with pytest.raises(ValueError, match="'dst' is read-only"):
        stream_copy(dst, src)
    assert not dst.any()
