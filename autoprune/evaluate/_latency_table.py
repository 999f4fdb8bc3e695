"""A latency lookup table (HALP's, MetaPruning's): each prunable group timed at a grid of kept-channel counts, the
other groups at their base width, on one backend, device and setting.

The table is a plain value (JSON in the run folder; ``autoprune.study`` caches and shares it). It answers two
questions without timing anything:

- **predicted latency** of any plan: the base model's time plus each group's change at its kept count (the
  additive model), plus what the additive model cannot see, two pruned groups meeting in one layer: a layer's MACs
  shrink with its input *times* its output channels, so the MACs the one-group changes do not explain are charged
  at the table's own latency per MAC (a least-squares slope over its entries);
- **the latency staircase**: the counts of a group that are not slower than any larger count of it, the only
  counts ``prune.round_to: auto`` keeps (64 channels may run faster than 60).
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from autoprune.engine import Group, apply_plan, count_macs_params
from autoprune.evaluate._latency import LatencyRun, measure_latency
from autoprune.plan import PruningPlan, kept_channels
from autoprune.ranking import snap_up

# snap_up lives in autoprune.ranking (space snaps plans with it); re-exported beside the table it reads.
__all__ = ["LatencyTable", "TableEntry", "grid_counts", "identity_key", "profile_latency", "snap_up", "table_identity"]


@dataclass(frozen=True)
class TableEntry:
    """One timing: ``group`` asked to keep ``asked`` channels, keeping ``kept`` (attention heads round up), the
    rest at base width: milliseconds and relative MACs."""

    group: str
    asked: int
    kept: int
    ms: float
    macs: float


def grid_counts(channels: int, points: int) -> list[int]:
    """The kept-channel counts a table times for a group of ``channels``: ``points`` counts evenly spaced up to
    ``channels`` (fewer for a narrow group), ascending, the last being ``channels`` itself."""
    return sorted({max(1, math.ceil(channels * i / points)) for i in range(1, points + 1)})


def table_identity(
    model: nn.Module, example_inputs: Any, groups: Iterable[Group], settings: Mapping[str, Any], hardware: str
) -> dict[str, Any]:
    """What a table's figures depend on: the architecture (class, groups and widths, input shapes, MACs and
    params), the hardware, and the timing settings. Weights do not enter: latency does not depend on them."""
    macs, params = count_macs_params(model, example_inputs)
    return {
        "model": type(model).__qualname__,
        "groups": {g.name: g.channels for g in groups},
        "inputs": _shapes(example_inputs),
        "macs": macs,
        "params": params,
        "hardware": hardware,
        **settings,
    }


def _shapes(example: Any) -> Any:
    if hasattr(example, "shape"):
        return list(example.shape)
    if isinstance(example, Mapping):
        return {str(k): _shapes(v) for k, v in example.items()}
    if isinstance(example, (list, tuple)):
        return [_shapes(v) for v in example]
    return repr(type(example).__name__)


@dataclass(frozen=True)
class LatencyTable:
    """Per group, milliseconds and relative MACs at each timed kept count; the base model's milliseconds."""

    identity: Mapping[str, Any]
    base_ms: float
    entries: Mapping[str, Mapping[int, tuple[float, float]]]  # group -> kept -> (ms, relative MACs)
    seconds: float = 0.0  # what building it took
    noise: float = 0.0  # how far the base model's repeated timings during the build lay apart, over their median
    _slope: float = field(default=float("nan"), compare=False, repr=False)

    @property
    def key(self) -> str:
        return identity_key(self.identity)

    @property
    def channels(self) -> dict[str, int]:
        """Each group's base width (its largest timed count)."""
        return {group: max(counts) for group, counts in self.entries.items()}

    def curve(self, group: str) -> list[tuple[int, float]]:
        """``(kept, ms)`` of one group, ascending."""
        return [(k, ms) for k, (ms, _) in sorted(self.entries[group].items())]

    def steps(self) -> dict[str, tuple[int, ...]]:
        """Per group, the staircase: the timed counts not slower than any larger timed count (ascending; the base
        width is always one)."""
        steps = {}
        for group in self.entries:
            allowed, fastest_above = [], math.inf
            for kept, ms in reversed(self.curve(group)):
                if ms <= fastest_above:
                    allowed.append(kept)
                fastest_above = min(fastest_above, ms)
            steps[group] = tuple(sorted(allowed))
        return steps

    def _at(self, group: str, kept: int) -> tuple[float, float]:
        """(ms, relative MACs) of ``group`` at ``kept``: linear between the timed counts on either side."""
        points = sorted(self.entries[group].items())
        counts = [k for k, _ in points]
        index = bisect_left(counts, kept)
        if index < len(counts) and counts[index] == kept:
            return points[index][1]
        if index == 0:
            return points[0][1]
        if index == len(counts):
            return points[-1][1]
        (k0, (ms0, m0)), (k1, (ms1, m1)) = points[index - 1], points[index]
        w = (kept - k0) / (k1 - k0)
        return ms0 + w * (ms1 - ms0), m0 + w * (m1 - m0)

    def slope(self) -> float:
        """Relative latency per relative MAC over the table's one-group changes (least squares through 0)."""
        if math.isnan(self._slope):
            pairs = [((ms - self.base_ms) / self.base_ms, macs - 1.0) for g in self.entries for ms, macs in self.entries[g].values()]
            denominator = sum(dm * dm for _, dm in pairs)
            value = sum(dt * dm for dt, dm in pairs) / denominator if denominator > 0 else 0.0
            object.__setattr__(self, "_slope", max(value, 0.0))
        return self._slope

    def predict(self, channels: Mapping[str, int], macs: float | None = None) -> float:
        """Milliseconds of the model with ``channels`` kept per group (groups left out keep their base width):
        the additive model, and with the plan's relative ``macs`` the two-group interaction as well."""
        unknown = sorted(set(channels) - set(self.entries))
        if unknown:
            raise ValueError(f"the latency table has no group {unknown[0]!r}; it was built for {sorted(self.entries)[:5]}")
        ms, additive_macs = self.base_ms, 1.0
        for group, kept in channels.items():
            at_ms, at_macs = self._at(group, kept)
            ms += at_ms - self.base_ms
            additive_macs += at_macs - 1.0
        if macs is not None:
            ms += self.base_ms * self.slope() * (macs - additive_macs)
        return max(ms, 1e-3 * self.base_ms)  # a noisy table's changes can sum past zero: never free

    def to_dict(self) -> dict[str, Any]:
        return {
            "identity": dict(self.identity),
            "base_ms": self.base_ms,
            "seconds": self.seconds,
            "noise": self.noise,
            "entries": [[g, k, ms, m] for g, counts in self.entries.items() for k, (ms, m) in sorted(counts.items())],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyTable:
        entries: dict[str, dict[int, tuple[float, float]]] = {g: {} for g in dict(data["identity"]).get("groups", {})}
        for group, kept, ms, macs in data["entries"]:
            entries.setdefault(str(group), {})[int(kept)] = (float(ms), float(macs))
        return cls(
            dict(data["identity"]), float(data["base_ms"]), entries, float(data.get("seconds", 0.0)), float(data.get("noise", 0.0))
        )


def identity_key(identity: Mapping[str, Any]) -> str:
    """The file name a table is cached under: a hash of its identity."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:20]


def profile_latency(
    model: nn.Module,
    example_inputs: Any,
    groups: Sequence[Group],
    run: LatencyRun,
    identity: Mapping[str, Any],
    *,
    backend: str = "torch",
    batch_size: int | None = None,
    points: int = 8,
    search_paths: Iterable[str | Path] = (),
    done: Iterable[TableEntry] = (),
    on_entry: Callable[[TableEntry, int, int], None] = lambda _entry, _done, _total: None,
) -> LatencyTable:
    """Time ``model`` with each group in turn at each of its :func:`grid_counts`, the others at base width.

    ``done`` are entries an interrupted profile already timed (skipped); ``on_entry(entry, done, total)`` is
    called after each new one (to cache it, and to move a progress bar)."""
    started = time.perf_counter()

    def timed(candidate: nn.Module) -> float:
        return measure_latency(candidate, example_inputs, run, backend=backend, batch_size=batch_size, search_paths=search_paths).median_ms

    timed(model)  # a first call pays for allocations and kernel selection: never the figure
    base_times = [timed(model)]  # the base again before each group's sweep: its median is the figure
    entries: dict[str, dict[int, tuple[float, float]]] = {g.name: {} for g in groups}
    planned = {g.name: {g.channels: None} | {k: None for k in grid_counts(g.channels, points)} for g in groups}
    total = sum(len(counts) for counts in planned.values())
    asked = set()
    for entry in done:
        if entry.group in entries and entry.asked in planned[entry.group]:
            entries[entry.group][entry.kept] = (entry.ms, entry.macs)
            asked.add((entry.group, entry.asked))
    count = len(asked)
    for group in groups:
        todo = [k for k in sorted(planned[group.name]) if (group.name, k) not in asked]
        if todo:
            base_times.append(timed(model))
        for kept in todo:
            if kept == group.channels:
                entry = TableEntry(group.name, kept, kept, statistics.median(base_times), 1.0)
            else:
                ratio = 1.0 - kept / group.channels
                while kept_channels(group.channels, ratio) > kept:  # 1 - k/n may be off by an ulp
                    ratio = math.nextafter(ratio, 1.0)
                pruned, report = apply_plan(model, example_inputs, PruningPlan({group.name: (ratio, "l1")}))
                entry = TableEntry(group.name, kept, report.channels[group.name][1], timed(pruned), report.macs_ratio)
            entries[group.name][entry.kept] = (entry.ms, entry.macs)
            count += 1
            on_entry(entry, count, total)
    base_times.append(timed(model))
    base_ms = statistics.median(base_times)
    for group in groups:  # the base width of every group is the base model
        entries[group.name][group.channels] = (base_ms, 1.0)
    noise = (max(base_times) - min(base_times)) / base_ms
    return LatencyTable(dict(identity), base_ms, entries, time.perf_counter() - started, noise)
