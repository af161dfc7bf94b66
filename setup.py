"""Build the fastsoftmax kernels.

OpenMP is used when the compiler accepts -fopenmp (checked by compiling a small
program); otherwise the kernels build single-threaded.  No -march flags: the kernels
carry their own per-ISA bodies and pick one at run time (see fastsoftmax/_src).

Environment:
  FASTSOFTMAX_SANITIZE=1   build with AddressSanitizer + UndefinedBehaviorSanitizer
  FASTSOFTMAX_NO_OPENMP=1  build without OpenMP
"""
import glob
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

# Every fastsoftmax/_*.pyx is a kernel module (_threads, _activations, _losses, _sgd, ...).
KERNEL_MODULES = sorted(os.path.basename(p)[:-4] for p in glob.glob("fastsoftmax/_*.pyx"))


def compiler_accepts(flags):
    """True when the C compiler compiles and links an OpenMP program with `flags`."""
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc.split()[0]) is None:
        return False
    src = "#include <omp.h>\nint main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }\n"
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "t.c")
        with open(path, "w") as f:
            f.write(src)
        cmd = cc.split() + flags + [path, "-o", os.path.join(tmp, "t")]
        try:
            return subprocess.run(cmd, capture_output=True).returncode == 0
        except OSError:
            return False


def build_flags():
    # -ffp-contract=off: expressions round as written (as in the NumPy reference); the
    # kernels that want fused multiply-adds ask for them explicitly (intrinsics, fma()).
    # -fno-trapping-math: the kernels do not read the floating-point exception flags, so the
    # compiler may compute both sides of a select (the portable exp's special-value
    # selects): without it GCC kept every portable exp loop scalar (baseline build).  It
    # changes no result: NaN, inf and signed zeros keep their IEEE semantics.
    compile_args, link_args = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off"], []
    if sys.platform == "win32":
        return ["/O2", "/openmp"], []
    if os.environ.get("FASTSOFTMAX_NO_OPENMP") != "1" and compiler_accepts(["-fopenmp"]):
        compile_args.append("-fopenmp")
        link_args.append("-fopenmp")
    if os.environ.get("FASTSOFTMAX_SANITIZE") == "1":
        san = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g"]
        compile_args = [a for a in compile_args if a != "-O3"] + ["-O1"] + san
        link_args += san
    return compile_args, link_args


compile_args, link_args = build_flags()
extensions = [
    Extension(
        f"fastsoftmax.{name}",
        [f"fastsoftmax/{name}.pyx"],
        include_dirs=[np.get_include(), "fastsoftmax"],
        depends=sorted(glob.glob("fastsoftmax/_src/*.h")),
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    )
    for name in KERNEL_MODULES
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False},
    ),
)
