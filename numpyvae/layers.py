"""Layers with explicit ``forward`` and ``backward``: Layer, Linear, activations,
Flatten, Reshape, LabelChannels, Sequential.

A layer owns ``params`` and ``grads`` (dicts with identical keys). ``forward(x)``
keeps one cache of what ``backward`` needs (overwritten on each call);
``backward(dout)`` returns ``dx`` and *accumulates* (``+=``) into ``grads``;
``zero_grad()`` clears them. The arithmetic is the backend's
(:mod:`numpyvae.backend`); the derivations are in the docstrings of
:mod:`numpyvae.ops`.

Shapes. Data flows as ``(B, ...)``: a batch axis first, then each example's
shape. Activations take any such shape; ``Linear`` takes ``(B, F)``; image
data can stay ``(B, C, H, W)`` until a :class:`Flatten`, and :class:`Reshape`
goes back. Every layer says what it does to an example's shape with
:meth:`Layer.output_shape`, so a model can check a network before running it.

Specs. ``layer.spec()`` is a JSON-able description (``{"type": "Linear",
"in_features": 784, ...}``) and :func:`layer_from_spec` rebuilds the layer
from it: model files record their networks this way. Every subclass of
:class:`Layer` registers itself in :data:`LAYER_TYPES` by class name.

What does not live here: the Gaussian posterior and the likelihoods
(:mod:`numpyvae.distributions`), the models (:mod:`numpyvae.model`),
optimizer state (:mod:`numpyvae.optim`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from .backend import get_backend
from .init import get_initializer
from .ops import ACTIVATIONS

#: Every layer class by name, for :func:`layer_from_spec` (filled in by ``Layer``'s subclasses).
LAYER_TYPES: dict[str, type] = {}

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




def _shape_text(example_shape) -> str:
    """``(batch, 6)``, ``(batch, 1, 28, 28)``: how error messages show a batch's shape."""
    return "(batch, " + ", ".join(str(d) for d in example_shape) + ")"


class Layer:
    """Base class: parameters, gradients, a forward cache and a shape contract.

    Attributes
    ----------
    params, grads : dict[str, ndarray]
        Same keys. ``grads`` accumulate across ``backward`` calls until
        :meth:`zero_grad`.

    ``forward`` and ``backward`` return new arrays (the backend's ops
    allocate their results), so a result can be kept across later calls.

    A subclass implements ``forward``, ``backward``, :meth:`output_shape` and
    :meth:`spec` (and :meth:`from_spec` when its constructor needs ``rng`` or
    ``dtype``); defining the class registers it in :data:`LAYER_TYPES`.
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        LAYER_TYPES[cls.__name__] = cls

    def __init__(self, backend=None):
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.backend = get_backend(backend)

    def forward(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, dout: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, x):
        return self.forward(x)

    def output_shape(self, input_shape: tuple) -> tuple:
        """The shape of one example's output for one example's input shape (no batch axis).

        Raises ``ValueError`` naming the layer, the shape it got and the
        shape it expects.
        """
        raise NotImplementedError(f"{type(self).__name__} does not define output_shape()")

    def spec(self) -> dict:
        """A JSON-able description, ``{"type": <class name>, **constructor arguments}``."""
        raise NotImplementedError(f"{type(self).__name__} does not define spec()")

    @classmethod
    def from_spec(cls, spec: dict, *, rng=None, dtype="float32", backend=None) -> Layer:
        """Rebuild a layer from :meth:`spec` (``rng`` and ``dtype`` for layers with weights)."""
        args = {k: v for k, v in spec.items() if k != "type"}
        return cls(**args, backend=backend)

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

    def _check_input(self, x, example_shape: tuple | None, dtype: np.dtype | None,
                     what: str = "input"):
        """Check ``x`` is a float array of shape ``(B, *example_shape)`` (``(B, ...)`` if None).

        ``example_shape`` is a tuple (no batch axis).
        """
        name = type(self).__name__
        if not isinstance(x, np.ndarray):
            raise ValueError(f"{name}: expected a numpy array as {what}, got {type(x).__name__}")
        if example_shape is None:
            if x.ndim < 2:
                raise ValueError(f"{name}: expected {what} of shape (batch, ...), got {x.shape}")
        elif x.shape[1:] != example_shape or x.ndim == 0:
            raise ValueError(
                f"{name}: expected {what} of shape {_shape_text(example_shape)}, got {x.shape}")
        if dtype is not None and x.dtype != dtype:
            raise ValueError(
                f"{name}: expected {what} of dtype {dtype}, got {x.dtype} "
                f"(convert with x.astype('{dtype}'))"
            )
        if dtype is None and x.dtype not in FLOAT_DTYPES:
            raise ValueError(f"{name}: expected a float32 or float64 {what}, got {x.dtype}")

    def _check_batch(self, dout, batch: int):
        # Caught here: a batch of 1 would otherwise broadcast silently.
        if dout.shape[0] != batch:
            raise ValueError(f"{type(self).__name__}: upstream gradient has batch "
                             f"{dout.shape[0]}, forward had {batch}")


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
    :func:`numpyvae.ops.linear_backward`) is

    .. math:: da = dy \\odot f', \\quad dW \\mathrel{+}= x^\\top da, \\quad
              db \\mathrel{+}= \\textstyle\\sum_n da_n, \\quad dx = da\\, W^\\top.

    Set ``skip_input_grad = True`` on a network's first layer to skip ``dx``.
    """

    def __init__(self, in_features, out_features, activation="identity", *, alpha=0.01,
                 init="default", rng=None, dtype="float32", backend=None):
        super().__init__(backend)
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

    def output_shape(self, input_shape):
        if tuple(input_shape) != (self.in_features,):
            raise ValueError(f"{self!r}: expected input shape ({self.in_features},), got "
                             f"{tuple(input_shape)}; put a Flatten() before it for image data")
        return (self.out_features,)

    def spec(self):
        return {"type": "Linear", "in_features": self.in_features,
                "out_features": self.out_features, "activation": self.activation,
                "alpha": self.alpha}

    @classmethod
    def from_spec(cls, spec, *, rng=None, dtype="float32", backend=None):
        args = {k: v for k, v in spec.items() if k != "type"}
        return cls(**args, rng=rng, dtype=dtype, backend=backend)

    def forward(self, x):
        """x: (B, in_features) -> y: (B, out_features)."""
        self._check_input(x, (self.in_features,), self.dtype)
        W, b = self.params["W"], self.params["b"]
        y = self.backend.linear_forward(x, W, b, self.activation, self.alpha)
        self._x, self._y = x, y
        return y

    def backward(self, dout):
        """dout: (B, out_features) -> dx: (B, in_features), or None if ``skip_input_grad``."""
        if self._x is None:
            raise RuntimeError("Linear.backward called before forward")
        self._check_input(dout, (self.out_features,), self.dtype, what="upstream gradient")
        self._check_batch(dout, self._x.shape[0])
        return self.backend.linear_backward(
            dout, self._x, self.params["W"], self._y, self.grads["W"], self.grads["b"],
            self.activation, self.alpha, need_dx=not self.skip_input_grad,
        )

    def __repr__(self):
        act = "" if self.activation == "identity" else f", activation={self.activation!r}"
        return f"Linear({self.in_features}, {self.out_features}{act}, dtype={self.dtype})"


