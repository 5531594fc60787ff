"""The Pushgateway client: text format, grouping path, a real HTTP receiver on
127.0.0.1, receivers that are down or hang, and the trainer's hook end to end."""

from __future__ import annotations

import base64
import logging
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import free_port
from training.config.train import ConfigError, TrainConfig, load_config
from training.engine.trainer import Trainer
from training.telemetry import pushgateway

Tiny = Callable[..., TrainConfig]

TRAINER_METRICS = {
    "cosine_retrain_lr",
    "cosine_retrain_train_loss",
    "cosine_retrain_nan_count",
    "cosine_retrain_cost_usd",
    "cosine_retrain_step",
    "cosine_retrain_val_auc",
}


@pytest.fixture(autouse=True)
def fresh_pusher(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test gets its own background pusher (no groups left over from another)."""
    pusher = pushgateway._Pusher()
    monkeypatch.setattr(pushgateway, "_PUSHER", pusher)
    yield
    with pusher._cond:
        pusher._dirty.clear()  # nothing left for its exit flush to try


# ------------------------------------------------------------------------------ receivers


@dataclass
class Push:
    method: str
    path: str
    headers: dict[str, str]
    body: str


@dataclass
class Receiver:
    url: str
    pushes: list[Push] = field(default_factory=list)
    status: int = 200


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """An HTTP server on 127.0.0.1 that records every request (answers ``status``)."""
    box = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length).decode()
            box.pushes.append(Push("PUT", self.path, dict(self.headers.items()), body))
            self.send_response(box.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_POST = do_PUT  # noqa: N815 (http.server names handlers so)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    box.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield box
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def hanging() -> Iterator[str]:
    """A receiver that accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


def parse(body: str) -> dict[str, float]:
    """Samples of a pushed body, through prometheus_client's own parser."""
    out = {}
    for family in text_string_to_metric_families(body):
        assert family.type == "gauge", family
        for sample in family.samples:
            assert sample.labels == {}
            out[sample.name] = sample.value
    return out


# ------------------------------------------------------------------------------ format


def test_text_format_is_gauges_with_type_and_help_lines() -> None:
    text = pushgateway.format_text(
        {"cosine_retrain_lr": 0.0021, "cosine_retrain_nan_count": 0, "custom_x": 1.5}
    )
    assert text.endswith("\n")
    lines = text.splitlines()
    assert lines[lines.index("cosine_retrain_lr 0.0021") - 1] == "# TYPE cosine_retrain_lr gauge"
    assert lines[0].startswith("# HELP cosine_retrain_lr ")
    assert "cosine_retrain_nan_count 0.0" in lines
    assert "# TYPE custom_x gauge" in lines  # no HELP for an unknown name
    assert parse(text) == {
        "cosine_retrain_lr": 0.0021,
        "cosine_retrain_nan_count": 0.0,
        "custom_x": 1.5,
    }


def test_non_finite_values_and_bad_names(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="training.telemetry.pushgateway"):
        text = pushgateway.format_text(
            {"a_nan": float("nan"), "b_inf": float("inf"), "c_neg": float("-inf"), "bad-name": 1}
        )
    assert "a_nan NaN\n" in text
    assert "b_inf +Inf\n" in text
    assert "c_neg -Inf\n" in text
    assert "bad-name" not in text
    assert "not a valid Prometheus metric name" in caplog.text
    parsed = parse(text)
    assert parsed["b_inf"] == float("inf")


def test_grouping_path_quotes_and_base64_encodes() -> None:
    assert pushgateway.grouping_path("cosine_retrain", {"run": "jan-mar.2"}) == (
        "/metrics/job/cosine_retrain/run/jan-mar.2"
    )
    encoded = base64.urlsafe_b64encode(b"a/b").decode()
    assert pushgateway.grouping_path("j", {"run": "a/b"}) == f"/metrics/job/j/run@base64/{encoded}"
    assert pushgateway.grouping_path("j", {"run": ""}) == "/metrics/job/j/run@base64/="
    with pytest.raises(ValueError, match="label name"):
        pushgateway.grouping_path("j", {"bad-label": "x"})


# ------------------------------------------------------------------------------ one push


def test_push_reaches_a_real_http_receiver(receiver: Receiver) -> None:
    values = {"cosine_retrain_lr": 0.003, "cosine_retrain_step": 120.0}
    assert pushgateway.push_run_metrics(receiver.url, "cosine_retrain", "jan-mar", values)
    (push,) = receiver.pushes
    assert push.method == "PUT"
    assert push.path == "/metrics/job/cosine_retrain/run/jan-mar"
    assert push.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert "Authorization" not in push.headers
    assert parse(push.body) == values


def test_credentials_in_the_url_become_basic_auth(receiver: Receiver) -> None:
    url = receiver.url.replace("http://", "http://pusher:s%3Acret@") + "/"
    assert pushgateway.push_run_metrics(url, "j", "r", {"x": 1.0})
    (push,) = receiver.pushes
    assert push.path == "/metrics/job/j/run/r"  # no double slash from the trailing one
    token = base64.b64encode(b"pusher:s:cret").decode()
    assert push.headers["Authorization"] == f"Basic {token}"


def test_an_error_answer_is_logged_not_raised(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.status = 500
    with caplog.at_level(logging.WARNING, logger="training.telemetry.pushgateway"):
        assert not pushgateway.push_run_metrics(receiver.url, "j", "r", {"x": 1.0})
    assert "HTTP 500" in caplog.text


def test_a_receiver_that_is_down_costs_nothing_and_raises_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="training.telemetry.pushgateway"):
        assert not pushgateway.push_run_metrics(url, "j", "r", {"x": 1.0}, timeout_s=2.0)
    assert time.monotonic() - t0 < 1.0
    assert "unreachable" in caplog.text
    assert "training goes on" in caplog.text


def test_a_hanging_receiver_costs_at_most_the_timeout(hanging: str) -> None:
    t0 = time.monotonic()
    assert not pushgateway.push_run_metrics(hanging, "j", "r", {"x": 1.0}, timeout_s=0.5)
    took = time.monotonic() - t0
    assert 0.4 < took < 1.5, took


def test_a_bad_url_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="training.telemetry.pushgateway"):
        assert not pushgateway.push_run_metrics("ftp://nowhere", "j", "r", {"x": 1.0})
    assert "http(s)://host" in caplog.text


