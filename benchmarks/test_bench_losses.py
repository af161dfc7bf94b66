"""cross_entropy_with_grad (mean, integer targets) at issue 5's shapes: fastsoftmax against
fastsoftmax.reference, torch (forward + backward), jitted jax.value_and_grad, np.copyto and a
copy with streaming stores."""

OPS = ("cross_entropy",)


def test_cross_entropy_with_grad(run_bench, bench):
    m = run_bench(bench)
    if m.error is not None:
        assert m.error <= m.tolerance, m
