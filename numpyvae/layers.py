"""Layers with explicit ``forward`` and ``backward``: Layer, Linear, activations, Sequential.

A layer owns ``params`` and ``grads`` (dicts with identical keys). ``forward(x)``
keeps one cache of what ``backward`` needs (overwritten on each call);
``backward(dout)`` returns ``dx`` and *accumulates* (``+=``) into ``grads``;
``zero_grad()`` clears them. The arithmetic is the backend's
(:mod:`numpyvae.backend`); the derivations are in the docstrings of
:mod:`numpyvae.backend.reference`.

What does not live here: the Gaussian latent layer and the likelihoods
(:mod:`numpyvae.model` wires them from backend ops), optimizer state
(:mod:`numpyvae.optim`).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .backend import get_backend
from .init import get_initializer

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def as_float_dtype(dtype) -> np.dtype:
    """Normalise ``"float32"``/``np.float64``/... to a ``np.dtype``; only float32/64 allowed."""
    try:
        dt = np.dtype(dtype)
    except (TypeError, ValueError):
        dt = None
    if dt is None or dt not in FLOAT_DTYPES:  # None == np.dtype("float64"): test it first
        raise ValueError(f"unsupported dtype {dtype!r}; expected 'float32' or 'float64'")
    return dt


class Layer:
    """Base class: parameters, gradients, a forward cache and reusable work buffers.

    Attributes
    ----------
    params, grads : dict[str, ndarray]
        Same keys. ``grads`` accumulate across ``backward`` calls until
        :meth:`zero_grad`.
    reuse_buffers : bool
        When True, outputs are written into work buffers kept by the layer,
        so a training step allocates nothing; the array returned by
        ``forward``/``backward`` is then overwritten by the next call.
        Off by default so that results can be kept; models switch it on
        for their internal hot path.
    """

    def __init__(self, backend=None):
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.backend = get_backend(backend)
        self.reuse_buffers = False
        self._buffers: dict[str, np.ndarray] = {}

    def forward(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, dout: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, x):
        return self.forward(x)

    def zero_grad(self) -> None:
        """Set every gradient to zero, in place."""
        for g in self.grads.values():
            g.fill(0)

    def set_backend(self, backend) -> None:
        """Switch the backend this layer calls (a name or a backend module)."""
        self.backend = get_backend(backend)

    def named_slots(self, prefix: str = "") -> Iterator[tuple[str, Layer, str]]:
        """Yield ``(qualified_name, owning_layer, key)`` for every parameter, in order."""
        for key in self.params:
            yield prefix + key, self, key

    def layers(self) -> Iterator[Layer]:
        """This layer and every layer inside it."""
        yield self

    def _buffer(self, name: str, shape: tuple, dtype) -> np.ndarray | None:
        """A work buffer to write into, or ``None`` to let the op allocate."""
        if not self.reuse_buffers:
            return None
        buf = self._buffers.get(name)
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            buf = np.empty(shape, dtype=dtype)
            self._buffers[name] = buf
        return buf

    def _check_input(self, x, features: int | None, dtype: np.dtype | None, what: str = "input"):
        name = type(self).__name__
        if not isinstance(x, np.ndarray):
            raise ValueError(f"{name}: expected a numpy array as {what}, got {type(x).__name__}")
        if x.ndim != 2 or (features is not None and x.shape[1] != features):
            expected = f"(batch, {features})" if features is not None else "(batch, features)"
            raise ValueError(f"{name}: expected {what} of shape {expected}, got {x.shape}")
        if dtype is not None and x.dtype != dtype:
            raise ValueError(
                f"{name}: expected {what} of dtype {dtype}, got {x.dtype} "
                f"(convert with x.astype('{dtype}'))"
            )
        if dtype is None and x.dtype not in FLOAT_DTYPES:
            raise ValueError(f"{name}: expected a float32 or float64 {what}, got {x.dtype}")


class Linear(Layer):
    """Fully connected layer ``y = f(x @ W + b)``; ``f`` is the identity unless given.

    The optional ``activation`` lets a backend fuse the matmul, the bias and
    the activation into one kernel; ``Sequential(Linear(...), ReLU())``
    computes the same function in two steps.

    Parameters
    ----------
    in_features, out_features : int
    activation : str
        ``"identity"`` (default), ``"relu"``, ``"leaky_relu"``, ``"tanh"``,
        ``"sigmoid"`` or ``"softplus"``.
    init : str or callable
        ``"default"`` (PyTorch's ``U(±1/sqrt(in))``), ``"glorot"``/``"xavier"``
        or ``"he"``/``"kaiming"``; see :mod:`numpyvae.init`.
    rng : numpy.random.Generator
    dtype : "float32" or "float64"

    Notes
    -----
    ``params = {"W": (in_features, out_features), "b": (out_features,)}``.
    Forward keeps ``x`` and ``y``; backward (derived in
    :func:`numpyvae.backend.reference.linear_backward`) is

    .. math:: da = dy \\odot f', \\quad dW \\mathrel{+}= x^\\top da, \\quad
              db \\mathrel{+}= \\textstyle\\sum_n da_n, \\quad dx = da\\, W^\\top.

    Set ``skip_input_grad = True`` on a network's first layer to skip ``dx``.
    """

    def __init__(self, in_features, out_features, activation="identity", *, alpha=0.01,
                 init="default", rng=None, dtype="float32", backend=None):
        super().__init__(backend)
        from .backend.reference import ACTIVATIONS

        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; expected one of {ACTIVATIONS}")
        if activation == "leaky_relu" and not alpha > 0:
            # The backward reads the slope off the sign of the output, which
            # is the sign of the input only for a positive alpha.
            raise ValueError(f"Linear: leaky_relu needs alpha > 0, got {alpha}")
        if int(in_features) < 1 or int(out_features) < 1:
            raise ValueError(
                f"Linear: features must be positive, got in={in_features}, out={out_features}"
            )
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.activation, self.alpha = activation, float(alpha)
        self.dtype = as_float_dtype(dtype)
        rng = np.random.default_rng() if rng is None else rng
        W, b = get_initializer(init)(rng, self.in_features, self.out_features, self.dtype)
        self.params = {"W": W, "b": b}
        self.grads = {"W": np.zeros_like(W), "b": np.zeros_like(b)}
        self.skip_input_grad = False
        self._x = self._y = None

    def forward(self, x):
        """x: (B, in_features) -> y: (B, out_features)."""
        self._check_input(x, self.in_features, self.dtype)
        out = self._buffer("y", (x.shape[0], self.out_features), self.dtype)
        W, b = self.params["W"], self.params["b"]
        y = self.backend.linear_forward(x, W, b, self.activation, self.alpha, out=out)
        self._x, self._y = x, y
        return y

    def backward(self, dout):
        """dout: (B, out_features) -> dx: (B, in_features), or None if ``skip_input_grad``."""
        if self._x is None:
            raise RuntimeError("Linear.backward called before forward")
        self._check_input(dout, self.out_features, self.dtype, what="upstream gradient")
        if dout.shape[0] != self._x.shape[0]:
            raise ValueError(
                f"Linear: upstream gradient has batch {dout.shape[0]}, forward had "
                f"{self._x.shape[0]}"
            )
        dx = None
        if not self.skip_input_grad:
            dx = self._buffer("dx", self._x.shape, self.dtype)
        return self.backend.linear_backward(
            dout, self._x, self.params["W"], self._y, self.grads["W"], self.grads["b"],
            self.activation, self.alpha, dx=dx, need_dx=not self.skip_input_grad,
        )

    def __repr__(self):
        act = "" if self.activation == "identity" else f", activation={self.activation!r}"
        return f"Linear({self.in_features}, {self.out_features}{act}, dtype={self.dtype})"


class Activation(Layer):
    """An elementwise activation with no parameters; keeps its output for backward.

    The derivative of each activation is written in terms of its output in
    :func:`numpyvae.backend.reference.activation_backward`.
    """

    activation = "identity"

    def __init__(self, backend=None, alpha=0.01):
        super().__init__(backend)
        self.alpha = float(alpha)
        self._y = None

    def forward(self, x):
        """x: (B, F) -> y: (B, F), same dtype."""
        self._check_input(x, None, None)
        out = self._buffer("y", x.shape, x.dtype)
        self._y = self.backend.activation_forward(x, self.activation, self.alpha, out=out)
        return self._y

    def backward(self, dout):
        """dout: (B, F) -> dx: (B, F)."""
        if self._y is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        self._check_input(dout, self._y.shape[1], self._y.dtype, what="upstream gradient")
        if dout.shape[0] != self._y.shape[0]:
            # Caught here: a batch of 1 would otherwise broadcast silently.
            raise ValueError(
                f"{type(self).__name__}: upstream gradient has batch {dout.shape[0]}, forward "
                f"had {self._y.shape[0]}"
            )
        dx = self._buffer("dx", self._y.shape, self._y.dtype)
        return self.backend.activation_backward(dout, self._y, self.activation, self.alpha, dx=dx)

    def __repr__(self):
        return f"{type(self).__name__}()"


class Identity(Activation):
    """``f(x) = x``; ``f' = 1``."""

    activation = "identity"


class ReLU(Activation):
    """``f(x) = max(x, 0)``; ``f' = [x > 0]`` (0 at the kink)."""

    activation = "relu"


class LeakyReLU(Activation):
    """``f(x) = x`` for ``x > 0``, else ``alpha * x``; ``f' = 1`` or ``alpha``."""

    activation = "leaky_relu"

    def __init__(self, alpha=0.01, backend=None):
        if not alpha > 0:
            raise ValueError(f"LeakyReLU: alpha must be positive, got {alpha}")
        super().__init__(backend, alpha)

    def __repr__(self):
        return f"LeakyReLU(alpha={self.alpha})"


class Tanh(Activation):
    """``f(x) = tanh(x)``; ``f' = 1 - f^2``."""

    activation = "tanh"


class Sigmoid(Activation):
    """``f(x) = 1 / (1 + e^{-x})``; ``f' = f (1 - f)``."""

    activation = "sigmoid"


class Softplus(Activation):
    """``f(x) = log(1 + e^x)``; ``f' = sigmoid(x) = 1 - e^{-f}``."""

    activation = "softplus"


ACTIVATION_LAYERS = {
    cls.activation: cls for cls in (Identity, ReLU, LeakyReLU, Tanh, Sigmoid, Softplus)
}


class Sequential(Layer):
    """Layers applied in order; parameters exposed by qualified name (``"0.W"``, ``"2.b"``, ...).

    ``params`` and ``grads`` are built on access from the children's dicts:
    the arrays are the children's own, so writing into them changes the model.
    """

    def __init__(self, *layers: Layer):
        super().__init__(layers[0].backend if layers else None)
        if not all(isinstance(layer, Layer) for layer in layers):
            raise ValueError("Sequential: every element must be a Layer")
        self.children = list(layers)

    def __len__(self):
        return len(self.children)

    def __getitem__(self, i):
        return self.children[i]

    @property
    def params(self):
        return {name: layer.params[key] for name, layer, key in self.named_slots()}

    @params.setter
    def params(self, value):  # the base class assigns an empty dict
        if value:
            raise AttributeError("Sequential.params is derived from its layers")

    @property
    def grads(self):
        return {name: layer.grads[key] for name, layer, key in self.named_slots()}

    @grads.setter
    def grads(self, value):
        if value:
            raise AttributeError("Sequential.grads is derived from its layers")

    def named_slots(self, prefix=""):
        for i, layer in enumerate(self.children):
            yield from layer.named_slots(f"{prefix}{i}.")

    def layers(self):
        yield self
        for layer in self.children:
            yield from layer.layers()

    def zero_grad(self):
        for layer in self.children:
            layer.zero_grad()

    def set_backend(self, backend):
        self.backend = get_backend(backend)
        for layer in self.children:
            layer.set_backend(self.backend)

    def forward(self, x):
        for layer in self.children:
            x = layer.forward(x)
        return x

    def backward(self, dout):
        for layer in reversed(self.children):
            dout = layer.backward(dout)
        return dout

    def __repr__(self):
        inner = ",\n  ".join(repr(layer) for layer in self.children)
        return f"Sequential(\n  {inner}\n)"


def mlp(sizes, activation="relu", out_activation="identity", *, init="default", rng=None,
        dtype="float32", backend=None) -> Sequential:
    """A multilayer perceptron of fused ``Linear`` layers: ``sizes = (in, h1, ..., out)``.

    Hidden layers use ``activation``, the last uses ``out_activation``; the
    ``i``-th ``Linear`` is named ``"i"`` (so parameters are ``"0.W"``, ``"1.W"``, ...).
    """
    if len(sizes) < 2:
        raise ValueError(f"mlp: need at least input and output sizes, got {tuple(sizes)}")
    rng = np.random.default_rng() if rng is None else rng
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        act = out_activation if i == len(sizes) - 2 else activation
        layers.append(Linear(n_in, n_out, act, init=init, rng=rng, dtype=dtype, backend=backend))
    return Sequential(*layers)


def pack_parameters(slots, dtype) -> tuple[np.ndarray, np.ndarray]:
    """Move parameters and gradients into two flat buffers, rebinding views in their layers.

    ``slots`` are ``(name, layer, key)`` triples as from :meth:`Layer.named_slots`.
    Afterwards every ``layer.params[key]`` (and ``grads[key]``) is a reshaped
    view of one contiguous array, so an optimizer can update all parameters
    with one fused call. Values are preserved.

    Returns
    -------
    flat_params, flat_grads : ndarray, shape (P,)
    """
    slots = list(slots)
    total = sum(layer.params[key].size for _, layer, key in slots)
    flat_params = np.empty(total, dtype=dtype)
    flat_grads = np.zeros(total, dtype=dtype)
    offset = 0
    for _, layer, key in slots:
        p = layer.params[key]
        n = p.size
        view = flat_params[offset:offset + n].reshape(p.shape)
        view[...] = p
        layer.params[key] = view
        layer.grads[key] = flat_grads[offset:offset + n].reshape(p.shape)
        offset += n
    return flat_params, flat_grads
