"""The drift monitor: validate -> drift -> score -> decide, for one batch."""

from __future__ import annotations

import logging

from pipeline.base.alerts import AlertKind, raise_alert
from pipeline.base.kinds import Trigger
from pipeline.base.layout import (
    BatchNotFound,
    BatchRef,
    committed_versions,
    landed_batches,
    resolve_batch,
)
from pipeline.base.ledger import DRIFT_CHECKED, QUARANTINED, SCORED, VALIDATED, record_step
from pipeline.base.spark import read_batch_with
from pipeline.flow.env import Env
from pipeline.flow.records import Decision, DriftOutcome
from pipeline.steps.canary.routing import ScoringSummary, score_batch
from pipeline.steps.ops.spend import check_spend
from pipeline.steps.quality.decision import decide_retrain
from pipeline.steps.quality.drift import DriftSummary, check_drift
from pipeline.steps.quality.release import Release, release_batch
from pipeline.steps.quality.validation import ValidationFailed, ValidationSummary, validate_batch
from pipeline.steps.registry.aliases import CHAMPION, actor, current_alias
from pipeline.steps.registry.audit import check_aliases

__all__ = [
    "CHAMPION_REFERENCE",
    "champion_reference",
    "decide",
    "drift",
    "newest_batch",
    "retrain_request",
    "revalidate",
    "score",
    "validate",
]

log = logging.getLogger(__name__)

# the string that means "the champion's reference snapshot" where a reference is asked for
CHAMPION_REFERENCE = "champion"


def champion_reference(env: Env) -> str | None:
    """The reference snapshot stored with the champion (its training sample)."""
    champion = current_alias(env.client, env.model, CHAMPION)
    if champion is None:
        return None
    return env.client.get_model_version(env.model, champion).tags.get("lineage.reference_snapshot")


def _reference(env: Env, reference: str | None) -> str | None:
    return champion_reference(env) if reference == CHAMPION_REFERENCE else reference


def validate(
    env: Env,
    batch_id: str,
    *,
    version: int | None = None,
    reference: str | None = CHAMPION_REFERENCE,
    alert: bool = True,
) -> ValidationSummary:
    """The steps' :class:`~pipeline.steps.quality.validation.ValidationSummary` of the spec's
    Great Expectations suite on the batch. A failure quarantines the batch, sends a
    ``validation_failed`` alert (unless ``alert`` is false) and raises
    :class:`~pipeline.steps.quality.validation.ValidationFailed` (nothing downstream runs).

    ``reference``: the snapshot whose categories the unseen-category checks use
    (default: the champion's; None skips those checks).
    """
    ref = resolve_batch(env.store, env.dataset, batch_id, version)
    try:
        summary = validate_batch(
            env.store,
            env.spec,
            ref,
            reference_id=_reference(env, reference),
            config=env.config.validation,
            data=env.config.data,
        )
    except ValidationFailed as exc:
        failed_line = f"{len(exc.summary.failed)} of {exc.summary.evaluated} expectations failed"
        record_step(
            env.store, env.dataset, batch_id, QUARANTINED, version=ref.version, detail=failed_line
        )
        if alert:
            failed = [f"{f.expectation} {f.column or ''}".strip() for f in exc.summary.failed]
            raise_alert(
                env.config,
                env.store,
                AlertKind.VALIDATION,
                f"{env.dataset}-{batch_id}-v{ref.version}",
                f"batch {batch_id} failed validation and was quarantined",
                str(exc)[:3000],
                {"batch": batch_id, "version": ref.version, "failed": failed},
            )
        raise
    detail = f"{summary.passed} of {summary.evaluated} expectations on {summary.rows} rows"
    record_step(env.store, env.dataset, batch_id, VALIDATED, version=ref.version, detail=detail)
    return summary


def revalidate(
    env: Env,
    batch_id: str,
    *,
    version: int | None = None,
    reference: str | None = CHAMPION_REFERENCE,
    who: str | None = None,
    new_version: bool = False,
) -> Release:
    """Re-check a quarantined version of the batch (default: the newest quarantined one)
    against the current spec; when it passes, release it as the batch's next version and
    store that version's validation report. The steps'
    :class:`~pipeline.steps.quality.release.Release`; a batch that still fails raises
    :class:`~pipeline.steps.quality.release.StillRefused` (a ValidationFailed) and stays
    quarantined. ``who``: default :func:`~pipeline.steps.registry.aliases.actor`."""
    held = committed_versions(env.store, env.dataset, batch_id, "quarantine")
    if version is None:
        if not held:
            raise BatchNotFound(
                f"batch {env.dataset}/{batch_id} has no quarantined version; nothing to "
                "revalidate (python -m pipeline batches lists them)"
            )
        version = held[-1]
    release = release_batch(
        env.store,
        env.spec,
        BatchRef(env.dataset, batch_id, version),
        who=who or actor(),
        reference_id=_reference(env, reference),
        config=env.config.validation,
        new_version=new_version,
    )
    if release.status == "released":
        validate(env, batch_id, version=release.released.version, reference=reference, alert=False)
    return release


