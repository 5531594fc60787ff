"""Rows to a canary decision: today's fixed-sample test against the sequential review
and the shadow, on flights and on GSS (the second example).

Per-row log losses come from real models on real rows. For each data set, from its
spec alone: a champion (gradient boosting on the first batches) and a challenger (the
same on one more batch) score the next batch; its labelled rows give per-row losses
of both and their paired differences. A review run is then simulated from them, batch
by batch with each data set's own batch sizes (flights: its months; GSS: its survey
waves, recycled) and the canary share and minimum rows the pipeline resolves for it:
rows are drawn with replacement from that pool, the canary's losses shifted by
``delta`` (its true excess mean log loss; the pool's own difference is removed first),
and after every batch each test looks:

- **fixed (today)**: Welch's interval on the batch's own rows at 95 %, each arm at
  least ``min_rows`` (:func:`pipeline.steps.canary.sequential.fixed_interval`);
- **sequential split**: the serving canary's confidence sequence over every batch so
  far (:func:`pipeline.steps.canary.sequential.split_interval`, alpha 0.05);
- **shadow paired**: the challenger scores every row unserved; the paired confidence
  sequence on all rows so far (:func:`pipeline.steps.canary.sequential.paired_interval`) at
  alpha 0.025, as the review runs it beside the canary's (each at ``alpha / 2``).

A run stops at its first decision or after ``LOOKS`` batches. Reported: the share of
runs decided, how many were wrong, and the median labelled rows (canary arm; for the
shadow, paired rows) and batches to a decision.
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.report import write_section
from pipeline.base.config import load_config
from pipeline.steps.canary.sequential import (
    Moments,
    fixed_interval,
    judge,
    paired_interval,
    split_interval,
)
from pipeline.steps.promotion.rules import canary_rules
from training.data.spec import DatasetSpec, load_spec

ROOT = Path(__file__).resolve().parents[1]
ALPHA = 0.05
LOOKS = 12
RUNS = 200
DELTAS = (-0.02, 0.0, 0.005, 0.02, 0.05)  # true canary minus champion mean log loss


@dataclass(frozen=True)
class Pool:
    name: str
    batch_rows: list[int]
    share: float
    min_rows: int
    margin: float
    loss_champion: np.ndarray
    loss_challenger: np.ndarray
    auc: tuple[float, float]

    @property
    def diff(self) -> np.ndarray:
        d = self.loss_challenger - self.loss_champion
        return d - d.mean()

    @property
    def loss(self) -> np.ndarray:
        return self.loss_champion - self.loss_champion.mean()


def _loss(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def _fit_predict(spec: DatasetSpec, train: pd.DataFrame, test: pd.DataFrame) -> np.ndarray:
    from sklearn.ensemble import HistGradientBoostingClassifier

    def x(frame: pd.DataFrame) -> pd.DataFrame:
        out = frame[spec.feature_columns].copy()
        for c in spec.categorical_features:
            out[c] = pd.Categorical(out[c].astype("string"), categories=cats[c])
        for c in spec.numeric_features:
            out[c] = pd.to_numeric(out[c], errors="coerce")
        return out

    cats = {
        c: sorted(train[c].dropna().astype(str).unique().tolist())
        for c in spec.categorical_features
    }
    model = HistGradientBoostingClassifier(
        categorical_features="from_dtype", max_iter=200, random_state=0
    )
    model.fit(x(train), train[spec.target].astype(int))
    return model.predict_proba(x(test))[:, 1]


def _pool(name: str, spec: DatasetSpec, batches: list[pd.DataFrame]) -> Pool:
    """Champion: batches[:-2]; challenger: batches[:-1]; both scored on batches[-1]."""
    from training.engine.metrics import roc_auc

    test = batches[-1]
    champion = _fit_predict(spec, pd.concat(batches[:-2]), test)
    challenger = _fit_predict(spec, pd.concat(batches[:-1]), test)
    y = test[spec.target].to_numpy(dtype=float)
    rows = [len(b) for b in batches]
    rules = canary_rules(load_config(None), spec, rows)
    return Pool(
        name,
        rows,
        rules.share,
        rules.min_rows,
        rules.margin,
        _loss(y, champion),
        _loss(y, challenger),
        (roc_auc(y, champion), roc_auc(y, challenger)),
    )


def flights_pool() -> Pool:
    from training.data import flights

    spec = load_spec(ROOT / "configs" / "datasets" / "flights.yaml")
    months = []
    for m in range(1, 7):
        features, labels = flights.load_months([m])
        months.append(features.merge(labels, on=spec.id_column))
    return _pool("flights", spec, months)


def gss_pool() -> Pool:
    from pipeline.apps.examples import gss_batches

    spec = load_spec(ROOT / "configs" / "datasets" / "gss.yaml")
    return _pool("gss", spec, list(gss_batches().values()))


@dataclass(frozen=True)
class Outcome:
    decided: float
    wrong: float
    rows: float | None
    batches: float | None


def simulate(pool: Pool, delta: float, design: str, seed: int, runs: int = RUNS) -> Outcome:
    """``runs`` reviews of a canary whose true excess mean log loss is ``delta``."""
    rng = np.random.default_rng(seed)
    truth = "non_inferior" if delta < pool.margin else "inferior" if delta > pool.margin else None
    loss, diff = pool.loss, pool.diff
    decided_rows, decided_batches, wrong, decided = [], [], 0, 0
    for _ in range(runs):
        acc_c, acc_h, acc_d = Moments(), Moments(), Moments()
        for look in range(1, LOOKS + 1):
            n = pool.batch_rows[(look - 1) % len(pool.batch_rows)]
            n_c = int(rng.binomial(n, pool.share))
            if design == "shadow":
                batch = Moments.of(rng.choice(diff, n) + delta)
                acc_d = Moments.sum([acc_d, batch])
                if acc_d.n < pool.min_rows:
                    continue
                interval, rows = (
                    paired_interval(acc_d, ALPHA / 2, round(4 * pool.min_rows / pool.share)),
                    acc_d.n,
                )
            else:
                c = Moments.of(rng.choice(loss, n_c) + delta)
                h = Moments.of(rng.choice(loss, n - n_c))
                acc_c, acc_h = Moments.sum([acc_c, c]), Moments.sum([acc_h, h])
                if design == "fixed":
                    if min(c.n, h.n) < pool.min_rows:
                        continue
                    interval, rows = fixed_interval(c, h, 1 - ALPHA), acc_c.n
                else:
                    if min(acc_c.n, acc_h.n) < pool.min_rows:
                        continue
                    interval = split_interval(acc_c, acc_h, ALPHA, 4 * pool.min_rows)
                    rows = acc_c.n
            verdict = judge(interval, pool.margin)
            if verdict != "undecided":
                decided += 1
                wrong += truth is None or verdict != truth  # at the margin: any decision
                decided_rows.append(rows)
                decided_batches.append(look)
                break
    return Outcome(
        decided / runs,
        wrong / runs,
        statistics.median(decided_rows) if decided_rows else None,
        statistics.median(decided_batches) if decided_batches else None,
    )


def _cell(o: Outcome) -> str:
    if not o.decided:
        return "never (12 batches)"
    return (
        f"{o.decided:.1%} decided, {o.wrong:.1%} wrong; median {o.rows:,.0f} rows "
        f"({o.batches:g} batches)"
    )


def table(pool: Pool, runs: int) -> str:
    lines = [
        f"### {pool.name}",
        "",
        f"Batches of {min(pool.batch_rows):,}-{max(pool.batch_rows):,} rows "
        f"(median {statistics.median(pool.batch_rows):,.0f}); canary share {pool.share:g}, "
        f"at least {pool.min_rows:,} labelled rows per arm, margin {pool.margin:g}. "
        f"Models on real rows: AUC {pool.auc[0]:.3f} (champion) and {pool.auc[1]:.3f} "
        f"(challenger); per-row log loss sd {pool.loss_champion.std():.3f}, paired "
        f"difference sd {pool.diff.std():.3f}. {runs} runs per cell.",
        "",
        "| true difference | fixed (today), per batch | sequential split | shadow paired |",
        "|---|---|---|---|",
    ]
    for i, delta in enumerate(DELTAS):
        cells = [_cell(simulate(pool, delta, d, seed=100 * i + j, runs=runs))
                 for j, d in enumerate(("fixed", "sequential", "shadow"))]  # fmt: skip
        lines.append(f"| {delta:+.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.canary_sequential")
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--quick", action="store_true", help="50 runs; docs untouched")
    args = parser.parse_args(argv)
    runs = 50 if args.quick else args.runs
    pools = [flights_pool(), gss_pool()]
    body = "\n\n".join(
        [
            __doc__.split("\n\n", 1)[1].strip(),
            "A wrong decision: promoting a canary whose true difference is above the "
            "margin, or rolling back one below it; at exactly the margin (+0.005) every "
            "decision is wrong (the boundary case that alpha bounds).",
            *(table(p, runs) for p in pools),
        ]
    )
    if not args.quick:
        write_section("canary_sequential", "Canary: rows to a decision", body)
    print(body)
    return body


if __name__ == "__main__":
    main()
