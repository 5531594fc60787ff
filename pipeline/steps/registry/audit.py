"""The registry against the audit trail: aliases moved behind the pipeline's back.

Anyone with edit rights on the registered model (the MLflow UI, another tool) can point
``champion`` or ``canary`` elsewhere without :func:`~pipeline.steps.registry.aliases.move_alias`;
the audit trail then disagrees with what serves. :func:`check_aliases` compares each
pipeline alias in the registry with the newest move the trail recorded for it; a
difference is recorded in the trail as such (action ``moved_outside``, who
``unknown (outside the pipeline)``) and an ``alias_moved_outside`` alert goes out. The
record makes the trail agree again, so the same move is reported once: the pipeline
*adopts* it from then on (the next scoring serves what the registry says). Undoing it is
moving the alias back (the MLflow UI, or ``python -m pipeline rollback`` for a champion
with a ``previous_champion``), which the next check records in turn.

The drift monitor's scoring and the canary review run the check first.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from pipeline.base.alerts import AlertKind, raise_alert
from pipeline.base.store import ObjectStore
from pipeline.steps.registry.aliases import (
    ALIASES,
    AliasMove,
    alias_history,
    alias_lock,
    record_decision,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from pipeline.base.config import PipelineConfig

__all__ = ["OUTSIDE", "check_aliases"]

log = logging.getLogger(__name__)

OUTSIDE = "moved_outside"  # the audit trail's action for a move it did not make
_TRAIL = ("moved", OUTSIDE)  # the records that say where an alias points


def _registry_aliases(client: MlflowClient, name: str) -> dict[str, str] | None:
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    return {k: str(v) for k, v in model.aliases.items()}


def check_aliases(
    client: MlflowClient, store: ObjectStore, config: PipelineConfig, name: str
) -> list[AliasMove]:
    """Record and alert every pipeline alias whose registry value differs from the
    audit trail's newest move for it; the records (empty: the two agree)."""
    found: list[AliasMove] = []
    with alias_lock(store, name):  # no move of ours is half done while we compare
        actual = _registry_aliases(client, name)
        if actual is None:
            return []
        history = alias_history(store, name)
        for alias in ALIASES:
            trail = [m for m in history if m.alias == alias and m.action in _TRAIL]
            recorded = trail[-1].to_version if trail else None
            now = actual.get(alias)
            if now == recorded:
                continue
            was = f"v{recorded}" if recorded else "(none)"
            found.append(
                record_decision(
                    store,
                    name,
                    alias,
                    current=recorded,
                    proposed=now,
                    action=OUTSIDE,
                    who="unknown (outside the pipeline)",
                    why=f"the registry says {alias} -> {f'v{now}' if now else '(removed)'}, "
                    f"the audit trail said {was}: moved outside the pipeline (the MLflow UI "
                    "or another tool); adopted from now on",
                )
            )
    for move in found:
        log.warning("alias moved outside the pipeline: %s", move.describe())
        raise_alert(
            config,
            store,
            AlertKind.ALIAS_OUTSIDE,
            f"{name}-{move.alias}-{move.when}",
            f"{name}: {move.alias} was moved outside the pipeline",
            f"{move.why}\nAdopt it (nothing to do: recorded) or undo it: docs/runbooks.md",
            {
                "model": name,
                "alias": move.alias,
                "recorded": move.from_version,
                "registry": move.to_version,
            },
        )
    return found
