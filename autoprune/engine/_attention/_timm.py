"""timm-style attention: one packed ``qkv`` linear, an output ``proj`` and an integer ``num_heads``.

The layout of timm's ``Attention`` and of the zoo's ``vit_tiny``: ``qkv`` outputs ``[3, heads, head_dim]``.
Both units are pruned; ``num_heads`` (and ``head_dim`` where the module keeps one) follow. The softmax scale is
left as trained, so removing a dead head dim changes nothing.
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

__all__ = ["TimmAttention"]


@register_attention_adapter("timm")
class TimmAttention(AttentionAdapter):
    @classmethod
    def match(cls, name: str, module: nn.Module, modules: Mapping[str, nn.Module]) -> AttentionAdapter | None:
        heads = int_attribute(module, "num_heads")
        qkv, proj = getattr(module, "qkv", None), getattr(module, "proj", None)
        if heads is None or not (isinstance(qkv, nn.Linear) and isinstance(proj, nn.Linear)):
            return None
        if heads <= 0 or qkv.out_features % (3 * heads) or proj.in_features * 3 != qkv.out_features:
            return None
        prefix = f"{name}." if name else ""
        projections = [Projection(f"{prefix}qkv", qkv, "out", parts=3), Projection(f"{prefix}proj", proj, "in")]
        return cls(name, module, projections, heads, qkv.out_features // (3 * heads))

    def update_module(self, unit: str, removed: int) -> None:
        if unit == "heads":
            set_int_attribute(self.owner, "num_heads", self.units)
        if int_attribute(self.owner, "head_dim") is not None:
            set_int_attribute(self.owner, "head_dim", self.head_dim)
