"""The gradient checker itself: known derivatives, rel_error, and catching wrong backwards."""

from __future__ import annotations

import types

import numpy as np
import pytest

from numpyvae import VAE, Linear, Tanh
from numpyvae import ops as reference
from numpyvae.gradcheck import (
    GradReport,
    check_layer,
    check_model,
    numerical_gradient,
    numerical_vjp,
    rel_error,
)

# --------------------------------------------------------------------------
# numerical_gradient and numerical_vjp on functions with known derivatives
# --------------------------------------------------------------------------


def test_numerical_gradient_of_known_scalar_functions():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4))
    a = rng.standard_normal((3, 4))
    cases = [
        (lambda: np.sum(x**2), lambda: 2 * x),
        (lambda: np.sum(a * x), lambda: a),
        (lambda: np.sum(np.sin(x)), lambda: np.cos(x)),
        (lambda: np.log(np.sum(np.exp(x))), lambda: np.exp(x) / np.sum(np.exp(x))),
    ]
    for f, grad in cases:
        num = numerical_gradient(f, x)
        assert num.shape == x.shape
        np.testing.assert_allclose(num, grad(), rtol=1e-7, atol=1e-9)


def test_numerical_gradient_restores_its_input_and_perturbs_in_place():
    x = np.array([[1.0, -2.0], [0.5, 3.0]])
    seen = []

    def f():
        seen.append(x.copy())
        return float(np.prod(x))

    before = x.copy()
    num = numerical_gradient(f, x, h=1e-4)
    np.testing.assert_array_equal(x, before)
    assert len(seen) == 2 * x.size
    # The first evaluation moved element (0, 0) up by h and nothing else.
    np.testing.assert_allclose(seen[0] - before, [[1e-4, 0], [0, 0]], atol=1e-15)
    np.testing.assert_allclose(num, np.prod(before) / before, rtol=1e-7)


def test_numerical_gradient_works_on_non_contiguous_views():
    base = np.random.default_rng(1).standard_normal((4, 6))
    view = base[::2, 1::2]
    num = numerical_gradient(lambda: np.sum(view**3), view)
    np.testing.assert_allclose(num, 3 * view**2, rtol=1e-8)


def test_numerical_vjp_of_a_matrix_product_is_the_transpose_times_dout():
    rng = np.random.default_rng(2)
    A = rng.standard_normal((3, 5))
    x = rng.standard_normal((5, 2))
    dout = rng.standard_normal((3, 2))
    np.testing.assert_allclose(numerical_vjp(lambda: A @ x, x, dout), A.T @ dout,
                               rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(numerical_vjp(lambda: A @ x, A, dout), dout @ x.T,
                               rtol=1e-8, atol=1e-10)


def test_numerical_vjp_copies_outputs_that_the_function_reuses():
    x = np.array([1.0, 2.0, 3.0])
    buffer = np.empty(3)

    def f():  # returns the same array every time, like a layer with work buffers
        np.multiply(x, x, out=buffer)
        return buffer

    dout = np.array([0.5, -1.0, 2.0])
    np.testing.assert_allclose(numerical_vjp(f, x, dout), 2 * x * dout, rtol=1e-8)


# --------------------------------------------------------------------------
# rel_error
# --------------------------------------------------------------------------


def test_rel_error_is_max_abs_difference_over_the_largest_magnitude():
    assert rel_error([1.0, 2.0], [1.0, 2.0]) == 0.0
    assert rel_error([1.0, -4.0], [1.0, -3.0]) == pytest.approx(1 / 4)
    assert rel_error([0.0, 10.0], [0.5, 10.0]) == pytest.approx(0.05)
    # Symmetric in its arguments.
    assert rel_error([2.0, 3.0], [2.5, 3.0]) == rel_error([2.5, 3.0], [2.0, 3.0])
    # A wrong small element is measured against the whole gradient's scale.
    assert rel_error([1e-9, 1.0], [2e-9, 1.0]) == pytest.approx(1e-9)
    # Scale invariant.
    assert rel_error([3e-6, 1e-6], [3.3e-6, 1e-6]) == pytest.approx(0.1 / 1.1)


def test_rel_error_edge_cases():
    assert rel_error(np.zeros(3), np.zeros(3)) == 0.0
    assert rel_error(np.zeros((0, 2)), np.zeros((0, 2))) == 0.0
    # All-zero gradients are compared against a floor of 1e-12, not divided by zero.
    assert rel_error([0.0], [1e-20]) == pytest.approx(1e-8)
    assert rel_error([0.0], [1.0]) == 1.0
    assert rel_error(np.float32(1.5), 1.5) == 0.0
    with pytest.raises(ValueError, match="shapes differ"):
        rel_error(np.zeros(3), np.zeros(4))


# --------------------------------------------------------------------------
# check_layer and check_model catch wrong backwards
# --------------------------------------------------------------------------


class WrongTanh(Tanh):
    """tanh with the classic slip f' = 1 - y instead of 1 - y^2."""

    def backward(self, dout):
        return dout * (1 - self._y)


class LinearWithoutBiasSum(Linear):
    """A Linear layer whose bias gradient forgets to sum over the batch (takes row 0)."""

    def backward(self, dout):
        dx = super().backward(dout)
        self.grads["b"][...] = dout[0]
        return dx


def test_check_layer_passes_correct_layers(backend_name):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 3))
    report = check_layer(Linear(3, 2, "tanh", rng=rng, dtype="float64", backend=backend_name), x)
    assert isinstance(report, GradReport)
    assert report.passed and report.max_error < 1e-7
    assert [row.name for row in report] == ["input", "W", "b"]
    assert [row.shape for row in report] == [(4, 3), (3, 2), (2,)]
    assert "FAIL" not in str(report)


