"""The run's latency table: built once per device, backend, settings and architecture, cached in the run folder.

``output/latency_tables/<key>.json`` holds a finished table (the key hashes what its figures depend on, so a
change of backend, batch, threads or model is a new table). While one is built, every timed entry is appended to
``<key>.partial.jsonl`` as it is measured: an interrupted profile resumes from there. A file lock makes the
workers of one run folder build it once: the first builds, the others wait and read it.

A table is checked when it is read (every figure finite and positive: an edited or corrupted file is one line
naming it), and ``prune.round_to: auto`` refuses a table noisier than
:data:`~autoprune.evaluate.MAX_AUTO_NOISE`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from filelock import FileLock
from torch import nn

from autoprune.config import Config
from autoprune.engine import Group
from autoprune.errors import ConfigError
from autoprune.evaluate import (
    MAX_AUTO_NOISE,
    LatencyRun,
    LatencyTable,
    Runtime,
    TableEntry,
    get_latency_backend,
    hardware_name,
    identity_key,
    profile_latency,
    table_identity,
)
from autoprune.study._io import TABLE_FOLDER, check_output_writable, write_run_file
from autoprune.study._resolve import factory_search_paths

__all__ = [
    "TABLE_FOLDER", "Progress", "TableLog", "cached_table", "describe_table", "latency_table", "table_path",
]  # fmt: skip

NOISY = 0.1  # the base's repeated timings this far apart: the table is warned about
Progress = Callable[[int, int], None]  # (entries timed, entries in all)


@runtime_checkable
class TableLog(Protocol):
    """A ``log`` that also draws a table's progress: handed to ``search`` (or ``prepare_task``), it shows the bar
    of a table built on first use, as ``autoprune profile`` does (the CLI's progress logs are such objects)."""

    def __call__(self, message: str, /) -> None: ...

    def table_progress(self, done: int, total: int) -> None: ...


def _settings(config: Config, runtime: Runtime) -> dict[str, Any]:
    latency = config.latency
    return {
        "backend": latency.backend,
        "options": dict(latency.options),
        "device": runtime.torch_device.type,
        "precision": runtime.precision,
        "channels_last": runtime.channels_last,
        "batch": latency.batch_size,
        "threads": latency.threads,
        "runs": latency.runs,
        "warmup": latency.warmup,
        "points": latency.table_points,
        "plans": latency.table_plans,
    }


def _identity(config: Config, runtime: Runtime, model: nn.Module, example_inputs: Any, groups: Sequence[Group]) -> dict[str, Any]:
    return table_identity(model, example_inputs, groups, _settings(config, runtime), hardware_name(runtime))


def table_path(config: Config, identity: dict[str, Any]) -> Path:
    return config.output / TABLE_FOLDER / f"{identity_key(identity)}.json"


def _read(path: Path) -> LatencyTable:
    """The finished table at ``path``, its figures checked: a file edited or corrupted is one line naming it."""
    try:
        return LatencyTable.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"latency table {str(path)!r} cannot be used ({exc}); delete that file: `autoprune profile` (or the "
            "search) builds it again",
            key="output",
        ) from None


def _trusted(config: Config, table: LatencyTable, path: Path) -> LatencyTable:
    """``table``, unless ``prune.round_to: auto`` would snap to the staircase of a table too noisy to tell."""
    if config.prune.round_to == "auto" and table.noise > MAX_AUTO_NOISE:
        raise ConfigError(
            f"the latency table {str(path)!r} measured {table.noise:.0%} noise (how far its base model's timings "
            f"lay apart), more than the {MAX_AUTO_NOISE:.0%} round_to auto trusts its staircase with; set "
            "prune.round_to: 1 (the table is kept), or delete it and profile again on a quieter machine",
            key="prune.round_to",
        )
    return table


def _sound(entry: TableEntry) -> bool:
    return all(math.isfinite(v) and v > 0 for v in (entry.relative, entry.macs))


def _partial(path: Path) -> list[TableEntry]:
    """What an interrupted build timed: one JSON line per entry (a half-written last line is dropped)."""
    entries = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                entry = TableEntry(**json.loads(line))
            except (ValueError, TypeError):
                continue
            if _sound(entry):  # a corrupted figure drops its entry: its sweep is timed again
                entries.append(entry)
    return entries


