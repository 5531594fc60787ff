"""The promotion gate: a challenger becomes ``canary`` only when it meets its SLOs.

Checks (thresholds in ``config.gate``), all evaluated now on one holdout:

- ``serving_smoke``: the version, loaded from the registry, scores a synthetic
  spec-valid batch that exercises every column's allowed domain
  (:mod:`pipeline.steps.registry.smoke`). It runs first; when it fails, the version
  cannot serve, no other check is run, and the check's detail holds the whole
  error (e.g. the signature refusing a column);
- ``auc``: ROC AUC on the holdout >= ``min_auc``;
- ``auc[<column>=<value>]``: AUC in every slice (the spec's slices, e.g. each
  origin airport and carrier) with at least ``slice_min_rows`` rows and both
  classes >= ``min_slice_auc``; smaller slices are listed, not judged;
- ``auc_drop_vs_champion``: the champion scored on the *same* holdout, now
  (never copied from old tags): champion AUC - challenger AUC <= ``max_auc_drop``.
  With no champion (the first model ever) this check passes and says so, and
  the result records ``first_model``;
- ``nan_count``: non-finite steps of the training run <= ``max_nan_count``;
- ``cost_usd``: the training run's cost <= ``max_cost_usd``;
- ``p95_latency_ms``: p95 over ``latency_repeats`` calls of the registered
  pyfunc on ``latency_batch_rows`` rows <= ``max_p95_latency_ms``.

:func:`apply_gate` records the evidence first (a JSON report in the store,
tags on the version), then acts: a pass moves ``canary`` to the version (the
first model ever goes straight to ``champion``: there is nothing to canary
against); a failure moves nothing, tags the version with the reasons, sends a
``gate_failed`` alert and raises :class:`GateFailed`.
"""

from __future__ import annotations

import logging
import math
import re
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pipeline.base.alerts import AlertKind, raise_alert
from pipeline.base.store import ObjectStore, check_id, join_key, put_json
from pipeline.steps.promotion.rules import gate_rules
from pipeline.steps.registry.aliases import (
    CANARY,
    CHALLENGER,
    CHAMPION,
    RegistryError,
    alias_lock,
    current_alias,
    move_alias,
)
from pipeline.steps.registry.scoring import load_scorer, predict_probability
from pipeline.steps.registry.smoke import serving_smoke_test

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

    from pipeline.base.config import PipelineConfig
    from training.api import DatasetSpec

__all__ = [
    "GateCheck",
    "GateFailed",
    "GateResult",
    "apply_gate",
    "evaluate_gate",
    "gate_version",
]

log = logging.getLogger(__name__)


class GateFailed(RuntimeError):
    """The candidate missed at least one SLO; ``result`` holds every check."""

    def __init__(self, result: GateResult) -> None:
        super().__init__(result.describe())
        self.result = result


