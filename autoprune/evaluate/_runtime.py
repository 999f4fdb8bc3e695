"""Where and how models run: one frozen value, resolved once from ``runtime:`` and handed down.

The evaluator owns autocast, the gradient scaler and moving batches (``to_device``); the engine never asks for a
device, it allocates where the model's weights are.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from autoprune.config import RuntimeConfig
from autoprune.engine import to_device
from autoprune.errors import ConfigError

__all__ = ["CPU", "Precision", "Runtime", "resolve_runtime"]

Precision = Literal["fp32", "bf16", "fp16"]
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Runtime:
    """``Runtime("cuda:0", "bf16")``: the device every model and batch of a run sits on, and the autocast dtype."""

    device: str = "cpu"
    precision: Precision = "fp32"
    channels_last: bool = False

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """``torch.autocast`` for bf16 / fp16; nothing for fp32."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.torch_device.type, dtype=_AUTOCAST_DTYPES[self.precision])

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A gradient scaler, enabled for fp16 only (bf16 keeps fp32's exponent range)."""
        return torch.amp.GradScaler(self.torch_device.type, enabled=self.precision == "fp16")

    def to_device(self, obj: Any) -> Any:
        return to_device(obj, self.torch_device, non_blocking=self.torch_device.type == "cuda")

    def place(self, model: nn.Module) -> nn.Module:
        """``model`` on this device (in channels-last memory format when asked); returns it."""
        model.to(self.torch_device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        return model


CPU = Runtime()


def resolve_runtime(config: RuntimeConfig, *, device: str | None = None, key: str = "runtime.device") -> Runtime:
    """The runtime ``config`` asks for (``device`` overrides ``config.device``, as ``--device`` does).

    A device that was asked for but is not there is an error, never a silent fallback to the CPU."""
    name = (device or config.device).strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif _mps_available():
            name = "mps"
        else:
            name = "cpu"
    try:
        parsed = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"unknown device {name!r}; expected auto, cpu, cuda, cuda:N or mps", key=key) from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} requested but CUDA is not available", key=key)
        index = parsed.index if parsed.index is not None else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device {name!r} requested but only {torch.cuda.device_count()} CUDA devices exist", key=key)
        parsed = torch.device("cuda", index)
    elif parsed.type == "mps":
        if not _mps_available():
            raise ConfigError(f"device {name!r} requested but MPS is not available", key=key)
    elif parsed.type != "cpu":
        raise ConfigError(f"unsupported device {name!r}; expected auto, cpu, cuda, cuda:N or mps", key=key)
    if config.precision == "fp16" and parsed.type == "cpu":
        raise ConfigError("fp16 autocast needs a GPU; use bf16 on the CPU", key="runtime.precision")
    return Runtime(device=str(parsed), precision=config.precision, channels_last=config.channels_last)


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())
