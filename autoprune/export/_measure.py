"""Latency at export, through the one latency meter (``autoprune.evaluate.measure_latency``, as ``latency:``
says): the base and the chosen model timed on the CPU and on the run's device with eager torch, and the search's
own latency (its backend, device, batch) re-measured for the model chosen, beside what the search recorded."""

from __future__ import annotations

from typing import Any

from optuna.trial import FrozenTrial
from torch import nn

from autoprune.config import Config
from autoprune.evaluate import LatencyRun, Runtime, measure_latency
from autoprune.study import factory_search_paths

__all__ = ["latency_before_after", "remeasure_search_latency", "search_latency_line"]


def latency_before_after(config: Config, runtime: Runtime, base_model: nn.Module, model: nn.Module, example: Any) -> dict[str, Any]:
    """``base_model`` and ``model`` (both on ``runtime``'s device) timed with eager torch, ``latency.runs`` calls
    after ``latency.warmup``, ``latency.threads`` threads on the CPU, at the example's own batch: the medians in
    milliseconds, the speed-up, and how they were measured."""
    lat = config.latency
    run = LatencyRun(runtime, lat.runs, lat.warmup, lat.threads)
    before = measure_latency(base_model, example, run, backend="torch")
    after = measure_latency(model, example, run, backend="torch")
    record = {
        "before_ms": before.median_ms,
        "after_ms": after.median_ms,
        "speedup": before.median_ms / after.median_ms,
        "statistic": "median",
        "runs": after.runs,
        "batch": after.batch,
        "device": after.device,
        "precision": after.precision,
        "warmup": lat.warmup,
    }
    if after.threads is not None:
        record["threads"] = after.threads
    return record


def remeasure_search_latency(
    config: Config, runtime: Runtime, base_model: nn.Module, model: nn.Module, example: Any, trial: FrozenTrial
) -> dict[str, Any] | None:
    """The chosen ``model`` and the base timed again as the search timed them (``latency:``, on ``runtime``),
    beside the figures the search recorded for ``trial``; None when the search measured no latency.

    A search figure can be a cached one, measured on another worker or at another moment: the two agree only
    within the measurement's noise, and the record shows both."""
    if "latency_relative" not in trial.user_attrs:
        return None
    lat = config.latency
    run = LatencyRun(runtime, lat.runs, lat.warmup, lat.threads, dict(lat.options))
    paths = factory_search_paths(config)
    base = measure_latency(base_model, example, run, backend=lat.backend, batch_size=lat.batch_size, search_paths=paths)
    after = measure_latency(model, example, run, backend=lat.backend, batch_size=lat.batch_size, search_paths=paths)
    attrs = trial.user_attrs
    return {
        "search": {
            "relative": attrs["latency_relative"],
            "ms": attrs.get("latency_ms"),
            "base_ms": attrs.get("latency_base_ms"),
            "spread": attrs.get("latency_spread"),
            "cached": attrs.get("latency_cached"),
        },
        "export": {
            "relative": after.median_ms / base.median_ms,
            "ms": after.median_ms,
            "base_ms": base.median_ms,
            "spread": after.spread,
        },
        "backend": after.backend,
        "device": after.device,
        "precision": after.precision,
        "batch": after.batch,
        "threads": after.threads,
        "runs": after.runs,
        "warmup": lat.warmup,
        "statistic": "median",
    }


def search_latency_line(record: dict[str, Any] | None) -> list[str]:
    """The summary line comparing the search's latency figure with the export's re-measurement."""
    if not record:
        return []
    s, e = record["search"], record["export"]
    threads = f", {record['threads']} thread(s)" if record.get("threads") else ""
    return [
        f"  search latency ({record['backend']} on {record['device']} {record['precision']}, batch {record['batch']}"
        f"{threads}): in the search {s['ms']:.3f} ms ({s['relative']:.3f} of the base, spread {s['spread'] or 0:.1%}) | "
        f"re-measured {e['ms']:.3f} ms ({e['relative']:.3f}, spread {e['spread']:.1%})"
    ]
