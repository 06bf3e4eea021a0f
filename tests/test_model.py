"""The VAE and the autoencoder: end-to-end gradient checks, the loss by hand, the public API."""

from __future__ import annotations

import numpy as np
import pytest
from strategies import with_layout

from numpyvae import VAE, Autoencoder
from numpyvae import ops as reference
from numpyvae.gradcheck import check_model

D, HIDDEN, L, B = 6, (5, 4), 3, 4
BETA = 0.7
TOL = 1e-7

LIKELIHOODS = {
    "bernoulli": dict(likelihood="bernoulli"),
    "gaussian-fixed": dict(likelihood="gaussian", gaussian_var=0.3),
    "gaussian-learned": dict(likelihood="gaussian", gaussian_var="learned"),
}


def make(cls=VAE, backend="numpy", dtype="float64", likelihood="bernoulli", seed=0, **kwargs):
    kwargs = {"hidden_dims": HIDDEN, "latent_dim": L, **LIKELIHOODS[likelihood], **kwargs}
    model = cls(D, dtype=dtype, seed=seed, backend=backend, **kwargs)
    if "decoder.logvar" in model.params:  # move the learned variance off its start of 0
        model.params["decoder.logvar"][...] = np.random.default_rng(seed).uniform(-1, 0.5, D)
    return model


def data_for(model, n=B, seed=1):
    rng = np.random.default_rng(seed)
    if model.likelihood.name == "bernoulli":
        return rng.random((n, D)).astype(model.dtype)
    return rng.standard_normal((n, D)).astype(model.dtype)


def eps_for(model, n=B, seed=2):
    return np.random.default_rng(seed).standard_normal((n, model.latent_dim)).astype(model.dtype)


# --------------------------------------------------------------------------
# An independent forward pass, written from the model's parameters
# --------------------------------------------------------------------------

_ACT = {
    "relu": lambda a: np.maximum(a, 0),
    "tanh": np.tanh,
    "sigmoid": lambda a: 1 / (1 + np.exp(-a)),
    "softplus": lambda a: np.logaddexp(0, a),
    "leaky_relu": lambda a: np.where(a > 0, a, 0.01 * a),
}


def mlp_by_hand(model, prefix, x):
    n = sum(1 for name in model.params if name.startswith(prefix) and name.endswith(".W"))
    for i in range(n):
        x = x @ model.params[f"{prefix}{i}.W"] + model.params[f"{prefix}{i}.b"]
        if i < n - 1:
            x = _ACT[model.activation](x)
    return x


def obs_logvar(model):
    if "decoder.logvar" in model.params:
        return model.params["decoder.logvar"]
    return np.log(model.gaussian_var)


def nll_by_hand(model, out, x):
    if model.likelihood.name == "bernoulli":
        return np.sum(np.logaddexp(0, out) - x * out, axis=1)
    lv = obs_logvar(model)
    return np.sum(0.5 * (np.log(2 * np.pi) + lv + (x - out) ** 2 / np.exp(lv)), axis=1)


def loss_by_hand(model, x, eps, beta):
    """(loss, recon, kl) of a batch, from the parameters alone."""
    h = mlp_by_hand(model, "encoder.", x)
    if model.kind == "autoencoder":
        recon = nll_by_hand(model, mlp_by_hand(model, "decoder.", h), x).mean()
        return recon, recon, 0.0
    k = model.latent_dim
    mu, logvar = h[:, :k], h[:, k:]
    z = mu + np.exp(0.5 * logvar) * eps
    recon = nll_by_hand(model, mlp_by_hand(model, "decoder.", z), x).mean()
    kl_each = 0.5 * (mu**2 + np.exp(logvar) - 1 - logvar)
    kl = kl_each.sum(axis=1).mean()
    kl_term = kl
    if model.free_bits > 0:
        kl_term = np.maximum(kl_each.mean(axis=0), model.free_bits).sum()
    return recon + beta * kl_term, recon, kl


