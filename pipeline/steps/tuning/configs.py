"""Versioned tuned training configs and their verdicts, in the object store.

Under ``tuning/<dataset>/``:

- ``v<N>.yaml``: a complete training config (the one the study started from with the
  best trial's values), loadable by ``python -m training train --config``;
- ``v<N>.json``: where it comes from (study, trial, values, tuning window, the
  sha256 of the config file it was tuned from);
- ``v<N>.verdict.json``: the held-out comparison against the config in use then,
  and whether it was adopted.

Nothing is ever overwritten (each version is a new key). The config a retrain uses
(:func:`train_config_path`) is the newest adopted version tuned from the same
config file as ``retrain.train_config`` is now; any other case is the file itself,
so editing the shipped file never runs a config tuned from its old content.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.base.store import ObjectStore

__all__ = [
    "TunedVersion",
    "Verdict",
    "adopted_version",
    "file_sha256",
    "gain_interval",
    "read_verdict",
    "train_config_path",
    "tuned_versions",
    "write_verdict",
    "write_version",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TunedVersion:
    version: int
    study: str
    trial: int
    value: float  # the trial's best val AUC on the tuning window
    params: dict[str, int | float]
    window: list[str]
    base_config: str  # the config file the study started from
    base_sha256: str
    created_at: str


@dataclass(frozen=True)
class Verdict:
    version: int
    adopted: bool
    holdout: list[str]
    tuned_auc: float
    current_auc: float
    current: str  # the config it was judged against ("file" or "v<N>")
    min_gain: float
    tuned_steps: int
    current_steps: int
    reason: str
    judged_at: str
    # paired seeds (the same seed and held-out window on both sides); older verdicts: one
    seeds: list[int] = field(default_factory=list)
    gains: list[float] = field(default_factory=list)  # tuned - current, per seed
    gain_low: float | None = None  # the mean gain's confidence interval
    gain_high: float | None = None
    confidence: float | None = None
    tuned_examples: int | None = None  # rows trained (steps x batch size), mean over seeds
    current_examples: int | None = None
    basis: str | None = None  # "better", "cheaper" (adopted) or None


def gain_interval(gains: list[float], confidence: float) -> tuple[float, float, float]:
    """(mean, low, high): the mean of the paired gains and its two-sided Student-t
    interval at ``confidence`` (the gains' spread is the noise); one pair has no spread
    to measure, so its interval is unbounded."""
    mean = statistics.fmean(gains)
    if len(gains) < 2:
        return mean, -math.inf, math.inf
    from scipy import stats

    n = len(gains)
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * statistics.stdev(gains) / n**0.5
    return mean, mean - half, mean + half


def _prefix(dataset: str) -> str:
    return f"tuning/{dataset}"


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tuned_versions(store: ObjectStore, dataset: str) -> list[int]:
    prefix = _prefix(dataset)
    found = (re.fullmatch(re.escape(prefix) + r"/v(\d+)\.yaml", k) for k in store.list(prefix))
    return sorted(int(m.group(1)) for m in found if m)


def write_version(store: ObjectStore, dataset: str, config_yaml: str, meta: dict[str, Any]) -> int:
    """A new version ``v<N>`` (N = the last + 1): the config, then its record. Never
    overwrites: a concurrent writer of the same N makes this one fail loudly."""
    version = (tuned_versions(store, dataset) or [0])[-1] + 1
    record = TunedVersion(version=version, **meta)
    base = f"{_prefix(dataset)}/v{version}"
    store.put_bytes(f"{base}.json", json.dumps(asdict(record), indent=1).encode())
    store.put_bytes(f"{base}.yaml", config_yaml.encode())
    return version


def read_version(store: ObjectStore, dataset: str, version: int) -> TunedVersion:
    data = json.loads(store.get_bytes(f"{_prefix(dataset)}/v{version}.json"))
    return TunedVersion(**data)


def write_verdict(store: ObjectStore, dataset: str, verdict: Verdict) -> str:
    key = f"{_prefix(dataset)}/v{verdict.version}.verdict.json"
    store.put_bytes(key, json.dumps(asdict(verdict), indent=1).encode())
    return key


def read_verdict(store: ObjectStore, dataset: str, version: int) -> Verdict | None:
    key = f"{_prefix(dataset)}/v{version}.verdict.json"
    if not store.exists(key):
        return None
    return Verdict(**json.loads(store.get_bytes(key)))


def adopted_version(store: ObjectStore, dataset: str, base_sha256: str) -> int | None:
    """The newest version adopted by its verdict and tuned from a file with this sha256."""
    for version in reversed(tuned_versions(store, dataset)):
        verdict = read_verdict(store, dataset, version)
        adopted = verdict is not None and verdict.adopted
        if adopted and read_version(store, dataset, version).base_sha256 == base_sha256:
            return version
    return None


def train_config_path(store: ObjectStore, dataset: str, shipped: Path, cache: Path) -> Path:
    """The training config a retrain starts from: the adopted tuned version (copied to
    ``cache/tuning/<dataset>/v<N>.yaml``) when there is one for ``shipped``'s content,
    else ``shipped``."""
    version = adopted_version(store, dataset, file_sha256(shipped))
    if version is None:
        return shipped
    local = cache / "tuning" / dataset / f"v{version}.yaml"
    if not local.exists():
        store.get_file(f"{_prefix(dataset)}/v{version}.yaml", local)
    log.info("training config: tuned v%d (adopted; tuned from %s)", version, shipped)
    return local
