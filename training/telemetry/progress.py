"""Progress of a run for a person: a tqdm bar on a terminal, else a log line per 10 %."""

from __future__ import annotations

import logging
import sys
from typing import Any

__all__ = ["Progress"]

log = logging.getLogger("training.engine.trainer")


class Progress:
    def __init__(self, mode: str, *, enabled: bool) -> None:
        self.mode = mode  # auto | on | off
        self.enabled = enabled  # rank 0 only
        self._bar: Any = None
        self._next_log = 0.1

    def open(self, total: int, initial: int) -> None:
        if not self.enabled or self.mode == "off":
            return
        if self.mode == "auto" and not sys.stderr.isatty():
            return
        from tqdm import tqdm

        self._bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)

    def update(
        self, step: int, total: int, lr: float, cost: str, cost_usd: float, val_auc: float | None
    ) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.total = total
            self._bar.n = step
            post = {"lr": f"{lr:.2e}", "cost": f"${cost_usd:.4f}"}
            if val_auc is not None:
                post["val_auc"] = f"{val_auc:.4f}"
            self._bar.set_postfix(post, refresh=True)
            return
        fraction = step / max(1, total)
        if fraction >= self._next_log or step >= total:
            auc = f", val_auc {val_auc:.4f}" if val_auc is not None else ""
            log.info(
                "step %d/%d (%.0f%%), lr %.3g%s, cost %s",
                step,
                total,
                100 * fraction,
                lr,
                auc,
                cost,
            )
            while self._next_log <= fraction:
                self._next_log += 0.1

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
