"""Shared fixtures: the backends to parametrise over, the real-data folder, hypothesis profiles."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from numpyvae.backend import numba_available

# JIT compilation makes the first call of a kernel slow, so no deadlines.
settings.register_profile(
    "default", deadline=None, max_examples=25,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors],
)
settings.register_profile(
    "ci", deadline=None, max_examples=40, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors],
)
settings.load_profile("ci" if os.environ.get("CI") == "true" else "default")

IN_CI = os.environ.get("CI") == "true"

#: Backends every backend-sensitive test runs on.
BACKEND_NAMES = ["numpy"] + (["numba"] if numba_available() else [])


@pytest.fixture(params=BACKEND_NAMES)
def backend_name(request):
    return request.param


@pytest.fixture
def backend(backend_name):
    from numpyvae.backend import get_backend

    return get_backend(backend_name)


def _data_root() -> Path | None:
    value = os.environ.get("NUMPYVAE_DATA", "").strip()
    return Path(value) if value else None


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The folder named by ``$NUMPYVAE_DATA`` (holding ``fashion-mnist/`` and so on).

    Unset: real-data tests are skipped, with a reason saying how to enable
    them. Under CI (``CI=true``) a missing folder fails instead, so real-data
    tests can never silently stop running.
    """
    root = _data_root()
    if root is None or not root.is_dir():
        message = (
            "real-data tests need NUMPYVAE_DATA=<folder holding fashion-mnist/>, e.g. "
            "NUMPYVAE_DATA=../shared/data"
            + ("" if root is None else f" (the folder {root} does not exist)")
        )
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return root


@pytest.fixture(scope="session")
def fashion_mnist_dir(data_root) -> Path:
    folder = data_root / "fashion-mnist"
    if not folder.is_dir():
        message = f"{folder} does not exist; NUMPYVAE_DATA must hold fashion-mnist/"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return folder
