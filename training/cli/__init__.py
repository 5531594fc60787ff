"""``python -m training``: :mod:`.main` (the parser; ``train``, ``lr-find``, ``demo``)
and :mod:`.schedule` (``schedule``: preview a cosine schedule).

:class:`UsageError` and the exit codes live here, where every subcommand's module can
use them.
"""

from __future__ import annotations

__all__ = ["EXIT_PREEMPTED", "UsageError"]

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: stopped by SIGTERM after a checkpoint; retry resumes


class UsageError(Exception):
    """A user mistake on the command line or in a file: printed as one line, exit 2."""
