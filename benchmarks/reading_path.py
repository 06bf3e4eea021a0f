"""How far a reader walks: call frames and files from ``numpyvae train`` to each gradient.

Runs ``numpyvae train`` in this process on a small ``--data`` file, on the
NumPy backend, and records the call stack the first time each target function
runs: the KL's gradient with respect to logvar, a ``Linear`` layer's backward,
a convolution's backward and the importance-weighted objective's gradient.
A frame counts when its code lies in the ``numpyvae`` package; two numbers are
reported per target, from the first such frame down to the target itself:

* ``frames_from_command`` — from the command's entry (what a debugger shows
  when a reader steps in from ``numpyvae train``);
* ``frames_from_step`` — from the first frame inside the training step (the
  model's loss and gradients, or the step function that calls it), the part of
  the path that is the lesson.

    python benchmarks/reading_path.py   # prints the table, writes results/reading_path.json
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(os.environ.get("NUMPYVAE_BENCH_RESULTS", ROOT / "benchmarks" / "results"))

#: target -> (the function's module, its name, the command-line options that reach it)
TARGETS = {
    "KL gradient": ("numpyvae.ops", "gaussian_kl_backward", []),
    "Linear backward": ("numpyvae.ops", "linear_backward", []),
    "conv backward": ("numpyvae.ops", "conv2d_backward", ["--arch", "conv"]),
    "IWAE gradient": ("numpyvae.iwae", None, ["--iw-train", "3"]),
}
STEP_ENTRY_NAMES = ("loss_and_grads", "train_step", "step")


def _package_frames(frame, package_dir):
    frames = []
    while frame is not None:
        path = Path(frame.f_code.co_filename).resolve()
        if package_dir in path.parents:
            frames.append((str(path.relative_to(package_dir.parent)), frame.f_code.co_name))
        frame = frame.f_back
    return frames[::-1]  # outermost first


def measure(target, options, data_file, run_dir):
    import importlib

    import numpyvae
    from numpyvae.app import cli

    package_dir = Path(numpyvae.__file__).resolve().parent
    module_name, function_name, extra = TARGETS[target]
    module = importlib.import_module(module_name)
    seen = {}
    if function_name is None:  # the IWAE objective: the first function of the module that runs
        module_file = Path(module.__file__).resolve()

        def tracer(frame, event, arg):
            if event == "call" and not seen and Path(frame.f_code.co_filename).resolve() == \
                    module_file and "grad" in frame.f_code.co_name:
                seen["stack"] = _package_frames(frame, package_dir)
        sys.setprofile(tracer)
        try:
            cli.main(["train", "--data", str(data_file), "--epochs", "1", "--batch-size", "8",
                      "--backend", "numpy", "--no-figures", "--quiet", "--out", str(run_dir),
                      *options, *extra])
        finally:
            sys.setprofile(None)
    else:
        original = getattr(module, function_name)

        def spy(*args, **kwargs):
            if not seen:
                seen["stack"] = _package_frames(sys._getframe(0), package_dir)[:-1] + [
                    (str(Path(module.__file__).resolve().relative_to(package_dir.parent)),
                     function_name)]
            return original(*args, **kwargs)
        setattr(module, function_name, spy)
        try:
            cli.main(["train", "--data", str(data_file), "--epochs", "1", "--batch-size", "8",
                      "--backend", "numpy", "--no-figures", "--quiet", "--out", str(run_dir),
                      *options, *extra])
        finally:
            setattr(module, function_name, original)
    stack = seen.get("stack")
    if stack is None:
        return {"reached": False}
    step_at = next((i for i, (_, name) in enumerate(stack) if name in STEP_ENTRY_NAMES),
                   0)
    from_step = stack[step_at:]
    return {"reached": True, "frames_from_command": len(stack),
            "files_from_command": len({f for f, _ in stack}),
            "frames_from_step": len(from_step), "files_from_step": len({f for f, _ in from_step}),
            "path": [f"{f}:{name}" for f, name in stack]}


def main():
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        data_file = Path(tmp) / "images.npy"
        np.save(data_file, (rng.random((40, 28, 28)) > 0.5).astype(np.uint8) * 255)
        results = {}
        for i, target in enumerate(TARGETS):
            results[target] = measure(target, [], data_file, Path(tmp) / f"run{i}")
    print(f"{'target':<18} {'from the command':>18} {'from the step':>15}")
    for target, r in results.items():
        if not r["reached"]:
            print(f"{target:<18} not reached")
            continue
        print(f"{target:<18} {r['frames_from_command']:>3} frames, {r['files_from_command']} files"
              f" {r['frames_from_step']:>5} frames, {r['files_from_step']} files")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "reading_path.json").write_text(json.dumps(results, indent=1) + "\n")
    return results


if __name__ == "__main__":
    main()
