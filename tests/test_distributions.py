"""The Gaussian latent layer and the likelihoods: closed forms, sampling, stability, gradients.

These are backend ops (``reparameterize``, ``gaussian_kl``, ``bernoulli_nll``,
...), so every test runs on every backend.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from scipy import stats
from strategies import fixture_settings, seeds, shapes

from numpyvae import ops as reference
from numpyvae.distributions import Bernoulli, DiagonalGaussian, Gaussian, GaussianLearnedVariance
from numpyvae.gradcheck import numerical_gradient, numerical_vjp, rel_error

TOL = 1e-7


def _away(rng, shape, low=0.1, high=2.0):
    """Values with ``low <= |v| <= high``, either sign.

    A derivative proportional to a value near zero (``mu``, ``expm1(logvar)``,
    ``eps``) would be tiny next to the rounding noise of a finite difference.
    """
    return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(low, high, shape)


def _posterior(rng, B, L):
    return _away(rng, (B, L)), _away(rng, (B, L), high=1.5)


# --------------------------------------------------------------------------
# KL closed form and the sampler's statistics
# --------------------------------------------------------------------------


def test_gaussian_kl_closed_form_matches_a_monte_carlo_estimate(backend):
    rng = np.random.default_rng(0)
    mu = np.array([[0.0, 1.0, -2.0], [0.5, -0.3, 0.1]])
    logvar = np.array([[0.0, -1.5, 1.0], [2.0, -3.0, 0.4]])
    n = 400_000
    eps = rng.standard_normal((n, *mu.shape))
    z = mu + np.exp(0.5 * logvar) * eps
    # log q(z) - log p(z), summed over latent dimensions (the log 2 pi terms cancel).
    log_ratio = np.sum(-0.5 * eps**2 - 0.5 * logvar + 0.5 * z**2, axis=2)
    mc, se = log_ratio.mean(axis=0), log_ratio.std(axis=0) / np.sqrt(n)

    kl = backend.gaussian_kl(mu, logvar)

    assert kl.shape == (2,)
    assert np.all(se < 0.02 * kl)  # the estimate is sharp enough to mean something
    assert np.all(np.abs(kl - mc) < 5 * se), (kl, mc, se)
    # And the closed form itself, term by term.
    expected = 0.5 * np.sum(mu**2 + np.exp(logvar) - 1 - logvar, axis=1)
    np.testing.assert_allclose(kl, expected, rtol=1e-14)


def test_kl_is_zero_exactly_at_the_prior(backend):
    kl = backend.gaussian_kl(np.zeros((3, 4)), np.zeros((3, 4)))
    np.testing.assert_array_equal(kl, np.zeros(3))


def _sampler_statistics(z, n):
    mean, std = z.mean(axis=0), z.std(axis=0)
    return mean, std, std / np.sqrt(n), std / np.sqrt(2 * n)


def test_reparameterized_samples_have_mean_mu_and_std_exp_half_logvar(backend):
    rng = np.random.default_rng(1)
    mu = np.array([0.0, 2.0, -1.0, 0.3, 5.0])
    logvar = np.array([0.0, -3.0, 1.5, 2.0, -0.7])
    n = 200_000
    eps = rng.standard_normal((n, mu.size))

    z = backend.reparameterize(np.tile(mu, (n, 1)), np.tile(logvar, (n, 1)), eps)

    sigma = np.exp(0.5 * logvar)
    mean, std, se_mean, se_std = _sampler_statistics(z, n)
    assert np.all(np.abs(mean - mu) < 5 * se_mean)
    assert np.all(np.abs(std - sigma) < 5 * se_std)
    # sigma = exp(logvar) (variance taken for the std) is far outside these bounds.
    wrong = np.exp(logvar)
    assert np.all(np.abs(std - wrong)[logvar != 0] > 50 * se_std[logvar != 0])


def test_latent_forward_splits_mu_and_logvar_and_samples_with_them(backend):
    rng = np.random.default_rng(2)
    L, n = 3, 100_000
    mu, logvar = np.array([1.0, -0.5, 0.0]), np.array([-1.0, 0.5, 2.0])
    h = np.tile(np.concatenate([mu, logvar]), (n, 1))
    eps = rng.standard_normal((n, L))

    z, kl = backend.latent_forward(h, eps)

    mean, std, se_mean, se_std = _sampler_statistics(z, n)
    assert np.all(np.abs(mean - mu) < 5 * se_mean)
    assert np.all(np.abs(std - np.exp(0.5 * logvar)) < 5 * se_std)
    np.testing.assert_allclose(kl, backend.gaussian_kl(h[:, :L], h[:, L:]), rtol=1e-15)
    np.testing.assert_allclose(z, mu + np.exp(0.5 * logvar) * eps, rtol=1e-14)


# --------------------------------------------------------------------------
# Bernoulli: BCE with logits, stable and exact at |logit| = 100
# --------------------------------------------------------------------------


def _log_sigmoid(l):
    """log(1 / (1 + e^-l)), exactly in float64 for any l."""
    return -math.log1p(math.exp(-l)) if l >= 0 else l - math.log1p(math.exp(l))


def _exact_bce(l, x):
    return -x * _log_sigmoid(l) - (1 - x) * _log_sigmoid(-l)


def _exact_sigmoid(l):
    return 1 / (1 + math.exp(-l)) if l >= 0 else math.exp(l) / (1 + math.exp(l))


LOGITS = [-100.0, -40.0, -3.0, -0.5, 0.0, 0.5, 3.0, 40.0, 100.0]
TARGETS = [0.0, 0.3, 1.0]


def test_bernoulli_nll_is_exact_at_large_logits_in_float64(backend):
    pairs = [(lg, x) for lg in LOGITS for x in TARGETS]
    logits = np.array([[lg] for lg, _ in pairs])
    x = np.array([[t] for _, t in pairs])

    nll = backend.bernoulli_nll(logits, x)
    dlogits = backend.bernoulli_nll_backward(np.ones(len(pairs)), logits, x)

    expected = np.array([_exact_bce(lg, t) for lg, t in pairs])
    assert np.all(np.isfinite(nll))
    # Relative to each value, tiny ones (3.7e-44 at logit 100, target 1) included.
    np.testing.assert_allclose(nll, expected, rtol=1e-14, atol=0)
    expected_grad = np.array([[_exact_sigmoid(lg) - t] for lg, t in pairs])
    np.testing.assert_allclose(dlogits, expected_grad, rtol=1e-14, atol=1e-300)
    assert nll[pairs.index((100.0, 0.0))] == 100.0
    assert nll[pairs.index((-100.0, 1.0))] == 100.0
    assert 0 < nll[pairs.index((100.0, 1.0))] < 1e-43


def test_bernoulli_nll_is_finite_and_accurate_in_float32(backend):
    logits = np.array([LOGITS] * len(TARGETS))
    x = np.array([[t] * len(LOGITS) for t in TARGETS])
    nll32 = backend.bernoulli_nll(logits.astype(np.float32), x.astype(np.float32))
    grad32 = backend.bernoulli_nll_backward(np.ones(len(TARGETS), np.float32),
                                            logits.astype(np.float32), x.astype(np.float32))
    assert nll32.dtype == np.float32 and grad32.dtype == np.float32
    assert np.all(np.isfinite(nll32)) and np.all(np.isfinite(grad32))
    expected = [sum(_exact_bce(lg, t) for lg in LOGITS) for t in TARGETS]
    np.testing.assert_allclose(nll32, expected, rtol=1e-6)


def test_bernoulli_nll_sums_over_pixels(backend):
    rng = np.random.default_rng(3)
    logits, x = rng.normal(0, 3, (4, 6)), rng.random((4, 6))
    expected = [[_exact_bce(lg, t) for lg, t in zip(row_l, row_x, strict=True)]
                for row_l, row_x in zip(logits, x, strict=True)]
    np.testing.assert_allclose(backend.bernoulli_nll(logits, x), np.sum(expected, axis=1),
                               rtol=1e-13)


# --------------------------------------------------------------------------
# Gaussian likelihood
# --------------------------------------------------------------------------


@pytest.mark.parametrize("per_pixel", [True, False])
def test_gaussian_nll_matches_scipy(backend, per_pixel):
    rng = np.random.default_rng(4)
    mean, x = rng.standard_normal((3, 5)), rng.standard_normal((3, 5))
    logvar = rng.uniform(-2, 1, 5) if per_pixel else np.float64(-0.7)
    expected = -stats.norm.logpdf(x, loc=mean, scale=np.exp(0.5 * logvar)).sum(axis=1)
    np.testing.assert_allclose(backend.gaussian_nll(mean, logvar, x), expected, rtol=1e-13)


def test_gaussian_nll_keeps_float32(backend):
    rng = np.random.default_rng(5)
    mean = rng.standard_normal((3, 5)).astype(np.float32)
    x = rng.standard_normal((3, 5)).astype(np.float32)
    for logvar in (np.float32(-1.0), np.full(5, -1.0, np.float32)):
        nll = backend.gaussian_nll(mean, logvar, x)
        assert nll.dtype == np.float32
        dmean, dlogvar = backend.gaussian_nll_backward(np.ones(3, np.float32), mean, logvar, x)
        assert dmean.dtype == np.float32 and dlogvar.dtype == np.float32


# --------------------------------------------------------------------------
# Each backward against central differences, with a random upstream gradient
# --------------------------------------------------------------------------


def _draw(data):
    B, L = data.draw(shapes(), label="(batch, dim)")
    rng = np.random.default_rng(data.draw(seeds(), label="seed"))
    return B, L, rng


@fixture_settings
@given(data=st.data())
def test_reparameterize_backward(backend, data):
    B, L, rng = _draw(data)
    mu, logvar = _posterior(rng, B, L)
    eps, dz = _away(rng, (B, L)), rng.standard_normal((B, L))

    dmu, dlogvar = backend.reparameterize_backward(dz, logvar, eps)

    def f():
        return backend.reparameterize(mu, logvar, eps)

    assert rel_error(dmu, numerical_vjp(f, mu, dz)) <= TOL
    assert rel_error(dlogvar, numerical_vjp(f, logvar, dz)) <= TOL


@fixture_settings
@given(data=st.data())
def test_gaussian_kl_backward(backend, data):
    B, L, rng = _draw(data)
    mu, logvar = _posterior(rng, B, L)
    dkl = rng.standard_normal(B)

    dmu, dlogvar = backend.gaussian_kl_backward(dkl, mu, logvar)

    def f():
        return backend.gaussian_kl(mu, logvar)

    assert rel_error(dmu, numerical_vjp(f, mu, dkl)) <= TOL
    assert rel_error(dlogvar, numerical_vjp(f, logvar, dkl)) <= TOL


@fixture_settings
@given(data=st.data())
def test_latent_backward_sums_both_paths(backend, data):
    B, L, rng = _draw(data)
    h = np.hstack(_posterior(rng, B, L))
    eps, dz, dkl = _away(rng, (B, L)), rng.standard_normal((B, L)), rng.standard_normal(B)

    dh = backend.latent_backward(dz, h, eps, dkl)

    def f():
        z, kl = backend.latent_forward(h, eps)
        return np.sum(dz * z) + np.sum(dkl * kl)

    assert dh.shape == (B, 2 * L)
    assert rel_error(dh, numerical_gradient(f, h)) <= TOL


@fixture_settings
@given(data=st.data())
def test_latent_backward_with_free_bits(backend, data):
    B, L, rng = _draw(data)
    L = max(L, 2)
    h = np.hstack(_posterior(rng, B, L))
    per_dim = np.sort(backend.kl_per_dimension(h[:, :L], h[:, L:]))
    # A threshold halfway between two dimensions' KLs: some are active, some are not,
    # and none sits close enough to the threshold for a finite difference to cross it.
    gaps = np.diff(per_dim)
    i = int(np.argmax(gaps))
    free_bits = 0.5 * (per_dim[i] + per_dim[i + 1])
    assume(gaps[i] >= 1e-3)  # all dimensions (nearly) equal: no threshold to place
    beta = 0.7
    eps, dz = _away(rng, (B, L)), rng.standard_normal((B, L))

    dh = backend.latent_backward(dz, h, eps, np.full(B, beta / B), free_bits)

    def f():  # sum(dz * z) + beta * sum_j max(lambda, batch-mean KL_j)
        z, _ = backend.latent_forward(h, eps)
        kl_j = backend.kl_per_dimension(h[:, :L], h[:, L:])
        return np.sum(dz * z) + beta * np.sum(np.maximum(kl_j, free_bits))

    assert rel_error(dh, numerical_gradient(f, h)) <= TOL
    without = backend.latent_backward(dz, h, eps, np.full(B, beta / B), 0.0)
    assert not np.allclose(dh, without)  # the threshold did switch some dimensions off


@fixture_settings
@given(data=st.data())
def test_bernoulli_nll_backward(backend, data):
    B, D, rng = _draw(data)
    logits, x = rng.normal(0, 3, (B, D)), rng.random((B, D))
    # The NLL's terms have the size of the logits, so a gradient sigmoid(l) - x
    # that is nearly zero everywhere is below what a finite difference resolves.
    assume(np.max(np.abs(1 / (1 + np.exp(-logits)) - x)) > 0.05)
    dnll = rng.standard_normal(B)

    dlogits = backend.bernoulli_nll_backward(dnll, logits, x)

    def f():
        return backend.bernoulli_nll(logits, x)

    assert rel_error(dlogits, numerical_vjp(f, logits, dnll)) <= TOL


@pytest.mark.parametrize("per_pixel", [True, False])
@fixture_settings
@given(data=st.data())
def test_gaussian_nll_backward(backend, per_pixel, data):
    B, D, rng = _draw(data)
    mean = rng.standard_normal((B, D))
    x = mean + _away(rng, (B, D))  # the mean gradient is proportional to x - mean
    logvar = rng.uniform(-1.5, 1.0, D) if per_pixel else np.array(rng.uniform(-1.5, 1.0))
    # ... and the log-variance gradient to 1 - (x - mean)^2 / var.
    assume(np.max(np.abs(1 - (x - mean) ** 2 * np.exp(-logvar))) > 0.05)
    dnll = rng.standard_normal(B)

    dmean, dlogvar_each = backend.gaussian_nll_backward(dnll, mean, logvar, x)

    def f():
        return backend.gaussian_nll(mean, logvar, x)

    assert rel_error(dmean, numerical_vjp(f, mean, dnll)) <= TOL
    if per_pixel:
        assert rel_error(dlogvar_each.sum(axis=0), numerical_vjp(f, logvar, dnll)) <= TOL
    else:
        # One number summed from B * D terms of either sign can cancel to nearly
        # zero, so measure the error against the size of the terms.
        numeric = numerical_vjp(f, logvar, dnll)
        assert abs(dlogvar_each.sum() - numeric) <= TOL * np.abs(dlogvar_each).sum()


def test_fused_nll_and_grad_equal_the_separate_ops(backend):
    rng = np.random.default_rng(6)
    B, D = 4, 5
    logits, x = rng.normal(0, 2, (B, D)), rng.random((B, D))
    nll, dlogits = backend.bernoulli_nll_and_grad(logits, x, 1 / B)
    np.testing.assert_allclose(nll, backend.bernoulli_nll(logits, x), rtol=1e-15)
    np.testing.assert_allclose(
        dlogits, backend.bernoulli_nll_backward(np.full(B, 1 / B), logits, x), rtol=1e-15)

    mean, logvar = rng.standard_normal((B, D)), rng.uniform(-1, 1, D)
    dlogvar = np.full(D, 10.0)  # accumulated into, not overwritten
    nll, dmean = backend.gaussian_nll_and_grad(mean, logvar, x, 1 / B, dlogvar)
    want_dmean, want_each = backend.gaussian_nll_backward(np.full(B, 1 / B), mean, logvar, x)
    np.testing.assert_allclose(nll, backend.gaussian_nll(mean, logvar, x), rtol=1e-15)
    np.testing.assert_allclose(dmean, want_dmean, rtol=1e-15)
    np.testing.assert_allclose(dlogvar, 10.0 + want_each.sum(axis=0), rtol=1e-14)
    # A fixed variance has no gradient to accumulate.
    nll_fixed, _ = backend.gaussian_nll_and_grad(mean, np.float64(-1.0), x, 1 / B, None)
    np.testing.assert_allclose(nll_fixed, backend.gaussian_nll(mean, np.float64(-1.0), x),
                               rtol=1e-15)


# --------------------------------------------------------------------------
# The objects the model uses (numpyvae.distributions): same ops, any data shape
# --------------------------------------------------------------------------

LIKELIHOOD_OBJECTS = {
    "bernoulli": lambda: Bernoulli(),
    "gaussian": lambda: Gaussian(0.3),
    "gaussian-learned": lambda: GaussianLearnedVariance(),
}


@pytest.mark.parametrize("data_shape", [(6,), (2, 3, 2)], ids=str)
@pytest.mark.parametrize("name", LIKELIHOOD_OBJECTS)
def test_likelihood_objects_match_central_differences_on_any_shape(backend_name, name,
                                                                   data_shape):
    rng = np.random.default_rng(0)
    likelihood = LIKELIHOOD_OBJECTS[name]()
    likelihood.set_backend(backend_name)
    likelihood.setup(data_shape, np.float64)
    if name == "gaussian-learned":
        assert likelihood.params["logvar"].shape == data_shape
        likelihood.params["logvar"][...] = rng.uniform(-1, 0.5, data_shape)
    B, scale = 4, 0.7
    out = rng.standard_normal((B, *data_shape))
    x = rng.random((B, *data_shape))

    likelihood.zero_grad()
    nll, dout = likelihood.nll_and_grad(out, x, scale)
    assert nll.shape == (B,) and dout.shape == out.shape
    np.testing.assert_allclose(nll, likelihood.nll(out, x), rtol=1e-14)
    flat = likelihood.nll(out.reshape(B, -1), x.reshape(B, -1)) if data_shape == (6,) else nll
    np.testing.assert_allclose(nll, flat, rtol=1e-14)

    def f():
        return scale * likelihood.nll(out, x).sum()

    assert rel_error(dout, numerical_gradient(f, out)) <= TOL
    for key, grad in likelihood.grads.items():
        assert rel_error(grad, numerical_gradient(f, likelihood.params[key])) <= TOL

    # Any upstream gradient per example (importance weights, say), not only a scale.
    dnll = rng.standard_normal(B)
    likelihood.zero_grad()
    dout = likelihood.nll_backward(out, x, dnll)
    assert dout.shape == out.shape

    def g():
        return likelihood.nll(out, x)

    assert rel_error(dout, numerical_vjp(g, out, dnll)) <= TOL
    for key, grad in likelihood.grads.items():
        assert rel_error(grad, numerical_vjp(g, likelihood.params[key], dnll)) <= TOL
    mean = likelihood.mean(out)
    assert mean.shape == out.shape
    if name == "bernoulli":
        np.testing.assert_allclose(mean, 1 / (1 + np.exp(-out)), rtol=1e-14)
    else:
        np.testing.assert_array_equal(mean, out)


def test_likelihood_objects_call_the_backend_ops():
    rng = np.random.default_rng(1)
    out, x = rng.standard_normal((3, 5)), rng.random((3, 5))
    bern = Bernoulli(backend="numpy")
    np.testing.assert_array_equal(bern.nll(out, x), reference.bernoulli_nll(out, x))
    gauss = Gaussian(0.5, backend="numpy")
    gauss.setup((5,), np.float64)
    np.testing.assert_array_equal(gauss.nll(out, x), reference.gaussian_nll(out, np.log(0.5), x))
    assert gauss.spec() == {"type": "Gaussian", "var": 0.5}
    with pytest.raises(ValueError, match="var must be a positive number"):
        Gaussian(0.0)


def test_diagonal_gaussian_is_the_latent_ops_with_a_cache(backend_name):
    rng = np.random.default_rng(2)
    B, L, beta = 5, 3, 0.4
    h, eps, dz = rng.standard_normal((B, 2 * L)), rng.standard_normal((B, L)), \
        rng.standard_normal((B, L))
    posterior = DiagonalGaussian(L, backend=backend_name)
    with pytest.raises(RuntimeError, match="before forward"):
        posterior.backward(dz, beta)
    z, kl = posterior.forward(h, eps)
    mu, logvar = posterior.split(h)
    np.testing.assert_allclose(z, mu + np.exp(0.5 * logvar) * eps, rtol=1e-14)
    np.testing.assert_allclose(kl, reference.gaussian_kl(mu, logvar), rtol=1e-14)
    assert posterior.kl_objective(kl) == pytest.approx(kl.mean(), rel=1e-15)
    dh = posterior.backward(dz, beta)

    def f():
        z, kl = reference.latent_forward(h, eps)
        return np.sum(dz * z) + beta * kl.sum()

    assert rel_error(dh, numerical_gradient(f, h)) <= TOL
