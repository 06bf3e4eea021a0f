"""The notebooks' exercises: the checks pass right answers, name wrong ones, and grade stubs.

* every exercise of every notebook: its solution (the notebook's own cell)
  passes its check, and its student stub (made by
  :func:`numpyvae.exercises.stub_solution`) fails it naming ``NotImplementedError``;
* for each exercise, planted wrong answers (most from the inspector's catalogue
  of known-wrong formulas) fail with the right diagnosis;
* :func:`numpyvae.exercises.use` trains the real VAE on a student's function,
  the inspector flags the student's node when the function is wrong, and the
  library is restored after the block, also after an exception;
* (slow) the student version of each notebook, executed in quick mode with
  errors allowed, fails at each check cell with ``NotImplementedError`` named
  and nowhere else.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import test_notebooks

import numpyvae
from numpyvae import exercises, ops
from numpyvae.exercises import ExerciseFailed, exercises_in, stub_solution, student_notebook
from numpyvae.exercises.notebook import is_check_cell, is_solution_cell, source_text

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
#: The notebook tests' kernel (quick mode, this checkout), shared as a fixture.
kernel_env = test_notebooks.kernel_env


def _load(path):
    return json.loads(path.read_text(encoding="utf-8"))


def _exercise_cells():
    """(grade_id, solution source, check name, function name) of every exercise."""
    found = []
    for path in NOTEBOOKS:
        cells = _load(path)["cells"]
        for i, cell in enumerate(cells):
            if is_solution_cell(cell):
                check = source_text(cells[i + 1])
                name, fn = re.fullmatch(r"exercises\.(check_\w+)\((\w+)\)", check.strip()).groups()
                found.append((cell["metadata"]["nbgrader"]["grade_id"], source_text(cell),
                              name, fn))
    return found


EXERCISES = _exercise_cells()


def _define(source, fn):
    namespace = {"np": np, "ops": ops, "numpyvae": numpyvae}
    exec(source, namespace)  # noqa: S102 - the notebook's own cell
    return namespace[fn]


def test_at_least_sixteen_exercises_with_unique_ids():
    ids = [e[0] for e in EXERCISES]
    assert len(ids) >= 16 and len(set(ids)) == len(ids)
    assert {e[2] for e in EXERCISES} == {f.__name__ for f in exercises.CHECKS.values()}
    for path in NOTEBOOKS:
        nb = _load(path)
        found = exercises_in(nb)
        for ex in found:
            assert ex.check_id == f"{ex.grade_id}-check"
            assert ex.grade_id.startswith(f"nb{path.name[:2]}-")
            assert ex.check_cell == ex.solution_cell + 1
        if found:  # the objectives and times are listed at the top
            top = source_text(nb["cells"][2])
            assert "Exercises in this notebook" in top
            assert all(f"({ex.grade_id})" in top and "min |" in top for ex in found)


@pytest.mark.parametrize("grade_id,source,check,fn", EXERCISES, ids=[e[0] for e in EXERCISES])
def test_solution_passes_and_stub_fails_naming_not_implemented(grade_id, source, check, fn,
                                                               capsys):
    getattr(exercises, check)(_define(source, fn))
    assert capsys.readouterr().out.startswith("passed: ")
    stub = stub_solution(source)
    assert "### BEGIN SOLUTION" not in stub and "raise NotImplementedError()" in stub
    with pytest.raises(ExerciseFailed, match="not written yet: .* raises NotImplementedError"):
        getattr(exercises, check)(_define(stub, fn))


# ---------------------------------------------------------------------------
# Planted wrong answers: (check, wrong function, words the diagnosis must contain)
# ---------------------------------------------------------------------------
def _sig(y):
    return 1 / (1 + np.exp(-y))


WRONG = {
    "check_linear_backward": [
        (lambda d, x, W: (d @ W.T, (d.T @ x).reshape(W.shape), d.sum(0)), "transposed"),
        (lambda d, x, W: (d @ W.T, x.T @ d, np.zeros(W.shape[1])), "missing-bias-grad"),
        (lambda d, x, W: (d @ W.T, x.T @ d, d.mean(0)), "mean over the batch"),
        (lambda d, x, W: (d @ W.T, x.T @ d, d.sum(1)), "wrong axis"),
        (lambda d, x, W: (d @ W.T, -(x.T @ d), d.sum(0)), "wrong sign"),
        (lambda d, x, W: (d @ W.T, x.T @ d / len(x), d.sum(0)), "divided by B"),
        (lambda d, x, W: (d @ W, x.T @ d, d.sum(0)), "ValueError"),
    ],
    "check_relu_backward": [
        (lambda d, y: d * (y <= 0), "inverted"),
        (lambda d, y: d, "derivative f'(y) is missing"),
        (lambda d, y: d * y, "indicator"),
    ],
    "check_tanh_backward": [
        (lambda d, y: d * (1 - np.tanh(y) ** 2), "applies tanh again"),
        (lambda d, y: d, "derivative f'(y) is missing"),
        (lambda d, y: -d * (1 - y * y), "wrong sign"),
    ],
    "check_sigmoid_backward": [
        (lambda d, y: d * _sig(y) * (1 - _sig(y)), "applies sigmoid again"),
        (lambda d, y: d, "derivative f'(y) is missing"),
        (lambda d, y: 2 * d * y * (1 - y), "factor ½ is missing"),
    ],
    "check_reparameterize_backward": [
        (lambda dz, lv, e: (dz, dz * e * np.exp(0.5 * lv)), "reparam-dropped-half"),
        (lambda dz, lv, e: (dz, 0.5 * dz * e * np.exp(lv)), "variance, as sigma"),
        (lambda dz, lv, e: (-dz, 0.5 * dz * e * np.exp(0.5 * lv)), "wrong sign"),
    ],
    "check_gaussian_kl": [
        (lambda mu, lv: np.sum(mu**2 + np.exp(lv) - 1 - lv, axis=1), "factor ½ is missing"),
        (lambda mu, lv: 0.5 * np.sum(mu**2 + np.exp(lv) - 1 - lv, axis=0), "wrong axis"),
        (lambda mu, lv: -0.5 * np.sum(mu**2 + np.exp(lv) - 1 - lv, axis=1), "wrong sign"),
    ],
    "check_gaussian_kl_backward": [
        (lambda g, mu, lv: (-g[:, None] * mu, 0.5 * g[:, None] * np.expm1(lv)), "kl-mu-sign"),
        (lambda g, mu, lv: (g[:, None] * mu, g[:, None] * np.expm1(lv)), "kl-dropped-half"),
        (lambda g, mu, lv: (mu, 0.5 * np.expm1(lv)), "ignores the upstream gradient"),
    ],
    "check_bernoulli_nll_backward": [
        (lambda g, lg, x: (x - _sig(lg)) * g[:, None], "bernoulli-sign"),
        (lambda g, lg, x: _sig(lg) - x, "ignores the upstream gradient"),
        (lambda g, lg, x: (_sig(lg) - x) * g[:, None] / len(x), "divided by B"),
    ],
    "check_gaussian_nll_backward": [
        (lambda g, m, lv, x: (g[:, None] * (m - x) * np.exp(lv),
                              g[:, None] * 0.5 * (1 - (m - x) ** 2 * np.exp(-lv))),
         "multiplies by the variance"),
        (lambda g, m, lv, x: (g[:, None] * (m - x) * np.exp(-lv),
                              (g[:, None] * 0.5 * (1 - (m - x) ** 2 * np.exp(-lv))).sum(0)),
         "summed over the batch"),
        (lambda g, m, lv, x: (g[:, None] * (m - x) * np.exp(-lv),
                              g[:, None] * (1 - (m - x) ** 2 * np.exp(-lv))),
         "factor ½ is missing"),
    ],
    "check_adam_step": [
        (lambda p, g, m, v, t, lr, b1, b2, e: (
            p - lr * (b1 * m + (1 - b1) * g) / (np.sqrt(b2 * v + (1 - b2) * g * g) + e),
            b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g), "without the bias correction"),
        (lambda p, g, m, v, t, lr, b1, b2, e: (
            p, b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g), "not its square"),
        (lambda p, g, m, v, t, lr, b1, b2, e: (
            p, (1 - b1) * m + b1 * g, b2 * v + (1 - b2) * g * g), "swapped"),
    ],
    "check_concat_label_backward": [
        (lambda d, L: d[:, -L:], "concat-wrong-slice"),
        (lambda d, L: d[:L], "rows"),
        (lambda d, L: d, "wrong shape"),
    ],
    "check_roc_auc": [
        (lambda s, a: 1 - exercises.checks.reference_auc(s, a), "swapped"),
        (lambda s, a: float(np.mean(s[a][:, None] > s[~a][None, :])), "tie as a loss"),
        (lambda s, a: float(np.mean(s[a][:, None] >= s[~a][None, :])), "tie as a win"),
    ],
    "check_conv2d_backward_loops": [
        (lambda d, x, W, s, p: (*ops.conv2d_backward_naive(d, x, W, s, p)[:2],
                                d.sum(axis=(1, 2, 3))), "instead of the batch"),
        (lambda d, x, W, s, p: (ops.conv2d_backward_naive(d, x, W, s, p)[0],
                                -ops.conv2d_backward_naive(d, x, W, s, p)[1],
                                d.sum(axis=(0, 2, 3))), "wrong sign"),
        (lambda d, x, W, s, p: (ops.conv2d_backward_naive(d, x, W[:, :, ::-1, ::-1], s, p)[0],
                                *ops.conv2d_backward_naive(d, x, W, s, p)[1:]), "flipped"),
    ],
    "check_conv2d_backward_im2col": [
        (lambda d, x, W, s, p: (*ops.conv2d_backward_naive(d, x, W, s, p)[:2], d.sum(axis=0)),
         "batch only"),
        (lambda d, x, W, s, p: (ops.conv2d_backward_naive(d, x, W, s, p)[0] / len(x),
                                *ops.conv2d_backward_naive(d, x, W, s, p)[1:]), "divided by B"),
    ],
    "check_conv_transpose2d_forward": [
        (lambda x, W, b, s, p: ops.conv_transpose2d_forward(x, W, 0 * b, s, p), "lacks the bias"),
        (lambda x, W, b, s, p: ops.conv_transpose2d_forward(x, W[:, :, ::-1, ::-1], b, s, p),
         "flipped"),
        (lambda x, W, b, s, p: -ops.conv_transpose2d_forward(x, W, b, s, p), "wrong sign"),
    ],
    "check_importance_weights": [
        (lambda lw: np.exp(lw - lw.max(0)) / np.exp(lw - lw.max(0)).sum(0), "axis 0"),
        (lambda lw: np.exp(lw), "not normalised"),
        (lambda lw: np.exp(lw) / np.exp(lw).sum(1, keepdims=True), "subtract the maximum"),
    ],
    "check_iwae_backward": [
        (lambda g, lw: g[:, None] * ops.importance_weights(lw, axis=1), "wrong sign"),
        (lambda g, lw: -ops.importance_weights(lw, axis=1), "ignores the upstream gradient"),
        (lambda g, lw: -g[:, None] * ops.importance_weights(lw, axis=1) / lw.shape[1],
         "divides by K"),
    ],
}

PLANTED = [(check, i, wrong, words) for check, cases in WRONG.items()
           for i, (wrong, words) in enumerate(cases)]


def test_every_check_has_two_planted_wrong_answers():
    assert set(WRONG) == {f.__name__ for f in exercises.CHECKS.values()}
    assert all(len(cases) >= 2 for cases in WRONG.values())


@pytest.mark.parametrize("check,i,wrong,words", PLANTED,
                         ids=[f"{c}-{i}" for c, i, _, _ in PLANTED])
def test_a_planted_wrong_answer_fails_with_the_right_diagnosis(check, i, wrong, words):
    with np.errstate(all="ignore"), pytest.raises(ExerciseFailed) as failed:
        getattr(exercises, check)(wrong)
    message = str(failed.value)
    assert words in message, message
    assert "NotImplementedError" not in message


# ---------------------------------------------------------------------------
# The diagnosis, on its own
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("make,words", [
    (lambda w: -w, "wrong sign"), (lambda w: 2 * w, "twice"), (lambda w: w / 2, "half"),
    (lambda w: 5 * w, "1/B of the batch average is missing"), (lambda w: w.T, "transposed"),
    (lambda w: w[:, :1], "wrong shape"), (lambda w: np.zeros_like(w), "all zeros"),
    (lambda w: w + np.eye(5, 3) * 0.1, "differs from the right answer"),
    (lambda w: None, "is None"),
])
def test_diagnose_names_each_class(make, words):
    want = np.random.default_rng(0).standard_normal((5, 3))
    message = exercises.diagnose("dW", make(want), want, batch=5)
    assert message and words in message, message
    assert exercises.diagnose("dW", want + 1e-12, want) is None


# ---------------------------------------------------------------------------
# Training the real model on a student's function
# ---------------------------------------------------------------------------
def _right(dout, x, W):
    return dout @ W.T, x.T @ dout, dout.sum(axis=0)


def _mean_bias(dout, x, W):
    return dout @ W.T, x.T @ dout, dout.mean(axis=0)


def _train(student, steps=40):
    x = (np.random.default_rng(0).random((32, 6)) < 0.5).astype("float64")
    with exercises.use(linear_backward=student):
        vae = numpyvae.VAE(6, hidden_dims=(8,), latent_dim=2, dtype="float64", backend="numpy",
                           seed=0)
        trace = numpyvae.inspect(vae, x[:4])
        opt = numpyvae.Adam(vae.params, lr=1e-2)
        losses = []
        for _ in range(steps):
            losses.append(vae.loss_and_grads(x).loss)
            opt.step(vae.grads)
    return trace, losses


def test_a_vae_trains_on_the_students_linear_backward():
    calls = []

    def student(dout, x, W):
        calls.append(x.shape)
        return _right(dout, x, W)

    trace, losses = _train(student)
    assert calls, "the model never called the student's function"
    assert trace.passed
    assert losses[-1] < losses[0] - 0.2


def test_the_inspector_flags_the_linear_nodes_of_a_wrong_linear_backward():
    trace, _ = _train(_mean_bias, steps=1)
    assert trace.failed and all(trace[name].kind.startswith("Linear") for name in trace.failed)
    assert {"encoder.0", "decoder.1"} <= set(trace.failed)


def test_use_swaps_each_op_and_restores_the_library_after_an_exception():
    before = {name: getattr(ops, name) for name in dir(ops) if not name.startswith("_")}
    student = {"linear_backward": _right, "relu_backward": lambda d, y: d * (y > 0),
               "reparameterize_backward": ops.reparameterize_backward,
               "gaussian_kl_backward": ops.gaussian_kl_backward,
               "bernoulli_nll_backward": ops.bernoulli_nll_backward,
               "gaussian_nll_backward": ops.gaussian_nll_backward,
               "adam_step": lambda *a: (a[0], a[2], a[3])}
    with pytest.raises(RuntimeError, match="inside"):
        with exercises.use(**student):
            assert ops.linear_backward is not before["linear_backward"]
            assert ops.adam_update is not before["adam_update"]
            raise RuntimeError("inside the block")
    after = {name: getattr(ops, name) for name in dir(ops) if not name.startswith("_")}
    assert after == before
    with pytest.raises(ValueError, match="no exercise named"):
        with exercises.use(linear_backwards=_right):
            pass
    assert ops.linear_backward is before["linear_backward"]


def test_two_activations_swapped_in_one_block_are_both_used():
    calls = []

    def relu(dy, y):
        calls.append("relu")
        return dy * (y > 0)

    def tanh(dy, y):
        calls.append("tanh")
        return dy * (1 - y * y)

    y = np.random.default_rng(0).standard_normal((3, 4))
    original = ops.activation_backward
    with exercises.use(relu_backward=relu, tanh_backward=tanh):
        ops.activation_backward(y, np.maximum(y, 0), "relu")
        ops.activation_backward(y, np.tanh(y), "tanh")
        ops.activation_backward(y, 1 / (1 + np.exp(-y)), "sigmoid")  # the library's own
    assert calls == ["relu", "tanh"]
    assert ops.activation_backward is original


def test_a_student_op_runs_through_the_reference_backend_only():
    from numpyvae.backend import get_backend

    with exercises.use(linear_backward=_right):
        assert get_backend("numpy").linear_backward is not ops.__dict__.get("nothing")
        assert get_backend("numpy") is ops
        assert ops.linear_backward.__qualname__.startswith("_linear_backward")


# ---------------------------------------------------------------------------
# The student's version of a notebook
# ---------------------------------------------------------------------------
def test_stub_solution_keeps_indentation_and_the_rest_of_the_source():
    source = ("def f(x):\n    \"\"\"Doc.\"\"\"\n    ### BEGIN SOLUTION\n    y = 2 * x\n"
              "    ### END SOLUTION\n    return y\n")
    assert stub_solution(source) == ("def f(x):\n    \"\"\"Doc.\"\"\"\n    # YOUR CODE HERE\n"
                                     "    raise NotImplementedError()\n    return y\n")
    assert stub_solution("x = 1") == "x = 1"
    assert stub_solution(stub_solution(source)) == stub_solution(source)
    with pytest.raises(ValueError, match="has no ### END SOLUTION"):
        stub_solution("### BEGIN SOLUTION\nx = 1\n")


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if exercises_in(_load(p))],
                         ids=lambda p: p.stem)
def test_student_notebook_keeps_every_cell_but_the_solutions(path):
    nb = _load(path)
    student = student_notebook(nb)
    assert exercises_in(student) == exercises_in(nb)
    for mine, theirs in zip(nb["cells"], student["cells"], strict=True):
        if is_solution_cell(mine):
            assert "raise NotImplementedError()" in source_text(theirs)
            assert "### BEGIN SOLUTION" not in source_text(theirs)
        else:
            assert source_text(mine) == source_text(theirs)
        if is_check_cell(mine):
            assert mine["metadata"]["nbgrader"]["locked"] is True


@pytest.mark.slow
@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if exercises_in(_load(p))],
                         ids=lambda p: p.stem)
def test_student_notebook_fails_only_at_its_check_cells(path, kernel_env, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    for key, value in kernel_env.items():
        monkeypatch.setenv(key, value)
    nb = student_notebook(nbformat.read(path, as_version=4))
    client = NotebookClient(nb, timeout=test_notebooks.CELL_TIMEOUT,
                            kernel_name=test_notebooks.KERNEL_NAME,
                            allow_errors=True,
                            resources={"metadata": {"path": str(ROOT / "notebooks")}})
    client.execute()
    checks = 0
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        errors = [o for o in cell.outputs if o.output_type == "error"]
        if is_check_cell(cell):
            checks += 1
            assert errors and errors[0].ename == "NotWritten", (index, cell.source)
            assert "raises NotImplementedError" in errors[0].evalue
        else:
            assert not errors, (f"{path.name}: cell {index} failed in the student's version:\n"
                                f"{cell.source}\n{errors and errors[0].evalue}")
    assert checks == len(exercises_in(nb))


def test_solved_and_written_tell_a_right_a_wrong_and_a_stub_apart():
    def stub(dout, x, W):
        raise NotImplementedError()

    assert exercises.solved("linear_backward", _right)
    assert not exercises.solved("linear_backward", _mean_bias)
    assert exercises.written("linear_backward", _mean_bias)
    assert not exercises.written("linear_backward", stub)


def test_the_checks_name_the_catalogue_bugs_they_recognise():
    from numpyvae.inspector.catalogue import BUGS

    text = Path(exercises.checks.__file__).read_text(encoding="utf-8")
    named = {bug for bug in BUGS if bug in text}
    # The loss's batch mean is the one bug without an exercise of its own.
    assert named == set(BUGS) - {"loss-missing-batch-mean"}


def _kl_mu_sign(dkl, mu, logvar):
    return -dkl[:, None] * mu, 0.5 * dkl[:, None] * np.expm1(logvar)


def _bernoulli_sign(dnll, logits, x):
    return (x - ops.sigmoid(logits)) * dnll[:, None]


@pytest.mark.parametrize("name,wrong,node", [
    ("gaussian_kl_backward", _kl_mu_sign, "posterior.kl"),
    ("bernoulli_nll_backward", _bernoulli_sign, "likelihood"),
    ("relu_backward", lambda d, y: d * (y <= 0), "encoder.0"),
])
def test_the_inspector_points_at_the_node_of_each_swapped_op(name, wrong, node):
    x = (np.random.default_rng(0).random((4, 6)) < 0.5).astype("float64")
    with exercises.use(**{name: wrong}):
        vae = numpyvae.VAE(6, hidden_dims=(8,), latent_dim=2, dtype="float64",
                           backend="numpy", seed=0)
        trace = numpyvae.inspect(vae, x)
    assert node in trace.failed, trace.table()


def test_a_vae_trains_on_every_swappable_right_answer():
    calls = set()

    def spy(name, fn):
        def wrapped(*args):
            calls.add(name)
            return fn(*args)
        return wrapped

    def adam(param, grad, m, v, t, lr, b1, b2, eps):
        m = b1 * m + (1 - b1) * grad
        v = b2 * v + (1 - b2) * grad * grad
        return param - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps), m, v

    right = {"linear_backward": _right, "relu_backward": lambda d, y: d * (y > 0),
             "reparameterize_backward": lambda dz, lv, e: (dz, 0.5 * dz * e * np.exp(0.5 * lv)),
             "gaussian_kl_backward": lambda g, mu, lv: (g[:, None] * mu,
                                                        0.5 * g[:, None] * np.expm1(lv)),
             "bernoulli_nll_backward": lambda g, lg, x: (ops.sigmoid(lg) - x) * g[:, None],
             "adam_step": adam}
    x = (np.random.default_rng(0).random((32, 6)) < 0.5).astype("float64")
    with exercises.use(**{k: spy(k, f) for k, f in right.items()}):
        vae = numpyvae.VAE(6, hidden_dims=(8,), latent_dim=2, dtype="float64",
                           backend="numpy", seed=0)
        opt = numpyvae.Adam(vae.params, lr=1e-2, backend="numpy")
        losses = []
        for _ in range(40):
            losses.append(vae.loss_and_grads(x, eps=np.zeros((32, 2)) + 0.1).loss)
            opt.step(vae.grads)
    assert calls == set(right)
    assert losses[-1] < losses[0] - 0.2
