"""``numpyvae export``'s errors and the explorer page's contents, without a browser.

The page in a browser, with trained runs, is tests/test_explorer.py (slow tier).
"""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest
from assertions import one_line_error

import numpyvae
from numpyvae.app.cli import main
from numpyvae.app.explorer import ExportError, decoder_program, explorer_data, page
from numpyvae.app.options import TRAIN_DEFAULTS, build_model
from numpyvae.layers import LabelChannels, Linear, Sequential

#: The default model's page stays below this (measured: 1.8 MB).
MAX_PAGE_BYTES = 3_000_000


def test_missing_run_folder_and_not_a_run_folder(tmp_path, capsys):
    page_path = str(tmp_path / "e.html")
    assert main(["export", str(tmp_path / "nope"), "--html", page_path]) == 2
    one_line_error(capsys, f"run folder not found: {tmp_path / 'nope'}")
    assert main(["export", str(tmp_path), "--html", page_path]) == 2
    one_line_error(capsys, "is not a run folder (no config.json)")
    assert not (tmp_path / "e.html").exists()


def test_the_page_must_be_an_html_file(tmp_path, capsys):
    assert main(["export", str(tmp_path), "--html", str(tmp_path / "e.png")]) == 2
    one_line_error(capsys, "--html: expected a file name ending in .html", "e.png")


def test_html_is_required(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["export", str(tmp_path)])
    assert info.value.code == 2
    one_line_error(capsys, "the following arguments are required: --html")


def test_a_decoder_layer_the_page_cannot_run_is_named():
    decoder = Sequential(Linear(2, 20), LabelChannels((1, 2, 2), 16))
    with pytest.raises(ExportError, match=r"cannot export the decoder's layer "
                                          r"LabelChannels\(image_shape=\(1, 2, 2\)"):
        decoder_program(decoder)


def test_nested_sequentials_and_every_kind_of_layer():
    from numpyvae.conv import Conv2d, ConvTranspose2d
    from numpyvae.layers import Flatten, LeakyReLU, Reshape, Softplus, Tanh

    rng = np.random.default_rng(0)
    decoder = Sequential(Sequential(Linear(2, 8, "tanh", rng=rng), LeakyReLU(0.2)),
                         Reshape(2, 2, 2), ConvTranspose2d(2, 3, 3, 2, 1, 1, rng=rng),
                         Softplus(), Conv2d(3, 1, 3, 1, 1, rng=rng), Tanh(), Flatten())
    steps = decoder_program(decoder)
    assert [s["type"] for s in steps] == ["linear", "activation", "reshape", "conv_transpose2d",
                                          "activation", "conv2d", "activation", "flatten"]
    W = np.frombuffer(base64.b64decode(steps[3]["W"]), "<f4").reshape(2, 3, 3, 3)
    np.testing.assert_array_equal(W, decoder.children[2].params["W"])
    assert steps[3]["output_padding"] == [1, 1] and steps[1]["alpha"] == 0.2


def test_the_default_models_page_is_small_and_holds_no_external_script():
    model = build_model(TRAIN_DEFAULTS, 784, backend="numpy", image_shape=(28, 28),
                        num_classes=5)
    rng = np.random.default_rng(0)
    x, y = rng.random((2000, 784)).astype(np.float32), rng.integers(0, 5, 2000)
    data = explorer_data(model, x, y, image_shape=(28, 28),
                         label_names=["a</script>", "b", "c", "d", "e"], title="t")
    text = page(data)
    assert len(text.encode("utf-8")) < MAX_PAGE_BYTES
    assert not re.search(r"<script[^>]*\bsrc=|<link[^>]*stylesheet|https?://", text)
    assert text.count("</script>") == 2  # a label's "</script>" is escaped in the data
    embedded = text.split('id="numpyvae-data">')[1].split("</script>")[0]
    data_back = json.loads(embedded)
    assert data_back["scatter"]["names"][0] == "a</script>"
    assert data_back["latent_dim"] == 20 and len(data_back["sliders"]) == 8
    activity = [s["activity"] for s in data_back["sliders"]]
    assert activity == sorted(activity, reverse=True)


def test_a_vector_run_has_no_picture():
    model = numpyvae.VAE(6, [4], 2, seed=0)
    with pytest.raises(ExportError, match="vectors of shape"):
        explorer_data(model, np.zeros((3, 6), np.float32), image_shape=(6,))


@pytest.mark.parametrize("n", [1, 2])
def test_a_test_set_of_one_or_two_codes_still_gives_a_page(n):
    model = numpyvae.VAE(16, [4], 3, seed=0)
    data = explorer_data(model, np.full((n, 16), 0.5, np.float32), np.zeros(n, np.int64),
                         image_shape=(4, 4))
    assert data["scatter"]["n"] == n and len(data["scatter"]["projection"]) == 2
    assert all(len(row) == 3 for row in data["scatter"]["projection"])
    json.loads(page(data).split('id="numpyvae-data">')[1].split("</script>")[0])


def test_an_empty_test_set_is_said():
    model = numpyvae.VAE(16, [4], 3, seed=0)
    with pytest.raises(ExportError, match="the test set holds no examples"):
        explorer_data(model, np.zeros((0, 16), np.float32), image_shape=(4, 4))


def test_an_autoencoder_starts_at_the_mean_of_its_codes():
    model = numpyvae.Autoencoder(16, [4], 2, seed=0)
    x = np.random.default_rng(0).random((50, 16)).astype(np.float32)
    data = explorer_data(model, x, image_shape=(4, 4))
    np.testing.assert_allclose(data["start"], model.embed(x).mean(axis=0), rtol=1e-5)
    assert data["scatter"]["names"] == [] and data["classes"] is None
