"""Ratio schedules: how a preset's ratio knobs become each group's ratio (``ratio_schedule`` in a preset).

A schedule is a registered object with the :class:`RatioSchedule` interface: the global knobs it adds, the knob
each group gets, the plan entries a trial's params make, and the value a knob takes in a uniform baseline. The
built-in ones are ``independent``, ``global_offset``, ``depth_linear`` and ``global_rank`` (LeGR);
``@register_ratio_schedule("name")`` on a class adds one, and a preset names it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from autoprune._registry import Registry
from autoprune.config import SpaceSpec
from autoprune.errors import ConfigError
from autoprune.space._global import (
    MACS_PARAM,
    SCALE_PARAM,
    RankedSpace,
    check_importances,
    check_macs_target,
    ranked_entries,
    target_distribution,
    uniform_target,
)

__all__ = ["RATIO_SCHEDULES", "Distribution", "RatioSchedule", "ScheduledSpace", "get_ratio_schedule", "register_ratio_schedule"]

# A knob's distribution: ("float", low, high), ("log_float", low, high) or ("categorical", choices).
Distribution = tuple[Any, ...]


class ScheduledSpace(RankedSpace, Protocol):
    """What a schedule reads of a search space (``SearchSpace`` is one)."""

    @property
    def bounds(self) -> Mapping[str, tuple[float, float]]: ...

    def ratio_param(self, group: str) -> str: ...

    def ratio_knobs(self) -> list[str]: ...

    def knob(self, group: str) -> str: ...


class RatioSchedule(Protocol):
    """How ratio knobs become ratios. ``needs_importances``: the task must rank channels on the base model first."""

    needs_importances: bool

    def check(self, space: ScheduledSpace) -> None:
        """Refuse (one ConfigError) a space this schedule cannot sample."""

    def global_distributions(self, space: ScheduledSpace) -> dict[str, Distribution]:
        """The knobs shared by every group, suggested first."""

    def group_distribution(self, space: ScheduledSpace, group: str) -> tuple[str, Distribution] | None:
        """The knob ``group`` reads (shared by the groups of one ratio knob), or None."""

    def entries(self, space: ScheduledSpace, params: Mapping[str, Any]) -> dict[str, tuple[float, str]]:
        """Each group's (ratio, criterion) from a trial's params."""

    def uniform_value(self, space: ScheduledSpace, name: str, ratio: float, criterion: str) -> Any:
        """The value of this schedule's own knob ``name`` in the uniform plan at ``ratio``; None: not its knob."""


RATIO_SCHEDULES: Registry[RatioSchedule] = Registry("ratio schedule")


def register_ratio_schedule(name: str) -> Callable[[type], type]:
    """``@register_ratio_schedule("name")`` on a class with the :class:`RatioSchedule` interface."""

    def register(cls: type) -> type:
        RATIO_SCHEDULES.register(name)(cls())
        return cls

    return register


def get_ratio_schedule(spec: SpaceSpec) -> RatioSchedule:
    return RATIO_SCHEDULES.get(spec.ratio_schedule, key="prune.search_space")


def _criteria(space: ScheduledSpace, params: Mapping[str, Any]) -> dict[str, str]:
    return {group: space.criterion_of(group, params) for group in space.groups}


def _clamped(space: ScheduledSpace, group: str, ratio: float) -> float:
    lo, hi = space.ratio_bounds(group)
    return min(max(ratio, lo), hi)


@register_ratio_schedule("independent")
class Independent:
    """Each ratio knob is its groups' ratio."""

    needs_importances = False

    def check(self, space: ScheduledSpace) -> None:
        knobs: dict[str, tuple[str, tuple[float, float]]] = {}
        for group in space.groups:
            knob = space.ratio_param(group)
            seen = knobs.setdefault(knob, (group, space.ratio_bounds(group)))
            if seen[1] != space.ratio_bounds(group):
                raise ConfigError(
                    f"groups {seen[0]!r} and {group!r} share the searched ratio {knob!r} but have different bounds "
                    f"{list(seen[1])} and {list(space.ratio_bounds(group))}; use search_space: per_layer",
                    key="prune.nni_config_list",
                )

    def global_distributions(self, space: ScheduledSpace) -> dict[str, Distribution]:
        return {}

    def group_distribution(self, space: ScheduledSpace, group: str) -> tuple[str, Distribution] | None:
        return space.ratio_param(group), ("float", *space.ratio_bounds(group))

    def entries(self, space: ScheduledSpace, params: Mapping[str, Any]) -> dict[str, tuple[float, str]]:
        criteria = _criteria(space, params)
        return {g: (float(params[space.ratio_param(g)]), criteria[g]) for g in space.groups}

    def uniform_value(self, space: ScheduledSpace, name: str, ratio: float, criterion: str) -> Any:
        return None


