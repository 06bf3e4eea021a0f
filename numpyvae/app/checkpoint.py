"""A training run's checkpoint: what it holds, writing it and its copies, resuming from it.

``checkpoint.npz`` holds everything a resume needs, in one file: the model's
parameters (``param/NAME``), the optimizer's state (``optim/NAME``) and the
trainer's state (:func:`numpyvae.app.train.Trainer`'s counters, the epoch
generator's state when a run stopped mid-epoch, the partial sums of that
epoch, the metrics so far, the settings and the model's configuration).
``model.npz`` and ``metrics.jsonl`` are copies of what it holds, written
after it: a resume rewrites them from it, so a kill between any two writes
loses nothing.

:func:`read` checks, before it changes anything, that a checkpoint continues
the run being resumed: the same settings (all but the learning rate), the
same model, counters that agree with each other and with the data, an
optimizer state of finite numbers at the same step. Any other checkpoint
raises :class:`~numpyvae.app.runfolder.RunFolderError` naming the file and
the difference.

What does not live here: the files' format, atomic writing and the lock
(:mod:`numpyvae.app.runfolder`), the training loop (:mod:`numpyvae.app.train`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from . import runfolder
from .runfolder import MODEL_FILE, RUN_FORMAT, RunFolderError

__all__ = ["description", "read", "require_same", "write", "write_config", "write_copies"]


def write_config(out_dir, model, training: dict, extra: dict, test_data: bool) -> None:
    """config.json: the model's configuration, the training settings and ``extra`` entries.

    ``test_data``: whether the run folder keeps its own test set
    (:data:`numpyvae.app.runfolder.TEST_DATA_FILE`).
    """
    config = {"format": RUN_FORMAT, "model": model.config(), "training": training, **extra}
    if config.get("dataset") is None:  # arrays from Python: how to draw them, where they are
        config.setdefault("image_shape", guess_image_shape(model.input_dim))
        if test_data:
            config.setdefault("test_data", runfolder.TEST_DATA_FILE)
    runfolder.write_config(out_dir, config)


def write(out_dir, model, optimizer, state: dict) -> None:
    """Write checkpoint.npz, then its copies model.npz and metrics.jsonl (each atomically).

    ``state``: the trainer's state, a JSON-able dict (``history`` is the metrics).
    """
    arrays = {f"param/{k}": v for k, v in model.params.items()}
    arrays.update({f"optim/{k}": v for k, v in optimizer.state_dict().items()})
    runfolder.write_checkpoint(out_dir, arrays, state)
    write_copies(out_dir, model, state["history"])


def write_copies(out_dir, model, history) -> None:
    """model.npz and metrics.jsonl: what the checkpoint holds, in the files users read."""
    model.save(Path(out_dir) / MODEL_FILE)
    runfolder.write_metrics(out_dir, history)


def description(epoch: int, step_in_epoch: int) -> str:
    """Where a checkpoint stands, in words: "end of epoch 3", "epoch 4, step 17"."""
    return (f"end of epoch {epoch}" if step_in_epoch == 0 else
            f"epoch {epoch + 1}, step {step_in_epoch}")


def read(path, model, optimizer, *, hyperparameters: dict, n_train: int, batch_size: int,
         metric_keys=()) -> dict:
    """Check the checkpoint at ``path`` against this run, then load its weights and optimizer state.

    Everything is checked before anything is changed: the file
    (:func:`numpyvae.app.runfolder.read_checkpoint`), that it continues this
    configuration (``hyperparameters`` and the model's, the learning rate
    aside), and that its counters agree with each other and with the data
    (``n_train`` examples in batches of ``batch_size``). Returns the trainer's
    state; the caller restores its counters from it. Raises
    :class:`RunFolderError` naming the file and the problem (the model's
    parameters are restored if loading fails half way).
    """
    path = Path(path)
    arrays, state = runfolder.read_checkpoint(path, metric_keys)
    saved = state["hyperparameters"]
    require_same(path, "training configuration", {**saved, "lr": None},
                 {**hyperparameters, "lr": None})
    require_same(path, "model configuration", state["model"], model.config())
    n_steps = math.ceil(n_train / batch_size)
    epoch, step, global_step = state["epoch"], state["step_in_epoch"], state["global_step"]
    if step >= n_steps or global_step != epoch * n_steps + step:
        raise RunFolderError(
            f"{path}: the trainer state's counters disagree (epoch {epoch}, step {step} "
            f"of {n_steps}, global step {global_step}; expected global step "
            f"{epoch * n_steps + step})")
    if state["partial"]["n"] != min(step * batch_size, n_train):
        raise RunFolderError(f"{path}: the trainer state's partial epoch counts "
                             f"{state['partial']['n']} examples after {step} steps")
    unknown = sorted(k for k in arrays if not k.startswith(("param/", "optim/")))
    if unknown:
        raise RunFolderError(f"{path}: unexpected entries {unknown[:5]}")
    params = {k.removeprefix("param/"): v for k, v in arrays.items() if k.startswith("param/")}
    optim = {k.removeprefix("optim/"): v for k, v in arrays.items() if k.startswith("optim/")}
    for name, a in optim.items():
        if a.dtype.kind not in "biuf" or not np.all(np.isfinite(a)):
            raise RunFolderError(f"{path}: optimizer state {name!r} is not finite numbers")
    if optim.get("step", np.zeros(2)).shape != () or int(optim["step"]) != global_step:
        raise RunFolderError(f"{path}: the optimizer's step count does not match the "
                             f"global step {global_step}")
    before = {k: v.copy() for k, v in model.params.items()}
    try:
        model.load_weights(params, source=str(path))
        optimizer.load_state_dict(optim)
    except (ValueError, TypeError) as exc:
        for k, v in before.items():
            model.params[k][...] = v
        raise RunFolderError(f"{path}: {exc}" if str(path) not in str(exc) else str(exc)) \
            from exc
    return state


def require_same(path, what, saved, current):
    """Raise :class:`RunFolderError` listing every key whose value differs between two dicts."""
    diff = [f"{k}: {saved.get(k)!r} in the checkpoint, {current.get(k)!r} now"
            for k in sorted(set(saved) | set(current)) if saved.get(k) != current.get(k)]
    if diff:
        raise RunFolderError(f"{path}: cannot resume, the {what} differs ({'; '.join(diff)})")


def guess_image_shape(input_dim: int) -> list:
    """How to draw an example of ``input_dim`` values: a square if it is one, else a row."""
    side = math.isqrt(input_dim)
    return [side, side] if side * side == input_dim else [1, input_dim]