def test_check_layer_fails_a_wrong_activation_derivative(backend_name):
    x = np.random.default_rng(4).standard_normal((4, 3))
    report = check_layer(WrongTanh(backend=backend_name), x)
    assert not report.passed
    assert report[0].name == "input" and report[0].rel_error > 1e-2
    assert "FAIL" in str(report)


def test_check_layer_fails_a_wrong_parameter_gradient(backend_name):
    rng = np.random.default_rng(5)
    layer = LinearWithoutBiasSum(3, 2, rng=rng, dtype="float64", backend=backend_name)
    report = check_layer(layer, rng.standard_normal((4, 3)))
    by_name = {row.name: row for row in report}
    assert by_name["input"].passed and by_name["W"].passed
    assert not by_name["b"].passed
    assert not report.passed


def test_check_layer_uses_a_random_upstream_gradient():
    """With dout = ones an error that cancels in a sum hides; the default dout is random."""

    class SwappedColumns(Linear):  # the input gradient of each column pair swapped
        def backward(self, dout):
            return super().backward(dout[:, ::-1].copy())

    rng = np.random.default_rng(6)
    layer = SwappedColumns(3, 2, rng=rng, dtype="float64")
    layer.params["W"][...] = rng.standard_normal((3, 2))
    x = rng.standard_normal((4, 3))
    assert not check_layer(layer, x).passed
    assert check_layer(layer, x, np.ones((4, 2))).passed  # what an all-ones dout would hide


def _model_with_backend(backend):
    return VAE(5, hidden_dims=(4,), latent_dim=2, dtype="float64", backend=backend,
               activation="tanh", seed=1)


def test_check_model_passes_a_correct_model_and_lists_every_parameter():
    model = _model_with_backend("numpy")
    x = np.random.default_rng(7).random((3, 5))
    report = check_model(model, x, beta=0.5)
    assert [row.name for row in report] == list(model.params)
    assert report.passed, str(report)


def test_check_model_catches_sigma_taken_as_exp_logvar():
    """The numpy-ml slip: reparameterising with sigma = exp(logvar), not exp(logvar / 2)."""
    broken = types.ModuleType("broken_backend")
    broken.__dict__.update(vars(reference))

    def reparameterize_backward(dz, logvar, eps, dmu=None, dlogvar=None):
        return dz.copy(), dz * eps * np.exp(logvar)

    def latent_backward(dz, h, eps, dkl, free_bits=0.0, dh=None):
        L = eps.shape[1]
        dmu, dlogvar = reparameterize_backward(dz, h[:, L:], eps)
        kl_mu, kl_logvar = reference.gaussian_kl_backward(dkl, h[:, :L], h[:, L:])
        return np.hstack([dmu + kl_mu, dlogvar + kl_logvar])

    broken.latent_backward = latent_backward
    model = _model_with_backend(broken)
    x = np.random.default_rng(8).random((3, 5))
    report = check_model(model, x)
    assert not report.passed
    by_name = {row.name: row for row in report}
    # The decoder's gradients do not depend on the latent backward; the encoder's do.
    assert by_name["decoder.1.W"].passed
    assert not by_name["encoder.1.W"].passed


def test_standard_checks_pass_on_every_backend(backend_name):
    """What ``numpyvae gradcheck`` runs: every layer type and both models, in float64."""
    from numpyvae.gradcheck import standard_checks

    reports = standard_checks(backend_name)
    assert len(reports) >= 15
    failed = [str(r) for r in reports if not r.passed]
    assert not failed, "\n".join(failed)
    assert all(len(r) > 0 for r in reports)
    titles = " | ".join(r.title for r in reports)
    for part in ("Flatten()", "Reshape(3, 4)", "VAE(encoder: Flatten, 3 x (Linear, Tanh)"):
        assert part in titles
