"""Every figure numpyvae draws, from arrays (and, for the manifold, a model).

Each function returns a :class:`matplotlib.figure.Figure` and, given ``path``,
also writes it atomically (:func:`save`): PNG, JPEG, PDF or SVG by the suffix. Figures are built on
``Figure`` directly rather than through ``pyplot``: no window, no global
figure list, the Agg renderer for files, so they work headless and in
notebooks alike (a returned figure displays itself in Jupyter).

==============================  =================================================
function                        shows
==============================  =================================================
:func:`image_grid`              any batch of images as one grid
:func:`reconstructions`         inputs above their reconstructions
:func:`samples`                 decoded draws from the prior, as a grid
:func:`interpolation`           rows of images decoded along lines in latent space
:func:`latent_scatter`          latent codes coloured by label (PCA to 2-D if needed)
:func:`manifold`                the decoder over a grid of a 2-D latent space
:func:`loss_curves`             the per-epoch metrics of a run
==============================  =================================================

Images are rows of a ``(N, H*W)`` array (or ``(N, H, W)``) with values in
[0, 1], shown white on black.

What does not live here: choosing which images to show, running the model on
them and naming the files of a run (:mod:`numpyvae.app.figures`).
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from statistics import NormalDist

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..fileio import atomic_write

DPI = 100


#: File types a figure can be written as, by suffix (JPEG through Pillow).
FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".pdf": "pdf", ".svg": "svg"}


def image_format(path) -> str:
    """The file type ``path``'s suffix asks for; ValueError for any other suffix."""
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: cannot write a {path.suffix or 'suffix-less'} file; name it "
                         f"with one of {', '.join(FORMATS)}")
    return fmt


def save(fig: Figure, path) -> Path:
    """Write ``fig`` to ``path``, atomically, in the format its suffix names (:data:`FORMATS`)."""
    fmt = image_format(path)
    # JPEG has no transparency: the white figure background is flattened onto white.
    options = {"pil_kwargs": {"quality": 95}} if fmt == "jpeg" else {}
    return atomic_write(Path(path), lambda f: fig.savefig(f, format=fmt, dpi=DPI, **options))


def _finish(fig, path):
    if path is not None:
        save(fig, path)
    return fig


def shows_images(image_shape) -> bool:
    """Whether examples of this shape can be drawn: gray ``(H, W)`` or colour ``(3, H, W)``."""
    shape = tuple(image_shape)
    return len(shape) == 2 or (len(shape) == 3 and shape[0] in (1, 3))


def _as_images(images, image_shape) -> np.ndarray:
    """Rows (or image-shaped arrays) to ``(N, H, W)``, or ``(N, H, W, 3)`` for colour."""
    images = np.asarray(images, dtype=np.float64)
    shape = tuple(int(d) for d in image_shape)
    if not shows_images(shape):
        raise ValueError(f"expected an image shape (H, W) or (3, H, W), got {shape}")
    size = math.prod(shape)
    if images.ndim == 1 or images.shape == shape:
        images = images.reshape(1, -1)
    if images.shape[1:] != shape:
        if images.ndim != 2 or images.shape[1] != size:
            raise ValueError(f"expected images of shape (N, {size}) or (N, "
                             f"{', '.join(map(str, shape))}), got {images.shape}")
    images = images.reshape(-1, *shape)
    if len(shape) == 3:  # channels first -> last, as imshow wants; one channel is gray
        images = images[:, 0] if shape[0] == 1 else images.transpose(0, 2, 3, 1)
    return np.clip(images, 0.0, 1.0)


def tile(images, image_shape=(28, 28), ncol=10, pad=2, pad_value=0.5) -> np.ndarray:
    """Arrange images in a grid of ``ncol`` columns, separated by ``pad`` pixels.

    Returns one 2-D array (gray) or ``(rows, cols, 3)`` (colour); empty
    cells of the last row are ``pad_value``.
    """
    return _tile(_as_images(images, image_shape), ncol, pad, pad_value)


