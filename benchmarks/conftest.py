"""pytest-benchmark suite: fastsoftmax against its peers, case by case (issue 5).

The cases and competitors come from ``fastsoftmax._bench`` (the same list as
``python -m fastsoftmax``).  Each test is one (case, competitor) pair, in the
pytest-benchmark group of its operation, dtype and shape; besides timing it checks the
competitor's result against a float64 oracle (fastsoftmax and its reference twin tightly,
peers loosely enough only to catch a mis-configured benchmark).  Peers that are not
installed (torch, JAX, SciPy) are skipped.

    python -m pytest benchmarks --benchmark-only                      # measure (1 thread)
    python -m pytest benchmarks --benchmark-only --bench-threads 2
    python -m pytest benchmarks --benchmark-disable -q --quick-bench  # CI: do they work?

``--quick-bench`` (or ``FASTSOFTMAX_QUICK_BENCH=1``) shrinks the shapes; the thread count
(``--bench-threads``, or ``FASTSOFTMAX_BENCH_THREADS``, default 1) pins fastsoftmax, torch
and JAX alike.  ``python -m pytest`` alone collects only ``tests/`` (testpaths).
"""

import os
import sys

import pytest

import fastsoftmax as fs
from fastsoftmax import _bench


def pytest_addoption(parser):
    group = parser.getgroup("fastsoftmax benchmarks")
    group.addoption("--quick-bench", action="store_true", default=False,
                    help="small shapes (env FASTSOFTMAX_QUICK_BENCH=1): check the benchmarks work")
    group.addoption("--bench-threads", type=int, default=None, metavar="N",
                    help="threads for fastsoftmax and every peer (env FASTSOFTMAX_BENCH_THREADS; "
                         "default 1)")


def _quick(config) -> bool:
    return config.getoption("--quick-bench") or os.environ.get("FASTSOFTMAX_QUICK_BENCH", "") not in ("", "0")


def _threads(config) -> int:
    threads = config.getoption("--bench-threads")
    if threads is None:
        threads = int(os.environ.get("FASTSOFTMAX_BENCH_THREADS", "1"))
    return threads


def pytest_report_header(config):
    return f"fastsoftmax benchmarks: threads={_threads(config)}, quick={_quick(config)}"


@pytest.fixture(scope="module", autouse=True)
def pinned_threads(request):
    """Pin fastsoftmax, torch and JAX to the benchmark's thread count (jax is imported
    lazily, so its pool is sized by the first case that uses it), and put fastsoftmax's
    and torch's counts back afterwards for any test run in the same session."""
    before = fs.get_num_threads()
    torch = sys.modules.get("torch")
    torch_before = torch.get_num_threads() if torch is not None else None
    _bench.configure_threads(_threads(request.config))
    yield
    fs.set_num_threads(before)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(torch_before if torch_before is not None else os.cpu_count() or 1)


def pytest_generate_tests(metafunc):
    if "bench" not in metafunc.fixturenames:
        return
    ops = metafunc.module.OPS
    params = [
        pytest.param((case, name), id=f"{case.name}-{name}")
        for case in _bench.cases(quick=_quick(metafunc.config))
        if case.op in ops
        for name in _bench.competitors_for(case)
    ]
    metafunc.parametrize("bench", params)


class Measured:
    """What a benchmark test checks: the error against the oracle and its bound."""

    def __init__(self, case, name, error, tol):
        self.case, self.name, self.error, self.tolerance = case, name, error, tol

    def __repr__(self):
        return f"<{self.name} on {self.case.name}: error {self.error} (bound {self.tolerance})>"


@pytest.fixture
def run_bench(benchmark):
    """Time one (case, competitor) pair with pytest-benchmark; returns a :class:`Measured`."""

    def run(bench):
        case, name = bench
        ok, why = _bench.available(name)
        if not ok:
            pytest.skip(why)
        try:
            runner = _bench.prepare(case, name)
        except _bench.Unavailable as exc:
            pytest.skip(str(exc))
        benchmark.group = case.group
        benchmark.extra_info.update(competitor=name, case=case.name, dtype=case.dtype,
                                    shape=list(case.shape))
        error = tol = None
        if runner.result is not None:
            error = _bench.max_abs_error(runner.result(), _bench.oracle(case))
            tol = _bench.tolerance(case, name)
            benchmark.extra_info.update(max_abs_error=error, tolerance=tol)
        benchmark(runner.run)
        return Measured(case, name, error, tol)

    return run
