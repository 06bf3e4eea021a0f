"""Exercise cells in a notebook: finding them, and making the student's version.

Pure Python on nbformat-like dicts (``{"cells": [{"cell_type", "source",
"metadata"}, ...]}``, or nbformat's own ``NotebookNode``, which is a dict);
nothing here imports nbformat or writes a file. The marking is nbgrader's, and
so is the stubbing, so teachers who use nbgrader can run its own
``generate_assignment`` on the same notebooks and get the same student version:

* a **solution cell** (metadata ``nbgrader.solution: true``, ``grade_id`` the
  exercise's name) holds the function the student writes, its body between
  the lines ``### BEGIN SOLUTION`` and ``### END SOLUTION``;
* the **check cell** after it (``nbgrader.grade: true``, ``locked``,
  ``points``, ``grade_id`` the exercise's name and ``-check``) calls a check
  that raises an ``AssertionError`` with a diagnosis in words when the
  student's function is wrong.

:func:`stub_solution` replaces each solution region, markers included, by
nbgrader's stub (``# YOUR CODE HERE`` and ``raise NotImplementedError()`` at
the markers' indentation); :func:`student_notebook` does it to every solution
cell of a notebook and clears its outputs; :func:`exercises_in` lists a
notebook's exercises (:class:`Exercise`). A notebook that breaks the
convention raises ``ValueError`` with a one-line message naming the cell and
line.

What does not live here: reading and writing notebook files, and running and
grading them (the ``numpyvae course`` command, :mod:`numpyvae.app.course` and
:mod:`numpyvae.app.grading`).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass

BEGIN_SOLUTION = "### BEGIN SOLUTION"
END_SOLUTION = "### END SOLUTION"
#: nbgrader's stub for Python code (its ``ClearSolutions.code_stub``), one line each.
CODE_STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")
#: nbgrader's stub for a Markdown solution cell (``ClearSolutions.text_stub``).
TEXT_STUB = "YOUR ANSWER HERE"


@dataclass(frozen=True)
class Exercise:
    """One exercise of a notebook.

    ``grade_id`` names it (its solution cell's ``grade_id``), ``check_id`` is
    its check cell's ``grade_id``; ``solution_cell`` and ``check_cell`` are
    the two cells' indices in the notebook (``solution_cell`` is None for a
    check with no solution cell of its own); ``points`` are the check's.
    """

    grade_id: str
    check_id: str
    solution_cell: int | None
    check_cell: int
    points: float


def source_text(cell) -> str:
    """A cell's source as one string (notebook files may store a list of lines)."""
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


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


def _is_marker(line: str, marker: str) -> bool:
    """nbgrader's test: the line contains the marker's words (``BEGIN SOLUTION``)."""
    return marker.lstrip("# ") in line


def stub_solution(source: str) -> str:
    """``source`` with every ``### BEGIN SOLUTION`` ... ``### END SOLUTION`` region stubbed.

    A marker is a line containing ``BEGIN SOLUTION`` (``END SOLUTION``), as
    nbgrader reads them. Each region, both marker lines included, becomes
    nbgrader's two stub lines at the BEGIN marker's indentation; lines outside
    the regions are kept as they are. A source without markers is returned
    unchanged. Raises ``ValueError`` for a nested BEGIN, an END without a
    BEGIN, or a BEGIN without an END.
    """
    out, inside = [], False
    for number, line in enumerate(source.split("\n"), 1):
        if _is_marker(line, BEGIN_SOLUTION):
            if inside:
                raise ValueError(f"line {number}: {BEGIN_SOLUTION} inside another solution "
                                 f"region")
            inside = True
            indent = line[:len(line) - len(line.lstrip())]
            out.extend(indent + stub for stub in CODE_STUB)
        elif _is_marker(line, END_SOLUTION):
            if not inside:
                raise ValueError(f"line {number}: {END_SOLUTION} without a {BEGIN_SOLUTION} "
                                 f"before it")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"a {BEGIN_SOLUTION} has no {END_SOLUTION} after it")
    return "\n".join(out)


def exercises_in(nb) -> list[Exercise]:
    """The exercises of a notebook, in order: each check cell and the solution cell before it.

    An exercise is named by its solution cell's ``grade_id`` (the check cell's
    ``grade_id`` without its ``-check`` ending when it has no solution cell).
    A solution cell with no check after it (graded by hand) is not an
    exercise. Raises ``ValueError`` when a grade id repeats (nbgrader refuses
    that notebook too).
    """
    found, seen = [], set()
    cells = nb.get("cells", [])
    for i, cell in enumerate(cells):
        meta = _nbgrader(cell)
        grade_id = meta.get("grade_id")
        if grade_id and (is_solution_cell(cell) or is_check_cell(cell)):
            if grade_id in seen:
                raise ValueError(f"cell {i}: the grade id {grade_id!r} appears twice")
            seen.add(grade_id)
        if not is_check_cell(cell):
            continue
        solution = next((j for j in range(i - 1, -1, -1) if is_solution_cell(cells[j])), None)
        if solution is not None and any(is_check_cell(cells[j]) for j in range(solution + 1, i)):
            solution = None  # that solution cell belongs to an earlier check
        check_id = str(grade_id or f"cell-{i}")
        name = (_nbgrader(cells[solution]).get("grade_id") if solution is not None else None) \
            or re.sub(r"-check$", "", check_id)
        found.append(Exercise(str(name), check_id, solution, i,
                              float(meta.get("points", 1) or 0)))
    return found


def student_notebook(nb):
    """A copy of ``nb`` for students: solutions stubbed, every output and count cleared.

    As nbgrader's ``ClearSolutions`` does it: a solution cell's regions are
    stubbed (:func:`stub_solution`), a solution cell without markers becomes
    the stub as a whole (a Markdown one ``YOUR ANSWER HERE``), and a region in
    a cell that is not marked as a solution is an error (``ValueError``, its
    message starting with the cell's index).
    """
    nb = copy.deepcopy(nb)
    nb.get("metadata", {}).pop("celltoolbar", None)
    for i, cell in enumerate(nb["cells"]):
        source = source_text(cell)
        try:
            stubbed = stub_solution(source)
        except ValueError as exc:
            raise ValueError(f"cell {i}: {exc}") from None
        solution = bool(_nbgrader(cell).get("solution"))
        if stubbed != source and not solution:
            raise ValueError(f"cell {i}: a {BEGIN_SOLUTION} region in a cell not marked as "
                             f"a solution (metadata nbgrader.solution)")
        if solution:
            replaced = any(_is_marker(line, BEGIN_SOLUTION) for line in source.split("\n"))
            cell["source"] = stubbed if replaced else (
                "\n".join(CODE_STUB) if cell.get("cell_type") == "code" else TEXT_STUB)
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    return nb


__all__ = ["BEGIN_SOLUTION", "END_SOLUTION", "CODE_STUB", "TEXT_STUB", "Exercise",
           "exercises_in", "is_check_cell", "is_solution_cell", "source_text",
           "stub_solution", "student_notebook"]
