"""Tests of fastsoftmax.optim (sgd_step, SGD) and its reference twin (SPEC section 4).

The trajectory tests run 50 steps over the grid momentum {0, 0.9, 0.99} x weight_decay
{0, 1e-4} x dampening {0, 0.5} x nesterov x maximize x float32/float64 x (one list of arrays,
two parameter groups); Nesterov with momentum 0 or dampening != 0 is invalid and left out of
the grid by construction.  Tolerances: float32 1e-6 relative, float64 1e-12 relative.
"""

from __future__ import annotations

import inspect
import itertools
import pickle
import tracemalloc

import numpy as np
import pytest

import fastsoftmax as fs
from fastsoftmax import optim as fs_optim
from fastsoftmax import reference as ref

STEPS = 50
RTOL = {np.float32: 1e-6, np.float64: 1e-12}
DTYPES = [pytest.param(np.float32, id="float32"), pytest.param(np.float64, id="float64")]
IMPLS = [pytest.param(fs, id="compiled"), pytest.param(ref, id="reference")]


def _hyper_grid():
    for momentum, weight_decay, dampening, nesterov, maximize in itertools.product(
        [0.0, 0.9, 0.99], [0.0, 1e-4], [0.0, 0.5], [False, True], [False, True]
    ):
        if nesterov and (momentum == 0.0 or dampening != 0.0):
            continue  # invalid (ValueError): tested separately
        h = dict(lr=0.01, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                 nesterov=nesterov, maximize=maximize)
        hid = f"mom{momentum}-wd{weight_decay}-damp{dampening}" + ("-nesterov" if nesterov else "") + (
            "-maximize" if maximize else "")
        yield pytest.param(h, id=hid)


HYPER = list(_hyper_grid())
LAYOUTS = [pytest.param("list", id="list"), pytest.param("groups", id="groups")]

# Odd sizes (vector remainders), a 0-d and an empty parameter.
SHAPES = [(23, 17), (31,), (3, 5, 2), (), (0, 3)]
# torch's fused kernel rounds its scalar remainder (numel % 16) differently from its own vector
# body and from torch's default path (see test_torch_fused_remainder_differs_from_its_body);
# fastsoftmax follows the vector body, so the fused comparison uses multiples of 16.
SHAPES_16 = [(16, 24), (32,), (4, 4, 8), (48,), (16,)]


def _problem(shapes, dtype, steps=STEPS, seed=0):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [[rng.standard_normal(s).astype(dtype) for s in shapes] for _ in range(steps)]
    return params, grads


def _groups(params, layout, h):
    """The `params` argument: a list, or two groups (weights with the defaults, the rest with no
    weight decay and half the learning rate, as for biases)."""
    if layout == "list":
        return list(params)
    return [{"params": list(params[:2])}, {"params": list(params[2:]), "weight_decay": 0.0, "lr": h["lr"] / 2}]


def _run(module, params0, grads, h, layout):
    params = [p.copy() for p in params0]
    opt = module.SGD(_groups(params, layout, h), **h)
    for g in grads:
        assert opt.step(g) is None
    return params, opt


def _velocities(opt, n):
    state = opt.state_dict()["state"]
    return [state[i]["momentum_buffer"] if i in state else None for i in range(n)]


def _assert_close(actual, expected, dtype):
    assert actual.dtype == expected.dtype == dtype
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=RTOL[dtype], atol=0)


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def _run_torch(torch, params0, grads, h, layout, fused, skip=None):
    tparams = [torch.tensor(p.copy()) for p in params0]
    opt = torch.optim.SGD(_groups(tparams, layout, h), **h, foreach=False, fused=fused)
    for s, g in enumerate(grads):
        for i, (t, gi) in enumerate(zip(tparams, g)):
            t.grad = None if skip is not None and skip(s, i) else torch.from_numpy(gi.copy())
        opt.step()
    buffers = [opt.state[t].get("momentum_buffer") for t in tparams]
    return [t.numpy() for t in tparams], [None if b is None else b.numpy() for b in buffers]


# ---- trajectories -------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("h", HYPER)
def test_trajectory_matches_reference(h, dtype, layout):
    params0, grads = _problem(SHAPES, dtype)
    grads_before = [[g.copy() for g in gs] for gs in grads]
    ours, opt = _run(fs, params0, grads, h, layout)
    theirs, ropt = _run(ref, params0, grads, h, layout)
    for a, b in zip(ours, theirs):
        _assert_close(a, b, dtype)
    for va, vb in zip(_velocities(opt, len(SHAPES)), _velocities(ropt, len(SHAPES))):
        assert (va is None) == (vb is None) == (h["momentum"] == 0.0)
        if va is not None:
            _assert_close(va, vb, dtype)
    for gs, gb in zip(grads, grads_before):  # gradients are never written
        for g, b in zip(gs, gb):
            np.testing.assert_array_equal(g, b)
    assert not np.array_equal(ours[0], params0[0])  # the trajectory moved


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("h", HYPER)
def test_trajectory_matches_torch(torch, h, dtype, layout):
    """torch.optim.SGD's default CPU path (single-tensor), first step included."""
    params0, grads = _problem(SHAPES, dtype, seed=1)
    ours, opt = _run(fs, params0, grads, h, layout)
    theirs, tbufs = _run_torch(torch, params0, grads, h, layout, fused=False)
    for a, b in zip(ours, theirs):
        _assert_close(a, b, dtype)
    for va, vb in zip(_velocities(opt, len(SHAPES)), tbufs):
        assert (va is None) == (vb is None)
        if va is not None:
            _assert_close(va, vb, dtype)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("h", HYPER)
