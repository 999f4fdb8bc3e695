"""Hugging Face BERT-style self-attention: ``query`` / ``key`` / ``value`` linears with
``num_attention_heads``, ``attention_head_size`` and ``all_head_size`` (BERT, RoBERTa, ELECTRA, older ViT/DeiT).

The output projection is not in the module: it is the ``output.dense`` linear of the parent (``BertAttention``
holds ``self`` and ``output``). The forward reshapes q, k and v to ``(..., -1, attention_head_size)`` and the
context back to ``(..., -1)`` (older releases to ``all_head_size``), so all three attributes are kept in step.
``scaling`` stays as trained, so removing a dead head dim changes nothing. ``config`` is shared by every layer
and its forward reads no shape from it (only ``_attn_implementation``), so it is left alone: after pruning,
layers differ, and the plan, not the config, records their shapes.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from autoprune.engine._attention._base import (
    AttentionAdapter,
    Projection,
    int_attribute,
    register_attention_adapter,
    set_int_attribute,
)

__all__ = ["HfSelfAttention"]


@register_attention_adapter("hf_bert")
class HfSelfAttention(AttentionAdapter):
    @classmethod
    def match(cls, name: str, module: nn.Module, modules: Mapping[str, nn.Module]) -> AttentionAdapter | None:
        heads = int_attribute(module, "num_attention_heads")
        size, total = int_attribute(module, "attention_head_size"), int_attribute(module, "all_head_size")
        linears = [m for m in (getattr(module, n, None) for n in ("query", "key", "value")) if isinstance(m, nn.Linear)]
        if len(linears) != 3:
            return None
        if heads is None or size is None or total is None or not name or heads * size != total:
            return None
        if not all(m.out_features == total for m in linears):
            return None
        parent = name.rpartition(".")[0]
        out_name = f"{parent}.output.dense" if parent else "output.dense"
        dense = modules.get(out_name)
        if not isinstance(dense, nn.Linear) or dense.in_features != total:
            return None
        projections = [
            Projection(f"{name}.{n}", m, "out") for n, m in zip(("query", "key", "value"), linears, strict=True)
        ]
        return cls(name, module, [*projections, Projection(out_name, dense, "in")], heads, size)

    def update_module(self, unit: str, removed: int) -> None:
        set_int_attribute(self.owner, "num_attention_heads", self.units)
        set_int_attribute(self.owner, "attention_head_size", self.head_dim)
        set_int_attribute(self.owner, "all_head_size", self.units * self.head_dim)
