"""The one-call step's forward pass by rows against the forward pass with shared products.

With MKL, once a batch gives each thread ``numba_step.FORWARD_ROWS``
examples, the one-call step (``numpyvae.train_step``) runs its forward pass
and loss with each thread on its own block of examples
(``numba_step.forward_region``); before, each large product was shared
between the threads and the small layers ran on one. This benchmark times
the two in one process, in turn: two copies of the default VAE (784-400-20,
Adam, float32, random 0/1 images), one for each forward pass, alternating
rounds of a few steps. Each round gives a ratio (by rows / shared), so
the machine's slow drifts fall out; the median and quartiles of the ratios
are reported per batch size. The two forward passes give the same losses
(checked first, on the same weights and noise).

``--one-thread`` runs the step on one thread of the pool (as the thread
chooser does beside a busy process); ``--competing N`` starts N busy
processes for the run.

Run:  python benchmarks/bench_forward_rows.py [--batches 32 64 128 256] [--one-thread]
      [--competing 1] [--quick]
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import common
import numpy as np

BUSY = [sys.executable, "-c", "while True: pass"]


def measure(batch, rounds, steps):
    """Samples/s of each forward pass, their per-round ratio, and their first step's losses."""
    from numpyvae import VAE, Adam, train_step
    from numpyvae.fast import numba_ops, numba_step

    rng = np.random.default_rng(0)
    x = (rng.random((batch * steps, common.INPUT)) < 0.5).astype(np.float32)
    eps = rng.standard_normal((batch, common.LATENT)).astype(np.float32)
    runs = {}
    for name, by_rows in (("shared", False), ("by rows", True)):
        model = VAE(common.INPUT, (common.HIDDEN,), common.LATENT, backend="numba", seed=0)
        runs[name] = (model, Adam(model.params, backend="numba"), by_rows)
    saved = numba_ops.FORWARD_BY_ROWS, numba_step.FORWARD_ROWS

    def switch(by_rows):
        numba_ops.FORWARD_BY_ROWS, numba_step.FORWARD_ROWS = by_rows, 1 if by_rows else 10**9

    def step(name, i):
        model, opt, _ = runs[name]
        train_step(model, opt, x[i * batch:(i + 1) * batch])

    try:
        losses = {}
        for name, (model, opt, by_rows) in runs.items():
            switch(by_rows)
            losses[name] = train_step(model, opt, x[:batch], eps=eps).loss
        switches = {name: lambda by_rows=run[2]: switch(by_rows) for name, run in runs.items()}
        rates = common.paths_in_turn(switches, step, batch, steps, rounds)
    finally:
        numba_ops.FORWARD_BY_ROWS, numba_step.FORWARD_ROWS = saved
    return {**common.ratio_of_paths(rates, "by rows", "shared", steps),
            "first_step_losses": losses, "same_loss": losses["shared"] == losses["by rows"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 64, 128, 160, 256])
    parser.add_argument("--rounds", type=int, default=80)
    parser.add_argument("--steps", type=int, default=15, help="steps per round")
    parser.add_argument("--one-thread", action="store_true",
                        help="run every step on one thread of the pool")
    parser.add_argument("--competing", type=int, default=0, help="busy processes beside it")
    parser.add_argument("--out", default="forward_rows", help="results file (without .json)")
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    args = parser.parse_args()
    if args.quick:
        args.batches, args.rounds, args.steps = [128], 3, 2
    if args.one_thread:
        from numpyvae.fast.threads import ThreadChooser

        ThreadChooser.pick = lambda self: 1
    busy = [subprocess.Popen(BUSY) for _ in range(args.competing)]
    try:
        results = {str(b): measure(b, args.rounds, args.steps) for b in args.batches}
    finally:
        for p in busy:
            p.kill()
            p.wait()
    for b, r in results.items():
        q1, q3 = r["ratio_quartiles"]
        print(f"batch {b:>4}: by rows / shared {r['ratio_median']:.3f} (quartiles {q1:.3f}–"
              f"{q3:.3f}), same first loss: {r['same_loss']}")
    print("saved", common.save_json(args.out, {
        "benchmark": "forward_rows", "quick": args.quick, "one_thread": args.one_thread,
        "competing": args.competing, "results": results, "machine": common.machine()}))


if __name__ == "__main__":
    main()
