"""The latent-space explorer: one self-contained HTML page to move through a trained model.

``numpyvae export RUN_DIR --html FILE`` writes it (:func:`numpyvae.app.run.export_run`
reads the run; this module writes the page). The page needs no server and no
network: it opens from a file. It holds

* the decoder's weights, as base64 strings of little-endian floats in the
  model's dtype, and a list of its layers (:func:`decoder_program`), which a
  small JavaScript forward pass (``explorer_page.html``, written to be read:
  one function per layer kind, each with its shapes) runs in the browser;
* how to show the decoder's output: the likelihood's mean (``sigmoid`` of a
  Bernoulli decoder's logits, a Gaussian decoder's output itself), as grey
  levels or, for ``(3, H, W)`` images, in colour;
* the test set's codes (a subsample), drawn as the latent scatter the figures
  draw (:func:`numpyvae.app.plots.latent_scatter`): the codes themselves for a
  2-D latent space, their first two principal components otherwise;
* the latent dimensions ordered by activity (the variance of the codes over
  the test set, Burda et al.'s active units, :func:`numpyvae.latent.active_units`).

On the page a student drags a point over the scatter (the 2-D latent space,
or the plane of the two principal components) or moves the sliders of the
most active dimensions, picks a class for a conditional model, and sees the
decoded image change at once. ``window.numpyvaeExplorer.decode(z, label)``
returns the pixel means the page computes, so a test can compare them with
:meth:`~numpyvae.model.VAE.decode`.

The forward pass knows the layers the library's networks are made of:
:class:`~numpyvae.layers.Linear` (with its activation), the activation layers,
:class:`~numpyvae.layers.Reshape`, :class:`~numpyvae.layers.Flatten`,
:class:`~numpyvae.conv.Conv2d` and :class:`~numpyvae.conv.ConvTranspose2d`, in
any :class:`~numpyvae.layers.Sequential`. A decoder with any other layer is
refused with an :class:`ExportError` naming it.

What does not live here: reading the run folder and its data
(:mod:`numpyvae.app.run`), the command's options (:mod:`numpyvae.app.cli`).
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from importlib import resources
from pathlib import Path

import numpy as np

from ..conv import Conv2d, ConvTranspose2d
from ..fileio import atomic_write_text
from ..latent import active_units
from ..layers import (
    Activation,
    Flatten,
    Identity,
    LeakyReLU,
    Linear,
    ReLU,
    Reshape,
    Sequential,
    Sigmoid,
    Softplus,
    Tanh,
)
from ..model import VAE
from . import plots
from .figures import is_conditional, latent_codes

#: The page template, shipped with the package; the data goes where this marker is.
TEMPLATE = "explorer_page.html"
DATA_MARKER = "/*NUMPYVAE_DATA*/null"
#: At most this many sliders, for the most active dimensions.
MAX_SLIDERS = 8
#: At most this many test codes drawn on the scatter (a random subsample).
MAX_POINTS = 2000

_ACTIVATION_LAYERS = (Identity, ReLU, LeakyReLU, Tanh, Sigmoid, Softplus)
_EXPORTABLE = "Linear, Conv2d, ConvTranspose2d, Reshape, Flatten, Sequential and the activations"


class ExportError(ValueError):
    """A model or run the page cannot show (a layer its forward pass does not know, ...)."""


def _floats(a, dtype) -> str:
    """An array as base64 of its little-endian bytes in ``dtype``, C order."""
    return base64.b64encode(np.ascontiguousarray(a, dtype=np.dtype(dtype).newbyteorder("<"))
                            .tobytes()).decode("ascii")


def _leaves(layer):
    """The layers of a network in the order they run, nested Sequentials opened."""
    if type(layer) is Sequential:
        for child in layer.children:
            yield from _leaves(child)
    else:
        yield layer


def _conv_step(layer, kind, dtype) -> dict:
    step = {"type": kind, "in_channels": layer.in_channels, "out_channels": layer.out_channels,
            "kernel_size": list(layer.kernel_size), "stride": list(layer.stride),
            "padding": list(layer.padding), "activation": layer.activation,
            "alpha": layer.alpha, "W": _floats(layer.params["W"], dtype),
            "b": _floats(layer.params["b"], dtype)}
    if kind == "conv_transpose2d":
        step["output_padding"] = list(layer.output_padding)
    return step


def decoder_program(decoder, dtype="float32") -> list[dict]:
    """The decoder as the list of steps the page's forward pass runs, weights included.

    Each step is ``{"type": ..., ...}``: ``linear`` (``W`` (in, out), ``b``
    (out,), an activation), ``activation``, ``reshape``, ``flatten``,
    ``conv2d`` (``W`` (O, C, kh, kw)) or ``conv_transpose2d`` (``W`` (C, O,
    kh, kw)), weights as :func:`_floats` strings. Raises :class:`ExportError`
    naming the first layer it cannot write.
    """
    steps = []
    for layer in _leaves(decoder):
        kind = type(layer)
        if kind is Linear:
            steps.append({"type": "linear", "in_features": layer.in_features,
                          "out_features": layer.out_features, "activation": layer.activation,
                          "alpha": layer.alpha, "W": _floats(layer.params["W"], dtype),
                          "b": _floats(layer.params["b"], dtype)})
        elif kind in _ACTIVATION_LAYERS:
            steps.append({"type": "activation", "activation": layer.activation,
                          "alpha": layer.alpha})
        elif kind is Reshape:
            steps.append({"type": "reshape", "shape": list(layer.shape)})
        elif kind is Flatten:
            steps.append({"type": "flatten"})
        elif kind is Conv2d:
            steps.append(_conv_step(layer, "conv2d", dtype))
        elif kind is ConvTranspose2d:
            steps.append(_conv_step(layer, "conv_transpose2d", dtype))
        else:
            what = "an activation" if isinstance(layer, Activation) else kind.__name__
            raise ExportError(f"cannot export the decoder's layer {layer!r} ({what}) to the "
                              f"page: its forward pass knows {_EXPORTABLE}")
    return steps


def likelihood_mean(model) -> str:
    """How the page turns the decoder's output into the mean it shows: "sigmoid" or "identity"."""
    name = getattr(model.likelihood, "name", None)
    if name == "bernoulli":
        return "sigmoid"
    if name == "gaussian":
        return "identity"
    raise ExportError(f"cannot export a model with the likelihood {model.likelihood!r}: the "
                      f"page shows a Bernoulli or a Gaussian decoder's mean")


