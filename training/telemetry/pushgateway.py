"""Push a run's latest values to a Prometheus Pushgateway (optional, stdlib only).

A batch job is not scraped, so it pushes: ``PUT /metrics/job/<job>/run/<run>``
with a body in the Prometheus text exposition format (version 0.0.4), one
gauge per value::

    # TYPE cosine_retrain_lr gauge
    cosine_retrain_lr 0.0021
    # TYPE cosine_retrain_nan_count gauge
    cosine_retrain_nan_count 0

``PUT`` replaces every metric of that group, so each push carries the full
set of values (the job keeps the latest of each). The Pushgateway attaches the
grouping labels (``job``, ``run``) to every metric and adds
``push_time_seconds``, which the alert rules in ``infra/prometheus/`` use to
tell a live run from one that stopped.

Two ways in:

- :func:`push_run_metrics` pushes once, synchronously, with a bounded timeout
  (connect and each socket read), and never raises: a failure is logged and
  reported as ``False``.
- :func:`push_progress` (and :class:`ProgressPusher`, the trainer's checkpoint
  hook around it) is what runs after each checkpoint. It
  returns at once: a daemon thread does the pushing, newer values replace
  older ones still waiting (a dead receiver never builds a backlog), a failed
  URL is retried after a pause, and at interpreter exit the last values get
  one more bounded try, so a finished run's final state reaches the gateway.
  With no URL configured it does nothing.
- :func:`push_live_quality` is for the pipeline's live-quality check: the
  champion's AUC on newly labelled rows and the SLO (one group,
  ``job="cosine_retrain_quality", run="champion"``), for the Grafana dashboard.

The URL comes from ``pushgateway.url`` in the training config, else from
``$COSINE_RETRAIN_PUSHGATEWAY_URL``. Credentials in the URL
(``http://user:pass@host:9091``) are sent as HTTP basic auth.
"""

from __future__ import annotations

import atexit
import base64
import logging
import math
import os
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from training.config.train import TrainConfig
    from training.results import CheckpointEvent

log = logging.getLogger(__name__)

__all__ = [
    "ENV_URL",
    "METRICS",
    "PREFIX",
    "QUALITY_JOB",
    "QUALITY_METRICS",
    "ProgressPusher",
    "format_text",
    "grouping_path",
    "push_live_quality",
    "push_progress",
    "push_run_metrics",
]

ENV_URL = "COSINE_RETRAIN_PUSHGATEWAY_URL"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DEFAULT_JOB = "cosine_retrain"
DEFAULT_TIMEOUT_S = 2.0
RETRY_AFTER_S = 30.0  # after a failed push, leave that URL alone this long

PREFIX = "cosine_retrain_"
# Telemetry key (MLflow name, training/telemetry/recorder.py) -> the pushed gauge.
FROM_TELEMETRY = {
    "lr": "cosine_retrain_lr",
    "train_loss": "cosine_retrain_train_loss",
    "nan_count": "cosine_retrain_nan_count",
    "val_auc": "cosine_retrain_val_auc",
    "val_loss": "cosine_retrain_val_loss",
}
# Every gauge the training job pushes, with its help text. The Prometheus rules and
# the Grafana dashboard in infra/ use these names (tests/infra checks they exist here).
METRICS = {
    "cosine_retrain_lr": "learning rate of param group 0 at the last committed step",
    "cosine_retrain_train_loss": "training loss at the last committed step",
    "cosine_retrain_nan_count": "non-finite optimizer steps skipped so far in this run",
    "cosine_retrain_cost_usd": "spend of this run so far, resumes included (USD)",
    "cosine_retrain_step": "optimizer steps done",
    "cosine_retrain_val_auc": "validation ROC AUC at the last evaluation",
    "cosine_retrain_val_loss": "validation log loss at the last evaluation",
    "cosine_retrain_total_steps": "optimizer steps the run will take when it completes",
    "cosine_retrain_budget_usd": "cost.budget_usd of the run (absent when unlimited)",
}
# Pushed by the pipeline's live-quality check (push_live_quality), one group
# job="cosine_retrain_quality", run="champion", replaced at every check.
QUALITY_JOB = "cosine_retrain_quality"
QUALITY_METRICS = {
    "cosine_retrain_live_auc": "ROC AUC of the champion on the last labelled batch",
    "cosine_retrain_live_auc_slo": "the live-quality SLO (quality.slo)",
    "cosine_retrain_live_rows": "labelled rows with predictions behind the last live AUC",
}

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


