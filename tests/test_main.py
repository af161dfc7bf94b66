"""The benchmark job ``python -m fastsoftmax`` and its shared case list (fastsoftmax._bench)."""

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastsoftmax as fs
from fastsoftmax import __main__ as cli
from fastsoftmax import _bench

PACKAGE_PARENT = str(Path(fs.__file__).resolve().parent.parent)
CASE_KEYS = {"name", "op", "dtype", "shape", "group", "fs_over_copyto", "fs_out_over_copyto", "fs_over_stream_copy",
             "results"}
OK_KEYS = {"status", "median_s", "min_s", "ratio", "max_abs_error", "tolerance", "within_tolerance", "samples", "number"}


def _run_cli(*args, cwd):
    env = dict(os.environ)
    env["PYTHONPATH"] = PACKAGE_PARENT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "fastsoftmax", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    proc = _run_cli("--quick", "--threads", "1", "--cases", "softmax-float32", "--json", "out.json", cwd=tmp)
    return proc, tmp / "out.json"


def test_help_lists_the_options():
    proc = _run_cli("--help", cwd=PACKAGE_PARENT)
    assert proc.returncode == 0, proc.stderr
    for option in ("--quick", "--threads", "--json", "--plot", "--cases", "train"):
        assert option in proc.stdout


def test_quick_run_prints_the_table_and_progress(quick_run):
    proc, _ = quick_run
    assert proc.returncode == 0, proc.stderr
    names = [c.name for c in _bench.select(_bench.cases(quick=True), ["softmax-float32"])]
    assert len(names) == 10  # softmax and log_softmax at the five shapes
    for name in names:
        assert name in proc.stdout
        assert name in proc.stderr  # progress
    assert "speed-up" in proc.stdout and "fs/copyto" in proc.stdout and "out=/copyto" in proc.stdout
    assert "fs/stream" in proc.stdout
    assert "float64" not in proc.stdout.split("\n\n", 1)[1]  # the filter applied
    assert f"[10/10] {names[-1]}" in proc.stderr


def test_quick_run_json(quick_run):
    proc, path = quick_run
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(path.read_text())
    assert doc["schema_version"] == 1
    assert {"fastsoftmax", "isa", "quick", "threads", "timing", "versions", "machine", "date"} <= set(doc["meta"])
    assert doc["meta"]["quick"] is True
    assert doc["meta"]["threads"]["requested"] == 1
    assert doc["meta"]["threads"]["fastsoftmax"] == 1
    assert [c["name"] for c in doc["cases"]] == [
        c.name for c in _bench.select(_bench.cases(quick=True), ["softmax-float32"])]
    expected = {"fastsoftmax", "fastsoftmax_out", "reference", "scipy", "torch", "jax", "copyto", "stream_copy"}
    for case in doc["cases"]:
        assert set(case) == CASE_KEYS
        assert case["dtype"] == "float32" and case["op"] in ("softmax", "log_softmax")
        res = case["results"]
        assert set(res) == expected
        for name, entry in res.items():
            installed = _bench.COMPETITORS[name].module is None or importlib.util.find_spec(
                _bench.COMPETITORS[name].module) is not None
            if not installed:
                assert entry["status"] == "unavailable"
                continue
            assert entry["status"] == "ok", (case["name"], name, entry)
            assert set(entry) == OK_KEYS
            assert 0 < entry["min_s"] <= entry["median_s"] and entry["samples"] >= 1 and entry["number"] >= 1
            assert math.isclose(entry["ratio"], entry["median_s"] / res["fastsoftmax"]["median_s"])
            if name in _bench.FLOORS:
                assert entry["max_abs_error"] is None
            else:
                assert 0 <= entry["max_abs_error"] <= entry["tolerance"], (case["name"], name)
                assert entry["within_tolerance"] is True
        assert res["fastsoftmax"]["ratio"] == 1.0
        assert math.isclose(case["fs_over_copyto"], res["fastsoftmax"]["median_s"] / res["copyto"]["median_s"])
        assert math.isclose(case["fs_out_over_copyto"],
                            res["fastsoftmax_out"]["median_s"] / res["copyto"]["median_s"])
        assert math.isclose(case["fs_over_stream_copy"],
                            res["fastsoftmax"]["median_s"] / res["stream_copy"]["median_s"])
    if importlib.util.find_spec("torch") is not None:
        assert doc["meta"]["threads"]["torch"] == 1
    if importlib.util.find_spec("jax") is not None and hasattr(os, "sched_getaffinity") \
            and len(os.sched_getaffinity(0)) > 1 and os.path.isdir("/proc/self/task"):
        assert "1 XLA pool thread(s)" in doc["meta"]["threads"]["pinning"]["jax"]


