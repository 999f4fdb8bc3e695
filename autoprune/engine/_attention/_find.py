"""Finding attention modules: the registered adapters' matches, and head structures that none of them knows."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from autoprune.engine._attention._base import ATTENTION_ADAPTERS, AttentionAdapter, int_attribute

__all__ = ["HEAD_COUNT_ATTRIBUTES", "UnknownAttention", "find_attention_sites", "find_unknown_attention"]

# Attribute names through which attention modules commonly keep their number of heads.
HEAD_COUNT_ATTRIBUTES = ("num_heads", "num_attention_heads", "n_heads", "n_head", "num_key_value_heads")


@dataclass(frozen=True)
class UnknownAttention:
    """A module with a head count and linears of its own that no adapter matched."""

    name: str
    module: nn.Module
    heads: str  # e.g. "n_heads=8", for messages
    linears: tuple[tuple[str, nn.Linear], ...]  # its linears (qualified names): their outputs may be heads

    def reason(self) -> str:
        return (
            f"its outputs may be heads of {self.name!r} ({type(self.module).__name__}, {self.heads}), a head layout "
            "no attention adapter knows; pruning them alone could split heads"
        )


def find_attention_sites(model: nn.Module) -> list[AttentionAdapter]:
    """Every module a registered adapter matches (the first adapter by name that does), in model order."""
    modules = dict(model.named_modules())
    adapters = [ATTENTION_ADAPTERS.get(style) for style in ATTENTION_ADAPTERS.names()]
    sites = []
    for name, module in modules.items():
        for adapter in adapters:
            site = adapter.match(name, module, modules)
            if site is not None:
                sites.append(site)
                break
    return sites


def find_unknown_attention(model: nn.Module, sites: list[AttentionAdapter]) -> list[UnknownAttention]:
    """Modules with an integer head count (``num_heads``, ``num_attention_heads``, ...) and linears of their own
    that no adapter matched. A block that holds a matched attention (and perhaps its own ``num_heads``) is not
    one: its other linears are an MLP, not heads."""
    owners = [s.owner_name for s in sites]
    found = []
    for name, module in model.named_modules():
        counts = [(a, int_attribute(module, a)) for a in HEAD_COUNT_ATTRIBUTES]
        heads = ", ".join(f"{a}={c}" for a, c in counts if c is not None and c > 0)
        prefix = f"{name}." if name else ""
        if not heads or any(o == name or o.startswith(prefix) or name.startswith(f"{o}.") for o in owners):
            continue
        linears = tuple((prefix + n, m) for n, m in module.named_modules() if n and isinstance(m, nn.Linear))
        if linears:
            found.append(UnknownAttention(name, module, heads, linears))
    # An unknown module inside another one is covered by the outer one's linears.
    return [u for u in found if not any(o is not u and u.name.startswith(f"{o.name}.") for o in found)]
