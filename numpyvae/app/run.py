"""Run folders: the jobs of the ``numpyvae`` command.

Train, evaluate, sample, reconstruct, interpolate, inspect, redraw figures of a run and
export its latent-space explorer.

A run folder holds ``config.json``, ``model.npz``, ``checkpoint.npz``,
``metrics.jsonl`` and ``figures/`` (its files, their format and errors are
:mod:`numpyvae.app.runfolder`'s). This module turns command-line options into a
run and reads a run back. Argument parsing is :mod:`numpyvae.app.cli`'s job;
the options' defaults, checks and the model they build are
:mod:`numpyvae.app.options`'; the training loop is :mod:`numpyvae.app.train`'s;
the figures are :mod:`numpyvae.app.figures`'. A folder written by
:func:`numpyvae.app.train.fit` from Python works here too: its test set is kept
in the folder.
"""

from __future__ import annotations

import difflib
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import evaluate, latent
from ..backend import ENV_VAR as BACKEND_VAR
from ..backend import get_backend
from ..fast.warmup import compile_kernels, terminal_status, warmup_step
from ..inspector import inspect
from ..model import MODEL_KINDS, VAE, Autoencoder
from ..modelfile import ModelFileError
from ..optim import OPTIMIZERS
from . import plots, runfolder
from .background_compile import BackgroundCompile, compile_mode, kernels_cached
from .budget import check_decoded, check_run_sizes
from .data import DATASETS, DataNotFoundError, Dataset, load_data, load_dataset
from .data.datasets import LABEL_NAMES
from .data.local import fingerprint
from .explorer import check_page_name, write_explorer
from .figures import (
    class_names,
    figure_path,
    is_conditional,
    labels_at,
    labels_keyword,
    make_figures,
    write_interpolation,
    write_reconstructions,
    write_samples,
)
from .modelfile import load
from .options import (
    DEFAULT_EPOCHS,
    DEFAULT_EPOCHS_OWN_DATA,
    TRAIN_DEFAULTS,
    build_model,
    normalise_options,
    options_from_config,
)
from .runfolder import (
    FIGURES_DIR,
    MODEL_FILE,
    RunFolderError,
    RunNotFoundError,
    read_config,
)
from .train import (
    METRIC_KEYS,
    STREAM_EVAL,
    Trainer,
    eval_inputs,
    positive_int,
)

# ---------------------------------------------------------------------------- run folders

#: Said wherever the losses of a Gaussian decoder are printed.
GAUSSIAN_NOTE = ("a Gaussian decoder's -log p(x|z) is a negative log *density*, so its losses "
                 "(and the -ELBO) can be negative; compare them between runs, not with zero")

#: Said when the test set holds a single example.
SMALL_TEST_NOTE = ("the test set holds one example: the active units, the latent figures and "
                   "the interpolations need two or more and are skipped")

#: The seed the embedded ``shapes`` dataset is drawn with (the same for every run).
DATASET_SEED = 0


@dataclass
class Run:
    """A run folder, loaded: its configuration, model and metrics."""

    run_dir: Path
    config: dict
    model: object
    history: list = field(default_factory=list)

    @property
    def options(self) -> dict:
        return options_from_config(self.config)


@dataclass
class RunResult:
    """What :func:`train_run` returns."""

    run_dir: Path
    history: list
    interrupted: bool
    figures: list = field(default_factory=list)
    config: dict = field(default_factory=dict)
    stop_signal: int | None = None


def default_run_dir(dataset: str) -> Path:
    """``runs/<dataset>-<date>-<time>`` in the current folder."""
    return Path("runs") / f"{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"


def read_metrics(run_dir) -> list[dict]:
    """The per-epoch metrics of a run folder (empty if none were written yet), validated."""
    return runfolder.read_metrics(run_dir, METRIC_KEYS)


def load_run(run_dir, backend=None) -> Run:
    """Load a run folder: its config, its model (model.npz) and its metrics."""
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    model_path = run_dir / MODEL_FILE
    if not model_path.is_file():
        raise RunNotFoundError(f"{run_dir} holds no trained model yet ({MODEL_FILE} is missing)")
    try:
        model = load(model_path, backend=backend)
    except ModelFileError as exc:
        raise RunFolderError(str(exc)) from exc
    return Run(run_dir, config, model, read_metrics(run_dir))


