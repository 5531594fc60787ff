"""The per-batch ledger: what has happened to each batch, one small object per step.

A batch goes through the pipeline in steps, each done by a different DAG run (and
possibly by a run that consumed several batches' events at once)::

    landed -> validated | quarantined -> drift_checked -> scored       (drift_monitor)
    labels_received -> reviewed                                          (canary_review)

Each step, once done, writes its entry under its own key::

    ledger/<dataset>/<batch>/<step>.json    {"step", "version", "at", "detail"}

One object per (batch, step), overwritten whole by the step's newest run: a write is
atomic in both stores (:mod:`pipeline.base.store`), and two tasks recording different
steps of one batch at once never race on a shared file. The entry names the batch
version it was done for, so a corrected version (``v2``) is not done until its own
entry says so. The ledger is a record for people (``pipeline batches``) and for the
drift monitor's catch-up (:func:`missing_steps`): what the store itself holds (the
committed versions) stays the truth about which batches exist.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from pipeline.base.store import ObjectStore, check_id, get_json, join_key, put_json

__all__ = [
    "DRIFT_CHECKED",
    "LABELS_RECEIVED",
    "LANDED",
    "MONITOR_STEPS",
    "QUARANTINED",
    "REVIEWED",
    "SCORED",
    "STEPS",
    "VALIDATED",
    "BatchState",
    "LedgerEntry",
    "ledger_key",
    "missing_steps",
    "read_ledger",
    "record_step",
]

LANDED = "landed"
VALIDATED = "validated"
QUARANTINED = "quarantined"
DRIFT_CHECKED = "drift_checked"
SCORED = "scored"
LABELS_RECEIVED = "labels_received"
REVIEWED = "reviewed"
STEPS = (LANDED, VALIDATED, QUARANTINED, DRIFT_CHECKED, SCORED, LABELS_RECEIVED, REVIEWED)
# what the drift monitor does to every landed batch version (quarantined ends it early)
MONITOR_STEPS = (VALIDATED, DRIFT_CHECKED, SCORED)


@dataclass(frozen=True)
class LedgerEntry:
    """One step done for one batch version: when, and a line about the outcome."""

    step: str
    version: int | None
    at: str
    detail: str = ""


@dataclass(frozen=True)
class BatchState:
    """Every step recorded for one batch (its newest entry per step)."""

    batch_id: str
    entries: dict[str, LedgerEntry] = field(default_factory=dict)

    def done(self, step: str, version: int | None = None) -> bool:
        """Whether ``step`` was recorded (for ``version``, when given)."""
        entry = self.entries.get(step)
        return entry is not None and (version is None or entry.version == version)

    def line(self) -> str:
        """The steps in pipeline order, each with its version: ``landed v1, validated v1``."""
        parts = []
        for step in STEPS:
            entry = self.entries.get(step)
            if entry is not None:
                parts.append(step + (f" v{entry.version}" if entry.version is not None else ""))
        return ", ".join(parts) or "nothing recorded"


def _prefix(dataset: str) -> str:
    return join_key("ledger", check_id(dataset, "dataset name"))


def ledger_key(dataset: str, batch_id: str, step: str) -> str:
    if step not in STEPS:
        raise ValueError(f"ledger step must be one of {STEPS}, got {step!r}")
    return join_key(_prefix(dataset), check_id(batch_id, "batch id"), f"{step}.json")


def record_step(
    store: ObjectStore,
    dataset: str,
    batch_id: str,
    step: str,
    *,
    version: int | None = None,
    detail: str = "",
) -> LedgerEntry:
    """Record that ``step`` was done for the batch (its newest run's entry replaces the
    one before, in one atomic write)."""
    entry = LedgerEntry(step, version, dt.datetime.now(dt.UTC).isoformat(), detail[:500])
    value = {"step": step, "version": version, "at": entry.at, "detail": entry.detail}
    put_json(store, ledger_key(dataset, batch_id, step), value, overwrite=True)
    return entry


def read_ledger(store: ObjectStore, dataset: str) -> dict[str, BatchState]:
    """Batch id -> its recorded steps, for every batch with an entry, in batch order."""
    prefix = _prefix(dataset)
    found: dict[str, dict[str, LedgerEntry]] = {}
    for key in store.list(prefix):
        batch, _, name = key[len(prefix) + 1 :].partition("/")
        step = name.removesuffix(".json")
        if step not in STEPS or "/" in name:
            continue
        value = get_json(store, key)
        version = value.get("version")
        found.setdefault(batch, {})[step] = LedgerEntry(
            step, None if version is None else int(version), str(value["at"]), value["detail"]
        )
    return {b: BatchState(b, found[b]) for b in sorted(found)}


def missing_steps(state: BatchState | None, version: int) -> list[str]:
    """The drift monitor's steps not yet recorded for this landed batch version."""
    if state is None:
        return list(MONITOR_STEPS)
    return [s for s in MONITOR_STEPS if not state.done(s, version)]