# --------------------------------------------------------------------------
# Every parameter against central differences, end to end (float64, eps fixed)
# --------------------------------------------------------------------------


def assert_gradients_check(model, x, eps=None, beta=BETA):
    report = check_model(model, x, eps, beta, tol=TOL)
    assert [row.name for row in report] == list(model.params)
    assert report.passed, str(report)


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_vae_gradient_of_every_parameter(backend_name, likelihood, activation):
    model = make(VAE, backend_name, likelihood=likelihood, activation=activation)
    assert_gradients_check(model, data_for(model), eps_for(model))


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian-learned"])
def test_vae_gradient_without_hidden_layers(backend_name, likelihood):
    model = make(VAE, backend_name, likelihood=likelihood, hidden_dims=())
    assert list(model.params)[:2] == ["encoder.0.W", "encoder.0.b"]
    assert_gradients_check(model, data_for(model), eps_for(model))


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_autoencoder_gradient_of_every_parameter(backend_name, likelihood):
    model = make(Autoencoder, backend_name, likelihood=likelihood)
    assert_gradients_check(model, data_for(model))


def _free_bits_between_dimensions(model, x):
    """A threshold halfway across the widest gap between per-dimension KLs."""
    mu, logvar = model.encode(x)
    per_dim = np.sort(reference.kl_per_dimension(mu, logvar))
    i = int(np.argmax(np.diff(per_dim)))
    assert per_dim[i + 1] - per_dim[i] > 1e-3  # far from both neighbours
    return 0.5 * (per_dim[i] + per_dim[i + 1])


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian-fixed"])
def test_vae_gradient_with_free_bits(backend_name, likelihood):
    probe = make(VAE, "numpy", likelihood=likelihood, latent_dim=4)
    x = data_for(probe)
    free_bits = _free_bits_between_dimensions(probe, x)
    model = make(VAE, backend_name, likelihood=likelihood, latent_dim=4, free_bits=free_bits)
    eps = eps_for(model)

    result = model.loss_and_grads(x, eps=eps, beta=BETA)
    loss, recon, kl = loss_by_hand(model, x, eps, BETA)
    assert result.loss == pytest.approx(loss, rel=1e-12)
    assert result.kl == pytest.approx(kl, rel=1e-12)  # the true KL, not the clamped one
    assert result.loss != pytest.approx(recon + BETA * kl, rel=1e-6)  # the threshold acts
    assert_gradients_check(model, x, eps)


# --------------------------------------------------------------------------
# The loss itself
# --------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [VAE, Autoencoder])
@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_loss_matches_a_forward_pass_by_hand(backend_name, cls, likelihood):
    model = make(cls, backend_name, likelihood=likelihood, activation="softplus")
    x, eps = data_for(model), eps_for(model)
    result = model.loss_and_grads(x, eps=eps, beta=BETA)
    loss, recon, kl = loss_by_hand(model, x, eps, BETA)
    assert result.loss == pytest.approx(loss, rel=1e-12)
    assert result.recon == pytest.approx(recon, rel=1e-12)
    assert result.kl == pytest.approx(kl, rel=1e-12, abs=1e-300)
    assert isinstance(result.loss, float)


def test_loss_and_grads_resets_gradients_each_call(backend_name):
    model = make(VAE, backend_name)
    x, eps = data_for(model), eps_for(model)
    first = {k: g.copy() for k, g in model.loss_and_grads(x, eps=eps).grads.items()}
    second = model.loss_and_grads(x, eps=eps).grads
    assert second.keys() == model.params.keys()
    for name, g in second.items():
        np.testing.assert_array_equal(g, first[name])
        assert g is model.grads[name]


def test_noise_comes_from_the_given_generator(backend_name):
    model = make(VAE, backend_name)
    x = data_for(model)
    drawn = model.loss_and_grads(x, rng=np.random.default_rng(7)).loss
    given = model.loss_and_grads(
        x, eps=np.random.default_rng(7).standard_normal((B, L))).loss
    assert drawn == given
    # Without eps or rng the model's own generator advances: a new draw each call.
    assert model.loss_and_grads(x).loss != model.loss_and_grads(x).loss