# ------------------------------------------------------------------------------ config


def test_the_url_comes_from_config_then_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(pushgateway.ENV_URL, raising=False)
    assert pushgateway.resolve_url(load_config()) is None
    monkeypatch.setenv(pushgateway.ENV_URL, "http://pgw:9091")
    assert pushgateway.resolve_url(load_config()) == "http://pgw:9091"
    config = load_config(None, ["pushgateway.url=http://other:9091"])
    assert pushgateway.resolve_url(config) == "http://other:9091"
    with pytest.raises(ConfigError, match=r"pushgateway\.url"):
        load_config(None, ["pushgateway.url=pgw:9091"])


def test_the_pushgateway_section_never_blocks_a_resume() -> None:
    a = load_config()
    b = load_config(None, ["pushgateway.url=http://pgw:9091", "pushgateway.job=other"])
    assert "pushgateway" not in a.definition()
    assert a.definition_hash() == b.definition_hash()


# ------------------------------------------------------------------------------ the trainer


def test_the_trainer_pushes_its_latest_values(tiny: Tiny, receiver: Receiver) -> None:
    config = tiny("cost.budget_usd=5", f"pushgateway.url={receiver.url}", name="pushed")
    result = Trainer(config).run()
    assert pushgateway.flush(5.0)
    assert result.status == "completed"
    assert receiver.pushes, "the trainer pushed nothing"
    assert {p.path for p in receiver.pushes} == {"/metrics/job/cosine_retrain/run/pushed"}
    last = parse(receiver.pushes[-1].body)
    assert set(last) >= TRAINER_METRICS
    assert set(last) <= set(pushgateway.METRICS)
    assert last["cosine_retrain_step"] == last["cosine_retrain_total_steps"] == 100
    assert last["cosine_retrain_nan_count"] == 0
    assert last["cosine_retrain_budget_usd"] == 5
    assert 0 < last["cosine_retrain_cost_usd"] < 5
    assert 0 < last["cosine_retrain_lr"] <= 0.003
    assert 0.5 < last["cosine_retrain_val_auc"] <= 1
    steps = [parse(p.body)["cosine_retrain_step"] for p in receiver.pushes]
    assert steps == sorted(steps)


