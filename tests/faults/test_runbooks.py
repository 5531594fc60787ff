"""docs/runbooks.md matches the code: every command parses, every alert exists."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from pipeline.apps.cli import build_parser as pipeline_parser
from pipeline.base.alerts import AlertKind
from training.cli.main import build_parser as training_parser

RUNBOOKS = Path(__file__).resolve().parents[2] / "docs" / "runbooks.md"
FAILURES = [
    "NaN",
    "Flat loss",
    "Loss spikes at warm restarts",
    "Cost over budget",
    "Checkpoint regression",
    "Preemption",
    "Gate failure",
    "Rollback",
]


def _sections() -> dict[str, str]:
    parts = re.split(r"^## (.+)$", RUNBOOKS.read_text(), flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def _commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", RUNBOOKS.read_text(), flags=re.S)
    lines = [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line.startswith("./run py -m ")]


def test_every_failure_has_its_alert_ui_and_fix() -> None:
    sections = _sections()
    for failure in FAILURES:
        title = next((t for t in sections if failure.lower() in t.lower()), None)
        assert title, f"no runbook for {failure!r} in {list(sections)}"
        body = sections[title]
        for part in ("**Alert", "**Airflow**", "**MLflow**", "**Fix**"):
            assert part in body, f"runbook {title!r} lacks {part}"


def test_every_named_alert_kind_exists() -> None:
    named = set(re.findall(r"`([a-z_]+)`", RUNBOOKS.read_text()))
    kinds = {k.value for k in AlertKind}
    mentioned = {n for n in named if n in kinds or n.endswith(("_detected", "_failed"))}
    assert mentioned, "the runbooks name no alert kind"
    assert mentioned <= kinds, f"not alert kinds: {sorted(mentioned - kinds)}"


@pytest.mark.parametrize("line", _commands())
def test_every_command_parses(line: str) -> None:
    argv = shlex.split(line)[4:]  # after "./run py -m <package>"
    package = shlex.split(line)[3]
    parser = {"pipeline": pipeline_parser, "training": training_parser}[package]()
    try:
        parser.parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"{line!r} does not parse (exit {exc.code})")


def test_the_runbooks_hold_commands() -> None:
    assert len(_commands()) >= 10
