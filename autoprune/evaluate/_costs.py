"""What a candidate costs, relative to the base model: registered cost functions with one signature.

``cost(candidate) -> Cost``: ``macs``, ``params`` and ``nonzero_params`` read the prune report; ``latency`` asks
the candidate's :class:`LatencyMeter`, which measures each pruned architecture (channels per group) once per
backend, device, precision and batch, and keeps the figure in a cache (the study's, so workers share it).

``objectives: [metric, NAME]`` minimises any of them: a name registered with ``@register_cost(NAME, label=...)``
(or an entry point of the group ``autoprune.costs``), or a user's ``"pkg.module:fn"`` (its ``label`` attribute, if
any, names the axis). The label names the cost in the front, the report and the dashboard.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from torch import nn

from autoprune._registry import Registry, import_callable, one_line
from autoprune.config import Config, LatencyConfig
from autoprune.engine import PruneReport
from autoprune.errors import AutopruneError, ConfigError
from autoprune.evaluate._latency import LatencyRun, Measurement, get_latency_backend, hardware_name, measure_latency
from autoprune.evaluate._latency_table import LatencyTable
from autoprune.evaluate._runtime import Runtime

__all__ = [
    "COSTS",
    "Candidate",
    "Cost",
    "CostFunction",
    "cost_label",
    "get_cost",
    "LatencyCache",
    "LatencyMeter",
    "LatencyResult",
    "MemoryCache",
    "needs_latency",
    "needs_latency_table",
    "register_cost",
]


@dataclass(frozen=True)
class Cost:
    """A candidate's cost: relative to the base model (what a study minimises) and in its own unit."""

    relative: float
    absolute: float
    unit: str


class LatencyCache(Protocol):
    """Measurements by architecture key; a study's user attributes, or a dict."""

    def get(self, key: str) -> dict[str, Any] | None: ...

    def put(self, key: str, value: dict[str, Any]) -> None: ...


class MemoryCache:
    """A process's own cache: for sweeps and benchmarks that run plans without a study."""

    def __init__(self) -> None:
        self.entries: dict[str, dict[str, Any]] = {}

    def get(self, key: str) -> dict[str, Any] | None:
        return self.entries.get(key)

    def put(self, key: str, value: dict[str, Any]) -> None:
        self.entries[key] = value


@dataclass(frozen=True)
class LatencyResult:
    """A candidate's measurement beside the base model's; ``cached``: measured before, by this or another worker."""

    measurement: Measurement
    base: Measurement
    cached: bool
    seconds: float  # what measuring cost this trial: 0 on a cache hit

    @property
    def ms(self) -> float:
        return self.measurement.median_ms

    @property
    def relative(self) -> float:
        return self.measurement.median_ms / self.base.median_ms

    def attrs(self) -> dict[str, Any]:
        """The trial user attributes: relative and absolute latency, the spread, and how it was measured."""
        m = self.measurement
        return {
            "latency_relative": self.relative,
            "latency_ms": m.median_ms,
            "latency_spread": m.spread,
            "latency_cached": self.cached,
            "latency_base_ms": self.base.median_ms,
            "latency": {k: v for k, v in m.to_dict().items() if k not in ("median_ms", "spread")},
        }

    def timed_attrs(self) -> dict[str, Any]:
        """``latency: {mode: both}``: the fine-tuned candidate's timed figure, beside the predicted one."""
        return {
            "latency_measured_relative": self.relative,
            "latency_measured_ms": self.ms,
            "latency_measured_spread": self.measurement.spread,
            "latency_measured_base_ms": self.base.median_ms,
        }


