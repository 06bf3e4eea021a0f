"""Saving and loading models: round trips, clear errors for bad files, atomic writes."""

from __future__ import annotations

import json
import os
import pickle
import stat
from pathlib import Path

import numpy as np
import pytest

import numpyvae
from numpyvae import VAE, Autoencoder, ModelFileError
from numpyvae.fileio import atomic_write, atomic_write_json, atomic_write_text
from numpyvae.layers import Flatten, Linear, Reshape, Sequential, Tanh
from numpyvae.modelfile import FORMAT_VERSION

DATA = Path(__file__).parent / "data"

CONFIGS = [
    (VAE, dict(likelihood="bernoulli", activation="tanh")),
    (VAE, dict(likelihood="gaussian", gaussian_var=0.25, free_bits=0.1, init="he")),
    (VAE, dict(likelihood="gaussian", gaussian_var="learned", hidden_dims=())),
    (Autoencoder, dict(likelihood="bernoulli", activation="leaky_relu")),
    (Autoencoder, dict(likelihood="gaussian", gaussian_var="learned")),
]


def make(cls=VAE, dtype="float64", seed=0, backend="numpy", **kwargs):
    kwargs = {"hidden_dims": (5, 4), "latent_dim": 3, **kwargs}
    model = cls(6, dtype=dtype, seed=seed, backend=backend, **kwargs)
    # Trained-looking weights: not the values a fresh model of the same seed would get.
    model.flat_params[...] = np.random.default_rng(seed + 100).normal(0, 0.5,
                                                                      model.num_params)
    return model


def write_model_file(path, arrays, config):
    arrays = dict(arrays)
    arrays["__config__"] = np.frombuffer(json.dumps(config).encode(), dtype=np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def saved_parts(model):
    """The arrays and the header ``model.save`` writes (format 2)."""
    header = {"format": FORMAT_VERSION, "architecture": model.architecture()}
    if model.config() != model.architecture():
        header["options"] = model.config()
    return dict(model.params), header


def format1_parts(model):
    """The arrays and the header the first release wrote: its constructor arguments, flat."""
    return dict(model.params), {"format": 1, **model.config()}


def network_model(dtype="float64", backend="numpy", seed=0):
    """A VAE of user-composed networks: image-shaped data, Flatten and Reshape."""
    rng = np.random.default_rng(seed)
    common = dict(rng=rng, dtype=dtype, backend=backend)
    encoder = Sequential(Flatten(), Linear(6, 5, **common), Tanh(), Linear(5, 4, **common))
    decoder = Sequential(Linear(2, 6, "sigmoid", **common), Reshape(2, 3))
    model = VAE(encoder, decoder, latent_dim=2, likelihood="gaussian", gaussian_var="learned",
                seed=seed, backend=backend)
    model.flat_params[...] = np.random.default_rng(seed + 100).normal(0, 0.5, model.num_params)
    return model


# --------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("cls", "kwargs"), CONFIGS,
                         ids=[f"{c.__name__}-{i}" for i, (c, _) in enumerate(CONFIGS)])
def test_round_trip_gives_the_same_model(backend_name, tmp_path, dtype, cls, kwargs):
    model = make(cls, dtype, backend=backend_name, **kwargs)
    path = model.save(tmp_path / "model.npz")
    assert path == tmp_path / "model.npz" and path.is_file()

    loaded = numpyvae.load(path, backend=backend_name)

    assert type(loaded) is cls
    assert loaded.config() == model.config()
    assert loaded.dtype == dtype
    assert list(loaded.params) == list(model.params)
    for name, p in model.params.items():
        np.testing.assert_array_equal(loaded.params[name], p)
        assert loaded.params[name].dtype == dtype
    rng = np.random.default_rng(0)
    x = rng.random((4, 6)).astype(dtype)
    z = rng.standard_normal((4, 3)).astype(dtype)
    np.testing.assert_array_equal(loaded.decode(z), model.decode(z))
    np.testing.assert_array_equal(loaded.embed(x), model.embed(x))
    assert loaded.loss_and_grads(x, eps=z, beta=0.5).loss == \
        model.loss_and_grads(x, eps=z, beta=0.5).loss
    np.testing.assert_array_equal(loaded.flat_grads, model.flat_grads)


def test_saving_again_replaces_the_file(tmp_path):
    path = tmp_path / "model.npz"
    make(seed=1).save(path)
    second = make(seed=2)
    second.save(path)
    np.testing.assert_array_equal(numpyvae.load(path, backend="numpy").flat_params,
                                  second.flat_params)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]  # no temp files left


