"""The run folder: its files, their format, reading and writing them, and the errors.

A run folder is what training keeps on disk (:mod:`numpyvae.app.train` writes it,
the jobs of :mod:`numpyvae.app.run` read it)::

    config.json      the model and training configuration, and where the data came from
    model.npz        the latest weights (numpyvae.load reads it)
    checkpoint.npz   weights, optimizer state, step counters, RNG state and the
                     metrics so far: everything a resume needs, in one file
    metrics.jsonl    one JSON object per finished epoch
    test_data.npz    the test set, when it has no name to be found again by
                     (a run trained from Python on arrays)
    figures/         PNGs
    .lock            held while a process trains in the folder

Rules that keep a user's work safe:

* **One writer.** Training holds an exclusive lock (:func:`lock`) on
  ``.lock`` for as long as it writes; a second process is refused with
  :class:`RunLockedError`. The operating system releases the lock when the
  process ends, however it ends, so a killed run never blocks the next one.
* **The checkpoint is the truth.** Every file is written atomically
  (:mod:`numpyvae.fileio`), the checkpoint first; ``model.npz`` and
  ``metrics.jsonl`` are copies of what it holds, so a resume rewrites them
  from it, and a kill between any two writes loses nothing.
* **Never overwrite what the run did not write.** A new run only starts in
  a folder that is absent or empty (:func:`check_new`).
* **Every file is checked when read.** Configs, metrics and checkpoints are
  validated here, field by field; a damaged or edited file raises
  :class:`RunFolderError` (a ``ValueError``) naming the file and the field.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
from pathlib import Path

import numpy as np

from ..fileio import atomic_write, atomic_write_json, atomic_write_text, stale_temp_files
from .safenpz import read_npz

CONFIG_FILE = "config.json"
MODEL_FILE = "model.npz"
CHECKPOINT_FILE = "checkpoint.npz"
METRICS_FILE = "metrics.jsonl"
TEST_DATA_FILE = "test_data.npz"
FIGURES_DIR = "figures"
LOCK_FILE = ".lock"
#: The version of the folder's layout, recorded in config.json and the checkpoint.
RUN_FORMAT = 1
#: The files training writes at the top of a run folder.
RUN_FILES = (CONFIG_FILE, MODEL_FILE, CHECKPOINT_FILE, METRICS_FILE, TEST_DATA_FILE)
#: The checkpoint's entry holding the trainer's state as JSON.
TRAINER_ENTRY = "trainer"


class RunFolderError(ValueError):
    """A run folder is inconsistent with the request (already used, different config, corrupt)."""


class RunNotFoundError(FileNotFoundError):
    """A run folder (or a file a run folder should hold) does not exist."""


class RunLockedError(RunFolderError):
    """Another process is training in this run folder."""


# ---------------------------------------------------------------------------- the lock

_held: dict[Path, list] = {}  # folder -> [open lock file, depth], for this process
_held_guard = threading.Lock()


@contextlib.contextmanager
def lock(run_dir):
    """Hold the run folder's writer lock (creating the folder); re-entrant in one process.

    Raises :class:`RunLockedError` at once if another process holds it. The
    lock is an OS file lock (``flock``), released by the kernel when the
    holder exits or is killed, so it is never stale. On taking it, the
    temporary files of writes that were killed are removed
    (:func:`clean_temp_files`): no other writer can be using them. A folder
    created here that is still empty when the lock is released (the job
    failed before writing anything) is removed again.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(f"{run_dir} is a file, not a run folder")
    created = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot create the run folder: {exc.strerror}",
                      str(run_dir)) from exc
    key = run_dir.resolve()
    with _held_guard:
        if key in _held:
            _held[key][1] += 1
            entry = None
        else:
            entry = _acquire(run_dir)
            _held[key] = [entry, 1]
    try:
        if entry is not None:
            clean_temp_files(run_dir)
        yield run_dir
    finally:
        with _held_guard:
            _held[key][1] -= 1
            if _held[key][1] == 0:
                _release(_held.pop(key)[0])
                if created:
                    _remove_if_empty(run_dir)


