"""The ``autoprune`` command: thin wrappers over the Python API."""

from __future__ import annotations

from autoprune.cli._main import main

__all__ = ["main"]
