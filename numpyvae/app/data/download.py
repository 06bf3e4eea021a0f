"""Finding the IDX files of MNIST-like datasets on disk, and downloading them when absent.

The four files of a dataset (:data:`IDX_FILES`) are looked for, in order, in

1. the folder given as ``data_dir`` (``--data-dir``), the four files directly in it;
2. ``$NUMPYVAE_DATA/<name>/``;
3. the user cache, ``<cache>/<name>/`` (see :func:`cache_root`);
4. system folders where a distribution installs the dataset (Debian's
   ``dataset-fashion-mnist`` package: ``/usr/share/datasets/fashion-mnist/``).

The first folder holding all four wins. Any IDX files under those names are
accepted (gzip-compressed or not, also without the ``.gz`` suffix), so users
can bring their own data such as KMNIST: local files are checked by their IDX
header and sizes (:mod:`numpyvae.app.data.idx`), not by checksum, since
re-compressed copies have different checksums with the same content.

When no folder holds them, :func:`fetch` downloads the missing files from the
dataset's mirrors into ``data_dir`` (or the user cache), shows a progress bar,
verifies each download against its published checksum, and writes it
atomically. Only downloads are checksum-verified.

What does not live here: parsing (:mod:`numpyvae.app.data.idx`), turning files
into a :class:`numpyvae.app.data.Dataset` (:mod:`numpyvae.app.data.datasets`).
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from ...fileio import atomic_write
from .idx import DataNotFoundError

#: Role -> the standard file name.
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}

DATA_ENV = "NUMPYVAE_DATA"
CACHE_ENV = "NUMPYVAE_CACHE"


class DownloadError(DataNotFoundError):
    """Downloading failed on every mirror (network error, HTTP error or checksum mismatch)."""


@dataclass(frozen=True)
class Source:
    """Where a dataset can be downloaded from and the checksums of its ``.gz`` files."""

    mirrors: tuple[str, ...]
    sha256: dict = field(default_factory=dict)
    md5: dict = field(default_factory=dict)
    system_dirs: tuple[str, ...] = ()
    homepage: str = ""


SOURCES = {
    "mnist": Source(
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        sha256={
            "train-images-idx3-ubyte.gz":
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "train-labels-idx1-ubyte.gz":
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "t10k-images-idx3-ubyte.gz":
                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "t10k-labels-idx1-ubyte.gz":
                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        },
        md5={
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        homepage="http://yann.lecun.com/exdb/mnist/",
    ),
    "fashion-mnist": Source(
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        sha256={
            "train-images-idx3-ubyte.gz":
                "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "train-labels-idx1-ubyte.gz":
                "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "t10k-images-idx3-ubyte.gz":
                "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "t10k-labels-idx1-ubyte.gz":
                "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        },
        md5={
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        homepage="https://github.com/zalandoresearch/fashion-mnist",
    ),
}


def cache_root() -> Path:
    """The user cache folder.

    ``$NUMPYVAE_CACHE``, else ``$XDG_CACHE_HOME/numpyvae``, else ``~/.cache/numpyvae``.
    """
    explicit = os.environ.get(CACHE_ENV, "").strip()
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "numpyvae"


def file_in(folder: Path, filename: str) -> Path | None:
    """``folder/filename``, or the same name without ``.gz``, whichever exists."""
    for candidate in (folder / filename, folder / filename.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def candidate_dirs(name: str, data_dir=None) -> list[Path]:
    """The folders searched for dataset ``name``, in order (see the module docstring)."""
    dirs = []
    if data_dir is not None:
        dirs.append(Path(data_dir).expanduser())
    env = os.environ.get(DATA_ENV, "").strip()
    if env:
        dirs.append(Path(env).expanduser() / name)
    dirs.append(cache_root() / name)
    source = SOURCES.get(name)
    if source is not None:
        dirs.extend(Path(d) for d in source.system_dirs)
    return dirs


def find_files(name: str, data_dir=None) -> dict[str, Path] | None:
    """The four files of ``name`` from the first folder holding all of them, or None.

    Raises :class:`DataNotFoundError` when ``data_dir`` is given and holds
    some, but not all, of the files: an incomplete copy is a mistake to
    report, not a reason to silently use data from elsewhere.
    """
    for i, folder in enumerate(candidate_dirs(name, data_dir)):
        found = {role: file_in(folder, fn) for role, fn in IDX_FILES.items()}
        if all(found.values()):
            return found
        if i == 0 and data_dir is not None and any(found.values()):
            missing = [IDX_FILES[r] for r, p in found.items() if p is None]
            raise DataNotFoundError(
                f"{folder} holds only part of the {name} files; missing: {', '.join(missing)}"
            )
    return None


def not_found_message(name: str, data_dir=None) -> str:
    """Where ``name`` was looked for, and how to get it, for when downloading is off."""
    looked = "; ".join(str(d) for d in candidate_dirs(name, data_dir))
    source = SOURCES.get(name)
    origin = f" from {source.mirrors[0]}" if source is not None and source.mirrors else ""
    return (f"the {name} data files were not found (looked in: {looked}) and downloading is "
            f"switched off; drop --no-download to download them{origin}, or put the four files "
            f"{', '.join(IDX_FILES.values())} in a folder and pass --data-dir FOLDER")


def download_file(url: str, dest, *, sha256: str | None = None, md5: str | None = None,
                  progress: bool = True, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` atomically, verifying the checksum(s) given.

    The file appears at ``dest`` only complete and verified; on any failure
    ``dest`` is left as it was and :class:`DownloadError` is raised.
    """
    from tqdm.auto import tqdm

    dest = Path(dest)

    def write(f):
        digests = {"sha256": hashlib.sha256(), "md5": hashlib.md5()}
        with urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                      desc=dest.name, disable=not progress, leave=False) as bar:
                while chunk := response.read(1 << 16):
                    f.write(chunk)
                    for d in digests.values():
                        d.update(chunk)
                    bar.update(len(chunk))
        for kind, expected in (("sha256", sha256), ("md5", md5)):
            got = digests[kind].hexdigest()
            if expected is not None and got != expected.lower():
                raise DownloadError(
                    f"{url}: {kind} checksum mismatch (got {got}, expected {expected}); "
                    f"the download is corrupt or the mirror serves other data"
                )

    try:
        return atomic_write(dest, write)
    except DownloadError:
        raise
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"{url}: download failed (HTTP {exc.code} {exc.reason})") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise DownloadError(f"{url}: download failed ({reason})") from exc


