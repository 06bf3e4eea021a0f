"""Checking data before training: finite values, and the range a likelihood needs.

A Bernoulli decoder models each value as the probability of a white pixel,
so its data must lie in [0, 1]: on 0..255 data the loss
``-[x log p + (1 - x) log(1 - p)]`` has no minimum (it falls without bound
as ``p`` moves past 0 or 1), and training drifts to absurd losses instead of
failing. NaN or infinite values make the first loss NaN, which looks like a
divergence and sends the user to the learning rate. Both are checked here,
before the first step, and reported with what to do.

What does not live here: reading files (:mod:`numpyvae.app.data.local`), the
training loop (:mod:`numpyvae.app.train`).
"""

from __future__ import annotations

import numpy as np


class DataValueError(ValueError):
    """Data holds values a model cannot train on (NaN, infinity, or out of range)."""


def _first_index(mask) -> tuple:
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(mask)), mask.shape))


def check_finite(x, what="x") -> None:
    """Raise :class:`DataValueError` naming the count and first index of NaN/infinite values."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        return
    problems = []
    for name, mask in (("NaN", np.isnan(x)), ("infinite", np.isinf(x))):
        count = int(mask.sum())
        if count:
            problems.append(f"{count} {name} value{'s' if count != 1 else ''} "
                            f"(the first at index {_first_index(mask)})")
    if problems:
        raise DataValueError(f"{what} holds {' and '.join(problems)}; remove or replace them "
                             f"before training (e.g. np.nan_to_num)")


def check_unit_range(x, what="x", likelihood="bernoulli") -> None:
    """Raise :class:`DataValueError` unless every value of ``x`` is in [0, 1]."""
    x = np.asarray(x)
    if x.size == 0:
        return
    lo, hi = float(x.min()), float(x.max())
    if lo >= 0.0 and hi <= 1.0:
        return
    outside = int(np.count_nonzero((x < 0) | (x > 1)))
    hint = ("scale it to [0, 1] first, e.g. x / 255 for 8-bit images" if hi <= 255 and lo >= 0
            else "scale it to [0, 1] first, e.g. (x - x.min()) / (x.max() - x.min())")
    raise DataValueError(
        f"{what} has values from {lo:g} to {hi:g} ({outside} outside [0, 1]), but a "
        f"{likelihood} decoder needs data in [0, 1]; {hint}, or use a Gaussian decoder "
        f"(likelihood='gaussian', --likelihood gaussian)")


def check_training_data(x, likelihood: str, what="x") -> None:
    """Everything :func:`numpyvae.app.train.fit` checks before the first step."""
    check_finite(x, what)
    if likelihood == "bernoulli":
        check_unit_range(x, what, likelihood)
