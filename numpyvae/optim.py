"""Optimizers (SGD, Adam, AdamW) and global-norm gradient clipping.

An optimizer is given the parameters as a mapping from qualified name to
array (``model.params``) and updates them in place with ``step(grads)``. Its
state (velocities, moments, step count) lives here, keyed by the same names,
never inside the layers, and round-trips through ``state_dict`` /
``load_state_dict`` so that training can resume exactly.

When every parameter (and every gradient) is a view into one flat buffer, as
in :class:`numpyvae.VAE`, the update runs as one fused call over the whole
buffer; otherwise it runs once per parameter. The update rules themselves are
the backend's (:func:`numpyvae.ops.adam_update`, ...).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .backend import get_backend


def flat_span(arrays) -> np.ndarray | None:
    """The 1-D array that ``arrays`` tile exactly, in order, or None.

    True when each array is a C-contiguous view of the same 1-D base and they
    follow each other without gaps, covering the whole base.
    """
    arrays = list(arrays)
    if not arrays:
        return None
    base = arrays[0].base
    if not isinstance(base, np.ndarray) or base.ndim != 1 or not base.flags.c_contiguous:
        return None
    expected = base.__array_interface__["data"][0]
    for a in arrays:
        if a.base is not base or not a.flags.c_contiguous or a.dtype != base.dtype:
            return None
        if a.__array_interface__["data"][0] != expected:
            return None
        expected += a.nbytes
    if expected != base.__array_interface__["data"][0] + base.nbytes:
        return None
    return base


def clip_grad_norm(grads: Mapping[str, np.ndarray], max_norm: float, backend=None) -> float:
    """Scale all gradients in place so their global L2 norm is at most ``max_norm``.

    Returns the norm before clipping (as PyTorch's ``clip_grad_norm_`` does).
    """
    backend = get_backend(backend)
    arrays = list(grads.values())
    flat = flat_span(arrays)
    parts = [flat] if flat is not None else arrays
    total = float(np.sqrt(sum(backend.sum_of_squares(g) for g in parts)))
    if max_norm <= 0:
        raise ValueError(f"clip_grad_norm: max_norm must be positive, got {max_norm}")
    if total > max_norm:
        scale = max_norm / (total + 1e-6)
        for g in parts:
            g *= g.dtype.type(scale)
    return total


class Optimizer:
    """Base class: parameters by name, per-name state, save/restore.

    Subclasses list their per-parameter state buffers in ``slots`` and
    implement :meth:`_update` for one (flat or shaped) parameter.
    """

    slots: tuple[str, ...] = ()

    def __init__(self, params: Mapping[str, np.ndarray], lr: float, backend=None):
        if not isinstance(params, Mapping) or not params:
            raise ValueError("optimizer: params must be a non-empty mapping of name -> array")
        if not lr > 0:
            raise ValueError(f"optimizer: lr must be positive, got {lr}")
        self.params = dict(params)
        self.lr = float(lr)
        self.backend = get_backend(backend)
        self.step_count = 0
        self._flat = flat_span(self.params.values())
        # State buffers: flat (with per-name views) when the parameters are flat.
        self.state: dict[str, dict[str, np.ndarray]] = {s: {} for s in self.slots}
        self._flat_state: dict[str, np.ndarray] = {}
        for s in self.slots:
            if self._flat is not None:
                flat = self._flat_state[s] = np.zeros_like(self._flat)
                offset = 0
                for name, p in self.params.items():
                    self.state[s][name] = flat[offset:offset + p.size].reshape(p.shape)
                    offset += p.size
            else:
                self.state[s] = {name: np.zeros_like(p) for name, p in self.params.items()}

    def set_backend(self, backend) -> None:
        """Take later steps with another backend's update (the state carries over as it is)."""
        self.backend = get_backend(backend)

    def step(self, grads: Mapping[str, np.ndarray]) -> None:
        """Update every parameter in place from ``grads`` (same names as ``params``)."""
        if grads.keys() != self.params.keys():
            missing = sorted(set(self.params) - set(grads))
            extra = sorted(set(grads) - set(self.params))
            raise ValueError(f"optimizer.step: gradient names differ (missing {missing}, "
                             f"unexpected {extra})")
        self.step_count += 1
        # The gradients must tile their buffer in the parameters' order, or the
        # fused update would pair a parameter with another one's gradient.
        flat_grad = None
        if self._flat is not None:
            flat_grad = flat_span(grads[name] for name in self.params)
        if flat_grad is not None and flat_grad.shape == self._flat.shape and all(
                grads[name].shape == p.shape for name, p in self.params.items()):
            self._update(self._flat, flat_grad, self._flat_state)
            return
        for name, p in self.params.items():
            g = grads[name]
            if g.shape != p.shape:
                raise ValueError(f"optimizer.step: gradient {name!r} has shape {g.shape}, "
                                 f"parameter has {p.shape}")
            self._update(p, g, {s: self.state[s][name] for s in self.slots})

    def _update(self, param, grad, state):  # pragma: no cover - abstract
        raise NotImplementedError

    def hyperparameters(self) -> dict:
        return {"lr": self.lr}

    def flat_state(self) -> dict | None:
        """The flat buffers of the fused update, or None when the parameters are not flat.

        When every parameter is a view of one flat buffer (a model's
        ``flat_params``), returns ``{"type": the optimizer's class name,
        "params": that buffer, <slot>: the slot's state buffer, ...}`` (for
        Adam, ``"m"`` and ``"v"``, each the parameters' shape). These are
        the optimizer's own arrays, not copies: a backend that takes the step
        itself updates them in place and adds its steps to ``step_count``.
        """
        if self._flat is None:
            return None
        return {"type": type(self).__name__, "params": self._flat, **self._flat_state}

    def state_dict(self) -> dict[str, np.ndarray]:
        """A flat dict of arrays: ``"<slot>.<param name>"`` plus ``"step"``; copies."""
        out = {"step": np.array(self.step_count)}
        for s in self.slots:
            for name, a in self.state[s].items():
                out[f"{s}.{name}"] = a.copy()
        return out

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore what :meth:`state_dict` returned, checking names and shapes."""
        if "step" not in state:
            raise ValueError("optimizer state: missing 'step'")
        for s in self.slots:
            for name, a in self.state[s].items():
                key = f"{s}.{name}"
                if key not in state:
                    raise ValueError(f"optimizer state: missing {key!r}")
                if np.shape(state[key]) != a.shape:
                    raise ValueError(f"optimizer state: {key!r} has shape "
                                     f"{np.shape(state[key])}, expected {a.shape}")
        for s in self.slots:
            for name, a in self.state[s].items():
                a[...] = state[f"{s}.{name}"]
        self.step_count = int(state["step"])


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and weight decay.

    Same update as ``torch.optim.SGD`` (dampening 0); see
    :func:`numpyvae.ops.sgd_update`.
    """

    slots = ("velocity",)

    def __init__(self, params, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0,
                 backend=None):
        if momentum < 0 or weight_decay < 0:
            raise ValueError("SGD: momentum and weight_decay must be >= 0")
        if nesterov and momentum <= 0:
            raise ValueError("SGD: Nesterov momentum needs momentum > 0")
        super().__init__(params, lr, backend)
        self.momentum, self.nesterov, self.weight_decay = momentum, nesterov, weight_decay

    def _update(self, param, grad, state):
        self.backend.sgd_update(param, grad, state["velocity"], self.lr, self.momentum,
                                self.nesterov, self.weight_decay)

    def hyperparameters(self):
        return {"lr": self.lr, "momentum": self.momentum, "nesterov": self.nesterov,
                "weight_decay": self.weight_decay}


class Adam(Optimizer):
    """Adam with bias correction; PyTorch's defaults (lr 1e-3, betas (0.9, 0.999), eps 1e-8).

    ``weight_decay`` adds ``weight_decay * param`` to the gradient (L2), as
    ``torch.optim.Adam`` does. See :func:`numpyvae.ops.adam_update`.
    """

    slots = ("m", "v")
    decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 backend=None):
        b1, b2 = betas
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError(f"{type(self).__name__}: betas must be in [0, 1), got {betas}")
        if eps <= 0 or weight_decay < 0:
            raise ValueError(f"{type(self).__name__}: need eps > 0 and weight_decay >= 0")
        super().__init__(params, lr, backend)
        self.betas, self.eps, self.weight_decay = (float(b1), float(b2)), float(eps), weight_decay

    def _update(self, param, grad, state):
        b1, b2 = self.betas
        self.backend.adam_update(param, grad, state["m"], state["v"], self.lr, b1, b2, self.eps,
                                 self.weight_decay, self.step_count, self.decoupled)

    def hyperparameters(self):
        return {"lr": self.lr, "betas": list(self.betas), "eps": self.eps,
                "weight_decay": self.weight_decay}


class AdamW(Adam):
    """Adam with decoupled weight decay (default 0.01, as ``torch.optim.AdamW``)."""

    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01,
                 backend=None):
        super().__init__(params, lr, betas, eps, weight_decay, backend)


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW}
