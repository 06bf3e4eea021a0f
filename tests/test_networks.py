"""The layer contract (shapes, specs), Flatten and Reshape, and VAEs of networks a user composed."""

from __future__ import annotations

import json

import numpy as np
import pytest

import numpyvae
from numpyvae import VAE, Autoencoder
from numpyvae.distributions import Bernoulli, Gaussian, GaussianLearnedVariance
from numpyvae.gradcheck import check_layer, check_model
from numpyvae.layers import (
    LAYER_TYPES,
    Flatten,
    LeakyReLU,
    Linear,
    ReLU,
    Reshape,
    Sequential,
    Sigmoid,
    Softplus,
    Tanh,
    layer_from_spec,
    mlp,
)

TOL = 1e-7


# --------------------------------------------------------------------------
# Flatten, Reshape and activations on image-shaped data
# --------------------------------------------------------------------------


@pytest.mark.parametrize("layer", [Flatten(), Reshape(3, 4), Reshape(12), Tanh(), Softplus(),
                                   LeakyReLU(0.1)], ids=repr)
def test_shape_layers_and_activations_on_images_match_central_differences(backend_name, layer):
    layer.set_backend(backend_name)
    x = np.random.default_rng(0).standard_normal((5, 2, 3, 2))  # (B, C, H, W)
    report = check_layer(layer, x, tol=TOL)
    assert [row.name for row in report] == ["input"]
    assert report.passed, str(report)


def test_flatten_and_reshape_move_values_in_c_order(backend_name):
    x = np.arange(2 * 3 * 4, dtype=np.float64).reshape(2, 3, 4)
    flat = Flatten(backend=backend_name).forward(x)
    np.testing.assert_array_equal(flat, x.reshape(2, 12))
    back = Reshape(3, 4, backend=backend_name)
    np.testing.assert_array_equal(back.forward(flat), x)
    dout = np.random.default_rng(1).standard_normal((2, 3, 4))
    np.testing.assert_array_equal(back.backward(dout), dout.reshape(2, 12))


def test_a_network_through_images_matches_central_differences(backend_name):
    """Reshape to images, an activation on images, Flatten, Linear: every gradient."""
    rng = np.random.default_rng(2)
    net = Sequential(Linear(4, 12, rng=rng, dtype="float64"), Reshape(3, 2, 2), Tanh(),
                     Flatten(), Linear(12, 3, "sigmoid", rng=rng, dtype="float64"))
    net.set_backend(backend_name)
    report = check_layer(net, rng.standard_normal((5, 4)), rng=rng, tol=TOL)
    assert [row.name for row in report] == ["input", "0.W", "0.b", "4.W", "4.b"]
    assert report.passed, str(report)


def test_activations_on_images_agree_with_the_flat_layout(backend_name):
    x = np.random.default_rng(3).standard_normal((4, 2, 3, 3))
    dout = np.random.default_rng(4).standard_normal(x.shape)
    image, flat = Softplus(backend=backend_name), Softplus(backend=backend_name)
    y = image.forward(x)
    assert y.shape == x.shape
    np.testing.assert_array_equal(y, flat.forward(x.reshape(4, 18)).reshape(x.shape))
    np.testing.assert_array_equal(image.backward(dout),
                                  flat.backward(dout.reshape(4, 18)).reshape(x.shape))


def test_shape_layers_check_their_inputs():
    with pytest.raises(ValueError, match=r"Reshape\(3, 4\): expected an input of 12 values"):
        Reshape(3, 4).forward(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="Reshape: expected positive integer sizes"):
        Reshape(3, 0)
    with pytest.raises(ValueError, match=r"Flatten: expected input of shape \(batch, \.\.\.\)"):
        Flatten().forward(np.zeros(3))
    layer = Flatten()
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.zeros((2, 6)))
    layer.forward(np.zeros((2, 2, 3)))
    with pytest.raises(ValueError, match=r"Flatten: expected upstream gradient of shape "
                                         r"\(batch, 6\), got \(2, 5\)"):
        layer.backward(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="Flatten: upstream gradient has batch 1, forward had 2"):
        layer.backward(np.zeros((1, 6)))


# --------------------------------------------------------------------------
# output_shape and specs
# --------------------------------------------------------------------------


