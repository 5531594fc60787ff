"""Services failing under the pipeline: MLflow stopped mid-run, S3 refusing and
answering 500/503, the registry's artifact store failing mid-upload, PostgreSQL
restarting under the Airflow scheduler.

Each fault ends one of two ways: the work finishes after retries, or it fails
with a message that names the service; and the store and the registry never
hold partial state (no object that was not fully written, no version without
its artifacts, no alias pointing at a missing version, no duplicate version
when a registration is retried).

Real services, each started here and stopped by PID: moto's S3 server behind
:class:`tests.faults.faultproxy.FaultProxy`, an MLflow server whose artifacts go
to that S3 (through the proxy) and whose API is reached through a second proxy,
and (long mode) a private PostgreSQL cluster under an Airflow scheduler.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipeline.base.sections import StorageConfig
from pipeline.base.store import ObjectExists, S3Store, StorageError
from tests.faults.faultproxy import FaultProxy, Request
from tests.support import VENV_BIN, free_port, moto_server, stop_process_group

ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
FIGURES: list[str] = []  # one line per fault, printed at the end (docs/reliability.md)


def _figure(line: str) -> None:
    """One figure for docs/reliability.md; appended to $FAULTS_REPORT when it is set."""
    FIGURES.append(line)
    if os.environ.get("FAULTS_REPORT"):
        with open(os.environ["FAULTS_REPORT"], "a") as fh:
            fh.write(line + "\n")


# ------------------------------------------------------------------------------ S3


@dataclass
class S3:
    upstream: str  # moto, direct
    proxy: FaultProxy  # what the code under test talks to

    def raw(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.upstream,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def bucket(self) -> str:
        name = f"faults-{uuid.uuid4().hex[:16]}"
        self.raw().create_bucket(Bucket=name)
        return name

    def store(self, bucket: str, *, attempts: int = 3, **extra: Any) -> S3Store:
        config = StorageConfig.model_validate(
            {
                "kind": "s3",
                "bucket": bucket,
                "prefix": "faults",
                "endpoint_url": self.proxy.url,
                "region": REGION,
                "access_key_id": "testing",
                "secret_access_key": "testing",
                "max_attempts": attempts,
                "connect_timeout_s": 2,
                "read_timeout_s": 10,
            }
        )
        store = S3Store.from_config(config)
        for name, value in extra.items():
            setattr(store, name, value)
        return store

    def objects(self, bucket: str) -> dict[str, bytes]:
        """Every object of the bucket, read directly from moto (past the proxy)."""
        raw = self.raw()
        out = {}
        for page in raw.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                out[obj["Key"]] = raw.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
        return out


@pytest.fixture(scope="module")
def s3() -> Iterator[S3]:
    with moto_server() as port:
        proxy = FaultProxy("127.0.0.1", port)
        try:
            yield S3(f"http://127.0.0.1:{port}", proxy)
        finally:
            proxy.stop()


@pytest.fixture
def s3_faults(s3: S3) -> Iterator[S3]:
    """The S3 proxy with no fault left over, before and after a test."""
    s3.proxy.clear()
    s3.proxy.open_port()
    yield s3
    s3.proxy.clear()
    s3.proxy.open_port()


def _put(method: str = "PUT") -> Callable[[Request], bool]:
    return lambda r: r.method == method and "uploadId" not in r.path


def _payload(rng: random.Random, size: int) -> bytes:
    return rng.randbytes(size)


def test_s3_5xx_for_a_few_requests_is_retried(s3_faults: S3, fault_mode: Any) -> None:
    """500/503 for the next N requests: put, get and list succeed after botocore retries."""
    s3, rng = s3_faults, random.Random(1)
    bucket = s3.bucket()
    rounds = int(fault_mode.pick(3, 30))
    written = {}
    for i in range(rounds):
        # a fresh client per round, as each task has: botocore's retry quota (a token
        # bucket per client) runs dry after ~10 rounds and then retries nothing at all
        store = s3.store(bucket, attempts=5)
        data = _payload(rng, rng.randint(1, 200_000))
        key = f"retried/{i:03d}.bin"
        status = (500, 503)[i % 2]
        s3.proxy.fail(status, n=2)  # HEAD (exists) and PUT both meet one
        store.put_bytes(key, data)
        s3.proxy.fail(status, n=2)
        assert store.get_bytes(key) == data
        s3.proxy.fail(status, n=2)
        assert store.list("retried")[-1] == key
        written[f"faults/{key}"] = data
        assert not s3.proxy.pending
    assert s3.objects(bucket) == written
    injected = s3.proxy.injected["500"] + s3.proxy.injected["503"]
    assert injected == 6 * rounds
    _figure(
        f"S3 500/503 x2 per call: {injected} injected over {rounds} put/get/list rounds, all ok"
    )


def test_s3_5xx_outage_fails_clearly_then_recovers(s3_faults: S3, fault_mode: Any) -> None:
    """503 for T seconds: a write fails with a message naming the key and the endpoint,
    writes nothing; the same write succeeds after the outage; nothing is overwritten."""
    s3 = s3_faults
    bucket = s3.bucket()
    store = s3.store(bucket, attempts=2)
    store.put_bytes("kept.bin", b"original")
    outage = float(fault_mode.pick(1.5, 10))
    # the outage lasts until this test ends it, not until a clock runs out: a write
    # started near a timed outage's end (botocore backs off up to ~1 s between its
    # attempts, longer on a loaded machine) would land after it and rightly succeed
    s3.proxy.fail(503, seconds=3600)
    started = time.monotonic()
    failures = 0
    while time.monotonic() - started < outage:
        with pytest.raises(StorageError) as err:
            store.put_bytes("during.bin", b"x" * 1000)
        failures += 1
        message = str(err.value)
        assert "faults/during.bin" in message, message
        assert s3.proxy.url in message, message
        assert "SlowDown" in message or "503" in message, message
        with pytest.raises(StorageError):
            store.put_bytes("kept.bin", b"overwrite?", overwrite=True)
        assert set(s3.objects(bucket)) == {"faults/kept.bin"}
        time.sleep(0.2)
    answers = s3.proxy.injected["503"]
    assert answers >= 2 * failures
    s3.proxy.clear()  # the outage ends
    store = s3.store(bucket, attempts=2)  # the next task's client (a full retry quota)
    store.put_bytes("during.bin", b"x" * 1000)
    with pytest.raises(ObjectExists):
        store.put_bytes("kept.bin", b"not this")
    assert s3.objects(bucket) == {"faults/kept.bin": b"original", "faults/during.bin": b"x" * 1000}
    _figure(
        f"S3 503 outage {outage:g} s: {failures} writes failed clearly "
        f"({answers} answers), none landed; recovered after"
    )


def test_s3_refused_and_reset_connections(s3_faults: S3, fault_mode: Any) -> None:
    """A closed port and reset connections: a clear error naming the endpoint, no object;
    the same calls succeed once the endpoint is back."""
    s3 = s3_faults
    bucket = s3.bucket()
    store = s3.store(bucket, attempts=2)
    rounds = int(fault_mode.pick(2, 10))
    for i in range(rounds):
        s3.proxy.close_port()
        with pytest.raises(StorageError) as err:
            store.put_bytes(f"refused/{i}.bin", b"r")
        assert "cannot reach the S3 endpoint" in str(err.value), err.value
        assert s3.proxy.url in str(err.value)
        with pytest.raises(StorageError):
            store.list("refused")
        s3.proxy.open_port()
        s3.proxy.reset_for(0.8)
        with pytest.raises(StorageError) as err:
            store.get_bytes("refused/none.bin")
        assert "faults/refused/none.bin" in str(err.value), err.value
        assert s3.objects(bucket) == {f"faults/refused/{j}.bin": b"r" for j in range(i)}
        time.sleep(0.9)
        store.put_bytes(f"refused/{i}.bin", b"r")
    assert store.list("refused") == [f"refused/{i}.bin" for i in range(rounds)]
    _figure(
        f"S3 refused/reset connections: {rounds} refusals + {s3.proxy.injected['reset']} resets, "
        "every call failed clearly, nothing written, all ok after"
    )


def test_s3_lost_answer_and_cut_upload_leave_one_whole_object(
    s3_faults: S3, fault_mode: Any
) -> None:
    """A PUT whose answer is lost after S3 stored it, and a PUT cut halfway: botocore
    retries; the write succeeds once (not 'already exists' for our own object), the
    object is whole, and another writer's object is never overwritten."""
    s3, rng = s3_faults, random.Random(2)
    bucket = s3.bucket()
    store = s3.store(bucket, attempts=4)
    rounds = int(fault_mode.pick(3, 25))
    expected = {}
    for i in range(rounds):
        data = _payload(rng, rng.randint(10, 300_000))
        key = f"lost/{i:03d}.bin"
        if i % 2:
            s3.proxy.cut_request(n=1, match=_put())
        else:
            s3.proxy.drop_response(n=1, match=_put())
        store.put_bytes(key, data)
        assert not s3.proxy.pending
        expected[f"faults/{key}"] = data
        assert s3.objects(bucket) == expected
    # someone else's object at the key: still refused, untouched
    s3.proxy.drop_response(n=1, match=_put())
    with pytest.raises(ObjectExists):
        store.put_bytes("lost/000.bin", b"another writer")
    assert s3.objects(bucket) == expected
    _figure(
        f"S3 lost answer / half-sent PUT: {s3.proxy.injected['drop']} lost answers, "
        f"{s3.proxy.injected['cut']} cut uploads; every object whole, once, nothing overwritten"
    )


