"""Records kept as JSON: in the store (summaries, reports) and between DAG tasks (XCom).

A step returns its own frozen record and the flow passes it on as is; a DAG task
returns ``record.to_xcom()`` (plain JSON, readable in the Airflow UI's XCom tab)
and the next task rebuilds it with ``Type.from_xcom(value)``, which refuses a field
the type does not have.

:class:`Stored` gives a step's frozen dataclass ``as_dict()``/``from_dict()``
through pydantic's :class:`~pydantic.TypeAdapter` (nested records, tuples and
optional fields round-trip without per-class code; reading back validates the
types), and ``to_xcom()``/``from_xcom()`` on the same JSON. What the flow itself
composes (a plan, a window, a decision) is a pydantic model with the same two
methods (:class:`pipeline.flow.records.Record`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Self

from pydantic import TypeAdapter

__all__ = ["Stored"]


@functools.cache
def _adapter(cls: type) -> TypeAdapter[Any]:
    return TypeAdapter(cls)


class Stored:
    def as_dict(self) -> dict[str, Any]:
        """Plain JSON values (nested records as mappings, tuples as lists)."""
        return _adapter(type(self)).dump_python(self, mode="json")  # type: ignore[no-any-return]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """The record back from :meth:`as_dict`'s output, validated."""
        return _adapter(cls).validate_python(data)  # type: ignore[no-any-return]

    def to_xcom(self) -> dict[str, Any]:
        """Plain JSON values (what a DAG task returns): :meth:`as_dict`."""
        return self.as_dict()

    @classmethod
    def from_xcom(cls, value: Any) -> Self:
        """The record back from a task's JSON result (a record passes through); a field
        this record does not have is refused."""
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
            unknown = sorted(set(value) - known)
            if unknown:
                raise ValueError(f"{cls.__name__} has no field(s) {unknown}")
        return cls.from_dict(value)
