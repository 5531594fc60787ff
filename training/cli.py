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
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from training.locations import DEFAULT_HOME
from training.schedule import CosineSchedule, ScheduleError

log = logging.getLogger("training")


class UsageError(Exception):
    """A user mistake on the command line or in a file: printed as one line, exit 2."""


# --------------------------------------------------------------------------- schedule

_SCHEDULE_FIELDS = {
    f.name: f for f in dataclasses.fields(CosineSchedule) if f.init and f.name != "restarts"
}
# the epoch forms of a training config's schedule section, and their bounds
_EPOCH_FIELDS = (
    "cycle_epochs",
    "warmup_epochs",
    "restart_warmup_epochs",
    "min_cycle_steps",
    "max_cycle_steps",
)


def _schedule_from_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"config file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"config file {path} is not valid YAML: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("schedule"), dict):
        data = data["schedule"]
    if not isinstance(data, dict):
        raise UsageError(f"config file {path}: expected a mapping of schedule parameters")
    unknown = sorted(set(data) - set(_SCHEDULE_FIELDS) - set(_EPOCH_FIELDS))
    if unknown:
        raise UsageError(
            f"config file {path}: unknown schedule parameter(s) {unknown}; "
            f"allowed: {sorted([*_SCHEDULE_FIELDS, *_EPOCH_FIELDS])}"
        )
    return data


def _flat_schedule(params: dict[str, Any]) -> CosineSchedule:
    """A schedule from flat parameters; epoch forms are converted by the same
    :func:`~training.schedule.epochs.plan_steps` as a run's (no default bounds here)."""
    from training.schedule.epochs import CycleBounds, plan_steps

    params = dict(params)
    epochs = {k: params.pop(k) for k in _EPOCH_FIELDS if k in params}
    if not epochs:
        missing = [n for n in ("lr_max", "cycle_steps") if n not in params]
        if missing:
            flags = ", ".join("--" + n.replace("_", "-") for n in missing)
            raise UsageError(f"the schedule needs {flags} (as flags or in --config)")
        return CosineSchedule(**params)
    spe = params.get("steps_per_epoch")
    if spe is None:
        raise UsageError(
            f"epoch forms ({', '.join(sorted(epochs))}) need --steps-per-epoch N (or "
            "steps_per_epoch in the file), or a training config (whose data give it)"
        )
    if "lr_max" not in params:
        raise UsageError("the schedule needs --lr-max (as a flag or in --config)")
    try:
        plan = plan_steps(
            spe,
            cycle_steps=params.pop("cycle_steps", None),
            cycle_epochs=epochs.get("cycle_epochs"),
            warmup_steps=params.pop("warmup_steps", None),
            warmup_epochs=epochs.get("warmup_epochs"),
            restart_warmup_steps=params.pop("restart_warmup_steps", None),
            restart_warmup_epochs=epochs.get("restart_warmup_epochs"),
            bounds=CycleBounds(epochs.get("min_cycle_steps"), epochs.get("max_cycle_steps")),
        )
    except (TypeError, ValueError) as exc:
        raise UsageError(f"schedule: {exc}") from None
    return CosineSchedule(
        **params,
        cycle_steps=plan.cycle_steps,
        warmup_steps=plan.warmup_steps,
        restart_warmup_steps=plan.restart_warmup_steps,
    )


def _parse_steps(text: str) -> list[int]:
    try:
        steps = [int(s) for s in text.replace(" ", "").split(",") if s]
    except ValueError:
        raise UsageError(f"--at expects comma-separated integers, got {text!r}") from None
    if any(s < 0 for s in steps):
        raise UsageError(f"--at: steps are 0-based and non-negative, got {text!r}")
    return steps


