"""``python -m training schedule``: preview a cosine schedule (rates at chosen steps,
the curve as a PNG, the fingerprint).

With a training config (or none: the built-in defaults, as ``train`` reads them)
the schedule is the one its run builds: every form ``train`` accepts (epochs,
``--set``), the steps per epoch from the data as the job prepares it (unless
``--steps-per-epoch``), so the printed fingerprint is the run's. A flat file of
schedule parameters (and the flags) builds a :class:`CosineSchedule` directly;
its epoch forms need ``--steps-per-epoch``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from training.cli import UsageError
from training.config.locations import DEFAULT_HOME
from training.config.text import read_yaml
from training.schedule import CosineSchedule

__all__ = ["add_schedule_parser", "cmd_schedule"]

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
    data = read_yaml(path, "config file", UsageError)
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
    from training.config.train import ConfigError, load_config

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
            f"steps per epoch: {spe} ({rows} training rows / batch "
            f"{config.optim.batch_size_for(rows)})",
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
        from training.telemetry.plots import plot_schedule  # matplotlib only when drawing

        png = plot_schedule(schedule, total, args.png, log_scale=args.log)
        print(f"wrote {png}", file=sys.stderr)
    return 0


def _cycles_within(schedule: CosineSchedule, total: int) -> int:
    n = 1
    while n < 10_000 and schedule.cycle_start_step(n) <= total:
        n += 1
    return n


def add_schedule_parser(sub: Any) -> None:
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
