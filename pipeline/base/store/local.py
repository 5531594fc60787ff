"""The local store: a folder on disk (the default, ``./.cosine-retrain/store``).

Writes go through :func:`training.checkpoint.atomic.atomic_writer` (a temporary file in the
same folder, fsync, a hard link that refuses an existing name or a rename, then
the folder is fsynced): a reader sees an object whole or not at all, and of two
writers racing for one key exactly one wins.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from pipeline.base.store.keys import ObjectExists, ObjectNotFound, StorageError, check_key
from training.api import atomic_copy, atomic_writer

__all__ = ["LocalStore"]


class LocalStore:
    """A folder on disk (the default: ``./.cosine-retrain/store``)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).absolute()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"cannot create the local store at {self.root}: {exc.strerror} "
                "(set storage.root or COSINE_RETRAIN_STORAGE__ROOT)"
            ) from None

    @property
    def description(self) -> str:
        return f"local store {self.root}"

    def _exists(self, key: str) -> ObjectExists:
        return ObjectExists(f"{key} already exists in {self.description}; refusing to overwrite it")

    def _path(self, key: str) -> Path:
        check_key(key)
        return self.root.joinpath(*key.split("/"))

    def uri(self, key: str) -> str:
        return self._path(key).as_uri()

    def _write(self, key: str, fill: Any, overwrite: bool) -> None:
        path = self._path(key)
        if not overwrite and path.exists():
            raise self._exists(key)
        if path.is_dir():
            raise StorageError(f"{key} is a folder in {self.description}, not an object")
        try:
            with atomic_writer(path, overwrite=overwrite) as fh:
                fill(fh)
        except FileExistsError:
            raise self._exists(key) from None

    def put_bytes(self, key: str, data: bytes, *, overwrite: bool = False) -> None:
        self._write(key, lambda fh: fh.write(data), overwrite)

    def put_file(self, key: str, path: Path, *, overwrite: bool = False) -> None:
        with open(path, "rb") as src:
            self._write(key, lambda fh: shutil.copyfileobj(src, fh, 1024 * 1024), overwrite)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(f"{key} does not exist in {self.description}") from None

    def get_file(self, key: str, dest: Path) -> Path:
        src = self._path(key)
        if not src.is_file():
            raise ObjectNotFound(f"{key} does not exist in {self.description}")
        atomic_copy(src, Path(dest))
        return Path(dest)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        base = self._path(prefix) if prefix else self.root
        if not base.is_dir():
            return []
        out = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel = Path(dirpath).relative_to(self.root)
            out += [(rel / f).as_posix() for f in filenames if not f.startswith(".")]
        return sorted(out)

    def delete(self, key: str) -> None:
        path = self._path(key)
        path.unlink(missing_ok=True)
        # prune empty folders up to the root so listings stay clean
        parent = path.parent
        while parent != self.root and parent.is_dir():
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent
