"""Gradients accumulate, and ``zero_grad`` clears them.

A layer's ``backward`` *adds* its parameters' gradients into ``grads``
(``+=``): a network that uses a layer twice, or a loop that sums the
gradients of several batches, relies on it. A gradient check cannot see an
``=`` written for ``+=``, since it clears the gradients before each call.
So each layer type (and the learned-variance likelihood, whose log-variance
gradient accumulates the same way) runs forward and backward twice without
``zero_grad``: every gradient must then be twice the first call's. Then
``zero_grad`` must leave every array the optimizer reads (``model.grads``)
at zero.
"""

from __future__ import annotations

import numpy as np

from ..backend import get_backend
from .compare import Comparison, compare

#: Two sums of the same numbers differ from twice one only by rounding.
TOLERANCE = 1e-12


def _twice(title, run, grads):
    """Rows: ``grads`` after two calls of ``run()`` against twice their value after one."""
    for g in grads.values():
        g[...] = 0
    run()
    once = {k: np.array(g, dtype=np.float64) for k, g in grads.items()}
    run()
    return Comparison(f"{title}: two backward calls without zero_grad",
                      [compare(k, g, 2 * once[k], TOLERANCE) for k, g in grads.items()],
                      labels=("two calls", "2 x one call"))


def accumulation_checks(backend=None, seed: int = 0) -> list:
    """One report per layer type and likelihood with parameters, and one for ``zero_grad``."""
    from ..conv import Conv2d, ConvTranspose2d
    from ..distributions import GaussianLearnedVariance
    from ..layers import Linear
    from ..model import VAE

    backend = get_backend(backend)
    rng = np.random.default_rng(seed)
    f64 = "float64"
    reports = []
    layers = [
        (Linear(5, 4, "tanh", rng=rng, dtype=f64, backend=backend), (6, 5),
         "Linear(5, 4, tanh)"),
        (Conv2d(2, 3, 3, 1, 1, "relu", rng=rng, dtype=f64, backend=backend), (3, 2, 5, 4),
         "Conv2d(2, 3, kernel 3, padding 1, relu)"),
        (ConvTranspose2d(2, 3, 3, 2, 1, rng=rng, dtype=f64, backend=backend), (3, 2, 3, 4),
         "ConvTranspose2d(2, 3, kernel 3, stride 2, padding 1)"),
    ]
    for layer, shape, title in layers:
        x = rng.standard_normal(shape)
        dout = rng.standard_normal(layer.forward(x).shape)

        def run(layer=layer, x=x, dout=dout):
            layer.forward(x)
            layer.backward(dout)

        reports.append(_twice(title, run, layer.grads))

    lik = GaussianLearnedVariance(backend=backend)
    lik.setup((6,), np.float64)
    lik.params["logvar"][...] = rng.uniform(-1.0, 0.5, 6)
    out, x, dnll = rng.standard_normal((4, 6)), rng.random((4, 6)), rng.random(4)
    reports.append(_twice("GaussianLearnedVariance.nll_and_grad",
                          lambda: lik.nll_and_grad(out, x, 0.25), lik.grads))
    reports.append(_twice("GaussianLearnedVariance.nll_backward",
                          lambda: lik.nll_backward(out, x, dnll), lik.grads))

    model = VAE(6, hidden_dims=(5,), latent_dim=3, likelihood="gaussian",
                gaussian_var="learned", dtype=f64, seed=seed, backend=backend)
    result = model.loss_and_grads(rng.random((4, 6)), eps=rng.standard_normal((4, 3)))
    read = dict(result.grads)  # what an optimizer is handed
    model.zero_grad()
    rows = [compare(k, g, np.zeros(g.shape), 0.0) for k, g in read.items()]
    reports.append(Comparison("VAE(6, hidden 5, latent 3), learned-variance Gaussian: "
                              "zero_grad clears the gradients the optimizer reads", rows,
                              labels=("after", "zero")))
    return reports


__all__ = ["accumulation_checks", "TOLERANCE"]
