"""The course kit: students' notebooks with nbgrader's stubs, grading, and the inspector's mystery.

The notebooks here are small synthetic ones written by the tests, following
the exercise contract (a solution cell between ``### BEGIN SOLUTION`` and
``### END SOLUTION``, then a locked check cell that raises an
``AssertionError`` subclass with a diagnosis), so the kit is tested on its
own. The quick tier covers the stubs, the table, the command's errors and the
mystery mode; grading real kernels (solved, stubbed, broken, raising and
hanging notebooks) and nbgrader's own ``generate_assignment`` are slow.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from assertions import one_line_error

from numpyvae.app.cli import main
from numpyvae.app.course import CourseError, write_student_versions
from numpyvae.app.grading import (
    NOT_WRITTEN,
    Row,
    diagnosis,
    find_notebooks,
    format_table,
    gradebook,
    kernel_environment,
    restore_checks,
    run_notebook,
)
from numpyvae.exercises.notebook import (
    CODE_STUB,
    TEXT_STUB,
    exercises_in,
    stub_solution,
    student_notebook,
)
from numpyvae.inspector.catalogue import BUGS

ROOT = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------
# Synthetic exercise notebooks
# --------------------------------------------------------------------------

CHECKS = '''\
class ExerciseFailed(AssertionError):
    """A check's diagnosis, in words."""


def check_double(f):
    got = f(3)
    if got != 6:
        raise ExerciseFailed(f"double(3) should be 6, got {got!r}: multiply by two")


def check_square(f):
    got = f(4)
    if got != 16:
        raise ExerciseFailed(f"square(4) should be 16, got {got!r}")
