"""Saying what is wrong with a student's array, in the student's terms.

:func:`diagnose` compares a student's answer with the right one and names the
mistake when it is one of the usual ones: the wrong shape, a transposed
matrix, the wrong sign, a factor of 2 or ½, a missing (or extra) batch
average, a sum over the wrong axis, an array of zeros. The check functions
(:mod:`numpyvae.exercises.checks`) add the known-wrong formulas of each
exercise, many of them the inspector's catalogue
(:mod:`numpyvae.inspector.catalogue`), as *hints*: pairs of a description and
the array the wrong formula gives. What is none of these is reported as the
largest difference from the right answer and where it is.

What does not live here: the exercises themselves (:mod:`numpyvae.exercises.checks`), and the
swapping of the library's ops (:mod:`numpyvae.exercises.swap`).
"""

from __future__ import annotations

import numpy as np

#: Agreement that counts as equal, in float64 (a right hand-written gradient agrees to ~1e-10).
RTOL = 1e-6


class ExerciseFailed(AssertionError):
    """A check cell's verdict: the student's function is wrong, and why (one paragraph)."""


class NotWritten(ExerciseFailed):
    """A check cell's verdict on a stub: the student's function still raises NotImplementedError."""


def close(a, b, rtol: float = RTOL) -> bool:
    """``a`` equals ``b`` to ``rtol`` of ``b``'s scale (same shape, no NaN)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or not np.all(np.isfinite(a)):
        return False
    scale = max(float(np.max(np.abs(b), initial=0.0)), 1e-12)
    return float(np.max(np.abs(a - b), initial=0.0)) <= rtol * scale


def _as_array(value):
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return None


def generic_hints(want, batch: int | None = None) -> list[tuple[str, np.ndarray]]:
    """The usual wrong answers derived from the right one: sign, factors, batch, transpose."""
    hints = [
        ("has the wrong sign (it is −1 times the right answer): check the direction of the "
         "derivative, e.g. sigmoid(a) − x, not x − sigmoid(a)", -want),
        ("is twice the right answer: a factor ½ is missing (the ½ of ½·logvar, of σ² = "
         "exp(logvar), or of the KL's ½)", 2 * want),
        ("is half the right answer: an extra factor ½ (or a missing 2 from the derivative "
         "of a square)", 0.5 * want),
    ]
    if batch is not None and batch > 2:
        hints += [
            (f"is B = {batch} times the right answer: the 1/B of the batch average is "
             "missing", batch * want),
            (f"is the right answer divided by B = {batch}: you averaged over the batch "
             "where the sum is right (each example's contribution counts in full; a "
             "parameter's gradient is the sum of them)", want / batch),
        ]
    if want.ndim == 2 and want.shape[0] != want.shape[1]:
        hints.append(("is transposed: you returned the transpose of the right matrix "
                      f"(shape {want.T.shape} where {want.shape} is expected); compare "
                      "the shapes in x.T @ da", want.T))
    return hints


def diagnose(name: str, got, want, hints=(), batch: int | None = None) -> str | None:
    """None when ``got`` equals ``want``; otherwise one sentence on what is wrong with ``name``.

    ``hints`` are ``(description, wrong_array)`` pairs, tried before the generic
    classes; a description completes the sentence "``name`` ...".
    """
    want = np.asarray(want, dtype=np.float64)
    if got is None:
        return f"{name} is None: the function must return it (a missing return statement?)"
    arr = _as_array(got)
    if arr is None:
        return f"{name} is a {type(got).__name__}, not an array of numbers"
    if close(arr, want):
        return None
    for text, wrong in [*hints, *generic_hints(want, batch)]:
        wrong = np.asarray(wrong, dtype=np.float64)
        if wrong.shape == arr.shape and close(arr, wrong) and not close(wrong, want):
            return f"{name} {text}."
    if arr.shape != want.shape:
        if arr.size == want.size:
            return (f"{name} has shape {arr.shape}, expected {want.shape}: the same numbers "
                    "of elements in the wrong layout (a transposed or reshaped array?)")
        return (f"{name} has the wrong shape {arr.shape}, expected {want.shape} (a sum over "
                "the wrong axis, or a missing sum, changes the shape)")
    if not np.all(np.isfinite(arr)):
        bad = np.unravel_index(int(np.argmax(~np.isfinite(arr))), arr.shape)
        return (f"{name} holds {arr[bad]} at index {tuple(int(i) for i in bad)}: an overflow "
                "or a division by zero (exponentiate only numbers ≤ 0, e.g. subtract the "
                "maximum first)")
    if not np.any(arr) and np.any(want):
        return f"{name} is all zeros: nothing reaches it (a gradient that is never added?)"
    diff = np.abs(arr - want)
    at = np.unravel_index(int(np.argmax(diff)), arr.shape)
    index = tuple(int(i) for i in at)
    scale = max(float(np.max(np.abs(want), initial=0.0)), 1e-12)
    return (f"{name} differs from the right answer (central differences and the library's "
            f"own op agree on it) by up to {diff[at]:.3g} ({diff[at] / scale:.1e} of its "
            f"scale) at index {index}: you have {arr[at]:.6g}, expected {want[at]:.6g}")


__all__ = ["ExerciseFailed", "RTOL", "close", "diagnose", "generic_hints"]