class LatencyMeter:
    """Measures candidates' latency as ``latency:`` says, each architecture once: ``channels`` (group -> kept
    channels), with the backend, device, hardware, precision, batch and threads, make the cache key."""

    def __init__(
        self,
        config: LatencyConfig,
        runtime: Runtime,
        base_model: nn.Module,
        example_inputs: Any,
        base_channels: Mapping[str, int],
        *,
        cache: LatencyCache | None = None,
        search_paths: Iterable[str | Path] = (),
        table: LatencyTable | None = None,
    ) -> None:
        if config.mode != "measured" and table is None:
            raise ConfigError(f"latency mode {config.mode} needs a latency table (autoprune profile)", key="latency.mode")
        self.config, self.table = config, table
        self.run = LatencyRun(runtime, config.runs, config.warmup, config.threads, dict(config.options))
        self.search_paths = list(search_paths)
        get_latency_backend(config.backend, search_paths=self.search_paths)  # a bad backend fails before any trial
        self.base_model, self.example_inputs = base_model, example_inputs
        self.base_channels = dict(base_channels)
        self.cache: LatencyCache = cache if cache is not None else MemoryCache()
        self.hardware = hardware_name(runtime)
        self.measured = 0  # measurements this meter made (cache misses)
        self._base: Measurement | None = None

    def key(self, channels: Mapping[str, int]) -> str:
        runtime = self.run.runtime
        identity = {
            "channels": {**self.base_channels, **channels},
            "backend": self.config.backend,
            "options": self.config.options,
            "device": runtime.torch_device.type,
            "hardware": self.hardware,
            "precision": runtime.precision,
            "channels_last": runtime.channels_last,
            "batch": self.config.batch_size,
            "threads": self.config.threads,
        }
        text = json.dumps(identity, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    def _lookup(self, model: nn.Module, channels: Mapping[str, int]) -> tuple[Measurement, bool, float]:
        key = self.key(channels)
        found = self.cache.get(key)
        if found is not None:
            return Measurement.from_dict(found), True, 0.0
        started = time.perf_counter()
        measurement = measure_latency(
            model,
            self.example_inputs,
            self.run,
            backend=self.config.backend,
            batch_size=self.config.batch_size,
            search_paths=self.search_paths,
        )
        self.measured += 1
        self.cache.put(key, measurement.to_dict())
        return measurement, False, time.perf_counter() - started

    def base(self) -> Measurement:
        """The base model's measurement (from the cache when another worker made it): the relative figures' 1.0."""
        if self._base is None:
            self._base = self._lookup(self.base_model, {})[0]
        return self._base

    def measure(self, model: nn.Module, channels: Mapping[str, int]) -> LatencyResult:
        """``model``'s latency, pruned to ``channels`` (groups left out keep the base's), beside the base's."""
        base = self.base()
        measurement, cached, seconds = self._lookup(model, channels)
        return LatencyResult(measurement, base, cached, seconds)

    def predict(self, channels: Mapping[str, int], macs: float | None = None) -> LatencyResult:
        """The latency the table predicts for ``channels`` (with the plan's relative ``macs``, the two-group
        interaction too), beside the table's base figure."""
        if self.table is None:
            raise ValueError("this meter has no latency table to predict from")
        started = time.perf_counter()
        ms = self.table.predict(channels, macs)
        base = self._predicted(self.table.base_ms)
        return LatencyResult(self._predicted(ms), base, False, time.perf_counter() - started)

    def _predicted(self, ms: float) -> Measurement:
        runtime, cfg = self.run.runtime, self.config
        cpu = cfg.backend == "onnxruntime" or runtime.torch_device.type == "cpu"
        return Measurement(
            ms, ms, ms, 0, cfg.batch_size, cfg.backend,
            "cpu" if cfg.backend == "onnxruntime" else runtime.device,
            "fp32" if cfg.backend == "onnxruntime" else runtime.precision,
            cfg.threads if cpu and ":" not in cfg.backend else None,
            source="predicted",
        )  # fmt: skip


class Candidate:
    """A pruned model as the cost functions see it: the model, its prune report, and the latency meter (if the
    run measures latency); latency is measured once however many costs and constraints ask."""

    def __init__(self, model: nn.Module, report: PruneReport, meter: LatencyMeter | None = None) -> None:
        self.model, self.report, self.meter = model, report, meter
        self._latency: LatencyResult | None = None

    def latency(self) -> LatencyResult:
        """The latency the search reads: timed, or (``latency.mode`` predicted or both) the table's prediction."""
        if self.meter is None:
            raise ValueError("this run measures no latency: set objectives [metric, latency] or constraints.max_latency")
        if self._latency is None:
            if self.meter.config.mode == "measured":
                self._latency = self.timed_latency()
            else:
                self._latency = self.meter.predict(self.channels, self.report.macs_ratio)
        return self._latency

    def timed_latency(self) -> LatencyResult:
        """The candidate timed, whatever ``latency.mode`` says (``both`` times the fine-tuned ones)."""
        if self.meter is None:
            raise ValueError("this run measures no latency: set objectives [metric, latency] or constraints.max_latency")
        return self.meter.measure(self.model, self.channels)

    @property
    def channels(self) -> dict[str, int]:
        return {name: after for name, (_, after) in self.report.channels.items()}

    @property
    def latency_measured(self) -> bool:
        return self._latency is not None


CostFunction = Callable[[Candidate], Cost]
COST_KEY = "objectives[1]"


def _check_cost(name: str, obj: CostFunction) -> None:
    if not callable(obj):
        raise TypeError(f"cost {name!r} is {type(obj).__name__}, not callable")


COSTS: Registry[CostFunction] = Registry("cost", entry_point_group="autoprune.costs", check=_check_cost)
_LABELS: dict[str, str] = {}  # registered name -> the label of its axis


def register_cost(name: str, *, label: str | None = None) -> Callable[[CostFunction], CostFunction]:
    """``@register_cost("conv_params", label="conv params")`` on ``fn(candidate) -> Cost``; then
    ``objectives: [metric, conv_params]`` minimises ``Cost.relative``, shown as ``conv params (relative)``."""
    _LABELS[name] = label or name
    return COSTS.register(name)


def _checked(name: str, fn: Callable[[Candidate], Any]) -> CostFunction:
    """``fn`` with what it returns checked: a :class:`Cost` with a finite, positive relative figure; anything else,
    and anything a user's cost raises, is one line naming the cost and the key."""

    def cost(candidate: Candidate) -> Cost:
        try:
            value = fn(candidate)
        except AutopruneError:
            raise
        except Exception as exc:  # a user's cost fails in any way; the line names whose code and why
            raise ConfigError(f"cost {name!r} raised {one_line(exc)}", key=COST_KEY) from None
        if not isinstance(value, Cost) or not math.isfinite(value.relative) or value.relative < 0:
            raise ConfigError(
                f"cost {name!r} returned {value!r:.80}; expected autoprune.evaluate.Cost(relative, absolute, unit) "
                "with a finite relative figure >= 0",
                key=COST_KEY,
            )
        return value

    return cost


def get_cost(name: str, *, search_paths: Iterable[str | Path] = ()) -> CostFunction:
    """The registered cost ``name``, or the user's ``"pkg.module:fn"`` (imported from ``search_paths`` first)."""
    if ":" in name:
        fn = import_callable(name, key=COST_KEY, expected="fn(candidate) -> Cost", search_paths=search_paths)
        return _checked(name, fn)
    return _checked(name, COSTS.get(name, key=COST_KEY))


def cost_label(name: str, *, search_paths: Iterable[str | Path] = ()) -> str:
    """How the cost axis is named: the registered label, a ``"pkg.module:fn"``'s ``label`` attribute, else its
    name."""
    if ":" in name:
        fn = import_callable(name, key=COST_KEY, expected="fn(candidate) -> Cost", search_paths=search_paths)
        label = getattr(fn, "label", None)
        return label if isinstance(label, str) and label else name.rpartition(":")[2]
    COSTS.get(name, key=COST_KEY)  # loads the entry points, whose modules register their labels
    return _LABELS.get(name, name)


@register_cost("macs", label="MACs")
def macs_cost(candidate: Candidate) -> Cost:
    return Cost(candidate.report.macs_ratio, float(candidate.report.macs_after), "MACs")


@register_cost("params")
def params_cost(candidate: Candidate) -> Cost:
    return Cost(candidate.report.params_ratio, float(candidate.report.params_after), "params")


@register_cost("nonzero_params", label="non-zero params")
def nonzero_params_cost(candidate: Candidate) -> Cost:
    return Cost(candidate.report.nonzero_params_ratio, float(candidate.report.nonzero_params_after), "params")


@register_cost("latency")
def latency_cost(candidate: Candidate) -> Cost:
    result = candidate.latency()
    return Cost(result.relative, result.ms, "ms")


def needs_latency(config: Config) -> bool:
    """Whether a run measures every candidate's latency: it is the cost objective, or it has a budget."""
    return config.objectives[1] == "latency" or config.constraints.max_latency is not None


def needs_latency_table(config: Config) -> bool:
    """Whether a run needs the latency table: it predicts latency, or rounds kept channels to the staircase."""
    predicts = needs_latency(config) and config.latency.mode != "measured"
    return predicts or (config.prune.structured and config.prune.round_to == "auto")
