"""The sections of the pipeline's configuration, one pydantic model each, grouped by
concept: where things are kept (stores), the data steps (data), when the loop
retrains (retraining), from candidate to champion (promotion), running it (ops),
tuning the schedule (tuning).

Each section forbids unknown keys (a typo never passes silently) and is frozen;
:class:`~pipeline.base.config.PipelineConfig` holds one of each. Field
descriptions are what ``docs/configuration.md`` shows.
"""

from __future__ import annotations

from pipeline.base.sections.common import Section
from pipeline.base.sections.data import (
    CATEGORICAL_METHODS,
    NUMERIC_METHODS,
    DataConfig,
    DriftConfig,
    IngestConfig,
    SparkConfig,
    ValidationConfig,
)
from pipeline.base.sections.ops import AlertsConfig, BudgetConfig
from pipeline.base.sections.promotion import CanaryConfig, GateConfig, QualityConfig
from pipeline.base.sections.retraining import MonitorConfig, RetrainConfig
from pipeline.base.sections.stores import MlflowConfig, StorageConfig
from pipeline.base.sections.tuning import INTEGER, TUNABLE, ParamRange, TuneConfig

__all__ = [
    "CATEGORICAL_METHODS",
    "INTEGER",
    "NUMERIC_METHODS",
    "TUNABLE",
    "AlertsConfig",
    "BudgetConfig",
    "CanaryConfig",
    "DataConfig",
    "DriftConfig",
    "GateConfig",
    "IngestConfig",
    "MlflowConfig",
    "MonitorConfig",
    "ParamRange",
    "QualityConfig",
    "RetrainConfig",
    "Section",
    "SparkConfig",
    "StorageConfig",
    "TuneConfig",
    "ValidationConfig",
]
