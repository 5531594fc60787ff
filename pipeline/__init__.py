"""The pipeline's steps as plain functions that run without Airflow.

Light to import: heavy libraries (Great Expectations, Evidently, boto3) load
inside the functions that need them. The public steps are reachable from
here lazily, e.g. ``pipeline.validate_batch(store, spec, ref)``.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> module that defines it (loaded on first access)
_EXPORTS = {
    "PipelineConfig": "pipeline.config",
    "load_config": "pipeline.config",
    "ConfigError": "pipeline.config",
    "ObjectStore": "pipeline.storage",
    "LocalStore": "pipeline.storage",
    "S3Store": "pipeline.storage",
    "build_store": "pipeline.storage",
    "BatchRef": "pipeline.layout",
    "ingest_file": "pipeline.ingest",
    "ingest_frame": "pipeline.ingest",
    "ingest_flights_month": "pipeline.ingest",
    "ingest_labels": "pipeline.ingest",
    "ingest_labels_file": "pipeline.ingest",
    "ingest_flights_labels": "pipeline.ingest",
    "read_batch": "pipeline.ingest",
    "create_reference": "pipeline.reference",
    "create_reference_from_batches": "pipeline.reference",
    "validate_batch": "pipeline.validation",
    "ValidationSummary": "pipeline.validation",
    "ValidationFailed": "pipeline.validation",
    "check_drift": "pipeline.drift",
    "check_quality": "pipeline.drift",
    "decide_retrain": "pipeline.drift",
    "DriftSummary": "pipeline.drift",
    "QualitySummary": "pipeline.drift",
    "RetrainDecision": "pipeline.drift",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
