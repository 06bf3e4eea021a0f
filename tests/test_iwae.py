"""The importance-weighted objective: value by hand, K = 1 against the ELBO, gradients checked."""

from __future__ import annotations

import math

import numpy as np
import pytest

from numpyvae import VAE, Autoencoder, iwae
from numpyvae.gradcheck import numerical_gradient, numerical_vjp, rel_error

D, HIDDEN, L, B = 6, (5,), 3, 4
TOL = 1e-7

LIKELIHOODS = {
    "bernoulli": dict(likelihood="bernoulli"),
    "gaussian-fixed": dict(likelihood="gaussian", gaussian_var=0.3),
    "gaussian-learned": dict(likelihood="gaussian", gaussian_var="learned"),
}


def make(backend="numpy", likelihood="bernoulli", dtype="float64", seed=0, **kwargs):
    model = VAE(D, hidden_dims=HIDDEN, latent_dim=L, dtype=dtype, seed=seed, backend=backend,
                activation="tanh", **LIKELIHOODS[likelihood], **kwargs)
    if "decoder.logvar" in model.params:
        model.params["decoder.logvar"][...] = np.random.default_rng(seed).uniform(-1, 0.5, D)
    return model


def data_for(model, n=B, seed=1):
    rng = np.random.default_rng(seed)
    if model.likelihood.name == "bernoulli":
        return rng.random((n, D)).astype(model.dtype)
    return rng.standard_normal((n, D)).astype(model.dtype)


def noise(n, k, seed=2):
    return np.random.default_rng(seed).standard_normal((n, k, L))


def log_normal(z, mean, var):
    """log N(z; mean, var) summed over the last axis, written from the density itself."""
    return np.sum(-0.5 * np.log(2 * np.pi * var) - (z - mean) ** 2 / (2 * var), axis=-1)


def loss_by_hand(model, x, eps):
    """The IWAE loss from the densities at z (not from the noise form the module uses)."""
    mu, logvar = model.encode(x)
    z = mu[:, None, :] + np.exp(0.5 * logvar)[:, None, :] * eps        # (B, K, L)
    Bn, K = eps.shape[:2]
    nll = model.reconstruction_nll(z.reshape(Bn * K, L), np.repeat(x, K, axis=0)).reshape(Bn, K)
    log_w = (-nll + log_normal(z, 0.0, 1.0)
             - log_normal(z, mu[:, None, :], np.exp(logvar)[:, None, :]))
    m = log_w.max(axis=1)
    return np.mean(-(m + np.log(np.mean(np.exp(log_w - m[:, None]), axis=1))))


# --------------------------------------------------------------------------
# The value
# --------------------------------------------------------------------------


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
@pytest.mark.parametrize("k", [1, 3, 8])
def test_loss_matches_the_densities(likelihood, k):
    model = make(likelihood=likelihood)
    x, eps = data_for(model), noise(B, k)
    result = iwae.loss_and_grads(model, x, k, eps=eps)
    assert result.loss == pytest.approx(loss_by_hand(model, x, eps), rel=1e-12, abs=1e-12)
    np.testing.assert_allclose(result.w_tilde.sum(axis=1), 1.0, rtol=1e-14)
    assert result.w_tilde.shape == (B, k)


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_k1_is_the_elbo_with_the_sampled_kl(backend_name, likelihood):
    """K = 1: the reconstruction term is the ELBO's, bit for bit, and the KL is its one-sample
    estimate log q(z|x) - log p(z); the decoder's gradients equal the ELBO's."""
    model = make(backend_name, likelihood)
    x, eps = data_for(model), noise(B, 1)
    result = iwae.loss_and_grads(model, x, 1, eps=eps)
    decoder_grads = {k: v.copy() for k, v in result.grads.items() if k.startswith("decoder.")}

    recon, kl = model.elbo_terms(x, eps=eps[:, 0])
    mu, logvar = model.encode(x)
    z = mu + np.exp(0.5 * logvar) * eps[:, 0]
    sampled_kl = 0.5 * np.sum(z * z - eps[:, 0] ** 2 - logvar, axis=1)   # log q - log p
    assert abs(result.loss - np.mean(recon + sampled_kl)) <= 1e-12 * abs(result.loss)
    assert result.recon == np.mean(recon)
    assert result.kl == pytest.approx(np.mean(kl), rel=1e-12)

    elbo = model.loss_and_grads(x, eps=eps[:, 0], beta=1.0)
    assert elbo.recon == result.recon
    for name, g in decoder_grads.items():
        assert rel_error(g, elbo.grads[name]) <= 1e-12, name


