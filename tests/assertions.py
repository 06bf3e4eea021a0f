"""Assertions several test modules make: a one-line command-line error, two backends agreeing."""

from __future__ import annotations

import contextlib
import tracemalloc

from numpyvae.gradcheck import rel_error


def one_line_error(capsys, *words):
    """The captured stderr is one line, no traceback, naming every one of ``words``; returned."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, err
    return err


def backends_agree(reference, other, tol=1e-12):
    """Two :class:`~numpyvae.model.LossResult`: the same loss and every gradient, to ``tol``."""
    assert abs(reference.loss - other.loss) <= tol * abs(reference.loss)
    for name, g in reference.grads.items():
        assert rel_error(other.grads[name], g) <= tol, name


@contextlib.contextmanager
def peak_memory():
    """``with peak_memory() as peak:`` traces allocations; then ``peak[0]`` is the peak, bytes."""
    peak = [0]
    tracemalloc.start()
    try:
        yield peak
        peak[0] = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
