"""Pure-NumPy twins of ``fastsoftmax.optim``: the same signatures, errors and trajectories.

Readable rather than fast: the update is SPEC section 4's formula written line by line with
NumPy temporaries, one parameter at a time.  Argument checks come from the same helpers as
the compiled optimizer (``fastsoftmax._optim_validation``), and the state dicts of the two
are interchangeable.

Rounding: torch's CPU kernels (and fastsoftmax's) round each line of the update once, as a
fused multiply-add.  ``_fma`` below does the same.  For float32 the product is exact in
float64, so one float64 add and a rounding to float32 give the FMA result; for float64 the
product and the sum are carried with their exact rounding errors (Dekker's product, Knuth's
sum) and added back once (where that is not finite -- infinities, NaN, near-overflow -- the
plain a * b + c is kept).  Either way the result is the correctly rounded a * b + c except in
rare near-tie cases, where it may be one ulp off.
"""

from __future__ import annotations

import numpy as np

from .._optim_validation import (
    ParamRecord,
    build_param_groups,
    check_grad,
    check_grads_list,
    check_hyperparameters,
    check_param,
    check_param_unchanged,
    check_velocity,
    group_hyperparameter_values,
    make_state_dict,
    parse_state_dict,
    replace_groups,
)

__all__ = ["sgd_step", "SGD"]


def _two_product(a, b):
    """p, e with p = fl(a * b) and a * b == p + e exactly (float64; Veltkamp's split)."""
    p = a * b
    split = 134217729.0  # 2**27 + 1
    t = split * a
    a_hi = t - (t - a)
    a_lo = a - a_hi
    t = split * b
    b_hi = t - (t - b)
    b_lo = b - b_hi
    e = ((a_hi * b_hi - p) + a_hi * b_lo + a_lo * b_hi) + a_lo * b_lo
    return p, e


