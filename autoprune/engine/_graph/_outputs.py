"""Which groups and layers reach a model output (pruning them would change an output's shape)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch_pruning as tp
from torch import nn

from autoprune.engine._graph._traced import TracedModel

__all__ = ["output_layers", "reaches_output"]


def reaches_output(traced: TracedModel, tp_group: Any) -> bool:
    """Whether pruning ``tp_group`` removes channels of a model output (its shape would change)."""
    return any(
        dep.target in traced.output_nodes and (dep.target.type == tp.ops.OPTYPE.OUTPUT or traced.prunes_out(dep))
        for dep, _ in tp_group
    )


def output_layers(traced: TracedModel, tp_groups: Iterable[Any]) -> list[str]:
    """The conv/linear layers of ``tp_groups`` whose output channels reach a model output, in model order."""
    found: set[nn.Module] = set()
    for tp_group in tp_groups:
        if reaches_output(traced, tp_group):
            found.update(traced.out_roots(tp_group))
    return [traced.names[m] for m in sorted(found & set(traced.names), key=lambda m: traced.order[m])]
