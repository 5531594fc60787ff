"""Alerts: one sender for every step, deduplicated, bounded in time, never fatal.

:func:`send_alert` delivers an :class:`Alert` to the configured channels (a
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
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import math
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from pipeline.storage import (
    ObjectExists,
    ObjectNotFound,
    ObjectStore,
    StorageError,
    get_json,
    join_key,
    put_json,
)

if TYPE_CHECKING:
    from pipeline.config import AlertsConfig, PipelineConfig

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
    "retry_undelivered",
    "send_alert",
    "slack_payload",
    "webhook_payload",
]

log = logging.getLogger(__name__)

SCHEMA = "cosine-retrain.alert/v1"
ROOT = "alerts"
Severity = Literal["info", "warning", "critical"]
SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "critical": 2}
MIN_ATTEMPT_S = 0.05  # less left of the budget than this: no new attempt
JOIN_GRACE_S = 1.0  # past the budget, for the outcome to be written to the store
LEASE_GRACE_S = 60.0  # a round claimed longer ago than budget + this, without a result: sender gone
MAX_TITLE = 200
MAX_TEXT = 4000


class AlertKind(StrEnum):
    NAN = "nan_detected"
    COST = "cost_over_budget"
    VALIDATION = "validation_failed"
    DRIFT = "drift_detected"
    GATE = "gate_failed"
    ROLLBACK = "canary_rolled_back"
    PROMOTED = "promoted"
    CANARY_UNDECIDED = "canary_needs_decision"
    SPEND = "spend_paused"
    TASK_FAILED = "task_failed"
    TRAINING = "training_unhealthy"


DEFAULT_SEVERITY: dict[AlertKind, Severity] = {
    AlertKind.NAN: "critical",
    AlertKind.COST: "warning",
    AlertKind.VALIDATION: "warning",
    AlertKind.DRIFT: "info",
    AlertKind.GATE: "warning",
    AlertKind.ROLLBACK: "warning",
    AlertKind.PROMOTED: "info",
    AlertKind.CANARY_UNDECIDED: "warning",
    AlertKind.SPEND: "warning",
    AlertKind.TASK_FAILED: "critical",
    AlertKind.TRAINING: "warning",
}

# a details key naming a secret (``smtp_password``, ``api_key``, ``token``; not ``passed``)
_SECRET_KEY = re.compile(
    r"(?:^|[_.-])(?:password|passwd|pwd|pass|secret|token|api[_-]?key|credentials?|"
    r"authorization|auth)(?:$|[_.-])",
    re.I,
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


# ------------------------------------------------------------------------------ values


@dataclass(frozen=True)
class Alert:
    """One alert. ``run_key`` (with ``kind``) is what deduplication is keyed on: a
    training run id, a batch id, a model version, a month...

    ``severity`` defaults per kind (:data:`DEFAULT_SEVERITY`). ``title`` is made one
    line; ``details`` is made JSON-safe (non-finite floats become strings, values
    under secret-looking keys are masked).
    """

    kind: AlertKind
    run_key: str
    title: str
    text: str
    details: dict[str, Any] = field(default_factory=dict)
    severity: Severity | None = None

    def __post_init__(self) -> None:
        try:
            kind = AlertKind(self.kind)
        except ValueError:
            raise ValueError(
                f"unknown alert kind {self.kind!r}; choose from {[k.value for k in AlertKind]}"
            ) from None
        if not isinstance(self.run_key, str) or not self.run_key.strip():
            raise ValueError(f"alert run_key must be a non-empty string, got {self.run_key!r}")
        run_key = _CONTROL.sub(" ", self.run_key.strip())
        if len(run_key) > 500:
            raise ValueError(f"alert run_key is {len(run_key)} characters; at most 500")
        severity = self.severity if self.severity is not None else DEFAULT_SEVERITY[kind]
        if severity not in SEVERITY_RANK:
            raise ValueError(f"alert severity must be info, warning or critical, got {severity!r}")
        if not isinstance(self.details, Mapping):
            raise TypeError(f"alert details must be a mapping, got {type(self.details).__name__}")
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "run_key", run_key)
        object.__setattr__(self, "title", _clip(" ".join(str(self.title).split()), MAX_TITLE))
        object.__setattr__(self, "text", _clip(_CONTROL.sub("", str(self.text)), MAX_TEXT))
        object.__setattr__(self, "details", _json_safe(dict(self.details)))
        object.__setattr__(self, "severity", severity)

    @property
    def alert_id(self) -> str:
        return alert_id(self.kind, self.run_key)


@dataclass(frozen=True)
class AlertResult:
    """What one call did. ``channels`` maps each channel to ``"ok"`` (it has the
    alert, now or from an earlier call), ``"failed: ..."`` (retry later),
    ``"unknown: ..."`` (sent, no answer: not re-sent automatically) or
    ``"pending: ..."`` (another sender, or this call's own thread past the budget,
    is delivering it right now).
    ``sent``: this call delivered the alert on at least one channel.
    ``duplicate``: the alert had been recorded before this call.
    ``attempts``: delivery attempts this call made, over all channels.
    """

    sent: bool
    duplicate: bool
    channels: dict[str, str]
    attempts: int

    @property
    def delivered(self) -> bool:
        """Every channel has the alert."""
        return bool(self.channels) and all(v == "ok" for v in self.channels.values())


@dataclass(frozen=True)
class AlertStatus:
    """One recorded alert and where each of its channels stands (for listings)."""

    kind: str
    run_key: str
    alert_id: str
    title: str
    severity: str
    created_at: str
    channels: dict[str, str]  # channel -> delivered | failed | unknown | in_flight | new
    prefix: str


@dataclass(frozen=True)
class _Outcome:
    status: Literal["ok", "failed", "unknown"]
    detail: str
    retryable: bool = False
    retry_after: float | None = None


def alert_id(kind: str, run_key: str) -> str:
    """A stable id of (kind, run_key): the same in every payload, record and retry."""
    return hashlib.sha256(f"{AlertKind(kind).value}\n{run_key}".encode()).hexdigest()[:20]


_SAFE_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=+@-]{0,79}$")


def alert_prefix(kind: str, run_key: str) -> str:
    """``alerts/<kind>/<run_key>``: the run key as is when it is a safe key component,
    else a readable slug plus a hash of the exact key (so different keys never meet)."""
    part = run_key
    if not _SAFE_PART.match(run_key) or run_key.endswith(".json"):
        slug = re.sub(r"[^A-Za-z0-9_.=+@-]+", "-", run_key).strip("-._")[:60] or "key"
        if not slug[0].isalnum():
            slug = "k" + slug
        digest = hashlib.sha256(run_key.encode()).hexdigest()[:12]
        part = f"{slug}--{digest}"
    return join_key(ROOT, AlertKind(kind).value, part)


# ------------------------------------------------------------------------------ payloads


def webhook_payload(record: Mapping[str, Any]) -> dict[str, Any]:
    """The generic webhook's JSON body (also the record's core; identical on every retry)."""
    keys = ("alert_id", "kind", "severity", "run_key", "title", "text", "details", "created_at")
    return {"schema": SCHEMA, "source": "cosine-retrain", **{k: record[k] for k in keys}}


_SLACK_ICON = {"info": ":large_blue_circle:", "warning": ":warning:", "critical": ":red_circle:"}


def _slack_escape(value: str) -> str:
    # Slack treats & < > as markup (<!channel> would ping everyone)
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(record: Mapping[str, Any]) -> dict[str, Any]:
    """An incoming-webhook message: ``text`` (the notification fallback) and ``blocks``
    (header, the text, up to 10 scalar details as fields, a context line), within
    Slack's limits (header 150, section 3000, field 2000 characters)."""
    icon = _SLACK_ICON[record["severity"]]
    title = _clip(record["title"], 140)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title, "emoji": True}},
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": _clip(_slack_escape(record["text"]) or " ", 2900)},
        },
    ]
    fields = [
        {
            "type": "mrkdwn",
            "text": _clip(f"*{_slack_escape(k)}*\n{_slack_escape(_scalar(v))}", 1900),
        }
        for k, v in record["details"].items()
        if not isinstance(v, dict | list)
    ][:10]
    if fields:
        blocks.append({"type": "section", "fields": fields})
    context = (
        f"{icon} *{record['severity']}* · `{record['kind']}` · "
        f"{_slack_escape(record['run_key'])} · alert `{record['alert_id']}`"
    )
    blocks.append(
        {"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(context, 1900)}]}
    )
    return {"text": f"{icon} [{record['severity']}] {title}", "blocks": blocks}


def email_message(record: Mapping[str, Any], sender: str, recipients: list[str]) -> Any:
    """A plain-text e-mail; its Message-ID is derived from the alert id."""
    from email.message import EmailMessage
    from email.utils import formatdate

    msg = EmailMessage()
    msg["Subject"] = f"[cosine-retrain] [{record['severity']}] {record['title']}"
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = f"<{record['alert_id']}@cosine-retrain.alerts>"
    msg["X-Cosine-Retrain-Alert"] = f"{record['kind']} {record['alert_id']}"
    details = json.dumps(record["details"], indent=2, sort_keys=True)
    body = (
        f"{record['text']}\n\n"
        f"kind: {record['kind']}\nseverity: {record['severity']}\n"
        f"run: {record['run_key']}\nalert id: {record['alert_id']}\n"
        f"raised at: {record['created_at']}\n\ndetails:\n{details}\n"
    )
    msg.set_content(body)
    return msg


# ------------------------------------------------------------------------------ channels


class _NoRedirect:
    """urllib would turn a redirected POST into a GET: a 3xx is an answer to fix instead."""

    _opener: Any = None
    _lock = threading.Lock()

    @classmethod
    def opener(cls) -> Any:
        import urllib.request

        with cls._lock:
            if cls._opener is None:

                class Handler(urllib.request.HTTPRedirectHandler):
                    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
                        return None

                cls._opener = urllib.request.build_opener(Handler)
            return cls._opener


def _host(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float, where: str) -> _Outcome:
    """POST once. Failures before the request is sent are retryable; a missing answer
    after it was sent is ``unknown`` (the receiver may have it)."""
    import http.client
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with _NoRedirect.opener().open(request, timeout=timeout) as response:
            # the status line already said yes; a body that stalls changes nothing
            with contextlib.suppress(OSError, http.client.HTTPException):
                response.read(65536)
            return _Outcome("ok", f"HTTP {response.status}")
    except urllib.error.HTTPError as exc:
        code = exc.code
        try:
            answer = " ".join(exc.read(200).decode("utf-8", "replace").split())
        except Exception:
            answer = ""
        finally:
            exc.close()
        retryable = code in (408, 425, 429) or code >= 500
        hint = ""
        if 300 <= code < 400:
            hint = " (redirects are not followed: fix the URL)"
        elif not retryable:
            hint = " (not retried: check the URL and the receiver)"
        detail = f"{where} answered HTTP {code}" + (f" {answer!r}" if answer else "") + hint
        return _Outcome("failed", detail, retryable, _retry_after(exc.headers.get("Retry-After")))
    except urllib.error.URLError as exc:
        # raised while connecting or sending: the receiver did not get a whole request
        reason = exc.reason
        why = type(reason).__name__ if isinstance(reason, OSError) else str(reason)
        if isinstance(reason, OSError) and reason.strerror:
            why = reason.strerror
        return _Outcome("failed", f"cannot reach {where} ({why})", retryable=True)
    except TimeoutError:
        return _Outcome(
            "unknown",
            f"{where} sent no answer within {timeout:.1f} s; it may have the alert, "
            "so it is not re-sent automatically",
        )
    except (OSError, http.client.HTTPException) as exc:
        return _Outcome(
            "unknown",
            f"{where} closed the connection without an answer ({type(exc).__name__}); "
            "it may have the alert, so it is not re-sent automatically",
        )


def _send_webhook(record: Mapping[str, Any], cfg: AlertsConfig, timeout: float) -> _Outcome:
    if not cfg.webhook_url:
        return _Outcome("failed", "alerts.webhook_url is not set")
    body = json.dumps(webhook_payload(record), sort_keys=True).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "cosine-retrain-alerts/1",
        "Idempotency-Key": record["alert_id"],
        "X-Cosine-Retrain-Alert-Kind": record["kind"],
    }
    if cfg.webhook_secret is not None:
        key = cfg.webhook_secret.get_secret_value().encode()
        headers["X-Cosine-Retrain-Signature"] = (
            "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
        )
    return _post(cfg.webhook_url, body, headers, timeout, f"webhook {_host(cfg.webhook_url)}")


