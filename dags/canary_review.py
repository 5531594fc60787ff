"""
### Canary review

Runs when labels land (`labels_landed`). For the labelled batch:

1. **quality**: the champion's live AUC on the rows it served; below the SLO it
   requests a retrain (`retrain_request`), the label-side trigger.
2. **review**: canary against champion on the rows each served, per-row log
   loss, a non-inferiority interval: promote (`champion` moves, the old one is
   kept as `previous_champion`), roll back (`canary` removed, version tagged
   rejected), or wait for more labels (after `canary.max_wait_hours` a person
   decides: `python -m pipeline canary promote|reject`). Every alias move is
   recorded with who, why and when.
"""

from __future__ import annotations

from airflow.sdk import task

from pipeline.apps import dagkit as kit


@kit.pipeline_dag(
    "canary_review",
    schedule=[kit.LABELS_LANDED],
    doc_md=__doc__,
    params={
        "batch_id": kit.batch_param("labelled batch (default: the batch of the triggering event)"),
    },
)
def canary_review():
    @task(doc_md="The labelled batch: the param or the triggering event.")
    def which_batch(params=None, triggering_asset_events=None) -> str:
        from pipeline import flow

        batch = params["batch_id"] or flow.newest_extra(
            kit.events(triggering_asset_events), "batch_id"
        )
        if not batch:
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException("no batch_id: pass one, or let labels_landed trigger")
        return batch

    @task(doc_md="Champion's live AUC on its labelled rows; below the SLO -> retrain.")
    def quality(batch_id: str):
        from pipeline import flow

        with kit.permanent():
            return flow.quality(kit.env(), batch_id).to_xcom()

    @task.branch(doc_md="Live quality below its SLO requests a retrain.")
    def branch(result):
        return "request_retrain" if result["decision"]["retrain"] else "quality_ok"

    @task(outlets=[kit.RETRAIN_REQUEST], doc_md="Emits `retrain_request` with the reason.")
    def request_retrain(result, *, outlet_events=None):
        outlet_events[kit.RETRAIN_REQUEST].extra = {
            "trigger": "quality",
            "reason": result["decision"]["reason"],
            "batch_id": result["batch_id"],
        }
        return result

    @task(doc_md="Live quality meets its SLO (or too few rows to say).")
    def quality_ok(result):
        return result

    @task(doc_md="Canary vs champion: promote, roll back or wait.")
    def review(batch_id: str):
        from pipeline import flow

        with kit.permanent():
            return flow.review(kit.env(), [batch_id]).to_xcom()

    batch = which_batch()
    checked = quality(batch)
    branch(checked) >> [request_retrain(checked), quality_ok(checked)]
    checked >> review(batch)


canary_review()
