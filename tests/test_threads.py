"""Python threads (issue 6): kernels called from many threads at once give the same bits as
serial calls, and they release the GIL.

- 8 Python threads, started together, call every kernel repeatedly on shared read-only
  inputs (small ones on the fast path, large ones split across OpenMP threads inside each
  call); every result must equal the serial result bit for bit, and no input may change.
  Parameters are per thread (SGD writes them); their gradients are shared and read-only.
- The GIL is released: with ``set_num_threads(1)`` (so OpenMP does not already use both
  cores), two Python threads doing the same large work finish in clearly less time than
  one thread doing both halves in turn (concurrent < 0.8 x serial in most of several rounds,
  each judged against a GIL-free control measured right after it, to ride out noise from
  other processes; with the GIL held it would be about 1.0).  And,
  independent of the machine's load: while one thread is inside a long kernel call, another
  thread keeps running Python code, which a control call that holds the GIL prevents.
"""

from __future__ import annotations

import os
import sys
import threading
import time

import numpy as np
import pytest

import fastsoftmax as fs

N_THREADS = 8
ROUNDS = 3


def _read_only(a):
    a = np.array(a)
    a.flags.writeable = False
    return a


def _inputs():
    rng = np.random.default_rng(11)
    small = _read_only(rng.standard_normal((33, 10)).astype(np.float32))
    large = _read_only(rng.standard_normal((256, 1000)))  # above the threading threshold
    strided = _read_only(rng.standard_normal((64, 300)))[:, ::3]  # the general path
    g = _read_only(rng.standard_normal((256, 1000)))
    y = _read_only(fs.softmax(large))
    ly = _read_only(fs.log_softmax(large))
    t = _read_only(rng.integers(0, 1000, 256))
    q = _read_only(fs.softmax(rng.standard_normal((256, 1000))))
    w = _read_only(rng.random(1000))
    t_small = _read_only(rng.integers(0, 10, 33))
    grads = [_read_only(rng.standard_normal((300, 200))), _read_only(rng.standard_normal(50).astype(np.float32))]
    return dict(small=small, large=large, strided=strided, g=g, y=y, ly=ly, t=t, q=q, w=w, t_small=t_small,
                grads=grads)


def _work(inp):
    """Every kernel once; returns the list of results (arrays and scalars)."""
    out = []
    for x in (inp["small"], inp["large"], inp["strided"]):
        out += [fs.softmax(x), fs.log_softmax(x), fs.logsumexp(x), fs.softmax(x, axis=0), fs.logsumexp(x, axis=0)]
    out += [fs.softmax_backward(inp["g"], inp["y"]), fs.log_softmax_backward(inp["g"], inp["ly"]),
            fs.softmax_backward(inp["g"], inp["y"], axis=0)]
    out += [fs.nll_loss(inp["ly"], inp["t"]), fs.cross_entropy(inp["large"], inp["t"], weight=inp["w"]),
            fs.cross_entropy(inp["small"], inp["t_small"], label_smoothing=0.1, reduction="none"),
            fs.cross_entropy(inp["large"], inp["q"])]
    out += list(fs.cross_entropy_with_grad(inp["large"], inp["t"], reduction="sum"))
    out += list(fs.cross_entropy_with_grad(inp["small"], inp["t_small"]))
    # SGD: this thread's own parameters, the shared (read-only) gradients.
    params = [np.full(gr.shape, 0.5, gr.dtype) for gr in inp["grads"]]
    velocity = np.zeros_like(params[0])
    fs.sgd_step(params[0], inp["grads"][0], velocity, lr=0.1, momentum=0.9, weight_decay=1e-3)
    opt = fs.SGD(params, lr=0.05, momentum=0.5, nesterov=True)
    opt.step(inp["grads"])
    opt.step(inp["grads"])
    out += params + [velocity, opt.state_dict()["state"][0]["momentum_buffer"]]
    return out


