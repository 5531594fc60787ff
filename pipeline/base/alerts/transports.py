"""One attempt on one channel: POST a webhook or a Slack message, send an e-mail, log.

Each returns an :class:`Outcome`: ``ok``; ``failed`` (``retryable`` when a retry may
help: a refused connection, 408/425/429/5xx); or ``unknown`` (the request went out,
no answer came back: the receiver may have the alert, so it is not re-sent
automatically). Secrets never appear in an outcome: URLs are shown by host only.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from pipeline.base.alerts.payloads import email_message, slack_payload, webhook_payload

if TYPE_CHECKING:
    from pipeline.base.sections import AlertsConfig

__all__ = ["SENDERS", "Outcome", "channels_for"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    status: Literal["ok", "failed", "unknown"]
    detail: str
    retryable: bool = False
    retry_after: float | None = None


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


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float, where: str) -> Outcome:
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
            return Outcome("ok", f"HTTP {response.status}")
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
        return Outcome("failed", detail, retryable, _retry_after(exc.headers.get("Retry-After")))
    except urllib.error.URLError as exc:
        # raised while connecting or sending: the receiver did not get a whole request
        reason = exc.reason
        why = type(reason).__name__ if isinstance(reason, OSError) else str(reason)
        if isinstance(reason, OSError) and reason.strerror:
            why = reason.strerror
        return Outcome("failed", f"cannot reach {where} ({why})", retryable=True)
    except TimeoutError:
        return Outcome(
            "unknown",
            f"{where} sent no answer within {timeout:.1f} s; it may have the alert, "
            "so it is not re-sent automatically",
        )
    except (OSError, http.client.HTTPException) as exc:
        return Outcome(
            "unknown",
            f"{where} closed the connection without an answer ({type(exc).__name__}); "
            "it may have the alert, so it is not re-sent automatically",
        )


def _send_webhook(record: Mapping[str, Any], cfg: AlertsConfig, timeout: float) -> Outcome:
    if not cfg.webhook_url:
        return Outcome("failed", "alerts.webhook_url is not set")
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


def _send_slack(record: Mapping[str, Any], cfg: AlertsConfig, timeout: float) -> Outcome:
    if cfg.slack_webhook_url is None:
        return Outcome("failed", "alerts.slack_webhook_url is not set")
    url = cfg.slack_webhook_url.get_secret_value()
    body = json.dumps(slack_payload(record)).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "cosine-retrain-alerts/1"}
    return _post(url, body, headers, timeout, f"Slack {_host(url)}")


def _send_email(record: Mapping[str, Any], cfg: AlertsConfig, timeout: float) -> Outcome:
    import smtplib
    import ssl

    if not (cfg.smtp_host and cfg.email_from and cfg.email_to):
        return Outcome("failed", "alerts.smtp_host, email_from and email_to must be set")
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
        return Outcome("ok", detail)
    except smtplib.SMTPAuthenticationError as exc:
        return Outcome("failed", f"{where} refused the login ({exc.smtp_code}); check smtp_user")
    except smtplib.SMTPRecipientsRefused as exc:
        return Outcome("failed", f"{where} refused every recipient {sorted(exc.recipients)}")
    except smtplib.SMTPResponseException as exc:
        message = (
            exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else ""
        )
        retryable = 400 <= exc.smtp_code < 500
        return Outcome("failed", f"{where} answered {exc.smtp_code} {message[:120]}", retryable)
    except (OSError, smtplib.SMTPException) as exc:
        if phase == "send":
            return Outcome(
                "unknown",
                f"{where} dropped the message transfer ({type(exc).__name__}); "
                "it may have the alert, so it is not re-sent automatically",
            )
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        return Outcome("failed", f"cannot reach {where} ({why})", retryable=True)
    finally:
        if client is not None:
            try:
                client.quit()
            except Exception:
                client.close()


_LOG_ONLY_NOTED = threading.Event()


def _send_log(record: Mapping[str, Any], cfg: AlertsConfig, timeout: float) -> Outcome:
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
    return Outcome("ok", "logged")


SENDERS: dict[str, Callable[[Mapping[str, Any], Any, float], Outcome]] = {
    "webhook": _send_webhook,
    "slack": _send_slack,
    "email": _send_email,
    "log": _send_log,
}


def channels_for(cfg: AlertsConfig) -> list[str]:
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
