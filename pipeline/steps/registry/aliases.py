"""Aliases of a registered model: who moved which, when and why, under one lock.

The pipeline uses four aliases (``champion``, ``challenger``, ``canary``,
``previous_champion``). Every move goes through :func:`move_alias`, which records
it as tags on the versions and as one object per move in the store
(``registry/<model>/alias-moves/``, read back by :func:`alias_history`).
:func:`alias_lock` serialises alias changes of one model across processes and
machines (an object created only if absent: a conditional write on S3, a hard
link locally).
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pipeline.base.store import ObjectExists, ObjectStore, check_id, get_json, join_key, put_json

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = [
    "ALIASES",
    "CANARY",
    "CHALLENGER",
    "CHAMPION",
    "PREVIOUS",
    "AliasMove",
    "RegistryError",
    "actor",
    "alias_history",
    "alias_lock",
    "current_alias",
    "lock_key",
    "move_alias",
    "record_decision",
    "version_tags",
]

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER, CANARY, PREVIOUS = "champion", "challenger", "canary", "previous_champion"
ALIASES = (CHAMPION, CHALLENGER, CANARY, PREVIOUS)


class RegistryError(RuntimeError):
    """The registry cannot do what was asked; the message says what to fix."""


def actor() -> str:
    """Who is acting: ``$COSINE_RETRAIN_ACTOR``, the Airflow task, else user@host."""
    if os.environ.get("COSINE_RETRAIN_ACTOR"):
        return os.environ["COSINE_RETRAIN_ACTOR"]
    dag, run = os.environ.get("AIRFLOW_CTX_DAG_ID"), os.environ.get("AIRFLOW_CTX_DAG_RUN_ID")
    if dag and run:
        task = os.environ.get("AIRFLOW_CTX_TASK_ID", "?")
        return f"airflow:{dag}/{run}/{task}"
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _now() -> datetime:
    return datetime.now(UTC)


# ------------------------------------------------------------------------------ aliases


@dataclass(frozen=True)
class AliasMove:
    model: str
    alias: str
    from_version: str | None
    to_version: str | None  # None: the alias was removed
    who: str
    why: str
    when: str  # ISO 8601, UTC
    key: str = ""
    # "moved"; or a decision that moved nothing by itself: "approved", "rejected",
    # "approval_timed_out" (from_version: the alias then, to_version: the one proposed)
    action: str = "moved"

    def describe(self) -> str:
        target = f"v{self.to_version}" if self.to_version else "(removed)"
        source = f"v{self.from_version}" if self.from_version else "(none)"
        verb = "" if self.action == "moved" else f" [{self.action}]"
        return f"{self.when} {self.alias}: {source} -> {target}{verb} by {self.who}: {self.why}"


def current_alias(client: MlflowClient, name: str, alias: str) -> str | None:
    """The version an alias points at, or None (also when the model does not exist yet)."""
    from mlflow.exceptions import MlflowException

    try:
        aliases = client.get_registered_model(name).aliases
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise  # MLflow away: "no alias" would be a guess
    value = aliases.get(alias)
    return str(value) if value is not None else None


def move_alias(
    client: MlflowClient,
    store: ObjectStore,
    name: str,
    alias: str,
    version: str | int | None,
    *,
    why: str,
    who: str | None = None,
) -> AliasMove:
    """Point ``alias`` at ``version`` (None removes it) and record the move."""
    if alias not in ALIASES:
        raise RegistryError(f"unknown alias {alias!r}; the pipeline uses {list(ALIASES)}")
    before = current_alias(client, name, alias)
    target = None if version is None else str(version)
    when = _now()
    move = AliasMove(name, alias, before, target, who or actor(), why, when.isoformat())
    if target is None:
        if before is not None:
            client.delete_registered_model_alias(name, alias)
    else:
        client.set_registered_model_alias(name, alias, target)
        for key, value in (("at", move.when), ("by", move.who), ("why", why[:4000])):
            client.set_model_version_tag(name, target, f"alias.{alias}.{key}", value)
    if before is not None and before != target:
        client.set_model_version_tag(name, before, f"alias.{alias}.left_at", move.when)
    key = _record(store, name, f"{when:%Y%m%dT%H%M%S%f}-{alias}", move)
    client.set_registered_model_tag(name, "last_alias_move", move.describe()[:5000])
    log.info("alias %s", move.describe())
    return AliasMove(**{**asdict(move), "key": key})


def record_decision(
    store: ObjectStore,
    name: str,
    alias: str,
    *,
    current: str | None,
    proposed: str | None,
    action: str,
    who: str,
    why: str,
) -> AliasMove:
    """Record a decision about ``alias`` in the same audit trail as the moves (who,
    when, why), for a decision that moves nothing itself (a rejection, a timeout)
    or one that a move follows (an approval)."""
    if alias not in ALIASES:
        raise RegistryError(f"unknown alias {alias!r}; the pipeline uses {list(ALIASES)}")
    when = _now()
    record = AliasMove(name, alias, current, proposed, who, why, when.isoformat(), action=action)
    key = _record(store, name, f"{when:%Y%m%dT%H%M%S%f}-{alias}-{action}", record)
    log.info("alias decision %s", record.describe())
    return AliasMove(**{**asdict(record), "key": key})


def _record(store: ObjectStore, name: str, stem: str, move: AliasMove) -> str:
    """Write ``move`` to the audit trail of ``name`` as ``<stem>-<random>.json``: its key."""
    key = join_key(
        "registry",
        check_id(name, "model name"),
        "alias-moves",
        f"{stem}-{uuid.uuid4().hex[:8]}.json",
    )
    put_json(store, key, asdict(move))
    return key


def alias_history(store: ObjectStore, name: str) -> list[AliasMove]:
    """Every recorded alias move of ``name``, oldest first."""
    prefix = join_key("registry", check_id(name, "model name"), "alias-moves")
    moves = [AliasMove(**{**get_json(store, k), "key": k}) for k in store.list(prefix)]
    return sorted(moves, key=lambda m: (m.when, m.key))


def version_tags(client: MlflowClient, name: str, version: str) -> dict[str, str]:
    return dict(client.get_model_version(name, str(version)).tags)


def lock_key(name: str) -> str:
    return join_key("registry", check_id(name, "model name"), "locks", "aliases.lock")


@contextlib.contextmanager
def alias_lock(
    store: ObjectStore, name: str, *, timeout_s: float = 30.0, stale_s: float = 300.0
) -> Iterator[str]:
    """Serialise alias changes of one model across processes and machines.

    The lock is an object created only if absent (a conditional write on S3,
    a hard link locally), so exactly one holder exists; a lock older than
    ``stale_s`` (its holder died) is broken. Raises RegistryError on timeout.
    """
    key = lock_key(name)
    token = uuid.uuid4().hex
    deadline = time.monotonic() + timeout_s
    while True:
        body = {"token": token, "who": actor(), "since": time.time()}
        try:
            put_json(store, key, body)
            break
        except ObjectExists:
            try:
                held = get_json(store, key)
            except Exception:  # released between the two calls
                continue
            if time.time() - float(held.get("since", 0)) > stale_s:
                log.warning("breaking a stale registry lock held by %s", held.get("who"))
                with contextlib.suppress(Exception):
                    store.delete(key)
                continue
            if time.monotonic() > deadline:
                raise RegistryError(
                    f"the aliases of {name} are locked by {held.get('who')} (key {key}); "
                    "retry later, or delete the key if that process is gone"
                ) from None
            time.sleep(0.2)
    try:
        yield token
    finally:
        with contextlib.suppress(Exception):
            if get_json(store, key).get("token") == token:
                store.delete(key)
