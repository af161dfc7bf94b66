"""``python -m fastsoftmax``: time fastsoftmax against its peers and print the comparison.

For every case of issue 5 (softmax / log_softmax, cross_entropy_with_grad and SGD.step at
several shapes, float32 and float64) it prints each competitor's median time, the speed-up
of fastsoftmax against it (competitor time / fastsoftmax time) and its max abs error against
a float64 oracle, and fastsoftmax's time over ``np.copyto``'s (the memory floor), also with
a preallocated ``out=`` (``fastsoftmax_out``: the kernel without a fresh result array), and
over a copy with streaming stores (``stream_copy``: the floor for results written that way,
as fastsoftmax writes large ones).  Progress goes to stderr, the tables to stdout.  Run
``python -m fastsoftmax --help`` for the options; ``python -m fastsoftmax train [ARGS...]``
runs the training example instead.

The exit status is 0 when fastsoftmax ran every case within its accuracy bound, 1 when it
failed or was inaccurate somewhere, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib
import importlib.metadata
import importlib.util
import inspect
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

from ._train_digits import _positive_int  # the same option check as the example's

__all__ = ["main"]

SCHEMA_VERSION = 1
_TRAIN_EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "train_digits.py"


# --------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fastsoftmax",
        description=(
            "Time fastsoftmax against fastsoftmax.reference (NumPy), scipy.special, torch (CPU) "
            "and JAX (jit, CPU), the last two when installed, with np.copyto of the same size "
            "as the memory-traffic floor (and, for activations and losses, a copy with streaming "
            "stores: the floor for results written that way). Prints per case each competitor's "
            "median time, the speed-up of fastsoftmax against it (competitor time / fastsoftmax time) and its "
            "max abs error against a float64 oracle (fastsoftmax.reference on float64 inputs)."
        ),
        epilog=(
            "subcommand:\n"
            "  train [ARGS...]   train the digits example (examples/train_digits.py) with ARGS;\n"
            "                    python -m fastsoftmax train --help lists them\n\n"
            "examples:\n"
            "  python -m fastsoftmax --threads 1\n"
            "  python -m fastsoftmax --quick --cases softmax-float32 --json out.json\n"
            "  python -m fastsoftmax --cases cross_entropy,sgd --plot speedups.png\n"
            "  python -m fastsoftmax --scaling 2 --cases 50257,65536x10\n"
            "\nexit status: 0 ok, 1 fastsoftmax failed or was inaccurate in some case, 2 usage error"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true",
                        help="few repetitions and smaller shapes (finishes in seconds; for CI)")
    parser.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                        help="threads for fastsoftmax and every peer (default: fastsoftmax's "
                             "default, OMP_NUM_THREADS or all CPUs)")
    parser.add_argument("--cases", action="append", default=None, metavar="SUBSTR",
                        help="run only cases whose name contains SUBSTR (comma-separated or "
                             "repeated: any matches), e.g. 'softmax-float32', '50257', 'sgd'")
    parser.add_argument("--list", action="store_true", help="list the selected cases and exit")
    parser.add_argument("--json", metavar="PATH",
                        help="also write the results as JSON to PATH (times in seconds; a "
                             "non-finite error is written as the string \"nan\" or \"inf\")")
    parser.add_argument("--scaling", type=_positive_int, default=None, metavar="N",
                        help="instead of the peers, time fastsoftmax alone on 1 and on N threads "
                             "(taking turns in one process) and print the speed-up per case")
    parser.add_argument("--plot", metavar="PATH",
                        help="also draw a bar chart of fastsoftmax's speed-up against each peer "
                             "per case to PATH (needs matplotlib)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "train":
        return run_train(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)

    from . import _bench

    selected = _bench.select(_bench.cases(quick=args.quick), args.cases)
    if not selected:
        parser.error(f"no case matches --cases {','.join(args.cases)!r}; "
                     "`python -m fastsoftmax --list` lists them")
    if args.list:
        for case in selected:
            print(case.name)
        return 0
    if args.plot and not _have_matplotlib():
        parser.error("--plot needs matplotlib, which is not installed "
                     "(pip install matplotlib, or pip install 'fastsoftmax[bench]')")

    settings = _bench.QUICK if args.quick else _bench.FULL
    if args.scaling is not None:
        if args.plot or args.threads:
            parser.error("--scaling sets the thread counts itself and draws no chart")
        doc = run_scaling(selected, args.scaling, settings)
        print(format_scaling(doc))
        if args.json:
            Path(args.json).write_text(json.dumps(_finite(doc), indent=1, allow_nan=False) + "\n")
            _progress(f"wrote {args.json}")
        return 0
    _bench.configure_threads(args.threads)
    results = run(selected, settings, quick=args.quick)

    print(format_report(results))
    if args.json:
        Path(args.json).write_text(json.dumps(_finite(results), indent=1, allow_nan=False) + "\n")
        _progress(f"wrote {args.json}")
    if args.plot:
        plot(results, args.plot)
        _progress(f"wrote {args.plot}")
    bad = failures(results)
    for line in bad:
        _progress(f"FAILED: {line}")
    return 1 if bad else 0


# --------------------------------------------------------------------------------------
# Running


def _progress(msg: str, end: str = "\n") -> None:
    print(msg, end=end, file=sys.stderr, flush=True)


def _fmt_time(seconds) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if seconds >= scale or unit == "ns":
            return f"{seconds / scale:.3g} {unit}" if seconds / scale < 1000 else f"{seconds / scale:.0f} {unit}"
    return "-"  # pragma: no cover


def run(selected, settings, quick: bool = False) -> dict:
    """Run every case; the results as the JSON document (see ``--json``)."""
    from . import _bench

    doc = {"schema_version": SCHEMA_VERSION, "meta": {}, "cases": []}
    started = time.perf_counter()
    width = len(str(len(selected)))
    for i, case in enumerate(selected, 1):
        _progress(f"[{i:>{width}}/{len(selected)}] {case.name} ", end="")
        notes = []
        t0 = time.perf_counter()
        res = _bench.run_case(case, settings, progress=notes.append)
        fs_time = res.get("fastsoftmax", {}).get("median_s")
        for entry in res.values():
            t = entry.get("median_s")
            entry["ratio"] = (t / fs_time) if (t is not None and fs_time) else None
        copy_time = res.get("copyto", {}).get("median_s")
        out_time = res.get("fastsoftmax_out", {}).get("median_s")
        stream_time = res.get("stream_copy", {}).get("median_s")
        doc["cases"].append({
            "name": case.name,
            "op": case.op,
            "dtype": case.dtype,
            "shape": list(case.shape),
            "group": case.group,
            "fs_over_copyto": (fs_time / copy_time) if (fs_time and copy_time) else None,
            "fs_out_over_copyto": (out_time / copy_time) if (out_time and copy_time) else None,
            "fs_over_stream_copy": (fs_time / stream_time) if (fs_time and stream_time) else None,
            "results": res,
        })
        summary = f"fastsoftmax {_fmt_time(fs_time)}" if fs_time else "fastsoftmax did not run"
        _progress(f"{summary} ({time.perf_counter() - t0:.1f} s)" + "".join(f"\n    {n}" for n in notes))
    doc["meta"] = _meta(settings, quick, time.perf_counter() - started)
    return doc


def run_scaling(selected, threads: int, settings) -> dict:
    """fastsoftmax on 1 and on `threads` threads per case (see ``--scaling``)."""
    from . import _bench

    doc = {"threads": threads, "cases": []}
    width = len(str(len(selected)))
    for i, case in enumerate(selected, 1):
        _progress(f"[{i:>{width}}/{len(selected)}] {case.name} ", end="")
        res = _bench.run_scaling(case, threads, settings)
        doc["cases"].append({"name": case.name, **res})
        _progress("-" if res["speedup"] is None else f"{res['speedup']:.2f}x")
    return doc


def format_scaling(doc: dict) -> str:
    n = doc["threads"]
    rows = [[c["name"], _fmt_time(c["one_s"]), _fmt_time(c["many_s"]), _fmt_ratio(c["speedup"])]
            for c in doc["cases"]]
    head = ["case", "1 thread", f"{n} threads", "speed-up"]
    lines = [f"fastsoftmax on 1 and {n} threads, taking turns (medians; speed-up = 1-thread time / {n}-thread time):", ""]
    return "\n".join(lines + _table(head, rows, "<>>>"))


def _version(dist: str):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _meta(settings, quick: bool, elapsed: float) -> dict:
    import numpy as np

    import fastsoftmax as fs

    from . import _bench

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "fastsoftmax": fs.__version__,
        "isa": fs.isa,
        "quick": quick,
        "threads": _bench.thread_report(),
        "timing": dataclasses.asdict(settings),
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "scipy": _version("scipy"),
            "torch": _version("torch"),
            "jax": _version("jax"),
            "jaxlib": _version("jaxlib"),
        },
        "machine": {
            "cpu": _cpu_model(),
            "arch": platform.machine(),
            "cpus_available": cpus,
            "system": platform.platform(),
        },
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "elapsed_s": round(elapsed, 3),
        "ratio": "competitor median time / fastsoftmax median time (>1: fastsoftmax is faster)",
        "max_abs_error": "against fastsoftmax.reference on float64 copies of the inputs",
    }


def failures(doc: dict) -> list[str]:
    """Cases where fastsoftmax (or its reference twin) failed or missed its accuracy bound."""
    from . import _bench

    out = []
    for case in doc["cases"]:
        for name in _bench.OURS:
            entry = case["results"].get(name)
            if entry is None or entry["status"] == "unavailable":
                continue
            if entry["status"] != "ok":
                out.append(f"{case['name']} {name}: {entry.get('reason')}")
            elif entry["within_tolerance"] is False:
                out.append(f"{case['name']} {name}: max abs error {entry['max_abs_error']:.3g} "
                           f"> {entry['tolerance']:.3g}")
    return out


# --------------------------------------------------------------------------------------
# Output


def _fmt_err(entry) -> str:
    err = entry.get("max_abs_error")
    if err is None:
        return "-"
    flag = "" if entry.get("within_tolerance", True) else "  (!)"
    return f"{err:.2e}{flag}"


def _fmt_ratio(r) -> str:
    if r is None or not math.isfinite(r):
        return "-"
    return f"{r:.2f}x" if r < 100 else f"{r:.0f}x"


def _table(header, rows, align) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    def line(cells):
        return "  ".join(str(c).ljust(w) if a == "<" else str(c).rjust(w)
                         for c, w, a in zip(cells, widths, align)).rstrip()
    return [line(header), line(["-" * w for w in widths])] + [line(r) for r in rows]


def format_report(doc: dict) -> str:
    """The detailed table (one line per case and competitor) and the speed-up summary."""
    from . import _bench

    meta = doc["meta"]
    th = meta["threads"]
    v = meta["versions"]
    peers_v = ", ".join(f"{k} {v[k]}" for k in ("torch", "jax", "scipy") if v.get(k))
    lines = [
        f"fastsoftmax {meta['fastsoftmax']} ({meta['isa']}) on {meta['machine']['cpu']}, "
        f"{meta['machine']['cpus_available']} CPUs; threads: {th['requested'] or 'default'} "
        f"(fastsoftmax {th['fastsoftmax']}" + (f", torch {th['torch']}" if "torch" in th else "") + ")",
        f"numpy {v['numpy']}" + (f"; {peers_v}" if peers_v else "")
        + ("; QUICK mode (small shapes, few repetitions)" if meta["quick"] else ""),
    ]
    for lib, note in th["pinning"].items():
        lines.append(f"{lib} pinning: {note}")
    lines += [
        "time: median (and best) per call after warm-up; speed-up: competitor median / "
        "fastsoftmax median (>1: fastsoftmax is faster);",
        "error: max abs error against a float64 oracle (fastsoftmax.reference on float64 inputs); "
        "(!): above its bound",
        "",
    ]
    rows = []
    for case in doc["cases"]:
        first = True
        for name, entry in case["results"].items():
            label = case["name"] if first else ""
            first = False
            if entry["status"] != "ok":
                rows.append([label, name, entry["status"], "", "", "", entry.get("reason", "")[:60]])
                continue
            extra = ""
            if name == "fastsoftmax" and case["fs_over_copyto"]:
                extra = f"fastsoftmax/copyto {case['fs_over_copyto']:.2f}"
            if name == "fastsoftmax_out" and case["fs_out_over_copyto"]:
                extra = f"with out=/copyto {case['fs_out_over_copyto']:.2f}"
            if name == "stream_copy" and case["fs_over_stream_copy"]:
                extra = f"fastsoftmax/stream_copy {case['fs_over_stream_copy']:.2f}"
            rows.append([label, name, _fmt_time(entry["median_s"]), _fmt_time(entry.get("min_s")),
                         _fmt_ratio(entry["ratio"]) if name in _bench.PEERS else "",
                         _fmt_err(entry), extra])
    lines += _table(["case", "competitor", "median", "best", "speed-up", "max abs err", ""], rows,
                    "<<>>><<")
    # Summary: one line per case.
    peers = [p for p in _bench.PEERS if any(
        c["results"].get(p, {}).get("status") == "ok" for c in doc["cases"])]
    srows = []
    for case in doc["cases"]:
        r = case["results"]
        fs_entry = r.get("fastsoftmax", {})
        srows.append([case["name"], _fmt_time(fs_entry.get("median_s"))]
                     + [_fmt_ratio(r.get(p, {}).get("ratio")) for p in peers]
                     + [f"{case['fs_over_copyto']:.2f}" if case["fs_over_copyto"] else "-",
                        f"{case['fs_out_over_copyto']:.2f}" if case["fs_out_over_copyto"] else "-",
                        f"{case['fs_over_stream_copy']:.2f}" if case["fs_over_stream_copy"] else "-"])
    lines += ["", "Speed-up of fastsoftmax (competitor time / fastsoftmax time); fs/copyto: "
              "fastsoftmax time / np.copyto time (out=/copyto: with a preallocated out=);",
              "fs/stream: fastsoftmax time / the time of a copy with streaming stores:", ""]
    lines += _table(["case", "fastsoftmax"] + peers + ["fs/copyto", "out=/copyto", "fs/stream"], srows,
                    "<" + ">" * (len(peers) + 4))
    return "\n".join(lines)


def _finite(obj):
    """`obj` with non-finite floats as the strings "nan", "inf", "-inf" (strict JSON)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _have_matplotlib() -> bool:
    try:
        return importlib.util.find_spec("matplotlib") is not None
    except (ImportError, ValueError):
        return False


