"""The Spark session of ``data.engine: spark``, and reading the store's Parquet with it.

One session per process, built from ``data.spark`` (:class:`~pipeline.base.sections.SparkConfig`):
``local[*]`` runs Spark's JVM beside the worker on its machine; a cluster master sends
the work to the cluster (docs/spark.md shows Spark on Kubernetes). Spark Connect
(``sc://``) needs pyspark's connect extra.

Reading: the store's objects are addressed as Spark paths (``file:///...`` for the
local store, ``s3a://bucket/key`` for S3: the cluster needs hadoop-aws and the
``spark.hadoop.fs.s3a.*`` settings, docs/spark.md). pandas writes timestamps as
Parquet ``TIMESTAMP(NANOS)``, which Spark refuses: they are read as longs and turned
back into timestamps (microseconds, Spark's resolution), column by column as the
file's own schema says; a column that is not a timestamp in the file stays as it is.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import TYPE_CHECKING, Any

from pipeline.base.layout import (
    BatchNotFound,
    BatchRef,
    batch_prefix,
    features_key,
    manifest_key,
    read_batch,
)
from pipeline.base.sections import DataConfig, SparkConfig

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from pipeline.base.store import ObjectStore

__all__ = [
    "SparkUnavailable",
    "categories_as_text",
    "is_spark",
    "read_batch_with",
    "read_parquet",
    "spark_path",
    "spark_session",
    "stop_session",
]

log = logging.getLogger(__name__)

_LOCK = threading.Lock()
_SESSION: dict[str, Any] = {}

# settings every session gets: pandas' nanosecond timestamps readable, Arrow transfers,
# no web UI port taken on a shared worker, few shuffle partitions for one batch
BASE_CONF = {
    "spark.sql.legacy.parquet.nanosAsLong": "true",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.session.timeZone": "UTC",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "8",
}


class SparkUnavailable(RuntimeError):
    """Spark could not start (no Java, a wrong master URL): the message says what to set."""


def spark_session(config: SparkConfig) -> SparkSession:
    """The process's Spark session for ``config`` (built once; a different config
    stops the old session first)."""
    key = config.model_dump_json()
    with _LOCK:
        if _SESSION.get("key") == key:
            return _SESSION["session"]
        if "session" in _SESSION:
            _SESSION.pop("session").stop()
        try:
            from pyspark.sql import SparkSession
        except ImportError as exc:  # pragma: no cover - pyspark is a locked dependency
            raise SparkUnavailable(
                f"data.engine is 'spark' but pyspark is missing: {exc}"
            ) from None
        builder = SparkSession.builder.appName(config.app_name)
        if config.master.startswith("sc://"):
            builder = builder.remote(config.master)
        else:
            builder = builder.master(config.master)
            builder = builder.config("spark.driver.memory", config.driver_memory)
        for name, value in {**BASE_CONF, **config.conf}.items():
            builder = builder.config(name, value)
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # workers: this interpreter
        try:
            session = builder.getOrCreate()
        except Exception as exc:  # the JVM's start-up raises many kinds
            raise SparkUnavailable(
                f"data.engine is 'spark' but no Spark session could start on "
                f"{config.master!r} (data.spark.master): {str(exc).splitlines()[0][:300]}; "
                "local mode needs Java 17 on the PATH or JAVA_HOME"
            ) from None
        session.sparkContext.setLogLevel("ERROR")
        _SESSION.update(key=key, session=session)
        log.info("Spark session on %s (Spark %s)", config.master, session.version)
        return session


def stop_session() -> None:
    """Stop the process's session (tests, and a worker shutting down)."""
    with _LOCK:
        _SESSION.pop("key", None)
        session = _SESSION.pop("session", None)
    if session is not None:
        session.stop()


def spark_path(uri: str) -> str:
    """A store URI as Spark reads it: ``s3://`` becomes Hadoop's ``s3a://``."""
    return "s3a://" + uri[len("s3://") :] if uri.startswith("s3://") else uri


def _nanosecond_columns(store: ObjectStore, key: str) -> list[str]:
    """The columns the Parquet file at ``key`` holds as nanosecond timestamps."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    uri = store.uri(key)
    if uri.startswith("file://"):
        from urllib.parse import unquote, urlparse

        schema = pq.read_schema(unquote(urlparse(uri).path))
    else:  # the footer only, through pyarrow's S3 client (the store's endpoint)
        from pyarrow import fs

        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        s3 = fs.S3FileSystem(endpoint_override=endpoint) if endpoint else fs.S3FileSystem()
        schema = pq.read_schema(uri[len("s3://") :], filesystem=s3)
    return [
        f.name
        for f in schema
        if pa.types.is_timestamp(f.type) and f.type.unit == "ns"  # type: ignore[attr-defined]
    ]


def read_parquet(spark: SparkSession, store: ObjectStore, key: str) -> DataFrame:
    """The Parquet object ``key`` of ``store`` as a Spark DataFrame, timestamps restored."""
    from pyspark.sql import functions as F

    frame = spark.read.parquet(spark_path(store.uri(key)))
    for name in _nanosecond_columns(store, key):
        frame = frame.withColumn(name, F.timestamp_micros(F.floor(F.col(name) / 1000).cast("long")))
    return frame


def read_batch_with(store: ObjectStore, ref: BatchRef, data: DataConfig | None) -> Any:
    """The features of stored batch ``ref`` for ``data.engine``: a pandas frame in the
    worker's memory, or a Spark DataFrame (nothing read yet)."""
    if data is None or data.engine == "pandas":
        return read_batch(store, ref)
    if not store.exists(manifest_key(batch_prefix(ref))):
        raise BatchNotFound(f"batch {ref} is not in {store.description} (was it quarantined?)")
    return read_parquet(spark_session(data.spark), store, features_key(ref))


def categories_as_text(frame: DataFrame, columns: list[str]) -> DataFrame:
    """``columns`` of ``frame`` as text, the rule of :func:`training.api.categories_as_str`
    in Spark: whole numbers become ``"3"`` (never ``"3.0"``), booleans ``"True"`` /
    ``"False"``; a float column with a fractional value is left as a number (not a
    category: the suite's type check names it, the model's signature refuses it)."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    fields = {f.name: f.dataType for f in frame.schema.fields}
    present = [c for c in columns if c in fields]
    floats = [c for c in present if isinstance(fields[c], (T.FloatType, T.DoubleType))]
    fractional: set[str] = set()
    if floats:  # one pass for every float column: does any hold a fractional value?
        row = frame.agg(
            *(F.max((F.col(c) != F.floor(F.col(c))).cast("int")).alias(c) for c in floats)
        ).first()
        fractional = {c for c in floats if row is not None and row[c]}
    for name in present:
        kind, col = fields[name], F.col(name)
        if isinstance(kind, T.BooleanType):
            text = F.when(col, F.lit("True")).when(~col, F.lit("False"))
        elif isinstance(kind, (T.ByteType, T.ShortType, T.IntegerType, T.LongType)):
            text = col.cast("string")
        elif name in floats and name not in fractional:
            text = col.cast("long").cast("string")
        else:
            continue
        frame = frame.withColumn(name, text)
    return frame


def is_spark(frame: Any) -> bool:
    """Whether ``frame`` is a Spark DataFrame (classic or Connect) rather than pandas'."""
    return hasattr(frame, "sparkSession")
