"""``python -m pipeline`` data commands: ingest, reference, validate, drift, quality,
check, batches. Each handler is one call of :mod:`pipeline.flow`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pipeline.apps.cli.common import Lazy, UsageError, command, emit

__all__ = ["PARSERS"]


def _is_month(source: str) -> bool:
    from pipeline.steps.landing.ingest import parse_month

    return not Path(source).exists() and parse_month(source) is not None


def _ingest(args: argparse.Namespace, lazy: Lazy) -> int:
    from pipeline import flow

    if _is_month(args.source):
        if args.batch_id is not None:
            raise UsageError("--batch-id is for files; a flights month is batch 2013-MM")
    elif args.batch_id is None:
        raise UsageError(
            f"ingesting a file needs --batch-id (e.g. --batch-id 2024-03): every later "
            f"step is keyed by it; {args.source!r} is not a flights month either"
        )
    # a person at a shell may read any file they can (the DAG's source param may not)
    landed = flow.land(
        lazy.env,
        args.source,
        labels=args.labels,
        batch_id=args.batch_id,
        new_version=args.new_version,
        trusted=True,
    )
    emit(args, landed.message, landed.to_xcom())
    return 0


def add_ingest_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    for name, labels, text in (
        ("ingest", False, "land a feature batch (file or flights month)"),
        ("ingest-labels", True, "land the labels of an already ingested batch"),
    ):
        p = sub.add_parser(name, parents=[common], help=text, description=text)
        p.add_argument(
            "source", help="CSV/Parquet path or s3://bucket/key, or a flights month (2013-03)"
        )
        p.add_argument("--batch-id", help="the batch's id (required for files), e.g. 2024-03")
        p.add_argument(
            "--new-version",
            action="store_true",
            help="store different content for an existing batch id as its next version "
            "(labels: a correction of rows already labelled; a part that only adds rows "
            "needs none)",
        )
        p.set_defaults(func=_ingest, labels=labels)


def _reference(args: argparse.Namespace, lazy: Lazy) -> int:
    """store a reference snapshot from stored batches

    Store a reference snapshot (immutable) from the newest version of each named batch,
    e.g. the champion's training window.
    """
    from pipeline import flow

    snap, refs = flow.reference(lazy.env, args.snapshot, args.batches)
    verb = "stored" if snap.status == "created" else "already stored (same content)"
    sampled = f", sampled from {snap.source_rows:,}" if snap.sampled else ""
    text = (
        f"reference snapshot {snap.dataset}/{snap.snapshot_id} {verb}: {snap.rows:,} rows"
        f"{sampled} from {', '.join(map(str, refs))}"
    )
    emit(args, text, {**snap.__dict__, "batches": [str(r) for r in refs]})
    return 0


def add_reference_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = command(sub, common, "reference", _reference)
    p.add_argument("snapshot", help="snapshot id, e.g. 2013-01 or flight_delay-v3")
    p.add_argument("--batches", nargs="+", required=True, metavar="BATCH", help="batch ids")


def _validate(args: argparse.Namespace, lazy: Lazy) -> int:
    """run the spec's GX suite on a stored batch

    Validate a stored batch; a failing batch is quarantined (exit 1).
    """
    from pipeline.flow.monitor import validate

    summary = validate(
        lazy.env, args.batch, version=args.version, reference=args.reference, alert=False
    )
    emit(args, summary.message(), summary.as_dict())
    return 0


def _batch_args(p: argparse.ArgumentParser, reference_required: bool) -> None:
    p.add_argument("batch", help="batch id, e.g. 2013-03")
    p.add_argument("--version", type=int, help="batch version (default: the newest stored)")
    p.add_argument(
        "--reference",
        required=reference_required,
        metavar="SNAPSHOT",
        help="reference snapshot id"
        + ("" if reference_required else " (enables the unseen-category checks)"),
    )


def add_validate_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = command(sub, common, "validate", _validate)
    _batch_args(p, reference_required=False)


def _revalidate(args: argparse.Namespace, lazy: Lazy) -> int:
    """re-check a quarantined batch against the current spec; release it if it passes

    Re-check a quarantined (refused) version of a batch against the current dataset spec,
    e.g. after fixing a spec mistake. When it passes it lands as the batch's next version
    (drift, retraining and ingest then find it); the quarantined copy, its refusal and a
    record of every re-check (who, when, the spec's hash) are kept. Still failing: the
    failed expectations are listed and the exit code is 1.
    """
    from pipeline.flow.monitor import revalidate

    reference = None if args.reference == "none" else args.reference
    release = revalidate(
        lazy.env,
        args.batch,
        version=args.version,
        reference=reference,
        new_version=args.new_version,
    )
    emit(args, release.message(), release.as_dict())
    return 0


def add_revalidate_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = command(sub, common, "revalidate", _revalidate)
    p.add_argument("batch", help="batch id, e.g. 2024-03")
    p.add_argument(
        "--version", type=int, help="quarantined version (default: the newest quarantined)"
    )
    p.add_argument(
        "--reference",
        default="champion",  # pipeline.flow.monitor.CHAMPION_REFERENCE (a light import here)
        metavar="SNAPSHOT",
        help="reference snapshot for the unseen-category checks (default: the champion's, "
        "as the drift monitor validates; none: skip those checks)",
    )
    p.add_argument(
        "--new-version",
        action="store_true",
        help="release it although the batch holds a valid version (it becomes the newest)",
    )


def _drift_text(summary: Any, decision: Any) -> str:
    verdict = "RETRAIN" if decision.retrain else "no retrain"
    return f"{summary.message()}\ndecision: {verdict} ({decision.reason})"


def _drift(args: argparse.Namespace, lazy: Lazy) -> int:
    """Evidently drift of a stored batch against a reference snapshot

    Compare a stored batch with a reference snapshot and decide on a retrain.
    """
    from pipeline.flow.monitor import drift_summary
    from pipeline.steps.quality.decision import decide_retrain

    summary = drift_summary(lazy.env, args.batch, version=args.version, reference=args.reference)
    decision = decide_retrain(summary)
    data = {"drift": summary.as_dict(), "decision": decision.as_dict()}
    emit(args, _drift_text(summary, decision), data)
    return 0


def add_drift_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = command(sub, common, "drift", _drift)
    _batch_args(p, reference_required=True)


def _check(args: argparse.Namespace, lazy: Lazy) -> int:
    """validate, check drift and decide, for one stored batch

    Validate a stored batch (exit 1 and quarantine on failure), then compare it with the
    reference snapshot and decide on a retrain.
    """
    from pipeline.flow.monitor import drift_summary, validate
    from pipeline.steps.quality.decision import decide_retrain

    env = lazy.env
    valid = validate(env, args.batch, version=args.version, reference=args.reference, alert=False)
    summary = drift_summary(env, args.batch, version=valid.ref.version, reference=args.reference)
    decision = decide_retrain(summary)
    text = "\n".join([valid.message(), _drift_text(summary, decision)])
    data = {
        "validation": valid.as_dict(),
        "drift": summary.as_dict(),
        "decision": decision.as_dict(),
    }
    emit(args, text, data)
    return 0


def add_check_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = command(sub, common, "check", _check)
    _batch_args(p, reference_required=True)


def _quality(args: argparse.Namespace, lazy: Lazy) -> int:
    """live AUC of a model's stored predictions on a batch's labels

    Join predictions/<dataset>/<batch>/<model>/predictions.parquet (id, score) with the
    batch's labels and compare the AUC with quality.slo.
    """
    from pipeline.steps.quality.decision import decide_retrain
    from pipeline.steps.quality.live import check_quality

    env = lazy.env
    summary = check_quality(
        env.store,
        env.spec,
        args.batch,
        args.model_version,
        labels_version=args.labels_version,
        config=env.config.quality,
    )
    decision = decide_retrain(quality=summary)
    verdict = "RETRAIN" if decision.retrain else "no retrain"
    text = f"{summary.message()}\ndecision: {verdict} ({decision.reason})"
    emit(args, text, {"quality": summary.as_dict(), "decision": decision.as_dict()})
    return 0


def add_quality_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = command(sub, common, "quality", _quality)
    p.add_argument("batch", help="batch id, e.g. 2013-03")
    p.add_argument("--model-version", required=True, help="the model version that scored it")
    p.add_argument("--labels-version", type=int, help="labels version (default: the newest)")


def _batches(args: argparse.Namespace, lazy: Lazy) -> int:
    """list stored batches, their versions and their ledger (the steps done for each)"""
    from dataclasses import asdict

    from pipeline import flow

    env = lazy.env
    rows = [asdict(b) for b in flow.batches(env)]
    lines = [
        lazy.looking_at(),
        f"{env.store.description}, dataset {env.dataset}: {len(rows)} batch id(s)",
    ]
    for r in rows:
        released = "".join(f"  v{q} released as v{v}" for q, v in r["released"].items())
        lines.append(
            f"  {r['batch_id']:<12} versions {r['versions'] or '-'}  "
            f"quarantined {r['quarantined'] or '-'}  labels {r['labels'] or '-'}{released}"
        )
        missing = f"  (missing: {', '.join(r['missing'])})" if r["missing"] else ""
        lines.append(f"  {'':<12} ledger: {r['ledger']}{missing}")
    emit(args, "\n".join(lines), {"store": env.store.description, "batches": rows})
    return 0


def add_batches_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    command(sub, common, "batches", _batches)


PARSERS = [
    add_ingest_parser,
    add_reference_parser,
    add_validate_parser,
    add_revalidate_parser,
    add_drift_parser,
    add_quality_parser,
    add_check_parser,
    add_batches_parser,
]
