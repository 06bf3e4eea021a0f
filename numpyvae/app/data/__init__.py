"""Datasets: the embedded sprites, MNIST and Fashion-MNIST, your own files, and binarization.

>>> from numpyvae.app.data import load_dataset
>>> ds = load_dataset("shapes")                      # doctest: +SKIP
>>> ds.x_train.shape, ds.label_names[:2]             # doctest: +SKIP
((20000, 784), ['square', 'ellipse'])

Modules: :mod:`~numpyvae.app.data.idx` (the file format),
:mod:`~numpyvae.app.data.download` (where files are found, downloading),
:mod:`~numpyvae.app.data.shapes` (drawing the sprites),
:mod:`~numpyvae.app.data.datasets` (:class:`Dataset`, :func:`load_dataset`, :func:`binarize`),
:mod:`~numpyvae.app.data.local` (:func:`load_data`: your own ``.npy``/``.npz`` file or image
folder, via :mod:`~numpyvae.app.data.imagefolder`), :mod:`~numpyvae.app.data.checks` (what is
checked before training).
"""

from .checks import DataValueError, check_training_data
from .datasets import BINARIZE_MODES, DATASETS, Dataset, binarize, load_dataset
from .download import DownloadError, cache_root
from .idx import DataFileError, DataNotFoundError, read_idx, write_idx
from .local import load_data

__all__ = [
    "BINARIZE_MODES",
    "DATASETS",
    "Dataset",
    "DataFileError",
    "DataNotFoundError",
    "DataValueError",
    "DownloadError",
    "binarize",
    "cache_root",
    "check_training_data",
    "load_data",
    "load_dataset",
    "read_idx",
    "write_idx",
]
