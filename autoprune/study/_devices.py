"""One GPU per worker: ``workers.devices`` checked, and a worker process pinned to its GPU before any CUDA work,
so that ``runtime.device: cuda`` (or ``auto``) resolves to it."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from autoprune.config import RuntimeConfig
from autoprune.errors import ConfigError

__all__ = ["check_worker_devices", "pin_worker_device", "worker_device"]


def worker_device(devices: Sequence[int], index: int) -> str:
    """The device worker ``index`` is pinned to with ``workers.devices``: ``cuda:{devices[index % n]}``."""
    if not devices:
        raise ValueError("worker_device needs at least one device index")
    return f"cuda:{devices[index % len(devices)]}"


def check_worker_devices(devices: Sequence[int] | None, config: RuntimeConfig, *, key: str = "workers.devices") -> None:
    """``workers.devices`` asks for CUDA devices that exist, with ``runtime.device`` auto or cuda; else one line."""
    if not devices:
        return
    bad = [d for d in devices if isinstance(d, bool) or not isinstance(d, int) or d < 0]
    if bad:
        raise ConfigError(f"expected CUDA device indices (integers >= 0), found {bad[0]!r}", key=key)
    if config.device.strip().lower() not in ("auto", "cuda"):
        raise ConfigError(
            f"{list(devices)} pins each worker to a CUDA device, but runtime.device is {config.device!r}; "
            "set runtime.device to cuda or auto",
            key=key,
        )
    if not torch.cuda.is_available():
        raise ConfigError(f"{list(devices)} requested but CUDA is not available", key=key)
    count = torch.cuda.device_count()
    missing = [d for d in devices if d >= count]
    if missing:
        raise ConfigError(f"CUDA device {missing[0]} requested but only {count} CUDA devices exist", key=key)


def pin_worker_device(devices: Sequence[int] | None, index: int, config: RuntimeConfig) -> str | None:
    """Pin this process to its worker's GPU (before any CUDA work), so ``cuda`` and ``auto`` resolve to it;
    returns the device, or None without ``workers.devices``."""
    if not devices:
        return None
    check_worker_devices(devices, config)
    device = worker_device(devices, index)
    torch.cuda.set_device(torch.device(device))
    return device
