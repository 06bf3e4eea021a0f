"""numpyvae against PyTorch eager, torch.compile and JAX: idle, contended, one core; validated.

Each implementation (:mod:`peers`) runs in a process of its own (so that no
framework's thread pool meets another's), and the parent drives them in
interleaved rounds: one timed block of steps each, in turn, the order
rotated every round, so noise from the rest of the machine falls on all of
them alike. Reported: samples per second, the median over rounds, with the
slowest and fastest round. Before any timing, every implementation trains
20 steps from the same initial weights on the same data with the same noise,
and its losses must equal numpyvae's to 1e-4 relative (else it is not timed).

Conditions, all float32, the default recipe (784-400-20, Adam):

* ``idle``: batch 32, 128 and 512;
* ``contended``: batch 128 while one, then two, CPU-bound processes started
  by this benchmark compete for the cores (each a Python busy loop);
* ``one core``: batch 128 with every process restricted to one core by
  affinity (numpyvae and the peers choose their thread counts themselves);
* ``threading``: numpyvae's training step at batch 32 and 128, idle and with
  one competing process, on each Numba threading layer (TBB, numpyvae's
  default; OpenMP; OpenMP with passive waiting; workqueue), and beside it on
  TBB the per-op path on every thread (no thread chooser, no one-call step);
  ``--threading-only`` runs these groups alone, at batch 512 too, with the
  peers in the same rounds;
* ``regression``: numpyvae against an older commit of itself
  (``--baseline``, 4e52964 by default), numba at batch 32 and 128 (float32)
  and batch 128 float64, and the numpy backend at batch 128; the older
  commit's package is exported with ``git archive`` into a cache folder.

Run:  python benchmarks/bench_peers.py [--quick] [--data-dir DIR]
      (peers need ``pip install -e ".[bench]"``; absent ones are skipped)
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
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BASELINE = "4e52964"
PEERS = ("torch", "torch.compile", "jax")
OURS = "numba"
#: numpyvae's numba backend on NumPy's OpenBLAS instead of MKL: measured beside it, not a peer.
OURS_OPENBLAS = "numba openblas"
#: The interpreter numpyvae's workers run in (``--python``: a fresh venv installed as the
#: README says); None: this one.
OURS_PYTHON = None
#: A second install of numpyvae measured beside the first (``--second-python``), not a peer.
OURS_SECOND = "numba, second install"
SECOND_PYTHON = None
VALIDATION_STEPS = 20
VALIDATION_RTOL = 1e-4
#: Thread settings of the calling shell that the workers do not inherit (each library chooses).
STRIPPED = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OMP_WAIT_POLICY", "NUMBA_THREADING_LAYER",
            "NUMBA_THREADING_LAYER_PRIORITY", "NUMPYVAE_BLAS")
#: The threading choices compared for numpyvae's defaults (labels: environment of the worker).
THREADING = {"tbb (default)": {}, "omp": {"NUMBA_THREADING_LAYER": "omp"},
             "omp, passive": {"NUMBA_THREADING_LAYER": "omp", "OMP_WAIT_POLICY": "passive"},
             "workqueue": {"NUMBA_THREADING_LAYER": "workqueue"}}

COMPETITOR = ("import time\n"
              "end = time.time() + {seconds}\n"
              "n = 0\n"
              "while time.time() < end:\n"
              "    n += 1\n")


# --------------------------------------------------------------------------
# The worker: one implementation, driven by commands on stdin
# --------------------------------------------------------------------------


def worker(args):
    sys.path.insert(0, args.root)  # the numpyvae to measure (this checkout or an older one)
    sys.path.insert(1, str(HERE))
    import peers

    data = np.load(args.data).astype(args.dtype)
    init = {k: v.astype(args.dtype) for k, v in np.load(args.init).items()}
    threads = len(os.sched_getaffinity(0))
    impl = peers.make(args.impl, data, args.batch, init, args.dtype, threads=threads)
    reply = lambda **kw: print(json.dumps(kw), flush=True)  # noqa: E731
    reply(ready=True)
    i = 0
    for line in sys.stdin:
        cmd, *rest = line.split()
        if cmd == "validate":
            noise = peers.validation_noise(args.batch, VALIDATION_STEPS, dtype=args.dtype)
            B, n_batches = args.batch, len(data) // args.batch
            losses = [impl.step_with(data[(k % n_batches) * B:(k % n_batches + 1) * B], noise[k])
                      for k in range(VALIDATION_STEPS)]
            reply(losses=[float(v) for v in losses])
        elif cmd == "first":  # the first step (compilation or cache load) and a rough rate
            t0 = time.perf_counter()
            impl.step(i)
            impl.sync()
            first = time.perf_counter() - t0
            i += 1
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < float(rest[0]):
                impl.step(i)
                i += 1
                n += 1
            impl.sync()
            reply(first_step_s=first, step_s=(time.perf_counter() - t0) / n)
        elif cmd == "run":
            n = int(rest[0])
            t0 = time.perf_counter()
            for _ in range(n):
                impl.step(i)
                i += 1
            impl.sync()
            reply(seconds=time.perf_counter() - t0)
        elif cmd == "threads":
            info = {"affinity": threads}
            try:
                import numba

                info["numba_threads"] = numba.get_num_threads()
                info["numba_layer"] = numba.threading_layer()
            except (ImportError, ValueError):
                pass
            model = getattr(impl, "model", None)
            try:  # what the training step's thread chooser measured: seconds per step
                from numpyvae.fast.threads import chooser_of

                chooser = chooser_of(model)
                if chooser is not None:
                    info["step_s_by_threads"] = {str(k): v for k, v in chooser.cost.items()}
                    info["chosen_threads"] = chooser.best
            except (ImportError, AttributeError, TypeError):
                pass
            reply(**info)
        elif cmd == "install":
            reply(**_install(args.impl))
        elif cmd == "rss":
            reply(peak_rss_mib=_peak_rss_mib())
        elif cmd == "quit":
            return


def _install(impl):
    """What this worker runs on: the interpreter's environment, threading layer and BLAS."""
    info = {"python": sys.executable, "venv": sys.prefix != sys.base_prefix}
    if impl.startswith("numba") or impl == "numpy":
        import numba

        from numpyvae.fast import numba_ops

        try:
            info["threading_layer"] = numba.threading_layer()
        except ValueError:
            info["threading_layer"] = "not initialised"
        info["blas"] = numba_ops.BLAS if impl != "numpy" else "NumPy's BLAS"
    elif impl.startswith("torch"):
        import torch

        config = torch.__config__.show()
        blas = next((line.split("=", 1)[1].rstrip(", ") for line in config.replace(",", "\n")
                     .splitlines() if "BLAS_INFO" in line), "unknown")
        info["threading_layer"] = next(
            (line.split(":", 1)[1].strip() for line in torch.__config__.parallel_info()
             .splitlines() if line.startswith("ATen parallel backend")), "unknown")
        info["blas"] = blas + (", MKL" if torch.backends.mkl.is_available() else "")
    elif impl == "jax":
        import jax

        info["threading_layer"] = "XLA's thread pool"
        info["blas"] = f"XLA CPU (Eigen), jax {jax.__version__}"
    return info


