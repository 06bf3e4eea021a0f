"""Your own data: a ``.npy``/``.npz`` array file or a folder of images, as a :class:`Dataset`.

:func:`load_data` reads

* a ``.npy`` file: one array of images ``(N, H, W)``, ``(N, C, H, W)`` or
  vectors ``(N, D)``;
* a ``.npz`` file: the same array under one of the names :data:`X_KEYS`
  (or as its only array), optional labels ``(N,)`` under :data:`Y_KEYS`,
  optionally a test set (``x_test``, ``y_test``) and class names
  (``label_names``);
* a folder of PNG/JPEG images (:mod:`numpyvae.app.data.imagefolder`): one
  subfolder per class gives the labels, or ``train/`` and ``test/``
  subfolders give the split.

Examples are flattened to rows, as for the named datasets (``image_shape``
says how to see one again). 8-bit images (``uint8``) are scaled to [0, 1];
other numbers are kept as they are (and checked before training,
:mod:`numpyvae.app.data.checks`). When
the data come without a test set, a held-out fraction of the examples
(``test_fraction``, 0.1 by default) is chosen by a seeded permutation, so
the same file always gives the same split. :func:`fingerprint` identifies
the data, so a run can tell when the file it was trained on has changed.

What does not live here: the named datasets (:mod:`numpyvae.app.data.datasets`),
decoding image files (:mod:`numpyvae.app.data.imagefolder`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..safenpz import read_npy, read_npz
from .datasets import Dataset
from .idx import DataFileError, DataNotFoundError

#: Names under which a ``.npz`` file may hold the training images, in order of preference.
X_KEYS = ("x_train", "x", "X", "images", "data", "train_images")
#: Names of the labels of the training images.
Y_KEYS = ("y_train", "y", "labels", "targets", "train_labels")
X_TEST_KEYS = ("x_test", "X_test", "test_images")
Y_TEST_KEYS = ("y_test", "test_labels")
NAME_KEYS = ("label_names", "class_names", "classes")
#: The held-out share of the examples when the data bring no test set.
DEFAULT_TEST_FRACTION = 0.1
ARRAY_SUFFIXES = (".npy", ".npz")


def load_data(path, *, test_fraction=None, seed: int = 0) -> Dataset:
    """Load your own data (see the module docstring) as a :class:`Dataset`.

    Parameters
    ----------
    path : path to a ``.npy``/``.npz`` file or a folder of images
    test_fraction : float in (0, 1), optional
        The share held out as the test set when the data have none
        (default :data:`DEFAULT_TEST_FRACTION`). Refused when they have one.
    seed : int
        Seeds the held-out split.

    Raises
    ------
    DataNotFoundError
        The path does not exist.
    DataFileError (a ValueError)
        The file cannot be read or holds the wrong kind of data; the message
        names the file and what was expected.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise DataNotFoundError(f"data not found: {path} does not exist")
    if path.is_dir():
        from .imagefolder import read_image_folder

        parts = read_image_folder(path)
    elif path.suffix.lower() in ARRAY_SUFFIXES:
        parts = read_array_file(path)
    else:
        raise DataFileError(f"{path}: expected a .npy or .npz array file or a folder of "
                            f"PNG/JPEG images, got a {path.suffix or 'suffix-less'} file")
    x, y, names = parts["x"], parts.get("y"), parts.get("label_names")
    image_shape = tuple(int(d) for d in x.shape[1:])
    x_test, y_test = parts.get("x_test"), parts.get("y_test")
    if x_test is not None:
        if test_fraction is not None:
            raise DataFileError(f"{path} holds its own test set ({len(x_test)} examples), so "
                                f"no test fraction can be held out; drop the test fraction")
        if tuple(x_test.shape[1:]) != image_shape:
            raise DataFileError(f"{path}: the test examples have shape {x_test.shape[1:]}, the "
                                f"training examples {image_shape}")
        if (y is None) != (y_test is None):
            raise DataFileError(f"{path}: labels are given for only one of the training and "
                                f"test sets")
        fraction = None
    else:
        fraction = DEFAULT_TEST_FRACTION if test_fraction is None else test_fraction
        x, y, x_test, y_test = split(x, y, fraction, seed, what=str(path))
    if names is None and y is not None:
        names = [str(c) for c in range(int(max(y.max(), y_test.max())) + 1)]
    return Dataset(name=path.name, x_train=to_unit(x.reshape(len(x), -1)), y_train=y,
                   x_test=to_unit(x_test.reshape(len(x_test), -1)),
                   y_test=y_test, image_shape=display_shape(image_shape),
                   label_names=list(names or []), source=str(path.resolve()),
                   test_fraction=None if fraction is None else float(fraction))


def display_shape(shape: tuple) -> tuple:
    """How one example is shown: ``(H, W)``, ``(C, H, W)``, or ``(D,)`` for plain vectors.

    A single channel ``(1, H, W)`` is shown as ``(H, W)``.
    """
    if len(shape) == 3 and shape[0] == 1:
        return shape[1:]
    return shape


