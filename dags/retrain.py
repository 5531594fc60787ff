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

from airflow.sdk import Param, task

from pipeline.apps import dagkit as kit


@kit.pipeline_dag(
    "retrain",
    schedule=kit.asset_or_cron(kit.CONFIG.retrain.schedule, kit.RETRAIN_REQUEST),
    doc_md=__doc__,
    params={
        "until": kit.batch_param("newest batch of the window (default: the newest labelled one)"),
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

        with kit.permanent():
            request = flow.resolve_request(
                kit.events(triggering_asset_events),
                trigger=params["trigger"],
                reason=params["reason"],
                run_type=str(dag_run.run_type),
            )
            return flow.plan_retrain(kit.env(), request, until=params["until"]).to_xcom()

    @task.branch(doc_md="Nothing new to train on (or paused by budget): `skip`.")
    def branch(planned):
        return "skip" if planned["skip"] else "export_window"

    @task(doc_md="Why this run did not train (from `plan`).")
    def skip(planned):
        return planned["reason"]

    @task(doc_md="The window's features and labels as files for the training job.")
    def export_window(planned):
        from pipeline import flow

        with kit.permanent():
            return flow.export_window(kit.env(), flow.Plan.from_xcom(planned)).to_xcom()

    @task(doc_md="Cycle bests -> model versions with lineage; the best is `challenger`.")
    def register(planned, trained):
        from pipeline import flow

        with kit.permanent():
            plan_, trained_ = flow.Plan.from_xcom(planned), flow.Trained.from_xcom(trained)
            return flow.register(kit.env(), plan_, trained_).to_xcom()

    @task(doc_md="SLO gate on the holdout against the champion; pass -> `canary`.")
    def gate(registration):
        from pipeline import flow

        with kit.permanent():
            return flow.gate(kit.env(), flow.Registration.from_xcom(registration)).to_xcom()

    planned = plan()
    data = export_window(planned)
    if kit.CONFIG.retrain.backend == "kubernetes":
        trained = _kubernetes_training(planned, data)
    else:
        trained = kit.TrainOperator(
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

    from pipeline.base.config import resolve_path

    @task(multiple_outputs=True, doc_md="The pod's command and arguments (torchrun: >1 GPU).")
    def pod_command(planned, data):
        from pipeline import flow

        with kit.permanent():
            plan_, window = flow.Plan.from_xcom(planned), flow.Window.from_xcom(data)
            command = flow.pod_command(kit.env(), plan_, window)
            return {"cmds": command.cmds, "arguments": command.arguments}

    command = pod_command(planned, data)
    pod = KubernetesPodOperator(
        task_id="train_pod",
        namespace=kit.CONFIG.retrain.kubernetes_namespace,
        image=kit.CONFIG.retrain.trainer_image,
        pod_template_file=str(resolve_path(kit.CONFIG.retrain.pod_template_file)),
        # both: the template's own `args` would otherwise follow the DAG's command
        cmds=command["cmds"],
        arguments=command["arguments"],
        get_logs=True,
        on_finish_action="delete_succeeded_pod",
        # a diverged run also sends nan_detected (read from its MLflow run's tags)
        on_failure_callback=[kit.DEFAULT_ARGS["on_failure_callback"], kit.train_pod_failed],
        doc_md="The training job as a GPU pod; exit 75 (preempted) is retried and resumes.",
    )

    @task(doc_md="The finished run's result, read back from MLflow.")
    def train_result(planned):
        from pipeline import flow

        with kit.permanent():
            return flow.train_result_from_mlflow(kit.env(), flow.Plan.from_xcom(planned)).to_xcom()

    result = train_result(planned)
    pod >> result
    return result


retrain()
