"""Channel shuffles: DepGraph cannot map their channel order, so a group whose channels reach one is not pruned."""

from __future__ import annotations

from typing import Any

from autoprune.errors import PruningError

__all__ = ["crosses_shuffle", "refuse_shuffled"]


def crosses_shuffle(graph: Any, tp_group: Any) -> bool:
    """Whether ``tp_group``'s channels reach a channel shuffle that ``graph`` was cut at."""
    cut = graph.cut
    return bool(graph.shuffles) and any(
        d.index_mapping[0] is cut and d.is_triggered_by(dep.handler)
        for dep, _ in tp_group
        for d in dep.target.dependencies
    )


def refuse_shuffled(name: str) -> None:
    raise PruningError(
        f"group {name!r}: its channels pass through a channel shuffle (view, transpose, view), whose channel "
        "order DepGraph cannot map; add it to prune.ignore"
    )
