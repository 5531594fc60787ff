"""``python -m pipeline`` commands for the registry: register, gate, canary, rollback, models.

  register RUN_ID          register a training run's cycle bests; set challenger
  gate [--version V]       evaluate the SLO gate on the version's holdout; move canary
  canary score BATCH       score a stored batch with champion and canary
  canary review BATCH...   compare canary and champion on the labels of these batches
  canary promote V         a person decides: canary V becomes champion
  canary reject V          a person decides: canary V is rolled back
  rollback                 champion returns to previous_champion (one command)
  models                   aliases, versions with gate/canary status, alias history

Exit codes: 0 done, 1 the gate refused the candidate (evidence recorded), 2 user error.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["PARSERS"]


def _env(ctx: Any) -> tuple[Any, Any, str]:
    from pipeline.registry import build_client, model_name

    return build_client(ctx.config), ctx.store, model_name(ctx.config, ctx.spec)


def _emit(args: argparse.Namespace, text: str, data: dict[str, Any]) -> None:
    from pipeline.cli import _emit as emit

    emit(args, text, data)


def _lineage(items: list[str] | None) -> dict[str, str]:
    from pipeline.cli import UsageError

    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--lineage expects KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def _register(args: argparse.Namespace, ctx: Any) -> int:
    from dataclasses import asdict

    from pipeline.registry import register_training_run

    client, store, name = _env(ctx)
    reg = register_training_run(
        client,
        store,
        ctx.spec,
        args.run_id,
        name=name,
        lineage=_lineage(args.lineage),
        ensemble=not args.no_ensemble,
    )
    _emit(args, reg.describe(), asdict(reg))
    return 0


def add_register_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "register",
        parents=[common],
        help="register a training run's cycle bests as model versions (idempotent)",
    )
    p.add_argument("run_id", help="MLflow run id of a finished training run")
    p.add_argument(
        "--lineage",
        action="append",
        metavar="KEY=VALUE",
        help="extra lineage tag, e.g. data_snapshot=datasets/... (repeatable)",
    )
    p.add_argument("--no-ensemble", action="store_true", help="never register the ensemble")
    p.set_defaults(func=_register)


def _gate(args: argparse.Namespace, ctx: Any) -> int:
    from pipeline.gate import GateFailed, gate_version
    from pipeline.registry import CHALLENGER, RegistryError, current_alias, training_holdout

    client, store, name = _env(ctx)
    version = args.version or current_alias(client, name, CHALLENGER)
    if version is None:
        raise RegistryError(f"{name} has no challenger; pass --version")
    run_id = args.holdout_run or client.get_model_version(name, version).run_id
    holdout = training_holdout(client, run_id, ctx.spec, store=store)
    try:
        result = gate_version(client, store, ctx.config, ctx.spec, name, holdout, version)
    except GateFailed as exc:
        _emit(args, exc.result.describe(), exc.result.to_dict())
        return 1
    _emit(args, result.describe(), result.to_dict())
    return 0


def add_gate_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "gate",
        parents=[common],
        help="SLO gate for a version (default: the challenger); moves canary",
    )
    p.add_argument("--version", help="model version (default: the challenger alias)")
    p.add_argument(
        "--holdout-run",
        help="training run whose validation rows are the holdout (default: the version's own run)",
    )
    p.set_defaults(func=_gate)


def _latest_labels(ctx: Any, batch: str) -> Any:
    from pipeline.cli import UsageError
    from pipeline.ingest import read_labels
    from pipeline.layout import committed_versions

    versions = committed_versions(ctx.store, ctx.spec.name, batch, "labels")
    if not versions:
        raise UsageError(f"no labels for {ctx.spec.name}/{batch} yet (ingest-labels first)")
    return read_labels(ctx.store, ctx.spec.name, batch, versions[-1])


def _canary(args: argparse.Namespace, ctx: Any) -> int:
    from dataclasses import asdict

    import pandas as pd

    from pipeline import canary
    from pipeline.cli import UsageError
    from pipeline.ingest import read_batch
    from pipeline.layout import resolve_batch

    client, store, name = _env(ctx)
    action = args.canary_action
    if action == "score":
        ref = resolve_batch(store, ctx.spec.name, args.batch)
        summary = canary.score_batch(
            client, store, ctx.config, ctx.spec, name, args.batch, read_batch(store, ref)
        )
        _emit(args, summary.describe(), asdict(summary))
        return 0
    if action == "review":
        labels = pd.concat([_latest_labels(ctx, b) for b in args.batches], ignore_index=True)
        review = canary.review_canary(client, store, ctx.config, ctx.spec, name, labels)
        result = canary.apply_review(client, store, ctx.config, review)
        _emit(args, f"{review.describe()}\n-> {result.action}", asdict(review))
        return 0
    if action in ("promote", "reject"):
        act = canary.promote if action == "promote" else canary.reject_canary
        result = act(client, store, ctx.config, name, args.version, why=args.why)
        _emit(args, f"{result.action}: v{result.version} ({result.detail})", asdict(result))
        return 0 if result.action != "lost" else 2
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
        a.add_argument("--why", required=True, help="recorded with the alias move")


def _rollback(args: argparse.Namespace, ctx: Any) -> int:
    from dataclasses import asdict

    from pipeline.canary import rollback_champion

    client, store, name = _env(ctx)
    result = rollback_champion(client, store, ctx.config, name, why=args.why)
    _emit(args, f"rolled back: {result.detail}", asdict(result))
    return 0


def add_rollback_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("rollback", parents=[common], help="champion returns to previous_champion")
    p.add_argument("--why", required=True, help="recorded with the alias move")
    p.set_defaults(func=_rollback)


def _models(args: argparse.Namespace, ctx: Any) -> int:
    from dataclasses import asdict

    from mlflow.exceptions import MlflowException

    from pipeline.cli import UsageError
    from pipeline.registry import alias_history

    client, store, name = _env(ctx)
    try:
        aliases = {k: str(v) for k, v in client.get_registered_model(name).aliases.items()}
    except MlflowException:
        raise UsageError(f"no registered model {name!r} yet (register a training run)") from None
    by_version: dict[str, list[str]] = {}
    for alias, version in aliases.items():
        by_version.setdefault(version, []).append(alias)
    versions = sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version))
    lines = [f"{name}: " + ", ".join(f"{a} -> v{v}" for a, v in sorted(aliases.items()))]
    rows = []
    for mv in versions[-args.limit :]:
        t = mv.tags
        row = {
            "version": str(mv.version),
            "aliases": by_version.get(str(mv.version), []),
            "candidate": t.get("candidate"),
            "val_auc": t.get("val_auc"),
            "gate": t.get("gate.status", "-"),
            "canary": t.get("canary.status", "-"),
            "run": t.get("training_run_name"),
        }
        rows.append(row)
        lines.append(
            f"  v{row['version']:<4} {row['candidate'] or '-':<9} auc {row['val_auc'] or '-':<9} "
            f"gate {row['gate']:<7} canary {row['canary']:<20} run {row['run']} "
            + " ".join(f"[{a}]" for a in row["aliases"])
        )
    history = alias_history(store, name)
    lines.append("alias history (newest last):")
    lines += [f"  {m.describe()}" for m in history[-args.limit :]]
    _emit(
        args,
        "\n".join(lines),
        {"aliases": aliases, "versions": rows, "history": [asdict(m) for m in history]},
    )
    return 0


def add_models_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "models", parents=[common], help="registered versions, aliases and the alias history"
    )
    p.add_argument("--limit", type=int, default=20, help="newest versions and moves shown")
    p.set_defaults(func=_models)


PARSERS = [
    add_register_parser,
    add_gate_parser,
    add_canary_parser,
    add_rollback_parser,
    add_models_parser,
]
