"""The conditional VAE: q(z | x, y) and p(x | z, y) for a class label y (Sohn et al., 2015).

The label enters both networks as a one-hot vector :math:`e_y \\in \\{0, 1\\}^C`:

* the **encoder** sees ``[x | e_y]``. For a flat input ``(B, D)`` that is a
  concatenation of columns, ``(B, D + C)``; for an image input
  ``(B, c, H, W)`` (a convolutional encoder) the one-hot vector is broadcast
  to ``C`` constant feature maps and concatenated as channels,
  ``(B, c + C, H, W)``, so the first convolution sees the label at every
  position (the usual way of conditioning a convolutional network on a
  class);
* the **decoder** sees ``[z | e_y]``, ``(B, L + C)``, whatever its
  architecture (a convolutional decoder starts with a ``Linear`` from the
  code).

A convolutional encoder that takes rows of pixels (as the command line's
models do) gets ``[x | e_y]`` columns and turns them into the same image and
label channels with its first layer, :class:`~numpyvae.layers.LabelChannels`.
:func:`numpyvae.convnet.conv_cvae` builds the conditional convolutional VAE
of ``numpyvae train --arch conv --conditional`` either way.

The loss is the VAE's with everything conditioned on ``y``,

.. math:: \\mathcal L(x, y) = -\\log p(x \\mid z, y)
          + \\beta\\, \\mathrm{KL}\\big(q(z \\mid x, y) \\,\\|\\, \\mathcal N(0, I)\\big),
          \\qquad z = \\mu(x, y) + \\sigma(x, y) \\odot \\varepsilon .

**Gradients.** The label is data, not a parameter: it gets no gradient.
The encoder's first layer skips its input gradient anyway (nothing is
upstream of the data); the decoder's input gradient
:math:`\\partial \\mathcal L / \\partial [z \\mid e_y]` is computed, because
its first ``L`` columns are :math:`\\partial \\mathcal L / \\partial z`, which
continues into the posterior and the encoder, and its last ``C`` columns,
the label's part, are dropped. A concatenation's backward is exactly this
split: :math:`\\partial [a \\mid b] / \\partial a` selects ``a``'s columns.
Everything else is the VAE's backward, unchanged.

What does not live here: the unconditional model (:mod:`numpyvae.model`),
the layers (:mod:`numpyvae.layers`).
"""

from __future__ import annotations

import numpy as np

from .backend import get_backend
from .layers import append_label_maps, as_float_dtype, mlp
from .model import MODEL_KINDS, VAE, LossResult, positive_int

__all__ = ["CVAE", "one_hot"]


def one_hot(labels, num_classes, dtype=np.float64) -> np.ndarray:
    """``labels`` (B,) integers in ``[0, num_classes)`` -> (B, num_classes) one-hot rows."""
    labels = np.asarray(labels)
    whole = labels.dtype.kind in "iu" or (labels.dtype.kind == "f" and bool(
        np.all(np.isfinite(labels) & (labels == np.round(labels)))))
    if labels.ndim != 1 or not whole:
        raise ValueError(f"labels must be a 1-D array of class indices (integers), got shape "
                         f"{labels.shape} and dtype {labels.dtype}")
    # The range is checked before the cast: a float beyond int64 (1e20) keeps its value.
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got values from "
                         f"{labels.min()} to {labels.max()}")
    labels = labels.astype(np.int64)
    out = np.zeros((len(labels), num_classes), dtype=dtype)
    out[np.arange(len(labels)), labels] = 1
    return out


def batch_labels(labels, batch, who="", per="row") -> np.ndarray:
    """``labels`` as (batch,) class indices: one int labels every row; a wrong count is refused.

    ``who`` starts the error message (the caller's name), ``per`` names what
    each label belongs to.
    """
    labels = np.asarray(labels)
    if labels.ndim == 0:
        labels = np.full(batch, labels)
    if labels.shape != (batch,):
        raise ValueError(f"{who}expected {batch} labels (one per {per}), got shape "
                         f"{labels.shape}")
    return labels


