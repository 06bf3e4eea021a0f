"""The variational autoencoder and the plain autoencoder, wired from layers and backend ops.

Both models share an MLP encoder and an MLP decoder (:func:`numpyvae.layers.mlp`)
and a likelihood for the data given the decoder's output:

* ``"bernoulli"`` — the decoder outputs logits; ``-log p(x|z)`` is the binary
  cross-entropy with logits, gradient ``sigmoid(l) - x``.
* ``"gaussian"`` — the decoder outputs the mean; the variance is fixed
  (``gaussian_var``, a number) or a learned per-pixel log-variance
  (``gaussian_var="learned"``, parameter ``decoder.logvar``).

The VAE's encoder ends in one ``Linear`` of width ``2 * latent_dim``: the first
half is the mean ``mu``, the second half ``logvar = log sigma^2``. The latent
code is ``z = mu + sigma * eps`` (reparameterization), and the loss is

.. math::

    \\mathcal L = \\underbrace{-\\log p(x \\mid z)}_{\\text{recon}}
        + \\beta\\, \\mathrm{KL}\\big(q(z \\mid x) \\,\\|\\, \\mathcal N(0, I)\\big),

in nats per example (summed over pixels and latent dimensions, averaged over
the batch). The plain autoencoder uses ``z = encoder(x)`` and the
reconstruction term alone.

What does not live here: the math of each op (:mod:`numpyvae.backend.reference`),
evaluation beyond one batch (:mod:`numpyvae.evaluate`), training loops
(:mod:`numpyvae.train`).
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np

from .backend import get_backend
from .backend.reference import ACTIVATIONS
from .fileio import atomic_write
from .layers import Layer, as_float_dtype, mlp, pack_parameters
from .safenpz import read_npz

LIKELIHOODS = ("bernoulli", "gaussian")
FORMAT_VERSION = 1


class ModelFileError(ValueError):
    """A model file is missing, corrupt, or does not match the model it claims to be."""


@dataclass
class LossResult:
    """What :meth:`VAE.loss_and_grads` returns.

    Attributes
    ----------
    loss : float
        The objective minimised: ``recon + beta * kl`` (with free bits, the
        KL term is the free-bits KL), nats per example.
    recon : float
        ``-log p(x|z)``, nats per example.
    kl : float
        ``KL(q(z|x) || N(0, I))``, nats per example (0 for the autoencoder).
    grads : Mapping[str, ndarray]
        Gradient of ``loss`` for every parameter, same keys as ``model.params``.
        These are the model's own gradient arrays: the next call overwrites them.
    """

    loss: float
    recon: float
    kl: float
    grads: MappingProxyType


def _positive_int(value, what):
    try:
        ok = int(value) == value and int(value) >= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


class _EncoderDecoder:
    """Shared machinery of :class:`VAE` and :class:`Autoencoder`."""

    kind = ""
    latent_widths = 1  # the encoder's output width is latent_widths * latent_dim

    def __init__(self, input_dim, hidden_dims=(400,), latent_dim=20, likelihood="bernoulli",
                 activation="relu", dtype="float32", seed=0, *, backend=None, init="default",
                 gaussian_var=0.01, free_bits=0.0):
        self.input_dim = _positive_int(input_dim, "input_dim")
        if isinstance(hidden_dims, int):
            hidden_dims = (hidden_dims,)
        self.hidden_dims = tuple(_positive_int(h, "each of hidden_dims") for h in hidden_dims)
        self.latent_dim = _positive_int(latent_dim, "latent_dim")
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {likelihood!r}; expected one of {LIKELIHOODS}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; expected one of {ACTIVATIONS}")
        if not (gaussian_var == "learned" or (isinstance(gaussian_var, (int, float))
                                              and gaussian_var > 0)):
            raise ValueError(
                f"gaussian_var must be a positive number or 'learned', got {gaussian_var!r}"
            )
        if not (isinstance(free_bits, (int, float)) and free_bits >= 0):
            raise ValueError(f"free_bits must be a number >= 0, got {free_bits!r}")
        self.likelihood, self.activation, self.init = likelihood, activation, init
        self.gaussian_var, self.free_bits = gaussian_var, float(free_bits)
        self.dtype = as_float_dtype(dtype)
        self.seed = seed
        self.backend = get_backend(backend)
        self.rng = np.random.default_rng(seed)

        width = self.latent_widths * self.latent_dim
        common = dict(init=init, rng=self.rng, dtype=self.dtype, backend=self.backend)
        self.encoder = mlp((self.input_dim, *self.hidden_dims, width), activation, **common)
        self.decoder = mlp((self.latent_dim, *self.hidden_dims[::-1], self.input_dim),
                           activation, **common)
        self.encoder[0].skip_input_grad = True  # nothing upstream of the data needs dx

        self._noise = Layer(self.backend)  # holds the learned observation log-variance
        if likelihood == "gaussian" and gaussian_var == "learned":
            self._noise.params = {"logvar": np.zeros(self.input_dim, dtype=self.dtype)}
            self._noise.grads = {"logvar": np.zeros(self.input_dim, dtype=self.dtype)}
        self._fixed_logvar = None
        if likelihood == "gaussian" and gaussian_var != "learned":
            self._fixed_logvar = self.dtype.type(math.log(gaussian_var))

        slots = [*self.encoder.named_slots("encoder."), *self.decoder.named_slots("decoder."),
                 *self._noise.named_slots("decoder.")]
        self.flat_params, self.flat_grads = pack_parameters(slots, self.dtype)
        self.params = MappingProxyType({name: layer.params[k] for name, layer, k in slots})
        self.grads = MappingProxyType({name: layer.grads[k] for name, layer, k in slots})
        for layer in self._layers():
            layer.reuse_buffers = True
        self._work: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ plumbing

    def _layers(self):
        yield from self.encoder.layers()
        yield from self.decoder.layers()

    def _buf(self, name, shape):
        buf = self._work.get(name)
        if buf is None or buf.shape != shape:
            buf = self._work[name] = np.empty(shape, dtype=self.dtype)
        return buf

    def set_backend(self, backend) -> None:
        """Switch every layer and op of this model to another backend."""
        self.backend = get_backend(backend)
        self.encoder.set_backend(self.backend)
        self.decoder.set_backend(self.backend)

    def zero_grad(self) -> None:
        """Set every gradient to zero."""
        self.flat_grads.fill(0)

    @property
    def num_params(self) -> int:
        return self.flat_params.size

    def _check_data(self, x, what="x"):
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise ValueError(
                f"{type(self).__name__}: expected {what} of shape (batch, {self.input_dim}), "
                f"got {x.shape}"
            )
        if x.dtype != self.dtype:
            if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
                raise ValueError(f"{type(self).__name__}: {what} must be numeric, got {x.dtype}")
            x = x.astype(self.dtype)
        return x

    def _check_latent(self, z, what="z"):
        z = np.asarray(z, dtype=self.dtype)
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(
                f"{type(self).__name__}: expected {what} of shape (batch, {self.latent_dim}), "
                f"got {z.shape}"
            )
        return z

    def _obs_logvar(self):
        if self._fixed_logvar is not None:
            return self._fixed_logvar
        return self._noise.params["logvar"]

    # ------------------------------------------------------------------ likelihood

    def _recon_and_grad(self, out, x, scale):
        """Per-example ``-log p(x|z)`` and ``scale`` times its gradient w.r.t. ``out``."""
        B = x.shape[0]
        nll, dout = self._buf("nll", (B,)), self._buf("dout", out.shape)
        if self.likelihood == "bernoulli":
            return self.backend.bernoulli_nll_and_grad(out, x, scale, nll=nll, dlogits=dout)
        dlogvar = self._noise.grads.get("logvar")
        return self.backend.gaussian_nll_and_grad(out, self._obs_logvar(), x, scale, dlogvar,
                                                  nll=nll, dmean=dout)

    def reconstruction_nll(self, z, x) -> np.ndarray:
        """``-log p(x | z)`` per example, shape (B,), for latent codes ``z`` (B, L)."""
        z, x = self._check_latent(z), self._check_data(x)
        if z.shape[0] != x.shape[0]:
            # A single x would otherwise broadcast silently against every z.
            raise ValueError(f"{type(self).__name__}: z has {z.shape[0]} rows but x has "
                             f"{x.shape[0]}; expected one x per z")
        out = self.decoder.forward(z)
        if self.likelihood == "bernoulli":
            return self.backend.bernoulli_nll(out, x).copy()
        return self.backend.gaussian_nll(out, self._obs_logvar(), x).copy()

    def decode(self, z) -> np.ndarray:
        """The mean of ``p(x | z)``: pixel probabilities (Bernoulli) or the mean (Gaussian).

        z: (B, latent_dim) -> (B, input_dim)
        """
        out = self.decoder.forward(self._check_latent(z))
        if self.likelihood == "bernoulli":
            return self.backend.activation_forward(out, "sigmoid")
        return out.copy()

    def sample(self, n, rng=None) -> np.ndarray:
        """Decode ``n`` draws from the prior ``N(0, I)``: shape (n, input_dim)."""
        rng = self.rng if rng is None else rng
        z = rng.standard_normal((_positive_int(n, "n"), self.latent_dim)).astype(self.dtype)
        return self.decode(z)

    def interpolate(self, x_a, x_b, steps=10) -> np.ndarray:
        """Decode ``steps`` points on the line between the codes of ``x_a`` and ``x_b``.

        ``x_a``, ``x_b``: one input each, shape (input_dim,) or (1, input_dim).
        Returns (steps, input_dim), from ``x_a``'s end to ``x_b``'s.
        """
        steps = _positive_int(steps, "steps")
        pair = np.vstack([np.reshape(x_a, (1, -1)), np.reshape(x_b, (1, -1))])
        codes = self.embed(self._check_data(pair, "x_a/x_b"))
        t = np.linspace(0.0, 1.0, steps, dtype=self.dtype)[:, None]
        return self.decode((1 - t) * codes[0] + t * codes[1])

    # ------------------------------------------------------------------ training step

    def loss_and_grads(self, x, eps=None, beta=1.0, rng=None) -> LossResult:
        """Loss of a batch and its gradient for every parameter (gradients are reset first).

        Parameters
        ----------
        x : ndarray, shape (B, input_dim)
        eps : ndarray, shape (B, latent_dim), optional
            The reparameterization noise; drawn from ``rng`` (or the model's
            own generator) when omitted. Pass it to hold the noise fixed.
        beta : float
            Weight of the KL term.
        """
        x = self._check_data(x)
        B = x.shape[0]
        self.zero_grad()
        h = self.encoder.forward(x)
        z, kl = self._latent_forward(h, eps, rng)
        out = self.decoder.forward(z)
        nll, dout = self._recon_and_grad(out, x, 1.0 / B)
        dz = self.decoder.backward(dout)
        kl_term = self._latent_backward(dz, h, kl, beta)
        recon = float(nll.mean())
        kl_value = 0.0 if kl is None else float(kl.mean())
        return LossResult(recon + beta * kl_term, recon, kl_value, self.grads)

    # ------------------------------------------------------------------ saving

    def config(self) -> dict:
        """The constructor arguments that rebuild this model (weights aside)."""
        return {
            "kind": self.kind, "input_dim": self.input_dim, "hidden_dims": list(self.hidden_dims),
            "latent_dim": self.latent_dim, "likelihood": self.likelihood,
            "activation": self.activation, "dtype": self.dtype.name,
            "gaussian_var": self.gaussian_var, "free_bits": self.free_bits,
            "init": self.init if isinstance(self.init, str) else "default",
        }

    def save(self, path) -> Path:
        """Write weights and config to one ``.npz`` file (no pickle), atomically."""
        arrays = dict(self.params)
        arrays["__config__"] = np.frombuffer(
            json.dumps({"format": FORMAT_VERSION, **self.config()}).encode(), dtype=np.uint8
        )
        return atomic_write(path, lambda f: np.savez(f, **arrays))

    def load_weights(self, arrays, source="weights") -> None:
        """Copy arrays (name -> array) into this model's parameters, checking names and shapes."""
        missing = [name for name in self.params if name not in arrays]
        if missing:
            raise ModelFileError(f"{source}: missing parameter(s) {missing}")
        for name, p in self.params.items():
            a = np.asarray(arrays[name])
            if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
                raise ModelFileError(
                    f"{source}: parameter {name!r} has dtype {a.dtype}, expected numbers"
                )
            if a.shape != p.shape:
                raise ModelFileError(
                    f"{source}: parameter {name!r} has shape {a.shape}, the model expects {p.shape}"
                )
            if not np.all(np.isfinite(a)):
                raise ModelFileError(f"{source}: parameter {name!r} holds NaN or infinity")
            p[...] = a

    def __repr__(self):
        return (f"{type(self).__name__}(input_dim={self.input_dim}, "
                f"hidden_dims={self.hidden_dims}, latent_dim={self.latent_dim}, "
                f"likelihood={self.likelihood!r}, dtype={self.dtype.name!r}, "
                f"backend={self.backend.NAME!r})")


