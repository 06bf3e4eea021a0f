"""How much CPU the training step is granted beside a busy process, on one thread and on all.

The thread chooser (``numpyvae.fast.threads``) runs one thread when another
process keeps a core busy. This measures why: the default VAE's training
step (784-400-20, Adam, float32, batch 128) forced to one thread and to
every thread of the pool, idle and with one CPU-bound competing process
started here (the same busy loop as ``bench_peers.py``'s). For each it
reports samples per second and the cores the process was granted: its
user + system CPU time over the wall time (``getrusage``). Rounds
alternate the two thread counts; medians of the rounds, with their range.

Run:  python benchmarks/bench_core_share.py [--data-dir DIR] [--quick]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time

import common  # sets sys.path so numpyvae imports from the checkout

BATCH = 128


def _cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _forced(model, k):
    """Make the model's thread chooser run ``k`` threads from now on (it keeps no record)."""
    from numpyvae.fast.threads import chooser_of

    chooser = chooser_of(model)
    chooser.pick = lambda: k
    chooser.record = lambda *args: None


def _block(model, optimizer, data, seconds):
    """Train for about ``seconds``: (samples per second, cores granted)."""
    import numpyvae

    steps, t0, cpu0 = 0, time.perf_counter(), _cpu_seconds()
    while time.perf_counter() - t0 < seconds:
        numpyvae.train_step(model, optimizer, next(data))
        steps += 1
    wall = time.perf_counter() - t0
    return steps * BATCH / wall, (_cpu_seconds() - cpu0) / wall


def measure(x, counts, rounds, seconds):
    """``{k: {"samples_per_s": ..., "cores": ..., ranges}}`` for each thread count ``k``."""
    import numpyvae

    runs = {}
    for k in counts:
        model = numpyvae.VAE(784, (400,), 20, dtype="float32", backend="numba", seed=0)
        optimizer = numpyvae.Adam(model.params, lr=1e-3, backend="numba")
        data = common.batches(x, BATCH)
        for _ in range(20):  # compile or load the kernels, and create the chooser
            numpyvae.train_step(model, optimizer, next(data))
        _forced(model, k)
        runs[k] = (model, optimizer, data, [], [])
    for r in range(rounds):
        for k in (counts if r % 2 == 0 else counts[::-1]):
            model, optimizer, data, rates, cores = runs[k]
            rate, core = _block(model, optimizer, data, seconds)
            rates.append(rate)
            cores.append(core)
    return {str(k): {"samples_per_s": statistics.median(rates), "min": min(rates),
                     "max": max(rates), "cores": statistics.median(cores),
                     "cores_min": min(cores), "cores_max": max(cores)}
            for k, (_, _, _, rates, cores) in runs.items()}


def run(data_dir=None, quick=False, verbose=True):
    from bench_peers import Competitors

    from numpyvae.fast import numba_ops

    say = print if verbose else (lambda *a, **k: None)
    x, source = common.load_data(data_dir, "float32", n=4096 if quick else 16384)
    most = numba_ops.max_threads()
    counts = sorted({1, most})
    rounds, seconds = (2, 0.3) if quick else (6, 2.0)
    result = {"benchmark": "cores granted to the training step", "data": source, "quick": quick,
              "batch": BATCH, "threads": counts, "machine": common.machine()}
    for label, competitors in (("idle", 0), ("1 competing process", 1)):
        busy = Competitors(competitors) if competitors else None
        try:
            result[label] = measure(x, counts, rounds, seconds)
        finally:
            if busy is not None:
                busy.stop()
        for k, r in result[label].items():
            say(f"{label:<20} {k} thread(s): {r['samples_per_s']:>8.0f} samples/s "
                f"({r['min']:.0f}-{r['max']:.0f}), {r['cores']:.2f} cores "
                f"({r['cores_min']:.2f}-{r['cores_max']:.2f})")
    path = common.save_json("core_share", result)
    say(f"saved {path}")
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="folder with train-images-idx3-ubyte(.gz)")
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    args = parser.parse_args(argv)
    run(args.data_dir, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