def split(x, y, fraction, seed, what="data"):
    """Hold out ``round(fraction * N)`` examples (at least one) by a seeded permutation."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not (
            0 < fraction < 1):
        raise ValueError(f"test fraction must be a number between 0 and 1 (exclusive), got "
                         f"{fraction!r}")
    n = len(x)
    n_test = max(1, round(fraction * n))
    if n - n_test < 1:
        raise DataFileError(f"{what}: {n} example(s) are too few to hold out a test fraction of "
                            f"{fraction:g} and still train on some")
    order = np.random.default_rng([int(seed), 7]).permutation(n)
    test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
    if y is None:
        return x[train], None, x[test], None
    return x[train], y[train], x[test], y[test]


def to_unit(x) -> np.ndarray:
    """8-bit images to float32 in [0, 1]; other numbers to float32 (float64 kept)."""
    x = np.asarray(x)
    if x.dtype == np.uint8:
        out = x.astype(np.float32)
        out *= np.float32(1 / 255)
        return out
    if x.dtype == np.float64:
        return x
    return x.astype(np.float32)


# ---------------------------------------------------------------------------- array files


def read_array_file(path: Path) -> dict:
    """The arrays of a ``.npy``/``.npz`` file: ``x`` and maybe ``y``, ``x_test``, ``y_test``."""
    # Read as model files are (numpyvae.app.safenpz): the header checked before any data, never a
    # pickle, never more memory than the file's own size and the budget allow.
    if path.suffix.lower() == ".npz":
        arrays = read_npz(path, DataFileError, "NumPy array file")
        if not arrays:
            raise DataFileError(f"{path}: the archive holds no arrays")
    else:
        arrays = {"x": read_npy(path, DataFileError, "NumPy array file")}
    x_key = _one_of(arrays, X_KEYS)
    if x_key is None:
        if len(arrays) != 1:
            raise DataFileError(f"{path}: which array holds the data? It has {sorted(arrays)}; "
                                f"name it one of {', '.join(X_KEYS)} (labels: "
                                f"{', '.join(Y_KEYS)})")
        x_key = next(iter(arrays))
    parts = {"x": check_examples(arrays[x_key], f"{path}[{x_key!r}]")}
    y_key = _one_of(arrays, Y_KEYS)
    if y_key is not None:
        parts["y"] = check_labels(arrays[y_key], len(parts["x"]), f"{path}[{y_key!r}]")
    xt_key = _one_of(arrays, X_TEST_KEYS)
    if xt_key is not None:
        parts["x_test"] = check_examples(arrays[xt_key], f"{path}[{xt_key!r}]")
        yt_key = _one_of(arrays, Y_TEST_KEYS)
        if yt_key is not None:
            parts["y_test"] = check_labels(arrays[yt_key], len(parts["x_test"]),
                                           f"{path}[{yt_key!r}]")
    names_key = _one_of(arrays, NAME_KEYS)
    if names_key is not None:
        names = arrays[names_key]
        if names.ndim != 1 or names.dtype.kind not in "US":
            raise DataFileError(f"{path}[{names_key!r}]: expected a 1-D array of class names "
                                f"(strings), got {names.dtype} of shape {names.shape}")
        parts["label_names"] = [str(n) for n in names]
    return parts


def _one_of(arrays, keys):
    return next((k for k in keys if k in arrays), None)


def check_examples(x, what) -> np.ndarray:
    """Accept ``(N, D)``, ``(N, H, W)`` or ``(N, C, H, W)`` numbers; refuse the rest clearly."""
    x = np.asarray(x)
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool) or np.issubdtype(
            x.dtype, np.complexfloating):
        raise DataFileError(f"{what}: expected real numbers, got dtype {x.dtype}")
    if x.ndim not in (2, 3, 4) or len(x) == 0 or 0 in x.shape:
        raise DataFileError(f"{what}: expected images (N, H, W) or (N, C, H, W), or vectors "
                            f"(N, D), with N >= 1; got shape {x.shape}")
    if x.ndim == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3):
        raise DataFileError(f"{what}: shape {x.shape} looks like channels-last (N, H, W, C); "
                            f"expected (N, C, H, W): use np.moveaxis(x, -1, 1)")
    if x.dtype == bool:
        x = x.astype(np.uint8) * np.uint8(255)
    return x


def check_labels(y, n, what) -> np.ndarray:
    """Integer class labels ``(n,)``, each >= 0."""
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise DataFileError(f"{what}: expected one label per example, shape ({n},), got "
                            f"{y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        if not (np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y))
                and np.all(y == np.round(y))):
            raise DataFileError(f"{what}: expected integer class labels, got {y.dtype}")
    if len(y) and y.min() < 0:
        raise DataFileError(f"{what}: expected class labels >= 0, got {y.min()}")
    return y.astype(np.int64)


# ---------------------------------------------------------------------------- identity


def fingerprint(path) -> str:
    """A SHA-256 of the data: the file's bytes, or a folder's image files (names and bytes)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(
        p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    for f in files:
        if f is not path:
            digest.update(f.relative_to(path).as_posix().encode() + b"\0")
        with open(f, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()
