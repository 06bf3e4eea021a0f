"""``benchmarks/beta_sweep_shapes.py --quick`` runs end to end and writes what the guide cites.

A smoke run in a subprocess (1 epoch, β 1 and 8, one seed, a small network):
the numbers are meaningless, so this checks only the JSON's fields, that the
summary agrees with the runs, and that the figures were written.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("numba")  # benchmarks/common.py records its version
pytest.importorskip("matplotlib")

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "beta_sweep_shapes.py"
FACTORS = ["shape", "scale", "rotation", "x", "y"]


def test_quick_beta_sweep_writes_runs_summary_and_figures(tmp_path):
    env = {**os.environ, "NUMPYVAE_BENCH_RESULTS": str(tmp_path), "MPLBACKEND": "Agg",
           "NUMBA_NUM_THREADS": "1", "NUMPYVAE_CACHE": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, str(SCRIPT), "--quick"], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    payload = json.loads((tmp_path / "beta_sweep_shapes_quick.json").read_text())
    assert payload["quick"] is True and payload["betas"] == [1.0, 8.0] and payload["seeds"] == [0]
    assert [(r["beta"], r["seed"]) for r in payload["runs"]] == [(1.0, 0), (8.0, 0)]
    for r in payload["runs"]:
        assert r["epochs"] == 1 and r["n_test"] == 2000 and r["latent_dim"] == 10
        assert math.isclose(r["neg_elbo"], r["recon"] + r["kl"], rel_tol=1e-9)
        assert 0 <= r["active_units"] <= 10 and len(r["kl_per_dim"]) == 10
        assert -1e-9 <= r["mig"] <= 1 and list(r["mig_per_factor"]) == FACTORS
        assert math.isclose(r["mig"], sum(r["mig_per_factor"].values()) / 5, rel_tol=1e-9)
    assert list(payload["summary"]) == ["1", "8"]
    for beta, s in payload["summary"].items():
        run = next(r for r in payload["runs"] if f"{r['beta']:g}" == beta)
        assert s["n"] == 1
        for key in ("neg_elbo", "recon", "kl", "active_units", "mig"):
            assert s[key] == {"mean": run[key], "sd": 0.0, "values": [run[key]]}
        assert list(s["mig_per_factor"]) == FACTORS
    assert "machine" in payload and payload["threads"] == 1
    assert (tmp_path / payload["figure"]).stat().st_size > 10_000
    assert sorted(payload["traversals"]) == ["1", "8"]
    for name in payload["traversals"].values():
        assert (tmp_path / name).stat().st_size > 10_000
    assert "| β | MIG |" in out.stdout
