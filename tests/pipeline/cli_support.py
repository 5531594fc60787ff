"""``python -m pipeline`` in process, as the command-line tests call it."""

from __future__ import annotations

import os

import pytest


def clear_pipeline_env(monkeypatch: pytest.MonkeyPatch, *also: str) -> None:
    """No ``COSINE_RETRAIN_*`` setting of the machine's reaches the test, nor a variable
    starting with one of ``also`` (e.g. ``"MLFLOW_"``); names compared in any case, as
    pydantic-settings reads them."""
    prefixes = tuple(p.upper() for p in ("COSINE_RETRAIN_", *also))
    for name in list(os.environ):
        if name.upper().startswith(prefixes):
            monkeypatch.delenv(name)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``main(argv)``: its exit code, then what it printed on stdout and on stderr."""
    from pipeline.apps.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err
