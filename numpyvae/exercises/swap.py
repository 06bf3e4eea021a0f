"""Training the real model on a student's function: :func:`use`.

``with numpyvae.exercises.use(linear_backward=my_linear_backward): ...`` puts
the student's function in place of the NumPy reference backend's op
(:mod:`numpyvae.ops`, the module every layer built with ``backend="numpy"``
calls by name), so the VAE trains, and the inspector traces, on the
student's gradient. A student's function has the exercise's simple signature
(``(dout, x, W) -> (dx, dW, db)``); an adapter here turns it into the op's
signature (accumulating ``dW += ...``, applying the activation's derivative
first, and so on). Leaving the block, normally or by an exception, puts every
op back, for every user of the process.

Only the reference backend is touched: a model on the Numba backend
(:mod:`numpyvae.fast`) runs its own kernels and never sees the student's code,
so build the model (and, for ``adam_step``, the optimizer) with
``backend="numpy"``.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from .. import ops


def _linear_backward(student):
    def linear_backward(dy, x, W, y, dW, db, activation="identity", alpha=0.01,
                        need_dx=True):
        da = dy if activation == "identity" else ops.activation_backward(
            dy, y, activation, alpha)
        dx, dW_s, db_s = student(da, x, W)
        dW += dW_s
        db += db_s
        return dx if need_dx else None
    return {"linear_backward": linear_backward}


def _activation_backward(activation):
    def adapt(student):
        original = ops.activation_backward

        def activation_backward(dy, y, name, alpha=0.01):
            if name == activation:
                return student(dy, y)
            return original(dy, y, name, alpha)
        return {"activation_backward": activation_backward}
    return adapt


def _same(name):
    return lambda student: {name: student}


def _bernoulli_nll_backward(student):
    # The training step calls the fused op; route it through the student's backward.
    def bernoulli_nll_and_grad(logits, x, scale):
        dnll = np.full(logits.shape[:1], scale, dtype=logits.dtype)
        return ops.bernoulli_nll(logits, x), student(dnll, logits, x)
    return {"bernoulli_nll_backward": student, "bernoulli_nll_and_grad": bernoulli_nll_and_grad}


def _adam_step(student):
    def adam_update(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step, decoupled):
        if weight_decay:
            raise ValueError("use(adam_step=...): the exercise's Adam has no weight decay; "
                             "build the optimizer with weight_decay=0")
        new_param, new_m, new_v = student(param, grad, m, v, step, lr, beta1, beta2, eps)
        param[...], m[...], v[...] = new_param, new_m, new_v
    return {"adam_update": adam_update}


#: Exercise function name -> how it replaces the reference backend's ops.
ADAPTERS = {
    "linear_backward": _linear_backward,
    "relu_backward": _activation_backward("relu"),
    "tanh_backward": _activation_backward("tanh"),
    "sigmoid_backward": _activation_backward("sigmoid"),
    # The model reaches these through latent_backward / gaussian_nll_and_grad, which
    # look them up in the module by name.
    "reparameterize_backward": _same("reparameterize_backward"),
    "gaussian_kl_backward": _same("gaussian_kl_backward"),
    "gaussian_nll_backward": _same("gaussian_nll_backward"),
    "bernoulli_nll_backward": _bernoulli_nll_backward,
    "adam_step": _adam_step,
}


@contextmanager
def use(**replacements):
    """Run the NumPy reference backend on the student's functions inside the block.

    Parameters
    ----------
    **replacements
        ``exercise_name=function``, e.g. ``linear_backward=my_linear_backward``;
        the names are those of :data:`ADAPTERS`.

    Notes
    -----
    Every replaced op of :mod:`numpyvae.ops` is restored when the block ends,
    also when it ends with an exception. Blocks may be nested.
    """
    unknown = sorted(set(replacements) - set(ADAPTERS))
    if unknown:
        raise ValueError(f"use(): no exercise named {', '.join(unknown)}; the model can run "
                         f"on {', '.join(sorted(ADAPTERS))}")
    for name, student in replacements.items():
        if not callable(student):
            raise TypeError(f"use(): {name} must be a function, got {type(student).__name__}")
    saved = {}
    try:
        # One after the other: an adapter that wraps an op (the activations share
        # activation_backward) wraps what the previous ones put there.
        for name, student in replacements.items():
            for op, fn in ADAPTERS[name](student).items():
                saved.setdefault(op, getattr(ops, op))
                setattr(ops, op, fn)
        yield
    finally:
        for op, fn in saved.items():
            setattr(ops, op, fn)


__all__ = ["ADAPTERS", "use"]
