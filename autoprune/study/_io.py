"""Writing into the run folder: whole files or nothing, checked before anything is written, one line on failure."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from autoprune.config import Config
from autoprune.errors import ConfigError

__all__ = [
    "RESOLVED_CONFIG",
    "TABLE_FOLDER",
    "atomic_write_bytes",
    "check_output_writable",
    "removed_if_failed",
    "run_file",
    "write_run_file",
]

RESOLVED_CONFIG = "config.resolved.yaml"
TABLE_FOLDER = "latency_tables"  # the run folder's latency tables (autoprune.study._latency_table)


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write to a temp file in the same folder, then rename: a kill never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_run_file(path: Path, payload: bytes) -> None:
    """``atomic_write_bytes`` into the run folder; a full disk or a lost permission is one line at ``output``."""
    try:
        atomic_write_bytes(path, payload)
    except OSError as exc:
        raise ConfigError(f"cannot write {str(path)!r}: {exc.strerror or exc}", key="output") from None


def check_output_writable(output: Path, *, key: str = "output") -> None:
    """``output`` is a folder we may create or write (config ``key``); checked before anything is written."""
    if output.exists() and not output.is_dir():
        raise ConfigError(f"{str(output)!r} exists and is not a folder", key=key)
    above = output.absolute()
    while not above.exists():
        above = above.parent
    if not above.is_dir():
        raise ConfigError(f"{str(output)!r} cannot be created: {str(above)!r} is a file, not a folder", key=key)
    if not os.access(above, os.W_OK | os.X_OK):
        raise ConfigError(f"{str(output)!r} cannot be created: no permission to write in {str(above)!r}", key=key)


def _recorded_study(path: Path) -> str | None:
    try:
        data = yaml.safe_load(path.read_text())
        return str((data.get("study") or {}).get("name") or data.get("name"))
    except Exception:  # an unreadable record belongs to no study we know
        return None


def run_file(config: Config, name: str) -> Path:
    """``output/name``, for the study the folder's ``config.resolved.yaml`` belongs to (or the first one);
    another study in the same folder (``--study-name``) gets ``name`` with its study name before the suffix,
    so neither overwrites the other's record."""
    first = config.output / RESOLVED_CONFIG
    if not first.exists() or _recorded_study(first) == config.study_name:
        return config.output / name
    stem, dot, suffix = name.partition(".")
    tag = re.sub(r"[^A-Za-z0-9_.-]+", "_", config.study_name)
    return config.output / f"{stem}.{tag}{dot}{suffix}"


@contextmanager
def removed_if_failed(folder: Path) -> Iterator[None]:
    """Create ``folder``; if the block fails, remove the folders this call created, when what the block left in
    them is only lock files (never a finished result)."""
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        if created:
            leftovers = list(folder.iterdir())
            if all(p.is_file() and p.name.startswith(".") and p.name.endswith(".lock") for p in leftovers):
                for p in leftovers:
                    p.unlink(missing_ok=True)
                for path in created:  # innermost first
                    path.rmdir()
        raise
