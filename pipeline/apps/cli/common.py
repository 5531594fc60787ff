"""What every ``python -m pipeline`` command shares: the error, the output, the options."""

from __future__ import annotations

import argparse
import functools
import inspect
import json
from typing import TYPE_CHECKING, Any

from pipeline.base.config import home_spec, load_config, resolve_path

if TYPE_CHECKING:
    from pipeline.flow import Env

__all__ = ["Lazy", "Parser", "UsageError", "command", "common_options", "emit"]


class UsageError(Exception):
    """A mistake on the command line: printed as one ``error:`` line, exit 2."""


class Lazy:
    """The flow's :class:`~pipeline.flow.Env`, built on first use (``--help`` and usage
    errors need no config)."""

    def __init__(self, config_path: str | None) -> None:
        self._config_path = config_path

    @functools.cached_property
    def env(self) -> Env:
        from pipeline.flow import Env

        return Env(load_config(self._config_path))

    def looking_at(self) -> str:
        """The line naming the data set a command shows (and whether the home's replay
        chose its spec): a home never silently shows another data set."""
        env = self.env
        spec = resolve_path(env.config.dataset_spec)
        why = ", the spec its replay recorded" if home_spec(env.config.home) else ""
        return f"data set {env.dataset} (home {env.config.home}{why}: {spec})"


def emit(args: argparse.Namespace, text: str, data: Any) -> None:
    if args.json:
        print(json.dumps(data, indent=2, default=str))
    else:
        print(text)


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse's own convention)
        self.exit(2, f"error: {message} (see python -m pipeline {self._sub()}--help)\n")

    def _sub(self) -> str:
        parts = self.prog.split()
        return f"{parts[-1]} " if len(parts) > 3 else ""


def common_options(*, suppress: bool = False) -> argparse.ArgumentParser:
    """``--config``, ``--json``, ``-v``; ``suppress``: without defaults, for nested
    sub-parsers (argparse lets a sub-parser's defaults overwrite its parent's values)."""
    kwargs: dict[str, Any] = {"argument_default": argparse.SUPPRESS} if suppress else {}
    common = argparse.ArgumentParser(add_help=False, **kwargs)
    common.add_argument("--config", metavar="FILE", help="pipeline config YAML")
    common.add_argument("--json", action="store_true", help="print the result as JSON")
    common.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO)")
    return common


def command(
    sub: Any, common: argparse.ArgumentParser, name: str, func: Any
) -> argparse.ArgumentParser:
    """A subcommand running ``func(args, lazy)``, with the common options; its help is
    the first line of ``func``'s docstring, its description the whole docstring."""
    doc = inspect.cleandoc(func.__doc__ or "")
    p = sub.add_parser(name, parents=[common], help=doc.split("\n", 1)[0], description=doc)
    p.set_defaults(func=func)
    return p
