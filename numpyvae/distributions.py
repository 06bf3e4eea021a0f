"""The distributions of a VAE: the Gaussian posterior q(z|x) and the likelihoods p(x|z).

* :class:`DiagonalGaussian` — the posterior. The encoder's output ``h`` of
  width ``2L`` is split into ``mu`` and ``logvar``; ``z`` is drawn by the
  reparameterization trick with injected noise ``eps``; the KL to the prior
  ``N(0, I)`` is in closed form; free bits optional. Its backward sends the
  gradient of both paths (through ``z`` and through the KL) back to ``h``.
* Likelihoods, one small interface (:class:`Likelihood`): ``nll(out, x)``,
  ``nll_and_grad(out, x, scale)``, ``mean(out)``, ``params``/``grads``:

  - :class:`Bernoulli` — the decoder's output are logits;
  - :class:`Gaussian` — the decoder's output is the mean, the variance fixed;
  - :class:`GaussianLearnedVariance` — the same, with one learned
    log-variance per pixel, a parameter of the likelihood.

One convention everywhere: ``logvar = log sigma^2`` and ``sigma = exp(logvar / 2)``.
Every quantity is per example, summed over the latent dimensions or over all
of an example's values (any data shape ``(B, ...)``); a model averages over
the batch. The arithmetic is the backend's fused ops (the readable versions,
with the same derivations, are in :mod:`numpyvae.ops`).

What does not live here: the networks (:mod:`numpyvae.layers`), the models
that wire networks and distributions together (:mod:`numpyvae.model`).
"""

from __future__ import annotations

import math

import numpy as np

from .backend import get_backend


class _UsesBackend:
    """A backend and parameters: what a distribution shares with a layer."""

    def __init__(self, backend=None):
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.backend = get_backend(backend)

    def set_backend(self, backend) -> None:
        self.backend = get_backend(backend)

    def named_slots(self, prefix: str = ""):
        """``(qualified_name, self, key)`` for every parameter, as :meth:`Layer.named_slots`."""
        for key in self.params:
            yield prefix + key, self, key

    def zero_grad(self) -> None:
        for g in self.grads.values():
            g.fill(0)


# --------------------------------------------------------------------------
# The posterior q(z | x)
# --------------------------------------------------------------------------


