"""The quality steps on Spark (``data.engine: spark``): the suite's types in Spark's
words, a batch prepared as GX sees it, and the drift sample drawn by Spark.

**Same suite.** :func:`spark_checks` returns the spec's checks unchanged but for the
type lists, which name Spark's types (a ``numeric`` column: ``LongType``,
``DoubleType``...; a ``categorical`` one: ``StringType`` once :func:`prepare_spark`
turned whole numbers into text, as :func:`training.api.categories_as_str` does);
the suite's fingerprint stays the pandas suite's, so both engines key their results
alike.

**Same sample.** :func:`sample_spark` keeps the rows :func:`~pipeline.steps.quality.
reference.sample_rows` keeps: the ``n`` smallest salted hashes of the id, computed by
the same pandas function on each Spark partition (a row's hash depends on its id
only), chosen by Spark's top-k and returned in the file's row order. Only the sample
(at most ``drift.sample_size`` rows) reaches the worker's memory.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from pipeline.base.spark import categories_as_text, is_spark
from pipeline.steps.quality.suite import Check

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame

    from training.api import DatasetSpec

__all__ = ["SPARK_TYPES", "is_spark", "prepare_spark", "sample_spark", "spark_checks"]

_INTEGRAL = ["ByteType", "ShortType", "IntegerType", "LongType"]
SPARK_TYPES = {
    "numeric": [*_INTEGRAL, "FloatType", "DoubleType", "DecimalType"],
    "categorical": ["StringType"],
    "timestamp": ["TimestampType", "TimestampNTZType"],
    "id": ["StringType", *_INTEGRAL],
}
_ORDER = "__cr_order"
_HASH = "__cr_hash"


def spark_checks(checks: list[Check]) -> list[Check]:
    """The suite with each type check naming Spark's types for its column's role."""
    return [
        replace(c, kwargs={**c.kwargs, "type_list": SPARK_TYPES[c.role]})
        if c.type == "expect_column_values_to_be_in_type_list" and c.role in SPARK_TYPES
        else c
        for c in checks
    ]


def prepare_spark(frame: DataFrame, spec: DatasetSpec) -> DataFrame:
    """The batch as GX sees it: the spec's categorical columns as text, the pandas
    engine's rule (:func:`~pipeline.base.spark.categories_as_text`)."""
    return categories_as_text(frame, spec.categorical_features)


def sample_spark(
    frame: DataFrame, n: int, id_column: str | None, seed: int = 0
) -> tuple[pd.DataFrame, int, bool]:
    """At most ``n`` rows as pandas (the rows :func:`sample_rows` keeps), the frame's
    row count, and whether it was sampled."""
    import numpy as np
    import pandas as pd
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    rows = frame.count()
    if rows <= n:
        return frame.toPandas(), rows, False
    key = f"{seed:016d}"[-16:]
    hashed_columns = [id_column] if id_column and id_column in frame.columns else frame.columns
    ordered = frame.withColumn(_ORDER, F.monotonically_increasing_id())
    schema = T.StructType([*ordered.schema.fields, T.StructField(_HASH, T.LongType(), False)])

    def add_hash(parts: Any) -> Any:
        for part in parts:
            keys = part[hashed_columns]
            values = pd.util.hash_pandas_object(
                keys[hashed_columns[0]] if len(hashed_columns) == 1 else keys,
                index=False,
                hash_key=key,
            ).to_numpy(dtype=np.uint64)
            # unsigned order kept in a signed long: flip the sign bit
            yield part.assign(**{_HASH: (values ^ np.uint64(1 << 63)).view(np.int64)})

    chosen = ordered.mapInPandas(add_hash, schema).orderBy(_HASH).limit(n)
    sample = chosen.toPandas().sort_values(_ORDER, kind="stable")
    return sample.drop(columns=[_ORDER, _HASH]).reset_index(drop=True), rows, True
