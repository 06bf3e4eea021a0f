"""Reading a model file, which may come from anywhere, and loading the model it holds.

:func:`load` (``numpyvae.load``) reads a file written by :meth:`VAE.save
<numpyvae.model.VAE.save>` (the format is :mod:`numpyvae.modelfile`'s), of this
release or the first. A file is treated as untrusted input, and checked in
the order that keeps a hostile one from costing anything:

1. the archive (:func:`read_model_file`): the zip directory, each array's
   header, then its data, bounded and without pickles
   (:mod:`numpyvae.app.safenpz`); the JSON header and its format;
2. the sizes the header asks for, against the memory budget
   (:mod:`numpyvae.app.limits`), before a model is built;
3. the model (:func:`numpyvae.architecture.build_model`), then the weights'
   names, shapes and values (:meth:`VAE.load_weights
   <numpyvae.model.VAE.load_weights>`).

Every failure is a :class:`~numpyvae.modelfile.ModelFileError` whose message
names the file and what was wrong.

What does not live here: writing a model file (:mod:`numpyvae.modelfile`) and
the other files of a run folder (:mod:`numpyvae.app.runfolder`).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from ..architecture import build_model
from ..modelfile import CONFIG_KEY, ModelFileError
from .limits import SizeLimitError, check_model_config
from .runfolder import MODEL_FILE
from .safenpz import read_npz

#: The formats this release reads.
READABLE_FORMATS = (1, 2)


def model_path(path) -> Path:
    """``path`` itself, or, for a run folder, the model file inside it."""
    path = Path(path)
    if not path.is_dir():
        return path
    inside = path / MODEL_FILE
    if not inside.is_file():
        raise ModelFileError(f"model file not found: {inside} ({path} is a folder without "
                             f"{MODEL_FILE}: not a run folder, or its first epoch has not "
                             "finished yet)")
    return inside


def read_model_file(path) -> tuple[dict, dict[str, np.ndarray]]:
    """Read a model file: ``(header, arrays by name)``, or :class:`ModelFileError`.

    Every check of the file itself is here: that it exists, is an ``.npz``
    archive that numpy reads without pickles, holds a JSON object as its
    header, and has a format this release reads. A format-1 header comes back
    as ``{"format": 1, "options": <its arguments>}``, so one reader serves
    both. Whether the arrays fit the model the header describes is checked
    when the weights are loaded (:meth:`numpyvae.model.VAE.load_weights`).
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


def _as_json(obj):
    return json.loads(json.dumps(obj))


def load(path, backend=None):
    """Load a model written by :meth:`VAE.save <numpyvae.model.VAE.save>` (or
    :meth:`Autoencoder.save <numpyvae.model.Autoencoder.save>`).

    ``path`` is the model file, or a run folder (``numpyvae train --out
    RUN_DIR``), whose ``model.npz`` is read.

    Reads the current format and the first release's (see
    :mod:`numpyvae.modelfile`). Raises :class:`ModelFileError` (a
    ``ValueError``) for a missing, corrupt or mismatched file, or one whose
    sizes need more memory than the budget; the message names the file and
    what was wrong.
    """
    path = model_path(path)
    header, arrays = read_model_file(path)
    options, architecture = header.get("options"), header.get("architecture")
    try:
        description = dict(options if options is not None else architecture)
        # The sizes the header asks for, before anything of their size is allocated.
        check_model_config(description, f"{path}: the model it describes")
    except SizeLimitError as exc:
        raise ModelFileError(str(exc)) from exc
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: the model config is invalid ({exc})") from exc
    try:
        model = build_model(description, backend=backend)
    except ModelFileError as exc:
        raise ModelFileError(f"{path}: {exc}") from exc
    except (TypeError, ValueError, AttributeError) as exc:
        raise ModelFileError(f"{path}: the model config is invalid ({exc})") from exc
    if options is not None and architecture is not None \
            and _as_json(model.architecture()) != architecture:
        raise ModelFileError(f"{path}: the recorded architecture does not match the model its "
                             "options build")
    model.load_weights(arrays, source=str(path))
    return model


__all__ = ["READABLE_FORMATS", "load", "model_path", "read_model_file"]
