"""``./run ui`` stops every process it started, whichever signal stops it.

Ctrl-C (SIGINT), a supervisor (SIGTERM) and a closed terminal (SIGHUP). Before
the fix the last two ended ``python -m pipeline ui`` without running its
``finally``, and MLflow, the api-server, scheduler, dag-processor and triggerer
(each in a session of its own) kept running.

"Left" means a process of the stack: one whose environment carries this test's
home, one in the session of such a process (each component runs in its own),
or one seen while running among the ui's descendants. Airflow's processes
rewrite their titles (setproctitle), which can clobber what /proc shows of their
environment, so the environment alone would miss them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import ROOT, free_port, long_variant


def _table() -> dict[int, tuple[int, int, bytes, str]]:
    """pid -> (parent, session, environment, command line) of every live process."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # the fields after the command's ")": state ppid pgrp session ...
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if fields[0] == "Z":  # exited, not yet reaped: nothing runs
                continue
            env = (entry / "environ").read_bytes()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone, or another user's
            continue
        table[int(entry.name)] = (int(fields[1]), int(fields[3]), env, cmd.strip())
    return table


def _stack_processes(home: Path, root: int, known: set[int]) -> dict[int, str]:
    """pid -> command line of every process of the stack (see the module's text)."""
    table = _table()
    needle = f"COSINE_RETRAIN_HOME={home}".encode()
    found = {p for p, (_, _, env, _) in table.items() if needle in env.split(b"\0")}
    found |= {p for p in known if p in table}
    descendants, frontier = set(), {root}
    while frontier:
        frontier = {p for p, row in table.items() if row[0] in frontier} - descendants
        descendants |= frontier
    found |= descendants
    sessions = {table[p][1] for p in found} - {table[os.getpid()][1]}
    found |= {p for p, row in table.items() if row[1] in sessions}
    return {p: table[p][3] for p in sorted(found - {os.getpid(), root})}


@pytest.mark.slow
@pytest.mark.parametrize(
    "signum",
    [
        # SIGTERM and SIGHUP take one path (ui.main's handler); Ctrl-C Python's own
        pytest.param(signal.SIGTERM, id="SIGTERM"),
        long_variant(signal.SIGINT, reason="the same stop as SIGTERM's", id="SIGINT"),
        long_variant(signal.SIGHUP, reason="the same stop as SIGTERM's", id="SIGHUP"),
    ],
)
def test_a_stop_signal_leaves_no_process(tmp_path: Path, signum: signal.Signals) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "COSINE_RETRAIN_HOME": str(home)}
    argv = [sys.executable, "-m", "pipeline", "ui", "--home", str(home)]
    argv += ["--airflow-port", str(free_port()), "--mlflow-port", str(free_port())]
    log = tmp_path / "ui.out"
    with open(log, "wb") as out:
        ui = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    started: set[int] = set()
    try:
        deadline = time.monotonic() + 300
        while "Ctrl-C stops everything" not in log.read_text() and ui.poll() is None:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(1)
        assert ui.poll() is None, f"ui exited early:\n{log.read_text()}"
        running = _stack_processes(home, ui.pid, set())
        # MLflow, the four Airflow components and their own children
        assert len(running) >= 6, running
        started = set(running)

        ui.send_signal(signum)
        rc = ui.wait(timeout=120)
        deadline = time.monotonic() + 15
        while (left := _stack_processes(home, ui.pid, started)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert left == {}, f"still running after {signum.name}: {left}\n{log.read_text()}"
        assert rc == (0 if signum == signal.SIGINT else 128 + signum), log.read_text()
        assert "stopped" in log.read_text().splitlines()[-1]
    finally:
        if ui.poll() is None:
            ui.kill()
        for pid in _stack_processes(home, ui.pid, started):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
