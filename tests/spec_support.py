"""Small dataset specs written in a test: an id, a timestamp, a target and a few features."""

from __future__ import annotations

from typing import Any

from training.data.spec import DatasetSpec


def spec_fields(
    name: str,
    *,
    model_name: str,
    id_column: str,
    timestamp_column: str,
    target: str,
    features: dict[str, str | dict[str, Any]],
    **sections: Any,
) -> dict[str, Any]:
    """A spec as its YAML file holds it: the id and timestamp columns, then ``features``
    (name -> role, or name -> the column's other fields with its role); ``sections`` are
    its other keys (``promotion``, ``schedule``, ...)."""
    columns: list[dict[str, Any]] = [
        {"name": id_column, "role": "id"},
        {"name": timestamp_column, "role": "timestamp"},
    ]
    for column, fields in features.items():
        more = {"role": fields} if isinstance(fields, str) else fields
        columns.append({"name": column, **more})
    return {
        "name": name,
        "model_name": model_name,
        "id_column": id_column,
        "timestamp_column": timestamp_column,
        "target": target,
        "columns": columns,
        **sections,
    }


def small_spec(name: str, **fields: Any) -> DatasetSpec:
    """:func:`spec_fields`, loaded."""
    return DatasetSpec.model_validate(spec_fields(name, **fields))


def churn_fields(
    *, features: dict[str, str | dict[str, Any]], model_name: str = "churn", **sections: Any
) -> dict[str, Any]:
    """Customer churn: string ids, its own target, nothing of flights (as its YAML holds it)."""
    return spec_fields(
        "churn",
        model_name=model_name,
        id_column="customer_id",
        timestamp_column="observed_at",
        target="churned",
        features=features,
        **sections,
    )


def churn_spec(**fields: Any) -> DatasetSpec:
    """:func:`churn_fields`, loaded."""
    return DatasetSpec.model_validate(churn_fields(**fields))