def test_trajectory_matches_torch_fused(torch, h, dtype, layout):
    """torch.optim.SGD(fused=True) on sizes that are multiples of 16."""
    params0, grads = _problem(SHAPES_16, dtype, seed=2)
    ours, opt = _run(fs, params0, grads, h, layout)
    theirs, tbufs = _run_torch(torch, params0, grads, h, layout, fused=True)
    for a, b in zip(ours, theirs):
        _assert_close(a, b, dtype)
    for va, vb in zip(_velocities(opt, len(SHAPES_16)), tbufs):
        assert (va is None) == (vb is None)
        if va is not None:
            _assert_close(va, vb, dtype)


def test_torch_fused_remainder_differs_from_its_body(torch):
    """Why the fused comparison uses multiples of 16: torch's own fused kernel disagrees with
    torch's default path in the scalar remainder (the last numel % 16 elements) only, while
    fastsoftmax agrees with the default path everywhere."""
    h = dict(lr=0.01, momentum=0.9, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False)
    params0, grads = _problem([(1003,)], np.float32, seed=3)
    (fused,), _ = _run_torch(torch, params0, grads, h, "list", fused=True)
    (default,), _ = _run_torch(torch, params0, grads, h, "list", fused=False)
    (ours,), _ = _run(fs, params0, grads, h, "list")
    np.testing.assert_array_equal(fused[:1000], default[:1000])
    assert np.any(fused[1000:] != default[1000:])
    np.testing.assert_allclose(ours, default, rtol=RTOL[np.float32], atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_skipped_grads_and_lr_schedule_match_torch(torch, dtype):
    """A None gradient skips its parameter (torch: .grad is None); param_groups may be edited
    between steps (a learning-rate schedule, a momentum change)."""
    h = dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-4, nesterov=False, maximize=False)
    params0, grads = _problem(SHAPES, dtype, seed=4)
    skip = lambda s, i: (i == 1 and s % 3 == 0) or (i == 2 and s < 5)  # noqa: E731
    tparams = [torch.tensor(p.copy()) for p in params0]
    topt = torch.optim.SGD(_groups(tparams, "groups", h), **h, foreach=False)
    params = [p.copy() for p in params0]
    opt = fs.SGD(_groups(params, "groups", h), **h)
    for s, g in enumerate(grads):
        lr = 0.05 * 0.97**s
        for group in (*opt.param_groups, *topt.param_groups):
            group["lr"] = lr
        if s == 20:
            opt.param_groups[1]["momentum"] = topt.param_groups[1]["momentum"] = 0.5
        for i, (t, gi) in enumerate(zip(tparams, g)):
            t.grad = None if skip(s, i) else torch.from_numpy(gi.copy())
        opt.step([None if skip(s, i) else gi for i, gi in enumerate(g)])
        topt.step()
    for a, t in zip(params, tparams):
        _assert_close(a, t.numpy(), dtype)


def test_mixed_dtypes_in_one_optimizer(torch):
    h = dict(lr=0.02, momentum=0.9, dampening=0.0, weight_decay=1e-4, nesterov=True, maximize=False)
    rng = np.random.default_rng(5)
    params0 = [rng.standard_normal((40,)).astype(np.float32), rng.standard_normal((7, 3)),
               rng.standard_normal((9,)).astype(np.float32)]
    grads = [[rng.standard_normal(p.shape).astype(p.dtype) for p in params0] for _ in range(STEPS)]
    ours, _ = _run(fs, params0, grads, h, "list")
    theirs, _ = _run(ref, params0, grads, h, "list")
    torch_ps, _ = _run_torch(torch, params0, grads, h, "list", fused=False)
    for a, b, t in zip(ours, theirs, torch_ps):
        _assert_close(a, b, a.dtype.type)
        _assert_close(a, t, a.dtype.type)


@pytest.mark.parametrize("impl", IMPLS)
def test_first_step_seeds_the_buffer_without_dampening(impl):
    w = np.array([1.0, -2.0, 4.0])
    opt = impl.SGD([w], lr=0.5, momentum=0.9, dampening=0.5, weight_decay=0.25)
    g1 = np.array([1.0, 2.0, -4.0])
    opt.step([g1])
    d1 = g1 + 0.25 * np.array([1.0, -2.0, 4.0])  # [1.25, 1.5, -3.0]
    np.testing.assert_array_equal(opt.state_dict()["state"][0]["momentum_buffer"], d1)
    np.testing.assert_array_equal(w, np.array([1.0, -2.0, 4.0]) - 0.5 * d1)
    w1 = w.copy()
    opt.step([g1])  # from now on: v = 0.9 v + 0.5 (g + 0.25 w)
    d2 = g1 + 0.25 * w1
    np.testing.assert_allclose(opt.state_dict()["state"][0]["momentum_buffer"], 0.9 * d1 + 0.5 * d2, rtol=1e-15)
    np.testing.assert_allclose(w, w1 - 0.5 * (0.9 * d1 + 0.5 * d2), rtol=1e-15)


def test_threads_do_not_change_results():
    """Large steps are split across threads (one span per thread over all tensors laid end
    to end); every element is computed the same way whatever the split."""
    h = dict(lr=0.01, momentum=0.99, dampening=0.0, weight_decay=1e-4, nesterov=False, maximize=False)
    shapes = [(170_001,), (3, 60_011), (1,), (190_007,), (5,)]  # > 4 x FS_SGD_MIN_PER_THREAD
    params0, grads = _problem(shapes, np.float32, steps=3, seed=6)
    old = fs.get_num_threads()
    try:
        fs.set_num_threads(1)
        one, _ = _run(fs, params0, grads, h, "list")
        fs.set_num_threads(4)
        many, _ = _run(fs, params0, grads, h, "list")
    finally:
        fs.set_num_threads(old)
    theirs, _ = _run(ref, params0, grads, h, "list")
    for a, b, c in zip(one, many, theirs):
        np.testing.assert_array_equal(a, b)
        _assert_close(a, c, np.float32)


