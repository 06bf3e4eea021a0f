"""The training step's five large products on each BLAS library at hand, one thread each.

Most of the default VAE's step (784-400-20) is five matrix products of a
block of examples with the 784 x 400 and 400 x 784 weights: ``x @ W1`` and
``h @ W4`` forward, ``h.T @ dy``, ``dy @ W4.T`` and ``x.T @ da`` backward.
Would another BLAS library run them faster? This benchmark times them on:

* ``mkl``: the install's Intel MKL (``libmkl_rt``, sequential), which the
  Numba backend calls on Intel CPUs (``numpyvae/fast/numba_blas.py``);
* ``openblas``: NumPy's own OpenBLAS (``np.matmul``, one thread), the
  backend's choice on other CPUs;
* ``blis``: BLIS, from the ``blis`` package, when it is installed;
* ``mkl PATH``: any other ``libmkl_rt`` named with ``--mkl`` (another MKL
  release, installed in a venv of its own).

Each library runs in a process of its own (two MKL releases cannot share a
process), one thread, the products at the rows one thread of the step takes
(256: batch 512, data-parallel; 64: batch 128 on two threads). The
processes take turns, a round each, the order rotated every round; each
round times every product over a few calls. Reported per library: the five
products' total time, median over rounds with the fastest and slowest
round, the median of the per-round ratios to the first library's (the
install's MKL, else the first ``--mkl``; so the machine's slow drifts fall
out), and each product's GFLOP/s. Every
library's products are first checked against float64 products (relative
error below 1e-5); one that disagrees is not timed.

Run:  python benchmarks/bench_blas_libraries.py [--rows 256 64] [--mkl PATH ...] [--quick]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import time

import common
import numpy as np

#: The five large products: (name, shape of a, shape of b, a transposed, b transposed), for
#: ``rows`` examples; each is ``rows x 784 x 400`` multiply-adds.
PRODUCTS = (
    ("x @ W1", ("rows", 784), (784, 400), False, False),
    ("h @ W4", ("rows", 400), (400, 784), False, False),
    ("h.T @ dy", ("rows", 400), ("rows", 784), True, False),
    ("dy @ W4.T", ("rows", 784), (400, 784), False, True),
    ("x.T @ da", ("rows", 784), ("rows", 400), True, False),
)
ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "BLIS_NUM_THREADS": "1",
              "OMP_NUM_THREADS": "1"}


def operands(rows, seed=0):
    """The products' float32 operands and outputs: ``[(name, a, b, ta, tb, c)]``."""
    rng = np.random.default_rng(seed)
    out = []
    for name, sa, sb, ta, tb in PRODUCTS:
        a = rng.standard_normal([rows if d == "rows" else d for d in sa]).astype(np.float32)
        b = rng.standard_normal([rows if d == "rows" else d for d in sb]).astype(np.float32)
        c = np.zeros(((a.T if ta else a).shape[0], (b.T if tb else b).shape[1]), np.float32)
        out.append((name, a, b, ta, tb, c))
    return out


def mkl_gemm(path):
    """``gemm(a, b, ta, tb, c)`` on MKL's ``cblas_sgemm`` (sequential), and MKL's version."""
    library = ctypes.CDLL(path)
    library.MKL_Set_Threading_Layer(ctypes.c_int(1))  # sequential
    sgemm = library.cblas_sgemm
    c_int, c_float, ptr = ctypes.c_int, ctypes.c_float, ctypes.c_void_p
    sgemm.argtypes = [c_int] * 6 + [c_float, ptr, c_int, ptr, c_int, c_float, ptr, c_int]
    row_major, plain, transposed = 101, 111, 112

    def gemm(a, b, ta, tb, c):
        m, n = c.shape
        k = a.shape[0] if ta else a.shape[1]
        sgemm(row_major, transposed if ta else plain, transposed if tb else plain, m, n, k,
              1.0, a.ctypes.data, a.shape[1], b.ctypes.data, b.shape[1], 0.0, c.ctypes.data, n)

    buffer = ctypes.create_string_buffer(200)
    library.MKL_Get_Version_String(buffer, ctypes.c_int(len(buffer)))
    return gemm, buffer.value.decode(errors="replace").strip()


def numpy_gemm():
    """``gemm`` on NumPy's ``matmul`` (its own BLAS), and that BLAS's name and version."""
    def gemm(a, b, ta, tb, c):
        np.matmul(a.T if ta else a, b.T if tb else b, out=c)

    blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    return gemm, f"NumPy {np.__version__}'s {blas.get('name')} {blas.get('version')}"


def blis_gemm():
    """``gemm`` on BLIS (the ``blis`` package), and its version."""
    from importlib.metadata import version

    from blis.py import gemm as blis_product

    def gemm(a, b, ta, tb, c):
        blis_product(a, b, out=c, trans1=ta, trans2=tb)

    return gemm, f"BLIS (the blis package {version('blis')})"


