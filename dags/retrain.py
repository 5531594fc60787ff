"""
### Retrain

Scheduled (cron `retrain.schedule`) **or** on `retrain_request` (drift or live
quality), one active run at a time. Requests that arrive close together
coalesce: the run reads every request since the last one, and a training window
that a finished run already trained is not trained again.

1. **plan**: the window (the latest `retrain.window_batches` labelled batches),
   its key and run name, the trigger and reasons; skips when there is nothing
   new to train on or the monthly budget pauses this trigger.
2. **export_window**: features and labels of the window for the training job.
3. **train**: the cosine-scheduled job (in the worker on the local default; a
   GPU pod through KubernetesPodOperator when `retrain.backend=kubernetes`). A
   retry resumes the run from its last checkpoint. Extra link: *MLflow run*.
4. **register**: every cosine cycle's best becomes a model version with its
   lineage; the best gets `challenger`.
5. **gate**: the SLOs on the holdout, against the champion scored now; a pass
   moves `canary` (the first model ever becomes `champion`); a refusal records
   the evidence, alerts and fails the run.
"""

from __future__ import annotations

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task
from cosine_retrain_common import (
    CONFIG,
    DAG_FAILURE_CALLBACK,
    DEFAULT_ARGS,
    ID_PATTERN,
    RETRAIN_REQUEST,
    START,
    TAGS,
    env,
    permanent,
)
from cosine_retrain_operators import TrainOperator


@dag(
    dag_id="retrain",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable(CONFIG.retrain.schedule, timezone="UTC"),
        assets=[RETRAIN_REQUEST],
    ),
    start_date=START,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    on_failure_callback=DAG_FAILURE_CALLBACK,
    tags=TAGS,
    doc_md=__doc__,
    params={
        "until": Param(
            None,
            type=["null", "string"],
            pattern=ID_PATTERN,
            description="newest batch of the window (default: the newest labelled batch)",
        ),
        "reason": Param(
            None,
            type=["null", "string"],
            maxLength=500,
            description="why a person triggers this run (recorded with the versions)",
        ),
        "trigger": Param(
            None,
            type=["null", "string"],
            enum=[None, "drift", "quality", "scheduled", "manual"],
            description="what asks for the run (default: the asset event, else manual or "
            "scheduled); the monthly budget pauses drift and quality ones",
        ),
    },
)
def retrain():
    @task(doc_md="Window, run name, trigger and reasons; skip when nothing is new.")
    def plan(params=None, triggering_asset_events=None, dag_run=None):
        from pipeline import flow

        events = [e for evs in (triggering_asset_events or {}).values() for e in evs]
        reasons = [e.extra["reason"] for e in events if (e.extra or {}).get("reason")]
        if params["reason"]:
            reasons.append(params["reason"])
        if params["trigger"]:
            trigger = params["trigger"]
        elif events:
            trigger = events[-1].extra.get("trigger", "drift")
        else:
            trigger = "manual" if "manual" in str(dag_run.run_type).lower() else "scheduled"
        with permanent():
            return flow.plan_retrain(env(), trigger, reasons, until=params["until"])

    @task.branch(doc_md="Nothing new to train on (or paused by budget): `skip`.")
    def branch(planned):
        return "skip" if planned["skip"] else "export_window"

    @task(doc_md="Why this run did not train (from `plan`).")
    def skip(planned):
        return planned["reason"]

    @task(doc_md="The window's features and labels as files for the training job.")
    def export_window(planned):
        from pipeline import flow

        with permanent():
            return flow.export_window(env(), planned)

    @task(doc_md="Cycle bests -> model versions with lineage; the best is `challenger`.")
    def register(planned, trained):
        from pipeline import flow

        with permanent():
            return flow.register(env(), planned, trained)

    @task(doc_md="SLO gate on the holdout against the champion; pass -> `canary`.")
    def gate(registration):
        from pipeline import flow

        with permanent():
            return flow.gate(env(), registration)

    planned = plan()
    data = export_window(planned)
    if CONFIG.retrain.backend == "kubernetes":
        trained = _kubernetes_training(planned, data)
    else:
        trained = TrainOperator(
            task_id="train",
            plan=planned,
            data=data,
            doc_md="The cosine-scheduled training job; extra link: its MLflow run.",
        ).output
    branch(planned) >> [skip(planned), data]
    gate(register(planned, trained))


def _kubernetes_training(planned, data):
    """Production: the job runs as a GPU pod (infra/k8s/trainer-pod.yaml), then its
    result is read back from MLflow."""
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    from pipeline.flow import resolve_path

    @task(doc_md="The job's command line for the pod (torchrun when several GPUs).")
    def pod_command(planned, data):
        from pipeline import flow

        return flow.pod_command(env(), planned, data)

    pod = KubernetesPodOperator(
        task_id="train_pod",
        namespace=CONFIG.retrain.kubernetes_namespace,
        image=CONFIG.retrain.trainer_image,
        pod_template_file=str(resolve_path(CONFIG.retrain.pod_template_file)),
        cmds=pod_command(planned, data),
        get_logs=True,
        on_finish_action="delete_succeeded_pod",
        doc_md="The training job as a GPU pod; exit 75 (preempted) is retried and resumes.",
    )

    @task(doc_md="The finished run's result, read back from MLflow.")
    def train_result(planned):
        from pipeline import flow

        with permanent():
            return flow.train_result_from_mlflow(env(), planned)

    result = train_result(planned)
    pod >> result
    return result


retrain()
