"""The sections of the pipeline's configuration (one pydantic model each).

Each section forbids unknown keys (a typo never passes silently) and is frozen;
:class:`~pipeline.base.config.PipelineConfig` holds one of each. Field
descriptions are what ``docs/configuration.md`` shows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from pipeline.base.kinds import AlertKind

__all__ = [
    "CATEGORICAL_METHODS",
    "NUMERIC_METHODS",
    "AlertsConfig",
    "BudgetConfig",
    "CanaryConfig",
    "DriftConfig",
    "GateConfig",
    "IngestConfig",
    "MlflowConfig",
    "MonitorConfig",
    "QualityConfig",
    "RetrainConfig",
    "Section",
    "StorageConfig",
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


class Section(BaseModel):
    """Base of every config section: unknown keys are errors (typos never pass silently)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=True)


class StorageConfig(Section):
    """Where batches, reports and snapshots live: a local folder or an S3 bucket."""

    kind: Literal["local", "s3"] = Field("local", description="local folder or S3 (boto3)")
    root: Path | None = Field(None, description="local store folder (default: <home>/store)")
    bucket: str | None = Field(
        None,
        pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
        description="S3 bucket (required for kind s3)",
    )
    prefix: str = Field(
        "cosine-retrain",
        pattern=r"^$|^[A-Za-z0-9_][A-Za-z0-9_.=-]*(/[A-Za-z0-9_][A-Za-z0-9_.=-]*)*$",
        description="key prefix inside the bucket ('' for none)",
    )
    endpoint_url: str | None = Field(
        None,
        pattern=r"^https?://",
        description="S3-compatible endpoint (MinIO), e.g. http://minio:9000",
    )
    region: str | None = Field(None, description="default: the AWS chain (AWS_DEFAULT_REGION...)")
    profile: str | None = Field(None, description="AWS profile from ~/.aws; default: the chain")
    access_key_id: SecretStr | None = Field(None, description="default: the standard AWS chain")
    secret_access_key: SecretStr | None = Field(None, description="with access_key_id")
    addressing_style: Literal["auto", "path", "virtual"] = Field(
        "auto", description="auto = path style when endpoint_url is set (MinIO), else virtual"
    )
    retries_mode: Literal["standard", "adaptive", "legacy"] = Field(
        "standard", description="botocore retry mode (adaptive adds client-side rate limiting)"
    )
    max_attempts: int = Field(
        5, ge=1, le=20, description="attempts per request, the first included (botocore)"
    )
    connect_timeout_s: float = Field(10.0, gt=0.0, description="seconds")
    read_timeout_s: float = Field(60.0, gt=0.0, description="seconds")
    multipart_threshold_mb: int = Field(
        64, ge=5, le=5 * 1024, description="files at least this large upload in parts"
    )
    multipart_chunk_mb: int = Field(16, ge=5, le=5 * 1024, description="part size (S3 minimum 5)")

    @model_validator(mode="after")
    def _s3_needs_bucket(self) -> StorageConfig:
        if self.kind == "s3" and not self.bucket:
            raise ValueError("storage.bucket is required when storage.kind is 's3'")
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError(
                "storage.access_key_id and storage.secret_access_key go together "
                "(or leave both unset to use the standard AWS credential chain)"
            )
        return self


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

    share_threshold: float = Field(
        0.35, gt=0.0, le=1.0, description="retrain when this share of columns drifted"
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
    null_share_threshold: float = Field(
        0.25,
        gt=0.0,
        le=1.0,
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


class QualityConfig(Section):
    """Live quality of the champion on newly labelled rows (the label-side trigger)."""

    metric: Literal["auc"] = Field("auc", description="ROC AUC of the stored scores")
    slo: float = Field(0.65, gt=0.0, le=1.0, description="retrain when live AUC falls below")
    min_rows: int = Field(
        500, ge=1, description="fewer labelled rows with predictions: no verdict (too noisy)"
    )


class MlflowConfig(Section):
    """Where runs and the model registry live (docs/design.md: local SQLite by default)."""

    tracking_uri: str | None = Field(
        None, description="default: $MLFLOW_TRACKING_URI, else sqlite:///<home>/mlflow.db"
    )
    experiment: str | None = Field(None, description="default: the spec's model name")
    model_name: str | None = Field(
        None,
        pattern=r"^[A-Za-z][A-Za-z0-9_.-]*$",
        description="registered model; default: the spec's model_name (flight_delay)",
    )
    artifact_location: str | None = Field(
        None, description="new experiments' artifact root; default <home>/mlartifacts for SQLite"
    )
    ui_url: str | None = Field(
        None,
        pattern=r"^https?://",
        description="MLflow UI for links from Airflow; default: the tracking URI when it is "
        "http(s), else http://127.0.0.1:5000 (what ./run ui starts)",
    )


class RetrainConfig(Section):
    """When and how the retrain DAG trains (DESIGN.md, the flow of one retrain)."""

    schedule: str | None = Field(
        "0 3 * * 1", description="cron of scheduled retrains (UTC); null: on requests only"
    )
    window_batches: int = Field(
        3,
        ge=1,
        le=60,
        description="the latest valid, labelled batches one retrain trains on (its window; "
        "the latest 20 % of the window's rows by timestamp are the validation set)",
    )
    train_config: Path = Field(
        Path("configs/flights.yaml"),
        description="the training job's YAML (model, optimizer, schedule in epochs; "
        "docs/training.md); the retrain sets the window's files, run name and MLflow on it. "
        "Point it at your own data set's file",
    )
    backend: Literal["local", "kubernetes"] = Field(
        "local", description="local: in the Airflow worker; kubernetes: a GPU pod"
    )
    kubernetes_namespace: str = Field("cosine-retrain", description="namespace of the GPU pod")
    trainer_image: str = Field(
        "cosine-retrain-trainer:0.1.0", description="image of the GPU pod (infra/trainer)"
    )
    pod_template_file: Path = Field(
        Path("infra/k8s/trainer-pod.yaml"), description="pod template of the GPU job"
    )
    processes: int = Field(
        1, ge=1, le=64, description="training processes in the pod (>1: torchrun, DDP, one per GPU)"
    )


class MonitorConfig(Section):
    """The drift monitor's own schedule (it also runs whenever a batch lands)."""

    schedule: str | None = Field(
        "0 * * * *", description="cron of the periodic check (UTC); null: on landed batches only"
    )


class GateConfig(Section):
    """The SLOs a challenger must meet before it may serve as canary."""

    min_auc: float = Field(
        0.64,
        gt=0.0,
        le=1.0,
        description="holdout ROC AUC, overall (unset here: the spec's promotion.min_auc first)",
    )
    min_slice_auc: float = Field(
        0.60,
        gt=0.0,
        le=1.0,
        description="holdout AUC in every slice (unset here: the spec's promotion.min_slice_auc "
        "first)",
    )
    slices: list[str] | None = Field(None, description="default: the spec's slices")
    slice_min_rows: int | None = Field(
        None, ge=1, description="smaller slices are not judged; default: the spec's"
    )
    max_auc_drop: float = Field(
        0.01,
        ge=0.0,
        le=1.0,
        description="largest AUC loss against the champion, same holdout (unset here: the "
        "spec's promotion.max_auc_drop, else at least the AUC's noise on the holdout)",
    )
    max_nan_count: int = Field(0, ge=0, description="non-finite training steps allowed")
    max_cost_usd: float | None = Field(
        None, gt=0.0, description="training cost allowed; None: no limit"
    )
    latency_batch_rows: int = Field(1000, ge=1, description="rows per scoring call timed")
    latency_repeats: int = Field(20, ge=5, le=1000, description="timed calls (p95 over them)")
    max_p95_latency_ms: float = Field(500.0, gt=0.0, description="p95 of one scoring call")


class CanaryConfig(Section):
    """How a canary serves and how it is judged when labels arrive."""

    share: float = Field(
        0.2,
        gt=0.0,
        lt=1.0,
        description="share of rows the canary scores (unset here: the spec's "
        "promotion.canary_share first)",
    )
    salt: str = Field("canary-v1", min_length=1, description="changes which rows go to it")
    require_approval: bool = Field(
        False,
        description="a canary the review would promote waits for a person's approval in the "
        "Airflow UI (Required Actions) before it becomes champion; the decision, with its "
        "comment, joins the alias audit trail",
    )
    approval_timeout_hours: float = Field(
        72.0,
        gt=0.0,
        description="no answer for longer: the champion stays and an approval_timed_out "
        "alert goes out",
    )
    min_rows: int = Field(
        1000,
        ge=10,
        description="labelled rows each arm needs before a verdict; unset here: the spec's "
        "promotion.canary_min_rows, else half the canary's share of the median batch it "
        "served, within [100, this]",
    )
    confidence: float = Field(0.95, gt=0.5, lt=1.0, description="two-sided interval level")
    margin: float = Field(
        0.005,
        ge=0.0,
        description="mean log loss the canary may exceed the champion's by (non-inferiority)",
    )
    max_wait_hours: float = Field(
        72.0, gt=0.0, description="inconclusive for longer: a person decides (alert)"
    )
    test: Literal["sequential", "fixed"] = Field(
        "sequential",
        description="sequential: an anytime-valid confidence sequence over the labelled rows "
        "of every batch since the canary started (valid however often it is reviewed); "
        "fixed: a Welch interval on the rows of the batches under review alone",
    )
    horizon_batches: int = Field(
        12,
        ge=1,
        description="labelled batches a sequential canary may stay undecided before a "
        "person decides (canary_needs_decision alert)",
    )
    shadow_batches: int = Field(
        1,
        ge=0,
        description="batches the challenger scores unserved (shadow) after its gate, beside "
        "the champion, before the canary serves; its paired evidence can roll it back or "
        "support its promotion; 0: no shadow",
    )


class AlertsConfig(Section):
    """Where alerts go and how hard delivery tries (docs/alerts.md).

    A receiver that is down, slow or failing never blocks a step for longer than
    ``total_budget_s``: every attempt is capped by ``timeout_s`` and by what is
    left of the budget; channels are tried side by side.
    """

    enabled: bool = Field(True, description="false: no alert is sent or recorded")
    channels: list[Literal["webhook", "slack", "email"]] = Field(
        default_factory=lambda: ["webhook"],
        min_length=1,
        description='where alerts go (env: a JSON list, e.g. ["webhook","slack"])',
    )
    webhook_url: str | None = Field(
        None, pattern=r"^https?://", description="generic JSON webhook; unset: alerts are logged"
    )
    webhook_secret: SecretStr | None = Field(
        None, description="signs each webhook body (HMAC-SHA256 header)"
    )
    slack_webhook_url: SecretStr | None = Field(
        None, description="Slack incoming-webhook URL (a secret); required for channel slack"
    )
    smtp_host: str | None = Field(None, description="SMTP server; required for channel email")
    smtp_port: int = Field(25, ge=1, le=65535, description="587 with starttls, 465 with ssl")
    smtp_starttls: bool = Field(False, description="upgrade the connection with STARTTLS")
    smtp_ssl: bool = Field(False, description="implicit TLS (SMTPS, port 465)")
    smtp_user: str | None = Field(None, description="SMTP login (with smtp_password)")
    smtp_password: SecretStr | None = Field(None, description="SMTP password")
    email_from: str | None = Field(None, description="sender address")
    email_to: list[str] = Field(default_factory=list, description="recipients")
    timeout_s: float = Field(5.0, gt=0.0, le=60.0, description="per attempt (connect, read)")
    retries: int = Field(2, ge=0, le=10, description="extra attempts after a failed one")
    backoff_s: float = Field(1.0, ge=0.0, le=60.0, description="first pause; doubles each retry")
    total_budget_s: float = Field(
        15.0, gt=0.0, le=300.0, description="most seconds one send_alert call may take"
    )
    kinds: list[str] | None = Field(None, description="kinds sent (e.g. gate_failed); None: all")
    min_severity: Literal["info", "warning", "critical"] = Field(
        "info", description="alerts below it are dropped"
    )

    @model_validator(mode="after")
    def _channels_complete(self) -> AlertsConfig:
        if "slack" in self.channels and self.slack_webhook_url is None:
            raise ValueError("alerts.slack_webhook_url is required when alerts.channels has slack")
        if "email" in self.channels and not (self.smtp_host and self.email_from and self.email_to):
            raise ValueError(
                "alerts.smtp_host, alerts.email_from and alerts.email_to are required "
                "when alerts.channels has email"
            )
        if (self.smtp_user is None) != (self.smtp_password is None):
            raise ValueError("alerts.smtp_user and alerts.smtp_password go together")
        if self.smtp_starttls and self.smtp_ssl:
            raise ValueError("alerts.smtp_starttls and alerts.smtp_ssl exclude each other")
        if self.kinds is not None:
            unknown = sorted(set(self.kinds) - {k.value for k in AlertKind})
            if unknown:
                raise ValueError(
                    f"alerts.kinds: unknown kind(s) {unknown}; choose from "
                    f"{[k.value for k in AlertKind]}"
                )
        return self


class IngestConfig(Section):
    """Where the ingest DAG may read files from (its ``source`` param comes from
    whoever triggers the DAG; the CLI, run by a person with a shell, is not limited)."""

    source_roots: list[str] = Field(
        default_factory=list,
        description="folders and s3:// prefixes files may come from; empty: <home>/incoming",
    )


class BudgetConfig(Section):
    """The monthly spend rule: over budget, event-triggered retrains pause (docs/alerts.md)."""

    monthly_usd: float | None = Field(
        None, ge=0.0, description="training spend per calendar month (UTC); None: no limit"
    )
    pause_scheduled: bool = Field(False, description="over budget, pause scheduled retrains too")
    pause_quality: bool = Field(
        True, description="over budget, pause retrains requested by a live-quality breach"
    )
    experiments: list[str] | None = Field(
        None, description="MLflow experiments summed; default: mlflow.experiment or the model name"
    )
