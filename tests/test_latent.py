"""What the latent space learned: per-dimension KL, active units, MIG on known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from numpyvae import VAE, latent
from numpyvae import ops as reference


def factors(n=4000, seed=0):
    """Five independent factors like the shapes data set's: one discrete, four continuous."""
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.integers(0, 5, n), rng.uniform(0.5, 1, n),
                            rng.uniform(0, 2 * np.pi, n), rng.uniform(0, 1, n),
                            rng.uniform(0, 1, n)])


# --------------------------------------------------------------------------
# Per-dimension KL and active units
# --------------------------------------------------------------------------


def test_kl_per_dimension_matches_the_closed_form():
    rng = np.random.default_rng(1)
    mu, logvar = rng.standard_normal((50, 4)), rng.uniform(-2, 1, (50, 4))
    per_dim = latent.kl_per_dimension(mu, logvar)
    np.testing.assert_allclose(per_dim, reference.kl_per_dimension(mu, logvar), rtol=1e-12)
    np.testing.assert_allclose(per_dim.sum(), reference.gaussian_kl(mu, logvar).mean(),
                               rtol=1e-12)
    assert latent.kl_per_dimension(np.zeros((3, 2)), np.zeros((3, 2))).tolist() == [0.0, 0.0]


def test_active_units_count_dimensions_whose_mean_moves():
    rng = np.random.default_rng(2)
    mu = np.column_stack([rng.normal(0, 1, 1000), rng.normal(3, 0.5, 1000),
                          rng.normal(0, 0.05, 1000), np.full(1000, 2.0)])
    count, activity = latent.active_units(mu)
    assert count == 2
    np.testing.assert_allclose(activity, mu.var(axis=0))
    assert latent.active_units(mu, threshold=1e-4)[0] == 3
    with pytest.raises(ValueError, match=r"shape \(N >= 2, L\)"):
        latent.active_units(np.zeros(5))


def test_latent_statistics_of_a_model():
    model = VAE(6, hidden_dims=(5,), latent_dim=3, dtype="float64", seed=0)
    x = np.random.default_rng(3).random((37, 6))
    stats = latent.latent_statistics(model, x, batch_size=10)   # several batches
    mu, logvar = model.encode(x)
    np.testing.assert_allclose(stats.kl_per_dim, reference.kl_per_dimension(mu, logvar))
    np.testing.assert_allclose(stats.activity, mu.var(axis=0))
    assert stats.active_units == int(np.sum(mu.var(axis=0) > 0.01))
    assert sorted(stats.kl_order()) == [0, 1, 2]
    assert stats.kl_per_dim[stats.kl_order()[0]] == stats.kl_per_dim.max()


# --------------------------------------------------------------------------
# Mutual Information Gap
# --------------------------------------------------------------------------


def test_mig_of_a_hand_computed_case():
    """f = [0,0,1,1]; z0 copies f, z1 = [0,0,0,1].

    I(z0; f) = H(f) = log 2. I(z1; f) from the joint {(0,0): 1/2, (1,0): 1/4, (1,1): 1/4}
    = 1/2 log(4/3) + 1/4 log(2/3) + 1/4 log 2 = 3/2 log 2 - 3/4 log 3,
    so MIG = (log 2 - I(z1; f)) / log 2 = 3/4 log2(3) - 1/2 = 0.688722...
    """
    f = np.array([0, 0, 1, 1])
    z = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    result = latent.mutual_info_gap(z, f)
    i1 = 1.5 * math.log(2) - 0.75 * math.log(3)
    np.testing.assert_allclose(result.mi[:, 0], [math.log(2), i1], rtol=1e-14)
    assert result.entropy[0] == pytest.approx(math.log(2), rel=1e-14)
    assert result.mig == pytest.approx(0.75 * math.log2(3) - 0.5, rel=1e-13)
    assert result.top.tolist() == [0]


