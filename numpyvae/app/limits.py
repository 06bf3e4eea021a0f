"""How much memory the library lets one file or one model claim, checked before allocating.

A size written in a file (an IDX header, an ``.npy`` header, a model's
layer widths) or typed on the command line (``--hidden 100000000``) decides
how much memory would be allocated. Those sizes are checked here, against
the machine's physical memory, *before* anything is allocated, so an
impossible size ends in an error naming the size instead of a
``MemoryError`` traceback, or a machine swapping for minutes.

The budget is the physical memory (``os.sysconf``); the environment
variable ``NUMPYVAE_MAX_MEMORY`` (bytes, or with a suffix K, M, G) lowers or
raises it, e.g. for a test.

The sizes of a model are checked where they enter the library from outside:
the command's options (:func:`numpyvae.app.options.build_model`), a model
file's header (:func:`numpyvae.app.modelfile.load`) and :func:`fit
<numpyvae.app.train.fit>` (:func:`check_model_size`). The models and layers
themselves allocate what they are asked for: a student building
``VAE(784, ...)`` reads no budget code.

What does not live here: the readers themselves (:mod:`numpyvae.app.safenpz`,
:mod:`numpyvae.app.data.idx`), which call :func:`excess`,
:func:`unaddressable` or :func:`check_size` with their own sizes.
"""

from __future__ import annotations

import math
import os
import sys

import numpy as np

MEMORY_ENV = "NUMPYVAE_MAX_MEMORY"
_SUFFIXES = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_FALLBACK = 16 * 2**30  # when the platform does not say (no os.sysconf)


class SizeLimitError(ValueError):
    """A size (of a model, of an array in a file) needs more memory than the machine has."""


def memory_budget() -> int:
    """The most bytes one model or one file's content may claim."""
    value = os.environ.get(MEMORY_ENV, "").strip().upper().removesuffix("B")
    if value:
        number, suffix = (value[:-1], value[-1]) if value[-1] in _SUFFIXES else (value, "")
        try:
            budget = int(float(number) * _SUFFIXES[suffix])
        except ValueError:
            raise SizeLimitError(f"${MEMORY_ENV}={os.environ[MEMORY_ENV]!r}: expected a number "
                                 f"of bytes such as 4G or 500M") from None
        if budget > 0:
            return budget
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return _FALLBACK


def human(nbytes: int) -> str:
    """``nbytes`` for people: ``"3.2 GB"``, ``"745 TB"``, ``"1.0e+21 bytes"``."""
    if nbytes >= 10**300:  # past what a float holds: a size from a hostile header
        return f"about 1e+{int(int(nbytes).bit_length() * math.log10(2))} bytes"
    for unit, size in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if nbytes >= size:
            if nbytes >= 10**6 * size:
                return f"{float(nbytes):.1e} bytes"
            return f"{nbytes / size:.1f} {unit}"
    return f"{nbytes} bytes"


def excess(nbytes: int) -> str | None:
    """None if ``nbytes`` fits the budget; otherwise the reason, for an error message."""
    budget = memory_budget()
    if nbytes <= budget:
        return None
    return (f"{human(nbytes)}, more than the {human(budget)} of memory allowed "
            f"(the machine's memory, or ${MEMORY_ENV})")


def unaddressable(shape, itemsize: int) -> str | None:
    """None if NumPy can make an array of ``shape``; otherwise the reason.

    An array with a zero in its shape holds nothing, yet NumPy refuses one
    whose other sizes multiply (times ``itemsize``) past the largest index,
    ``(0, 2**40, 2**40)`` for instance: a header announcing such a shape is
    refused like one announcing too many bytes.
    """
    span = math.prod(size for size in shape if size) * itemsize
    if span <= sys.maxsize:
        return None
    return (f"sizes that multiply to {human(span)}, more than an array can index "
            f"({human(sys.maxsize)})")


def check_size(nbytes: int, what: str) -> None:
    """Raise :class:`SizeLimitError` if ``what`` would need more than the budget."""
    reason = excess(nbytes)
    if reason is not None:
        raise SizeLimitError(f"{what} would need {reason}; choose smaller sizes")


