"""``numpyvae gradcheck --backend numba``: the one-call training step against the per-op path.

:func:`numpyvae.fast.step.train_step` runs a model's forward and backward
pass (and Adam's step) as one kernel call; the per-op path on the NumPy
reference is what it must equal. Each configuration below takes three
steps both ways, in float64 from the same weights with the same noise,
and the change of every parameter is compared: a bug in the one-call step
(a layer's gradient, the data-parallel sum of the blocks' gradients,
Adam's step inside the call) shows as the parameter it reaches.

What lives elsewhere: the op-by-op comparison (:mod:`numpyvae.checks.fastpath`).
"""

from __future__ import annotations

import numpy as np

from ..backend import get_backend
from ..checks.compare import Comparison, compare
from ..model import VAE, Autoencoder
from ..optim import SGD, Adam, AdamW
from .step import train_step

#: Relative agreement of the parameters' change after :data:`STEPS` steps. Looser than the
#: gradients' 1e-10: Adam divides by the root of the squared gradient's average, which
#: scales a difference in the last bits of a small gradient up to the size of a step.
TOLERANCE = 1e-8
STEPS = 3


def _configs(fast):
    from .numba_step import DATA_PARALLEL_ROWS

    rows = DATA_PARALLEL_ROWS * max(2, fast.max_threads())  # every thread takes a block
    return (
        ("VAE(784, hidden 400, latent 20), Bernoulli, Adam, batch 128",
         lambda be: VAE(784, hidden_dims=(400,), latent_dim=20, dtype="float64", seed=0,
                        backend=be), Adam, {"lr": 1e-3}, 128),
        ("VAE(50, hidden 30 20, latent 4, tanh), learned-variance Gaussian, AdamW, "
         f"batch {rows} (data-parallel)",
         lambda be: VAE(50, hidden_dims=(30, 20), latent_dim=4, activation="tanh",
                        likelihood="gaussian", gaussian_var="learned", dtype="float64", seed=0,
                        backend=be), AdamW, {"lr": 1e-3, "weight_decay": 0.1}, rows),
        ("Autoencoder(60, hidden 30, latent 5, leaky_relu), Gaussian 0.1, SGD momentum, "
         "batch 96",
         lambda be: Autoencoder(60, hidden_dims=(30,), latent_dim=5, activation="leaky_relu",
                                likelihood="gaussian", gaussian_var=0.1, dtype="float64",
                                seed=0, backend=be), SGD, {"lr": 0.01, "momentum": 0.9}, 96),
    )


def step_checks(seed: int = 0, configs=None) -> list:
    """One report per configuration: the one-call step (numba) against the per-op path (numpy).

    ``configs``: ``(title, make(backend) -> model, optimizer class, options, batch)``
    tuples; by default the three of :func:`_configs`.
    """
    fast, ref = get_backend("numba"), get_backend("numpy")
    reports = []
    for title, make, optimizer_cls, options, batch in configs or _configs(fast):
        rng = np.random.default_rng(seed)
        models = [make(fast), make(ref)]
        n_in = models[0].input_shape[0]
        xs = [(rng.random((batch, n_in)) < 0.4).astype(np.float64) for _ in range(STEPS)]
        latent = models[0].latent_dim
        noise = [rng.standard_normal((batch, latent)) for _ in range(STEPS)]
        changes = []
        for model, fused in zip(models, (True, False), strict=True):
            start = {k: p.copy() for k, p in model.params.items()}
            optimizer = optimizer_cls(model.params, backend=model.backend, **options)
            for x, eps in zip(xs, noise, strict=True):
                train_step(model, optimizer, x, eps=eps if isinstance(model, VAE) else None,
                           fused=fused)
            changes.append({k: p - start[k] for k, p in model.params.items()})
        rows = [compare(k, d, changes[1][k], TOLERANCE) for k, d in changes[0].items()]
        reports.append(Comparison(f"{title}: the one-call step (numba) against the per-op path "
                                  f"(numpy), each parameter's change after {STEPS} steps", rows,
                                  labels=("one call", "per op")))
    return reports


__all__ = ["step_checks", "TOLERANCE", "STEPS"]