def _acquire(run_dir: Path):
    path = (run_dir / LOCK_FILE).absolute()  # released by this name, whatever the cwd is then
    for _ in range(100):
        try:
            f = open(path, "a+")
        except OSError as exc:
            raise OSError(exc.errno, f"cannot create the lock file: {exc.strerror}",
                          str(path)) from exc
        try:
            _os_lock(f)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise RunLockedError(
                f"{run_dir} is in use: {holder} is training in it; wait for it to finish (or "
                f"stop it), or choose another output folder") from None
        if _same_file(f, path):
            break
        f.close()  # the holder before us removed the file we locked: lock the new one
    f.seek(0)
    f.truncate()
    f.write(f"process {os.getpid()}")
    f.flush()
    return f


def _same_file(f, path: Path) -> bool:
    """Whether the open file ``f`` is still the file at ``path`` (not removed or replaced)."""
    try:
        return os.path.samestat(os.fstat(f.fileno()), os.stat(path))
    except OSError:
        return False


def _remove_if_empty(run_dir: Path) -> None:
    with contextlib.suppress(OSError):
        if not any(run_dir.iterdir()):
            run_dir.rmdir()


def _release(f) -> None:
    """Remove the lock file while holding its lock, then release it: a finished run keeps no
    ``.lock``. (A process that opened the file meanwhile sees it gone and locks a new one.)"""
    with contextlib.suppress(OSError):
        f.seek(0)
        f.truncate()
        f.flush()
        if _same_file(f, Path(f.name)):
            os.unlink(f.name)
    f.close()  # closing the file releases the OS lock


try:
    import fcntl

    def _os_lock(f):
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)

except ImportError:  # pragma: no cover - Windows
    import msvcrt

    def _os_lock(f):
        f.seek(0)
        msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)


def clean_temp_files(run_dir) -> list[Path]:
    """Remove what killed atomic writes of the run's files left behind; return those paths."""
    run_dir = Path(run_dir)
    stale = [p for name in RUN_FILES for p in stale_temp_files(run_dir / name)]
    figures = run_dir / FIGURES_DIR
    if figures.is_dir():
        stale += sorted(figures.glob(".*.png.*.tmp"))
    for path in stale:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return stale


# ---------------------------------------------------------------------------- a new run


def check_new(run_dir) -> None:
    """Refuse to start a new run in ``run_dir`` unless it is absent or empty.

    Empty means: nothing but the lock file and temporary files of the run's
    own killed writes. A folder holding ``config.json`` holds a run (resume
    it); anything else belongs to someone else and is never overwritten.
    """
    run_dir = Path(run_dir)
    if not run_dir.exists():
        return
    if not run_dir.is_dir():
        raise RunFolderError(f"{run_dir} is a file, not a run folder")
    if (run_dir / CONFIG_FILE).exists() or (run_dir / CHECKPOINT_FILE).exists():
        raise RunFolderError(f"{run_dir} already holds a run; continue it (numpyvae train "
                             f"--out {run_dir} --resume; from Python, fit(..., resume=True)), "
                             f"or choose another output folder")
    ours = {LOCK_FILE} | {p.name for name in RUN_FILES for p in stale_temp_files(run_dir / name)}
    foreign = sorted(p.name + ("/" if p.is_dir() else "") for p in run_dir.iterdir()
                     if p.name not in ours)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5
                                          else "")
        raise RunFolderError(f"{run_dir} is not empty and holds no numpyvae run ({shown}); "
                             f"numpyvae never overwrites files it did not write: choose a new "
                             f"or empty output folder")


# ---------------------------------------------------------------------------- config.json