@pytest.mark.parametrize("layout", ["transposed", "sliced"])
@pytest.mark.parametrize("cls", [VAE, Autoencoder])
def test_non_contiguous_data_gives_the_same_loss_and_gradients(backend_name, layout, cls):
    model = make(cls, backend_name, likelihood="gaussian-learned")
    x, eps = data_for(model), eps_for(model)
    want = model.loss_and_grads(x, eps=eps, beta=BETA)
    want_loss, want_grads = want.loss, {k: g.copy() for k, g in want.grads.items()}
    got = model.loss_and_grads(with_layout(x, layout), eps=with_layout(eps, layout), beta=BETA)
    assert got.loss == pytest.approx(want_loss, rel=1e-13)
    for name, g in got.grads.items():
        np.testing.assert_allclose(g, want_grads[name], rtol=1e-11, atol=1e-14)


def test_backends_agree_with_the_reference(backend_name):
    ours = make(VAE, backend_name, likelihood="gaussian-learned")
    reference_model = make(VAE, "numpy", likelihood="gaussian-learned")
    x, eps = data_for(ours), eps_for(ours)
    got = ours.loss_and_grads(x, eps=eps, beta=BETA)
    want = reference_model.loss_and_grads(x, eps=eps, beta=BETA)
    assert got.loss == pytest.approx(want.loss, rel=1e-12)
    np.testing.assert_allclose(ours.flat_grads, reference_model.flat_grads, rtol=1e-10,
                               atol=1e-13)


@pytest.mark.parametrize("cls", [VAE, Autoencoder])
@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_float32_model_stays_float32_and_tracks_float64(backend_name, cls, likelihood):
    m32 = make(cls, backend_name, "float32", likelihood)
    m64 = make(cls, backend_name, "float64", likelihood)
    assert all(p.dtype == np.float32 for p in m32.params.values())
    x, eps = data_for(m64), eps_for(m64)
    r32 = m32.loss_and_grads(x.astype(np.float32), eps=eps.astype(np.float32), beta=BETA)
    loss32, grads32 = r32.loss, {k: g.copy() for k, g in r32.grads.items()}
    r64 = m64.loss_and_grads(x, eps=eps, beta=BETA)
    assert loss32 == pytest.approx(r64.loss, rel=1e-5)
    for name, g in grads32.items():
        assert g.dtype == np.float32
        scale = np.max(np.abs(r64.grads[name]))
        np.testing.assert_allclose(g, r64.grads[name], atol=1e-4 * scale + 1e-6)


def test_integer_data_is_accepted(backend_name):
    model = make(VAE, backend_name)
    x01 = (data_for(model) > 0.5).astype(np.uint8)
    eps = eps_for(model)
    assert model.loss_and_grads(x01, eps=eps).loss == pytest.approx(
        model.loss_and_grads(x01.astype(np.float64), eps=eps).loss, rel=1e-15)


# --------------------------------------------------------------------------
# Parameters and structure
# --------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [VAE, Autoencoder])
def test_parameters_live_in_one_flat_buffer_by_qualified_name(cls):
    model = make(cls, likelihood="gaussian-learned")
    width = 2 * L if cls is VAE else L
    assert model.params["encoder.2.W"].shape == (HIDDEN[-1], width)
    assert model.params["decoder.0.W"].shape == (L, HIDDEN[-1])
    assert model.params["decoder.2.W"].shape == (HIDDEN[0], D)
    assert model.params["decoder.logvar"].shape == (D,)
    assert model.num_params == sum(p.size for p in model.params.values())
    assert model.params.keys() == model.grads.keys()
    for name, p in model.params.items():
        assert np.shares_memory(p, model.flat_params), name
        assert np.shares_memory(model.grads[name], model.flat_grads), name
    assert "decoder.logvar" not in make(cls, likelihood="gaussian-fixed").params
    with pytest.raises(TypeError):
        model.params["new"] = np.zeros(1)  # a read-only mapping


