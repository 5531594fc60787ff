"""The retrain's window written by Spark (``data.engine: spark``): for each batch, its
features joined with its merged labels, one Parquet file, as
:func:`pipeline.flow.retrain.export_window` writes them with pandas.

The same rows and columns as the pandas engine's files: the batch's newest committed
label versions up to the plan's are merged (a later version replaces a row an earlier
one held), the target must be 0 or 1, unlabelled rows are left out, the batch column
is added. Spark does the join and the write (one file a batch, row groups of about
:data:`~training.api.ROW_GROUP_ROWS` rows); the worker holds one batch's ids at most
(the window's cross-batch id check, :class:`~training.api.WindowIds`).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.base.layout import (
    LABELS,
    BatchNotFound,
    BatchRef,
    committed_versions,
    labels_prefix,
)
from pipeline.base.spark import read_batch_with, read_parquet, spark_session
from pipeline.base.store import join_key
from training.api import DataError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from pipeline.flow.env import Env

__all__ = ["write_batch"]

BYTES_PER_ROW = 200  # a flights row in Parquet, about: row groups of ~ROW_GROUP_ROWS rows


def _labels(env: Env, batch: str, upto: int | None) -> DataFrame:
    """The batch's label versions up to ``upto``, merged in order, in Spark."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    versions = [
        v
        for v in committed_versions(env.store, env.dataset, batch, "labels")
        if upto is None or v <= upto
    ]
    if not versions:
        raise BatchNotFound(
            f"no labels for {env.dataset}/{batch} yet (ingest them first: ingest-labels)"
        )
    spark = spark_session(env.config.data.spark)
    spec = env.spec
    parts = [
        read_parquet(spark, env.store, join_key(labels_prefix(env.dataset, batch, v), LABELS))
        .select(spec.id_column, spec.target)
        .withColumn("__cr_version", F.lit(v))
        for v in versions
    ]
    merged = parts[0]
    for part in parts[1:]:
        merged = merged.unionByName(part)
    if len(parts) > 1:
        newest = Window.partitionBy(spec.id_column).orderBy(F.col("__cr_version").desc())
        merged = merged.withColumn("__cr_n", F.row_number().over(newest)).filter("__cr_n = 1")
    return merged.select(spec.id_column, spec.target)


def _check_labels(labels: DataFrame, env: Env, batch: str) -> None:
    """Every target 0 or 1, never null (:meth:`DatasetSpec.check_labels`'s rule)."""
    from pyspark.sql import functions as F

    target, ids = env.spec.target, env.spec.id_column
    value = F.col(target).cast("double")
    bad = labels.filter(F.col(target).isNull() | ~value.isin(0.0, 1.0))
    count = bad.count()
    if count:
        rows = bad.limit(1000).toPandas()
        values = sorted({"null" if v is None or v != v else str(v) for v in rows[target]})[:5]
        raise DataError(
            f"labels of {batch}: target {target!r} must be 0 or 1 (never null) but {count} "
            f"row(s) hold {values}, e.g. ids {rows[ids].head(3).tolist()}"
        )


def write_batch(env: Env, batch: str, versions: Any, path: Path, batch_column: str) -> int:
    """Batch ``batch``'s labelled rows (features v``versions.features``, labels up to
    v``versions.labels``) as one Parquet file at ``path``; its row count."""
    from pyspark.sql import functions as F

    from training.api import ROW_GROUP_ROWS

    spec = env.spec
    features = read_batch_with(
        env.store, BatchRef(env.dataset, batch, versions.features), env.config.data
    )
    labels = _labels(env, batch, versions.labels)
    _check_labels(labels, env, batch)
    joined = (
        features.join(labels, spec.id_column, "inner")
        .select(*features.columns, spec.target)  # the pandas engine's column order
        .withColumn(batch_column, F.lit(batch))
    )
    with tempfile.TemporaryDirectory(prefix="window-", dir=path.parent) as tmp:
        out = Path(tmp) / "spark"
        (
            joined.coalesce(1)
            .write.option("parquet.block.size", str(ROW_GROUP_ROWS * BYTES_PER_ROW))
            .parquet(out.as_uri())
        )
        parts = sorted(out.glob("part-*.parquet"))
        if len(parts) != 1:
            raise RuntimeError(f"Spark wrote {len(parts)} files for batch {batch}, not one")
        shutil.move(str(parts[0]), str(path))  # the same folder: an atomic rename
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(path).metadata.num_rows)