def run_dataset(config: dict, data_dir=None, download=True, progress=True, data=None,
                run_dir=None):
    """The dataset a run was trained on, found again (``data_dir`` first, then where it was).

    For your own data (``--data``), the file or folder recorded in config.json
    is read again with the same held-out split, or ``data`` if given (the data
    moved); its fingerprint must match the one recorded at training. A run
    trained from Python on arrays has no dataset name; its test set is read
    from the run folder (``test_data.npz``), and the training split of the
    returned :class:`~numpyvae.app.data.Dataset` is empty.
    """
    if config.get("data"):
        return _reopen_own_data(config["data"], data)
    if data is not None:
        raise ValueError(f"this run was trained on the {config.get('dataset')} dataset, not on "
                         f"a data file; use --data-dir to say where its files are")
    name = config.get("dataset")
    if name is None:
        if run_dir is None or "test_data" not in config:
            raise RunFolderError(
                f"{run_dir or 'this run'}: trained without a test set (no 'dataset' and no "
                f"test data in {runfolder.CONFIG_FILE}), so there are no test images to use; "
                f"pass x_test to fit() to keep them")
        x, y = runfolder.read_test_data(run_dir)
        labelled = y is not None
        y = y.astype(np.int64) if labelled else np.zeros(len(x), np.int64)
        shape = tuple(config.get("image_shape") or (1, x.shape[1]))
        if int(np.prod(shape)) != x.shape[1]:
            raise RunFolderError(f"{run_dir}: image_shape {list(shape)} does not fit the "
                                 f"{x.shape[1]} values of each test example")
        empty = np.zeros((0, x.shape[1]), x.dtype)
        return Dataset("test data of the run", empty, np.zeros(0, np.int64), x, y, shape,
                       label_names=[] if labelled else ["test examples"],
                       source=str(Path(run_dir) / runfolder.TEST_DATA_FILE))
    if data_dir is None and config.get("data_dir"):
        recorded = Path(config["data_dir"])
        data_dir = recorded if recorded.is_dir() else None
    return load_dataset(name, data_dir, download=download,
                        seed=config.get("dataset_seed", DATASET_SEED), progress=progress)


def _reopen_own_data(record: dict, data=None):
    path = Path(data).expanduser() if data is not None else Path(record["path"])
    if not (path.exists() or path.is_symlink()):
        if data is not None:  # the new place given is wrong, not the recorded one
            raise DataNotFoundError(f"data not found: {path} (--data) does not exist")
        raise DataNotFoundError(f"the data this run was trained on, {path}, no longer exists; "
                                f"pass its new place with --data FILE")
    found = fingerprint(path)
    if record.get("sha256") and found != record["sha256"]:
        raise RunFolderError(f"{path} is not the data this run was trained on (its SHA-256 "
                             f"changed since training), so the held-out test set would differ")
    return load_data(path, test_fraction=record.get("test_fraction"),
                     seed=record.get("split_seed", DATASET_SEED))


def _own_data_record(path, dataset, test_fraction) -> dict:
    return {"path": str(Path(path).resolve()), "test_fraction": test_fraction,
            "split_seed": DATASET_SEED, "sha256": fingerprint(path),
            "n_train": len(dataset.x_train), "n_test": len(dataset.x_test),
            "example_shape": list(dataset.image_shape)}


