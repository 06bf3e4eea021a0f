"""The cold start of each command: an empty kernel cache (a fresh install), then a cached one.

For each command, run as a user types it, in a fresh process of the
interpreter given by ``--python`` (by default this one; point it at a fresh
``python -m venv`` with the package installed as the README says):

* ``numpyvae train --epochs 2`` and ``numpyvae train --arch conv --epochs 2``
  (the embedded shapes data, no figures): the seconds from launch to the end
  of the first training step, and to the end of the command;
* ``numpyvae gradcheck`` and ``numpyvae inspect --tiny``: to the end of the
  command.

Each command runs first with an empty Numba cache folder of its own
(``NUMBA_CACHE_DIR``: everything it needs compiles, as on a fresh install)
and then once more with the cache that run filled. The first step is timed
by a few lines around the command (below, :data:`WRAPPER`) that wrap the step
function the training loop calls; the package is not changed. What the
command said about compiling (background or before the first step, how many
kernels in how long) is kept from its output.

Run:  python benchmarks/bench_cold_start.py [--python VENV/bin/python] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common

#: name -> the command's arguments after ``numpyvae``
COMMANDS = {
    "train": ["train", "--epochs", "2", "--no-figures"],
    "train --arch conv": ["train", "--arch", "conv", "--epochs", "2", "--no-figures"],
    "gradcheck": ["gradcheck"],
    "inspect --tiny": ["inspect", "--tiny"],
}

#: Runs the command in this process, writing the wall-clock time at which the first
#: training step returned to the file named by $BENCH_FIRST_STEP_FILE.
WRAPPER = r"""
import os, sys, time
import numpyvae.app.train as loop
original = loop.step_of
marker = os.environ["BENCH_FIRST_STEP_FILE"]
def step_of(backend):
    step = original(backend)
    def timed(*args, **kwargs):
        result = step(*args, **kwargs)
        if not os.path.exists(marker):
            with open(marker, "w") as f:
                f.write(repr(time.time()))
        return result
    return timed
loop.step_of = step_of
from numpyvae.app.cli import command
sys.argv = ["numpyvae", *sys.argv[1:]]
command()
"""

INSTALL = r"""
import json, importlib.metadata as md
import numpy as np, numba
import numpyvae
from numpyvae.fast import numba_ops
model = numpyvae.VAE(784, (400,), 20, backend="numba")
numpyvae.train_step(model, numpyvae.Adam(model.params, backend="numba"),
                    np.zeros((128, 784), np.float32))
def version(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None
print(json.dumps({"python": __import__("sys").version.split()[0], "numpy": np.__version__,
                  "numba": numba.__version__, "tbb": version("tbb"), "mkl": version("mkl"),
                  "numba_threading_layer": numba.threading_layer(),
                  "numba_backend_blas": numba_ops.BLAS}))
"""

COMPILED = re.compile(r"compiled (\d+) (?:numba )?kernels in ([\d.]+) s")


def _environment(cache):
    env = {k: v for k, v in os.environ.items() if k not in (
        "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "NUMBA_CACHE_DIR", "NUMPYVAE_BACKEND",
        "NUMPYVAE_COMPILE", "NUMBA_NUM_THREADS", "NUMBA_THREADING_LAYER")}
    env["NUMBA_CACHE_DIR"] = str(cache)
    return env


def run_command(python, args, cache, workdir):
    """Launch one command; seconds to its first training step (or None) and to its end."""
    marker = Path(workdir) / f"first-step-{time.monotonic_ns()}"
    env = {**_environment(cache), "BENCH_FIRST_STEP_FILE": str(marker)}
    if args[0] == "train":
        args = [*args, "--out", str(Path(workdir) / f"run-{time.monotonic_ns()}")]
    start = time.time()
    done = subprocess.run([python, "-c", WRAPPER, *args], env=env, cwd=workdir,
                          capture_output=True, text=True)
    total = time.time() - start
    if done.returncode != 0:
        raise RuntimeError(f"numpyvae {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    first = float(marker.read_text()) - start if marker.exists() else None
    said = done.stderr.replace("\r", "\n")
    compiled = COMPILED.search(said)
    return {"first_step_s": first, "total_s": total,
            "compiled_in_background": "in the background" in said,
            "kernels_compiled": int(compiled.group(1)) if compiled else 0,
            "compile_s": float(compiled.group(2)) if compiled else None}


def run(python=None, quick=False, verbose=True):
    say = print if verbose else (lambda *a, **k: None)
    python = python or sys.executable
    names = ["train", "gradcheck"] if quick else list(COMMANDS)
    payload = {"benchmark": "cold start", "python": common.interpreter(python), "quick": quick,
               "machine": common.machine(), "commands": {}}
    with tempfile.TemporaryDirectory(prefix="numpyvae-cold-") as tmp:
        for name in names:
            cache = Path(tmp) / f"cache-{len(payload['commands'])}"
            cold = run_command(python, COMMANDS[name], cache, tmp)
            cached = run_command(python, COMMANDS[name], cache, tmp)
            payload["commands"][name] = {"command": "numpyvae " + " ".join(COMMANDS[name]),
                                         "cold": cold, "cached": cached}
            say(f"{name:<20} cold: first step {_s(cold['first_step_s'])}, end {_s(cold['total_s'])}"
                f" ({cold['kernels_compiled']} kernels compiled"
                f"{' in the background' if cold['compiled_in_background'] else ''})"
                f" | cached: first step {_s(cached['first_step_s'])}, end "
                f"{_s(cached['total_s'])}")
        install = subprocess.run([python, "-c", INSTALL], env=_environment(Path(tmp) / "cache-0"),
                                 capture_output=True, text=True, check=True)
    payload["install"] = json.loads(install.stdout.strip().splitlines()[-1])
    say(f"install measured: {payload['install']}")
    return payload


def _s(seconds):
    return "-" if seconds is None else f"{seconds:.1f} s"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", help="the interpreter of the install to measure "
                                         "(default: this one)")
    parser.add_argument("--quick", action="store_true", help="train and gradcheck only")
    parser.add_argument("--out", default="cold_start", help="results file name (without .json)")
    args = parser.parse_args(argv)
    payload = run(args.python, args.quick)
    print(f"saved {common.save_json(args.out, payload)}")


if __name__ == "__main__":
    main()
