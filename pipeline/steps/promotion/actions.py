"""Acting on a canary: promote it, roll it back, or roll the champion back.

Alias changes happen under the model's lock in the store and re-check what they
expect (compare-and-set): of two racing promotions exactly one wins.
``champion`` never points at a version that failed its gate or its canary:
:func:`promote` refuses such a version whatever the caller says.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pipeline.base.alerts import AlertKind, raise_alert
from pipeline.base.store import ObjectStore
from pipeline.steps.registry.aliases import (
    CANARY,
    CHAMPION,
    PREVIOUS,
    RegistryError,
    alias_lock,
    current_alias,
    move_alias,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from pipeline.base.config import PipelineConfig

__all__ = ["PromotionResult", "promote", "reject_canary", "rollback_champion"]


@dataclass(frozen=True)
class PromotionResult:
    action: Literal[
        "promoted", "rejected", "rolled_back", "kept", "lost", "held", "awaiting_approval"
    ]
    model: str
    version: str | None
    detail: str


def _refuse_unfit(client: MlflowClient, name: str, version: str) -> None:
    tags = client.get_model_version(name, version).tags
    if tags.get("gate.status") != "passed":
        raise RegistryError(
            f"{name} v{version} has gate status {tags.get('gate.status')!r}: only a version "
            "that passed its gate may become champion"
        )
    if tags.get("canary.status") in ("rejected", "failed"):
        raise RegistryError(f"{name} v{version} failed its canary: it may not become champion")


def promote(
    client: MlflowClient,
    store: ObjectStore,
    config: PipelineConfig,
    name: str,
    version: str,
    *,
    why: str,
    who: str | None = None,
) -> PromotionResult:
    """Canary ``version`` -> champion (old champion kept as ``previous_champion``).

    Compare-and-set under the model's lock: if ``version`` is no longer the
    canary when the lock is held (another process promoted or rejected it),
    nothing moves and the result is ``lost``.
    """
    version = str(version)
    with alias_lock(store, name):
        if current_alias(client, name, CANARY) != version:
            holder = current_alias(client, name, CHAMPION)
            return PromotionResult(
                "lost",
                name,
                version,
                f"v{version} is not the canary any more (champion is v{holder}); nothing moved",
            )
        _refuse_unfit(client, name, version)
        old = current_alias(client, name, CHAMPION)
        if old is not None and old != version:
            move_alias(client, store, name, PREVIOUS, old, why=f"replaced by v{version}", who=who)
        move_alias(client, store, name, CHAMPION, version, why=why, who=who)
        move_alias(client, store, name, CANARY, None, why=f"v{version} promoted", who=who)
        client.set_model_version_tag(name, version, "canary.status", "promoted")
    raise_alert(
        config,
        store,
        AlertKind.PROMOTED,
        f"{name}-v{version}",
        f"{name} v{version} is the new champion",
        f"{why}\nprevious champion: v{old}",
        {"model": name, "version": version, "previous": old},
    )
    return PromotionResult("promoted", name, version, why)


def reject_canary(
    client: MlflowClient,
    store: ObjectStore,
    config: PipelineConfig,
    name: str,
    version: str,
    *,
    why: str,
    who: str | None = None,
    alert: bool = True,
) -> PromotionResult:
    """Roll the canary back: alias removed (its traffic returns to the champion: routing
    reads the alias), version tagged ``rejected`` with the reason; a ``canary_rolled_back``
    alert unless ``alert`` is False (a person's own rejection is no incident)."""
    version = str(version)
    with alias_lock(store, name):
        if current_alias(client, name, CANARY) != version:
            return PromotionResult("lost", name, version, f"v{version} is not the canary any more")
        client.set_model_version_tag(name, version, "canary.status", "rejected")
        client.set_model_version_tag(name, version, "canary.reason", why[:4000])
        move_alias(client, store, name, CANARY, None, why=f"rolled back: {why}", who=who)
    if not alert:
        return PromotionResult("rejected", name, version, why)
    raise_alert(
        config,
        store,
        AlertKind.ROLLBACK,
        f"{name}-v{version}",
        f"canary {name} v{version} was rolled back",
        why,
        {"model": name, "version": version},
    )
    return PromotionResult("rejected", name, version, why)


def rollback_champion(
    client: MlflowClient,
    store: ObjectStore,
    config: PipelineConfig,
    name: str,
    *,
    why: str,
    who: str | None = None,
) -> PromotionResult:
    """One command back: ``champion`` returns to ``previous_champion``."""
    with alias_lock(store, name):
        previous = current_alias(client, name, PREVIOUS)
        current = current_alias(client, name, CHAMPION)
        if previous is None:
            raise RegistryError(f"{name} has no previous_champion to roll back to")
        _refuse_unfit(client, name, previous)
        move_alias(client, store, name, CHAMPION, previous, why=f"rollback: {why}", who=who)
        move_alias(
            client, store, name, PREVIOUS, None, why=f"v{previous} is champion again", who=who
        )
        if current is not None:
            client.set_model_version_tag(name, current, "champion.status", "rolled_back")
            client.set_model_version_tag(name, current, "champion.rollback_reason", why[:4000])
    raise_alert(
        config,
        store,
        AlertKind.ROLLBACK,
        f"{name}-champion-v{current}",
        f"{name} champion rolled back from v{current} to v{previous}",
        why,
        {"model": name, "from": current, "to": previous},
    )
    return PromotionResult("rolled_back", name, previous, f"v{current} -> v{previous}: {why}")
