"""Choosing a backend: the one place where that happens.

A backend is a module that defines every name in :data:`OPS`. Layers, the
model and the optimizers call ``backend.<op>(...)`` and never ask which
backend runs.

* ``"numpy"`` — :mod:`numpyvae.backend.reference`, the readable specification.
* ``"numba"`` — :mod:`numpyvae.backend.numba_ops`, the same names as fused,
  jitted kernels. Numba is imported only when this backend is chosen.

The choice, in order of precedence: an explicit argument (``backend="numba"``
or a backend module), the environment variable ``NUMPYVAE_BACKEND``, then the
default: ``numba`` when it imports, else ``numpy``.
"""

from __future__ import annotations

import importlib
import os
import warnings
from types import ModuleType

from . import reference

#: The operations every backend provides.
OPS = (
    "activation_forward",
    "activation_backward",
    "linear_forward",
    "linear_backward",
    "matmul",
    "reparameterize",
    "reparameterize_backward",
    "gaussian_kl",
    "gaussian_kl_backward",
    "latent_forward",
    "latent_backward",
    "bernoulli_nll",
    "bernoulli_nll_backward",
    "gaussian_nll",
    "gaussian_nll_backward",
    "bernoulli_nll_and_grad",
    "gaussian_nll_and_grad",
    "sgd_update",
    "adam_update",
    "sum_of_squares",
    "kl_per_dimension",
    "conv2d_forward",
    "conv2d_backward",
    "conv_transpose2d_forward",
    "conv_transpose2d_backward",
)

BACKENDS = ("numpy", "numba")
ENV_VAR = "NUMPYVAE_BACKEND"

_MODULES = {"numpy": "numpyvae.backend.reference", "numba": "numpyvae.backend.numba_ops"}


def numba_available() -> bool:
    """Whether the Numba backend can be imported (without importing it if unknown)."""
    import importlib.util

    return importlib.util.find_spec("numba") is not None


def default_backend_name() -> str:
    """``$NUMPYVAE_BACKEND`` if set, else ``numba`` when available, else ``numpy``."""
    name = os.environ.get(ENV_VAR, "").strip().lower()
    if name:
        return _check_name(name, source=f"${ENV_VAR}")
    return "numba" if numba_available() else "numpy"


def _check_name(name, source="backend"):
    if name not in BACKENDS:
        raise ValueError(f"unknown {source} {name!r}; expected one of {', '.join(BACKENDS)}")
    return name


def get_backend(backend: str | ModuleType | None = None) -> ModuleType:
    """Return the backend module for ``backend`` (a name, a module, or None).

    ``None`` means :func:`default_backend_name`; when that default is ``numba``
    but the Numba backend fails to import, the NumPy reference is used with a
    warning. An explicit ``"numba"`` that fails to import raises
    ``ImportError`` saying why; an unknown name raises ``ValueError``.
    """
    if isinstance(backend, ModuleType):
        return backend
    explicit = backend is not None or bool(os.environ.get(ENV_VAR, "").strip())
    name = default_backend_name() if backend is None else _check_name(str(backend).lower())
    if name == "numpy":
        return reference
    try:
        return importlib.import_module(_MODULES[name])
    except ImportError as exc:  # pragma: no cover - depends on the environment
        if not explicit:
            warnings.warn(f"the numba backend failed to import ({exc}); using the numpy "
                          "reference backend", RuntimeWarning, stacklevel=2)
            return reference
        hint = f"pip install {name}" if not numba_available() else "see the error above"
        raise ImportError(
            f"the {name!r} backend could not be imported ({exc}); {hint}, or choose "
            f"backend='numpy'"
        ) from exc


__all__ = ["BACKENDS", "OPS", "ENV_VAR", "get_backend", "default_backend_name", "numba_available"]
