"""The conditional VAE: the loss by hand, every gradient end to end, labels, save/load, sampling."""

from __future__ import annotations

import numpy as np
import pytest

import numpyvae
from numpyvae import CVAE, VAE, iwae
from numpyvae.cvae import one_hot
from numpyvae.gradcheck import numerical_gradient, rel_error

D, HIDDEN, L, C, B = 6, (5,), 3, 4, 5
TOL = 1e-7

LIKELIHOODS = {
    "bernoulli": dict(likelihood="bernoulli"),
    "gaussian-learned": dict(likelihood="gaussian", gaussian_var="learned"),
}


def make(backend="numpy", likelihood="bernoulli", seed=0, **kwargs):
    model = CVAE(D, num_classes=C, hidden_dims=HIDDEN, latent_dim=L, dtype="float64",
                 activation="tanh", seed=seed, backend=backend, **LIKELIHOODS[likelihood],
                 **kwargs)
    if "decoder.logvar" in model.params:
        model.params["decoder.logvar"][...] = np.random.default_rng(seed).uniform(-1, 0.5, D)
    return model


def batch(model, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.random((B, D)) if model.likelihood.name == "bernoulli" else rng.standard_normal(
        (B, D))
    return x, rng.integers(0, C, B), rng.standard_normal((B, L))


def mlp(model, prefix, a):
    n = sum(1 for k in model.params if k.startswith(prefix) and k.endswith(".W"))
    for i in range(n):
        a = a @ model.params[f"{prefix}{i}.W"] + model.params[f"{prefix}{i}.b"]
        if i < n - 1:
            a = np.tanh(a)
    return a


def loss_by_hand(model, x, y, eps, beta):
    e = np.eye(C)[y]
    h = mlp(model, "encoder.", np.hstack([x, e]))
    mu, logvar = h[:, :L], h[:, L:]
    z = mu + np.exp(0.5 * logvar) * eps
    out = mlp(model, "decoder.", np.hstack([z, e]))
    if model.likelihood.name == "bernoulli":
        nll = np.sum(np.logaddexp(0, out) - x * out, axis=1)
    else:
        lv = model.params["decoder.logvar"]
        nll = np.sum(0.5 * (np.log(2 * np.pi) + lv + (x - out) ** 2 / np.exp(lv)), axis=1)
    kl = np.sum(0.5 * (mu ** 2 + np.exp(logvar) - 1 - logvar), axis=1)
    return np.mean(nll) + beta * np.mean(kl)


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_loss_matches_a_forward_pass_by_hand(likelihood):
    model = make(likelihood=likelihood)
    x, y, eps = batch(model)
    r = model.loss_and_grads(x, y, eps=eps, beta=0.7)
    assert r.loss == pytest.approx(loss_by_hand(model, x, y, eps, 0.7), rel=1e-12)


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_gradient_of_every_parameter(backend_name, likelihood):
    model = make(backend_name, likelihood)
    x, y, eps = batch(model)
    grads = {k: g.copy() for k, g in model.loss_and_grads(x, y, eps=eps, beta=0.7).grads.items()}

    def f():
        return model.loss_and_grads(x, y, eps=eps, beta=0.7).loss

    for name, p in model.params.items():
        err = rel_error(grads[name], numerical_gradient(f, p, 1e-5))
        assert err < TOL, f"{name}: {err:.2e}"


def test_iwae_gradient_of_a_cvae(backend_name):
    model = make(backend_name)
    x, y, _ = batch(model)
    eps = np.random.default_rng(3).standard_normal((B, 3, L))
    grads = {k: g.copy() for k, g in iwae.loss_and_grads(model, x, 3, eps=eps,
                                                           labels=y).grads.items()}

    def f():
        return iwae.loss_and_grads(model, x, 3, eps=eps, labels=y).loss

    for name, p in model.params.items():
        assert rel_error(grads[name], numerical_gradient(f, p, 1e-5)) < TOL, name


def test_the_label_changes_the_output_and_gets_no_gradient():
    model = make()
    x, y, eps = batch(model)
    a = model.decode(eps, y)
    b = model.decode(eps, (y + 1) % C)
    assert not np.allclose(a, b)
    # Labels are data: nothing in model.grads belongs to them, and they are not mutated.
    y_before = y.copy()
    model.loss_and_grads(x, y, eps=eps)
    np.testing.assert_array_equal(y, y_before)
    assert sorted(model.params) == sorted(model.grads)
    assert model.params["encoder.0.W"].shape == (D + C, HIDDEN[0])
    assert model.params["decoder.0.W"].shape == (L + C, HIDDEN[0])


def test_sample_transfer_and_interpolate():
    model = make()
    assert model.sample(7, labels=2).shape == (7, D)
    rng = np.random.default_rng(0)
    z = rng.standard_normal((7, L))
    np.testing.assert_allclose(model.sample(7, labels=2, rng=np.random.default_rng(0)),
                               model.decode(z, np.full(7, 2)))
    x, y, _ = batch(model)
    t = model.transfer(x, y)
    assert t.shape == (B, C, D)
    mu = model.embed(x, y)
    np.testing.assert_allclose(t[2, 3], model.decode(mu[2:3], [3])[0])
    strip = model.interpolate(x[0], x[1], steps=4, labels=(y[0], y[1]))
    np.testing.assert_allclose(strip[0], model.decode(mu[:1], y[:1])[0], rtol=1e-12)
    np.testing.assert_allclose(strip[-1], model.decode(mu[1:2], y[1:2])[0], rtol=1e-12)


def test_save_and_load(tmp_path):
    model = make(likelihood="gaussian-learned")
    x, y, eps = batch(model)
    path = model.save(tmp_path / "cvae.npz")
    back = numpyvae.load(path, backend="numpy")
    assert isinstance(back, CVAE) and back.num_classes == C
    np.testing.assert_array_equal(back.decode(eps, y), model.decode(eps, y))
    assert back.loss_and_grads(x, y, eps=eps).loss == model.loss_and_grads(x, y, eps=eps).loss


def test_network_form_and_shape_errors():
    from numpyvae.layers import Linear, ReLU, Sequential

    rng = np.random.default_rng(0)
    enc = Sequential(Linear(D + C, 8, rng=rng), ReLU(), Linear(8, 2 * L, rng=rng))
    dec = Sequential(Linear(L + C, 8, rng=rng), ReLU(), Linear(8, D, rng=rng))
    model = CVAE(enc, dec, num_classes=C, latent_dim=L)
    assert model.input_shape == (D,)
    x = rng.random((3, D)).astype(model.dtype)
    assert np.isfinite(model.loss_and_grads(x, [0, 1, 2]).loss)
    bad = Sequential(Linear(D, 8, rng=rng), ReLU(), Linear(8, 2 * L, rng=rng))
    with pytest.raises(ValueError, match=r"conditioned input of shape \(10,\)"):
        CVAE(bad, dec, num_classes=C, latent_dim=L)


def test_label_errors_are_named():
    model = make()
    x, y, eps = batch(model)
    with pytest.raises(ValueError, match="conditional; pass labels="):
        model.loss_and_grads(x)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
        model.loss_and_grads(x, np.full(B, 4))
    with pytest.raises(ValueError, match="expected 5 labels"):
        model.loss_and_grads(x, y[:3])
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        CVAE(D, num_classes=0)
    assert one_hot([1, 0], 3).tolist() == [[0, 1, 0], [1, 0, 0]]
    assert not isinstance(VAE(D), CVAE)


def test_image_inputs_get_the_label_as_channels(backend_name):
    """(B, c, H, W) data: the one-hot label is broadcast to C constant channels.

    Flatten + Linear stands in for a convolution; any network that takes
    (c + C, H, W) works the same way. Checked end to end against central differences.
    """
    from numpyvae.layers import Flatten, Linear, Reshape, Sequential, Tanh

    rng = np.random.default_rng(0)
    kw = dict(rng=rng, dtype="float64")
    enc = Sequential(Flatten(), Linear((1 + C) * 9, 7, **kw), Tanh(), Linear(7, 2 * L, **kw))
    dec = Sequential(Linear(L + C, 7, **kw), Tanh(), Linear(7, 9, **kw), Reshape(1, 3, 3))
    model = CVAE(enc, dec, num_classes=C, latent_dim=L, backend=backend_name)
    assert model.input_shape == (1, 3, 3)
    x = rng.random((B, 1, 3, 3))
    y = rng.integers(0, C, B)
    xin = model.encoder_input(x, y)
    assert xin.shape == (B, 1 + C, 3, 3)
    np.testing.assert_array_equal(xin[:, 0], x[:, 0])
    for b in range(B):
        np.testing.assert_array_equal(xin[b, 1:], np.broadcast_to(np.eye(C)[y[b]][:, None, None],
                                                                  (C, 3, 3)))
    eps = rng.standard_normal((B, L))
    grads = {k: g.copy() for k, g in model.loss_and_grads(x, y, eps=eps).grads.items()}

    def f():
        return model.loss_and_grads(x, y, eps=eps).loss

    for name, p in model.params.items():
        assert rel_error(grads[name], numerical_gradient(f, p, 1e-5)) < TOL, name
    assert model.transfer(x[:2], y[:2]).shape == (2, C, 1, 3, 3)


# --------------------------------------------------------------------------
# Training and the command line
# --------------------------------------------------------------------------


def test_fit_needs_and_uses_labels():
    from numpyvae.app.train import Trainer, fit

    rng = np.random.default_rng(0)
    model = CVAE(D, num_classes=C, hidden_dims=HIDDEN, latent_dim=L, backend="numpy")
    x, y = rng.random((60, D)), rng.integers(0, C, 60)
    with pytest.raises(ValueError, match=r"training needs the class labels \(y_train\)"):
        Trainer(model, x)
    with pytest.raises(ValueError, match="y_train: expected 60 integer class labels"):
        Trainer(model, x, y_train=y[:10])
    history = fit(model, x, x[:20], epochs=2, batch_size=20, progress=False, y_train=y,
                  y_test=y[:20], iw_train=3)
    assert history[-1]["test_loss"] < history[0]["train_loss"]
    assert len(history[-1]["kl_per_dim"]) == L


def test_command_line_conditional_run(tmp_path, monkeypatch, capsys):
    import json

    from numpyvae.app.cli import main

    monkeypatch.setenv("NUMPYVAE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    tiny = ["--hidden", "24", "--latent-dim", "3", "--batch-size", "256", "--backend", "numpy",
            "--quiet"]
    assert main(["train", "--conditional", "--epochs", "1", "--out", str(out), *tiny]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["kind"] == "cvae" and config["model"]["num_classes"] == 5
    figures = {p.name for p in (out / "figures").iterdir()}
    assert {"samples.png", "transfer.png", "traversal.png", "reconstructions.png"} <= figures
    assert isinstance(numpyvae.load(out / "model.npz"), CVAE)
    assert main(["train", "--out", str(out), "--resume", "--epochs", "2", "--quiet"]) == 0
    assert main(["evaluate", str(out), "--json", "--iw-samples", "5", "--limit", "50"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["model"] == "cvae" and r["log_likelihood"] > r["elbo"] - 1.0
    for command in (["sample", "-n", "10"], ["reconstruct", "-n", "4"],
                    ["interpolate", "--pairs", "2"], ["figures"]):
        assert main([command[0], str(out), *command[1:]]) == 0, command
    assert main(["train", "--conditional", "--model", "autoencoder", "--epochs", "1",
                 "--out", str(tmp_path / "ae"), *tiny]) == 2
    assert "--conditional needs --model vae" in capsys.readouterr().err
