"""Scalar math shared by every Numba kernel, written once: exp, log1p, sigmoid, softplus, KL.

Each function here computes one number (or is a constant) and is called
from inside the loops of :mod:`numpyvae.fast.numba_kernels` and
:mod:`numpyvae.fast.numba_step`, where Numba inlines it. The derivations
of what they compute are in :mod:`numpyvae.ops`; here is how
each is computed stably and fast:

* :func:`exp_neg` and :func:`log1p_small`: ``exp(-a)`` and ``log(1 + e)`` as
  polynomials the compiler can vectorise; :func:`exp_any` and
  :func:`expm1_given_exp`, ``exp(x)`` and ``exp(x) - 1`` of either sign, the
  same way (the latent layer's ``sigma = exp(logvar / 2)`` and KL gradient);
  both exponentials end in the one series, :func:`exp_series`;
* :func:`sigmoid_given_exp` and :func:`softplus_given_exp`: the logistic
  function and ``log(1 + e^v)`` from one ``e = exp(-|v|)``, never overflowing;
* :func:`bernoulli_nll_term`: one pixel's binary cross-entropy with logits;
* :func:`kl_term` and :func:`kl_grad_logvar`: one latent dimension's KL to
  N(0, 1) and its gradient in ``logvar``; :func:`gaussian_nll_term`: one
  pixel's Gaussian negative log-likelihood, with :data:`LOG_2PI`;
* :func:`activate` and :func:`activation_slope`: every activation and its
  derivative, by code (:data:`IDENTITY` ... :data:`SOFTPLUS`);
* :func:`flush_subnormal`: zero in place of a number below the normal range
  (the optimizers' running averages; see
  :func:`numpyvae.fast.numba_ops.adam_update`).

Every function takes the float type ``T`` (``np.float32`` or ``np.float64``)
and writes each constant as ``T(...)``, so a float32 kernel never meets a
float64 number (which would upcast it).
"""

from __future__ import annotations

import math

import numpy as np

from .numba_blas import pow2
from .numba_jit import SERIAL, jit_kernel, jit_kernels

#: Activation codes; the order is ``reference.ACTIVATIONS``.
IDENTITY, RELU, LEAKY_RELU, TANH, SIGMOID, SOFTPLUS = range(6)

#: ``log(2 pi)``, the constant of the Gaussian log-density.
LOG_2PI = 1.8378770664093453
#: ``log 2``.
LN2 = 0.6931471805599453

# --------------------------------------------------------------------------
# Scalar functions: exp and log1p that the compiler can vectorise
# --------------------------------------------------------------------------
#
# A loop that calls the C library's exp or log1p runs one element at a time
# (Numba has no vector math library here); written as polynomials, the same
# functions run 8 or 16 elements per instruction. They are accurate to about
# 2 units in the last place, float32 and float64 alike. They are compiled
# with one fastmath flag, ``contract``: each ``p * r + c`` of a polynomial may
# become one fused multiply-add, rounded once instead of twice (so no less
# accurate), which ran the Bernoulli loss faster (each kernel alone:
# ``benchmarks/bench_kernels.py``).


def reassoc_add(a, b):
    """``a + b``, jitted with the two fastmath flags that let a sum be vectorised.

    ``reassoc`` lets the compiler keep several partial sums in a vector
    register (as NumPy's pairwise sum does) instead of one sequential chain;
    ``nsz`` lets it ignore the sign of a zero, which reordering needs.
    Nothing else about the arithmetic is relaxed.
    """
    return a + b


def exp_series(r, T):
    """``exp(r)``, ``|r| <= ln2 / 2``, in type ``T``: the series :func:`exp_neg` describes."""
    if np.finfo(T).bits == 32:
        p = T(1 / 5040)
    else:
        p = T(1 / 479001600)
        p = p * r + T(1 / 39916800)
        p = p * r + T(1 / 3628800)
        p = p * r + T(1 / 362880)
        p = p * r + T(1 / 40320)
        p = p * r + T(1 / 5040)
    p = p * r + T(1 / 720)
    p = p * r + T(1 / 120)
    p = p * r + T(1 / 24)
    p = p * r + T(1 / 6)
    p = p * r + T(0.5)
    p = p * r + T(1)
    p = p * r + T(1)
    return p


