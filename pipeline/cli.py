"""python -m pipeline: the pipeline's data steps from a shell.

Subcommands (each keyed by an explicit batch id, safe to re-run):
  ingest SOURCE          land a batch: a CSV/Parquet file (path or s3://) with --batch-id,
                         or a month of the bundled 2013 flights (3, 03 or 2013-03)
  ingest-labels SOURCE   land the labels of an already ingested batch (they arrive later)
  reference SNAPSHOT     store a reference snapshot from stored batches (--batches ...)
  validate BATCH         run the spec's Great Expectations suite; quarantine on failure
  drift BATCH            Evidently drift against a reference snapshot, and the decision
  quality BATCH          live AUC of a model's stored predictions on the batch's labels
  check BATCH            validate, then drift, then decide (what the scheduled flow does)
  batches                list stored batches, versions, labels and quarantined versions
  alerts test|retry|list send a test alert, re-send undelivered alerts, list them
  spend                  training spend of a month (MLflow cost_usd) against the budget
  register RUN_ID        register a training run's cycle bests; set challenger
  gate                   the SLO gate for the challenger; moves canary (exit 1: refused)
  canary score|review|promote|reject   serve, judge and decide the canary
  rollback --why TEXT    champion returns to previous_champion
  models                 aliases, versions with gate/canary status, alias history
  demo                   replay 2013 month by month through the Airflow DAGs (./run demo)
  ui                     start the Airflow and MLflow UIs on the local data (./run ui)

Configuration: ``--config FILE`` (or $COSINE_RETRAIN_CONFIG) and environment variables
``COSINE_RETRAIN_<SECTION>__<FIELD>``; see docs/data.md.

Exit codes: 0 done (also "drift, retrain requested": that is an answer, not an error),
1 the batch failed validation (it was quarantined; the message lists why),
2 a user error (arguments, config, unreadable input, refused overwrite), one ``error:`` line.

Other modules add subcommands by appending an ``add_*_parser(subparsers, common)``
function to :data:`SUBCOMMANDS`; each sets ``func=handler(args, ctx) -> int``.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pipeline.config import ConfigError, PipelineConfig, load_config
from pipeline.storage import StorageError

log = logging.getLogger("pipeline")


class UsageError(Exception):
    """A mistake on the command line: printed as one ``error:`` line, exit 2."""


class Context:
    """What handlers need, built lazily once: the config, the store, the dataset spec."""

    def __init__(self, config_path: str | None) -> None:
        self._config_path = config_path

    @functools.cached_property
    def config(self) -> PipelineConfig:
        return load_config(self._config_path)

    @functools.cached_property
    def store(self) -> Any:
        from pipeline.storage import build_store

        return build_store(self.config)

    @functools.cached_property
    def spec(self) -> Any:
        from training.data.spec import load_spec

        return load_spec(self.config.dataset_spec)


def _emit(args: argparse.Namespace, text: str, data: dict[str, Any]) -> None:
    if args.json:
        print(json.dumps(data, indent=2, default=str))
    else:
        print(text)


# ------------------------------------------------------------------------------ ingest


def _is_month(source: str) -> bool:
    from pipeline.ingest import parse_month

    return not Path(source).exists() and parse_month(source) is not None


def _ingest(args: argparse.Namespace, ctx: Context) -> int:
    from pipeline import ingest

    if _is_month(args.source):
        if args.batch_id is not None:
            raise UsageError("--batch-id is for files; a flights month is batch 2013-MM")
        if args.labels:
            result = ingest.ingest_flights_labels(
                ctx.store, ctx.spec, args.source, new_version=args.new_version
            )
        else:
            result = ingest.ingest_flights_month(
                ctx.store, ctx.spec, args.source, new_version=args.new_version
            )
    else:
        if args.batch_id is None:
            raise UsageError(
                f"ingesting a file needs --batch-id (e.g. --batch-id 2024-03): every later "
                f"step is keyed by it; {args.source!r} is not a flights month either"
            )
        fn = ingest.ingest_labels_file if args.labels else ingest.ingest_file
        result = fn(
            ctx.store,
            ctx.spec,
            args.source,
            args.batch_id,
            new_version=args.new_version,
            storage=ctx.config.storage,
        )
    _emit(args, result.message, result.as_dict())
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
            help="store different content for an existing batch id as its next version",
        )
        p.set_defaults(func=_ingest, labels=labels)


# ------------------------------------------------------------------------------ reference


def _reference(args: argparse.Namespace, ctx: Context) -> int:
    from pipeline.layout import resolve_batch
    from pipeline.reference import create_reference_from_batches

    refs = [resolve_batch(ctx.store, ctx.spec.name, b) for b in args.batches]
    snap = create_reference_from_batches(
        ctx.store,
        ctx.spec,
        refs,
        args.snapshot,
        rows=ctx.config.drift.reference_rows,
        seed=ctx.config.drift.sample_seed,
    )
    verb = "stored" if snap.status == "created" else "already stored (same content)"
    sampled = f", sampled from {snap.source_rows:,}" if snap.sampled else ""
    text = (
        f"reference snapshot {snap.dataset}/{snap.snapshot_id} {verb}: {snap.rows:,} rows"
        f"{sampled} from {', '.join(map(str, refs))}"
    )
    _emit(args, text, {**snap.__dict__, "batches": [str(r) for r in refs]})
    return 0


def add_reference_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "reference",
        parents=[common],
        help="store a reference snapshot from stored batches",
        description="Store a reference snapshot (immutable) from the newest version of each "
        "named batch, e.g. the champion's training window.",
    )
    p.add_argument("snapshot", help="snapshot id, e.g. 2013-01 or flight_delay-v3")
    p.add_argument("--batches", nargs="+", required=True, metavar="BATCH", help="batch ids")
    p.set_defaults(func=_reference)


# ------------------------------------------------------------------------------ validate


def _batch(args: argparse.Namespace, ctx: Context) -> Any:
    from pipeline.layout import resolve_batch

    return resolve_batch(ctx.store, ctx.spec.name, args.batch, args.version)


def _validate(args: argparse.Namespace, ctx: Context) -> int:
    from pipeline.validation import validate_batch

    summary = validate_batch(
        ctx.store,
        ctx.spec,
        _batch(args, ctx),
        reference_id=args.reference,
        config=ctx.config.validation,
    )
    _emit(args, summary.message(), summary.as_dict())
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
    p = sub.add_parser(
        "validate",
        parents=[common],
        help="run the spec's GX suite on a stored batch",
        description="Validate a stored batch; a failing batch is quarantined (exit 1).",
    )
    _batch_args(p, reference_required=False)
    p.set_defaults(func=_validate)


# ------------------------------------------------------------------------------ drift


def _drift(args: argparse.Namespace, ctx: Context) -> int:
    from pipeline.drift import check_drift, decide_retrain

    summary = check_drift(
        ctx.store, ctx.spec, _batch(args, ctx), args.reference, config=ctx.config.drift
    )
    decision = decide_retrain(summary)
    text = f"{summary.message()}\ndecision: {'RETRAIN' if decision.retrain else 'no retrain'}"
    text += f" ({decision.reason})"
    _emit(args, text, {"drift": summary.as_dict(), "decision": decision.as_dict()})
    return 0


def add_drift_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "drift",
        parents=[common],
        help="Evidently drift of a stored batch against a reference snapshot",
        description="Compare a stored batch with a reference snapshot and decide on a retrain.",
    )
    _batch_args(p, reference_required=True)
    p.set_defaults(func=_drift)


def _check(args: argparse.Namespace, ctx: Context) -> int:
    from pipeline.drift import check_drift, decide_retrain
    from pipeline.validation import validate_batch

    ref = _batch(args, ctx)
    valid = validate_batch(
        ctx.store, ctx.spec, ref, reference_id=args.reference, config=ctx.config.validation
    )
    drift = check_drift(ctx.store, ctx.spec, ref, args.reference, config=ctx.config.drift)
    decision = decide_retrain(drift)
    text = "\n".join(
        [
            valid.message(),
            drift.message(),
            f"decision: {'RETRAIN' if decision.retrain else 'no retrain'} ({decision.reason})",
        ]
    )
    data = {
        "validation": valid.as_dict(),
        "drift": drift.as_dict(),
        "decision": decision.as_dict(),
    }
    _emit(args, text, data)
    return 0


def add_check_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "check",
        parents=[common],
        help="validate, check drift and decide, for one stored batch",
        description="Validate a stored batch (exit 1 and quarantine on failure), then compare "
        "it with the reference snapshot and decide on a retrain.",
    )
    _batch_args(p, reference_required=True)
    p.set_defaults(func=_check)


# ------------------------------------------------------------------------------ quality


def _quality(args: argparse.Namespace, ctx: Context) -> int:
    from pipeline.drift import check_quality, decide_retrain

    summary = check_quality(
        ctx.store,
        ctx.spec,
        args.batch,
        args.model_version,
        labels_version=args.labels_version,
        config=ctx.config.quality,
    )
    decision = decide_retrain(quality=summary)
    text = f"{summary.message()}\ndecision: {'RETRAIN' if decision.retrain else 'no retrain'}"
    text += f" ({decision.reason})"
    _emit(args, text, {"quality": summary.as_dict(), "decision": decision.as_dict()})
    return 0


def add_quality_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "quality",
        parents=[common],
        help="live AUC of a model's stored predictions on a batch's labels",
        description="Join predictions/<dataset>/<batch>/<model>/predictions.parquet (id, score) "
        "with the batch's labels and compare the AUC with quality.slo.",
    )
    p.add_argument("batch", help="batch id, e.g. 2013-03")
    p.add_argument("--model-version", required=True, help="the model version that scored it")
    p.add_argument("--labels-version", type=int, help="labels version (default: the newest)")
    p.set_defaults(func=_quality)


# ------------------------------------------------------------------------------ batches


def _batches(args: argparse.Namespace, ctx: Context) -> int:
    from pipeline.layout import committed_versions

    dataset = ctx.spec.name
    ids = sorted(
        {
            key.split("/")[3]
            for area in ("batches", "quarantine", "labels")
            for key in ctx.store.list(f"datasets/{dataset}/{area}")
        }
    )
    rows = []
    for batch_id in ids:
        rows.append(
            {
                "batch_id": batch_id,
                "versions": committed_versions(ctx.store, dataset, batch_id),
                "quarantined": committed_versions(ctx.store, dataset, batch_id, "quarantine"),
                "labels": committed_versions(ctx.store, dataset, batch_id, "labels"),
            }
        )
    lines = [f"{ctx.store.description}, dataset {dataset}: {len(rows)} batch id(s)"]
    for r in rows:
        lines.append(
            f"  {r['batch_id']:<12} versions {r['versions'] or '-'}  "
            f"quarantined {r['quarantined'] or '-'}  labels {r['labels'] or '-'}"
        )
    _emit(args, "\n".join(lines), {"store": ctx.store.description, "batches": rows})
    return 0


def add_batches_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("batches", parents=[common], help="list stored batches and their versions")
    p.set_defaults(func=_batches)


# ------------------------------------------------------------------------------ alerts


def _alerts_usage(args: argparse.Namespace, ctx: Context) -> int:
    raise UsageError("choose an action: alerts test, alerts retry or alerts list")


def _alert_lines(channels: dict[str, str]) -> list[str]:
    return [f"  {channel}: {status}" for channel, status in channels.items()]


def _alerts_test(args: argparse.Namespace, ctx: Context) -> int:
    from datetime import UTC, datetime

    from pipeline.alerts import Alert, AlertKind, send_alert

    kind = AlertKind(args.kind)
    run_key = args.run_key or f"test-{datetime.now(UTC):%Y%m%dT%H%M%S.%fZ}"
    alert = Alert(
        kind=kind,
        run_key=run_key,
        title=f"Test alert ({kind.value}) from cosine-retrain",
        text="Sent by `python -m pipeline alerts test` to check the alert channels.",
        details={"test": True, "store": ctx.store.description},
    )
    # a test checks the channels: the kind and severity filters do not apply to it
    alerts = ctx.config.alerts.model_copy(update={"kinds": None, "min_severity": "info"})
    config = ctx.config.model_copy(update={"alerts": alerts})
    result = send_alert(alert, config=config, store=ctx.store)
    head = f"test alert {kind.value} {run_key} (alert id {alert.alert_id})"
    if not ctx.config.alerts.enabled:
        head += ": not sent, alerts.enabled is false"
    elif result.duplicate:
        head += ": recorded before; channels that have it were not sent to again"
    data = {
        "alert_id": alert.alert_id,
        "kind": kind.value,
        "run_key": run_key,
        "sent": result.sent,
        "duplicate": result.duplicate,
        "attempts": result.attempts,
        "channels": result.channels,
    }
    _emit(args, "\n".join([head, *_alert_lines(result.channels)]), data)
    return 0 if result.delivered else 1


def _alerts_retry(args: argparse.Namespace, ctx: Context) -> int:
    from pipeline.alerts import retry_undelivered

    max_age = args.max_age_days * 86400.0 if args.max_age_days > 0 else None
    done = retry_undelivered(
        config=ctx.config, store=ctx.store, include_unknown=args.unknown, max_age_s=max_age
    )
    lines = [f"{len(done)} undelivered alert(s) re-sent"]
    rows = []
    for status, result in done:
        lines.append(f"{status.kind} {status.run_key} (alert id {status.alert_id})")
        lines += _alert_lines(result.channels)
        rows.append({"kind": status.kind, "run_key": status.run_key, "channels": result.channels})
    _emit(args, "\n".join(lines), {"retried": rows})
    return 0 if all(r.delivered for _, r in done) else 1


def _alerts_list(args: argparse.Namespace, ctx: Context) -> int:
    from pipeline.alerts import list_alerts

    found = list_alerts(ctx.store)
    lines = [f"{ctx.store.description}: {len(found)} alert(s)"]
    for s in found:
        states = " ".join(f"{c}={v}" for c, v in s.channels.items())
        lines.append(f"  {s.created_at}  {s.kind:<22} {s.run_key[:40]:<40} {states}")
    rows = [{**s.__dict__} for s in found]
    _emit(args, "\n".join(lines), {"store": ctx.store.description, "alerts": rows})
    return 0


def add_alerts_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    from pipeline.alerts import AlertKind

    p = sub.add_parser(
        "alerts",
        parents=[common],
        help="send a test alert, re-send undelivered alerts, list recorded alerts",
        description="Alerts go to alerts.channels (docs/alerts.md).",
    )
    p.set_defaults(func=_alerts_usage)
    # the common options again, without defaults: given before the action they must survive
    # (argparse lets a sub-parser's defaults overwrite its parent's parsed values)
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument("--config", metavar="FILE", help="pipeline config YAML")
    common.add_argument("--json", action="store_true", help="print the result as JSON")
    common.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO)")
    actions = p.add_subparsers(dest="alerts_action", metavar="ACTION", parser_class=_Parser)
    t = actions.add_parser("test", parents=[common], help="send a test alert; per-channel result")
    t.add_argument(
        "--kind", choices=[k.value for k in AlertKind], default="promoted", help="alert kind"
    )
    t.add_argument("--run-key", help="dedup key (default: a fresh test-<time> key)")
    t.set_defaults(func=_alerts_test)
    r = actions.add_parser(
        "retry",
        parents=[common],
        help="re-send recorded alerts that a channel has not confirmed",
        description="Re-send failed deliveries; a channel that has an alert never gets it again.",
    )
    r.add_argument(
        "--unknown",
        action="store_true",
        help="also re-send deliveries that got no answer (the receiver may have them)",
    )
    r.add_argument(
        "--max-age-days", type=float, default=7.0, help="older alerts are left alone (0: no limit)"
    )
    r.set_defaults(func=_alerts_retry)
    ls = actions.add_parser("list", parents=[common], help="recorded alerts and channel states")
    ls.set_defaults(func=_alerts_list)


# ------------------------------------------------------------------------------ spend


def _spend(args: argparse.Namespace, ctx: Context) -> int:
    from datetime import UTC, datetime

    from pipeline.spend import month_of, monthly_spend, spend_experiments, tracking_uri

    try:
        month = month_of(args.month) if args.month else month_of(datetime.now(UTC))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    uri = args.tracking_uri or tracking_uri(ctx.config)
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        summary = monthly_spend(
            MlflowClient(uri),
            args.experiment or spend_experiments(ctx.config),
            month,
            budget_usd=ctx.config.budget.monthly_usd,
        )
    except (MlflowException, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"cannot read MLflow at {uri}: {first[:300]}") from None
    _emit(args, summary.message(), {**summary.as_dict(), "tracking_uri": uri})
    return 0


def add_spend_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "spend",
        parents=[common],
        help="training spend of a calendar month (UTC) against budget.monthly_usd",
        description="Sum the cost_usd metric of every MLflow run that started in the month.",
    )
    p.add_argument("--month", help="YYYY-MM (default: this month, UTC)")
    p.add_argument(
        "--experiment",
        action="append",
        metavar="NAME",
        help="MLflow experiment (repeatable; default: budget.experiments, mlflow.experiment, "
        "or the model name)",
    )
    p.add_argument("--tracking-uri", help="default: mlflow.tracking_uri, $MLFLOW_TRACKING_URI")
    p.set_defaults(func=_spend)


# ------------------------------------------------------------------------------ main

from pipeline import registry_cli  # noqa: E402  (it imports helpers of this module lazily)

SUBCOMMANDS: list[Callable[[Any, argparse.ArgumentParser], None]] = [
    add_ingest_parser,
    add_reference_parser,
    add_validate_parser,
    add_drift_parser,
    add_quality_parser,
    add_check_parser,
    add_batches_parser,
    add_alerts_parser,
    add_spend_parser,
    *registry_cli.PARSERS,
]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse's own convention)
        self.exit(2, f"error: {message} (see python -m pipeline {self._sub()}--help)\n")

    def _sub(self) -> str:
        parts = self.prog.split()
        return f"{parts[-1]} " if len(parts) > 3 else ""


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE", help="pipeline config YAML")
    common.add_argument("--json", action="store_true", help="print the result as JSON")
    common.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO)")
    parser = _Parser(
        prog="python -m pipeline",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for add in SUBCOMMANDS:
        add(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from training.data.spec import DataError

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["demo"]:  # its own parser; it configures Airflow before importing it
        from pipeline.demo import main as demo

        return demo(argv[1:])
    if argv[:1] == ["ui"]:
        from pipeline.ui import main as ui

        return ui(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    ctx = Context(args.config)
    from mlflow.exceptions import MlflowException

    from pipeline.registry import RegistryError
    from pipeline.validation import ValidationFailed

    try:
        return int(args.func(args, ctx))
    except ValidationFailed as exc:
        if args.json:
            print(json.dumps(exc.summary.as_dict(), indent=2, default=str))
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (UsageError, ConfigError, DataError, StorageError, RegistryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except MlflowException as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(
            f"error: MLflow ({ctx.config.mlflow.tracking_uri or 'local'}): {first}", file=sys.stderr
        )
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
