"""The floor plan holds: import-linter's contracts (.importlinter) on the real tree, and
proof that they fail when a floor imports upward, a room of the steps floor imports one
above it or beside it (or is not in the plan), the pipeline reaches into training/ past
training.api, training imports the pipeline, or two modules of a package import each
other; no module of pipeline/ or training/ over 500 lines."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).parent / "lint-imports"
MAX_LINES = 500


def _lint(cwd: Path) -> subprocess.CompletedProcess[str]:
    if not LINT.exists():
        pytest.fail("lint-imports is missing from the environment (run ./run setup)")
    return subprocess.run(
        [str(LINT), "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the code and the contracts (grimp reads files; nothing is imported)."""
    for name in ("pipeline", "training", "dags"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    return tmp_path


def test_the_contracts_hold_on_the_tree() -> None:
    proc = _lint(ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "Contracts: 6 kept, 0 broken." in proc.stdout


ROOMS = "Steps rooms: canary -> promotion -> registry|quality|tuning|ops -> landing"

DOOR = "One door: pipeline/ imports training/ only through training.api"

BREAKS = {
    "a step imports the flow": (
        "pipeline/steps/promotion/gate.py",
        "from pipeline.flow.env import Env",
        [
            "Floors: dags -> apps -> flow -> steps -> base BROKEN",
            "steps.promotion.gate -> pipeline.flow.env",
        ],
    ),
    "a room of the steps imports a room above it": (
        "pipeline/steps/landing/ingest.py",
        "from pipeline.steps.quality.drift import check_drift",
        [f"{ROOMS} BROKEN", "steps.landing.ingest -> pipeline.steps.quality.drift"],
    ),
    "two rooms on one level import each other": (
        "pipeline/steps/registry/holdout.py",
        "from pipeline.steps.tuning.configs import train_config_path",
        [f"{ROOMS} BROKEN", "steps.registry.holdout -> pipeline.steps.tuning.configs"],
    ),
    "a new room of the steps that the plan does not name": (
        "pipeline/steps/serving/__init__.py",
        "from pipeline.steps.landing import ingest",
        [f"{ROOMS} BROKEN", "pipeline.steps.serving"],
    ),
    "the base floor imports Airflow": (
        "pipeline/base/layout.py",
        "import airflow.sdk",
        ["Only the apps floor and the DAG files know Airflow BROKEN"],
    ),
    "the pipeline reaches past training's door": (
        "pipeline/steps/ops/spend.py",
        "from training.data.spec import DatasetSpec",
        [f"{DOOR} BROKEN", "pipeline.steps.ops.spend -> training.data.spec"],
    ),
    "a DAG file imports training": (
        "dags/retrain.py",
        "from training import api",
        [f"{DOOR} BROKEN", "dags.retrain -> training.api"],
    ),
    "training imports the pipeline": (
        "training/engine/metrics.py",
        "from pipeline.base.config import load_config",
        ["BROKEN", "training.engine.metrics -> pipeline.base.config"],
    ),
    # layout imports the store: the store importing layout back closes a cycle
    "two modules of a floor import each other": (
        "pipeline/base/store/keys.py",
        "from pipeline.base import layout",
        ["No import cycles between the modules of a package BROKEN"],
    ),
}


@pytest.mark.parametrize("case", sorted(BREAKS))
def test_one_wrong_import_breaks_a_contract(tree: Path, case: str) -> None:
    module, line, expected = BREAKS[case]
    path = tree / module
    path.parent.mkdir(parents=True, exist_ok=True)  # a new package: its first module
    before = path.read_text() if path.exists() else ""
    path.write_text(before + f"\n{line}  # the wrong import\n")
    proc = _lint(tree)
    assert proc.returncode == 1, proc.stdout[-2000:]
    for text in expected:
        assert text in proc.stdout, proc.stdout[-3000:]


def test_no_module_is_over_500_lines() -> None:
    sizes = {
        str(p.relative_to(ROOT)): len(p.read_text().splitlines())
        for folder in ("pipeline", "training")
        for p in (ROOT / folder).rglob("*.py")
    }
    assert len(sizes) > 40  # the tree was found
    over = {name: n for name, n in sizes.items() if n > MAX_LINES}
    assert over == {}, over


HEAVY = ("torch", "great_expectations", "evidently", "mlflow", "sklearn")


@pytest.mark.parametrize(
    "module",
    [
        "pipeline.flow",
        "pipeline.apps.dagkit",
        "pipeline.base.config",
        "training.config.train",
        "training.api",
    ],
)
def test_what_every_task_and_dag_parse_imports_stays_light(module: str) -> None:
    """Every Airflow task process imports the flow, and every DAG parse the wiring and
    the configs: none of them may pull torch, Great Expectations, Evidently, MLflow or
    scikit-learn (seconds each per process); the step that needs one imports it."""
    code = f"import sys; import {module}; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"importing {module} loads {proc.stdout.strip()}"


@pytest.mark.parametrize("door", ["training.api", "pipeline.flow"])
def test_a_lazy_door_maps_every_name_it_exports_to_its_module(door: str) -> None:
    """``training.api`` and ``pipeline.flow`` are lazy maps (module ``__getattr__``): each
    name in ``__all__`` is mapped, defined where the map says, and importing the door
    imports none of the modules behind it."""
    code = f"""
import importlib, sys
door = importlib.import_module({door!r})
loaded = sorted(m for m in set(door._WHERE.values()) if m in sys.modules)
assert loaded == [], f"importing {door!r} loads {{loaded}}"
assert sorted(door.__all__) == sorted(door._WHERE), set(door.__all__) ^ set(door._WHERE)
for name, module in door._WHERE.items():
    assert getattr(importlib.import_module(module), name) is getattr(door, name), name
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
