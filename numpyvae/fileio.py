"""Writing files atomically: a reader never sees a half-written file.

Every file the library writes goes through :func:`atomic_write`: the content
is written to a temporary file in the same folder, flushed to disk, then
renamed over the target in one step (``os.replace``).

A write that fails (a full disk, a folder without write permission) raises
an ``OSError`` naming the file the caller asked for, never the hidden
temporary file; a process killed mid-write leaves only such a temporary
file (``.<name>.<random>.tmp``) beside the target, which
:func:`stale_temp_files` finds so the owner of the folder can remove it.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path, write: Callable, mode: str = "wb") -> Path:
    """Call ``write(fileobj)`` on a temporary file, then move it to ``path``.

    The temporary file is removed if ``write`` raises, and ``path`` keeps its
    old content.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        permissions = _permissions_for(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    except OSError as exc:
        raise _naming(exc, path) from exc
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, permissions)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError) and exc.errno is not None:  # a system error
            raise _naming(exc, path) from exc
        raise
    return path


def _naming(exc: OSError, path: Path) -> OSError:
    """``exc`` again, but naming ``path`` (the file asked for) instead of a temporary file."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    return OSError(exc.errno, f"cannot write the file: {reason}", str(path))


TEMP_SUFFIX = ".tmp"


def stale_temp_files(path) -> list[Path]:
    """The temporary files that killed writes of ``path`` may have left beside it.

    Only call this where no other process can be writing ``path`` at the same
    time (a locked run folder): a write in progress has such a file too.
    """
    path = Path(path)
    return sorted(path.parent.glob(f".{glob_escape(path.name)}.*{TEMP_SUFFIX}"))


def glob_escape(name: str) -> str:
    """``name`` with the glob wildcards ``*?[`` made literal."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def _permissions_for(path: Path) -> int:
    """The permission bits a plain ``open(path, "w")`` would leave.

    ``mkstemp`` creates its file readable by the owner only; without this the
    replaced file would lose the old file's mode, and a new one would ignore
    the umask (0o644 for the usual umask 022).
    """
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        umask = os.umask(0)  # reading the umask means setting it; restore at once
        os.umask(umask)
        return 0o666 & ~umask


def atomic_write_text(path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_json(path, obj) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
