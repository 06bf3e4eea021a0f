"""Corrupt and hostile files: every reader of a user's file raises only the library's own errors.

Fuzzed with hypothesis: the IDX parser (random bytes, edited headers), the
``.npz`` reader under the model and checkpoint loaders (edits of the zip
directory and local headers: compression methods, flags, sizes; flipped
bytes; truncation), the checkpoint's trainer state and config.json (any
field replaced by any JSON value, or removed), metrics.jsonl (any line). The
only exceptions that may escape are the documented ones, each naming the
file; bombs are read in bounded memory, measured with tracemalloc.
"""

from __future__ import annotations

import copy
import gzip
import io
import json
import re
import shutil
import struct
import tempfile
import time
import zipfile
import zlib
from functools import reduce
from operator import getitem
from pathlib import Path

import numpy as np
import pytest
from assertions import peak_memory
from hypothesis import given
from hypothesis import strategies as st

import numpyvae
from numpyvae import VAE, ModelFileError
from numpyvae.app.cli import main
from numpyvae.app.data import DataFileError, DataNotFoundError, load_data, read_idx, write_idx
from numpyvae.app.limits import MEMORY_ENV
from numpyvae.app.run import evaluate_run, load_run, train_run
from numpyvae.app.runfolder import (
    CHECKPOINT_FILE,
    RunFolderError,
    RunNotFoundError,
    read_checkpoint,
    read_config,
    read_metrics,
    write_checkpoint,
)
from numpyvae.app.safenpz import read_npz
from numpyvae.app.train import METRIC_KEYS, Trainer

MiB = 2**20


# ---------------------------------------------------------------------------- helpers

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=6)



def json_paths(obj, prefix=()):
    """Every place in a JSON document, as a tuple of keys and indices."""
    yield prefix
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from json_paths(value, (*prefix, key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from json_paths(value, (*prefix, i))


@st.composite
def json_edits(draw, document):
    """``document`` with one field replaced by any JSON value, or removed."""
    path = draw(st.sampled_from(list(json_paths(document))))
    if not path:
        return draw(json_values)
    edited = copy.deepcopy(document)
    parent = reduce(getitem, path[:-1], edited)
    if draw(st.booleans()) and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(json_values)
    return edited


def zip_records(data: bytes):
    """Offsets of the local headers and of the central-directory entries of a zip file."""
    local = [i for i in range(len(data)) if data.startswith(b"PK\x03\x04", i)]
    central = [i for i in range(len(data)) if data.startswith(b"PK\x01\x02", i)]
    return local, central


# Field -> (offset in a local header, offset in a central entry, struct format).
ZIP_FIELDS = {"flags": (6, 8, "<H"), "method": (8, 10, "<H"), "crc": (14, 16, "<I"),
              "compressed": (18, 20, "<I"), "size": (22, 24, "<I"),
              "name_length": (26, 28, "<H")}


@st.composite
def zip_edits(draw, data: bytes):
    """``data`` (a zip file) with directory fields edited, bytes flipped, or cut short."""
    b = bytearray(data)
    local, central = zip_records(data)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["field", "field", "flip", "truncate"]))
        if kind == "field":
            field = draw(st.sampled_from(sorted(ZIP_FIELDS)))
            at_local, at_central, fmt = ZIP_FIELDS[field]
            where = draw(st.sampled_from([("l", o) for o in local] + [("c", o) for o in central]))
            offset = where[1] + (at_local if where[0] == "l" else at_central)
            bits = 8 * struct.calcsize(fmt)
            value = draw(st.sampled_from([0, 1, 8, 12, 14, 93, 95, 98, 99, 2**bits - 1])
                         | st.integers(0, 2**bits - 1))
            if offset + struct.calcsize(fmt) <= len(b):  # not cut off by a truncation
                struct.pack_into(fmt, b, offset, value)
        elif kind == "flip" and b:
            i = draw(st.integers(0, len(b) - 1))
            b[i] = draw(st.integers(0, 255))
        elif b:
            del b[draw(st.integers(0, len(b) - 1)):]
    return bytes(b)


