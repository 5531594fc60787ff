"""Security: safe loading, no secret in the repository or in logs, params that never
reach a shell, authentication on every service of the compose stack.

The issue: "checkpoints and models load only with weights_only=True or MLflow's
own loaders; no secret in the repository or in logs (a test greps the
repository and the demo's logs for the configured secrets); DAG params are
validated and never reach a shell; the compose stack has authentication on
Airflow, MLflow and MinIO."

Compose authentication is already pinned by tests/infra/test_compose.py (read,
not repeated here): Airflow's SimpleAuthManager with a passwords file and no
``SIMPLE_AUTH_MANAGER_ALL_ADMINS`` (test_airflow_components_run_as_separate_services_on_postgres,
test_no_literal_password_in_any_service), MLflow's ``--app-name basic-auth``
with clients that log in (test_mlflow_server_uses_postgres_minio_and_basic_auth),
MinIO's root credentials required from .env and held by no application
(test_secrets_are_required_and_never_have_a_default,
test_minio_bucket_is_created_and_apps_never_hold_root). What it leaves open is
checked below: no well-known default credential anywhere in the deploy files.
"""

from __future__ import annotations

import ast
import http.server
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tests.support import airflow_script

ROOT = Path(__file__).resolve().parents[2]
CODE = ("training", "pipeline", "dags")


def _sources() -> list[Path]:
    files = [p for d in CODE for p in (ROOT / d).rglob("*.py")]
    assert len(files) > 30, files  # the scan sees the code, not an empty folder
    return files


def _calls(path: Path) -> Iterator[tuple[str, ast.Call]]:
    """(dotted name of the callee, call) for every call in a file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            parts: list[str] = []
            f: Any = node.func
            while isinstance(f, ast.Attribute):
                parts.append(f.attr)
                f = f.value
            if isinstance(f, ast.Name):
                parts.append(f.id)
            yield ".".join(reversed(parts)), node


def _kw(call: ast.Call, name: str) -> Any:
    for k in call.keywords:
        if k.arg == name:
            return k.value.value if isinstance(k.value, ast.Constant) else k.value
    return None


# ------------------------------------------------------------------------------ loading


UNSAFE_LOADERS = {
    "pickle.load",
    "pickle.loads",
    "cPickle.load",
    "dill.load",
    "dill.loads",
    "cloudpickle.load",
    "cloudpickle.loads",
    "joblib.load",
    "pd.read_pickle",
    "pandas.read_pickle",
    "marshal.loads",
    "shelve.open",
    "yaml.load",  # yaml.safe_load is the one to use
    "yaml.unsafe_load",
}


def test_every_torch_load_uses_weights_only_and_nothing_unpickles() -> None:
    torch_loads, unsafe = [], []
    for path in _sources():
        for name, call in _calls(path):
            where = f"{path.relative_to(ROOT)}:{call.lineno}"
            if name.endswith("torch.load"):
                torch_loads.append(where)
                if _kw(call, "weights_only") is not True:
                    unsafe.append(f"{where}: torch.load without weights_only=True")
            elif name in UNSAFE_LOADERS:
                unsafe.append(f"{where}: {name}")
            elif name.endswith(("np.load", "numpy.load")) and _kw(call, "allow_pickle") is True:
                unsafe.append(f"{where}: {name}(allow_pickle=True)")
            elif name.endswith(("pyfunc.load_model", "pytorch.load_model")):
                pass  # MLflow's own loaders (allowed by the issue)
    assert not unsafe, unsafe
    assert torch_loads, "no torch.load found: the scan is not looking at the checkpoint code"


def test_the_scan_catches_an_unsafe_load(tmp_path: Path) -> None:
    """The scanner itself: the patterns it must refuse are refused."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import torch, pickle\n"
        "torch.load(p)\n"
        "torch.load(p, weights_only=False)\n"
        "pickle.loads(b)\n"
        "torch.load(p, weights_only=True)\n"
    )
    found = [
        (name, _kw(c, "weights_only"))
        for name, c in _calls(bad)
        if name.endswith("torch.load") or name in UNSAFE_LOADERS
    ]
    assert found == [
        ("torch.load", None),
        ("torch.load", False),
        ("pickle.loads", None),
        ("torch.load", True),
    ]


# ------------------------------------------------------------------------------ shells


