"""Module selection by glob: which qualified names ``prune.ignore`` and friends match."""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Sequence

from torch import nn

from autoprune.engine._attention import find_attention_sites
from autoprune.engine._graph._conv1d import has_conv1d, linearize_conv1d


def matching_modules(model: nn.Module, globs: Sequence[str]) -> dict[str, list[str]]:
    """For each glob, the qualified module names it matches (a module also matches through an ancestor)."""
    names = [n for n, _ in model.named_modules() if n]
    found: dict[str, list[str]] = {}
    for glob in globs:
        hits = []
        for name in names:
            parts = name.split(".")
            prefixes = [".".join(parts[: i + 1]) for i in range(len(parts))]
            if any(fnmatch.fnmatchcase(p, glob) for p in prefixes):
                hits.append(name)
        found[glob] = hits
    return found


def check_ignore_globs(model: nn.Module, globs: Sequence[str]) -> list[str]:
    """The globs that match no module (nor an attention's ``<query>#heads`` group)."""
    if has_conv1d(model):  # GPT-2's attention is matched on its nn.Linear twin, as the graph sees it
        model = copy.deepcopy(model)
        linearize_conv1d(model)
    heads = [site.heads_name for site in find_attention_sites(model)]
    return [
        g
        for g, hits in matching_modules(model, globs).items()
        if not hits and not any(fnmatch.fnmatchcase(h, g) for h in heads)
    ]