class VAE(_EncoderDecoder):
    """A variational autoencoder with a Gaussian posterior and a standard-normal prior.

    Parameters
    ----------
    input_dim : int
    hidden_dims : tuple of int
        Widths of the encoder's hidden layers; the decoder mirrors them.
    latent_dim : int
    likelihood : "bernoulli" or "gaussian"
    activation : str
        Hidden activation, ``"relu"`` by default.
    dtype : "float32" or "float64"
    seed : int
        Seeds the initial weights and the model's own noise generator.
    backend : "numpy", "numba" or None
        ``None`` chooses as :func:`numpyvae.backend.get_backend` does.
    init : str
        Weight initialiser (see :mod:`numpyvae.init`).
    gaussian_var : float or "learned"
        The Gaussian decoder's fixed variance, or a learned per-pixel one.
    free_bits : float
        Nats per latent dimension below which the KL is not penalised.

    Examples
    --------
    >>> import numpy as np, numpyvae
    >>> model = numpyvae.VAE(784, hidden_dims=(400,), latent_dim=20)
    >>> x = np.random.default_rng(0).random((128, 784), dtype=np.float32)
    >>> result = model.loss_and_grads(x)
    >>> sorted(result.grads) == sorted(model.params)
    True
    """

    kind = "vae"
    latent_widths = 2

    def encode(self, x):
        """The posterior's parameters: ``(mu, logvar)``, each (B, latent_dim)."""
        h = self.encoder.forward(self._check_data(x))
        L = self.latent_dim
        return h[:, :L].copy(), h[:, L:].copy()

    def embed(self, x):
        """A deterministic code for each input: the posterior mean (B, latent_dim)."""
        return self.encode(x)[0]

    def reconstruct(self, x, sample=False, rng=None):
        """Decode the posterior mean of each input (or a posterior sample if ``sample``)."""
        mu, logvar = self.encode(x)
        if sample:
            rng = self.rng if rng is None else rng
            eps = rng.standard_normal(mu.shape).astype(self.dtype)
            mu = self.backend.reparameterize(mu, logvar, eps)
        return self.decode(mu)

    def _latent_forward(self, h, eps, rng):
        B, L = h.shape[0], self.latent_dim
        if eps is None:
            rng = self.rng if rng is None else rng
            eps = rng.standard_normal(out=self._buf("eps", (B, L)), dtype=self.dtype)
        else:
            eps = np.asarray(eps, dtype=self.dtype)
            if eps.shape != (B, L):
                raise ValueError(f"VAE: expected eps of shape ({B}, {L}), got {eps.shape}")
        self._eps = eps
        return self.backend.latent_forward(h, eps, z=self._buf("z", (B, L)),
                                           kl=self._buf("kl", (B,)))

    def _latent_backward(self, dz, h, kl, beta):
        B, L = h.shape[0], self.latent_dim
        dkl = self._buf("dkl", (B,))
        dkl.fill(beta / B)
        dh = self.backend.latent_backward(dz, h, self._eps, dkl, self.free_bits,
                                          dh=self._buf("dh", h.shape))
        self.encoder.backward(dh)
        if self.free_bits > 0:
            per_dim = self.backend.kl_per_dimension(h[:, :L], h[:, L:])
            return float(np.maximum(per_dim, self.free_bits).sum())
        return float(kl.mean())

    def elbo_terms(self, x, eps=None, rng=None):
        """Per-example ``(recon, kl)`` for one draw of the noise, each shape (B,)."""
        x = self._check_data(x)
        h = self.encoder.forward(x)
        z, kl = self._latent_forward(h, eps, rng)
        kl = kl.copy()
        out = self.decoder.forward(z)
        if self.likelihood == "bernoulli":
            nll = self.backend.bernoulli_nll(out, x)
        else:
            nll = self.backend.gaussian_nll(out, self._obs_logvar(), x)
        return nll.copy(), kl


