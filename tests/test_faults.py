"""Faults: kills at every write, concurrent writers, signals, full disks, divergence.

The run-folder promises of :mod:`numpyvae.app.runfolder`: after a SIGKILL at any
write and a resume, the folder equals an uninterrupted run's (weights bit for
bit, every metrics line but the timings); one writer at a time; files the run
did not write are never overwritten; every failure is one line naming the file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from numpyvae import VAE
from numpyvae.app.cli import main
from numpyvae.app.data import write_idx
from numpyvae.app.run import evaluate_run
from numpyvae.app.runfolder import (
    CHECKPOINT_FILE,
    RunFolderError,
    RunLockedError,
    read_checkpoint,
)
from numpyvae.app.train import NonFiniteLossError, Trainer, fit
from numpyvae.fileio import atomic_write

ROOT = Path(__file__).resolve().parent.parent
DRIVER = Path(__file__).resolve().parent / "fault_injection.py"


def env(**extra):
    """The environment of a child process: this checkout first, one thread."""
    e = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
             NUMBA_NUM_THREADS="1", MPLBACKEND="Agg")
    e.update(extra)
    return e


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory):
    """A tiny MNIST-like dataset: 60 training and 20 test images."""
    folder = tmp_path_factory.mktemp("tiny-idx")
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 60), ("t10k", 20)):
        images = (rng.random((n, 28, 28)) < 0.3).astype(np.uint8) * 255
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n, np.uint8))
    return folder


def tiny_args(idx_dir, *more):
    return ["--dataset", "mnist", "--data-dir", str(idx_dir), "--no-download", "--epochs", "2",
            "--batch-size", "25", "--hidden", "8", "--latent-dim", "2", "--backend", "numpy",
            "--quiet", *more]


def run_driver(tmp_path, points, args):
    proc = subprocess.run([sys.executable, str(DRIVER), str(tmp_path), points, "--", *args],
                          capture_output=True, text=True, env=env(), timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


# ---------------------------------------------------------------------------- kills


def test_a_kill_at_every_training_write_then_resume_equals_an_uninterrupted_run(
        tmp_path, idx_dir):
    """config.json, then per epoch checkpoint.npz, model.npz, metrics.jsonl: kill at each."""
    report = run_driver(tmp_path, "all", tiny_args(idx_dir, "--no-figures"))
    assert report["writes"] == 7  # config + 2 epochs x 3 files
    assert len(report["kills"]) == 14
    for kill in report["kills"]:
        assert kill["killed"], kill
        assert kill["resume_status"] == 0, kill
        assert kill["diffs"] == [], kill


def test_a_kill_while_the_figures_are_written_then_resume(tmp_path, idx_dir):
    """The last writes of a run: the figures after the last checkpoint."""
    report = run_driver(tmp_path, "before:8,after:10,before:-1", tiny_args(idx_dir))
    assert report["writes"] >= 7 + 6  # the training writes, then one per figure
    for kill in report["kills"]:
        assert kill["killed"] and kill["resume_status"] == 0, kill
        assert kill["diffs"] == [], kill


def test_the_last_epoch_is_restored_from_the_checkpoint(tmp_path, idx_dir):
    """Issue 10's case: model.npz and metrics.jsonl lag the checkpoint after a kill."""
    out = tmp_path / "run"
    assert main(["train", *tiny_args(idx_dir, "--no-figures"), "--out", str(out)]) == 0
    final = (out / "model.npz").read_bytes()
    rows = (out / "metrics.jsonl").read_text().splitlines()
    (out / "metrics.jsonl").write_text(rows[0] + "\n")  # as if killed before the last writes
    arrays, state = read_checkpoint(out / CHECKPOINT_FILE)
    assert state["epoch"] == 2
    (out / "model.npz").write_bytes(b"stale")
    assert main(["train", "--out", str(out), "--resume", "--quiet"]) == 0
    assert [json.loads(r)["epoch"] for r in (out / "metrics.jsonl").read_text().splitlines()] \
        == [1, 2]
    from numpyvae import load

    model = load(out / "model.npz")
    for name, value in model.params.items():
        np.testing.assert_array_equal(value, arrays[f"param/{name}"])
    assert len(final) > 0


