"""The embedded dataset: 28x28 sprites the package draws itself, in the spirit of dSprites.

Each image shows one white shape on black, drawn from five generating factors
that are kept as labels:

==========  ====================================================================
factor      values
==========  ====================================================================
shape       0 square, 1 ellipse, 2 triangle, 3 cross, 4 heart (the class label)
scale       uniform in [0.5, 1]: the shape's size relative to the largest
rotation    uniform in [0, 2 pi): counter-clockwise, radians
x, y        the centre, as a fraction of the image width/height from the
            top-left corner, uniform over the positions where the shape fits
==========  ====================================================================

Unlike dSprites the factors are continuous, and edges are anti-aliased: each
pixel's value is the fraction of it the shape covers, estimated on a 4x4 grid
of sub-pixel points (stored as uint8, then scaled to [0, 1] like MNIST).

A shape is defined in its own coordinates ``(u, v)`` within the unit disc, and a
pixel at image position ``p`` is inside when its local coordinates,

.. math:: (u, v) = R(-\\theta)\\,(p - c) / (r_{\\max} s),

satisfy the shape's inequality. Generation is deterministic for a seed and
vectorised over chunks of 100 images (small enough for the sub-pixel arrays to
stay in cache); the 22,000 images take a few seconds, once, and are cached.

What does not live here: caching the generated arrays and the
:class:`~numpyvae.app.data.Dataset` wrapper (:mod:`numpyvae.app.data.datasets`).
"""

from __future__ import annotations

import numpy as np

SHAPE_NAMES = ["square", "ellipse", "triangle", "cross", "heart"]
FACTOR_NAMES = ["shape", "scale", "rotation", "x", "y"]
IMAGE_SIZE = 28
N_TRAIN = 20_000
N_TEST = 2_000
#: The largest shape's radius, in units of half the image width.
MAX_RADIUS = 0.55
#: Sub-pixel samples per pixel along each axis (anti-aliasing).
SUPERSAMPLE = 4
SQRT3 = np.sqrt(3.0)


def _inside(kind: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether local points ``(u, v)`` lie inside shape ``kind``; each shape fits the unit disc."""
    au, av = np.abs(u), np.abs(v)
    if kind == 0:  # square, half-side 0.7 (corners at radius 0.99)
        return np.maximum(au, av) <= 0.7
    if kind == 1:  # ellipse with semi-axes 1 and 0.55
        return u * u + (v / 0.55) ** 2 <= 1.0
    if kind == 2:  # equilateral triangle inscribed in the unit circle, apex up
        return (v >= -0.5) & (v <= 1.0 - SQRT3 * au)
    if kind == 3:  # plus sign: two bars of half-length 0.95 and half-width 0.3
        return ((au <= 0.95) & (av <= 0.3)) | ((au <= 0.3) & (av <= 0.95))
    if kind == 4:  # heart curve (x^2 + y^2 - 1)^3 <= x^2 y^3, shrunk into the unit disc
        x, y = 1.3 * u, 1.3 * v + 0.15
        q = x * x + y * y - 1.0
        return q * q * q <= x * x * y * y * y
    raise ValueError(f"unknown shape {kind}; expected 0..{len(SHAPE_NAMES) - 1}")


def render(shape, scale, rotation, x, y, size=IMAGE_SIZE, supersample=SUPERSAMPLE):
    """Draw one image per row of factors.

    Parameters
    ----------
    shape : int array, shape (N,)
    scale, rotation, x, y : float arrays, shape (N,)
        As in the module docstring (``x``, ``y`` as fractions of the image).

    Returns
    -------
    images : float32, shape (N, size, size), values in [0, 1] (pixel coverage)
    """
    shape = np.asarray(shape)
    n = len(shape)
    S = supersample
    grid = ((np.arange(size * S, dtype=np.float32) + 0.5) / (size * S)) * 2 - 1
    px = grid[None, None, :]            # image x in [-1, 1], left to right
    py = -grid[None, :, None]           # image y in [-1, 1], bottom to top
    cx = (2 * np.asarray(x, np.float32) - 1)[:, None, None]
    cy = (1 - 2 * np.asarray(y, np.float32))[:, None, None]
    c = np.cos(rotation).astype(np.float32)[:, None, None]
    s = np.sin(rotation).astype(np.float32)[:, None, None]
    r = (MAX_RADIUS * np.asarray(scale, np.float32))[:, None, None]
    dx, dy = px - cx, py - cy
    u = (c * dx + s * dy) / r
    v = (c * dy - s * dx) / r
    hit = np.zeros((n, size * S, size * S), dtype=bool)
    for kind in range(len(SHAPE_NAMES)):
        rows = np.flatnonzero(shape == kind)
        if rows.size:
            hit[rows] = _inside(kind, u[rows], v[rows])
    # Coverage = hits among the S x S sub-pixels of each pixel, counted by adding the S rows
    # and then the S columns of each block (fast, and exact in uint8: at most S * S = 16).
    blocks = hit.view(np.uint8).reshape(n, size, S, size, S)
    rows = sum(blocks[:, :, i] for i in range(S))                 # (n, size, size, S)
    counts = sum(rows[..., j] for j in range(S))                  # (n, size, size)
    return counts.astype(np.float32) / np.float32(S * S)


def sample_factors(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Draw ``n`` sets of generating factors (see the module docstring)."""
    shape = rng.integers(0, len(SHAPE_NAMES), size=n)
    scale = rng.uniform(0.5, 1.0, size=n)
    rotation = rng.uniform(0.0, 2 * np.pi, size=n)
    # Keep the whole shape (radius MAX_RADIUS * scale, in half-widths) inside a 0.95 margin.
    reach = (0.95 - MAX_RADIUS * scale) / 2
    x = 0.5 + rng.uniform(-1.0, 1.0, size=n) * reach
    y = 0.5 + rng.uniform(-1.0, 1.0, size=n) * reach
    return {"shape": shape.astype(np.int64), "scale": scale.astype(np.float32),
            "rotation": rotation.astype(np.float32), "x": x.astype(np.float32),
            "y": y.astype(np.float32)}


def generate(n: int, seed: int = 0, chunk: int = 100):
    """``n`` images (uint8, (n, 28, 28)) and their factors, deterministic for ``seed``."""
    rng = np.random.default_rng(seed)
    factors = sample_factors(n, rng)
    images = np.empty((n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for start in range(0, n, chunk):
        sl = slice(start, start + chunk)
        cover = render(*(factors[k][sl] for k in FACTOR_NAMES))
        images[sl] = np.rint(cover * 255).astype(np.uint8)
    return images, factors


def generate_splits(seed: int = 0, n_train: int = N_TRAIN, n_test: int = N_TEST):
    """The training and test splits: independent draws from one seeded stream.

    Returns ``(train_images, train_factors, test_images, test_factors)``.
    """
    seeds = np.random.SeedSequence(seed).spawn(2)
    train = generate(n_train, seeds[0])
    test = generate(n_test, seeds[1])
    return (*train, *test)
