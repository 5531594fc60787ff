"""Shadow scoring and the evidence a canary version accumulates across batches.

**Shadow.** After its gate a challenger (the version under ``canary``) first waits in
*shadow* until the labels of its shadow batches hold the ``min_rows`` paired rows the
review needs (at most ``canary.shadow_batches`` batches): the champion serves every row, and
the challenger scores every row too, unserved; its probability is stored beside the
champion's (column ``shadow_score``, key ``champion-v<X>_shadow-v<Y>``). When the
labels arrive both are judged on the same rows: per row
``d = loss(shadow_score) - loss(score)``, a paired comparison
(:func:`pipeline.steps.canary.sequential.paired_interval`). A paired sequence that
shows inferiority rolls the candidate back before it ever serves.

Whether a canary still waits in shadow (:func:`in_shadow`) and which batches it
served or shadowed (:func:`served_keys`) are read from the stored predictions.

**Evidence.** Every review adds, per labelled batch, the moments of the shadow's
paired differences and of each canary arm's per-row log loss to one JSON object per
version (``reports/canary/<model>/v<version>/evidence.json``), keyed by batch: a
batch reviewed again replaces its own entry (re-running a review never counts its
rows twice), and the sequential review reads the totals over all batches.

**Error budget.** With a shadow the review holds two confidence sequences (the
shadow's and the canary's); each runs at ``alpha / 2`` (``alpha = 1 - confidence``),
so a promotion or rollback that either can cause is wrong with probability at most
``alpha`` in all, however often the review looks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pipeline.base.store import ObjectNotFound, ObjectStore, check_id, get_json, join_key, put_json
from pipeline.steps.canary.sequential import Interval, Moments, paired_interval
from pipeline.steps.registry.aliases import alias_lock

if TYPE_CHECKING:
    from pipeline.base.sections import CanaryConfig

__all__ = [
    "SHADOW_COLUMN",
    "Evidence",
    "alpha_each",
    "evidence_key",
    "in_shadow",
    "load_evidence",
    "record_batches",
    "served_keys",
    "shadow_interval",
    "shadow_name",
    "shadowed_batches",
]

SHADOW_COLUMN = "shadow_score"  # the challenger's unserved probability, beside the champion's


def shadow_name(champion: str, canary: str) -> str:
    """The serving pair's component of a shadow-scored batch's predictions key."""
    return f"champion-v{champion}_shadow-v{canary}"


def served_keys(
    store: ObjectStore, dataset: str, canary: str, *, shadow: bool, champion: str | None = None
) -> list[str]:
    """Predictions keys of the batches scored while ``canary`` served (or shadowed);
    ``champion``: only those beside that champion version."""
    prefix = join_key("predictions", check_id(dataset, "dataset name"))
    marker = f"_{'shadow' if shadow else 'canary'}-v{canary}/"
    if champion is not None:
        marker = f"/champion-v{champion}{marker}"
    return sorted(
        k for k in store.list(prefix) if marker in k and k.endswith("predictions.parquet")
    )


def shadowed_batches(store: ObjectStore, dataset: str, canary: str) -> list[str]:
    """The batches ``canary`` has scored in shadow (from the stored predictions)."""
    # predictions/<dataset>/<batch>/<pair>/predictions.parquet
    return sorted({k.split("/")[-3] for k in served_keys(store, dataset, canary, shadow=True)})


@dataclass(frozen=True)
class Evidence:
    """What one canary version has shown so far, per labelled batch."""

    model: str
    version: str
    shadow: dict[str, Moments] = field(default_factory=dict)  # batch -> paired differences
    canary: dict[str, tuple[Moments, Moments]] = field(default_factory=dict)  # (canary, champ)
    updated_at: str = ""
    champion: str = ""  # the champion version it was measured against ("": before binding)

    def shadow_total(self) -> Moments:
        return Moments.sum(self.shadow.values())

    def canary_totals(self) -> tuple[Moments, Moments]:
        return (
            Moments.sum(c for c, _ in self.canary.values()),
            Moments.sum(h for _, h in self.canary.values()),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "shadow": {b: m.as_dict() for b, m in sorted(self.shadow.items())},
            "canary": {
                b: {"canary": c.as_dict(), "champion": h.as_dict()}
                for b, (c, h) in sorted(self.canary.items())
            },
            "updated_at": self.updated_at,
            "champion": self.champion,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Evidence:
        return cls(
            str(data["model"]),
            str(data["version"]),
            {b: Moments.from_dict(m) for b, m in data.get("shadow", {}).items()},
            {
                b: (Moments.from_dict(m["canary"]), Moments.from_dict(m["champion"]))
                for b, m in data.get("canary", {}).items()
            },
            str(data.get("updated_at", "")),
            str(data.get("champion", "")),
        )


def evidence_key(model: str, version: str) -> str:
    return join_key(
        "reports", "canary", check_id(model, "model name"), f"v{version}", "evidence.json"
    )


def load_evidence(store: ObjectStore, model: str, version: str) -> Evidence:
    """The version's evidence so far (empty before its first review)."""
    try:
        return Evidence.from_json(get_json(store, evidence_key(model, version)))
    except ObjectNotFound:
        return Evidence(model, str(version))


