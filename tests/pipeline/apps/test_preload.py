"""``python -m pipeline.apps.preload``: the scheduler's tasks start with the heavy
libraries imported. A process started through it has them in ``sys.modules`` and a
process it forks (as the LocalExecutor forks task processes) has them without
importing them again; the Airflow command it hands over to runs unchanged."""

from __future__ import annotations

import subprocess
import sys

from pipeline.apps.preload import ENV
from tests.support import ROOT

CHILD = """
import os, sys
from pipeline.apps.preload import preload
preload(["great_expectations"])
parent = id(sys.modules["great_expectations"])
pid = os.fork()
if pid == 0:  # what the child has before it imports anything
    there = "great_expectations" in sys.modules
    import great_expectations
    os.write(1, f"child {there} {id(great_expectations) == parent}".encode())
    os._exit(0)
os.waitpid(pid, 0)
"""


def test_a_forked_task_finds_the_preloaded_module_imported() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CHILD], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    word, present, same = out.stdout.split()
    assert word == "child"
    assert present == "True"  # in the child before its own import statement
    assert same == "True"  # the parent's module object: not imported a second time


def test_the_airflow_command_runs_unchanged_after_the_preload() -> None:
    env = {**dict(__import__("os").environ), ENV: "json,no_such_module"}
    out = subprocess.run(
        [sys.executable, "-m", "pipeline.apps.preload", "airflow", "version"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1].startswith("3."), out.stdout
    assert "no_such_module not preloaded: ModuleNotFoundError" in out.stderr
    assert "[preload] 1 modules" in out.stderr
    assert "'airflow version': json" in out.stderr


def test_without_a_command_it_says_how_to_call_it() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pipeline.apps.preload"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2
    assert "usage: python -m pipeline.apps.preload airflow <component>" in out.stderr