def test_s3_multipart_lost_complete_and_failed_part(s3_faults: S3, tmp_path: Path) -> None:
    """Multipart: a lost CompleteMultipartUpload answer still succeeds once; parts that
    keep failing abort the upload (no object, no upload left open)."""
    s3 = s3_faults
    bucket = s3.bucket()
    mib = 1024 * 1024
    store = s3.store(bucket, attempts=3, multipart_threshold=5 * mib, multipart_chunk=5 * mib)
    data = random.Random(3).randbytes(11 * mib)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    s3.proxy.drop_response(n=1, match=lambda r: r.method == "POST" and "uploadId=" in r.path)
    store.put_file("big/one.bin", path)
    assert s3.proxy.injected["drop"] == 1
    assert s3.objects(bucket) == {"faults/big/one.bin": data}

    is_part = lambda r: r.method == "PUT" and "partNumber=2" in r.path  # noqa: E731
    s3.proxy.fail(500, n=3, match=is_part)
    with pytest.raises(StorageError) as err:
        store.put_file("big/two.bin", path)
    assert "faults/big/two.bin" in str(err.value)
    assert s3.proxy.injected["500"] == 3
    assert set(s3.objects(bucket)) == {"faults/big/one.bin"}
    assert s3.raw().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    store.put_file("big/two.bin", path)
    assert s3.objects(bucket)["faults/big/two.bin"] == data
    _figure(
        "S3 multipart: lost Complete answer -> one whole object; part failing 3x -> "
        "clear error, upload aborted, no object"
    )


