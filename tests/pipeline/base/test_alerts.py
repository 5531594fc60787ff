"""Alerts against real receivers on 127.0.0.1: a JSON webhook (http.server in a thread)
that can answer 500, be slow or be absent, a receiver posing as Slack, and a tiny
SMTP server. Expectations (alert ids, severities, payloads, signatures) are computed
here from the documented contract, not by calling the module's own helpers."""

from __future__ import annotations

import base64
import email
import email.policy
import hashlib
import hmac
import json
import logging
import os
import socketserver
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import pytest

from pipeline.base.alerts import Alert, AlertKind, list_alerts, retry_undelivered, send_alert
from pipeline.base.alerts import transports as alerts_module
from pipeline.base.config import ConfigError, PipelineConfig, load_config
from pipeline.base.store import LocalStore, ObjectStore, StorageError
from tests.pipeline.cli_support import clear_pipeline_env
from tests.support import free_port

ROOT = Path(__file__).resolve().parents[3]

# the contract, written out independently of pipeline.base.alerts
SEVERITY = {
    "nan_detected": "critical",
    "cost_over_budget": "warning",
    "validation_failed": "warning",
    "drift_detected": "info",
    "gate_failed": "warning",
    "canary_rolled_back": "warning",
    "promoted": "info",
    "canary_needs_decision": "warning",
    "approval_timed_out": "warning",
    "alias_moved_outside": "warning",
    "spend_paused": "warning",
    "task_failed": "critical",
    "training_unhealthy": "warning",
}


def expected_id(kind: str, run_key: str) -> str:
    return hashlib.sha256(f"{kind}\n{run_key}".encode()).hexdigest()[:20]


# ------------------------------------------------------------------------------ receivers


@dataclass
class Answer:
    status: int = 200
    delay: float = 0.0
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    raw: bytes
    at: float

    @property
    def json(self) -> Any:
        return json.loads(self.raw)


class _Loopback:
    """A socket server on 127.0.0.1, served from a daemon thread until ``stop()``
    (or the end of a ``with`` block)."""

    def _serve(self, server: socketserver.ThreadingTCPServer | ThreadingHTTPServer) -> None:
        self.server = server
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Receiver(_Loopback):
    """Records every POST (when its body has been read), then answers per plan."""

    def __init__(self, port: int = 0) -> None:
        self.requests: list[Request] = []
        self.plan: deque[Answer] = deque()
        self.default = Answer()
        self.release = threading.Event()  # cuts a slow answer short at teardown
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    receiver.requests.append(
                        Request(self.path, dict(self.headers.items()), raw, time.monotonic())
                    )
                    answer = receiver.plan.popleft() if receiver.plan else receiver.default
                if answer.delay:
                    receiver.release.wait(answer.delay)
                try:
                    self.send_response(answer.status)
                    for k, v in answer.headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(answer.body)))
                    self.end_headers()
                    self.wfile.write(answer.body)
                except OSError:
                    pass  # the client gave up waiting

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        server.block_on_close = False
        self._serve(server)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def answer(self, *answers: Answer) -> None:
        self.plan.extend(answers)

    @property
    def bodies(self) -> list[Any]:
        return [r.json for r in self.requests]

    def stop(self) -> None:
        self.release.set()
        super().stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@dataclass
class Mail:
    mail_from: str
    rcpt: list[str]
    data: bytes
    auth: tuple[str, str] | None

    @property
    def message(self) -> Any:
        return email.message_from_bytes(self.data, policy=email.policy.default)


class SmtpServer(_Loopback):
    """Just enough SMTP for smtplib: EHLO/HELO, AUTH PLAIN, MAIL, RCPT, DATA, RSET, QUIT."""

    def __init__(self, delay: float = 0.0) -> None:
        self.mails: list[Mail] = []
        self.delay = delay  # before every reply: a slow server, not a dead one
        server = self

        class Handler(socketserver.StreamRequestHandler):
            def say(self, text: str) -> None:
                time.sleep(server.delay)
                self.wfile.write(text.encode() + b"\r\n")

            def handle(self) -> None:
                self.say("220 localhost test ESMTP")
                mail_from, rcpt, auth = "", [], None
                while line := self.rfile.readline():
                    command = line.decode().rstrip("\r\n")
                    verb = command.split(" ", 1)[0].upper()
                    if verb == "EHLO":
                        self.say("250-localhost\r\n250-AUTH PLAIN\r\n250 8BITMIME")
                    elif verb == "HELO":
                        self.say("250 localhost")
                    elif verb == "AUTH":
                        parts = command.split()
                        if len(parts) == 2:
                            self.say("334 ")
                            parts.append(self.rfile.readline().decode().strip())
                        _, user, password = base64.b64decode(parts[2]).decode().split("\0")
                        auth = (user, password)
                        self.say("235 2.7.0 accepted")
                    elif verb == "MAIL":
                        mail_from = command.split(":", 1)[1].split()[0].strip("<>")
                        self.say("250 ok")
                    elif verb == "RCPT":
                        rcpt.append(command.split(":", 1)[1].strip().strip("<>"))
                        self.say("250 ok")
                    elif verb == "DATA":
                        self.say("354 end with .")
                        chunks = []
                        while (row := self.rfile.readline()) not in (b".\r\n", b""):
                            chunks.append(row[1:] if row.startswith(b"..") else row)
                        server.mails.append(Mail(mail_from, list(rcpt), b"".join(chunks), auth))
                        self.say("250 queued")
                    elif verb == "RSET":
                        mail_from, rcpt = "", []
                        self.say("250 ok")
                    elif verb == "QUIT":
                        self.say("221 bye")
                        return
                    else:
                        self.say("502 not implemented")

        self._serve(socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler))


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with SmtpServer() as s:
        yield s


def closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there


# ------------------------------------------------------------------------------ config


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_pipeline_env(monkeypatch, "HTTP_PROXY", "HTTPS_PROXY")


FAST = {"timeout_s": 1.0, "retries": 2, "backoff_s": 0.05, "total_budget_s": 5.0}


def make_config(tmp_path: Path, **alerts: Any) -> PipelineConfig:
    return load_config(home=tmp_path / "home", alerts={**FAST, **alerts})


def email_config(tmp_path: Path, smtp_port: int, **alerts: Any) -> PipelineConfig:
    """Alerts by email alone, through 127.0.0.1:``smtp_port``, a@ to b@example.org
    unless ``alerts`` say otherwise."""
    return make_config(
        tmp_path,
        **{
            "channels": ["email"],
            "smtp_host": "127.0.0.1",
            "smtp_port": smtp_port,
            "email_from": "a@example.org",
            "email_to": ["b@example.org"],
            **alerts,
        },
    )


@pytest.fixture
def local(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


EXAMPLES: dict[AlertKind, tuple[str, dict[str, Any]]] = {
    AlertKind.NAN: ("3f2a9c", {"nan_count": 17, "first_step": 1204, "loss": float("nan")}),
    AlertKind.COST: ("3f2a9c", {"cost_usd": 12.5, "budget_usd": 10.0}),
    AlertKind.VALIDATION: ("flights/2013-07/v1", {"failed": ["dep_delay not null"]}),
    AlertKind.DRIFT: ("flights/2013-07/v1", {"drifted_share": 0.41, "threshold": 0.35}),
    AlertKind.GATE: ("flight_delay/7", {"auc": 0.66, "min_auc": 0.68}),
    AlertKind.ROLLBACK: ("flight_delay/7", {"canary_logloss": 0.52, "champion_logloss": 0.49}),
    AlertKind.PROMOTED: ("flight_delay/7", {"auc": 0.71, "previous": "6"}),
    AlertKind.CANARY_UNDECIDED: ("flight_delay/7", {"hours_waiting": 80.0}),
    AlertKind.APPROVAL_TIMEOUT: ("flight_delay/7", {"version": "7", "champion": "6"}),
    AlertKind.ALIAS_OUTSIDE: ("flight_delay-champion-t", {"recorded": "6", "registry": "7"}),
    AlertKind.SPEND: ("2026-11", {"total_usd": 130.0, "budget_usd": 100.0}),
    AlertKind.TASK_FAILED: ("retrain/manual__1/train/try1", {"exception": "RuntimeError: x"}),
    AlertKind.TRAINING: ("3f2a9c", {"findings": [{"kind": "flat_loss", "value": 0.01}]}),
}


# ------------------------------------------------------------------------------ payloads


@pytest.mark.parametrize("kind", list(AlertKind))
def test_webhook_payload_for_each_kind(
    kind: AlertKind, receiver: Receiver, local: LocalStore, tmp_path: Path
) -> None:
    run_key, details = EXAMPLES[kind]
    config = make_config(tmp_path, webhook_url=receiver.url())
    alert = Alert(kind, run_key, f"{kind.value} happened\nsecond line", "figures here", details)
    before = datetime.now(UTC).replace(microsecond=0)
    result = send_alert(alert, config=config, store=local)
    after = datetime.now(UTC)

    assert (result.sent, result.duplicate, result.attempts) == (True, False, 1)
    assert result.channels == {"webhook": "ok"}
    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    body = request.json
    created = datetime.fromisoformat(body.pop("created_at").replace("Z", "+00:00"))
    assert before <= created <= after
    want_details = {k: ("nan" if k == "loss" else v) for k, v in details.items()}
    assert body == {
        "schema": "cosine-retrain.alert/v1",
        "source": "cosine-retrain",
        "alert_id": expected_id(kind.value, run_key),
        "kind": kind.value,
        "severity": SEVERITY[kind.value],
        "run_key": run_key,
        "title": f"{kind.value} happened second line",
        "text": "figures here",
        "details": want_details,
    }
    assert request.path == "/hook"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Idempotency-Key"] == expected_id(kind.value, run_key)
    assert b"NaN" not in request.raw  # strict JSON: receivers reject a bare NaN


def test_same_alert_twice_posts_once(
    receiver: Receiver, store: ObjectStore, tmp_path: Path
) -> None:
    config = make_config(tmp_path, webhook_url=receiver.url())
    alert = Alert(AlertKind.GATE, "flight_delay/7", "gate failed", "auc 0.66 < 0.68")
    first = send_alert(alert, config=config, store=store)
    again = send_alert(alert, config=config, store=store)
    assert (first.sent, first.duplicate) == (True, False)
    assert (again.sent, again.duplicate, again.attempts) == (False, True, 0)
    assert again.channels == {"webhook": "ok"}
    assert len(receiver.requests) == 1
    # another run key, or another kind with the same key, is another alert
    send_alert(Alert(AlertKind.GATE, "flight_delay/8", "t", "x"), config=config, store=store)
    send_alert(Alert(AlertKind.ROLLBACK, "flight_delay/7", "t", "x"), config=config, store=store)
    assert [b["run_key"] for b in receiver.bodies] == [
        "flight_delay/7",
        "flight_delay/8",
        "flight_delay/7",
    ]
    assert [b["kind"] for b in receiver.bodies][2] == "canary_rolled_back"


def test_concurrent_senders_post_once(
    receiver: Receiver, store: ObjectStore, tmp_path: Path
) -> None:
    config = make_config(tmp_path, webhook_url=receiver.url())
    alert = Alert(AlertKind.NAN, "run-42", "NaN in training", "17 non-finite steps")
    barrier = threading.Barrier(8)
    results = []

    def sender() -> None:
        barrier.wait()
        results.append(send_alert(alert, config=config, store=store))

    threads = [threading.Thread(target=sender) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 8
    assert len(receiver.requests) == 1
    assert sum(r.sent for r in results) == 1
    assert sum(r.duplicate for r in results) == 7
    for r in results:
        assert r.channels["webhook"] == "ok" or r.channels["webhook"].startswith("pending:")


SENDER = """
import sys, time
from pipeline.base.alerts import Alert, send_alert
from pipeline.base.config import load_config
from pipeline.base.store import LocalStore
store, url, start = LocalStore(sys.argv[1]), sys.argv[2], float(sys.argv[3])
config = load_config(home=sys.argv[1], alerts={"webhook_url": url})
alert = Alert("cost_over_budget", "run-7", "over budget", "$12 of $10")
time.sleep(max(0.0, start - time.time()))
print(send_alert(alert, config=config, store=store).sent)
"""


def test_concurrent_processes_post_once(receiver: Receiver, tmp_path: Path) -> None:
    start = time.time() + 3.0  # every process has imported by then
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SENDER, str(tmp_path / "store"), receiver.url(), str(start)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(4)
    ]
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(outs) == ["False", "False", "False", "True"]
    assert len(receiver.requests) == 1


# ------------------------------------------------------------------------------ failures


def test_500_then_200_is_retried_and_counted(
    receiver: Receiver, local: LocalStore, tmp_path: Path
) -> None:
    receiver.answer(Answer(500, body=b"boom"), Answer(503), Answer(200))
    config = make_config(tmp_path, webhook_url=receiver.url(), retries=3, backoff_s=0.1)
    alert = Alert(AlertKind.ROLLBACK, "flight_delay/9", "canary rolled back", "worse by 0.03")
    result = send_alert(alert, config=config, store=local)
    assert (result.sent, result.attempts, result.channels) == (True, 3, {"webhook": "ok"})
    assert len(receiver.requests) == 3
    assert len({r.raw for r in receiver.requests}) == 1  # the very same payload each time
    gaps = [b.at - a.at for a, b in zip(receiver.requests, receiver.requests[1:], strict=False)]
    assert gaps[0] >= 0.1
    assert gaps[1] >= 0.2
    (status,) = list_alerts(local)
    assert status.channels == {"webhook": "delivered"}
    record = json.loads(local.get_bytes(f"{status.prefix}/webhook/round-0001.result.json"))
    assert (record["status"], record["attempts"]) == ("ok", 3)


def test_retries_stop_at_the_budget(receiver: Receiver, local: LocalStore, tmp_path: Path) -> None:
    receiver.default = Answer(500)
    config = make_config(
        tmp_path, webhook_url=receiver.url(), retries=10, backoff_s=0.2, total_budget_s=1.0
    )
    t0 = time.monotonic()
    result = send_alert(Alert(AlertKind.GATE, "v3", "t", "x"), config=config, store=local)
    elapsed = time.monotonic() - t0
    assert elapsed < 1.3
    # attempts at 0, 0.2, 0.6 s; the next pause (0.8 s) would end past the budget
    assert result.attempts == len(receiver.requests) == 3
    assert result.channels["webhook"].startswith("failed: webhook http://127.0.0.1")
    assert "HTTP 500" in result.channels["webhook"]


def test_receiver_down_then_retry_delivers_exactly_once(store: ObjectStore, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    config = make_config(tmp_path, webhook_url=url, retries=3, backoff_s=0.1, total_budget_s=2.0)
    alert = Alert(AlertKind.VALIDATION, "flights/2013-07/v2", "batch refused", "3 failures")
    t0 = time.monotonic()
    result = send_alert(alert, config=config, store=store)
    elapsed = time.monotonic() - t0
    assert elapsed < 2.0  # refused connections cost only the pauses: 0.1 + 0.2 + 0.4
    assert (result.sent, result.attempts) == (False, 4)
    assert result.channels["webhook"].startswith("failed: cannot reach webhook http://127.0.0.1")
    (status,) = list_alerts(store)
    assert status.channels == {"webhook": "failed"}

    # the same alert again while the receiver is still down: retried, still one record
    again = send_alert(alert, config=config, store=store)
    assert again.duplicate
    assert not again.sent
    assert again.attempts == 4

    receiver = Receiver(port)
    try:
        done = retry_undelivered(config=config, store=store)
        assert len(done) == 1
        assert done[0][1].channels == {"webhook": "ok"}
        assert retry_undelivered(config=config, store=store) == []
        assert send_alert(alert, config=config, store=store).channels == {"webhook": "ok"}
        assert len(receiver.requests) == 1
        assert receiver.bodies[0]["alert_id"] == expected_id("validation_failed", alert.run_key)
    finally:
        receiver.stop()
    (status,) = list_alerts(store)
    assert status.channels == {"webhook": "delivered"}


def test_slow_receiver_does_not_block_and_is_not_sent_twice(
    receiver: Receiver, local: LocalStore, tmp_path: Path
) -> None:
    receiver.answer(Answer(200, delay=10.0))
    config = make_config(tmp_path, webhook_url=receiver.url(), timeout_s=0.5, total_budget_s=2.0)
    alert = Alert(AlertKind.DRIFT, "flights/2013-08/v1", "drift", "41% of columns drifted")
    t0 = time.monotonic()
    result = send_alert(alert, config=config, store=local)
    elapsed = time.monotonic() - t0
    assert elapsed < 1.2
    assert result.attempts == 1
    assert not result.sent
    assert result.channels["webhook"].startswith("unknown: webhook http://127.0.0.1")
    assert len(receiver.requests) == 1  # it has the alert, just answers late

    # neither a retry pass nor the same alert again re-sends an unconfirmed delivery
    assert retry_undelivered(config=config, store=local) == []
    assert send_alert(alert, config=config, store=local).attempts == 0
    assert len(receiver.requests) == 1
    # an operator can ask for it (the payload keeps its alert_id for receivers that dedupe)
    done = retry_undelivered(config=config, store=local, include_unknown=True)
    assert done[0][1].channels == {"webhook": "ok"}
    assert len(receiver.requests) == 2
    assert receiver.requests[0].raw == receiver.requests[1].raw


def test_client_errors_are_not_retried(
    receiver: Receiver, local: LocalStore, tmp_path: Path
) -> None:
    receiver.answer(Answer(404, body=b"no such hook"))
    config = make_config(tmp_path, webhook_url=receiver.url(), retries=3)
    result = send_alert(Alert(AlertKind.GATE, "v4", "t", "x"), config=config, store=local)
    assert result.attempts == 1
    assert result.channels["webhook"].startswith("failed: webhook http://127.0.0.1")
    assert "HTTP 404 'no such hook'" in result.channels["webhook"]
    # fixed on the receiver side: the retry pass delivers it
    assert retry_undelivered(config=config, store=local)[0][1].channels == {"webhook": "ok"}
    assert len(receiver.requests) == 2


def test_retry_after_is_honoured(receiver: Receiver, local: LocalStore, tmp_path: Path) -> None:
    receiver.answer(Answer(429, headers={"Retry-After": "0.6"}), Answer(200))
    config = make_config(tmp_path, webhook_url=receiver.url(), backoff_s=0.01)
    result = send_alert(Alert(AlertKind.GATE, "v5", "t", "x"), config=config, store=local)
    assert result.sent
    assert result.attempts == 2
    assert receiver.requests[1].at - receiver.requests[0].at >= 0.6


def test_redirects_are_not_followed(receiver: Receiver, local: LocalStore, tmp_path: Path) -> None:
    receiver.answer(Answer(302, headers={"Location": receiver.url("/elsewhere")}))
    config = make_config(tmp_path, webhook_url=receiver.url())
    result = send_alert(Alert(AlertKind.GATE, "v6", "t", "x"), config=config, store=local)
    assert "HTTP 302" in result.channels["webhook"]
    assert "redirects" in result.channels["webhook"]
    assert [r.path for r in receiver.requests] == ["/hook"]


def test_a_sender_that_vanished_mid_round(
    receiver: Receiver, local: LocalStore, tmp_path: Path
) -> None:
    config = make_config(tmp_path, webhook_url=receiver.url(), total_budget_s=5.0)
    alert = Alert(AlertKind.COST, "run-9", "over budget", "$12 of $10")
    # what a sender leaves when it dies between claiming round 1 and recording its outcome
    prefix = "alerts/cost_over_budget/run-9"
    record = {
        "schema": "cosine-retrain.alert/v1",
        "source": "cosine-retrain",
        "alert_id": expected_id("cost_over_budget", "run-9"),
        "kind": "cost_over_budget",
        "severity": "warning",
        "run_key": "run-9",
        "title": "over budget",
        "text": "$12 of $10",
        "details": {},
        "created_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "channels": ["webhook"],
    }
    local.put_bytes(f"{prefix}/alert.json", json.dumps(record).encode())
    claimed = time.time()
    local.put_bytes(
        f"{prefix}/webhook/round-0001.json",
        json.dumps({"round": 1, "claimed_at_epoch": claimed}).encode(),
    )
    # within its lease it may still be sending: nobody else does
    result = send_alert(alert, config=config, store=local)
    assert result.duplicate
    assert result.channels["webhook"].startswith("pending:")
    # past the lease its outcome is unknown: only an explicit --unknown retry re-sends
    later = claimed + 5.0 + 61.0
    assert retry_undelivered(config=config, store=local, now=later) == []
    done = retry_undelivered(config=config, store=local, include_unknown=True, now=later)
    assert done[0][1].channels == {"webhook": "ok"}
    assert len(receiver.requests) == 1
    assert local.exists(f"{prefix}/webhook/round-0002.result.json")


def test_old_alerts_are_left_alone(local: LocalStore, tmp_path: Path) -> None:
    config = make_config(tmp_path, webhook_url=closed_url(), retries=0)
    send_alert(Alert(AlertKind.GATE, "v7", "t", "x"), config=config, store=local)
    week = 7 * 24 * 3600
    assert retry_undelivered(config=config, store=local, now=time.time() + week + 60) == []
    assert len(retry_undelivered(config=config, store=local, max_age_s=None)) == 1


# ------------------------------------------------------------------------------ channels


SLACK_PATH = "/services/T0001/B0002/sEcReTtOkEn42"


def test_slack_payload(
    receiver: Receiver, local: LocalStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    config = make_config(tmp_path, channels=["slack"], slack_webhook_url=receiver.url(SLACK_PATH))
    alert = Alert(
        AlertKind.GATE,
        "flight_delay/7",
        "Gate failed for flight_delay v7",
        "AUC 0.661 < 0.680 <!channel> & co",
        {"auc": 0.66123456, "min_auc": 0.68, "slices": {"EWR": 0.6}, "passed": False},
    )
    result = send_alert(alert, config=config, store=local)
    assert result.channels == {"slack": "ok"}
    (request,) = receiver.requests
    assert request.path == SLACK_PATH
    body = request.json
    assert set(body) == {"text", "blocks"}
    assert "Gate failed for flight_delay v7" in body["text"]
    assert "[warning]" in body["text"]
    header, section, fields, context = body["blocks"]
    assert header == {
        "type": "header",
        "text": {"type": "plain_text", "text": "Gate failed for flight_delay v7", "emoji": True},
    }
    assert section["type"] == "section"
    assert section["text"]["type"] == "mrkdwn"
    assert section["text"]["text"] == "AUC 0.661 &lt; 0.680 &lt;!channel&gt; &amp; co"
    assert fields["type"] == "section"
    assert [f["text"] for f in fields["fields"]] == [
        "*auc*\n0.661235",
        "*min_auc*\n0.68",
        "*passed*\nFalse",
    ]  # nested values stay out of the fields
    assert context["type"] == "context"
    line = context["elements"][0]["text"]
    assert "`gate_failed`" in line
    assert expected_id("gate_failed", "flight_delay/7") in line
    # the Slack URL is a secret: not in the logs, not in the records
    assert "sEcReTtOkEn42" not in caplog.text
    for key in local.list("alerts"):
        assert b"sEcReTtOkEn42" not in local.get_bytes(key)


def test_slack_answers_are_reported(receiver: Receiver, local: LocalStore, tmp_path: Path) -> None:
    receiver.answer(Answer(400, body=b"invalid_blocks"))
    config = make_config(tmp_path, channels=["slack"], slack_webhook_url=receiver.url(SLACK_PATH))
    result = send_alert(Alert(AlertKind.GATE, "v1", "t", "x"), config=config, store=local)
    assert result.channels["slack"].startswith("failed: Slack http://127.0.0.1")
    assert "HTTP 400 'invalid_blocks'" in result.channels["slack"]
    assert "sEcReT" not in result.channels["slack"]


def test_email_through_a_local_smtp_server(
    smtp: SmtpServer, local: LocalStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    config = email_config(
        tmp_path,
        smtp.port,
        smtp_user="alerts",
        smtp_password="hunter2-pw",
        email_from="cosine-retrain@example.org",
        email_to=["ml-oncall@example.org", "lead@example.org"],
    )
    alert = Alert(
        AlertKind.NAN,
        "3f2a9c",
        "NaN during training run 3f2a9c",
        "17 non-finite steps\nfirst at step 1204\n.\n..a dotted line",
        {"nan_count": 17, "smtp_password": "should-not-show"},
    )
    result = send_alert(alert, config=config, store=local)
    assert result.channels == {"email": "ok"}
    assert result.sent
    (mail,) = smtp.mails
    assert mail.auth == ("alerts", "hunter2-pw")
    assert mail.mail_from == "cosine-retrain@example.org"
    assert mail.rcpt == ["ml-oncall@example.org", "lead@example.org"]
    msg = mail.message
    assert msg["Subject"] == "[cosine-retrain] [critical] NaN during training run 3f2a9c"
    assert msg["To"] == "ml-oncall@example.org, lead@example.org"
    assert msg["Message-ID"] == f"<{expected_id('nan_detected', '3f2a9c')}@cosine-retrain.alerts>"
    text = msg.get_content().replace("\r\n", "\n")  # SMTP lines end in CRLF
    assert "17 non-finite steps\nfirst at step 1204\n.\n..a dotted line" in text
    assert '"nan_count": 17' in text
    assert '"smtp_password": "***"' in text
    assert "hunter2-pw" not in caplog.text
    assert "should-not-show" not in caplog.text
    for key in local.list("alerts"):
        assert b"hunter2-pw" not in local.get_bytes(key)


def test_email_server_down(local: LocalStore, tmp_path: Path) -> None:
    config = email_config(tmp_path, free_port(), retries=1)
    result = send_alert(Alert(AlertKind.GATE, "v1", "t", "x"), config=config, store=local)
    assert result.attempts == 2
    assert result.channels["email"].startswith("failed: cannot reach SMTP 127.0.0.1:")


def test_a_slow_smtp_conversation_is_cut_at_the_budget(local: LocalStore, tmp_path: Path) -> None:
    # every reply takes 0.7 s: each socket operation is within timeout_s, the whole
    # conversation (greeting, EHLO, MAIL, RCPT, DATA, ...) is not within the budget
    slow = SmtpServer(delay=0.7)
    try:
        config = email_config(tmp_path, slow.port, timeout_s=1.0, total_budget_s=1.5)
        t0 = time.monotonic()
        result = send_alert(Alert(AlertKind.GATE, "v9", "t", "x"), config=config, store=local)
        elapsed = time.monotonic() - t0
        assert elapsed < 1.5 + 1.0 + 0.3  # the budget and the grace for writing the outcome
        assert result.channels["email"].startswith("pending: still delivering")
        assert not result.sent
        # the thread goes on and records what happened; nothing is sent twice meanwhile
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not local.list("alerts/gate_failed/v9/email")[1:]:
            time.sleep(0.1)
        (status,) = list_alerts(local)
        assert status.channels == {"email": "delivered"}
        assert len(slow.mails) == 1
    finally:
        slow.stop()


def test_channels_go_side_by_side(
    receiver: Receiver, smtp: SmtpServer, local: LocalStore, tmp_path: Path
) -> None:
    slack = Receiver()
    try:
        receiver.default = Answer(200, delay=10.0)  # the webhook is slow
        config = make_config(
            tmp_path,
            channels=["webhook", "slack", "email"],
            webhook_url=receiver.url(),
            slack_webhook_url=slack.url(SLACK_PATH),
            smtp_host="127.0.0.1",
            smtp_port=smtp.port,
            email_from="a@example.org",
            email_to=["b@example.org"],
            timeout_s=1.0,
        )
        t0 = time.monotonic()
        alert = Alert(AlertKind.PROMOTED, "flight_delay/7", "v7 is champion", "AUC 0.71")
        result = send_alert(alert, config=config, store=local)
        elapsed = time.monotonic() - t0
        assert elapsed < 2.0
        assert result.channels["slack"] == "ok"
        assert result.channels["email"] == "ok"
        assert result.channels["webhook"].startswith("unknown:")
        assert result.sent
        assert not result.delivered
        assert len(slack.requests) == len(smtp.mails) == len(receiver.requests) == 1
        # a later pass leaves the two delivered channels alone
        receiver.default = Answer(200)
        done = retry_undelivered(config=config, store=local, include_unknown=True)
        assert done[0][1].channels == {"webhook": "ok", "slack": "ok", "email": "ok"}
        assert len(slack.requests) == len(smtp.mails) == 1
    finally:
        slack.stop()


def test_signed_webhook(receiver: Receiver, local: LocalStore, tmp_path: Path) -> None:
    config = make_config(tmp_path, webhook_url=receiver.url(), webhook_secret="s3cr3t-key")
    send_alert(Alert(AlertKind.GATE, "v2", "t", "x"), config=config, store=local)
    (request,) = receiver.requests
    want = hmac.new(b"s3cr3t-key", request.raw, hashlib.sha256).hexdigest()
    assert request.headers["X-Cosine-Retrain-Signature"] == f"sha256={want}"
    assert b"s3cr3t" not in request.raw


def test_log_only_without_a_webhook_url(
    local: LocalStore,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(alerts_module, "_LOG_ONLY_NOTED", threading.Event())
    caplog.set_level(logging.INFO, logger="pipeline.base.alerts")
    config = make_config(tmp_path)
    first = send_alert(
        Alert(AlertKind.NAN, "r1", "NaN in r1", "17 steps"), config=config, store=local
    )
    send_alert(
        Alert(AlertKind.PROMOTED, "v7", "v7 promoted", "AUC 0.71"), config=config, store=local
    )
    assert first.channels == {"log": "ok"}
    assert first.sent
    assert caplog.text.count("alerts.webhook_url is not set") == 1
    levels = {r.getMessage().split("\n")[0]: r.levelname for r in caplog.records}
    assert levels["ALERT [critical] NaN in r1 (nan_detected r1): 17 steps"] == "ERROR"
    assert levels["ALERT [info] v7 promoted (promoted v7): AUC 0.71"] == "WARNING"
    # deduplicated like any other channel
    assert send_alert(Alert(AlertKind.NAN, "r1", "x", "y"), config=config, store=local).duplicate


def test_kind_and_severity_filters(receiver: Receiver, local: LocalStore, tmp_path: Path) -> None:
    config = make_config(
        tmp_path,
        webhook_url=receiver.url(),
        kinds=["gate_failed", "promoted"],
        min_severity="warning",
    )
    dropped = send_alert(Alert(AlertKind.NAN, "r", "t", "x"), config=config, store=local)
    info = send_alert(Alert(AlertKind.PROMOTED, "v", "t", "x"), config=config, store=local)
    bumped = Alert(AlertKind.PROMOTED, "v2", "t", "x", severity="critical")
    sent = send_alert(bumped, config=config, store=local)
    assert dropped.channels == info.channels == {}
    assert not dropped.sent
    assert not info.sent
    assert sent.sent
    assert [b["run_key"] for b in receiver.bodies] == ["v2"]
    assert local.list("alerts") == sorted(local.list("alerts/promoted/v2"))
    disabled = make_config(tmp_path, webhook_url=receiver.url(), enabled=False)
    assert (
        send_alert(Alert(AlertKind.GATE, "g", "t", "x"), config=disabled, store=local).channels
        == {}
    )
    assert len(receiver.requests) == 1


class BrokenStore(LocalStore):
    def put_bytes(self, key: str, data: bytes, *, overwrite: bool = False) -> None:
        raise StorageError("the store is down")


def test_a_failing_store_does_not_stop_the_alert(receiver: Receiver, tmp_path: Path) -> None:
    config = make_config(tmp_path, webhook_url=receiver.url())
    store = BrokenStore(tmp_path / "broken")
    result = send_alert(Alert(AlertKind.NAN, "r", "t", "x"), config=config, store=store)
    assert result.sent
    assert result.channels == {"webhook": "ok"}
    assert len(receiver.requests) == 1


def test_run_keys_that_are_not_key_safe(
    receiver: Receiver, local: LocalStore, tmp_path: Path
) -> None:
    config = make_config(tmp_path, webhook_url=receiver.url())
    for key in ("flights/2013-07", "flights 2013-07", "../../etc", "flights/2013-07"):
        send_alert(Alert(AlertKind.DRIFT, key, "t", "x"), config=config, store=local)
    assert [b["run_key"] for b in receiver.bodies] == [
        "flights/2013-07",
        "flights 2013-07",
        "../../etc",
    ]
    folders = sorted({k.split("/")[2] for k in local.list("alerts")})
    assert len(folders) == 3
    assert all("/" not in f and ".." not in f.split("--")[0] for f in folders)
    assert all(p.is_relative_to(local.root) for p in local.root.rglob("*"))


def test_alert_values() -> None:
    alert = Alert("nan_detected", "  run-1 ", "a\ntitle", "t", {"lr": float("inf"), "token": "x"})
    assert alert.kind is AlertKind.NAN
    assert alert.severity == "critical"
    assert (alert.run_key, alert.title) == ("run-1", "a title")
    assert alert.details == {"lr": "inf", "token": "***"}
    assert alert.alert_id == expected_id("nan_detected", "run-1")
    assert Alert(AlertKind.NAN, "r", "t", "x", severity="info").severity == "info"
    with pytest.raises(ValueError, match="unknown alert kind 'nan'"):
        Alert("nan", "r", "t", "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="run_key must be a non-empty string"):
        Alert(AlertKind.NAN, " ", "t", "x")
    with pytest.raises(ValueError, match="severity"):
        Alert(AlertKind.NAN, "r", "t", "x", severity="loud")  # type: ignore[arg-type]
    assert len(Alert(AlertKind.NAN, "r", "x" * 500, "y").title) == 200


# ------------------------------------------------------------------------------ config, CLI


def test_alerts_config_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COSINE_RETRAIN_ALERTS__CHANNELS", '["webhook","slack"]')
    monkeypatch.setenv("COSINE_RETRAIN_ALERTS__SLACK_WEBHOOK_URL", "https://hooks.slack.com/x")
    monkeypatch.setenv("COSINE_RETRAIN_ALERTS__TIMEOUT_S", "2.5")
    monkeypatch.setenv("COSINE_RETRAIN_BUDGET__MONTHLY_USD", "250")
    config = load_config()
    assert config.alerts.channels == ["webhook", "slack"]
    assert config.alerts.timeout_s == 2.5
    assert config.budget.monthly_usd == 250.0
    assert not config.budget.pause_scheduled
    assert "hooks.slack.com" not in json.dumps(config.describe())


@pytest.mark.parametrize(
    ("alerts", "message"),
    [
        ({"channels": ["slack"]}, "alerts.slack_webhook_url is required"),
        ({"channels": ["email"], "smtp_host": "h"}, "alerts.smtp_host, alerts.email_from"),
        ({"kinds": ["nan"]}, "alerts.kinds: unknown kind(s) ['nan']"),
        ({"smtp_user": "u"}, "alerts.smtp_user and alerts.smtp_password go together"),
        ({"timeout_s": 0}, "COSINE_RETRAIN_ALERTS__TIMEOUT_S"),
        ({"channels": ["pager"]}, "alerts.channels.0"),
    ],
)
def test_alerts_config_errors(alerts: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(alerts=alerts)
    assert message in str(info.value)


def test_cli_alerts_test_retry_list(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.apps.cli import main

    port = free_port()
    monkeypatch.setenv("COSINE_RETRAIN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COSINE_RETRAIN_ALERTS__WEBHOOK_URL", f"http://127.0.0.1:{port}/hook")
    monkeypatch.setenv("COSINE_RETRAIN_ALERTS__BACKOFF_S", "0.05")
    monkeypatch.chdir(ROOT)
    code = main(["alerts", "test", "--kind", "gate_failed", "--run-key", "cli-1"])
    out = capsys.readouterr().out
    assert code == 1
    assert out.startswith(
        f"test alert gate_failed cli-1 (alert id {expected_id('gate_failed', 'cli-1')})"
    )
    assert "  webhook: failed: cannot reach webhook http://127.0.0.1" in out

    receiver = Receiver(port)
    try:
        assert main(["alerts", "retry"]) == 0
        out = capsys.readouterr().out
        assert out.splitlines()[:3] == [
            "1 undelivered alert(s) re-sent",
            f"gate_failed cli-1 (alert id {expected_id('gate_failed', 'cli-1')})",
            "  webhook: ok",
        ]
        assert main(["alerts", "test", "--json"]) == 0
        data = json.loads(capsys.readouterr().out)
        assert data["channels"] == {"webhook": "ok"}
        assert data["kind"] == "promoted"
        assert main(["alerts", "--json", "list"]) == 0
        listed = json.loads(capsys.readouterr().out)["alerts"]
        assert sorted(a["kind"] for a in listed) == ["gate_failed", "promoted"]
        assert all(a["channels"] == {"webhook": "delivered"} for a in listed)
        assert [b["kind"] for b in receiver.bodies] == ["gate_failed", "promoted"]
    finally:
        receiver.stop()
    assert main(["alerts"]) == 2
    assert "choose an action" in capsys.readouterr().err
