"""Shared fixtures: the backends to parametrise over, the real-data folder, hypothesis profiles,
and the two tiers of the suite.

The quick tier (``python -m pytest -m "not slow"``) checks every gradient of every
layer and model once, on the NumPy reference backend, in a couple of minutes
(any test whose name says ``numba`` is slow). The
slow tier adds what takes long or needs more than NumPy: the Numba backend's
parametrisations (its first run compiles kernels for minutes), real data, the
notebooks, the website, the benchmarks, kills and restarts of whole processes.
``python -m pytest`` runs both, as CI does.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from numpyvae.backend import numba_available

#: Test modules that belong to the slow tier as a whole: each runs processes, notebooks,
#: builds or benchmarks, or exists to test the Numba fast path.
SLOW_MODULES = {
    "test_docs", "test_notebooks", "test_kernels_benchmarks", "test_beta_sweep_benchmark",
    "test_faults", "test_kernel_cache", "test_numba_backend", "test_fused_step", "test_threads",
    "test_torch_oracle", "test_latent_training", "test_fast_path_shapes", "test_threading_layer",
    "test_explorer",
}
#: Single tests of the slow tier: each runs the command end to end (training a model,
#: often in a fresh process), the Numba fast path, or hundreds of damaged files, and took
#: 4 s or more on two cores. The gradient checks of every layer and model stay quick.
SLOW_TESTS = {
    "test_a_first_run_trains_at_once_and_the_next_one_loads_the_kernels",
    "test_zip_edits_of_a_checkpoint_raise_only_run_folder_errors",
    "test_edits_of_the_trainer_state_raise_only_run_folder_errors",
    "test_an_off_by_one_bias_correction_in_the_one_call_step",
    "test_the_command_names_a_planted_bug",
    "test_command_line_conditional_run", "test_cli_conditional_run",
    "test_readme_run_examples_work_from_another_folder", "test_train_writes_a_run_folder",
    "test_train_arch_conv_then_every_command",
    "test_train_arch_conv_conditional_then_every_command",
    "test_gradcheck_failure_exits_1", "test_gradcheck", "test_cli_run_dir",
    "test_train_resume_continues", "test_shapes_corrupt_cache_is_regenerated",
    "test_resume_says_what_it_resumes",
    "test_gradcheck_command_includes_the_conv_layers_and_models",
    "test_free_bits_and_gaussian_var_reach_the_model", "test_ctrl_c_saves_and_resume_finishes",
    "test_backends_agree_on_the_loss_and_every_gradient",
    "test_the_command_trains_and_inspects_a_conditional_run_in_fresh_processes",
    "test_train_on_a_file_then_every_command_reopens_it",
    "test_figure_files_have_the_format_their_suffix_names",
    "test_importance_weighted_evaluation_shows_progress",
    "test_compile_kernels_runs_a_training_step_on_numba",
    "test_trained_linear_vae_elbo_approaches_the_ppca_optimum",
    "test_trained_linear_vae_switches_off_the_dimensions_ppca_predicts",
    # Compare the backends (the Numba one compiles) or train and reopen runs end to end.
    "test_backends_agree", "test_a_kill_at_every_write_of_a_small_own_data_run_then_resume",
    "test_load_accepts_a_run_folder", "test_autoencoder_reports_a_reconstruction_loss",
    "test_figures_command", "test_python_dash_m_and_version",
    "test_process_error_has_no_traceback",
}
#: Fixtures that read the real data sets: their tests are slow.
REAL_DATA_FIXTURES = {"data_root", "fashion_mnist_dir"}


def pytest_collection_modifyitems(config, items):
    """Mark the slow tier: whole modules, Numba parametrisations and real-data tests."""
    slow = pytest.mark.slow
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""
        params = getattr(getattr(item, "callspec", None), "params", {})
        name = getattr(item, "originalname", None) or item.name.split("[")[0]
        if (module in SLOW_MODULES or name in SLOW_TESTS or "numba" in name
                or params.get("backend_name") == "numba"
                or REAL_DATA_FIXTURES & set(getattr(item, "fixturenames", ()))):
            item.add_marker(slow)


def pytest_configure(config):
    """The quick tier runs on the NumPy reference and draws fewer hypothesis examples.

    Models built without naming a backend (and the commands the tests run)
    use ``$NUMPYVAE_BACKEND``: the quick tier sets it to ``numpy``, so it
    compiles no Numba kernel; the full suite keeps the default and its profile.

    The suite compares runs bit for bit, so every command compiles the Numba
    kernels a run needs before its first step (``NUMPYVAE_COMPILE=wait``):
    a first run that trains on NumPy while they compile beside it changes
    backend at a step that depends on the machine's speed
    (``tests/test_background_compile.py`` tests that mode).
    """
    os.environ.setdefault("NUMPYVAE_COMPILE", "wait")
    if (config.getoption("markexpr", "") or "").replace(" ", "") == "notslow":
        os.environ.setdefault("NUMPYVAE_BACKEND", "numpy")
        if os.environ.get("CI") != "true":
            settings.load_profile("quick")


# JIT compilation makes the first call of a kernel slow, so no deadlines.
settings.register_profile(
    "default", deadline=None, max_examples=25,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors],
)
settings.register_profile(
    "ci", deadline=None, max_examples=40, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors],
)
settings.register_profile(
    "quick", deadline=None, max_examples=10,
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
