"""What every benchmark shares: data, timing, FLOP counts, the machine's description, results.

* :func:`load_data` — Fashion-MNIST (or MNIST) from a folder of the four
  standard IDX files, binarised at 0.5, or random binary data of the same
  size (60000 x 784) when no folder is given. Never the network.
* :func:`median_time` — warm-up, then the median of repeats.
* :func:`paths_in_turn`, :func:`ratio_of_paths` — two ways of taking the
  same training step, in turn in one process, and the per-round ratio.
* :func:`step_flops` — matmul FLOPs of one VAE training step.
* :func:`matmul_peak` — the machine's measured matmul FLOP rate (the
  yardstick for "fraction of the machine").
* :func:`machine` — CPU, threads, library versions, load average.
* :func:`save_json` — results under ``benchmarks/results/``.

Threads: every benchmark runs with the same number of threads for NumPy's
and SciPy's OpenBLAS, Numba and PyTorch (:func:`set_threads`, all cores by
default), and records it. OpenMP's wait policy (Numba's threads and
PyTorch's alike) is left at its default, spin for a while then sleep, and
recorded: on this machine, a virtual one, a sleeping thread takes hundreds
of microseconds to wake, so ``OMP_WAIT_POLICY=passive`` halves the speed of
a two-thread matmul when the machine is otherwise idle; when other work
keeps the cores busy, the spinning costs *both* numpyvae and PyTorch 5 to
15x, and ``passive`` is the better choice. Measure on an idle machine.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
#: Where results go: $NUMPYVAE_BENCH_RESULTS, else benchmarks/results/.
RESULTS = Path(os.environ.get("NUMPYVAE_BENCH_RESULTS", ROOT / "results"))
if str(ROOT.parent) not in sys.path:  # run as a script from anywhere: import the checkout
    sys.path.insert(0, str(ROOT.parent))

from numpyvae.fileio import atomic_write, atomic_write_text  # noqa: E402, F401 (re-exported)

#: The default recipe: 784-400-20, Bernoulli, Adam, batch 128, float32.
INPUT, HIDDEN, LATENT = 784, 400, 20
N_EXAMPLES = 60000


def threads() -> int:
    """The thread count every library is given: $NUMPYVAE_BENCH_THREADS, else every core."""
    return int(os.environ.get("NUMPYVAE_BENCH_THREADS", os.cpu_count() or 1))


def set_threads(n: int | None = None) -> int:
    """Pin the thread count of the libraries that read it at start-up; call before importing them.

    OpenBLAS (NumPy's and SciPy's copies) and OpenMP read their variables
    once, when loaded, so this must run first; PyTorch is told again with
    ``torch.set_num_threads`` by :mod:`benchmarks.torch_vae`.
    """
    n = threads() if n is None else n
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "NUMBA_NUM_THREADS"):
        os.environ.setdefault(var, str(n))
    return n


def load_data(data_dir=None, dtype="float32", n=N_EXAMPLES, seed=0):
    """Training images as an ``(n, 784)`` array of 0/1 in ``dtype``, and where they came from.

    ``data_dir`` holds ``train-images-idx3-ubyte(.gz)`` (Fashion-MNIST or
    MNIST); without it, random pixels, each 1 with probability 0.5 (the same
    size and the same arithmetic per step: speed does not depend on values).
    """
    if data_dir is None:
        rng = np.random.default_rng(seed)
        return (rng.random((n, INPUT)) < 0.5).astype(dtype), "random binary (60000 x 784)"
    from numpyvae.app.data.idx import read_idx

    folder = Path(data_dir)
    candidates = [folder / "train-images-idx3-ubyte.gz", folder / "train-images-idx3-ubyte"]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise FileNotFoundError(f"{folder}: no train-images-idx3-ubyte(.gz) in this folder")
    images = read_idx(path).reshape(-1, INPUT)[:n]
    return (images >= 128).astype(dtype), f"{path.parent.name}/{path.name} (binarised at 0.5)"


def batches(x, batch_size):
    """An endless cycle of contiguous batches (the data were shuffled once, so order is fixed)."""
    n = len(x) - len(x) % batch_size
    while True:
        for i in range(0, n, batch_size):
            yield x[i:i + batch_size]


def shuffled(x, seed=0):
    """``x`` with its rows shuffled once, in place (no second copy of the data set)."""
    np.random.default_rng(seed).shuffle(x)
    return x


def step_flops(batch, sizes=(INPUT, HIDDEN, LATENT)):
    """Matmul FLOPs of one VAE training step (forward, backward; the first layer needs no dx).

    Each ``(B, I) @ (I, O)`` product is ``2 B I O``; per layer the forward
    has one, the backward two (``dW`` and ``dx``), except that the first
    layer of the encoder skips ``dx``.
    """
    d, *hidden, latent = sizes
    enc = [d, *hidden, 2 * latent]
    dec = [latent, *hidden[::-1], d]
    layers = list(zip(enc[:-1], enc[1:], strict=True)) + list(zip(dec[:-1], dec[1:], strict=True))
    per_product = [2 * batch * i * o for i, o in layers]
    return 3 * sum(per_product) - per_product[0]


def median_time(fn, repeats=7, number=1, warmup=1, min_time=0.0):
    """Median seconds per call of ``fn`` over ``repeats`` timings of ``number`` calls each."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - t0) / number)
    return statistics.median(times), times


