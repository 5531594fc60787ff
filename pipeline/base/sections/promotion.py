"""From candidate to champion: live quality, the gate, the canary."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from pipeline.base.sections.common import Fraction, Section, Share

__all__ = ["CanaryConfig", "GateConfig", "QualityConfig"]


class QualityConfig(Section):
    """Live quality of the champion on newly labelled rows (the label-side trigger)."""

    metric: Literal["auc"] = Field("auc", description="ROC AUC of the stored scores")
    slo: float = Field(0.65, gt=0.0, le=1.0, description="retrain when live AUC falls below")
    min_rows: int = Field(
        500, ge=1, description="fewer labelled rows with predictions: no verdict (too noisy)"
    )


class GateConfig(Section):
    """The SLOs a challenger must meet before it may serve as canary."""

    min_auc: Fraction = Field(
        0.64,
        description="holdout ROC AUC, overall (unset here: the spec's promotion.min_auc first)",
    )
    min_slice_auc: Fraction = Field(
        0.60,
        description="holdout AUC in every slice (unset here: the spec's promotion.min_slice_auc "
        "first)",
    )
    slices: list[str] | None = Field(None, description="default: the spec's slices")
    slice_min_rows: int | None = Field(
        None, ge=1, description="smaller slices are not judged; default: the spec's"
    )
    max_auc_drop: float = Field(
        0.01,
        ge=0.0,
        le=1.0,
        description="largest AUC loss against the champion, same holdout (unset here: the "
        "spec's promotion.max_auc_drop, else at least the AUC's noise on the holdout)",
    )
    max_nan_count: int = Field(0, ge=0, description="non-finite training steps allowed")
    max_cost_usd: float | None = Field(
        None, gt=0.0, description="training cost allowed; None: no limit"
    )
    latency_batch_rows: int = Field(1000, ge=1, description="rows per scoring call timed")
    latency_repeats: int = Field(20, ge=5, le=1000, description="timed calls (p95 over them)")
    max_p95_latency_ms: float = Field(500.0, gt=0.0, description="p95 of one scoring call")


class CanaryConfig(Section):
    """How a canary serves and how it is judged when labels arrive."""

    share: float = Field(
        0.2,
        gt=0.0,
        lt=1.0,
        description="share of rows the canary scores (unset here: the spec's "
        "promotion.canary_share first)",
    )
    salt: str = Field("canary-v1", min_length=1, description="changes which rows go to it")
    require_approval: bool = Field(
        False,
        description="a canary the review would promote waits for a person's approval in the "
        "Airflow UI (Required Actions) before it becomes champion; the decision, with its "
        "comment, joins the alias audit trail",
    )
    approvers: list[str] = Field(
        default_factory=list,
        description="who may answer a held promotion in the Airflow UI or REST API: Airflow "
        "user ids, each 'id' or 'id:name' (the approval task's assigned users, enforced by "
        "Airflow's auth manager); empty: anyone who may act on the DAG's Required Actions",
    )

    @field_validator("approvers")
    @classmethod
    def _user_ids(cls, entries: list[str]) -> list[str]:
        for entry in entries:
            if not entry.partition(":")[0].strip():
                raise ValueError(f"{entry!r} has no Airflow user id: write 'id' or 'id:name'")
        return entries

    approval_timeout_hours: float = Field(
        72.0,
        gt=0.0,
        description="no answer for longer: the canary is rolled back (its traffic returns to "
        "the champion) and an approval_timed_out alert goes out",
    )
    min_rows: int = Field(
        1000,
        ge=10,
        description="labelled rows each arm needs before a verdict; unset here: the spec's "
        "promotion.canary_min_rows, else half the canary's share of the median batch it "
        "served, within [100, this]",
    )
    confidence: float = Field(0.95, gt=0.5, lt=1.0, description="two-sided interval level")
    margin: float = Field(
        0.005,
        ge=0.0,
        description="mean log loss the canary may exceed the champion's by (non-inferiority)",
    )
    max_wait_hours: float = Field(
        72.0,
        gt=0.0,
        description="test: fixed only: inconclusive for longer than this since the canary "
        "started, a person decides (alert); the sequential test counts labelled batches "
        "instead (horizon_batches), since labels land a batch at a time",
    )
    test: Literal["sequential", "fixed"] = Field(
        "sequential",
        description="sequential: an anytime-valid confidence sequence over the labelled rows "
        "of every batch since the canary started (valid however often it is reviewed); "
        "fixed: a Welch interval on the rows of the batches under review alone",
    )
    horizon_batches: int = Field(
        12,
        ge=1,
        description="labelled batches (shadow and serving, each batch once) a sequential "
        "canary may stay undecided before a person decides (canary_needs_decision alert)",
    )
    shadow_batches: int = Field(
        3,
        ge=0,
        description="most batches the challenger scores unserved (shadow) after its gate, "
        "beside the champion; it serves once the labels of its shadow batches hold the "
        "min_rows paired rows the review needs (labels land a batch late, so that takes "
        "two batches), or after this many; its paired evidence can roll it back or "
        "support its promotion; 0: no shadow",
    )
    guard_min_rows: int = Field(
        30,
        ge=2,
        description="guardrails before labels: fewer canary-scored rows in a batch and the "
        "distribution checks (constant output, KS, rank) wait for a bigger batch; non-finite "
        "scores are checked on any number",
    )
    guard_max_invalid_share: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="guardrail: share of the canary's scores of a batch that may be "
        "non-finite or outside [0, 1]; above it the canary is rolled back",
    )
    guard_min_std: float = Field(
        1e-4,
        ge=0.0,
        description="guardrail: the canary's scores of a batch with a smaller standard "
        "deviation are a constant output; the canary is rolled back",
    )
    guard_max_ks: float = Field(
        0.85,
        gt=0.0,
        le=1.0,
        description="guardrail: the largest Kolmogorov-Smirnov distance between the "
        "canary's and the champion's scores of the same rows; above it the canary is "
        "rolled back (loose: a healthy retrain calibrated differently from an older "
        "champion measures up to 0.72 on the flights demo)",
    )
    guard_min_rank_corr: float = Field(
        0.1,
        ge=-1.0,
        lt=1.0,
        description="guardrail: the smallest Spearman rank correlation between the "
        "canary's and the champion's scores of the same rows; when even its upper "
        "confidence bound (level guard_rank_alpha) is below it, the canary ranks rows "
        "unlike any model of the task (features misaligned, inverted) and is rolled back",
    )
    guard_rank_alpha: Share = Field(
        0.001,
        description="guardrail: one-sided level of the rank correlation's upper bound",
    )
    guard_srm_alpha: Share = Field(
        0.001,
        description="guardrail: sample-ratio mismatch, a chi-square test of the canary's "
        "row count against its configured share; p below this rolls the canary back",
    )
