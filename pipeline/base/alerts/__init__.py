"""Alerts: one sender for every step, deduplicated, bounded in time, never fatal.

:func:`send_alert` (:mod:`.delivery`) delivers an :class:`Alert` to the configured channels (a
generic JSON webhook by default; Slack and e-mail by configuration; the log
when no webhook URL is set) and returns an :class:`AlertResult`. The contract:

- **Deduplicated per (kind, run_key).** The first sender writes
  ``alerts/<kind>/<run_key>/alert.json`` create-if-absent; a second sender of the
  same alert, in this process or another, finds it and sends nothing new.
- **At most once per channel.** Every delivery round on a channel is claimed
  first (``<channel>/round-NNNN.json``, create-if-absent) and its outcome is
  written beside it (``round-NNNN.result.json``). A channel that has an ``ok``
  round is never sent to again; two senders cannot both claim a round.
- **Retries only when it is safe.** A refused connection, a connect timeout, or
  an HTTP 408/425/429/5xx answer is retried with exponential backoff (and
  ``Retry-After``). When the request went out but no answer came back (the
  receiver is slow), the receiver may have the alert: the round is ``unknown``
  and is not re-sent automatically (``python -m pipeline alerts retry
  --unknown`` does, and every payload carries ``alert_id`` for receivers that
  deduplicate). Other 4xx answers are failures that a retry now would repeat.
- **Bounded.** Each socket operation waits at most ``alerts.timeout_s``; the
  call returns after at most ``alerts.total_budget_s`` (plus about a second to
  write the outcome), whatever the receiver does: channels run side by side in
  daemon threads, and one still busy at the deadline is reported ``pending`` and
  records its outcome when it ends. A receiver that is down costs the backoff
  pauses, not the timeouts.
- **Never fatal.** A failed receiver (or a failing store) is logged and
  recorded; :func:`send_alert` returns instead of raising. Undelivered rounds
  can be re-sent later with :func:`retry_undelivered`.

Secrets (the Slack URL, the SMTP password, the webhook signing key) never
appear in payloads, records or logs; webhook URLs are logged by host only.

The package, floor by floor: :mod:`.model` (the alert, its kinds and results),
:mod:`.payloads` (webhook, Slack and e-mail formats), :mod:`.transports` (one
attempt on one channel), :mod:`.ledger` (the delivery records in the store) and
:mod:`.delivery` (deduplication, rounds, retries, the time budget).
"""

from __future__ import annotations

from pipeline.base.alerts.delivery import raise_alert, retry_undelivered, send_alert
from pipeline.base.alerts.ledger import alert_prefix, list_alerts
from pipeline.base.alerts.model import (
    SCHEMA,
    Alert,
    AlertKind,
    AlertResult,
    AlertStatus,
    alert_id,
)
from pipeline.base.alerts.payloads import email_message, slack_payload, webhook_payload

__all__ = [
    "SCHEMA",
    "Alert",
    "AlertKind",
    "AlertResult",
    "AlertStatus",
    "alert_id",
    "alert_prefix",
    "email_message",
    "list_alerts",
    "raise_alert",
    "retry_undelivered",
    "send_alert",
    "slack_payload",
    "webhook_payload",
]
