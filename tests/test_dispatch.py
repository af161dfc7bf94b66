"""Which instruction set's kernel a call runs.

On AMD CPUs with AVX-512 the activations' and losses' tables mix in AVX2 kernels for the row
shapes where those measured faster (fs_common.h's fs_pick_mixed; ``fastsoftmax.isa`` is then
"avx512+avx2"): softmax's short rows (float32 up to 128 columns, float64 up to 32) and the
cross-entropy's short rows (class indices, no smoothing, up to 32 columns).  Each case below
is computed in fresh interpreters forced to ``FASTSOFTMAX_ISA=avx2`` and ``=avx512``; the two
kernels give different bits (their exps differ), so the mixed table's result says which one
ran.  These run where that table is in use and skip elsewhere (there is no mix to check).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import fastsoftmax as fs
from fastsoftmax import _losses

PKG_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fs.__file__)))

# (operation, dtype, columns, extra keyword arguments, the kernel the mixed table must run)
CASES = [
    pytest.param("softmax", "float32", 10, {}, "avx2", id="softmax-f32-10-avx2"),
    pytest.param("softmax", "float32", 128, {}, "avx2", id="softmax-f32-128-avx2"),
    pytest.param("softmax", "float32", 129, {}, "avx512", id="softmax-f32-129-avx512"),
    pytest.param("softmax", "float64", 32, {}, "avx2", id="softmax-f64-32-avx2"),
    pytest.param("softmax", "float64", 33, {}, "avx512", id="softmax-f64-33-avx512"),
    pytest.param("log_softmax", "float32", 10, {}, "avx512", id="log_softmax-f32-10-avx512"),
    pytest.param("log_softmax", "float64", 10, {}, "avx512", id="log_softmax-f64-10-avx512"),
    pytest.param("cross_entropy_with_grad", "float32", 10, {}, "avx2", id="ce-f32-10-avx2"),
    pytest.param("cross_entropy_with_grad", "float64", 32, {}, "avx2", id="ce-f64-32-avx2"),
    pytest.param("cross_entropy_with_grad", "float32", 33, {}, "avx512", id="ce-f32-33-avx512"),
    pytest.param("cross_entropy_with_grad", "float32", 10, {"label_smoothing": 0.1}, "avx512",
                 id="ce-f32-10-smoothed-avx512"),
]

_PROGRAM = """
import hashlib, sys
import numpy as np
import fastsoftmax as fs
cases = eval(sys.argv[1])
for op, dtype, ncols, kw in cases:
    rng = np.random.default_rng(ncols)
    x = (3 * rng.standard_normal((300, ncols))).astype(dtype)
    if op == "cross_entropy_with_grad":
        loss, grad = fs.cross_entropy_with_grad(x, rng.integers(0, ncols, 300), **kw)
        result = np.concatenate([np.ravel(loss), grad.ravel()])
    else:
        result = getattr(fs, op)(x, **kw)
    print(hashlib.sha256(result.tobytes()).hexdigest())
"""

_CASE_ARGS = [tuple(p.values[:4]) for p in CASES]


def _run(code, isa, *args):
    """stdout of `code` in a fresh interpreter with FASTSOFTMAX_ISA=isa (None: unset)."""
    env = dict(os.environ)
    env.pop("FASTSOFTMAX_ISA", None)
    if isa is not None:
        env["FASTSOFTMAX_ISA"] = isa
    env["PYTHONPATH"] = PKG_ROOT + os.pathsep + env.get("PYTHONPATH", "")
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
    if fs.isa != "avx512+avx2":
        pytest.skip(f"this CPU's tables are not mixed (fastsoftmax.isa == {fs.isa!r})")
    return {isa: _digests(isa) for isa in (None, "avx2", "avx512")}


@pytest.mark.parametrize("op, dtype, ncols, kw, kernel", CASES)
def test_mixed_table_runs_the_kernel_it_names(digests, op, dtype, ncols, kw, kernel):
    case = repr((op, dtype, ncols, kw))
    assert digests["avx2"][case] != digests["avx512"][case], "both kernels give these bits: the case shows nothing"
    assert digests[None][case] == digests[kernel][case]


def test_every_table_names_the_same_instruction_set():
    assert fs.isa == _losses.ISA
    assert fs.isa in {"avx512+avx2", "avx512", "avx2", "baseline"}


@pytest.mark.parametrize("forced", ["avx512", "avx2", "baseline"])
def test_forcing_an_instruction_set_unmixes_the_tables(forced):
    """FASTSOFTMAX_ISA=avx512 keeps every kernel at AVX-512; a level the CPU lacks is not taken."""
    code = "import fastsoftmax as fs; from fastsoftmax import _losses; print(fs.isa, _losses.ISA)"
    default = _run(code, None)[0]
    levels = ["baseline", "avx2", "avx512"]
    best = "avx512" if default.startswith("avx512") else default
    expected = levels[min(levels.index(forced), levels.index(best))]
    assert _run(code, forced) == [expected, expected]
