"""Airflow callbacks that send pipeline alerts (:mod:`pipeline.base.alerts`).

Task level, as a notifier (the usual way)::

    default_args={"on_failure_callback": PipelineNotifier()}          # kind task_failed
    @task(on_success_callback=PipelineNotifier(kind="promoted", title="{{ ti.task_id }} done"))

DAG level, as a plain function (a ``BaseNotifier`` there crashes under ``airflow
dags test``: STACK_NOTES §0.1; the function works there and under the scheduler)::

    @dag(..., on_failure_callback=dag_failure_callback)

Both build an :class:`~pipeline.base.alerts.Alert` from the Airflow context (DAG, task,
run id, try number, exception, log URL) and call :func:`~pipeline.base.alerts.send_alert`
with the configuration and store built here, at the edge (``load_config()``,
``build_store()``). The alert's ``run_key`` is ``<dag_id>/<run_id>/<task_id>/try<N>``
(a task) or ``<dag_id>/<run_id>`` (a DAG run), so a callback that fires twice for
the same failure sends one alert. A callback never raises: an alert that cannot
be sent is logged (and recorded for ``python -m pipeline alerts retry``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Literal

from airflow.sdk import BaseNotifier

from pipeline.base.alerts import Alert, AlertKind, AlertResult, send_alert

__all__ = ["PipelineNotifier", "alert_from_context", "dag_failure_callback", "notify_context"]

log = logging.getLogger(__name__)

MAX_EXCEPTION = 1000


def _get(obj: Any, name: str) -> Any:
    try:
        return getattr(obj, name, None)
    except Exception:  # a property that needs a live Airflow (conf, DB) is optional here
        return None


def _redact(text: str) -> str:
    """Airflow's secrets masker hides registered secrets (connection passwords...)."""
    try:
        from airflow.sdk._shared.secrets_masker import redact

        return str(redact(text))
    except Exception:
        return text


def alert_from_context(
    context: Mapping[str, Any],
    kind: AlertKind | str = AlertKind.TASK_FAILED,
    *,
    level: Literal["task", "dag"] = "task",
    title: str | None = None,
    text: str | None = None,
    run_key: str | None = None,
    severity: Literal["info", "warning", "critical"] | None = None,
    details: Mapping[str, Any] | None = None,
) -> Alert:
    """An :class:`Alert` describing the task (or DAG run) of an Airflow callback context."""
    kind = AlertKind(kind)
    ti = context.get("ti") or context.get("task_instance")
    dag = context.get("dag")
    dag_id = str(_get(dag, "dag_id") or _get(ti, "dag_id") or "unknown_dag")
    run_id = str(context.get("run_id") or _get(ti, "run_id") or "unknown_run")
    task_id = _get(ti, "task_id") if level == "task" else None
    try_number = _get(ti, "try_number") if level == "task" else None
    map_index = _get(ti, "map_index") if level == "task" else None
    exc = context.get("exception")
    reason = context.get("reason")
    log_url = _get(ti, "log_url") if ti is not None else None
    exception = _redact(f"{type(exc).__name__}: {exc}")[:MAX_EXCEPTION] if exc else None

    if level == "task":
        where = f"{dag_id}.{task_id}" + (f"[{map_index}]" if map_index not in (None, -1) else "")
        parts = [dag_id, run_id, str(task_id)]
        if map_index not in (None, -1):
            parts.append(f"map{map_index}")
        parts.append(f"try{try_number}")
    else:
        where = f"DAG {dag_id}"
        parts = [dag_id, run_id]
    if title is None:
        if kind is AlertKind.TASK_FAILED:
            title = (
                f"Task {where} failed (try {try_number})"
                if level == "task"
                else f"{where} run failed" + (f": {reason}" if reason else "")
            )
        else:
            title = f"{kind.value}: {where}"
    if text is None:
        lines = [f"run {run_id}"]
        if level == "dag" and task_id is None and _get(ti, "task_id"):
            lines.append(f"last failed task: {_get(ti, 'task_id')}")
        if exception:
            lines.append(f"error: {exception}")
        if reason and level == "dag":
            lines.append(f"reason: {reason}")
        if log_url:
            lines.append(f"log: {log_url}")
        text = "\n".join(lines)
    facts: dict[str, Any] = {
        "dag_id": dag_id,
        "run_id": run_id,
        "task_id": task_id,
        "try_number": try_number,
        "map_index": map_index,
        "exception": exception,
        "reason": reason,
        "log_url": log_url,
        "logical_date": context.get("logical_date"),
    }
    facts = {k: v for k, v in facts.items() if v is not None}
    return Alert(
        kind=kind,
        run_key=run_key or "/".join(parts),
        title=title,
        text=text,
        details={**facts, **dict(details or {})},
        severity=severity,
    )


