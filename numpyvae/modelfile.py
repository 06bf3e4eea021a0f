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
(each layer's ``spec()``, see :func:`numpyvae.architecture.build_model`);
``options`` is present when the model was built by the convenience
constructor (``VAE(784, hidden_dims=(400,), ...)``) and holds its arguments.
Format 1 (the first release) had only those arguments, at the top level of
the header.

What does not live here: reading a file, which may come from anywhere, and
building a model from it (:mod:`numpyvae.app.modelfile`, behind
:func:`numpyvae.load`): checking an untrusted archive and the memory budget
are the application's jobs. A model writes its own file (:meth:`VAE.save
<numpyvae.model.VAE.save>`) with :func:`write_model_file`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .fileio import atomic_write

#: The format this release writes.
FORMAT_VERSION = 2

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


__all__ = ["CONFIG_KEY", "FORMAT_VERSION", "ModelFileError", "write_model_file"]
