"""Memory: peak of a training run, and what one training step allocates.

1. Each implementation (numpyvae's numba and numpy backends, plain NumPy,
   PyTorch) trains the default recipe (784-400-20, Bernoulli, Adam, batch
   128, float32) for one epoch of Fashion-MNIST (``--data-dir``; random
   binary data of the same size otherwise) in a fresh process, and reports
   its peak resident memory (``VmHWM``), and how much of it came before
   training (interpreter, libraries, the data set) and during it.
2. Allocations per step, counted by ``tracemalloc`` (which sees every NumPy
   array) over 20 steps after a warm-up: the largest amount of memory
   allocated at once, and the number of allocations still alive at the end.
   The numba backend's steps should allocate nothing but a few small Python
   objects. (PyTorch's allocator is invisible to tracemalloc.)

Run:  python benchmarks/bench_memory.py [--data-dir DIR] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import common

CHILD = r"""
import json, sys, time
sys.path.insert(0, {bench!r})
import common
common.set_threads()
which, data_dir, steps, n = {which!r}, {data_dir!r}, {steps!r}, {n!r}
if which == "torch":
    from torch_vae import TorchVAE
    model = TorchVAE(threads=common.threads())
    step = model.step
elif which == "plain numpy":
    from plain_numpy import PlainNumpyVAE
    model = PlainNumpyVAE()
    step = model.step
else:
    import numpyvae
    vae = numpyvae.VAE(784, (400,), 20, backend=which)
    opt = numpyvae.Adam(vae.params, backend=which)
    def step(x):
        vae.loss_and_grads(x)
        opt.step(vae.grads)
x, _ = common.load_data(data_dir, n=n)
x = common.shuffled(x)
stream = common.batches(x, 128)
step(next(stream))  # the first step (for numba: loading kernels)
before = common.current_rss_mib()
t0 = time.perf_counter()
for _ in range(steps):
    step(next(stream))
seconds = time.perf_counter() - t0
print(json.dumps({{"rss_before_training_mib": before, "peak_rss_mib": common.peak_rss_mib(),
                  "steps": steps, "seconds": seconds}}))
"""

IMPLEMENTATIONS = ("numba", "numpy", "plain numpy", "torch")


def measure(which, data_dir, steps, n=common.N_EXAMPLES):
    env = {**os.environ, "PYTHONPATH": str(common.ROOT.parent)}
    code = CHILD.format(bench=str(common.ROOT), which=which, data_dir=data_dir, steps=steps, n=n)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{which}: {out.stderr.strip().splitlines()[-1]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["during_training_mib"] = result["peak_rss_mib"] - result["rss_before_training_mib"]
    return result


def allocations(which, steps=20):
    """Peak bytes traced by tracemalloc during ``steps`` training steps (after a warm-up)."""
    import tracemalloc

    import numpy as np
    from plain_numpy import PlainNumpyVAE

    import numpyvae

    x = (np.random.default_rng(0).random((128, common.INPUT)) < 0.5).astype("float32")
    if which == "plain numpy":
        step = PlainNumpyVAE().step
    else:
        vae = numpyvae.VAE(common.INPUT, (common.HIDDEN,), common.LATENT, backend=which)
        opt = numpyvae.Adam(vae.params, backend=which)

        def step(x):
            vae.loss_and_grads(x)
            opt.step(vae.grads)
    for _ in range(3):
        step(x)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for _ in range(steps):
        step(x)
    _, peak = tracemalloc.get_traced_memory()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    alive = sum(stat.count_diff for stat in after.compare_to(before, "lineno")
                if stat.count_diff > 0)
    return {"steps": steps, "peak_bytes": peak, "blocks_alive_after": alive}


def run(data_dir=None, quick=False, verbose=True):
    from torch_vae import available

    say = print if verbose else (lambda *a, **k: None)
    steps = 10 if quick else common.N_EXAMPLES // 128  # one epoch
    payload = {"benchmark": "peak memory", "quick": quick, "machine": common.machine(),
               "data": os.path.basename(os.path.normpath(data_dir)) if data_dir
               else "random binary (60000 x 784)", "steps": steps, "runs": {}}
    for which in IMPLEMENTATIONS:
        if which == "torch" and not available():
            continue
        r = payload["runs"][which] = measure(which, data_dir, steps,
                                             4096 if quick else common.N_EXAMPLES)
        say(f"  {which:<12} peak {r['peak_rss_mib']:7.1f} MiB  (before training "
            f"{r['rss_before_training_mib']:6.1f}, training adds {r['during_training_mib']:6.1f})"
            f"  {r['steps']} steps in {r['seconds']:.1f} s")
    payload["allocations"] = {}
    for which in ("numba", "numpy", "plain numpy"):
        a = payload["allocations"][which] = allocations(which, 5 if quick else 20)
        say(f"  {which:<12} allocates at most {a['peak_bytes']:>10,} bytes at once during "
            f"{a['steps']} steps (tracemalloc)")
    return payload


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="folder with train-images-idx3-ubyte(.gz)")
    parser.add_argument("--quick", action="store_true",
                        help="20 steps on 4096 examples instead of an epoch")
    parser.add_argument("--out", default="memory", help="results file name (without .json)")
    args = parser.parse_args(argv)
    payload = run(args.data_dir, args.quick)
    print(f"saved {common.save_json(args.out, payload)}")


if __name__ == "__main__":
    main()
