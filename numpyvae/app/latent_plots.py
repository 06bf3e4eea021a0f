"""Figures of what the latent space learned: traversals and the per-dimension KL.

==============================  =================================================
function                        shows
==============================  =================================================
:func:`traversal`               one image's code with one dimension swept per row
:func:`kl_bars`                 each latent dimension's KL, largest first
:func:`metric_vs`               one or more metrics against a swept setting (β)
==============================  =================================================

Like :mod:`numpyvae.app.plots` (whose :func:`~numpyvae.app.plots.tile` and
:func:`~numpyvae.app.plots.save` these reuse), every function draws from arrays,
returns a :class:`matplotlib.figure.Figure` and, given ``path``, writes a PNG
atomically.

What does not live here: computing the traversal and the statistics
(:mod:`numpyvae.latent`).
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from . import plots


def _finish(fig, path):
    if path is not None:
        plots.save(fig, path)
    return fig


def traversal(images, dims, kl=None, image_shape=(28, 28), span=3.0, path=None,
              title=None) -> Figure:
    """Rows of decoded images, one per swept latent dimension.

    Parameters
    ----------
    images : ndarray, shape (n_dims, steps, H*W)
        As :func:`numpyvae.latent.traversal` returns.
    dims : sequence of int
        The dimension of each row, for the row labels.
    kl : ndarray, shape (L,), optional
        Per-dimension KL; each row's label shows its dimension's value.
    """
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[0] != len(dims):
        raise ValueError(f"traversal: expected images (len(dims)={len(dims)}, steps, pixels), "
                         f"got {images.shape}")
    n, steps = images.shape[:2]
    grid = plots.tile(images.reshape(n * steps, -1), image_shape, steps)
    h, w = grid.shape[:2]  # a colour grid has a third axis
    ih, iw = image_shape[-2:]
    scale = 0.03
    fig = Figure(figsize=(w * scale + 1.3, h * scale + 0.5))
    ax = fig.add_axes((1.3 / fig.get_figwidth(), 0, 1 - 1.3 / fig.get_figwidth(),
                       1 - 0.5 / fig.get_figheight()))
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    cell = ih + 2
    ax.set_yticks([2 + ih / 2 + i * cell for i in range(n)])
    ax.set_yticklabels([f"z[{d}]" + ("" if kl is None else f"  KL {kl[d]:.2f}")
                        for d in dims], fontsize=8)
    ax.set_xticks([2 + iw / 2, w - 2 - iw / 2])
    ax.set_xticklabels([f"{-span:g}", f"{span:g}"], fontsize=8)
    for side in ("top", "right", "bottom", "left"):
        ax.spines[side].set_visible(False)
    fig.suptitle(title or f"latent traversal: one dimension per row swept over "
                          f"[{-span:g}, {span:g}], the others at a test image's posterior mean",
                 fontsize=9, y=0.995, va="top")
    return _finish(fig, path)


def kl_bars(kl_per_dim, activity=None, threshold=0.01, path=None, title=None) -> Figure:
    """Each latent dimension's mean KL (nats), sorted largest first.

    With ``activity`` (the variance of the posterior mean), inactive
    dimensions (``activity <= threshold``) are drawn in grey.
    """
    kl = np.asarray(kl_per_dim, dtype=np.float64)
    if kl.ndim != 1 or kl.size == 0:
        raise ValueError(f"kl_bars: expected a non-empty vector of KLs, got shape {kl.shape}")
    order = np.argsort(-kl, kind="stable")
    fig = Figure(figsize=(max(4.0, 0.32 * kl.size + 1.5), 3.2))
    ax = fig.add_subplot(1, 1, 1)
    colors = ["tab:blue"] * kl.size
    if activity is not None:
        activity = np.asarray(activity)
        colors = ["tab:blue" if activity[d] > threshold else "0.7" for d in order]
    ax.bar(np.arange(kl.size), kl[order], color=colors)
    ax.set_xticks(np.arange(kl.size))
    ax.set_xticklabels([str(d) for d in order], fontsize=7)
    ax.set_xlabel("latent dimension (sorted by KL)")
    ax.set_ylabel("KL (nats)")
    ax.grid(axis="y", alpha=0.3)
    if title is None:
        title = f"KL per latent dimension (total {kl.sum():.2f} nats)"
        if activity is not None:
            title += (f"\n{int(np.sum(activity > threshold))} of {kl.size} units active "
                      f"(grey: inactive, Var(mu) <= {threshold:g})")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _finish(fig, path)


def metric_vs(values, metrics: dict, xlabel="beta", path=None, title=None, logx=True) -> Figure:
    """One panel per metric (name -> list of values) against ``values`` (e.g. the β of a sweep)."""
    if not metrics:
        raise ValueError("metric_vs: no metrics to plot")
    fig = Figure(figsize=(3.4 * len(metrics), 3.0))
    for i, (name, ys) in enumerate(metrics.items()):
        ax = fig.add_subplot(1, len(metrics), i + 1)
        ax.plot(values, ys, "-o", markersize=4)
        if logx:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _finish(fig, path)