class Activation(Layer):
    """An elementwise activation with no parameters; keeps its output for backward.

    Takes any shape ``(B, ...)``. The backend's kernels see ``(B, F)``, a
    view of the same values, so an image batch runs on the same fused
    kernels as a flat one. The derivative of each activation is written in
    terms of its output in :func:`numpyvae.ops.activation_backward`.
    """

    activation = "identity"

    def __init__(self, backend=None, alpha=0.01):
        super().__init__(backend)
        self.alpha = float(alpha)
        self._y = None       # (B, F): the output as the backend wrote it
        self._shape = None   # (B, ...): the shape forward was given

    def output_shape(self, input_shape):
        return tuple(input_shape)

    def spec(self):
        return {"type": type(self).__name__}

    def forward(self, x):
        """x: (B, ...) -> y: same shape, same dtype."""
        self._check_input(x, None, None)
        flat = x if x.ndim == 2 else x.reshape(x.shape[0], math.prod(x.shape[1:]))
        self._y = self.backend.activation_forward(flat, self.activation, self.alpha)
        self._shape = x.shape
        return self._y if x.ndim == 2 else self._y.reshape(x.shape)

    def backward(self, dout):
        """dout: (B, ...) -> dx: the same shape."""
        if self._y is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        self._check_input(dout, self._shape[1:], self._y.dtype, what="upstream gradient")
        self._check_batch(dout, self._shape[0])
        flat = dout if dout.ndim == 2 else dout.reshape(self._y.shape)
        dx = self.backend.activation_backward(flat, self._y, self.activation, self.alpha)
        return dx if dout.ndim == 2 else dx.reshape(self._shape)

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

    def spec(self):
        return {"type": "LeakyReLU", "alpha": self.alpha}

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


