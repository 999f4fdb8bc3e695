"""Separate ``q_proj`` / ``k_proj`` / ``v_proj`` and an output ``o_proj`` (or ``out_proj``) with an integer
``head_dim``: Llama, Mistral, Qwen2 and other decoders with grouped-query attention, and transformers 5's ViT,
DeiT, CLIP and BART attention. The forward views q, k and v as ``(..., -1, head_dim)``.

Under grouped-query attention ``num_key_value_groups`` query heads share one KV head (query head ``j`` reads KV
head ``j // groups``, as ``repeat_kv`` expands them), so the pruning unit is a KV head together with its query
heads; ``num_key_value_groups`` stays, and ``num_heads``-like attributes follow where the module keeps them.

Head dims are pruned only when the module applies no rotary position embedding. RoPE rotates the pairs
``(i, i + head_dim / 2)`` of q and k with cos/sin tables computed once per model for the configured
``head_dim`` and shared by every layer, so a per-layer head dim breaks them; and v cannot lose dims alone, as
the forward views q, k and v with the one ``head_dim``. Such modules get whole-KV-head pruning only.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping

from torch import nn

from autoprune.engine._attention._base import (
    AttentionAdapter,
    Projection,
    int_attribute,
    register_attention_adapter,
    set_int_attribute,
)

__all__ = ["QkvoAttention"]

_OUTPUT_NAMES = ("o_proj", "out_proj")
_QUERY_HEAD_ATTRIBUTES = ("num_heads", "num_attention_heads")
_KV_HEAD_ATTRIBUTES = ("num_key_value_heads", "num_kv_heads")


def _rotary(module: nn.Module) -> bool:
    """Whether ``module`` applies a rotary embedding: its forward takes the cos/sin ``position_embeddings`` (as
    transformers' decoders do) or it holds a rotary submodule (as older releases did)."""
    try:
        takes = "position_embeddings" in inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        takes = True  # unknown: assume the worst
    return takes or any("rotary" in n.lower() for n, _ in module.named_children())


@register_attention_adapter("llama")
class QkvoAttention(AttentionAdapter):
    groups = 1  # query heads per KV head

    @classmethod
    def match(cls, name: str, module: nn.Module, modules: Mapping[str, nn.Module]) -> AttentionAdapter | None:
        q, k, v = (getattr(module, n, None) for n in ("q_proj", "k_proj", "v_proj"))
        out_name = next((n for n in _OUTPUT_NAMES if isinstance(getattr(module, n, None), nn.Linear)), "o_proj")
        o = getattr(module, out_name, None)
        head_dim = int_attribute(module, "head_dim")
        groups = int_attribute(module, "num_key_value_groups") or 1
        if head_dim is None or head_dim <= 0 or groups <= 0:
            return None
        if not (isinstance(q, nn.Linear) and isinstance(k, nn.Linear) and isinstance(v, nn.Linear)):
            return None
        if not isinstance(o, nn.Linear) or k.out_features % head_dim or k.out_features != v.out_features:
            return None
        kv_heads = k.out_features // head_dim
        if q.out_features != kv_heads * groups * head_dim or o.in_features != q.out_features:
            return None
        prefix = f"{name}." if name else ""
        projections = [
            Projection(prefix + "q_proj", q, "out", per_unit=groups),
            Projection(prefix + "k_proj", k, "out"),
            Projection(prefix + "v_proj", v, "out"),
            Projection(prefix + out_name, o, "in", per_unit=groups),
        ]
        site = cls(name, module, projections, kv_heads, head_dim)
        site.groups = groups
        site.head_dims_sound = not _rotary(module)
        return site

    def update_module(self, unit: str, removed: int) -> None:
        if unit == "dims":
            set_int_attribute(self.owner, "head_dim", self.head_dim)
            return
        for attr in _QUERY_HEAD_ATTRIBUTES:
            if int_attribute(self.owner, attr) is not None:
                set_int_attribute(self.owner, attr, self.units * self.groups)
        for attr in _KV_HEAD_ATTRIBUTES:
            if int_attribute(self.owner, attr) is not None:
                set_int_attribute(self.owner, attr, self.units)
