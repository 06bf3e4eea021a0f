"""Convolution layers: ``Conv2d`` and ``ConvTranspose2d``, with PyTorch's arguments.

Both take images as ``(B, C, H, W)`` and call the backend's ``conv2d_*`` /
``conv_transpose2d_*`` ops; the derivations are in the docstrings below and
in :mod:`numpyvae.ops` (naive loops, then im2col). What does
not live here: the arithmetic (the backend), the convolutional VAE
(:mod:`numpyvae.model`), flattening and reshaping (:mod:`numpyvae.layers`).

Weight layout
-------------
The weights are stored in PyTorch's layouts: ``(out_channels, in_channels,
kh, kw)`` for :class:`Conv2d` and ``(in_channels, out_channels, kh, kw)`` for
:class:`ConvTranspose2d`. The reason is the matrix form: with ``W`` read as a
``(O, C kh kw)`` matrix, one example's output is ``W @ im2col(x_n)``, already
in ``(O, Ho, Wo)`` order, so neither pass transposes anything; and a
transposed convolution's weight is the weight of the convolution whose
input-gradient it is. :meth:`Conv2d.weight_to_torch` and
:meth:`Conv2d.weight_from_torch` (likewise on ``ConvTranspose2d``) convert,
which for these layouts is a copy.

The transposed convolution is the convolution's input-gradient
---------------------------------------------------------------
A convolution ``y = conv(x, W)`` (no bias) is linear in ``x``:
``y = A_W x`` for a sparse matrix ``A_W``. Its backward pass maps an upstream
gradient ``g`` to ``dx = A_W^T g``. ``ConvTranspose2d`` with the same weight,
stride and padding computes exactly ``A_W^T g`` as its forward pass (hence
its name), and its input-gradient is ``(A_W^T)^T = A_W``: the convolution's
forward pass. In code, with ``conv = Conv2d(C, O, k, s, p)`` and
``convT = ConvTranspose2d(O, C, k, s, p, output_padding=op)`` sharing ``W``
and with zero biases::

    conv.forward(x); conv.backward(g)   == convT.forward(g)
    convT.forward(g); convT.backward(h) == conv.forward(h)

for the ``op`` that gives ``convT``'s output ``x``'s size. ``tests/test_conv.py``
checks both identities.
"""

from __future__ import annotations

import numpy as np

from .layers import Layer, as_float_dtype
from .ops import (
    ACTIVATIONS,
    conv2d_output_size,
    conv_transpose2d_output_size,
)


def _pair(value, what, layer, minimum):
    """``value`` as ``(h, w)`` ints ``>= minimum``, or a ValueError naming ``layer``."""
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) for v in pair):
        raise ValueError(f"{layer}: {what} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{layer}: {what} must be >= {minimum}, got {value!r}")
    return int(pair[0]), int(pair[1])


def _spec_value(pair):
    """A pair as JSON: one int when both sides agree, else a list."""
    return pair[0] if pair[0] == pair[1] else list(pair)


