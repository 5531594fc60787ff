"""Scoring a batch on Spark (``data.engine: spark``): the steps of
:func:`~pipeline.steps.canary.routing.score_batch`, with the rows kept in Spark.

The same routing (:func:`~pipeline.steps.canary.routing.route_to_canary` on each
partition's ids), the same isolation (the champion scores every row first; the
canary its rows after, guarded; a canary that cannot score or breaches a guardrail
is rolled back and the champion serves the batch), the same predictions file under
the same key. What reaches the worker's memory: the canary's rows' two scores, for
the guardrails (a tenth of the batch at the default share; every row in shadow),
and one row group at a time of the predictions on their way to the store.

Spark writes the predictions as part files under a scratch prefix of the store
(``file://`` or ``s3a://``, so a cluster's executors write them where they are),
in the batch's row order; they are then streamed, a row group at a time, into the
one Parquet object every reader expects, and the scratch prefix is removed.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.base.layout import predictions_key
from pipeline.base.spark import spark_path
from pipeline.base.store import ObjectStore, join_key
from pipeline.steps.canary import scores as sc
from pipeline.steps.canary import shadow as sh
from pipeline.steps.canary.guardrails import GuardrailReport, check_outputs
from pipeline.steps.promotion.actions import reject_canary
from pipeline.steps.promotion.rules import canary_rules
from pipeline.steps.quality.live import PREDICTION_COLUMN
from pipeline.steps.registry.aliases import CANARY, CHAMPION
from pipeline.steps.registry.spark_scoring import with_scores

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from pyspark.sql import DataFrame

    from pipeline.base.config import PipelineConfig
    from training.api import DatasetSpec

__all__ = ["score_in_spark"]

log = logging.getLogger(__name__)

ROW, ROUTED, BASE, SCORED = "__cr_row", "__cr_routed", "__cr_base", "__cr_scored"


def score_in_spark(
    client: MlflowClient,
    store: ObjectStore,
    config: PipelineConfig,
    spec: DatasetSpec,
    name: str,
    batch_id: str,
    features: DataFrame,
    champion: str,
    canary: str | None,
) -> sc.ScoringSummary:
    """:func:`~pipeline.steps.canary.routing.score_batch` once it knows the serving
    versions and found nothing to reuse, for a Spark DataFrame of the batch."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    uri = client.tracking_uri
    stamp = datetime.now(UTC).isoformat()
    frame = features.withColumn(ROW, F.monotonically_increasing_id())
    frame = frame.withColumn("__cr_id", F.col(spec.id_column).cast("string"))
    rows = frame.count()
    rules = canary_rules(config, spec, [rows])
    shadow = bool(canary) and sh.in_shadow(store, rules, spec.name, name, str(canary))
    routed = bool(canary) and not shadow
    if routed:
        frame = _route(frame, rules.share, rules.salt)
    frame = frame.persist(StorageLevel.MEMORY_AND_DISK)  # one row order for every model
    base = with_scores(frame, name, champion, uri, BASE)
    keep = [ROW, "__cr_id", BASE, *([ROUTED] if routed else [])]
    base = base.select(*keep).persist(StorageLevel.MEMORY_AND_DISK)
    scored, rolled_back = None, None
    try:
        served, canary_rows = base.count(), 0  # the champion scores every row, first
        if canary:
            subset = frame if shadow else frame.filter(F.col(ROUTED))
            scored, rolled_back, canary_rows = _canary(
                client, store, rules, name, canary, champion, batch_id, subset, base, uri,
                shadow, rows,
            )  # fmt: skip
        if rolled_back is not None:
            log.warning("rolling canary v%s back before labels: %s", canary, rolled_back)
            reject_canary(client, store, config, name, str(canary), why=rolled_back)
            canary, shadow, routed, scored, canary_rows = None, False, False, None, 0
        if canary and shadow:
            key = predictions_key(spec.name, batch_id, sh.shadow_name(champion, canary))
            out = base.join(scored, ROW, "left").select(
                F.col("__cr_id").alias(spec.id_column),
                F.col(BASE).alias(PREDICTION_COLUMN),
                F.lit(champion).alias("model_version"),
                F.lit(CHAMPION).alias("alias"),
                F.lit(stamp).alias("scored_at"),
                F.col(SCORED).alias(sh.SHADOW_COLUMN),
                F.lit(canary).alias("shadow_version"),
                F.col(ROW),
            )
            _write(store, key, out)
            log.info("scored %s: %d rows, canary v%s in shadow", batch_id, served, canary)
            return sc.ScoringSummary(
                spec.name, batch_id, served, champion, canary, 0, key, False, served
            )
        key = predictions_key(spec.name, batch_id, sc.scoring_name(champion, canary))
        if canary and routed and scored is not None:
            joined = base.join(scored, ROW, "left")
            to_canary = F.col(ROUTED)
            out = joined.select(
                F.col("__cr_id").alias(spec.id_column),
                F.when(to_canary, F.col(SCORED)).otherwise(F.col(BASE)).alias(PREDICTION_COLUMN),
                F.when(to_canary, F.lit(canary)).otherwise(F.lit(champion)).alias("model_version"),
                F.when(to_canary, F.lit(CANARY)).otherwise(F.lit(CHAMPION)).alias("alias"),
                F.lit(stamp).alias("scored_at"),
                F.col(ROW),
            )
        else:
            out = base.select(
                F.col("__cr_id").alias(spec.id_column),
                F.col(BASE).alias(PREDICTION_COLUMN),
                F.lit(champion).alias("model_version"),
                F.lit(CHAMPION).alias("alias"),
                F.lit(stamp).alias("scored_at"),
                F.col(ROW),
            )
        _write(store, key, out)
        log.info("scored %s: %d rows (%d by canary v%s)", batch_id, served, canary_rows, canary)
        return sc.ScoringSummary(
            spec.name, batch_id, served, champion, canary, canary_rows, key, False,
            rolled_back=rolled_back,
        )  # fmt: skip
    finally:
        for cached in (scored, base, frame):
            if cached is not None:
                cached.unpersist()


