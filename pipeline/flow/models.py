"""The registry as people drive it (the CLI): register a run, gate, roll back, list.

A person's promotion or rejection of a canary goes through
:func:`pipeline.flow.approval.decide`, the one path of every decision."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.flow.cards import after
from pipeline.flow.env import Env
from pipeline.steps.promotion.actions import PromotionResult, rollback_champion
from pipeline.steps.promotion.gate import GateResult
from pipeline.steps.promotion.gate import gate_version as gate
from pipeline.steps.registry.aliases import (
    CHALLENGER,
    AliasMove,
    RegistryError,
    alias_history,
    current_alias,
)
from pipeline.steps.registry.holdout import training_holdout
from pipeline.steps.registry.registration import Registration, register_training_run

__all__ = [
    "ModelListing",
    "gate_version",
    "list_models",
    "register_run",
    "rollback",
]


def register_run(
    env: Env, run_id: str, *, lineage: dict[str, str] | None = None, ensemble: bool = True
) -> Registration:
    """Register a finished training run's cycle bests (idempotent): the steps'
    :class:`~pipeline.steps.registry.registration.Registration`."""
    return register_training_run(
        env.client, env.store, env.spec, run_id, name=env.model, lineage=lineage, ensemble=ensemble
    )


def gate_version(
    env: Env, version: str | None = None, *, holdout_run: str | None = None
) -> GateResult:
    """The SLO gate for ``version`` (default: the challenger) on the holdout of its own
    run (or of ``holdout_run``); returns the steps' GateResult, raises GateFailed."""
    version = version or current_alias(env.client, env.model, CHALLENGER)
    if version is None:
        raise RegistryError(f"{env.model} has no challenger; pass --version")
    run_id = holdout_run or env.client.get_model_version(env.model, version).run_id
    holdout = training_holdout(env.client, run_id, env.spec, store=env.store)
    with after(env, version, "gate decided"):  # the card records a refusal too
        return gate(env.client, env.store, env.config, env.spec, env.model, holdout, version)


def rollback(env: Env, *, why: str) -> PromotionResult:
    """``champion`` returns to ``previous_champion``."""
    return rollback_champion(env.client, env.store, env.config, env.model, why=why)


@dataclass(frozen=True)
class ModelListing:
    aliases: dict[str, str]
    versions: list[dict[str, Any]]
    history: list[AliasMove]


def list_models(env: Env) -> ModelListing:
    """Aliases, versions with their gate and canary status, and the alias history."""
    from mlflow.exceptions import MlflowException

    try:
        model = env.client.get_registered_model(env.model)
    except MlflowException:
        raise RegistryError(
            f"no registered model {env.model!r} yet (register a training run)"
        ) from None
    aliases = {k: str(v) for k, v in model.aliases.items()}
    by_version: dict[str, list[str]] = {}
    for alias, version in aliases.items():
        by_version.setdefault(version, []).append(alias)
    versions = sorted(
        env.client.search_model_versions(f"name='{env.model}'"), key=lambda v: int(v.version)
    )
    rows = []
    for mv in versions:
        t = mv.tags
        rows.append(
            {
                "version": str(mv.version),
                "aliases": by_version.get(str(mv.version), []),
                "candidate": t.get("candidate"),
                "val_auc": t.get("val_auc"),
                "gate": t.get("gate.status", "-"),
                "canary": t.get("canary.status", "-"),
                "run": t.get("training_run_name"),
            }
        )
    return ModelListing(aliases, rows, alias_history(env.store, env.model))
