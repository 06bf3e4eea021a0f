"""Datasets: IDX parsing and its errors, where files are found, shapes, binarization, real data."""

from __future__ import annotations

import gzip
import sys

import numpy as np
import pytest

from numpyvae.app.data import (
    DataFileError,
    DataNotFoundError,
    binarize,
    load_dataset,
    read_idx,
    shapes,
    write_idx,
)
from numpyvae.app.data import download as dl
from numpyvae.app.data.datasets import shapes_cache_path
from numpyvae.app.data.idx import parse_idx, read_image_label_pair

FILES = dl.IDX_FILES


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Point the user cache at a folder shared by this session, never the home folder."""
    cache = tmp_path_factory.getbasetemp() / "numpyvae-cache"
    monkeypatch.setenv("NUMPYVAE_CACHE", str(cache))
    monkeypatch.delenv("NUMPYVAE_DATA", raising=False)
    return cache


def make_idx_dataset(folder, n_train=12, n_test=5, seed=0, gz=True, shape=(28, 28)):
    """Write a small, valid set of the four IDX files; return the arrays."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for role, array in arrays.items():
        name = FILES[role] if gz else FILES[role].removesuffix(".gz")
        write_idx(folder / name, array)
    return arrays


# ----------------------------------------------------------------------------- IDX format


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
@pytest.mark.parametrize("name", ["a.idx.gz", "a.idx"])
def test_idx_round_trip(tmp_path, dtype, name):
    rng = np.random.default_rng(1)
    array = (rng.standard_normal((3, 4, 5)) * 100).astype(dtype)
    path = write_idx(tmp_path / name, array)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.dtype.isnative
    np.testing.assert_array_equal(back, array)


def test_idx_header_is_the_documented_one(tmp_path):
    path = write_idx(tmp_path / "x", np.zeros((2, 28, 28), np.uint8))
    raw = path.read_bytes()
    assert raw[:4] == bytes([0, 0, 0x08, 3])
    assert int.from_bytes(raw[4:8], "big") == 2 and len(raw) == 16 + 2 * 784


def test_gzip_detected_by_content_not_name(tmp_path):
    array = np.arange(10, dtype=np.uint8)
    raw_named_gz = tmp_path / "labels.gz"
    write_idx(raw_named_gz, array, compress=False)
    np.testing.assert_array_equal(read_idx(raw_named_gz), array)


def test_pair_reads_images_and_labels(tmp_path):
    arrays = make_idx_dataset(tmp_path)
    images, labels = read_image_label_pair(tmp_path / FILES["train_images"],
                                           tmp_path / FILES["train_labels"])
    np.testing.assert_array_equal(images, arrays["train_images"])
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, arrays["train_labels"])


# ----------------------------------------------------------------------------- bad data


