"""What ``numpyvae inspect`` prints: within 100 columns, its columns explained once, and
each node's local backward formula beside its forward one."""

from __future__ import annotations

import io
from contextlib import redirect_stdout

from numpyvae.app.cli import main
from numpyvae.inspector.coverage import tiny_models
from numpyvae.inspector.formulas import backward_formula
from numpyvae.inspector.trace import WIDTH, inspect


def _printed(argv):
    out = io.StringIO()
    with redirect_stdout(out):
        code = main(argv)
    return code, out.getvalue()


def test_the_tiny_run_fits_100_columns_and_explains_its_columns_once():
    code, text = _printed(["inspect", "--tiny", "--backend", "numpy"])
    assert code == 0
    too_wide = [line for line in text.splitlines() if len(line) > WIDTH]
    assert not too_wide, too_wide
    assert text.count("Columns: out mean/std") == 1
    assert text.count("    backward  ") >= 20  # one per node, across the tiny models


def test_every_node_of_every_tiny_model_has_its_backward_formula():
    for _title, model, x, labels, beta in tiny_models(backend="numpy"):
        trace = inspect(model, x, beta=beta, labels=labels)
        for node in trace.values():
            assert backward_formula(node.kind), f"no backward formula for {node.kind}"
        table = trace.table()
        for node in trace.values():  # the row's backward line is the node kind's
            assert f"backward  {backward_formula(node.kind)[:40]}" in " ".join(table.split("\n"))


def test_a_long_wrong_check_wraps_instead_of_being_cut():
    _title, model, x, labels, beta = tiny_models(backend="numpy")[0]
    trace = inspect(model, x, beta=beta, labels=labels, bug="transposed-weight-grad")
    table = trace.table()
    assert "WRONG" in table
    assert all(len(line) <= WIDTH for line in table.splitlines())
