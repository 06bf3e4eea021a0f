"""The benchmark scripts still run: ``benchmarks/run_all.py --quick`` end to end, in a subprocess.

Timing claims live in ``benchmarks/``, not here: this checks only that every
benchmark runs, validates its kernels, and writes its JSON, chart and table.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("numba")
pytest.importorskip("matplotlib")

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _peer_installed():
    return any(importlib.util.find_spec(name) is not None for name in ("torch", "jax"))


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One quick run of every benchmark, with or without the optional peers installed."""
    results = tmp_path_factory.mktemp("results")
    env = {**os.environ, "NUMPYVAE_BENCH_RESULTS": str(results), "MPLBACKEND": "Agg"}
    out = subprocess.run([sys.executable, str(BENCHMARKS / "run_all.py"), "--quick"], env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return results


def test_quick_benchmark_run_writes_every_result(quick_run):
    tmp_path = quick_run
    for name in ("peers", "kernels", "startup", "memory"):
        payload = json.loads((tmp_path / f"{name}.json").read_text())
        assert payload["quick"] is True
    peers = json.loads((tmp_path / "peers.json").read_text())
    assert peers["validation"]["128"]["numba"]["passed"]
    assert all(r["passed"] for r in peers["validation"]["128"].values())  # same losses, 1e-4
    idle = peers["idle"]["128"]
    assert "numba" in idle and all(r["samples_per_s"] > 0 for r in idle.values())
    assert "numba" in peers["contended"]["1"]
    kernels = json.loads((tmp_path / "kernels.json").read_text())
    assert kernels["validate_then_time"] and all(r["valid"] for r in kernels["validate_then_time"])
    assert all(r["valid"] for r in kernels["matmul"])
    startup = json.loads((tmp_path / "startup.json").read_text())
    assert startup["numba_imported_by_import"] is False
    assert (tmp_path / "benchmarks.png").stat().st_size > 10_000
    summary = (tmp_path / "summary.md").read_text()
    assert "| target | measured | met |" in summary


def test_quick_benchmark_run_compares_with_the_peers(quick_run):
    if not _peer_installed():
        pytest.skip("no benchmark peer installed (pip install torch==2.13.0, or jax jaxlib optax)")
    peers = json.loads((quick_run / "peers.json").read_text())
    assert len(peers["validation"]["128"]) > 1  # numpyvae and at least one peer, validated
    assert (quick_run / "summary.md").read_text().count("numpyvae ÷ best peer") == 1


def quick_benchmark(script, tmp_path):
    """Run ``benchmarks/<script>.py --quick`` into ``tmp_path``: its results file, read."""
    env = {**os.environ, "NUMPYVAE_BENCH_RESULTS": str(tmp_path)}
    out = subprocess.run([sys.executable, str(BENCHMARKS / f"bench_{script}.py"), "--quick"],
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    payload = json.loads((tmp_path / f"{script}.json").read_text())
    assert payload["quick"] is True
    return payload


def test_core_share_benchmark_runs_and_reports_the_cores_granted(tmp_path):
    payload = quick_benchmark("core_share", tmp_path)
    for label in ("idle", "1 competing process"):
        for k in map(str, payload["threads"]):
            r = payload[label][k]
            assert r["samples_per_s"] > 0 and 0 < r["cores_min"] <= r["cores"] <= r["cores_max"]


def test_the_forward_pass_by_rows_benchmark_runs_and_both_passes_give_one_loss(tmp_path):
    result = quick_benchmark("forward_rows", tmp_path)["results"]["128"]
    assert result["same_loss"] is True
    assert all(rate > 0 for rate in result["samples_per_s"].values())


def test_the_whole_products_benchmark_runs_and_both_paths_give_the_same_bits(tmp_path):
    result = quick_benchmark("whole_products", tmp_path)["results"]["128"]
    assert result["same_bits"] is True
    assert all(rate > 0 for rate in result["samples_per_s"].values())


def test_the_blas_libraries_benchmark_checks_each_library_before_timing_it(tmp_path):
    result = quick_benchmark("blas_libraries", tmp_path)["results"]["64"]
    assert "openblas" in result  # NumPy's own BLAS is always there; MKL where installed
    first = next(iter(result.values()))
    assert first["time_over_first"] == 1.0
    for r in result.values():
        assert r["max_rel_error"] < 1e-5 and r["total_us"] > 0
        assert len(r["gflops"]) == 5 and all(g > 0 for g in r["gflops"].values())


def test_the_chooser_benchmark_runs_each_way_and_counts_its_probes(tmp_path):
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one CPU: the training step has no thread count to choose")
    result = quick_benchmark("chooser", tmp_path)["results"]
    for condition in ("idle", "1 competing process"):
        ways = result[condition]["128"]
        assert set(ways) == {"fixed", "doubling", "chooser"}
        assert ways["fixed"]["probe_steps"] == 0 and ways["fixed"]["switches"] == 0
        assert ways["fixed"]["ratio_median"] == 1.0
        for way in ways.values():
            assert way["samples_per_s"] > 0 and way["steps"] > way["probe_steps"]
