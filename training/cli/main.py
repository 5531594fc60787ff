"""``python -m training ...``: the training job's command line.

Subcommands:
  train      run the training job (resumable; torchrun for several processes)
  lr-find    LR range test: loss against an exponentially rising rate
  schedule   print the rate at chosen steps and draw the whole curve (PNG)
  demo       the main job on local defaults (what `./run demo` starts)

Exit codes: 0 done (also when the cost budget stopped the run cleanly),
1 training diverged, 2 a user error (config, data, checkpoint), 75 stopped by
SIGTERM after a checkpoint (run again with --resume).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.cli import EXIT_PREEMPTED, UsageError
from training.cli.schedule import add_schedule_parser, cmd_schedule
from training.config.locations import DEFAULT_HOME
from training.schedule import ScheduleError

__all__ = ["UsageError", "build_parser", "config_from_args", "main"]

log = logging.getLogger("training")


# --------------------------------------------------------------------------- train


def config_from_args(args: argparse.Namespace) -> Any:
    """The training config a parsed command line asks for: the file, then its ``--set``
    items and the flags that stand for fields (``--run-name``, ``--features``...)."""
    from training.config.train import load_config

    overrides = list(args.set or [])
    if getattr(args, "run_name", None) is not None:
        overrides.append(f"run_name={args.run_name}")
    if getattr(args, "output_dir", None):
        overrides.append(f"output_dir={args.output_dir}")
    if getattr(args, "no_mlflow", False):
        overrides.append("mlflow.enabled=false")
    if getattr(args, "progress", None):
        overrides.append(f"progress={args.progress}")
    if getattr(args, "dataset", None):
        overrides.append(f"data.dataset={json.dumps(str(args.dataset))}")
    for name in ("features", "labels"):
        given = getattr(args, name, None)
        if given:
            overrides += ["data.source=files", f"data.{name}={json.dumps(given)}"]
    return load_config(args.config, overrides)


def cmd_train(args: argparse.Namespace) -> int:
    from training import api
    from training.engine.distributed import init_from_env, shutdown
    from training.engine.nan_guard import TrainingDiverged

    config = config_from_args(args)
    if (args.resume or args.resume_if_present) and not config.run_name:
        raise UsageError("--resume needs --run-name (the run to continue)")
    if config.runtime.deterministic:
        # must be set before CUDA initialises; harmless on CPU
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    device_kind = "cuda" if config.runtime.device != "cpu" and _cuda() else "cpu"
    ctx = init_from_env(device_kind)
    try:
        resume = True if args.resume else "if_present" if args.resume_if_present else False
        result = api.train(config, resume=resume, ctx=ctx)  # type: ignore[arg-type]
    except TrainingDiverged as exc:
        print(f"error: training diverged: {exc}", file=sys.stderr)
        return 1
    finally:
        shutdown(ctx)
    if ctx.is_main:
        print(
            f"{result.status}: {result.stop_reason}; {len(result.cycles)} cycle best(s), "
            f"best cycle {result.best_cycle}, nan_count {result.nan_count}, "
            f"cost ${result.cost_usd:.4f}; {result.run_dir}/result.json"
        )
        for c in result.cycles:
            print(
                f"  cycle {c.cycle}: step {c.step:>6}  lr {c.lr:.3g}  "
                f"val_auc {c.val_auc:.4f}  val_loss {c.val_loss:.4f}  {c.path}"
            )
        if result.mlflow_run_id:
            print(f"  MLflow run {result.mlflow_run_id}")
    return EXIT_PREEMPTED if result.status == "preempted" else 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="training YAML (default: built-in defaults)")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a field, e.g. --set schedule.lr_max=0.01 (repeatable)",
    )
    p.add_argument("--output-dir", type=Path, help="where runs live (default .cosine-retrain/runs)")
    p.add_argument("--dataset", type=Path, help="the dataset spec YAML (data.dataset)")
    for name, what in (("features", "feature"), ("labels", "label")):
        p.add_argument(
            f"--{name}",
            nargs="+",
            metavar="PATH",
            help=f"{what} files or folders (their *.csv and *.parquet, sorted by name), "
            f"concatenated: sets data.source=files and data.{name}",
        )


def _add_train_parser(sub: Any) -> None:
    p = sub.add_parser(
        "train",
        help="run the training job",
        description="Train the tabular MLP with the cosine schedule. Checkpoints, curves and "
        "result.json go to OUTPUT_DIR/RUN_NAME; metrics to MLflow.",
    )
    _add_config_args(p)
    p.add_argument("--run-name", help="name of the run (needed to --resume it)")
    p.add_argument(
        "--resume", action="store_true", help="continue RUN_NAME from its last checkpoint"
    )
    p.add_argument(
        "--resume-if-present",
        action="store_true",
        help="continue RUN_NAME if it has a checkpoint, else start it (for retried pods)",
    )
    p.add_argument("--no-mlflow", action="store_true", help="log to metrics.jsonl only")
    p.add_argument("--progress", choices=["auto", "on", "off"])
    p.set_defaults(func=cmd_train)


def cmd_lr_find(args: argparse.Namespace) -> int:
    from training.engine.lr_find import lr_find

    config = config_from_args(args)
    result = lr_find(
        config, start_lr=args.start_lr, end_lr=args.end_lr, steps=args.steps, out_dir=args.out_dir
    )
    print(f"suggested lr_max: {result.suggested_lr:.3g} (steepest descent of the smoothed loss)")
    low = result.min_loss_lr
    print(f"minimum loss at lr {low * 10:.3g} (a tenth of it: {low:.3g})")
    if result.stopped_early:
        print(f"stopped after {len(result.lrs)} steps: the loss diverged")
    print(f"wrote {result.png}")
    return 0


def _add_lr_find_parser(sub: Any) -> None:
    p = sub.add_parser("lr-find", help="LR range test: suggest lr_max before a long run")
    _add_config_args(p)
    p.add_argument("--start-lr", type=float, default=1e-6)
    p.add_argument("--end-lr", type=float, default=1.0)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument(
        "--out-dir", type=Path, help="where the plot goes (default .cosine-retrain/reports)"
    )
    p.set_defaults(func=cmd_lr_find)


# --------------------------------------------------------------------------- demo

DEFAULT_CONFIG = Path("configs") / "flights.yaml"


def cmd_demo(args: argparse.Namespace) -> int:
    print(f"== cosine schedule of {args.config} (preview)")
    preview = build_parser().parse_args(
        [
            "schedule",
            "--config",
            str(args.config),
            "--png",
            str(args.home / "reports" / "schedule.png"),
        ]
    )
    rc = cmd_schedule(preview)
    if rc or args.schedule_only:
        return rc
    from datetime import UTC, datetime

    run_name = f"demo-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    print(f"\n== training job {run_name} on {args.config} (CPU or GPU, whichever is here)")
    train = build_parser().parse_args(
        ["train", "--config", str(args.config), "--run-name", run_name]
        + ["--output-dir", str(args.home / "runs")]
    )
    return cmd_train(train)


def _add_demo_parser(sub: Any) -> None:
    p = sub.add_parser("demo", help="the main job on local defaults")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    p.add_argument("--home", type=Path, default=DEFAULT_HOME, help="local state folder")
    p.add_argument("--schedule-only", action="store_true", help="preview, do not train")
    p.set_defaults(func=cmd_demo)


# --------------------------------------------------------------------------- entry point


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train_parser(sub)
    _add_lr_find_parser(sub)
    add_schedule_parser(sub)
    _add_demo_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("alembic", "mlflow", "urllib3", "botocore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from training.checkpoint.files import CheckpointError
    from training.config.train import ConfigError
    from training.data.spec import DataError

    try:
        return args.func(args)
    except (UsageError, ScheduleError, ConfigError, DataError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
