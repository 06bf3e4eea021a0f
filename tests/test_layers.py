"""Layers: every backward against central differences, accumulation, dtypes, layouts, errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import (
    arrays,
    feature_sizes,
    fixture_settings,
    non_contiguous_arrays,
    off_kink_bias,
    seeds,
    shapes,
    with_layout,
)

from numpyvae import (
    Identity,
    LeakyReLU,
    Linear,
    ReLU,
    Sequential,
    Sigmoid,
    Softplus,
    Tanh,
    mlp,
)
from numpyvae.gradcheck import check_layer
from numpyvae.ops import ACTIVATIONS

ACTIVATION_CLASSES = [Identity, ReLU, LeakyReLU, Tanh, Sigmoid, Softplus]
KINKED = ("relu", "leaky_relu")
TOL = 1e-7


def make_linear(in_features, out_features, activation, x, rng, backend_name, dtype="float64"):
    """A Linear layer whose pre-activations on ``x`` stay off the ReLU kink."""
    layer = Linear(in_features, out_features, activation, rng=rng, dtype=dtype,
                   backend=backend_name)
    if activation in KINKED:
        W, b = layer.params["W"], layer.params["b"]
        b[...] = off_kink_bias(np.asarray(x, np.float64), W.astype(np.float64), b)
    return layer


# --------------------------------------------------------------------------
# Backward against central differences (float64, random upstream gradient)
# --------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ACTIVATIONS)
@fixture_settings
@given(data=st.data())
def test_linear_backward_matches_central_differences(backend_name, activation, data):
    B, n_in = data.draw(shapes(), label="(batch, in)")
    n_out = data.draw(feature_sizes(), label="out")
    # |x| <= 1 keeps tanh/sigmoid out of deep saturation, where the gradient is
    # so small that rounding in the finite difference dominates it.
    x = data.draw(arrays((B, n_in), high=1.0), label="x")
    rng = np.random.default_rng(data.draw(seeds(), label="seed"))
    layer = make_linear(n_in, n_out, activation, x, rng, backend_name)
    dout = rng.standard_normal((B, n_out))

    report = check_layer(layer, x, dout, h=1e-5, tol=TOL)

    assert [row.name for row in report] == ["input", "W", "b"]
    assert report.passed, str(report)


@pytest.mark.parametrize("cls", ACTIVATION_CLASSES, ids=lambda c: c.__name__)
@fixture_settings
@given(data=st.data())
def test_activation_backward_matches_central_differences(backend_name, cls, data):
    shape = data.draw(shapes(), label="shape")
    # Every value has |x| >= 0.1: off the kink of ReLU and LeakyReLU.
    x = data.draw(arrays(shape, low=0.1, high=2.0), label="x")
    dout = np.random.default_rng(data.draw(seeds(), label="seed")).standard_normal(shape)
    layer = cls(backend=backend_name)

    report = check_layer(layer, x, dout, tol=TOL)

    assert [row.name for row in report] == ["input"]
    assert report.passed, str(report)


@fixture_settings
@given(data=st.data())
def test_sequential_backward_matches_central_differences(backend_name, data):
    B, n_in = data.draw(shapes(), label="(batch, in)")
    hidden, n_out = data.draw(feature_sizes(), label="hidden"), data.draw(feature_sizes())
    x = data.draw(arrays((B, n_in), high=1.0), label="x")
    rng = np.random.default_rng(data.draw(seeds(), label="seed"))
    first = make_linear(n_in, hidden, "identity", x, rng, backend_name)
    first.params["b"][...] = off_kink_bias(x, first.params["W"], first.params["b"])
    net = Sequential(first, ReLU(backend=backend_name),
                     Linear(hidden, n_out, "softplus", rng=rng, dtype="float64",
                            backend=backend_name),
                     Tanh(backend=backend_name))
    dout = rng.standard_normal((B, n_out))

    report = check_layer(net, x, dout, h=1e-5, tol=TOL)

    assert [row.name for row in report] == ["input", "0.W", "0.b", "2.W", "2.b"]
    assert report.passed, str(report)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "softplus"])
@fixture_settings
@given(data=st.data())
def test_mlp_backward_matches_central_differences(backend_name, activation, data):
    B, n_in = data.draw(shapes(), label="(batch, in)")
    sizes = (n_in, *data.draw(st.lists(feature_sizes(), min_size=1, max_size=2)), 3)
    x = data.draw(arrays((B, n_in), high=1.0), label="x")
    rng = np.random.default_rng(data.draw(seeds(), label="seed"))
    net = mlp(sizes, activation, rng=rng, dtype="float64", backend=backend_name)
    dout = rng.standard_normal((B, 3))

    report = check_layer(net, x, dout, h=1e-5, tol=TOL)

    assert len(report) == 1 + 2 * (len(sizes) - 1)
    assert report.passed, str(report)


# --------------------------------------------------------------------------
# Accumulation and zero_grad
# --------------------------------------------------------------------------


def _grads(layer):
    return {k: g.copy() for k, g in layer.grads.items()}


@pytest.mark.parametrize("activation", ["identity", "tanh", "relu"])
def test_linear_gradients_accumulate_across_backward_calls(backend_name, activation):
    rng = np.random.default_rng(0)
    x1, x2 = rng.standard_normal((4, 5)), rng.standard_normal((3, 5))
    d1, d2 = rng.standard_normal((4, 2)), rng.standard_normal((3, 2))
    layer = Linear(5, 2, activation, rng=rng, dtype="float64", backend=backend_name)

    layer.forward(x1)
    layer.backward(d1)
    g1 = _grads(layer)
    layer.zero_grad()
    assert all(not g.any() for g in layer.grads.values())
    layer.forward(x2)
    layer.backward(d2)
    g2 = _grads(layer)
    layer.zero_grad()

    layer.forward(x1)
    layer.backward(d1)
    layer.forward(x2)
    layer.backward(d2)
    for key in layer.params:
        assert not np.allclose(g1[key], 0)
        np.testing.assert_allclose(layer.grads[key], g1[key] + g2[key], rtol=1e-13, atol=1e-15)


def test_sequential_accumulates_and_zero_grad_clears_every_child(backend_name):
    rng = np.random.default_rng(1)
    net = mlp((4, 5, 3), "tanh", rng=rng, dtype="float64", backend=backend_name)
    x, dout = rng.standard_normal((6, 4)), rng.standard_normal((6, 3))
    net.forward(x)
    net.backward(dout)
    once = _grads(net)
    net.forward(x)
    net.backward(dout)
    for key, g in net.grads.items():
        np.testing.assert_allclose(g, 2 * once[key], rtol=1e-13)
    net.zero_grad()
    assert set(net.grads) == {"0.W", "0.b", "1.W", "1.b"}
    for layer in net:
        assert all(not g.any() for g in layer.grads.values())


def test_skipping_the_input_gradient_keeps_the_parameter_gradients(backend_name):
    rng = np.random.default_rng(2)
    x, dout = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    full = Linear(3, 2, "tanh", rng=np.random.default_rng(5), dtype="float64",
                  backend=backend_name)
    skip = Linear(3, 2, "tanh", rng=np.random.default_rng(5), dtype="float64",
                  backend=backend_name)
    skip.skip_input_grad = True
    full.forward(x)
    assert full.backward(dout) is not None
    skip.forward(x)
    assert skip.backward(dout) is None
    for key in full.grads:
        np.testing.assert_array_equal(skip.grads[key], full.grads[key])


# --------------------------------------------------------------------------
# dtypes: float32 stays float32 (and float64 stays float64), no upcast
# --------------------------------------------------------------------------


def _all_layers(backend_name, dtype, rng):
    layers = [Linear(4, 3, act, rng=rng, dtype=dtype, backend=backend_name)
              for act in ACTIVATIONS]
    layers += [cls(backend=backend_name) for cls in ACTIVATION_CLASSES]
    layers.append(mlp((4, 5, 3), "relu", rng=rng, dtype=dtype, backend=backend_name))
    return layers


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_layer_keeps_its_dtype_forward_and_backward(backend_name, dtype):
    rng = np.random.default_rng(3)
    for layer in _all_layers(backend_name, dtype, rng):
        x = rng.standard_normal((5, 4)).astype(dtype)
        y = layer.forward(x)
        dx = layer.backward(rng.standard_normal(y.shape).astype(dtype))
        assert y.dtype == dtype, layer
        assert dx.dtype == dtype, layer
        assert dx.shape == x.shape, layer
        for key in layer.params:
            assert layer.params[key].dtype == dtype, (layer, key)
            assert layer.grads[key].dtype == dtype, (layer, key)
            assert layer.grads[key].shape == layer.params[key].shape


def test_float32_layers_compute_the_same_function_as_float64(backend_name):
    """float32 computes the same function: no accidental float16 or integer maths."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 4))
    dout = rng.standard_normal((5, 3))
    results = {}
    for dtype in ("float32", "float64"):
        net = mlp((4, 6, 3), "tanh", rng=np.random.default_rng(7), dtype=dtype,
                  backend=backend_name)
        y = net.forward(x.astype(dtype)).copy()
        dx = net.backward(dout.astype(dtype)).copy()
        results[dtype] = (y, dx, net.grads["0.W"].copy())
    for a32, a64 in zip(results["float32"], results["float64"], strict=True):
        np.testing.assert_allclose(a32, a64, rtol=2e-5, atol=2e-6)


