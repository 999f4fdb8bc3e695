"""``AttentionSites``: a model's attention layers, whose heads and head dims are pruned through their adapters
rather than through DepGraph groups."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Any

import torch_pruning as tp
from torch import nn

from autoprune.engine._attention import HEADS_SUFFIX, AttentionAdapter, find_attention_sites, find_unknown_attention
from autoprune.engine._graph._group import Group
from autoprune.engine._graph._traced import TracedModel

__all__ = ["AttentionSites", "matches_none", "prune_attention"]


def matches_none(name: str, ignore: Sequence[str]) -> bool:
    """Whether ``name`` matches none of the ``ignore`` globs."""
    return not any(fnmatch.fnmatchcase(name, glob) for glob in ignore)


class AttentionSites:
    """The attention sites of one model: the supported ones by head-dims group name, the linears they claim, and
    the head linears of layouts no adapter knows."""

    def __init__(self, model: nn.Module) -> None:
        self.sites = find_attention_sites(model)
        self.supported = {s.name: s for s in self.sites if s.unsupported is None}  # by head-dims group name
        # Linears whose outputs are heads root no DepGraph group: an adapter's groups stand for them, and those of
        # a head layout no adapter knows are left out (see ModelGraph._all_tp_groups).
        self.claimed = {m: s for s in self.supported.values() for m in s.claimed}
        unknown = find_unknown_attention(model, self.sites)
        self.unknown = {m: u for u in unknown for _, m in u.linears}

    def heads_in(self, traced: TracedModel, tp_group: Any) -> list[str]:
        """The attention layers some of whose heads' channels ``tp_group`` prunes."""
        return [
            self.claimed[d.target.module].owner_name
            for d, _ in tp_group
            if d.target.module in self.claimed and traced.prunes_out(d)
        ]

    def groups(
        self, traced: TracedModel, ignored: set[nn.Module], ignore: Sequence[str], visited: set[nn.Module]
    ) -> tuple[list[tuple[Group, nn.Module]], list[tuple[Group, str]]]:
        """Each adapter's head-dim group (named by the query projection, where head dims are sound) and whole-head
        group (``<query>#heads``), each with its root module; and the groups left out, each with the reason: the
        ``#heads`` of an unsupported adapter and the head linears of a layout no adapter knows. Nothing is added
        for an attention whose head linears are ignored."""
        found: list[tuple[Group, nn.Module]] = []
        left_out: list[tuple[Group, str]] = []
        for site in self.sites:
            if site.unsupported is not None:
                if matches_none(site.heads_name, ignore) and site.owner not in ignored:
                    heads = Group(site.heads_name, site.units, site.members, f"{site.kind} heads")
                    left_out.append((heads, site.unsupported))
                continue
            if any(m in ignored or m not in traced.graph.module2node for m in site.claimed):
                continue
            units = [u for u, ok in (("dims", site.head_dims_sound), ("heads", not site.heads_unsupported)) if ok]
            if site.heads_unsupported and matches_none(site.heads_name, ignore):
                heads = Group(site.heads_name, site.units, site.members, f"{site.kind} heads")
                left_out.append((heads, site.heads_unsupported))
            for unit in units:
                name, what = (site.name, "head dims") if unit == "dims" else (site.heads_name, "heads")
                if matches_none(name, ignore):
                    found.append((Group(name, site.channels(unit), site.members, f"{site.kind} {what}"), site.root))
        for module, unknown in self.unknown.items():
            name = traced.names[module]
            if (
                module not in visited
                and module in traced.graph.module2node
                and module not in ignored
                and matches_none(name, ignore)
            ):
                linear = Group(name, module.out_features, (name,), type(module).__name__)
                left_out.append((linear, unknown.reason()))
        return found, left_out

    def site_of(self, name: str) -> tuple[AttentionAdapter, str] | None:
        """The adapter of group ``name`` and its unit (``heads`` or ``dims``); None for a DepGraph group."""
        base = name.removesuffix(HEADS_SUFFIX)
        if base not in self.supported:
            return None
        return self.supported[base], "heads" if name.endswith(HEADS_SUFFIX) else "dims"


def prune_attention(site: AttentionAdapter, unit: str, remove: list[int]) -> None:
    for projection, idxs in site.prune_indices(unit, remove):
        if projection.axis == "out":
            tp.prune_linear_out_channels(projection.linear, idxs)
        else:
            tp.prune_linear_in_channels(projection.linear, idxs)
    site.prune_tables(unit, remove)
    site.after_pruning(unit, len(remove))
