"""Spend: the cost of every training run, summed per calendar month, and the pause rule.

Every training run logs its cost as the MLflow metric ``cost_usd``. The spend of
a month is the sum of the last ``cost_usd`` value of every run (active or
deleted: deleting a run does not refund it) whose **start time** falls in that
calendar month, UTC. Runs without the metric (still running, crashed before the
end) count as zero and are reported.

The rule (:func:`retrain_allowed`), when ``budget.monthly_usd`` is set and the
month's spend is **above** it:

- ``drift``-triggered retrains are paused, and so are ``quality``-triggered ones
  unless ``budget.pause_quality`` is false;
- ``scheduled`` retrains still run unless ``budget.pause_scheduled`` is true;
- ``manual`` retrains always run (a person decided);
- a pause sends one ``spend_paused`` alert per month with the figures.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from pipeline.base.kinds import TRIGGERS, Trigger

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from pipeline.base.alerts import AlertResult
    from pipeline.base.config import PipelineConfig
    from pipeline.base.store import ObjectStore

__all__ = [
    "COST_METRIC",
    "RunCost",
    "SpendDecision",
    "SpendSummary",
    "check_spend",
    "month_bounds",
    "month_of",
    "monthly_spend",
    "retrain_allowed",
    "spend_experiments",
]

log = logging.getLogger(__name__)

COST_METRIC = "cost_usd"


class RunCost(NamedTuple):
    run_id: str
    run_name: str
    cost_usd: float
    start_time: datetime  # UTC


@dataclass(frozen=True)
class SpendSummary:
    """The spend of one calendar month (UTC) over some experiments."""

    month: str  # YYYY-MM
    total_usd: float
    runs: tuple[RunCost, ...]  # runs with a cost, by start time
    budget_usd: float | None
    over_budget: bool  # total_usd > budget_usd
    experiments: tuple[str, ...] = ()
    missing_experiments: tuple[str, ...] = ()  # names that do not exist (yet): zero spend
    runs_without_cost: tuple[str, ...] = field(default=())  # run ids with no cost_usd

    def message(self) -> str:
        budget = f"${self.budget_usd:,.2f}" if self.budget_usd is not None else "no budget"
        verdict = " OVER BUDGET" if self.over_budget else ""
        head = (
            f"spend {self.month}: ${self.total_usd:,.2f} of {budget} over {len(self.runs)} run(s) "
            f"in {', '.join(self.experiments) or 'no experiment'}{verdict}"
        )
        lines = [head]
        for run in self.runs:
            lines.append(
                f"  {run.start_time:%Y-%m-%d %H:%M}Z  {run.run_id[:12]}  "
                f"{run.run_name[:40]:<40}  ${run.cost_usd:,.4f}"
            )
        if self.runs_without_cost:
            lines.append(
                f"  {len(self.runs_without_cost)} run(s) without {COST_METRIC} (counted 0)"
            )
        for name in self.missing_experiments:
            lines.append(f"  experiment {name!r} does not exist (counted 0)")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        """Its own fields as JSON values (tuples as lists), the runs last with their start
        times in ISO 8601."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}
        runs = out.pop("runs")
        out["runs"] = [{**run._asdict(), "start_time": run.start_time.isoformat()} for run in runs]
        return out


@dataclass(frozen=True)
class SpendDecision:
    allowed: bool
    reason: str
    alert: AlertResult | None = None  # the spend_paused alert, when this decision paused


