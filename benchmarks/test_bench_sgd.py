"""SGD.step (momentum 0.99, weight decay 1e-4) on one array of 10M and on 200 arrays of
1000: fastsoftmax against fastsoftmax.reference, torch.optim.SGD(fused=True) and np.copyto.
The accuracy check compares the parameters after two steps of a fresh optimizer."""

OPS = ("sgd",)


def test_sgd_step(run_bench, bench):
    m = run_bench(bench)
    if m.error is not None:
        assert m.error <= m.tolerance, m