def fetch(name: str, dest_dir, *, progress: bool = True, timeout: float = 60.0,
          source: Source | None = None) -> dict[str, Path]:
    """Download whichever of the four files of ``name`` are missing from ``dest_dir``.

    Each file is tried on every mirror in turn. Returns the four paths.
    Raises :class:`DownloadError` (a ``FileNotFoundError``) when a file could
    not be downloaded and verified from any mirror; the message lists why.
    """
    source = source or SOURCES.get(name)
    if source is None:
        raise ValueError(f"no download source known for dataset {name!r}")
    dest_dir = Path(dest_dir).expanduser()
    paths = {}
    for role, filename in IDX_FILES.items():
        existing = file_in(dest_dir, filename)
        if existing is not None:
            paths[role] = existing
            continue
        errors = []
        for mirror in source.mirrors:
            try:
                paths[role] = download_file(
                    mirror + filename, dest_dir / filename, sha256=source.sha256.get(filename),
                    md5=source.md5.get(filename), progress=progress, timeout=timeout)
                break
            except DownloadError as exc:
                errors.append(str(exc))
        else:
            raise DownloadError(
                f"could not download {filename} for {name}: {' | '.join(errors)}; "
                f"put the four files in a folder and pass --data-dir FOLDER instead"
            )
    return paths