class DiagonalGaussian(_UsesBackend):
    """The posterior ``q(z|x) = N(mu, diag(sigma^2))``, read off the encoder's output.

    Parameters
    ----------
    latent_dim : int
        ``L``; the encoder's output ``h`` has width ``2L``: ``h = [mu | logvar]``.
    free_bits : float
        ``lambda >= 0``: latent dimensions whose batch-mean KL is below
        ``lambda`` nats are not penalised (see :meth:`kl_objective`).

    Notes
    -----
    **Sampling** (reparameterization). ``z = mu + sigma * eps`` with
    ``eps ~ N(0, I)`` drawn outside and passed in: ``z`` is then a
    deterministic function of ``h``, with

    .. math:: \\frac{\\partial z}{\\partial \\mu} = 1, \\qquad
              \\frac{\\partial z}{\\partial\\, \\mathrm{logvar}}
              = \\tfrac12 \\sigma \\varepsilon .

    **KL to the prior**, per latent dimension,

    .. math:: \\mathrm{KL}\\big(\\mathcal N(\\mu, \\sigma^2) \\,\\|\\, \\mathcal N(0, 1)\\big)
              = \\tfrac12 (\\mu^2 + e^{\\mathrm{logvar}} - 1 - \\mathrm{logvar}),
              \\qquad
              \\frac{\\partial\\, \\mathrm{KL}}{\\partial \\mu} = \\mu, \\quad
              \\frac{\\partial\\, \\mathrm{KL}}{\\partial\\, \\mathrm{logvar}}
              = \\tfrac12 (e^{\\mathrm{logvar}} - 1),

    summed over the ``L`` dimensions of each example.

    **Backward.** ``mu`` and ``logvar`` reach the loss along two paths, through
    ``z`` (upstream ``dz``) and through the KL (upstream ``dkl`` per example),
    so their gradients are sums:

    .. math:: d\\mu = dz + dkl\\,\\mu, \\qquad
              d\\,\\mathrm{logvar} = \\tfrac12\\, dz\\, \\sigma \\varepsilon
              + dkl\\, \\tfrac12 (e^{\\mathrm{logvar}} - 1),

    and ``dh = [dmu | dlogvar]``. The term-by-term derivations are in
    :func:`numpyvae.ops.reparameterize_backward`,
    :func:`~numpyvae.ops.gaussian_kl_backward` and
    :func:`~numpyvae.ops.latent_backward`; the backend runs all
    of it as one fused ``latent_forward``/``latent_backward`` pair.
    """

    def __init__(self, latent_dim: int, free_bits: float = 0.0, backend=None):
        super().__init__(backend)
        self.latent_dim = int(latent_dim)
        self.free_bits = float(free_bits)
        self._h = self._eps = None

    def split(self, h):
        """``h`` (B, 2L) -> ``(mu, logvar)``, each a (B, L) view of ``h``."""
        L = self.latent_dim
        return h[:, :L], h[:, L:]

    def forward(self, h, eps):
        """Sample ``z`` and compute each example's KL.

        h : (B, 2L) the encoder's output, ``[mu | logvar]``
        eps : (B, L) standard-normal noise
        -> z : (B, L), kl : (B,) nats
        """
        self._h, self._eps = h, eps
        return self.backend.latent_forward(h, eps)

    def backward(self, dz, kl_weight: float):
        """Gradient with respect to ``h`` of ``loss = f(z) + kl_weight * sum(kl)``.

        With free bits, dimensions under the threshold get no KL gradient
        (see :meth:`kl_objective`).

        Parameters
        ----------
        dz : ndarray, shape (B, L)
            The gradient arriving through ``z``.
        kl_weight : float
            The upstream gradient of every example's KL (``beta / B`` for a
            batch-mean loss weighted by ``beta``).

        Returns
        -------
        dh : ndarray, shape (B, 2L)
        """
        if self._h is None:
            raise RuntimeError("DiagonalGaussian.backward called before forward")
        h = self._h
        dkl = np.full(h.shape[0], kl_weight, dtype=h.dtype)
        return self.backend.latent_backward(dz, h, self._eps, dkl, self.free_bits)

    def kl_objective(self, kl) -> float:
        """The KL term the loss minimises, nats per example.

        Without free bits it is the batch mean of ``kl``. With free bits
        ``lambda > 0`` (Kingma et al., 2016) each latent dimension's
        batch-mean KL is clamped from below,

        .. math:: \\sum_j \\max\\big(\\lambda,\\
                  \\tfrac1B \\textstyle\\sum_n \\mathrm{KL}_{nj}\\big),

        so a dimension under ``lambda`` costs a constant and gets no gradient
        (its gradient is zeroed in :meth:`backward`).
        """
        if self.free_bits > 0:
            per_dim = self.backend.kl_per_dimension(*self.split(self._h))
            return float(np.maximum(per_dim, self.free_bits).sum())
        return float(kl.mean())

    def sample(self, mu, logvar, eps):
        """``z = mu + exp(logvar / 2) * eps`` for given ``mu``, ``logvar``, ``eps``, each (B, L)."""
        return self.backend.reparameterize(mu, logvar, eps)

    def __repr__(self):
        fb = f", free_bits={self.free_bits:g}" if self.free_bits else ""
        return f"DiagonalGaussian(latent_dim={self.latent_dim}{fb})"


# --------------------------------------------------------------------------
# Likelihoods p(x | z), given the decoder's output
# --------------------------------------------------------------------------


def _rows(a):
    """``(B, ...)`` -> ``(B, D)``: the backend's likelihood ops sum over axis 1 of a 2-D array."""
    return a if a.ndim == 2 else a.reshape(a.shape[0], math.prod(a.shape[1:]))


