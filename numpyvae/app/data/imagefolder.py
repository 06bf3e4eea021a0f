"""A folder of PNG/JPEG images as arrays, with labels from its subfolders.

Three layouts are understood::

    shoes/boot/001.png     one subfolder per class: the labels are the
    shoes/sandal/002.png   subfolders' names, sorted (0 = "boot", 1 = "sandal")

    shoes/train/boot/...   train/ and test/ subfolders (each one of the other
    shoes/test/boot/...    two layouts): the data's own split

    faces/001.jpg          images only: no labels

Files other than ``.png``, ``.jpg`` and ``.jpeg`` (any case), and hidden
files, are ignored. Every image must have the same width and height. If
every image is gray (including RGB files whose three channels are equal)
the result is ``(N, H, W)``, otherwise ``(N, 3, H, W)``; an alpha channel is
dropped and 16-bit gray images are reduced to 8 bits. Images are read with
Pillow, header first: the size every image claims is checked against the
memory budget (:mod:`numpyvae.app.limits`) before any image is decoded, so a
file whose header announces an enormous picture is refused by name (this
check replaces Pillow's fixed decompression-bomb limit). File and folder
names may be any bytes; class names that are not UTF-8 show those bytes as
``\\xNN`` escapes.

What does not live here: scaling, splitting and array files
(:mod:`numpyvae.app.data.local`).
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import numpy as np

from ..limits import excess
from .idx import DataFileError
from .names import shown as _shown

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _visible(paths):
    return sorted(p for p in paths if not p.name.startswith("."))


def _images_in(folder: Path) -> list[Path]:
    return [p for p in _visible(folder.iterdir())
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]


def _subfolders(folder: Path) -> list[Path]:
    return [p for p in _visible(folder.iterdir()) if p.is_dir()]


def list_images(folder: Path) -> tuple[list[Path], list[int] | None, list[str] | None]:
    """The image files of ``folder`` with their labels and class names (None: unlabelled)."""
    classes = [d for d in _subfolders(folder) if _images_in(d)]
    loose = _images_in(folder)
    if classes and loose:
        raise DataFileError(f"{_shown(folder)}: holds both images ({_shown(loose[0].name)}, "
                            f"...) and class subfolders ({_shown(classes[0].name)}/, ...); put "
                            f"every image in a class subfolder, or none")
    if loose:
        return loose, None, None
    if not classes:
        raise DataFileError(f"{_shown(folder)}: no PNG or JPEG images found, neither in it nor in "
                            f"subfolders (one per class)")
    files, labels = [], []
    for label, d in enumerate(classes):
        found = _images_in(d)
        files += found
        labels += [label] * len(found)
    return files, labels, [_shown(d.name) for d in classes]


def read_images(files: list[Path], held: int = 0) -> np.ndarray:
    """Decode ``files`` into uint8 ``(N, H, W)`` (all gray) or ``(N, 3, H, W)``.

    Each header is read before its pixels: the first image's size, times the
    number of files (and ``held`` more images of that size read with them:
    the other split), must fit the memory budget, and every other image must
    have that size, before it is decoded.
    """
    from PIL import Image, UnidentifiedImageError

    arrays, size = [], None
    for f in files:
        try:
            with _unlimited(Image), Image.open(f) as img:
                width, height = img.size  # from the header; nothing decoded yet
                if size is None:
                    size, first = (height, width), f
                    _check_budget(len(files) + held, height, width, f)
                elif (height, width) != size:
                    raise DataFileError(
                        f"{_shown(f)}: {width}x{height} pixels, but {_shown(first.name)} (the "
                        f"first image) is {size[1]}x{size[0]}; every image must have the same "
                        f"size (resize them, e.g. with Pillow's Image.resize)")
                img.load()
                if img.mode.startswith("I;16"):
                    a = (np.asarray(img, dtype=np.float64) / 257).round().astype(np.uint8)
                    a = np.repeat(a[..., None], 3, axis=2)
                else:
                    a = np.asarray(img.convert("RGB"))
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError, EOFError,
                Image.DecompressionBombError) as exc:
            if isinstance(exc, DataFileError):
                raise
            raise DataFileError(f"{_shown(f)}: not a readable image ({_say(exc)})") from None
        if a.shape[:2] != size:  # the decoder disagrees with the header
            raise DataFileError(f"{_shown(f)}: decodes to {a.shape[1]}x{a.shape[0]} pixels, "
                                f"but its header says {size[1]}x{size[0]}")
        arrays.append(a)
    x = np.stack(arrays)                                   # (N, H, W, 3)
    if np.all(x[..., 0] == x[..., 1]) and np.all(x[..., 1] == x[..., 2]):
        return np.ascontiguousarray(x[..., 0])             # (N, H, W)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))   # (N, 3, H, W)


def _check_budget(n: int, height: int, width: int, first: Path) -> None:
    """Refuse ``n`` images of ``height x width`` whose decoding would exceed the memory budget.

    Decoding holds each image as 8-bit RGB, then stacks them into one array:
    twice ``n * height * width * 3`` bytes.
    """
    reason = excess(2 * n * height * width * 3)
    if reason is not None:
        raise DataFileError(f"{_shown(first)}: its header claims {width}x{height} pixels; "
                            f"{n} image(s) of that size would need {reason}")


@contextlib.contextmanager
def _unlimited(Image):
    """Open images without Pillow's pixel limit (its warning or error): the budget is checked.

    Pillow refuses (or warns about) pictures of more than a fixed number of
    pixels, whatever the memory; :func:`_check_budget` checks the size the
    header claims against the memory actually allowed instead, before
    decoding.
    """
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def _say(exc) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) < 200 else text[:200] + "..."


def read_image_folder(folder) -> dict:
    """The arrays of an image folder: ``x``, and ``y``/``label_names``/``x_test``/``y_test``."""
    folder = Path(folder)
    subs = {d.name.lower(): d for d in _subfolders(folder)}
    if "train" in subs and "test" in subs and not _images_in(folder):
        train_files, train_y, train_names = list_images(subs["train"])
        test_files, test_y, test_names = list_images(subs["test"])
        if train_names != test_names and test_names is not None:
            raise DataFileError(f"{_shown(folder)}: train/ has classes {train_names}, test/ has "
                                f"{test_names}; expected the same class subfolders")
        x = read_images(train_files, held=len(test_files))
        x_test = read_images(test_files, held=len(x))
        if x.shape[1:] != x_test.shape[1:]:
            x, x_test = _same_channels(x, x_test, folder)
        parts = {"x": x, "x_test": x_test}
        if train_y is not None:
            if test_y is None:
                raise DataFileError(f"{_shown(folder)}: train/ has class subfolders but test/ "
                                    f"does not")
            parts.update(y=np.array(train_y, dtype=np.int64),
                         y_test=np.array(test_y, dtype=np.int64), label_names=train_names)
        return parts
    files, labels, names = list_images(folder)
    parts = {"x": read_images(files)}
    if labels is not None:
        parts.update(y=np.array(labels, dtype=np.int64), label_names=names)
    return parts


def _same_channels(x, x_test, folder):
    """Gray in one split and colour in the other: make both colour (same sizes required)."""
    def rgb(a):
        return np.repeat(a[:, None], 3, axis=1) if a.ndim == 3 else a

    x, x_test = rgb(x), rgb(x_test)
    if x.shape[1:] != x_test.shape[1:]:
        raise DataFileError(f"{_shown(folder)}: train/ images are {x.shape[-1]}x{x.shape[-2]} "
                            f"pixels, test/ images {x_test.shape[-1]}x{x_test.shape[-2]}; expected "
                            f"the same size")
    return x, x_test
