"""The course kit's student versions on disk: ``numpyvae course student OUT_DIR``.

:func:`write_student_versions` finds the checkout's notebooks
(:func:`default_notebook_dir`), makes each one's student version with
:func:`numpyvae.exercises.notebook.student_notebook` (nbgrader's stubs; the
exercise convention and its rules live there) and writes them, with the files
beside them, atomically to a folder of their own. A notebook that cannot be
read or breaks the convention is refused before anything is written, with a
:class:`CourseError` of one line naming the notebook and the cell.

What does not live here: the markers, the stubs and the exercises of a
notebook (:mod:`numpyvae.exercises.notebook`); running and grading the
students' notebooks (:mod:`numpyvae.app.grading`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..exercises.notebook import student_notebook
from ..fileio import atomic_write, atomic_write_text


class CourseError(ValueError):
    """A notebook or folder the course commands cannot use (a message naming it and why)."""


def default_notebook_dir() -> Path | None:
    """The checkout's ``notebooks/`` folder (beside the package), or None if there is none.

    The notebooks are not installed with the package: they live in the
    repository, one folder up from ``numpyvae/``.
    """
    from .. import __file__ as package_init

    folder = Path(package_init).resolve().parents[1] / "notebooks"
    return folder if folder.is_dir() else None


def write_student_versions(out_dir, source_dir=None, force=False) -> list[Path]:
    """``numpyvae course student OUT_DIR``: the student version of every notebook.

    Reads ``source_dir`` (default: the checkout's ``notebooks/``), writes each
    ``*.ipynb`` there to ``out_dir`` as :func:`student_notebook` makes it, and
    copies every other file and folder beside them (the notebooks' README and
    anything they read), so the folder is a course on its own. Each file is
    written atomically. A non-empty ``out_dir`` is refused unless ``force``
    (then files of the same names are replaced; nothing else is removed).
    Returns the notebooks written.
    """
    try:
        import nbformat
    except ImportError:
        raise ImportError("the student versions are written with nbformat, which is not "
                          "installed; pip install -e '.[course]'") from None

    if source_dir is None:
        source_dir = default_notebook_dir()
        if source_dir is None:
            raise CourseError("the notebooks folder was not found beside the package (an "
                              "installed copy has none); pass it with --from DIR")
    source_dir, out_dir = Path(source_dir), Path(out_dir)
    if not source_dir.is_dir():
        raise CourseError(f"{source_dir}: no such folder of notebooks (--from)")
    notebooks = sorted(source_dir.glob("*.ipynb"))
    if not notebooks:
        raise CourseError(f"{source_dir} holds no notebooks (*.ipynb)")
    if out_dir.resolve() == source_dir.resolve():
        raise CourseError(f"{out_dir} is the folder of the solved notebooks; write the "
                          f"student versions somewhere else")
    if out_dir.exists() and not out_dir.is_dir():
        raise CourseError(f"{out_dir} is a file, not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise CourseError(f"{out_dir} is not empty; choose an empty folder or pass --force "
                          f"to replace the notebooks in it")
    students = []
    for path in notebooks:
        try:
            nb = nbformat.read(path, as_version=4)
        except Exception as exc:  # nbformat raises JSON, validation and Unicode errors
            raise CourseError(f"{path}: not a readable notebook ({exc})") from None
        try:
            students.append((path.name, student_notebook(nb)))
        except ValueError as exc:  # the markers or grade ids break nbgrader's convention
            raise CourseError(f"{path}: {exc}") from None
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, nb in students:
        written.append(atomic_write_text(out_dir / name, nbformat.writes(nb) + "\n"))
    for item in sorted(source_dir.iterdir()):
        if item.suffix == ".ipynb" or item.name.startswith("."):
            continue
        if item.is_dir():
            shutil.copytree(item, out_dir / item.name, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns(".*", "__pycache__"))
        elif item.is_file():
            _copy_file(item, out_dir / item.name)
    return written


def _copy_file(src: Path, dst: Path) -> None:
    data = src.read_bytes()
    atomic_write(dst, lambda f: f.write(data))


__all__ = ["CourseError", "default_notebook_dir", "write_student_versions"]