def test_writing_a_parameter_changes_the_model(backend_name):
    model = make(VAE, backend_name, likelihood="gaussian-fixed")
    z = eps_for(model)
    before = model.decode(z)
    model.params["decoder.2.b"][...] += 1.0
    np.testing.assert_allclose(model.decode(z), before + 1.0, rtol=1e-14)


def test_the_same_seed_builds_the_same_model():
    a, b, c = make(seed=5), make(seed=5), make(seed=6)
    np.testing.assert_array_equal(a.flat_params, b.flat_params)
    assert not np.array_equal(a.flat_params, c.flat_params)


# --------------------------------------------------------------------------
# Public methods: shapes, dtypes, semantics, and results that stay put
# --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian-learned"])
def test_vae_public_methods_shapes_and_dtypes(backend_name, dtype, likelihood):
    model = make(VAE, backend_name, dtype, likelihood)
    x, z = data_for(model, 5), eps_for(model, 5)
    mu, logvar = model.encode(x)
    recon, kl = model.elbo_terms(x, eps=z)
    results = {
        "mu": (mu, (5, L)), "logvar": (logvar, (5, L)), "embed": (model.embed(x), (5, L)),
        "decode": (model.decode(z), (5, D)), "reconstruct": (model.reconstruct(x), (5, D)),
        "reconstruct-sample": (model.reconstruct(x, sample=True), (5, D)),
        "sample": (model.sample(7), (7, D)),
        "interpolate": (model.interpolate(x[0], x[1], steps=4), (4, D)),
        "elbo-recon": (recon, (5,)), "elbo-kl": (kl, (5,)),
        "reconstruction_nll": (model.reconstruction_nll(z, x), (5,)),
    }
    for name, (value, shape) in results.items():
        assert value.shape == shape, name
        assert value.dtype == dtype, name
        assert np.all(np.isfinite(value)), name


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_autoencoder_public_methods_shapes_and_dtypes(backend_name, dtype):
    model = make(Autoencoder, backend_name, dtype)
    x, z = data_for(model, 5), eps_for(model, 5)
    recon, kl = model.elbo_terms(x)
    for value, shape in [(model.encode(x), (5, L)), (model.embed(x), (5, L)),
                         (model.decode(z), (5, D)), (model.reconstruct(x), (5, D)),
                         (model.sample(3), (3, D)), (model.interpolate(x[0], x[1], 6), (6, D)),
                         (recon, (5,)), (kl, (5,))]:
        assert value.shape == shape and value.dtype == dtype
    np.testing.assert_array_equal(kl, 0.0)
    np.testing.assert_allclose(recon, model.reconstruction_nll(model.encode(x), x), rtol=1e-15)


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_decode_returns_the_mean_of_p_x_given_z(backend_name, likelihood):
    model = make(VAE, backend_name, likelihood=likelihood)
    z = eps_for(model)
    out = mlp_by_hand(model, "decoder.", z)
    decoded = model.decode(z)
    if likelihood == "bernoulli":
        assert np.all((decoded > 0) & (decoded < 1))
        np.testing.assert_allclose(decoded, 1 / (1 + np.exp(-out)), rtol=1e-14)
    else:
        np.testing.assert_allclose(decoded, out, rtol=1e-14)


def test_encode_embed_and_reconstruct_agree(backend_name):
    model = make(VAE, backend_name)
    x = data_for(model)
    mu, logvar = model.encode(x)
    h = mlp_by_hand(model, "encoder.", x)
    np.testing.assert_allclose(mu, h[:, :L], rtol=1e-14)
    np.testing.assert_allclose(logvar, h[:, L:], rtol=1e-14)
    np.testing.assert_array_equal(model.embed(x), mu)
    np.testing.assert_array_equal(model.reconstruct(x), model.decode(mu))
    sampled = model.reconstruct(x, sample=True, rng=np.random.default_rng(3))
    eps = np.random.default_rng(3).standard_normal((B, L))
    np.testing.assert_allclose(sampled, model.decode(mu + np.exp(0.5 * logvar) * eps),
                               rtol=1e-13)
    assert not np.allclose(sampled, model.reconstruct(x))


