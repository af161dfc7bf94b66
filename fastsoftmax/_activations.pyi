import enum

import numpy as np

ISA: str
STREAM_MIN_BYTES: int
STREAM_MIN_COLS: int

class Op(enum.IntEnum):
    SOFTMAX = 0
    LOG_SOFTMAX = 1
    LOGSUMEXP = 2
    SOFTMAX_BACKWARD = 3
    LOG_SOFTMAX_BACKWARD = 4

def unary_rows(op: int, x: np.ndarray, out: np.ndarray, nthreads: int) -> None: ...
def binary_rows(op: int, g: np.ndarray, y: np.ndarray, out: np.ndarray, nthreads: int) -> None: ...
def try_unary(op: int, x: object, axis: object, out: object, get_threads: object) -> object: ...
def try_binary(op: int, g: object, y: object, axis: object, out: object, get_threads: object) -> object: ...
