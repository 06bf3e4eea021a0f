"""The convolutional VAE's networks: the encoder and decoder of ``numpyvae train --arch conv``.

For single-channel images of height ``H`` and width ``W`` (both divisible by
4), channels ``(C1, C2)`` and a latent of size ``L``::

    encoder: (B, 1, H, W)
        Conv2d(1 -> C1, k4, s2, p1) ReLU        -> (B, C1, H/2, W/2)
        Conv2d(C1 -> C2, k4, s2, p1) ReLU       -> (B, C2, H/4, W/4)
        Flatten                                 -> (B, C2 H/4 W/4)
        Linear(C2 H/4 W/4 -> 2 L)               -> (B, 2 L) = [mu | logvar]
    decoder: (B, L)
        Linear(L -> C2 H/4 W/4) ReLU
        Reshape(C2, H/4, W/4)
        ConvTranspose2d(C2 -> C1, k4, s2, p1) ReLU  -> (B, C1, H/2, W/2)
        ConvTranspose2d(C1 -> 1, k4, s2, p1)        -> (B, 1, H, W), logits

The conditional VAE (:func:`conv_cvae`, ``numpyvae train --arch conv
--conditional``) has the same networks with room for a one-hot label of
``C`` classes: the encoder's first convolution takes ``1 + C`` channels, the
image and ``C`` constant label maps (``Conv2d(1 + C -> C1, ...)``), and the
decoder's ``Linear`` takes ``[z | e_y]``, ``L + C`` values
(:mod:`numpyvae.cvae` derives why nothing else changes).

A kernel of 4 with stride 2 and padding 1 halves a side exactly,
``(n + 2 - 4) // 2 + 1 = n / 2`` for even ``n``, and the transposed
convolution doubles it back, ``(n - 1) 2 - 2 + 4 = 2 n``. The ReLUs are fused
into the layers before them (``activation="relu"``), as in the MLP.

What does not live here: the layers (:mod:`numpyvae.conv`,
:mod:`numpyvae.layers`), the model around the networks (:mod:`numpyvae.model`)
and their gradient checks (:func:`numpyvae.gradcheck.conv_checks`).
"""

from __future__ import annotations

import numpy as np

from .conv import Conv2d, ConvTranspose2d
from .layers import Flatten, LabelChannels, Linear, Reshape, Sequential

#: The default widths of the two convolutions.
DEFAULT_CHANNELS = (32, 64)


def check_image_shape(image_shape) -> tuple[int, int, int]:
    """Single-channel ``(1, H, W)`` from ``(H, W)`` or ``(1, H, W)``, H and W divisible by 4."""
    shape = tuple(int(s) for s in image_shape)
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3 or shape[0] != 1 or min(shape[1:]) < 4 or any(s % 4 for s in shape[1:]):
        raise ValueError(f"the convolutional VAE takes single-channel images whose height and "
                         f"width are multiples of 4, got shape {tuple(image_shape)}")
    return shape


def conv_networks(image_shape=(28, 28), latent_dim=20, channels=DEFAULT_CHANNELS, *,
                  encoder_width=None, num_classes=0, flat=False, rng=None, dtype="float32",
                  backend=None):
    """The encoder and decoder above, as two :class:`~numpyvae.layers.Sequential`.

    ``encoder_width`` is the encoder's output width: ``2 * latent_dim`` for a
    VAE ([mu | logvar], the default), ``latent_dim`` for an autoencoder.
    ``num_classes`` ``C > 0`` gives the conditional VAE's networks: the
    encoder takes ``(1 + C, H, W)`` (the image and its label maps) and the
    decoder ``(latent_dim + C,)`` (the code and the one-hot label).
    ``flat=True`` adds a ``Reshape(1, H, W)`` in front of the encoder and a
    ``Flatten`` after the decoder, so the networks take and give rows of
    ``H W`` pixels, as the MLP's do (what the command line uses: data sets,
    figures and evaluation all hold images as rows); with ``C > 0`` the
    encoder's rows are ``[x | e_y]``, ``H W + C`` values, and
    :class:`~numpyvae.layers.LabelChannels` takes the ``Reshape``'s place.
    """
    _, H, W = check_image_shape(image_shape)
    c1, c2 = (int(c) for c in channels)
    if min(c1, c2) < 1:
        raise ValueError(f"channels must be positive, got {tuple(channels)}")
    C = num_classes
    if not (isinstance(C, (int, np.integer)) and not isinstance(C, bool) and C >= 0):
        raise ValueError(f"num_classes must be an integer >= 0 (0: not conditional), got "
                         f"{num_classes!r}")
    C = int(C)
    rng = np.random.default_rng() if rng is None else rng
    width = 2 * latent_dim if encoder_width is None else int(encoder_width)
    h, w = H // 4, W // 4
    n_flat = c2 * h * w
    common = dict(rng=rng, dtype=dtype, backend=backend)
    encoder = Sequential(
        Conv2d(1 + C, c1, 4, 2, 1, activation="relu", **common),
        Conv2d(c1, c2, 4, 2, 1, activation="relu", **common),
        Flatten(backend=backend),
        Linear(n_flat, width, **common),
    )
    decoder = Sequential(
        Linear(latent_dim + C, n_flat, "relu", **common),
        Reshape(c2, h, w, backend=backend),
        ConvTranspose2d(c2, c1, 4, 2, 1, activation="relu", **common),
        ConvTranspose2d(c1, 1, 4, 2, 1, **common),
    )
    if flat:
        front = (LabelChannels((1, H, W), C, backend=backend) if C else
                 Reshape(1, H, W, backend=backend))
        encoder = Sequential(front, *encoder.children)
        decoder = Sequential(*decoder.children, Flatten(backend=backend))
    return encoder, decoder


