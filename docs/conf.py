"""Sphinx configuration of the numpyvae website: the README, the guide, the notebooks and the API.

Build it from the repository root with::

    pip install -e ".[docs]" && sphinx-build -W -b html docs docs/_build/html

What happens at build time:

* the README, a landing page, becomes the front page (``index.md`` includes it),
  and the depth lives in pages of its own (``docs/guide/``: every command, the
  run folder, the figures, your own networks, the conv VAE, beyond the ELBO,
  backends and speed, the layout of the code);
* the notebooks in ``notebooks/`` are copied into ``docs/notebooks/`` (generated,
  not committed) and *executed* by myst-nb in quick mode (``NUMPYVAE_QUICK=1``),
  so every figure on a page came from running its code; an error in any cell
  fails the build;
* ``NUMPYVAE_SITE=student`` builds the students' site instead: the notebooks are
  copied as ``numpyvae course student`` writes them (each solution replaced by
  nbgrader's stub, :mod:`numpyvae.exercises.notebook`) and are not executed, since the
  stubs raise ``NotImplementedError`` (the other pages are); build it into a
  folder of its own (``docs/_build/student``);
* one API page per module of the package is generated into ``docs/api/``
  (also not committed), from the NumPy-style docstrings (napoleon), with their
  ``.. math::`` rendered by MathJax; the index shows the public modules first,
  grouped as a student meets them (:data:`API_GROUPS`), and the internals after;
* MathJax is served from the site itself (the ``django-static-mathjax`` package
  carries a copy), so the pages need no network;
* the latent-space explorer of the default run (``docs/figures/explorer.html``,
  written by ``numpyvae export``) is copied to the same place in the site, where
  the figures page links it (:data:`EXTRA_PAGES`);
* ``_static/numpyvae.css`` wraps long lines of code instead of hiding them
  behind a scroll bar, and widens the main column on wide screens.
"""

from __future__ import annotations

import filecmp
import importlib
import os
import pkgutil
import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))

# The notebooks' kernels inherit this environment: quick mode, this checkout's
# package, and one thread per library (spinning BLAS/Numba threads slow down by an
# order of magnitude when other processes compete for the cores).
os.environ["NUMPYVAE_QUICK"] = "1"
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpyvae  # noqa: E402

#: Which site to build: "teacher" (the solved notebooks, executed) or "student".
SITE = os.environ.get("NUMPYVAE_SITE", "").strip() or "teacher"
if SITE not in ("teacher", "student"):
    raise ValueError(f"NUMPYVAE_SITE must be 'teacher' or 'student', not {SITE!r}")

project = "numpyvae"
author = "the numpyvae authors"
copyright = "the numpyvae authors, MIT licence"  # noqa: A001
release = version = numpyvae.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

root_doc = "index"
exclude_patterns = ["_build", "figures", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]
suppress_warnings = ["myst.header"]  # the README's headings start below the page title

# ---------------------------------------------------------------------------
# Markdown and notebooks (myst-nb)
# ---------------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3
nb_execution_mode = "force"          # every build runs every notebook
if SITE == "student":  # except the students' notebooks: their stubs raise NotImplementedError
    nb_execution_excludepatterns = ["notebooks/*"]
nb_execution_timeout = 300           # seconds per cell
nb_execution_raise_on_error = True   # a failing cell fails the build
nb_execution_show_tb = True
nb_merge_streams = True

# ---------------------------------------------------------------------------
# API reference (autodoc + napoleon for NumPy-style docstrings)
# ---------------------------------------------------------------------------
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}

# ---------------------------------------------------------------------------
# HTML and math
# ---------------------------------------------------------------------------
html_theme = "furo"
html_title = f"numpyvae {release}" + (" (students' edition)" if SITE == "student" else "")
html_static_path = [str(DOCS / "_static")]
html_css_files = ["numpyvae.css"]
mathjax_path = "mathjax/tex-chtml.js"
# Without "noundefined" an unknown macro is a TeX error (shown as such, and
# caught by the browser test) instead of silently printed in red.
mathjax3_config = {"tex": {"packages": {"[-]": ["noundefined"]}}}


