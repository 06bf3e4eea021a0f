"""The one-page VAE (numpyvae/one_page_vae.py) is the library's default VAE, number for number.

Its loss and every gradient equal ``VAE.loss_and_grads`` on the same weights and
noise in float64 (to 1e-12), its gradient agrees with central differences, its
Adam step is ``numpyvae.Adam``'s, its loop trains, and it imports nothing but
NumPy and the standard library, so it can be read and copied on its own.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import numpyvae
from numpyvae import one_page_vae as page
from numpyvae.gradcheck import numerical_gradient, rel_error

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "numpyvae" / "one_page_vae.py"


def library_model(sizes, seed=0):
    """The library's default MLP VAE of ``sizes = (D, H, L)``, float64, NumPy backend."""
    D, H, L = sizes
    return numpyvae.VAE(D, hidden_dims=(H,), latent_dim=L, dtype="float64", seed=seed,
                        backend="numpy")


def copied_params(model):
    """The model's weights, copied by name into the one-page form (a dict of arrays)."""
    return {name: np.array(p, copy=True) for name, p in model.params.items()}


def batch(rng, B, D, L):
    """Values in [0, 1] with some pixels exactly 0 and 1, and the noise for them."""
    x = rng.random((B, D))
    x[:, ::3] = np.round(x[:, ::3])
    return x, rng.standard_normal((B, L))


def test_initial_weights_are_the_librarys_names_shapes_and_draws():
    sizes = (12, 7, 3)
    model = library_model(sizes, seed=5)
    params = page.init_params(np.random.default_rng(5), sizes)
    assert list(params) == list(model.params)
    for name, p in model.params.items():
        np.testing.assert_array_equal(params[name], p, err_msg=name)


@pytest.mark.parametrize("beta", [1.0, 0.37])
def test_loss_and_every_gradient_equal_the_librarys(beta):
    sizes = (784, 400, 20)  # the library's default model
    model = library_model(sizes, seed=1)
    # Move the weights off their initial draw, so no ReLU pattern is special.
    rng = np.random.default_rng(2)
    for p in model.params.values():
        p += 0.05 * rng.standard_normal(p.shape)
    params = copied_params(model)
    x, eps = batch(rng, 32, sizes[0], sizes[2])

    expected = model.loss_and_grads(x, eps=eps, beta=beta)
    loss, grads = page.loss_and_grads(params, x, eps, beta)

    assert abs(loss - expected.loss) <= 1e-12 * abs(expected.loss)
    assert grads.keys() == expected.grads.keys()
    for name, g in expected.grads.items():
        assert grads[name].shape == g.shape, name
        assert rel_error(grads[name], g) <= 1e-12, name
    # The two terms are the library's too: the loss is recon + beta * kl.
    recon, kl = model.elbo_terms(x, eps=eps)
    assert abs(loss - (recon.mean() + beta * kl.mean())) <= 1e-12 * abs(loss)
    assert loss != pytest.approx(page.loss_and_grads(params, x, eps, beta + 1.0)[0])


def test_gradient_agrees_with_central_differences():
    sizes = (6, 5, 3)
    rng = np.random.default_rng(3)
    params = page.init_params(rng, sizes)
    x, eps = batch(rng, 4, sizes[0], sizes[2])
    beta = 0.7
    _, grads = page.loss_and_grads(params, x, eps, beta)
    for name, p in params.items():
        numeric = numerical_gradient(lambda: page.loss_and_grads(params, x, eps, beta)[0], p)
        assert np.any(numeric != 0), name
        assert rel_error(grads[name], numeric) <= 1e-7, name