def _assert_identical(got, want):
    assert len(got) == len(want)
    for i, (a, b) in enumerate(zip(got, want)):
        a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == b.dtype and a.shape == b.shape, i
        assert a.tobytes() == b.tobytes(), f"result {i} differs from the serial call"


def test_eight_threads_give_the_serial_bits():
    inp = _inputs()
    before = {k: (v.tobytes() if isinstance(v, np.ndarray) else [a.tobytes() for a in v]) for k, v in inp.items()}
    serial = _work(inp)
    barrier = threading.Barrier(N_THREADS)
    results = [None] * N_THREADS
    errors = []

    def run(k):
        try:
            barrier.wait()
            results[k] = [_work(inp) for _ in range(ROUNDS)]
        except BaseException as exc:  # reported below, with the thread's index
            errors.append((k, exc))

    threads = [threading.Thread(target=run, args=(k,)) for k in range(N_THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=300)
    assert not any(th.is_alive() for th in threads), "a thread hung"
    assert not errors, errors
    for per_thread in results:
        for got in per_thread:
            _assert_identical(got, serial)
    after = {k: (v.tobytes() if isinstance(v, np.ndarray) else [a.tobytes() for a in v]) for k, v in inp.items()}
    assert after == before


def test_threads_of_one_optimizer_do_not_corrupt_it():
    """One SGD stepped from several threads at once: every step either runs whole or is
    refused (RuntimeError: already running), never interleaved; the result is that of the
    number of steps that ran."""
    grads = [np.full(1_000_000, 1e-3), np.full(1000, 1e-3, np.float32)]
    params = [np.zeros(1_000_000), np.zeros(1000, np.float32)]
    opt = fs.SGD(params, lr=1.0)
    ran = []
    barrier = threading.Barrier(4)

    def run():
        barrier.wait()
        for _ in range(20):
            try:
                opt.step(grads)
                ran.append(1)
            except RuntimeError as exc:
                assert "already running" in str(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=300)
    steps = len(ran)
    assert steps >= 20
    np.testing.assert_allclose(params[0], -1e-3 * steps, rtol=1e-12)
    np.testing.assert_allclose(params[1], np.float32(-1e-3) * steps, rtol=1e-5)
    assert np.all(params[0] == params[0][0]) and np.all(params[1] == params[1][0])


# ---------------------------------------------------------------------------- the GIL


@pytest.fixture
def one_openmp_thread():
    previous = fs.get_num_threads()
    fs.set_num_threads(1)
    try:
        yield
    finally:
        fs.set_num_threads(previous)


def _gil_workloads():
    """name -> (call, the control's input): calls of 0.05-0.5 ms whose time is the kernel's:
    results go to per-thread out= arrays (a fresh result per call is memory from mmap whose
    page faults the OS serializes, which says nothing about the GIL), and the Python-side
    argument checks, which hold the GIL, are a small part of each call.  Each call's control
    is np.exp, without the GIL, from an array of about the size of the call's data (its input;
    for SGD.step, the parameters, velocities and gradients it moves) into a per-thread array
    of that size (`_np_exp_control`).  These arrays (1-5 MB a thread) live in the L3 cache,
    which the machine's other tenants share: when they crowd it, the calls cannot run two at a
    time at full speed whether or not they hold the GIL (CI once saw the cross-entropy at
    0.74-0.93 x the serial time in every round while np.exp over 64K doubles, inside each
    core's L2, read 0.51-0.71), and a control that moves as many bytes sees that too."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((256, 2048)).astype(np.float32)  # ~0.2 ms: the checks stay small
    x64 = rng.standard_normal((128, 2048))
    g = rng.standard_normal((64, 2048))
    y = fs.softmax(g)
    t = rng.integers(0, 2048, 128)
    out32 = [np.empty_like(x) for _ in range(2)]
    out64 = [np.empty_like(g) for _ in range(2)]
    grad_out = [np.empty_like(x64) for _ in range(2)]
    # The optimizer: SGD.step (its checks are native; sgd_step's Python-side checks are a
    # larger share of a call, and test_python_runs_during_a_kernel covers it).
    opts = [fs.SGD([np.zeros(1 << 17, np.float32), np.zeros(1 << 16)], lr=1e-9, momentum=0.9, nesterov=True)
            for _ in range(2)]
    grads = [rng.standard_normal(1 << 17).astype(np.float32), rng.standard_normal(1 << 16)]
    return {
        "softmax": (lambda k: fs.softmax(x, out=out32[k]), x),
        "logsumexp": (lambda k: fs.logsumexp(x64), x64),
        "softmax_backward": (lambda k: fs.softmax_backward(g, y, out=out64[k]), g),
        "cross_entropy_with_grad": (lambda k: fs.cross_entropy_with_grad(x64, t, out=grad_out[k]), x64),
        # SGD.step reads 3 MB (parameters, velocities, gradients) and writes 2: 2.5 MB each way
        "SGD.step": (lambda k: opts[k].step(grads), rng.standard_normal(5 << 16)),
    }


def _calls_for(fn, seconds=0.15):
    """How many calls take about `seconds` on one thread."""
    fn(0)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds / 3:
        fn(0)
        n += 1
    return max(3 * n, 10)


def _serial(fn, calls):
    start = time.perf_counter()
    for _ in range(calls):
        fn(0)
    for _ in range(calls):
        fn(1)
    return time.perf_counter() - start


def _concurrent(fn, calls):
    barrier = threading.Barrier(3)

    def run(k):
        barrier.wait()
        for _ in range(calls):
            fn(k)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
    for th in threads:
        th.start()
    barrier.wait()
    start = time.perf_counter()
    for th in threads:
        th.join()
    return time.perf_counter() - start


def _pair(fn, calls, first_serial=True):
    """Two-thread over serial time of `calls` calls of `fn`, measured back to back."""
    if first_serial:
        serial = _serial(fn, calls)
        return _concurrent(fn, calls) / serial
    concurrent = _concurrent(fn, calls)
    return concurrent / _serial(fn, calls)


@pytest.fixture(scope="module")
def two_threads_run_at_once():
    """Whether this machine runs two threads at the same time right now, measured with a
    NumPy ufunc that releases the GIL (np.exp over 64K doubles: it stays in each core's L2,
    so it measures the cores, not the shared memory bandwidth, which np.exp over 16 MB arrays
    saturates with one thread): the median of 5 two-thread over serial
    times.  On a VM whose vCPUs share one physical core (seen on this project's CI machine: a
    plain two-thread OpenMP loop no faster than one thread) no code can show a two-thread
    speed-up; the GIL test below then skips, and test_python_runs_during_a_kernel still shows
    the GIL is released."""
    control, calls = _np_exp_control()
    return float(np.median([_pair(control, calls, i % 2 == 0) for i in range(5)]))


def _np_exp_control(a=None):
    """np.exp from `a` (default: 64K doubles, see above) into a per-thread array of its size,
    and how many calls take about 0.1 s."""
    a = np.random.default_rng(5).standard_normal(1 << 16) if a is None else a
    outs = [np.empty_like(a), np.empty_like(a)]

    def control(k):
        np.exp(a, out=outs[k])

    return control, _calls_for(control, seconds=0.1)


def _gil_verdict(fn, calls, rounds=9, control_input=None):
    """("released" | "held" | "no two threads", the rounds measured).

    A round times `fn` on two threads against one thread doing both halves in turn (ratio
    ~1 for a call that holds the GIL, ~0.5 for one that releases it on an idle machine), and
    right after it the GIL-free control np.exp (over `control_input` when given: the call's
    own input) the same way.  Other tenants of the machine come
    and go within seconds (CI once saw SGD.step at 0.84 x, the control at 0.57 x just after),
    so each round is judged against its own control: a round counts when its control or `fn`
    ran two threads at once (< 0.8 x), and says "released" when `fn` came in below 0.8 or below
    halfway between 1 and the control's ratio.  The verdict is the majority of the rounds that
    count; with fewer than 3 of them, "no two threads"."""
    control, control_calls = _np_exp_control(control_input)
    rounds_measured = []  # (ratio of fn, ratio of the control)
    for i in range(rounds):
        rounds_measured.append((_pair(fn, calls, i % 2 == 0), _pair(control, control_calls, i % 2 == 1)))
    counting = [(r, c) for r, c in rounds_measured if c < 0.8 or r < 0.8]
    if len(counting) < 3:
        return "no two threads", rounds_measured
    released = sum(r < max(0.8, (1.0 + c) / 2) for r, c in counting)
    return ("released" if 2 * released > len(counting) else "held"), rounds_measured


def _describe(measured, calls):
    return f"{calls} calls a half; two-thread / serial time of the call, of np.exp, by round: " + ", ".join(
        f"{r:.2f} / {c:.2f}" for r, c in measured)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores")
@pytest.mark.parametrize("name", list(_gil_workloads()))
def test_kernels_release_the_gil(name, one_openmp_thread, two_threads_run_at_once):
    if two_threads_run_at_once >= 0.8:
        pytest.skip(
            f"two threads of NumPy's GIL-free np.exp took {two_threads_run_at_once:.2f} x the "
            "serial time: this machine is not running two threads at once"
        )
    fn, control_input = _gil_workloads()[name]
    calls = _calls_for(fn)
    verdict, measured = _gil_verdict(fn, calls, control_input=control_input)
    if verdict == "no two threads":
        pytest.skip(f"np.exp's two threads ran no faster than one in most rounds: {_describe(measured, calls)}")
    assert verdict == "released", f"is the GIL held in the kernel? {_describe(measured, calls)}"


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores")
@pytest.mark.parametrize("control_mb", [None, 2], ids=["l2_control", "2mb_control"])
def test_gil_verdict_catches_a_call_that_holds_the_gil(two_threads_run_at_once, control_mb):
    """The measure above can fail: a C loop that holds the GIL throughout (no bytecode, so no
    switch) is judged "held", with the default control and with one of the workloads' size."""
    if two_threads_run_at_once >= 0.8:
        pytest.skip(f"two threads of np.exp took {two_threads_run_at_once:.2f} x the serial time")

    def held(k):
        sum(range(20_000))

    # Windows of 0.1 s, as long as the kernels' (0.15): with 0.02 s (about 0.04 s a round) a
    # busy moment during the serial rounds once made the concurrent best 0.80 x the serial best
    # (CI, a README-only commit); and with the best-of-each ratio then used, under the load of a
    # second test run on the machine, one quiet concurrent window made it 0.75-0.80 x: hence the
    # rounds judged each against its own control, by majority.
    calls = _calls_for(held, seconds=0.1)
    control_input = None if control_mb is None else np.random.default_rng(6).standard_normal(control_mb << 17)
    verdict, measured = _gil_verdict(held, calls, control_input=control_input)
    if verdict == "no two threads":
        pytest.skip(f"np.exp's two threads ran no faster than one in most rounds: {_describe(measured, calls)}")
    assert verdict == "held", _describe(measured, calls)


@pytest.fixture(scope="module")
def big_calls():
    """One call of each kernel family taking tens of milliseconds on one thread (about 2 GB
    of arrays, made once)."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((8192, 16384), np.float32)  # 512 MiB
    out = np.empty_like(x)
    y = fs.log_softmax(x)
    t = rng.integers(0, 16384, 8192)
    p = np.zeros(1 << 25, np.float32)
    v = np.zeros(1 << 25, np.float32)
    grad = rng.standard_normal(1 << 25, np.float32)
    exp_out = np.empty_like(grad)
    return {
        "softmax": lambda: fs.softmax(x, out=out),
        "logsumexp": lambda: fs.logsumexp(x),
        "log_softmax_backward": lambda: fs.log_softmax_backward(x, y, out=out),
        "cross_entropy_with_grad": lambda: fs.cross_entropy_with_grad(x, t, out=out),
        # Three steps: one moves 670 MB at the memory's speed, 17 ms in a fast phase of this
        # machine (a fresh-machine run failed the 20 ms floor below so), 30-60 ms in others.
        "sgd_step": lambda: [fs.sgd_step(p, grad, v, lr=1e-9, momentum=0.9) for _ in range(3)],
        # The control: a C loop that holds the GIL throughout (no bytecode, no switch).
        "held_gil_control": lambda: sum(range(3_000_000)),
        # Not a case of its own: NumPy's np.exp of a large array releases the GIL, so another
        # thread runs beside it whenever the machine has a CPU for it (see below).
        "numpy_exp": lambda: np.exp(grad, out=exp_out),
    }


BIG_CALLS = ["softmax", "logsumexp", "log_softmax_backward", "cross_entropy_with_grad", "sgd_step",
             "held_gil_control"]


@pytest.mark.parametrize("name", BIG_CALLS)
def test_python_runs_during_a_kernel(name, big_calls, one_openmp_thread):
    """Evidence that does not depend on timing ratios: while one thread is inside a kernel
    call, another Python thread keeps running bytecode (if a CPU is free for it).  It could not if the call held
    the GIL, as the control (a C loop that holds it) shows."""
    start, end, ticks, inside = _middle_ticks(big_calls[name])
    duration = end - start
    assert duration > 0.02, f"the call took only {1e3 * duration:.1f} ms: too short to tell"
    if name == "held_gil_control":
        points = [start] + [t for t in ticks if start < t < end] + [end]
        gap = max(b - a for a, b in zip(points, points[1:]))
        assert gap > 0.6 * duration, (
            f"another thread ran during the GIL-holding control (longest pause {1e3 * gap:.1f} ms "
            f"of {1e3 * duration:.1f} ms): the measure does not work"
        )
    else:
        if inside < 100:
            # Too few ticks: the kernel holds the GIL, or the machine has no CPU free for the
            # ticker while the kernel runs on the other (the ticker needs a CPU of its own; the
            # second vCPU of this VM is sometimes taken, when np.exp's two threads run no
            # faster than one).  The same count beside np.exp, which releases the GIL, tells
            # them apart.
            *_, control = _middle_ticks(big_calls["numpy_exp"])
            if control < 100:
                pytest.skip(
                    f"{inside} ticks inside {name}, and {control} beside NumPy's GIL-free np.exp: "
                    "no CPU free for a second thread now"
                )
        assert inside >= 100, (
            f"only {inside} ticks of another thread in {1e3 * duration:.1f} ms inside {name}: "
            "is the GIL held in the kernel?"
        )


def _middle_ticks(call):
    """(start, end, ticks, inside): `call` timed while another Python thread ticks, and its
    ticks in the middle 80% of the call."""
    call()  # warm up (page faults of the first write)
    previous_interval = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)  # a waiting thread asks for the GIL after 0.5 ms
    try:
        start, end, ticks = _ticks_during(call)
    finally:
        sys.setswitchinterval(previous_interval)
    # The ticker may also run just before the call starts and just after it returns (the
    # calling thread runs bytecode there, and may wait milliseconds for the GIL to come back):
    # count the middle 80% for the kernels.  The held-GIL control shows as one long gap between
    # ticks instead (its hand-offs at either end were seen to take more than 10% of its time).
    lo, hi = start + 0.1 * (end - start), end - 0.1 * (end - start)
    return start, end, ticks, sum(1 for t in ticks if lo < t < hi)


def _ticks_during(call):
    """(start, end, ticks): the times another Python thread got to run while `call` ran."""
    ticks = []
    done = threading.Event()

    def ticker():
        while not done.is_set():
            ticks.append(time.perf_counter())

    th = threading.Thread(target=ticker)
    th.start()
    while not ticks:  # the ticker runs
        time.sleep(0.001)
    start = time.perf_counter()
    call()
    end = time.perf_counter()
    done.set()
    th.join()
    return start, end, ticks