class Flatten(Layer):
    """``(B, d1, d2, ...) -> (B, d1 * d2 * ...)``: each example's values in one row.

    No parameters and no arithmetic: the output holds the same values in C
    order (a view of the input when its memory allows). The Jacobian of a
    reshape is the identity on the values, so the backward is the inverse
    reshape: ``dx = dout.reshape(x.shape)``.
    """

    def __init__(self, backend=None):
        super().__init__(backend)
        self._shape = None  # (B, ...): the shape forward was given

    def output_shape(self, input_shape):
        return (math.prod(input_shape),)

    def spec(self):
        return {"type": "Flatten"}

    def forward(self, x):
        """x: (B, ...) -> (B, prod(...))."""
        self._check_input(x, None, None)
        self._shape = x.shape
        return x.reshape(x.shape[0], math.prod(x.shape[1:]))

    def backward(self, dout):
        """dout: (B, prod(...)) -> dx: (B, ...), the shape forward was given."""
        if self._shape is None:
            raise RuntimeError("Flatten.backward called before forward")
        self._check_input(dout, (math.prod(self._shape[1:]),), None, what="upstream gradient")
        self._check_batch(dout, self._shape[0])
        return dout.reshape(self._shape)

    def __repr__(self):
        return "Flatten()"


class Reshape(Layer):
    """``(B, ...) -> (B, *shape)``: the same values per example, in another shape.

    ``Reshape(C, H, W)`` turns a decoder's ``(B, C*H*W)`` rows back into
    images. Like :class:`Flatten` it has no parameters, and its backward is
    the inverse reshape.
    """

    def __init__(self, *shape, backend=None):
        super().__init__(backend)
        if not shape or not all(isinstance(d, (int, np.integer)) and d >= 1 for d in shape):
            raise ValueError(f"Reshape: expected positive integer sizes, got {shape}")
        self.shape = tuple(int(d) for d in shape)
        self._shape = None  # (B, ...): the shape forward was given

    def output_shape(self, input_shape):
        if math.prod(input_shape) != math.prod(self.shape):
            raise ValueError(f"{self!r}: expected an input of {math.prod(self.shape)} values "
                             f"per example, got shape {tuple(input_shape)}")
        return self.shape

    def spec(self):
        return {"type": "Reshape", "shape": list(self.shape)}

    @classmethod
    def from_spec(cls, spec, *, rng=None, dtype="float32", backend=None):
        return cls(*spec["shape"], backend=backend)

    def forward(self, x):
        """``x``: ``(B, ...)`` with ``prod(shape)`` values per example -> ``(B, *shape)``."""
        self._check_input(x, None, None)
        self.output_shape(x.shape[1:])
        self._shape = x.shape
        return x.reshape(x.shape[0], *self.shape)

    def backward(self, dout):
        """``dout``: ``(B, *shape)`` -> ``dx``: the shape forward was given."""
        if self._shape is None:
            raise RuntimeError("Reshape.backward called before forward")
        self._check_input(dout, self.shape, None, what="upstream gradient")
        self._check_batch(dout, self._shape[0])
        return dout.reshape(self._shape)

    def __repr__(self):
        return f"Reshape({', '.join(str(d) for d in self.shape)})"


def append_label_maps(images, onehot) -> np.ndarray:
    """Images with the label as channels: ``(B, c, H, W)`` and ``(B, C)`` -> ``(B, c + C, H, W)``.

    Channel ``c + k`` of example ``b`` is the constant map ``onehot[b, k]``:
    the one-hot vector broadcast to every position, so a convolution sees the
    label wherever it looks (the usual way of conditioning a convolutional
    network on a class). Any number of spatial axes works.
    """
    B, c = images.shape[:2]
    out = np.empty((B, c + onehot.shape[1], *images.shape[2:]),
                   dtype=np.result_type(images, onehot))
    out[:, :c] = images
    out[:, c:] = onehot.reshape(*onehot.shape, *([1] * (images.ndim - 2)))
    return out


