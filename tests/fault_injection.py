"""Kill a training run at every file write, resume it, and compare with an uninterrupted run.

Run as a script (by tests/test_faults.py) so that it can fork: the parent
imports numpyvae once, then for each write point forks a child that trains
and is SIGKILLed at that write, and a second child that resumes the killed
run (``numpyvae train --resume``). Every write of the library goes through
:func:`numpyvae.fileio.atomic_write`, which calls ``os.fsync`` on the
temporary file and then ``os.replace``; the child counts those calls and
kills itself

* ``before``: just before the k-th ``fsync`` (the k-th file is half written:
  a temporary file is left behind, the target keeps its old content);
* ``after``: just after the k-th ``os.replace`` (the k-th file is complete,
  the next one not begun).

Usage: ``python fault_injection.py WORKDIR POINTS -- TRAIN-ARGS...``, where
POINTS is ``all`` (both modes at every write) or a comma-separated list such
as ``before:1,after:-1`` (negative: counted from the last write). Prints one
JSON object: the number of writes of an uninterrupted run and, for each kill,
the differences found (an empty list when the folder equals the
uninterrupted one).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import numpy as np

import numpyvae.app.run  # noqa: F401  (imported once here, not again in every child)
from numpyvae.app.cli import main
from numpyvae.app.runfolder import CHECKPOINT_FILE, MODEL_FILE, read_checkpoint
from numpyvae.app.safenpz import read_npz

TIMING = ("seconds", "samples_per_second", "eval_seconds")


def run_child(argv, kill_at=None, mode="after") -> tuple[int, int]:
    """Fork, run ``numpyvae`` with ``argv`` in the child; return (exit status, writes)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read_fd)
        count = {"fsync": 0, "replace": 0}
        fsync, replace = os.fsync, os.replace

        def counted_fsync(fd):
            count["fsync"] += 1
            if mode == "before" and count["fsync"] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return fsync(fd)

        def counted_replace(src, dst):
            replace(src, dst)
            count["replace"] += 1
            if mode == "after" and count["replace"] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

        os.fsync, os.replace = counted_fsync, counted_replace
        code = 1
        try:
            code = main(argv)
        finally:
            os.write(write_fd, str(count["replace"]).encode())
            os._exit(code)
    os.close(write_fd)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(read_fd) as f:
        writes = int(f.read() or -1)
    return status, writes


def without_timing(rows):
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def compare(ref: Path, run: Path) -> list[str]:
    """What differs between two run folders (timings aside)."""
    diffs = []
    names = lambda d: sorted(str(p.relative_to(d)) for p in d.rglob("*"))  # noqa: E731
    if names(ref) != names(run):
        diffs.append(f"files differ: {sorted(set(names(ref)) ^ set(names(run)))}")
        return diffs
    for name in (MODEL_FILE, CHECKPOINT_FILE):
        a, b = read_npz(ref / name), read_npz(run / name)
        a.pop("trainer", None), b.pop("trainer", None)
        if a.keys() != b.keys() or any(a[k].tobytes() != b[k].tobytes() for k in a):
            diffs.append(f"{name}: arrays differ")
    _, sa = read_checkpoint(ref / CHECKPOINT_FILE)
    _, sb = read_checkpoint(run / CHECKPOINT_FILE)
    for s in (sa, sb):
        s["history"] = without_timing(s["history"])
        s["partial"].pop("seconds")
    if sa != sb:
        diffs.append("checkpoint trainer state differs")
    ma = without_timing(json.loads(line) for line in (ref / "metrics.jsonl").open())
    mb = without_timing(json.loads(line) for line in (run / "metrics.jsonl").open())
    if ma != mb:
        diffs.append(f"metrics differ: {ma} vs {mb}")
    if json.loads((ref / "config.json").read_text()) != json.loads(
            (run / "config.json").read_text()):
        diffs.append("config.json differs")
    for png in sorted((ref / "figures").glob("*.png")):
        if png.name != "loss_curves.png" and png.read_bytes() != (
                run / "figures" / png.name).read_bytes():
            diffs.append(f"figures/{png.name} differs")
    return diffs


def kill_points(spec: str, writes: int) -> list[tuple[str, int]]:
    if spec == "all":
        return [(mode, k) for mode in ("before", "after") for k in range(1, writes + 1)]
    points = []
    for item in spec.split(","):
        mode, k = item.split(":")
        points.append((mode, int(k) if int(k) > 0 else writes + 1 + int(k)))
    return points


def main_driver(work: Path, spec: str, train_args: list[str]) -> dict:
    ref = work / "reference"
    status, writes = run_child(["train", *train_args, "--out", str(ref)])
    assert status == 0, f"the uninterrupted run failed: status {status}"
    report = {"writes": writes, "kills": []}
    for mode, k in kill_points(spec, writes):
        out = work / f"{mode}-{k}"
        status, _ = run_child(["train", *train_args, "--out", str(out)], k, mode)
        killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        entry = {"mode": mode, "write": k, "killed": killed}
        if (out / "config.json").is_file():
            status, _ = run_child(["train", "--out", str(out), "--resume", "--quiet",
                                   *[a for a in train_args if a == "--no-figures"]])
        else:  # killed before the run's first file: it never started, start it again
            entry["restarted"] = True
            status, _ = run_child(["train", *train_args, "--out", str(out)])
        entry["resume_status"] = status
        entry["diffs"] = compare(ref, out) if status == 0 else ["resume failed"]
        report["kills"].append(entry)
    return report


if __name__ == "__main__":
    split = sys.argv.index("--")
    np.seterr(all="ignore")
    print(json.dumps(main_driver(Path(sys.argv[1]), sys.argv[2], sys.argv[split + 1:])))
