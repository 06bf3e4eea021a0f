"""The NumPy reference backend: the readable specification of every operation.

Every function here is an operation that layers, models and optimizers call by
name through a backend (see :mod:`numpyvae.backend`). The Numba backend
(:mod:`numpyvae.fast.numba_ops`) provides the same names with fused, jitted
kernels and is tested against these functions, so when the two disagree, this
file is right.

Conventions
-----------
* Shapes use ``B`` for the batch, ``I``/``O`` for a layer's input/output
  features, ``L`` for the latent dimension and ``D`` for the data dimension.
* ``logvar`` is :math:`\\log\\sigma^2`, and :math:`\\sigma = \\exp(\\tfrac12\\,\\mathrm{logvar})`.
* An array keeps its dtype: nothing here upcasts float32 to float64.
* Every op is a plain function of its inputs: it returns new arrays and
  changes none of its inputs, with two exceptions. Backward functions
  *accumulate* the gradients of parameters into the caller's arrays
  (``dW += ...``, as micrograd does and as the layers' ``+=`` contract needs),
  and the optimizer updates change the parameters and their own state in
  place (that is what an update is). Input gradients are returned.

What does not live here: the layer objects (:mod:`numpyvae.layers`), the
distribution objects that call the latent and likelihood ops
(:mod:`numpyvae.distributions`), the model wiring (:mod:`numpyvae.model`) and
the optimizer state (:mod:`numpyvae.optim`). Nor anything that is only
there for speed (output buffers, cache blocking, flushing subnormal numbers,
scratch arrays): that is the fast path's (:mod:`numpyvae.fast`), and the
tests hold it to the numbers computed here.
"""

from __future__ import annotations

import numpy as np

NAME = "numpy"

#: log(2 pi) as a Python float, which adopts the dtype of the array it meets.
LOG_2PI = float(np.log(2 * np.pi))

#: Activation names every backend understands.
ACTIVATIONS = ("identity", "relu", "leaky_relu", "tanh", "sigmoid", "softplus")


def sigmoid(x):
    """Logistic function, computed without overflow for any sign of ``x``.

    Uses :math:`\\sigma(x) = 1/(1+e^{-x})` for ``x >= 0`` and
    :math:`e^{x}/(1+e^{x})` for ``x < 0``, so ``exp`` only sees non-positive
    arguments.
    """
    return sigmoid_from(x, np.exp(-np.abs(x)))


def sigmoid_from(x, e):
    """:func:`sigmoid` of ``x``, given ``e = exp(-|x|)`` (a caller may have it)."""
    return np.where(x >= 0, 1, e) / (1 + e)


# --------------------------------------------------------------------------
# Activations
# --------------------------------------------------------------------------


def activation_forward(x, activation, alpha=0.01):
    """Apply an elementwise activation.

    Parameters
    ----------
    x : ndarray, shape (B, O)
    activation : str
        One of :data:`ACTIVATIONS`.
    alpha : float
        Negative slope of ``leaky_relu`` (ignored by the others).

    Returns
    -------
    y : ndarray, shape (B, O), same dtype as ``x``
        A new array (for the identity too).
    """
    if activation == "identity":
        return x.copy()
    if activation == "relu":
        return np.maximum(x, 0)
    if activation == "leaky_relu":
        return x * np.where(x > 0, 1, alpha).astype(x.dtype)
    if activation == "tanh":
        return np.tanh(x)
    if activation == "sigmoid":
        return sigmoid(x)
    if activation == "softplus":
        # log(1 + e^x) = max(x, 0) + log1p(e^{-|x|}), finite for every x.
        return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))
    raise ValueError(f"unknown activation {activation!r}; expected one of {ACTIVATIONS}")


def activation_backward(dy, y, activation, alpha=0.01):
    """Backward of :func:`activation_forward`, written in terms of the output ``y``.

    Every activation here has a derivative that is a function of its own
    output, so only ``y`` needs to be kept for backward:

    .. math::

        \\mathrm{relu}'      &= [y > 0] \\\\
        \\mathrm{leaky}'     &= [y > 0] + \\alpha [y \\le 0] \\\\
        \\tanh'              &= 1 - y^2 \\\\
        \\sigma'             &= y (1 - y) \\\\
        \\mathrm{softplus}'(x) &= \\sigma(x) = 1 - e^{-y}
                              \\quad (y = \\log(1 + e^x) \\Rightarrow e^{-y} = 1 - \\sigma(x))

    and :math:`dx = dy \\odot f'`. The softplus form uses ``-expm1(-y)`` so it
    stays accurate when ``y`` is tiny. (For ``leaky_relu`` with ``alpha > 0``
    the sign of ``y`` is the sign of ``x``.)

    Parameters
    ----------
    dy : ndarray, shape (B, O)
        Upstream gradient.
    y : ndarray, shape (B, O)
        The activation's output from the forward pass.

    Returns
    -------
    dx : ndarray, shape (B, O)
        A new array (for the identity too).
    """
    if activation == "identity":
        return dy.copy()
    if activation == "relu":
        return dy * (y > 0)
    if activation == "leaky_relu":
        return dy * np.where(y > 0, 1, alpha).astype(y.dtype)
    if activation == "tanh":
        return dy * (1 - y * y)
    if activation == "sigmoid":
        return dy * (y * (1 - y))
    if activation == "softplus":
        return dy * -np.expm1(-y)
    raise ValueError(f"unknown activation {activation!r}; expected one of {ACTIVATIONS}")


# --------------------------------------------------------------------------
# Linear layer, optionally followed by an activation
# --------------------------------------------------------------------------