def plot(doc: dict, path) -> None:
    """Bar chart of fastsoftmax's speed-up against each peer, per case (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    from . import _bench

    cases = doc["cases"]
    peers = [p for p in _bench.PEERS if any(c["results"].get(p, {}).get("ratio") for c in cases)]
    n = max(len(peers), 1)
    width = 0.8 / n
    fig, ax = plt.subplots(figsize=(max(6.0, 0.42 * len(cases) + 2.0), 4.8), dpi=100)
    for k, peer in enumerate(peers):
        xs, ys = [], []
        for i, c in enumerate(cases):
            r = c["results"].get(peer, {}).get("ratio")
            if r and math.isfinite(r):
                xs.append(i - 0.4 + width * (k + 0.5))
                ys.append(r)
        ax.bar(xs, ys, width=width, label=peer)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(cases)))
    ax.set_xticklabels([c["name"] for c in cases], rotation=60, ha="right", fontsize=7)
    ax.set_xlim(-0.6, len(cases) - 0.4)
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.set_ylabel("speed-up of fastsoftmax\n(peer time / fastsoftmax time)")
    th = doc["meta"]["threads"]
    ax.set_title(f"fastsoftmax {doc['meta']['fastsoftmax']} ({doc['meta']['isa']}), "
                 f"threads: {th['requested'] or th['fastsoftmax']}"
                 + (" - QUICK mode" if doc["meta"]["quick"] else ""), fontsize=9)
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# --------------------------------------------------------------------------------------
# train: the training example's hook


def run_train(argv: list[str], path=None) -> int:
    """Run the training example's ``main`` with `argv` (``python -m fastsoftmax train``).

    The example is ``examples/train_digits.py`` of the source checkout (or `path`); without
    it (an installed package) the package's own copy, ``fastsoftmax._train_digits``.
    ``main`` is called as ``main(argv)`` when it takes a parameter, else as ``main()``
    (``sys.argv[1:]`` is `argv` either way); an int it returns is the exit status.
    """
    explicit = path is not None
    path = Path(path) if explicit else _TRAIN_EXAMPLE
    if path.is_file():
        spec = importlib.util.spec_from_file_location("_fastsoftmax_train_example", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    elif not explicit and importlib.util.find_spec("fastsoftmax._train_digits") is not None:
        module = importlib.import_module("fastsoftmax._train_digits")
    else:
        print(f"python -m fastsoftmax train: {path} not found (the training example is in the "
              "source repository: examples/train_digits.py)", file=sys.stderr)
        return 2
    entry = getattr(module, "main", None)
    if not callable(entry):
        print(f"python -m fastsoftmax train: {path} has no main()", file=sys.stderr)
        return 2
    sys.argv = ["python -m fastsoftmax train", *argv]
    rc = entry(list(argv)) if inspect.signature(entry).parameters else entry()
    return rc if isinstance(rc, int) else 0


if __name__ == "__main__":
    sys.exit(main())