# ---- sgd_step -----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("h", HYPER)
def test_sgd_step_matches_reference_and_torch(torch, h, dtype):
    """sgd_step is torch's update with an already-started buffer, 20 times in a row."""
    rng = np.random.default_rng(7)
    p0 = rng.standard_normal((13, 11)).astype(dtype)
    v0 = rng.standard_normal((13, 11)).astype(dtype)
    grads = [rng.standard_normal((13, 11)).astype(dtype) for _ in range(20)]
    p, v, rp, rv = p0.copy(), v0.copy(), p0.copy(), v0.copy()
    tp = torch.tensor(p0.copy())
    topt = torch.optim.SGD([tp], **h, foreach=False)
    if h["momentum"] != 0.0:
        topt.state[tp]["momentum_buffer"] = torch.tensor(v0.copy())
    for g in grads:
        assert fs.sgd_step(p, g, v, **h) is None
        assert ref.sgd_step(rp, g, rv, **h) is None
        tp.grad = torch.from_numpy(g.copy())
        topt.step()
    _assert_close(p, rp, dtype)
    _assert_close(p, tp.numpy(), dtype)
    if h["momentum"] != 0.0:
        _assert_close(v, rv, dtype)
        _assert_close(v, topt.state[tp]["momentum_buffer"].numpy(), dtype)
    else:
        np.testing.assert_array_equal(v, v0)


@pytest.mark.parametrize("impl", IMPLS)
def test_sgd_step_exact_small_case(impl):
    w = np.array([1.0, 2.0, -3.0])
    v = np.array([0.5, 0.0, 1.0])
    g = np.array([1.0, -1.0, 0.0])
    impl.sgd_step(w, g, v, lr=0.5, momentum=0.5, dampening=0.5, weight_decay=0.5, maximize=True)
    d = -g + 0.5 * np.array([1.0, 2.0, -3.0])  # [-0.5, 2.0, -1.5]
    np.testing.assert_array_equal(v, 0.5 * np.array([0.5, 0.0, 1.0]) + 0.5 * d)
    np.testing.assert_array_equal(w, np.array([1.0, 2.0, -3.0]) - 0.5 * v)
    np.testing.assert_array_equal(g, [1.0, -1.0, 0.0])


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    "velocity",
    [pytest.param(None, id="None"), pytest.param("not an array", id="str"),
     pytest.param(np.zeros(2), id="wrong-shape"), pytest.param(np.zeros(3, np.float32), id="wrong-dtype")],
)
def test_sgd_step_without_momentum_ignores_velocity_and_dampening(impl, velocity):
    w = np.array([1.0, 2.0, 3.0])
    before = None if not isinstance(velocity, np.ndarray) else velocity.copy()
    impl.sgd_step(w, np.array([1.0, 1.0, 1.0]), velocity, lr=0.5, dampening=float("nan"))
    np.testing.assert_array_equal(w, [0.5, 1.5, 2.5])
    if before is not None:
        np.testing.assert_array_equal(velocity, before)


@pytest.mark.parametrize("impl", IMPLS)
def test_sgd_step_read_only_velocity_without_momentum_is_ignored(impl):
    w = np.ones(4)
    v = np.zeros(4)
    v.flags.writeable = False
    impl.sgd_step(w, np.ones(4), v, lr=1.0)
    np.testing.assert_array_equal(w, np.zeros(4))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    "make_grad",
    [
        pytest.param(lambda w, v: w, id="grad-is-param"),
        pytest.param(lambda w, v: v, id="grad-is-velocity"),
        pytest.param(lambda w, v: w[::-1], id="reversed-view-of-param"),
        pytest.param(lambda w, v: np.linspace(0.0, 1.0, 6), id="fresh-array"),
        pytest.param(lambda w, v: np.arange(6.0).reshape(3, 2).T.reshape(6), id="copied-by-reshape"),
        pytest.param(lambda w, v: np.arange(12.0)[::2], id="strided"),
        pytest.param(lambda w, v: np.arange(6.0).astype(">f8"), id="byteswapped"),
        pytest.param(lambda w, v: [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], id="list"),
    ],
)
def test_sgd_step_grad_forms_and_overlaps(impl, make_grad):
    """Any array-like gradient of the right shape and dtype; one overlapping the written
    arrays gives the result as if it had been copied first."""
    w = np.arange(6.0) + 1.0
    v = np.linspace(-1.0, 1.0, 6)
    g = make_grad(w, v)
    g_value = np.array(g, dtype=np.float64)
    expect_v = 0.9 * v + g_value
    expect_w = w - 0.1 * expect_v
    impl.sgd_step(w, g, v, lr=0.1, momentum=0.9)
    np.testing.assert_allclose(v, expect_v, rtol=1e-15)
    np.testing.assert_allclose(w, expect_w, rtol=1e-15)


@pytest.mark.parametrize("impl", IMPLS)
def test_sgd_step_in_place_and_no_allocation(impl):
    w = np.zeros(3)
    v = np.zeros(3)
    w_id, v_id = id(w), id(v)
    impl.sgd_step(w, np.ones(3), v, lr=1.0, momentum=0.5)
    assert id(w) == w_id and id(v) == v_id
    np.testing.assert_array_equal(w, -np.ones(3))


