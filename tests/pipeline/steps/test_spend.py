"""Monthly spend against a real MLflow tracking server, and the pause rule.

Runs are created with explicit start times around month boundaries (UTC); the
expected totals are summed here from the values the test logged."""

from __future__ import annotations

import json
import math
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from pipeline.base.config import PipelineConfig, load_config
from pipeline.base.store import LocalStore
from pipeline.steps.ops.spend import (
    RunCost,
    SpendSummary,
    check_spend,
    month_bounds,
    month_of,
    monthly_spend,
    retrain_allowed,
)
from tests.pipeline.base.test_alerts import Receiver
from tests.pipeline.base.test_alerts import receiver as receiver
from tests.pipeline.cli_support import clear_pipeline_env
from tests.support import MlflowServer

ROOT = Path(__file__).resolve().parents[3]


def ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_pipeline_env(monkeypatch, "MLFLOW_")


@pytest.fixture(scope="module")
def spend_runs(mlflow_server: MlflowServer) -> dict[str, Any]:
    """Two experiments with runs on both sides of November 2026's boundaries."""
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_server.url)
    tag = uuid.uuid4().hex[:8]
    main = client.create_experiment(f"spend-{tag}")
    other = client.create_experiment(f"spend-other-{tag}")
    made: dict[str, Any] = {"client": client, "names": (f"spend-{tag}", f"spend-other-{tag}")}

    def run(experiment: str, name: str, start: int, costs: list[float] | None) -> str:
        r = client.create_run(experiment, start_time=start, run_name=name)
        for step, value in enumerate(costs or []):
            client.log_metric(r.info.run_id, "cost_usd", value, step=step * 10, timestamp=start)
        client.set_terminated(r.info.run_id, end_time=start + 60_000)
        made[name] = r.info.run_id
        return r.info.run_id

    run(main, "oct-last-ms", ms(2026, 10, 31, 23, 59, 59) + 999, [40.0])
    run(main, "nov-first-ms", ms(2026, 11, 1), [1.25])
    run(main, "nov-mid", ms(2026, 11, 15, 8), [3.0, 7.5, 12.75])  # the last value counts
    run(main, "nov-no-cost", ms(2026, 11, 16), None)
    deleted = run(main, "nov-deleted", ms(2026, 11, 20), [5.5])
    client.delete_run(deleted)  # deleting a run does not refund it
    run(main, "nov-last-ms", ms(2026, 11, 30, 23, 59, 59) + 999, [0.125])
    run(main, "dec-first-ms", ms(2026, 12, 1), [99.0])
    run(other, "nov-other", ms(2026, 11, 10), [30.0])
    return made


def test_monthly_spend_sums_the_month(spend_runs: dict[str, Any]) -> None:
    client, (name, other) = spend_runs["client"], spend_runs["names"]
    summary = monthly_spend(client, [name], "2026-11", budget_usd=20.0)
    want = [
        ("nov-first-ms", 1.25),
        ("nov-mid", 12.75),
        ("nov-deleted", 5.5),
        ("nov-last-ms", 0.125),
    ]
    assert [(r.run_name, r.cost_usd) for r in summary.runs] == want
    assert summary.total_usd == pytest.approx(1.25 + 12.75 + 5.5 + 0.125)
    assert summary.month == "2026-11"
    assert summary.budget_usd == 20.0
    assert summary.over_budget is False  # 19.625 is not above 20
    assert summary.runs_without_cost == (spend_runs["nov-no-cost"],)
    assert summary.runs[0].run_id == spend_runs["nov-first-ms"]
    assert summary.runs[0].start_time == datetime(2026, 11, 1, tzinfo=UTC)
    assert all(isinstance(r, RunCost) for r in summary.runs)

    both = monthly_spend(client, [name, other, "no-such-experiment"], date(2026, 11, 5))
    assert both.total_usd == pytest.approx(19.625 + 30.0)
    assert both.missing_experiments == ("no-such-experiment",)
    assert both.over_budget is False  # no budget given

    assert monthly_spend(client, [name], "2026-10").total_usd == 40.0
    assert monthly_spend(client, [name], "2026-12").total_usd == 99.0
    assert monthly_spend(client, [name], "2026-09").runs == ()
    # a zoned time is read in UTC: 00:30 on 1 December at +02:00 is still November
    late = datetime(2026, 12, 1, 0, 30, tzinfo=timezone(timedelta(hours=2)))
    assert monthly_spend(client, [name], late, budget_usd=19.0).over_budget is True


def test_month_helpers() -> None:
    assert month_of("2026-1") == "2026-01"
    assert month_of(date(2026, 12, 31)) == "2026-12"
    assert month_bounds("2026-12") == (
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )
    with pytest.raises(ValueError, match="YYYY-MM"):
        month_of("2026-13")
    with pytest.raises(ValueError, match="YYYY-MM"):
        month_of("November")


# ------------------------------------------------------------------------------ the rule


def summary(total: float, month: str = "2026-11") -> SpendSummary:
    runs = (
        RunCost("a" * 32, "big", total * 0.75, datetime(2026, 11, 2, tzinfo=UTC)),
        RunCost("b" * 32, "small", total * 0.25, datetime(2026, 11, 9, tzinfo=UTC)),
    )
    return SpendSummary(month, total, runs, None, False, ("flight_delay",))


def config(tmp_path: Path, url: str, **budget: Any) -> PipelineConfig:
    return load_config(
        home=tmp_path / "home",
        budget={"monthly_usd": 100.0, **budget},
        alerts={"webhook_url": url, "timeout_s": 1.0, "backoff_s": 0.05},
    )


