"""Swin's window attention: the q/k/v/o layout (see ``_llama``) plus a relative position bias table with one
column per head (``relative_position_bias.relative_position_bias_table``, ``[positions, heads]``), which loses
the pruned heads' columns. Named ``hf_swin`` so that it is tried before the plain q/k/v/o adapter."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from autoprune.engine._attention._base import AttentionAdapter, register_attention_adapter
from autoprune.engine._attention._llama import QkvoAttention

__all__ = ["SwinAttention"]


def _table(module: nn.Module) -> nn.Parameter | None:
    table = getattr(getattr(module, "relative_position_bias", None), "relative_position_bias_table", None)
    return table if isinstance(table, nn.Parameter) and table.dim() == 2 else None


@register_attention_adapter("hf_swin")
class SwinAttention(QkvoAttention):
    @classmethod
    def match(cls, name: str, module: nn.Module, modules: Mapping[str, nn.Module]) -> AttentionAdapter | None:
        table = _table(module)
        if table is None:
            return None
        site = super().match(name, module, modules)
        if site is None or site.units != table.shape[1] or getattr(site, "groups", 1) != 1:
            return None
        return site

    def prune_tables(self, unit: str, remove: Sequence[int]) -> None:
        if unit != "heads":
            return
        table = _table(self.owner)
        bias: Any = getattr(self.owner, "relative_position_bias", None)
        if table is None or bias is None:
            return
        removed = set(remove)
        keep = torch.tensor([i for i in range(table.shape[1]) if i not in removed], device=table.device)
        bias.relative_position_bias_table = nn.Parameter(table.detach().index_select(1, keep).contiguous())
