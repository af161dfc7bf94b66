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

from . import reference
from ._activations import ISA as _ISA
from ._threads import get_num_threads, set_num_threads
from .activations import log_softmax, log_softmax_backward, logsumexp, softmax, softmax_backward
from .losses import cross_entropy, cross_entropy_with_grad, nll_loss
from .optim import SGD, sgd_step

__version__ = "0.1.0"

#: Instruction set the kernels dispatched to at import ("avx512", "avx2" or "baseline");
#: FASTSOFTMAX_ISA=baseline (or avx2) forces a lower one.
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