def test_output_shape_follows_a_network_and_names_the_layer_that_does_not_fit():
    rng = np.random.default_rng(0)
    net = Sequential(Flatten(), Linear(784, 32, "relu", rng=rng), ReLU(),
                     Linear(32, 784, rng=rng), Reshape(1, 28, 28))
    assert net.output_shape((1, 28, 28)) == (1, 28, 28)
    assert net.output_shape((784,)) == (1, 28, 28)
    assert Tanh().output_shape((3, 5, 5)) == (3, 5, 5)
    with pytest.raises(ValueError, match=r"layer 1 of the Sequential: Linear\(784, 32.*expected "
                                         r"input shape \(784,\), got \(700,\)"):
        net.output_shape((7, 10, 10))
    with pytest.raises(ValueError, match=r"Linear\(784, 32.*got \(1, 28, 28\); put a Flatten"):
        Linear(784, 32, rng=rng).output_shape((1, 28, 28))


def test_every_layer_is_registered_and_rebuilds_from_its_spec(backend_name):
    rng = np.random.default_rng(5)
    net = Sequential(Reshape(2, 3), Sigmoid(), Flatten(), Linear(6, 4, "leaky_relu", alpha=0.2,
                                                                  rng=rng, dtype="float64"),
                     LeakyReLU(0.3), Sequential(Linear(4, 2, rng=rng, dtype="float64"), Tanh()))
    net.set_backend(backend_name)
    spec = net.spec()
    assert json.loads(json.dumps(spec)) == spec  # JSON as it is
    for name in ("Linear", "Flatten", "Reshape", "Sequential", "ReLU", "Tanh", "LeakyReLU"):
        assert name in LAYER_TYPES
    rebuilt = layer_from_spec(spec, rng=np.random.default_rng(0), dtype="float64",
                              backend=backend_name)
    assert rebuilt.spec() == spec and rebuilt.backend.NAME == backend_name
    assert list(rebuilt.params) == list(net.params)
    for name, p in net.params.items():
        assert rebuilt.params[name].shape == p.shape and rebuilt.params[name].dtype == p.dtype
        rebuilt.params[name][...] = p
    x = rng.standard_normal((3, 6))
    np.testing.assert_array_equal(rebuilt.forward(x), net.forward(x))


def test_a_layer_class_defined_by_a_user_registers_itself():
    class Doubler(numpyvae.Layer):
        def output_shape(self, input_shape):
            return input_shape

        def spec(self):
            return {"type": "Doubler"}

        def forward(self, x):
            return 2 * x

        def backward(self, dout):
            return 2 * dout

    assert LAYER_TYPES["Doubler"] is Doubler
    assert isinstance(layer_from_spec({"type": "Doubler"}), Doubler)
    del LAYER_TYPES["Doubler"]


@pytest.mark.parametrize(("spec", "message"), [
    ({"type": "Conv9d"}, "unknown layer type 'Conv9d'"),
    ({"layers": []}, "must be a dict with a 'type'"),
    ({"type": "Linear", "in_features": 3}, "invalid Linear spec"),
    ({"type": "Linear", "in_features": 3, "out_features": 2, "colour": 1}, "invalid Linear"),
    ({"type": "Reshape"}, "invalid Reshape spec"),
])
def test_bad_specs_raise_value_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        layer_from_spec(spec)


# --------------------------------------------------------------------------
# Models of composed networks
# --------------------------------------------------------------------------


def tanh_encoder(rng, dtype, widths=(7, 6, 5), n_in=8, n_out=6):
    """Three hidden tanh layers, written layer by layer (separate activation layers)."""
    layers, n = [], n_in
    for w in widths:
        layers += [Linear(n, w, rng=rng, dtype=dtype), Tanh()]
        n = w
    return Sequential(*layers, Linear(n, n_out, rng=rng, dtype=dtype))


def custom_vae(backend="numpy", dtype="float64", likelihood=None, seed=0):
    """A 3-hidden-layer tanh encoder and a different decoder (softplus, fused, one hidden layer)."""
    rng = np.random.default_rng(seed)
    encoder = tanh_encoder(rng, dtype)
    decoder = Sequential(Linear(3, 9, "softplus", rng=rng, dtype=dtype), Linear(9, 8, rng=rng,
                                                                               dtype=dtype))
    return VAE(encoder, decoder, latent_dim=3, likelihood=likelihood or Bernoulli(),
               seed=seed, backend=backend)


@pytest.mark.parametrize("likelihood", [Bernoulli, lambda: Gaussian(0.3),
                                        GaussianLearnedVariance],
                         ids=["bernoulli", "gaussian", "gaussian-learned"])