def test_truncated_gzip(tmp_path):
    path = write_idx(tmp_path / "t.gz", np.zeros((50, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(DataFileError, match=r"t\.gz.*truncated"):
        read_idx(path)


def test_corrupt_gzip(tmp_path):
    path = write_idx(tmp_path / "c.gz", np.arange(1000, dtype=np.int32))
    data = bytearray(path.read_bytes())
    data[20:40] = bytes(20)
    path.write_bytes(bytes(data))
    with pytest.raises(DataFileError, match=r"c\.gz.*(corrupt|truncated)"):
        read_idx(path)


def test_not_an_idx_file(tmp_path):
    path = tmp_path / "notes.gz"
    path.write_bytes(gzip.compress(b"hello, this is not an IDX file"))
    with pytest.raises(DataFileError, match=r"notes\.gz: not an IDX file \(magic number 0x"):
        read_idx(path)


def test_truncated_data(tmp_path):
    path = write_idx(tmp_path / "short", np.zeros((4, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataFileError, match=r"short: the file is truncated.*\(4, 28, 28\)"):
        read_idx(path)


def test_too_long_data():
    data = bytes([0, 0, 8, 1]) + (3).to_bytes(4, "big") + bytes(5)
    with pytest.raises(DataFileError, match="longer than its header says"):
        parse_idx(data)


def test_too_short():
    with pytest.raises(DataFileError, match="too short"):
        parse_idx(b"\x00\x00")


def test_wrong_magic_labels_given_as_images(tmp_path):
    make_idx_dataset(tmp_path)
    with pytest.raises(DataFileError, match=r"wrong IDX magic number 0x00000801.*0x00000803"):
        read_image_label_pair(tmp_path / FILES["train_labels"], tmp_path / FILES["train_labels"])


def test_wrong_magic_float_images(tmp_path):
    write_idx(tmp_path / "img.gz", np.zeros((3, 28, 28), np.float32))
    write_idx(tmp_path / "lab.gz", np.zeros(3, np.uint8))
    with pytest.raises(DataFileError, match=r"0x00000D03.*uint8"):
        read_image_label_pair(tmp_path / "img.gz", tmp_path / "lab.gz")


def test_counts_disagree(tmp_path):
    write_idx(tmp_path / "img.gz", np.zeros((3, 28, 28), np.uint8))
    write_idx(tmp_path / "lab.gz", np.zeros(4, np.uint8))
    with pytest.raises(DataFileError, match=r"3 images but .*lab\.gz holds 4 labels"):
        read_image_label_pair(tmp_path / "img.gz", tmp_path / "lab.gz")


def test_wrong_dimensions(tmp_path):
    write_idx(tmp_path / "img.gz", np.zeros((3, 32, 32), np.uint8))
    write_idx(tmp_path / "lab.gz", np.zeros(3, np.uint8))
    with pytest.raises(DataFileError, match=r"32x32 pixels, expected 28x28"):
        read_image_label_pair(tmp_path / "img.gz", tmp_path / "lab.gz")


def test_missing_file(tmp_path):
    with pytest.raises(DataNotFoundError, match="absent"):
        read_idx(tmp_path / "absent")


def test_errors_are_value_and_file_not_found_errors():
    assert issubclass(DataFileError, ValueError)
    assert issubclass(DataNotFoundError, FileNotFoundError)


# ----------------------------------------------------------------------------- finding files


@pytest.mark.parametrize("gz", [True, False])
def test_load_from_data_dir(tmp_path, gz):
    arrays = make_idx_dataset(tmp_path, gz=gz)
    ds = load_dataset("mnist", tmp_path, download=False)
    assert ds.name == "mnist" and ds.image_shape == (28, 28)
    assert ds.x_train.shape == (12, 784) and ds.x_train.dtype == np.float32
    assert ds.x_test.shape == (5, 784)
    np.testing.assert_allclose(ds.x_train * 255, arrays["train_images"].reshape(12, -1),
                               rtol=0, atol=1e-4)
    assert 0 <= ds.x_train.min() and ds.x_train.max() <= 1
    np.testing.assert_array_equal(ds.y_test, arrays["test_labels"])
    assert ds.label_names == [str(d) for d in range(10)]
    assert ds.source == str(tmp_path)


def test_search_order(tmp_path, monkeypatch, isolated_cache):
    given, env, system = tmp_path / "given", tmp_path / "env", tmp_path / "system"
    make_idx_dataset(env / "fashion-mnist", n_train=7)
    make_idx_dataset(system, n_train=9)
    monkeypatch.setitem(dl.SOURCES, "fashion-mnist",
                        dl.Source(mirrors=(), system_dirs=(str(system),)))
    # Only the system folder holds the data.
    assert len(load_dataset("fashion-mnist", download=False).x_train) == 9
    # $NUMPYVAE_DATA/<name>/ comes before it.
    monkeypatch.setenv("NUMPYVAE_DATA", str(env))
    assert len(load_dataset("fashion-mnist", download=False).x_train) == 7
    # The user cache comes after $NUMPYVAE_DATA.
    monkeypatch.setenv("NUMPYVAE_CACHE", str(tmp_path / "cache"))
    make_idx_dataset(tmp_path / "cache" / "fashion-mnist", n_train=8)
    assert len(load_dataset("fashion-mnist", download=False).x_train) == 7
    monkeypatch.delenv("NUMPYVAE_DATA")
    assert len(load_dataset("fashion-mnist", download=False).x_train) == 8
    # An explicit data_dir comes first of all.
    make_idx_dataset(given, n_train=6)
    ds = load_dataset("fashion-mnist", given, download=False)
    assert len(ds.x_train) == 6
    assert ds.label_names[0] == "T-shirt/top" and len(ds.label_names) == 10


def test_missing_files_say_where_and_how(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMPYVAE_DATA", str(tmp_path / "env"))
    (tmp_path / "given").mkdir()
    with pytest.raises(DataNotFoundError) as info:
        load_dataset("mnist", tmp_path / "given", download=False)
    message = str(info.value)
    for place in (tmp_path / "given", tmp_path / "env" / "mnist"):
        assert str(place) in message
    assert "--data-dir" in message and "--no-download" in message
    assert "train-images-idx3-ubyte.gz" in message


def test_partial_data_dir_is_an_error(tmp_path):
    make_idx_dataset(tmp_path)
    (tmp_path / FILES["test_labels"]).unlink()
    with pytest.raises(DataNotFoundError, match="missing: t10k-labels-idx1-ubyte.gz"):
        load_dataset("mnist", tmp_path, download=False)


def test_bad_file_in_data_dir_is_reported(tmp_path):
    make_idx_dataset(tmp_path)
    path = tmp_path / FILES["train_images"]
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataFileError, match="train-images-idx3-ubyte.gz"):
        load_dataset("fashion-mnist", tmp_path, download=False)


def test_unknown_dataset():
    with pytest.raises(ValueError, match=r"unknown dataset 'cifar'.*shapes, mnist, fashion-mnist"):
        load_dataset("cifar")


def test_cache_root_respects_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("NUMPYVAE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert dl.cache_root() == tmp_path / "numpyvae"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert dl.cache_root().parts[-2:] == (".cache", "numpyvae")


# ----------------------------------------------------------------------------- shapes


def test_shapes_dataset(isolated_cache):
    ds = load_dataset("shapes")
    assert ds.x_train.shape == (20_000, 784) and ds.x_test.shape == (2_000, 784)
    assert ds.x_train.dtype == np.float32 and ds.image_shape == (28, 28)
    assert 0 <= ds.x_train.min() and ds.x_train.max() == 1
    assert ds.label_names == ["square", "ellipse", "triangle", "cross", "heart"]
    assert ds.factor_names == ["shape", "scale", "rotation", "x", "y"]
    np.testing.assert_array_equal(ds.factors_train["shape"], ds.y_train)
    assert set(np.unique(ds.y_train)) == set(range(5))
    assert ds.factors_test["scale"].min() >= 0.5 and ds.factors_test["scale"].max() <= 1
    # Every image shows something, and the splits are different draws.
    assert (ds.x_train.max(axis=1) > 0.5).all()
    assert not np.array_equal(ds.x_train[:2000], ds.x_test)
    assert shapes_cache_path(0).is_file() and str(shapes_cache_path(0)).startswith(
        str(isolated_cache))


def test_shapes_deterministic_and_cached(isolated_cache):
    first = load_dataset("shapes")
    again = load_dataset("shapes")  # from the cache
    np.testing.assert_array_equal(first.x_train, again.x_train)
    # The cached arrays are what the generator draws for seed 0.
    rng = np.random.default_rng(np.random.SeedSequence(0).spawn(2)[0])
    factors = shapes.sample_factors(shapes.N_TRAIN, rng)
    for name in shapes.FACTOR_NAMES:
        np.testing.assert_array_equal(factors[name], first.factors_train[name])
    cover = shapes.render(*(factors[k][:50] for k in shapes.FACTOR_NAMES))
    np.testing.assert_array_equal(np.rint(cover * 255).reshape(50, -1),
                                  np.rint(first.x_train[:50] * 255))
    a, _ = shapes.generate(30, seed=1)
    b, _ = shapes.generate(30, seed=1)
    c, _ = shapes.generate(30, seed=2)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_shapes_corrupt_cache_is_regenerated(tmp_path):
    path = shapes_cache_path(0, tmp_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not a zip file")
    ds = load_dataset("shapes", tmp_path)
    assert ds.x_train.shape == (20_000, 784)
    assert path.stat().st_size > 1000


def test_shapes_render_factors():
    # A centred, unrotated square of scale 1 covers a known area.
    img = shapes.render([0], [1.0], [0.0], [0.5], [0.5])[0]
    side = 0.7 * 2 * shapes.MAX_RADIUS * 14  # half-side * radius, in pixels
    assert img.sum() == pytest.approx(side ** 2, abs=4 * side / 8)  # 1/8 pixel per edge
    # Moving right moves mass right; rotating a square by 90 degrees changes nothing.
    right = shapes.render([1], [0.6], [0.0], [0.7], [0.5])[0]
    cols = np.arange(28)
    assert (right.sum(0) * cols).sum() / right.sum() > 16
    square = shapes.render([0, 0], [0.8, 0.8], [0.3, 0.3 + np.pi / 2], [0.5, 0.5], [0.5, 0.5])
    np.testing.assert_allclose(square[0], square[1], atol=1e-6)


# ----------------------------------------------------------------------------- binarization


def test_binarize_modes():
    x = np.random.default_rng(0).random((200, 784), dtype=np.float32)
    assert binarize(x, "none", None) is x
    a = binarize(x, "dynamic", np.random.default_rng(1))
    b = binarize(x, "static", np.random.default_rng(1))
    assert a.dtype == np.float32 and set(np.unique(a)) == {0.0, 1.0}
    np.testing.assert_array_equal(a, b)  # the modes differ in when they are called, not how
    c = binarize(x, "dynamic", np.random.default_rng(2))
    assert not np.array_equal(a, c)
    assert abs(a.mean() - x.mean()) < 0.01  # E[x_b] = x
    assert binarize(np.zeros(5), "dynamic", np.random.default_rng(0)).sum() == 0
    assert binarize(np.ones(5), "static", np.random.default_rng(0)).sum() == 5
    with pytest.raises(ValueError, match="unknown binarization 'soft'"):
        binarize(x, "soft", np.random.default_rng(0))


# ----------------------------------------------------------------------------- real data


def test_real_fashion_mnist(fashion_mnist_dir):
    ds = load_dataset("fashion-mnist", fashion_mnist_dir, download=False)
    assert ds.x_train.shape == (60_000, 784) and ds.x_test.shape == (10_000, 784)
    assert ds.y_train.shape == (60_000,) and ds.y_test.shape == (10_000,)
    assert np.bincount(ds.y_train).tolist() == [6000] * 10
    assert np.bincount(ds.y_test).tolist() == [1000] * 10
    assert ds.x_train.min() == 0 and ds.x_train.max() == 1
    # The first training image is an ankle boot (label 9) in every copy of the dataset.
    assert ds.y_train[0] == 9 and ds.label_names[9] == "Ankle boot"
    assert 0.28 < ds.x_train.mean() < 0.29


def test_real_fashion_mnist_through_numpyvae_data(fashion_mnist_dir, monkeypatch):
    monkeypatch.setenv("NUMPYVAE_DATA", str(fashion_mnist_dir.parent))
    ds = load_dataset("fashion-mnist", download=False)
    assert ds.source == str(fashion_mnist_dir)


def test_the_first_drawing_of_shapes_says_what_the_wait_is(tmp_path, monkeypatch):
    import io

    from numpyvae.app.data import datasets

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    draw = datasets.shapes.generate_splits
    monkeypatch.setattr(datasets.shapes, "generate_splits",
                        lambda seed: draw(seed, n_train=8, n_test=4))  # a small drawing
    monkeypatch.setattr(datasets, "_read_shapes_cache", lambda path: None)
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    datasets.load_dataset("shapes", tmp_path)
    assert "drawing the shapes data set" in terminal.getvalue()
    quiet = Terminal()
    monkeypatch.setattr(sys, "stderr", quiet)
    datasets.load_dataset("shapes", tmp_path, progress=False)
    assert quiet.getvalue() == ""

