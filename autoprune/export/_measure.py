"""CPU latency of one forward pass, batch 1: the median of repeated runs, with the thread count stated."""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

__all__ = ["cpu_latency_ms"]


@torch.inference_mode()
def cpu_latency_ms(model: nn.Module, example: torch.Tensor, *, runs: int, warmup: int, threads: int) -> dict[str, float]:
    """``{"median_ms", "p90_ms", "runs", "threads", "batch"}`` for ``model(example)`` on the CPU, in eval mode."""
    if runs <= 0:
        raise ValueError(f"latency runs must be positive, found {runs}")
    saved_threads = torch.get_num_threads()
    was_training = model.training
    model.eval()
    torch.set_num_threads(threads)
    try:
        for _ in range(warmup):
            model(example)
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            model(example)
            times.append((time.perf_counter() - started) * 1e3)
    finally:
        torch.set_num_threads(saved_threads)
        model.train(was_training)
    times.sort()
    return {
        "median_ms": statistics.median(times),
        "p90_ms": times[min(len(times) - 1, int(0.9 * len(times)))],
        "runs": runs,
        "threads": threads,
        "batch": int(example.shape[0]),
    }