# ---- no allocation per step, identity ---------------------------------------------------


def _peak_bytes(fn):
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("dtype", DTYPES)
def test_step_allocates_nothing_of_parameter_size(dtype):
    n = 250_000
    params = [np.ones(n, dtype), np.ones((500, 100), dtype), np.ones(7, dtype)]
    grads = [np.full(p.shape, 0.5, dtype) for p in params]
    ids = [id(p) for p in params]
    opt = fs.SGD([{"params": params[:2]}, {"params": params[2:], "weight_decay": 0.0}],
                 lr=0.1, momentum=0.9, weight_decay=1e-4)
    opt.step(grads)  # the first step (seeds the buffers)

    def steps():
        for _ in range(3):
            opt.step(grads)

    limit = 64 * 1024
    assert params[1].nbytes > limit
    assert _peak_bytes(steps) < limit
    # The measurement sees NumPy allocations: the reference step allocates temporaries.
    rparams = [p.copy() for p in params]
    ropt = ref.SGD(rparams, lr=0.1, momentum=0.9, weight_decay=1e-4)
    assert _peak_bytes(lambda: ropt.step(grads)) >= params[0].nbytes
    assert [id(p) for p in params] == ids
    assert all(a is b for a, b in zip(opt.param_groups[0]["params"], params[:2]))
    assert not np.array_equal(params[0], np.ones(n, dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_step_allocates_nothing(dtype):
    p = np.ones(500_000, dtype)
    g = np.full(p.shape, 0.5, dtype)
    v = np.zeros_like(p)
    fs.sgd_step(p, g, v, lr=0.1, momentum=0.9, weight_decay=1e-4)
    peak = _peak_bytes(lambda: fs.sgd_step(p, g, v, lr=0.1, momentum=0.9, weight_decay=1e-4))
    assert peak < p.nbytes // 100


# ---- atomicity and errors ---------------------------------------------------------------


def _four_params():
    rng = np.random.default_rng(8)
    return [rng.standard_normal((5, 4)), rng.standard_normal(3), rng.standard_normal((2, 2)),
            rng.standard_normal(6).astype(np.float32)]


def _good_grads(params):
    return [np.full(p.shape, 0.25, p.dtype) for p in params]


BAD_GRADS = [
    pytest.param(lambda gs: gs[:2] + [np.zeros(5)] + gs[3:], ValueError,
                 r"SGD\.step\(\) grads\[2\] has shape \(5,\), expected \(2, 2\)", id="wrong-shape"),
    pytest.param(lambda gs: gs[:2] + [gs[2].astype(np.float32)] + gs[3:], TypeError,
                 r"SGD\.step\(\) grads\[2\] has dtype float32, expected float64", id="float32-for-float64"),
    pytest.param(lambda gs: gs[:3] + [gs[3].astype(np.float64)], TypeError,
                 r"SGD\.step\(\) grads\[3\] has dtype float64, expected float32", id="float64-for-float32"),
    pytest.param(lambda gs: gs[:2] + [np.ones((2, 2), np.int64)] + gs[3:], TypeError,
                 r"SGD\.step\(\) grads\[2\] has dtype int64", id="integer"),
    pytest.param(lambda gs: gs[:2] + [[[1.0, 2.0], [3.0]]] + gs[3:], ValueError,
                 r"SGD\.step\(\) grads\[2\] is not a valid array", id="ragged"),
    pytest.param(lambda gs: gs[:3], ValueError, r"SGD\.step\(\) argument 'grads' has 3 gradients, expected 4",
                 id="too-few"),
    pytest.param(lambda gs: gs + [gs[0]], ValueError, r"has 5 gradients, expected 4", id="too-many"),
    pytest.param(lambda gs: gs[0], TypeError, r"SGD\.step\(\) argument 'grads' must be a list or tuple",
                 id="not-a-list"),
    pytest.param(lambda gs: iter(gs), TypeError, r"must be a list or tuple", id="iterator"),
]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("make_bad, exc, match", BAD_GRADS)
def test_bad_grad_changes_nothing(impl, make_bad, exc, match):
    params = _four_params()
    opt = impl.SGD([{"params": params[:2]}, {"params": params[2:], "weight_decay": 0.0}],
                   lr=0.1, momentum=0.9, weight_decay=1e-3)
    twin_params = [p.copy() for p in params]
    twin = impl.SGD([{"params": twin_params[:2]}, {"params": twin_params[2:], "weight_decay": 0.0}],
                    lr=0.1, momentum=0.9, weight_decay=1e-3)
    for o in (opt, twin):
        o.step(_good_grads(params))
        o.step(_good_grads(params))
    before = [p.copy() for p in params]
    state_before = pickle.dumps(opt.state_dict())
    with pytest.raises(exc, match=match):
        opt.step(make_bad(_good_grads(params)))
    for p, b in zip(params, before):
        np.testing.assert_array_equal(p, b)
    assert pickle.dumps(opt.state_dict()) == state_before
    # ... and the optimizer goes on exactly as one that never saw the bad call.
    opt.step(_good_grads(params))
    twin.step(_good_grads(params))
    for p, q in zip(params, twin_params):
        np.testing.assert_array_equal(p, q)


@pytest.mark.parametrize("make_bad, exc, match", BAD_GRADS)
def test_bad_grad_same_message_in_both_twins(make_bad, exc, match):
    messages = []
    for impl in (fs, ref):
        params = _four_params()
        opt = impl.SGD(params, lr=0.1)
        with pytest.raises(exc) as info:
            opt.step(make_bad(_good_grads(params)))
        messages.append(str(info.value))
    assert messages[0] == messages[1]


@pytest.mark.parametrize("impl", IMPLS)
def test_read_only_param(impl):
    p = np.ones(3)
    p.flags.writeable = False
    with pytest.raises(ValueError, match=r"SGD\(\) params\[0\] is read-only"):
        impl.SGD([p], lr=0.1)
    with pytest.raises(ValueError, match=r"sgd_step\(\) argument 'param' is read-only"):
        impl.sgd_step(p, np.ones(3), lr=0.1)
    np.testing.assert_array_equal(p, np.ones(3))


@pytest.mark.parametrize("impl", IMPLS)
def test_param_made_read_only_after_construction(impl):
    params = _four_params()
    opt = impl.SGD(params, lr=0.1, momentum=0.9)
    opt.step(_good_grads(params))
    before = [p.copy() for p in params]
    state_before = pickle.dumps(opt.state_dict())
    params[3].flags.writeable = False
    with pytest.raises(ValueError, match=r"SGD\.step\(\) params\[3\] is read-only"):
        opt.step(_good_grads(params))
    for p, b in zip(params, before):
        np.testing.assert_array_equal(p, b)
    assert pickle.dumps(opt.state_dict()) == state_before


@pytest.mark.parametrize("impl", IMPLS)
def test_param_reshaped_after_construction(impl):
    params = _four_params()
    opt = impl.SGD(params, lr=0.1)
    params[0].shape = (4, 5)
    with pytest.raises(ValueError, match=r"SGD\.step\(\) params\[0\] was reallocated, reshaped"):
        opt.step(_good_grads(params))


@pytest.mark.parametrize("impl", IMPLS)
def test_param_retyped_after_construction(impl):
    params = _four_params()
    opt = impl.SGD(params, lr=0.1)
    params[0].dtype = np.dtype(">f8")
    with pytest.raises(TypeError, match=r"^SGD\.step\(\) params\[0\] has dtype >f8; expected float32 or float64"):
        opt.step(_good_grads(params))


@pytest.mark.parametrize("impl", IMPLS)
def test_param_groups_params_replaced(impl):
    params = _four_params()
    opt = impl.SGD(params, lr=0.1)
    opt.param_groups[0]["params"] = [np.ones(3)]
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['params'\] was replaced"):
        opt.step(_good_grads(params))


@pytest.mark.parametrize("impl", IMPLS)
def test_read_only_velocity(impl):
    v = np.zeros(3)
    v.flags.writeable = False
    w = np.ones(3)
    with pytest.raises(ValueError, match=r"sgd_step\(\) argument 'velocity' is read-only"):
        impl.sgd_step(w, np.ones(3), v, lr=0.1, momentum=0.9)
    np.testing.assert_array_equal(w, np.ones(3))


def _base():
    return np.arange(40.0)


SHARED = [
    pytest.param(lambda a: [a, a], r"params\[1\] shares memory with params\[0\]", id="same-array-twice"),
    pytest.param(lambda a: [a[:10], a[5:15]], r"params\[1\] shares memory with params\[0\]", id="overlapping-views"),
    pytest.param(lambda a: [a[20:], a[:10], a.reshape(4, 10)[0, 2:5]], r"params\[2\] shares memory with params\[1\]",
                 id="contained-view"),
    pytest.param(lambda a: [{"params": [a[:10]]}, {"params": [a[9:20]], "lr": 0.5}],
                 r"params\[1\]\['params'\]\[0\] shares memory with params\[0\]\['params'\]\[0\]", id="across-groups"),
]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("make, match", SHARED)
def test_params_sharing_memory(impl, make, match):
    a = _base()
    with pytest.raises(ValueError, match=r"SGD\(\) " + match):
        impl.SGD(make(a), lr=0.1)
    np.testing.assert_array_equal(a, _base())


@pytest.mark.parametrize("impl", IMPLS)
def test_disjoint_views_of_one_buffer_are_fine(impl):
    a = np.zeros(30)
    opt = impl.SGD([a[:10], a[10:20], a[20:].reshape(2, 5)], lr=1.0)
    opt.step([np.ones(10), np.full(10, 2.0), np.full((2, 5), 3.0)])
    np.testing.assert_array_equal(a, np.repeat([-1.0, -2.0, -3.0], 10))


@pytest.mark.parametrize("impl", IMPLS)
def test_velocity_sharing_memory_with_param(impl):
    a = np.zeros(10)
    with pytest.raises(ValueError, match=r"sgd_step\(\) argument 'velocity' shares memory with param"):
        impl.sgd_step(a[:6], np.ones(6), a[4:], lr=0.1, momentum=0.9)
    np.testing.assert_array_equal(a, np.zeros(10))


@pytest.mark.parametrize("impl", IMPLS)
def test_grads_overlapping_params_are_read_as_before_the_step(impl):
    """A gradient that is (a view of) a parameter is read as it was before the step."""
    a = np.arange(1.0, 13.0)
    w1, w2, w3 = a[:6], a[6:], np.arange(5.0)
    opt = impl.SGD([w1, w2, w3], lr=0.5)
    opt.step([w2, w1, w3])  # params[1]'s gradient is params[0], updated just before
    np.testing.assert_array_equal(a[:6], np.arange(1.0, 7.0) - 0.5 * np.arange(7.0, 13.0))
    np.testing.assert_array_equal(a[6:], np.arange(7.0, 13.0) - 0.5 * np.arange(1.0, 7.0))
    np.testing.assert_array_equal(w3, 0.5 * np.arange(5.0))
    opt.step([w1[::-1], w2[::-1], None])  # reversed views (copied) of the arrays being written
    np.testing.assert_array_equal(w3, 0.5 * np.arange(5.0))


BAD_HYPER = [  # (overrides, exception, the key named, the rest of the message)
    pytest.param({"lr": float("nan")}, ValueError, "lr", r" must be finite and >= 0, got nan", id="lr-nan"),
    pytest.param({"lr": -0.1}, ValueError, "lr", r" must be finite and >= 0, got -0\.1", id="lr-negative"),
    pytest.param({"lr": float("inf")}, ValueError, "lr", r" must be finite and >= 0, got inf", id="lr-inf"),
    pytest.param({"lr": True}, TypeError, "lr", r" must be a real number, not bool", id="lr-bool"),
    pytest.param({"lr": "0.1"}, TypeError, "lr", r" must be a real number, not str", id="lr-str"),
    pytest.param({"lr": np.array([0.1, 0.2])}, TypeError, "lr", r" must be a real number, not ndarray", id="lr-array"),
    pytest.param({"momentum": float("nan")}, ValueError, "momentum", r" must be finite and >= 0", id="momentum-nan"),
    pytest.param({"momentum": -0.9}, ValueError, "momentum", r" must be finite and >= 0", id="momentum-negative"),
    pytest.param({"momentum": float("inf")}, ValueError, "momentum", r" must be finite and >= 0", id="momentum-inf"),
    pytest.param({"momentum": 0.9, "dampening": float("nan")}, ValueError, "dampening", r" must be finite, got nan",
                 id="dampening-nan"),
    pytest.param({"momentum": 0.9, "dampening": float("-inf")}, ValueError, "dampening", r" must be finite",
                 id="dampening-inf"),
    pytest.param({"weight_decay": float("nan")}, ValueError, "weight_decay", r" must be finite and >= 0",
                 id="weight-decay-nan"),
    pytest.param({"weight_decay": -1e-4}, ValueError, "weight_decay", r" must be finite and >= 0",
                 id="weight-decay-negative"),
    pytest.param({"weight_decay": float("inf")}, ValueError, "weight_decay", r" must be finite and >= 0",
                 id="weight-decay-inf"),
    pytest.param({"nesterov": True}, ValueError, "nesterov",
                 r": Nesterov momentum requires momentum > 0 and dampening == 0", id="nesterov-no-momentum"),
    pytest.param({"nesterov": True, "momentum": 0.9, "dampening": 0.1}, ValueError, "nesterov",
                 r": Nesterov momentum requires momentum > 0 and dampening == 0", id="nesterov-dampening"),
    pytest.param({"nesterov": 1}, TypeError, "nesterov", r" must be a bool, not int", id="nesterov-int"),
    pytest.param({"maximize": None}, TypeError, "maximize", r" must be a bool, not NoneType", id="maximize-none"),
]


def _hyper(**overrides):
    h = dict(lr=0.1, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False)
    h.update(overrides)
    return h


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("bad, exc, key, rest", BAD_HYPER)
def test_bad_hyperparameter_sgd_step(impl, bad, exc, key, rest):
    w = np.ones(3)
    with pytest.raises(exc, match=rf"^sgd_step\(\) argument '{key}'{rest}"):
        impl.sgd_step(w, np.ones(3), np.zeros(3), **_hyper(**bad))
    np.testing.assert_array_equal(w, np.ones(3))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("bad, exc, key, rest", BAD_HYPER)
def test_bad_hyperparameter_sgd(impl, bad, exc, key, rest):
    with pytest.raises(exc, match=rf"^SGD\(\) argument '{key}'{rest}"):
        impl.SGD([np.ones(3)], **_hyper(**bad))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("bad, exc, key, rest", BAD_HYPER)
def test_bad_hyperparameter_in_group(impl, bad, exc, key, rest):
    with pytest.raises(exc, match=rf"^SGD\(\) params\[1\]\['{key}'\]{rest}"):
        impl.SGD([{"params": [np.ones(3)]}, {"params": [np.ones(2)], **bad}], **_hyper())


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("bad, exc, key, rest", BAD_HYPER)
def test_bad_hyperparameter_set_between_steps(impl, bad, exc, key, rest):
    params = _four_params()
    opt = impl.SGD([{"params": params[:2]}, {"params": params[2:]}], lr=0.1)
    opt.step(_good_grads(params))
    before = [p.copy() for p in params]
    opt.param_groups[1].update(_hyper(**bad))
    with pytest.raises(exc, match=rf"^SGD\.step\(\) param_groups\[1\]\['{key}'\]{rest}"):
        opt.step(_good_grads(params))
    for p, b in zip(params, before):
        np.testing.assert_array_equal(p, b)


def test_dampening_checked_by_sgd_even_without_momentum():
    """SPEC: SGD checks dampening (finite) in its defaults and groups; only sgd_step ignores it
    when momentum is 0."""
    for impl in (fs, ref):
        with pytest.raises(ValueError, match=r"SGD\(\) argument 'dampening' must be finite"):
            impl.SGD([np.ones(3)], lr=0.1, dampening=float("nan"))


def test_hyperparameters_accept_numpy_scalars_and_ints():
    w = np.ones(2, np.float32)
    fs.sgd_step(w, np.ones(2, np.float32), np.zeros(2, np.float32), lr=np.float32(0.5), momentum=np.float64(0.5),
                weight_decay=0, nesterov=np.bool_(True))
    np.testing.assert_array_equal(w, [0.25, 0.25])
    opt = fs.SGD([w], lr=np.float64(1.0), momentum=1)
    assert opt.param_groups[0]["lr"] == 1.0 and type(opt.param_groups[0]["lr"]) is float


BAD_PARAMS = [
    pytest.param(lambda: [[1.0, 2.0]], TypeError, r"SGD\(\) params\[0\] must be a numpy\.ndarray, not list", id="list"),
    pytest.param(lambda: [np.ones(3, np.int64)], TypeError, r"params\[0\] has dtype int64", id="int"),
    pytest.param(lambda: [np.ones(3, np.float16)], TypeError, r"params\[0\] has dtype float16", id="float16"),
    pytest.param(lambda: [np.ones(3, ">f8")], TypeError, r"params\[0\] has dtype >f8", id="byteswapped"),
    pytest.param(lambda: [np.ones(3), np.ones((3, 4))[:, 1]], ValueError, r"params\[1\] must be C-contiguous",
                 id="strided"),
    pytest.param(lambda: [np.ones((3, 4), order="F")], ValueError, r"params\[0\] must be C-contiguous",
                 id="fortran"),
    pytest.param(lambda: [np.frombuffer(bytearray(33), np.float64, 4, 1)], ValueError, r"params\[0\] must be aligned",
                 id="unaligned"),
    pytest.param(lambda: [], ValueError, r"SGD\(\) argument 'params' is an empty parameter list", id="empty"),
    pytest.param(lambda: np.ones(3), TypeError, r"argument 'params' must be an iterable", id="bare-array"),
    pytest.param(lambda: [np.ones(3), {"params": [np.ones(2)]}], TypeError, r"mixes arrays and parameter groups",
                 id="mixed"),
    pytest.param(lambda: [{"lr": 0.1}], ValueError, r"params\[0\] \(a parameter group\) has no 'params' key",
                 id="group-without-params"),
    pytest.param(lambda: [{"params": {np.float64(1.0)}}], TypeError, r"must be an ordered collection", id="set"),
]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("make, exc, match", BAD_PARAMS)
def test_bad_params(impl, make, exc, match):
    with pytest.raises(exc, match=match):
        impl.SGD(make(), lr=0.1)


SGD_STEP_BAD = [
    pytest.param(lambda: ([1.0], np.ones(1), None, {}), TypeError, r"argument 'param' must be a numpy\.ndarray",
                 id="param-list"),
    pytest.param(lambda: (np.ones(3, np.int32), np.ones(3), None, {}), TypeError, r"argument 'param' has dtype int32",
                 id="param-int"),
    pytest.param(lambda: (np.ones(3), np.ones(4), None, {}), ValueError,
                 r"argument 'grad' has shape \(4,\), expected \(3,\)", id="grad-shape"),
    pytest.param(lambda: (np.ones(3), np.ones(3, np.float32), None, {}), TypeError,
                 r"argument 'grad' has dtype float32, expected float64", id="grad-dtype"),
    pytest.param(lambda: (np.ones(3), np.ones(3), None, {"momentum": 0.9}), ValueError,
                 r"argument 'velocity' is required when momentum != 0", id="velocity-missing"),
    pytest.param(lambda: (np.ones(3), np.ones(3), [0.0, 0.0, 0.0], {"momentum": 0.9}), TypeError,
                 r"argument 'velocity' must be a numpy\.ndarray, not list", id="velocity-list"),
    pytest.param(lambda: (np.ones(3), np.ones(3), np.zeros(2), {"momentum": 0.9}), ValueError,
                 r"argument 'velocity' has shape \(2,\), expected \(3,\)", id="velocity-shape"),
    pytest.param(lambda: (np.ones(3), np.ones(3), np.zeros(3, np.float32), {"momentum": 0.9}), TypeError,
                 r"argument 'velocity' has dtype float32, expected float64", id="velocity-dtype"),
    pytest.param(lambda: (np.ones(3), np.ones(3), np.zeros(6)[::2], {"momentum": 0.9}), ValueError,
                 r"argument 'velocity' must be C-contiguous", id="velocity-strided"),
]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("make, exc, match", SGD_STEP_BAD)
def test_sgd_step_bad_arrays(impl, make, exc, match):
    param, grad, velocity, extra = make()
    before = np.array(param, copy=True)
    v_before = None if not isinstance(velocity, np.ndarray) else velocity.copy()
    with pytest.raises(exc, match=r"sgd_step\(\) " + match):
        impl.sgd_step(param, grad, velocity, lr=0.1, **extra)
    np.testing.assert_array_equal(param, before)
    if v_before is not None:
        np.testing.assert_array_equal(velocity, v_before)


# ---- state_dict ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("save_impl, load_impl", [
    pytest.param(fs, fs, id="compiled-to-compiled"),
    pytest.param(fs, ref, id="compiled-to-reference"),
    pytest.param(ref, fs, id="reference-to-compiled"),
])
def test_state_dict_round_trip_continues_the_trajectory(save_impl, load_impl, dtype):
    h = dict(lr=0.02, momentum=0.9, dampening=0.25, weight_decay=1e-4, nesterov=False, maximize=True)
    params0, grads = _problem(SHAPES, dtype, seed=9)
    straight, _ = _run(fs, params0, grads, h, "groups")
    params = [p.copy() for p in params0]
    opt = save_impl.SGD(_groups(params, "groups", h), **h)
    for g in grads[:20]:
        opt.step(g)
    opt.param_groups[0]["lr"] = 0.02  # a value that is set again (no change)
    blob = pickle.dumps(opt.state_dict())
    for g in grads[20:23]:  # steps after saving do not change the saved state
        opt.step(g)
    saved = pickle.loads(blob)
    assert set(saved) == {"state", "param_groups"}
    assert sorted(saved["state"]) == [0, 1, 2, 3, 4]
    assert [g["params"] for g in saved["param_groups"]] == [[0, 1], [2, 3, 4]]
    assert saved["param_groups"][1]["weight_decay"] == 0.0 and saved["param_groups"][1]["lr"] == 0.01
    resumed = [p.copy() for p in params0]  # rebuild at step 20 from a fresh optimizer
    warm = fs.SGD(_groups(resumed, "groups", h), **h)
    for g in grads[:20]:
        warm.step(g)
    fresh_params = [p.copy() for p in resumed]
    fresh = load_impl.SGD(_groups(fresh_params, "groups", dict(h, lr=1.0)), **dict(h, lr=1.0, momentum=0.5))
    fresh.load_state_dict(saved)
    assert fresh.param_groups[0]["lr"] == 0.02 and fresh.param_groups[0]["momentum"] == 0.9
    for g in grads[20:]:
        fresh.step(g)
    for a, b in zip(fresh_params, straight):
        _assert_close(a, b, dtype)


