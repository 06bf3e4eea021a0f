"""Figures that read well: distinct class colours, a legible legend, no class painted over the
rest, a second colouring by the factor the codes separate, a labelled manifold grid with gaps,
labelled loss axes, and interpolation rows that show their real inputs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from matplotlib.colors import to_rgb

from numpyvae import VAE, plots


def min_distance(colours):
    rgb = np.array([to_rgb(c) for c in colours])
    return min(np.linalg.norm(a - b) for a, b in itertools.combinations(rgb, 2))


@pytest.mark.parametrize("n, apart", [(2, 1.0), (5, 0.39), (10, 0.26), (12, 0.26), (20, 0.09)])
def test_class_colours_stay_apart(n, apart):
    colours = plots.class_colours(n)
    assert len(colours) == n and len(set(colours)) == n
    assert min_distance(colours) > apart


def test_five_classes_are_further_apart_than_a_resampled_colormap():
    from matplotlib import colormaps

    # tab10 resampled to 5 entries gave brown (0.55, 0.34, 0.29) and grey (0.50, 0.50, 0.50)
    # to triangle and cross, 0.26 apart in RGB; the palette's first five are 0.39 apart.
    resampled = colormaps["tab10"].resampled(5)
    old = [resampled(i) for i in range(5)]
    assert min_distance(old) < 0.27 < 0.39 < min_distance(plots.class_colours(5))


def test_five_classes_use_the_first_five_palette_colours():
    from matplotlib import colormaps

    assert plots.class_colours(5) == list(colormaps["tab10"].colors[:5])


def scatter_data(n=600, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), n // classes)
    codes = rng.normal(size=(len(labels), 2)) + labels[:, None]
    return codes, labels


def test_no_class_is_painted_over_the_others():
    codes, labels = scatter_data()
    fig = plots.latent_scatter(codes, labels, label_names=list("abcde"))
    (dots,) = fig.axes[0].collections
    # The points are drawn in a shuffled order: the last fifth drawn holds every class.
    drawn = dots.get_offsets()
    last = drawn[-len(drawn) // 5:]
    lookup = {tuple(np.round(p, 9)): lab for p, lab in zip(codes, labels, strict=True)}
    assert {lookup[tuple(np.round(p, 9))] for p in np.asarray(last)} == set(range(5))
    # Each point keeps its class colour.
    colours = np.array(plots.class_colours(5))
    faces = dots.get_facecolors()[:, :3]
    for p, face in zip(np.asarray(drawn)[:50], faces[:50], strict=True):
        np.testing.assert_allclose(face, colours[lookup[tuple(np.round(p, 9))]])


def test_legend_is_legible_and_outside_the_points():
    codes, labels = scatter_data()
    fig = plots.latent_scatter(codes, labels, label_names=["square", "ellipse", "triangle",
                                                           "cross", "heart"])
    legend = fig.axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["square", "ellipse", "triangle",
                                                          "cross", "heart"]
    assert all(t.get_fontsize() >= 9 for t in legend.get_texts())
    handles = legend.legend_handles
    assert all(h.get_alpha() in (None, 1) and h.get_markersize() >= 6 for h in handles)
    fig.canvas.draw() if hasattr(fig.canvas, "draw") else None
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig).draw()
    box = legend.get_window_extent()
    axes_box = fig.axes[0].get_window_extent()
    assert box.x0 >= axes_box.x1 - 1  # beside the axes, covering no point


def test_second_panel_colours_by_the_factor_the_codes_separate():
    rng = np.random.default_rng(1)
    n = 500
    factors = {"x position": rng.random(n), "scale": rng.random(n), "rotation": rng.random(n)}
    codes = np.column_stack([3 * factors["x position"], rng.normal(size=n),
                             rng.normal(size=n) * 0.1])
    name, values = plots.best_factor(codes, factors)
    assert name == "x position" and values is not None
    assert plots.linear_r2(codes[:, :2], factors["x position"]) > 0.99
    assert plots.linear_r2(codes[:, :2], factors["scale"]) < 0.05
    fig = plots.latent_scatter(codes, rng.integers(0, 5, n), factor=(name, values))
    titles = [ax.get_title() for ax in fig.axes]
    assert any("coloured by x position (R² = 1.00" in t for t in titles), titles
    assert any(ax.get_ylabel() == "x position" for ax in fig.axes)  # the colour bar


def test_unlabelled_codes_have_no_legend():
    fig = plots.latent_scatter(np.zeros((10, 2)), None)
    assert fig.axes[0].get_legend() is None


class Tiles:
    """A 2-D 'model' whose decoded image is a flat tile of brightness (z[0] + 3) / 6."""

    latent_dim = 2
    dtype = np.float64

    def decode(self, z):
        return np.repeat(((z[:, :1] + 3) / 6).clip(0, 1), 16, axis=1)


def test_manifold_has_gaps_and_z_values_on_its_axes():
    fig = plots.manifold(Tiles(), (4, 4), n=5)
    ax = fig.axes[0]
    grid = ax.get_images()[0].get_array()
    assert grid.shape == (5 * 5 + 1, 5 * 5 + 1)  # 4-pixel tiles, 1-pixel gaps
    assert np.all(grid[0] == 0.3) and np.all(grid[:, 5] == 0.3)  # the gap lines
    np.testing.assert_allclose(grid[1:5, 1:5], grid[1, 1])  # a tile is one tile
    from statistics import NormalDist

    q = [NormalDist().inv_cdf(p) for p in np.linspace(0.1, 0.9, 5)]
    assert [t.get_text() for t in ax.get_xticklabels()] == [f"{v:.2f}" for v in q]
    assert [t.get_text() for t in ax.get_yticklabels()] == [f"{v:.2f}" for v in q[::-1]]
    assert ax.get_xlabel() == "z[0]" and ax.get_ylabel() == "z[1]"
    # The tile under the tick labelled q[i] was decoded at z[0] = q[i].
    for i, tick in enumerate(ax.get_xticks()):
        assert grid[2, int(tick)] == pytest.approx((q[i] + 3) / 6)


def test_manifold_of_a_real_model_labels_every_other_tick_for_twenty():
    model = VAE(16, hidden_dims=(4,), latent_dim=2, backend="numpy")
    ax = plots.manifold(model, (4, 4), n=20).axes[0]
    assert len(ax.get_xticks()) == 10


def test_loss_curves_label_their_y_axes():
    metrics = [{"epoch": e, "train_loss": 10 / e, "train_recon": 9 / e, "train_kl": 1.0,
                "test_loss": 11 / e, "test_recon": 10 / e, "test_kl": 1.0} for e in (1, 2)]
    fig = plots.loss_curves(metrics)
    assert [ax.get_ylabel() for ax in fig.axes] == [
        "-ELBO (nats per example)", "-log p(x|z) (nats per example)", "KL (nats per example)"]
    ae = [{**m, "train_kl": None, "test_kl": None} for m in metrics]
    fig = plots.loss_curves(ae)
    assert len(fig.axes) == 1
    assert fig.axes[0].get_ylabel() == "reconstruction loss (nats per example)"
    assert "ELBO" not in fig.axes[0].get_title() and "no ELBO" in fig._suptitle.get_text()


def test_interpolation_rows_show_the_real_inputs_at_both_ends():
    strips = np.full((2, 3, 4), 0.5)
    ends = np.stack([np.stack([np.zeros(4), np.ones(4)])] * 2)   # (2 rows, 2 ends, 4 pixels)
    fig = plots.interpolation(strips, (2, 2), ends=ends)
    grid = fig.axes[0].get_images()[0].get_array()
    assert grid.shape == (2 * 4 + 2, 5 * 4 + 2)  # 3 decoded + 2 inputs per row
    np.testing.assert_array_equal(grid[2:4, 2:4], 0)       # input A, first row
    np.testing.assert_array_equal(grid[2:4, 18:20], 1)     # input B, first row
    np.testing.assert_array_equal(grid[2:4, 6:8], 0.5)     # the decoded path between
    assert len(fig.axes[0].lines) == 2                     # a line apart from each input
    with pytest.raises(ValueError, match="ends of shape"):
        plots.interpolation(strips, (2, 2), ends=ends[:1])


def test_colour_images_are_drawn_in_colour():
    red = np.zeros((3, 3, 2, 2))
    red[:, 0] = 1.0
    grid = plots.tile(red.reshape(3, -1), (3, 2, 2), ncol=3)
    assert grid.shape == (6, 14, 3)  # 2-pixel gaps around 2x2 tiles
    np.testing.assert_array_equal(grid[2:4, 2:4], [[[1, 0, 0]] * 2] * 2)
    assert not plots.shows_images((7,)) and plots.shows_images((3, 5, 5))