def linear_forward(x, W, b, activation="identity", alpha=0.01):
    """``y = f(x @ W + b)`` for an activation ``f``.

    Parameters
    ----------
    x : ndarray, shape (B, I)
    W : ndarray, shape (I, O)
    b : ndarray, shape (O,)

    Returns
    -------
    y : ndarray, shape (B, O)
    """
    a = x @ W + b
    return a if activation == "identity" else activation_forward(a, activation, alpha)


def linear_backward(dy, x, W, y, dW, db, activation="identity", alpha=0.01, need_dx=True):
    """Backward of :func:`linear_forward`.

    With the pre-activation :math:`a = xW + b` and :math:`y = f(a)`, the chain
    rule gives :math:`da = dy \\odot f'(a)` (see :func:`activation_backward`),
    and then, because :math:`a_{nj} = \\sum_i x_{ni} W_{ij} + b_j`,

    .. math::

        \\frac{\\partial L}{\\partial W_{ij}} = \\sum_n x_{ni}\\, da_{nj}
            \\;\\Rightarrow\\; dW = x^\\top da, \\qquad
        db = \\sum_n da_{n\\cdot}, \\qquad
        dx = da\\, W^\\top .

    Parameters
    ----------
    dy : ndarray, shape (B, O)
        Upstream gradient with respect to ``y``.
    x : ndarray, shape (B, I)
        The forward input.
    W : ndarray, shape (I, O)
    y : ndarray, shape (B, O)
        The forward output (used for the activation's derivative).
    dW : ndarray, shape (I, O)
        Accumulated into (``+=``).
    db : ndarray, shape (O,)
        Accumulated into (``+=``).
    need_dx : bool
        ``False`` skips ``dx`` (the first layer of a network needs none).

    Returns
    -------
    dx : ndarray, shape (B, I), or None when ``need_dx`` is False
    """
    da = dy if activation == "identity" else activation_backward(dy, y, activation, alpha)
    dW += x.T @ da
    db += da.sum(axis=0)
    if not need_dx:
        return None
    return da @ W.T


def matmul(a, b):
    """``a @ b`` for 2-D arrays: ``(M, K) @ (K, N) -> (M, N)``."""
    return a @ b


# --------------------------------------------------------------------------
# The Gaussian latent layer: reparameterization and KL to N(0, I)
# --------------------------------------------------------------------------


def reparameterize(mu, logvar, eps):
    """Draw ``z = mu + sigma * eps`` with ``sigma = exp(logvar / 2)``.

    Sampling :math:`z \\sim \\mathcal N(\\mu, \\sigma^2)` directly has no
    gradient with respect to :math:`\\mu` or :math:`\\sigma`; writing the
    sample as a deterministic function of the parameters and independent
    noise :math:`\\varepsilon \\sim \\mathcal N(0, I)` moves the randomness
    out of the path of the gradient.

    Parameters
    ----------
    mu, logvar, eps : ndarray, shape (B, L)

    Returns
    -------
    z : ndarray, shape (B, L)
    """
    return mu + np.exp(0.5 * logvar) * eps


def reparameterize_backward(dz, logvar, eps):
    """Backward of :func:`reparameterize`.

    .. math::

        z = \\mu + e^{\\frac12 \\mathrm{logvar}}\\,\\varepsilon
        \\quad\\Rightarrow\\quad
        \\frac{\\partial z}{\\partial \\mu} = 1, \\qquad
        \\frac{\\partial z}{\\partial\\, \\mathrm{logvar}}
            = \\tfrac12\\, e^{\\frac12 \\mathrm{logvar}}\\,\\varepsilon
            = \\tfrac12\\, \\sigma\\, \\varepsilon ,

    so :math:`d\\mu = dz` and
    :math:`d\\,\\mathrm{logvar} = \\tfrac12\\, dz\\, \\varepsilon\\, \\sigma`.

    Returns
    -------
    dmu, dlogvar : ndarray, shape (B, L)
        New arrays.
    """
    return dz.copy(), 0.5 * dz * eps * np.exp(0.5 * logvar)


def gaussian_kl(mu, logvar):
    """KL(N(mu, sigma^2) || N(0, I)) in closed form, summed over dimensions.

    For one dimension, with :math:`q = \\mathcal N(\\mu, \\sigma^2)` and
    :math:`p = \\mathcal N(0, 1)`,

    .. math::

        \\mathrm{KL}(q \\,\\|\\, p)
        = \\mathbb E_q[\\log q - \\log p]
        = -\\tfrac12(1 + \\log\\sigma^2) + \\tfrac12(\\sigma^2 + \\mu^2)
        = \\tfrac12\\,(\\mu^2 + e^{\\mathrm{logvar}} - 1 - \\mathrm{logvar}),

    using :math:`\\mathbb E_q[(z-\\mu)^2] = \\sigma^2` and
    :math:`\\mathbb E_q[z^2] = \\sigma^2 + \\mu^2`.

    Parameters
    ----------
    mu, logvar : ndarray, shape (B, L)

    Returns
    -------
    kl : ndarray, shape (B,)
        One value per example, in nats.
    """
    return np.sum(0.5 * (mu * mu + np.exp(logvar) - 1 - logvar), axis=1)


def gaussian_kl_backward(dkl, mu, logvar):
    """Backward of :func:`gaussian_kl` for an upstream gradient per example.

    Differentiating the closed form term by term,

    .. math::

        \\frac{\\partial\\, \\mathrm{KL}}{\\partial \\mu} = \\mu, \\qquad
        \\frac{\\partial\\, \\mathrm{KL}}{\\partial\\, \\mathrm{logvar}}
            = \\tfrac12\\,(e^{\\mathrm{logvar}} - 1).

    Parameters
    ----------
    dkl : ndarray, shape (B,)
        Upstream gradient of each example's KL.

    Returns
    -------
    dmu, dlogvar : ndarray, shape (B, L)
        New arrays.
    """
    g = dkl[:, None]
    return g * mu, g * (0.5 * np.expm1(logvar))


