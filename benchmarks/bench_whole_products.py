"""The one-call step on one thread: every product whole against the pool's blocks.

The one-call step cuts its work into one block per thread of Numba's pool
whatever the thread count, so that one thread and all give the same bits.
On one thread (the thread chooser's pick beside a busy process) it now runs
each product whole instead, where a check of the first such step found the
same bits (``numpyvae/fast/whole_products.py``). This benchmark times the
two in one process, in turn, on one thread: two copies of the default VAE
(784-400-20, Adam, float32, random 0/1 images), one for each path,
alternating rounds of a few steps. Each round gives a ratio (whole /
blocks), so the machine's slow drifts fall out; the median and quartiles of
the ratios are reported per batch size, and whether the two paths' first
steps left the same parameters, bit for bit.

Run:  python benchmarks/bench_whole_products.py [--batches 32 64 128 256] [--quick]
"""

from __future__ import annotations

import argparse

import common
import numpy as np


def measure(batch, rounds, steps):
    """Samples/s of each path on one thread, their per-round ratio, and whether they agree."""
    from numpyvae import VAE, Adam, train_step
    from numpyvae.fast import numba_ops, whole_products

    rng = np.random.default_rng(0)
    x = (rng.random((batch * steps, common.INPUT)) < 0.5).astype(np.float32)
    eps = rng.standard_normal((batch, common.LATENT)).astype(np.float32)
    paths = {"blocks": lambda run, outputs, shape, blocks: run(blocks),
             "whole": whole_products.step_on_one_thread}
    runs = {}
    for name in paths:
        model = VAE(common.INPUT, (common.HIDDEN,), common.LATENT, backend="numba", seed=0)
        runs[name] = (model, Adam(model.params, backend="numba"))
    saved = numba_ops.step_on_one_thread

    def switch(name):
        numba_ops.step_on_one_thread = paths[name]

    def step(name, i):
        model, opt = runs[name]
        train_step(model, opt, x[i * batch:(i + 1) * batch])

    try:
        for name, (model, opt) in runs.items():
            switch(name)
            train_step(model, opt, x[:batch], eps=eps)
        same = bool(np.array_equal(runs["blocks"][0].flat_params, runs["whole"][0].flat_params))
        rates = common.paths_in_turn({name: lambda n=name: switch(n) for name in runs}, step,
                                     batch, steps, rounds)
    finally:
        numba_ops.step_on_one_thread = saved
    return {**common.ratio_of_paths(rates, "whole", "blocks", steps), "same_bits": same}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--steps", type=int, default=10, help="steps per round")
    parser.add_argument("--out", default="whole_products", help="results file (without .json)")
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    args = parser.parse_args()
    if args.quick:
        args.batches, args.rounds, args.steps = [128], 3, 2
    from numpyvae.fast.threads import ThreadChooser

    ThreadChooser.pick = lambda self: 1  # every step on one thread of the pool
    results = {str(b): measure(b, args.rounds, args.steps) for b in args.batches}
    for b, r in results.items():
        q1, q3 = r["ratio_quartiles"]
        print(f"batch {b:>4}: whole / blocks {r['ratio_median']:.3f} (quartiles {q1:.3f}–"
              f"{q3:.3f}), same bits after the first step: {r['same_bits']}")
    print("saved", common.save_json(args.out, {
        "benchmark": "whole_products", "quick": args.quick, "results": results,
        "machine": common.machine()}))


if __name__ == "__main__":
    main()
