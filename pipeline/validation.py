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
so ``3``, ``3.0`` and ``"3"`` are one category everywhere.

:func:`validate_batch` stores the summary, GX's full result and the Data Docs
(HTML) for every run under ``reports/``. A failing batch is moved to
quarantine with the result beside it, then :class:`ValidationFailed` is raised
with a message that lists each failed expectation and a few offending values.
Results are keyed by the suite's fingerprint: validating the same batch with
the same suite again returns the stored summary.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.config import ValidationConfig
from pipeline.ingest import quarantine_batch, read_batch
from pipeline.layout import (
    BatchRef,
    batch_prefix,
    manifest_key,
    quarantine_prefix,
    validation_prefix,
)
from pipeline.reference import reference_categories
from pipeline.storage import (
    ObjectStore,
    copy_object,
    get_json,
    join_key,
    put_json,
    upload_tree,
)
from training.data.spec import DataError, DatasetSpec, categories_as_str

__all__ = [
    "Check",
    "FailedExpectation",
    "SuiteError",
    "ValidationFailed",
    "ValidationSummary",
    "build_suite",
    "prepare_frame",
    "run_suite",
    "suite_fingerprint",
    "validate_batch",
    "validate_frame",
]

log = logging.getLogger(__name__)

NUMERIC_TYPES = [
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
]
TIMESTAMP_TYPES = ["datetime64[ns]", "datetime64[us]", "datetime64[ms]", "datetime64[s]"]
CATEGORY_TYPES = ["str"]  # after prepare_frame: categories are text
ID_TYPES = ["str", *NUMERIC_TYPES[:8]]
TYPE_WORDS = {
    "numeric": "numbers",
    "categorical": "categories (text or whole numbers)",
    "timestamp": "timestamps",
    "id": "ids (text or integers)",
}
_CONTAINERS = (dict, list, tuple, set, bytes, bytearray, np.ndarray)
# Data Docs ship 3.4 MB of help animations; the pages never show them.
DOCS_SKIP = ("*.gif",)


class SuiteError(DataError):
    """An expectation listed in the dataset spec is not a valid GX expectation."""


@dataclass(frozen=True)
class Check:
    """One expectation of the suite, in our own terms until it is handed to GX."""

    type: str
    kwargs: dict[str, Any]
    rule: str  # which part of the spec asked for it, e.g. "distance: min/max"
    role: str = ""  # the column's role, for messages

    def key(self) -> tuple[str, str | None]:
        return self.type, self.kwargs.get("column")


@dataclass(frozen=True)
class FailedExpectation:
    expectation: str
    column: str | None
    rule: str
    summary: str  # "12 of 28,834 values (0.04%) lie outside [1, 6000]"
    examples: tuple[str, ...] = ()

    def line(self) -> str:
        where = self.column if self.column is not None else "table"
        eg = f"; e.g. {', '.join(self.examples)}" if self.examples else ""
        return f"{where}: {self.summary}{eg}  [{self.expectation}]"


@dataclass(frozen=True)
class ValidationSummary:
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

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ref"] = self.ref.as_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ValidationSummary:
        d = dict(d)
        d["ref"] = BatchRef(**d["ref"])
        d["failed"] = tuple(
            FailedExpectation(**{**f, "examples": tuple(f["examples"])}) for f in d["failed"]
        )
        d["skipped"] = tuple(d["skipped"])
        return cls(**d)


class ValidationFailed(DataError):
    """A batch failed its suite; raised after the evidence is stored and the batch quarantined."""

    def __init__(self, summary: ValidationSummary) -> None:
        super().__init__(summary.message())
        self.summary = summary


# ------------------------------------------------------------------------------ the suite