# Fields of config.json that jobs read, and what each must be.
_CONFIG_FIELDS = {
    "dataset": ((str, type(None)), "a dataset name or null"),
    "dataset_seed": ((int,), "an integer"),
    "data_dir": ((str, type(None)), "a folder name or null"),
    "data_source": ((str, type(None)), "a text or null"),
    "backend": ((str, type(None)), "a backend name or null"),
    "test_data": ((str,), "the name of the test data file"),
}
_TRAINING_FIELDS = {
    "batch_size": "int+", "epochs": "int+", "n_train": "int+", "seed": "int0",
    "kl_warmup": "int0", "lr": "number+", "beta": "number0", "optimizer": "str",
    "binarize": "str", "iw_train": "int+?",
}
_MODEL_FIELDS = {
    "kind": "str", "input_dim": "int+", "latent_dim": "int+", "hidden_dims": "ints+",
    "likelihood": "str|spec", "activation": "str", "dtype": "str",
}
#: The record of your own data (``numpyvae train --data``): where it was, its split, its hash.
_DATA_FIELDS = {
    "path": "str", "test_fraction": "fraction?", "split_seed": "int0", "sha256": "sha256?",
    "n_train": "int0", "n_test": "int0", "example_shape": "ints+",
}
_KIND_TEXT = {"int+": "a positive integer", "int0": "an integer >= 0",
              "number+": "a finite number > 0", "number0": "a finite number >= 0",
              "str": "a text", "ints+": "a list of positive integers",
              "int+?": "a positive integer or null",
              "fraction?": "a number between 0 and 1 (exclusive) or null",
              "sha256?": "a SHA-256 (64 hexadecimal digits) or null",
              "str|spec": 'a text or a layer spec such as {"type": "Bernoulli"}'}


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _fits(value, kind: str) -> bool:
    if kind == "int+":
        return _is_int(value) and value > 0
    if kind == "int+?":
        return value is None or _fits(value, "int+")
    if kind == "int0":
        return _is_int(value) and value >= 0
    if kind in ("number+", "number0"):
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
              and math.isfinite(value))
        return ok and (value > 0 if kind == "number+" else value >= 0)
    if kind == "str":
        return isinstance(value, str)
    if kind == "fraction?":
        return value is None or (_fits(value, "number+") and value < 1)
    if kind == "sha256?":
        return value is None or (isinstance(value, str) and len(value) == 64
                                 and all(c in "0123456789abcdef" for c in value))
    if kind == "str|spec":  # a network-built model records its likelihood as a spec
        return isinstance(value, str) or (isinstance(value, dict)
                                          and isinstance(value.get("type"), str))
    if kind == "ints+":
        return isinstance(value, list) and all(_fits(v, "int+") for v in value)
    raise AssertionError(kind)


def _check_fields(path, where, obj, fields) -> None:
    for key, kind in fields.items():
        if key in obj and not _fits(obj[key], kind):
            raise RunFolderError(f"{path}: {where}{key!r} is {_short(obj[key])}, expected "
                                 f"{_KIND_TEXT[kind]}")


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def validate_config(config, path) -> dict:
    """Check the structure and the types of a run's config; return it."""
    if not isinstance(config, dict):
        raise RunFolderError(f"{path}: not a numpyvae run configuration (a JSON object "
                             f"expected, found {type(config).__name__})")
    if config.get("format") != RUN_FORMAT:
        raise RunFolderError(f"{path}: not a numpyvae run configuration (format "
                             f"{_short(config.get('format'))}, expected {RUN_FORMAT})")
    for key in ("model", "training"):
        if not isinstance(config.get(key), dict):
            raise RunFolderError(f"{path}: {key!r} is {_short(config.get(key))}, expected a "
                                 f"JSON object")
    for key, (types, text) in _CONFIG_FIELDS.items():
        value = config.get(key)
        if key in config and not (isinstance(value, types) and not isinstance(value, bool)):
            raise RunFolderError(f"{path}: {key!r} is {_short(value)}, expected {text}")
    shape = config.get("image_shape")
    if "image_shape" in config and not (
            isinstance(shape, list) and 1 <= len(shape) <= 4 and _fits(shape, "ints+")):
        raise RunFolderError(f"{path}: 'image_shape' is {_short(shape)}, expected a list of "
                             f"1 to 4 positive integers such as [28, 28]")
    names = config.get("label_names")
    if "label_names" in config and not (isinstance(names, list)
                                        and all(isinstance(n, str) for n in names)):
        raise RunFolderError(f"{path}: 'label_names' is {_short(names)}, expected a list of "
                             f"class names (text)")
    _check_fields(path, "training: ", config["training"], _TRAINING_FIELDS)
    _check_fields(path, "model: ", config["model"], _MODEL_FIELDS)
    _check_data_record(path, config.get("data"))
    return config


