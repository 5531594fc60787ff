"""``python -m pipeline`` operations: alerts (test, retry, list), the monthly spend and
the configuration reference."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pipeline.apps.cli.common import Lazy, Parser, UsageError, command, common_options, emit

__all__ = ["PARSERS"]


def _alerts_usage(args: argparse.Namespace, lazy: Lazy) -> int:
    """send a test alert, re-send undelivered alerts, list recorded alerts

    Alerts go to alerts.channels (docs/alerts.md).
    """
    raise UsageError("choose an action: alerts test, alerts retry or alerts list")


def _alert_lines(channels: dict[str, str]) -> list[str]:
    return [f"  {channel}: {status}" for channel, status in channels.items()]


def _alerts_test(args: argparse.Namespace, lazy: Lazy) -> int:
    from pipeline.flow import ops

    env = lazy.env
    alert, result = ops.send_test_alert(env, args.kind, args.run_key)
    head = f"test alert {alert.kind.value} {alert.run_key} (alert id {alert.alert_id})"
    if not env.config.alerts.enabled:
        head += ": not sent, alerts.enabled is false"
    elif result.duplicate:
        head += ": recorded before; channels that have it were not sent to again"
    data = {
        "alert_id": alert.alert_id,
        "kind": alert.kind.value,
        "run_key": alert.run_key,
        "sent": result.sent,
        "duplicate": result.duplicate,
        "attempts": result.attempts,
        "channels": result.channels,
    }
    emit(args, "\n".join([head, *_alert_lines(result.channels)]), data)
    return 0 if result.delivered else 1


def _alerts_retry(args: argparse.Namespace, lazy: Lazy) -> int:
    from pipeline.flow import ops

    done = ops.retry_alerts(lazy.env, include_unknown=args.unknown, max_age_days=args.max_age_days)
    lines = [f"{len(done)} undelivered alert(s) re-sent"]
    rows = []
    for status, result in done:
        lines.append(f"{status.kind} {status.run_key} (alert id {status.alert_id})")
        lines += _alert_lines(result.channels)
        rows.append({"kind": status.kind, "run_key": status.run_key, "channels": result.channels})
    emit(args, "\n".join(lines), {"retried": rows})
    return 0 if all(r.delivered for _, r in done) else 1


def _alerts_list(args: argparse.Namespace, lazy: Lazy) -> int:
    from pipeline.flow import ops

    env = lazy.env
    found = ops.alerts(env)
    lines = [f"{env.store.description}: {len(found)} alert(s)"]
    for s in found:
        states = " ".join(f"{c}={v}" for c, v in s.channels.items())
        lines.append(f"  {s.created_at}  {s.kind:<22} {s.run_key[:40]:<40} {states}")
    rows = [{**s.__dict__} for s in found]
    emit(args, "\n".join(lines), {"store": env.store.description, "alerts": rows})
    return 0


def add_alerts_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    from pipeline.base.alerts import AlertKind

    p = command(sub, common, "alerts", _alerts_usage)
    # the common options again, without defaults: given before the action they must survive
    common = common_options(suppress=True)
    actions = p.add_subparsers(dest="alerts_action", metavar="ACTION", parser_class=Parser)
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


def _spend(args: argparse.Namespace, lazy: Lazy) -> int:
    """training spend of a calendar month (UTC) against budget.monthly_usd

    Sum the cost_usd metric of every MLflow run that started in the month.
    """
    from mlflow.exceptions import MlflowException

    from pipeline.base.tracking import tracking_uri
    from pipeline.flow import ops

    env = lazy.env
    uri = args.tracking_uri or tracking_uri(env.config)
    try:
        summary = ops.spend(
            env, args.month, experiments=args.experiment, tracking_uri=args.tracking_uri
        )
    except ValueError as exc:  # a month that is not YYYY-MM
        raise UsageError(str(exc)) from None
    except (MlflowException, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"cannot read MLflow at {uri}: {first[:300]}") from None
    emit(args, summary.message(), {**summary.as_dict(), "tracking_uri": uri})
    return 0


def add_spend_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = command(sub, common, "spend", _spend)
    p.add_argument("--month", help="YYYY-MM (default: this month, UTC)")
    p.add_argument(
        "--experiment",
        action="append",
        metavar="NAME",
        help="MLflow experiment (repeatable; default: budget.experiments, mlflow.experiment, "
        "or the model name)",
    )
    p.add_argument("--tracking-uri", help="default: mlflow.tracking_uri, $MLFLOW_TRACKING_URI")


def _config_doc(args: argparse.Namespace, lazy: Lazy) -> int:
    """write the configuration reference (docs/configuration.md) from the models

    Every field of the pipeline's and the training job's config: type, default,
    environment variable or --set key, description. --check exits 1 when the page
    differs from what the code would write (the test suite runs it).
    """
    from pipeline.apps.configref import DOC, render
    from training.api import PROJECT_ROOT, atomic_write_text

    path = Path(args.output) if args.output else PROJECT_ROOT / DOC
    text = render()
    if args.check:
        current = path.read_text() if path.exists() else ""
        if current != text:
            print(f"{path} is stale: run python -m pipeline config-doc", file=sys.stderr)
            return 1
        print(f"{path} is current")
        return 0
    atomic_write_text(path, text)
    print(f"wrote {path} ({text.count(chr(10))} lines)")
    return 0


def add_config_doc_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = command(sub, common, "config-doc", _config_doc)
    p.add_argument("--check", action="store_true", help="exit 1 if the page is stale")
    p.add_argument("--output", help=f"default: {Path('docs') / 'configuration.md'}")


PARSERS: list[Any] = [add_alerts_parser, add_spend_parser, add_config_doc_parser]
