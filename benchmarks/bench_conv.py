"""The convolutional VAE: kernels, training throughput and peak memory, against PyTorch eager.

1. Kernels. Each Numba conv op is first validated against the NumPy
   reference on the conv VAE's own shapes (float32, batch 128); then
   im2col + BLAS is timed against the direct convolution (six nested loops)
   for both convolutions of the encoder, and every op against the reference.
2. Training throughput, float32, batch 32 and 128: numpyvae's numba and
   numpy backends and :mod:`torch_conv_vae` (PyTorch eager, the same
   architecture, loss and Adam step) train on the same data with the same
   thread count, in interleaved rounds (each implementation runs a block of
   steps in turn, the first one rotating), so that load from other processes
   falls on all of them alike; the median over rounds is reported.
3. Peak memory (``VmHWM``) of a training run of each, in a fresh process.

Run:  python benchmarks/bench_conv.py [--data-dir DIR] [--quick]
(``NUMPYVAE_BENCH_THREADS`` sets the thread count, 2 by default here.)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("NUMPYVAE_BENCH_THREADS", "2")
import common  # noqa: E402, I001  (sets sys.path so numpyvae imports from the checkout)

N_THREADS = common.set_threads()
SHAPE = (1, 28, 28)
LATENT = 20
IMPLEMENTATIONS = ("numba", "numpy", "torch")


# --------------------------------------------------------------------------
# 1. Kernels
# --------------------------------------------------------------------------


def _ms(fn, args, kwargs, repeats):
    """Median milliseconds of ``fn(*args, **kwargs)``."""
    return 1e3 * common.median_time(lambda: fn(*args, **kwargs), repeats=repeats)[0]


def kernels(batch=128, repeats=5, verbose=True):
    """Validate every numba conv op against the reference, then time them."""
    import numba
    import numpy as np

    from numpyvae import ops as reference
    from numpyvae.fast import numba_conv, numba_ops
    from numpyvae.gradcheck import rel_error

    say = print if verbose else (lambda *a, **k: None)
    rng = np.random.default_rng(0)
    f32 = np.float32
    results = {}
    # (name, in channels, out channels, input side): the conv VAE's four layers
    layers = [("conv1", False, 1, 32, 28), ("conv2", False, 32, 64, 14),
              ("convT1", True, 64, 32, 7), ("convT2", True, 32, 1, 14)]
    for name, transposed, C, O, side in layers:
        x = rng.standard_normal((batch, C, side, side)).astype(f32)
        shape = (C, O, 4, 4) if transposed else (O, C, 4, 4)
        W = (rng.standard_normal(shape) * 0.1).astype(f32)
        b = (rng.standard_normal(O) * 0.1).astype(f32)
        prefix = "conv_transpose2d" if transposed else "conv2d"
        extra = (0,) if transposed else ()  # output_padding
        fwd = {m: getattr(m, f"{prefix}_forward") for m in (numba_ops, reference)}
        bwd = {m: getattr(m, f"{prefix}_backward") for m in (numba_ops, reference)}
        y_ref = fwd[reference](x, W, b, 2, 1, *extra, "relu")
        y = fwd[numba_ops](x, W, b, 2, 1, *extra, "relu")
        dy = rng.standard_normal(y.shape).astype(f32)
        grads = {}
        for m in (numba_ops, reference):
            dW, db = np.zeros_like(W), np.zeros_like(b)
            dx = bwd[m](dy, x, W, y_ref, dW, db, 2, 1, "relu")
            grads[m] = (dx, dW, db)
        errors = [rel_error(y, y_ref)] + [rel_error(a, c) for a, c in
                                          zip(grads[numba_ops], grads[reference], strict=True)]
        if max(errors) > 1e-4:
            raise AssertionError(f"{name}: numba disagrees with the reference: {errors}")
        row = {"max_rel_error_vs_reference": max(errors)}
        out = np.empty_like(y)
        dW, db, dx = np.zeros_like(W), np.zeros_like(b), np.empty_like(x)
        for m, label in ((numba_ops, "numba"), (reference, "numpy")):
            row[f"{label}_forward_ms"] = _ms(fwd[m], (x, W, b, 2, 1, *extra, "relu"),
                                             {"out": out}, repeats)
            row[f"{label}_backward_ms"] = _ms(bwd[m], (dy, x, W, y, dW, db, 2, 1, "relu"),
                                              {"dx": dx}, repeats)
        if not transposed:
            out2 = np.empty_like(y)
            direct_args = (x, W, b, 2, 2, 1, 1, 1, 0.01, out2)  # stride, padding, ReLU code
            numba_conv.conv2d_forward_direct(*direct_args)
            if rel_error(out2, y_ref) > 1e-4:
                raise AssertionError(f"{name}: the direct convolution disagrees")
            row["direct_forward_ms"] = _ms(numba_conv.conv2d_forward_direct, direct_args, {},
                                           repeats)
        results[name] = row
        say(f"  {name:<7} numba fwd {row['numba_forward_ms']:7.2f} ms  bwd "
            f"{row['numba_backward_ms']:7.2f} ms | numpy fwd {row['numpy_forward_ms']:7.2f} ms "
            f" bwd {row['numpy_backward_ms']:7.2f} ms"
            + (f" | direct fwd {row['direct_forward_ms']:7.2f} ms"
               if "direct_forward_ms" in row else "")
            + f"  (max rel error {row['max_rel_error_vs_reference']:.1e})")
    results["numba_threads"] = numba.get_num_threads()
    return results


# --------------------------------------------------------------------------
# 2. Training throughput, interleaved
# --------------------------------------------------------------------------


class NumpyvaeRunner:
    """numpyvae's public API: ``model.loss_and_grads`` then ``optimizer.step``."""

    def __init__(self, backend, seed=0):
        import numpyvae
        from numpyvae.convnet import conv_vae

        self.model = conv_vae(SHAPE[1:], LATENT, seed=seed, backend=backend)
        self.optimizer = numpyvae.Adam(self.model.params, lr=1e-3, backend=backend)

    def step(self, x):
        result = self.model.loss_and_grads(x.reshape(x.shape[0], *SHAPE))
        self.optimizer.step(self.model.grads)
        return result.loss