def check_parameters(count: int, itemsize: int, what: str) -> None:
    """Refuse ``what`` if its ``count`` parameters and their gradients exceed the budget.

    Called with the sizes a user gave (options, a model file's header)
    before anything is allocated.
    """
    check_size(2 * int(count) * int(itemsize),
               f"{what}: {int(count):,} parameters (weights and gradients)")


def check_model_size(model, what: str | None = None) -> None:
    """Refuse to train ``model`` if its weights and gradients exceed the budget.

    ``what`` names the model in the message (default: its ``repr``).
    """
    check_parameters(model.num_params, model.dtype.itemsize, what or repr(model))


def mlp_parameters(sizes) -> int:
    """The number of weights and biases of fully connected layers of these widths."""
    sizes = [int(n) for n in sizes]
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=True))


class _NotASize(Exception):
    """A size in a description is not a positive integer (the constructor will say so)."""


def _size(value) -> int:
    try:
        if isinstance(value, bool) or int(value) != value or int(value) < 1:
            raise _NotASize
    except (TypeError, ValueError, OverflowError):
        raise _NotASize from None
    return int(value)


def _pair(value) -> tuple[int, int]:
    return (_size(value), _size(value)) if np.ndim(value) == 0 else tuple(map(_size, value))


def _layer_parameters(spec) -> list[tuple[str, int]]:
    """``(layer in words, its weights and biases)`` for each layer with weights in ``spec``."""
    if not isinstance(spec, dict):
        raise _NotASize
    kind = spec.get("type")
    if kind == "Sequential":
        if not isinstance(spec.get("layers"), list):
            raise _NotASize
        return [counted for layer in spec["layers"] for counted in _layer_parameters(layer)]
    if kind == "Linear":
        n_in, n_out = _size(spec.get("in_features")), _size(spec.get("out_features"))
        return [(f"Linear({n_in}, {n_out})", n_in * n_out + n_out)]
    if kind in ("Conv2d", "ConvTranspose2d"):
        c_in, c_out = _size(spec.get("in_channels")), _size(spec.get("out_channels"))
        kh, kw = _pair(spec.get("kernel_size"))
        return [(f"{kind}({c_in}, {c_out}, kernel {kh} x {kw})", c_in * c_out * kh * kw + c_out)]
    return []


def model_parameters(config: dict) -> tuple[int, str] | None:
    """The weights and biases the model ``config`` describes, and the sizes that ask for them.

    ``config`` is a model's ``config()`` (the convenience constructor's
    arguments: ``input_dim``, ``hidden_dims``, ``latent_dim``, ...) or its
    ``architecture()`` (every layer's spec), as a model file records them.
    None when a size is not a positive integer or the kind is unknown: the
    constructor then refuses it with its own message.
    """
    try:
        if "encoder" in config:
            layers = _layer_parameters(config["encoder"]) + _layer_parameters(config["decoder"])
            if not layers:
                return 0, "no layer with weights"
            text, largest = max(layers, key=lambda layer: layer[1])
            return sum(n for _, n in layers), f"its largest layer {text}"
        widths = {"vae": 2, "cvae": 2, "autoencoder": 1}.get(config.get("kind", "vae"))
        if widths is None:
            return None
        n_in, latent = _size(config.get("input_dim")), _size(config.get("latent_dim"))
        hidden = config.get("hidden_dims", (400,))
        hidden = [_size(h) for h in ([hidden] if np.ndim(hidden) == 0 else hidden)]
        classes = _size(config.get("num_classes")) if config.get("kind") == "cvae" else 0
    except (_NotASize, KeyError, TypeError, ValueError):
        return None
    count = (mlp_parameters((n_in + classes, *hidden, widths * latent))
             + mlp_parameters((latent + classes, *hidden[::-1], n_in)))
    sizes = f"input_dim={n_in}, hidden_dims={tuple(hidden)}, latent_dim={latent}"
    return count, sizes + (f", num_classes={classes}" if classes else "")


def check_model_config(config: dict, what: str) -> None:
    """Refuse the model ``config`` describes (see :func:`model_parameters`) if its weights
    and gradients exceed the budget; ``what`` names where the sizes came from."""
    counted = model_parameters(config)
    try:
        itemsize = np.dtype(config.get("dtype", "float32")).itemsize
    except (TypeError, ValueError):
        return  # not a dtype: the constructor refuses it
    if counted is not None:
        check_parameters(counted[0], itemsize, f"{what} ({counted[1]})")
