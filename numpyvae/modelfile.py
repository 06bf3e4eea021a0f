"""The model file: one ``.npz`` archive (no pickles) holding the weights and a JSON header.

Layout
------
* ``__config__`` — the header, JSON encoded as UTF-8 bytes (a ``uint8`` array);
* one array per parameter, by qualified name (``encoder.0.W``, ``decoder.logvar``, ...).

The header of format 2 (written by this release)::

    {"format": 2,
     "architecture": {"kind": "vae", "input_shape": [784], "latent_dim": 20,
                      "dtype": "float32", "free_bits": 0.0,
                      "likelihood": {"type": "Bernoulli"},
                      "encoder": {"type": "Sequential", "layers": [...]},
                      "decoder": {"type": "Sequential", "layers": [...]}},
     "options": {...}}

``architecture`` is enough to rebuild any network of the library's layers
(each layer's ``spec()``); ``options`` is present when the model was built by
the convenience constructor (``VAE(784, hidden_dims=(400,), ...)``) and holds
its arguments. Format 1 (the first release) had only those arguments, at the
top level of the header; :func:`read_model_file` returns it as
``{"format": 1, "options": {...}}``, so one reader serves both.

What does not live here: building a model from a header
(:func:`numpyvae.model.load`, which calls :func:`read_model_file`).
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .app.safenpz import read_npz
from .fileio import atomic_write

#: The format this release writes.
FORMAT_VERSION = 2
#: The formats this release reads.
READABLE_FORMATS = (1, 2)

CONFIG_KEY = "__config__"


class ModelFileError(ValueError):
    """A model file is missing, corrupt, or does not match the model it claims to be."""


def write_model_file(path, header: dict, arrays: Mapping[str, np.ndarray]) -> Path:
    """Write ``header`` (with ``"format": FORMAT_VERSION``) and ``arrays``, atomically."""
    if CONFIG_KEY in arrays:
        raise ValueError(f"a parameter may not be called {CONFIG_KEY!r}")
    content = dict(arrays)
    content[CONFIG_KEY] = np.frombuffer(
        json.dumps({"format": FORMAT_VERSION, **header}).encode(), dtype=np.uint8)
    return atomic_write(path, lambda f: np.savez(f, **content))


#: The model file inside a run folder (``numpyvae train --out RUN_DIR`` writes it).
RUN_MODEL_FILE = "model.npz"


def model_path(path) -> Path:
    """``path`` itself, or, for a run folder, the model file inside it."""
    path = Path(path)
    if not path.is_dir():
        return path
    inside = path / RUN_MODEL_FILE
    if not inside.is_file():
        raise ModelFileError(f"model file not found: {inside} ({path} is a folder without "
                             f"{RUN_MODEL_FILE}: not a run folder, or its first epoch has not "
                             "finished yet)")
    return inside


def read_model_file(path) -> tuple[dict, dict[str, np.ndarray]]:
    """Read a model file: ``(header, arrays by name)``, or :class:`ModelFileError`.

    Every check of the file itself is here: that it exists, is an ``.npz``
    archive that numpy reads without pickles, holds a JSON object as its
    header, and has a format this release reads. A format-1 header comes back
    as ``{"format": 1, "options": <its arguments>}``. Whether the arrays fit
    the model the header describes is checked when the weights are loaded
    (:meth:`numpyvae.model.VAE.load_weights`).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    try:
        with open(path, "rb") as f:
            single_array = f.read(6) == b"\x93NUMPY"
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read the file ({exc.strerror or exc})") from exc
    if single_array:
        raise ModelFileError(f"{path}: holds a single .npy array, not a model written by "
                             "model.save() (an .npz archive)")
    # Bounded and validated: the zip directory, then each array's header, then its data.
    arrays = read_npz(path, ModelFileError, "numpyvae model file")
    if CONFIG_KEY not in arrays:
        raise ModelFileError(f"{path}: no model config inside; was it written by model.save()?")
    try:
        header = json.load(io.BytesIO(arrays.pop(CONFIG_KEY).tobytes()))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{path}: the model config is corrupt ({exc})") from exc
    if not isinstance(header, dict):
        raise ModelFileError(f"{path}: the model config is not a JSON object")
    version = header.get("format")
    if version not in READABLE_FORMATS:
        raise ModelFileError(f"{path}: model file format {version!r}, expected one of "
                             f"{', '.join(str(v) for v in READABLE_FORMATS)}")
    if version == 1:
        header = {"format": 1, "options": {k: v for k, v in header.items() if k != "format"}}
    elif not isinstance(header.get("architecture"), dict):
        raise ModelFileError(f"{path}: the model config has no architecture")
    return header, arrays


__all__ = ["FORMAT_VERSION", "READABLE_FORMATS", "ModelFileError", "read_model_file",
           "write_model_file"]
