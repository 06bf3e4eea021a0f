"""The latent-space explorer page (``numpyvae export --html``) in headless Chromium.

Tiny runs are trained on small files of random images (an MLP with a 2-D latent
space, a conditional MLP with five dimensions on colour images and a Gaussian
decoder, a convolutional VAE in float64, an autoencoder with one dimension),
exported, and opened from a ``file://`` URL: the
page must start without a console error, and for a dozen codes the image its
JavaScript forward pass computes must equal :meth:`~numpyvae.model.VAE.decode`
within 1e-5. The image it draws must be that mean, and dragging over the
latent space or moving a slider must change the code. A screenshot of each page
is kept among the test's artefacts (``$NUMPYVAE_ARTEFACTS/explorer/``, or the
test's temporary folder). Debian's ``chromium`` and ``chromium-driver`` are
needed; without them the test skips (in CI it fails).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from browser import chromium

from numpyvae.app.cli import main
from numpyvae.app.run import load_run

#: The page of any run, and the default model's in tests/test_export.py, stays below this.
MAX_PAGE_BYTES = 3_000_000

#: (name, image shape of the data file, options of numpyvae train)
RUNS = [
    ("mlp-2d", (8, 8), ["--hidden", "16", "--latent-dim", "2"]),
    ("mlp-5d-conditional-colour", (3, 8, 8),
     ["--hidden", "16", "--latent-dim", "5", "--conditional", "--likelihood", "gaussian"]),
    ("conv-3d-float64", (8, 8), ["--arch", "conv", "--channels", "2", "3", "--latent-dim", "3",
                                 "--dtype", "float64"]),
    ("mlp-1d-autoencoder", (8, 8), ["--hidden", "16", "--latent-dim", "1", "--model",
                                    "autoencoder"]),
]


@pytest.fixture(autouse=True)
def isolated(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("NUMPYVAE_CACHE", str(tmp_path_factory.getbasetemp() / "numpyvae-cache"))
    monkeypatch.setenv("NUMPYVAE_BACKEND", "numpy")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Debian Chromium through its chromedriver, as in tests/test_docs.py."""
    yield from chromium(tmp_path_factory.mktemp("chromium-profile"))


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory) -> Path:
    """Where the screenshots go: ``$NUMPYVAE_ARTEFACTS/explorer/``, else a temporary folder."""
    root = os.environ.get("NUMPYVAE_ARTEFACTS")
    folder = Path(root) / "explorer" if root else tmp_path_factory.mktemp("explorer-shots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _data_file(path, shape, n=240, classes=3, seed=0):
    """Random 8-bit images of ``shape`` with labels, as numpyvae train --data reads them."""
    rng = np.random.default_rng(seed)
    np.savez(path, x=rng.integers(0, 256, (n, *shape), dtype=np.uint8),
             y=rng.integers(0, classes, n))
    return path


def _train_and_export(tmp_path, shape, options, capsys):
    data = _data_file(tmp_path / "data.npz", shape)
    run, page = tmp_path / "run", tmp_path / "explorer.html"
    assert main(["train", "--data", str(data), "--epochs", "2", "--batch-size", "64",
                 "--backend", "numpy", "--no-figures", "--out", str(run), *options]) == 0
    said = capsys.readouterr().err.splitlines()
    assert f"numpyvae export {run} --html explorer.html" in said[-1]  # the closing line
    assert main(["export", str(run), "--html", str(page), "--backend", "numpy"]) == 0
    assert capsys.readouterr().out == f"{page}\n"
    return run, page


def _console_errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


_CANVAS = """
const c = document.getElementById('image');
return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data);
"""


def _drawn(driver, shape) -> np.ndarray:
    """The decoded image as the page drew it, in the model's layout (C*H*W,), 0..255."""
    rgba = np.array(driver.execute_script(_CANVAS)).reshape(-1, 4)
    return (rgba[:, 0] if len(shape) == 2 else rgba[:, :3].T.reshape(-1)).astype(float)


def _shown(mean) -> np.ndarray:
    return np.round(255 * np.clip(mean, 0, 1))


@pytest.mark.parametrize("name, shape, options", RUNS, ids=[r[0] for r in RUNS])
def test_the_page_decodes_as_the_model_does(name, shape, options, tmp_path, browser,
                                            artefacts, capsys):
    run_dir, page = _train_and_export(tmp_path, shape, options, capsys)
    assert page.stat().st_size < MAX_PAGE_BYTES
    html = page.read_text(encoding="utf-8")
    assert "<script src" not in html and "http://" not in html and "https://" not in html
    model = load_run(run_dir, backend="numpy").model
    conditional = "--conditional" in options

    browser.get(page.resolve().as_uri())
    assert _console_errors(browser) == []
    assert browser.execute_script("return document.getElementById('error').textContent") == ""
    assert browser.execute_script("return window.numpyvaeExplorer.latentDim") == model.latent_dim

    rng = np.random.default_rng(1)
    z = (2 * rng.standard_normal((12, model.latent_dim))).astype(model.dtype)
    labels = np.arange(12) % 3
    got = np.array(browser.execute_script(
        "return arguments[0].map((z, i) => window.numpyvaeExplorer.decode(z, arguments[1][i]))",
        z.tolist(), labels.tolist()))
    want = (model.decode(z, labels=labels) if conditional else model.decode(z)).reshape(12, -1)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)

    # The image drawn is the mean at the page's code (grey levels, or colour).
    shown = browser.execute_script("return window.numpyvaeExplorer.set(arguments[0], 2)",
                                   z[3].tolist())
    at = model.decode(z[3:4], labels=2) if conditional else model.decode(z[3:4])
    np.testing.assert_allclose(shown, at.reshape(-1), rtol=0, atol=1e-5)
    assert np.abs(_drawn(browser, shape) - _shown(np.array(shown))).max() <= 1

    # Dragging over the latent space moves the code; a slider moves its dimension.
    from selenium.webdriver.common.action_chains import ActionChains

    before = browser.execute_script("return window.numpyvaeExplorer.z()")
    pad = browser.find_element("id", "pad")
    ActionChains(browser).move_to_element_with_offset(pad, 60, -80).click().perform()
    after = np.array(browser.execute_script("return window.numpyvaeExplorer.z()"))
    assert not np.allclose(after, before)
    label = 2 if conditional else 0
    mean = browser.execute_script("return window.numpyvaeExplorer.decode(arguments[0], "
                                  "arguments[1])", after.tolist(), label)
    assert np.abs(_drawn(browser, shape) - _shown(np.array(mean))).max() <= 1
    sliders = browser.find_elements("css selector", "#sliders input")
    assert len(sliders) == (0 if model.latent_dim <= 2 else min(8, model.latent_dim))
    if sliders:
        browser.execute_script("arguments[0].value = 1.25; "
                               "arguments[0].dispatchEvent(new Event('input'))", sliders[0])
        z_now = browser.execute_script("return window.numpyvaeExplorer.z()")
        assert 1.25 in [round(v, 2) for v in z_now]
    if conditional:
        assert browser.execute_script("return document.getElementById('class').options.length") \
            == model.num_classes
    assert _console_errors(browser) == []
    assert browser.save_screenshot(str(artefacts / f"explorer_{name}.png"))