def display_shape(image_shape) -> list[int]:
    """``(H, W)`` or ``(c, H, W)`` as ``[c, H, W]`` with ``c`` 1 (grey) or 3 (colour)."""
    shape = tuple(int(d) for d in image_shape)
    if not plots.shows_images(shape):
        raise ExportError(f"this run was trained on vectors of shape {shape}, not images, so "
                          f"there is no picture to explore")
    return [1, *shape] if len(shape) == 2 else list(shape)


def _class_name(c, label_names) -> str:
    """Class ``c``'s name, or its number when the data set names none."""
    c = int(c)
    return str(label_names[c]) if label_names and 0 <= c < len(label_names) else str(c)


def _scatter(codes, labels, label_names, rng) -> dict:
    """The codes as the page draws them: 2-D points, and the map between z and the plane.

    ``projection`` ``P`` (2, L) and ``center`` ``m`` (L,) put a code on the
    plane as ``P (z - m)``; dragging a point ``c`` of the plane sets
    ``z = m + P^T c`` (the rows of ``P`` are orthonormal). For a 2-D latent
    space ``P`` is the identity and ``m`` zero; for more dimensions they are
    the first two principal components and the mean, as the scatter figure's
    PCA projection (:func:`numpyvae.app.plots.pca_2d`); with fewer than two
    codes, the plane of ``z[0]`` and ``z[1]``.
    """
    codes = np.asarray(codes, np.float64)
    L = codes.shape[1]
    if L == 1:  # one dimension: the codes against their class, as the figure draws them
        P, m, axes = np.array([[1.0], [0.0]]), np.zeros(1), ["z[0]", "class"]
    elif L == 2 or len(codes) < 2:  # (a single code has no principal components)
        P, m, axes = np.eye(2, L), np.zeros(L), ["z[0]", "z[1]"]
    else:
        m = codes.mean(axis=0)
        _, s, vt = np.linalg.svd(codes - m, full_matrices=False)
        ratio = s[:2] ** 2 / max(float((s ** 2).sum()), 1e-300)
        P = vt[:2]
        axes = [f"PC {i + 1} ({100 * r:.0f}% of variance)" for i, r in enumerate(ratio)]
    pick = rng.permutation(len(codes))[:MAX_POINTS]
    points = (codes[pick] - m) @ P.T
    has_labels = labels is not None
    classes = np.zeros(len(pick), np.int64) if not has_labels else np.asarray(labels)[pick]
    values, index = np.unique(classes, return_inverse=True)
    if L == 1:
        points[:, 1] = index + rng.uniform(-0.3, 0.3, len(index))
    names = [_class_name(c, label_names) for c in values] if has_labels else []
    from matplotlib.colors import to_hex  # as plots.class_colours, loaded only when drawing

    colours = [to_hex(c) for c in plots.class_colours(len(values))]
    return {"points": _floats(points, "float32"), "n": len(pick),
            "classes": index.tolist(),
            "names": names, "colours": colours if has_labels else ["#4c72b0"],
            "axes": axes, "projection": P.tolist(), "center": m.tolist(),
            "limits": _limits(points)}


