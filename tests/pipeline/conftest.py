"""Fixtures for the pipeline's data steps.

``store`` runs a test twice: against a local folder and against S3 through
boto3, talking HTTP to moto's standalone server (``s3_server``, tests/conftest.py).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipeline.base.store import LocalStore, ObjectStore, S3Store
from training.data.spec import DatasetSpec, load_spec

ROOT = Path(__file__).resolve().parents[2]
SPEC_PATH = ROOT / "configs" / "datasets" / "flights.yaml"


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    server = request.getfixturevalue("s3_server")
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
