"""Cycle-aware stopping against the fixed schedule, on three windows of 2013.

For each window (months 1-3, 4-6, 7-9 of the bundled flights, ``configs/flights.yaml``
otherwise as shipped) and each seed, the training job runs twice through ``Trainer``
(MLflow off, one torch thread): once with ``stopping.enabled=false`` (the fixed
schedule: every cycle runs) and once with ``stopping.enabled=true`` and the rule's
parameters as the shipped config sets them. Both see the same prepared data.

Measured per run: optimizer steps taken, best validation AUC (the challenger the
job keeps: the best of its cycle bests), device seconds and dollars (the job's cost
meter), and what the rule decided. Check (exact, CPU deterministic): a stopped run
is the prefix of its fixed run, so its cycle bests equal the fixed run's first
cycles' bests bit for bit, and the rule's decisions agree up to the stop.

Target (when the rule was adopted): the shipped config on the three windows takes at least 30 %
fewer optimizer steps in total than 6,000 (the fixed schedule then; it is measured
here too), and each window's best val AUC (mean over seeds) is no more than 0.003
below the fixed schedule's on the same seeds. The issue's figures (0.7171, 0.7678,
0.7203) are single runs; seed 0 is compared with them.

With ``--dataset gss`` the same on the second example (the General Social Survey
waves of ``python -m pipeline example gss``, spec ``configs/datasets/gss.yaml``, the
same training config), on the windows ``benchmarks.tuning --dataset gss`` uses: the
waves 1994-1998, 2000-2002 and 2004-2006 (section ``cycle_stopping_gss``; each run's
wall seconds and dollars are reported too, and the target is against the fixed
schedule measured here).

``python -m benchmarks.cycle_stopping [--dataset flights|gss] [--seeds 0,1,2]
[--windows 1-3,4-6,7-9] [--no-doc] [--json FILE]``
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks._windows import FLIGHTS, GSS, Run, window_fields, write_dataset_section
from training.config.train import StoppingConfig, load_config
from training.data.dataset import prepare_for
from training.data.spec import load_spec
from training.engine.stopping import StopRule, StopState
from training.engine.trainer import Trainer

CONFIG = "configs/flights.yaml"
WINDOWS = FLIGHTS
FIXED_AUC_THEN = {"1-3": 0.7171, "4-6": 0.7678, "7-9": 0.7203}  # the fixed schedule then
SEEDS = (0, 1, 2)
THREADS = 1  # one thread: on 2 shared cores, two OpenMP threads stall when one is descheduled
TARGET_SAVED = 0.30
ISSUE_FIXED_STEPS = 6_000  # 3 windows x 2,000 steps of the step-based schedule of then
TARGET_AUC_DROP = 0.003
ALTERNATIVES = ((0.0, 1), (0.001, 1), (0.003, 1), (0.005, 1), (0.0, 2))


def _overrides(fields: dict[str, Any]) -> list[str]:
    """A window's data fields as ``load_config`` overrides (``data.months=[1, 2, 3]``)."""
    return [f"{k}={v}" for k, v in fields.items()]


def run(
    window: str, seed: int, mode: str, fields: dict[str, Any], data: Any, spec: Any, out: Path
) -> Run:
    """One training run (``mode``: fixed | stopping) on a window's prepared data."""
    cfg = load_config(
        CONFIG,
        [
            f"run_name={mode}-{window}-seed{seed}",
            f"output_dir={out}",
            "progress=off",
            "mlflow.enabled=false",
            f"runtime.seed={seed}",
            f"runtime.threads={THREADS}",
            *_overrides(fields),
            f"stopping.enabled={'true' if mode == 'stopping' else 'false'}",
        ],
    )
    t0 = time.perf_counter()
    result = Trainer(cfg, data=data, spec=spec).run()
    return Run(window, seed, mode, result, time.perf_counter() - t0)


def as_record(r: Run) -> dict[str, Any]:
    return {
        "window": r.window,
        "seed": r.seed,
        "mode": r.mode,
        "steps": r.steps,
        "total_steps": r.result.total_steps,
        "best_auc": r.best_auc,
        "wall_s": r.wall_s,
        "cost_usd": r.result.cost_usd,
        "cycles": [(c.cycle, c.step, c.val_auc) for c in r.result.finals],
        "stopping": dataclasses.asdict(r.result.stopping) if r.result.stopping else None,
    }


