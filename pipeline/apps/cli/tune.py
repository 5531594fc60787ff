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
    if summary.verdict is not None:
        lines.append(f"tuned v{summary.version}: {summary.verdict.reason}")
    else:
        best = s.best_trial
        lines.append(
            "no trial completed: no tuned config"
            if best is None
            else f"the start config (trial {best}) stayed the best: no tuned config"
        )
    emit(args, "\n".join(lines), summary.model_dump(mode="json"))
    return 0


def add_tune_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = command(sub, common, "tune", _tune)
    p.add_argument("--window", help="tuning batches, comma-separated (default: tune.*)")
    p.add_argument("--holdout", help="held-out batches, comma-separated (default: the latest)")
    p.add_argument("--trials", type=int, help="override tune.n_trials")


PARSERS = [add_tune_parser]
