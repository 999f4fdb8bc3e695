"""``ratio_schedule: global_rank``: LeGR's search space (Chin et al., CVPR 2020) over a global channel ranking.

Each group's channels carry importances normalised per group (Torch-Pruning's global ranking), computed once on
the base model by the task. A trial turns one global target (a fraction of all channels, or relative MACs) and
one scale factor per ratio knob (stage) into a plan: the scaled importances of every group are ranked together,
one threshold removes the lowest, and each group's ratio is what that threshold left it. Scales of 1 are plain
global ranking; other scales shift channels between stages, allocations a uniform sweep never reaches.

No model runs here: a MACs target is met through ``macs_of(plan)``, which the task supplies.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from autoprune.config import SpaceSpec
from autoprune.errors import ConfigError
from autoprune.plan import PruningPlan, Scope
from autoprune.ranking import ChannelImportances, ranked_plan

__all__ = [
    "MACS_PARAM",
    "SCALE_PARAM",
    "RankedSpace",
    "check_importances",
    "check_macs_target",
    "ranked_entries",
    "target_distribution",
    "uniform_target",
]

MACS_PARAM = "macs"  # the global target when spec.target is macs; "ratio" when it is ratio
SCALE_PARAM = "scale"  # scale:<knob>, one per ratio knob


class RankedSpace(Protocol):
    """What global ranking reads of a search space (``SearchSpace`` is one), so this module never imports it."""

    @property
    def spec(self) -> SpaceSpec: ...

    @property
    def groups(self) -> tuple[str, ...]: ...

    @property
    def criteria(self) -> tuple[str, ...]: ...

    @property
    def round_to(self) -> int: ...

    @property
    def steps(self) -> Mapping[str, tuple[int, ...]]: ...

    @property
    def importances(self) -> Mapping[tuple[str, str], ChannelImportances]: ...

    @property
    def macs_of(self) -> Callable[[PruningPlan], float] | None: ...

    @property
    def scopes(self) -> tuple[Scope, ...]: ...

    def scope_of(self, params: Mapping[str, Any]) -> Scope: ...

    def criterion_of(self, group: str, params: Mapping[str, Any]) -> str: ...

    def scale_param(self, group: str) -> str: ...

    def ratio_bounds(self, group: str) -> tuple[float, float]: ...

    def global_bounds(self) -> tuple[float, float]: ...


def target_distribution(spec: SpaceSpec, ratio_bounds: tuple[float, float]) -> dict[str, tuple[Any, ...]]:
    """The global target's knob: ``ratio`` uniform in the ratio bounds, or ``macs`` log-uniform in
    ``spec.macs_range`` (so the low end of the MACs axis gets as many trials as the high end)."""
    if spec.target == "macs":
        return {MACS_PARAM: ("log_float", *spec.macs_range)}
    return {"ratio": ("float", *ratio_bounds)}


def check_importances(space: RankedSpace, *, who: str = "ratio_schedule global_rank", key: str = "prune.search_space") -> None:
    """Every (criterion, scope) the space may pick has importances for every group; else one ConfigError (at
    ``key``) saying what ``who`` misses."""
    for criterion in space.criteria:
        for scope in space.scopes:
            found = space.importances.get((criterion, scope))
            missing = [g for g in space.groups if found is None or g not in found.groups]
            if missing:
                raise ConfigError(
                    f"{who} ranks channels by importances computed on the base model; none for "
                    f"criterion {criterion!r}, scope {scope!r}, group {missing[0]!r} "
                    "(autoprune.engine.importance_table computes them)",
                    key=key,
                )


def check_macs_target(space: RankedSpace) -> None:
    """A MACs target can be measured; else one ConfigError."""
    if space.spec.target == "macs" and space.macs_of is None:
        raise ConfigError(
            "target: macs needs macs_of(plan) -> relative MACs to find each plan's threshold "
            "(autoprune.engine.relative_macs makes one)",
            key="prune.search_space",
        )


def ranked_entries(space: RankedSpace, params: Mapping[str, Any]) -> dict[str, tuple[float, str]]:
    """Each group's (ratio, criterion): one threshold over the scaled importances, meeting the trial's target
    (the nearest reachable plan when the ratio bounds put it out of reach)."""
    scope = space.scope_of(params)
    criteria = {group: space.criterion_of(group, params) for group in space.groups}
    vectors = {group: space.importances[(criteria[group], scope)].groups[group] for group in space.groups}
    scales = {group: float(params.get(space.scale_param(group), 1.0)) for group in space.groups}
    target: dict[str, Any] = (
        {"macs": float(params[MACS_PARAM]), "macs_of": space.macs_of}
        if space.spec.target == "macs"
        else {"ratio": float(params["ratio"])}
    )
    plan = ranked_plan(
        vectors,
        criteria,
        scales=scales,
        bounds={group: space.ratio_bounds(group) for group in space.groups},
        round_to=space.round_to,
        steps=space.steps,
        scope=scope,
        strict=False,
        **target,
    )
    return {group: (entry.ratio, entry.criterion) for group, entry in plan.groups.items()}


def uniform_target(space: RankedSpace, ratio: float, criterion: str) -> float:
    """The global target that stands for a uniform ``ratio``: that ratio of all channels, or (target macs) the
    relative MACs of the uniform plan at that ratio, so the warm start sits where a uniform sweep's points sit."""
    if space.spec.target != "macs":
        low, high = space.global_bounds()
        return min(max(ratio, low), high)
    if space.macs_of is None:
        raise ConfigError("target: macs needs macs_of(plan) for its warm start", key="prune.search_space")
    uniform = PruningPlan(
        {g: (min(max(ratio, lo), hi), criterion) for g in space.groups for lo, hi in [space.ratio_bounds(g)]},
        round_to=space.round_to,
        scope=space.scopes[0],
    )
    low, high = space.spec.macs_range
    return min(max(space.macs_of(uniform), low), high)
