"""Attention with four separately named linears and a head count and head size kept as module attributes:
DistilBERT (``q_lin`` ... ``out_lin``), ALBERT (``query`` ... ``dense``, the output projection inside the module,
shared by every layer) and T5 (``q`` ... ``o``, bias-free).

Each forward views q, k and v as ``(..., -1, head_size)``; the head count and totals are kept in step as well.
T5's whole heads are left out: the first layer computes one relative position bias per head and every later
layer (of the stack) adds it to its own heads by position, so a head removed in one layer would hand the other
heads' biases to the wrong ones. Its head dims are pruned (T5 has no softmax scaling).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from torch import nn

from autoprune.engine._attention._base import (
    AttentionAdapter,
    Projection,
    int_attribute,
    register_attention_adapter,
    set_int_attribute,
)

__all__ = ["AlbertAttention", "DistilBertAttention", "SeparateQkvoAttention", "T5Attention"]


class SeparateQkvoAttention(AttentionAdapter):
    """The shared matching: subclasses name the linears (q, k, v, out) and the attributes."""

    linear_names: ClassVar[tuple[str, str, str, str]]
    heads_attribute: ClassVar[str]
    size_attribute: ClassVar[str]
    total_attributes: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def match(cls, name: str, module: nn.Module, modules: Mapping[str, nn.Module]) -> AttentionAdapter | None:
        heads, size = int_attribute(module, cls.heads_attribute), int_attribute(module, cls.size_attribute)
        linears = [getattr(module, n, None) for n in cls.linear_names]
        if heads is None or size is None or heads <= 0 or size <= 0 or not name:
            return None
        if not all(isinstance(m, nn.Linear) for m in linears):
            return None
        q, k, v, out = linears
        inner = heads * size
        if any(m.out_features != inner for m in (q, k, v)) or out.in_features != inner:  # type: ignore[union-attr]
            return None
        axes = ("out", "out", "out", "in")
        projections = [
            Projection(f"{name}.{n}", m, axis)  # type: ignore[arg-type]
            for n, m, axis in zip(cls.linear_names, linears, axes, strict=True)
        ]
        return cls(name, module, projections, heads, size)

    def update_module(self, unit: str, removed: int) -> None:
        set_int_attribute(self.owner, self.heads_attribute, self.units)
        set_int_attribute(self.owner, self.size_attribute, self.head_dim)
        for attr in self.total_attributes:
            set_int_attribute(self.owner, attr, self.units * self.head_dim)


@register_attention_adapter("distilbert")
class DistilBertAttention(SeparateQkvoAttention):
    linear_names = ("q_lin", "k_lin", "v_lin", "out_lin")
    heads_attribute = "n_heads"
    size_attribute = "attention_head_size"


@register_attention_adapter("albert")
class AlbertAttention(SeparateQkvoAttention):
    linear_names = ("query", "key", "value", "dense")
    heads_attribute = "num_attention_heads"
    size_attribute = "attention_head_size"
    total_attributes = ("all_head_size",)


@register_attention_adapter("t5")
class T5Attention(SeparateQkvoAttention):
    linear_names = ("q", "k", "v", "o")
    heads_attribute = "n_heads"
    size_attribute = "key_value_proj_dim"
    total_attributes = ("inner_dim",)
    heads_unsupported = (
        "T5's first layer computes one relative position bias per head and every later layer adds it to its own "
        "heads by position, so removing a head from one layer would give the others the wrong biases"
    )