def test_a_custom_network_vae_gradient_checks(backend_name, likelihood):
    model = custom_vae(backend_name, likelihood=likelihood())
    assert model.input_shape == (8,) and model.dtype == np.float64
    if "decoder.logvar" in model.params:
        model.params["decoder.logvar"][...] = np.linspace(-1, 0.5, 8)
    rng = np.random.default_rng(1)
    x = rng.random((4, 8))
    report = check_model(model, x, rng.standard_normal((4, 3)), beta=0.7, tol=TOL)
    assert [row.name for row in report] == list(model.params)
    assert report.passed, str(report)


def test_a_custom_network_vae_trains_saves_and_loads(backend_name, tmp_path):
    model = custom_vae(backend_name)
    rng = np.random.default_rng(2)
    x = (rng.random((64, 8)) < 0.3).astype(np.float64)
    optimizer = numpyvae.Adam(model.params, lr=1e-2, backend=model.backend)
    first = model.loss_and_grads(x, eps=np.zeros((64, 3))).loss
    for _ in range(30):
        model.loss_and_grads(x, rng=rng)
        optimizer.step(model.grads)
    assert model.loss_and_grads(x, eps=np.zeros((64, 3))).loss < first - 0.5  # it learned

    loaded = numpyvae.load(model.save(tmp_path / "custom.npz"), backend=backend_name)
    assert type(loaded) is VAE and loaded.architecture() == model.architecture()
    assert [type(layer).__name__ for layer in loaded.encoder] == \
        ["Linear", "Tanh", "Linear", "Tanh", "Linear", "Tanh", "Linear"]
    z = rng.standard_normal((5, 3))
    np.testing.assert_array_equal(loaded.decode(z), model.decode(z))
    np.testing.assert_array_equal(loaded.embed(x), model.embed(x))
    eps = rng.standard_normal((64, 3))
    assert loaded.loss_and_grads(x, eps=eps).loss == model.loss_and_grads(x, eps=eps).loss
    np.testing.assert_array_equal(loaded.flat_grads, model.flat_grads)
    assert check_model(loaded, x[:4], eps[:4], tol=TOL).passed


def test_image_shaped_data_through_flatten_and_reshape(backend_name):
    rng = np.random.default_rng(3)
    f64 = dict(rng=rng, dtype="float64")
    encoder = Sequential(Flatten(), Linear(12, 5, "tanh", **f64), Linear(5, 4, **f64))
    decoder = Sequential(Linear(2, 12, **f64), Reshape(1, 3, 4))
    model = VAE(encoder, decoder, latent_dim=2, likelihood=GaussianLearnedVariance(),
                backend=backend_name)
    assert model.input_shape == (1, 3, 4)
    assert model.params["decoder.logvar"].shape == (1, 3, 4)
    model.params["decoder.logvar"][...] = rng.uniform(-1, 0.5, (1, 3, 4))
    x = rng.random((5, 1, 3, 4))
    report = check_model(model, x, tol=TOL)
    assert report.passed, str(report)
    assert model.decode(rng.standard_normal((2, 2))).shape == (2, 1, 3, 4)
    assert model.sample(3).shape == (3, 1, 3, 4)
    assert model.interpolate(x[0], x[1:2], steps=4).shape == (4, 1, 3, 4)
    recon, kl = model.elbo_terms(x)
    assert recon.shape == kl.shape == (5,)
    # The likelihood sums over every value of an example, whatever its shape.
    z = rng.standard_normal((5, 2))
    flat = Gaussian(1.0)
    flat.setup((12,), np.float64)
    model.params["decoder.logvar"][...] = 0.0
    np.testing.assert_allclose(model.reconstruction_nll(z, x),
                               flat.nll(model.decoder.forward(z).reshape(5, 12),
                                        x.reshape(5, 12)), rtol=1e-14)
    with pytest.raises(ValueError, match=r"expected x of shape \(batch, 1, 3, 4\), got \(5, 12\)"):
        model.encode(x.reshape(5, 12))


def test_a_custom_autoencoder_gradient_checks(backend_name):
    rng = np.random.default_rng(4)
    encoder = tanh_encoder(rng, "float64", n_out=3)
    decoder = mlp((3, 5, 8), "relu", rng=rng, dtype="float64")
    model = Autoencoder(encoder, decoder, latent_dim=3, likelihood="gaussian", backend=backend_name)
    report = check_model(model, rng.standard_normal((4, 8)), tol=TOL)
    assert report.passed, str(report)


