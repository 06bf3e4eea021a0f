"""The NumPy reference backend: the readable specification of every operation.

Every function here is an operation that layers, models and optimizers call by
name through a backend (see :mod:`numpyvae.backend`). The Numba backend
(:mod:`numpyvae.backend.numba_ops`) provides the same names with fused, jitted
kernels and is tested against these functions, so when the two disagree, this
file is right.

Conventions
-----------
* Shapes use ``B`` for the batch, ``I``/``O`` for a layer's input/output
  features, ``L`` for the latent dimension and ``D`` for the data dimension.
* ``logvar`` is :math:`\\log\\sigma^2`, and :math:`\\sigma = \\exp(\\tfrac12\\,\\mathrm{logvar})`.
* An array keeps its dtype: nothing here upcasts float32 to float64.
* ``out=`` / ``dx=`` arguments let a caller reuse work buffers; when ``None``
  a fresh array is returned.
* Backward functions that produce parameter gradients *accumulate* into them
  (``dW += ...``); those that produce input gradients *write* them.

What does not live here: the layer objects (:mod:`numpyvae.layers`), the
distribution objects that call the latent and likelihood ops
(:mod:`numpyvae.distributions`), the model wiring (:mod:`numpyvae.model`) and
the optimizer state (:mod:`numpyvae.optim`).
"""

from __future__ import annotations

import numpy as np

from ..buffers import out_or_empty

NAME = "numpy"

#: log(2 pi) as a Python float, which adopts the dtype of the array it meets.
LOG_2PI = float(np.log(2 * np.pi))

#: Activation names every backend understands.
ACTIVATIONS = ("identity", "relu", "leaky_relu", "tanh", "sigmoid", "softplus")


def sigmoid(x, out=None):
    """Logistic function, computed without overflow for any sign of ``x``.

    Uses :math:`\\sigma(x) = 1/(1+e^{-x})` for ``x >= 0`` and
    :math:`e^{x}/(1+e^{x})` for ``x < 0``, so ``exp`` only sees non-positive
    arguments.
    """
    out = out_or_empty(out, x.shape, x.dtype)
    e = np.exp(-np.abs(x))
    np.divide(np.where(x >= 0, 1, e), 1 + e, out=out)
    return out


# --------------------------------------------------------------------------
# Activations
# --------------------------------------------------------------------------


def activation_forward(x, activation, alpha=0.01, out=None):
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
    """
    out = out_or_empty(out, x.shape, x.dtype)
    if activation == "identity":
        out[...] = x
    elif activation == "relu":
        np.maximum(x, 0, out=out)
    elif activation == "leaky_relu":
        np.multiply(x, np.where(x > 0, 1, alpha).astype(x.dtype), out=out)
    elif activation == "tanh":
        np.tanh(x, out=out)
    elif activation == "sigmoid":
        sigmoid(x, out=out)
    elif activation == "softplus":
        # log(1 + e^x) = max(x, 0) + log1p(e^{-|x|}), finite for every x.
        np.add(np.maximum(x, 0), np.log1p(np.exp(-np.abs(x))), out=out)
    else:
        raise ValueError(f"unknown activation {activation!r}; expected one of {ACTIVATIONS}")
    return out


def activation_backward(dy, y, activation, alpha=0.01, dx=None):
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
    """
    dx = out_or_empty(dx, y.shape, y.dtype)
    if activation == "identity":
        dx[...] = dy
    elif activation == "relu":
        np.multiply(dy, y > 0, out=dx)
    elif activation == "leaky_relu":
        np.multiply(dy, np.where(y > 0, 1, alpha).astype(y.dtype), out=dx)
    elif activation == "tanh":
        np.multiply(dy, 1 - y * y, out=dx)
    elif activation == "sigmoid":
        np.multiply(dy, y * (1 - y), out=dx)
    elif activation == "softplus":
        np.multiply(dy, -np.expm1(-y), out=dx)
    else:
        raise ValueError(f"unknown activation {activation!r}; expected one of {ACTIVATIONS}")
    return dx


