"""Probabilistic PCA and the linear VAE: the exact answers, and the library's bounds against them.

:mod:`numpyvae.ppca` is checked against oracles that share none of its algebra:
the log-likelihood against a direct multivariate-normal density (a full
(D, D) covariance, its inverse and determinant) and against a brute-force
integral of :math:`p(x \\mid z) p(z)` over a grid of ``z``; the posterior
against the moments of that grid; the optimum against its closed-form
value and a zero gradient. Then :mod:`numpyvae.linear_vae`: with a pPCA
solution plugged in, the library's ELBO and importance-weighted estimate
(:mod:`numpyvae.evaluate`) meet the exact ``log p(x)``; trained with the
library's trainer, the ELBO approaches the pPCA optimum. All in float64.
"""

from __future__ import annotations

import numpy as np
import pytest

from numpyvae import evaluate, ppca
from numpyvae import linear_vae as lv


def _ppca_data(rng, D=5, L=2, N=300, noise_var=0.2):
    """Rows drawn from a pPCA model: ``(X, W, mean, noise_var)``."""
    W = rng.standard_normal((D, L))
    mean = rng.standard_normal(D)
    X = rng.standard_normal((N, L)) @ W.T + mean + np.sqrt(noise_var) * rng.standard_normal((N, D))
    return X, W, mean, noise_var


def _direct_log_density(X, mean, C):
    """``log N(x; mean, C)`` with the full covariance: the textbook formula."""
    R = X - mean
    _, log_det = np.linalg.slogdet(C)
    quad = np.einsum("nd,de,ne->n", R, np.linalg.inv(C), R)
    return -0.5 * (len(mean) * np.log(2 * np.pi) + log_det + quad)


def _grid_joint(x, W, mean, psi, half_width=10.0, n=801):
    """``p(x | z) p(z)`` on a regular grid of ``z`` (L = 1 or 2): ``(grid, values, cell)``."""
    L = W.shape[1]
    axis = np.linspace(-half_width, half_width, n)
    grid = np.stack(np.meshgrid(*[axis] * L, indexing="ij"), axis=-1).reshape(-1, L)
    r = x - mean - grid @ W.T
    log_joint = (-0.5 * np.sum(np.log(2 * np.pi * psi) + r * r / psi, axis=1)
                 - 0.5 * np.sum(np.log(2 * np.pi) + grid * grid, axis=1))
    return grid, np.exp(log_joint), (axis[1] - axis[0]) ** L


