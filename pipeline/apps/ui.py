"""``python -m pipeline ui`` (``./run ui``): the Airflow and MLflow UIs on the local data.

Starts, on loopback and on local defaults (the same ``.cosine-retrain`` home as
``./run demo``): the Airflow api-server, scheduler, dag-processor and triggerer
(SQLite metadata, LocalExecutor), and an MLflow tracking server over the demo's
SQLite database and artifacts. Prints the addresses and the Airflow login, and
runs until Ctrl-C, then stops every process it started (each in its own
process group, by PID).

The Airflow password is generated once per home and kept in
``<home>/airflow/passwords.json`` (SimpleAuthManager reads it); it is printed
here, never logged elsewhere.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.apps.demo import DAGS, migrate, prepare_environment
from training.api import DEFAULT_HOME, atomic_write_text

BIN = Path(sys.executable).parent
API_TIMEOUT = 90.0
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")


def component_command(component: str) -> list[str]:
    """How the stack starts an Airflow component. The scheduler, whose LocalExecutor
    forks every task process, starts through :mod:`pipeline.apps.preload`: its tasks
    begin with Great Expectations, Evidently, torch and MLflow imported
    (``COSINE_RETRAIN_PRELOAD=`` empty turns it off)."""
    if component == "scheduler":
        return [sys.executable, "-m", "pipeline.apps.preload", "airflow", component]
    return [str(BIN / "airflow"), component]


@dataclass
class Stack:
    home: Path
    airflow_url: str
    mlflow_url: str
    user: str
    password: str
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    token: str | None = None
    env: dict[str, str] = field(default_factory=dict, repr=False)

    def launch(self, name: str, cmd: list[str]) -> None:
        """Start one component in a process group of its own, its output appended to
        ``<home>/ui/<name>.log`` (its PID beside it)."""
        logs = self.home / "ui"
        with open(logs / f"{name}.log", "ab") as fh:
            self.procs[name] = subprocess.Popen(
                cmd, stdout=fh, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
            )
        (logs / f"{name}.pid").write_text(str(self.procs[name].pid))

    def restart(self, component: str) -> None:
        """Start an Airflow component again (after it died or was killed), as
        :func:`start_stack` started it."""
        if self.procs[component].poll() is None:
            raise RuntimeError(f"{component} (PID {self.procs[component].pid}) is still running")
        self.launch(component, component_command(component))

    def api(self, method: str, path: str, body: Any = None) -> Any:
        """One call of Airflow's REST API (``/api/v2/...``) as the stack's user; the
        JSON answer. Logs in (``/auth/token``) on the first call. An idempotent call
        (GET, PATCH, PUT, DELETE, the login) that meets a server error or a dropped
        connection is tried again until ``API_TIMEOUT``: on a busy machine the
        api-server answers 500 when its SQLite write waits past the lock timeout. A
        POST is sent once (:meth:`trigger` makes a run's POST idempotent)."""
        if self.token is None:
            login = {"username": self.user, "password": self.password}
            answer = _retrying(lambda: self._call("POST", "/auth/token", login, None))
            self.token = str(answer["access_token"])
        token = self.token
        if method == "POST":
            return self._call(method, path, body, token)
        return _retrying(lambda: self._call(method, path, body, token))

    def trigger(self, dag_id: str, conf: dict[str, Any], run_id: str | None = None) -> Any:
        """Start a run of ``dag_id`` with ``conf``; its ``dag_run`` record. The run id
        is chosen here, so the POST can be retried after a server error: a 409 on a
        retry means an earlier try created the run, which is read back."""
        run_id = run_id or f"manual__{time.strftime('%Y%m%dT%H%M%S')}_{secrets.token_hex(4)}"
        body = {"dag_run_id": run_id, "logical_date": None, "conf": conf}
        tried = False

        def post() -> Any:
            nonlocal tried
            try:
                return self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", body)
            except urllib.error.HTTPError as exc:
                if exc.code != 409 or not tried:
                    raise
                return self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
            finally:
                tried = True

        return _retrying(post)

    def _call(self, method: str, path: str, body: Any, token: str | None) -> Any:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"{self.airflow_url}{path}", data=data, method=method, headers=headers
        )
        # above the SQLite lock wait the stack configures (60 s): a request queued
        # behind the dag-processor's writes is slow, not lost
        with urllib.request.urlopen(req, timeout=API_TIMEOUT) as r:
            return json.load(r)

    def missing_dags(self) -> set[str]:
        """The DAGs of the DAGs folder (one per file, named as it) that the API does
        not list yet: until the dag-processor has parsed them all, a trigger of one
        of them fails or queues behind the parse."""
        want = {p.stem for p in DAGS.glob("*.py") if p.stem != "__init__"}
        try:
            listed = self.api("GET", "/api/v2/dags?limit=100")["dags"]
        except (OSError, ValueError, KeyError):
            return want
        return want - {d["dag_id"] for d in listed}

    def stop(self, grace: float = 10.0) -> None:
        """TERM every component, then KILL what is left (whole process groups)."""
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _retrying(call: Callable[[], Any], timeout: float = API_TIMEOUT) -> Any:
    """``call()``, tried again with backoff (1 s doubling to 8 s) while it fails with
    a server error (5xx) or a dropped connection, until ``timeout``; then its error."""
    deadline = time.monotonic() + timeout
    delay = 1.0
    while True:
        try:
            return call()
        except urllib.error.HTTPError as exc:
            if exc.code < 500 or time.monotonic() + delay > deadline:
                raise
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(2 * delay, 8.0)


