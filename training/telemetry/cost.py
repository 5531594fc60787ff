"""Cost meter: elapsed device time times a price per hour.

The meter runs while the job holds its device (from start to exit, resumes
included: the time spent so far is stored in every checkpoint). A GPU job is
priced per GPU, a CPU job per process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class CostMeter:
    usd_per_hour: float
    units: int = 1
    budget_usd: float | None = None
    carried_seconds: float = 0.0  # from earlier attempts (resume)
    _started: float = field(default_factory=time.monotonic)

    @property
    def seconds(self) -> float:
        return self.carried_seconds + (time.monotonic() - self._started)

    @property
    def usd(self) -> float:
        return self.seconds / 3600.0 * self.usd_per_hour * self.units

    @property
    def over_budget(self) -> bool:
        return self.budget_usd is not None and self.usd >= self.budget_usd

    def describe(self) -> str:
        spent = f"${self.usd:.4f}"
        rate = f"{self.seconds:.0f} s at ${self.usd_per_hour}/h x {self.units}"
        if self.budget_usd is None:
            return f"{spent} ({rate})"
        return f"{spent} of ${self.budget_usd:.4f} budget ({rate})"