# --------------------------------------------------------------------------
# Linear layer, optionally followed by an activation
# --------------------------------------------------------------------------


def linear_forward(x, W, b, activation="identity", alpha=0.01, out=None):
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
    out = out_or_empty(out, (x.shape[0], W.shape[1]), W.dtype)
    np.matmul(x, W, out=out)
    out += b
    if activation != "identity":
        activation_forward(out, activation, alpha, out=out)
    return out


def linear_backward(dy, x, W, y, dW, db, activation="identity", alpha=0.01, dx=None,
                    need_dx=True):
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
    dx = out_or_empty(dx, x.shape, W.dtype)
    np.matmul(da, W.T, out=dx)
    return dx


def matmul(a, b, out=None):
    """``a @ b`` for 2-D arrays: ``(M, K) @ (K, N) -> (M, N)``."""
    out = out_or_empty(out, (a.shape[0], b.shape[1]), np.result_type(a, b))
    np.matmul(a, b, out=out)
    return out


# --------------------------------------------------------------------------
# The Gaussian latent layer: reparameterization and KL to N(0, I)
# --------------------------------------------------------------------------


def reparameterize(mu, logvar, eps, out=None):
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
    out = out_or_empty(out, mu.shape, mu.dtype)
    np.multiply(np.exp(0.5 * logvar), eps, out=out)
    out += mu
    return out


def reparameterize_backward(dz, logvar, eps, dmu=None, dlogvar=None):
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
        Written (not accumulated).
    """
    dmu = out_or_empty(dmu, dz.shape, dz.dtype)
    dlogvar = out_or_empty(dlogvar, dz.shape, dz.dtype)
    dmu[...] = dz
    np.multiply(0.5 * dz * eps, np.exp(0.5 * logvar), out=dlogvar)
    return dmu, dlogvar


def gaussian_kl(mu, logvar, out=None):
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
    out = out_or_empty(out, mu.shape[:1], mu.dtype)
    np.sum(0.5 * (mu * mu + np.exp(logvar) - 1 - logvar), axis=1, out=out)
    return out


def gaussian_kl_backward(dkl, mu, logvar, dmu=None, dlogvar=None):
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
        Written (not accumulated).
    """
    dmu = out_or_empty(dmu, mu.shape, mu.dtype)
    dlogvar = out_or_empty(dlogvar, mu.shape, mu.dtype)
    g = dkl[:, None]
    np.multiply(g, mu, out=dmu)
    np.multiply(g, 0.5 * np.expm1(logvar), out=dlogvar)
    return dmu, dlogvar


def latent_forward(h, eps, z=None, kl=None):
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
    return reparameterize(mu, logvar, eps, out=z), gaussian_kl(mu, logvar, out=kl)