@dataclass(frozen=True)
class GateCheck:
    name: str
    value: float | None
    threshold: float | None
    op: str  # ">=", "<=", "info"
    passed: bool
    detail: str = ""

    def describe(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        value = "n/a" if self.value is None else f"{self.value:.4g}"
        bound = "" if self.threshold is None else f" {self.op} {self.threshold:.4g}"
        extra = f" ({self.detail})" if self.detail else ""
        return f"{verdict} {self.name}: {value}{bound}{extra}"


@dataclass(frozen=True)
class GateResult:
    model: str
    version: str
    passed: bool
    checks: tuple[GateCheck, ...]
    champion_version: str | None
    first_model: bool
    holdout_rows: int
    evaluated_at: str

    @property
    def failures(self) -> list[GateCheck]:
        return [c for c in self.checks if not c.passed]

    def describe(self) -> str:
        head = "passed" if self.passed else f"FAILED ({len(self.failures)} check(s))"
        against = (
            "first model: no champion, absolute SLOs only"
            if self.first_model
            else f"champion v{self.champion_version}"
        )
        lines = [f"gate {head} for {self.model} v{self.version} ({against}):"]
        lines += [f"  {c.describe()}" for c in self.checks]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _auc(y: Any, p: Any) -> float:
    from training.api import roc_auc

    return roc_auc(y, p)


def _run_value(client: MlflowClient, run_id: str, key: str) -> float | None:
    run = client.get_run(run_id)
    if key in run.data.metrics:
        return float(run.data.metrics[key])
    if key in run.data.tags:
        try:
            return float(run.data.tags[key])
        except ValueError:
            return None
    return None


def evaluate_gate(
    client: MlflowClient,
    config: PipelineConfig,
    spec: DatasetSpec,
    name: str,
    version: str,
    holdout: pd.DataFrame,
) -> GateResult:
    """Every check of the gate for ``name`` v``version`` on ``holdout`` (features + target)."""
    import numpy as np

    if spec.target not in holdout.columns:
        raise RegistryError(f"the holdout has no target column {spec.target!r}")
    # the spec's floors where the config sets none; the AUC drop allowed above its noise
    g = gate_rules(config, spec, holdout[spec.target].to_numpy())
    if len(holdout) == 0:
        raise RegistryError("the holdout is empty: the gate needs labelled rows")
    uri = client.tracking_uri
    mv = client.get_model_version(name, str(version))
    model = load_scorer(name, str(version), uri)
    champion = current_alias(client, name, CHAMPION)
    smoke = serving_smoke_test(model, spec)
    checks: list[GateCheck] = [
        GateCheck(
            "serving_smoke",
            float(smoke.scored),
            float(smoke.rows),
            ">=",
            smoke.passed,
            smoke.detail,
        )
    ]
    if not smoke.passed:
        return GateResult(
            model=name,
            version=str(version),
            passed=False,
            checks=(
                *checks,
                GateCheck(
                    "other_checks",
                    None,
                    None,
                    "info",
                    True,
                    "not run: the version cannot serve spec-valid rows",
                ),
            ),
            champion_version=champion,
            first_model=champion is None,
            holdout_rows=len(holdout),
            evaluated_at=datetime.now(UTC).isoformat(),
        )
    y = holdout[spec.target].to_numpy()
    prob = predict_probability(model, holdout)

    auc = _auc(y, prob)
    checks.append(GateCheck("auc", auc, g.min_auc, ">=", math.isfinite(auc) and auc >= g.min_auc))

    min_rows = g.slice_min_rows or spec.slice_min_rows
    small: list[str] = []
    for column in g.slices if g.slices is not None else list(spec.slices):
        if column not in holdout.columns:
            raise RegistryError(f"gate slice column {column!r} is not in the holdout")
        for value, idx in holdout.groupby(column, sort=True).indices.items():
            label = f"auc[{column}={value}]"
            ys = y[idx]
            if len(idx) < min_rows or ys.min() == ys.max():
                small.append(f"{column}={value} ({len(idx)} rows)")
                continue
            s_auc = _auc(ys, prob[idx])
            checks.append(
                GateCheck(
                    label,
                    s_auc,
                    g.min_slice_auc,
                    ">=",
                    math.isfinite(s_auc) and s_auc >= g.min_slice_auc,
                    f"{len(idx)} rows",
                )
            )
    if small:
        shown = ", ".join(small[:8]) + (f" and {len(small) - 8} more" if len(small) > 8 else "")
        checks.append(
            GateCheck(
                "small_slices",
                float(len(small)),
                None,
                "info",
                True,
                f"not judged (fewer than {min_rows} rows or one class): {shown}",
            )
        )

    first_model = champion is None
    if champion is None:
        checks.append(
            GateCheck(
                "auc_drop_vs_champion",
                None,
                g.max_auc_drop,
                "<=",
                True,
                "no champion yet: the first model is judged on the absolute SLOs alone",
            )
        )
    elif champion == str(version):
        checks.append(
            GateCheck("auc_drop_vs_champion", 0.0, g.max_auc_drop, "<=", True, "it is the champion")
        )
    else:
        champ_auc = _auc(y, predict_probability(load_scorer(name, champion, uri), holdout))
        drop = champ_auc - auc
        checks.append(
            GateCheck(
                "auc_drop_vs_champion",
                drop,
                g.max_auc_drop,
                "<=",
                math.isfinite(drop) and drop <= g.max_auc_drop,
                f"champion v{champion} AUC {champ_auc:.4f} on the same {len(holdout)} rows",
            )
        )

    run_id = mv.run_id or mv.tags.get("training_run_id")
    nan_count = _run_value(client, run_id, "nan_count") if run_id else None
    checks.append(
        GateCheck(
            "nan_count",
            nan_count,
            float(g.max_nan_count),
            "<=",
            nan_count is not None and nan_count <= g.max_nan_count,
            "" if nan_count is not None else "the training run recorded no nan_count",
        )
    )
    cost = _run_value(client, run_id, "cost_usd") if run_id else None
    if g.max_cost_usd is None:
        checks.append(GateCheck("cost_usd", cost, None, "info", True, "no cost limit configured"))
    else:
        checks.append(
            GateCheck(
                "cost_usd", cost, g.max_cost_usd, "<=", cost is not None and cost <= g.max_cost_usd
            )
        )

    rows = holdout.sample(
        n=g.latency_batch_rows, replace=len(holdout) < g.latency_batch_rows, random_state=0
    )
    predict_probability(model, rows)  # warm-up: first call pays for lazy imports
    timings = []
    for _ in range(g.latency_repeats):
        t0 = time.perf_counter()
        predict_probability(model, rows)
        timings.append((time.perf_counter() - t0) * 1000)
    p95 = float(np.percentile(timings, 95))
    checks.append(
        GateCheck(
            "p95_latency_ms",
            p95,
            g.max_p95_latency_ms,
            "<=",
            p95 <= g.max_p95_latency_ms,
            f"{g.latency_repeats} calls of {g.latency_batch_rows} rows",
        )
    )
    return GateResult(
        model=name,
        version=str(version),
        passed=all(c.passed for c in checks),
        checks=tuple(checks),
        champion_version=champion,
        first_model=first_model,
        holdout_rows=len(holdout),
        evaluated_at=datetime.now(UTC).isoformat(),
    )


def report_key(result: GateResult) -> str:
    """One report per evaluation: ``reports/gate/<model>/v<version>-<time>-<id>.json``."""
    stamp = re.sub(r"[^0-9A-Za-z]", "", result.evaluated_at)[:26] or "t"
    return join_key(
        "reports",
        "gate",
        check_id(result.model, "model name"),
        f"v{result.version}-{stamp}-{uuid.uuid4().hex[:8]}.json",
    )


def apply_gate(
    client: MlflowClient, store: ObjectStore, config: PipelineConfig, result: GateResult
) -> GateResult:
    """Record the result, then move ``canary`` (or raise :class:`GateFailed`)."""
    name, version = result.model, result.version
    key = report_key(result)
    put_json(store, key, result.to_dict())
    status = "passed" if result.passed else "failed"
    tags = {
        "gate.status": status,
        "gate.report": store.uri(key),
        "gate.evaluated_at": result.evaluated_at,
        "gate.first_model": str(result.first_model).lower(),
        "gate.reasons": "; ".join(c.describe() for c in result.failures)[:4000] or "all SLOs met",
    }
    for k, v in tags.items():
        client.set_model_version_tag(name, version, k, v)
    if not result.passed:
        _send(config, store, f"{name}-v{version}", result)
        log.warning("%s", result.describe())
        raise GateFailed(result)
    with alias_lock(store, name):
        champion = current_alias(client, name, CHAMPION)
        if champion is None:
            move_alias(
                client,
                store,
                name,
                CHAMPION,
                version,
                why="first model: passed the absolute SLOs; no champion to canary against "
                f"(gate report {key})",
            )
            client.set_model_version_tag(name, version, "canary.status", "skipped_first_model")
        elif champion != version and current_alias(client, name, CANARY) != version:
            previous = current_alias(client, name, CANARY)
            if previous is not None:
                client.set_model_version_tag(name, previous, "canary.status", "superseded")
            move_alias(
                client,
                store,
                name,
                CANARY,
                version,
                why=f"passed the gate against champion v{champion} (report {key})",
            )
            client.set_model_version_tag(name, version, "canary.status", "serving")
        if current_alias(client, name, CHALLENGER) == version:
            move_alias(client, store, name, CHALLENGER, None, why=f"v{version} passed its gate")
    log.info("%s", result.describe())
    return result


def gate_version(
    client: MlflowClient,
    store: ObjectStore,
    config: PipelineConfig,
    spec: DatasetSpec,
    name: str,
    holdout: pd.DataFrame,
    version: str | None = None,
) -> GateResult:
    """Evaluate and apply the gate for ``version`` (default: the ``challenger``)."""
    version = version or current_alias(client, name, CHALLENGER)
    if version is None:
        raise RegistryError(f"{name} has no challenger to gate (register a training run first)")
    return apply_gate(
        client, store, config, evaluate_gate(client, config, spec, name, version, holdout)
    )


def _send(config: PipelineConfig, store: ObjectStore, run_key: str, result: GateResult) -> None:
    failures = [c.describe() for c in result.failures]
    raise_alert(
        config,
        store,
        AlertKind.GATE,
        run_key,
        f"{result.model} v{result.version} failed its promotion gate",
        "\n".join(failures),
        {"model": result.model, "version": result.version, "checks": failures},
    )
