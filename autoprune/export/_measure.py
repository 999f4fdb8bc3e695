"""Latency at export: the median of repeated runs on the CPU (threads stated) or on the run's device
(synchronised before each reading of the clock, under the run's autocast), on any example input (a tensor, a
tuple, a dict: the model is called through ``call_model``); and the search's latency, re-measured for the model
chosen, beside what the search recorded."""

from __future__ import annotations

import statistics
from typing import Any

import torch
from optuna.trial import FrozenTrial
from torch import nn

from autoprune.config import Config
from autoprune.engine import call_model
from autoprune.evaluate import CPU, LatencyRun, Runtime, measure_latency
from autoprune.evaluate._latency import _synchronizer, batch_of, time_calls
from autoprune.study._resolve import factory_search_paths

__all__ = ["cpu_latency_ms", "device_latency_ms", "remeasure_search_latency", "search_latency_line"]


def _summary(seconds: list[float], batch: int) -> dict[str, Any]:
    times = sorted(t * 1e3 for t in seconds)
    return {
        "median_ms": statistics.median(times),
        "p90_ms": times[min(len(times) - 1, int(0.9 * len(times)))],
        "runs": len(times),
        "batch": batch,
    }


def _timed(model: nn.Module, example: Any, runtime: Runtime, runs: int, warmup: int) -> list[float]:
    if runs <= 0:
        raise ValueError(f"latency runs must be positive, found {runs}")
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), runtime.autocast():
            return time_calls(lambda: call_model(model, example), runs, warmup, _synchronizer(runtime.torch_device))
    finally:
        model.train(was_training)


def cpu_latency_ms(model: nn.Module, example: Any, *, runs: int, warmup: int, threads: int) -> dict[str, Any]:
    """``{"median_ms", "p90_ms", "runs", "threads", "batch"}`` for ``model`` on ``example`` on the CPU, in eval
    mode (``model`` and ``example`` must be on the CPU)."""
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        times = _timed(model, example, CPU, runs, warmup)
    finally:
        torch.set_num_threads(saved_threads)
    return {**_summary(times, batch_of(example)), "threads": threads}


def device_latency_ms(model: nn.Module, example: Any, runtime: Runtime, *, runs: int, warmup: int) -> dict[str, Any]:
    """``{"median_ms", "p90_ms", "runs", "batch", "device", "precision"}`` for ``model`` on ``example`` on
    ``runtime``'s device (where ``model`` is), under its autocast, in eval mode."""
    times = _timed(model, runtime.to_device(example), runtime, runs, warmup)
    return {**_summary(times, batch_of(example)), "device": runtime.device, "precision": runtime.precision}


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
