"""Start-up costs, each measured in a fresh process: import, JIT cold and cached, first step.

* ``import numpyvae`` (which must not import Numba), and importing the
  Numba backend on top of it;
* the first training step with the Numba backend, cold (an empty kernel
  cache: everything compiles) and cached (kernels loaded from disk);
* launch to the end of the first training step, as a user sees it: the
  interpreter starting, the imports, the model, the step. With ``--data-dir``
  reading Fashion-MNIST is included too.

The kernel cache goes to a temporary folder (``NUMBA_CACHE_DIR``), so the
cold run is really cold and the project's own cache is left alone.

Run:  python benchmarks/bench_startup.py [--data-dir DIR] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import common

CHILD = r"""
import json, sys, time
t_start = time.perf_counter()
import numpyvae
t_import = time.perf_counter()
numba_imported = "numba" in sys.modules
from numpyvae.fast import numba_ops
t_backend = time.perf_counter()
import numpy as np
data_dir = {data_dir!r}
if data_dir:
    from numpyvae.app.data.idx import read_idx
    import pathlib
    path = next(p for p in (pathlib.Path(data_dir) / "train-images-idx3-ubyte.gz",
                            pathlib.Path(data_dir) / "train-images-idx3-ubyte") if p.is_file())
    x = (read_idx(path).reshape(-1, 784)[:128] >= 128).astype("float32")
else:
    x = (np.random.default_rng(0).random((128, 784)) < 0.5).astype("float32")
t_data = time.perf_counter()
model = numpyvae.VAE(784, (400,), 20, backend="numba")
opt = numpyvae.Adam(model.params, backend="numba")
numpyvae.train_step(model, opt, x)  # as the training loop runs it
t_step = time.perf_counter()
print(json.dumps({{"import_s": t_import - t_start, "numba_imported_by_import": numba_imported,
                  "backend_import_s": t_backend - t_import, "data_s": t_data - t_backend,
                  "first_step_s": t_step - t_data, "in_process_s": t_step - t_start}}))
"""


def _launch(cache_dir, data_dir=None):
    path = os.pathsep.join([str(common.ROOT.parent), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    env.pop("NUMBA_CACHE_DIR", None)
    if cache_dir:
        env["NUMBA_CACHE_DIR"] = cache_dir
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD.format(data_dir=data_dir)], env=env,
                         capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["launch_to_first_step_s"] = wall
    return result


def import_time(repeats):
    """Seconds for ``import numpyvae`` in a fresh interpreter (median), and for Python alone."""
    env = {**os.environ, "PYTHONPATH": str(common.ROOT.parent)}
    code = "import time; t = time.perf_counter(); import numpyvae; print(time.perf_counter() - t)"
    times = [float(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                  text=True, check=True).stdout) for _ in range(repeats)]
    bare = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        bare.append(time.perf_counter() - t0)
    return statistics.median(times), statistics.median(bare)


def run(data_dir=None, quick=False, verbose=True):
    say = print if verbose else (lambda *a, **k: None)
    repeats = 1 if quick else 5
    payload = {"benchmark": "start-up", "quick": quick, "machine": common.machine()}
    payload["import_numpyvae_s"], payload["python_startup_s"] = import_time(repeats)
    say(f"import numpyvae: {payload['import_numpyvae_s'] * 1e3:.0f} ms "
        f"(python itself starts in {payload['python_startup_s'] * 1e3:.0f} ms)")
    with tempfile.TemporaryDirectory(prefix="numpyvae-jit-") as cache:
        # --quick: the project's own kernel cache, and no cold start (it compiles everything).
        cache = os.environ.get("NUMBA_CACHE_DIR", "") if quick else cache
        cold = None if quick else _launch(cache)
        cached = [_launch(cache) for _ in range(repeats + 1)][1:]  # the first may fill the cache
        with_data = [_launch(cache, data_dir) for _ in range(repeats)] if data_dir else []
    med = {k: statistics.median(r[k] for r in cached) for k in cached[0]
           if isinstance(cached[0][k], float)}
    payload.update(cold=cold, cached_runs=cached, cached_median=med)
    payload["numba_imported_by_import"] = cached[0]["numba_imported_by_import"]
    if cold:
        say(f"first training step, cold cache (compiling every kernel): "
            f"{cold['first_step_s']:.1f} s; launch to first step "
            f"{cold['launch_to_first_step_s']:.1f} s")
    say(f"first training step, cached kernels: {med['first_step_s']:.2f} s; "
        f"launch to first step {med['launch_to_first_step_s']:.2f} s "
        f"(imports {med['import_s'] + med['backend_import_s']:.2f} s)")
    if with_data:
        payload["with_data"] = with_data
        payload["with_data_median_launch_to_first_step_s"] = statistics.median(
            r["launch_to_first_step_s"] for r in with_data)
        say(f"  with Fashion-MNIST read from {data_dir}: launch to first step "
            f"{payload['with_data_median_launch_to_first_step_s']:.2f} s")
    return payload


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="folder with train-images-idx3-ubyte(.gz)")
    parser.add_argument("--quick", action="store_true", help="one repeat of each")
    parser.add_argument("--out", default="startup", help="results file name (without .json)")
    args = parser.parse_args(argv)
    payload = run(args.data_dir, args.quick)
    print(f"saved {common.save_json(args.out, payload)}")


if __name__ == "__main__":
    main()
