"""Scoring a batch on Spark (``data.engine: spark``): the registered pyfunc as a Spark
UDF (``mlflow.pyfunc.spark_udf``), fed the signature's columns in the signature's
types, as :func:`~pipeline.steps.registry.scoring.predict_probability` feeds pandas.

:class:`SparkRows` is a batch as the scoring step needs it: its row count, its ids
and each model's probabilities, in the file's row order. The rows stay in Spark
(persisted once, so every model sees the same rows in the same order); what reaches
the worker is one id and one probability per row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline.base.spark import categories_as_text
from pipeline.base.tracking import mlflow_uris
from pipeline.steps.registry.aliases import RegistryError

if TYPE_CHECKING:
    import numpy as np
    from pyspark.sql import DataFrame

__all__ = ["SparkRows"]

ROW = "__cr_row"
SCORE = "__cr_score"


class SparkRows:
    """A batch in Spark, scored with ``mlflow.pyfunc.spark_udf``."""

    def __init__(self, frame: DataFrame, id_column: str) -> None:
        from pyspark import StorageLevel
        from pyspark.sql import functions as F

        self.frame = frame.withColumn(ROW, F.monotonically_increasing_id()).persist(
            StorageLevel.MEMORY_AND_DISK
        )
        keys = self.frame.select(ROW, F.col(id_column).cast("string").alias("id")).toPandas()
        keys = keys.sort_values(ROW, kind="stable")
        self.order = keys[ROW].to_numpy()
        self.ids = keys["id"].to_numpy(dtype=object)

    def __len__(self) -> int:
        return len(self.ids)

    def probabilities(
        self, name: str, version: str, tracking_uri: str, rows: np.ndarray | None = None
    ) -> np.ndarray:
        """Model ``name`` v``version``'s probabilities for every row, or for the rows
        where the boolean mask ``rows`` is true (in row order)."""
        import mlflow
        import numpy as np
        import pandas as pd
        from pyspark.sql import functions as F

        model_uri = f"models:/{name}/{version}"
        spark = self.frame.sparkSession
        with mlflow_uris(tracking_uri):
            info = mlflow.models.get_model_info(model_uri)
            udf = mlflow.pyfunc.spark_udf(
                spark, model_uri, result_type="double", env_manager="local"
            )
        frame = self.frame
        if rows is not None and not rows.all():
            chosen = spark.createDataFrame(pd.DataFrame({ROW: self.order[rows]}))
            frame = frame.join(chosen, ROW)
        frame, columns = _model_input(frame, info.signature)
        out = frame.select(ROW, udf(F.struct(*columns)).alias(SCORE)).toPandas()
        return out.sort_values(ROW, kind="stable")[SCORE].to_numpy(dtype=np.float64)

    def release(self) -> None:
        self.frame.unpersist()


def _model_input(frame: DataFrame, signature: Any) -> tuple[DataFrame, list[Any]]:
    """``frame`` with the signature's string columns as category text, and the columns
    to hand the UDF: numbers as doubles; anything else as it is, for MLflow to refuse
    by name (a text column is never cast to a number: that would make it null)."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    if signature is None or signature.inputs is None:
        return frame, [F.col(c) for c in frame.columns if c != ROW]
    names = signature.inputs.input_names()
    missing = [c for c in names if c not in frame.columns]
    if missing:
        raise RegistryError(f"rows to score lack the model's input column(s) {missing}")
    types = {c.name: getattr(c.type, "name", str(c.type)) for c in signature.inputs.inputs}
    frame = categories_as_text(frame, [c for c in names if types[c] == "string"])
    fields = {f.name: f.dataType for f in frame.schema.fields}
    columns = [
        F.col(c).cast("double").alias(c)
        if types[c] == "double" and isinstance(fields[c], (T.NumericType, T.NullType))
        else F.col(c)
        for c in names
    ]
    return frame, columns
