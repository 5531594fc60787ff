"""Operating the pipeline: this month's spend, and the alerts it sent."""

from __future__ import annotations

from datetime import UTC, datetime

from pipeline.base.alerts import (
    Alert,
    AlertKind,
    AlertResult,
    AlertStatus,
    list_alerts,
    retry_undelivered,
    send_alert,
)
from pipeline.flow.env import Env
from pipeline.steps.ops.spend import SpendSummary, month_of, monthly_spend, spend_experiments

__all__ = ["alerts", "retry_alerts", "send_test_alert", "spend"]


def spend(
    env: Env,
    month: str | None = None,
    *,
    experiments: list[str] | None = None,
    tracking_uri: str | None = None,
) -> SpendSummary:
    """The training spend of a calendar month (UTC) against ``budget.monthly_usd``:
    the steps' SpendSummary (``month``: YYYY-MM, default this month)."""
    from mlflow import MlflowClient

    label = month_of(month) if month else month_of(datetime.now(UTC))
    client = MlflowClient(tracking_uri) if tracking_uri else env.client
    names = experiments or spend_experiments(env.config, env.experiment)
    return monthly_spend(client, names, label, budget_usd=env.config.budget.monthly_usd)


def send_test_alert(env: Env, kind: str, run_key: str | None = None) -> tuple[Alert, AlertResult]:
    """Send a test alert of ``kind`` on every channel (the kind and severity filters do
    not apply: a test checks the channels). Returns (alert, result)."""
    alert_kind = AlertKind(kind)
    key = run_key or f"test-{datetime.now(UTC):%Y%m%dT%H%M%S.%fZ}"
    alert = Alert(
        kind=alert_kind,
        run_key=key,
        title=f"Test alert ({alert_kind.value}) from cosine-retrain",
        text="Sent by `python -m pipeline alerts test` to check the alert channels.",
        details={"test": True, "store": env.store.description},
    )
    channels = env.config.alerts.model_copy(update={"kinds": None, "min_severity": "info"})
    config = env.config.model_copy(update={"alerts": channels})
    return alert, send_alert(alert, config=config, store=env.store)


def retry_alerts(
    env: Env, *, include_unknown: bool = False, max_age_days: float = 7.0
) -> list[tuple[AlertStatus, AlertResult]]:
    """Re-send every recorded alert a channel has not confirmed (none older than
    ``max_age_days``; 0: no limit)."""
    max_age = max_age_days * 86400.0 if max_age_days > 0 else None
    return retry_undelivered(
        config=env.config, store=env.store, include_unknown=include_unknown, max_age_s=max_age
    )


def alerts(env: Env) -> list[AlertStatus]:
    """Every recorded alert with the state of each of its channels."""
    return list_alerts(env.store)
