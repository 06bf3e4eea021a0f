"""The datasets numpyvae trains on, as one :class:`Dataset` type, and binarization.

* ``"shapes"`` — the embedded sprites (:mod:`numpyvae.app.data.shapes`), generated
  on first use and cached as ``<cache>/shapes/shapes-v1-seed<seed>.npz``.
* ``"mnist"``, ``"fashion-mnist"`` — the four standard IDX files, found or
  downloaded as :mod:`numpyvae.app.data.download` describes.

Pixels are scaled to [0, 1] as float32 and flattened to 784 columns. Your own
files and folders are read by :mod:`numpyvae.app.data.local` into the same type.

What does not live here: IDX parsing (:mod:`numpyvae.app.data.idx`), where files
come from (:mod:`numpyvae.app.data.download`), drawing the sprites
(:mod:`numpyvae.app.data.shapes`).
"""

from __future__ import annotations

import io
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...fileio import atomic_write
from . import shapes
from .download import cache_root, fetch, find_files, not_found_message
from .idx import DataNotFoundError, read_image_label_pair

DATASETS = ("shapes", "mnist", "fashion-mnist")
BINARIZE_MODES = ("none", "dynamic", "static")
SHAPES_CACHE_VERSION = 1

LABEL_NAMES = {
    "mnist": [str(d) for d in range(10)],
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                      "Sneaker", "Bag", "Ankle boot"],
    "shapes": list(shapes.SHAPE_NAMES),
}


@dataclass
class Dataset:
    """A training and a test split of images (or vectors), flattened to rows.

    Attributes
    ----------
    name : str
    x_train, x_test : float arrays, shape (N, input_dim), values in [0, 1] for images
    y_train, y_test : int64 arrays, shape (N,): the class labels, or None (unlabelled data)
    image_shape : tuple
        The shape of one example: ``(28, 28)`` for the named datasets;
        ``(H, W)``, ``(C, H, W)`` or ``(D,)`` for your own data
        (:func:`numpyvae.app.data.load_data`). Reshape a row of ``x`` to it.
    label_names : list of str
        ``label_names[y]`` names class ``y``.
    source : str
        Where the data came from (a folder, or the cache file of ``shapes``).
    factor_names : list of str
        ``shapes`` only: the generating factors, ``["shape", "scale", "rotation", "x", "y"]``.
    factors_train, factors_test : dict of str -> array, or None
        ``shapes`` only: each factor's value for each image.
    test_fraction : float or None
        The share of the examples held out as the test set when the data
        came without one (:func:`numpyvae.app.data.load_data`); None otherwise.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    image_shape: tuple = (28, 28)
    label_names: list = field(default_factory=list)
    source: str = ""
    factor_names: list = field(default_factory=list)
    factors_train: dict | None = None
    factors_test: dict | None = None
    test_fraction: float | None = None

    @property
    def input_dim(self) -> int:
        return int(np.prod(self.image_shape))

    def __repr__(self):
        return (f"Dataset({self.name!r}, train={self.x_train.shape}, test={self.x_test.shape}, "
                f"classes={len(self.label_names)}, source={self.source!r})")


def _to_unit(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W) -> float32 (N, H*W) in [0, 1]."""
    x = images.reshape(len(images), -1).astype(np.float32)
    x *= np.float32(1 / 255)
    return x