# ------------------------------------------------------------------------------ MLflow


@dataclass
class Mlflow:
    root: Path
    port: int
    backend: str
    artifacts: str
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180.0) -> None:
        """``mlflow server`` on this port and backend (again, after a kill)."""
        cmd = [
            str(VENV_BIN / "mlflow"),
            "server",
            "--backend-store-uri",
            self.backend,
            "--artifacts-destination",
            self.artifacts,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        self.starts += 1
        log = self.root / f"server-{self.starts}.log"
        with open(log, "wb") as fh:
            self.proc = subprocess.Popen(
                cmd,
                stdout=fh,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited early:\n{log.read_text()[-3000:]}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.url}/health", timeout=2) as r,
            ):
                if r.status == 200:
                    return
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(
            f"mlflow server not healthy after {timeout} s:\n{log.read_text()[-3000:]}"
        )

    def kill(self) -> None:
        """SIGKILL the server's process group: a crash, nothing flushed."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process_group(self.proc)


@pytest.fixture(scope="module")
def mlflow_s3(s3: S3, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mlflow]:
    """An MLflow server (SQLite) whose artifacts go to S3 through the fault proxy."""
    root = tmp_path_factory.mktemp("mlflow-faults")
    bucket = s3.bucket()
    server = Mlflow(
        root,
        free_port(),
        f"sqlite:///{root / 'mlflow.db'}",
        f"s3://{bucket}/mlartifacts",
        {
            **CREDS,
            "MLFLOW_S3_ENDPOINT_URL": s3.proxy.url,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_RETRY_MODE": "standard",
            "AWS_MAX_ATTEMPTS": "2",
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        },
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _train_args(out: Path, name: str, url: str, cycles: int) -> list[str]:
    from tests.training.helpers import TINY

    settings = [s for s in TINY if not s.startswith(("schedule.max_cycles", "model.hidden"))]
    settings += [
        f"schedule.max_cycles={cycles}",  # 3: 100 steps, 4: 168
        "model.hidden=[64,64]",
        f"mlflow.tracking_uri={url}",
        "mlflow.experiment=faults-services",
    ]
    args = [sys.executable, "-m", "training", "train", "--run-name", name, "--output-dir", str(out)]
    for item in settings:
        args += ["--set", item]
    return args


def _lr_lines(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return 0
    return sum('"lr"' in line for line in path.read_text().splitlines())


@dataclass(frozen=True)
class OutageRun:
    proc: subprocess.CompletedProcess[str]
    run_dir: Path
    outage_s: float
    killed_at_lr_lines: int
    running_at_kill: bool
    wall_s: float


def _run_with_outage(
    server: Mlflow,
    out: Path,
    name: str,
    outage_s: float | None,
    env: dict[str, str] | None = None,
    cycles: int = 3,
) -> OutageRun:
    """Train as a subprocess; kill the server once steps are committed; start it again
    after ``outage_s`` (0: at once; the downtime is then its start-up, 20-40 s here;
    None: only once the job has ended). The outage reported is kill to healthy."""
    run_dir = out / name
    started = time.monotonic()
    with open(out / f"{name}.stdout", "w") as so, open(out / f"{name}.stderr", "w") as se:
        job = subprocess.Popen(
            _train_args(out, name, server.url, cycles),
            cwd=ROOT,
            stdout=so,
            stderr=se,
            text=True,
            env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 180
            while _lr_lines(run_dir) < 10 and job.poll() is None:
                assert time.monotonic() < deadline, "training committed no step in 180 s"
                time.sleep(0.05)
            killed_at = _lr_lines(run_dir)
            running = job.poll() is None
            server.kill()
            down = time.monotonic()
            if outage_s is None:
                job.wait(timeout=600)
            else:
                time.sleep(max(0.0, outage_s - (time.monotonic() - down)))
            server.start()
            outage = time.monotonic() - down
            job.wait(timeout=600)
        finally:
            stop_process_group(job)  # type: ignore[arg-type]
    proc = subprocess.CompletedProcess(
        job.args,
        job.returncode,
        (out / f"{name}.stdout").read_text(),
        (out / f"{name}.stderr").read_text(),
    )
    return OutageRun(proc, run_dir, outage, killed_at, running, time.monotonic() - started)


@pytest.fixture(scope="module")
def outage_run(
    mlflow_s3: Mlflow, fault_mode: Any, tmp_path_factory: pytest.TempPathFactory
) -> OutageRun:
    out = tmp_path_factory.mktemp("outage-runs")
    return _run_with_outage(
        mlflow_s3,
        out,
        "outage",
        float(fault_mode.pick(0, 30)),
        cycles=int(fault_mode.pick(3, 4)),
    )


def _mlflow_lr(url: str, run_id: str) -> list[tuple[int, float]]:
    from mlflow import MlflowClient

    history = MlflowClient(url).get_metric_history(run_id, "lr")
    return sorted((m.step, m.value) for m in history)


def test_mlflow_stopped_mid_run_loses_and_duplicates_nothing(
    outage_run: OutageRun, mlflow_s3: Mlflow
) -> None:
    """The server is SIGKILLed once the job has committed steps, restarted on the same
    port and database after the outage: the job finishes, MLflow holds every step's
    ``lr`` exactly once, equal to the local metrics.jsonl, and the run is FINISHED."""
    from mlflow import MlflowClient

    from tests.training.helpers import lr_trace

    run = outage_run
    assert run.proc.returncode == 0, run.proc.stdout[-2000:] + run.proc.stderr[-3000:]
    assert run.running_at_kill
    result = json.loads((run.run_dir / "result.json").read_text())
    assert result["status"] == "completed"
    local = lr_trace(run.run_dir)
    assert [s for s, _ in local] == list(range(result["steps_done"]))
    remote = _mlflow_lr(mlflow_s3.url, result["mlflow_run_id"])
    assert len(remote) == len(local) == result["steps_done"]
    assert remote == sorted(local)
    client = MlflowClient(mlflow_s3.url)
    info = client.get_run(result["mlflow_run_id"]).info
    assert info.status == "FINISHED"
    ckpts = {a.path for a in client.list_artifacts(info.run_id, "checkpoints")}
    cycles = len(result["cycles"])
    assert ckpts == {f"checkpoints/best-cycle-{c:02d}.ckpt" for c in range(cycles)}
    assert f"MLflow at {mlflow_s3.url} unreachable" in run.proc.stderr
    assert "giving up" not in run.proc.stderr
    _figure(
        f"MLflow server SIGKILLed {run.outage_s:.0f} s at lr line {run.killed_at_lr_lines} "
        f"of {len(local)}: job rc 0 in {run.wall_s:.0f} s, {len(remote)}/{len(local)} lr "
        f"steps in MLflow, each once; {cycles}/{cycles} checkpoints logged"
    )


def test_mlflow_outage_beyond_the_retry_budget_fails_telemetry_clearly(
    mlflow_s3: Mlflow, outage_run: OutageRun, fault_mode: Any, tmp_path: Path
) -> None:
    """The server stays down past the sender's retry budget (3 s) until the job ends:
    the job still finishes (the model does not depend on MLflow) and says, naming the
    tracking URI, that MLflow did not take everything; MLflow keeps a prefix of the
    steps, each once (no hole a resume could not fill)."""
    if not fault_mode.long:
        pytest.skip("long mode only (FAULTS=long): one more training job and server restart")
    from tests.training.helpers import lr_trace

    run = _run_with_outage(
        mlflow_s3,
        tmp_path,
        "beyond-budget",
        None,
        env={"COSINE_RETRAIN_TELEMETRY_MAX_WAIT_S": "3"},
    )
    stderr = run.proc.stderr
    assert run.proc.returncode == 0, run.proc.stdout[-2000:] + stderr[-3000:]
    assert f"MLflow at {mlflow_s3.url}" in stderr
    assert "giving up on a telemetry call" in stderr or "could not create the run" in stderr
    assert f"MLflow at {mlflow_s3.url} did not take every telemetry call" in stderr
    local = [s for s, _ in lr_trace(run.run_dir)]
    result = json.loads((run.run_dir / "result.json").read_text())
    remote: list[tuple[int, float]] = []
    if result.get("mlflow_run_id"):
        remote = _mlflow_lr(mlflow_s3.url, result["mlflow_run_id"])
    steps = [s for s, _ in remote]
    assert steps == local[: len(steps)], "MLflow holds a hole or a duplicate"
    assert len(steps) < len(local)
    _figure(
        f"MLflow down past the 3 s budget until the job ended: rc 0, clear error naming "
        f"{mlflow_s3.url}; MLflow kept a prefix of {len(steps)}/{len(local)} steps, no dupes"
    )


# ------------------------------------------------------------------------------ registry


@pytest.fixture(scope="module")
def registry(
    mlflow_s3: Mlflow, outage_run: OutageRun, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """The outage run's checkpoints, an MLflow API proxy, a local store, the holdout."""
    from mlflow import MlflowClient

    from pipeline.base.store import LocalStore
    from pipeline.steps.registry.holdout import training_holdout
    from training.data.spec import load_spec

    assert outage_run.proc.returncode == 0
    result = json.loads((outage_run.run_dir / "result.json").read_text())
    spec = load_spec(ROOT / "configs" / "datasets" / "flights.yaml")
    proxy = FaultProxy("127.0.0.1", mlflow_s3.port)
    client = MlflowClient(tracking_uri=proxy.url, registry_uri=proxy.url)
    home = tmp_path_factory.mktemp("registry-home")
    holdout = training_holdout(client, result["mlflow_run_id"], spec)
    try:
        yield {
            "client": client,
            "proxy": proxy,
            "store": LocalStore(home / "store"),
            "spec": spec,
            "run_id": result["mlflow_run_id"],
            "finals": sum(1 for c in result["cycles"] if c.get("final")),
            "holdout": holdout,
        }
    finally:
        proxy.stop()


