"""Two processes promote at the same instant (MLflow server on PostgreSQL):
exactly one wins and the registry stays consistent."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from pipeline.base.config import load_config
from pipeline.base.store import LocalStore
from pipeline.base.tracking import build_client
from pipeline.steps.registry.aliases import (
    CANARY,
    CHAMPION,
    PREVIOUS,
    alias_history,
    current_alias,
    move_alias,
)
from tests.support import ROOT

WORKER = textwrap.dedent(
    """
    import json, sys, time
    from pipeline.base.config import load_config
    from pipeline.base.store import LocalStore
    from pipeline.base.tracking import build_client
    from pipeline.steps.promotion.actions import promote, reject_canary

    url, home, name, version, action, start = sys.argv[1:7]
    config = load_config(None, home=home, mlflow={"tracking_uri": url})
    client = build_client(config)
    store = LocalStore(home + "/store")
    client.get_registered_model(name)  # warm the connection before the start line
    while time.time() < float(start):
        time.sleep(0.001)
    act = promote if action == "promote" else reject_canary
    result = act(client, store, config, name, version, why=f"{action} race", who=action)
    print(json.dumps({"action": result.action, "detail": result.detail}))
    """
)


@pytest.fixture
def registry(postgres_mlflow_server: Any, tmp_path: Path) -> dict[str, Any]:
    config = load_config(None, home=tmp_path, mlflow={"tracking_uri": postgres_mlflow_server.url})
    client = build_client(config)
    name = f"race_{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name)
    for _ in range(3):
        client.create_model_version(name, "s3://nowhere/model", tags={"gate.status": "passed"})
    store = LocalStore(tmp_path / "store")
    move_alias(client, store, name, CHAMPION, "1", why="setup")
    move_alias(client, store, name, CANARY, "2", why="setup")
    return {
        "client": client,
        "store": store,
        "name": name,
        "url": postgres_mlflow_server.url,
        "home": tmp_path,
    }


def _race(registry: dict[str, Any], version: str, actions: list[str]) -> list[dict[str, str]]:
    start = time.time() + 8  # both processes import and connect first, then go together
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WORKER,
                registry["url"],
                str(registry["home"]),
                registry["name"],
                version,
                action,
                str(start),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for action in actions
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def test_two_promotions_of_one_canary_exactly_one_wins(registry: dict[str, Any]) -> None:
    client, store, name = registry["client"], registry["store"], registry["name"]
    results = _race(registry, "2", ["promote", "promote"])
    assert sorted(r["action"] for r in results) == ["lost", "promoted"], results
    assert current_alias(client, name, CHAMPION) == "2"
    assert current_alias(client, name, PREVIOUS) == "1"
    assert current_alias(client, name, CANARY) is None
    champion_moves = [m for m in alias_history(store, name) if m.alias == CHAMPION]
    assert [m.to_version for m in champion_moves] == ["1", "2"]  # one promotion recorded
    assert not list(store.list(f"registry/{name}/locks"))  # the lock was released


def test_promotion_racing_a_rollback_leaves_one_consistent_outcome(
    registry: dict[str, Any],
) -> None:
    client, store, name = registry["client"], registry["store"], registry["name"]
    results = _race(registry, "2", ["promote", "reject"])
    actions = sorted(r["action"] for r in results)
    assert actions in (["lost", "promoted"], ["lost", "rejected"]), results
    status = client.get_model_version(name, "2").tags["canary.status"]
    if "promoted" in actions:
        assert current_alias(client, name, CHAMPION) == "2"
        assert status == "promoted"
    else:
        assert current_alias(client, name, CHAMPION) == "1"
        assert status == "rejected"
    assert current_alias(client, name, CANARY) is None
    last = {m.alias: m.to_version for m in alias_history(store, name)}
    for alias in (CHAMPION, CANARY, PREVIOUS):
        assert current_alias(client, name, alias) == last.get(alias)
