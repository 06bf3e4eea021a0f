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

import errno
import hashlib
import os
import stat
from pathlib import Path

import numpy as np

from ..limits import excess
from ..safenpz import read_npy, read_npz
from .checks import DataValueError, check_finite
from .datasets import Dataset
from .idx import DataFileError, DataNotFoundError
from .names import shown

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
    if data_kind(path) == "folder":
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
    check_conversion(x, x_test, path)
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
        names = [str(c) for c in range(class_count(y, y_test, path))]
    elif y is not None and max(y.max(), y_test.max()) >= len(names):
        raise DataFileError(f"{path}: the labels go up to {max(y.max(), y_test.max())}, but "
                            f"{len(names)} class name(s) are given; expected a name for each "
                            f"class 0 to {max(y.max(), y_test.max())}")
    return Dataset(name=shown(path.name), x_train=to_unit(x.reshape(len(x), -1)), y_train=y,
                   x_test=to_unit(x_test.reshape(len(x_test), -1)),
                   y_test=y_test, image_shape=display_shape(image_shape),
                   label_names=list(names or []), source=shown(path.resolve()),
                   test_fraction=None if fraction is None else float(fraction))


# ---------------------------------------------------------------------------- the path


def data_kind(path) -> str:
    """``"file"`` or ``"folder"``: what ``path`` is, refusing anything else before opening it.

    A FIFO or a device would block or stream forever when opened, and a loop
    of symbolic links resolves to nothing, so each is refused by name.

    Raises
    ------
    DataNotFoundError
        Nothing exists at ``path`` (or a symbolic link there points nowhere).
    DataFileError
        ``path`` is a loop of symbolic links, cannot be examined, or is
        neither a regular file nor a folder.
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode  # follows symbolic links
    except FileNotFoundError:
        raise DataNotFoundError(f"data not found: {path} does not exist") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise DataFileError(f"{path}: a loop of symbolic links (each points on to the "
                                f"next, never to a file); expected a .npy or .npz file or a "
                                f"folder of images") from None
        raise DataFileError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISREG(mode):
        return "file"
    kind = ("a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a file")
    raise DataFileError(f"{path}: {kind}, not a regular file or a folder; expected a .npy or "
                        f".npz file or a folder of images")


def data_path(path) -> Path:
    """The absolute path of your own data, checked to be a file or a folder (:func:`data_kind`)."""
    path = Path(path).expanduser()
    data_kind(path)
    return path.resolve()


# ---------------------------------------------------------------------------- memory


def check_memory(nbytes: int, what: str) -> None:
    """Raise :class:`DataFileError` naming ``what`` if ``nbytes`` exceed the memory budget."""
    reason = excess(int(nbytes))
    if reason is not None:
        raise DataFileError(f"{what} would need {reason}")


def check_conversion(x, x_test, path) -> None:
    """Refuse data whose float copy would exceed the memory budget, before the split.

    The read checked the file's own bytes; the examples are then copied into
    the two splits and become float32 (four times the size of 8-bit images)
    while the arrays read are still held.
    """
    arrays = [x] if x_test is None else [x, x_test]
    itemsize = 8 if x.dtype == np.float64 else 4
    n = sum(len(a) for a in arrays)
    check_memory(sum(2 * a.nbytes + a.size * itemsize for a in arrays),
                 f"{path}: its {n} examples, split and as float{8 * itemsize},")


def class_count(y, y_test, path) -> int:
    """The number of classes the labels imply (the largest + 1), within the memory budget."""
    count = int(max(y.max(), y_test.max())) + 1
    # One name per class, and a one-hot row of the classes per example when conditional.
    check_memory(count * (64 + 8 * (len(y) + len(y_test))),
                 f"{path}: labels up to {count - 1} ask for {count:,} classes, a table that")
    return count


def display_shape(shape: tuple) -> tuple:
    """How one example is shown: ``(H, W)``, ``(C, H, W)``, or ``(D,)`` for plain vectors.

    A single channel ``(1, H, W)`` is shown as ``(H, W)``.
    """
    if len(shape) == 3 and shape[0] == 1:
        return shape[1:]
    return shape


def split(x, y, fraction, seed, what="data"):
    """Hold out ``round(fraction * N)`` examples (at least one) by a seeded permutation.

    A test set of one example is allowed: what needs two or more (active
    units, interpolations) is skipped for it.
    """
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
        roles = [k for k in arrays if k in Y_KEYS + X_TEST_KEYS + Y_TEST_KEYS + NAME_KEYS]
        if roles:  # never train on a test set, labels or names for want of training images
            raise DataFileError(f"{path}: no training examples: it holds {sorted(arrays)}, and "
                                f"{', '.join(roles)} {'is' if len(roles) == 1 else 'are'} not "
                                f"training images; name them one of {', '.join(X_KEYS)}")
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
    elif _one_of(arrays, Y_TEST_KEYS) is not None:
        raise DataFileError(f"{path}: holds test labels ({_one_of(arrays, Y_TEST_KEYS)}) but no "
                            f"test examples; add them as {X_TEST_KEYS[0]}, or drop the labels")
    names_key = _one_of(arrays, NAME_KEYS)
    if names_key is not None:
        names = arrays[names_key]
        if names.ndim != 1 or names.dtype.kind not in "US":
            raise DataFileError(f"{path}[{names_key!r}]: expected a 1-D array of class names "
                                f"(strings), got {names.dtype} of shape {names.shape}")
        parts["label_names"] = [str(n) for n in names]
    for key in ("x", "x_test"):
        if key in parts:  # reported at its index in the file, before any split or reshape
            check_values(parts[key], f"{path}[{(x_key if key == 'x' else xt_key)!r}]")
    return parts


def check_values(x, what) -> None:
    """Refuse NaN or infinite examples, naming their count and the first one's index in ``x``."""
    try:
        check_finite(x, what)
    except DataValueError as exc:
        raise DataFileError(str(exc)) from None


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