def _check_data_record(path, record) -> None:
    """The ``data`` record of a run trained on your own data: null, or an object with a path."""
    if record is None:
        return
    if not isinstance(record, dict):
        raise RunFolderError(f"{path}: 'data' is {_short(record)}, expected null or a JSON "
                             f"object such as {{\"path\": ..., \"sha256\": ...}}")
    if not isinstance(record.get("path"), str) or not record["path"]:
        raise RunFolderError(f"{path}: data: 'path' is {_short(record.get('path'))}, expected "
                             f"the path of the data file or folder")
    _check_fields(path, "data: ", record, _DATA_FIELDS)


def _enclosing_run(path: Path) -> Path | None:
    """The run folder that ``path`` is, or lies in (its model file, its figures/), or None."""
    for folder in (path, path.parent, path.parent.parent):
        if folder.is_dir() and (folder / CONFIG_FILE).is_file():
            return folder
    return None


def read_config(run_dir) -> dict:
    """The config.json of a run folder, validated, with clear errors."""
    run_dir = Path(run_dir)
    run = _enclosing_run(run_dir)
    if run is not None and run != run_dir:  # a file or folder inside a run: name the run
        raise RunNotFoundError(f"{run_dir} is inside the run folder {run}; give the run "
                               f"folder itself: {run}")
    if run_dir.is_file():
        raise RunNotFoundError(f"{run_dir} is a file; give a run folder (the folder "
                               f"`numpyvae train --out RUN_DIR` wrote, holding {CONFIG_FILE})")
    if not run_dir.is_dir():
        raise RunNotFoundError(f"run folder not found: {run_dir}")
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise RunNotFoundError(f"{run_dir} is not a run folder (no {CONFIG_FILE}); a run "
                               f"folder is what `numpyvae train --out RUN_DIR` writes")
    try:
        config = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise RunFolderError(f"{path}: cannot read the file ({exc.strerror or exc})") from exc
    except (ValueError, RecursionError) as exc:
        raise RunFolderError(f"{path}: not readable JSON ({_first_line(exc)})") from None
    return validate_config(config, path)


def write_config(run_dir, config: dict) -> Path:
    return atomic_write_json(Path(run_dir) / CONFIG_FILE, config)


def _first_line(exc) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]


# ---------------------------------------------------------------------------- metrics


def validate_metrics(row, where, required=()) -> dict:
    """One epoch's metrics: a JSON object, a positive integer ``epoch``, numbers or nulls.

    A metric may also be a list of them (``kl_per_dim``: one per latent dimension).
    """
    if not isinstance(row, dict):
        raise RunFolderError(f"{where}: expected a JSON object of metrics, found "
                             f"{_short(row)}")
    if not _fits(row.get("epoch"), "int+"):
        raise RunFolderError(f"{where}: 'epoch' is {_short(row.get('epoch'))}, expected a "
                             f"positive integer")
    missing = [k for k in required if k not in row]
    if missing:
        raise RunFolderError(f"{where}: missing the metric(s) {', '.join(missing)}")
    for key, value in row.items():
        values = value if isinstance(value, list) else [value]
        if not all(v is None or _finite_number(v) for v in values):
            raise RunFolderError(f"{where}: metric {key!r} is {_short(value)}, expected a "
                                 f"finite number, a list of them, or null")
    return row


