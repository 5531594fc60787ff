"""The data steps: landing, validation, drift."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pipeline.base.sections.common import Fraction, Section

__all__ = [
    "CATEGORICAL_METHODS",
    "NUMERIC_METHODS",
    "DataConfig",
    "DriftConfig",
    "IngestConfig",
    "SparkConfig",
    "ValidationConfig",
]


# Evidently 0.7 stattest names (evidently.legacy.calculations.stattests), by column type.
NUMERIC_METHODS = (
    "wasserstein",
    "ks",
    "jensenshannon",
    "psi",
    "kl_div",
    "hellinger",
    "ed",
    "anderson",
    "cramer_von_mises",
    "es",
    "mannw",
    "t_test",
    "empirical_mmd",
)
CATEGORICAL_METHODS = (
    "jensenshannon",
    "chisquare",
    "psi",
    "kl_div",
    "hellinger",
    "z",
    "g_test",
    "fisher_exact",
    "TVD",
)
NumMethod = Literal[NUMERIC_METHODS]  # type: ignore[valid-type]
CatMethod = Literal[CATEGORICAL_METHODS]  # type: ignore[valid-type]


class SparkConfig(Section):
    """The Spark session of ``data.engine: spark`` (docs/spark.md): ``local[*]`` runs Spark
    inside the Airflow worker's machine; a cluster URL (``spark://host:7077``,
    ``k8s://https://...``) or Spark Connect (``sc://host:15002``) sends the work there."""

    master: str = Field(
        "local[*]",
        description="Spark master URL: local[N], spark://host:7077, k8s://https://host:443, "
        "or a Spark Connect URL sc://host:15002 (then conf applies server-side)",
    )
    app_name: str = Field("cosine-retrain", description="the application's name in Spark's UI")
    conf: dict[str, str] = Field(
        default_factory=dict,
        description="extra Spark settings, as spark-submit --conf takes them "
        "(spark.executor.memory, spark.hadoop.fs.s3a.endpoint, ...)",
    )
    driver_memory: str = Field(
        "2g",
        pattern=r"^[0-9]+[kmgt]$",
        description="spark.driver.memory of the session the pipeline starts (local mode: "
        "Spark's own JVM, beside the worker's Python process)",
    )


class DataConfig(Section):
    """Where the heavy data steps run: validation, drift and scoring of a batch.

    ``pandas`` (the default) reads a batch into the worker's memory: right up to a few
    million rows (docs/benchmarks.md, "The pandas path against the batch size").
    ``spark`` runs them on Spark (``data.spark``): Great Expectations' Spark datasource,
    a Spark-drawn drift sample, ``mlflow.pyfunc.spark_udf`` for scoring; the same
    suite, the same decisions, the same stored results.
    """

    engine: Literal["pandas", "spark"] = Field(
        "pandas", description="pandas: in the Airflow worker's memory; spark: on data.spark"
    )
    spark: SparkConfig = Field(default_factory=SparkConfig)


class IngestConfig(Section):
    """Where the ingest DAG may read files from (its ``source`` param comes from
    whoever triggers the DAG; the CLI, run by a person with a shell, is not limited),
    and when the landing DAG sweeps the store's landing zone."""

    source_roots: list[str] = Field(
        default_factory=list,
        description="folders and s3:// prefixes files may come from; empty: <home>/incoming",
    )
    landing_schedule: str | None = Field(
        "*/5 * * * *",
        description="cron (UTC) of the landing DAG's sweep of the store's landing/features/ "
        "and landing/labels/ (off with cron_schedules: false); null: only when triggered",
    )


class ValidationConfig(Section):
    """Great Expectations validation of incoming batches."""

    data_docs: bool = Field(True, description="write GX Data Docs (HTML) for every validation")
    examples: int = Field(5, ge=1, le=50, description="offending values shown per failure")


class DriftConfig(Section):
    """Evidently drift check of a batch against the champion's reference snapshot.

    A column drifts when its score crosses its method's threshold (a distance at
    or above it, or a p-value below it); the batch drifts when the share of
    drifted columns is at or above ``share_threshold``. The defaults come from
    replaying 2013 (docs/drift-replay.md): Evidently's 0.1 for the normed
    Wasserstein distance flags hourly weather columns every month. A column whose
    share of nulls moves by more than ``null_share_threshold`` is a finding of its
    own: the batch drifts (a column empty in the reference and filled now, say).
    """

    share_threshold: Fraction = Field(
        0.35, description="retrain when this share of columns drifted"
    )
    num_method: NumMethod = Field("wasserstein", description="Evidently method, numeric columns")
    cat_method: CatMethod = Field(
        "jensenshannon", description="Evidently method, categorical columns"
    )
    num_threshold: float = Field(
        0.3, gt=0.0, description="normed Wasserstein distance (see docs/drift-replay.md)"
    )
    cat_threshold: float = Field(0.1, gt=0.0, description="Jensen-Shannon distance")
    column_methods: dict[str, str] = Field(
        default_factory=dict, description="per-column method, overrides the per-type one"
    )
    column_thresholds: dict[str, float] = Field(
        default_factory=dict, description="per-column threshold, overrides the per-type one"
    )
    columns: list[str] | None = Field(None, description="default: the spec's feature columns")
    null_share_threshold: Fraction = Field(
        0.25,
        description="a column whose share of nulls moves by more than this between the "
        "reference and the batch is a drift finding that requests a retrain (1.0: off; "
        "flights' wind_gust moves up to 0.22 between a 3-month window and a month)",
    )
    sample_size: int = Field(
        100_000, ge=1_000, description="larger batches are sampled (by id hash) to this size"
    )
    sample_seed: int = Field(0, ge=0, description="changes which rows a sample keeps")
    reference_rows: int = Field(
        100_000, ge=1_000, description="rows kept in a reference snapshot (sampled by id hash)"
    )
    html: bool = Field(True, description="write Evidently's HTML report for every check")

    @model_validator(mode="after")
    def _methods(self) -> DriftConfig:
        known = set(NUMERIC_METHODS) | set(CATEGORICAL_METHODS)
        for column, method in self.column_methods.items():
            if method not in known:
                raise ValueError(
                    f"drift.column_methods.{column}: unknown method {method!r}; "
                    f"choose from {sorted(known)}"
                )
        for column, threshold in self.column_thresholds.items():
            if not threshold > 0:
                raise ValueError(f"drift.column_thresholds.{column} must be > 0, got {threshold}")
        return self