class Autoencoder(_EncoderDecoder):
    """A plain, deterministic autoencoder with the same layers as :class:`VAE`.

    The code is ``z = encoder(x)`` (width ``latent_dim``), and the loss is
    the reconstruction term alone. Nothing pulls the codes toward ``N(0, I)``,
    so decoding draws from that prior gives poor images: the comparison a
    VAE course makes. Takes the same arguments as :class:`VAE`.
    """

    kind = "autoencoder"
    latent_widths = 1

    def encode(self, x):
        """The code of each input, (B, latent_dim)."""
        return self.encoder.forward(self._check_data(x)).copy()

    embed = encode

    def reconstruct(self, x):
        """Decode the code of each input."""
        return self.decode(self.encode(x))

    def _latent_forward(self, h, eps, rng):
        return h, None

    def _latent_backward(self, dz, h, kl, beta):
        self.encoder.backward(dz)
        return 0.0

    def elbo_terms(self, x, eps=None, rng=None):
        """Per-example ``(recon, kl)``; the KL of a deterministic code is reported as 0."""
        x = self._check_data(x)
        z = self.encode(x)
        return self.reconstruction_nll(z, x), np.zeros(x.shape[0], dtype=self.dtype)


MODEL_KINDS = {"vae": VAE, "autoencoder": Autoencoder}

