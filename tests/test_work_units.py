"""The suite's work units (tests/conftest.py): every module that starts an Airflow stack
or uses the session's replayed demo is in the stack's unit, so the two xdist workers
never run two stacks at once nor replay the demo twice."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import STACK_UNIT, work_unit

TESTS = Path(__file__).resolve().parent
STARTS_A_STACK = {"live_stack", "stack_env"}  # tests/support.py's two ways in


def _needs_the_stack(tree: ast.Module) -> str | None:
    """Why a test module belongs in the stack's unit, or None."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in STARTS_A_STACK:
            return f"calls {node.id}"
        if isinstance(node, ast.Attribute) and node.attr in STARTS_A_STACK:
            return f"calls {node.attr}"
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and any(
            a.arg == "replayed" for a in node.args.args
        ):
            return f"{node.name} takes the replayed fixture"
        if isinstance(node, ast.Constant) and node.value == "replayed":
            return "asks for the replayed fixture by name"
        if isinstance(node, ast.Constant) and node.value == ["-m", "pipeline", "ui"]:
            return "starts ./run ui"
    argv = ast.dump(tree)
    if "Constant(value='pipeline'), Constant(value='ui')" in argv:
        return "starts python -m pipeline ui"
    return None


def test_every_module_that_starts_a_stack_or_replays_is_in_the_stack_unit() -> None:
    found, outside = {}, []
    for path in sorted(TESTS.rglob("test_*.py")):
        rel = path.relative_to(TESTS.parent).as_posix()
        if path == Path(__file__).resolve():
            continue
        why = _needs_the_stack(ast.parse(path.read_text()))
        if why is None:
            continue
        found[rel] = why
        if work_unit(f"{rel}::t") != STACK_UNIT:
            outside.append(f"{rel} ({why})")
    assert not outside, f"add to STACK_MODULES in tests/conftest.py: {outside}"
    # the scan sees the kinds it must: a stack module, a replay module, the ui's signals
    assert {"tests/stack/test_asset_chain.py", "tests/dags/test_replay.py"} <= set(found)
    assert "tests/stack/test_ui_signals.py" in found, found


def test_a_module_is_its_own_unit_unless_listed() -> None:
    assert work_unit("tests/training/test_api.py::test_x") == "tests/training/test_api.py"
    assert work_unit("tests/stack/test_celery_executor.py::test_y[a]") == STACK_UNIT