def _tile(images, ncol, pad, pad_value):
    """``tile`` of images already in ``(N, H, W)`` or ``(N, H, W, 3)`` form."""
    n, (h, w) = len(images), images.shape[1:3]
    ncol = max(1, min(int(ncol), n))
    nrow = math.ceil(n / ncol)
    out = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, *images.shape[3:]),
                  float(pad_value))
    for i, img in enumerate(images):
        r, c = divmod(i, ncol)
        top, left = pad + r * (h + pad), pad + c * (w + pad)
        out[top:top + h, left:left + w] = img
    return out


#: Inches per character of a 10-point label or title (DejaVu Sans averages about 0.6 em).
_CHAR_INCHES = 0.6 * 10 / 72
#: Inches per line of 10-point text.
_LINE_INCHES = 0.2


def _wrap(text, width_inches) -> list[str]:
    """``text`` cut into lines that fit ``width_inches`` at 10 points (existing breaks kept)."""
    chars = max(10, int(width_inches / _CHAR_INCHES))
    return [line for part in str(text).split("\n")
            for line in (textwrap.wrap(part, chars) or [""])]


def _grid_figure(grid, title=None, scale=0.03, row_labels=None, col_labels=None, cell=None):
    """A figure of one tiled image, with an optional title, row labels and column labels.

    ``cell`` is ``(height, width, pad)`` of the tiled images, in pixels, which
    places the labels: one per row at the left, one per column above. The
    title wraps to the figure's width, so no text is cut off at the edges.
    """
    h, w = grid.shape[:2]
    left = 0.0
    if row_labels is not None:
        left = 0.15 + _CHAR_INCHES * max((len(str(t)) for t in row_labels), default=0)
    top_labels = _LINE_INCHES + 0.05 if col_labels is not None else 0.0
    width = max(2.0, w * scale) + left
    lines = _wrap(title, width - 0.2) if title else []
    head = (_LINE_INCHES * len(lines) + 0.15 if lines else 0.0) + top_labels
    height = max(2.0, h * scale) + head
    fig = Figure(figsize=(width, height))
    ax = fig.add_axes((left / width, 0, 1 - left / width, 1 - head / height))
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    if lines:
        fig.suptitle("\n".join(lines), fontsize=10, y=1 - 0.05 / height, va="top")
    if cell is not None:
        ch, cw, pad = cell
        for i, text in enumerate(row_labels or ()):
            ax.text(-pad, pad + i * (ch + pad) + ch / 2 - 0.5, str(text), ha="right",
                    va="center", fontsize=10, clip_on=False)
        for j, text in enumerate(col_labels or ()):
            ax.text(pad + j * (cw + pad) + cw / 2 - 0.5, -pad, str(text), ha="center",
                    va="bottom", fontsize=9, clip_on=False)
    return fig


def image_grid(images, image_shape=(28, 28), nrow=10, path=None, title=None, row_labels=None,
               col_labels=None) -> Figure:
    """A grid of images, ``nrow`` images per row (as ``torchvision.utils.make_grid``).

    ``row_labels`` names each row at its left (say, a class per row) and
    ``col_labels`` each column above it.
    """
    images = _as_images(images, image_shape)
    cell = (images.shape[1], images.shape[2], 2)
    return _finish(_grid_figure(_tile(images, nrow, 2, 0.5), title, row_labels=row_labels,
                                col_labels=col_labels, cell=cell), path)


def reconstructions(x, x_rec, image_shape=(28, 28), path=None, ncol=10,
                    title="test images (odd rows) above their reconstructions (even rows)"
                    ) -> Figure:
    """Inputs above their reconstructions: rows alternate input, reconstruction.

    ``x`` and ``x_rec`` hold the same number of images; each band of
    ``ncol`` inputs is followed by the band of their reconstructions.
    """
    x, x_rec = _as_images(x, image_shape), _as_images(x_rec, image_shape)
    if x.shape != x_rec.shape:
        raise ValueError(f"reconstructions: x has shape {x.shape}, x_rec {x_rec.shape}")
    ncol = max(1, min(int(ncol), len(x)))
    rows = []
    for start in range(0, len(x), ncol):
        band = slice(start, start + ncol)
        pad = ncol - len(x[band])
        blank = np.full((pad, *x.shape[1:]), 0.5)
        rows += [np.concatenate([x[band], blank]), np.concatenate([x_rec[band], blank])]
    return _finish(_grid_figure(_tile(np.concatenate(rows), ncol, 2, 0.5), title), path)


