"""Latency of one forward pass: the median of repeated runs, on the CPU (threads stated) or on the run's device
(synchronised before each reading of the clock, under the run's autocast)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from autoprune.evaluate import Runtime

__all__ = ["cpu_latency_ms", "device_latency_ms"]


def _synchronizer(device: torch.device) -> Callable[[], None]:
    """What waits for the device's queued work: kernels run asynchronously, so the clock alone would lie."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    if device.type == "mps":
        return torch.mps.synchronize
    return lambda: None


def _time(model: nn.Module, example: Any, runs: int, warmup: int, sync: Callable[[], None]) -> list[float]:
    for _ in range(warmup):
        model(example)
    sync()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        model(example)
        sync()
        times.append((time.perf_counter() - started) * 1e3)
    return sorted(times)


def _summary(times: list[float], runs: int, batch: int) -> dict[str, Any]:
    return {
        "median_ms": statistics.median(times),
        "p90_ms": times[min(len(times) - 1, int(0.9 * len(times)))],
        "runs": runs,
        "batch": batch,
    }


@torch.inference_mode()
def cpu_latency_ms(model: nn.Module, example: torch.Tensor, *, runs: int, warmup: int, threads: int) -> dict[str, float]:
    """``{"median_ms", "p90_ms", "runs", "threads", "batch"}`` for ``model(example)`` on the CPU, in eval mode
    (``model`` and ``example`` must be on the CPU)."""
    if runs <= 0:
        raise ValueError(f"latency runs must be positive, found {runs}")
    saved_threads = torch.get_num_threads()
    was_training = model.training
    model.eval()
    torch.set_num_threads(threads)
    try:
        times = _time(model, example, runs, warmup, lambda: None)
    finally:
        torch.set_num_threads(saved_threads)
        model.train(was_training)
    return {**_summary(times, runs, int(example.shape[0])), "threads": threads}


@torch.inference_mode()
def device_latency_ms(model: nn.Module, example: torch.Tensor, runtime: Runtime, *, runs: int, warmup: int) -> dict[str, Any]:
    """``{"median_ms", "p90_ms", "runs", "batch", "device", "precision"}`` for ``model(example)`` on
    ``runtime``'s device (where ``model`` is), under its autocast, in eval mode."""
    if runs <= 0:
        raise ValueError(f"latency runs must be positive, found {runs}")
    was_training = model.training
    model.eval()
    example = runtime.to_device(example)
    try:
        with runtime.autocast():
            times = _time(model, example, runs, warmup, _synchronizer(runtime.torch_device))
    finally:
        model.train(was_training)
    return {**_summary(times, runs, int(example.shape[0])), "device": runtime.device, "precision": runtime.precision}
