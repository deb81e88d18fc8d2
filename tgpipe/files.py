"""Writing output files so that a failed run never leaves half of one behind."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from tgpipe.errors import InputError

__all__ = ["atomic_write"]


def atomic_write(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write `data` to `path` through a temporary file in the same folder, then rename.

    A reader sees either the old file or the whole new one. An unwritable place raises
    InputError with one line.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    mode = "wb" if isinstance(data, bytes) else "w"
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror}; choose a writable path") from None
    try:
        with os.fdopen(fd, mode) as fh:
            fh.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise InputError(f"cannot write {path}: {exc.strerror}; choose a writable path") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
