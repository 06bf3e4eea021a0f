"""Reading ``.npz`` archives written by someone else: bounded, validated, no pickles.

``np.load`` trusts the archive: it decompresses what the zip directory says,
with whatever compression method the directory names, and reports damage as
whichever exception the layer underneath happened to raise (``LZMAError``,
``NotImplementedError``, ``RuntimeError``, or a misleading "pickled data"
message for a zeroed file). Model files and checkpoints are files users
move around, edit and receive, so they are read here instead:

1. the zip directory first: at most :data:`MAX_ENTRIES` entries, each a
   ``<name>.npy``, stored or deflated (the two methods ``np.savez`` and
   ``np.savez_compressed`` use), not encrypted, and the sizes it declares
   within the memory budget (:mod:`numpyvae.app.limits`);
2. then each entry's ``.npy`` header: a plain numeric or boolean dtype (never
   an object, so never a pickle), and a shape whose bytes plus the header
   equal the size the zip directory declares;
3. only then the data, streamed into an array of exactly that size: the
   decompressor never produces more than the declared size, and the zip
   CRC is checked at the end.

Every problem raises the caller's error class (a model file's, a
checkpoint's) with the file named and the problem said; nothing else
escapes. What does not live here: what the arrays mean (the model and
checkpoint loaders check names, shapes and values).
"""

from __future__ import annotations

import math
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .limits import excess, unaddressable

#: The most entries an archive may hold (a model has a few per layer).
MAX_ENTRIES = 10_000
#: The largest ``.npy`` header read (numpy's own default limit).
MAX_HEADER = 10_000
_CHUNK = 1 << 20
_KINDS = "biufcSU"  # booleans, numbers, bytes, text: never objects (pickles) or records
_ENCRYPTED = 0x1
_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)  # what np.savez(_compressed) write
# What the standard library can raise on a damaged zip directory or stream.
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, struct.error,
               OverflowError, NotImplementedError, RuntimeError, UnicodeDecodeError,
               IndexError, KeyError)


def read_npz(path, error: type[Exception] = ValueError, what: str = "numpyvae file") -> dict:
    """All arrays of the ``.npz`` archive ``path``, by name (without ``.npy``).

    Parameters
    ----------
    path : path of the archive
    error : exception class
        Raised, with a message naming ``path``, for every problem: a missing
        or unreadable file, a damaged or hostile archive, sizes beyond the
        memory budget.
    what : str
        What the file should be, for messages ("model file", "checkpoint").
    """
    path = Path(path)
    try:
        return _read(path, what)
    except _Problem as exc:
        raise error(f"{path}: {exc}") from None


class _Problem(Exception):
    """What is wrong with the archive; :func:`read_npz` adds the file name and the class."""


def _read(path: Path, what: str) -> dict:
    f = _open(path)
    with f:
        size = _size(f, what)
        try:
            head = f.read(4)
            f.seek(0)
        except OSError as exc:
            raise _Problem(f"cannot read the file ({exc.strerror or exc})") from None
        if not head.startswith(b"PK"):
            raise _Problem(f"not a readable {what} (an .npz archive starts with the zip signature "
                           f"'PK'; this file of {size} bytes starts with {head!r})")
        try:
            archive = zipfile.ZipFile(f)
        except _ZIP_ERRORS as exc:
            raise _Problem(f"not a readable {what}: the zip directory is damaged ({_say(exc)})") \
                from None
        with archive:
            entries = _check_directory(archive)
            arrays = {}
            for info in entries:
                try:
                    arrays[info.filename[:-4]] = _read_entry(archive, info, what)
                except _ZIP_ERRORS as exc:
                    raise _Problem(f"entry {info.filename!r} is damaged ({_say(exc)})") from None
    return arrays


def _check_directory(archive) -> list:
    entries = archive.infolist()
    if len(entries) > MAX_ENTRIES:
        raise _Problem(f"the archive lists {len(entries)} entries, more than the {MAX_ENTRIES} "
                       f"a numpyvae file can hold")
    seen, total = set(), 0
    for info in entries:
        name = info.filename
        if not name.endswith(".npy") or len(name) == 4:
            raise _Problem(f"unexpected entry {name!r} (an .npz archive holds only <name>.npy "
                           f"arrays)")
        if name in seen:
            raise _Problem(f"the entry {name!r} appears twice")
        seen.add(name)
        if info.flag_bits & _ENCRYPTED:
            raise _Problem(f"the entry {name!r} is encrypted; numpyvae files never are")
        if info.compress_type not in _METHODS:
            raise _Problem(f"the entry {name!r} uses zip compression method {info.compress_type}; "
                           f"an .npz archive uses method 0 (stored) or 8 (deflate)")
        total += info.file_size
    reason = excess(total)
    if reason is not None:
        raise _Problem(f"the archive's entries claim {reason}")
    return entries


