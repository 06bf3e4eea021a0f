"""Your own data: .npy/.npz arrays and image folders, the held-out split, input checks, and
``numpyvae train --data`` with every later command finding the data again."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from assertions import one_line_error
from PIL import Image

import numpyvae
from numpyvae.app.cli import main
from numpyvae.app.data import DataFileError, DataNotFoundError, DataValueError, load_data
from numpyvae.app.data import download as dl
from numpyvae.app.data.datasets import load_dataset
from numpyvae.app.train import fit

TINY = ["--hidden", "16", "--latent-dim", "2", "--batch-size", "64", "--backend", "numpy",
        "--quiet"]


@pytest.fixture(autouse=True)
def isolated(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("NUMPYVAE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("NUMPYVAE_BACKEND", "numpy")


def images_u8(n=50, shape=(8, 8), seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


# ----------------------------------------------------------------------------- array files


def test_npy_images_are_scaled_and_split(tmp_path):
    x = images_u8(50)
    np.save(tmp_path / "a.npy", x)
    ds = load_data(tmp_path / "a.npy")
    assert ds.image_shape == (8, 8) and ds.input_dim == 64
    assert len(ds.x_train) == 45 and len(ds.x_test) == 5 and ds.test_fraction == 0.1
    assert ds.x_train.dtype == np.float32 and ds.y_train is None and ds.label_names == []
    # Every example lands in exactly one split, scaled by 1/255.
    both = np.concatenate([ds.x_train, ds.x_test]) * 255
    assert sorted(map(bytes, np.round(both).astype(np.uint8))) == sorted(
        map(bytes, x.reshape(50, -1)))
    # The split is the same every time, and another fraction gives another size.
    again = load_data(tmp_path / "a.npy")
    np.testing.assert_array_equal(again.x_test, ds.x_test)
    assert len(load_data(tmp_path / "a.npy", test_fraction=0.3).x_test) == 15


def test_npz_with_labels_names_and_channels(tmp_path):
    x, y = images_u8(40, (3, 6, 5)), np.arange(40) % 4
    np.savez(tmp_path / "c.npz", images=x, labels=y,
             label_names=np.array(["cat", "dog", "eel", "fox"]))
    ds = load_data(tmp_path / "c.npz", test_fraction=0.25)
    assert ds.image_shape == (3, 6, 5) and ds.x_train.shape == (30, 90)
    assert ds.label_names == ["cat", "dog", "eel", "fox"]
    # Labels travel with their images through the split.
    for xs, ys in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        for row, label in zip(xs, ys, strict=True):
            i = int(np.flatnonzero((x.reshape(40, -1) == np.round(row * 255)).all(axis=1))[0])
            assert y[i] == label


def test_npz_with_its_own_test_set_and_vectors(tmp_path):
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "v.npz", x_train=rng.random((20, 7)), x_test=rng.random((6, 7)),
             y_train=np.zeros(20, int), y_test=np.ones(6, int))
    ds = load_data(tmp_path / "v.npz")
    assert ds.image_shape == (7,) and len(ds.x_test) == 6 and ds.test_fraction is None
    assert ds.x_train.dtype == np.float64  # float data keep their values and precision
    assert ds.label_names == ["0", "1"]
    with pytest.raises(DataFileError, match="holds its own test set"):
        load_data(tmp_path / "v.npz", test_fraction=0.2)


def test_one_channel_images_are_gray(tmp_path):
    np.save(tmp_path / "g.npy", images_u8(10, (1, 4, 4)))
    assert load_data(tmp_path / "g.npy").image_shape == (4, 4)


@pytest.mark.parametrize("arrays, words", [
    ({"x": np.zeros((5, 4, 4, 3), np.uint8)}, ["channels-last", "np.moveaxis(x, -1, 1)"]),
    ({"a": np.zeros((5, 4)), "b": np.zeros((5, 4))}, ["which array holds the data", "'a'"]),
    ({"x": np.zeros(5)}, ["expected images (N, H, W)", "got shape (5,)"]),
    ({"x": np.zeros((0, 4))}, ["N >= 1"]),
    ({"x": np.array([["a", "b"]])}, ["expected real numbers"]),
    ({"x": np.zeros((5, 4)), "y": np.zeros(4, int)}, ["one label per example", "(5,)"]),
    ({"x": np.zeros((5, 4)), "y": np.full(5, 0.5)}, ["integer class labels"]),
    ({"x": np.zeros((5, 4)), "y": np.full(5, -1)}, ["labels >= 0"]),
])
def test_bad_array_files_say_what_is_wrong(tmp_path, arrays, words):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataFileError) as info:
        load_data(tmp_path / "bad.npz")
    for word in [str(tmp_path / "bad.npz"), *words]:
        assert word in str(info.value)


def test_missing_unknown_and_unreadable_paths(tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist"):
        load_data(tmp_path / "nope.npz")
    (tmp_path / "d.csv").write_text("1,2\n")
    with pytest.raises(DataFileError, match=r"expected a \.npy or \.npz"):
        load_data(tmp_path / "d.csv")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataFileError, match="not a readable NumPy array file"):
        load_data(tmp_path / "junk.npz")
    np.save(tmp_path / "one.npy", np.zeros((1, 4)))
    with pytest.raises(DataFileError, match="too few"):
        load_data(tmp_path / "one.npy")


# ----------------------------------------------------------------------------- image folders


def write_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_image_folder_one_subfolder_per_class(tmp_path):
    root = tmp_path / "shoes"
    gray = images_u8(12, (6, 5))
    for i, a in enumerate(gray):
        write_png(root / ("sandal" if i % 3 else "boot") / f"{i:02d}.png", a)
    (root / "boot" / "notes.txt").write_text("ignored")
    (root / ".hidden.png").write_bytes(b"ignored")
    ds = load_data(root, test_fraction=0.25)
    assert ds.label_names == ["boot", "sandal"] and ds.image_shape == (6, 5)
    assert len(ds.x_train) == 9 and len(ds.x_test) == 3
    labels = np.concatenate([ds.y_train, ds.y_test])
    assert np.bincount(labels).tolist() == [4, 8]
    # PNG is lossless: the pixels come back exactly, scaled.
    rows = {bytes(np.round(r * 255).astype(np.uint8)) for r in np.concatenate(
        [ds.x_train, ds.x_test])}
    assert rows == {bytes(a.reshape(-1)) for a in gray}


def test_image_folder_colour_jpeg_with_train_and_test(tmp_path):
    rng = np.random.default_rng(2)
    for split, n in (("train", 6), ("test", 2)):
        for cls in ("red", "blue"):
            for i in range(n):
                a = np.zeros((8, 8, 3), np.uint8)
                a[..., 0 if cls == "red" else 2] = rng.integers(150, 256)
                Image.fromarray(a).save(_mk(tmp_path / "c" / split / cls) / f"{i}.JPG")
    ds = load_data(tmp_path / "c")
    assert ds.image_shape == (3, 8, 8) and ds.test_fraction is None
    assert len(ds.x_train) == 12 and len(ds.x_test) == 4 and ds.label_names == ["blue", "red"]
    red = ds.x_train[ds.y_train == 1].reshape(-1, 3, 8, 8)
    assert red[:, 0].mean() > 0.5 and red[:, 2].mean() < 0.1  # channel order kept (JPEG, ~)


def _mk(folder):
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_image_folder_errors(tmp_path):
    write_png(tmp_path / "a" / "x" / "1.png", images_u8(1, (6, 6))[0])
    write_png(tmp_path / "a" / "x" / "2.png", images_u8(1, (7, 6))[0])
    with pytest.raises(DataFileError, match=r"2\.png: 6x7 pixels.*same size"):
        load_data(tmp_path / "a")
    _mk(tmp_path / "empty" / "sub")
    with pytest.raises(DataFileError, match="no PNG or JPEG images"):
        load_data(tmp_path / "empty")
    write_png(tmp_path / "m" / "c" / "1.png", images_u8(1, (6, 6))[0])
    write_png(tmp_path / "m" / "2.png", images_u8(1, (6, 6))[0])
    with pytest.raises(DataFileError, match="both images"):
        load_data(tmp_path / "m")
    (_mk(tmp_path / "b" / "c") / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataFileError, match="broken.png: not a readable image"):
        load_data(tmp_path / "b")


# ----------------------------------------------------------------------------- checks, fit


def test_fit_accepts_image_shaped_arrays():
    x = images_u8(64, (4, 4)).astype(np.float32) / 255
    model = numpyvae.VAE(16, hidden_dims=(8,), latent_dim=2, backend="numpy")
    history = fit(model, x, x[:8], epochs=1, batch_size=32, progress=False)
    assert history[0]["test_loss"] is not None
    with pytest.raises(ValueError, match=r"expected shape \(N >= 1, 16\), got \(64, 5, 5\)"):
        fit(model, np.zeros((64, 5, 5)), epochs=1, progress=False)


def test_bernoulli_needs_unit_range_before_training():
    model = numpyvae.VAE(16, hidden_dims=(8,), latent_dim=2, backend="numpy")
    x = images_u8(32, (16,)).astype(np.float32)
    with pytest.raises(DataValueError) as info:
        fit(model, x, epochs=1, progress=False)
    message = str(info.value)
    for words in ("x_train has values from", "to 255", "Bernoulli".lower(), "[0, 1]",
                  "x / 255", "gaussian"):
        assert words in message, message
    # A Gaussian decoder takes any finite values.
    g = numpyvae.VAE(16, hidden_dims=(8,), latent_dim=2, likelihood="gaussian", backend="numpy")
    fit(g, x / 255 * 3 - 1, epochs=1, progress=False)


def test_nan_and_inf_are_named_with_count_and_first_index():
    model = numpyvae.VAE(12, hidden_dims=(8,), latent_dim=2, likelihood="gaussian",
                         backend="numpy")
    x = np.zeros((10, 3, 4), np.float32)
    x[2, 1, 3] = x[7, 0, 0] = np.nan
    x[4, 2, 2] = np.inf
    with pytest.raises(DataValueError) as info:
        fit(model, np.zeros((4, 12)), x, epochs=1, progress=False)
    message = str(info.value)
    assert "x_test holds 2 NaN values (the first at index (2, 7))" in message, message
    assert "1 infinite value (the first at index (4, 10))" in message, message
    assert "learning rate" not in message


def test_cli_rejects_unscaled_data_in_one_line(tmp_path, capsys):
    np.save(tmp_path / "raw.npy", images_u8(30, (4, 4)).astype(np.float32))
    assert main(["train", "--data", str(tmp_path / "raw.npy"), "--out", str(tmp_path / "r"),
                 *TINY]) == 2
    one_line_error(capsys, "needs data in [0, 1]", "x / 255")
    nan = np.full((30, 4), 0.5)
    nan[3, 1] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    assert main(["train", "--data", str(tmp_path / "nan.npy"), "--out", str(tmp_path / "r2"),
                 *TINY]) == 2
    one_line_error(capsys, "1 NaN value (the first at index")


# ----------------------------------------------------------------------------- --data-dir


def test_a_missing_data_dir_is_an_error_never_a_download(tmp_path, monkeypatch, capsys):
    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(dl, "fetch", no_download)
    monkeypatch.setattr("numpyvae.app.data.datasets.fetch", no_download)
    typo = tmp_path / "fashon-mnist"
    with pytest.raises(DataNotFoundError, match="does not exist.*nothing was downloaded"):
        load_dataset("fashion-mnist", typo)
    assert not typo.exists()
    assert main(["train", "--dataset", "mnist", "--data-dir", str(typo), "--out",
                 str(tmp_path / "r")]) == 2
    one_line_error(capsys, f"data folder {typo} does not exist")
    (tmp_path / "file").write_text("")
    with pytest.raises(DataNotFoundError, match="is not a folder"):
        load_dataset("mnist", tmp_path / "file")


# ----------------------------------------------------------------------------- the command


def test_train_on_a_file_then_every_command_reopens_it(tmp_path, capsys):
    x, y = images_u8(120, (6, 6)), np.arange(120) % 3
    np.savez(tmp_path / "toy.npz", x=x, y=y)
    out = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "toy.npz"), "--test-fraction", "0.25",
                 "--epochs", "1", "--out", str(out), *TINY]) == 0
    config = json.loads((out / "config.json").read_text())
    record = config["data"]
    assert record["path"] == str((tmp_path / "toy.npz").resolve())
    assert record["test_fraction"] == 0.25 and record["n_test"] == 30
    assert config["dataset"] == "toy.npz" and config["image_shape"] == [6, 6]
    assert {p.name for p in (out / "figures").iterdir()} >= {"reconstructions.png",
                                                            "latent_scatter.png", "manifold.png"}
    capsys.readouterr()
    assert main(["evaluate", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_test"] == 30
    for command in (["reconstruct", "-n", "4"], ["interpolate", "--pairs", "2"], ["figures"]):
        assert main([command[0], str(out), *command[1:]]) == 0
    # The data moved: the recorded place fails with what to do; --data points to it.
    moved = tmp_path / "elsewhere.npz"
    shutil.move(tmp_path / "toy.npz", moved)
    capsys.readouterr()
    assert main(["evaluate", str(out)]) == 2
    one_line_error(capsys, "no longer exists", "--data")
    assert main(["evaluate", str(out), "--json", "--data", str(moved)]) == 0
    assert json.loads(capsys.readouterr().out)["n_test"] == 30
    # Other data under the same name are refused: the held-out set would differ.
    np.savez(tmp_path / "toy.npz", x=x[::-1], y=y)
    assert main(["evaluate", str(out)]) == 2
    one_line_error(capsys, "not the data this run was trained on")
    # Resuming keeps the data and the split.
    np.savez(tmp_path / "toy.npz", x=x, y=y)
    assert main(["train", "--out", str(out), "--resume", "--epochs", "2", "--quiet"]) == 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


def test_train_on_an_image_folder_and_on_vectors(tmp_path, capsys):
    for i, a in enumerate(images_u8(40, (5, 5))):
        write_png(tmp_path / "imgs" / ("odd" if i % 2 else "even") / f"{i}.png", a)
    assert main(["train", "--data", str(tmp_path / "imgs"), "--epochs", "1", "--out",
                 str(tmp_path / "r1"), *TINY]) == 0
    assert json.loads((tmp_path / "r1" / "config.json").read_text())["data"]["n_test"] == 4
    np.save(tmp_path / "v.npy", np.random.default_rng(0).random((50, 7)))
    assert main(["train", "--data", str(tmp_path / "v.npy"), "--epochs", "1", "--out",
                 str(tmp_path / "r2"), *TINY]) == 0
    # Vectors have no picture: only the figures that do not draw examples.
    assert {p.name for p in (tmp_path / "r2" / "figures").iterdir()} == {
        "latent_scatter.png", "loss_curves.png", "kl_per_dim.png"}
    capsys.readouterr()
    assert main(["sample", str(tmp_path / "r2")]) == 2
    one_line_error(capsys, "vectors of shape (7,), not images")


def test_data_option_conflicts(tmp_path, capsys):
    np.save(tmp_path / "a.npy", images_u8(20, (4, 4)))
    assert main(["train", "--data", str(tmp_path / "a.npy"), "--dataset", "mnist",
                 "--out", str(tmp_path / "r")]) == 2
    one_line_error(capsys, "not both")
    assert main(["train", "--test-fraction", "0.2", "--out", str(tmp_path / "r")]) == 2
    one_line_error(capsys, "own test sets")
    with pytest.raises(SystemExit):
        main(["train", "--data", str(tmp_path / "a.npy"), "--test-fraction", "1.5"])
    one_line_error(capsys, "between 0 and 1")
    assert main(["train", "--data", str(tmp_path / "missing.npy"), "--out",
                 str(tmp_path / "r")]) == 2
    one_line_error(capsys, "missing.npy does not exist")
    assert not (tmp_path / "r").exists()
