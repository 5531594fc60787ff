"""Frozen dataclasses that are kept as JSON in the store (summaries, reports).

:class:`Stored` gives such a record ``as_dict()`` and ``from_dict()`` through
pydantic's :class:`~pydantic.TypeAdapter`: nested records, tuples and optional
fields round-trip without per-class code, and reading back validates the types.
"""

from __future__ import annotations

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