# ---------------------------------------------------------------------------
# Generated sources
# ---------------------------------------------------------------------------
def _copy_if_changed(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` unless identical, so unchanged pages are not rebuilt."""
    if not dst.exists() or not filecmp.cmp(src, dst, shallow=False):
        shutil.copy2(src, dst)


def _write_student_version(src: Path, dst: Path) -> None:
    """Write the students' version of the notebook ``src`` to ``dst``, unless identical."""
    import nbformat

    from numpyvae.exercises.notebook import student_notebook

    text = nbformat.writes(student_notebook(nbformat.read(src, as_version=4))) + "\n"
    if not dst.exists() or dst.read_text(encoding="utf-8") != text:
        dst.write_text(text, encoding="utf-8")


def sync_notebooks() -> None:
    """Mirror ``notebooks/`` (the notebooks and their README) into ``docs/notebooks/``.

    For the students' site (``NUMPYVAE_SITE=student``) each notebook is copied
    as its student version.
    """
    src, dst = ROOT / "notebooks", DOCS / "notebooks"
    dst.mkdir(exist_ok=True)
    wanted = {p.name for p in src.glob("*.ipynb")} | {"README.md"}
    for stale in dst.iterdir():
        if stale.is_file() and stale.name not in wanted:
            stale.unlink()
    for name in wanted:
        if SITE == "student" and name.endswith(".ipynb"):
            _write_student_version(src / name, dst / name)
        else:
            _copy_if_changed(src / name, dst / name)


def api_modules() -> list[str]:
    """Every module of the package, ``numpyvae`` first, without ``__main__``."""
    names = ["numpyvae"]
    for info in pkgutil.walk_packages(numpyvae.__path__, prefix="numpyvae."):
        if info.name.rsplit(".", 1)[-1] != "__main__":
            names.append(info.name)
    return sorted(names, key=lambda n: (n != "numpyvae", n))


def _package_page(name: str) -> str:
    """A package re-exports names defined elsewhere: its page links to them."""
    module = importlib.import_module(name)
    lines = [f".. automodule:: {name}", "   :no-members:", ""]
    exported = [getattr(module, n) for n in getattr(module, "__all__", [])]
    targets = []
    for obj in exported:
        if getattr(obj, "__module__", None) and hasattr(obj, "__qualname__"):
            kind = "class" if isinstance(obj, type) else "func"
            targets.append(f"* :py:{kind}:`{obj.__module__}.{obj.__qualname__}`")
        elif type(obj).__name__ == "module":
            targets.append(f"* :py:mod:`{obj.__name__}`")
    if targets:
        lines += ["Public names", "------------", "", *targets, ""]
    return "\n".join(lines)


#: The public modules, grouped in the order a student meets them: (title, what the
#: group is for, its modules). Every other module is listed under "Internals".
API_GROUPS = [
    ("Models", "the VAE and the plain autoencoder, the conditional VAE, the convolutional "
     "networks, the importance-weighted objective, and the whole VAE on one page",
     ["numpyvae.model", "numpyvae.cvae", "numpyvae.convnet", "numpyvae.iwae",
      "numpyvae.one_page_vae"]),
    ("Layers", "the layers, the convolutions, their initialisation, and the operations "
     "they call: ``numpyvae.ops`` is the specification, every derivation is there",
     ["numpyvae.layers", "numpyvae.conv", "numpyvae.init", "numpyvae.ops"]),
    ("Distributions", "the posterior and the likelihoods, with their gradients",
     ["numpyvae.distributions"]),
    ("Optimizers", "SGD, Adam and AdamW, their state keyed by parameter name",
     ["numpyvae.optim"]),
    ("Checks", "gradients against central differences, the ELBO and the "
     "importance-weighted likelihood, what the latent space learned, and the linear VAE "
     "whose exact likelihood (probabilistic PCA) every bound is measured against",
     ["numpyvae.gradcheck", "numpyvae.evaluate", "numpyvae.latent", "numpyvae.ppca",
      "numpyvae.linear_vae"]),
    ("Inspector", "one forward and backward pass, node by node, each node's backward checked",
     ["numpyvae.inspector", "numpyvae.inspector.trace", "numpyvae.inspector.catalogue",
      "numpyvae.inspector.plot"]),
    ("Exercises", "the notebooks' exercises: the checks that grade a student's function, the "
     "diagnosis of a wrong answer, training the model on it, the student's version of a "
     "notebook",
     ["numpyvae.exercises", "numpyvae.exercises.checks", "numpyvae.exercises.diagnosis",
      "numpyvae.exercises.swap", "numpyvae.exercises.notebook"]),
    ("Data", "the embedded shapes, MNIST and Fashion-MNIST, your own files, the checks "
     "made before training",
     ["numpyvae.app.data", "numpyvae.app.data.datasets", "numpyvae.app.data.local",
      "numpyvae.app.data.shapes", "numpyvae.app.data.checks"]),
    ("Training", "the training loop and its run folder, the one-call training step, "
     "the figures, the latent-space explorer page",
     ["numpyvae.app.train", "numpyvae.fast.step", "numpyvae.app.run", "numpyvae.app.plots",
      "numpyvae.app.latent_plots", "numpyvae.app.explorer"]),
]


def _summary(name: str) -> str:
    """The first line of a module's docstring, for the API index."""
    doc = importlib.import_module(name).__doc__ or ""
    return doc.strip().splitlines()[0].strip() if doc.strip() else ""


def api_index(modules: list[str]) -> str:
    """The API index: the package, the public groups, then every other module."""
    present = set(modules)
    lines = ["API reference", "=============", "",
             "Generated from the docstrings of every module; the derivations of the",
             "gradients are in :mod:`numpyvae.ops`. The public API comes first, grouped as",
             "you meet it in the course; the internals (the Numba kernels, the command",
             "line's plumbing, file formats) follow in a section of their own.", "",
             f"* :doc:`numpyvae` — {_summary('numpyvae')}", ""]
    grouped = {"numpyvae"}
    for title, about, names in API_GROUPS:
        names = [n for n in names if n in present]
        grouped.update(names)
        lines += [title, "-" * len(title), "", about[0].upper() + about[1:] + ".", ""]
        lines += [f"* :doc:`{n}` — {_summary(n)}" for n in names] + [""]
    internals = [n for n in modules if n not in grouped]
    lines += ["Internals", "---------", "",
              "The machinery under the public API: the fast path's kernels, the command",
              "line, run-folder formats and safe file reading.", ""]
    lines += [f"* :doc:`{n}` — {_summary(n)}" for n in internals] + [""]
    toc = "\n".join(f"   {n}" for n in ["numpyvae", *(n for n in modules if n in grouped
                                                          and n != "numpyvae"), *internals])
    lines += [".. toctree::", "   :hidden:", "   :maxdepth: 1", "", toc, ""]
    return "\n".join(lines)


def write_api_pages() -> None:
    """One reStructuredText page per module in ``docs/api/``, plus its grouped index."""
    out = DOCS / "api"
    out.mkdir(exist_ok=True)
    pages = {}
    modules = api_modules()
    for name in modules:
        title = f"``{name}``"
        body = (_package_page(name) if hasattr(importlib.import_module(name), "__path__")
                else f".. automodule:: {name}\n")
        pages[f"{name}.rst"] = f"{title}\n{'=' * len(title)}\n\n{body}\n"
    pages["index.rst"] = api_index(modules)
    for stale in out.glob("*.rst"):
        if stale.name not in pages:
            stale.unlink()
    for fname, text in pages.items():
        path = out / fname
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")


#: Pages the guide links that are not Sphinx documents: copied to the same place in the
#: site, so the guide's relative links work on the website as in the repository.
EXTRA_PAGES = ["figures/explorer.html"]


def copy_extra_pages(app, exception) -> None:
    """Copy :data:`EXTRA_PAGES` (the default run's latent-space explorer) into the site."""
    if exception is not None or app.builder.format != "html":
        return
    for page in EXTRA_PAGES:
        dst = Path(app.outdir) / page
        dst.parent.mkdir(parents=True, exist_ok=True)
        _copy_if_changed(DOCS / page, dst)


def copy_mathjax(app, exception) -> None:
    """Put the MathJax of ``django-static-mathjax`` into ``_static/mathjax``."""
    if exception is not None or app.builder.format != "html":
        return
    import mathjax  # the django-static-mathjax distribution

    es5 = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    dst = Path(app.outdir) / "_static" / "mathjax"
    if dst.exists():
        shutil.rmtree(dst)
    # The one bundle the pages load, and the fonts and extensions it fetches lazily.
    dst.mkdir(parents=True)
    shutil.copy2(es5 / "tex-chtml.js", dst / "tex-chtml.js")
    for sub in ("input/tex", "output/chtml", "a11y", "ui", "adaptors", "sre"):
        shutil.copytree(es5 / sub, dst / sub)


sync_notebooks()
write_api_pages()


def setup(app):
    app.connect("build-finished", copy_mathjax)
    app.connect("build-finished", copy_extra_pages)
