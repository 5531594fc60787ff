"""PipelineConfig: defaults, YAML file, environment overrides, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.base.config import ConfigError, PipelineConfig, load_config
from pipeline.base.store import LocalStore, S3Store, build_store
from tests.pipeline.cli_support import clear_pipeline_env


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_pipeline_env(monkeypatch)


def test_defaults_are_the_local_run() -> None:
    config = load_config()
    assert config.storage.kind == "local"
    assert config.store_root == Path(".cosine-retrain/store")
    assert config.dataset_spec == Path("configs/datasets/flights.yaml")
    assert 0 < config.drift.share_threshold <= 1
    assert isinstance(build_store(config.model_copy(update={"home": Path("/tmp/x")})), LocalStore)


def test_home_moves_the_store_unless_root_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COSINE_RETRAIN_HOME", "/data/cr")
    assert load_config().store_root == Path("/data/cr/store")
    monkeypatch.setenv("COSINE_RETRAIN_STORAGE__ROOT", "/elsewhere")
    assert load_config().store_root == Path("/elsewhere")


def test_yaml_file_then_environment_then_arguments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "pipeline.yaml"
    path.write_text(
        "storage:\n  kind: s3\n  bucket: from-file\n  prefix: team/a\n"
        "drift:\n  share_threshold: 0.4\n  column_thresholds: {temp: 0.5}\n"
    )
    config = load_config(path)
    assert (config.storage.bucket, config.storage.prefix) == ("from-file", "team/a")
    assert config.drift.share_threshold == 0.4
    assert config.drift.column_thresholds == {"temp": 0.5}
    monkeypatch.setenv("COSINE_RETRAIN_STORAGE__BUCKET", "from-env")
    monkeypatch.setenv("COSINE_RETRAIN_DRIFT__SHARE_THRESHOLD", "0.25")
    config = load_config(path)
    assert config.storage.bucket == "from-env"  # env beats the file
    assert config.storage.prefix == "team/a"  # the file's other fields stay
    assert config.drift.share_threshold == 0.25
    assert load_config(path, drift={"share_threshold": 0.9}).drift.share_threshold == 0.9


def test_config_file_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("quality:\n  slo: 0.7\n")
    monkeypatch.setenv("COSINE_RETRAIN_CONFIG", str(path))
    assert load_config().quality.slo == 0.7


def test_s3_config_builds_an_s3_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COSINE_RETRAIN_STORAGE__KIND", "s3")
    monkeypatch.setenv("COSINE_RETRAIN_STORAGE__BUCKET", "my-bucket")
    monkeypatch.setenv("COSINE_RETRAIN_STORAGE__ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    store = build_store(load_config())
    assert isinstance(store, S3Store)
    assert store.uri("a/b") == "s3://my-bucket/cosine-retrain/a/b"


@pytest.mark.parametrize(
    ("env", "value", "expected"),
    [
        (
            "COSINE_RETRAIN_DRIFT__SHARE_THRESHOLD",
            "1.5",
            r"drift\.share_threshold: .*less than or equal to 1.*DRIFT__SHARE_THRESHOLD",
        ),
        ("COSINE_RETRAIN_STORAGE__KIND", "ftp", r"storage\.kind: Input should be 'local' or 's3'"),
        ("COSINE_RETRAIN_STORAGE__RETRIES_MODE", "often", r"storage\.retries_mode"),
        ("COSINE_RETRAIN_DRIFT__NUM_METHOD", "magic", r"drift\.num_method"),
        ("COSINE_RETRAIN_DRIFT__SAMPLE_SIZE", "10", r"drift\.sample_size: .*1000"),
        ("COSINE_RETRAIN_DRIFT__TYPO", "1", r"drift\.typo: unknown field"),
        ("COSINE_RETRAIN_STORAGE__MULTIPART_CHUNK_MB", "1", r"storage\.multipart_chunk_mb"),
        (
            "COSINE_RETRAIN_DATA__ENGINE",
            "dask",
            r"data\.engine: Input should be 'pandas' or 'spark'",
        ),
        ("COSINE_RETRAIN_DATA__SPARK__DRIVER_MEMORY", "lots", r"data\.spark\.driver_memory"),
        ("COSINE_RETRAIN_DATA__SPARK__TYPO", "1", r"data\.spark\.typo: unknown field"),
    ],
)
def test_bad_values_name_the_field(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError, match=expected):
        load_config()


def test_the_spark_session_is_set_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COSINE_RETRAIN_DATA__ENGINE", "spark")
    monkeypatch.setenv("COSINE_RETRAIN_DATA__SPARK__MASTER", "spark://spark-master:7077")
    monkeypatch.setenv("COSINE_RETRAIN_DATA__SPARK__CONF", '{"spark.executor.memory": "8g"}')
    monkeypatch.setenv("COSINE_RETRAIN_STORAGE__KIND", "s3")  # a cluster reads the store
    monkeypatch.setenv("COSINE_RETRAIN_STORAGE__BUCKET", "lake")
    config = load_config()
    assert config.data.engine == "spark"
    assert config.data.spark.master == "spark://spark-master:7077"
    assert config.data.spark.conf == {"spark.executor.memory": "8g"}


def test_a_spark_cluster_is_refused_a_store_on_this_machine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COSINE_RETRAIN_DATA__ENGINE", "spark")
    monkeypatch.setenv("COSINE_RETRAIN_DATA__SPARK__MASTER", "k8s://https://kubernetes:443")
    with pytest.raises(ConfigError, match=r"storage.kind: s3 .*or data.spark.master: local"):
        load_config()
    monkeypatch.setenv("COSINE_RETRAIN_STORAGE__KIND", "s3")
    monkeypatch.setenv("COSINE_RETRAIN_STORAGE__BUCKET", "lake")
    assert load_config().data.spark.master == "k8s://https://kubernetes:443"


def test_s3_without_bucket_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COSINE_RETRAIN_STORAGE__KIND", "s3")
    with pytest.raises(
        ConfigError, match=r"storage\.bucket is required when storage\.kind is 's3'"
    ):
        load_config()


def test_unknown_section_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("storage:\n  kind: local\nstorgae: {}\n")
    with pytest.raises(ConfigError, match=r"unknown section\(s\) \['storgae'\]"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("storage: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)


def test_unknown_per_column_method() -> None:
    with pytest.raises(ConfigError, match=r"drift\.column_methods\.temp: unknown method 'best'"):
        load_config(drift={"column_methods": {"temp": "best"}})


def test_secrets_are_masked_in_describe() -> None:
    config = load_config(
        storage={"kind": "s3", "bucket": "b-1", "access_key_id": "AKIA", "secret_access_key": "s3"}
    )
    text = str(config.describe())
    assert "AKIA" not in text
    assert "**********" in text


def test_sections_are_extensible() -> None:
    """Later issues add sections as fields; the settings machinery must keep working."""
    from pydantic import Field

    from pipeline.base.sections import Section

    class GateConfig(Section):
        margin: float = 0.01

    class Extended(PipelineConfig):
        gate: GateConfig = Field(default_factory=GateConfig)

    assert Extended().gate.margin == 0.01


def test_a_pod_is_refused_what_only_the_worker_can_open(monkeypatch: pytest.MonkeyPatch) -> None:
    """retrain.backend kubernetes with the local defaults: one message naming each setting."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("COSINE_RETRAIN_RETRAIN__BACKEND", "kubernetes")
    with pytest.raises(ConfigError) as caught:
        load_config()
    message = str(caught.value)
    assert "default sqlite:///<home>/mlflow.db" in message
    assert "COSINE_RETRAIN_MLFLOW__TRACKING_URI" in message
    assert "storage.kind is local" in message
    assert message.count("\n") == 1  # one error line, every problem in it

    # a database tracking URI is reachable, its default artifact folder is not
    monkeypatch.setenv("COSINE_RETRAIN_MLFLOW__TRACKING_URI", "postgresql://db/mlflow")
    monkeypatch.setenv("COSINE_RETRAIN_STORAGE__KIND", "s3")
    monkeypatch.setenv("COSINE_RETRAIN_STORAGE__BUCKET", "team-data")
    with pytest.raises(ConfigError, match=r"mlflow\.artifact_location is the default"):
        load_config()
    monkeypatch.setenv("COSINE_RETRAIN_MLFLOW__ARTIFACT_LOCATION", "s3://team-data/mlartifacts")
    assert load_config().retrain.backend == "kubernetes"

    # a tracking server keeps its own artifacts; $MLFLOW_TRACKING_URI counts as set
    monkeypatch.delenv("COSINE_RETRAIN_MLFLOW__TRACKING_URI")
    monkeypatch.delenv("COSINE_RETRAIN_MLFLOW__ARTIFACT_LOCATION")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert load_config().mlflow.tracking_uri is None
    monkeypatch.setenv("COSINE_RETRAIN_RETRAIN__BACKEND", "local")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.setenv("COSINE_RETRAIN_STORAGE__KIND", "local")
    assert load_config().retrain.backend == "local"  # the worker opens its own files