def _shell_uses(path: Path) -> list[str]:
    bad = []
    for name, call in _calls(path):
        where = f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name}"
        where += f":{call.lineno}"
        if name in ("os.system", "os.popen", "os.execl", "os.execlp", "commands.getoutput"):
            bad.append(f"{where}: {name}")
        elif name.startswith("subprocess.") or name in ("Popen", "run", "check_output"):
            shell = _kw(call, "shell")
            if shell is not None and shell is not False:
                bad.append(f"{where}: {name}(shell=...)")
            if call.args and isinstance(call.args[0], ast.JoinedStr | ast.BinOp):
                bad.append(f"{where}: {name} with a command built from strings")
    return bad


def test_no_shell_anywhere_params_could_reach() -> None:
    bad = [b for path in _sources() for b in _shell_uses(path)]
    assert not bad, bad


def test_the_shell_scan_catches_a_shell(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import os, subprocess\n"
        "os.system('ls ' + p)\n"
        "subprocess.run(f'ls {p}', shell=True)\n"
        "subprocess.run(['ls', p])\n"
    )
    assert len(_shell_uses(bad)) == 3, _shell_uses(bad)


# ------------------------------------------------------------------------------ DAG params

HOSTILE: list[Any] = [
    "; rm -rf /",
    "$(id)",
    "`id`",
    "../..",
    "a|b",
    "x" * 20_000,
    "\n--set run_name=evil",
    12345,
    3.5,
    True,
    {"a": 1},
    ["x"],
]

PARAMS = textwrap.dedent(
    """
    import copy, json, sys
    from pathlib import Path
    from airflow.dag_processing.dagbag import BundleDagBag
    from airflow.sdk.exceptions import ParamValidationError

    folder = Path(sys.argv[1])
    hostile = json.loads(sys.argv[2])
    bag = BundleDagBag(folder, bundle_path=folder)
    assert not bag.import_errors, bag.import_errors
    out = {}
    for dag_id, dag in sorted(bag.dags.items()):
        for name in dag.params:
            for i, value in enumerate(hostile):
                params = copy.deepcopy(dag.params)
                try:  # what DagRun creation does with a run's conf (REST, UI, CLI, dag.test)
                    params.update({name: value})
                    params.validate()
                    verdict = "accepted"
                except (ParamValidationError, ValueError, TypeError) as exc:
                    verdict = "refused"
                out[f"{dag_id}.{name}.{i}"] = verdict
    print(json.dumps(out))
    """
)

# free text by design (recorded, never executed): a shell string is a valid reason, and an
# ingest source is a path or a URI; everything else is an identifier, an enum or a flag
FREE_TEXT = {"retrain.reason": 500, "ingest.source": 1024}


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("airflow-params")
    return airflow_script(PARAMS, str(ROOT / "dags"), json.dumps(HOSTILE), home=home)


def test_every_identifier_param_refuses_hostile_values(verdicts: dict[str, str]) -> None:
    params = sorted({k.rsplit(".", 1)[0] for k in verdicts})
    assert {"retrain.until", "retrain.trigger", "ingest.batch_id", "drift_monitor.batch_id"} <= set(
        params
    )
    accepted = []
    for param in params:
        for i, value in enumerate(HOSTILE):
            if verdicts[f"{param}.{i}"] == "refused":
                continue
            text = str(value)
            if param in FREE_TEXT and isinstance(value, str) and len(text) <= FREE_TEXT[param]:
                continue  # a string within its maxLength: data, not a command
            accepted.append(f"{param} = {text[:40]!r}")
    assert not accepted, accepted


def test_free_text_params_are_bounded_and_typed(verdicts: dict[str, str]) -> None:
    for param in FREE_TEXT:
        long_one = HOSTILE.index("x" * 20_000)
        assert verdicts[f"{param}.{long_one}"] == "refused", param
        for i, value in enumerate(HOSTILE):
            if not isinstance(value, str):
                assert verdicts[f"{param}.{i}"] == "refused", (param, value)


# ------------------------------------------------------------------------------ secrets


AWS_KEY = re.compile(rb"\b(AKIA|ASIA)[0-9A-Z]{16}\b")
PRIVATE_KEY = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----")
SLACK_HOOK = re.compile(rb"https://hooks\.slack\.com/services/T[0-9A-Z]{8,}/B[0-9A-Z]{8,}/\w{20,}")
ASSIGNED = re.compile(
    rb"(?i)\b(password|passwd|secret|token|api_key|secret_access_key)\b\s*[:=]\s*['\"]([^'\"\s]{12,})['\"]"
)
# placeholders and the test suite's own throwaway values
ALLOWED = re.compile(
    rb"testing|example|placeholder|changeme|dummy|fake|\$\{|<[a-z_]+>|x{6,}|s3cr3t|faults-"
    rb"|^cosine-retrain-[a-z-]+$"  # names of Kubernetes secrets, not values
)


