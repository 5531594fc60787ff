"""The landing zone: files dropped under the store's ``landing/`` prefix are landed.

A team's files arrive where the pipeline can see them, with the batch id in the name::

    landing/features/<batch_id>.parquet   (or .csv)   a batch's features
    landing/labels/<batch_id>.parquet     (or .csv)   its labels, later

A sweep (:func:`sweep`, run by the ``landing`` DAG on a short cron) lands every file
waiting there through the same step as the ingest DAG (:func:`pipeline.flow.land`), in
batch order, features before labels, then moves it out of the zone:

- landed, or the same content as a landed version (``unchanged``): to
  ``landing/landed/<kind>/<name>``;
- refused (unreadable, a bad name, different content for a batch that holds a
  version: "refused as today", land it as a new version by hand): to
  ``landing/refused/<kind>/<name>``, with ``<name>.json`` beside it saying why;
- labels of a batch whose features have not landed yet stay where they are (the
  next sweep tries again).

Each file is landed once by its content (landing is idempotent by content, and a
landed file leaves the zone). A backfill is: drop N files; the next sweep lands them
all and one ``batch_landed`` event names every batch, which one drift monitor run
checks in batch order (:mod:`pipeline.flow.every`).
"""

from __future__ import annotations

import logging
import urllib.parse
import urllib.request
from typing import Literal

from pydantic import Field

from pipeline.base.layout import BatchNotFound, landing_files, landing_outcome_key
from pipeline.base.store import InvalidKey, ObjectExists, check_id, copy_object, put_json
from pipeline.flow.env import Env
from pipeline.flow.landing import land
from pipeline.flow.records import Record
from pipeline.steps.landing.sources import IngestError

__all__ = ["SUFFIXES", "Sweep", "sweep"]

log = logging.getLogger(__name__)

SUFFIXES = (".parquet", ".csv")


class Sweep(Record):
    """What one sweep of ``landing/<kind>/`` did: the batches it landed (new versions),
    found unchanged, left waiting and refused (file name -> why)."""

    kind: Literal["features", "labels"]
    landed: list[str] = Field(default_factory=list)
    unchanged: list[str] = Field(default_factory=list)
    waiting: dict[str, str] = Field(default_factory=dict)
    refused: dict[str, str] = Field(default_factory=dict)

    def line(self) -> str:
        parts = [f"{len(self.landed)} landed"]
        if self.unchanged:
            parts.append(f"{len(self.unchanged)} unchanged")
        if self.waiting:
            parts.append(f"{len(self.waiting)} waiting")
        if self.refused:
            parts.append(f"{len(self.refused)} refused")
        return f"landing/{self.kind}/: " + ", ".join(parts)


def _source(env: Env, key: str) -> str:
    """What :func:`pipeline.flow.land` reads: the object's s3:// URI, or its local path."""
    uri = env.store.uri(key)
    if uri.startswith("file://"):
        return urllib.request.url2pathname(urllib.parse.urlparse(uri).path)
    return uri


def _move(env: Env, key: str, kind: str, name: str, outcome: str) -> None:
    copy_object(env.store, key, landing_outcome_key(kind, name, outcome), overwrite=True)
    env.store.delete(key)


def sweep(env: Env, kind: Literal["features", "labels"]) -> Sweep:
    """Land every file waiting under ``landing/<kind>/``, in batch order (module doc)."""
    out = Sweep(kind=kind)  # filled as the files go (its lists, not its fields, change)
    for name, key in landing_files(env.store, kind):
        batch, dot, suffix = name.rpartition(".")
        try:
            if not dot or f".{suffix.lower()}" not in SUFFIXES:
                raise IngestError(f"{name}: a landing file is <batch_id>.parquet or <batch_id>.csv")
            check_id(batch, "batch id (the file's name)")
            landed = land(env, _source(env, key), labels=kind == "labels", batch_id=batch,
                          trusted=True)  # fmt: skip
        except BatchNotFound as exc:  # labels before their features: the next sweep
            out.waiting[name] = str(exc)
            continue
        except (IngestError, InvalidKey, ObjectExists, ValueError) as exc:
            why = f"{type(exc).__name__}: {exc}"
            log.warning("landing/%s/%s refused: %s", kind, name, why)
            out.refused[name] = why
            try:
                _move(env, key, kind, name, "refused")
                reason = landing_outcome_key(kind, f"{name}.json", "refused")
                put_json(env.store, reason, {"file": key, "refused": why}, overwrite=True)
            except InvalidKey:  # a name the store cannot hold elsewhere: it stays
                pass
            continue
        (out.landed if landed.status == "landed" else out.unchanged).append(landed.batch_id)
        _move(env, key, kind, name, "landed")
    log.info("%s", out.line())
    return out
