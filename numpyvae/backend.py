"""Choosing a backend: the one place where that happens.

A backend is a module that defines every name in :data:`OPS`. Layers, the
model and the optimizers call ``backend.<op>(...)`` and never ask which
backend runs.

* ``"numpy"`` — :mod:`numpyvae.ops`, the readable specification.
* ``"numba"`` — :mod:`numpyvae.fast.numba_ops`, the same names as fused,
  jitted kernels. Numba is imported only when this backend is chosen.

The choice, in order of precedence: an explicit argument (``backend="numba"``
or a backend module), the environment variable ``NUMPYVAE_BACKEND``, then the
default: ``numba`` when it imports, else ``numpy``.

Threads: :func:`usable_cpus` is how many CPUs this process may actually use
(its CPU affinity, capped by a cgroup CPU quota, as containers and course
servers set them), not how many the machine has; the Numba backend starts
that many threads unless ``NUMBA_NUM_THREADS`` says otherwise.
"""

from __future__ import annotations

import importlib
import os
import warnings
from types import ModuleType

from . import ops as reference

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

#: Optional: what a backend may offer to run a training step's forward and
#: backward pass as one kernel call (:mod:`numpyvae.fast.step`). The reference has
#: none of it (it is the sum of the ops above, which the tests hold it to); the
#: Numba backend has all of it.
STEP_OPS = ("mlp_step", "max_threads", "threads", "activation_code")

BACKENDS = ("numpy", "numba")
ENV_VAR = "NUMPYVAE_BACKEND"

_MODULES = {"numpy": "numpyvae.ops", "numba": "numpyvae.fast.numba_ops"}


def cgroup_cpu_limit(proc_cgroup="/proc/self/cgroup", root="/sys/fs/cgroup") -> float | None:
    """The CPU quota of this process's cgroup, in CPUs (quota / period), or None if unlimited.

    cgroup v2 writes ``"<quota> <period>"`` (or ``"max <period>"``) in
    ``cpu.max``; v1 has ``cpu.cfs_quota_us`` (-1: none) and ``cpu.cfs_period_us``.
    """
    from pathlib import Path

    root = Path(root)
    try:
        lines = Path(proc_cgroup).read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        path = path.lstrip("/")
        if controllers == "":  # v2: one unified hierarchy
            for folder in (root / path, root):
                try:
                    quota, period = (folder / "cpu.max").read_text().split()[:2]
                except (OSError, ValueError):
                    continue
                return None if quota == "max" else int(quota) / int(period)
        elif "cpu" in controllers.split(","):  # v1
            for folder in (root / controllers / path, root / "cpu" / path, root / "cpu"):
                try:
                    quota = int((folder / "cpu.cfs_quota_us").read_text())
                    period = int((folder / "cpu.cfs_period_us").read_text())
                except (OSError, ValueError):
                    continue
                return None if quota <= 0 or period <= 0 else quota / period
    return None


def usable_cpus() -> int:
    """How many CPUs this process may use: its affinity mask, capped by its cgroup CPU quota.

    ``os.cpu_count()`` counts the machine's CPUs; a process pinned to one core
    (``taskset``), or in a container limited to 1.5 CPUs, can use only one or
    two of them, and running more threads than that makes every thread wait
    for the others. A fractional quota is rounded up (at least 1).
    """
    import math

    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_limit()
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


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


__all__ = ["BACKENDS", "OPS", "STEP_OPS", "ENV_VAR", "get_backend", "default_backend_name",
           "numba_available", "usable_cpus", "cgroup_cpu_limit"]