def paths_in_turn(paths, step, batch, steps, rounds, warmup=2):
    """Samples/s of each path, round by round, the paths taking turns in one process.

    ``paths`` maps a name to a function that switches the process to that
    path; ``step(name, i)`` then takes training step ``i`` (of ``steps`` a
    round, of ``batch`` examples each) of that path's own model. The first
    ``warmup`` rounds are not kept. Returns ``{name: [samples/s of each round]}``.
    """
    rates = {name: [] for name in paths}
    for r in range(rounds + warmup):
        for name, switch in paths.items():
            switch()
            start = time.perf_counter()
            for i in range(steps):
                step(name, i)
            if r >= warmup:
                rates[name].append(batch * steps / (time.perf_counter() - start))
    return rates


def ratio_of_paths(rates, new, old, steps):
    """The per-round ratios ``new / old`` of :func:`paths_in_turn`'s rates: median, quartiles.

    Each round's ratio compares two blocks of steps taken one after the
    other, so the machine's slow drifts fall out of it.
    """
    ratios = np.array(rates[new]) / np.array(rates[old])
    return {"samples_per_s": {k: float(np.median(v)) for k, v in rates.items()},
            "ratio_median": float(np.median(ratios)),
            "ratio_quartiles": [float(np.quantile(ratios, q)) for q in (0.25, 0.75)],
            "rounds": len(ratios), "steps_per_round": steps}


def matmul_peak(dtype="float32", sizes=(512, 1024, 2048), repeats=5):
    """The measured matmul FLOP rate (FLOP/s): the best median over square sizes, via NumPy's BLAS.

    The machine's practical peak for this dtype and thread count; the same
    OpenBLAS kernels serve the Numba backend (SciPy's copy of the library).
    """
    best = 0.0
    rng = np.random.default_rng(0)
    for n in sizes:
        a = rng.random((n, n), dtype=np.float64).astype(dtype)
        b = rng.random((n, n), dtype=np.float64).astype(dtype)
        c = np.empty((n, n), dtype=dtype)
        number = max(1, int(2e9 / (2 * n**3)))
        t, _ = median_time(lambda a=a, b=b, c=c: np.matmul(a, b, out=c), repeats=repeats,
                           number=number)
        best = max(best, 2 * n**3 / t)
    return best


def interpreter(executable=None) -> str | None:
    """An interpreter as a results file records it: in which kind of install, not where.

    ``"venv: bin/python"`` for one inside a virtual environment (its
    ``pyvenv.cfg`` one folder above ``bin``), ``"python3.11"`` for another;
    never the path, which names a particular machine's folders.
    """
    if executable is None:
        return None
    path = Path(executable)
    if (path.parent.parent / "pyvenv.cfg").is_file():
        return f"venv: {path.parent.name}/{path.name}"
    return path.name


def machine() -> dict:
    """Where the numbers were measured."""
    import numba
    import scipy

    info = {
        "cpu": _cpu_name(), "cores": os.cpu_count(), "threads": threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
        "python": platform.python_version(), "numpy": np.__version__,
        "scipy": scipy.__version__, "numba": numba.__version__,
        "numba_threading_layer": _threading_layer(), "numba_backend_blas": _blas_name(),
        "load_average_1min": os.getloadavg()[0],
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        info["torch"] = None
    return info


def _cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _blas_name():
    from numpyvae.fast import numba_ops

    return numba_ops.BLAS


def _threading_layer():
    import numba

    try:
        return numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet
        return "not initialised"


def save_json(name, payload) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    atomic_write_text(path, json.dumps(payload, indent=2, default=_jsonable) + "\n")
    return path


def _jsonable(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (VmHWM), in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")
