"""In-place SGD with momentum, dampening, weight decay, Nesterov momentum and maximize.

``sgd_step`` updates one array; ``SGD`` is an optimizer over many arrays (torch-style
parameter groups) whose ``step`` updates every parameter in one native call.  The update is
torch.optim.SGD's (SPEC section 4), computed in one pass over memory with no temporaries by
the compiled kernel in ``fastsoftmax._sgd``; argument checks live in
``fastsoftmax._optim_validation`` and are shared with the reference twin
(``fastsoftmax.reference.optim``).
"""

from __future__ import annotations

import numpy as np

from . import _sgd
from ._optim_validation import (
    HYPERPARAMETERS,
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
from ._threads import get_num_threads

__all__ = ["sgd_step", "SGD"]


def sgd_step(param, grad, velocity=None, *, lr, momentum=0.0, dampening=0.0, weight_decay=0.0,
             nesterov=False, maximize=False):
    """One SGD update of `param` (and `velocity`), in place.

    Computes, in one pass over memory with no temporaries::

        g = (-grad if maximize else grad) + weight_decay * param
        if momentum != 0:
            velocity = momentum * velocity + (1 - dampening) * g
            g = g + momentum * velocity if nesterov else velocity
        param -= lr * g

    This is torch.optim.SGD's update for an already-started momentum buffer (``SGD`` seeds the
    buffer with the first gradient, as torch does; here the caller owns `velocity`).

    Parameters
    ----------
    param : ndarray
        Updated in place: a writeable, C-contiguous float32 or float64 array.
    grad : array_like
        The gradient: `param`'s shape (else ValueError) and dtype (else TypeError).  Never
        written; copied first if it is not C-contiguous or overlaps `param` or `velocity`.
    velocity : ndarray, optional
        The momentum buffer, updated in place: `param`'s shape and dtype, writeable,
        C-contiguous, sharing no memory with `param`.  Required when `momentum` is not 0;
        ignored entirely (not read, written or checked) when it is 0.
    lr : float
        Learning rate, finite and >= 0.
    momentum : float, optional
        Momentum factor, finite and >= 0 (default 0: plain SGD).
    dampening : float, optional
        Dampening of the momentum, finite (ignored when `momentum` is 0).
    weight_decay : float, optional
        L2 penalty, finite and >= 0.
    nesterov : bool, optional
        Nesterov momentum; requires momentum > 0 and dampening == 0.
    maximize : bool, optional
        Ascend instead of descend (the gradient's sign is flipped).

    Returns
    -------
    None

    Raises
    ------
    TypeError
        `param` or `velocity` is not an ndarray, a dtype is wrong, or a hyperparameter is not
        a real number (nesterov/maximize: not a bool).
    ValueError
        A shape mismatch; a read-only or non-contiguous `param`/`velocity`; `velocity`
        missing or sharing memory with `param`; a hyperparameter out of range (NaN and
        infinities included).  Nothing is written when a check fails.

    Notes
    -----
    Each line of the update is rounded as torch's CPU kernels round it (fused
    multiply-adds), so float32 results agree with torch to the last bit on FMA hardware.
    The work is split across threads for large arrays (``fastsoftmax.set_num_threads``).

    Examples
    --------
    >>> import numpy as np
    >>> from fastsoftmax.optim import sgd_step
    >>> w = np.array([1.0, 2.0])
    >>> v = np.array([0.5, 0.0])
    >>> sgd_step(w, np.array([1.0, -1.0]), v, lr=0.1, momentum=0.9)
    >>> v
    array([ 1.45, -1.  ])
    >>> w
    array([0.855, 2.1  ])
    """
    h = check_hyperparameters("sgd_step()", lr, momentum, dampening, weight_decay, nesterov, maximize,
                              dampening_without_momentum=False)
    check_param("sgd_step()", "param", param)
    g = check_grad("sgd_step()", "grad", grad, param, "param")
    if h["momentum"] != 0.0:
        velocity = check_velocity("sgd_step()", "velocity", velocity, param, "param")
        if np.may_share_memory(g, velocity) or np.may_share_memory(g, param):
            g = check_grad("sgd_step()", "grad", g, param, "param", copy=True)
    else:
        velocity = None
        if np.may_share_memory(g, param):
            g = check_grad("sgd_step()", "grad", g, param, "param", copy=True)
    _sgd.sgd_step(param, g, velocity, h["lr"], h["momentum"], h["dampening"], h["weight_decay"],
                  h["nesterov"], h["maximize"], get_num_threads())


def _same_values(key, synced):
    """True when every hyperparameter is the object pushed last time, or an equal Python
    float/int/bool (so arrays, NaN and the like are always re-checked)."""
    if synced is None:
        return False
    for a, b in zip(key, synced):
        if a is not b and not (type(a) is type(b) and type(a) in (float, int, bool) and a == b):
            return False
    return True


class _Checker:
    """Raises the documented errors for the native step (called only off its fast path)."""

    def __init__(self, params, records):
        self._params = params
        self._records = records

    def grads(self, grads, n):
        check_grads_list("SGD.step()", grads, n)
        raise ValueError(f"SGD.step() argument 'grads' changed length while being read (expected {n})")

    def param(self, i, p):
        check_param_unchanged("SGD.step()", i, p, self._records[i])
        raise AssertionError("SGD.step(): parameter check disagreed")  # not reached

    def grad(self, i, g, p):
        return check_grad("SGD.step()", f"grads[{i}]", g, p, f"params[{i}]", copy=True)


class SGD:
    """Stochastic gradient descent over many arrays: torch.optim.SGD for NumPy.

    Parameters
    ----------
    params : iterable of ndarray or of dict
        The parameters (writeable, C-contiguous float32/float64 arrays, none sharing memory
        with another), or torch-style parameter groups: dicts with a ``"params"`` list and
        any of ``lr``, ``momentum``, ``dampening``, ``weight_decay``, ``nesterov``,
        ``maximize`` overriding the defaults (other keys are kept).  The arrays are updated
        in place and are fixed for the optimizer's lifetime.
    lr : float
        Learning rate, finite and >= 0.
    momentum, dampening, weight_decay : float, optional
        As in :func:`sgd_step` (momentum and weight_decay finite and >= 0, dampening finite).
    nesterov : bool, optional
        Nesterov momentum; requires momentum > 0 and dampening == 0.
    maximize : bool, optional
        Ascend instead of descend.

    Attributes
    ----------
    param_groups : list of dict
        One dict per group: ``"params"`` (a tuple of the arrays) and the hyperparameters.
        Hyperparameters may be changed between steps (a learning-rate schedule); the next
        ``step`` checks them.
    defaults : dict
        The hyperparameters given to the constructor.

    Notes
    -----
    ``step(grads)`` reproduces torch.optim.SGD's trajectory: on a parameter's first step with
    momentum the buffer is set to the gradient (so dampening does not apply to it), after
    that every step is :func:`sgd_step`.  Velocities are allocated once, when a group first
    has momentum.  A step makes one native call over every parameter (the GIL released,
    large steps split across threads); its checks run before anything is written.

    Examples
    --------
    >>> import numpy as np
    >>> from fastsoftmax.optim import SGD
    >>> w = np.array([1.0, 2.0])
    >>> b = np.array([0.5])
    >>> opt = SGD([{"params": [w]}, {"params": [b], "weight_decay": 0.0}],
    ...           lr=0.1, momentum=0.9, weight_decay=0.01)
    >>> opt.step([np.array([1.0, -1.0]), np.array([2.0])])
    >>> w, b
    (array([0.899, 2.098]), array([0.3]))
    >>> opt.step([np.array([1.0, -1.0]), np.array([2.0])])
    >>> w
    array([0.707201, 2.284102])
    >>> sorted(opt.state_dict()["state"])
    [0, 1]
    """

    def __init__(self, params, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, *,
                 maximize=False):
        self.defaults = check_hyperparameters("SGD()", lr, momentum, dampening, weight_decay, nesterov, maximize)
        self.param_groups = build_param_groups("SGD()", params, self.defaults)
        self._group_params = [g["params"] for g in self.param_groups]
        self._params = tuple(p for g in self.param_groups for p in g["params"])
        self._group_of = tuple(k for k, g in enumerate(self.param_groups) for _ in g["params"])
        self._records = [ParamRecord(p) for p in self._params]
        self._core = _sgd.MultiSGD(self._params, self._group_of, len(self.param_groups),
                                   _Checker(self._params, self._records))
        self._synced = [None] * len(self.param_groups)
        self._sync_groups("SGD()")

    # -- hyperparameters ---------------------------------------------------------------

    def _sync_groups(self, func):
        """Push changed group hyperparameters to the native table (all checked first)."""
        changed = []
        for k, key in enumerate(group_hyperparameter_values(func, self.param_groups, self._group_params)):
            if not _same_values(key, self._synced[k]):
                hyper = check_hyperparameters(func, *key, prefix=f"param_groups[{k}]")
                changed.append((k, key, hyper))
        if not changed:
            return
        with_momentum = {k for k, _, hyper in changed if hyper["momentum"] != 0.0}
        missing = [i for i, k in enumerate(self._group_of) if k in with_momentum and self._core.velocity(i) is None]
        if missing:
            self._core.set_velocities(missing, [self._zeros_like_param(i) for i in missing])
        for k, key, hyper in changed:
            self._core.set_group(k, *(hyper[name] for name in HYPERPARAMETERS))
            self._synced[k] = key

    def _zeros_like_param(self, i):
        return np.zeros(self._params[i].shape, self._params[i].dtype)

    # -- the step ----------------------------------------------------------------------

    def step(self, grads):
        """Update every parameter in place from its gradient, in one native call.

        Parameters
        ----------
        grads : list or tuple
            One gradient per parameter, in order (groups concatenated): each `params[i]`'s
            shape (else ValueError) and dtype (else TypeError); never written.  ``None``
            skips that parameter this step (torch skips a parameter whose ``.grad`` is None).

        Returns
        -------
        None
        """
        self._sync_groups("SGD.step()")
        self._core.step(grads, get_num_threads())

    # -- state ---------------------------------------------------------------------------

    def state_dict(self):
        """A picklable copy of the optimizer's state, in torch.optim's layout.

        ``{"state": {i: {"momentum_buffer": ndarray}}, "param_groups": [{...hyperparameters...,
        "params": [i, ...]}]}``: parameters are numbered in order across groups; only started
        momentum buffers appear (copies, so later steps do not change a saved state).
        """
        buffers = [self._core.velocity(i) if self._core.started(i) else None for i in range(len(self._params))]
        return make_state_dict(self.param_groups, buffers)

    def load_state_dict(self, state_dict):
        """Restore hyperparameters and momentum buffers saved by :meth:`state_dict` (of this
        class or of the reference twin).  Everything is checked before anything is loaded;
        buffers are copied into the optimizer's own velocities (converted to each parameter's
        dtype).  A parameter without a saved buffer starts its momentum afresh."""
        current = [{"params": gp} for gp in self._group_params]
        new_groups, buffers = parse_state_dict("SGD.load_state_dict()", state_dict, current)
        replace_groups(self.param_groups, new_groups)
        self._synced = [None] * len(self.param_groups)
        self._sync_groups("SGD.load_state_dict()")
        missing = [i for i, buf in enumerate(buffers) if buf is not None and self._core.velocity(i) is None]
        if missing:
            self._core.set_velocities(missing, [self._zeros_like_param(i) for i in missing])
        for i, buf in enumerate(buffers):
            if buf is not None:
                np.copyto(self._core.velocity(i), buf)
            self._core.set_started(i, buf is not None)

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for k, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {k}")
            for key in sorted(key for key in group if key != "params"):
                lines.append(f"    {key}: {group[key]}")
        lines.append(")")
        return "\n".join(lines)
