"""The MLflow sender process of :mod:`training.telemetry.recorder`.

``python -m training.telemetry.sender PARENT_PID`` reads one JSON message per
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

from training.telemetry.recorder import (
    MAX_METRICS_PER_CALL,
    MAX_PARAMS_PER_CALL,
    RUN_KEY_TAG,
    SENTINEL,
    read_metrics,
)

log = logging.getLogger("training.telemetry.recorder")


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
    # the sender retries each call itself, against a wall-clock budget; the client's own
    # retries (7, backoff up to 120 s) would hide an outage from that budget for minutes
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
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
            sender.on_finish(payload)
            answer("done", sender.failed)
            # everything is delivered: skip the interpreter's teardown of MLflow,
            # SQLAlchemy and pandas (0.7-0.9 s that the training job would wait for)
            logging.shutdown()
            sys.stderr.flush()
            os._exit(0)
        if kind == "start" or sender.run_id is not None:  # no run: metrics.jsonl has it all
            getattr(sender, f"on_{kind}")(payload)
    return 0  # stdin closed: the training process is gone


class _Sender:
    """The MLflow side, in the sender process: every call in order, with retries.

    Each call is retried with backoff for up to ``max_wait_s`` seconds of wall
    time. When one is given up, MLflow is taken as gone: later calls get a single
    try each (so a dead server delays the job's end by about one budget, not one
    per call), and metrics are no longer sent at all, so that MLflow keeps a
    *prefix* of ``metrics.jsonl``: no hole that a resume, which sends what follows
    the last ``lr`` step, could never fill. :meth:`on_finish` sends that tail once
    more (one more budget) before ending the run.
    """

    def __init__(self, answer: Any, max_wait_s: float) -> None:
        self.answer = answer
        self.max_wait_s = max_wait_s
        self.client: Any = None
        self.run_id: str | None = None
        self.failed = 0
        self.where = ""
        self.gone = False  # a call was given up; the next success clears it
        self.behind = False  # a metrics batch was given up: MLflow holds a prefix
        self.metrics_path: Path | None = None
        self.metric_failures = 0  # given-up calls that a successful catch-up makes good
        # the last step MLflow held when this job started: a job resumed from an older
        # checkpoint (``last.prev``) runs steps again that MLflow already has
        self.sent_through = -1

    def call(self, fn: Any) -> tuple[bool, Any]:
        """(delivered, result) of ``fn()``, retried while the budget lasts."""
        delay = 1.0
        deadline = time.monotonic() + (0.0 if self.gone else self.max_wait_s)
        while True:
            try:
                result = fn()
            except Exception as exc:  # the MLflow client raises many kinds
                first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
                if time.monotonic() >= deadline:
                    self.failed += 1
                    if not self.gone:
                        log.error(
                            "MLflow at %s: giving up on a telemetry call after %.0f s (%s); "
                            "every metric stays in %s",
                            self.where,
                            self.max_wait_s,
                            first,
                            self.metrics_path or "metrics.jsonl",
                        )
                    self.gone = True
                    return False, None
                log.warning(
                    "MLflow at %s unreachable (%s); retry in %.0f s", self.where, first, delay
                )
                time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                delay = min(delay * 2, 30.0)
                continue
            if self.gone:
                log.warning("MLflow at %s answers again", self.where)
                self.gone = False
            return True, result

    def on_start(self, p: dict[str, Any]) -> None:
        from mlflow import MlflowClient

        self.where = p["tracking_uri"]
        self.metrics_path = Path(p["metrics_path"])
        self.client = MlflowClient(p["tracking_uri"])
        run_id = p["resume_run_id"]
        ok, exp_id = self.call(lambda: self._experiment_id(p))
        if ok and run_id is None and p["resume"]:
            ok, found = self.call(
                lambda: self.client.search_runs(
                    [exp_id], f"tags.`{RUN_KEY_TAG}` = '{p['run_key']}'", max_results=1
                )
            )
            run_id = found[0].info.run_id if ok and found else None
        if not ok:
            pass
        elif run_id is not None:
            self.run_id = run_id
            self.call(lambda: self.client.update_run(run_id, status="RUNNING"))
            self._recover(self.metrics_path)
        else:
            ok, run = self.call(
                lambda: self.client.create_run(exp_id, run_name=p["run_name"], tags=p["tags"])
            )
            if ok:
                self.run_id = run.info.run_id
                self._log_params(p["params"])
                self._recover(self.metrics_path)  # a resume that never reached MLflow
        if self.run_id is None:
            log.error(
                "MLflow at %s: could not %s the run; this job logs to %s only (a --resume "
                "once MLflow is back sends it everything)",
                self.where,
                "find" if p["resume"] else "create",
                self.metrics_path,
            )
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

    def _recover(self, metrics_path: Path) -> bool:
        """Send the committed records MLflow does not have yet, in order; whether it did."""
        committed = read_metrics(metrics_path)
        if not committed:
            return True
        ok, history = self.call(lambda: self.client.get_metric_history(self.run_id, SENTINEL))
        if not ok:
            self.behind = True
            self.metric_failures += 1
            return False
        last_sent = max((m.step for m in history), default=-1)
        self.sent_through = max(self.sent_through, last_sent)
        missing = [
            (int(r.pop("step")), int(r.pop("ts")), r)
            for r in committed
            if int(r["step"]) > last_sent
        ]
        self.behind = False
        if missing:
            self.on_metrics(missing)
        log.info("resumed telemetry: re-sent %d records after step %d", len(missing), last_sent)
        return not self.behind

    def on_metrics(self, records: list[Any]) -> None:
        from mlflow.entities import Metric

        if self.behind:  # sent by _recover at the end (or by a --resume), in order
            return
        batch: list[Any] = []

        def flush(chunk: list[Any]) -> bool:
            ok, _ = self.call(lambda: self.client.log_batch(self.run_id, metrics=chunk))
            if not ok:
                self.behind = True
                self.metric_failures += 1
            return ok

        for step, ts, values in records:
            if step <= self.sent_through and SENTINEL in values:
                continue  # a step run again after a fallback; MLflow has it (same values)
            row = [Metric(k, float(v), ts, step) for k, v in values.items()]
            # a step's values never straddle two calls: each call is all-or-nothing,
            # so after a crash the sentinel's last step tells exactly what arrived
            if len(batch) + len(row) > MAX_METRICS_PER_CALL:
                if not flush(batch):
                    return
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

    def on_finish(self, status: str) -> None:
        """Catch up on given-up metrics (once more, with a fresh budget), end the run."""
        if self.run_id is None:
            return
        if self.behind and self.metrics_path is not None:
            self.gone = False
            if self._recover(self.metrics_path):
                log.warning("MLflow at %s: caught up on the metrics it had missed", self.where)
                self.failed -= self.metric_failures
                self.metric_failures = 0
        self.call(lambda: self.client.set_terminated(self.run_id, status=status))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