def latent_forward(h, eps):
    """The whole Gaussian latent layer: split, sample and KL.

    The encoder's last layer has width ``2 L``: its first half is
    :math:`\\mu`, its second half :math:`\\log\\sigma^2`.

    Parameters
    ----------
    h : ndarray, shape (B, 2L)
    eps : ndarray, shape (B, L)

    Returns
    -------
    z : ndarray, shape (B, L)
    kl : ndarray, shape (B,)
    """
    L = eps.shape[1]
    mu, logvar = h[:, :L], h[:, L:]
    return reparameterize(mu, logvar, eps), gaussian_kl(mu, logvar)


def latent_backward(dz, h, eps, dkl, free_bits=0.0):
    """Backward of :func:`latent_forward`: both paths into ``mu`` and ``logvar``.

    ``mu`` and ``logvar`` reach the loss twice, through ``z`` and through the
    KL, so their gradients are the sums of :func:`reparameterize_backward`
    and :func:`gaussian_kl_backward`.

    With ``free_bits = lambda > 0`` the KL of each latent dimension, averaged
    over the batch, is replaced by ``max(lambda, KL_j)`` (Kingma et al.,
    2016): dimensions whose batch-mean KL is below ``lambda`` receive no KL
    gradient.

    Parameters
    ----------
    dz : ndarray, shape (B, L)
    h : ndarray, shape (B, 2L)
    eps : ndarray, shape (B, L)
    dkl : ndarray, shape (B,)
        Upstream gradient of each example's KL (e.g. ``beta / B``).

    Returns
    -------
    dh : ndarray, shape (B, 2L)
        ``[dmu | dlogvar]``.
    """
    L = eps.shape[1]
    mu, logvar = h[:, :L], h[:, L:]
    dmu, dlogvar = reparameterize_backward(dz, logvar, eps)
    kl_mu, kl_logvar = gaussian_kl_backward(dkl, mu, logvar)
    if free_bits > 0:
        active = (kl_per_dimension(mu, logvar) > free_bits).astype(h.dtype)
        kl_mu, kl_logvar = kl_mu * active, kl_logvar * active
    return np.concatenate([dmu + kl_mu, dlogvar + kl_logvar], axis=1)


def kl_per_dimension(mu, logvar):
    """Batch-mean KL of each latent dimension, shape (L,)."""
    return np.mean(0.5 * (mu * mu + np.exp(logvar) - 1 - logvar), axis=0)


# --------------------------------------------------------------------------
# Reconstruction terms: negative log-likelihoods of the decoder
# --------------------------------------------------------------------------


def bernoulli_nll(logits, x):
    """Binary cross-entropy with logits, summed over pixels: -log p(x | z).

    With :math:`p = \\sigma(l)`,
    :math:`-\\log p(x\\mid l) = -x\\log\\sigma(l) - (1-x)\\log(1-\\sigma(l))
    = \\log(1 + e^{l}) - x\\,l`, evaluated as
    :math:`\\max(l, 0) - x\\,l + \\log(1 + e^{-|l|})`, which is finite for any
    logit (at :math:`|l| = 100` too). ``x`` may be any value in [0, 1].

    Parameters
    ----------
    logits, x : ndarray, shape (B, D)

    Returns
    -------
    nll : ndarray, shape (B,)
    """
    return np.sum(bernoulli_per_pixel(logits, x, np.exp(-np.abs(logits))), axis=1)


def bernoulli_per_pixel(logits, x, e):
    """:func:`bernoulli_nll`'s terms, pixel by pixel, given ``e = exp(-|logits|)``."""
    return np.maximum(logits, 0) - x * logits + np.log1p(e)


def bernoulli_nll_backward(dnll, logits, x):
    """Backward of :func:`bernoulli_nll`.

    .. math::

        \\frac{\\partial}{\\partial l}\\big(\\log(1 + e^{l}) - x\\,l\\big)
        = \\sigma(l) - x .

    Parameters
    ----------
    dnll : ndarray, shape (B,)

    Returns
    -------
    dlogits : ndarray, shape (B, D)
    """
    return (sigmoid(logits) - x) * dnll[:, None]


def gaussian_nll(mean, logvar, x):
    """Gaussian negative log-likelihood, summed over pixels.

    .. math::

        -\\log \\mathcal N(x; m, \\sigma^2)
        = \\tfrac12\\big(\\log 2\\pi + \\mathrm{logvar}
          + (x - m)^2 e^{-\\mathrm{logvar}}\\big).

    Parameters
    ----------
    mean, x : ndarray, shape (B, D)
    logvar : ndarray, shape (D,) or ()
        One log-variance per pixel (learned) or a single fixed one.

    Returns
    -------
    nll : ndarray, shape (B,)
    """
    r = x - mean
    per_pixel = 0.5 * (LOG_2PI + logvar + r * r * np.exp(-logvar))
    return np.sum(per_pixel.astype(mean.dtype, copy=False), axis=1)