def load_dataset(name: str, data_dir=None, *, download: bool = True, seed: int = 0,
                 progress: bool = True) -> Dataset:
    """Load a dataset by name: ``"shapes"``, ``"mnist"`` or ``"fashion-mnist"``.

    Parameters
    ----------
    name : str
    data_dir : path, optional
        For ``mnist``/``fashion-mnist``, a folder holding the four IDX files,
        searched first. For ``shapes``, the folder of its cache file. It must
        exist: a missing folder is an error, never the target of a download.
    download : bool
        Whether missing IDX files may be downloaded (``False``: raise instead).
    seed : int
        ``shapes`` only: the seed the sprites are drawn with.
    progress : bool
        Show a progress bar while downloading, and, at a terminal, say so while
        ``shapes`` is drawn the first time (a few seconds, once).

    Raises
    ------
    ValueError
        For an unknown name.
    DataNotFoundError (a FileNotFoundError)
        When files are missing and may not (or could not) be downloaded.
    DataFileError (a ValueError)
        When a file is corrupt, truncated, or holds the wrong kind of data.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    if data_dir is not None and not Path(data_dir).expanduser().is_dir():
        # A typo must not start a download into a new folder of that name.
        what = "does not exist" if not Path(data_dir).expanduser().exists() else "is not a folder"
        raise DataNotFoundError(f"data folder {data_dir} {what} (nothing was downloaded); "
                                f"check the path, or leave the folder out to use "
                                f"$NUMPYVAE_DATA/{name}/ or the cache")
    if name == "shapes":
        return _load_shapes(seed, data_dir, progress)
    files = find_files(name, data_dir)
    if files is None:
        if not download:
            raise DataNotFoundError(not_found_message(name, data_dir))
        dest = Path(data_dir).expanduser() if data_dir is not None else cache_root() / name
        files = fetch(name, dest, progress=progress)
    train_images, train_labels = read_image_label_pair(files["train_images"],
                                                       files["train_labels"])
    test_images, test_labels = read_image_label_pair(files["test_images"], files["test_labels"])
    return Dataset(name=name, x_train=_to_unit(train_images), y_train=train_labels,
                   x_test=_to_unit(test_images), y_test=test_labels,
                   label_names=list(LABEL_NAMES[name]),
                   source=str(files["train_images"].parent))


def shapes_cache_path(seed: int = 0, data_dir=None) -> Path:
    """Where the generated ``shapes`` arrays for ``seed`` are cached."""
    folder = Path(data_dir).expanduser() if data_dir is not None else cache_root() / "shapes"
    return folder / f"shapes-v{SHAPES_CACHE_VERSION}-seed{int(seed)}.npz"


def _load_shapes(seed, data_dir=None, progress=False) -> Dataset:
    path = shapes_cache_path(seed, data_dir)
    arrays = _read_shapes_cache(path)
    if arrays is None:
        if progress and sys.stderr.isatty():  # a few seconds, once: say what the wait is
            print(f"drawing the shapes data set ({shapes.N_TRAIN + shapes.N_TEST:,} sprites; "
                  f"once, then read from {path})", file=sys.stderr, flush=True)
        tr_img, tr_f, te_img, te_f = shapes.generate_splits(int(seed))
        arrays = {"train_images": tr_img, "test_images": te_img,
                  **{f"train_{k}": v for k, v in tr_f.items()},
                  **{f"test_{k}": v for k, v in te_f.items()}}
        try:
            atomic_write(path, lambda f: np.savez_compressed(f, **arrays))
        except OSError:
            pass  # an unwritable cache only costs regenerating next time
    names = shapes.FACTOR_NAMES
    factors_train = {k: arrays[f"train_{k}"] for k in names}
    factors_test = {k: arrays[f"test_{k}"] for k in names}
    return Dataset(name="shapes", x_train=_to_unit(arrays["train_images"]),
                   y_train=factors_train["shape"].astype(np.int64),
                   x_test=_to_unit(arrays["test_images"]),
                   y_test=factors_test["shape"].astype(np.int64),
                   label_names=list(LABEL_NAMES["shapes"]), source=str(path),
                   factor_names=list(names), factors_train=factors_train,
                   factors_test=factors_test)


def _read_shapes_cache(path: Path):
    """The cached arrays, or None when the cache is absent or unreadable (then regenerated)."""
    if not path.is_file():
        return None
    keys = ["train_images", "test_images"] + [f"{split}_{k}" for split in ("train", "test")
                                              for k in shapes.FACTOR_NAMES]
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in keys}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, io.UnsupportedOperation):
        return None
    if arrays["train_images"].shape != (shapes.N_TRAIN, 28, 28):
        return None
    return arrays


def binarize(x: np.ndarray, mode: str, rng: np.random.Generator) -> np.ndarray:
    """Turn gray levels in [0, 1] into {0, 1} pixels.

    * ``"none"`` — return ``x`` unchanged.
    * ``"dynamic"``, ``"static"`` — each pixel is a Bernoulli draw with
      probability its gray level: ``x_b = [u < x]``, ``u ~ U(0, 1)`` from
      ``rng``. The two modes differ in *when* this is called: dynamic
      binarization draws afresh for every epoch (the protocol behind the
      published MNIST log-likelihoods), static binarization once, before
      training. This function draws once per call in both cases.

    Returns an array of ``x``'s dtype (float32 for the loaders' output).
    """
    if mode not in BINARIZE_MODES:
        raise ValueError(f"unknown binarization {mode!r}; expected one of "
                         f"{', '.join(BINARIZE_MODES)}")
    if mode == "none":
        return x
    x = np.asarray(x)
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32
    u = rng.random(x.shape, dtype=np.float32 if dtype == np.float32 else np.float64)
    return (u < x).astype(dtype)
