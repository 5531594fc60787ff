"""Scoring with registered models: the pyfunc from the registry, on raw rows."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline.base.tracking import mlflow_uris
from pipeline.steps.aliases import RegistryError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["load_scorer", "predict_probability"]


def load_scorer(name: str, version: str, tracking_uri: str) -> Any:
    """The registered pyfunc of ``name`` v``version`` (MLflow's own loader)."""
    import mlflow

    with mlflow_uris(tracking_uri):
        return mlflow.pyfunc.load_model(f"models:/{name}/{version}")


def predict_probability(model: Any, frame: pd.DataFrame) -> Any:
    """The pyfunc's probabilities for ``frame`` (only its signature's columns are passed)."""
    import numpy as np

    schema = model.metadata.get_input_schema()
    if schema is not None:
        names = schema.input_names()
        missing = [c for c in names if c not in frame.columns]
        if missing:
            raise RegistryError(f"rows to score lack the model's input column(s) {missing}")
        frame = frame[names]
    out = model.predict(frame)
    column = out["probability"] if hasattr(out, "columns") else out
    return np.asarray(column, dtype=np.float64)
