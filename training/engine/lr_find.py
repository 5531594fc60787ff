"""LR range test (Smith 2015; fastai's and Lightning's lr_find).

A short run whose rate rises exponentially from ``start_lr`` to ``end_lr``;
the smoothed training loss is plotted against the rate. The suggestion is the
rate where the smoothed loss falls fastest (steepest negative slope against
log lr), the usual choice for ``lr_max``; the rate at the minimum loss divided
by ten is reported beside it. The run stops early once the loss exceeds
``diverge`` times its minimum. It writes nothing but its plot and JSON.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from training.config.train import TrainConfig
from training.data.dataset import prepare_for
from training.data.spec import DataError, load_spec
from training.model.build import build_model, build_optimizer


@dataclass(frozen=True)
class LrFindResult:
    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggested_lr: float
    min_loss_lr: float
    stopped_early: bool
    png: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def lr_find(
    config: TrainConfig,
    *,
    start_lr: float = 1e-6,
    end_lr: float = 1.0,
    steps: int = 200,
    smoothing: float = 0.05,
    diverge: float = 4.0,
    out_dir: Path | None = None,
) -> LrFindResult:
    if not (0 < start_lr < end_lr) or not all(map(math.isfinite, (start_lr, end_lr))):
        raise DataError(f"lr-find needs 0 < start_lr < end_lr, got {start_lr}, {end_lr}")
    if steps < 10:
        raise DataError(f"lr-find needs at least 10 steps, got {steps}")
    torch.manual_seed(config.runtime.seed)
    spec = load_spec(config.data.dataset)
    data = prepare_for(config, spec)
    model = build_model(config.model, data.preprocessor)
    opt = build_optimizer(config.optim, model.parameters(), start_lr)
    cats, nums, y = (torch.from_numpy(a) for a in (data.train.cats, data.train.nums, data.train.y))
    g = torch.Generator().manual_seed(config.runtime.seed)
    batch = config.optim.batch_size_for(len(y))
    ratio = end_lr / start_lr
    lrs, losses, smoothed = [], [], []
    avg, best = 0.0, math.inf
    stopped = False
    model.train()
    for i in range(steps):
        lr = start_lr * ratio ** (i / (steps - 1))
        for group in opt.param_groups:
            group["lr"] = lr
        idx = torch.randint(len(y), (batch,), generator=g)
        loss = F.binary_cross_entropy_with_logits(model(cats[idx], nums[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = float(loss.detach())
        avg = smoothing * value + (1 - smoothing) * avg
        debiased = avg / (1 - (1 - smoothing) ** (i + 1))
        lrs.append(lr)
        losses.append(value)
        smoothed.append(debiased)
        if not math.isfinite(debiased) or (i > 10 and debiased > diverge * best):
            stopped = True
            break
        best = min(best, debiased)
    suggested, at_min = _suggest(lrs, smoothed)
    out_dir = out_dir or config.output_dir.parent / "reports"
    png = _plot(lrs, losses, smoothed, suggested, at_min, out_dir / "lr_find.png")
    result = LrFindResult(lrs, losses, smoothed, suggested, at_min / 10, stopped, str(png))
    (out_dir / "lr_find.json").write_text(result.to_json())
    return result


def _suggest(lrs: list[float], smoothed: list[float]) -> tuple[float, float]:
    finite = [(lr, v) for lr, v in zip(lrs, smoothed, strict=True) if math.isfinite(v)]
    if len(finite) < 5:
        raise DataError("lr-find: the loss was not finite long enough to suggest a rate")
    x = np.log10([lr for lr, _ in finite])
    v = np.array([val for _, val in finite])
    at_min = float(10 ** x[int(np.argmin(v))])
    # ignore the noisy start and the divergent tail: look up to the minimum
    stop = int(np.argmin(v)) + 1
    start = max(1, len(v) // 10)
    if stop - start < 3:
        return at_min / 10, at_min
    slope = np.gradient(v[:stop], x[:stop])
    k = start + int(np.argmin(slope[start:stop]))
    return float(10 ** x[k]), at_min


def _plot(
    lrs: list[float],
    losses: list[float],
    smoothed: list[float],
    suggested: float,
    at_min: float,
    path: Path,
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(lrs, losses, color="#bbbbbb", lw=0.8, label="loss")
    ax.plot(lrs, smoothed, color="#1f77b4", lw=1.6, label="smoothed loss")
    ax.axvline(suggested, color="#d62728", ls="--", label=f"suggested lr_max {suggested:.2g}")
    ax.axvline(at_min, color="#7f7f7f", ls=":", label=f"minimum loss at {at_min:.2g}")
    ax.set_xscale("log")
    finite = [v for v in smoothed if math.isfinite(v)]
    if finite:
        lo, hi = min(finite), max(finite[: max(1, len(finite) // 2)])
        ax.set_ylim(lo - 0.05 * abs(lo), hi + 0.25 * (hi - lo) + 1e-9)
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    ax.set_title("LR range test")
    ax.grid(alpha=0.25, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
