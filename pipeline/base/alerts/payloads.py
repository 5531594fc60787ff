"""What each channel receives: the webhook's JSON, a Slack message, an e-mail."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pipeline.base.alerts.model import SCHEMA, clip, scalar

__all__ = ["email_message", "slack_payload", "webhook_payload"]


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
    title = clip(record["title"], 140)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title, "emoji": True}},
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": clip(_slack_escape(record["text"]) or " ", 2900)},
        },
    ]
    fields = [
        {
            "type": "mrkdwn",
            "text": clip(f"*{_slack_escape(k)}*\n{_slack_escape(scalar(v))}", 1900),
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
        {"type": "context", "elements": [{"type": "mrkdwn", "text": clip(context, 1900)}]}
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