def test_the_file_is_a_plain_npz_without_pickles(tmp_path):
    model = make()
    path = model.save(tmp_path / "model.npz")
    with np.load(path, allow_pickle=False) as npz:
        assert set(npz.files) == {*model.params, "__config__"}
        config = json.loads(npz["__config__"].tobytes())
    assert config["format"] == FORMAT_VERSION == 2
    assert config["options"] == model.config() and config["options"]["kind"] == "vae"
    architecture = config["architecture"]
    assert architecture == json.loads(json.dumps(model.architecture()))
    assert architecture["kind"] == "vae" and architecture["input_shape"] == [6]
    assert [layer["type"] for layer in architecture["encoder"]["layers"]] == ["Linear"] * 3
    assert architecture["encoder"]["layers"][0] == {
        "type": "Linear", "in_features": 6, "out_features": 5, "activation": "relu",
        "alpha": 0.01}


# --------------------------------------------------------------------------
# Files of the first release (format 1) and of networks a user composed
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["vae_gaussian_learned", "autoencoder_bernoulli"])
def test_a_format_1_file_written_by_the_first_release_loads(backend_name, name):
    """The fixture files were written by the first release's ``model.save``."""
    with np.load(DATA / f"format1_{name}.npz") as npz:
        assert json.loads(npz["__config__"].tobytes())["format"] == 1
    model = numpyvae.load(DATA / f"format1_{name}.npz", backend=backend_name)
    with np.load(DATA / "format1_expected.npz") as npz:
        expected = {k: npz[k] for k in npz.files}
    x, z = expected["x"], expected["z"]
    np.testing.assert_allclose(model.decode(z), expected[f"{name}/decode"], rtol=1e-13)
    np.testing.assert_allclose(model.embed(x), expected[f"{name}/embed"], rtol=1e-13)
    assert model.loss_and_grads(x, eps=z, beta=0.5).loss == pytest.approx(
        float(expected[f"{name}/loss"]), rel=1e-13)
    if backend_name == "numpy":  # the reference computes exactly what it computed then
        np.testing.assert_array_equal(model.decode(z), expected[f"{name}/decode"])


def test_a_format_1_file_saves_again_as_format_2(tmp_path):
    old = numpyvae.load(DATA / "format1_vae_gaussian_learned.npz", backend="numpy")
    again = numpyvae.load(old.save(tmp_path / "m.npz"), backend="numpy")
    assert again.config() == old.config()
    np.testing.assert_array_equal(again.flat_params, old.flat_params)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_model_of_composed_networks_round_trips(backend_name, tmp_path, dtype):
    model = network_model(dtype, backend_name)
    loaded = numpyvae.load(model.save(tmp_path / "m.npz"), backend=backend_name)
    assert loaded.architecture() == model.architecture()
    assert loaded.config() == model.architecture()  # no convenience options to record
    assert [type(layer).__name__ for layer in loaded.encoder] == \
        ["Flatten", "Linear", "Tanh", "Linear"]
    assert loaded.input_shape == (2, 3) and list(loaded.params) == list(model.params)
    np.testing.assert_array_equal(loaded.flat_params, model.flat_params)
    rng = np.random.default_rng(0)
    x = rng.random((4, 2, 3)).astype(dtype)
    z = rng.standard_normal((4, 2)).astype(dtype)
    np.testing.assert_array_equal(loaded.decode(z), model.decode(z))
    np.testing.assert_array_equal(loaded.embed(x), model.embed(x))
    assert loaded.loss_and_grads(x, eps=z).loss == model.loss_and_grads(x, eps=z).loss
    np.testing.assert_array_equal(loaded.flat_grads, model.flat_grads)


# --------------------------------------------------------------------------
# Bad files: always a ModelFileError (a ValueError) naming the file
# --------------------------------------------------------------------------


def _load_error(path):
    with pytest.raises(ModelFileError) as exc:
        numpyvae.load(path, backend="numpy")
    assert str(path) in str(exc.value)
    return str(exc.value)


def test_model_file_error_is_a_value_error():
    assert issubclass(ModelFileError, ValueError)


def test_missing_file(tmp_path):
    assert "not found" in _load_error(tmp_path / "nope.npz")
    assert "not found" in _load_error(tmp_path)  # a folder is not a model file


def test_truncated_files(tmp_path):
    data = (make().save(tmp_path / "model.npz")).read_bytes()
    bad = tmp_path / "truncated.npz"
    for n in [0, 1, 4, 30, *range(50, len(data), 23), len(data) - 1]:
        bad.write_bytes(data[:n])
        _load_error(bad)


