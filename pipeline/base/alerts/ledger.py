"""The delivery ledger in the object store: one record per alert, rounds per channel.

    alerts/<kind>/<run_key>/alert.json                          the alert (create-if-absent)
    alerts/<kind>/<run_key>/<channel>/round-NNNN.json           a claimed delivery round
    alerts/<kind>/<run_key>/<channel>/round-NNNN.result.json    its outcome

A channel with an ``ok`` round has the alert; a claimed round without a result is
``in_flight`` while its lease runs, ``unknown`` after (its sender vanished).
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pipeline.base.alerts.model import AlertKind, AlertStatus
from pipeline.base.store import ObjectStore, StorageError, get_json, join_key

__all__ = ["LEASE_GRACE_S", "ROOT", "ChannelState", "alert_prefix", "list_alerts"]

log = logging.getLogger(__name__)

ROOT = "alerts"
LEASE_GRACE_S = 60.0  # a round claimed longer ago than budget + this, without a result: sender gone

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


def now_iso(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def round_key(prefix: str, channel: str, number: int) -> str:
    return join_key(prefix, channel, f"round-{number:04d}.json")


def result_key(prefix: str, channel: str, number: int) -> str:
    return join_key(prefix, channel, f"round-{number:04d}.result.json")


@dataclass(frozen=True)
class ChannelState:
    status: Literal["new", "delivered", "failed", "unknown", "in_flight"]
    last_round: int
    detail: str = ""


_ROUND = re.compile(r"^round-(\d{4,})(\.result)?\.json$")


def channel_state(
    store: ObjectStore, prefix: str, channel: str, now: float, lease_s: float
) -> ChannelState:
    claims: set[int] = set()
    results: set[int] = set()
    for key in store.list(join_key(prefix, channel)):
        match = _ROUND.match(key.rsplit("/", 1)[-1])
        if match:
            (results if match.group(2) else claims).add(int(match.group(1)))
    if not claims:
        return ChannelState("new", 0)
    last = max(claims)
    outcomes = {n: get_json(store, result_key(prefix, channel, n)) for n in sorted(results)}
    if any(o.get("status") == "ok" for o in outcomes.values()):
        return ChannelState("delivered", last, "ok")
    if last not in outcomes:
        claim = get_json(store, round_key(prefix, channel, last))
        if now - float(claim.get("claimed_at_epoch", 0)) < lease_s:
            return ChannelState("in_flight", last, "another sender is delivering it")
        return ChannelState(
            "unknown", last, "a sender claimed a round and vanished without recording its outcome"
        )
    outcome = outcomes[last]
    status = "unknown" if outcome.get("status") == "unknown" else "failed"
    return ChannelState(status, last, str(outcome.get("detail", "")))


def describe_result(state: ChannelState) -> str:
    if state.status == "delivered":
        return "ok"
    if state.status == "in_flight":
        return f"pending: {state.detail}"
    if state.status == "new":
        return "failed: never attempted"
    return f"{state.status}: {state.detail}"


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
            c: channel_state(store, prefix, c, now, lease_s).status for c in record["channels"]
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
