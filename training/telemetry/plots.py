"""PNG plots of the schedule and of training curves (matplotlib, headless)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # never open a window: this runs in pods and Airflow workers

import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from training.schedule import CosineSchedule

CYCLE_COLOUR = "#9a9a9a"
WARMUP_COLOUR = "#f3e7c9"
STOP_COLOUR = "#8e44ad"  # where cycle-aware stopping ended the run


def _mark_cycles(ax: Axes, schedule: CosineSchedule, total_steps: int) -> None:
    """Shade the warmup and draw a dashed line where each cycle starts."""
    if schedule.warmup_steps:
        ax.axvspan(0, schedule.warmup_steps, color=WARMUP_COLOUR, lw=0, label="warmup")
    cycle, labelled = 1, False
    while True:
        try:
            start = schedule.cycle_start_step(cycle)
        except ValueError:
            break
        if start >= total_steps:
            break
        if schedule.max_cycles is not None and cycle >= schedule.max_cycles:
            ax.axvline(start, color="#222222", ls="-.", lw=0.9, label="cycle limit (lr_min after)")
            break
        forced = start in schedule.restarts
        ax.axvline(
            start,
            color="#c0392b" if forced else CYCLE_COLOUR,
            ls="--",
            lw=0.9,
            label=None if labelled and not forced else ("plateau restart" if forced else "restart"),
        )
        labelled = labelled or not forced
        cycle += 1


def _save(fig: plt.Figure, path: str | os.PathLike[str]) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    # every figure calls tight_layout itself: bbox_inches="tight" would draw it twice
    fig.savefig(tmp, dpi=110, format="png", pil_kwargs={"compress_level": 1})
    plt.close(fig)
    os.replace(tmp, out)
    return out


def plot_schedule(
    schedule: CosineSchedule,
    total_steps: int,
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
    log_scale: bool = False,
) -> Path:
    """The learning rate over ``total_steps`` steps, cycle boundaries marked."""
    steps = range(total_steps)
    fig, ax = plt.subplots(figsize=(9, 3.6))
    ax.plot(steps, schedule.lrs(steps), color="#1f77b4", lw=1.4, label="lr")
    _mark_cycles(ax, schedule, total_steps)
    if schedule.lr_min:
        ax.axhline(schedule.lr_min, color="#2ca02c", lw=0.8, ls=":", label="lr_min")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("learning rate")
    if log_scale:
        ax.set_yscale("log")
    ax.set_xlim(0, max(1, total_steps - 1))
    ax.set_title(title or _describe(schedule), fontsize=9)
    ax.grid(alpha=0.25)
    ax.legend(loc="upper right", fontsize=8, framealpha=0.9)
    fig.tight_layout()
    return _save(fig, path)


def plot_training_curves(
    schedule: CosineSchedule,
    steps: Sequence[int],
    lrs: Sequence[float],
    train_loss: Sequence[float],
    eval_steps: Sequence[int],
    val_loss: Sequence[float],
    val_auc: Sequence[float],
    path: str | os.PathLike[str],
    *,
    best_steps: Sequence[int] = (),
    stop_step: int | None = None,
    title: str = "training curves",
) -> Path:
    """lr, train/validation loss and validation AUC on a shared step axis; ``stop_step``:
    the last step of a run the stopping rule ended early (a marker on every panel)."""
    total = (max(steps) + 1) if steps else 1
    fig, (ax_lr, ax_loss, ax_auc) = plt.subplots(
        3, 1, figsize=(9, 7.5), sharex=True, gridspec_kw={"height_ratios": [1, 1.4, 1]}
    )
    ax_lr.plot(steps, lrs, lw=1.2, color="#1f77b4", label="lr")
    ax_lr.set_ylabel("lr")
    ax_loss.plot(steps, train_loss, lw=0.6, alpha=0.45, color="#7f7f7f", label="train loss")
    if len(train_loss) > 20:
        window = max(5, len(train_loss) // 60)
        smooth = _moving_average(train_loss, window)
        ax_loss.plot(steps[window - 1 :], smooth, lw=1.3, color="#333333", label="train (smoothed)")
    ax_loss.plot(eval_steps, val_loss, "o-", ms=3, lw=1.2, color="#d62728", label="val loss")
    ax_loss.set_ylabel("log loss")
    ax_auc.plot(eval_steps, val_auc, "o-", ms=3, lw=1.2, color="#2ca02c", label="val AUC")
    ax_auc.set_ylabel("AUC")
    ax_auc.set_xlabel("optimizer step")
    for ax in (ax_lr, ax_loss, ax_auc):
        _mark_cycles(ax, schedule, total)
        ax.grid(alpha=0.25)
    for s in best_steps:
        ax_auc.axvline(s, color="#2ca02c", lw=0.8, alpha=0.6)
    if best_steps:
        ax_auc.plot([], [], color="#2ca02c", lw=0.8, alpha=0.6, label="best of cycle")
    if stop_step is not None:
        for ax in (ax_lr, ax_loss, ax_auc):
            ax.axvline(stop_step, color=STOP_COLOUR, lw=1.6, ls=":", label="stopped (rule)")
    for ax in (ax_lr, ax_loss, ax_auc):
        ax.legend(loc="upper right", fontsize=7, framealpha=0.9)
    ax_lr.set_title(title, fontsize=10)
    # fixed margins (sized for these labels) instead of tight_layout, which builds and
    # measures every tick label once more: half of this plot's 0.25 s
    fig.subplots_adjust(left=0.085, right=0.985, top=0.955, bottom=0.065, hspace=0.1)
    return _save(fig, path)


def _moving_average(values: Sequence[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        if i >= window - 1:
            out.append(acc / window)
    return out


# the title's optional parts: label, CosineSchedule attribute, the value that leaves it out
_TITLE_PARTS = (
    ("m", "cycle_mult", 1),
    ("g", "peak_decay", 1),
    ("lr_min", "lr_min", 0),
    ("W", "warmup_steps", 0),
    ("R", "restart_warmup_steps", 0),
    ("K", "max_cycles", None),
)


def _describe(s: CosineSchedule) -> str:
    parts = [f"lr_max={s.lr_max:g}", f"T0={s.cycle_steps}"]
    for label, attribute, omitted in _TITLE_PARTS:
        value = getattr(s, attribute)
        if value and value != omitted:  # set, and not the default
            parts.append(f"{label}={value:g}" if isinstance(value, float) else f"{label}={value}")
    return "cosine schedule: " + ", ".join(parts)