class Likelihood(_UsesBackend):
    """The interface of a likelihood ``p(x | out)``, ``out`` the decoder's output.

    ``out`` and ``x`` have one shape, ``(B, ...)``; every method sums over
    all axes but the batch.

    * ``nll(out, x)`` -> ``-log p(x|out)`` per example, (B,) (a new array);
    * ``nll_and_grad(out, x, scale)`` -> ``(nll, dout)`` with ``dout`` the
      gradient of ``scale * sum(nll)`` with respect to ``out``; gradients of
      the likelihood's own parameters are *accumulated* into ``grads``;
    * ``nll_backward(out, x, dnll)`` -> ``dout`` for any upstream gradient
      ``dnll`` (B,) of the per-example NLL (importance weights, say), the
      parameters' gradients accumulated as above;
    * ``mean(out)`` -> the mean of ``p(x|out)`` (what a model decodes to);
    * ``params``/``grads`` -> the likelihood's parameters, if any.

    A model calls :meth:`setup` with the data's shape and dtype before use.
    """

    name = ""

    def setup(self, data_shape: tuple, dtype) -> None:
        """Bind to a model's data shape (no batch axis) and dtype."""
        self.data_shape, self.dtype = tuple(data_shape), np.dtype(dtype)

    def nll(self, out, x):  # pragma: no cover - abstract
        raise NotImplementedError

    def nll_and_grad(self, out, x, scale):  # pragma: no cover - abstract
        raise NotImplementedError

    def nll_backward(self, out, x, dnll):  # pragma: no cover - abstract
        raise NotImplementedError

    def mean(self, out):  # pragma: no cover - abstract
        raise NotImplementedError

    def spec(self) -> dict:
        return {"type": type(self).__name__}

    def __repr__(self):
        return f"{type(self).__name__}()"


class Bernoulli(Likelihood):
    """Each value is ``x ~ Bernoulli(sigmoid(out))``: the decoder outputs logits ``l``.

    .. math:: -\\log p(x \\mid l) = \\log(1 + e^{l}) - x\\,l, \\qquad
              \\frac{\\partial}{\\partial l} = \\sigma(l) - x,

    summed over an example's values (``x`` may be any value in [0, 1]).
    Evaluated without overflow for any logit; derivation in
    :func:`numpyvae.ops.bernoulli_nll`.
    """

    name = "bernoulli"

    def nll(self, out, x):
        return self.backend.bernoulli_nll(_rows(out), _rows(x))

    def nll_and_grad(self, out, x, scale):
        nll, dout = self.backend.bernoulli_nll_and_grad(_rows(out), _rows(x), scale)
        return nll, dout.reshape(out.shape)

    def nll_backward(self, out, x, dnll):
        dout = self.backend.bernoulli_nll_backward(dnll, _rows(out), _rows(x))
        return dout.reshape(out.shape)

    def mean(self, out):
        """Each value's probability of being 1: ``sigmoid(out)``."""
        return self.backend.activation_forward(out, "sigmoid")


class _GaussianMean(Likelihood):
    """Shared by the two Gaussians: the decoder outputs the mean; subclasses give ``logvar``."""

    name = "gaussian"

    def logvar(self):  # pragma: no cover - abstract
        """The log-variance the ops take: a scalar, or one per value (the data's shape)."""
        raise NotImplementedError

    def _dlogvar(self):
        """Where the log-variance's gradient accumulates, or None for a fixed variance."""
        return None

    def nll(self, out, x):
        return self.backend.gaussian_nll(_rows(out), _flat(self.logvar()), _rows(x))

    def nll_and_grad(self, out, x, scale):
        nll, dout = self.backend.gaussian_nll_and_grad(
            _rows(out), _flat(self.logvar()), _rows(x), scale, _flat(self._dlogvar()))
        return nll, dout.reshape(out.shape)

    def nll_backward(self, out, x, dnll):
        dout, dlogvar_each = self.backend.gaussian_nll_backward(
            dnll, _rows(out), _flat(self.logvar()), _rows(x))
        dlogvar = _flat(self._dlogvar())
        if dlogvar is not None:
            dlogvar += dlogvar_each.sum(axis=0)
        return dout.reshape(out.shape)

    def mean(self, out):
        """The decoder's output itself (a copy)."""
        return out.copy()


def _flat(a):
    """A per-value log-variance (or its gradient) as the 1-D view the ops index."""
    return a if a is None or np.ndim(a) <= 1 else a.reshape(-1)


