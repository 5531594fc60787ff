"""A home keeps its data set: after a replay recorded its spec (what ``./run demo
--spec S --home H`` does, through :func:`pipeline.apps.demo.claim_home`), every
command on the home uses that spec without it being exported again, says which
data set it looks at (the first line of ``batches``, ``models`` and ``tune``), and
refuses an explicitly different one."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.apps.cli import main
from pipeline.apps.demo import claim_home
from pipeline.base.config import ConfigError, load_config
from tests.pipeline.cli_support import clear_pipeline_env, run_cli

ROOT = Path(__file__).resolve().parents[3]
GSS = ROOT / "configs" / "datasets" / "gss.yaml"


@pytest.fixture
def gss_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    clear_pipeline_env(monkeypatch)
    home = tmp_path / "home"
    claim_home(home, GSS, record=True)  # as the demo records it
    monkeypatch.setenv("COSINE_RETRAIN_HOME", str(home))
    monkeypatch.chdir(tmp_path)  # nowhere near the repository's default spec path
    return home


def test_the_cli_uses_the_spec_the_home_was_replayed_with(
    gss_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    said = f"data set gss (home {gss_home}, the spec its replay recorded: {GSS})"
    code, out, err = run_cli(capsys, "batches")
    assert code == 0, err
    assert out.startswith(said + "\n")  # the first line says which data set this is
    assert "dataset gss: 0 batch id(s)" in out
    code, out, err = run_cli(capsys, "models")
    assert code == 2  # nothing registered yet: the home's model, not flight_delay
    assert err.endswith(
        "error: no registered model 'gss_very_happy' yet (register a training run)\n"
    )
    code, _, err = run_cli(capsys, "tune")
    assert code == 2  # nothing labelled yet: the gss store, not the flights one
    assert err.startswith("error: tuning needs")
    assert err.rstrip().endswith("of data set gss")
    assert load_config().dataset_spec == GSS


def test_another_spec_on_that_home_is_refused(
    gss_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    flights = ROOT / "configs" / "datasets" / "flights.yaml"
    monkeypatch.setenv("COSINE_RETRAIN_DATASET_SPEC", str(flights))
    with pytest.raises(ConfigError, match=r"is not the spec of home .*recorded by its replay"):
        load_config()
    assert main(["batches"]) == 2
    assert "give this data set its own home" in capsys.readouterr().err
    monkeypatch.setenv("COSINE_RETRAIN_DATASET_SPEC", str(GSS))  # the same spec: fine
    assert load_config().dataset_spec == GSS
