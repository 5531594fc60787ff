"""The serving smoke test: a registered model scores every value its spec allows.

Before a candidate can become canary or champion, the gate loads it from the
registry (``mlflow.pyfunc.load_model`` on ``models:/<name>/<version>``, what
serving does) and scores :func:`synthetic_batch`: rows built from the dataset
spec alone (no data, no assumption about the bundled example) that exercise
every feature column's allowed domain:

- a categorical column: every ``allowed`` category; with an open vocabulary
  (no ``allowed``) two categories no training row can have had (unless its
  ``max_unseen_share`` is 0) beside a plain one; a null where ``max_null_share``
  allows one;
- a numeric column: its ``min`` and ``max`` (a span around the bound it has, or
  around 0 without bounds), the midpoint, and a null where allowed.

The batch stays spec-valid: it has at least ``row_count_min`` rows, and enough
rows that its one null and its two unseen rows per column stay within the
column's shares (which categories count as unseen depends on a reference; the
spec alone cannot say whether the plain filler category is one). Each
probability must be finite and in [0, 1]. A model whose signature refuses a
column (a champion bricked that way once: a categorical column inferred as
``double`` from an all-null training window) fails here, with MLflow's whole
message, before it can serve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline.steps.registry.scoring import describe_serving_error, predict_probability

if TYPE_CHECKING:
    import pandas as pd

    from training.api import ColumnSpec, DatasetSpec

__all__ = ["UNSEEN", "SmokeResult", "serving_smoke_test", "synthetic_batch"]

# categories no real batch holds: one text, one that looks like a number
UNSEEN = ("__smoke_unseen__", "987654321")
SPAN = 1000.0  # a numeric column bounded on one side only is probed this far from its bound
MAX_ROWS = 100_000  # a tiny max_null_share must not ask for a huge batch


@dataclass(frozen=True)
class SmokeResult:
    passed: bool
    rows: int  # rows of the synthetic batch
    scored: int  # rows that got a finite probability in [0, 1]
    detail: str


def _numeric_values(col: ColumnSpec) -> list[float]:
    lo, hi = col.min, col.max
    if lo is None and hi is None:
        lo, hi = -SPAN, SPAN
    elif lo is None:
        lo = hi - SPAN  # type: ignore[operator]
    elif hi is None:
        hi = lo + SPAN
    return sorted({float(lo), float(hi), (float(lo) + float(hi)) / 2})


def _categorical_values(col: ColumnSpec) -> tuple[list[str], list[str]]:
    """(allowed values to use, unseen values to use)."""
    if col.allowed is not None:
        return list(col.allowed), []
    unseen = [] if col.max_unseen_share == 0 else list(UNSEEN)
    # an open vocabulary always holds some seen category in real data; these two
    # are unknown to any model, which is the point: they must fall into its unknown bucket
    return [], unseen


def _rows_needed(spec: DatasetSpec) -> int:
    """Rows enough for every column's values with its null and unseen shares respected."""
    need = spec.row_count_min
    for col in spec.columns:
        if col.role == "numeric":
            need = max(need, len(_numeric_values(col)))
        elif col.role == "categorical":
            allowed, unseen = _categorical_values(col)
            need = max(need, len(allowed) + len(unseen))
            if unseen and col.max_unseen_share is not None:
                need = max(need, math.ceil(len(unseen) / col.max_unseen_share))
        if col.max_null_share > 0:
            need = max(need, math.ceil(1 / col.max_null_share))
    return min(max(need, 1), spec.row_count_max, MAX_ROWS)


def synthetic_batch(spec: DatasetSpec) -> pd.DataFrame:
    """A spec-valid feature batch exercising every column's allowed domain (see the module)."""
    import numpy as np
    import pandas as pd

    n = _rows_needed(spec)
    data: dict[str, Any] = {}
    for col in spec.columns:
        if col.role == "id":
            data[col.name] = [f"smoke-{i:06d}" for i in range(n)]
            continue
        if col.role == "timestamp":
            data[col.name] = pd.Timestamp("2000-01-01") + pd.to_timedelta(np.arange(n), "min")
            continue
        nullable = col.max_null_share > 0 and n > 1
        if col.role == "numeric":
            values: list[Any] = _numeric_values(col)
            special: list[Any] = []
        else:
            allowed, special = _categorical_values(col)
            values = allowed or ["0"]  # an open vocabulary: a plain category fills the rest
        # the first rows hold every value once, then the unseen ones and the null;
        # the rest cycle the regular values
        head = values + special + ([None] if nullable else [])
        head = head[:n]
        rest = [values[i % len(values)] for i in range(n - len(head))]
        column = head + rest
        data[col.name] = (
            np.array([np.nan if v is None else v for v in column], dtype=np.float64)
            if col.role == "numeric"
            else pd.Series(column, dtype=object)
        )
    return pd.DataFrame(data)


def serving_smoke_test(model: Any, spec: DatasetSpec) -> SmokeResult:
    """Score :func:`synthetic_batch` with ``model`` (a pyfunc loaded from the registry)."""
    import numpy as np

    batch = synthetic_batch(spec)
    try:
        prob = np.asarray(predict_probability(model, batch), dtype=np.float64)
    except Exception as exc:  # MLflow's schema errors, the model's own DataErrors, anything
        return SmokeResult(
            False,
            len(batch),
            0,
            f"the model refused a spec-valid batch of {len(batch)} synthetic rows: "
            + describe_serving_error(exc),
        )
    ok = np.isfinite(prob) & (prob >= 0) & (prob <= 1)
    if prob.shape != (len(batch),) or not ok.all():
        bad = int((~ok).sum()) if prob.shape == (len(batch),) else len(batch)
        return SmokeResult(
            False,
            len(batch),
            int(ok.sum()) if prob.shape == (len(batch),) else 0,
            f"{bad} of {len(batch)} synthetic rows got no probability in [0, 1] "
            f"(output shape {prob.shape})",
        )
    return SmokeResult(
        True,
        len(batch),
        len(batch),
        f"{len(batch)} synthetic spec-valid rows scored (every allowed category, "
        "unseen categories, numeric limits, nulls where allowed)",
    )
