"""The training job's one public entry: a typed config in, a typed result out.

In process (the pipeline's local backend, a notebook, a test)::

    from training import api

    config = api.updated(api.load_config("configs/flights.yaml"), {"run_name": "jan-mar"})
    result = api.train(config)                 # -> TrainResult
    result = api.TrainResult.load(api.run_dir(config))

Across a process boundary (the command line, the GPU pod, torchrun) the same
typed config travels as ``--set KEY=VALUE`` arguments: :func:`cli_overrides`
produces them (the fields that differ from the config file the other side
reads) and :func:`training.config.load_config` is the one parser; a config
survives the trip unchanged (``tests/training/test_api.py``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from training.config import ConfigError, ScheduleConfig, TrainConfig, load_config
from training.config_text import describe_errors
from training.results import CycleBest, TrainResult

if TYPE_CHECKING:
    from training.data.dataset import PreparedData
    from training.data.spec import DatasetSpec
    from training.distributed import DistContext
    from training.hooks import CycleHook

__all__ = [
    "ConfigError",
    "CycleBest",
    "TrainConfig",
    "TrainResult",
    "cli_overrides",
    "finished",
    "has_checkpoint",
    "load_config",
    "run_dir",
    "train",
    "train_argv",
    "updated",
]


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


def run_dir(config: TrainConfig) -> Path:
    if not config.run_name:
        raise ConfigError("the run has no run_name: its folder is chosen when it starts")
    return config.output_dir / config.run_name


def has_checkpoint(config: TrainConfig) -> bool:
    """Whether the named run has a ``last`` checkpoint to resume from."""
    folder = run_dir(config) / "checkpoints"
    return any((folder / name).exists() for name in ("last.ckpt", "last.prev.ckpt"))


def finished(config: TrainConfig) -> TrainResult | None:
    """The result of the named run if it has finished, else None."""
    if not config.run_name or not (run_dir(config) / "result.json").exists():
        return None
    return TrainResult.load(run_dir(config))


def train(
    config: TrainConfig,
    *,
    resume: bool | Literal["if_present"] = False,
    ctx: DistContext | None = None,
    data: PreparedData | None = None,
    spec: DatasetSpec | None = None,
    cycle_hooks: Sequence[CycleHook] = (),
) -> TrainResult:
    """Run the training job in this process; ``resume="if_present"`` continues the named
    run from its checkpoint when it has one (a retried task), else starts it.
    ``cycle_hooks`` see each cycle's best as it closes; one returning True ends the run
    there (status ``pruned``: the tuner's pruner)."""
    from training.trainer import Trainer

    if resume == "if_present":
        resume = bool(config.run_name) and has_checkpoint(config)
    trainer = Trainer(config, ctx=ctx, data=data, spec=spec, cycle_hooks=cycle_hooks)
    return trainer.run(resume=bool(resume))