def train_run(out=None, *, resume=False, data_dir=None, download=True, backend=None,
              progress=True, figures=True, log=None, **options) -> RunResult:
    """What ``numpyvae train`` does: load the data, build the model, train, write figures.

    ``options`` are those of :data:`TRAIN_DEFAULTS` (None or absent: the
    default, or with ``resume`` the run's own value). A resumed run keeps its
    configuration; of the options, only ``epochs`` and ``lr`` may differ from it
    (a new learning rate is recorded in the checkpoint; lowering it is the
    remedy for a run that diverged). A resumed run also keeps its data folder
    and backend unless given others. The run folder is locked for the whole job.
    ``log`` is called with one line of text for each thing worth telling.
    """
    log = log or (lambda text: None)
    options = normalise_options(options)
    if resume and out is None:
        raise ValueError("--resume needs the run folder to continue: --out RUN_DIR")
    if out is None:
        out = default_run_dir(Path(options["data"]).stem if options.get("data") else
                              options.get("dataset", TRAIN_DEFAULTS["dataset"]))
    if resume:
        read_config(out)  # a missing or damaged run is reported before the folder is locked
    else:
        runfolder.check_new(out)  # someone else's files: refused before a lock file is made
    run_dir = Path(out)
    with runfolder.lock(run_dir):
        if resume:
            config = read_config(run_dir)
            merged = _resumed_options(run_dir, config, options)
            if data_dir is None and config.get("data_dir"):
                data_dir = config["data_dir"]
            if backend is None:  # the same backend, for a bit-for-bit continuation
                backend = config.get("backend")
        else:
            config, merged = None, _new_options(run_dir, options)
        get_backend(backend)  # fail early, before loading data, on an unusable backend
        compile_mode()  # and on a bad $NUMPYVAE_COMPILE
        if data_dir is not None:  # recorded, and reported as the data's source, as a full path
            data_dir = Path(data_dir).resolve()
        dataset = _training_data(merged, config, options, data_dir, download, progress)
        trainer = _trainer(run_dir, merged, config, dataset, data_dir, backend, progress)
        _say_what_trains(log, run_dir, merged, dataset, trainer)
        background = _kernels(merged, dataset, backend, trainer, log, progress)
        try:
            history = trainer.fit(merged["epochs"], resume=resume)
            result = RunResult(run_dir, history, trainer.interrupted,
                               config=read_config(run_dir), stop_signal=trainer.stop_signal)
            if trainer.interrupted:
                log(f"stopped: checkpoint saved in {run_dir}; continue with: numpyvae train "
                    f"--out {run_dir} --resume")
                return result
            if figures:
                result.figures = make_figures(run_dir, trainer.model, dataset, history,
                                              merged["binarize"])
                log(f"figures: {run_dir / FIGURES_DIR}")
            if plots.shows_images(dataset.image_shape):
                log(f"to move through its latent space in a web browser: numpyvae export "
                    f"{run_dir} --html explorer.html")
            if background is not None:
                background.finish()
        finally:
            if background is not None:
                background.close()
    return result


def _resumed_options(run_dir, config, options) -> dict:
    """The options of a resumed run: its own, with a new ``epochs``, ``lr`` or data path."""
    saved = options_from_config(config)
    for key, value in options.items():
        # moved data (--data NEW_PATH) is checked by its SHA-256 when it is read again
        if key not in ("epochs", "lr", "data") and saved.get(key) != value:
            flag = "--" + key.replace("_", "-")
            raise RunFolderError(
                f"{run_dir} was trained with {flag} {_show(saved.get(key))}, not "
                f"{_show(value)}; a resumed run keeps its configuration (only --epochs "
                f"and --lr may change)")
    merged = {**saved, **options}
    path = run_dir / runfolder.CONFIG_FILE
    if config.get("dataset") is None:
        raise RunFolderError(
            f"{run_dir} was trained from Python on arrays (no 'dataset' in {path.name}), "
            f"so the command cannot find its training data; resume it from Python: "
            f"fit(model, x_train, ..., out_dir={str(run_dir)!r}, resume=True)")
    missing = sorted(k for k in ("epochs", "batch_size", "hidden", "latent_dim", "lr",
                                 "optimizer", "beta", "kl_warmup", "likelihood",
                                 "binarize", "dtype", "seed", "model", "activation")
                     if merged.get(k) is None
                     # the conv architecture has no MLP widths or activation option
                     and not (merged.get("arch") == "conv" and k in ("hidden", "activation")))
    if missing:
        raise RunFolderError(f"{path}: lacks the setting(s) {', '.join(missing)} that "
                             f"numpyvae train records; cannot resume this run")
    if (not merged.get("data") and merged["dataset"] not in DATASETS) or \
            merged["model"] not in MODEL_KINDS:
        raise RunFolderError(f"{path}: unknown dataset {merged['dataset']!r} or model "
                             f"{merged['model']!r}")
    return merged


