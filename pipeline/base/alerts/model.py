"""The alert itself: its kinds and severities, the value, and what a send returns.

Nothing here does I/O; every other module of the package builds on it.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pipeline.base.kinds import AlertKind

__all__ = [
    "DEFAULT_SEVERITY",
    "SCHEMA",
    "SEVERITY_RANK",
    "Alert",
    "AlertKind",
    "AlertResult",
    "AlertStatus",
    "Severity",
    "alert_id",
]

SCHEMA = "cosine-retrain.alert/v1"
Severity = Literal["info", "warning", "critical"]
SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "critical": 2}
MAX_TITLE = 200
MAX_TEXT = 4000


DEFAULT_SEVERITY: dict[AlertKind, Severity] = {
    AlertKind.NAN: "critical",
    AlertKind.COST: "warning",
    AlertKind.VALIDATION: "warning",
    AlertKind.DRIFT: "info",
    AlertKind.GATE: "warning",
    AlertKind.ROLLBACK: "warning",
    AlertKind.PROMOTED: "info",
    AlertKind.CANARY_UNDECIDED: "warning",
    AlertKind.APPROVAL_TIMEOUT: "warning",
    AlertKind.ALIAS_OUTSIDE: "warning",
    AlertKind.SPEND: "warning",
    AlertKind.TASK_FAILED: "critical",
    AlertKind.TRAINING: "warning",
}

# a details key naming a secret (``smtp_password``, ``api_key``, ``token``; not ``passed``)
_SECRET_KEY = re.compile(
    r"(?:^|[_.-])(?:password|passwd|pwd|pass|secret|token|api[_-]?key|credentials?|"
    r"authorization|auth)(?:$|[_.-])",
    re.I,
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


# ------------------------------------------------------------------------------ values


@dataclass(frozen=True)
class Alert:
    """One alert. ``run_key`` (with ``kind``) is what deduplication is keyed on: a
    training run id, a batch id, a model version, a month...

    ``severity`` defaults per kind (:data:`DEFAULT_SEVERITY`). ``title`` is made one
    line; ``details`` is made JSON-safe (non-finite floats become strings, values
    under secret-looking keys are masked).
    """

    kind: AlertKind
    run_key: str
    title: str
    text: str
    details: dict[str, Any] = field(default_factory=dict)
    severity: Severity | None = None

    def __post_init__(self) -> None:
        try:
            kind = AlertKind(self.kind)
        except ValueError:
            raise ValueError(
                f"unknown alert kind {self.kind!r}; choose from {[k.value for k in AlertKind]}"
            ) from None
        if not isinstance(self.run_key, str) or not self.run_key.strip():
            raise ValueError(f"alert run_key must be a non-empty string, got {self.run_key!r}")
        run_key = _CONTROL.sub(" ", self.run_key.strip())
        if len(run_key) > 500:
            raise ValueError(f"alert run_key is {len(run_key)} characters; at most 500")
        severity = self.severity if self.severity is not None else DEFAULT_SEVERITY[kind]
        if severity not in SEVERITY_RANK:
            raise ValueError(f"alert severity must be info, warning or critical, got {severity!r}")
        if not isinstance(self.details, Mapping):
            raise TypeError(f"alert details must be a mapping, got {type(self.details).__name__}")
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "run_key", run_key)
        object.__setattr__(self, "title", clip(" ".join(str(self.title).split()), MAX_TITLE))
        object.__setattr__(self, "text", clip(_CONTROL.sub("", str(self.text)), MAX_TEXT))
        object.__setattr__(self, "details", _json_safe(dict(self.details)))
        object.__setattr__(self, "severity", severity)

    @property
    def alert_id(self) -> str:
        return alert_id(self.kind, self.run_key)


@dataclass(frozen=True)
class AlertResult:
    """What one call did. ``channels`` maps each channel to ``"ok"`` (it has the
    alert, now or from an earlier call), ``"failed: ..."`` (retry later),
    ``"unknown: ..."`` (sent, no answer: not re-sent automatically) or
    ``"pending: ..."`` (another sender, or this call's own thread past the budget,
    is delivering it right now).
    ``sent``: this call delivered the alert on at least one channel.
    ``duplicate``: the alert had been recorded before this call.
    ``attempts``: delivery attempts this call made, over all channels.
    """

    sent: bool
    duplicate: bool
    channels: dict[str, str]
    attempts: int

    @property
    def delivered(self) -> bool:
        """Every channel has the alert."""
        return bool(self.channels) and all(v == "ok" for v in self.channels.values())


@dataclass(frozen=True)
class AlertStatus:
    """One recorded alert and where each of its channels stands (for listings)."""

    kind: str
    run_key: str
    alert_id: str
    title: str
    severity: str
    created_at: str
    channels: dict[str, str]  # channel -> delivered | failed | unknown | in_flight | new
    prefix: str


def alert_id(kind: str, run_key: str) -> str:
    """A stable id of (kind, run_key): the same in every payload, record and retry."""
    return hashlib.sha256(f"{AlertKind(kind).value}\n{run_key}".encode()).hexdigest()[:20]


# ------------------------------------------------------------------------------ helpers


def clip(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def scalar(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _json_safe(value: Any, key: str = "") -> Any:
    """JSON-able, strict (no NaN), secret-looking keys masked; numpy scalars unwrapped."""
    if key and _SECRET_KEY.search(key):
        return "***"
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        return [_json_safe(v) for v in items]
    if hasattr(value, "get_secret_value"):
        return "***"
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        try:
            return _json_safe(value.item(), key)
        except (TypeError, ValueError):
            pass
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)
