"""The base of every section."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Batches", "Fraction", "Section", "Share"]

# Constrained types the sections share (the schema, and so docs/configuration.md, shows
# the bounds as if they were written on each field)
Batches = Annotated[int, Field(ge=1, le=60)]  # a count of batches (months for the examples)
Share = Annotated[float, Field(gt=0.0, lt=1.0)]  # strictly between 0 and 1
Fraction = Annotated[float, Field(gt=0.0, le=1.0)]  # above 0, up to 1 (an AUC, a share)


class Section(BaseModel):
    """Base of every config section: unknown keys are errors (typos never pass silently)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=True)
