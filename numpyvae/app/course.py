"""The course kit's student versions: each solved notebook with its solutions replaced by stubs.

An exercise in a teaching notebook is a pair of code cells, marked as nbgrader
marks them (so teachers who use nbgrader can run its own ``generate_assignment``
on the same notebooks):

* the **solution cell** (metadata ``nbgrader.solution: true``, ``grade_id`` the
  exercise's name) holds the function the student writes, its body between the
  lines ``### BEGIN SOLUTION`` and ``### END SOLUTION``;
* the **check cell** right after it (``nbgrader.grade: true``, ``locked``,
  ``points``) calls a check that raises an ``AssertionError`` with a diagnosis
  in words when the student's function is wrong.

:func:`stub_solution` replaces each solution region, markers included, by
nbgrader's stub (``# YOUR CODE HERE`` and ``raise NotImplementedError()`` at
the markers' indentation); :func:`student_notebook` does it to every solution
cell of a notebook and clears its outputs; :func:`write_student_versions` is
``numpyvae course student OUT_DIR``. Running and grading the students' notebooks
is :mod:`numpyvae.app.grading`'s job.
"""

from __future__ import annotations

import copy
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..fileio import atomic_write, atomic_write_text

BEGIN_SOLUTION = "### BEGIN SOLUTION"
END_SOLUTION = "### END SOLUTION"
#: nbgrader's stub for Python code (its ``ClearSolutions.code_stub``), one line each.
CODE_STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")
#: nbgrader's stub for a Markdown solution cell (``ClearSolutions.text_stub``).
TEXT_STUB = "YOUR ANSWER HERE"


class CourseError(ValueError):
    """A notebook or folder the course commands cannot use (a message naming it and why)."""


@dataclass(frozen=True)
class Exercise:
    """One exercise of a notebook: its name, its two cells' indices and its points."""

    name: str
    solution_cell: int | None
    check_cell: int
    points: float


def _nbgrader(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {}) or {}


def is_solution_cell(cell) -> bool:
    """A code cell marked ``nbgrader.solution`` (the student writes in it)."""
    return cell.get("cell_type") == "code" and bool(_nbgrader(cell).get("solution"))


def is_check_cell(cell) -> bool:
    """A code cell marked ``nbgrader.grade`` that is not a solution (it checks one)."""
    meta = _nbgrader(cell)
    return cell.get("cell_type") == "code" and bool(meta.get("grade")) \
        and not meta.get("solution")


def _source(cell) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def _is_marker(line: str, marker: str) -> bool:
    """nbgrader's test: the line contains the marker's words (``BEGIN SOLUTION``)."""
    return marker.lstrip("# ") in line


def stub_solution(source: str) -> str:
    """``source`` with every ``### BEGIN SOLUTION`` ... ``### END SOLUTION`` region stubbed.

    A marker is a line containing ``BEGIN SOLUTION`` (``END SOLUTION``), as
    nbgrader reads them. Each region, both marker lines included, becomes nbgrader's two stub lines
    at the BEGIN marker's indentation; lines outside the regions are kept as
    they are. A source without markers is returned unchanged. Raises
    :class:`CourseError` for a nested BEGIN, an END without a BEGIN, or a
    BEGIN without an END.
    """
    out, inside = [], False
    for number, line in enumerate(source.split("\n"), 1):
        if _is_marker(line, BEGIN_SOLUTION):
            if inside:
                raise CourseError(f"line {number}: {BEGIN_SOLUTION} inside another solution "
                                  f"region")
            inside = True
            indent = line[:len(line) - len(line.lstrip())]
            out.extend(indent + stub for stub in CODE_STUB)
        elif _is_marker(line, END_SOLUTION):
            if not inside:
                raise CourseError(f"line {number}: {END_SOLUTION} without a {BEGIN_SOLUTION} "
                                  f"before it")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise CourseError(f"a {BEGIN_SOLUTION} has no {END_SOLUTION} after it")
    return "\n".join(out)


def exercises_in(nb) -> list[Exercise]:
    """The exercises of a notebook, in order: each check cell and the solution cell before it.

    An exercise is named by its solution cell's ``grade_id`` (the check cell's
    ``grade_id`` without its ``-check`` ending when it has no solution cell).
    """
    found = []
    cells = nb.get("cells", [])
    for i, cell in enumerate(cells):
        if not is_check_cell(cell):
            continue
        meta = _nbgrader(cell)
        solution = next((j for j in range(i - 1, -1, -1) if is_solution_cell(cells[j])), None)
        if solution is not None and any(is_check_cell(cells[j]) for j in range(solution + 1, i)):
            solution = None  # that solution cell belongs to an earlier check
        name = (_nbgrader(cells[solution]).get("grade_id") if solution is not None else None) \
            or re.sub(r"-check$", "", str(meta.get("grade_id") or f"cell-{i}"))
        found.append(Exercise(name, solution, i, float(meta.get("points", 1) or 0)))
    return found


def student_notebook(nb):
    """A copy of ``nb`` for students: solutions stubbed, every output and count cleared.

    As nbgrader's ``ClearSolutions`` does it: a solution cell's regions are
    stubbed (:func:`stub_solution`), a solution cell without markers becomes
    the stub as a whole (a Markdown one ``YOUR ANSWER HERE``), and a region in
    a cell that is not marked as a solution is an error.
    """
    nb = copy.deepcopy(nb)
    nb.metadata.pop("celltoolbar", None)
    for i, cell in enumerate(nb.cells):
        source = _source(cell)
        try:
            stubbed = stub_solution(source)
        except CourseError as exc:
            raise CourseError(f"cell {i}: {exc}") from None
        solution = bool(_nbgrader(cell).get("solution"))
        if stubbed != source and not solution:
            raise CourseError(f"cell {i}: a {BEGIN_SOLUTION} region in a cell not marked as "
                              f"a solution (metadata nbgrader.solution)")
        if solution:
            replaced = any(_is_marker(line, BEGIN_SOLUTION) for line in source.split("\n"))
            cell.source = stubbed if replaced else (
                "\n".join(CODE_STUB) if cell.cell_type == "code" else TEXT_STUB)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    return nb


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
        except CourseError as exc:
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


__all__ = ["BEGIN_SOLUTION", "END_SOLUTION", "CODE_STUB", "CourseError", "Exercise",
           "is_solution_cell", "is_check_cell", "stub_solution", "exercises_in",
           "student_notebook", "default_notebook_dir", "write_student_versions"]
