"""The pipeline's configuration: one object, sectioned, for every step.

``PipelineConfig`` holds defaults for the local run; every field can be set
in a YAML file and overridden by an environment variable named
``COSINE_RETRAIN_<SECTION>__<FIELD>`` (prefix ``COSINE_RETRAIN_``, nested
delimiter ``__``), e.g. ``COSINE_RETRAIN_STORAGE__KIND=s3``. Precedence, highest
first: keyword arguments to :func:`load_config`, environment, YAML file,
defaults. The YAML file is the ``path`` argument or ``$COSINE_RETRAIN_CONFIG``.

Later steps add their own sections (``mlflow``, ``gate``, ``canary``,
``alerts``, ...) as fields of ``PipelineConfig`` with a :class:`Section`
subclass; nothing else needs to change.

Every invalid value raises :class:`ConfigError` naming the field, the
environment variable that sets it, and the allowed values.
"""

from __future__ import annotations

import contextvars
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

__all__ = [
    "ENV_PREFIX",
    "AlertsConfig",
    "BudgetConfig",
    "CanaryConfig",
    "ConfigError",
    "DriftConfig",
    "GateConfig",
    "MlflowConfig",
    "MonitorConfig",
    "PipelineConfig",
    "QualityConfig",
    "RetrainConfig",
    "Section",
    "StorageConfig",
    "ValidationConfig",
    "load_config",
]

ENV_PREFIX = "COSINE_RETRAIN_"
CONFIG_ENV = f"{ENV_PREFIX}CONFIG"
DEFAULT_HOME = Path(".cosine-retrain")
MIB = 1024 * 1024

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


