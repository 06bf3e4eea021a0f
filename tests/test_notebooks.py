"""The teaching notebooks: stored without outputs, and each runs top to bottom in quick mode.

Every notebook in ``notebooks/`` is executed with nbclient, in a fresh kernel
started from this interpreter (so it imports the numpyvae of this checkout),
with ``NUMPYVAE_QUICK=1`` and the notebooks folder as the working directory.
A notebook's own ``assert`` cells check its derivations, so any error, and any
failed check, fails the test.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
#: Seconds a single cell may run before the test fails (quick mode takes ~30 s per notebook).
CELL_TIMEOUT = 300
KERNEL_NAME = "numpyvae-test-python3"


def _ids(paths):
    return [p.stem for p in paths]


def test_notebooks_are_found():
    assert len(NOTEBOOKS) >= 9, f"expected the nine teaching notebooks in {NOTEBOOK_DIR}"


def test_readme_links_every_notebook():
    readme = (NOTEBOOK_DIR / "README.md").read_text(encoding="utf-8")
    missing = [p.name for p in NOTEBOOKS if f"({p.name})" not in readme]
    assert not missing, f"notebooks/README.md does not link {missing}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_is_stored_without_outputs(path):
    """Stored notebooks carry no outputs or execution counts, so they diff as source."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
             and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not dirty, (
        f"{path.name}: code cells {dirty} hold outputs or execution counts; clear them before "
        f"committing (e.g. jupyter nbconvert --clear-output --inplace {path.name})"
    )


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
    """Environment for the notebook kernels: quick mode, this checkout, this interpreter.

    A kernel spec pointing at ``sys.executable`` is written to a temporary
    Jupyter path, so the notebooks run in the interpreter running the tests
    whatever other kernels are installed. Nothing is installed anywhere else.
    """
    try:
        import ipykernel  # noqa: F401
        import nbclient  # noqa: F401
        import nbformat  # noqa: F401
    except ImportError as exc:
        pytest.fail(f"executing the notebooks needs nbformat, nbclient and ipykernel "
                    f"(pip install -e '.[test]'): {exc}")
    jupyter_path = tmp_path_factory.mktemp("jupyter")
    spec_dir = jupyter_path / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "numpyvae tests", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    env = {
        "NUMPYVAE_QUICK": "1",
        "JUPYTER_PATH": os.pathsep.join(
            [str(jupyter_path), *filter(None, [os.environ.get("JUPYTER_PATH")])]),
        "PYTHONPATH": os.pathsep.join(
            [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    }
    # One thread per library: spinning BLAS and Numba worker threads slow down by an
    # order of magnitude when other processes compete for the cores, and the
    # notebooks' quick mode is fast enough on one.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "NUMBA_NUM_THREADS"):
        env[var] = "1"
    return env


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_runs_in_quick_mode(path, kernel_env, monkeypatch):
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    for key, value in kernel_env.items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name=KERNEL_NAME,
                            resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    try:
        client.execute()
    except (CellExecutionError, CellTimeoutError) as exc:
        pytest.fail(f"{path.name} failed in quick mode:\n{exc}", pytrace=False)
