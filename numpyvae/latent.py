"""What the latent space learned: per-dimension KL, active units and the Mutual Information Gap.

==================================  ===============================================
function                            measures
==================================  ===============================================
:func:`latent_statistics`           per-dimension KL and activity of a model on data
:func:`active_units`                Burda et al.'s count of dimensions in use
:func:`discretize`                  equal-width binning of codes (or factors)
:func:`mutual_information_matrix`   discrete MI between every code and every factor
:func:`mutual_info_gap`             Chen et al.'s MIG of codes against known factors
==================================  ===============================================

**Per-dimension KL.** The KL term of the loss is a sum over latent dimensions,

.. math:: \\mathrm{KL}(q(z|x)\\,\\|\\,\\mathcal N(0, I))
          = \\sum_d \\tfrac12(\\mu_d^2 + \\sigma_d^2 - 1 - \\log\\sigma_d^2),

and its average over the data, one number per dimension, says how many nats
each dimension carries about ``x``. A dimension whose KL is ~0 has collapsed
onto the prior: the decoder ignores it.

**Active units** (Burda et al., 2016, section 5.2). Dimension ``d`` is active
when the posterior mean moves with the input:

.. math:: A_d = \\mathrm{Cov}_x\\big(\\mathbb E_{q(z|x)}[z_d]\\big) > 0.01 ,

the variance over the data set of the posterior mean ``mu_d``.

**Mutual Information Gap** (Chen et al., 2018). For known generating factors
``v_k`` and codes ``z_j`` (posterior means), estimate the mutual information
``I(z_j; v_k)`` of each pair after discretising both into bins; for each
factor take the gap between the most and the second most informative code
dimension, normalised by the factor's entropy, and average over factors:

.. math:: \\mathrm{MIG} = \\frac1K \\sum_k \\frac{1}{H(v_k)}
          \\Big(I(z_{j^{(k)}}; v_k) - \\max_{j \\ne j^{(k)}} I(z_j; v_k)\\Big),
          \\qquad j^{(k)} = \\arg\\max_j I(z_j; v_k).

1 when each factor is captured by exactly one dimension (and fully); near 0
when no dimension stands out (pure noise, or one factor spread over several).

What does not live here: the figures (:mod:`numpyvae.app.latent_plots`), the
training loop that logs these numbers (:mod:`numpyvae.app.train`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import ops

#: Burda et al.'s threshold on the variance of the posterior mean.
ACTIVE_THRESHOLD = 0.01
#: Bins per code dimension for the MI estimate (Chen et al. / disentanglement_lib use 20).
MIG_BINS = 20


@dataclass
class LatentStats:
    """What :func:`latent_statistics` returns.

    Attributes
    ----------
    kl_per_dim : ndarray, shape (L,)
        Mean over the data of each dimension's KL, nats.
    activity : ndarray, shape (L,)
        Variance over the data of each dimension's posterior mean.
    active_units : int
        How many dimensions have ``activity > threshold``.
    threshold : float
    """

    kl_per_dim: np.ndarray
    activity: np.ndarray
    active_units: int
    threshold: float = ACTIVE_THRESHOLD

    def kl_order(self) -> np.ndarray:
        """Dimension indices from the largest KL to the smallest."""
        return np.argsort(-self.kl_per_dim, kind="stable")


def _batches(n, batch_size):
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def posterior_parameters(model, X, *, labels=None, batch_size=1000):
    """``(mu, logvar)`` of ``q(z|x)`` for every row of ``X``, each (N, L), in float64.

    ``labels`` is passed to the encoder of a conditional model (``q(z|x, y)``).
    """
    X = np.asarray(X)
    mus, logvars = [], []
    for sl in _batches(len(X), batch_size):
        if labels is None:
            mu, logvar = model.encode(X[sl])
        else:
            mu, logvar = model.encode(X[sl], labels=np.asarray(labels)[sl])
        mus.append(np.asarray(mu, dtype=np.float64))
        logvars.append(np.asarray(logvar, dtype=np.float64))
    if not mus:
        raise ValueError("posterior_parameters: X holds no examples")
    return np.concatenate(mus), np.concatenate(logvars)


def kl_per_dimension(mu, logvar) -> np.ndarray:
    """Mean over the rows of each dimension's ``KL(N(mu, sigma^2) || N(0, 1))``: (N, L) -> (L,).

    :func:`numpyvae.ops.kl_per_dimension` (the closed form), in float64.
    """
    mu, logvar = np.asarray(mu, np.float64), np.asarray(logvar, np.float64)
    return ops.kl_per_dimension(mu, logvar)


def active_units(mu, threshold=ACTIVE_THRESHOLD):
    """Burda et al.'s active units of posterior means ``mu`` (N, L).

    Returns ``(count, activity)``: the number of dimensions whose variance
    over the rows exceeds ``threshold``, and those variances, shape (L,).
    """
    mu = np.asarray(mu, np.float64)
    if mu.ndim != 2 or len(mu) < 2:
        raise ValueError(f"active_units: expected posterior means of shape (N >= 2, L), "
                         f"got {mu.shape}")
    activity = mu.var(axis=0)
    return int(np.sum(activity > threshold)), activity


def latent_statistics(model, X, *, labels=None, batch_size=1000,
                      threshold=ACTIVE_THRESHOLD) -> LatentStats:
    """Per-dimension KL and active units of ``model`` on the inputs ``X``."""
    mu, logvar = posterior_parameters(model, X, labels=labels, batch_size=batch_size)
    count, activity = active_units(mu, threshold)
    return LatentStats(kl_per_dimension(mu, logvar), activity, count, threshold)


# --------------------------------------------------------------------------
# Mutual Information Gap
# --------------------------------------------------------------------------


def discretize(values, n_bins=MIG_BINS) -> np.ndarray:
    """Integer bin indices for each column of ``values`` (N,) or (N, M).

    A column with at most ``n_bins`` distinct values (a discrete factor, such
    as a class label) keeps one bin per value; any other column is cut into
    ``n_bins`` equal-width bins between its minimum and maximum, as Chen et
    al. do for the codes.
    """
    values = np.asarray(values, dtype=np.float64)
    squeeze = values.ndim == 1
    if squeeze:
        values = values[:, None]
    if values.ndim != 2:
        raise ValueError(f"discretize: expected an array (N,) or (N, M), got {values.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError("discretize: values hold NaN or infinity")
    n_bins = int(n_bins)
    if n_bins < 2:
        raise ValueError(f"discretize: n_bins must be >= 2, got {n_bins}")
    out = np.empty(values.shape, dtype=np.int64)
    for j, col in enumerate(values.T):
        distinct, inverse = np.unique(col, return_inverse=True)
        if len(distinct) <= n_bins:
            out[:, j] = inverse
        else:
            edges = np.linspace(col.min(), col.max(), n_bins + 1)
            out[:, j] = np.clip(np.searchsorted(edges, col, side="right") - 1, 0, n_bins - 1)
    return out[:, 0] if squeeze else out


def _entropy(labels) -> float:
    p = np.bincount(labels) / len(labels)
    p = p[p > 0]
    return float(-np.sum(p * np.log(p)))


def _mutual_information(a, b) -> float:
    """``I(a; b)`` in nats of two integer label arrays, from their joint histogram."""
    joint = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(joint, (a, b), 1.0)
    joint /= len(a)
    pa, pb = joint.sum(axis=1, keepdims=True), joint.sum(axis=0, keepdims=True)
    nz = joint > 0
    return float(np.sum(joint[nz] * np.log(joint[nz] / (pa @ pb)[nz])))


def mutual_information_matrix(codes, factors, n_bins=MIG_BINS):
    """``I(z_j; v_k)`` for every code dimension ``j`` and factor ``k``, and each ``H(v_k)``.

    Parameters
    ----------
    codes : ndarray, shape (N, L)
        E.g. the posterior means.
    factors : ndarray, shape (N, K)
        The known generating factors, discrete or continuous.

    Returns
    -------
    mi : ndarray, shape (L, K), nats
    entropy : ndarray, shape (K,), nats
    """
    codes, factors = np.asarray(codes), np.asarray(factors)
    if factors.ndim == 1:
        factors = factors[:, None]
    if codes.ndim != 2 or factors.ndim != 2 or len(codes) != len(factors) or len(codes) < 2:
        raise ValueError(f"mutual_information_matrix: expected codes (N, L) and factors (N, K) "
                         f"with the same N >= 2, got {codes.shape} and {factors.shape}")
    zc, vc = discretize(codes, n_bins), discretize(factors, n_bins)
    mi = np.array([[_mutual_information(zc[:, j], vc[:, k]) for k in range(vc.shape[1])]
                   for j in range(zc.shape[1])])
    entropy = np.array([_entropy(vc[:, k]) for k in range(vc.shape[1])])
    return mi, entropy


@dataclass
class MIGResult:
    """What :func:`mutual_info_gap` returns.

    Attributes
    ----------
    mig : float
        The mean of ``per_factor``.
    per_factor : ndarray, shape (K,)
        Each factor's normalised gap.
    mi : ndarray, shape (L, K)
        The mutual information of every code dimension with every factor, nats.
    entropy : ndarray, shape (K,)
        Each factor's entropy after discretisation, nats.
    top : ndarray of int, shape (K,)
        The code dimension most informative about each factor.
    """

    mig: float
    per_factor: np.ndarray
    mi: np.ndarray
    entropy: np.ndarray
    top: np.ndarray


def mutual_info_gap(codes, factors, n_bins=MIG_BINS) -> MIGResult:
    """The Mutual Information Gap of ``codes`` (N, L) against ``factors`` (N, K).

    Needs ``L >= 2`` (the gap compares the best dimension with the second
    best) and factors that vary (a constant factor has zero entropy).
    """
    mi, entropy = mutual_information_matrix(codes, factors, n_bins)
    if mi.shape[0] < 2:
        raise ValueError(f"mutual_info_gap: needs at least 2 code dimensions, got {mi.shape[0]}")
    if np.any(entropy <= 0):
        bad = [int(k) for k in np.flatnonzero(entropy <= 0)]
        raise ValueError(f"mutual_info_gap: factor column(s) {bad} are constant (zero entropy)")
    ordered = np.sort(mi, axis=0)
    per_factor = (ordered[-1] - ordered[-2]) / entropy
    return MIGResult(float(per_factor.mean()), per_factor, mi, entropy,
                     np.argmax(mi, axis=0))


def factor_matrix(factors: dict, names) -> np.ndarray:
    """Stack a dict of factor arrays (name -> (N,)) into (N, K) in the order of ``names``."""
    missing = [n for n in names if n not in factors]
    if missing:
        raise ValueError(f"factor_matrix: missing factor(s) {missing}; have {sorted(factors)}")
    return np.stack([np.asarray(factors[n], dtype=np.float64) for n in names], axis=1)


# --------------------------------------------------------------------------
# Traversals
# --------------------------------------------------------------------------


def traversal(model, x, dims, *, steps=9, span=3.0, labels=None) -> np.ndarray:
    """Decode one input's posterior mean with one dimension at a time swept over ``[-span, span]``.

    Parameters
    ----------
    model : VAE
    x : ndarray, shape (input_dim,) or (1, input_dim)
        The input whose code is the starting point.
    dims : sequence of int
        The dimensions to sweep, one row each (e.g. ``stats.kl_order()[:8]``).
    steps : int
        Values per row, evenly spaced over ``[-span, span]`` (the prior's
        bulk: ``N(0, 1)`` puts 99.7% of its mass within 3).
    labels : int, optional
        A conditional model's class for both the encoder and the decoder.

    Returns
    -------
    ndarray, shape (len(dims), steps, output_dim)
        The decoder's mean images.
    """
    x = np.asarray(x).reshape(1, -1)
    dims = [int(d) for d in dims]
    L = model.latent_dim
    bad = [d for d in dims if not 0 <= d < L]
    if bad or not dims:
        raise ValueError(f"traversal: dims must be a non-empty list of indices in [0, {L}), "
                         f"got {dims}")
    cond = {} if labels is None else {"labels": np.asarray(labels).reshape(1)}
    mu = np.asarray(model.encode(x, **cond)[0])[0]
    values = np.linspace(-span, span, int(steps))
    z = np.tile(mu, (len(dims), len(values), 1))
    for row, d in enumerate(dims):
        z[row, :, d] = values
    z = z.reshape(-1, L).astype(model.dtype)
    if labels is not None:
        cond = {"labels": np.full(len(z), int(np.asarray(labels).reshape(-1)[0]))}
    images = np.asarray(model.decode(z, **cond))
    return images.reshape(len(dims), len(values), -1)