def replay(fixed: Run, min_delta: float, patience: int) -> tuple[int, float]:
    """(steps, best val AUC) of the run another rule would have stopped: the fixed
    run cut after the cycle where it stops (exact: a stopped run is the fixed run's
    prefix, which :func:`check_prefix` verifies for the shipped rule)."""
    rule = StopRule(StoppingConfig(enabled=True, min_delta=min_delta, patience=patience), "val_auc")
    state, decisions = StopState(), fixed.result.stopping.decisions  # type: ignore[union-attr]
    for i, d in enumerate(decisions):
        done = rule.observe(state, d["cycle"], d["step"], d["score"], is_last=d["action"] == "last")
        if done.action == "stop":
            return d["step"] + 1, max(x["score"] for x in decisions[: i + 1])
    return fixed.steps, fixed.best_auc


def check_prefix(fixed: Run, stopped: Run) -> None:
    """A stopped run is its fixed run cut short: same cycle bests, same decisions."""
    mine = [(c.cycle, c.step, c.val_auc, c.val_loss) for c in stopped.result.finals]
    theirs = [(c.cycle, c.step, c.val_auc, c.val_loss) for c in fixed.result.finals]
    if mine != theirs[: len(mine)]:
        raise AssertionError(f"{stopped.window} seed {stopped.seed}: {mine} vs {theirs}")
    key = ("cycle", "score", "won", "streak")
    a = [{k: d[k] for k in key} for d in stopped.result.stopping.decisions]  # type: ignore[union-attr]
    b = [{k: d[k] for k in key} for d in fixed.result.stopping.decisions]  # type: ignore[union-attr]
    if a != b[: len(a)]:
        raise AssertionError(f"{stopped.window} seed {stopped.seed}: decisions {a} vs {b}")


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cycle_stopping")
    parser.add_argument("--dataset", choices=("flights", "gss"), default="flights")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    parser.add_argument("--windows", help="default: the data set's three windows")
    parser.add_argument("--no-doc", action="store_true", help="print only")
    parser.add_argument("--json", type=Path, help="also write every run's figures here")
    args = parser.parse_args(argv if argv is not None else [])
    seeds = [int(s) for s in args.seeds.split(",")]
    windows = args.windows.split(",") if args.windows else None
    torch.set_num_threads(THREADS)
    shipped = load_config(CONFIG).stopping
    t_start = time.perf_counter()
    runs: dict[tuple[str, int, str], Run] = {}
    with tempfile.TemporaryDirectory(prefix="bench-stopping-") as tmp:
        fields = window_fields(args.dataset, Path(tmp), windows)
        windows = list(fields)
        for window in windows:
            cfg = load_config(CONFIG, _overrides(fields[window]))
            spec = load_spec(cfg.data.dataset)
            data = prepare_for(cfg, spec)
            for seed in seeds:
                for mode in ("fixed", "stopping"):
                    r = run(window, seed, mode, fields[window], data, spec, Path(tmp))
                    runs[window, seed, mode] = r
                    print(
                        f"  {window} seed {seed} {mode:8s}: {r.steps} steps, best AUC "
                        f"{r.best_auc:.4f}, {r.wall_s:.0f} s; {r.result.stopping.decision}",  # type: ignore[union-attr]
                        flush=True,
                    )
                check_prefix(runs[window, seed, "fixed"], runs[window, seed, "stopping"])
    body = report(runs, windows, seeds, shipped, time.perf_counter() - t_start, args.dataset)
    print(body)
    if args.json:
        args.json.write_text(json.dumps([as_record(r) for r in runs.values()], indent=1))
    if not args.no_doc:
        title = "Cycle-aware stopping vs the fixed schedule"
        write_dataset_section("cycle_stopping", args.dataset, title, body)
    return body