def test_no_credential_in_any_tracked_file() -> None:
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    found = []
    for name in filter(None, files):
        path = ROOT / name.decode()
        if not path.is_file() or path.stat().st_size > 5_000_000:
            continue
        data = path.read_bytes()
        for pattern in (AWS_KEY, PRIVATE_KEY, SLACK_HOOK):
            for m in pattern.finditer(data):
                if b"EXAMPLE" not in m.group(0):
                    found.append(f"{name.decode()}: {m.group(0)[:24]!r}")
        for m in ASSIGNED.finditer(data):
            if not ALLOWED.search(m.group(2)):
                found.append(f"{name.decode()}: {m.group(0)[:60]!r}")
    assert not found, found
    assert (ROOT / ".env.example").is_file()
    assert not (ROOT / ".env").exists() or ".env" not in [f.decode() for f in files], (
        ".env is tracked"
    )


def test_no_well_known_default_credential_in_the_deploy_files() -> None:
    text = "\n".join(
        p.read_text(errors="replace")
        for p in [ROOT / "docker-compose.yml", ROOT / ".env.example", *(ROOT / "infra").rglob("*")]
        if p.is_file() and p.suffix not in (".png", ".json")
    )
    for default in ("minioadmin", "password1234", "airflow:airflow@", "admin:admin"):
        assert default not in text, default
    assert "default_permission = ${MLFLOW_AUTH_DEFAULT_PERMISSION:-READ}" in text  # not EDIT


ACCESS_KEY_ID = "AKIA-FAULTS-SUITE-ID"


