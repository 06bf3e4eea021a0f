"""Impossible sizes are refused, naming the size, before anything is allocated."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import numpyvae
from numpyvae import VAE, ModelFileError, mlp
from numpyvae.app.cli import main
from numpyvae.app.limits import (
    MEMORY_ENV,
    SizeLimitError,
    check_model_config,
    check_model_size,
    check_size,
    human,
    memory_budget,
    model_parameters,
)
from numpyvae.app.options import TRAIN_DEFAULTS, build_model

MiB = 2**20


def peak_of(make):
    """Run ``make()`` (which must raise SizeLimitError); the peak of traced memory."""
    tracemalloc.start()
    try:
        with pytest.raises(SizeLimitError) as exc:
            make()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak, str(exc.value)


def linear_spec(n_in, n_out):
    return {"type": "Linear", "in_features": n_in, "out_features": n_out,
            "activation": "identity", "alpha": 0.01}


def options(**changes):
    return {**TRAIN_DEFAULTS, **changes}


@pytest.mark.parametrize("make, words", [
    (lambda: build_model(options(hidden=[100_000_000]), 784), "--hidden 100000000"),
    (lambda: build_model(options(latent_dim=100_000_000_000), 784), "latent_dim=100000000000"),
    (lambda: build_model(options(model="autoencoder", hidden=[10**6]), 10**6),
     "input_dim=1000000"),
    (lambda: build_model(options(conditional=True, hidden=[10**6]), 10**6, num_classes=10),
     "num_classes=10"),
    (lambda: build_model(options(arch="conv", channels=[10**5, 10**5]), 784,
                         image_shape=(28, 28)), "--channels 100000 100000"),
    (lambda: build_model(options(arch="conv", latent_dim=10**9), 784, image_shape=(28, 28)),
     "--latent-dim 1000000000"),
    (lambda: check_model_config({"kind": "vae", "encoder": linear_spec(10**6, 10**6),
                                 "decoder": linear_spec(1, 10**6)}, "a model file"),
     "Linear(1000000, 1000000)"),
])
def test_impossible_models_are_refused_before_allocating(make, words):
    peak, message = peak_of(make)
    assert words in message and "parameters" in message and "more than the" in message
    assert MEMORY_ENV in message
    assert peak < MiB, peak


def test_parameters_are_counted_as_the_constructors_make_them():
    for config, model in [
        ({"input_dim": 7, "hidden_dims": [5, 3], "latent_dim": 2},
         VAE(7, hidden_dims=(5, 3), latent_dim=2, backend="numpy")),
        ({"kind": "autoencoder", "input_dim": 7, "hidden_dims": 4, "latent_dim": 2},
         numpyvae.Autoencoder(7, hidden_dims=4, latent_dim=2, backend="numpy")),
        ({"kind": "cvae", "input_dim": 7, "hidden_dims": [4], "latent_dim": 2,
          "num_classes": 3},
         numpyvae.CVAE(7, num_classes=3, hidden_dims=(4,), latent_dim=2, backend="numpy")),
    ]:
        assert model_parameters(config)[0] == model.num_params
        assert model_parameters(model.architecture())[0] == model.num_params
    conv = build_model(options(arch="conv", channels=[2, 3], latent_dim=4), 64,
                       image_shape=(8, 8), backend="numpy")
    assert model_parameters(conv.architecture())[0] == conv.num_params
    # Sizes that are not positive integers are left to the constructor's own message.
    assert model_parameters({"input_dim": "many", "latent_dim": 2}) is None
    assert model_parameters({"kind": "unknown", "input_dim": 2, "latent_dim": 2}) is None


def test_the_conv_count_matches_the_networks_built(monkeypatch):
    conv = build_model(options(arch="conv", channels=[2, 3], latent_dim=4), 64,
                       image_shape=(8, 8), backend="numpy")
    itemsize = conv.dtype.itemsize
    # A budget of exactly its weights and gradients lets it through; one byte less does not.
    monkeypatch.setenv(MEMORY_ENV, str(2 * conv.num_params * itemsize))
    build_model(options(arch="conv", channels=[2, 3], latent_dim=4), 64, image_shape=(8, 8),
                backend="numpy")
    monkeypatch.setenv(MEMORY_ENV, str(2 * conv.num_params * itemsize - 1))
    with pytest.raises(SizeLimitError, match=f"{conv.num_params:,} parameters"):
        build_model(options(arch="conv", channels=[2, 3], latent_dim=4), 64,
                    image_shape=(8, 8), backend="numpy")


def test_the_budget_follows_the_environment(monkeypatch):
    model = VAE(784, hidden_dims=(400,))  # 318,000 parameters: 2.5 MB with the gradients
    monkeypatch.setenv(MEMORY_ENV, "1M")
    assert memory_budget() == MiB
    with pytest.raises(SizeLimitError, match="1.0 MB"):
        check_model_size(model)
    with pytest.raises(SizeLimitError, match="1.0 MB"):
        build_model(options(), 784)
    check_model_size(VAE(784, hidden_dims=(16,), latent_dim=2))
    VAE(784, hidden_dims=(400,))  # building one in Python reads no budget: the boundary does
    monkeypatch.setenv(MEMORY_ENV, "lots")
    with pytest.raises(SizeLimitError, match="expected a number of bytes"):
        memory_budget()
    monkeypatch.delenv(MEMORY_ENV)
    assert memory_budget() > 64 * MiB
    check_size(1, "one byte")


def test_human_sizes():
    assert human(512) == "512 bytes"
    assert human(2_500_000) == "2.5 MB"
    assert human(3 * 10**21) == "3.0e+21 bytes"
    assert human(10**400) == "about 1e+400 bytes"  # past what a float holds


@pytest.mark.parametrize("dtype", ["bogus", "int32", ["float32"], {}])
def test_bad_dtypes_are_refused_at_once(dtype):
    with pytest.raises(ValueError, match="unsupported dtype"):
        VAE(4, hidden_dims=(2,), latent_dim=1, dtype=dtype)


@pytest.mark.parametrize("option, value", [("--hidden", "100000000"),
                                           ("--latent-dim", "100000000000")])
def test_the_command_line_refuses_in_one_line(tmp_path, capsys, option, value):
    out = tmp_path / "run"
    assert main(["train", option, value, "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and value in err and "parameters" in err, err
    assert not out.exists()


def test_a_model_file_claiming_impossible_sizes(tmp_path):
    path = tmp_path / "model.npz"
    VAE(8, hidden_dims=(4,), latent_dim=2).save(path)
    from numpyvae.app.safenpz import read_npz

    arrays = read_npz(path)
    text = arrays.pop("__config__").tobytes().decode()
    claims = text.replace('"hidden_dims": [4]', '"hidden_dims": [100000000000]')
    assert claims != text
    arrays["__config__"] = np.frombuffer(claims.encode(), np.uint8)
    np.savez(path, **arrays)
    tracemalloc.start()
    try:
        with pytest.raises(ModelFileError, match=r"model\.npz.*100000000000.*more than the"):
            numpyvae.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < MiB, peak


def test_a_model_file_whose_layers_claim_impossible_sizes(tmp_path):
    """A file of any networks (no constructor options): its layers' specs are counted."""
    rng = np.random.default_rng(0)
    model = VAE(mlp((8, 4, 4), rng=rng, backend="numpy"), mlp((2, 4, 8), rng=rng,
                                                               backend="numpy"), latent_dim=2)
    path = model.save(tmp_path / "model.npz")
    from numpyvae.app.safenpz import read_npz

    arrays = read_npz(path)
    text = arrays.pop("__config__").tobytes().decode()
    assert '"options"' not in text
    claims = text.replace('"in_features": 8', '"in_features": 100000000000', 1)
    assert claims != text
    arrays["__config__"] = np.frombuffer(claims.encode(), np.uint8)
    np.savez(path, **arrays)
    with pytest.raises(ModelFileError, match=r"model\.npz.*Linear\(100000000000, 4\).*more than"):
        numpyvae.load(path)
