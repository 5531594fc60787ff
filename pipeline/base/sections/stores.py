"""Where things are kept: the object store and MLflow."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from pipeline.base.sections.common import Section

__all__ = ["MlflowConfig", "StorageConfig"]


class StorageConfig(Section):
    """Where batches, reports and snapshots live: a local folder or an S3 bucket."""

    kind: Literal["local", "s3"] = Field("local", description="local folder or S3 (boto3)")
    root: Path | None = Field(None, description="local store folder (default: <home>/store)")
    bucket: str | None = Field(
        None,
        pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
        description="S3 bucket (required for kind s3)",
    )
    prefix: str = Field(
        "cosine-retrain",
        pattern=r"^$|^[A-Za-z0-9_][A-Za-z0-9_.=-]*(/[A-Za-z0-9_][A-Za-z0-9_.=-]*)*$",
        description="key prefix inside the bucket ('' for none)",
    )
    endpoint_url: str | None = Field(
        None,
        pattern=r"^https?://",
        description="S3-compatible endpoint (MinIO), e.g. http://minio:9000",
    )
    region: str | None = Field(None, description="default: the AWS chain (AWS_DEFAULT_REGION...)")
    profile: str | None = Field(None, description="AWS profile from ~/.aws; default: the chain")
    access_key_id: SecretStr | None = Field(None, description="default: the standard AWS chain")
    secret_access_key: SecretStr | None = Field(None, description="with access_key_id")
    addressing_style: Literal["auto", "path", "virtual"] = Field(
        "auto", description="auto = path style when endpoint_url is set (MinIO), else virtual"
    )
    retries_mode: Literal["standard", "adaptive", "legacy"] = Field(
        "standard", description="botocore retry mode (adaptive adds client-side rate limiting)"
    )
    max_attempts: int = Field(
        5, ge=1, le=20, description="attempts per request, the first included (botocore)"
    )
    connect_timeout_s: float = Field(10.0, gt=0.0, description="seconds")
    read_timeout_s: float = Field(60.0, gt=0.0, description="seconds")
    multipart_threshold_mb: int = Field(
        64, ge=5, le=5 * 1024, description="files at least this large upload in parts"
    )
    multipart_chunk_mb: int = Field(16, ge=5, le=5 * 1024, description="part size (S3 minimum 5)")

    @model_validator(mode="after")
    def _s3_needs_bucket(self) -> StorageConfig:
        if self.kind == "s3" and not self.bucket:
            raise ValueError("storage.bucket is required when storage.kind is 's3'")
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError(
                "storage.access_key_id and storage.secret_access_key go together "
                "(or leave both unset to use the standard AWS credential chain)"
            )
        return self


class MlflowConfig(Section):
    """Where runs and the model registry live (docs/design.md: local SQLite by default)."""

    tracking_uri: str | None = Field(
        None, description="default: $MLFLOW_TRACKING_URI, else sqlite:///<home>/mlflow.db"
    )
    experiment: str | None = Field(None, description="default: the spec's model name")
    model_name: str | None = Field(
        None,
        pattern=r"^[A-Za-z][A-Za-z0-9_.-]*$",
        description="registered model; default: the spec's model_name (flight_delay)",
    )
    artifact_location: str | None = Field(
        None, description="new experiments' artifact root; default <home>/mlartifacts for SQLite"
    )
    ui_url: str | None = Field(
        None,
        pattern=r"^https?://",
        description="MLflow UI for links from Airflow; default: the tracking URI when it is "
        "http(s), else http://127.0.0.1:5000 (what ./run ui starts)",
    )