def _send_slack(record: Mapping[str, Any], cfg: AlertsConfig, timeout: float) -> _Outcome:
    if cfg.slack_webhook_url is None:
        return _Outcome("failed", "alerts.slack_webhook_url is not set")
    url = cfg.slack_webhook_url.get_secret_value()
    body = json.dumps(slack_payload(record)).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "cosine-retrain-alerts/1"}
    return _post(url, body, headers, timeout, f"Slack {_host(url)}")


def _send_email(record: Mapping[str, Any], cfg: AlertsConfig, timeout: float) -> _Outcome:
    import smtplib
    import ssl

    if not (cfg.smtp_host and cfg.email_from and cfg.email_to):
        return _Outcome("failed", "alerts.smtp_host, email_from and email_to must be set")
    where = f"SMTP {cfg.smtp_host}:{cfg.smtp_port}"
    msg = email_message(record, cfg.email_from, list(cfg.email_to))
    phase = "connect"
    client: Any = None
    try:
        if cfg.smtp_ssl:
            context = ssl.create_default_context()
            client = smtplib.SMTP_SSL(
                cfg.smtp_host, cfg.smtp_port, timeout=timeout, context=context
            )
        else:
            client = smtplib.SMTP(cfg.smtp_host, cfg.smtp_port, timeout=timeout)
        if cfg.smtp_starttls:
            client.starttls(context=ssl.create_default_context())
        if cfg.smtp_user is not None and cfg.smtp_password is not None:
            client.login(cfg.smtp_user, cfg.smtp_password.get_secret_value())
        phase = "send"
        refused = client.send_message(msg)
        detail = f"{where} accepted it" + (f" (refused: {sorted(refused)})" if refused else "")
        return _Outcome("ok", detail)
    except smtplib.SMTPAuthenticationError as exc:
        return _Outcome("failed", f"{where} refused the login ({exc.smtp_code}); check smtp_user")
    except smtplib.SMTPRecipientsRefused as exc:
        return _Outcome("failed", f"{where} refused every recipient {sorted(exc.recipients)}")
    except smtplib.SMTPResponseException as exc:
        message = (
            exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else ""
        )
        retryable = 400 <= exc.smtp_code < 500
        return _Outcome("failed", f"{where} answered {exc.smtp_code} {message[:120]}", retryable)
    except (OSError, smtplib.SMTPException) as exc:
        if phase == "send":
            return _Outcome(
                "unknown",
                f"{where} dropped the message transfer ({type(exc).__name__}); "
                "it may have the alert, so it is not re-sent automatically",
            )
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        return _Outcome("failed", f"cannot reach {where} ({why})", retryable=True)
    finally:
        if client is not None:
            try:
                client.quit()
            except Exception:
                client.close()