'''

SOLUTIONS = {
    "double": "def double(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION",
    "square": ("def square(x):\n    \"\"\"x squared.\"\"\"\n    ### BEGIN SOLUTION\n"
               "    y = x * x\n    return y\n    ### END SOLUTION"),
}


def solution_cell(name, source):
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["nbgrader"] = {"grade": False, "grade_id": name, "locked": False,
                                 "schema_version": 3, "solution": True, "task": False}
    return cell


def check_cell(name, source, points=1):
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["nbgrader"] = {"grade": True, "grade_id": f"{name}-check", "locked": True,
                                 "points": points, "schema_version": 3, "solution": False,
                                 "task": False}
    return cell


def exercise_notebook(solutions=None, setup=CHECKS, extra=()):
    """A notebook with the two exercises ``double`` and ``square`` (their solutions given)."""
    solutions = {**SOLUTIONS, **(solutions or {})}
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell("# Two exercises"),
                nbformat.v4.new_code_cell(setup), *extra]
    for name in ("double", "square"):
        nb.cells += [solution_cell(name, solutions[name]),
                     check_cell(name, f"check_{name}({name})")]
    return nb


def write(nb, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


# --------------------------------------------------------------------------
# Stubs (quick)
# --------------------------------------------------------------------------


def test_stub_replaces_the_region_at_the_markers_indentation():
    assert stub_solution(SOLUTIONS["square"]) == (
        'def square(x):\n    """x squared."""\n    # YOUR CODE HERE\n'
        "    raise NotImplementedError()")
    assert stub_solution("### BEGIN SOLUTION\nx = 1\n### END SOLUTION\nprint(x)") == \
        "# YOUR CODE HERE\nraise NotImplementedError()\nprint(x)"
    assert stub_solution("no markers here\n") == "no markers here\n"


@pytest.mark.parametrize("source, message", [
    ("### BEGIN SOLUTION\nx\n", "has no ### END SOLUTION"),
    ("x\n### END SOLUTION\n", "without a ### BEGIN SOLUTION"),
    ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION\n", "inside another"),
])
def test_unbalanced_markers_are_refused_with_the_line(source, message):
    with pytest.raises(ValueError, match=message):
        stub_solution(source)


def test_the_student_notebook_has_stubs_no_outputs_and_the_check_cells():
    nb = exercise_notebook()
    nb.cells[2].outputs = [nbformat.v4.new_output("stream", text="hello")]
    nb.cells[2].execution_count = 3
    student = student_notebook(nb)
    assert [c.source for c in student.cells if c.cell_type == "code"][0] == CHECKS
    stubs = [c.source for c in student.cells if c.metadata.get("nbgrader", {}).get("solution")]
    assert stubs == ["def double(x):\n    # YOUR CODE HERE\n    raise NotImplementedError()",
                     'def square(x):\n    """x squared."""\n    # YOUR CODE HERE\n'
                     "    raise NotImplementedError()"]
    assert all("BEGIN SOLUTION" not in c.source and "return 2 * x" not in c.source
               for c in student.cells)
    checks = [c.source for c in student.cells if c.metadata.get("nbgrader", {}).get("grade")
              and not c.metadata["nbgrader"]["solution"]]
    assert checks == ["check_double(double)", "check_square(square)"]
    assert all(c.outputs == [] and c.execution_count is None
               for c in student.cells if c.cell_type == "code")
    assert nb.cells[2].outputs, "the solved notebook itself is left alone"
    nbformat.validate(student)


def test_a_solution_cell_without_markers_becomes_the_stub_as_a_whole():
    nb = exercise_notebook({"double": "def double(x):\n    return 2 * x"})
    answer = nbformat.v4.new_markdown_cell("Because it doubles.")
    answer.metadata["nbgrader"] = {"grade": False, "grade_id": "why", "locked": False,
                                   "schema_version": 3, "solution": True, "task": False}
    nb.cells.append(answer)
    student = student_notebook(nb)
    assert student.cells[2].source == "\n".join(CODE_STUB)
    assert student.cells[-1].source == TEXT_STUB
    assert [e.grade_id for e in exercises_in(student)] == ["double", "square"]


def test_exercises_are_found_with_their_cells_and_points():
    nb = exercise_notebook()
    nb.cells[-1].metadata["nbgrader"]["points"] = 2
    found = exercises_in(nb)
    assert [(e.grade_id, e.check_id, e.solution_cell, e.check_cell, e.points)
            for e in found] == [("double", "double-check", 2, 3, 1.0),
                                ("square", "square-check", 4, 5, 2.0)]


def test_a_repeated_grade_id_is_refused():
    nb = exercise_notebook()
    nb.cells[4].metadata["nbgrader"]["grade_id"] = "double"
    with pytest.raises(ValueError, match="cell 4: the grade id 'double' appears twice"):
        exercises_in(nb)


def test_a_region_outside_a_solution_cell_is_refused():
    nb = exercise_notebook(extra=[nbformat.v4.new_code_cell(
        "### BEGIN SOLUTION\nx = 1\n### END SOLUTION")])
    with pytest.raises(ValueError, match="cell 2: .*not marked as a solution"):
        student_notebook(nb)


def test_course_student_writes_every_notebook_and_the_files_beside(tmp_path, capsys):
    source = tmp_path / "solved"
    write(exercise_notebook(), source / "01_first.ipynb")
    write(exercise_notebook(), source / "02_second.ipynb")
    (source / "README.md").write_text("the course\n", encoding="utf-8")
    (source / "data").mkdir()
    (source / "data" / "table.csv").write_text("1,2\n", encoding="utf-8")
    out = tmp_path / "handout"
    assert main(["course", "student", str(out), "--from", str(source)]) == 0
    assert "2 student notebooks" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["01_first.ipynb", "02_second.ipynb",
                                                      "README.md", "data"]
    assert (out / "data" / "table.csv").read_text(encoding="utf-8") == "1,2\n"
    nb = nbformat.read(out / "01_first.ipynb", as_version=4)
    assert sum(CODE_STUB[1] in c.source for c in nb.cells) == 2
    # A folder that is not empty is refused in one line, unless --force.
    assert main(["course", "student", str(out), "--from", str(source)]) == 2
    err = one_line_error(capsys)
    assert "not empty" in err and "--force" in err
    assert main(["course", "student", str(out), "--from", str(source), "--force"]) == 0


def test_course_student_reads_the_checkout_notebooks_by_default(tmp_path):
    written = write_student_versions(tmp_path / "out")
    assert {p.name for p in written} == {p.name for p in (ROOT / "notebooks").glob("*.ipynb")}
    for path in written:
        nb = nbformat.read(path, as_version=4)
        assert not any("BEGIN SOLUTION" in c.source for c in nb.cells), path.name
        assert all(not c.outputs for c in nb.cells if c.cell_type == "code")


@pytest.mark.parametrize("args, message", [
    (["--from", "nowhere"], "no such folder"),
    (["--from", "."], "holds no notebooks"),
])
def test_course_student_errors_are_one_line(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    assert main(["course", "student", "out", *args]) == 2
    assert message in one_line_error(capsys)


def test_a_broken_region_names_the_notebook_and_cell(tmp_path, capsys):
    nb = exercise_notebook({"double": "def double(x):\n    ### BEGIN SOLUTION\n    return 2"})
    write(nb, tmp_path / "solved" / "01.ipynb")
    assert main(["course", "student", str(tmp_path / "out"), "--from",
                 str(tmp_path / "solved")]) == 2
    err = one_line_error(capsys)
    assert "01.ipynb: cell 2" in err and "END SOLUTION" in err
    assert not (tmp_path / "out").exists(), "nothing is written when a notebook is refused"


# --------------------------------------------------------------------------
# Whose notebooks, the table and the gradebook (quick)
# --------------------------------------------------------------------------


def test_notebooks_belong_to_their_stem_or_their_folder(tmp_path):
    write(exercise_notebook(), tmp_path / "class" / "alice.ipynb")
    write(exercise_notebook(), tmp_path / "class" / "bob" / "hw1" / "01.ipynb")
    write(exercise_notebook(), tmp_path / "class" / "bob" / ".ipynb_checkpoints" / "01.ipynb")
    loose = write(exercise_notebook(), tmp_path / "carol.ipynb")
    found = find_notebooks([tmp_path / "class", loose])
    assert [(who, p.name) for who, p in found] == [("alice", "alice.ipynb"), ("bob", "01.ipynb"),
                                                   ("carol", "carol.ipynb")]
    assert {who for who, _ in find_notebooks([tmp_path / "class"], "dave")} == {"dave"}
    with pytest.raises(CourseError, match="no such notebook or folder"):
        find_notebooks([tmp_path / "nowhere"])


ROWS = [
    Row("alice", "alice.ipynb", "double", True, "", 1, 1),
    Row("alice", "alice.ipynb", "square", True, "", 1, 1),
    Row("bob", "bob.ipynb", "double", False, NOT_WRITTEN, 0, 1),
    Row("bob", "bob.ipynb", "square", False, "ExerciseFailed: square(4) should be 16, got 8; "
        "the product of x with itself, not the sum x + x, which doubles it instead of squaring "
        "it", 0, 1),
    Row("a-student-with-a-very-long-name", "x.ipynb", "-", False,
        "not a readable notebook: Notebook does not appear to be JSON"),
]


def test_the_table_is_aligned_within_100_columns_with_totals():
    table = format_table(ROWS)
    lines = table.splitlines()
    assert all(len(line) <= 100 for line in lines), max(lines, key=len)
    assert lines[0].split() == ["student", "exercise", "result", "diagnosis"]
    column = lines[0].index("diagnosis")
    assert lines[2].startswith("alice") and "passed" in lines[2]
    assert lines[4].startswith("bob") and lines[4][column:] == NOT_WRITTEN
    square = next(i for i, line in enumerate(lines) if "square(4)" in line)
    assert lines[square][column:].startswith("ExerciseFailed: square(4)")
    assert lines[square + 1][:column].strip() == "" and lines[square + 1][column:] != ""
    assert "instead of squaring it" in " ".join(table.split())  # wrapped, never cut
    assert "alice: 2 of 2 exercises passed, 2 of 2 points" in table
    assert "bob: 0 of 2 exercises passed, 0 of 2 points" in table
    assert "a-student-with-a-very-long-name" in table.replace("\n", "")


def test_the_gradebook_has_a_row_per_exercise():
    book = gradebook(ROWS)
    assert book[2] == {"student": "bob", "notebook": "bob.ipynb", "exercise": "double",
                       "points": 0, "max_points": 1, "passed": False, "diagnosis": NOT_WRITTEN}
    json.dumps(book)


def test_course_grade_errors_are_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["course", "grade", "nowhere"]) == 2
    one_line_error(capsys, "no such notebook or folder")
    with pytest.raises(SystemExit) as stopped:
        main(["course", "grade", "--timeout", "0", "x.ipynb"])
    assert stopped.value.code == 2
    one_line_error(capsys, "expected a number > 0")


def test_edited_and_deleted_checks_are_restored_from_the_course():
    original = exercise_notebook()
    handed_in = exercise_notebook()
    handed_in.cells[3].source = "pass  # check_double(double)"
    del handed_in.cells[5]  # the check of square
    restore_checks(handed_in, original)
    assert [c.source for c in handed_in.cells] == [c.source for c in original.cells]
    assert [(e.grade_id, e.check_cell) for e in exercises_in(handed_in)] == [("double", 3),
                                                                             ("square", 5)]


def test_checks_from_a_folder_without_that_notebook_give_a_row(tmp_path, capsys):
    write(exercise_notebook(), tmp_path / "submitted" / "alice" / "lab.ipynb")
    (tmp_path / "handout").mkdir()
    assert main(["course", "grade", str(tmp_path / "submitted"), "--checks",
                 str(tmp_path / "handout"), "--quiet"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "alice - FAILED no notebook lab.ipynb in" in out and "(--checks)" in out
    assert main(["course", "grade", str(tmp_path / "submitted"), "--checks",
                 str(tmp_path / "nowhere")]) == 2
    one_line_error(capsys, "no such folder of notebooks (--checks)")


def test_unreadable_and_empty_notebooks_get_a_failed_row_without_a_kernel(tmp_path, capsys):
    (tmp_path / "mallory.ipynb").write_text("{not json", encoding="utf-8")
    write(nbformat.v4.new_notebook(), tmp_path / "oscar.ipynb")
    assert main(["course", "grade", str(tmp_path), "--json", "-", "--quiet"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["student"], r["exercise"], r["passed"]) for r in rows] == [
        ("mallory", "-", False), ("oscar", "-", False)]
    assert rows[0]["diagnosis"].startswith("not a readable notebook: ")
    assert rows[1]["diagnosis"].startswith("no check cells")


# --------------------------------------------------------------------------
# The inspector's mystery mode (quick: tiny models on the NumPy backend)
# --------------------------------------------------------------------------

MYSTERY_SEEDS = [0, 1, 2, 3, 5, 8, 13]


def _inspect(capsys, *args):
    code = main(["inspect", "--tiny", "--backend", "numpy", *args])
    return code, capsys.readouterr().out


@pytest.mark.parametrize("seed", MYSTERY_SEEDS)
def test_the_mystery_names_the_failing_node_and_hides_the_bug(capsys, seed):
    code, revealed = _inspect(capsys, "--reveal", str(seed))
    assert code == 0
    bug = next(name for name in BUGS if f"planted {name} in" in revealed.replace("\n", " "))
    node = revealed.replace("\n   ", " ").split(" in the node ", 1)[1].split()[0]
    assert BUGS[bug].formula in revealed.replace("\n    ", " ")

    code, out = _inspect(capsys, "--mystery", "--seed", str(seed))
    assert code == 1, "a failing node fails the command, as with --bug"
    flat = " ".join(out.split())
    assert bug not in flat, f"the mystery output names the bug {bug}"
    wrong, correct = BUGS[bug].formula.split("  (correct: ")
    assert " ".join(wrong.split()) not in flat and " ".join(correct.rstrip(")").split()) \
        not in flat
    assert f"FAILED: the check of {node} " in flat
    assert "planted bug" not in flat
    row = next(line for line in out.splitlines() if line.startswith(node))
    assert "WRONG" in row
    assert f"--reveal {seed}" in flat


def test_the_same_seed_plants_the_same_bug_and_options_change_the_models(capsys):
    _, first = _inspect(capsys, "--reveal", "7")
    _, again = _inspect(capsys, "--reveal", "7")
    assert first == again
    _, conv = _inspect(capsys, "--arch", "conv", "--reveal", "7")
    assert "conv VAE" in conv
    _, out = _inspect(capsys, "--arch", "conv", "--mystery", "--seed", "7")
    assert "numpyvae inspect --tiny --arch conv --reveal 7" in " ".join(out.split())


def test_the_mystery_without_a_seed_prints_the_one_it_drew(capsys):
    code, out = _inspect(capsys, "--mystery")
    assert code == 1
    seed = out.split("== mystery ", 1)[1].split(":", 1)[0]
    assert seed.isdigit() and f"--reveal {seed}" in " ".join(out.split())


@pytest.mark.parametrize("args, message", [
    (["--mystery", "--bug", "kl-mu-sign"], "drop --bug"),
    (["--mystery", "--reveal", "3"], "not both"),
])
def test_mystery_option_errors_are_one_line(capsys, args, message):
    assert main(["inspect", "--tiny", *args]) == 2
    assert message in one_line_error(capsys)


def test_the_mystery_and_a_run_folder_do_not_mix(tmp_path, capsys):
    assert main(["inspect", str(tmp_path), "--mystery"]) == 2
    assert "go with --tiny" in one_line_error(capsys)


@pytest.mark.slow
def test_every_bug_the_mystery_can_draw_fails_exactly_its_node():
    """Whatever the seed draws among the tiny models, the planted node and only it fails."""
    from numpyvae.inspector.coverage import tiny_models
    from numpyvae.inspector.trace import build_graph, inspect

    drawn = 0
    for title, model, x, labels, beta in tiny_models(backend="numpy"):
        for node, op, _ in build_graph(model, beta):
            for name, bug in BUGS.items():
                if bug.applies(op):
                    drawn += 1
                    trace = inspect(model, x, beta=beta, labels=labels, bug=name,
                                    bug_node=node, seed=drawn)
                    assert trace.failed == [node], (title, name, node, trace.failed)
    assert drawn > len(BUGS)


# --------------------------------------------------------------------------
# Grading real notebooks in fresh kernels (slow)
# --------------------------------------------------------------------------


def _class_folder(root: Path) -> Path:
    """A class of five: solved, stubbed, a syntax error, a raising setup, a wrong answer."""
    folder = root / "submitted"
    write(exercise_notebook(), folder / "alice.ipynb")
    write(student_notebook(exercise_notebook()), folder / "bob.ipynb")
    write(exercise_notebook({"double": "def double(x):\n    return 2 *"}), folder / "carol.ipynb")
    write(exercise_notebook(setup="raise RuntimeError('the data file is missing')\n" + CHECKS),
          folder / "dave.ipynb")
    write(exercise_notebook({"square": "def square(x):\n    return x + x"}), folder / "erin.ipynb")
    return folder


@pytest.mark.slow
def test_course_grade_gives_the_expected_table(tmp_path, capsys):
    folder = _class_folder(tmp_path)
    book = tmp_path / "gradebook.json"
    assert main(["course", "grade", str(folder), "--json", str(book), "--quiet"]) == 0
    out = capsys.readouterr().out
    rows = json.loads(book.read_text(encoding="utf-8"))
    got = {(r["student"], r["exercise"]): (r["passed"], r["diagnosis"]) for r in rows}
    assert got == {
        ("alice", "double"): (True, ""),
        ("alice", "square"): (True, ""),
        ("bob", "double"): (False, NOT_WRITTEN),
        ("bob", "square"): (False, NOT_WRITTEN),
        ("carol", "double"): (False, "its solution cell raised SyntaxError: invalid syntax "
                               "(line 2)"),
        ("carol", "square"): (True, ""),
        ("dave", "double"): (False, "NameError: name 'check_double' is not defined"),
        ("dave", "square"): (False, "NameError: name 'check_square' is not defined"),
        ("erin", "double"): (True, ""),
        ("erin", "square"): (False, "ExerciseFailed: square(4) should be 16, got 8"),
    }
    assert all(len(line) <= 100 for line in out.splitlines())
    assert "alice: 2 of 2 exercises passed, 2 of 2 points" in out
    assert "erin: 1 of 2 exercises passed, 1 of 2 points" in out


@pytest.mark.slow
def test_an_edited_check_is_graded_as_handed_out_with_checks(tmp_path, capsys):
    cheat = exercise_notebook({"square": "def square(x):\n    return x + x"})
    cheat.cells[5].source = "pass"
    write(cheat, tmp_path / "submitted" / "mallory" / "lab.ipynb")
    write(student_notebook(exercise_notebook()), tmp_path / "handout" / "lab.ipynb")
    assert main(["course", "grade", str(tmp_path / "submitted"), "--json", "-", "--quiet"]) == 0
    trusting = json.loads(capsys.readouterr().out)
    assert all(r["passed"] for r in trusting)
    assert main(["course", "grade", str(tmp_path / "submitted"), "--checks",
                 str(tmp_path / "handout"), "--json", "-", "--quiet"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["exercise"], r["passed"], r["diagnosis"]) for r in rows] == [
        ("double", True, ""),
        ("square", False, "ExerciseFailed: square(4) should be 16, got 8")]


@pytest.mark.slow
def test_a_hanging_or_dying_notebook_gets_its_rows(tmp_path, capsys):
    hangs = exercise_notebook({"square": "import time\ntime.sleep(600)"})
    dies = exercise_notebook({"square": "import os\nos._exit(1)"})
    write(hangs, tmp_path / "frank.ipynb")
    write(dies, tmp_path / "grace.ipynb")
    assert main(["course", "grade", str(tmp_path), "--cell-timeout", "5", "--json", "-",
                 "--quiet"]) == 0
    rows = json.loads(capsys.readouterr().out)
    got = {(r["student"], r["exercise"]): (r["passed"], r["diagnosis"]) for r in rows}
    assert got[("frank", "double")] == (True, "")
    assert not got[("frank", "square")][0]
    assert got[("frank", "square")][1] == ("not run: cell 4 ran past the time limit of a "
                                           "cell (5 s)")  # the solution cell sleeps
    assert got[("grace", "double")] == (True, "")
    assert got[("grace", "square")] == (False, "not run: the kernel died in cell 4")


@pytest.mark.slow
def test_student_versions_of_the_course_fail_only_with_not_implemented(tmp_path):
    """The real notebooks' student versions, run as the grader runs them: every check cell
    fails naming the stub's NotImplementedError ("not written yet"), and no other cell fails.

    Only the notebooks with exercises are run: the others' student versions are the solved
    notebooks without their outputs, which tests/test_notebooks.py runs.
    """
    written = write_student_versions(tmp_path / "handout")
    exercises = {p: exercises_in(nbformat.read(p, as_version=4)) for p in written}
    assert sum(map(len, exercises.values())) >= 16, "the course's notebooks hold exercises"
    with kernel_environment() as kernel_name:
        for path in (p for p in written if exercises[p]):
            nb = nbformat.read(path, as_version=4)
            assert run_notebook(nb, path, kernel_name=kernel_name) is None, path.name
            failed = {i: [diagnosis(o) for o in cell.get("outputs", [])
                          if o.get("output_type") == "error"]
                      for i, cell in enumerate(nb.cells)}
            checks = [ex.check_cell for ex in exercises[path]]
            assert {i: failed[i] for i in checks} == {i: [NOT_WRITTEN] for i in checks}, \
                path.name
            other = {i: errors for i, errors in failed.items() if errors and i not in checks}
            assert not other, f"{path.name}: cells fail with other errors: {other}"


@pytest.mark.slow
def test_nbgrader_generate_assignment_makes_the_same_stubs(tmp_path):
    """nbgrader's own generate_assignment, on a notebook of the contract and on every notebook
    of the course: the same stubs as ``course student``.

    Runs nbgrader from this interpreter when it imports it, else the ``nbgrader``
    command on the PATH (it may live in an environment of its own, its
    dependencies being heavy); skipped when there is neither.
    """
    try:
        import nbgrader  # noqa: F401

        command = [sys.executable, "-m", "nbgrader"]
    except ImportError:
        found = shutil.which("nbgrader")
        if found is None:
            pytest.skip("nbgrader is not installed (pip install nbgrader, here or in an "
                        "environment of its own with its nbgrader command on the PATH)")
        command = [found]
    course = tmp_path / "course"
    source = course / "source" / "lab1"
    write(exercise_notebook(), source / "lab.ipynb")
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    for path in notebooks:
        shutil.copy(path, source / path.name)
    done = subprocess.run([*command, "generate_assignment", "lab1", "--force",
                           f"--CourseDirectory.root={course}",
                           f"--CourseDirectory.db_url=sqlite:///{tmp_path / 'gradebook.db'}"],
                          cwd=course, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    for name in ["lab.ipynb", *(p.name for p in notebooks)]:
        theirs = nbformat.read(course / "release" / "lab1" / name, as_version=4)
        ours = student_notebook(nbformat.read(source / name, as_version=4))
        assert [(c.cell_type, c.source) for c in theirs.cells] == \
            [(c.cell_type, c.source) for c in ours.cells], name
        assert all(not c.get("outputs") for c in theirs.cells), name