def samples(images, image_shape=(28, 28), nrow=10, path=None,
            title="decoded samples from the prior N(0, I)", row_labels=None) -> Figure:
    """A grid of images decoded from draws ``z ~ N(0, I)`` (``model.sample(n)``).

    ``row_labels``: a name for each row, as a conditional model's class per row.
    """
    return image_grid(images, image_shape, nrow, path, title, row_labels=row_labels)


def interpolation(strips, image_shape=(28, 28), path=None, ends=None,
                  title="decoded along straight lines between the codes of two test images"
                  ) -> Figure:
    """One row per strip: ``strips`` has shape (n_strips, steps, H*W) (or (steps, H*W)).

    ``ends``, shape (n_strips, 2, H*W), are the two real inputs of each row:
    drawn at both ends, apart from the decoded path, so the path can be
    compared with what it joins.
    """
    strips = np.asarray(strips)
    if strips.ndim == 2:
        strips = strips[None]
    if strips.ndim != 3:
        raise ValueError(f"interpolation: expected (n_strips, steps, pixels), got {strips.shape}")
    n, steps = strips.shape[:2]
    if ends is None:
        return _finish(_grid_figure(tile(strips.reshape(-1, strips.shape[2]), image_shape,
                                         steps), title), path)
    ends = np.asarray(ends)
    if ends.ndim == 2:
        ends = ends[None]
    if ends.shape != (n, 2, strips.shape[2]):
        raise ValueError(f"interpolation: expected ends of shape ({n}, 2, {strips.shape[2]}), "
                         f"got {ends.shape}")
    rows = np.concatenate([ends[:, :1], strips, ends[:, 1:]], axis=1)   # (n, steps + 2, D)
    grid = tile(rows.reshape(-1, rows.shape[2]), image_shape, steps + 2)
    fig = _grid_figure(grid, title + "\n(outer columns: the two real inputs)")
    ax = fig.axes[0]
    w, pad = _as_images(rows[0, :1], image_shape).shape[2], 2
    for col in (1, steps + 1):  # a line between each input and the decoded path
        ax.axvline(col * (w + pad) + pad / 2 - 0.5, color="tab:orange", linewidth=1.5)
    return _finish(fig, path)


def pca_2d(codes):
    """Project ``codes`` (N, D) onto their first two principal components.

    Returns ``(projected (N, 2), explained_variance_ratio (2,))``; codes of
    one or two dimensions are returned as they are (ratio 1 per axis).
    """
    codes = np.asarray(codes, dtype=np.float64)
    if codes.ndim != 2:
        raise ValueError(f"expected codes of shape (N, D), got {codes.shape}")
    if codes.shape[1] <= 2:
        return codes, np.ones(codes.shape[1])
    centred = codes - codes.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    var = s ** 2
    return centred @ vt[:2].T, var[:2] / max(var.sum(), 1e-300)


def class_colours(n) -> list:
    """``n`` colours that stay apart: tab10's own colours, then tab20's, then hues.

    A colormap resampled to ``n`` entries picks colours from across its
    range, and for tab10 that can put near-identical grey and brown side by
    side; taking the palettes' colours in order does not.
    """
    from matplotlib import colormaps

    if n <= 10:
        return list(colormaps["tab10"].colors[:n])
    if n <= 20:
        tab20 = colormaps["tab20"].colors
        return list(tab20[0::2] + tab20[1::2])[:n]  # the ten strong colours first
    return [colormaps["hsv"](i / n) for i in range(n)]