class _AroundGlobal:
    """One global ratio, each group's ratio a function of it and the group's knob, clipped into its bounds."""

    needs_importances = False

    def check(self, space: ScheduledSpace) -> None:
        return None  # every group clips the scheduled ratio into its own bounds

    def global_distributions(self, space: ScheduledSpace) -> dict[str, Distribution]:
        return {"ratio": ("float", *space.global_bounds())}

    def group_distribution(self, space: ScheduledSpace, group: str) -> tuple[str, Distribution] | None:
        return None

    def ratio(self, space: ScheduledSpace, group: str, params: Mapping[str, Any]) -> float:
        raise NotImplementedError

    def entries(self, space: ScheduledSpace, params: Mapping[str, Any]) -> dict[str, tuple[float, str]]:
        criteria = _criteria(space, params)
        return {g: (_clamped(space, g, self.ratio(space, g, params)), criteria[g]) for g in space.groups}

    def uniform_value(self, space: ScheduledSpace, name: str, ratio: float, criterion: str) -> Any:
        return 0.0 if name.startswith(("ratio_offset", "ratio_slope")) else None


@register_ratio_schedule("global_offset")
class GlobalOffset(_AroundGlobal):
    """One global ratio plus an offset in [-ratio_spread, ratio_spread] per ratio knob."""

    def group_distribution(self, space: ScheduledSpace, group: str) -> tuple[str, Distribution] | None:
        spread = space.spec.ratio_spread
        return param_name("ratio_offset", space.knob(group)), ("float", -spread, spread)

    def ratio(self, space: ScheduledSpace, group: str, params: Mapping[str, Any]) -> float:
        return float(params["ratio"]) + float(params[param_name("ratio_offset", space.knob(group))])


@register_ratio_schedule("depth_linear")
class DepthLinear(_AroundGlobal):
    """One global ratio plus a slope: -slope at the first ratio knob, +slope at the last."""

    def global_distributions(self, space: ScheduledSpace) -> dict[str, Distribution]:
        spread = space.spec.ratio_spread
        return {**super().global_distributions(space), "ratio_slope": ("float", -spread, spread)}

    def ratio(self, space: ScheduledSpace, group: str, params: Mapping[str, Any]) -> float:
        knobs = space.ratio_knobs()
        depth = 2.0 * knobs.index(space.knob(group)) / (len(knobs) - 1) - 1.0 if len(knobs) > 1 else 0.0
        return float(params["ratio"]) + float(params["ratio_slope"]) * depth


@register_ratio_schedule("global_rank")
class GlobalRank:
    """LeGR: one global target (a fraction of all channels, or relative MACs) and an importance scale per knob."""

    needs_importances = True

    def check(self, space: ScheduledSpace) -> None:
        if space.groups:
            check_importances(space)
            check_macs_target(space)

    def global_distributions(self, space: ScheduledSpace) -> dict[str, Distribution]:
        return target_distribution(space.spec, space.global_bounds())

    def group_distribution(self, space: ScheduledSpace, group: str) -> tuple[str, Distribution] | None:
        if not space.knob(group):
            return None  # one shared knob: no scale to search (it would be 1)
        return space.scale_param(group), ("log_float", *space.spec.scale_range)

    def entries(self, space: ScheduledSpace, params: Mapping[str, Any]) -> dict[str, tuple[float, str]]:
        return ranked_entries(space, params)

    def uniform_value(self, space: ScheduledSpace, name: str, ratio: float, criterion: str) -> Any:
        if name.startswith(SCALE_PARAM):
            return 1.0
        if name in ("ratio", MACS_PARAM):
            return uniform_target(space, ratio, criterion)
        return None


def param_name(kind: str, knob: str) -> str:
    """A searched parameter's name: ``kind:knob``, or ``kind`` alone for the one shared knob ("")."""
    return f"{kind}:{knob}" if knob else kind
