"""python -m pipeline: the pipeline's steps from a shell.

Subcommands (each keyed by an explicit batch id, safe to re-run):
  ingest SOURCE          land a batch: a CSV/Parquet file (path or s3://) with --batch-id,
                         or a month of the bundled 2013 flights (3, 03 or 2013-03)
  ingest-labels SOURCE   land the labels of an already ingested batch (they arrive later)
  reference SNAPSHOT     store a reference snapshot from stored batches (--batches ...)
  validate BATCH         run the spec's Great Expectations suite; quarantine on failure
  revalidate BATCH       re-check a quarantined batch against the current spec; release it
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
  tune                   Optuna study of the schedule; adopt the best if it wins held out
  models                 aliases, versions with gate/canary status, alias history
  model-card VERSION     print or write (--out FILE) a version's model card
  approval approve|reject VERSION --comment TEXT   a person's answer about promoting
  demo                   replay batches month by month through the Airflow DAGs (./run demo)
  example NAME --out DIR write a bundled example (gss) as batch files for demo --batches
  spec draft FILE...     draft a dataset spec from sample files (--id, --timestamp, --target)
  ui                     start the Airflow and MLflow UIs on the local data (./run ui)

Configuration: ``--config FILE`` (or $COSINE_RETRAIN_CONFIG) and environment variables
``COSINE_RETRAIN_<SECTION>__<FIELD>``; see docs/configuration.md.

Exit codes: 0 done (also "drift, retrain requested": that is an answer, not an error),
1 the batch failed validation (it was quarantined; the message lists why) or the gate
refused the candidate, 2 a user error (arguments, config, unreadable input, refused
overwrite), one ``error:`` line.

Every handler calls :mod:`pipeline.flow`, the API the DAG tasks call too; the
subcommands are defined in :mod:`.data`, :mod:`.models` and :mod:`.ops`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from pipeline.apps.cli.common import Lazy, Parser, UsageError, common_options, emit
from pipeline.base.config import ConfigError
from pipeline.base.store import StorageError

__all__ = ["UsageError", "build_parser", "emit", "main"]

log = logging.getLogger("pipeline")


def _subcommands() -> list[Callable[[Any, argparse.ArgumentParser], None]]:
    from pipeline.apps.cli import data, models, ops, spec, tune

    return [*data.PARSERS, *ops.PARSERS, *models.PARSERS, *tune.PARSERS, *spec.PARSERS]


def build_parser() -> argparse.ArgumentParser:
    common = common_options()
    parser = Parser(
        prog="python -m pipeline",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for add in _subcommands():
        add(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from training.api import DataError

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["demo"]:  # its own parser; it configures Airflow before importing it
        from pipeline.apps.demo import main as demo

        return demo(argv[1:])
    if argv[:1] == ["example"]:
        from pipeline.apps.examples import main as example

        return example(argv[1:])
    if argv[:1] == ["ui"]:
        from pipeline.apps.ui import main as ui

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
    lazy = Lazy(args.config)
    from mlflow.exceptions import MlflowException

    from pipeline.steps.quality.validation import ValidationFailed
    from pipeline.steps.registry.aliases import RegistryError
    from training.api import ConfigError as TrainConfigError

    try:
        return int(args.func(args, lazy))
    except ValidationFailed as exc:
        if args.json:
            print(json.dumps(exc.summary.as_dict(), indent=2, default=str))
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (
        UsageError,
        ConfigError,
        TrainConfigError,
        DataError,
        StorageError,
        RegistryError,
    ) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except MlflowException as exc:
        # whole, never its first line: a schema error's first line is part of the rows
        from pipeline.steps.registry.scoring import describe_serving_error

        first = describe_serving_error(exc)
        where = "local"
        try:
            from pipeline.base.tracking import tracking_uri

            where = tracking_uri(lazy.env.config)
        except Exception:  # the config itself may be what failed
            pass
        print(f"error: MLflow ({where}): {first}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
