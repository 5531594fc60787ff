"""What a DAG run was asked to do: asset events, params and the run type, resolved.

Airflow hands a task the asset events that triggered its run (every event since
the DAG's last asset-triggered run; STACK_NOTES 1.2), its params and its run
type. The rules that turn those into a request live here, not in the DAG files:

- the trigger: the ``trigger`` param, else the newest event's ``trigger``
  (``drift`` when it names none), else ``manual`` for a manually started run and
  ``scheduled`` for a cron tick;
- the reasons: every event's ``reason`` (requests close together coalesce into
  one run), then the ``reason`` param;
- the batch: the ``batch_id`` param, else the newest event's;
- the batches of a run over several (the drift monitor, the canary review): every
  event's, in batch order (:func:`event_batches`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pipeline.base.kinds import TRIGGERS
from pipeline.flow.records import RetrainRequest

__all__ = ["Event", "event_batches", "events_from_airflow", "newest_extra", "resolve_request"]


@dataclass(frozen=True)
class Event:
    """One asset event as the flow needs it: what it carries, and when it came."""

    extra: Mapping[str, Any] = field(default_factory=dict)
    timestamp: datetime | None = None


def events_from_airflow(triggering_asset_events: Any) -> list[Event]:
    """Airflow's ``triggering_asset_events`` (asset -> events) as a flat list, oldest first."""
    events = [
        Event(dict(getattr(e, "extra", None) or {}), getattr(e, "timestamp", None))
        for evs in (triggering_asset_events or {}).values()
        for e in evs
    ]
    # events without a time (a test double) keep their order, before timed ones
    return sorted(events, key=lambda e: (e.timestamp is not None, e.timestamp or datetime.min))


def event_batches(events: Iterable[Event]) -> list[str]:
    """Every batch id the events name (``extra["batch_id"]``, or the landing zone's
    ``extra["batch_ids"]``), once each, in batch order (batch ids sort in time order):
    what a run that consumed them processes."""
    found: set[str] = set()
    for e in events:
        if e.extra.get("batch_id"):
            found.add(str(e.extra["batch_id"]))
        found.update(str(b) for b in e.extra.get("batch_ids") or [])
    return sorted(found)


def newest_extra(events: Iterable[Event], key: str) -> Any:
    """``extra[key]`` of the newest event that has it, else None."""
    found = [e for e in events if key in e.extra]
    return found[-1].extra[key] if found else None


def resolve_request(
    events: list[Event],
    *,
    trigger: str | None = None,
    reason: str | None = None,
    run_type: str = "manual",
) -> RetrainRequest:
    """The retrain request of one run of the retrain DAG (see the module docstring)."""
    reasons = [str(e.extra["reason"]) for e in events if e.extra.get("reason")]
    if reason:
        reasons.append(reason)
    if trigger:
        chosen = trigger
    elif events:
        chosen = str(events[-1].extra.get("trigger") or "drift")
    else:
        chosen = "manual" if "manual" in run_type.lower() else "scheduled"
    if chosen not in TRIGGERS:
        raise ValueError(f"retrain trigger must be one of {list(TRIGGERS)}, got {chosen!r}")
    return RetrainRequest(trigger=chosen, reasons=reasons)  # type: ignore[arg-type]
