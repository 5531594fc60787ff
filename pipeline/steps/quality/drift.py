"""Drift: how far a batch's features moved from a reference snapshot (Evidently).

Evidently's ``DataDriftPreset`` compares the batch with a reference snapshot (the
champion's training sample) column by column, with one method per column type
(default: normed Wasserstein distance for numbers, Jensen-Shannon distance for
categories). The batch drifts when the share of drifted columns is at or above
``drift.share_threshold``. Batches above ``drift.sample_size`` rows are sampled
deterministically (by a hash of the id column) so that a check stays
interactive; the summary and the HTML report say so.

Nulls are compared too: a column whose share of nulls moves by more than
``drift.null_share_threshold`` (a column empty in the reference that fills up,
or the reverse) is a :class:`NullShift`, a finding that makes the batch drift
whatever the share of drifted values. Evidently compares values only, so a
column without values on one side is left out of its report; it appears in
``skipped`` with the reason, never silently.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import tempfile
import time
import warnings
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from pipeline.base.layout import BatchRef, drift_prefix
from pipeline.base.records import Stored
from pipeline.base.sections import DataConfig, DriftConfig
from pipeline.base.spark import is_spark, read_batch_with
from pipeline.base.store import ObjectStore, get_json, join_key, put_json
from pipeline.steps.quality.reference import read_reference, reference_manifest, sample_rows
from pipeline.steps.quality.spark_frames import sample_spark
from training.api import DataError, DatasetSpec, categories_as_str

__all__ = [
    "P_VALUE_METHODS",
    "ColumnDrift",
    "DriftSummary",
    "NullShift",
    "check_drift",
    "compute_drift",
    "null_shifts",
    "settings_fingerprint",
]

log = logging.getLogger(__name__)

# Evidently methods whose score is a p-value (drift when below the threshold).
P_VALUE_METHODS = frozenset(
    {
        "ks",
        "chisquare",
        "z",
        "anderson",
        "cramer_von_mises",
        "es",
        "fisher_exact",
        "g_test",
        "mannw",
        "empirical_mmd",
        "t_test",
        "TVD",
    }
)


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    kind: Literal["numeric", "categorical"]
    method: str
    score: float
    threshold: float
    drifted: bool

    @property
    def score_kind(self) -> str:
        return "p_value" if self.method in P_VALUE_METHODS else "distance"


@dataclass(frozen=True)
class NullShift:
    """A column whose share of nulls moved by more than ``threshold`` (in absolute terms)."""

    column: str
    reference_share: float
    current_share: float
    threshold: float

    def line(self) -> str:
        return (
            f"{self.column}: null share {self.reference_share:.0%} in the reference -> "
            f"{self.current_share:.0%} in the batch (moved more than {self.threshold:.0%})"
        )


@dataclass(frozen=True)
class DriftSummary(Stored):
    """One drift check of a batch against a reference snapshot, in plain values."""

    ref: BatchRef
    reference_id: str
    rows_current: int
    rows_reference: int
    compared_current: int
    compared_reference: int
    sampled: bool
    drift_share: float
    share_threshold: float
    drifted: bool
    drifted_columns: tuple[str, ...]
    columns: tuple[ColumnDrift, ...]
    skipped: tuple[str, ...] = ()
    null_shifts: tuple[NullShift, ...] = ()
    settings_fingerprint: str = ""
    report_uri: str | None = None
    summary_uri: str | None = None
    seconds: float = 0.0
    checked_at: str = ""
    reused: bool = False

    def column(self, name: str) -> ColumnDrift:
        for c in self.columns:
            if c.column == name:
                return c
        raise KeyError(name)

    def scores(self) -> dict[str, float]:
        return {c.column: c.score for c in self.columns}

    def message(self) -> str:
        verdict = "drifted" if self.drifted else "did not drift"
        sample = (
            f" (sampled {self.compared_current:,} of {self.rows_current:,} rows)"
            if self.sampled
            else ""
        )
        lines = [
            f"batch {self.ref} {verdict} against reference {self.reference_id}: "
            f"{sum(c.drifted for c in self.columns)} of {len(self.columns)} columns "
            f"({self.drift_share:.0%}; threshold {self.share_threshold:.0%}){sample}"
            + (f"; the null share moved in {len(self.null_shifts)}" if self.null_shifts else "")
        ]
        for c in sorted(self.columns, key=lambda c: (not c.drifted, c.column)):
            mark = "DRIFT" if c.drifted else "ok   "
            cmp = "<" if c.score_kind == "p_value" else ">="
            lines.append(
                f"  {mark} {c.column:<18} {c.method:<14} {c.score:9.4f}  (drift if {cmp} "
                f"{c.threshold:g})"
            )
        lines += [f"  NULLS {n.line()}" for n in self.null_shifts]
        lines += [f"  (skipped: {s})" for s in self.skipped]
        if self.report_uri:
            lines.append(f"  report: {self.report_uri}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------ drift


def _drift_columns(spec: DatasetSpec, config: DriftConfig) -> tuple[list[str], list[str]]:
    wanted = config.columns if config.columns is not None else spec.feature_columns
    unknown = [c for c in wanted if c not in spec.feature_columns]
    if unknown:
        raise DataError(
            f"drift.columns {unknown} are not feature columns of dataset spec {spec.name!r} "
            f"(features: {spec.feature_columns})"
        )
    for name in [*config.column_methods, *config.column_thresholds]:
        if name not in wanted:
            raise DataError(f"drift settings name column {name!r}, which drift does not compare")
    cats = [c for c in wanted if c in spec.categorical_features]
    nums = [c for c in wanted if c in spec.numeric_features]
    return nums, cats


def _prepare(frame: pd.DataFrame, nums: list[str], cats: list[str], what: str) -> pd.DataFrame:
    missing = [c for c in nums + cats if c not in frame.columns]
    if missing:
        raise DataError(f"{what} lacks column(s) {missing} needed for the drift check")
    out = {}
    for name in nums:
        try:
            out[name] = pd.to_numeric(frame[name], errors="raise").astype("float64")
        except (ValueError, TypeError):
            raise DataError(f"{what}: column {name!r} is not numeric (validate it first)") from None
    for name in cats:
        out[name] = categories_as_str(frame[name])
    return pd.DataFrame(out)


def settings_fingerprint(config: DriftConfig, nums: list[str], cats: list[str]) -> str:
    payload = {
        "share": config.share_threshold,
        "num": [config.num_method, config.num_threshold],
        "cat": [config.cat_method, config.cat_threshold],
        "per_column": [config.column_methods, config.column_thresholds],
        "columns": [nums, cats],
        "sample": [config.sample_size, config.sample_seed],
        "null_share": config.null_share_threshold,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def _method_and_threshold(column: str, kind: str, config: DriftConfig) -> tuple[str, float]:
    method = config.column_methods.get(
        column, config.num_method if kind == "numeric" else config.cat_method
    )
    default = config.num_threshold if kind == "numeric" else config.cat_threshold
    return method, config.column_thresholds.get(column, default)


def compute_drift(
    current: pd.DataFrame,
    reference: pd.DataFrame,
    spec: DatasetSpec,
    config: DriftConfig | None = None,
    *,
    ref: BatchRef,
    reference_id: str,
    html_path: Path | None = None,
    drawn_from: int | None = None,
) -> DriftSummary:
    """Run Evidently's drift preset on two frames (nothing is stored); the pure part of
    :func:`check_drift`. Writes the HTML report to ``html_path`` when given.

    ``drawn_from``: ``current`` is already the sample of a batch of that many rows (the
    Spark engine draws it: :func:`~pipeline.steps.quality.spark_frames.sample_spark`)."""
    config = config or DriftConfig()
    t0 = time.perf_counter()
    nums, cats = _drift_columns(spec, config)
    cur_sample, cur_sampled = sample_rows(
        current, config.sample_size, spec.id_column, config.sample_seed
    )
    rows_current = len(current)
    if drawn_from is not None:
        rows_current, cur_sampled = drawn_from, cur_sampled or drawn_from > len(current)
    ref_sample, ref_sampled = sample_rows(
        reference, config.sample_size, spec.id_column, config.sample_seed
    )
    cur = _prepare(cur_sample, nums, cats, f"batch {ref}")
    base = _prepare(ref_sample, nums, cats, f"reference {reference_id}")
    if len(cur) == 0 or len(base) == 0:
        raise DataError(f"drift check of {ref}: the batch or the reference has no rows")
    shifts = null_shifts(base, cur, nums + cats, config.null_share_threshold)
    skipped = []
    for name in list(nums + cats):
        empty = [side for side, f in (("reference", base), ("batch", cur)) if f[name].isna().all()]
        if empty:
            skipped.append(
                f"{name}: no values in the {' and the '.join(empty)} (null share "
                f"{base[name].isna().mean():.0%} -> {cur[name].isna().mean():.0%}); "
                "compared by its null share only"
            )
            nums = [c for c in nums if c != name]
            cats = [c for c in cats if c != name]
    columns = nums + cats
    if not columns and not shifts:
        raise DataError(f"drift check of {ref}: no column has values to compare")
    snapshot, results = _evidently(cur, base, nums, cats, config) if columns else (None, [])
    missing = [c for c in columns if c not in {r.column for r in results}]
    skipped += [f"{c}: Evidently returned no drift score for it" for c in missing]
    value_drifted = tuple(c.column for c in results if c.drifted)
    drifted = value_drifted + tuple(n.column for n in shifts if n.column not in value_drifted)
    share = len(value_drifted) / len(results) if results else 0.0
    summary = DriftSummary(
        ref=ref,
        reference_id=reference_id,
        rows_current=rows_current,
        rows_reference=len(reference),
        compared_current=len(cur),
        compared_reference=len(base),
        sampled=cur_sampled or ref_sampled,
        drift_share=round(share, 6),
        share_threshold=config.share_threshold,
        drifted=share >= config.share_threshold or bool(shifts),
        drifted_columns=drifted,
        columns=tuple(results),
        skipped=tuple(skipped),
        null_shifts=tuple(shifts),
        settings_fingerprint=settings_fingerprint(config, nums, cats),
        seconds=round(time.perf_counter() - t0, 3),
        checked_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    if html_path is not None:
        if snapshot is not None:
            snapshot.save_html(str(html_path))
        else:
            html_path.write_text("<html><body></body></html>", encoding="utf-8")
        _add_banner(html_path, summary)
    return summary


def null_shifts(
    reference: pd.DataFrame, current: pd.DataFrame, columns: list[str], threshold: float
) -> list[NullShift]:
    """Columns whose share of nulls moved by more than ``threshold`` (absolute) from the
    reference to the current frame."""
    out = []
    for name in columns:
        before, after = float(reference[name].isna().mean()), float(current[name].isna().mean())
        if round(abs(after - before), 9) > threshold:  # 0.45 - 0.2 is not above 0.25
            out.append(NullShift(name, round(before, 6), round(after, 6), threshold))
    return out


def _evidently(
    cur: pd.DataFrame, base: pd.DataFrame, nums: list[str], cats: list[str], config: DriftConfig
) -> tuple[Any, list[ColumnDrift]]:
    """Evidently's drift preset on the columns with values: its snapshot and our results."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    columns = nums + cats
    preset = DataDriftPreset(
        columns=columns,
        drift_share=config.share_threshold,
        num_method=config.num_method,
        cat_method=config.cat_method,
        num_threshold=config.num_threshold,
        cat_threshold=config.cat_threshold,
        per_column_method=dict(config.column_methods) or None,
        per_column_threshold=dict(config.column_thresholds) or None,
    )
    definition = DataDefinition(numerical_columns=nums, categorical_columns=cats)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy's divide-by-zero noise
        snapshot = Report([preset], include_tests=True).run(
            current_data=Dataset.from_pandas(cur[columns], data_definition=definition),
            reference_data=Dataset.from_pandas(base[columns], data_definition=definition),
        )
    return snapshot, _read_snapshot(snapshot.dict(), nums, config)