class CVAE(VAE):
    """A conditional VAE: the encoder and the decoder both see the one-hot label.

    Two ways to build one, as :class:`~numpyvae.VAE`:

    ``CVAE(input_dim, num_classes=10, hidden_dims=(400,), latent_dim=20, ...)``
        MLPs: the encoder maps ``D + C`` inputs to ``2L``, the decoder
        ``L + C`` inputs to ``D``. The other arguments are the VAE's.

    ``CVAE(encoder, decoder, num_classes=10, latent_dim=20, input_shape=..., ...)``
        Any networks: the encoder takes the conditioned input (``(D + C,)``
        for flat data, ``(c + C, H, W)`` for images), the decoder ``(L + C,)``.

    Every method that runs a network takes the labels, an int array (B,):
    ``loss_and_grads(x, labels)``, ``encode(x, labels)``,
    ``decode(z, labels)``, ``sample(n, labels=...)``, ...

    Examples
    --------
    >>> import numpy as np, numpyvae
    >>> model = numpyvae.CVAE(784, num_classes=10, hidden_dims=(64,), latent_dim=8)
    >>> sevens = model.sample(5, labels=7)               # five draws of class 7
    >>> sevens.shape
    (5, 784)
    """

    kind = "cvae"

    def __init__(self, *args, num_classes, **kwargs):
        self.num_classes = positive_int(num_classes, "num_classes")
        super().__init__(*args, **kwargs)
        if self._options is not None:
            self._options["num_classes"] = self.num_classes

    # ------------------------------------------------------------------ building

    def _from_sizes(self, input_dim, hidden_dims=(400,), latent_dim=20, likelihood="bernoulli",
                    activation="relu", dtype="float32", seed=0, *, backend=None,
                    init="default", gaussian_var=0.01, free_bits=0.0):
        """MLPs with room for the label: ``D + C -> ... -> 2L`` and ``L + C -> ... -> D``."""
        input_dim = positive_int(input_dim, "input_dim")
        latent_dim = positive_int(latent_dim, "latent_dim")
        if isinstance(hidden_dims, int):
            hidden_dims = (hidden_dims,)
        hidden_dims = tuple(positive_int(h, "each of hidden_dims") for h in hidden_dims)
        C = self.num_classes
        backend = get_backend(backend)
        rng = np.random.default_rng(seed)
        common = dict(init=init, rng=rng, dtype=as_float_dtype(dtype), backend=backend)
        encoder = mlp((input_dim + C, *hidden_dims, 2 * latent_dim), activation, **common)
        decoder = mlp((latent_dim + C, *hidden_dims[::-1], input_dim), activation, **common)
        self._from_networks(encoder, decoder, latent_dim=latent_dim, likelihood=likelihood,
                            gaussian_var=gaussian_var, free_bits=free_bits,
                            input_shape=(input_dim,), seed=seed, backend=backend)
        self.rng = rng  # as the VAE: one generator draws the weights, then the noise
        self.hidden_dims, self.activation, self.init = hidden_dims, activation, init
        self.gaussian_var = gaussian_var
        self._options = {
            "kind": self.kind, "input_dim": input_dim, "num_classes": C,
            "hidden_dims": list(hidden_dims), "latent_dim": latent_dim,
            "likelihood": likelihood, "activation": activation,
            "dtype": as_float_dtype(dtype).name, "gaussian_var": gaussian_var,
            "init": init if isinstance(init, str) else "default",
        }  # and free_bits: see config()

    def _from_networks(self, encoder, decoder, *, latent_dim, input_shape=None, **kwargs):
        if input_shape is None:  # the decoder's output shape, from a conditioned code
            input_shape = self._output_shape("decoder", decoder,
                                             (int(latent_dim) + self.num_classes,))
        super()._from_networks(encoder, decoder, latent_dim=latent_dim,
                               input_shape=input_shape, **kwargs)

    def conditioned_input_shape(self, input_shape=None) -> tuple:
        """The encoder's input shape: ``(D + C,)`` for flat data, ``(c + C, H, W)`` for images."""
        shape = tuple(self.input_shape if input_shape is None else input_shape)
        return (shape[0] + self.num_classes, *shape[1:])

    def _check_shapes(self):
        name, L, C = type(self).__name__, self.latent_dim, self.num_classes
        enc_in = self.conditioned_input_shape()
        try:
            got = self._output_shape("encoder", self.encoder, enc_in)
        except ValueError as exc:
            raise ValueError(f"{name}: the encoder must take the conditioned input of shape "
                             f"{enc_in}, the data {self.input_shape} with {C} one-hot label "
                             f"{'columns' if len(enc_in) == 1 else 'channels'} ({exc})") from None
        if got != (2 * L,):
            raise ValueError(f"{name}: the encoder maps conditioned inputs of shape {enc_in} "
                             f"to {got}, expected ({2 * L},): [mu | logvar] for latent_dim {L}")
        try:
            got = self._output_shape("decoder", self.decoder, (L + C,))
        except ValueError as exc:
            raise ValueError(f"{name}: the decoder must take the conditioned code of shape "
                             f"({L + C},), latent_dim {L} plus {C} one-hot label columns "
                             f"({exc})") from None
        if got != self.input_shape:
            raise ValueError(f"{name}: the decoder maps conditioned codes of shape ({L + C},) "
                             f"to {got}, expected the input shape {self.input_shape}")

    def architecture(self) -> dict:
        return {**super().architecture(), "num_classes": self.num_classes}

    # ------------------------------------------------------------------ conditioning

    def one_hot(self, labels, batch) -> np.ndarray:
        """The labels' one-hot rows (batch, C), in the model's dtype; an int labels all rows."""
        labels = batch_labels(labels, batch, f"{type(self).__name__}: ", "row")
        return one_hot(labels, self.num_classes, self.dtype)

    def encoder_input(self, x, labels=None) -> np.ndarray:
        """``[x | e_y]``: columns for flat ``x``, constant channels for images (B, c, H, W)."""
        y = self.one_hot(self._labels(labels), x.shape[0])
        if x.ndim == 2:
            return np.concatenate([x, y], axis=1)
        return append_label_maps(x, y)

    def decoder_input(self, z, labels=None) -> np.ndarray:
        """``[z | e_y]``, shape (B, L + C)."""
        return np.concatenate([z, self.one_hot(self._labels(labels), z.shape[0])], axis=1)

    def _labels(self, labels):
        if labels is None:
            raise ValueError(f"{type(self).__name__}: this model is conditional; pass labels=")
        return labels

    # ------------------------------------------------------------------ the loss
    # The VAE's, unchanged: it reads the networks' inputs through encoder_input and
    # decoder_input and drops the label's columns of the decoder's input gradient.
    # These methods only put ``labels`` second in the argument list and require it.

    def loss_and_grads(self, x, labels=None, eps=None, beta=1.0, rng=None) -> LossResult:
        """Loss of a labelled batch and its gradient for every parameter.

        Parameters
        ----------
        x : ndarray, shape ``(B, *input_shape)``
        labels : int array, shape (B,)
        eps, beta, rng : as :meth:`VAE.loss_and_grads`, which computes it.
        """
        return super().loss_and_grads(x, eps, beta, rng, labels=self._labels(labels))

    def elbo_terms(self, x, labels=None, eps=None, rng=None):
        """Per-example ``(recon, kl)`` for one draw of the noise, each (B,)."""
        return super().elbo_terms(x, eps, rng, labels=self._labels(labels))

    # ------------------------------------------------------------------ using it

    def encode(self, x, labels=None):
        """``(mu, logvar)`` of ``q(z | x, y)``, each (B, latent_dim)."""
        return super().encode(x, self._labels(labels))

    def embed(self, x, labels=None):
        return self.encode(x, labels)[0]

    def decode(self, z, labels=None):
        """The mean of ``p(x | z, y)``: (B, L) codes and (B,) labels (or one int for all)."""
        return super().decode(z, self._labels(labels))

    def reconstruction_nll(self, z, x, labels=None):
        """``-log p(x | z, y)`` per example, (B,)."""
        return super().reconstruction_nll(z, x, self._labels(labels))

    def reconstruct(self, x, labels=None, sample=False, rng=None):
        """Decode the posterior mean (or a sample) of each input, with its own label."""
        mu, logvar = self.encode(x, labels)
        if sample:
            rng = self.rng if rng is None else rng
            eps = rng.standard_normal(mu.shape).astype(self.dtype)
            mu = self.posterior.sample(mu, logvar, eps)
        return self.decode(mu, labels)

    def sample(self, n, labels=None, rng=None):
        """Decode ``n`` prior draws with the given labels: an int (all rows), or (n,) ints.

        Without labels, the classes take turns: ``0, 1, ..., C-1, 0, ...``.
        """
        n = positive_int(n, "n")
        rng = self.rng if rng is None else rng
        if labels is None:
            labels = np.arange(n) % self.num_classes
        z = rng.standard_normal((n, self.latent_dim)).astype(self.dtype)
        return self.decode(z, labels)

    def transfer(self, x, labels, targets=None):
        """Encode each input with its own label, decode with every target class.

        Returns ``(B, len(targets), *input_shape)``: row ``b``, column ``t`` is
        input ``b``'s code (its "style") drawn as class ``targets[t]``.
        """
        x = self.check_input(x)
        targets = np.arange(self.num_classes) if targets is None else np.asarray(targets)
        mu = self.embed(x, labels)
        B, T = len(mu), len(targets)
        z = np.repeat(mu, T, axis=0)
        images = self.decode(z, np.tile(targets, B))
        return images.reshape(B, T, *images.shape[1:])

    def interpolate(self, x_a, x_b, steps=10, labels=None):
        """Decode ``steps`` points between the codes of ``x_a`` and ``x_b`` (labels: a pair).

        The codes are encoded with their own labels; the decoder's label moves
        with the code, from ``x_a``'s one-hot vector to ``x_b``'s.
        """
        steps = positive_int(steps, "steps")
        pair_labels = np.asarray(self._labels(labels)).reshape(-1)
        if pair_labels.size == 1:
            pair_labels = np.repeat(pair_labels, 2)
        one = [np.asarray(a) for a in (x_a, x_b)]
        pair = np.concatenate([a[None] if a.shape == self.input_shape else a for a in one])
        codes = self.embed(self.check_input(pair, "x_a/x_b"), pair_labels)
        y = self.one_hot(pair_labels, 2)
        t = np.linspace(0.0, 1.0, steps, dtype=self.dtype)[:, None]
        z = (1 - t) * codes[0] + t * codes[1]
        cond = (1 - t) * y[0] + t * y[1]
        out = self.decoder.forward(np.concatenate([z, cond], axis=1).astype(self.dtype))
        return self.likelihood.mean(out)

    def __repr__(self):
        return super().__repr__().replace(f"{type(self).__name__}(",
                                          f"{type(self).__name__}(num_classes="
                                          f"{self.num_classes}, ", 1)


MODEL_KINDS["cvae"] = CVAE
