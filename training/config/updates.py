"""A config changed by dotted fields, and the same change as a command line.

In process, :func:`updated` replaces fields (``{"data.features": "...", "run_name":
"x"}``) and validates the result like a loaded config. Across a process boundary
(the command line, the GPU pod, torchrun) the same typed config travels as ``--set
KEY=VALUE`` arguments: :func:`cli_overrides` produces them (the fields that differ
from the config file the other side reads) and
:func:`training.config.train.load_config` is the one parser; a config survives the
trip unchanged (``tests/training/test_api.py``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from training.config.schedule import ScheduleConfig
from training.config.text import ConfigError, describe_errors
from training.config.train import TrainConfig

__all__ = ["cli_overrides", "train_argv", "updated"]


def updated(config: TrainConfig, updates: Mapping[str, Any]) -> TrainConfig:
    """``config`` with dotted fields replaced (``{"data.features": "...", "run_name": "x"}``),
    validated like a loaded config (a wrong value is a :class:`ConfigError`)."""
    from pydantic import BaseModel, ValidationError

    by_section: dict[str, dict[str, Any]] = {}
    top: dict[str, Any] = {}
    for key, value in updates.items():
        head, _, rest = key.partition(".")
        if head not in TrainConfig.model_fields:
            raise ConfigError(
                f"unknown training config field {key!r}; sections and fields: "
                f"{sorted(TrainConfig.model_fields)}"
            )
        if rest:
            if "." in rest:
                raise ConfigError(f"{key!r}: training config sections are one level deep")
            section = getattr(config, head)
            if not isinstance(section, BaseModel) or rest not in type(section).model_fields:
                known = sorted(type(section).model_fields) if isinstance(section, BaseModel) else []
                raise ConfigError(f"unknown field {key!r}; {head} has {known}")
            by_section.setdefault(head, {})[rest] = value
        else:
            top[key] = value
    for head, fields in by_section.items():
        if head == "schedule":  # one form of a length given: the other form goes off
            fields = ScheduleConfig.with_other_forms_off(fields)
        top[head] = getattr(config, head).model_copy(update=fields)
    candidate = config.model_copy(update=top)
    try:  # model_copy does not validate: validate the result as a whole, once
        return TrainConfig.model_validate(candidate.model_dump(mode="json", warnings=False))
    except ValidationError as exc:
        lines = describe_errors(exc, TrainConfig)
        raise ConfigError("invalid training config update:\n" + "\n".join(lines)) from None


def _leaves(config: TrainConfig) -> dict[str, Any]:
    """Dotted field -> JSON value: top-level fields, and each section's fields."""
    from pydantic import BaseModel

    out: dict[str, Any] = {}
    for name, value in config.model_dump(mode="json").items():
        if isinstance(getattr(config, name), BaseModel):
            out.update({f"{name}.{field}": v for field, v in value.items()})
        else:
            out[name] = value
    return out


def cli_overrides(config: TrainConfig, base: TrainConfig) -> list[str]:
    """``KEY=VALUE`` items (for ``--set``) that turn ``base`` into ``config``: every
    field whose value differs, as JSON (which the parser reads back exactly)."""
    now, then = _leaves(config), _leaves(base)
    return [
        f"{key}={json.dumps(value, sort_keys=True)}"
        for key, value in now.items()
        if then.get(key, object()) != value
    ]


def train_argv(
    config: TrainConfig,
    base: TrainConfig,
    *,
    config_path: str,
    resume_if_present: bool = True,
) -> list[str]:
    """The ``python -m training`` arguments that train ``config`` where ``base`` is the
    file at ``config_path`` (the pod's mounted training config)."""
    if not config.run_name:
        raise ConfigError("a run started from the command line needs a run_name")
    argv = ["train", "--config", config_path, "--run-name", config.run_name]
    if resume_if_present:
        argv.append("--resume-if-present")
    for item in cli_overrides(config, base):
        if not item.startswith("run_name="):
            argv += ["--set", item]
    return argv
