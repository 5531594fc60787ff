"""Write one benchmark's section of docs/benchmarks.md without touching the others."""

from __future__ import annotations

import os
import platform
import re
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import torch

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = """# Benchmarks

Every figure here is written by a script in `benchmarks/` (`./run bench NAME`),
measured as a ratio against a baseline timed in the same run, on the machine
named in its section. Re-running a benchmark replaces only its own section.
"""


def machine() -> str:
    """One line naming the machine a figure was taken on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{os.cpu_count()} cores ({cpu}), {device}, Python {platform.python_version()}, "
        f"torch {torch.__version__}"
    )


def revision() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=DOC.parent,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_section(name: str, title: str, body: str, command: str | None = None) -> Path:
    """Replace (or append) the section ``name`` of docs/benchmarks.md; ``command``: what
    reproduces it (default ``./run bench NAME``)."""
    DOC.parent.mkdir(parents=True, exist_ok=True)
    text = DOC.read_text() if DOC.exists() else HEADER
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    stamp = time.strftime("%Y-%m-%d")
    section = (
        f"{start}\n## {title}\n\n_{stamp}, commit {revision()}, {machine()}. "
        f"Command: `{command or './run bench ' + name}`._\n\n{body.strip()}\n{end}"
    )
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = (
        pattern.sub(lambda _: section, text)
        if pattern.search(text)
        else text.rstrip() + "\n\n" + section + "\n"
    )
    tmp = DOC.with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, DOC)
    return DOC


def interleaved_medians(
    candidates: dict[str, Callable[[], float]], repeats: int
) -> dict[str, float]:
    """Run each candidate ``repeats`` times, interleaved, and return median seconds.

    Interleaving spreads machine noise (another process, frequency changes)
    evenly over the candidates instead of penalising whichever ran last.
    """
    times: dict[str, list[float]] = {k: [] for k in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            times[name].append(fn())
    return {k: statistics.median(v) for k, v in times.items()}
