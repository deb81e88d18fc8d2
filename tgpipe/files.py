"""Writing output files so that a failed run never leaves half of one behind.

Everything tgpipe writes goes through a temporary file in the target's folder, renamed over
the target only when complete: a reader sees either the old file or the whole new one.
Commands check their output paths (`check_writable`) before any work, so that a long run
does not end in "cannot write", and write several outputs all or none (`atomic_write_all`).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

from tgpipe.errors import InputError

__all__ = ["atomic_open", "atomic_write", "atomic_write_all", "check_writable"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _folder(path: Path) -> Path:
    return path.parent if str(path.parent) else Path(".")


def _why_not(path: Path, exc: OSError | None = None) -> str:
    """One line on why `path` cannot be written, and what to do instead."""
    folder = _folder(path)
    if path.is_dir():
        return f"cannot write {path}: it is a folder; give a file name (e.g. {path / 'out'})"
    if not folder.exists():
        return f"cannot write {path}: no folder {folder}; create it or choose another path"
    if not folder.is_dir():
        return f"cannot write {path}: {folder} is not a folder; choose another path"
    reason = (exc.strerror or str(exc)) if exc else "not writable"
    return f"cannot write {path}: {reason}; choose a writable path"


def check_writable(path: str | os.PathLike) -> Path:
    """`path` if a file can be written there, else InputError with one line.

    Tries for real (a temporary file in the folder, removed at once): permissions, read-only
    mounts and quotas are not visible otherwise, and root ignores permission bits.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(_why_not(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=_folder(path))
    except OSError as exc:
        raise InputError(_why_not(path, exc)) from None
    os.close(fd)
    os.unlink(tmp)
    return path


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", suffix: str = ".tmp") -> Iterator[IO]:
    """A file to write `path` through: renamed into place when the block ends cleanly,
    removed if it raises. The file gets the usual permissions (0666 less the umask), not
    the temporary file's 0600. An unwritable place raises InputError with one line."""
    path = Path(path)
    if path.is_dir():
        raise InputError(_why_not(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=_folder(path))
    except OSError as exc:
        raise InputError(_why_not(path, exc)) from None
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise InputError(_why_not(path, exc)) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write all of `data` to `path` atomically (see `atomic_open`)."""
    with atomic_open(path, "wb" if isinstance(data, bytes) else "w") as fh:
        fh.write(data)
    return Path(path)


def atomic_write_all(outputs: Sequence[tuple[str | os.PathLike, str | bytes]]) -> list[Path]:
    """Write several files all or none: every one goes to its temporary file first, and
    the renames happen only once all are whole. (Renames in place do not fail short of a
    vanished folder, so in practice a failure leaves every target as it was.)"""
    with contextlib.ExitStack() as stack:
        for path, data in outputs:
            fh = stack.enter_context(atomic_open(path, "wb" if isinstance(data, bytes) else "w"))
            fh.write(data)
    return [Path(path) for path, _ in outputs]