def test_k1_matches_the_elbo_in_expectation():
    """Averaged over the noise, the one-sample KL is the closed-form KL."""
    model = make(seed=3)
    x = data_for(model, n=64)
    eps = noise(64, 1, seed=5)
    draws = [iwae.loss_and_grads(model, x, 1, eps=noise(64, 1, seed=s)).loss
             for s in range(200)]
    elbo = [model.loss_and_grads(x, eps=noise(64, 1, seed=s)[:, 0]).loss for s in range(200)]
    diff = np.array(draws) - np.array(elbo)
    assert abs(diff.mean()) < 4 * diff.std() / math.sqrt(len(diff))
    assert eps.shape == (64, 1, L)


def test_bound_tightens_with_k():
    """E[L_K] decreases with K (Burda et al., theorem 1), towards -log p(x)."""
    model = make(seed=4)
    x = data_for(model, n=32)
    means = [np.mean([iwae.loss_and_grads(model, x, k, rng=np.random.default_rng(s)).loss
                      for s in range(40)]) for k in (1, 5, 50)]
    assert means[0] > means[1] > means[2]


def test_log_sum_exp_is_stable():
    log_w = np.array([[-1e4, -1e4 + math.log(3.0)], [800.0, 800.0]])
    loss, w = iwae.iwae_bound(log_w)
    np.testing.assert_allclose(w, [[0.25, 0.75], [0.5, 0.5]], rtol=1e-11)  # ulp of 1e4
    np.testing.assert_allclose(loss, [1e4 - math.log(2.0), -800.0], rtol=1e-14)
    assert np.all(np.isfinite(loss))


# --------------------------------------------------------------------------
# Gradients against central differences (float64, all K noises fixed)
# --------------------------------------------------------------------------


def test_latent_backward_with_random_upstream():
    """The mu/logvar part alone: a quadratic stand-in for the decoder, any upstream."""
    rng = np.random.default_rng(7)
    Bn, K = 3, 4
    mu, logvar = rng.standard_normal((Bn, L)), rng.uniform(-1, 1, (Bn, L))
    eps = rng.standard_normal((Bn, K, L))
    a, c = rng.standard_normal((Bn, 1, L)), rng.uniform(0.5, 2, (Bn, 1, L))
    beta = 0.6

    def per_example(mu, logvar):
        z = mu[:, None] + np.exp(0.5 * logvar)[:, None] * eps
        nll = np.sum(a * z + 0.5 * c * z * z, axis=2)          # a stand-in -log p(x|z)
        log_w = -nll + beta * iwae.log_prior_minus_posterior(z, eps, logvar)
        return iwae.iwae_bound(log_w)

    dloss = rng.standard_normal(Bn)                             # random upstream per example
    _, w = per_example(mu, logvar)
    z = mu[:, None] + np.exp(0.5 * logvar)[:, None] * eps
    dz = (dloss[:, None] * w)[:, :, None] * (a + c * z)         # dnll/dz weighted as path 1
    # iwae_latent_backward takes one scale; fold the per-example upstream into the weights.
    dmu, dlogvar = iwae.iwae_latent_backward(dz, dloss[:, None] * w, z, eps, logvar, 1.0, beta)
    num_mu = numerical_vjp(lambda: per_example(mu, logvar)[0], mu, dloss)
    num_lv = numerical_vjp(lambda: per_example(mu, logvar)[0], logvar, dloss)
    assert rel_error(dmu, num_mu) < TOL
    assert rel_error(dlogvar, num_lv) < TOL


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
@pytest.mark.parametrize("k,beta", [(1, 1.0), (4, 1.0), (3, 0.6)])
def test_gradient_of_every_parameter(backend_name, likelihood, k, beta):
    model = make(backend_name, likelihood)
    x, eps = data_for(model), noise(B, k)
    result = iwae.loss_and_grads(model, x, k, eps=eps, beta=beta)
    grads = {name: np.array(g) for name, g in result.grads.items()}

    def f():
        return iwae.loss_and_grads(model, x, k, eps=eps, beta=beta).loss

    for name, p in model.params.items():
        err = rel_error(grads[name], numerical_gradient(f, p, 1e-5))
        assert err < TOL, f"{name}: rel error {err:.2e}"


