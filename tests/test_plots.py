"""Figures: every function returns a Figure and writes a PNG atomically, headless."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

from numpyvae import VAE, plots

PNG = b"\x89PNG\r\n\x1a\n"


def images(n, seed=0):
    return np.random.default_rng(seed).random((n, 784), dtype=np.float32)


def assert_png(path):
    assert path.read_bytes()[:8] == PNG
    assert path.stat().st_size > 1000
    assert not list(path.parent.glob(".*.tmp"))  # no temporary file left behind


def test_tile_layout():
    grid = plots.tile(np.stack([np.full(4, i / 10) for i in range(5)]), (2, 2), ncol=3, pad=1,
                      pad_value=-1)
    assert grid.shape == (2 * 3 + 1, 3 * 3 + 1)
    assert grid[1, 1] == 0 and grid[1, 4] == pytest.approx(0.1) and grid[4, 4] == pytest.approx(
        0.4)
    assert grid[4, 7] == -1  # the empty sixth cell
    with pytest.raises(ValueError, match=r"expected images of shape \(N, 4\)"):
        plots.tile(np.zeros((2, 5)), (2, 2))


def test_image_grid(tmp_path):
    fig = plots.image_grid(images(12), (28, 28), nrow=5, path=tmp_path / "g" / "grid.png")
    assert isinstance(fig, Figure)
    assert_png(tmp_path / "g" / "grid.png")
    assert plots.image_grid(images(3).reshape(3, 28, 28), (28, 28), 2) is not None


def test_reconstructions(tmp_path):
    x = images(13)
    fig = plots.reconstructions(x, 1 - x, (28, 28), path=tmp_path / "r.png", ncol=5)
    assert_png(tmp_path / "r.png")
    (ax,) = fig.axes
    shown = ax.get_images()[0].get_array()
    # 3 bands of 5 inputs + 3 of reconstructions = 6 rows of 28 pixels with 2-pixel gaps.
    assert shown.shape == (6 * 30 + 2, 5 * 30 + 2)
    np.testing.assert_allclose(shown[2:30, 2:30], x[0].reshape(28, 28), rtol=1e-6)
    np.testing.assert_allclose(shown[32:60, 2:30], 1 - x[0].reshape(28, 28), rtol=1e-6)
    with pytest.raises(ValueError, match="x_rec"):
        plots.reconstructions(x, x[:3])


def test_samples_and_interpolation(tmp_path):
    plots.samples(images(16), path=tmp_path / "s.png")
    assert_png(tmp_path / "s.png")
    fig = plots.interpolation(images(30).reshape(3, 10, 784), path=tmp_path / "i.png")
    assert fig.axes[0].get_images()[0].get_array().shape == (3 * 30 + 2, 10 * 30 + 2)
    assert_png(tmp_path / "i.png")
    plots.interpolation(images(4))  # one strip
    with pytest.raises(ValueError, match="n_strips, steps, pixels"):
        plots.interpolation(np.zeros(5))


def test_pca_2d():
    rng = np.random.default_rng(0)
    t = rng.standard_normal(500)
    direction = np.array([3.0, 0, 4, 0, 0]) / 5
    codes = np.outer(t * 10, direction) + 0.01 * rng.standard_normal((500, 5)) + 7
    projected, ratio = plots.pca_2d(codes)
    assert projected.shape == (500, 2)
    assert ratio[0] > 0.999 and ratio[1] < 1e-3
    assert abs(np.corrcoef(projected[:, 0], t)[0, 1]) > 0.999
    same, _ = plots.pca_2d(codes[:, :2])
    np.testing.assert_array_equal(same, codes[:, :2])


@pytest.mark.parametrize("dim", [1, 2, 5])
def test_latent_scatter(tmp_path, dim):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    codes = rng.standard_normal((300, dim)) + labels[:, None]
    fig = plots.latent_scatter(codes, labels, path=tmp_path / "z.png",
                               label_names=["a", "b", "c"])
    assert_png(tmp_path / "z.png")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b", "c"]
    assert ("PCA" in ax.get_title()) == (dim > 2)
    with pytest.raises(ValueError, match="300 codes but 2 labels"):
        plots.latent_scatter(codes, labels[:2])


def test_manifold(tmp_path):
    model = VAE(784, hidden_dims=(16,), latent_dim=2, backend="numpy")
    fig = plots.manifold(model, (28, 28), n=6, path=tmp_path / "m.png")
    assert fig.axes[0].get_images()[0].get_array().shape == (6 * 29 + 1, 6 * 29 + 1)  # 1-px gaps
    assert_png(tmp_path / "m.png")
    with pytest.raises(ValueError, match="2-D latent space, got latent_dim=3"):
        plots.manifold(VAE(784, hidden_dims=(16,), latent_dim=3, backend="numpy"))


def test_loss_curves(tmp_path):
    metrics = [{"epoch": e, "train_loss": 100 / e, "train_recon": 90 / e, "train_kl": 10.0,
                "test_loss": None if e == 1 else 101 / e, "test_recon": 91 / e,
                "test_kl": 10.0} for e in range(1, 6)]
    fig = plots.loss_curves(metrics, path=tmp_path / "l.png")
    assert_png(tmp_path / "l.png")
    assert len(fig.axes) == 3
    train_line, test_line = fig.axes[0].get_lines()
    np.testing.assert_allclose(train_line.get_ydata(), [100 / e for e in range(1, 6)])
    assert np.isnan(test_line.get_ydata()[0])
    with pytest.raises(ValueError, match="no metrics"):
        plots.loss_curves([])


def test_no_pyplot_figures_are_left_open():
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    plots.image_grid(images(4))
    assert plt.get_fignums() == before
