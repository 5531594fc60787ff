"""The configuration reference (docs/configuration.md), generated from the models.

Every field of the pipeline's config (:class:`~pipeline.base.config.PipelineConfig`)
and of the training job's (:class:`~training.config.train.TrainConfig`) with its type,
default, how to set it and its description, read from pydantic's JSON schema of
the models themselves, so the page cannot disagree with the code:
``python -m pipeline config-doc`` writes it, ``--check`` fails when it is stale
(the test suite runs the check).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

__all__ = ["DOC", "render"]

DOC = Path("docs") / "configuration.md"
HEADER = """# Configuration reference

Generated from the pydantic models by `python -m pipeline config-doc` (the test suite
fails when this page and the code disagree); do not edit by hand.

**The pipeline** (`pipeline.base.config.PipelineConfig`): every field has a default
for the local run; set it in the YAML file (`--config FILE` or `$COSINE_RETRAIN_CONFIG`,
sections as below) or with the environment variable shown (section and field joined
by `__`), which wins over the file. A list or a mapping is given as JSON in a
variable, e.g. `COSINE_RETRAIN_ALERTS__CHANNELS='["webhook","slack"]'`. An unknown
field is an error that lists the valid fields of its section.

**The training job** (`training.config.train.TrainConfig`): a YAML file
(`python -m training train --config FILE`, the pipeline's `retrain.train_config`)
overridden by `--set KEY=VALUE` (VALUE read as JSON, else YAML). Epoch forms
(`*_epochs`) and step forms (`*_steps`) exclude each other; epochs are converted to
optimizer steps once, from the window's size.
"""


def _type(schema: dict[str, Any], defs: dict[str, Any]) -> str:
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if "enum" in schema:
        return " | ".join(json.dumps(v) for v in schema["enum"])
    if "const" in schema:
        return json.dumps(schema["const"])
    if "anyOf" in schema:
        return " | ".join(_type(s, defs) for s in schema["anyOf"])
    kind = schema.get("type")
    if kind == "array":
        items = schema.get("items") or schema.get("prefixItems")
        if isinstance(items, list):
            return "[" + ", ".join(_type(i, defs) for i in items) + "]"
        return f"list[{_type(items or {}, defs)}]"
    if kind == "object":
        extra = schema.get("additionalProperties")
        return f"map[str, {_type(extra, defs)}]" if isinstance(extra, dict) else "map"
    fmt = schema.get("format")
    if fmt in ("path", "password"):
        return {"path": "path", "password": "secret"}[fmt]
    return {"integer": "int", "number": "float", "boolean": "bool", "string": "str"}.get(
        str(kind), str(kind or "any")
    )


def _bounds(schema: dict[str, Any]) -> str:
    parts = []
    for key, sign in (
        ("minimum", ">="),
        ("exclusiveMinimum", ">"),
        ("maximum", "<="),
        ("exclusiveMaximum", "<"),
        ("minLength", "length >="),
        ("maxLength", "length <="),
        ("minItems", "items >="),
    ):
        if key in schema:
            parts.append(f"{sign} {schema[key]}")
    for sub in schema.get("anyOf", []):
        inner = _bounds(sub)
        if inner:
            parts.append(inner)
    if "pattern" in schema:
        parts.append(f"pattern `{schema['pattern']}`")
    return ", ".join(parts)


def _default(value: Any) -> str:
    if value is None:
        return "null"
    text = json.dumps(value, default=str)
    return f"`{text}`" if len(text) <= 60 else f"`{text[:57]}...`"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _section_rows(
    model: type[BaseModel], schema: dict[str, Any], how: Any
) -> list[tuple[str, str, str, str, str]]:
    defs = schema.get("$defs", {})
    rows = []
    for name, prop in schema["properties"].items():
        info = model.model_fields[name]
        default = info.get_default(call_default_factory=True)
        if isinstance(default, BaseModel):
            continue  # a section: its own table
        bounds = _bounds(prop)
        description = info.description or prop.get("description") or ""
        if bounds:
            description = f"{description} ({bounds})" if description else bounds
        rows.append(
            (
                f"`{name}`",
                _cell(_type(prop, defs)),
                _default(json.loads(json.dumps(default, default=str))),
                how(name),
                _cell(description),
            )
        )
    return rows


def _table(rows: list[tuple[str, str, str, str, str]], set_with: str) -> list[str]:
    out = [f"| field | type | default | {set_with} | description |", "|---|---|---|---|---|"]
    out += [f"| {' | '.join(r)} |" for r in rows]
    return out


def _sections(model: type[BaseModel], prefix: str = "") -> list[tuple[str, type[BaseModel]]]:
    """Every section of ``model``, dotted, each followed by the sections it holds."""
    out = []
    for name, info in model.model_fields.items():
        default = info.get_default(call_default_factory=True)
        if isinstance(default, BaseModel):
            out.append((f"{prefix}{name}", type(default)))
            out += _sections(type(default), f"{prefix}{name}.")
    return out


def render() -> str:
    from pipeline.base.config import ENV_PREFIX, PipelineConfig
    from training.api import TrainConfig

    lines = [HEADER, "## The pipeline (`python -m pipeline`, the DAGs)", ""]
    schema = PipelineConfig.model_json_schema()
    lines += ["### Top level", ""]
    lines += _table(
        _section_rows(PipelineConfig, schema, lambda f: f"`{ENV_PREFIX}{f.upper()}`"),
        "environment",
    )
    for section, model in _sections(PipelineConfig):
        doc = (model.__doc__ or "").strip().split("\n\n")[0]
        lines += ["", f"### `{section}`", "", " ".join(doc.split()), ""]
        lines += _table(
            _section_rows(
                model,
                model.model_json_schema(),
                lambda f, s=section: f"`{ENV_PREFIX}{s.upper().replace('.', '__')}__{f.upper()}`",
            ),
            "environment",
        )
    lines += ["", "## The training job (`python -m training`, `retrain.train_config`)", ""]
    lines += ["### Top level", ""]
    lines += _table(
        _section_rows(TrainConfig, TrainConfig.model_json_schema(), lambda f: f"`--set {f}=`"),
        "set with",
    )
    for section, model in _sections(TrainConfig):
        doc = (model.__doc__ or "").strip().split("\n\n")[0]
        lines += ["", f"### `{section}`", ""]
        if doc:
            lines += [" ".join(doc.split()), ""]
        lines += _table(
            _section_rows(
                model, model.model_json_schema(), lambda f, s=section: f"`--set {s}.{f}=`"
            ),
            "set with",
        )
    return "\n".join(lines) + "\n"