def _rotated(W, angle=0.7):
    """``W R``, ``R`` rotating the first two latent axes: the same model, ``M`` not diagonal."""
    R = np.eye(W.shape[1])
    R[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    return W @ R


# --------------------------------------------------------------------------
# The formulas
# --------------------------------------------------------------------------


@pytest.mark.parametrize("per_value", [False, True], ids=["ppca", "factor_analysis"])
def test_log_likelihood_is_the_multivariate_normal_density_of_the_marginal(per_value):
    rng = np.random.default_rng(0)
    X, W, mean, noise_var = _ppca_data(rng, D=7, L=3)
    if per_value:
        noise_var = rng.uniform(0.05, 1.0, 7)
    C = W @ W.T + np.diag(np.broadcast_to(noise_var, (7,)))
    np.testing.assert_allclose(ppca.marginal_covariance(W, noise_var), C, rtol=1e-15)
    np.testing.assert_allclose(ppca.log_likelihood(X, W, mean, noise_var),
                               _direct_log_density(X, mean, C), rtol=1e-12)


@pytest.mark.parametrize("L", [1, 2])
def test_log_likelihood_is_the_integral_of_the_joint_over_z(L):
    """:math:`p(x) = \\int p(x|z) p(z) dz`, summed over a fine grid: no Gaussian algebra used."""
    rng = np.random.default_rng(L)
    X, W, mean, _ = _ppca_data(rng, D=3, L=L, N=4)
    psi = rng.uniform(0.3, 1.0, 3)
    exact = ppca.log_likelihood(X, W, mean, psi)
    for x, log_px in zip(X, exact, strict=True):
        _, joint, cell = _grid_joint(x, W, mean, psi, n=2001 if L == 1 else 401)
        assert abs(np.log(joint.sum() * cell) - log_px) < 1e-9


def test_posterior_has_the_moments_of_the_joint_over_z():
    rng = np.random.default_rng(3)
    X, W, mean, noise_var = _ppca_data(rng, D=4, L=2, N=3, noise_var=0.5)
    post_mean, post_cov = ppca.posterior(X, W, mean, noise_var)
    assert post_mean.shape == (3, 2) and post_cov.shape == (2, 2)
    np.testing.assert_allclose(post_cov, np.linalg.inv(ppca.posterior_precision(W, noise_var)),
                               rtol=1e-14)
    for x, m in zip(X, post_mean, strict=True):
        grid, joint, _ = _grid_joint(x, W, mean, np.full(4, noise_var), n=401)
        weights = joint / joint.sum()
        grid_mean = weights @ grid
        centred = grid - grid_mean
        np.testing.assert_allclose(grid_mean, m, atol=1e-9)
        np.testing.assert_allclose(centred.T @ (centred * weights[:, None]), post_cov, atol=1e-9)


def test_tipping_bishop_form_of_the_posterior():
    """Their :math:`M_{TB} = W^\\top W + \\sigma^2 I`: the posterior mean is
    :math:`M_{TB}^{-1} W^\\top r`, its covariance :math:`\\sigma^2 M_{TB}^{-1}`."""
    rng = np.random.default_rng(4)
    X, W, mean, s2 = _ppca_data(rng)
    M_tb = W.T @ W + s2 * np.eye(2)
    post_mean, post_cov = ppca.posterior(X, W, mean, s2)
    np.testing.assert_allclose(post_mean, np.linalg.solve(M_tb, W.T @ (X - mean).T).T,
                               rtol=1e-12)
    np.testing.assert_allclose(post_cov, s2 * np.linalg.inv(M_tb), rtol=1e-12)


def test_maximum_likelihood_reaches_its_closed_form_value_and_is_stationary():
    rng = np.random.default_rng(5)
    X, *_ = _ppca_data(rng, D=6, L=2, N=500)
    fit = ppca.maximum_likelihood(X, 2)
    lam, D, L = fit.eigenvalues, 6, 2
    assert np.all(np.diff(lam) <= 0)
    np.testing.assert_allclose(fit.noise_var, lam[L:].mean(), rtol=1e-14)
    best = -0.5 * (D * np.log(2 * np.pi) + np.log(lam[:L]).sum() + (D - L) * np.log(fit.noise_var)
                   + D)
    assert abs(fit.log_likelihood(X).mean() - best) < 1e-12

    def mean_ll(W, mean, s2):
        return ppca.log_likelihood(X, W, mean, s2).mean()

    h = 1e-5
    for what, array in (("W", fit.W), ("mean", fit.mean)):
        for index in np.ndindex(array.shape):
            up, down = array.copy(), array.copy()
            up[index] += h
            down[index] -= h
            args_up = (up, fit.mean) if what == "W" else (fit.W, up)
            args_down = (down, fit.mean) if what == "W" else (fit.W, down)
            slope = (mean_ll(*args_up, fit.noise_var)
                     - mean_ll(*args_down, fit.noise_var)) / (2 * h)
            assert abs(slope) < 1e-7, (what, index, slope)
    slope = (mean_ll(fit.W, fit.mean, fit.noise_var + h)
             - mean_ll(fit.W, fit.mean, fit.noise_var - h)) / (2 * h)
    assert abs(slope) < 1e-7
    # A rotation of the latent space changes nothing; a random step off the optimum loses.
    assert abs(mean_ll(_rotated(fit.W), fit.mean, fit.noise_var) - best) < 1e-12
    assert mean_ll(fit.W + 0.05 * rng.standard_normal(fit.W.shape), fit.mean,
                   fit.noise_var) < best


def test_a_fixed_noise_variance_switches_off_the_directions_it_exceeds():
    rng = np.random.default_rng(6)
    X, *_ = _ppca_data(rng, D=6, L=3, N=500, noise_var=0.1)
    lam = ppca.maximum_likelihood(X, 3).eigenvalues
    noise_var = 0.5 * (lam[1] + lam[2])                        # between the 2nd and 3rd
    fit = ppca.maximum_likelihood(X, 3, noise_var=noise_var)
    assert fit.noise_var == noise_var
    np.testing.assert_array_equal(fit.active(), [True, True, False])
    np.testing.assert_array_equal(np.linalg.norm(fit.W, axis=0) > 0, [True, True, False])
    np.testing.assert_allclose(fit.activity(), [1 - noise_var / lam[0], 1 - noise_var / lam[1], 0],
                               rtol=1e-12)
    # The best W for that variance: no column can be grown or shrunk with a gain.
    base = fit.log_likelihood(X).mean()
    for j in range(3):
        for scale in (0.9, 1.1):
            W = fit.W.copy()
            W[:, j] = W[:, j] * scale if j < 2 else 0.1 * rng.standard_normal(6)
            assert ppca.log_likelihood(X, W, fit.mean, noise_var).mean() < base


def test_diagonal_elbo_is_the_sampled_elbo_in_expectation():
    """The closed form against the library's own Monte-Carlo ELBO on a linear VAE."""
    rng = np.random.default_rng(7)
    X, W, mean, s2 = _ppca_data(rng, D=5, L=2, N=40)
    model = lv.linear_vae(5, 2, noise_var=s2, seed=1, backend="numpy")
    lv.set_parameters(model, W, mean, encoder=(0.3 * rng.standard_normal((5, 4)),
                                               0.3 * rng.standard_normal(4)))
    mu, logvar = model.encode(X)
    closed = ppca.diagonal_elbo(X, W, mean, s2, mu, logvar)
    n = 400
    recon, kl = evaluate.elbo_per_example(model, X, n_samples=n, rng=np.random.default_rng(0))
    draws = np.stack([-np.sum(model.elbo_terms(X, rng=np.random.default_rng(s)), axis=0)
                      for s in range(30)])                     # single draws: their spread
    standard_error = draws.std(axis=0) / np.sqrt(n)
    assert np.all(np.abs(-(recon + kl) - closed) < 5 * standard_error + 1e-12)
    assert np.all(closed <= ppca.log_likelihood(X, W, mean, s2))


def test_best_diagonal_posterior_maximises_the_elbo_and_loses_the_approximation_gap():
    rng = np.random.default_rng(8)
    X, W, mean, s2 = _ppca_data(rng, D=5, L=2, N=6)
    mu, logvar = ppca.best_diagonal_posterior(X, W, mean, s2)
    best = ppca.diagonal_elbo(X, W, mean, s2, mu, logvar)
    h = 1e-5
    for which in (0, 1):
        for j in range(2):
            args_up = [mu.copy(), logvar.copy()]
            args_down = [mu.copy(), logvar.copy()]
            args_up[which][:, j] += h
            args_down[which][:, j] -= h
            slope = (ppca.diagonal_elbo(X, W, mean, s2, *args_up)
                     - ppca.diagonal_elbo(X, W, mean, s2, *args_down)) / (2 * h)
            assert np.all(np.abs(slope) < 1e-7)
    gap = ppca.approximation_gap(W, s2)
    assert gap > 1e-3                                          # a random W: M is not diagonal
    np.testing.assert_allclose(ppca.log_likelihood(X, W, mean, s2) - best, gap, rtol=1e-10)


def test_the_approximation_gap_vanishes_at_the_optimum_and_not_when_rotated():
    rng = np.random.default_rng(9)
    X, *_ = _ppca_data(rng, D=6, L=3)
    fit = ppca.maximum_likelihood(X, 3)
    assert abs(ppca.approximation_gap(fit.W, fit.noise_var)) < 1e-12
    assert ppca.approximation_gap(_rotated(fit.W), fit.noise_var) > 1e-2


def test_wrong_shapes_are_named():
    W, mean = np.zeros((4, 2)), np.zeros(4)
    with pytest.raises(ValueError, match=r"mean must have shape \(4,\)"):
        ppca.log_likelihood(np.zeros((3, 4)), W, np.zeros(3), 1.0)
    with pytest.raises(ValueError, match=r"X must have shape \(N, 4\)"):
        ppca.log_likelihood(np.zeros((3, 5)), W, mean, 1.0)
    with pytest.raises(ValueError, match="noise_var must be positive"):
        ppca.posterior(np.zeros((3, 4)), W, mean, 0.0)
    with pytest.raises(ValueError, match="latent_dim must be in 1..3"):
        ppca.maximum_likelihood(np.random.default_rng(0).random((10, 4)), 4)


# --------------------------------------------------------------------------
# The linear VAE, built from the library's layers
# --------------------------------------------------------------------------


def test_the_linear_vae_is_the_ppca_model_and_its_encoder_the_best_diagonal_posterior():
    rng = np.random.default_rng(10)
    X, W, mean, s2 = _ppca_data(rng, D=5, L=2, N=50)
    model = lv.set_parameters(lv.linear_vae(5, 2, noise_var=s2, backend="numpy"), W, mean)
    assert sorted(model.params) == ["decoder.0.W", "decoder.0.b", "encoder.0.W", "encoder.0.b"]
    W_read, mean_read, var_read = lv.generative_parameters(model)
    np.testing.assert_array_equal(W_read, W)
    np.testing.assert_array_equal(mean_read, mean)
    assert var_read == s2
    # The library's Gaussian likelihood is pPCA's p(x|z), constants included.
    z = rng.standard_normal((50, 2))
    r = X - mean - z @ W.T
    by_hand = 0.5 * np.sum(np.log(2 * np.pi * s2) + r * r / s2, axis=1)
    np.testing.assert_allclose(model.reconstruction_nll(z, X), by_hand, rtol=1e-13)
    for got, want in zip(model.encode(X), ppca.best_diagonal_posterior(X, W, mean, s2),
                         strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-13)


def test_a_learned_variance_per_value_is_factor_analysis():
    rng = np.random.default_rng(11)
    X, W, mean, _ = _ppca_data(rng, D=5, L=2, N=50)
    psi = rng.uniform(0.1, 1.0, 5)
    model = lv.set_parameters(lv.linear_vae(5, 2, noise_var="learned", backend="numpy"),
                              W, mean, noise_var=psi)
    assert "decoder.logvar" in model.params
    np.testing.assert_allclose(lv.generative_parameters(model)[2], psi, rtol=1e-15)
    np.testing.assert_allclose(lv.exact_log_likelihood(model, X),
                               _direct_log_density(X, mean, W @ W.T + np.diag(psi)), rtol=1e-12)
    mu, logvar = model.encode(X)
    np.testing.assert_allclose(ppca.diagonal_elbo(X, W, mean, psi, mu, logvar),
                               ppca.log_likelihood(X, W, mean, psi)
                               - ppca.approximation_gap(W, psi), rtol=1e-12)


def test_at_the_ppca_optimum_every_bound_is_the_exact_log_likelihood():
    """``q`` is the exact posterior there: every importance weight equals ``p(x)``."""
    rng = np.random.default_rng(12)
    X, *_ = _ppca_data(rng, D=6, L=2, N=200)
    fit = ppca.maximum_likelihood(X, 2)
    model = lv.from_ppca(fit, backend="numpy")
    exact = fit.log_likelihood(X)
    np.testing.assert_allclose(lv.exact_log_likelihood(model, X), exact, rtol=1e-14)
    mu, logvar = model.encode(X)
    np.testing.assert_allclose(ppca.diagonal_elbo(X, fit.W, fit.mean, fit.noise_var, mu, logvar),
                               exact, rtol=1e-12)
    for k in (1, 50):
        np.testing.assert_allclose(evaluate.log_likelihood_per_example(model, X, k=k), exact,
                                   rtol=1e-12)
    # The one-sample ELBO (the closed-form KL, a sampled reconstruction) is right on average.
    recon, kl = evaluate.elbo_per_example(model, X, n_samples=20)
    draws = -(recon + kl) - exact
    assert abs(draws.mean()) < 4 * draws.std() / np.sqrt(len(X))


def test_importance_weighted_estimate_with_k500_is_within_its_monte_carlo_error():
    """A rotated optimum: the same exact ``log p(x)``, a diagonal ``q`` not the posterior."""
    rng = np.random.default_rng(13)
    X, *_ = _ppca_data(rng, D=6, L=2, N=300, noise_var=0.05)
    fit = ppca.maximum_likelihood(X, 2)
    model = lv.set_parameters(lv.linear_vae(6, 2, noise_var=fit.noise_var, backend="numpy"),
                              _rotated(fit.W, 0.6), fit.mean)
    exact = fit.log_likelihood(X)
    gap = ppca.approximation_gap(_rotated(fit.W, 0.6), fit.noise_var)
    estimate = {k: evaluate.log_likelihood_per_example(model, X, k=k,
                                                       rng=np.random.default_rng(k))
                for k in (1, 5, 50, 500)}
    error = estimate[500] - exact                               # one independent draw per example
    standard_error = error.std() / np.sqrt(len(X))
    assert gap > 0.05
    assert abs(error.mean()) < 4 * standard_error, (error.mean(), standard_error)
    means = [(estimate[k] - exact).mean() for k in (1, 5, 50, 500)]
    assert means == sorted(means), means                        # tighter as K grows
    one = estimate[1] - exact                          # K = 1 is the ELBO: below by the gap
    assert abs(one.mean() + gap) < 4 * one.std() / np.sqrt(len(X))
    assert one.mean() < error.mean() - 10 * standard_error


def test_not_a_linear_vae_is_named():
    import numpyvae

    model = numpyvae.VAE(4, hidden_dims=(3,), latent_dim=2, likelihood="gaussian",
                         backend="numpy")
    with pytest.raises(ValueError, match="not a linear VAE: its decoder"):
        lv.generative_parameters(model)


def test_trained_linear_vae_elbo_approaches_the_ppca_optimum():
    """Trained by the library's trainer, the ELBO comes within 0.25 nats of the best log p(x).

    The decoder's variance is fixed at the optimum's :math:`\\sigma^2`, so the
    ELBO is at most the exact ``log p(x)`` of the trained model, itself at
    most the optimum's. The ELBO is computed in closed form
    (:func:`numpyvae.ppca.diagonal_elbo`), so the tolerance is the training's,
    not a sampling error's: 120 epochs of Adam at a falling learning rate
    leave about 0.2 nats (2% of the bound; the untrained model is over 10
    nats away), mostly the slow alignment of ``W``'s columns that the
    diagonal posterior asks for (Lucas et al., 2019).
    """
    from numpyvae.app.train import fit as train

    rng = np.random.default_rng(14)
    X, *_ = _ppca_data(rng, D=8, L=3, N=2000, noise_var=0.1)
    best = ppca.maximum_likelihood(X, 3)
    optimum = best.log_likelihood(X).mean()
    model = lv.linear_vae(8, 3, noise_var=best.noise_var, seed=0, backend="numpy")

    def bounds():
        W, mean, s2 = lv.generative_parameters(model)
        mu, logvar = model.encode(X)
        return (ppca.diagonal_elbo(X, W, mean, s2, mu, logvar).mean(),
                ppca.log_likelihood(X, W, mean, s2).mean())

    elbo_before, _ = bounds()
    for epochs, lr in ((60, 3e-2), (40, 3e-3), (20, 3e-4)):
        train(model, X, epochs=epochs, batch_size=100, lr=lr, progress=False, seed=0)
    elbo, exact = bounds()
    assert elbo <= exact <= optimum + 1e-12
    assert optimum - elbo_before > 10
    assert optimum - elbo < 0.25, (optimum, exact, elbo)


@pytest.mark.parametrize("noise_var, kept", [(1.0, 2), (0.25, 3)])
def test_trained_linear_vae_switches_off_the_dimensions_ppca_predicts(noise_var, kept):
    """Posterior collapse as the decoder's variance grows: pPCA keeps direction ``j`` iff
    :math:`\\lambda_j > \\sigma^2`, with activity :math:`1 - \\sigma^2/\\lambda_j`.

    Data with three directions of variance 4, 2 and 0.5 over a noise of 0.1, in
    8 dimensions, and a linear VAE with 4 latent dimensions: at
    :math:`\\sigma^2 = 1` pPCA keeps two, at 0.25 three. The trained model's
    active units (Burda et al.'s 0.01) are those, and each dimension's activity
    is within 0.05 of the prediction.
    """
    from numpyvae import latent
    from numpyvae.app.train import fit as train

    rng = np.random.default_rng(15)
    Q, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    X = ((rng.standard_normal((2000, 3)) * np.sqrt([4.0, 2.0, 0.5])) @ Q[:, :3].T
         + np.sqrt(0.1) * rng.standard_normal((2000, 8)) + 1.0)
    predicted = ppca.maximum_likelihood(X, 4, noise_var=noise_var)
    assert predicted.active().sum() == kept
    model = lv.linear_vae(8, 4, noise_var=noise_var, seed=0, backend="numpy")
    for epochs, lr in ((30, 3e-2), (20, 3e-3), (10, 3e-4)):
        train(model, X, epochs=epochs, batch_size=100, lr=lr, progress=False, seed=0)
    count, activity = latent.active_units(model.encode(X)[0])
    assert count == kept
    np.testing.assert_allclose(np.sort(activity)[::-1], predicted.activity(), atol=0.05)
