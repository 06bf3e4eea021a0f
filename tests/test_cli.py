"""The ``numpyvae`` command end to end, in temporary folders: each command, figures, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from assertions import one_line_error

from numpyvae.app.cli import build_parser, main
from numpyvae.app.data import write_idx
from numpyvae.app.data.download import IDX_FILES

PNG = b"\x89PNG\r\n\x1a\n"
FIGURES = {"reconstructions.png", "samples.png", "interpolation.png", "latent_scatter.png",
           "manifold.png", "loss_curves.png", "kl_per_dim.png", "traversal.png"}
TINY = ["--hidden", "24", "--latent-dim", "2", "--batch-size", "256", "--backend", "numpy"]


@pytest.fixture(autouse=True)
def isolated(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("NUMPYVAE_CACHE", str(tmp_path_factory.getbasetemp() / "numpyvae-cache"))
    monkeypatch.setenv("NUMPYVAE_BACKEND", "numpy")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """One small run on the embedded dataset, shared by the tests of the other commands."""
    folder = tmp_path_factory.mktemp("cli") / "run"
    os.environ.setdefault("NUMPYVAE_CACHE",
                          str(tmp_path_factory.getbasetemp() / "numpyvae-cache"))
    assert main(["train", "--epochs", "1", "--out", str(folder), "--quiet", *TINY]) == 0
    return folder


def is_png(path):
    return path.is_file() and path.read_bytes()[:8] == PNG


def test_train_writes_a_run_folder(run_dir):
    assert {p.name for p in run_dir.iterdir()} >= {"config.json", "model.npz", "checkpoint.npz",
                                                   "metrics.jsonl", "figures"}
    assert {p.name for p in (run_dir / "figures").iterdir()} == FIGURES
    assert all(is_png(p) for p in (run_dir / "figures").iterdir())
    config = json.loads((run_dir / "config.json").read_text())
    assert config["dataset"] == "shapes" and config["model"]["hidden_dims"] == [24]
    assert config["model"]["latent_dim"] == 2 and config["backend"] == "numpy"
    (row,) = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for key in ("epoch", "train_loss", "train_recon", "train_kl", "test_loss", "test_recon",
                "test_kl", "seconds", "samples_per_second"):
        assert row[key] is not None


def test_train_resume_continues(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--out", str(out), "--quiet", "--latent-dim", "3",
                 "--hidden", "16", "--backend", "numpy"]) == 0
    monkeypatch.setenv("NUMPYVAE_BACKEND", "numba")  # the run's own backend wins on resume
    assert main(["train", "--out", str(out), "--resume", "--epochs", "2", "--quiet"]) == 0
    assert json.loads((out / "config.json").read_text())["backend"] == "numpy"
    rows = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [1, 2]
    assert json.loads((out / "config.json").read_text())["training"]["epochs"] == 2
    assert "manifold.png" not in {p.name for p in (out / "figures").iterdir()}  # latent 3
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--resume", "--latent-dim", "5"]) == 2
    one_line_error(capsys, "--latent-dim 3, not 5")
    assert main(["train", "--out", str(out)]) == 2
    one_line_error(capsys, "already holds a run", "--resume")
    assert main(["train", "--out", str(tmp_path / "none"), "--resume"]) == 2
    one_line_error(capsys, "run folder not found")


def test_evaluate(run_dir, capsys):
    assert main(["evaluate", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "ELBO" in out and "KL" in out and "log p(x)" not in out
    assert main(["evaluate", str(run_dir), "--json", "--iw-samples", "20", "--limit", "50"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["dataset"] == "shapes" and r["n_test"] == 50 and r["iw_samples"] == 20
    assert r["loss"] == pytest.approx(r["recon"] + r["kl"]) and r["elbo"] == -r["loss"]
    # The importance-weighted bound is tighter than the ELBO (up to noise).
    assert r["log_likelihood"] > r["elbo"] - 1.0
    metrics = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert main(["evaluate", str(run_dir), "--json"]) == 0
    full = json.loads(capsys.readouterr().out)
    assert full["loss"] == pytest.approx(metrics["test_loss"], rel=0.05)


@pytest.mark.parametrize("command, figure", [
    (["sample", "-n", "9"], "samples.png"),
    (["reconstruct", "-n", "7"], "reconstructions.png"),
    (["interpolate", "--pairs", "2", "--steps", "5"], "interpolation.png"),
])
def test_figure_commands(run_dir, tmp_path, capsys, command, figure):
    target = run_dir / "figures" / figure
    target.unlink()
    assert main([command[0], str(run_dir), *command[1:]]) == 0
    assert capsys.readouterr().out.strip() == str(target)
    assert is_png(target)
    custom = tmp_path / "elsewhere" / "mine.png"
    assert main([command[0], str(run_dir), "--out", str(custom)]) == 0
    assert is_png(custom)


def test_figures_command(run_dir, capsys):
    for p in (run_dir / "figures").iterdir():
        p.unlink()
    assert main(["figures", str(run_dir)]) == 0
    assert {p.name for p in (run_dir / "figures").iterdir()} == FIGURES


def test_gradcheck(capsys, backend_name):
    assert main(["gradcheck", "--backend", backend_name]) == 0
    out = capsys.readouterr().out
    for title in ("Linear(5, 4, activation='softplus')", "LeakyReLU()", "Sequential(",
                  "VAE(6, hidden 5, latent 3, relu), bernoulli",
                  "gaussian (learned variance)", "Autoencoder(", "Flatten() on", "Reshape(3, 4)",
                  "VAE(encoder: Flatten, 3 x (Linear, Tanh), Linear", "Conv2d(3, 4",
                  "ConvTranspose2d(3, 2", "conv VAE (8 x 12 images", "conv Autoencoder (",
                  "LabelChannels(image_shape=(2, 3, 2), num_classes=4) on", "CVAE(6, 4 classes",
                  "conv CVAE (8 x 12 images as rows"):
        assert title in out
    for title in ("two backward calls without zero_grad", "zero_grad clears",
                  "Adam (one flat buffer)", "against the textbook density",
                  "nll_backward: dout", "IWAE (K=3) of CVAE(", "latent_backward: dh"):
        assert title in out
    if backend_name == "numba":
        assert "numba against numpy, training shapes (batch 128)" in out
        assert "the one-call step (numba) against the per-op path (numpy)" in out
    assert "checks passed on" in out and "FAIL" not in out


def test_gradcheck_failure_exits_1(monkeypatch, capsys):
    from numpyvae import gradcheck

    real = gradcheck.standard_checks

    def broken(**kwargs):
        reports = real(**kwargs)
        reports[0][0].rel_error = 0.5
        return reports

    monkeypatch.setattr(gradcheck, "standard_checks", broken)
    assert main(["gradcheck"]) == 1
    out = capsys.readouterr().out
    assert "FAILED: 1 of 63 checks" in out
    assert "Linear(5, 4, activation='identity'): input off by 5.0e-01 relative" in out


def test_real_fashion_mnist_from_the_command_line(fashion_mnist_dir, tmp_path, capsys):
    out = tmp_path / "fm"
    assert main(["train", "--dataset", "fashion-mnist", "--data-dir", str(fashion_mnist_dir),
                 "--epochs", "1", "--hidden", "64", "--latent-dim", "2", "--batch-size", "500",
                 "--out", str(out), "--quiet", "--backend", "numpy"]) == 0
    assert {p.name for p in (out / "figures").iterdir()} == FIGURES
    config = json.loads((out / "config.json").read_text())
    assert config["dataset"] == "fashion-mnist"
    assert config["data_dir"] == str(fashion_mnist_dir.resolve())
    # Later commands find the data again from the recorded folder.
    assert main(["evaluate", str(out), "--json", "--no-download"]) == 0
    assert json.loads(capsys.readouterr().out)["n_test"] == 10_000


# ----------------------------------------------------------------------------- errors


def test_missing_run_folder(tmp_path, capsys):
    for command in ("evaluate", "sample", "reconstruct", "interpolate", "figures"):
        assert main([command, str(tmp_path / "nope")]) == 2
        one_line_error(capsys, f"run folder not found: {tmp_path / 'nope'}")


def test_not_a_run_folder(tmp_path, capsys):
    assert main(["sample", str(tmp_path)]) == 2
    one_line_error(capsys, "is not a run folder (no config.json)")
    (tmp_path / "config.json").write_text("{broken")
    assert main(["sample", str(tmp_path)]) == 2
    one_line_error(capsys, "config.json: not readable JSON")


def test_corrupt_model_file(run_dir, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text((run_dir / "config.json").read_text())
    (bad / "model.npz").write_bytes(b"garbage")
    assert main(["sample", str(bad)]) == 2
    one_line_error(capsys, "model.npz: not a readable numpyvae model file")


def test_missing_data_no_download(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["train", "--dataset", "mnist", "--data-dir", str(tmp_path / "empty"),
                 "--no-download", "--out", str(tmp_path / "r")]) == 2
    one_line_error(capsys, "mnist data files were not found", str(tmp_path / "empty"),
                   "--data-dir")


@pytest.mark.parametrize("damage, words", [
    ("truncate-gzip", ["train-images-idx3-ubyte.gz", "truncated"]),
    ("bad-magic", ["t10k-labels-idx1-ubyte.gz", "wrong IDX magic number"]),
    ("count-mismatch", ["10 images", "9 labels"]),
    ("wrong-size", ["14x14 pixels, expected 28x28"]),
])
def test_bad_data_files(tmp_path, capsys, damage, words):
    data = tmp_path / "data"
    rng = np.random.default_rng(0)
    arrays = {"train_images": rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
              "train_labels": rng.integers(0, 10, 10, dtype=np.uint8),
              "test_images": rng.integers(0, 256, (4, 28, 28), dtype=np.uint8),
              "test_labels": rng.integers(0, 10, 4, dtype=np.uint8)}
    if damage == "bad-magic":
        arrays["test_labels"] = arrays["test_images"]
    if damage == "count-mismatch":
        arrays["train_labels"] = arrays["train_labels"][:9]
    if damage == "wrong-size":
        arrays["train_images"] = arrays["train_images"][:, :14, :14]
    for role, array in arrays.items():
        write_idx(data / IDX_FILES[role], array)
    if damage == "truncate-gzip":
        path = data / IDX_FILES["train_images"]
        path.write_bytes(path.read_bytes()[:-50])
    assert main(["train", "--dataset", "mnist", "--data-dir", str(data), "--no-download",
                 "--out", str(tmp_path / "r"), "--quiet"]) == 2
    one_line_error(capsys, *words)
    assert not (tmp_path / "r").exists()


def test_bad_options_are_one_line(capsys):
    for argv, words in [
        (["train", "--dataset", "cifar"], ["invalid choice: 'cifar'", "--help"]),
        (["train", "--epochs", "0"], ["expected a positive integer, got '0'"]),
        (["train", "--backend", "cuda"], ["invalid choice: 'cuda'"]),
        (["evaluate"], ["RUN_DIR"]),
    ]:
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
        one_line_error(capsys, *words)
    assert main([]) == 0  # no command at all: the help, on standard output
    out, err = capsys.readouterr()
    assert "usage: numpyvae" in out and "COMMAND" in out and err == ""


def test_nan_exits_1_with_the_step(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", "--epochs", "1", "--likelihood", "gaussian", "--lr", "1000",
                 "--out", str(out), "--quiet", *TINY]) == 1
    err = one_line_error(capsys, "loss became", "epoch 1, step", "smaller learning rate")
    assert "RuntimeWarning" not in err


def test_help_of_every_command_has_an_example(capsys):
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert set(commands) == {"train", "evaluate", "sample", "reconstruct", "interpolate",
                             "figures", "export", "gradcheck", "inspect", "course"}
    for name in [None, *commands]:
        with pytest.raises(SystemExit) as info:
            main(["--help"] if name is None else [name, "--help"])
        assert info.value.code == 0
        text = capsys.readouterr().out
        assert "example" in text and "numpyvae" in text
    for option in ("--dataset", "--data-dir", "--epochs", "--batch-size", "--hidden",
                   "--latent-dim", "--lr", "--beta", "--kl-warmup", "--likelihood",
                   "--binarize", "--dtype", "--seed", "--out", "--resume", "--backend",
                   "--no-download", "--model"):
        assert option in commands["train"].format_help()


# ----------------------------------------------------------------------------- a real process


def _run(args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "numpyvae.app.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def test_process_error_has_no_traceback(tmp_path):
    proc = _run(["evaluate", str(tmp_path / "missing")])
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert err.strip() == f"numpyvae evaluate: error: run folder not found: {tmp_path / 'missing'}"


def test_ctrl_c_saves_and_resume_finishes(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "NUMPYVAE_BACKEND": "numpy"}
    proc = _run(["train", "--epochs", "200", "--out", str(out), "--quiet", *TINY], env=env)
    deadline = time.monotonic() + 120
    while not (out / "metrics.jsonl").exists():  # wait for the first epoch to finish
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert (out / "checkpoint.npz").is_file()
    done = len((out / "metrics.jsonl").read_text().splitlines())
    assert 1 <= done < 200
    proc = _run(["train", "--out", str(out), "--resume", "--epochs", str(done + 1), "--quiet"],
                env=env)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert len((out / "metrics.jsonl").read_text().splitlines()) == done + 1
    assert is_png(out / "figures" / "loss_curves.png")
