"""``scheduler.step()``: ours against torch's CosineAnnealingWarmRestarts.

Both schedulers drive the same kind of optimizer (SGD, one or four param
groups); only ``scheduler.step()`` is timed, many calls per repetition, and the
median of interleaved repetitions is compared. Target: ratio ours/torch <= 1.0.
"""

from __future__ import annotations

import time

import torch

from benchmarks.report import interleaved_medians, write_section
from training.schedule import CosineAnnealingScheduler, CosineSchedule

STEPS = 20_000
REPEATS = 9


def _optimizer(groups: int) -> torch.optim.Optimizer:
    params = [
        {"params": [torch.nn.Parameter(torch.zeros(4))], "lr": 0.1 / (k + 1)} for k in range(groups)
    ]
    return torch.optim.SGD(params, lr=0.1)


def _timer(make: object) -> object:
    def run() -> float:
        sched = make()
        sched.optimizer.step()  # so neither warns about the call order
        step = sched.step
        t0 = time.perf_counter()
        for _ in range(STEPS):
            step()
        return time.perf_counter() - t0

    return run


def main() -> str:
    rows = []
    for groups in (1, 4):
        for label, cycle_mult, t_mult in (("T_mult=1", 1.0, 1), ("T_mult=2", 2.0, 2)):
            ours = _timer(
                lambda g=groups, m=cycle_mult: CosineAnnealingScheduler(
                    _optimizer(g), CosineSchedule(0.1, 100, lr_min=1e-4, cycle_mult=m)
                )
            )
            theirs = _timer(
                lambda g=groups, t=t_mult: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
                    _optimizer(g), T_0=100, T_mult=t, eta_min=1e-4
                )
            )
            med = interleaved_medians({"ours": ours, "torch": theirs}, REPEATS)
            ratio = med["ours"] / med["torch"]
            rows.append(
                f"| {groups} | {label} | {med['ours'] / STEPS * 1e6:.2f} | "
                f"{med['torch'] / STEPS * 1e6:.2f} | **{ratio:.2f}** |"
            )
            print(
                f"groups={groups} {label}: ours {med['ours']:.3f}s "
                f"torch {med['torch']:.3f}s ratio {ratio:.2f}"
            )
    body = (
        f"`scheduler.step()` of `CosineAnnealingScheduler` against torch's "
        f"`CosineAnnealingWarmRestarts.step()`, {STEPS:,} calls per repetition, median of "
        f"{REPEATS} interleaved repetitions. Target: ratio <= 1.0.\n\n"
        "| param groups | multiplier | ours (µs/step) | torch (µs/step) | ratio ours/torch |\n"
        "|---:|---|---:|---:|---:|\n" + "\n".join(rows)
    )
    write_section("scheduler", "Scheduler step overhead", body)
    return body


if __name__ == "__main__":
    main()