def build_suite(
    spec: DatasetSpec, categories: dict[str, list[str]] | None = None, reference_id: str = ""
) -> tuple[list[Check], list[str]]:
    """The checks the spec asks for, and the ones it had to skip (and why).

    ``categories``: per categorical column, the categories of the reference
    snapshot; without it the ``max_unseen_share`` checks are skipped.
    """
    checks = [
        Check(
            "expect_table_columns_to_match_set",
            {"column_set": spec.column_names, "exact_match": True},
            "the spec's columns, no more, no less",
        ),
        Check(
            "expect_table_row_count_to_be_between",
            {"min_value": spec.row_count_min, "max_value": spec.row_count_max},
            "row_count_min/row_count_max",
        ),
    ]
    skipped = []
    types = {
        "numeric": NUMERIC_TYPES,
        "categorical": CATEGORY_TYPES,
        "timestamp": TIMESTAMP_TYPES,
        "id": ID_TYPES,
    }
    for col in spec.columns:
        name, role = col.name, col.role
        checks.append(
            Check(
                "expect_column_values_to_be_in_type_list",
                {"column": name, "type_list": types[role]},
                f"{name}: role {role}",
                role,
            )
        )
        if col.max_null_share < 1.0:
            kwargs: dict[str, Any] = {"column": name}
            if col.max_null_share > 0:
                kwargs["mostly"] = round(1.0 - col.max_null_share, 10)
            checks.append(
                Check(
                    "expect_column_values_to_not_be_null",
                    kwargs,
                    f"{name}: max_null_share {col.max_null_share}",
                    role,
                )
            )
        if col.min is not None or col.max is not None:
            kwargs = {"column": name, "min_value": col.min, "max_value": col.max}
            if col.range_mostly < 1.0:
                kwargs["mostly"] = col.range_mostly
            checks.append(
                Check("expect_column_values_to_be_between", kwargs, f"{name}: min/max", role)
            )
        if col.allowed is not None:
            checks.append(
                Check(
                    "expect_column_values_to_be_in_set",
                    {"column": name, "value_set": list(col.allowed)},
                    f"{name}: allowed",
                    role,
                )
            )
        if col.max_unseen_share is not None:
            seen = (categories or {}).get(name)
            if seen is None:
                skipped.append(f"{name}: max_unseen_share needs a reference snapshot")
            else:
                checks.append(
                    Check(
                        "expect_column_values_to_be_in_set",
                        {
                            "column": name,
                            "value_set": sorted(seen),
                            "mostly": round(1.0 - col.max_unseen_share, 10),
                        },
                        f"{name}: max_unseen_share {col.max_unseen_share} "
                        f"(reference {reference_id})",
                        role,
                    )
                )
        if role == "id":
            checks.append(
                Check("expect_column_values_to_be_unique", {"column": name}, f"{name}: id", role)
            )
    for i, extra in enumerate(spec.expectations):
        checks.append(Check(extra.type, dict(extra.kwargs), f"expectations[{i}] of the spec"))
    return checks, skipped


