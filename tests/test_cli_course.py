"""What a command-line user expects: python -m, --version, suggestions, the options of the
Python API, honest labels, what --resume resumes, progress, image formats, and examples that
work from any folder."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from assertions import one_line_error
from PIL import Image

import numpyvae
from numpyvae import plots
from numpyvae.app.cli import build_parser, main
from numpyvae.app.train import Trainer
from numpyvae.fast.warmup import announce_if_slow, compile_kernels, kernels_compiled
from numpyvae.step import step_of

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--hidden", "16", "--latent-dim", "2", "--batch-size", "256", "--backend", "numpy"]


@pytest.fixture(autouse=True)
def isolated(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("NUMPYVAE_CACHE", str(tmp_path_factory.getbasetemp() / "numpyvae-cache"))
    monkeypatch.setenv("NUMPYVAE_BACKEND", "numpy")


def test_python_dash_m_and_version(tmp_path):
    done = subprocess.run([sys.executable, "-m", "numpyvae", "--version"], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == f"numpyvae {numpyvae.__version__}"
    done = subprocess.run([sys.executable, "-m", "numpyvae", "evaluate", "nowhere"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2 and "run folder not found: nowhere" in done.stderr
    done = subprocess.run([sys.executable, "-m", "numpyvae"], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)  # no command: the help, not an error
    assert done.returncode == 0 and done.stderr == ""
    assert "usage: numpyvae" in done.stdout and "train" in done.stdout


@pytest.mark.parametrize("argv, hint", [
    (["train", "--lattent-dim", "3"], "did you mean --latent-dim?"),
    (["train", "--bta=2"], "did you mean --beta?"),
    (["evaluate", "run", "--iw-sampels", "5"], "did you mean --iw-samples?"),
    (["trian"], "did you mean 'train'?"),
    (["train", "--dataset", "fashion"], "did you mean 'fashion-mnist'?"),
    (["train", "--likelihood", "gausian"], "did you mean 'gaussian'?"),
])
def test_misspellings_get_a_suggestion(capsys, argv, hint):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    one_line_error(capsys, hint)


def test_no_suggestion_for_nonsense(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--zzzzzz"])
    err = one_line_error(capsys, "unrecognized arguments: --zzzzzz")
    assert "did you mean" not in err


def test_free_bits_and_gaussian_var_reach_the_model(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", "--epochs", "1", "--out", str(out), "--free-bits", "0.5",
                 "--likelihood", "gaussian", "--gaussian-var", "learned", *TINY]) == 0
    model = numpyvae.load(out / "model.npz")
    assert model.free_bits == 0.5 and model.gaussian_var == "learned"
    assert "decoder.logvar" in model.params
    err = capsys.readouterr().err
    assert "negative log *density*" in err and "can be negative" in err
    assert main(["evaluate", str(out)]) == 0
    assert "can be negative" in capsys.readouterr().out
    out2 = tmp_path / "r2"
    assert main(["train", "--epochs", "1", "--out", str(out2), "--quiet", "--likelihood",
                 "gaussian", "--gaussian-var", "0.25", *TINY]) == 0
    assert numpyvae.load(out2 / "model.npz").gaussian_var == 0.25
    assert main(["train", "--gaussian-var", "0.1", "--out", str(tmp_path / "x")]) == 2
    one_line_error(capsys, "--likelihood gaussian")
    assert main(["train", "--free-bits", "1", "--model", "autoencoder",
                 "--out", str(tmp_path / "x")]) == 2
    one_line_error(capsys, "only a VAE has")
    with pytest.raises(SystemExit):
        main(["train", "--gaussian-var", "lerned"])
    one_line_error(capsys, "expected a positive number or 'learned'")


def test_epoch_line_shows_beta_during_warm_up(capsys):
    x = np.random.default_rng(0).random((64, 6))
    model = numpyvae.VAE(6, hidden_dims=(4,), latent_dim=2, backend="numpy")
    history = Trainer(model, x, batch_size=16, kl_warmup=10, beta=2.0).fit(3)
    lines = [line for line in capsys.readouterr().err.splitlines() if "train -ELBO" in line]
    # 4 steps per epoch: beta = 2 * 4/10, then 2 * 8/10, then the full 2.
    assert "β 0.8 of 2 in warm-up" in lines[0] and "β 1.6 of 2 in warm-up" in lines[1]
    assert "β 2)" in lines[2] and "warm-up" not in lines[2]
    assert [m["beta"] for m in history] == pytest.approx([0.8, 1.6, 2.0])
    Trainer(numpyvae.VAE(6, hidden_dims=(4,), latent_dim=2, backend="numpy"), x).fit(1)
    assert "β" not in capsys.readouterr().err  # the plain ELBO says nothing of β


def test_autoencoder_reports_a_reconstruction_loss(tmp_path, capsys):
    out = tmp_path / "ae"
    assert main(["train", "--model", "autoencoder", "--epochs", "1", "--out", str(out),
                 *TINY]) == 0
    captured = capsys.readouterr()
    epoch_line = next(line for line in captured.err.splitlines() if "epoch 1/1: r" in line)
    assert "reconstruction loss" in epoch_line
    assert "ELBO" not in epoch_line and "KL" not in epoch_line and "β" not in epoch_line
    assert "ELBO" not in captured.out and "reconstruction loss" in captured.out
    row = json.loads((out / "metrics.jsonl").read_text())
    assert row["train_kl"] is None and row["test_kl"] is None and row["beta"] is None
    assert row["train_loss"] == row["train_recon"]
    assert main(["evaluate", str(out)]) == 0
    text = capsys.readouterr().out
    assert "reconstruction loss" in text and "has no ELBO" in text
    assert "\n  ELBO" not in text and "\n  KL" not in text
    assert main(["evaluate", str(out), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["objective"] == "reconstruction loss" and r["elbo"] is None and r["kl"] is None
    assert r["loss"] == r["recon"]


def test_resume_says_what_it_resumes(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", "--epochs", "1", "--out", str(out), "--quiet", *TINY]) == 0
    steps = json.loads((out / "metrics.jsonl").read_text())["step"]
    assert main(["train", "--out", str(out), "--resume", "--epochs", "2"]) == 0
    err = capsys.readouterr().err
    assert (f"resuming {out}: 1 of 2 epochs done, global step {steps}; continuing with epoch 2 "
            f"from its start") in err
    assert main(["train", "--out", str(out), "--resume", "--epochs", "2"]) == 0
    assert "all 2 epochs are already done" in capsys.readouterr().err


def test_resume_mid_epoch_names_the_step(tmp_path, capsys):
    x = np.random.default_rng(0).random((64, 6))

    def stop_after_three(trainer):
        if trainer.global_step == 3:
            trainer.request_stop()

    model = numpyvae.VAE(6, hidden_dims=(4,), latent_dim=2, backend="numpy")
    Trainer(model, x, batch_size=16, out_dir=tmp_path, progress=False,
            step_callback=stop_after_three).fit(2)
    model = numpyvae.VAE(6, hidden_dims=(4,), latent_dim=2, backend="numpy")
    Trainer(model, x, batch_size=16, out_dir=tmp_path).fit(2, resume=True)
    assert ("0 of 2 epochs done, global step 3; continuing with epoch 1 at step 4 (stopped "
            "mid-epoch)") in capsys.readouterr().err


def test_importance_weighted_evaluation_shows_progress(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", "--epochs", "1", "--out", str(out), "--quiet", *TINY]) == 0
    assert main(["evaluate", str(out), "--iw-samples", "30", "--limit", "40"]) == 0
    err = capsys.readouterr().err
    assert "log p(x), K=30" in err and "sample" in err
    assert main(["evaluate", str(out), "--iw-samples", "30", "--limit", "40", "--quiet"]) == 0
    assert capsys.readouterr().err == ""


def test_figure_files_have_the_format_their_suffix_names(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", "--epochs", "1", "--out", str(out), "--quiet", *TINY]) == 0
    for name, kind in (("s.jpg", "JPEG"), ("s.JPEG", "JPEG"), ("s.png", "PNG")):
        assert main(["sample", str(out), "-n", "4", "--out", str(tmp_path / name)]) == 0
        with Image.open(tmp_path / name) as img:
            assert img.format == kind
    assert main(["reconstruct", str(out), "--out", str(tmp_path / "r.pdf")]) == 0
    assert (tmp_path / "r.pdf").read_bytes()[:5] == b"%PDF-"
    assert main(["interpolate", str(out), "--out", str(tmp_path / "i.svg")]) == 0
    assert b"<svg" in (tmp_path / "i.svg").read_bytes()[:2000]
    capsys.readouterr()
    for bad in ("s.gif", "samples"):
        assert main(["sample", str(out), "--out", str(tmp_path / bad)]) == 2
        one_line_error(capsys, "cannot write", ".png, .jpg")
        assert not (tmp_path / bad).exists()


def test_compiling_is_announced_only_when_it_happens():
    said, lines, count = [], [], [0]

    def compiling():  # a kernel compiled every 0.05 s
        for _ in range(6):
            time.sleep(0.05)
            count[0] += 1

    seconds = announce_if_slow(compiling, said.append, after=0.05, compiled=lambda: count[0],
                               status=lines.append)
    assert said[0].startswith("compiling the numba kernels for this model, once")
    assert said[1] == f"compiled 6 kernels in {seconds:.1f} s" and seconds >= 0.3
    assert lines[-1] == ""  # the counting line is cleared at the end
    said.clear()
    # Slow, but nothing compiled (the kernels load from the cache): nothing is said.
    announce_if_slow(lambda: time.sleep(0.3), said.append, after=0.05, compiled=lambda: 3)
    assert said == []
    announce_if_slow(lambda: None, said.append, after=0.5)
    assert said == []


def test_compile_kernels_leaves_the_numpy_backend_alone():
    made = []

    def make():
        made.append(numpyvae.VAE(6, hidden_dims=(4,), latent_dim=2, backend="numpy"))
        return made[-1]

    assert compile_kernels(make, numpyvae.Adam, np.zeros((3, 6)), print) is None
    assert len(made) == 1


def test_compile_kernels_runs_a_training_step_on_numba():
    pytest.importorskip("numba")
    said = []
    make = lambda: numpyvae.VAE(6, hidden_dims=(4,), latent_dim=2, backend="numba")  # noqa: E731
    model = make()
    before = model.flat_params.copy()
    seconds = compile_kernels(make, numpyvae.Adam, np.full((3, 6), 0.5), said.append)
    assert seconds is not None and seconds >= 0
    np.testing.assert_array_equal(model.flat_params, before)  # a throwaway model was used
    # Once compiled, the step and evaluation the training loop runs compile nothing more.
    compiled = kernels_compiled()
    optimizer = numpyvae.Adam(model.params, lr=1e-3, backend=model.backend)
    x = np.full((3, 6), 0.5, dtype=model.dtype)
    step_of(model.backend)(model, optimizer, x, beta=1.0, rng=np.random.default_rng(1))
    model.elbo_terms(x, rng=np.random.default_rng(1))
    assert kernels_compiled() == compiled
    assert compile_kernels(make, numpyvae.Adam, np.full((3, 6), 0.5), said.append) >= 0
    assert len(said) in (0, 2)  # announced only if the first call compiled for long


# ----------------------------------------------------------------------------- examples


#: Where the course shows commands: the README (the landing page) and the website's guide.
DOC_PAGES = [ROOT / "README.md", *sorted((ROOT / "docs" / "guide").glob("*.md"))]


def _doc_text():
    return "\n".join(page.read_text(encoding="utf-8") for page in DOC_PAGES)


def _readme_commands():
    """Every ``numpyvae ...`` line of a bash block in the README and the guide pages."""
    text = _doc_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    return [line.split("#")[0].strip() for block in blocks for line in block.splitlines()
            if line.strip().startswith("numpyvae ")]


def _help_commands():
    parser = build_parser()
    texts = [parser.format_help()] + [
        p.format_help() for p in parser._subparsers._group_actions[0].choices.values()]
    return [line.split("#")[0].strip() for text in texts for line in text.splitlines()
            if line.strip().startswith("numpyvae ") and "COMMAND" not in line]


def test_every_example_parses_and_needs_no_project_folder():
    commands = _readme_commands() + _help_commands()
    assert len(commands) > 15
    for command in commands:
        assert "../" not in command and "shared/" not in command, command
        args = shlex.split(command)[1:]
        build_parser().parse_args(args)  # every option of every example exists
    for line in _doc_text().splitlines():
        assert "../shared" not in line, line


def test_readme_shows_the_data_option_and_negative_gaussian_losses():
    text = (ROOT / "docs" / "guide" / "commands.md").read_text(encoding="utf-8")
    assert "numpyvae train --data " in text and "--test-fraction" in text
    assert "can be negative" in text


def test_readme_run_examples_work_from_another_folder(tmp_path):
    """The examples that need no downloaded data, run in a fresh folder."""
    env = {"NUMPYVAE_BACKEND": "numpy", "NUMPYVAE_CACHE": str(tmp_path / "cache")}
    import os

    env = {**os.environ, **env}
    done = subprocess.run([sys.executable, "-m", "numpyvae", "train", "--epochs", "1",
                           "--hidden", "16", "--out", "runs/mini", "--quiet"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    for command in ("evaluate runs/mini", "sample runs/mini -n 64",
                    "interpolate runs/mini --pairs 5 --steps 12", "reconstruct runs/mini"):
        assert f"numpyvae {command.replace('runs/mini', 'RUN_DIR')}" in _readme_commands()
        done = subprocess.run([sys.executable, "-m", "numpyvae", *command.split()],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, (command, done.stderr)
    assert plots.FORMATS[".jpg"] == "jpeg"


def test_load_accepts_a_run_folder(tmp_path):
    out = tmp_path / "r"
    assert main(["train", "--epochs", "1", "--out", str(out), "--quiet", *TINY]) == 0
    from_folder, from_file = numpyvae.load(out), numpyvae.load(out / "model.npz")
    assert type(from_folder) is type(from_file) and from_folder.latent_dim == 2
    for name, value in from_file.params.items():
        np.testing.assert_array_equal(from_folder.params[name], value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(numpyvae.ModelFileError, match="folder without model.npz"):
        numpyvae.load(tmp_path / "empty")
    with pytest.raises(numpyvae.ModelFileError, match="model file not found"):
        numpyvae.load(tmp_path / "nothing")
