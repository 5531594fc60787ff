"""Fixtures for the pipeline's data steps.

``store`` runs a test twice: against a local folder and against S3 through
boto3, talking HTTP to moto's standalone server on 127.0.0.1 (started once per
session on a free port and stopped at the end).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from pipeline.base.config import StorageConfig
from pipeline.base.store import LocalStore, ObjectStore, S3Store
from training.data.spec import DatasetSpec, load_spec

ROOT = Path(__file__).resolve().parents[2]
SPEC_PATH = ROOT / "configs" / "datasets" / "flights.yaml"


@dataclass(frozen=True)
class S3Server:
    endpoint: str

    def storage(self, bucket: str, **extra: object) -> StorageConfig:
        settings: dict[str, object] = {
            "kind": "s3",
            "bucket": bucket,
            "prefix": "pipeline-tests",
            "endpoint_url": self.endpoint,
            "region": "us-east-1",
            "access_key_id": "testing",
            "secret_access_key": "testing",
            "max_attempts": 2,
        }
        return StorageConfig.model_validate({**settings, **extra})

    def new_bucket(self) -> str:
        import boto3

        name = f"b-{uuid.uuid4().hex[:20]}"
        boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        ).create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    from tests.support import moto_server

    with moto_server() as port:
        yield S3Server(f"http://127.0.0.1:{port}")


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    server: S3Server = request.getfixturevalue("s3_server")
    return S3Store.from_config(server.storage(server.new_bucket()))


@pytest.fixture
def local_store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


@pytest.fixture(scope="session")
def spec() -> DatasetSpec:
    return load_spec(SPEC_PATH)


@pytest.fixture(scope="session")
def flights_year() -> dict[int, tuple[pd.DataFrame, pd.DataFrame]]:
    """Features and labels of the months the tests use (loaded once)."""
    from training.data.flights import load_months

    return {m: load_months([m]) for m in (1, 3, 7)}


@pytest.fixture(scope="session")
def march(flights_year: dict[int, tuple[pd.DataFrame, pd.DataFrame]]) -> pd.DataFrame:
    """A small, valid batch: 3,000 rows of March (every 9th flight, so all days and hours)."""
    return flights_year[3][0].iloc[::9].head(3000).reset_index(drop=True)