def _peak_rss_mib():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# --------------------------------------------------------------------------
# The parent
# --------------------------------------------------------------------------


class Worker:
    def __init__(self, impl, batch, files, dtype="float32", root=ROOT, cpus=None, label=None,
                 env=None, python=None):
        self.impl, self.batch, self.label = impl, batch, label or impl
        # numpyvae's workers run in the install being measured (--python); the peers here
        ours = impl.startswith("numba") or impl == "numpy"
        python = python or (OURS_PYTHON if ours else None) or sys.executable
        cmd = [python, str(Path(__file__).resolve()), "--worker", impl,
               "--batch", str(batch), "--dtype", dtype, "--root", str(root),
               "--data", str(files["data"]), "--init", str(files["init"])]
        extra = env or {}
        env = {k: v for k, v in os.environ.items() if k not in STRIPPED}
        env["PYTHONWARNINGS"] = "ignore"
        env.update(extra)
        preexec = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env,
                                     preexec_fn=preexec)
        self.error = None

    def ask(self, command):
        if self.error:
            return None
        try:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except (BrokenPipeError, OSError):
            line = ""
        if not line:
            self.error = (self.proc.stderr.read() or "exited")[-2000:]
            return None
        return json.loads(line)

    def start(self):
        line = self.proc.stdout.readline()
        if not line:
            self.error = (self.proc.stderr.read() or "exited")[-2000:]
        return self.error is None

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
            except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
                self.proc.kill()


