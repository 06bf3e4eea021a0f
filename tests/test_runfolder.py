"""The run-folder module: a folder written by fit() works with every command; lock; ownership."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from numpyvae import VAE
from numpyvae.app.cli import main
from numpyvae.app.runfolder import (
    CONFIG_FILE,
    LOCK_FILE,
    TEST_DATA_FILE,
    RunFolderError,
    RunNotFoundError,
    check_new,
    lock,
    read_config,
    read_test_data,
)
from numpyvae.app.train import fit

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def fit_run(tmp_path_factory):
    """A run folder written from Python, on arrays with labels: 6x6 'images'."""
    out = tmp_path_factory.mktemp("fit") / "run"
    rng = np.random.default_rng(0)
    x = (rng.random((60, 36)) < 0.3).astype(np.float32)
    y = rng.integers(0, 3, 60)
    fit(VAE(36, hidden_dims=(8,), latent_dim=2, backend="numpy"), x[:40], x[40:], epochs=2,
        batch_size=10, progress=False, out_dir=out, y_test=y[40:])
    return out, x[40:], y[40:]


def test_a_folder_written_by_fit_keeps_its_test_set(fit_run):
    out, x_test, y_test = fit_run
    config = read_config(out)
    assert config.get("dataset") is None and config["image_shape"] == [6, 6]
    x, y = read_test_data(out)
    np.testing.assert_array_equal(x, x_test)
    np.testing.assert_array_equal(y, y_test)


@pytest.mark.parametrize("command, figure", [
    ("sample", "samples.png"), ("reconstruct", "reconstructions.png"),
    ("interpolate", "interpolation.png")])
def test_every_command_works_on_a_folder_written_by_fit(fit_run, tmp_path, capsys, command,
                                                       figure):
    out, _, _ = fit_run
    target = tmp_path / figure
    assert main([command, str(out), "--out", str(target)]) == 0
    assert target.read_bytes()[:8] == PNG


def test_evaluate_and_figures_on_a_folder_written_by_fit(fit_run, capsys):
    out, _, _ = fit_run
    assert main(["evaluate", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n_test"] == 20 and result["epochs"] == 2 and np.isfinite(result["elbo"])
    assert main(["figures", str(out)]) == 0
    assert {p.name for p in (out / "figures").iterdir()} >= {
        "samples.png", "reconstructions.png", "interpolation.png", "latent_scatter.png",
        "manifold.png", "loss_curves.png"}


def test_resuming_a_fit_folder_from_the_command_line_says_how(fit_run, capsys):
    out, _, _ = fit_run
    assert main(["train", "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "resume=True" in err


def test_a_fit_without_a_test_set_says_so(tmp_path, capsys):
    fit(VAE(4, hidden_dims=(2,), latent_dim=1), np.zeros((6, 4)), epochs=1, progress=False,
        out_dir=tmp_path)
    assert not (tmp_path / TEST_DATA_FILE).exists()
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "trained without a test set" in capsys.readouterr().err
    assert main(["sample", str(tmp_path), "-n", "4"]) == 0  # needs no test images


def test_the_lock_is_reentrant_in_one_process_and_leaves_no_empty_folder(tmp_path):
    run = tmp_path / "new"
    with lock(run):
        with lock(run):
            assert (run / LOCK_FILE).is_file()
    assert not run.exists()  # created here and left empty: removed again
    (run / "x").mkdir(parents=True)
    with lock(run):
        assert (run / LOCK_FILE).is_file()
    assert not (run / LOCK_FILE).exists()  # a finished run keeps no lock file
    assert (run / "x").is_dir()


def test_a_lock_file_removed_by_the_holder_before_us_is_replaced(tmp_path, monkeypatch):
    from numpyvae.app import runfolder

    opened = []
    real_open = open

    def open_then_lose_the_race(path, *args, **kwargs):
        f = real_open(path, *args, **kwargs)
        if str(path).endswith(LOCK_FILE) and not opened:  # the holder releases right now
            opened.append(path)
            os.unlink(path)
        return f

    monkeypatch.setattr(runfolder, "open", open_then_lose_the_race, raising=False)
    with lock(tmp_path / "run") as run:
        assert (run / LOCK_FILE).is_file() and len(opened) == 1  # locked the new file


def test_check_new(tmp_path):
    check_new(tmp_path / "absent")
    check_new(tmp_path)
    (tmp_path / LOCK_FILE).write_text("")
    (tmp_path / ".config.json.abc.tmp").write_text("x")
    check_new(tmp_path)  # only what a killed run of ours left
    (tmp_path / CONFIG_FILE).write_text("{}")
    with pytest.raises(RunFolderError, match="already holds a run"):
        check_new(tmp_path)
    (tmp_path / CONFIG_FILE).unlink()
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match=r"holds no numpyvae run \(notes\.txt\)"):
        check_new(tmp_path)
    with pytest.raises(RunFolderError, match="is a file"):
        check_new(tmp_path / "notes.txt")


def test_read_config_errors(tmp_path):
    with pytest.raises(RunNotFoundError, match="run folder not found"):
        read_config(tmp_path / "absent")
    with pytest.raises(RunNotFoundError, match="not a run folder"):
        read_config(tmp_path)
    for text, words in [("{", "not readable JSON"), ("[]", "expected, found list"),
                        ('{"format": 1, "model": {}, "training": {"lr": -1}}',
                         "training: 'lr' is -1, expected a finite number > 0"),
                        ('{"format": 1, "model": {"hidden_dims": [0]}, "training": {}}',
                         "model: 'hidden_dims' is [0]"),
                        ("\xff", "not readable JSON")]:
        (tmp_path / CONFIG_FILE).write_bytes(text.encode("latin-1"))
        with pytest.raises(RunFolderError, match=words.replace("[", r"\[")):
            read_config(tmp_path)


def test_a_network_models_likelihood_spec_is_a_valid_config_field(tmp_path):
    # A model built from networks records its likelihood as a spec, not a name.
    from numpyvae.app.runfolder import RUN_FORMAT, validate_config

    base = {"format": RUN_FORMAT, "training": {}, "model": {}}
    validate_config({**base, "model": {"likelihood": {"type": "Bernoulli"}}}, tmp_path)
    validate_config({**base, "model": {"likelihood": "bernoulli"}}, tmp_path)
    with pytest.raises(RunFolderError, match="likelihood"):
        validate_config({**base, "model": {"likelihood": [1]}}, tmp_path)
