"""Loading the TBB library that pip installed, so Numba's TBB threading layer can start.

The ``tbb`` wheel (a dependency where its wheels exist) puts ``libtbb.so.12``
in the environment's ``lib/`` folder, which is on no loader path: Numba's
``tbbpool`` extension, which links against it by name and has no RPATH, then
fails to load, and Numba falls back to OpenMP without a word (in a fresh
``python -m venv`` it does, as in every environment but conda's).
:func:`load_tbb` finds the library among the files the ``tbb`` distribution
installed and loads it once, globally, before Numba looks for it; the dynamic
loader then resolves ``tbbpool``'s dependency to the library already loaded.

Why TBB and not OpenMP: its idle threads sleep instead of spinning, which is
what a training step on a busy machine needs (measured by
``benchmarks/bench_peers.py``, its threading-layer table).
"""

from __future__ import annotations

import ctypes
import sys
from importlib import metadata
from pathlib import Path

#: The file name of the library Numba's ``tbbpool`` links against, by platform.
LIBRARY_NAMES = {"linux": "libtbb.so.12", "darwin": "libtbb.12.dylib", "win32": "tbb12.dll"}

_loaded: str | None = None


def installed_tbb_library() -> Path | None:
    """The TBB library installed by the ``tbb`` distribution, or None if there is none."""
    name = LIBRARY_NAMES.get(sys.platform)
    if name is None:
        return None
    try:
        files = metadata.files("tbb") or []
    except metadata.PackageNotFoundError:
        return None
    for file in files:
        if Path(str(file)).name == name:
            path = Path(file.locate()).resolve()
            if path.is_file():
                return path
    return None


def load_tbb() -> str | None:
    """Load the installed TBB library once, globally; return its path, or None if absent.

    A library that fails to load (a broken install) is left alone: Numba then
    chooses its next threading layer, as it would have without this.
    """
    global _loaded
    if _loaded is None:
        path = installed_tbb_library()
        if path is not None:
            try:
                ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
            except OSError:
                return None
            _loaded = str(path)
    return _loaded


__all__ = ["LIBRARY_NAMES", "installed_tbb_library", "load_tbb"]
