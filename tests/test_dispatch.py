"""Which instruction set's kernel a call runs.

On AMD Zen 4 the activations' and losses' tables mix in AVX2 kernels for the row shapes where
those measured faster (fs_common.h's fs_pick_mixed; ``fastsoftmax.isa`` is then
"avx512+avx2"): float32 softmax's rows of up to 128 columns, float32 log_softmax's medium
rows of whole vectors (48..128 columns; those of both run through an AVX-512 form of the AVX2
kernels, with their bits), and the float32 cross-entropy's short rows (class indices, no
smoothing, up to 32 columns).  float64 rows
keep AVX-512 (their short-row blocks are transposed in registers, as AVX2's are).
``FASTSOFTMAX_ISA=avx512+avx2`` forces that mix on any AVX-512 CPU, so these tests run
wherever AVX-512 does.  Each case is computed in fresh interpreters forced to ``avx2``,
``avx512`` and the mix; the two kernels give different bits (their exps, or the order of
their additions, differ), so the mix's result says which one ran.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import fastsoftmax as fs
from fastsoftmax import _losses

PKG_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fs.__file__)))

# (operation, dtype, columns, the kernel the mixed table must run): float32 on either side of
# the thresholds, float64 (AVX-512 at every width) at 10 and 32 columns.  Short cross-entropy
# rows with label smoothing or probability targets are not routed either, but their per-row
# path is compiler-vectorised C shared by both instruction sets: the sanitizer's -O1 build
# gave both the same bits, so they cannot show which table ran.
ROUTES = [
    ("softmax", "float32", 10, "avx2"),
    ("softmax", "float32", 128, "avx2"),
    ("softmax", "float32", 129, "avx512"),
    ("softmax", "float64", 10, "avx512"),
    ("softmax", "float64", 32, "avx512"),
    ("log_softmax", "float32", 10, "avx512"),
    ("log_softmax", "float32", 64, "avx2"),
    ("log_softmax", "float32", 128, "avx2"),
    ("log_softmax", "float32", 100, "avx512"),
    ("log_softmax", "float32", 129, "avx512"),
    ("log_softmax", "float64", 10, "avx512"),
    ("cross_entropy_with_grad", "float32", 10, "avx2"),
    ("cross_entropy_with_grad", "float32", 33, "avx512"),
    ("cross_entropy_with_grad", "float64", 10, "avx512"),
    ("cross_entropy_with_grad", "float64", 32, "avx512"),
]
CASES = [pytest.param(*route, id="-".join(map(str, route))) for route in ROUTES]

_PROGRAM = """
import hashlib, sys
import numpy as np
import fastsoftmax as fs
cases = eval(sys.argv[1])
for op, dtype, ncols in cases:
    rng = np.random.default_rng(ncols)
    x = (3 * rng.standard_normal((300, ncols))).astype(dtype)
    if op == "cross_entropy_with_grad":
        loss, grad = fs.cross_entropy_with_grad(x, rng.integers(0, ncols, 300))
        result = np.concatenate([np.ravel(loss), grad.ravel()])
    else:
        result = getattr(fs, op)(x)
    print(hashlib.sha256(result.tobytes()).hexdigest())
"""

_CASE_ARGS = [route[:3] for route in ROUTES]


def _run(code, isa, *args):
    """stdout of `code` in a fresh interpreter with FASTSOFTMAX_ISA=isa (None: unset)."""
    env = dict(os.environ)
    env.pop("FASTSOFTMAX_ISA", None)
    if isa is not None:
        env["FASTSOFTMAX_ISA"] = isa
    env["PYTHONPATH"] = os.pathsep.join(p for p in (PKG_ROOT, env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def _digests(isa):
    """Each case's result digest (keyed by repr(case)), computed with FASTSOFTMAX_ISA=isa."""
    return dict(zip(map(repr, _CASE_ARGS), _run(_PROGRAM, isa, repr(_CASE_ARGS))))


@pytest.fixture(scope="module")
def digests():
    if os.environ.get("FASTSOFTMAX_ISA") is not None:
        pytest.skip("FASTSOFTMAX_ISA is set: the default tables are not in use")
    code = "import fastsoftmax as fs; print(fs.isa)"
    if _run(code, "avx512") != ["avx512"]:
        pytest.skip("no AVX-512 on this CPU: nothing is mixed")
    return {isa: _digests(isa) for isa in ("avx512+avx2", "avx2", "avx512")}


@pytest.mark.parametrize("op, dtype, ncols, kernel", CASES)
def test_mixed_table_runs_the_kernel_it_names(digests, op, dtype, ncols, kernel):
    case = repr((op, dtype, ncols))
    assert digests["avx2"][case] != digests["avx512"][case], "both kernels give these bits: the case shows nothing"
    assert digests["avx512+avx2"][case] == digests[kernel][case]


