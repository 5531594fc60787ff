"""
### Landing zone

The production entry: files dropped under the object store's `landing/` prefix are
landed, with no call to make. Name each file after its batch:

- `landing/features/<batch_id>.parquet` (or `.csv`): a batch's features;
- `landing/labels/<batch_id>.parquet` (or `.csv`): its labels, when they come.

On a short cron (`ingest.landing_schedule`, every 5 minutes; off with
`cron_schedules: false`, when it runs only when triggered), each sweep lands every
waiting file in batch order, features before labels, through the same step as
`ingest`; a landed file moves to `landing/landed/`, a refused one (unreadable, a bad
name, different content for a batch that holds a version) to `landing/refused/` with
the reason beside it; labels whose features have not landed wait for the next sweep.
A sweep that landed batches emits one `batch_landed` (and one `labels_landed`) event
naming all of them: the drift monitor (and the canary review) then processes every
one, in batch order. A backfill is: drop N files.
"""

from __future__ import annotations

from airflow.sdk import task

from pipeline.apps import dagkit as kit


@kit.pipeline_dag(
    "landing",
    schedule=kit.cron(kit.CONFIG.ingest.landing_schedule),
    doc_md=__doc__,
    params={},
)
def landing():
    @task(doc_md="Lands every file waiting in `landing/features/`, in batch order.")
    def sweep_features():
        from pipeline import flow

        with kit.permanent():
            return flow.sweep(kit.env(), "features").to_xcom()

    @task(doc_md="Lands every file waiting in `landing/labels/`, after the features.")
    def sweep_labels():
        from pipeline import flow

        with kit.permanent():
            return flow.sweep(kit.env(), "labels").to_xcom()

    @task(outlets=[kit.BATCH_LANDED], doc_md="Emits `batch_landed` naming every landed batch.")
    def announce_features(swept: dict, *, outlet_events=None):
        kit.announce(swept, outlet_events[kit.BATCH_LANDED])
        return swept["landed"]

    @task(outlets=[kit.LABELS_LANDED], doc_md="Emits `labels_landed` naming every batch.")
    def announce_labels(swept: dict, *, outlet_events=None):
        kit.announce(swept, outlet_events[kit.LABELS_LANDED])
        return swept["landed"]

    @task(doc_md="Fails the run naming each refused file (moved to `landing/refused/`).")
    def refused(features: dict, labels: dict):
        from airflow.sdk.exceptions import AirflowFailException

        why = [f"{s['kind']}/{n}: {w}" for s in (features, labels) for n, w in s["refused"].items()]
        if why:
            raise AirflowFailException("\n".join(why))
        return []

    features = sweep_features()
    labels = sweep_labels()
    features >> labels
    announce_features(features)
    announce_labels(labels)
    refused(features, labels)


landing()
