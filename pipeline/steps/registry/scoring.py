"""Scoring with registered models: the pyfunc from the registry, on raw rows."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline.base.tracking import mlflow_uris
from pipeline.steps.registry.aliases import RegistryError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["describe_serving_error", "load_scorer", "predict_probability"]


def load_scorer(name: str, version: str, tracking_uri: str) -> Any:
    """The registered pyfunc of ``name`` v``version`` (MLflow's own loader)."""
    import mlflow

    with mlflow_uris(tracking_uri):
        return mlflow.pyfunc.load_model(f"models:/{name}/{version}")


def predict_probability(model: Any, frame: pd.DataFrame) -> Any:
    """The pyfunc's probabilities for ``frame``.

    Only the signature's columns are passed, each in the signature's type
    (:func:`training.model.serving.as_model_input`: string columns as categories, double
    columns as floats), so a batch read with other dtypes (integer categories, an
    all-null column) is scored; a value the type cannot hold is refused by MLflow,
    and its error is raised again with the reason first (:func:`describe_serving_error`).
    """
    import numpy as np
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import ErrorCode

    from training.api import as_model_input

    schema = model.metadata.get_input_schema()
    if schema is not None:
        names = schema.input_names()
        missing = [c for c in names if c not in frame.columns]
        if missing:
            raise RegistryError(f"rows to score lack the model's input column(s) {missing}")
        types = {c.name: getattr(c.type, "name", str(c.type)) for c in schema.inputs}
        frame = as_model_input(frame[names], types)
    try:
        out = model.predict(frame)
    except MlflowException as exc:
        # every reader (a task log, the replay's summary, the CLI) sees the reason first
        text = describe_serving_error(exc)
        if text == (str(exc).strip() or type(exc).__name__):
            raise
        raise MlflowException(
            text, error_code=ErrorCode.Value(exc.error_code), error_class=exc.error_class
        ) from exc
    column = out["probability"] if hasattr(out, "columns") else out
    return np.asarray(column, dtype=np.float64)


def describe_serving_error(exc: BaseException) -> str:
    """An error of a model's ``predict``, whole, with its reason first.

    MLflow's schema errors start with the rows they refused (``Failed to enforce
    schema of data '<the frame>' with schema '...'. Error: <the reason>``): their
    first line is part of a data frame. The reason (what follows the last
    ``Error:``) comes first, then the whole message, never cut.
    """
    text = str(exc).strip() or type(exc).__name__
    head, sep, reason = text.rpartition("Error: ")
    if sep and head.startswith("Failed to enforce schema") and reason.strip():
        return f"{reason.strip()}\n(MLflow's whole message) {text}"
    return text