# ------------------------------------------------------------------------------ format


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def format_text(values: Mapping[str, float], help_text: Mapping[str, str] | None = None) -> str:
    """``values`` as gauges in the text exposition format; invalid names are skipped."""
    help_text = {**METRICS, **QUALITY_METRICS} if help_text is None else help_text
    lines = []
    for name in sorted(values):
        if not _NAME.match(name):
            log.warning("pushgateway: %r is not a valid Prometheus metric name; skipped", name)
            continue
        try:
            value = float(values[name])
        except (TypeError, ValueError):
            log.warning("pushgateway: %s=%r is not a number; skipped", name, values[name])
            continue
        if name in help_text:
            escaped = help_text[name].replace("\\", "\\\\").replace("\n", "\\n")
            lines.append(f"# HELP {name} {escaped}")
        lines.append(f"# TYPE {name} gauge")
        lines.append(f"{name} {_number(value)}")
    return "\n".join(lines) + "\n"


def grouping_path(job: str, labels: Mapping[str, str]) -> str:
    """``/metrics/job/<job>/<label>/<value>...``; values with ``/`` (or empty) in base64."""

    def part(name: str, value: str) -> str:
        if not value or "/" in value:
            encoded = base64.urlsafe_b64encode(value.encode()).decode() or "="
            return f"{name}@base64/{encoded}"
        return f"{name}/{urllib.parse.quote(value, safe='')}"

    segments = [part("job", job)]
    for name, value in labels.items():
        if not _LABEL.match(name):
            raise ValueError(f"invalid Prometheus label name {name!r}")
        segments.append(part(name, value))
    return "/metrics/" + "/".join(segments)


# ------------------------------------------------------------------------------ one push


def _request(url: str, path: str, body: bytes) -> urllib.request.Request:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"pushgateway URL must be http(s)://host[:port], got {url!r}")
    netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    if parts.port:
        netloc += f":{parts.port}"
    target = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + path, "", ""))
    headers = {"Content-Type": CONTENT_TYPE}
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    return urllib.request.Request(target, data=body, method="PUT", headers=headers)