def month_of(value: str | date | datetime) -> str:
    """``YYYY-MM`` of a month string, a date, or a datetime (aware ones in UTC)."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return f"{value.year:04d}-{value.month:02d}"
    if isinstance(value, date):
        return f"{value.year:04d}-{value.month:02d}"
    text = str(value).strip()
    try:
        parsed = datetime.strptime(text, "%Y-%m")
    except ValueError:
        raise ValueError(f"month must look like 2026-11 (YYYY-MM), got {value!r}") from None
    return f"{parsed.year:04d}-{parsed.month:02d}"


def month_bounds(month: str | date | datetime) -> tuple[datetime, datetime]:
    """[first instant, first instant of the next month) in UTC."""
    year, number = map(int, month_of(month).split("-"))
    start = datetime(year, number, 1, tzinfo=UTC)
    end = datetime(year + (number == 12), number % 12 + 1, 1, tzinfo=UTC)
    return start, end


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def monthly_spend(
    client: MlflowClient,
    experiment_names: list[str],
    month: str | date | datetime,
    *,
    budget_usd: float | None = None,
) -> SpendSummary:
    """Sum the last ``cost_usd`` of every run that started in ``month`` (UTC)."""
    from mlflow.entities import ViewType

    label = month_of(month)
    start, end = month_bounds(label)
    found, missing = [], []
    for name in dict.fromkeys(experiment_names):
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            missing.append(name)
        else:
            found.append(experiment.experiment_id)
    if missing:
        log.warning("spend %s: experiment(s) %s do not exist; counted as 0", label, missing)
    runs: list[RunCost] = []
    without: list[str] = []
    if found:
        query = f"attributes.start_time >= {_ms(start)} AND attributes.start_time < {_ms(end)}"
        token = None
        while True:
            page = client.search_runs(
                found,
                filter_string=query,
                run_view_type=ViewType.ALL,
                max_results=1000,
                order_by=["attributes.start_time ASC"],
                page_token=token,
            )
            for run in page:
                cost = run.data.metrics.get(COST_METRIC)
                started = datetime.fromtimestamp(run.info.start_time / 1000, UTC)
                if not start <= started < end:  # the server already filtered; belt and braces
                    continue
                if cost is None or not math.isfinite(cost):
                    without.append(run.info.run_id)
                    continue
                runs.append(RunCost(run.info.run_id, run.info.run_name or "", float(cost), started))
            token = page.token
            if not token:
                break
    runs.sort(key=lambda r: (r.start_time, r.run_id))
    total = math.fsum(r.cost_usd for r in runs)
    over = budget_usd is not None and total > budget_usd
    return SpendSummary(
        month=label,
        total_usd=total,
        runs=tuple(runs),
        budget_usd=budget_usd,
        over_budget=over,
        experiments=tuple(dict.fromkeys(experiment_names)),
        missing_experiments=tuple(missing),
        runs_without_cost=tuple(without),
    )


def _next_month(month: str) -> str:
    return month_of(month_bounds(month)[1])


def retrain_allowed(
    trigger: Trigger,
    summary: SpendSummary,
    config: PipelineConfig,
    *,
    store: ObjectStore | None = None,
) -> SpendDecision:
    """Apply the monthly budget rule to a retrain request (see the module docstring).

    The budget is ``config.budget.monthly_usd`` (not the summary's). When the rule
    pauses, a ``spend_paused`` alert keyed by the month goes out (``store`` default:
    the configured one).
    """
    if trigger not in TRIGGERS:
        raise ValueError(f"retrain trigger must be one of {list(TRIGGERS)}, got {trigger!r}")
    rule = config.budget
    budget = rule.monthly_usd
    if budget is None:
        return SpendDecision(True, "no monthly budget (budget.monthly_usd is unset)")
    figures = (
        f"${summary.total_usd:,.2f} spent in {summary.month} of a ${budget:,.2f} monthly budget "
        f"({len(summary.runs)} run(s))"
    )
    if not summary.total_usd > budget:
        return SpendDecision(True, f"within budget: {figures}")
    paused = ["drift"]
    if rule.pause_quality:
        paused.append("quality")
    if rule.pause_scheduled:
        paused.append("scheduled")
    if trigger not in paused:
        why = (
            "a manual retrain always runs"
            if trigger == "manual"
            else f"{trigger} retrains still run (budget.pause_{trigger} is false)"
        )
        return SpendDecision(True, f"over budget ({figures}), but {why}")
    resume = f"{_next_month(summary.month)}-01 00:00 UTC"
    reason = (
        f"paused: over budget ({figures}); {trigger}-triggered retrains are paused "
        f"until {resume} or until budget.monthly_usd is raised"
    )
    return SpendDecision(
        False, reason, _spend_alert(summary, budget, paused, trigger, config, store)
    )


def _spend_alert(
    summary: SpendSummary,
    budget: float,
    paused: list[str],
    trigger: str,
    config: PipelineConfig,
    store: ObjectStore | None,
) -> AlertResult | None:
    from pipeline.base.alerts import Alert, AlertKind, send_alert

    running = [t for t in ("drift", "quality", "scheduled") if t not in paused] + ["manual"]
    top = sorted(summary.runs, key=lambda r: -r.cost_usd)[:5]
    text = "\n".join(
        [
            f"Training spend in {summary.month} is ${summary.total_usd:,.2f}, "
            f"${summary.total_usd - budget:,.2f} over the ${budget:,.2f} monthly budget "
            f"({len(summary.runs)} run(s)).",
            f"Paused until {_next_month(summary.month)}-01 (UTC): {', '.join(paused)} retrains.",
            f"Still running: {', '.join(running)} retrains.",
            "Costliest runs: "
            + (", ".join(f"{r.run_name or r.run_id[:12]} ${r.cost_usd:,.2f}" for r in top) or "-"),
        ]
    )
    alert = Alert(
        kind=AlertKind.SPEND,
        run_key=summary.month,
        title=(
            f"Retrains paused: ${summary.total_usd:,.2f} spent of ${budget:,.2f} in {summary.month}"
        ),
        text=text,
        details={
            "month": summary.month,
            "total_usd": round(summary.total_usd, 6),
            "budget_usd": budget,
            "over_by_usd": round(summary.total_usd - budget, 6),
            "runs": len(summary.runs),
            "paused_triggers": paused,
            "running_triggers": running,
            "first_trigger_paused": trigger,
            "resumes": f"{_next_month(summary.month)}-01T00:00:00Z",
            "experiments": list(summary.experiments),
            "top_runs": [
                {"run_id": r.run_id, "run_name": r.run_name, "cost_usd": r.cost_usd} for r in top
            ],
        },
    )
    try:
        if store is None:
            from pipeline.base.store import build_store

            store = build_store(config)
        return send_alert(alert, config=config, store=store)
    except Exception:  # the decision stands even when the alert cannot go out
        log.exception("could not send the spend_paused alert for %s", summary.month)
        return None


def spend_experiments(config: PipelineConfig, default: str) -> list[str]:
    """``budget.experiments``, else ``default`` (the experiment training runs go to:
    ``mlflow.experiment`` or the model name, :func:`pipeline.base.tracking.experiment_name`)."""
    return list(config.budget.experiments) if config.budget.experiments else [default]


def check_spend(
    trigger: Trigger,
    config: PipelineConfig,
    *,
    client: MlflowClient | None = None,
    experiment: str | None = None,
    store: ObjectStore | None = None,
    month: str | date | datetime | None = None,
) -> tuple[SpendSummary, SpendDecision]:
    """One call for a DAG task: this month's spend (UTC) and the rule's decision.

    ``experiment``: where training runs go (default: ``mlflow.experiment``, else the
    dataset spec's model name); counted unless ``budget.experiments`` names others.
    ``client`` defaults to one on the configured tracking URI.
    """
    from pipeline.base import tracking

    if client is None:
        client = tracking.build_client(config)
    if experiment is None:
        from pipeline.base.config import resolve_path
        from training.api import load_spec

        spec = load_spec(resolve_path(config.dataset_spec))
        experiment = tracking.experiment_name(config, spec)
    summary = monthly_spend(
        client,
        spend_experiments(config, experiment),
        month if month is not None else datetime.now(UTC),
        budget_usd=config.budget.monthly_usd,
    )
    return summary, retrain_allowed(trigger, summary, config, store=store)