def notify_context(
    context: Mapping[str, Any],
    kind: AlertKind | str = AlertKind.TASK_FAILED,
    *,
    config_path: str | None = None,
    **alert_args: Any,
) -> AlertResult | None:
    """Build the alert from ``context`` and send it; never raises (returns None on error)."""
    try:
        from pipeline.base.config import load_config
        from pipeline.base.store import build_store

        alert = alert_from_context(context, kind, **alert_args)
        config = load_config(config_path)
        result = send_alert(alert, config=config, store=build_store(config))
    except Exception:
        log.exception("could not send the pipeline alert for this callback")
        return None
    log.info("pipeline alert %s %s: %s", alert.kind.value, alert.run_key, result.channels)
    return result


def dag_failure_callback(context: Mapping[str, Any]) -> None:
    """DAG-level ``on_failure_callback``: one ``task_failed`` alert per failed DAG run."""
    notify_context(context, AlertKind.TASK_FAILED, level="dag")


class PipelineNotifier(BaseNotifier):
    """A ``BaseNotifier`` for ``on_*_callback`` that sends a pipeline alert.

    ``title``, ``text`` and ``run_key`` are Jinja templates rendered by Airflow
    (``"{{ ti.task_id }} done"``); unset, they describe the task from the context.
    ``level="dag"`` describes the DAG run instead of a task.
    """

    template_fields = ("title", "text", "run_key")
    # never ask the DAG (a SerializedDAG in some callback paths) whether to render natively
    render_template_as_native_obj = False

    def __init__(
        self,
        kind: AlertKind | str = AlertKind.TASK_FAILED,
        *,
        title: str | None = None,
        text: str | None = None,
        run_key: str | None = None,
        severity: Literal["info", "warning", "critical"] | None = None,
        details: Mapping[str, Any] | None = None,
        level: Literal["task", "dag"] = "task",
        config_path: str | None = None,
    ) -> None:
        super().__init__()
        try:  # a typo fails when the DAG file is parsed, not when the alert is due
            self.kind = AlertKind(kind)
        except ValueError:
            raise ValueError(
                f"unknown alert kind {kind!r}; choose from {[k.value for k in AlertKind]}"
            ) from None
        self.title = title
        self.text = text
        self.run_key = run_key
        self.severity = severity
        self.details = dict(details or {})
        self.level = level
        self.config_path = config_path
        self.last_result: AlertResult | None = None

    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        dag = context.get("dag")
        if jinja_env is None and dag is not None and not hasattr(dag, "get_template_env"):
            # DAG-level callbacks can get a SerializedDAG (STACK_NOTES §0.1): plain sandbox
            jinja_env = self.get_template_env(dag=None)
        super().render_template_fields(context, jinja_env)

    def __call__(self, *args: Any) -> None:
        # rendering writes the rendered values over the templates: keep the templates so
        # that one notifier in default_args serves every task of a process
        templates = {name: getattr(self, name) for name in self.template_fields}
        try:
            super().__call__(*args)
        except Exception:
            self.log.exception("the pipeline notifier failed (the alert was not sent)")
        finally:
            for name, value in templates.items():
                setattr(self, name, value)

    def notify(self, context: Any) -> None:
        self.last_result = notify_context(
            context,
            self.kind,
            level=self.level,
            title=self.title,
            text=self.text,
            run_key=self.run_key,
            severity=self.severity,
            details=self.details,
            config_path=self.config_path,
        )
