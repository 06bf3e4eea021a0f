"""Exercise cells in a notebook: finding them, and making the student's version.

Pure Python on nbformat-like dicts (``{"cells": [{"cell_type", "source",
"metadata"}, ...]}``); nothing here imports nbformat. The marking follows
nbgrader's convention:

* a *solution cell* holds the function the student writes, its body between
  a ``### BEGIN SOLUTION`` line and an ``### END SOLUTION`` line, and the
  metadata ``{"nbgrader": {"solution": true, "grade": false, "grade_id":
  "<exercise id>", ...}}``;
* the *check cell* right after it calls the exercise's check and has the
  metadata ``{"nbgrader": {"grade": true, "solution": false, "locked": true,
  "grade_id": "<exercise id>-check", "points": 1, ...}}``.

:func:`stub_solution` turns a solution's source into the student's (each
marked region becomes nbgrader's stub); :func:`student_notebook` does that to
every solution cell of a notebook.
"""

from __future__ import annotations

import copy
import re

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
#: What a marked region becomes in the student's version (nbgrader's stub for code).
STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")

_REGION = re.compile(r"^([ \t]*)### BEGIN SOLUTION[^\n]*\n.*?^[ \t]*### END SOLUTION[^\n]*(\n|$)",
                     re.S | re.M)


def source_text(cell) -> str:
    """A cell's source as one string (notebook files may store a list of lines)."""
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def stub_solution(source: str) -> str:
    """``source`` with each ``### BEGIN SOLUTION`` ... ``### END SOLUTION`` region stubbed.

    The region, marker lines included, becomes ``# YOUR CODE HERE`` and
    ``raise NotImplementedError()`` at the indentation of the BEGIN line.
    An unmatched marker raises ``ValueError``.
    """
    def stub(match):
        indent = match.group(1)
        return "".join(f"{indent}{line}\n" for line in STUB)[:None if match.group(2) else -1]

    result = _REGION.sub(stub, source)
    if BEGIN in result or END in result:
        raise ValueError(f"unmatched {BEGIN!r} / {END!r} marker in:\n{source}")
    return result


def _nbgrader(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def is_solution_cell(cell) -> bool:
    return cell.get("cell_type") == "code" and bool(_nbgrader(cell).get("solution"))


def is_check_cell(cell) -> bool:
    return cell.get("cell_type") == "code" and bool(_nbgrader(cell).get("grade"))


def exercises_in(nb) -> list[tuple[str, str]]:
    """``(grade_id, check_grade_id)`` of each exercise of ``nb``, in order.

    Raises ``ValueError`` when a solution cell is not followed by its check
    cell, or when a grade id repeats.
    """
    cells = nb["cells"]
    found, seen = [], set()
    for i, cell in enumerate(cells):
        if not is_solution_cell(cell):
            continue
        grade_id = _nbgrader(cell).get("grade_id")
        following = cells[i + 1] if i + 1 < len(cells) else {}
        if not is_check_cell(following):
            raise ValueError(f"exercise {grade_id!r}: its solution cell is not followed by a "
                             "check cell")
        check_id = _nbgrader(following).get("grade_id")
        for gid in (grade_id, check_id):
            if gid in seen:
                raise ValueError(f"grade id {gid!r} appears twice")
            seen.add(gid)
        found.append((grade_id, check_id))
    return found


def student_notebook(nb) -> dict:
    """A copy of ``nb`` with every solution cell stubbed and no outputs."""
    nb = copy.deepcopy(nb)
    for cell in nb["cells"]:
        if is_solution_cell(cell):
            cell["source"] = stub_solution(source_text(cell))
        if cell.get("cell_type") == "code":
            cell["outputs"], cell["execution_count"] = [], None
    return nb


__all__ = ["BEGIN", "END", "STUB", "exercises_in", "is_check_cell", "is_solution_cell",
           "source_text", "stub_solution", "student_notebook"]
