"""The first run on a machine: training on NumPy while the Numba kernels compile beside it.

The quick tests drive :class:`BackgroundCompile` with a stand-in child (a
few lines of Python that report or fail at once), so the move between
backends, the messages and the clean-up are tested without compiling. The
slow test runs ``numpyvae train`` with an empty kernel cache, as a first run
does, and then again with the cache it filled.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import numpyvae
from numpyvae.app.background_compile import (
    MODE_VAR,
    BackgroundCompile,
    compile_mode,
    main,
)
from numpyvae.optim import Adam

pytest.importorskip("numba")

ROOT = Path(__file__).resolve().parent.parent


def _model_and_optimizer():
    model = numpyvae.VAE(12, (8,), 3, backend="numba", seed=0)
    return model, Adam(model.params, lr=1e-3, backend=model.backend)


def _child(code):
    return [sys.executable, "-c", textwrap.dedent(code)]


REPORTS = _child("""
    import json
    print("some output of the compiler first")
    print(json.dumps({"compiled": 7, "seconds": 1.5}))
""")


def _wait_for(background, timeout=30):
    deadline = time.monotonic() + timeout
    while not background.switch_when_ready():
        assert time.monotonic() < deadline, "the stand-in child did not end"
        time.sleep(0.02)


def test_training_moves_to_the_fast_backend_once_the_child_has_compiled():
    model, optimizer = _model_and_optimizer()
    said = []
    background = BackgroundCompile(model, optimizer, batch_size=4, optimizer_name="adam",
                                   lr=1e-3, log=said.append, command=REPORTS)
    try:
        assert model.backend.NAME == "numpy" and optimizer.backend.NAME == "numpy"
        assert "training starts now on the NumPy reference" in said[0]
        _wait_for(background)
        assert model.backend.NAME == "numba" and optimizer.backend.NAME == "numba"
        assert all(layer.backend.NAME == "numba" for layer in model.encoder.layers())
        assert said[-1].startswith("compiled 7 numba kernels in 1.5 s: training goes on "
                                   "with the numba backend")
        background.finish()  # nothing left to wait for, and nothing more said
        assert len(said) == 2
    finally:
        background.close()


def test_the_switch_takes_itself_off_the_trainer_once_the_child_has_ended():
    model, optimizer = _model_and_optimizer()
    background = BackgroundCompile(model, optimizer, batch_size=4, optimizer_name="adam",
                                   lr=1e-3, log=lambda text: None, command=REPORTS)

    class Trainer:  # what the training loop gives its step_callback
        global_step = 5
        step_callback = background.switch_when_ready

    trainer = Trainer()
    try:
        deadline = time.monotonic() + 30
        while trainer.step_callback is not None:
            assert time.monotonic() < deadline, "the stand-in child did not end"
            trainer.step_callback(trainer)
            time.sleep(0.02)
        assert model.backend.NAME == "numba" and background.switched_at_step == 5
    finally:
        background.close()


def test_the_child_deletes_the_model_file_it_was_given_once_read(tmp_path, capsys):
    """So that a training process killed with -9 leaves no temporary model behind."""
    model, _ = _model_and_optimizer()
    folder = tmp_path / "numpyvae-compile-test"
    folder.mkdir()
    model.save(folder / "model.npz")
    assert main([str(folder / "model.npz"), "--batch-size", "4", "--optimizer", "adam",
                 "--lr", "0.001", "--delete-model-file"]) == 0
    assert not folder.exists()
    report = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert report["compiled"] >= 0 and report["seconds"] > 0
    kept = tmp_path / "kept.npz"  # without the flag, a model file is only read
    model.save(kept)
    assert main([str(kept), "--batch-size", "4", "--optimizer", "adam", "--lr", "0.001"]) == 0
    assert kept.is_file()


def test_a_failed_compile_leaves_training_on_numpy_and_says_why():
    model, optimizer = _model_and_optimizer()
    said = []
    failing = _child("""
        import sys
        sys.exit("numba could not compile a kernel")
    """)
    background = BackgroundCompile(model, optimizer, batch_size=4, optimizer_name="adam",
                                   lr=1e-3, log=said.append, command=failing)
    try:
        _wait_for(background)
        assert model.backend.NAME == "numpy" and optimizer.backend.NAME == "numpy"
        assert said[-1] == ("compiling the numba kernels failed (numba could not compile a "
                            "kernel): training goes on with the NumPy reference")
    finally:
        background.close()


def test_training_that_ends_first_waits_for_the_kernels():
    model, optimizer = _model_and_optimizer()
    said = []
    slow = _child("""
        import json, time
        time.sleep(1.0)
        print(json.dumps({"compiled": 3, "seconds": 1.0}))
    """)
    background = BackgroundCompile(model, optimizer, batch_size=4, optimizer_name="adam",
                                   lr=1e-3, log=said.append, command=slow)
    try:
        assert not background.switch_when_ready()
        background.finish()
        assert "still compiling" in said[-2] and said[-1] == "compiled 3 numba kernels in 1.0 s"
        assert background.process is None
    finally:
        background.close()


def test_closing_stops_the_child():
    model, optimizer = _model_and_optimizer()
    background = BackgroundCompile(model, optimizer, batch_size=4, optimizer_name="adam",
                                   lr=1e-3, log=lambda text: None,
                                   command=_child("import time; time.sleep(60)"))
    process = background.process
    background.close()
    assert process.poll() is not None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_child_dies_with_a_killed_training_process(tmp_path):
    parent = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        import numpyvae
        from numpyvae.app.background_compile import BackgroundCompile
        from numpyvae.optim import Adam
        model = numpyvae.VAE(12, (8,), 3, backend="numba")
        background = BackgroundCompile(model, Adam(model.params), batch_size=4,
                                       optimizer_name="adam", lr=1e-3, log=lambda t: None,
                                       command=[sys.executable, "-c",
                                                "import time; time.sleep(60)"])
        print(background.process.pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    # its temporary model file goes to tmp_path: the stand-in child does not delete it
    run = subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "TMPDIR": str(tmp_path)})
    assert run.returncode == -signal.SIGKILL, run.stderr
    child = int(run.stdout.split()[0])
    deadline = time.monotonic() + 20
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        try:  # reap it if it became ours; it is not, so only wait
            status = Path(f"/proc/{child}/status").read_text()
        except OSError:
            break
        if "State:\tZ" in status:
            break
        time.sleep(0.1)
    status = Path(f"/proc/{child}/status")
    assert not status.exists() or "State:\tZ" in status.read_text()


def test_a_bad_compile_mode_is_refused_by_name(monkeypatch):
    monkeypatch.setenv(MODE_VAR, "later")
    with pytest.raises(ValueError, match=r"\$NUMPYVAE_COMPILE must be one of background, "
                                         r"wait, got 'later'"):
        compile_mode()
    monkeypatch.setenv(MODE_VAR, "WAIT")
    assert compile_mode() == "wait"
    monkeypatch.delenv(MODE_VAR)
    assert compile_mode() == "background"


def test_the_command_refuses_a_bad_compile_mode_in_one_line(tmp_path):
    env = {**os.environ, MODE_VAR: "later"}
    run = subprocess.run([sys.executable, "-m", "numpyvae", "train", "--out",
                          str(tmp_path / "run"), "--epochs", "1"], capture_output=True,
                         text=True, env=env, cwd=tmp_path, timeout=300)
    assert run.returncode != 0
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "$NUMPYVAE_COMPILE must be one of" in lines[0], run.stderr


def _train(tmp_path, name, cache, *extra):
    env = {k: v for k, v in os.environ.items()
           if k not in (MODE_VAR, "NUMPYVAE_BACKEND", "NUMBA_CACHE_DIR")}
    env["NUMBA_CACHE_DIR"] = str(cache)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "numpyvae", "train", "--data",
                           str(tmp_path / "images.npy"), "--out", str(tmp_path / name),
                           "--batch-size", "16", "--hidden", "32", "--latent-dim", "4",
                           "--no-figures", *extra], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=900)


def test_a_first_run_trains_at_once_and_the_next_one_loads_the_kernels(tmp_path):
    np.save(tmp_path / "images.npy",
            (np.random.default_rng(0).random((200, 8, 8)) > 0.5).astype(np.uint8) * 255)
    cache = tmp_path / "kernel-cache"  # empty: nothing compiled yet, as on a fresh install
    first = _train(tmp_path, "first", cache, "--epochs", "2")
    assert first.returncode == 0, first.stderr
    said = first.stderr
    assert "compiling the numba kernels in the background" in said
    assert said.index("compiling the numba kernels in the background") < \
        said.index("epoch 1/2")  # training did not wait for the compiler
    assert "numba kernels in" in said  # the child's report: at a step, or at the end
    metrics = [json.loads(line) for line in
               (tmp_path / "first" / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2]
    assert np.isfinite(metrics[-1]["test_loss"])

    second = _train(tmp_path, "second", cache, "--epochs", "1")
    assert second.returncode == 0, second.stderr
    assert "compil" not in second.stderr  # loaded from the cache, silently
    config = json.loads((tmp_path / "second" / "config.json").read_text())
    assert config["backend"] == "numba"
