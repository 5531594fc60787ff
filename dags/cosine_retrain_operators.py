"""The training task as an operator, so that it can carry an extra link to its MLflow run."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator, BaseOperatorLink


class MlflowRunLink(BaseOperatorLink):
    """'MLflow run' on the training task: opens the run the task trained (lr trace,
    losses, cycle bests). The URL is the task's result, pushed when it finishes."""

    name = "MLflow run"

    def get_link(self, operator: BaseOperator, *, ti_key: Any) -> str:
        # at the end of the task Airflow passes the running task instance itself
        pull = getattr(ti_key, "xcom_pull", None)
        result = pull(task_ids=operator.task_id, key="return_value") if pull else None
        return (result or {}).get("mlflow_run_url") or ""


class TrainOperator(BaseOperator):
    """Runs :func:`pipeline.flow.train` for the window planned upstream (local backend)."""

    operator_extra_links = (MlflowRunLink(),)
    template_fields = ("plan", "data")

    def __init__(self, *, plan: Any, data: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plan = plan
        self.data = data

    def execute(self, context: Any) -> dict:
        from cosine_retrain_common import env, permanent

        from pipeline import flow

        with permanent():
            return flow.train(env(), self.plan, self.data)
