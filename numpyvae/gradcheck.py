"""Checking hand-written gradients against central finite differences.

* :func:`numerical_gradient` — gradient of a scalar function ``f(x)``.
* :func:`numerical_vjp` — the vector-Jacobian product ``dout^T (df/dx)`` of an
  array function, for a given upstream gradient ``dout``.
* :func:`rel_error` — the relative error used throughout the library.
* :func:`check_layer` and :func:`check_model` — a report per parameter.
* :func:`standard_checks` and :func:`conv_checks` — the suite of ``numpyvae
  gradcheck``: every layer and model of the library, small and in float64.

Central differences, :math:`f'(x) \\approx (f(x+h) - f(x-h)) / 2h`, have a
truncation error of order :math:`h^2` and a rounding error of order
:math:`\\epsilon_{\\text{mach}} / h`; in float64 with ``h = 1e-6`` both are
around ``1e-10`` relative, so a correct gradient agrees to about ``1e-8`` or
better and a wrong one is off by orders of magnitude. In float32 the same
check is meaningless: always check in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def numerical_gradient(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central-difference gradient of a scalar function ``f`` at ``x``.

    ``x`` is perturbed in place, one element at a time, and restored, so
    ``f`` may read ``x`` through a reference (a layer's parameter array).

    Returns an array of ``x``'s shape.
    """
    grad = np.zeros(x.shape, dtype=np.float64)
    it = np.nditer(x, flags=["multi_index"], op_flags=[["readwrite"]])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + h
        f_plus = float(f())
        x[i] = old - h
        f_minus = float(f())
        x[i] = old
        grad[i] = (f_plus - f_minus) / (2 * h)
    return grad