def _new_options(run_dir, options) -> dict:
    """The options of a new run: the defaults, with the epochs its data calls for."""
    merged = {**TRAIN_DEFAULTS, **options}
    if merged["epochs"] is None:
        merged["epochs"] = (DEFAULT_EPOCHS_OWN_DATA if merged["data"] else
                            DEFAULT_EPOCHS[merged["dataset"]])
    runfolder.check_new(run_dir)
    return merged


def _training_data(merged, config, options, data_dir, download, progress) -> Dataset:
    """The run's dataset: the user's own file (checked again on a resume) or a named one."""
    if not merged["data"]:
        return load_dataset(merged["dataset"], data_dir, download=download,
                            seed=DATASET_SEED, progress=progress)
    if config is not None:  # a resume
        return _reopen_own_data(config["data"], options.get("data"))
    return load_data(merged["data"], test_fraction=merged["test_fraction"], seed=DATASET_SEED)


def _trainer(run_dir, merged, config, dataset, data_dir, backend, progress) -> Trainer:
    """The model the options describe, and its trainer, keeping the run folder."""
    check_run_sizes(merged, dataset.input_dim, dataset.image_shape, len(dataset.label_names),
                    len(dataset.x_train), len(dataset.x_test))
    model = build_model(merged, dataset.input_dim, backend=backend,
                        image_shape=dataset.image_shape,
                        num_classes=len(dataset.label_names))
    extra = {"dataset": dataset.name, "dataset_seed": DATASET_SEED,
             "data_dir": None if data_dir is None else str(Path(data_dir).resolve()),
             "data_source": dataset.source, "image_shape": list(dataset.image_shape),
             "backend": model.backend.NAME, "arch": merged.get("arch", "mlp"),
             "label_names": list(dataset.label_names)}
    if extra["arch"] == "conv":
        extra["channels"] = list(merged["channels"])
    if merged["data"]:
        extra["data"] = ({**config["data"], "path": merged["data"]} if config is not None else
                         _own_data_record(merged["data"], dataset, dataset.test_fraction))
    return Trainer(model, dataset.x_train, dataset.x_test, batch_size=merged["batch_size"],
                   lr=merged["lr"], optimizer=merged["optimizer"], beta=merged["beta"],
                   kl_warmup=merged["kl_warmup"], binarize=merged["binarize"],
                   seed=merged["seed"], progress=progress, out_dir=run_dir,
                   config_extra=extra, iw_train=merged.get("iw_train"),
                   y_train=dataset.y_train, y_test=dataset.y_test)


def _say_what_trains(log, run_dir, merged, dataset, trainer) -> None:
    """The lines a run starts with: its folder, data and model, and notes on them."""
    log(f"run folder: {run_dir}")
    log(f"data: {dataset.name} ({len(dataset.x_train)} training, {len(dataset.x_test)} test "
        f"{'examples' if len(dataset.image_shape) == 1 else 'images'}"
        f"{_split_note(trainer.config_extra.get('data'))}) from {dataset.source}")
    if len(dataset.x_test) < 2:
        log(f"note: {SMALL_TEST_NOTE}")
    log(f"model: {trainer.model!r}, {trainer.model.num_params} parameters")
    if merged["likelihood"] == "gaussian":
        log(f"note: {GAUSSIAN_NOTE}")


def _kernels(merged, dataset, backend, trainer, log, progress):
    """Have the Numba kernels the run needs ready, or compiling beside it; None when ready.

    Kernels in the cache load now. Otherwise, when the backend was not
    chosen (no ``--backend``, no ``$NUMPYVAE_BACKEND``, not a resume) and
    ``$NUMPYVAE_COMPILE`` is not ``wait``, they compile in a child process
    while training starts on the NumPy reference
    (:mod:`numpyvae.app.background_compile`); else here, before the first step.
    """
    if trainer.model.backend.NAME != "numba":
        return None

    def make_model():
        return build_model(merged, dataset.input_dim, backend=backend,
                           image_shape=dataset.image_shape, num_classes=len(dataset.label_names))

    optimizer_cls = OPTIMIZERS[merged["optimizer"]]
    labels = trainer.y_train if merged.get("conditional") else None
    chosen = backend is not None or bool(os.environ.get(BACKEND_VAR, "").strip())
    if chosen or compile_mode() == "wait":
        compile_kernels(make_model, optimizer_cls, trainer.x_train, log, lr=merged["lr"],
                        batch_size=merged["batch_size"], labels=labels,
                        objective=trainer.objective,
                        status=terminal_status() if progress else None)
        return None
    step = warmup_step(make_model, optimizer_cls, trainer.x_train, merged["lr"],
                       batch_size=merged["batch_size"], labels=labels,
                       objective=trainer.objective)
    if kernels_cached(step):
        return None
    background = BackgroundCompile(
        trainer.model, trainer.optimizer, batch_size=merged["batch_size"],
        optimizer_name=merged["optimizer"], lr=merged["lr"], iw_train=merged.get("iw_train"),
        num_classes=len(dataset.label_names) if merged.get("conditional") else None, log=log,
        progress=progress)
    trainer.step_callback = background.switch_when_ready
    return background