def report(
    runs: dict[tuple[str, int, str], Run],
    windows: list[str],
    seeds: list[int],
    shipped: Any,
    wall_s: float,
    dataset: str = "flights",
) -> str:
    flights = dataset == "flights"
    rule = (
        f"`stopping`: min_delta {shipped.min_delta:g}, patience {shipped.patience}, "
        f"min_cycles {shipped.min_cycles} (shipped enabled: {str(shipped.enabled).lower()})"
    )
    lengths = ", ".join(f"{w}: {runs[w, seeds[0], 'fixed'].result.total_steps:,}" for w in windows)
    where = (
        "three windows of the bundled flights (months 1-3, 4-6, 7-9; "
        "`configs/flights.yaml` otherwise as shipped"
        if flights
        else "three windows of the second example data set, the General Social Survey waves "
        "of `python -m pipeline example gss` (spec `configs/datasets/gss.yaml`; the windows "
        "`python -m benchmarks.tuning --dataset gss` uses: "
        + ", ".join(f"{w} (waves {', '.join(GSS[w])})" for w in windows)
        + "; `configs/flights.yaml`'s model and schedule otherwise as shipped"
    )
    lines = [
        f"The training job on {where}: its schedule in epochs, 3 cycles; "
        f"scheduled steps per window {lengths}), each seed run twice: the fixed schedule "
        f"(`stopping.enabled=false`) and cycle-aware stopping with the shipped rule, {rule}. "
        f"Seeds {', '.join(map(str, seeds))}; one torch thread; MLflow off.",
        "",
    ]
    if flights:
        lines += [
            "| window | seed | fixed: steps | fixed: best val AUC | stopping: steps "
            "| stopping: best val AUC | Δ AUC | decision | $ saved |",
            "|---|---:|---:|---:|---:|---:|---:|---|---:|",
        ]
    else:
        lines += [
            "| window | seed | fixed: steps | fixed: best val AUC | stopping: steps "
            "| stopping: best val AUC | Δ AUC | decision | fixed: s | stopping: s "
            "| fixed: $ | stopping: $ | $ saved |",
            "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
        ]
    for w in windows:
        for s in seeds:
            f, c = runs[w, s, "fixed"], runs[w, s, "stopping"]
            st = c.result.stopping
            assert st is not None
            decision = f"stop after cycle {st.stopped_after_cycle}" if st.stopped else "every cycle"
            cost = (
                ""
                if flights
                else f"{f.wall_s:.1f} | {c.wall_s:.1f} | {f.result.cost_usd:.6f} "
                f"| {c.result.cost_usd:.6f} | "
            )
            lines.append(
                f"| {w} | {s} | {f.steps:,} | {f.best_auc:.4f} | {c.steps:,} | {c.best_auc:.4f} "
                f"| {c.best_auc - f.best_auc:+.4f} | {decision} | {cost}{st.usd_saved:.6f} |"
            )
    issue_head, issue_rule = (
        (" seed 0 stopping vs the issue's figure |", "---:|") if flights else ("", "")
    )
    lines += [
        "",
        "Per window (mean over seeds):",
        "",
        "| window | fixed best val AUC | stopping best val AUC | Δ | within "
        f"{TARGET_AUC_DROP} |{issue_head} steps, fixed -> stopping |",
        f"|---|---:|---:|---:|---|{issue_rule}---:|",
    ]
    ok_auc = True
    for w in windows:
        fa = statistics.mean(runs[w, s, "fixed"].best_auc for s in seeds)
        ca = statistics.mean(runs[w, s, "stopping"].best_auc for s in seeds)
        fs = statistics.mean(runs[w, s, "fixed"].steps for s in seeds)
        cs = statistics.mean(runs[w, s, "stopping"].steps for s in seeds)
        within = fa - ca <= TARGET_AUC_DROP
        ok_auc &= within
        issue = ""
        if flights:
            issue = (
                f"{runs[w, 0, 'stopping'].best_auc:.4f} vs {FIXED_AUC_THEN[w]}"
                if 0 in seeds
                else "-"
            ) + " | "
        lines.append(
            f"| {w} | {fa:.4f} | {ca:.4f} | {ca - fa:+.4f} | {'yes' if within else '**no**'} "
            f"| {issue}{fs:,.0f} -> {cs:,.0f} |"
        )
    fixed_total = statistics.mean(sum(runs[w, s, "fixed"].steps for w in windows) for s in seeds)
    stop_total = statistics.mean(sum(runs[w, s, "stopping"].steps for w in windows) for s in seeds)
    saved = 1 - stop_total / fixed_total
    fixed_s = sum(r.wall_s for k, r in runs.items() if k[2] == "fixed")
    stop_s = sum(r.wall_s for k, r in runs.items() if k[2] == "stopping")
    usd = sum(r.result.stopping.usd_saved for r in runs.values() if r.result.stopping)
    vs_issue = 1 - stop_total / ISSUE_FIXED_STEPS
    if flights:
        met = min(saved, vs_issue) >= TARGET_SAVED and ok_auc and len(windows) == 3
        fewer = (
            f"**{saved:.1%} fewer** than the fixed schedule, {vs_issue:.1%} fewer than the "
            f"issue's {ISSUE_FIXED_STEPS:,} (target >= {TARGET_SAVED:.0%})"
        )
        spent = ""
        target = f">= {TARGET_SAVED:.0%} fewer steps than 6,000 and than the fixed schedule"
    else:
        met = saved >= TARGET_SAVED and ok_auc and len(windows) == 3
        fewer = f"**{saved:.1%} fewer** than the fixed schedule (target >= {TARGET_SAVED:.0%})"
        fixed_usd = sum(r.result.cost_usd for k, r in runs.items() if k[2] == "fixed")
        stop_usd = sum(r.result.cost_usd for k, r in runs.items() if k[2] == "stopping")
        spent = (
            f" Dollars spent (the job's cost meter, `cost_usd`): fixed ${fixed_usd:.6f}, "
            f"stopping ${stop_usd:.6f} ({1 - stop_usd / fixed_usd:.1%} less)."
        )
        target = f">= {TARGET_SAVED:.0%} fewer steps than the fixed schedule"
    lines += [
        "",
        f"Optimizer steps over the {len(windows)} windows (mean over seeds): fixed "
        f"{fixed_total:,.0f}, stopping {stop_total:,.0f}: {fewer}. Wall time of the training "
        f"runs: fixed {fixed_s:.0f} s, "
        f"stopping {stop_s:.0f} s ({1 - stop_s / fixed_s:.1%} less; it includes the "
        f"evaluations and setup, which stopping does not shorten). Dollars saved "
        f"(the job's own estimate: steps not run x its cost per step so far, "
        f"CPU at the config's price): ${usd:.6f} over {len(runs) // 2} runs.{spent}",
        "",
        f"Target ({target}, "
        f"every window's best val AUC, mean over seeds, within {TARGET_AUC_DROP} of the fixed "
        f"schedule's on the same seeds, all three windows): **{'met' if met else 'not met'}**."
        + (
            " The issue's figures (0.7171, 0.7678, 0.7203) are single runs: the fixed schedule's "
            "seed 0 here gives 0.7678 and 0.7203 for 4-6 and 7-9 exactly (1-3 moved with the "
            "schedule in epochs); the column above compares seed 0 with them."
            if flights
            else " The tuned config on the same windows and seeds: section `tuning_gss`."
        ),
        "Check: every stopped run's cycle bests equal its fixed run's first cycles' bests "
        "exactly, and the rule's decisions agree up to the stop (a stopped run is the "
        "fixed run cut short).",
        "",
        "Other rules on the same runs (replayed over the fixed runs' cycle bests: a stopped "
        "run is its fixed run cut short, checked above; mean over seeds):",
        "",
        "| min_delta | patience | steps over the windows | fewer | worst window Δ AUC |",
        "|---:|---:|---:|---:|---:|",
    ]
    for min_delta, patience in ALTERNATIVES:
        total = statistics.mean(
            sum(replay(runs[w, s, "fixed"], min_delta, patience)[0] for w in windows) for s in seeds
        )
        worst = min(
            statistics.mean(
                replay(runs[w, s, "fixed"], min_delta, patience)[1] - runs[w, s, "fixed"].best_auc
                for s in seeds
            )
            for w in windows
        )
        lines.append(
            f"| {min_delta:g} | {patience} | {total:,.0f} | {1 - total / fixed_total:.1%} "
            f"| {worst:+.4f} |"
        )
    lines += [
        "",
        f"Whole benchmark: {wall_s / 60:.1f} min wall.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main(sys.argv[1:])
