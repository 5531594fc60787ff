"""What is inside a checkpoint: a typed, versioned mapping, loaded strictly.

Two kinds (:mod:`training.checkpoint.files` is the file format around them):

- ``last`` (:class:`LastPayload`): everything to resume the run exactly: model,
  optimizer, scheduler, grad scaler, RNG states, the loop's counters and the
  uncommitted telemetry.
- ``best`` (:class:`BestPayload`): one cycle's best model with its metrics, what
  registration turns into a model version.

Both carry the run's identity (:class:`Identity`: the config's definition and its
hash, the data fingerprint, the model signature, the spec, the preprocessing).
``from_mapping`` is strict, as Lightning Fabric's loading is: a missing or an
unknown key is a :class:`~training.checkpoint.files.CheckpointError` that names it, so
a checkpoint of another kind, version or program is refused before use.

Versions: 2 added ``LastPayload.stopping`` (the cycle-aware stopping rule's state,
:mod:`training.engine.stopping`). A version-1 checkpoint still loads: a ``best`` one is
unchanged, a ``last`` one is migrated with ``stopping=None`` (the trainer rebuilds
the state by replaying the rule over the checkpoint's closed cycles). A version
this job does not know is refused with the version named.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from training.checkpoint.files import CheckpointError, load_checkpoint

__all__ = ["PAYLOAD_VERSION", "BestPayload", "Identity", "LastPayload", "load_payload"]

PAYLOAD_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: before LastPayload.stopping (migrated on load)
# keys of the file format, not of the payload (checkpoint.py adds "format")
_ENVELOPE = {"format", "kind", "payload_version"}


@dataclass(frozen=True)
class Identity:
    """What makes a checkpoint belong to a run: checked on resume and when scoring."""

    definition: dict[str, Any]
    definition_hash: str
    data_fingerprint: str
    model_signature: dict[str, Any]
    spec_name: str
    preprocessor: dict[str, Any]


@dataclass(frozen=True)
class _Payload:
    KIND: ClassVar[str] = ""

    identity: Identity
    model: dict[str, Any]

    def to_mapping(self) -> dict[str, Any]:
        """The plain mapping that ``torch.save`` writes (tensors, numbers, strings...)."""
        body = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        identity = body.pop("identity")
        return {
            "kind": self.KIND,
            "payload_version": PAYLOAD_VERSION,
            **dataclasses.asdict(identity),
            **body,
        }

    @classmethod
    def from_mapping(cls, data: Any, where: str = "checkpoint") -> Self:
        if not isinstance(data, dict):
            raise CheckpointError(f"{where}: the payload is a {type(data).__name__}, not a mapping")
        kind = data.get("kind")
        if kind != cls.KIND:
            raise CheckpointError(f"{where} is a {kind!r} checkpoint, not a {cls.KIND!r} one")
        version = data.get("payload_version", 1)  # checkpoints from before versioning: 1
        if version not in READABLE_VERSIONS:
            raise CheckpointError(
                f"{where} has payload version {version!r}; this job reads versions "
                f"{', '.join(map(str, READABLE_VERSIONS))} (train a new run, or use the job "
                "that wrote it)"
            )
        data = cls._migrate(data, version)
        identity_keys = {f.name for f in dataclasses.fields(Identity)}
        own = {f.name for f in dataclasses.fields(cls)} - {"identity"}
        expected = identity_keys | own
        present = set(data) - _ENVELOPE
        missing, unknown = sorted(expected - present), sorted(present - expected)
        if missing or unknown:
            parts = ([f"missing {missing}"] if missing else []) + (
                [f"unknown {unknown}"] if unknown else []
            )
            raise CheckpointError(
                f"{where} is not a valid {cls.KIND!r} checkpoint: {'; '.join(parts)}"
            )
        identity = Identity(**{k: data[k] for k in identity_keys})
        return cls(identity=identity, **{k: data[k] for k in own})

    @classmethod
    def _migrate(cls, data: dict[str, Any], version: int) -> dict[str, Any]:
        """``data`` of an older ``version`` in the current layout (before the strict check)."""
        return data

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Self:
        return cls.from_mapping(load_checkpoint(path), str(path))


@dataclass(frozen=True)
class LastPayload(_Payload):
    KIND: ClassVar[str] = "last"

    step: int
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    scaler: dict[str, Any] | None
    rng: dict[str, Any]
    trainer: dict[str, Any]  # the loop's counters (training.engine.nan_guard.LoopState)
    telemetry_pending: list[Any]
    # the stopping rule's state (training.engine.stopping.StopState.to_dict); None: migrated
    # from version 1, rebuilt from the closed cycles
    stopping: dict[str, Any] | None

    @classmethod
    def _migrate(cls, data: dict[str, Any], version: int) -> dict[str, Any]:
        if version == 1 and "stopping" not in data:
            return {**data, "stopping": None}
        return data


@dataclass(frozen=True)
class BestPayload(_Payload):
    KIND: ClassVar[str] = "best"

    cycle: int
    step: int
    lr: float
    metrics: dict[str, float]
    schedule: dict[str, Any]
    config: dict[str, Any]
    run_name: str
    mlflow_run_id: str | None


def load_payload(path: str | os.PathLike[str]) -> LastPayload | BestPayload:
    """A checkpoint of either kind, typed (its ``kind`` decides)."""
    data = load_checkpoint(path)
    kind = data.get("kind")
    cls = {"last": LastPayload, "best": BestPayload}.get(str(kind))
    if cls is None:
        raise CheckpointError(f"{path} has kind {kind!r}; expected 'last' or 'best'")
    return cls.from_mapping(data, str(path))
