"""What the benchmarks comparing training runs window by window share
(:mod:`benchmarks.cycle_stopping`, :mod:`benchmarks.tuning`): the windows of the two
example data sets, each window's data fields of the training config, and one run's
record.

flights: three windows of three months of the bundled 2013 flights. gss: the General
Social Survey waves of ``python -m pipeline example gss`` (spec
``configs/datasets/gss.yaml``), three windows of consecutive waves: 1994-1998
(1994, 1996, 1998), 2000-2002 (2000, 2002), 2004-2006 (2004, 2006).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.results import TrainResult

FLIGHTS = {"1-3": [1, 2, 3], "4-6": [4, 5, 6], "7-9": [7, 8, 9]}
GSS = {
    "1994-1998": ["1994", "1996", "1998"],
    "2000-2002": ["2000", "2002"],
    "2004-2006": ["2004", "2006"],
}
WINDOWS = {"flights": FLIGHTS, "gss": GSS}


@dataclass
class Run:
    """One training run of a benchmark: which window, seed and mode (fixed, stopping,
    tuned), the job's result and its wall seconds."""

    window: str
    seed: int
    mode: str
    result: TrainResult
    wall_s: float

    @property
    def best_auc(self) -> float:
        """The challenger the job keeps: the best of its cycle bests."""
        return max(c.val_auc for c in self.result.finals)

    @property
    def steps(self) -> int:
        return self.result.steps_done


def window_fields(
    dataset: str, folder: Path, only: list[str] | None = None
) -> dict[str, dict[str, Any]]:
    """Window -> the data fields of the training config (gss: the window's waves
    written here as a features and a labels file). ``only``: these windows, in order."""
    names = only if only is not None else list(WINDOWS[dataset])
    if dataset == "flights":
        return {w: {"data.months": FLIGHTS[w]} for w in names}
    import pandas as pd

    from pipeline.apps.examples import gss_batches

    waves = gss_batches()
    out = {}
    for w in names:
        frame = pd.concat([waves[i] for i in GSS[w]], ignore_index=True)
        features, labels = folder / f"{w}-features.csv", folder / f"{w}-labels.csv"
        frame.drop(columns=["vhappy"]).to_csv(features, index=False)
        frame[["respondent_id", "vhappy"]].to_csv(labels, index=False)
        out[w] = {
            "data.source": "files",
            "data.dataset": "configs/datasets/gss.yaml",
            "data.features": str(features),
            "data.labels": str(labels),
        }
    return out


def write_dataset_section(bench: str, dataset: str, title: str, body: str) -> None:
    """The benchmark's section of docs/benchmarks.md: ``bench`` for flights,
    ``bench_gss`` (title ``: GSS``) for the second example, with its command."""
    from benchmarks.report import write_section

    if dataset == "flights":
        write_section(bench, title, body)
    else:
        command = f"./run bench {bench} --dataset {dataset}"
        write_section(f"{bench}_{dataset}", f"{title}: GSS", body, command=command)
