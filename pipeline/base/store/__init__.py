"""The object store: one small interface, a local folder and S3.

Keys are ``/``-separated relative paths (``datasets/flights/batches/2013-03/v1/
features.parquet``); :mod:`pipeline.base.layout` decides them. Both stores give the
same guarantees:

- **Atomic writes.** A reader sees an object whole or not at all. Local: a
  temporary file in the same folder, fsync, then a hard link (refusing an
  existing name) or a rename. S3: one ``PutObject``, or a multipart upload
  that becomes visible only at ``CompleteMultipartUpload``.
- **No silent overwrite.** ``put_*`` refuses an existing key with
  :class:`ObjectExists` unless ``overwrite=True`` is passed. On S3 the refusal
  is a conditional write (``If-None-Match: *``), so two writers racing for the
  same key cannot both win.
- **Keys never escape the store.** Every key is checked: no empty, ``.`` or
  ``..`` component, no leading ``/``, no backslash or control character.

The store is built once at the edge (:func:`build_store`) and passed in.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pipeline.base.store.keys import (
    ID_PATTERN,
    InvalidKey,
    ObjectExists,
    ObjectNotFound,
    StorageError,
    check_id,
    check_key,
    join_key,
)
from pipeline.base.store.local import LocalStore
from pipeline.base.store.s3 import S3Store

if TYPE_CHECKING:
    import pandas as pd

    from pipeline.base.config import PipelineConfig

__all__ = [
    "ID_PATTERN",
    "InvalidKey",
    "LocalStore",
    "ObjectExists",
    "ObjectNotFound",
    "ObjectStore",
    "S3Store",
    "StorageError",
    "build_store",
    "check_id",
    "check_key",
    "copy_object",
    "frame_to_parquet",
    "get_frame",
    "get_json",
    "join_key",
    "put_frame",
    "put_json",
    "upload_tree",
]


@runtime_checkable
class ObjectStore(Protocol):
    """What every step needs from a store; see the module docstring for the guarantees."""

    def put_bytes(self, key: str, data: bytes, *, overwrite: bool = False) -> None: ...

    def put_file(self, key: str, path: Path, *, overwrite: bool = False) -> None: ...

    def get_bytes(self, key: str) -> bytes: ...

    def get_file(self, key: str, dest: Path) -> Path: ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str = "") -> list[str]:
        """Sorted keys under ``prefix`` (a folder-like key, '' for all), recursively."""
        ...

    def delete(self, key: str) -> None:
        """Remove ``key``; a missing key is not an error (deletes are idempotent)."""
        ...

    def uri(self, key: str) -> str: ...

    @property
    def description(self) -> str: ...


def build_store(config: PipelineConfig) -> ObjectStore:
    """The store the configuration names (called once, at the edge)."""
    if config.storage.kind == "s3":
        return S3Store.from_config(config.storage)
    return LocalStore(config.store_root)


def copy_object(store: ObjectStore, src: str, dst: str, *, overwrite: bool = False) -> None:
    """Copy one object inside a store (through memory: batches are small enough)."""
    store.put_bytes(dst, store.get_bytes(src), overwrite=overwrite)


def put_json(store: ObjectStore, key: str, value: Any, *, overwrite: bool = False) -> None:
    data = json.dumps(value, indent=2, sort_keys=True, default=str).encode()
    store.put_bytes(key, data, overwrite=overwrite)


def get_json(store: ObjectStore, key: str) -> Any:
    return json.loads(store.get_bytes(key))


def frame_to_parquet(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


def put_frame(store: ObjectStore, key: str, frame: pd.DataFrame, *, overwrite: bool = False) -> int:
    """Write ``frame`` as Parquet; returns the size in bytes."""
    data = frame_to_parquet(frame)
    store.put_bytes(key, data, overwrite=overwrite)
    return len(data)


def get_frame(store: ObjectStore, key: str) -> pd.DataFrame:
    import pandas as pd

    return pd.read_parquet(io.BytesIO(store.get_bytes(key)))


def upload_tree(
    store: ObjectStore,
    folder: Path,
    prefix: str,
    *,
    overwrite: bool = False,
    skip: tuple[str, ...] = (),
) -> list[str]:
    """Upload every file under ``folder`` to ``prefix/<relative path>``; returns the keys."""
    keys = []
    for path in sorted(Path(folder).rglob("*")):
        if not path.is_file() or any(path.match(pattern) for pattern in skip):
            continue
        key = join_key(prefix, path.relative_to(folder).as_posix())
        store.put_file(key, path, overwrite=overwrite)
        keys.append(key)
    return keys