def available(impl):
    module = {"torch": "torch", "torch.compile": "torch", "jax": "jax"}.get(impl)
    if module is None:
        return True
    import importlib.util

    return importlib.util.find_spec(module) is not None and (
        impl != "jax" or importlib.util.find_spec("optax") is not None)


def mkl_installed():
    """Whether numpyvae's numba backend finds Intel MKL (the ``mkl`` extra)."""
    code = "from numpyvae.fast.numba_blas import _mkl_library; print(_mkl_library() is not None)"
    if OURS_PYTHON:  # ask the install being measured
        found = subprocess.run([OURS_PYTHON, "-c", code], capture_output=True, text=True)
        return found.stdout.strip() == "True"
    from numpyvae.fast.numba_blas import _mkl_library

    return _mkl_library() is not None


def start_workers(specs, files, say):
    workers = []
    for spec in specs:
        w = Worker(files=files, **spec)
        workers.append(w)
    for w in workers:
        if not w.start():
            say(f"  {w.label}: failed to start: {w.error.strip().splitlines()[-1]}")
    return [w for w in workers if w.error is None]


def validate(workers, reference, say):
    """Losses of 20 steps with fixed noise; each must match the reference's to 1e-4 relative."""
    losses = {w.label: (w.ask("validate") or {}).get("losses") for w in workers}
    for w in workers:
        if w.error:
            say(f"  {w.label}: failed: {w.error.strip()}")
    ref = losses.get(reference)
    report = {}
    for label, got in losses.items():
        if got is None or ref is None:
            report[label] = {"passed": False, "max_rel_diff": None}
            continue
        diff = max(abs(a - b) / abs(b) for a, b in zip(got, ref, strict=True))
        report[label] = {"passed": diff <= VALIDATION_RTOL, "max_rel_diff": diff,
                         "first_loss": got[0], "last_loss": got[-1]}
        say(f"  validated {label:<22} max relative difference {diff:.1e} over "
            f"{VALIDATION_STEPS} steps ({'ok' if diff <= VALIDATION_RTOL else 'FAILED'})")
    return report


def measure(workers, rounds, block_seconds, pause, say, what=""):
    """Samples/s of each worker: rounds of one timed block each, interleaved."""
    steps = {}
    first = {}
    for w in workers:
        r = w.ask(f"first {min(block_seconds, 0.5)}")
        if r is None:
            continue
        first[w.label] = r["first_step_s"]
        steps[w.label] = max(3, int(block_seconds / max(r["step_s"], 1e-6)))
    live = [w for w in workers if w.label in steps]
    if not live:
        return {}
    rates = {w.label: [] for w in live}
    for k in range(rounds):
        order = live[k % len(live):] + live[:k % len(live)]
        for w in order:
            time.sleep(pause)  # let the previous process's threads go to sleep
            r = w.ask(f"run {steps[w.label]}")
            if r is not None:
                rates[w.label].append(steps[w.label] * w.batch / r["seconds"])
    out = {}
    for label, r in rates.items():
        if not r:
            continue
        out[label] = {"samples_per_s": statistics.median(r), "min": min(r), "max": max(r),
                      "rounds": r, "steps_per_block": steps[label],
                      "first_step_s": first[label]}
    if say:
        for label, r in out.items():
            say(f"  {what}{label:<24}{r['samples_per_s']:>9.0f} samples/s "
                f"(rounds {r['min']:.0f}-{r['max']:.0f})")
    return out


class Competitors:
    """``n`` CPU-bound busy loops, each ending by itself after ``seconds`` (or at ``stop``)."""

    def __init__(self, n, seconds=600):
        self.procs = [subprocess.Popen([sys.executable, "-c",
                                        COMPETITOR.format(seconds=seconds)])
                      for _ in range(n)]
        time.sleep(0.5)

    def stop(self):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait()