def build_model(config: dict, backend=None):
    """Construct a model from a :meth:`config` dict."""
    config = dict(config)
    config.pop("format", None)
    kind = config.pop("kind", "vae")
    if kind not in MODEL_KINDS:
        raise ModelFileError(f"unknown model kind {kind!r}; expected one of {sorted(MODEL_KINDS)}")
    return MODEL_KINDS[kind](**config, backend=backend)


def load(path, backend=None):
    """Load a model written by :meth:`VAE.save` (or :meth:`Autoencoder.save`).

    Raises :class:`ModelFileError` (a ``ValueError``) for a missing, corrupt
    or mismatched file; the message names the file and what was wrong.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    with open(path, "rb") as f:
        if f.read(6) == b"\x93NUMPY":
            raise ModelFileError(f"{path}: holds a single .npy array, not a model written by "
                                 "model.save() (an .npz archive)")
    arrays = read_npz(path, ModelFileError, "numpyvae model file")
    if "__config__" not in arrays:
        raise ModelFileError(f"{path}: no model config inside; was it written by model.save()?")
    try:
        config = json.load(io.BytesIO(arrays.pop("__config__").tobytes()))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{path}: the model config is corrupt ({exc})") from exc
    if not isinstance(config, dict):
        raise ModelFileError(f"{path}: the model config is not a JSON object")
    if config.get("format") != FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: model file format {config.get('format')!r}, expected {FORMAT_VERSION}"
        )
    try:
        model = build_model(config, backend=backend)
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: the model config is invalid ({exc})") from exc
    model.load_weights(arrays, source=str(path))
    return model