def _redact(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.username is None:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    return urllib.parse.urlunsplit((parts.scheme, f"***@{host}", parts.path, "", ""))


def push_run_metrics(
    url: str,
    job: str,
    run_name: str,
    values: Mapping[str, float],
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> bool:
    """PUT ``values`` as gauges to the group ``job``/``run_name``; True on a 2xx answer.

    Never raises: a receiver that is down, slow or refusing costs at most
    ``timeout_s`` per socket operation and one warning in the log.
    """
    try:
        request = _request(url, grouping_path(job, {"run": run_name}), format_text(values).encode())
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            response.read()
            return 200 <= response.status < 300
    except urllib.error.HTTPError as exc:
        detail = exc.read(300).decode("utf-8", "replace").strip() if exc.fp else ""
        log.warning(
            "pushgateway %s refused the metrics of %s/%s: HTTP %s %s",
            _redact(url),
            job,
            run_name,
            exc.code,
            detail,
        )
    except Exception as exc:  # never into the training loop
        log.warning(
            "pushgateway %s unreachable for %s/%s (%s: %s); training goes on",
            _redact(url),
            job,
            run_name,
            type(exc).__name__,
            exc,
        )
    return False


# ------------------------------------------------------------------------------ in the background


class _Pusher:
    """One daemon thread for the process: the latest values per group, pushed in turn."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._state: dict[tuple[str, str, str], dict[str, float]] = {}  # all values per group
        self._dirty: dict[tuple[str, str, str], float] = {}  # group -> its timeout
        self._retry_at: dict[str, float] = {}  # url -> monotonic time
        self._busy = False
        self._thread: threading.Thread | None = None
        self._exit_hook = False

    def submit(
        self, url: str, job: str, run: str, values: Mapping[str, float], timeout_s: float
    ) -> None:
        with self._cond:
            key = (url, job, run)
            self._state.setdefault(key, {}).update(values)
            self._dirty[key] = timeout_s
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="pushgateway", daemon=True)
                self._thread.start()
            if not self._exit_hook:
                atexit.register(self.flush)
                self._exit_hook = True
            self._cond.notify()

    def _next(self) -> tuple[tuple[str, str, str], dict[str, float], float] | None:
        now = time.monotonic()
        for key, timeout_s in self._dirty.items():
            if self._retry_at.get(key[0], 0.0) <= now:
                del self._dirty[key]
                return key, dict(self._state[key]), timeout_s
        return None

    def _wait_s(self) -> float | None:
        if not self._dirty:
            return None
        now = time.monotonic()
        return max(0.05, min(self._retry_at.get(k[0], now) for k in self._dirty) - now)

    def _loop(self) -> None:
        while True:
            with self._cond:
                job = self._next()
                while job is None:
                    self._cond.wait(self._wait_s())
                    job = self._next()
                self._busy = True
            (url, name, run), values, timeout_s = job
            ok = push_run_metrics(url, name, run, values, timeout_s=timeout_s)
            with self._cond:
                self._busy = False
                if ok:
                    self._retry_at.pop(url, None)
                else:
                    self._retry_at[url] = time.monotonic() + RETRY_AFTER_S
                    self._dirty.setdefault((url, name, run), timeout_s)  # keep the latest
                self._cond.notify_all()

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait (bounded) until every group's latest values went out; True if they did.

        At exit (``atexit``), groups still waiting get one last push each, also to a
        URL that failed recently, within one timeout in all.
        """
        with self._cond:
            if not self._dirty and not self._busy:
                return True
            budget = timeout_s if timeout_s is not None else max(self._dirty.values(), default=2.0)
            deadline = time.monotonic() + budget
            self._retry_at.clear()  # a final try, even where the last one failed
            self._cond.notify_all()
            while (self._dirty or self._busy) and time.monotonic() < deadline:
                self._cond.wait(max(0.01, deadline - time.monotonic()))
            return not self._dirty and not self._busy


_PUSHER = _Pusher()


def resolve_url(config: TrainConfig | None = None) -> str | None:
    """``pushgateway.url`` of the config, else ``$COSINE_RETRAIN_PUSHGATEWAY_URL``, else None."""
    section = getattr(config, "pushgateway", None)
    url = getattr(section, "url", None) or os.environ.get(ENV_URL, "").strip()
    return url or None


def latest_values(records: Iterable[tuple[int, int, Mapping[str, Any]]]) -> dict[str, float]:
    """The newest value of each pushed telemetry key in ``records`` (step, ts, values)."""
    out: dict[str, float] = {}
    for _step, _ts, values in records:
        for key, metric in FROM_TELEMETRY.items():
            if key in values and values[key] is not None:
                out[metric] = float(values[key])
    return out


def push_progress(
    config: TrainConfig,
    run_name: str,
    records: Iterable[tuple[int, int, Mapping[str, Any]]],
    *,
    step: int,
    total_steps: int,
    cost_usd: float,
) -> None:
    """The trainer's hook, after each checkpoint: queue the run's latest values.

    Returns at once; does nothing without a configured URL; never raises.
    """
    try:
        url = resolve_url(config)
        if url is None:
            return
        section = getattr(config, "pushgateway", None)
        values = latest_values(records)
        values["cosine_retrain_step"] = float(step)
        values["cosine_retrain_total_steps"] = float(total_steps)
        values["cosine_retrain_cost_usd"] = float(cost_usd)
        budget = config.cost.budget_usd
        if budget is not None:
            values["cosine_retrain_budget_usd"] = float(budget)
        _PUSHER.submit(
            url,
            getattr(section, "job", None) or DEFAULT_JOB,
            run_name,
            values,
            float(getattr(section, "timeout_s", None) or DEFAULT_TIMEOUT_S),
        )
    except Exception:  # pragma: no cover - a bug here must not stop training
        log.exception("pushgateway: could not queue the metrics of %s", run_name)


class ProgressPusher:
    """The trainer's checkpoint hook (:mod:`training.results`): the run's latest values to
    the Pushgateway, queued (returns at once; nothing without a configured URL)."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config

    def __call__(self, event: CheckpointEvent) -> None:
        push_progress(
            self.config,
            event.run_name,
            event.records,
            step=event.step,
            total_steps=event.total_steps,
            cost_usd=event.cost_usd,
        )


def flush(timeout_s: float | None = None) -> bool:
    """Wait (bounded) for queued pushes; True when nothing is left waiting."""
    return _PUSHER.flush(timeout_s)


def push_live_quality(
    url: str | None,
    *,
    auc: float,
    slo: float,
    rows: int,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> bool:
    """The champion's live quality for the dashboard and the SLO alert (synchronous).

    For the pipeline's quality check: call it with the verdict's AUC, the SLO and
    the labelled rows behind it. No URL (``None`` or empty): nothing is sent.
    """
    if not url:
        return False
    values = {
        "cosine_retrain_live_auc": auc,
        "cosine_retrain_live_auc_slo": slo,
        "cosine_retrain_live_rows": float(rows),
    }
    return push_run_metrics(url, QUALITY_JOB, "champion", values, timeout_s=timeout_s)