def cached_table(config: Config, runtime: Runtime, model: nn.Module, example_inputs: Any, groups: Sequence[Group]) -> LatencyTable | None:
    """The run folder's finished table for this model and these settings, or None (nothing is built)."""
    path = table_path(config, _identity(config, runtime, model, example_inputs, groups))
    return _trusted(config, _read(path), path) if path.exists() else None


def latency_table(
    config: Config,
    runtime: Runtime,
    model: nn.Module,
    example_inputs: Any,
    groups: Sequence[Group],
    *,
    log: Callable[[str], None] = lambda _: None,
    progress: Progress | None = None,
) -> LatencyTable:
    """The table for ``model`` timed as ``config.latency`` says: read from the run folder, or built there (resuming
    what an interrupted build timed). ``model``'s weights do not matter; its architecture does. ``progress``
    defaults to ``log.table_progress`` when ``log`` is a :class:`TableLog`."""
    if progress is None:
        progress = log.table_progress if isinstance(log, TableLog) else lambda _done, _total: None
    identity = _identity(config, runtime, model, example_inputs, groups)
    path = table_path(config, identity)
    search_paths = factory_search_paths(config)
    get_latency_backend(config.latency.backend, search_paths=search_paths)  # a bad backend fails before any timing
    check_output_writable(path.parent)  # a file named latency_tables: one line, not a FileExistsError
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path.with_name(f".{path.stem}.lock"))):
        if path.exists():
            return _trusted(config, _read(path), path)
        partial = path.with_suffix(".partial.jsonl")
        done = _partial(partial)
        log(f"latency table: timing {len(groups)} groups at up to {config.latency.table_points} widths each "
            f"({config.latency.backend}, batch {config.latency.batch_size}, {config.latency.threads} thread(s))"
            + (f", resuming after {len(done)} entries" if done else ""))  # fmt: skip
        started = time.perf_counter()

        def on_entry(entry: TableEntry, count: int, total: int) -> None:
            with partial.open("a") as handle:
                handle.write(json.dumps(entry.__dict__) + "\n")
            progress(count, total)

        latency = config.latency
        run = LatencyRun(runtime, latency.runs, latency.warmup, latency.threads, dict(latency.options))
        table = profile_latency(
            model, example_inputs, groups, run, identity, backend=latency.backend, batch_size=latency.batch_size,
            points=latency.table_points, calibration=latency.table_plans, search_paths=search_paths, done=done,
            on_entry=on_entry,
        )  # fmt: skip
        write_run_file(path, json.dumps(table.to_dict(), indent=1).encode())
        partial.unlink(missing_ok=True)
        log(f"latency table: built in {time.perf_counter() - started:.1f} s, {path}")
        if table.noise > NOISY:
            log(f"warning: latency table: the base model's timings lay {table.noise:.0%} apart while it was built; "
                "another load on this machine makes its predictions and steps unreliable (delete it and profile "
                "again on a quiet machine, or raise latency.runs)")  # fmt: skip
        return _trusted(config, table, path)


def describe_table(table: LatencyTable, *, auto_steps: bool) -> list[str]:
    """Lines for ``profile`` and ``validate``: the base figure, and per group its timed widths and the staircase
    (the counts ``prune.round_to: auto`` keeps)."""
    identity = table.identity
    lines = [
        f"latency table: base {table.base_ms:.3f} ms ({identity.get('backend')}, batch {identity.get('batch')}, "
        f"{identity.get('threads')} thread(s), {identity.get('hardware')}); built in {table.seconds:.1f} s; "
        f"the base's timings lay {table.noise:.1%} apart",
    ]
    steps = table.steps()
    for group, curve in ((g, table.curve(g)) for g in table.entries):
        fastest = min(curve, key=lambda point: point[1])
        timed = ", ".join(f"{k}:{ms:.2f}" for k, ms in curve)
        lines.append(f"  {group}: {timed} ms; fastest {fastest[0]} channels")
        if auto_steps:
            lines.append(f"    round_to auto steps: {', '.join(str(k) for k in steps[group])}")
    return lines
