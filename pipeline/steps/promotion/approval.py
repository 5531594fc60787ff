"""A person decides a promotion to champion (``canary.require_approval``).

When approval is required, a canary review that would promote returns ``held``
instead (:func:`pipeline.steps.canary.review.apply_review`), whichever entry ran it
(the DAG, the CLI): the canary keeps serving and its version is tagged
``approval.status=pending``. The request shows :func:`evidence`: what is asked, then
the version's model card (gate checks, shadow and canary evidence, guardrails). The
answer goes to :func:`decide`, the one path every entry takes (the DAG's
human-in-the-loop task, ``python -m pipeline approval``, ``canary promote|reject``):

- **approved**: only the held canary may be approved; any other version (never held,
  held and answered already, not the canary) is refused unless the caller says
  ``override``, and an override is recorded as such (action ``override_approved``,
  with what the version's approval status was). The decision is recorded in the
  alias audit trail (who, when, the reason), then
  :func:`~pipeline.steps.promotion.actions.promote` moves ``champion``
  (compare-and-set under the alias lock, refusing a version that failed its gate or
  canary) with the approver as its ``who`` and the reason in its ``why``;
- **rejected**: recorded the same way, then the canary is **rolled back**
  (:func:`~pipeline.steps.promotion.actions.reject_canary`: alias removed, its traffic
  returns to the champion, version tagged ``rejected`` with the reason);
- **timed out** (no answer within ``canary.approval_timeout_hours``, 72 h by
  default): recorded, the canary is rolled back the same way, and an
  ``approval_timed_out`` alert goes out (none when the canary was rolled back while
  the question waited: a failed review, a guardrail; that rollback alerted already).

The version is tagged ``approval.status`` / ``approval.by`` / ``approval.at`` /
``approval.comment`` either way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pipeline.base.alerts import AlertKind, raise_alert
from pipeline.base.store import ObjectStore
from pipeline.steps.promotion.actions import PromotionResult, promote, reject_canary
from pipeline.steps.registry.aliases import (
    CANARY,
    CHAMPION,
    AliasMove,
    RegistryError,
    current_alias,
    record_decision,
)
from pipeline.steps.registry.model_card import collect_card, render_markdown

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from pipeline.base.config import PipelineConfig

__all__ = ["APPROVE", "PENDING", "REJECT", "Answer", "ApprovalResult", "decide", "evidence"]

log = logging.getLogger(__name__)

APPROVE, REJECT = "Approve", "Reject"  # the options a person chooses from
PENDING = "pending"  # approval.status of a canary the review held
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
    # approved: what promote() did ("lost" if it moved on); rejected or timed out: what
    # reject_canary() did (the rollback)
    promotion: PromotionResult | None
    override: bool = False  # approved a version the review never held


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


def held_status(client: MlflowClient, name: str, version: str) -> str | None:
    """Why ``version`` is not the held canary (None: it is): its approval status must be
    ``pending`` and it must still be the canary."""
    status = client.get_model_version(name, version).tags.get("approval.status")
    canary = current_alias(client, name, CANARY)
    if canary != version:
        return f"v{version} is not the canary (canary: {f'v{canary}' if canary else 'none'})"
    if status != PENDING:
        return (
            f"v{version} was not held for approval by a canary review (approval.status "
            f"{status or 'unset'})"
        )
    return None


def decide(
    client: MlflowClient,
    store: ObjectStore,
    config: PipelineConfig,
    name: str,
    version: str,
    answer: Answer,
    *,
    override: bool = False,
) -> ApprovalResult:
    """Record the answer about promoting ``version``, then act on it (see the module).

    Raises RegistryError when ``version`` is approved without being the held canary
    and ``override`` is not set (nothing is recorded then)."""
    version = str(version)
    verdict = answer.verdict
    who = answer.who or "nobody (approval timed out)"
    comment = answer.comment.strip()
    champion = current_alias(client, name, CHAMPION)
    not_held = held_status(client, name, version)
    overriding = verdict == "approved" and not_held is not None
    if overriding and not override:
        raise RegistryError(
            f"{not_held}: only the held canary may be approved; to promote it anyway, "
            "decide it as an override (python -m pipeline approval approve V --override "
            "--reason ...), which the audit trail records as such"
        )
    if verdict == "timed_out":
        hours = config.canary.approval_timeout_hours
        why = f"no approval within {hours:g} h: the canary is rolled back, the champion stays"
    else:
        why = f"{verdict} by {who}: {comment or '(no comment)'}"
    if overriding:
        why = f"OVERRIDE ({not_held}): {why}"
    action = "approved" if verdict == "approved" else f"approval_{verdict}"
    record = record_decision(
        store,
        name,
        CHAMPION,
        current=champion,
        proposed=version,
        action=f"override_{action}" if overriding else action,
        who=who,
        why=why,
    )
    tags = {
        "approval.status": f"override_{verdict}" if overriding else verdict,
        "approval.by": who,
        "approval.at": record.when,
        "approval.comment": comment[:4000],
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    if verdict == "approved":
        promotion = promote(client, store, config, name, version, why=why, who=who)
    else:  # a person's no, or nobody's answer: the canary's traffic returns to the champion
        promotion = reject_canary(
            client, store, config, name, version, why=why, who=who, alert=False
        )
    if verdict == "timed_out" and promotion.action != "lost":  # lost: rolled back before
        raise_alert(
            config,
            store,
            AlertKind.APPROVAL_TIMEOUT,
            f"{name}-v{version}",
            f"nobody approved {name} v{version} as champion in time: rolled back",
            f"{why} (v{champion}); its traffic is back with the champion and the next "
            "challenger that passes its gate becomes the canary",
            {"model": name, "version": version, "champion": champion},
        )
    log.info("approval of %s v%s: %s", name, version, record.describe())
    return ApprovalResult(
        name, version, verdict, who, comment, record, promotion, override=overriding
    )
