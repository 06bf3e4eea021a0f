"""Grading students' notebooks: run each headless in a fresh kernel and read its check cells.

``numpyvae course grade PATH...`` runs every notebook found (:func:`find_notebooks`)
with nbclient, each in a fresh kernel of this interpreter (a kernel spec written
to a temporary folder, so the kernel imports the same numpyvae as the grader),
in quick mode (``NUMPYVAE_QUICK=1``), from the notebook's own folder. Errors
are allowed, so every cell runs and every check cell gets an outcome: a check
passes when it produced no error. Each notebook has a time limit in all, and
each cell one of its own.

The result is one :class:`Row` per exercise
(:func:`numpyvae.exercises.notebook.exercises_in`): passed or failed, with a
diagnosis (the exception's name and the first line of its message; the stub's
``NotImplementedError``, or the check's
:class:`~numpyvae.exercises.diagnosis.NotWritten` verdict on it, reads "not
written yet"). A notebook that cannot be read, runs past its time limit or
kills its kernel gets rows saying so, never a crash of the grader.
:func:`format_table` prints the rows within 100 columns with each student's
total; :func:`gradebook` is the ``--json`` form.

What does not live here: the exercise markers and the exercises of a notebook
(:mod:`numpyvae.exercises.notebook`); writing the student versions
(:mod:`numpyvae.app.course`).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..exercises.diagnosis import NotWritten
from ..exercises.notebook import exercises_in
from .course import CourseError

#: Seconds a whole notebook may run (``--timeout``) and one cell (``--cell-timeout``).
NOTEBOOK_TIMEOUT = 600
CELL_TIMEOUT = 300
#: The kernel spec's name in the temporary Jupyter folder.
KERNEL_NAME = "numpyvae-grader-python3"
#: The width the table keeps to.
WIDTH = 100
#: What a failed check says when the stub's NotImplementedError reached it.
NOT_WRITTEN = "not written yet (NotImplementedError)"

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
#: nbclient's own log (a cell's timeout, a dead kernel) is said in the rows instead.
_QUIET = logging.getLogger("numpyvae.grading.nbclient")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False


@dataclass
class Row:
    """One exercise of one student's notebook: passed or not, and why not.

    ``points`` are those earned (the check cell's ``points`` when passed,
    else 0) out of ``max_points``. A notebook that could not be graded at all
    (unreadable, no check cells) has one row with ``exercise`` "-".
    """

    student: str
    notebook: str
    exercise: str
    passed: bool
    diagnosis: str
    points: float = 0.0
    max_points: float = 0.0


# --------------------------------------------------------------------------
# Which notebooks, whose
# --------------------------------------------------------------------------


def find_notebooks(paths, student=None) -> list[tuple[str, Path]]:
    """``(student, notebook)`` for every notebook under ``paths``, in order.

    A notebook given as a file belongs to the student named by its stem
    (``alice.ipynb``). In a folder, a notebook lying directly in it also
    belongs to its stem's student, and the notebooks in a subfolder (at any
    depth) belong to the student named by the first folder below the one
    given (``submitted/alice/hw1/01.ipynb`` is alice's). ``student`` names the
    owner of every notebook instead. Hidden folders and
    ``.ipynb_checkpoints`` are skipped. Raises :class:`CourseError` for a path
    that does not exist or holds no notebook.
    """
    found = []
    for given in map(Path, paths):
        if given.is_file():
            if given.suffix != ".ipynb":
                raise CourseError(f"{given} is not a notebook (*.ipynb)")
            found.append((student or given.stem, given))
            continue
        if not given.is_dir():
            raise CourseError(f"{given}: no such notebook or folder")
        inside = sorted(p for p in given.rglob("*.ipynb")
                        if not any(part.startswith(".") for part in p.relative_to(given).parts))
        if not inside:
            raise CourseError(f"{given} holds no notebooks (*.ipynb)")
        for path in inside:
            parts = path.relative_to(given).parts
            found.append((student or (parts[0] if len(parts) > 1 else path.stem), path))
    return found


# --------------------------------------------------------------------------
# Running one notebook
# --------------------------------------------------------------------------


@contextlib.contextmanager
def kernel_environment():
    """A temporary Jupyter folder whose kernel spec runs this interpreter, set up for grading.

    While inside, ``JUPYTER_PATH`` leads to that spec, ``PYTHONPATH`` starts
    with the folder holding this numpyvae, notebooks run in quick mode with
    one thread per numerical library and a non-interactive Matplotlib. The
    environment is restored on leaving.
    """
    from .. import __file__ as package_init

    package_root = str(Path(package_init).resolve().parents[1])
    saved = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="numpyvae-grade-") as jupyter_path:
        spec_dir = Path(jupyter_path) / "kernels" / KERNEL_NAME
        spec_dir.mkdir(parents=True)
        spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "numpyvae grader", "language": "python"}
        (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
        os.environ.update({
            "JUPYTER_PATH": os.pathsep.join(
                [jupyter_path, *filter(None, [saved.get("JUPYTER_PATH")])]),
            "PYTHONPATH": os.pathsep.join(
                [package_root, *filter(None, [saved.get("PYTHONPATH")])]),
            "NUMPYVAE_QUICK": "1",
            "MPLBACKEND": "Agg",
            **{var: "1" for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                    "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")},
        })
        try:
            yield KERNEL_NAME
        finally:
            os.environ.clear()
            os.environ.update(saved)


def _errors(cell) -> list[dict]:
    return [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]


def diagnosis(error: dict) -> str:
    """One line for an error output: its exception's name and its message's first line."""
    name = _ANSI.sub("", str(error.get("ename", "Error")))
    if name in ("NotImplementedError", NotWritten.__name__):
        return NOT_WRITTEN
    lines = [line.strip() for line in _ANSI.sub("", str(error.get("evalue", ""))).splitlines()]
    first = next((line for line in lines if line), "")
    # IPython names a cell's code after a temporary file: "(3521902816.py, line 2)"
    first = re.sub(r"\(\d+\.py, (line \d+)\)", r"(\1)", first)
    return f"{name}: {first}" if first else name


def restore_checks(nb, original) -> None:
    """Put the check cells of ``original`` back into ``nb`` (in place), as nbgrader's autograde.

    Each check cell of ``original`` replaces the cell of ``nb`` with the same
    ``grade_id``; one that ``nb`` lacks (deleted) is inserted after its
    exercise's solution cell, or at the end. So a check a student edited or
    deleted is graded as it was handed out.
    """
    import nbformat

    def grade_id(cell):
        return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")

    for ex in exercises_in(original):
        check = original.cells[ex.check_cell]
        fresh = nbformat.v4.new_code_cell(check.source, metadata=copy.deepcopy(check.metadata))
        at = next((i for i, c in enumerate(nb.cells) if grade_id(c) == grade_id(check)), None)
        if at is not None:
            nb.cells[at] = fresh
            continue
        after = next((i for i, c in enumerate(nb.cells)
                      if c.cell_type == "code" and grade_id(c) == ex.grade_id
                      and c.get("metadata", {}).get("nbgrader", {}).get("solution")), None)
        nb.cells.insert(len(nb.cells) if after is None else after + 1, fresh)


def grade_notebook(path, student, *, timeout=NOTEBOOK_TIMEOUT, cell_timeout=CELL_TIMEOUT,
                   kernel_name=KERNEL_NAME, checks=None) -> list[Row]:
    """Run one notebook in a fresh kernel and return a row per exercise (never raises).

    Call it inside :func:`kernel_environment` (whose kernel spec ``kernel_name``
    names). The cells run in order; each may take ``cell_timeout`` seconds and
    all of them together ``timeout``. A check that is never reached (the
    notebook ran out of time or its kernel died) fails with that reason ("not
    run: ..."), and a check that was stopped says so ("did not finish: ...").
    ``checks``, a folder of the course's notebooks: the check cells of the one
    of the same file name are restored first (:func:`restore_checks`).
    """
    import nbformat

    path = Path(path)
    shown = str(path)

    def notebook_row(reason):
        return [Row(student, shown, "-", False, reason)]

    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as exc:  # JSON, validation, Unicode, OS errors: the notebook is unusable
        return notebook_row(f"not a readable notebook: {_one_line(exc)}")
    if checks is not None:
        original = Path(checks) / path.name
        if not original.is_file():
            return notebook_row(f"no notebook {path.name} in {checks} (--checks) to take the "
                                f"check cells from")
        try:
            restore_checks(nb, nbformat.read(original, as_version=4))
        except Exception as exc:
            return notebook_row(f"the check cells could not be restored from {original}: "
                                f"{_one_line(exc)}")
    try:
        exercises = exercises_in(nb)
    except Exception as exc:  # malformed cells: the notebook is unusable
        return notebook_row(f"not a readable notebook: {_one_line(exc)}")
    if not exercises:
        return notebook_row("no check cells (code cells marked nbgrader grade: true)")
    stopped = run_notebook(nb, path, timeout=timeout, cell_timeout=cell_timeout,
                           kernel_name=kernel_name)
    rows = []
    for ex in exercises:
        check = nb.cells[ex.check_cell]
        errors = _errors(check)
        ran = check.get("execution_count") is not None or bool(check.get("outputs"))
        if stopped is not None and stopped[0] <= ex.check_cell:
            why = ("did not finish: " if stopped[0] == ex.check_cell else "not run: ") + stopped[1]
            rows.append(Row(student, shown, ex.grade_id, False, why, 0.0, ex.points))
        elif errors:
            why = diagnosis(errors[0])
            solution = nb.cells[ex.solution_cell] if ex.solution_cell is not None else None
            if solution is not None and _errors(solution) and why != NOT_WRITTEN:
                why = f"its solution cell raised {diagnosis(_errors(solution)[0])}"
            rows.append(Row(student, shown, ex.grade_id, False, why, 0.0, ex.points))
        elif not ran:
            rows.append(Row(student, shown, ex.grade_id, False, "the check cell did not run",
                            0.0, ex.points))
        else:
            rows.append(Row(student, shown, ex.grade_id, True, "", ex.points, ex.points))
    return rows


def run_notebook(nb, path, *, timeout=NOTEBOOK_TIMEOUT, cell_timeout=CELL_TIMEOUT,
                 kernel_name=KERNEL_NAME):
    """Run the cells of ``nb`` (read from ``path``) in place, in a fresh kernel, errors allowed.

    Call it inside :func:`kernel_environment`. Returns None when every cell
    ran, or ``(cell index, reason)`` where the notebook stopped: a cell ran
    past its limit, the notebook past its own, or the kernel died (say,
    "cell 5 ran past the time limit of a cell (300 s)").
    """
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    client = NotebookClient(nb, timeout=cell_timeout, kernel_name=kernel_name,
                            allow_errors=True, interrupt_on_timeout=False,
                            shutdown_kernel="immediate", log=_QUIET,
                            resources={"metadata": {"path": str(path.parent.resolve())}})
    deadline = time.monotonic() + timeout
    index = 0
    try:
        # The kernel's own stderr holds only its start-up chatter; a notebook's output
        # (its errors too) arrives through the kernel's messages.
        with client.setup_kernel(stderr=subprocess.DEVNULL):
            for index, cell in enumerate(nb.cells):
                left = deadline - time.monotonic()
                if left <= 0:
                    return index, (f"the notebook ran past its time limit ({timeout:g} s) "
                                   f"before cell {index}")
                client.timeout = max(1, int(min(cell_timeout, left)))
                whole = client.timeout < cell_timeout
                try:
                    client.execute_cell(cell, index)
                except CellTimeoutError:
                    limit = (f"the notebook's time limit ({timeout:g} s)" if whole else
                             f"the time limit of a cell ({cell_timeout:g} s)")
                    return index, f"cell {index} ran past {limit}"
    except DeadKernelError:
        return index, f"the kernel died in cell {index}"
    except Exception as exc:  # the kernel did not start, or stopped answering
        return index, f"{type(exc).__name__}: {_one_line(exc)}"
    return None


def grade(paths, *, student=None, timeout=NOTEBOOK_TIMEOUT, cell_timeout=CELL_TIMEOUT,
          checks=None, log=None) -> list[Row]:
    """``numpyvae course grade``: grade every notebook under ``paths``, in order.

    ``checks`` is a folder of the course's notebooks to restore the check
    cells from (:func:`grade_notebook`). ``log`` is called with a line as each
    notebook starts and ends.
    """
    if checks is not None and not Path(checks).is_dir():
        raise CourseError(f"{checks}: no such folder of notebooks (--checks)")
    try:
        import ipykernel  # noqa: F401
        import nbclient  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"grading runs notebooks with nbclient and ipykernel, which are not "
                          f"installed ({exc}); pip install -e '.[course]'") from None
    found = find_notebooks(paths, student)
    log = log or (lambda text: None)
    rows = []
    with kernel_environment() as kernel_name:
        for who, path in found:
            start = time.monotonic()
            log(f"grading {path} ({who}) ...")
            got = grade_notebook(path, who, timeout=timeout, cell_timeout=cell_timeout,
                                 kernel_name=kernel_name, checks=checks)
            passed = sum(r.passed for r in got)
            log(f"  {passed} of {len(got)} passed, {time.monotonic() - start:.0f} s")
            rows.extend(got)
    return rows


# --------------------------------------------------------------------------
# The table and the gradebook
# --------------------------------------------------------------------------


def _cell(text, width):
    """``text`` in a column of ``width``: wrapped at spaces; a word longer than that is split."""
    return textwrap.wrap(text, width, break_on_hyphens=False) or [""]


def format_table(rows, width=WIDTH) -> str:
    """The rows as an aligned table of at most ``width`` columns, then each student's total.

    Columns: student, exercise, result (passed or FAILED) and the diagnosis,
    wrapped under its own column. The totals count exercises and points.
    """
    student_w = min(max([len("student"), *(len(r.student) for r in rows)]), 18)
    exercise_w = min(max([len("exercise"), *(len(r.exercise) for r in rows)]), 30)
    result_w = len("FAILED")
    diag_w = width - student_w - exercise_w - result_w - 6
    lines = [f"{'student':<{student_w}}  {'exercise':<{exercise_w}}  {'result':<{result_w}}"
             f"  diagnosis".rstrip(), "-" * width]
    previous = None
    for r in rows:
        student = r.student if r.student != previous else ""
        previous = r.student
        columns = [_cell(student, student_w), _cell(r.exercise, exercise_w),
                   ["passed" if r.passed else "FAILED"], _cell(r.diagnosis, diag_w)]
        for i in range(max(map(len, columns))):
            parts = [col[i] if i < len(col) else "" for col in columns]
            lines.append(f"{parts[0]:<{student_w}}  {parts[1]:<{exercise_w}}  "
                         f"{parts[2]:<{result_w}}  {parts[3]}".rstrip())
    lines.append("-" * width)
    for name, total in totals(rows).items():
        lines.extend(textwrap.wrap(
            f"{name}: {total['passed']} of {total['exercises']} exercises passed, "
            f"{total['points']:g} of {total['max_points']:g} points", width,
            subsequent_indent="    "))
    return "\n".join(lines)


def totals(rows) -> dict[str, dict]:
    """Per student (in order of first appearance): exercises, passed, points, max_points."""
    out: dict[str, dict] = {}
    for r in rows:
        t = out.setdefault(r.student, {"exercises": 0, "passed": 0, "points": 0.0,
                                       "max_points": 0.0})
        t["exercises"] += 1
        t["passed"] += int(r.passed)
        t["points"] += r.points
        t["max_points"] += r.max_points
    return out


def gradebook(rows) -> list[dict]:
    """The rows as JSON-ready dicts: student, notebook, exercise, points, max_points, passed,
    diagnosis."""
    keys = ("student", "notebook", "exercise", "points", "max_points", "passed", "diagnosis")
    return [{k: asdict(r)[k] for k in keys} for r in rows]


def _one_line(exc) -> str:
    return " ".join((str(exc) or type(exc).__name__).split())


__all__ = ["Row", "NOTEBOOK_TIMEOUT", "CELL_TIMEOUT", "NOT_WRITTEN", "find_notebooks",
           "kernel_environment", "diagnosis", "run_notebook", "restore_checks",
           "grade_notebook", "grade",
           "format_table", "totals", "gradebook"]