class ConfigError(ValueError):
    """The pipeline configuration is invalid; the message names each field and how to set it."""


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
    Wasserstein distance flags hourly weather columns every month.
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
    """Where runs and the model registry live (DESIGN.md: local SQLite by default)."""

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

    schedule: str = Field("0 3 * * 1", description="cron of scheduled retrains (UTC)")
    window_batches: int = Field(3, ge=1, le=60, description="latest labelled batches trained on")
    train_config: Path = Field(
        Path("configs/flights.yaml"), description="the training job's YAML (model, schedule)"
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

    schedule: str = Field("0 * * * *", description="cron of the periodic check (UTC)")


class GateConfig(Section):
    """The SLOs a challenger must meet before it may serve as canary."""

    min_auc: float = Field(0.64, gt=0.0, le=1.0, description="holdout ROC AUC, overall")
    min_slice_auc: float = Field(0.60, gt=0.0, le=1.0, description="holdout AUC in every slice")
    slices: list[str] | None = Field(None, description="default: the spec's slices")
    slice_min_rows: int | None = Field(
        None, ge=1, description="smaller slices are not judged; default: the spec's"
    )
    max_auc_drop: float = Field(
        0.01, ge=0.0, le=1.0, description="largest AUC loss against the champion, same holdout"
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

    share: float = Field(0.2, gt=0.0, lt=1.0, description="share of rows the canary scores")
    salt: str = Field("canary-v1", min_length=1, description="changes which rows go to it")
    min_rows: int = Field(1000, ge=10, description="labelled rows each arm needs before a verdict")
    confidence: float = Field(0.95, gt=0.5, lt=1.0, description="two-sided interval level")
    margin: float = Field(
        0.005,
        ge=0.0,
        description="mean log loss the canary may exceed the champion's by (non-inferiority)",
    )
    max_wait_hours: float = Field(
        72.0, gt=0.0, description="inconclusive for longer: a person decides (alert)"
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
            from pipeline.alerts import AlertKind

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


class PipelineConfig(BaseSettings):
    """Everything the pipeline's steps need, with local defaults."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        validate_default=True,
    )

    home: Path = Field(DEFAULT_HOME, description="local state: store, reports, databases")
    dataset_spec: Path = Field(
        Path("configs/datasets/flights.yaml"), description="the dataset spec YAML"
    )
    storage: StorageConfig = Field(default_factory=StorageConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    canary: CanaryConfig = Field(default_factory=CanaryConfig)
    retrain: RetrainConfig = Field(default_factory=RetrainConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)

    @property
    def store_root(self) -> Path:
        """The local store folder: ``storage.root`` or ``<home>/store``."""
        return self.storage.root if self.storage.root is not None else self.home / "store"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file (already read and checked by load_config) ranks below the environment.
        return (
            init_settings,
            env_settings,
            InitSettingsSource(settings_cls, init_kwargs=_FILE_VALUES.get() or {}),
        )

    def describe(self) -> dict[str, Any]:
        """The resolved configuration as plain values (secrets masked).

        Besides the SecretStr fields, URLs are masked where they carry credentials:
        a password in ``user:password@host``, and the path and query of the alert
        webhook (a hook URL's path is its token).
        """
        data = _mask_urls(self.model_dump(mode="json"))
        hook = (data.get("alerts") or {}).get("webhook_url")
        if isinstance(hook, str):
            data["alerts"]["webhook_url"] = _mask_path(hook)
        return data


def _mask_path(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    tail = "/**********" if (parts.path not in ("", "/") or parts.query) else ""
    return f"{parts.scheme}://{parts.netloc}{tail}"


def _mask_urls(value: Any) -> Any:
    """``scheme://user:password@host`` -> ``scheme://user:**********@host``, recursively."""
    if isinstance(value, dict):
        return {k: _mask_urls(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_urls(v) for v in value]
    if isinstance(value, str) and "://" in value and "@" in value:
        return re.sub(r"(://[^/:@]*):[^/@]*@", r"\1:**********@", value)
    return value


_FILE_VALUES: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "cosine_retrain_config_file", default=None
)


def env_name(loc: tuple[Any, ...]) -> str:
    """The environment variable that sets a field, e.g. COSINE_RETRAIN_STORAGE__KIND."""
    return ENV_PREFIX + "__".join(str(p).upper() for p in loc)


def _field_default(name: Any) -> Any:
    info = PipelineConfig.model_fields.get(str(name))
    return info.get_default(call_default_factory=True) if info is not None else None


def _read_file(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"pipeline config file {path} does not exist (check --config or ${CONFIG_ENV})"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"pipeline config file {path} is not valid YAML: {exc}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"pipeline config file {path} must be a mapping of sections")
    unknown = sorted(set(map(str, raw)) - set(PipelineConfig.model_fields))
    if unknown:
        raise ConfigError(
            f"pipeline config file {path}: unknown section(s) {unknown}; "
            f"known: {sorted(PipelineConfig.model_fields)}"
        )
    return raw


def load_config(path: str | Path | None = None, **overrides: Any) -> PipelineConfig:
    """Defaults, then the YAML file (``path`` or ``$COSINE_RETRAIN_CONFIG``), then the
    environment, then ``overrides`` (keyword arguments, e.g. ``storage={"kind": "s3"}``)."""
    if path is None and os.environ.get(CONFIG_ENV):
        path = os.environ[CONFIG_ENV]
    where = str(path) if path is not None else "defaults"
    file_values = _read_file(Path(path)) if path is not None else {}
    token = _FILE_VALUES.set(file_values)
    try:
        return PipelineConfig(**overrides)
    except ValidationError as exc:
        lines = []
        for e in exc.errors():
            loc = tuple(e["loc"])
            field = ".".join(str(p) for p in loc) or "(config)"
            msg = e["msg"].removeprefix("Value error, ")
            if e["type"] == "extra_forbidden":
                msg = f"unknown field (a typo in the YAML file or in {env_name(loc)}?)"
            elif len(loc) == 1 and isinstance(_field_default(loc[0]), BaseModel):
                pass  # a section-level rule: its message names the fields already
            else:
                if "input" in e and not isinstance(e["input"], dict) and "secret" not in field:
                    msg += f" (got {e['input']!r})"
                msg += f"; set it in the YAML file or with {env_name(loc)}"
            lines.append(f"  {field}: {msg}")
        raise ConfigError(f"invalid pipeline config ({where}):\n" + "\n".join(lines)) from None
    finally:
        _FILE_VALUES.reset(token)