def _finite_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def read_metrics(run_dir, required=()) -> list[dict]:
    """The per-epoch metrics of a run folder (empty if none were written yet), validated."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise RunFolderError(f"{path}: cannot read the file ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise RunFolderError(f"{path}: not UTF-8 text ({exc.reason})") from None
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (ValueError, RecursionError) as exc:
            raise RunFolderError(f"{path}, line {i}: not valid JSON ({_first_line(exc)})") \
                from None
        rows.append(validate_metrics(row, f"{path}, line {i}", required))
    _check_epochs(rows, path)
    return rows


def _check_epochs(rows, where) -> None:
    epochs = [row["epoch"] for row in rows]
    if epochs != list(range(1, len(rows) + 1)):
        raise RunFolderError(f"{where}: the epochs are {_short(epochs)}, expected 1, 2, 3, ... "
                             f"in order")


def write_metrics(run_dir, history) -> Path:
    return atomic_write_text(Path(run_dir) / METRICS_FILE,
                             "".join(json.dumps(m) + "\n" for m in history))


# ---------------------------------------------------------------------------- the checkpoint

_STATE_FIELDS = {"epoch": "int0", "step_in_epoch": "int0", "global_step": "int0"}
_PARTIAL_FIELDS = {"recon": "number", "kl": "number", "objective": "number", "n": "int0",
                   "seconds": "number"}


def write_checkpoint(run_dir, arrays: dict, state: dict) -> Path:
    """Write checkpoint.npz: the arrays, and ``state`` as JSON under :data:`TRAINER_ENTRY`."""
    arrays = dict(arrays)
    arrays[TRAINER_ENTRY] = np.frombuffer(json.dumps(state).encode(), np.uint8)
    return atomic_write(Path(run_dir) / CHECKPOINT_FILE, lambda f: np.savez(f, **arrays))


def read_checkpoint(path, metric_keys=()) -> tuple[dict, dict]:
    """The arrays and the validated trainer state of a checkpoint.

    The state's structure and types are checked here (:func:`validate_state`);
    whether it fits the model and the data is the trainer's check.
    """
    path = Path(path)
    arrays = read_npz(path, RunFolderError, "checkpoint")
    if TRAINER_ENTRY not in arrays:
        raise RunFolderError(f"{path}: not a numpyvae checkpoint (no {TRAINER_ENTRY!r} entry)")
    raw = arrays.pop(TRAINER_ENTRY)
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise RunFolderError(f"{path}: the trainer state is {raw.dtype} of shape {raw.shape}, "
                             f"expected JSON text (uint8 bytes)")
    try:
        state = json.loads(raw.tobytes().decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise RunFolderError(f"{path}: the trainer state is not valid JSON "
                             f"({_first_line(exc)})") from None
    return arrays, validate_state(state, path, metric_keys)


def validate_state(state, path, metric_keys=()) -> dict:
    """Check the structure and types of a checkpoint's trainer state; return it."""
    where = f"{path}: trainer state"
    if not isinstance(state, dict):
        raise RunFolderError(f"{where} is {_short(state)}, expected a JSON object")
    if state.get("format") != RUN_FORMAT:
        raise RunFolderError(f"{path}: checkpoint format {_short(state.get('format'))}, "
                             f"expected {RUN_FORMAT}")
    missing = [k for k in ("epoch", "step_in_epoch", "global_step", "partial", "rng_state",
                           "history", "hyperparameters", "model") if k not in state]
    if missing:
        raise RunFolderError(f"{where} lacks {', '.join(map(repr, missing))}")
    _check_fields(path, "trainer state: ", state, _STATE_FIELDS)
    for key in ("partial", "hyperparameters", "model"):
        if not isinstance(state[key], dict):
            raise RunFolderError(f"{where}: {key!r} is {_short(state[key])}, expected a JSON "
                                 f"object")
    partial = state["partial"]
    for key, kind in _PARTIAL_FIELDS.items():
        value = partial.get(key)
        ok = _fits(value, kind) if kind != "number" else (
            isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))
        if not ok:
            raise RunFolderError(f"{where}: 'partial' {key!r} is {_short(value)}, expected "
                                 f"{'a finite number' if kind == 'number' else _KIND_TEXT[kind]}")
    if not isinstance(state["history"], list):
        raise RunFolderError(f"{where}: 'history' is {_short(state['history'])}, expected a "
                             f"list of metrics")
    for i, row in enumerate(state["history"]):
        validate_metrics(row, f"{where}, history[{i}]", metric_keys)
    _check_epochs(state["history"], f"{where}, history")
    if len(state["history"]) != state["epoch"]:
        raise RunFolderError(f"{where}: 'epoch' is {state['epoch']} but the history holds "
                             f"{len(state['history'])} epochs")
    rng = state["rng_state"]
    if state["step_in_epoch"] > 0:
        if not isinstance(rng, dict):
            raise RunFolderError(f"{where}: stopped mid-epoch (step {state['step_in_epoch']}) "
                                 f"but 'rng_state' is {_short(rng)}, expected the generator's "
                                 f"state")
        try:
            np.random.default_rng().bit_generator.state = rng
        except (TypeError, ValueError, KeyError, OverflowError) as exc:
            raise RunFolderError(f"{where}: 'rng_state' is not a valid generator state "
                                 f"({_first_line(exc)})") from None
    elif rng is not None:
        raise RunFolderError(f"{where}: 'rng_state' is set at the start of an epoch, "
                             f"expected null")
    lr_changes = state.get("lr_changes", [])
    if not (isinstance(lr_changes, list) and all(
            isinstance(c, list) and len(c) == 2 and _fits(c[0], "int0")
            and _fits(c[1], "number+") for c in lr_changes)):
        raise RunFolderError(f"{where}: 'lr_changes' is {_short(lr_changes)}, expected a list "
                             f"of [step, learning rate] pairs")
    return state


