"""File names shown to a person: names that are not UTF-8 stay visible, byte for byte.

Used wherever a data file's or a class folder's name is printed or recorded
as text (:mod:`.local`, :mod:`.imagefolder`); the path itself is kept as the
file system gave it, to open the file again.
"""

from __future__ import annotations


def shown(name) -> str:
    """A file name as printable text: bytes that are not UTF-8 become ``\\xNN`` escapes.

    Python holds such bytes of a name as lone surrogates (``'\\udce9'``), which
    cannot be printed or written as UTF-8. The escapes keep every byte visible
    (and tell names apart); the path itself is kept as it is wherever it is
    used to open the file again.
    """
    text = str(name)
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that no file name decodes to
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


__all__ = ["shown"]
