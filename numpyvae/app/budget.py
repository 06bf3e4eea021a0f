"""What a run's options will allocate, checked against the memory budget before anything is built.

Some options size arrays directly: ``--iw-train K`` decodes ``K`` copies of
every batch, the convolutional network's ``--channels C1 C2`` size its
feature maps and weights, a conditional model adds one input per class (a
whole label map per class, for the conv network), and ``--batch-size`` sets
how many rows each layer holds. The MLP's weights are checked by the model
itself (:func:`numpyvae.app.limits.check_parameters`); here the rest is
estimated from the options and the data's shape, and an impossible request
is refused in one line that names the option, the memory it would need and
the budget (:func:`numpyvae.app.limits.excess`), instead of NumPy's
"Unable to allocate ..." halfway through the first step.

The estimates count what one training step must hold at once: each layer's
output for the batch and its gradient, the convolutions' unfolded patches
(im2col), and the weights with their gradients and the optimizer's two
moment estimates and the temporaries of the optimizer's update. Of the
layers' own temporaries only the MLP's hidden layers' are counted (one of
the layer's size beside its output: the product before the bias is added,
the gradient through the activation), which a wide hidden layer decoding
many importance samples made the largest arrays of the step; the others
are left out.

What does not live here: the budget itself (:mod:`numpyvae.app.limits`), the
models (:mod:`numpyvae.model`, :mod:`numpyvae.convnet`).
"""

from __future__ import annotations

import numpy as np

from .limits import SizeLimitError, excess, mlp_parameters

#: A convolution's kernel side in the conv VAE (:mod:`numpyvae.convnet`): 4 x 4 patches.
_PATCH = 4 * 4
#: Arrays of the latent size that one decoded row holds in a step: the noise, the code, the
#: mean and log-variance repeated for each sample, their gradients, and the importance
#: weights' terms (:mod:`numpyvae.iwae`).
_LATENT_ARRAYS = 8
#: Parameter-sized arrays a step holds at its peak: the parameters, their gradients, the
#: optimizer's two moments, and the update's temporaries (the reference's Adam step,
#: :func:`numpyvae.ops.adam_update`, holds the L2-decayed gradient and three more at once).
_WEIGHT_ARRAYS = 8
#: Examples the evaluation after each epoch runs forward at once (the trainer's default).
EVAL_ROWS = 1000
#: Arrays of a hidden layer's width that one row holds (each doubled for its gradient): the
#: layer's output and a temporary as large while the layer computes it (``x @ W`` before
#: the bias; in the backward pass, the gradient through the activation). Counting the
#: output only, a hidden layer of 4,000 decoding 300 importance samples of 4 examples
#: peaked at 1.19 times the estimate.
_HIDDEN_ARRAYS = 2
#: Arrays of the input's size that one decoded row holds: the logits, the likelihood's
#: parameters, the data repeated for each sample, the loss per value and its gradient.
_OUTPUT_ARRAYS = 5


def mlp_rows(options: dict, input_dim: int, num_classes: int) -> tuple[int, int, int]:
    """Values per example of the MLP's encoder and decoder, and its weights.

    Returns ``(encoder, decoder, weights)``; the decoder mirrors the encoder's
    hidden widths, as :class:`numpyvae.model.VAE` builds it.
    """
    hidden = [int(h) for h in options.get("hidden") or ()]
    latent, classes = int(options["latent_dim"]), int(num_classes)
    widths = _HIDDEN_ARRAYS * sum(hidden)
    encoder = input_dim + classes + widths + 2 * latent
    decoder = _LATENT_ARRAYS * latent + classes + widths + _OUTPUT_ARRAYS * input_dim
    weights = (mlp_parameters([input_dim + classes, *hidden, 2 * latent])
               + mlp_parameters([latent + classes, *hidden[::-1], input_dim]))
    return encoder, decoder, weights


