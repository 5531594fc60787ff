"""The replay's HTML report: one self-contained page (images inlined).

Drift share per batch against its threshold, live AUC per batch, every training
run's lr trace with its cycle boundaries and validation curves (the job's own
``curves.png``), the month-by-month log, the registry's versions and the
history of alias moves.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.api import atomic_write_text

__all__ = ["ReplayMonth", "ReplayRun", "write_report"]


@dataclass(frozen=True)
class ReplayMonth:
    """One replayed batch: its console lines and the two figures the chart shows."""

    batch: str
    lines: tuple[str, ...]
    drift_share: float | None = None
    live_auc: float | None = None


@dataclass(frozen=True)
class ReplayRun:
    """One training run of the replay and what its gate said."""

    month: str
    run_name: str
    gate: str
    curves: Path | None = None


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _img(data: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _monthly_chart(months: Sequence[ReplayMonth], drift_threshold: float, slo: float) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [m.batch[-2:] for m in months]
    share = [m.drift_share for m in months]
    auc = [m.live_auc for m in months]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.4))
    ax1.bar(names, [s if s is not None else 0 for s in share], color="#1f77b4")
    ax1.axhline(drift_threshold, color="#d62728", ls="--", label="retrain threshold")
    ax1.set_title("share of drifted columns (vs the champion's reference)", fontsize=9)
    ax1.set_xlabel("batch")
    ax1.legend(fontsize=8)
    ax2.plot(
        [m for m, a in zip(names, auc, strict=True) if a is not None],
        [a for a in auc if a is not None],
        "o-",
        color="#2ca02c",
    )
    ax2.axhline(slo, color="#d62728", ls="--", label="SLO")
    ax2.set_title("champion's live AUC on the previous batch's labels", fontsize=9)
    ax2.set_xlabel("batch (when the labels arrived)")
    ax2.legend(fontsize=8)
    for ax in (ax1, ax2):
        ax.grid(alpha=0.25)
    fig.tight_layout()
    return _png(fig)


def _row(cells: Sequence[Any]) -> str:
    return "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>"


def write_report(
    out: Path,
    months: Sequence[ReplayMonth],
    runs: Sequence[ReplayRun],
    *,
    versions: Sequence[Any],
    moves: Sequence[Any],
    drift_threshold: float,
    slo: float,
    title: str = "cosine-retrain: a replay through the DAGs",
) -> Path:
    """Write the replay's page to ``out`` (one self-contained HTML file); returns it.

    ``versions``: the model's registered versions (MLflow ModelVersion); ``moves``:
    its alias history (:class:`~pipeline.steps.registry.aliases.AliasMove`).
    """
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        "<style>body{font:14px system-ui,sans-serif;margin:2em;max-width:1100px}"
        "pre{background:#f6f6f6;padding:1em;overflow-x:auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ddd;padding:3px 8px;font-size:13px}img{max-width:100%}</style>",
        f"</head><body><h1>{html.escape(title)}</h1>",
        _img(_monthly_chart(months, drift_threshold, slo), "drift and live quality per batch"),
        "<h2>Batch by batch</h2><pre>",
    ]
    for m in months:
        parts.append(html.escape(f"-- {m.batch}\n" + "\n".join(m.lines)) + "\n")
    parts.append("</pre><h2>Training runs</h2>")
    for r in runs:
        parts.append(
            f"<h3>{html.escape(r.run_name)} ({html.escape(r.month)}): {html.escape(r.gate)}</h3>"
        )
        if r.curves is not None and r.curves.exists():
            parts.append(_img(base64.b64encode(r.curves.read_bytes()).decode(), r.run_name))
    parts.append(
        "<h2>Registered versions</h2><table><tr><th>version</th><th>candidate</th>"
        "<th>val AUC</th><th>gate</th><th>canary</th><th>training run</th></tr>"
    )
    for v in sorted(versions, key=lambda v: int(v.version)):
        t = v.tags
        parts.append(
            _row(
                [
                    f"v{v.version}",
                    t.get("candidate", ""),
                    t.get("val_auc", ""),
                    t.get("gate.status", "-"),
                    t.get("canary.status", "-"),
                    t.get("training_run_name", ""),
                ]
            )
        )
    parts.append(
        "</table><h2>Alias history</h2><table><tr><th>when</th><th>alias</th>"
        "<th>from</th><th>to</th><th>who</th><th>why</th></tr>"
    )
    for move in moves:
        cells = [move.when[:19], move.alias, move.from_version or "", move.to_version or ""]
        parts.append(_row([*cells, move.who, move.why]))
    parts.append("</table></body></html>")
    atomic_write_text(out, "".join(parts))
    return out
