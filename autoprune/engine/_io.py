"""The one place that calls a model on an input and turns its output into tensors.

Graph building, the dry run, MAC counting, recalibration, training, metrics, export checks and latency all go
through these functions (``logits_of`` reads a classifier's logits): nothing else unpacks a model's inputs or outputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import torch
from torch import nn

__all__ = ["LABELS", "call_model", "has_labels", "logits_of", "output_loss", "output_tensors", "without_labels"]

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


def logits_of(output: Any) -> torch.Tensor:
    """The logits of a model output: the tensor itself, or ``output["logits"]`` / ``output.logits`` (a dict,
    Hugging Face's ``ModelOutput``)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping) and isinstance(output.get("logits"), torch.Tensor):
        return cast(torch.Tensor, output["logits"])
    if isinstance(getattr(output, "logits", None), torch.Tensor):
        return cast(torch.Tensor, output.logits)
    raise TypeError(
        f"the model returned {type(output).__name__}; expected a logits tensor or a dict / ModelOutput with 'logits' "
        "(a 'pkg.module:fn' loss or metric reads any output)"
    )
