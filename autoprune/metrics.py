"""Task metrics: ``metric(model, loader) -> float``, higher is better, registered by name.

Built-in metrics read ``(inputs, targets)`` batches and Hugging Face dict batches with ``labels`` (the model runs
on the other entries). ``perplexity`` is for causal language models: it is reported negated, ``-exp(mean token
loss)``, so that higher is better, as for every metric a study maximises."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from autoprune._registry import Registry, import_callable
from autoprune.engine import LABELS, call_model, has_labels, logits_of, to_device, weights_device, without_labels
from autoprune.errors import ConfigError

__all__ = [
    "METRICS", "Metric", "accuracy", "confusion_matrix", "miou", "perplexity", "register_metric", "resolve_metric",
]  # fmt: skip

Metric = Callable[[nn.Module, Iterable[Any]], float]
IGNORE_INDEX = -100  # labels not scored (padding), as in torch's cross_entropy and transformers

METRICS: Registry[Metric] = Registry("metric")


def register_metric(name: str) -> Callable[[Metric], Metric]:
    return METRICS.register(name)


def _on_model_device(model: nn.Module, loader: Iterable[Any]) -> Iterator[Any]:
    """``loader``'s batches, moved to where ``model``'s weights are (autocast stays the caller's)."""
    device = weights_device(model)
    non_blocking = device.type == "cuda"
    for batch in loader:
        yield to_device(batch, device, non_blocking=non_blocking)


def _logits_and_targets(name: str, model: nn.Module, loader: Iterable[Any]) -> Iterator[tuple[torch.Tensor, Any]]:
    """The logits (the output tensor, or its ``logits`` entry: Hugging Face classifiers) and the targets of each
    ``(inputs, targets)`` batch; any other batch is a ConfigError at ``metric``, since only the user knows it."""
    for batch in _on_model_device(model, loader):
        if has_labels(batch):
            yield logits_of(call_model(model, without_labels(batch))), batch[LABELS]
            continue
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            keys = f" with keys {', '.join(map(str, batch))}" if isinstance(batch, Mapping) else ""
            raise ConfigError(
                f"metric {name!r} takes (inputs, targets) batches or dicts with 'labels', found a "
                f"{type(batch).__name__}{keys}; "
                "set metric: 'pkg.module:fn' with fn(model, loader) -> float",
                key="metric",
            )
        yield logits_of(call_model(model, batch[0])), batch[1]


@register_metric("accuracy")
@torch.no_grad()
def accuracy(model: nn.Module, loader: Iterable[Any]) -> float:
    """Top-1 accuracy in [0, 1]."""
    was_training = model.training
    model.eval()
    correct = total = 0
    for logits, targets in _logits_and_targets("accuracy", model, loader):
        if logits.dim() == targets.dim() + 1 and logits.dim() > 2 and logits.shape[:-1] == targets.shape:
            counted = targets != IGNORE_INDEX  # token classification: classes last, -100 not scored
            correct += int(((logits.argmax(dim=-1) == targets) & counted).sum())
            total += int(counted.sum())
            continue
        correct += int((logits.argmax(dim=1) == targets).sum())
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
    for logits, targets in _logits_and_targets("miou", model, loader):
        batch = confusion_matrix(logits, targets, int(logits.shape[1]))
        confusion = batch if confusion is None else confusion + batch
    model.train(was_training)
    if confusion is None:
        raise ValueError("miou: the evaluation loader yielded no samples")
    hits = confusion.diag().double()
    union = confusion.sum(dim=0).double() + confusion.sum(dim=1).double() - hits
    present = union > 0
    return float((hits[present] / union[present]).mean())


@register_metric("perplexity")
@torch.no_grad()
def perplexity(model: nn.Module, loader: Iterable[Any]) -> float:
    """``-exp(mean next-token cross-entropy)`` of a causal language model (negated: higher is better).

    Token ``t``'s logits predict label ``t + 1`` (labels equal to -100 are not scored), as transformers' causal
    LM loss counts them; the mean is over every scored token of the loader, not per batch."""
    was_training = model.training
    model.eval()
    nll, tokens = 0.0, 0
    for logits, labels in _logits_and_targets("perplexity", model, loader):
        if logits.dim() != 3 or labels.shape != logits.shape[:2]:
            raise ConfigError(
                f"metric 'perplexity' needs token logits [batch, tokens, vocab] and labels [batch, tokens], found "
                f"{list(logits.shape)} and {list(labels.shape)}",
                key="metric",
            )
        shifted, targets = logits[:, :-1].float(), labels[:, 1:]
        loss = torch.nn.functional.cross_entropy(
            shifted.reshape(-1, shifted.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
        )
        nll += float(loss)
        tokens += int((targets != IGNORE_INDEX).sum())
    model.train(was_training)
    if tokens == 0:
        raise ValueError("perplexity: the evaluation loader yielded no scored token")
    return -math.exp(nll / tokens)


def resolve_metric(spec: str, *, search_paths: Iterable[str | Path] = ()) -> Metric:
    """A registered name, or ``"pkg.module:function"`` (imported from ``search_paths`` first)."""
    if ":" in spec:
        fn = import_callable(spec, key="metric", expected="fn(model, loader) -> float", search_paths=search_paths)
        return cast(Metric, fn)
    return METRICS.get(spec, key="metric")
