"""The replay's HTML report: one self-contained page (images inlined).

Drift share per month against its threshold, live AUC per month, every training
run's lr trace with its cycle boundaries and validation curves (the job's own
``curves.png``), the month-by-month log, the registry's versions and the
history of alias moves.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from pipeline.registry import alias_history


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _img(data: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _monthly_chart(replay: Any) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    months = [m.batch[-2:] for m in replay.months]
    share = [m.steps.get("drift_share") for m in replay.months]
    auc = [m.steps.get("live_auc") for m in replay.months]
    config = replay.env.config
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.4))
    ax1.bar(months, [s if s is not None else 0 for s in share], color="#1f77b4")
    ax1.axhline(config.drift.share_threshold, color="#d62728", ls="--", label="retrain threshold")
    ax1.set_title("share of drifted columns (vs the champion's reference)", fontsize=9)
    ax1.set_xlabel("month of 2013")
    ax1.legend(fontsize=8)
    ax2.plot(
        [m for m, a in zip(months, auc, strict=True) if a is not None],
        [a for a in auc if a is not None],
        "o-",
        color="#2ca02c",
    )
    ax2.axhline(config.quality.slo, color="#d62728", ls="--", label="SLO")
    ax2.set_title("champion's live AUC on the previous month's labels", fontsize=9)
    ax2.set_xlabel("month of 2013 (when the labels arrived)")
    ax2.legend(fontsize=8)
    for ax in (ax1, ax2):
        ax.grid(alpha=0.25)
    fig.tight_layout()
    return _png(fig)


def write_report(replay: Any) -> Path:
    """Write ``<home>/reports/replay.html``; returns its path."""
    env = replay.env
    out = Path(replay.home) / "reports" / "replay.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>cosine-retrain replay</title>",
        "<style>body{font:14px system-ui,sans-serif;margin:2em;max-width:1100px}"
        "pre{background:#f6f6f6;padding:1em;overflow-x:auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ddd;padding:3px 8px;font-size:13px}img{max-width:100%}</style>",
        "</head><body><h1>cosine-retrain: 2013 replayed through the DAGs</h1>",
        _img(_monthly_chart(replay), "drift and live quality per month"),
        "<h2>Month by month</h2><pre>",
    ]
    for m in replay.months:
        parts.append(html.escape(f"-- {m.batch}\n" + "\n".join(m.lines)) + "\n")
    parts.append("</pre><h2>Training runs</h2>")
    for r in replay.retrains:
        name = r["plan"].get("run_name", "")
        curves = Path(env.config.home).resolve() / "runs" / name / "curves.png"
        parts.append(
            f"<h3>{html.escape(name)} ({html.escape(r['month'])}): "
            f"{html.escape(r['gate']['text'])}</h3>"
        )
        if curves.exists():
            parts.append(_img(base64.b64encode(curves.read_bytes()).decode(), name))
    parts.append(
        "<h2>Registered versions</h2><table><tr><th>version</th><th>candidate</th>"
        "<th>val AUC</th><th>gate</th><th>canary</th><th>training run</th></tr>"
    )
    versions = env.client.search_model_versions(f"name='{env.model}'")
    for v in sorted(versions, key=lambda v: int(v.version)):
        t = v.tags
        cells = [
            f"v{v.version}",
            t.get("candidate", ""),
            t.get("val_auc", ""),
            t.get("gate.status", "-"),
            t.get("canary.status", "-"),
            t.get("training_run_name", ""),
        ]
        parts.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    parts.append(
        "</table><h2>Alias history</h2><table><tr><th>when</th><th>alias</th>"
        "<th>from</th><th>to</th><th>who</th><th>why</th></tr>"
    )
    for move in alias_history(env.store, env.model):
        cells = [
            move.when[:19],
            move.alias,
            move.from_version or "",
            move.to_version or "",
            move.who,
            move.why,
        ]
        parts.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    parts.append("</table></body></html>")
    tmp = out.with_suffix(".html.tmp")
    tmp.write_text("".join(parts))
    tmp.replace(out)
    return out