def _read_snapshot(data: dict[str, Any], nums: list[str], config: DriftConfig) -> list[ColumnDrift]:
    """Per-column results from Evidently's snapshot dict (read once, here, by type name)."""
    scores: dict[str, float] = {}
    for metric in data.get("metrics", []):
        cfg = metric.get("config", {})
        if str(cfg.get("type", "")).endswith("ValueDrift"):
            scores[cfg["column"]] = float(metric["value"])
    flags: dict[str, bool] = {}
    for test in data.get("tests", []):
        params = test.get("metric_config", {}).get("params", {})
        if str(params.get("type", "")).endswith("ValueDrift") and "column" in params:
            flags[params["column"]] = (
                str(getattr(test["status"], "value", test["status"])) == "FAIL"
            )
    out = []
    for column, score in scores.items():
        kind: Literal["numeric", "categorical"] = "numeric" if column in nums else "categorical"
        method, threshold = _method_and_threshold(column, kind, config)
        fallback = score < threshold if method in P_VALUE_METHODS else score >= threshold
        out.append(ColumnDrift(column, kind, method, score, threshold, flags.get(column, fallback)))
    return out


def _add_banner(path: Path, summary: DriftSummary) -> None:
    """Say at the top of Evidently's report what was compared (and that it was sampled)."""
    note = (
        f"Batch {summary.ref} against reference {summary.reference_id}: "
        f"{summary.compared_current:,} current rows, {summary.compared_reference:,} reference "
        f"rows. Drift share {summary.drift_share:.0%} (threshold "
        f"{summary.share_threshold:.0%}): {'DRIFTED' if summary.drifted else 'no drift'}."
    )
    for shift in summary.null_shifts:
        note += f" Null share moved: {shift.line()}."
    for skipped in summary.skipped:
        note += f" Not in the value comparison: {skipped}."
    if summary.sampled:
        note += (
            f" SAMPLED: the batch has {summary.rows_current:,} rows and the reference "
            f"{summary.rows_reference:,}; each was sampled deterministically (by id hash) to at "
            "most the configured drift.sample_size."
        )
    banner = (
        '<div style="font-family:sans-serif;padding:10px 16px;background:#fff4ce;'
        f'border-bottom:1px solid #e0c060">{html.escape(note)}</div>'
    )
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("<body>", "<body>" + banner, 1), encoding="utf-8")