def _split_note(record) -> str:
    if not record:
        return ""
    fraction = record.get("test_fraction")
    if fraction is None:
        return ", the data's own test set"
    return f", {fraction:g} of the examples held out as the test set"


def _show(value):
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return str(value)


def _image_shape(run: Run):
    return tuple(run.config.get("image_shape", (28, 28)))


def _require_images(run: Run):
    shape = _image_shape(run)
    if not plots.shows_images(shape):
        raise ValueError(f"this run was trained on vectors of shape {shape}, not images, so "
                         f"there is no picture to draw")


def figures_run(run_dir, *, data_dir=None, download=True, backend=None, seed=0,
                data=None) -> list[Path]:
    """Write (again) every figure of a run folder."""
    run = load_run(run_dir, backend)
    dataset = run_dataset(run.config, data_dir, download, data=data, run_dir=run_dir)
    return make_figures(run.run_dir, run.model, dataset, run.history,
                        run.options["binarize"] or "none", seed)


def sample_run(run_dir, *, n=100, seed=0, out=None, backend=None, label=None) -> Path:
    """``numpyvae sample``: decode ``n`` prior draws; default figures/samples.png.

    ``label`` (a conditional run only): a class index or name; all ``n`` draws
    are of that class. Without it a conditional run draws one row per class.
    """
    run = load_run(run_dir, backend)
    n = positive_int(n, "n")
    _require_images(run)
    names = run_label_names(run.config)
    index = None if label is None else class_index(run.model, label, names, run_dir)
    check_decoded(f"-n {n}", n, run.model)
    return write_samples(run.model, _image_shape(run), figure_path(run_dir, "samples.png", out),
                         n, seed, label_names=names, label=index)


def run_label_names(config) -> list[str]:
    """The class names a run recorded, else its built-in data set's, else none."""
    names = config.get("label_names")
    if names is None:
        names = LABEL_NAMES.get(config.get("dataset"), ())
    return list(names)


