"""A small fault-injecting HTTP proxy for the services faults tests.

:class:`FaultProxy` listens on 127.0.0.1 and forwards each HTTP/1.1 request to
one upstream server (moto's S3 server, an MLflow server), one request per
connection (``Connection: close`` both ways). Between the client and the
upstream it can:

- **refuse connections**: :meth:`FaultProxy.close_port` closes the listening
  socket (the client gets ``ECONNREFUSED``) until :meth:`FaultProxy.open_port`
  binds the same port again; :meth:`FaultProxy.reset_for` accepts and resets;
- **answer an error status**: :meth:`FaultProxy.fail` answers 500/503 to the
  next ``n`` matching requests, or to every matching request for ``seconds``,
  without forwarding them (the upstream never sees them);
- **lose the answer**: :meth:`FaultProxy.drop_response` forwards a matching
  request, lets the upstream do the work, then closes the client's connection
  without a byte of the answer (a server or network dying at the worst time);
- **cut the request**: :meth:`FaultProxy.cut_request` sends the upstream only the
  headers and half of the body, then closes both sides.

Every fault is counted in :attr:`FaultProxy.injected`, so a test can assert that
what it meant to inject was injected. Stdlib only.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["FaultProxy", "Request"]

_REASONS = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    head: bytes  # request line + headers, as received
    body: bytes  # raw body (chunked framing kept)


Match = Callable[[Request], bool]


def _any(_: Request) -> bool:
    return True


@dataclass
class _Rule:
    kind: str  # "status", "drop", "cut", "reset"
    match: Match
    left: int | None  # requests still to fault (None: until `until`)
    until: float | None  # monotonic deadline (None: until `left` is spent)
    status: int = 503

    def take(self, request: Request | None) -> bool:
        now = time.monotonic()
        if self.until is not None and now >= self.until:
            return False
        if self.left is not None and self.left <= 0:
            return False
        if request is not None and not self.match(request):
            return False
        if self.left is not None:
            self.left -= 1
        return True

    @property
    def spent(self) -> bool:
        if self.until is not None and time.monotonic() >= self.until:
            return True
        return self.left is not None and self.left <= 0


class FaultProxy:
    """Forward 127.0.0.1:``port`` to ``upstream``; inject faults on demand."""

    def __init__(self, upstream_host: str, upstream_port: int, *, port: int = 0) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._lock = threading.Lock()
        self._rules: list[_Rule] = []
        self.injected: Counter[str] = Counter()
        self.forwarded = 0
        self.seen: list[tuple[str, str]] = []  # (method, path) of every request read
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.port = port
        self.open_port()

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def open_port(self) -> None:
        """Listen (again) on the proxy's port."""
        if self._listener is not None:
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(64)
        self.port = sock.getsockname()[1]
        self._listener = sock
        self._thread = threading.Thread(target=self._accept_loop, args=(sock,), daemon=True)
        self._thread.start()

    def close_port(self) -> None:
        """Stop listening: new connections are refused until :meth:`open_port`."""
        sock, self._listener = self._listener, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def stop(self) -> None:
        self._stopping = True
        self.close_port()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- faults -----------------------------------------------------------------------------

    def _add(self, rule: _Rule) -> None:
        with self._lock:
            self._rules.append(rule)

    def fail(
        self,
        status: int = 503,
        *,
        n: int | None = None,
        seconds: float | None = None,
        match: Match = _any,
    ) -> None:
        """Answer ``status`` to the next ``n`` matching requests, or for ``seconds``."""
        if (n is None) == (seconds is None):
            raise ValueError("give exactly one of n and seconds")
        until = None if seconds is None else time.monotonic() + seconds
        self._add(_Rule("status", match, n, until, status))

    def reset_for(self, seconds: float) -> None:
        """Accept and reset every connection for ``seconds``."""
        self._add(_Rule("reset", _any, None, time.monotonic() + seconds))

    def drop_response(self, *, n: int = 1, match: Match = _any) -> None:
        """Forward the next ``n`` matching requests but never answer them."""
        self._add(_Rule("drop", match, n, None))

    def cut_request(self, *, n: int = 1, match: Match = _any) -> None:
        """Send the upstream half of the next ``n`` matching requests' bodies, then hang up."""
        self._add(_Rule("cut", match, n, None))

    def clear(self) -> None:
        """Forget every fault still to inject, and the counts."""
        with self._lock:
            self._rules.clear()
            self.injected.clear()
            self.seen.clear()

    @property
    def pending(self) -> bool:
        """Whether some requested fault is still to be injected."""
        with self._lock:
            return any(not r.spent for r in self._rules)

    def _rule_for(self, request: Request | None) -> _Rule | None:
        with self._lock:
            self._rules = [r for r in self._rules if not r.spent]
            for rule in self._rules:
                if (request is None) == (rule.kind == "reset") and rule.take(request):
                    self.injected[rule.kind if rule.kind != "status" else str(rule.status)] += 1
                    return rule
        return None

    # -- serving ----------------------------------------------------------------------------

    def _accept_loop(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn:
                conn.settimeout(60)
                if self._rule_for(None) is not None:
                    _reset(conn)
                    return
                request = _read_request(conn)
                if request is None:
                    return
                with self._lock:
                    self.seen.append((request.method, request.path))
                rule = self._rule_for(request)
                if rule is not None and rule.kind == "status":
                    conn.sendall(_error_response(rule.status))
                    return
                if rule is not None and rule.kind == "cut":
                    self._forward_cut(request)
                    _reset(conn)
                    return
                answer = self._forward(request)
                if rule is not None and rule.kind == "drop":
                    _reset(conn)
                    return
                conn.sendall(answer)
        except OSError:
            return

    def _upstream_request(self, request: Request) -> bytes:
        lines = request.head.split(b"\r\n")
        kept = [
            line
            for line in lines[1:]
            if line and not line.lower().startswith((b"connection:", b"keep-alive:"))
        ]
        return b"\r\n".join([lines[0], *kept, b"Connection: close", b"", b""])

    def _forward(self, request: Request) -> bytes:
        with socket.create_connection(self.upstream, timeout=120) as up:
            up.sendall(self._upstream_request(request) + request.body)
            chunks = []
            while True:
                data = up.recv(65536)
                if not data:
                    break
                chunks.append(data)
        with self._lock:
            self.forwarded += 1
        return b"".join(chunks)

    def _forward_cut(self, request: Request) -> None:
        with socket.create_connection(self.upstream, timeout=30) as up:
            up.sendall(self._upstream_request(request) + request.body[: len(request.body) // 2])
            time.sleep(0.2)
            _reset(up)


def _reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0): the peer sees a reset, not a clean end."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


def _error_response(status: int) -> bytes:
    code = {500: "InternalError", 503: "SlowDown"}.get(status, "ServiceUnavailable")
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
        f"<Message>injected by the fault proxy</Message></Error>"
    ).encode()
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        "Content-Type: application/xml\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class _Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        if not data:
            return False
        self.buf += data
        return True

    def until(self, marker: bytes) -> bytes | None:
        while marker not in self.buf:
            if not self._fill():
                return None
        i = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def exactly(self, n: int) -> bytes | None:
        while len(self.buf) < n:
            if not self._fill():
                return None
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


def _read_request(sock: socket.socket) -> Request | None:
    reader = _Reader(sock)
    head = reader.until(b"\r\n\r\n")
    if head is None:
        return None
    lines = head[:-4].split(b"\r\n")
    method, path, _ = lines[0].decode("latin-1").split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("expect", "").lower() == "100-continue":
        sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        kept = [x for x in lines if not x.lower().startswith(b"expect:")]
        head = b"\r\n".join(kept) + b"\r\n\r\n"
    body = b""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        parts = []
        while True:
            size_line = reader.until(b"\r\n")
            if size_line is None:
                return None
            parts.append(size_line)
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers, then the empty line
                    trailer = reader.until(b"\r\n")
                    if trailer is None:
                        return None
                    parts.append(trailer)
                    if trailer == b"\r\n":
                        break
                break
            chunk = reader.exactly(size + 2)
            if chunk is None:
                return None
            parts.append(chunk)
        body = b"".join(parts)
    elif headers.get("content-length"):
        got = reader.exactly(int(headers["content-length"]))
        if got is None:
            return None
        body = got
    return Request(method, path, headers, head, body)