def _forget_stored_ticks(database: str) -> None:
    """Clear the next scheduled run each DAG stored at an earlier start (or in a
    ``dag.test()`` of the demo): the scheduler would start it at once, before the
    dag-processor re-parses the DAG with this start's schedules and works the next
    tick out again (pipeline/apps/timetables.py)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(database)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE dag SET next_dagrun_create_after = NULL"))
    finally:
        engine.dispose()


def _password(airflow_home: Path, user: str) -> str:
    path = airflow_home / "passwords.json"
    if path.exists():
        known = json.loads(path.read_text())
        if user in known:
            return str(known[user])
    else:
        known = {}
    known[user] = secrets.token_urlsafe(12)
    atomic_write_text(path, json.dumps(known), mode=0o600)
    return str(known[user])


def _healthy_airflow(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=3) as r:
            health = json.load(r)
    except (OSError, ValueError):
        return False
    # /health answers 200 even while a component is down: read the JSON (UI_TESTING_NOTES)
    return all(health.get(c, {}).get("status") == "healthy" for c in ("scheduler", "dag_processor"))


def _healthy_mlflow(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=3) as r:
            return r.status == 200
    except OSError:
        return False


def start_stack(
    home: Path,
    *,
    airflow_port: int = 8080,
    mlflow_port: int = 5000,
    user: str = "admin",
    timeout: float = 240.0,
    schedules: bool = False,
    database: str | None = None,
    extra_env: dict[str, str] | None = None,
) -> Stack:
    """Start Airflow's four components and an MLflow server; wait until healthy.

    ``schedules``: run the DAGs' cron schedules (off by default: a home replays data
    of another time, and a tick of today's clock would retrain, tune and alert on it;
    the asset triggers stay live either way). ``database``: the Airflow metadata
    database's SQLAlchemy URL (default: SQLite in the home)."""
    home = home.resolve()
    prepare_environment(home)
    airflow_home = home / "airflow"
    password = _password(airflow_home, user)
    airflow_url = f"http://127.0.0.1:{airflow_port}"
    mlflow_url = f"http://127.0.0.1:{mlflow_port}"
    # the stack serves the home's own MLflow store (sqlite:///<home>/mlflow.db, the
    # pipeline's default): a stray MLFLOW_TRACKING_URI would send every task elsewhere
    stray = {"MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID"}
    for key in sorted(stray & os.environ.keys()):
        print(f"note: ignoring {key}: the stack uses the home's MLflow", file=sys.stderr)
    env = {
        **{k: v for k, v in os.environ.items() if k not in stray},
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(airflow_port),
        "AIRFLOW__API__BASE_URL": airflow_url,  # the execution API derives from it
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(airflow_port + 1),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(airflow_port + 2),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{user}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(airflow_home / "passwords.json"),
        "COSINE_RETRAIN_MLFLOW__UI_URL": mlflow_url,
        # four components and the task processes share one SQLite file: wait for a
        # lock up to 60 s instead of failing a request after sqlite3's default 5 s
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database
        or os.environ.get(
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
            f"sqlite:///{airflow_home / 'airflow.db'}?timeout=60",
        ),
        "COSINE_RETRAIN_CRON_SCHEDULES": "true" if schedules else "false",
        # MLflow's GenAI job runner (~10 worker processes) serves nothing used here
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        **(extra_env or {}),
    }
    os.environ.update({k: v for k, v in env.items() if k.startswith("AIRFLOW")})
    migrate(home, always=database is not None)
    _forget_stored_ticks(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    logs = home / "ui"
    logs.mkdir(parents=True, exist_ok=True)
    stack = Stack(home, airflow_url, mlflow_url, user, password, env=env)
    try:
        stack.launch(
            "mlflow",
            [
                str(BIN / "mlflow"),
                "server",
                "--backend-store-uri",
                f"sqlite:///{home / 'mlflow.db'}",
                "--default-artifact-root",
                (home / "mlartifacts").as_uri(),
                "--host",
                "127.0.0.1",
                "--port",
                str(mlflow_port),
                "--workers",
                "1",
            ],
        )
        for component in COMPONENTS:
            stack.launch(component, component_command(component))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [n for n, p in stack.procs.items() if p.poll() is not None]
            if dead:
                raise RuntimeError(
                    f"{', '.join(dead)} exited early; see {logs}/{dead[0]}.log:\n"
                    + (logs / f"{dead[0]}.log").read_text()[-2000:]
                )
            if (
                _healthy_airflow(airflow_url)
                and _healthy_mlflow(mlflow_url)
                and not stack.missing_dags()
            ):
                return stack
            time.sleep(1.0)
        missing = ", ".join(sorted(stack.missing_dags()))
        raise TimeoutError(
            f"the UIs were not healthy after {timeout:.0f} s"
            + (f" (DAGs not parsed yet: {missing})" if missing else "")
            + f"; logs in {logs}"
        )
    except BaseException:
        stack.stop()
        raise


class Stopped(BaseException):
    """A stop signal arrived: unwind through ``finally`` so every child is stopped."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _raise_stopped(signum: int, _frame: object) -> None:
    raise Stopped(signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline ui", description=__doc__)
    parser.add_argument("--home", default=str(DEFAULT_HOME), help="local state folder")
    parser.add_argument("--airflow-port", type=int, default=8080)
    parser.add_argument("--mlflow-port", type=int, default=5000)
    parser.add_argument(
        "--schedules",
        action="store_true",
        help="run the DAGs' cron schedules too (drift_monitor hourly, retrain weekly, tune "
        "quarterly, by today's clock; ticks from before the start never run). Default: "
        "off, the DAGs run on their asset events and by hand only",
    )
    args = parser.parse_args(argv)
    home = Path(args.home).resolve()
    # Ctrl-C, a supervisor's SIGTERM and a closed terminal's SIGHUP all stop every
    # child: by default the last two end this process without running ``finally``,
    # and the children (each in its own session) would keep running
    for signum in STOP_SIGNALS:
        signal.signal(signum, _raise_stopped)
    print(f"starting Airflow and MLflow on {home} (about a minute)...", flush=True)
    try:
        stack = start_stack(
            home,
            airflow_port=args.airflow_port,
            mlflow_port=args.mlflow_port,
            schedules=args.schedules,
        )
    except (RuntimeError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Stopped as stop:  # start_stack has stopped what it had started
        print(f"{stop}: stopped while starting", flush=True)
        return 128 + stop.signum
    print(
        f"\n  Airflow  {stack.airflow_url}   login: {stack.user} / {stack.password}"
        f"\n  MLflow   {stack.mlflow_url}   (the training runs, the flight_delay model and its"
        " aliases)\n\n  "
        + (
            "cron schedules ON: drift_monitor, retrain and tune run at their ticks from now on"
            if args.schedules
            else "cron schedules off: runs start only from asset events (an ingest you trigger)"
            " and by hand; --schedules runs the crons"
        )
        + "\n  logs in "
        + str(home / "ui")
        + "; Ctrl-C stops everything\n",
        flush=True,
    )
    try:
        while all(p.poll() is None for p in stack.procs.values()):
            time.sleep(1.0)
        dead = [n for n, p in stack.procs.items() if p.poll() is not None]
        print(f"error: {', '.join(dead)} stopped; see {home / 'ui'}", file=sys.stderr)
        return 1
    except Stopped as stop:
        print(f"{stop}: stopping every process...", flush=True)
        return 0 if stop.signum == signal.SIGINT else 128 + stop.signum
    finally:
        # a second signal while stopping must not cut the stop short
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        stack.stop()
        print("stopped", flush=True)
