"""The linear VAE: pPCA's model built from the library's own layers, so its bounds meet the truth.

A :class:`~numpyvae.model.VAE` whose encoder and decoder are each one
:class:`~numpyvae.layers.Linear` layer with the identity activation, and whose
likelihood is a Gaussian:

.. math:: [\\mu_q \\mid \\log\\sigma_q^2] = x A + c, \\qquad
          p(x \\mid z) = \\mathcal N(z V + b,\\ \\Psi),

``A`` (D, 2L) and ``c`` (2L,) the encoder's ``W`` and ``b``, ``V`` (L, D) and
``b`` (D,) the decoder's. In the notation of :mod:`numpyvae.ppca` the
generative model is pPCA with :math:`W = V^\\top` and mean ``b``: the same
density, constants included, so :func:`numpyvae.ppca.log_likelihood` is the
exact :math:`\\log p(x)` that every bound of this model (the ELBO, the
importance-weighted bound of :mod:`numpyvae.evaluate`) is a bound on.

* :func:`linear_vae` — an untrained one, with a fixed noise variance
  :math:`\\Psi = \\sigma^2 I` (pPCA) or a learned one per value
  (:math:`\\Psi = \\mathrm{diag}(\\psi)`, factor analysis); trained like any
  other model (:func:`numpyvae.app.train.fit`);
* :func:`generative_parameters` — its ``(W, mean, noise_var)`` for
  :mod:`numpyvae.ppca`; :func:`exact_log_likelihood` — its true
  :math:`\\log p(x)`;
* :func:`optimal_encoder` and :func:`from_ppca` — the encoder whose ``q`` is
  the best diagonal Gaussian for every ``x``, and a model with a pPCA
  solution plugged in.

What does not live here: the formulas (:mod:`numpyvae.ppca`), training
(:mod:`numpyvae.app.train`).
"""

from __future__ import annotations

import numpy as np

from . import ppca
from .distributions import Gaussian, GaussianLearnedVariance
from .layers import Linear, Sequential, as_float_dtype, mlp
from .model import VAE


def linear_vae(input_dim, latent_dim, *, noise_var=0.01, dtype="float64", seed=0,
               backend=None) -> VAE:
    """An untrained linear VAE: one identity ``Linear`` each way and a Gaussian decoder.

    Parameters
    ----------
    input_dim, latent_dim : int
        ``D`` and ``L``.
    noise_var : float or "learned"
        The decoder's variance :math:`\\sigma^2` (fixed; the model is pPCA),
        or ``"learned"``: one learned variance per value (parameter
        ``decoder.logvar``; the model is factor analysis).
    dtype : "float32" or "float64"
    seed : int
        Draws the initial weights, then seeds the model's noise.

    Returns
    -------
    VAE
        Parameters ``encoder.0.W`` (D, 2L), ``encoder.0.b`` (2L,),
        ``decoder.0.W`` (L, D), ``decoder.0.b`` (D,) (and ``decoder.logvar``
        (D,) when learned).
    """
    dtype = as_float_dtype(dtype)
    rng = np.random.default_rng(seed)
    encoder = mlp((input_dim, 2 * latent_dim), out_activation="identity", rng=rng,
                  dtype=dtype, backend=backend)
    decoder = mlp((latent_dim, input_dim), out_activation="identity", rng=rng,
                  dtype=dtype, backend=backend)
    likelihood = GaussianLearnedVariance(backend=backend) if noise_var == "learned" \
        else Gaussian(noise_var, backend=backend)
    return VAE(encoder, decoder, latent_dim=latent_dim, likelihood=likelihood, seed=seed,
               backend=backend)


def _linear(network, what):
    """The one identity ``Linear`` layer of a linear VAE's ``network``."""
    layers = network.children if isinstance(network, Sequential) else [network]
    if len(layers) != 1 or not isinstance(layers[0], Linear) \
            or layers[0].activation != "identity":
        raise ValueError(f"not a linear VAE: its {what} must be a single Linear layer with the "
                         f"identity activation, got {network!r}")
    return layers[0]


def generative_parameters(model: VAE):
    """``(W, mean, noise_var)`` of a linear VAE's decoder, in :mod:`numpyvae.ppca`'s notation.

    Returns ``W`` (D, L) ``= decoder.0.W.T``, ``mean`` (D,) ``= decoder.0.b``
    and ``noise_var``, a float (fixed variance) or (D,) (learned), all float64.
    ``ValueError`` if the model is not a linear VAE with a Gaussian decoder.
    """
    layer = _linear(model.decoder, "decoder")
    likelihood = model.likelihood
    if isinstance(likelihood, GaussianLearnedVariance):
        noise_var = np.exp(np.asarray(likelihood.logvar(), np.float64)).reshape(-1)
    elif isinstance(likelihood, Gaussian):
        noise_var = float(likelihood.var)
    else:
        raise ValueError(f"not a linear VAE: its likelihood must be Gaussian, got {likelihood!r}")
    return (np.asarray(layer.params["W"], np.float64).T.copy(),
            np.asarray(layer.params["b"], np.float64).copy(), noise_var)


