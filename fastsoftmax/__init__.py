"""fastsoftmax: fast, exact CPU kernels for the last layer of a classifier.

Row-wise softmax, log_softmax and logsumexp with their backward passes; NumPy arrays in,
NumPy arrays out.  ``fastsoftmax.reference`` holds a pure-NumPy twin of every function.

Examples
--------
>>> import numpy as np
>>> import fastsoftmax as fs
>>> fs.softmax(np.array([[1.0, 1.0, 1.0, 1.0]]))
array([[0.25, 0.25, 0.25, 0.25]])
"""

import os as _os

# The kernels' parallel regions are short.  With libgomp's default wait policy an idle
# worker busy-waits after each region, taking CPU time from the calling thread on shared
# or oversubscribed machines (measured on a 2-vCPU VM: a 0.6 ms softmax took 8 ms on two
# threads).  Passive workers sleep instead; a region then costs a wake-up of microseconds.
# Read by OpenMP when it loads (with the first kernel module below); a value the user set
# is kept.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from . import reference  # noqa: E402
from ._activations import ISA as _ISA  # noqa: E402
from ._threads import get_num_threads, set_num_threads
from .activations import log_softmax, log_softmax_backward, logsumexp, softmax, softmax_backward
from .losses import cross_entropy, cross_entropy_with_grad, nll_loss
from .optim import SGD, sgd_step

__version__ = "0.1.0"

#: Instruction set the kernels dispatched to at import ("avx512", "avx2" or "baseline"; on AMD
#: Zen 4 "avx512+avx2": AVX-512 with the AVX2 kernels for float32 softmax's rows of up to 128
#: columns and the float32 cross-entropy's short rows); FASTSOFTMAX_ISA=baseline (or avx2)
#: forces a lower one, FASTSOFTMAX_ISA=avx512 AVX-512 throughout, avx512+avx2 the mix.
isa = _ISA

__all__ = [
    "softmax",
    "log_softmax",
    "logsumexp",
    "softmax_backward",
    "log_softmax_backward",
    "nll_loss",
    "cross_entropy",
    "cross_entropy_with_grad",
    "sgd_step",
    "SGD",
    "set_num_threads",
    "get_num_threads",
    "isa",
]
