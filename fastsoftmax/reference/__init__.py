"""Pure-NumPy twins of every public fastsoftmax array function (and of ``SGD``).

Each has the same name, signature, errors and special values as its compiled counterpart;
the tests hold the two to each other and the benchmarks use these as the baseline.

Examples
--------
>>> import numpy as np
>>> from fastsoftmax import reference
>>> reference.softmax(np.array([0.0, 0.0]))
array([0.5, 0.5])
"""

from .activations import log_softmax, log_softmax_backward, logsumexp, softmax, softmax_backward
from .losses import cross_entropy, cross_entropy_with_grad, nll_loss
from .optim import SGD, sgd_step

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
]
