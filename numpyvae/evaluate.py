"""Evaluating a trained model on a data set: ELBO, importance-weighted log p(x), anomaly scores.

All figures are in nats per example. Everything runs in batches, so memory
stays bounded for any data set size and any number of importance samples.

What does not live here: the formulas (the reparameterization, the Gaussian
log-density, log-sum-exp: :mod:`numpyvae.ops`), the importance-weighted
training objective (:mod:`numpyvae.iwae`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import ops
from .model import VAE


@dataclass
class ElboResult:
    """Mean ELBO terms over a data set, nats per example: ``elbo = -(recon + kl)``."""

    elbo: float
    recon: float
    kl: float

    @property
    def loss(self) -> float:
        return -self.elbo


def _batches(n, batch_size):
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def _given(labels, sl):
    """The keyword a conditional model's calls take for the rows ``sl`` (none without labels)."""
    return {} if labels is None else {"labels": np.asarray(labels)[sl]}


def elbo_per_example(model, X, *, batch_size=1000, rng=None, n_samples=1, labels=None):
    """Per-example ``(recon, kl)`` arrays, averaged over ``n_samples`` draws of the noise.

    ``labels`` (N,): the class of each example, for a conditional model.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    X = model.check_input(X, "X")
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    recon = np.zeros(len(X))
    kl = np.zeros(len(X))
    for sl in _batches(len(X), batch_size):
        for _ in range(n_samples):
            r, k = model.elbo_terms(X[sl], rng=rng, **_given(labels, sl))
            recon[sl] += r
            kl[sl] += k
    return recon / n_samples, kl / n_samples


def elbo(model, X, *, batch_size=1000, rng=None, n_samples=1, labels=None) -> ElboResult:
    """The evidence lower bound on ``log p(x)``, averaged over ``X``.

    .. math:: \\mathrm{ELBO}(x) = \\mathbb E_{q(z|x)}[\\log p(x|z)]
              - \\mathrm{KL}(q(z|x) \\,\\|\\, p(z)) \\le \\log p(x)

    estimated with ``n_samples`` reparameterized draws per example.
    """
    recon, kl = elbo_per_example(model, X, batch_size=batch_size, rng=rng, n_samples=n_samples,
                                 labels=labels)
    return ElboResult(elbo=float(-(recon + kl).mean()), recon=float(recon.mean()),
                      kl=float(kl.mean()))


def anomaly_scores(model, X, *, batch_size=1000, rng=None, n_samples=1) -> np.ndarray:
    """Per-example anomaly score: the negative ELBO (higher = less like the training data)."""
    recon, kl = elbo_per_example(model, X, batch_size=batch_size, rng=rng, n_samples=n_samples)
    return recon + kl


def _logsumexp_update(running, chunk):
    """Fold ``chunk`` (k_chunk, B) into a running log-sum-exp (B,): one more term of the sum.

    :math:`\\log(e^{r} + \\sum_i e^{a_i})` is the log-sum-exp of the running
    value and the chunk together (``running = -inf`` before any chunk: ``e^r = 0``).
    """
    return ops.logsumexp(np.concatenate([running[None], chunk]), axis=0)


def log_likelihood_per_example(model, X, k=5000, *, batch_size=100, chunk=None, rng=None,
                               labels=None, progress=False):
    """Importance-weighted estimate of ``log p(x)`` for each example (Burda et al., 2016).

    .. math::

        \\log p(x) \\approx \\log \\frac1k \\sum_{i=1}^{k}
            \\frac{p(x \\mid z_i)\\, p(z_i)}{q(z_i \\mid x)},
        \\qquad z_i \\sim q(z \\mid x),

    a lower bound that tightens as ``k`` grows (``k = 1`` is the ELBO in
    expectation). The sum runs as a streaming log-sum-exp over chunks of
    samples, so memory is ``O(batch_size * chunk)`` whatever ``k`` is.
    ``progress`` shows a bar of the ``len(X) * k`` decoder passes on stderr.
    """
    if not isinstance(model, VAE):
        raise ValueError("log_likelihood needs a VAE (an autoencoder has no posterior)")
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    rng = np.random.default_rng(0) if rng is None else rng
    X = model.check_input(X, "X")
    L = model.latent_dim
    chunk = max(1, min(k, chunk or max(1, 20000 // batch_size)))
    out = np.empty(len(X))
    bar = _progress_bar(len(X) * k, f"log p(x), K={k}", progress)
    for sl in _batches(len(X), batch_size):
        x = X[sl]
        B = len(x)
        given = _given(labels, sl)
        mu, logvar = model.encode(x, **given)
        running = np.full(B, -np.inf)                                   # log of an empty sum
        done = 0
        while done < k:
            c = min(chunk, k - done)
            eps = rng.standard_normal((c, B, L)).astype(model.dtype)
            z = ops.reparameterize(np.broadcast_to(mu, eps.shape),     # (c, B, L)
                                   np.broadcast_to(logvar, eps.shape), eps)
            log_pz = ops.gaussian_log_density(z.astype(np.float64))     # log N(z; 0, I)
            log_qz = ops.gaussian_log_density(eps.astype(np.float64), logvar)  # log q(z|x)
            tiled = {name: np.tile(v, c) for name, v in given.items()}
            xc = np.tile(x, (c,) + (1,) * (x.ndim - 1))                  # (c*B, *input_shape)
            nll = model.reconstruction_nll(z.reshape(c * B, L), xc, **tiled)
            log_w = -nll.reshape(c, B) + log_pz - log_qz                 # (c, B)
            running = _logsumexp_update(running, log_w)
            done += c
            bar.update(c * B)
        out[sl] = running - math.log(k)
    bar.close()
    return out


def _progress_bar(total, desc, enabled):
    import sys

    from tqdm import tqdm  # the text bar: tqdm.auto warns in notebooks without ipywidgets

    return tqdm(total=total, desc=desc, unit="sample", unit_scale=True, disable=not enabled,
                leave=False, mininterval=0.5, file=sys.stderr, dynamic_ncols=True)


def log_likelihood(model, X, k=5000, *, batch_size=100, chunk=None, rng=None,
                   labels=None, progress=False) -> float:
    """Mean importance-weighted ``log p(x)`` over ``X``, nats per example.

    See :func:`log_likelihood_per_example`.
    """
    return float(log_likelihood_per_example(model, X, k, batch_size=batch_size, chunk=chunk,
                                            rng=rng, labels=labels, progress=progress).mean())
