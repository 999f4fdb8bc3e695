"""GPT-2's attention: one fused ``c_attn`` (q, k and v), an output ``c_proj``, and ``num_heads``, ``head_dim``
and ``split_size`` (the forward splits ``c_attn``'s output at ``split_size`` and views each part as
``(..., -1, head_dim)``). A cross-attention (``is_cross_attention``) has its own ``q_attn`` and a ``c_attn`` of k
and v.

The linears are transformers' ``Conv1D``, which the graph turns into ``nn.Linear`` first (engine/_graph/_conv1d).
How ``c_attn`` packs q, k and v is read from the config's ``model_type`` (:data:`FUSED_QKV_LAYOUTS`), never
guessed from shapes: GPT-2 concatenates them (blocked). A model type not in the table keeps its heads, with a
reason. The softmax ``scaling`` stays as trained, so removing a dead head dim changes nothing.
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

__all__ = ["FUSED_QKV_LAYOUTS", "Gpt2Attention"]

# config.model_type -> how a fused qkv linear packs its parts: "blocked" ([q | k | v], each all heads) or
# "interleaved" ([head 0: q k v | head 1: q k v | ...]).
FUSED_QKV_LAYOUTS: dict[str, str] = {"gpt2": "blocked", "decision_transformer": "blocked", "imagegpt": "blocked"}


@register_attention_adapter("gpt2")
class Gpt2Attention(AttentionAdapter):
    @classmethod
    def match(cls, name: str, module: nn.Module, modules: Mapping[str, nn.Module]) -> AttentionAdapter | None:
        heads, head_dim, split = (int_attribute(module, a) for a in ("num_heads", "head_dim", "split_size"))
        c_attn, c_proj = getattr(module, "c_attn", None), getattr(module, "c_proj", None)
        if heads is None or head_dim is None or split is None or heads * head_dim != split or not name:
            return None
        if not (isinstance(c_attn, nn.Linear) and isinstance(c_proj, nn.Linear)) or c_proj.in_features != split:
            return None
        cross = bool(getattr(module, "is_cross_attention", False))
        q_attn = getattr(module, "q_attn", None)
        if cross and not (isinstance(q_attn, nn.Linear) and q_attn.out_features == split):
            return None
        parts = 2 if cross else 3
        if c_attn.out_features != parts * split:
            return None
        model_type = str(getattr(getattr(module, "config", None), "model_type", ""))
        layout = FUSED_QKV_LAYOUTS.get(model_type)
        projections = [Projection(f"{name}.c_attn", c_attn, "out", parts=parts, interleaved=layout == "interleaved")]
        if cross:
            projections.insert(0, Projection(f"{name}.q_attn", q_attn, "out"))  # type: ignore[arg-type]
        site = cls(name, module, [*projections, Projection(f"{name}.c_proj", c_proj, "in")], heads, head_dim)
        if layout is None:
            site.unsupported = (
                f"how c_attn packs q, k and v is not known for model_type {model_type!r} (known: "
                f"{', '.join(sorted(FUSED_QKV_LAYOUTS))}); add it to FUSED_QKV_LAYOUTS"
            )
        return site

    def update_module(self, unit: str, removed: int) -> None:
        set_int_attribute(self.owner, "num_heads", self.units)
        set_int_attribute(self.owner, "head_dim", self.head_dim)
        set_int_attribute(self.owner, "split_size", self.units * self.head_dim)