def _state(client: Any, name: str, run_id: str) -> tuple[list[Any], dict[str, str]]:
    from mlflow.exceptions import MlflowException

    versions = client.search_model_versions(f"name='{name}' and tags.training_run_id='{run_id}'")
    try:
        aliases = dict(client.get_registered_model(name).aliases)
    except MlflowException:
        aliases = {}
    return sorted(versions, key=lambda v: int(v.version)), aliases


def _assert_whole(client: Any, name: str, run_id: str, tmp: Path) -> list[Any]:
    """Every version has its artifacts (MLmodel + checkpoints that load), one version per
    candidate, and every alias points at one of them."""
    import mlflow

    from training.checkpoint.files import load_checkpoint

    versions, aliases = _state(client, name, run_id)
    candidates = [v.tags["candidate"] for v in versions]
    assert len(candidates) == len(set(candidates)), f"duplicate versions: {candidates}"
    mlflow.set_tracking_uri(client.tracking_uri)
    for v in versions:
        dest = Path(
            mlflow.artifacts.download_artifacts(
                f"models:/{name}/{v.version}", dst_path=str(tmp / v.version)
            )
        )
        assert (dest / "MLmodel").is_file()
        ckpts = sorted(dest.rglob("*.ckpt"))
        assert ckpts, f"v{v.version} has no checkpoint"
        for c in ckpts:
            load_checkpoint(c)  # checksum verified
    numbers = {str(v.version) for v in versions}
    for alias, target in aliases.items():
        assert str(target) in numbers, f"{alias} -> v{target}, which is not a version of the run"
    return versions


