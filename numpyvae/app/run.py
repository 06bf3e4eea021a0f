"""Run folders: the jobs of the ``numpyvae`` command.

Train, evaluate, sample, reconstruct, interpolate and redraw figures of a run.

A run folder holds ``config.json``, ``model.npz``, ``checkpoint.npz``,
``metrics.jsonl`` and ``figures/`` (its files, their format and errors are
:mod:`numpyvae.app.runfolder`'s). This module turns command-line options into a
run, reads a run back, and draws its figures with :mod:`numpyvae.app.plots`.
Argument parsing is :mod:`numpyvae.app.cli`'s job; the training loop is
:mod:`numpyvae.app.train`'s. A folder written by :func:`numpyvae.app.train.fit` from
Python works here too: its test set is kept in the folder.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import evaluate, latent
from ..backend import get_backend
from ..cvae import CVAE
from ..fast.warmup import compile_kernels
from ..model import MODEL_KINDS, VAE, Autoencoder, ModelFileError, load
from ..optim import OPTIMIZERS
from . import latent_plots, plots, runfolder
from .budget import check_decoded, check_run_sizes
from .data import DATASETS, DataNotFoundError, Dataset, load_data, load_dataset
from .data.local import data_path, fingerprint
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
    STREAM_FIGURES,
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

#: Defaults of ``numpyvae train``: the well-known MNIST recipe (784-400-20, ReLU,
#: Bernoulli decoder, Adam with lr 1e-3, batches of 128). ``epochs`` None means
#: :data:`DEFAULT_EPOCHS` of the dataset.
TRAIN_DEFAULTS = {
    "dataset": "shapes", "epochs": None, "batch_size": 128, "hidden": [400], "latent_dim": 20,
    "lr": 1e-3, "optimizer": "adam", "beta": 1.0, "kl_warmup": 0, "likelihood": "bernoulli",
    "binarize": "none", "dtype": "float32", "seed": 0, "model": "vae", "activation": "relu",
    "iw_train": None, "free_bits": 0.0, "conditional": False, "gaussian_var": 0.01,
    "data": None, "test_fraction": None, "arch": "mlp", "channels": [32, 64],
}
#: Epochs when none are given: the recipe's 10 for the MNIST-like datasets; 30 for
#: ``shapes``, whose sprites only take shape after ~20 epochs (each epoch is a third
#: of an MNIST epoch, so this still runs in well under a minute).
#: Network architectures of ``numpyvae train --arch``.
ARCHS = ("mlp", "conv")
DEFAULT_EPOCHS = {"shapes": 30, "mnist": 10, "fashion-mnist": 10}
#: Epochs when none are given for your own data (``--data FILE``).
DEFAULT_EPOCHS_OWN_DATA = 10
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


def options_from_config(config: dict) -> dict:
    """The ``numpyvae train`` options a run folder's config.json records."""
    m, t = config.get("model", {}), config.get("training", {})
    own = config.get("data") or {}
    return {"dataset": None if own else config.get("dataset"), "epochs": t.get("epochs"),
            "data": own.get("path"), "test_fraction": own.get("test_fraction"),
            "gaussian_var": m.get("gaussian_var"),
            "batch_size": t.get("batch_size"), "hidden": list(m.get("hidden_dims", [])),
            "latent_dim": m.get("latent_dim"), "lr": t.get("lr"),
            "optimizer": t.get("optimizer"), "beta": t.get("beta"),
            "kl_warmup": t.get("kl_warmup"), "likelihood": m.get("likelihood"),
            "binarize": t.get("binarize"), "dtype": m.get("dtype"), "seed": t.get("seed"),
            "model": "vae" if m.get("kind") == "cvae" else m.get("kind"),
            "activation": m.get("activation"), "conditional": m.get("kind") == "cvae",
            "iw_train": t.get("iw_train"), "free_bits": m.get("free_bits", 0.0),
            "arch": config.get("arch", "mlp"), "channels": config.get("channels")}