def conv_vae(image_shape=(28, 28), latent_dim=20, channels=DEFAULT_CHANNELS, *, seed=0,
             dtype="float32", backend=None, autoencoder=False, flat=False, **model_options):
    """The convolutional :class:`~numpyvae.model.VAE` (or ``Autoencoder``), Bernoulli by default.

    The model takes batches of shape ``(B, 1, H, W)``, or ``(B, H W)`` with
    ``flat=True`` (see :func:`conv_networks`). Weights are drawn from
    ``numpy.random.default_rng(seed)``; other keyword arguments
    (``likelihood``, ``free_bits``, ...) go to the model.
    """
    from .model import VAE, Autoencoder

    cls = Autoencoder if autoencoder else VAE
    widths = 1 if autoencoder else 2
    encoder, decoder = conv_networks(image_shape, latent_dim, channels,
                                     encoder_width=widths * latent_dim, flat=flat,
                                     rng=np.random.default_rng(seed), dtype=dtype,
                                     backend=backend)
    return cls(encoder, decoder, latent_dim=latent_dim, seed=seed, backend=backend,
               **model_options)


def conv_cvae(image_shape, latent_dim, num_classes, channels=DEFAULT_CHANNELS, *, seed=0,
              dtype="float32", backend=None, flat=False, **model_options):
    """The conditional convolutional VAE: a :class:`~numpyvae.CVAE` of :func:`conv_networks`.

    The encoder's first convolution takes ``1 + num_classes`` channels and
    the decoder's first ``Linear`` ``latent_dim + num_classes`` inputs. The
    model takes batches of shape ``(B, 1, H, W)`` (the CVAE appends the label
    maps), or ``(B, H W)`` with ``flat=True`` (the CVAE appends the one-hot
    columns, and the encoder's :class:`~numpyvae.layers.LabelChannels` turns
    them into the same maps); every method takes the labels,
    ``loss_and_grads(x, labels)``, ``sample(n, labels=...)``, ... Weights are
    drawn from ``numpy.random.default_rng(seed)``; other keyword arguments
    (``likelihood``, ``free_bits``, ...) go to the model.

    >>> import numpyvae
    >>> model = numpyvae.conv_cvae((28, 28), latent_dim=8, num_classes=10, channels=(4, 8))
    >>> model.sample(3, labels=7).shape                  # three draws of class 7
    (3, 1, 28, 28)
    """
    from .cvae import CVAE

    if not (isinstance(num_classes, (int, np.integer)) and not isinstance(num_classes, bool)
            and num_classes >= 1):
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    encoder, decoder = conv_networks(image_shape, latent_dim, channels,
                                     num_classes=num_classes, flat=flat,
                                     rng=np.random.default_rng(seed), dtype=dtype,
                                     backend=backend)
    return CVAE(encoder, decoder, num_classes=num_classes, latent_dim=latent_dim, seed=seed,
                backend=backend, **model_options)


__all__ = ["DEFAULT_CHANNELS", "check_image_shape", "conv_cvae", "conv_networks", "conv_vae"]
