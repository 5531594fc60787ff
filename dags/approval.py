"""
### Approval

A person decides a promotion the canary review held (`canary.require_approval`).
Runs on `promotion_held`, the event a `canary_review` run emits when its review
holds a promotion (extra: model, version, batch), or by hand with a `version`;
each held version gets a run of its own (several may be active at once), so the
review goes on with later batches while this one waits:

1. **held**: the version to ask about (the param, else the newest event's) and
   the evidence a person reads (the question, then the model card: gate checks,
   shadow and canary results, guardrails). Nothing is asked when it no longer
   waits (answered through the CLI, rolled back by a review or a guardrail): the
   run ends there.
2. **approve**: waits in the UI's *Required Actions*; the person approves or
   rejects with a comment (`canary.approvers`: who may answer).
3. **record_approval**: the answer joins the alias audit trail with the Airflow
   user. Approve moves `champion`; Reject rolls the canary back (its traffic
   returns to the champion). No answer within `canary.approval_timeout_hours`
   (72 h by default): rolled back the same way, and an `approval_timed_out` alert.
"""

from __future__ import annotations

import logging

from airflow.sdk import Param, task

from pipeline.apps import dagkit as kit

log = logging.getLogger(__name__)

# one run per held version; more than one so that a run whose question became moot
# (the canary rolled back while it waits) never delays the next version's
MAX_ACTIVE = 8


@kit.pipeline_dag(
    "approval",
    schedule=[kit.PROMOTION_HELD],
    doc_md=__doc__,
    params={
        "version": Param(
            None,
            type=["null", "string"],
            pattern=r"^[0-9]+$",
            description="the held canary's version (default: the triggering event's)",
        ),
    },
    max_active_runs=MAX_ACTIVE,
)
def approval():
    @task.short_circuit(doc_md="The held version and the evidence a person reads.")
    def held(params=None, triggering_asset_events=None):
        from pipeline.flow import approval, triggers

        events = kit.events(triggering_asset_events)
        version = params["version"] or triggers.newest_extra(events, "version")
        env = kit.env()
        model = triggers.newest_extra(events, "model") or env.model
        if version is None or model != env.model:
            from airflow.sdk.exceptions import AirflowFailException

            if version is None:
                raise AirflowFailException("no version: pass one, or let promotion_held trigger")
            raise AirflowFailException(
                f"promotion_held names model {model!r}, this deployment serves {env.model!r}"
            )
        moot = approval.not_waiting(env, version)
        if moot is not None:
            log.info("nothing to ask: %s", moot)
            return None  # the approval tasks are skipped
        body = approval.evidence(env, version)
        return {"model": env.model, "version": str(version), "evidence": body}

    @task(doc_md="Records the answer in the alias audit trail; approved: champion moves.")
    def record_approval(asked, response):
        from pipeline.flow import approval

        with kit.permanent():
            answer = kit.approval_answer(response)
            return approval.decide(kit.env(), asked["version"], **answer).to_xcom()

    asked = held()
    approve = kit.approval_task(task_id="approve", held_task_id="held")
    asked >> approve
    record_approval(asked, approve.output)


approval()
