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
files are looked for and downloaded from is :mod:`numpyvae.app.data.download`.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from ...fileio import atomic_write
from ..limits import excess, unaddressable

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
_CHUNK = 1 << 20
#: The most dimensions an IDX file may have here (NumPy's own limit is 64).
MAX_DIMS = 32


class DataFileError(ValueError):
    """A data file exists but is corrupt, truncated, or not the data that was expected."""


class DataNotFoundError(FileNotFoundError):
    """Data files are missing; the message says where they were looked for and how to get them."""


def read_bytes(path) -> bytes:
    """The decompressed content of ``path`` (gzip or not), with clear errors.

    For files one trusts; :func:`read_idx` reads IDX files without it, header
    first, so that a hostile file cannot make it decompress more than its
    header announces.
    """
    path = Path(path)
    with _open(path) as (f, compressed):
        stream = gzip.GzipFile(fileobj=f, mode="rb") if compressed else f
        with _gzip_errors(path):
            return stream.read()


def parse_idx(data: bytes, source="IDX data") -> np.ndarray:
    """Parse the bytes of an (uncompressed) IDX file into a native-endian array."""
    return _read_stream(io.BytesIO(data), source, len(data))


def read_idx(path) -> np.ndarray:
    """Read one IDX file (gzip-compressed or not) into a NumPy array of its own type.

    Raises :class:`DataNotFoundError` if the file is missing and
    :class:`DataFileError` (a ``ValueError``) if it is corrupt, truncated,
    not an IDX file, or announces more data than the memory budget allows
    (:mod:`numpyvae.app.limits`); messages name the file. The header is read
    and checked first; a compressed file is then decompressed as a stream,
    never beyond the size its header announces.
    """
    path = Path(path)
    with _open(path) as (f, compressed):
        if not compressed:
            return _read_stream(f, str(path), os.fstat(f.fileno()).st_size)
        with _gzip_errors(path):
            return _read_stream(gzip.GzipFile(fileobj=f, mode="rb"), str(path), None)


@contextlib.contextmanager
def _open(path: Path):
    """The open file and whether it is gzip-compressed (by its first two bytes)."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise DataNotFoundError(f"{path}: file not found") from None
    except OSError as exc:
        raise DataFileError(f"{path}: cannot read the file ({exc.strerror or exc})") from exc
    with f:
        try:
            compressed = f.read(2) == GZIP_MAGIC
            f.seek(0)
        except OSError as exc:
            raise DataFileError(f"{path}: cannot read the file ({exc.strerror or exc})") from exc
        yield f, compressed


@contextlib.contextmanager
def _gzip_errors(path: Path):
    try:
        yield
    except EOFError:
        raise DataFileError(
            f"{path}: the gzip data is truncated (the file ended before the end of the "
            f"compressed stream); delete it and download or copy it again"
        ) from None
    except (OSError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise DataFileError(
            f"{path}: corrupt gzip data ({exc}); delete it and download or copy it again"
        ) from None


def _read_exactly(stream, n: int) -> bytes:
    """Up to ``n`` bytes of ``stream`` (fewer only at its end), read in bounded chunks."""
    buffer = bytearray(n)
    view, done = memoryview(buffer), 0
    while done < n:
        chunk = stream.read(min(_CHUNK, n - done))
        if not chunk:
            return bytes(buffer[:done])
        view[done:done + len(chunk)] = chunk
        done += len(chunk)
    return buffer


def _read_stream(stream, source: str, size: int | None) -> np.ndarray:
    """Parse an IDX stream: header, checks, then exactly the data the header announces.

    ``size`` is the stream's length when known (an uncompressed file), so a
    wrong length is reported before anything is read; for a compressed
    stream it is None, and the stream is read no further than the header's
    promise plus one byte (to tell a file that is longer than its header says).
    """
    head = stream.read(4)
    if len(head) < 4:
        raise DataFileError(f"{source}: too short to be an IDX file ({len(head)} bytes)")
    zero, type_code, ndim = struct.unpack(">HBB", head)
    magic = int.from_bytes(head, "big")
    if zero != 0 or type_code not in IDX_TYPES or ndim == 0:
        raise DataFileError(
            f"{source}: not an IDX file (magic number 0x{magic:08X}; an IDX file starts with "
            f"0x0000 then a type code 0x08-0x0E and the number of dimensions)"
        )
    if ndim > MAX_DIMS:
        raise DataFileError(f"{source}: its IDX header announces {ndim} dimensions; numpyvae "
                            f"reads IDX files of at most {MAX_DIMS}")
    dims = stream.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise DataFileError(f"{source}: the IDX header is truncated ({ndim} dimensions "
                            f"announced, {len(dims) // 4} sizes present)")
    shape = struct.unpack(f">{ndim}I", dims)
    dtype = IDX_TYPES[type_code]
    header = 4 + 4 * ndim
    expected = math.prod(shape) * dtype.itemsize  # Python integers: no overflow
    reason = excess(expected) or unaddressable(shape, dtype.itemsize)
    if reason is not None:
        raise DataFileError(f"{source}: its IDX header announces shape {_show(shape)} of "
                            f"{dtype.newbyteorder('=')}, {reason}; not a dataset numpyvae can load")
    if size is not None and size - header != expected:
        _wrong_length(source, shape, expected, size - header)
    data = _read_exactly(stream, expected)
    if len(data) < expected:
        _wrong_length(source, shape, expected, len(data))
    if size is None and stream.read(1):
        raise DataFileError(f"{source}: the file is longer than its header says: its header "
                            f"announces shape {_show(shape)} ({expected} bytes of data), but "
                            f"more data follows")
    array = np.frombuffer(data, dtype=dtype).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def _wrong_length(source, shape, expected, actual):
    what = "truncated" if actual < expected else "longer than its header says"
    raise DataFileError(
        f"{source}: the file is {what}: its header announces shape {_show(shape)} "
        f"({expected} bytes of data), but it holds {actual} bytes"
    )


def _show(shape) -> str:
    if len(shape) <= 8:
        return str(tuple(shape))
    return f"({', '.join(map(str, shape[:4]))}, ... {len(shape)} dimensions)"


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
