"""What the thread chooser's probes cost: the step with its chooser against a fixed count.

The training step runs on the thread count its chooser measured faster
(``numpyvae/fast/threads.py``), and now and then probes the other count
for a few steps, in case the machine changed. A probe that loses costs
those steps' extra time. This benchmark trains the default VAE (784-400-20,
Adam, float32, Fashion-MNIST) three ways, each in a process of its own:

* ``fixed``: every step on one count, no probes (all the threads when the
  machine is idle; one thread beside a busy process, the count the chooser
  settles on there);
* ``doubling``: the chooser, its wait between lost probes doubling only
  (from 32 steps to 512), as before it counted what a probe costs;
* ``chooser``: the chooser as it is, its wait also long enough that a lost
  probe costs at most 1% of the steps until the next.

The processes take turns as in ``bench_peers.py`` (a timed block of steps
each, the order rotated every round, a pause between blocks), from their
first step, so the chooser's first probes, which cost the most, are in the
figures, as they are in the peer benchmark's. Reported per batch size and
condition: each way's samples/s (median of its rounds), its rate over the
fixed count's in the same round (median and quartiles), and of its steps,
how many were probes, how many ran on one thread, and how often the count
in use switched.

Run:  python benchmarks/bench_chooser.py [--batches 128 512] [--rounds 15] [--quick]
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench_peers
import common
import numpy as np

WAYS = ("fixed", "doubling", "chooser")


def chooser_for(way, most, busy):
    """A :class:`~numpyvae.fast.threads.ThreadChooser` of the kind ``way`` names."""
    from numpyvae.fast import threads

    class Fixed(threads.ThreadChooser):
        def __init__(self, most):
            super().__init__(most)
            self.best = self.candidates[0 if busy else -1]

        def pick(self):
            self.steps += 1
            return self.best

    class Doubling(threads.ThreadChooser):
        def _paid_for(self, probe, current):
            return 0

    kind = {"fixed": Fixed, "doubling": Doubling, "chooser": threads.ThreadChooser}[way]
    return kind(most)


def worker(way, batch, data, busy):
    """One way's process: ``bench_peers``'s worker commands, and "picks"."""
    import peers

    from numpyvae.fast import threads

    step = peers.NumpyvaeStep(np.load(data), batch, peers.numpyvae_init())
    model = step.model
    chooser = threads._CHOOSERS[model] = chooser_for(way, model.backend.max_threads(), busy)
    picks = []  # each step's (thread count, the count in use when it was picked)
    pick = chooser.pick

    def counted():
        k = pick()
        picks.append((k, chooser.best))
        return k

    chooser.pick = counted
    print(json.dumps({"ready": True}), flush=True)
    i = 0
    for line in sys.stdin:
        cmd, *rest = line.split()
        if cmd == "first":  # the first step, then a rough rate over a few seconds' steps
            start = time.perf_counter()
            step.step(i)
            first = time.perf_counter() - start
            i, n, start = i + 1, 0, time.perf_counter()
            while n < 2 or time.perf_counter() - start < float(rest[0]):
                step.step(i)
                i, n = i + 1, n + 1
            print(json.dumps({"first_step_s": first,
                              "step_s": (time.perf_counter() - start) / n}), flush=True)
        elif cmd == "run":
            start = time.perf_counter()
            for _ in range(int(rest[0])):
                step.step(i)
                i += 1
            print(json.dumps({"seconds": time.perf_counter() - start}), flush=True)
        elif cmd == "picks":  # probes: steps off the count in use; switches of that count
            in_use = [best for _, best in picks]
            print(json.dumps({"steps": len(picks), "last_count": chooser.best,
                              "probe_steps": sum(k != best for k, best in picks),
                              "switches": sum(a != b for a, b in itertools.pairwise(in_use)),
                              "steps_on_one_thread": sum(k == 1 for k, _ in picks)}),
                  flush=True)
        else:
            return


class Way(bench_peers.Worker):
    """A worker process running one way (``bench_peers.Worker``'s protocol)."""

    def __init__(self, way, batch, data, busy):
        self.impl, self.batch, self.label, self.error = "numba", batch, way, None
        cmd = [sys.executable, __file__, "--worker", way, "--batch", str(batch),
               "--data", str(data)] + (["--busy"] if busy else [])
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)


def measure(batch, data, rounds, block, pause, busy):
    """Each way's rates, ratios to ``fixed`` and steps off its settled count, at ``batch``."""
    ways = [Way(way, batch, data, busy) for way in WAYS]
    try:
        for w in ways:
            if not w.start():
                raise RuntimeError(f"{w.label}: {w.error}")
        table = bench_peers.measure(ways, rounds, block, pause, None)
        picks = {w.label: w.ask("picks") for w in ways}
    finally:
        for w in ways:
            w.close()
    fixed = np.array(table["fixed"]["rounds"])
    out = {}
    for way in WAYS:
        ratios = np.array(table[way]["rounds"]) / fixed
        out[way] = {"samples_per_s": table[way]["samples_per_s"],
                    "ratio_median": float(np.median(ratios)),
                    "ratio_quartiles": [float(np.quantile(ratios, q)) for q in (0.25, 0.75)],
                    **picks[way]}
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--data-dir", help="folder with train-images-idx3-ubyte(.gz)")
    parser.add_argument("--out", default="chooser", help="results file (without .json)")
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--busy", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(common.ROOT))
    if args.worker:
        worker(args.worker, args.batch, args.data, args.busy)
        return
    rounds, block, pause = args.rounds, 0.25, 0.15
    if args.quick:
        args.batches, rounds, block, pause = [128], 2, 0.05, 0.05
    x, source = common.load_data(args.data_dir, "float32", n=2048 if args.quick else 16384)
    common.shuffled(x)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data.npy"
        np.save(data, x)
        for condition, competitors in (("idle", 0), ("1 competing process", 1)):
            busy = bench_peers.Competitors(competitors) if competitors else None
            try:
                for b in args.batches:
                    r = results.setdefault(condition, {})[str(b)] = measure(
                        b, data, rounds, block, pause, busy is not None)
                    for name, row in r.items():
                        q1, q3 = row["ratio_quartiles"]
                        print(f"{condition}, batch {b:>4}: {name:<9} "
                              f"{row['samples_per_s']:8.0f} samples/s, ÷ fixed "
                              f"{row['ratio_median']:.3f} ({q1:.3f}–{q3:.3f}); of "
                              f"{row['steps']} steps {row['probe_steps']} probing, "
                              f"{row['steps_on_one_thread']} on one thread; "
                              f"{row['switches']} switches")
            finally:
                if busy is not None:
                    busy.stop()
    print("saved", common.save_json(args.out, {
        "benchmark": "chooser", "quick": args.quick, "data": source, "rounds": rounds,
        "block_seconds": block, "results": results, "machine": common.machine()}))


if __name__ == "__main__":
    main()
