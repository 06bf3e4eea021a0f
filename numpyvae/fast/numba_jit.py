"""How every Numba kernel of the backend is compiled: the options, and the one call that jits.

Each kernel module (:mod:`.numba_math`, :mod:`.numba_blas`,
:mod:`.numba_kernels`, :mod:`.numba_step`) defines its kernels as plain
Python functions and, at its bottom, hands a table of their names to
:func:`jit_kernels`. With ``NUMBA_DISABLE_JIT=1`` Numba's ``njit`` returns the
function unchanged, so the same code runs as plain Python and can be stepped
through in a debugger (slowly).

* ``cache=True`` keeps the compiled machine code on disk (in ``__pycache__``
  next to the module), so a second run loads instead of compiling. Numba
  stamps a kernel's cache with the contents of the one file that defines
  it, but a kernel holds the compiled code of every helper it calls, from
  other modules too (:mod:`.numba_math`'s exp, :mod:`.numba_blas`'s gemm):
  edit a helper, and the kernels that call it would load their old code.
  So every kernel here is stamped with the contents of *all* the kernel
  modules as well (``numba_*.py``, :func:`jit_kernel`): change any of them
  and every kernel compiles again, once (``tests/test_kernel_cache.py``).
  The Python around the kernels (the one-call step's dispatch, threads,
  warm-up) compiles nothing, so editing it leaves the cache alone.
* ``error_model="numpy"`` makes ``x / 0`` give inf or nan, as NumPy does,
  instead of raising; the check for it would also stop loops from vectorising.
* No ``fastmath``: exp and log stay exact to the last bit or two. The
  exceptions are named where they are made (:func:`.numba_math.reassoc_add`,
  and ``contract`` for the polynomials of :mod:`.numba_math`: exp, expm1 and
  log1p).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numba

SERIAL = {"cache": True, "nogil": True, "error_model": "numpy"}
PARALLEL = {**SERIAL, "parallel": True}


def jit_kernels(namespace: dict, kernels: dict) -> None:
    """Replace each function named in ``kernels`` by its jitted form, in ``namespace``.

    ``kernels`` maps a name to whether the kernel runs its ``prange`` loops
    on several threads (``parallel=True``) or serially.
    """
    for name, parallel in kernels.items():
        namespace[name] = jit_kernel(namespace[name], **(PARALLEL if parallel else SERIAL))


def jit_kernel(function, **options):
    """``numba.njit(**options)(function)``, its disk cache stamped with every kernel module.

    The stamp Numba keeps in a cache's index becomes the pair (its own
    stamp of the defining file, :func:`sources_stamp`); a cache whose stamp
    differs is not loaded. Without the JIT (``NUMBA_DISABLE_JIT=1``), or
    if Numba ever keeps its cache differently, there is nothing to stamp
    and Numba's own check stands.
    """
    kernel = numba.njit(**options)(function)
    cache_file = getattr(getattr(kernel, "_cache", None), "_cache_file", None)
    if cache_file is not None and hasattr(cache_file, "_source_stamp"):
        cache_file._source_stamp = (cache_file._source_stamp, sources_stamp())
    return kernel


_SOURCES_STAMP = None


def sources_stamp() -> str:
    """A SHA-256 of every kernel module of the backend (names and contents), computed once."""
    global _SOURCES_STAMP
    if _SOURCES_STAMP is None:
        digest = hashlib.sha256()
        for path in sorted(Path(__file__).resolve().parent.glob("numba_*.py")):
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
        _SOURCES_STAMP = digest.hexdigest()
    return _SOURCES_STAMP
