"""Argument checks of the optimizer, shared by ``fastsoftmax.optim`` and its reference twin.

Everything a caller can get wrong about ``sgd_step`` and ``SGD`` is checked here, before any
array is written, with a message that names the function and the argument (SPEC section 4).
Both the compiled optimizer and ``fastsoftmax.reference.optim`` call these helpers, so they
raise the same errors with the same messages.

Parameters and velocities are written in place, so they must be writeable, aligned,
C-contiguous float32/float64 ndarrays in native byte order. Gradients are only read: any
array-like of the parameter's shape and dtype (byte order aside) is accepted, and one that
is not a C-contiguous native ndarray clear of the written arrays is copied first.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from ._validation import as_ndarray

__all__ = [
    "HYPERPARAMETERS",
    "check_hyperparameters",
    "check_param",
    "check_grad",
    "check_velocity",
    "check_grads_list",
    "check_no_shared_memory",
    "build_param_groups",
    "ParamRecord",
    "check_param_unchanged",
    "make_state_dict",
    "parse_state_dict",
    "group_hyperparameter_values",
    "replace_groups",
]

_FLOAT32 = np.dtype(np.float32)
_FLOAT64 = np.dtype(np.float64)

#: Hyperparameters of a parameter group, in torch.optim.SGD's order.
HYPERPARAMETERS = ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize")


def _what(func: str, name: str) -> str:
    """'f() argument 'x'' for a plain argument name, 'f() params[1]['lr']' for a path."""
    return f"{func} argument '{name}'" if name.isidentifier() else f"{func} {name}"


def _real(func: str, name: str, value) -> float:
    """A Python float from a real number (Python or NumPy scalar; not bool)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{_what(func, name)} must be a real number, not {type(value).__name__}")
    return float(value)


def _finite_nonnegative(func: str, name: str, value) -> float:
    x = _real(func, name, value)
    if not (math.isfinite(x) and x >= 0.0):
        raise ValueError(f"{_what(func, name)} must be finite and >= 0, got {x!r}")
    return x


def _finite(func: str, name: str, value) -> float:
    x = _real(func, name, value)
    if not math.isfinite(x):
        raise ValueError(f"{_what(func, name)} must be finite, got {x!r}")
    return x