def test_plot_of_the_quick_run(quick_run, tmp_path):
    pytest.importorskip("matplotlib", reason="--plot needs matplotlib (the bench extra)")
    proc, path = quick_run
    assert proc.returncode == 0, proc.stderr
    png = tmp_path / "speedups.png"
    cli.plot(json.loads(path.read_text()), png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_says_so_before_running(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # find_spec then reports it missing
    with pytest.raises(SystemExit) as exc:
        cli.main(["--quick", "--cases", "softmax-float32-1x10", "--plot", str(tmp_path / "p.png")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "matplotlib" in err and "pip install" in err
    assert not (tmp_path / "p.png").exists()


def test_unknown_case_filter_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--quick", "--cases", "no-such-case"])
    assert exc.value.code == 2
    assert "no-such-case" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["0", "-1", "two"])
def test_threads_must_be_a_positive_integer(bad, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--threads", bad, "--list"])
    assert exc.value.code == 2


def test_list_and_case_filters(capsys):
    assert cli.main(["--list", "--cases", "sgd", "--cases", "cross_entropy-float64"]) == 0
    out = capsys.readouterr().out.split()
    assert out == ["cross_entropy-float64-4096x1000", "cross_entropy-float64-512x50257",
                   "cross_entropy-float64-65536x10", "cross_entropy-float64-64x10", "sgd-float32-1x10000000",
                   "sgd-float32-200x1000", "sgd-float64-1x10000000", "sgd-float64-200x1000"]


def test_case_list_is_issue_5s():  # and the cross-entropy of a batch of 64x10 (the call's cost)
    full = _bench.cases()
    act = [(c.op, c.dtype, c.shape) for c in full if c.kind == "activation"]
    assert len(act) == 20 and {s for _, _, s in act} == {(4096, 1000), (256, 50257), (65536, 10), (16384, 128), (1, 10)}
    assert {(c.dtype, c.shape) for c in full if c.op == "cross_entropy"} == {
        (d, s) for d in ("float32", "float64") for s in ((4096, 1000), (512, 50257), (65536, 10), (64, 10))}
    assert {(c.dtype, c.shape) for c in full if c.op == "sgd"} == {
        (d, s) for d in ("float32", "float64") for s in ((1, 10_000_000), (200, 1000))}
    quick = _bench.cases(quick=True)
    assert len(quick) == len(full)
    for big, small in zip(full, quick):
        assert (big.op, big.dtype) == (small.op, small.dtype)
        assert small.size <= min(big.size, 1 << 17)
        # The code path is kept: the row length (the number of SGD arrays).
        assert small.shape[1 if big.op != "sgd" else 0] == big.shape[1 if big.op != "sgd" else 0]
    for case in full:
        assert set(_bench.competitors_for(case)) >= {"fastsoftmax", "reference", "copyto"}
        assert ("scipy" in _bench.competitors_for(case)) == (case.kind == "activation")
        assert ("jax" in _bench.competitors_for(case)) == (case.op != "sgd")
        assert ("fastsoftmax_out" in _bench.competitors_for(case)) == (case.op != "sgd")
        assert ("stream_copy" in _bench.competitors_for(case)) == (case.op != "sgd")
    assert not set(_bench.FLOORS) & set(_bench.PEERS)


def test_the_accuracy_check_catches_a_wrong_result():
    case = _bench.select(_bench.cases(quick=True), ["softmax-float32-32x1000"])[0]
    x = _bench.inputs(case)["x"]
    good = _bench.max_abs_error([fs.softmax(x)], _bench.oracle(case))
    assert good <= _bench.tolerance(case, "fastsoftmax")
    wrong_axis = _bench.max_abs_error([fs.softmax(x, axis=0)], _bench.oracle(case))
    assert wrong_axis > _bench.tolerance(case, "torch") > _bench.tolerance(case, "fastsoftmax")
    assert math.isnan(_bench.max_abs_error([np.full(x.shape, np.nan)], _bench.oracle(case)))
    with pytest.raises(ValueError):
        _bench.max_abs_error([x[:1]], _bench.oracle(case))


def test_sgd_case_checks_two_steps_against_torch_semantics():
    case = _bench.select(_bench.cases(quick=True), ["sgd-float64-200x100"])[0]
    runner = _bench.prepare(case, "fastsoftmax")
    got = runner.result()
    assert _bench.max_abs_error(got, _bench.oracle(case)) <= _bench.tolerance(case, "fastsoftmax")
    # Two steps moved the parameters (a no-op step would not pass).
    start = _bench.inputs(case)["params"]
    assert _bench.max_abs_error(start, _bench.oracle(case)) > 1e3 * _bench.tolerance(case, "fastsoftmax")


def test_failures_reports_an_inaccurate_fastsoftmax():
    doc = {"cases": [{"name": "c", "results": {
        "fastsoftmax": {"status": "ok", "max_abs_error": 1.0, "tolerance": 1e-6, "within_tolerance": False},
        "torch": {"status": "ok", "max_abs_error": 1.0, "tolerance": 1e-6, "within_tolerance": False},
        "reference": {"status": "error", "reason": "RuntimeError: boom"},
        "jax": {"status": "unavailable", "reason": "jax is not installed"},
    }}]}
    out = cli.failures(doc)
    assert len(out) == 2 and "fastsoftmax" in out[0] and "boom" in out[1]


def test_train_forwards_its_arguments(tmp_path, monkeypatch, capsys):
    script = tmp_path / "train_digits.py"
    script.write_text("import sys\n"
                      "def main(argv):\n"
                      "    print('ARGS', argv, sys.argv[1:])\n"
                      "    return 3\n")
    monkeypatch.setattr(cli, "_TRAIN_EXAMPLE", script)
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    assert cli.main(["train", "--epochs", "2", "--quick"]) == 3
    assert "ARGS ['--epochs', '2', '--quick'] ['--epochs', '2', '--quick']" in capsys.readouterr().out


def test_train_without_the_example_says_where_it_looked(tmp_path, capsys):
    missing = tmp_path / "examples" / "train_digits.py"
    assert cli.run_train(["--epochs", "1"], path=missing) == 2
    assert str(missing) in capsys.readouterr().err


def test_cases_of_a_missing_function_are_skipped_not_failed(monkeypatch):
    monkeypatch.delattr(fs, "cross_entropy_with_grad")
    case = _bench.select(_bench.cases(quick=True), ["cross_entropy-float32-32x1000"])[0]
    res = _bench.run_case(case, _bench.QUICK, names=["fastsoftmax", "reference", "copyto"])
    assert res["fastsoftmax"] == {"status": "unavailable",
                                  "reason": "fastsoftmax.cross_entropy_with_grad is not importable yet"}
    assert res["reference"]["status"] == "ok" and res["reference"]["within_tolerance"] is True
    assert res["copyto"]["status"] == "ok" and res["copyto"]["median_s"] > 0


def test_train_falls_back_to_the_packaged_example(tmp_path, monkeypatch, capsys):
    import importlib.machinery
    import types

    fake = types.ModuleType("fastsoftmax._train_digits")
    fake.__spec__ = importlib.machinery.ModuleSpec("fastsoftmax._train_digits", None)
    fake.main = lambda argv=None: print("PACKAGED", argv) or 0
    monkeypatch.setitem(sys.modules, "fastsoftmax._train_digits", fake)
    monkeypatch.setattr(cli, "_TRAIN_EXAMPLE", tmp_path / "no-checkout" / "train_digits.py")
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    assert cli.main(["train", "--epochs", "1"]) == 0
    assert "PACKAGED ['--epochs', '1']" in capsys.readouterr().out


def test_scaling_times_one_and_n_threads(tmp_path):
    proc = _run_cli("--quick", "--scaling", "2", "--cases", "softmax-float32-1x10,sgd-float32-1x",
                    "--json", "s.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "2 threads" in proc.stdout and "speed-up" in proc.stdout
    doc = json.loads((tmp_path / "s.json").read_text())
    assert doc["threads"] == 2
    assert [c["name"] for c in doc["cases"]] == ["softmax-float32-1x10", "log_softmax-float32-1x10", "sgd-float32-1x65536"]
    for c in doc["cases"]:
        assert c["one_s"] > 0 and c["many_s"] > 0
        assert c["speedup"] == pytest.approx(c["one_s"] / c["many_s"])


def test_scaling_refuses_threads_and_plot(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--scaling", "2", "--threads", "1"])
    assert exc.value.code == 2
    assert "--scaling" in capsys.readouterr().err