def conv_rows(options: dict, image_shape, num_classes: int) -> tuple[int, int, int]:
    """Values per example of the conv encoder and decoder, and the conv network's weights.

    Returns ``(encoder, decoder, weights)``; the layers are those of
    :func:`numpyvae.convnet.conv_networks`.
    """
    c1, c2 = (int(c) for c in options["channels"])
    H, W = (int(s) for s in tuple(image_shape)[-2:])
    classes, latent = int(num_classes), int(options["latent_dim"])
    half, quarter = (H // 2) * (W // 2), (H // 4) * (W // 4)
    channels_in = 1 + classes  # the image and one constant map per class
    # the c2 maps at a quarter of the image are held twice in each network: as the
    # Linear layer's rows and as the (batch, c2, H/4, W/4) images the convolution reads
    encoder = (channels_in * H * W + half * channels_in * _PATCH + c1 * half
               + quarter * c1 * _PATCH + 2 * c2 * quarter + 2 * latent)
    decoder = (_LATENT_ARRAYS * latent + classes + 2 * c2 * quarter + quarter * c1 * _PATCH
               + c1 * half + half * _PATCH + _OUTPUT_ARRAYS * H * W)
    weights = (channels_in * c1 * _PATCH + c1 + c1 * c2 * _PATCH + c2
               + c2 * quarter * 2 * latent + 2 * latent
               + (latent + classes) * c2 * quarter + c2 * quarter
               + c2 * c1 * _PATCH + c1 + c1 * _PATCH + 1)
    return encoder, decoder, weights


def step_bytes(options: dict, input_dim: int, image_shape, num_classes: int = 0,
               n_train: int | None = None, n_test: int | None = None) -> tuple[int, int]:
    """The bytes one training step holds at least: ``(layer values, weights)``.

    Layer values: each layer's output for the batch and its gradient (the
    decoder's for ``iw_train`` copies of the batch). Weights: the
    parameters, their gradients, the optimizer's two moments and its
    update's temporaries.
    ``num_classes`` counts only for a conditional model; ``n_train`` caps the
    batch (a batch never holds more rows than the data); ``n_test`` counts
    the evaluation's rows, when larger than the step's.
    """
    itemsize = np.dtype(options.get("dtype") or "float32").itemsize
    batch = _batch(options, n_train)
    copies = int(options.get("iw_train") or 1)
    classes = int(num_classes) if options.get("conditional") else 0
    if options.get("arch", "mlp") == "conv":
        encoder, decoder, weights = conv_rows(options, image_shape, classes)
    else:
        encoder, decoder, weights = mlp_rows(options, input_dim, classes)
    rows = batch * encoder + batch * copies * decoder
    # The evaluation after each epoch runs the test set forward in batches of up to
    # EVAL_ROWS examples: no gradients, but many more rows than a small training batch.
    evaluated = min(EVAL_ROWS, int(n_test or 0)) * (encoder + decoder)
    return itemsize * max(2 * rows, evaluated), itemsize * _WEIGHT_ARRAYS * weights


def _batch(options, n_train) -> int:
    batch = int(options["batch_size"])
    return batch if n_train is None else max(1, min(batch, int(n_train)))


def check_run_sizes(options: dict, input_dim: int, image_shape, num_classes: int = 0,
                    n_train: int | None = None, n_test: int | None = None) -> None:
    """Refuse options whose training step would exceed the memory budget, naming the option.

    The option named is the one that makes the difference: ``--iw-train``
    if the same run with one sample fits; else ``--channels`` for the conv
    network (its widths size both its weights and its feature maps); else
    ``--hidden`` if the MLP's weights alone do not fit, or ``--batch-size``.

    Raises
    ------
    SizeLimitError (a ValueError)
        One line: the option and its value, what it sizes, the memory it
        would need and the budget.
    """
    values, weights = step_bytes(options, input_dim, image_shape, num_classes, n_train, n_test)
    reason = excess(values + weights)
    if reason is None:
        return
    batch, K = _batch(options, n_train), options.get("iw_train")
    one = step_bytes({**options, "iw_train": None}, input_dim, image_shape, num_classes, n_train,
                     n_test)
    classes = (f" and {num_classes} classes" if options.get("conditional") and num_classes
               else "")
    if K and excess(sum(one)) is None:
        what = (f"--iw-train {K}: decoding {K:,} importance samples of each of the {batch} "
                f"examples of a batch")
    elif options.get("arch", "mlp") == "conv":
        c1, c2 = options["channels"]
        what = (f"--channels {c1} {c2}: the convolutional network's weights and its feature "
                f"maps for a batch of {batch} {tuple(image_shape)} images{classes}")
    elif excess(weights):
        widths = " ".join(str(h) for h in options.get("hidden") or ())
        count = weights // (_WEIGHT_ARRAYS * np.dtype(options.get("dtype") or "float32").itemsize)
        what = (f"--hidden {widths} --latent-dim {options['latent_dim']}: {count:,} parameters "
                f"(with their gradients, the optimizer's moments and its update) for {input_dim} "
                f"inputs{classes}")
    elif excess(sum(step_bytes(options, input_dim, image_shape, num_classes, n_train))) is None:
        widths = " ".join(str(h) for h in options.get("hidden") or ())
        what = (f"--hidden {widths} --latent-dim {options['latent_dim']}: evaluating the "
                f"{n_test:,} test examples {min(EVAL_ROWS, int(n_test))} at a time through "
                f"these layers{classes}")
    else:
        what = (f"--batch-size {options['batch_size']}: the layers' values for a batch of "
                f"{batch} examples of {input_dim} values{classes}")
    raise SizeLimitError(f"{what} would need {reason}; choose a smaller value")


def check_decoded(what: str, count: int, model) -> None:
    """Refuse decoding ``count`` images at once (``sample -n``, ``interpolate --steps``).

    Each image is decoded from a code and drawn into the figure: at least
    its code, its values and its place on the canvas, in the model's dtype.
    Raises :class:`SizeLimitError` naming ``what`` (the options and their
    values) before anything is drawn.
    """
    values = int(np.prod(model.input_shape))
    nbytes = int(count) * (int(model.latent_dim) + 2 * values) * np.dtype(model.dtype).itemsize
    reason = excess(nbytes)
    if reason is not None:
        raise SizeLimitError(f"{what}: decoding and drawing {count:,} images of "
                             f"{values} values would need {reason}; choose a smaller value")


def check_importance_samples(model, k: int, batch_size: int, n_train: int) -> None:
    """Refuse ``iw_train=k`` if decoding ``k`` copies of a batch would exceed the budget.

    The Python form of the ``--iw-train`` check, for a model already built
    (any network of layers): each decoded row holds at least the latent
    arrays, the output arrays and each decoder layer's bias-sized values with
    their gradients, so the estimate is a lower bound. Raises
    :class:`SizeLimitError` naming ``iw_train`` before anything is decoded.
    """
    info = model.describe()
    widths = sum(int(layer["params"]["b"].size) for layer in info["decoder"]
                 if "b" in layer["params"])
    values = int(np.prod(info["input_shape"]))
    row = _LATENT_ARRAYS * int(info["latent_dim"]) + _OUTPUT_ARRAYS * values + 2 * widths
    batch = max(1, min(int(batch_size), int(n_train)))
    reason = excess(int(k) * batch * row * np.dtype(info["dtype"]).itemsize)
    if reason is not None:
        raise SizeLimitError(f"iw_train={k}: decoding {k:,} importance samples of each of the "
                             f"{batch} examples of a batch would need {reason}; choose a "
                             f"smaller value")
