"""Where things live by default: the local home, MLflow, the code revision.

The one place that knows the defaults docs/design.md promises (the training job and
the pipeline both read them from here):

- the local home ``./.cosine-retrain`` (runs, reports, the store, databases);
- the MLflow tracking URI: the configured one, else ``$MLFLOW_TRACKING_URI``,
  else ``sqlite:///<home>/mlflow.db``;
- the artifact root of new experiments on a database-backed store
  (``<home>/mlartifacts``; a tracking *server* decides its own);
- the code revision of this checkout (or ``$GIT_REVISION`` in an image).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = [
    "DEFAULT_HOME",
    "PROJECT_ROOT",
    "artifact_location",
    "code_revision",
    "tracking_uri",
]

DEFAULT_HOME = Path(".cosine-retrain")
PROJECT_ROOT = Path(__file__).resolve().parents[2]  # training/config/locations.py


def tracking_uri(configured: str | None, home: str | os.PathLike[str]) -> str:
    """``configured``, else ``$MLFLOW_TRACKING_URI``, else the SQLite file in ``home``."""
    if configured:
        return configured
    env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    return env or f"sqlite:///{(Path(home) / 'mlflow.db').resolve()}"


def artifact_location(
    configured: str | None, tracking: str, home: str | os.PathLike[str]
) -> str | None:
    """The artifact root for experiments this process creates: ``configured``; else,
    for a database-backed store, ``<home>/mlartifacts`` (MLflow would otherwise put
    artifacts in ``./mlruns`` of whatever folder the process runs in); a tracking
    server (http) keeps its own default (None)."""
    if configured:
        return configured
    if tracking.startswith(("http://", "https://")):
        return None
    return (Path(home) / "mlartifacts").resolve().as_uri()


def code_revision() -> str:
    """The checked-out commit (12 hex digits), else ``$GIT_REVISION``, else ``unknown``."""
    head = PROJECT_ROOT / ".git"
    if head.is_file():  # a git worktree: ".git" names the real folder
        with contextlib.suppress(OSError, IndexError):
            head = Path(head.read_text().split("gitdir:", 1)[1].strip())
    try:
        ref = (head / "HEAD").read_text().strip()
        if ref.startswith("ref: "):
            name = ref[5:]
            loose = head / name
            if loose.exists():
                return loose.read_text().strip()[:12]
            common = head / "commondir"
            root = (head / common.read_text().strip()).resolve() if common.exists() else head
            if (root / name).exists():
                return (root / name).read_text().strip()[:12]
            for line in (root / "packed-refs").read_text().splitlines():
                if line.endswith(" " + name):
                    return line.split()[0][:12]
            raise OSError(name)
        return ref[:12]
    except OSError:
        return os.environ.get("GIT_REVISION", "unknown")
