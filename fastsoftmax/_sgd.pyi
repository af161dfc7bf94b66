"""Type stubs of the compiled SGD kernels (fastsoftmax/_sgd.pyx)."""

from typing import Any, Protocol, Sequence

import numpy as np

ISA: str

class _Checker(Protocol):
    def grads(self, grads: Any, n: int) -> None: ...
    def param(self, i: int, p: np.ndarray) -> None: ...
    def grad(self, i: int, g: Any, p: np.ndarray) -> np.ndarray: ...

def sgd_step(
    param: np.ndarray,
    grad: np.ndarray,
    velocity: np.ndarray | None,
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
    nthreads: int,
) -> None: ...

class MultiSGD:
    def __init__(
        self, params: tuple[np.ndarray, ...], groups: tuple[int, ...], ngroups: int, checker: _Checker
    ) -> None: ...
    def set_group(
        self,
        k: int,
        lr: float,
        momentum: float,
        dampening: float,
        weight_decay: float,
        nesterov: bool,
        maximize: bool,
    ) -> None: ...
    def set_velocities(self, indices: Sequence[int], arrays: Sequence[np.ndarray]) -> None: ...
    def velocity(self, i: int) -> np.ndarray | None: ...
    def set_started(self, i: int, started: bool) -> None: ...
    def started(self, i: int) -> bool: ...
    def step(self, grads: Sequence[np.ndarray | None], nthreads: int) -> None: ...
