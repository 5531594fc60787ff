"""Great Expectations' result in our own terms: one :class:`FailedExpectation` per
failed check, with a sentence a person can act on and a few offending values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipeline.steps.quality.suite import CONTAINERS, TYPE_WORDS, Check

__all__ = ["FailedExpectation", "summarise"]


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
    if isinstance(value, CONTAINERS):
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
