"""``python -m training ...``: the training job's command line.

Subcommands:
  schedule   print the rate at chosen steps and draw the whole curve (PNG)
  demo       the main job on local defaults (what `./run demo` starts)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from training.schedule import CosineSchedule, ScheduleError

DEFAULT_HOME = Path(".cosine-retrain")


class UsageError(Exception):
    """A user mistake on the command line or in a file: printed as one line, exit 2."""


# --------------------------------------------------------------------------- schedule

_SCHEDULE_FIELDS = {
    f.name: f for f in dataclasses.fields(CosineSchedule) if f.init and f.name != "restarts"
}


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
    unknown = sorted(set(data) - set(_SCHEDULE_FIELDS))
    if unknown:
        raise UsageError(
            f"config file {path}: unknown schedule parameter(s) {unknown}; "
            f"allowed: {sorted(_SCHEDULE_FIELDS)}"
        )
    return data


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


def cmd_schedule(args: argparse.Namespace) -> int:
    params: dict[str, Any] = _schedule_from_file(args.config) if args.config else {}
    for name in _SCHEDULE_FIELDS:
        value = getattr(args, name, None)
        if value is not None:
            params[name] = value
    missing = [n for n in ("lr_max", "cycle_steps") if n not in params]
    if missing:
        flags = ", ".join("--" + n.replace("_", "-") for n in missing)
        raise UsageError(f"the schedule needs {flags} (as flags or in --config)")
    schedule = CosineSchedule(**params)
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
        "with its cycle boundaries. Parameters come from flags and/or --config.",
    )
    p.add_argument("--config", type=Path, help="YAML file (a 'schedule:' section or flat)")
    p.add_argument("--lr-max", dest="lr_max", type=float)
    p.add_argument("--cycle-steps", dest="cycle_steps", type=int, help="T0")
    p.add_argument("--lr-min", dest="lr_min", type=float)
    p.add_argument("--warmup-steps", dest="warmup_steps", type=int)
    p.add_argument("--warmup-start-lr", dest="warmup_start_lr", type=float)
    p.add_argument("--cycle-mult", dest="cycle_mult", type=float, help="m >= 1 (real)")
    p.add_argument("--peak-decay", dest="peak_decay", type=float, help="g in (0, 1]")
    p.add_argument("--max-cycles", dest="max_cycles", type=int, help="K")
    p.add_argument("--restart-warmup-steps", dest="restart_warmup_steps", type=int)
    p.add_argument("--steps-per-epoch", dest="steps_per_epoch", type=int)
    p.add_argument("--total-steps", type=int, help="steps to draw (default: all cycles)")
    p.add_argument("--at", help="comma-separated steps to print (default: boundaries)")
    p.add_argument("--png", type=Path, default=DEFAULT_HOME / "reports" / "schedule.png")
    p.add_argument("--no-png", action="store_true", help="print only")
    p.add_argument("--log", action="store_true", help="log-scale y axis")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_schedule)


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
    return cmd_schedule(preview)


def _add_demo_parser(sub: Any) -> None:
    p = sub.add_parser("demo", help="the main job on local defaults")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    p.add_argument("--home", type=Path, default=DEFAULT_HOME, help="local state folder")
    p.set_defaults(func=cmd_demo)


# --------------------------------------------------------------------------- entry point


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_schedule_parser(sub)
    _add_demo_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (UsageError, ScheduleError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