def baseline_root(commit):
    """The numpyvae package of an older commit, exported once into a cache folder."""
    folder = Path(tempfile.gettempdir()) / f"numpyvae-baseline-{commit}"
    if not (folder / "numpyvae" / "__init__.py").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "numpyvae"],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def run(data_dir=None, quick=False, baseline=BASELINE, verbose=True, save=None, peers_only=False):
    say = print if verbose else (lambda *a, **k: None)
    sys.path.insert(0, str(ROOT))
    sys.path.insert(1, str(HERE))
    import common
    import peers

    rounds = 3 if quick else 7
    block = 0.05 if quick else 0.25
    pause = 0.05 if quick else 0.15
    n = 2048 if quick else 16384
    x, source = common.load_data(data_dir, "float32", n=n)
    common.shuffled(x)
    impls = [OURS] + [p for p in PEERS if available(p)]
    if quick:
        impls = [OURS] + [p for p in ("torch", "jax") if available(p)]
    skipped = [p for p in PEERS if not available(p)]
    if skipped:
        say(f"peers not installed, skipped: {', '.join(skipped)} (pip install -e '.[bench]')")
    result = {"benchmark": "numpyvae against its peers", "data": source, "quick": quick,
              "load_average_at_start": os.getloadavg()[0],  # before our own competitors
              "rounds": rounds, "block_seconds": block, "implementations": impls,
              "skipped": skipped, "validation": {}, "idle": {}, "contended": {},
              "one_core": {}, "regression": {}, "peak_rss_mib": {}, "installs": {},
              "numpyvae_python": common.interpreter(OURS_PYTHON or sys.executable),
              "peers_only": peers_only, "second_python": common.interpreter(SECOND_PYTHON)}

    def checkpoint():  # every group's figures are kept as soon as they are measured
        result["summary"] = summarise(result)
        if save is not None:
            save(result)

    with tempfile.TemporaryDirectory() as tmp:
        files = {"data": Path(tmp) / "data.npy", "init": Path(tmp) / "init.npz"}
        np.save(files["data"], x)
        np.savez(files["init"], **peers.numpyvae_init())
        # The headline first (batch 128 idle and contended), then the regression
        # check, then the other batch sizes, one core and the threading layers.
        idle_group(result, impls, 128, files, rounds, block, pause, quick, say)
        checkpoint()
        if not quick:
            if not peers_only:
                result["regression"] = regression(files, baseline, rounds, block, pause, say)
                checkpoint()
            for batch in (32, 512):
                idle_group(result, impls, batch, files, rounds, block, pause, quick, say)
                checkpoint()
            say("batch 128, float32, every process on one core (affinity)")
            specs = [{"impl": i, "batch": 128, "cpus": {0}} for i in impls]
            if SECOND_PYTHON:
                specs.insert(1, {"impl": OURS, "batch": 128, "cpus": {0}, "label": OURS_SECOND,
                                 "python": SECOND_PYTHON})
            workers = start_workers(specs, files, say)
            try:
                result["one_core"] = measure(workers, rounds, block, pause, say)
                if workers and workers[0].label == OURS:
                    result["numba_threads_one_core"] = workers[0].ask("threads")
            finally:
                for w in workers:
                    w.close()
            checkpoint()
            if not peers_only:
                result["threading"] = threading_layers(files, max(3, rounds - 2), block, pause,
                                                       say)
    result["summary"] = summarise(result)
    return result


def idle_group(result, impls, batch, files, rounds, block, pause, quick, say):
    """Validate and time every implementation at ``batch``; at 128 also under contention."""
    import common

    say(f"batch {batch}, float32, idle")
    specs = [{"impl": i, "batch": batch} for i in impls]
    if OURS in impls and mkl_installed():  # and beside it, the same on NumPy's OpenBLAS
        specs.insert(1, {"impl": OURS, "batch": batch, "label": OURS_OPENBLAS,
                         "env": {"NUMPYVAE_BLAS": "openblas"}})
    if OURS in impls and SECOND_PYTHON:
        specs.insert(1, {"impl": OURS, "batch": batch, "label": OURS_SECOND,
                         "python": SECOND_PYTHON})
    workers = start_workers(specs, files, say)
    try:
        report = validate(workers, OURS, say)
        result["validation"][str(batch)] = report
        timed = [w for w in workers if report.get(w.label, {}).get("passed")]
        for w in timed:  # what each row ran on, asked after its first steps
            install = w.ask("install") or {}
            install["python"] = common.interpreter(install.get("python"))
            result["installs"][w.label] = install
        result["idle"][str(batch)] = measure(timed, rounds, block, pause, say)
        if batch != 128:
            return
        for w in timed:
            result["peak_rss_mib"][w.label] = (w.ask("rss") or {}).get("peak_rss_mib")
        if timed and timed[0].label == OURS:
            result["numba_threads_idle"] = timed[0].ask("threads")
        for k in (1,) if quick else (1, 2):
            say(f"batch 128, float32, {k} competing process(es)")
            comp = Competitors(k)
            try:
                result["contended"][str(k)] = measure(timed, rounds, block, pause, say)
                if timed and timed[0].label == OURS:
                    result[f"numba_threads_contended_{k}"] = timed[0].ask("threads")
            finally:
                comp.stop()
    finally:
        for w in workers:
            w.close()


