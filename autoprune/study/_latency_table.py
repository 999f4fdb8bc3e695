"""The run's latency table: built once per device, backend, settings and architecture, cached in the run folder.

``output/latency_tables/<key>.json`` holds a finished table (the key hashes what its figures depend on, so a
change of backend, batch, threads or model is a new table). While one is built, every timed entry is appended to
``<key>.partial.jsonl`` as it is measured: an interrupted profile resumes from there. A file lock makes the
workers of one run folder build it once: the first builds, the others wait and read it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from filelock import FileLock
from torch import nn

from autoprune.config import Config
from autoprune.engine import Group
from autoprune.errors import ConfigError
from autoprune.evaluate import (
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
from autoprune.study._io import write_run_file
from autoprune.study._resolve import factory_search_paths

__all__ = ["TABLE_FOLDER", "Progress", "cached_table", "describe_table", "latency_table", "table_path"]

TABLE_FOLDER = "latency_tables"
NOISY = 0.1  # the base's repeated timings this far apart: the table is warned about
Progress = Callable[[int, int], None]  # (entries timed, entries in all)


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
    try:
        return LatencyTable.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"latency table {str(path)!r} cannot be read ({exc}); delete it to build it again", key="output") from None


def _partial(path: Path) -> list[TableEntry]:
    """What an interrupted build timed: one JSON line per entry (a half-written last line is dropped)."""
    entries = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                entries.append(TableEntry(**json.loads(line)))
            except (ValueError, TypeError):
                continue
    return entries


def cached_table(config: Config, runtime: Runtime, model: nn.Module, example_inputs: Any, groups: Sequence[Group]) -> LatencyTable | None:
    """The run folder's finished table for this model and these settings, or None (nothing is built)."""
    path = table_path(config, _identity(config, runtime, model, example_inputs, groups))
    return _read(path) if path.exists() else None


def latency_table(
    config: Config,
    runtime: Runtime,
    model: nn.Module,
    example_inputs: Any,
    groups: Sequence[Group],
    *,
    log: Callable[[str], None] = lambda _: None,
    progress: Progress = lambda _done, _total: None,
) -> LatencyTable:
    """The table for ``model`` timed as ``config.latency`` says: read from the run folder, or built there (resuming
    what an interrupted build timed). ``model``'s weights do not matter; its architecture does."""
    identity = _identity(config, runtime, model, example_inputs, groups)
    path = table_path(config, identity)
    search_paths = factory_search_paths(config)
    get_latency_backend(config.latency.backend, search_paths=search_paths)  # a bad backend fails before any timing
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path.with_name(f".{path.stem}.lock"))):
        if path.exists():
            return _read(path)
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
        return table


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