def gaussian_nll_backward(dnll, mean, logvar, x):
    """Backward of :func:`gaussian_nll`.

    .. math::

        \\frac{\\partial}{\\partial m} = (m - x)\\, e^{-\\mathrm{logvar}}, \\qquad
        \\frac{\\partial}{\\partial\\, \\mathrm{logvar}}
            = \\tfrac12\\big(1 - (x - m)^2 e^{-\\mathrm{logvar}}\\big).

    Parameters
    ----------
    dnll : ndarray, shape (B,)

    Returns
    -------
    dmean : ndarray, shape (B, D)
    dlogvar_per_example : ndarray, shape (B, D)
        Each example's contribution; the caller reduces it to the shape of
        ``logvar`` (sum over the batch for a per-pixel log-variance).
    """
    inv_var = np.exp(-logvar)
    r = mean - x
    g = dnll[:, None]
    dmean = (g * (r * inv_var)).astype(mean.dtype, copy=False)
    dlogvar = (g * 0.5 * (1 - r * r * inv_var)).astype(mean.dtype, copy=False)
    return dmean, dlogvar


def bernoulli_nll_and_grad(logits, x, scale):
    """Per-example Bernoulli NLL and ``scale`` times its gradient, in one call.

    The loss of a batch is ``mean(nll)``, so ``scale`` is usually ``1 / B``.
    :func:`bernoulli_nll` and :func:`bernoulli_nll_backward` in one, sharing
    :math:`e^{-|l|}` (the same numbers as those two).

    Returns
    -------
    nll : ndarray, shape (B,)
    dlogits : ndarray, shape (B, D)
    """
    e = np.exp(-np.abs(logits))  # e^{-|l|}: shared by the loss and sigma(l)
    nll = np.sum(bernoulli_per_pixel(logits, x, e), axis=1)
    dlogits = (sigmoid_from(logits, e) - x) * logits.dtype.type(scale)
    return nll, dlogits


def gaussian_nll_and_grad(mean, logvar, x, scale, dlogvar):
    """Per-example Gaussian NLL and ``scale`` times its gradients, in one call.

    ``dlogvar`` (shape of ``logvar``) is accumulated into with the gradient
    summed over the batch; pass ``None`` for a fixed variance.

    Returns
    -------
    nll : ndarray, shape (B,)
    dmean : ndarray, shape (B, D)
    """
    nll = gaussian_nll(mean, logvar, x)
    dnll = np.full(mean.shape[:1], scale, dtype=mean.dtype)
    dmean, dlogvar_each = gaussian_nll_backward(dnll, mean, logvar, x)
    if dlogvar is not None:
        dlogvar += dlogvar_each.sum(axis=0).reshape(dlogvar.shape)
    return nll, dmean


# --------------------------------------------------------------------------
# Optimizer updates (in place, on flat or shaped arrays alike)
# --------------------------------------------------------------------------


def sgd_update(param, grad, velocity, lr, momentum, nesterov, weight_decay):
    """One SGD step in place, PyTorch's formulation.

    .. math::

        g \\leftarrow g + \\lambda\\,\\theta, \\quad
        v \\leftarrow \\mu v + g, \\quad
        \\theta \\leftarrow \\theta - \\eta\\,(g + \\mu v \\text{ if Nesterov else } v).

    ``param`` and ``velocity`` are updated in place (``velocity`` is ignored
    when ``momentum == 0``); ``grad`` is read only.
    """
    g = grad + weight_decay * param if weight_decay else grad
    if momentum:
        velocity *= momentum
        velocity += g
        g = g + momentum * velocity if nesterov else velocity
    param -= (lr * g).astype(param.dtype, copy=False)


def adam_update(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step, decoupled):
    """One Adam (or AdamW, when ``decoupled``) step in place, PyTorch's formulation.

    .. math::

        m &\\leftarrow \\beta_1 m + (1-\\beta_1)\\, g, \\qquad
        v \\leftarrow \\beta_2 v + (1-\\beta_2)\\, g^2, \\\\
        \\theta &\\leftarrow \\theta - \\eta\\,
            \\frac{m / (1-\\beta_1^t)}{\\sqrt{v / (1-\\beta_2^t)} + \\epsilon}.

    ``m`` and ``v`` are the running averages of the gradient and of its
    square; dividing by :math:`1-\\beta^t` removes their bias toward the zeros
    they start from. Adam adds ``weight_decay * param`` to the gradient (L2
    regularisation); AdamW instead shrinks the parameter,
    ``param *= 1 - lr * weight_decay``, before the step (Loshchilov & Hutter,
    2019).

    ``step`` is the 1-based number of this update. ``param``, ``m`` and ``v``
    are updated in place; ``grad`` is read only. Every scalar is cast to the
    parameter's dtype first, so a float32 model steps in float32.
    """
    T = param.dtype.type  # scalars in the parameter's dtype: float64 ones would upcast the step
    if decoupled:
        param *= T(1 - lr * weight_decay)
        g = grad
    else:
        g = grad + T(weight_decay) * param if weight_decay else grad
    m[...] = T(beta1) * m + T(1 - beta1) * g
    v[...] = T(beta2) * v + T(1 - beta2) * (g * g)
    bias1 = 1 - beta1**step
    bias2 = 1 - beta2**step
    param -= T(lr / bias1) * m / (np.sqrt(v) / T(np.sqrt(bias2)) + T(eps))


def sum_of_squares(a):
    """``sum(a**2)`` as a Python float (for global-norm clipping)."""
    flat = a.reshape(-1)
    return float(flat @ flat)


