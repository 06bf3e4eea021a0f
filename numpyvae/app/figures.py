"""The figures of a run: which test images to show, the model run on them, the files written.

======================================  ==========================================
function                                writes
======================================  ==========================================
:func:`write_reconstructions`           test images above their reconstructions
:func:`write_samples`                   decoded draws from the prior
:func:`write_interpolation`             strips between the codes of two test images
:func:`write_transfer`                  a conditional model's "style transfer"
:func:`write_latent_figures`            the KL of each latent dimension; a traversal
:func:`make_figures`                    all of the above that fit the run, the latent
                                        scatter, the manifold and the loss curves
======================================  ==========================================

The pictures themselves are drawn from arrays by :mod:`numpyvae.app.plots`
and :mod:`numpyvae.app.latent_plots`; this module picks the examples (the same
for the same seed), runs the model on them and names the files, by default in
the run folder's ``figures/``.

What does not live here: the jobs of the ``numpyvae`` command that call these
(:mod:`numpyvae.app.run`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .. import latent
from ..model import VAE
from . import latent_plots, plots
from .runfolder import FIGURES_DIR
from .train import STREAM_FIGURES, eval_inputs


def figure_path(run_dir, name, out=None) -> Path:
    """``out`` if given (its suffix checked), else ``run_dir/figures/name``."""
    if out is not None:
        plots.image_format(out)  # refuse an unknown suffix before any work
        return Path(out)
    return Path(run_dir) / FIGURES_DIR / name


def _pick(n_total, n, seed):
    """``n`` sorted rows of ``n_total``, the same for the same ``seed``."""
    rng = np.random.default_rng([int(seed), STREAM_FIGURES])
    return np.sort(rng.choice(n_total, size=min(n, n_total), replace=False))


def is_conditional(model) -> bool:
    """Whether ``model`` takes labels (a :class:`~numpyvae.cvae.CVAE`)."""
    return getattr(model, "num_classes", None) is not None


def labels_at(dataset, rows):
    """The test labels at ``rows``, or None for unlabelled data."""
    return None if dataset.y_test is None else dataset.y_test[rows]


def labels_keyword(model, labels):
    """The labels keyword of a conditional model's calls (nothing for any other model)."""
    return {"labels": np.asarray(labels)} if is_conditional(model) else {}


def write_reconstructions(model, dataset, binarize_mode, path, n=20, seed=0) -> Path:
    """Test images above their reconstructions (the posterior mean, decoded)."""
    idx = _pick(len(dataset.x_test), n, seed)
    x = eval_inputs(dataset.x_test[idx], binarize_mode)
    given = labels_keyword(model, labels_at(dataset, idx))
    x_rec = model.reconstruct(x.astype(model.dtype), **given)
    plots.reconstructions(x, x_rec, dataset.image_shape, path=path)
    return Path(path)


def write_samples(model, image_shape, path, n=100, seed=0, label_names=None,
                  label=None) -> Path:
    """A grid of ``n`` decoded draws from the prior.

    For a conditional model, one row per class (``ceil(n / C)`` draws each, at
    most 12), each row named by its class; or, given ``label`` (a class
    index), ``n`` draws of that one class.
    """
    rng = np.random.default_rng([int(seed), STREAM_FIGURES])
    if is_conditional(model):
        C = model.num_classes
        names = class_names(label_names, C)
        if label is not None:
            images = model.sample(n, labels=np.full(n, int(label)), rng=rng)
            plots.samples(images, image_shape, nrow=math.ceil(math.sqrt(n)), path=path,
                          title=f"decoded draws z ~ N(0, I) of class {names[int(label)]}")
            return Path(path)
        per_class = max(1, min(math.ceil(n / C), 12))
        images = model.sample(C * per_class, labels=np.repeat(np.arange(C), per_class), rng=rng)
        plots.samples(images, image_shape, nrow=per_class, path=path,
                      title="decoded draws z ~ N(0, I), one row per class", row_labels=names)
        return Path(path)
    images = model.sample(n, rng=rng)
    plots.samples(images, image_shape, nrow=math.ceil(math.sqrt(n)), path=path)
    return Path(path)


def class_names(label_names, num_classes) -> list[str]:
    """A name for each of ``num_classes`` classes: the data's own, else the class number."""
    names = list(label_names or [])
    return [names[c] if c < len(names) else str(c) for c in range(int(num_classes))]


def write_transfer(model, dataset, binarize_mode, path, n=8, seed=0) -> Path:
    """A conditional model's "style transfer": each test image (left column) encoded with its
    own label, then decoded as every class (one column per class, named above it)."""
    idx = _pick(len(dataset.x_test), n, seed)
    x = eval_inputs(dataset.x_test[idx], binarize_mode).astype(model.dtype)
    out = model.transfer(x, dataset.y_test[idx])                     # (n, C, D)
    grid = np.concatenate([x.reshape(len(x), 1, -1), out.reshape(len(x), out.shape[1], -1)],
                          axis=1)
    plots.image_grid(grid.reshape(-1, grid.shape[2]), dataset.image_shape, grid.shape[1],
                     path=path, title="style transfer: each test image (left) encoded with its "
                                      "label, decoded as every class",
                     col_labels=["input", *class_names(dataset.label_names, out.shape[1])])
    return Path(path)


