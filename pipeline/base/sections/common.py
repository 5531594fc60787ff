"""The base of every section."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["Section"]


class Section(BaseModel):
    """Base of every config section: unknown keys are errors (typos never pass silently)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=True)
