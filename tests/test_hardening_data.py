"""Your own data, hardened: links, names, splits, labels, images and the memory budget.

Each class of failure of issue 26 ("Nothing lost, nothing unclear, part 2")
for the data readers, with hypothesis where a file decides: ``.npy``/``.npz``
contents and labels, image headers, image and folder names. The rule is the
one of tests/test_hostile_files.py: only the library's documented errors
escape (naming the file), memory stays under the budget, and a run folder
written before is not changed by a refused command.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import struct
import sys
import tempfile
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from assertions import one_line_error, peak_memory
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from numpyvae.app.cli import main
from numpyvae.app.data import DataFileError, DataNotFoundError, load_data
from numpyvae.app.data.local import MAX_LABEL, fingerprint
from numpyvae.app.limits import MEMORY_ENV

MiB = 2**20
TINY = ["--hidden", "8", "--latent-dim", "2", "--batch-size", "8", "--backend", "numpy",
        "--quiet"]


@pytest.fixture(autouse=True)
def isolated(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("NUMPYVAE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("NUMPYVAE_BACKEND", "numpy")



@contextlib.contextmanager
def budget(text):
    old = os.environ.get(MEMORY_ENV)
    os.environ[MEMORY_ENV] = text
    try:
        yield
    finally:
        if old is None:
            del os.environ[MEMORY_ENV]
        else:
            os.environ[MEMORY_ENV] = old


def images_u8(n, shape=(8, 8), seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def write_png(path, array):
    Image.fromarray(array).save(os.fsdecode(path) if isinstance(path, bytes) else path)


def image_folder(root: Path, classes=("a", "b"), n=4, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            write_png(root / c / f"{i}.png", rng.integers(0, 256, (8, 8), dtype=np.uint8))
    return root


def files_of(folder: Path) -> dict:
    """Every file under ``folder``, by relative path, with its bytes (a run folder's state)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def old_fingerprint(path) -> str:
    """The fingerprint as the previous release computed it (run folders record it)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(
        p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    for f in files:
        if f is not path:
            digest.update(f.relative_to(path).as_posix().encode() + b"\0")
        digest.update(f.read_bytes())
    return digest.hexdigest()


# ---------------------------------------------------------------------------- data silently wrong


def test_a_change_behind_a_linked_class_folder_is_seen(tmp_path, capsys):
    data = image_folder(tmp_path / "data", classes=("a",), n=10)
    elsewhere = image_folder(tmp_path / "elsewhere", classes=("b",), n=10, seed=1) / "b"
    (data / "b").symlink_to(elsewhere, target_is_directory=True)
    copy = tmp_path / "copy"
    shutil.copytree(data, copy, symlinks=False)  # the same files, no link
    assert fingerprint(data) == fingerprint(copy) == old_fingerprint(copy)
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--epochs", "1", *TINY, "--out", str(run)]) == 0
    before = files_of(run)
    write_png(elsewhere / "0.png", np.zeros((8, 8), np.uint8))  # behind the link
    assert fingerprint(data) != fingerprint(copy)
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 2
    one_line_error(capsys, str(data), "SHA-256")
    assert files_of(run) == before


def test_a_link_loop_inside_a_data_folder_ends(tmp_path):
    data = image_folder(tmp_path / "data")
    (data / "a" / "again").symlink_to(data, target_is_directory=True)
    (data / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    assert len(fingerprint(data)) == 64
    assert fingerprint(data) == fingerprint(data)


def test_a_deep_data_folder_is_walked_without_recursion(tmp_path):
    deep = tmp_path / "data"
    leaf = Path(str(deep) + "/d" * 300)
    leaf.mkdir(parents=True)
    (leaf / "x.png").write_bytes(b"x")
    limit = sys.getrecursionlimit()
    try:
        sys.setrecursionlimit(200)  # shallower than the tree: a recursive walk would fail
        first = fingerprint(deep)
        (leaf / "x.png").write_bytes(b"y")
        second = fingerprint(deep)
    finally:
        sys.setrecursionlimit(limit)
        shutil.rmtree(deep)  # (pytest's own clean-up of old temporary folders recurses)
    assert len(first) == 64 and second != first


@given(tree=st.dictionaries(
    st.lists(st.sampled_from(["a", "b", "a-b", "a.b", ".h", "Z", "ä", "1"]), min_size=1,
             max_size=3).map(tuple),
    st.binary(max_size=20), max_size=6))
def test_the_fingerprint_of_a_folder_without_links_is_the_previous_releases(tree):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        root.mkdir()
        for parts, content in tree.items():
            path = root.joinpath(*parts)
            with contextlib.suppress(OSError):  # a name already taken by a folder, or a file
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content)
        assert fingerprint(root) == old_fingerprint(root)


@pytest.mark.parametrize("arrays, words", [
    ({"x_test": images_u8(20)}, "no training examples"),
    ({"x_test": images_u8(20), "y_test": np.arange(20) % 2}, "no training examples"),
    ({"X_test": images_u8(20)}, "no training examples"),
    ({"labels": np.arange(20)}, "no training examples"),
    ({"x": images_u8(20), "y_test": np.arange(20) % 2}, "test labels (y_test) but no test"),
])
def test_an_npz_without_training_images_is_refused(tmp_path, arrays, words):
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataFileError, match=r"data\.npz") as exc:
        load_data(path)
    assert words in str(exc.value)


@pytest.mark.parametrize("label", [1e300, 1e19, float(2**60), np.inf, -1.0, 0.5, np.nan])
def test_a_float_label_that_no_class_can_be_is_refused(tmp_path, label):
    y = np.zeros(20)
    y[3] = label
    np.savez(tmp_path / "d.npz", x=images_u8(20), y=y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # never a NumPy cast warning on the way
        with pytest.raises(DataFileError, match=r"d\.npz\['y'\]: expected"):
            load_data(tmp_path / "d.npz")


def test_labels_that_size_a_table_of_classes_are_checked_against_the_budget(tmp_path,
                                                                           monkeypatch):
    y = np.zeros(20, np.int64)
    y[5] = 10**12
    np.savez(tmp_path / "d.npz", x=images_u8(20), y=y)
    with peak_memory() as peak, pytest.raises(DataFileError) as exc:
        load_data(tmp_path / "d.npz")
    assert peak[0] < 8 * MiB, peak[0]
    text = str(exc.value)
    assert "d.npz" in text and "1,000,000,000,001 classes" in text and MEMORY_ENV in text
    # The largest label accepted keeps its value (no cast through a float).
    y[5] = MAX_LABEL + 1
    np.savez(tmp_path / "e.npz", x=images_u8(20), y=y)
    with pytest.raises(DataFileError, match=str(MAX_LABEL)):
        load_data(tmp_path / "e.npz")


# ---------------------------------------------------------------------------- hypothesis: arrays


KEYS = ["x_train", "x", "images", "y_train", "labels", "x_test", "X_test", "y_test",
        "label_names", "other"]


@settings(max_examples=150)
@given(arrays=st.dictionaries(
    st.sampled_from(KEYS),
    st.tuples(st.sampled_from(["uint8", "float32", "float64", "int64", "uint64", "<U2"]),
              st.lists(st.integers(1, 5), min_size=1, max_size=4),
              st.sampled_from([0, 1, 3, 255, 2**53 + 1, 1e19, 1e300, -1, np.nan, np.inf])),
    min_size=1, max_size=4))
def test_any_npz_contents_load_truthfully_or_are_refused(arrays):
    rng = np.random.default_rng(2)
    content = {}
    for name, (dtype, shape, planted) in arrays.items():
        values = rng.integers(0, 3, size=tuple(shape)).astype(np.float64)
        values.flat[-1] = planted
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            content[name] = values.astype(dtype)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mine.npz"
        np.savez(path, **content)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            try:
                ds = load_data(path)
            except DataFileError as exc:
                assert str(exc).startswith(str(path)), exc
                return
    assert np.all(np.isfinite(ds.x_train)) and np.all(np.isfinite(ds.x_test))
    train_keys = [k for k in ("x_train", "x", "images") if k in content] or ["other"]
    assert train_keys[0] in content, "trained on something that is not training images"
    n = len(content[train_keys[0]])
    if "x_test" in content or "X_test" in content:  # the file's own test set, apart
        assert len(ds.x_train) == n
    else:  # a split: every example in exactly one part
        assert len(ds.x_train) + len(ds.x_test) == n and len(ds.x_test) >= 1
    for y in (ds.y_train, ds.y_test):
        if y is not None:
            assert y.dtype == np.int64 and y.min() >= 0 and y.max() < len(ds.label_names)


def test_a_nan_is_reported_at_its_index_in_the_file(tmp_path):
    x = np.random.default_rng(0).random((30, 1, 4, 4))
    x[17, 0, 2, 3] = np.nan
    x[21, 0, 0, 1] = np.inf
    np.save(tmp_path / "f.npy", x)
    with pytest.raises(DataFileError) as exc:
        load_data(tmp_path / "f.npy")
    text = str(exc.value)
    assert "f.npy" in text and "1 NaN value (the first at index (17, 0, 2, 3))" in text
    assert "1 infinite value (the first at index (21, 0, 0, 1))" in text
    np.savez(tmp_path / "g.npz", images=x[:10], x_test=x[10:20])
    with pytest.raises(DataFileError, match=r"g\.npz\['x_test'\] holds 1 NaN value \(the "
                                            r"first at index \(7, 0, 2, 3\)\)"):
        load_data(tmp_path / "g.npz")


# ---------------------------------------------------------------------------- the memory budget


def test_the_float_copy_of_8_bit_data_is_checked_before_it_is_made(tmp_path, capsys):
    np.save(tmp_path / "u8.npy", images_u8(4000, (16, 16)))  # 1.0 MB; 4.1 MB as float32
    with budget("3M"):
        with peak_memory() as peak, pytest.raises(DataFileError) as exc:
            load_data(tmp_path / "u8.npy")
        assert peak[0] < 3 * MiB, peak[0]
        text = str(exc.value)
        assert "u8.npy" in text and "float32" in text and "3.1 MB" in text and MEMORY_ENV in text
        out = tmp_path / "run"
        assert main(["train", "--data", str(tmp_path / "u8.npy"), *TINY, "--out",
                     str(out)]) == 2
        one_line_error(capsys, "u8.npy", "float32", MEMORY_ENV)
        assert not out.exists()
    assert load_data(tmp_path / "u8.npy").x_train.dtype == np.float32  # within the real budget


def png_claiming(width, height, bit_depth=8, colour=0, body=None) -> bytes:
    """A small gray PNG whose header (IHDR) is edited to claim ``width`` x ``height``."""
    import io

    buf = io.BytesIO()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(buf, "PNG")
    raw = buf.getvalue()
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    chunk = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(
        ">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return raw[:8] + chunk + (raw[33:] if body is None else body)


def test_an_image_header_claiming_an_enormous_picture_is_refused_before_decoding(tmp_path,
                                                                                capsys):
    data = image_folder(tmp_path / "data")
    (data / "a" / "0.png").write_bytes(png_claiming(60000, 60000))
    limit = Image.MAX_IMAGE_PIXELS
    with budget("64M"), warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning would fail here
        with peak_memory() as peak, pytest.raises(DataFileError) as exc:
            load_data(data)
        assert peak[0] < 8 * MiB, peak[0]
        text = str(exc.value)
        assert "0.png" in text and "60000x60000" in text and "67.1 MB" in text
        out = tmp_path / "run"
        assert main(["train", "--data", str(data), *TINY, "--out", str(out)]) == 2
        one_line_error(capsys, "0.png", "60000x60000", MEMORY_ENV)
    assert Image.MAX_IMAGE_PIXELS == limit  # Pillow's own setting is left as it was


def test_pillows_fixed_pixel_limit_gives_way_to_the_budget(tmp_path, monkeypatch):
    data = image_folder(tmp_path / "data")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # 8x8 images would be "bombs"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_data(data).x_train) + 1 == 8
    assert Image.MAX_IMAGE_PIXELS == 10


@settings(max_examples=150)
@given(width=st.integers(0, 2**31 - 1) | st.integers(0, 64),
       height=st.integers(0, 2**31 - 1) | st.integers(0, 64),
       bit_depth=st.sampled_from([1, 2, 4, 8, 16, 3, 0, 255]),
       colour=st.sampled_from([0, 2, 3, 4, 6, 1, 7]),
       body=st.none() | st.binary(max_size=64))
def test_edited_image_headers_raise_only_data_file_errors_in_bounded_memory(
        width, height, bit_depth, colour, body):
    with tempfile.TemporaryDirectory() as tmp:
        data = image_folder(Path(tmp) / "data", n=2)
        (data / "b" / "9.png").write_bytes(png_claiming(width, height, bit_depth, colour, body))
        with budget("32M"), warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with peak_memory() as peak:
                try:
                    ds = load_data(data)
                except DataFileError as exc:
                    assert str(data) in str(exc), exc
                else:
                    assert ds.x_train.shape[1] == 64
        assert peak[0] < 32 * MiB, peak[0]


# ---------------------------------------------------------------------------- names


needs_byte_names = pytest.mark.skipif(
    os.uname().sysname == "Darwin", reason="the file system must accept any bytes as a name")


def byte_names(min_size=1):
    return st.binary(min_size=min_size, max_size=12).filter(
        lambda b: b"/" not in b and b"\0" not in b and not b.startswith(b"."))


@needs_byte_names
def test_names_that_are_not_utf8_train_evaluate_and_are_stored_losslessly(tmp_path, capsys):
    root = tmp_path / "data"
    for cls in (b"caf\xe9", b"th\xe9"):
        folder = os.path.join(os.fsencode(root), cls)
        os.makedirs(folder)
        for i in range(10):
            write_png(os.path.join(folder, b"%d-\xff.png" % i), images_u8(1, seed=i)[0])
    ds = load_data(root)
    assert ds.label_names == ["caf\\xe9", "th\\xe9"]
    run = tmp_path / "run\udce9"  # the run folder's own name, too
    assert main(["train", "--data", str(root), "--epochs", "1", *TINY, "--out", str(run)]) == 0
    record = json.loads((run / "config.json").read_text())["data"]
    assert os.fsencode(record["path"]) == os.fsencode(root)  # the bytes, kept
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 0
    os.rename(os.path.join(os.fsencode(root), b"caf\xe9", b"0-\xff.png"),
              os.path.join(os.fsencode(root), b"caf\xe9", b"0-\xfe.png"))
    assert main(["evaluate", str(run)]) == 2  # a renamed file is a changed data set
    one_line_error(capsys, "SHA-256")


@needs_byte_names
@settings(max_examples=60)
@given(classes=st.lists(byte_names(), min_size=1, max_size=3, unique=True),
       files=st.lists(byte_names(), min_size=2, max_size=3, unique=True),
       suffix=st.sampled_from([b".png", b".PNG", b".jpg", b".txt"]))
def test_any_file_and_folder_names_load(classes, files, suffix):
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(os.fsencode(tmp), b"data")
        for c in classes:
            os.makedirs(os.path.join(root, c))
            for i, f in enumerate(files):
                path = os.path.join(root, c, f + suffix)
                if suffix == b".txt":
                    Path(os.fsdecode(path)).write_text("not an image")
                else:
                    write_png(path, images_u8(1, seed=i)[0])
        try:
            ds = load_data(os.fsdecode(root))
        except DataFileError as exc:
            assert suffix == b".txt" and "no PNG or JPEG images" in str(exc)
            return
        assert len(ds.x_train) + len(ds.x_test) == len(classes) * len(files)
        assert len(ds.label_names) == len(classes)
        for text in (*ds.label_names, ds.name, ds.source):
            text.encode("utf-8")  # printable and storable as it is
        assert fingerprint(os.fsdecode(root)) == fingerprint(os.fsdecode(root))


# ---------------------------------------------------------------------------- paths


@contextlib.contextmanager
def alarm(seconds):
    def fail(signum, frame):
        raise AssertionError(f"blocked for {seconds} s")

    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize("suffix", [".npy", ".npz", ""])
def test_a_fifo_is_refused_without_opening_it(tmp_path, capsys, suffix):
    fifo = tmp_path / f"pipe{suffix}"
    os.mkfifo(fifo)
    with alarm(20):
        with pytest.raises(DataFileError, match="named pipe"):
            load_data(fifo)
        with pytest.raises(DataFileError, match="named pipe"):
            fingerprint(fifo)
        out = tmp_path / "run"
        assert main(["train", "--data", str(fifo), *TINY, "--out", str(out)]) == 2
        one_line_error(capsys, str(fifo), "not a regular file or a folder")
        assert not out.exists()


def test_a_symlink_loop_is_refused_in_one_line(tmp_path, capsys):
    (tmp_path / "a.npy").symlink_to(tmp_path / "b.npy")
    (tmp_path / "b.npy").symlink_to(tmp_path / "a.npy")
    with pytest.raises(DataFileError, match="loop of symbolic links"):
        load_data(tmp_path / "a.npy")
    assert main(["train", "--data", str(tmp_path / "a.npy"), *TINY, "--out",
                 str(tmp_path / "run")]) == 2
    one_line_error(capsys, "a.npy", "loop of symbolic links")
    with pytest.raises(DataNotFoundError, match="does not exist"):
        load_data(tmp_path / "absent.npy")


def test_the_two_splits_of_an_image_folder_share_the_budget(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in ("a", "b"):
            (tmp_path / "data" / split / c).mkdir(parents=True)
            for i in range(10):
                write_png(tmp_path / "data" / split / c / f"{i}.png",
                          rng.integers(0, 256, (32, 32), dtype=np.uint8))
    # Each split alone needs 2 x 20 x 32 x 32 x 3 = 122,880 bytes to decode; both, twice that.
    with budget("200K"), pytest.raises(DataFileError, match=r"40 image\(s\) of that size would "
                                                            r"need 245.8 kB"):
        load_data(tmp_path / "data")
    assert len(load_data(tmp_path / "data").x_test) == 20
