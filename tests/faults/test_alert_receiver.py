"""The alert receiver down, slow (10 s) or answering 500, under a pipeline step.

The training task's record (``pipeline.flow.retrain.trained``) sends the
``nan_detected`` alert of a run that met NaNs. With the shipped alert settings
(5 s per attempt, 15 s in all) the step must return within its budget whatever
the receiver does, never raise, and the alert must reach the receiver exactly
once when it is back (``python -m pipeline alerts retry``), however often the
step is retried. tests/pipeline/base/test_alerts.py covers ``send_alert`` itself.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from pipeline import flow
from pipeline.base.alerts import list_alerts, retry_undelivered
from tests.pipeline.base.test_alerts import Answer, Receiver
from tests.support import free_port
from training.results import TrainResult

BUDGET_S = 15.0  # alerts.total_budget_s, the shipped default


def _nan_result(name: str) -> TrainResult:
    return TrainResult(
        status="completed",
        stop_reason="completed 100 steps",
        run_name=name,
        run_dir=f"/runs/{name}",
        steps_done=100,
        total_steps=100,
        cycles=[],
        best_cycle=None,
        nan_count=7,
        rollbacks=1,
        lr_scale=0.5,
        restarts=[],
        cost_usd=0.01,
        device_seconds=1.0,
        device="cpu",
        amp="off",
        world_size=1,
        mlflow_run_id=None,
        data={},
        schedule={},
        schedule_fingerprint="",
        config_hash="",
        definition_hash="",
        finished_at="2026-12-04T00:00:00+00:00",
    )


@pytest.fixture
def env_at(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    def make(url: str) -> flow.Env:
        for key in ("COSINE_RETRAIN_CONFIG", "MLFLOW_TRACKING_URI"):
            monkeypatch.delenv(key, raising=False)
        monkeypatch.setenv("COSINE_RETRAIN_HOME", str(tmp_path / "home"))
        monkeypatch.setenv("COSINE_RETRAIN_ALERTS__WEBHOOK_URL", url)
        env = flow.build_env()
        assert env.config.alerts.total_budget_s == BUDGET_S
        # warm: the first step of a process imports MLflow and opens the store; that
        # is not time the receiver costs
        assert flow.mlflow_run_url(env, None) is None
        assert env.store.list("alerts") == []
        return env

    return make


def _step(env: flow.Env, name: str) -> float:
    t0 = time.monotonic()
    run = flow.retrain.trained(env, _nan_result(name))
    assert run.result.nan_count == 7  # the step's own result is untouched
    return time.monotonic() - t0


def test_receiver_down_does_not_block_and_delivers_once_when_back(env_at: Any) -> None:
    port = free_port()
    env = env_at(f"http://127.0.0.1:{port}/hook")
    took = [_step(env, "down") for _ in range(3)]  # the task and two retries
    assert max(took) < BUDGET_S + 2, took
    (status,) = list_alerts(env.store)
    assert status.channels == {"webhook": "failed"}
    receiver = Receiver(port)
    try:
        assert len(retry_undelivered(config=env.config, store=env.store)) == 1
        assert retry_undelivered(config=env.config, store=env.store) == []
        _step(env, "down")
        assert len(receiver.requests) == 1
        assert receiver.bodies[0]["kind"] == "nan_detected"
    finally:
        receiver.stop()


def test_a_slow_receiver_costs_one_attempt_and_gets_the_alert_once(env_at: Any) -> None:
    receiver = Receiver()
    receiver.answer(Answer(200, delay=10.0))
    try:
        env = env_at(receiver.url())
        took = _step(env, "slow")
        assert took < env.config.alerts.timeout_s + 2, took
        assert _step(env, "slow") < 1.0  # a retried task: recorded, nothing sent again
        assert retry_undelivered(config=env.config, store=env.store) == []
        assert len(receiver.requests) == 1
    finally:
        receiver.stop()


def test_a_receiver_answering_500_is_retried_within_the_budget_then_once(env_at: Any) -> None:
    receiver = Receiver()
    receiver.default = Answer(500)
    try:
        env = env_at(receiver.url())
        took = _step(env, "fails")
        assert took < BUDGET_S + 2, took
        failed_attempts = len(receiver.requests)
        assert failed_attempts >= 2  # retried, with backoff
        (status,) = list_alerts(env.store)
        assert status.channels == {"webhook": "failed"}
        receiver.default = Answer(200)
        assert len(retry_undelivered(config=env.config, store=env.store)) == 1
        _step(env, "fails")
        assert retry_undelivered(config=env.config, store=env.store) == []
        assert len(receiver.requests) == failed_attempts + 1
        assert len({r.raw for r in receiver.requests}) == 1  # the same payload each time
    finally:
        receiver.stop()
