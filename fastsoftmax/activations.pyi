from typing import Any, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

_Axis = int | tuple[int, ...] | None

def softmax(x: ArrayLike, axis: _Axis = -1, *, out: NDArray[np.floating[Any]] | None = None) -> NDArray[np.floating[Any]]: ...
def log_softmax(x: ArrayLike, axis: _Axis = -1, *, out: NDArray[np.floating[Any]] | None = None) -> NDArray[np.floating[Any]]: ...
def logsumexp(
    x: ArrayLike, axis: _Axis = -1, *, keepdims: bool = False, out: NDArray[np.floating[Any]] | None = None
) -> NDArray[np.floating[Any]] | np.floating[Any]: ...
def softmax_backward(
    grad_output: ArrayLike, output: ArrayLike, axis: _Axis = -1, *, out: NDArray[np.floating[Any]] | None = None
) -> NDArray[np.floating[Any]]: ...
def log_softmax_backward(
    grad_output: ArrayLike, output: ArrayLike, axis: _Axis = -1, *, out: NDArray[np.floating[Any]] | None = None
) -> NDArray[np.floating[Any]]: ...