# --------------------------------------------------------------------------
# Convolutions: the naive loops (the definition), then im2col (the matrix form)
# --------------------------------------------------------------------------
#
# Shapes: ``x`` is ``(B, C, H, W)``; a convolution has ``O`` output channels,
# a ``(kh, kw)`` kernel, ``stride = (sh, sw)`` and ``padding = (ph, pw)``; its
# output is ``(B, O, Ho, Wo)`` with ``Ho = (H + 2 ph - kh) // sh + 1``.
# Weights are in PyTorch's layouts: ``(O, C, kh, kw)`` for a convolution and
# ``(C, O, kh, kw)`` for a transposed convolution from ``C`` to ``O``
# channels (the weight of the convolution ``O -> C`` whose input-gradient it
# is). :mod:`numpyvae.conv` says why.
#
# The forward pass of a convolution, in index notation (``xp`` is ``x``
# zero-padded by ``ph`` rows and ``pw`` columns on each side):
#
#     y[n,o,i,j] = b[o] + sum_{c,p,q} W[o,c,p,q] xp[n, c, i sh + p, j sw + q]
#
# Each ``xp`` element enters ``y`` linearly, so with ``dy = dL/dy``:
#
#     db[o]       = sum_{n,i,j} dy[n,o,i,j]
#     dW[o,c,p,q] = sum_{n,i,j} dy[n,o,i,j] xp[n, c, i sh + p, j sw + q]
#     dxp[n,c,u,v] = sum over (o,p,q,i,j) with i sh + p = u, j sw + q = v of
#                    dy[n,o,i,j] W[o,c,p,q]
#
# and ``dx`` is ``dxp`` without its padding. im2col gathers the window of
# every output position into a column, ``cols[n][(c,p,q), (i,j)] =
# xp[n, c, i sh + p, j sw + q]``, a ``(C kh kw, Ho Wo)`` matrix per example.
# With ``W2 = W.reshape(O, C kh kw)`` and ``dy_n = dy[n].reshape(O, Ho Wo)``
# the three sums above become matrix products:
#
#     y_n  = W2 @ cols_n + b[:, None]
#     dW2 += sum_n dy_n @ cols_n.T
#     dcols_n = W2.T @ dy_n,   dx_n = col2im(dcols_n)
#
# where col2im is im2col's adjoint: it *adds* every column entry back into
# the position it was gathered from (windows overlap when the stride is
# smaller than the kernel). The transposed convolution is the convolution's
# input-gradient read as a forward pass: ``y = col2im(W2.T @ x_n)`` (plus a
# bias), and its own input-gradient is the convolution's forward,
# ``dx_n = W2 @ im2col(dy_n)``.


def pair(v, what="argument"):
    """``v`` or ``(v, v)`` as a pair of ints."""
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"expected an int or a pair of ints as {what}, got {v!r}")
        return int(v[0]), int(v[1])
    return int(v), int(v)


def conv2d_output_size(size, kernel, stride, padding):
    """Output size of a convolution along each axis: ``(size + 2 padding - kernel) // stride + 1``.

    ``size``, ``kernel``, ``stride``, ``padding`` are pairs ``(h, w)``
    (or ints); returns ``(Ho, Wo)``. Nonpositive when the padded input is
    smaller than the kernel.
    """
    size, kernel, stride, padding = (pair(v) for v in (size, kernel, stride, padding))
    return tuple((n + 2 * p - k) // s + 1
                 for n, k, s, p in zip(size, kernel, stride, padding, strict=True))


def conv_transpose2d_output_size(size, kernel, stride, padding, output_padding=0):
    """Output size of a transposed convolution: ``(size - 1) stride - 2 padding + kernel + op``.

    The inverse of :func:`conv2d_output_size`: a convolution with the same
    kernel, stride and padding maps this output size back to ``size``
    (``output_padding < stride`` picks one of the ``stride`` sizes that do).
    """
    size, kernel, stride, padding, output_padding = (
        pair(v) for v in (size, kernel, stride, padding, output_padding))
    return tuple((n - 1) * s - 2 * p + k + op for n, k, s, p, op
                 in zip(size, kernel, stride, padding, output_padding, strict=True))


def _pad(x, padding):
    ph, pw = padding
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))


def im2col(x, kernel, stride, padding, out_size):
    """Gather every kernel window of ``x`` into a column.

    Parameters
    ----------
    x : ndarray, shape (B, C, H, W)
    kernel, stride, padding : pairs (kh, kw), (sh, sw), (ph, pw)
    out_size : pair (Ho, Wo), the output size of the convolution

    Returns
    -------
    cols : ndarray, shape (B, C * kh * kw, Ho * Wo)
        ``cols[n, (c, p, q), (i, j)] = xp[n, c, i sh + p, j sw + q]``, row
        index ``(c * kh + p) * kw + q``, column index ``i * Wo + j``.

    One strided slice per kernel offset ``(p, q)``: for a fixed offset, the
    entries of every window form the grid ``xp[:, :, p::sh, q::sw]``.
    """
    (kh, kw), (sh, sw), (Ho, Wo) = kernel, stride, out_size
    B, C = x.shape[:2]
    xp = _pad(x, padding)
    cols = np.empty((B, C, kh, kw, Ho, Wo), dtype=x.dtype)
    for p in range(kh):
        for q in range(kw):
            cols[:, :, p, q] = xp[:, :, p:p + sh * Ho:sh, q:q + sw * Wo:sw]
    return cols.reshape(B, C * kh * kw, Ho * Wo)


def col2im(cols, channels, size, kernel, stride, padding, out_size):
    """The adjoint of :func:`im2col`: add every column entry back where it came from.

    Parameters
    ----------
    cols : ndarray, shape (B, C * kh * kw, Ho * Wo)
    channels, size : C and (H, W), the shape of the image to rebuild
    kernel, stride, padding, out_size : as for :func:`im2col`

    Returns
    -------
    x : ndarray, shape (B, C, H, W)
        ``x = sum`` of the entries of ``cols`` over all windows that cover
        each pixel; padding positions are dropped. ``<im2col(x), c> =
        <x, col2im(c)>`` for every ``x`` and ``c``.
    """
    (kh, kw), (sh, sw), (ph, pw), (Ho, Wo), (H, W) = kernel, stride, padding, out_size, size
    B = cols.shape[0]
    cols = cols.reshape(B, channels, kh, kw, Ho, Wo)
    xp = np.zeros((B, channels, H + 2 * ph, W + 2 * pw), dtype=cols.dtype)
    for p in range(kh):
        for q in range(kw):
            xp[:, :, p:p + sh * Ho:sh, q:q + sw * Wo:sw] += cols[:, :, p, q]
    return xp[:, :, ph:ph + H, pw:pw + W]


