"""Readers for the infra files: compose, .env.example, Dockerfiles, metric names."""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
INFRA = ROOT / "infra"

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?message}, ${VAR?message}; not $${escaped}
VAR = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
# Paths the other half of the issue adds (the DAG folder); allowed to be missing here.
PENDING_PATHS = {"dags"}

# one-shot jobs and on-demand runs: no health check, never a long-running service
ONE_SHOT = {"minio-init", "airflow-init"}
ON_DEMAND = {"trainer", "trainer-cpu"}


@cache
def compose_text() -> str:
    return COMPOSE.read_text()


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(compose_text())


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def _env_example(line_pattern: str) -> dict[str, str]:
    """KEY -> value of the lines of .env.example that match ``line_pattern`` (stripped)."""
    out = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        m = re.match(line_pattern, line.strip())
        if m:
            out[m.group(1)] = m.group(2)
    return out


def env_example() -> dict[str, str]:
    """KEY -> value of .env.example; commented ``# KEY=value`` lines count as documented."""
    return _env_example(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$")


def env_example_active() -> dict[str, str]:
    """Only the uncommented KEY=value lines."""
    return _env_example(r"^([A-Z][A-Z0-9_]*)=(.*)$")


def substitute(text: str, env: dict[str, str]) -> str:
    """Compose-style interpolation with ``env`` (defaults applied, ``:?`` unresolved -> error)."""

    def one(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        value = env.get(name)
        if op in (":-", "-"):
            return value if value or (op == "-" and value is not None) else arg
        if op in (":?", "?"):
            if not value:
                raise KeyError(f"{name}: {arg}")
            return value
        return value or ""

    return VAR.sub(one, text)


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    buffer = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or (line.startswith("#") and not buffer):
            continue
        if line.startswith("#"):
            continue
        buffer = f"{buffer} {line}" if buffer else line
        if buffer.endswith("\\"):
            buffer = buffer[:-1].rstrip()
            continue
        word, _, rest = buffer.partition(" ")
        out.append((word.upper(), rest.strip()))
        buffer = ""
    return out


def dockerfile_args(path: Path) -> dict[str, str]:
    args = {}
    for word, rest in dockerfile_instructions(path):
        if word == "ARG" and "=" in rest:
            key, value = rest.split("=", 1)
            args[key.strip()] = value.strip()
    return args


def lock_pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)$", line.strip())
        if m:
            pins[normalize(m.group(1))] = m.group(2)
    return pins


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def compose_command() -> list[str] | None:
    """``docker compose`` (v2) if it works, else ``docker-compose`` (v1), else None."""
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, timeout=30
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None
