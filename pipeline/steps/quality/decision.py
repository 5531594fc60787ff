"""The retrain decision: drift and live quality combined, always with its reason.

One implementation for every entrance (the drift monitor's ``decide`` task, the
canary review's quality check, ``python -m pipeline drift|quality|check``).
Thresholds were applied when the summaries were made (from the config); this
only combines them, and says why also when the answer is no.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from pipeline.steps.quality.drift import DriftSummary
from pipeline.steps.quality.live import QualitySummary

__all__ = ["NO_CHAMPION", "RetrainDecision", "decide_retrain"]

NO_CHAMPION = "no champion yet: train the first one"


@dataclass(frozen=True)
class RetrainDecision:
    """Whether to request a retrain, and why (always a reason, also for "no")."""

    retrain: bool
    triggers: tuple[str, ...]  # "drift", "quality"
    reason: str
    batch: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "triggers": list(self.triggers)}

    @property
    def trigger(self) -> str | None:
        """The first trigger (what the retrain request is filed under), or None."""
        return self.triggers[0] if self.triggers else None


def decide_retrain(
    drift: DriftSummary | None = None,
    quality: QualitySummary | None = None,
    *,
    champion: bool = True,
) -> RetrainDecision:
    """Request a retrain when the batch drifted or live quality fell below its SLO.

    Thresholds were applied when the summaries were made (from the config);
    this only combines them, and always says why. ``champion=False`` (no model serves
    yet, so nothing was compared): retrain, to train the first one.
    """
    if not champion:
        batch = str(drift.ref) if drift is not None else None
        return RetrainDecision(True, ("drift",), NO_CHAMPION, batch)
    triggers, reasons, calm = [], [], []
    batch = None
    if drift is not None:
        batch = str(drift.ref)
        if drift.drifted:
            triggers.append("drift")
            reasons.append(_drift_reason(drift))
        else:
            calm.append(
                f"drift share {drift.drift_share:.0%} < {drift.share_threshold:.0%} "
                f"against {drift.reference_id}"
            )
    if quality is not None:
        batch = batch or f"{quality.dataset}/{quality.batch_id}"
        if quality.below_slo:
            triggers.append("quality")
            reasons.append(
                f"live quality: {quality.metric} {quality.value:.3f} of model "
                f"{quality.model_version} on {quality.rows:,} labelled rows is below the SLO "
                f"{quality.slo:g}"
            )
        elif quality.value is None or not quality.enough_rows:
            calm.append(f"live quality: no verdict ({quality.note})")
        else:
            calm.append(f"live {quality.metric} {quality.value:.3f} >= SLO {quality.slo:g}")
    if drift is None and quality is None:
        return RetrainDecision(False, (), "nothing to decide on: no drift check, no live quality")
    if triggers:
        return RetrainDecision(True, tuple(triggers), "; ".join(reasons), batch)
    return RetrainDecision(False, (), "no retrain: " + "; ".join(calm), batch)


def _drift_reason(drift: DriftSummary) -> str:
    """Why a drifted batch drifted: the share of drifted values, the moved null shares."""
    parts = []
    if drift.drift_share >= drift.share_threshold:
        by_value = [c.column for c in drift.columns if c.drifted]
        shown = ", ".join(by_value[:6])
        more = f" and {len(by_value) - 6} more" if len(by_value) > 6 else ""
        parts.append(
            f"drift: {len(by_value)} of {len(drift.columns)} columns drifted "
            f"({drift.drift_share:.0%} >= {drift.share_threshold:.0%}) against reference "
            f"{drift.reference_id}: {shown}{more}"
        )
    if drift.null_shifts:
        shifts = ", ".join(
            f"{n.column} {n.reference_share:.0%} -> {n.current_share:.0%}"
            for n in drift.null_shifts
        )
        parts.append(
            f"drift: the null share moved by more than {drift.null_shifts[0].threshold:.0%} "
            f"against reference {drift.reference_id} in {shifts}"
        )
    return "; ".join(parts)
