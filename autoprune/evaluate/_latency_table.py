"""A latency lookup table (HALP's, MetaPruning's): the model timed with each prunable group at a grid of kept-channel
counts (the other groups at their base width), with every group at each grid fraction (uniform plans), and on a
few random plans (calibration), on one backend, device and setting.

The table is a plain value (JSON in the run folder; ``autoprune.study`` caches and shares it). It answers two
questions without timing anything:

- **predicted latency** of any plan, from two features: its relative MACs ``M`` (exact: where two pruned groups
  meet in one layer, MACs shrink with the product) and the groups' *deviations*: how much faster or slower the
  model ran with each group alone at its kept count than the *uniform curve* (latency against MACs through the
  uniform plans) says for that group's MACs (memory-bound early layers, the widths a kernel favours). The model
  ``log latency = c + a log M (+ b sum of log deviations)`` is fitted to the calibration plans by least squares; the
  deviation term is kept only when it lowers the leave-one-out error there. Without calibration plans the
  prediction is the uniform curve at ``M`` plus the deviations;
- **the latency staircase**: the counts of a group that are not slower than any larger count of it, the only
  counts ``prune.round_to: auto`` keeps (64 channels may run faster than 60).

Figures are relative to the base model timed just before and just after each sweep (interpolated), so a machine
whose speed drifts during the build shifts the base and the candidates alike.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
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
from autoprune.evaluate._latency_fit import select_fit
from autoprune.plan import PruningPlan, kept_channels
from autoprune.ranking import ratio_for_kept, snap_up

# snap_up lives in autoprune.ranking (space snaps plans with it); re-exported beside the table it reads.
__all__ = [
    "CALIBRATION",
    "MAX_AUTO_NOISE",
    "UNIFORM",
    "LatencyTable",
    "TableEntry",
    "grid_counts",
    "identity_key",
    "profile_latency",
    "snap_up",
    "table_identity",
]

# The most noise (how far the base's repeated timings lay apart, over their median) a table may have for
# ``prune.round_to: auto`` to trust its staircase; a noisier one is refused for it (``round_to: 1`` still works).
MAX_AUTO_NOISE = 0.25
UNIFORM = "*"  # the group name of a uniform plan's entry (every group at the grid fraction ``asked / points``)
CALIBRATION = "~"  # the group name of a calibration plan's entry (random ratios in [0, 0.8] per group)
CALIBRATION_SEED = 0


@dataclass(frozen=True)
class TableEntry:
    """One timing: ``group`` asked to keep ``asked`` channels, keeping ``kept`` (attention heads round up), the
    rest at base width (for :data:`UNIFORM`: every group at fraction ``asked / points``); its latency relative to
    the base timed around it, and its relative MACs."""

    group: str
    asked: int
    kept: int
    relative: float
    macs: float
    channels: Mapping[str, int] | None = None  # a calibration plan's kept channels per group


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


def _interpolate(points: Sequence[tuple[float, float]], x: float) -> float:
    """``y`` at ``x`` on the polyline through ``points`` (ascending x), extended along its end segments."""
    if len(points) == 1:
        return points[0][1]
    index = min(max(bisect_left([p[0] for p in points], x), 1), len(points) - 1)
    (x0, y0), (x1, y1) = points[index - 1], points[index]
    return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)


@dataclass(frozen=True)
class LatencyTable:
    """Per group, relative latency and relative MACs at each timed kept count; the uniform plans' (relative MACs,
    relative latency); the base model's milliseconds."""

    identity: Mapping[str, Any]
    base_ms: float
    entries: Mapping[str, Mapping[int, tuple[float, float]]]  # group -> kept -> (relative latency, relative MACs)
    uniform: Sequence[tuple[float, float]] = ()  # (relative MACs, relative latency) of the uniform plans
    # (kept channels per group, relative MACs, relative latency) of the calibration plans
    calibration: Sequence[tuple[Mapping[str, int], float, float]] = ()
    seconds: float = 0.0  # what building it took
    noise: float = 0.0  # how far the base model's repeated timings during the build lay apart, over their median
    _curve: tuple[tuple[float, float], ...] = field(default=(), compare=False, repr=False)
    _fit: tuple[float, ...] = field(default=(), compare=False, repr=False)

    @property
    def key(self) -> str:
        return identity_key(self.identity)

    @property
    def channels(self) -> dict[str, int]:
        """Each group's base width (its largest timed count)."""
        return {group: max(counts) for group, counts in self.entries.items()}

    def curve(self, group: str) -> list[tuple[int, float]]:
        """``(kept, ms)`` of one group, ascending."""
        return [(k, rel * self.base_ms) for k, (rel, _) in sorted(self.entries[group].items())]

    def steps(self) -> dict[str, tuple[int, ...]]:
        """Per group, the staircase: the timed counts that no larger timed count beats by more than the table's
        :attr:`noise` (ascending; the base width is always one). A count that only looks slower within the noise
        is kept: dropping it would put small budgets out of reach on the strength of a jitter."""
        steps = {}
        for group in self.entries:
            allowed, fastest_above = [], math.inf
            for kept, ms in reversed(self.curve(group)):
                if ms <= fastest_above * (1.0 + self.noise):
                    allowed.append(kept)
                fastest_above = min(fastest_above, ms)
            steps[group] = tuple(sorted(allowed))
        return steps

    def uniform_curve(self, macs: float) -> float:
        """Relative latency at relative ``macs`` on the uniform plans' polyline (through the base at 1, 1)."""
        if not self._curve:
            points = sorted({(1.0, 1.0), *((float(m), float(r)) for m, r in self.uniform)})
            object.__setattr__(self, "_curve", tuple(points))
        return max(_interpolate(self._curve, macs), 0.0)

    def _at(self, group: str, kept: int) -> tuple[float, float]:
        """(relative latency, relative MACs) of ``group`` at ``kept``: linear between the timed counts."""
        points = sorted(self.entries[group].items())
        lat = _interpolate([(k, r) for k, (r, _) in points], kept)
        macs = _interpolate([(k, m) for k, (_, m) in points], kept)
        return lat, macs

    def deviation(self, group: str, kept: int) -> float:
        """How much slower (> 0) or faster the model ran with ``group`` alone at ``kept`` than the uniform curve
        says for its relative MACs; 0 at the group's width."""
        lat, macs = self._at(group, kept)
        return lat - self.uniform_curve(macs)

    def log_deviation(self, channels: Mapping[str, int]) -> float:
        """The sum over groups of log(latency alone at its count / the uniform curve at its MACs)."""
        total = 0.0
        for group, kept in channels.items():
            lat, macs = self._at(group, kept)
            total += math.log(max(lat, 1e-3) / max(self.uniform_curve(macs), 1e-3))
        return total

    def fit(self) -> tuple[float, ...]:
        """``(c, a, b)`` of ``log latency = c + a log M + b log deviation``, least squares over the calibration
        plans (and the base, at 0, 0); ``b`` is 0 unless the deviations lower the leave-one-out error. Empty
        without at least four calibration plans."""
        if not self._fit and len(self.calibration) >= 4:
            rows = [(math.log(max(m, 1e-6)), self.log_deviation(ch), math.log(max(r, 1e-6))) for ch, m, r in self.calibration]
            rows.append((0.0, 0.0, 0.0))  # the base model: 1 at 1
            object.__setattr__(self, "_fit", select_fit(rows))
        return self._fit

    def predict(self, channels: Mapping[str, int], macs: float | None = None) -> float:
        """Milliseconds of the model with ``channels`` kept per group (groups left out keep their base width) and
        relative ``macs`` (default: the one-group MACs changes added up, which misses where pruned groups meet)."""
        unknown = sorted(set(channels) - set(self.entries))
        if unknown:
            raise ValueError(f"the latency table has no group {unknown[0]!r}; it was built for {sorted(self.entries)[:5]}")
        if macs is None:
            macs = 1.0 + sum(self._at(g, k)[1] - 1.0 for g, k in channels.items())
        fitted = self.fit()
        if fitted:
            c, a, b = fitted
            return math.exp(c + a * math.log(max(macs, 1e-6)) + b * self.log_deviation(channels)) * self.base_ms
        relative = self.uniform_curve(macs) + sum(self.deviation(g, k) for g, k in channels.items())
        return max(relative, 1e-3) * self.base_ms  # deviations of a noisy table can sum past zero: never free

    def to_dict(self) -> dict[str, Any]:
        return {
            "identity": dict(self.identity),
            "base_ms": self.base_ms,
            "seconds": self.seconds,
            "noise": self.noise,
            "uniform": [list(p) for p in self.uniform],
            "calibration": [[dict(ch), m, r] for ch, m, r in self.calibration],
            "entries": [[g, k, r, m] for g, counts in self.entries.items() for k, (r, m) in sorted(counts.items())],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyTable:
        entries: dict[str, dict[int, tuple[float, float]]] = {g: {} for g in dict(data["identity"]).get("groups", {})}
        for group, kept, relative, macs in data["entries"]:
            entries.setdefault(str(group), {})[int(kept)] = (float(relative), float(macs))
        uniform = tuple((float(m), float(r)) for m, r in data.get("uniform", ()))
        calibration = tuple(({str(g): int(k) for g, k in ch.items()}, float(m), float(r)) for ch, m, r in data.get("calibration", ()))
        table = cls(
            dict(data["identity"]), float(data["base_ms"]), entries, uniform, calibration,
            float(data.get("seconds", 0.0)), float(data.get("noise", 0.0)),
        )  # fmt: skip
        table.check_figures()
        return table

    def check_figures(self) -> None:
        """A ValueError naming the first figure that no timing can give: a base, a relative latency or MACs that
        is not finite and positive, a noise that is not finite and >= 0 (an edited or corrupted table)."""
        figures = [("base_ms", self.base_ms)]
        for group, counts in self.entries.items():
            figures += [(f"{group!r} at {kept} channels", v) for kept, pair in counts.items() for v in pair]
        figures += [(f"uniform plan {i}", v) for i, pair in enumerate(self.uniform) for v in pair]
        figures += [(f"calibration plan {i}", v) for i, (_, m, r) in enumerate(self.calibration) for v in (m, r)]
        for name, value in figures:
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} is {value!r}, not a finite positive figure")
        if not (math.isfinite(self.noise) and self.noise >= 0):
            raise ValueError(f"noise is {self.noise!r}, not a finite figure >= 0")


