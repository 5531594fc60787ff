"""The text a person writes around a config: YAML files and ``--set`` items in,
error lines out.

Reading a YAML file with one message for each way it can be wrong (the training
config, the pipeline's config, a dataset spec); parsing one ``key.sub=value`` item;
turning a pydantic ``ValidationError`` into one ``field.path: what is wrong`` line
per error, naming a section's valid fields for a typo.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ValidationError


def read_yaml(path: Path, what: str, error: type[Exception]) -> Any:
    """The content of ``path``; a missing file or invalid YAML raises ``error`` with
    one line naming ``what`` (e.g. "config file") and the path."""
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise error(f"{what} {path} is not valid YAML: {exc}") from None


class ConfigError(ValueError):
    """The configuration is invalid; the message names the file and each field."""


def set_dotted(target: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = target
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: {k} is not a section")
    node[keys[-1]] = value


def parse_override(item: str) -> tuple[str, Any]:
    """``key.sub=value`` -> (key, value): the one parser of ``--set`` items.

    The value is read as JSON first (what :func:`training.api.cli_overrides` writes,
    so a typed config crosses a process boundary exactly), else as YAML (what a
    person types: ``[4, 5, 6]``, ``{a: b}``, ``off``); an empty value stays an
    empty string, and YAML 1.1's on/off/yes/no stay words.
    """
    if "=" not in item:
        raise ConfigError(f"--set expects key.sub=value, got {item!r}")
    key, text = item.split("=", 1)
    if not text.strip():
        return key.strip(), text
    try:
        return key.strip(), json.loads(text)
    except ValueError:
        pass
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    if isinstance(value, bool) and text.strip().lower() not in ("true", "false"):
        value = text.strip()  # YAML 1.1 reads on/off/yes/no as booleans; keep the word
    return key.strip(), value


def section_fields(model: type[BaseModel], path: tuple[Any, ...]) -> list[str]:
    """The valid field names of the section at ``path`` of ``model`` (for an
    unknown-field error); [] when the path leads to no model."""
    for part in path:
        info = model.model_fields.get(str(part))
        if info is None:
            return []
        inner = [t for t in (info.annotation, *get_args(info.annotation)) if _is_model(t)]
        if not inner:
            return []
        model = inner[0]
    return list(model.model_fields)


def _is_model(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, BaseModel)


def unknown_field(model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    """``unknown field; valid: a, b, c`` for the section holding ``loc``."""
    valid = section_fields(model, loc[:-1])
    return "unknown field" + (f"; valid fields here: {', '.join(valid)}" if valid else "")


def describe_errors(exc: ValidationError, model: type[BaseModel]) -> list[str]:
    """One ``  field.path: what is wrong`` line per error of a validation of ``model``."""
    lines = []
    for e in exc.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(config)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = unknown_field(model, tuple(e["loc"]))
        # a section's rule about one of its fields ("lr_max must be ..."): name it
        named = re.match(r"(\w+) (must .*)", msg, re.S)
        if named and named.group(1) in section_fields(model, tuple(e["loc"])):
            loc, msg = f"{loc}.{named.group(1)}", named.group(2)
        lines.append(f"  {loc}: {msg}")
    return lines