def conv2d_forward(x, W, b, stride=1, padding=0, activation="identity", alpha=0.01):
    """Convolution ``y = f(conv(x, W) + b)``, by im2col and one matrix product per example.

    Parameters
    ----------
    x : ndarray, shape (B, C, H, W)
    W : ndarray, shape (O, C, kh, kw)
    b : ndarray, shape (O,)
    stride, padding : int or pair
    activation, alpha : as for :func:`linear_forward`

    Returns
    -------
    y : ndarray, shape (B, O, Ho, Wo), same dtype as ``W``

    Notes
    -----
    .. math:: y_{noij} = f\\Big(b_o + \\sum_{c,p,q} W_{ocpq}\\,
              x^{\\mathrm{pad}}_{n,c,i s_h + p, j s_w + q}\\Big),
              \\qquad Y_n = f(W_2\\, \\mathrm{im2col}(x)_n + b)

    derived at the head of this section; :func:`conv2d_forward_naive` is
    the same sum written as loops.
    """
    O, C, kh, kw = W.shape
    stride, padding = pair(stride), pair(padding)
    B = x.shape[0]
    Ho, Wo = conv2d_output_size(x.shape[2:], (kh, kw), stride, padding)
    cols = im2col(x, (kh, kw), stride, padding, (Ho, Wo))
    a = np.matmul(W.reshape(O, C * kh * kw), cols) + b[:, None]  # (B, O, Ho Wo)
    return activation_forward(a.reshape(B, O, Ho, Wo), activation, alpha)


def conv2d_backward(dy, x, W, y, dW, db, stride=1, padding=0, activation="identity",
                    alpha=0.01, need_dx=True):
    """Backward of :func:`conv2d_forward`: accumulate ``dW``, ``db``; return ``dx``.

    Parameters
    ----------
    dy, y : ndarray, shape (B, O, Ho, Wo)
        Upstream gradient and the forward output.
    x : ndarray, shape (B, C, H, W)
    W, dW : ndarray, shape (O, C, kh, kw)
    db : ndarray, shape (O,)

    Returns
    -------
    dx : ndarray, shape (B, C, H, W), or None when ``need_dx`` is False

    Notes
    -----
    With :math:`A = dY \\odot f'(Y)` reshaped per example to ``(O, Ho Wo)``:

    .. math:: db \\mathrel{+}= \\sum_{n,i,j} A_{n,:,ij}, \\quad
              dW_2 \\mathrel{+}= \\sum_n A_n\\, \\mathrm{im2col}(x)_n^\\top, \\quad
              dx_n = \\mathrm{col2im}(W_2^\\top A_n).
    """
    O, C, kh, kw = W.shape
    stride, padding = pair(stride), pair(padding)
    B, _, Ho, Wo = y.shape
    a = activation_backward(dy, y, activation, alpha).reshape(B, O, Ho * Wo)
    db += a.sum(axis=(0, 2))
    cols = im2col(x, (kh, kw), stride, padding, (Ho, Wo))
    dW += np.tensordot(a, cols, axes=([0, 2], [0, 2])).reshape(W.shape)
    if not need_dx:
        return None
    dcols = np.matmul(W.reshape(O, C * kh * kw).T, a)  # (B, C kh kw, Ho Wo)
    # col2im returns a view that drops the padding; a C-ordered copy is what a
    # layer hands on, as every other op's result is.
    return np.ascontiguousarray(col2im(dcols, C, x.shape[2:], (kh, kw), stride, padding,
                                       (Ho, Wo)))


def conv_transpose2d_forward(x, W, b, stride=1, padding=0, output_padding=0,
                             activation="identity", alpha=0.01):
    """Transposed convolution ``y = f(convT(x, W) + b)``: the convolution's input-gradient.

    Parameters
    ----------
    x : ndarray, shape (B, C, H, W)
    W : ndarray, shape (C, O, kh, kw)
    b : ndarray, shape (O,)
    stride, padding, output_padding : int or pair (``output_padding < stride``)

    Returns
    -------
    y : ndarray, shape (B, O, Ho, Wo), ``Ho = (H - 1) sh - 2 ph + kh + oph``

    Notes
    -----
    Let ``conv`` be the convolution from ``O`` to ``C`` channels with weight
    ``W`` (shape ``(C, O, kh, kw)``, read as (out, in, kh, kw)) and the same
    stride and padding. Its input-gradient maps a ``(B, C, H, W)`` gradient
    to a ``(B, O, Ho, Wo)`` one (see :func:`conv2d_backward`); this op is that
    map, plus a bias and an activation:

    .. math:: y_{nouv} = f\\Big(b_o + \\sum_{c,p,q,i,j:\\; i s_h + p = u + p_h,\\;
              j s_w + q = v + p_w} x_{ncij} W_{copq}\\Big), \\qquad
              Y_n = f(\\mathrm{col2im}(W_2^\\top x_n) + b).

    The ``output_padding`` extra rows and columns at the bottom and right
    are reached by no window: they hold ``f(b)``.
    """
    C, O, kh, kw = W.shape
    stride, padding = pair(stride), pair(padding)
    B, _, H, Wd = x.shape
    Ho, Wo = conv_transpose2d_output_size((H, Wd), (kh, kw), stride, padding, output_padding)
    cols = np.matmul(W.reshape(C, O * kh * kw).T, x.reshape(B, C, H * Wd))
    a = col2im(cols, O, (Ho, Wo), (kh, kw), stride, padding, (H, Wd)) + b[:, None, None]
    return activation_forward(a, activation, alpha)


