"""Delivery: once per (kind, run key), at most once per channel, bounded in time.

:func:`send_alert` is the one way an alert leaves the pipeline (the module
docstring of :mod:`pipeline.base.alerts` states the contract); :func:`raise_alert`
builds the alert from its parts; :func:`retry_undelivered` re-sends what a channel
has not confirmed.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pipeline.base.alerts.ledger import (
    LEASE_GRACE_S,
    alert_prefix,
    channel_state,
    describe_result,
    list_alerts,
    now_iso,
    result_key,
    round_key,
)
from pipeline.base.alerts.model import SEVERITY_RANK, Alert, AlertKind, AlertResult, AlertStatus
from pipeline.base.alerts.payloads import webhook_payload
from pipeline.base.alerts.transports import SENDERS, Outcome, channels_for
from pipeline.base.store import (
    ObjectExists,
    ObjectNotFound,
    ObjectStore,
    StorageError,
    get_json,
    join_key,
    put_json,
)

if TYPE_CHECKING:
    from pipeline.base.config import PipelineConfig
    from pipeline.base.sections import AlertsConfig

__all__ = ["raise_alert", "retry_undelivered", "send_alert"]

log = logging.getLogger(__name__)

MIN_ATTEMPT_S = 0.05  # less left of the budget than this: no new attempt
JOIN_GRACE_S = 1.0  # past the budget, for the outcome to be written to the store


def _attempts(
    channel: str, record: Mapping[str, Any], cfg: AlertsConfig, deadline: float
) -> tuple[Outcome, int]:
    """Attempt one channel until it answers, a retry would not help, or the budget ends."""
    send = SENDERS[channel]
    outcome = Outcome("failed", "the time budget (alerts.total_budget_s) was spent", True)
    attempts = 0
    for number in range(cfg.retries + 1):
        remaining = deadline - time.monotonic()
        if remaining < MIN_ATTEMPT_S:
            break
        attempts += 1
        try:
            outcome = send(record, cfg, min(cfg.timeout_s, remaining))
        except Exception as exc:  # a bug or an odd library error must not end the pipeline
            log.exception("alert %s: channel %s raised", record["alert_id"], channel)
            outcome = Outcome("failed", f"{channel} raised {type(exc).__name__}", True)
        if outcome.status != "failed" or not outcome.retryable:
            break
        if number == cfg.retries:
            break
        pause = cfg.backoff_s * 2**number
        if outcome.retry_after is not None:
            pause = max(pause, outcome.retry_after)
        if time.monotonic() + pause + MIN_ATTEMPT_S > deadline:
            outcome = Outcome(
                "failed",
                f"{outcome.detail}; no time left for a retry (alerts.total_budget_s)",
                True,
            )
            break
        log.warning(
            "alert %s (%s): %s attempt %d failed: %s; retrying in %.1f s",
            record["kind"],
            record["alert_id"],
            channel,
            attempts,
            outcome.detail,
            pause,
        )
        time.sleep(pause)
    return outcome, attempts


def _deliver_channel(
    channel: str,
    record: Mapping[str, Any],
    cfg: AlertsConfig,
    store: ObjectStore | None,
    prefix: str,
    deadline: float,
    *,
    include_unknown: bool,
    now: float,
) -> tuple[str, int, bool]:
    """One channel: claim a round, attempt, record. Returns (status text, attempts, sent)."""
    number = 1
    if store is not None:
        try:
            state = channel_state(store, prefix, channel, now, cfg.total_budget_s + LEASE_GRACE_S)
            if state.status in ("delivered", "in_flight"):
                return describe_result(state), 0, False
            if state.status == "unknown" and not include_unknown:
                return describe_result(state), 0, False
            number = state.last_round + 1
            put_json(
                store,
                round_key(prefix, channel, number),
                {
                    "round": number,
                    "channel": channel,
                    "claimed_at": now_iso(now),
                    "claimed_at_epoch": now,
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                },
            )
        except ObjectExists:
            return "pending: another sender is delivering it", 0, False
        except (StorageError, ValueError, OSError) as exc:
            log.warning(
                "alert %s: the alert store failed (%s); sending on %s without a delivery record",
                record["alert_id"],
                exc,
                channel,
            )
            store = None
    started = time.monotonic()
    outcome, attempts = _attempts(channel, record, cfg, deadline)
    elapsed = time.monotonic() - started
    if store is not None:
        try:
            put_json(
                store,
                result_key(prefix, channel, number),
                {
                    "round": number,
                    "channel": channel,
                    "status": outcome.status,
                    "detail": outcome.detail,
                    "retryable": outcome.retryable,
                    "attempts": attempts,
                    "elapsed_s": round(elapsed, 3),
                    "finished_at": now_iso(time.time()),
                },
            )
        except (StorageError, ValueError, OSError) as exc:
            log.warning(
                "alert %s: could not record the %s outcome: %s", record["alert_id"], channel, exc
            )
    plural = "s" if attempts != 1 else ""
    if outcome.status == "ok":
        log.info(
            "alert %s (%s) delivered on %s: %s",
            record["kind"],
            record["alert_id"],
            channel,
            outcome.detail,
        )
        return "ok", attempts, True
    log.error(
        "alert %s (%s) %s on %s after %d attempt%s: %s",
        record["kind"],
        record["alert_id"],
        "not confirmed" if outcome.status == "unknown" else "NOT delivered",
        channel,
        attempts,
        plural,
        outcome.detail,
    )
    suffix = f" ({attempts} attempt{plural})" if outcome.status == "failed" else ""
    return f"{outcome.status}: {outcome.detail}{suffix}", attempts, False


def _deliver(
    record: Mapping[str, Any],
    cfg: AlertsConfig,
    store: ObjectStore | None,
    prefix: str,
    *,
    include_unknown: bool = False,
    skip: Mapping[str, str] | None = None,
    now: float | None = None,
) -> tuple[dict[str, str], int, bool]:
    now = time.time() if now is None else now
    deadline = time.monotonic() + cfg.total_budget_s
    channels = list(record["channels"])
    todo = [c for c in channels if not (skip and c in skip)]

    done: dict[str, tuple[str, int, bool]] = {}

    def one(channel: str) -> None:
        done[channel] = _deliver_channel(
            channel, record, cfg, store, prefix, deadline, include_unknown=include_unknown, now=now
        )

    # Each channel in a daemon thread, and we wait no longer than the budget: a socket
    # timeout bounds one blocking operation, not a conversation (SMTP has several), so
    # this is what makes the bound hard. A thread still running when we stop waiting
    # records its outcome when it ends; a process that exits first leaves the round
    # claimed without outcome, which later reads as unknown (never re-sent by itself).
    threads = [
        threading.Thread(target=one, args=(c,), name=f"alert-{c}", daemon=True) for c in todo
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()) + JOIN_GRACE_S)
    finished = dict(done)  # a late thread may still add to ``done``
    statuses = {}
    for channel in channels:
        if channel in finished:
            statuses[channel] = finished[channel][0]
        elif skip and channel in skip:
            statuses[channel] = skip[channel]
        else:
            statuses[channel] = (
                "pending: still delivering when alerts.total_budget_s ran out "
                "(the outcome is recorded when it ends)"
            )
            log.error("alert %s: %s %s", record["alert_id"], channel, statuses[channel])
    attempts = sum(v[1] for v in finished.values())
    sent = any(v[2] for v in finished.values())
    return statuses, attempts, sent


def _wanted(alert: Alert, cfg: AlertsConfig) -> str | None:
    """Why the configuration drops this alert, or None."""
    if not cfg.enabled:
        return "alerts.enabled is false"
    if cfg.kinds is not None and alert.kind.value not in cfg.kinds:
        return f"kind {alert.kind.value} is not in alerts.kinds"
    if SEVERITY_RANK[str(alert.severity)] < SEVERITY_RANK[cfg.min_severity]:
        return f"severity {alert.severity} is below alerts.min_severity ({cfg.min_severity})"
    return None


def send_alert(alert: Alert, *, config: PipelineConfig, store: ObjectStore) -> AlertResult:
    """Deliver ``alert`` once per (kind, run_key) on every configured channel.

    Never raises because a receiver or the store failed: the failure is logged and
    recorded, and :func:`retry_undelivered` can re-send it later. Returns within
    about ``alerts.total_budget_s``. Calling it again for an alert whose earlier
    delivery failed retries the failed channels (never a channel that has it).
    """
    cfg = config.alerts
    why_not = _wanted(alert, cfg)
    if why_not is not None:
        log.info("alert %s %s not sent: %s", alert.kind.value, alert.run_key, why_not)
        return AlertResult(sent=False, duplicate=False, channels={}, attempts=0)
    try:
        now = time.time()
        prefix = alert_prefix(alert.kind, alert.run_key)
        record: dict[str, Any] = {
            **webhook_payload(
                {
                    "alert_id": alert.alert_id,
                    "kind": alert.kind.value,
                    "severity": alert.severity,
                    "run_key": alert.run_key,
                    "title": alert.title,
                    "text": alert.text,
                    "details": alert.details,
                    "created_at": now_iso(now),
                }
            ),
            "channels": channels_for(cfg),
        }
        duplicate = False
        store_used: ObjectStore | None = store
        try:
            put_json(store, join_key(prefix, "alert.json"), record)
        except ObjectExists:
            duplicate = True
            try:
                record = get_json(store, join_key(prefix, "alert.json"))
            except ObjectNotFound:  # removed in between: treat as recorded, send nothing
                return AlertResult(sent=False, duplicate=True, channels={}, attempts=0)
            log.info(
                "alert %s %s was recorded before (%s)", alert.kind.value, alert.run_key, prefix
            )
        except (StorageError, OSError) as exc:
            log.warning(
                "alert %s %s: the alert store failed (%s); sending without deduplication",
                alert.kind.value,
                alert.run_key,
                exc,
            )
            store_used = None
        channels, attempts, sent = _deliver(record, cfg, store_used, prefix, now=now)
        return AlertResult(sent=sent, duplicate=duplicate, channels=channels, attempts=attempts)
    except Exception as exc:  # the safety net: an alert must never end the pipeline step
        log.exception("alert %s %s could not be sent", alert.kind.value, alert.run_key)
        return AlertResult(
            sent=False,
            duplicate=False,
            channels={"error": f"failed: {type(exc).__name__}: {exc}"},
            attempts=0,
        )


def retry_undelivered(
    *,
    config: PipelineConfig,
    store: ObjectStore,
    include_unknown: bool = False,
    max_age_s: float | None = 7 * 24 * 3600.0,
    now: float | None = None,
) -> list[tuple[AlertStatus, AlertResult]]:
    """Re-send every recorded alert that a channel has not confirmed yet.

    Channels that have it are skipped; ``unknown`` rounds (sent, no answer) only with
    ``include_unknown``; alerts older than ``max_age_s`` are left alone (stale news).
    A channel that fails for one alert is not tried again for the others in this pass.
    """
    cfg = config.alerts
    now = time.time() if now is None else now
    lease_s = cfg.total_budget_s + LEASE_GRACE_S
    broken: dict[str, str] = {}
    done = []
    for status in list_alerts(store, lease_s=lease_s, now=now):
        open_states = {"failed", "new"} | ({"unknown"} if include_unknown else set())
        if not any(s in open_states for s in status.channels.values()):
            continue
        created = datetime.fromisoformat(status.created_at.replace("Z", "+00:00")).timestamp()
        if max_age_s is not None and now - created > max_age_s:
            log.info("alert %s is older than %.0f s; not re-sent", status.prefix, max_age_s)
            continue
        record = get_json(store, join_key(status.prefix, "alert.json"))
        channels, attempts, sent = _deliver(
            record,
            cfg,
            store,
            status.prefix,
            include_unknown=include_unknown,
            skip={c: f"failed: skipped, {c} failed earlier in this pass" for c in broken},
            now=now,
        )
        for channel, text in channels.items():
            if text.startswith("failed:") and channel not in broken and "skipped" not in text:
                broken[channel] = text
        done.append((status, AlertResult(sent, True, channels, attempts)))
    return done


def raise_alert(
    config: PipelineConfig,
    store: ObjectStore,
    kind: AlertKind,
    run_key: str,
    title: str,
    text: str,
    details: Mapping[str, Any] | None = None,
) -> AlertResult:
    """Build an :class:`Alert` from its parts and :func:`send_alert` it (never raises
    for a receiver or a store that fails: a decision that caused an alert stands)."""
    alert = Alert(kind, run_key, title, text, dict(details or {}))
    return send_alert(alert, config=config, store=store)
