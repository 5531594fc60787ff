"""
### Drift monitor

Runs when a batch lands (`batch_landed`) and on a schedule. For one batch:

1. **validate**: the dataset spec's Great Expectations suite. A failing batch is
   quarantined with its result, a `validation_failed` alert goes out, and the
   run stops here: nothing downstream runs on bad data.
2. **drift**: Evidently against the champion's reference snapshot (its training
   sample); the HTML report goes to the store.
3. **score**: champion and canary score the batch (the canary's share of rows by
   a stable hash of the row id); every prediction records its model version. A
   canary fresh from its gate first scores `canary.shadow_batches` whole batches
   unserved (shadow), beside the champion, for the paired comparison.
4. **decide**: drift at or above the threshold (or no champion yet) requests a
   retrain through the `retrain_request` asset, with the reason; no drift is a
   normal short-circuit, not an error. Over the monthly budget, drift-triggered
   retrains pause (and an alert says so).
"""

from __future__ import annotations

from airflow.sdk import task

from pipeline.apps import dagkit as kit


@kit.pipeline_dag(
    "drift_monitor",
    schedule=kit.asset_or_cron(kit.CONFIG.monitor.schedule, kit.BATCH_LANDED),
    doc_md=__doc__,
    params={
        "batch_id": kit.batch_param(
            "batch to check (default: the batch of the triggering event, else the newest "
            "landed batch)"
        ),
    },
)
def drift_monitor():
    @task(doc_md="The batch this run checks: the param, the triggering event, or the newest.")
    def which_batch(params=None, triggering_asset_events=None) -> str:
        from pipeline import flow

        batch = params["batch_id"] or flow.newest_extra(
            kit.events(triggering_asset_events), "batch_id"
        )
        with kit.permanent():
            return batch or flow.newest_batch(kit.env())

    @task(doc_md="Great Expectations suite of the spec; quarantine and stop on failure.")
    def validate(batch_id: str):
        from pipeline import flow

        with kit.permanent():
            return flow.validate(kit.env(), batch_id).to_xcom()

    @task(doc_md="Evidently drift against the champion's reference snapshot.")
    def drift(batch_id: str, _validated: dict):
        from pipeline import flow

        with kit.permanent():
            return flow.drift(kit.env(), batch_id).to_xcom()

    @task(doc_md="Champion and canary score the batch; predictions go to the store.")
    def score(batch_id: str, _validated: dict):
        from pipeline import flow

        with kit.permanent():
            return flow.score(kit.env(), batch_id).to_xcom()

    @task(doc_md="Retrain or not, and why (drift, no champion yet, budget).")
    def decide(batch_id: str, drifted: dict, _scored: dict):
        from pipeline import flow

        with kit.permanent():
            return flow.decide(kit.env(), batch_id, flow.DriftOutcome.from_xcom(drifted)).to_xcom()

    @task.branch(doc_md="A real branch: no drift short-circuits to `no_retrain`.")
    def branch(decision: dict) -> str:
        return "request_retrain" if decision["retrain"] else "no_retrain"

    @task(outlets=[kit.RETRAIN_REQUEST], doc_md="Emits `retrain_request` with the reason.")
    def request_retrain(decision: dict, *, outlet_events=None):
        outlet_events[kit.RETRAIN_REQUEST].extra = {
            "trigger": decision["trigger"],
            "reason": decision["reason"],
            "batch_id": decision["batch_id"],
        }
        return decision

    @task(doc_md="Nothing to do: the decision and its reason are in this task's result.")
    def no_retrain(decision: dict):
        return decision

    batch = which_batch()
    validated = validate(batch)
    drifted = drift(batch, validated)
    scored = score(batch, validated)
    decision = decide(batch, drifted, scored)
    branch(decision) >> [request_retrain(decision), no_retrain(decision)]


drift_monitor()