def test_the_page_fits_a_phone_and_the_pad_maps_touches_where_it_is_drawn(tmp_path, browser,
                                                                         artefacts, capsys):
    """At 390 px nothing scrolls sideways; the pad shrinks, and a tap means the same code.

    The pad is drawn 420 px wide and scaled down to the window by CSS; a tap at
    a point of the scaled pad must give the code of that point of the drawing,
    as a click at the same point of the full-size pad does.
    """
    name, shape, options = RUNS[0]  # a 2-D latent space: the pad sets the whole code
    _, page = _train_and_export(tmp_path, shape, options, capsys)
    from selenium.webdriver.common.action_chains import ActionChains

    codes = {}
    try:
        for width in (1280, 390):
            browser.set_window_size(width, 1000)
            browser.get(page.resolve().as_uri())
            assert _console_errors(browser) == []
            seen = browser.execute_script(
                "const pad = document.getElementById('pad').getBoundingClientRect();"
                "return {window: window.innerWidth, page: document.documentElement.scrollWidth,"
                " pad: pad.width, right: pad.right};")
            assert seen["window"] == width
            assert seen["page"] <= width, f"the page scrolls sideways at {width} px: {seen}"
            assert seen["right"] <= width, f"the pad sticks out at {width} px: {seen}"
            pad = browser.find_element("id", "pad")
            # a quarter of the pad's shown width right of its centre, a quarter above it
            ActionChains(browser).move_to_element_with_offset(
                pad, round(seen["pad"] / 4), -round(seen["pad"] / 4)).click().perform()
            codes[width] = np.array(browser.execute_script(
                "return window.numpyvaeExplorer.z()"))
            assert browser.save_screenshot(str(artefacts / f"explorer_{width}px.png"))
            assert _console_errors(browser) == []
        assert seen["pad"] < 390  # scaled down on the phone
        np.testing.assert_allclose(codes[390], codes[1280], atol=0.05 * np.abs(codes[1280]).max())
        assert not np.allclose(codes[1280], 0)
    finally:
        browser.set_window_size(1280, 1000)