def _limits(points) -> list[list[float]]:
    """Each axis of the pad: at least [-3, 3] (the prior's bulk), and every point."""
    lo = np.minimum(points.min(axis=0, initial=-3.0), -3.0)
    hi = np.maximum(points.max(axis=0, initial=3.0), 3.0)
    pad = 0.05 * (hi - lo)
    return [[float(a), float(b)] for a, b in zip(lo - pad, hi + pad, strict=True)]


def explorer_data(model, x_test, y_test=None, *, image_shape, label_names=None, title="",
                  seed=0) -> dict:
    """Everything the page needs, as JSON: the decoder, the latent dimensions, the scatter.

    ``x_test`` (N, D) are test inputs as the model reads them (binarized as
    the run was), ``y_test`` their labels or None; a conditional model's
    codes are computed with the labels, as the figures do.
    """
    dtype = str(np.dtype(model.dtype))
    steps = decoder_program(model.decoder, dtype)
    shape = display_shape(image_shape)
    if math.prod(shape) != math.prod(model.input_shape):
        raise ExportError(f"the run's image shape {tuple(image_shape)} does not fit the "
                          f"model's outputs of shape {tuple(model.input_shape)}")
    conditional = is_conditional(model)
    if conditional and y_test is None:
        raise ExportError("a conditional model's codes need the test set's labels")
    if len(x_test) == 0:
        raise ExportError("the test set holds no examples: there are no codes to draw")
    x = np.asarray(x_test).reshape(len(x_test), -1).astype(model.dtype)
    codes = latent_codes(model, x, labels=y_test if conditional else None)
    L = model.latent_dim
    if len(codes) >= 2:
        _, activity = active_units(codes)
    else:
        activity = np.zeros(L)
    order = np.argsort(-activity, kind="stable")[:MAX_SLIDERS]
    spread = np.percentile(codes, [0.5, 99.5], axis=0)
    lo, hi = np.minimum(spread[0], -3.0), np.maximum(spread[1], 3.0)
    # A VAE starts at the prior's mean; an autoencoder's codes are not centred on 0.
    start = np.zeros(L) if isinstance(model, VAE) else codes.mean(axis=0)
    rng = np.random.default_rng(seed)
    classes = None
    if conditional:
        names = [_class_name(c, label_names) for c in range(model.num_classes)]
        classes = {"count": model.num_classes, "names": names}
    return {
        "title": title,
        "model": re.sub(r", backend='[^']*'", "", repr(model)),  # not the page's concern
        "latent_dim": L,
        "dtype": dtype,
        "decoder_input": L + (model.num_classes if conditional else 0),
        "layers": steps,
        "mean": likelihood_mean(model),
        "image_shape": shape,
        "classes": classes,
        "sliders": [{"dim": int(d), "activity": float(activity[d]),
                     "range": [float(lo[d]), float(hi[d])]} for d in order],
        "start": start.tolist(),
        "scatter": _scatter(codes, y_test, label_names, rng),
        "kind": type(model).__name__,
    }


def page(data: dict) -> str:
    """The HTML page with ``data`` in it (JSON, with ``</`` escaped so no tag can close early)."""
    template = resources.files(__package__).joinpath(TEMPLATE).read_text(encoding="utf-8")
    if template.count(DATA_MARKER) != 1:  # pragma: no cover - a broken installation
        raise ExportError(f"the page template {TEMPLATE} lacks its data marker")
    text = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    return (template.replace("{{TITLE}}", html.escape(data.get("title") or "numpyvae"))
            .replace(DATA_MARKER, text))


def check_page_name(path) -> Path:
    """``path`` as a Path if it names an HTML file (``.html`` or ``.htm``), else ExportError."""
    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm"):
        raise ExportError(f"--html: expected a file name ending in .html, got {str(path)!r}")
    return path


def write_explorer(path, model, x_test, y_test=None, *, image_shape, label_names=None,
                   title="", seed=0) -> Path:
    """Write the explorer page of ``model`` to ``path`` (atomically); return the path."""
    path = check_page_name(path)
    data = explorer_data(model, x_test, y_test, image_shape=image_shape,
                         label_names=label_names, title=title, seed=seed)
    return atomic_write_text(path, page(data))


__all__ = ["ExportError", "check_page_name", "decoder_program", "display_shape", "explorer_data",
           "likelihood_mean", "page", "write_explorer"]
