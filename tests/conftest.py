"""Fixtures shared by every layer (see tests/support.py for the helpers)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipeline.base.sections import StorageConfig
from tests.support import (
    VENV_BIN,
    MlflowServer,
    run_demo,
    start_mlflow_server,
    stop_process_group,
)

# The suite runs in two xdist workers (``./run test``: ``-n 2 --dist loadscope``). A
# module is one unit of work (its module-scoped fixtures are built once), and the
# modules below are one more: they start a live Airflow stack (api-server, scheduler,
# processors) or share the session's replayed demo, so one worker runs them one after
# another (two stacks at once on two cores starve each other, and the replay is paid
# once) while the other runs the rest. Units start longest first (the stack first).
# (xdist's own ``xdist_group`` mark does not group under pytest 9: it renames
# ``item._nodeid``, which pytest 9 no longer reads; the scheduler below splits by unit.)
STACK_UNIT = "stack"
STACK_MODULES = (
    "tests/stack/",
    "tests/ui/",
    "tests/faults/test_triggers.py",
    "tests/faults/test_security.py",  # reuses the replayed demo when the session has one
    "tests/dags/test_replay.py",
)


def work_unit(nodeid: str) -> str:
    """The unit of work a test belongs to: the stack's, or its module's."""
    module = nodeid.split("::", 1)[0]
    return STACK_UNIT if module.startswith(STACK_MODULES) else module


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadscope`` by :func:`work_unit` rather than by module alone."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class WorkUnits(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return WorkUnits(config, log)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under xdist, the stack's unit first (it is the longest), slow-marked modules
    next, the rest in collection order; both workers sort alike."""
    if not hasattr(config, "workerinput"):
        return

    def rank(item: pytest.Item) -> int:
        if work_unit(item.nodeid) == STACK_UNIT:
            return 0
        return 1 if item.get_closest_marker("slow") else 2

    items.sort(key=rank)  # stable: collection order within a rank


@pytest.fixture(autouse=True)
def _no_mlflow_globals_leak() -> Iterator[None]:
    """A test that points MLflow's fluent API somewhere (``mlflow.set_tracking_uri``
    also exports ``MLFLOW_TRACKING_URI``) must not send later tests, and the
    servers they start, to a server that has gone."""
    keys = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID")
    before = {k: os.environ.get(k) for k in keys}
    yield
    if "mlflow" in sys.modules:
        import mlflow
        from mlflow.tracking import fluent
        from mlflow.tracking._model_registry import utils as registry_utils

        mlflow.set_tracking_uri(None)
        registry_utils._registry_uri = None
        fluent._active_experiment_id = None
    for k, v in before.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A real MLflow tracking server (SQLite backend, local artifacts) for the session."""
    if shutil.which(str(VENV_BIN / "mlflow")) is None:
        pytest.fail("the mlflow CLI is missing from the environment (run ./run setup)")
    proc, server = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"))
    try:
        yield server
    finally:
        stop_process_group(proc)


@dataclass(frozen=True)
class TrainedRun:
    """A tiny training run logged to the session's MLflow server."""

    run_id: str
    run_dir: Path
    result: dict[str, Any]


@pytest.fixture(scope="session")
def trained_runs(
    mlflow_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, TrainedRun]:
    """Two finished training runs of the flights model (a: calm, b: a hot, noisy peak)."""
    return train_runs(
        mlflow_server.url,
        tmp_path_factory.mktemp("trained"),
        "registry-tests",
        {"a": ["schedule.lr_max=0.01"], "b": ["schedule.lr_max=0.03", "runtime.seed=1"]},
    )


def train_runs(
    url: str, out: Path, experiment: str, extras: dict[str, list[str]]
) -> dict[str, TrainedRun]:
    """One tiny training run of the flights model per label, with that label's overrides,
    logged to the MLflow server at ``url`` under ``experiment``."""
    from tests.training.helpers import TINY
    from training.config.train import load_config
    from training.engine.trainer import Trainer

    runs = {}
    for label, extra in extras.items():
        config = load_config(
            None,
            [
                f"run_name={label}",
                f"output_dir={out}",
                f"mlflow.tracking_uri={url}",
                f"mlflow.experiment={experiment}",
                *TINY,
                *extra,
            ],
        )
        result = Trainer(config).run()
        run_dir = Path(result.run_dir)
        runs[label] = TrainedRun(
            str(result.mlflow_run_id), run_dir, json.loads((run_dir / "result.json").read_text())
        )
    return runs


@pytest.fixture(scope="session")
def postgres_mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """An MLflow server whose backend store is a fresh PostgreSQL database."""
    from tests.support import create_postgres_database, drop_postgres_database, postgres_unavailable

    why = postgres_unavailable()
    if why:
        pytest.skip(why)
    name, url = create_postgres_database("mlflow_test")
    proc, server = start_mlflow_server(tmp_path_factory.mktemp("mlflow-pg"), backend_uri=url)
    try:
        yield server
    finally:
        stop_process_group(proc)
        drop_postgres_database(name)


@pytest.fixture(scope="session")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """January-March replayed through the DAGs (shared by the replay and the UI tests)."""
    home = tmp_path_factory.mktemp("replayed-home")
    proc = run_demo(home, "1-3")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return home, proc.stdout


@dataclass(frozen=True)
class S3Server:
    endpoint: str

    def storage(self, bucket: str, **extra: object) -> StorageConfig:
        settings: dict[str, object] = {
            "kind": "s3",
            "bucket": bucket,
            "prefix": "pipeline-tests",
            "endpoint_url": self.endpoint,
            "region": "us-east-1",
            "access_key_id": "testing",
            "secret_access_key": "testing",
            "max_attempts": 2,
        }
        return StorageConfig.model_validate({**settings, **extra})

    def new_bucket(self) -> str:
        import boto3

        name = f"b-{uuid.uuid4().hex[:20]}"
        boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        ).create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    from tests.support import moto_server

    with moto_server() as port:
        yield S3Server(f"http://127.0.0.1:{port}")


@pytest.fixture(scope="module")
def receiver() -> Iterator[Any]:
    """An alert webhook receiver on 127.0.0.1 shared by a module's tests (a module whose
    tests each need a fresh one defines its own ``receiver``)."""
    from tests.pipeline.base.test_alerts import Receiver

    with Receiver() as r:
        yield r