def _route(frame: DataFrame, share: float, salt: str) -> DataFrame:
    """``frame`` with a boolean column: the rows the canary serves (the pandas engine's
    function on each partition's ids)."""
    from pyspark.sql import types as T

    schema = T.StructType([*frame.schema.fields, T.StructField(ROUTED, T.BooleanType(), False)])

    def route(parts: Any) -> Any:
        for part in parts:
            yield part.assign(
                **{ROUTED: sc.route_to_canary(part["__cr_id"].to_numpy(), share, salt)}
            )

    return frame.mapInPandas(route, schema)


def _canary(
    client: MlflowClient,
    store: ObjectStore,
    rules: Any,
    name: str,
    canary: str,
    champion: str,
    batch_id: str,
    subset: DataFrame,
    base: DataFrame,
    uri: str,
    shadow: bool,
    rows: int,
) -> tuple[Any, str | None, int]:
    """The canary's scores of its rows as a persisted (row, score) frame, why it is
    rolled back (None: every guardrail held) and how many rows it scored. Its failures
    are isolated here."""
    import numpy as np
    from pyspark import StorageLevel

    try:
        scored = with_scores(subset, name, canary, uri, SCORED).select(ROW, SCORED)
        scored = scored.persist(StorageLevel.MEMORY_AND_DISK)
        # the canary's rows: two floats each, for the guardrails
        pairs = scored.join(base.select(ROW, BASE), ROW).toPandas()
    except Exception as exc:  # any failure of the canary's: the champion serves
        log.exception("canary v%s could not score", canary)
        return None, sc.canary_failure(canary, exc), 0
    if pairs.empty:
        return scored, None, 0
    pairs = pairs.sort_values(ROW, kind="stable")
    report = GuardrailReport(
        name, canary, champion, batch_id, "shadow" if shadow else "canary", len(pairs),
        check_outputs(
            pairs[SCORED].to_numpy(dtype=np.float64), pairs[BASE].to_numpy(dtype=np.float64),
            rules, routed=None if shadow else (len(pairs), rows),
        ),
    )  # fmt: skip
    return scored, sc.record_guardrails(client, store, report), len(pairs)


def _write(store: ObjectStore, key: str, out: DataFrame) -> None:
    """Spark's part files under a scratch prefix, in row order; then one Parquet object
    at ``key``, streamed a row group at a time; the scratch prefix removed."""
    import pyarrow.parquet as pq

    scratch = join_key("scratch", key.replace("/", "_"), datetime.now(UTC).strftime("%H%M%S%f"))
    target = spark_path(store.uri(scratch))
    # row groups of about 8 MB, read back a slice at a time: the worker's memory stays
    # flat whatever the batch's size (whole 1M-row groups cost it ~0.3 GiB at 10M rows)
    writer_options = {"parquet.block.size": str(8 * 2**20)}
    out.orderBy(ROW).drop(ROW).write.options(**writer_options).mode("overwrite").parquet(target)
    try:
        parts = sorted(k for k in store.list(scratch) if k.endswith(".parquet"))
        with tempfile.TemporaryDirectory(prefix="predictions-") as tmp:
            merged = Path(tmp) / "predictions.parquet"
            writer = None
            for part in parts:
                local = store.get_file(part, Path(tmp) / "part.parquet")
                for batch in pq.ParquetFile(local).iter_batches(batch_size=65_536):
                    if writer is None:
                        writer = pq.ParquetWriter(merged, batch.schema)
                    writer.write_batch(batch)
            if writer is None:
                raise RuntimeError(f"Spark wrote no predictions under {target}")
            writer.close()
            store.put_file(key, merged)
    finally:
        _remove(store, scratch)


def _remove(store: ObjectStore, prefix: str) -> None:
    """The scratch prefix gone: its objects, and on a local store Hadoop's hidden
    checksum files with the folder."""
    uri = store.uri(prefix)
    if uri.startswith("file://"):
        from urllib.parse import unquote, urlparse

        shutil.rmtree(unquote(urlparse(uri).path), ignore_errors=True)
    for leftover in store.list(prefix):
        store.delete(leftover)
