"""Hypothesis strategies shared by the tests: shapes, bounded values, non-contiguous layouts.

Shapes stay small (batch <= 6, features <= 7) so that a central-difference
check of every element runs in milliseconds. Values are bounded *and* kept
away from zero by a margin: near a kink (ReLU at 0) a finite difference
straddles two slopes, and a gradient that is tiny next to the function's
value drowns in rounding noise; neither is a bug in the code under test.

A layout is how an array sits in memory: ``"contiguous"`` (C order),
``"transposed"`` (the transpose of a C-ordered array, so Fortran order) or
``"sliced"`` (every other row and column of a larger array, so no axis has
unit stride). Backends must give the same results for all three.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, assume, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

MAX_BATCH = 6
MAX_FEATURES = 7

LAYOUTS = ("contiguous", "transposed", "sliced")


def batch_sizes(max_batch: int = MAX_BATCH) -> st.SearchStrategy[int]:
    return st.integers(1, max_batch)


def feature_sizes(max_features: int = MAX_FEATURES) -> st.SearchStrategy[int]:
    return st.integers(1, max_features)


@st.composite
def shapes(draw, max_batch: int = MAX_BATCH, max_features: int = MAX_FEATURES):
    """A 2-D shape ``(batch, features)``."""
    return draw(batch_sizes(max_batch)), draw(feature_sizes(max_features))


def bounded_floats(low: float = 0.1, high: float = 2.0) -> st.SearchStrategy[float]:
    """Floats with ``low <= |v| <= high``, either sign (never zero, never huge)."""
    magnitude = st.floats(low, high, allow_nan=False, allow_infinity=False)
    return st.builds(lambda m, negative: -m if negative else m, magnitude, st.booleans())


def with_layout(a: np.ndarray, layout: str) -> np.ndarray:
    """The values of 2-D ``a`` as a view with the given memory layout (a copy of the data)."""
    if layout == "contiguous":
        return np.ascontiguousarray(a)
    if layout == "transposed":
        return np.ascontiguousarray(a.T).T
    if layout == "sliced":
        big = np.full((2 * a.shape[0] + 1, 2 * a.shape[1] + 1), np.nan, dtype=a.dtype)
        big[1::2, 1::2] = a
        return big[1::2, 1::2]
    raise ValueError(f"unknown layout {layout!r}")


@st.composite
def arrays(draw, shape, *, low: float = 0.1, high: float = 2.0, dtype=np.float64,
           layouts=LAYOUTS):
    """An array of ``shape`` with values from :func:`bounded_floats`, in a drawn layout."""
    values = draw(hnp.arrays(np.float64, shape, elements=bounded_floats(low, high)))
    layout = draw(st.sampled_from(layouts))
    return with_layout(values.astype(dtype), layout)


def non_contiguous_arrays(shape, **kwargs):
    """Like :func:`arrays`, always transposed or sliced."""
    return arrays(shape, layouts=("transposed", "sliced"), **kwargs)


def seeds() -> st.SearchStrategy[int]:
    """A seed for a ``numpy.random.Generator`` (weights, upstream gradients, noise)."""
    return st.integers(0, 2**32 - 1)


def off_kink_bias(x: np.ndarray, W: np.ndarray, b: np.ndarray, margin: float = 1e-3) -> np.ndarray:
    """A bias near ``b`` for which every pre-activation ``x @ W + bias`` has ``|.| >= margin``.

    Each column is moved by the smallest step from ``0, +0.01, -0.01, +0.02, ...``
    that clears it; the ``B`` forbidden intervals of width ``2 * margin`` cannot
    cover all candidates.
    """
    a = x @ W
    bias = np.array(b, dtype=np.float64, copy=True)
    steps = [0.0] + [s * k * 0.01 for k in range(1, 4 * len(x) + 4) for s in (1, -1)]
    for j in range(W.shape[1]):
        for step in steps:
            if np.min(np.abs(a[:, j] + b[j] + step)) >= margin:
                bias[j] = b[j] + step
                break
        else:  # pragma: no cover - impossible by the counting argument above
            raise AssertionError("no bias clears the kink")
    return bias.astype(b.dtype)


#: For ``@given`` tests that also take the ``backend_name`` fixture. That fixture
#: is a plain string, so sharing it across examples is safe.
fixture_settings = settings(suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.differing_executors,
])


# --------------------------------------------------------------------------
# Images and convolution geometry
# --------------------------------------------------------------------------


def with_image_layout(a: np.ndarray, layout: str) -> np.ndarray:
    """The values of ``(B, C, H, W)`` ``a`` as a view with the given layout (a copy of the data).

    ``"transposed"`` stores each image column by column (the view of an
    array of shape ``(B, C, W, H)`` with its last two axes swapped);
    ``"sliced"`` takes every other element along every axis of a larger array.
    """
    if layout == "contiguous":
        return np.ascontiguousarray(a)
    if layout == "transposed":
        return np.ascontiguousarray(a.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    if layout == "sliced":
        big = np.full(tuple(2 * s + 1 for s in a.shape), np.nan, dtype=a.dtype)
        big[(slice(1, None, 2),) * a.ndim] = a
        return big[(slice(1, None, 2),) * a.ndim]
    raise ValueError(f"unknown layout {layout!r}")


@st.composite
def conv_geometries(draw, transposed: bool = False):
    """A valid convolution: ``dict(B, C, O, H, W, kernel, stride, padding[, output_padding])``.

    Batch 1-4, channels 1-6, ``H`` and ``W`` 1-12 drawn independently (so
    mostly not square), kernel sides 1-5, strides 1-3, paddings 0-2. For a
    convolution, the padded input must hold the kernel; for a transposed
    one, ``output_padding < stride`` and the output must be non-empty.
    """
    g = {"B": draw(st.integers(1, 4)), "C": draw(st.integers(1, 6)),
         "O": draw(st.integers(1, 6)), "H": draw(st.integers(1, 12)),
         "W": draw(st.integers(1, 12))}
    g["kernel"] = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    g["stride"] = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    g["padding"] = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    size, k, s, p = (g["H"], g["W"]), g["kernel"], g["stride"], g["padding"]
    if transposed:
        g["output_padding"] = tuple(draw(st.integers(0, si - 1)) for si in s)
        out = [(n - 1) * si - 2 * pi + ki + oi
               for n, ki, si, pi, oi in zip(size, k, s, p, g["output_padding"], strict=True)]
        assume(min(out) >= 1)
    else:
        assume(all(n + 2 * pi >= ki for n, ki, pi in zip(size, k, p, strict=True)))
    return g


@st.composite
def image_arrays(draw, shape, *, low: float = 0.1, high: float = 2.0, dtype=np.float64,
                 layouts=LAYOUTS):
    """A ``(B, C, H, W)`` array of bounded values in a drawn layout (see :func:`with_image_layout`).

    The values come from a drawn seed rather than element by element: images
    have up to a few thousand entries, too many for hypothesis to draw one by
    one quickly. ``low <= |v| <= high``, either sign.
    """
    rng = np.random.default_rng(draw(seeds()))
    values = rng.uniform(low, high, size=shape) * rng.choice([-1.0, 1.0], size=shape)
    return with_image_layout(values.astype(dtype), draw(st.sampled_from(layouts)))