def set_zip_field(data: bytes, field: str, value: int) -> bytes:
    """Set ``field`` to ``value`` in every local header and central entry."""
    b = bytearray(data)
    local, central = zip_records(data)
    at_local, at_central, fmt = ZIP_FIELDS[field]
    for offset in local:
        struct.pack_into(fmt, b, offset + at_local, value)
    for offset in central:
        struct.pack_into(fmt, b, offset + at_central, value)
    return bytes(b)


def tiny_data(n=40, d=16, seed=0):
    return (np.random.default_rng(seed).random((n, d)) < 0.4).astype(np.float32)


def tiny_trainer(out_dir, **kw):
    x = tiny_data()
    return Trainer(VAE(16, hidden_dims=(4,), latent_dim=2), x[:30], x[30:], batch_size=10,
                   progress=False, out_dir=out_dir, **kw)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A model file, and a checkpoint stopped mid-epoch (so it holds an RNG state)."""
    folder = tmp_path_factory.mktemp("saved")
    trainer = tiny_trainer(folder / "run")

    def stop(t):
        if t.global_step == 5:
            t.request_stop()

    trainer.step_callback = stop
    trainer.fit(3)
    assert trainer.interrupted
    return {"model": (folder / "run" / "model.npz").read_bytes(),
            "checkpoint": (folder / "run" / CHECKPOINT_FILE).read_bytes(),
            "folder": folder / "run"}


# ---------------------------------------------------------------------------- .npz archives


@given(data=st.data())
def test_zip_edits_of_a_checkpoint_raise_only_run_folder_errors(saved, data):
    mutated = data.draw(zip_edits(saved["checkpoint"]))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / CHECKPOINT_FILE
        path.write_bytes(mutated)
        try:
            tiny_trainer(tmp).load_checkpoint(path)
        except RunFolderError as exc:
            assert str(path) in str(exc)


@given(data=st.data())
def test_zip_edits_of_a_model_file_raise_only_model_file_errors(saved, data):
    mutated = data.draw(zip_edits(saved["model"]))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.npz"
        path.write_bytes(mutated)
        try:
            model = numpyvae.load(path, backend="numpy")
        except ModelFileError as exc:
            assert str(path) in str(exc)
        else:
            assert np.all(np.isfinite(model.flat_params))


@pytest.mark.parametrize("field, value, words", [
    ("method", 14, "compression method 14"),   # LZMA: an LZMAError before
    ("method", 12, "compression method 12"),   # bzip2
    ("method", 99, "compression method 99"),   # AES: NotImplementedError before
    ("flags", 1, "encrypted"),                 # RuntimeError before
    ("size", 1000, "is damaged (Bad CRC-32"),  # zipfile stops at the declared size
])
def test_one_field_edits_of_the_zip_directory(cli_run, tmp_path, capsys, field, value, words):
    for kind in ("model", "checkpoint"):
        run = tmp_path / kind
        shutil.copytree(cli_run, run)
        name = "model.npz" if kind == "model" else CHECKPOINT_FILE
        (run / name).write_bytes(set_zip_field((cli_run / name).read_bytes(), field, value))
        error = ModelFileError if kind == "model" else RunFolderError
        with pytest.raises(error, match=re.escape(words)):
            read_npz(run / name, error)
        command = ["evaluate", str(run)] if kind == "model" else [
            "train", "--out", str(run), "--resume", "--quiet"]
        assert main(command) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and name in err and words in err, err


@pytest.mark.parametrize("content", [b"", b"\0", b"P", b"\0" * 1000, b"PK\x03\x04" + bytes(40)])
def test_tiny_or_zeroed_archives_say_what_is_wrong(tmp_path, content):
    path = tmp_path / "model.npz"
    path.write_bytes(content)
    with pytest.raises(ModelFileError) as exc:
        numpyvae.load(path)
    assert "model.npz" in str(exc.value) and "pickle" not in str(exc.value)
    with pytest.raises(RunFolderError) as exc:
        read_checkpoint(path)
    assert "pickle" not in str(exc.value)


def test_an_object_array_is_never_unpickled(tmp_path):
    path = tmp_path / "x.npz"
    np.savez(path, a=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError, match="pickled objects are never loaded"):
        read_npz(path)


def small_npz(path, array, method=zipfile.ZIP_STORED):
    buffer = io.BytesIO()
    np.save(buffer, array)
    with zipfile.ZipFile(path, "w", method) as z:
        z.writestr("a.npy", buffer.getvalue())
    return buffer.getvalue()


def test_an_npz_entry_claiming_more_than_the_budget_is_refused_from_the_directory(
        tmp_path, monkeypatch):
    path = tmp_path / "claims.npz"
    small_npz(path, np.zeros(10))
    path.write_bytes(set_zip_field(path.read_bytes(), "size", 2**30))
    monkeypatch.setenv(MEMORY_ENV, "100M")
    with peak_memory() as peak, pytest.raises(
            ValueError, match=r"claims\.npz: the archive's entries claim 1\.1 GB, "
                              r"more than the 104\.9 MB"):
        read_npz(path)
    assert peak[0] < MiB, peak[0]


def test_an_npz_bomb_is_never_decompressed_beyond_its_declared_size(tmp_path):
    """64 MB of deflated zeros behind an entry that declares 208 bytes."""
    path = tmp_path / "bomb.npz"
    header = small_npz(tmp_path / "model.npz", np.zeros(10))  # the .npy bytes of 10 doubles
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("a.npy", "w", force_zip64=True) as f:
            f.write(header)
            chunk = bytes(4 * MiB)
            for _ in range(16):
                f.write(chunk)
    data = path.read_bytes()
    assert len(data) < MiB
    path.write_bytes(set_zip_field(data, "size", len(header)))  # the directory lies
    with peak_memory() as peak, pytest.raises(ValueError, match=r"bomb\.npz: entry 'a\.npy'"):
        read_npz(path)
    assert peak[0] < 2 * MiB, peak[0]


# ---------------------------------------------------------------------------- trainer state


@given(data=st.data())
def test_edits_of_the_trainer_state_raise_only_run_folder_errors(saved, data):
    arrays = read_npz(_saved_path(saved))
    state = json.loads(arrays.pop("trainer").tobytes())
    edited = data.draw(json_edits(state))
    with tempfile.TemporaryDirectory() as tmp:
        write_checkpoint(tmp, arrays, edited)
        trainer = tiny_trainer(tmp)
        try:
            trainer.load_checkpoint(Path(tmp) / CHECKPOINT_FILE)
        except RunFolderError as exc:
            assert CHECKPOINT_FILE in str(exc)
            return
        trainer.fit(3, resume=True)  # what was accepted trains on, without surprises
        assert trainer.epoch == 3 and len(trainer.history) == 3


def _saved_path(saved):
    return saved["folder"] / CHECKPOINT_FILE


@pytest.mark.parametrize("edit, words", [
    (lambda s: s.pop("global_step"), "lacks 'global_step'"),
    (lambda s: s.update(history={"a": 1}), "'history' is"),
    (lambda s: s.update(partial=[1, 2]), "'partial' is"),
    (lambda s: s.update(epoch="abc"), "'epoch' is \"abc\", expected an integer >= 0"),
    (lambda s: s.update(epoch=-1), "'epoch' is -1, expected an integer >= 0"),
    (lambda s: s.update(epoch=1e9), "'epoch' is 1000000000.0, expected an integer"),
    (lambda s: s.update(epoch=10**9), "'epoch' is 1000000000 but the history holds 1 epochs"),
    (lambda s: s.update(rng_state=None), "'rng_state' is null"),
    (lambda s: s.update(rng_state={"bit_generator": "MT19937"}), "not a valid generator"),
    (lambda s: s.update(step_in_epoch=99), "counters disagree"),
])
def test_named_trainer_state_edits(saved, tmp_path, capsys, edit, words):
    arrays = read_npz(_saved_path(saved))
    state = json.loads(arrays.pop("trainer").tobytes())
    edit(state)
    run = tmp_path / "run"
    shutil.copytree(saved["folder"], run)
    write_checkpoint(run, arrays, state)
    with pytest.raises(RunFolderError, match=words.replace("(", r"\(")):
        tiny_trainer(run).load_checkpoint(run / CHECKPOINT_FILE)


# ---------------------------------------------------------------------------- run folders


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """A small run of the command on tiny IDX files, without figures."""
    folder = tmp_path_factory.mktemp("cli-run")
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 40), ("t10k", 20)):
        write_idx(folder / "data" / f"{prefix}-images-idx3-ubyte.gz",
                  (rng.random((n, 28, 28)) < 0.3).astype(np.uint8) * 255)
        write_idx(folder / "data" / f"{prefix}-labels-idx1-ubyte.gz",
                  rng.integers(0, 10, n, np.uint8))
    run = folder / "run"
    assert main(["train", "--dataset", "mnist", "--data-dir", str(folder / "data"),
                 "--no-download", "--epochs", "1", "--batch-size", "20", "--hidden", "8",
                 "--latent-dim", "2", "--backend", "numpy", "--quiet", "--no-figures",
                 "--out", str(run)]) == 0
    return run


DOCUMENTED = (RunFolderError, RunNotFoundError, ModelFileError, DataFileError,
              DataNotFoundError)


@given(data=st.data())
def test_edits_of_config_json_raise_only_documented_errors(cli_run, data):
    config = json.loads((cli_run / "config.json").read_text())
    edited = data.draw(json_edits(config))
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        shutil.copytree(cli_run, run)
        (run / "config.json").write_text(json.dumps(edited))
        for job in (lambda: evaluate_run(run, download=False),
                    lambda: train_run(run, resume=True, download=False, progress=False,
                                      figures=False)):
            try:
                job()
            except DOCUMENTED:
                pass
            except ValueError as exc:  # a bad option of the run: plain, documented ValueError
                assert type(exc) is ValueError or type(exc).__module__.startswith("numpyvae")


@pytest.mark.parametrize("edit, words", [
    ({"training": [1]}, "'training' is [1], expected a JSON object"),
    ({"model": "vae"}, "'model' is \"vae\", expected a JSON object"),
    ({"data_dir": 123}, "'data_dir' is 123, expected a folder name or null"),
    ({"image_shape": "abc"}, "'image_shape' is \"abc\""),
    ({"format": "1"}, "format \"1\", expected 1"),
])
@pytest.mark.parametrize("command", ["evaluate", "resume", "figures", "sample", "reconstruct"])
def test_config_json_with_wrong_types_is_one_line(cli_run, tmp_path, capsys, edit, words,
                                                   command):
    run = tmp_path / "run"
    shutil.copytree(cli_run, run)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, **edit}))
    argv = {"resume": ["train", "--out", str(run), "--resume"]}.get(command, [command, str(run)])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "config.json" in err and words in err, err


@given(lines=st.lists(st.text(max_size=30) | json_values.map(json.dumps), max_size=4))
def test_metrics_lines_raise_only_run_folder_errors(cli_run, lines):
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "metrics.jsonl").write_text("\n".join(lines))
        try:
            rows = read_metrics(tmp, METRIC_KEYS)
        except RunFolderError as exc:
            assert "metrics.jsonl" in str(exc)
        else:
            assert all(isinstance(r, dict) for r in rows)


def test_a_config_read_and_a_run_loaded(cli_run):
    assert read_config(cli_run)["dataset"] == "mnist"
    assert load_run(cli_run).model.latent_dim == 2


# ---------------------------------------------------------------------------- IDX files


@given(raw=st.binary(max_size=300), compress=st.booleans())
def test_random_bytes_as_idx_raise_only_data_file_errors(raw, compress):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x-idx3-ubyte.gz"
        path.write_bytes(gzip.compress(raw) if compress else raw)
        try:
            read_idx(path)
        except DataFileError as exc:
            assert str(path) in str(exc)


@given(ndim=st.integers(0, 255), sizes=st.lists(st.integers(0, 2**32 - 1), max_size=255),
       code=st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x07]),
       tail=st.binary(max_size=64), compress=st.booleans())
def test_edited_idx_headers_raise_only_data_file_errors(ndim, sizes, code, tail, compress):
    sizes = (sizes + [1] * ndim)[:ndim]
    data = bytes([0, 0, code, ndim]) + struct.pack(f">{ndim}I", *sizes) + tail
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "edited"
        path.write_bytes(gzip.compress(data) if compress else data)
        try:
            array = read_idx(path)
        except DataFileError as exc:
            assert str(path) in str(exc)
        else:
            assert array.shape == tuple(sizes)


@pytest.mark.parametrize("shape, words", [
    ((2**31, 2**31, 4), "more than the"),
    ((2**32 - 1,) * 4, "more than the"),
    ((1,) * 255, "255 dimensions"),
    ((0, 2**32 - 1, 2**32 - 1, 2**32 - 1), "more than an array can index"),  # empty, unindexable
])
def test_idx_headers_that_overflow(tmp_path, shape, words):
    path = tmp_path / "huge-idx.gz"
    header = bytes([0, 0, 0x08, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)
    path.write_bytes(gzip.compress(header + bytes(10)))
    with pytest.raises(DataFileError, match=words) as exc:
        read_idx(path)
    message = str(exc.value)
    assert message.startswith(f"{path}: ") and not re.search(r"-\d", message[len(str(path)):])


def gzip_of(parts, total_zeros):
    """A gzip file of ``parts`` followed by ``total_zeros`` zero bytes, built in bounded memory."""
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=1, mtime=0) as z:
        for p in parts:
            z.write(p)
        chunk = bytes(8 * MiB)
        for _ in range(total_zeros // len(chunk)):
            z.write(chunk)
    return out.getvalue()


@pytest.mark.parametrize("kind", ["zeros", "valid header, then zeros"])
def test_a_decompression_bomb_is_read_in_bounded_memory(tmp_path, kind):
    """256 MB of zeros, ~1 MB gzipped: never decompressed beyond what the header promises."""
    parts = [] if kind == "zeros" else [bytes([0, 0, 8, 3]) + struct.pack(">3I", 10, 28, 28),
                                        bytes(7840)]
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip_of(parts, 256 * MiB))
    assert path.stat().st_size < 2 * MiB
    with peak_memory() as peak:
        start = time.perf_counter()
        with pytest.raises(DataFileError, match="not an IDX file" if kind == "zeros"
                           else "longer than its header says"):
            read_idx(path)
        seconds = time.perf_counter() - start
    assert peak[0] < 4 * MiB, peak[0]
    assert seconds < 5, seconds


def test_an_idx_header_beyond_the_memory_budget_is_refused_before_reading(tmp_path, monkeypatch):
    path = tmp_path / "big.gz"
    path.write_bytes(gzip.compress(bytes([0, 0, 8, 3]) + struct.pack(">3I", 200000, 28, 28)))
    monkeypatch.setenv(MEMORY_ENV, "64M")
    with pytest.raises(DataFileError, match=r"big\.gz: its IDX header announces shape "
                                            r"\(200000, 28, 28\) of uint8, 156.8 MB, more than"):
        read_idx(path)


def test_zlib_stream_of_the_bomb_is_what_it_claims():
    data = gzip_of([], 16 * MiB)
    assert len(zlib.decompress(data, 31)) == 16 * MiB


# ---------------------------------------------------------------------------- your own data files
#
# ``--data FILE`` / ``numpyvae.load_data`` read a user's .npy/.npz through the same checked
# reader as model files: whatever the bytes, only DataFileError (naming the file) escapes,
# and nothing larger than the file itself is ever allocated.


def own_data_error_or_dataset(path):
    try:
        ds = load_data(path)
    except DataFileError as exc:
        assert str(path) in str(exc)
        return None
    assert len(ds.x_train) + len(ds.x_test) >= 1
    assert np.all(np.isfinite(ds.x_train)) and ds.x_train.dtype.kind == "f"
    return ds


def npy_bytes(header: dict, body: bytes = b"", version=(1, 0)) -> bytes:
    out = io.BytesIO()
    write = (np.lib.format.write_array_header_1_0 if version == (1, 0)
             else np.lib.format.write_array_header_2_0)
    write(out, header)  # the magic string, then the header
    return out.getvalue() + body


@pytest.mark.parametrize("container", ["npy", "npz"])
@pytest.mark.parametrize("shape", [(0, 27, 1404, 2284330, 13314046), (2**40, 0, 2**40)])
def test_an_empty_shape_too_large_to_index_is_refused(tmp_path, container, shape):
    # Zero bytes of data, but sizes that multiply past the largest index:
    # NumPy cannot make such an array, so the header is refused by name.
    data = npy_bytes({"descr": "<f8", "fortran_order": False, "shape": shape})
    path = tmp_path / f"mine.{container}"
    if container == "npy":
        path.write_bytes(data)
    else:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("x_train.npy", data)
    with pytest.raises(DataFileError, match="more than an array can index") as exc:
        load_data(path)
    assert str(exc.value).startswith(f"{path}: ")
    if container == "npz":  # and where a model file is read
        with pytest.raises(ValueError, match="more than an array can index"):
            read_npz(path)


@given(raw=st.binary(max_size=400), suffix=st.sampled_from([".npy", ".npz"]),
       prefix=st.sampled_from([b"", b"\x93NUMPY\x01\x00", b"PK\x03\x04"]))
def test_random_bytes_as_own_data_raise_only_data_file_errors(raw, suffix, prefix):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"mine{suffix}"
        path.write_bytes(prefix + raw)
        assert own_data_error_or_dataset(path) is None or len(prefix + raw) > 0


@given(shape=st.lists(st.integers(0, 2**40), max_size=5),
       descr=st.sampled_from(["<f4", "<f8", "|u1", ">i8", "|b1", "<c8", "|O", "|V8", "<U3",
                              "<M8[s]"]),
       fortran=st.booleans(), body=st.binary(max_size=256), version=st.sampled_from([(1, 0),
                                                                                    (2, 0)]))
def test_edited_npy_headers_raise_only_data_file_errors_in_bounded_memory(shape, descr, fortran,
                                                                        body, version):
    data = npy_bytes({"descr": descr, "fortran_order": fortran, "shape": tuple(shape)}, body,
                     version)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mine.npy"
        path.write_bytes(data)
        with peak_memory() as peak:
            own_data_error_or_dataset(path)
    assert peak[0] < 8 * MiB, peak[0]


@given(data=st.data())
def test_edits_of_an_own_npz_raise_only_data_file_errors(data):
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    np.savez_compressed(buf, x_train=rng.integers(0, 256, (12, 4, 4), dtype=np.uint8),
                        y_train=np.arange(12) % 3, label_names=np.array(["a", "b", "c"]))
    original = buf.getvalue()
    edited = data.draw(zip_edits(original))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mine.npz"
        path.write_bytes(edited)
        own_data_error_or_dataset(path)


@given(arrays=st.dictionaries(
    st.sampled_from(["x_train", "x", "images", "y_train", "labels", "x_test", "y_test",
                     "label_names", "other"]),
    st.tuples(st.sampled_from(["uint8", "float32", "float64", "int64", "bool", "<U2"]),
              st.lists(st.integers(0, 5), max_size=4)),
    min_size=1, max_size=4))
def test_any_small_arrays_in_an_own_npz_load_or_say_what_is_wrong(arrays):
    rng = np.random.default_rng(1)
    content = {}
    for name, (dtype, shape) in arrays.items():
        values = rng.integers(0, 3, size=tuple(shape))
        content[name] = values.astype(dtype)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mine.npz"
        np.savez(path, **content)
        own_data_error_or_dataset(path)


def test_an_own_npy_header_beyond_the_memory_budget_is_refused_before_reading(tmp_path,
                                                                              monkeypatch):
    path = tmp_path / "big.npy"
    path.write_bytes(npy_bytes({"descr": "|u1", "fortran_order": False,
                                "shape": (200000, 28, 28)}, bytes(200000 * 28 * 28)))
    monkeypatch.setenv(MEMORY_ENV, "64M")
    with pytest.raises(DataFileError, match=r"big\.npy: the file would need 156.8 MB, more "
                                            r"than the"):
        load_data(path)


def test_a_pickled_own_npy_is_never_unpickled(tmp_path):
    path = tmp_path / "objects.npy"
    np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(DataFileError, match=r"objects\.npy: the file holds object data.*never "
                                            r"loaded"):
        load_data(path)
