"""The S3 store: a bucket (and key prefix) on S3 or MinIO, through boto3.

Atomic like the local store: one conditional ``PutObject``, or a multipart
upload that becomes visible only at ``CompleteMultipartUpload``; a write that
must not overwrite is conditional (``If-None-Match: *``), so two writers racing
for one key cannot both win. Every botocore error becomes a
:class:`~pipeline.base.store.keys.StorageError` that names the key or the
setting to fix.
"""

from __future__ import annotations

import io
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.base.store.keys import ObjectExists, ObjectNotFound, StorageError, check_key
from training.api import atomic_writer

if TYPE_CHECKING:
    from pipeline.base.sections import StorageConfig

__all__ = ["WRITE_TOKEN", "S3Store"]

log = logging.getLogger(__name__)

# S3 object metadata (x-amz-meta-cosine-retrain-write) naming the write that created an
# object: a retried conditional PUT recognises its own object by it
WRITE_TOKEN = "cosine-retrain-write"


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

    def storage_error(self, exc: Exception, key: str, action: str) -> StorageError:
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
            raise self.storage_error(exc, key, action) from None

    def _on_object(self, action: str, key: str, fn: Any, **kwargs: Any) -> Any:
        """``fn`` on the object at ``key`` (its bucket and full key filled in)."""
        return self._call(action, key, fn, Bucket=self.bucket, Key=self._key(key), **kwargs)

    def exists(self, key: str) -> bool:
        try:
            self._on_object("head", key, self.client.head_object)
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
            self._on_object(
                "upload",
                key,
                self.client.put_object,
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
        upload = self._on_object(
            "upload",
            key,
            self.client.create_multipart_upload,
            Metadata={WRITE_TOKEN: token},
        )
        upload_id = upload["UploadId"]
        try:
            parts = []
            for number, chunk in enumerate(_chunks(fh, self.multipart_chunk), start=1):
                done = self._on_object(
                    "upload",
                    key,
                    self.client.upload_part,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=chunk,
                )
                parts.append({"ETag": done["ETag"], "PartNumber": number})
            extra = {} if overwrite else {"IfNoneMatch": "*"}
            try:
                self._on_object(
                    "upload",
                    key,
                    self.client.complete_multipart_upload,
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
            head = self._on_object("head", key, self.client.head_object)
        except ObjectNotFound:
            return False
        return bool(head.get("Metadata", {}).get(WRITE_TOKEN) == token)

    def get_bytes(self, key: str) -> bytes:
        out = self._on_object("download", key, self.client.get_object)
        return out["Body"].read()

    def get_file(self, key: str, dest: Path) -> Path:
        dest = Path(dest)
        with atomic_writer(dest) as fh:
            self._on_object("download", key, self.client.download_fileobj, Fileobj=fh)
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
        self._on_object("delete", key, self.client.delete_object)


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