class Gaussian(_GaussianMean):
    """Each value is ``x ~ N(out, var)``: the decoder outputs the mean ``m``; ``var`` is fixed.

    .. math:: -\\log p(x \\mid m) = \\tfrac12\\big(\\log 2\\pi + \\mathrm{logvar}
              + (x - m)^2 e^{-\\mathrm{logvar}}\\big), \\qquad
              \\frac{\\partial}{\\partial m} = (m - x)\\, e^{-\\mathrm{logvar}},

    summed over an example's values, with ``logvar = log(var)``; derivation in
    :func:`numpyvae.ops.gaussian_nll_backward`.
    """

    def __init__(self, var: float = 0.01, backend=None):
        super().__init__(backend)
        if isinstance(var, bool) or not (isinstance(var, (int, float)) and 0 < var < math.inf):
            raise ValueError(f"Gaussian: var must be a positive number, got {var!r}")
        self.var = var
        self._logvar = math.log(var)

    def setup(self, data_shape, dtype):
        super().setup(data_shape, dtype)
        self._logvar = self.dtype.type(math.log(self.var))  # a scalar in the model's dtype

    def logvar(self):
        return self._logvar

    def spec(self):
        return {"type": "Gaussian", "var": self.var}

    def __repr__(self):
        return f"Gaussian(var={self.var!r})"


class GaussianLearnedVariance(_GaussianMean):
    """A Gaussian with one learned log-variance per value: ``params = {"logvar": ...}``.

    ``logvar`` has the data's shape (no batch axis) and starts at 0
    (variance 1). The NLL is :class:`Gaussian`'s; the log-variance's gradient,
    summed over the batch, is

    .. math:: \\frac{\\partial}{\\partial\\, \\mathrm{logvar}}
              = \\tfrac12\\big(1 - (x - m)^2 e^{-\\mathrm{logvar}}\\big),

    accumulated into ``grads["logvar"]`` by :meth:`nll_and_grad`. A model
    exposes it as ``decoder.logvar``: it belongs to the decoder's
    distribution ``p(x|z)``.
    """

    var = "learned"

    def setup(self, data_shape, dtype):
        super().setup(data_shape, dtype)
        logvar = self.params.get("logvar")
        if logvar is None or logvar.shape != self.data_shape or logvar.dtype != self.dtype:
            self.params = {"logvar": np.zeros(self.data_shape, dtype=self.dtype)}
            self.grads = {"logvar": np.zeros(self.data_shape, dtype=self.dtype)}

    def logvar(self):
        return self.params["logvar"]

    def _dlogvar(self):
        return self.grads["logvar"]


#: Likelihood classes by name, for :func:`likelihood_from_spec`.
LIKELIHOOD_TYPES = {cls.__name__: cls for cls in (Bernoulli, Gaussian, GaussianLearnedVariance)}

#: The likelihood names the convenience constructors take.
LIKELIHOOD_NAMES = ("bernoulli", "gaussian")


def likelihood_from_spec(spec: dict, backend=None) -> Likelihood:
    """Rebuild a likelihood from its ``spec()``; ``ValueError`` for an unknown or bad spec."""
    if not isinstance(spec, dict) or spec.get("type") not in LIKELIHOOD_TYPES:
        raise ValueError(f"unknown likelihood spec {spec!r}; expected a type among "
                         f"{sorted(LIKELIHOOD_TYPES)}")
    args = {k: v for k, v in spec.items() if k != "type"}
    try:
        return LIKELIHOOD_TYPES[spec["type"]](**args, backend=backend)
    except TypeError as exc:
        raise ValueError(f"invalid likelihood spec {spec!r} ({exc})") from None


def make_likelihood(likelihood="bernoulli", gaussian_var=0.01, backend=None) -> Likelihood:
    """A likelihood object from the convenience names: ``"bernoulli"`` or ``"gaussian"``.

    For ``"gaussian"``, ``gaussian_var`` is the fixed variance or ``"learned"``.
    A :class:`Likelihood` object is passed through.
    """
    if isinstance(likelihood, Likelihood):
        return likelihood
    if likelihood not in LIKELIHOOD_NAMES:
        raise ValueError(f"unknown likelihood {likelihood!r}; expected one of "
                         f"{LIKELIHOOD_NAMES} or a Likelihood object")
    if not (gaussian_var == "learned" or (isinstance(gaussian_var, (int, float))
                                          and gaussian_var > 0)):
        raise ValueError(
            f"gaussian_var must be a positive number or 'learned', got {gaussian_var!r}"
        )
    if likelihood == "bernoulli":
        return Bernoulli(backend=backend)
    if gaussian_var == "learned":
        return GaussianLearnedVariance(backend=backend)
    return Gaussian(gaussian_var, backend=backend)


__all__ = [
    "DiagonalGaussian", "Likelihood", "Bernoulli", "Gaussian", "GaussianLearnedVariance",
    "LIKELIHOOD_TYPES", "likelihood_from_spec", "make_likelihood",
]