def test_backends_agree():
    a, b = make("numpy"), make("numba") if "numba" in _backends() else None
    if b is None:
        pytest.skip("numba backend not available")
    x, eps = data_for(a), noise(B, 5)
    ra = iwae.loss_and_grads(a, x, 5, eps=eps)
    ga = {k: v.copy() for k, v in ra.grads.items()}
    rb = iwae.loss_and_grads(b, x, 5, eps=eps)
    assert rb.loss == pytest.approx(ra.loss, rel=1e-12)
    for name in ga:
        assert rel_error(rb.grads[name], ga[name]) < 1e-12, name


def _backends():
    from conftest import BACKEND_NAMES

    return BACKEND_NAMES


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


def test_bad_arguments_are_named():
    model = make()
    x = data_for(model)
    with pytest.raises(ValueError, match="K must be a positive integer"):
        iwae.loss_and_grads(model, x, 0)
    with pytest.raises(ValueError, match=r"expected eps of shape \(4, 2, 3\)"):
        iwae.loss_and_grads(model, x, 2, eps=noise(B, 3))
    with pytest.raises(ValueError, match=r"expected x of shape \(batch, 6\)"):
        iwae.loss_and_grads(model, x[:, :5], 2)
    with pytest.raises(ValueError, match="needs a VAE"):
        iwae.loss_and_grads(Autoencoder(D, hidden_dims=HIDDEN, latent_dim=L), x, 2)


# --------------------------------------------------------------------------
# PyTorch autograd as an independent oracle (optional)
# --------------------------------------------------------------------------


