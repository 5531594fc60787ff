"""
### Canary review

Runs when labels land (`labels_landed`). For every labelled batch of the events
it consumed (labels of several batches may land before it runs), and every labelled
batch the ledger shows not reviewed yet (a batch whose event never arrived, or whose
review failed, is caught up by the next run), in batch order:

1. **quality**: the champion's live AUC on the rows it served; below the SLO it
   requests a retrain (`retrain_request`), the label-side trigger.
2. **review**: canary against champion on per-row log loss, against a
   non-inferiority margin, with an anytime-valid confidence sequence over every
   labelled batch since the canary started (each batch counted once, however
   often it is reviewed), and, for a canary still in shadow, on the same rows
   (paired): promote (`champion` moves, the old one is kept as
   `previous_champion`), roll back (`canary` removed, version tagged rejected),
   or wait for more labels (after `canary.horizon_batches` or
   `canary.max_wait_hours` a person decides:
   `python -m pipeline canary promote|reject`). Every alias move is recorded
   with who, why and when.
3. **hold** (only with `canary.require_approval`): a promotion the review held
   emits `promotion_held` (model, version, batch) and the run ends; the `approval`
   DAG asks a person in a run of its own, so later batches are reviewed meanwhile.
   While that approval waits, a review of the same canary neither holds nor asks
   again: it records `awaiting_approval` and its evidence keeps accumulating (a
   `failure` still rolls the canary back).
"""

from __future__ import annotations

from airflow.sdk import task

from pipeline.apps import dagkit as kit


@kit.pipeline_dag(
    "canary_review",
    schedule=[kit.LABELS_LANDED],
    doc_md=__doc__,
    params={
        "batch_id": kit.batch_param(
            "labelled batch (default: every batch of the triggering events)"
        ),
    },
)
def canary_review():
    @task(doc_md="The labelled batches, in batch order: the param, the events, the catch-up.")
    def which_batches(params=None, triggering_asset_events=None) -> list[str]:
        from pipeline import flow

        return kit.run_batches(
            flow.review_batches,
            params,
            triggering_asset_events,
            none="no batch to review: every labelled batch is reviewed; pass a batch_id to "
            "review one again",
        )

    @task(doc_md="Champion's live AUC on each batch's labelled rows; below the SLO -> retrain.")
    def quality(batch_ids: list[str]):
        from pipeline import flow

        with kit.permanent():
            return [flow.quality(kit.env(), b).to_xcom() for b in batch_ids]

    @task.branch(doc_md="Live quality below its SLO (on any batch) requests a retrain.")
    def branch(results):
        return "request_retrain" if any(r["decision"]["retrain"] for r in results) else "quality_ok"

    @task(outlets=[kit.RETRAIN_REQUEST], doc_md="Emits `retrain_request` with the reasons.")
    def request_retrain(results, *, outlet_events=None):
        asking = [r for r in results if r["decision"]["retrain"]]
        outlet_events[kit.RETRAIN_REQUEST].extra = {
            "trigger": "quality",
            "reason": "; ".join(r["decision"]["reason"] for r in asking),
            "batch_id": asking[-1]["batch_id"],
        }
        return results

    @task(doc_md="Live quality meets its SLO (or too few rows to say).")
    def quality_ok(results):
        return results

    @task(doc_md="Canary vs champion on every labelled batch: promote (or hold), roll back, wait.")
    def review(batch_ids: list[str]):
        from pipeline import flow

        with kit.permanent():  # canary.require_approval holds a promotion (as the CLI does)
            return flow.review(kit.env(), batch_ids).to_xcom()

    batches = which_batches()
    checked = quality(batches)
    branch(checked) >> [request_retrain(checked), quality_ok(checked)]
    reviewed = review(batches)
    checked >> reviewed

    if kit.CONFIG.canary.require_approval:

        @task(outlets=[kit.PROMOTION_HELD], doc_md="A held promotion: emits `promotion_held`.")
        def hold(batch_ids: list[str], result, *, outlet_events=None):
            from airflow.sdk.exceptions import AirflowSkipException

            if result["action"] != "held":  # nothing newly held: no event, nobody asked
                raise AirflowSkipException(f"nothing held for approval ({result['action']})")
            extra = {"model": kit.env().model, "version": result["version"], "batch": batch_ids[-1]}
            outlet_events[kit.PROMOTION_HELD].extra = extra
            return extra

        hold(batches, reviewed)


canary_review()
