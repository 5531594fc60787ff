"""Run telemetry: MLflow and a local ``metrics.jsonl``, committed with checkpoints.

Per-step values are buffered in memory and *committed* right after each
checkpoint is written: appended (and fsynced) to the local file at once, and
handed to a **sender process** that owns the MLflow client and delivers them
with ``log_batch`` (at most 1000 values per call), in order, retrying with
backoff while the server is away. The training loop never waits for MLflow:
the client's work (with a SQLite store, the whole database write) runs on
another core instead of taking the training process's GIL, and even creating
the run happens there, while the first steps run. :meth:`Telemetry.finish`
drains the queue (bounded) and returns the MLflow run id.

Exactly-once across crashes: the uncommitted buffer is saved inside the
checkpoint and everything committed is in the local file, so a resumed job
sends MLflow exactly what it is missing, found from the last step of the
``lr`` history (each ``log_batch`` call is all-or-nothing and never splits a
step). The run is found again by its MLflow id, or, if the crash came before
the id was known, by the tag ``cosine_retrain.run_key`` that the job stores in
its first checkpoint. The sender dies with the training process (Linux
``PR_SET_PDEATHSIG``, and a parent check), so no orphan keeps writing while a
resumed job recovers. A rollback (NaN guard) simply drops the buffer, since
those steps will be run again.

Only rank 0 logs; on other ranks every method is a no-op.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MAX_METRICS_PER_CALL = 1000  # MLflow's log_batch limit
MAX_PARAMS_PER_CALL = 100
SENTINEL = "lr"  # logged at every step: its last step tells how far a sink got
RUN_KEY_TAG = "cosine_retrain.run_key"
DEFAULT_MAX_WAIT_S = 300.0
MAX_WAIT_ENV = "COSINE_RETRAIN_TELEMETRY_MAX_WAIT_S"  # the sender's retry budget per call

Record = tuple[int, int, dict[str, float]]  # (step, timestamp ms, values)


class Telemetry:
    def __init__(
        self,
        *,
        enabled: bool,
        run_dir: Path,
        tracking_uri: str | None = None,
        experiment: str | None = None,
        artifact_location: str | None = None,
        max_wait_s: float | None = None,
    ) -> None:
        self.enabled = enabled
        self.metrics_path = run_dir / "metrics.jsonl"
        self.pending: list[Record] = []
        self._run_id: str | None = None
        self._tracking_uri = tracking_uri
        self._experiment = experiment
        self._artifact_location = artifact_location
        # how long the sender retries one call while MLflow is away (wall time)
        self._max_wait_s = (
            max_wait_s
            if max_wait_s is not None
            else float(os.environ.get(MAX_WAIT_ENV, "") or DEFAULT_MAX_WAIT_S)
        )
        self._proc: Any = None
        self._inbox: Any = None
        self._outbox: Any = None
        self.failures = 0

    # -- lifecycle -----------------------------------------------------------------------

    def start(
        self,
        *,
        run_name: str,
        run_key: str,
        tags: dict[str, str],
        params: dict[str, Any],
        resume_run_id: str | None = None,
        resume: bool = False,
        resume_step: int | None = None,
        pending: Iterable[Record] = (),
        parent_run_id: str | None = None,
    ) -> None:
        """Start the sender; it creates (or finds again) the MLflow run and, after a
        resume, re-sends what the crash left undelivered.

        ``resume_step`` is the step of the checkpoint resumed from: records at or
        after it in the local file (committed with a newer checkpoint that was then
        lost, so the fallback to ``last.prev`` runs those steps again) and a line
        torn by a crash are dropped, so every step is in the file once."""
        if not self.enabled:
            return
        self.metrics_path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None:
            self._trim_file(resume_step)
        pending = list(pending)
        if pending:  # committed nowhere yet: the local file gets them first
            last_file = self._last_file_step()
            self._append_file([r for r in pending if r[0] > last_file])
        if not self._tracking_uri:
            return
        package_root = str(Path(__file__).resolve().parents[2])  # the folder that holds training/
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                p for p in (package_root, os.environ.get("PYTHONPATH")) if p
            ),
        }
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "training.telemetry.sender",
                str(os.getpid()),
                str(self._max_wait_s),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        # the pipe can fill while MLflow is away: a writer thread takes the wait, not the loop
        self._inbox = queue.Queue()
        self._outbox = queue.Queue()
        threading.Thread(target=self._write_loop, name="mlflow-pipe-writer", daemon=True).start()
        threading.Thread(target=self._read_loop, name="mlflow-pipe-reader", daemon=True).start()
        all_tags = {**tags, RUN_KEY_TAG: run_key}
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        self._put(
            "start",
            {
                "tracking_uri": self._tracking_uri,
                "experiment": self._experiment or "cosine-retrain",
                "artifact_location": self._artifact_location,
                "run_name": run_name,
                "run_key": run_key,
                "tags": all_tags,
                "params": {k: str(v)[:6000] for k, v in params.items()},
                "resume_run_id": resume_run_id,
                "resume": resume,
                "metrics_path": str(self.metrics_path),
            },
        )

    def wait_run_id(self, timeout_s: float = 120.0) -> str | None:
        """The MLflow run id, waiting for the sender to report it (bounded)."""
        deadline = time.monotonic() + timeout_s
        while self._run_id is None and self._proc is not None and time.monotonic() < deadline:
            got = self._poll(timeout=0.2)
            if got is not None and got[0] == "eof":
                break
        return self._run_id

    @property
    def run_id(self) -> str | None:
        """The MLflow run id once the sender has reported it (never blocks)."""
        self._poll()
        return self._run_id

    def _poll(self, timeout: float | None = None) -> tuple[str, Any] | None:
        if self._outbox is None:
            return None
        try:
            kind, value = (
                self._outbox.get(timeout=timeout) if timeout else self._outbox.get_nowait()
            )
        except queue.Empty:
            return None
        if kind == "run_id":
            self._run_id = value
        return kind, value

    def _put(self, kind: str, payload: Any) -> None:
        if self._proc is not None:
            self._inbox.put((kind, payload))

    def _write_loop(self) -> None:
        pipe = self._proc.stdin
        while True:
            item = self._inbox.get()
            try:
                pipe.write(json.dumps(item) + "\n")
                pipe.flush()
            except (OSError, ValueError):  # the sender died: its exit code tells at finish
                return
            if item[0] == "finish":
                pipe.close()
                return

    def _read_loop(self) -> None:
        for line in self._proc.stdout:
            try:
                self._outbox.put(tuple(json.loads(line)))
            except ValueError:
                continue
        self._outbox.put(("eof", None))

    # -- metrics ---------------------------------------------------------------------------

    def record(self, step: int, values: dict[str, float]) -> None:
        """Buffer values for ``step`` (merged with what the step already has)."""
        if not self.enabled:
            return
        if self.pending and self.pending[-1][0] == step:
            self.pending[-1][2].update(values)
        else:
            self.pending.append((step, int(time.time() * 1000), dict(values)))

    def pending_state(self) -> list[Record]:
        """The uncommitted records, to be stored inside the next checkpoint."""
        return [(s, t, dict(v)) for s, t, v in self.pending]

    def discard(self) -> None:
        self.pending.clear()

    def commit(self) -> None:
        """Send the buffer to every sink; call right after a checkpoint was written."""
        if not self.enabled or not self.pending:
            return
        records, self.pending = self.pending, []
        self._append_file(records)
        self._put("metrics", records)

    def _append_file(self, records: list[Record]) -> None:
        with open(self.metrics_path, "a") as fh:
            for step, ts, values in records:
                fh.write(json.dumps({"step": step, "ts": ts, **values}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def _trim_file(self, before_step: int) -> None:
        """Keep only the complete records of steps before ``before_step`` (atomically)."""
        if not self.metrics_path.exists():
            return
        raw = self.metrics_path.read_bytes()
        lines = raw.split(b"\n")  # the last item is b"" unless a crash tore the last line
        kept = []
        for line in lines[:-1]:
            try:
                step = int(json.loads(line)["step"])
            except (ValueError, KeyError, TypeError):
                continue
            if step < before_step:
                kept.append(line + b"\n")
        trimmed = b"".join(kept)
        if trimmed == raw:
            return
        log.warning(
            "%s: dropped %d record(s) at or after step %d or torn by a crash; those steps "
            "run again",
            self.metrics_path,
            len(lines) - 1 - len(kept) + (1 if lines[-1] else 0),
            before_step,
        )
        tmp = self.metrics_path.with_name(self.metrics_path.name + ".tmp")
        with open(tmp, "wb") as fh:
            fh.write(trimmed)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.metrics_path)

    def _last_file_step(self) -> int:
        return max((int(r["step"]) for r in read_metrics(self.metrics_path)), default=-1)

    # -- tags, artifacts, end --------------------------------------------------------------

    def set_tags(self, tags: dict[str, Any]) -> None:
        self._put("tags", {k: str(v) for k, v in tags.items()})

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if path.exists():
            self._put("artifact", (str(path), artifact_path))

    def finish(self, status: str, flush_timeout_s: float = 600.0) -> str | None:
        """End the run in MLflow after every queued call went out; the run id."""
        if self._proc is None:
            return None
        self._inbox.put(("finish", status))
        deadline = time.monotonic() + flush_timeout_s
        done = False
        while time.monotonic() < deadline:
            got = self._poll(timeout=min(1.0, max(0.01, deadline - time.monotonic())))
            if got is None:
                continue
            if got[0] == "done":
                done, self.failures = True, int(got[1])
                break
            if got[0] == "eof":
                break
        if not done or self.failures:
            log.error(
                "MLflow at %s did not take every telemetry call (%s); every metric is in %s, "
                "and a --resume of this run sends MLflow what it is missing",
                self._tracking_uri,
                "timed out or the sender died" if not done else f"{self.failures} failed",
                self.metrics_path,
            )
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        return self._run_id


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The committed records of a run's ``metrics.jsonl`` (torn lines skipped)."""
    out = []
    if not path.exists():
        return out
    with open(path) as fh:
        for line in fh:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out