def worker(library, path, rows, calls):
    """Serve rounds on stdin: "time" -> seconds per call of each product, one JSON line each."""
    gemm, name = (mkl_gemm(path) if library.startswith("mkl") else
                  numpy_gemm() if library == "openblas" else blis_gemm())
    work = operands(rows)
    errors = []
    for _, a, b, ta, tb, c in work:
        gemm(a, b, ta, tb, c)
        exact = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b).astype(np.float64)
        errors.append(float(np.abs(c - exact).max() / np.abs(exact).max()))
    print(json.dumps({"library": name, "max_rel_error": max(errors)}), flush=True)
    for line in sys.stdin:
        if line.strip() != "time":
            break
        seconds = {}
        for product, a, b, ta, tb, c in work:
            gemm(a, b, ta, tb, c)
            start = time.perf_counter()
            for _ in range(calls):
                gemm(a, b, ta, tb, c)
            seconds[product] = (time.perf_counter() - start) / calls
        print(json.dumps(seconds), flush=True)


def default_mkl():
    """The install's ``libmkl_rt`` (the one the Numba backend loads), or None."""
    try:
        from numpyvae.fast.numba_blas import _mkl_library
    except ImportError:  # an interpreter without numpyvae's fast path: --mkl only
        return None
    library = _mkl_library()
    return None if library is None else library._name


def measure(libraries, rows, rounds, calls, say):
    """Each library's rounds at ``rows``: ``{label: report}`` (see the module docstring)."""
    env = {**os.environ, **ONE_THREAD}
    procs, info = {}, {}
    for label, (library, path) in libraries.items():
        cmd = [sys.executable, __file__, "--worker", library, "--path", path or "",
               "--rows", str(rows), "--calls", str(calls)]
        procs[label] = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, env=env)
    try:
        for label, proc in list(procs.items()):
            line = proc.stdout.readline()
            if not line:
                say(f"  {label}: failed: {proc.stderr.read().strip().splitlines()[-1:]}")
                del procs[label]
                continue
            info[label] = json.loads(line)
            if not info[label]["max_rel_error"] < 1e-5:
                say(f"  {label}: relative error {info[label]['max_rel_error']:.1e}, not timed")
                del procs[label]
        times = {label: [] for label in procs}
        order = list(procs)
        for r in range(rounds + 1):  # the first round warms up, not kept
            for label in order[r % len(order):] + order[:r % len(order)]:
                procs[label].stdin.write("time\n")
                procs[label].stdin.flush()
                seconds = json.loads(procs[label].stdout.readline())
                if r:
                    times[label].append(seconds)
    finally:
        for proc in procs.values():
            proc.stdin.close()
            proc.wait(timeout=60)
    flop = 2 * rows * 784 * 400
    reference = [sum(t.values()) for t in next(iter(times.values()), [])]
    report = {}
    for label, rounds_ in times.items():
        totals = [sum(t.values()) for t in rounds_]
        report[label] = {
            **info[label], "total_us": 1e6 * statistics.median(totals),
            "total_us_range": [1e6 * min(totals), 1e6 * max(totals)],
            "gflops": {p: flop / statistics.median(t[p] for t in rounds_) / 1e9
                       for p in rounds_[0]},
            "time_over_first": statistics.median(t / m for t, m in zip(totals, reference,
                                                                        strict=True))}
    return report


def machine():
    """Where the figures were measured (no Numba needed: any interpreter with NumPy runs this)."""
    return {"cpu": common._cpu_name(), "cores": os.cpu_count(), "numpy": np.__version__,
            "python": sys.version.split()[0], "load_average_1min": os.getloadavg()[0],
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[256, 64])
    parser.add_argument("--mkl", nargs="*", default=[], help="other libmkl_rt files to time")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=10, help="calls of each product a round")
    parser.add_argument("--out", default="blas_libraries", help="results file (without .json)")
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.path, args.rows[0], args.calls)
        return
    if args.quick:
        args.rows, args.rounds, args.calls = [64], 3, 2
    libraries = {}
    mkl = default_mkl()
    if mkl:
        libraries["mkl"] = ("mkl", mkl)
    for i, path in enumerate(args.mkl, 1):
        libraries[f"--mkl {i}"] = ("mkl", path)
    libraries["openblas"] = ("openblas", None)
    try:
        import blis  # noqa: F401

        libraries["blis"] = ("blis", None)
    except ImportError:
        print("BLIS not installed (pip install blis): not timed")
    results = {}
    for rows in args.rows:
        print(f"{rows} rows:")
        results[str(rows)] = measure(libraries, rows, args.rounds, args.calls, print)
        for r in results[str(rows)].values():
            print(f"  {r['library'][:60]:<60} {r['total_us']:8.0f} us, time / the first's "
                  f"{r['time_over_first']:.3f}, GFLOP/s "
                  + ", ".join(f"{g:.0f}" for g in r["gflops"].values()))
    print("saved", common.save_json(args.out, {
        "benchmark": "blas_libraries", "quick": args.quick, "rounds": args.rounds,
        "calls": args.calls, "results": results, "machine": machine()}))


if __name__ == "__main__":
    main()
