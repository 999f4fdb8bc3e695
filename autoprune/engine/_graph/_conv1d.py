"""transformers' ``Conv1D`` (GPT-2's linears, weights stored ``[in, out]``) as ``nn.Linear``, reversibly.

torch-pruning knows no pruner for ``Conv1D`` and cannot size its output inside GPT-2's split of ``c_attn`` (the
trace fails), so the copy that is pruned gets ``nn.Linear`` modules computing the same function, each marked
with :data:`CONV1D_MARK`; the Hugging Face writer turns marked linears back into ``Conv1D`` (the layout
``from_pretrained`` expects). The marker is a plain attribute: a pickled model needs no autoprune class.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["CONV1D_MARK", "has_conv1d", "is_conv1d", "linearize_conv1d"]

CONV1D_MARK = "_autoprune_conv1d"  # set on an nn.Linear that was a transformers Conv1D


def is_conv1d(module: nn.Module) -> bool:
    """Whether ``module`` is transformers' ``Conv1D`` (checked by name and layout, without importing it)."""
    cls = type(module)
    weight = getattr(module, "weight", None)
    return (
        cls.__name__ == "Conv1D"
        and cls.__module__.startswith("transformers")
        and isinstance(weight, torch.Tensor)
        and weight.dim() == 2
        and getattr(module, "nf", None) == weight.shape[1]
    )


def has_conv1d(model: nn.Module) -> bool:
    return any(is_conv1d(m) for m in model.modules())


def linearize_conv1d(model: nn.Module) -> int:
    """Replace every ``Conv1D`` of ``model`` (in place) by an equal, marked ``nn.Linear``; returns how many."""
    found = [(name, m) for name, m in model.named_modules() if name and is_conv1d(m)]
    modules = dict(model.named_modules())
    for name, conv in found:
        weight, bias = conv.weight, getattr(conv, "bias", None)
        linear = nn.Linear(weight.shape[0], weight.shape[1], bias=bias is not None, device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            linear.weight.copy_(weight.t())
            if bias is not None:
                linear.bias.copy_(bias)
        linear.train(conv.training)
        setattr(linear, CONV1D_MARK, True)
        parent, _, child = name.rpartition(".")
        setattr(modules[parent] if parent else model, child, linear)
    return len(found)
