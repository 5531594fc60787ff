"""Scoring on Spark (``data.engine: spark``): a registered pyfunc as a Spark UDF
(``mlflow.pyfunc.spark_udf``), fed the signature's columns in the signature's types,
as :func:`~pipeline.steps.registry.scoring.predict_probability` feeds pandas: string
columns as category text (:func:`~pipeline.base.spark.categories_as_text`), numbers
as doubles, anything else as it is, for MLflow to refuse by name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline.base.spark import categories_as_text
from pipeline.base.tracking import mlflow_uris
from pipeline.steps.registry.aliases import RegistryError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

__all__ = ["with_scores"]


def with_scores(frame: DataFrame, name: str, version: str, tracking_uri: str, column: str) -> Any:
    """``frame`` with ``column``: model ``name`` v``version``'s probability of each row
    (lazy: Spark computes it when the frame is used)."""
    import mlflow
    from pyspark.sql import functions as F

    model_uri = f"models:/{name}/{version}"
    with mlflow_uris(tracking_uri):
        info = mlflow.models.get_model_info(model_uri)
        udf = mlflow.pyfunc.spark_udf(
            frame.sparkSession, model_uri, result_type="double", env_manager="local"
        )
    inputs, columns = _model_input(frame, info.signature)
    return inputs.withColumn(column, udf(F.struct(*columns)))


def _model_input(frame: DataFrame, signature: Any) -> tuple[DataFrame, list[Any]]:
    """``frame`` with the signature's string columns as category text, and the columns
    to hand the UDF (a text column is never cast to a number: that would make it null)."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    if signature is None or signature.inputs is None:
        return frame, [F.col(c) for c in frame.columns]
    names = signature.inputs.input_names()
    missing = [c for c in names if c not in frame.columns]
    if missing:
        raise RegistryError(f"rows to score lack the model's input column(s) {missing}")
    types = {c.name: getattr(c.type, "name", str(c.type)) for c in signature.inputs.inputs}
    inputs = categories_as_text(frame, [c for c in names if types[c] == "string"])
    fields = {f.name: f.dataType for f in inputs.schema.fields}
    columns = [
        F.col(c).cast("double").alias(c)
        if types[c] == "double" and isinstance(fields[c], (T.NumericType, T.NullType))
        else F.col(c)
        for c in names
    ]
    return inputs, columns
