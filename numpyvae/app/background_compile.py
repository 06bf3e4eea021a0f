"""The first run on a machine: training starts at once while the Numba kernels compile.

The Numba backend compiles its kernels the first time they run (for most of
a minute) and keeps them in Numba's on-disk cache; later runs load them in a
fraction of a second (``benchmarks/bench_cold_start.py`` measures both,
command by command; ``benchmarks/results/cold_start.json``). So
that a student's first ``numpyvae train`` does not wait that long for its
first step, when the run's backend was not chosen (no ``--backend``, no
``$NUMPYVAE_BACKEND``) and its kernels are not in the cache:

1. a child process (``python -m numpyvae.app.background_compile``) loads the
   run's freshly built model from a model file and takes one training step
   and one evaluation of it on the Numba backend
   (:func:`numpyvae.fast.warmup.warmup_step`): it compiles exactly the
   kernels the run needs, into the cache;
2. meanwhile the run trains on the NumPy reference backend, which compiles
   nothing: the same model, optimizer and random streams;
3. after the first step that ends with the child finished, the model and
   its optimizer move to the Numba backend, which loads the kernels from the
   cache, and the log says from which step.

Which steps ran on NumPy depends on how long compiling took, so such a first
run is not reproducible bit for bit, unlike every run after it (and every
resume). ``NUMPYVAE_COMPILE=wait`` compiles in the run's own process before
the first step instead, as an explicit ``--backend numba`` does.

Whether the kernels are cached is found out by taking the same warm-up step
in this process with Numba's compiler refused (:func:`kernels_cached`): it
loads every kernel from the cache, or stops at the first one it would have to
compile.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ..backend import get_backend
from ..fast.warmup import warmup_step
from ..iwae import ImportanceWeighted
from ..optim import OPTIMIZERS

#: The environment variable that chooses: ``background`` (the default) or ``wait``.
MODE_VAR = "NUMPYVAE_COMPILE"
MODES = ("background", "wait")
MODEL_FILE = "model.npz"


class _WouldCompile(Exception):
    """Raised by :class:`_RefuseToCompile` where Numba was about to compile a kernel."""


def compile_mode() -> str:
    """``$NUMPYVAE_COMPILE``: ``background`` (unset) or ``wait``; anything else is refused."""
    mode = os.environ.get(MODE_VAR, "").strip().lower() or "background"
    if mode not in MODES:
        raise ValueError(f"${MODE_VAR} must be one of {', '.join(MODES)}, got "
                         f"{os.environ[MODE_VAR]!r}")
    return mode


def kernels_cached(step) -> bool:
    """Call ``step()`` with Numba's compiler refused: True when every kernel came from the cache.

    A Numba dispatcher looks in its on-disk cache first and announces a
    ``numba:compile`` event only when it must compile; the listener stops
    there, before any compiling. Kernels found in the cache stay loaded.
    """
    from numba.core import event

    class _RefuseToCompile(event.Listener):
        def on_start(self, event):
            raise _WouldCompile

        def on_end(self, event):
            pass

    with event.install_listener("numba:compile", _RefuseToCompile()):
        try:
            step()
        except _WouldCompile:
            return False
    return True


class BackgroundCompile:
    """The child process compiling a model's kernels, and the move to Numba once it is done.

    Building one saves the model to a temporary model file, starts the child
    (``command``, by default this module run as a script on that file) and
    moves the model and optimizer to the NumPy reference.
    :meth:`switch_when_ready` (called after each training step) moves them
    to the Numba backend once the child has finished. :meth:`finish` waits
    for a child still compiling when training is over, so that the next run
    finds the kernels; :meth:`close` stops it.
    """

    def __init__(self, model, optimizer, *, batch_size, optimizer_name, lr, iw_train=None,
                 num_classes=None, log=print, progress=False, command=None):
        self.model, self.optimizer, self.log = model, optimizer, log
        # while a progress bar is drawn, a line must go around it
        self._say_midway = _write_line if progress else log
        self.target = get_backend("numba")
        self.started = time.perf_counter()
        self.switched_at_step = None
        # the child deletes the model file (and this folder) as soon as it has read it, so
        # that a training process killed with -9 leaves nothing behind
        self._folder = tempfile.TemporaryDirectory(prefix="numpyvae-compile-",
                                                   ignore_cleanup_errors=True)
        folder = Path(self._folder.name)
        model.save(folder / MODEL_FILE)
        if command is None:  # the child of this module's main(); tests give their own
            command = [sys.executable, "-m", "numpyvae.app.background_compile",
                       str(folder / MODEL_FILE), "--batch-size", str(int(batch_size)),
                       "--optimizer", optimizer_name, "--lr", repr(float(lr)),
                       "--delete-model-file"]
            if iw_train:
                command += ["--iw-train", str(int(iw_train))]
            if num_classes:
                command += ["--classes", str(int(num_classes))]
        self._errors = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close(); no name
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self._errors,
                                        stdin=subprocess.DEVNULL,
                                        preexec_fn=_die_with_parent)
        model.set_backend("numpy")
        optimizer.set_backend("numpy")
        # NumPy's BLAS on one thread while the child compiles on the other core: two
        # threads would spin against the compiler and slow both down
        self._blas_threads = _set_numpy_blas_threads(1)
        log("compiling the numba kernels in the background, once (later runs load them from "
            "the cache); training starts now on the NumPy reference and moves to numba when "
            "they are ready")

    def switch_when_ready(self, trainer=None) -> bool:
        """If the child has finished: move to Numba (or say why not). True once it has ended.

        Given as a trainer's ``step_callback``, it takes itself off once it has ended.
        """
        if self.process is None:
            return True
        if self.process.poll() is None:
            return False
        step = getattr(trainer, "global_step", None)
        if getattr(trainer, "step_callback", None) == self.switch_when_ready:
            trainer.step_callback = None
        report = self._ended()
        if report is not None:
            self.model.set_backend(self.target)
            self.optimizer.set_backend(self.target)
            self.switched_at_step = step
            where = "" if step is None else f" from step {step + 1}"
            self._say_midway(f"compiled {report['compiled']} numba kernels in "
                     f"{report['seconds']:.1f} s: training goes on with the numba "
                     f"backend{where}")
        return True

    def finish(self) -> None:
        """Training is over: wait for a child still compiling, so the next run finds the kernels."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.log(f"the numba kernels are still compiling ("
                     f"{time.perf_counter() - self.started:.0f} s so far): waiting for them, "
                     f"so that the next run starts with them")
            self.process.wait()
            report = self._ended()
            if report is not None:
                self.log(f"compiled {report['compiled']} numba kernels in "
                         f"{report['seconds']:.1f} s")
        else:
            self._ended()

    def _ended(self):
        """Read the finished child's report; on a failure say so once. None when it failed."""
        process, self.process = self.process, None
        _set_numpy_blas_threads(self._blas_threads)
        out = process.stdout.read().decode(errors="replace") if process.stdout else ""
        process.wait()
        if process.returncode == 0:
            for line in reversed(out.splitlines()):
                try:
                    return json.loads(line)
                except ValueError:
                    continue
        self._errors.seek(0)
        lines = self._errors.read().decode(errors="replace").strip().splitlines()
        why = lines[-1] if lines else f"exit status {process.returncode}"
        self._say_midway(f"compiling the numba kernels failed ({why}): training goes on with the "
                         f"NumPy reference")
        return None

    def close(self) -> None:
        """Stop a child still running and remove the temporary files."""
        if self.process is not None:
            _set_numpy_blas_threads(self._blas_threads)
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover - a child ignoring SIGTERM
                self.process.kill()
                self.process.wait()
            if self.process.stdout:
                self.process.stdout.close()
            self.process = None
        self._errors.close()
        self._folder.cleanup()