# float32 softmax and log_softmax rows that the mix runs through the AVX-512 form of the AVX2
# kernels (softmax_medium_table_span, log_softmax_medium_table_span: medium rows of whole
# vectors, 16 rows a block, fs_avx512.h): the AVX2 kernels' bits in every case.  (rows,
# columns, content, threads, out= offset in elements or None): rows after the last block,
# every width it is compiled for, blocks it turns down
# (a row wider than FS_EXACT_SPREAD, rows with NaN or infinities), results streamed (8 MB,
# aligned) and not (an out= one element past the pool's alignment), two threads.  (log_softmax
# calls of fewer than 16 rows keep the AVX-512 kernels.)
TABLE_ROUTES = [
    (16, 48, "normal", 1, None),
    (17, 64, "normal", 1, None),
    (40, 80, "wide", 1, None),
    (300, 96, "special", 1, None),
    (1003, 112, "normal", 2, None),
    (77, 128, "confident", 1, None),
    (16384, 128, "normal", 1, None),
    (16384, 128, "wide", 2, None),
    (16400, 128, "special", 1, 1),
    (16390, 128, "special", 2, None),  # streamed, with blocks turned down and rows after the last
    (200, 100, "normal", 1, None),  # not whole vectors: softmax's AVX2 blocks themselves
]
def _table_id(op, route):
    rows, cols, content, threads, offset = route
    return f"{op}-{rows}x{cols}-{content}-t{threads}-out{offset}"


TABLE_CASES = [pytest.param(op, *route, id=_table_id(op, route))
               for op in ("softmax", "log_softmax") for route in TABLE_ROUTES if op == "softmax" or route[1] % 16 == 0]

_TABLE_PROGRAM = """
import hashlib, sys
import numpy as np
import fastsoftmax as fs
for rows, cols, content, threads, offset in eval(sys.argv[1]):
    rng = np.random.default_rng(rows * cols)
    x = (3 * rng.standard_normal((rows, cols))).astype(np.float32)
    if content == "wide":
        x[rows // 2, 3] = 40.0
    elif content == "confident":
        x *= 8
    elif content == "special":
        x[1, 2], x[20, 0], x[21, :], x[40, 5], x[41, 7] = np.nan, np.inf, -np.inf, -np.inf, np.inf
    fs.set_num_threads(threads)
    for op in (fs.softmax, fs.log_softmax):
        if offset is None:
            y = op(x)
        else:
            y = np.empty(rows * cols + offset, np.float32)[offset:].reshape(rows, cols)
            op(x, out=y)
        y = np.where(np.isnan(y), np.float32(7.0), y)  # a NaN row may hold another NaN
        print(hashlib.sha256(y.tobytes()).hexdigest())
"""


@pytest.fixture(scope="module")
def table_digests():
    if os.environ.get("FASTSOFTMAX_ISA") is not None:
        pytest.skip("FASTSOFTMAX_ISA is set: the default tables are not in use")
    if _run("import fastsoftmax as fs; print(fs.isa)", "avx512") != ["avx512"]:
        pytest.skip("no AVX-512 on this CPU: nothing is mixed")
    return {isa: _run(_TABLE_PROGRAM, isa, repr(TABLE_ROUTES)) for isa in ("avx512+avx2", "avx2")}


@pytest.mark.parametrize("op, rows, cols, content, threads, offset", TABLE_CASES)
def test_mixed_medium_rows_give_the_avx2_bits(table_digests, op, rows, cols, content, threads, offset):
    i = 2 * TABLE_ROUTES.index((rows, cols, content, threads, offset)) + (op == "log_softmax")
    assert table_digests["avx512+avx2"][i] == table_digests["avx2"][i]


def test_the_default_mixes_exactly_on_amd_zen4(digests):
    """Where the default is the mix (AMD family 19h), it gives the forced mix's bits throughout;
    elsewhere the default is AVX-512 throughout."""
    default = _digests(None)
    expected = "avx512+avx2" if fs.isa == "avx512+avx2" else "avx512"
    assert fs.isa in {"avx512+avx2", "avx512"}
    assert default == digests[expected]


def test_every_table_names_the_same_instruction_set():
    assert fs.isa == _losses.ISA
    assert fs.isa in {"avx512+avx2", "avx512", "avx2", "baseline"}


@pytest.mark.parametrize("forced", ["avx512+avx2", "avx512", "avx2", "baseline"])
def test_forcing_an_instruction_set(forced):
    """FASTSOFTMAX_ISA=avx512 keeps every kernel at AVX-512, avx512+avx2 mixes; a level the CPU
    lacks is not taken."""
    code = "import fastsoftmax as fs; from fastsoftmax import _losses; print(fs.isa, _losses.ISA)"
    default = _run(code, None)[0]
    levels = ["baseline", "avx2", "avx512"]
    best = "avx512" if default.startswith("avx512") else default
    level = levels[min(levels.index(forced.split("+")[0]), levels.index(best))]
    expected = "avx512+avx2" if forced == "avx512+avx2" and level == "avx512" else level
    assert _run(code, forced) == [expected, expected]