def suite_fingerprint(checks: list[Check]) -> str:
    payload = json.dumps([[c.type, c.kwargs] for c in checks], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def prepare_frame(frame: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """The frame as GX sees it: categories as text, nullable numbers as float64.

    Values whose type is wrong are left alone so that the type check names them.
    """
    out = {}
    for name in frame.columns:
        col = frame[name]
        try:
            role = spec.column(str(name)).role
        except KeyError:
            out[name] = col
            continue
        if role == "categorical":
            out[name] = _as_category_text(col)
        elif role == "numeric":
            if isinstance(col.dtype, pd.api.extensions.ExtensionDtype) and (
                pd.api.types.is_integer_dtype(col) or pd.api.types.is_float_dtype(col)
            ):
                out[name] = col.astype("float64")
            elif col.isna().all():
                out[name] = col.astype("float64")  # all null: no value can have a wrong type
            else:
                out[name] = col
        elif role == "id" and isinstance(col.dtype, pd.StringDtype):
            out[name] = col.astype(object)
        else:
            out[name] = col
    return pd.DataFrame(out)


def _nested(col: pd.Series) -> bool:
    """Whether an object column holds containers or raw bytes (a struct or list column
    of a Parquet file): not categories, whatever their text would look like."""
    if not pd.api.types.is_object_dtype(col):
        return False
    return bool(col.map(lambda v: isinstance(v, _CONTAINERS)).any())


def _as_category_text(col: pd.Series) -> pd.Series:
    if _nested(col):
        return col  # dicts, lists, bytes: the type check names them
    if pd.api.types.is_float_dtype(col) and (col.dropna() % 1 != 0).any():
        return col  # fractional numbers are not categories: the type check will say so
    if pd.api.types.is_datetime64_any_dtype(col):
        return col
    if pd.api.types.infer_dtype(col, skipna=True) in ("string", "empty"):
        return col.astype(object)  # already text: skip the per-value conversion
    return categories_as_str(col)


def _gx_expectation(check: Check) -> Any:
    import great_expectations.expectations as gxe
    from great_expectations.exceptions import ExpectationNotFoundError
    from great_expectations.expectations.registry import get_expectation_impl
    from pydantic import ValidationError as PydanticError

    try:
        cls = get_expectation_impl(check.type)
    except ExpectationNotFoundError:
        raise SuiteError(
            f"{check.rule}: {check.type!r} is not a Great Expectations expectation "
            "(see https://greatexpectations.io/expectations)"
        ) from None
    if not hasattr(gxe, cls.__name__):
        raise SuiteError(f"{check.rule}: {check.type!r} cannot be used in a suite")
    try:
        return cls(**check.kwargs)
    except (PydanticError, TypeError, ValueError) as exc:
        detail = "; ".join(str(exc).splitlines()[:4])
        raise SuiteError(f"{check.rule}: invalid arguments for {check.type}: {detail}") from None


def _context(docs_dir: Path | None) -> Any:
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    sites = {}
    if docs_dir is not None:
        sites = {
            "local_site": {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(docs_dir),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            }
        }
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        data_docs_sites=sites,
        progress_bars=ProgressBarsConfig(globally=False),
        analytics_enabled=False,
    )
    return gx.get_context(project_config=config, mode="ephemeral")


def run_suite(
    frame: pd.DataFrame,
    checks: list[Check],
    *,
    suite_name: str,
    asset_name: str,
    examples: int = 5,
    docs_dir: Path | None = None,
) -> Any:
    """Run ``checks`` on ``frame`` with GX; returns GX's ExpectationSuiteValidationResult.

    With ``docs_dir``, Data Docs for this run are written there (a Checkpoint
    with an UpdateDataDocsAction).
    """
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier

    expectations = [_gx_expectation(c) for c in checks]
    ctx = _context(docs_dir)
    batch_definition = (
        ctx.data_sources.add_pandas(name="pipeline")
        .add_dataframe_asset(name=asset_name)
        .add_batch_definition_whole_dataframe("whole")
    )
    # all at once: add_expectation() re-serialises the whole suite each time (O(n^2))
    suite = ctx.suites.add(gx.ExpectationSuite(name=suite_name, expectations=expectations))
    definition = ctx.validation_definitions.add(
        gx.ValidationDefinition(
            name=f"{suite_name}-{asset_name}", data=batch_definition, suite=suite
        )
    )
    result_format = {"result_format": "SUMMARY", "partial_unexpected_count": max(examples, 20)}
    if docs_dir is None:
        return definition.run(batch_parameters={"dataframe": frame}, result_format=result_format)
    checkpoint = ctx.checkpoints.add(
        gx.Checkpoint(
            name=f"{suite_name}-{asset_name}",
            validation_definitions=[definition],
            actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs")],
            result_format=result_format,
        )
    )
    run_id = RunIdentifier(run_name=asset_name, run_time=datetime.now(UTC))
    outcome = checkpoint.run(batch_parameters={"dataframe": frame}, run_id=run_id)
    return next(iter(outcome.run_results.values()))


# ------------------------------------------------------------------------------ results


def _exception_message(result: Any) -> str | None:
    info = result.exception_info or {}
    if info.get("raised_exception"):
        return str(info.get("exception_message") or "error")
    for value in info.values():
        if isinstance(value, dict) and value.get("raised_exception"):
            return str(value.get("exception_message") or "error")
    return None


EXAMPLE_CHARS = 60  # an example value in a message: a 10 MB field is shown by its length


def _fmt(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        text = str(int(value))
    elif isinstance(value, str):
        text = repr(value)
    else:
        text = str(value)
    if len(text) > EXAMPLE_CHARS:
        text = f"{text[: EXAMPLE_CHARS - 20]}... ({len(text):,} chars)"
    return text


def _distinct(values: Any, n: int) -> tuple[str, ...]:
    """Up to ``n`` distinct values as text (unhashable values too: dicts, lists)."""
    seen: list[str] = []
    for v in values:
        text = _fmt(v)
        if text not in seen:
            seen.append(text)
        if len(seen) == n:
            break
    return tuple(seen)


def _distinct_examples(result: dict[str, Any], n: int) -> tuple[str, ...]:
    return _distinct(result.get("partial_unexpected_list") or [], n)


def _is_null(value: Any) -> bool:
    if isinstance(value, _CONTAINERS):
        return False
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _type_problems(
    frame: pd.DataFrame, column: str, role: str, n: int
) -> tuple[int, tuple[str, ...]]:
    """How many values make a column the wrong type, and a few of them (distinct)."""
    col = frame[column]
    col = col[~col.map(_is_null)] if pd.api.types.is_object_dtype(col) else col.dropna()
    if role == "numeric":
        try:
            bad = col[pd.to_numeric(col, errors="coerce").isna()]
        except (TypeError, ValueError):  # containers: to_numeric refuses them outright
            bad = col[~col.map(lambda v: isinstance(v, (int, float, np.number)))]
    elif role == "timestamp":
        bad = col[pd.to_datetime(col.astype(str), errors="coerce", format="mixed").isna()]
    elif role == "categorical" and pd.api.types.is_float_dtype(col):
        bad = col[col % 1 != 0]
    else:
        bad = col
    return len(bad), _distinct(bad, n)


def _describe(
    check: Check, result: dict[str, Any], frame: pd.DataFrame, n: int
) -> tuple[str, tuple[str, ...]]:
    kind, kw = check.type, check.kwargs
    if kind == "expect_table_columns_to_match_set":
        mismatch = (result.get("details") or {}).get("mismatched") or {}
        parts = []
        if mismatch.get("missing"):
            parts.append(f"missing column(s) {sorted(mismatch['missing'])}")
        if mismatch.get("unexpected"):
            parts.append(f"unexpected column(s) {sorted(mismatch['unexpected'])} (not in the spec)")
        return "; ".join(parts) or f"columns {result.get('observed_value')}", ()
    if kind == "expect_table_row_count_to_be_between":
        rows = result.get("observed_value")
        return (
            f"{rows:,} rows; the spec expects {kw['min_value']:,} to {kw['max_value']:,}",
            (),
        )
    if kind == "expect_column_values_to_be_in_type_list":
        column = kw["column"]
        want = TYPE_WORDS.get(check.role, str(kw["type_list"]))
        dtype = frame[column].dtype
        count, examples = _type_problems(frame, column, check.role, n)
        if pd.api.types.is_object_dtype(dtype) and count:
            return f"{count:,} of {len(frame):,} values are not {want}", examples
        if check.role == "categorical" and pd.api.types.is_float_dtype(dtype) and count:
            return f"{count:,} values are fractional numbers, not {want}", examples
        return f"has dtype {result.get('observed_value') or dtype}; expected {want}", ()
    if "unexpected_count" in result:
        count, total = result["unexpected_count"], result.get("element_count") or 0
        share = 100.0 * count / total if total else 0.0
        limit = ""
        if "mostly" in kw:
            limit = f"; at most {100 * (1 - kw['mostly']):.3g}% allowed"
        phrase = {
            "expect_column_values_to_not_be_null": "are null",
            "expect_column_values_to_be_unique": "are duplicated",
            "expect_column_values_to_be_between": (
                f"lie outside [{_fmt(kw.get('min_value'))}, {_fmt(kw.get('max_value'))}]"
            ),
        }.get(kind, "fail the expectation")
        if kind == "expect_column_values_to_be_in_set":
            phrase = (
                "were never seen in the reference"
                if "max_unseen_share" in check.rule
                else "are not in the allowed set"
            )
        examples = () if kind == "expect_column_values_to_not_be_null" else None
        if examples is None:
            examples = _distinct_examples(result, n)
        return f"{count:,} of {total:,} values ({share:.2f}%) {phrase}{limit}", examples
    observed = result.get("observed_value")
    args = ", ".join(f"{k}={_fmt(v)}" for k, v in kw.items() if k != "column")
    return f"observed {_fmt(observed)}; expected {args}", ()


def summarise(
    result: Any,
    checks: list[Check],
    frame: pd.DataFrame,
    *,
    examples: int,
) -> tuple[bool, list[FailedExpectation]]:
    """Our failures from GX's result (matched on type + column: GX reorders results)."""
    by_key: dict[tuple[str, str | None], list[Check]] = {}
    for c in checks:
        by_key.setdefault(c.key(), []).append(c)
    names = set(map(str, frame.columns))
    failed: list[FailedExpectation] = []
    for r in result.results:
        if r.success:
            continue
        cfg = r.expectation_config
        column = cfg.kwargs.get("column")
        candidates = by_key.get((cfg.type, column), [])
        check = _match(candidates, cfg.kwargs) or Check(cfg.type, dict(cfg.kwargs), "spec")
        if column is not None and column not in names:
            continue  # a missing column: reported once, by the column-set expectation
        error = _exception_message(r)
        if error is not None:
            summary, eg = f"could not be evaluated ({error.splitlines()[0][:200]})", ()
        else:
            summary, eg = _describe(check, dict(r.result), frame, examples)
        failed.append(FailedExpectation(cfg.type, column, check.rule, summary, eg[:examples]))
    # a column of the wrong type makes its other checks error out: its type failure says it all
    wrong_type = {
        f.column for f in failed if f.expectation == "expect_column_values_to_be_in_type_list"
    }
    failed = [
        f
        for f in failed
        if f.column not in wrong_type
        or f.expectation == "expect_column_values_to_be_in_type_list"
        or not f.summary.startswith("could not be evaluated")
    ]
    failed.sort(key=lambda f: (f.column is not None, f.column or "", f.expectation))
    return bool(result.success), failed


def _match(candidates: list[Check], kwargs: dict[str, Any]) -> Check | None:
    if len(candidates) <= 1:
        return candidates[0] if candidates else None
    for c in candidates:
        if all(kwargs.get(k) == v for k, v in c.kwargs.items()):
            return c
    return candidates[0]


# ------------------------------------------------------------------------------ entry points


def _run(
    frame: pd.DataFrame,
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
    prepared = prepare_frame(frame, spec)
    result = run_suite(
        prepared,
        checks,
        suite_name=spec.name,
        asset_name=f"{ref.batch_id}-v{ref.version}",
        examples=config.examples,
        docs_dir=docs_dir,
    )
    success, failed = summarise(result, checks, prepared, examples=config.examples)
    if not success and not failed:  # a failure we could not attribute: never report a pass
        failed = [FailedExpectation("unknown", None, "suite", "GX reported a failure")]
    summary = ValidationSummary(
        ref=ref,
        success=success,
        rows=len(frame),
        evaluated=len(result.results),
        failed=tuple(failed),
        skipped=tuple(skipped),
        suite_fingerprint=suite_fingerprint(checks),
        reference_id=reference_id,
        seconds=round(time.perf_counter() - t0, 3),
        validated_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    return summary, result


def validate_frame(
    frame: pd.DataFrame,
    spec: DatasetSpec,
    *,
    ref: BatchRef,
    categories: dict[str, list[str]] | None = None,
    reference_id: str | None = None,
    config: ValidationConfig | None = None,
) -> ValidationSummary:
    """Validate an in-memory frame (nothing is stored): the pure part of :func:`validate_batch`."""
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
) -> ValidationSummary:
    """Validate stored batch ``ref``; store summary, GX result and Data Docs under reports/.

    On failure the batch moves to quarantine (the result beside it) and
    :class:`ValidationFailed` is raised. Re-running with the same suite returns
    the stored summary (``reused=True``) without running GX again.
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
    frame = read_batch(store, ref)
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
