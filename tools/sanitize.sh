#!/usr/bin/env bash
# Run the test suite against an AddressSanitizer + UndefinedBehaviorSanitizer build of the
# kernels, and fail on any sanitizer report.
#
#   tools/sanitize.sh [pytest arguments]      (default: the whole tests/ directory)
#
# Nothing in the work tree is touched: the tree as it is (tracked and untracked files, not
# ignored ones such as build products) is copied into a temporary directory, built there with
# FASTSOFTMAX_SANITIZE=1 (see setup.py) in a virtual environment of its own, and tested
# there.  The Python interpreter is not built with ASan, so the ASan runtime is preloaded
# (with libstdc++ after it, so that ASan can intercept C++ exceptions thrown by libraries such
# as JAX).  Reports go to files as well as to stderr (log_path), so a report from a
# subprocess, or one that pytest captured, still fails the run.
#
# Environment:
#   PYTHON=python3           interpreter for the virtual environment
#   CC=gcc                   compiler (its libasan.so / libstdc++.so are preloaded)
#   SANITIZE_KEEP=1          keep the temporary directory (its path is printed)
#   SANITIZE_TMPDIR=dir      where to make it (default: $TMPDIR or /tmp)
#
# Not run here: tests/test_leaks.py (it measures RSS, which ASan's shadow memory and
# quarantine make meaningless) and the opt-in bigmem tests (ASan's shadow memory on top of
# 8.6 GB).  ASan's own leak checker is off: CPython keeps memory alive by design.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
CC="${CC:-gcc}"
WORK="$(mktemp -d "${SANITIZE_TMPDIR:-${TMPDIR:-/tmp}}/fastsoftmax-sanitize.XXXXXX")"
cleanup() {
    if [ "${SANITIZE_KEEP:-0}" = "1" ]; then
        echo "sanitize: kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

say() { printf '\n==== sanitize: %s ====\n' "$*"; }

say "copy of the work tree in $WORK/src"
mkdir -p "$WORK/src" "$WORK/logs"
if git -C "$ROOT" rev-parse --is-inside-work-tree > /dev/null 2>&1; then
    (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf -) | tar -xf - -C "$WORK/src"
else
    tar -C "$ROOT" --exclude=./build --exclude='*.so' --exclude='./fastsoftmax/*.c' --exclude=.git -cf - . | tar -xf - -C "$WORK/src"
fi
cd "$WORK/src"

say "virtual environment"
"$PYTHON" -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"
TEST_DEPS="$("$VPY" - <<'EOF'
import tomllib
with open("pyproject.toml", "rb") as f:
    print(" ".join(tomllib.load(f)["project"]["optional-dependencies"]["test"]))
EOF
)"
# torch is compared against by some tests: the same version as the calling environment's, if
# it has one (pip then installs it from its cache or the machine's local file).
TORCH="$("$PYTHON" -c 'import torch; print("torch==" + torch.__version__.split("+")[0])' 2> /dev/null || true)"
# (pip's complaints about this machine's missing local package folders are left out)
# shellcheck disable=SC2086
"$VPY" -m pip install -q numpy Cython setuptools wheel $TEST_DEPS $TORCH 2>&1 \
    | { grep -v 'is ignored: it is neither a file nor a directory' || true; }

say "build with FASTSOFTMAX_SANITIZE=1"
FASTSOFTMAX_SANITIZE=1 CC="$CC" "$VPY" setup.py build_ext --inplace > "$WORK/build.log" 2>&1 || {
    tail -50 "$WORK/build.log"
    exit 1
}
for so in fastsoftmax/_*.so; do
    if ! ldd "$so" | grep libasan > /dev/null; then  # (not grep -q: ldd would get SIGPIPE)
        echo "sanitize: $so is not linked against libasan (FASTSOFTMAX_SANITIZE ignored?)" >&2
        exit 1
    fi
done

LIBASAN="$("$CC" -print-file-name=libasan.so)"
LIBSTDCXX="$("$CC" -print-file-name=libstdc++.so)"
for lib in "$LIBASAN" "$LIBSTDCXX"; do
    [ -e "$lib" ] || { echo "sanitize: $lib not found" >&2; exit 1; }
done

run_sanitized() {
    LD_PRELOAD="$LIBASAN $LIBSTDCXX" \
    ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:allocator_may_return_null=1:log_path=$WORK/logs/asan" \
    UBSAN_OPTIONS="halt_on_error=1:abort_on_error=1:print_stacktrace=1:log_path=$WORK/logs/ubsan" \
    "$@"
}

say "the sanitized build is the one imported"
run_sanitized "$VPY" -c '
import os, sys
import fastsoftmax, fastsoftmax._activations as k
here = os.path.realpath(os.getcwd())
assert os.path.realpath(k.__file__).startswith(here), k.__file__
print("fastsoftmax from", os.path.dirname(k.__file__), "isa", fastsoftmax.isa)
'

say "tests under ASan + UBSan"
if [ "$#" -eq 0 ]; then
    set -- tests
fi
# --capture=sys: pytest captures Python's sys.stdout/stderr only, so a report that the C
# runtime writes to file descriptor 2 reaches the log even when it aborts the process.
# (UBSan's reports, when it runs inside the ASan runtime, go to stderr, not to log_path.)
status=0
# Large results come from the result pool's mmapped blocks, which ASan does not watch: the
# pool is off here (tests/test_result_pool.py turns it on for its own tests).
FASTSOFTMAX_RESULT_CACHE_MB=0 \
run_sanitized "$VPY" -m pytest -q -p no:cacheprovider --capture=sys --ignore=tests/test_leaks.py "$@" \
    2>&1 | tee "$WORK/pytest.log" || status=${PIPESTATUS[0]}

reports=$(find "$WORK/logs" -type f -size +0 | sort)
in_log=$(grep -cE 'runtime error:|ERROR: AddressSanitizer|SUMMARY: (Address|UndefinedBehavior)Sanitizer' "$WORK/pytest.log" || true)
if [ -n "$reports" ] || [ "$in_log" -gt 0 ]; then
    say "sanitizer reports"
    grep -E -A12 'runtime error:|ERROR: AddressSanitizer' "$WORK/pytest.log" | head -80 || true
    for f in $reports; do
        echo "--- $f"
        head -60 "$f"
    done
    echo "sanitize: FAILED: sanitizer report(s): $in_log in the test output, $(echo "$reports" | grep -c . || true) in log files" >&2
    exit 1
fi
if [ "$status" -ne 0 ]; then
    echo "sanitize: FAILED: pytest exited with $status" >&2
    exit "$status"
fi
say "no sanitizer report"
