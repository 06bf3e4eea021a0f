"""Initialisers: shapes, dtypes, the documented bounds and variances, determinism for a seed."""

from __future__ import annotations

import numpy as np
import pytest

from numpyvae import Linear
from numpyvae.init import (
    INITIALIZERS,
    get_initializer,
    glorot_uniform,
    he_normal,
    pytorch_default,
)

FANS = [(1, 1), (3, 7), (784, 400), (20, 784)]


@pytest.mark.parametrize("name", sorted(INITIALIZERS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("fan_in", "fan_out"), FANS)
def test_shapes_and_dtypes(name, dtype, fan_in, fan_out):
    W, b = get_initializer(name)(np.random.default_rng(0), fan_in, fan_out, np.dtype(dtype))
    assert W.shape == (fan_in, fan_out) and W.dtype == dtype
    assert b.shape == (fan_out,) and b.dtype == dtype
    assert np.all(np.isfinite(W)) and np.all(np.isfinite(b))


@pytest.mark.parametrize("name", sorted(INITIALIZERS))
def test_the_same_seed_gives_the_same_weights(name):
    init = get_initializer(name)
    W1, b1 = init(np.random.default_rng(42), 30, 20, np.float64)
    W2, b2 = init(np.random.default_rng(42), 30, 20, np.float64)
    W3, _ = init(np.random.default_rng(43), 30, 20, np.float64)
    np.testing.assert_array_equal(W1, W2)
    np.testing.assert_array_equal(b1, b2)
    assert not np.array_equal(W1, W3)


def _uniform_checks(a, bound):
    """``a`` looks like U(-bound, bound): inside the bounds, reaching them, variance bound²/3."""
    assert np.max(np.abs(a)) <= bound
    assert np.max(a) > 0.95 * bound and np.min(a) < -0.95 * bound
    # The sample variance of n uniform draws has relative standard error about sqrt(0.8 / n).
    rel_se = np.sqrt(0.8 / a.size)
    assert abs(a.var() / (bound**2 / 3) - 1) < 5 * rel_se
    assert abs(a.mean()) < 5 * bound / np.sqrt(3 * a.size)


def test_pytorch_default_is_uniform_within_one_over_sqrt_fan_in():
    W, b = pytorch_default(np.random.default_rng(0), 400, 300, np.float64)
    bound = 1 / np.sqrt(400)
    _uniform_checks(W, bound)
    assert np.max(np.abs(b)) <= bound and np.std(b) > 0.5 * bound / np.sqrt(3)


def test_glorot_uniform_bound_and_zero_bias():
    W, b = glorot_uniform(np.random.default_rng(0), 400, 200, np.float64)
    _uniform_checks(W, np.sqrt(6 / (400 + 200)))
    assert not b.any()


def test_he_normal_variance_and_zero_bias():
    W, b = he_normal(np.random.default_rng(0), 500, 400, np.float64)
    target = 2 / 500
    # Sample variance of n normal draws: relative standard error sqrt(2 / n).
    assert abs(W.var() / target - 1) < 5 * np.sqrt(2 / W.size)
    assert abs(W.mean()) < 5 * np.sqrt(target / W.size)
    assert not b.any()


def test_float32_weights_are_the_float64_weights_rounded():
    W32, b32 = pytorch_default(np.random.default_rng(3), 10, 5, np.float32)
    W64, b64 = pytorch_default(np.random.default_rng(3), 10, 5, np.float64)
    np.testing.assert_array_equal(W32, W64.astype(np.float32))
    np.testing.assert_array_equal(b32, b64.astype(np.float32))


def test_names_are_aliases_and_callables_pass_through():
    assert get_initializer("xavier") is get_initializer("glorot") is glorot_uniform
    assert get_initializer("kaiming") is get_initializer("he") is he_normal
    assert get_initializer("pytorch") is get_initializer("default") is pytorch_default

    def constant(rng, fan_in, fan_out, dtype):
        return np.full((fan_in, fan_out), 0.5, dtype), np.ones(fan_out, dtype)

    assert get_initializer(constant) is constant
    layer = Linear(3, 2, init=constant, dtype="float64")
    np.testing.assert_array_equal(layer.params["W"], np.full((3, 2), 0.5))
    with pytest.raises(ValueError, match="unknown initializer 'lecun'.*glorot"):
        get_initializer("lecun")


def test_linear_layers_from_the_same_generator_state_are_identical():
    a = Linear(6, 4, init="he", rng=np.random.default_rng(9), dtype="float64")
    b = Linear(6, 4, init="he", rng=np.random.default_rng(9), dtype="float64")
    np.testing.assert_array_equal(a.params["W"], b.params["W"])
    W, _ = he_normal(np.random.default_rng(9), 6, 4, np.float64)
    np.testing.assert_array_equal(a.params["W"], W)
