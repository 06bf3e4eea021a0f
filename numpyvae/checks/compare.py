"""Rows and reports for checks that compare the library with an expected value.

A :class:`~numpyvae.gradcheck.GradCheck` row is a parameter or op, its
relative error (:func:`~numpyvae.gradcheck.rel_error`), where the largest
difference is, and the two values there. The gradient checks call the two
values "analytic" and "numeric"; a :class:`Comparison` report names them
after what is compared (the library's value and the textbook's, the fast
path's and the reference's).
"""

from __future__ import annotations

import numpy as np

from ..gradcheck import GradCheck, GradReport, rel_error


def compare(name, got, expected, tol) -> GradCheck:
    """A row: ``got`` against ``expected`` (same shape), with the largest difference located."""
    got = np.asarray(got, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if got.shape != expected.shape:
        raise ValueError(f"{name}: shapes differ, {got.shape} vs {expected.shape}")
    diff = np.abs(got - expected)
    if diff.size == 0:
        return GradCheck(name, got.shape, 0.0, (), 0.0, 0.0, tol)
    finite = np.where(np.isnan(diff), np.inf, diff)
    idx = tuple(int(i) for i in np.unravel_index(int(np.argmax(finite)), diff.shape))
    error = rel_error(got, expected)
    if not np.isfinite(diff).all():
        error = float("inf")
    return GradCheck(name, got.shape, error, idx, float(got[idx]), float(expected[idx]), tol)


class Comparison(GradReport):
    """A :class:`~numpyvae.gradcheck.GradReport` whose value columns say what was compared."""

    def __init__(self, title, rows=(), labels=("library", "expected")):
        super().__init__(title, rows)
        self.labels = labels

    def __str__(self):
        got, expected = self.labels
        w = max([22] + [len(r.name) + 2 for r in self])
        s = max([14] + [len(str(r.shape)) + 2 for r in self])
        i = max([12] + [len(str(r.worst_index)) + 2 for r in self])
        lines = [f"{self.title}", f"  {'tensor':<{w}}{'shape':<{s}}{'rel error':>11}  "
                 f"{'worst at':<{i}}{got:>13}{expected:>13}  result"]
        for r in self:
            lines.append(
                f"  {r.name:<{w}}{str(r.shape):<{s}}{r.rel_error:>11.2e}  "
                f"{str(r.worst_index):<{i}}{r.analytic:>13.6g}{r.numeric:>13.6g}  "
                f"{'ok' if r.passed else 'FAIL'}"
            )
        return "\n".join(lines)


def failures(reports) -> list[str]:
    """One line per failing row: the report, the parameter or op, the error and where."""
    lines = []
    for report in reports:
        for r in report:
            if not r.passed:
                lines.append(f"{report.title}: {r.name} off by {r.rel_error:.1e} relative "
                             f"(tolerance {r.tol:.0e}) at {r.worst_index}: "
                             f"{r.analytic:.6g} vs {r.numeric:.6g}")
    return lines


__all__ = ["compare", "Comparison", "failures"]
