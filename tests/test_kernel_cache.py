"""The Numba kernels' disk cache follows edits to any backend module, not only the kernel's own.

A kernel holds the compiled code of the helpers it calls from other
modules (``numba_math``'s Bernoulli term inside ``numba_kernels``'
``bernoulli_nll``). Numba stamps a cache with the defining file only, so
an edited helper used to leave its callers loading their old code; the
backend stamps every kernel with all its modules (``numba_jit.jit_kernel``).

Each check runs on a copy of the package in a temporary folder, in fresh
processes (a cache is only read by a new process), and edits the copy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import numpyvae

PACKAGE = Path(numpyvae.__file__).resolve().parent

SCRIPT = """
import numpy as np
from numpyvae.fast import numba_kernels as K
logits = np.linspace(-3, 3, 12, dtype=np.float32).reshape(2, 6)
x = (logits > 0).astype(np.float32)
nll = np.empty(2, np.float32)
K.bernoulli_nll(logits, x, nll)
print(repr(float(nll.sum())))
"""

TERM = "    return max(v, T(0)) - x * v + log1p_small(e, T)\n"
DOUBLED = "    return T(2) * (max(v, T(0)) - x * v + log1p_small(e, T))\n"


@pytest.fixture
def package_copy(tmp_path):
    """A copy of the numpyvae package (without caches) in its own folder, and a runner."""
    shutil.copytree(PACKAGE, tmp_path / "numpyvae",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUMBA_DISABLE_JIT", "NUMBA_CACHE_DIR", "PYTHONPATH")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"

    def run():
        done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        return float(done.stdout.strip().splitlines()[-1])

    return tmp_path, run


def _cache_files(root):
    return sorted(p.name for p in (root / "numpyvae" / "fast" / "__pycache__").glob("*.nbc"))


def test_an_edited_helper_recompiles_the_kernels_that_call_it(package_copy):
    root, run = package_copy
    math_module = root / "numpyvae" / "fast" / "numba_math.py"
    source = math_module.read_text()
    assert source.count(TERM) == 1, "the Bernoulli term this test edits has moved"

    before = run()
    assert _cache_files(root), "the first run left no compiled kernels on disk"
    assert run() == before  # loaded from the cache: the same code, the same number

    math_module.write_text(source.replace(TERM, DOUBLED))
    after = run()  # numba_kernels.py is unchanged: only the stamp can tell
    assert after == pytest.approx(2 * before, rel=1e-6)

    math_module.write_text(source)
    assert run() == before


def test_the_cache_is_still_used_when_nothing_changed(package_copy):
    root, run = package_copy
    run()
    stamps = {p: p.stat().st_mtime_ns
              for p in (root / "numpyvae" / "fast" / "__pycache__").glob("*.nb[ic]")}
    assert stamps
    run()
    rewritten = [p.name for p, t in stamps.items() if p.stat().st_mtime_ns != t]
    assert not rewritten, f"an unchanged package compiled again: {rewritten}"
