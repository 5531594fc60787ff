"""Random sequences of gate and canary outcomes never break the registry's invariants.

The outcomes are drawn at random (that is the point); everything they act on is
real: a real MLflow server's registry and a real store. After every step:

1. ``champion`` never points at a version that failed its gate or its canary;
2. every alias's current value is the target of the last move recorded for it
   (who, why and when are present), so the history explains the present;
3. ``canary`` and ``champion`` never name the same version.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)

from pipeline.base.config import load_config
from pipeline.base.store import LocalStore
from pipeline.base.tracking import build_client
from pipeline.steps.canary.review import CanaryReview, apply_review
from pipeline.steps.promotion.actions import rollback_champion
from pipeline.steps.promotion.gate import GateCheck, GateFailed, GateResult, apply_gate
from pipeline.steps.registry.aliases import (
    ALIASES,
    CANARY,
    CHAMPION,
    PREVIOUS,
    RegistryError,
    alias_history,
    current_alias,
)


def _gate_result(name: str, version: str, passed: bool, champion: str | None) -> GateResult:
    check = GateCheck("auc", 0.7 if passed else 0.5, 0.6, ">=", passed)
    return GateResult(name, version, passed, (check,), champion, champion is None, 100, "now")


def _review(name: str, version: str, outcome: str) -> CanaryReview:
    from pipeline.steps.canary.review import Arm

    arm = Arm(version, 1000, 0.5, 0.7)
    return CanaryReview(
        name, outcome, f"drawn: {outcome}", arm, arm, 0.0, (0.0, 0.0), 0.005, 0.95, 1.0, "now"
    )


@pytest.fixture(scope="module")
def registry_env(mlflow_server: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("invariants")
    config = load_config(None, home=home, mlflow={"tracking_uri": mlflow_server.url})
    return {"config": config, "client": build_client(config), "home": home}


def test_random_gate_and_canary_sequences_keep_the_invariants(
    registry_env: dict[str, Any],
) -> None:
    config, client, home = registry_env["config"], registry_env["client"], registry_env["home"]

    class Promotions(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.name = f"inv_{uuid.uuid4().hex[:8]}"
            self.store = LocalStore(Path(home) / self.name)
            client.create_registered_model(self.name)
            self.failed: set[str] = set()  # versions that failed a gate or a canary

        @rule(passed=st.booleans())
        def new_candidate_through_the_gate(self, passed: bool) -> None:
            mv = client.create_model_version(self.name, "s3://nowhere/model")
            version = str(mv.version)
            champion = current_alias(client, self.name, CHAMPION)
            try:
                apply_gate(
                    client, self.store, config, _gate_result(self.name, version, passed, champion)
                )
            except GateFailed:
                self.failed.add(version)
            assert not passed or version not in self.failed

        @rule(outcome=st.sampled_from(["success", "failure", "inconclusive", "needs_decision"]))
        def labels_arrive(self, outcome: str) -> None:
            canary = current_alias(client, self.name, CANARY)
            if canary is None:
                return
            apply_review(client, self.store, config, _review(self.name, canary, outcome))
            if outcome == "failure":
                self.failed.add(canary)

        @rule()
        def rollback(self) -> None:
            if current_alias(client, self.name, PREVIOUS) is None:
                with pytest.raises(RegistryError, match="no previous_champion"):
                    rollback_champion(client, self.store, config, self.name, why="drawn")
            else:
                rollback_champion(client, self.store, config, self.name, why="drawn")

        @invariant()
        def registry_is_consistent(self) -> None:
            aliases = client.get_registered_model(self.name).aliases
            champion, canary = aliases.get(CHAMPION), aliases.get(CANARY)
            # 1. the champion passed its gate and never failed a canary
            if champion is not None:
                champion = str(champion)
                assert champion not in self.failed
                tags = client.get_model_version(self.name, champion).tags
                assert tags["gate.status"] == "passed"
                assert tags.get("canary.status") not in ("rejected", "failed")
            # 2. the recorded history explains every alias, with who/why/when
            last: dict[str, str | None] = {}
            for move in alias_history(self.store, self.name):
                assert move.who
                assert move.why
                assert move.when
                last[move.alias] = move.to_version
            for alias in ALIASES:
                now = aliases.get(alias)
                assert (None if now is None else str(now)) == last.get(alias)
            # 3. canary and champion are different versions
            assert canary is None or str(canary) != champion

    run_state_machine_as_test(
        Promotions,
        settings=settings(
            max_examples=6,
            stateful_step_count=10,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
