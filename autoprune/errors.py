"""Errors that reach the user as one line.

Each carries enough context (file, key path, found vs expected) that the CLI can print ``str(err)``
and exit 2 without a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["AutopruneError", "ConfigError", "PruningError", "did_you_mean"]


class AutopruneError(Exception):
    """Base class of every error autoprune raises on purpose (bad input, unmet plan)."""


class ConfigError(AutopruneError, ValueError):
    """A config, flag, preset or path is wrong. ``key`` is a dotted key path such as ``prune.ratio[1]``."""

    def __init__(self, message: str, *, key: str | None = None, source: str | None = None) -> None:
        self.key = key
        self.source = source
        self.detail = message
        where = ": ".join(p for p in (source, key) if p)
        super().__init__(f"{where}: {message}" if where else message)


class PruningError(AutopruneError, RuntimeError):
    """The engine could not do what a plan asked, named by group."""


class ReconstructionError(AutopruneError, RuntimeError):
    """Layer-wise reconstruction could not refit a pruned model, named by layer."""


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