def identity_key(identity: Mapping[str, Any]) -> str:
    """The file name a table is cached under: a hash of its identity."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _plans(groups: Sequence[Group], points: int, calibration: int) -> dict[str, list[tuple[int, PruningPlan]]]:
    """Each sweep's (asked, plan): per group its grid counts below its width; the uniform plans; the calibration
    plans (random ratios in [0, 0.8] per group, seeded)."""
    sweeps: dict[str, list[tuple[int, PruningPlan]]] = {}
    for group in groups:
        sweeps[group.name] = [(k, _keeping({group.name: (group.channels, k)})) for k in grid_counts(group.channels, points)[:-1]]
    sweeps[UNIFORM] = [
        (i, _keeping({g.name: (g.channels, max(1, math.ceil(g.channels * i / points))) for g in groups})) for i in range(1, points)
    ]
    rng = random.Random(CALIBRATION_SEED)
    sweeps[CALIBRATION] = [
        (i, _keeping({g.name: (g.channels, kept_channels(g.channels, rng.uniform(0.0, 0.8))) for g in groups}))
        for i in range(calibration)
    ]
    return sweeps


def _keeping(kept: Mapping[str, tuple[int, int]]) -> PruningPlan:
    """The l1 plan keeping ``kept[group] = (width, count)`` channels per group."""
    return PruningPlan({name: (ratio_for_kept(width, count), "l1") for name, (width, count) in kept.items()})


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
    calibration: int = 12,
    search_paths: Iterable[str | Path] = (),
    done: Iterable[TableEntry] = (),
    on_entry: Callable[[TableEntry, int, int], None] = lambda _entry, _done, _total: None,
) -> LatencyTable:
    """Time ``model`` with each group in turn at each of its :func:`grid_counts` (the others at base width), then
    with every group at each grid fraction. Each sweep is bracketed by timings of the base model; an entry's
    figure is relative to the base interpolated to its place in the sweep.

    ``done`` are entries an interrupted profile already timed (their sweeps are skipped); ``on_entry(entry, done,
    total)`` is called for each new one, when its sweep ends (to cache it, and to move a progress bar)."""
    started = time.perf_counter()

    def timed(candidate: nn.Module) -> float:
        return measure_latency(candidate, example_inputs, run, backend=backend, batch_size=batch_size, search_paths=search_paths).median_ms

    sweeps = _plans(groups, points, calibration)
    total = sum(len(v) for v in sweeps.values())
    finished: dict[str, list[TableEntry]] = {}
    for entry in done:
        finished.setdefault(entry.group, []).append(entry)
    finished = {g: e for g, e in finished.items() if g in sweeps and len(e) == len(sweeps[g])}  # whole sweeps only
    count = sum(len(e) for e in finished.values())
    timed(model)  # a first call pays for allocations and kernel selection: never a figure
    base_times = [timed(model)]
    for name, sweep in sweeps.items():
        if name in finished or not sweep:
            continue
        raw = []
        for asked, plan in sweep:
            pruned, report = apply_plan(model, example_inputs, plan)
            kept = report.channels[name][1] if name in report.channels else asked
            channels = {g: after for g, (_, after) in report.channels.items()} if name == CALIBRATION else None
            raw.append((asked, kept, timed(pruned), report.macs_ratio, channels))
        base_times.append(timed(model))
        before, after = base_times[-2], base_times[-1]
        entries = []
        for index, (asked, kept, ms, macs, channels) in enumerate(raw):
            base_here = before + (after - before) * (index + 1) / (len(raw) + 1)
            entries.append(TableEntry(name, asked, kept, ms / base_here, macs, channels))
        finished[name] = entries
        for entry in entries:
            count += 1
            on_entry(entry, count, total)
    return _table(identity, groups, finished, base_times, time.perf_counter() - started)


def _table(
    identity: Mapping[str, Any], groups: Sequence[Group], finished: Mapping[str, list[TableEntry]], base_times: list[float], seconds: float
) -> LatencyTable:
    base_ms = statistics.median(base_times)
    entries: dict[str, dict[int, tuple[float, float]]] = {g.name: {g.channels: (1.0, 1.0)} for g in groups}
    for name, sweep in finished.items():
        if name not in (UNIFORM, CALIBRATION):
            for entry in sweep:
                entries[name][entry.kept] = (entry.relative, entry.macs)
    uniform = tuple(sorted((e.macs, e.relative) for e in finished.get(UNIFORM, [])))
    calibration = tuple((dict(e.channels or {}), e.macs, e.relative) for e in finished.get(CALIBRATION, []))
    noise = (max(base_times) - min(base_times)) / base_ms
    return LatencyTable(dict(identity), base_ms, entries, uniform, calibration, seconds, noise)