def latent_backward(dz, h, eps, dkl, free_bits=0.0, dh=None):
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
    """
    L = eps.shape[1]
    mu, logvar = h[:, :L], h[:, L:]
    dh = out_or_empty(dh, h.shape, h.dtype)
    dmu, dlogvar = reparameterize_backward(dz, logvar, eps)
    kl_mu, kl_logvar = gaussian_kl_backward(dkl, mu, logvar)
    if free_bits > 0:
        active = (kl_per_dimension(mu, logvar) > free_bits).astype(h.dtype)
        kl_mu *= active
        kl_logvar *= active
    np.add(dmu, kl_mu, out=dh[:, :L])
    np.add(dlogvar, kl_logvar, out=dh[:, L:])
    return dh


def kl_per_dimension(mu, logvar):
    """Batch-mean KL of each latent dimension, shape (L,)."""
    return np.mean(0.5 * (mu * mu + np.exp(logvar) - 1 - logvar), axis=0)


# --------------------------------------------------------------------------
# Reconstruction terms: negative log-likelihoods of the decoder
# --------------------------------------------------------------------------


def bernoulli_nll(logits, x, out=None):
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
    out = out_or_empty(out, logits.shape[:1], logits.dtype)
    per_pixel = np.maximum(logits, 0) - x * logits + np.log1p(np.exp(-np.abs(logits)))
    np.sum(per_pixel, axis=1, out=out)
    return out


def bernoulli_nll_backward(dnll, logits, x, dlogits=None):
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
    dlogits = out_or_empty(dlogits, logits.shape, logits.dtype)
    sigmoid(logits, out=dlogits)
    dlogits -= x
    dlogits *= dnll[:, None]
    return dlogits


def gaussian_nll(mean, logvar, x, out=None):
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
    out = out_or_empty(out, mean.shape[:1], mean.dtype)
    r = x - mean
    per_pixel = 0.5 * (LOG_2PI + logvar + r * r * np.exp(-logvar))
    np.sum(per_pixel.astype(mean.dtype, copy=False), axis=1, out=out)
    return out


def gaussian_nll_backward(dnll, mean, logvar, x, dmean=None):
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
    dmean = out_or_empty(dmean, mean.shape, mean.dtype)
    inv_var = np.exp(-logvar)
    r = mean - x
    g = dnll[:, None]
    np.multiply(g, r * inv_var, out=dmean)
    dlogvar = (g * 0.5 * (1 - r * r * inv_var)).astype(mean.dtype, copy=False)
    return dmean, dlogvar


def bernoulli_nll_and_grad(logits, x, scale, nll=None, dlogits=None):
    """Per-example Bernoulli NLL and ``scale`` times its gradient, in one call.

    The loss of a batch is ``mean(nll)``, so ``scale`` is usually ``1 / B``.

    Returns
    -------
    nll : ndarray, shape (B,)
    dlogits : ndarray, shape (B, D)
    """
    nll = bernoulli_nll(logits, x, out=nll)
    dnll = np.full(logits.shape[:1], scale, dtype=logits.dtype)
    return nll, bernoulli_nll_backward(dnll, logits, x, dlogits=dlogits)


def gaussian_nll_and_grad(mean, logvar, x, scale, dlogvar, nll=None, dmean=None):
    """Per-example Gaussian NLL and ``scale`` times its gradients, in one call.

    ``dlogvar`` (shape of ``logvar``) is accumulated into with the gradient
    summed over the batch; pass ``None`` for a fixed variance.

    Returns
    -------
    nll : ndarray, shape (B,)
    dmean : ndarray, shape (B, D)
    """
    nll = gaussian_nll(mean, logvar, x, out=nll)
    dnll = np.full(mean.shape[:1], scale, dtype=mean.dtype)
    dmean, dlogvar_each = gaussian_nll_backward(dnll, mean, logvar, x, dmean=dmean)
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

    ``velocity`` is ignored when ``momentum == 0``.
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

    Adam adds ``weight_decay * param`` to the gradient (L2 regularisation);
    AdamW instead shrinks the parameter, ``param *= 1 - lr * weight_decay``,
    before the step (Loshchilov & Hutter, 2019).

    ``step`` is the 1-based number of this update, for the bias corrections.
    """
    if decoupled:
        param *= param.dtype.type(1 - lr * weight_decay)
        g = grad
    else:
        g = grad + param.dtype.type(weight_decay) * param if weight_decay else grad
    m *= beta1
    m += (1 - beta1) * g
    v *= beta2
    v += (1 - beta2) * (g * g)
    bias1 = 1 - beta1**step
    bias2 = 1 - beta2**step
    # Scalars in the parameter's dtype: a float64 scalar would upcast the whole step.
    denom = np.sqrt(v) / param.dtype.type(np.sqrt(bias2)) + param.dtype.type(eps)
    param -= param.dtype.type(lr / bias1) * m / denom


def sum_of_squares(a):
    """``sum(a**2)`` as a Python float (for global-norm clipping)."""
    flat = a.reshape(-1)
    return float(flat @ flat)