def _read_entry(archive, info, what) -> np.ndarray:
    with archive.open(info) as stream:
        return _read_array(stream, f"entry {info.filename!r}", info.file_size, "zip directory",
                           what)


def _read_array(stream, name: str, declared: int, declarer: str, what: str = "numpyvae file"):
    """The ``.npy`` array in ``stream``: its header checked, then exactly its bytes read.

    ``declared``: how many bytes the stream holds, as ``declarer`` (the zip
    directory, the file system) says; the header's shape must fill exactly
    that, so nothing bigger than the file is ever allocated.
    """
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream, MAX_HEADER)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream, MAX_HEADER)
        else:
            raise ValueError(f".npy format version {version[0]}.{version[1]} is not "
                             f"supported (1.0 and 2.0 are)")
    except (ValueError, TypeError, SyntaxError, KeyError, RecursionError,
            OverflowError, EOFError) as exc:
        raise _Problem(f"{name} is not a valid .npy array ({_say(exc)})") from None
    if dtype.hasobject or dtype.kind not in _KINDS:
        raise _Problem(f"{name} holds {dtype} data; {what}s hold numbers or text (pickled "
                       f"objects are never loaded)")
    nbytes = math.prod(shape) * dtype.itemsize
    header_size = stream.tell()  # bytes read so far: the header's
    if header_size + nbytes != declared:
        raise _Problem(f"{name}: its .npy header announces shape {shape} of {dtype} "
                       f"({nbytes} bytes) but the {declarer} gives it "
                       f"{declared - header_size} bytes of data")
    reason = excess(nbytes)
    if reason is not None:
        raise _Problem(f"{name} would need {reason}")
    reason = unaddressable(shape, dtype.itemsize)
    if reason is not None:
        raise _Problem(f"{name}: its .npy header announces shape {shape} of {dtype}, with "
                       f"{reason}")
    buffer = bytearray(nbytes)
    view, done = memoryview(buffer), 0
    while done < nbytes:
        chunk = stream.read(min(_CHUNK, nbytes - done))
        if not chunk:
            raise _Problem(f"{name} is truncated ({done} of {nbytes} bytes)")
        view[done:done + len(chunk)] = chunk
        done += len(chunk)
    if stream.read(1):  # also makes zipfile check the CRC
        raise _Problem(f"{name} holds more data than its header announces")
    array = np.frombuffer(buffer, dtype=dtype)
    return array.reshape(shape, order="F" if fortran else "C")


def read_npy(path, error: type[Exception] = ValueError, what: str = "array file") -> np.ndarray:
    """The array of the ``.npy`` file ``path``, read as :func:`read_npz` reads each entry.

    The header is checked first (a numeric, boolean or text dtype, never a
    pickle; a shape whose bytes fill exactly the file and fit the memory
    budget), then exactly those bytes are read. Every problem raises
    ``error`` naming ``path``.
    """
    path = Path(path)
    try:
        f = _open(path)
        with f:
            size = _size(f, what)
            try:
                return _read_array(f, "the file", size, "file's size", what)
            except OSError as exc:
                raise _Problem(f"cannot read the file ({exc.strerror or exc})") from None
    except _Problem as exc:
        raise error(f"{path}: {exc}") from None


def _size(f, what: str) -> int:
    """The open file's size in bytes, read from its start again; an empty file is refused."""
    try:
        size = f.seek(0, 2)
        f.seek(0)
    except OSError as exc:
        raise _Problem(f"cannot read the file ({exc.strerror or exc})") from None
    if size == 0:
        raise _Problem(f"the file is empty; not a readable {what}")
    return size


def _open(path: Path):
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise _Problem("file not found") from None
    except IsADirectoryError:
        raise _Problem("a folder, not a file") from None
    except OSError as exc:
        raise _Problem(f"cannot read the file ({exc.strerror or exc})") from None


def _say(exc) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) < 200 else text[:200] + "..."
