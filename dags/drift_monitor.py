"""
### Drift monitor

Runs when batches land (`batch_landed`) and on a schedule. A run takes **every**
batch it was asked about, in batch order: each batch named by the events it
consumed (a backfill lands many at once), and every landed batch the ledger shows
with a step missing (a batch whose event never arrived is caught up by the next
run); a cron tick with nothing pending checks the newest batch. Each step goes
through the run's batches one after the other:

1. **validate**: the dataset spec's Great Expectations suite. A failing batch is
   quarantined with its result, a `validation_failed` alert goes out, and it goes
   no further; the other batches go on, and `refused` fails the run naming it.
2. **drift**: Evidently against the champion's reference snapshot (its training
   sample); the HTML report goes to the store.
3. **score**: champion and canary score the batch (the canary's share of rows by
   a stable hash of the row id); every prediction records its model version. A
   canary fresh from its gate first scores `canary.shadow_batches` whole batches
   unserved (shadow), beside the champion, for the paired comparison.
4. **decide**: drift at or above the threshold in any batch (or no champion yet)
   requests one retrain through the `retrain_request` asset, with every reason; no
   drift is a normal short-circuit, not an error. Over the monthly budget,
   drift-triggered retrains pause (and an alert says so).

Every step records itself in the batch's ledger (`python -m pipeline batches`).
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
            "the one batch to check (default: every batch of the triggering events and every "
            "landed batch with a step missing, else the newest landed batch)"
        ),
    },
)
def drift_monitor():
    @task(doc_md="The batches of this run, in batch order: the param, the events, the catch-up.")
    def which_batches(params=None, triggering_asset_events=None) -> list[str]:
        from pipeline import flow

        return kit.run_batches(flow.monitor_batches, params, triggering_asset_events)

    @task(doc_md="Great Expectations suite of the spec on each batch; a failure is quarantined.")
    def validate(batch_ids: list[str]):
        from pipeline import flow

        with kit.permanent():
            return [v.to_xcom() for v in flow.validate_each(kit.env(), batch_ids)]

    @task(doc_md="Evidently drift of each valid batch against the champion's reference.")
    def drift(validated: list):
        from pipeline import flow

        with kit.permanent():
            checked = [flow.BatchValidation.from_xcom(v) for v in validated]
            return [d.to_xcom() for d in flow.drift_each(kit.env(), checked)]

    @task(doc_md="Champion and canary score each valid batch; predictions go to the store.")
    def score(validated: list):
        from pipeline import flow

        with kit.permanent():
            checked = [flow.BatchValidation.from_xcom(v) for v in validated]
            return [s.to_xcom() for s in flow.score_each(kit.env(), checked)]

    @task(doc_md="Retrain or not, and why (drift in any batch, no champion yet, budget).")
    def decide(validated: list, drifted: list, _scored: list):
        from pipeline import flow

        with kit.permanent():
            checked = [flow.BatchValidation.from_xcom(v) for v in validated]
            outcomes = [flow.DriftOutcome.from_xcom(d) for d in drifted]
            return flow.decide_all(kit.env(), checked, outcomes).to_xcom()

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

    @task(doc_md="Fails the run when a batch was refused (quarantined); the others went on.")
    def refused(validated: list):
        from airflow.sdk.exceptions import AirflowFailException

        why = [f"{v['batch_id']}: {v['refused']}" for v in validated if v["refused"]]
        if why:
            raise AirflowFailException("\n".join(why))
        return []

    batches = which_batches()
    validated = validate(batches)
    refused(validated)
    drifted = drift(validated)
    decision = decide(validated, drifted, score(validated))
    branch(decision) >> [request_retrain(decision), no_retrain(decision)]


drift_monitor()
