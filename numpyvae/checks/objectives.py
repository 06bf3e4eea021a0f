"""The importance-weighted objective (:mod:`numpyvae.iwae`): its value and its gradient.

For each model (a Bernoulli VAE, a learned-variance Gaussian VAE, whose
decoder's gradient comes through the likelihood's ``nll_backward``, and a
conditional VAE, whose networks also see the label), with ``K = 3`` samples
held fixed:

* the loss against the textbook bound, written out again from the
  networks' outputs: :math:`\\log w_k = \\log p(x|z_k) + \\log \\mathcal N(z_k; 0, I)
  - \\log \\mathcal N(z_k; \\mu, \\sigma^2)` with each density in full
  (:mod:`.densities`), and :math:`\\mathcal L = \\log K - \\log\\sum_k w_k`;
* every parameter's gradient against central differences of that loss.
"""

from __future__ import annotations

import math

import numpy as np

from ..backend import get_backend
from ..gradcheck import GradReport, numerical_gradient
from .compare import Comparison, compare
from .densities import bernoulli_textbook, gaussian_textbook

VALUE_TOLERANCE = 1e-12
GRAD_TOLERANCE = 1e-7


def _log_normal(z, mean, var):
    """log N(z; mean, var), summed over the last axis."""
    return -np.sum(0.5 * np.log(2 * math.pi * var) + (z - mean) ** 2 / (2 * var), axis=-1)


def iwae_textbook(model, x, eps, labels=None, beta=1.0):
    """The mean over examples of :math:`\\log K - \\operatorname{logsumexp}_k \\log w_k`."""
    B, K, L = eps.shape
    inp = model.encoder_input(x, labels) if labels is not None else x
    h = np.array(model.encoder.forward(inp), dtype=np.float64)
    mu, logvar = h[:, :L], h[:, L:]
    var = np.exp(logvar)
    z = mu[:, None, :] + np.sqrt(var)[:, None, :] * eps                    # (B, K, L)
    rows = z.reshape(B * K, L)
    if labels is not None:
        rows = model.decoder_input(rows, np.repeat(np.asarray(labels), K))
    out = np.array(model.decoder.forward(rows), dtype=np.float64).reshape(B * K, -1)
    xk = np.repeat(np.asarray(x, dtype=np.float64).reshape(B, -1), K, axis=0)
    lik = model.likelihood
    if lik.name == "bernoulli":
        nll = bernoulli_textbook(out, xk)
    else:
        lv = lik.logvar()
        nll = gaussian_textbook(out, np.exp(np.asarray(lv, dtype=np.float64)).reshape(-1), xk)
    log_w = (-nll.reshape(B, K) + beta * (_log_normal(z, 0.0, 1.0)
                                          - _log_normal(z, mu[:, None, :], var[:, None, :])))
    top = log_w.max(axis=1)
    return float(np.mean(math.log(K) - (top + np.log(np.exp(log_w - top[:, None]).sum(1)))))


def objective_checks(backend=None, seed: int = 0) -> list:
    """The IWAE loss and gradient of three small float64 models (see the module docstring)."""
    from .. import iwae
    from ..cvae import CVAE
    from ..model import VAE

    backend = get_backend(backend)
    rng = np.random.default_rng(seed + 3)
    B, K, L = 3, 3, 2
    x = rng.random((B, 5))
    cases = [
        ("VAE(5, hidden 4, latent 2, tanh), Bernoulli",
         VAE(5, hidden_dims=(4,), latent_dim=L, activation="tanh", dtype="float64",
             seed=seed, backend=backend), None, 1.0),
        ("VAE(5, hidden 4, latent 2, softplus), learned-variance Gaussian, beta 0.5",
         VAE(5, hidden_dims=(4,), latent_dim=L, activation="softplus", likelihood="gaussian",
             gaussian_var="learned", dtype="float64", seed=seed, backend=backend), None, 0.5),
        ("CVAE(5, 3 classes, hidden 4, latent 2, sigmoid), Bernoulli",
         CVAE(5, num_classes=3, hidden_dims=(4,), latent_dim=L, activation="sigmoid",
              dtype="float64", seed=seed, backend=backend), np.array([2, 0, 1]), 1.0),
    ]
    reports = []
    for title, model, labels, beta in cases:
        if "logvar" in model.likelihood.params:
            model.likelihood.params["logvar"][...] = rng.uniform(-1.0, 0.5, 5)
        eps = rng.standard_normal((B, K, L))
        given = {} if labels is None else {"labels": labels}
        result = iwae.loss_and_grads(model, x, K, eps=eps, beta=beta, **given)
        grads = {k: np.array(g, dtype=np.float64) for k, g in result.grads.items()}
        value = Comparison(f"IWAE (K={K}) of {title}: the loss against the textbook bound",
                           [compare("loss", result.loss,
                                    iwae_textbook(model, x, eps, labels, beta),
                                    VALUE_TOLERANCE)], labels=("library", "textbook"))
        reports.append(value)

        def f(model=model, eps=eps, beta=beta, given=given):
            return iwae.loss_and_grads(model, x, K, eps=eps, beta=beta, **given).loss

        report = GradReport(f"IWAE (K={K}) of {title}: the gradient, central differences")
        for name, p in model.params.items():
            report.append(compare(name, grads[name], numerical_gradient(f, p, 1e-6),
                                  GRAD_TOLERANCE))
        reports.append(report)
    return reports


__all__ = ["objective_checks", "iwae_textbook"]
