"""Small dataset specs written in a test: an id, a timestamp, a target and a few features."""

from __future__ import annotations

from typing import Any

from training.data.spec import DatasetSpec


def small_spec(
    name: str,
    *,
    model_name: str,
    id_column: str,
    timestamp_column: str,
    target: str,
    features: dict[str, str | dict[str, Any]],
    **sections: Any,
) -> DatasetSpec:
    """A spec of the id and timestamp columns, then ``features`` (name -> role, or
    name -> the column's other fields with its role); ``sections`` are its other keys
    (``promotion``, ``schedule``, ...)."""
    columns: list[dict[str, Any]] = [
        {"name": id_column, "role": "id"},
        {"name": timestamp_column, "role": "timestamp"},
    ]
    for column, fields in features.items():
        more = {"role": fields} if isinstance(fields, str) else fields
        columns.append({"name": column, **more})
    return DatasetSpec.model_validate(
        {
            "name": name,
            "model_name": model_name,
            "id_column": id_column,
            "timestamp_column": timestamp_column,
            "target": target,
            "columns": columns,
            **sections,
        }
    )


def churn_spec(
    *, features: dict[str, str | dict[str, Any]], model_name: str = "churn", **sections: Any
) -> DatasetSpec:
    """Customer churn: string ids, its own target, nothing of flights."""
    return small_spec(
        "churn",
        model_name=model_name,
        id_column="customer_id",
        timestamp_column="observed_at",
        target="churned",
        features=features,
        **sections,
    )