def _set_numpy_blas_threads(n):
    """Set the thread count of NumPy's OpenBLAS, if it can be found; return the count before."""
    from ..fast.numba_blas import numpy_blas

    found = numpy_blas()
    switch = None if found is None else found[1]
    if switch is None or n is None:
        return None
    get, set_ = switch
    before = get()
    set_(int(n))
    return before


def _write_line(text):
    """A line to the terminal that leaves the training's progress bar whole."""
    from tqdm import tqdm

    tqdm.write(text, file=sys.stderr)


def _die_with_parent():  # pragma: no cover - runs in the child, before exec
    """On Linux, have the kernel stop the child when the training process dies (kill -9 too)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _remove_with_folder(path: Path) -> None:
    """Delete the parent's temporary model file, and its folder once empty (errors ignored)."""
    for remove, target in ((os.unlink, path), (os.rmdir, path.parent)):
        try:
            remove(target)
        except OSError:
            return


def main(argv=None) -> int:
    """The child: compile the kernels a training step and an evaluation of a model file need."""
    parser = argparse.ArgumentParser(prog="python -m numpyvae.app.background_compile",
                                     description=main.__doc__)
    parser.add_argument("model_file")
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--optimizer", choices=sorted(OPTIMIZERS), required=True)
    parser.add_argument("--lr", type=float, required=True)
    parser.add_argument("--iw-train", type=int)
    parser.add_argument("--classes", type=int)
    parser.add_argument("--delete-model-file", action="store_true",
                        help="delete the model file, and its folder once empty, after reading it")
    args = parser.parse_args(argv)

    from ..fast.warmup import kernels_compiled
    from .modelfile import load

    start = time.perf_counter()
    model = load(args.model_file, backend="numba")
    if args.delete_model_file:
        _remove_with_folder(Path(args.model_file))
    rows = args.batch_size
    x = (np.random.default_rng(0).random((rows, *model.input_shape)) < 0.5).astype(model.dtype)
    labels = None if not args.classes else np.arange(rows, dtype=np.int64) % args.classes
    objective = None if not args.iw_train else ImportanceWeighted(args.iw_train)
    step = warmup_step(lambda: model, OPTIMIZERS[args.optimizer], x, args.lr,
                       batch_size=rows, labels=labels, objective=objective)
    step()
    print(json.dumps({"compiled": kernels_compiled(),
                      "seconds": time.perf_counter() - start}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
