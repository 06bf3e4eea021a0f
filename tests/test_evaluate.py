"""Evaluation: the ELBO, and the importance-weighted log-likelihood against exact values.

A linear-Gaussian decoder, ``x = z @ W + b + noise`` with ``z ~ N(0, I)`` and
noise ``N(0, s2 I)``, has the closed-form marginal

.. math:: p(x) = \\mathcal N(x;\\ b,\\ W^\\top W + s_2 I)

(``W`` of shape (L, D)) and the Gaussian posterior

.. math:: p(z \\mid x) = \\mathcal N\\big(S W (x - b) / s_2,\\ S\\big), \\qquad
          S = (I + W W^\\top / s_2)^{-1}.

A VAE with ``hidden_dims=()`` and ``likelihood="gaussian"`` is exactly this
model, and its linear encoder can represent the posterior mean exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp

from numpyvae import VAE, Autoencoder, evaluate

D, L, S2 = 4, 2, 0.5


def linear_gaussian(W, b, s2=S2, seed=0, dtype="float64"):
    model = VAE(W.shape[1], hidden_dims=(), latent_dim=W.shape[0], likelihood="gaussian",
                gaussian_var=s2, dtype=dtype, backend="numpy", seed=seed)
    model.params["decoder.0.W"][...] = W
    model.params["decoder.0.b"][...] = b
    return model


def set_encoder(model, W, b, posterior_var, s2=S2):
    """Encoder = the exact posterior mean, with the given (diagonal) variances."""
    S = np.linalg.inv(np.eye(len(W)) + W @ W.T / s2)
    A = W.T @ S / s2  # mu = (x - b) @ A
    model.params["encoder.0.W"][...] = np.hstack([A, np.zeros_like(A)])
    model.params["encoder.0.b"][...] = np.concatenate([-b @ A, np.log(posterior_var)])
    return S


def exact_log_px(W, b, X, s2=S2):
    return stats.multivariate_normal(b, W.T @ W + s2 * np.eye(W.shape[1])).logpdf(X)


def draw_data(W, b, n, seed=1, s2=S2):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, W.shape[0])) @ W + b + np.sqrt(s2) * rng.standard_normal(
        (n, W.shape[1]))


@pytest.fixture
def diagonal_posterior():
    """W with orthogonal rows, so p(z|x) has a diagonal covariance the encoder can hold."""
    Q, _ = np.linalg.qr(np.random.default_rng(2).standard_normal((D, D)))
    W = (Q[:, :L] * np.array([1.5, 0.7])).T  # (L, D), W W^T = diag(2.25, 0.49)
    b = np.array([0.3, -1.0, 0.5, 2.0])
    model = linear_gaussian(W, b)
    S = set_encoder(model, W, b, posterior_var=np.diag(
        np.linalg.inv(np.eye(L) + W @ W.T / S2)))
    assert np.allclose(S, np.diag(np.diag(S)), atol=1e-14)
    return model, W, b


@pytest.fixture
def correlated_posterior():
    rng = np.random.default_rng(3)
    W, b = rng.standard_normal((L, D)), rng.standard_normal(D)
    model = linear_gaussian(W, b)
    S = np.linalg.inv(np.eye(L) + W @ W.T / S2)
    assert abs(S[0, 1]) > 0.1 * np.sqrt(S[0, 0] * S[1, 1])  # truly not diagonal
    # The marginal posterior variances: q is a little wider than p(z|x), as a
    # proposal for importance sampling should be.
    set_encoder(model, W, b, posterior_var=np.diag(S))
    return model, W, b


# --------------------------------------------------------------------------
# Exact values
# --------------------------------------------------------------------------


def test_with_the_exact_posterior_every_estimate_is_log_px(diagonal_posterior):
    """q = p(z|x) makes every importance weight equal p(x), so any k gives log p(x) exactly.

    The ELBO is log p(x) too, but only in expectation: its estimator uses the
    KL in closed form, so a single draw of log p(x|z) - KL still varies.
    """
    model, W, b = diagonal_posterior
    X = draw_data(W, b, 7)
    exact = exact_log_px(W, b, X)
    for k, batch_size, chunk in [(1, 100, None), (5, 3, 2), (64, 7, 10)]:
        got = evaluate.log_likelihood_per_example(model, X, k, batch_size=batch_size,
                                                  chunk=chunk, rng=np.random.default_rng(k))
        np.testing.assert_allclose(got, exact, rtol=1e-12)
    rng = np.random.default_rng(0)
    draws = np.array([-np.add(*evaluate.elbo_per_example(model, X, rng=rng))
                      for _ in range(2000)])
    se = draws.std(axis=0) / np.sqrt(len(draws))
    assert np.all(se < 0.05)
    np.testing.assert_array_less(np.abs(draws.mean(axis=0) - exact), 5 * se)


def test_importance_weighted_estimate_converges_to_exact_log_px(correlated_posterior):
    model, W, b = correlated_posterior
    X = draw_data(W, b, 20)
    exact = exact_log_px(W, b, X)
    errors = {}
    for k in (1, 100, 20_000):
        got = evaluate.log_likelihood_per_example(model, X, k, rng=np.random.default_rng(k))
        errors[k] = np.abs(got - exact).mean()
    assert errors[1] > 0.05  # q is not the posterior: k = 1 is visibly off
    assert errors[1] > errors[100] > errors[20_000]
    assert errors[20_000] < 5e-3
    mean = evaluate.log_likelihood(model, X, 20_000, rng=np.random.default_rng(9))
    assert mean == pytest.approx(exact.mean(), abs=5e-3)


def test_the_bound_tightens_as_k_grows_and_stays_below_log_px():
    rng = np.random.default_rng(0)
    W, b = rng.standard_normal((L, D)), rng.standard_normal(D)
    model = linear_gaussian(W, b)
    S = np.linalg.inv(np.eye(L) + W @ W.T / S2)
    set_encoder(model, W, b, posterior_var=0.3 * np.diag(S))  # too narrow: a loose bound
    X = draw_data(W, b, 100)
    exact = exact_log_px(W, b, X).mean()
    # The same seed for every k: the k samples begin with the smaller k's samples,
    # which keeps the comparison from drowning in sampling noise.
    estimates = [evaluate.log_likelihood(model, X, k, batch_size=len(X),
                                         rng=np.random.default_rng(0))
                 for k in (1, 10, 100, 1000)]
    assert all(a < b for a, b in zip(estimates, estimates[1:], strict=False)), estimates
    assert estimates[-1] < exact
    assert estimates[-1] - estimates[0] > 0.3


# --------------------------------------------------------------------------
# Against the ELBO
# --------------------------------------------------------------------------


@pytest.fixture
def small_vae():
    model = VAE(6, hidden_dims=(5,), latent_dim=2, dtype="float64", backend="numpy", seed=3)
    X = (np.random.default_rng(5).random((40, 6)) > 0.5).astype(np.float64)
    return model, X


def test_importance_weighted_estimate_is_never_below_the_elbo(small_vae):
    model, X = small_vae
    elbo = evaluate.elbo(model, X, n_samples=500, rng=np.random.default_rng(0)).elbo
    previous = elbo
    for k in (5, 50, 500):
        ll = evaluate.log_likelihood(model, X, k, rng=np.random.default_rng(k))
        assert ll > previous
        previous = ll


def test_k_equal_one_is_the_elbo_in_expectation(small_vae):
    model, X = small_vae
    draws = np.array([evaluate.log_likelihood_per_example(model, X, 1,
                                                          rng=np.random.default_rng(s))
                      for s in range(300)])
    recon, kl = evaluate.elbo_per_example(model, X, n_samples=3000,
                                          rng=np.random.default_rng(1))
    se = draws.std(axis=0) / np.sqrt(len(draws))
    np.testing.assert_array_less(np.abs(draws.mean(axis=0) - (-(recon + kl))), 5 * se + 1e-3)


def test_log_likelihood_by_hand_and_chunking_does_not_change_it(small_vae):
    model, X = small_vae
    X = X[:9]
    k = 25
    eps = np.random.default_rng(6).standard_normal((k, len(X), 2))
    mu, logvar = model.encode(X)
    z = mu + np.exp(0.5 * logvar) * eps
    log_w = (-model.reconstruction_nll(z.reshape(-1, 2), np.tile(X, (k, 1))).reshape(k, -1)
             + stats.norm.logpdf(z).sum(axis=2)
             - stats.norm.logpdf(z, mu, np.exp(0.5 * logvar)).sum(axis=2))
    by_hand = logsumexp(log_w, axis=0) - np.log(k)
    for chunk in (k, 7, 1):
        got = evaluate.log_likelihood_per_example(model, X, k, batch_size=len(X), chunk=chunk,
                                                  rng=np.random.default_rng(6))
        np.testing.assert_allclose(got, by_hand, rtol=1e-12)


def test_elbo_and_anomaly_scores_are_the_per_example_terms(small_vae):
    model, X = small_vae
    recon, kl = evaluate.elbo_per_example(model, X, batch_size=7, n_samples=3,
                                          rng=np.random.default_rng(2))
    assert recon.shape == kl.shape == (len(X),)
    assert np.all(kl > 0)
    result = evaluate.elbo(model, X, batch_size=7, n_samples=3, rng=np.random.default_rng(2))
    assert result.elbo == pytest.approx(-(recon + kl).mean(), rel=1e-14)
    assert result.recon == pytest.approx(recon.mean(), rel=1e-14)
    assert result.kl == pytest.approx(kl.mean(), rel=1e-14)
    assert result.loss == -result.elbo
    scores = evaluate.anomaly_scores(model, X, batch_size=7, n_samples=3,
                                     rng=np.random.default_rng(2))
    np.testing.assert_allclose(scores, recon + kl, rtol=1e-14)


def test_float32_models_evaluate_close_to_float64(small_vae):
    model64, X = small_vae
    model32 = VAE(6, hidden_dims=(5,), latent_dim=2, dtype="float32", backend="numpy", seed=3)
    ll64 = evaluate.log_likelihood(model64, X, 50, rng=np.random.default_rng(0))
    ll32 = evaluate.log_likelihood(model32, X, 50, rng=np.random.default_rng(0))
    assert isinstance(ll32, float)
    assert ll32 == pytest.approx(ll64, rel=1e-4)


def test_evaluation_rejects_what_it_cannot_do(small_vae):
    model, X = small_vae
    autoencoder = Autoencoder(6, hidden_dims=(5,), latent_dim=2, backend="numpy")
    with pytest.raises(ValueError, match="needs a VAE"):
        evaluate.log_likelihood(autoencoder, X)
    with pytest.raises(ValueError, match="k must be >= 1"):
        evaluate.log_likelihood(model, X, k=0)
    with pytest.raises(ValueError, match="n_samples must be >= 1"):
        evaluate.elbo(model, X, n_samples=0)
    with pytest.raises(ValueError, match=r"expected X of shape \(batch, 6\)"):
        evaluate.elbo(model, X[:, :5])


def test_log_likelihood_of_image_shaped_data_matches_the_flat_model():
    """(B, c, H, W) inputs: the importance samples tile whole images, not rows of pixels."""
    from numpyvae.layers import Flatten, Linear, Reshape, Sequential, Tanh

    def networks(image):
        rng = np.random.default_rng(0)
        kw = dict(rng=rng, dtype="float64")
        enc = [Linear(9, 5, **kw), Tanh(), Linear(5, 4, **kw)]
        dec = [Linear(2, 5, **kw), Tanh(), Linear(5, 9, **kw)]
        if image:
            return Sequential(Flatten(), *enc), Sequential(*dec, Reshape(1, 3, 3))
        return Sequential(*enc), Sequential(*dec)

    flat = VAE(*networks(False), latent_dim=2, backend="numpy")
    image = VAE(*networks(True), latent_dim=2, backend="numpy")
    x = np.random.default_rng(1).random((6, 9))
    a = evaluate.log_likelihood_per_example(flat, x, 7, rng=np.random.default_rng(2), chunk=3)
    b = evaluate.log_likelihood_per_example(image, x.reshape(6, 1, 3, 3), 7,
                                            rng=np.random.default_rng(2), chunk=3)
    np.testing.assert_allclose(b, a, rtol=1e-12)