def latent_scatter(codes, labels, path=None, label_names=None,
                   title="latent means of the test set", factor=None) -> Figure:
    """The codes of a data set as points coloured by label (and, optionally, by a factor).

    Codes of more than two dimensions are projected onto their first two
    principal components; one-dimensional codes are plotted against the label.
    Points are drawn in a random order, so no class is painted over the
    others. ``factor``, a pair ``(name, values)`` of a continuous property of
    each example (such as the x position of a sprite), adds a second panel
    coloured by it; :func:`best_factor` picks the one the plot separates best.
    """
    codes = np.asarray(codes, dtype=np.float64)
    if codes.ndim == 1:
        codes = codes[:, None]
    unlabelled = labels is None
    labels = np.zeros(len(codes), dtype=int) if unlabelled else np.asarray(labels)
    if len(labels) != len(codes):
        raise ValueError(f"latent_scatter: {len(codes)} codes but {len(labels)} labels")
    points, ratio = pca_2d(codes)
    classes, index = np.unique(labels, return_inverse=True)
    if points.shape[1] == 1:
        points = np.column_stack([points[:, 0], index.astype(float)])
    order = np.random.default_rng(0).permutation(len(points))
    panels = 1 if factor is None else 2
    fig = Figure(figsize=(6.8 * panels, 5.2))
    ax = fig.add_subplot(1, panels, 1)
    colours = np.array(class_colours(len(classes)))
    ax.scatter(points[order, 0], points[order, 1], s=5, alpha=0.6, c=colours[index[order]],
               linewidths=0, rasterized=True)
    _label_axes(ax, codes.shape[1], ratio)
    dims = f" ({codes.shape[1]}-D, PCA projection)" if codes.shape[1] > 2 else ""
    ax.set_title(title + dims + ("" if unlabelled else ", coloured by class"), fontsize=10)
    if not unlabelled:
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], linestyle="", marker="o", markersize=7, color=colours[i],
                          label=_class_name(c, label_names)) for i, c in enumerate(classes)]
        ax.legend(handles=handles, fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  borderaxespad=0, frameon=False, title="class", title_fontsize=9)
    if factor is not None:
        name, values = factor
        values = np.asarray(values, dtype=np.float64)
        if len(values) != len(codes):
            raise ValueError(f"latent_scatter: {len(codes)} codes but {len(values)} values "
                             f"of {name}")
        ax2 = fig.add_subplot(1, panels, 2)
        dots = ax2.scatter(points[order, 0], points[order, 1], s=5, alpha=0.8,
                           c=values[order], cmap="viridis", linewidths=0, rasterized=True)
        fig.colorbar(dots, ax=ax2, label=name)
        _label_axes(ax2, codes.shape[1], ratio)
        ax2.set_title(f"the same codes, coloured by {name} (R² = "
                      f"{linear_r2(points, values):.2f} from these two axes)", fontsize=10)
    fig.tight_layout()
    return _finish(fig, path)


def _class_name(c, label_names):
    if label_names is not None and 0 <= int(c) < len(label_names):
        return label_names[int(c)]
    return str(c)


def _label_axes(ax, dims, ratio):
    if dims > 2:
        ax.set_xlabel(f"PC 1 ({100 * ratio[0]:.0f}% of variance)")
        ax.set_ylabel(f"PC 2 ({100 * ratio[1]:.0f}% of variance)")
    elif dims == 2:
        ax.set_xlabel("z[0]")
        ax.set_ylabel("z[1]")
    else:
        ax.set_xlabel("z[0]")
        ax.set_ylabel("class")


