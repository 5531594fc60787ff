"""Checkpoint files: atomic, checksummed, loaded only with ``weights_only=True``.

A checkpoint file is ``MAGIC + sha256(payload).hex() + "\\n" + payload`` where
the payload is ``torch.save`` of a plain mapping (tensors, numbers, strings,
lists, dicts). It is written to a temporary name in the same folder, fsynced,
and renamed over the target (then the folder is fsynced), so a reader sees the
old file or the new one, never half of one. Writing ``last`` first moves the
current ``last`` to ``last.prev``: if the newest file is ever unreadable (a
disk that lied about fsync), the previous generation is still there.

Loading checks the magic, the checksum and the format tag before anything is
unpickled, and then unpickles with ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import torch

MAGIC = b"COSINE-RETRAIN-CKPT\n"
FORMAT = "cosine-retrain/checkpoint/v1"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, or belongs to another model or run."""


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some filesystems (and Windows) cannot open folders
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    path: str | os.PathLike[str], payload: dict[str, Any], *, keep_previous: bool = False
) -> str:
    """Write ``payload`` atomically to ``path``; return the payload's sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **payload}, buffer)
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(MAGIC + digest.encode() + b"\n" + data)
        fh.flush()
        os.fsync(fh.fileno())
    if keep_previous and path.exists():
        os.replace(path, previous_path(path))
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return digest


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
        raise CheckpointError(
            f"{path} is not a cosine-retrain checkpoint (wrong header); refusing to unpickle it"
        )
    header_end = blob.find(b"\n", len(MAGIC))
    digest = blob[len(MAGIC) : header_end].decode("ascii", "replace")
    data = blob[header_end + 1 :]
    if header_end < 0 or hashlib.sha256(data).hexdigest() != digest:
        raise CheckpointError(
            f"checkpoint {path} is corrupt: its checksum does not match (truncated or modified)"
        )
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # the checksum matched, so this is a foreign or unsafe payload
        raise CheckpointError(f"checkpoint {path} cannot be loaded safely: {exc}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
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