def exact_log_likelihood(model: VAE, X) -> np.ndarray:
    """The true ``log p(x)`` of a linear VAE for each row of ``X`` (N, D): (N,), float64."""
    return ppca.log_likelihood(X, *generative_parameters(model))


def optimal_encoder(W, mean, noise_var):
    """The encoder weights whose ``q`` is the best diagonal Gaussian for every ``x``.

    Parameters
    ----------
    W : ndarray, shape (D, L)
    mean : ndarray, shape (D,)
    noise_var : float or ndarray of shape (D,)

    Returns
    -------
    A : ndarray, shape (D, 2L)
    c : ndarray, shape (2L,)
        ``[mu | logvar] = x @ A + c``, float64.

    Notes
    -----
    The best diagonal ``q`` (:func:`numpyvae.ppca.best_diagonal_posterior`)
    has mean :math:`M^{-1} W^\\top \\Psi^{-1} (x - \\mu)`, an affine function of
    ``x``, and log-variance :math:`-\\log M_{jj}`, a constant. So with
    :math:`G = \\Psi^{-1} W M^{-1}` (D, L),

    .. math:: A = [\\,G \\mid 0\\,], \\qquad
              c = [\\,-\\mu^\\top G \\mid -\\log \\mathrm{diag}\\, M\\,]:

    a linear encoder can reach the best diagonal posterior exactly, so a
    linear VAE has no amortization gap at its optimum; what a trained one
    shows is optimisation left undone. When ``M`` is diagonal (the pPCA
    optimum's orthogonal columns) this ``q`` is the exact posterior and the
    ELBO equals :math:`\\log p(x)`.
    """
    W, mean, psi = ppca.model_arrays(W, mean, noise_var)
    M = ppca.posterior_precision(W, psi)
    G = (W / psi[:, None]) @ np.linalg.inv(M)
    A = np.concatenate([G, np.zeros_like(G)], axis=1)
    c = np.concatenate([-mean @ G, -np.log(np.diag(M))])
    return A, c


def set_parameters(model: VAE, W, mean, noise_var=None, encoder=None) -> VAE:
    """Write a pPCA solution into a linear VAE, in place; returns ``model``.

    Parameters
    ----------
    W : ndarray, shape (D, L)
        The decoder's ``decoder.0.W`` becomes ``W.T``.
    mean : ndarray, shape (D,)
        The decoder's bias.
    noise_var : ndarray of shape (D,), optional
        For a learned variance only: ``decoder.logvar = log(noise_var)``. A
        fixed variance is the model's own and must be given when it is built.
    encoder : (A, c), optional
        The encoder's ``W`` (D, 2L) and ``b`` (2L,); by default
        :func:`optimal_encoder` for the decoder and the model's variance.
    """
    dec, enc = _linear(model.decoder, "decoder"), _linear(model.encoder, "encoder")
    if noise_var is not None:
        if not isinstance(model.likelihood, GaussianLearnedVariance):
            raise ValueError("set_parameters: noise_var is for a decoder with a learned "
                             "variance; a fixed variance is chosen when the model is built")
        model.likelihood.params["logvar"][...] = np.log(np.asarray(noise_var, np.float64))
    dec.params["W"][...] = np.asarray(W, np.float64).T
    dec.params["b"][...] = mean
    A, c = optimal_encoder(*generative_parameters(model)) if encoder is None else encoder
    enc.params["W"][...] = A
    enc.params["b"][...] = c
    return model


def from_ppca(fit: ppca.PPCAFit, *, dtype="float64", seed=0, backend=None) -> VAE:
    """A linear VAE with a pPCA solution plugged in: ``fit``'s decoder, the optimal encoder.

    At the maximum-likelihood fit (orthogonal columns of ``W``) the encoder's
    ``q`` is the exact posterior, and the ELBO equals the exact ``log p(x)``.
    """
    D, L = fit.W.shape
    model = linear_vae(D, L, noise_var=fit.noise_var, dtype=dtype, seed=seed, backend=backend)
    return set_parameters(model, fit.W, fit.mean)


__all__ = ["linear_vae", "generative_parameters", "exact_log_likelihood", "optimal_encoder",
           "set_parameters", "from_ppca"]
