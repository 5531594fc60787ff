"""A run over every batch it was asked about: which batches, and each step over them.

A drift monitor run may consume several ``batch_landed`` events (a backfill, or
batches that landed while a run was active), and a canary review several
``labels_landed`` events. The run processes every batch they name, in batch order
(batch ids sort in time order), one after the other inside each step: the steps are
order-dependent (a fresh canary's shadow phase is its first scored batches; the
canary's sequential evidence adds batches in time order), so the order is fixed
here rather than left to the order in which Airflow starts mapped task instances.

The drift monitor also catches up: every landed batch whose newest version misses a
monitor step in the ledger (:mod:`pipeline.base.ledger`) joins the run, so a batch
whose event never reached the monitor (a crash, a lost queue row, a hand-copied
file) is validated, drift-checked and scored by the next run, cron or event. The
canary review catches up the same way: every labelled batch whose newest labels
version has no ``reviewed`` entry (recorded once its quality check and its review
both ran) joins the next review run (:func:`review_batches`).
"""

from __future__ import annotations

import logging

from pipeline.base.layout import (
    BatchNotFound,
    committed_versions,
    labelled_batches,
    landed_batches,
)
from pipeline.base.ledger import REVIEWED, VALIDATED, missing_steps, read_ledger
from pipeline.flow.env import Env
from pipeline.flow.monitor import decide, drift, newest_batch, score, validate
from pipeline.flow.records import Decision, DriftOutcome, Record
from pipeline.flow.triggers import Event, event_batches
from pipeline.steps.canary.routing import ScoringSummary
from pipeline.steps.quality.validation import ValidationFailed, ValidationSummary

__all__ = [
    "BatchValidation",
    "decide_all",
    "drift_each",
    "monitor_batches",
    "pending_batches",
    "review_batches",
    "score_each",
    "trainable_batches",
    "unreviewed_batches",
    "validate_each",
]

log = logging.getLogger(__name__)


class BatchValidation(Record):
    """One batch's validation in a run over several: its summary, or why it was
    refused (quarantined, or no valid version to check); a refused batch goes no
    further in this run."""

    batch_id: str
    summary: ValidationSummary | None = None
    refused: str | None = None


def pending_batches(env: Env) -> list[str]:
    """Landed batches whose newest version misses a drift monitor step in the ledger
    (validated, drift_checked, scored), in batch order."""
    ledger = read_ledger(env.store, env.dataset)
    out = []
    for batch in landed_batches(env.store, env.dataset):
        newest = committed_versions(env.store, env.dataset, batch)[-1]
        missing = missing_steps(ledger.get(batch), newest)
        if missing:
            log.info("batch %s v%d: %s not recorded yet", batch, newest, ", ".join(missing))
            out.append(batch)
    return out


def monitor_batches(env: Env, events: list[Event], batch_id: str | None = None) -> list[str]:
    """The batches one drift monitor run checks, in batch order: ``batch_id`` alone when
    a person names one; else every batch the run's events name together with every
    pending batch (the catch-up); else, a cron tick with nothing pending, the newest
    landed batch (checked again: its reports are reused)."""
    if batch_id:
        return [batch_id]
    batches = sorted(set(event_batches(events)) | set(pending_batches(env)))
    return batches or [newest_batch(env)]


def unreviewed_batches(env: Env) -> list[str]:
    """Labelled batches whose newest labels version has no ``reviewed`` entry in the
    ledger (its quality check and review never both ran: a missed ``labels_received``
    event, a review run that failed or was killed), in batch order."""
    ledger = read_ledger(env.store, env.dataset)
    out = []
    for batch in labelled_batches(env.store, env.dataset):
        newest = committed_versions(env.store, env.dataset, batch, "labels")[-1]
        state = ledger.get(batch)
        if state is None or not state.done(REVIEWED, newest):
            log.info("batch %s labels v%d: not reviewed yet", batch, newest)
            out.append(batch)
    return out


def review_batches(env: Env, events: list[Event], batch_id: str | None = None) -> list[str]:
    """The labelled batches one canary review run checks, in batch order: ``batch_id``
    alone when a person names one; else every batch the run's events name together with
    every labelled batch not reviewed yet (the catch-up). Empty: nothing to review."""
    if batch_id:
        return [batch_id]
    return sorted(set(event_batches(events)) | set(unreviewed_batches(env)))


def validate_each(env: Env, batch_ids: list[str]) -> list[BatchValidation]:
    """:func:`~pipeline.flow.monitor.validate` of each batch in turn; a batch that fails
    is quarantined (and alerted on) and the others go on."""
    out = []
    for batch in batch_ids:
        try:
            out.append(BatchValidation(batch_id=batch, summary=validate(env, batch)))
        except (ValidationFailed, BatchNotFound) as exc:
            log.warning("batch %s refused: %s", batch, exc)
            out.append(BatchValidation(batch_id=batch, refused=str(exc)))
    return out


def _passed(validated: list[BatchValidation]) -> list[str]:
    return [v.batch_id for v in validated if v.refused is None]


def drift_each(env: Env, validated: list[BatchValidation]) -> list[DriftOutcome]:
    """Drift of each batch that passed validation, in batch order."""
    return [drift(env, batch) for batch in _passed(validated)]


def score_each(env: Env, validated: list[BatchValidation]) -> list[ScoringSummary]:
    """Scoring of each batch that passed validation, in batch order."""
    return [score(env, batch) for batch in _passed(validated)]


def decide_all(env: Env, validated: list[BatchValidation], drifted: list[DriftOutcome]) -> Decision:
    """One decision for the run: each batch's (:func:`~pipeline.flow.monitor.decide`),
    and a retrain when any of them asks for one, for the reasons of every batch that
    asked (the request names the newest of them). One batch: its decision as is."""
    if not drifted:
        reason = "no batch of this run passed validation: nothing to decide on"
        batch = validated[-1].batch_id if validated else ""
        return Decision(retrain=False, trigger=None, reason=reason, batch_id=batch)
    decisions = [decide(env, d.batch_id, d) for d in drifted]
    if len(decisions) == 1:
        return decisions[0]
    asking = [d for d in decisions if d.retrain]
    if not asking:
        reasons = "; ".join(f"{d.batch_id}: {d.reason}" for d in decisions)
        return Decision(retrain=False, trigger=None, reason=reasons, batch_id=drifted[-1].batch_id)
    return Decision(
        retrain=True,
        trigger=asking[0].trigger,
        reason="; ".join(f"{d.batch_id}: {d.reason}" for d in asking),
        batch_id=asking[-1].batch_id,
    )


def trainable_batches(env: Env, *, until: str | None = None) -> tuple[list[str], dict[str, str]]:
    """The labelled batches (up to ``until``) whose newest features version passed
    validation (the ledger says so), in batch order; and every other labelled batch
    with why it cannot be trained on (quarantined, or not validated yet)."""
    ledger = read_ledger(env.store, env.dataset)
    ok: list[str] = []
    why: dict[str, str] = {}
    for batch in labelled_batches(env.store, env.dataset):
        if until is not None and batch > until:
            continue
        versions = committed_versions(env.store, env.dataset, batch)
        if not versions:
            held = committed_versions(env.store, env.dataset, batch, "quarantine")
            why[batch] = (
                f"quarantined: v{held[-1]} failed validation" if held else "no features landed"
            )
            continue
        state = ledger.get(batch)
        if state is not None and state.done(VALIDATED, versions[-1]):
            ok.append(batch)
        else:
            why[batch] = f"v{versions[-1]} not validated yet (the drift monitor catches it up)"
    return ok, why
