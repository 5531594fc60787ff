"""A person decides a promotion: the request's evidence and the answer, for the DAG
(Airflow's human-in-the-loop task) and the CLI (``python -m pipeline approval``,
``canary promote|reject``): one path, :func:`decide`."""

from __future__ import annotations

from pipeline.flow.cards import publish
from pipeline.flow.env import Env
from pipeline.flow.records import ApprovalOutcome
from pipeline.steps.promotion.approval import Answer, held_status
from pipeline.steps.promotion.approval import decide as act
from pipeline.steps.promotion.approval import evidence as body
from pipeline.steps.registry.aliases import CANARY, CHAMPION, current_alias

__all__ = ["decide", "evidence", "not_waiting"]


def evidence(env: Env, version: str) -> str:
    """What the person reads before answering (Markdown): the question, then the card."""
    return body(env.client, env.store, env.model, str(version))


def not_waiting(env: Env, version: str) -> str | None:
    """Why nobody need be asked about ``version`` any more (None: its approval waits):
    answered already (the CLI), rolled back (a failed review, a guardrail), or no longer
    the canary."""
    return held_status(env.client, env.model, str(version))


def decide(
    env: Env,
    version: str,
    *,
    chosen: str,
    who: str | None,
    comment: str,
    override: bool = False,
) -> ApprovalOutcome:
    """Record a person's answer (``who`` None: nobody answered in time) and act on it
    (approve: champion moves; reject or timeout: the canary is rolled back); the
    version's card gets a revision with the decision. ``override``: approve a version
    the review did not hold, recorded as an override."""
    answer = Answer(chosen=chosen, who=who, comment=comment)
    result = act(
        env.client, env.store, env.config, env.model, str(version), answer, override=override
    )
    publish(env, result.version, f"approval: {result.verdict}")
    return ApprovalOutcome(
        version=result.version,
        verdict=result.verdict,
        who=result.who,
        comment=result.comment,
        action=result.promotion.action if result.promotion else "none",
        champion=current_alias(env.client, env.model, CHAMPION),
        canary=current_alias(env.client, env.model, CANARY),
        override=result.override,
    )