@pytest.mark.parametrize("cls", [VAE, Autoencoder])
def test_interpolate_endpoints_decode_the_two_codes(backend_name, cls):
    model = make(cls, backend_name)
    x = data_for(model, 2)
    codes = model.embed(x)
    path = model.interpolate(x[0], x[1], steps=5)
    np.testing.assert_array_equal(path[0], model.decode(codes[:1])[0])
    np.testing.assert_array_equal(path[-1], model.decode(codes[1:])[0])
    np.testing.assert_allclose(path[2], model.decode(codes.mean(axis=0, keepdims=True))[0],
                               rtol=1e-12)
    # (input_dim,) and (1, input_dim) are the same request.
    np.testing.assert_array_equal(model.interpolate(x[:1], x[1:], steps=5), path)


def test_sample_decodes_prior_draws(backend_name):
    model = make(VAE, backend_name)
    drawn = model.sample(6, rng=np.random.default_rng(4))
    z = np.random.default_rng(4).standard_normal((6, L))
    np.testing.assert_array_equal(drawn, model.decode(z))
    assert not np.array_equal(model.sample(6), model.sample(6))


def test_elbo_terms_agree_with_the_loss(backend_name):
    model = make(VAE, backend_name, likelihood="gaussian-fixed")
    x, eps = data_for(model), eps_for(model)
    recon, kl = model.elbo_terms(x, eps=eps)
    result = model.loss_and_grads(x, eps=eps, beta=1.0)
    assert recon.mean() == pytest.approx(result.recon, rel=1e-14)
    assert kl.mean() == pytest.approx(result.kl, rel=1e-14)
    mu, logvar = model.encode(x)
    np.testing.assert_allclose(
        recon, model.reconstruction_nll(mu + np.exp(0.5 * logvar) * eps, x), rtol=1e-13)


def _public_results(model, x, z, steps):
    out = {}
    if model.kind == "vae":
        out["mu"], out["logvar"] = model.encode(x)
        out["recon"], out["kl"] = model.elbo_terms(x, eps=z)
        out["reconstruct-sample"] = model.reconstruct(x, sample=True)
    else:
        out["encode"] = model.encode(x)
        out["recon"], out["kl"] = model.elbo_terms(x)
    out["embed"] = model.embed(x)
    out["decode"] = model.decode(z)
    out["reconstruct"] = model.reconstruct(x)
    out["sample"] = model.sample(len(x))
    out["interpolate"] = model.interpolate(x[0], x[1], steps)
    out["reconstruction_nll"] = model.reconstruction_nll(z, x)
    return out


@pytest.mark.parametrize("cls", [VAE, Autoencoder])
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian-learned"])
def test_public_results_are_not_overwritten_by_later_calls(backend_name, cls, likelihood):
    """The model reuses work buffers internally; what it hands out must be a copy."""
    model = make(cls, backend_name, likelihood=likelihood)
    x1, x2 = data_for(model, B, seed=1), data_for(model, B, seed=9)
    z1, z2 = eps_for(model, B, seed=2), eps_for(model, B, seed=8)

    first = _public_results(model, x1, z1, steps=B)
    kept = {name: value.copy() for name, value in first.items()}
    _public_results(model, x2, z2, steps=B)
    model.loss_and_grads(x2, eps=z2)
    model.loss_and_grads(x1, eps=z1)

    for name, value in first.items():
        np.testing.assert_array_equal(value, kept[name], err_msg=name)


# --------------------------------------------------------------------------
# Errors a user can cause
# --------------------------------------------------------------------------


