"""Ctrl-C and SIGTERM while the ``numpyvae`` command starts: never lost, never inside an import.

The command (:func:`numpyvae.app.cli.main`) turns the first signal into an
exception raised where the program is, so that a slow start-up (loading
data, compiling kernels) stops at once. Two places must not see it:

* **An import in progress.** A ``KeyboardInterrupt`` raised inside the
  import of a native library (Numba, its threading layer, a BLAS) leaves
  the library half-loaded; Numba then reported the interrupt as an
  ``ImportError``, the command fell back to the NumPy backend and went on,
  and the interpreter's shutdown was seen to abort. So when the signal
  lands inside an import, :func:`raise_when_safe` waits: a profile hook on
  the main thread raises the exception at the first function call or
  return after the last import frame has left the stack.
* **Code that swallows it.** Whatever the signal interrupted may catch the
  exception and carry on. The signal is also recorded here
  (:data:`pending`), and training (:class:`numpyvae.app.train.Trainer`) checks
  it before its first step and stops at once, as for a signal it received
  itself.
"""

from __future__ import annotations

import sys

#: Signals received by the command and not yet acted on, oldest first.
pending: list[int] = []

_IMPORT_FILES = ("<frozen importlib._bootstrap", "<frozen importlib._bootstrap_external")


def inside_import(frame) -> bool:
    """Whether ``frame`` (or any frame that called it) is Python's import machinery."""
    while frame is not None:
        if frame.f_code.co_filename.startswith(_IMPORT_FILES):
            return True
        frame = frame.f_back
    return False


def raise_when_safe(frame, exception: type[BaseException]) -> None:
    """Raise ``exception`` now, or, inside an import, as soon as the import is over.

    Called from a signal handler (on the main thread) with the frame it
    interrupted. While it waits, the profile hook replaces any other (a
    profiler's), which it puts back when it raises or is cancelled.
    """
    if not inside_import(frame):
        raise exception
    previous = sys.getprofile()

    def hook(current, event, arg):
        if not inside_import(current):
            sys.setprofile(previous)
            raise exception

    hook.previous = previous
    sys.setprofile(hook)


def cancel_raise() -> None:
    """Drop a raise that :func:`raise_when_safe` still has waiting (the command is returning)."""
    hook = sys.getprofile()
    if hook is not None and hasattr(hook, "previous"):
        sys.setprofile(hook.previous)


def take_pending() -> int | None:
    """The oldest pending signal, or None; clears the record."""
    signum = pending[0] if pending else None
    pending.clear()
    return signum
