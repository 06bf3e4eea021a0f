"""Reading and writing IDX files, the format of MNIST, Fashion-MNIST, KMNIST and friends.

An IDX file is a big-endian header followed by the raw array::

    bytes 0-1   0x00 0x00
    byte  2     element type: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
                0x0D float32, 0x0E float64
    byte  3     number of dimensions, d
    then        d sizes, each a big-endian uint32
    then        the elements, C order, big-endian

so the "magic number" of an image file (uint8, 3 dimensions) is ``0x00000803``
and that of a label file (uint8, 1 dimension) ``0x00000801``. Files may be
gzip-compressed; compression is recognised by its first bytes, not by the
file name.

What lives here: parsing and validating one file (:func:`read_idx`), a pair of
image and label files (:func:`read_image_label_pair`), and writing
(:func:`write_idx`, for tests and for users who bring their own data). Where
files are looked for and downloaded from is :mod:`numpyvae.data.download`.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from ..fileio import atomic_write

#: IDX element type code -> big-endian NumPy dtype.
IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_TYPE_CODES = {dt.newbyteorder("="): code for code, dt in IDX_TYPES.items()}
GZIP_MAGIC = b"\x1f\x8b"


class DataFileError(ValueError):
    """A data file exists but is corrupt, truncated, or not the data that was expected."""


class DataNotFoundError(FileNotFoundError):
    """Data files are missing; the message says where they were looked for and how to get them."""


def read_bytes(path) -> bytes:
    """The decompressed content of ``path`` (gzip or not), with clear errors."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataNotFoundError(f"{path}: file not found") from None
    except OSError as exc:
        raise DataFileError(f"{path}: cannot read the file ({exc.strerror or exc})") from exc
    if not raw.startswith(GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError:
        raise DataFileError(
            f"{path}: the gzip data is truncated (the file ended before the end of the "
            f"compressed stream); delete it and download or copy it again"
        ) from None
    except (OSError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise DataFileError(
            f"{path}: corrupt gzip data ({exc}); delete it and download or copy it again"
        ) from None


def parse_idx(data: bytes, source="IDX data") -> np.ndarray:
    """Parse the bytes of an (uncompressed) IDX file into a native-endian array."""
    if len(data) < 4:
        raise DataFileError(f"{source}: too short to be an IDX file ({len(data)} bytes)")
    zero, type_code, ndim = struct.unpack(">HBB", data[:4])
    magic = int.from_bytes(data[:4], "big")
    if zero != 0 or type_code not in IDX_TYPES or ndim == 0:
        raise DataFileError(
            f"{source}: not an IDX file (magic number 0x{magic:08X}; an IDX file starts with "
            f"0x0000 then a type code 0x08-0x0E and the number of dimensions)"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataFileError(f"{source}: the IDX header is truncated")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = IDX_TYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = len(data) - header
    if actual != expected:
        what = "truncated" if actual < expected else "longer than its header says"
        raise DataFileError(
            f"{source}: the file is {what}: its header announces shape {shape} "
            f"({expected} bytes of data), but it holds {actual} bytes"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def read_idx(path) -> np.ndarray:
    """Read one IDX file (gzip-compressed or not) into a NumPy array of its own type.

    Raises :class:`DataNotFoundError` if the file is missing and
    :class:`DataFileError` (a ``ValueError``) if it is corrupt, truncated or
    not an IDX file; messages name the file.
    """
    return parse_idx(read_bytes(path), source=str(path))


def read_image_label_pair(images_path, labels_path, image_shape=(28, 28)):
    """Read and cross-check an image file and its label file.

    Returns
    -------
    images : ndarray, uint8, shape (N, H, W)
    labels : ndarray, int64, shape (N,)

    The image file must be a 3-dimensional uint8 IDX file (magic ``0x00000803``)
    of ``image_shape`` images, the label file a 1-dimensional uint8 IDX file
    (magic ``0x00000801``) with as many labels as there are images.
    """
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    _expect(images, images_path, ndim=3, what="images")
    _expect(labels, labels_path, ndim=1, what="labels")
    if images.shape[1:] != tuple(image_shape):
        raise DataFileError(
            f"{images_path}: images are {images.shape[1]}x{images.shape[2]} pixels, "
            f"expected {image_shape[0]}x{image_shape[1]}"
        )
    if len(images) != len(labels):
        raise DataFileError(
            f"{images_path} holds {len(images)} images but {labels_path} holds "
            f"{len(labels)} labels; the counts must agree"
        )
    if len(images) == 0:
        raise DataFileError(f"{images_path}: holds no images")
    return images, labels.astype(np.int64)


def _expect(array, path, ndim, what):
    magic = 0x0800 + ndim
    if array.dtype != np.uint8 or array.ndim != ndim:
        found = (_TYPE_CODES.get(array.dtype, 0) << 8) + array.ndim
        raise DataFileError(
            f"{path}: wrong IDX magic number 0x{found:08X} ({array.ndim}-dimensional "
            f"{array.dtype}); {what} need 0x{magic:08X} ({ndim}-dimensional uint8)"
        )


def write_idx(path, array, compress=None) -> Path:
    """Write ``array`` as an IDX file, atomically.

    Gzip-compressed if ``compress``; by default, when the name ends in ``.gz``.
    """
    path = Path(path)
    array = np.asarray(array)
    native = array.dtype.newbyteorder("=")
    if native not in _TYPE_CODES or array.ndim == 0:
        raise ValueError(f"write_idx: cannot store a {array.ndim}-d {array.dtype} array as IDX")
    header = struct.pack(f">HBB{array.ndim}I", 0, _TYPE_CODES[native], array.ndim, *array.shape)
    data = header + np.ascontiguousarray(array, dtype=IDX_TYPES[_TYPE_CODES[native]]).tobytes()
    if path.name.endswith(".gz") if compress is None else compress:
        data = gzip.compress(data, mtime=0)
    return atomic_write(path, lambda f: f.write(data))
