"""The ingest DAG's ``source`` reads files only under ``ingest.source_roots``; ``land`` refuses
a source it cannot key (a month with a batch id, a file without one) before reading it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline import flow


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> flow.Env:
    monkeypatch.delenv("COSINE_RETRAIN_CONFIG", raising=False)
    monkeypatch.setenv("COSINE_RETRAIN_HOME", str(tmp_path / "home"))
    return flow.build_env()


def _file(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("id,x\n1,2\n")
    return str(path)


def test_the_default_root_is_the_homes_incoming_folder(env: flow.Env, tmp_path: Path) -> None:
    flow.check_source(env, _file(tmp_path / "home" / "incoming" / "may.csv"))
    with pytest.raises(PermissionError, match=r"outside ingest.source_roots .*incoming"):
        flow.check_source(env, _file(tmp_path / "elsewhere.csv"))
    with pytest.raises(PermissionError):
        flow.check_source(env, "/etc/passwd")


def test_dot_dot_and_symlinks_are_resolved_first(env: flow.Env, tmp_path: Path) -> None:
    outside = _file(tmp_path / "secret.csv")
    incoming = tmp_path / "home" / "incoming"
    with pytest.raises(PermissionError):
        flow.check_source(env, str(incoming / ".." / ".." / "secret.csv"))
    incoming.mkdir(parents=True)
    (incoming / "link.csv").symlink_to(outside)
    with pytest.raises(PermissionError):
        flow.check_source(env, str(incoming / "link.csv"))


def test_configured_roots_and_s3_prefixes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COSINE_RETRAIN_CONFIG", raising=False)
    monkeypatch.setenv("COSINE_RETRAIN_HOME", str(tmp_path / "home"))
    roots = [str(tmp_path / "drop"), "s3://landing/flights"]
    monkeypatch.setenv("COSINE_RETRAIN_INGEST__SOURCE_ROOTS", json.dumps(roots))
    env = flow.build_env()
    flow.check_source(env, _file(tmp_path / "drop" / "a.csv"))
    flow.check_source(env, "s3://landing/flights/2026-11.parquet")
    for bad in (
        "s3://landing/flightsX/a.parquet",  # a sibling prefix, not below it
        "s3://landing/flights/../hr/salaries.csv",
        "s3://other/flights/a.csv",
        "gs://landing/flights/a.csv",
        _file(tmp_path / "home" / "incoming" / "a.csv"),  # the default is replaced
    ):
        with pytest.raises(PermissionError):
            flow.check_source(env, bad)


def test_land_refuses_before_reading_and_months_need_no_root(env: flow.Env, tmp_path: Path) -> None:
    with pytest.raises(PermissionError):
        flow.land(env, _file(tmp_path / "x.csv"), batch_id="x1")
    assert env.store.list() == []
    assert flow.land(env, "2013-01").batch_id == "2013-01"


def test_land_refuses_a_month_with_a_batch_id_a_file_without_one_and_a_file_outside(
    env: flow.Env, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=r"'2013-03' is a flights month .*batch_id is for files"):
        flow.land(env, "2013-03", batch_id="2024-03")
    inside = _file(tmp_path / "home" / "incoming" / "may.csv")
    with pytest.raises(ValueError, match=r"is not a flights month: .*needs a batch id"):
        flow.land(env, inside, labels=True)
    with pytest.raises(PermissionError, match=r"outside ingest.source_roots"):
        flow.land(env, _file(tmp_path / "elsewhere.csv"), batch_id="2024-03")
    assert not list((tmp_path / "home").rglob("*.parquet"))  # nothing landed
