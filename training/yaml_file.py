"""A YAML file a person wrote, read with one message for each way it can be wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

__all__ = ["read_yaml"]


def read_yaml(path: Path, what: str, error: type[Exception]) -> Any:
    """The content of ``path``; a missing file or invalid YAML raises ``error`` with
    one line naming ``what`` (e.g. "config file") and the path."""
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise error(f"{what} {path} is not valid YAML: {exc}") from None