def make_runner(which):
    if which == "torch":
        from torch_conv_vae import TorchConvVAE

        return TorchConvVAE(SHAPE[1:], LATENT, threads=N_THREADS)
    return NumpyvaeRunner(which)


def interleaved(runners, data, batch, rounds, block_seconds, warmup_steps, pause=0.15):
    """Samples/s of each runner: warm-up, then ``rounds`` rounds of one timed block each."""
    streams = {name: common.batches(data, batch) for name in runners}
    steps = {}
    for name, runner in runners.items():
        runner.step(next(streams[name]))  # compiles or loads kernels
        t0 = time.perf_counter()
        for _ in range(warmup_steps):
            runner.step(next(streams[name]))
        per_step = (time.perf_counter() - t0) / max(warmup_steps, 1)
        steps[name] = max(2, int(block_seconds / max(per_step, 1e-6)))
    rates = {name: [] for name in runners}
    names = list(runners)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            time.sleep(pause)
            stream, step = streams[name], runners[name].step
            t0 = time.perf_counter()
            for _ in range(steps[name]):
                step(next(stream))
            rates[name].append(steps[name] * batch / (time.perf_counter() - t0))
    return {name: {"samples_per_s": statistics.median(r), "rounds": r,
                   "steps_per_block": steps[name]} for name, r in rates.items()}


