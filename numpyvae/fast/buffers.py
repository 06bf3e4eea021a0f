"""Work buffers: arrays kept between calls so that a training step allocates nothing.

The fast path's helpers (the reference ops in :mod:`numpyvae.ops` return
new arrays and need none of this):

* :func:`out_or_empty` — the ``out=`` convention of the Numba backend's ops:
  write into the caller's array when one is given, else allocate a fresh one.
* :class:`WorkBuffers` — named arrays owned by one object (a kernel's
  temporaries, a training step's arrays), handed out again while the
  requested shape and dtype stay the same, and replaced when they change (a
  smaller last batch, a switch to float64).

An array handed out by :class:`WorkBuffers` is overwritten by the next call
that asks for the same name: whoever returns one to a user returns a copy.
"""

from __future__ import annotations

import threading

import numpy as np


def out_or_empty(out, shape, dtype) -> np.ndarray:
    """``out`` if the caller passed a buffer, else a new uninitialised array."""
    return np.empty(shape, dtype=dtype) if out is None else out


class WorkBuffers:
    """Named work arrays, reused while their shape and dtype match.

    >>> work = WorkBuffers()
    >>> a = work.get("y", (2, 3), np.float32)
    >>> work.get("y", (2, 3), np.float32) is a
    True
    >>> work.get("y", (4, 3), np.float32) is a   # another shape: a new array
    False
    """

    def __init__(self):
        self._arrays: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple, dtype) -> np.ndarray:
        """The array kept under ``name``, (re)allocated if its shape or dtype differ."""
        buf = self._arrays.get(name)
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            buf = self._arrays[name] = np.empty(shape, dtype=dtype)
        return buf

    def clear(self) -> None:
        """Forget every array (they are allocated again on the next request)."""
        self._arrays.clear()


class ThreadLocalBuffers:
    """:class:`WorkBuffers` with one set of arrays per thread (for code called from threads)."""

    def __init__(self):
        self._local = threading.local()

    def get(self, name: str, shape: tuple, dtype) -> np.ndarray:
        work = getattr(self._local, "work", None)
        if work is None:
            work = self._local.work = WorkBuffers()
        return work.get(name, shape, dtype)


__all__ = ["out_or_empty", "WorkBuffers", "ThreadLocalBuffers"]
