"""The docs cannot disagree with the code about the configuration.

``docs/configuration.md`` is generated from the pydantic models and must be
current; every ``section.field`` (VALUE) that a page states as a default must be
that field's default in the model (docs/registry.md said ``gate.min_auc`` (0.68)
while the code said 0.64); an unknown field's error lists the valid fields of its
section, in both configs; ``docs/design.md``'s module map names every package and
module of dags/, pipeline/ and training/ on disk, and nothing else.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from pipeline.base.config import ConfigError, PipelineConfig, load_config
from training.config.train import ConfigError as TrainConfigError
from training.config.train import TrainConfig
from training.config.train import load_config as load_train_config

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
STATED = re.compile(r"`([a-z_]+)\.([a-z_0-9]+)` \((-?[0-9][0-9_,.]*)\)")


def test_the_configuration_reference_is_current() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "config-doc", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr + " (run: python -m pipeline config-doc)"


def test_the_reference_names_every_field_of_both_configs() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()

    def leaves(model: type[BaseModel], prefix: str = "") -> list[str]:
        out = []
        for name, info in model.model_fields.items():
            default = info.get_default(call_default_factory=True)
            if isinstance(default, BaseModel):
                out += leaves(type(default), f"{prefix}{name}.")
            else:
                out.append(f"{prefix}{name}")
        return out

    for dotted in leaves(PipelineConfig):
        assert f"COSINE_RETRAIN_{dotted.upper().replace('.', '__')}`" in text, dotted
    for dotted in leaves(TrainConfig):
        assert f"`--set {dotted}=`" in text, dotted


def _default(section: str, field: str) -> object:
    model = PipelineConfig.model_fields[section].get_default(call_default_factory=True)
    return type(model).model_fields[field].get_default(call_default_factory=True)


def test_every_default_a_page_states_is_the_codes() -> None:
    stated = []
    for page in PAGES:
        for m in STATED.finditer(page.read_text()):
            section, field, value = m.groups()
            if section not in PipelineConfig.model_fields:
                continue
            sub = PipelineConfig.model_fields[section].get_default(call_default_factory=True)
            if not isinstance(sub, BaseModel) or field not in type(sub).model_fields:
                continue
            stated.append((page.name, f"{section}.{field}", value))
            actual = _default(section, field)
            number = float(value.replace(",", "").replace("_", ""))
            assert isinstance(actual, int | float), (page.name, section, field, actual)
            assert number == pytest.approx(float(actual)), (
                f"{page.name} says {section}.{field} defaults to {value}; the code: {actual}"
            )
    assert ("registry.md", "gate.min_auc", "0.64") in stated  # the check reads real pages


def test_an_unknown_field_lists_the_valid_ones(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.yaml"
    path.write_text("gate:\n  min_aucc: 0.7\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    valid = ", ".join(type(PipelineConfig().gate).model_fields)
    assert f"gate.min_aucc: unknown field; valid fields here: {valid}" in str(err.value)

    train = tmp_path / "train.yaml"
    train.write_text("schedule:\n  lr_maxx: 0.1\n  cycle_steps: 10\n")
    with pytest.raises(TrainConfigError) as terr:
        load_train_config(train)
    assert "schedule.lr_maxx: unknown field; valid fields here: lr_max, cycle_steps" in str(
        terr.value
    )
    assert "warmup_steps" in str(terr.value)
    with pytest.raises(
        TrainConfigError, match=r"bogus: unknown field; valid fields here: run_name"
    ):
        load_train_config(None, ["bogus=1"])


# ------------------------------------------------------------------------------ module map

MAP_FOLDERS = ("dags", "pipeline", "training")
NAME = re.compile(r"^[a-z_][a-z0-9_]*(\.py|/)$")
DESCRIPTION_COLUMN = 28  # a line indented this far goes on with the description above


def _module_map() -> tuple[set[str], set[str]]:
    """The packages and modules that docs/design.md's module map names (the fenced
    block under its Layout heading): names before two spaces, nesting by indent."""
    text = (ROOT / "docs" / "design.md").read_text()
    section = text.split("## Layout", 1)[1]
    block = section.split("```", 2)[1]
    packages: set[str] = set()
    modules: set[str] = set()
    stack: list[tuple[int, str]] = []  # (indent, package path)
    for line in block.splitlines()[1:]:
        indent = len(line) - len(line.lstrip(" "))
        if not line.strip() or indent >= DESCRIPTION_COLUMN:
            continue
        names = re.split(r"\s{2,}", line.strip(), maxsplit=1)[0].split()
        bad = [n for n in names if not NAME.match(n)]
        assert not bad, f"docs/design.md module map: {bad!r} in {line.strip()!r} is not a name"
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1] if stack else ""
        for name in names:
            if name.endswith("/"):
                packages.add(parent + name)
                stack.append((indent, parent + name))
            else:
                modules.add(parent + name)
    return packages, modules


def test_the_module_map_names_every_module_and_nothing_else() -> None:
    packages, modules = _module_map()
    on_disk = {
        str(p.relative_to(ROOT))
        for folder in MAP_FOLDERS
        for p in (ROOT / folder).rglob("*.py")
        if "__pycache__" not in p.parts
    }
    disk_modules = {m for m in on_disk if not m.endswith("__init__.py")}
    disk_packages = {m.removesuffix("__init__.py") for m in on_disk if m.endswith("__init__.py")}
    assert len(disk_modules) > 100  # the tree was found
    assert disk_modules - modules == set(), "modules missing from docs/design.md's map"
    assert modules - disk_modules == set(), "docs/design.md's map names modules that do not exist"
    assert disk_packages - packages == set(), "packages missing from docs/design.md's map"
    assert packages - disk_packages == set(), "docs/design.md's map names missing packages"
