"""
### Ingest

Lands one batch in the object store: the **features** of a new batch (a month of
the bundled 2013 flights such as `2013-03`, or a CSV/Parquet file with a batch
id), or the **labels** of an earlier one (labels arrive later than features, as
in production). Landing the same content again changes nothing; different
content for a stored batch is refused.

Emits `batch_landed` (the drift monitor runs) or `labels_landed` (the canary
review runs), with the batch id in the event.
"""

from __future__ import annotations

from airflow.sdk import Param, task

from pipeline.apps import dagkit as kit


@kit.pipeline_dag(
    "ingest",
    schedule=None,
    max_active_runs=4,
    doc_md=__doc__,
    params={
        "source": Param(
            "2013-01",
            type="string",
            minLength=1,
            maxLength=1024,
            description="a month of 2013 (2013-03, 03 or 3) or a CSV/Parquet path or s3:// URI",
        ),
        "kind": Param(
            "features",
            type="string",
            enum=["features", "labels"],
            description="features of a new batch, or labels of a landed one",
        ),
        "batch_id": kit.batch_param("batch id for a file (a month names its own: 2013-MM)"),
    },
)
def ingest():
    @task.branch(doc_md="Features go to `land_features`, labels to `land_labels`.")
    def route(params=None) -> str:
        return "land_labels" if params["kind"] == "labels" else "land_features"

    @task(outlets=[kit.BATCH_LANDED], doc_md="Land the features; emits `batch_landed`.")
    def land_features(params=None, *, outlet_events=None):
        from pipeline import flow

        with kit.permanent():
            landed = flow.land(kit.env(), params["source"], batch_id=params["batch_id"])
        outlet_events[kit.BATCH_LANDED].extra = {"batch_id": landed.batch_id, "kind": "features"}
        return landed.to_xcom()

    @task(outlets=[kit.LABELS_LANDED], doc_md="Land the labels; emits `labels_landed`.")
    def land_labels(params=None, *, outlet_events=None):
        from pipeline import flow

        with kit.permanent():
            landed = flow.land(
                kit.env(), params["source"], labels=True, batch_id=params["batch_id"]
            )
        outlet_events[kit.LABELS_LANDED].extra = {"batch_id": landed.batch_id, "kind": "labels"}
        return landed.to_xcom()

    route() >> [land_features(), land_labels()]


ingest()
