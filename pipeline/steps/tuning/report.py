"""The study on its MLflow parent run: figures, the trials' table and plots.

:func:`log_study` logs a finished :class:`~pipeline.steps.tuning.study.StudySummary`
(spend, steps, trials by state, the best val AUC and values, the whole summary as
JSON) and Optuna's optimization history and parameter importances as PNGs.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from pipeline.steps.tuning.study import StudySummary

__all__ = ["log_study"]

log = logging.getLogger(__name__)


def log_study(client: MlflowClient, summary: StudySummary, storage: str) -> None:
    """The study's figures, its trials' table and plots on its parent MLflow run."""
    import optuna

    run_id = summary.mlflow_run_id
    if run_id is None:
        return
    by_state: dict[str, int] = {}
    for t in summary.trials:
        by_state[t.state] = by_state.get(t.state, 0) + 1
    for key, value in {
        "spent_usd": summary.spent_usd,
        "steps": float(summary.steps),
        **{f"trials_{k.lower()}": float(v) for k, v in by_state.items()},
        **({"best_val_auc": summary.best_value} if summary.best_value is not None else {}),
    }.items():
        client.log_metric(run_id, key, value)
    client.set_tag(run_id, "tune.stop_reason", summary.stop_reason)
    for key, value in summary.best_params.items():
        client.set_tag(run_id, f"tune.best.{key}", f"{value:.6g}")
    client.log_text(run_id, summary.model_dump_json(indent=1), "tuning/study.json")
    study = optuna.load_study(study_name=summary.study, storage=storage)
    for name, path in _plots(study).items():
        client.log_artifact(run_id, str(path), "tuning")
        log.info("study plot %s logged", name)


def _plots(study: Any) -> dict[str, Path]:
    """Optimization history and parameter importances as PNGs (matplotlib, no plotly);
    importances need two finished trials with values that vary, else are left out."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    folder = Path(tempfile.mkdtemp(prefix="tune-plots-"))
    out: dict[str, Path] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
        for name, plot in (
            ("history", ovm.plot_optimization_history),
            ("importances", ovm.plot_param_importances),
        ):
            try:
                ax = plot(study)
            except (ValueError, RuntimeError) as exc:
                log.info("study plot %s left out: %s", name, exc)
                continue
            fig = getattr(ax, "figure", None) or ax.flat[0].figure
            fig.savefig(folder / f"{name}.png", dpi=100, bbox_inches="tight")
            plt.close(fig)
            out[name] = folder / f"{name}.png"
    return out