def throughput(data, batches=(32, 128), rounds=7, block=2.0, warmup=3, verbose=True):
    from torch_conv_vae import available

    say = print if verbose else (lambda *a, **k: None)
    names = [n for n in IMPLEMENTATIONS if n != "torch" or available()]
    out = {}
    for batch in batches:
        runners = {n: make_runner(n) for n in names}
        res = interleaved(runners, data, batch, rounds, block, warmup)
        torch_rate = res.get("torch", {}).get("samples_per_s")
        for name, r in res.items():
            if torch_rate:
                r["ratio_to_torch"] = r["samples_per_s"] / torch_rate
            spread = (min(r["rounds"]), max(r["rounds"]))
            say(f"  batch {batch:>3} {name:<6} {r['samples_per_s']:8.0f} samples/s "
                f"(rounds {spread[0]:.0f}-{spread[1]:.0f})"
                + (f"  x{r['ratio_to_torch']:.2f} torch" if torch_rate else ""))
        out[str(batch)] = res
    return out


# --------------------------------------------------------------------------
# 3. Peak memory, each in a fresh process
# --------------------------------------------------------------------------

CHILD = r"""
import json, sys, time
sys.path.insert(0, {bench!r})
import os
os.environ["NUMPYVAE_BENCH_THREADS"] = "{threads}"
import common
common.set_threads()
import bench_conv
which, data_dir, steps, n, batch = {which!r}, {data_dir!r}, {steps!r}, {n!r}, {batch!r}
runner = bench_conv.make_runner(which)
x, _ = common.load_data(data_dir, n=n)
stream = common.batches(common.shuffled(x), batch)
runner.step(next(stream))
before = common.current_rss_mib()
t0 = time.perf_counter()
for _ in range(steps):
    runner.step(next(stream))
print(json.dumps({{"rss_before_training_mib": before, "peak_rss_mib": common.peak_rss_mib(),
                  "steps": steps, "seconds": time.perf_counter() - t0}}))
"""


def memory(data_dir, steps, n, batch=128, verbose=True):
    from torch_conv_vae import available

    say = print if verbose else (lambda *a, **k: None)
    env = {**os.environ, "PYTHONPATH": str(common.ROOT.parent)}
    out = {}
    for which in IMPLEMENTATIONS:
        if which == "torch" and not available():
            continue
        code = CHILD.format(bench=str(common.ROOT), threads=N_THREADS, which=which,
                            data_dir=data_dir, steps=steps, n=n, batch=batch)
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                              text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{which}: {proc.stderr.strip().splitlines()[-1]}")
        r = out[which] = json.loads(proc.stdout.strip().splitlines()[-1])
        r["during_training_mib"] = r["peak_rss_mib"] - r["rss_before_training_mib"]
        say(f"  {which:<6} peak {r['peak_rss_mib']:7.1f} MiB (before training "
            f"{r['rss_before_training_mib']:6.1f}, training adds {r['during_training_mib']:6.1f})")
    return out


def run(data_dir=None, quick=False, verbose=True):
    say = print if verbose else (lambda *a, **k: None)
    n = 4096 if quick else 16384
    x, source = common.load_data(data_dir, "float32", n=n)
    data = common.shuffled(x)
    payload = {"benchmark": "convolutional VAE", "quick": quick, "machine": common.machine(),
               "threads": N_THREADS, "data": source,
               "note": "interleaved rounds on a machine shared with other work: compare "
                       "ratios, not absolute rates"}
    say(f"data: {source}; threads: {N_THREADS}")
    say("kernels (float32, batch 128), validated against the reference first:")
    payload["kernels"] = kernels(repeats=3 if quick else 7, verbose=verbose)
    say("training throughput (float32):")
    payload["throughput"] = throughput(data, rounds=3 if quick else 7,
                                       block=0.3 if quick else 2.0,
                                       warmup=1 if quick else 3, verbose=verbose)
    say("peak memory (batch 128):")
    payload["memory"] = memory(data_dir, 5 if quick else 100, n, verbose=verbose)
    return payload


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="folder with train-images-idx3-ubyte(.gz)")
    parser.add_argument("--quick", action="store_true", help="a few steps of everything")
    parser.add_argument("--out", default="conv", help="results file name (without .json)")
    args = parser.parse_args(argv)
    payload = run(args.data_dir, args.quick)
    print(f"saved {common.save_json(args.out, payload)}")


if __name__ == "__main__":
    main()
