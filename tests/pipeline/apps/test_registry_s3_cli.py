"""The registry commands end to end with everything on S3 (moto's HTTP server):
MLflow artifacts proxied to a bucket by the tracking server, batches and
predictions in the pipeline's S3 store, driven through ``python -m pipeline``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from pipeline.apps.cli import main
from tests.support import MlflowServer, start_mlflow_server, stop_process_group
from tests.training.helpers import TINY
from training.config.train import load_config as train_config
from training.engine.trainer import Trainer

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="module")
def s3_mlflow(s3_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    bucket = s3_server.new_bucket()
    env = {**CREDENTIALS, "MLFLOW_S3_ENDPOINT_URL": s3_server.endpoint}
    proc, server = start_mlflow_server(
        tmp_path_factory.mktemp("mlflow-s3"),
        artifacts_destination=f"s3://{bucket}/mlflow",
        extra_env=env,
    )
    try:
        yield {"server": server, "bucket": bucket, "endpoint": s3_server.endpoint}
    finally:
        stop_process_group(proc)


def _keys(endpoint: str, bucket: str, prefix: str = "") -> list[str]:
    s3 = boto3.client("s3", endpoint_url=endpoint, **_boto_credentials())
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
        "region_name": "us-east-1",
    }


def test_register_gate_score_and_inspect_with_everything_on_s3(
    s3_mlflow: dict[str, Any],
    s3_server: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server: MlflowServer = s3_mlflow["server"]
    # the training job talks HTTP to the server only (proxied artifacts): no AWS settings
    config = train_config(
        None,
        [
            "run_name=s3",
            f"output_dir={tmp_path / 'runs'}",
            f"mlflow.tracking_uri={server.url}",
            "mlflow.experiment=s3-tests",
            *TINY,
            "schedule.lr_max=0.01",
        ],
    )
    run_id = Trainer(config).run().mlflow_run_id
    capsys.readouterr()  # MLflow prints "View run ..." lines
    store_bucket = s3_server.new_bucket()
    pipeline_yaml = tmp_path / "pipeline.yaml"
    pipeline_yaml.write_text(
        yaml.safe_dump(
            {
                "home": str(tmp_path / "home"),
                "storage": {
                    "kind": "s3",
                    "bucket": store_bucket,
                    "endpoint_url": s3_server.endpoint,
                    "region": "us-east-1",
                    "access_key_id": "testing",
                    "secret_access_key": "testing",
                },
                "mlflow": {"tracking_uri": server.url},
                "gate": {"min_auc": 0.55, "min_slice_auc": 0.4},
            }
        )
    )
    cfg = ["--config", str(pipeline_yaml)]

    assert main(["register", run_id, *cfg, "--json"]) == 0
    registration = json.loads(capsys.readouterr().out)
    challenger = registration["challenger"]["version"]
    assert len(registration["versions"]) >= 3
    # the model's files went to the bucket through the server
    model_keys = _keys(s3_mlflow["endpoint"], s3_mlflow["bucket"], "mlflow/")
    assert any(k.endswith("MLmodel") for k in model_keys)
    assert any(k.endswith(".ckpt") for k in model_keys)

    assert main(["gate", *cfg]) == 0
    out = capsys.readouterr().out
    assert f"gate passed for flight_delay v{challenger}" in out
    assert "first model" in out

    assert main(["ingest", "2013-02", *cfg]) == 0
    capsys.readouterr()
    assert main(["canary", "score", "2013-02", *cfg, "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["champion_version"] == challenger
    assert scored["canary_version"] is None
    assert f"cosine-retrain/{scored['key']}" in _keys(s3_server.endpoint, store_bucket)

    assert main(["models", *cfg]) == 0
    listing = capsys.readouterr().out
    assert f"champion -> v{challenger}" in listing
    assert "gate passed" in listing

    assert main(["rollback", "--why", "nothing to go back to", *cfg]) == 2
    assert "no previous_champion" in capsys.readouterr().err
    assert main(["register", "0" * 32, *cfg]) == 2
    assert "no MLflow run" in capsys.readouterr().err