class _ConvBase(Layer):
    """What both convolutions share: arguments, weights, checks, the forward cache."""

    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, activation,
                 alpha, rng, dtype, backend):
        super().__init__(backend)
        name = type(self).__name__
        if activation not in ACTIVATIONS:
            raise ValueError(f"{name}: unknown activation {activation!r}; expected one of "
                             f"{ACTIVATIONS}")
        if activation == "leaky_relu" and not alpha > 0:
            raise ValueError(f"{name}: leaky_relu needs alpha > 0, got {alpha}")
        for what, v in (("in_channels", in_channels), ("out_channels", out_channels)):
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name}: {what} must be a positive int, got {v!r}")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = _pair(kernel_size, "kernel_size", name, 1)
        self.stride = _pair(stride, "stride", name, 1)
        self.padding = _pair(padding, "padding", name, 0)
        self.activation, self.alpha = activation, float(alpha)
        self.dtype = as_float_dtype(dtype)
        rng = np.random.default_rng() if rng is None else rng
        # PyTorch's default: kaiming_uniform_(a=sqrt(5)) gives W ~ U(+-1/sqrt(fan_in)),
        # and the bias the same bound, with fan_in = W.shape[1] * kh * kw.
        shape = self._weight_shape()
        bound = 1.0 / np.sqrt(shape[1] * shape[2] * shape[3])
        W = rng.uniform(-bound, bound, size=shape).astype(self.dtype)
        b = rng.uniform(-bound, bound, size=self.out_channels).astype(self.dtype)
        self.params = {"W": W, "b": b}
        self.grads = {"W": np.zeros_like(W), "b": np.zeros_like(b)}
        self.skip_input_grad = False
        self._x = self._y = None

    # -- layout converters -------------------------------------------------

    @staticmethod
    def weight_to_torch(W):
        """This layer's weight as PyTorch's ``weight`` tensor data (the same layout: a copy)."""
        return np.array(W, copy=True)

    @staticmethod
    def weight_from_torch(W):
        """PyTorch's ``weight`` (e.g. ``layer.weight.detach().numpy()``) as this layer's ``W``."""
        return np.array(W, copy=True)

    # -- shapes -------------------------------------------------------------

    def _spatial_output(self, h, w):  # pragma: no cover - abstract
        raise NotImplementedError

    def output_shape(self, input_shape):
        """``(C, H, W) -> (O, Ho, Wo)``; ValueError naming the layer for a wrong shape."""
        name = type(self).__name__
        shape = tuple(int(s) for s in input_shape)
        if len(shape) != 3 or shape[0] != self.in_channels:
            raise ValueError(f"{name}: expected input of shape ({self.in_channels}, H, W), "
                             f"got {shape}")
        Ho, Wo = self._spatial_output(shape[1], shape[2])
        if Ho < 1 or Wo < 1:
            raise ValueError(
                f"{name}: input {shape} is too small for kernel {self.kernel_size} with "
                f"stride {self.stride} and padding {self.padding} (output would be "
                f"{(Ho, Wo)})")
        return self.out_channels, Ho, Wo

    def _check(self, x, what="input", expected=None):
        name = type(self).__name__
        if not isinstance(x, np.ndarray):
            raise ValueError(f"{name}: expected a numpy array as {what}, got {type(x).__name__}")
        if expected is None:
            if x.ndim != 4:
                raise ValueError(f"{name}: expected {what} of shape (batch, {self.in_channels}, "
                                 f"H, W), got {x.shape}")
            self.output_shape(x.shape[1:])
        elif x.shape != expected:
            raise ValueError(f"{name}: expected {what} of shape {expected}, got {x.shape}")
        if x.dtype != self.dtype:
            raise ValueError(f"{name}: expected {what} of dtype {self.dtype}, got {x.dtype} "
                             f"(convert with x.astype('{self.dtype}'))")

    def spec(self):
        spec = {"type": type(self).__name__, "in_channels": self.in_channels,
                "out_channels": self.out_channels,
                "kernel_size": _spec_value(self.kernel_size),
                "stride": _spec_value(self.stride), "padding": _spec_value(self.padding)}
        spec.update(self._extra_spec())
        if self.activation != "identity":
            spec["activation"] = self.activation
            if self.activation == "leaky_relu":
                spec["alpha"] = self.alpha
        return spec

    def _extra_spec(self):
        return {}

    @classmethod
    def from_spec(cls, spec, *, rng=None, dtype="float32", backend=None):
        """Rebuild a layer from :meth:`spec`, drawing fresh weights from ``rng``."""
        args = {k: v for k, v in spec.items() if k != "type"}
        return cls(**args, rng=rng, dtype=dtype, backend=backend)

    def forward(self, x):
        self._check(x)
        self._x = x
        self._y = self._forward(x)
        return self._y

    def backward(self, dout):
        if self._x is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        self._check(dout, "upstream gradient", self._y.shape)
        return self._backward(dout)

    def __repr__(self):
        extra = "".join(f", {k}={v!r}" for k, v in self.spec().items()
                        if k not in ("type", "in_channels", "out_channels"))
        return (f"{type(self).__name__}({self.in_channels}, {self.out_channels}{extra}, "
                f"dtype={self.dtype})")


