"""``torch.nn.MultiheadAttention``: matched so that its heads are reported, not pruned.

Its forward (``F.multi_head_attention_forward``) projects q, k and v to ``embed_dim`` channels with the packed
``in_proj_weight`` and derives ``head_dim = embed_dim // num_heads``: the inner width is tied to the width of
its input and output. Removing whole heads or head dims would need a different module, so the adapter claims
no channel and its ``#heads`` group is reported as unsupported. ``embed_dim`` itself is pruned with the
residual stream by torch-pruning's own MHA pruner, which keeps ``num_heads`` and narrows every head: the graph
splits such a group into ``num_heads`` parts that each lose the same positions (``ModelGraph.channel_groups``),
so every head keeps its own channels instead of the remaining ones being re-split across heads.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from autoprune.engine._attention._base import AttentionAdapter, register_attention_adapter

__all__ = ["TorchMultiheadAttention"]


@register_attention_adapter("torch_mha")
class TorchMultiheadAttention(AttentionAdapter):
    unsupported = (
        "nn.MultiheadAttention derives head_dim from embed_dim and ties its inner width to its input width, so "
        "whole heads and head dims cannot be removed without replacing the module (its embed_dim is pruned "
        "with the residual stream)"
    )

    @classmethod
    def match(cls, name: str, module: nn.Module, modules: Mapping[str, nn.Module]) -> AttentionAdapter | None:
        if not isinstance(module, nn.MultiheadAttention):
            return None
        return cls(name, module, (), module.num_heads, module.head_dim)

    def update_module(self, unit: str, removed: int) -> None:
        raise NotImplementedError(self.unsupported)  # never called: no group of it is enumerated
