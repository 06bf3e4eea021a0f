"""Numba's threading layer is the one the library chose (TBB where its wheel is installed).

Run in a fresh interpreter of the environment the tests run in (CI's own venv),
so what is measured is what a user of that environment gets.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("numba")

from numpyvae.fast.tbb import installed_tbb_library  # noqa: E402

PROBE = (
    "import numpy as np; from numpyvae import VAE, Adam, train_step; import numba\n"
    "model = VAE(8, hidden_dims=(4,), latent_dim=2, backend='numba')\n"
    "opt = Adam(model.params)\n"
    "train_step(model, opt, np.random.default_rng(0).random((4, 8)).astype('float32'),\n"
    "           rng=np.random.default_rng(1))\n"
    "print(numba.threading_layer())\n"
)


def _layer_in_a_fresh_process(**env):
    clean = {k: v for k, v in os.environ.items()
             if k not in ("NUMBA_THREADING_LAYER", "NUMBA_THREADING_LAYER_PRIORITY",
                          "LD_LIBRARY_PATH")}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         timeout=600, env={**clean, **env})
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split()[-1]


def test_tbb_runs_the_kernels_when_its_wheel_is_installed():
    if installed_tbb_library() is None:
        pytest.skip("the tbb package is not installed here (no wheel for this platform)")
    assert _layer_in_a_fresh_process() == "tbb"


def test_a_layer_chosen_by_the_user_wins():
    assert _layer_in_a_fresh_process(NUMBA_THREADING_LAYER="workqueue") == "workqueue"