def linear_r2(points, values) -> float:
    """R² of the least-squares fit ``values ~ a + b·points``: how well the plot predicts them."""
    points = np.asarray(points, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    design = np.column_stack([np.ones(len(points)), points])
    coef, *_ = np.linalg.lstsq(design, values, rcond=None)
    total = np.sum((values - values.mean()) ** 2)
    return float(1 - np.sum((values - design @ coef) ** 2) / total) if total > 0 else 0.0


def best_factor(codes, factors: dict):
    """The ``(name, values)`` of the factor the plotted 2-D view of ``codes`` predicts best.

    ``factors`` maps a name to one value per example; each is scored by
    :func:`linear_r2` on the points :func:`latent_scatter` draws.
    """
    points = pca_2d(np.asarray(codes, dtype=np.float64).reshape(len(codes), -1))[0]
    scores = {name: linear_r2(points, v) for name, v in factors.items()}
    name = max(scores, key=scores.get)
    return name, np.asarray(factors[name])


def manifold(model, image_shape=(28, 28), n=20, path=None, title=None, labels=None) -> Figure:
    """The decoder's mean image over an ``n`` x ``n`` grid of a 2-D latent space.

    The grid points are the standard normal's quantiles at evenly spaced
    probabilities (Kingma & Welling, 2014, figure 4), so equal areas of the
    prior get equal room. ``z[0]`` grows from left to right and ``z[1]`` from
    bottom to top, as on a plot, and the axes are labelled with the values of
    ``z`` at the tiles' centres; a thin grey gap separates the tiles.
    ``labels``: for a conditional model, the class (an int) every tile is
    decoded as.
    """
    if getattr(model, "latent_dim", None) != 2:
        raise ValueError(f"manifold needs a model with a 2-D latent space, got latent_dim="
                         f"{getattr(model, 'latent_dim', None)}")
    n = int(n)
    if n < 2:
        raise ValueError(f"manifold: n must be at least 2, got {n}")
    q = np.array([NormalDist().inv_cdf(p) for p in np.linspace(0.5 / n, 1 - 0.5 / n, n)])
    zx, zy = np.meshgrid(q, q[::-1])  # z[1] grows upwards, as on a plot
    z = np.stack([zx.ravel(), zy.ravel()], axis=1)
    images = model.decode(z.astype(model.dtype),
                          **({} if labels is None else {"labels": labels}))
    title = title or "the decoder over a grid of the 2-D latent space (N(0, I) quantiles)"
    pad = 1
    grid = tile(images, image_shape, n, pad=pad, pad_value=0.3)   # a thin grey gap
    h, w = _as_images(images[:1], image_shape).shape[1:3]
    fig = Figure(figsize=(max(4.0, grid.shape[1] * 0.016 + 1.2),
                          max(4.0, grid.shape[0] * 0.016 + 1.0)))
    ax = fig.add_subplot()
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    every = 1 if n <= 10 else 2 if n <= 20 else max(1, n // 8)
    cols = np.arange(0, n, every)
    ax.set_xticks(pad + cols * (w + pad) + (w - 1) / 2, [f"{q[i]:.2f}" for i in cols],
                  rotation=90, fontsize=7)
    ax.set_yticks(pad + cols * (h + pad) + (h - 1) / 2, [f"{q[::-1][i]:.2f}" for i in cols],
                  fontsize=7)
    ax.set_xlabel("z[0]")
    ax.set_ylabel("z[1]")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _finish(fig, path)


def loss_curves(metrics, path=None, title=None) -> Figure:
    """Train and test curves of the negative ELBO, the reconstruction term and the KL.

    ``metrics`` is a list of per-epoch dicts as :func:`numpyvae.app.train.fit`
    returns (keys ``epoch``, ``train_loss``, ``test_loss``, ``train_recon``, ...).
    A plain autoencoder's metrics (``train_kl`` None) give one panel, its
    reconstruction loss: it has no ELBO and no KL.
    """
    metrics = list(metrics)
    if not metrics:
        raise ValueError("loss_curves: no metrics to plot")
    epochs = [m["epoch"] for m in metrics]
    has_kl = any(m.get("train_kl") is not None or m.get("test_kl") is not None for m in metrics)
    if has_kl:
        parts = [("loss", "-ELBO = recon + KL", "-ELBO (nats per example)"),
                 ("recon", "reconstruction -log p(x|z)", "-log p(x|z) (nats per example)"),
                 ("kl", "KL(q(z|x) || p(z))", "KL (nats per example)")]
        title = title or "loss per epoch (nats per example)"
    else:
        parts = [("recon", "reconstruction loss -log p(x|z)",
                  "reconstruction loss (nats per example)")]
        title = title or "autoencoder: reconstruction loss per epoch (it has no ELBO or KL)"
    fig = Figure(figsize=(11 if has_kl else 5.5, 3.6))
    for i, (key, label, ylabel) in enumerate(parts):
        ax = fig.add_subplot(1, len(parts), i + 1)
        for split, style in (("train", "-o"), ("test", "-s")):
            values = [m.get(f"{split}_{key}") for m in metrics]
            if any(v is not None for v in values):
                ax.plot(epochs, [np.nan if v is None else v for v in values], style,
                        markersize=3, label=split)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _finish(fig, path)
