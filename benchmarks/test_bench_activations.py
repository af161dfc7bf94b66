"""softmax and log_softmax, float32 and float64, at issue 5's shapes: fastsoftmax against
fastsoftmax.reference, scipy.special, torch, JAX, np.copyto and a copy with streaming stores
(see conftest.py)."""

OPS = ("softmax", "log_softmax")


def test_activation(run_bench, bench):
    m = run_bench(bench)
    if m.error is not None:  # the memory floors (copies) have no result to check
        assert m.error <= m.tolerance, m
