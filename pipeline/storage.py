"""The object store: one small interface, a local folder and S3.

Keys are ``/``-separated relative paths (``datasets/flights/batches/2013-03/v1/
features.parquet``); :mod:`pipeline.layout` decides them. Both stores give the
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
import logging
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import pandas as pd

    from pipeline.config import PipelineConfig, StorageConfig

__all__ = [
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
    "get_frame",
    "get_json",
    "join_key",
    "put_frame",
    "put_json",
    "upload_tree",
]

log = logging.getLogger(__name__)

# S3 object metadata (x-amz-meta-cosine-retrain-write) naming the write that created an
# object: a retried conditional PUT recognises its own object by it
WRITE_TOKEN = "cosine-retrain-write"

_COMPONENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.=+@-]*$")
# a batch, run or snapshot id a user gives (also the DAG params' JSON-schema pattern)
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.=-]{0,99}$"
_ID = re.compile(ID_PATTERN)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class StorageError(Exception):
    """The store could not do what was asked; the message names the key or setting to fix."""


class ObjectNotFound(StorageError, KeyError):
    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class ObjectExists(StorageError):
    """The key already holds an object and the write did not ask to overwrite it."""


class InvalidKey(StorageError, ValueError):
    """A key (or an id that becomes part of one) could escape or confuse the store."""


# ------------------------------------------------------------------------------ keys


def _why_bad(part: str) -> str | None:
    if part == "":
        return "is empty (doubled or trailing '/')"
    if part in (".", ".."):
        return f"{part!r} would leave the store's folder"
    if "\\" in part:
        return "contains a backslash"
    if _CONTROL.search(part):
        return "contains a control character"
    if part.startswith("."):
        return "starts with '.' (reserved for temporary files)"
    if not _COMPONENT.match(part):
        return "may use only letters, digits and _ . = + @ -"
    return None


def check_key(key: str) -> str:
    """Return ``key`` if it is a safe relative key, else raise :class:`InvalidKey`."""
    if not isinstance(key, str) or not key:
        raise InvalidKey(f"object key must be a non-empty string, got {key!r}")
    if key.startswith("/"):
        raise InvalidKey(f"object key {key!r} is absolute; keys are relative to the store")
    for part in key.split("/"):
        why = _why_bad(part)
        if why:
            raise InvalidKey(f"object key {key!r}: component {part!r} {why}")
    return key


def check_id(value: str, what: str) -> str:
    """A user-supplied id that becomes one key component (dataset, batch id, snapshot...)."""
    if not isinstance(value, str) or not value:
        raise InvalidKey(f"{what} must be a non-empty string, got {value!r}")
    if "/" in value or "\\" in value or ".." in value:
        raise InvalidKey(
            f"{what} {value!r} may not contain '/', '\\' or '..' (it names one folder of the store)"
        )
    if _CONTROL.search(value):
        raise InvalidKey(f"{what} {value!r} contains a control character")
    if not _ID.match(value):
        raise InvalidKey(
            f"{what} {value!r} must start with a letter or digit and use only letters, digits, "
            "'-', '_', '.' and '=' (at most 100 characters), e.g. 2013-03"
        )
    return value


def join_key(*parts: str) -> str:
    return check_key("/".join(p.strip("/") for p in parts if p))


# ------------------------------------------------------------------------------ protocol


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


# ------------------------------------------------------------------------------ local


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

    def _commit(self, tmp: Path, path: Path, key: str, overwrite: bool) -> None:
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                # link() refuses an existing name atomically: two writers cannot both win
                os.link(tmp, path)
            except FileExistsError:
                raise self._exists(key) from None
            except OSError:  # a filesystem without hard links: check, then rename
                if path.exists():
                    raise self._exists(key) from None
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
        _fsync_dir(path.parent)

    def _write(self, key: str, fill: Any, overwrite: bool) -> None:
        path = self._path(key)
        if not overwrite and path.exists():
            raise self._exists(key)
        if path.is_dir():
            raise StorageError(f"{key} is a folder in {self.description}, not an object")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb") as fh:
                fill(fh)
                fh.flush()
                os.fsync(fh.fileno())
            self._commit(tmp, path, key, overwrite)
        finally:
            tmp.unlink(missing_ok=True)

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
        _atomic_local_copy(src, Path(dest))
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


def _fsync_dir(folder: Path) -> None:
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


def _atomic_local_copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as fh:
            shutil.copyfileobj(fh, out, 1024 * 1024)
        os.replace(name, dest)
    finally:
        Path(name).unlink(missing_ok=True)


# ------------------------------------------------------------------------------ S3


class S3Store:
    """A bucket (and key prefix) on S3 or an S3-compatible server (MinIO), through boto3.

    Objects below ``multipart_threshold`` bytes go up in one conditional
    ``PutObject``; larger files in parts of ``multipart_chunk`` bytes, visible only
    once ``CompleteMultipartUpload`` succeeds (an aborted upload leaves nothing).
    Retries follow botocore's ``standard`` or ``adaptive`` mode.
    """

    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str = "",
        *,
        multipart_threshold: int = 64 * 1024 * 1024,
        multipart_chunk: int = 16 * 1024 * 1024,
        endpoint_url: str | None = None,
    ) -> None:
        if multipart_chunk < 5 * 1024 * 1024:
            raise StorageError("S3 parts must be at least 5 MiB (storage.multipart_chunk_mb)")
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if self.prefix:
            check_key(self.prefix)
        self.multipart_threshold = multipart_threshold
        self.multipart_chunk = multipart_chunk
        self.endpoint_url = endpoint_url

    @classmethod
    def from_config(cls, storage: StorageConfig) -> S3Store:
        import boto3
        from botocore.config import Config

        style = storage.addressing_style
        if style == "auto":
            style = "path" if storage.endpoint_url else "virtual"
        session = boto3.session.Session(
            profile_name=storage.profile,
            aws_access_key_id=_secret(storage.access_key_id),
            aws_secret_access_key=_secret(storage.secret_access_key),
            region_name=storage.region,
        )
        client = session.client(
            "s3",
            endpoint_url=storage.endpoint_url,
            config=Config(
                retries={"mode": storage.retries_mode, "total_max_attempts": storage.max_attempts},
                s3={"addressing_style": style},
                connect_timeout=storage.connect_timeout_s,
                read_timeout=storage.read_timeout_s,
            ),
        )
        assert storage.bucket is not None  # the config's validator guarantees it
        return cls(
            client,
            storage.bucket,
            storage.prefix,
            multipart_threshold=storage.multipart_threshold_mb * 1024 * 1024,
            multipart_chunk=storage.multipart_chunk_mb * 1024 * 1024,
            endpoint_url=storage.endpoint_url,
        )

    @property
    def description(self) -> str:
        where = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        return f"S3 store {where}{_at(self.endpoint_url)}"

    def _exists(self, key: str) -> ObjectExists:
        return ObjectExists(f"{key} already exists in {self.description}; refusing to overwrite it")

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def _error(self, exc: Exception, key: str, action: str) -> StorageError:
        from botocore.exceptions import (
            ClientError,
            EndpointConnectionError,
            NoCredentialsError,
            PartialCredentialsError,
        )

        uri = self.uri(key) if key else f"s3://{self.bucket}/{self.prefix}"
        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            return StorageError(
                f"no AWS credentials for {uri}: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                "an AWS profile, or storage.access_key_id/secret_access_key"
            )
        if isinstance(exc, EndpointConnectionError):
            return StorageError(
                f"cannot reach the S3 endpoint for {uri} ({exc}); is it running? "
                "Check storage.endpoint_url"
            )
        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code == "NoSuchBucket":
                return StorageError(
                    f"bucket {self.bucket!r} does not exist{_at(self.endpoint_url)}: "
                    "create it or fix storage.bucket"
                )
            if code in ("NoSuchKey", "404", "NotFound"):
                return ObjectNotFound(f"{key} does not exist in {self.description}")
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                return self._exists(key)
            if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
                return StorageError(
                    f"access denied to {uri} ({code}): check the credentials and the bucket policy"
                )
            return StorageError(
                f"S3 {action} of {uri} failed{_at(self.endpoint_url)}: {code or exc} ({exc})"
            )
        return StorageError(f"S3 {action} of {uri} failed{_at(self.endpoint_url)}: {exc}")

    def _call(self, action: str, key: str, fn: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(**kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, key, action) from None

    def exists(self, key: str) -> bool:
        try:
            self._call("head", key, self.client.head_object, Bucket=self.bucket, Key=self._key(key))
        except ObjectNotFound:
            return False
        return True

    def _refuse_existing(self, key: str, overwrite: bool) -> None:
        # a cheap early answer; the conditional write below is what makes it race-free
        if not overwrite and self.exists(key):
            raise self._exists(key)

    def put_bytes(self, key: str, data: bytes, *, overwrite: bool = False) -> None:
        if len(data) >= self.multipart_threshold:
            self._multipart(key, io.BytesIO(data), overwrite)
            return
        self._refuse_existing(key, overwrite)
        extra = {} if overwrite else {"IfNoneMatch": "*"}
        token = uuid.uuid4().hex
        try:
            self._call(
                "upload",
                key,
                self.client.put_object,
                Bucket=self.bucket,
                Key=self._key(key),
                Body=data,
                Metadata={WRITE_TOKEN: token},
                **extra,
            )
        except ObjectExists:
            # botocore retries a PUT whose answer was lost (a reset connection, a 5xx
            # after the write): the retry then meets our own object. Only the write
            # token tells ours apart: another writer's object may hold the same bytes
            # (two senders creating the same record), and then it is theirs.
            if not self._holds(key, token):
                raise
            log.info("%s: an earlier attempt of this write had already landed", key)

    def put_file(self, key: str, path: Path, *, overwrite: bool = False) -> None:
        size = Path(path).stat().st_size
        if size < self.multipart_threshold:
            self.put_bytes(key, Path(path).read_bytes(), overwrite=overwrite)
            return
        with open(path, "rb") as fh:
            self._multipart(key, fh, overwrite)

    def _multipart(self, key: str, fh: Any, overwrite: bool) -> None:
        self._refuse_existing(key, overwrite)
        full = self._key(key)
        token = uuid.uuid4().hex
        upload = self._call(
            "upload",
            key,
            self.client.create_multipart_upload,
            Bucket=self.bucket,
            Key=full,
            Metadata={WRITE_TOKEN: token},
        )
        upload_id = upload["UploadId"]
        try:
            parts = []
            for number, chunk in enumerate(_chunks(fh, self.multipart_chunk), start=1):
                done = self._call(
                    "upload",
                    key,
                    self.client.upload_part,
                    Bucket=self.bucket,
                    Key=full,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=chunk,
                )
                parts.append({"ETag": done["ETag"], "PartNumber": number})
            extra = {} if overwrite else {"IfNoneMatch": "*"}
            try:
                self._call(
                    "upload",
                    key,
                    self.client.complete_multipart_upload,
                    Bucket=self.bucket,
                    Key=full,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                    **extra,
                )
            except StorageError:
                # a retried Complete whose first answer was lost finds the upload gone
                # (NoSuchUpload) or, conditional, the object there: ours if it carries
                # this upload's write token
                if not self._holds(key, token):
                    raise
                log.info("%s: an earlier attempt of this upload had already completed", key)
        except BaseException:
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload_id)
            except Exception:  # the original error matters more than a failed cleanup
                log.warning("could not abort multipart upload %s of %s", upload_id, full)
            raise

    def _holds(self, key: str, token: str) -> bool:
        """Whether ``key`` holds the object this write created (its write token)."""
        try:
            head = self._call(
                "head", key, self.client.head_object, Bucket=self.bucket, Key=self._key(key)
            )
        except ObjectNotFound:
            return False
        return bool(head.get("Metadata", {}).get(WRITE_TOKEN) == token)

    def get_bytes(self, key: str) -> bytes:
        out = self._call(
            "download", key, self.client.get_object, Bucket=self.bucket, Key=self._key(key)
        )
        return out["Body"].read()

    def get_file(self, key: str, dest: Path) -> Path:
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                self._call(
                    "download",
                    key,
                    self.client.download_fileobj,
                    Bucket=self.bucket,
                    Key=self._key(key),
                    Fileobj=fh,
                )
            os.replace(name, dest)
        finally:
            Path(name).unlink(missing_ok=True)
        return dest

    def list(self, prefix: str = "") -> list[str]:
        base = self._key(prefix) + "/" if prefix else (self.prefix + "/" if self.prefix else "")
        strip = len(self.prefix) + 1 if self.prefix else 0
        paginator = self.client.get_paginator("list_objects_v2")
        keys: list[str] = []

        def pages() -> Iterator[dict[str, Any]]:
            yield from paginator.paginate(Bucket=self.bucket, Prefix=base)

        for page in self._call("list", prefix, lambda: list(pages())):
            keys += [obj["Key"][strip:] for obj in page.get("Contents", [])]
        return sorted(keys)

    def delete(self, key: str) -> None:
        self._call("delete", key, self.client.delete_object, Bucket=self.bucket, Key=self._key(key))


def _at(endpoint: str | None) -> str:
    return f" at {endpoint}" if endpoint else ""


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None


def _chunks(fh: Any, size: int) -> Iterator[bytes]:
    while True:
        chunk = fh.read(size)
        if not chunk:
            return
        yield chunk


# ------------------------------------------------------------------------------ helpers


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