def _after(k: int, match: Callable[[Request], bool]) -> Callable[[Request], bool]:
    """Match ``match`` requests from the (k+1)-th on (the first k go through)."""
    seen = {"n": 0}

    def check(r: Request) -> bool:
        if not match(r):
            return False
        seen["n"] += 1
        return seen["n"] > k

    return check


def _is_artifact_put(r: Request) -> bool:
    return r.method == "PUT" and "/mlartifacts/" in r.path


def _is_create_version(r: Request) -> bool:
    return r.method == "POST" and r.path.startswith("/api/2.0/mlflow/model-versions/create")


def test_registration_under_faults_leaves_no_partial_state(
    registry: dict[str, Any],
    s3: S3,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """1. S3 under the artifact store fails mid-upload: registration fails, no version,
    no alias. 2. The answer to a create-version call is lost (the client retries it) and
    then the server is unreachable: registration fails clearly. 3. Retried, it completes
    with exactly one version per candidate, aliases on existing versions, artifacts
    that download and load. 4. Once more: nothing new."""
    from mlflow.exceptions import MlflowException

    from pipeline.steps.registry.aliases import CHALLENGER, RegistryError, alias_history
    from pipeline.steps.registry.registration import register_training_run

    # the client's own retries: one, at once (the server's S3 client tries twice)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    client, proxy, store = registry["client"], registry["proxy"], registry["store"]
    run_id, spec, holdout = registry["run_id"], registry["spec"], registry["holdout"]
    name = f"faults_{uuid.uuid4().hex[:6]}"

    def register() -> Any:
        return register_training_run(
            client, store, spec, run_id, name=name, holdout=holdout, work=tmp_path / "work"
        )

    # 1. artifact uploads to S3 fail after the first 3 went through
    s3.proxy.clear()
    s3.proxy.fail(503, n=10_000, match=_after(3, _is_artifact_put))
    with pytest.raises((MlflowException, RegistryError)):
        register()
    upload_failures = s3.proxy.injected["503"]
    s3.proxy.clear()
    assert upload_failures >= 1
    versions, aliases = _state(client, name, run_id)
    assert versions == []
    assert aliases == {}
    assert alias_history(store, name) == []

    # 2. the first create-version answer is lost (retried by the client: a duplicate
    #    unless the registry undoes it); the second create goes through but the server
    #    becomes unreachable at once
    proxy.drop_response(n=1, match=_is_create_version)
    second = _after(1, _is_create_version)

    def down_after_second(r: Request) -> bool:
        if second(r):
            proxy.close_port()  # refused from now on (this request still completes)
            return True
        return False

    proxy.drop_response(n=1, match=down_after_second)
    with pytest.raises((MlflowException, RegistryError)) as err:
        register()
    assert str(proxy.port) in str(err.value), err.value
    assert proxy.injected["drop"] == 2
    proxy.open_port()
    partial = _assert_whole(client, name, run_id, tmp_path / "partial")
    assert 1 <= len(partial) <= 2
    assert alias_history(store, name) == []

    # 3. retried: completes, one version per candidate
    first = register()
    expected = registry["finals"] + (1 if first.ensemble.get("registered") else 0)
    assert len(first.versions) == expected
    assert sum(v.created for v in first.versions) == expected - len(partial)
    versions = _assert_whole(client, name, run_id, tmp_path / "whole")
    assert len(versions) == expected
    _, aliases = _state(client, name, run_id)
    assert aliases == {CHALLENGER: first.challenger.version}
    assert [m.to_version for m in alias_history(store, name)] == [first.challenger.version]

    # 4. once more: idempotent
    again = register()
    assert not any(v.created for v in again.versions)
    assert [v.version for v in again.versions] == [v.version for v in first.versions]
    assert len(_state(client, name, run_id)[0]) == expected
    assert len(alias_history(store, name)) == 1
    _figure(
        f"registry: S3 artifact PUTs failing mid-upload ({upload_failures} x 503) -> "
        f"0 versions, 0 aliases; lost create answer + server gone -> {len(partial)} whole "
        f"version(s), no duplicate; retried -> {expected} versions, challenger on an existing "
        "one, artifacts load; re-run creates 0"
    )


# ------------------------------------------------------------------------------ PostgreSQL


def _pg_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return found[-1].parent if found else None


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", "postgres", "--", *cmd]
    return ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(cmd)]


