"""Multi-head attention as registered adapters, each matched by module structure.

An adapter turns one attention module into up to two prunable groups, head dims (named by the query projection)
and whole heads (``<query>#heads``), and keeps the module's own attributes consistent after pruning. Add one
for another layout with::

    @register_attention_adapter("my_style")
    class MyAttention(AttentionAdapter):
        @classmethod
        def match(cls, name, module, modules): ...  # an adapter, or None
        def update_module(self, unit, removed): ...

or from an installed package through the entry-point group ``autoprune.attention_adapters``.
"""

from __future__ import annotations

from autoprune.engine._attention import _gpt2, _hf, _llama, _mha, _separate, _swin, _timm  # noqa: F401  (registers the built-in adapters)
from autoprune.engine._attention._base import (
    ATTENTION_ADAPTERS,
    ENTRY_POINT_GROUP,
    HEADS_SUFFIX,
    AttentionAdapter,
    Projection,
    register_attention_adapter,
)
from autoprune.engine._attention._find import (
    HEAD_COUNT_ATTRIBUTES,
    UnknownAttention,
    find_attention_sites,
    find_unknown_attention,
)

__all__ = [
    "ATTENTION_ADAPTERS",
    "ENTRY_POINT_GROUP",
    "HEADS_SUFFIX",
    "HEAD_COUNT_ATTRIBUTES",
    "AttentionAdapter",
    "Projection",
    "UnknownAttention",
    "find_attention_sites",
    "find_unknown_attention",
    "register_attention_adapter",
]
