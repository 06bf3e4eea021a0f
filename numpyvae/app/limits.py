"""How much memory the library lets one file or one model claim, checked before allocating.

A size written in a file (an IDX header, an ``.npy`` header, a model's
layer widths) or typed on the command line (``--hidden 100000000``) decides
how much memory would be allocated. Those sizes are checked here, against
the machine's physical memory, *before* anything is allocated, so an
impossible size ends in an error naming the size instead of a
``MemoryError`` traceback, or a machine swapping for minutes.

The budget is the physical memory (``os.sysconf``); the environment
variable ``NUMPYVAE_MAX_MEMORY`` (bytes, or with a suffix K, M, G) lowers or
raises it, e.g. for a test.

What does not live here: the readers themselves (:mod:`numpyvae.app.safenpz`,
:mod:`numpyvae.app.data.idx`) and the model (:mod:`numpyvae.model`), which call
:func:`excess`, :func:`unaddressable` or :func:`check_size` with their own
sizes.
"""

from __future__ import annotations

import math
import os
import sys

MEMORY_ENV = "NUMPYVAE_MAX_MEMORY"
_SUFFIXES = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_FALLBACK = 16 * 2**30  # when the platform does not say (no os.sysconf)


class SizeLimitError(ValueError):
    """A size (of a model, of an array in a file) needs more memory than the machine has."""


def memory_budget() -> int:
    """The most bytes one model or one file's content may claim."""
    value = os.environ.get(MEMORY_ENV, "").strip().upper().removesuffix("B")
    if value:
        number, suffix = (value[:-1], value[-1]) if value[-1] in _SUFFIXES else (value, "")
        try:
            budget = int(float(number) * _SUFFIXES[suffix])
        except ValueError:
            raise SizeLimitError(f"${MEMORY_ENV}={os.environ[MEMORY_ENV]!r}: expected a number "
                                 f"of bytes such as 4G or 500M") from None
        if budget > 0:
            return budget
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return _FALLBACK


def human(nbytes: int) -> str:
    """``nbytes`` for people: ``"3.2 GB"``, ``"745 TB"``, ``"1.0e+21 bytes"``."""
    for unit, size in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if nbytes >= size:
            if nbytes >= 10**6 * size:
                return f"{float(nbytes):.1e} bytes"
            return f"{nbytes / size:.1f} {unit}"
    return f"{nbytes} bytes"


def excess(nbytes: int) -> str | None:
    """None if ``nbytes`` fits the budget; otherwise the reason, for an error message."""
    budget = memory_budget()
    if nbytes <= budget:
        return None
    return (f"{human(nbytes)}, more than the {human(budget)} of memory allowed "
            f"(the machine's memory, or ${MEMORY_ENV})")


def unaddressable(shape, itemsize: int) -> str | None:
    """None if NumPy can make an array of ``shape``; otherwise the reason.

    An array with a zero in its shape holds nothing, yet NumPy refuses one
    whose other sizes multiply (times ``itemsize``) past the largest index,
    ``(0, 2**40, 2**40)`` for instance: a header announcing such a shape is
    refused like one announcing too many bytes.
    """
    span = math.prod(size for size in shape if size) * itemsize
    if span <= sys.maxsize:
        return None
    return (f"sizes that multiply to {human(span)}, more than an array can index "
            f"({human(sys.maxsize)})")


def check_size(nbytes: int, what: str) -> None:
    """Raise :class:`SizeLimitError` if ``what`` would need more than the budget."""
    reason = excess(nbytes)
    if reason is not None:
        raise SizeLimitError(f"{what} would need {reason}; choose smaller sizes")


def check_parameters(count: int, itemsize: int, what: str) -> None:
    """Refuse ``what`` if its ``count`` parameters and their gradients exceed the budget.

    Called by the model and layer constructors with the sizes they were
    given, before they allocate anything.
    """
    check_size(2 * int(count) * int(itemsize),
               f"{what}: {int(count):,} parameters (weights and gradients)")


def mlp_parameters(sizes) -> int:
    """The number of weights and biases of fully connected layers of these widths."""
    sizes = [int(n) for n in sizes]
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
