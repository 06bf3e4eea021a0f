"""Weight initialisers for a ``Linear`` layer, each drawing from a ``numpy.random.Generator``.

Every initialiser has the signature ``init(rng, fan_in, fan_out, dtype) -> (W, b)``
with ``W`` of shape ``(fan_in, fan_out)`` and ``b`` of shape ``(fan_out,)``.
"""

from __future__ import annotations

import numpy as np


def pytorch_default(rng, fan_in, fan_out, dtype):
    """PyTorch's ``nn.Linear`` default: ``W, b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))``."""
    bound = 1.0 / np.sqrt(fan_in)
    W = rng.uniform(-bound, bound, size=(fan_in, fan_out)).astype(dtype)
    b = rng.uniform(-bound, bound, size=fan_out).astype(dtype)
    return W, b


def glorot_uniform(rng, fan_in, fan_out, dtype):
    """Glorot/Xavier uniform: ``W ~ U(-a, a)``, ``a = sqrt(6 / (fan_in + fan_out))``, ``b = 0``.

    Keeps the variance of activations and of gradients roughly equal across
    layers for symmetric activations such as ``tanh`` (Glorot & Bengio, 2010).
    """
    bound = np.sqrt(6.0 / (fan_in + fan_out))
    W = rng.uniform(-bound, bound, size=(fan_in, fan_out)).astype(dtype)
    return W, np.zeros(fan_out, dtype=dtype)


def he_normal(rng, fan_in, fan_out, dtype):
    """He/Kaiming normal: ``W ~ N(0, 2 / fan_in)``, ``b = 0`` (He et al., 2015, for ReLU)."""
    W = (rng.standard_normal(size=(fan_in, fan_out)) * np.sqrt(2.0 / fan_in)).astype(dtype)
    return W, np.zeros(fan_out, dtype=dtype)


INITIALIZERS = {
    "default": pytorch_default,
    "pytorch": pytorch_default,
    "glorot": glorot_uniform,
    "xavier": glorot_uniform,
    "he": he_normal,
    "kaiming": he_normal,
}


def get_initializer(name):
    """Look an initialiser up by name, or pass a callable through."""
    if callable(name):
        return name
    try:
        return INITIALIZERS[name]
    except KeyError:
        raise ValueError(
            f"unknown initializer {name!r}; expected one of {sorted(INITIALIZERS)}"
        ) from None
