"""Task metrics: ``metric(model, loader) -> float``, higher is better, registered by name."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from autoprune._registry import Registry, import_callable

__all__ = ["METRICS", "Metric", "accuracy", "confusion_matrix", "miou", "register_metric", "resolve_metric"]

Metric = Callable[[nn.Module, Iterable[Any]], float]

METRICS: Registry[Metric] = Registry("metric")


def register_metric(name: str) -> Callable[[Metric], Metric]:
    return METRICS.register(name)


def _on_model_device(model: nn.Module, loader: Iterable[Any]) -> Iterator[Any]:
    """``loader``'s batches, moved to where ``model``'s weights are (autocast stays the caller's)."""
    from autoprune.evaluate._runtime import model_device, to_device  # evaluate imports this module

    device = model_device(model)
    non_blocking = device.type == "cuda"
    for batch in loader:
        yield to_device(batch, device, non_blocking=non_blocking)


@register_metric("accuracy")
@torch.no_grad()
def accuracy(model: nn.Module, loader: Iterable[Any]) -> float:
    """Top-1 accuracy in [0, 1]."""
    was_training = model.training
    model.eval()
    correct = total = 0
    for inputs, targets in _on_model_device(model, loader):
        correct += int((model(inputs).argmax(dim=1) == targets).sum())
        total += int(targets.numel())
    model.train(was_training)
    if total == 0:
        raise ValueError("accuracy: the evaluation loader yielded no samples")
    return correct / total


def confusion_matrix(logits: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[num_classes, num_classes]`` counts of (target, predicted) pixels; logits ``[N, C, ...]``."""
    predicted = logits.argmax(dim=1).flatten()
    flat = targets.flatten() * num_classes + predicted
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


@register_metric("miou")
@torch.no_grad()
def miou(model: nn.Module, loader: Iterable[Any]) -> float:
    """Mean intersection-over-union over classes, in [0, 1], for ``[N, C, H, W]`` logits and ``[N, H, W]``
    targets. IoU is summed over the whole loader per class; classes absent from both targets and predictions
    do not count."""
    was_training = model.training
    model.eval()
    confusion: torch.Tensor | None = None
    for inputs, targets in _on_model_device(model, loader):
        logits = model(inputs)
        batch = confusion_matrix(logits, targets, int(logits.shape[1]))
        confusion = batch if confusion is None else confusion + batch
    model.train(was_training)
    if confusion is None:
        raise ValueError("miou: the evaluation loader yielded no samples")
    hits = confusion.diag().double()
    union = confusion.sum(dim=0).double() + confusion.sum(dim=1).double() - hits
    present = union > 0
    return float((hits[present] / union[present]).mean())


def resolve_metric(spec: str, *, search_paths: Iterable[str | Path] = ()) -> Metric:
    """A registered name, or ``"pkg.module:function"`` (imported from ``search_paths`` first)."""
    if ":" in spec:
        fn = import_callable(spec, key="metric", expected="fn(model, loader) -> float", search_paths=search_paths)
        return cast(Metric, fn)
    return METRICS.get(spec, key="metric")
