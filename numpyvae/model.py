"""The variational autoencoder and the plain autoencoder, built from any encoder and decoder.

A model is four named objects and the loss that ties them together:

* ``encoder`` — a network (:mod:`numpyvae.layers`) from the data ``x``,
  shape ``(B, *input_shape)``, to ``h``; for the VAE ``h`` has width
  ``2 * latent_dim``: ``[mu | logvar]``;
* ``posterior`` (VAE only) — :class:`numpyvae.distributions.DiagonalGaussian`:
  the sample ``z = mu + sigma * eps`` and ``KL(q(z|x) || N(0, I))``;
* ``decoder`` — a network from ``z``, shape ``(B, latent_dim)``, to the
  likelihood's parameters ``out``, shape ``(B, *input_shape)``;
* ``likelihood`` — :mod:`numpyvae.distributions`: ``-log p(x | z)`` from
  ``out`` (Bernoulli logits, or a Gaussian mean with a fixed or learned variance).

The VAE's loss, in nats per example (summed over an example's values and
latent dimensions, averaged over the batch), is

.. math::

    \\mathcal L = \\underbrace{-\\log p(x \\mid z)}_{\\text{recon}}
        + \\beta\\, \\mathrm{KL}\\big(q(z \\mid x) \\,\\|\\, \\mathcal N(0, I)\\big);

the plain autoencoder uses ``z = encoder(x)`` and the reconstruction term alone.

Two ways to build one::

    VAE(784, hidden_dims=(400,), latent_dim=20)           # MLPs, as the CLI does
    VAE(encoder, decoder, latent_dim=20, likelihood=...)  # any networks of layers

What does not live here: the math of each step (:mod:`numpyvae.distributions`,
:mod:`numpyvae.layers`, :mod:`numpyvae.ops`), the model file's
format (:mod:`numpyvae.modelfile`), evaluation beyond one batch
(:mod:`numpyvae.evaluate`), training loops (:mod:`numpyvae.app.train`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np

from .backend import get_backend
from .distributions import (
    DiagonalGaussian,
    Likelihood,
    make_likelihood,
)
from .layers import Layer, Sequential, as_float_dtype, mlp, pack_parameters
from .modelfile import ModelFileError, write_model_file
from .ops import ACTIVATIONS

LIKELIHOODS = ("bernoulli", "gaussian")


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


def positive_int(value, what):
    try:
        ok = int(value) == value and int(value) >= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def _shape_text(shape):
    return "(batch, " + ", ".join(str(d) for d in shape) + ")"


def _leaves(network):
    """The layers of a network that do the work (Sequentials opened up), in order."""
    return [layer for layer in network.layers() if not isinstance(layer, Sequential)]


class _EncoderDecoder:
    """What :class:`VAE` and :class:`Autoencoder` share: building, decoding, saving.

    Subclasses set ``kind`` and ``latent_widths`` (the encoder's output width
    is ``latent_widths * latent_dim``) and write their own ``loss_and_grads``.
    """

    kind = ""
    latent_widths = 1

    def __init__(self, *args, **kwargs):
        if (args and isinstance(args[0], Layer)) or "encoder" in kwargs:
            self._from_networks(*args, **kwargs)
        else:
            self._from_sizes(*args, **kwargs)

    # ------------------------------------------------------------------ building

    def _from_sizes(self, input_dim, hidden_dims=(400,), latent_dim=20, likelihood="bernoulli",
                    activation="relu", dtype="float32", seed=0, *, backend=None,
                    init="default", gaussian_var=0.01, free_bits=0.0):
        """The convenience form: an MLP encoder and a mirrored MLP decoder."""
        input_dim = positive_int(input_dim, "input_dim")
        if isinstance(hidden_dims, int):
            hidden_dims = (hidden_dims,)
        hidden_dims = tuple(positive_int(h, "each of hidden_dims") for h in hidden_dims)
        latent_dim = positive_int(latent_dim, "latent_dim")
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {likelihood!r}; expected one of {LIKELIHOODS}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; expected one of {ACTIVATIONS}")
        dtype = as_float_dtype(dtype)
        width = self.latent_widths * latent_dim
        backend = get_backend(backend)
        likelihood_object = make_likelihood(likelihood, gaussian_var, backend=backend)
        rng = np.random.default_rng(seed)  # draws the weights, then the model's noise

        common = dict(init=init, rng=rng, dtype=dtype, backend=backend)
        encoder = mlp((input_dim, *hidden_dims, width), activation, **common)
        decoder = mlp((latent_dim, *hidden_dims[::-1], input_dim), activation, **common)
        self._assemble(encoder, decoder, likelihood_object, latent_dim, free_bits,
                       (input_dim,), rng, backend, seed)
        self.hidden_dims, self.activation, self.init = hidden_dims, activation, init
        self.gaussian_var = gaussian_var
        self._options = {
            "kind": self.kind, "input_dim": input_dim, "hidden_dims": list(hidden_dims),
            "latent_dim": latent_dim, "likelihood": likelihood, "activation": activation,
            "dtype": dtype.name, "gaussian_var": gaussian_var,
            "init": init if isinstance(init, str) else "default",
        }  # and free_bits, which may change: see config()

    def _from_networks(self, encoder, decoder, *, latent_dim, likelihood="bernoulli",
                       gaussian_var=0.01, free_bits=0.0, input_shape=None, seed=0,
                       backend=None):
        """Any networks: ``encoder`` (B, *input_shape) -> (B, latent_widths * L),
        ``decoder`` (B, L) -> (B, *input_shape)."""
        name = type(self).__name__
        for what, net in (("encoder", encoder), ("decoder", decoder)):
            if not isinstance(net, Layer):
                raise ValueError(f"{name}: the {what} must be a Layer (e.g. a Sequential), "
                                 f"got {type(net).__name__}")
        latent_dim = positive_int(latent_dim, "latent_dim")
        backend = get_backend(encoder.backend if backend is None else backend)
        likelihood = make_likelihood(likelihood, gaussian_var, backend=backend)
        if input_shape is None:
            input_shape = self._output_shape("decoder", decoder, (latent_dim,))
        elif isinstance(input_shape, (int, np.integer)):
            input_shape = (input_shape,)
        input_shape = tuple(positive_int(d, "each of input_shape") for d in input_shape)
        self._assemble(encoder, decoder, likelihood, latent_dim, free_bits, input_shape,
                       np.random.default_rng(seed), backend, seed)
        self.hidden_dims = self.activation = self.init = None
        self.gaussian_var = getattr(likelihood, "var", None)
        self._options = None

    def _assemble(self, encoder, decoder, likelihood, latent_dim, free_bits, input_shape, rng,
                  backend, seed):
        """Check that the networks fit, then own them: one flat parameter buffer, one backend."""
        self.backend = backend
        self.posterior = None
        self.free_bits = free_bits
        if not isinstance(likelihood, Likelihood):
            raise ValueError(f"likelihood must be a Likelihood, got {type(likelihood).__name__}")
        self.encoder, self.decoder, self.likelihood = encoder, decoder, likelihood
        self.latent_dim = latent_dim
        self.input_shape = input_shape
        self.input_dim = math.prod(input_shape)
        self.rng, self.seed = rng, seed
        self._check_shapes()
        self.dtype = self._parameter_dtype()
        self.posterior = self._make_posterior()
        self.likelihood.setup(input_shape, self.dtype)
        self.set_backend(backend)

        first = _leaves(encoder)[:1]
        if first and hasattr(first[0], "skip_input_grad"):
            first[0].skip_input_grad = True  # nothing upstream of the data needs dx

        # The likelihood's parameters are the decoder's distribution's: "decoder.logvar".
        slots = [*encoder.named_slots("encoder."), *decoder.named_slots("decoder."),
                 *likelihood.named_slots("decoder.")]
        names = [name for name, _, _ in slots]
        if len(set(names)) != len(names):
            raise ValueError(f"{type(self).__name__}: parameter names collide: {names}")
        self.flat_params, self.flat_grads = pack_parameters(slots, self.dtype)
        self.params = MappingProxyType({name: owner.params[k] for name, owner, k in slots})
        self.grads = MappingProxyType({name: owner.grads[k] for name, owner, k in slots})

    @staticmethod
    def _output_shape(what, network, shape):
        try:
            return tuple(network.output_shape(tuple(shape)))
        except NotImplementedError as exc:
            raise ValueError(f"cannot check the {what}'s shapes: {exc}") from None
        except ValueError as exc:
            raise ValueError(f"the {what} does not take inputs of shape {tuple(shape)}: "
                             f"{exc}") from None

    def _check_shapes(self):
        name, L = type(self).__name__, self.latent_dim
        width = self.latent_widths * L
        got = self._output_shape("encoder", self.encoder, self.input_shape)
        if got != (width,):
            what = f"[mu | logvar] for latent_dim {L}" if self.latent_widths == 2 else \
                f"the code, latent_dim {L}"
            raise ValueError(f"{name}: the encoder maps inputs of shape {self.input_shape} to "
                             f"{got}, expected ({width},): {what}")
        got = self._output_shape("decoder", self.decoder, (L,))
        if got != self.input_shape:
            raise ValueError(f"{name}: the decoder maps codes of shape ({L},) to {got}, "
                             f"expected the input shape {self.input_shape}")

    def _parameter_dtype(self):
        dtypes = {p.dtype for net in (self.encoder, self.decoder) for p in net.params.values()}
        if not dtypes:
            raise ValueError(f"{type(self).__name__}: the networks have no parameters")
        if len(dtypes) > 1:
            raise ValueError(f"{type(self).__name__}: the networks mix dtypes "
                             f"{sorted(d.name for d in dtypes)}; build every layer with one")
        return as_float_dtype(dtypes.pop())

    def _make_posterior(self):
        """The posterior over the code, or None for a deterministic one."""
        return None

    @property
    def free_bits(self) -> float:
        """Nats per latent dimension below which the KL is not penalised (the posterior's)."""
        return self._free_bits if self.posterior is None else self.posterior.free_bits

    @free_bits.setter
    def free_bits(self, value):
        if not (isinstance(value, (int, float)) and value >= 0):
            raise ValueError(f"free_bits must be a number >= 0, got {value!r}")
        self._free_bits = float(value)
        if self.posterior is not None:
            self.posterior.free_bits = float(value)

    # ------------------------------------------------------------------ plumbing

    def _parts(self):
        """Every object that runs on a backend: layers, posterior, likelihood."""
        yield from self.encoder.layers()
        yield from self.decoder.layers()
        if self.posterior is not None:
            yield self.posterior
        yield self.likelihood

    def set_backend(self, backend) -> None:
        """Switch every layer and op of this model to another backend."""
        self.backend = get_backend(backend)
        self.encoder.set_backend(self.backend)
        self.decoder.set_backend(self.backend)
        self.likelihood.set_backend(self.backend)
        if self.posterior is not None:
            self.posterior.set_backend(self.backend)

    def zero_grad(self) -> None:
        """Set every gradient to zero."""
        self.flat_grads.fill(0)

    @property
    def num_params(self) -> int:
        return self.flat_params.size

    def describe(self) -> dict:
        """What this model is, in plain terms, for a backend that runs it its own way.

        A fast path (:func:`numpyvae.fast.step.train_step`) reads this
        instead of looking at the model's classes; what it does not
        recognise, it leaves to ``loss_and_grads``. Returns a dict:

        ``kind``
            ``"vae"``, ``"autoencoder"``, ... (:attr:`kind`). A subclass whose
            loss is not its parent's has a kind of its own (``"cvae"``).
        ``dtype``, ``latent_dim``, ``input_shape``, ``free_bits``
            as the attributes of those names.
        ``posterior``
            the posterior's class name (``"DiagonalGaussian"``), or None.
        ``likelihood``
            its :meth:`~numpyvae.distributions.Likelihood.spec` with ``type``
            the class's own name, plus ``logvar`` (a Gaussian's log-variance:
            a scalar, or the learned array) and ``offsets`` (below).
        ``encoder``, ``decoder``
            the layers that do the work, Sequentials opened up, in order:
            ``{"type": class name, "activation", "alpha" (None where the
            layer has none), "params": {key: array}, "offsets": {key: int}}``.
        ``flat_params``, ``flat_grads``
            the buffers every parameter and gradient is a view of.

        An ``offsets`` entry is where that parameter starts in ``flat_params``
        and its gradient in ``flat_grads`` (the same place in both), in
        elements; None when the array is not a contiguous view there (a
        parameter replaced after the model was built).
        """
        flat, flat_grads = self.flat_params, self.flat_grads

        def offset(param, grad):
            where = []
            for a, buffer in ((param, flat), (grad, flat_grads)):
                if not (isinstance(a, np.ndarray) and a.dtype == buffer.dtype
                        and a.flags.c_contiguous):
                    return None
                start = a.__array_interface__["data"][0] - buffer.__array_interface__["data"][0]
                if start < 0 or start % a.itemsize or start + a.nbytes > buffer.nbytes:
                    return None
                where.append(start // a.itemsize)
            return where[0] if where[0] == where[1] else None

        def part(obj):
            return {"params": dict(obj.params),
                    "offsets": {k: offset(obj.params[k], obj.grads.get(k)) for k in obj.params}}

        def layers(network):
            return [{"type": type(layer).__name__,
                     "activation": getattr(layer, "activation", None),
                     "alpha": getattr(layer, "alpha", None), **part(layer)}
                    for layer in _leaves(network)]

        lik = self.likelihood
        logvar = getattr(lik, "logvar", None)
        return {
            "kind": self.kind, "dtype": self.dtype, "latent_dim": self.latent_dim,
            "input_shape": self.input_shape, "free_bits": self.free_bits,
            "posterior": None if self.posterior is None else type(self.posterior).__name__,
            "likelihood": {**lik.spec(), "type": type(lik).__name__,
                           "logvar": logvar() if callable(logvar) else None, **part(lik)},
            "encoder": layers(self.encoder), "decoder": layers(self.decoder),
            "flat_params": flat, "flat_grads": flat_grads,
        }

    def check_input(self, x, what="x") -> np.ndarray:
        """``x`` as a batch this model takes: shape ``(B, *input_shape)``, the model's dtype.

        Raises ``ValueError`` naming the shape expected and the one given.
        """
        x = np.asarray(x)
        if x.ndim != 1 + len(self.input_shape) or x.shape[1:] != self.input_shape:
            raise ValueError(f"{type(self).__name__}: expected {what} of shape "
                             f"{_shape_text(self.input_shape)}, got {x.shape}")
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

    # ------------------------------------------------------------------ what the networks read

    def encoder_input(self, x, labels=None) -> np.ndarray:
        """What the encoder reads for the inputs ``x``: ``x`` itself.

        The hook through which a conditional model (:class:`~numpyvae.CVAE`)
        adds the label; the VAE's methods read the networks' inputs through
        it and :meth:`decoder_input`, so the loss and its gradient are
        written once for both.
        """
        self._no_labels(labels)
        return x

    def decoder_input(self, z, labels=None) -> np.ndarray:
        """What the decoder reads for the codes ``z`` (B, L): ``z`` itself.

        As :meth:`encoder_input`, a hook for a conditional model.

        Whatever the hook appends after ``z``'s ``L`` columns is data, not a
        parameter: the backward keeps the first ``L`` columns of the
        decoder's input gradient, :math:`\\partial \\mathcal L / \\partial z`,
        and drops the rest (a concatenation's backward selects each part's columns).
        """
        self._no_labels(labels)
        return z

    def _no_labels(self, labels):
        if labels is not None:
            raise ValueError(f"{type(self).__name__} is not conditional: labels= is for a "
                             f"conditional model (CVAE)")

    # ------------------------------------------------------------------ decoding

    def reconstruction_nll(self, z, x, labels=None) -> np.ndarray:
        """``-log p(x | z)`` per example, shape (B,), for latent codes ``z`` (B, L)."""
        z, x = self._check_latent(z), self.check_input(x)
        if z.shape[0] != x.shape[0]:
            # A single x would otherwise broadcast silently against every z.
            raise ValueError(f"{type(self).__name__}: z has {z.shape[0]} rows but x has "
                             f"{x.shape[0]}; expected one x per z")
        return self.likelihood.nll(self.decoder.forward(self.decoder_input(z, labels)), x)

    def decode(self, z, labels=None) -> np.ndarray:
        """The mean of ``p(x | z)``: pixel probabilities (Bernoulli) or the mean (Gaussian).

        z: (B, latent_dim) -> (B, *input_shape)
        """
        z = self._check_latent(z)
        return self.likelihood.mean(self.decoder.forward(self.decoder_input(z, labels)))

    def sample(self, n, rng=None) -> np.ndarray:
        """Decode ``n`` draws from the prior ``N(0, I)``: shape (n, *input_shape)."""
        rng = self.rng if rng is None else rng
        z = rng.standard_normal((positive_int(n, "n"), self.latent_dim)).astype(self.dtype)
        return self.decode(z)

    def interpolate(self, x_a, x_b, steps=10) -> np.ndarray:
        """Decode ``steps`` points on the line between the codes of ``x_a`` and ``x_b``.

        ``x_a``, ``x_b``: one input each, shape ``input_shape`` or ``(1, *input_shape)``.
        Returns (steps, *input_shape), from ``x_a``'s end to ``x_b``'s.
        """
        steps = positive_int(steps, "steps")
        pair = []
        for what, a in (("x_a", x_a), ("x_b", x_b)):
            a = np.asarray(a)
            if a.shape not in (self.input_shape, (1, *self.input_shape)):
                raise ValueError(f"{type(self).__name__}: expected {what} of shape "
                                 f"{self.input_shape} or (1, ...), got {a.shape}")
            pair.append(a.reshape(1, *self.input_shape))
        pair = np.concatenate(pair)
        codes = self.embed(self.check_input(pair, "x_a/x_b"))
        t = np.linspace(0.0, 1.0, steps, dtype=self.dtype)[:, None]
        return self.decode((1 - t) * codes[0] + t * codes[1])

    # ------------------------------------------------------------------ saving

    def architecture(self) -> dict:
        """What the model is made of, as JSON-able specs: enough to rebuild it (weights aside)."""
        return {
            "kind": self.kind, "input_shape": list(self.input_shape),
            "latent_dim": self.latent_dim, "dtype": self.dtype.name,
            "free_bits": self.free_bits, "likelihood": self.likelihood.spec(),
            "encoder": self.encoder.spec(), "decoder": self.decoder.spec(),
        }

    def config(self) -> dict:
        """The arguments that rebuild this model (weights aside).

        For a model of the convenience form, its constructor's arguments
        (``input_dim``, ``hidden_dims``, ...); otherwise :meth:`architecture`.
        """
        if self._options is None:
            return self.architecture()
        return {**self._options, "free_bits": self.free_bits}

    def save(self, path) -> Path:
        """Write weights and architecture to one ``.npz`` file (no pickle), atomically.

        The format is described in :mod:`numpyvae.modelfile`.
        """
        header = {"architecture": self.architecture()}
        if self._options is not None:
            header["options"] = self.config()
        return write_model_file(path, header, self.params)

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
        if self._options is not None:
            return (f"{type(self).__name__}(input_dim={self.input_dim}, "
                    f"hidden_dims={self.hidden_dims}, latent_dim={self.latent_dim}, "
                    f"likelihood={self.likelihood.name!r}, dtype={self.dtype.name!r}, "
                    f"backend={self.backend.NAME!r})")
        return (f"{type(self).__name__}(input_shape={self.input_shape}, "
                f"latent_dim={self.latent_dim}, likelihood={self.likelihood!r}, "
                f"dtype={self.dtype.name!r}, backend={self.backend.NAME!r}, "
                f"encoder: {len(_leaves(self.encoder))} layers, "
                f"decoder: {len(_leaves(self.decoder))} layers)")


class VAE(_EncoderDecoder):
    """A variational autoencoder with a diagonal Gaussian posterior and a standard-normal prior.

    Two ways to build one::

        VAE(encoder, decoder, *, latent_dim, likelihood="bernoulli", free_bits=0.0,
            input_shape=None, seed=0, backend=None)
        VAE(input_dim, hidden_dims=(400,), latent_dim=20, likelihood="bernoulli",
            activation="relu", dtype="float32", seed=0, *, backend=None, init="default",
            gaussian_var=0.01, free_bits=0.0)

    The first takes any two networks of layers. ``encoder`` maps ``(B, *input_shape)`` to
    ``(B, 2 * latent_dim)`` (``[mu | logvar]``), ``decoder`` maps
    ``(B, latent_dim)`` back to ``(B, *input_shape)``. ``input_shape`` is
    the decoder's output shape unless given; the shapes are checked here
    (``ValueError`` if they do not fit). The model takes the networks
    over: their parameters move into one flat buffer, and they run on
    the model's backend.

    The second builds an MLP encoder with hidden widths ``hidden_dims`` and a
    mirrored MLP decoder.

    Parameters
    ----------
    likelihood : "bernoulli", "gaussian" or a :class:`numpyvae.distributions.Likelihood`
    gaussian_var : float or "learned"
        With ``likelihood="gaussian"``: the fixed variance, or a learned
        per-pixel one (parameter ``decoder.logvar``).
    free_bits : float
        Nats per latent dimension below which the KL is not penalised.
    seed : int
        Seeds the model's own noise generator (and, in the convenience
        form, first the initial weights).
    backend : "numpy", "numba" or None
        ``None`` chooses as :func:`numpyvae.backend.get_backend` does (the
        encoder's backend, in the network form).

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

    def _make_posterior(self):
        return DiagonalGaussian(self.latent_dim, self._free_bits, backend=self.backend)

    def loss_and_grads(self, x, eps=None, beta=1.0, rng=None, *, labels=None) -> LossResult:
        """Loss of a batch and its gradient for every parameter (gradients are reset first).

        Parameters
        ----------
        x : ndarray, shape ``(B, *input_shape)``
        eps : ndarray, shape (B, latent_dim), optional
            The reparameterization noise; drawn from ``rng`` (or the model's
            own generator) when omitted. Pass it to hold the noise fixed.
        beta : float
            Weight of the KL term.
        labels : int array, shape (B,), optional
            For a conditional model only (:class:`~numpyvae.CVAE`): the class
            of each example, which both networks read through
            :meth:`encoder_input` and :meth:`decoder_input`.
        """
        x = self.check_input(x)
        B, L = x.shape[0], self.latent_dim
        eps = self._noise(B, eps, rng)
        self.zero_grad()
        # Forward: q(z|x), a sample z ~ q, p(x|z).
        h = self.encoder.forward(self.encoder_input(x, labels))      # (B, 2L) = [mu | logvar]
        z, kl = self.posterior.forward(h, eps)                        # z = mu + sigma * eps
        out = self.decoder.forward(self.decoder_input(z, labels))     # (B, *input_shape)
        nll, dout = self.likelihood.nll_and_grad(out, x, scale=1.0 / B)  # -log p(x|z), d/dout
        # Backward, in reverse: the loss is mean(nll) + beta * mean(kl).
        dz = self.decoder.backward(dout)                              # d/d(decoder input)
        dz = np.ascontiguousarray(dz[:, :L])                          # d/dz: a label's part dropped
        dh = self.posterior.backward(dz, kl_weight=beta / B)          # through z and the KL
        self.encoder.backward(dh)
        recon, kl_term = float(nll.mean()), self.posterior.kl_objective(kl)
        return LossResult(recon + beta * kl_term, recon, float(kl.mean()), self.grads)

    def _noise(self, B, eps, rng):
        """``eps`` checked, or drawn from ``rng`` (the model's own generator if None)."""
        L = self.latent_dim
        if eps is None:
            rng = self.rng if rng is None else rng
            return rng.standard_normal((B, L), dtype=self.dtype)
        eps = np.asarray(eps, dtype=self.dtype)
        if eps.shape != (B, L):
            raise ValueError(f"{type(self).__name__}: expected eps of shape ({B}, {L}), "
                             f"got {eps.shape}")
        return eps

    def encode(self, x, labels=None):
        """The posterior's parameters: ``(mu, logvar)``, each (B, latent_dim)."""
        h = self.encoder.forward(self.encoder_input(self.check_input(x), labels))
        mu, logvar = self.posterior.split(h)
        return mu.copy(), logvar.copy()

    def embed(self, x):
        """A deterministic code for each input: the posterior mean (B, latent_dim)."""
        return self.encode(x)[0]

    def reconstruct(self, x, sample=False, rng=None):
        """Decode the posterior mean of each input (or a posterior sample if ``sample``)."""
        mu, logvar = self.encode(x)
        if sample:
            rng = self.rng if rng is None else rng
            eps = rng.standard_normal(mu.shape).astype(self.dtype)
            mu = self.posterior.sample(mu, logvar, eps)
        return self.decode(mu)

    def elbo_terms(self, x, eps=None, rng=None, *, labels=None):
        """Per-example ``(recon, kl)`` for one draw of the noise, each shape (B,)."""
        x = self.check_input(x)
        eps = self._noise(x.shape[0], eps, rng)
        z, kl = self.posterior.forward(self.encoder.forward(self.encoder_input(x, labels)), eps)
        out = self.decoder.forward(self.decoder_input(z, labels))
        return self.likelihood.nll(out, x), kl


class Autoencoder(_EncoderDecoder):
    """A plain, deterministic autoencoder: the code is ``z = encoder(x)``, width ``latent_dim``.

    The loss is the reconstruction term alone. Nothing pulls the codes toward
    ``N(0, I)``, so decoding draws from that prior gives poor images: the
    comparison a VAE course makes. Built the same two ways as :class:`VAE`
    (the encoder's output has width ``latent_dim``).
    """

    kind = "autoencoder"
    latent_widths = 1

    def loss_and_grads(self, x, eps=None, beta=1.0, rng=None) -> LossResult:
        """Reconstruction loss of a batch and its gradients (``eps``, ``beta``, ``rng`` unused)."""
        x = self.check_input(x)
        B = x.shape[0]
        self.zero_grad()
        z = self.encoder.forward(x)                                   # (B, L)
        out = self.decoder.forward(z)                                 # (B, *input_shape)
        nll, dout = self.likelihood.nll_and_grad(out, x, scale=1.0 / B)
        self.encoder.backward(self.decoder.backward(dout))
        recon = float(nll.mean())
        return LossResult(recon, recon, 0.0, self.grads)

    def encode(self, x):
        """The code of each input, (B, latent_dim)."""
        return self.encoder.forward(self.check_input(x)).copy()

    embed = encode

    def reconstruct(self, x):
        """Decode the code of each input."""
        return self.decode(self.encode(x))

    def elbo_terms(self, x, eps=None, rng=None):
        """Per-example ``(recon, kl)``; the KL of a deterministic code is reported as 0."""
        x = self.check_input(x)
        z = self.encode(x)
        return self.reconstruction_nll(z, x), np.zeros(x.shape[0], dtype=self.dtype)


#: Model kinds by the name a model file records (``"kind"``). :mod:`numpyvae.cvae`
#: adds ``"cvae"`` when it is imported; :mod:`numpyvae.architecture` imports it, and
#: builds a model of any kind from its description.
MODEL_KINDS = {"vae": VAE, "autoencoder": Autoencoder}


__all__ = ["VAE", "Autoencoder", "LossResult", "MODEL_KINDS"]