def _default_total(schedule: CosineSchedule) -> int:
    if schedule.max_cycles is not None:
        return schedule.total_steps() + max(1, schedule.cycle_steps // 4)
    return schedule.total_steps(min(4, 1 + 200_000 // schedule.cycle_steps))


def _is_train_config(path: Path) -> bool:
    """A training config (a ``schedule:`` section, maybe others) rather than a flat
    file of schedule parameters."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return False  # _schedule_from_file names the problem
    return isinstance(data, dict) and isinstance(data.get("schedule"), dict)


def _run_schedule(args: argparse.Namespace) -> CosineSchedule:
    """The schedule a ``train`` run of this config builds: the config read as ``train``
    reads it (every form: epochs, ``--set``), its steps per epoch from the data as the
    job prepares it (unless ``--steps-per-epoch``), so the fingerprint is the run's."""
    from training.config import ConfigError, load_config

    overrides = list(args.set or [])
    for name in [*_SCHEDULE_FIELDS, *_EPOCH_FIELDS]:
        value = getattr(args, name, None)
        if value is not None and name != "steps_per_epoch":
            overrides.append(f"schedule.{name}={json.dumps(value)}")
    try:
        config = load_config(args.config, overrides)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    from training.data.spec import load_spec

    spec = load_spec(config.data.dataset)
    spe = args.steps_per_epoch
    if spe is None:
        from training.data.dataset import prepare_for

        print(
            "reading the data for its steps per epoch, as the run does "
            "(--steps-per-epoch N skips it)...",
            file=sys.stderr,
            flush=True,
        )
        rows = len(prepare_for(config, spec).train)
        spe = config.steps_per_epoch(rows)
        print(
            f"steps per epoch: {spe} ({rows} training rows / batch {config.optim.batch_size})",
            file=sys.stderr,
        )
    return config.schedule.build(spe, spec.schedule.bounds())


def cmd_schedule(args: argparse.Namespace) -> int:
    flat_flags = [
        n for n in _SCHEDULE_FIELDS if n != "steps_per_epoch" and getattr(args, n) is not None
    ]
    if args.config and _is_train_config(args.config):
        schedule = _run_schedule(args)
    elif not args.config and (args.set or not flat_flags):
        schedule = _run_schedule(args)  # the built-in training defaults, as train reads them
    else:
        if args.set:
            raise UsageError("--set needs --config with a training config (a schedule: section)")
        params: dict[str, Any] = _schedule_from_file(args.config) if args.config else {}
        for name in [*_SCHEDULE_FIELDS, *_EPOCH_FIELDS]:
            value = getattr(args, name, None)
            if value is not None:
                params[name] = value
        schedule = _flat_schedule(params)
    total = args.total_steps or _default_total(schedule)
    if total < 1:
        raise UsageError(f"--total-steps must be >= 1, got {total}")

    if args.at:
        steps = _parse_steps(args.at)
    else:
        # the interesting points: start, end of warmup, each restart and its eve, the end
        steps = {0, schedule.warmup_steps, total - 1}
        for cycle in range(1, 64):
            start = schedule.cycle_start_step(cycle)
            if start >= total:
                break
            steps.update({start - 1, start})
        steps = sorted(s for s in steps if 0 <= s < total)

    rows = []
    for s in steps:
        pos = schedule.position(s)
        rows.append({"step": s, "cycle": pos.cycle, "phase": pos.phase, "lr": schedule.lr_at(s)})

    if args.json:
        json.dump({"schedule": schedule.to_dict(), "rates": rows}, sys.stdout, indent=2)
        print()
    else:
        print(f"{'step':>10}  {'cycle':>5}  {'phase':<14}  lr")
        for r in rows:
            print(f"{r['step']:>10}  {r['cycle']:>5}  {r['phase']:<14}  {r['lr']:.6g}")
        ends = [e for e in schedule.cycle_end_steps(_cycles_within(schedule, total)) if e < total]
        print(f"cycle ends (best-per-cycle checkpoints): {ends}")
        print(f"fingerprint: {schedule.fingerprint()[:16]}")

    if not args.no_png:
        from training.plots import plot_schedule  # matplotlib only when drawing

        png = plot_schedule(schedule, total, args.png, log_scale=args.log)
        print(f"wrote {png}", file=sys.stderr)
    return 0


def _cycles_within(schedule: CosineSchedule, total: int) -> int:
    n = 1
    while n < 10_000 and schedule.cycle_start_step(n) <= total:
        n += 1
    return n


def _add_schedule_parser(sub: Any) -> None:
    p = sub.add_parser(
        "schedule",
        help="preview a cosine schedule: rates at chosen steps and a PNG of the curve",
        description="Print the learning rate at chosen steps and draw the whole curve "
        "with its cycle boundaries. Parameters come from flags and/or --config; with a "
        "training config the schedule (and its fingerprint) is the one its run builds.",
    )
    p.add_argument(
        "--config",
        type=Path,
        help="a training config (its schedule: section, read as train reads it, with the "
        "data's steps per epoch: the run's fingerprint) or a flat file of schedule parameters",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="with a training config: override a field as train --set does (repeatable)",
    )
    p.add_argument("--lr-max", dest="lr_max", type=float)
    p.add_argument("--cycle-steps", dest="cycle_steps", type=int, help="T0")
    p.add_argument("--lr-min", dest="lr_min", type=float)
    p.add_argument("--warmup-steps", dest="warmup_steps", type=int)
    p.add_argument("--warmup-start-lr", dest="warmup_start_lr", type=float)
    p.add_argument("--cycle-mult", dest="cycle_mult", type=float, help="m >= 1 (real)")
    p.add_argument("--peak-decay", dest="peak_decay", type=float, help="g in (0, 1]")
    p.add_argument("--max-cycles", dest="max_cycles", type=int, help="K")
    p.add_argument("--restart-warmup-steps", dest="restart_warmup_steps", type=int)
    p.add_argument("--cycle-epochs", dest="cycle_epochs", type=float, help="T0 in epochs")
    p.add_argument("--warmup-epochs", dest="warmup_epochs", type=float)
    p.add_argument("--restart-warmup-epochs", dest="restart_warmup_epochs", type=float)
    p.add_argument("--min-cycle-steps", dest="min_cycle_steps", type=int, help="bound on T0")
    p.add_argument("--max-cycle-steps", dest="max_cycle_steps", type=int, help="bound on T0")
    p.add_argument(
        "--steps-per-epoch",
        dest="steps_per_epoch",
        type=int,
        help="converts the epoch forms (default with a training config: from its data)",
    )
    p.add_argument("--total-steps", type=int, help="steps to draw (default: all cycles)")
    p.add_argument("--at", help="comma-separated steps to print (default: boundaries)")
    p.add_argument("--png", type=Path, default=DEFAULT_HOME / "reports" / "schedule.png")
    p.add_argument("--no-png", action="store_true", help="print only")
    p.add_argument("--log", action="store_true", help="log-scale y axis")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_schedule)


# --------------------------------------------------------------------------- train


def _load_train_config(args: argparse.Namespace) -> Any:
    from training.config import load_config

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
    from training.distributed import init_from_env, shutdown
    from training.nan_guard import TrainingDiverged
    from training.trainer import EXIT_PREEMPTED

    config = _load_train_config(args)
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
    from training.lr_find import lr_find

    config = _load_train_config(args)
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
    _add_schedule_parser(sub)
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
    from training.checkpoint import CheckpointError
    from training.config import ConfigError
    from training.data.spec import DataError

    try:
        return args.func(args)
    except (UsageError, ScheduleError, ConfigError, DataError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
