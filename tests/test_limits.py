"""Impossible sizes are refused, naming the size, before anything is allocated."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import numpyvae
from numpyvae import VAE, Autoencoder, Linear, ModelFileError
from numpyvae.app.cli import main
from numpyvae.app.limits import MEMORY_ENV, SizeLimitError, check_size, human, memory_budget

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


@pytest.mark.parametrize("make, words", [
    (lambda: VAE(784, hidden_dims=(100_000_000,)), "hidden_dims=(100000000,)"),
    (lambda: VAE(784, latent_dim=100_000_000_000), "latent_dim=100000000000"),
    (lambda: Autoencoder(10**6, hidden_dims=(10**6,)), "input_dim=1000000"),
    (lambda: Linear(10**6, 10**6, backend="numpy"), "Linear(1000000, 1000000)"),
])
def test_impossible_models_are_refused_before_allocating(make, words):
    peak, message = peak_of(make)
    assert words in message and "parameters" in message and "more than the" in message
    assert peak < MiB, peak


def test_the_budget_follows_the_environment(monkeypatch):
    monkeypatch.setenv(MEMORY_ENV, "1M")
    assert memory_budget() == MiB
    with pytest.raises(SizeLimitError, match="1.0 MB"):
        VAE(784, hidden_dims=(400,))  # 318,000 parameters: 2.5 MB with the gradients
    VAE(784, hidden_dims=(16,), latent_dim=2)
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
