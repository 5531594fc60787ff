"""Checkpoint files: atomic, checksummed, loaded only with ``weights_only=True``.

A checkpoint file is ``MAGIC + sha256(payload).hex() + "\\n" + payload`` where
the payload is ``torch.save`` of a plain mapping (tensors, numbers, strings,
lists, dicts). It is written to a temporary name in the same folder, fsynced,
and renamed over the target (then the folder is fsynced), so a reader sees the
old file or the new one, never half of one. Writing ``last`` first moves the
current ``last`` to ``last.prev``: if the newest file is ever unreadable (a
disk that lied about fsync), the previous generation is still there.

Loading checks the magic, the checksum and the format tag before anything is
unpickled, and then unpickles with ``weights_only=True``. A temporary file left
by a write that was killed is never read (only ``last`` and ``last.prev`` are),
and the next successful write in the folder removes it.

Fault injection (tests only, off unless the variable is set):
``COSINE_RETRAIN_FAULT_PAUSE=PHASE@N:SECONDS`` makes the process pause for
SECONDS the N-th time (1-based, counted per process) it passes the fault point
PHASE: ``checkpoint-write`` (half of the temporary file written and flushed,
before the rename), ``step`` (inside an optimizer step: after backward, before
the update) or ``evaluation`` (validation predictions made, not yet recorded).
When it pauses it writes one JSON line (phase, occurrence, pid, detail) to the
file named by ``COSINE_RETRAIN_FAULT_MARKER``, so a test can SIGKILL the job
while it is provably inside that phase (tests/faults/test_preemption_faults.py).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from pathlib import Path
from typing import Any

from training.checkpoint.atomic import atomic_writer

MAGIC = b"COSINE-RETRAIN-CKPT\n"
FORMAT = "cosine-retrain/checkpoint/v1"
TMP_INFIX = ".tmp-"  # a write goes to ".NAME.tmp-PID" first

FAULT_PAUSE_ENV = "COSINE_RETRAIN_FAULT_PAUSE"
FAULT_MARKER_ENV = "COSINE_RETRAIN_FAULT_MARKER"
FAULT_PHASES = ("checkpoint-write", "step", "evaluation")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, or belongs to another model or run."""


class _FaultPause:
    """The parsed ``COSINE_RETRAIN_FAULT_PAUSE``; see the module docstring."""

    def __init__(self, spec: str) -> None:
        try:
            where, seconds = spec.split(":")
            phase, nth = where.split("@")
            self.phase, self.nth, self.seconds = phase, int(nth), float(seconds)
        except ValueError:
            self.phase, self.nth, self.seconds = "", 0, 0.0
        if self.phase not in FAULT_PHASES or self.nth < 1 or not self.seconds >= 0:
            raise ValueError(
                f"{FAULT_PAUSE_ENV}={spec!r}: expected PHASE@N:SECONDS with PHASE one of "
                f"{', '.join(FAULT_PHASES)}, N >= 1 and SECONDS >= 0"
            )
        self.seen = 0

    def hit(self, phase: str, detail: str) -> None:
        if phase != self.phase:
            return
        self.seen += 1
        if self.seen != self.nth:
            return
        marker = os.environ.get(FAULT_MARKER_ENV)
        if marker:
            line = {"phase": phase, "occurrence": self.seen, "pid": os.getpid(), "detail": detail}
            with open(marker, "a") as fh:
                fh.write(json.dumps(line) + "\n")
        time.sleep(self.seconds)


def _fault_from_env() -> _FaultPause | None:
    spec = os.environ.get(FAULT_PAUSE_ENV)
    return _FaultPause(spec) if spec else None


_fault = _fault_from_env()


def fault_point(phase: str, detail: str = "") -> None:
    """A place where a test may pause the job to kill it there; free when unset."""
    if _fault is not None:
        _fault.hit(phase, detail)


def save_checkpoint(
    path: str | os.PathLike[str], payload: dict[str, Any], *, keep_previous: bool = False
) -> str:
    """Write ``payload`` atomically to ``path``; return the payload's sha256.

    ``keep_previous``: the current file becomes ``<name>.prev`` just before the new
    one is renamed into place (both durable: the data is fsynced first).
    """
    import torch  # here, not above: CheckpointError is caught where no torch is needed

    path = Path(path)
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **payload}, buffer)
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    blob = memoryview(MAGIC + digest.encode() + b"\n" + data)
    half = len(blob) // 2

    def rotate() -> None:
        if keep_previous and path.exists():
            os.replace(path, previous_path(path))

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{TMP_INFIX}{os.getpid()}")
    with atomic_writer(path, temp=tmp, before_commit=rotate) as fh:
        fh.write(blob[:half])
        fh.flush()
        fault_point("checkpoint-write", str(path))  # a kill here leaves a torn temp file
        fh.write(blob[half:])
    _remove_stale_temps(path.parent)
    return digest


def _remove_stale_temps(folder: Path) -> None:
    """Delete temporary files of writes that were killed (their process is gone):
    they are never read, only taking space."""
    for tmp in folder.glob(f".*{TMP_INFIX}*"):
        pid = tmp.name.rpartition(TMP_INFIX)[2]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except OSError:  # alive under another user: not ours to touch
            continue


def previous_path(path: Path) -> Path:
    return path.with_name(path.stem + ".prev" + path.suffix)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and verify a checkpoint; raise CheckpointError with the reason."""
    path = Path(path)
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read: {exc}") from None
    if not blob.startswith(MAGIC):
        why = "wrong header"
        if not blob:
            why = "empty file: an interrupted write?"
        elif MAGIC.startswith(blob):
            why = f"truncated inside the header after {len(blob)} bytes"
        raise CheckpointError(
            f"{path} is not a cosine-retrain checkpoint ({why}); refusing to unpickle it"
        )
    header_end = blob.find(b"\n", len(MAGIC))
    if header_end < 0:
        raise CheckpointError(
            f"checkpoint {path} is corrupt: its checksum does not match (the file ends "
            f"inside the checksum line after {len(blob)} bytes: truncated)"
        )
    digest = blob[len(MAGIC) : header_end].decode("ascii", "replace")
    data = blob[header_end + 1 :]
    actual = hashlib.sha256(data).hexdigest()
    if actual != digest:
        raise CheckpointError(
            f"checkpoint {path} is corrupt: its checksum does not match (truncated or "
            f"modified): the header says sha256 {digest[:16]}..., the {len(data)} payload "
            f"bytes hash to {actual[:16]}..."
        )
    import torch

    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # the checksum matched, so this is a foreign or unsafe payload
        raise CheckpointError(f"checkpoint {path} cannot be loaded safely: {exc}") from None
    if not isinstance(payload, dict):
        raise CheckpointError(
            f"checkpoint {path} holds a {type(payload).__name__}, not a mapping: "
            "not a cosine-retrain checkpoint"
        )
    if payload.get("format") != FORMAT:
        raise CheckpointError(
            f"checkpoint {path} has format {payload.get('format')!r}, not {FORMAT!r}"
        )
    return payload


def load_latest(path: str | os.PathLike[str]) -> tuple[dict[str, Any], Path, list[str]]:
    """Load ``path``, falling back to its previous generation; also return the
    problems met on the way (empty when the newest file was fine)."""
    path = Path(path)
    problems = []
    for candidate in (path, previous_path(path)):
        try:
            return load_checkpoint(candidate), candidate, problems
        except CheckpointError as exc:
            problems.append(str(exc))
    raise CheckpointError("no usable checkpoint: " + "; ".join(problems))
