"""The convolutional VAE and autoencoder: end-to-end gradients on both backends, PyTorch as an
oracle, save/load, and ``numpyvae train --arch conv`` with every command after it."""

from __future__ import annotations

import numpy as np
import pytest
from assertions import backends_agree
from torch_conv_twin import assert_gradients_equal, twin

import numpyvae
from numpyvae.app.cli import main
from numpyvae.convnet import check_image_shape, conv_networks, conv_vae
from numpyvae.gradcheck import check_model, conv_checks

SHAPE, LATENT, CHANNELS = (8, 12), 3, (2, 3)


def small(backend_name, autoencoder=False, dtype="float64", flat=False, seed=0):
    return conv_vae(SHAPE, LATENT, CHANNELS, seed=seed, dtype=dtype, backend=backend_name,
                    autoencoder=autoencoder, flat=flat)


@pytest.mark.parametrize("autoencoder", [False, True], ids=["VAE", "Autoencoder"])
def test_whole_model_matches_central_differences(backend_name, autoencoder):
    """Every parameter, noise held fixed; h = 1e-4 (see conv_checks for why)."""
    model = small(backend_name, autoencoder)
    x = np.random.default_rng(1).random((3, 1, *SHAPE))
    report = check_model(model, x, h=1e-4, tol=1e-7)
    assert len(report) == 12  # W and b of 4 conv and 2 linear layers
    assert report.passed, str(report)


@pytest.mark.parametrize("autoencoder", [False, True], ids=["VAE", "Autoencoder"])
def test_backends_agree_on_the_loss_and_every_gradient(autoencoder):
    pytest.importorskip("numba")
    x = np.random.default_rng(2).random((4, 1, *SHAPE))
    eps = np.random.default_rng(3).standard_normal((4, LATENT))
    results = [small(b, autoencoder).loss_and_grads(x, eps=None if autoencoder else eps)
               for b in ("numpy", "numba")]
    backends_agree(*results)


def test_loss_and_every_gradient_equal_torch(backend_name):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    torch.set_num_threads(1)
    model = small(backend_name)
    x = np.random.default_rng(4).random((3, 1, *SHAPE))
    eps = np.random.default_rng(5).standard_normal((3, LATENT))
    result = model.loss_and_grads(x, eps=eps)

    enc, dec, theirs = twin(torch, model, SHAPE, LATENT, CHANNELS, extra_in=0)
    xt = torch.tensor(x)
    out = enc(xt)
    mu, logvar = out[:, :LATENT], out[:, LATENT:]
    z = mu + torch.exp(0.5 * logvar) * torch.tensor(eps)
    recon = F.binary_cross_entropy_with_logits(dec(z), xt, reduction="sum")
    kl = 0.5 * torch.sum(mu**2 + logvar.exp() - 1 - logvar)
    loss = (recon + kl) / x.shape[0]
    loss.backward()

    assert abs(result.loss - loss.item()) <= 1e-10 * abs(loss.item())
    assert_gradients_equal(result, theirs, tol=1e-10)


def test_flat_model_takes_rows_of_pixels_and_computes_the_same(backend_name):
    x = np.random.default_rng(6).random((2, 1, *SHAPE))
    eps = np.random.default_rng(7).standard_normal((2, LATENT))
    images = small(backend_name).loss_and_grads(x, eps=eps)
    rows = small(backend_name, flat=True).loss_and_grads(x.reshape(2, -1), eps=eps)
    assert rows.loss == pytest.approx(images.loss, rel=1e-13)
    assert small(backend_name, flat=True).input_shape == (SHAPE[0] * SHAPE[1],)


def test_save_and_load_give_the_same_model(tmp_path, backend_name):
    model = small(backend_name, dtype="float32", flat=True, seed=3)
    x = np.random.default_rng(8).random((2, SHAPE[0] * SHAPE[1])).astype("float32")
    path = model.save(tmp_path / "conv.npz")
    loaded = numpyvae.load(path, backend=backend_name)
    assert loaded.encoder.spec() == model.encoder.spec()
    assert loaded.decoder.spec() == model.decoder.spec()
    np.testing.assert_array_equal(loaded.reconstruct(x), model.reconstruct(x))


def test_networks_have_the_documented_shapes():
    enc, dec = conv_networks((28, 28), 20, (32, 64), rng=np.random.default_rng(0))
    assert enc.output_shape((1, 28, 28)) == (40,)
    assert dec.output_shape((20,)) == (1, 28, 28)
    assert enc[3].params["W"].shape == (3136, 40)
    enc, dec = conv_networks((16, 24), 5, (4, 6), flat=True, rng=np.random.default_rng(0))
    assert enc.output_shape((16 * 24,)) == (10,)
    assert dec.output_shape((5,)) == (16 * 24,)


@pytest.mark.parametrize("shape", [(28, 30), (2, 28, 28), (6, 8), (0, 8)])
def test_image_shapes_must_be_single_channel_and_divisible_by_4(shape):
    with pytest.raises(ValueError, match="multiples of 4"):
        check_image_shape(shape)


def test_conv_checks_pass_and_cover_layers_and_models(backend_name):
    reports = conv_checks(backend=backend_name)
    titles = [r.title for r in reports]
    assert any(t.startswith("Conv2d") for t in titles)
    assert any(t.startswith("ConvTranspose2d") for t in titles)
    assert any("conv VAE" in t for t in titles) and any("conv Autoencoder" in t for t in titles)
    assert any("conv CVAE" in t for t in titles)
    assert all(r.passed for r in reports), "\n".join(str(r) for r in reports)


# --------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------


def test_train_arch_conv_then_every_command(tmp_path, capsys):
    run = tmp_path / "run"
    common = ["--dataset", "shapes", "--latent-dim", "4", "--channels", "4", "8",
              "--batch-size", "256", "--backend", "numba", "--quiet"]
    assert main(["train", "--arch", "conv", "--epochs", "1", "--out", str(run), *common]) == 0
    config = (run / "config.json").read_text()
    assert '"arch": "conv"' in config and '"channels": [' in config
    assert main(["train", "--arch", "conv", "--epochs", "2", "--out", str(run), "--resume",
                 *common]) == 0
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    for argv in (["evaluate", str(run)], ["sample", str(run), "-n", "4"],
                 ["reconstruct", str(run), "-n", "4"], ["interpolate", str(run), "--pairs", "2"],
                 ["figures", str(run)]):
        assert main(argv) == 0, argv
    assert (run / "figures").is_dir() and any((run / "figures").glob("*.png"))
    loaded = numpyvae.load(run / "model.npz")
    assert any(type(layer).__name__ == "Conv2d" for layer in loaded.encoder.layers())


def test_gradcheck_command_includes_the_conv_layers_and_models(capsys):
    assert main(["gradcheck", "--backend", "numpy"]) == 0
    out = capsys.readouterr().out
    assert "Conv2d(" in out and "ConvTranspose2d(" in out
    assert "conv VAE" in out and "conv Autoencoder" in out and "conv CVAE" in out