class _Hook(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        # the path carries the URL token (that is where it belongs); record the rest
        headers = "\n".join(f"{k}: {v}" for k, v in self.headers.items())
        _Hook.received.append(headers.encode() + b"\n\n" + body)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


STEPS = textwrap.dedent(
    """
    import logging
    logging.basicConfig(level=logging.INFO)
    from pipeline.flow import build_env, land, validate
    from pipeline.steps.quality.validation import ValidationFailed
    env = build_env()
    print(env.config.describe())         # what `describe` shows a person debugging
    print(land(env, "2013-01"))
    print(land(env, BAD, batch_id="bad1"))
    try:
        validate(env, "bad1")            # fails: quarantine + a validation_failed alert
    except ValidationFailed as exc:
        print(exc)
    """
)


def test_configured_secrets_appear_in_no_log_output_or_stored_object(
    tmp_path: Path, fault_mode: Any
) -> None:
    """Distinctive secrets in every place the project reads one, a short pipeline run
    (land, a bad batch, validation, its alert over webhook and Slack), then a grep of
    the output, every file under the home and every object in the bucket."""
    import boto3
    from moto.server import ThreadedMotoServer

    from tests.support import free_port

    tag = uuid.uuid4().hex[:10]
    secrets = {
        "COSINE_RETRAIN_STORAGE__SECRET_ACCESS_KEY": f"storage-secret-{tag}",
        "COSINE_RETRAIN_ALERTS__WEBHOOK_SECRET": f"hmac-secret-{tag}",
        "COSINE_RETRAIN_ALERTS__SMTP_PASSWORD": f"smtp-password-{tag}",
        "MLFLOW_TRACKING_PASSWORD": f"mlflow-password-{tag}",
        "AWS_SECRET_ACCESS_KEY": f"aws-secret-{tag}",
    }
    hook_port = free_port()
    url_tokens = {
        "COSINE_RETRAIN_ALERTS__WEBHOOK_URL": f"webhook-token-{tag}",
        "COSINE_RETRAIN_ALERTS__SLACK_WEBHOOK_URL": f"slack-token-{tag}",
    }
    server = http.server.ThreadingHTTPServer(("127.0.0.1", hook_port), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    s3_port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=s3_port, verbose=False)
    moto.start()
    _Hook.received = []
    try:
        endpoint = f"http://127.0.0.1:{s3_port}"
        bucket = f"sec-{tag}"
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=secrets["COSINE_RETRAIN_STORAGE__SECRET_ACCESS_KEY"],
        )
        s3.create_bucket(Bucket=bucket)
        bad = tmp_path / "bad.csv"
        from training.data.flights import load_months

        load_months([2])[0].head(2000).drop(columns=["temp"]).to_csv(bad, index=False)
        home = tmp_path / "home"
        env = {
            **os.environ,
            **secrets,
            "COSINE_RETRAIN_ALERTS__WEBHOOK_URL": (
                f"http://127.0.0.1:{hook_port}/hook/{url_tokens['COSINE_RETRAIN_ALERTS__WEBHOOK_URL']}"
            ),
            "COSINE_RETRAIN_ALERTS__SLACK_WEBHOOK_URL": (
                f"http://127.0.0.1:{hook_port}/slack/"
                f"{url_tokens['COSINE_RETRAIN_ALERTS__SLACK_WEBHOOK_URL']}"
            ),
            "COSINE_RETRAIN_ALERTS__CHANNELS": '["webhook", "slack"]',
            "COSINE_RETRAIN_ALERTS__SMTP_USER": "pipeline",
            "COSINE_RETRAIN_ALERTS__RETRIES": "0",
            "COSINE_RETRAIN_STORAGE__KIND": "s3",
            "COSINE_RETRAIN_STORAGE__BUCKET": bucket,
            "COSINE_RETRAIN_STORAGE__ENDPOINT_URL": endpoint,
            "COSINE_RETRAIN_STORAGE__REGION": "us-east-1",
            # an access key id names the key (AWS logs it too); its secret is what must not leak
            "COSINE_RETRAIN_STORAGE__ACCESS_KEY_ID": ACCESS_KEY_ID,
            "COSINE_RETRAIN_HOME": str(home),
            "COSINE_RETRAIN_DATASET_SPEC": str(ROOT / "configs/datasets/flights.yaml"),
            "COSINE_RETRAIN_INGEST__SOURCE_ROOTS": json.dumps([str(tmp_path)]),
            "MLFLOW_TRACKING_USERNAME": "pipeline",
            "AWS_ACCESS_KEY_ID": "AKIA-FAULTS-TESTING",
        }
        env.pop("COSINE_RETRAIN_CONFIG", None)
        proc = subprocess.run(
            [sys.executable, "-c", STEPS.replace("BAD", repr(str(bad)))],
            cwd=ROOT,
            env=env,
            capture_output=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
        assert b"failed validation" in proc.stdout, proc.stdout[-2000:]
        cli = subprocess.run(
            [sys.executable, "-m", "pipeline", "alerts", "list", "-v", "--json"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            timeout=300,
        )
        assert cli.returncode == 0, cli.stderr[-3000:]
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
        assert any("quarantine" in k for k in keys), keys
        blobs: dict[str, bytes] = {
            "stdout": proc.stdout,
            "stderr": proc.stderr,
            "alerts list": cli.stdout + cli.stderr,
        }
        blobs.update(
            {f"s3://{bucket}/{k}": s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}
        )
        blobs.update({str(p): p.read_bytes() for p in home.rglob("*") if p.is_file()})
    finally:
        moto.stop()
        server.shutdown()
        server.server_close()
    assert _Hook.received, "no alert reached the webhook: the secrets were never used"
    blobs.update({f"received {i}": b for i, b in enumerate(_Hook.received)})
    leaks = [
        f"{where}: {name}"
        for where, data in blobs.items()
        for name, value in {**secrets, **url_tokens}.items()
        if value.encode() in data
    ]
    assert not leaks, leaks


def test_the_demo_logs_hold_no_credential(request: pytest.FixtureRequest, fault_mode: Any) -> None:
    """The replayed demo (the session's ``replayed`` fixture: reused, never run again):
    no credential pattern and no value of a secret-named variable of this environment in
    any file it wrote. Quick mode runs it only when the session replays anyway."""
    others = [
        item
        for item in request.session.items
        if "replayed" in getattr(item, "fixturenames", ()) and item is not request.node
    ]
    if not fault_mode.long and not others:
        pytest.skip("needs the replayed demo (about a minute): FAULTS=long, or the full suite")
    home, out = request.getfixturevalue("replayed")
    values = {
        v.encode()
        for k, v in os.environ.items()
        if len(v) >= 8 and re.search(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY", k)
    }
    found = []
    blobs = {
        "stdout": out.encode(),
        **{str(p): p.read_bytes() for p in home.rglob("*") if p.is_file()},
    }
    assert len(blobs) > 20, sorted(blobs)  # logs, store, MLflow: the demo wrote its files
    for where, data in blobs.items():
        for pattern in (AWS_KEY, PRIVATE_KEY, SLACK_HOOK):
            found += [f"{where}: {m.group(0)[:24]!r}" for m in pattern.finditer(data)]
        found += [f"{where}: a configured secret" for v in values if v in data]
    assert not found, found[:20]
