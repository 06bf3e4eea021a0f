"""Conv2d and ConvTranspose2d: central differences, the naive loops, the transpose identity,
PyTorch's conv2d / conv_transpose2d as an oracle, the Numba kernels, and errors.

Shapes are drawn by ``strategies.conv_geometries``: batch 1-4, channels 1-6,
H and W 1-12 independently, kernel 1-5, stride 1-3, padding 0-2, only
combinations that make a non-empty output; inputs come in contiguous,
transposed and sliced layouts.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import conv_geometries, fixture_settings, image_arrays, seeds, with_image_layout

from numpyvae import ops as reference
from numpyvae.backend import get_backend, numba_available
from numpyvae.conv import Conv2d, ConvTranspose2d
from numpyvae.gradcheck import check_layer, rel_error

TOL = 1e-7
SMOOTH = ("identity", "tanh", "sigmoid")  # no kink for a finite difference to straddle


def make(geometry, transposed, rng, backend, activation="identity", dtype="float64"):
    g = geometry
    if transposed:
        return ConvTranspose2d(g["C"], g["O"], g["kernel"], g["stride"], g["padding"],
                               g["output_padding"], activation, rng=rng, dtype=dtype,
                               backend=backend)
    return Conv2d(g["C"], g["O"], g["kernel"], g["stride"], g["padding"], activation, rng=rng,
                  dtype=dtype, backend=backend)


def draw_case(data, transposed):
    g = data.draw(conv_geometries(transposed), label="geometry")
    x = data.draw(image_arrays((g["B"], g["C"], g["H"], g["W"]), high=1.0), label="x")
    rng = np.random.default_rng(data.draw(seeds(), label="seed"))
    return g, x, rng


# --------------------------------------------------------------------------
# Backward against central differences (float64, random upstream gradient)
# --------------------------------------------------------------------------


@pytest.mark.parametrize("transposed", [False, True], ids=["Conv2d", "ConvTranspose2d"])
@settings(max_examples=12)
@given(data=st.data())
def test_backward_matches_central_differences(transposed, data):
    _check_backward("numpy", transposed, data)


@pytest.mark.skipif(not numba_available(), reason="numba not installed")
@pytest.mark.parametrize("transposed", [False, True], ids=["Conv2d", "ConvTranspose2d"])
@settings(max_examples=4)
@given(data=st.data())
def test_numba_backward_matches_central_differences(transposed, data):
    """Fewer examples: the kernels are also held to the reference (below) to 1e-12."""
    _check_backward("numba", transposed, data)


def _check_backward(backend_name, transposed, data):
    g, x, rng = draw_case(data, transposed)
    activation = data.draw(st.sampled_from(SMOOTH), label="activation")
    layer = make(g, transposed, rng, backend_name, activation)
    dout = rng.standard_normal((g["B"], *layer.output_shape(x.shape[1:])))

    report = check_layer(layer, x, dout, h=1e-5, tol=TOL)

    assert [row.name for row in report] == ["input", "W", "b"]
    assert report.passed, str(report)


# --------------------------------------------------------------------------
# The definition (naive loops), the transpose identity, and the layer's fused activation
# --------------------------------------------------------------------------


@pytest.mark.parametrize("transposed", [False, True], ids=["Conv2d", "ConvTranspose2d"])
@settings(max_examples=15)
@given(data=st.data())
def test_im2col_form_equals_the_naive_loops(transposed, data):
    g, x, rng = draw_case(data, transposed)
    layer = make(g, transposed, rng, "numpy")
    W, b = layer.params["W"], layer.params["b"]
    s, p = g["stride"], g["padding"]
    y = layer.forward(x)
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy)
    if transposed:
        y_loops = reference.conv_transpose2d_forward_naive(x, W, b, s, p, g["output_padding"])
        grads_loops = reference.conv_transpose2d_backward_naive(dy, x, W, s, p)
    else:
        y_loops = reference.conv2d_forward_naive(x, W, b, s, p)
        grads_loops = reference.conv2d_backward_naive(dy, x, W, s, p)
    assert rel_error(y, y_loops) < 1e-12
    for got, want in zip((dx, layer.grads["W"], layer.grads["b"]), grads_loops, strict=True):
        assert rel_error(got, want) < 1e-12


@settings(max_examples=15)
@given(data=st.data())
def test_transposed_convolution_is_the_convolutions_input_gradient_and_vice_versa(data):
    """convT.forward(g) == conv.backward(g) and convT.backward(h) == conv.forward(h), same W."""
    g, x, rng = draw_case(data, transposed=False)
    conv = make(g, False, rng, "numpy")
    y = conv.forward(x)
    # The output_padding that brings the transposed convolution back to x's size.
    op = tuple(n - ((m - 1) * s - 2 * p + k) for n, m, s, p, k in
               zip(x.shape[2:], y.shape[2:], g["stride"], g["padding"], g["kernel"], strict=True))
    convT = ConvTranspose2d(g["O"], g["C"], g["kernel"], g["stride"], g["padding"], op,
                            rng=rng, dtype="float64", backend="numpy")
    convT.params["W"][...] = conv.params["W"]
    conv.params["b"][...] = 0
    convT.params["b"][...] = 0

    gy = rng.standard_normal(y.shape)
    dx = conv.backward(gy)
    assert rel_error(convT.forward(gy), dx) < 1e-12

    h = rng.standard_normal(x.shape)
    assert rel_error(convT.backward(h), conv.forward(h)) < 1e-12


@pytest.mark.parametrize("transposed", [False, True], ids=["Conv2d", "ConvTranspose2d"])
@pytest.mark.parametrize("activation", reference.ACTIVATIONS)
def test_fused_activation_equals_the_layer_then_the_activation(backend_name, transposed,
                                                               activation):
    g = {"B": 3, "C": 2, "O": 3, "H": 7, "W": 5, "kernel": (3, 2), "stride": (2, 1),
         "padding": (1, 0), "output_padding": (1, 0)}
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 2, 7, 5))
    fused = make(g, transposed, np.random.default_rng(1), backend_name, activation)
    plain = make(g, transposed, np.random.default_rng(1), "numpy")
    a = plain.forward(x)
    y = fused.forward(x)
    assert rel_error(y, reference.activation_forward(a, activation)) < 1e-12
    dy = rng.standard_normal(y.shape)
    dx = fused.backward(dy)
    dx_plain = plain.backward(reference.activation_backward(dy, y, activation))
    assert rel_error(dx, dx_plain) < 1e-12
    for k in ("W", "b"):
        assert rel_error(fused.grads[k], plain.grads[k]) < 1e-12


# --------------------------------------------------------------------------
# PyTorch as an oracle
# --------------------------------------------------------------------------


@pytest.mark.parametrize("transposed", [False, True], ids=["conv2d", "conv_transpose2d"])
@settings(fixture_settings, max_examples=15)
@given(data=st.data())
def test_output_and_every_gradient_equal_torch(backend_name, transposed, data):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    torch.set_num_threads(1)
    g, x, rng = draw_case(data, transposed)
    layer = make(g, transposed, rng, backend_name)
    W, b = layer.params["W"], layer.params["b"]
    y = layer.forward(x)
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy)

    xt = torch.tensor(np.ascontiguousarray(x), requires_grad=True)
    Wt = torch.tensor(layer.weight_to_torch(W), requires_grad=True)
    bt = torch.tensor(b, requires_grad=True)
    if transposed:
        yt = F.conv_transpose2d(xt, Wt, bt, g["stride"], g["padding"], g["output_padding"])
    else:
        yt = F.conv2d(xt, Wt, bt, g["stride"], g["padding"])
    yt.backward(torch.tensor(dy))

    assert y.shape == tuple(yt.shape)
    assert rel_error(y, yt.detach().numpy()) <= 1e-10
    assert rel_error(dx, xt.grad.numpy()) <= 1e-10
    assert rel_error(layer.weight_to_torch(layer.grads["W"]), Wt.grad.numpy()) <= 1e-10
    assert rel_error(layer.grads["b"], bt.grad.numpy()) <= 1e-10


@pytest.mark.parametrize("transposed", [False, True], ids=["Conv2d", "ConvTranspose2d"])
def test_initialisation_and_layout_follow_torch(transposed):
    """Torch's default bound is 1/sqrt(fan_in) with its own fan_in; a torch layer with our
    weights computes our output."""
    torch = pytest.importorskip("torch")
    cls_t = torch.nn.ConvTranspose2d if transposed else torch.nn.Conv2d
    torch_layer = cls_t(3, 5, (4, 2), dtype=torch.float64)
    fan_in, _ = torch.nn.init._calculate_fan_in_and_fan_out(torch_layer.weight)
    cls = ConvTranspose2d if transposed else Conv2d
    layer = cls(3, 5, (4, 2), rng=np.random.default_rng(0), dtype="float64", backend="numpy")
    W, b = layer.params["W"], layer.params["b"]
    assert W.shape == tuple(torch_layer.weight.shape)
    bound = 1 / np.sqrt(fan_in)
    assert fan_in == (5 if transposed else 3) * 8
    for p in (W, b):
        assert np.max(np.abs(p)) <= bound
        assert np.max(np.abs(p)) > 0.8 * bound  # uses the range, not a narrower one
    assert np.allclose(layer.weight_from_torch(torch_layer.weight.detach().numpy()),
                       torch_layer.weight.detach().numpy())

    with torch.no_grad():
        torch_layer.weight.copy_(torch.tensor(layer.weight_to_torch(W)))
        torch_layer.bias.copy_(torch.tensor(b))
    x = np.random.default_rng(1).standard_normal((2, 3, 6, 5))
    want = torch_layer(torch.tensor(x)).detach().numpy()
    assert rel_error(layer.forward(x), want) < 1e-12


# --------------------------------------------------------------------------
# The Numba kernels against the reference, float32 and float64, any layout
# --------------------------------------------------------------------------


@pytest.mark.skipif(not numba_available(), reason="numba not installed")
@pytest.mark.parametrize("transposed", [False, True], ids=["Conv2d", "ConvTranspose2d"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@settings(max_examples=15)
@given(data=st.data())
def test_numba_kernels_equal_the_reference(transposed, dtype, data):
    g, x, rng = draw_case(data, transposed)
    activation = data.draw(st.sampled_from(reference.ACTIVATIONS), label="activation")
    skip_dx = data.draw(st.booleans(), label="skip_input_grad")
    seed = data.draw(seeds(), label="weights")
    x = x.astype(dtype)
    layers = [make(g, transposed, np.random.default_rng(seed), name, activation, dtype)
              for name in ("numpy", "numba")]
    out = []
    for layer in layers:
        layer.skip_input_grad = skip_dx
        y = layer.forward(x)
        dy = with_image_layout(np.random.default_rng(seed).standard_normal(y.shape)
                               .astype(dtype), "sliced")
        for _ in range(2):  # twice: gradients accumulate
            dx = layer.backward(dy)
        out.append((y, dx, layer.grads["W"], layer.grads["b"]))
    tol = 1e-12 if dtype == "float64" else 1e-5
    (y0, dx0, dW0, db0), (y1, dx1, dW1, db1) = out
    assert y1.dtype == np.dtype(dtype)
    assert rel_error(y1, y0) <= tol
    assert (dx0 is None) == (dx1 is None) == skip_dx
    if not skip_dx:
        assert rel_error(dx1, dx0) <= tol
    assert rel_error(dW1, dW0) <= tol
    # db sums B Ho Wo terms per channel (twice), which may cancel: the rounding of a sum
    # is bounded by the sum of its terms' sizes, not by the result. |f'| <= 1 for every
    # activation, so |dy| bounds each term.
    db_scale = 2 * np.abs(dy.astype(np.float64)).sum(axis=(0, 2, 3))
    assert np.all(np.abs(db1.astype(np.float64) - db0) <= tol * db_scale), (db1, db0)


@pytest.mark.parametrize("transposed", [False, True], ids=["Conv2d", "ConvTranspose2d"])
def test_results_are_new_arrays_unchanged_by_later_calls(backend_name, transposed):
    g = {"B": 4, "C": 3, "O": 2, "H": 9, "W": 8, "kernel": 3, "stride": 2, "padding": 1,
         "output_padding": 1}
    rng = np.random.default_rng(0)
    x, x2 = (rng.standard_normal((4, 3, 9, 8)).astype("float32") for _ in range(2))
    layer = make(g, transposed, np.random.default_rng(1), backend_name, "relu", "float32")
    twin = make(g, transposed, np.random.default_rng(1), backend_name, "relu", "float32")
    y1 = layer.forward(x)
    kept_y = y1.copy()
    dy = rng.standard_normal(y1.shape).astype("float32")
    dx1 = layer.backward(dy)
    kept_dx = dx1.copy()
    y2 = layer.forward(x2)
    assert y2 is not y1 and not np.shares_memory(y1, y2)
    assert layer.backward(dy) is not dx1
    np.testing.assert_array_equal(y1, kept_y)  # the second call left the first results alone
    np.testing.assert_array_equal(dx1, kept_dx)
    np.testing.assert_array_equal(y1, twin.forward(x))
    np.testing.assert_allclose(dx1, twin.backward(dy), rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------
# Shapes, dtypes and errors
# --------------------------------------------------------------------------


def test_output_shapes_follow_torch_formulas():
    assert Conv2d(1, 32, 4, 2, 1).output_shape((1, 28, 28)) == (32, 14, 14)
    assert Conv2d(1, 4, (3, 5), (1, 2), (0, 2)).output_shape((1, 10, 9)) == (4, 8, 5)
    assert ConvTranspose2d(64, 32, 4, 2, 1).output_shape((64, 7, 7)) == (32, 14, 14)
    assert ConvTranspose2d(2, 3, 3, 2, 1, output_padding=1).output_shape((2, 5, 4)) == (3, 10, 8)


def test_dtype_is_kept(backend_name):
    for cls in (Conv2d, ConvTranspose2d):
        layer = cls(2, 3, 3, padding=1, dtype="float32", backend=backend_name)
        y = layer.forward(np.ones((2, 2, 5, 5), np.float32))
        assert y.dtype == np.float32
        assert layer.backward(np.ones_like(y)).dtype == np.float32
        assert layer.grads["W"].dtype == np.float32


def test_spec_describes_the_constructor():
    layer = ConvTranspose2d(4, 2, (3, 5), stride=2, padding=(1, 0), output_padding=1,
                            activation="relu")
    assert layer.spec() == {"type": "ConvTranspose2d", "in_channels": 4, "out_channels": 2,
                            "kernel_size": [3, 5], "stride": 2, "padding": [1, 0],
                            "output_padding": 1, "activation": "relu"}
    assert Conv2d(1, 8, 3).spec() == {"type": "Conv2d", "in_channels": 1, "out_channels": 8,
                                      "kernel_size": 3, "stride": 1, "padding": 0}


@pytest.mark.parametrize("cls", [Conv2d, ConvTranspose2d])
def test_bad_input_raises_naming_the_layer_and_the_shapes(cls):
    layer = cls(3, 4, 5, dtype="float64")
    name = cls.__name__
    with pytest.raises(ValueError, match=rf"{name}: expected input of shape \(batch, 3, H, W\), "
                                         r"got \(2, 3, 8\)"):
        layer.forward(np.zeros((2, 3, 8)))
    with pytest.raises(ValueError, match=rf"{name}: expected input of shape \(3, H, W\), "
                                         r"got \(2, 8, 8\)"):
        layer.forward(np.zeros((1, 2, 8, 8)))
    with pytest.raises(ValueError, match=rf"{name}: expected input of dtype float64, got float32"):
        layer.forward(np.zeros((1, 3, 8, 8), np.float32))
    y = layer.forward(np.zeros((1, 3, 8, 8)))
    with pytest.raises(ValueError, match=rf"{name}: expected upstream gradient of shape "
                                         rf"\(1, 4, {y.shape[2]}, {y.shape[3]}\)"):
        layer.backward(np.zeros((2, *y.shape[1:])))


def test_input_too_small_for_the_kernel_is_an_error():
    with pytest.raises(ValueError, match=r"Conv2d: input \(1, 3, 6\) is too small for kernel "
                                         r"\(4, 4\) with stride \(1, 1\) and padding \(0, 0\)"):
        Conv2d(1, 2, 4).forward(np.zeros((2, 1, 3, 6), np.float32))
    with pytest.raises(ValueError, match=r"ConvTranspose2d: input \(1, 1, 1\) is too small"):
        ConvTranspose2d(1, 2, 1, padding=2).forward(np.zeros((2, 1, 1, 1), np.float32))


@pytest.mark.parametrize("kwargs, message", [
    ({"kernel_size": 0}, r"Conv2d: kernel_size must be >= 1, got 0"),
    ({"kernel_size": (3, 2, 1)}, r"Conv2d: kernel_size must be an int or a pair of ints"),
    ({"kernel_size": 3, "stride": 0}, r"Conv2d: stride must be >= 1, got 0"),
    ({"kernel_size": 3, "padding": -1}, r"Conv2d: padding must be >= 0, got -1"),
    ({"kernel_size": 3, "activation": "gelu"}, r"Conv2d: unknown activation 'gelu'"),
])
def test_bad_constructor_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Conv2d(2, 3, **kwargs)


def test_output_padding_must_be_smaller_than_the_stride():
    with pytest.raises(ValueError, match=r"ConvTranspose2d: output_padding \(2, 2\) must be "
                                         r"smaller than stride \(2, 2\)"):
        ConvTranspose2d(2, 3, 3, stride=2, output_padding=2)


def test_backend_ops_are_listed():
    from numpyvae.backend import OPS

    for op in ("conv2d_forward", "conv2d_backward", "conv_transpose2d_forward",
               "conv_transpose2d_backward"):
        assert op in OPS
        assert callable(getattr(get_backend("numpy"), op))
