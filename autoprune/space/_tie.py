"""Layer tying (``prune.tie: [layers]``, the ``tied_layers`` preset): every repeated block of one type shares its
ratio and criterion knobs, as Minitron-style width pruning does. Every layer of a transformer then keeps the same
number of heads and the same MLP width, which is what a standard config (``save_pretrained``) can describe, and a
deep net's search has as many dimensions as one block has groups.

A group's tied knob is its name with every repeated-block index (a purely numeric component of the module path)
replaced by ``*``: ``model.layers.3.self_attn.q_proj#heads`` -> ``model.layers.*.self_attn.q_proj#heads``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from autoprune.config import SpaceSpec
from autoprune.errors import ConfigError

__all__ = ["TIE_CHOICES", "apply_tie", "tie_summary", "tied_knob"]

TIE_CHOICES = ("layers",)
_INDEX = re.compile(r"(^|\.)\d+(?=\.|#|$)")


def tied_knob(group: str) -> str:
    """The knob ``group`` shares with the same group of every other repeated block."""
    return _INDEX.sub(r"\1*", group)


def apply_tie(spec: SpaceSpec, tie: Sequence[str], *, key: str = "prune.tie") -> SpaceSpec:
    """``spec`` with every ratio / criterion granularity that is not ``shared`` made ``tied`` when ``tie`` names
    ``layers``; ``spec`` itself otherwise."""
    for choice in tie:
        if choice not in TIE_CHOICES:
            raise ConfigError(f"unknown tie {choice!r}; known: {', '.join(TIE_CHOICES)}", key=key)
    if "layers" not in tie:
        return spec
    update = {field: "tied" for field in ("ratio", "criterion") if getattr(spec, field) != "shared"}
    return spec.model_copy(update=update)


def tie_summary(groups: Iterable[str], spec: SpaceSpec) -> str | None:
    """One line for ``validate`` about layer tying: how many ratio knobs a tied search has, or, untied on a model
    with attention heads, an offer of it (None on other untied models)."""
    names = list(groups)
    tied = len(dict.fromkeys(tied_knob(n) for n in names))
    if spec.ratio == "tied":
        return f"layers tied: {tied} ratio knobs for {len(names)} groups"
    if not any(n.endswith("#heads") for n in names):
        return None
    return (
        f"transformer blocks found: prune.tie: [layers] would search {tied} ratio knobs instead of one per group "
        f"({len(names)}), every layer keeping the same heads and MLP width (what save_pretrained export needs)"
    )