def _normalise_options(options: dict) -> dict:
    unknown = sorted(set(options) - set(TRAIN_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown training option(s) {unknown}; expected some of "
                         f"{sorted(TRAIN_DEFAULTS)}")
    out = {k: v for k, v in options.items() if v is not None}
    if "hidden" in out:
        hidden = out["hidden"]
        out["hidden"] = [int(h) for h in ([hidden] if isinstance(hidden, int) else hidden)]
    for key in ("lr", "beta", "free_bits", "test_fraction"):
        if key in out:
            out[key] = float(out[key])
    if out.get("gaussian_var") not in (None, "learned"):
        out["gaussian_var"] = float(out["gaussian_var"])
    if "data" in out:
        if "dataset" in out:
            raise ValueError("give a dataset by name (--dataset) or your own data (--data), "
                             "not both")
        out["data"] = str(data_path(out["data"]))
    elif "test_fraction" in out:
        raise ValueError("a test fraction is held out of your own data (--data FILE); the "
                         "named datasets have their own test sets")
    if "gaussian_var" in out and out.get("likelihood", "bernoulli") != "gaussian":
        raise ValueError("--gaussian-var is the variance of a Gaussian decoder; add "
                         "--likelihood gaussian")
    if out.get("free_bits", 0) and out.get("model", "vae") != "vae":
        raise ValueError("--free-bits acts on the KL term, which only a VAE has")
    if out.get("dataset", "shapes") not in DATASETS:
        raise ValueError(f"unknown dataset {out['dataset']!r}; expected one of "
                         f"{', '.join(DATASETS)}")
    if out.get("arch", "mlp") not in ARCHS:
        raise ValueError(f"unknown architecture {out['arch']!r}; expected one of "
                         f"{', '.join(ARCHS)}")
    if "channels" in out:
        out["channels"] = [int(c) for c in out["channels"]]
        if len(out["channels"]) != 2 or min(out["channels"]) < 1:
            raise ValueError(f"channels must be two positive widths, got {out['channels']}")
    if out.get("model", "vae") not in MODEL_KINDS:
        raise ValueError(f"unknown model {out['model']!r}; expected one of "
                         f"{', '.join(MODEL_KINDS)}")
    return out


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


def _likelihood(value):
    """A likelihood name, or the object a model file's spec describes (a resumed conv run)."""
    if isinstance(value, dict):
        from ..distributions import likelihood_from_spec

        return likelihood_from_spec(value)
    return value


def build_model(options: dict, input_dim: int, backend=None, image_shape=None,
                num_classes=None):
    """The untrained model that ``numpyvae train`` options describe.

    ``arch`` ``"conv"`` builds the convolutional VAE of :mod:`numpyvae.convnet`
    for images of ``image_shape`` (height and width divisible by 4), taking
    and giving rows of pixels like the MLP; ``hidden`` and ``activation``
    then do not apply. With ``options["conditional"]``, a
    :class:`~numpyvae.CVAE` for ``num_classes`` classes, of either
    architecture (the conv one from :func:`numpyvae.convnet.conv_cvae`).
    """
    extra = {}
    if options.get("conditional"):
        if options["model"] != "vae":
            raise ValueError(f"--conditional needs --model vae, not {options['model']}")
        if not num_classes:
            raise ValueError("--conditional needs a labelled dataset (mnist, fashion-mnist, "
                             "shapes, or your own data with labels)")
        extra["num_classes"] = int(num_classes)
    if options.get("gaussian_var") is not None:
        extra["gaussian_var"] = options["gaussian_var"]
    common = dict(seed=options["seed"], dtype=options["dtype"], backend=backend,
                  free_bits=options.get("free_bits") or 0.0, **extra)
    if options.get("arch", "mlp") == "conv":
        from ..convnet import conv_cvae, conv_vae

        if image_shape is None:
            raise ValueError("the convolutional VAE needs the images' shape")
        shape, channels = tuple(image_shape), tuple(options["channels"])
        likelihood = _likelihood(options["likelihood"])
        if options.get("conditional"):
            return conv_cvae(shape, options["latent_dim"], common.pop("num_classes"), channels,
                             flat=True, likelihood=likelihood, **common)
        return conv_vae(shape, options["latent_dim"], channels, flat=True,
                        autoencoder=options["model"] == "autoencoder", likelihood=likelihood,
                        **common)
    cls = CVAE if options.get("conditional") else MODEL_KINDS[options["model"]]
    return cls(input_dim, hidden_dims=tuple(options["hidden"]), latent_dim=options["latent_dim"],
               likelihood=options["likelihood"], activation=options["activation"], **common)


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
    options = _normalise_options(options)
    if resume and out is None:
        raise ValueError("--resume needs the run folder to continue: --out RUN_DIR")
    if out is None:
        out = default_run_dir(Path(options["data"]).stem if options.get("data") else
                              options.get("dataset", TRAIN_DEFAULTS["dataset"]))
    if resume:
        read_config(out)  # a missing or damaged run is reported before the folder is locked
    else:
        runfolder.check_new(out)  # someone else's files: refused before a lock file is made
    with runfolder.lock(out):
        return _train_locked(Path(out), resume, data_dir, download, backend, progress, figures,
                             log, options)


def _train_locked(run_dir, resume, data_dir, download, backend, progress, figures, log,
                  options) -> RunResult:
    if resume:
        config = read_config(run_dir)
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
        if data_dir is None and config.get("data_dir"):
            data_dir = config["data_dir"]
        if backend is None:  # the same backend, for a bit-for-bit continuation
            backend = config.get("backend")
    else:
        merged = {**TRAIN_DEFAULTS, **options}
        if merged["epochs"] is None:
            merged["epochs"] = (DEFAULT_EPOCHS_OWN_DATA if merged["data"] else
                                DEFAULT_EPOCHS[merged["dataset"]])
        runfolder.check_new(run_dir)
    get_backend(backend)  # fail early, before loading data, on an unusable backend
    if data_dir is not None:  # recorded, and reported as the data's source, as a full path
        data_dir = Path(data_dir).resolve()
    if merged["data"]:
        if resume:
            dataset = _reopen_own_data(config["data"], options.get("data"))
        else:
            dataset = load_data(merged["data"], test_fraction=merged["test_fraction"],
                                seed=DATASET_SEED)
    else:
        dataset = load_dataset(merged["dataset"], data_dir, download=download,
                               seed=DATASET_SEED, progress=progress)
    check_run_sizes(merged, dataset.input_dim, dataset.image_shape, len(dataset.label_names),
                    len(dataset.x_train))
    model = build_model(merged, dataset.input_dim, backend=backend,
                        image_shape=dataset.image_shape,
                        num_classes=len(dataset.label_names))
    extra = {"dataset": dataset.name, "dataset_seed": DATASET_SEED,
             "data_dir": None if data_dir is None else str(Path(data_dir).resolve()),
             "data_source": dataset.source, "image_shape": list(dataset.image_shape),
             "backend": model.backend.NAME, "arch": merged.get("arch", "mlp")}
    if extra["arch"] == "conv":
        extra["channels"] = list(merged["channels"])
    if merged["data"]:
        extra["data"] = ({**config["data"], "path": merged["data"]} if resume else
                         _own_data_record(merged["data"], dataset, dataset.test_fraction))
    trainer = Trainer(model, dataset.x_train, dataset.x_test, batch_size=merged["batch_size"],
                      lr=merged["lr"], optimizer=merged["optimizer"], beta=merged["beta"],
                      kl_warmup=merged["kl_warmup"], binarize=merged["binarize"],
                      seed=merged["seed"], progress=progress, out_dir=run_dir,
                      config_extra=extra, iw_train=merged.get("iw_train"),
                      y_train=dataset.y_train, y_test=dataset.y_test)
    log(f"run folder: {run_dir}")
    log(f"data: {dataset.name} ({len(dataset.x_train)} training, {len(dataset.x_test)} test "
        f"{'examples' if len(dataset.image_shape) == 1 else 'images'}"
        f"{_split_note(extra.get('data'))}) from {dataset.source}")
    if len(dataset.x_test) < 2:
        log(f"note: {SMALL_TEST_NOTE}")
    log(f"model: {model!r}, {model.num_params} parameters")
    if merged["likelihood"] == "gaussian":
        log(f"note: {GAUSSIAN_NOTE}")
    if not merged.get("conditional"):  # a conditional model's step needs labels too
        compile_kernels(lambda: build_model(merged, dataset.input_dim, backend=backend,
                                            image_shape=dataset.image_shape),
                        OPTIMIZERS[merged["optimizer"]], trainer.x_train, log, lr=merged["lr"])
    history = trainer.fit(merged["epochs"], resume=resume)
    result = RunResult(run_dir, history, trainer.interrupted, config=read_config(run_dir),
                       stop_signal=trainer.stop_signal)
    if trainer.interrupted:
        log(f"stopped: checkpoint saved in {run_dir}; continue with: numpyvae train "
            f"--out {run_dir} --resume")
        return result
    if figures:
        result.figures = make_figures(run_dir, model, dataset, history, merged["binarize"])
        log(f"figures: {run_dir / FIGURES_DIR}")
    return result


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


# ---------------------------------------------------------------------------- figures


def _figure_path(run_dir, name, out=None) -> Path:
    if out is not None:
        plots.image_format(out)  # refuse an unknown suffix before any work
        return Path(out)
    return Path(run_dir) / FIGURES_DIR / name


def _pick(n_total, n, seed):
    rng = np.random.default_rng([int(seed), STREAM_FIGURES])
    return np.sort(rng.choice(n_total, size=min(n, n_total), replace=False))


def _conditional(model) -> bool:
    return getattr(model, "num_classes", None) is not None


def _labels_at(dataset, rows):
    """The test labels at ``rows``, or None for unlabelled data."""
    return None if dataset.y_test is None else dataset.y_test[rows]


def _given(model, labels):
    """The labels keyword of a conditional model's calls (nothing for any other model)."""
    return {"labels": np.asarray(labels)} if _conditional(model) else {}


def write_reconstructions(model, dataset, binarize_mode, path, n=20, seed=0) -> Path:
    """Test images above their reconstructions (the posterior mean, decoded)."""
    idx = _pick(len(dataset.x_test), n, seed)
    x = eval_inputs(dataset.x_test[idx], binarize_mode)
    x_rec = model.reconstruct(x.astype(model.dtype), **_given(model, _labels_at(dataset, idx)))
    plots.reconstructions(x, x_rec, dataset.image_shape, path=path)
    return Path(path)


def write_samples(model, image_shape, path, n=100, seed=0, label_names=None) -> Path:
    """A grid of ``n`` decoded draws from the prior.

    For a conditional model, one row per class (``ceil(n / C)`` draws each, at most 12).
    """
    rng = np.random.default_rng([int(seed), STREAM_FIGURES])
    if _conditional(model):
        C = model.num_classes
        per_class = max(1, min(math.ceil(n / C), 12))
        images = model.sample(C * per_class, labels=np.repeat(np.arange(C), per_class), rng=rng)
        names = label_names or [str(c) for c in range(C)]
        plots.samples(images, image_shape, nrow=per_class, path=path,
                      title="decoded draws z ~ N(0, I), one row per class: "
                            + ", ".join(names[:C]))
        return Path(path)
    images = model.sample(n, rng=rng)
    plots.samples(images, image_shape, nrow=math.ceil(math.sqrt(n)), path=path)
    return Path(path)


def write_transfer(model, dataset, binarize_mode, path, n=8, seed=0) -> Path:
    """A conditional model's "style transfer": each test image (left column) encoded with its
    own label, then decoded as every class (one column per class)."""
    idx = _pick(len(dataset.x_test), n, seed)
    x = eval_inputs(dataset.x_test[idx], binarize_mode).astype(model.dtype)
    out = model.transfer(x, dataset.y_test[idx])                     # (n, C, D)
    grid = np.concatenate([x.reshape(len(x), 1, -1), out.reshape(len(x), out.shape[1], -1)],
                          axis=1)
    plots.image_grid(grid.reshape(-1, grid.shape[2]), dataset.image_shape, grid.shape[1],
                     path=path, title="style transfer: each test image (left) encoded "
                                      "with its label, decoded as every class")
    return Path(path)


def write_interpolation(model, dataset, binarize_mode, path, pairs=8, steps=10, seed=0) -> Path:
    """``pairs`` strips of ``steps`` images between the codes of two test images."""
    idx = _pick(len(dataset.x_test), 2 * pairs, seed)
    if len(idx) < 2:
        raise ValueError(f"an interpolation runs between two test images; the test set of "
                         f"{dataset.name} holds {len(idx)}")
    np.random.default_rng([int(seed), STREAM_FIGURES, 1]).shuffle(idx)
    x = eval_inputs(dataset.x_test[idx], binarize_mode).astype(model.dtype)
    y = _labels_at(dataset, idx)
    pairs = len(idx) // 2
    strips = np.stack([model.interpolate(x[2 * i], x[2 * i + 1], steps,
                                         **_given(model, None if y is None else y[2 * i:2 * i + 2]))
                       for i in range(pairs)])
    ends = x[:2 * pairs].reshape(pairs, 2, -1)
    plots.interpolation(strips, dataset.image_shape, path=path, ends=ends)
    return Path(path)


#: How the factors of ``shapes`` are named on a figure.
_FACTOR_NAMES = {"x": "x position", "y": "y position", "scale": "scale",
                 "rotation": "rotation"}


def latent_codes(model, x, batch_size=1000, labels=None) -> np.ndarray:
    """The deterministic code of each row of ``x`` (the posterior mean for a VAE)."""
    return np.concatenate([
        model.embed(x[i:i + batch_size].astype(model.dtype),
                    **({} if labels is None else {"labels": labels[i:i + batch_size]}))
        for i in range(0, len(x), batch_size)])


def write_latent_figures(model, dataset, binarize_mode, run_dir, seed=0, n_dims=10,
                         steps=11) -> list[Path]:
    """The per-dimension KL bar chart and a traversal of the ``n_dims`` dimensions of most KL."""
    x = eval_inputs(dataset.x_test[:5000], binarize_mode).astype(model.dtype)
    y = dataset.y_test[:5000] if _conditional(model) else None
    stats = latent.latent_statistics(model, x, labels=y)
    kl_path = _figure_path(run_dir, "kl_per_dim.png")
    latent_plots.kl_bars(stats.kl_per_dim, stats.activity, stats.threshold, path=kl_path)
    if not plots.shows_images(dataset.image_shape):  # plain vectors: no picture to traverse
        return [kl_path]
    dims = stats.kl_order()[:n_dims]
    i0 = _pick(len(x), 1, seed)[0]
    images = latent.traversal(model, x[i0], dims, steps=steps,
                              labels=None if y is None else y[i0])
    traversal_path = _figure_path(run_dir, "traversal.png")
    latent_plots.traversal(images, dims, stats.kl_per_dim, dataset.image_shape,
                           path=traversal_path)
    return [kl_path, traversal_path]


def make_figures(run_dir, model, dataset, history, binarize_mode="none", seed=0) -> list[Path]:
    """Write every figure of a run into ``run_dir/figures``; return their paths."""
    shape = dataset.image_shape
    images = plots.shows_images(shape)
    paths = []
    if images:  # plain vectors (N, D) have no picture: their figures are left out
        paths += [
            write_reconstructions(model, dataset, binarize_mode,
                                  _figure_path(run_dir, "reconstructions.png"), seed=seed),
            write_samples(model, shape, _figure_path(run_dir, "samples.png"), seed=seed,
                          label_names=dataset.label_names),
        ]
        if len(dataset.x_test) >= 2:  # a strip runs between two test images
            paths.append(write_interpolation(model, dataset, binarize_mode,
                                             _figure_path(run_dir, "interpolation.png"),
                                             seed=seed))
    idx = _pick(len(dataset.x_test), 5000, seed)
    x = eval_inputs(dataset.x_test[idx], binarize_mode)
    path = _figure_path(run_dir, "latent_scatter.png")
    labels = None if dataset.y_test is None else dataset.y_test[idx]
    codes = latent_codes(model, x, labels=labels if _conditional(model) else None)
    factor = None
    if dataset.factors_test:  # shapes: also colour by the factor the codes separate best
        continuous = {_FACTOR_NAMES.get(k, k): np.asarray(v)[idx]
                      for k, v in dataset.factors_test.items() if k != "shape"}
        factor = plots.best_factor(codes, continuous) if continuous else None
    plots.latent_scatter(codes, labels, path=path, label_names=dataset.label_names,
                         factor=factor)
    paths.append(path)
    if _conditional(model) and images:
        paths.append(write_transfer(model, dataset, binarize_mode,
                                    _figure_path(run_dir, "transfer.png"), seed=seed))
    if model.latent_dim == 2 and images:
        path = _figure_path(run_dir, "manifold.png")
        given = {}
        if _conditional(model):  # the decoder's grid for one class: the first
            name = (dataset.label_names or ["0"])[0]
            given = {"labels": 0, "title": f"the decoder over a grid of the 2-D latent space "
                                           f"(N(0, I) quantiles), as class {name}"}
        plots.manifold(model, shape, n=20, path=path, **given)
        paths.append(path)
    if isinstance(model, VAE) and len(dataset.x_test) >= 2:  # active units need two codes
        paths += write_latent_figures(model, dataset, binarize_mode, run_dir, seed)
    if history:
        path = _figure_path(run_dir, "loss_curves.png")
        plots.loss_curves(history, path=path)
        paths.append(path)
    return paths


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


def sample_run(run_dir, *, n=100, seed=0, out=None, backend=None) -> Path:
    """``numpyvae sample``: decode ``n`` prior draws; default figures/samples.png."""
    run = load_run(run_dir, backend)
    n = positive_int(n, "n")
    _require_images(run)
    check_decoded(f"-n {n}", n, run.model)
    return write_samples(run.model, _image_shape(run), _figure_path(run_dir, "samples.png", out),
                         n, seed)  # a conditional model: one row per class


def reconstruct_run(run_dir, *, n=20, seed=0, out=None, data_dir=None, download=True,
                    backend=None, data=None) -> Path:
    """``numpyvae reconstruct``: test images above their reconstructions."""
    run = load_run(run_dir, backend)
    _require_images(run)
    dataset = run_dataset(run.config, data_dir, download, data=data, run_dir=run_dir)
    return write_reconstructions(run.model, dataset, run.options["binarize"] or "none",
                                 _figure_path(run_dir, "reconstructions.png", out),
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
                               _figure_path(run_dir, "interpolation.png", out),
                               positive_int(pairs, "pairs"), positive_int(steps, "steps"),
                               seed)


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
    given = _given(run.model, _labels_at(dataset, slice(0, len(x))))
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