# ---------------------------------------------------------------------------- test data


def write_test_data(run_dir, x_test, y_test=None) -> Path:
    """Keep a run's test set in the folder (compressed), for runs without a named dataset."""
    arrays = {"x_test": np.asarray(x_test)}
    if y_test is not None:
        arrays["y_test"] = np.asarray(y_test)
    return atomic_write(Path(run_dir) / TEST_DATA_FILE,
                        lambda f: np.savez_compressed(f, **arrays))


def read_test_data(run_dir) -> tuple[np.ndarray, np.ndarray | None]:
    """``(x_test, y_test or None)`` kept by :func:`write_test_data`, validated."""
    path = Path(run_dir) / TEST_DATA_FILE
    if not path.is_file():
        raise RunNotFoundError(f"{run_dir}: holds no test data ({TEST_DATA_FILE} is missing)")
    arrays = read_npz(path, RunFolderError, "test data file")
    x, y = arrays.get("x_test"), arrays.get("y_test")
    if x is None or x.ndim != 2 or len(x) == 0 or x.dtype.kind not in "fiu":
        raise RunFolderError(f"{path}: expected 'x_test', a non-empty 2-d array of numbers")
    if not np.all(np.isfinite(x)):
        raise RunFolderError(f"{path}: 'x_test' holds NaN or infinity")
    if y is not None and (y.shape != (len(x),) or y.dtype.kind not in "iu"):
        raise RunFolderError(f"{path}: 'y_test' must be {len(x)} integer labels")
    return x, y