def test_torch_oracle_loss_and_every_gradient():
    """The IWAE loss written in torch from its definition (densities at z, torch.logsumexp)."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    model = make(likelihood="gaussian-learned", seed=5)
    x, eps = data_for(model, seed=6), noise(B, 6, seed=7)
    result = iwae.loss_and_grads(model, x, 6, eps=eps, beta=1.0)
    grads = {k: np.array(v) for k, v in result.grads.items()}

    t = {k: torch.tensor(np.array(v), requires_grad=True) for k, v in model.params.items()}

    def net(prefix, a):
        names = [k[:-2] for k in model.params if k.startswith(prefix) and k.endswith(".W")]
        for i, name in enumerate(names):
            a = a @ t[name + ".W"] + t[name + ".b"]
            if i < len(names) - 1:
                a = torch.tanh(a)
        return a

    xt, et = torch.tensor(x), torch.tensor(eps)
    h = net("encoder.", xt)
    mu, logvar = h[:, :L], h[:, L:]
    std = torch.exp(0.5 * logvar)
    z = mu[:, None] + std[:, None] * et                                  # (B, K, L)
    out = net("decoder.", z)                                             # (B, K, D)
    px = torch.distributions.Normal(out, torch.exp(0.5 * t["decoder.logvar"]))
    log_px = px.log_prob(xt[:, None]).sum(-1)
    log_pz = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    log_qz = torch.distributions.Normal(mu[:, None], std[:, None]).log_prob(z).sum(-1)
    log_w = log_px + log_pz - log_qz
    loss = (math.log(6) - torch.logsumexp(log_w, dim=1)).mean()
    loss.backward()
    assert result.loss == pytest.approx(loss.item(), rel=1e-12)
    for name in model.params:
        assert rel_error(grads[name], t[name].grad.numpy()) < 1e-10, name


# --------------------------------------------------------------------------
# The shared formulas (numpyvae.ops) and the bound as an objective
# --------------------------------------------------------------------------


def test_gaussian_log_density_is_the_density_at_z():
    from numpyvae import ops

    rng = np.random.default_rng(11)
    mu, logvar = rng.standard_normal((3, 4, L)), rng.uniform(-2, 1, (3, 4, L))
    eps = rng.standard_normal((3, 4, L))
    z = mu + np.exp(0.5 * logvar) * eps
    np.testing.assert_allclose(ops.gaussian_log_density(eps, logvar),
                               log_normal(z, mu, np.exp(logvar)), rtol=1e-13)
    np.testing.assert_allclose(ops.gaussian_log_density(z), log_normal(z, 0.0, 1.0),
                               rtol=1e-13)
    assert ops.LOG_2PI == math.log(2 * math.pi)
    # The objective's log-ratio is the difference of the two, log 2 pi cancelled.
    np.testing.assert_allclose(iwae.log_prior_minus_posterior(z, eps, logvar[:, 0]),
                               ops.gaussian_log_density(z)
                               - ops.gaussian_log_density(eps, logvar[:, :1]), rtol=1e-12)


def test_logsumexp_and_its_gradient_the_normalised_weights():
    from numpyvae import ops

    rng = np.random.default_rng(12)
    a = rng.standard_normal((4, 5)) * 3
    for axis in (0, 1, -1):
        np.testing.assert_allclose(ops.logsumexp(a, axis=axis),
                                   np.log(np.sum(np.exp(a), axis=axis)), rtol=1e-14)
    w = ops.importance_weights(a, axis=1)
    np.testing.assert_allclose(w, np.exp(a) / np.exp(a).sum(axis=1, keepdims=True), rtol=1e-14)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-15)
    dout = rng.standard_normal(4)                               # a random upstream gradient
    numeric = numerical_vjp(lambda: ops.logsumexp(a, axis=1), a, dout)
    assert rel_error(dout[:, None] * w, numeric) < TOL
    # Neither overflows nor underflows where the plain formula would.
    big = np.array([[1000.0, 1000.0], [-1e4, -1e4 + math.log(3.0)]])
    np.testing.assert_allclose(ops.logsumexp(big, axis=1),
                               [1000 + math.log(2), -1e4 + math.log(4)], rtol=1e-14)
    np.testing.assert_allclose(ops.importance_weights(big, axis=1), [[0.5, 0.5], [0.25, 0.75]],
                               rtol=1e-11)


def test_the_bound_as_an_objective_object():
    from numpyvae.optim import SGD
    from numpyvae.step import ELBO, step

    model = make()
    x, eps = data_for(model), noise(B, 3)
    objective = iwae.ImportanceWeighted(3)
    assert objective.k == 3 and "k=3" in repr(objective)
    r = objective.loss_and_grads(model, x, eps=eps, beta=0.7)
    grads = model.flat_grads.copy()
    direct = iwae.loss_and_grads(model, x, 3, eps=eps, beta=0.7)
    assert r.loss == direct.loss and np.array_equal(grads, model.flat_grads)
    # The one step: the objective's loss and gradients, then the optimizer's step.
    before = model.flat_params.copy()
    result = step(model, SGD(model.params, lr=0.1), x, objective=objective, eps=eps, beta=0.7)
    assert result.loss == direct.loss
    np.testing.assert_allclose(model.flat_params, before - 0.1 * grads, rtol=1e-14, atol=1e-16)
    # The default objective is the model's own loss.
    elbo = ELBO().loss_and_grads(model, x, eps=eps[:, 0], beta=0.7)
    assert elbo.loss == model.loss_and_grads(x, eps=eps[:, 0], beta=0.7).loss
    with pytest.raises(ValueError, match="needs a VAE"):
        objective.check(Autoencoder(D, hidden_dims=HIDDEN, latent_dim=L))
    with pytest.raises(ValueError, match="free bits do not combine"):
        objective.check(make(free_bits=0.5))
    with pytest.raises(ValueError, match="K must be a positive integer"):
        iwae.ImportanceWeighted(0)
