"""The importance-weighted objective (IWAE, Burda et al., 2016), with its gradient by hand.

For each example ``x`` draw ``K`` posterior samples by reparameterization,
:math:`z_k = \\mu + \\sigma \\odot \\varepsilon_k`, :math:`\\varepsilon_k \\sim
\\mathcal N(0, I)`, :math:`\\sigma = e^{\\frac12 \\mathrm{logvar}}`, and weigh
each by how much more likely it is under the model than under the posterior:

.. math::

    \\log w_k = \\log p(x \\mid z_k) + \\log p(z_k) - \\log q(z_k \\mid x),
    \\qquad
    \\mathcal L_K(x) = -\\log \\frac1K \\sum_{k=1}^K w_k
                     = \\log K - \\operatorname{logsumexp}_k \\log w_k .

:math:`-\\mathcal L_K` is a lower bound on :math:`\\log p(x)` that tightens
as ``K`` grows; ``K = 1`` is the ELBO, with the KL estimated from the one
sample (:math:`\\log q(z_1|x) - \\log p(z_1)`, whose mean is the closed-form
KL that :meth:`VAE.loss_and_grads` uses).

**The two log-densities in terms of the noise.** With ``L`` latent
dimensions and :math:`z_k - \\mu = \\sigma \\odot \\varepsilon_k`,

.. math::

    \\log p(z_k) = -\\tfrac12 \\sum_d \\big(z_{kd}^2 + \\log 2\\pi\\big), \\qquad
    \\log q(z_k \\mid x) = -\\tfrac12 \\sum_d \\big(\\varepsilon_{kd}^2
        + \\mathrm{logvar}_d + \\log 2\\pi\\big),

so :math:`\\log p(z_k) - \\log q(z_k|x) = \\tfrac12 \\sum_d (\\varepsilon_{kd}^2
- z_{kd}^2 + \\mathrm{logvar}_d)`: the :math:`\\log 2\\pi` terms cancel.

**The gradient.** Write :math:`\\tilde w_k = w_k / \\sum_j w_j =
\\operatorname{softmax}_k(\\log w)` (the *normalised weights*). Since
:math:`\\partial \\operatorname{logsumexp}(a) / \\partial a_k =
\\operatorname{softmax}(a)_k`,

.. math::

    \\nabla \\mathcal L_K = -\\sum_k \\tilde w_k\\, \\nabla \\log w_k ,

each sample's ELBO gradient, weighted by its normalised importance weight
(the weights themselves are treated as the output of a softmax: the
gradient flows through them, this is the exact gradient). For a batch the
loss is the mean over examples, so ``d loss / d log w_bk = -w~_bk / B``.

Each :math:`\\log w_k` depends on the parameters along three paths:

1. the decoder, through :math:`\\log p(x | z_k)`: its upstream gradient is
   the per-sample weight :math:`\\tilde w_k / B` on the NLL, backpropagated
   through the decoder to give :math:`\\partial/\\partial z_k` and the
   decoder's parameter gradients;
2. the prior, :math:`\\partial \\log p(z_k) / \\partial z_k = -z_k`;
3. the posterior density. Here care is needed: :math:`\\log q(z_k|x)`
   depends on :math:`\\mu` and :math:`\\mathrm{logvar}` *directly* (at
   fixed :math:`z_k`) and *through* :math:`z_k = \\mu + \\sigma\\varepsilon_k`.
   Per dimension, with :math:`\\log q = -\\tfrac12[(z-\\mu)^2 e^{-\\mathrm{logvar}}
   + \\mathrm{logvar} + \\log 2\\pi]`:

   .. math::

       \\frac{\\partial \\log q}{\\partial \\mu}\\Big|_z = \\frac{z-\\mu}{\\sigma^2}
           = \\frac{\\varepsilon}{\\sigma}, \\qquad
       \\frac{\\partial \\log q}{\\partial z}\\frac{\\partial z}{\\partial \\mu}
           = -\\frac{\\varepsilon}{\\sigma} \\cdot 1,

   which cancel: :math:`d \\log q / d\\mu = 0`. And

   .. math::

       \\frac{\\partial \\log q}{\\partial\\,\\mathrm{logvar}}\\Big|_z
           = \\tfrac12 \\varepsilon^2 - \\tfrac12, \\qquad
       \\frac{\\partial \\log q}{\\partial z}\\frac{\\partial z}{\\partial\\,\\mathrm{logvar}}
           = -\\frac{\\varepsilon}{\\sigma}\\cdot \\tfrac12 \\sigma \\varepsilon
           = -\\tfrac12 \\varepsilon^2,

   which sum to :math:`d \\log q / d\\,\\mathrm{logvar} = -\\tfrac12`: the
   same as differentiating the noise form :math:`-\\tfrac12(\\varepsilon^2 +
   \\mathrm{logvar})` at fixed :math:`\\varepsilon`. (Dropping the direct,
   "score" part instead gives Roeder et al.'s lower-variance estimator; that
   is a different gradient, not this one.)

Collecting the paths, with :math:`g_k = \\partial \\mathcal L / \\partial z_k`
from the decoder (path 1, already weighted by :math:`\\tilde w_k / B`):

.. math::

    \\frac{\\partial \\mathcal L}{\\partial z_k} = g_k + \\frac{\\tilde w_k}{B} z_k,
    \\qquad
    \\frac{\\partial \\mathcal L}{\\partial \\mu} = \\sum_k
        \\frac{\\partial \\mathcal L}{\\partial z_k}, \\qquad
    \\frac{\\partial \\mathcal L}{\\partial\\,\\mathrm{logvar}} = \\sum_k
        \\frac{\\partial \\mathcal L}{\\partial z_k} \\odot \\tfrac12 \\sigma
        \\varepsilon_k \\;-\\; \\frac{1}{2B} \\sum_k \\tilde w_k ,

where :math:`\\sum_k \\tilde w_k = 1`. With a KL weight ``beta`` (warm-up),
the prior/posterior term is scaled, :math:`\\log w_k = \\log p(x|z_k) +
\\beta(\\log p(z_k) - \\log q(z_k|x))`, and so are its two gradient terms.

**Layout.** The ``K`` samples of each example go through the decoder as one
batch of ``B K`` rows, example-major: row ``b K + k`` is sample ``k`` of
example ``b``.

**As an objective.** :class:`ImportanceWeighted` is this bound as an
object a training step takes (:func:`numpyvae.step.step`), in place of the
default :class:`numpyvae.step.ELBO`.

What does not live here: the importance-weighted *evaluation* of
``log p(x)`` (:func:`numpyvae.evaluate.log_likelihood`), which needs no
gradient and streams any number of samples; the shared formulas
(log-sum-exp, the normalised weights, the Gaussian log-density:
:mod:`numpyvae.ops`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from . import ops
from .model import VAE


def log_prior_minus_posterior(z, eps, logvar):
    """:math:`\\log p(z_k) - \\log q(z_k|x)` for every sample.

    The difference of two :func:`numpyvae.ops.gaussian_log_density` values,
    ``gaussian_log_density(z) - gaussian_log_density(eps, logvar)``, with the
    :math:`\\log 2\\pi` terms cancelled by hand (see the module docstring):
    in float32 they would otherwise cost digits of a small difference.

    Parameters
    ----------
    z, eps : ndarray, shape (B, K, L)
    logvar : ndarray, shape (B, L)

    Returns
    -------
    ndarray, shape (B, K)
    """
    return 0.5 * np.sum(eps * eps - z * z + logvar[:, None, :], axis=2)


def iwae_bound(log_w):
    """The per-example loss :math:`\\log K - \\operatorname{logsumexp}_k \\log w_k` and the weights.

    Both come from :mod:`numpyvae.ops`: :func:`~numpyvae.ops.logsumexp`
    (each row's maximum is subtracted before exponentiating, so log-weights
    of -1e4, usual for images, do not underflow) and
    :func:`~numpyvae.ops.importance_weights`.

    Parameters
    ----------
    log_w : ndarray, shape (B, K)

    Returns
    -------
    loss : ndarray, shape (B,)
    w_tilde : ndarray, shape (B, K)
        The normalised weights (each row sums to 1).
    """
    K = log_w.shape[1]
    loss = math.log(K) - ops.logsumexp(log_w, axis=1)
    return loss, ops.importance_weights(log_w, axis=1)


def iwae_latent_backward(dz, w_tilde, z, eps, logvar, scale, beta=1.0, backend=ops):
    """Gradient of the loss with respect to ``mu`` and ``logvar`` (see the module docstring).

    The path through each sample :math:`z_k = \\mu + \\sigma \\varepsilon_k` is the
    reparameterization's backward (``backend.reparameterize_backward``, by
    default :func:`numpyvae.ops.reparameterize_backward`), summed over the samples.

    Parameters
    ----------
    dz : ndarray, shape (B, K, L)
        Gradient reaching each sample from the decoder (path 1).
    w_tilde : ndarray, shape (B, K)
    z, eps : ndarray, shape (B, K, L)
    logvar : ndarray, shape (B, L)
    scale : float
        ``1 / B`` for a batch mean.
    beta : float
        The weight of :math:`\\log p(z) - \\log q(z|x)`.
    backend : module
        Whose ``reparameterize_backward`` runs (the model's, or the reference ops).

    Returns
    -------
    dmu, dlogvar : ndarray, shape (B, L)
    """
    B, K, L = z.shape
    wb = (scale * beta) * w_tilde                          # (B, K)
    dz_total = dz + wb[:, :, None] * z                     # paths 1 and 2
    # Through z_k = mu + sigma * eps_k, as B*K rows (example-major), then summed over k.
    dmu_k, dlogvar_k = backend.reparameterize_backward(
        dz_total.reshape(B * K, L), np.repeat(logvar, K, axis=0), eps.reshape(B * K, L))
    dmu = dmu_k.reshape(B, K, L).sum(axis=1)
    dlogvar = dlogvar_k.reshape(B, K, L).sum(axis=1)
    dlogvar -= 0.5 * wb.sum(axis=1)[:, None]               # path 3: d log q / d logvar = -1/2
    return dmu, dlogvar


@dataclass
class IWAEResult:
    """What :func:`loss_and_grads` returns.

    Attributes
    ----------
    loss : float
        The objective minimised, :math:`\\mathrm{mean}_x \\mathcal L_K(x)`, nats
        per example (with ``beta = 1``, minus the importance-weighted bound).
    recon : float
        ``-log p(x|z)``, averaged over examples and all ``K`` samples.
    kl : float
        The closed-form ``KL(q(z|x) || N(0, I))``, averaged over examples
        (a description of the posterior; the objective uses the samples).
    grads : Mapping[str, ndarray]
        Gradient of ``loss`` for every parameter, the model's own arrays.
    w_tilde : ndarray, shape (B, K)
        The normalised importance weights of the batch.
    """

    loss: float
    recon: float
    kl: float
    grads: MappingProxyType
    w_tilde: np.ndarray


def _check_k(k):
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"the number of importance samples K must be a positive integer, "
                         f"got {k!r}")
    return int(k)


def draw_noise(model, batch, k, rng=None):
    """Reparameterization noise for ``k`` samples of ``batch`` examples: (batch, k, L)."""
    rng = model.rng if rng is None else rng
    return rng.standard_normal((batch, _check_k(k), model.latent_dim)).astype(model.dtype)


class _Passes:
    """The network passes the objective needs, from a model's encoder, decoder and likelihood.

    The one place that knows how a model is put together; everything else in
    this module is the objective's own math. The likelihood's backward takes a
    per-row upstream gradient ``dnll`` (each sample's normalised weight over ``B``).
    """

    def __init__(self, model, x, labels=None):
        x = np.asarray(x)
        shape = tuple(model.input_shape)
        if x.ndim != 1 + len(shape) or x.shape[1:] != shape:
            raise ValueError(f"iwae: expected x of shape (batch, "
                             f"{', '.join(map(str, shape))}), got {x.shape}")
        self.model, self.x = model, x.astype(model.dtype, copy=False)
        self.batch = len(x)
        # The networks read their inputs through the model's hooks: a conditional
        # model's see the label too, which is data and gets no gradient.
        self.labels = labels
        model.zero_grad()
        h = model.encoder.forward(model.encoder_input(self.x, labels))
        L = model.latent_dim
        self.mu, self.logvar = h[:, :L].copy(), h[:, L:].copy()

    def decode_nll(self, z, k):
        """``-log p(x_b | z)`` for every row of ``z`` (B*K, L) -> (B*K,)."""
        m = self.model
        self.xk = np.repeat(self.x, k, axis=0)
        labels = None if self.labels is None else np.repeat(np.asarray(self.labels), k)
        self.out = m.decoder.forward(m.decoder_input(z, labels))
        return m.likelihood.nll(self.out, self.xk)

    def decode_backward(self, dnll):
        """Backpropagate a per-row upstream gradient of the NLL; returns dz (B*K, L)."""
        m = self.model
        dz = m.decoder.backward(m.likelihood.nll_backward(self.out, self.xk, dnll))
        return dz[:, :m.latent_dim]  # a label's columns dropped

    def encode_backward(self, dmu, dlogvar):
        self.model.encoder.backward(np.concatenate([dmu, dlogvar], axis=1))


def loss_and_grads(model, x, k, eps=None, beta=1.0, rng=None, labels=None) -> IWAEResult:
    """The IWAE loss of a batch and its gradient for every parameter of a VAE.

    Parameters
    ----------
    model : VAE
    x : ndarray, shape (B, input_dim)
    k : int
        Importance samples per example.
    eps : ndarray, shape (B, k, latent_dim), optional
        The noise of every sample; drawn from ``rng`` (or the model's
        generator) when omitted. Pass it to hold the noise fixed.
    beta : float
        Weight of :math:`\\log p(z) - \\log q(z|x)` (1: the IWAE bound).
    labels : int array, shape (B,), optional
        The class of each example, for a conditional model (:class:`~numpyvae.CVAE`).

    Gradients are reset first; ``model.grads`` holds the result afterwards.
    """
    k = _check_k(k)
    if not isinstance(model, VAE):
        raise ValueError("iwae: needs a VAE (an autoencoder has no posterior to sample)")
    fwd = _Passes(model, x, labels)
    B, L = fwd.batch, model.latent_dim
    if eps is None:
        eps = draw_noise(model, B, k, rng)
    else:
        eps = np.asarray(eps, dtype=model.dtype)
        if eps.shape != (B, k, L):
            raise ValueError(f"iwae: expected eps of shape ({B}, {k}, {L}), got {eps.shape}")
    mu, logvar = fwd.mu, fwd.logvar
    # z_k = mu + sigma * eps_k for every sample, as B*K rows (example-major).
    z = model.backend.reparameterize(np.repeat(mu, k, axis=0), np.repeat(logvar, k, axis=0),
                                     eps.reshape(B * k, L))
    nll = fwd.decode_nll(z, k).reshape(B, k)                       # -log p(x|z_k)
    z3 = z.reshape(B, k, L)
    log_w = -nll.astype(np.float64) + beta * log_prior_minus_posterior(z3, eps, logvar)
    loss, w_tilde = iwae_bound(log_w)
    scale = 1.0 / B
    dz = fwd.decode_backward((scale * w_tilde).reshape(B * k).astype(model.dtype))
    dmu, dlogvar = iwae_latent_backward(dz.reshape(B, k, L), w_tilde, z3, eps, logvar,
                                        scale, beta, backend=model.backend)
    fwd.encode_backward(dmu.astype(model.dtype), dlogvar.astype(model.dtype))
    kl = model.backend.gaussian_kl(mu, logvar)
    return IWAEResult(float(loss.mean()), float(nll.mean()), float(kl.mean()), model.grads,
                      w_tilde)


class ImportanceWeighted:
    """The importance-weighted bound with ``k`` samples per example, as a training objective.

    What a training step (:func:`numpyvae.step.step`) takes in place of the
    default :class:`numpyvae.step.ELBO`: its :meth:`loss_and_grads` is
    :func:`loss_and_grads` above, with ``k`` fixed. ``k = 1`` is the ELBO with
    the KL estimated from the sample.

    Examples
    --------
    >>> import numpy as np, numpyvae
    >>> from numpyvae.iwae import ImportanceWeighted
    >>> model = numpyvae.VAE(784, hidden_dims=(64,), latent_dim=8)
    >>> x = np.random.default_rng(0).random((16, 784), dtype=np.float32)
    >>> result = ImportanceWeighted(5).loss_and_grads(model, x)
    >>> result.w_tilde.shape
    (16, 5)
    """

    def __init__(self, k):
        self.k = _check_k(k)

    def check(self, model) -> None:
        """Raise ``ValueError`` if ``model`` cannot be trained on this bound."""
        if not isinstance(model, VAE):
            raise ValueError("iw_train (importance-weighted training) needs a VAE; an "
                             "autoencoder has no posterior to sample")
        if getattr(model, "free_bits", 0) > 0:
            raise ValueError("iw_train and free bits do not combine: free bits change the "
                             "closed-form KL, which the importance-weighted bound does not use")

    def loss_and_grads(self, model, x, *, labels=None, eps=None, beta=1.0,
                       rng=None) -> IWAEResult:
        """The bound's loss of a batch and its gradients; see :func:`loss_and_grads`."""
        return loss_and_grads(model, x, self.k, eps=eps, beta=beta, rng=rng, labels=labels)

    def __repr__(self):
        return f"ImportanceWeighted(k={self.k})"
