"""A person approves a promotion to champion (``canary.require_approval``).

When approval is required, a canary review that would promote returns ``held``
instead (:func:`pipeline.steps.canary.review.apply_review`); the canary keeps serving
and its version is tagged ``approval.status=pending``. The request shows
:func:`evidence`: what is asked, then the version's model card (gate checks,
shadow and canary evidence, known limitations). The answer goes to
:func:`decide`:

- **approved**: the approval is recorded in the alias audit trail (who, when, the
  comment), then :func:`~pipeline.steps.promotion.actions.promote` moves ``champion``
  (compare-and-set under the alias lock, refusing a version that failed its gate or
  canary) with the approver as its ``who`` and the comment in its ``why``;
- **rejected**: recorded the same way; nothing moves;
- **timed out** (no answer within ``canary.approval_timeout_hours``): recorded,
  nothing moves, an ``approval_timed_out`` alert goes out.

The version is tagged ``approval.status`` / ``approval.by`` / ``approval.at`` /
``approval.comment`` either way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pipeline.base.alerts import AlertKind, raise_alert
from pipeline.base.store import ObjectStore
from pipeline.steps.promotion.actions import PromotionResult, promote
from pipeline.steps.registry.aliases import (
    CANARY,
    CHAMPION,
    AliasMove,
    current_alias,
    record_decision,
)
from pipeline.steps.registry.model_card import collect_card, render_markdown

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from pipeline.base.config import PipelineConfig

__all__ = ["APPROVE", "REJECT", "Answer", "ApprovalResult", "decide", "evidence"]

log = logging.getLogger(__name__)

APPROVE, REJECT = "Approve", "Reject"  # the options a person chooses from
Verdict = Literal["approved", "rejected", "timed_out"]


@dataclass(frozen=True)
class Answer:
    """What came back: the option chosen, by whom (None: nobody, the timeout's default)."""

    chosen: str
    who: str | None
    comment: str = ""

    @property
    def verdict(self) -> Verdict:
        if self.who is None:
            return "timed_out"
        if self.chosen == APPROVE:
            return "approved"
        if self.chosen == REJECT:
            return "rejected"
        raise ValueError(f"approval answer {self.chosen!r}: choose {APPROVE!r} or {REJECT!r}")


@dataclass(frozen=True)
class ApprovalResult:
    model: str
    version: str
    verdict: Verdict
    who: str
    comment: str
    record: AliasMove
    promotion: PromotionResult | None  # approved: what promote() did ("lost" if it moved on)


def evidence(client: MlflowClient, store: ObjectStore, name: str, version: str) -> str:
    """The request a person reads: what is asked, then the version's model card."""
    champion = current_alias(client, name, CHAMPION)
    canary = current_alias(client, name, CANARY)
    card = collect_card(client, store, name, str(version), reason="approval requested")
    head = (
        f"**Promote {name} v{version} to champion?** The canary review found it "
        f"non-inferior to champion v{champion} (canary now: v{canary}). Approve moves "
        "`champion` (the current one is kept as `previous_champion`); Reject moves "
        "nothing. Your comment is recorded in the alias audit trail."
    )
    return f"{head}\n\n{render_markdown(card)}"


def decide(
    client: MlflowClient,
    store: ObjectStore,
    config: PipelineConfig,
    name: str,
    version: str,
    answer: Answer,
) -> ApprovalResult:
    """Record the answer about promoting ``version``, then act on it (see the module)."""
    version = str(version)
    verdict = answer.verdict
    who = answer.who or "nobody (approval timed out)"
    comment = answer.comment.strip()
    champion = current_alias(client, name, CHAMPION)
    if verdict == "timed_out":
        hours = config.canary.approval_timeout_hours
        why = f"no approval within {hours:g} h: the champion stays"
    else:
        why = f"{verdict} by {who}: {comment or '(no comment)'}"
    record = record_decision(
        store,
        name,
        CHAMPION,
        current=champion,
        proposed=version,
        action="approved" if verdict == "approved" else f"approval_{verdict}",
        who=who,
        why=why,
    )
    tags = {
        "approval.status": verdict,
        "approval.by": who,
        "approval.at": record.when,
        "approval.comment": comment[:4000],
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    promotion = None
    if verdict == "approved":
        promotion = promote(client, store, config, name, version, why=why, who=who)
    elif verdict == "timed_out":
        raise_alert(
            config,
            store,
            AlertKind.APPROVAL_TIMEOUT,
            f"{name}-v{version}",
            f"nobody approved {name} v{version} as champion in time",
            f"{why} (v{champion}); approve or reject it with "
            f"`python -m pipeline approval approve|reject {version} --comment ...`",
            {"model": name, "version": version, "champion": champion},
        )
    log.info("approval of %s v%s: %s", name, version, record.describe())
    return ApprovalResult(name, version, verdict, who, comment, record, promotion)