def record_batches(
    store: ObjectStore,
    model: str,
    version: str,
    shadow: dict[str, Moments],
    canary: dict[str, tuple[Moments, Moments]],
    *,
    champion: str = "",
) -> Evidence:
    """Replace these batches' entries (others stay) under the model's lock; the result.

    Evidence is bound to the ``champion`` it was measured against: when the champion
    changed since, the old evidence is kept aside (``evidence-champion-v<old>.json``)
    and a new comparison starts from these batches alone."""
    with alias_lock(store, model):
        old = load_evidence(store, model, version)
        if old.champion and champion and old.champion != champion:
            archive = join_key(
                "reports", "canary", check_id(model, "model name"), f"v{version}",
                f"evidence-champion-v{old.champion}.json",
            )  # fmt: skip
            put_json(store, archive, old.to_json(), overwrite=True)
            old = Evidence(model, str(version))
        new = Evidence(
            model,
            str(version),
            {**old.shadow, **shadow},
            {**old.canary, **canary},
            datetime.now(UTC).isoformat(),
            champion or old.champion,
        )
        put_json(store, evidence_key(model, version), new.to_json(), overwrite=True)
    return new


def alpha_each(rules: CanaryConfig) -> float:
    """The level of each confidence sequence: ``alpha / 2`` with a shadow, else ``alpha``."""
    alpha = 1.0 - rules.confidence
    return alpha / 2 if rules.shadow_batches > 0 else alpha


def shadow_interval(evidence: Evidence, rules: CanaryConfig) -> Interval | None:
    """The paired CS of the shadow's rows so far; None below ``min_rows`` rows.

    Tuned (``rho``) for four times the canary arm's minimum over its share: about
    two typical batches of shadow rows."""
    total = evidence.shadow_total()
    if total.n < rules.min_rows:
        return None
    tune = max(1, round(4 * rules.min_rows / rules.share))
    return paired_interval(total, alpha_each(rules), tune)


def in_shadow(store: ObjectStore, rules: Any, dataset: str, name: str, canary: str) -> bool:
    """Whether ``canary`` still waits in shadow: a shadow is configured, it has not served
    yet (once serving, never back), it has scored fewer than ``shadow_batches`` batches in
    shadow (the maximum), and its labelled paired rows are fewer than the ``min_rows``
    the review needs. Labels land a batch after their features: a count of scored
    batches alone would let the canary serve before any paired evidence exists."""
    if rules.shadow_batches <= 0:
        return False
    if served_keys(store, dataset, canary, shadow=False):
        return False
    if len(shadowed_batches(store, dataset, canary)) >= rules.shadow_batches:
        return False
    return load_evidence(store, name, canary).shadow_total().n < rules.min_rows