def write_interpolation(model, dataset, binarize_mode, path, pairs=8, steps=10, seed=0) -> Path:
    """``pairs`` strips of ``steps`` images between the codes of two test images."""
    idx = _pick(len(dataset.x_test), 2 * pairs, seed)
    if len(idx) < 2:
        raise ValueError(f"an interpolation runs between two test images; the test set of "
                         f"{dataset.name} holds {len(idx)}")
    np.random.default_rng([int(seed), STREAM_FIGURES, 1]).shuffle(idx)
    x = eval_inputs(dataset.x_test[idx], binarize_mode).astype(model.dtype)
    y = labels_at(dataset, idx)
    pairs = len(idx) // 2
    strips = np.stack([
        model.interpolate(x[2 * i], x[2 * i + 1], steps,
                          **labels_keyword(model, None if y is None else y[2 * i:2 * i + 2]))
        for i in range(pairs)])
    ends = x[:2 * pairs].reshape(pairs, 2, -1)
    plots.interpolation(strips, dataset.image_shape, path=path, ends=ends)
    return Path(path)


#: How the factors of ``shapes`` are named on a figure.
_FACTOR_NAMES = {"x": "x position", "y": "y position", "scale": "scale",
                 "rotation": "rotation"}


def latent_codes(model, x, batch_size=1000, labels=None) -> np.ndarray:
    """The deterministic code of each row of ``x`` (the posterior mean for a VAE)."""
    return np.concatenate([
        model.embed(x[i:i + batch_size].astype(model.dtype),
                    **({} if labels is None else {"labels": labels[i:i + batch_size]}))
        for i in range(0, len(x), batch_size)])


def write_latent_figures(model, dataset, binarize_mode, run_dir, seed=0, n_dims=10,
                         steps=11) -> list[Path]:
    """The per-dimension KL bar chart and a traversal of the ``n_dims`` dimensions of most KL."""
    x = eval_inputs(dataset.x_test[:5000], binarize_mode).astype(model.dtype)
    y = dataset.y_test[:5000] if is_conditional(model) else None
    stats = latent.latent_statistics(model, x, labels=y)
    kl_path = figure_path(run_dir, "kl_per_dim.png")
    latent_plots.kl_bars(stats.kl_per_dim, stats.activity, stats.threshold, path=kl_path)
    if not plots.shows_images(dataset.image_shape):  # plain vectors: no picture to traverse
        return [kl_path]
    dims = stats.kl_order()[:n_dims]
    i0 = _pick(len(x), 1, seed)[0]
    images = latent.traversal(model, x[i0], dims, steps=steps,
                              labels=None if y is None else y[i0])
    traversal_path = figure_path(run_dir, "traversal.png")
    latent_plots.traversal(images, dims, stats.kl_per_dim, dataset.image_shape,
                           path=traversal_path)
    return [kl_path, traversal_path]


def make_figures(run_dir, model, dataset, history, binarize_mode="none", seed=0) -> list[Path]:
    """Write every figure of a run into ``run_dir/figures``; return their paths."""
    shape = dataset.image_shape
    images = plots.shows_images(shape)
    paths = []
    if images:  # plain vectors (N, D) have no picture: their figures are left out
        paths += [
            write_reconstructions(model, dataset, binarize_mode,
                                  figure_path(run_dir, "reconstructions.png"), seed=seed),
            write_samples(model, shape, figure_path(run_dir, "samples.png"), seed=seed,
                          label_names=dataset.label_names),
        ]
        if len(dataset.x_test) >= 2:  # a strip runs between two test images
            paths.append(write_interpolation(model, dataset, binarize_mode,
                                             figure_path(run_dir, "interpolation.png"),
                                             seed=seed))
    idx = _pick(len(dataset.x_test), 5000, seed)
    x = eval_inputs(dataset.x_test[idx], binarize_mode)
    path = figure_path(run_dir, "latent_scatter.png")
    labels = None if dataset.y_test is None else dataset.y_test[idx]
    codes = latent_codes(model, x, labels=labels if is_conditional(model) else None)
    factor = None
    if dataset.factors_test:  # shapes: also colour by the factor the codes separate best
        continuous = {_FACTOR_NAMES.get(k, k): np.asarray(v)[idx]
                      for k, v in dataset.factors_test.items() if k != "shape"}
        factor = plots.best_factor(codes, continuous) if continuous else None
    plots.latent_scatter(codes, labels, path=path, label_names=dataset.label_names,
                         factor=factor)
    paths.append(path)
    if is_conditional(model) and images:
        paths.append(write_transfer(model, dataset, binarize_mode,
                                    figure_path(run_dir, "transfer.png"), seed=seed))
    if model.latent_dim == 2 and images:
        path = figure_path(run_dir, "manifold.png")
        given = {}
        if is_conditional(model):  # the decoder's grid for one class: the first
            name = (dataset.label_names or ["0"])[0]
            given = {"labels": 0, "title": f"the decoder over a grid of the 2-D latent space "
                                           f"(N(0, I) quantiles), as class {name}"}
        plots.manifold(model, shape, n=20, path=path, **given)
        paths.append(path)
    if isinstance(model, VAE) and len(dataset.x_test) >= 2:  # active units need two codes
        paths += write_latent_figures(model, dataset, binarize_mode, run_dir, seed)
    if history:
        path = figure_path(run_dir, "loss_curves.png")
        plots.loss_curves(history, path=path)
        paths.append(path)
    return paths


__all__ = ["figure_path", "is_conditional", "labels_keyword", "latent_codes", "make_figures",
           "labels_at", "write_interpolation", "write_latent_figures", "write_reconstructions",
           "write_samples", "write_transfer", "class_names"]