def _flag(func: str, name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{_what(func, name)} must be a bool, not {type(value).__name__}")
    return bool(value)


def check_hyperparameters(func: str, lr, momentum, dampening, weight_decay, nesterov, maximize,
                          *, prefix: str = "", dampening_without_momentum: bool = True) -> dict:
    """The validated hyperparameters as a dict of Python floats and bools (HYPERPARAMETERS order).

    lr, momentum and weight_decay must be finite and >= 0, dampening finite; nesterov requires
    momentum > 0 and dampening == 0.  `prefix` is prepended to each name in messages (e.g.
    ``"params[1]"`` gives ``params[1]['lr']``).  With ``dampening_without_momentum=False``
    (sgd_step) dampening is not looked at when momentum is 0.
    """

    def name(key):
        return f"{prefix}[{key!r}]" if prefix else key

    lr = _finite_nonnegative(func, name("lr"), lr)
    momentum = _finite_nonnegative(func, name("momentum"), momentum)
    if momentum != 0.0 or dampening_without_momentum:
        dampening = _finite(func, name("dampening"), dampening)
    else:
        dampening = 0.0  # ignored entirely (SPEC section 4)
    weight_decay = _finite_nonnegative(func, name("weight_decay"), weight_decay)
    nesterov = _flag(func, name("nesterov"), nesterov)
    maximize = _flag(func, name("maximize"), maximize)
    if nesterov and (momentum <= 0.0 or dampening != 0.0):
        raise ValueError(
            f"{_what(func, name('nesterov'))}: Nesterov momentum requires momentum > 0 and "
            f"dampening == 0, got momentum={momentum!r}, dampening={dampening!r}"
        )
    return {
        "lr": lr,
        "momentum": momentum,
        "dampening": dampening,
        "weight_decay": weight_decay,
        "nesterov": nesterov,
        "maximize": maximize,
    }


def _check_written(func: str, name: str, a) -> np.ndarray:
    """An array written in place: a writeable, aligned, C-contiguous native float ndarray."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{_what(func, name)} must be a numpy.ndarray, not {type(a).__name__}")
    if a.dtype != _FLOAT32 and a.dtype != _FLOAT64:
        raise TypeError(
            f"{_what(func, name)} has dtype {a.dtype}; expected float32 or float64 (native byte order)"
        )
    return a


def _check_writable_layout(func: str, name: str, a: np.ndarray) -> None:
    if not a.flags.writeable:
        raise ValueError(f"{_what(func, name)} is read-only")
    if not a.flags.c_contiguous:
        raise ValueError(f"{_what(func, name)} must be C-contiguous")
    if not a.flags.aligned:
        raise ValueError(f"{_what(func, name)} must be aligned")


def check_param(func: str, name: str, p) -> np.ndarray:
    """A parameter: a writeable, aligned, C-contiguous float32/float64 ndarray."""
    _check_written(func, name, p)
    _check_writable_layout(func, name, p)
    return p


def check_grad(func: str, name: str, grad, param: np.ndarray, param_name: str,
               *, copy: bool = False) -> np.ndarray:
    """A gradient for `param`: its shape (else ValueError) and dtype (else TypeError).

    Returns an aligned, native, C-contiguous array of the parameter's dtype: `grad` itself when
    it already is one and `copy` is false, else a fresh copy (which shares no memory with
    anything the caller writes).
    """
    if isinstance(grad, np.ndarray):
        a = grad
    else:
        a = as_ndarray(grad, _what(func, name))
    if a.shape != param.shape:
        raise ValueError(
            f"{_what(func, name)} has shape {a.shape}, expected {param.shape} (the shape of {param_name})"
        )
    if a.dtype.kind != "f" or a.dtype.newbyteorder("=") != param.dtype:
        raise TypeError(
            f"{_what(func, name)} has dtype {a.dtype}, expected {param.dtype} (the dtype of {param_name})"
        )
    usable = a.flags.c_contiguous and a.flags.aligned and a.dtype.isnative
    if copy or not usable:
        return np.array(a, dtype=param.dtype, order="C", copy=True)
    return a


def check_velocity(func: str, name: str, v, param: np.ndarray, param_name: str) -> np.ndarray:
    """A momentum buffer for `param`: a writeable, aligned, C-contiguous ndarray of its shape
    and dtype that shares no memory with it."""
    if v is None:
        raise ValueError(f"{_what(func, name)} is required when momentum != 0")
    if not isinstance(v, np.ndarray):
        raise TypeError(f"{_what(func, name)} must be a numpy.ndarray, not {type(v).__name__}")
    if v.shape != param.shape:
        raise ValueError(
            f"{_what(func, name)} has shape {v.shape}, expected {param.shape} (the shape of {param_name})"
        )
    if v.dtype != param.dtype:
        raise TypeError(
            f"{_what(func, name)} has dtype {v.dtype}, expected {param.dtype} (the dtype of {param_name})"
        )
    _check_writable_layout(func, name, v)
    if np.may_share_memory(v, param):
        raise ValueError(f"{_what(func, name)} shares memory with {param_name}")
    return v


def check_grads_list(func: str, grads, n: int) -> None:
    """`grads` must be a list or tuple of n gradients (raises; returns when it is)."""
    if not isinstance(grads, (list, tuple)):
        raise TypeError(
            f"{_what(func, 'grads')} must be a list or tuple of arrays (one per parameter), "
            f"not {type(grads).__name__}"
        )
    if len(grads) != n:
        raise ValueError(f"{_what(func, 'grads')} has {len(grads)} gradients, expected {n} (one per parameter)")


def _extent(a: np.ndarray) -> tuple[int, int]:
    """Byte range [start, end) of a C-contiguous array."""
    start = a.__array_interface__["data"][0]
    return start, start + a.nbytes


def check_no_shared_memory(func: str, arrays, names) -> None:
    """No two of the C-contiguous `arrays` share memory (the same array twice or overlapping
    views): ValueError naming both.  O(n log n): sorts the byte ranges."""
    spans = sorted(
        (start, end, i) for i, a in enumerate(arrays) for start, end in [_extent(a)] if end > start
    )
    reach, holder = None, None
    for start, end, i in spans:
        if reach is not None and start < reach:
            first, second = sorted((holder, i))
            raise ValueError(f"{func} {names[second]} shares memory with {names[first]}")
        if reach is None or end > reach:
            reach, holder = end, i


def build_param_groups(func: str, params, defaults: dict) -> list[dict]:
    """torch-style parameter groups from a list of arrays or of dicts.

    Each group is a dict: ``"params"`` (a tuple of the checked parameter arrays), then the
    group's hyperparameters (the defaults, overridden by the group's keys), then any other
    keys the caller put in the group (kept, as torch does).  Parameters may not share memory
    with one another, within or across groups.
    """
    if isinstance(params, (np.ndarray, dict, str, bytes)):
        raise TypeError(
            f"{_what(func, 'params')} must be an iterable of arrays or of parameter groups (dicts), "
            f"not {type(params).__name__}"
        )
    try:
        items = list(params)
    except TypeError:
        raise TypeError(
            f"{_what(func, 'params')} must be an iterable of arrays or of parameter groups (dicts), "
            f"not {type(params).__name__}"
        ) from None
    if not items:
        raise ValueError(f"{_what(func, 'params')} is an empty parameter list")
    n_dicts = sum(isinstance(item, dict) for item in items)
    if n_dicts == 0:
        raw_groups = [({"params": items}, "params", False)]
    elif n_dicts == len(items):
        raw_groups = [(item, f"params[{k}]", True) for k, item in enumerate(items)]
    else:
        raise TypeError(f"{_what(func, 'params')} mixes arrays and parameter groups (dicts)")

    groups, flat, names = [], [], []
    for raw, path, is_group in raw_groups:
        if "params" not in raw:
            raise ValueError(f"{func} {path} (a parameter group) has no 'params' key")
        members = raw["params"]
        if isinstance(members, np.ndarray):
            members = [members]
        elif isinstance(members, (set, frozenset, dict)):
            raise TypeError(
                f"{func} {path}['params'] must be an ordered collection of arrays, not {type(members).__name__}"
            )
        else:
            try:
                members = list(members)
            except TypeError:
                raise TypeError(
                    f"{func} {path}['params'] must be a list of arrays, not {type(members).__name__}"
                ) from None
        member_path = f"{path}['params']" if is_group else path
        for j, p in enumerate(members):
            names.append(f"{member_path}[{j}]")
            check_param(func, names[-1], p)
            flat.append(p)
        merged = dict(defaults)
        for key in HYPERPARAMETERS:
            if key in raw:
                merged[key] = raw[key]
        hyper = check_hyperparameters(func, *(merged[k] for k in HYPERPARAMETERS),
                                      prefix=path if is_group else "")
        group = {"params": tuple(members), **hyper}
        for key, value in raw.items():
            if key != "params" and key not in HYPERPARAMETERS:
                group[key] = value
        groups.append(group)
    check_no_shared_memory(func, flat, names)
    return groups


class ParamRecord:
    """What a parameter looked like when the optimizer was built (data pointer, shape, dtype)."""

    __slots__ = ("data", "shape", "dtype")

    def __init__(self, p: np.ndarray):
        self.data = p.__array_interface__["data"][0]
        self.shape = p.shape
        self.dtype = p.dtype


def check_param_unchanged(func: str, i: int, p: np.ndarray, record: ParamRecord) -> None:
    """params[i] must still be a writeable C-contiguous array at the same memory, of the same
    shape and dtype, as when the optimizer was built (the step writes through saved pointers)."""
    check_param(func, f"params[{i}]", p)
    if p.dtype != record.dtype or p.shape != record.shape or p.__array_interface__["data"][0] != record.data:
        raise ValueError(
            f"{func} params[{i}] was reallocated, reshaped or retyped after the optimizer was built "
            "(its parameters are fixed at construction)"
        )


def make_state_dict(param_groups: list[dict], buffers: list) -> dict:
    """torch.optim-style state dict: ``{"state": {i: {"momentum_buffer": array}},
    "param_groups": [{..hyperparameters.., "params": [i, ...]}]}`` with copies of the started
    momentum buffers (``buffers[i]`` is an array or None) and parameters numbered in order."""
    state = {i: {"momentum_buffer": b.copy()} for i, b in enumerate(buffers) if b is not None}
    groups, i = [], 0
    for group in param_groups:
        saved = {k: v for k, v in group.items() if k != "params"}
        saved["params"] = list(range(i, i + len(group["params"])))
        i += len(group["params"])
        groups.append(saved)
    return {"state": state, "param_groups": groups}


def group_hyperparameter_values(func: str, param_groups, group_params) -> list:
    """Per parameter group, its hyperparameters as a tuple in HYPERPARAMETERS order
    (unchecked), after checking that the group still holds the parameter list it was built
    with (``group_params[k]``, by identity)."""
    values = []
    for k, group in enumerate(param_groups):
        if group.get("params") is not group_params[k]:
            raise ValueError(
                f"{func} param_groups[{k}]['params'] was replaced; the parameters are fixed "
                "at construction (build a new SGD)"
            )
        try:
            values.append(tuple(group[name] for name in HYPERPARAMETERS))
        except KeyError as exc:
            raise ValueError(f"{func} param_groups[{k}] has no {exc.args[0]!r} key") from None
    return values


def replace_groups(param_groups, new_groups) -> None:
    """Load the groups parsed by parse_state_dict into the optimizer's own group dicts."""
    for group, new in zip(param_groups, new_groups):
        group.clear()
        group.update(new)


