"""The one place that calls a model on an input and turns its output into tensors.

Graph building, the dry run, MAC counting, recalibration, training, metrics, export checks and latency all go
through these two functions: nothing else unpacks a model's inputs or outputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["LABELS", "call_model", "has_labels", "output_loss", "output_tensors", "without_labels"]

LABELS = "labels"  # Hugging Face's convention: the targets travel in the batch dict, the model returns its loss


def has_labels(batch: Any) -> bool:
    """Whether ``batch`` is a dict batch carrying its targets under ``labels`` (Hugging Face's convention)."""
    return isinstance(batch, Mapping) and isinstance(batch.get(LABELS), torch.Tensor)


def without_labels(batch: Mapping[str, Any]) -> dict[str, Any]:
    """A dict batch's model inputs: every entry but ``labels``."""
    return {k: v for k, v in batch.items() if k != LABELS}


def output_loss(output: Any) -> torch.Tensor | None:
    """The ``loss`` a model returned (a dict or ``ModelOutput`` entry, as Hugging Face models do given labels)."""
    loss = output.get("loss") if isinstance(output, Mapping) else getattr(output, "loss", None)
    return loss if isinstance(loss, torch.Tensor) and loss.numel() == 1 else None


def call_model(model: nn.Module, inputs: Any) -> Any:
    """``model`` on ``inputs``: a tuple or list is positional arguments, a dict (any mapping) keyword arguments,
    anything else one input (as torch-pruning's ``forward_fn`` and MAC counter call it)."""
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    if isinstance(inputs, Mapping):
        return model(**inputs)
    return model(inputs)


def output_tensors(value: Any) -> list[torch.Tensor]:
    """Every tensor of a model output, in order: a tensor, or tuples, lists and dicts (Hugging Face's
    ``ModelOutput`` is one) of them; anything else (None, ints) is skipped."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, Mapping):
        return [t for v in value.values() for t in output_tensors(v)]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in output_tensors(v)]
    return []