def conv_transpose2d_backward(dy, x, W, y, dW, db, stride=1, padding=0,
                              activation="identity", alpha=0.01, need_dx=True):
    """Backward of :func:`conv_transpose2d_forward`: accumulate ``dW``, ``db``; return ``dx``.

    Parameters
    ----------
    dy, y : ndarray, shape (B, O, Ho, Wo)
    x : ndarray, shape (B, C, H, W)
    W, dW : ndarray, shape (C, O, kh, kw)
    db : ndarray, shape (O,)

    Returns
    -------
    dx : ndarray, shape (B, C, H, W), or None when ``need_dx`` is False

    Notes
    -----
    The forward is linear in ``x``: ``Y_n = col2im(W2.T x_n)``. Its adjoint
    is ``im2col`` followed by ``W2``, i.e. the *convolution* of ``A = dY f'``
    with ``W``, and ``x_n`` meets ``W2`` in a product whose gradient
    is the outer product with the gathered windows:

    .. math:: dx_n = W_2\\, \\mathrm{im2col}(A)_n, \\quad
              dW_2 \\mathrel{+}= \\sum_n x_n\\, \\mathrm{im2col}(A)_n^\\top, \\quad
              db \\mathrel{+}= \\sum_{n,u,v} A_{n,:,uv}.
    """
    C, O, kh, kw = W.shape
    stride, padding = pair(stride), pair(padding)
    B, _, H, Wd = x.shape
    a = activation_backward(dy, y, activation, alpha)
    db += a.sum(axis=(0, 2, 3))
    cols = im2col(a, (kh, kw), stride, padding, (H, Wd))  # (B, O kh kw, H W)
    xr = x.reshape(B, C, H * Wd)
    dW += np.tensordot(xr, cols, axes=([0, 2], [0, 2])).reshape(W.shape)
    if not need_dx:
        return None
    return np.matmul(W.reshape(C, O * kh * kw), cols).reshape(x.shape)


def conv2d_forward_naive(x, W, b, stride=1, padding=0):
    """The convolution as its definition, one output element at a time (cs231n's loops).

    ``y[n,o,i,j] = b[o] + sum(W[o] * window)`` with ``window = xp[n, :, i sh:i sh + kh,
    j sw:j sw + kw]``. Slow; the tests hold :func:`conv2d_forward` to it.
    """
    O, C, kh, kw = W.shape
    (sh, sw), padding = pair(stride), pair(padding)
    B = x.shape[0]
    Ho, Wo = conv2d_output_size(x.shape[2:], (kh, kw), (sh, sw), padding)
    xp = _pad(x, padding)
    y = np.empty((B, O, Ho, Wo), dtype=W.dtype)
    for n in range(B):
        for o in range(O):
            for i in range(Ho):
                for j in range(Wo):
                    window = xp[n, :, i * sh:i * sh + kh, j * sw:j * sw + kw]
                    y[n, o, i, j] = b[o] + np.sum(W[o] * window)
    return y


def conv2d_backward_naive(dy, x, W, stride=1, padding=0):
    """The three sums of the backward pass as loops: returns ``(dx, dW, db)`` (fresh arrays).

    Each output element ``y[n,o,i,j]`` saw ``W[o]`` and one window of
    ``xp``; it sends ``dy[n,o,i,j] * window`` to ``dW[o]`` and
    ``dy[n,o,i,j] * W[o]`` back to that window of ``dxp``.
    """
    O, C, kh, kw = W.shape
    (sh, sw), (ph, pw) = pair(stride), pair(padding)
    B, _, H, Wd = x.shape
    Ho, Wo = dy.shape[2:]
    xp = _pad(x, (ph, pw))
    dxp = np.zeros_like(xp)
    dW = np.zeros_like(W)
    db = dy.sum(axis=(0, 2, 3))
    for n in range(B):
        for o in range(O):
            for i in range(Ho):
                for j in range(Wo):
                    rows, cols_ = slice(i * sh, i * sh + kh), slice(j * sw, j * sw + kw)
                    dW[o] += dy[n, o, i, j] * xp[n, :, rows, cols_]
                    dxp[n, :, rows, cols_] += dy[n, o, i, j] * W[o]
    return dxp[:, :, ph:ph + H, pw:pw + Wd], dW, db


def conv_transpose2d_forward_naive(x, W, b, stride=1, padding=0, output_padding=0):
    """The transposed convolution as loops: each input element stamps ``x * W[c]`` on the output.

    ``x[n,c,i,j]`` adds ``x[n,c,i,j] * W[c]`` (a ``(O, kh, kw)`` block) to
    the padded output at rows ``i sh .. i sh + kh``, columns ``j sw .. j sw + kw``;
    the padding is then cut off and the bias added. These are exactly the
    ``dxp`` loops of :func:`conv2d_backward_naive`, with ``x`` as ``dy``.
    """
    C, O, kh, kw = W.shape
    (sh, sw), (ph, pw) = pair(stride), pair(padding)
    B, _, H, Wd = x.shape
    Ho, Wo = conv_transpose2d_output_size((H, Wd), (kh, kw), (sh, sw), (ph, pw), output_padding)
    yp = np.zeros((B, O, Ho + 2 * ph, Wo + 2 * pw), dtype=W.dtype)
    for n in range(B):
        for c in range(C):
            for i in range(H):
                for j in range(Wd):
                    yp[n, :, i * sh:i * sh + kh, j * sw:j * sw + kw] += x[n, c, i, j] * W[c]
    return yp[:, :, ph:ph + Ho, pw:pw + Wo] + b[:, None, None]


