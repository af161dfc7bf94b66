"""Benchmark cases and competitors, shared by ``python -m fastsoftmax`` and ``benchmarks/``.

A *case* is one operation at one shape and dtype (issue 5's list); a *competitor* is one
implementation of it: fastsoftmax itself (also with a preallocated ``out=``, which leaves
out the cost of a fresh result array), its pure-NumPy twin ``fastsoftmax.reference``,
``scipy.special`` (activations only), torch on the CPU and jitted JAX on the CPU (each only
when installed), and ``np.copyto`` of an array of the same size (the memory-traffic floor),
for activations and losses also a copy of that array with streaming stores
(``fastsoftmax._memory_floor.stream_copy``: np.copyto reads each destination line before
writing it, streaming stores do not, so this is the floor for a kernel that writes its
result that way, as fastsoftmax does with large results).

For every competitor :func:`prepare` gives a :class:`Runner`: ``run()`` is what is timed
(one call, its result ready: JAX results are blocked on), ``result()`` computes the outputs
afresh for the accuracy check, which compares them with a float64 oracle
(``fastsoftmax.reference`` on float64 copies of the inputs, :func:`oracle`).

Peers are pinned to the thread count given to :func:`configure_threads`: fastsoftmax with
``set_num_threads``, torch with ``torch.set_num_threads``; JAX sizes its CPU thread pool
("tf_XLAEigen" threads) from the CPUs the process may run on when its backend starts, so jax
is imported lazily, with the CPU affinity narrowed to N CPUs for the moment its backend
starts (and restored right after); with N = 1 ``--xla_cpu_multi_thread_eigen=false`` is also
put in ``XLA_FLAGS``.  Nothing here imports torch or jax until a case needs it.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import importlib
import importlib.util
import itertools
import math
import os
import sys
import time
from typing import Callable, Iterable, Sequence

import numpy as np

import fastsoftmax as fs
from fastsoftmax import reference as ref

__all__ = [
    "Case",
    "Runner",
    "COMPETITORS",
    "PEERS",
    "OURS",
    "FLOORS",
    "cases",
    "select",
    "competitors_for",
    "available",
    "prepare",
    "inputs",
    "oracle",
    "max_abs_error",
    "tolerance",
    "configure_threads",
    "thread_report",
    "measure",
    "run_case",
    "Unavailable",
    "TimingSettings",
    "FULL",
    "QUICK",
]

# --------------------------------------------------------------------------------------
# The cases (issue 5)

ACTIVATION_OPS = ("softmax", "log_softmax")
ACTIVATION_SHAPES = ((4096, 1000), (256, 50257), (65536, 10), (16384, 128), (1, 10))
#: Issue 5's three, and a minibatch of 64 samples of 10 classes: the call's own cost.
LOSS_SHAPES = ((4096, 1000), (512, 50257), (65536, 10), (64, 10))
#: SGD layouts as (number of arrays, elements per array).
SGD_LAYOUTS = ((1, 10_000_000), (200, 1000))
DTYPES = ("float32", "float64")

SGD_LR = 1e-3
SGD_MOMENTUM = 0.99
SGD_WEIGHT_DECAY = 1e-4

#: Quick mode keeps every case and its code path (the row length, the number of arrays) but
#: shrinks the rows (the array size for SGD) so that a case takes milliseconds.
QUICK_SHAPES = {
    (False, (4096, 1000)): (32, 1000),
    (False, (256, 50257)): (2, 50257),
    (False, (512, 50257)): (2, 50257),
    (False, (65536, 10)): (4096, 10),
    (False, (16384, 128)): (256, 128),
    (False, (1, 10)): (1, 10),
    (False, (64, 10)): (64, 10),
    (True, (1, 10_000_000)): (1, 65536),
    (True, (200, 1000)): (200, 100),
}


@dataclasses.dataclass(frozen=True)
class Case:
    """One operation at one shape and dtype.

    ``shape`` is the logits' shape (rows, classes) for activations and losses, and
    (number of arrays, elements per array) for SGD.
    """

    op: str  # "softmax" | "log_softmax" | "cross_entropy" | "sgd"
    dtype: str  # "float32" | "float64"
    shape: tuple

    @property
    def name(self) -> str:
        """The case id, e.g. ``softmax-float32-4096x1000`` (``--cases`` matches substrings)."""
        return f"{self.op}-{self.dtype}-{'x'.join(map(str, self.shape))}"

    @property
    def group(self) -> str:
        """pytest-benchmark group: operation, dtype and shape."""
        what = {"cross_entropy": "cross_entropy_with_grad", "sgd": "SGD.step"}.get(self.op, self.op)
        shape = "x".join(map(str, self.shape))
        if self.op == "sgd":
            shape = f"{self.shape[0]} array{'s' if self.shape[0] > 1 else ''} of {self.shape[1]}"
        return f"{what} {self.dtype} {shape}"

    @property
    def kind(self) -> str:
        return {"cross_entropy": "loss", "sgd": "optim"}.get(self.op, "activation")

    @property
    def size(self) -> int:
        """Elements in the logits (or in all parameters together)."""
        return math.prod(self.shape)


def _quick_shape(op: str, shape: tuple) -> tuple:
    return QUICK_SHAPES[(op == "sgd", shape)]


def cases(quick: bool = False) -> list[Case]:
    """Every case of issue 5 (and the cross-entropy of a small batch), in a stable order
    (activations, losses, SGD)."""
    out = []
    for op in ACTIVATION_OPS:
        for dtype in DTYPES:
            for shape in ACTIVATION_SHAPES:
                out.append(Case(op, dtype, _quick_shape(op, shape) if quick else shape))
    for dtype in DTYPES:
        for shape in LOSS_SHAPES:
            out.append(Case("cross_entropy", dtype, _quick_shape("cross_entropy", shape) if quick else shape))
    for dtype in DTYPES:
        for layout in SGD_LAYOUTS:
            out.append(Case("sgd", dtype, _quick_shape("sgd", layout) if quick else layout))
    return out


def select(all_cases: Iterable[Case], patterns: Sequence[str] | None) -> list[Case]:
    """The cases whose name contains any of `patterns` (comma-separated substrings)."""
    all_cases = list(all_cases)
    subs = [s.strip() for p in (patterns or []) for s in p.split(",") if s.strip()]
    if not subs:
        return all_cases
    return [c for c in all_cases if any(s in c.name for s in subs)]


# --------------------------------------------------------------------------------------
# Threads and lazily imported peers

_threads: int | None = None
_pinning: dict = {}


def configure_threads(n: int | None) -> None:
    """Pin fastsoftmax and every peer to `n` threads (None: leave each at its default).

    Call it before a case that uses jax runs: JAX's pool is sized when it is first imported.
    """
    global _threads
    if n is not None:
        if n < 1:
            raise ValueError(f"thread count must be >= 1, got {n}")
        fs.set_num_threads(n)
    _threads = n
    if "torch" in sys.modules:
        _setup_torch(sys.modules["torch"])
    if "jax" in sys.modules and "jax" not in _pinning:
        _pinning["jax"] = "jax was imported before configure_threads(): its thread pool is not pinned"


def _setup_torch(torch):
    if _threads is not None:
        torch.set_num_threads(_threads)
    _pinning["torch"] = f"torch.set_num_threads({_threads})" if _threads is not None else "default"


@functools.lru_cache(maxsize=None)
def _torch():
    import torch

    _setup_torch(torch)
    return torch


def _xla_pool_threads() -> int | None:
    """Number of JAX/XLA intra-op worker threads alive in this process (Linux only)."""
    try:
        names = []
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/comm") as fh:
                names.append(fh.read().strip())
    except OSError:
        return None
    return sum(1 for n in names if "XLAEigen" in n)


@functools.lru_cache(maxsize=None)
def _jax():
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    n = _threads
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    already = "jax" in sys.modules
    note = "default"
    if n == 1 and not already:
        flags = os.environ.get("XLA_FLAGS", "")
        if "xla_cpu_multi_thread_eigen" not in flags:
            os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false").strip()
    if n is not None and not already and allowed is not None and n < len(allowed):
        narrow = set(sorted(allowed)[:n])
        before = set(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else set()
        os.sched_setaffinity(0, narrow)
        try:
            import jax

            jax.config.update("jax_enable_x64", True)
            jax.devices("cpu")  # starts the CPU backend: its thread pool is sized now
        finally:
            # Give the calling thread, and every thread started meanwhile, all CPUs back.
            os.sched_setaffinity(0, allowed)
            if os.path.isdir("/proc/self/task"):
                for tid in set(os.listdir("/proc/self/task")) - before:
                    try:
                        os.sched_setaffinity(int(tid), allowed)
                    except OSError:
                        pass
        note = (f"CPU backend started with the affinity narrowed to {n} CPU(s)"
                + (", XLA_FLAGS=" + os.environ["XLA_FLAGS"] if n == 1 else ""))
    else:
        import jax

        jax.config.update("jax_enable_x64", True)
        jax.devices("cpu")
        if already:
            note = "jax was imported before the benchmark configured threads: not pinned"
        elif n is not None and allowed is not None and n == len(allowed):
            note = f"XLA's default: a pool thread per available CPU ({n})"
        elif n is not None and allowed is not None and n > len(allowed):
            note = f"default ({len(allowed)} CPUs available, fewer than {n})"
        elif n is not None and allowed is None:
            note = "not pinned (no CPU affinity control on this platform)"
        if n == 1 and "XLA_FLAGS" in os.environ and not already:
            note += ", XLA_FLAGS=" + os.environ["XLA_FLAGS"]
    pool = _xla_pool_threads()
    if pool is not None:
        note += f"; {pool} XLA pool thread(s)"
    _pinning["jax"] = note
    return jax


def thread_report() -> dict:
    """What each library was pinned to (for the JSON output and the table header)."""
    out = {"requested": _threads, "fastsoftmax": fs.get_num_threads()}
    if "torch" in sys.modules:
        out["torch"] = sys.modules["torch"].get_num_threads()
    out["pinning"] = dict(_pinning)
    return out


@functools.lru_cache(maxsize=None)
def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _fs_attr(name: str):
    """A fastsoftmax public function/class, or None while it is not importable yet."""
    try:
        return getattr(importlib.import_module("fastsoftmax"), name)
    except (ImportError, AttributeError):
        return None


# --------------------------------------------------------------------------------------
# Inputs and the oracle


@functools.lru_cache(maxsize=1)
def inputs(case: Case) -> dict:
    """Deterministic inputs of a case (the latest one is cached; treat them as read-only)."""
    rng = np.random.default_rng(20240605)
    dtype = np.dtype(case.dtype)
    if case.op == "sgd":
        n, size = case.shape
        params = [rng.standard_normal(size).astype(dtype) for _ in range(n)]
        grads = [(0.1 * rng.standard_normal(size)).astype(dtype) for _ in range(n)]
        return {"params": params, "grads": grads}
    x = (3.0 * rng.standard_normal(case.shape)).astype(dtype)
    out = {"x": x}
    if case.op == "cross_entropy":
        out["target"] = rng.integers(0, case.shape[-1], size=case.shape[:-1], dtype=np.int64)
    return out


def _sgd_kwargs():
    return dict(lr=SGD_LR, momentum=SGD_MOMENTUM, weight_decay=SGD_WEIGHT_DECAY)


@functools.lru_cache(maxsize=1)
def oracle(case: Case) -> tuple:
    """The float64 answer: fastsoftmax.reference on float64 copies of the inputs."""
    data = inputs(case)
    if case.op == "sgd":
        params = [p.astype(np.float64) for p in data["params"]]
        grads = [g.astype(np.float64) for g in data["grads"]]
        opt = ref.SGD(params, **_sgd_kwargs())
        opt.step(grads)
        opt.step(grads)
        return tuple(params)
    x = data["x"].astype(np.float64)
    if case.op == "cross_entropy":
        loss, grad = ref.cross_entropy_with_grad(x, data["target"])
        return (np.asarray(loss, dtype=np.float64), grad)
    return (getattr(ref, case.op)(x),)


def max_abs_error(outputs: Sequence, expected: Sequence) -> float:
    """Largest |output - expected| over every output array (NaN if any is NaN)."""
    worst = 0.0
    if len(outputs) != len(expected):
        raise ValueError(f"{len(outputs)} outputs for {len(expected)} expected arrays")
    for got, want in zip(outputs, expected):
        got = np.asarray(got, dtype=np.float64)
        want = np.asarray(want, dtype=np.float64)
        if got.shape != want.shape:
            raise ValueError(f"output shape {got.shape} != expected {want.shape}")
        if got.size:
            err = float(np.max(np.abs(got - want)))
            if math.isnan(err):
                return math.nan
            worst = max(worst, err)
    return worst


def tolerance(case: Case, competitor: str) -> float:
    """Largest acceptable max-abs error against the oracle.

    fastsoftmax and its reference twin are held to a few hundred units in the last place of
    the largest oracle value (a wrong result is off by O(1)); peers get a looser bound that
    still catches a mis-configured benchmark (wrong axis, wrong reduction).
    """
    scale = max(1.0, max(float(np.max(np.abs(o))) if np.size(o) else 0.0 for o in oracle(case)))
    eps = float(np.finfo(np.dtype(case.dtype)).eps)
    ulps = 256 if competitor in OURS else 4096
    return ulps * eps * scale


# --------------------------------------------------------------------------------------
# Competitors


@dataclasses.dataclass
class Runner:
    """A prepared competitor: ``run()`` is timed, ``result()`` gives outputs for the oracle."""

    run: Callable[[], object]
    result: Callable[[], Sequence] | None  # None: no output to check (the memory floors)


class Unavailable(Exception):
    """The competitor cannot run here (not installed, not importable yet, not applicable)."""


def _prep_fastsoftmax(case: Case, data: dict) -> Runner:
    if case.op == "sgd":
        SGD = _fs_attr("SGD")
        if SGD is None:
            raise Unavailable("fastsoftmax.SGD is not importable yet")
        return _sgd_runner(SGD, data)
    if case.op == "cross_entropy":
        ce = _fs_attr("cross_entropy_with_grad")
        if ce is None:
            raise Unavailable("fastsoftmax.cross_entropy_with_grad is not importable yet")
        run = functools.partial(ce, data["x"], data["target"])
        return Runner(run, run)
    run = functools.partial(getattr(fs, case.op), data["x"])
    return Runner(run, lambda: (run(),))


def _prep_fastsoftmax_out(case: Case, data: dict) -> Runner:
    """fastsoftmax writing into a preallocated ``out=`` array: the kernel without the cost
    of a fresh result array (page faults of a new allocation), as np.copyto is timed."""
    buf = np.empty_like(data["x"])
    if case.op == "cross_entropy":
        ce = _fs_attr("cross_entropy_with_grad")
        if ce is None:
            raise Unavailable("fastsoftmax.cross_entropy_with_grad is not importable yet")
        run = functools.partial(ce, data["x"], data["target"], out=buf)
        return Runner(run, run)
    run = functools.partial(getattr(fs, case.op), data["x"], out=buf)
    return Runner(run, lambda: (run(),))


def _prep_reference(case: Case, data: dict) -> Runner:
    if case.op == "sgd":
        return _sgd_runner(ref.SGD, data)
    if case.op == "cross_entropy":
        run = functools.partial(ref.cross_entropy_with_grad, data["x"], data["target"])
        return Runner(run, run)
    run = functools.partial(getattr(ref, case.op), data["x"])
    return Runner(run, lambda: (run(),))


def _sgd_runner(SGD, data: dict) -> Runner:
    grads = data["grads"]

    def fresh():
        params = [p.copy() for p in data["params"]]
        return params, SGD(params, **_sgd_kwargs())

    params, opt = fresh()

    def result():
        ps, o = fresh()
        o.step(grads)
        o.step(grads)
        return ps

    return Runner(functools.partial(opt.step, grads), result)


def _prep_scipy(case: Case, data: dict) -> Runner:
    import scipy.special

    run = functools.partial(getattr(scipy.special, case.op), data["x"], axis=-1)
    return Runner(run, lambda: (run(),))


def _prep_torch(case: Case, data: dict) -> Runner:
    torch = _torch()
    if case.op == "sgd":
        grads = [torch.from_numpy(g) for g in data["grads"]]

        def fresh():
            params = [torch.from_numpy(p.copy()) for p in data["params"]]
            for p, g in zip(params, grads):
                p.grad = g
            return params, torch.optim.SGD(params, **_sgd_kwargs(), fused=True)

        params, opt = fresh()

        def result():
            ps, o = fresh()
            o.step()
            o.step()
            return [p.numpy() for p in ps]

        return Runner(opt.step, result)
    if case.op == "cross_entropy":
        F = torch.nn.functional
        x = torch.from_numpy(data["x"]).requires_grad_(True)
        t = torch.from_numpy(data["target"])

        def run():
            x.grad = None
            loss = F.cross_entropy(x, t)
            loss.backward()
            return loss, x.grad

        def result():
            loss, grad = run()
            return (loss.detach().numpy(), grad.numpy())

        return Runner(run, result)
    fn = getattr(torch, case.op)
    x = torch.from_numpy(data["x"])
    run = functools.partial(fn, x, dim=-1)
    return Runner(run, lambda: (run().numpy(),))


def _prep_jax(case: Case, data: dict) -> Runner:
    if case.op == "sgd":
        raise Unavailable("no JAX optimizer in the comparison")
    jax = _jax()
    jnp = jax.numpy
    x = jax.device_put(data["x"])
    if case.op == "cross_entropy":
        t = jax.device_put(data["target"])

        def mean_ce(logits, target):
            logp = jax.nn.log_softmax(logits, axis=-1)
            return -jnp.mean(jnp.take_along_axis(logp, target[:, None], axis=-1))

        f = jax.jit(jax.value_and_grad(mean_ce))

        def run():
            return jax.block_until_ready(f(x, t))

        def result():
            loss, grad = run()
            return (np.asarray(loss), np.asarray(grad))

        return Runner(run, result)
    f = jax.jit(functools.partial(getattr(jax.nn, case.op), axis=-1))

    def run():
        return f(x).block_until_ready()

    return Runner(run, lambda: (np.asarray(run()),))


def _prep_copyto(case: Case, data: dict) -> Runner:
    if case.op == "sgd":
        src = np.concatenate(data["params"]) if len(data["params"]) > 1 else data["params"][0]
    else:
        src = data["x"]
    dst = np.empty_like(src)
    return Runner(functools.partial(np.copyto, dst, src), None)


def _prep_stream_copy(case: Case, data: dict) -> Runner:
    from fastsoftmax._memory_floor import stream_copy

    dst = np.empty_like(data["x"])
    return Runner(functools.partial(stream_copy, dst, data["x"]), None)


@dataclasses.dataclass(frozen=True)
class Competitor:
    name: str
    label: str
    kinds: tuple  # case kinds it applies to
    module: str | None  # must be installed
    prepare: Callable[[Case, dict], Runner]


COMPETITORS = {
    c.name: c
    for c in (
        Competitor("fastsoftmax", "fastsoftmax", ("activation", "loss", "optim"), None, _prep_fastsoftmax),
        Competitor("fastsoftmax_out", "fastsoftmax with out= (no result allocation)", ("activation", "loss"),
                   None, _prep_fastsoftmax_out),
        Competitor("reference", "fastsoftmax.reference (NumPy)", ("activation", "loss", "optim"), None,
                   _prep_reference),
        Competitor("scipy", "scipy.special", ("activation",), "scipy", _prep_scipy),
        Competitor("torch", "torch (CPU)", ("activation", "loss", "optim"), "torch", _prep_torch),
        Competitor("jax", "JAX (jit, CPU)", ("activation", "loss"), "jax", _prep_jax),
        Competitor("copyto", "np.copyto (memory floor)", ("activation", "loss", "optim"), None, _prep_copyto),
        Competitor("stream_copy", "copy with streaming stores (memory floor without reads for ownership)",
                   ("activation", "loss"), None, _prep_stream_copy),
    )
}
#: fastsoftmax's own entries (held to its accuracy bound).
OURS = ("fastsoftmax", "fastsoftmax_out", "reference")
#: The memory floors: copies of the case's array, no arithmetic.
FLOORS = ("copyto", "stream_copy")
#: The competitors fastsoftmax is compared with (not its own variants nor the memory floors).
PEERS = tuple(n for n in COMPETITORS if n not in ("fastsoftmax", "fastsoftmax_out") + FLOORS)


def competitors_for(case: Case) -> list[str]:
    """Names of the competitors that apply to `case` (installed or not)."""
    return [n for n, c in COMPETITORS.items() if case.kind in c.kinds]


def available(name: str) -> tuple[bool, str]:
    """Whether competitor `name` can run here, and why not."""
    mod = COMPETITORS[name].module
    if mod is not None and not _installed(mod):
        return False, f"{mod} is not installed"
    return True, ""


def prepare(case: Case, name: str) -> Runner:
    """A :class:`Runner` for competitor `name` on `case`; raises :class:`Unavailable`."""
    comp = COMPETITORS[name]
    if case.kind not in comp.kinds:
        raise Unavailable(f"{name} does not apply to {case.op}")
    ok, why = available(name)
    if not ok:
        raise Unavailable(why)
    return comp.prepare(case, inputs(case))


# --------------------------------------------------------------------------------------
# Timing


@dataclasses.dataclass(frozen=True)
class TimingSettings:
    warmup_time: float  # seconds of untimed calls first (at least `warmup_calls`)
    warmup_calls: int
    sample_time: float  # a timed sample repeats the call to last about this long
    budget: float  # seconds of timed calls per competitor
    rounds: int  # competitors take turns this many times (spreads out background load)
    min_samples_per_round: int
    max_samples_per_round: int
    collect: bool  # run a full garbage collection before timing (slow once torch/jax are loaded)


# Ten short turns per competitor rather than three long ones: on a shared machine whose speed
# changes for seconds at a time, every competitor then sees the same mix of slow and fast
# phases, and the ratio of medians stays fair (with three turns, single ratios moved 2x).
FULL = TimingSettings(warmup_time=0.05, warmup_calls=3, sample_time=2e-3, budget=0.6, rounds=10,
                      min_samples_per_round=1, max_samples_per_round=12, collect=True)
QUICK = TimingSettings(warmup_time=0.0, warmup_calls=1, sample_time=2e-4, budget=0.01, rounds=1,
                       min_samples_per_round=1, max_samples_per_round=3, collect=False)


@dataclasses.dataclass
class Timing:
    median: float  # seconds per call
    best: float  # the fastest sample (less sensitive to other load on the machine)
    samples: list  # seconds per call, one per sample
    number: int  # calls per sample


def measure(runs: dict, settings: TimingSettings = FULL) -> dict:
    """Median seconds per call of each zero-argument callable in `runs`.

    Each callable is warmed up, then the competitors take turns (`settings.rounds` rounds):
    in each turn one untimed call, then a few timed samples of `number` back-to-back calls.
    The garbage collector is off while timing.
    """
    clock = time.perf_counter
    plan = {}
    for name, fn in runs.items():
        times = []
        start = clock()
        while len(times) < settings.warmup_calls or clock() - start < settings.warmup_time:
            t0 = clock()
            fn()
            times.append(clock() - t0)
        est = max(sorted(times)[len(times) // 2], 1e-9)
        number = max(1, round(settings.sample_time / est))
        per_round = math.ceil(settings.budget / settings.rounds / (number * est))
        per_round = min(max(per_round, settings.min_samples_per_round), settings.max_samples_per_round)
        plan[name] = (number, per_round)
    samples = {name: [] for name in runs}
    gc_was_enabled = gc.isenabled()
    if settings.collect:
        gc.collect()
    gc.disable()
    try:
        for _ in range(settings.rounds):
            for name, fn in runs.items():
                number, per_round = plan[name]
                fn()
                for _ in range(per_round):
                    loop = itertools.repeat(None, number)
                    t0 = clock()
                    for _ in loop:
                        fn()
                    samples[name].append((clock() - t0) / number)
    finally:
        if gc_was_enabled:
            gc.enable()
    return {
        name: Timing(float(np.median(s)), float(min(s)), s, plan[name][0])
        for name, s in samples.items()
    }


def run_scaling(case: Case, threads: int, settings: TimingSettings = FULL) -> dict:
    """fastsoftmax alone on 1 and on `threads` threads, the two taking turns in this process.

    Returns ``{"one_s": median seconds per call on 1 thread, "many_s": on `threads`,
    "speedup": one_s / many_s}`` (times None when fastsoftmax cannot run the case).
    """
    try:
        runner = prepare(case, "fastsoftmax")
    except Unavailable:
        return {"one_s": None, "many_s": None, "speedup": None}
    current = [None]

    def on(n):
        def call():
            if current[0] != n:  # switch only at the first call of a turn
                fs.set_num_threads(n)
                current[0] = n
            return runner.run()
        return call

    saved = fs.get_num_threads()
    try:
        t = measure({"one": on(1), "many": on(threads)}, settings)
    finally:
        fs.set_num_threads(saved)
    one, many = t["one"].median, t["many"].median
    return {"one_s": one, "many_s": many, "speedup": one / many}


def run_case(case: Case, settings: TimingSettings = FULL, names: Sequence[str] | None = None,
             progress: Callable[[str], None] | None = None) -> dict:
    """Prepare, check and time every competitor of `case`.

    Returns ``{name: {"status": "ok" | "unavailable" | "error", ...}}`` where an ok entry has
    ``median_s``, ``min_s`` (seconds per call), ``samples``, ``number`` (calls per sample),
    ``max_abs_error`` (None for the memory floors),
    ``tolerance`` and ``within_tolerance``; the others have ``reason``.
    """
    names = competitors_for(case) if names is None else [n for n in names if n in competitors_for(case)]
    say = progress or (lambda msg: None)
    results: dict = {}
    runners = {}
    for name in names:
        try:
            runner = prepare(case, name)
            err = tol = None
            if runner.result is not None:
                err = max_abs_error(runner.result(), oracle(case))
                tol = tolerance(case, name)
            runners[name] = runner
            results[name] = {"status": "ok", "max_abs_error": err, "tolerance": tol,
                             "within_tolerance": None if err is None else bool(err <= tol)}
        except Unavailable as exc:
            results[name] = {"status": "unavailable", "reason": str(exc)}
            say(f"{name}: skipped ({exc})")
        except Exception as exc:  # a peer that fails must not stop the comparison
            results[name] = {"status": "error", "reason": f"{type(exc).__name__}: {exc}"}
            say(f"{name}: error ({type(exc).__name__}: {exc})")
    timings = measure({n: r.run for n, r in runners.items()}, settings)
    for name, t in timings.items():
        results[name].update(median_s=t.median, min_s=t.best, samples=len(t.samples), number=t.number)
    return results
