"""The command line's user error (its own module: every subcommand's module raises it)."""

from __future__ import annotations

__all__ = ["UsageError"]


class UsageError(Exception):
    """A user mistake on the command line or in a file: printed as one line, exit 2."""