def test_nan_steps_are_pushed(tiny: Tiny, receiver: Receiver) -> None:
    config = tiny(
        "fault_injection.nan_steps=[12,13]", f"pushgateway.url={receiver.url}", name="nans"
    )
    Trainer(config).run()
    assert pushgateway.flush(5.0)
    assert parse(receiver.pushes[-1].body)["cosine_retrain_nan_count"] == 2


def test_a_hanging_receiver_does_not_slow_the_training_loop(
    tiny: Tiny, hanging: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every hook call returns at once; the push waits in a background thread."""
    calls: list[float] = []
    original = pushgateway.push_progress

    def timed(*args: object, **kwargs: object) -> None:
        t0 = time.perf_counter()
        original(*args, **kwargs)  # type: ignore[arg-type]
        calls.append(time.perf_counter() - t0)

    monkeypatch.setattr(pushgateway, "push_progress", timed)
    config = tiny(f"pushgateway.url={hanging}", "pushgateway.timeout_s=1.0", name="hang")
    result = Trainer(config).run()
    assert result.status == "completed"
    assert len(calls) >= 10  # one per checkpoint
    assert max(calls) < 0.05, calls
    t0 = time.monotonic()
    assert not pushgateway.flush(1.0)  # the exit flush is bounded by the timeout too
    assert time.monotonic() - t0 < 1.5


def test_without_a_url_nothing_is_pushed(
    tiny: Tiny, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(pushgateway.ENV_URL, raising=False)
    Trainer(tiny(name="silent")).run()
    assert pushgateway.flush(2.0)
    assert receiver.pushes == []


# ------------------------------------------------------------------------------ the real thing


@pytest.mark.skipif(
    shutil.which("prometheus-pushgateway") is None and shutil.which("pushgateway") is None,
    reason="no Pushgateway binary (apt-get install prometheus-pushgateway) on this machine",
)
def test_a_real_pushgateway_accepts_the_push(tmp_path: Path) -> None:
    binary = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")
    port = free_port()
    proc = subprocess.Popen(
        # Debian's build persists to /var/lib/prometheus by default: keep this one's own
        [
            str(binary),
            f"--web.listen-address=127.0.0.1:{port}",
            f"--persistence.file={tmp_path / 'pushgateway.data'}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                urllib.request.urlopen(f"{url}/-/ready", timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("the Pushgateway did not start")
                time.sleep(0.1)
        values = {"cosine_retrain_lr": 0.002, "cosine_retrain_nan_count": 3.0}
        assert pushgateway.push_run_metrics(url, "cosine_retrain", "real-run", values)
        exposed = urllib.request.urlopen(f"{url}/metrics", timeout=5).read().decode()
        found = {}
        for family in text_string_to_metric_families(exposed):
            for s in family.samples:
                if s.labels.get("run") == "real-run":
                    found[s.name] = (s.value, s.labels["job"])
        assert found["cosine_retrain_lr"] == (0.002, "cosine_retrain")
        assert found["cosine_retrain_nan_count"] == (3.0, "cosine_retrain")
        assert "push_time_seconds" in found  # what the stall alert reads
    finally:
        proc.terminate()
        proc.wait(10)