@pytest.mark.parametrize(
    ("trigger", "budget", "allowed"),
    [
        ("drift", {}, False),
        ("quality", {}, False),
        ("quality", {"pause_quality": False}, True),
        ("scheduled", {}, True),
        ("scheduled", {"pause_scheduled": True}, False),
        ("manual", {"pause_scheduled": True}, True),
    ],
)
def test_the_rule_over_budget(
    trigger: str, budget: dict[str, Any], allowed: bool, receiver: Receiver, tmp_path: Path
) -> None:
    cfg = config(tmp_path, receiver.url(), **budget)
    store = LocalStore(tmp_path / "store")
    decision = retrain_allowed(trigger, summary(130.0), cfg, store=store)  # type: ignore[arg-type]
    assert decision.allowed is allowed
    assert "$130.00 spent in 2026-11 of a $100.00 monthly budget (2 run(s))" in decision.reason
    if allowed:
        assert decision.alert is None
        assert receiver.requests == []
        return
    assert decision.reason.startswith("paused: over budget")
    assert "until 2026-12-01 00:00 UTC" in decision.reason
    assert decision.alert is not None
    assert decision.alert.channels == {"webhook": "ok"}
    (body,) = receiver.bodies
    assert body["kind"] == "spend_paused"
    assert body["run_key"] == "2026-11"
    assert body["title"] == "Retrains paused: $130.00 spent of $100.00 in 2026-11"
    paused = ["drift"] + (["quality"] if budget.get("pause_quality", True) else [])
    paused += ["scheduled"] if budget.get("pause_scheduled") else []
    details = body["details"]
    assert details["paused_triggers"] == paused
    assert (details["total_usd"], details["budget_usd"], details["over_by_usd"]) == (
        130.0,
        100.0,
        30.0,
    )
    assert [r["run_name"] for r in details["top_runs"]] == ["big", "small"]
    assert "$30.00 over the $100.00 monthly budget" in body["text"]
    assert "big $97.50, small $32.50" in body["text"]


def test_the_rule_within_budget_and_without_one(receiver: Receiver, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    exactly = retrain_allowed(
        "drift", summary(100.0), config(tmp_path, receiver.url()), store=store
    )
    assert exactly.allowed  # the rule is "above the budget"
    assert exactly.reason.startswith("within budget: $100.00 spent")
    unlimited = load_config(home=tmp_path / "home")
    free = retrain_allowed("drift", summary(1e6), unlimited, store=store)
    assert free.allowed
    assert "budget.monthly_usd is unset" in free.reason
    with pytest.raises(ValueError, match="retrain trigger must be one of"):
        retrain_allowed("cron", summary(1.0), unlimited, store=store)  # type: ignore[arg-type]
    assert receiver.requests == []


def test_one_spend_alert_per_month(receiver: Receiver, tmp_path: Path) -> None:
    cfg = config(tmp_path, receiver.url())
    store = LocalStore(tmp_path / "store")
    for total in (130.0, 150.0, 170.0):
        assert not retrain_allowed("drift", summary(total), cfg, store=store).allowed
    assert [b["details"]["total_usd"] for b in receiver.bodies] == [130.0]
    assert not retrain_allowed("drift", summary(120.0, "2026-12"), cfg, store=store).allowed
    assert [b["run_key"] for b in receiver.bodies] == ["2026-11", "2026-12"]


def test_a_failed_spend_alert_keeps_the_pause(tmp_path: Path) -> None:
    from tests.support import free_port

    cfg = config(tmp_path, f"http://127.0.0.1:{free_port()}/hook")
    decision = retrain_allowed("drift", summary(130.0), cfg, store=LocalStore(tmp_path / "s"))
    assert not decision.allowed
    assert decision.alert is not None
    assert decision.alert.channels["webhook"].startswith("failed: cannot reach")


def test_check_spend_and_the_cli(
    spend_runs: dict[str, Any],
    mlflow_server: MlflowServer,
    receiver: Receiver,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pipeline.apps.cli import main

    name = spend_runs["names"][0]
    cfg = load_config(
        home=tmp_path / "home",
        budget={"monthly_usd": 15.0, "experiments": [name]},
        alerts={"webhook_url": receiver.url()},
    )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)  # check_spend builds the client
    found, decision = check_spend("drift", cfg, month="2026-11", store=LocalStore(tmp_path / "s"))
    assert math.isclose(found.total_usd, 19.625)
    assert found.over_budget
    assert not decision.allowed
    assert receiver.bodies[0]["details"]["total_usd"] == 19.625

    monkeypatch.setenv("COSINE_RETRAIN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COSINE_RETRAIN_BUDGET__MONTHLY_USD", "15")
    monkeypatch.chdir(ROOT)
    argv = ["spend", "--month", "2026-11", "--experiment", name, "--tracking-uri"]
    assert main([*argv, mlflow_server.url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"spend 2026-11: $19.62 of $15.00 over 4 run(s) in {name} OVER BUDGET"
    assert lines[1].startswith("  2026-11-01 00:00Z")
    assert lines[1].endswith("nov-first-ms                              $1.2500")
    assert lines[-1] == "  1 run(s) without cost_usd (counted 0)"
    assert main([*argv, mlflow_server.url, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["total_usd"] == 19.625
    assert [r["run_name"] for r in data["runs"]][-1] == "nov-last-ms"
    assert main(["spend", "--month", "11/2026"]) == 2
    assert "month must look like 2026-11" in capsys.readouterr().err
