"""Task metrics: ``metric(model, loader) -> float``, higher is better, registered by name."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, cast

import torch
from torch import nn

from autoprune._registry import Registry, import_object
from autoprune.errors import ConfigError

__all__ = ["METRICS", "Metric", "accuracy", "register_metric", "resolve_metric"]

Metric = Callable[[nn.Module, Iterable[Any]], float]

METRICS: Registry[Metric] = Registry("metric")


def register_metric(name: str) -> Callable[[Metric], Metric]:
    return METRICS.register(name)


@register_metric("accuracy")
@torch.no_grad()
def accuracy(model: nn.Module, loader: Iterable[Any]) -> float:
    """Top-1 accuracy in [0, 1]."""
    was_training = model.training
    model.eval()
    correct = total = 0
    for inputs, targets in loader:
        correct += int((model(inputs).argmax(dim=1) == targets).sum())
        total += int(targets.numel())
    model.train(was_training)
    if total == 0:
        raise ValueError("accuracy: the evaluation loader yielded no samples")
    return correct / total


def resolve_metric(spec: str) -> Metric:
    """A registered name, or ``"pkg.module:function"``."""
    if ":" in spec:
        obj = import_object(spec, key="metric")
        if not callable(obj):
            raise ConfigError(f"{spec!r} is not callable", key="metric")
        return cast(Metric, obj)
    return METRICS.get(spec, key="metric")
