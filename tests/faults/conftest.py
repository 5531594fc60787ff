"""The faults suite: quick by default, long with ``FAULTS=long``.

``./run test`` runs the quick mode (a few injections of each fault, a few
minutes in all). ``FAULTS=long ./run test tests/faults`` runs every injection
that docs/reliability.md reports (10 kill points, 30 s outages, ...).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class FaultMode:
    name: str  # "quick" or "long"

    @property
    def long(self) -> bool:
        return self.name == "long"

    def pick(self, quick: int | float, long: int | float) -> int | float:
        """A count or a duration: the quick one, or the long one."""
        return long if self.long else quick


def _mode() -> FaultMode:
    name = os.environ.get("FAULTS", "quick").strip().lower() or "quick"
    if name not in {"quick", "long"}:
        raise pytest.UsageError(f"FAULTS must be 'quick' or 'long', not {name!r}")
    return FaultMode(name)


@pytest.fixture(scope="session")
def fault_mode() -> FaultMode:
    return _mode()
