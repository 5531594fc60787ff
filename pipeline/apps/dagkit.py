"""What the cosine-retrain DAGs share: assets, the ``@dag`` arguments, the error policy,
the training operator.

No logic lives in the DAG files: every task body calls one function of
:mod:`pipeline.flow` and returns its record as JSON (``to_xcom()``). Nothing here
touches a database, a connection or a service at parse time; the configuration
is read from the environment (``COSINE_RETRAIN_*``, ``$COSINE_RETRAIN_CONFIG``)
only to name schedules and the training backend.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import (
    Asset,
    AssetOrTimeSchedule,
    BaseOperator,
    BaseOperatorLink,
    Param,
    dag,
)

from pipeline.apps.notifiers import PipelineNotifier, dag_failure_callback
from pipeline.apps.timetables import NoCatchUpCron
from pipeline.base.config import load_config
from pipeline.base.store import ID_PATTERN

__all__ = [
    "BATCH_LANDED",
    "CONFIG",
    "ID_PATTERN",
    "LABELS_LANDED",
    "PROMOTION_HELD",
    "RETRAIN_REQUEST",
    "MlflowRunLink",
    "TrainOperator",
    "announce",
    "approval_answer",
    "approval_task",
    "approvers",
    "asset_or_cron",
    "batch_param",
    "cron",
    "env",
    "events",
    "permanent",
    "pipeline_dag",
    "train_pod_failed",
]

log = logging.getLogger(__name__)

CONFIG = load_config()  # environment and YAML only: no I/O beyond reading the file

# The lineage users see in the UI: a batch lands -> the monitor may request a
# retrain -> the retrain trains, registers, gates; labels land -> the canary is reviewed
# -> a promotion held for a person is asked about in its own run.
BATCH_LANDED = Asset(name="batch_landed")
LABELS_LANDED = Asset(name="labels_landed")
RETRAIN_REQUEST = Asset(name="retrain_request")
# a review held a promotion for a person: the approval DAG asks (one run per held version)
PROMOTION_HELD = Asset(name="promotion_held")

START = pendulum.datetime(2024, 1, 1, tz="UTC")
TAGS = ["cosine-retrain"]

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "ml-platform",
    # transient failures (a server restarting, a network blip) retry with backoff;
    # permanent ones (bad data, a refused gate, a bad config) fail at once: see permanent()
    "retries": 2,
    "retry_delay": timedelta(seconds=10),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=5),
    "on_failure_callback": PipelineNotifier(),
}


def pipeline_dag(
    dag_id: str,
    *,
    schedule: Any,
    doc_md: str | None,
    params: dict[str, Any],
    max_active_runs: int = 1,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``@dag`` with what every cosine-retrain DAG shares: start date, no catch-up,
    retries with backoff, alerts on failure (task and DAG level), tags."""
    return dag(
        dag_id=dag_id,
        schedule=schedule,
        start_date=START,
        catchup=False,
        max_active_runs=max_active_runs,
        default_args=DEFAULT_ARGS,
        on_failure_callback=dag_failure_callback,
        tags=TAGS,
        doc_md=doc_md,
        params=params,
    )


def cron(expression: str | None) -> NoCatchUpCron | None:
    """The cron (UTC) of a DAG, whose missed ticks never run (pipeline/apps/timetables.py);
    None when there is none or ``cron_schedules`` is off."""
    if expression is None or not CONFIG.cron_schedules:
        return None
    return NoCatchUpCron(expression, timezone="UTC")


def asset_or_cron(expression: str | None, asset: Asset) -> AssetOrTimeSchedule | list[Asset]:
    """Run on every event of ``asset``, and on the cron too (when it is on)."""
    timetable = cron(expression)
    if timetable is None:
        return [asset]
    return AssetOrTimeSchedule(timetable=timetable, assets=[asset])


def batch_param(description: str) -> Param:
    """An optional batch id (the store's id pattern), for the trigger form."""
    return Param(None, type=["null", "string"], pattern=ID_PATTERN, description=description)


# batch ids separated by commas (spaces allowed after a comma), each of the store's pattern
_ONE_ID = ID_PATTERN.strip("^$")
BATCH_LIST_PATTERN = rf"^{_ONE_ID}(, ?{_ONE_ID}){{0,99}}$"


def batch_list_param(description: str) -> Param:
    """Optional batch ids, comma-separated, each of the store's id pattern."""
    return Param(None, type=["null", "string"], pattern=BATCH_LIST_PATTERN, description=description)


@contextlib.contextmanager
def permanent() -> Iterator[None]:
    """Turn errors that a retry cannot fix into AirflowFailException (no retry)."""
    from airflow.sdk.exceptions import AirflowFailException

    from pipeline.base.config import ConfigError
    from pipeline.base.store import InvalidKey, ObjectExists
    from pipeline.steps.landing.sources import IngestError
    from pipeline.steps.promotion.gate import GateFailed
    from pipeline.steps.quality.validation import ValidationFailed
    from pipeline.steps.registry.aliases import RegistryError
    from training.api import CheckpointError, DataError, ResultError, TrainingDiverged
    from training.api import ConfigError as TrainConfigError

    try:
        yield
    except (
        ValidationFailed,
        GateFailed,
        IngestError,
        RegistryError,
        ConfigError,
        TrainConfigError,
        DataError,
        CheckpointError,
        TrainingDiverged,
        ResultError,
        InvalidKey,
        ObjectExists,
        ValueError,
    ) as exc:
        raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc


