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
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from pipeline.base.sections import (
    AlertsConfig,
    BudgetConfig,
    CanaryConfig,
    DataConfig,
    DriftConfig,
    GateConfig,
    IngestConfig,
    MlflowConfig,
    MonitorConfig,
    QualityConfig,
    RetrainConfig,
    StorageConfig,
    TuneConfig,
    ValidationConfig,
)
from training.api import DEFAULT_HOME, PROJECT_ROOT, unknown_field

__all__ = [
    "ENV_PREFIX",
    "HOME_SPEC",
    "ConfigError",
    "PipelineConfig",
    "home_spec",
    "load_config",
    "resolve_path",
]

ENV_PREFIX = "COSINE_RETRAIN_"
CONFIG_ENV = f"{ENV_PREFIX}CONFIG"
HOME_SPEC = "dataset-spec.txt"  # in a home: the spec its replay ran with


class ConfigError(ValueError):
    """The pipeline configuration is invalid; the message names each field and how to set it."""


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
    pushgateway_url: str | None = Field(
        None,
        pattern=r"^https?://",
        description="Prometheus Pushgateway the live-quality check pushes the champion's AUC "
        "to (the training job reads the same variable); unset: nothing is pushed",
    )
    cron_schedules: bool = Field(
        True,
        description="run the DAGs' cron schedules (monitor.schedule, retrain.schedule, "
        "tune.schedule); false: those DAGs run only on their asset events and by hand. "
        "./run ui sets it false unless --schedules: a demo home's data is not today's",
    )
    storage: StorageConfig = Field(default_factory=StorageConfig)
    data: DataConfig = Field(default_factory=DataConfig)
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
    tune: TuneConfig = Field(default_factory=TuneConfig)

    @model_validator(mode="after")
    def _pod_reaches_what_it_is_given(self) -> PipelineConfig:
        """With ``retrain.backend: kubernetes`` the pod is handed the tracking URI, the
        artifact root and the window as they are: refuse what only the worker can open."""
        if self.retrain.backend != "kubernetes":
            return self
        problems = pod_unreachable(
            self.mlflow.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "").strip(),
            self.mlflow.artifact_location,
            self.storage.kind,
        )
        if problems:
            raise ValueError(
                "retrain.backend is 'kubernetes', but the training pod could not reach: "
                + "; ".join(problems)
            )
        return self

    @model_validator(mode="after")
    def _spark_reaches_the_store(self) -> PipelineConfig:
        """A Spark cluster's executors read batches from the store and write predictions
        to it: a local folder on the worker is out of their reach."""
        master = self.data.spark.master
        if (
            self.data.engine != "spark"
            or master.startswith("local")
            or self.storage.kind != "local"
        ):
            return self
        raise ValueError(
            f"data.engine is 'spark' on the cluster data.spark.master={master!r}, but "
            f"storage.kind is 'local' (a folder on this machine, {self.store_root}), which "
            "the cluster's executors cannot read or write: set storage.kind: s3 (with the "
            "cluster's spark.hadoop.fs.s3a.* settings in data.spark.conf, docs/spark.md), "
            "or data.spark.master: local[*]"
        )

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


REMOTE_TRACKING = ("http://", "https://", "databricks", "postgresql", "mysql", "mssql")
OBJECT_STORES = ("s3://", "gs://", "wasbs://", "abfss://", "dbfs:/", "mlflow-artifacts:/")


def pod_unreachable(tracking: str, artifacts: str | None, storage_kind: str) -> list[str]:
    """What a training pod, on another machine than the worker, could not open: each
    item names the setting to change."""
    problems = []
    if not tracking.startswith(REMOTE_TRACKING):
        shown = tracking or "the default sqlite:///<home>/mlflow.db"
        problems.append(
            f"mlflow.tracking_uri is {shown}, a file on the worker: set an MLflow server URI "
            "(COSINE_RETRAIN_MLFLOW__TRACKING_URI=http://mlflow:5000) or a database server's"
        )
    elif not tracking.startswith(("http://", "https://", "databricks")) and not (
        artifacts or ""
    ).startswith(OBJECT_STORES):
        problems.append(
            f"mlflow.artifact_location is {artifacts or 'the default <home>/mlartifacts'}, a "
            "folder on the worker: with a database tracking URI set an object-store root "
            "(COSINE_RETRAIN_MLFLOW__ARTIFACT_LOCATION=s3://bucket/mlartifacts)"
        )
    if storage_kind != "s3":
        problems.append(
            "storage.kind is local, so the window the pod trains on stays on the worker: set "
            "storage.kind s3 and storage.bucket (COSINE_RETRAIN_STORAGE__KIND=s3)"
        )
    return problems


def home_spec(home: Path) -> Path | None:
    """The dataset spec the replay in ``home`` ran with (``./run demo`` records it), if any."""
    note = Path(home) / HOME_SPEC
    return Path(note.read_text().strip()) if note.is_file() else None


def _home_keeps_its_spec(config: PipelineConfig, where: str) -> PipelineConfig:
    """A home that recorded its data set's spec uses it: every command on the home (CLI,
    DAGs, UI) reads what its replay wrote; a different spec set explicitly is refused."""
    recorded = home_spec(config.home)
    if recorded is None:
        return config
    if "dataset_spec" not in config.model_fields_set:
        return config.model_copy(update={"dataset_spec": recorded})
    chosen = resolve_path(config.dataset_spec).resolve()
    if chosen != recorded.resolve():
        raise ConfigError(
            f"invalid pipeline config ({where}):\n  dataset_spec: {chosen} is not the spec "
            f"of home {config.home} ({recorded}, recorded by its replay); unset "
            f"{ENV_PREFIX}DATASET_SPEC, or give this data set its own home"
        )
    return config


def resolve_path(path: Path | str) -> Path:
    """A relative path as given when it exists from the working folder, else from the
    project root (Airflow runs tasks from other folders than the checkout)."""
    path = Path(path)
    if path.is_absolute() or path.exists():
        return path
    return PROJECT_ROOT / path


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
        return _home_keeps_its_spec(PipelineConfig(**overrides), where)
    except ValidationError as exc:
        lines = []
        for e in exc.errors():
            loc = tuple(e["loc"])
            field = ".".join(str(p) for p in loc) or "(config)"
            msg = e["msg"].removeprefix("Value error, ")
            if e["type"] == "extra_forbidden":
                msg = (
                    f"{unknown_field(PipelineConfig, loc)} (a typo in the YAML file or in "
                    f"{env_name(loc)}?)"
                )
            elif not loc or (len(loc) == 1 and isinstance(_field_default(loc[0]), BaseModel)):
                pass  # a section-level rule: its message names the fields already
            else:
                if "input" in e and not isinstance(e["input"], dict) and "secret" not in field:
                    msg += f" (got {e['input']!r})"
                msg += f"; set it in the YAML file or with {env_name(loc)}"
            lines.append(f"  {field}: {msg}" if loc else f"  {msg}")
        raise ConfigError(f"invalid pipeline config ({where}):\n" + "\n".join(lines)) from None
    finally:
        _FILE_VALUES.reset(token)
