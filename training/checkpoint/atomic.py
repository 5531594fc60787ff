"""Atomic file writes: the one implementation every writer of the project uses.

A write goes to a temporary file in the target's folder (so the rename stays on
one filesystem), is flushed and fsynced, then moved into place and the folder is
fsynced: a reader sees the old file or the new one, never half of one, and a
crash after :func:`atomic_writer` returns cannot lose the rename.

``overwrite=False`` refuses an existing target atomically (a hard link, which
fails if the name exists: two writers racing for one name cannot both win; on a
filesystem without hard links, a check and a rename).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "atomic_copy",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_writer",
    "fsync_dir",
]

DEFAULT_MODE = 0o644  # mkstemp makes 0600 files: what a plain open() would give instead


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(
    path: str | os.PathLike[str],
    *,
    overwrite: bool = True,
    mode: int = DEFAULT_MODE,
    temp: str | os.PathLike[str] | None = None,
    before_commit: Callable[[], None] | None = None,
) -> Iterator[BinaryIO]:
    """Yield a binary file whose content becomes ``path`` atomically on a clean exit.

    ``temp``: the temporary name to use (default: a fresh ``.NAME.*.tmp`` beside the
    target); ``before_commit``: called after the data is durable, just before the
    rename (e.g. to move the current file to a backup name). ``overwrite=False``
    raises :class:`FileExistsError` if ``path`` exists; nothing is left behind
    when the body raises.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if temp is None:
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        tmp = Path(name)
        fh = os.fdopen(fd, "wb")
    else:
        tmp = Path(temp)
        fh = open(tmp, "wb")  # noqa: SIM115 (closed below, before the rename)
    try:
        with fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        if before_commit is not None:
            before_commit()
        _commit(tmp, target, overwrite)
        fsync_dir(target.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _commit(tmp: Path, target: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp, target)
        return
    try:
        os.link(tmp, target)  # refuses an existing name atomically
    except FileExistsError:
        raise
    except OSError:  # a filesystem without hard links: check, then rename
        if target.exists():
            raise FileExistsError(str(target)) from None
        os.replace(tmp, target)


def atomic_write_bytes(
    path: str | os.PathLike[str], data: bytes, *, overwrite: bool = True, mode: int = DEFAULT_MODE
) -> None:
    with atomic_writer(path, overwrite=overwrite, mode=mode) as fh:
        fh.write(data)


def atomic_write_text(
    path: str | os.PathLike[str], text: str, *, overwrite: bool = True, mode: int = DEFAULT_MODE
) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), overwrite=overwrite, mode=mode)


def atomic_copy(src: str | os.PathLike[str], dest: str | os.PathLike[str]) -> None:
    """Copy ``src`` to ``dest`` atomically (``dest`` is replaced if it exists)."""
    with open(src, "rb") as fh, atomic_writer(dest) as out:
        shutil.copyfileobj(fh, out, 1024 * 1024)