class Conv2d(_ConvBase):
    """2-D convolution ``y = f(conv(x, W) + b)``, PyTorch's ``nn.Conv2d`` (groups 1, dilation 1).

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, padding : int or (h, w)
        Zero padding on each side; ``stride >= 1``, ``padding >= 0``.
    activation : str
        ``"identity"`` (default) or another of ``reference.ACTIVATIONS``,
        fused into the layer as in :class:`numpyvae.layers.Linear`.
    rng : numpy.random.Generator
    dtype : "float32" or "float64"

    Notes
    -----
    ``params = {"W": (O, C, kh, kw), "b": (O,)}`` (PyTorch's layout), drawn
    from ``U(±1/sqrt(C kh kw))`` as PyTorch does. For ``x`` of shape
    ``(B, C, H, W)`` the output is ``(B, O, Ho, Wo)`` with
    ``Ho = (H + 2 ph - kh) // sh + 1`` (likewise ``Wo``).

    Forward, in index notation (``xp`` is ``x`` zero-padded):

    .. math:: a_{noij} = b_o + \\sum_{c=0}^{C-1}\\sum_{p=0}^{k_h-1}\\sum_{q=0}^{k_w-1}
              W_{ocpq}\\, xp_{n,c,\\,i s_h + p,\\,j s_w + q}, \\qquad y = f(a).

    Backward: with :math:`da = dy \\odot f'(y)`, each term of the sum gives

    .. math:: db_o = \\sum_{n,i,j} da_{noij}, \\qquad
              dW_{ocpq} = \\sum_{n,i,j} da_{noij}\\, xp_{n,c,\\,i s_h+p,\\,j s_w+q},

    .. math:: dxp_{ncuv} = \\sum_{o,p,q}\\ \\sum_{i,j:\\ i s_h + p = u,\\ j s_w + q = v}
              da_{noij}\\, W_{ocpq},

    and ``dx`` is ``dxp`` without the padding. Gathering each window of
    ``xp`` into a column, :math:`\\mathrm{cols}_n[(c,p,q),(i,j)] =
    xp_{n,c,i s_h+p,j s_w+q}` (``im2col``, shape ``(C kh kw, Ho Wo)``), and
    reading ``W`` as the matrix :math:`W_2` of shape ``(O, C kh kw)``, the
    same sums are matrix products:

    .. math:: A_n = W_2\\, \\mathrm{cols}_n + b, \\quad
              dW_2 \\mathrel{+}= \\sum_n dA_n\\, \\mathrm{cols}_n^\\top, \\quad
              dx_n = \\mathrm{col2im}(W_2^\\top dA_n),

    where ``col2im`` adds each column entry back into the pixel it came
    from. That last map, ``g -> col2im(W2.T g)``, is the forward pass of
    :class:`ConvTranspose2d` (see the module docstring).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 activation="identity", *, alpha=0.01, rng=None, dtype="float32", backend=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, activation,
                         alpha, rng, dtype, backend)

    def _weight_shape(self):
        return (self.out_channels, self.in_channels, *self.kernel_size)

    def _spatial_output(self, h, w):
        return conv2d_output_size((h, w), self.kernel_size, self.stride, self.padding)

    def _forward(self, x):
        """x: (B, C, H, W) -> y: (B, O, Ho, Wo)."""
        return self.backend.conv2d_forward(x, self.params["W"], self.params["b"], self.stride,
                                           self.padding, self.activation, self.alpha)

    def _backward(self, dout):
        """dout: (B, O, Ho, Wo) -> dx: (B, C, H, W), or None if ``skip_input_grad``."""
        return self.backend.conv2d_backward(
            dout, self._x, self.params["W"], self._y, self.grads["W"], self.grads["b"],
            self.stride, self.padding, self.activation, self.alpha,
            need_dx=not self.skip_input_grad)


class ConvTranspose2d(_ConvBase):
    """Transposed convolution, PyTorch's ``nn.ConvTranspose2d`` (groups 1, dilation 1).

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, padding : int or (h, w)
    output_padding : int or (h, w)
        Extra rows/columns at the bottom/right of the output, ``< stride``:
        a convolution with stride ``s`` maps ``s`` different sizes to the same
        one, and this picks which the transposed convolution returns.
    activation, rng, dtype : as for :class:`Conv2d`

    Notes
    -----
    ``params = {"W": (C, O, kh, kw), "b": (O,)}`` (PyTorch's layout: the
    weight of the convolution from ``O`` to ``C`` channels that this layer
    transposes), drawn from ``U(±1/sqrt(O kh kw))`` as PyTorch does (its
    ``fan_in`` is computed from ``W.shape[1]``). Output
    ``Ho = (H - 1) sh - 2 ph + kh + oph``, likewise ``Wo``.

    Forward: every input element stamps a scaled copy of its kernel onto
    the (padded) output,

    .. math:: a_{n,o,\\,i s_h + p - p_h,\\,j s_w + q - p_w}
              \\mathrel{+}= x_{ncij}\\, W_{copq}, \\qquad y = f(a + b),

    which is :math:`dxp` of :class:`Conv2d`'s backward with ``x`` in place
    of ``da``. In matrix form, :math:`A_n = \\mathrm{col2im}(W_2^\\top x_n) + b`
    with :math:`W_2` the ``(C, O kh kw)`` matrix of ``W``.

    Backward: the forward is linear in ``x`` with the adjoint of col2im
    being im2col, so with :math:`da = dy \\odot f'(y)` and
    :math:`\\mathrm{cols}_n = \\mathrm{im2col}(da)_n` (shape ``(O kh kw, H W)``):

    .. math:: dx_n = W_2\\, \\mathrm{cols}_n, \\quad
              dW_2 \\mathrel{+}= \\sum_n x_n\\, \\mathrm{cols}_n^\\top, \\quad
              db_o \\mathrel{+}= \\sum_{n,u,v} da_{nouv}.

    ``dx`` is :class:`Conv2d`'s forward (without bias) applied to ``da``: in
    index notation, :math:`dx_{ncij} = \\sum_{o,p,q} W_{copq}\\,
    dap_{n,o,\\,i s_h + p,\\,j s_w + q}`.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, activation="identity", *, alpha=0.01, rng=None,
                 dtype="float32", backend=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, activation,
                         alpha, rng, dtype, backend)
        self.output_padding = _pair(output_padding, "output_padding", type(self).__name__, 0)
        if any(op >= s for op, s in zip(self.output_padding, self.stride, strict=True)):
            raise ValueError(f"ConvTranspose2d: output_padding {self.output_padding} must be "
                             f"smaller than stride {self.stride}")

    def _weight_shape(self):
        return (self.in_channels, self.out_channels, *self.kernel_size)

    def _spatial_output(self, h, w):
        return conv_transpose2d_output_size((h, w), self.kernel_size, self.stride, self.padding,
                                            self.output_padding)

    def _extra_spec(self):
        if self.output_padding == (0, 0):
            return {}
        return {"output_padding": _spec_value(self.output_padding)}

    def _forward(self, x):
        """x: (B, C, H, W) -> y: (B, O, Ho, Wo)."""
        return self.backend.conv_transpose2d_forward(
            x, self.params["W"], self.params["b"], self.stride, self.padding,
            self.output_padding, self.activation, self.alpha)

    def _backward(self, dout):
        """dout: (B, O, Ho, Wo) -> dx: (B, C, H, W), or None if ``skip_input_grad``."""
        return self.backend.conv_transpose2d_backward(
            dout, self._x, self.params["W"], self._y, self.grads["W"], self.grads["b"],
            self.stride, self.padding, self.activation, self.alpha,
            need_dx=not self.skip_input_grad)


__all__ = ["Conv2d", "ConvTranspose2d"]