def conv_transpose2d_backward_naive(dy, x, W, stride=1, padding=0):
    """The backward of :func:`conv_transpose2d_forward_naive` as loops: ``(dx, dW, db)``.

    Input element ``x[n,c,i,j]`` stamped ``x * W[c]`` onto one block of the
    padded output, so it receives ``sum(W[c] * block of dyp)`` and sends
    ``x[n,c,i,j] * block of dyp`` to ``dW[c]``.
    """
    C, O, kh, kw = W.shape
    (sh, sw), (ph, pw) = pair(stride), pair(padding)
    B, _, H, Wd = x.shape
    dyp = _pad(dy, (ph, pw))
    dx = np.empty_like(x)
    dW = np.zeros_like(W)
    for n in range(B):
        for c in range(C):
            for i in range(H):
                for j in range(Wd):
                    block = dyp[n, :, i * sh:i * sh + kh, j * sw:j * sw + kw]
                    dx[n, c, i, j] = np.sum(W[c] * block)
                    dW[c] += x[n, c, i, j] * block
    return dx, dW, dy.sum(axis=(0, 2, 3))


# --------------------------------------------------------------------------
# Densities and importance weights: the formulas the bounds share
# --------------------------------------------------------------------------
#
# The importance-weighted objective (numpyvae.iwae) and the estimate of
# log p(x) (numpyvae.evaluate) weigh posterior samples by p(x, z) / q(z|x);
# these are the pieces they have in common. Each takes and returns plain
# arrays, in the dtype it is given.


def gaussian_log_density(eps, logvar=None):
    """Log-density of a diagonal Gaussian at ``z = mu + sigma * eps``, per example.

    Written in terms of the standardised noise ``eps = (z - mu) / sigma``, the
    form in which a reparameterized sample arrives. For one dimension,

    .. math::

        \\log \\mathcal N(z; \\mu, \\sigma^2)
        = -\\tfrac12 \\Big( \\frac{(z - \\mu)^2}{\\sigma^2} + \\log \\sigma^2 + \\log 2\\pi \\Big)
        = -\\tfrac12 \\big( \\varepsilon^2 + \\mathrm{logvar} + \\log 2\\pi \\big),

    summed over the dimensions of the last axis (independent dimensions
    multiply, so their log-densities add). Without ``logvar`` this is the
    standard normal :math:`\\mathcal N(0, I)` (``mu = 0``, ``logvar = 0``),
    and ``eps`` is ``z`` itself: the prior :math:`\\log p(z)`.

    Parameters
    ----------
    eps : ndarray, shape (..., L)
    logvar : ndarray, broadcastable to ``eps``'s shape, optional

    Returns
    -------
    log_density : ndarray, shape (...)
        One value per example (and per sample), in nats.
    """
    terms = eps ** 2 + LOG_2PI
    if logvar is not None:
        terms = terms + logvar
    return -0.5 * np.sum(terms, axis=-1)


def logsumexp(a, axis=-1):
    """:math:`\\log \\sum_i e^{a_i}` along ``axis``, without overflow or underflow.

    With :math:`m = \\max_i a_i`,

    .. math::

        \\log \\sum_i e^{a_i} = m + \\log \\sum_i e^{a_i - m},

    an identity (multiply and divide the sum by :math:`e^m`) whose right side
    exponentiates only numbers :math:`\\le 0`, the largest of them exactly 0:
    the sum lies in :math:`[1, n]`, so neither it nor its log can overflow,
    and log-weights of -1e4 (usual for images) do not underflow to
    :math:`\\log 0`. Its gradient is :func:`importance_weights`:
    :math:`\\partial / \\partial a_k = e^{a_k} / \\sum_i e^{a_i}`.

    Parameters
    ----------
    a : ndarray
    axis : int

    Returns
    -------
    ndarray, ``a``'s shape without ``axis``
    """
    m = np.max(a, axis=axis, keepdims=True)
    total = np.sum(np.exp(a - m), axis=axis, keepdims=True)
    return np.squeeze(m + np.log(total), axis=axis)


def importance_weights(log_w, axis=-1):
    """The normalised importance weights :math:`\\tilde w_k = w_k / \\sum_j w_j` along ``axis``.

    From the log-weights :math:`\\log w_k`, this is the softmax

    .. math::

        \\tilde w_k = \\frac{e^{\\log w_k}}{\\sum_j e^{\\log w_j}}
                    = \\frac{e^{\\log w_k - m}}{\\sum_j e^{\\log w_j - m}},
        \\qquad m = \\max_j \\log w_j ,

    shifted by the maximum as in :func:`logsumexp` (the shift cancels between
    numerator and denominator). It is also the gradient of the log-sum-exp:
    :math:`\\partial \\operatorname{logsumexp}(a) / \\partial a_k =
    e^{a_k} / \\sum_j e^{a_j} = \\tilde w_k`. The weights along ``axis`` are
    non-negative and sum to 1.

    Parameters
    ----------
    log_w : ndarray, e.g. shape (B, K): ``K`` samples of each of ``B`` examples
    axis : int
        The samples' axis.

    Returns
    -------
    ndarray, ``log_w``'s shape
    """
    s = np.exp(log_w - np.max(log_w, axis=axis, keepdims=True))
    return s / np.sum(s, axis=axis, keepdims=True)
