"""``python -m pipeline tune``: the schedule's Optuna study, its versioned config and
the held-out verdict (:func:`pipeline.flow.tuning.tune`, which the ``tune`` DAG calls)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pipeline.apps.cli.common import Lazy, UsageError, command, emit

__all__ = ["PARSERS"]


def _batches(text: str | None) -> list[str] | None:
    return [b.strip() for b in text.split(",") if b.strip()] if text else None


def _tune(args: argparse.Namespace, lazy: Lazy) -> int:
    """tune the cosine schedule with Optuna; adopt the best only if it wins held out

    Trials (tune.n_trials, tune.budget_usd: each trial stops at what is left) train
    the tuning window with values from tune.space, each a nested MLflow run, pruned at
    cycle ends (successive halving); a killed study resumes from its storage
    (tune.storage). The best trial becomes tuning/<dataset>/v<N>.yaml in the store;
    later retrains start from it only when it beats the current config on the
    held-out window beyond the noise of paired seeds, or is cheaper and no worse
    (docs/training.md, Tuning).
    """
    from pipeline.flow.tuning import TuneError, tune
    from pipeline.steps.tuning.study import TuneInterrupted

    if args.trials is not None and args.trials < 1:
        raise UsageError(f"--trials must be at least 1, got {args.trials}")
    try:
        summary = tune(
            lazy.env,
            window=_batches(args.window),
            holdout=_batches(args.holdout),
            n_trials=args.trials,
        )
    except TuneError as exc:
        raise UsageError(str(exc)) from None
    except TuneInterrupted as exc:  # SIGTERM: checkpointed; the same command resumes
        print(f"error: {exc}", file=sys.stderr)
        return 75
    s = summary.study
    lines = [
        lazy.looking_at(),
        f"study {s.study} ({s.storage}): {s.stop_reason}",
        f"  window {','.join(summary.window)}, held out {','.join(summary.holdout)}; "
        f"{len(s.trials)} trial(s), {s.steps} steps, ${s.spent_usd:.4f}",
    ]
    for t in s.trials:
        value = f"{t.value:.4f}" if t.value is not None else "-"
        why = ""
        if t.state == "PRUNED":
            why = (
                " (stopped by the budget)"
                if t.stopped_by == "budget"
                else f" (pruned after cycle {t.pruned_at_cycle})"
            )
        elif t.state == "FAIL":
            why = f" ({t.fail_reason})"
        lines.append(f"  trial {t.number}: {t.state}{why} val AUC {value}, {t.steps} steps")
    lines += _pick_lines(s)
    if summary.verdict is not None:
        lines.append(f"tuned v{summary.version}: {summary.verdict.reason}")
    elif s.best_trial is None:
        lines.append("no trial completed: no tuned config")
    else:
        lines.append(f"the start config (trial {s.best_trial}) stayed the best: no tuned config")
    emit(args, "\n".join(lines), summary.model_dump(mode="json"))
    return 0


def _pick_lines(s: Any) -> list[str]:
    """The pick (a trial as it ran, or its first ``best_cycles`` cycles) and each cheaper
    candidate checked on more seeds beside the highest, with its paired interval."""
    if s.best_trial is None:
        return []
    cut = "as it ran" if s.best_cycles is None else f"its first {s.best_cycles} cycle(s)"
    steps = f", {s.best_steps} steps" if s.best_steps is not None else ""
    lines = [f"pick: trial {s.best_trial} {cut}{steps}, val AUC {s.best_value:.4f}"]
    for c in s.checks:
        what = f"trial {c.trial}" + (f" (first {c.cycles} cycle(s))" if c.cycles else "")
        lines.append(
            f"  checked {what} on {len(c.gains)} seeds beside the highest: gain "
            f"{c.mean:+.4f}, interval [{c.low:+.4f}, {c.high:+.4f}]: "
            + ("kept" if c.confirmed else "rejected")
        )
    return lines


def add_tune_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = command(sub, common, "tune", _tune)
    p.add_argument("--window", help="tuning batches, comma-separated (default: tune.*)")
    p.add_argument("--holdout", help="held-out batches, comma-separated (default: the latest)")
    p.add_argument("--trials", type=int, help="override tune.n_trials")


PARSERS = [add_tune_parser]