def regression(files, baseline, rounds, block, pause, say):
    """numpyvae now against ``baseline``, side by side: numba and numpy backends."""
    try:
        old = baseline_root(baseline)
    except (OSError, subprocess.CalledProcessError) as exc:
        say(f"regression: cannot export {baseline} ({exc}); skipped")
        return {}
    out = {"baseline": baseline}
    cases = [(32, "float32", "numba"), (128, "float32", "numba"), (128, "float64", "numba"),
             (128, "float32", "numpy")]
    for batch, dtype, backend in cases:
        key = f"{backend} batch {batch} {dtype}"
        say(f"regression: {key}, now against {baseline}")
        specs = [{"impl": backend, "batch": batch, "dtype": dtype, "root": old,
                  "label": f"{backend} @{baseline}"},
                 {"impl": backend, "batch": batch, "dtype": dtype, "label": f"{backend} now"}]
        if backend == "numba":
            specs.append({"impl": "numba per-op", "batch": batch, "dtype": dtype,
                          "label": "numba per-op now"})
        workers = start_workers(specs, files, say)
        try:
            out[key] = measure(workers, rounds, block, pause, say)
        finally:
            for w in workers:
                w.close()
    return out


def threading_layers(files, rounds, block, pause, say, batches=(32, 128), peers=()):
    """numpyvae's training step on each threading layer (and its other paths), idle and busy.

    ``peers``: implementations timed in the same rounds, so that each layer's
    figure can be set against the best peer's (``--threading-only``)."""
    out = {}
    for batch in batches:
        specs = [{"impl": "numba", "batch": batch, "env": env, "label": f"numba, {name}"}
                 for name, env in THREADING.items()]
        specs.append({"impl": "numba per-op", "batch": batch,
                      "label": "numba per-op, tbb (default)"})
        specs += [{"impl": p, "batch": batch} for p in peers]
        workers = start_workers(specs, files, say)
        try:
            timed = workers
            if peers:  # a peer is timed only if it trains as numpyvae does
                report = validate(workers, "numba, tbb (default)", say)
                timed = [w for w in workers
                         if w.impl.startswith("numba") or report[w.label]["passed"]]
            say(f"threading layers, batch {batch}, idle")
            out[f"batch {batch} idle"] = measure(timed, rounds, block, pause, say)
            say(f"threading layers, batch {batch}, 1 competing process")
            comp = Competitors(1)
            try:
                out[f"batch {batch} contended"] = measure(timed, rounds, block, pause, say)
            finally:
                comp.stop()
        finally:
            for w in workers:
                w.close()
    return out


def threading_only(data_dir, save):
    """The threading-layer groups alone, beside the peers (``--threading-only``)."""
    sys.path.insert(0, str(ROOT))
    sys.path.insert(1, str(HERE))
    import common
    import peers

    rounds, block, pause = 7, 0.25, 0.15
    x, source = common.load_data(data_dir, "float32", n=16384)
    common.shuffled(x)
    impls = [p for p in PEERS if available(p)]
    result = {"benchmark": "numpyvae's threading layers beside its peers", "data": source,
              "load_average_at_start": os.getloadavg()[0], "rounds": rounds,
              "block_seconds": block, "implementations": impls,
              "numpyvae_python": common.interpreter(OURS_PYTHON or sys.executable)}
    with tempfile.TemporaryDirectory() as tmp:
        files = {"data": Path(tmp) / "data.npy", "init": Path(tmp) / "init.npz"}
        np.save(files["data"], x)
        np.savez(files["init"], **peers.numpyvae_init())
        result["threading"] = threading_layers(files, rounds, block, pause, print,
                                               batches=(32, 128, 512), peers=impls)
    result["summary"] = layers_against_peers(result["threading"])
    return result