def test_wrong_shapes_raise_value_errors_naming_expected_and_received(backend_name):
    model = make(VAE, backend_name)
    with pytest.raises(ValueError, match=r"VAE: expected x of shape \(batch, 6\), got \(4, 5\)"):
        model.loss_and_grads(np.zeros((4, 5)))
    with pytest.raises(ValueError, match=r"VAE: expected eps of shape \(4, 3\), got \(4, 2\)"):
        model.loss_and_grads(np.zeros((4, D)), eps=np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"VAE: expected z of shape \(batch, 3\), got \(3,\)"):
        model.decode(np.zeros(3))
    with pytest.raises(ValueError, match=r"expected x of shape \(batch, 6\), got \(6,\)"):
        model.encode(np.zeros(D))
    with pytest.raises(ValueError, match="z has 3 rows but x has 1"):
        model.reconstruction_nll(np.zeros((3, L)), np.zeros((1, D)))  # no silent broadcast
    with pytest.raises(ValueError, match="x must be numeric"):
        model.encode(np.array([["a"] * D]))
    with pytest.raises(ValueError, match="n must be a positive integer"):
        model.sample(0)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        model.interpolate(np.zeros(D), np.zeros(D), steps=0)
    with pytest.raises(ValueError, match=r"Autoencoder: expected x of shape \(batch, 6\)"):
        make(Autoencoder, backend_name).encode(np.zeros((2, 7)))


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(input_dim=0), "input_dim must be a positive integer"),
    (dict(latent_dim=2.5), "latent_dim must be a positive integer"),
    (dict(hidden_dims=(4, -1)), "each of hidden_dims must be a positive integer"),
    (dict(likelihood="poisson"), "unknown likelihood 'poisson'"),
    (dict(activation="gelu"), "unknown activation 'gelu'"),
    (dict(likelihood="gaussian", gaussian_var=-1.0), "gaussian_var must be a positive number"),
    (dict(likelihood="gaussian", gaussian_var="learnt"), "gaussian_var must be a positive"),
    (dict(free_bits=-0.5), "free_bits must be a number >= 0"),
    (dict(dtype="float16"), "unsupported dtype"),
    (dict(backend="cuda"), "unknown backend 'cuda'"),
])
@pytest.mark.parametrize("cls", [VAE, Autoencoder])
def test_constructor_rejects_bad_arguments(cls, kwargs, message):
    args = {"input_dim": D, "hidden_dims": HIDDEN, "latent_dim": L, "backend": "numpy", **kwargs}
    with pytest.raises(ValueError, match=message):
        cls(**args)


def test_repr_names_the_configuration():
    text = repr(make(VAE, likelihood="gaussian-fixed"))
    for part in ("VAE", "input_dim=6", "hidden_dims=(5, 4)", "latent_dim=3", "'gaussian'",
                 "'float64'", "backend='numpy'"):
        assert part in text


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_drawn_noise_is_the_generators_next_draw(backend_name, dtype):
    """Noise drawn by the model equals ``rng.standard_normal((B, L), dtype)`` passed as eps."""
    model = make(backend=backend_name, dtype=dtype)
    x = data_for(model)
    drawn = model.loss_and_grads(x, beta=BETA, rng=np.random.default_rng(4))
    grads = model.flat_grads.copy()
    eps = np.random.default_rng(4).standard_normal((B, L), dtype=model.dtype)
    given = model.loss_and_grads(x, eps=eps, beta=BETA)
    assert (drawn.loss, drawn.recon, drawn.kl) == (given.loss, given.recon, given.kl)
    np.testing.assert_array_equal(grads, model.flat_grads)


def test_the_networks_read_their_inputs_through_hooks():
    """The VAE's hooks are the identity and refuse labels: it is not conditional."""
    model = make()
    x, z = data_for(model), eps_for(model)
    assert model.encoder_input(x) is x and model.decoder_input(z) is z
    for call in (lambda: model.loss_and_grads(x, labels=np.zeros(B, int)),
                 lambda: model.encode(x, np.zeros(B, int)),
                 lambda: model.decode(z, np.zeros(B, int))):
        with pytest.raises(ValueError, match="VAE is not conditional"):
            call()