_LOG_ONLY_NOTED = threading.Event()


def _send_log(record: Mapping[str, Any], cfg: AlertsConfig, timeout: float) -> _Outcome:
    level = logging.ERROR if record["severity"] == "critical" else logging.WARNING
    log.log(
        level,
        "ALERT [%s] %s (%s %s): %s\n%s",
        record["severity"],
        record["title"],
        record["kind"],
        record["run_key"],
        record["text"],
        json.dumps(record["details"], sort_keys=True),
    )
    return _Outcome("ok", "logged")


SENDERS: dict[str, Callable[[Mapping[str, Any], Any, float], _Outcome]] = {
    "webhook": _send_webhook,
    "slack": _send_slack,
    "email": _send_email,
    "log": _send_log,
}


def _channels(cfg: AlertsConfig) -> list[str]:
    out = []
    for channel in cfg.channels:
        if channel == "webhook" and not cfg.webhook_url:
            if not _LOG_ONLY_NOTED.is_set():
                _LOG_ONLY_NOTED.set()
                log.warning(
                    "alerts.webhook_url is not set: alerts go to the log only "
                    "(set it, or COSINE_RETRAIN_ALERTS__WEBHOOK_URL)"
                )
            channel = "log"
        if channel not in out:
            out.append(channel)
    return out