#: The largest class label accepted: every label must be an exact integer far inside int64.
MAX_LABEL = 2**53


def check_labels(y, n, what) -> np.ndarray:
    """Integer class labels ``(n,)``, each in ``[0, MAX_LABEL]``."""
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
    if len(y) and y.max() > MAX_LABEL:  # a float such as 1e300 has no int64 value
        raise DataFileError(f"{what}: expected class labels 0, 1, 2, ... (at most {MAX_LABEL}), "
                            f"got {y.max():g}")
    return y.astype(np.int64)


# ---------------------------------------------------------------------------- identity


def fingerprint(path) -> str:
    """A SHA-256 of the data: the file's bytes, or a folder's files (names and bytes).

    A folder's files are found as the image reader finds them, through
    symbolic links to other folders (a class folder may be a link), so a
    change behind a link changes the fingerprint; a link back to a folder
    already being walked is not followed twice. Hidden files are left out.
    Names are hashed as the file system's bytes, whatever their encoding.
    Raises :class:`DataFileError` naming a file that cannot be read.
    """
    path = Path(path)
    digest = hashlib.sha256()
    files = [path] if data_kind(path) == "file" else sorted(_files_under(path))
    for f in files:
        if f is not path:
            digest.update(os.fsencode(f.relative_to(path).as_posix()) + b"\0")
        try:
            with open(f, "rb") as handle:
                while chunk := handle.read(1 << 20):
                    digest.update(chunk)
        except OSError as exc:
            raise DataFileError(f"{shown(f)}: cannot be read ({exc.strerror or exc})") from None
    return digest.hexdigest()


def _files_under(folder: Path) -> list[Path]:
    """The regular, not hidden, files under ``folder``, following links to folders.

    Walked with a stack of its own (a deep tree cannot exhaust Python's
    recursion); each folder carries the (device, inode) of the folders above
    it, so a link that loops back to one of them is not followed.
    """
    files, stack = [], [(folder, frozenset())]
    while stack:
        here, above = stack.pop()
        try:
            info = os.stat(here)
            entries = list(os.scandir(here))
        except OSError as exc:
            raise DataFileError(f"{shown(here)}: cannot be read ({exc.strerror or exc})") \
                from None
        key = (info.st_dev, info.st_ino)
        if key in above:
            continue
        for entry in entries:
            try:
                is_dir = entry.is_dir()
                is_file = not is_dir and stat.S_ISREG(entry.stat().st_mode)
            except OSError:  # a dangling link or a loop: nothing the reader could open
                continue
            if is_dir:
                stack.append((Path(entry.path), above | {key}))
            elif is_file and not entry.name.startswith("."):
                files.append(Path(entry.path))
    return files