def layers_against_peers(groups, default="numba, tbb (default)"):
    """Each numpyvae row of each group over the best peer's figure in that group, and each
    row's rounds over the default layer's in the same rounds (the median of the ratios)."""
    summary = {}
    for group, table in groups.items():
        rates = {k: v["samples_per_s"] for k, v in table.items()}
        peers_here = {k: v for k, v in rates.items() if not k.startswith("numba")}
        if not peers_here or default not in table:
            continue
        best = max(peers_here, key=peers_here.get)
        base = table[default]["rounds"]
        summary[group] = {
            "best_peer": best, "best_peer_samples_per_s": peers_here[best],
            "ratio": {k: v / peers_here[best] for k, v in rates.items() if k.startswith("numba")},
            "per_round_over_default": {
                k: statistics.median(a / b for a, b in zip(v["rounds"], base, strict=True))
                for k, v in table.items()}}
    return summary


def is_peer(label):
    """Whether a result's label is a peer's (not numpyvae's, on either BLAS)."""
    return label not in (OURS, OURS_OPENBLAS, OURS_SECOND)


def _rate(table, label):
    return (table or {}).get(label, {}).get("samples_per_s")


def summarise(result):
    """Ratios the targets are stated in: ours over the best peer, contended over idle."""
    summary = {}
    for batch, table in result["idle"].items():
        peers_here = {k: v["samples_per_s"] for k, v in table.items() if is_peer(k)}
        if OURS in table and peers_here:
            best = max(peers_here, key=peers_here.get)
            summary[f"idle batch {batch}"] = {
                "numba": table[OURS]["samples_per_s"], "best_peer": best,
                "best_peer_samples_per_s": peers_here[best],
                "ratio": table[OURS]["samples_per_s"] / peers_here[best]}
    idle128 = result["idle"].get("128", {})
    for k, table in result["contended"].items():
        peers_here = {p: v["samples_per_s"] for p, v in table.items() if is_peer(p)}
        if OURS not in table or not peers_here:
            continue
        best = max(peers_here, key=peers_here.get)
        summary[f"contended {k} batch 128"] = {
            "numba": table[OURS]["samples_per_s"], "best_peer": best,
            "best_peer_samples_per_s": peers_here[best],
            "ratio": table[OURS]["samples_per_s"] / peers_here[best],
            "kept_of_idle": {p: v["samples_per_s"] / _rate(idle128, p)
                             for p, v in table.items() if _rate(idle128, p)}}
    one = result.get("one_core") or {}
    peers_here = {p: v["samples_per_s"] for p, v in one.items() if is_peer(p)}
    if OURS in one and peers_here:
        best = max(peers_here, key=peers_here.get)
        summary["one core batch 128"] = {
            "numba": one[OURS]["samples_per_s"], "best_peer": best,
            "best_peer_samples_per_s": peers_here[best],
            "ratio": one[OURS]["samples_per_s"] / peers_here[best]}
    rss = {k: v for k, v in result["peak_rss_mib"].items() if v}
    if OURS in rss and len(rss) > 1:
        summary["peak_rss_mib"] = rss
    return summary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="folder with train-images-idx3-ubyte(.gz)")
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument("--baseline", default=BASELINE, help="the older commit to compare with")
    parser.add_argument("--out", default="peers", help="results file name (without .json)")
    parser.add_argument("--python", help="the interpreter of the install numpyvae is measured "
                                         "in (e.g. a fresh venv's bin/python; default: this one)")
    parser.add_argument("--second-python", help="a second install of numpyvae, measured beside "
                                                "the first (e.g. one with the mkl extra)")
    parser.add_argument("--peers-only", action="store_true",
                        help="the peers only: batch 32, 128 and 512 idle; 128 with 1 and 2 "
                             "competing processes and on one core (no regression or "
                             "threading-layer groups)")
    parser.add_argument("--threading-only", action="store_true",
                        help="the threading-layer groups only, at batch 32, 128 and 512, with "
                             "the peers timed in the same rounds")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--impl", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--init", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        args.impl = args.worker
        worker(args)
        return
    global OURS_PYTHON, SECOND_PYTHON
    OURS_PYTHON, SECOND_PYTHON = args.python, args.second_python
    sys.path.insert(0, str(HERE))
    import common

    def save(payload):
        payload["machine"] = common.machine()
        common.save_json(args.out, payload)

    if args.threading_only:
        payload = threading_only(args.data_dir, save)
    else:
        payload = run(args.data_dir, args.quick, args.baseline, save=save,
                      peers_only=args.peers_only)
    save(payload)
    print(json.dumps(payload["summary"], indent=2))
    print(f"saved {common.RESULTS / (args.out + '.json')}")


if __name__ == "__main__":
    main()