@pytest.mark.parametrize("impl", IMPLS)
def test_state_dict_before_first_step_reseeds(impl):
    """Parameters without a saved buffer start their momentum afresh (first step seeds it)."""
    w = np.array([1.0, 2.0])
    opt = impl.SGD([w], lr=0.5, momentum=0.9, dampening=0.5)
    assert opt.state_dict()["state"] == {}
    opt.step([np.ones(2)])
    opt.load_state_dict({"state": {}, "param_groups": opt.state_dict()["param_groups"]})
    opt.step([np.ones(2)])
    np.testing.assert_array_equal(opt.state_dict()["state"][0]["momentum_buffer"], np.ones(2))
    np.testing.assert_array_equal(w, [0.0, 1.0])


BAD_STATE = [
    pytest.param(lambda sd: [sd], TypeError, r"argument 'state_dict' must be a dict", id="not-a-dict"),
    pytest.param(lambda sd: {"state": sd["state"]}, ValueError, r"has no 'param_groups' key", id="no-groups"),
    pytest.param(lambda sd: dict(sd, param_groups=sd["param_groups"][:1]), ValueError,
                 r"has 1 parameter groups, the optimizer has 2", id="group-count"),
    pytest.param(lambda sd: dict(sd, param_groups=[sd["param_groups"][0], dict(sd["param_groups"][1], params=[2])]),
                 ValueError, r"has 1 parameters, the optimizer's group 1 has 2", id="group-size"),
    pytest.param(lambda sd: dict(sd, param_groups=[sd["param_groups"][0], dict(sd["param_groups"][1], lr=-1.0)]),
                 ValueError, r"state_dict\['param_groups'\]\[1\]\['lr'\] must be finite and >= 0", id="bad-lr"),
    pytest.param(lambda sd: dict(sd, state={**sd["state"], 3: {"momentum_buffer": np.zeros(5)}}), ValueError,
                 r"state_dict\['state'\]\[3\]\['momentum_buffer'\] has shape \(5,\), expected \(6,\)",
                 id="buffer-shape"),
    pytest.param(lambda sd: dict(sd, state={**sd["state"], 7: {"momentum_buffer": np.zeros(5)}}), ValueError,
                 r"state_dict\['state'\] has key 7", id="buffer-index"),
    pytest.param(lambda sd: dict(sd, state={**sd["state"], 1: {"momentum_buffer": np.zeros(3, np.int64)}}),
                 TypeError, r"has dtype int64", id="buffer-dtype"),
]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("corrupt, exc, match", BAD_STATE)
def test_load_bad_state_dict_changes_nothing(impl, corrupt, exc, match):
    params = _four_params()
    opt = impl.SGD([{"params": params[:2]}, {"params": params[2:], "lr": 0.2}], lr=0.1, momentum=0.9)
    opt.step(_good_grads(params))
    good = opt.state_dict()
    opt.step(_good_grads(params))
    now = pickle.dumps(opt.state_dict())
    with pytest.raises(exc, match=r"SGD\.load_state_dict\(\) .*" + match):
        opt.load_state_dict(corrupt(good))
    assert pickle.dumps(opt.state_dict()) == now