# ------------------------------------------------------------------------------ records


def _now_iso(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _round_key(prefix: str, channel: str, number: int) -> str:
    return join_key(prefix, channel, f"round-{number:04d}.json")


def _result_key(prefix: str, channel: str, number: int) -> str:
    return join_key(prefix, channel, f"round-{number:04d}.result.json")


@dataclass(frozen=True)
class _ChannelState:
    status: Literal["new", "delivered", "failed", "unknown", "in_flight"]
    last_round: int
    detail: str = ""


_ROUND = re.compile(r"^round-(\d{4,})(\.result)?\.json$")


def _channel_state(
    store: ObjectStore, prefix: str, channel: str, now: float, lease_s: float
) -> _ChannelState:
    claims: set[int] = set()
    results: set[int] = set()
    for key in store.list(join_key(prefix, channel)):
        match = _ROUND.match(key.rsplit("/", 1)[-1])
        if match:
            (results if match.group(2) else claims).add(int(match.group(1)))
    if not claims:
        return _ChannelState("new", 0)
    last = max(claims)
    outcomes = {n: get_json(store, _result_key(prefix, channel, n)) for n in sorted(results)}
    if any(o.get("status") == "ok" for o in outcomes.values()):
        return _ChannelState("delivered", last, "ok")
    if last not in outcomes:
        claim = get_json(store, _round_key(prefix, channel, last))
        if now - float(claim.get("claimed_at_epoch", 0)) < lease_s:
            return _ChannelState("in_flight", last, "another sender is delivering it")
        return _ChannelState(
            "unknown", last, "a sender claimed a round and vanished without recording its outcome"
        )
    outcome = outcomes[last]
    status = "unknown" if outcome.get("status") == "unknown" else "failed"
    return _ChannelState(status, last, str(outcome.get("detail", "")))


def _describe(state: _ChannelState) -> str:
    if state.status == "delivered":
        return "ok"
    if state.status == "in_flight":
        return f"pending: {state.detail}"
    if state.status == "new":
        return "failed: never attempted"
    return f"{state.status}: {state.detail}"


# ------------------------------------------------------------------------------ delivery


def _attempts(
    channel: str, record: Mapping[str, Any], cfg: AlertsConfig, deadline: float
) -> tuple[_Outcome, int]:
    """Attempt one channel until it answers, a retry would not help, or the budget ends."""
    send = SENDERS[channel]
    outcome = _Outcome("failed", "the time budget (alerts.total_budget_s) was spent", True)
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
            outcome = _Outcome("failed", f"{channel} raised {type(exc).__name__}", True)
        if outcome.status != "failed" or not outcome.retryable:
            break
        if number == cfg.retries:
            break
        pause = cfg.backoff_s * 2**number
        if outcome.retry_after is not None:
            pause = max(pause, outcome.retry_after)
        if time.monotonic() + pause + MIN_ATTEMPT_S > deadline:
            outcome = _Outcome(
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
            state = _channel_state(store, prefix, channel, now, cfg.total_budget_s + LEASE_GRACE_S)
            if state.status in ("delivered", "in_flight"):
                return _describe(state), 0, False
            if state.status == "unknown" and not include_unknown:
                return _describe(state), 0, False
            number = state.last_round + 1
            put_json(
                store,
                _round_key(prefix, channel, number),
                {
                    "round": number,
                    "channel": channel,
                    "claimed_at": _now_iso(now),
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
                _result_key(prefix, channel, number),
                {
                    "round": number,
                    "channel": channel,
                    "status": outcome.status,
                    "detail": outcome.detail,
                    "retryable": outcome.retryable,
                    "attempts": attempts,
                    "elapsed_s": round(elapsed, 3),
                    "finished_at": _now_iso(time.time()),
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
                    "created_at": _now_iso(now),
                }
            ),
            "channels": _channels(cfg),
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


# ------------------------------------------------------------------------------ later


def _records(store: ObjectStore) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for key in store.list(ROOT):
        if key.endswith("/alert.json") and key.count("/") == 3:
            try:
                out.append((key.rsplit("/", 1)[0], get_json(store, key)))
            except (StorageError, ValueError) as exc:
                log.warning("cannot read alert record %s: %s", key, exc)
    return out


def list_alerts(
    store: ObjectStore, *, lease_s: float = 15.0 + LEASE_GRACE_S, now: float | None = None
) -> list[AlertStatus]:
    """Every recorded alert with the state of each of its channels, oldest first."""
    now = time.time() if now is None else now
    out = []
    for prefix, record in _records(store):
        states = {
            c: _channel_state(store, prefix, c, now, lease_s).status for c in record["channels"]
        }
        out.append(
            AlertStatus(
                kind=record["kind"],
                run_key=record["run_key"],
                alert_id=record["alert_id"],
                title=record["title"],
                severity=record["severity"],
                created_at=record["created_at"],
                channels=states,
                prefix=prefix,
            )
        )
    return sorted(out, key=lambda s: (s.created_at, s.prefix))


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


# ------------------------------------------------------------------------------ helpers


def _clip(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _scalar(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _json_safe(value: Any, key: str = "") -> Any:
    """JSON-able, strict (no NaN), secret-looking keys masked; numpy scalars unwrapped."""
    if key and _SECRET_KEY.search(key):
        return "***"
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        return [_json_safe(v) for v in items]
    if hasattr(value, "get_secret_value"):
        return "***"
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        try:
            return _json_safe(value.item(), key)
        except (TypeError, ValueError):
            pass
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)
