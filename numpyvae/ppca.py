"""Probabilistic PCA: a latent-variable model whose likelihood, optimum and posterior are exact.

The model (Tipping & Bishop, 1999) is a linear VAE's generative model: for
data :math:`x \\in \\mathbb R^D` and a code :math:`z \\in \\mathbb R^L`,

.. math:: z \\sim \\mathcal N(0, I_L), \\qquad
          x \\mid z \\sim \\mathcal N(W z + \\mu,\\ \\Psi),

with ``W`` (D, L), ``mu`` (D,) and the noise covariance
:math:`\\Psi = \\sigma^2 I` (pPCA; ``noise_var`` a scalar) or
:math:`\\Psi = \\mathrm{diag}(\\psi)` (factor analysis; ``noise_var`` of shape
(D,), a Gaussian decoder with one learned variance per value). This is the
density :class:`numpyvae.distributions.Gaussian` computes for a decoder
``out = z @ W.T + mu``, constants included, so every number here is in the
same nats as the library's ELBO.

==================================  ===============================================
function                            gives
==================================  ===============================================
:func:`log_likelihood`              the exact :math:`\\log p(x)`, per example
:func:`posterior`                   the exact posterior :math:`p(z \\mid x)`
:func:`maximum_likelihood`          the optimal ``W`` and :math:`\\sigma^2` for data
:func:`diagonal_elbo`               the ELBO of any diagonal Gaussian ``q``, in closed form
:func:`best_diagonal_posterior`     the diagonal ``q`` with the highest ELBO
:func:`approximation_gap`           what that best diagonal ``q`` still loses
==================================  ===============================================

Two matrices carry everything. The **marginal covariance**
:math:`C = W W^\\top + \\Psi` (D, D): ``x`` is ``Wz + mu`` plus independent
noise, a sum of independent Gaussians, so :math:`x \\sim \\mathcal N(\\mu, C)`.
The **posterior precision** :math:`M = I_L + W^\\top \\Psi^{-1} W` (L, L),
small, through which ``C`` is inverted without ever forming it.

Every function computes in float64 (the exact answer is the reference a VAE
is measured against).

What does not live here: the linear VAE built from the library's layers, and
reading ``W``, ``mu``, ``Psi`` out of it (:mod:`numpyvae.linear_vae`).

References: M. E. Tipping and C. M. Bishop, *Probabilistic principal component
analysis*, JRSS B 61 (1999); J. Lucas, G. Tucker, R. Grosse and M. Norouzi,
*Don't blame the ELBO! A linear VAE perspective on posterior collapse*,
NeurIPS 2019; C. Cremer, X. Li and D. Duvenaud, *Inference suboptimality in
variational autoencoders*, ICML 2018.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .ops import LOG_2PI


def model_arrays(W, mean, noise_var):
    """``W`` (D, L), ``mean`` (D,) and ``noise_var`` as (D,), in float64, shapes checked.

    ``ValueError`` naming the array whose shape does not fit, or for a
    variance that is not positive.
    """
    W = np.asarray(W, np.float64)
    if W.ndim != 2:
        raise ValueError(f"W must have shape (D, L), got {W.shape}")
    D = W.shape[0]
    mean = np.asarray(mean, np.float64)
    if mean.shape != (D,):
        raise ValueError(f"mean must have shape ({D},) to match W {W.shape}, got {mean.shape}")
    psi = np.broadcast_to(np.asarray(noise_var, np.float64), (D,)).copy() \
        if np.ndim(noise_var) == 0 else np.asarray(noise_var, np.float64)
    if psi.shape != (D,):
        raise ValueError(f"noise_var must be a scalar or have shape ({D},), got {psi.shape}")
    if not np.all(psi > 0):
        raise ValueError("noise_var must be positive")
    return W, mean, psi


def _data(X, D):
    X = np.asarray(X, np.float64)
    if X.ndim != 2 or X.shape[1] != D:
        raise ValueError(f"X must have shape (N, {D}), got {X.shape}")
    return X


def marginal_covariance(W, noise_var) -> np.ndarray:
    """:math:`C = W W^\\top + \\Psi`, the covariance of ``x`` with ``z`` integrated out: (D, D)."""
    W, _, psi = model_arrays(W, np.zeros(np.shape(W)[0]), noise_var)
    return W @ W.T + np.diag(psi)


def posterior_precision(W, noise_var) -> np.ndarray:
    """:math:`M = I_L + W^\\top \\Psi^{-1} W`, the precision of :math:`p(z \\mid x)`: (L, L).

    Tipping & Bishop write :math:`M_{TB} = W^\\top W + \\sigma^2 I`; for
    :math:`\\Psi = \\sigma^2 I` it is :math:`\\sigma^2 M`.
    """
    W, _, psi = model_arrays(W, np.zeros(np.shape(W)[0]), noise_var)
    return np.eye(W.shape[1]) + (W / psi[:, None]).T @ W


def log_likelihood(X, W, mean, noise_var) -> np.ndarray:
    """The exact :math:`\\log p(x)` of each row of ``X``, nats.

    Parameters
    ----------
    X : ndarray, shape (N, D)
    W : ndarray, shape (D, L)
    mean : ndarray, shape (D,)
    noise_var : float or ndarray of shape (D,)

    Returns
    -------
    log_px : ndarray, shape (N,), float64

    Notes
    -----
    With ``z`` integrated out, :math:`x \\sim \\mathcal N(\\mu, C)`, so with
    :math:`r = x - \\mu`

    .. math:: \\log p(x) = -\\tfrac12\\big(D \\log 2\\pi + \\log|C|
              + r^\\top C^{-1} r\\big).

    ``C`` is (D, D) but only rank ``L`` away from the diagonal :math:`\\Psi`.
    The matrix determinant lemma and the Woodbury identity reduce both terms
    to the (L, L) matrix ``M``:

    .. math:: |C| = |\\Psi|\\,|M|, \\qquad
              C^{-1} = \\Psi^{-1} - \\Psi^{-1} W M^{-1} W^\\top \\Psi^{-1},

    so :math:`r^\\top C^{-1} r = r^\\top \\Psi^{-1} r - b^\\top M^{-1} b` with
    :math:`b = W^\\top \\Psi^{-1} r`: :math:`O(NDL + L^3)` work instead of
    :math:`O(D^3)`.
    """
    W, mean, psi = model_arrays(W, mean, noise_var)
    R = _data(X, W.shape[0]) - mean                               # (N, D)
    M = posterior_precision(W, psi)
    chol = np.linalg.cholesky(M)                                  # M = chol chol^T
    b = (R / psi) @ W                                             # (N, L)
    half = np.linalg.solve(chol, b.T)                             # chol^-1 b: |half|^2 = b^T M^-1 b
    quad = np.sum(R * R / psi, axis=1) - np.sum(half * half, axis=0)
    log_det_C = np.sum(np.log(psi)) + 2 * np.sum(np.log(np.diag(chol)))
    return -0.5 * (W.shape[0] * LOG_2PI + log_det_C + quad)


def posterior(X, W, mean, noise_var):
    """The exact posterior :math:`p(z \\mid x) = \\mathcal N(m(x), M^{-1})` of each row of ``X``.

    Returns
    -------
    mean : ndarray, shape (N, L)
        :math:`m(x) = M^{-1} W^\\top \\Psi^{-1} (x - \\mu)`, one row per example.
    cov : ndarray, shape (L, L)
        :math:`M^{-1}`, the same for every example.

    Notes
    -----
    By Bayes, :math:`\\log p(z \\mid x) = \\log p(x \\mid z) + \\log p(z) + c`,
    and with :math:`r = x - \\mu`,

    .. math:: \\log p(x \\mid z) + \\log p(z)
              = -\\tfrac12 (r - Wz)^\\top \\Psi^{-1} (r - Wz) - \\tfrac12 z^\\top z + c
              = -\\tfrac12 z^\\top M z + z^\\top W^\\top \\Psi^{-1} r + c',

    a quadratic in ``z``: a Gaussian with precision ``M`` and mean
    :math:`M^{-1} W^\\top \\Psi^{-1} r` (complete the square). The mean is a
    linear function of ``x``, so an encoder with no hidden layer can
    output it exactly; the covariance does not depend on ``x`` at all.
    """
    W, mean_x, psi = model_arrays(W, mean, noise_var)
    R = _data(X, W.shape[0]) - mean_x
    M = posterior_precision(W, psi)
    cov = np.linalg.inv(M)
    return (R / psi) @ W @ cov, cov          # each row r^T Psi^-1 W M^-1 (M^-1 is symmetric)


def diagonal_elbo(X, W, mean, noise_var, mu, logvar) -> np.ndarray:
    """The ELBO of a diagonal Gaussian :math:`q(z) = \\mathcal N(m, \\mathrm{diag}(s))`, exactly.

    Parameters
    ----------
    X : ndarray, shape (N, D)
    W, mean, noise_var : the model, as in :func:`log_likelihood`
    mu, logvar : ndarray, shape (N, L)
        ``m`` and ``log s`` of each example's ``q`` (an encoder's output).

    Returns
    -------
    elbo : ndarray, shape (N,), nats; at most :func:`log_likelihood`.

    Notes
    -----
    For a linear decoder the expectation over ``q`` needs no sampling. With
    :math:`z = m + \\delta`, :math:`\\mathbb E\\,\\delta\\delta^\\top = \\mathrm{diag}(s)`,
    :math:`\\mathbb E (r - Wz)_i^2 = (r - Wm)_i^2 + \\sum_j W_{ij}^2 s_j`, so

    .. math:: \\mathbb E_q \\log p(x \\mid z) = -\\tfrac12 \\sum_i \\Big(\\log 2\\pi
              + \\log\\psi_i + \\frac{(r - Wm)_i^2 + \\sum_j W_{ij}^2 s_j}{\\psi_i}\\Big),

    and the KL to the prior is the library's closed form,
    :math:`\\tfrac12 \\sum_j (m_j^2 + s_j - 1 - \\log s_j)`.
    ``ELBO = E log p(x|z) - KL``, the quantity :func:`numpyvae.evaluate.elbo`
    estimates by sampling.
    """
    W, mean_x, psi = model_arrays(W, mean, noise_var)
    R = _data(X, W.shape[0]) - mean_x
    mu, logvar = np.asarray(mu, np.float64), np.asarray(logvar, np.float64)
    s = np.exp(logvar)
    resid = R - mu @ W.T
    spread = s @ (W * W / psi[:, None]).T                         # (N, D): sum_j W_ij^2 s_j / psi_i
    expected = -0.5 * np.sum(LOG_2PI + np.log(psi) + resid ** 2 / psi + spread, axis=1)
    kl = 0.5 * np.sum(mu ** 2 + s - 1 - logvar, axis=1)
    return expected - kl


def best_diagonal_posterior(X, W, mean, noise_var):
    """The diagonal Gaussian ``q`` with the highest ELBO for each row of ``X``: ``(mu, logvar)``.

    Returns
    -------
    mu : ndarray, shape (N, L)
        The exact posterior mean, :math:`M^{-1} W^\\top \\Psi^{-1} (x - \\mu)`.
    logvar : ndarray, shape (N, L)
        :math:`-\\log M_{jj}` in every row.

    Notes
    -----
    Collect the terms of :func:`diagonal_elbo` that hold ``m`` and ``s``:

    .. math:: \\mathrm{ELBO} = -\\tfrac12 m^\\top M m + m^\\top W^\\top \\Psi^{-1} r
              - \\tfrac12 \\sum_j (M_{jj} s_j - \\log s_j) + c .

    The two parts separate. Setting the gradients to zero,
    :math:`\\partial/\\partial m = W^\\top \\Psi^{-1} r - M m = 0` gives the exact
    posterior mean, and :math:`\\partial/\\partial \\log s_j = \\tfrac12(1 - M_{jj} s_j) = 0`
    gives :math:`s_j = 1 / M_{jj}`: the diagonal of the posterior
    *precision*, inverted, which is narrower than the posterior's own
    marginal variance :math:`(M^{-1})_{jj}` whenever ``M`` is not diagonal.
    """
    mu, _ = posterior(X, W, mean, noise_var)
    M = posterior_precision(W, noise_var)
    return mu, np.broadcast_to(-np.log(np.diag(M)), mu.shape).copy()


def approximation_gap(W, noise_var) -> float:
    """``log p(x)`` minus the best diagonal ELBO: the same for every ``x``, nats.

    Notes
    -----
    The gap of a ``q`` is :math:`\\mathrm{KL}(q \\,\\|\\, p(z \\mid x))`. For
    the best diagonal ``q`` (:func:`best_diagonal_posterior`: the same
    mean as the posterior, :math:`s_j = 1/M_{jj}`), the Gaussian KL

    .. math:: \\tfrac12\\big(\\mathrm{tr}(M S) - L + \\log|S^{-1}| - \\log|M|\\big)
              = \\tfrac12\\Big(\\sum_j \\log M_{jj} - \\log |M|\\Big) \\ge 0,

    zero exactly when ``M`` is diagonal (Hadamard's inequality), that is when
    the columns of :math:`\\Psi^{-1/2} W` are orthogonal: this is the
    approximation gap of Cremer et al. (2018), which no encoder can close.
    """
    M = posterior_precision(W, noise_var)
    _, log_det = np.linalg.slogdet(M)
    return float(0.5 * (np.sum(np.log(np.diag(M))) - log_det))


@dataclass
class PPCAFit:
    """The maximum-likelihood pPCA of a data set (:func:`maximum_likelihood`).

    Attributes
    ----------
    W : ndarray, shape (D, L)
        :math:`U_L (\\Lambda_L - \\sigma^2 I)_+^{1/2}`; a zero column for each
        direction whose eigenvalue is at most :math:`\\sigma^2`.
    mean : ndarray, shape (D,)
        The data mean.
    noise_var : float
        :math:`\\sigma^2`.
    eigenvalues : ndarray, shape (D,)
        Of the data covariance, largest first.
    """

    W: np.ndarray
    mean: np.ndarray
    noise_var: float
    eigenvalues: np.ndarray

    @property
    def latent_dim(self) -> int:
        return self.W.shape[1]

    def active(self) -> np.ndarray:
        """Which latent dimensions the optimum uses: :math:`\\lambda_j > \\sigma^2`, (L,) bool."""
        return self.eigenvalues[:self.latent_dim] > self.noise_var

    def activity(self) -> np.ndarray:
        """The variance over the data of each dimension's posterior mean at the optimum: (L,).

        With :math:`W = U (\\Lambda - \\sigma^2)^{1/2}`, ``M`` is diagonal,
        :math:`M_{jj} = \\lambda_j / \\sigma^2`, and the posterior mean of
        dimension ``j`` is :math:`\\sqrt{\\lambda_j - \\sigma^2}\\, u_j^\\top r
        / \\lambda_j`, whose variance over the data
        (:math:`\\mathrm{Var}\\, u_j^\\top r = \\lambda_j`) is
        :math:`\\max(0,\\ 1 - \\sigma^2 / \\lambda_j)`: Burda et al.'s
        activity (:func:`numpyvae.latent.active_units`), predicted.
        """
        lam = self.eigenvalues[:self.latent_dim]
        return np.maximum(0.0, 1.0 - self.noise_var / lam)

    def log_likelihood(self, X) -> np.ndarray:
        """The exact ``log p(x)`` of each row of ``X`` under this model, (N,)."""
        return log_likelihood(X, self.W, self.mean, self.noise_var)


def maximum_likelihood(X, latent_dim, noise_var=None) -> PPCAFit:
    """The pPCA parameters that maximise the likelihood of the rows of ``X``.

    Parameters
    ----------
    X : ndarray, shape (N, D)
    latent_dim : int
        ``L``, at most ``D - 1`` when ``noise_var`` is learned.
    noise_var : float, optional
        Hold :math:`\\sigma^2` fixed (a decoder with a fixed variance) and
        find the best ``W`` for it; by default :math:`\\sigma^2` is fitted too.

    Returns
    -------
    PPCAFit

    Notes
    -----
    Let :math:`S = \\frac1N \\sum_n (x_n - \\bar x)(x_n - \\bar x)^\\top` have
    eigenvalues :math:`\\lambda_1 \\ge \\dots \\ge \\lambda_D` and eigenvectors
    :math:`U`. The mean's optimum is :math:`\\bar x`; then (Tipping & Bishop,
    1999, section 3.2) the log-likelihood
    :math:`-\\frac N2 (D\\log 2\\pi + \\log|C| + \\mathrm{tr}\\, C^{-1} S)` is
    stationary when ``C`` shares ``S``'s eigenvectors. Along eigenvector ``j``
    a column of ``W`` adds :math:`w_j^2` to the variance
    :math:`c_j = \\sigma^2 + w_j^2`, and the term
    :math:`\\log c_j + \\lambda_j / c_j` is smallest at :math:`c_j = \\lambda_j`,
    which ``W`` can reach only if :math:`\\lambda_j \\ge \\sigma^2`. Hence

    .. math:: W = U_L\\, (\\Lambda_L - \\sigma^2 I)_+^{1/2}\\, R

    for the ``L`` largest eigenvalues and any rotation ``R`` (here ``I``):
    a direction whose variance does not exceed the noise gets a zero column,
    which is posterior collapse (Lucas et al., 2019). With :math:`\\sigma^2`
    free, the same argument for the :math:`D - L` discarded directions gives
    the average of their eigenvalues,

    .. math:: \\sigma^2 = \\frac{1}{D - L} \\sum_{j > L} \\lambda_j ,

    and the maximum mean log-likelihood
    :math:`-\\frac12\\big(D \\log 2\\pi + \\sum_{j \\le L} \\log\\lambda_j
    + (D - L)\\log\\sigma^2 + D\\big)`.
    """
    X = np.asarray(X, np.float64)
    if X.ndim != 2 or len(X) < 2:
        raise ValueError(f"X must have shape (N >= 2, D), got {X.shape}")
    D = X.shape[1]
    L = int(latent_dim)
    if not 1 <= L <= D - (noise_var is None):
        raise ValueError(f"latent_dim must be in 1..{D - (noise_var is None)} for data of "
                         f"dimension {D}, got {latent_dim}")
    mean = X.mean(axis=0)
    R = X - mean
    lam, U = np.linalg.eigh(R.T @ R / len(X))
    lam, U = np.maximum(lam[::-1], 0.0), U[:, ::-1]               # largest first
    if noise_var is None:
        noise_var = float(lam[L:].mean())
        if not noise_var > 0:
            raise ValueError(f"the data lie in {L} dimensions or fewer: the noise variance "
                             f"of a {L}-dimensional pPCA is 0; choose a smaller latent_dim")
    elif not noise_var > 0:
        raise ValueError(f"noise_var must be positive, got {noise_var!r}")
    W = U[:, :L] * np.sqrt(np.maximum(lam[:L] - noise_var, 0.0))
    return PPCAFit(W=W, mean=mean, noise_var=float(noise_var), eigenvalues=lam)


__all__ = [
    "model_arrays", "marginal_covariance", "posterior_precision", "log_likelihood", "posterior",
    "diagonal_elbo", "best_diagonal_posterior", "approximation_gap", "PPCAFit",
    "maximum_likelihood",
]
