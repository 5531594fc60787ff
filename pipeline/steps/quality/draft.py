"""A dataset spec drafted from sample files, for a person to review.

The first step of a team with 80 columns: ``python -m pipeline spec draft FILE...
--id COL --timestamp COL --target COL`` reads one or more batch files (each one
batch, with the target beside the features) and writes a spec whose every line is
a guess to check. The rules follow TensorFlow Data Validation's ``infer_schema``
(a type per feature from its values, a presence from its observed nulls, a closed
domain for a string feature with few distinct values), in this project's terms:

- **role**: text, booleans and integer columns of at most two values (flags)
  are categorical; other numbers are numeric.
- **allowed**: a categorical column with at most :data:`MAX_DOMAIN` distinct
  values gets them as its closed set (TFDV's string domain); a larger one gets
  ``max_unseen_share`` (:data:`UNSEEN_SHARE`) instead.
- **min / max**: the observed range widened by ``margin`` of its width on each
  side, never below 0 for a column that never went below 0 (integral bounds for
  an integer column).
- **max_null_share**: 0 for a column never null; else the observed share plus
  half again and a point (``share * 1.5 + 0.01``), at most 1.
- **id_scope**: ``global`` when several files were given and no id recurs
  across them, else ``batch`` (the same entities may come back).
- **row counts**: half the smallest file and twice the largest.

The draft is checked by the same model a spec file is
(:class:`training.data.spec.DatasetSpec`), so what it writes always loads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from training.api import DataError, DatasetSpec, categories_as_str

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["MAX_DOMAIN", "UNSEEN_SHARE", "Draft", "draft_from_files", "draft_spec"]

MAX_DOMAIN = 20  # categories listed as a closed set; more: an unseen-share limit
UNSEEN_SHARE = 0.01


@dataclass(frozen=True)
class Draft:
    """A drafted spec: the mapping to write as YAML, and what it was drafted from."""

    spec: dict[str, Any]
    files: int
    rows: int

    def yaml(self, sources: list[str]) -> str:
        import yaml

        head = [
            f"# Drafted by `python -m pipeline spec draft` on {datetime.now(UTC):%Y-%m-%d} from "
            f"{self.files} file(s), {self.rows:,} rows:",
            *(f"#   {s}" for s in sources[:10]),
            "# Every line is a guess from these samples: review the roles, the allowed sets, the",
            "# ranges (observed, widened by a margin) and the null shares before you use it.",
        ]
        body = yaml.safe_dump(self.spec, sort_keys=False, allow_unicode=True, width=100)
        return "\n".join(head) + "\n" + body


def draft_spec(
    batches: list[pd.DataFrame],
    *,
    name: str,
    id_column: str,
    timestamp_column: str,
    target: str,
    margin: float = 0.1,
) -> Draft:
    """A spec for ``batches`` (one frame per sample file); a DataError names what is
    missing or unusable (a column flag that names no column, a target that is not 0/1)."""
    import pandas as pd

    if not batches:
        raise DataError("spec draft needs at least one sample file")
    if not 0.0 <= margin <= 10.0:
        raise DataError(f"--margin must be between 0 and 10, got {margin}")
    frame = pd.concat(batches, ignore_index=True)
    for flag, column in (("--id", id_column), ("--timestamp", timestamp_column)):
        if column not in frame.columns:
            raise DataError(f"{flag} {column!r} is not a column of the files: {list(frame)[:20]}")
    if target not in frame.columns:
        raise DataError(f"--target {target!r} is not a column of the files: {list(frame)[:20]}")
    _check_target(frame[target], target)
    for i, batch in enumerate(batches):
        dupes = batch[id_column].duplicated()
        if dupes.any():
            raise DataError(
                f"file {i + 1}: --id {id_column!r} repeats within the file "
                f"(e.g. {batch.loc[dupes, id_column].head(3).tolist()}): not an id"
            )
    if pd.to_datetime(frame[timestamp_column], errors="coerce").isna().any():
        raise DataError(f"--timestamp {timestamp_column!r} holds values that are not dates")
    columns: dict[str, dict[str, Any]] = {
        id_column: {"role": "id"},
        timestamp_column: {"role": "timestamp"},
    }
    for column in frame.columns:
        if column not in (id_column, timestamp_column, target):
            columns[str(column)] = _column(frame[column], margin)
    recurring = frame[id_column].astype(str).duplicated().any()
    sizes = [len(b) for b in batches]
    spec: dict[str, Any] = {
        "name": name,
        "model_name": f"{name}_model",
        "description": "",
        "id_column": id_column,
        "id_scope": "batch" if recurring or len(batches) == 1 else "global",
        "timestamp_column": timestamp_column,
        "target": target,
        "row_count_min": max(1, min(sizes) // 2),
        "row_count_max": max(2 * max(sizes), 1),
        "columns": columns,
    }
    try:  # the same check a spec file gets when it is loaded
        DatasetSpec.model_validate(
            {**spec, "columns": [{"name": k, **v} for k, v in columns.items()]}
        )
    except ValueError as exc:
        raise DataError(f"the drafted spec does not load: {exc}") from None
    return Draft(spec, len(batches), len(frame))


def _check_target(values: pd.Series, target: str) -> None:
    seen = set(values.dropna().unique().tolist())
    if values.isna().any() or not seen <= {0, 1} or len(seen) < 2:
        shown = sorted(map(str, seen))[:5]
        raise DataError(
            f"--target {target!r} must hold 0 and 1 in every row (a binary label); found "
            f"{shown}{' and nulls' if values.isna().any() else ''}"
        )


def _column(values: pd.Series, margin: float) -> dict[str, Any]:
    import pandas as pd

    out: dict[str, Any] = {}
    non_null = values.dropna()
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    integral = numeric and bool((non_null % 1 == 0).all())
    if numeric and not (integral and non_null.nunique() <= 2):
        out["role"] = "numeric"
        if len(non_null):
            out.update(_bounds(non_null.astype(float), margin, integral))
    else:
        out["role"] = "categorical"
        categories = sorted(set(categories_as_str(non_null).tolist()))
        if len(categories) <= MAX_DOMAIN:
            out["allowed"] = categories
        else:
            out["max_unseen_share"] = UNSEEN_SHARE
    share = float(values.isna().mean())
    if share > 0:
        out["max_null_share"] = min(1.0, math.ceil((share * 1.5 + 0.01) * 100) / 100)
    return out


def _bounds(values: pd.Series, margin: float, integral: bool) -> dict[str, float]:
    lo, hi = float(values.min()), float(values.max())
    pad = margin * (hi - lo) if hi > lo else margin * max(abs(hi), 1.0)
    low, high = lo - pad, hi + pad
    if lo >= 0:
        low = max(low, 0.0)
    if integral:
        return {"min": float(math.floor(low)), "max": float(math.ceil(high))}
    return {"min": _round(low, math.floor), "max": _round(high, math.ceil)}


def _round(x: float, direction: Any) -> float:
    """Four significant digits, rounded outward (a bound never narrows)."""
    if x == 0:
        return 0.0
    scale = 10 ** (math.floor(math.log10(abs(x))) - 3)
    return round(float(direction(x / scale) * scale), 12)


def draft_from_files(
    locations: list[str],
    *,
    name: str,
    id_column: str,
    timestamp_column: str,
    target: str,
    margin: float = 0.1,
    storage: Any = None,
) -> Draft:
    """:func:`draft_spec` of CSV/Parquet files (paths or ``s3://`` URIs), one batch each."""
    from pipeline.steps.landing.sources import load_source, read_source

    frames = [read_source(load_source(location, storage)) for location in locations]
    return draft_spec(
        frames,
        name=name,
        id_column=id_column,
        timestamp_column=timestamp_column,
        target=target,
        margin=margin,
    )