class LabelChannels(Layer):
    """Rows ``[x | e_y]`` -> images with the label as channels: ``(B, D + C) -> (B, c + C, H, W)``.

    The first layer of a conditional convolutional encoder that takes rows of
    pixels (as the command line's models do): the first ``D = c H W`` columns
    of a row are an image, reshaped to ``(c, H, W)``; the last ``C``, the
    one-hot label, each become a constant ``H x W`` map
    (:func:`append_label_maps`). So the conditional VAE's ``[x | e_y]`` rows
    reach the first convolution as exactly what an image batch with its label
    maps would be.

    No parameters. The backward splits the same way: the image's columns get
    their channels' gradient, reshaped back; a broadcast's gradient is the sum
    over the positions it was broadcast to, so label column ``k`` of a row
    gets (for a loss :math:`\\ell` and the output :math:`o`)

    .. math:: \\frac{\\partial \\ell}{\\partial e_k}
              = \\sum_{h, w} \\frac{\\partial \\ell}{\\partial o_{c + k, h, w}} .

    In a model the label is data and this part is dropped; it is computed so
    that the layer is a correct layer on its own, checked like every other.
    """

    def __init__(self, image_shape, num_classes, backend=None):
        super().__init__(backend)
        shape = tuple(image_shape) if isinstance(image_shape, (tuple, list)) else ()
        if len(shape) != 3 or not all(isinstance(d, (int, np.integer)) and not
                                      isinstance(d, bool) and d >= 1 for d in shape):
            raise ValueError(f"LabelChannels: image_shape must be three positive sizes "
                             f"(channels, height, width), got {image_shape!r}")
        if not (isinstance(num_classes, (int, np.integer)) and not isinstance(num_classes, bool)
                and num_classes >= 1):
            raise ValueError(f"LabelChannels: num_classes must be a positive integer, got "
                             f"{num_classes!r}")
        self.image_shape = tuple(int(d) for d in shape)
        self.num_classes = int(num_classes)
        self._batch = None  # the batch size forward was given

    @property
    def in_features(self) -> int:
        """``D + C``: the pixels of one image and the label's columns."""
        return math.prod(self.image_shape) + self.num_classes

    def output_shape(self, input_shape):
        if tuple(input_shape) != (self.in_features,):
            raise ValueError(f"{self!r}: expected rows of {math.prod(self.image_shape)} pixels "
                             f"and {self.num_classes} label columns, shape "
                             f"({self.in_features},), got {tuple(input_shape)}")
        c, H, W = self.image_shape
        return (c + self.num_classes, H, W)

    def spec(self):
        return {"type": "LabelChannels", "image_shape": list(self.image_shape),
                "num_classes": self.num_classes}

    def forward(self, x):
        """x: (B, D + C) rows ``[image | one-hot]`` -> (B, c + C, H, W)."""
        self._check_input(x, (self.in_features,), None)
        B, D = x.shape[0], self.in_features - self.num_classes
        self._batch = B
        return append_label_maps(x[:, :D].reshape(B, *self.image_shape), x[:, D:])

    def backward(self, dout):
        """dout: (B, c + C, H, W) -> dx: (B, D + C), the label's columns summed over positions."""
        if self._batch is None:
            raise RuntimeError("LabelChannels.backward called before forward")
        self._check_input(dout, self.output_shape((self.in_features,)), None,
                          what="upstream gradient")
        self._check_batch(dout, self._batch)
        B, c, D = dout.shape[0], self.image_shape[0], self.in_features - self.num_classes
        dx = np.empty((B, self.in_features), dtype=dout.dtype)
        dx[:, :D] = dout[:, :c].reshape(B, D)
        dx[:, D:] = dout[:, c:].sum(axis=(2, 3))
        return dx

    def __repr__(self):
        return (f"LabelChannels(image_shape={self.image_shape}, "
                f"num_classes={self.num_classes})")


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

    def output_shape(self, input_shape):
        shape = tuple(input_shape)
        for i, layer in enumerate(self.children):
            try:
                shape = tuple(layer.output_shape(shape))
            except ValueError as exc:
                raise ValueError(f"layer {i} of the Sequential: {exc}") from None
        return shape

    def spec(self):
        return {"type": "Sequential", "layers": [layer.spec() for layer in self.children]}

    @classmethod
    def from_spec(cls, spec, *, rng=None, dtype="float32", backend=None):
        layers = spec.get("layers")
        if not isinstance(layers, list):
            raise ValueError(f"Sequential: expected a list of layer specs, got {layers!r}")
        return cls(*(layer_from_spec(s, rng=rng, dtype=dtype, backend=backend) for s in layers))

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
        inner = ",\n  ".join(repr(layer).replace("\n", "\n  ") for layer in self.children)
        return f"Sequential(\n  {inner}\n)"


def layer_from_spec(spec, *, rng=None, dtype="float32", backend=None) -> Layer:
    """Rebuild a layer (or a whole network) from its :meth:`Layer.spec`.

    ``rng`` draws the initial weights of layers that have some (a model file
    then overwrites them); ``dtype`` is the model's. Raises ``ValueError``
    for an unknown type or arguments the layer does not take.
    """
    if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
        raise ValueError(f"a layer spec must be a dict with a 'type', got {spec!r}")
    cls = LAYER_TYPES.get(spec["type"])
    if cls is None:
        raise ValueError(f"unknown layer type {spec['type']!r}; expected one of "
                         f"{sorted(LAYER_TYPES)}")
    try:
        return cls.from_spec(spec, rng=rng, dtype=dtype, backend=backend)
    except (TypeError, KeyError) as exc:
        raise ValueError(f"invalid {spec['type']} spec {spec!r} ({exc})") from None


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
    """Move parameters and gradients into two flat buffers, rebinding views in their owners.

    ``slots`` are ``(name, owner, key)`` triples as from :meth:`Layer.named_slots`
    (an owner is anything with ``params`` and ``grads`` dicts: a layer or a
    likelihood). Afterwards every ``owner.params[key]`` (and ``grads[key]``)
    is a reshaped view of one contiguous array, so an optimizer can update
    all parameters with one fused call. Values are preserved.

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
