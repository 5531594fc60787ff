"""The expectation suite of a dataset spec, and running it with Great Expectations.

:func:`build_suite` turns the spec into our own :class:`Check` records (never
written by hand); :func:`run_suite` hands them to GX on a frame prepared by
:func:`prepare_frame` (categories as text, nullable numbers as float64) and
returns GX's result, optionally writing Data Docs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from training.api import DataError, DatasetSpec, categories_as_str

__all__ = [
    "Check",
    "SuiteError",
    "build_suite",
    "prepare_frame",
    "run_suite",
    "suite_fingerprint",
]

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
CONTAINERS = (dict, list, tuple, set, bytes, bytearray, np.ndarray)


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
    return bool(col.map(lambda v: isinstance(v, CONTAINERS)).any())


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
    frame: Any,
    checks: list[Check],
    *,
    suite_name: str,
    asset_name: str,
    examples: int = 5,
    docs_dir: Path | None = None,
) -> Any:
    """Run ``checks`` on ``frame`` (pandas, or Spark: then ``checks`` name Spark's types,
    :func:`~pipeline.steps.quality.spark_frames.spark_checks`) with GX; returns GX's
    ExpectationSuiteValidationResult.

    With ``docs_dir``, Data Docs for this run are written there (a Checkpoint
    with an UpdateDataDocsAction).
    """
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier

    expectations = [_gx_expectation(c) for c in checks]
    ctx = _context(docs_dir)
    # a Spark DataFrame (data.engine: spark) goes to GX's Spark datasource, pandas to pandas'
    spark = hasattr(frame, "sparkSession")
    source = ctx.data_sources.add_spark if spark else ctx.data_sources.add_pandas
    batch_definition = (
        source(name="pipeline")
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