def test_corrupted_bytes_never_raise_anything_but_model_file_error(tmp_path):
    data = (make().save(tmp_path / "model.npz")).read_bytes()
    bad = tmp_path / "corrupt.npz"
    rng = np.random.default_rng(0)
    failures = 0
    for _ in range(300):
        b = bytearray(data)
        for i in rng.integers(0, len(b), size=rng.integers(1, 4)):
            b[i] = rng.integers(0, 256)
        bad.write_bytes(bytes(b))
        try:
            model = numpyvae.load(bad, backend="numpy")
        except ModelFileError:
            failures += 1
        else:  # a flip the format does not protect (e.g. in a header's padding)
            assert np.all(np.isfinite(model.flat_params))
    assert failures > 150
    b = bytearray(data)
    b[:4] = b"\0\0\0\0"
    bad.write_bytes(bytes(b))
    _load_error(bad)


def test_files_that_are_not_npz_archives(tmp_path):
    text = tmp_path / "notes.npz"
    text.write_text("these are not the weights you are looking for\n")
    assert "not a readable numpyvae model file" in _load_error(text)

    npy = tmp_path / "array.npy"
    np.save(npy, np.zeros(3))
    assert "single .npy array" in _load_error(npy)

    pickled = tmp_path / "model.pkl"
    pickled.write_bytes(pickle.dumps({"encoder.0.W": np.zeros((6, 5))}))
    _load_error(pickled)

    objects = tmp_path / "objects.npy"
    np.save(objects, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    _load_error(objects)


def test_missing_parameters(tmp_path):
    arrays, config = saved_parts(make())
    del arrays["decoder.1.b"]
    path = write_model_file(tmp_path / "m.npz", arrays, config)
    assert "missing parameter(s) ['decoder.1.b']" in _load_error(path)


def test_mismatched_shapes(tmp_path):
    arrays, config = format1_parts(make())
    config["hidden_dims"] = [5, 3]  # the arrays are for (5, 4)
    path = write_model_file(tmp_path / "m.npz", arrays, config)
    msg = _load_error(path)
    assert "'encoder.1.W' has shape (5, 4), the model expects (5, 3)" in msg

    arrays, config = saved_parts(network_model())
    config["architecture"]["decoder"]["layers"][0]["activation"] = "tanh"
    path = write_model_file(tmp_path / "m.npz", arrays, config)
    np.testing.assert_array_equal(numpyvae.load(path).flat_params, arrays_in_order(arrays))
    config["architecture"]["encoder"]["layers"][1]["out_features"] = 4  # breaks the chain
    path = write_model_file(tmp_path / "m.npz", arrays, config)
    assert "config is invalid" in _load_error(path)


def arrays_in_order(arrays):
    return np.concatenate([a.ravel() for a in arrays.values()])


def test_options_and_architecture_must_agree(tmp_path):
    arrays, config = saved_parts(make())
    config["architecture"]["encoder"]["layers"][0]["activation"] = "tanh"
    path = write_model_file(tmp_path / "m.npz", arrays, config)
    assert "architecture does not match" in _load_error(path)
    del config["architecture"]
    path = write_model_file(tmp_path / "m.npz", arrays, config)
    assert "no architecture" in _load_error(path)


@pytest.mark.parametrize("parts", [format1_parts, saved_parts])
def test_unknown_model_kind(tmp_path, parts):
    arrays, config = parts(make())
    config.get("options", config)["kind"] = "gan"
    path = write_model_file(tmp_path / "m.npz", arrays, config)
    msg = _load_error(path)
    assert "unknown model kind 'gan'" in msg and "autoencoder" in msg
    arrays, config = saved_parts(network_model())
    config["architecture"]["kind"] = "gan"
    path = write_model_file(tmp_path / "m.npz", arrays, config)
    assert "unknown model kind 'gan'" in _load_error(path)


@pytest.mark.parametrize(("change", "expected"), [
    (lambda c: c.update(format=FORMAT_VERSION + 1), "model file format"),
    (lambda c: c.update(latent_dim=-1), "latent_dim must be a positive integer"),
    (lambda c: c.update(likelihood="poisson"), "unknown likelihood"),
    (lambda c: c.update(optimizer="adam"), "config is invalid"),
    (lambda c: c.pop("input_dim"), "config is invalid"),
])
def test_invalid_configs(tmp_path, change, expected):
    arrays, config = format1_parts(make())
    change(config)
    path = write_model_file(tmp_path / "m.npz", arrays, config)
    assert expected in _load_error(path)


@pytest.mark.parametrize(("change", "expected"), [
    (lambda a: a["encoder"]["layers"].append({"type": "Conv9d"}), "unknown layer type 'Conv9d'"),
    (lambda a: a["encoder"]["layers"][1].pop("in_features"), "invalid Linear spec"),
    (lambda a: a["encoder"].update(layers="Linear"), "expected a list of layer specs"),
    (lambda a: a.update(encoder=[1, 2]), "a layer spec must be a dict"),
    (lambda a: a.update(likelihood={"type": "Poisson"}), "unknown likelihood spec"),
    (lambda a: a.update(likelihood={"type": "Gaussian", "var": -1}), "var must be a positive"),
    (lambda a: a.update(latent_dim=3), "expected (6,): [mu | logvar] for latent_dim 3"),
    (lambda a: a.update(input_shape=[6]), "expected the input shape (6,)"),
    (lambda a: a.update(dtype="float16"), "unsupported dtype"),
    (lambda a: a.update(colour="red"), "config is invalid"),
])
def test_invalid_architectures(tmp_path, change, expected):
    arrays, config = saved_parts(network_model())
    change(config["architecture"])
    path = write_model_file(tmp_path / "m.npz", arrays, config)
    msg = _load_error(path)
    assert expected in msg and "config is invalid" in msg


def test_missing_or_unreadable_config(tmp_path):
    arrays, config = saved_parts(make())
    path = tmp_path / "m.npz"
    np.savez(path, **arrays)
    assert "no model config" in _load_error(path)

    for raw, expected in [(b"\xff\xfe{", "config is corrupt"), (b"{not json", "config is corrupt"),
                          (b"[1, 2]", "not a JSON object")]:
        np.savez(path, **arrays, __config__=np.frombuffer(raw, dtype=np.uint8))
        assert expected in _load_error(path)


def test_weights_that_are_not_finite_numbers(tmp_path):
    arrays, config = saved_parts(make())
    nan = dict(arrays, **{"encoder.0.b": np.full(5, np.nan)})
    path = write_model_file(tmp_path / "nan.npz", nan, config)
    assert "'encoder.0.b' holds NaN or infinity" in _load_error(path)
    text = dict(arrays, **{"encoder.0.b": np.array(["x"] * 5)})
    path = write_model_file(tmp_path / "text.npz", text, config)
    assert "'encoder.0.b' has dtype <U1" in _load_error(path)


# --------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------


def test_atomic_write_keeps_the_old_file_when_the_writer_raises(tmp_path):
    path = tmp_path / "file.bin"
    path.write_bytes(b"old content")

    def writer(f):
        f.write(b"half of the new")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write(path, writer)
    assert path.read_bytes() == b"old content"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]