def numerical_vjp(f, x: np.ndarray, dout: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central-difference ``sum(dout * df/dx)`` for an array function ``f``.

    The outputs are subtracted elementwise before the weighted sum, so the
    rounding error stays proportional to the outputs that change.
    """
    grad = np.zeros(x.shape, dtype=np.float64)
    it = np.nditer(x, flags=["multi_index"], op_flags=[["readwrite"]])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + h
        plus = np.array(f(), dtype=np.float64, copy=True)
        x[i] = old - h
        minus = np.array(f(), dtype=np.float64, copy=True)
        x[i] = old
        grad[i] = np.sum((plus - minus) * dout) / (2 * h)
    return grad


def rel_error(analytic, numeric) -> float:
    """Relative error: the largest absolute difference over the arrays' scale.

    .. math:: \\frac{\\max_i |a_i - n_i|}{\\max(\\max_i |a_i|,\\ \\max_i |n_i|,\\ 10^{-12})}

    Measuring against the scale of the whole gradient (rather than element by
    element) keeps elements that are nearly zero from reporting rounding
    noise as error, while any wrong element of a meaningful size shows.
    """
    a = np.asarray(analytic, dtype=np.float64)
    n = np.asarray(numeric, dtype=np.float64)
    if a.shape != n.shape:
        raise ValueError(f"rel_error: shapes differ, {a.shape} vs {n.shape}")
    if a.size == 0:
        return 0.0
    scale = max(np.max(np.abs(a)), np.max(np.abs(n)), 1e-12)
    return float(np.max(np.abs(a - n)) / scale)


@dataclass
class GradCheck:
    """One row of a report: a parameter (or the input) compared with central differences."""

    name: str
    shape: tuple
    rel_error: float
    worst_index: tuple
    analytic: float
    numeric: float
    tol: float

    @property
    def passed(self) -> bool:
        return bool(self.rel_error <= self.tol)


def _row(name, analytic, numeric, tol):
    diff = np.abs(np.asarray(analytic, np.float64) - numeric)
    idx = np.unravel_index(int(np.argmax(diff)), diff.shape) if diff.size else ()
    idx = tuple(int(i) for i in idx)
    return GradCheck(name, tuple(np.shape(analytic)), rel_error(analytic, numeric), idx,
                     float(np.asarray(analytic)[idx]) if diff.size else 0.0,
                     float(numeric[idx]) if diff.size else 0.0, tol)


class GradReport(list):
    """A list of :class:`GradCheck` rows that prints as a table."""

    def __init__(self, title, rows=()):
        super().__init__(rows)
        self.title = title

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self)

    @property
    def max_error(self) -> float:
        return max((r.rel_error for r in self), default=0.0)

    def __str__(self):
        lines = [f"{self.title}", f"  {'tensor':<22}{'shape':<14}{'rel error':>11}  "
                 f"{'worst at':<12}{'analytic':>13}{'numeric':>13}  result"]
        for r in self:
            lines.append(
                f"  {r.name:<22}{str(r.shape):<14}{r.rel_error:>11.2e}  {str(r.worst_index):<12}"
                f"{r.analytic:>13.6g}{r.numeric:>13.6g}  {'ok' if r.passed else 'FAIL'}"
            )
        return "\n".join(lines)


def check_layer(layer, x: np.ndarray, dout: np.ndarray | None = None, *, rng=None,
                h: float = 1e-6, tol: float = 1e-7, title: str | None = None) -> GradReport:
    """Check a layer's backward (input and every parameter) against central differences.

    Uses the scalar ``sum(layer.forward(x) * dout)`` with a random upstream
    gradient ``dout`` (never all ones, which hides errors in ops that sum or
    normalise). Run it in float64.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    x = np.array(x, copy=True)
    y = layer.forward(x)
    if dout is None:
        dout = rng.standard_normal(y.shape).astype(y.dtype)
    layer.zero_grad()
    layer.forward(x)
    dx = layer.backward(dout)
    dx = None if dx is None else np.array(dx, dtype=np.float64)
    grads = {k: np.array(g, dtype=np.float64) for k, g in layer.grads.items()}

    def f():
        return layer.forward(x)

    report = GradReport(title or repr(layer).replace("\n", " "))
    if dx is not None:
        report.append(_row("input", dx, numerical_vjp(f, x, dout, h), tol))
    for name, p in layer.params.items():
        report.append(_row(name, grads[name], numerical_vjp(f, p, dout, h), tol))
    return report


def check_model(model, x: np.ndarray, eps: np.ndarray | None = None, beta: float = 1.0, *,
                labels=None, rng=None, h: float = 1e-5, tol: float = 1e-7,
                title: str | None = None) -> GradReport:
    """Check ``model.loss_and_grads`` for every parameter, with the noise ``eps`` held fixed.

    ``labels`` (B,): the classes of ``x``, for a conditional model (:class:`~numpyvae.CVAE`).
    """
    rng = np.random.default_rng(0) if rng is None else rng
    latent = getattr(model, "latent_dim", None)
    if eps is None and latent is not None:
        eps = rng.standard_normal((x.shape[0], latent)).astype(model.dtype)
    given = {} if labels is None else {"labels": labels}
    result = model.loss_and_grads(x, eps=eps, beta=beta, **given)
    grads = {k: np.array(g, dtype=np.float64) for k, g in result.grads.items()}

    def f():
        return model.loss_and_grads(x, eps=eps, beta=beta, **given).loss

    report = GradReport(title or repr(model))
    for name, p in model.params.items():
        report.append(_row(name, grads[name], numerical_gradient(f, p, h), tol))
    return report


def standard_checks(backend=None, seed: int = 0) -> list[GradReport]:
    """Check every layer type, and both models end to end, in float64 (``numpyvae gradcheck``).

    One report each for: ``Linear`` with every activation, every activation
    layer, ``Flatten``, ``Reshape`` and ``LabelChannels`` on image-shaped
    data, a ``Sequential``, the VAE with a Bernoulli, a fixed-variance
    Gaussian and a learned-variance Gaussian likelihood (and with free bits),
    the autoencoder, the conditional VAE, and a VAE of composed networks (a
    three-hidden-layer tanh encoder over images, a softplus decoder back to
    images), then the convolution layers and the convolutional VAE,
    autoencoder and conditional VAE (:func:`conv_checks`).
    Sizes are small, so the whole suite takes seconds.
    """
    from .cvae import CVAE
    from .distributions import GaussianLearnedVariance
    from .layers import (
        ACTIVATION_LAYERS,
        Flatten,
        LabelChannels,
        Linear,
        Reshape,
        Sequential,
        Tanh,
    )
    from .model import VAE, Autoencoder
    from .ops import ACTIVATIONS

    rng = np.random.default_rng(seed)
    f64 = "float64"
    reports = []
    for act in ACTIVATIONS:
        layer = Linear(5, 4, activation=act, rng=rng, dtype=f64, backend=backend)
        reports.append(check_layer(layer, rng.standard_normal((6, 5)), rng=rng,
                                   title=f"Linear(5, 4, activation={act!r})"))
    for cls in ACTIVATION_LAYERS.values():
        layer = cls(backend=backend)
        reports.append(check_layer(layer, rng.standard_normal((6, 5)), rng=rng,
                                   title=f"{cls.__name__}()"))
    for layer in (Flatten(backend=backend), Reshape(3, 4, backend=backend)):
        reports.append(check_layer(layer, rng.standard_normal((6, 2, 3, 2)), rng=rng,
                                   title=f"{layer!r} on (6, 2, 3, 2)"))
    layer = LabelChannels((2, 3, 2), 4, backend=backend)  # the label's columns: random too
    reports.append(check_layer(layer, rng.standard_normal((6, 2 * 3 * 2 + 4)), rng=rng,
                               title=f"{layer!r} on (6, 16)"))
    seq = Sequential(Linear(5, 4, rng=rng, dtype=f64, backend=backend), Tanh(backend=backend),
                     Linear(4, 3, activation="sigmoid", rng=rng, dtype=f64, backend=backend))
    reports.append(check_layer(seq, rng.standard_normal((6, 5)), rng=rng,
                               title="Sequential(Linear(5, 4), Tanh(), Linear(4, 3, sigmoid))"))
    x = rng.random((4, 6))
    models = [
        (VAE, "relu", {"likelihood": "bernoulli"}, 1.0, ""),
        (VAE, "tanh", {"likelihood": "gaussian", "gaussian_var": 0.5}, 1.0,
         " (fixed variance 0.5)"),
        (VAE, "tanh", {"likelihood": "gaussian", "gaussian_var": "learned"}, 0.5,
         " (learned variance), beta 0.5"),
        (VAE, "relu", {"likelihood": "bernoulli", "free_bits": 0.05}, 1.0, ", free bits 0.05"),
        (Autoencoder, "relu", {"likelihood": "bernoulli"}, 1.0, ""),
    ]
    for cls, act, kwargs, beta, note in models:
        model = cls(6, hidden_dims=(5,), latent_dim=3, activation=act, dtype=f64, seed=seed,
                    backend=backend, **kwargs)
        title = f"{cls.__name__}(6, hidden 5, latent 3, {act}), {kwargs['likelihood']}{note}"
        reports.append(check_model(model, x, beta=beta, rng=rng, title=title))
    model = CVAE(6, num_classes=4, hidden_dims=(5,), latent_dim=3, activation="tanh",
                 dtype=f64, seed=seed, backend=backend)
    reports.append(check_model(model, x, beta=0.5, labels=np.array([2, 0, 3, 2]), rng=rng,
                               title="CVAE(6, 4 classes, hidden 5, latent 3, tanh), "
                                     "bernoulli, beta 0.5"))

    def linear(n_in, n_out, activation="identity"):
        return Linear(n_in, n_out, activation, rng=rng, dtype=f64, backend=backend)

    encoder = Sequential(Flatten(backend=backend), linear(6, 5), Tanh(backend=backend),
                         linear(5, 5), Tanh(backend=backend), linear(5, 4),
                         Tanh(backend=backend), linear(4, 6))
    decoder = Sequential(linear(3, 5, "softplus"), linear(5, 6), Reshape(1, 2, 3,
                                                                         backend=backend))
    model = VAE(encoder, decoder, latent_dim=3, likelihood=GaussianLearnedVariance(),
                seed=seed, backend=backend)
    model.params["decoder.logvar"][...] = rng.uniform(-1.0, 0.5, (1, 2, 3))
    reports.append(check_model(model, rng.random((4, 1, 2, 3)), beta=0.5, rng=rng,
                               title="VAE(encoder: Flatten, 3 x (Linear, Tanh), Linear; "
                                     "decoder: Linear softplus, Linear, Reshape(1, 2, 3)), "
                                     "learned-variance Gaussian, beta 0.5"))
    reports += conv_checks(backend, seed)  # the conv layers, and the conv VAE and autoencoder
    return reports


def conv_checks(backend=None, seed: int = 0):
    """Gradient checks of the conv layers and the conv models (``numpyvae gradcheck``).

    In float64 with small sizes: ``Conv2d`` and ``ConvTranspose2d`` with
    unequal kernel sides, strides and paddings (and a fused activation),
    then the convolutional VAE and autoencoder on 8 x 12 images, and the
    conditional one on the same images as rows (as the command line trains
    it, through ``LabelChannels``), end to end with the noise held fixed. The
    whole models are checked with step ``h = 1e-4``: their loss is a sum of
    ~100 terms, and with a smaller step the rounding of that sum, not the
    gradient, sets the error.
    """
    from .conv import Conv2d, ConvTranspose2d
    from .convnet import conv_cvae, conv_vae

    rng = np.random.default_rng(seed)
    f64 = "float64"
    reports = []
    layers = [
        (Conv2d(3, 4, (3, 2), (2, 1), (1, 0), "tanh", rng=rng, dtype=f64, backend=backend),
         "Conv2d(3, 4, kernel (3, 2), stride (2, 1), padding (1, 0), tanh)"),
        (ConvTranspose2d(3, 2, 3, 2, 1, output_padding=1, rng=rng, dtype=f64, backend=backend),
         "ConvTranspose2d(3, 2, kernel 3, stride 2, padding 1, output_padding 1)"),
    ]
    for layer, title in layers:
        reports.append(check_layer(layer, rng.standard_normal((2, 3, 7, 6)), rng=rng,
                                   h=1e-5, title=title))
    x = rng.random((2, 1, 8, 12))
    for autoencoder in (False, True):
        model = conv_vae((8, 12), 3, channels=(2, 3), seed=seed, dtype=f64, backend=backend,
                         autoencoder=autoencoder)
        name = "Autoencoder" if autoencoder else "VAE"
        reports.append(check_model(model, x, rng=rng, h=1e-4,
                                   title=f"conv {name} (8 x 12 images, channels 2 3, latent 3)"))
    model = conv_cvae((8, 12), 3, 4, channels=(2, 3), seed=seed, dtype=f64, backend=backend,
                      flat=True)
    reports.append(check_model(model, x.reshape(2, -1), labels=np.array([3, 1]), rng=rng,
                               h=1e-4, title="conv CVAE (8 x 12 images as rows, 4 classes, "
                                             "channels 2 3, latent 3)"))
    return reports
