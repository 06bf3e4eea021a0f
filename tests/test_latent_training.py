"""Latent statistics and importance-weighted training inside the training loop and the command."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from numpyvae import VAE, Autoencoder, latent
from numpyvae.app.cli import main
from numpyvae.app.data import load_dataset
from numpyvae.app.train import Trainer, collapse_warning, fit

TINY = ["--hidden", "24", "--latent-dim", "3", "--batch-size", "256", "--backend", "numpy",
        "--quiet"]


@pytest.fixture(autouse=True)
def isolated(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("NUMPYVAE_CACHE", str(tmp_path_factory.getbasetemp() / "numpyvae-cache"))
    monkeypatch.setenv("NUMPYVAE_BACKEND", "numpy")


@pytest.fixture(scope="module")
def shapes_small(tmp_path_factory):
    os.environ.setdefault("NUMPYVAE_CACHE", str(tmp_path_factory.getbasetemp() / "numpyvae-cache"))
    ds = load_dataset("shapes")
    return ds.x_train[:600], ds.x_test[:150]


def small_vae(**kw):
    return VAE(784, hidden_dims=(24,), latent_dim=4, seed=0, backend="numpy", **kw)


def test_every_epoch_records_kl_per_dim_and_active_units(shapes_small):
    x_train, x_test = shapes_small
    model = small_vae()
    history = fit(model, x_train, x_test, epochs=2, batch_size=100, progress=False)
    for m in history:
        assert len(m["kl_per_dim"]) == 4 and isinstance(m["active_units"], int)
        assert sum(m["kl_per_dim"]) == pytest.approx(m["test_kl"], rel=0.05)
    stats = latent.latent_statistics(model, x_test)
    assert history[-1]["active_units"] == stats.active_units
    np.testing.assert_allclose(history[-1]["kl_per_dim"], stats.kl_per_dim, rtol=1e-6)
    ae = fit(Autoencoder(784, hidden_dims=(24,), latent_dim=4, backend="numpy"), x_train,
             epochs=1, batch_size=100, progress=False)
    assert ae[0]["active_units"] is None and ae[0]["kl_per_dim"] is None


def test_iw_training_runs_the_importance_weighted_objective(shapes_small):
    x_train, x_test = shapes_small
    a, b = small_vae(), small_vae()
    elbo = fit(a, x_train, x_test, epochs=1, batch_size=100, progress=False)
    iw = fit(b, x_train, x_test, epochs=1, batch_size=100, progress=False, iw_train=4)
    # The IWAE objective sits below its own -ELBO estimate; the ELBO run's objective is its loss.
    assert iw[0]["train_objective"] < iw[0]["train_loss"]
    assert elbo[0]["train_objective"] == pytest.approx(elbo[0]["train_loss"])
    assert not np.allclose(a.flat_params, b.flat_params)
    with pytest.raises(ValueError, match="iw_train must be a positive integer"):
        Trainer(small_vae(), x_train, iw_train=0)
    with pytest.raises(ValueError, match="needs a VAE"):
        Trainer(Autoencoder(784, hidden_dims=(8,), latent_dim=2), x_train, iw_train=2)
    with pytest.raises(ValueError, match="free bits do not combine"):
        Trainer(small_vae(free_bits=0.5), x_train, iw_train=2)


def test_collapse_warning_names_the_remedies(shapes_small, capsys):
    x_train, _ = shapes_small
    text = collapse_warning(20)
    assert "--kl-warmup" in text and "--free-bits" in text and "none of the 20" in text
    model = small_vae()
    # A crushing KL weight collapses the posterior within one epoch.
    fit(model, x_train, epochs=1, batch_size=50, beta=300.0, lr=3e-3, progress=True)
    err = capsys.readouterr().err
    assert "active units 0/4" in err and "posterior collapse" in err and "--free-bits" in err


def test_command_line_iw_train_free_bits_and_disentanglement(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--out", str(out), "--iw-train", "3", *TINY]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["training"]["iw_train"] == 3
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert len(row["kl_per_dim"]) == 3 and row["active_units"] is not None
    assert {"kl_per_dim.png", "traversal.png"} <= {p.name for p in (out / "figures").iterdir()}
    # resume keeps the objective; changing it is refused
    assert main(["train", "--out", str(out), "--resume", "--epochs", "2", "--quiet"]) == 0
    assert main(["train", "--out", str(out), "--resume", "--iw-train", "5"]) == 2
    assert "--iw-train 3, not 5" in capsys.readouterr().err

    assert main(["evaluate", str(out), "--disentanglement", "--json", "--limit", "300"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert 0 <= r["mig"] <= 1 and set(r["mig_per_factor"]) == {"shape", "scale", "rotation",
                                                               "x", "y"}
    assert r["active_units"] <= 3
    assert main(["evaluate", str(out), "--disentanglement"]) == 0
    assert "MIG" in capsys.readouterr().out


def test_free_bits_option_reaches_the_model():
    from numpyvae.app.cli import build_parser
    from numpyvae.app.run import TRAIN_DEFAULTS, build_model

    args = build_parser().parse_args(["train", "--free-bits", "0.25"])
    assert args.free_bits == 0.25
    model = build_model({**TRAIN_DEFAULTS, "free_bits": args.free_bits}, 784, backend="numpy")
    assert model.free_bits == 0.25 and model.config()["free_bits"] == 0.25


def test_bad_iw_train_option_is_one_line(tmp_path, capsys):
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(["train", "--out", str(tmp_path / "x"), "--iw-train", "0"])
    assert info.value.code == 2
    assert "--iw-train: expected a positive integer, got '0'" in capsys.readouterr().err