def _two_sum(a, b):
    """s, e with s = fl(a + b) and a + b == s + e exactly."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _fma(a, b, c):
    """a * b + c rounded once to the dtype of `c` (see the module docstring)."""
    if np.result_type(c) == np.float32:
        wide = np.asarray(a, np.float64) * np.float64(b) + np.asarray(c, np.float64)
        return wide.astype(np.float32)
    p, p_err = _two_product(a, b)
    s, s_err = _two_sum(p, c)
    fused = s + (p_err + s_err)
    return np.where(np.isfinite(fused), fused, s)


def _update(param, grad, velocity, h, first):
    """One step of SPEC section 4 on one parameter; `first` seeds the momentum buffer with the
    gradient (torch's first step).  Writes `param` (and `velocity`) in place."""
    t = param.dtype.type  # hyperparameters are rounded to the parameter's dtype, as in torch
    g = -grad if h["maximize"] else grad
    if h["weight_decay"] != 0:
        g = _fma(param, t(h["weight_decay"]), g)
    if h["momentum"] != 0:
        if first:
            velocity[...] = g
        else:
            velocity[...] = _fma(g, t(1.0 - h["dampening"]), velocity * t(h["momentum"]))
        g = _fma(velocity, t(h["momentum"]), g) if h["nesterov"] else velocity
    param[...] = _fma(g, t(-h["lr"]), param)


def sgd_step(param, grad, velocity=None, *, lr, momentum=0.0, dampening=0.0, weight_decay=0.0,
             nesterov=False, maximize=False):
    """Reference twin of :func:`fastsoftmax.optim.sgd_step`.

    Examples
    --------
    >>> import numpy as np
    >>> from fastsoftmax.reference import sgd_step
    >>> w = np.array([1.0, 2.0])
    >>> sgd_step(w, np.array([1.0, -1.0]), lr=0.5)
    >>> w
    array([0.5, 2.5])
    """
    h = check_hyperparameters("sgd_step()", lr, momentum, dampening, weight_decay, nesterov, maximize,
                              dampening_without_momentum=False)
    check_param("sgd_step()", "param", param)
    g = check_grad("sgd_step()", "grad", grad, param, "param", copy=True)
    if h["momentum"] != 0:
        check_velocity("sgd_step()", "velocity", velocity, param, "param")
    else:
        velocity = None
    with np.errstate(all="ignore"):
        _update(param, g, velocity, h, first=False)


class SGD:
    """Reference twin of :class:`fastsoftmax.optim.SGD`: one parameter at a time, in NumPy.

    Examples
    --------
    >>> import numpy as np
    >>> from fastsoftmax.reference import SGD
    >>> w = np.array([1.0, 2.0])
    >>> opt = SGD([w], lr=0.1, momentum=0.9)
    >>> opt.step([np.array([1.0, -1.0])])
    >>> opt.step([np.array([1.0, -1.0])])
    >>> w
    array([0.71, 2.29])
    """

    def __init__(self, params, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, *,
                 maximize=False):
        self.defaults = check_hyperparameters("SGD()", lr, momentum, dampening, weight_decay, nesterov, maximize)
        self.param_groups = build_param_groups("SGD()", params, self.defaults)
        self._group_params = [g["params"] for g in self.param_groups]
        self._params = [p for g in self.param_groups for p in g["params"]]
        self._group_of = [k for k, g in enumerate(self.param_groups) for _ in g["params"]]
        self._records = [ParamRecord(p) for p in self._params]
        self._velocity = [None] * len(self._params)  # allocated once, when the group has momentum
        self._started = [False] * len(self._params)  # momentum buffer holds a value
        self._checked_groups("SGD()")

    def _checked_groups(self, func):
        """The hyperparameters of every group, checked; velocities allocated where needed."""
        hypers = [
            check_hyperparameters(func, *values, prefix=f"param_groups[{k}]")
            for k, values in enumerate(group_hyperparameter_values(func, self.param_groups, self._group_params))
        ]
        for i, p in enumerate(self._params):
            if hypers[self._group_of[i]]["momentum"] != 0 and self._velocity[i] is None:
                self._velocity[i] = np.zeros(p.shape, p.dtype)
        return hypers

    def step(self, grads):
        """Update every parameter in place; ``grads[i]`` None skips parameter i."""
        hypers = self._checked_groups("SGD.step()")
        check_grads_list("SGD.step()", grads, len(self._params))
        for i, p in enumerate(self._params):
            check_param_unchanged("SGD.step()", i, p, self._records[i])
        gs = [
            None if g is None else check_grad("SGD.step()", f"grads[{i}]", g, p, f"params[{i}]", copy=True)
            for i, (g, p) in enumerate(zip(grads, self._params))
        ]
        with np.errstate(all="ignore"):
            for i, (p, g) in enumerate(zip(self._params, gs)):
                if g is None:
                    continue
                h = hypers[self._group_of[i]]
                _update(p, g, self._velocity[i], h, first=not self._started[i])
                if h["momentum"] != 0:
                    self._started[i] = True

    def state_dict(self):
        """A picklable copy of the state (the same layout as the compiled SGD's)."""
        buffers = [v if started else None for v, started in zip(self._velocity, self._started)]
        return make_state_dict(self.param_groups, buffers)

    def load_state_dict(self, state_dict):
        """Restore a state saved by :meth:`state_dict` (of either twin)."""
        current = [{"params": gp} for gp in self._group_params]
        new_groups, buffers = parse_state_dict("SGD.load_state_dict()", state_dict, current)
        replace_groups(self.param_groups, new_groups)
        self._checked_groups("SGD.load_state_dict()")
        for i, buf in enumerate(buffers):
            if buf is not None:
                if self._velocity[i] is None:
                    self._velocity[i] = np.zeros(self._params[i].shape, self._params[i].dtype)
                self._velocity[i][...] = buf
            self._started[i] = buf is not None
