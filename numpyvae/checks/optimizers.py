"""The optimizers against their textbook update rules, written out again here.

Each optimizer takes ten steps on random gradients, twice: once on two
separate parameter arrays (one update per parameter) and once on views of
one flat buffer (the fused update a model uses). After steps 1, 2 and 10 the
change of every parameter is compared with what the formulas below give,
computed from scratch in float64 with the optimizer's own state kept here:

* SGD (PyTorch's form, dampening 0): :math:`g_t = \\nabla + \\lambda\\theta`,
  :math:`b_t = \\mu b_{t-1} + g_t` (:math:`b_1 = g_1`),
  :math:`\\theta \\mathrel{-}= \\eta\\, b_t`, or with Nesterov
  :math:`\\theta \\mathrel{-}= \\eta\\,(g_t + \\mu b_t)`;
* Adam (Kingma & Ba, 2015): :math:`m_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t`,
  :math:`v_t = \\beta_2 v_{t-1} + (1-\\beta_2) g_t^2`,
  :math:`\\hat m_t = m_t / (1-\\beta_1^t)`, :math:`\\hat v_t = v_t / (1-\\beta_2^t)`,
  :math:`\\theta \\mathrel{-}= \\eta\\,\\hat m_t / (\\sqrt{\\hat v_t} + \\epsilon)`,
  with L2 weight decay :math:`g_t = \\nabla + \\lambda\\theta`;
* AdamW (Loshchilov & Hutter, 2019): the decay decoupled from the moments,
  :math:`\\theta \\mathrel{-}= \\eta\\lambda\\theta` before Adam's step on :math:`\\nabla`.

The change is compared rather than the parameter, so the error is measured
against the size of a step: an off-by-one bias correction changes the
tenth step by 5 %, which would hide in the rounding of the parameter itself.
"""

from __future__ import annotations

import numpy as np

from ..backend import get_backend
from .compare import Comparison, compare

#: The steps whose change is compared.
STEPS = (1, 2, 10)
#: The same arithmetic in another order differs by rounding only.
TOLERANCE = 1e-10

#: (title, optimizer name, options) of every configuration checked.
CONFIGS = (
    ("SGD", "sgd", {"lr": 0.1}),
    ("SGD, weight decay 0.1", "sgd", {"lr": 0.1, "weight_decay": 0.1}),
    ("SGD, momentum 0.9", "sgd", {"lr": 0.1, "momentum": 0.9}),
    ("SGD, Nesterov momentum 0.9, weight decay 0.05", "sgd",
     {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.05}),
    ("Adam", "adam", {"lr": 0.01}),
    ("Adam, L2 weight decay 0.1", "adam", {"lr": 0.01, "weight_decay": 0.1}),
    ("AdamW, weight decay 0.1", "adamw", {"lr": 0.01, "weight_decay": 0.1}),
)


class Textbook:
    """The update rules of the module docstring, one parameter at a time, in float64."""

    def __init__(self, kind, lr, momentum=0.0, nesterov=False, weight_decay=None,
                 betas=(0.9, 0.999), eps=1e-8):
        if weight_decay is None:
            weight_decay = 0.01 if kind == "adamw" else 0.0
        self.kind, self.lr, self.mu, self.nesterov = kind, lr, momentum, nesterov
        self.wd, (self.b1, self.b2), self.eps = weight_decay, betas, eps
        self.state = {}
        self.t = 0

    def step(self, params, grads):
        """Update ``params`` (a dict of float64 arrays) in place."""
        self.t += 1
        for name, theta in params.items():
            grad = grads[name]
            if self.kind == "sgd":
                g = grad + self.wd * theta
                if self.mu:
                    b = self.state.get(name)
                    b = g.copy() if b is None else self.mu * b + g
                    self.state[name] = b
                    g = g + self.mu * b if self.nesterov else b
                theta -= self.lr * g
                continue
            if self.kind == "adamw":
                theta -= self.lr * self.wd * theta
                g = grad
            else:
                g = grad + self.wd * theta
            m, v = self.state.get(name, (np.zeros_like(theta), np.zeros_like(theta)))
            m = self.b1 * m + (1 - self.b1) * g
            v = self.b2 * v + (1 - self.b2) * g * g
            self.state[name] = (m, v)
            m_hat = m / (1 - self.b1 ** self.t)
            v_hat = v / (1 - self.b2 ** self.t)
            theta -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


def _params(rng, flat):
    """Two parameters (and their gradient arrays): separate arrays, or views of one buffer."""
    shapes = {"encoder.0.W": (3, 4), "encoder.0.b": (4,)}
    if not flat:
        params = {k: rng.standard_normal(s) for k, s in shapes.items()}
        return params, {k: np.zeros(s) for k, s in shapes.items()}
    buf, gbuf = rng.standard_normal(16), np.zeros(16)
    return ({"encoder.0.W": buf[:12].reshape(3, 4), "encoder.0.b": buf[12:]},
            {"encoder.0.W": gbuf[:12].reshape(3, 4), "encoder.0.b": gbuf[12:]})


def check_optimizer(title, name, options, backend=None, seed=0, flat=False) -> Comparison:
    """Ten steps of one optimizer against :class:`Textbook`; rows at :data:`STEPS`."""
    from ..optim import OPTIMIZERS

    rng = np.random.default_rng(seed)
    params, grads = _params(rng, flat)
    optimizer = OPTIMIZERS[name](params, backend=get_backend(backend), **options)
    ours = {k: p.astype(np.float64, copy=True) for k, p in params.items()}
    textbook = Textbook(name, **options)
    rows = []
    for step in range(1, max(STEPS) + 1):
        for g in grads.values():
            g[...] = rng.standard_normal(g.shape)
        before = {k: p.copy() for k, p in params.items()}
        optimizer.step(grads)
        expected_before = {k: p.copy() for k, p in ours.items()}
        textbook.step(ours, {k: np.array(g, dtype=np.float64) for k, g in grads.items()})
        if step in STEPS:
            for k in params:
                rows.append(compare(f"{k}, step {step}", params[k] - before[k],
                                    ours[k] - expected_before[k], TOLERANCE))
        for k in params:  # the next step starts from the library's parameters
            ours[k][...] = params[k]
    layout = "one flat buffer" if flat else "separate arrays"
    return Comparison(f"{title} ({layout}): the change of each parameter", rows,
                      labels=("optimizer", "textbook"))


def optimizer_checks(backend=None, seed: int = 0) -> list:
    """Every configuration of :data:`CONFIGS`, on separate arrays and on one flat buffer."""
    return [check_optimizer(title, name, options, backend, seed, flat)
            for title, name, options in CONFIGS for flat in (False, True)]


__all__ = ["optimizer_checks", "check_optimizer", "Textbook", "CONFIGS", "STEPS", "TOLERANCE"]