def exp_neg(a, T):
    """``exp(-a)`` for ``a >= 0`` in type ``T`` (0 once the result is below the normal range).

    Write ``a = n ln2 - r`` with ``n`` an integer and ``|r| <= ln2 / 2``: then
    ``exp(-a) = 2**-n * exp(r)``. ``ln2`` is split into a head with few bits
    (so ``n * head`` is exact) and a tail (Cody & Waite), and ``exp(r)`` is
    its Taylor series: to ``r**12 / 12!`` in float64 (the first term left
    out is below 2e-16 of the sum), to ``r**7 / 7!`` in float32 (below 6e-9,
    a tenth of float32's rounding; a shorter series for the same accuracy
    runs the float32 kernels faster: ``benchmarks/bench_kernels.py``).
    """
    amax = T(87.0) if np.finfo(T).bits == 32 else T(708.0)  # exp(-amax) is still normal
    ac = min(a, amax)
    n = np.floor(ac * T(1.4426950408889634) + T(0.5))  # np.floor keeps the type T
    r = (n * T(0.693359375) - ac) + n * T(-2.1219444005469058277e-4)
    e = exp_series(r, T) * pow2(-int(n), T)
    return e if a <= amax else T(0)


def exp_any(x, T):
    """``exp(x)`` for any ``x`` in type ``T``: inf above the float range, 0 far below, nan for nan.

    The same reduction and series as :func:`exp_neg`, for either sign: ``x =
    n ln2 + r``, ``exp(x) = 2**n exp(r)``. ``2**n`` is applied as two
    halves, ``2**(n//2) * 2**(n - n//2)``, so that a result near the top of
    the range or in the subnormal range (where ``2**n`` alone would not be a
    float) comes out right. ``x`` is clamped to where ``exp`` is neither inf
    nor 0 before the reduction, and the ends are put back after it.
    """
    if np.finfo(T).bits == 32:
        lo, hi = T(-104.0), T(88.72283)
    else:
        lo, hi = T(-745.2), T(709.782712893384)
    xc = min(max(x, lo), hi)
    n = np.floor(xc * T(1.4426950408889634) + T(0.5))
    r = (xc - n * T(0.693359375)) - n * T(-2.1219444005469058277e-4)
    k = int(n)
    half = k // 2
    e = exp_series(r, T) * pow2(half, T) * pow2(k - half, T)
    if x != x:
        return x
    if x > hi:
        return T(np.inf)
    return e if x >= lo else T(0)


def expm1_given_exp(x, e, T):
    """``exp(x) - 1`` in type ``T`` given ``e = exp(x)``, exact near 0 (where ``e - 1`` is not).

    For ``|x| <= 1/2``, ``x (1 + x/2! + x**2/3! + ...)`` by its series, to
    ``x**17/17!`` in float64 and ``x**11/11!`` in float32 (the first term
    left out is below a tenth of the rounding); beyond, ``e - 1``, exact as
    a subtraction there, its relative error at most 2.5 times ``e``'s. Both
    are computed and one is kept: a branch would stop the loop around it
    from being vectorised. The caller passes ``e`` because it usually has it
    (``sigma * sigma`` in the latent layer), and a function holding both
    this series and :func:`exp_any` grew too large for the compiler to
    inline into a loop.
    """
    if np.finfo(T).bits == 32:
        q = T(1 / 39916800)
    else:
        q = T(1 / 355687428096000)
        q = q * x + T(1 / 20922789888000)
        q = q * x + T(1 / 1307674368000)
        q = q * x + T(1 / 87178291200)
        q = q * x + T(1 / 6227020800)
        q = q * x + T(1 / 479001600)
        q = q * x + T(1 / 39916800)
    q = q * x + T(1 / 3628800)
    q = q * x + T(1 / 362880)
    q = q * x + T(1 / 40320)
    q = q * x + T(1 / 5040)
    q = q * x + T(1 / 720)
    q = q * x + T(1 / 120)
    q = q * x + T(1 / 24)
    q = q * x + T(1 / 6)
    q = q * x + T(0.5)
    q = q * x + T(1)
    near_zero = q * x
    return near_zero if abs(x) <= T(0.5) else e - T(1)


def log1p_small(e, T):
    """``log(1 + e)`` for ``0 <= e <= 1`` in type ``T``.

    With ``u = 1 + e`` rounded, ``c = e - (u - 1)`` is the rounding error
    exactly, and ``log(1 + e) = log(u) + c / u`` to first order (Goldberg's
    trick behind log1p). ``log(u)`` for ``u`` in ``[1, 2]``: halve ``u`` if it
    is above ``sqrt 2`` (adding ``ln 2``), then ``log(m) = 2 atanh(s)`` with
    ``s = (m - 1)/(m + 1)``, ``|s| <= 0.172``, whose odd series in ``s``
    converges to 1e-17 by the ``s**21`` term (float64) and to 3e-9 by the
    ``s**9`` term (float32).
    """
    u = T(1) + e
    c = e - (u - T(1))
    halve = T(u > T(1.4142135623730951))
    m = u * (T(1) - T(0.5) * halve)
    s = (m - T(1)) / (m + T(1))
    s2 = s * s
    if np.finfo(T).bits == 32:
        q = T(1 / 9)
    else:
        q = T(1 / 21)
        q = q * s2 + T(1 / 19)
        q = q * s2 + T(1 / 17)
        q = q * s2 + T(1 / 15)
        q = q * s2 + T(1 / 13)
        q = q * s2 + T(1 / 11)
        q = q * s2 + T(1 / 9)
    q = q * s2 + T(1 / 7)
    q = q * s2 + T(1 / 5)
    q = q * s2 + T(1 / 3)
    q = q * s2 + T(1)
    return halve * T(LN2) + T(2) * s * q + c / u