def test_a_code_that_copies_each_factor_scores_near_one():
    v = factors()
    rng = np.random.default_rng(4)
    codes = np.column_stack([v[:, 2], v[:, 0], v[:, 4], v[:, 1], v[:, 3],
                             rng.standard_normal(len(v))])       # shuffled, plus a noise unit
    result = latent.mutual_info_gap(codes, v)
    assert result.mig > 0.9
    assert result.top.tolist() == [1, 3, 0, 4, 2]
    # An invertible rescaling of each code keeps the bins, hence the score.
    scaled = latent.mutual_info_gap(3.0 * codes - 7.0, v)
    assert scaled.mig == pytest.approx(result.mig, rel=1e-12)


def test_noise_scores_near_zero():
    v = factors()
    codes = np.random.default_rng(5).standard_normal((len(v), 10))
    assert latent.mutual_info_gap(codes, v).mig < 0.05


def test_a_factor_spread_over_two_dimensions_has_no_gap():
    """Entangled: the same information in two dimensions gives a gap of 0."""
    v = factors()
    codes = np.column_stack([v[:, 3], v[:, 3] * 2 + 1, v[:, 4]])
    result = latent.mutual_info_gap(codes, v[:, 3:])
    assert result.per_factor[0] == pytest.approx(0.0, abs=1e-12)
    assert result.per_factor[1] > 0.9


def test_discretize():
    assert latent.discretize(np.array([3, 1, 3, 7])).tolist() == [1, 0, 1, 2]   # discrete kept
    col = np.linspace(0, 1, 101)
    bins = latent.discretize(col, n_bins=4)
    assert bins.min() == 0 and bins.max() == 3 and np.all(np.diff(bins) >= 0)
    assert np.bincount(bins).tolist() == [25, 25, 25, 26]
    with pytest.raises(ValueError, match="NaN or infinity"):
        latent.discretize(np.array([0.0, np.nan]))
    with pytest.raises(ValueError, match="n_bins must be >= 2"):
        latent.discretize(col, n_bins=1)


def test_mig_errors_are_named():
    v = factors(100)
    with pytest.raises(ValueError, match="at least 2 code dimensions"):
        latent.mutual_info_gap(v[:, :1], v)
    with pytest.raises(ValueError, match=r"column\(s\) \[1\] are constant"):
        latent.mutual_info_gap(v[:, :3], np.column_stack([v[:, 0], np.ones(100)]))
    with pytest.raises(ValueError, match="same N"):
        latent.mutual_info_gap(v[:50], v)
    with pytest.raises(ValueError, match=r"missing factor\(s\) \['y'\]"):
        latent.factor_matrix({"x": np.zeros(3)}, ["x", "y"])


# --------------------------------------------------------------------------
# Traversals and figures
# --------------------------------------------------------------------------


def test_traversal_sweeps_one_dimension_per_row():
    model = VAE(6, hidden_dims=(5,), latent_dim=3, dtype="float64", seed=0)
    x = np.random.default_rng(3).random(6)
    images = latent.traversal(model, x, [2, 0], steps=5, span=3.0)
    assert images.shape == (2, 5, 6)
    mu = model.embed(x[None])[0]
    for row, d in enumerate([2, 0]):
        z = np.tile(mu, (5, 1))
        z[:, d] = np.linspace(-3, 3, 5)
        np.testing.assert_allclose(images[row], model.decode(z), rtol=1e-12)
    with pytest.raises(ValueError, match=r"indices in \[0, 3\)"):
        latent.traversal(model, x, [3])


def test_figures_write_pngs(tmp_path):
    from numpyvae.app import latent_plots

    rng = np.random.default_rng(0)
    images = rng.random((3, 7, 784))
    fig = latent_plots.traversal(images, [4, 1, 0], kl=rng.random(5), path=tmp_path / "t.png")
    assert fig.axes[0].get_yticklabels()[0].get_text().startswith("z[4]")
    latent_plots.kl_bars(rng.random(8), rng.random(8) * 0.02, path=tmp_path / "kl.png")
    latent_plots.metric_vs([0.5, 1, 4], {"MIG": [0.1, 0.2, 0.3]}, path=tmp_path / "m.png")
    for name in ("t.png", "kl.png", "m.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    with pytest.raises(ValueError, match="expected images"):
        latent_plots.traversal(images, [1, 2])
    with pytest.raises(ValueError, match="non-empty vector"):
        latent_plots.kl_bars([])