# --------------------------------------------------------------------------
# Memory layouts
# --------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ACTIVATIONS)
@fixture_settings
@given(data=st.data())
def test_linear_gives_the_same_results_for_non_contiguous_inputs(backend_name, activation,
                                                                 data):
    B, n_in = data.draw(shapes())
    n_out = data.draw(feature_sizes())
    x = data.draw(non_contiguous_arrays((B, n_in)), label="x")
    dout = data.draw(non_contiguous_arrays((B, n_out)), label="dout")
    seed = data.draw(seeds())

    results = []
    for x_, d_ in ((x, dout), (np.ascontiguousarray(x), np.ascontiguousarray(dout))):
        layer = Linear(n_in, n_out, activation, rng=np.random.default_rng(seed),
                       dtype="float64", backend=backend_name)
        y = layer.forward(x_).copy()
        dx = layer.backward(d_).copy()
        results.append((y, dx, layer.grads["W"].copy(), layer.grads["b"].copy()))
    for got, want in zip(*results, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cls", ACTIVATION_CLASSES, ids=lambda c: c.__name__)
@fixture_settings
@given(data=st.data())
def test_activations_give_the_same_results_for_non_contiguous_inputs(backend_name, cls, data):
    shape = data.draw(shapes())
    dtype = data.draw(st.sampled_from(["float32", "float64"]))
    x = data.draw(non_contiguous_arrays(shape, dtype=dtype), label="x")
    dout = data.draw(non_contiguous_arrays(shape, dtype=dtype), label="dout")

    layer = cls(backend=backend_name)
    y, dx = layer.forward(x).copy(), layer.backward(dout).copy()
    y_c = layer.forward(np.ascontiguousarray(x)).copy()
    dx_c = layer.backward(np.ascontiguousarray(dout)).copy()

    np.testing.assert_array_equal(y, y_c)
    np.testing.assert_array_equal(dx, dx_c)


def test_with_layout_builds_the_layouts_it_names():
    a = np.arange(12.0).reshape(3, 4)
    assert with_layout(a, "contiguous").flags.c_contiguous
    t = with_layout(a, "transposed")
    assert t.flags.f_contiguous and not t.flags.c_contiguous
    s = with_layout(a, "sliced")
    assert not s.flags.c_contiguous and not s.flags.f_contiguous
    for layout in ("contiguous", "transposed", "sliced"):
        np.testing.assert_array_equal(with_layout(a, layout), a)


# --------------------------------------------------------------------------
# Parameters, results, naming
# --------------------------------------------------------------------------


def test_params_and_grads_have_the_same_keys_and_shapes(backend_name):
    rng = np.random.default_rng(5)
    for layer in _all_layers(backend_name, "float64", rng):
        assert layer.params.keys() == layer.grads.keys()
        for key in layer.params:
            assert layer.params[key].shape == layer.grads[key].shape
    assert set(Linear(4, 3, rng=rng).params) == {"W", "b"}
    assert Linear(4, 3, rng=rng).params["W"].shape == (4, 3)
    assert Linear(4, 3, rng=rng).params["b"].shape == (3,)


def test_sequential_exposes_its_childrens_own_arrays_by_qualified_name(backend_name):
    rng = np.random.default_rng(6)
    net = Sequential(Linear(3, 4, rng=rng, dtype="float64", backend=backend_name),
                     ReLU(backend=backend_name),
                     Linear(4, 2, rng=rng, dtype="float64", backend=backend_name))
    assert list(net.params) == ["0.W", "0.b", "2.W", "2.b"]
    assert net.params["2.W"] is net[2].params["W"]
    assert net.grads["0.b"] is net[0].grads["b"]

    x = rng.standard_normal((2, 3))
    before = net.forward(x).copy()
    net.params["2.b"][...] += 1.0
    np.testing.assert_allclose(net.forward(x), before + 1.0, rtol=1e-14)
    with pytest.raises(AttributeError):
        net.params = {"0.W": np.zeros((3, 4))}


def test_layer_results_are_not_overwritten_by_later_calls(backend_name):
    """Layers return new arrays: a result is not changed by the layer's later calls."""
    rng = np.random.default_rng(7)
    for layer in _all_layers(backend_name, "float64", rng):
        x1, x2 = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
        y1 = layer.forward(x1)
        kept_y = y1.copy()
        dx1 = layer.backward(rng.standard_normal(y1.shape))
        kept_dx = dx1.copy()
        y2 = layer.forward(x2)
        layer.backward(rng.standard_normal(y2.shape))
        np.testing.assert_array_equal(y1, kept_y)
        np.testing.assert_array_equal(dx1, kept_dx)


def test_mlp_names_layers_and_uses_the_output_activation(backend_name):
    net = mlp((5, 4, 3, 2), "tanh", out_activation="sigmoid", rng=np.random.default_rng(0),
              backend=backend_name)
    assert [layer.activation for layer in net] == ["tanh", "tanh", "sigmoid"]
    assert [(layer.in_features, layer.out_features) for layer in net] == [(5, 4), (4, 3), (3, 2)]
    assert list(net.params) == ["0.W", "0.b", "1.W", "1.b", "2.W", "2.b"]
    y = net.forward(np.zeros((2, 5), np.float32))
    assert np.all((y > 0) & (y < 1))


def test_leaky_relu_uses_its_slope(backend_name):
    layer = LeakyReLU(alpha=0.2, backend=backend_name)
    x = np.array([[-2.0, 3.0]])
    np.testing.assert_array_equal(layer.forward(x), [[-0.4, 3.0]])
    np.testing.assert_array_equal(layer.backward(np.array([[1.0, 1.0]])), [[0.2, 1.0]])
    fused = Linear(2, 2, "leaky_relu", alpha=0.2, dtype="float64", backend=backend_name)
    fused.params["W"][...] = np.eye(2)
    fused.params["b"][...] = 0.0
    np.testing.assert_allclose(fused.forward(x), [[-0.4, 3.0]], rtol=1e-15)
    np.testing.assert_allclose(fused.backward(np.array([[1.0, 1.0]])), [[0.2, 1.0]],
                               rtol=1e-15)
    np.testing.assert_allclose(fused.grads["b"], [0.2, 1.0], rtol=1e-15)


# --------------------------------------------------------------------------
# Errors a user can cause
# --------------------------------------------------------------------------


def _message(exc_info):
    return str(exc_info.value)


def test_linear_rejects_a_wrong_input_shape_naming_layer_expected_and_received(backend_name):
    layer = Linear(5, 3, backend=backend_name)
    with pytest.raises(ValueError) as exc:
        layer.forward(np.zeros((3, 4), np.float32))
    msg = _message(exc)
    assert "Linear" in msg and "(batch, 5)" in msg and "(3, 4)" in msg
    with pytest.raises(ValueError, match=r"Linear.*\(batch, 5\).*\(5,\)"):
        layer.forward(np.zeros(5, np.float32))


def test_linear_rejects_a_wrong_dtype_without_converting(backend_name):
    layer = Linear(2, 3, dtype="float32", backend=backend_name)
    with pytest.raises(ValueError, match=r"Linear.*float32.*float64"):
        layer.forward(np.zeros((1, 2), np.float64))
    with pytest.raises(ValueError, match="Linear.*numpy array"):
        layer.forward([[0.0, 0.0]])


def test_linear_backward_rejects_a_wrong_upstream_gradient(backend_name):
    layer = Linear(2, 3, dtype="float64", backend=backend_name)
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.zeros((4, 3)))
    layer.forward(np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"Linear.*\(batch, 3\).*\(4, 2\)"):
        layer.backward(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="Linear.*batch 1.*4"):
        layer.backward(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="Linear.*float64.*float32"):
        layer.backward(np.zeros((4, 3), np.float32))