def test_stale_temporary_files_are_removed_and_others_kept(tmp_path, idx_dir):
    out = tmp_path / "run"
    assert main(["train", *tiny_args(idx_dir, "--no-figures", "--epochs", "1"),
                 "--out", str(out)]) == 0
    stale = [out / ".checkpoint.npz.k1l2.tmp", out / ".model.npz.x.tmp",
             out / ".metrics.jsonl.abc.tmp"]
    for p in stale:
        p.write_bytes(b"x" * 1000)
    (out / "figures").mkdir()
    (out / "figures" / ".samples.png.q.tmp").write_bytes(b"x")
    mine = [out / "notes.tmp", out / ".notes.txt.1.tmp", out / "figures" / "mine.png"]
    for p in mine:
        p.write_bytes(b"mine")
    assert main(["train", "--out", str(out), "--resume", "--epochs", "2", "--no-figures"]) == 0
    assert not any(p.exists() for p in stale)
    assert not (out / "figures" / ".samples.png.q.tmp").exists()
    assert all(p.read_bytes() == b"mine" for p in mine)


# ---------------------------------------------------------------------------- one writer


def test_a_second_writer_is_refused_while_the_first_holds_the_lock(tmp_path, idx_dir, capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom numpyvae.app.runfolder import lock\n"
         f"with lock({str(out)!r}):\n    print('locked', flush=True)\n    time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, env=env())
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(["train", *tiny_args(idx_dir), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "is in use" in err and f"process {holder.pid}" in err
        with pytest.raises(RunLockedError, match="in use"):
            fit(VAE(16, hidden_dims=(4,), latent_dim=2), np.zeros((4, 16)), epochs=1,
                progress=False, out_dir=out)
        holder.kill()  # SIGKILL: the kernel releases the lock; nothing stale remains
        holder.wait()
        assert main(["train", *tiny_args(idx_dir, "--no-figures"), "--out", str(out)]) == 0
    finally:
        holder.kill()
        holder.wait()


def test_two_trainings_started_together_one_wins_cleanly(tmp_path, idx_dir):
    out = tmp_path / "run"
    procs = [subprocess.Popen([sys.executable, "-m", "numpyvae.app.cli", "train",
                               *tiny_args(idx_dir, "--no-figures", "--seed", str(seed)),
                               "--out", str(out)],
                              stderr=subprocess.PIPE, text=True, env=env())
             for seed in (1, 2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert "Traceback" not in loser and ("is in use" in loser or "already holds a run" in loser)
    winner_seed = 1 if results[0][0] == 0 else 2
    config = json.loads((out / "config.json").read_text())
    _, state = read_checkpoint(out / CHECKPOINT_FILE)
    assert config["training"]["seed"] == state["hyperparameters"]["seed"] == winner_seed


def test_files_the_run_did_not_write_are_never_overwritten(tmp_path, idx_dir, capsys):
    out = tmp_path / "mine"
    (out / "figures").mkdir(parents=True)
    files = {out / "model.npz": b"my model", out / "metrics.jsonl": b"my metrics",
             out / "figures" / "samples.png": b"my figure"}
    for path, content in files.items():
        path.write_bytes(content)
    assert main(["train", *tiny_args(idx_dir), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "never overwrites" in err and "model.npz" in err
    with pytest.raises(RunFolderError, match="never overwrites"):
        fit(VAE(16, hidden_dims=(4,), latent_dim=2), np.zeros((4, 16)), epochs=1,
            progress=False, out_dir=out)
    assert all(path.read_bytes() == content for path, content in files.items())
    assert sorted(p.name for p in out.iterdir()) == ["figures", "metrics.jsonl", "model.npz"]


# ---------------------------------------------------------------------------- signals


def test_sigterm_saves_says_so_and_resume_finishes(tmp_path, idx_dir):
    out = tmp_path / "run"
    args = [*tiny_args(idx_dir, "--no-figures", "--epochs", "200"), "--out", str(out)]
    args.remove("--quiet")
    proc = subprocess.Popen([sys.executable, "-m", "numpyvae.app.cli", "train", *args],
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=env())
    deadline = time.monotonic() + 120
    while not (out / "metrics.jsonl").is_file() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    assert "SIGTERM received: finishing this step, saving a checkpoint" in err
    assert "continue with: numpyvae train" in err
    _, state = read_checkpoint(out / CHECKPOINT_FILE)
    assert 1 <= state["epoch"] < 200


def test_a_signal_inside_an_import_is_raised_once_the_import_is_over(tmp_path):
    # A KeyboardInterrupt inside the import of a native library leaves it
    # half-loaded; the command's handler waits for the import to finish.
    (tmp_path / "slow_module.py").write_text(
        "import os, signal, time\n"
        "os.kill(os.getpid(), signal.SIGINT)\n"
        "time.sleep(0.2)  # the handler runs here, inside the import\n"
        "finished = True\n")
    script = (
        "import signal, sys\n"
        "from numpyvae import interrupts\n"
        "def on_signal(signum, frame):\n"
        "    interrupts.raise_when_safe(frame, KeyboardInterrupt)\n"
        "signal.signal(signal.SIGINT, on_signal)\n"
        "try:\n"
        "    import slow_module\n"
        "    print('not interrupted')\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted after the import:', sys.modules['slow_module'].finished,\n"
        "          'profiler put back:', sys.getprofile() is None)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env(PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)])),
                         timeout=120)
    assert out.stdout.strip() == ("interrupted after the import: True profiler put back: True"), \
        out.stderr


@pytest.mark.parametrize("delay", [0.01, 0.05, 0.2, 0.5])
def test_ctrl_c_or_sigterm_while_starting_gives_no_traceback(tmp_path, delay):
    """A signal while NumPy and the rest are imported, arguments parsed, data loaded.

    The child runs what the ``numpyvae`` console script runs (``cli.command``)
    and says "ready" once the interpreter has started and the command's
    module is imported (cheap: the package imports its parts on first use);
    what follows is the command's own start-up.
    """
    for sig in (signal.SIGINT, signal.SIGTERM):
        proc = subprocess.Popen(
            [sys.executable, "-c", "import sys\nfrom numpyvae.app.cli import command\n"
             "print('ready', file=sys.stderr, flush=True)\ncommand()", "train",
             "--out", str(tmp_path / f"run-{sig}"), "--epochs", "500"],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env())
        assert proc.stderr.readline() == "ready\n"
        time.sleep(delay)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        assert "Traceback" not in err, err
        assert proc.returncode == 128 + sig, (proc.returncode, err)
        assert err.count("\n") <= 2, err  # "interrupted" or "terminated", perhaps a stop line


# ---------------------------------------------------------------------------- divergence


def test_divergence_keeps_a_good_checkpoint_and_the_remedy_applies(tmp_path, idx_dir, capsys):
    out = tmp_path / "run"
    args = tiny_args(idx_dir, "--no-figures", "--epochs", "3", "--lr", "1e30")
    assert main(["train", *args, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "training stopped" in err
    remedy = f"numpyvae train --out {out} --resume --lr 1e+29"
    assert remedy in err
    if (out / CHECKPOINT_FILE).is_file():
        _, state = read_checkpoint(out / CHECKPOINT_FILE)
        assert all(m["train_loss"] is not None and m["test_loss"] is not None
                   for m in state["history"])
    # the remedy printed is accepted (with a learning rate that works)
    assert main(["train", "--out", str(out), "--resume", "--lr", "1e-3", "--quiet"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["training"]["lr"] == 1e-3
    _, state = read_checkpoint(out / CHECKPOINT_FILE)
    assert state["epoch"] == 3 and all(m["test_loss"] is not None for m in state["history"])


def test_a_resume_may_change_the_learning_rate_and_records_it(tmp_path, idx_dir):
    out = tmp_path / "run"
    assert main(["train", *tiny_args(idx_dir, "--no-figures", "--epochs", "1"),
                 "--out", str(out)]) == 0
    assert main(["train", "--out", str(out), "--resume", "--epochs", "2", "--lr", "5e-4",
                 "--quiet", "--no-figures"]) == 0
    _, state = read_checkpoint(out / CHECKPOINT_FILE)
    assert state["lr_changes"] == [[3, 5e-4]]  # from global step 3 (after epoch 1) on
    assert state["hyperparameters"]["lr"] == 5e-4 and state["epoch"] == 2
    # a resume without --lr keeps the new rate and adds no change
    assert main(["train", "--out", str(out), "--resume", "--epochs", "3", "--quiet",
                 "--no-figures"]) == 0
    _, state = read_checkpoint(out / CHECKPOINT_FILE)
    assert state["lr_changes"] == [[3, 5e-4]] and state["epoch"] == 3


def test_a_non_finite_test_loss_is_divergence(tmp_path, monkeypatch):
    x = (np.random.default_rng(0).random((40, 16)) < 0.5).astype(np.float32)
    trainer = Trainer(VAE(16, hidden_dims=(4,), latent_dim=2), x[:30], x[30:], batch_size=10,
                      progress=False, out_dir=tmp_path)
    calls = []

    def evaluate(*a):
        calls.append(1)
        nan = float("nan") if len(calls) == 2 else 1.0
        return {"test_loss": nan, "test_recon": nan, "test_kl": 0.0}

    monkeypatch.setattr(trainer, "evaluate", evaluate)
    with pytest.raises(NonFiniteLossError, match="test loss became nan at epoch 2.*end of "
                                                 "epoch 1"):
        trainer.fit(3)
    _, state = read_checkpoint(tmp_path / CHECKPOINT_FILE)
    assert state["epoch"] == 1


def test_evaluate_of_a_model_that_overflows_is_an_error(tmp_path):
    x = (np.random.default_rng(0).random((40, 16)) < 0.5).astype(np.float32)
    model = VAE(16, hidden_dims=(4,), latent_dim=2)
    fit(model, x[:30], x[30:], epochs=1, batch_size=10, progress=False, out_dir=tmp_path)
    last_bias = [k for k in model.params if k.startswith("encoder.") and k.endswith(".b")][-1]
    model.params[last_bias][2:] = 1e4  # logvar = 1e4: exp overflows, the KL is infinite
    model.save(tmp_path / "model.npz")
    with pytest.raises(RunFolderError, match=r"model\.npz: the model's test loss is -?(inf|nan)"):
        evaluate_run(tmp_path)


@pytest.mark.parametrize("value", ["inf", "nan", "0", "-1", "abc", "-inf"])
def test_bad_learning_rates_are_refused(value, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--lr", value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--lr" in err
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        Trainer(VAE(4, hidden_dims=(2,), latent_dim=1), np.zeros((2, 4)), lr=float(value)
                if value != "abc" else value, progress=False)


# ---------------------------------------------------------------------------- write errors


def test_a_full_disk_names_the_users_file(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as exc:
        atomic_write(tmp_path / "model.npz", lambda f: f.write(b"x"))
    assert exc.value.filename == str(tmp_path / "model.npz")
    assert "No space left on device" in str(exc.value) and ".tmp" not in str(exc.value)
    assert list(tmp_path.iterdir()) == []


def test_a_write_error_from_the_command_line_is_one_line_naming_the_file(
        tmp_path, idx_dir, capsys, monkeypatch):
    out = tmp_path / "run"
    assert main(["train", *tiny_args(idx_dir, "--no-figures", "--epochs", "1"),
                 "--out", str(out)]) == 0

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    target = tmp_path / "s.png"
    assert main(["sample", str(out), "-n", "4", "--out", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(target) in err and "No space left" in err
    assert ".tmp" not in err


def test_an_unwritable_folder_names_the_file(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as a user who may write anywhere")
        with pytest.raises(PermissionError) as exc:
            atomic_write(folder / "x.npz", lambda f: f.write(b"x"))
        assert exc.value.filename == str(folder / "x.npz")
    finally:
        folder.chmod(0o700)