def sigmoid_given_exp(v, e, T):
    """The logistic function ``1 / (1 + e^-v)``, given ``e = exp(-|v|)``.

    ``1 / (1 + e)`` for ``v >= 0`` and ``e / (1 + e)`` below: the exponential
    of a non-positive number never overflows, whatever the sign of ``v``.
    """
    return (T(1) if v >= T(0) else e) / (T(1) + e)


def softplus_given_exp(v, e, T):
    """``log(1 + e^v) = max(v, 0) + log(1 + e^-|v|)``, given ``e = exp(-|v|)``."""
    return max(v, T(0)) + log1p_small(e, T)


def bernoulli_nll_term(v, x, e, T):
    """One pixel's ``-log p(x | logit v) = max(v, 0) - x v + log(1 + e^-|v|)``, ``e = exp(-|v|)``.

    The binary cross-entropy with logits, in the order of the reference
    (``bernoulli_nll``): for a large, correct logit the last term is the
    whole (tiny) loss, which ``softplus(v) - x v`` would round away.
    """
    return max(v, T(0)) - x * v + log1p_small(e, T)


def kl_term(mu, lv, var, T):
    """One latent dimension's ``KL(N(mu, var) || N(0, 1)) = (mu^2 + var - 1 - logvar) / 2``.

    ``var = exp(lv)`` is passed in, since the caller often has it already
    (as ``sigma * sigma`` after sampling).
    """
    return T(0.5) * (mu * mu + var - T(1) - lv)


def kl_grad_logvar(lv, var, T):
    """``d KL / d logvar = (e^logvar - 1) / 2``, by ``expm1`` (exact near ``logvar = 0``).

    ``var = exp(lv)`` is passed in, as to :func:`kl_term`.
    """
    return T(0.5) * expm1_given_exp(lv, var, T)


def gaussian_nll_term(r, lv, inv_var, T):
    """One pixel's ``-log N(x; mean, e^lv) = (log 2 pi + lv + r^2 e^-lv) / 2``, ``r = x - mean``.

    ``inv_var = exp(-lv)`` is passed in, so a kernel can compute it once per
    pixel rather than once per pixel and example.
    """
    return T(0.5) * (T(LOG_2PI) + lv + r * r * inv_var)


def activate(v, act, alpha, T):
    """One activation ``f(v)`` (reference: ``activation_forward``)."""
    if act == RELU:
        return max(v, T(0))
    if act == LEAKY_RELU:
        return v if v > T(0) else alpha * v
    if act == TANH:
        return math.tanh(v)
    if act == SIGMOID:
        return sigmoid_given_exp(v, exp_neg(abs(v), T), T)
    if act == SOFTPLUS:
        return softplus_given_exp(v, exp_neg(abs(v), T), T)
    return v


def activation_slope(y, act, alpha, T):
    """``f'`` written in terms of the output ``y = f(x)`` (reference: ``activation_backward``)."""
    if act == RELU:
        return T(1) if y > T(0) else T(0)
    if act == LEAKY_RELU:
        return T(1) if y > T(0) else alpha
    if act == TANH:
        return T(1) - y * y
    if act == SIGMOID:
        return y * (T(1) - y)
    if act == SOFTPLUS:
        return -math.expm1(-y)
    return T(1)


def flush_subnormal(a, T):
    """``a``, or zero if ``|a|`` is below the smallest normal number of ``T`` (a subnormal)."""
    return a if abs(a) >= T(np.finfo(T).tiny) else T(0)


reassoc_add = jit_kernel(reassoc_add, fastmath={"reassoc", "nsz"}, **SERIAL)
exp_series = jit_kernel(exp_series, fastmath={"contract"}, **SERIAL)
exp_neg = jit_kernel(exp_neg, fastmath={"contract"}, **SERIAL)
exp_any = jit_kernel(exp_any, fastmath={"contract"}, **SERIAL)
expm1_given_exp = jit_kernel(expm1_given_exp, fastmath={"contract"}, **SERIAL)
log1p_small = jit_kernel(log1p_small, fastmath={"contract"}, **SERIAL)
jit_kernels(globals(), {
    "sigmoid_given_exp": False,
    "softplus_given_exp": False, "bernoulli_nll_term": False, "kl_term": False,
    "kl_grad_logvar": False, "gaussian_nll_term": False, "activate": False,
    "activation_slope": False, "flush_subnormal": False,
})