def test_state_dict_buffers_are_cast_to_the_parameter_dtype():
    w = np.zeros(3, np.float32)
    opt = fs.SGD([w], lr=1.0, momentum=0.5)
    opt.step([np.ones(3, np.float32)])
    sd = opt.state_dict()
    sd["state"][0]["momentum_buffer"] = np.full(3, 2.0)  # float64, as a torch state might hold
    opt.load_state_dict(sd)
    buf = opt.state_dict()["state"][0]["momentum_buffer"]
    assert buf.dtype == np.float32
    np.testing.assert_array_equal(buf, [2.0, 2.0, 2.0])


# ---- signatures ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sgd_step", "SGD"])
def test_reference_has_the_same_signature(name):
    assert inspect.signature(getattr(fs, name)) == inspect.signature(getattr(ref, name))
    assert getattr(fs, name) is getattr(fs_optim, name)


@pytest.mark.parametrize("method", ["step", "state_dict", "load_state_dict"])
def test_reference_methods_have_the_same_signature(method):
    assert inspect.signature(getattr(fs.SGD, method)) == inspect.signature(getattr(ref.SGD, method))


def test_signatures_follow_the_spec():
    assert str(inspect.signature(fs.sgd_step)) == (
        "(param, grad, velocity=None, *, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, "
        "maximize=False)"
    )
    assert str(inspect.signature(fs.SGD)) == (
        "(params, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, *, maximize=False)"
    )
