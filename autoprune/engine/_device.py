"""The engine never asks for a device: it works where the model's weights are, and brings its inputs there."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["rng_devices", "to_device", "weights_device"]


def to_device(obj: Any, device: torch.device | str, *, non_blocking: bool = False) -> Any:
    """``obj`` with every tensor inside it (tuples, lists, dicts, nested) moved to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=non_blocking)
    if isinstance(obj, Mapping):
        moved = {k: to_device(v, device, non_blocking=non_blocking) for k, v in obj.items()}
        if type(obj) is dict:
            return moved
        try:  # a dict subclass that rebuilds from keyword arguments (Hugging Face's ModelOutput)
            return type(obj)(**moved)
        except TypeError:
            return moved
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # a namedtuple
        return type(obj)(*(to_device(v, device, non_blocking=non_blocking) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device, non_blocking=non_blocking) for v in obj)
    return obj


def weights_device(model: nn.Module) -> torch.device:
    """Where ``model``'s weights are (its first parameter or buffer); the CPU for a model with neither."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def rng_devices(model: nn.Module) -> list[int]:
    """The CUDA devices whose random state ``torch.random.fork_rng`` must save around a seeded draw on ``model``."""
    device = weights_device(model)
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]
