"""The training example of issue 7: examples/train_digits.py, ``python -m fastsoftmax train``
(the code lives in fastsoftmax._train_digits).

Quick runs (a few epochs on a subset of the digits) check that the example runs, that the
loss goes down and the classifier learns, and, when torch is installed, that the fastsoftmax
and torch loss curves agree.  The digits data set ships with scikit-learn (the ``examples``
extra); without it those tests are skipped, and the training loop is still exercised on a
synthetic data set.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastsoftmax as fs
from fastsoftmax import _train_digits as td

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "train_digits.py"
PACKAGE_PARENT = str(Path(fs.__file__).resolve().parent.parent)
QUICK = ["--epochs", "3", "--subset", "600", "--progress", "none"]
CURVE_RTOL = {"float64": 1e-4, "float32": 1e-3}  # issue 7's bound; float32: the example's default


def rel_diff(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.abs(b)))


def run_main(args, tmp_path, capsys):
    """main(args + --json) in-process: (exit status, the JSON document, stdout, stderr)."""
    path = tmp_path / "result.json"
    rc = td.main([*args, "--json", str(path)])
    out, err = capsys.readouterr()
    return rc, json.loads(path.read_text()), out, err


@pytest.fixture(scope="module")
def sklearn():
    return pytest.importorskip("sklearn", reason="the digits data set ships with scikit-learn")


def blobs(n_train=240, n_test=120, n_features=12, n_classes=4, seed=0):
    """A synthetic, learnable data set (Gaussian blobs), standardised like the digits."""
    rng = np.random.default_rng(seed)
    centres = 2.0 * rng.standard_normal((n_classes, n_features))
    y = rng.integers(0, n_classes, n_train + n_test)
    X = centres[y] + rng.standard_normal((len(y), n_features))
    X_train, X_test = td.standardise(X[:n_train], X[n_train:])
    return td.Data(X_train, y[:n_train], X_test, y[n_train:], n_classes=n_classes, name="blobs")


# --------------------------------------------------------------------------------------
# The example on the digits


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("model", ["softreg", "mlp"])
def test_example_runs_and_learns(sklearn, model, dtype, tmp_path, capsys):
    rc, doc, out, _ = run_main([*QUICK, "--model", model, "--dtype", dtype], tmp_path, capsys)
    assert rc == 0
    assert list(doc["models"]) == [model]
    assert doc["config"]["dtype"] == dtype
    assert doc["data"] == {"name": "digits", "n_train": 480, "n_test": 120, "n_features": 64,
                           "n_classes": 10}
    curves = doc["models"][model]["fastsoftmax"]
    assert "torch" not in doc["models"][model]
    for key in ("train_loss", "train_acc", "test_loss", "test_acc", "epoch_time_s"):
        assert len(curves[key]) == 3
    loss = curves["train_loss"]
    assert all(np.isfinite(loss))
    assert loss[0] > loss[1] > loss[2], loss  # the loss goes down every epoch
    assert loss[2] < 0.5 * loss[0]
    assert loss[0] < np.log(10)  # below chance already after one epoch
    assert curves["test_loss"][2] < curves["test_loss"][0]
    assert curves["test_acc"][2] >= 0.85  # 10 classes: chance is 0.1
    # the summary: the table with the test accuracy and the time per epoch
    assert "test acc" in out and "time/epoch" in out
    assert f"{curves['test_acc'][-1]:.2%}" in out
    assert "target:" not in out  # accuracy targets are for full runs only


@pytest.mark.parametrize(
    "model, dtype",
    [("softreg", "float64"), ("mlp", "float64"), ("softreg", "float32"), ("mlp", "float32")],
    ids=["softreg-float64", "mlp-float64", "softreg-float32", "mlp-float32"],
)
def test_loss_curves_match_torch(sklearn, model, dtype, tmp_path, capsys):
    pytest.importorskip("torch")
    rc, doc, out, _ = run_main([*QUICK, "--model", model, "--dtype", dtype, "--compare-torch"],
                               tmp_path, capsys)
    assert rc == 0, out
    res = doc["models"][model]
    fs_c, th_c = res["fastsoftmax"], res["torch"]
    assert len(fs_c["train_loss"]) == len(th_c["train_loss"]) == 3
    # recomputed here from the two curves, not taken from the example's own report
    assert rel_diff(fs_c["train_loss"], th_c["train_loss"]) <= CURVE_RTOL[dtype]
    assert rel_diff(fs_c["test_loss"], th_c["test_loss"]) <= CURVE_RTOL[dtype]
    assert th_c["train_loss"][2] < th_c["train_loss"][0]
    np.testing.assert_allclose(fs_c["test_acc"], th_c["test_acc"], atol=1 / 120)  # one sample
    c = res["comparison"]
    assert c["train_loss_max_rel_diff"] == pytest.approx(rel_diff(fs_c["train_loss"], th_c["train_loss"]))
    assert doc["curves_agree"] is True and doc["rtol"] == CURVE_RTOL[dtype]
    assert "fastsoftmax vs torch" in out and "[ok: bound" in out


@pytest.mark.parametrize("kind", ["plain", "tqdm"])
def test_progress_bar_per_epoch_shows_loss_and_accuracy(sklearn, kind, tmp_path, capsys):
    if kind == "tqdm":
        pytest.importorskip("tqdm")
    rc, doc, _, err = run_main(["--epochs", "2", "--subset", "300", "--model", "softreg",
                                "--progress", kind], tmp_path, capsys)
    assert rc == 0
    curves = doc["models"]["softreg"]["fastsoftmax"]
    for epoch in (1, 2):
        assert f"softreg fastsoftmax {epoch}/2" in err
    # the epoch's closing line: its loss, training accuracy and test accuracy
    assert f"loss {curves['train_loss'][-1]:.4f}" in err
    assert f"test acc {curves['test_acc'][-1]:6.2%}" in err
    assert "acc" in err


def test_plot_writes_a_png(sklearn, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png = tmp_path / "curves.png"
    rc, _, _, _ = run_main(["--epochs", "2", "--subset", "300", "--plot", str(png)], tmp_path, capsys)
    assert rc == 0
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert 5_000 < len(data) < 200_000


@pytest.mark.parametrize(
    "args, message",
    [(["--dtype", "float16"], "invalid choice"), (["--epochs", "0"], "positive integer"),
     (["--subset", "5"], "at least 20"), (["--model", "cnn"], "invalid choice")],
    ids=["dtype", "epochs", "subset", "model"],
)
def test_usage_errors_exit_2(sklearn, args, message, capsys):
    with pytest.raises(SystemExit) as exc:
        td.main(args)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


# --------------------------------------------------------------------------------------
# The entry points


def _env():
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return env


@pytest.mark.parametrize("entry", ["script", "module"])
def test_entry_points_reach_main(entry, tmp_path):
    if entry == "script":  # from any directory, without PYTHONPATH: the script finds its checkout
        if not EXAMPLE.is_file():
            pytest.skip("not a source checkout")
        cmd, env = [sys.executable, str(EXAMPLE), "--help"], _env()
    else:
        cmd, env = [sys.executable, "-m", "fastsoftmax", "train", "--help"], _env()
        env["PYTHONPATH"] = PACKAGE_PARENT
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for option in ("--compare-torch", "--plot", "--dtype", "--epochs", "--model", "--subset"):
        assert option in proc.stdout


def test_example_script_is_the_package_code():
    if not EXAMPLE.is_file():
        pytest.skip("not a source checkout")
    spec = importlib.util.spec_from_file_location("_train_digits_script", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main is td.main


# --------------------------------------------------------------------------------------
# The training loop itself, on synthetic data (no scikit-learn needed)


@pytest.mark.parametrize("model", ["softreg", "mlp"])
def test_training_loop_on_synthetic_data(model):
    data = blobs()
    cfg = td.Config(models=(model,), epochs=4, batch_size=32, hidden=16, progress="none")
    res = td.run(cfg, data)["models"][model]["fastsoftmax"]
    loss = res["train_loss"]
    assert all(a > b for a, b in zip(loss, loss[1:])), loss
    assert loss[-1] < 0.3 * loss[0]
    assert res["test_acc"][-1] >= 0.9
    # the same seed gives the same run
    again = td.run(cfg, data)["models"][model]["fastsoftmax"]
    assert again["train_loss"] == loss
    for p, q in zip(res["params"], again["params"]):
        np.testing.assert_array_equal(p, q)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_training_loop_matches_torch_on_synthetic_data(dtype):
    pytest.importorskip("torch")
    cfg = td.Config(epochs=4, batch_size=32, hidden=16, dtype=dtype, compare_torch=True, progress="none")
    result = td.run(cfg, blobs())
    for model, res in result["models"].items():
        assert rel_diff(res["fastsoftmax"]["train_loss"], res["torch"]["train_loss"]) <= CURVE_RTOL[dtype], model
        assert res["comparison"]["final_params_max_rel_diff"] <= (1e-10 if dtype == "float64" else 1e-4), model
        for p, q in zip(res["fastsoftmax"]["params"], res["torch"]["params"]):
            assert p.dtype == q.dtype == np.dtype(dtype)


def test_weight_decay_only_on_weights():
    """The biases are in a parameter group without weight decay: with a zero gradient
    everywhere (lr > 0), weights shrink and biases stay."""
    data = blobs(n_train=64, n_test=8)
    data.X_train[:] = 0.0  # zero inputs: zero weight gradients
    cfg = td.Config(models=("softreg",), epochs=1, batch_size=64, lr=0.5, weight_decay=0.1,
                    progress="none")
    w0, b0 = td.init_params("softreg", data.n_features, data.n_classes, cfg.hidden, cfg.seed, np.float64)
    w, b = td.run(cfg, data)["models"]["softreg"]["fastsoftmax"]["params"]
    np.testing.assert_allclose(w, w0[0] * (1 - 0.5 * 0.1), rtol=1e-12)  # one step: w -= lr*wd*w
    assert not np.allclose(b, b0[0])  # the biases moved with their (non-zero) gradient...
    # ...and by exactly lr * grad: no decay term
    labels_frac = np.bincount(data.y_train, minlength=data.n_classes) / len(data.y_train)
    p = np.exp(b0[0] - b0[0].max())
    p /= p.sum()
    np.testing.assert_allclose(b, b0[0] - 0.5 * (p - labels_frac), rtol=1e-12, atol=1e-15)