@pytest.mark.parametrize("cls", ACTIVATION_CLASSES, ids=lambda c: c.__name__)
def test_activation_errors_name_the_layer_and_the_shapes(backend_name, cls):
    layer = cls(backend=backend_name)
    name = cls.__name__
    with pytest.raises(RuntimeError, match=f"{name}.backward called before forward"):
        layer.backward(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=f"{name}.*float32 or float64.*int64"):
        layer.forward(np.zeros((2, 3), np.int64))
    with pytest.raises(ValueError, match=rf"{name}.*\(batch, \.\.\.\).*\(3,\)"):
        layer.forward(np.zeros(3))  # no batch axis
    layer.forward(np.zeros((2, 3, 1)))
    with pytest.raises(ValueError, match=rf"{name}.*\(batch, 3, 1\).*\(2, 3\)"):
        layer.backward(np.zeros((2, 3)))
    layer.forward(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=rf"{name}.*\(batch, 3\).*\(2, 4\)"):
        layer.backward(np.zeros((2, 4)))
    with pytest.raises(ValueError, match=f"{name}.*float64.*float32"):
        layer.backward(np.zeros((2, 3), np.float32))
    # A batch of one would broadcast silently against a batch of two.
    with pytest.raises(ValueError, match=f"{name}.*batch 1.*2"):
        layer.backward(np.zeros((1, 3)))


def test_constructors_reject_bad_arguments():
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        Linear(2, 3, "gelu")
    with pytest.raises(ValueError, match="features must be positive"):
        Linear(0, 3)
    with pytest.raises(ValueError, match="unsupported dtype"):
        Linear(2, 3, dtype="float16")
    with pytest.raises(ValueError, match="unknown initializer 'orthogonal'"):
        Linear(2, 3, init="orthogonal")
    with pytest.raises(ValueError, match="alpha must be positive"):
        LeakyReLU(alpha=0.0)
    # A negative slope flips the sign of the output, which the backward reads.
    with pytest.raises(ValueError, match="leaky_relu needs alpha > 0, got -0.5"):
        Linear(2, 3, "leaky_relu", alpha=-0.5)
    with pytest.raises(ValueError, match="every element must be a Layer"):
        Sequential(Linear(2, 3), "relu")
    with pytest.raises(ValueError, match="at least input and output"):
        mlp((3,))