def test_adam_steps_equal_numpyvae_adam():
    sizes = (20, 9, 4)
    model = library_model(sizes, seed=4)
    params = copied_params(model)
    optimizer = numpyvae.Adam(model.params, lr=1e-2, backend="numpy")
    state = page.adam_init(params)
    rng = np.random.default_rng(6)
    for _ in range(3):
        x, eps = batch(rng, 8, sizes[0], sizes[2])
        result = model.loss_and_grads(x, eps=eps, beta=1.0)
        same_grads = {name: np.array(g, copy=True) for name, g in result.grads.items()}
        optimizer.step(result.grads)
        page.adam_step(params, same_grads, state, lr=1e-2)
        for name, p in model.params.items():
            np.testing.assert_array_equal(params[name], p, err_msg=name)
    assert state["step"] == optimizer.step_count == 3
    for name in params:
        np.testing.assert_array_equal(state["m"][name], optimizer.state["m"][name])
        np.testing.assert_array_equal(state["v"][name], optimizer.state["v"][name])


def test_three_training_steps_end_to_end_equal_the_librarys():
    """Each side computes its own gradients from its own weights, then takes Adam's step."""
    sizes = (30, 16, 5)
    model = library_model(sizes, seed=7)
    params = copied_params(model)
    optimizer = numpyvae.Adam(model.params, lr=1e-2, backend="numpy")
    state = page.adam_init(params)
    rng = np.random.default_rng(8)
    for _ in range(3):
        x, eps = batch(rng, 10, sizes[0], sizes[2])
        expected = model.loss_and_grads(x, eps=eps, beta=2.0)
        optimizer.step(expected.grads)
        loss, grads = page.loss_and_grads(params, x, eps, 2.0)
        page.adam_step(params, grads, state, lr=1e-2)
        assert abs(loss - expected.loss) <= 1e-12 * abs(expected.loss)
        for name, p in model.params.items():
            assert rel_error(params[name], p) <= 1e-12, name


def test_train_lowers_the_loss_and_repeats_with_the_seed():
    data = page.bars(400, rng=np.random.default_rng(0))
    params, losses = page.train(data, sizes=(64, 32, 4), epochs=6, batch_size=50, lr=3e-3)
    assert len(losses) == 6 and all(np.isfinite(losses))
    assert losses[-1] < 0.9 * losses[0]
    again, losses_again = page.train(data, sizes=(64, 32, 4), epochs=6, batch_size=50, lr=3e-3)
    assert losses_again == losses
    assert all(np.array_equal(again[name], params[name]) for name in params)


def test_bars_are_binary_images_of_rows_or_columns():
    images = page.bars(50, size=5, rng=np.random.default_rng(1)).reshape(50, 5, 5)
    assert set(np.unique(images)) <= {0.0, 1.0}
    for image in images:
        rows_lit = all(np.array_equal(column, image[:, 0]) for column in image.T)
        columns_lit = all(np.array_equal(row, image[0]) for row in image)
        assert rows_lit or columns_lit


def test_running_the_module_prints_the_loss_falling():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.run([sys.executable, "-m", "numpyvae.one_page_vae"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=True)
    losses = [float(line.split("loss")[1].split()[0]) for line in proc.stdout.splitlines()]
    assert len(losses) >= 5
    assert losses[-1] < losses[0]


def test_imports_nothing_but_numpy_and_the_standard_library():
    tree = ast.parse(SOURCE.read_text(encoding="utf-8"))
    imported = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"line {node.lineno}: a relative import"
            imported.append(node.module)
    assert "numpy" in imported
    allowed = {"numpy", "__future__", *sys.stdlib_module_names}
    assert [name for name in imported if name.split(".")[0] not in allowed] == []


def test_float32_weights_and_data_stay_float32():
    """What ``benchmarks/plain_numpy.py`` times: the same page, in float32 throughout."""
    rng = np.random.default_rng(9)
    params = {name: p.astype(np.float32) for name, p in page.init_params(rng, (10, 6, 2)).items()}
    x, eps = (a.astype(np.float32) for a in batch(rng, 5, 10, 2))
    loss, grads = page.loss_and_grads(params, x, eps, 1.0)
    state = page.adam_init(params)
    page.adam_step(params, grads, state)
    for name in params:
        assert grads[name].dtype == params[name].dtype == state["v"][name].dtype == np.float32
    assert np.isfinite(loss)
