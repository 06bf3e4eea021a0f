"""Training speed after thousands of steps: numpyvae before and after the subnormal flush, peers.

:mod:`bench_peers` times each implementation over its first few hundred
steps. A long run differs: after about 800 steps of float32 Adam, a
parameter whose gradient stays zero (a pixel blank in every image of a
batch, a ReLU unit that never fires) has an ``m`` below the normal range,
and arithmetic on subnormal numbers is dozens of times slower. So here
every implementation (each in its own process, as in :mod:`bench_peers`)
first trains ``--warmup`` steps untimed, one after another, on the same
Fashion-MNIST data from the same initial weights, and then all are timed
in interleaved rounds as in :mod:`bench_peers`: batch 128, float32, the
default recipe, idle. The older commit (``--before``, cc0c585 by default:
the last without the flush) shows what the flush changes.

Run:  python benchmarks/bench_sustained.py --data-dir DIR [--warmup 3000]
Results: ``benchmarks/results/sustained.json``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import bench_peers as bp
import numpy as np

BEFORE = "cc0c585"


def run(data_dir=None, warmup=3000, before=BEFORE, batch=128, rounds=7, block=0.25,
        pause=0.15, say=print):
    import common
    import peers

    x, source = common.load_data(data_dir, "float32", n=16384)
    common.shuffled(x)
    specs = [{"impl": bp.OURS, "batch": batch}]
    try:
        specs.append({"impl": bp.OURS, "batch": batch, "root": bp.baseline_root(before),
                      "label": f"numba @{before}"})
    except Exception as exc:  # noqa: BLE001 - no git history (an export): skip the comparison
        say(f"cannot export {before} ({exc}); compared without it")
    specs += [{"impl": p, "batch": batch} for p in bp.PEERS if bp.available(p)]
    result = {"benchmark": "sustained training speed", "data": source, "batch": batch,
              "warmup_steps": warmup, "before": before, "rounds": rounds,
              "block_seconds": block}
    with tempfile.TemporaryDirectory() as tmp:
        files = {"data": Path(tmp) / "data.npy", "init": Path(tmp) / "init.npz"}
        np.save(files["data"], x)
        np.savez(files["init"], **peers.numpyvae_init())
        workers = bp.start_workers(specs, files, say)
        try:
            warm = {}
            for w in workers:
                say(f"  {w.label}: {warmup} steps untimed")
                r = w.ask(f"run {warmup}")
                if r is not None:
                    warm[w.label] = r["seconds"] / warmup
            result["warmup_seconds_per_step"] = warm
            say(f"batch {batch}, float32, idle, after {warmup} steps")
            result["after_warmup"] = bp.measure(workers, rounds, block, pause, say)
        finally:
            for w in workers:
                w.close()
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="folder with train-images-idx3-ubyte(.gz)")
    parser.add_argument("--warmup", type=int, default=3000, help="untimed steps before timing")
    parser.add_argument("--before", default=BEFORE, help="the older commit to compare with")
    args = parser.parse_args(argv)
    if args.warmup < 0:
        parser.error(f"--warmup must be >= 0, got {args.warmup}")
    import common

    result = run(args.data_dir, args.warmup, args.before)
    result["machine"] = common.machine()
    path = common.save_json("sustained", result)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
