"""Weight rows per channel, the layout a criterion scores: plain torch, no DepGraph."""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

# The layers that root a group: torch-pruning's TORCH_CONV and TORCH_LINEAR, which are these very classes.
_ROOT_TYPES = (nn.modules.conv._ConvNd, nn.Linear)


def _scatter_rows(rows: torch.Tensor, at: torch.Tensor, channels: int) -> torch.Tensor:
    full = torch.zeros(channels, rows.shape[1], dtype=rows.dtype, device=rows.device)
    full[at] = rows
    return full


def _out_rows(module: nn.Module, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Output-channel rows of ``weight`` (default: the module's weight; pass ``.grad`` for its gradient)."""
    if weight is None:
        weight = cast(torch.Tensor, module.weight)  # torch types Module attributes as Tensor | Module
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return weight.transpose(0, 1).flatten(1)
    return weight.flatten(1)


def _rows_of(
    module: nn.Module, idxs: list[int], out: bool, weight: torch.Tensor | None = None
) -> torch.Tensor | None:
    """The rows of ``weight`` (default: the module's own) that the channels ``idxs`` own, or None."""
    if weight is None:
        weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor):
        return None
    index = torch.as_tensor(idxs, dtype=torch.long, device=weight.device)
    if weight.dim() == 1:
        return weight[index].unsqueeze(1).float()
    if isinstance(module, _ROOT_TYPES):
        if out:
            return _out_rows(module, weight)[index].float()
        if getattr(module, "groups", 1) != 1:
            return None  # grouped in-channels are scored through the out-channel dependency
        if isinstance(module, nn.modules.conv._ConvTransposeNd):
            return weight.flatten(1)[index].float()
        return weight.transpose(0, 1).flatten(1)[index].float()
    return None
