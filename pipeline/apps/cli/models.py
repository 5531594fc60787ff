"""``python -m pipeline`` registry commands: register, gate, canary, rollback, models.

  register RUN_ID          register a training run's cycle bests; set challenger
  gate [--version V]       evaluate the SLO gate on the version's holdout; move canary
  canary score BATCH       score a stored batch with champion and canary
  canary review BATCH...   compare canary and champion on the labels of these batches
                           (with canary.require_approval a promotion is held, as in the DAG)
  canary promote V         a person decides: canary V becomes champion (an override
                           unless the review held it; --reason, recorded with the OS user)
  canary reject V          a person decides: canary V is rolled back (--reason)
  rollback                 champion returns to previous_champion (one command)
  models                   aliases, versions with gate/canary status, alias history

Exit codes: 0 done, 1 the gate refused the candidate (evidence recorded), 2 user error.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

from pipeline.apps.cli import cards
from pipeline.apps.cli.common import Lazy, UsageError, command, emit

__all__ = ["PARSERS"]


def _lineage(items: list[str] | None) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--lineage expects KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def _register(args: argparse.Namespace, lazy: Lazy) -> int:
    """register a training run's cycle bests as model versions (idempotent)"""
    from pipeline.flow import models

    reg = models.register_run(
        lazy.env, args.run_id, lineage=_lineage(args.lineage), ensemble=not args.no_ensemble
    )
    emit(args, reg.describe(), asdict(reg))
    return 0


def add_register_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = command(sub, common, "register", _register)
    p.add_argument("run_id", help="MLflow run id of a finished training run")
    p.add_argument(
        "--lineage",
        action="append",
        metavar="KEY=VALUE",
        help="extra lineage tag, e.g. data_snapshot=datasets/... (repeatable)",
    )
    p.add_argument("--no-ensemble", action="store_true", help="never register the ensemble")


def _gate(args: argparse.Namespace, lazy: Lazy) -> int:
    """SLO gate for a version (default: the challenger); moves canary"""
    from pipeline.flow import models
    from pipeline.steps.promotion.gate import GateFailed

    try:
        result = models.gate_version(lazy.env, args.version, holdout_run=args.holdout_run)
    except GateFailed as exc:
        emit(args, exc.result.describe(), exc.result.to_dict())
        return 1
    emit(args, result.describe(), result.to_dict())
    return 0


def add_gate_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = command(sub, common, "gate", _gate)
    p.add_argument("--version", help="model version (default: the challenger alias)")
    p.add_argument(
        "--holdout-run",
        help="training run whose validation rows are the holdout (default: the version's own run)",
    )


def _canary(args: argparse.Namespace, lazy: Lazy) -> int:
    from pipeline.flow import labels, monitor

    action = args.canary_action
    if action == "score":
        summary = monitor.score(lazy.env, args.batch)
        emit(args, summary.describe(), asdict(summary))
        return 0
    if action == "review":
        review, result = labels.review_canary(lazy.env, args.batches)
        emit(args, f"{review.describe()}\n-> {result.action}", asdict(review))
        return 0
    if action in ("promote", "reject"):  # a manual promotion is an override of the review
        approve = action == "promote"
        return cards.decide(lazy, args, approve=approve, override=approve)
    raise UsageError("choose an action: score, review, promote or reject")


def add_canary_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "canary",
        parents=[common],
        help="score with champion+canary, review on labels, promote or reject",
    )
    p.set_defaults(func=_canary, canary_action=None)
    actions = p.add_subparsers(dest="canary_action", metavar="ACTION")
    s = actions.add_parser("score", parents=[common], help="score a stored batch")
    s.add_argument("batch", help="batch id, e.g. 2013-05")
    r = actions.add_parser(
        "review", parents=[common], help="compare canary and champion on labelled batches, then act"
    )
    r.add_argument("batches", nargs="+", help="batch ids whose labels arrived")
    for verb in ("promote", "reject"):
        a = actions.add_parser(verb, parents=[common], help=f"a person decides: {verb} the canary")
        a.add_argument("version", help="the canary's version")
        cards.reason_option(a)


def _rollback(args: argparse.Namespace, lazy: Lazy) -> int:
    """champion returns to previous_champion"""
    from pipeline.flow import models

    result = models.rollback(lazy.env, why=args.why)
    emit(args, f"rolled back: {result.detail}", asdict(result))
    return 0


def add_rollback_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = command(sub, common, "rollback", _rollback)
    p.add_argument("--why", required=True, help="recorded with the alias move")


def _models(args: argparse.Namespace, lazy: Lazy) -> int:
    """registered versions, aliases and the alias history"""
    from pipeline.flow import models

    env = lazy.env
    listing = models.list_models(env)
    lines = [
        lazy.looking_at(),
        f"{env.model}: " + ", ".join(f"{a} -> v{v}" for a, v in sorted(listing.aliases.items())),
    ]
    rows = listing.versions[-args.limit :]
    for row in rows:
        lines.append(
            f"  v{row['version']:<4} {row['candidate'] or '-':<9} auc {row['val_auc'] or '-':<9} "
            f"gate {row['gate']:<7} canary {row['canary']:<20} run {row['run']} "
            + " ".join(f"[{a}]" for a in row["aliases"])
        )
    lines.append("alias history (newest last):")
    lines += [f"  {m.describe()}" for m in listing.history[-args.limit :]]
    data = {
        "aliases": listing.aliases,
        "versions": rows,
        "history": [asdict(m) for m in listing.history],
    }
    emit(args, "\n".join(lines), data)
    return 0


def add_models_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = command(sub, common, "models", _models)
    p.add_argument("--limit", type=int, default=20, help="newest versions and moves shown")


PARSERS: list[Any] = [
    add_register_parser,
    add_gate_parser,
    add_canary_parser,
    add_rollback_parser,
    add_models_parser,
    *cards.PARSERS,  # model-card, approval
]