def drift_summary(
    env: Env, batch_id: str, *, version: int | None = None, reference: str | None = None
) -> DriftSummary | None:
    """The steps' :class:`~pipeline.steps.quality.drift.DriftSummary` of the batch against
    ``reference`` (default: the champion's), or None when there is no reference."""
    snapshot = reference if reference is not None else champion_reference(env)
    if snapshot is None:
        return None
    ref = resolve_batch(env.store, env.dataset, batch_id, version)
    return check_drift(
        env.store, env.spec, ref, snapshot, config=env.config.drift, data=env.config.data
    )


def drift(env: Env, batch_id: str, *, alert: bool = True) -> DriftOutcome:
    """Evidently drift of the batch against the champion's reference snapshot (recorded
    in the ledger, also when there is no champion to measure against yet)."""
    summary = drift_summary(env, batch_id)
    if summary is None:
        version = resolve_batch(env.store, env.dataset, batch_id).version
        record_step(
            env.store, env.dataset, batch_id, DRIFT_CHECKED, version=version,
            detail="not measured: no champion yet",
        )  # fmt: skip
        return DriftOutcome(batch_id=batch_id, checked=False, reason="no champion yet")
    record_step(
        env.store, env.dataset, batch_id, DRIFT_CHECKED, version=summary.ref.version,
        detail=f"{summary.drift_share:.0%} of columns against {summary.reference_id}",
    )  # fmt: skip
    if summary.drifted and alert:
        raise_alert(
            env.config,
            env.store,
            AlertKind.DRIFT,
            f"{env.dataset}-{batch_id}-v{summary.ref.version}-{summary.reference_id}",
            f"batch {batch_id} drifted from reference {summary.reference_id}",
            "\n".join(
                [
                    f"{summary.drift_share:.0%} of columns drifted: "
                    f"{', '.join(summary.drifted_columns)}",
                    *(f"null share moved: {n.line()}" for n in summary.null_shifts),
                ]
            ),
            {"batch": batch_id, "share": summary.drift_share, "report": summary.report_uri},
        )
    return DriftOutcome(
        batch_id=batch_id,
        checked=True,
        version=summary.ref.version,
        reference=summary.reference_id,
        drift_share=round(summary.drift_share, 4),
        threshold=summary.share_threshold,
        drifted=summary.drifted,
        drifted_columns=list(summary.drifted_columns),
        value_drifted=[c.column for c in summary.columns if c.drifted],
        null_shifts=[shift.line() for shift in summary.null_shifts],
        skipped=list(summary.skipped),
        report_uri=summary.report_uri,
        summary_uri=summary.summary_uri,
        sampled=summary.sampled,
        reused=summary.reused,
    )


def score(env: Env, batch_id: str) -> ScoringSummary:
    """Champion and canary score the batch (routing by a stable hash of the row id), once
    the registry's aliases are checked against the audit trail."""
    check_aliases(env.client, env.store, env.config, env.model)
    ref = resolve_batch(env.store, env.dataset, batch_id)
    features = read_batch_with(env.store, ref, env.config.data)  # pandas, or Spark's
    summary = score_batch(
        env.client, env.store, env.config, env.spec, env.model, batch_id, features
    )
    record_step(
        env.store, env.dataset, batch_id, SCORED, version=ref.version, detail=summary.describe()
    )
    return summary


def retrain_request(env: Env, trigger: Trigger, reason: str, batch_id: str) -> Decision:
    """A retrain request for ``trigger``, unless the monthly budget pauses it."""
    _, spend = check_spend(
        trigger, env.config, client=env.client, experiment=env.experiment, store=env.store
    )
    if not spend.allowed:
        return Decision(retrain=False, trigger=trigger, reason=spend.reason, batch_id=batch_id)
    return Decision(retrain=True, trigger=trigger, reason=reason, batch_id=batch_id)


def decide(env: Env, batch_id: str, drift_outcome: DriftOutcome) -> Decision:
    """Request a retrain when the batch drifted (or there is no champion yet): the one
    decision (:func:`pipeline.steps.quality.decision.decide_retrain`) on the stored summary."""
    if not drift_outcome.checked:
        has_champion = current_alias(env.client, env.model, CHAMPION) is not None
        if has_champion:
            return Decision(
                retrain=False, trigger=None, reason=drift_outcome.reason, batch_id=batch_id
            )
        decision = decide_retrain(champion=False)
    else:
        summary = drift_summary(
            env, batch_id, version=drift_outcome.version, reference=drift_outcome.reference
        )
        decision = decide_retrain(summary)
    if decision.retrain:
        return retrain_request(env, decision.trigger or "drift", decision.reason, batch_id)
    return Decision(retrain=False, trigger=None, reason=decision.reason, batch_id=batch_id)


def newest_batch(env: Env) -> str:
    """The newest batch id with committed features (the scheduled monitor's default)."""
    landed = landed_batches(env.store, env.dataset)
    if not landed:
        raise ValueError(f"no batch of {env.dataset} has landed yet (run the ingest DAG)")
    return landed[-1]
