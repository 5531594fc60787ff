"""The MLflow sender process of :mod:`training.telemetry`.

``python -m training.telemetry_sender PARENT_PID`` reads one JSON message per
line on stdin (``["start", {...}]``, ``["metrics", [...]]``, ``["tags", {...}]``,
``["artifact", [path, dir]]``, ``["finish", status]``) and answers on stdout
(``["run_id", id]``, ``["done", failed_calls]``). It owns the MLflow client, runs
every call in order and retries each with backoff while the server is away. It
exits when its stdin closes or its parent dies (``PR_SET_PDEATHSIG``), so no
orphan keeps writing while a resumed job recovers.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from training.telemetry import (
    MAX_METRICS_PER_CALL,
    MAX_PARAMS_PER_CALL,
    RUN_KEY_TAG,
    SENTINEL,
    read_metrics,
)

log = logging.getLogger("training.telemetry")


def _die_with_parent(parent: int) -> None:
    """Ask Linux to kill this process when the training process dies."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(0)


def main(argv: list[str]) -> int:
    parent = int(argv[0]) if argv else os.getppid()
    max_wait_s = float(argv[1]) if len(argv) > 1 else 300.0
    _die_with_parent(parent)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("alembic", "mlflow", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    out = sys.stdout
    sys.stdout = sys.stderr  # whatever a library prints must not corrupt the answers

    def answer(kind: str, value: Any) -> None:
        out.write(json.dumps([kind, value]) + "\n")
        out.flush()

    sender = _Sender(answer, max_wait_s)
    for line in sys.stdin:
        kind, payload = json.loads(line)
        if kind == "finish":
            sender.call(lambda s=payload: sender.client.set_terminated(sender.run_id, status=s))
            answer("done", sender.failed)
            return 0
        getattr(sender, f"on_{kind}")(payload)
    return 0  # stdin closed: the training process is gone


class _Sender:
    """The MLflow side, in the sender process: every call in order, with retries."""

    def __init__(self, answer: Any, max_wait_s: float) -> None:
        self.answer = answer
        self.max_wait_s = max_wait_s
        self.client: Any = None
        self.run_id: str | None = None
        self.failed = 0
        self.where = ""

    def call(self, fn: Any) -> Any:
        delay, waited = 1.0, 0.0
        while True:
            try:
                return fn()
            except Exception as exc:  # the MLflow client raises many kinds
                if waited >= self.max_wait_s:
                    self.failed += 1
                    log.error("MLflow at %s: giving up on a telemetry call: %s", self.where, exc)
                    return None
                first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
                log.warning(
                    "MLflow at %s unreachable (%s); retry in %.0f s", self.where, first, delay
                )
                time.sleep(delay)
                waited += delay
                delay = min(delay * 2, 30.0)

    def on_start(self, p: dict[str, Any]) -> None:
        from mlflow import MlflowClient

        self.where = p["tracking_uri"]
        self.client = MlflowClient(p["tracking_uri"])
        run_id = p["resume_run_id"]
        exp_id = self.call(lambda: self._experiment_id(p))
        if run_id is None and p["resume"]:
            found = self.call(
                lambda: self.client.search_runs(
                    [exp_id], f"tags.`{RUN_KEY_TAG}` = '{p['run_key']}'", max_results=1
                )
            )
            run_id = found[0].info.run_id if found else None
        if run_id is not None:
            self.run_id = run_id
            self.call(lambda: self.client.update_run(run_id, status="RUNNING"))
            self._recover(Path(p["metrics_path"]))
        else:
            run = self.call(
                lambda: self.client.create_run(exp_id, run_name=p["run_name"], tags=p["tags"])
            )
            self.run_id = run.info.run_id
            self._log_params(p["params"])
            self._recover(Path(p["metrics_path"]))  # a resume that never reached MLflow
        self.answer("run_id", self.run_id)

    def _experiment_id(self, p: dict[str, Any]) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(p["experiment"])
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(
                p["experiment"], artifact_location=p["artifact_location"]
            )
        except MlflowException:  # created by a concurrent job in the meantime
            found = self.client.get_experiment_by_name(p["experiment"])
            if found is None:
                raise
            return found.experiment_id

    def _log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), MAX_PARAMS_PER_CALL):
            chunk = items[i : i + MAX_PARAMS_PER_CALL]
            self.call(lambda chunk=chunk: self.client.log_batch(self.run_id, params=chunk))

    def _recover(self, metrics_path: Path) -> None:
        """Send the committed records MLflow does not have yet, in order."""
        committed = read_metrics(metrics_path)
        if not committed:
            return
        history = self.call(lambda: self.client.get_metric_history(self.run_id, SENTINEL)) or []
        last_sent = max((m.step for m in history), default=-1)
        missing = [
            (int(r.pop("step")), int(r.pop("ts")), r)
            for r in committed
            if int(r["step"]) > last_sent
        ]
        if missing:
            self.on_metrics(missing)
        log.info("resumed telemetry: re-sent %d records after step %d", len(missing), last_sent)

    def on_metrics(self, records: list[Any]) -> None:
        from mlflow.entities import Metric

        batch: list[Any] = []

        def flush(chunk: list[Any]) -> None:
            self.call(lambda: self.client.log_batch(self.run_id, metrics=chunk))

        for step, ts, values in records:
            row = [Metric(k, float(v), ts, step) for k, v in values.items()]
            # a step's values never straddle two calls: each call is all-or-nothing,
            # so after a crash the sentinel's last step tells exactly what arrived
            if len(batch) + len(row) > MAX_METRICS_PER_CALL:
                flush(batch)
                batch = []
            batch += row
        if batch:
            flush(batch)

    def on_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        batch = [RunTag(k, v) for k, v in tags.items()]
        self.call(lambda: self.client.log_batch(self.run_id, tags=batch))

    def on_artifact(self, item: list[Any]) -> None:
        path, artifact_path = item
        self.call(lambda: self.client.log_artifact(self.run_id, path, artifact_path))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
