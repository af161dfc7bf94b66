"""Type stubs of the compiled loss kernels (fastsoftmax/_losses.pyx)."""

import enum

import numpy as np

ISA: str

def ce_rows(
    x: np.ndarray,
    target: np.ndarray | None,
    prob: np.ndarray | None,
    weight: np.ndarray | None,
    label_smoothing: float,
    grad_scale: float,
    grad: np.ndarray | None,
    row_loss: np.ndarray,
    nthreads: int,
) -> None: ...
def nll_rows(x: np.ndarray, target: np.ndarray, weight: np.ndarray | None, row_loss: np.ndarray) -> None: ...
def sum_row_losses(row_loss: np.ndarray) -> float: ...
def total_weight(target: np.ndarray, weight: np.ndarray | None, ncols: int, typenum: int) -> float: ...

class LossKind(enum.IntEnum):
    CROSS_ENTROPY = 0
    NLL = 1

def try_loss(
    kind: int,
    logits: object,
    target: object,
    weight: object,
    ignore_index: object,
    reduction: object,
    label_smoothing: object,
    out: object,
    want_grad: bool,
    get_threads: object,
) -> object: ...