def parse_state_dict(func: str, state_dict, param_groups: list[dict]) -> tuple[list[dict], list]:
    """Check a state dict against the optimizer's groups before anything is loaded.

    Returns the new groups (the saved hyperparameters and extra keys, validated, with the
    optimizer's own parameter tuples) and, per parameter, a momentum buffer converted to the
    parameter's dtype (a fresh array) or None (not started).
    """
    if not isinstance(state_dict, dict):
        raise TypeError(f"{_what(func, 'state_dict')} must be a dict, not {type(state_dict).__name__}")
    for key in ("state", "param_groups"):
        if key not in state_dict:
            raise ValueError(f"{_what(func, 'state_dict')} has no {key!r} key")
    saved_groups, state = state_dict["param_groups"], state_dict["state"]
    if not isinstance(saved_groups, (list, tuple)) or not isinstance(state, dict):
        raise TypeError(
            f"{_what(func, 'state_dict')} must map 'param_groups' to a list and 'state' to a dict"
        )
    if len(saved_groups) != len(param_groups):
        raise ValueError(
            f"{_what(func, 'state_dict')} has {len(saved_groups)} parameter groups, "
            f"the optimizer has {len(param_groups)}"
        )
    new_groups, params = [], []
    for k, (saved, group) in enumerate(zip(saved_groups, param_groups)):
        path = f"state_dict['param_groups'][{k}]"
        if not isinstance(saved, dict):
            raise TypeError(f"{func} {path} must be a dict, not {type(saved).__name__}")
        missing = [key for key in ("params", *HYPERPARAMETERS) if key not in saved]
        if missing:
            raise ValueError(f"{func} {path} has no {missing[0]!r} key")
        if len(saved["params"]) != len(group["params"]):
            raise ValueError(
                f"{func} {path} has {len(saved['params'])} parameters, the optimizer's group {k} "
                f"has {len(group['params'])}"
            )
        hyper = check_hyperparameters(func, *(saved[key] for key in HYPERPARAMETERS), prefix=path)
        new = {"params": group["params"], **hyper}
        for key, value in saved.items():
            if key != "params" and key not in HYPERPARAMETERS:
                new[key] = value
        new_groups.append(new)
        params.extend(group["params"])
    buffers = [None] * len(params)
    for key, entry in state.items():
        if isinstance(key, (bool, np.bool_)) or not isinstance(key, numbers.Integral) or not 0 <= key < len(params):
            raise ValueError(
                f"{func} state_dict['state'] has key {key!r}; expected parameter indices 0..{len(params) - 1}"
            )
        i = int(key)
        if not isinstance(entry, dict):
            raise TypeError(f"{func} state_dict['state'][{i}] must be a dict, not {type(entry).__name__}")
        buf = entry.get("momentum_buffer")
        if buf is None:
            continue
        name = f"state_dict['state'][{i}]['momentum_buffer']"
        a = as_ndarray(buf, f"{func} {name}")
        if a.shape != params[i].shape:
            raise ValueError(
                f"{func} {name} has shape {a.shape}, expected {params[i].shape} (the shape of parameter {i})"
            )
        if a.dtype.kind != "f" or a.dtype.itemsize not in (4, 8):
            raise TypeError(f"{func} {name} has dtype {a.dtype}; expected float32 or float64")
        buffers[i] = np.array(a, dtype=params[i].dtype, order="C", copy=True)
    return new_groups, buffers