def test_the_convenience_form_is_the_network_form_of_two_mlps():
    """VAE(6, (5, 4), 3) and VAE(mlp, mlp) with the same weights compute the same thing."""
    a = VAE(6, hidden_dims=(5, 4), latent_dim=3, dtype="float64", seed=3, backend="numpy",
            likelihood="gaussian", gaussian_var="learned")
    rng = np.random.default_rng(3)
    encoder = mlp((6, 5, 4, 6), "relu", rng=rng, dtype="float64")
    decoder = mlp((3, 4, 5, 6), "relu", rng=rng, dtype="float64")
    b = VAE(encoder, decoder, latent_dim=3, likelihood=GaussianLearnedVariance(), seed=3,
            backend="numpy")
    assert list(a.params) == list(b.params)
    np.testing.assert_array_equal(a.flat_params, b.flat_params)  # same draws, same order
    assert a.architecture() == b.architecture()
    x, eps = np.random.default_rng(0).random((4, 6)), np.random.default_rng(1).random((4, 3))
    assert a.loss_and_grads(x, eps=eps).loss == b.loss_and_grads(x, eps=eps).loss
    np.testing.assert_array_equal(a.flat_grads, b.flat_grads)


def _nets(enc=(6, 4), dec=(2, 6), dec_dtype="float64"):
    rng = np.random.default_rng(0)
    return (Sequential(Linear(*enc, rng=rng, dtype="float64")),
            Sequential(Linear(*dec, rng=rng, dtype=dec_dtype)))


@pytest.mark.parametrize(("nets", "kwargs", "message"), [
    (_nets(enc=(6, 3)), {}, r"VAE: the encoder maps inputs of shape \(6,\) to \(3,\), "
                            r"expected \(4,\): \[mu \| logvar\] for latent_dim 2"),
    (_nets(), {"input_shape": (7,)}, r"the encoder does not take inputs of shape \(7,\)"),
    (_nets(dec=(3, 6)), {}, r"the decoder does not take inputs of shape \(2,\)"),
    (_nets(dec=(2, 5)), {"input_shape": 6}, r"the decoder maps codes of shape \(2,\) to "
                                            r"\(5,\), expected the input shape \(6,\)"),
    ((_nets()[0], "decoder"), {}, "the decoder must be a Layer"),
    (_nets(), {"latent_dim": 0}, "latent_dim must be a positive integer"),
    (_nets(), {"likelihood": "poisson"}, "unknown likelihood 'poisson'"),
    (_nets(), {"free_bits": -1}, "free_bits must be a number >= 0"),
    (_nets(dec_dtype="float32"), {}, r"the networks mix dtypes \['float32', 'float64'\]"),
])
def test_networks_that_do_not_fit_are_refused_at_construction(nets, kwargs, message):
    with pytest.raises(ValueError, match=message):
        VAE(*nets, **{"latent_dim": 2, "backend": "numpy", **kwargs})


def test_training_and_evaluation_take_image_shaped_data(tmp_path):
    """fit() and the importance-weighted bound on (N, 1, 3, 4) data, through a checkpoint."""
    from numpyvae import evaluate
    from numpyvae.app.train import fit

    rng = np.random.default_rng(6)
    encoder = Sequential(Flatten(), Linear(12, 8, "tanh", rng=rng), Linear(8, 4, rng=rng))
    decoder = Sequential(Linear(2, 12, rng=rng), Reshape(1, 3, 4))
    model = VAE(encoder, decoder, latent_dim=2, backend="numpy")
    x = (rng.random((96, 1, 3, 4)) < 0.4).astype(np.float32)
    history = fit(model, x[:64], x[64:], epochs=2, batch_size=16, progress=False,
                  out_dir=tmp_path / "run")
    assert len(history) == 2 and history[-1]["test_recon"] < history[0]["test_recon"] + 1.0
    loaded = numpyvae.load(tmp_path / "run" / "model.npz", backend="numpy")
    np.testing.assert_array_equal(loaded.flat_params, model.flat_params)
    ll = evaluate.log_likelihood_per_example(model, x[:5], k=8, rng=np.random.default_rng(0))
    assert ll.shape == (5,) and np.all(np.isfinite(ll))
    # Rows with as many values as one example are reshaped to it; other sizes are refused.
    flat = fit(model, x[:8].reshape(8, 12), epochs=1, progress=False)
    assert len(flat) == 1
    with pytest.raises(ValueError, match=r"expected shape \(N >= 1, 1, 3, 4\), got \(8, 11\)"):
        fit(model, x[:8].reshape(8, 12)[:, :11], epochs=1, progress=False)
