"""Multi-head attention as two prunable groups: head dims (the same positions in every head of q, k and v)
and whole heads.

A site is any module with an integer ``num_heads`` and ``qkv`` / ``proj`` linears, the layout of timm's
``Attention`` and of the zoo's ``vit_tiny``. DepGraph alone maps the 3 x dim outputs of ``qkv`` onto the dim
inputs of ``proj`` wrongly (the reshape into heads breaks its index mapping); here the indices are computed
from the head layout, as torch-pruning's ``num_heads`` support does in its MetaPruner.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["HEADS_SUFFIX", "AttentionSite", "find_attention_sites"]

HEADS_SUFFIX = "#heads"


@dataclass(frozen=True)
class AttentionSite:
    owner: nn.Module  # holds num_heads (and, in timm, head_dim)
    qkv: nn.Linear
    proj: nn.Linear
    qkv_name: str
    proj_name: str

    @property
    def num_heads(self) -> int:
        heads: Any = self.owner.num_heads  # a plain int; torch types Module attributes as Tensor | Module
        return int(heads)

    @property
    def head_dim(self) -> int:
        return self.qkv.out_features // (3 * self.num_heads)

    def rows(self, unit: str, scope: str) -> torch.Tensor:
        """Weights per unit (``dims``: head-dim position, ``heads``: head), one row each."""
        h, d = self.num_heads, self.head_dim
        qkv = self.qkv.weight.detach().reshape(3, h, d, -1)
        order = (2, 0, 1, 3) if unit == "dims" else (1, 0, 2, 3)
        blocks = [qkv.permute(*order).flatten(1)]
        if scope == "group":
            proj = self.proj.weight.detach().reshape(-1, h, d)
            blocks.append(proj.permute(2, 1, 0).flatten(1) if unit == "dims" else proj.permute(1, 2, 0).flatten(1))
        return torch.cat(blocks, dim=1).clone().float()

    def indices(self, unit: str, remove: list[int]) -> tuple[list[int], list[int]]:
        """(qkv output rows, proj input columns) that removing ``remove`` units takes away."""
        h, d = self.num_heads, self.head_dim
        if unit == "dims":
            proj = [head * d + i for head in range(h) for i in remove]
        else:
            proj = [head * d + i for head in remove for i in range(d)]
        qkv = [part * h * d + j for part in range(3) for j in proj]
        return sorted(qkv), sorted(proj)

    def after_pruning(self, unit: str, removed: int) -> None:
        if unit == "heads":
            self.owner.num_heads = self.num_heads - removed  # type: ignore[assignment]  # an int attribute
        if isinstance(getattr(self.owner, "head_dim", None), int):
            self.owner.head_dim = self.qkv.out_features // (3 * self.num_heads)  # type: ignore[assignment]


def find_attention_sites(model: nn.Module) -> dict[str, AttentionSite]:
    """Attention modules, keyed by the qualified name of their ``qkv`` linear."""
    sites: dict[str, AttentionSite] = {}
    for name, module in model.named_modules():
        heads = getattr(module, "num_heads", None)
        qkv, proj = getattr(module, "qkv", None), getattr(module, "proj", None)
        if not (isinstance(heads, int) and isinstance(qkv, nn.Linear) and isinstance(proj, nn.Linear)):
            continue
        if heads <= 0 or qkv.out_features % (3 * heads) or proj.in_features * 3 != qkv.out_features:
            continue
        prefix = f"{name}." if name else ""
        sites[f"{prefix}qkv"] = AttentionSite(module, qkv, proj, f"{prefix}qkv", f"{prefix}proj")
    return sites