def _pg_skip_reason() -> str | None:
    if _pg_bin() is None:
        return "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin"
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run initdb as"
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "psycopg2 is not installed"
    return None


@dataclass
class PrivatePostgres:
    bin: Path
    data: Path
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/airflow"

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), *args]
        return subprocess.run(
            _as_postgres(cmd), capture_output=True, text=True, timeout=120, check=check
        )

    def pid(self) -> int | None:
        pidfile = self.data / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int(pidfile.read_text().splitlines()[0])
        return None


@pytest.fixture
def private_postgres(fault_mode: Any) -> Iterator[PrivatePostgres]:
    """A PostgreSQL cluster of its own (never the machine's shared one) on a free port."""
    if not fault_mode.long:
        pytest.skip("long mode only (FAULTS=long): Airflow on a fresh PostgreSQL takes minutes")
    why = _pg_skip_reason()
    if why:
        pytest.skip(why)
    # Not under pytest's tmp folder: that one is private to root (0700), and initdb runs
    # as 'postgres', which must be able to enter every parent of the cluster's directory.
    base = Path(tempfile.mkdtemp(prefix="faults-private-pg-", dir="/tmp"))
    try:
        os.chmod(base, 0o755)
        data = base / "data"
        pg = PrivatePostgres(_pg_bin(), data, free_port(), base / "pg.log")  # type: ignore[arg-type]
        if os.geteuid() == 0:
            import pwd

            user = pwd.getpwnam("postgres")
            os.chown(base, user.pw_uid, user.pw_gid)
        for parent in base.parents:
            mode = parent.stat().st_mode
            assert mode & 0o001, f"{parent} is not traversable by others (mode {mode:o})"
        init = subprocess.run(
            _as_postgres(
                [str(pg.bin / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"]
            ),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert init.returncode == 0, f"initdb failed: {init.stderr.strip()[-1500:]}"
    except BaseException:
        shutil.rmtree(base, ignore_errors=True)
        raise
    opts = f"-p {pg.port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
    pg.opts = opts  # type: ignore[attr-defined]
    try:
        pg.ctl("-o", opts, "-w", "start")
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=pg.port, user="postgres", dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE DATABASE airflow")
        conn.close()
        yield pg
    finally:
        pg.ctl("-m", "immediate", "stop", check=False)
        pid = pg.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)


TINY_DAG = """
from __future__ import annotations
import time
import pendulum
from airflow.sdk import dag, task

@dag(dag_id="pg_restart_probe", schedule=None, catchup=False,
     start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
     default_args={"retries": 3, "retry_delay": pendulum.duration(seconds=2)})
def pg_restart_probe():
    @task
    def slow(i: int) -> int:
        time.sleep(SLOW_S)
        return i

    @task
    def total(values: list[int]) -> int:
        return sum(values)

    total(slow.expand(i=[1, 2, 3, 4]))

pg_restart_probe()
"""

COMPONENTS = ("api-server", "dag-processor", "scheduler")
UNFINISHED = {"running", "queued", "scheduled", "up_for_retry", "up_for_reschedule", "restarting"}


def _stop_group(proc: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    """TERM the process group we started, then KILL what is left; also when its leader is
    already gone (a scheduler that died leaves its LocalExecutor workers in the group)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


def test_postgres_restart_under_the_scheduler(
    private_postgres: PrivatePostgres, fault_mode: Any, tmp_path: Path
) -> None:
    """PostgreSQL (a private cluster) is restarted while a DAG run is in flight under a
    LocalExecutor scheduler: the run ends in success (or fails, naming the database),
    and no task is left running, queued or waiting."""
    if not fault_mode.long:
        pytest.skip("long mode only (FAULTS=long): Airflow on a fresh PostgreSQL takes minutes")
    import psycopg2

    pg = private_postgres
    outage = float(fault_mode.pick(5, 20))
    slow_s = int(outage) + 30  # the mapped tasks are still running when the database returns
    home = tmp_path / "airflow"
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "probe.py").write_text(TINY_DAG.replace("SLOW_S", str(slow_s)))
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": pg.url,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_POOL_PRE_PING": "True",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(free_port()),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        # every component signs and checks the task tokens of the execution API with it
        "AIRFLOW__API_AUTH__JWT_SECRET": uuid.uuid4().hex,
        "AIRFLOW__API__SECRET_KEY": uuid.uuid4().hex,
    }
    env["AIRFLOW__API__BASE_URL"] = f"http://127.0.0.1:{env['AIRFLOW__API__PORT']}"
    env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = f"{env['AIRFLOW__API__BASE_URL']}/execution/"
    airflow = str(VENV_BIN / "airflow")
    migrate = subprocess.run(
        [airflow, "db", "migrate"], env=env, capture_output=True, text=True, timeout=600
    )
    assert migrate.returncode == 0, migrate.stdout[-2000:] + migrate.stderr[-3000:]

    def query(sql: str, *args: Any) -> list[tuple[Any, ...]] | None:
        """Rows from the private cluster, read directly; None while it cannot be reached."""
        try:
            conn = psycopg2.connect(
                host="127.0.0.1", port=pg.port, user="postgres", dbname="airflow", connect_timeout=5
            )
        except psycopg2.OperationalError:
            return None
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                return list(cur.fetchall())
        except psycopg2.Error:
            return None
        finally:
            conn.close()

    procs: dict[str, subprocess.Popen[bytes]] = {}
    started: list[subprocess.Popen[bytes]] = []  # every one, replacements included
    restarts: list[str] = []
    logs = tmp_path / "logs"
    logs.mkdir()

    def start(component: str) -> None:
        with open(logs / f"{component}.log", "ab") as fh:
            proc = subprocess.Popen(
                [airflow, component],
                env=env,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        procs[component] = proc
        started.append(proc)

    def log_tail(component: str, n: int = 3000) -> str:
        return (logs / f"{component}.log").read_text(errors="replace")[-n:]

    run_id = f"pg-restart-{uuid.uuid4().hex[:6]}"

    def tasks() -> dict[str, tuple[str, int]] | None:
        rows = query(
            "SELECT task_id, map_index, state, try_number FROM task_instance "
            "WHERE dag_id = 'pg_restart_probe' AND run_id = %s",
            run_id,
        )
        if rows is None:
            return None
        return {f"{t}[{m}]": (str(st), int(n or 0)) for t, m, st, n in rows}

    def run_state() -> str | None:
        rows = query(
            "SELECT state FROM dag_run WHERE dag_id = 'pg_restart_probe' AND run_id = %s", run_id
        )
        return str(rows[0][0]) if rows else None

    try:
        for component in COMPONENTS:
            start(component)
        deadline = time.monotonic() + 300
        while not query("SELECT 1 FROM dag WHERE dag_id = 'pg_restart_probe'"):
            assert time.monotonic() < deadline, "the DAG was never parsed\n" + log_tail(
                "dag-processor"
            )
            time.sleep(2)
        trig = subprocess.run(
            [airflow, "dags", "trigger", "pg_restart_probe", "--run-id", run_id],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert trig.returncode == 0, trig.stdout[-2000:] + trig.stderr[-2000:]

        # the fault lands while the four mapped tasks run (each sleeps slow_s)
        deadline = time.monotonic() + 300
        while True:
            now = tasks() or {}
            if sum(st == "running" for st, _ in now.values()) >= 4:
                break
            assert time.monotonic() < deadline, (
                f"the four mapped tasks never ran together in 300 s: {now}\n"
                + log_tail("scheduler")
            )
            assert run_state() != "failed", (now, log_tail("scheduler"))
            time.sleep(1)
        before = tasks()
        t_stop = time.monotonic()
        stop = pg.ctl("-m", "fast", "stop", check=False)
        assert stop.returncode == 0, stop.stderr
        assert query("SELECT 1") is None, "the private PostgreSQL still answers after a stop"
        time.sleep(max(0.0, outage - (time.monotonic() - t_stop)))
        begin = pg.ctl("-o", pg.opts, "-w", "start", check=False)  # type: ignore[attr-defined]
        assert begin.returncode == 0, begin.stderr
        down_s = time.monotonic() - t_stop
        back = time.monotonic()
        back_at = query("SELECT now()")
        assert back_at, "the private PostgreSQL does not answer after its restart"

        # the scheduler recovers when a SchedulerJob heartbeats after the restart, be it the
        # same process (it reconnected) or a replacement (it died and was started again)
        recovered_s: float | None = None
        final: str | None = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            for component in COMPONENTS:
                if procs[component].poll() is not None:
                    # a component that died with the database is what a supervisor restarts
                    restarts.append(f"{component} (exit {procs[component].returncode})")
                    start(component)
            if recovered_s is None and query(
                "SELECT 1 FROM job WHERE job_type = 'SchedulerJob' AND latest_heartbeat > %s",
                back_at[0][0],
            ):
                recovered_s = time.monotonic() - back
            final = run_state()
            if final in ("success", "failed"):
                break
            time.sleep(2)
        after = tasks() or {}
        detail = (
            f"run {final!r}, tasks {after} (before the stop: {before}), restarts {restarts}\n"
            f"--- scheduler\n{log_tail('scheduler')}\n--- api-server\n{log_tail('api-server')}"
        )
        assert final in ("success", "failed"), "the run never ended: " + detail
        assert recovered_s is not None, "no scheduler heartbeat after the restart: " + detail
        assert len(after) == 5, detail  # 4 mapped slow + total
        stuck = {k: st for k, (st, _) in after.items() if st in UNFINISHED or st == "None"}
        assert not stuck, f"tasks left unfinished: {stuck}\n" + detail
        if final == "success":
            assert {st for st, _ in after.values()} == {"success"}, detail
        else:
            # a failed run must say why: the database, in a task's log or the scheduler's
            texts = [log_tail(c, 200_000) for c in COMPONENTS]
            texts += [p.read_text(errors="replace") for p in home.glob("logs/**/*.log")]
            named = [
                w
                for w in ("OperationalError", "could not connect", "connection", "database")
                if any(w in t for t in texts)
            ]
            assert named, "the run failed and no log names the database: " + detail
        tries = {k: n for k, (_, n) in after.items()}
        _figure(
            f"PostgreSQL restarted ({down_s:.0f} s down) under a LocalExecutor scheduler with "
            f"4 mapped tasks running: scheduler heartbeating again {recovered_s:.0f} s after "
            f"the restart, run {final}, states {sorted({st for st, _ in after.values()})}, "
            f"tries {tries}, components restarted: {restarts or 'none'}"
        )
    finally:
        for proc in started:
            _stop_group(proc)
