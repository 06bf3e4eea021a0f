"""Training: the minibatch loop.

:func:`fit` (or :class:`Trainer`) trains a model on arrays. Every step is
one call, whatever the model and the objective: the step its backend offers
(:func:`numpyvae.step.step_of`), :func:`numpyvae.step.step` on the NumPy
reference.

Given ``out_dir`` the trainer keeps a *run folder* (its files, their format,
the lock and the errors are :mod:`numpyvae.app.runfolder`'s): ``config.json``,
``model.npz``, ``checkpoint.npz`` (everything a resume needs, in one file:
:mod:`numpyvae.app.checkpoint`), ``metrics.jsonl`` (one JSON object per
epoch, see :data:`METRIC_KEYS`) and, when the test set has no dataset name,
``test_data.npz``; the figures are drawn by :mod:`numpyvae.app.figures`. Such a
folder works with every ``numpyvae`` command (``evaluate``, ``figures``,
``sample``, ...).

Every file is written atomically, the checkpoint at the end of each epoch
and first: model.npz and metrics.jsonl are copies of what it holds, and a
resume rewrites them from it, so a kill between any two writes loses
nothing. While training, the folder is locked against a second writer.

Reproducibility. All randomness of epoch ``e`` (the order of the examples,
dynamic binarization, the reparameterization noise) comes from one generator
seeded by ``(seed, e)``, and the checkpoint stores that generator's state
when a run stops mid-epoch. A run that is interrupted and resumed therefore
sees the same stream as one that was not, and ends with the same weights,
bit for bit.

Ctrl-C (SIGINT) and SIGTERM (``kill``, a batch scheduler, a closing
terminal) set a flag: the current step finishes, a checkpoint is written and
training returns with ``trainer.interrupted = True`` (a second signal aborts
at once). A NaN or infinite loss, weight or test loss raises
:class:`NonFiniteLossError` before anything of that epoch is saved, naming
the step and a remedy; the checkpoint of the last good epoch (finite train
and test losses) stays as it was, and a resume may lower the learning rate
(the only setting a resume may change besides the number of epochs; each
change is recorded in the checkpoint).

The jobs of the ``numpyvae`` command on a run folder live in :mod:`numpyvae.app.run`.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

from .. import evaluate, latent
from ..iwae import ImportanceWeighted
from ..model import MODEL_KINDS, VAE
from ..optim import OPTIMIZERS
from ..step import step_of
from . import checkpoint, interrupts, limits, runfolder
from .budget import check_importance_samples
from .data import BINARIZE_MODES, binarize, check_training_data
from .runfolder import (  # noqa: F401  (the run-folder names, also importable from here)
    CHECKPOINT_FILE,
    CONFIG_FILE,
    FIGURES_DIR,
    METRICS_FILE,
    MODEL_FILE,
    RUN_FORMAT,
    RunFolderError,
    RunLockedError,
    RunNotFoundError,
)

#: The keys of every per-epoch metrics dict (``test_*`` are None without a test set).
#: For the plain autoencoder, ``*_loss`` is the reconstruction loss and ``*_kl`` and
#: ``beta`` are None: it has no KL term and no ELBO.
METRIC_KEYS = (
    "epoch", "step", "train_loss", "train_recon", "train_kl", "train_objective", "beta",
    "test_loss", "test_recon", "test_kl", "seconds", "samples_per_second", "eval_seconds",
    "active_units", "kl_per_dim",
)
#: Examples the per-epoch latent statistics are computed on (the first of the test set).
LATENT_STATS_EXAMPLES = 5000

#: Independent random streams, all derived from the run's seed: ``default_rng([seed, STREAM])``.
STREAM_EPOCH, STREAM_STATIC, STREAM_EVAL, STREAM_FIGURES = 1, 2, 3, 4
#: Test sets are binarized once with this fixed seed, so test losses compare across runs.
TEST_BINARIZE_SEED = 0
#: The signals that stop training cleanly (checkpoint, then return).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the message names the step and a remedy."""


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The generator of epoch ``epoch`` (0-based): its order, binarization and noise."""
    return np.random.default_rng([int(seed), STREAM_EPOCH, int(epoch)])


def eval_inputs(x, mode: str) -> np.ndarray:
    """The test inputs for ``mode``: binarized once, with a fixed seed, or unchanged."""
    if mode == "none":
        return x
    return binarize(x, "static", np.random.default_rng([TEST_BINARIZE_SEED, STREAM_STATIC]))


def take_step(model, optimizer, x, *, labels=None, objective=None, beta=1.0, rng=None):
    """One training step of any model on any objective, by the function its backend offers.

    What it computes is :func:`numpyvae.step.step`'s: the objective's loss and
    gradients, then ``optimizer.step`` if the loss is finite. On the Numba
    backend that is :func:`numpyvae.fast.step.train_step`: the same step on the
    fastest thread count, as one kernel call when the model allows it.
    """
    return step_of(model.backend)(model, optimizer, x, labels=labels, objective=objective,
                                  beta=beta, rng=rng)


def _json_safe(value):
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ---------------------------------------------------------------------------- the loop


class Trainer:
    """Seeded minibatch training of a :class:`~numpyvae.VAE` or :class:`~numpyvae.Autoencoder`.

    Parameters
    ----------
    model : VAE or Autoencoder
    x_train : array, shape (N, input_dim), values in [0, 1] for a Bernoulli decoder
        Image-shaped arrays, (N, H, W) or (N, C, H, W), are flattened. NaN,
        infinity, or values outside [0, 1] for a Bernoulli decoder raise
        :class:`numpyvae.app.data.DataValueError` before training starts.
    x_test : array, shape (M, input_dim) or image-shaped, optional
        Evaluated (ELBO, one noise draw per example) after every epoch.
    batch_size : int
        Any positive size; the last batch of an epoch may be smaller.
    lr : float
    optimizer : "adam", "adamw" or "sgd"
    beta : float
        Weight of the KL term (the beta-VAE); the reported losses are the
        plain negative ELBO whatever ``beta`` is.
    kl_warmup : int
        Raise the KL weight linearly from ``beta / kl_warmup`` to ``beta``
        over this many steps (0: no warm-up).
    binarize : "none", "dynamic" or "static"
        See :func:`numpyvae.app.data.binarize`; the test set is binarized once.
    seed : int
        Seeds the order of examples and all noise (not the initial weights:
        those come from the model's own seed).
    progress : bool
        Show a tqdm progress bar with the running loss, reconstruction and KL.
    out_dir : path, optional
        The run folder to keep (see the module docstring).
    y_test : array, shape (M,), optional
        Labels of ``x_test``; kept in the run folder with the test set when
        it has no dataset name, for the latent-space figure.
    callback : callable, optional
        Called as ``callback(metrics)`` after each epoch.
    step_callback : callable, optional
        Called as ``step_callback(trainer)`` after each optimizer step.
    config_extra : dict, optional
        Extra entries for ``config.json`` (the CLI records the dataset here).
    y_train, y_test : int arrays, shape (N,) and (M,), optional
        The class labels, which a conditional model (:class:`~numpyvae.CVAE`)
        needs and any other model ignores.
    iw_train : int, optional
        Train on the importance-weighted bound with this many samples per
        example (:mod:`numpyvae.iwae`) instead of the ELBO; ``beta`` and
        ``kl_warmup`` weigh its ``log p(z) - log q(z|x)`` term.

    Notes
    -----
    After every epoch of a VAE, the per-dimension KL and the number of active
    units (:mod:`numpyvae.latent`) on the first :data:`LATENT_STATS_EXAMPLES`
    test examples (training examples without a test set) go into the metrics
    (``kl_per_dim``, ``active_units``) and the epoch line, with a warning when
    no unit is active (posterior collapse).
    """

    def __init__(self, model, x_train, x_test=None, *, batch_size=128, lr=1e-3,
                 optimizer="adam", beta=1.0, kl_warmup=0, binarize="none", seed=0,
                 progress=True, out_dir=None, callback=None, step_callback=None,
                 eval_batch_size=1000, config_extra=None, iw_train=None, y_train=None,
                 y_test=None):
        if not isinstance(model, tuple(MODEL_KINDS.values())):
            raise ValueError(f"Trainer: expected a VAE or Autoencoder, got {type(model).__name__}")
        self.model = model
        self.x_train = self._check_x(x_train, "x_train")
        self.x_test = None if x_test is None else self._check_x(x_test, "x_test")
        self.batch_size = positive_int(batch_size, "batch_size")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {optimizer!r}; expected one of "
                             f"{', '.join(OPTIMIZERS)}")
        if binarize not in BINARIZE_MODES:
            raise ValueError(f"unknown binarization {binarize!r}; expected one of "
                             f"{', '.join(BINARIZE_MODES)}")
        if not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta >= 0):
            raise ValueError(f"beta must be a number >= 0, got {beta!r}")
        if not (isinstance(kl_warmup, (int, np.integer)) and kl_warmup >= 0):
            raise ValueError(f"kl_warmup must be an integer >= 0 (steps), got {kl_warmup!r}")
        if not (isinstance(seed, (int, np.integer)) and seed >= 0):
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
        if not (isinstance(lr, (int, float, np.floating)) and not isinstance(lr, bool)
                and math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
        self.lr, self.optimizer_name = float(lr), optimizer
        limits.check_model_size(model)  # before the optimizer allocates its state
        self.optimizer = OPTIMIZERS[optimizer](model.params, lr=lr, backend=model.backend)
        self.beta, self.kl_warmup = float(beta), int(kl_warmup)
        self.binarize, self.seed = binarize, int(seed)
        self.progress, self.callback, self.step_callback = progress, callback, step_callback
        self.eval_batch_size = positive_int(eval_batch_size, "eval_batch_size")
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.iw_train = None if iw_train is None else positive_int(iw_train, "iw_train")
        self.conditional = getattr(model, "num_classes", None) is not None
        self.y_train = self._check_y(y_train, self.x_train, "y_train")
        self.y_test = None if self.x_test is None else self._check_y(y_test, self.x_test,
                                                                      "y_test")
        #: What every step minimises: the model's own loss, or the importance-weighted bound.
        # None: the ELBO, the model's own loss; else the importance-weighted bound
        self.objective = None if self.iw_train is None else ImportanceWeighted(self.iw_train)
        if self.objective is not None:
            self.objective.check(model)
            check_importance_samples(model, self.iw_train, self.batch_size, len(self.x_train))
        self.config_extra = dict(config_extra or {})
        self._test_data = None
        if x_test is not None and self.config_extra.get("dataset") is None:
            self._test_data = (self.x_test, None if y_test is None else np.asarray(y_test))

        if binarize == "static":
            rng = np.random.default_rng([self.seed, STREAM_STATIC])
            self.x_train = _binarize(self.x_train, "static", rng)
        if self.x_test is not None:
            self.x_test = eval_inputs(self.x_test, binarize)

        # Progress; all of it is in the checkpoint.
        self.epoch = 0              # epochs finished
        self.step_in_epoch = 0      # steps done in the unfinished epoch
        self.global_step = 0        # optimizer steps done
        self.history: list[dict] = []
        self._partial = _zero_sums()
        self._rng_state = None      # the epoch generator's state when stopped mid-epoch
        self._checkpoint_desc = None
        self.lr_changes: list[list] = []  # [global step, new lr] of each resume that changed it
        self.interrupted = False
        self.stop_signal = None      # the signal that stopped training, if one did
        self._stop_requested = False

    def _check_x(self, x, what):
        """Examples of the model's input shape; other arrays with as many values are reshaped.

        Values are checked before any training (:mod:`numpyvae.app.data.checks`):
        no NaN or infinity, and [0, 1] for a Bernoulli decoder.
        """
        x = np.asarray(x)
        shape = tuple(self.model.input_shape)  # one example's: (784,), or (1, 28, 28) for images
        size = math.prod(shape)
        if x.ndim >= 2 and len(x) > 0 and x.shape[1:] != shape and math.prod(x.shape[1:]) == size:
            x = x.reshape(len(x), *shape)  # rows, (N, H, W) or (N, C, H, W): the model's shape
        if x.shape[1:] != shape or len(x) == 0:
            raise ValueError(f"{what}: expected shape (N >= 1, {', '.join(map(str, shape))}), "
                             f"got {x.shape}; arrays with {size} values per example, such as "
                             f"(N, H, W) or (N, C, H, W), are reshaped to it")
        check_training_data(x, _likelihood_name(self.model), what)
        return np.ascontiguousarray(x, dtype=self.model.dtype)

    def _check_y(self, y, x, what):
        """The labels of a conditional model (checked), None for any other model."""
        if not self.conditional:
            return None
        if y is None:
            raise ValueError(f"{type(self.model).__name__} is conditional: training needs the "
                             f"class labels ({what})")
        y = np.asarray(y)
        if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"{what}: expected {len(x)} integer class labels, got shape "
                             f"{y.shape} and dtype {y.dtype}")
        return y

    def _given(self, y, rows=slice(None)):
        """The keyword arguments that pass a conditional model its labels (none otherwise)."""
        return {} if y is None else {"labels": y[rows]}

    # -------------------------------------------------------------- configuration

    def hyperparameters(self) -> dict:
        """The training settings; all but ``lr`` must stay the same for a resume."""
        return {"batch_size": self.batch_size, "lr": self.lr, "optimizer": self.optimizer_name,
                "beta": self.beta, "kl_warmup": self.kl_warmup, "binarize": self.binarize,
                "seed": self.seed, "n_train": len(self.x_train), "iw_train": self.iw_train}

    def beta_at(self, step: int) -> float:
        """The KL weight used at optimizer step ``step`` (0-based)."""
        if self.kl_warmup <= 0:
            return self.beta
        return self.beta * min(1.0, (step + 1) / self.kl_warmup)

    def _beta_note(self, metrics) -> str:
        """The KL weight in effect, when it is not the plain ELBO's 1 (e.g. during warm-up)."""
        beta = metrics.get("beta")
        if beta is None or (self.kl_warmup == 0 and self.beta == 1.0):
            return ""
        if self.kl_warmup > 0 and self.global_step < self.kl_warmup:
            return f", β {beta:.3g} of {self.beta:g} in warm-up"
        return f", β {beta:.3g}"

    def resume_description(self, epochs) -> str:
        """What a resumed run continues from: epochs done, the step within the next, the total."""
        if self.epoch >= epochs:
            return (f"resuming {self.out_dir}: all {self.epoch} epochs are already done "
                    f"(global step {self.global_step}); nothing to train, raise the number of "
                    f"epochs to train longer")
        where = (f"epoch {self.epoch + 1} from its start" if self.step_in_epoch == 0 else
                 f"epoch {self.epoch + 1} at step {self.step_in_epoch + 1} (stopped mid-epoch)")
        return (f"resuming {self.out_dir}: {self.epoch} of {epochs} epochs done, global step "
                f"{self.global_step}; continuing with {where}")

    def request_stop(self) -> None:
        """Ask training to stop after the current step (what Ctrl-C does)."""
        self._stop_requested = True

    # -------------------------------------------------------------- running

    def fit(self, epochs: int, resume: bool = False) -> list[dict]:
        """Train until ``epochs`` epochs are done; return the metrics of every epoch.

        With ``resume`` and a checkpoint in ``out_dir``, continue from it
        (rewriting model.npz and metrics.jsonl from it, in case a kill
        interrupted their last writes); without a checkpoint, start afresh.
        Without ``resume``, ``out_dir`` must be absent or empty. The folder is
        locked while training (:class:`RunLockedError` if another process
        holds it).

        The loop itself is the two ``for`` loops below: every epoch takes the
        examples in a new order, and every batch is one call of the training
        step (:func:`numpyvae.step.step` on the NumPy reference).
        """
        epochs = positive_int(epochs, "epochs")
        self.interrupted = self._stop_requested = False
        self.stop_signal = None
        model, X, B = self.model, self.x_train, self.batch_size
        with self._run_folder(epochs, resume), self._interrupt_guard():
            self._stop_if_signalled_while_starting()
            while self.epoch < epochs and not self._stop_requested:
                e, rng, order, n_steps, bar = self._start_epoch(epochs)
                start = time.perf_counter()
                # Overflow is detected below, as a non-finite loss, and reported once, clearly.
                with np.errstate(over="ignore", invalid="ignore", divide="ignore"), \
                        contextlib.closing(bar):
                    for k in range(self.step_in_epoch, n_steps):
                        idx = order[k * B:(k + 1) * B]
                        xb = X[idx]
                        if self.binarize == "dynamic":
                            xb = _binarize(xb, "dynamic", rng)
                        labels = None if self.y_train is None else self.y_train[idx]
                        # the backend's step, one for all models (asked each time: a
                        # first run moves from NumPy to Numba when its kernels are ready)
                        result = step_of(model.backend)(
                            model, self.optimizer, xb, labels=labels, objective=self.objective,
                            beta=self.beta_at(self.global_step), rng=rng)
                        self._count_step(result, e, k, n_steps, len(idx), bar)
                        if self._stop_requested and k + 1 < n_steps:
                            break
                seconds = time.perf_counter() - start
                if self.step_in_epoch < n_steps:  # stopped mid-epoch: where it is, kept
                    self._partial["seconds"] += seconds
                    self._rng_state = rng.bit_generator.state
                    self.save_checkpoint()
                else:
                    self._end_epoch(e, n_steps, epochs, self._partial["seconds"] + seconds)
        if self._stop_requested:
            self.interrupted = True
        return list(self.history)

    @contextlib.contextmanager
    def _run_folder(self, epochs, resume):
        """Hold the run folder (if there is one) while training: locked, resumed, configured."""
        if self.out_dir is None:
            yield
            return
        checkpoint_file = self.out_dir / CHECKPOINT_FILE

        def new_run():
            return not (resume and (checkpoint_file.exists()
                                    or (self.out_dir / CONFIG_FILE).is_file()))

        if new_run():  # refuse a folder of someone else's files before writing a lock file in it
            runfolder.check_new(self.out_dir)
        with runfolder.lock(self.out_dir):
            if new_run():
                runfolder.check_new(self.out_dir)  # again: another process may have started
            elif checkpoint_file.exists():
                self.load_checkpoint(checkpoint_file)
                if self.progress:
                    _write_line(self.resume_description(epochs))
            elif resume and self.progress:
                _write_line(f"no checkpoint in {self.out_dir} yet: starting from epoch 1")
            self._write_config(epochs)
            if self._test_data is not None and not (
                    self.out_dir / runfolder.TEST_DATA_FILE).is_file():
                runfolder.write_test_data(self.out_dir, *self._test_data)
            if self.epoch > 0 or self.step_in_epoch > 0:
                self._write_copies()
            yield

    def _stop_if_signalled_while_starting(self):
        """A Ctrl-C or SIGTERM that came before the guard was in place: stop now, not lose it."""
        signum = interrupts.take_pending()
        if signum is not None:
            self._stop_requested = True
            self.stop_signal = signum
            _write_line(f"{signal.Signals(signum).name} received while starting: stopping")

    def _start_epoch(self, epochs):
        """Epoch ``self.epoch``: its generator (where a stopped run left it), order and bar."""
        e = self.epoch
        rng = epoch_rng(self.seed, e)
        order = rng.permutation(len(self.x_train))
        n_steps = math.ceil(len(self.x_train) / self.batch_size)
        if self.step_in_epoch > 0:
            rng.bit_generator.state = self._rng_state
        bar = _progress_bar(n_steps, self.step_in_epoch, f"epoch {e + 1}/{epochs}", self.progress)
        return e, rng, order, n_steps, bar

    def _count_step(self, result, e, k, n_steps, n, bar):
        """After step ``k`` of epoch ``e``: refuse a non-finite loss, add the batch's losses up."""
        if not math.isfinite(result.loss):  # no step was taken on it
            raise self._diverged(result.loss, e, k, n_steps)
        self.global_step += 1
        self.step_in_epoch = k + 1
        sums = self._partial
        sums["recon"] += result.recon * n
        sums["kl"] += result.kl * n
        sums["objective"] += result.loss * n
        sums["n"] += n
        bar.update(1)
        if k % 20 == 0 or k == n_steps - 1:
            bar.set_postfix(_running(sums, has_kl_term(self.model)), refresh=False)
        if self.step_callback is not None:
            self.step_callback(self)

    def _end_epoch(self, e, n_steps, epochs, seconds):
        """Epoch ``e`` is done: check the weights, evaluate, save the checkpoint, report."""
        if not np.all(np.isfinite(self.model.flat_params)):
            raise self._diverged(float("nan"), e, n_steps - 1, n_steps, what="the weights")
        metrics = self._epoch_metrics(e, self._partial, seconds)
        for key in ("train_loss", "test_loss"):
            if metrics[key] is None and (key == "train_loss" or self.x_test is not None):
                raise self._diverged(float("nan"), e, n_steps - 1, n_steps,
                                     what=f"the epoch's {key.replace('_', ' ')}")
        self.history.append(metrics)
        self.epoch, self.step_in_epoch = e + 1, 0
        self._partial, self._rng_state = _zero_sums(), None
        self.save_checkpoint()
        if self.progress:
            _write_line(_summary(metrics, epochs, self.iw_train, self._beta_note(metrics)))
            if metrics["active_units"] == 0:
                _write_line(collapse_warning(self.model.latent_dim))
        if self.callback is not None:
            self.callback(dict(metrics))

    def _epoch_metrics(self, e, sums, seconds) -> dict:
        n = max(sums["n"], 1)
        recon, kl = sums["recon"] / n, sums["kl"] / n
        has_kl = has_kl_term(self.model)
        metrics = {"epoch": e + 1, "step": self.global_step, "train_loss": recon + kl,
                   "train_recon": recon, "train_kl": kl if has_kl else None,
                   "train_objective": sums["objective"] / n,
                   "beta": self.beta_at(self.global_step - 1) if has_kl else None,
                   "test_loss": None,
                   "test_recon": None, "test_kl": None, "seconds": seconds,
                   "samples_per_second": sums["n"] / seconds if seconds > 0 else None,
                   "eval_seconds": None, "active_units": None, "kl_per_dim": None}
        x, y = (self.x_train, self.y_train) if self.x_test is None else (self.x_test, self.y_test)
        if isinstance(self.model, VAE) and len(x) >= 2:  # a spread needs two codes or more
            n = LATENT_STATS_EXAMPLES
            stats = latent.latent_statistics(self.model, x[:n], batch_size=self.eval_batch_size,
                                             labels=None if y is None else y[:n])
            metrics["active_units"] = stats.active_units
            metrics["kl_per_dim"] = [float(v) for v in stats.kl_per_dim]
        if self.x_test is not None:
            t0 = time.perf_counter()
            metrics.update(self.evaluate())
            metrics["eval_seconds"] = time.perf_counter() - t0
        return {k: _json_safe(v) for k, v in metrics.items()}

    def evaluate(self, x=None, y=None) -> dict:
        """``test_loss`` (negative ELBO), ``test_recon`` and ``test_kl`` on ``x`` (default: x_test).

        ``y``: the labels of ``x``, for a conditional model.

        The noise is drawn from the same seeded generator each time, so the
        values of successive epochs differ only by the weights.
        """
        if x is None:
            x, y = self.x_test, self.y_test
        else:
            x = eval_inputs(self._check_x(x, "x"), self.binarize)
            y = self._check_y(y, x, "y")
        rng = np.random.default_rng([self.seed, STREAM_EVAL])
        r = evaluate.elbo(self.model, x, batch_size=self.eval_batch_size, rng=rng,
                          **self._given(y))
        return {"test_loss": r.recon + r.kl, "test_recon": r.recon,
                "test_kl": r.kl if has_kl_term(self.model) else None}

    def _diverged(self, loss, e, k, n_steps, what="the loss"):
        where = (f"{what} became {loss} at epoch {e + 1}, step {k + 1} of {n_steps} "
                 f"(global step {self.global_step + 1})")
        lr = f"{self.lr / 10:g}"
        if self.out_dir is None:
            kept = "no checkpoint is kept (no output folder)"
            remedy = (f"try a smaller learning rate (lr={lr}), KL warm-up (kl_warmup=1000), "
                      f"or dtype='float64'")
        else:
            if self._checkpoint_desc is None:
                kept = f"no checkpoint had been written to {self.out_dir} yet"
                how = "start it again"
            else:
                kept = (f"the last good checkpoint ({self._checkpoint_desc}) is kept in "
                        f"{self.out_dir}")
                how = "continue from it"
            remedy = (f"to {how} with a smaller learning rate: numpyvae train --out "
                      f"{self.out_dir} --resume --lr {lr} (from Python: resume=True, lr={lr}); "
                      f"or start a new run folder with KL warm-up (--kl-warmup 1000) or "
                      f"--dtype float64")
        return NonFiniteLossError(f"training stopped: {where}; {kept}; {remedy}")

    @contextlib.contextmanager
    def _interrupt_guard(self):
        """Turn the first Ctrl-C or SIGTERM into a clean stop after the current step."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def on_signal(signum, frame):
            if self._stop_requested:
                raise KeyboardInterrupt
            self._stop_requested = True
            self.stop_signal = signum
            name = "interrupted" if signum == signal.SIGINT else (
                f"{signal.Signals(signum).name} received")
            again = "Ctrl-C" if signum == signal.SIGINT else "the signal"
            _write_line(f"{name}: finishing this step, saving a checkpoint, then stopping "
                        f"({again} again to abort at once)")

        previous = {s: signal.signal(s, on_signal) for s in STOP_SIGNALS}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    # -------------------------------------------------------------- checkpoints

    def _write_config(self, epochs):
        checkpoint.write_config(self.out_dir, self.model,
                                {**self.hyperparameters(), "epochs": epochs}, self.config_extra,
                                test_data=self._test_data is not None)

    def _trainer_state(self) -> dict:
        return {"format": RUN_FORMAT, "epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
                "global_step": self.global_step, "partial": self._partial,
                "rng_state": self._rng_state, "history": self.history,
                "hyperparameters": self.hyperparameters(), "model": self.model.config(),
                "lr_changes": self.lr_changes}

    def save_checkpoint(self) -> None:
        """Write checkpoint.npz, then its copies model.npz and metrics.jsonl (each atomically)."""
        if self.out_dir is None:
            return
        checkpoint.write(self.out_dir, self.model, self.optimizer, self._trainer_state())
        self._checkpoint_desc = checkpoint.description(self.epoch, self.step_in_epoch)

    def _write_copies(self) -> None:
        """model.npz and metrics.jsonl: what the checkpoint holds, in the files users read."""
        checkpoint.write_copies(self.out_dir, self.model, self.history)

    def load_checkpoint(self, path) -> None:
        """Restore weights, optimizer state, counters, RNG state and metrics from ``path``.

        Everything is checked before anything is changed
        (:func:`numpyvae.app.checkpoint.read`). Raises :class:`RunFolderError`
        naming the file and the problem.
        """
        state = checkpoint.read(path, self.model, self.optimizer,
                                hyperparameters=self.hyperparameters(),
                                n_train=len(self.x_train), batch_size=self.batch_size,
                                metric_keys=METRIC_KEYS)
        self.lr_changes = [list(c) for c in state.get("lr_changes", [])]
        if state["hyperparameters"].get("lr") != self.lr:
            self.lr_changes.append([state["global_step"], self.lr])
        self.epoch, self.step_in_epoch = state["epoch"], state["step_in_epoch"]
        self.global_step, self.history = state["global_step"], state["history"]
        self._partial, self._rng_state = state["partial"], state["rng_state"]
        self._checkpoint_desc = "the one resumed from"


def _zero_sums():
    return {"recon": 0.0, "kl": 0.0, "objective": 0.0, "n": 0, "seconds": 0.0}


def has_kl_term(model) -> bool:
    """Whether the model's loss is a negative ELBO (a VAE), not a reconstruction loss alone."""
    return getattr(model, "kind", "vae") != "autoencoder"


def _running(sums, has_kl=True):
    n = max(sums["n"], 1)
    recon, kl = sums["recon"] / n, sums["kl"] / n
    if not has_kl:
        return {"recon loss": f"{recon:.2f}"}
    return {"loss": f"{recon + kl:.2f}", "recon": f"{recon:.2f}", "kl": f"{kl:.2f}"}


def _summary(m, epochs, iw_train=None, beta_note=""):
    """The line printed after each epoch: a VAE's -ELBO with its terms, or an autoencoder's
    reconstruction loss (it has no ELBO and no KL)."""
    speed = "" if m["samples_per_second"] is None else f", {m['samples_per_second']:.0f} samples/s"
    if m["train_kl"] is None:
        test = "" if m["test_loss"] is None else f" | test {m['test_recon']:.2f}"
        return (f"epoch {m['epoch']}/{epochs}: reconstruction loss: train "
                f"{m['train_recon']:.2f}{test} | {m['seconds']:.1f} s{speed}")
    test = "" if m["test_loss"] is None else (
        f" | test -ELBO {m['test_loss']:.2f} (recon {m['test_recon']:.2f}, KL {m['test_kl']:.2f})")
    units = "" if m.get("active_units") is None else (
        f" | active units {m['active_units']}/{len(m['kl_per_dim'])}, KL per dim "
        + " ".join(f"{v:.1f}" for v in sorted(m["kl_per_dim"], reverse=True)[:5])
        + (" ..." if len(m["kl_per_dim"]) > 5 else ""))
    iw = "" if iw_train is None else f", IWAE loss (K={iw_train}) {m['train_objective']:.2f}"
    return (f"epoch {m['epoch']}/{epochs}: train -ELBO {m['train_loss']:.2f} "
            f"(recon {m['train_recon']:.2f}, KL {m['train_kl']:.2f}{beta_note}){iw}{test} | "
            f"{m['seconds']:.1f} s{speed}{units}")


def collapse_warning(latent_dim) -> str:
    """The message for an epoch that ends with no active latent unit."""
    return (f"warning: posterior collapse: none of the {latent_dim} latent dimensions is active "
            f"(the posterior mean no longer varies with the input, variance <= "
            f"{latent.ACTIVE_THRESHOLD}); try KL warm-up (--kl-warmup STEPS, e.g. 5000), "
            f"free bits (--free-bits NATS, e.g. 0.5) or a smaller --beta")


def _progress_bar(total, initial, desc, enabled):
    from tqdm import tqdm  # the text bar: tqdm.auto warns in notebooks without ipywidgets

    return tqdm(total=total, initial=initial, desc=desc, unit="batch", disable=not enabled,
                leave=False, mininterval=0.5, file=sys.stderr, dynamic_ncols=True)


def _write_line(text):
    from tqdm import tqdm  # the text bar: tqdm.auto warns in notebooks without ipywidgets

    tqdm.write(text, file=sys.stderr)


def _binarize(x, mode, rng):
    # Trainer's argument ``binarize`` shadows the function inside __init__.
    return binarize(x, mode, rng)


def _likelihood_name(model) -> str:
    """``"bernoulli"`` or ``"gaussian"``, whether the model stores a name or an object."""
    lik = getattr(model, "likelihood", "")
    if isinstance(lik, str):
        return lik
    return str(getattr(lik, "name", type(lik).__name__)).lower().removesuffix("likelihood")


def positive_int(value, what: str) -> int:
    """``value`` as an int if it is a positive integer; otherwise a ValueError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)



def fit(model, x_train, x_test=None, *, epochs=10, batch_size=128, lr=1e-3, optimizer="adam",
        beta=1.0, kl_warmup=0, binarize="none", seed=0, progress=True, out_dir=None,
        resume=False, callback=None, iw_train=None, y_train=None, y_test=None) -> list[dict]:
    """Train ``model`` on ``x_train``; return one metrics dict per epoch.

    Each dict has the keys of :data:`METRIC_KEYS`: ``epoch``, ``train_loss``
    (the negative ELBO, nats per example), ``train_recon``, ``train_kl``,
    ``test_loss``/``test_recon``/``test_kl`` (None without ``x_test``),
    ``seconds`` (training time of the epoch, evaluation excluded) and
    ``samples_per_second``, ``active_units`` and ``kl_per_dim`` (VAE only),
    among others. ``iw_train=K`` trains on the importance-weighted bound with
    K samples per example (Burda et al., 2016); ``y_train``/``y_test`` are the
    labels a conditional model needs. See :class:`Trainer` for the
    arguments and the module docstring for ``out_dir`` and ``resume``.

    Examples
    --------
    >>> import numpyvae
    >>> from numpyvae.app.data import load_dataset
    >>> from numpyvae.app.train import fit
    >>> ds = load_dataset("shapes")                                  # doctest: +SKIP
    >>> model = numpyvae.VAE(784, hidden_dims=(400,), latent_dim=20)  # doctest: +SKIP
    >>> history = fit(model, ds.x_train, ds.x_test, epochs=5)        # doctest: +SKIP
    """
    trainer = Trainer(model, x_train, x_test, batch_size=batch_size, lr=lr, optimizer=optimizer,
                      beta=beta, kl_warmup=kl_warmup, binarize=binarize, seed=seed,
                      progress=progress, out_dir=out_dir, callback=callback,
                      iw_train=iw_train, y_train=y_train, y_test=y_test)
    return trainer.fit(epochs, resume=resume)
