"""The conditional convolutional VAE: end-to-end gradients on both backends, the label's
channels, PyTorch as an oracle, save/load, and ``numpyvae train --arch conv --conditional``
with every command after it."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from assertions import backends_agree, one_line_error
from torch_conv_twin import assert_gradients_equal, twin

import numpyvae
from numpyvae import CVAE
from numpyvae.app.cli import main
from numpyvae.convnet import conv_cvae, conv_networks
from numpyvae.gradcheck import check_layer, check_model, rel_error
from numpyvae.layers import LabelChannels, layer_from_spec

SHAPE, LATENT, C, CHANNELS, B = (8, 12), 3, 4, (2, 3), 5
FORMS = {"images": False, "rows": True}


def small(backend_name, flat=False, dtype="float64", seed=0, **options):
    return conv_cvae(SHAPE, LATENT, C, CHANNELS, seed=seed, dtype=dtype, backend=backend_name,
                     flat=flat, **options)


def batch(flat=False, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.random((B, 1, *SHAPE))
    return (x.reshape(B, -1) if flat else x), rng.integers(0, C, B), \
        rng.standard_normal((B, LATENT))


# --------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------


@pytest.mark.parametrize("flat", FORMS.values(), ids=FORMS.keys())
def test_whole_model_matches_central_differences(backend_name, flat):
    """Every parameter, noise held fixed, beta 0.7; h = 1e-4 (see conv_checks for why)."""
    model = small(backend_name, flat)
    x, y, eps = batch(flat)
    report = check_model(model, x, eps, beta=0.7, labels=y, h=1e-4, tol=1e-7)
    assert len(report) == 12  # W and b of 4 conv and 2 linear layers
    assert report.passed, str(report)


def test_the_label_widens_the_first_layers_and_gets_no_gradient():
    model = small("numpy")
    enc0, dec0 = model.encoder[0], model.decoder[0]
    assert enc0.params["W"].shape == (CHANNELS[0], 1 + C, 4, 4)       # image + C label maps
    assert dec0.params["W"].shape == (LATENT + C, CHANNELS[1] * 2 * 3)  # [z | e_y]
    x, y, eps = batch()
    y_before = y.copy()
    r = model.loss_and_grads(x, y, eps=eps)
    np.testing.assert_array_equal(y, y_before)
    # Labels are data: the gradients are the parameters' and nothing else's.
    assert sorted(r.grads) == sorted(model.params)
    # ... yet the loss and the decoder depend on them.
    assert model.loss_and_grads(x, (y + 1) % C, eps=eps).loss != r.loss
    assert not np.allclose(model.decode(eps, y), model.decode(eps, (y + 1) % C))


def test_rows_and_images_compute_the_same_loss_and_gradients(backend_name):
    """``flat=True``: the CVAE appends one-hot columns and LabelChannels makes them maps."""
    x, y, eps = batch()
    images = small(backend_name).loss_and_grads(x, y, eps=eps)
    image_grads = [g.copy() for g in images.grads.values()]
    rows = small(backend_name, flat=True).loss_and_grads(x.reshape(B, -1), y, eps=eps)
    assert rows.loss == pytest.approx(images.loss, rel=1e-13)
    for a, b in zip(rows.grads.values(), image_grads, strict=True):  # same order, same shapes
        assert rel_error(a, b) <= 1e-12


def test_backends_agree_on_the_loss_and_every_gradient():
    pytest.importorskip("numba")
    x, y, eps = batch(flat=True, seed=2)
    results = [small(b, flat=True).loss_and_grads(x, y, eps=eps) for b in ("numpy", "numba")]
    backends_agree(*results)


def test_loss_and_every_gradient_equal_torch(backend_name):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    torch.set_num_threads(1)
    model = small(backend_name)
    x, y, eps = batch(seed=4)
    result = model.loss_and_grads(x, y, eps=eps)

    enc, dec, theirs = twin(torch, model, SHAPE, LATENT, CHANNELS, extra_in=C)
    xt = torch.tensor(x)
    e = F.one_hot(torch.tensor(y), C).double()                      # (B, C)
    maps = e[:, :, None, None].expand(B, C, *SHAPE)                 # C constant maps
    out = enc(torch.cat([xt, maps], dim=1))
    mu, logvar = out[:, :LATENT], out[:, LATENT:]
    z = mu + torch.exp(0.5 * logvar) * torch.tensor(eps)
    recon = F.binary_cross_entropy_with_logits(dec(torch.cat([z, e], dim=1)), xt,
                                               reduction="sum")
    kl = 0.5 * torch.sum(mu**2 + logvar.exp() - 1 - logvar)
    loss = (recon + kl) / B
    loss.backward()

    assert abs(result.loss - loss.item()) <= 1e-10 * abs(loss.item())
    assert_gradients_equal(result, theirs, tol=1e-10)


@pytest.mark.parametrize("flat", FORMS.values(), ids=FORMS.keys())
def test_sample_transfer_and_interpolate_shapes(flat):
    model = small("numpy", flat)
    one = (SHAPE[0] * SHAPE[1],) if flat else (1, *SHAPE)
    assert model.sample(7, labels=2).shape == (7, *one)
    assert model.sample(3, labels=[0, 3, 1]).shape == (3, *one)
    z = np.random.default_rng(0).standard_normal((6, LATENT))
    np.testing.assert_array_equal(model.sample(6, rng=np.random.default_rng(0)),
                                  model.decode(z, np.arange(6) % C))  # classes take turns
    x, y, _ = batch(flat)
    assert model.transfer(x, y).shape == (B, C, *one)
    assert model.interpolate(x[0], x[1], steps=4, labels=y[:2]).shape == (4, *one)
    with pytest.raises(ValueError, match="expected 2 labels"):
        model.sample(2, labels=[0, 1, 2])


@pytest.mark.parametrize("flat", FORMS.values(), ids=FORMS.keys())
def test_save_and_load_give_the_same_model(tmp_path, backend_name, flat):
    model = small(backend_name, flat, dtype="float32", seed=3, likelihood="gaussian",
                  gaussian_var="learned")
    x, y, eps = batch(flat, seed=8)
    x, eps = x.astype("float32"), eps.astype("float32")
    path = model.save(tmp_path / "cconv.npz")
    loaded = numpyvae.load(path, backend=backend_name)
    assert isinstance(loaded, CVAE) and loaded.num_classes == C
    assert loaded.encoder.spec() == model.encoder.spec()
    assert loaded.decoder.spec() == model.decoder.spec()
    np.testing.assert_array_equal(loaded.decode(eps, y), model.decode(eps, y))
    np.testing.assert_array_equal(loaded.reconstruct(x, y), model.reconstruct(x, y))
    assert loaded.loss_and_grads(x, y, eps=eps).loss == model.loss_and_grads(x, y, eps=eps).loss


def test_a_fresh_process_loads_conditional_and_conv_models(tmp_path):
    """``numpyvae.load`` alone knows every model kind and layer type a file may name."""
    small("numpy", flat=True).save(tmp_path / "cconv.npz")
    numpyvae.CVAE(6, num_classes=3, hidden_dims=(4,), latent_dim=2).save(tmp_path / "c.npz")
    code = ("import sys, numpyvae\n"
            "for p in sys.argv[1:]:\n"
            "    m = numpyvae.load(p, backend='numpy')\n"
            "    print(type(m).__name__, type(m.encoder[0]).__name__)\n")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "cconv.npz"),
                           str(tmp_path / "c.npz")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["CVAE LabelChannels", "CVAE Linear"]


def test_networks_and_builder_errors():
    enc, dec = conv_networks((28, 28), 20, (32, 64), num_classes=10,
                             rng=np.random.default_rng(0))
    assert enc.output_shape((11, 28, 28)) == (40,)
    assert dec.output_shape((30,)) == (1, 28, 28)
    enc, dec = conv_networks((16, 24), 5, (4, 6), num_classes=3, flat=True,
                             rng=np.random.default_rng(0))
    assert enc.output_shape((16 * 24 + 3,)) == (10,)
    assert dec.output_shape((8,)) == (16 * 24,)
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        conv_cvae(SHAPE, LATENT, 0)
    with pytest.raises(ValueError, match=r"num_classes must be an integer >= 0"):
        conv_networks(SHAPE, LATENT, num_classes=-1)
    with pytest.raises(ValueError, match="multiples of 4"):
        conv_cvae((6, 8), LATENT, C)


# --------------------------------------------------------------------------
# LabelChannels: rows [x | e_y] -> images with the label as channels
# --------------------------------------------------------------------------


def test_label_channels_forward_backward_and_gradient(backend_name):
    layer = LabelChannels((2, 3, 2), C, backend=backend_name)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 12 + C))  # random label columns too: a layer for any input
    out = layer.forward(x)
    assert out.shape == (6, 2 + C, 3, 2)
    np.testing.assert_array_equal(out[:, :2], x[:, :12].reshape(6, 2, 3, 2))
    np.testing.assert_array_equal(out[:, 2:], np.broadcast_to(x[:, 12:, None, None],
                                                              (6, C, 3, 2)))
    dout = rng.standard_normal(out.shape)
    dx = layer.backward(dout)
    np.testing.assert_array_equal(dx[:, :12], dout[:, :2].reshape(6, 12))
    np.testing.assert_allclose(dx[:, 12:], dout[:, 2:].sum(axis=(2, 3)), rtol=1e-15)
    report = check_layer(layer, x, rng=rng)  # a random upstream gradient, in float64
    assert report.passed, str(report)
    assert layer_from_spec(json.loads(json.dumps(layer.spec()))).spec() == layer.spec()


def test_label_channels_errors_name_the_shape():
    layer = LabelChannels((1, 4, 4), 3)
    with pytest.raises(ValueError, match=r"16 pixels and 3 label columns, shape \(19,\)"):
        layer.output_shape((16,))
    with pytest.raises(ValueError, match=r"expected input of shape \(batch, 19\)"):
        layer.forward(np.zeros((2, 16)))
    with pytest.raises(RuntimeError, match="before forward"):
        LabelChannels((1, 4, 4), 3).backward(np.zeros((2, 4, 4, 4)))
    with pytest.raises(ValueError, match="three positive sizes"):
        LabelChannels((4, 4), 3)
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        LabelChannels((1, 4, 4), 0)


# --------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------


def labelled_file(path, dataset, n_train=600, n_test=200):
    """A small labelled subset of ``dataset`` as an .npz of images (own data, ``--data``)."""
    shape = dataset.image_shape
    np.savez(path, x_train=dataset.x_train[:n_train].reshape(-1, *shape),
             y_train=dataset.y_train[:n_train],
             x_test=dataset.x_test[:n_test].reshape(-1, *shape), y_test=dataset.y_test[:n_test],
             label_names=np.array(dataset.label_names))
    return path


def test_build_model_joins_the_conditional_and_conv_paths():
    from numpyvae.app.run import TRAIN_DEFAULTS, build_model

    options = {**TRAIN_DEFAULTS, "arch": "conv", "conditional": True, "channels": [2, 3],
               "latent_dim": 3}
    model = build_model(options, 96, backend="numpy", image_shape=SHAPE, num_classes=C)
    assert isinstance(model, CVAE) and model.num_classes == C
    assert isinstance(model.encoder[0], LabelChannels) and model.input_shape == (96,)
    gaussian = build_model({**options, "likelihood": "gaussian", "gaussian_var": 0.25}, 96,
                           backend="numpy", image_shape=SHAPE, num_classes=C)
    assert gaussian.likelihood.var == 0.25
    with pytest.raises(ValueError, match="--conditional needs --model vae, not autoencoder"):
        build_model({**options, "model": "autoencoder"}, 96, image_shape=SHAPE, num_classes=C)
    with pytest.raises(ValueError, match="--conditional needs a labelled dataset"):
        build_model(options, 96, image_shape=SHAPE, num_classes=0)


def test_train_arch_conv_conditional_then_every_command(tmp_path, capsys):
    from numpyvae.app.data import load_dataset

    data = labelled_file(tmp_path / "shapes.npz", load_dataset("shapes"))
    run = tmp_path / "run"
    common = ["--arch", "conv", "--conditional", "--data", str(data), "--latent-dim", "2",
              "--channels", "3", "4", "--batch-size", "100", "--backend", "numba", "--quiet"]
    assert main(["train", "--epochs", "1", "--out", str(run), *common]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["arch"] == "conv" and config["channels"] == [3, 4]
    assert config["model"]["kind"] == "cvae" and config["model"]["num_classes"] == 5
    figures = {p.name for p in (run / "figures").iterdir()}
    assert {"samples.png", "transfer.png", "manifold.png", "traversal.png",
            "reconstructions.png", "interpolation.png"} <= figures
    model = numpyvae.load(run / "model.npz", backend="numpy")
    assert isinstance(model, CVAE) and isinstance(model.encoder[0], LabelChannels)
    assert model.encoder[1].params["W"].shape == (3, 1 + 5, 4, 4)
    assert main(["train", "--epochs", "2", "--out", str(run), "--resume", *common]) == 0
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json", "--iw-samples", "3", "--limit", "50"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["model"] == "cvae" and r["epochs"] == 2 and r["n_test"] == 50
    assert r["log_likelihood"] > r["elbo"] - 1.0
    for argv in (["sample", "-n", "10"], ["reconstruct", "-n", "4"],
                 ["interpolate", "--pairs", "2"], ["figures"]):
        assert main([argv[0], str(run), *argv[1:]]) == 0, argv


def test_conditional_needs_labels_for_the_conv_model_too(tmp_path, capsys):
    x = np.random.default_rng(0).random((40, 8, 8)).astype("float32")
    np.savez(tmp_path / "unlabelled.npz", x=x)
    assert main(["train", "--arch", "conv", "--conditional", "--data",
                 str(tmp_path / "unlabelled.npz"), "--test-fraction", "0.25", "--epochs", "1",
                 "--out", str(tmp_path / "r"), "--quiet"]) == 2
    one_line_error(capsys, "--conditional needs a labelled dataset")
    assert not (tmp_path / "r").exists()


def test_real_fashion_mnist_arch_conv_conditional(fashion_mnist_dir, tmp_path, capsys):
    """A Fashion-MNIST subset (3,000 training, 200 test images, all ten classes)."""
    from numpyvae.app.data import load_dataset

    ds = load_dataset("fashion-mnist", fashion_mnist_dir, download=False)
    data = labelled_file(tmp_path / "fm.npz", ds, n_train=3000)
    run = tmp_path / "fm"
    assert main(["train", "--arch", "conv", "--conditional", "--data", str(data), "--epochs",
                 "1", "--latent-dim", "4", "--channels", "4", "8", "--batch-size", "50",
                 "--backend", "numba", "--out", str(run), "--quiet"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["num_classes"] == 10 and config["image_shape"] == [28, 28]
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    # 60 steps learn something: p = 1/2 for every pixel would cost 784 log 2 = 543 nats.
    assert r["n_test"] == 200 and r["loss"] < 520
    assert main(["figures", str(run)]) == 0
    assert main(["sample", str(run), "-n", "20"]) == 0
    assert {"samples.png", "transfer.png"} <= {p.name for p in (run / "figures").iterdir()}
