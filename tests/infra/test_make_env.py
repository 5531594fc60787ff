"""infra/make_env.py: a complete .env with fresh, URL-safe secrets, never overwritten."""

from __future__ import annotations

import re
import stat
import subprocess
import sys
from pathlib import Path

from cryptography.fernet import Fernet

from tests.infra.helpers import ROOT, env_example_active

SCRIPT = ROOT / "infra/make_env.py"


def make(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--output", str(path), *extra],
        capture_output=True,
        text=True,
        timeout=30,
    )


def read(path: Path) -> dict[str, str]:
    return dict(
        line.split("=", 1)
        for line in path.read_text().splitlines()
        if line and not line.startswith("#")
    )


def test_every_empty_value_gets_a_fresh_url_safe_secret(tmp_path: Path) -> None:
    a, b = tmp_path / "a.env", tmp_path / "b.env"
    assert make(a).returncode == 0
    assert make(b).returncode == 0
    example, va, vb = env_example_active(), read(a), read(b)
    assert set(va) == set(example)
    for key, value in example.items():
        if value:
            assert va[key] == value, f"{key} must be copied as it is"
        else:
            assert re.fullmatch(r"[A-Za-z0-9_=-]{32,}", va[key]), (key, va[key])
            assert va[key] != vb[key], f"{key} is not random"
    Fernet(va["AIRFLOW_FERNET_KEY"].encode())  # a valid key, or this raises
    assert stat.S_IMODE(a.stat().st_mode) == 0o600


def test_an_existing_file_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text("MINE=1\n")
    proc = make(path)
    assert proc.returncode == 2
    assert "exists; nothing was changed" in proc.stderr
    assert path.read_text() == "MINE=1\n"
    assert make(path, "--force").returncode == 0
    assert "POSTGRES_PASSWORD" in read(path)