def test_atomic_write_on_success(tmp_path):
    path = tmp_path / "sub" / "dir" / "file.bin"  # folders are created
    assert atomic_write(path, lambda f: f.write(b"abc")) == path
    assert path.read_bytes() == b"abc"
    atomic_write_text(path, "héllo\n")
    assert path.read_text(encoding="utf-8") == "héllo\n"
    atomic_write_json(path, {"b": 1, "a": [1, 2]})
    assert json.loads(path.read_text()) == {"a": [1, 2], "b": 1}
    assert sorted(p.name for p in path.parent.iterdir()) == ["file.bin"]


def test_atomic_write_gives_the_permissions_a_plain_write_would(tmp_path):
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"x")
    new = atomic_write(tmp_path / "new.bin", lambda f: f.write(b"x"))
    assert stat.S_IMODE(new.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
    # Replacing a file keeps that file's permissions.
    os.chmod(new, 0o640)
    atomic_write(new, lambda f: f.write(b"y"))
    assert stat.S_IMODE(new.stat().st_mode) == 0o640
    assert new.read_bytes() == b"y"


def test_a_failed_save_leaves_the_previous_model_loadable(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    old = make(seed=1)
    old.save(path)

    def failing_savez(f, **arrays):
        f.write(b"PK\x03\x04 partial archive")
        raise OSError("no space left on device")

    monkeypatch.setattr(np, "savez", failing_savez)
    with pytest.raises(OSError, match="no space left"):
        make(seed=2).save(path)
    monkeypatch.undo()

    np.testing.assert_array_equal(numpyvae.load(path, backend="numpy").flat_params,
                                  old.flat_params)
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]
