"""Datasets: the embedded sprites, MNIST and Fashion-MNIST, IDX files and binarization.

>>> from numpyvae.data import load_dataset
>>> ds = load_dataset("shapes")                      # doctest: +SKIP
>>> ds.x_train.shape, ds.label_names[:2]             # doctest: +SKIP
((20000, 784), ['square', 'ellipse'])

Modules: :mod:`~numpyvae.data.idx` (the file format),
:mod:`~numpyvae.data.download` (where files are found, downloading),
:mod:`~numpyvae.data.shapes` (drawing the sprites),
:mod:`~numpyvae.data.datasets` (:class:`Dataset`, :func:`load_dataset`, :func:`binarize`).
"""

from .datasets import BINARIZE_MODES, DATASETS, Dataset, binarize, load_dataset
from .download import DownloadError, cache_root
from .idx import DataFileError, DataNotFoundError, read_idx, write_idx

__all__ = [
    "BINARIZE_MODES",
    "DATASETS",
    "Dataset",
    "DataFileError",
    "DataNotFoundError",
    "DownloadError",
    "binarize",
    "cache_root",
    "load_dataset",
    "read_idx",
    "write_idx",
]
