"""Validation: the dataset spec's Great Expectations suite, run on a stored batch.

The suite is built from the spec (:func:`build_suite`), never written by hand:

- the columns are exactly the spec's (a missing or an extra column fails);
- the row count lies in ``[row_count_min, row_count_max]``;
- per column: its type (numeric, category, timestamp, id), not-null (or at
  most ``max_null_share`` nulls), ``min``/``max`` (for ``range_mostly`` of the
  values), the ``allowed`` set, and, when a reference snapshot is given, at
  most ``max_unseen_share`` of values the reference never saw;
- the id column is unique;
- plus every extra expectation the spec lists (``expectations:``), as is.

Categories are compared as text (:func:`training.data.spec.categories_as_str`),
so ``3``, ``3.0`` and ``"3"`` are one category everywhere; the suite itself is
built in :mod:`pipeline.steps.quality.suite`.

:func:`validate_batch` stores the summary, GX's full result and the Data Docs
(HTML) for every run under ``reports/``. A failing batch is moved to
quarantine with the result beside it, then :class:`ValidationFailed` is raised
with a message that lists each failed expectation and a few offending values.
Results are keyed by the suite's fingerprint: validating the same batch with
the same suite again returns the stored summary.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.base.layout import (
    BatchRef,
    batch_prefix,
    manifest_key,
    quarantine_prefix,
    validation_prefix,
)
from pipeline.base.records import Stored
from pipeline.base.sections import DataConfig, ValidationConfig
from pipeline.base.spark import is_spark, read_batch_with
from pipeline.base.store import (
    ObjectStore,
    copy_object,
    get_json,
    join_key,
    put_json,
    upload_tree,
)
from pipeline.steps.landing.ingest import quarantine_batch
from pipeline.steps.quality.gx_results import FailedExpectation, summarise
from pipeline.steps.quality.reference import reference_categories
from pipeline.steps.quality.spark_frames import prepare_spark, spark_checks
from pipeline.steps.quality.suite import build_suite, prepare_frame, run_suite, suite_fingerprint
from training.api import DataError, DatasetSpec

__all__ = [
    "FailedExpectation",
    "ValidationFailed",
    "ValidationSummary",
    "validate_batch",
    "validate_frame",
]

log = logging.getLogger(__name__)

# Data Docs ship 3.4 MB of help animations; the pages never show them.
DOCS_SKIP = ("*.gif",)


@dataclass(frozen=True)
class ValidationSummary(Stored):
    """The outcome of one validation, in plain values (nothing downstream reads GX objects)."""

    ref: BatchRef
    success: bool
    rows: int
    evaluated: int
    failed: tuple[FailedExpectation, ...]
    skipped: tuple[str, ...]
    suite_fingerprint: str
    reference_id: str | None
    result_uri: str | None = None
    docs_uri: str | None = None
    quarantine_uri: str | None = None
    seconds: float = 0.0
    validated_at: str = ""
    reused: bool = False

    @property
    def passed(self) -> int:
        return self.evaluated - len(self.failed)

    def message(self) -> str:
        if self.success:
            head = (
                f"batch {self.ref} passed validation: {self.evaluated} expectations on "
                f"{self.rows:,} rows"
            )
        else:
            where = f" and was quarantined at {self.quarantine_uri}" if self.quarantine_uri else ""
            head = (
                f"batch {self.ref} failed validation ({len(self.failed)} of {self.evaluated} "
                f"expectations){where}:"
            )
        lines = [head, *(f"  - {f.line()}" for f in self.failed)]
        lines += [f"  (skipped: {s})" for s in self.skipped]
        if self.docs_uri:
            lines.append(f"  Data Docs: {self.docs_uri}")
        return "\n".join(lines)


class ValidationFailed(DataError):
    """A batch failed its suite; raised after the evidence is stored and the batch quarantined."""

    def __init__(self, summary: ValidationSummary) -> None:
        super().__init__(summary.message())
        self.summary = summary


# ------------------------------------------------------------------------------ entry points


def _run(
    frame: Any,
    spec: DatasetSpec,
    *,
    ref: BatchRef,
    categories: dict[str, list[str]] | None,
    reference_id: str | None,
    config: ValidationConfig,
    docs_dir: Path | None,
) -> tuple[ValidationSummary, Any]:
    """Our summary and GX's own result (which only validate_batch keeps, as JSON)."""
    t0 = time.perf_counter()
    checks, skipped = build_suite(spec, categories, reference_id or "")
    if is_spark(frame):  # data.engine: spark; nothing but GX's result reaches the worker
        prepared, gx_checks = prepare_spark(frame, spec), spark_checks(checks)
        # a wrong type is a whole column's in Spark (Parquet columns are typed): GX's
        # observed type says it, no values are read back to count
        described = pd.DataFrame(columns=frame.columns)
    else:
        prepared = described = prepare_frame(frame, spec)
        gx_checks = checks
    result = run_suite(
        prepared,
        gx_checks,
        suite_name=spec.name,
        asset_name=f"{ref.batch_id}-v{ref.version}",
        examples=config.examples,
        docs_dir=docs_dir,
    )
    success, failed = summarise(result, gx_checks, described, examples=config.examples)
    if not success and not failed:  # a failure we could not attribute: never report a pass
        failed = [FailedExpectation("unknown", None, "suite", "GX reported a failure")]
    summary = ValidationSummary(
        ref=ref,
        success=success,
        rows=_rows(frame, result),
        evaluated=len(result.results),
        failed=tuple(failed),
        skipped=tuple(skipped),
        suite_fingerprint=suite_fingerprint(checks),
        reference_id=reference_id,
        seconds=round(time.perf_counter() - t0, 3),
        validated_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    return summary, result


def _rows(frame: Any, result: Any) -> int:
    """The batch's row count: pandas' length, or (Spark) what GX's row-count check
    counted (no second pass over the data)."""
    if not is_spark(frame):
        return len(frame)
    for r in result.results:
        if r.expectation_config.type == "expect_table_row_count_to_be_between":
            observed = (r.result or {}).get("observed_value")
            if isinstance(observed, int):
                return observed
    return int(frame.count())


def validate_frame(
    frame: Any,
    spec: DatasetSpec,
    *,
    ref: BatchRef,
    categories: dict[str, list[str]] | None = None,
    reference_id: str | None = None,
    config: ValidationConfig | None = None,
) -> ValidationSummary:
    """Validate a frame, pandas or Spark (nothing is stored): the pure part of
    :func:`validate_batch`."""
    summary, _ = _run(
        frame,
        spec,
        ref=ref,
        categories=categories,
        reference_id=reference_id,
        config=config or ValidationConfig(),
        docs_dir=None,
    )
    return summary


def validate_batch(
    store: ObjectStore,
    spec: DatasetSpec,
    ref: BatchRef,
    *,
    reference_id: str | None = None,
    config: ValidationConfig | None = None,
    data: DataConfig | None = None,
) -> ValidationSummary:
    """Validate stored batch ``ref``; store summary, GX result and Data Docs under reports/.

    On failure the batch moves to quarantine (the result beside it) and
    :class:`ValidationFailed` is raised. Re-running with the same suite returns
    the stored summary (``reused=True``) without running GX again. ``data``: the
    engine (default pandas; ``spark`` reads the batch with Spark, GX's Spark datasource
    runs the same suite).
    """
    config = config or ValidationConfig()
    categories = reference_categories(store, spec.name, reference_id) if reference_id else None
    checks, _ = build_suite(spec, categories, reference_id or "")
    prefix = validation_prefix(ref, suite_fingerprint(checks))
    summary_key = join_key(prefix, "summary.json")
    if store.exists(summary_key):
        stored = ValidationSummary.from_dict(get_json(store, summary_key))
        stored = replace(stored, reused=True)
        if stored.success:
            return stored
        raise _fail(store, ref, stored)
    frame = read_batch_with(store, ref, data)
    with tempfile.TemporaryDirectory(prefix="gx-docs-") as tmp:
        docs_dir = Path(tmp) if config.data_docs else None
        summary, result = _run(
            frame,
            spec,
            ref=ref,
            categories=categories,
            reference_id=reference_id,
            config=config,
            docs_dir=docs_dir,
        )
        put_json(store, join_key(prefix, "result.json"), result.to_json_dict(), overwrite=True)
        docs_uri = None
        if docs_dir is not None:
            upload_tree(
                store, docs_dir, join_key(prefix, "data_docs"), overwrite=True, skip=DOCS_SKIP
            )
            docs_uri = store.uri(join_key(prefix, "data_docs", "index.html"))
    summary = replace(
        summary, result_uri=store.uri(join_key(prefix, "result.json")), docs_uri=docs_uri
    )
    if summary.success:
        put_json(store, summary_key, summary.as_dict())
        log.info("%s", summary.message().splitlines()[0])
        return summary
    summary = replace(summary, quarantine_uri=store.uri(quarantine_prefix(ref)))
    put_json(store, summary_key, summary.as_dict())
    raise _fail(store, ref, summary)


def _fail(store: ObjectStore, ref: BatchRef, summary: ValidationSummary) -> ValidationFailed:
    """Quarantine the batch (unless a previous run already did); the error to raise."""
    if store.exists(manifest_key(batch_prefix(ref))):
        gx_result = join_key(validation_prefix(ref, summary.suite_fingerprint), "result.json")
        if store.exists(gx_result):
            copy_object(
                store, gx_result, join_key(quarantine_prefix(ref), "gx_result.json"), overwrite=True
            )
        evidence = {
            "stage": "validation",
            **summary.as_dict(),
            "errors": [f.line() for f in summary.failed],
        }
        quarantine_batch(store, ref, evidence)
    return ValidationFailed(summary)