def class_index(model, label, names, run_dir) -> int:
    """The class ``label`` means for a conditional ``model``: an index, or one of ``names``.

    Raises ValueError in one line: the run is not conditional, or ``label``
    is no class of it (with the classes it has, and the closest name).
    """
    classes = getattr(model, "num_classes", None)
    if classes is None:
        raise ValueError(f"--label {label}: {run_dir} is not a conditional run; --label needs "
                         f"a run trained with --conditional")
    shown_names = class_names(names, classes)
    text = str(label).strip()
    if text.lstrip("-").isdigit() and text not in shown_names:
        index = int(text)
        if 0 <= index < classes:
            return index
    elif text in shown_names:
        return shown_names.index(text)
    close = difflib.get_close_matches(text, shown_names, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    listing = ", ".join(f"{c} {name}" if name != str(c) else name
                        for c, name in enumerate(shown_names))
    raise ValueError(f"--label {label}: not a class of {run_dir}; {hint}its classes are "
                     f"{listing} (give an index or a name)")


def reconstruct_run(run_dir, *, n=20, seed=0, out=None, data_dir=None, download=True,
                    backend=None, data=None) -> Path:
    """``numpyvae reconstruct``: test images above their reconstructions."""
    run = load_run(run_dir, backend)
    _require_images(run)
    dataset = run_dataset(run.config, data_dir, download, data=data, run_dir=run_dir)
    return write_reconstructions(run.model, dataset, run.options["binarize"] or "none",
                                 figure_path(run_dir, "reconstructions.png", out),
                                 positive_int(n, "n"), seed)


def interpolate_run(run_dir, *, pairs=8, steps=10, seed=0, out=None, data_dir=None,
                    download=True, backend=None, data=None) -> Path:
    """``numpyvae interpolate``: strips between pairs of test images."""
    run = load_run(run_dir, backend)
    _require_images(run)
    steps, pairs = positive_int(steps, "steps"), positive_int(pairs, "pairs")
    dataset = run_dataset(run.config, data_dir, download, data=data, run_dir=run_dir)
    strips = max(1, min(pairs, len(dataset.x_test) // 2))  # as many pairs as the test set has
    check_decoded(f"--pairs {pairs} --steps {steps}", strips * steps, run.model)
    return write_interpolation(run.model, dataset, run.options["binarize"] or "none",
                               figure_path(run_dir, "interpolation.png", out),
                               positive_int(pairs, "pairs"), positive_int(steps, "steps"),
                               seed)


def _run_title(run_dir, dataset_name) -> str:
    name = Path(run_dir).resolve().name
    return name if dataset_name in name else f"{name} ({dataset_name})"


def export_run(run_dir, html, *, seed=0, data_dir=None, download=True, backend=None,
               data=None) -> Path:
    """``numpyvae export --html``: the latent-space explorer page (:mod:`numpyvae.app.explorer`).

    The test set's codes (binarized as the run was) are drawn on the page and
    rank the latent dimensions by activity.
    """
    check_page_name(html)
    run = load_run(run_dir, backend)
    _require_images(run)
    dataset = run_dataset(run.config, data_dir, download, data=data, run_dir=run_dir)
    x = eval_inputs(dataset.x_test, run.options["binarize"] or "none")
    return write_explorer(html, run.model, x, dataset.y_test,
                          image_shape=_image_shape(run), label_names=dataset.label_names,
                          title=_run_title(run_dir, dataset.name), seed=seed)


def evaluate_run(run_dir, *, iw_samples=0, limit=None, batch_size=1000, seed=0, data_dir=None,
                 download=True, backend=None, data=None, progress=False,
                 disentanglement=False) -> dict:
    """``numpyvae evaluate``: test-set ELBO terms and, optionally, the IW log-likelihood.

    Returns a dict: ``dataset``, ``n_test``, ``likelihood``, ``objective``
    (what ``loss`` is), ``loss`` (negative ELBO), ``elbo``, ``recon``, ``kl``
    (nats per example) and, with ``iw_samples`` K > 0, ``log_likelihood``:
    the importance-weighted bound with K samples
    (:func:`numpyvae.evaluate.log_likelihood`), with a progress bar if
    ``progress``. For the plain autoencoder ``loss`` is the reconstruction
    loss and ``elbo`` and ``kl`` are None: it has neither. With
    ``disentanglement`` (a VAE trained on ``shapes``, whose generating
    factors are known): ``mig``, ``mig_per_factor`` (factor -> normalised
    gap), ``mig_top_dim`` (factor -> the most informative latent dimension)
    and ``active_units`` (:mod:`numpyvae.latent`).
    """
    run = load_run(run_dir, backend)
    dataset = run_dataset(run.config, data_dir, download, data=data, run_dir=run_dir)
    x = dataset.x_test
    if limit is not None:
        x = x[:positive_int(limit, "limit")]
    x = eval_inputs(x, run.options["binarize"] or "none").astype(run.model.dtype)
    given = labels_keyword(run.model, labels_at(dataset, slice(0, len(x))))
    rng = np.random.default_rng([int(seed), STREAM_EVAL])
    r = evaluate.elbo(run.model, x, batch_size=positive_int(batch_size, "batch_size"), rng=rng,
                      **given)
    value = r.elbo if r.elbo is not None else r.recon  # an autoencoder has no ELBO
    if value is not None and not math.isfinite(value):
        raise RunFolderError(f"{Path(run_dir) / MODEL_FILE}: the model's test loss is {value} "
                             f"(its weights overflow on this data); evaluate a checkpoint "
                             f"from before training diverged")
    out = {"run": str(run_dir), "dataset": dataset.name, "model": run.model.kind,
           "likelihood": run.options["likelihood"], "epochs": len(run.history),
           "n_test": len(x), "objective": "negative ELBO", "loss": r.recon + r.kl,
           "elbo": r.elbo, "recon": r.recon, "kl": r.kl}
    if isinstance(run.model, Autoencoder):
        out.update(objective="reconstruction loss", loss=r.recon, elbo=None, kl=None)
    iw_samples = int(iw_samples or 0)
    if iw_samples < 0:
        raise ValueError(f"iw_samples must be >= 0, got {iw_samples}")
    if iw_samples > 0:
        if isinstance(run.model, Autoencoder):
            raise ValueError("the importance-weighted log-likelihood needs a VAE; this run "
                             "trained an autoencoder")
        out["iw_samples"] = iw_samples
        out["log_likelihood"] = evaluate.log_likelihood(run.model, x, iw_samples, rng=rng,
                                                        progress=progress, **given)
    if disentanglement:
        out.update(_disentanglement(run.model, dataset, x, batch_size, given.get("labels")))
    return out


def inspect_run(run_dir, *, n=4, seed=0, bug=None, node=None, beta=None, data_dir=None,
                download=True, backend=None, data=None):
    """``numpyvae inspect RUN_DIR``: the trained model of a run on ``n`` of its test images
    (:func:`numpyvae.inspector.inspect`).

    ``beta`` defaults to the run's own. A conditional run's model is given the
    test images' own labels. The test set is found as the other run commands
    find it (:func:`run_dataset`; ``data`` is a run's own data
    file if it has moved). Returns the :class:`~numpyvae.inspector.Trace`.

    A run trained on the importance-weighted bound (``--iw-train K``) holds a
    plain VAE: the trace steps through its ELBO (the bound's ``K = 1`` case,
    with the KL in closed form, :mod:`numpyvae.iwae`), and a note under the
    table says so.
    """
    if not (isinstance(n, int) and 1 <= n <= 64):
        raise ValueError(f"inspect: n must be an integer from 1 to 64, got {n!r}")
    run = load_run(run_dir, backend)
    dataset = run_dataset(run.config, data_dir, download, progress=False, data=data,
                          run_dir=run_dir)
    available = len(dataset.x_test)
    if available == 0:
        raise ValueError(f"inspect: {run_dir} has no test images to inspect on")
    rows = np.sort(np.random.default_rng(seed).choice(available, size=min(n, available),
                                                      replace=False))
    x = eval_inputs(dataset.x_test[rows], run.options.get("binarize") or "none")
    labels = None
    if is_conditional(run.model):
        if dataset.y_test is None:
            raise ValueError(f"inspect: {run_dir} holds a conditional model but its test "
                             f"images have no labels")
        labels = np.asarray(dataset.y_test[rows])
    if beta is None:
        beta = float(run.options.get("beta") or 1.0)
    trace = inspect(run.model, x, beta=beta, labels=labels, bug=bug, bug_node=node, seed=seed)
    k = run.options.get("iw_train")
    if k:
        trace.notes.append(f"note: this run was trained on the importance-weighted bound "
                           f"(--iw-train {k}); the trace steps through the same model's ELBO "
                           f"(the bound's K = 1 case, with the KL in closed form)")
    return trace


def _disentanglement(model, dataset, x, batch_size, labels=None) -> dict:
    if not isinstance(model, VAE):
        raise ValueError("--disentanglement needs a VAE (its posterior means are the codes); "
                         "this run trained an autoencoder")
    if not dataset.factors_test:
        raise ValueError(f"--disentanglement needs a dataset with known generating factors "
                         f"(shapes); {dataset.name} has none")
    mu, logvar = latent.posterior_parameters(model, x, batch_size=batch_size, labels=labels)
    factors = latent.factor_matrix(dataset.factors_test, dataset.factor_names)[:len(x)]
    mig = latent.mutual_info_gap(mu, factors)
    count, _ = latent.active_units(mu)
    names = list(dataset.factor_names)
    return {"mig": mig.mig,
            "mig_per_factor": {n: float(v) for n, v in zip(names, mig.per_factor, strict=True)},
            "mig_top_dim": {n: int(d) for n, d in zip(names, mig.top, strict=True)},
            "active_units": count, "latent_dim": model.latent_dim}