def announce(swept: dict[str, Any], outlet: Any) -> None:
    """The landing zone's event: every batch a sweep landed (``batch_ids``), in batch
    order; a sweep that landed nothing emits none (the task is skipped)."""
    if not swept["landed"]:
        from airflow.sdk.exceptions import AirflowSkipException

        raise AirflowSkipException(f"nothing new landed from landing/{swept['kind']}/")
    outlet.extra = {"batch_ids": list(swept["landed"]), "kind": swept["kind"]}


def env() -> Any:
    """The pipeline environment of a task (built at run time, never at parse time)."""
    from pipeline.flow import build_env

    return build_env()


def events(triggering_asset_events: Any) -> Any:
    """The run's triggering asset events as the flow's own records, oldest first."""
    from pipeline.flow.triggers import events_from_airflow

    return events_from_airflow(triggering_asset_events)


def run_batches(
    choose: Any, params: Any, triggering_asset_events: Any, *, none: str | None = None
) -> list[str]:
    """The batches a run checks, in batch order: ``choose(env, events, batch_id)`` (one of
    the flow's choosers: the param, the run's events, the catch-up). ``none``: an empty
    choice fails the run with that reason (no retry)."""
    with permanent():
        batches = choose(env(), events(triggering_asset_events), params["batch_id"])
    if not batches and none is not None:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(none)
    return batches


class MlflowRunLink(BaseOperatorLink):
    """'MLflow run' on the training task: opens the run the task trained (lr trace,
    losses, cycle bests). The URL is the task's result, pushed when it finishes."""

    name = "MLflow run"

    def get_link(self, operator: BaseOperator, *, ti_key: Any) -> str:
        # at the end of the task Airflow passes the running task instance itself
        pull = getattr(ti_key, "xcom_pull", None)
        result = pull(task_ids=operator.task_id, key="return_value") if pull else None
        return (result or {}).get("mlflow_run_url") or ""


def train_pod_failed(context: Any) -> None:
    """``on_failure_callback`` of the GPU pod's task, beside the task_failed notifier:
    a pod whose run diverged sends ``nan_detected`` (the local backend's task sends
    it itself). Never raises."""
    from pipeline import flow
    from pipeline.flow.retrain import alert_if_diverged

    try:
        planned = context["ti"].xcom_pull(task_ids="plan", key="return_value")
        alert_if_diverged(env(), flow.Plan.from_xcom(planned))
    except Exception:
        log.exception("could not check whether the training pod's run diverged")


class TrainOperator(BaseOperator):
    """Runs :func:`pipeline.flow.train` for the window planned upstream (local backend)."""

    operator_extra_links = (MlflowRunLink(),)
    template_fields = ("plan", "data")

    def __init__(self, *, plan: Any, data: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plan = plan
        self.data = data

    def execute(self, context: Any) -> dict[str, Any]:
        from pipeline import flow

        with permanent():
            plan, window = flow.Plan.from_xcom(self.plan), flow.Window.from_xcom(self.data)
            return flow.train(env(), plan, window).to_xcom()


def approval_task(*, task_id: str, held_task_id: str) -> BaseOperator:
    """The person's answer about promoting the canary (``canary.require_approval``): a
    human-in-the-loop task, listed under the UI's Required Actions, whose body is the
    evidence (the question, then the model card) that ``held_task_id`` returned. No
    answer within ``canary.approval_timeout_hours``: the default, Reject, with nobody
    as responder, which :func:`approval_answer` reads as a timeout."""
    from airflow.providers.standard.operators.hitl import HITLOperator

    from pipeline.steps.promotion.approval import APPROVE, REJECT

    pull = f"ti.xcom_pull(task_ids='{held_task_id}')"
    return HITLOperator(
        task_id=task_id,
        subject=f"Promote {{{{ {pull}['model'] }}}} v{{{{ {pull}['version'] }}}} to champion?",
        body=f"{{{{ {pull}['evidence'] }}}}",
        options=[APPROVE, REJECT],
        defaults=[REJECT],
        params={"comment": Param("", type="string", description="why (kept in the audit trail)")},
        assigned_users=approvers(CONFIG.canary.approvers) or None,
        response_timeout=timedelta(hours=CONFIG.canary.approval_timeout_hours),
        retries=0,
        doc_md="A person approves or rejects the promotion (Required Actions in the UI).",
    )


def approvers(entries: list[str]) -> list[dict[str, str]]:
    """``canary.approvers`` (``id`` or ``id:name``, checked by the config) as the HITL
    task's assigned users."""
    users = []
    for entry in entries:
        user_id, _, name = (x.strip() for x in entry.partition(":"))
        users.append({"id": user_id, "name": name or user_id})
    return users


def approval_answer(response: Any) -> dict[str, Any]:
    """The human-in-the-loop task's result as the flow's answer: ``chosen``, ``who``
    (None when nobody answered: the timeout's default), ``comment``."""
    if not isinstance(response, dict) or not response.get("chosen_options"):
        raise ValueError(f"no approval answer in {response!r}")
    user = response.get("responded_by_user")
    who = None
    if isinstance(user, dict) and (user.get("name") or user.get("id")):
        who = f"{user.get('name') or user.get('id')} (Airflow user {user.get('id')})"
    comment = (response.get("params_input") or {}).get("comment") or ""
    return {"chosen": response["chosen_options"][0], "who": who, "comment": str(comment)}