def check_drift(
    store: ObjectStore,
    spec: DatasetSpec,
    ref: BatchRef,
    reference_id: str,
    *,
    config: DriftConfig | None = None,
    data: DataConfig | None = None,
) -> DriftSummary:
    """Compare stored batch ``ref`` with reference snapshot ``reference_id``.

    With ``data.engine: spark`` Spark counts the batch and draws its sample (the rows
    the pandas engine would sample, :mod:`~pipeline.steps.quality.spark_frames`): only
    the sample reaches the worker, and the decision is the pandas engine's.

    Writes ``summary.json`` and Evidently's HTML report under
    ``reports/<dataset>/<batch>/v<N>/drift/<reference>-<settings>/``; the same
    check again (same batch, reference and settings) returns the stored summary.
    """
    config = config or DriftConfig()
    reference_manifest(store, spec.name, reference_id)  # fail early, with the fix
    nums, cats = _drift_columns(spec, config)
    prefix = drift_prefix(ref, reference_id, settings_fingerprint(config, nums, cats))
    summary_key = join_key(prefix, "summary.json")
    if store.exists(summary_key):
        return replace(DriftSummary.from_dict(get_json(store, summary_key)), reused=True)
    current, drawn_from = read_batch_with(store, ref, data), None
    if is_spark(current):
        current, drawn_from, _ = sample_spark(
            current, config.sample_size, spec.id_column, config.sample_seed
        )
    reference = read_reference(store, spec.name, reference_id)
    with tempfile.TemporaryDirectory(prefix="drift-") as tmp:
        html_path = Path(tmp) / "report.html" if config.html else None
        summary = compute_drift(
            current,
            reference,
            spec,
            config,
            ref=ref,
            reference_id=reference_id,
            html_path=html_path,
            drawn_from=drawn_from,
        )
        report_uri = None
        if html_path is not None:
            store.put_file(join_key(prefix, "report.html"), html_path, overwrite=True)
            report_uri = store.uri(join_key(prefix, "report.html"))
    summary = replace(summary, report_uri=report_uri, summary_uri=store.uri(summary_key))
    put_json(store, summary_key, summary.as_dict(), overwrite=True)
    log.info("%s", summary.message().splitlines()[0])
    return summary
